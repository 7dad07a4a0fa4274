//! PNDM (`PNDMScheduler`): pseudo linear multi-step (PLMS), optionally preceded by Runge-Kutta (PRK) warm-up
//! steps when `skip_prk_steps` is false. With `skip_prk_steps` (SD1.x) the U-Net runs `steps + 1` times: the
//! second call repeats the first timestep to start the multi-step history.

use super::spacing::{np_arange, np_linspace, Spacing};
use super::{Common, NoiseSource, Prediction, Sampler, SamplerKind, StepOutput};
use crate::config::SchedulerConfig;
use crate::error::{Error, Result};
use std::path::Path;
use tch::Tensor;

const ORDER: usize = 4;

pub struct Pndm {
    common: Common,
    timesteps: Vec<i64>,
    timesteps_f: Vec<f64>,
    prk_steps: usize,
    stride: i64,
    final_alpha_cumprod: f32,
    /// Past model outputs, newest last.
    ets: Vec<Tensor>,
    counter: usize,
    cur_sample: Option<Tensor>,
    cur_model_output: Option<Tensor>,
}

/// The ascending base timesteps (`_timesteps` in diffusers).
fn base_timesteps(spacing: Spacing, steps: usize, train: i64, offset: i64) -> Vec<i64> {
    match spacing {
        Spacing::Linspace => {
            np_linspace(0.0, (train - 1) as f64, steps).iter().map(|t| t.round_ties_even() as i64).collect()
        }
        Spacing::Leading => (0..steps as i64).map(|i| i * (train / steps as i64) + offset).collect(),
        Spacing::Trailing => {
            let mut ts: Vec<i64> = np_arange(train as f64, 0.0, -(train as f64) / steps as f64)
                .iter()
                .map(|t| t.round_ties_even() as i64 - 1)
                .collect();
            ts.reverse();
            ts
        }
    }
}

impl Pndm {
    pub(crate) fn new(common: Common, config: &SchedulerConfig, path: &Path, steps: usize) -> Result<Self> {
        if common.prediction == Prediction::Sample {
            return Err(Error::Unsupported {
                path: path.into(),
                why: "PNDM supports prediction_type epsilon and v_prediction, not sample".into(),
            });
        }
        let spacing = Spacing::parse(config.timestep_spacing.as_deref(), Spacing::Leading, path)?;
        let train = common.num_train_timesteps;
        let base = base_timesteps(spacing, steps, train, common.steps_offset);
        let n = base.len();
        let (prk, plms): (Vec<i64>, Vec<i64>) = if config.skip_prk_steps.unwrap_or(false) {
            // [t₀ … t_{n-2}, t_{n-2}, t_{n-1}] reversed
            let mut plms: Vec<i64> = base[..n - 1].to_vec();
            if n >= 2 {
                plms.push(base[n - 2]);
            }
            plms.push(base[n - 1]);
            plms.reverse();
            (Vec::new(), plms)
        } else {
            if n < ORDER {
                return Err(Error::invalid(
                    format!("{steps} PNDM steps with Runge-Kutta warm-up"),
                    "needs at least 4 steps (or `skip_prk_steps: true`)",
                ));
            }
            let half = train / steps as i64 / 2;
            let last: Vec<i64> = base[n - ORDER..].iter().flat_map(|&t| [t, t + half]).collect();
            let doubled: Vec<i64> = last[..last.len() - 1].iter().flat_map(|&t| [t, t]).collect();
            let mut prk = doubled[1..doubled.len() - 1].to_vec();
            prk.reverse();
            let mut plms = base[..n - 3].to_vec();
            plms.reverse();
            (prk, plms)
        };
        let prk_steps = prk.len();
        let timesteps: Vec<i64> = prk.into_iter().chain(plms).collect();
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(false) { 1.0 } else { common.alphas_cumprod[0] };
        Ok(Self {
            timesteps_f: timesteps.iter().map(|&t| t as f64).collect(),
            timesteps,
            prk_steps,
            stride: train / steps as i64,
            final_alpha_cumprod,
            ets: Vec::new(),
            counter: 0,
            cur_sample: None,
            cur_model_output: None,
            common,
        })
    }

    /// x_{t_prev} from x_t and the (combined) model output: formula (9) of the PNDM paper.
    fn prev_sample(&self, sample: &Tensor, t: i64, t_prev: i64, model_output: &Tensor) -> Result<(Tensor, Tensor)> {
        let alpha = self.common.alpha_current(t)?;
        let alpha_prev = self.common.alpha_at(t_prev, self.final_alpha_cumprod)?;
        let beta = 1.0 - alpha;
        let beta_prev = 1.0 - alpha_prev;
        let eps = match self.common.prediction {
            Prediction::VPrediction => {
                model_output.f_mul_scalar(alpha.sqrt() as f64)?.f_add(&sample.f_mul_scalar(beta.sqrt() as f64)?)?
            }
            _ => model_output.shallow_clone(),
        };
        let sample_coeff = (alpha_prev / alpha).sqrt();
        let denom = alpha * beta_prev.sqrt() + (alpha * beta * alpha_prev).sqrt();
        let prev = sample
            .f_mul_scalar(sample_coeff as f64)?
            .f_sub(&eps.f_mul_scalar((alpha_prev - alpha) as f64)?.f_div_scalar(denom as f64)?)?;
        // PNDM has no x₀ output of its own; this is the estimate implied by ε at t.
        let x0 = sample.f_sub(&eps.f_mul_scalar(beta.sqrt() as f64)?)?.f_div_scalar(alpha.sqrt() as f64)?;
        Ok((prev, x0))
    }

    fn step_prk(&mut self, model_output: &Tensor, step: usize, sample: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = self.timesteps[step];
        let diff_to_prev = if self.counter % 2 == 1 { 0 } else { self.stride / 2 };
        let t_prev = t - diff_to_prev;
        let t = self.timesteps[self.counter / 4 * 4];
        let add = |acc: &Option<Tensor>, x: Tensor| -> Result<Tensor> {
            Ok(match acc {
                Some(a) => a.f_add(&x)?,
                None => x,
            })
        };
        let combined = match self.counter % 4 {
            0 => {
                self.cur_model_output = Some(add(&self.cur_model_output, model_output.f_mul_scalar(1.0 / 6.0)?)?);
                self.ets.push(model_output.shallow_clone());
                self.cur_sample = Some(sample.shallow_clone());
                model_output.shallow_clone()
            }
            1 | 2 => {
                self.cur_model_output = Some(add(&self.cur_model_output, model_output.f_mul_scalar(1.0 / 3.0)?)?);
                model_output.shallow_clone()
            }
            _ => {
                let out = add(&self.cur_model_output, model_output.f_mul_scalar(1.0 / 6.0)?)?;
                self.cur_model_output = None;
                out
            }
        };
        let cur = self.cur_sample.as_ref().unwrap_or(sample).shallow_clone();
        self.prev_sample(&cur, t, t_prev, &combined)
    }

    fn step_plms(&mut self, model_output: &Tensor, step: usize, sample: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut t = self.timesteps[step];
        let mut t_prev = t - self.stride;
        if self.counter != 1 {
            let keep = self.ets.len().saturating_sub(3);
            self.ets.drain(..keep);
            self.ets.push(model_output.shallow_clone());
        } else {
            t_prev = t;
            t += self.stride;
        }
        let e = &self.ets;
        let n = e.len();
        let mut sample = sample.shallow_clone();
        let combined = if n == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.shallow_clone());
            model_output.shallow_clone()
        } else if n == 1 && self.counter == 1 {
            let combined = model_output.f_add(&e[0])?.f_div_scalar(2.0)?;
            sample = self.cur_sample.take().unwrap_or(sample);
            combined
        } else if n == 2 {
            e[1].f_mul_scalar(3.0)?.f_sub(&e[0])?.f_div_scalar(2.0)?
        } else if n == 3 {
            e[2].f_mul_scalar(23.0)?
                .f_sub(&e[1].f_mul_scalar(16.0)?)?
                .f_add(&e[0].f_mul_scalar(5.0)?)?
                .f_div_scalar(12.0)?
        } else {
            let sum = e[n - 1]
                .f_mul_scalar(55.0)?
                .f_sub(&e[n - 2].f_mul_scalar(59.0)?)?
                .f_add(&e[n - 3].f_mul_scalar(37.0)?)?
                .f_sub(&e[n - 4].f_mul_scalar(9.0)?)?;
            sum.f_mul_scalar(1.0 / 24.0)?
        };
        self.prev_sample(&sample, t, t_prev, &combined)
    }
}

impl Sampler for Pndm {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Pndm
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps_f
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &Tensor, _step: usize) -> Result<Tensor> {
        Ok(sample.shallow_clone())
    }

    fn step(&mut self, model_output: &Tensor, step: usize, sample: &Tensor, _: &mut NoiseSource) -> Result<StepOutput> {
        if step != self.counter {
            return Err(Error::invalid(
                format!("PNDM step {step}"),
                format!("PNDM is multi-step and must be run in order; expected step {}", self.counter),
            ));
        }
        let (prev_sample, pred_original) = if self.counter < self.prk_steps {
            self.step_prk(model_output, step, sample)?
        } else {
            self.step_plms(model_output, step, sample)?
        };
        self.counter += 1;
        Ok(StepOutput { prev_sample, pred_original })
    }
}
