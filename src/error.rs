//! The one error type of the public API. Every variant says what was wrong and, where it can, what would be right.

use std::path::PathBuf;

/// Result alias used across sdscope.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown position `{given}`; {}", suggest_positions(given, valid))]
    UnknownPosition { given: String, valid: Vec<String> },

    #[error("cannot parse position `{given}`: {why} (write e.g. `up_blocks[1].attentions[0]`)")]
    BadPositionSyntax { given: String, why: String },

    #[error("timestep {0} is out of range: it must be an integer in 0..={1}")]
    BadTimestep(i64, i64),

    #[error("{what}: {why}")]
    InvalidArgument { what: String, why: String },

    #[error("file not found: {}{}", path.display(), hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    MissingFile { path: PathBuf, hint: Option<String> },

    #[error("refusing to load {}: it is a pickle file ({kind}), which can run arbitrary code when loaded; sdscope loads only .safetensors (convert it with diffusers' `save_pretrained(..., safe_serialization=True)` or download the .safetensors variant)", path.display())]
    PickleRefused { path: PathBuf, kind: String },

    #[error("cannot read safetensors file {}: {why}", path.display())]
    BadSafetensors { path: PathBuf, why: String },

    #[error("tensor `{name}` is missing from {}{}", file.display(), expected.as_ref().map(|s| format!(" (expected shape {s:?})")).unwrap_or_default())]
    MissingTensor { name: String, file: PathBuf, expected: Option<Vec<i64>> },

    #[error("tensor `{name}` in {} has shape {found:?}, expected {expected:?}", file.display())]
    ShapeMismatch { name: String, file: PathBuf, found: Vec<i64>, expected: Vec<i64> },

    #[error("cannot read config {}: {why}", path.display())]
    BadConfig { path: PathBuf, why: String },

    #[error("unsupported model configuration in {}: {why}", path.display())]
    Unsupported { path: PathBuf, why: String },

    #[error("unknown model `{given}`: not a folder, not a cached hub repo id, and not an alias; known aliases:\n  {}", known.join("\n  "))]
    UnknownModel { given: String, known: Vec<String> },

    #[error("model `{repo}` is not in the Hugging Face cache ({cache}) and the hub cannot be reached: {why}\nmissing files: {}\nfetch it on a machine with network access with:\n  {fetch}", missing.join(", "))]
    ModelNotCached { repo: String, cache: String, missing: Vec<String>, why: String, fetch: String },

    #[error("hub error for `{repo}`: {why}")]
    Hub { repo: String, why: String },

    #[error("tokenizer error: {0}")]
    Tokenizer(String),

    #[error("cannot read image {}: {why}", path.display())]
    BadImage { path: PathBuf, why: String },

    #[error("shape error in {context}: {why}")]
    Shape { context: String, why: String },

    #[error("libtorch error: {0}")]
    Torch(#[from] tch::TchError),

    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Internal signal: a forward pass stopped after the last requested position. Never returned to users.
    #[doc(hidden)]
    #[error("forward pass stopped early (internal signal)")]
    Halted,

    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
}

/// The closest valid positions to a mistyped one (all of them when there are few), and how to list them all.
fn suggest_positions(given: &str, valid: &[String]) -> String {
    const SHOWN: usize = 5;
    if valid.len() <= 12 {
        return format!("valid positions are:\n  {}", valid.join("\n  "));
    }
    let base = given.trim().split('@').next().unwrap_or("");
    let mut ranked: Vec<(f64, &String)> =
        valid.iter().map(|v| (strsim::normalized_damerau_levenshtein(base, v), v)).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.len().cmp(&b.1.len())));
    let closest: Vec<&str> = ranked.iter().take(SHOWN).map(|(_, v)| v.as_str()).collect();
    format!(
        "did you mean:\n  {}\n({} valid positions; `sdscope positions --model M` lists them all with their shapes)",
        closest.join("\n  "),
        valid.len()
    )
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn invalid(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::InvalidArgument { what: what.into(), why: why.into() }
    }
}
