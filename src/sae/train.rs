//! Training a TopK / BatchTopK SAE as the SDXL-Turbo SAE work does (OpenAI's recipe): loss = MSE over the data's
//! variance + AuxK on dead latents (weight 1/32), decoder rows kept at unit norm with the parallel gradient
//! component removed before each step, Adam.
//!
//! The gradients are written out by hand rather than taken by autograd: the encoder's gradient is non-zero only
//! on the active latents (k per row, plus the AuxK latents), so it is a sparse × dense product instead of the
//! dense `[B, n] × [B, d]` one autograd forms, and the decoder reads only the active rows. The result equals
//! autograd's (checked against PyTorch in `tests/sae.rs`).

use super::metrics::{FiringStats, TrainLog, DEAD_WINDOWS};
use super::{unit_rows, Activation, Sae};
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// Training options; every default is the SDXL-Turbo SAE work's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainOptions {
    pub latents: i64,
    pub k: i64,
    pub activation: Activation,
    /// Dead latents that reconstruct the residual in the AuxK term.
    pub auxk: i64,
    pub auxk_coef: f64,
    /// Steps without firing (> 1e-3) after which a latent counts as dead; `None`: 10 M tokens / batch.
    pub dead_steps_threshold: Option<i64>,
    pub batch: usize,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub schedule: LrSchedule,
    /// Stop after this many steps (the data is repeated if needed); `None`: one pass over the data.
    pub steps: Option<usize>,
    /// Batches whose rows estimate the geometric median (`b_pre`) and the variance (the MSE's scale).
    pub init_batches: usize,
    pub seed: u64,
    /// Log (and print, with `progress`) every this many steps.
    pub log_every: usize,
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            latents: 5120,
            k: 10,
            activation: Activation::TopK,
            auxk: 256,
            auxk_coef: 1.0 / 32.0,
            dead_steps_threshold: None,
            batch: 4096,
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 6.25e-10,
            schedule: LrSchedule::default(),
            steps: None,
            init_batches: 4,
            seed: 0,
            log_every: 50,
            progress: true,
        }
    }
}

impl TrainOptions {
    pub fn dead_steps(&self) -> i64 {
        self.dead_steps_threshold.unwrap_or_else(|| (10_000_000 / self.batch.max(1) as i64).max(1))
    }

    pub(crate) fn check(&self, d_in: i64) -> Result<()> {
        let bad = |why: String| Err(Error::invalid("SAE training options", why));
        if self.k < 1 || self.k > self.latents {
            return bad(format!("k = {} must be in 1..={} (the number of latents)", self.k, self.latents));
        }
        if self.batch == 0 || self.lr <= 0.0 || !self.lr.is_finite() || self.eps <= 0.0 {
            return bad(format!("batch {} and lr {} must be positive, eps {} too", self.batch, self.lr, self.eps));
        }
        if self.auxk < 0 || self.auxk_coef < 0.0 {
            return bad(format!("auxk {} and its coefficient {} must be ≥ 0", self.auxk, self.auxk_coef));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad(format!("Adam betas ({}, {}) must be in [0, 1)", self.beta1, self.beta2));
        }
        if d_in < 1 {
            return bad(format!("input width {d_in}"));
        }
        Ok(())
    }
}

/// Learning-rate warm-up and decay (linear), which later SAE work found better than a constant rate.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LrSchedule {
    /// Steps of linear warm-up from 0.
    pub warmup_steps: usize,
    /// Fraction of the run (at its end) over which the rate decays linearly to 0; needs a known step count.
    pub decay_fraction: f64,
}

impl LrSchedule {
    pub fn factor(&self, step: usize, total: Option<usize>) -> f64 {
        let mut f = 1.0;
        if self.warmup_steps > 0 {
            f *= ((step + 1) as f64 / self.warmup_steps as f64).min(1.0);
        }
        if let Some(total) = total.filter(|_| self.decay_fraction > 0.0) {
            let start = total as f64 * (1.0 - self.decay_fraction.min(1.0));
            if step as f64 >= start {
                f *= ((total as f64 - step as f64) / (total as f64 - start).max(1.0)).clamp(0.0, 1.0);
            }
        }
        f
    }
}

/// Adam as PyTorch's single-tensor implementation computes it (same operations, same order).
#[derive(Debug)]
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub step: i64,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl Adam {
    pub fn new(params: &[&Tensor], beta1: f64, beta2: f64, eps: f64) -> Self {
        Self {
            beta1,
            beta2,
            eps,
            step: 0,
            m: params.iter().map(|p| p.zeros_like()).collect(),
            v: params.iter().map(|p| p.zeros_like()).collect(),
        }
    }

    /// One step: `params[i] -= lr · m̂ / (√v̂ + eps)`.
    pub fn update(&mut self, params: &mut [&mut Tensor], grads: &[Tensor], lr: f64) -> Result<()> {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - self.beta2.powi(self.step as i32)).sqrt();
        let step_size = lr / bc1;
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let _ = self.m[i].f_lerp_(g, 1.0 - self.beta1)?;
            let _ = self.v[i].f_mul_scalar_(self.beta2)?;
            let _ = self.v[i].f_addcmul_(&g.f_mul_scalar(1.0 - self.beta2)?, g)?;
            let denom = self.v[i].f_sqrt()?.f_div_scalar(bc2_sqrt)?.f_add_scalar(self.eps)?;
            let _ = p.f_sub_(&self.m[i].f_div(&denom)?.f_mul_scalar(step_size)?)?;
        }
        Ok(())
    }
}

/// The state a training run carries between steps.
#[derive(Debug)]
pub struct TrainState {
    /// Per latent: steps since it last fired (> 1e-3), counting the current one (OpenAI's `stats_last_nonzero`).
    pub last_nonzero: Tensor,
    pub firing: FiringStats,
    pub steps: usize,
    /// `1 / variance` of the data.
    pub mse_scale: f64,
    pub logs: Vec<TrainLog>,
    /// BatchTopK: sum of the smallest kept activation over steps (its mean becomes the inference threshold).
    threshold_sum: f64,
}

/// A training run on one SAE.
pub struct Trainer {
    pub sae: Sae,
    pub options: TrainOptions,
    pub state: TrainState,
    adam: Adam,
    /// Total steps when known (for the learning-rate decay).
    pub total_steps: Option<usize>,
}

/// The losses of one step.
#[derive(Debug, Clone, Copy)]
pub struct StepLosses {
    pub loss: f64,
    pub main: f64,
    pub aux: f64,
}

/// A code as flat entries sorted by row: latent `cols[e]` with value `vals[e]` in row `rows[e]`; `offsets[b]` is
/// where row b's entries start.
struct Entries {
    rows: Tensor,
    cols: Tensor,
    /// Pre-ReLU values.
    pre: Tensor,
    offsets: Tensor,
}

impl Entries {
    fn from_topk(values: Tensor, indices: Tensor) -> Result<Self> {
        let (b, k) = (indices.size()[0], indices.size()[1]);
        let device = indices.device();
        Ok(Self {
            rows: Tensor::f_arange(b, (Kind::Int64, device))?.f_repeat_interleave_self_int(k, None, None)?,
            cols: indices.f_reshape([-1])?,
            pre: values.f_reshape([-1])?,
            offsets: Tensor::f_arange_start_step(0, b * k, k, (Kind::Int64, device))?,
        })
    }

    /// Entries of a `[B, n]` matrix where `keep` holds, in row-major order.
    fn from_mask(values: &Tensor, keep: &Tensor) -> Result<Self> {
        let nz = keep.f_nonzero()?;
        let rows = nz.f_select(1, 0)?.f_contiguous()?;
        let cols = nz.f_select(1, 1)?.f_contiguous()?;
        let pre = values.f_index(&[Some(&rows), Some(&cols)])?;
        let counts = keep.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Int64)?;
        let offsets = counts.f_cumsum(0, Kind::Int64)?.f_sub(&counts)?;
        Ok(Self { rows, cols, pre, offsets })
    }

    fn len(&self) -> i64 {
        self.cols.size()[0]
    }

    fn decode(&self, table: &Tensor, values: &Tensor, batch: i64) -> Result<Tensor> {
        if self.len() == 0 {
            return Ok(Tensor::zeros([batch, table.size()[1]], (Kind::Float, table.device())));
        }
        let (out, _, _, _) =
            Tensor::f_embedding_bag(table, &self.cols, &self.offsets, false, 0, false, Some(values), false)?;
        Ok(out)
    }

    /// `table[cols[e]] · dense[rows[e]]` for every entry (in chunks, to bound the gathered rows in memory).
    fn row_dots(&self, table: &Tensor, dense: &Tensor) -> Result<Tensor> {
        let n = self.len();
        let chunk = 16_384;
        let mut parts = Vec::new();
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let cols = self.cols.f_narrow(0, start, len)?;
            let rows = self.rows.f_narrow(0, start, len)?;
            let a = table.f_index_select(0, &cols)?;
            let b = dense.f_index_select(0, &rows)?;
            parts.push(a.f_mul(&b)?.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?);
            start += len;
        }
        if parts.is_empty() {
            return Ok(Tensor::zeros([0], (Kind::Float, table.device())));
        }
        Ok(Tensor::f_cat(&parts, 0)?)
    }
}

/// `Sᵀ · dense` where S is the sparse `[B, n]` matrix of `(rows, cols, weights)`: a `[n, d]` result.
fn sparse_t_mm(rows: &Tensor, cols: &Tensor, weights: &Tensor, n: i64, dense: &Tensor) -> Result<Tensor> {
    let b = dense.size()[0];
    if rows.size()[0] == 0 {
        return Ok(Tensor::zeros([n, dense.size()[1]], (Kind::Float, dense.device())));
    }
    let indices = Tensor::f_stack(&[cols, rows], 0)?;
    let s = Tensor::f_sparse_coo_tensor_indices_size(&indices, weights, [n, b], (Kind::Float, dense.device()), false)?;
    Ok(s.f_mm(dense)?)
}

impl Trainer {
    /// Start training `sae` with `mse_scale` = 1 / variance of the data.
    pub fn new(sae: Sae, options: TrainOptions, mse_scale: f64) -> Result<Self> {
        options.check(sae.d_in())?;
        let n = sae.num_latents();
        let device = sae.device();
        let adam =
            Adam::new(&[&sae.w_enc, &sae.b_enc, &sae.w_dec, &sae.b_pre], options.beta1, options.beta2, options.eps);
        Ok(Self {
            state: TrainState {
                last_nonzero: Tensor::zeros([n], (Kind::Int64, device)),
                firing: FiringStats::new(n, device),
                steps: 0,
                mse_scale,
                logs: Vec::new(),
                threshold_sum: 0.0,
            },
            sae,
            options,
            adam,
            total_steps: None,
        })
    }

    /// One optimisation step on a batch `[B, d]`; returns its losses.
    pub fn step(&mut self, x: &Tensor) -> Result<StepLosses> {
        let x = self.sae.check_rows(x, "SAE training batch")?;
        let (b, d) = (x.size()[0], x.size()[1]);
        let n = self.sae.num_latents();
        if b == 0 {
            return Err(Error::invalid("SAE training batch", "is empty"));
        }
        let o = &self.options;
        let sae = &self.sae;

        let xc = x.f_sub(&sae.b_pre)?;
        let pre = sae.b_enc.f_addmm(&xc, &sae.w_enc.f_tr()?)?;
        let main = match o.activation {
            Activation::TopK => {
                let (v, i) = pre.f_topk(o.k, -1, true, true)?;
                Entries::from_topk(v, i)?
            }
            Activation::BatchTopK => {
                let flat = pre.f_reshape([-1])?;
                let (v, _) = flat.f_topk((o.k * b).min(b * n), -1, true, true)?;
                let min_kept = v.f_min()?.f_double_value(&[])?;
                let keep = pre.f_ge(min_kept)?.f_logical_and(&pre.f_gt(0.0)?)?;
                self.state.threshold_sum += min_kept.max(0.0);
                Entries::from_mask(&pre, &keep)?
            }
        };
        let z = main.pre.f_relu()?;

        // Bookkeeping before AuxK, as in the reference: a latent fired if one of its entries exceeds 1e-3.
        let fired = Tensor::zeros([n], (Kind::Int64, x.device())).f_index_add(
            0,
            &main.cols,
            &main.pre.f_gt(1e-3)?.f_to_kind(Kind::Int64)?,
        )?;
        let fired = fired.f_clamp_max(1)?;
        self.state.last_nonzero = self.state.last_nonzero.f_mul(&fired.f_neg()?.f_add_scalar(1)?)?.f_add_scalar(1)?;
        self.state.firing.record(b, &main.cols, &z)?;

        // AuxK: the largest positive pre-activations among dead latents (alive ones are masked to 0, so only
        // positive dead entries carry a value or a gradient).
        let dead = self.state.last_nonzero.f_gt(o.dead_steps())?;
        let n_dead = dead.f_sum(Kind::Int64)?.int64_value(&[]);
        let aux = if n_dead > 0 && o.auxk > 0 {
            let dead_cols = dead.f_nonzero()?.f_reshape([-1])?;
            let dead_pre = pre.f_index_select(1, &dead_cols)?;
            let (av, ai) = dead_pre.f_topk(o.auxk.min(n_dead), -1, true, true)?;
            let keep = av.f_gt(0.0)?;
            let picked = Entries::from_mask(&av, &keep)?;
            let cols = dead_cols.f_index_select(0, &ai.f_index(&[Some(&picked.rows), Some(&picked.cols)])?)?;
            Some(Entries { cols, ..picked })
        } else {
            None
        };

        // Forward.
        let recon_nb = main.decode(&sae.w_dec, &z, b)?;
        let recon = recon_nb.f_add(&sae.b_pre)?;
        let err = recon.f_sub(&x)?; // x̂ − x
        let elements = (b * d) as f64;
        let mse = err.f_square()?.f_mean(Kind::Double)?.f_double_value(&[])?;
        let main_loss = self.state.mse_scale * mse;
        // Residual target t = x − x̂ + b_pre; the AuxK reconstruction r = W_dec z_aux + b_pre; r − t = W z_aux + err.
        let residual = err.f_neg()?;
        let denom = residual
            .f_sub(&residual.f_mean_dim([0i64].as_slice(), true, Kind::Float)?)?
            .f_square()?
            .f_mean(Kind::Double)?
            .f_double_value(&[])?;
        let az = aux.as_ref().map(|a| a.pre.f_relu()).transpose()?;
        let aux_recon = match (&aux, &az) {
            (Some(a), Some(az)) => a.decode(&sae.w_dec, az, b)?,
            _ => Tensor::zeros([b, d], (Kind::Float, x.device())),
        };
        let aux_diff = aux_recon.f_add(&err)?;
        let aux_valid = denom.is_finite() && denom > 0.0;
        let aux_loss =
            if aux_valid { aux_diff.f_square()?.f_mean(Kind::Double)?.f_double_value(&[])? / denom } else { 0.0 };
        let loss = main_loss + o.auxk_coef * aux_loss;

        // Backward by hand.
        let g_recon = err.f_mul_scalar(2.0 * self.state.mse_scale / elements)?;
        let g_aux = if aux_valid {
            aux_diff.f_mul_scalar(2.0 * o.auxk_coef / (elements * denom))?
        } else {
            aux_diff.f_zeros_like()?
        };
        let g_z = main.row_dots(&sae.w_dec, &g_recon)?;
        let g_main_pre = g_z.f_mul(&z.f_gt(0.0)?.f_to_kind(Kind::Float)?)?;
        let mut grad_w_dec = sparse_t_mm(&main.rows, &main.cols, &z, n, &g_recon)?;
        let (mut enc_rows, mut enc_cols, mut enc_g) =
            (main.rows.shallow_clone(), main.cols.shallow_clone(), g_main_pre);
        if let (Some(a), Some(az)) = (&aux, &az) {
            if a.len() > 0 {
                let g_az = a.row_dots(&sae.w_dec, &g_aux)?;
                let g_aux_pre = g_az.f_mul(&az.f_gt(0.0)?.f_to_kind(Kind::Float)?)?;
                grad_w_dec = grad_w_dec.f_add(&sparse_t_mm(&a.rows, &a.cols, az, n, &g_aux)?)?;
                enc_rows = Tensor::f_cat(&[&enc_rows, &a.rows], 0)?;
                enc_cols = Tensor::f_cat(&[&enc_cols, &a.cols], 0)?;
                enc_g = Tensor::f_cat(&[&enc_g, &g_aux_pre], 0)?;
            }
        }
        let grad_b_enc = Tensor::zeros([n], (Kind::Float, x.device())).f_index_add(0, &enc_cols, &enc_g)?;
        let grad_w_enc = sparse_t_mm(&enc_rows, &enc_cols, &enc_g, n, &xc)?;
        let sum0 = |t: &Tensor| t.f_sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
        let grad_b_pre = sum0(&g_recon)?
            .f_add(&sum0(&g_aux)?)?
            .f_sub(&grad_b_enc.f_unsqueeze(0)?.f_matmul(&sae.w_enc)?.f_squeeze_dim(0)?)?;
        // Keep W_dec's rows on the unit sphere: drop the gradient's component along each row.
        let parallel = grad_w_dec.f_mul(&sae.w_dec)?.f_sum_dim_intlist([-1i64].as_slice(), true, Kind::Float)?;
        let grad_w_dec = grad_w_dec.f_sub(&parallel.f_mul(&sae.w_dec)?)?;

        let lr = o.lr * o.schedule.factor(self.state.steps, self.total_steps.or(o.steps));
        let sae = &mut self.sae;
        self.adam.update(
            &mut [&mut sae.w_enc, &mut sae.b_enc, &mut sae.w_dec, &mut sae.b_pre],
            &[grad_w_enc, grad_b_enc, grad_w_dec, grad_b_pre],
            lr,
        )?;
        sae.w_dec = unit_rows(&sae.w_dec)?;
        self.state.steps += 1;
        if o.activation == Activation::BatchTopK {
            sae.threshold = Some(self.state.threshold_sum / self.state.steps as f64);
        }

        if self.state.steps == 1 || self.state.steps.is_multiple_of(o.log_every.max(1)) {
            let log = self.log_entry(&x, &recon, &z, b, lr, loss, main_loss, aux_loss)?;
            if o.progress {
                print_progress(&log);
            }
            self.state.logs.push(log);
        }
        Ok(StepLosses { loss, main: main_loss, aux: aux_loss })
    }

    #[allow(clippy::too_many_arguments)]
    fn log_entry(
        &self,
        x: &Tensor,
        recon: &Tensor,
        z: &Tensor,
        b: i64,
        lr: f64,
        loss: f64,
        nmse: f64,
        aux_loss: f64,
    ) -> Result<TrainLog> {
        let xd = x.f_to_kind(Kind::Double)?;
        let centred = xd.f_sub(&xd.f_mean_dim([0i64].as_slice(), true, Kind::Double)?)?;
        let total = centred.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
        let sq_err = xd.f_sub(&recon.f_to_kind(Kind::Double)?)?.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
        let ratio = recon
            .f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?
            .f_div(&x.f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?.f_clamp_min(1e-12)?)?
            .f_mean(Kind::Double)?
            .f_double_value(&[])?;
        let mut dead = [None; 3];
        for (slot, window) in dead.iter_mut().zip(DEAD_WINDOWS) {
            *slot = self.state.firing.dead_fraction(window)?;
        }
        Ok(TrainLog {
            step: self.state.steps,
            tokens: self.state.firing.tokens,
            lr,
            loss,
            nmse,
            aux_loss,
            explained_variance: if total > 0.0 { 1.0 - sq_err / total } else { f64::NAN },
            l0: z.f_gt(0.0)?.f_sum(Kind::Double)?.f_double_value(&[])? / b as f64,
            l2_ratio: ratio,
            dead_fraction: dead,
        })
    }

    /// The trained SAE with its firing statistics (`mean`, `std` where active) filled in.
    pub fn finish(mut self) -> Result<(Sae, TrainState)> {
        let (mean, std) = self.state.firing.mean_std()?;
        self.sae.mean = Some(mean);
        self.sae.std = Some(std);
        Ok((self.sae, self.state))
    }
}

fn print_progress(log: &TrainLog) {
    let dead = log.dead_fraction.iter().rev().flatten().next().map(|d| format!("{:.1}%", d * 100.0));
    eprintln!(
        "[sae] step {:>6}  tokens {:>9}  loss {:.4}  nmse {:.4}  ev {:.4}  l0 {:.1}  aux {:.3}  dead {}  lr {:.2e}",
        log.step,
        log.tokens,
        log.loss,
        log.nmse,
        log.explained_variance,
        log.l0,
        log.aux_loss,
        dead.unwrap_or_else(|| "–".into()),
        log.lr
    );
}
