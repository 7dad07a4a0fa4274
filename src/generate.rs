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

use crate::denoiser::DenoiserInput;
use crate::error::{Error, Result};
use crate::image_io::save_rgb8_png;
use crate::interventions::Interventions;
use crate::models::vae_decoder::to_rgb8;
use crate::pipeline::{Family, Pipeline, TextConditioning};
use crate::representations::{ImageInfo, Representations};
use crate::schedulers::{build_sampler_sized, SamplerKind};
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
    /// Decode the final latents into `image` (off: `image` is empty, as diffusers' `output_type="latent"`).
    pub decode: bool,
    /// Only the captures are wanted: no decode, and the last step's U-Net pass stops right after the last
    /// captured position (the rest of that pass only feeds the final latents). `latents` and `image` are then
    /// empty and `step_latents` lacks the last step. Captures are unchanged.
    pub captures_only: bool,
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
            decode: true,
            captures_only: false,
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

    /// Keep only the captures (see [`GenerateRequest::captures_only`]).
    pub fn captures_only(mut self, yes: bool) -> Self {
        self.captures_only = yes;
        self
    }

    /// Whether to decode the final image (on by default; cross-attention maps always decode it).
    pub fn decode(mut self, yes: bool) -> Self {
        self.decode = yes;
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
/// `latents: [1, 4, H/8, W/8]` (before VAE decode); `image: [1, 3, H, W]` in [-1, 1] (`[1, 0]` when the request
/// set `decode(false)`);
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
        if self.image.numel() == 0 {
            return Err(Error::invalid("image", "was not decoded (the request set `decode(false)`)"));
        }
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

/// One prompt of a batched generation ([`Pipeline::generate_batch`]); the request gives everything else.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    pub prompt: String,
    /// As [`GenerateRequest::negative_prompt`]: `None` is not `""` for SDXL.
    pub negative_prompt: Option<String>,
    pub seed: i64,
}

impl BatchItem {
    pub fn new(prompt: impl Into<String>, seed: i64) -> Self {
        Self { prompt: prompt.into(), negative_prompt: None, seed }
    }
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

/// Per item, the noise an ancestral sampler draws at each step, drawn up front from the item's own seed in the
/// order a one-image run draws it, so a batch gives every image the noise it would get alone.
struct PredrawnNoise {
    /// item → step → `[1, C, h, w]`
    per_item: Vec<Vec<Tensor>>,
    step: usize,
    served: bool,
}

impl PredrawnNoise {
    fn next(&mut self, step: usize, shape: &[i64]) -> Result<Tensor> {
        if step != self.step {
            (self.step, self.served) = (step, false);
        }
        let parts: Vec<&Tensor> = self.per_item.iter().filter_map(|steps| steps.get(step)).collect();
        if self.served || parts.len() != self.per_item.len() {
            return Err(Error::invalid("sampler", "drew noise more than once in a step (not supported in batches)"));
        }
        self.served = true;
        let noise = Tensor::f_cat(&parts, 0)?;
        if noise.size() != shape {
            return Err(Error::Shape {
                context: "ancestral noise".into(),
                why: format!("the sampler asked for {shape:?}, the batch has {:?}", noise.size()),
            });
        }
        Ok(noise)
    }
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
            (None, Family::Sd3) => (28, 7.0),
        };
        let side = self.denoiser.default_latent_side() * self.vae.scale_factor();
        GenerationDefaults { steps, guidance, width: side, height: side }
    }

    /// Whether SDXL uses zero unconditional embeddings when no negative prompt is given (`model_index.json`).
    fn force_zeros_for_empty_prompt(&self) -> bool {
        let path = self.source.root.join("model_index.json");
        let value: Option<serde_json::Value> =
            std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok());
        value.and_then(|v| v.get("force_zeros_for_empty_prompt").and_then(|b| b.as_bool())).unwrap_or(true)
    }

    /// Conditioning of a batch: `[cond_1..B]`, or `[uncond_1..B, cond_1..B]` with guidance (diffusers' order).
    fn batch_conditioning(&self, items: &[BatchItem], guided: bool, size: (i64, i64)) -> Result<BatchConditioning> {
        let dtype = self.options.dtype;
        let time_ids = self.time_ids(size.0, size.1)?;
        let zero_uncond_allowed = self.family == Family::Xl && self.force_zeros_for_empty_prompt();
        let mut negatives: std::collections::HashMap<String, TextConditioning> = Default::default();
        let (mut uncond_hidden, mut uncond_pooled) = (vec![], vec![]);
        let prompts: Vec<&str> = items.iter().map(|i| i.prompt.as_str()).collect();
        let cond = self.encode_prompts(&prompts)?;
        for (row, item) in items.iter().enumerate() {
            if !guided {
                break;
            }
            let row = row as i64;
            let (h, p) = if zero_uncond_allowed && item.negative_prompt.is_none() {
                let pooled = cond.text_embeds.as_ref().map(|t| t.f_narrow(0, row, 1)?.f_zeros_like()).transpose()?;
                (cond.hidden_states.f_narrow(0, row, 1)?.f_zeros_like()?, pooled)
            } else {
                let negative = item.negative_prompt.clone().unwrap_or_default();
                if !negatives.contains_key(&negative) {
                    let encoded = self.encode_prompt(&negative)?;
                    negatives.insert(negative.clone(), encoded);
                }
                let u = &negatives[&negative];
                (u.hidden_states.shallow_clone(), u.text_embeds.as_ref().map(Tensor::shallow_clone))
            };
            uncond_hidden.push(h);
            uncond_pooled.extend(p);
        }
        let hidden = vec![cond.hidden_states];
        let pooled: Vec<Tensor> = cond.text_embeds.into_iter().collect();
        let rows = if guided { 2 * items.len() } else { items.len() } as i64;
        let has_pooled = !pooled.is_empty();
        uncond_hidden.extend(hidden);
        uncond_pooled.extend(pooled);
        let context = Tensor::f_cat(&uncond_hidden, 0)?.f_to_kind(dtype)?;
        let added = if has_pooled {
            Some((Tensor::f_cat(&uncond_pooled, 0)?, time_ids.f_expand([rows, -1], false)?.f_contiguous()?))
        } else {
            None
        };
        Ok(BatchConditioning { context, added })
    }

    /// Generate an image.
    pub fn generate(&self, request: &GenerateRequest) -> Result<Generation> {
        self.generate_with(request, &mut Interventions::new())
    }

    /// Generate an image with interventions (see [`crate::interventions`]).
    pub fn generate_with(&self, request: &GenerateRequest, interventions: &mut Interventions) -> Result<Generation> {
        let item = BatchItem {
            prompt: request.prompt.clone(),
            negative_prompt: request.negative_prompt.clone(),
            seed: request.seed,
        };
        let mut out = self.generate_items(request, std::slice::from_ref(&item), interventions)?;
        Ok(out.remove(0))
    }

    /// Generate several images in one batch: each item's prompt, negative prompt and seed, the request's
    /// everything else (its own prompt, negative prompt and seed are not used). Each image equals its one-image
    /// generation up to float rounding (the kernels may sum in another order for another batch size); the
    /// seeded draws, ancestral samplers' per-step noise included, are exactly the one-image ones.
    /// Cross-attention maps and interventions need one image at a time.
    pub fn generate_batch(&self, request: &GenerateRequest, items: &[BatchItem]) -> Result<Vec<Generation>> {
        if items.is_empty() {
            return Err(Error::invalid("batch", "give at least one item"));
        }
        if items.len() > 1 && request.attention.is_some() {
            return Err(Error::invalid("batch", "cross-attention maps are recorded one image at a time (batch 1)"));
        }
        self.generate_items(request, items, &mut Interventions::new())
    }

    fn generate_items(
        &self,
        request: &GenerateRequest,
        items: &[BatchItem],
        interventions: &mut Interventions,
    ) -> Result<Vec<Generation>> {
        let _guard = tch::no_grad_guard();
        let defaults = self.generation_defaults();
        let steps = request.steps.unwrap_or(defaults.steps);
        let guidance = request.guidance.unwrap_or(defaults.guidance);
        let (width, height) = (request.width.unwrap_or(defaults.width), request.height.unwrap_or(defaults.height));
        let factor = self.vae.scale_factor();
        check_size("width", width, self.pixel_multiple())?;
        check_size("height", height, self.pixel_multiple())?;
        if !guidance.is_finite() {
            return Err(Error::invalid(format!("guidance {guidance}"), "must be a finite number"));
        }
        if items.len() > 1 && !interventions.is_empty() {
            return Err(Error::invalid("batch", "interventions run on one image at a time (batch 1)"));
        }
        if request.captures_only && (request.attention.is_some() || request.capture.is_empty()) {
            return Err(Error::invalid("captures_only", "needs positions to capture and no cross-attention maps"));
        }
        let positions = self.resolve_positions(&request.capture)?;
        interventions.resolve(self)?;
        let attention_layers = match &request.attention {
            Some(capture) => Some(self.resolve_attention_layers(capture)?),
            None => None,
        };
        let mut attention_steps: BTreeMap<String, Vec<Tensor>> = BTreeMap::new();
        let guided = guidance > 1.0 && self.denoiser.supports_guidance();
        let path = self.source.root.join("scheduler").join("scheduler_config.json");
        let patches = self.pixel_multiple();
        let image_tokens = (height / patches) * (width / patches);
        let mut sampler =
            build_sampler_sized(request.scheduler, &self.scheduler_config, &path, steps, Some(image_tokens))?;
        let timesteps = sampler.timesteps().to_vec();
        let cond = self.batch_conditioning(items, guided, (height, width))?;
        let added = match &cond.added {
            Some((text_embeds, time_ids)) => Some((text_embeds.f_to_kind(self.options.dtype)?, time_ids)),
            None => None,
        };

        let device = self.options.device;
        let batch = items.len();
        let shape = [1, self.denoiser.in_channels(), height / factor, width / factor];
        // Per item, `torch.Generator().manual_seed(seed)` draws the initial latents, then (ancestral samplers) one
        // noise tensor per step; nothing else draws in between, so all of it is drawn here, under the lock.
        let mut initial = Vec::with_capacity(batch);
        let mut noise = PredrawnNoise { per_item: Vec::with_capacity(batch), step: 0, served: false };
        {
            let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for item in items {
                tch::manual_seed(item.seed);
                initial.push(Tensor::f_randn(shape, (self.options.dtype, tch::Device::Cpu))?);
                let draws = if sampler.is_stochastic() { timesteps.len() } else { 0 };
                let per_step = (0..draws)
                    .map(|_| Tensor::f_randn(shape, (self.options.dtype, tch::Device::Cpu)))
                    .collect::<Result<Vec<_>, _>>()?;
                noise.per_item.push(per_step);
            }
        }
        let initial = Tensor::f_cat(&initial, 0)?.f_to_device(device)?;
        let mut latents = initial.f_mul_scalar(sampler.init_noise_sigma())?;

        let label = |t: f64| t.round() as i64;
        // item → half (0 unconditional, 1 conditional) → position → per step
        let mut captures: Vec<Vec<BTreeMap<String, Vec<Tensor>>>> =
            (0..batch).map(|_| (0..2).map(|_| BTreeMap::new()).collect()).collect();
        let mut step_latents = Vec::with_capacity(timesteps.len());
        let mut step_images = Vec::new();
        let total = timesteps.len();
        for (i, &t) in timesteps.iter().enumerate() {
            let start = Instant::now();
            let input = if guided { Tensor::f_cat(&[&latents, &latents], 0)? } else { latents.shallow_clone() };
            let input = sampler.scale_model_input(&input, i)?;
            let last_pass_cut = request.captures_only && i + 1 == timesteps.len();
            let mut taps = Taps::capture(positions.iter().cloned(), last_pass_cut);
            interventions.install(&mut taps, i, t, guided);
            if let (Some(layers), Some(capture)) = (&attention_layers, &request.attention) {
                taps.record_attention(layers.clone(), capture.per_head);
            }
            let input_cond = DenoiserInput {
                context: &cond.context,
                pooled: added.as_ref().map(|(pooled, _)| pooled),
                time_ids: added.as_ref().map(|(_, time_ids)| *time_ids),
            };
            let out = self.denoiser.forward(&input.f_to_kind(self.options.dtype)?, t, &input_cond, &mut taps)?;
            let cond_offset = if guided { batch as i64 } else { 0 };
            for (layer, probs) in taps.take_attention() {
                attention_steps
                    .entry(layer)
                    .or_default()
                    .push(probs.f_get(cond_offset)?.f_to_device(tch::Device::Cpu)?);
            }
            let halves: Vec<(usize, i64)> = match (guided, request.capture_halves) {
                (false, CaptureHalves::Unconditional) => vec![],
                (false, _) => vec![(1, 0)],
                (true, CaptureHalves::Conditional) => vec![(1, cond_offset)],
                (true, CaptureHalves::Unconditional) => vec![(0, 0)],
                (true, CaptureHalves::Both) => vec![(0, 0), (1, cond_offset)],
            };
            for (p, tensor) in taps.into_captured() {
                for &(slot, offset) in &halves {
                    for (item, per_half) in captures.iter_mut().enumerate() {
                        per_half[slot].entry(p.clone()).or_default().push(tensor.f_get(offset + item as i64)?);
                    }
                }
            }
            if last_pass_cut {
                latents = Tensor::f_zeros([batch as i64, 0], (Kind::Float, tch::Device::Cpu))?;
                break;
            }
            let out = out.ok_or_else(|| Error::invalid("U-Net pass", "stopped before its output"))?;
            let noise_pred = if guided {
                let parts = out.f_chunk(2, 0)?;
                let (uncond, text) = (&parts[0], &parts[1]);
                uncond.f_add(&text.f_sub(uncond)?.f_mul_scalar(guidance)?)?
            } else {
                out
            };
            let mut draw = |shape: &[i64]| -> Result<Tensor> { noise.next(i, shape) };
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

        let image = if (request.decode || request.attention.is_some()) && !request.captures_only {
            self.decode_latents(&latents)?
        } else {
            Tensor::f_zeros([batch as i64, 0], (Kind::Float, tch::Device::Cpu))?
        };
        let mut attention = if request.attention.is_some() {
            let latent = (latents.size()[2], latents.size()[3]);
            let maps = assemble(attention_steps, latent)?;
            let order: Vec<String> = self.positions().iter().filter(|p| maps.contains_key(*p)).cloned().collect();
            let tokens = self.attention_token_table(&items[0].prompt)?;
            let per_head = request.attention.as_ref().is_some_and(|c| c.per_head);
            let mut maps = AttentionMaps::new(maps, order, timesteps.clone(), (height, width), tokens, per_head);
            maps.image = Some(to_rgb8(&image.f_get(0)?)?);
            Some(maps)
        } else {
            None
        };
        let mut out = Vec::with_capacity(batch);
        for (i, (item, per_half)) in items.iter().zip(captures).enumerate() {
            let row = |t: &Tensor| t.f_narrow(0, i as i64, 1);
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
                    let source = format!("generated ({}): {}", names[slot], item.prompt);
                    reprs.push_image(ImageInfo { source, size: (height, width), resized_from: None }, stacked)?;
                }
                Some(reprs)
            };
            out.push(Generation {
                attention: attention.take(),
                prompt: item.prompt.clone(),
                seed: item.seed,
                sampler: sampler.kind(),
                timesteps: timesteps.clone(),
                latents: row(&latents)?,
                image: row(&image)?,
                step_latents: step_latents.iter().map(row).collect::<Result<_, _>>()?,
                step_images: step_images.iter().map(row).collect::<Result<_, _>>()?,
                representations,
            });
        }
        Ok(out)
    }

    /// Latents (as the U-Net works on them) → image in [-1, 1], in the VAE's dtype (float32 with `force_upcast`).
    /// # Shapes
    /// `[B, 4, h, w]` → `[B, 3, h·8, w·8]`
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Tensor> {
        self.vae_decoder.decode(&latents.f_to_kind(self.vae_dtype())?)
    }
}
