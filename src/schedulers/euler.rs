//! Euler (`EulerDiscreteScheduler`) and Euler ancestral (`EulerAncestralDiscreteScheduler`), k-diffusion style:
//! the sample lives at noise level σ, the U-Net sees it scaled by 1/√(σ²+1).

use super::spacing::{float_timesteps, Spacing};
use super::{refuse_flag, sigma_of, Common, NoiseSource, Prediction, Sampler, SamplerKind, StepOutput};
use crate::config::SchedulerConfig;
use crate::error::{Error, Result};
use std::path::Path;
use tch::{Kind, Tensor};

pub struct Euler {
    common: Common,
    ancestral: bool,
    timesteps: Vec<f64>,
    /// One per step, plus the final σ (0, or σ_min with `final_sigmas_type: sigma_min`).
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
}

/// `np.interp(x, 0..len(fp), fp)` in float64.
fn interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    let slope = fp[j + 1] as f64 - fp[j] as f64;
    slope * (x - j as f64) + fp[j] as f64
}

impl Euler {
    pub(crate) fn new(
        common: Common,
        config: &SchedulerConfig,
        path: &Path,
        steps: usize,
        ancestral: bool,
    ) -> Result<Self> {
        if ancestral && common.prediction == Prediction::Sample {
            return Err(Error::Unsupported {
                path: path.into(),
                why: "Euler ancestral supports prediction_type epsilon and v_prediction, not sample".into(),
            });
        }
        let mut final_sigma_min = false;
        let mut continuous = false;
        if !ancestral {
            refuse_flag(config.use_karras_sigmas, "use_karras_sigmas", path)?;
            refuse_flag(config.use_exponential_sigmas, "use_exponential_sigmas", path)?;
            refuse_flag(config.use_beta_sigmas, "use_beta_sigmas", path)?;
            match config.interpolation_type.as_deref() {
                None | Some("linear") => {}
                Some(other) => {
                    return Err(Error::Unsupported {
                        path: path.into(),
                        why: format!("interpolation_type `{other}` (implemented: linear)"),
                    })
                }
            }
            final_sigma_min = match config.final_sigmas_type.as_deref() {
                None | Some("zero") => false,
                Some("sigma_min") => true,
                Some(other) => {
                    return Err(Error::Unsupported {
                        path: path.into(),
                        why: format!("final_sigmas_type `{other}` (known: zero, sigma_min)"),
                    })
                }
            };
            continuous = match config.timestep_type.as_deref() {
                None | Some("discrete") => false,
                Some("continuous") => common.prediction == Prediction::VPrediction,
                Some(other) => {
                    return Err(Error::Unsupported {
                        path: path.into(),
                        why: format!("timestep_type `{other}` (known: discrete, continuous)"),
                    })
                }
            };
        }
        let spacing = Spacing::parse(config.timestep_spacing.as_deref(), Spacing::Linspace, path)?;
        let ts = float_timesteps(spacing, steps, common.num_train_timesteps, common.steps_offset);
        let all_sigmas: Vec<f32> = common.alphas_cumprod.iter().map(|&a| sigma_of(a)).collect();
        let mut sigmas: Vec<f32> = ts.iter().map(|&t| interp(t as f64, &all_sigmas) as f32).collect();
        sigmas.push(if final_sigma_min { sigma_of(common.alphas_cumprod[0]) } else { 0.0 });
        let timesteps = if continuous {
            sigmas[..steps].iter().map(|s| (0.25 * s.ln()) as f64).collect()
        } else {
            ts.iter().map(|&t| t as f64).collect()
        };
        let max_sigma = sigmas.iter().copied().fold(f32::MIN, f32::max);
        let init_noise_sigma = match spacing {
            Spacing::Linspace | Spacing::Trailing => max_sigma,
            Spacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        };
        Ok(Self { common, ancestral, timesteps, sigmas, init_noise_sigma })
    }

    fn sigma(&self, step: usize) -> Result<f32> {
        self.sigmas.get(step).copied().ok_or_else(|| {
            Error::invalid(format!("step {step}"), format!("the sampler has {} steps", self.timesteps.len()))
        })
    }
}

impl Sampler for Euler {
    fn kind(&self) -> SamplerKind {
        if self.ancestral {
            SamplerKind::EulerAncestral
        } else {
            SamplerKind::Euler
        }
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma as f64
    }

    fn scale_model_input(&self, sample: &Tensor, step: usize) -> Result<Tensor> {
        let sigma = self.sigma(step)?;
        Ok(sample.f_div_scalar((sigma * sigma + 1.0).sqrt() as f64)?)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        noise: &mut NoiseSource,
    ) -> Result<StepOutput> {
        let sigma = self.sigma(step)?;
        let sigma_next = self.sigma(step + 1)?;
        let sample = sample.f_to_kind(Kind::Float)?;
        let x0 = match self.common.prediction {
            Prediction::Epsilon => sample.f_sub(&model_output.f_mul_scalar(sigma as f64)?)?,
            Prediction::VPrediction => {
                let s2 = sigma * sigma + 1.0;
                model_output.f_mul_scalar((-sigma / s2.sqrt()) as f64)?.f_add(&sample.f_div_scalar(s2 as f64)?)?
            }
            Prediction::Sample => model_output.shallow_clone(),
        };
        let derivative = sample.f_sub(&x0)?.f_div_scalar(sigma as f64)?;
        let prev_sample = if self.ancestral {
            let (from2, to2) = (sigma * sigma, sigma_next * sigma_next);
            let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
            let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
            let moved = sample.f_add(&derivative.f_mul_scalar((sigma_down - sigma) as f64)?)?;
            let eps =
                noise(&model_output.size())?.f_to_kind(model_output.kind())?.f_to_device(model_output.device())?;
            moved.f_add(&eps.f_mul_scalar(sigma_up as f64)?)?
        } else {
            sample.f_add(&derivative.f_mul_scalar((sigma_next - sigma) as f64)?)?
        };
        Ok(StepOutput { prev_sample: prev_sample.f_to_kind(model_output.kind())?, pred_original: x0 })
    }

    fn is_stochastic(&self) -> bool {
        self.ancestral
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }
}
