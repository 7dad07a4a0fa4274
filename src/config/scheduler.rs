//! `scheduler/scheduler_config.json`: the noise schedule (and, for generation, the sampler settings).

use serde::Deserialize;

fn default_start() -> f64 {
    0.0001
}
fn default_end() -> f64 {
    0.02
}
fn default_steps() -> i64 {
    1000
}
fn default_schedule() -> String {
    "linear".into()
}
fn default_prediction() -> String {
    "epsilon".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    #[serde(default = "default_steps")]
    pub num_train_timesteps: i64,
    #[serde(default = "default_start")]
    pub beta_start: f64,
    #[serde(default = "default_end")]
    pub beta_end: f64,
    #[serde(default = "default_schedule")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "default_prediction")]
    pub prediction_type: String,
    #[serde(default)]
    pub timestep_spacing: Option<String>,
    #[serde(default)]
    pub steps_offset: Option<i64>,
    #[serde(default)]
    pub set_alpha_to_one: Option<bool>,
    #[serde(default)]
    pub skip_prk_steps: Option<bool>,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    // Sampler settings. `None` means "not in the file": each sampler then uses its own diffusers default, as
    // `XScheduler.from_config(other_config)` does.
    #[serde(default)]
    pub clip_sample: Option<bool>,
    #[serde(default)]
    pub clip_sample_range: Option<f64>,
    #[serde(default)]
    pub thresholding: Option<bool>,
    #[serde(default)]
    pub interpolation_type: Option<String>,
    #[serde(default)]
    pub use_karras_sigmas: Option<bool>,
    #[serde(default)]
    pub use_exponential_sigmas: Option<bool>,
    #[serde(default)]
    pub use_beta_sigmas: Option<bool>,
    #[serde(default)]
    pub timestep_type: Option<String>,
    #[serde(default)]
    pub final_sigmas_type: Option<String>,
    // Flow matching (`FlowMatchEulerDiscreteScheduler`).
    #[serde(default)]
    pub shift: Option<f64>,
    #[serde(default)]
    pub use_dynamic_shifting: Option<bool>,
    #[serde(default)]
    pub base_shift: Option<f64>,
    #[serde(default)]
    pub max_shift: Option<f64>,
    #[serde(default)]
    pub base_image_seq_len: Option<i64>,
    #[serde(default)]
    pub max_image_seq_len: Option<i64>,
    #[serde(default)]
    pub time_shift_type: Option<String>,
    #[serde(default)]
    pub shift_terminal: Option<f64>,
    #[serde(default)]
    pub invert_sigmas: Option<bool>,
    #[serde(default)]
    pub stochastic_sampling: Option<bool>,
}
