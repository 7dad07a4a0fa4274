//! Sparse autoencoders (TopK and BatchTopK) on U-Net representations: encode, decode, train, evaluate, find
//! the top items of each feature, and steer generation with a feature.
//!
//! The model is the one of "Unpacking SDXL Turbo" (Surkov et al., 2024), after OpenAI's TopK SAE:
//! `z = ReLU(TopK_k(W_enc (x − b_pre) + b_lat))`, `x̂ = W_dec z + b_pre`, decoding with only the k active rows.
//!
//! ```no_run
//! use sdscope::prelude::*;
//! use sdscope::sae::Sae;
//! let sae = Sae::load("saes/down.2.1")?;
//! let x = Tensor::randn([16, sae.d_in()], (Kind::Float, Device::Cpu));
//! let code = sae.encode(&x)?; // indices / values [16, k], values descending
//! let recon = sae.decode(&code)?; // [16, d]
//! # Ok::<(), sdscope::Error>(())
//! ```

mod checkpoint;
mod collection_training;
mod display;
mod init;
mod metrics;
mod steer;
mod top;
mod train;

pub use checkpoint::{SaeFormat, SaeMeta};
pub use collection_training::{evaluate, train_on_collection, CollectionTraining};
pub use display::{overlay, FeatureCard, FeatureTable};
pub use init::{geometric_median, variance_scale};
pub use metrics::{EvalMetrics, FiringStats, TrainLog};
pub use steer::{mask_from_png, splice_effect, FeatureEdit, SpliceEffect, SteerOptions};
pub use top::{activation_map, item_caption, item_image, TopItems, TopOptions, TopRank};
pub use train::{Adam, LrSchedule, StepLosses, TrainOptions, TrainState, Trainer};

use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// How the pre-activations become a sparse code.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// The k largest pre-activations of each row, through ReLU.
    TopK,
    /// Training: the `k · batch` largest of the whole batch. Inference: pre-activations above the threshold
    /// learnt in training (the mean over steps of the smallest value kept), at most `k` per row.
    BatchTopK,
}

/// A sparse code: for each row, the active latents and their values (descending).
/// # Shapes
/// `indices` int64 `[N, k]`, `values` float32 `[N, k]`.
#[derive(Debug)]
pub struct SparseCode {
    pub indices: Tensor,
    pub values: Tensor,
}

/// A sparse autoencoder.
/// # Shapes
/// `w_enc [n, d]`, `b_enc [n]`, `w_dec [n, d]` (row f is feature f's direction, unit norm after training),
/// `b_pre [d]`; optional `mean`/`std [n]` (a feature's mean and standard deviation where it fires: the scale of
/// steering).
#[derive(Debug)]
pub struct Sae {
    pub w_enc: Tensor,
    pub b_enc: Tensor,
    pub w_dec: Tensor,
    pub b_pre: Tensor,
    pub k: i64,
    pub activation: Activation,
    /// BatchTopK's inference threshold.
    pub threshold: Option<f64>,
    /// Whether `b_pre` is subtracted before encoding (SAELens' `apply_b_dec_to_input`; always for ours).
    pub subtract_pre_bias: bool,
    pub mean: Option<Tensor>,
    pub std: Option<Tensor>,
    pub meta: SaeMeta,
}

impl Sae {
    /// A fresh SAE as training starts: `W_enc` uniform in ±1/√d (seeded), `W_dec` its transpose with unit rows,
    /// `b_lat = 0`, `b_pre = 0` (set it to the geometric median of the data, see [`geometric_median`]).
    pub fn init(d_in: i64, latents: i64, k: i64, seed: u64) -> Result<Self> {
        if d_in < 1 || latents < 1 || k < 1 || k > latents {
            return Err(Error::invalid(
                "sparse autoencoder shape",
                format!("d_in {d_in}, latents {latents}, k {k}: need d_in ≥ 1 and 1 ≤ k ≤ latents"),
            ));
        }
        let bound = 1.0 / (d_in as f64).sqrt();
        let w_enc = seeded_uniform(&[latents, d_in], -bound, bound, seed)?;
        let w_dec = unit_rows(&w_enc)?;
        Ok(Self {
            w_enc,
            b_enc: Tensor::zeros([latents], (Kind::Float, Device::Cpu)),
            w_dec,
            b_pre: Tensor::zeros([d_in], (Kind::Float, Device::Cpu)),
            k,
            activation: Activation::TopK,
            threshold: None,
            subtract_pre_bias: true,
            mean: None,
            std: None,
            meta: SaeMeta::default(),
        })
    }

    /// Input width d.
    pub fn d_in(&self) -> i64 {
        self.w_enc.size()[1]
    }

    /// Number of latents n.
    pub fn num_latents(&self) -> i64 {
        self.w_enc.size()[0]
    }

    pub fn device(&self) -> Device {
        self.w_enc.device()
    }

    /// Move every tensor to a device.
    pub fn to_device(&self, device: Device) -> Result<Self> {
        let mv = |t: &Tensor| t.f_to_device(device);
        Ok(Self {
            w_enc: mv(&self.w_enc)?,
            b_enc: mv(&self.b_enc)?,
            w_dec: mv(&self.w_dec)?,
            b_pre: mv(&self.b_pre)?,
            k: self.k,
            activation: self.activation,
            threshold: self.threshold,
            subtract_pre_bias: self.subtract_pre_bias,
            mean: self.mean.as_ref().map(mv).transpose()?,
            std: self.std.as_ref().map(mv).transpose()?,
            meta: self.meta.clone(),
        })
    }

    /// Check that `x` is `[N, d]` and bring it to float32 on the SAE's device.
    pub(crate) fn check_rows(&self, x: &Tensor, what: &str) -> Result<Tensor> {
        let d = self.d_in();
        if x.dim() != 2 || x.size()[1] != d {
            return Err(Error::Shape {
                context: what.to_string(),
                why: format!("expected rows [N, {d}] (the SAE's input width), got {:?}", x.size()),
            });
        }
        Ok(x.f_to_kind(Kind::Float)?.f_to_device(self.device())?)
    }

    /// Pre-activations `W_enc (x − b_pre) + b_lat`.
    /// # Shapes
    /// `x [N, d]` → `[N, n]`.
    pub fn pre_activations(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.check_rows(x, "SAE input")?;
        let centred = if self.subtract_pre_bias { x.f_sub(&self.b_pre)? } else { x };
        Ok(self.b_enc.f_addmm(&centred, &self.w_enc.f_tr()?)?)
    }

    /// The sparse code of each row (values descending, ReLU applied).
    /// # Shapes
    /// `x [N, d]` → indices/values `[N, k]`.
    pub fn encode(&self, x: &Tensor) -> Result<SparseCode> {
        let pre = self.pre_activations(x)?;
        self.code_from_pre(&pre)
    }

    pub(crate) fn code_from_pre(&self, pre: &Tensor) -> Result<SparseCode> {
        let pre = match (self.activation, self.threshold) {
            (Activation::BatchTopK, Some(threshold)) => pre.f_mul(&pre.f_gt(threshold)?.f_to_kind(Kind::Float)?)?,
            _ => pre.shallow_clone(),
        };
        let (values, indices) = pre.f_topk(self.k, -1, true, true)?;
        Ok(SparseCode { indices, values: values.f_relu()? })
    }

    /// `x̂ = Σ_j values_j · W_dec[indices_j] + b_pre`, reading only the active rows of `W_dec`.
    /// # Shapes
    /// code `[N, k]` → `[N, d]`.
    pub fn decode(&self, code: &SparseCode) -> Result<Tensor> {
        Ok(self.decode_without_bias(code)?.f_add(&self.b_pre)?)
    }

    /// `Σ_j values_j · W_dec[indices_j]`, no bias.
    pub fn decode_without_bias(&self, code: &SparseCode) -> Result<Tensor> {
        sparse_decode(&self.w_dec, &code.indices, &code.values)
    }

    /// Encode then decode.
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        self.decode(&self.encode(x)?)
    }

    /// The dense latent vector of each row (zeros outside the code).
    /// # Shapes
    /// code `[N, k]` → `[N, n]`.
    pub fn dense(&self, code: &SparseCode) -> Result<Tensor> {
        let n = code.indices.size()[0];
        Ok(Tensor::zeros([n, self.num_latents()], (Kind::Float, code.values.device())).f_scatter_add(
            1,
            &code.indices,
            &code.values,
        )?)
    }

    /// One feature's activation in each row (0 where it is not in the code).
    /// # Shapes
    /// `x [N, d]` → `[N]`.
    pub fn feature_activation(&self, x: &Tensor, feature: i64) -> Result<Tensor> {
        self.check_feature(feature)?;
        let code = self.encode(x)?;
        Ok(code.values.f_mul(&code.indices.f_eq(feature)?.f_to_kind(Kind::Float)?)?.f_sum_dim_intlist(
            [1i64].as_slice(),
            false,
            Kind::Float,
        )?)
    }

    pub fn check_feature(&self, feature: i64) -> Result<()> {
        let n = self.num_latents();
        if !(0..n).contains(&feature) {
            return Err(Error::invalid(format!("feature {feature}"), format!("this SAE has features 0..{n}")));
        }
        Ok(())
    }

    /// Feature f's decoder direction.
    /// # Shapes
    /// `[d]`.
    pub fn direction(&self, feature: i64) -> Result<Tensor> {
        self.check_feature(feature)?;
        Ok(self.w_dec.f_get(feature)?)
    }

    /// Feature f's typical activation (its `mean`), the unit of steering strength; 1 when the SAE has none.
    pub fn feature_scale(&self, feature: i64) -> Result<f64> {
        self.check_feature(feature)?;
        Ok(match &self.mean {
            Some(mean) => mean.f_double_value(&[feature])?,
            None => 1.0,
        })
    }
}

/// Rows of a capture as SAE inputs: `[N, d]` as is; `[N, d, h, w]` (or any `[N, d, ...]`) with channels last,
/// rows ordered (item, y, x): row `i·h·w + y·w + x`.
/// # Shapes
/// `[N, d, h, w]` → `[N·h·w, d]`.
pub fn rows_of(x: &Tensor, d: i64) -> Result<Tensor> {
    let s = x.size();
    if s.len() < 2 || s[1] != d {
        return Err(Error::Shape {
            context: "SAE input".into(),
            why: format!("expected [N, {d}] or [N, {d}, h, w] (channels second), got {s:?}"),
        });
    }
    if s.len() == 2 {
        return Ok(x.shallow_clone());
    }
    Ok(x.f_movedim([1i64].as_slice(), [-1i64].as_slice())?.f_reshape([-1, d])?)
}

/// `Σ_j values[:, j] · table[indices[:, j]]` through `embedding_bag` (sum mode with per-sample weights), which
/// never forms the `[N, k, d]` gather.
pub(crate) fn sparse_decode(table: &Tensor, indices: &Tensor, values: &Tensor) -> Result<Tensor> {
    let (rows, k) = (indices.size()[0], indices.size()[1]);
    if rows == 0 || k == 0 {
        return Ok(Tensor::zeros([rows, table.size()[1]], (Kind::Float, table.device())));
    }
    let offsets = Tensor::f_arange_start_step(0, rows * k, k, (Kind::Int64, table.device()))?;
    let flat_values = values.f_reshape([-1])?.f_to_kind(table.kind())?;
    let (out, _, _, _) = Tensor::f_embedding_bag(
        table,
        &indices.f_reshape([-1])?,
        &offsets,
        false,
        0,
        false,
        Some(&flat_values),
        false,
    )?;
    Ok(out)
}

pub(crate) fn unit_rows(w: &Tensor) -> Result<Tensor> {
    let norms = w.f_norm_scalaropt_dim(2, [-1i64].as_slice(), true)?.f_clamp_min(1e-12)?;
    Ok(w.f_div(&norms)?)
}

/// Uniform values from a seeded ChaCha stream (the same on every platform and device).
fn seeded_uniform(shape: &[i64], low: f64, high: f64, seed: u64) -> Result<Tensor> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(low..high) as f32).collect();
    Ok(Tensor::from_slice(&values).f_reshape(shape)?)
}
