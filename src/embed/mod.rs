//! Image and text embeddings: CLIP (transformers' `get_image_features` / `get_text_features`, preprocessing as
//! the Pillow `CLIPImageProcessor`) and U-Net representations pooled over space.
//!
//! ```no_run
//! use sdscope::embed::ClipModel;
//! let clip = ClipModel::load("clip-vit-base-patch32")?;
//! let images = clip.image_embeds(&["cat.png", "dog.png"], 32, true)?; // [2, 512]
//! let texts = clip.text_embeds(&["a cat", "a dog"])?; // [2, 512]
//! # Ok::<(), sdscope::Error>(())
//! ```

pub mod map;
pub mod processor;

use crate::config::ClipConfig;
use crate::error::{Error, Result};
use crate::hub::{component_weights, resolve_repo_files};
use crate::models::clip::ClipTextModel;
use crate::models::clip_vision::{ClipVisionConfig, ClipVisionModel};
use crate::pipeline::LoadOptions;
use crate::tokenizer::ClipTokenizer;
use crate::weights::Weights;
use processor::ClipImageProcessor;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Short names for CLIP checkpoints in transformers format.
pub const CLIP_ALIASES: [(&str, &str); 6] = [
    ("clip-vit-base-patch32", "openai/clip-vit-base-patch32"),
    ("clip-vit-base-patch16", "openai/clip-vit-base-patch16"),
    ("clip-vit-large-patch14", "openai/clip-vit-large-patch14"),
    ("clip-vit-large-patch14-336", "openai/clip-vit-large-patch14-336"),
    ("clip-vit-h-14", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
    ("clip-vit-bigg-14", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"),
];

/// A CLIP model: the vision tower with its projection, the text tower when the checkpoint has one.
pub struct ClipModel {
    pub vision: ClipVisionModel,
    pub text: Option<(ClipTextModel, ClipTokenizer)>,
    pub processor: ClipImageProcessor,
    /// The folder the files came from.
    pub root: PathBuf,
}

/// transformers' `CLIPTextConfig` defaults, under whatever the checkpoint's `text_config` says.
fn text_config(given: &Value, projection: Option<i64>, path: &Path) -> Result<ClipConfig> {
    let mut config = serde_json::json!({
        "vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
        "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5, "eos_token_id": 49407,
    });
    if let (Value::Object(base), Value::Object(over)) = (&mut config, given) {
        for (k, v) in over {
            base.insert(k.clone(), v.clone());
        }
    }
    config["projection_dim"] = projection.map_or(Value::Null, Value::from);
    serde_json::from_value(config).map_err(|e| Error::BadConfig { path: path.into(), why: e.to_string() })
}

impl ClipModel {
    /// A folder (`config.json`, `model.safetensors`, `preprocessor_config.json`, tokenizer files), a hub repo id
    /// in the Hugging Face cache, or an alias of [`CLIP_ALIASES`].
    pub fn load(model: &str) -> Result<Self> {
        Self::load_with(model, LoadOptions { progress: false, ..LoadOptions::default() })
    }

    pub fn load_with(model: &str, options: LoadOptions) -> Result<Self> {
        let repo = CLIP_ALIASES.iter().find(|(name, _)| name.eq_ignore_ascii_case(model)).map(|(_, r)| *r);
        let root = if Path::new(model).is_dir() {
            PathBuf::from(model)
        } else {
            resolve_repo_files(
                repo.unwrap_or(model),
                &["config.json", "model.safetensors"],
                &[
                    "preprocessor_config.json",
                    "vocab.json",
                    "merges.txt",
                    "tokenizer_config.json",
                    "special_tokens_map.json",
                ],
                &CLIP_ALIASES.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            )?
        };
        let config_path = root.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config: Value = serde_json::from_str(&text)
            .map_err(|e| Error::BadConfig { path: config_path.clone(), why: e.to_string() })?;
        let weights = Weights::open_mapped(&component_weights(&root)?, options.dtype, options.device)?;
        let projection = |name: &str| weights.shape_of(name).map(|s| s[0]);
        let vision_json = config.get("vision_config").cloned().unwrap_or_else(|| config.clone());
        let mut vision_config: ClipVisionConfig = serde_json::from_value(vision_json)
            .map_err(|e| Error::BadConfig { path: config_path.clone(), why: e.to_string() })?;
        vision_config.projection_dim = projection("visual_projection.weight");
        let vision = ClipVisionModel::load(vision_config, &config_path, &weights)?;
        let text = match (config.get("text_config"), root.join("vocab.json").is_file()) {
            (Some(tc), true) if weights.contains("text_model.embeddings.token_embedding.weight") => {
                let tc = text_config(tc, projection("text_projection.weight"), &config_path)?;
                Some((ClipTextModel::load(tc, &config_path, &weights)?, ClipTokenizer::from_dir(&root)?))
            }
            _ => None,
        };
        let processor_path = root.join("preprocessor_config.json");
        let processor = if processor_path.is_file() {
            ClipImageProcessor::load(&processor_path)?
        } else {
            ClipImageProcessor::default()
        };
        let (ch, cw) = processor.crop();
        let side = vision.config.image_size as u32;
        if (ch, cw) != (side, side) {
            return Err(Error::BadConfig {
                path: processor_path,
                why: format!("crop size {ch}×{cw} does not match the vision tower's image_size {side}"),
            });
        }
        if options.progress {
            eprintln!(
                "[sdscope] loaded CLIP from {} ({} vision layers{})",
                root.display(),
                vision.config.num_hidden_layers,
                if text.is_some() { ", text tower" } else { ", no text tower" }
            );
        }
        Ok(Self { vision, text, processor, root })
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> Option<i64> {
        self.vision.config.projection_dim
    }

    /// Image features of normalised pixels (`get_image_features`; not normalised).
    /// # Shapes
    /// `[B, 3, S, S]` → `[B, D]`.
    pub fn embed_pixels(&self, pixels: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let out = self.vision.forward(pixels)?;
        out.image_embeds.ok_or_else(|| {
            Error::invalid(
                "CLIP checkpoint",
                "has no `visual_projection.weight`: it is not a CLIP model with projection",
            )
        })
    }

    /// Image features of image files, in order, `batch` at a time, with a progress line when asked.
    /// # Shapes
    /// → `[N, D]` float32 on the CPU.
    pub fn image_embeds<P: AsRef<Path>>(&self, paths: &[P], batch: usize, progress: bool) -> Result<Tensor> {
        let mut parts = Vec::new();
        let start = std::time::Instant::now();
        for (i, chunk) in paths.chunks(batch.max(1)).enumerate() {
            let pixels = chunk.iter().map(|p| self.processor.preprocess(p.as_ref())).collect::<Result<Vec<_>>>()?;
            let embeds = self.embed_pixels(&Tensor::f_stack(&pixels, 0)?)?;
            parts.push(embeds.f_to_kind(Kind::Float)?.f_to_device(tch::Device::Cpu)?);
            if progress {
                let done = (i * batch.max(1) + chunk.len()).min(paths.len());
                let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-9);
                eprintln!("[sdscope] embedded {done}/{} images ({rate:.1} images/s)", paths.len());
            }
        }
        if parts.is_empty() {
            return Ok(Tensor::zeros([0, self.dim().unwrap_or(0)], (Kind::Float, tch::Device::Cpu)));
        }
        Ok(Tensor::f_cat(&parts, 0)?)
    }

    /// Text features (`get_text_features`: the pooled output through `text_projection`).
    /// # Shapes
    /// → `[T, D]` float32 on the CPU.
    pub fn text_embeds(&self, prompts: &[&str]) -> Result<Tensor> {
        let (model, tokenizer) = self.text.as_ref().ok_or_else(|| {
            Error::invalid("text features", "this CLIP checkpoint has no text tower (or no tokenizer files)")
        })?;
        let _guard = tch::no_grad_guard();
        let ids: Vec<i64> =
            prompts.iter().map(|p| tokenizer.encode(p).map(|e| e.ids)).collect::<Result<Vec<_>>>()?.concat();
        let ids = Tensor::from_slice(&ids).f_reshape([prompts.len() as i64, -1])?;
        let out = model.forward(&ids)?;
        let embeds =
            out.text_embeds.ok_or_else(|| Error::invalid("CLIP checkpoint", "has no `text_projection.weight`"))?;
        Ok(embeds.f_to_kind(Kind::Float)?.f_to_device(tch::Device::Cpu)?)
    }

    /// Token ids as the model's tokenizer gives them (padded to its length).
    pub fn tokenize(&self, prompt: &str) -> Result<Vec<i64>> {
        let (_, tokenizer) = self.text.as_ref().ok_or_else(|| Error::invalid("tokenize", "no text tower"))?;
        Ok(tokenizer.encode(prompt)?.ids)
    }
}
