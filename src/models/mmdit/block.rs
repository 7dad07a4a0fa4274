//! diffusers' `JointTransformerBlock`: the image and the text stream each get an adaptive norm, attend jointly,
//! and each get a gated feed-forward (the text stream not in the last block, `context_pre_only`).

use super::attention::{JointAttention, JointAttentionSpec};
use super::grid::Grid;
use super::norms::{plain_layer_norm, AdaLayerNormContinuous, AdaLayerNormZero, Stream};
use crate::error::Result;
use crate::nn::Linear;
use crate::taps::{Node, Taps};
use tch::Tensor;

/// `net[2](gelu_tanh(net[0].proj(x)))` (`activation_fn="gelu-approximate"`, 4× width).
#[derive(Debug)]
pub struct FeedForward {
    path: String,
    act: String,
    proj: (String, Linear),
    dropout: String,
    out: (String, Linear),
}

impl FeedForward {
    pub fn load(node: &Node, dim: i64) -> Result<Self> {
        let path = node.register_with_input();
        let act_node = node.item("net", 0);
        let act = act_node.register();
        let proj = act_node.child("proj");
        let proj = (proj.register(), Linear::load(&proj.vb, dim, 4 * dim, true)?);
        let dropout = node.item("net", 1).register();
        let out = node.item("net", 2);
        Ok(Self { path, act, proj, dropout, out: (out.register(), Linear::load(&out.vb, 4 * dim, dim, true)?) })
    }

    pub fn forward(&self, x: &Tensor, stream: Stream, taps: &mut Taps) -> Result<Tensor> {
        stream.enter(taps, &self.path, x)?;
        let h = stream.visit(taps, &self.proj.0, self.proj.1.forward(x)?)?;
        let h = stream.visit(taps, &self.act, h.f_gelu("tanh")?)?;
        let h = stream.visit(taps, &self.dropout, h)?;
        let h = stream.visit(taps, &self.out.0, self.out.1.forward(&h)?)?;
        stream.visit(taps, &self.path, h)
    }
}

/// The text-stream norm: `AdaLayerNormZero`, or `AdaLayerNormContinuous` in the last block.
#[derive(Debug)]
enum ContextNorm {
    Zero(AdaLayerNormZero),
    Continuous(AdaLayerNormContinuous),
}

/// The text stream's second half (absent in the last block).
#[derive(Debug)]
struct ContextFeedForward {
    norm2: String,
    ff: FeedForward,
}

#[derive(Debug)]
pub struct JointTransformerBlock {
    pub path: String,
    text_path: String,
    norm1: AdaLayerNormZero,
    norm1_context: ContextNorm,
    attn: JointAttention,
    attn2: Option<JointAttention>,
    norm2: String,
    ff: FeedForward,
    context_ff: Option<ContextFeedForward>,
    dim: i64,
}

pub struct BlockSpec<'a> {
    pub dim: i64,
    pub heads: i64,
    pub head_dim: i64,
    pub qk_norm: Option<&'a str>,
    pub context_pre_only: bool,
    pub dual_attention: bool,
}

impl JointTransformerBlock {
    pub fn load(node: &Node, spec: &BlockSpec) -> Result<Self> {
        let path = node.register_with_input();
        let dim = spec.dim;
        let norm1 = AdaLayerNormZero::load(&node.child("norm1"), dim, spec.dual_attention)?;
        let norm1_context = if spec.context_pre_only {
            ContextNorm::Continuous(AdaLayerNormContinuous::load(&node.child("norm1_context"), dim)?)
        } else {
            ContextNorm::Zero(AdaLayerNormZero::load(&node.child("norm1_context"), dim, false)?)
        };
        let attention = |joint: bool| JointAttentionSpec {
            dim,
            heads: spec.heads,
            head_dim: spec.head_dim,
            qk_norm: spec.qk_norm,
            joint,
            context_pre_only: spec.context_pre_only,
        };
        let attn = JointAttention::load(&node.child("attn"), &attention(true))?;
        let attn2 = if spec.dual_attention {
            Some(JointAttention::load(&node.child("attn2"), &attention(false))?)
        } else {
            None
        };
        let norm2 = node.child("norm2").register();
        let ff = FeedForward::load(&node.child("ff"), dim)?;
        let context_ff = if spec.context_pre_only {
            None
        } else {
            let norm2 = node.child("norm2_context").register();
            Some(ContextFeedForward { norm2, ff: FeedForward::load(&node.child("ff_context"), dim)? })
        };
        // The text stream of the block's output, `transformer_blocks[i]@text` (none in the last block).
        let text_path =
            if spec.context_pre_only { String::new() } else { node.register_output(crate::taps::TEXT_SUFFIX) };
        Ok(Self { path, text_path, norm1, norm1_context, attn, attn2, norm2, ff, context_ff, dim })
    }

    /// Returns the new image and text streams (text `None` after the last block).
    /// # Shapes
    /// `image: [B, N, dim]`, `text: [B, S, dim]`, `temb: [B, dim]`
    pub fn forward(
        &self,
        image: &Tensor,
        text: &Tensor,
        temb: &Tensor,
        grid: Grid,
        taps: &mut Taps,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let img = Stream::Image(grid);
        grid.enter(taps, &self.path, image)?;
        let n1 = self.norm1.forward(image, temb, img, taps)?;
        let (normed_text, text_mod) = match &self.norm1_context {
            ContextNorm::Zero(norm) => {
                let out = norm.forward(text, temb, Stream::Text, taps)?;
                (out.x.shallow_clone(), Some(out))
            }
            ContextNorm::Continuous(norm) => (norm.forward(text, temb, Stream::Text, taps)?, None),
        };
        let (attn_image, attn_text) = self.attn.forward(&n1.x, Some(&normed_text), grid, taps)?;
        let mut h = image.f_add(&attn_image.f_mul(&n1.gate_msa.f_unsqueeze(1)?)?)?;
        if let (Some(attn2), Some((x2, gate2))) = (&self.attn2, &n1.second) {
            let (out2, _) = attn2.forward(x2, None, grid, taps)?;
            h = h.f_add(&out2.f_mul(&gate2.f_unsqueeze(1)?)?)?;
        }
        let normed = img.visit(taps, &self.norm2, plain_layer_norm(&h, self.dim)?)?;
        let modulated =
            normed.f_mul(&n1.scale_mlp.f_add_scalar(1.0)?.f_unsqueeze(1)?)?.f_add(&n1.shift_mlp.f_unsqueeze(1)?)?;
        let ff = self.ff.forward(&modulated, img, taps)?;
        let h = h.f_add(&ff.f_mul(&n1.gate_mlp.f_unsqueeze(1)?)?)?;

        let text_out = match (&self.context_ff, text_mod, attn_text) {
            (Some(cff), Some(m), Some(attn_text)) => {
                let t = text.f_add(&attn_text.f_mul(&m.gate_msa.f_unsqueeze(1)?)?)?;
                let normed = taps.visit(&cff.norm2, plain_layer_norm(&t, self.dim)?)?;
                let modulated = normed
                    .f_mul(&m.scale_mlp.f_add_scalar(1.0)?.f_unsqueeze(1)?)?
                    .f_add(&m.shift_mlp.f_unsqueeze(1)?)?;
                let ff = cff.ff.forward(&modulated, Stream::Text, taps)?;
                let t = t.f_add(&m.gate_mlp.f_unsqueeze(1)?.f_mul(&ff)?)?;
                Some(taps.visit(&self.text_path, t)?)
            }
            _ => None,
        };
        let h = grid.visit(taps, &self.path, h)?;
        Ok((h, text_out))
    }
}
