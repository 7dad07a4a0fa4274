//! Resolving a `--model` argument (a local folder, a Hugging Face repo id, or an alias such as
//! `sdxl-turbo`) to a local folder in diffusers layout, downloading missing files into the
//! standard Hugging Face cache when allowed. Only `.safetensors` weights are ever fetched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::api::Progress;
use serde_json::Value;

use crate::error::{Error, Result};

/// A short name for a known model: its hub repo, optional U-Net replacement, and sampling defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelAlias {
    /// The alias as shown to users, e.g. `sdxl-turbo`.
    pub name: &'static str,
    /// Hugging Face repo id of the diffusers pipeline.
    pub repo: &'static str,
    /// Repo holding a U-Net weight file that replaces the pipeline's U-Net weights.
    pub unet_repo: Option<&'static str>,
    /// File name of that U-Net weight file inside `unet_repo`.
    pub unet_file: Option<&'static str>,
    /// Scheduler `prediction_type` override (`epsilon`, `v_prediction`, `sample`), if any.
    pub prediction_type: Option<&'static str>,
    /// Scheduler `timestep_spacing` override (`leading`, `trailing`, `linspace`), if any.
    pub timestep_spacing: Option<&'static str>,
    /// Recommended number of denoising steps.
    pub default_steps: usize,
    /// Recommended classifier-free guidance scale (0 disables guidance).
    pub default_guidance: f64,
    /// Architecture family: `sd1`, `sd2` or `sdxl`.
    pub family: &'static str,
}

/// Where a model's files live, once resolved.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// Folder holding `model_index.json` and the component sub-folders.
    pub root: PathBuf,
    /// Hub repo id, if the model came from the Hugging Face hub (or its cache).
    pub repo: Option<String>,
    /// The alias that matched, or the plain alias whose repo equals the given repo id.
    pub alias: Option<&'static ModelAlias>,
    /// A safetensors file whose tensors replace the U-Net weights (SDXL-Lightning).
    pub unet_override: Option<PathBuf>,
}

/// Pipeline components sdscope loads, in load order; others (safety checker, ...) are ignored.
pub const COMPONENTS: [&str; 7] = [
    "unet",
    "vae",
    "text_encoder",
    "text_encoder_2",
    "tokenizer",
    "tokenizer_2",
    "scheduler",
];

const SDXL: &str = "stabilityai/stable-diffusion-xl-base-1.0";
const LIGHTNING: &str = "ByteDance/SDXL-Lightning";

const fn plain(
    name: &'static str,
    repo: &'static str,
    steps: usize,
    cfg: f64,
    family: &'static str,
) -> ModelAlias {
    ModelAlias {
        name,
        repo,
        unet_repo: None,
        unet_file: None,
        prediction_type: None,
        timestep_spacing: None,
        default_steps: steps,
        default_guidance: cfg,
        family,
    }
}

const fn lightning(
    name: &'static str,
    file: &'static str,
    steps: usize,
    pred: Option<&'static str>,
) -> ModelAlias {
    ModelAlias {
        unet_repo: Some(LIGHTNING),
        unet_file: Some(file),
        prediction_type: pred,
        timestep_spacing: Some("trailing"),
        ..plain(name, SDXL, steps, 0.0, "sdxl")
    }
}

static ALIASES: [ModelAlias; 11] = [
    plain(
        "sd1.5",
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        50,
        7.5,
        "sd1",
    ),
    plain("sd1.4", "CompVis/stable-diffusion-v1-4", 50, 7.5, "sd1"),
    plain("sd2.1", "stabilityai/stable-diffusion-2-1", 50, 7.5, "sd2"),
    plain(
        "sd2.1-base",
        "stabilityai/stable-diffusion-2-1-base",
        50,
        7.5,
        "sd2",
    ),
    plain("sd-turbo", "stabilityai/sd-turbo", 4, 0.0, "sd2"),
    plain("sdxl", SDXL, 40, 5.0, "sdxl"),
    plain("sdxl-turbo", "stabilityai/sdxl-turbo", 4, 0.0, "sdxl"),
    // The 1-step U-Net predicts x0 and is published under a different file name.
    lightning(
        "sdxl-lightning-1step",
        "sdxl_lightning_1step_unet_x0.safetensors",
        1,
        Some("sample"),
    ),
    lightning(
        "sdxl-lightning-2step",
        "sdxl_lightning_2step_unet.safetensors",
        2,
        None,
    ),
    lightning(
        "sdxl-lightning-4step",
        "sdxl_lightning_4step_unet.safetensors",
        4,
        None,
    ),
    lightning(
        "sdxl-lightning-8step",
        "sdxl_lightning_8step_unet.safetensors",
        8,
        None,
    ),
];

/// All known model aliases.
pub fn aliases() -> &'static [ModelAlias] {
    &ALIASES
}

fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Finds an alias, ignoring case and the characters `-`, `_`, `.` and space (`SD15` is `sd1.5`).
pub fn find_alias(name: &str) -> Option<&'static ModelAlias> {
    let key = squash(name);
    ALIASES.iter().find(|a| squash(a.name) == key)
}

/// The Hugging Face hub cache folder: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => hf_hub::Cache::from_env().path().clone(),
    }
}

fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// Resolves `model` (a diffusers folder, an alias, or an `owner/name` hub repo id) to local files.
///
/// Hub files are looked up in the cache first; missing ones are downloaded unless
/// `HF_HUB_OFFLINE=1`, in which case (or when the download fails) the error is
/// [`Error::ModelNotCached`] with a command that fetches them.
pub fn resolve(model: &str) -> Result<ModelSource> {
    resolve_in(model, &cache_dir(), offline_from_env())
}

fn resolve_in(model: &str, cache: &Path, offline: bool) -> Result<ModelSource> {
    let path = Path::new(model);
    if path.is_dir() {
        let index = path.join("model_index.json");
        if !index.is_file() {
            let hint = "a diffusers pipeline folder has model_index.json next to unet/, vae/, \
                        text_encoder/, tokenizer/ and scheduler/ (SDXL also text_encoder_2/, tokenizer_2/)";
            return Err(Error::MissingFile {
                path: index,
                hint: Some(hint.into()),
            });
        }
        return Ok(ModelSource {
            root: path.to_path_buf(),
            repo: None,
            alias: None,
            unet_override: None,
        });
    }
    if path.is_file() {
        let why = "this is a file; sdscope needs a diffusers pipeline folder (with model_index.json), an alias or a hub repo id";
        return Err(Error::invalid(format!("--model {model}"), why));
    }
    if let Some(alias) = find_alias(model) {
        let root = fetch_pipeline(alias.repo, cache, offline)?;
        let unet_override = match (alias.unet_repo, alias.unet_file) {
            (Some(repo), Some(file)) => Some(fetch_file(repo, file, cache, offline)?),
            _ => None,
        };
        return Ok(ModelSource {
            root,
            repo: Some(alias.repo.into()),
            alias: Some(alias),
            unet_override,
        });
    }
    let looks_like_path = model.starts_with(['/', '.', '~'])
        || model.contains('\\')
        || model.matches('/').count() > 1;
    if looks_like_path {
        let hint =
            "no such folder; pass a diffusers folder, an alias, or an `owner/name` hub repo id";
        return Err(Error::MissingFile {
            path: path.into(),
            hint: Some(hint.into()),
        });
    }
    if is_repo_id(model) {
        let root = fetch_pipeline(model, cache, offline)?;
        let alias = ALIASES
            .iter()
            .find(|a| a.repo == model && a.unet_repo.is_none());
        return Ok(ModelSource {
            root,
            repo: Some(model.into()),
            alias,
            unet_override: None,
        });
    }
    let known = ALIASES.iter().map(|a| a.name.to_string()).collect();
    Err(Error::UnknownModel {
        given: model.into(),
        known,
    })
}

fn is_repo_id(s: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    matches!(s.split_once('/'), Some((owner, name)) if ok(owner) && ok(name))
}

/// `<cache>/models--owner--name`.
fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// The snapshot `refs/main` points to if it holds `probe`, else the newest snapshot that does.
fn cached_snapshot(cache: &Path, repo: &str, probe: &str) -> Option<PathBuf> {
    let dir = repo_dir(cache, repo);
    if let Ok(hash) = std::fs::read_to_string(dir.join("refs").join("main")) {
        let snap = dir.join("snapshots").join(hash.trim());
        if snap.join(probe).exists() {
            return Some(snap);
        }
    }
    let entries = std::fs::read_dir(dir.join("snapshots")).ok()?;
    let snaps = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join(probe).exists());
    snaps.max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::BadConfig {
        path: path.into(),
        why: e.to_string(),
    })
}

/// Components of `COMPONENTS` that `model_index.json` lists with a non-null class.
fn components(index: &Value) -> Vec<&'static str> {
    let listed = |c: &str| matches!(index.get(c).and_then(Value::as_array), Some(v) if v.len() == 2 && v[1].is_string());
    COMPONENTS.into_iter().filter(|c| listed(c)).collect()
}

/// Non-weight files of a component, each with whether it is required.
fn fixed_files(comp: &str) -> Vec<(String, bool)> {
    let names: &[(&str, bool)] = if comp == "scheduler" {
        &[("scheduler_config.json", true)]
    } else if comp.starts_with("tokenizer") {
        &[
            ("vocab.json", true),
            ("merges.txt", true),
            ("tokenizer_config.json", true),
            ("special_tokens_map.json", true),
            ("tokenizer.json", false),
        ]
    } else {
        &[("config.json", true)]
    };
    names
        .iter()
        .map(|(n, req)| (format!("{comp}/{n}"), *req))
        .collect()
}

fn has_weights(comp: &str) -> bool {
    comp != "scheduler" && !comp.starts_with("tokenizer")
}

/// Weight file names in order of preference: plain, fp16 variant, then shard indexes.
const WEIGHT_NAMES: [&str; 8] = [
    "diffusion_pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "model.fp16.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors.index.fp16.json",
    "model.safetensors.index.fp16.json",
];

const PICKLE_EXTS: [&str; 4] = ["bin", "ckpt", "pt", "pth"];

fn choose_weights(comp: &str, has: impl Fn(&str) -> bool) -> Option<String> {
    WEIGHT_NAMES
        .iter()
        .map(|n| format!("{comp}/{n}"))
        .find(|f| has(f))
}

fn default_weights(comp: &str) -> String {
    let stem = if comp.starts_with("text_encoder") {
        "model"
    } else {
        "diffusion_pytorch_model"
    };
    format!("{comp}/{stem}.safetensors")
}

/// Shard file names listed in a `*.safetensors.index.json`, sorted and deduplicated.
fn shard_names(index_file: &Path) -> Result<Vec<String>> {
    let index = read_json(index_file)?;
    let bad = || Error::BadConfig {
        path: index_file.into(),
        why: "no `weight_map` object of file names".into(),
    };
    let map = index
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(bad)?;
    let names: Option<BTreeSet<&str>> = map.values().map(Value::as_str).collect();
    let names = names.ok_or_else(bad)?;
    if names
        .iter()
        .any(|n| n.contains('/') || n.contains('\\') || !n.ends_with(".safetensors"))
    {
        return Err(bad());
    }
    Ok(names.into_iter().map(String::from).collect())
}

/// The safetensors weight file(s) of a component folder (e.g. `<root>/unet`): the plain file,
/// else its `.fp16` variant, else all shards listed by a `*.safetensors.index.json`.
/// Pickle-only folders give [`Error::PickleRefused`].
pub fn component_weights(dir: &Path) -> Result<Vec<PathBuf>> {
    if let Some(name) = WEIGHT_NAMES.iter().find(|n| dir.join(n).is_file()) {
        let file = dir.join(name);
        if !name.ends_with(".json") {
            return Ok(vec![file]);
        }
        let hint = format!("listed in {}", file.display());
        let shards: Vec<PathBuf> = shard_names(&file)?.iter().map(|s| dir.join(s)).collect();
        if let Some(missing) = shards.iter().find(|s| !s.is_file()) {
            return Err(Error::MissingFile {
                path: missing.clone(),
                hint: Some(hint),
            });
        }
        return Ok(shards);
    }
    let mut pickles: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    pickles.retain(|p| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| PICKLE_EXTS.contains(&e))
    });
    pickles.sort();
    if let Some(path) = pickles.into_iter().next() {
        let kind = format!(
            "PyTorch .{} checkpoint",
            path.extension().unwrap_or_default().to_string_lossy()
        );
        return Err(Error::PickleRefused { path, kind });
    }
    let hint = format!(
        "looked for {} in {}",
        WEIGHT_NAMES.join(", "),
        dir.display()
    );
    Err(Error::MissingFile {
        path: dir.join(WEIGHT_NAMES[0]),
        hint: Some(hint),
    })
}

/// Files (relative to `snap`) the pipeline cached there needs but lacks.
fn missing_in(snap: &Path) -> Result<Vec<String>> {
    let index = read_json(&snap.join("model_index.json"))?;
    let has = |f: &str| snap.join(f).exists();
    let mut missing = Vec::new();
    for comp in components(&index) {
        missing.extend(
            fixed_files(comp)
                .into_iter()
                .filter(|(f, req)| *req && !has(f))
                .map(|(f, _)| f),
        );
        if !has_weights(comp) {
            continue;
        }
        match choose_weights(comp, has) {
            Some(w) if w.ends_with(".json") => {
                let shards = shard_names(&snap.join(&w))?
                    .into_iter()
                    .map(|s| format!("{comp}/{s}"));
                missing.extend(shards.filter(|f| !has(f)));
            }
            Some(_) => {}
            None => missing.push(default_weights(comp)),
        }
    }
    Ok(missing)
}

const CACHE_NOTE: &str =
    "(files go to the Hugging Face cache, $HF_HOME/hub, default ~/.cache/huggingface/hub; \
                          copy it here or point HF_HOME at it)";

fn fetch_pipeline_command(repo: &str, missing: &[String]) -> String {
    let mut cmd = format!("huggingface-cli download {repo} --include \"model_index.json\"");
    for c in COMPONENTS {
        cmd += &format!(" \"{c}/*\"");
    }
    cmd += " --exclude \"*.bin\" \"*.ckpt\" \"*.pt\" \"*.pth\" \"*.msgpack\" \"*.onnx*\" \"*non_ema*\"";
    if !missing.iter().any(|m| m.contains(".fp16.")) {
        cmd += " \"*.fp16.*\"";
    }
    format!("{cmd}\n  {CACHE_NOTE}")
}

const OFFLINE_WHY: &str = "HF_HUB_OFFLINE is set, so nothing was downloaded";

/// The local snapshot folder of a hub pipeline, downloading missing files when allowed.
fn fetch_pipeline(repo: &str, cache: &Path, offline: bool) -> Result<PathBuf> {
    let missing = match cached_snapshot(cache, repo, "model_index.json") {
        Some(snap) => {
            let missing = missing_in(&snap)?;
            if missing.is_empty() {
                return Ok(snap);
            }
            missing
        }
        None => vec!["model_index.json".to_string()],
    };
    let not_cached = |why: String| Error::ModelNotCached {
        repo: repo.into(),
        cache: cache.display().to_string(),
        fetch: fetch_pipeline_command(repo, &missing),
        missing: missing.clone(),
        why,
    };
    if offline {
        return Err(not_cached(OFFLINE_WHY.into()));
    }
    download_pipeline(repo, cache, &not_cached)
}

/// A cached single file of a hub repo, downloaded when missing and allowed.
fn fetch_file(repo: &str, file: &str, cache: &Path, offline: bool) -> Result<PathBuf> {
    if let Some(snap) = cached_snapshot(cache, repo, file) {
        return Ok(snap.join(file));
    }
    let not_cached = |why: String| Error::ModelNotCached {
        repo: repo.into(),
        cache: cache.display().to_string(),
        missing: vec![file.into()],
        why,
        fetch: format!("huggingface-cli download {repo} {file}\n  {CACHE_NOTE}"),
    };
    if offline {
        return Err(not_cached(OFFLINE_WHY.into()));
    }
    let api = api_repo(repo, cache).map_err(|e| not_cached(e.to_string()))?;
    download(&api, repo, file, &not_cached)
}

fn api_repo(repo: &str, cache: &Path) -> std::result::Result<ApiRepo, hf_hub::api::sync::ApiError> {
    let mut builder = ApiBuilder::from_cache(hf_hub::Cache::new(cache.into())).with_progress(false);
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/').into());
    }
    if let Ok(token) = std::env::var("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    Ok(builder.build()?.model(repo.into()))
}

/// Maps a hub failure: HTTP 401/403/404 are the repo's fault, anything else means "unreachable".
fn hub_failure(
    repo: &str,
    err: impl std::fmt::Display,
    not_cached: &dyn Fn(String) -> Error,
) -> Error {
    let why = err.to_string();
    if ["status code 401", "status code 403", "status code 404"]
        .iter()
        .any(|s| why.contains(s))
    {
        let why = format!("{why}: no such repo or file, or it is private/gated (check the id; for gated repos accept the license on huggingface.co and set HF_TOKEN)");
        return Error::Hub {
            repo: repo.into(),
            why,
        };
    }
    not_cached(why)
}

/// Prints one line per downloaded file (hf-hub itself is silent with progress off).
struct Announce<'a>(&'a str, bool);

impl Progress for Announce<'_> {
    fn init(&mut self, size: usize, filename: &str) {
        if !std::mem::replace(&mut self.1, true) {
            let size = match size as f64 {
                s if s >= 1e9 => format!(" ({:.1} GB)", s / 1e9),
                s if s >= 1e6 => format!(" ({:.1} MB)", s / 1e6),
                s if s > 0.0 => format!(" ({:.1} kB)", s / 1e3),
                _ => String::new(),
            };
            eprintln!("[sdscope] downloading {filename}{size} from {}", self.0);
        }
    }
    fn update(&mut self, _size: usize) {}
    fn finish(&mut self) {}
}

fn download(
    api: &ApiRepo,
    repo: &str,
    file: &str,
    not_cached: &dyn Fn(String) -> Error,
) -> Result<PathBuf> {
    api.download_with_progress(file, Announce(repo, false))
        .map_err(|e| hub_failure(repo, e, not_cached))
}

/// Downloads what the pipeline needs into the snapshot of the repo's current `main` commit.
fn download_pipeline(
    repo: &str,
    cache: &Path,
    not_cached: &dyn Fn(String) -> Error,
) -> Result<PathBuf> {
    let api = api_repo(repo, cache).map_err(|e| not_cached(e.to_string()))?;
    let info = api.info().map_err(|e| hub_failure(repo, e, not_cached))?;
    let listed: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let snap = repo_dir(cache, repo).join("snapshots").join(&info.sha);
    let get = |f: &str| -> Result<()> {
        if !snap.join(f).exists() {
            download(&api, repo, f, not_cached)?;
        }
        Ok(())
    };
    let hub = |why: String| Error::Hub {
        repo: repo.into(),
        why,
    };
    if !listed.contains("model_index.json") {
        return Err(hub(
            "the repo has no model_index.json: it is not a diffusers pipeline".into(),
        ));
    }
    get("model_index.json")?;
    let index = read_json(&snap.join("model_index.json"))?;
    for comp in components(&index) {
        for (f, required) in fixed_files(comp) {
            if listed.contains(&f) {
                get(&f)?;
            } else if required {
                return Err(hub(format!(
                    "the repo has no {f}, which a diffusers pipeline needs"
                )));
            }
        }
        if !has_weights(comp) {
            continue;
        }
        let local = choose_weights(comp, |f| snap.join(f).exists());
        let Some(w) = local.or_else(|| choose_weights(comp, |f| listed.contains(f))) else {
            let prefix = format!("{comp}/");
            let pickle = listed.iter().find(|f| {
                f.starts_with(&prefix) && PICKLE_EXTS.iter().any(|e| f.ends_with(&format!(".{e}")))
            });
            return Err(match pickle {
                Some(p) => hub(format!(
                    "{comp} weights exist only as pickle ({p}); sdscope loads only .safetensors"
                )),
                None => hub(format!(
                    "no {comp} weights ({}) in the repo",
                    default_weights(comp)
                )),
            });
        };
        get(&w)?;
        if w.ends_with(".json") {
            for shard in shard_names(&snap.join(&w))? {
                get(&format!("{comp}/{shard}"))?;
            }
        }
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("sdscope-hub-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn touch(root: &Path, files: &[&str]) {
        for f in files {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
    }

    /// A fake cached pipeline: sharded unet, fp16-only vae, plain text encoder.
    fn fake_repo(cache: &Path, repo: &str) -> PathBuf {
        let dir = repo_dir(cache, repo);
        std::fs::create_dir_all(dir.join("refs")).unwrap();
        std::fs::write(dir.join("refs/main"), "abc123\n").unwrap();
        let snap = dir.join("snapshots/abc123");
        touch(
            &snap,
            &[
                "unet/config.json",
                "unet/u-1.safetensors",
                "unet/u-2.safetensors",
            ],
        );
        touch(
            &snap,
            &[
                "vae/config.json",
                "vae/diffusion_pytorch_model.fp16.safetensors",
            ],
        );
        touch(
            &snap,
            &["text_encoder/config.json", "text_encoder/model.safetensors"],
        );
        touch(
            &snap,
            &[
                "tokenizer/vocab.json",
                "tokenizer/merges.txt",
                "tokenizer/tokenizer_config.json",
            ],
        );
        touch(
            &snap,
            &[
                "tokenizer/special_tokens_map.json",
                "scheduler/scheduler_config.json",
            ],
        );
        let shards = r#"{"weight_map": {"a": "u-1.safetensors", "b": "u-2.safetensors", "c": "u-1.safetensors"}}"#;
        std::fs::write(
            snap.join("unet/diffusion_pytorch_model.safetensors.index.json"),
            shards,
        )
        .unwrap();
        let index = r#"{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "PNDMScheduler"],
            "safety_checker": [null, null], "feature_extractor": ["transformers", "CLIPImageProcessor"]}"#;
        std::fs::write(snap.join("model_index.json"), index).unwrap();
        snap
    }

    #[test]
    fn aliases_match_loosely() {
        for (given, name) in [
            ("SD15", "sd1.5"),
            ("sd-1.5", "sd1.5"),
            ("SDXL_Turbo", "sdxl-turbo"),
            ("sdxl lightning 4step", "sdxl-lightning-4step"),
            ("sd2.1-base", "sd2.1-base"),
            ("SD21", "sd2.1"),
        ] {
            assert_eq!(find_alias(given).map(|a| a.name), Some(name), "{given}");
        }
        assert!(find_alias("sd3").is_none());
        let one = find_alias("sdxl-lightning-1step").unwrap();
        assert_eq!(
            (one.prediction_type, one.timestep_spacing, one.default_steps),
            (Some("sample"), Some("trailing"), 1)
        );
        assert_eq!(find_alias("sdxl").unwrap().default_guidance, 5.0);
        assert!(
            is_repo_id("stabilityai/sdxl-turbo") && !is_repo_id("a b/c") && !is_repo_id("sdxl")
        );
    }

    #[test]
    fn unknown_name_lists_aliases() {
        let cache = scratch("unknown");
        match resolve_in("no such model", &cache, true) {
            Err(Error::UnknownModel { given, known }) => {
                assert_eq!(given, "no such model");
                assert!(
                    known.iter().any(|k| k == "sd1.5")
                        && known.iter().any(|k| k == "sdxl-lightning-8step")
                );
            }
            other => panic!("expected UnknownModel, got {other:?}"),
        }
        assert!(matches!(
            resolve_in("./nope/here", &cache, true),
            Err(Error::MissingFile { .. })
        ));
        std::fs::remove_dir_all(cache).ok();
    }

    #[test]
    fn cached_repo_resolves_offline_to_snapshot() {
        let cache = scratch("cached");
        let snap = fake_repo(&cache, "acme/tiny");
        let src = resolve_in("acme/tiny", &cache, true).unwrap();
        assert_eq!(src.root, snap);
        assert_eq!(src.repo.as_deref(), Some("acme/tiny"));
        assert!(src.alias.is_none() && src.unet_override.is_none());
        let shards = component_weights(&src.root.join("unet")).unwrap();
        assert_eq!(
            shards,
            vec![
                snap.join("unet/u-1.safetensors"),
                snap.join("unet/u-2.safetensors")
            ]
        );
        // The snapshot is also a valid local folder; a folder without model_index.json is not.
        let local = resolve_in(snap.to_str().unwrap(), &cache, true).unwrap();
        assert_eq!((local.root, local.repo), (snap.clone(), None));
        assert!(matches!(
            resolve_in(cache.to_str().unwrap(), &cache, true),
            Err(Error::MissingFile { .. })
        ));
        std::fs::remove_dir_all(cache).ok();
    }

    #[test]
    fn missing_files_give_model_not_cached() {
        let cache = scratch("missing");
        let snap = fake_repo(&cache, "acme/tiny");
        std::fs::remove_file(snap.join("vae/diffusion_pytorch_model.fp16.safetensors")).unwrap();
        std::fs::remove_file(snap.join("unet/u-2.safetensors")).unwrap();
        match resolve_in("acme/tiny", &cache, true) {
            Err(Error::ModelNotCached {
                repo,
                missing,
                fetch,
                cache: c,
                ..
            }) => {
                assert_eq!(repo, "acme/tiny");
                assert_eq!(
                    missing,
                    vec![
                        "unet/u-2.safetensors",
                        "vae/diffusion_pytorch_model.safetensors"
                    ]
                );
                assert!(
                    fetch.starts_with("huggingface-cli download acme/tiny --include")
                        && fetch.contains("\"*.bin\"")
                );
                assert_eq!(c, cache.display().to_string());
            }
            other => panic!("expected ModelNotCached, got {other:?}"),
        }
        match resolve_in("other/absent", &cache, true) {
            Err(Error::ModelNotCached { missing, .. }) => {
                assert_eq!(missing, vec!["model_index.json"])
            }
            other => panic!("expected ModelNotCached, got {other:?}"),
        }
        std::fs::remove_dir_all(cache).ok();
    }

    #[test]
    fn lightning_alias_needs_unet_file() {
        let cache = scratch("lightning");
        let snap = fake_repo(&cache, SDXL);
        match resolve_in("SDXL-Lightning-4step", &cache, true) {
            Err(Error::ModelNotCached {
                repo,
                missing,
                fetch,
                ..
            }) => {
                assert_eq!(repo, LIGHTNING);
                assert_eq!(missing, vec!["sdxl_lightning_4step_unet.safetensors"]);
                assert!(fetch.starts_with(
                    "huggingface-cli download ByteDance/SDXL-Lightning sdxl_lightning_4step"
                ));
            }
            other => panic!("expected ModelNotCached, got {other:?}"),
        }
        let light = repo_dir(&cache, LIGHTNING);
        std::fs::create_dir_all(light.join("refs")).unwrap();
        std::fs::write(light.join("refs/main"), "def456").unwrap();
        touch(
            &light.join("snapshots/def456"),
            &["sdxl_lightning_4step_unet.safetensors"],
        );
        let src = resolve_in("sdxl-lightning-4step", &cache, true).unwrap();
        assert_eq!(src.root, snap);
        assert_eq!(
            src.unet_override,
            Some(light.join("snapshots/def456/sdxl_lightning_4step_unet.safetensors"))
        );
        assert_eq!(src.alias.map(|a| a.default_steps), Some(4));
        // A repo id equal to a plain alias's repo picks up that alias's defaults.
        assert_eq!(
            resolve_in(SDXL, &cache, true)
                .unwrap()
                .alias
                .map(|a| a.name),
            Some("sdxl")
        );
        std::fs::remove_dir_all(cache).ok();
    }

    #[test]
    fn component_weights_choice() {
        let dir = scratch("weights");
        assert!(matches!(
            component_weights(&dir),
            Err(Error::MissingFile { .. })
        ));
        touch(&dir, &["diffusion_pytorch_model.bin"]);
        assert!(matches!(
            component_weights(&dir),
            Err(Error::PickleRefused { .. })
        ));
        touch(&dir, &["diffusion_pytorch_model.fp16.safetensors"]);
        assert_eq!(
            component_weights(&dir).unwrap(),
            vec![dir.join("diffusion_pytorch_model.fp16.safetensors")]
        );
        touch(&dir, &["diffusion_pytorch_model.safetensors"]);
        assert_eq!(
            component_weights(&dir).unwrap(),
            vec![dir.join("diffusion_pytorch_model.safetensors")]
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
