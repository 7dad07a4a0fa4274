//! `vae/config.json` of `AutoencoderKL`.

use serde::Deserialize;

fn default_channels() -> i64 {
    3
}
fn default_latent() -> i64 {
    4
}
fn default_groups() -> i64 {
    32
}
fn default_layers() -> i64 {
    1
}
fn default_scaling() -> f64 {
    0.18215
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "default_channels")]
    pub in_channels: i64,
    #[serde(default = "default_latent")]
    pub latent_channels: i64,
    pub block_out_channels: Vec<i64>,
    #[serde(default)]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_layers")]
    pub layers_per_block: i64,
    #[serde(default = "default_groups")]
    pub norm_num_groups: i64,
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default)]
    pub force_upcast: bool,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
}
