//! The adaptive layer norms of an MMDiT: the timestep + pooled-text embedding sets shift, scale and gates.

use super::grid::Grid;
use crate::error::Result;
use crate::nn::Linear;
use crate::taps::{Node, Taps};
use tch::Tensor;

/// Which stream a module works on: image tokens are shown to taps as a grid, text tokens as they are.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Image(Grid),
    Text,
}

impl Stream {
    pub fn visit(&self, taps: &mut Taps, path: &str, x: Tensor) -> Result<Tensor> {
        match self {
            Stream::Image(grid) => grid.visit(taps, path, x),
            Stream::Text => taps.visit(path, x),
        }
    }

    pub fn enter(&self, taps: &mut Taps, path: &str, x: &Tensor) -> Result<()> {
        match self {
            Stream::Image(grid) => grid.enter(taps, path, x),
            Stream::Text => {
                taps.enter(path, x);
                Ok(())
            }
        }
    }
}

/// `LayerNorm(elementwise_affine=False, eps=1e-6)`.
pub fn plain_layer_norm(x: &Tensor, dim: i64) -> Result<Tensor> {
    Ok(x.f_layer_norm([dim], None::<&Tensor>, None::<&Tensor>, 1e-6, true)?)
}

/// `linear(silu(emb))` split into `chunks` vectors of width `dim`, with positions `silu` and `linear`.
#[derive(Debug)]
struct Modulation {
    silu: String,
    linear: (String, Linear),
    chunks: i64,
}

impl Modulation {
    fn load(node: &Node, dim: i64, chunks: i64) -> Result<Self> {
        let silu = node.child("silu").register();
        let l = node.child("linear");
        Ok(Self { silu, linear: (l.register(), Linear::load(&l.vb, dim, chunks * dim, true)?), chunks })
    }

    fn forward(&self, emb: &Tensor, taps: &mut Taps) -> Result<Vec<Tensor>> {
        let act = taps.visit(&self.silu, emb.f_silu()?)?;
        let params = taps.visit(&self.linear.0, self.linear.1.forward(&act)?)?;
        Ok(params.f_chunk(self.chunks, 1)?)
    }
}

/// `x · (1 + scale) + shift`, per batch row.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    Ok(x.f_mul(&scale.f_add_scalar(1.0)?.f_unsqueeze(1)?)?.f_add(&shift.f_unsqueeze(1)?)?)
}

/// What `AdaLayerNormZero` (and SD3.5's `SD35AdaLayerNormZeroX`) hand to the rest of the block.
pub struct ZeroOut {
    pub x: Tensor,
    pub gate_msa: Tensor,
    pub shift_mlp: Tensor,
    pub scale_mlp: Tensor,
    pub gate_mlp: Tensor,
    /// SD3.5 dual attention: the input of `attn2` and its gate.
    pub second: Option<(Tensor, Tensor)>,
}

/// diffusers' `AdaLayerNormZero` (6 modulation vectors) or `SD35AdaLayerNormZeroX` (9, `dual`).
#[derive(Debug)]
pub struct AdaLayerNormZero {
    path: String,
    norm_path: String,
    modulation: Modulation,
    dim: i64,
    dual: bool,
}

impl AdaLayerNormZero {
    pub fn load(node: &Node, dim: i64, dual: bool) -> Result<Self> {
        let path = node.register();
        let modulation = Modulation::load(node, dim, if dual { 9 } else { 6 })?;
        let norm_path = node.child("norm").register();
        Ok(Self { path, norm_path, modulation, dim, dual })
    }

    /// # Shapes
    /// `x: [B, L, dim]`, `emb: [B, dim]`
    pub fn forward(&self, x: &Tensor, emb: &Tensor, stream: Stream, taps: &mut Taps) -> Result<ZeroOut> {
        let p = self.modulation.forward(emb, taps)?;
        let normed = stream.visit(taps, &self.norm_path, plain_layer_norm(x, self.dim)?)?;
        let out = stream.visit(taps, &self.path, modulate(&normed, &p[0], &p[1])?)?;
        let second = if self.dual { Some((modulate(&normed, &p[6], &p[7])?, p[8].shallow_clone())) } else { None };
        Ok(ZeroOut {
            x: out,
            gate_msa: p[2].shallow_clone(),
            shift_mlp: p[3].shallow_clone(),
            scale_mlp: p[4].shallow_clone(),
            gate_mlp: p[5].shallow_clone(),
            second,
        })
    }
}

/// diffusers' `AdaLayerNormContinuous` without affine weights: `norm(x) · (1 + scale) + shift`, where
/// `[scale, shift] = linear(silu(emb))` (scale first).
#[derive(Debug)]
pub struct AdaLayerNormContinuous {
    path: String,
    norm_path: String,
    modulation: Modulation,
    dim: i64,
}

impl AdaLayerNormContinuous {
    pub fn load(node: &Node, dim: i64) -> Result<Self> {
        let path = node.register();
        let modulation = Modulation::load(node, dim, 2)?;
        let norm_path = node.child("norm").register();
        Ok(Self { path, norm_path, modulation, dim })
    }

    pub fn forward(&self, x: &Tensor, emb: &Tensor, stream: Stream, taps: &mut Taps) -> Result<Tensor> {
        let p = self.modulation.forward(&emb.f_to_kind(x.kind())?, taps)?;
        let normed = stream.visit(taps, &self.norm_path, plain_layer_norm(x, self.dim)?)?;
        stream.visit(taps, &self.path, modulate(&normed, &p[1], &p[0])?)
    }
}
