//! DDIM (`DDIMScheduler`), deterministic (η = 0) as diffusers' pipelines run it.

use super::spacing::{discrete_timesteps, Spacing};
use super::{refuse_flag, Common, NoiseSource, Prediction, Sampler, SamplerKind, StepOutput};
use crate::config::SchedulerConfig;
use crate::error::Result;
use std::path::Path;
use tch::Tensor;

pub struct Ddim {
    common: Common,
    timesteps: Vec<i64>,
    timesteps_f: Vec<f64>,
    /// `num_train_timesteps // steps`: DDIM always steps back by this, whatever the spacing.
    stride: i64,
    final_alpha_cumprod: f32,
    clip_range: Option<f64>,
}

impl Ddim {
    pub(crate) fn new(common: Common, config: &SchedulerConfig, path: &Path, steps: usize) -> Result<Self> {
        refuse_flag(config.thresholding, "thresholding", path)?;
        let spacing = Spacing::parse(config.timestep_spacing.as_deref(), Spacing::Leading, path)?;
        let train = common.num_train_timesteps;
        let timesteps = discrete_timesteps(spacing, steps, train, common.steps_offset);
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) { 1.0 } else { common.alphas_cumprod[0] };
        let clip_range = config.clip_sample.unwrap_or(true).then(|| config.clip_sample_range.unwrap_or(1.0));
        Ok(Self {
            timesteps_f: timesteps.iter().map(|&t| t as f64).collect(),
            timesteps,
            stride: train / steps as i64,
            final_alpha_cumprod,
            clip_range,
            common,
        })
    }
}

impl Sampler for Ddim {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Ddim
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
        let t = self.timesteps[step];
        let alpha = self.common.alpha_current(t)?;
        let alpha_prev = self.common.alpha_at(t - self.stride, self.final_alpha_cumprod)?;
        let beta = 1.0 - alpha;
        let (sqrt_a, sqrt_b) = (alpha.sqrt() as f64, beta.sqrt() as f64);
        let (mut x0, eps) = match self.common.prediction {
            Prediction::Epsilon => {
                (sample.f_sub(&model_output.f_mul_scalar(sqrt_b)?)?.f_div_scalar(sqrt_a)?, model_output.shallow_clone())
            }
            Prediction::Sample => {
                let x0 = model_output.shallow_clone();
                let eps = sample.f_sub(&x0.f_mul_scalar(sqrt_a)?)?.f_div_scalar(sqrt_b)?;
                (x0, eps)
            }
            Prediction::VPrediction => (
                sample.f_mul_scalar(sqrt_a)?.f_sub(&model_output.f_mul_scalar(sqrt_b)?)?,
                model_output.f_mul_scalar(sqrt_a)?.f_add(&sample.f_mul_scalar(sqrt_b)?)?,
            ),
        };
        if let Some(range) = self.clip_range {
            x0 = x0.f_clamp(-range, range)?;
        }
        let direction = eps.f_mul_scalar((1.0 - alpha_prev).sqrt() as f64)?;
        let prev_sample = x0.f_mul_scalar(alpha_prev.sqrt() as f64)?.f_add(&direction)?;
        Ok(StepOutput { prev_sample, pred_original: x0 })
    }
}
