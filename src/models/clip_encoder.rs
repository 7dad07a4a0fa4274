//! The transformer encoder CLIP's text and vision towers share: pre-norm layers of self-attention and an MLP.

use crate::error::{Error, Result};
use crate::nn::{LayerNorm, Linear};
use crate::weights::VarBuilder;
use std::path::Path;
use tch::Tensor;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Activation {
    QuickGelu,
    Gelu,
}

impl Activation {
    pub(crate) fn parse(name: &str, config_path: &Path) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(Error::Unsupported {
                path: config_path.into(),
                why: format!("hidden_act {other:?} (known: quick_gelu, gelu)"),
            }),
        }
    }

    fn apply(self, h: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::QuickGelu => h.f_mul(&h.f_mul_scalar(1.702)?.f_sigmoid()?)?,
            Activation::Gelu => h.f_gelu("none")?,
        })
    }
}

struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// Widths and depth of an encoder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncoderShape {
    pub hidden: i64,
    pub intermediate: i64,
    pub layers: i64,
    pub heads: i64,
    pub eps: f64,
}

pub(crate) struct ClipEncoder {
    layers: Vec<EncoderLayer>,
    heads: i64,
    activation: Activation,
}

/// What the encoder gives back: the last layer's output and the input of the last layer (`hidden_states[-2]`).
pub(crate) struct EncoderOutput {
    pub last: Tensor,
    pub penultimate: Tensor,
}

impl ClipEncoder {
    /// `vb` points at the encoder (`text_model.encoder`, `vision_model.encoder`).
    pub(crate) fn load(vb: &VarBuilder, shape: EncoderShape, activation: Activation) -> Result<Self> {
        let d = shape.hidden;
        let layers = (0..shape.layers)
            .map(|i| {
                let l = vb.pp("layers").pp(i);
                let attn = l.pp("self_attn");
                let lin = |vb: VarBuilder, i, o| Linear::load(&vb, i, o, true);
                Ok(EncoderLayer {
                    layer_norm1: LayerNorm::load(&l.pp("layer_norm1"), d, shape.eps)?,
                    q_proj: lin(attn.pp("q_proj"), d, d)?,
                    k_proj: lin(attn.pp("k_proj"), d, d)?,
                    v_proj: lin(attn.pp("v_proj"), d, d)?,
                    out_proj: lin(attn.pp("out_proj"), d, d)?,
                    layer_norm2: LayerNorm::load(&l.pp("layer_norm2"), d, shape.eps)?,
                    fc1: lin(l.pp("mlp").pp("fc1"), d, shape.intermediate)?,
                    fc2: lin(l.pp("mlp").pp("fc2"), shape.intermediate, d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, heads: shape.heads, activation })
    }

    fn attention(&self, layer: &EncoderLayer, x: &Tensor, causal: bool) -> Result<Tensor> {
        let (b, l, d) = x.size3()?;
        let heads = self.heads;
        let split = |t: Tensor| -> Result<Tensor> { Ok(t.f_view([b, l, heads, d / heads])?.f_transpose(1, 2)?) };
        let q = split(layer.q_proj.forward(x)?)?;
        let k = split(layer.k_proj.forward(x)?)?;
        let v = split(layer.v_proj.forward(x)?)?;
        let out = Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, causal, None, false)?;
        layer.out_proj.forward(&out.f_transpose(1, 2)?.f_reshape([b, l, d])?)
    }

    /// # Shapes
    /// `h: [B, L, hidden]` → the same.
    pub(crate) fn forward(&self, h: &Tensor, causal: bool) -> Result<EncoderOutput> {
        let mut h = h.shallow_clone();
        let mut penultimate = h.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            if i + 1 == self.layers.len() {
                penultimate = h.shallow_clone();
            }
            let a = self.attention(layer, &layer.layer_norm1.forward(&h)?, causal)?;
            h = h.f_add(&a)?;
            let m = layer.fc2.forward(&self.activation.apply(&layer.fc1.forward(&layer.layer_norm2.forward(&h)?)?)?)?;
            h = h.f_add(&m)?;
        }
        Ok(EncoderOutput { last: h, penultimate })
    }
}
