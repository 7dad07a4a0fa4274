//! `text_encoder_3/config.json` of transformers' `T5EncoderModel` (SD3's third text encoder).

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

fn default_buckets() -> i64 {
    32
}
fn default_max_distance() -> i64 {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_feed_forward() -> String {
    "relu".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    pub vocab_size: i64,
    pub d_model: i64,
    /// Width of one attention head; `num_heads * d_kv` need not equal `d_model`.
    pub d_kv: i64,
    pub d_ff: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: i64,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `"{act}"` or `"gated-{act}"`.
    #[serde(default = "default_feed_forward")]
    pub feed_forward_proj: String,
    /// When present, overrides the activation `feed_forward_proj` implies (as in transformers).
    #[serde(default)]
    pub dense_act_fn: Option<String>,
    /// When present, overrides the gating `feed_forward_proj` implies (as in transformers).
    #[serde(default)]
    pub is_gated_act: Option<bool>,
    #[serde(default)]
    pub is_decoder: bool,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
}

/// The activation of T5's feed-forward block, by its transformers name (`ACT2FN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum T5Activation {
    Relu,
    /// `gelu`: the exact (erf) GELU.
    Gelu,
    /// `gelu_new`: the tanh approximation, written out term by term as transformers' `NewGELUActivation`.
    GeluNew,
    /// `gelu_pytorch_tanh`: the tanh approximation as one libtorch kernel.
    GeluPytorchTanh,
    /// `silu` / `swish`.
    Silu,
}

const KNOWN_ACTIVATIONS: &str = "relu, gelu, gelu_new, gelu_pytorch_tanh, silu, swish";

impl T5Activation {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "relu" => T5Activation::Relu,
            "gelu" => T5Activation::Gelu,
            "gelu_new" => T5Activation::GeluNew,
            "gelu_pytorch_tanh" => T5Activation::GeluPytorchTanh,
            "silu" | "swish" => T5Activation::Silu,
            _ => return None,
        })
    }
}

/// The feed-forward block a config asks for: `wo(act(wi(x)))`, or `wo(act(wi_0(x)) * wi_1(x))` when gated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct T5FeedForward {
    pub gated: bool,
    pub activation: T5Activation,
}

impl T5Config {
    /// The feed-forward block, resolved as transformers' `T5Config` does: `feed_forward_proj` is `"{act}"` or
    /// `"gated-{act}"`, `"gated-gelu"` means `gelu_new` (the tanh approximation) while a bare `"gelu"` is the exact
    /// GELU, and `dense_act_fn` / `is_gated_act`, when the file has them, win.
    pub fn feed_forward(&self, path: &Path) -> Result<T5FeedForward> {
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        let (gated, act) = match parts.as_slice() {
            [act] => (false, *act),
            ["gated", act] => (true, *act),
            _ => {
                return Err(Error::Unsupported {
                    path: path.into(),
                    why: format!(
                        "feed_forward_proj {:?} is not `{{act}}` or `gated-{{act}}` (e.g. \"relu\", \"gated-gelu\", \
                         \"gated-silu\", \"gelu\")",
                        self.feed_forward_proj
                    ),
                })
            }
        };
        let implied = if self.feed_forward_proj == "gated-gelu" { "gelu_new" } else { act };
        let name = self.dense_act_fn.as_deref().unwrap_or(implied);
        let activation = T5Activation::parse(name).ok_or_else(|| Error::Unsupported {
            path: path.into(),
            why: match &self.dense_act_fn {
                Some(_) => format!("dense_act_fn {name:?} (supported: {KNOWN_ACTIVATIONS})"),
                None => format!(
                    "feed_forward_proj {:?} (supported: relu, gelu, silu, swish, gelu_new, gelu_pytorch_tanh, \
                     each optionally as gated-…, e.g. \"gated-gelu\", \"gated-silu\")",
                    self.feed_forward_proj
                ),
            },
        })?;
        Ok(T5FeedForward { gated: self.is_gated_act.unwrap_or(gated), activation })
    }

    /// Refuses configs this encoder cannot run: absurd sizes, a decoder stack, T5 variants with another layout
    /// (`umt5` has a position bias per layer), and bucket settings whose log-spaced buckets are undefined.
    pub fn check(&self, path: &Path) -> Result<()> {
        crate::config::check_dims(
            path,
            1,
            [
                ("vocab_size", self.vocab_size),
                ("d_model", self.d_model),
                ("d_kv", self.d_kv),
                ("d_ff", self.d_ff),
                ("num_layers", self.num_layers),
                ("num_heads", self.num_heads),
                ("relative_attention_num_buckets", self.relative_attention_num_buckets),
                ("relative_attention_max_distance", self.relative_attention_max_distance),
            ],
        )?;
        let unsupported = |why: String| Err(Error::Unsupported { path: path.into(), why });
        if let Some(model_type) = self.model_type.as_deref().filter(|t| *t != "t5") {
            return unsupported(format!("model_type {model_type:?}: only \"t5\" (T5EncoderModel) is supported"));
        }
        if self.is_decoder {
            return unsupported("is_decoder = true: only the (bidirectional) T5 encoder is supported".into());
        }
        // Bidirectional buckets: half per direction, and half of those exact; the rest are log-spaced from
        // `max_exact` up to `max_distance`, which needs max_exact ≥ 1 and max_distance > max_exact.
        let max_exact = self.relative_attention_num_buckets / 4;
        if max_exact < 1 || self.relative_attention_max_distance <= max_exact {
            return Err(Error::BadConfig {
                path: path.into(),
                why: format!(
                    "relative_attention_num_buckets = {} and relative_attention_max_distance = {} leave no \
                     log-spaced buckets: the buckets must be at least 4 and the distance above buckets / 4",
                    self.relative_attention_num_buckets, self.relative_attention_max_distance
                ),
            });
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon >= 0.0) {
            return Err(Error::BadConfig {
                path: path.into(),
                why: format!("layer_norm_epsilon = {} must be a finite number ≥ 0", self.layer_norm_epsilon),
            });
        }
        self.feed_forward(path).map(|_| ())
    }
}
