//! Representation extraction (sdhelper's `img2repr`, with fixed semantics):
//! image → VAE posterior sample (first draw after `manual_seed`) → noise (second draw) → DDPM `add_noise` at
//! timestep t → one U-Net pass with the prompt's conditioning → outputs at the requested positions.

use crate::denoiser::DenoiserInput;
use crate::error::{Error, Result};
use crate::image_io::{load_image, PreparedImage};
use crate::interventions::Interventions;
use crate::models::LatentDistribution;
use crate::pipeline::{Family, Pipeline, TextConditioning};
use crate::posterior_cache::PixelsKey;
use crate::representations::{ImageInfo, Representations};
use crate::taps::Taps;
use std::collections::BTreeMap;
use std::path::Path;
use tch::Tensor;

/// What to extract. Defaults: timestep 50, seed 42, empty prompt, stop after the last position.
#[derive(Debug, Clone)]
pub struct ExtractRequest {
    pub positions: Vec<String>,
    pub timesteps: Vec<i64>,
    pub seed: i64,
    pub prompt: String,
    /// Run the whole U-Net even when every position has been captured earlier.
    pub whole_pass: bool,
    /// Print one progress line per image.
    pub progress: bool,
    /// Images of the same size run through one VAE encode and one U-Net pass, up to this many at a time. The
    /// seeded draws are each image's own; the numbers equal one-image extraction up to float rounding.
    pub batch: usize,
}

impl ExtractRequest {
    pub fn new<I, S>(positions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            positions: positions.into_iter().map(Into::into).collect(),
            timesteps: vec![50],
            seed: 42,
            prompt: String::new(),
            whole_pass: false,
            progress: true,
            batch: 1,
        }
    }

    /// Extract up to `n` images of the same size in one pass (at least 1).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    pub fn timestep(mut self, t: i64) -> Self {
        self.timesteps = vec![t];
        self
    }

    pub fn timesteps(mut self, ts: &[i64]) -> Self {
        self.timesteps = ts.to_vec();
        self
    }

    pub fn seed(mut self, seed: i64) -> Self {
        self.seed = seed;
        self
    }

    pub fn prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = prompt.into();
        self
    }

    pub fn whole_pass(mut self, yes: bool) -> Self {
        self.whole_pass = yes;
        self
    }

    pub fn progress(mut self, yes: bool) -> Self {
        self.progress = yes;
        self
    }
}

/// The seeded inputs of one image: clean latents and the noise that will be added.
/// # Shapes
/// `latents`, `noise`: `[1, 4, H/8, W/8]`
pub struct SeededLatents {
    pub latents: Tensor,
    pub noise: Tensor,
}

impl Pipeline {
    /// VAE-encode an image and draw its latent sample and noise from `seed` (the same draws as
    /// `torch.manual_seed(seed); dist.sample(); randn_like(...)` in Python).
    pub fn seeded_latents(&self, pixels: &Tensor, seed: i64) -> Result<SeededLatents> {
        Ok(self.seeded_latents_batch(&[pixels], &[seed])?.remove(0))
    }

    /// [`Pipeline::seeded_latents`] for several images of one size: the images not in the posterior cache are
    /// encoded in one VAE batch, then each image's sample and noise are drawn from its own seed.
    pub fn seeded_latents_batch(&self, pixels: &[&Tensor], seeds: &[i64]) -> Result<Vec<SeededLatents>> {
        if pixels.len() != seeds.len() {
            return Err(Error::invalid("seeds", format!("{} seeds for {} images", seeds.len(), pixels.len())));
        }
        let _guard = tch::no_grad_guard();
        let keys = pixels.iter().map(|p| PixelsKey::of(p)).collect::<Result<Vec<_>>>()?;
        let mut dists: Vec<Option<LatentDistribution>> = keys.iter().map(|k| self.posterior_cache.get(k)).collect();
        let missing: Vec<usize> = (0..pixels.len()).filter(|&i| dists[i].is_none()).collect();
        if !missing.is_empty() {
            let encode =
                |x: &Tensor| self.vae.encode(&x.f_to_device(self.options.device)?.f_to_kind(self.vae_dtype())?);
            let encoded = if missing.len() == 1 {
                vec![encode(pixels[missing[0]])?]
            } else {
                let joined = Tensor::f_cat(&missing.iter().map(|&i| pixels[i]).collect::<Vec<_>>(), 0)?;
                let both = encode(&joined)?;
                (0..missing.len() as i64)
                    .map(|j| {
                        Ok(LatentDistribution { mean: both.mean.f_narrow(0, j, 1)?, std: both.std.f_narrow(0, j, 1)? })
                    })
                    .collect::<Result<Vec<_>>>()?
            };
            for (&i, dist) in missing.iter().zip(encoded) {
                self.posterior_cache.insert(keys[i].clone(), &dist);
                dists[i] = Some(dist);
            }
        }
        // The global generator is shared by every thread: hold it from the seed to the last draw.
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        dists
            .into_iter()
            .zip(seeds)
            .map(|(dist, &seed)| {
                let dist = dist.ok_or_else(|| Error::invalid("posterior", "missing after encoding"))?;
                tch::manual_seed(seed);
                let mut latents = dist.sample()?;
                if let Some(shift) = self.vae.config.shift_factor {
                    latents = latents.f_sub_scalar(shift)?;
                }
                let latents = latents.f_mul_scalar(self.vae.config.scaling_factor)?;
                // `randn_like` keeps the latents' memory layout (the VAE's convolutions may return channels-last),
                // and the layout decides which value lands where: draw exactly as diffusers users do, on the CPU
                // generator.
                let noise = latents.f_to_device(tch::Device::Cpu)?.f_randn_like()?.f_to_device(latents.device())?;
                Ok(SeededLatents { latents, noise })
            })
            .collect()
    }

    pub(crate) fn vae_dtype(&self) -> tch::Kind {
        if self.vae.config.force_upcast {
            tch::Kind::Float
        } else {
            self.options.dtype
        }
    }

    /// One denoiser pass (U-Net or transformer) with taps, on noisy latents at step `t` (the model timestep is
    /// the noise process' value for `t`: `t` itself for DDPM, `timesteps[999 − t]` for flow matching).
    pub fn unet_pass(
        &self,
        noisy: &Tensor,
        t: i64,
        cond: &TextConditioning,
        size: (i64, i64),
        taps: &mut Taps,
    ) -> Result<Option<Tensor>> {
        let _guard = tch::no_grad_guard();
        let timestep = self.noise_schedule.model_timestep(t, noisy)?;
        let dtype = self.options.dtype;
        let noisy = noisy.f_to_kind(dtype)?;
        let batch = noisy.size()[0];
        let context = cond.hidden_states.f_to_kind(dtype)?.f_expand([batch, -1, -1], false)?;
        let pooled = match &cond.text_embeds {
            Some(t) => Some(t.f_to_kind(dtype)?.f_expand([batch, -1], false)?),
            None => None,
        };
        let time_ids = match self.family {
            Family::Xl => Some(self.time_ids(size.0, size.1)?.f_expand([batch, -1], false)?),
            _ => None,
        };
        let input = DenoiserInput { context: &context, pooled: pooled.as_ref(), time_ids: time_ids.as_ref() };
        self.denoiser.forward(&noisy, timestep, &input, taps)
    }

    /// Extract representations of image files.
    pub fn extract<P: AsRef<Path>>(&self, request: &ExtractRequest, images: &[P]) -> Result<Representations> {
        let prepared = images
            .iter()
            .map(|p| {
                let img = load_image(p.as_ref(), self.pixel_multiple() as u32)?;
                Ok((p.as_ref().display().to_string(), img))
            })
            .collect::<Result<Vec<_>>>()?;
        self.extract_prepared(request, prepared)
    }

    /// Extract representations of images already prepared (see [`crate::image_io::prepare_rgb`]).
    pub fn extract_prepared(
        &self,
        request: &ExtractRequest,
        images: Vec<(String, PreparedImage)>,
    ) -> Result<Representations> {
        self.extract_prepared_with(request, images, &mut Interventions::new())
    }

    /// Extract representations of image files with interventions in the pass (the step index of the
    /// [`crate::interventions::StepContext`] is the timestep's index in the request).
    pub fn extract_with<P: AsRef<Path>>(
        &self,
        request: &ExtractRequest,
        images: &[P],
        interventions: &mut Interventions,
    ) -> Result<Representations> {
        let prepared = images
            .iter()
            .map(|p| Ok((p.as_ref().display().to_string(), load_image(p.as_ref(), self.pixel_multiple() as u32)?)))
            .collect::<Result<Vec<_>>>()?;
        self.extract_prepared_with(request, prepared, interventions)
    }

    /// [`Pipeline::extract_prepared`] with interventions.
    pub fn extract_prepared_with(
        &self,
        request: &ExtractRequest,
        images: Vec<(String, PreparedImage)>,
        interventions: &mut Interventions,
    ) -> Result<Representations> {
        if request.positions.is_empty() {
            return Err(Error::invalid(
                "positions",
                format!(
                    "ask for at least one; e.g. `mid_block` or `up_blocks[1]` (valid: {})",
                    self.positions().join(", ")
                ),
            ));
        }
        if request.timesteps.is_empty() {
            return Err(Error::invalid("timesteps", "ask for at least one timestep in 0..=999"));
        }
        for &t in &request.timesteps {
            self.noise_schedule.check_timestep(t)?;
        }
        let positions = self.resolve_positions(&request.positions)?;
        interventions.resolve(self)?;
        if request.batch > 1 && !interventions.is_empty() {
            return Err(Error::invalid("batch", "interventions run on one image at a time (batch 1)"));
        }
        let cond = self.encode_prompt(&request.prompt)?;
        let mut out = Representations::new(positions.clone(), request.timesteps.clone());
        let total = images.len();
        let mut done = 0;
        for chunk in same_size_chunks(&images, request.batch) {
            if request.progress {
                for (source, image) in chunk {
                    done += 1;
                    let note = image.resized_from.map(|(h, w)| format!(" (resized from {w}×{h})")).unwrap_or_default();
                    eprintln!(
                        "[sdscope] extracting image {done}/{total}: {source} at {}×{}{note}",
                        image.size.1, image.size.0
                    );
                }
            }
            let prepared: Vec<&PreparedImage> = chunk.iter().map(|(_, image)| image).collect();
            let seeds = vec![request.seed; chunk.len()];
            let captured = self.extract_batch(request, &positions, &cond, &prepared, &seeds, interventions)?;
            for ((source, image), stacked) in chunk.iter().zip(captured) {
                let info = ImageInfo { source: source.clone(), size: image.size, resized_from: image.resized_from };
                out.push_image(info, stacked)?;
            }
        }
        Ok(out)
    }

    /// One VAE batch and one U-Net pass per timestep for images of one size, each with its own seed; per image,
    /// position → `[T, ..native]`. Positions must be resolved already.
    pub fn extract_batch(
        &self,
        request: &ExtractRequest,
        positions: &[String],
        cond: &TextConditioning,
        images: &[&PreparedImage],
        seeds: &[i64],
        interventions: &mut Interventions,
    ) -> Result<Vec<BTreeMap<String, Tensor>>> {
        let Some(first) = images.first() else { return Ok(Vec::new()) };
        if images.iter().any(|i| i.size != first.size) {
            return Err(Error::invalid("batch", "every image of one batch must have the same size"));
        }
        let pixels: Vec<&Tensor> = images.iter().map(|i| &i.pixels).collect();
        let seeded = self.seeded_latents_batch(&pixels, seeds)?;
        let mut per_step: Vec<BTreeMap<String, Vec<Tensor>>> = (0..images.len()).map(|_| BTreeMap::new()).collect();
        for (step, &t) in request.timesteps.iter().enumerate() {
            let noisy = seeded
                .iter()
                .map(|s| self.noise_schedule.add_noise(&s.latents, &s.noise, t))
                .collect::<Result<Vec<_>>>()?;
            let mut noisy = noisy;
            let noisy = if noisy.len() == 1 { noisy.remove(0) } else { Tensor::f_cat(&noisy, 0)? };
            let mut taps = Taps::capture(positions.iter().cloned(), !request.whole_pass);
            interventions.install(&mut taps, step, t as f64, false);
            self.unet_pass(&noisy, t, cond, first.size, &mut taps)?;
            let mut captured = taps.into_captured();
            for p in positions {
                let t = captured
                    .remove(p)
                    .ok_or_else(|| Error::invalid(format!("position `{p}`"), "was not reached in the forward pass"))?;
                for (i, slot) in per_step.iter_mut().enumerate() {
                    slot.entry(p.clone()).or_default().push(t.f_get(i as i64)?);
                }
            }
        }
        per_step
            .into_iter()
            .map(|m| m.into_iter().map(|(p, ts)| Ok((p, Tensor::f_stack(&ts, 0)?))).collect::<Result<BTreeMap<_, _>>>())
            .collect()
    }
}

/// Consecutive runs of images of the same size, at most `batch` long.
fn same_size_chunks(images: &[(String, PreparedImage)], batch: usize) -> Vec<&[(String, PreparedImage)]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for i in 1..=images.len() {
        if i == images.len() || i - start >= batch.max(1) || images[i].1.size != images[start].1.size {
            chunks.push(&images[start..i]);
            start = i;
        }
    }
    chunks
}
