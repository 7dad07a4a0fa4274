//! Sinusoidal timestep features and the MLP that embeds them (diffusers' `Timesteps`, `TimestepEmbedding`).

use crate::error::Result;
use crate::nn::Linear;
use crate::taps::{Node, Taps};
use tch::{Kind, Tensor};

/// Sinusoidal features of a (float) timestep.
/// # Shapes
/// `[B]` → `[B, dim]` (float32)
pub fn timestep_features(t: &Tensor, dim: i64, flip_sin_to_cos: bool, freq_shift: f64) -> Result<Tensor> {
    let half = dim / 2;
    let exponent = Tensor::f_arange(half, (Kind::Float, t.device()))?
        .f_mul_scalar(-(10000f64).ln())?
        .f_div_scalar(half as f64 - freq_shift)?;
    let freqs = exponent.f_exp()?;
    let args = t.f_to_kind(Kind::Float)?.f_unsqueeze(1)?.f_mul(&freqs.f_unsqueeze(0)?)?;
    let (sin, cos) = (args.f_sin()?, args.f_cos()?);
    let emb = if flip_sin_to_cos { Tensor::f_cat(&[cos, sin], -1)? } else { Tensor::f_cat(&[sin, cos], -1)? };
    Ok(if dim % 2 == 1 { emb.f_constant_pad_nd([0, 1])? } else { emb })
}

/// `linear_2(silu(linear_1(x)))`.
#[derive(Debug)]
pub struct TimestepEmbedding {
    path: String,
    linear_1: (String, Linear),
    act: String,
    linear_2: (String, Linear),
}

impl TimestepEmbedding {
    pub fn load(node: &Node, in_dim: i64, dim: i64) -> Result<Self> {
        let path = node.register();
        let l1 = node.child("linear_1");
        let l2 = node.child("linear_2");
        Ok(Self {
            path,
            linear_1: (l1.register(), Linear::load(&l1.vb, in_dim, dim, true)?),
            act: node.child("act").register(),
            linear_2: (l2.register(), Linear::load(&l2.vb, dim, dim, true)?),
        })
    }

    /// # Shapes
    /// `[B, in_dim]` → `[B, dim]`
    pub fn forward(&self, x: &Tensor, taps: &mut Taps) -> Result<Tensor> {
        let h = taps.visit(&self.linear_1.0, self.linear_1.1.forward(x)?)?;
        let h = taps.visit(&self.act, h.f_silu()?)?;
        let h = taps.visit(&self.linear_2.0, self.linear_2.1.forward(&h)?)?;
        taps.visit(&self.path, h)
    }
}
