//! diffusers' `Attention`: multi-head attention with separate q/k/v projections, used as self- and
//! cross-attention in transformer blocks and (with a group norm and a residual) in the VAE's middle block.

use crate::error::Result;
use crate::nn::{GroupNorm, Linear};
use crate::taps::{Node, Taps};
use tch::Tensor;

#[derive(Debug)]
pub struct Attention {
    pub path: String,
    to_q: (String, Linear),
    to_k: (String, Linear),
    to_v: (String, Linear),
    to_out: (String, Linear),
    heads: i64,
    head_dim: i64,
    /// VAE-style spatial attention: group norm in front, residual connection, 4-D input.
    spatial_norm: Option<GroupNorm>,
}

/// How an attention layer is wired.
pub struct AttentionSpec {
    pub query_dim: i64,
    pub context_dim: Option<i64>,
    pub heads: i64,
    pub head_dim: i64,
    pub qkv_bias: bool,
    /// `(groups, eps)` for VAE-style attention with group norm and residual.
    pub spatial_norm: Option<(i64, f64)>,
}

impl Attention {
    pub fn load(node: &Node, spec: AttentionSpec) -> Result<Self> {
        let path = node.register_with_input();
        let inner = spec.heads * spec.head_dim;
        let context_dim = spec.context_dim.unwrap_or(spec.query_dim);
        let proj = |name: &str, in_dim: i64, out_dim: i64, bias: bool| -> Result<(String, Linear)> {
            let child = node.child(name);
            Ok((child.register(), Linear::load(&child.vb, in_dim, out_dim, bias)?))
        };
        let to_q = proj("to_q", spec.query_dim, inner, spec.qkv_bias)?;
        let to_k = proj("to_k", context_dim, inner, spec.qkv_bias)?;
        let to_v = proj("to_v", context_dim, inner, spec.qkv_bias)?;
        let out_node = node.item("to_out", 0);
        let to_out = (out_node.register(), Linear::load(&out_node.vb, inner, spec.query_dim, true)?);
        let spatial_norm = match spec.spatial_norm {
            Some((groups, eps)) => Some(GroupNorm::load(&node.vb.pp("group_norm"), groups, spec.query_dim, eps)?),
            None => None,
        };
        Ok(Self { path, to_q, to_k, to_v, to_out, heads: spec.heads, head_dim: spec.head_dim, spatial_norm })
    }

    fn project(&self, (path, layer): &(String, Linear), x: &Tensor, taps: &mut Taps) -> Result<Tensor> {
        taps.visit(path, layer.forward(x)?)
    }

    /// Split `[B, L, heads·d]` into `[B, heads, L, d]`.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l) = (x.size()[0], x.size()[1]);
        Ok(x.f_view([b, l, self.heads, self.head_dim])?.f_transpose(1, 2)?)
    }

    /// `softmax(q·kᵀ/√d)` computed explicitly in float32 (the forward pass itself uses fused attention, so
    /// recording changes nothing downstream).
    /// # Shapes
    /// `q: [B, heads, L, d]`, `k: [B, heads, S, d]` → `[B, heads, L, S]`, or `[B, 1, L, S]` averaged over heads
    fn probabilities(&self, q: &Tensor, k: &Tensor, per_head: bool) -> Result<Tensor> {
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let q = q.f_to_kind(tch::Kind::Float)?;
        let k = k.f_to_kind(tch::Kind::Float)?;
        let scores = q.f_matmul(&k.f_transpose(-1, -2)?)?.f_mul_scalar(scale)?;
        let probs = scores.f_softmax(-1, tch::Kind::Float)?;
        Ok(if per_head { probs } else { probs.f_mean_dim(1, true, tch::Kind::Float)? })
    }

    /// # Shapes
    /// tokens `[B, L, query_dim]` (or `[B, C, H, W]` for VAE-style attention), context `[B, S, context_dim]`
    /// → same shape as the input.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>, taps: &mut Taps) -> Result<Tensor> {
        taps.enter(&self.path, x);
        let spatial = x.dim() == 4;
        let size = x.size();
        let tokens = match &self.spatial_norm {
            Some(norm) => norm.forward(x)?,
            None => x.shallow_clone(),
        };
        let tokens = if spatial { tokens.f_flatten(2, 3)?.f_transpose(1, 2)? } else { tokens };
        let is_cross = context.is_some();
        let context = context.unwrap_or(&tokens);
        let q = self.split_heads(&self.project(&self.to_q, &tokens, taps)?)?;
        let k = self.split_heads(&self.project(&self.to_k, context, taps)?)?;
        let v = self.split_heads(&self.project(&self.to_v, context, taps)?)?;
        if let Some(per_head) = taps.wants_attention(&self.path, is_cross) {
            taps.store_attention(&self.path, self.probabilities(&q, &k, per_head)?);
        }
        let attended = Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false)?;
        let (b, l) = (tokens.size()[0], tokens.size()[1]);
        let merged = attended.f_transpose(1, 2)?.f_reshape([b, l, self.heads * self.head_dim])?;
        let mut out = self.project(&self.to_out, &merged, taps)?;
        if spatial {
            out = out.f_transpose(1, 2)?.f_reshape(&size)?;
        }
        if self.spatial_norm.is_some() {
            out = out.f_add(x)?;
        }
        taps.visit(&self.path, out)
    }
}
