//! How well a 2-D map keeps neighbourhoods: trustworthiness (scikit-learn's definition) and kNN overlap.

use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// Squared Euclidean distances between rows, in float64.
/// # Shapes
/// `[n, d]` → `[n, n]`.
pub(crate) fn squared_distances(x: &Tensor) -> Result<Tensor> {
    let x = x.f_to_kind(Kind::Double)?;
    let norms = x.f_square()?.f_sum_dim_intlist([1i64].as_slice(), true, Kind::Double)?;
    let d = norms.f_add(&norms.f_tr()?)?.f_sub(&x.f_matmul(&x.f_tr()?)?.f_mul_scalar(2.0)?)?;
    Ok(d.f_clamp_min(0.0)?)
}

/// Each row's other rows ordered by distance (ties by index), as a row-major `n × (n − 1)` table.
fn neighbour_order(x: &Tensor) -> Result<Vec<Vec<usize>>> {
    let n = x.size()[0] as usize;
    let d = Vec::<f64>::try_from(squared_distances(x)?.f_flatten(0, -1)?)?;
    Ok((0..n)
        .map(|i| {
            let row = &d[i * n..(i + 1) * n];
            let mut order: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            order.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
            order
        })
        .collect())
}

fn check(x: &Tensor, y: &Tensor, k: usize) -> Result<usize> {
    let n = x.size().first().copied().unwrap_or(0) as usize;
    if x.dim() != 2 || y.dim() != 2 || y.size()[0] as usize != n {
        return Err(Error::Shape {
            context: "projection quality".into(),
            why: format!("expected X [n, d] and Y [n, 2], got {:?} and {:?}", x.size(), y.size()),
        });
    }
    if k == 0 || 2 * k >= n {
        return Err(Error::invalid(format!("k = {k}"), format!("needs 1 ≤ k < n / 2 = {}", n / 2)));
    }
    Ok(n)
}

/// scikit-learn's `trustworthiness(X, Y, n_neighbors=k)`: 1 − 2 / (n k (2n − 3k − 1)) · Σᵢ Σ_{j ∈ kNN_Y(i) \ kNN_X(i)}
/// (rank of j among i's neighbours in X − k). Euclidean in both spaces, ties broken by index.
/// # Shapes
/// `x [n, d]`, `y [n, m]`.
pub fn trustworthiness(x: &Tensor, y: &Tensor, k: usize) -> Result<f64> {
    Ok(neighbourhood_quality(x, y, k)?.0)
}

/// The mean fraction of each point's k nearest neighbours in X that are also among its k nearest in Y.
pub fn knn_overlap(x: &Tensor, y: &Tensor, k: usize) -> Result<f64> {
    Ok(neighbourhood_quality(x, y, k)?.1)
}

/// [`trustworthiness`] and [`knn_overlap`] together, from one neighbour ordering of each space.
pub fn neighbourhood_quality(x: &Tensor, y: &Tensor, k: usize) -> Result<(f64, f64)> {
    let n = check(x, y, k)?;
    let in_x = neighbour_order(x)?;
    let in_y = neighbour_order(y)?;
    let (mut penalty, mut shared) = (0.0, 0usize);
    let mut rank = vec![0usize; n];
    for i in 0..n {
        for (r, &j) in in_x[i].iter().enumerate() {
            rank[j] = r + 1;
        }
        for &j in &in_y[i][..k] {
            if rank[j] > k {
                penalty += (rank[j] - k) as f64;
            } else {
                shared += 1;
            }
        }
    }
    let (n, k) = (n as f64, k as f64);
    Ok((1.0 - penalty * 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)), shared as f64 / (n * k)))
}
