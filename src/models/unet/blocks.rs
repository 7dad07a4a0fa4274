//! The U-Net's down, middle and up blocks (with or without cross-attention).

use super::transformer::{Transformer2D, TransformerSpec};
use crate::error::Result;
use crate::nn::resnet::ResnetSpec;
use crate::nn::{Conv2d, ResnetBlock2D};
use crate::taps::{Node, Taps};
use tch::Tensor;

/// Shared settings of the blocks of one U-Net.
pub struct BlockSpec {
    pub temb: i64,
    pub groups: i64,
    pub eps: f64,
    pub linear_projection: bool,
}

fn load_transformer(
    node: &Node,
    spec: &BlockSpec,
    channels: i64,
    heads: i64,
    depth: usize,
    context_dim: i64,
) -> Result<Transformer2D> {
    let t = TransformerSpec {
        channels,
        heads,
        depth,
        context_dim,
        groups: spec.groups,
        linear_projection: spec.linear_projection,
    };
    Transformer2D::load(node, &t)
}

fn resnet_spec(spec: &BlockSpec, in_channels: i64, out_channels: i64) -> ResnetSpec {
    ResnetSpec { in_channels, out_channels, temb_channels: Some(spec.temb), groups: spec.groups, eps: spec.eps }
}

/// Cross-attention settings of a block, `None` for a plain resnet block.
#[derive(Clone, Copy)]
pub struct CrossAttention {
    pub heads: i64,
    pub depth: usize,
    pub context_dim: i64,
}

/// `DownBlock2D` / `CrossAttnDownBlock2D`.
#[derive(Debug)]
pub struct DownBlock {
    path: String,
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    downsampler: Option<(String, String, Conv2d)>,
}

impl DownBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        node: &Node,
        spec: &BlockSpec,
        in_ch: i64,
        out_ch: i64,
        layers: usize,
        cross: Option<CrossAttention>,
        downsample: bool,
    ) -> Result<Self> {
        let path = node.register_with_input();
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..layers {
            let cin = if i == 0 { in_ch } else { out_ch };
            resnets.push(ResnetBlock2D::load(&node.item("resnets", i), &resnet_spec(spec, cin, out_ch))?);
            if let Some(x) = cross {
                attentions.push(load_transformer(
                    &node.item("attentions", i),
                    spec,
                    out_ch,
                    x.heads,
                    x.depth,
                    x.context_dim,
                )?);
            }
        }
        let downsampler = if downsample {
            let d = node.item("downsamplers", 0);
            let conv = d.child("conv");
            Some((d.register(), conv.register(), Conv2d::load(&conv.vb, out_ch, out_ch, 3, 2, 1)?))
        } else {
            None
        };
        Ok(Self { path, resnets, attentions, downsampler })
    }

    /// Returns the block output and the skip connections it hands to the up blocks.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        taps: &mut Taps,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        taps.enter(&self.path, x);
        let mut h = x.shallow_clone();
        let mut skips = Vec::new();
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(&h, Some(temb), taps)?;
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(&h, context, taps)?;
            }
            skips.push(h.shallow_clone());
        }
        if let Some((path, conv_path, conv)) = &self.downsampler {
            let out = taps.visit(conv_path, conv.forward(&h)?)?;
            h = taps.visit(path, out)?;
            skips.push(h.shallow_clone());
        }
        Ok((taps.visit(&self.path, h)?, skips))
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) pairs.
#[derive(Debug)]
pub struct MidBlock {
    path: String,
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
}

impl MidBlock {
    pub fn load(node: &Node, spec: &BlockSpec, ch: i64, cross: Option<CrossAttention>) -> Result<Self> {
        let path = node.register_with_input();
        let mut resnets = vec![ResnetBlock2D::load(&node.item("resnets", 0), &resnet_spec(spec, ch, ch))?];
        let mut attentions = Vec::new();
        if let Some(x) = cross {
            attentions.push(load_transformer(&node.item("attentions", 0), spec, ch, x.heads, x.depth, x.context_dim)?);
        }
        resnets.push(ResnetBlock2D::load(&node.item("resnets", 1), &resnet_spec(spec, ch, ch))?);
        Ok(Self { path, resnets, attentions })
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor, taps: &mut Taps) -> Result<Tensor> {
        taps.enter(&self.path, x);
        let mut h = self.resnets[0].forward(x, Some(temb), taps)?;
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            h = attn.forward(&h, context, taps)?;
            h = resnet.forward(&h, Some(temb), taps)?;
        }
        if self.attentions.is_empty() {
            for resnet in &self.resnets[1..] {
                h = resnet.forward(&h, Some(temb), taps)?;
            }
        }
        taps.visit(&self.path, h)
    }
}

/// `UpBlock2D` / `CrossAttnUpBlock2D`.
#[derive(Debug)]
pub struct UpBlock {
    path: String,
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    upsampler: Option<(String, String, Conv2d)>,
}

/// Channel bookkeeping of an up block: its input, its output, the previous block's output.
pub struct UpChannels {
    pub in_ch: i64,
    pub out_ch: i64,
    pub prev_out_ch: i64,
}

impl UpBlock {
    pub fn load(
        node: &Node,
        spec: &BlockSpec,
        ch: UpChannels,
        layers: usize,
        cross: Option<CrossAttention>,
        upsample: bool,
    ) -> Result<Self> {
        let path = node.register_with_input();
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..layers {
            let skip = if i == layers - 1 { ch.in_ch } else { ch.out_ch };
            let cin = if i == 0 { ch.prev_out_ch } else { ch.out_ch };
            resnets.push(ResnetBlock2D::load(&node.item("resnets", i), &resnet_spec(spec, cin + skip, ch.out_ch))?);
            if let Some(x) = cross {
                attentions.push(load_transformer(
                    &node.item("attentions", i),
                    spec,
                    ch.out_ch,
                    x.heads,
                    x.depth,
                    x.context_dim,
                )?);
            }
        }
        let upsampler = if upsample {
            let u = node.item("upsamplers", 0);
            let conv = u.child("conv");
            Some((u.register(), conv.register(), Conv2d::load(&conv.vb, ch.out_ch, ch.out_ch, 3, 1, 1)?))
        } else {
            None
        };
        Ok(Self { path, resnets, attentions, upsampler })
    }

    pub fn num_skips(&self) -> usize {
        self.resnets.len()
    }

    /// `skips` are consumed from the end; `upsample_to` is the spatial size of the next skip connection.
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &mut Vec<Tensor>,
        temb: &Tensor,
        context: &Tensor,
        upsample_to: Option<(i64, i64)>,
        taps: &mut Taps,
    ) -> Result<Tensor> {
        taps.enter(&self.path, x);
        let mut h = x.shallow_clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| crate::error::Error::Shape {
                context: self.path.clone(),
                why: "ran out of skip connections".into(),
            })?;
            h = Tensor::f_cat(&[h, skip], 1)?;
            h = resnet.forward(&h, Some(temb), taps)?;
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(&h, context, taps)?;
            }
        }
        if let Some((path, conv_path, conv)) = &self.upsampler {
            let size = h.size();
            let (th, tw) = upsample_to.unwrap_or((size[2] * 2, size[3] * 2));
            let up = h.f_upsample_nearest2d([th, tw], None, None)?;
            let out = taps.visit(conv_path, conv.forward(&up)?)?;
            h = taps.visit(path, out)?;
        }
        taps.visit(&self.path, h)
    }
}
