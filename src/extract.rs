//! Representation extraction (sdhelper's `img2repr`, with fixed semantics):
//! image → VAE posterior sample (first draw after `manual_seed`) → noise (second draw) → DDPM `add_noise` at
//! timestep t → one U-Net pass with the prompt's conditioning → outputs at the requested positions.

use crate::error::{Error, Result};
use crate::image_io::{load_image, PreparedImage};
use crate::interventions::Interventions;
use crate::models::AddedConditioning;
use crate::pipeline::{Family, Pipeline, TextConditioning};
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
        }
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
        let _guard = tch::no_grad_guard();
        let dist = self.posterior_cache.get_or_encode(pixels, || {
            self.vae.encode(&pixels.f_to_device(self.options.device)?.f_to_kind(self.vae_dtype())?)
        })?;
        // The global generator is shared by every thread: hold it from the seed to the last draw.
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tch::manual_seed(seed);
        let mut latents = dist.sample()?;
        if let Some(shift) = self.vae.config.shift_factor {
            latents = latents.f_sub_scalar(shift)?;
        }
        let latents = latents.f_mul_scalar(self.vae.config.scaling_factor)?;
        // `randn_like` keeps the latents' memory layout (the VAE's convolutions may return channels-last), and
        // the layout decides which value lands where: draw exactly as diffusers users do, on the CPU generator.
        let noise = latents.f_to_device(tch::Device::Cpu)?.f_randn_like()?.f_to_device(latents.device())?;
        Ok(SeededLatents { latents, noise })
    }

    pub(crate) fn vae_dtype(&self) -> tch::Kind {
        if self.vae.config.force_upcast {
            tch::Kind::Float
        } else {
            self.options.dtype
        }
    }

    /// One U-Net pass with taps, on noisy latents at timestep `t`.
    pub fn unet_pass(
        &self,
        noisy: &Tensor,
        t: i64,
        cond: &TextConditioning,
        size: (i64, i64),
        taps: &mut Taps,
    ) -> Result<Option<Tensor>> {
        let _guard = tch::no_grad_guard();
        self.noise_schedule.check_timestep(t)?;
        let dtype = self.options.dtype;
        let noisy = noisy.f_to_kind(dtype)?;
        let context = cond.hidden_states.f_to_kind(dtype)?;
        let time_ids = self.time_ids(size.0, size.1)?;
        let text_embeds = match &cond.text_embeds {
            Some(t) => Some(t.f_to_kind(dtype)?),
            None => None,
        };
        let added = match (self.family, &text_embeds) {
            (Family::Xl, Some(text_embeds)) => Some(AddedConditioning { text_embeds, time_ids: &time_ids }),
            _ => None,
        };
        self.unet.forward(&noisy, t as f64, &context, added, taps)
    }

    /// Extract representations of image files.
    pub fn extract<P: AsRef<Path>>(&self, request: &ExtractRequest, images: &[P]) -> Result<Representations> {
        let prepared = images
            .iter()
            .map(|p| {
                let img = load_image(p.as_ref(), 8)?;
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
            .map(|p| Ok((p.as_ref().display().to_string(), load_image(p.as_ref(), 8)?)))
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
        interventions.resolve(self.positions())?;
        let cond = self.encode_prompt(&request.prompt)?;
        let mut out = Representations::new(positions.clone(), request.timesteps.clone());
        let total = images.len();
        for (i, (source, image)) in images.into_iter().enumerate() {
            if request.progress {
                let note = image.resized_from.map(|(h, w)| format!(" (resized from {w}×{h})")).unwrap_or_default();
                eprintln!(
                    "[sdscope] extracting image {}/{total}: {source} at {}×{}{note}",
                    i + 1,
                    image.size.1,
                    image.size.0
                );
            }
            let seeded = self.seeded_latents(&image.pixels, request.seed)?;
            let mut per_step: BTreeMap<String, Vec<Tensor>> = BTreeMap::new();
            for (step, &t) in request.timesteps.iter().enumerate() {
                let noisy = self.noise_schedule.add_noise(&seeded.latents, &seeded.noise, t)?;
                let mut taps = Taps::capture(positions.iter().cloned(), !request.whole_pass);
                interventions.install(&mut taps, step, t as f64, false);
                self.unet_pass(&noisy, t, &cond, image.size, &mut taps)?;
                let mut captured = taps.into_captured();
                for p in &positions {
                    let t = captured.remove(p).ok_or_else(|| {
                        Error::invalid(format!("position `{p}`"), "was not reached in the forward pass")
                    })?;
                    per_step.entry(p.clone()).or_default().push(t.f_get(0)?);
                }
            }
            let stacked = per_step
                .into_iter()
                .map(|(p, ts)| Ok((p, Tensor::f_stack(&ts, 0)?)))
                .collect::<Result<BTreeMap<_, _>>>()?;
            out.push_image(ImageInfo { source, size: image.size, resized_from: image.resized_from }, stacked)?;
        }
        Ok(out)
    }
}
