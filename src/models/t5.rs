//! transformers' `T5EncoderModel`: SD3's third text encoder (`text_encoder_3`), without an attention mask (SD3's
//! pipeline passes none, so padding tokens are attended to like any other).
//!
//! Pre-norm blocks of self-attention and a feed-forward layer, with T5's particulars: an RMS norm without mean
//! subtraction or bias, no `1/√d` scaling of the attention scores, and a learned relative position bias that only
//! the first block holds and every block adds to its scores.
//!
//! Weights are used in the dtype of the [`Weights`] they are loaded from, so T5 can run in bf16 or fp16 next to a
//! float32 model by opening its own `Weights`. The dtype flow then follows transformers: the norms compute their
//! variance in float32; in float16, the `wo` projections are kept in float32 (transformers' `_keep_in_fp32_modules`;
//! here they are upcast after loading) and the hidden states are clamped like transformers' fp16 guard. Outputs are
//! returned in float32 whatever the weights' dtype.

use crate::config::t5::{T5Activation, T5FeedForward};
use crate::config::T5Config;
use crate::error::{Error, Result};
use crate::nn::Linear;
use crate::weights::{VarBuilder, Weights};
use std::path::Path;
use tch::{Kind, Tensor};

/// transformers' `T5LayerNorm`: `weight · x / √(mean(x²) + ε)`, the mean taken in float32; the normalised values
/// are cast to the weight's dtype when that is half precision.
struct T5LayerNorm {
    weight: Tensor,
    eps: f64,
}

impl T5LayerNorm {
    fn load(vb: &VarBuilder, dim: i64, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.get("weight", &[dim])?, eps })
    }

    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let variance = h.f_to_kind(Kind::Float)?.f_pow_tensor_scalar(2)?.f_mean_dim(-1, true, None)?;
        let normed = h.f_mul(&variance.f_add_scalar(self.eps)?.f_rsqrt()?)?;
        let normed = match self.weight.kind() {
            kind @ (Kind::Half | Kind::BFloat16) => normed.f_to_kind(kind)?,
            _ => normed,
        };
        Ok(self.weight.f_mul(&normed)?)
    }
}

struct T5Block {
    attn_norm: T5LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ff_norm: T5LayerNorm,
    /// `wi`, or `wi_0` (through the activation) and `wi_1` when gated.
    wi: Linear,
    wi_gate: Option<Linear>,
    wo: Linear,
}

/// What [`T5Encoder::forward_with_hidden_states`] gives back, in float32.
/// # Shapes
/// `last_hidden_state` and every `hidden_states` entry: `[B, L, d_model]`
pub struct T5Output {
    /// After the final layer norm: what SD3 conditions on.
    pub last_hidden_state: Tensor,
    /// `num_layers + 1` entries: the token embeddings, then the output of each block (before the final norm).
    /// Entries `0..num_layers` equal transformers' `hidden_states` (`output_hidden_states=True`); transformers'
    /// last entry is instead `last_hidden_state` (it runs the final norm on the last block's output and records
    /// that), so the last block's own output is only here.
    pub hidden_states: Vec<Tensor>,
}

pub struct T5Encoder {
    pub config: T5Config,
    embedding: Tensor,
    /// `[num_buckets, num_heads]`, from the first block.
    relative_attention_bias: Tensor,
    blocks: Vec<T5Block>,
    final_layer_norm: T5LayerNorm,
    feed_forward: T5FeedForward,
}

impl T5Encoder {
    /// Loads the encoder of a `T5EncoderModel` (or of a full T5 checkpoint: the decoder is ignored) in the dtype
    /// and on the device of `weights`. The token embedding is `shared.weight`, else `encoder.embed_tokens.weight`.
    pub fn load(config: T5Config, config_path: &Path, weights: &Weights) -> Result<Self> {
        config.check(config_path)?;
        let feed_forward = config.feed_forward(config_path)?;
        let (d, inner, heads, ff) = (config.d_model, config.num_heads * config.d_kv, config.num_heads, config.d_ff);
        let root = weights.root();
        let embed_name = if !root.contains("shared.weight") && root.contains("encoder.embed_tokens.weight") {
            "encoder.embed_tokens.weight"
        } else {
            "shared.weight"
        };
        let embedding = root.get(embed_name, &[config.vocab_size, d])?;
        let encoder = root.pp("encoder");
        let relative_attention_bias = encoder
            .pp("block.0.layer.0.SelfAttention.relative_attention_bias")
            .get("weight", &[config.relative_attention_num_buckets, heads])?;
        let eps = config.layer_norm_epsilon;
        let blocks = (0..config.num_layers)
            .map(|i| {
                let block = encoder.pp("block").pp(i);
                let attn = block.pp("layer.0");
                let sa = attn.pp("SelfAttention");
                let dense = block.pp("layer.1").pp("DenseReluDense");
                let (wi, wi_gate) = if feed_forward.gated {
                    (
                        Linear::load(&dense.pp("wi_0"), d, ff, false)?,
                        Some(Linear::load(&dense.pp("wi_1"), d, ff, false)?),
                    )
                } else {
                    (Linear::load(&dense.pp("wi"), d, ff, false)?, None)
                };
                let mut wo = Linear::load(&dense.pp("wo"), ff, d, false)?;
                if wo.weight.kind() == Kind::Half {
                    wo.weight = wo.weight.f_to_kind(Kind::Float)?;
                }
                Ok(T5Block {
                    attn_norm: T5LayerNorm::load(&attn.pp("layer_norm"), d, eps)?,
                    q: Linear::load(&sa.pp("q"), d, inner, false)?,
                    k: Linear::load(&sa.pp("k"), d, inner, false)?,
                    v: Linear::load(&sa.pp("v"), d, inner, false)?,
                    o: Linear::load(&sa.pp("o"), inner, d, false)?,
                    ff_norm: T5LayerNorm::load(&block.pp("layer.1").pp("layer_norm"), d, eps)?,
                    wi,
                    wi_gate,
                    wo,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = T5LayerNorm::load(&encoder.pp("final_layer_norm"), d, eps)?;
        Ok(Self { config, embedding, relative_attention_bias, blocks, final_layer_norm, feed_forward })
    }

    /// `last_hidden_state` of transformers' `T5EncoderModel(ids)` (no attention mask), in float32.
    /// # Shapes
    /// `ids: [B, L]` (integer) → `[B, L, d_model]`
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.run(ids, false)?.last_hidden_state)
    }

    /// [`Self::forward`] plus the embeddings and every block's output (see [`T5Output`]), all in float32.
    /// # Shapes
    /// `ids: [B, L]` (integer) → [`T5Output`]
    pub fn forward_with_hidden_states(&self, ids: &Tensor) -> Result<T5Output> {
        self.run(ids, true)
    }

    fn run(&self, ids: &Tensor, keep_hidden: bool) -> Result<T5Output> {
        let (_, l) = ids.size2()?;
        if l == 0 {
            return Err(Error::invalid("token ids", "the sequence is empty (the tokenizer gives at least `</s>`)"));
        }
        let ids = ids.f_to_kind(Kind::Int64)?.f_to_device(self.embedding.device())?;
        let (min_id, max_id) = (ids.f_min()?.int64_value(&[]), ids.f_max()?.int64_value(&[]));
        if min_id < 0 || max_id >= self.config.vocab_size {
            let found = if min_id < 0 { min_id } else { max_id };
            return Err(Error::invalid(
                "token ids",
                format!("must lie in 0..{} (the T5 vocab_size), found {found}", self.config.vocab_size),
            ));
        }
        let position_bias = self.position_bias(l)?;
        let mut h = Tensor::f_embedding(&self.embedding, &ids, -1, false, false)?;
        let mut hidden_states = Vec::new();
        for block in &self.blocks {
            if keep_hidden {
                hidden_states.push(h.f_to_kind(Kind::Float)?);
            }
            h = fp16_clamp(h.f_add(&self.attention(block, &block.attn_norm.forward(&h)?, &position_bias)?)?)?;
            h = fp16_clamp(h.f_add(&self.dense(block, &block.ff_norm.forward(&h)?)?)?)?;
        }
        if keep_hidden {
            hidden_states.push(h.f_to_kind(Kind::Float)?);
        }
        let last_hidden_state = self.final_layer_norm.forward(&h)?.f_to_kind(Kind::Float)?;
        Ok(T5Output { last_hidden_state, hidden_states })
    }

    /// The relative position bias all blocks add to their attention scores.
    /// # Shapes
    /// `[1, heads, L, L]`
    fn position_bias(&self, l: i64) -> Result<Tensor> {
        let positions = Tensor::f_arange(l, (Kind::Int64, self.relative_attention_bias.device()))?;
        // memory position − query position, `[L, L]`
        let relative = positions.f_unsqueeze(0)?.f_sub(&positions.f_unsqueeze(1)?)?;
        let buckets = relative_position_bucket(
            &relative,
            self.config.relative_attention_num_buckets,
            self.config.relative_attention_max_distance,
        )?;
        let values = Tensor::f_embedding(&self.relative_attention_bias, &buckets, -1, false, false)?;
        Ok(values.f_permute([2, 0, 1])?.f_unsqueeze(0)?)
    }

    /// Self-attention with the position bias as an additive mask and no scaling of the scores (T5 folds it into
    /// the initialisation of `q`).
    fn attention(&self, block: &T5Block, x: &Tensor, position_bias: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.size3()?;
        let (heads, d_kv) = (self.config.num_heads, self.config.d_kv);
        let split = |t: Tensor| -> Result<Tensor> { Ok(t.f_view([b, l, heads, d_kv])?.f_transpose(1, 2)?) };
        let q = split(block.q.forward(x)?)?;
        let k = split(block.k.forward(x)?)?;
        let v = split(block.v.forward(x)?)?;
        let out = Tensor::f_scaled_dot_product_attention(&q, &k, &v, Some(position_bias), 0.0, false, 1.0, false)?;
        block.o.forward(&out.f_transpose(1, 2)?.f_reshape([b, l, heads * d_kv])?)
    }

    /// `DenseReluDense`: the input of `wo` is cast to `wo`'s dtype (float32 in an fp16 model).
    fn dense(&self, block: &T5Block, x: &Tensor) -> Result<Tensor> {
        let mut h = activate(self.feed_forward.activation, &block.wi.forward(x)?)?;
        if let Some(gate) = &block.wi_gate {
            h = h.f_mul(&gate.forward(x)?)?;
        }
        block.wo.forward(&h.f_to_kind(block.wo.weight.kind())?)
    }
}

fn activate(activation: T5Activation, x: &Tensor) -> Result<Tensor> {
    Ok(match activation {
        T5Activation::Relu => x.f_relu()?,
        T5Activation::Gelu => x.f_gelu("none")?,
        T5Activation::GeluPytorchTanh => x.f_gelu("tanh")?,
        // transformers' NewGELUActivation, operation by operation, so that half-precision rounding matches:
        // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
        T5Activation::GeluNew => {
            let inner = x.f_add(&x.f_pow_tensor_scalar(3.0)?.f_mul_scalar(0.044715)?)?;
            let tanh = inner.f_mul_scalar((2.0 / std::f64::consts::PI).sqrt())?.f_tanh()?;
            x.f_mul_scalar(0.5)?.f_mul(&tanh.f_add_scalar(1.0)?)?
        }
        T5Activation::Silu => x.f_silu()?,
    })
}

/// transformers' guard against fp16 overflow in `T5Block`: float16 hidden states are clamped to the largest
/// finite value, or to 1000 below it once any value is infinite. Other dtypes pass through.
fn fp16_clamp(h: Tensor) -> Result<Tensor> {
    if h.kind() != Kind::Half {
        return Ok(h);
    }
    const F16_MAX: f64 = 65504.0;
    let limit = if h.f_isinf()?.f_any()?.int64_value(&[]) != 0 { F16_MAX - 1000.0 } else { F16_MAX };
    Ok(h.f_clamp(-limit, limit)?)
}

/// transformers' `T5Attention._relative_position_bucket` for the bidirectional encoder: half of the buckets per
/// direction; within one, distances below a quarter of the buckets get a bucket each, larger ones share
/// log-spaced buckets up to `max_distance`. The float math (float32 log and truncation) is transformers'.
/// # Shapes
/// `relative: [..]` (int64) → the same
fn relative_position_bucket(relative: &Tensor, num_buckets: i64, max_distance: i64) -> Result<Tensor> {
    let half = num_buckets / 2;
    let max_exact = half / 2;
    let direction = relative.f_gt(0)?.f_to_kind(Kind::Int64)?.f_mul_scalar(half)?;
    let distance = relative.f_abs()?;
    let is_small = distance.f_lt(max_exact)?;
    let large = distance
        .f_to_kind(Kind::Float)?
        .f_div_scalar(max_exact)?
        .f_log()?
        .f_div_scalar((max_distance as f64 / max_exact as f64).ln())?
        .f_mul_scalar(half - max_exact)?
        .f_to_kind(Kind::Int64)?
        .f_add_scalar(max_exact)?
        .f_clamp_max(half - 1)?;
    Ok(direction.f_add(&distance.f_where_self(&is_small, &large)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets of transformers 5.23's `T5Attention._relative_position_bucket(r, True, 32, 128)` (and with 8 buckets
    /// up to 20), at the distances where the buckets change.
    #[test]
    fn buckets_match_transformers() {
        let r = [-200i64, -91, -90, -64, -63, -8, -7, -1, 0, 1, 7, 8, 11, 12, 63, 64, 90, 91, 200];
        let buckets = |n, d| Vec::<i64>::try_from(relative_position_bucket(&Tensor::from_slice(&r), n, d).unwrap());
        assert_eq!(buckets(32, 128).unwrap(), [15, 15, 14, 14, 13, 8, 7, 1, 0, 17, 23, 24, 24, 25, 29, 30, 30, 31, 31]);
        assert_eq!(buckets(8, 20).unwrap(), [3, 3, 3, 3, 3, 3, 3, 1, 0, 5, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
    }
}
