//! Plain layers over weights read from safetensors: no VarStore, no autograd.

use crate::error::Result;
use crate::weights::VarBuilder;
use tch::Tensor;

/// `y = x·Wᵀ + b`.
/// # Shapes
/// `[.., in]` → `[.., out]`
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn load(vb: &VarBuilder, in_dim: i64, out_dim: i64, bias: bool) -> Result<Self> {
        let weight = vb.get("weight", &[out_dim, in_dim])?;
        let bias = if bias { Some(vb.get("bias", &[out_dim])?) } else { vb.get_opt("bias", &[out_dim])? };
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_linear(&self.weight, self.bias.as_ref())?)
    }
}

/// 2-D convolution with square kernel.
/// # Shapes
/// `[B, in, H, W]` → `[B, out, H', W']`
#[derive(Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    pub fn load(vb: &VarBuilder, in_ch: i64, out_ch: i64, kernel: i64, stride: i64, padding: i64) -> Result<Self> {
        let weight = vb.get("weight", &[out_ch, in_ch, kernel, kernel])?;
        let bias = vb.get_opt("bias", &[out_ch])?;
        Ok(Self { weight, bias, stride, padding })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_conv2d(&self.weight, self.bias.as_ref(), [self.stride], [self.padding], [1], 1)?)
    }
}

/// Group normalisation over `[B, C, ...]`.
#[derive(Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: i64,
    eps: f64,
}

impl GroupNorm {
    pub fn load(vb: &VarBuilder, groups: i64, channels: i64, eps: f64) -> Result<Self> {
        crate::nn::check_groups(vb, groups, channels)?;
        Ok(Self { weight: vb.get("weight", &[channels])?, bias: vb.get("bias", &[channels])?, groups, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_group_norm(self.groups, Some(&self.weight), Some(&self.bias), self.eps, false)?)
    }
}

/// Layer normalisation over the last dimension.
#[derive(Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    dim: i64,
    eps: f64,
}

impl LayerNorm {
    pub fn load(vb: &VarBuilder, dim: i64, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.get("weight", &[dim])?, bias: vb.get("bias", &[dim])?, dim, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_layer_norm([self.dim], Some(&self.weight), Some(&self.bias), self.eps, true)?)
    }
}
