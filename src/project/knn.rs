//! Exact k nearest neighbours by squared Euclidean distance, a block of rows at a time: the one search behind
//! UMAP's graph, Barnes-Hut t-SNE's affinities and the map's neighbour lists.

use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// The `k` nearest other rows of each row (self excluded by index), nearest first, with their squared distances,
/// in the kind of `x` (float64 stays float64; anything else is computed in float32), about 2²² distances at a time.
/// # Shapes
/// `x [n, d]` → indices `[n·k]`, squared distances `[n·k]`, row-major; `k ≤ n − 1`.
pub fn nearest_neighbours(x: &Tensor, k: usize) -> Result<(Vec<i64>, Vec<f64>)> {
    let n = x.size().first().copied().unwrap_or(1).max(1);
    nearest_neighbours_in_blocks(x, k, ((1i64 << 22) / n).max(1) as usize)
}

/// [`nearest_neighbours`] with `block` rows at a time.
pub fn nearest_neighbours_in_blocks(x: &Tensor, k: usize, block: usize) -> Result<(Vec<i64>, Vec<f64>)> {
    let (n, d) = match x.size().as_slice() {
        [n, d] => (*n, *d),
        s => {
            return Err(Error::Shape {
                context: "nearest neighbours".into(),
                why: format!("expected [n, d], got {s:?}"),
            })
        }
    };
    if d < 1 || k as i64 > n - 1 {
        return Err(Error::invalid(
            format!("{k} neighbours of {n} points in {d} dimensions"),
            "need d ≥ 1 and k ≤ n − 1",
        ));
    }
    let kind = if x.kind() == Kind::Double { Kind::Double } else { Kind::Float };
    let _guard = tch::no_grad_guard();
    let x = x.f_to_kind(kind)?.f_contiguous()?;
    let norms = x.f_square()?.f_sum_dim_intlist([1i64].as_slice(), true, kind)?;
    let (minus_2xt, norms_row) = (x.f_tr()?.f_mul_scalar(-2.0)?, norms.f_tr()?);
    let (mut indices, mut distances) = (Vec::with_capacity(n as usize * k), Vec::with_capacity(n as usize * k));
    if k == 0 {
        return Ok((indices, distances));
    }
    // Two spare: the row itself, and a duplicate that rounding may put ahead of it.
    let take = (k as i64 + 2).min(n);
    for start in (0..n).step_by(block.max(1)) {
        let rows = (block as i64).min(n - start);
        let cross = x.f_narrow(0, start, rows)?.f_matmul(&minus_2xt)?;
        let squared = cross.f_add(&norms.f_narrow(0, start, rows)?)?.f_add(&norms_row)?.f_clamp_min(0.0)?;
        let (values, order) = squared.f_topk(take, 1, false, true)?;
        let values = Vec::<f64>::try_from(values.f_to_kind(Kind::Double)?.f_flatten(0, -1)?)?;
        let order = Vec::<i64>::try_from(order.f_flatten(0, -1)?)?;
        for r in 0..rows as usize {
            let own = start + r as i64;
            let row = r * take as usize..(r + 1) * take as usize;
            for (&j, &d) in order[row.clone()].iter().zip(&values[row]).filter(|(&j, _)| j != own).take(k) {
                indices.push(j);
                distances.push(d);
            }
        }
    }
    Ok((indices, distances))
}
