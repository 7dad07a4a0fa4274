//! UMAP with umap-learn 0.5's semantics (`UMAP(metric="euclidean", init="spectral")`): exact k nearest neighbours
//! (the point itself counted as the first), per-point `rho` / `sigma` so that memberships sum to `log2(k)`, fuzzy
//! union, `a` / `b` fitted to the `min_dist` / `spread` curve, spectral initialisation, then epoch-sampled SGD with
//! negative sampling. Single-threaded and deterministic for a seed; the random streams are not umap-learn's, so
//! maps agree in quality, not coordinate by coordinate. Differences: a disconnected graph starts from a seeded
//! uniform layout in [−10, 10] (umap-learn lays the components out apart), and the spectral vectors come from a
//! fixed number of Lanczos steps rather than ARPACK's restarted Lanczos to a tolerance.

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone)]
pub struct UmapOptions {
    pub n_neighbors: usize,
    pub min_dist: f64,
    pub spread: f64,
    /// `None`: 500 epochs up to 10 000 points, 200 above (umap-learn's default).
    pub n_epochs: Option<usize>,
    pub learning_rate: f64,
    pub negative_sample_rate: usize,
    pub repulsion_strength: f64,
    pub seed: u64,
}

impl Default for UmapOptions {
    fn default() -> Self {
        Self {
            n_neighbors: 15,
            min_dist: 0.1,
            spread: 1.0,
            n_epochs: None,
            learning_rate: 1.0,
            negative_sample_rate: 5,
            repulsion_strength: 1.0,
            seed: 0,
        }
    }
}

/// Lanczos steps of the spectral initialisation: enough for umap-learn's tolerance on kNN graphs of 10⁵ points.
const LANCZOS_STEPS: i64 = 200;
const SMOOTH_K_TOLERANCE: f64 = 1e-5;
const MIN_K_DIST_SCALE: f64 = 1e-3;
/// Above this many points the optimisation reports its progress on stderr.
const PROGRESS_MIN_POINTS: usize = 10_000;

/// A directed edge of the symmetric fuzzy graph (both directions are stored, as umap-learn's COO matrix does).
struct Edge {
    head: usize,
    tail: usize,
    weight: f64,
}

/// A 2-D UMAP map of the rows of `x` (already prepared by the metric: Euclidean distances between rows).
/// # Shapes
/// `x [n, d]` → `[n, 2]` float32.
pub fn umap(x: &Tensor, options: &UmapOptions) -> Result<Tensor> {
    let n = validate(x, options)?;
    let _guard = tch::no_grad_guard();
    let (indices, distances) = nearest_neighbours(x, options.n_neighbors)?;
    let mut graph = fuzzy_graph(&indices, &distances, n, options.n_neighbors);
    let default_epochs = if n <= 10_000 { 500 } else { 200 };
    let n_epochs = options.n_epochs.unwrap_or(default_epochs);
    let max_weight = graph.iter().map(|e| e.weight).fold(0.0, f64::max);
    let floor = max_weight / if n_epochs > 10 { n_epochs } else { default_epochs } as f64;
    graph.retain(|e| e.weight >= floor);
    let (a, b) = find_ab_params(options.spread, options.min_dist)?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut embedding = rescale(&initial_layout(&graph, n, &mut rng)?);
    optimize(&mut embedding, &graph, n_epochs, (a, b), options, &mut rng);
    Ok(Tensor::from_slice(&embedding).f_reshape([n as i64, 2])?)
}

fn validate(x: &Tensor, o: &UmapOptions) -> Result<usize> {
    let (n, d) = if let [n, d] = x.size()[..] { (n as usize, d) } else { (0, 0) };
    if n < 3 || d < 1 {
        let why = format!("expected [n ≥ 3, d ≥ 1], got {:?}", x.size());
        return Err(Error::Shape { context: "UMAP".into(), why });
    }
    let numbers = [
        ((2..n).contains(&o.n_neighbors), "n_neighbors", o.n_neighbors as f64, "2 ≤ n_neighbors < n"),
        (o.spread > 0.0, "spread", o.spread, "spread > 0"),
        ((0.0..=o.spread).contains(&o.min_dist), "min_dist", o.min_dist, "0 ≤ min_dist ≤ spread"),
        (o.learning_rate > 0.0, "learning_rate", o.learning_rate, "learning_rate > 0"),
        (o.repulsion_strength >= 0.0, "repulsion_strength", o.repulsion_strength, "repulsion_strength ≥ 0"),
    ];
    if let Some((_, name, value, rule)) = numbers.into_iter().find(|c| !(c.0 && c.2.is_finite())) {
        let why = format!("needs {rule}, finite (here n = {n}, spread = {})", o.spread);
        return Err(Error::invalid(format!("UMAP {name} {value}"), why));
    }
    if x.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
        return Err(Error::invalid("UMAP input", "holds NaN or infinite values"));
    }
    Ok(n)
}

/// Each row's `k` nearest rows as umap-learn lists them: itself first at distance 0, then the `k − 1` nearest
/// others, with Euclidean (not squared) distances, in float64.
/// # Shapes
/// `x [n, d]` → indices and distances, both row-major `n × k`.
fn nearest_neighbours(x: &Tensor, k: usize) -> Result<(Vec<usize>, Vec<f64>)> {
    let n = x.size()[0] as usize;
    let (others, squared) = super::knn::nearest_neighbours(&x.f_to_kind(Kind::Double)?, k - 1)?;
    let (mut indices, mut distances) = (Vec::with_capacity(n * k), Vec::with_capacity(n * k));
    for i in 0..n {
        indices.push(i);
        distances.push(0.0);
        let row = i * (k - 1)..(i + 1) * (k - 1);
        indices.extend(others[row.clone()].iter().map(|&j| j as usize));
        distances.extend(squared[row].iter().map(|d| d.sqrt()));
    }
    Ok((indices, distances))
}

/// umap-learn's `smooth_knn_dist` for one row (self in column 0): `(sigma, rho)`.
fn smooth_row(row: &[f64], k: usize, mean_all: f64) -> (f64, f64) {
    let target = (k as f64).log2();
    let rho = row.iter().copied().find(|&d| d > 0.0).unwrap_or(0.0);
    let (mut lo, mut hi, mut mid) = (0.0, f64::INFINITY, 1.0);
    for _ in 0..64 {
        let psum: f64 = row[1..].iter().map(|&d| if d - rho > 0.0 { (-(d - rho) / mid).exp() } else { 1.0 }).sum();
        if (psum - target).abs() < SMOOTH_K_TOLERANCE {
            break;
        }
        if psum > target {
            hi = mid;
        } else {
            lo = mid;
        }
        mid = if hi.is_infinite() { mid * 2.0 } else { (lo + hi) / 2.0 };
    }
    let mean = if rho > 0.0 { row.iter().sum::<f64>() / row.len() as f64 } else { mean_all };
    (mid.max(MIN_K_DIST_SCALE * mean), rho)
}

/// Memberships `exp(−(d − rho) / sigma)` of each directed kNN edge, then the fuzzy union `A + Aᵀ − A∘Aᵀ`,
/// as an edge list sorted by (head, tail) holding both directions.
fn fuzzy_graph(indices: &[usize], distances: &[f64], n: usize, k: usize) -> Vec<Edge> {
    let mean_all = distances.iter().sum::<f64>() / distances.len() as f64;
    let mut directed: Vec<(usize, usize, f64)> = Vec::with_capacity(n * k);
    for i in 0..n {
        let row = &distances[i * k..(i + 1) * k];
        let (sigma, rho) = smooth_row(row, k, mean_all);
        for (&j, &d) in indices[i * k..(i + 1) * k].iter().zip(row) {
            let w = if d - rho <= 0.0 || sigma == 0.0 { 1.0 } else { (-(d - rho) / sigma).exp() };
            if j != i && w > 0.0 {
                directed.push((i, j, w));
            }
        }
    }
    directed.sort_unstable_by_key(|e| (e.0, e.1));
    let weight_of =
        |i: usize, j: usize| directed.binary_search_by_key(&(i, j), |e| (e.0, e.1)).ok().map(|p| directed[p].2);
    let mut graph = Vec::with_capacity(2 * directed.len());
    for &(i, j, w) in &directed {
        let back = weight_of(j, i);
        let weight = w + back.unwrap_or(0.0) - w * back.unwrap_or(0.0);
        graph.push(Edge { head: i, tail: j, weight });
        if back.is_none() {
            graph.push(Edge { head: j, tail: i, weight });
        }
    }
    graph.sort_unstable_by_key(|e| (e.head, e.tail));
    graph
}

/// umap-learn's `find_ab_params`: the least-squares fit of `1 / (1 + a x^{2b})` to 1 below `min_dist` and
/// `exp(−(x − min_dist) / spread)` above, on 300 points of [0, 3·spread] (Levenberg–Marquardt from a = b = 1).
pub fn find_ab_params(spread: f64, min_dist: f64) -> Result<(f64, f64)> {
    if !(spread.is_finite() && spread > 0.0 && min_dist.is_finite() && min_dist >= 0.0 && min_dist <= spread) {
        return Err(Error::invalid(format!("spread {spread}, min_dist {min_dist}"), "needs 0 ≤ min_dist ≤ spread"));
    }
    let xs: Vec<f64> = (0..300).map(|i| 3.0 * spread * i as f64 / 299.0).collect();
    let ys: Vec<f64> = xs.iter().map(|&x| if x < min_dist { 1.0 } else { (-(x - min_dist) / spread).exp() }).collect();
    let cost = |a: f64, b: f64| -> f64 {
        xs.iter().zip(&ys).map(|(&x, &y)| (1.0 / (1.0 + a * x.powf(2.0 * b)) - y).powi(2)).sum()
    };
    let (mut a, mut b, mut lambda) = (1.0, 1.0, 1e-3);
    let mut current = cost(a, b);
    for _ in 0..500 {
        let (mut h, mut g) = ([0.0; 3], [0.0; 2]); // JᵀJ (aa, ab, bb) and Jᵀr; x = 0 fits exactly whatever a, b
        for (&x, &y) in xs.iter().zip(&ys).filter(|(&x, _)| x > 0.0) {
            let p = x.powf(2.0 * b);
            let f = 1.0 / (1.0 + a * p);
            let (ja, jb) = (-p * f * f, -2.0 * a * p * x.ln() * f * f);
            h = [h[0] + ja * ja, h[1] + ja * jb, h[2] + jb * jb];
            g = [g[0] + ja * (f - y), g[1] + jb * (f - y)];
        }
        let (haa, hbb) = (h[0] * (1.0 + lambda), h[2] * (1.0 + lambda));
        let det = haa * hbb - h[1] * h[1];
        let (da, db) = ((h[1] * g[1] - hbb * g[0]) / det, (h[1] * g[0] - haa * g[1]) / det);
        let next = if a + da > 0.0 && b + db > 0.0 { cost(a + da, b + db) } else { f64::NAN };
        if next < current {
            let settled = current - next <= 1e-15 * current;
            (a, b, current, lambda) = (a + da, b + db, next, lambda / 10.0);
            if settled {
                break;
            }
        } else if lambda > 1e15 {
            break;
        } else {
            lambda *= 10.0;
        }
    }
    if !(a.is_finite() && b.is_finite()) {
        return Err(Error::invalid(format!("spread {spread}, min_dist {min_dist}"), "the a/b curve fit diverged"));
    }
    Ok((a, b))
}

/// Spectral layout scaled to max |coordinate| 10 plus N(0, 1e-4) noise; a seeded uniform layout in
/// [−10, 10] when the graph is disconnected.
/// # Shapes
/// → row-major `n × 2`.
fn initial_layout(graph: &[Edge], n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
    let mut degree = vec![0.0; n];
    graph.iter().for_each(|e| degree[e.head] += e.weight);
    let index: Vec<i64> = graph.iter().map(|e| e.head as i64).chain(graph.iter().map(|e| e.tail as i64)).collect();
    let values: Vec<f64> = graph.iter().map(|e| e.weight / (degree[e.head] * degree[e.tail]).sqrt()).collect();
    // D^{−½} W D^{−½}; the edges are sorted and unique, hence coalesced
    let adjacency = Tensor::f_sparse_coo_tensor_indices_size(
        &Tensor::from_slice(&index).f_reshape([2, -1])?,
        &Tensor::from_slice(&values),
        [n as i64, n as i64],
        (Kind::Double, Device::Cpu),
        true,
    )?;
    let components = count_components(graph, n);
    let Some(vectors) = (if components == 1 { lanczos(&adjacency, &degree, rng)? } else { None }) else {
        eprintln!("[sdscope] umap: no spectral layout ({components} graph components); starting from a random one");
        return Ok((0..2 * n).map(|_| rng.random_range(-10.0..10.0)).collect());
    };
    let coords = Vec::<f64>::try_from(vectors.f_contiguous()?.f_flatten(0, -1)?)?;
    let max = coords.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { 10.0 / max } else { 1.0 };
    let noise = Vec::<f32>::try_from(super::seeded_normal(&[2 * n as i64], rng.random())?)?;
    // umap-learn rounds the scaled coordinates and the noise to float32 before adding them
    Ok(coords.iter().zip(noise).map(|(&c, z)| ((c * scale) as f32 + 1e-4 * z) as f64).collect())
}

fn count_components(graph: &[Edge], n: usize) -> usize {
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for e in graph {
        let (a, b) = (root(&mut parent, e.head), root(&mut parent, e.tail));
        parent[a] = b;
    }
    (0..n).filter(|&i| root(&mut parent, i) == i).count()
}

/// The eigenvectors of the 2 smallest non-trivial eigenvalues of `L = I − A`, `A = D^{−½} W D^{−½}`, i.e. the 2
/// largest of `A` once its top eigenvector `√degree` is projected out: Lanczos with full reorthogonalisation for
/// [`LANCZOS_STEPS`] steps (exact when `n` is smaller), then the Ritz vectors. `None` if the Krylov space
/// closes on fewer than 2 dimensions.
/// # Shapes
/// `adjacency [n, n]` (sparse) → `[n, 2]`.
fn lanczos(adjacency: &Tensor, degree: &[f64], rng: &mut ChaCha8Rng) -> Result<Option<Tensor>> {
    let n = degree.len() as i64;
    let steps = (n - 1).min(LANCZOS_STEPS);
    let trivial = Tensor::from_slice(degree).f_sqrt()?.f_unsqueeze(1)?;
    let trivial = trivial.f_div(&trivial.f_norm()?)?;
    let basis = Tensor::f_zeros([n, steps + 1], (Kind::Double, Device::Cpu))?;
    basis.f_narrow(1, 0, 1)?.f_copy_(&trivial)?;
    let (mut alpha, mut beta) = (Vec::new(), Vec::new());
    let mut q = super::seeded_normal(&[n, 1], rng.random())?.f_to_kind(Kind::Double)?;
    for j in 1..=steps {
        let earlier = basis.f_narrow(1, 0, j)?;
        for _ in 0..2 {
            q = q.f_sub(&earlier.f_mm(&earlier.f_tr()?.f_mm(&q)?)?)?; // twice: classical Gram–Schmidt loses digits
        }
        let norm = q.f_norm()?.f_double_value(&[])?;
        if norm < 1e-10 {
            break;
        }
        if j > 1 {
            beta.push(norm);
        }
        q = q.f_div_scalar(norm)?;
        basis.f_narrow(1, j, 1)?.f_copy_(&q)?;
        let w = adjacency.f_mm(&q)?;
        alpha.push(q.f_tr()?.f_mm(&w)?.f_double_value(&[0, 0])?);
        q = w;
    }
    let m = alpha.len();
    if m < 2 {
        return Ok(None);
    }
    let tridiagonal = Tensor::from_slice(&alpha).f_diagflat(0)?.f_add(&Tensor::from_slice(&beta).f_diagflat(-1)?)?;
    let (_, ritz) = tridiagonal.f_linalg_eigh("L")?; // reads the lower triangle only
    let largest = Tensor::from_slice(&[m as i64 - 1, m as i64 - 2]);
    Ok(Some(basis.f_narrow(1, 1, m as i64)?.f_mm(&ritz.f_index_select(1, &largest)?)?))
}

/// Each column mapped to [0, 10], as umap-learn does before optimising.
fn rescale(coords: &[f64]) -> Vec<f32> {
    let mut out = vec![0.0f32; coords.len()];
    for c in 0..2 {
        let column = coords.iter().skip(c).step_by(2);
        let (lo, hi) = column.clone().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
        let range = if hi > lo { hi - lo } else { 1.0 };
        for (o, &v) in out.iter_mut().skip(c).step_by(2).zip(column) {
            *o = (10.0 * (v - lo) / range) as f32;
        }
    }
    out
}

/// umap-learn's `optimize_layout_euclidean` (`move_other=True`): each edge is sampled every
/// `max_weight / weight` epochs, pulling both ends together, followed by its share of negative samples that
/// push the head away from uniformly drawn points; the step size decays linearly.
/// # Shapes
/// `embedding`: row-major `n × 2`.
fn optimize(layout: &mut [f32], graph: &[Edge], epochs: usize, ab: (f64, f64), o: &UmapOptions, rng: &mut ChaCha8Rng) {
    let (n, (a, b)) = (layout.len() / 2, ab);
    let max_weight = graph.iter().map(|e| e.weight).fold(0.0, f64::max);
    let per_sample: Vec<f64> = graph.iter().map(|e| max_weight / e.weight).collect();
    let per_negative: Vec<f64> = per_sample.iter().map(|p| p / o.negative_sample_rate as f64).collect();
    let mut next_sample = per_sample.clone();
    let mut next_negative = per_negative.clone();
    // The moves in float32, as umap-learn's float32 embedding; the sampling schedule in float64.
    let (a, b, gamma) = (a as f32, b as f32, o.repulsion_strength as f32);
    let mut alpha = o.learning_rate as f32;
    let d2 = |e: &[f32], j: usize, k: usize| -> f32 {
        let (dx, dy) = (e[2 * j] - e[2 * k], e[2 * j + 1] - e[2 * k + 1]);
        dx * dx + dy * dy
    };
    for epoch in 0..epochs {
        let now = epoch as f64;
        let step = |g: f32| g.clamp(-4.0, 4.0) * alpha;
        for (i, edge) in graph.iter().enumerate() {
            if next_sample[i] > now {
                continue;
            }
            let (j, k) = (edge.head, edge.tail);
            let dist = d2(layout, j, k);
            let coeff = if dist > 0.0 {
                let pow_b = dist.powf(b); // d^(b−1) = d^b / d: one powf instead of two
                -2.0 * a * b * (pow_b / dist) / (a * pow_b + 1.0)
            } else {
                0.0
            };
            for d in 0..2 {
                let grad = step(coeff * (layout[2 * j + d] - layout[2 * k + d]));
                layout[2 * j + d] += grad;
                layout[2 * k + d] -= grad;
            }
            next_sample[i] += per_sample[i];
            if o.negative_sample_rate == 0 {
                continue;
            }
            let negatives = ((now - next_negative[i]) / per_negative[i]).max(0.0) as usize;
            for _ in 0..negatives {
                let k = rng.random_range(0..n);
                let dist = d2(layout, j, k);
                if dist <= 0.0 {
                    continue; // the point itself or an exact overlap: umap-learn 0.5.12 moves nothing
                }
                let coeff = 2.0 * gamma * b / ((0.001 + dist) * (a * dist.powf(b) + 1.0));
                for d in 0..2 {
                    layout[2 * j + d] += step(coeff * (layout[2 * j + d] - layout[2 * k + d]));
                }
            }
            next_negative[i] += negatives as f64 * per_negative[i];
        }
        alpha = (o.learning_rate * (1.0 - now / epochs as f64)) as f32;
        if n >= PROGRESS_MIN_POINTS && (epoch + 1) % (epochs / 10).max(1) == 0 {
            eprintln!("[sdscope] umap: epoch {}/{epochs}", epoch + 1);
        }
    }
}
