//! Noise schedules and samplers.
//!
//! Extraction needs only the forward (noising) process ([`NoiseSchedule`]); generation adds the samplers, which
//! reproduce diffusers' `DDIMScheduler`, `PNDMScheduler`, `EulerDiscreteScheduler` and
//! `EulerAncestralDiscreteScheduler`: the same timesteps and sigmas for the same config, and the same update
//! arithmetic in float32.

pub mod ddim;
pub mod euler;
pub mod flow_match;
pub mod noise;
pub mod pndm;
pub mod spacing;

pub use flow_match::{FlowMatchEuler, FlowMatchNoise, FlowMatchSettings};
pub use noise::NoiseSchedule;
pub use spacing::Spacing;

use crate::config::SchedulerConfig;
use crate::error::{Error, Result};
use std::path::Path;
use tch::Tensor;

/// The samplers sdscope implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    Ddim,
    Pndm,
    Euler,
    EulerAncestral,
    /// Rectified-flow Euler (SD3): the only sampler of flow-matching models.
    FlowMatchEuler,
}

impl SamplerKind {
    pub const ALL: [SamplerKind; 5] = [
        SamplerKind::Ddim,
        SamplerKind::Pndm,
        SamplerKind::Euler,
        SamplerKind::EulerAncestral,
        SamplerKind::FlowMatchEuler,
    ];

    /// The short name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "ddim",
            SamplerKind::Pndm => "pndm",
            SamplerKind::Euler => "euler",
            SamplerKind::EulerAncestral => "euler_ancestral",
            SamplerKind::FlowMatchEuler => "flow_match_euler",
        }
    }

    /// The diffusers class.
    pub fn class_name(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "DDIMScheduler",
            SamplerKind::Pndm => "PNDMScheduler",
            SamplerKind::Euler => "EulerDiscreteScheduler",
            SamplerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SamplerKind::FlowMatchEuler => "FlowMatchEulerDiscreteScheduler",
        }
    }

    /// A short name (`ddim`, `pndm`/`plms`, `euler`, `euler_ancestral`/`euler-a`) or a diffusers class name.
    pub fn parse(given: &str) -> Result<Self> {
        let key: String = given.trim().to_ascii_lowercase().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let kind = match key.as_str() {
            "ddim" | "ddimscheduler" => SamplerKind::Ddim,
            "pndm" | "plms" | "pndmscheduler" => SamplerKind::Pndm,
            "euler" | "eulerdiscrete" | "eulerdiscretescheduler" => SamplerKind::Euler,
            "eulerancestral" | "eulera" | "eulerancestraldiscrete" | "eulerancestraldiscretescheduler" => {
                SamplerKind::EulerAncestral
            }
            "flowmatcheuler" | "flowmatch" | "flowmatcheulerdiscretescheduler" => SamplerKind::FlowMatchEuler,
            _ => {
                let known: Vec<String> =
                    Self::ALL.iter().map(|k| format!("{} ({})", k.name(), k.class_name())).collect();
                return Err(Error::invalid(format!("scheduler `{given}`"), format!("known: {}", known.join(", "))));
            }
        };
        Ok(kind)
    }
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the U-Net predicts (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    VPrediction,
    /// The clean sample itself (SDXL-Lightning 1-step).
    Sample,
}

impl Prediction {
    pub fn parse(given: &str, path: &Path) -> Result<Self> {
        match given {
            "epsilon" => Ok(Prediction::Epsilon),
            "v_prediction" => Ok(Prediction::VPrediction),
            "sample" | "original_sample" => Ok(Prediction::Sample),
            other => Err(Error::Unsupported {
                path: path.into(),
                why: format!("prediction_type `{other}` (known: epsilon, v_prediction, sample)"),
            }),
        }
    }
}

/// One sampler update.
/// # Shapes
/// Both `[B, C, h, w]` like the sample.
pub struct StepOutput {
    pub prev_sample: Tensor,
    /// The model's estimate of the clean latents at this step.
    pub pred_original: Tensor,
}

/// Draws standard normal noise of a shape (the sampler's share of the seeded generator).
pub type NoiseSource<'a> = dyn FnMut(&[i64]) -> Result<Tensor> + 'a;

/// A sampler set to a number of inference steps. Steps are addressed by index `0..timesteps().len()`.
pub trait Sampler {
    fn kind(&self) -> SamplerKind;
    /// The timesteps handed to the U-Net, one per model call (PNDM repeats one: `steps + 1` calls).
    fn timesteps(&self) -> &[f64];
    /// Scale of the initial noise (`init_noise_sigma`).
    fn init_noise_sigma(&self) -> f64;
    /// Input scaling before the U-Net (`scale_model_input`).
    fn scale_model_input(&self, sample: &Tensor, step: usize) -> Result<Tensor>;
    /// One update from the guided model output.
    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        noise: &mut NoiseSource,
    ) -> Result<StepOutput>;
    /// The noise levels σ, one per step plus the final one (k-diffusion samplers only).
    fn sigmas(&self) -> Option<&[f32]> {
        None
    }
    /// Whether `step` draws noise.
    fn is_stochastic(&self) -> bool {
        false
    }
}

/// The forward (noising) process extraction uses: DDPM `add_noise` ([`NoiseSchedule`]) or flow-matching
/// `scale_noise` ([`FlowMatchNoise`]), addressed by a step `t` in `0..num_train_timesteps` (0 = least noise).
pub trait NoiseProcess {
    /// Check that `t` is a valid step.
    fn check_timestep(&self, t: i64) -> Result<()>;
    /// The noisy latents at step `t`.
    /// # Shapes
    /// `latents`, `noise`: `[B, C, h, w]` → `[B, C, h, w]`
    fn add_noise(&self, latents: &Tensor, noise: &Tensor, t: i64) -> Result<Tensor>;
    /// The timestep value the denoiser is called with at step `t` (`t` itself for DDPM, σ·1000 for flow).
    fn model_timestep(&self, t: i64, latents: &Tensor) -> Result<f64>;
}

impl NoiseProcess for NoiseSchedule {
    fn check_timestep(&self, t: i64) -> Result<()> {
        NoiseSchedule::check_timestep(self, t)
    }

    fn add_noise(&self, latents: &Tensor, noise: &Tensor, t: i64) -> Result<Tensor> {
        NoiseSchedule::add_noise(self, latents, noise, t)
    }

    fn model_timestep(&self, t: i64, _latents: &Tensor) -> Result<f64> {
        NoiseSchedule::check_timestep(self, t)?;
        Ok(t as f64)
    }
}

/// Settings every sampler reads from the config.
pub(crate) struct Common {
    /// ᾱ_t in float32, as diffusers keeps it.
    pub alphas_cumprod: Vec<f32>,
    pub num_train_timesteps: i64,
    pub prediction: Prediction,
    pub steps_offset: i64,
}

impl Common {
    fn new(config: &SchedulerConfig, path: &Path) -> Result<Self> {
        let schedule = NoiseSchedule::from_config(config, path)?;
        let alphas_cumprod = Vec::<f32>::try_from(schedule.alphas_cumprod())?;
        Ok(Self {
            alphas_cumprod,
            num_train_timesteps: config.num_train_timesteps,
            prediction: Prediction::parse(&config.prediction_type, path)?,
            steps_offset: config.steps_offset.unwrap_or(0),
        })
    }

    /// ᾱ at the current timestep; a negative one counts from the end, as Python indexing does (trailing
    /// spacing can end at t = -1 for some step counts, e.g. 61).
    fn alpha_current(&self, t: i64) -> Result<f32> {
        let n = self.alphas_cumprod.len() as i64;
        let index = if t < 0 { n + t } else { t };
        self.alphas_cumprod.get(index as usize).copied().ok_or(Error::BadTimestep(t, self.num_train_timesteps - 1))
    }

    /// ᾱ at a previous timestep, or `fallback` below 0 (`final_alpha_cumprod`).
    fn alpha_at(&self, t: i64, fallback: f32) -> Result<f32> {
        if t < 0 {
            return Ok(fallback);
        }
        self.alphas_cumprod.get(t as usize).copied().ok_or(Error::BadTimestep(t, self.num_train_timesteps - 1))
    }
}

/// Build the sampler a config names (or `kind`, overriding the config's class as diffusers' `from_config` does),
/// set to `steps` inference steps.
pub fn build_sampler(
    kind: Option<SamplerKind>,
    config: &SchedulerConfig,
    path: &Path,
    steps: usize,
) -> Result<Box<dyn Sampler>> {
    build_sampler_sized(kind, config, path, steps, None)
}

/// [`build_sampler`] knowing the number of image tokens (flow matching with dynamic shifting needs it).
/// Flow-matching models take only the flow-matching sampler, and DDPM-trained models only the others.
pub fn build_sampler_sized(
    kind: Option<SamplerKind>,
    config: &SchedulerConfig,
    path: &Path,
    steps: usize,
    image_seq_len: Option<i64>,
) -> Result<Box<dyn Sampler>> {
    let flow = FlowMatchSettings::applies(config);
    if flow || kind == Some(SamplerKind::FlowMatchEuler) {
        if kind.is_some_and(|k| k != SamplerKind::FlowMatchEuler) || !flow {
            return Err(Error::invalid(
                format!("scheduler `{}`", kind.map(|k| k.name()).unwrap_or("flow_match_euler")),
                format!(
                    "this model is trained for {}; use {}",
                    if flow { "flow matching" } else { "DDPM noise" },
                    if flow {
                        "flow_match_euler".to_string()
                    } else {
                        "one of ddim, pndm, euler, euler_ancestral".to_string()
                    }
                ),
            ));
        }
        return Ok(Box::new(FlowMatchEuler::new(config, path, steps, image_seq_len)?));
    }
    let kind = match kind {
        Some(k) => k,
        None => {
            let class = config.class_name.as_deref().unwrap_or("");
            SamplerKind::parse(class).map_err(|_| Error::Unsupported {
                path: path.into(),
                why: format!(
                    "scheduler class `{class}`; choose one explicitly (known: {})",
                    SamplerKind::ALL.map(|k| k.name()).join(", ")
                ),
            })?
        }
    };
    spacing::check_steps(steps, config.num_train_timesteps)?;
    let common = Common::new(config, path)?;
    Ok(match kind {
        SamplerKind::Ddim => Box::new(ddim::Ddim::new(common, config, path, steps)?),
        SamplerKind::Pndm => Box::new(pndm::Pndm::new(common, config, path, steps)?),
        SamplerKind::Euler => Box::new(euler::Euler::new(common, config, path, steps, false)?),
        SamplerKind::EulerAncestral => Box::new(euler::Euler::new(common, config, path, steps, true)?),
        SamplerKind::FlowMatchEuler => Box::new(FlowMatchEuler::new(config, path, steps, image_seq_len)?),
    })
}

/// Refuse a sampler option sdscope does not implement, instead of silently ignoring it.
pub(crate) fn refuse_flag(flag: Option<bool>, name: &str, path: &Path) -> Result<()> {
    if flag == Some(true) {
        return Err(Error::Unsupported { path: path.into(), why: format!("`{name}: true` is not implemented") });
    }
    Ok(())
}

/// The noise level σ = √((1 - ᾱ) / ᾱ) of a timestep, in float32 as diffusers computes it.
pub(crate) fn sigma_of(alpha_cumprod: f32) -> f32 {
    ((1.0 - alpha_cumprod) / alpha_cumprod).sqrt()
}
