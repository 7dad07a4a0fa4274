//! Text-to-image generation as diffusers' `StableDiffusionPipeline` / `StableDiffusionXLPipeline` run it, with
//! captures and interventions at any position and step.
//!
//! ```no_run
//! use sdscope::prelude::*;
//! let pipe = Pipeline::load("sd15")?;
//! let request = GenerateRequest::new("a cat").steps(25).guidance(7.5).seed(0).capture(["mid_block"]);
//! let out = pipe.generate(&request)?;
//! out.save_png("cat.png")?;
//! let mid = out.representations.as_ref().unwrap().image("mid_block", 0)?; // [25, 1280, 8, 8]: one per step
//! # Ok::<(), sdscope::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::image_io::save_rgb8_png;
use crate::interventions::Interventions;
use crate::models::vae_decoder::to_rgb8;
use crate::models::AddedConditioning;
use crate::pipeline::{Family, Pipeline};
use crate::representations::{ImageInfo, Representations};
use crate::schedulers::{build_sampler, SamplerKind};
use crate::taps::Taps;
use crate::xattn::{assemble, AttentionCapture, AttentionMaps};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tch::{Kind, Tensor};

/// Which half of a guided batch the captures keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureHalves {
    /// The prompt's half (the only one without guidance).
    Conditional,
    /// The negative prompt's half (nothing is captured without guidance).
    Unconditional,
    /// Both: stored as two entries, unconditional first, like the batch.
    Both,
}

/// What to generate. `None` fields take the model's defaults (see [`Pipeline::generation_defaults`]).
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: String,
    /// `None` is not the same as `""` for SDXL: with `force_zeros_for_empty_prompt`, diffusers uses zero
    /// unconditional embeddings only when no negative prompt is given at all.
    pub negative_prompt: Option<String>,
    pub steps: Option<usize>,
    /// Classifier-free guidance scale; guidance is on when it is above 1 (diffusers' rule).
    pub guidance: Option<f64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub seed: i64,
    /// Override the scheduler class of the model's config (keeping the config's other settings).
    pub scheduler: Option<SamplerKind>,
    /// Positions to capture at every step.
    pub capture: Vec<String>,
    pub capture_halves: CaptureHalves,
    /// Record cross-attention probabilities at every step (the conditional half), DAAM-style.
    pub attention: Option<AttentionCapture>,
    /// Decode the predicted clean image (x̂₀) at every step.
    pub decode_every_step: bool,
    /// One line per step on stderr.
    pub progress: bool,
}

impl GenerateRequest {
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: None,
            steps: None,
            guidance: None,
            width: None,
            height: None,
            seed: 0,
            scheduler: None,
            capture: Vec::new(),
            capture_halves: CaptureHalves::Conditional,
            attention: None,
            decode_every_step: false,
            progress: true,
        }
    }

    pub fn negative_prompt(mut self, negative: impl Into<String>) -> Self {
        self.negative_prompt = Some(negative.into());
        self
    }

    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = Some(steps);
        self
    }

    pub fn guidance(mut self, scale: f64) -> Self {
        self.guidance = Some(scale);
        self
    }

    /// Image size in pixels (multiples of 8).
    pub fn size(mut self, width: i64, height: i64) -> Self {
        self.width = Some(width);
        self.height = Some(height);
        self
    }

    pub fn seed(mut self, seed: i64) -> Self {
        self.seed = seed;
        self
    }

    pub fn scheduler(mut self, kind: SamplerKind) -> Self {
        self.scheduler = Some(kind);
        self
    }

    pub fn capture<I, S>(mut self, positions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capture = positions.into_iter().map(Into::into).collect();
        self
    }

    pub fn capture_halves(mut self, halves: CaptureHalves) -> Self {
        self.capture_halves = halves;
        self
    }

    /// Record cross-attention maps at every step (see [`crate::xattn`]).
    pub fn attention(mut self, capture: AttentionCapture) -> Self {
        self.attention = Some(capture);
        self
    }

    pub fn decode_every_step(mut self, yes: bool) -> Self {
        self.decode_every_step = yes;
        self
    }

    pub fn progress(mut self, yes: bool) -> Self {
        self.progress = yes;
        self
    }
}

/// Steps, guidance and size a model generates with when the request does not say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationDefaults {
    pub steps: usize,
    pub guidance: f64,
    pub width: i64,
    pub height: i64,
}

/// The result of a generation.
/// # Shapes
/// `latents: [1, 4, H/8, W/8]` (before VAE decode); `image: [1, 3, H, W]` in [-1, 1];
/// `step_latents[i]`, `step_images[i]` likewise, one per step.
pub struct Generation {
    pub prompt: String,
    pub seed: i64,
    pub sampler: SamplerKind,
    /// The timesteps the U-Net saw, one per step.
    pub timesteps: Vec<f64>,
    pub latents: Tensor,
    pub image: Tensor,
    /// Latents after each step.
    pub step_latents: Vec<Tensor>,
    /// Decoded x̂₀ of each step (when requested).
    pub step_images: Vec<Tensor>,
    /// Per position `[steps, ..native]` (timestep labels rounded to integers), when positions were captured.
    pub representations: Option<Representations>,
    /// Cross-attention maps of every step (conditional half), when requested.
    pub attention: Option<AttentionMaps>,
}

impl Generation {
    /// The image as 8-bit RGB `[H, W, 3]`, as diffusers' `output_type="pil"` gives it.
    pub fn rgb8(&self) -> Result<Tensor> {
        to_rgb8(&self.image.f_get(0)?)
    }

    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        save_rgb8_png(&self.rgb8()?, path.as_ref())
    }

    /// The generated image as an extraction input (8-bit, like a saved PNG read back).
    pub fn as_input(&self) -> Result<crate::image_io::PreparedImage> {
        let rgb = crate::xattn::render::tensor_to_rgb(&self.rgb8()?)?;
        crate::image_io::prepare_rgb(rgb, 8)
    }

    /// Write the final latents as safetensors under the key `latents` (`[1, 4, H/8, W/8]`, float32).
    pub fn save_latents(&self, path: impl AsRef<Path>) -> Result<()> {
        let latents = self.latents.f_to_kind(Kind::Float)?.f_to_device(tch::Device::Cpu)?;
        crate::tensor_io::save(path.as_ref(), &[("latents".to_string(), latents)], None)
    }
}

/// Prompt conditioning for the whole (possibly doubled) batch.
struct BatchConditioning {
    context: Tensor,
    added: Option<(Tensor, Tensor)>,
}

fn check_size(what: &str, value: i64, multiple: i64) -> Result<()> {
    if value <= 0 || value % multiple != 0 {
        return Err(Error::invalid(
            format!("{what} {value}"),
            format!("must be a positive multiple of {multiple} (e.g. {})", (value.max(multiple) / multiple) * multiple),
        ));
    }
    Ok(())
}

impl Pipeline {
    /// Steps, guidance and size used when a request leaves them out: the alias' recommendation (SD1.5 50 / 7.5,
    /// SDXL 40 / 5.0, Turbo 4 / 0, Lightning its step count / 0), else diffusers' pipeline defaults; the size is
    /// the U-Net's `sample_size` × 8.
    pub fn generation_defaults(&self) -> GenerationDefaults {
        let (steps, guidance) = match (self.source.alias, self.family) {
            (Some(alias), _) => (alias.default_steps, alias.default_guidance),
            (None, Family::SingleEncoder) => (50, 7.5),
            (None, Family::Xl) => (50, 5.0),
        };
        let side = self.unet.config.sample_size.unwrap_or(64) * self.vae.scale_factor();
        GenerationDefaults { steps, guidance, width: side, height: side }
    }

    /// Whether SDXL uses zero unconditional embeddings when no negative prompt is given (`model_index.json`).
    fn force_zeros_for_empty_prompt(&self) -> bool {
        let path = self.source.root.join("model_index.json");
        let value: Option<serde_json::Value> =
            std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok());
        value.and_then(|v| v.get("force_zeros_for_empty_prompt").and_then(|b| b.as_bool())).unwrap_or(true)
    }

    fn batch_conditioning(
        &self,
        request: &GenerateRequest,
        guided: bool,
        size: (i64, i64),
    ) -> Result<BatchConditioning> {
        let dtype = self.options.dtype;
        let cond = self.encode_prompt(&request.prompt)?;
        let time_ids = self.time_ids(size.0, size.1)?;
        if !guided {
            let added = cond.text_embeds.map(|te| (te, time_ids));
            return Ok(BatchConditioning { context: cond.hidden_states.f_to_kind(dtype)?, added });
        }
        let zero_uncond =
            self.family == Family::Xl && request.negative_prompt.is_none() && self.force_zeros_for_empty_prompt();
        let (uncond_hidden, uncond_pooled) = if zero_uncond {
            (cond.hidden_states.f_zeros_like()?, cond.text_embeds.as_ref().map(|t| t.f_zeros_like()).transpose()?)
        } else {
            let u = self.encode_prompt(request.negative_prompt.as_deref().unwrap_or(""))?;
            (u.hidden_states, u.text_embeds)
        };
        let context = Tensor::f_cat(&[uncond_hidden, cond.hidden_states], 0)?.f_to_kind(dtype)?;
        let added = match (uncond_pooled, cond.text_embeds) {
            (Some(u), Some(c)) => Some((Tensor::f_cat(&[u, c], 0)?, Tensor::f_cat(&[&time_ids, &time_ids], 0)?)),
            _ => None,
        };
        Ok(BatchConditioning { context, added })
    }

    /// Generate an image.
    pub fn generate(&self, request: &GenerateRequest) -> Result<Generation> {
        self.generate_with(request, &mut Interventions::new())
    }

    /// Generate an image with interventions (see [`crate::interventions`]).
    pub fn generate_with(&self, request: &GenerateRequest, interventions: &mut Interventions) -> Result<Generation> {
        let _guard = tch::no_grad_guard();
        let defaults = self.generation_defaults();
        let steps = request.steps.unwrap_or(defaults.steps);
        let guidance = request.guidance.unwrap_or(defaults.guidance);
        let (width, height) = (request.width.unwrap_or(defaults.width), request.height.unwrap_or(defaults.height));
        let factor = self.vae.scale_factor();
        check_size("width", width, factor)?;
        check_size("height", height, factor)?;
        if !guidance.is_finite() {
            return Err(Error::invalid(format!("guidance {guidance}"), "must be a finite number"));
        }
        let positions = self.resolve_positions(&request.capture)?;
        interventions.resolve(self.positions())?;
        let attention_layers = match &request.attention {
            Some(capture) => Some(self.resolve_attention_layers(capture)?),
            None => None,
        };
        let mut attention_steps: BTreeMap<String, Vec<Tensor>> = BTreeMap::new();
        let guided = guidance > 1.0 && self.unet.config.time_cond_proj_dim.is_none();
        let path = self.source.root.join("scheduler").join("scheduler_config.json");
        let mut sampler = build_sampler(request.scheduler, &self.scheduler_config, &path, steps)?;
        let timesteps = sampler.timesteps().to_vec();
        let cond = self.batch_conditioning(request, guided, (height, width))?;
        let added = match &cond.added {
            Some((text_embeds, time_ids)) => Some((text_embeds.f_to_kind(self.options.dtype)?, time_ids)),
            None => None,
        };

        let device = self.options.device;
        let shape = [1, self.unet.config.in_channels, height / factor, width / factor];
        // `torch.Generator().manual_seed(seed)` draws the initial latents, then (ancestral samplers) one noise
        // tensor per step: keep the global generator to ourselves for as long as we draw from it.
        let mut rng = Some(crate::RNG_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        tch::manual_seed(request.seed);
        let initial = Tensor::f_randn(shape, (self.options.dtype, tch::Device::Cpu))?.f_to_device(device)?;
        let mut latents = initial.f_mul_scalar(sampler.init_noise_sigma())?;
        if !sampler.is_stochastic() {
            rng = None;
        }

        let label = |t: f64| t.round() as i64;
        let mut per_half: Vec<BTreeMap<String, Vec<Tensor>>> = (0..2).map(|_| BTreeMap::new()).collect();
        let mut step_latents = Vec::with_capacity(timesteps.len());
        let mut step_images = Vec::new();
        let total = timesteps.len();
        for (i, &t) in timesteps.iter().enumerate() {
            let start = Instant::now();
            let input = if guided { Tensor::f_cat(&[&latents, &latents], 0)? } else { latents.shallow_clone() };
            let input = sampler.scale_model_input(&input, i)?;
            let mut taps = Taps::capture(positions.iter().cloned(), false);
            interventions.install(&mut taps, i, t, guided);
            if let (Some(layers), Some(capture)) = (&attention_layers, &request.attention) {
                taps.record_attention(layers.clone(), capture.per_head);
            }
            let added_cond = added.as_ref().map(|(text_embeds, time_ids)| AddedConditioning { text_embeds, time_ids });
            let out =
                self.unet.forward(&input.f_to_kind(self.options.dtype)?, t, &cond.context, added_cond, &mut taps)?;
            let out = out.ok_or_else(|| Error::invalid("U-Net pass", "stopped before its output"))?;
            let cond_index = if guided { 1 } else { 0 };
            for (layer, probs) in taps.take_attention() {
                attention_steps.entry(layer).or_default().push(probs.f_get(cond_index)?.f_to_device(tch::Device::Cpu)?);
            }
            for (p, tensor) in taps.into_captured() {
                let halves: Vec<(usize, i64)> = match (guided, request.capture_halves) {
                    (false, CaptureHalves::Unconditional) => vec![],
                    (false, _) => vec![(1, 0)],
                    (true, CaptureHalves::Conditional) => vec![(1, 1)],
                    (true, CaptureHalves::Unconditional) => vec![(0, 0)],
                    (true, CaptureHalves::Both) => vec![(0, 0), (1, 1)],
                };
                for (slot, index) in halves {
                    per_half[slot].entry(p.clone()).or_default().push(tensor.f_get(index)?);
                }
            }
            let noise_pred = if guided {
                let parts = out.f_chunk(2, 0)?;
                let (uncond, text) = (&parts[0], &parts[1]);
                uncond.f_add(&text.f_sub(uncond)?.f_mul_scalar(guidance)?)?
            } else {
                out
            };
            let mut draw = |shape: &[i64]| -> Result<Tensor> {
                Ok(Tensor::f_randn(shape, (noise_pred.kind(), tch::Device::Cpu))?)
            };
            let stepped = sampler.step(&noise_pred, i, &latents, &mut draw)?;
            latents = stepped.prev_sample;
            step_latents.push(latents.shallow_clone());
            if request.decode_every_step {
                step_images.push(self.decode_latents(&stepped.pred_original)?);
            }
            if request.progress {
                eprintln!("[sdscope] step {}/{total} t={} {:.2} s", i + 1, label(t), start.elapsed().as_secs_f64());
            }
        }
        drop(rng);

        let image = self.decode_latents(&latents)?;
        let representations = if positions.is_empty() {
            None
        } else {
            let mut reprs = Representations::new(positions.clone(), timesteps.iter().map(|&t| label(t)).collect());
            let names = ["unconditional", "conditional"];
            for (slot, captured) in per_half.into_iter().enumerate() {
                if captured.is_empty() {
                    continue;
                }
                let stacked = captured
                    .into_iter()
                    .map(|(p, ts)| Ok((p, Tensor::f_stack(&ts, 0)?)))
                    .collect::<Result<BTreeMap<_, _>>>()?;
                let source = format!("generated ({}): {}", names[slot], request.prompt);
                reprs.push_image(ImageInfo { source, size: (height, width), resized_from: None }, stacked)?;
            }
            Some(reprs)
        };
        let attention = if request.attention.is_some() {
            let latent = (latents.size()[2], latents.size()[3]);
            let maps = assemble(attention_steps, latent)?;
            let order: Vec<String> = self.positions().iter().filter(|p| maps.contains_key(*p)).cloned().collect();
            let tokens = self.token_tables(&request.prompt)?.remove(0);
            let per_head = request.attention.as_ref().is_some_and(|c| c.per_head);
            let mut maps = AttentionMaps::new(maps, order, timesteps.clone(), (height, width), tokens, per_head);
            maps.image = Some(to_rgb8(&image.f_get(0)?)?);
            Some(maps)
        } else {
            None
        };
        Ok(Generation {
            attention,
            prompt: request.prompt.clone(),
            seed: request.seed,
            sampler: sampler.kind(),
            timesteps,
            latents,
            image,
            step_latents,
            step_images,
            representations,
        })
    }

    /// Latents (as the U-Net works on them) → image in [-1, 1], in the VAE's dtype (float32 with `force_upcast`).
    /// # Shapes
    /// `[B, 4, h, w]` → `[B, 3, h·8, w·8]`
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Tensor> {
        self.vae_decoder.decode(&latents.f_to_kind(self.vae_dtype())?)
    }
}
