//! Statistics of a data sample that start training: the geometric median (`b_pre`'s initial value) and the
//! variance that normalises the reconstruction loss.

use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// The geometric median of the rows (Weiszfeld's iteration from the mean, in float64: weights
/// `1 / max(‖p − g‖, 1e-8)`, at most 100 iterations, stopping when the estimate moves by less than 1e-6).
/// # Shapes
/// `points [N, d]` → `[d]` float32.
pub fn geometric_median(points: &Tensor) -> Result<Tensor> {
    if points.dim() != 2 || points.size()[0] == 0 {
        return Err(Error::Shape {
            context: "geometric median".into(),
            why: format!("expected a non-empty [N, d] sample, got {:?}", points.size()),
        });
    }
    let p = points.f_to_kind(Kind::Double)?;
    let mut g = p.f_mean_dim([0i64].as_slice(), false, Kind::Double)?;
    for _ in 0..100 {
        let dist = p.f_sub(&g)?.f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?.f_clamp_min(1e-8)?;
        let w = dist.f_reciprocal()?;
        let w = w.f_div(&w.f_sum(Kind::Double)?)?;
        let next = p.f_mul(&w.f_unsqueeze(1)?)?.f_sum_dim_intlist([0i64].as_slice(), false, Kind::Double)?;
        let moved = next.f_sub(&g)?.f_norm()?.f_double_value(&[])?;
        g = next;
        if moved < 1e-6 {
            break;
        }
    }
    Ok(g.f_to_kind(Kind::Float)?)
}

/// `1 / mean((X − mean_rows(X))²)`: the scale that turns the mean squared error into the normalised MSE.
/// # Shapes
/// `points [N, d]` → scalar.
pub fn variance_scale(points: &Tensor) -> Result<f64> {
    let p = points.f_to_kind(Kind::Double)?;
    let centred = p.f_sub(&p.f_mean_dim([0i64].as_slice(), true, Kind::Double)?)?;
    let var = centred.f_square()?.f_mean(Kind::Double)?.f_double_value(&[])?;
    if !(var.is_finite() && var > 0.0) {
        return Err(Error::invalid(
            "training data",
            format!("its variance is {var}; an SAE needs inputs that vary (check the collection's position)"),
        ));
    }
    Ok(1.0 / var)
}
