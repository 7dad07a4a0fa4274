//! The decoder half of diffusers' `AutoencoderKL`: latents → image in [-1, 1].

use crate::config::VaeConfig;
use crate::error::{Error, Result};
use crate::models::vae::{VaeMidBlock, EPS};
use crate::nn::resnet::ResnetSpec;
use crate::nn::{Conv2d, GroupNorm, ResnetBlock2D};
use crate::taps::{Node, Registry, Taps};
use crate::weights::Weights;
use std::cell::RefCell;
use std::path::Path;
use tch::Tensor;

struct DecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    /// Nearest 2× upsampling followed by this convolution.
    upsampler: Option<Conv2d>,
}

pub struct VaeDecoder {
    pub config: VaeConfig,
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid: VaeMidBlock,
    blocks: Vec<DecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl VaeDecoder {
    pub fn load(config: VaeConfig, config_path: &Path, weights: &Weights) -> Result<Self> {
        let channels = &config.block_out_channels;
        let Some(&top) = channels.last() else {
            return Err(Error::BadConfig { path: config_path.into(), why: "block_out_channels is empty".into() });
        };
        super::vae::check_vae_dims(&config, config_path)?;
        let registry = RefCell::new(Registry::default());
        let dec = Node::root(weights.root(), &registry).child("decoder");
        let groups = config.norm_num_groups;
        let lc = config.latent_channels;
        let post_quant_conv = if config.use_quant_conv {
            Some(Conv2d::load(&weights.root().pp("post_quant_conv"), lc, lc, 1, 1, 0)?)
        } else {
            None
        };
        let conv_in = Conv2d::load(&dec.vb.pp("conv_in"), lc, top, 3, 1, 1)?;
        let mid = VaeMidBlock::load(&dec.child("mid_block"), top, groups, config.mid_block_add_attention)?;
        let mut blocks = Vec::new();
        let mut out_ch = top;
        for (i, &ch) in channels.iter().rev().enumerate() {
            let in_ch = out_ch;
            out_ch = ch;
            let node = dec.item("up_blocks", i);
            let resnets = (0..=config.layers_per_block as usize)
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
            let upsampler = if i + 1 < channels.len() {
                Some(Conv2d::load(&node.vb.pp("upsamplers").pp(0).pp("conv"), out_ch, out_ch, 3, 1, 1)?)
            } else {
                None
            };
            blocks.push(DecoderBlock { resnets, upsampler });
        }
        let conv_norm_out = GroupNorm::load(&dec.vb.pp("conv_norm_out"), groups, out_ch, EPS)?;
        let conv_out = Conv2d::load(&dec.vb.pp("conv_out"), out_ch, config.in_channels, 3, 1, 1)?;
        Ok(Self { config, post_quant_conv, conv_in, mid, blocks, conv_norm_out, conv_out })
    }

    /// Decode scaled latents (what the U-Net works on) as diffusers' pipelines do:
    /// `vae.decode(latents / scaling_factor + shift_factor)`.
    /// # Shapes
    /// `latents: [B, latent_channels, h, w]` → `[B, 3, h·f, w·f]` in about [-1, 1]
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let latent_channels = self.config.latent_channels;
        if latents.dim() != 4 || latents.size()[1] != latent_channels {
            return Err(Error::Shape {
                context: "VAE decode".into(),
                why: format!("latents have shape {:?}, expected [B, {latent_channels}, h, w]", latents.size()),
            });
        }
        let _guard = tch::no_grad_guard();
        let mut z = latents.f_div_scalar(self.config.scaling_factor)?;
        if let Some(shift) = self.config.shift_factor {
            z = z.f_add_scalar(shift)?;
        }
        if let Some(conv) = &self.post_quant_conv {
            z = conv.forward(&z)?;
        }
        let mut taps = Taps::none();
        let mut h = self.conv_in.forward(&z)?;
        h = self.mid.forward(&h)?;
        for block in &self.blocks {
            for resnet in &block.resnets {
                h = resnet.forward(&h, None, &mut taps)?;
            }
            if let Some(conv) = &block.upsampler {
                let size = h.size();
                h = conv.forward(&h.f_upsample_nearest2d([size[2] * 2, size[3] * 2], None, None)?)?;
            }
        }
        self.conv_out.forward(&self.conv_norm_out.forward(&h)?.f_silu()?)
    }
}

/// Image in [-1, 1] → 8-bit RGB as diffusers' `postprocess(output_type="pil")` makes it:
/// `round(clamp(x / 2 + 0.5, 0, 1) · 255)`.
/// # Shapes
/// `image: [3, H, W]` → `[H, W, 3]` uint8 on the CPU
pub fn to_rgb8(image: &Tensor) -> Result<Tensor> {
    if image.dim() != 3 || image.size()[0] != 3 {
        return Err(Error::Shape {
            context: "image to RGB".into(),
            why: format!("expected [3, H, W], got {:?}", image.size()),
        });
    }
    let x = image.f_to_device(tch::Device::Cpu)?.f_to_kind(tch::Kind::Float)?;
    let x = x.f_div_scalar(2.0)?.f_add_scalar(0.5)?.f_clamp(0.0, 1.0)?;
    // numpy rounds half to even, like torch.round.
    let x = x.f_permute([1, 2, 0])?.f_mul_scalar(255.0)?.f_round()?;
    Ok(x.f_to_kind(tch::Kind::Uint8)?.f_contiguous()?)
}
