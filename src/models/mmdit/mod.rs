//! diffusers' `SD3Transformer2DModel` (SD3, SD3.5 with qk norms and MMDiT-X dual attention), with a tap at every
//! module. Image-stream outputs are shown to taps on the latent patch grid `[B, C, H/16, W/16]` (see [`grid`]);
//! `transformer_blocks[i]@text` is a block's text stream `[B, tokens, C]`.

mod attention;
mod block;
pub mod grid;
mod norms;

use crate::config::{check_dims, Sd3TransformerConfig};
use crate::error::{Error, Result};
use crate::nn::embeddings::{timestep_features, TimestepEmbedding};
use crate::nn::{Conv2d, Linear};
use crate::taps::{Node, Registry, Taps};
use crate::weights::Weights;
use block::{BlockSpec, JointTransformerBlock};
use grid::Grid;
use norms::{AdaLayerNormContinuous, Stream};
use std::cell::RefCell;
use std::path::Path;
use tch::{Kind, Tensor};

/// `PatchEmbed` with SD3's cropped position embedding.
#[derive(Debug)]
struct PatchEmbed {
    path: String,
    proj: (String, Conv2d),
    /// `[1, max·max, dim]`
    pos_embed: Tensor,
    max_size: i64,
}

/// `CombinedTimestepTextProjEmbeddings`: sinusoidal timestep → MLP, plus the pooled text vector → MLP.
#[derive(Debug)]
struct TimeTextEmbed {
    path: String,
    time_proj: String,
    timestep_embedder: TimestepEmbedding,
    text_embedder: TextProjection,
}

/// `PixArtAlphaTextProjection` with SiLU: `linear_2(silu(linear_1(x)))`.
#[derive(Debug)]
struct TextProjection {
    path: String,
    linear_1: (String, Linear),
    act: String,
    linear_2: (String, Linear),
}

pub struct Sd3Transformer {
    pub config: Sd3TransformerConfig,
    pos_embed: PatchEmbed,
    time_text_embed: TimeTextEmbed,
    context_embedder: (String, Linear),
    blocks: Vec<JointTransformerBlock>,
    norm_out: AdaLayerNormContinuous,
    proj_out: (String, Linear),
    positions: Vec<String>,
    with_input: Vec<String>,
}

fn unsupported(path: &Path, why: impl Into<String>) -> Error {
    Error::Unsupported { path: path.to_path_buf(), why: why.into() }
}

impl Sd3Transformer {
    /// Build the transformer described by `config` (read from `config_path`) with weights from `weights`.
    pub fn load(config: Sd3TransformerConfig, config_path: &Path, weights: &Weights) -> Result<Self> {
        let c = &config;
        check_dims(
            config_path,
            1,
            [
                ("patch_size", c.patch_size),
                ("in_channels", c.in_channels),
                ("num_layers", c.num_layers),
                ("attention_head_dim", c.attention_head_dim),
                ("num_attention_heads", c.num_attention_heads),
                ("joint_attention_dim", c.joint_attention_dim),
                ("caption_projection_dim", c.caption_projection_dim),
                ("pooled_projection_dim", c.pooled_projection_dim),
                ("out_channels", c.out_channels()),
                ("inner dim", c.inner_dim()),
            ],
        )?;
        let dim = c.inner_dim();
        if c.caption_projection_dim != dim {
            return Err(unsupported(
                config_path,
                format!(
                    "caption_projection_dim {} differs from heads × head dim = {dim} (the joint attention needs them equal)",
                    c.caption_projection_dim
                ),
            ));
        }
        let max_size = c
            .pos_embed_max_size
            .ok_or_else(|| unsupported(config_path, "pos_embed_max_size = null (SD3 models crop a stored table)"))?;
        if let Some(bad) = c.dual_attention_layers.iter().find(|&&i| i < 0 || i >= c.num_layers) {
            return Err(Error::BadConfig {
                path: config_path.into(),
                why: format!("dual_attention_layers lists block {bad}; blocks are 0..{}", c.num_layers),
            });
        }
        let registry = RefCell::new(Registry::default());
        let root = Node::root(weights.root(), &registry);

        let pe = root.child("pos_embed");
        let pe_path = pe.register();
        let proj = pe.child("proj");
        let proj = (proj.register(), Conv2d::load(&proj.vb, c.in_channels, dim, c.patch_size, c.patch_size, 0)?);
        let table = pe.vb.get("pos_embed", &[1, max_size * max_size, dim])?.f_to_kind(Kind::Float)?;
        let pos_embed = PatchEmbed { path: pe_path, proj, pos_embed: table, max_size };

        let tt = root.child("time_text_embed");
        let tt_path = tt.register();
        let time_proj = tt.child("time_proj").register();
        let te = tt.child("timestep_embedder");
        let timestep_embedder = TimestepEmbedding::load(&te, 256, dim)?;
        let text = tt.child("text_embedder");
        let text_path = text.register();
        let l1 = text.child("linear_1");
        let linear_1 = (l1.register(), Linear::load(&l1.vb, c.pooled_projection_dim, dim, true)?);
        let act = text.child("act_1").register();
        let l2 = text.child("linear_2");
        let linear_2 = (l2.register(), Linear::load(&l2.vb, dim, dim, true)?);
        let time_text_embed = TimeTextEmbed {
            path: tt_path,
            time_proj,
            timestep_embedder,
            text_embedder: TextProjection { path: text_path, linear_1, act, linear_2 },
        };

        let ce = root.child("context_embedder");
        let context_embedder = (ce.register(), Linear::load(&ce.vb, c.joint_attention_dim, dim, true)?);
        let blocks = (0..c.num_layers)
            .map(|i| {
                let spec = BlockSpec {
                    dim,
                    heads: c.num_attention_heads,
                    head_dim: c.attention_head_dim,
                    qk_norm: c.qk_norm.as_deref(),
                    context_pre_only: i == c.num_layers - 1,
                    dual_attention: c.dual_attention_layers.contains(&i),
                };
                JointTransformerBlock::load(&root.item("transformer_blocks", i as usize), &spec)
            })
            .collect::<Result<Vec<_>>>()?;
        let norm_out = AdaLayerNormContinuous::load(&root.child("norm_out"), dim)?;
        let po = root.child("proj_out");
        let proj_out =
            (po.register(), Linear::load(&po.vb, dim, c.patch_size * c.patch_size * c.out_channels(), true)?);
        let Registry { positions, with_input } = registry.into_inner();
        Ok(Self {
            config,
            pos_embed,
            time_text_embed,
            context_embedder,
            blocks,
            norm_out,
            proj_out,
            positions,
            with_input,
        })
    }

    /// Every valid position, in module-tree order.
    pub fn positions(&self) -> &[String] {
        &self.positions
    }

    /// Positions whose update (`P@update`, output − input) can be captured or edited.
    pub fn update_positions(&self) -> &[String] {
        &self.with_input
    }

    /// The patch grid of a latent, or an error naming the sizes that work.
    pub fn grid_of(&self, latent: (i64, i64)) -> Result<Grid> {
        let p = self.config.patch_size;
        let max = self.pos_embed.max_size;
        if latent.0 % p != 0 || latent.1 % p != 0 {
            return Err(Error::Shape {
                context: "transformer input".into(),
                why: format!(
                    "the latent grid {}×{} is not a multiple of the patch size {p}: images must be multiples of {} px",
                    latent.0,
                    latent.1,
                    8 * p
                ),
            });
        }
        let grid = Grid { h: latent.0 / p, w: latent.1 / p };
        if grid.h > max || grid.w > max {
            return Err(Error::Shape {
                context: "transformer input".into(),
                why: format!(
                    "{}×{} patches exceed the position table ({max}×{max}); the largest image is {} px a side",
                    grid.h,
                    grid.w,
                    max * p * 8
                ),
            });
        }
        Ok(grid)
    }

    /// Zero inputs of the right shapes for a shape-only pass: sample `[1, C, h, w]`, text `[1, 77 + 256, D]`
    /// (the pipeline's CLIP + T5 sequence), pooled `[1, P]`.
    pub fn dummy_inputs(&self, latent: (i64, i64)) -> Result<(Tensor, Tensor, Tensor)> {
        let c = &self.config;
        let options = (Kind::Float, tch::Device::Cpu);
        Ok((
            Tensor::f_zeros([1, c.in_channels, latent.0, latent.1], options)?,
            Tensor::f_zeros([1, 77 + crate::sd3_text::T5_MAX_SEQUENCE_LENGTH as i64, c.joint_attention_dim], options)?,
            Tensor::f_zeros([1, c.pooled_projection_dim], options)?,
        ))
    }

    /// Run the transformer. Returns `None` when the taps stopped the pass early.
    ///
    /// # Shapes
    /// `sample: [B, C, h, w]`, `context: [B, S, joint_attention_dim]`, `pooled: [B, pooled_projection_dim]`
    /// → velocity prediction `[B, C_out, h, w]`
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
        pooled: &Tensor,
        taps: &mut Taps,
    ) -> Result<Option<Tensor>> {
        crate::taps::stopped_early_as_none(self.forward_inner(sample, timestep, context, pooled, taps))
    }

    fn check_inputs(&self, sample: &Tensor, context: &Tensor, pooled: &Tensor) -> Result<()> {
        let c = &self.config;
        let (s, t, p) = (sample.size(), context.size(), pooled.size());
        let bad = |what: &str, why: String| Err(Error::Shape { context: format!("transformer {what}"), why });
        if s.len() != 4 || s[1] != c.in_channels {
            return bad("input", format!("expected [B, {}, h, w], got {s:?}", c.in_channels));
        }
        if t.len() != 3 || t[0] != s[0] || t[2] != c.joint_attention_dim {
            return bad("text states", format!("expected [{}, S, {}], got {t:?}", s[0], c.joint_attention_dim));
        }
        if p.len() != 2 || p[0] != s[0] || p[1] != c.pooled_projection_dim {
            return bad("pooled text", format!("expected [{}, {}], got {p:?}", s[0], c.pooled_projection_dim));
        }
        Ok(())
    }

    fn forward_inner(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
        pooled: &Tensor,
        taps: &mut Taps,
    ) -> Result<Tensor> {
        self.check_inputs(sample, context, pooled)?;
        let size = sample.size();
        let (batch, dtype) = (size[0], sample.kind());
        let grid = self.grid_of((size[2], size[3]))?;

        // Patches + the centre crop of the position table.
        let pe = &self.pos_embed;
        let patches = taps.visit(&pe.proj.0, pe.proj.1.forward(sample)?)?;
        let tokens = patches.f_flatten(2, 3)?.f_transpose(1, 2)?;
        let (top, left) = ((pe.max_size - grid.h) / 2, (pe.max_size - grid.w) / 2);
        let table = pe.pos_embed.f_view([1, pe.max_size, pe.max_size, -1])?;
        let crop = table.f_narrow(1, top, grid.h)?.f_narrow(2, left, grid.w)?.f_reshape([1, grid.h * grid.w, -1])?;
        let image = tokens.f_add(&crop)?.f_to_kind(dtype)?.f_contiguous()?;
        let mut image = grid.visit(taps, &pe.path, image)?;

        let tt = &self.time_text_embed;
        let t = Tensor::f_full([batch], timestep, (Kind::Float, sample.device()))?;
        let features = taps.visit(&tt.time_proj, timestep_features(&t, 256, true, 0.0)?)?;
        let time_emb = tt.timestep_embedder.forward(&features.f_to_kind(pooled.kind())?, taps)?;
        let te = &tt.text_embedder;
        let h = taps.visit(&te.linear_1.0, te.linear_1.1.forward(pooled)?)?;
        let h = taps.visit(&te.act, h.f_silu()?)?;
        let h = taps.visit(&te.linear_2.0, te.linear_2.1.forward(&h)?)?;
        let text_emb = taps.visit(&te.path, h)?;
        let temb = taps.visit(&tt.path, time_emb.f_add(&text_emb)?)?;

        let mut text = taps.visit(&self.context_embedder.0, self.context_embedder.1.forward(context)?)?;
        for block in &self.blocks {
            let (new_image, new_text) = block.forward(&image, &text, &temb, grid, taps)?;
            image = new_image;
            if let Some(t) = new_text {
                text = t;
            }
        }
        let h = self.norm_out.forward(&image, &temb, Stream::Image(grid), taps)?;
        let h = self.proj_out.1.forward(&h)?;
        let h = grid.visit(taps, &self.proj_out.0, h)?;
        // Unpatchify: [B, h·w, p·p·C] → [B, C, h·p, w·p].
        let (p, c) = (self.config.patch_size, self.config.out_channels());
        let h = h.f_reshape([batch, grid.h, grid.w, p, p, c])?.f_permute([0, 5, 1, 3, 2, 4])?;
        Ok(h.f_reshape([batch, c, grid.h * p, grid.w * p])?)
    }
}
