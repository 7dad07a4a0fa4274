//! t-SNE with scikit-learn's semantics (`TSNE` and its defaults since 1.2): perplexity calibrated per point by
//! binary search, joint probabilities, PCA initialisation scaled to a standard deviation of 1e-4, early
//! exaggeration 12 for 250 iterations with momentum 0.5, then momentum 0.8, learning rate "auto"
//! (`max(n / 12 / 4, 50)`), gains (+0.2 / ×0.8, at least 0.01). Two gradients: exact (`method="exact"`, here; O(n²)
//! memory and time per iteration) and Barnes-Hut (`method="barnes_hut"`, [`super::tsne_barnes_hut`]; sparse kNN
//! affinities and a quadtree, O(n log n)). [`TsneMethod::Auto`] picks exact up to 1000 points (as fast there, and
//! no approximation), Barnes-Hut beyond, scikit-learn's default method.

use super::pca::pca;
use super::quality::squared_distances;
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

#[derive(Debug, Clone)]
pub struct TsneOptions {
    pub perplexity: f64,
    pub early_exaggeration: f64,
    /// `None`: "auto", `max(n / early_exaggeration / 4, 50)`.
    pub learning_rate: Option<f64>,
    pub max_iter: usize,
    /// Initialise from PCA (scikit-learn's default) or from a seeded Gaussian of standard deviation 1e-4.
    pub pca_init: bool,
    pub seed: u64,
    pub method: TsneMethod,
}

/// Which gradient t-SNE uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TsneMethod {
    /// Exact up to 1000 points, Barnes-Hut with angle 0.5 beyond.
    Auto,
    /// All pairs: O(n²) memory and time.
    Exact,
    /// scikit-learn's `method="barnes_hut"`: cells seen under less than `angle` (0 to 1; 0 opens every cell) are
    /// summarised by their centre of mass.
    BarnesHut { angle: f64 },
}

/// The most points [`TsneMethod::Auto`] runs the exact gradient on.
const AUTO_EXACT_MAX: usize = 1000;

impl Default for TsneOptions {
    fn default() -> Self {
        Self {
            perplexity: 30.0,
            early_exaggeration: 12.0,
            learning_rate: None,
            max_iter: 1000,
            pca_init: true,
            seed: 0,
            method: TsneMethod::Auto,
        }
    }
}

const EXPLORATION_ITERS: usize = 250;

/// Conditional probabilities p(j|i) with each row's precision found by bisection so that its entropy is
/// `ln(perplexity)` (tolerance 1e-5, at most 100 steps), as scikit-learn's `_binary_search_perplexity`. Rows of a
/// square `d` leave out j = i; rows of kNN distances (`square` false) keep every column.
/// # Shapes
/// `d [n, m]` squared distances (float64) → `[n, m]`.
pub(super) fn conditional_probabilities(d: &Tensor, perplexity: f64, square: bool) -> Result<Tensor> {
    let n = d.size()[0];
    let target = perplexity.ln();
    let off_diagonal = if square {
        Tensor::f_eye(n, (Kind::Double, d.device()))?.f_neg()?.f_add_scalar(1.0)?
    } else {
        Tensor::f_ones_like(d)?
    };
    let mut beta = Tensor::ones([n, 1], (Kind::Double, d.device()));
    let mut lo = Tensor::full([n, 1], f64::NEG_INFINITY, (Kind::Double, d.device()));
    let mut hi = Tensor::full([n, 1], f64::INFINITY, (Kind::Double, d.device()));
    let mut p = Tensor::f_zeros_like(d)?;
    for _ in 0..100 {
        let raw = d.f_mul(&beta)?.f_neg()?.f_exp()?.f_mul(&off_diagonal)?;
        let sum = raw.f_sum_dim_intlist([1i64].as_slice(), true, Kind::Double)?;
        let sum = sum.f_where_scalarother(&sum.f_gt(0.0)?, 1e-8)?;
        let weighted = d.f_mul(&raw)?.f_sum_dim_intlist([1i64].as_slice(), true, Kind::Double)?;
        p = raw.f_div(&sum)?;
        let entropy = sum.f_log()?.f_add(&beta.f_mul(&weighted)?.f_div(&sum)?)?;
        let diff = entropy.f_sub_scalar(target)?;
        if diff.f_abs()?.f_max()?.f_double_value(&[])? <= 1e-5 {
            break;
        }
        let done = diff.f_abs()?.f_le(1e-5)?;
        let too_flat = diff.f_gt(0.0)?; // entropy too high: raise the precision
        let new_lo = beta.f_where_self(&too_flat, &lo)?;
        let new_hi = hi.f_where_self(&too_flat, &beta)?;
        let up = beta.f_mul_scalar(2.0)?.f_where_self(&hi.f_isinf()?, &beta.f_add(&hi)?.f_div_scalar(2.0)?)?;
        let down = beta.f_div_scalar(2.0)?.f_where_self(&lo.f_isinf()?, &beta.f_add(&lo)?.f_div_scalar(2.0)?)?;
        let next = up.f_where_self(&too_flat, &down)?;
        beta = beta.f_where_self(&done, &next)?;
        lo = lo.f_where_self(&done, &new_lo)?;
        hi = hi.f_where_self(&done, &new_hi)?;
    }
    Ok(p)
}

/// A 2-D t-SNE map of the rows of `x`, by the gradient `options.method` picks.
/// # Shapes
/// `x [n, d]` → `[n, 2]` float32.
pub fn tsne(x: &Tensor, options: &TsneOptions) -> Result<Tensor> {
    let n = check_input(x, options)?;
    match options.method {
        TsneMethod::Exact => tsne_exact(x, options),
        TsneMethod::Auto if n <= AUTO_EXACT_MAX => tsne_exact(x, options),
        TsneMethod::Auto => super::tsne_barnes_hut(x, options, 0.5),
        TsneMethod::BarnesHut { angle } => super::tsne_barnes_hut(x, options, angle),
    }
}

/// The number of rows, once `x` and the perplexity are known to suit t-SNE.
pub(super) fn check_input(x: &Tensor, options: &TsneOptions) -> Result<usize> {
    let n = x.size().first().copied().unwrap_or(0);
    if x.dim() != 2 || n < 4 {
        return Err(Error::Shape {
            context: "t-SNE".into(), why: format!("expected [n ≥ 4, d], got {:?}", x.size())
        });
    }
    if !bool::try_from(x.f_isfinite()?.f_all()?)? {
        return Err(Error::invalid("t-SNE input", "holds NaN or infinite values"));
    }
    if !(options.perplexity > 0.0 && options.perplexity < n as f64) {
        return Err(Error::invalid(
            format!("perplexity {}", options.perplexity),
            format!("must be positive and below the number of points ({n})"),
        ));
    }
    Ok(n as usize)
}

fn tsne_exact(x: &Tensor, options: &TsneOptions) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let d = squared_distances(x)?;
    let conditional = conditional_probabilities(&d, options.perplexity, true)?;
    let joint = conditional.f_add(&conditional.f_tr()?)?;
    let p = joint
        .f_div_scalar(joint.f_sum(Kind::Double)?.f_double_value(&[])?.max(f64::EPSILON))?
        .f_clamp_min(f64::EPSILON)?;
    let p = Vec::<f32>::try_from(p.f_to_kind(Kind::Float)?.f_flatten(0, -1)?)?;
    let y = initial_embedding(x, options)?;
    let threads = (tch::get_num_threads().max(1) as usize).min(y.len() / 2);
    optimise(y, options, |y, exaggeration| gradient(&p, y, exaggeration, threads))
}

/// PCA scaled to a standard deviation of 1e-4 on the first axis (scikit-learn's `init="pca"`), or a seeded
/// Gaussian of standard deviation 1e-4.
/// # Shapes
/// `x [n, d]` → `[n·2]` row-major.
pub(super) fn initial_embedding(x: &Tensor, options: &TsneOptions) -> Result<Vec<f32>> {
    let _guard = tch::no_grad_guard();
    let y = if options.pca_init {
        let y = pca(x, 2)?;
        let std = y.f_select(1, 0)?.f_std(false)?.f_double_value(&[])?; // numpy's std: population
        y.f_div_scalar(std.max(f64::MIN_POSITIVE))?.f_mul_scalar(1e-4)?
    } else {
        super::seeded_normal(&[x.size()[0], 2], options.seed)?.f_mul_scalar(1e-4)?
    };
    Ok(Vec::<f32>::try_from(y.f_to_kind(Kind::Float)?.f_flatten(0, -1)?)?)
}

/// Gradient descent with exaggeration, momentum, gains and learning rate as scikit-learn's `_gradient_descent`
/// calls; `gradient(y, exaggeration)` is ∂C/∂y.
/// # Shapes
/// `y [n·2]` row-major → `[n, 2]` float32.
pub(super) fn optimise(
    mut y: Vec<f32>,
    options: &TsneOptions,
    mut gradient: impl FnMut(&[f32], f32) -> Result<Vec<f32>>,
) -> Result<Tensor> {
    let n = y.len() / 2;
    let lr = options.learning_rate.unwrap_or_else(|| (n as f64 / options.early_exaggeration / 4.0).max(50.0));
    let (mut update, mut gains) = (vec![0f32; 2 * n], vec![1f32; 2 * n]);
    for it in 0..options.max_iter {
        let (exaggeration, momentum) =
            if it < EXPLORATION_ITERS { (options.early_exaggeration as f32, 0.5) } else { (1.0, 0.8) };
        let grad = gradient(&y, exaggeration)?;
        for i in 0..2 * n {
            gains[i] = if update[i] * grad[i] < 0.0 { gains[i] + 0.2 } else { gains[i] * 0.8 }.max(0.01);
            update[i] = momentum * update[i] - lr as f32 * gains[i] * grad[i];
            y[i] += update[i];
        }
    }
    Ok(Tensor::from_slice(&y).f_reshape([n as i64, 2])?)
}

/// Per row i: Σⱼ wᵢⱼ, Σⱼ pᵢⱼ wᵢⱼ (yᵢ − yⱼ) and Σⱼ wᵢⱼ² (yᵢ − yⱼ), with wᵢⱼ = (1 + ‖yᵢ − yⱼ‖²)⁻¹ (wᵢᵢ = 0).
/// Coordinates come as two columns so that the inner loop vectorises; j = i adds exactly 1 to Σⱼ wᵢⱼ and
/// nothing else, which is taken off after the loop rather than branched on inside it.
fn row_sums(p: &[f32], (y0, y1): (&[f32], &[f32]), rows: std::ops::Range<usize>, exaggeration: f32) -> Vec<[f32; 5]> {
    let n = y0.len();
    const LANES: usize = 8; // independent partial sums, so that the loop vectorises without reordering floats
    rows.map(|i| {
        let p_row = &p[i * n..(i + 1) * n];
        let mut acc = [[0f32; LANES]; 5];
        let mut add = |lane: usize, a: f32, b: f32, pij: f32| {
            let (d0, d1) = (y0[i] - a, y1[i] - b);
            let w = 1.0 / (1.0 + d0 * d0 + d1 * d1);
            let pw = exaggeration * pij * w;
            let ww = w * w;
            acc[0][lane] += w;
            acc[1][lane] += pw * d0;
            acc[2][lane] += pw * d1;
            acc[3][lane] += ww * d0;
            acc[4][lane] += ww * d1;
        };
        let whole = n / LANES * LANES;
        for ((a, b), pij) in
            y0[..whole].chunks_exact(LANES).zip(y1[..whole].chunks_exact(LANES)).zip(p_row.chunks_exact(LANES))
        {
            for lane in 0..LANES {
                add(lane, a[lane], b[lane], pij[lane]);
            }
        }
        for j in whole..n {
            add(0, y0[j], y1[j], p_row[j]);
        }
        let mut s = acc.map(|lanes| lanes.iter().sum::<f32>());
        s[0] -= 1.0;
        s
    })
    .collect()
}

/// The exact gradient of KL(P‖Q): ∂C/∂yᵢ = 4 Σⱼ (pᵢⱼ − qᵢⱼ) wᵢⱼ (yᵢ − yⱼ), qᵢⱼ = wᵢⱼ / Σₖₗ wₖₗ. Rows are split
/// over threads; each row is summed in order, so the result does not depend on the thread count.
/// # Shapes
/// `p [n·n]`, `y [n·2]` (row-major) → `[n·2]`.
pub(super) fn gradient(p: &[f32], y: &[f32], exaggeration: f32, threads: usize) -> Result<Vec<f32>> {
    let n = y.len() / 2;
    let per = n.div_ceil(threads);
    let columns: (Vec<f32>, Vec<f32>) = y.chunks_exact(2).map(|c| (c[0], c[1])).unzip();
    let columns = (columns.0.as_slice(), columns.1.as_slice());
    let sums: Vec<[f32; 5]> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(per)
            .map(|start| scope.spawn(move || row_sums(p, columns, start..(start + per).min(n), exaggeration)))
            .collect();
        handles.into_iter().map(|h| h.join()).collect::<std::result::Result<Vec<_>, _>>()
    })
    .map_err(|_| Error::invalid("t-SNE", "a gradient thread failed"))?
    .concat();
    let z: f64 = sums.iter().map(|s| s[0] as f64).sum();
    let inv_z = (1.0 / z.max(f64::MIN_POSITIVE)) as f32;
    Ok(sums.iter().flat_map(|s| [4.0 * (s[1] - inv_z * s[3]), 4.0 * (s[2] - inv_z * s[4])]).collect())
}
