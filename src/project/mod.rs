//! 2-D maps of embeddings: PCA and t-SNE (scikit-learn's semantics, exact or Barnes-Hut), UMAP (umap-learn's), and
//! how well a map keeps neighbourhoods (trustworthiness, kNN overlap).
//!
//! ```no_run
//! use sdscope::project::{project, trustworthiness, Method, ProjectOptions};
//! # let embeds = tch::Tensor::zeros([100, 512], (tch::Kind::Float, tch::Device::Cpu));
//! let xy = project(&embeds, &ProjectOptions { method: Method::Tsne, ..Default::default() })?; // [n, 2]
//! println!("trustworthiness {:.3}", trustworthiness(&embeds, &xy, 15)?);
//! # Ok::<(), sdscope::Error>(())
//! ```

mod knn;
mod pca;
mod plot;
mod quality;
mod tsne;
mod tsne_bh;
mod umap;

pub use knn::{nearest_neighbours, nearest_neighbours_in_blocks};
pub use pca::{pca, Pca};
pub use plot::scatter_plot;
pub use quality::{knn_overlap, neighbourhood_quality, trustworthiness};
pub use tsne::{tsne, TsneMethod, TsneOptions};
pub use tsne_bh::{exact_and_barnes_hut_gradients, tsne_barnes_hut};
pub use umap::{find_ab_params, umap, UmapOptions};

use crate::error::{Error, Result};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Pca,
    Tsne,
    Umap,
}

impl Method {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "pca" => Ok(Self::Pca),
            "tsne" | "t-sne" => Ok(Self::Tsne),
            "umap" => Ok(Self::Umap),
            _ => Err(Error::invalid(format!("--method {s}"), "known: tsne, umap, pca")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Euclidean,
    /// `1 − cos(a, b)`.
    Cosine,
}

impl Metric {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "euclidean" => Ok(Self::Euclidean),
            "cosine" => Ok(Self::Cosine),
            _ => Err(Error::invalid(format!("--metric {s}"), "known: euclidean, cosine")),
        }
    }

    /// The rows as the metric sees them: unit rows for cosine (whose squared Euclidean distance is 2(1 − cos)).
    pub fn prepare(self, x: &Tensor) -> Result<Tensor> {
        let x = x.f_to_kind(Kind::Double)?;
        Ok(match self {
            Metric::Euclidean => x,
            Metric::Cosine => {
                let norms = x.f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?.f_clamp_min(1e-12)?;
                x.f_div(&norms)?
            }
        })
    }
}

#[derive(Debug, Clone)]
pub struct ProjectOptions {
    pub method: Method,
    pub metric: Metric,
    pub tsne: TsneOptions,
    pub umap: UmapOptions,
}

impl Default for ProjectOptions {
    fn default() -> Self {
        Self {
            method: Method::Tsne,
            metric: Metric::Euclidean,
            tsne: TsneOptions::default(),
            umap: UmapOptions::default(),
        }
    }
}

/// Project the rows of `x` to 2-D.
/// # Shapes
/// `x [n, d]` → `[n, 2]` float32.
pub fn project(x: &Tensor, options: &ProjectOptions) -> Result<Tensor> {
    if x.dim() != 2 {
        return Err(Error::Shape {
            context: "projection input".into(),
            why: format!("expected [n, d], got {:?}", x.size()),
        });
    }
    if !bool::try_from(x.f_isfinite()?.f_all()?)? {
        return Err(Error::invalid("projection input", "holds NaN or infinite values"));
    }
    let prepared = options.metric.prepare(x)?;
    match options.method {
        Method::Pca => pca(&prepared, 2),
        Method::Tsne => tsne(&prepared, &options.tsne),
        Method::Umap => umap(&prepared, &options.umap),
    }
}

/// Standard normal draws from a seeded ChaCha stream (Box–Muller), independent of libtorch's generator.
pub(crate) fn seeded_normal(shape: &[i64], seed: u64) -> Result<Tensor> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Ok(Tensor::from_slice(&values).f_reshape(shape)?)
}
