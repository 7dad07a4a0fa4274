//! Rectified flow as diffusers' `FlowMatchEulerDiscreteScheduler` computes it (SD3, SD3.5): the noising
//! `x_σ = σ·noise + (1 − σ)·x₀` ([`FlowMatchNoise`]) and the Euler sampler `x ← x + (σ_next − σ)·v`
//! ([`FlowMatchEuler`]), with static (`shift`) or resolution-dependent (`use_dynamic_shifting`, `mu`) shifting.

use super::{NoiseSource, Sampler, SamplerKind, StepOutput};
use crate::config::SchedulerConfig;
use crate::error::{Error, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// The settings of a flow-matching schedule, checked against what sdscope implements.
#[derive(Debug, Clone)]
pub struct FlowMatchSettings {
    pub num_train_timesteps: i64,
    pub shift: f64,
    /// `Some((base_shift, max_shift, base_image_seq_len, max_image_seq_len, exponential))` with dynamic shifting.
    pub dynamic: Option<DynamicShift>,
}

#[derive(Debug, Clone, Copy)]
pub struct DynamicShift {
    pub base_shift: f64,
    pub max_shift: f64,
    pub base_seq_len: i64,
    pub max_seq_len: i64,
    pub exponential: bool,
}

impl DynamicShift {
    /// The pipeline's `calculate_shift`: μ linear in the number of image tokens.
    pub fn mu(&self, image_seq_len: i64) -> f64 {
        let m = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len) as f64;
        let b = self.base_shift - m * self.base_seq_len as f64;
        image_seq_len as f64 * m + b
    }
}

fn refuse(path: &Path, flag: Option<bool>, name: &str) -> Result<()> {
    if flag == Some(true) {
        return Err(Error::Unsupported { path: path.into(), why: format!("`{name}: true` is not implemented") });
    }
    Ok(())
}

impl FlowMatchSettings {
    /// Whether a scheduler config describes flow matching.
    pub fn applies(config: &SchedulerConfig) -> bool {
        config.class_name.as_deref().is_some_and(|c| c.starts_with("FlowMatch"))
    }

    pub fn from_config(config: &SchedulerConfig, path: &Path) -> Result<Self> {
        let n = config.num_train_timesteps;
        if !(2..=super::noise::MAX_TRAIN_TIMESTEPS).contains(&n) {
            return Err(Error::BadConfig { path: path.into(), why: format!("num_train_timesteps = {n}") });
        }
        refuse(path, config.invert_sigmas, "invert_sigmas")?;
        refuse(path, config.stochastic_sampling, "stochastic_sampling")?;
        refuse(path, config.use_karras_sigmas, "use_karras_sigmas")?;
        refuse(path, config.use_exponential_sigmas, "use_exponential_sigmas")?;
        refuse(path, config.use_beta_sigmas, "use_beta_sigmas")?;
        if config.shift_terminal.is_some_and(|s| s != 0.0) {
            return Err(Error::Unsupported { path: path.into(), why: "`shift_terminal` is not implemented".into() });
        }
        let shift = config.shift.unwrap_or(1.0);
        if !(shift.is_finite() && shift > 0.0) {
            return Err(Error::BadConfig { path: path.into(), why: format!("shift = {shift}; it must be > 0") });
        }
        let dynamic = if config.use_dynamic_shifting == Some(true) {
            let exponential = match config.time_shift_type.as_deref().unwrap_or("exponential") {
                "exponential" => true,
                "linear" => false,
                other => {
                    return Err(Error::BadConfig {
                        path: path.into(),
                        why: format!("time_shift_type `{other}` (known: exponential, linear)"),
                    })
                }
            };
            let d = DynamicShift {
                base_shift: config.base_shift.unwrap_or(0.5),
                max_shift: config.max_shift.unwrap_or(1.15),
                base_seq_len: config.base_image_seq_len.unwrap_or(256),
                max_seq_len: config.max_image_seq_len.unwrap_or(4096),
                exponential,
            };
            if d.max_seq_len == d.base_seq_len {
                return Err(Error::BadConfig {
                    path: path.into(),
                    why: "base_image_seq_len equals max_image_seq_len".into(),
                });
            }
            Some(d)
        } else {
            None
        };
        Ok(Self { num_train_timesteps: n, shift, dynamic })
    }

    /// The training σ range after the constructor's static shift, as diffusers keeps it (float32 values).
    fn sigma_range(&self) -> (f64, f64) {
        let n = self.num_train_timesteps as f32;
        let static_shift = |s: f32| -> f32 {
            if self.dynamic.is_some() {
                s
            } else {
                let shift = self.shift as f32;
                shift * s / (1.0 + (shift - 1.0) * s)
            }
        };
        // The training timesteps run N, N − 1, …, 1, so σ runs from N / N = 1 down to 1 / N.
        (static_shift(1.0) as f64, static_shift(1.0 / n) as f64)
    }

    /// `set_timesteps(steps, mu)`: the timesteps (σ·N, float32) and the σ values with a final 0.
    /// `image_seq_len` is needed with dynamic shifting (the pipeline's μ).
    pub fn schedule(&self, steps: usize, image_seq_len: Option<i64>) -> Result<(Vec<f32>, Vec<f32>)> {
        if steps == 0 {
            return Err(Error::invalid("steps", "give at least one step"));
        }
        let n = self.num_train_timesteps as f64;
        let (sigma_max, sigma_min) = self.sigma_range();
        let (start, end) = (sigma_max * n, sigma_min * n);
        let base: Vec<f64> = (0..steps)
            .map(|i| {
                // numpy's linspace: start + i·step, with the last value exactly `end`.
                if steps == 1 {
                    start
                } else if i == steps - 1 {
                    end
                } else {
                    start + i as f64 * ((end - start) / (steps - 1) as f64)
                }
            })
            .map(|t| t / n)
            .collect();
        let shifted: Vec<f64> = match &self.dynamic {
            None => base.iter().map(|&s| self.shift * s / (1.0 + (self.shift - 1.0) * s)).collect(),
            Some(d) => {
                let tokens = image_seq_len.ok_or_else(|| {
                    Error::invalid("flow-matching schedule", "dynamic shifting needs the number of image tokens")
                })?;
                let mu = d.mu(tokens);
                base.iter()
                    .map(|&s| {
                        if d.exponential {
                            mu.exp() / (mu.exp() + (1.0 / s - 1.0))
                        } else {
                            mu / (mu + (1.0 / s - 1.0))
                        }
                    })
                    .collect()
            }
        };
        let mut sigmas: Vec<f32> = shifted.iter().map(|&s| s as f32).collect();
        let timesteps = sigmas.iter().map(|&s| s * self.num_train_timesteps as f32).collect();
        sigmas.push(0.0);
        Ok((timesteps, sigmas))
    }
}

/// diffusers' `index_for_timestep`: the first index holding `t`, or the second when it occurs twice.
fn index_for(timesteps: &[f32], t: f32) -> Option<usize> {
    let hits: Vec<usize> = timesteps.iter().enumerate().filter(|(_, &v)| v == t).map(|(i, _)| i).collect();
    hits.get(if hits.len() > 1 { 1 } else { 0 }).copied()
}

/// The forward process for extraction: step `t` in `0..N` is `timesteps[N − 1 − t]` of the schedule set to `N`
/// steps (so `t = 0` is the least noise), noised with `scale_noise`.
#[derive(Debug)]
pub struct FlowMatchNoise {
    pub settings: FlowMatchSettings,
    /// Latent pixels per image token side (the transformer's patch size), for μ with dynamic shifting.
    pub patch_size: i64,
}

impl FlowMatchNoise {
    fn full_schedule(&self, latents: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
        let size = latents.size();
        let tokens = match size.as_slice() {
            [.., h, w] => (h / self.patch_size) * (w / self.patch_size),
            _ => 0,
        };
        self.settings.schedule(self.settings.num_train_timesteps as usize, Some(tokens))
    }

    /// σ and the model timestep of extraction step `t`.
    pub fn sigma_and_timestep(&self, t: i64, latents: &Tensor) -> Result<(f32, f32)> {
        self.check(t)?;
        let (timesteps, sigmas) = self.full_schedule(latents)?;
        let timestep = timesteps[(self.settings.num_train_timesteps - 1 - t) as usize];
        let index = index_for(&timesteps, timestep).unwrap_or((self.settings.num_train_timesteps - 1 - t) as usize);
        Ok((sigmas[index], timestep))
    }

    fn check(&self, t: i64) -> Result<()> {
        let n = self.settings.num_train_timesteps;
        if !(0..n).contains(&t) {
            return Err(Error::BadTimestep(t, n - 1));
        }
        Ok(())
    }
}

impl super::NoiseProcess for FlowMatchNoise {
    fn check_timestep(&self, t: i64) -> Result<()> {
        self.check(t)
    }

    fn add_noise(&self, latents: &Tensor, noise: &Tensor, t: i64) -> Result<Tensor> {
        let (sigma, _) = self.sigma_and_timestep(t, latents)?;
        let s = Tensor::from_slice(&[sigma]).f_to_kind(latents.kind())?.f_to_device(latents.device())?;
        let keep = s.f_neg()?.f_add_scalar(1.0)?;
        Ok(s.f_mul(noise)?.f_add(&keep.f_mul(latents)?)?)
    }

    fn model_timestep(&self, t: i64, latents: &Tensor) -> Result<f64> {
        Ok(self.sigma_and_timestep(t, latents)?.1 as f64)
    }
}

/// `FlowMatchEulerDiscreteScheduler.step`: `x + (σ_next − σ)·v` in float32.
pub struct FlowMatchEuler {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
}

impl FlowMatchEuler {
    pub fn new(config: &SchedulerConfig, path: &Path, steps: usize, image_seq_len: Option<i64>) -> Result<Self> {
        let settings = FlowMatchSettings::from_config(config, path)?;
        let (timesteps, sigmas) = settings.schedule(steps, image_seq_len)?;
        Ok(Self { timesteps: timesteps.iter().map(|&t| t as f64).collect(), sigmas })
    }
}

impl Sampler for FlowMatchEuler {
    fn kind(&self) -> SamplerKind {
        SamplerKind::FlowMatchEuler
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &Tensor, _step: usize) -> Result<Tensor> {
        Ok(sample.shallow_clone())
    }

    fn step(&mut self, model_output: &Tensor, step: usize, sample: &Tensor, _: &mut NoiseSource) -> Result<StepOutput> {
        let timesteps: Vec<f32> = self.timesteps.iter().map(|&t| t as f32).collect();
        let index = index_for(&timesteps, self.timesteps[step] as f32).unwrap_or(step);
        let (sigma, next) = (self.sigmas[index], self.sigmas[(index + 1).min(self.sigmas.len() - 1)]);
        let dt = next - sigma;
        let sample = sample.f_to_kind(Kind::Float)?;
        let prev = sample.f_add(&model_output.f_mul_scalar(dt as f64)?)?;
        let pred_original = sample.f_sub(&model_output.f_mul_scalar(sigma as f64)?)?;
        Ok(StepOutput { prev_sample: prev.f_to_kind(model_output.kind())?, pred_original })
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }
}
