//! The encoder half of diffusers' `AutoencoderKL`: image → diagonal Gaussian over latents.

use crate::config::{check_dims, VaeConfig};
use crate::error::{Error, Result};
use crate::nn::attention::AttentionSpec;
use crate::nn::resnet::ResnetSpec;
use crate::nn::{Attention, Conv2d, GroupNorm, ResnetBlock2D};
use crate::taps::{Node, Registry, Taps};
use crate::weights::Weights;
use std::cell::RefCell;
use std::path::Path;
use tch::Tensor;

pub(crate) const EPS: f64 = 1e-6;

struct EncoderBlock {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Conv2d>,
}

/// The posterior `q(z | x)`.
/// # Shapes
/// `mean`, `std`: `[B, latent_channels, H/f, W/f]`
pub struct LatentDistribution {
    pub mean: Tensor,
    pub std: Tensor,
}

impl LatentDistribution {
    /// Another handle on the same tensors.
    pub fn shallow_clone(&self) -> Self {
        Self { mean: self.mean.shallow_clone(), std: self.std.shallow_clone() }
    }

    /// `mean + std · ε` with ε drawn from the global generator (diffusers' `latent_dist.sample()`).
    pub fn sample(&self) -> Result<Tensor> {
        // Drawn on the CPU generator, so a seed gives the same sample on every device.
        let eps =
            Tensor::f_randn(self.mean.size(), (self.mean.kind(), tch::Device::Cpu))?.f_to_device(self.mean.device())?;
        Ok(self.mean.f_add(&self.std.f_mul(&eps)?)?)
    }
}

/// The VAE's middle block (shared by encoder and decoder): resnet, single-head spatial attention, resnet.
pub(crate) struct VaeMidBlock {
    resnets: [ResnetBlock2D; 2],
    attention: Option<Attention>,
}

impl VaeMidBlock {
    pub(crate) fn load(node: &Node, channels: i64, groups: i64, add_attention: bool) -> Result<Self> {
        let spec = ResnetSpec { in_channels: channels, out_channels: channels, temb_channels: None, groups, eps: EPS };
        let resnets = [
            ResnetBlock2D::load(&node.item("resnets", 0), &spec)?,
            ResnetBlock2D::load(&node.item("resnets", 1), &spec)?,
        ];
        let attention = if add_attention {
            let spec = AttentionSpec {
                query_dim: channels,
                context_dim: None,
                heads: 1,
                head_dim: channels,
                qkv_bias: true,
                spatial_norm: Some((groups, EPS)),
            };
            Some(Attention::load(&node.item("attentions", 0), spec)?)
        } else {
            None
        };
        Ok(Self { resnets, attention })
    }

    /// # Shapes
    /// `[B, C, h, w]` → `[B, C, h, w]`
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut taps = Taps::none();
        let mut h = self.resnets[0].forward(x, None, &mut taps)?;
        if let Some(attn) = &self.attention {
            h = attn.forward(&h, None, &mut taps)?;
        }
        self.resnets[1].forward(&h, None, &mut taps)
    }
}

pub struct VaeEncoder {
    pub config: VaeConfig,
    conv_in: Conv2d,
    blocks: Vec<EncoderBlock>,
    mid: VaeMidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
}

/// Refuse zero, negative or absurd sizes before building anything from them.
pub(crate) fn check_vae_dims(config: &VaeConfig, path: &Path) -> Result<()> {
    check_dims(
        path,
        1,
        [
            ("in_channels", config.in_channels),
            ("latent_channels", config.latent_channels),
            ("layers_per_block", config.layers_per_block),
            ("norm_num_groups", config.norm_num_groups),
        ]
        .into_iter()
        .chain(config.block_out_channels.iter().map(|&c| ("block_out_channels", c))),
    )
}

impl VaeEncoder {
    pub fn load(config: VaeConfig, config_path: &Path, weights: &Weights) -> Result<Self> {
        let channels = &config.block_out_channels;
        if channels.is_empty() {
            return Err(Error::BadConfig { path: config_path.into(), why: "block_out_channels is empty".into() });
        }
        check_vae_dims(&config, config_path)?;
        let registry = RefCell::new(Registry::default());
        let enc = Node::root(weights.root(), &registry).child("encoder");
        let groups = config.norm_num_groups;
        let conv_in = Conv2d::load(&enc.vb.pp("conv_in"), config.in_channels, channels[0], 3, 1, 1)?;
        let mut blocks = Vec::new();
        let mut out_ch = channels[0];
        for (i, &ch) in channels.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = ch;
            let node = enc.item("down_blocks", i);
            let resnets = (0..config.layers_per_block as usize)
                .map(|j| {
                    let spec = ResnetSpec {
                        in_channels: if j == 0 { in_ch } else { out_ch },
                        out_channels: out_ch,
                        temb_channels: None,
                        groups,
                        eps: EPS,
                    };
                    ResnetBlock2D::load(&node.item("resnets", j), &spec)
                })
                .collect::<Result<Vec<_>>>()?;
            let downsampler = if i + 1 < channels.len() {
                Some(Conv2d::load(&node.vb.pp("downsamplers").pp(0).pp("conv"), out_ch, out_ch, 3, 2, 0)?)
            } else {
                None
            };
            blocks.push(EncoderBlock { resnets, downsampler });
        }
        let top = *channels.last().unwrap_or(&channels[0]);
        let mid = VaeMidBlock::load(&enc.child("mid_block"), top, groups, config.mid_block_add_attention)?;
        let conv_norm_out = GroupNorm::load(&enc.vb.pp("conv_norm_out"), groups, top, EPS)?;
        let lc = config.latent_channels;
        let conv_out = Conv2d::load(&enc.vb.pp("conv_out"), top, 2 * lc, 3, 1, 1)?;
        let quant_conv = if config.use_quant_conv {
            Some(Conv2d::load(&weights.root().pp("quant_conv"), 2 * lc, 2 * lc, 1, 1, 0)?)
        } else {
            None
        };
        Ok(Self { config, conv_in, blocks, mid, conv_norm_out, conv_out, quant_conv })
    }

    /// Spatial downsampling factor (8 for every released SD VAE).
    pub fn scale_factor(&self) -> i64 {
        1 << (self.config.block_out_channels.len() - 1)
    }

    /// # Shapes
    /// `image: [B, 3, H, W]` in [-1, 1] → distribution over `[B, latent_channels, H/f, W/f]`
    pub fn encode(&self, image: &Tensor) -> Result<LatentDistribution> {
        let mut taps = Taps::none();
        let mut h = self.conv_in.forward(image)?;
        for block in &self.blocks {
            for resnet in &block.resnets {
                h = resnet.forward(&h, None, &mut taps)?;
            }
            if let Some(down) = &block.downsampler {
                // diffusers pads right and bottom by one before the stride-2 convolution.
                h = down.forward(&h.f_constant_pad_nd([0, 1, 0, 1])?)?;
            }
        }
        h = self.mid.forward(&h)?;
        h = self.conv_out.forward(&self.conv_norm_out.forward(&h)?.f_silu()?)?;
        if let Some(q) = &self.quant_conv {
            h = q.forward(&h)?;
        }
        let parts = h.f_chunk(2, 1)?;
        let logvar = parts[1].f_clamp(-30.0, 20.0)?;
        let std = logvar.f_mul_scalar(0.5)?.f_exp()?;
        Ok(LatentDistribution { mean: parts[0].shallow_clone(), std })
    }
}
