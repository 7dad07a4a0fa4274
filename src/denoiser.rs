//! The denoiser seam: a U-Net (SD1.x/2.x/SDXL) or a transformer (SD3 MMDiT) behind one trait, so extraction,
//! generation, interventions and attention maps talk to "the denoiser" and a new family is one more
//! implementation (plus its loader here).

use crate::config::{read_json, Sd3TransformerConfig, UNetConfig};
use crate::error::{Error, Result};
use crate::hub::{component_weights, ModelSource};
use crate::models::{AddedConditioning, Sd3Transformer, UNet};
use crate::pipeline::{LoadOptions, TextConditioning};
use crate::taps::Taps;
use crate::weights::Weights;
use std::path::Path;
use std::time::Instant;
use tch::Tensor;

/// What a denoiser is conditioned on besides the noisy latents and the timestep.
/// # Shapes
/// `context: [B, S, D]`; `pooled: [B, P]`; `time_ids: [B, 6]` (SDXL)
pub struct DenoiserInput<'a> {
    pub context: &'a Tensor,
    pub pooled: Option<&'a Tensor>,
    pub time_ids: Option<&'a Tensor>,
}

pub trait Denoiser {
    /// `"U-Net"` or `"transformer"`, for messages.
    fn name(&self) -> &'static str;
    /// Every valid position, in module-tree order.
    fn positions(&self) -> &[String];
    /// Positions whose update (`P@update`) can be captured or edited.
    fn update_positions(&self) -> &[String];
    /// Channels of the latents it denoises.
    fn in_channels(&self) -> i64;
    /// Width of the text states it attends to (`cross_attention_dim`, SD3's `joint_attention_dim`).
    fn context_width(&self) -> i64;
    /// The latent side it was trained at (`sample_size`).
    fn default_latent_side(&self) -> i64;
    /// Latent sizes must be a multiple of this (1 for a U-Net, the patch size for a transformer).
    fn latent_multiple(&self) -> i64;
    /// The attention layers whose image → text probabilities make attention maps.
    fn text_attention_layers(&self) -> Vec<String>;
    /// Every attention layer that can record its probabilities when asked by name (the text layers, and a U-Net's
    /// self-attention `…attn1`).
    fn recordable_attention_layers(&self) -> Vec<String> {
        self.text_attention_layers()
    }
    /// Whether classifier-free guidance applies (`false` for guidance-distilled U-Nets with `time_cond_proj_dim`).
    fn supports_guidance(&self) -> bool;
    /// Zero inputs for a shape-only pass on a latent grid: the sample and its conditioning.
    fn dummy_inputs(&self, latent: (i64, i64)) -> Result<(Tensor, TextConditioning)>;
    /// One pass; `None` when the taps stopped it after the last requested position.
    /// # Shapes
    /// `sample: [B, C, h, w]` → `[B, C_out, h, w]`
    fn forward(&self, sample: &Tensor, timestep: f64, input: &DenoiserInput, taps: &mut Taps)
        -> Result<Option<Tensor>>;
}

impl Denoiser for UNet {
    fn name(&self) -> &'static str {
        "U-Net"
    }
    fn positions(&self) -> &[String] {
        UNet::positions(self)
    }
    fn update_positions(&self) -> &[String] {
        UNet::update_positions(self)
    }
    fn in_channels(&self) -> i64 {
        self.config.in_channels
    }
    fn context_width(&self) -> i64 {
        match &self.config.cross_attention_dim {
            crate::config::PerBlock::One(d) => *d,
            crate::config::PerBlock::Each(v) => v.first().copied().unwrap_or(768),
        }
    }
    fn default_latent_side(&self) -> i64 {
        self.config.sample_size.unwrap_or(64)
    }
    fn latent_multiple(&self) -> i64 {
        1
    }
    fn supports_guidance(&self) -> bool {
        self.config.time_cond_proj_dim.is_none()
    }
    fn text_attention_layers(&self) -> Vec<String> {
        self.positions().iter().filter(|p| p.ends_with(".attn2")).cloned().collect()
    }
    fn recordable_attention_layers(&self) -> Vec<String> {
        let attention = |p: &&String| p.ends_with(".attn1") || p.ends_with(".attn2");
        self.positions().iter().filter(attention).cloned().collect()
    }
    fn dummy_inputs(&self, latent: (i64, i64)) -> Result<(Tensor, TextConditioning)> {
        let (sample, hidden_states, text_embeds) = UNet::dummy_inputs(self, latent)?;
        Ok((sample, TextConditioning { hidden_states, text_embeds }))
    }
    fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        input: &DenoiserInput,
        taps: &mut Taps,
    ) -> Result<Option<Tensor>> {
        let added = match (input.pooled, input.time_ids) {
            (Some(text_embeds), Some(time_ids)) => Some(AddedConditioning { text_embeds, time_ids }),
            _ => None,
        };
        UNet::forward(self, sample, timestep, input.context, added, taps)
    }
}

impl Denoiser for Sd3Transformer {
    fn name(&self) -> &'static str {
        "transformer"
    }
    fn positions(&self) -> &[String] {
        Sd3Transformer::positions(self)
    }
    fn update_positions(&self) -> &[String] {
        Sd3Transformer::update_positions(self)
    }
    fn in_channels(&self) -> i64 {
        self.config.in_channels
    }
    fn context_width(&self) -> i64 {
        self.config.joint_attention_dim
    }
    fn default_latent_side(&self) -> i64 {
        self.config.sample_size
    }
    fn latent_multiple(&self) -> i64 {
        self.config.patch_size
    }
    fn supports_guidance(&self) -> bool {
        true
    }
    fn text_attention_layers(&self) -> Vec<String> {
        // Joint attention in every block; SD3.5's `attn2` attends to image tokens only.
        let joint = |p: &&String| p.starts_with("transformer_blocks[") && p.ends_with("].attn");
        Denoiser::positions(self).iter().filter(joint).cloned().collect()
    }
    fn dummy_inputs(&self, latent: (i64, i64)) -> Result<(Tensor, TextConditioning)> {
        let (sample, hidden_states, pooled) = Sd3Transformer::dummy_inputs(self, latent)?;
        Ok((sample, TextConditioning { hidden_states, text_embeds: Some(pooled) }))
    }
    fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        input: &DenoiserInput,
        taps: &mut Taps,
    ) -> Result<Option<Tensor>> {
        let pooled = input.pooled.ok_or_else(|| {
            Error::invalid("transformer conditioning", "SD3 needs the pooled text embedding (both CLIP projections)")
        })?;
        Sd3Transformer::forward(self, sample, timestep, input.context, pooled, taps)
    }
}

/// The folder holding a pipeline's denoiser: `transformer` (SD3) when there is one, else `unet`.
pub fn denoiser_folder(root: &Path) -> &'static str {
    if root.join("transformer").join("config.json").is_file() {
        "transformer"
    } else {
        "unet"
    }
}

/// Load the denoiser of a resolved model: `transformer/` (SD3) or `unet/` (with the Lightning weight override
/// when the alias has one).
pub fn load_denoiser(source: &ModelSource, options: &LoadOptions) -> Result<Box<dyn Denoiser>> {
    let start = Instant::now();
    let transformer = source.root.join("transformer");
    let denoiser: Box<dyn Denoiser> = if denoiser_folder(&source.root) == "transformer" {
        let config_path = transformer.join("config.json");
        let config: Sd3TransformerConfig = read_json(&config_path)?;
        match config.class_name.as_deref() {
            None | Some("SD3Transformer2DModel") => {}
            Some(other) => {
                return Err(Error::Unsupported {
                    path: config_path,
                    why: format!("transformer class `{other}` (supported: SD3Transformer2DModel)"),
                })
            }
        }
        let weights = Weights::open_mapped(&component_weights(&transformer)?, options.dtype, options.device)?;
        Box::new(Sd3Transformer::load(config, &config_path, &weights)?)
    } else {
        let dir = source.root.join("unet");
        let config_path = dir.join("config.json");
        let config: UNetConfig = read_json(&config_path)?;
        let files = match &source.unet_override {
            Some(file) => vec![file.clone()],
            None => component_weights(&dir)?,
        };
        let weights = Weights::open_mapped(&files, options.dtype, options.device)?;
        Box::new(UNet::load(config, &config_path, &weights)?)
    };
    if options.progress {
        eprintln!("[sdscope] loaded {} in {:.1} s", denoiser.name(), start.elapsed().as_secs_f64());
    }
    Ok(denoiser)
}
