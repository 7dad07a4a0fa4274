//! `UNet2DConditionModel` as diffusers builds it from `unet/config.json` (SD1.x, SD2.x, SDXL and their turbo/
//! lightning variants), with a tap at every module.

mod blocks;
mod transformer;

use crate::config::{check_dims, UNetConfig};
use crate::error::{Error, Result};
use crate::nn::embeddings::{timestep_features, TimestepEmbedding};
use crate::nn::{Conv2d, GroupNorm};
use crate::taps::{Node, Registry, Taps};
use crate::weights::Weights;
use blocks::{BlockSpec, CrossAttention, DownBlock, MidBlock, UpBlock, UpChannels};
use std::cell::RefCell;
use std::path::Path;
use tch::{Kind, Tensor};

/// SDXL's extra conditioning: pooled text embedding and the six micro-conditioning numbers.
pub struct AddedConditioning<'t> {
    /// `[B, projection_dim]`
    pub text_embeds: &'t Tensor,
    /// `[B, 6]`: (original H, W, crop top, left, target H, W)
    pub time_ids: &'t Tensor,
}

struct TextTime {
    add_time_dim: i64,
    add_embedding: TimestepEmbedding,
}

pub struct UNet {
    pub config: UNetConfig,
    conv_in: (String, Conv2d),
    time_proj_dim: i64,
    time_embedding: TimestepEmbedding,
    text_time: Option<TextTime>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: (String, GroupNorm),
    conv_out: (String, Conv2d),
    positions: Vec<String>,
    with_input: Vec<String>,
}

fn unsupported(path: &Path, why: impl Into<String>) -> Error {
    Error::Unsupported { path: path.to_path_buf(), why: why.into() }
}

impl UNet {
    /// Build the U-Net described by `config` (read from `config_path`) with weights from `weights`.
    pub fn load(config: UNetConfig, config_path: &Path, weights: &Weights) -> Result<Self> {
        let cfg = &config;
        let p = config_path;
        let n_blocks = cfg.block_out_channels.len();
        if n_blocks == 0 {
            return Err(Error::BadConfig { path: p.to_path_buf(), why: "block_out_channels is empty".into() });
        }
        if cfg.down_block_types.len() != n_blocks || cfg.up_block_types.len() != n_blocks {
            return Err(unsupported(
                p,
                "down_block_types, up_block_types and block_out_channels must have the same length",
            ));
        }
        for (what, value) in [
            ("class_embed_type", &cfg.class_embed_type),
            ("time_embedding_type", &cfg.time_embedding_type.clone().filter(|t| t != "positional")),
            ("resnet_time_scale_shift", &cfg.resnet_time_scale_shift.clone().filter(|t| t != "default")),
        ] {
            if let Some(v) = value {
                return Err(unsupported(p, format!("{what} = {v:?}")));
            }
        }
        if cfg.num_class_embeds.is_some()
            || cfg.encoder_hid_dim.is_some()
            || cfg.time_cond_proj_dim.is_some()
            || cfg.dual_cross_attention
        {
            return Err(unsupported(
                p,
                "class embeddings, encoder_hid_dim, time_cond_proj_dim and dual cross-attention are not supported",
            ));
        }
        if cfg.only_cross_attention.as_ref().is_some_and(|o| {
            o.expand(n_blocks, "only_cross_attention", p).map(|v| v.iter().any(|&b| b)).unwrap_or(true)
        }) {
            return Err(unsupported(p, "only_cross_attention"));
        }
        if cfg.conv_in_kernel.is_some_and(|k| k != 3) || cfg.conv_out_kernel.is_some_and(|k| k != 3) {
            return Err(unsupported(p, "conv_in_kernel / conv_out_kernel other than 3"));
        }
        let groups = cfg.norm_num_groups.ok_or_else(|| unsupported(p, "norm_num_groups = null"))?;
        let layers = cfg.layers_per_block.expand(n_blocks, "layers_per_block", p)?;
        let cross_dims = cfg.cross_attention_dim.expand(n_blocks, "cross_attention_dim", p)?;
        let depths = cfg.transformer_layers_per_block.expand(n_blocks, "transformer_layers_per_block", p)?;
        // diffusers reads `attention_head_dim` as the number of heads when `num_attention_heads` is absent.
        let heads_cfg = cfg
            .num_attention_heads
            .clone()
            .or_else(|| cfg.attention_head_dim.clone())
            .ok_or_else(|| unsupported(p, "neither num_attention_heads nor attention_head_dim is set"))?;
        let heads = heads_cfg.expand(n_blocks, "num_attention_heads", p)?;
        let reverse_depths = cfg.reverse_transformer_layers_per_block.as_deref().unwrap_or_default();
        if cfg.reverse_transformer_layers_per_block.is_some() && reverse_depths.len() != n_blocks {
            return Err(Error::BadConfig {
                path: p.to_path_buf(),
                why: format!(
                    "`reverse_transformer_layers_per_block` has {} entries but there are {n_blocks} blocks",
                    reverse_depths.len()
                ),
            });
        }
        let each = |what: &'static str, values: &[i64]| values.iter().map(move |&v| (what, v)).collect::<Vec<_>>();
        check_dims(
            p,
            1,
            [("in_channels", cfg.in_channels), ("out_channels", cfg.out_channels), ("norm_num_groups", groups)]
                .into_iter()
                .chain(each("block_out_channels", &cfg.block_out_channels))
                .chain(each("layers_per_block", &layers))
                .chain(each("cross_attention_dim", &cross_dims))
                .chain(each("transformer_layers_per_block", &depths))
                .chain(each("reverse_transformer_layers_per_block", reverse_depths))
                .chain(each("num_attention_heads", &heads))
                .chain(cfg.addition_time_embed_dim.map(|d| ("addition_time_embed_dim", d)))
                .chain(cfg.projection_class_embeddings_input_dim.map(|d| ("projection_class_embeddings_input_dim", d))),
        )?;

        let registry = RefCell::new(Registry::default());
        let root = Node::root(weights.root(), &registry);
        let c0 = cfg.block_out_channels[0];
        let temb = c0 * 4;
        let conv_in_node = root.child("conv_in");
        let conv_in = (conv_in_node.register(), Conv2d::load(&conv_in_node.vb, cfg.in_channels, c0, 3, 1, 1)?);
        root.child("time_proj").register();
        let time_embedding = TimestepEmbedding::load(&root.child("time_embedding"), c0, temb)?;
        let text_time = match cfg.addition_embed_type.as_deref() {
            None => None,
            Some("text_time") => {
                root.child("add_time_proj").register();
                let add_time_dim = cfg
                    .addition_time_embed_dim
                    .ok_or_else(|| unsupported(p, "text_time needs addition_time_embed_dim"))?;
                let in_dim = cfg
                    .projection_class_embeddings_input_dim
                    .ok_or_else(|| unsupported(p, "text_time needs projection_class_embeddings_input_dim"))?;
                Some(TextTime {
                    add_time_dim,
                    add_embedding: TimestepEmbedding::load(&root.child("add_embedding"), in_dim, temb)?,
                })
            }
            Some(other) => return Err(unsupported(p, format!("addition_embed_type = {other:?}"))),
        };
        let spec = BlockSpec { temb, groups, eps: cfg.norm_eps, linear_projection: cfg.use_linear_projection };
        let is_cross = |kind: &str| -> Result<bool> {
            match kind {
                "CrossAttnDownBlock2D" | "CrossAttnUpBlock2D" => Ok(true),
                "DownBlock2D" | "UpBlock2D" => Ok(false),
                other => Err(unsupported(p, format!("block type {other} (supported: DownBlock2D, CrossAttnDownBlock2D, UpBlock2D, CrossAttnUpBlock2D)"))),
            }
        };
        let cross_at = |i: usize, depth: i64, heads: i64| CrossAttention {
            heads,
            depth: depth as usize,
            context_dim: cross_dims[i],
        };

        let mut down_blocks = Vec::new();
        let mut out_ch = c0;
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = cfg.block_out_channels[i];
            let cross = is_cross(kind)?.then(|| cross_at(i, depths[i], heads[i]));
            let block = DownBlock::load(
                &root.item("down_blocks", i),
                &spec,
                in_ch,
                out_ch,
                layers[i] as usize,
                cross,
                i + 1 < n_blocks,
            )?;
            down_blocks.push(block);
        }

        let last = n_blocks - 1;
        let mid_block = match cfg.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => Some(MidBlock::load(
                &root.child("mid_block"),
                &spec,
                cfg.block_out_channels[last],
                Some(cross_at(last, depths[last], heads[last])),
            )?),
            None => None,
            Some(other) => return Err(unsupported(p, format!("mid_block_type {other}"))),
        };

        let rev_channels: Vec<i64> = cfg.block_out_channels.iter().rev().copied().collect();
        let rev_depths: Vec<i64> =
            cfg.reverse_transformer_layers_per_block.clone().unwrap_or_else(|| depths.iter().rev().copied().collect());
        let mut up_blocks = Vec::new();
        let mut out_ch = rev_channels[0];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let prev_out_ch = out_ch;
            out_ch = rev_channels[i];
            let in_ch = rev_channels[(i + 1).min(last)];
            let j = last - i;
            let cross = is_cross(kind)?.then(|| CrossAttention {
                heads: heads[j],
                depth: rev_depths[i] as usize,
                context_dim: cross_dims[j],
            });
            let ch = UpChannels { in_ch, out_ch, prev_out_ch };
            up_blocks.push(UpBlock::load(
                &root.item("up_blocks", i),
                &spec,
                ch,
                layers[j] as usize + 1,
                cross,
                i < last,
            )?);
        }
        let norm_node = root.child("conv_norm_out");
        let conv_norm_out = (norm_node.register(), GroupNorm::load(&norm_node.vb, groups, c0, cfg.norm_eps)?);
        root.child("conv_act").register();
        let conv_out_node = root.child("conv_out");
        let conv_out = (conv_out_node.register(), Conv2d::load(&conv_out_node.vb, c0, cfg.out_channels, 3, 1, 1)?);
        let Registry { positions, with_input } = registry.into_inner();
        Ok(Self {
            time_proj_dim: c0,
            config,
            conv_in,
            time_embedding,
            text_time,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            positions,
            with_input,
        })
    }

    /// Every valid position, in module-tree order.
    pub fn positions(&self) -> &[String] {
        &self.positions
    }

    /// Zero inputs of the right shapes for a shape-only pass on a `latent` grid: sample `[1, C, h, w]`, text
    /// context `[1, 77, D]` and, for text_time conditioning, pooled text embeddings `[1, P]`.
    pub fn dummy_inputs(&self, latent: (i64, i64)) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let cfg = &self.config;
        let options = (Kind::Float, tch::Device::Cpu);
        let sample = Tensor::f_zeros([1, cfg.in_channels, latent.0, latent.1], options)?;
        let context_dim = match &cfg.cross_attention_dim {
            crate::config::PerBlock::One(d) => *d,
            crate::config::PerBlock::Each(v) => v.first().copied().unwrap_or(768),
        };
        let context = Tensor::f_zeros([1, 77, context_dim], options)?;
        let text_embeds = match (cfg.projection_class_embeddings_input_dim, cfg.addition_time_embed_dim) {
            (Some(total), Some(t)) => Some(Tensor::f_zeros([1, total - 6 * t], options)?),
            _ => None,
        };
        Ok((sample, context, text_embeds))
    }

    /// Positions whose update (`P@update`, output − input) can be captured or edited.
    pub fn update_positions(&self) -> &[String] {
        &self.with_input
    }

    /// Run the U-Net. Returns `None` when the taps stopped the pass early (after the last requested position).
    ///
    /// # Shapes
    /// `sample: [B, C, h, w]`, `context: [B, S, D]` → noise prediction `[B, C_out, h, w]`
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<AddedConditioning>,
        taps: &mut Taps,
    ) -> Result<Option<Tensor>> {
        crate::taps::stopped_early_as_none(self.forward_inner(sample, timestep, context, added, taps))
    }

    fn forward_inner(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<AddedConditioning>,
        taps: &mut Taps,
    ) -> Result<Tensor> {
        let size = sample.size();
        if size.len() != 4 || size[1] != self.config.in_channels {
            return Err(Error::Shape {
                context: "U-Net input".into(),
                why: format!("expected [B, {}, h, w], got {size:?}", self.config.in_channels),
            });
        }
        let batch = size[0];
        let dtype = sample.kind();
        let t = Tensor::f_full([batch], timestep, (Kind::Float, sample.device()))?;
        let t_features = taps.visit(
            "time_proj",
            timestep_features(&t, self.time_proj_dim, self.config.flip_sin_to_cos, self.config.freq_shift)?,
        )?;
        let mut emb = self.time_embedding.forward(&t_features.f_to_kind(dtype)?, taps)?;
        match (&self.text_time, added) {
            (Some(tt), Some(added)) => {
                let ids = added.time_ids.f_flatten(0, -1)?;
                let time_features =
                    timestep_features(&ids, tt.add_time_dim, self.config.flip_sin_to_cos, self.config.freq_shift)?;
                let time_features = taps.visit("add_time_proj", time_features)?.f_reshape([batch, -1])?;
                let add_in = Tensor::f_cat(
                    &[added.text_embeds.shallow_clone(), time_features.f_to_kind(added.text_embeds.kind())?],
                    -1,
                )?;
                let aug = tt.add_embedding.forward(&add_in.f_to_kind(dtype)?, taps)?;
                emb = emb.f_add(&aug)?;
            }
            (Some(_), None) => {
                return Err(Error::invalid(
                    "U-Net conditioning",
                    "this U-Net (addition_embed_type = text_time) needs text_embeds and time_ids",
                ))
            }
            (None, _) => {}
        }

        let mut h = taps.visit(&self.conv_in.0, self.conv_in.1.forward(sample)?)?;
        let mut skips = vec![h.shallow_clone()];
        for block in &self.down_blocks {
            let (out, block_skips) = block.forward(&h, &emb, context, taps)?;
            h = out;
            skips.extend(block_skips);
        }
        if let Some(mid) = &self.mid_block {
            h = mid.forward(&h, &emb, context, taps)?;
        }
        for block in &self.up_blocks {
            let remaining = skips.len().saturating_sub(block.num_skips());
            let upsample_to = remaining.checked_sub(1).map(|last| {
                let s = skips[last].size();
                (s[2], s[3])
            });
            h = block.forward(&h, &mut skips, &emb, context, upsample_to, taps)?;
        }
        let h = taps.visit(&self.conv_norm_out.0, self.conv_norm_out.1.forward(&h)?)?;
        let h = taps.visit("conv_act", h.f_silu()?)?;
        taps.visit(&self.conv_out.0, self.conv_out.1.forward(&h)?)
    }
}
