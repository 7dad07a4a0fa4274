//! A Stable Diffusion pipeline as sdscope uses it: tokenizers, text encoders, the denoiser (U-Net or SD3
//! transformer), VAE encoder and the noise process, loaded from a diffusers folder, a hub repo id or an alias.

use crate::config::{read_json, ClipConfig, SchedulerConfig, VaeConfig};
use crate::denoiser::{load_denoiser, Denoiser};
use crate::error::{Error, Result};
use crate::hub::{component_weights, resolve, ModelSource};
use crate::models::{ClipTextModel, VaeDecoder, VaeEncoder};
use crate::posterior_cache::PosteriorCache;
use crate::schedulers::{FlowMatchNoise, FlowMatchSettings, NoiseProcess, NoiseSchedule};
use crate::sd3_text::T5Text;
use crate::taps::{normalize_position, update_base};
use crate::tokenizer::{ClipTokenizer, Encoding};
use crate::weights::Weights;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Architecture family, read from which components a folder has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// One CLIP text encoder (SD1.x, SD2.x, SD-Turbo).
    SingleEncoder,
    /// Two text encoders and text/time micro-conditioning (SDXL, SDXL-Turbo, SDXL-Lightning).
    Xl,
    /// An MMDiT transformer, two CLIPs with projections and an optional T5, flow matching (SD3, SD3.5).
    Sd3,
}

/// Where and in which precision to load.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub device: Device,
    /// Working dtype of the weights (`Kind::Float` by default; `Kind::Half` on CUDA).
    pub dtype: Kind,
    /// Print one line per loaded component on stderr.
    pub progress: bool,
    /// SD3: do not load the T5 encoder (`text_encoder_3`); its part of the text sequence is zeros, as diffusers
    /// does without it.
    pub skip_t5: bool,
    /// SD3: the T5 encoder's dtype when it should differ from `dtype` (`Kind::BFloat16` keeps SD3 Medium's
    /// 4.7B-parameter T5 at half the memory while the rest stays float32).
    pub t5_dtype: Option<Kind>,
}

impl Default for LoadOptions {
    /// CPU, float32, progress lines; `SDSCOPE_NO_T5=1` sets `skip_t5` and `SDSCOPE_T5_DTYPE=bf16|fp16|fp32`
    /// sets `t5_dtype` (the CLI's `--no-t5` / `--t5-dtype` set these).
    fn default() -> Self {
        let skip_t5 = std::env::var_os("SDSCOPE_NO_T5").is_some_and(|v| !v.is_empty() && v != "0");
        let t5_dtype = std::env::var("SDSCOPE_T5_DTYPE").ok().and_then(|d| crate::sd3_text::parse_t5_dtype(&d).ok());
        Self { device: Device::Cpu, dtype: Kind::Float, progress: true, skip_t5, t5_dtype }
    }
}

/// The prompt conditioning handed to the denoiser.
/// # Shapes
/// `hidden_states: [1, 77, D]` (SD3: `[1, 77 + T5 tokens, D]`); `text_embeds: [1, P]` (pooled; SDXL and SD3)
pub struct TextConditioning {
    pub hidden_states: Tensor,
    pub text_embeds: Option<Tensor>,
}

pub struct Pipeline {
    pub source: ModelSource,
    pub family: Family,
    pub tokenizers: Vec<ClipTokenizer>,
    pub text_encoders: Vec<ClipTextModel>,
    /// SD3's T5 tokenizer and encoder (`None` when the model has none or it was skipped).
    pub t5: Option<T5Text>,
    pub denoiser: Box<dyn Denoiser>,
    pub vae: VaeEncoder,
    pub vae_decoder: VaeDecoder,
    pub scheduler_config: SchedulerConfig,
    /// The forward process of extraction: DDPM noise or flow matching, from the scheduler config.
    pub noise_schedule: Box<dyn NoiseProcess>,
    pub options: LoadOptions,
    /// VAE posteriors of recently extracted images (see [`PosteriorCache`]).
    pub posterior_cache: PosteriorCache,
}

fn note(options: &LoadOptions, what: &str, start: Instant) {
    if options.progress {
        eprintln!("[sdscope] loaded {what} in {:.1} s", start.elapsed().as_secs_f64());
    }
}

/// Load the tokenizers (`tokenizer/`, and `tokenizer_2/` when present).
pub fn load_tokenizers(root: &Path) -> Result<Vec<ClipTokenizer>> {
    let mut out = vec![ClipTokenizer::from_dir(&root.join("tokenizer"))?];
    if root.join("tokenizer_2").is_dir() {
        out.push(ClipTokenizer::from_dir(&root.join("tokenizer_2"))?);
    }
    Ok(out)
}

fn load_text_encoder(dir: &Path, options: &LoadOptions) -> Result<ClipTextModel> {
    let config_path = dir.join("config.json");
    let config: ClipConfig = read_json(&config_path)?;
    let weights = Weights::open_mapped(&component_weights(dir)?, options.dtype, options.device)?;
    ClipTextModel::load(config, &config_path, &weights)
}

fn load_vae(dir: &Path, options: &LoadOptions) -> Result<(VaeEncoder, VaeDecoder)> {
    let config_path = dir.join("config.json");
    let config: VaeConfig = read_json(&config_path)?;
    // SDXL's VAE overflows in fp16: diffusers keeps it in float32 (`force_upcast`).
    let dtype = if config.force_upcast { Kind::Float } else { options.dtype };
    let weights = Weights::open_mapped(&component_weights(dir)?, dtype, options.device)?;
    let decoder = VaeDecoder::load(config.clone(), &config_path, &weights)?;
    Ok((VaeEncoder::load(config, &config_path, &weights)?, decoder))
}

/// Read the scheduler config, applying the alias' overrides (e.g. Lightning's trailing spacing).
pub fn load_scheduler_config(source: &ModelSource) -> Result<(SchedulerConfig, PathBuf)> {
    let path = source.root.join("scheduler").join("scheduler_config.json");
    let mut config: SchedulerConfig = read_json(&path)?;
    if let Some(alias) = source.alias {
        if let Some(p) = alias.prediction_type {
            config.prediction_type = p.to_string();
        }
        if let Some(s) = alias.timestep_spacing {
            config.timestep_spacing = Some(s.to_string());
        }
    }
    Ok((config, path))
}

impl Pipeline {
    /// Load a model on the CPU in float32: a diffusers folder, a hub repo id, or an alias (`sd15`, `sdxl-turbo`).
    pub fn load(model: &str) -> Result<Self> {
        Self::load_with(model, LoadOptions::default())
    }

    pub fn load_with(model: &str, options: LoadOptions) -> Result<Self> {
        let source = resolve(model)?;
        let root = source.root.clone();
        let family = if crate::denoiser::denoiser_folder(&root) == "transformer" {
            Family::Sd3
        } else if root.join("text_encoder_2").is_dir() {
            Family::Xl
        } else {
            Family::SingleEncoder
        };
        let start = Instant::now();
        let tokenizers = load_tokenizers(&root)?;
        let mut text_encoders = vec![load_text_encoder(&root.join("text_encoder"), &options)?];
        if family != Family::SingleEncoder {
            text_encoders.push(load_text_encoder(&root.join("text_encoder_2"), &options)?);
        }
        if tokenizers.len() != text_encoders.len() {
            return Err(Error::invalid(
                format!("model {}", root.display()),
                "needs one tokenizer folder per text encoder",
            ));
        }
        let t5 = if family == Family::Sd3 { T5Text::load_optional(&root, &options)? } else { None };
        note(&options, "tokenizers and text encoders", start);
        let denoiser = load_denoiser(&source, &options)?;
        let start = Instant::now();
        let (vae, vae_decoder) = load_vae(&root.join("vae"), &options)?;
        note(&options, "vae", start);
        let (scheduler_config, path) = load_scheduler_config(&source)?;
        let noise_schedule: Box<dyn NoiseProcess> = if FlowMatchSettings::applies(&scheduler_config) {
            let settings = FlowMatchSettings::from_config(&scheduler_config, &path)?;
            Box::new(FlowMatchNoise { settings, patch_size: denoiser.latent_multiple() })
        } else {
            Box::new(NoiseSchedule::from_config(&scheduler_config, &path)?)
        };
        Ok(Self {
            source,
            family,
            tokenizers,
            text_encoders,
            t5,
            denoiser,
            vae,
            vae_decoder,
            scheduler_config,
            noise_schedule,
            options,
            posterior_cache: PosteriorCache::default(),
        })
    }

    /// Every valid position of the denoiser, in module-tree order.
    pub fn positions(&self) -> &[String] {
        self.denoiser.positions()
    }

    /// Parse and validate positions (`P` or `P@update`); an unknown one is an error listing the valid ones.
    pub fn resolve_positions<S: AsRef<str>>(&self, positions: &[S]) -> Result<Vec<String>> {
        resolve_positions(self.denoiser.positions(), self.denoiser.update_positions(), positions)
    }

    /// Check that every `P@update` among `positions` (resolved) is a module whose output has its input's shape,
    /// with one shape-only pass on a small zero input (a fraction of a second), so that a long job fails before
    /// it starts rather than at its first item.
    pub fn check_updates(&self, positions: &[String]) -> Result<()> {
        let updates: Vec<&String> = positions.iter().filter(|p| update_base(p).is_some()).collect();
        if updates.is_empty() {
            return Ok(());
        }
        let _guard = tch::no_grad_guard();
        let side = 16;
        let (sample, cond) = self.denoiser.dummy_inputs((side, side))?;
        let mut taps = crate::taps::Taps::capture(updates.into_iter().cloned(), true);
        let pixels = side * self.vae.scale_factor();
        let sample = sample.f_to_device(self.options.device)?;
        match self.unet_pass(&sample, 50, &cond, (pixels, pixels), &mut taps) {
            Err(Error::Shape { context, why }) => {
                Err(Error::Shape { context, why: format!("{why} (in a shape-only pass at {pixels}×{pixels} px)") })
            }
            other => other.map(|_| ()),
        }
    }

    /// Token ids of a prompt for each tokenizer (77 each, padded and truncated).
    pub fn tokenize(&self, prompt: &str) -> Result<Vec<Encoding>> {
        self.tokenizers.iter().map(|t| t.encode(prompt)).collect()
    }

    /// Text conditioning as diffusers' `encode_prompt` computes it (no guidance).
    pub fn encode_prompt(&self, prompt: &str) -> Result<TextConditioning> {
        self.encode_prompts(&[prompt])
    }

    /// Several prompts through the text encoders in one batch.
    /// # Shapes
    /// `hidden_states: [B, 77, D]`; `text_embeds: [B, P]` (SDXL only)
    pub fn encode_prompts(&self, prompts: &[&str]) -> Result<TextConditioning> {
        let _guard = tch::no_grad_guard();
        if prompts.is_empty() {
            return Err(Error::invalid("prompts", "give at least one prompt"));
        }
        let encodings = prompts.iter().map(|p| self.tokenize(p)).collect::<Result<Vec<_>>>()?;
        let ids = |tokenizer: usize| -> Result<Tensor> {
            let rows = encodings.iter().map(|e| Tensor::from_slice(&e[tokenizer].ids)).collect::<Vec<_>>();
            Ok(Tensor::f_stack(&rows, 0)?)
        };
        match self.family {
            Family::SingleEncoder => {
                let out = self.text_encoders[0].forward(&ids(0)?)?;
                Ok(TextConditioning { hidden_states: out.last_hidden_state, text_embeds: None })
            }
            Family::Sd3 => self.encode_sd3(&encodings, prompts),
            Family::Xl => {
                let first = self.text_encoders[0].forward(&ids(0)?)?;
                let second = self.text_encoders[1].forward(&ids(1)?)?;
                let hidden_states = Tensor::f_cat(&[first.penultimate, second.penultimate], -1)?;
                let text_embeds = second.text_embeds.ok_or_else(|| {
                    Error::invalid("text_encoder_2", "has no text_projection (SDXL needs CLIPTextModelWithProjection)")
                })?;
                Ok(TextConditioning { hidden_states, text_embeds: Some(text_embeds) })
            }
        }
    }

    /// The similarity explorer's default position: `up_blocks[1]` (SD1/2), `up_blocks[0]` (SDXL), the middle
    /// joint block (SD3).
    pub fn default_position(&self) -> String {
        match self.family {
            Family::SingleEncoder => "up_blocks[1]".into(),
            Family::Xl => "up_blocks[0]".into(),
            Family::Sd3 => {
                let blocks = self
                    .positions()
                    .iter()
                    .filter(|p| p.starts_with("transformer_blocks[") && !p.contains('.') && !p.contains('@'))
                    .count();
                format!("transformer_blocks[{}]", blocks / 2)
            }
        }
    }

    /// Image sides must be multiples of this many pixels (8, or 16 for SD3's 2×2 patches).
    pub fn pixel_multiple(&self) -> i64 {
        self.vae.scale_factor() * self.denoiser.latent_multiple()
    }

    /// SDXL micro-conditioning `(H, W, 0, 0, H, W)` for an image of this size.
    /// # Shapes
    /// → `[1, 6]`
    pub fn time_ids(&self, height: i64, width: i64) -> Result<Tensor> {
        let ids = [height as f32, width as f32, 0.0, 0.0, height as f32, width as f32];
        Ok(Tensor::from_slice(&ids).f_unsqueeze(0)?.f_to_device(self.options.device)?)
    }
}

/// Normalize positions and check them against the valid list; `P@update` also needs `P` in `updatable`.
pub fn resolve_positions<S: AsRef<str>>(
    valid: &[String],
    updatable: &[String],
    positions: &[S],
) -> Result<Vec<String>> {
    positions
        .iter()
        .map(|p| {
            let canonical = normalize_position(p.as_ref())?;
            let base = update_base(&canonical).unwrap_or(&canonical);
            if !valid.iter().any(|v| v == base) {
                return Err(Error::UnknownPosition { given: p.as_ref().to_string(), valid: valid.to_vec() });
            }
            if base != canonical && !updatable.iter().any(|u| u == base) {
                let examples: Vec<&str> = updatable.iter().take(4).map(String::as_str).collect();
                return Err(Error::invalid(
                    format!("position `{}`", p.as_ref()),
                    format!(
                        "`@update` (output − input) is available only at modules that take one hidden state and \
                         report it: blocks, resnets, attentions (Transformer2D), transformer blocks, attn1/attn2 \
                         and ff, e.g. {}@update",
                        examples.join("@update, ")
                    ),
                ));
            }
            Ok(canonical)
        })
        .collect()
}
