//! Cross-attention maps by token: where each prompt token lands in the image, on a real image (the extraction
//! path, like the A1111 "Visualize Cross-Attention" extension) or at every step of a generation (like DAAM).
//!
//! ```no_run
//! use sdscope::prelude::*;
//! use sdscope::xattn::{AttentionRequest, MapQuery, RenderOptions, RenderMode, render};
//! let pipe = Pipeline::load("sd15")?;
//! let maps = pipe.cross_attention("cat.png", &AttentionRequest::new("a cat wearing a red hat").timestep(300))?;
//! println!("{}", maps.tokens.to_text()); // index, token, word
//! let hat = maps.map(&MapQuery::word("hat"))?; // [512, 512]
//! render(&hat, maps.image.as_ref(), &RenderOptions::mode(RenderMode::Overlay))?.save("hat.png").ok();
//! # Ok::<(), sdscope::Error>(())
//! ```
//!
//! The probabilities `softmax(QKᵀ/√d)` are computed explicitly in float32, only in the recorded layers; the
//! forward pass keeps its fused attention, so recording does not change the U-Net's output.

pub mod maps;
pub mod render;
pub mod tokens;

pub use maps::{AttentionMaps, HeadReduce, LayerSelect, MapQuery, Normalize, StepSelect, TokenReduce, Upsample};
pub use render::{html_grid, render, Colormap, RenderMode, RenderOptions};
pub use tokens::{TokenEntry, TokenKind, TokenSegment, TokenSelection, TokenTable};

use crate::error::{Error, Result};
use crate::image_io::{load_image, PreparedImage};
use crate::models::vae_decoder::to_rgb8;
use crate::pipeline::Pipeline;
use crate::taps::Taps;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::{Kind, Tensor};

/// Which attention layers to record and whether to keep heads apart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttentionCapture {
    /// Layer paths (`…attn2`, or `…attn1` for self-attention); `None` = every cross-attention layer.
    pub layers: Option<Vec<String>>,
    /// Keep every head (memory × heads) instead of their mean.
    pub per_head: bool,
}

/// Cross-attention on a real image: the extraction path (image → seeded VAE sample → noise at `timestep` → one
/// U-Net pass with the prompt). Defaults: timestep 50, seed 42.
#[derive(Debug, Clone)]
pub struct AttentionRequest {
    pub prompt: String,
    pub timestep: i64,
    pub seed: i64,
    pub capture: AttentionCapture,
}

impl AttentionRequest {
    pub fn new(prompt: impl Into<String>) -> Self {
        Self { prompt: prompt.into(), timestep: 50, seed: 42, capture: AttentionCapture::default() }
    }
    pub fn timestep(mut self, t: i64) -> Self {
        self.timestep = t;
        self
    }
    pub fn seed(mut self, seed: i64) -> Self {
        self.seed = seed;
        self
    }
    pub fn layers<S: Into<String>>(mut self, layers: impl IntoIterator<Item = S>) -> Self {
        self.capture.layers = Some(layers.into_iter().map(Into::into).collect());
        self
    }
    pub fn per_head(mut self, yes: bool) -> Self {
        self.capture.per_head = yes;
        self
    }
}

/// The latent grid of a layer with `tokens` query positions, found by halving the latent size (rounding up, as
/// stride-2 convolutions with padding 1 do) until it matches.
fn layer_grid(latent: (i64, i64), tokens: i64) -> Result<(i64, i64)> {
    let (mut h, mut w) = latent;
    loop {
        if h * w == tokens {
            return Ok((h, w));
        }
        if h * w < tokens || (h == 1 && w == 1) {
            return Err(Error::invalid(
                format!("attention with {tokens} query positions"),
                format!("matches no level of the {}×{} latent grid", latent.0, latent.1),
            ));
        }
        h = (h + 1) / 2;
        w = (w + 1) / 2;
    }
}

/// Per layer: steps of `[heads', L, S]` → `[steps, heads', S, h, w]`.
pub(crate) fn assemble(
    per_layer: BTreeMap<String, Vec<Tensor>>,
    latent: (i64, i64),
) -> Result<BTreeMap<String, Tensor>> {
    per_layer
        .into_iter()
        .map(|(path, steps)| {
            let stacked = Tensor::f_stack(&steps, 0)?.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Float)?;
            let s = stacked.size();
            let (h, w) = layer_grid(latent, s[2])?;
            let grid = stacked.f_transpose(-1, -2)?.f_contiguous()?.f_reshape([s[0], s[1], s[3], h, w])?;
            Ok((path, grid))
        })
        .collect()
}

impl Pipeline {
    /// Every text-attending layer in forward order: a U-Net's cross-attention (`…attn2`), an SD3
    /// transformer's joint attention (`transformer_blocks[i].attn`, its image → text part).
    pub fn cross_attention_layers(&self) -> Vec<String> {
        self.denoiser.text_attention_layers()
    }

    /// The token table of the text sequence attention maps index: CLIP (the first tokenizer's 77 positions), or
    /// for SD3 the joint sequence, CLIP-L's 77 positions then the T5 positions.
    pub fn attention_token_table(&self, prompt: &str) -> Result<TokenTable> {
        let clip = self.token_tables(prompt)?.remove(0);
        if self.family != crate::pipeline::Family::Sd3 {
            return Ok(clip);
        }
        let offset = clip.entries.len();
        let t5 = match &self.t5 {
            Some(t5) => {
                TokenTable::from_t5_encoding(&t5.tokenize(prompt)?, t5.tokenizer.eos_id(), offset, clip.word_count())
            }
            None => TokenTable::empty_segment(TokenSegment::T5, offset, crate::sd3_text::T5_MAX_SEQUENCE_LENGTH),
        };
        Ok(TokenTable::joint(clip, t5))
    }

    /// The prompt's tokens for each tokenizer: index, token, word (display with `to_text`).
    pub fn token_tables(&self, prompt: &str) -> Result<Vec<TokenTable>> {
        self.tokenizers
            .iter()
            .map(|t| Ok(TokenTable::from_encoding(&t.encode(prompt)?, t.bos_id(), t.eos_id())))
            .collect()
    }

    /// Check requested attention layers: known positions that are attention modules.
    pub(crate) fn resolve_attention_layers(&self, capture: &AttentionCapture) -> Result<Option<Vec<String>>> {
        let Some(layers) = &capture.layers else { return Ok(None) };
        let resolved = self.resolve_positions(layers)?;
        let recordable = self.denoiser.recordable_attention_layers();
        for (given, path) in layers.iter().zip(&resolved) {
            if !recordable.contains(path) {
                return Err(Error::invalid(
                    format!("attention layer `{given}`"),
                    format!(
                        "is not an attention module; cross-attention layers: {}",
                        self.cross_attention_layers().join(", ")
                    ),
                ));
            }
        }
        Ok(Some(resolved))
    }

    /// Cross-attention maps of an image file (see [`AttentionRequest`]).
    pub fn cross_attention(&self, image: impl AsRef<Path>, request: &AttentionRequest) -> Result<AttentionMaps> {
        self.cross_attention_prepared(&load_image(image.as_ref(), self.pixel_multiple() as u32)?, request)
    }

    /// Cross-attention maps of an image already prepared (e.g. by [`crate::datasets::load_resized`] or
    /// [`crate::generate::Generation::as_input`]).
    pub fn cross_attention_prepared(
        &self,
        prepared: &PreparedImage,
        request: &AttentionRequest,
    ) -> Result<AttentionMaps> {
        let _guard = tch::no_grad_guard();
        self.noise_schedule.check_timestep(request.timestep)?;
        let layers = self.resolve_attention_layers(&request.capture)?;
        let seeded = self.seeded_latents(&prepared.pixels, request.seed)?;
        let noisy = self.noise_schedule.add_noise(&seeded.latents, &seeded.noise, request.timestep)?;
        let cond = self.encode_prompt(&request.prompt)?;
        let mut taps = Taps::none();
        taps.record_attention(layers, request.capture.per_head);
        self.unet_pass(&noisy, request.timestep, &cond, prepared.size, &mut taps)?;
        let recorded: HashMap<String, Tensor> = taps.take_attention();
        let per_layer = recorded.into_iter().map(|(p, t)| Ok((p, vec![t.f_get(0)?]))).collect::<Result<_>>()?;
        let latent = (noisy.size()[2], noisy.size()[3]);
        let maps = assemble(per_layer, latent)?;
        let order: Vec<String> = self.positions().iter().filter(|p| maps.contains_key(*p)).cloned().collect();
        let tokens = self.attention_token_table(&request.prompt)?;
        let mut out = AttentionMaps::new(
            maps,
            order,
            vec![request.timestep as f64],
            prepared.size,
            tokens,
            request.capture.per_head,
        );
        out.image = Some(to_rgb8(&prepared.pixels.f_get(0)?)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_follow_the_downsampling() {
        assert_eq!(layer_grid((64, 64), 4096).unwrap(), (64, 64));
        assert_eq!(layer_grid((8, 12), 6).unwrap(), (2, 3));
        assert_eq!(layer_grid((8, 13), 28).unwrap(), (4, 7));
        assert!(layer_grid((8, 8), 5).is_err());
    }
}
