//! The forward diffusion process `q(x_t | x_0)` as diffusers' `DDPMScheduler.add_noise` computes it.

use crate::config::SchedulerConfig;
use crate::error::{Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The largest `num_train_timesteps` a scheduler config may give.
pub const MAX_TRAIN_TIMESTEPS: i64 = 1_000_000;

/// ᾱ_t for every training timestep, in float32 like diffusers.
#[derive(Debug)]
pub struct NoiseSchedule {
    alphas_cumprod: Tensor,
    num_train_timesteps: i64,
}

impl NoiseSchedule {
    pub fn from_config(config: &SchedulerConfig, path: &Path) -> Result<Self> {
        let n = config.num_train_timesteps;
        // diffusers' models use 1000; a schedule is a few floats per timestep, so a bound keeps a config from
        // asking for gigabytes.
        if !(1..=MAX_TRAIN_TIMESTEPS).contains(&n) {
            return Err(Error::BadConfig {
                path: path.into(),
                why: format!("num_train_timesteps = {n}; it must be in 1..={MAX_TRAIN_TIMESTEPS}"),
            });
        }
        let opts = (Kind::Float, Device::Cpu);
        let betas = if let Some(betas) = &config.trained_betas {
            Tensor::from_slice(betas).f_to_kind(Kind::Float)?
        } else {
            match config.beta_schedule.as_str() {
                "linear" => Tensor::f_linspace(config.beta_start, config.beta_end, n, opts)?,
                "scaled_linear" => Tensor::f_linspace(config.beta_start.sqrt(), config.beta_end.sqrt(), n, opts)?
                    .f_pow_tensor_scalar(2)?,
                "squaredcos_cap_v2" => {
                    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
                    let betas: Vec<f64> = (0..n)
                        .map(|i| {
                            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                        })
                        .collect();
                    Tensor::from_slice(&betas).f_to_kind(Kind::Float)?
                }
                other => {
                    return Err(Error::Unsupported {
                        path: path.into(),
                        why: format!("beta_schedule `{other}` (known: linear, scaled_linear, squaredcos_cap_v2)"),
                    })
                }
            }
        };
        if config.rescale_betas_zero_snr {
            return Err(Error::Unsupported {
                path: path.into(),
                why: "rescale_betas_zero_snr is not implemented".into(),
            });
        }
        let alphas = betas.f_neg()?.f_add_scalar(1.0)?;
        let alphas_cumprod = alphas.f_cumprod(0, Kind::Float)?;
        Ok(Self { alphas_cumprod, num_train_timesteps: n })
    }

    pub fn num_train_timesteps(&self) -> i64 {
        self.num_train_timesteps
    }

    /// ᾱ as a float32 vector `[num_train_timesteps]`.
    pub fn alphas_cumprod(&self) -> &Tensor {
        &self.alphas_cumprod
    }

    /// Check that `t` is a valid training timestep.
    pub fn check_timestep(&self, t: i64) -> Result<()> {
        if !(0..self.num_train_timesteps).contains(&t) {
            return Err(Error::BadTimestep(t, self.num_train_timesteps - 1));
        }
        Ok(())
    }

    /// `sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·noise`.
    /// # Shapes
    /// `x0`, `noise`: `[B, C, h, w]` → `[B, C, h, w]`
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: i64) -> Result<Tensor> {
        self.check_timestep(t)?;
        let abar = self.alphas_cumprod.f_get(t)?.f_to_kind(x0.kind())?.f_to_device(x0.device())?;
        let signal = abar.f_pow_tensor_scalar(0.5)?;
        let noise_scale = abar.f_neg()?.f_add_scalar(1.0)?.f_pow_tensor_scalar(0.5)?;
        Ok(x0.f_mul(&signal)?.f_add(&noise.f_mul(&noise_scale)?)?)
    }
}
