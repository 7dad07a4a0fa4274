//! Barnes-Hut t-SNE with scikit-learn's semantics (`TSNE(method="barnes_hut")`): affinities on the
//! `min(n − 1, ⌊3·perplexity + 1⌋)` exact nearest neighbours only (perplexity calibrated on those distances,
//! symmetrised, normalised to sum 1), attraction along those sparse edges, repulsion from a quadtree rebuilt every
//! iteration in which a cell seen under less than `angle` (its widest side over its distance to the point) stands
//! for all its points at their centre of mass. The optimiser, initialisation and defaults are the exact path's
//! ([`super::tsne`]). O(n·k) memory, about O(n log n) time per iteration.

use super::knn::nearest_neighbours;
use super::tsne::{check_input, conditional_probabilities, initial_embedding, optimise, TsneOptions};
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// A 2-D t-SNE map of the rows of `x` with the Barnes-Hut gradient; `angle` in [0, 1] (scikit-learn's default 0.5;
/// 0 opens every cell, which gives the exact repulsion at a higher cost than the exact method).
/// # Shapes
/// `x [n, d]` → `[n, 2]` float32.
pub fn tsne_barnes_hut(x: &Tensor, options: &TsneOptions, angle: f64) -> Result<Tensor> {
    let n = check_input(x, options)?;
    if !(0.0..=1.0).contains(&angle) {
        return Err(Error::invalid(format!("Barnes-Hut angle {angle}"), "must lie in [0, 1]"));
    }
    let _guard = tch::no_grad_guard();
    let k = (n - 1).min((3.0 * options.perplexity + 1.0) as usize).max(1);
    let (neighbours, distances) = nearest_neighbours(&x.f_to_kind(Kind::Double)?, k)?;
    let distances = Tensor::from_slice(&distances).f_reshape([n as i64, k as i64])?;
    let conditional = conditional_probabilities(&distances, options.perplexity, false)?;
    let conditional = Vec::<f64>::try_from(conditional.f_flatten(0, -1)?)?;
    let p = Affinities::symmetric(n, k, &neighbours, &conditional);
    let y = initial_embedding(x, options)?;
    let threads = (tch::get_num_threads().max(1) as usize).min(n);
    optimise(y, options, |y, exaggeration| gradient(&p, y, exaggeration, angle, threads))
}

/// The joint probabilities P = (P + Pᵀ) / Σ(P + Pᵀ) of a sparse conditional P, row by row (CSR), columns ascending.
struct Affinities {
    start: Vec<usize>,
    columns: Vec<u32>,
    values: Vec<f32>,
}

impl Affinities {
    /// # Shapes
    /// `neighbours`, `conditional`: `[n·k]` row-major (p(j|i) for j = `neighbours[i·k + m]`).
    fn symmetric(n: usize, k: usize, neighbours: &[i64], conditional: &[f64]) -> Self {
        let mut count = vec![k; n];
        for &j in neighbours {
            count[j as usize] += 1;
        }
        let mut start = vec![0usize; n + 1];
        for i in 0..n {
            start[i + 1] = start[i] + count[i];
        }
        let mut fill = start[..n].to_vec();
        let mut entries = vec![(0u32, 0f64); start[n]];
        for i in 0..n {
            for m in i * k..(i + 1) * k {
                let j = neighbours[m] as usize;
                entries[fill[i]] = (j as u32, conditional[m]);
                fill[i] += 1;
                entries[fill[j]] = (i as u32, conditional[m]);
                fill[j] += 1;
            }
        }
        let (mut columns, mut values) = (Vec::with_capacity(start[n]), Vec::with_capacity(start[n]));
        let mut merged_start = vec![0usize; n + 1];
        for i in 0..n {
            let row = &mut entries[start[i]..start[i + 1]];
            row.sort_unstable_by_key(|e| e.0);
            for &(j, p) in row.iter() {
                if columns.len() > merged_start[i] && columns.last() == Some(&j) {
                    if let Some(v) = values.last_mut() {
                        *v += p;
                    }
                } else {
                    columns.push(j);
                    values.push(p);
                }
            }
            merged_start[i + 1] = columns.len();
        }
        let total: f64 = values.iter().sum();
        let scale = 1.0 / total.max(f64::EPSILON);
        Self { start: merged_start, columns, values: values.iter().map(|&p| (p * scale) as f32).collect() }
    }
}

const NONE: u32 = u32::MAX;
/// Points closer than this on every axis share a leaf (scikit-learn's quadtree `EPSILON`).
const DUPLICATE: f64 = 1e-6;
const MAX_DEPTH: usize = 64;

struct Cell {
    center: [f64; 2],
    half: [f64; 2],
    /// Σ of the positions of the points below, and how many.
    sum: [f64; 2],
    size: u32,
    children: [u32; 4],
    leaf: bool,
}

impl Cell {
    fn new(center: [f64; 2], half: [f64; 2]) -> Self {
        Self { center, half, sum: [0.0; 2], size: 0, children: [NONE; 4], leaf: true }
    }

    fn quadrant(&self, p: [f64; 2]) -> usize {
        2 * usize::from(p[0] >= self.center[0]) + usize::from(p[1] >= self.center[1])
    }
}

/// scikit-learn's quadtree: root bounds from the data, slightly widened; each cell split at its centre; points
/// closer than [`DUPLICATE`] on each axis kept together in one leaf.
struct QuadTree {
    cells: Vec<Cell>,
    /// What the traversal reads, packed per cell once the tree is built.
    summaries: Vec<Summary>,
}

struct Summary {
    centre_of_mass: [f64; 2],
    /// `(2 · widest half-side)²`.
    squared_width: f64,
    size: f64,
    /// `None` on leaves.
    children: [u32; 4],
}

impl QuadTree {
    /// # Shapes
    /// `y [n·2]` row-major.
    fn build(y: &[f32]) -> Self {
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        for p in y.chunks_exact(2) {
            for ax in 0..2 {
                lo[ax] = lo[ax].min(p[ax] as f64);
                hi[ax] = hi[ax].max(p[ax] as f64);
            }
        }
        let hi = hi.map(|m| (m * (1.0 + 1e-3 * m.signum())).max(m + 1e-3));
        let root = Cell::new([0, 1].map(|ax| (lo[ax] + hi[ax]) / 2.0), [0, 1].map(|ax| (hi[ax] - lo[ax]) / 2.0));
        let mut cells = Vec::with_capacity(2 * y.len());
        cells.push(root);
        let mut tree = Self { cells, summaries: Vec::new() };
        for p in y.chunks_exact(2) {
            tree.insert([p[0] as f64, p[1] as f64]);
        }
        tree.summaries = tree
            .cells
            .iter()
            .map(|c| Summary {
                centre_of_mass: c.sum.map(|s| s / c.size.max(1) as f64),
                squared_width: (2.0 * c.half[0].max(c.half[1])).powi(2),
                size: c.size as f64,
                children: if c.leaf { [NONE; 4] } else { c.children },
            })
            .collect();
        tree
    }

    fn add_child(&mut self, parent: usize, quadrant: usize, sum: [f64; 2], size: u32) -> usize {
        let c = &self.cells[parent];
        let half = c.half.map(|h| h / 2.0);
        let sign = [(quadrant >> 1) & 1, quadrant & 1].map(|b| if b == 1 { 1.0 } else { -1.0 });
        let center = [c.center[0] + sign[0] * half[0], c.center[1] + sign[1] * half[1]];
        let mut child = Cell::new(center, half);
        child.sum = sum;
        child.size = size;
        let id = self.cells.len();
        self.cells.push(child);
        self.cells[parent].children[quadrant] = id as u32;
        id
    }

    fn insert(&mut self, p: [f64; 2]) {
        let (mut id, mut depth) = (0, 0);
        loop {
            let cell = &mut self.cells[id];
            if cell.size == 0 {
                (cell.sum, cell.size) = (p, 1);
                return;
            }
            if cell.leaf {
                let com = cell.sum.map(|s| s / cell.size as f64);
                if depth >= MAX_DEPTH || (0..2).all(|ax| (p[ax] - com[ax]).abs() <= DUPLICATE) {
                    cell.sum = [cell.sum[0] + p[0], cell.sum[1] + p[1]];
                    cell.size += 1;
                    return;
                }
                // Split: what the leaf held moves down to a child; the cell then takes `p` as an inner cell.
                cell.leaf = false;
                let (sum, size, quadrant) = (cell.sum, cell.size, cell.quadrant(com));
                self.add_child(id, quadrant, sum, size);
                continue;
            }
            cell.sum = [cell.sum[0] + p[0], cell.sum[1] + p[1]];
            cell.size += 1;
            let quadrant = cell.quadrant(p);
            match cell.children[quadrant] {
                NONE => {
                    self.add_child(id, quadrant, p, 1);
                    return;
                }
                child => (id, depth) = (child as usize, depth + 1),
            }
        }
    }

    /// Σ size·w, Σ size·w²·(p − com)₀, Σ size·w²·(p − com)₁ over the cells that summarise the tree as seen from
    /// `p`, w = (1 + ‖p − com‖²)⁻¹, visited depth first in quadrant order.
    fn repulsion(&self, p: [f64; 2], squared_angle: f64, stack: &mut Vec<u32>) -> [f64; 3] {
        let mut acc = [0.0; 3];
        stack.clear();
        stack.push(0);
        while let Some(id) = stack.pop() {
            let cell = &self.summaries[id as usize];
            let d = [p[0] - cell.centre_of_mass[0], p[1] - cell.centre_of_mass[1]];
            let d2 = d[0] * d[0] + d[1] * d[1];
            let leaf = cell.children == [NONE; 4];
            if leaf || cell.squared_width < squared_angle * d2 {
                let w = 1.0 / (1.0 + d2);
                acc[0] += cell.size * w;
                acc[1] += cell.size * w * w * d[0];
                acc[2] += cell.size * w * w * d[1];
            } else {
                stack.extend(cell.children.iter().rev().filter(|&&c| c != NONE));
            }
        }
        acc
    }
}

/// The Barnes-Hut gradient of KL(P‖Q): 4 (Σⱼ exaggeration·pᵢⱼ wᵢⱼ (yᵢ − yⱼ) over the sparse edges − Σ_cells
/// size·w²(yᵢ − com) / Z), Z = Σᵢ Σ_cells size·w less the n self-pairs (each point meets itself at distance 0 in
/// its own leaf). Points are split over threads; each point's sums run in a fixed order, so the result does not
/// depend on the thread count.
/// # Shapes
/// `y [n·2]` row-major → `[n·2]`.
fn gradient(p: &Affinities, y: &[f32], exaggeration: f32, angle: f64, threads: usize) -> Result<Vec<f32>> {
    let n = y.len() / 2;
    let tree = QuadTree::build(y);
    let per = n.div_ceil(threads.max(1)).max(1);
    let (tree, squared_angle) = (&tree, angle * angle);
    let rows = |range: std::ops::Range<usize>| -> Vec<[f64; 5]> {
        let mut stack = Vec::with_capacity(256);
        range
            .map(|i| {
                let yi = [y[2 * i] as f64, y[2 * i + 1] as f64];
                let [z, r0, r1] = tree.repulsion(yi, squared_angle, &mut stack);
                let (mut a0, mut a1) = (0.0, 0.0);
                for e in p.start[i]..p.start[i + 1] {
                    let j = p.columns[e] as usize;
                    let d = [yi[0] - y[2 * j] as f64, yi[1] - y[2 * j + 1] as f64];
                    let pw = exaggeration as f64 * p.values[e] as f64 / (1.0 + d[0] * d[0] + d[1] * d[1]);
                    a0 += pw * d[0];
                    a1 += pw * d[1];
                }
                [z - 1.0, a0, a1, r0, r1]
            })
            .collect()
    };
    let sums: Vec<[f64; 5]> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..n).step_by(per).map(|start| scope.spawn(move || rows(start..(start + per).min(n)))).collect();
        handles.into_iter().map(|h| h.join()).collect::<std::result::Result<Vec<_>, _>>()
    })
    .map_err(|_| Error::invalid("t-SNE", "a gradient thread failed"))?
    .concat();
    let z: f64 = sums.iter().map(|s| s[0]).sum();
    let inv_z = 1.0 / z.max(f64::MIN_POSITIVE);
    Ok(sums.iter().flat_map(|s| [(4.0 * (s[1] - inv_z * s[3])) as f32, (4.0 * (s[2] - inv_z * s[4])) as f32]).collect())
}

/// For tests: the exact and the Barnes-Hut gradients of KL(P‖Q) at `y` for a dense P (its non-zero off-diagonal
/// entries become the sparse edges).
/// # Shapes
/// `p [n, n]`, `y [n, 2]` → `([n, 2], [n, 2])` float32.
#[doc(hidden)]
pub fn exact_and_barnes_hut_gradients(
    p: &Tensor,
    y: &Tensor,
    exaggeration: f64,
    angle: f64,
) -> Result<(Tensor, Tensor)> {
    let n = y.size().first().copied().unwrap_or(0);
    if y.dim() != 2 || y.size()[1] != 2 || p.size() != [n, n] || n < 2 {
        return Err(Error::Shape {
            context: "t-SNE gradient".into(),
            why: format!("expected P [n, n] and Y [n ≥ 2, 2], got {:?} and {:?}", p.size(), y.size()),
        });
    }
    let n = n as usize;
    let dense = Vec::<f32>::try_from(p.f_to_kind(Kind::Float)?.f_flatten(0, -1)?)?;
    let y = Vec::<f32>::try_from(y.f_to_kind(Kind::Float)?.f_flatten(0, -1)?)?;
    let mut sparse = Affinities { start: vec![0], columns: Vec::new(), values: Vec::new() };
    for i in 0..n {
        for j in (0..n).filter(|&j| j != i && dense[i * n + j] != 0.0) {
            sparse.columns.push(j as u32);
            sparse.values.push(dense[i * n + j]);
        }
        sparse.start.push(sparse.columns.len());
    }
    let threads = (tch::get_num_threads().max(1) as usize).min(n);
    let shape = [n as i64, 2];
    let exact = super::tsne::gradient(&dense, &y, exaggeration as f32, threads)?;
    let barnes_hut = gradient(&sparse, &y, exaggeration as f32, angle, threads)?;
    Ok((Tensor::from_slice(&exact).f_reshape(shape)?, Tensor::from_slice(&barnes_hut).f_reshape(shape)?))
}
