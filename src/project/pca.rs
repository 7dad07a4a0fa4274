//! PCA as scikit-learn's `PCA(n_components).fit_transform`: centre, SVD, signs fixed so that the largest
//! absolute entry of each component is positive (`svd_flip` on the components).

use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// The fitted principal axes.
/// # Shapes
/// `components [k, d]`, `mean [d]`, `explained_variance [k]`.
#[derive(Debug)]
pub struct Pca {
    pub components: Tensor,
    pub mean: Tensor,
    pub explained_variance: Tensor,
}

impl Pca {
    /// Fit `k` components to the rows of `x` (in float64).
    pub fn fit(x: &Tensor, k: i64) -> Result<Self> {
        let (n, d) = match x.size().as_slice() {
            [n, d] => (*n, *d),
            s => return Err(Error::Shape { context: "PCA".into(), why: format!("expected [n, d], got {s:?}") }),
        };
        if k < 1 || k > n.min(d) {
            return Err(Error::invalid(format!("{k} components"), format!("need 1 ≤ k ≤ min(n, d) = {}", n.min(d))));
        }
        let x = x.f_to_kind(Kind::Double)?;
        let mean = x.f_mean_dim([0i64].as_slice(), false, Kind::Double)?;
        let centred = x.f_sub(&mean)?;
        let (_, s, v) = centred.f_svd(true, true)?;
        let vt = v.f_tr()?.f_narrow(0, 0, k)?;
        // svd_flip(u_based_decision=False): the largest |entry| of each row of Vᵀ made positive.
        let idx = vt.f_abs()?.f_argmax(1, true)?;
        let signs = vt.f_gather(1, &idx, false)?.f_sign()?;
        let signs = signs.f_where_scalarother(&signs.f_ne(0.0)?, 1.0)?;
        let components = vt.f_mul(&signs)?;
        let explained_variance = s.f_narrow(0, 0, k)?.f_square()?.f_div_scalar((n - 1).max(1) as f64)?;
        Ok(Self { components, mean, explained_variance })
    }

    /// `(x − mean) · componentsᵀ`.
    /// # Shapes
    /// `[n, d]` → `[n, k]` float32.
    pub fn transform(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.f_to_kind(Kind::Double)?.f_sub(&self.mean)?;
        Ok(x.f_matmul(&self.components.f_tr()?)?.f_to_kind(Kind::Float)?)
    }
}

/// `PCA(k).fit_transform(x)`.
pub fn pca(x: &Tensor, k: i64) -> Result<Tensor> {
    Pca::fit(x, k)?.transform(x)
}
