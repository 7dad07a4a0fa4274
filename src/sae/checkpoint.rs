//! SAE checkpoints: sdscope's own folder format (`sae.safetensors` + `sae.json`), and the public safetensors
//! formats of SAELens (`cfg.json` + `sae_weights.safetensors`) and EleutherAI's sparsify (`cfg.json` +
//! `sae.safetensors`). Pickles (`state_dict.pth`, `mean.pt`, …) are refused.

use super::{Activation, Sae};
use crate::error::{Error, Result};
use crate::tensor_io;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub const WEIGHTS_FILE: &str = "sae.safetensors";
pub const CONFIG_FILE: &str = "sae.json";
const FORMAT_TAG: &str = "sdscope-sae";

/// Where a checkpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SaeFormat {
    #[default]
    Sdscope,
    SaeLens,
    Sparsify,
}

/// What a checkpoint says about itself besides its weights.
#[derive(Debug, Clone, Default)]
pub struct SaeMeta {
    pub format: SaeFormat,
    /// The position it reads (`mid_block.attentions[0]@update`), when known.
    pub hook: Option<String>,
    /// The model whose representations it was trained on.
    pub model: Option<String>,
    /// The folder it was loaded from.
    pub dir: Option<PathBuf>,
    /// Training options, metrics and anything else recorded with it.
    pub extra: serde_json::Map<String, Value>,
}

impl Sae {
    /// Load an SAE folder in any supported format (detected from its files).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                hint: Some("an SAE is a folder: sae.safetensors + sae.json (or SAELens / sparsify files)".into()),
            });
        }
        let mut sae = if dir.join(CONFIG_FILE).is_file() {
            load_sdscope(dir)?
        } else if dir.join("sae_weights.safetensors").is_file() {
            load_saelens(dir)?
        } else if dir.join("cfg.json").is_file() && dir.join(WEIGHTS_FILE).is_file() {
            load_sparsify(dir)?
        } else {
            return Err(not_an_sae(dir));
        };
        sae.meta.dir = Some(dir.to_path_buf());
        check_shapes(&sae, dir)?;
        Ok(sae)
    }

    /// Save in sdscope's format: `DIR/sae.safetensors` and `DIR/sae.json`.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut tensors = vec![
            ("encoder.weight".to_string(), self.w_enc.shallow_clone()),
            ("encoder.bias".to_string(), self.b_enc.shallow_clone()),
            ("W_dec".to_string(), self.w_dec.shallow_clone()),
            ("b_dec".to_string(), self.b_pre.shallow_clone()),
        ];
        for (name, t) in [("mean", &self.mean), ("std", &self.std)] {
            if let Some(t) = t {
                tensors.push((name.to_string(), t.shallow_clone()));
            }
        }
        tensor_io::save(&dir.join(WEIGHTS_FILE), &tensors, None)?;
        let mut config = json!({
            "format": FORMAT_TAG,
            "version": 1,
            "d_in": self.d_in(),
            "num_latents": self.num_latents(),
            "k": self.k,
            "activation": self.activation,
            "threshold": self.threshold,
            "hook": self.meta.hook,
            "model": self.meta.model,
        });
        if let Value::Object(map) = &mut config {
            for (key, value) in &self.meta.extra {
                map.entry(key.clone()).or_insert(value.clone());
            }
        }
        let path = dir.join(CONFIG_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&config)?).map_err(|e| Error::io(&path, e))
    }
}

fn not_an_sae(dir: &Path) -> Error {
    let entries: Vec<String> = std::fs::read_dir(dir)
        .map(|it| it.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    if let Some(pickle) = entries.iter().find(|n| {
        let lower = n.to_ascii_lowercase();
        [".pth", ".pt", ".bin", ".ckpt", ".pkl"].iter().any(|ext| lower.ends_with(ext))
    }) {
        return Error::PickleRefused {
            path: dir.join(pickle),
            kind: "an SAE saved with torch.save; the README section `Converting pickled SAEs` shows the few lines \
                   of Python that convert it to sdscope's safetensors format"
                .into(),
        };
    }
    let sub: Vec<&String> = entries.iter().filter(|n| dir.join(n).join("cfg.json").is_file()).collect();
    if !sub.is_empty() {
        return Error::invalid(
            format!("SAE folder {}", dir.display()),
            format!(
                "holds one SAE per hook point; pick one of: {}",
                sub.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        );
    }
    Error::invalid(
        format!("SAE folder {}", dir.display()),
        "has none of sae.json + sae.safetensors (sdscope), cfg.json + sae_weights.safetensors (SAELens), \
         cfg.json + sae.safetensors (sparsify)",
    )
}

fn read_json(path: &Path) -> Result<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::BadConfig { path: path.to_path_buf(), why: "not a JSON object".into() }),
        Err(e) => Err(Error::BadConfig { path: path.to_path_buf(), why: e.to_string() }),
    }
}

fn int_field(cfg: &serde_json::Map<String, Value>, key: &str, path: &Path) -> Result<Option<i64>> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().filter(|&n| n > 0).map(Some).ok_or_else(|| Error::BadConfig {
            path: path.to_path_buf(),
            why: format!("`{key}` must be a positive integer, found {v}"),
        }),
    }
}

fn take(tensors: &mut std::collections::HashMap<String, Tensor>, name: &str, file: &Path) -> Result<Tensor> {
    tensors.remove(name).map(|t| t.to_kind(Kind::Float)).ok_or_else(|| Error::MissingTensor {
        name: name.into(),
        file: file.to_path_buf(),
        expected: None,
    })
}

/// `unet.up_blocks.1.attentions.0` → `up_blocks[1].attentions[0]`.
pub(crate) fn position_from_module_name(name: &str) -> String {
    let name = name.strip_prefix("unet.").unwrap_or(name);
    let mut out = String::new();
    for part in name.split('.') {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

fn load_sdscope(dir: &Path) -> Result<Sae> {
    let cfg_path = dir.join(CONFIG_FILE);
    let mut cfg = read_json(&cfg_path)?;
    if cfg.get("format").and_then(Value::as_str) != Some(FORMAT_TAG) {
        return Err(Error::BadConfig { path: cfg_path, why: format!("`format` is not \"{FORMAT_TAG}\"") });
    }
    let k = int_field(&cfg, "k", &cfg_path)?
        .ok_or_else(|| Error::BadConfig { path: cfg_path.clone(), why: "no `k`".into() })?;
    let activation: Activation = match cfg.get("activation") {
        None | Some(Value::Null) => Activation::TopK,
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| Error::BadConfig {
            path: cfg_path.clone(),
            why: format!("`activation` {v} is not one of \"topk\", \"batchtopk\""),
        })?,
    };
    let threshold = cfg.get("threshold").and_then(Value::as_f64);
    let weights = dir.join(WEIGHTS_FILE);
    let (mut t, _) = tensor_io::load(&weights)?;
    let sae = Sae {
        w_enc: take(&mut t, "encoder.weight", &weights)?,
        b_enc: take(&mut t, "encoder.bias", &weights)?,
        w_dec: take(&mut t, "W_dec", &weights)?,
        b_pre: take(&mut t, "b_dec", &weights)?,
        k,
        activation,
        threshold,
        subtract_pre_bias: true,
        mean: t.remove("mean"),
        std: t.remove("std"),
        meta: SaeMeta {
            format: SaeFormat::Sdscope,
            hook: cfg.get("hook").and_then(Value::as_str).map(str::to_string),
            model: cfg.get("model").and_then(Value::as_str).map(str::to_string),
            dir: None,
            extra: {
                for key in ["format", "version", "d_in", "num_latents", "k", "activation", "threshold", "hook", "model"]
                {
                    cfg.remove(key);
                }
                cfg
            },
        },
    };
    Ok(sae)
}

fn load_saelens(dir: &Path) -> Result<Sae> {
    let cfg_path = dir.join("cfg.json");
    let cfg = read_json(&cfg_path)?;
    let architecture = cfg.get("architecture").and_then(Value::as_str).unwrap_or("standard");
    if architecture != "topk" {
        return Err(Error::Unsupported {
            path: cfg_path,
            why: format!("SAELens architecture `{architecture}`; sdscope loads TopK SAEs (`architecture: topk`)"),
        });
    }
    if let Some(norm) = cfg.get("normalize_activations").and_then(Value::as_str) {
        if norm != "none" {
            return Err(Error::Unsupported {
                path: cfg_path,
                why: format!("`normalize_activations: {norm}`; only \"none\" is supported"),
            });
        }
    }
    let k = cfg
        .get("activation_fn_kwargs")
        .and_then(|kw| kw.get("k"))
        .and_then(Value::as_i64)
        .or_else(|| cfg.get("k").and_then(Value::as_i64))
        .filter(|&k| k > 0)
        .ok_or_else(|| Error::BadConfig { path: cfg_path.clone(), why: "no `activation_fn_kwargs.k`".into() })?;
    let weights = dir.join("sae_weights.safetensors");
    let (mut t, _) = tensor_io::load(&weights)?;
    let w_enc = take(&mut t, "W_enc", &weights)?;
    Ok(Sae {
        w_enc: w_enc.f_tr()?.f_contiguous()?,
        b_enc: take(&mut t, "b_enc", &weights)?,
        w_dec: take(&mut t, "W_dec", &weights)?,
        b_pre: take(&mut t, "b_dec", &weights)?,
        k,
        activation: Activation::TopK,
        threshold: None,
        subtract_pre_bias: cfg.get("apply_b_dec_to_input").and_then(Value::as_bool).unwrap_or(true),
        mean: None,
        std: None,
        meta: SaeMeta {
            format: SaeFormat::SaeLens,
            hook: cfg.get("hook_name").and_then(Value::as_str).map(position_from_module_name),
            model: cfg.get("model_name").and_then(Value::as_str).map(str::to_string),
            dir: None,
            extra: Default::default(),
        },
    })
}

fn load_sparsify(dir: &Path) -> Result<Sae> {
    let cfg_path = dir.join("cfg.json");
    let cfg = read_json(&cfg_path)?;
    let k = int_field(&cfg, "k", &cfg_path)?
        .ok_or_else(|| Error::BadConfig { path: cfg_path.clone(), why: "no `k`".into() })?;
    let weights = dir.join(WEIGHTS_FILE);
    let (mut t, _) = tensor_io::load(&weights)?;
    if t.contains_key("W_skip") {
        return Err(Error::Unsupported {
            path: weights,
            why: "a sparsify transcoder with a skip connection (`W_skip`); sdscope loads plain SAEs".into(),
        });
    }
    let hook = dir.file_name().map(|n| position_from_module_name(&n.to_string_lossy()));
    Ok(Sae {
        w_enc: take(&mut t, "encoder.weight", &weights)?,
        b_enc: take(&mut t, "encoder.bias", &weights)?,
        w_dec: take(&mut t, "W_dec", &weights)?,
        b_pre: take(&mut t, "b_dec", &weights)?,
        k,
        activation: Activation::TopK,
        threshold: None,
        subtract_pre_bias: true,
        mean: None,
        std: None,
        meta: SaeMeta { format: SaeFormat::Sparsify, hook, model: None, dir: None, extra: Default::default() },
    })
}

fn check_shapes(sae: &Sae, dir: &Path) -> Result<()> {
    let file = dir.to_path_buf();
    let mismatch = |name: &str, found: Vec<i64>, expected: Vec<i64>| Error::ShapeMismatch {
        name: name.into(),
        file: file.clone(),
        found,
        expected,
    };
    let s = sae.w_enc.size();
    if s.len() != 2 {
        return Err(mismatch("encoder weight", s, vec![-1, -1]));
    }
    let (n, d) = (s[0], s[1]);
    for (name, t, expected) in
        [("encoder bias", &sae.b_enc, vec![n]), ("W_dec", &sae.w_dec, vec![n, d]), ("b_dec", &sae.b_pre, vec![d])]
    {
        if t.size() != expected {
            return Err(mismatch(name, t.size(), expected));
        }
    }
    for (name, t) in [("mean", &sae.mean), ("std", &sae.std)] {
        if let Some(t) = t {
            if t.size() != [n] {
                return Err(mismatch(name, t.size(), vec![n]));
            }
        }
    }
    if sae.k < 1 || sae.k > n {
        return Err(Error::BadConfig { path: file, why: format!("k = {} must be in 1..={n}", sae.k) });
    }
    Ok(())
}
