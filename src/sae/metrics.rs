//! What training and evaluation measure: reconstruction (normalised MSE, explained variance, L2 ratio),
//! sparsity (L0), dead latents over token windows, and how often each latent fires.

use crate::error::Result;
use tch::{Kind, Tensor};

/// The token windows over which dead latents are counted, as the SDXL-Turbo SAE work logs them.
pub const DEAD_WINDOWS: [u64; 3] = [10_000, 1_000_000, 10_000_000];

/// One logged training step.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainLog {
    pub step: usize,
    pub tokens: u64,
    pub lr: f64,
    pub loss: f64,
    /// `mse_scale · MSE`: the MSE over the variance of the data (estimated before training).
    pub nmse: f64,
    /// The AuxK term before its coefficient.
    pub aux_loss: f64,
    pub explained_variance: f64,
    pub l0: f64,
    pub l2_ratio: f64,
    /// Fraction of latents that have not fired in the last 1e4 / 1e6 / 1e7 tokens (`None` until that many tokens
    /// were seen).
    pub dead_fraction: [Option<f64>; 3],
}

/// Reconstruction and sparsity over a whole evaluation set.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct EvalMetrics {
    pub tokens: u64,
    /// `Σ‖x − x̂‖² / Σ‖x − x̄‖²` (x̄: the mean input of the set).
    pub nmse: f64,
    /// `1 − nmse`.
    pub explained_variance: f64,
    /// Mean number of active latents per token.
    pub l0: f64,
    /// Fraction of latents that never fired on the set.
    pub dead_fraction: f64,
    /// Mean of `‖x̂‖ / ‖x‖`.
    pub l2_ratio: f64,
    /// Mean squared error per element.
    pub mse: f64,
}

/// Accumulates [`EvalMetrics`] batch by batch (sums in float64).
#[derive(Debug, Default)]
pub(crate) struct EvalAccumulator {
    tokens: u64,
    sq_err: f64,
    sum_x: Option<Tensor>,
    sum_sq_x: f64,
    active: f64,
    l2_ratio: f64,
    fired: Option<Tensor>,
    elements: f64,
}

impl EvalAccumulator {
    /// `x`, `recon` `[B, d]`; `indices`/`values` the code `[B, k]`; `n` latents.
    pub fn add(&mut self, x: &Tensor, recon: &Tensor, indices: &Tensor, values: &Tensor, n: i64) -> Result<()> {
        let b = x.size()[0];
        if b == 0 {
            return Ok(());
        }
        let xd = x.f_to_kind(Kind::Double)?;
        let rd = recon.f_to_kind(Kind::Double)?;
        self.tokens += b as u64;
        self.elements += x.numel() as f64;
        self.sq_err += xd.f_sub(&rd)?.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
        let sx = xd.f_sum_dim_intlist([0i64].as_slice(), false, Kind::Double)?;
        self.sum_x = Some(match self.sum_x.take() {
            Some(s) => s.f_add(&sx)?,
            None => sx,
        });
        self.sum_sq_x += xd.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
        let positive = values.f_gt(0.0)?;
        self.active += positive.f_sum(Kind::Double)?.f_double_value(&[])?;
        let ratio = rd
            .f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?
            .f_div(&xd.f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?.f_clamp_min(1e-12)?)?;
        self.l2_ratio += ratio.f_sum(Kind::Double)?.f_double_value(&[])?;
        let hits = Tensor::zeros([n], (Kind::Float, x.device())).f_index_add(
            0,
            &indices.f_reshape([-1])?,
            &positive.f_to_kind(Kind::Float)?.f_reshape([-1])?,
        )?;
        self.fired = Some(match self.fired.take() {
            Some(f) => f.f_add(&hits)?,
            None => hits,
        });
        Ok(())
    }

    pub fn finish(&self) -> Result<EvalMetrics> {
        let tokens = self.tokens as f64;
        if self.tokens == 0 {
            return Ok(EvalMetrics::default());
        }
        let sum_x = self.sum_x.as_ref().map(|s| s.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])).transpose()?;
        let total_var = self.sum_sq_x - sum_x.unwrap_or(0.0) / tokens;
        let nmse = if total_var > 0.0 { self.sq_err / total_var } else { f64::NAN };
        let dead = match &self.fired {
            Some(f) => f.f_eq(0.0)?.f_to_kind(Kind::Double)?.f_mean(Kind::Double)?.f_double_value(&[])?,
            None => 1.0,
        };
        Ok(EvalMetrics {
            tokens: self.tokens,
            nmse,
            explained_variance: 1.0 - nmse,
            l0: self.active / tokens,
            dead_fraction: dead,
            l2_ratio: self.l2_ratio / tokens,
            mse: self.sq_err / self.elements,
        })
    }
}

/// How often and how strongly each latent fired during training.
#[derive(Debug)]
pub struct FiringStats {
    /// Tokens seen.
    pub tokens: u64,
    /// Per latent: tokens on which it was active (value > 0).
    pub count: Tensor,
    /// Per latent: sum and sum of squares of its activation where active (float64).
    pub sum: Tensor,
    pub sum_sq: Tensor,
    /// Per latent: the token count when it last fired (> 1e-3), for dead-latent windows.
    pub last_fired: Tensor,
}

impl FiringStats {
    pub fn new(n: i64, device: tch::Device) -> Self {
        let zeros = |kind| Tensor::zeros([n], (kind, device));
        Self {
            tokens: 0,
            count: zeros(Kind::Double),
            sum: zeros(Kind::Double),
            sum_sq: zeros(Kind::Double),
            last_fired: zeros(Kind::Int64),
        }
    }

    /// Record one batch's code given as flat latent indices and values.
    pub(crate) fn record(&mut self, rows: i64, cols: &Tensor, values: &Tensor) -> Result<()> {
        self.tokens += rows as u64;
        let v = values.f_to_kind(Kind::Double)?;
        let active = v.f_gt(0.0)?.f_to_kind(Kind::Double)?;
        self.count = self.count.f_index_add(0, cols, &active)?;
        self.sum = self.sum.f_index_add(0, cols, &v.f_mul(&active)?)?;
        self.sum_sq = self.sum_sq.f_index_add(0, cols, &v.f_square()?.f_mul(&active)?)?;
        let fired = Tensor::zeros_like(&self.count).f_index_add(0, cols, &v.f_gt(1e-3)?.f_to_kind(Kind::Double)?)?;
        let now = Tensor::full_like(&self.last_fired, self.tokens as i64);
        self.last_fired = now.f_where_self(&fired.f_gt(0.0)?, &self.last_fired)?;
        Ok(())
    }

    /// Fraction of latents silent for more than `window` tokens (`None` until `window` tokens were seen).
    pub fn dead_fraction(&self, window: u64) -> Result<Option<f64>> {
        if self.tokens < window {
            return Ok(None);
        }
        let silent = self.last_fired.f_sub_scalar(self.tokens as i64)?.f_neg()?.f_gt(window as i64)?;
        Ok(Some(silent.f_to_kind(Kind::Double)?.f_mean(Kind::Double)?.f_double_value(&[])?))
    }

    /// Per-latent firing frequency (active tokens / tokens).
    pub fn frequency(&self) -> Result<Tensor> {
        Ok(self.count.f_div_scalar(self.tokens.max(1) as f64)?.f_to_kind(Kind::Float)?)
    }

    /// Per-latent mean and standard deviation of the activation where active (0 for latents that never fired).
    pub fn mean_std(&self) -> Result<(Tensor, Tensor)> {
        let c = self.count.f_clamp_min(1.0)?;
        let mean = self.sum.f_div(&c)?;
        let var = self.sum_sq.f_div(&c)?.f_sub(&mean.f_square()?)?.f_clamp_min(0.0)?;
        Ok((mean.f_to_kind(Kind::Float)?, var.f_sqrt()?.f_to_kind(Kind::Float)?))
    }

    /// log10 firing-frequency histogram: `bins` equal bins over [-8, 0]; latents that never fired are counted
    /// apart (returned second).
    pub fn log10_histogram(&self, bins: usize) -> Result<(Vec<(f64, u64)>, u64)> {
        let freq = Vec::<f64>::try_from(&self.count.f_div_scalar(self.tokens.max(1) as f64)?)?;
        let mut counts = vec![0u64; bins.max(1)];
        let mut never = 0;
        let (lo, hi) = (-8.0, 0.0);
        let width = (hi - lo) / counts.len() as f64;
        for f in freq {
            if f <= 0.0 {
                never += 1;
                continue;
            }
            let i = (((f.log10() - lo) / width).floor().max(0.0) as usize).min(counts.len() - 1);
            counts[i] += 1;
        }
        Ok((counts.into_iter().enumerate().map(|(i, c)| (lo + (i as f64 + 0.5) * width, c)).collect(), never))
    }
}
