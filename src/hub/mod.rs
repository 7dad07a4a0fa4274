//! Resolving a `--model` argument (a local folder, a Hugging Face repo id, or an alias such as
//! `sdxl-turbo`) to a local folder in diffusers layout, downloading missing files into the
//! standard Hugging Face cache when allowed. Only `.safetensors` weights are ever fetched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
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
    /// Architecture family: `sd1`, `sd2`, `sdxl` or `sd3`.
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
pub const COMPONENTS: [&str; 10] = [
    "unet",
    "transformer",
    "vae",
    "text_encoder",
    "text_encoder_2",
    "text_encoder_3",
    "tokenizer",
    "tokenizer_2",
    "tokenizer_3",
    "scheduler",
];

const SDXL: &str = "stabilityai/stable-diffusion-xl-base-1.0";
const LIGHTNING: &str = "ByteDance/SDXL-Lightning";
const SD3_MEDIUM: &str = "stabilityai/stable-diffusion-3-medium-diffusers";

const fn plain(name: &'static str, repo: &'static str, steps: usize, cfg: f64, family: &'static str) -> ModelAlias {
    let (unet_repo, unet_file, prediction_type, timestep_spacing) = (None, None, None, None);
    ModelAlias {
        name,
        repo,
        unet_repo,
        unet_file,
        prediction_type,
        timestep_spacing,
        default_steps: steps,
        default_guidance: cfg,
        family,
    }
}

/// SDXL base with an SDXL-Lightning U-Net: trailing timesteps, no guidance.
const fn lightning(name: &'static str, file: &'static str, steps: usize, pred: Option<&'static str>) -> ModelAlias {
    let (unet_repo, unet_file, timestep_spacing) = (Some(LIGHTNING), Some(file), Some("trailing"));
    ModelAlias {
        unet_repo,
        unet_file,
        prediction_type: pred,
        timestep_spacing,
        ..plain(name, SDXL, steps, 0.0, "sdxl")
    }
}

/// The 1-step Lightning U-Net predicts x0 (`sample`) and is published under its own file name.
#[rustfmt::skip]
static ALIASES: [ModelAlias; 16] = [
    plain("sd1.5", "stable-diffusion-v1-5/stable-diffusion-v1-5", 50, 7.5, "sd1"),
    plain("sd1.4", "CompVis/stable-diffusion-v1-4", 50, 7.5, "sd1"),
    plain("sd2.1", "stabilityai/stable-diffusion-2-1", 50, 7.5, "sd2"),
    plain("sd2.1-base", "stabilityai/stable-diffusion-2-1-base", 50, 7.5, "sd2"),
    plain("sd-turbo", "stabilityai/sd-turbo", 4, 0.0, "sd2"),
    plain("sdxl", SDXL, 40, 5.0, "sdxl"),
    plain("sdxl-turbo", "stabilityai/sdxl-turbo", 4, 0.0, "sdxl"),
    lightning("sdxl-lightning-1step", "sdxl_lightning_1step_unet_x0.safetensors", 1, Some("sample")),
    lightning("sdxl-lightning-2step", "sdxl_lightning_2step_unet.safetensors", 2, None),
    lightning("sdxl-lightning-4step", "sdxl_lightning_4step_unet.safetensors", 4, None),
    lightning("sdxl-lightning-8step", "sdxl_lightning_8step_unet.safetensors", 8, None),
    plain("sd3", SD3_MEDIUM, 28, 7.0, "sd3"),
    plain("sd3-medium", SD3_MEDIUM, 28, 7.0, "sd3"),
    plain("sd3.5-medium", "stabilityai/stable-diffusion-3.5-medium", 40, 4.5, "sd3"),
    plain("sd3.5-large", "stabilityai/stable-diffusion-3.5-large", 28, 3.5, "sd3"),
    plain("sd3.5-large-turbo", "stabilityai/stable-diffusion-3.5-large-turbo", 4, 0.0, "sd3"),
];

/// All known model aliases.
pub fn aliases() -> &'static [ModelAlias] {
    &ALIASES
}

fn squash(s: &str) -> String {
    let kept = s.chars().filter(|c| !matches!(c, '-' | '_' | '.' | ' '));
    kept.flat_map(char::to_lowercase).collect()
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

/// Whether `HF_HUB_OFFLINE` forbids downloads.
pub(crate) fn offline_from_env() -> bool {
    let v = std::env::var("HF_HUB_OFFLINE").unwrap_or_default().to_ascii_lowercase();
    matches!(v.trim(), "1" | "true" | "yes" | "on")
}

/// Resolves `model` (a diffusers folder, an alias, or an `owner/name` hub repo id) to local files.
///
/// Hub files are looked up in the cache first; missing ones are downloaded unless
/// `HF_HUB_OFFLINE=1`, in which case (or when the download fails) the error is
/// [`Error::ModelNotCached`] with a command that fetches them.
pub fn resolve(model: &str) -> Result<ModelSource> {
    resolve_in(model, &cache_dir(), offline_from_env())
}

fn missing_file(path: impl Into<PathBuf>, hint: impl Into<String>) -> Error {
    Error::MissingFile { path: path.into(), hint: Some(hint.into()) }
}

fn resolve_in(model: &str, cache: &Path, offline: bool) -> Result<ModelSource> {
    let path = Path::new(model);
    let (repo, alias) = if path.is_dir() {
        let index = path.join("model_index.json");
        if !index.is_file() {
            let hint = "a diffusers pipeline folder has model_index.json next to unet/, vae/, \
                text_encoder/, tokenizer/ and scheduler/ (SDXL also text_encoder_2/, tokenizer_2/)";
            return Err(missing_file(index, hint));
        }
        let root = path.to_path_buf();
        return Ok(ModelSource { root, repo: None, alias: None, unet_override: None });
    } else if path.is_file() {
        let why = "this is a file; pass a diffusers pipeline folder, an alias or a hub repo id";
        return Err(Error::invalid(format!("--model {model}"), why));
    } else if let Some(alias) = find_alias(model) {
        (alias.repo, Some(alias))
    } else if model.starts_with(['/', '.', '~']) || model.contains('\\') || model.matches('/').count() > 1 {
        let hint = "no such folder; pass a diffusers folder, an alias, or an `owner/name` hub repo id";
        return Err(missing_file(path, hint));
    } else if is_repo_id(model) {
        (model, ALIASES.iter().find(|a| a.repo == model && a.unet_repo.is_none()))
    } else {
        let known = ALIASES.iter().map(|a| a.name.to_string()).collect();
        return Err(Error::UnknownModel { given: model.into(), known });
    };
    let root = fetch_pipeline(repo, cache, offline)?;
    let unet_override = match alias.and_then(|a| a.unet_repo.zip(a.unet_file)) {
        Some((unet_repo, file)) => Some(fetch_file(unet_repo, file, cache, offline)?),
        None => None,
    };
    Ok(ModelSource { root, repo: Some(repo.into()), alias, unet_override })
}

fn is_repo_id(s: &str) -> bool {
    let part = |p: &str| {
        let chars_ok = p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        chars_ok && !p.is_empty() && p != "." && p != ".."
    };
    matches!(s.split_once('/'), Some((owner, name)) if part(owner) && part(name))
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
    let snaps = entries.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.join(probe).exists());
    snaps.max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |e: serde_json::Error| Error::BadConfig { path: path.into(), why: e.to_string() };
    serde_json::from_str(&text).map_err(bad)
}

/// Components of `COMPONENTS` that `model_index.json` lists with a non-null class; SD3's T5 (`text_encoder_3`,
/// `tokenizer_3`) is not needed when `SDSCOPE_NO_T5` is set (the CLI's `--no-t5`), so a cache without its
/// 9.5 GB is enough then.
fn components(index: &Value) -> Vec<&'static str> {
    let listed = |c: &str| index.get(c).and_then(|v| v.get(1)).is_some_and(Value::is_string);
    let skip_t5 = std::env::var_os("SDSCOPE_NO_T5").is_some_and(|v| !v.is_empty() && v != "0");
    let wanted = |c: &str| !(skip_t5 && matches!(c, "text_encoder_3" | "tokenizer_3"));
    COMPONENTS.into_iter().filter(|c| listed(c) && wanted(c)).collect()
}

/// Non-weight files of a component, each with whether it is required.
fn fixed_files(comp: &str) -> Vec<(String, bool)> {
    let names: &[(&str, bool)] = match comp {
        "scheduler" => &[("scheduler_config.json", true)],
        // SD3's T5 tokenizer: sdscope reads only `tokenizer.json`.
        "tokenizer_3" => {
            &[("tokenizer.json", true), ("tokenizer_config.json", true), ("special_tokens_map.json", false)]
        }
        c if c.starts_with("tokenizer") => &[
            ("vocab.json", true),
            ("merges.txt", true),
            ("tokenizer_config.json", true),
            ("special_tokens_map.json", true),
            ("tokenizer.json", false),
        ],
        _ => &[("config.json", true)],
    };
    names.iter().map(|(n, req)| (format!("{comp}/{n}"), *req)).collect()
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

const PICKLE_EXTS: [&str; 4] = [".bin", ".ckpt", ".pt", ".pth"];

fn choose_weights(comp: &str, has: impl Fn(&str) -> bool) -> Option<String> {
    WEIGHT_NAMES.iter().map(|n| format!("{comp}/{n}")).find(|f| has(f))
}

fn default_weights(comp: &str) -> String {
    // WEIGHT_NAMES[0] is the diffusers name, [1] the transformers one.
    let transformers = comp.starts_with("text_encoder");
    format!("{comp}/{}", WEIGHT_NAMES[usize::from(transformers)])
}

/// Shard file names listed in a `*.safetensors.index.json`, sorted and deduplicated.
fn shard_names(index_file: &Path) -> Result<Vec<String>> {
    let index = read_json(index_file)?;
    let map = index.get("weight_map").and_then(Value::as_object);
    let names: Option<BTreeSet<String>> = map.and_then(|m| {
        let ok = |n: &&str| !n.contains(['/', '\\']) && n.ends_with(".safetensors");
        m.values().map(|v| v.as_str().filter(ok).map(String::from)).collect()
    });
    let why = "expected a `weight_map` of tensor names to .safetensors files in the same folder";
    let bad = || Error::BadConfig { path: index_file.into(), why: why.into() };
    Ok(names.filter(|n| !n.is_empty()).ok_or_else(bad)?.into_iter().collect())
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
        let shards: Vec<PathBuf> = shard_names(&file)?.iter().map(|s| dir.join(s)).collect();
        if let Some(absent) = shards.iter().find(|s| !s.is_file()) {
            return Err(missing_file(absent, format!("listed in {}", file.display())));
        }
        return Ok(shards);
    }
    let entries = std::fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok());
    let names = entries.filter_map(|e| e.file_name().into_string().ok());
    let mut pickles: Vec<String> = names.filter(|n| PICKLE_EXTS.iter().any(|x| n.ends_with(x))).collect();
    pickles.sort();
    if let Some(name) = pickles.first() {
        let kind = format!("PyTorch {} checkpoint", &name[name.rfind('.').unwrap_or(0)..]);
        return Err(Error::PickleRefused { path: dir.join(name), kind });
    }
    let hint = format!("looked for {} in {}", WEIGHT_NAMES.join(", "), dir.display());
    Err(missing_file(dir.join(WEIGHT_NAMES[0]), hint))
}

/// Files (relative to `snap`) the pipeline cached there needs but lacks.
fn missing_in(snap: &Path) -> Result<Vec<String>> {
    let index = read_json(&snap.join("model_index.json"))?;
    let has = |f: &str| snap.join(f).exists();
    let mut missing = Vec::new();
    for comp in components(&index) {
        let absent = fixed_files(comp).into_iter().filter(|(f, req)| *req && !has(f));
        missing.extend(absent.map(|(f, _)| f));
        if !has_weights(comp) {
            continue;
        }
        match choose_weights(comp, has) {
            Some(w) if w.ends_with(".json") => {
                let shards = shard_names(&snap.join(&w))?.into_iter().map(|s| format!("{comp}/{s}"));
                missing.extend(shards.filter(|f| !has(f)));
            }
            Some(_) => {}
            None => missing.push(default_weights(comp)),
        }
    }
    Ok(missing)
}

const CACHE_NOTE: &str = "(this fills the Hugging Face cache, $HF_HOME/hub, by default \
    ~/.cache/huggingface/hub; copy it here or point HF_HOME at it)";

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

/// Builds the `ModelNotCached` error for `repo`, given the reason.
fn not_cached<'a>(
    repo: &'a str,
    cache: &'a Path,
    missing: Vec<String>,
    fetch: String,
) -> impl Fn(String) -> Error + 'a {
    move |why| Error::ModelNotCached {
        repo: repo.into(),
        cache: cache.display().to_string(),
        missing: missing.clone(),
        why,
        fetch: fetch.clone(),
    }
}

/// The local snapshot folder of a hub pipeline, downloading missing files when allowed.
fn fetch_pipeline(repo: &str, cache: &Path, offline: bool) -> Result<PathBuf> {
    let missing = match cached_snapshot(cache, repo, "model_index.json") {
        Some(snap) => match missing_in(&snap)? {
            m if m.is_empty() => return Ok(snap),
            m => m,
        },
        None => vec!["model_index.json".to_string()],
    };
    let fetch = fetch_pipeline_command(repo, &missing);
    let fail = not_cached(repo, cache, missing, fetch);
    if offline {
        return Err(fail(OFFLINE_WHY.into()));
    }
    download_pipeline(repo, cache, &fail)
}

/// A cached single file of a hub repo, downloaded when missing and allowed.
fn fetch_file(repo: &str, file: &str, cache: &Path, offline: bool) -> Result<PathBuf> {
    if let Some(snap) = cached_snapshot(cache, repo, file) {
        return Ok(snap.join(file));
    }
    let fetch = format!("huggingface-cli download {repo} {file}\n  {CACHE_NOTE}");
    let fail = not_cached(repo, cache, vec![file.into()], fetch);
    if offline {
        return Err(fail(OFFLINE_WHY.into()));
    }
    let api = api_repo(repo, cache).map_err(|e| fail(e.to_string()))?;
    download(&api, repo, file, &fail)
}

fn api_repo(repo: &str, cache: &Path) -> std::result::Result<ApiRepo, ApiError> {
    Ok(hub_api(cache)?.model(repo.into()))
}

/// The hub client on the cache `cache`, honouring `HF_ENDPOINT` and `HF_TOKEN`, without progress bars.
pub(crate) fn hub_api(cache: &Path) -> std::result::Result<hf_hub::api::sync::Api, ApiError> {
    let mut builder = ApiBuilder::from_cache(hf_hub::Cache::new(cache.into())).with_progress(false);
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/').into());
    }
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        builder = builder.with_token(Some(token.trim().into()));
    }
    builder.build()
}

/// Maps a hub failure: HTTP 401/403/404 are the repo's fault, anything else means "unreachable".
fn hub_failure(repo: &str, err: ApiError, fail: &dyn Fn(String) -> Error) -> Error {
    let why = err.to_string();
    if ["401", "403", "404"].iter().any(|code| why.contains(&format!("status code {code}"))) {
        let why = format!(
            "{why}: no such repo or file, or it is private or gated (check the id; \
            for a gated repo accept its license on huggingface.co and set HF_TOKEN)"
        );
        return Error::Hub { repo: repo.into(), why };
    }
    fail(why)
}

/// Prints one line per downloaded file (hf-hub itself is silent with progress off).
struct Announce<'a>(&'a str, bool);

impl Progress for Announce<'_> {
    fn init(&mut self, size: usize, filename: &str) {
        if !std::mem::replace(&mut self.1, true) {
            let size = match size as f64 {
                s if s >= 1e9 => format!(" ({:.1} GB)", s / 1e9),
                s if s >= 1e6 => format!(" ({:.1} MB)", s / 1e6),
                s if s >= 1e3 => format!(" ({:.1} kB)", s / 1e3),
                _ if size > 0 => format!(" ({size} B)"),
                _ => String::new(),
            };
            eprintln!("[sdscope] downloading {filename}{size} from {}", self.0);
        }
    }
    fn update(&mut self, _size: usize) {}
    fn finish(&mut self) {}
}

fn download(api: &ApiRepo, repo: &str, file: &str, fail: &dyn Fn(String) -> Error) -> Result<PathBuf> {
    let announce = Announce(repo, false);
    api.download_with_progress(file, announce).map_err(|e| hub_failure(repo, e, fail))
}

/// Downloads what the pipeline needs into the snapshot of the repo's current `main` commit.
fn download_pipeline(repo: &str, cache: &Path, fail: &dyn Fn(String) -> Error) -> Result<PathBuf> {
    let api = api_repo(repo, cache).map_err(|e| fail(e.to_string()))?;
    let info = api.info().map_err(|e| hub_failure(repo, e, fail))?;
    let listed: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let snap = repo_dir(cache, repo).join("snapshots").join(&info.sha);
    let get = |f: &str| match snap.join(f).exists() {
        true => Ok(()),
        false => download(&api, repo, f, fail).map(drop),
    };
    let hub = |why: String| Error::Hub { repo: repo.into(), why };
    if !listed.contains("model_index.json") {
        return Err(hub("the repo has no model_index.json: it is not a diffusers pipeline".into()));
    }
    get("model_index.json")?;
    for comp in components(&read_json(&snap.join("model_index.json"))?) {
        for (f, required) in fixed_files(comp) {
            if listed.contains(&f) {
                get(&f)?;
            } else if required {
                return Err(hub(format!("the repo has no {f}, which a diffusers pipeline needs")));
            }
        }
        if !has_weights(comp) {
            continue;
        }
        let local = choose_weights(comp, |f| snap.join(f).exists());
        let Some(w) = local.or_else(|| choose_weights(comp, |f| listed.contains(f))) else {
            let prefix = format!("{comp}/");
            let pickle = listed.iter().find(|f| f.starts_with(&prefix) && PICKLE_EXTS.iter().any(|x| f.ends_with(x)));
            return Err(hub(match pickle {
                Some(p) => format!("{comp} weights exist only as pickle ({p}); sdscope loads only .safetensors"),
                None => format!("no {comp} weights ({}) in the repo", default_weights(comp)),
            }));
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

/// A transformers-style hub repository (not a diffusers pipeline) in the cache: the snapshot folder with
/// `required` files and the safetensors weights (`model.safetensors`, or the shards of
/// `model.safetensors.index.json`), downloaded when missing and allowed; `optional` files are fetched when the hub
/// has them. `known` lists the aliases for the error of an unknown name.
pub fn resolve_repo_files(model: &str, required: &[&str], optional: &[&str], known: &[&str]) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_file() {
        return Err(Error::invalid(
            format!("--model {model}"),
            "this is a file; pass a model folder, an alias or a hub repo id",
        ));
    }
    if model.starts_with(['/', '.', '~']) || model.contains('\\') || model.matches('/').count() > 1 {
        return Err(missing_file(
            path,
            "no such folder; pass a model folder, an alias, or an `owner/name` hub repo id",
        ));
    }
    if !is_repo_id(model) {
        return Err(Error::UnknownModel { given: model.into(), known: known.iter().map(|s| s.to_string()).collect() });
    }
    let (cache, offline) = (cache_dir(), offline_from_env());
    let mut root = None;
    for file in required {
        let p = fetch_file(model, file, &cache, offline)?;
        root.get_or_insert_with(|| p.parent().map(Path::to_path_buf).unwrap_or_default());
    }
    let root = root.ok_or_else(|| Error::invalid("hub files", "nothing was asked for"))?;
    if !root.join("model.safetensors").is_file() {
        let index = "model.safetensors.index.json";
        match fetch_file(model, "model.safetensors", &cache, offline) {
            Ok(_) => {}
            Err(first) => {
                let Ok(index_path) = fetch_file(model, index, &cache, offline) else { return Err(first) };
                for shard in shard_names(&index_path)? {
                    fetch_file(model, &shard, &cache, offline)?;
                }
            }
        }
    }
    for file in optional {
        // Absent on the hub, or not cached while offline: the caller falls back to defaults.
        let _ = fetch_file(model, file, &cache, offline);
    }
    Ok(root)
}

#[cfg(test)]
mod tests;
