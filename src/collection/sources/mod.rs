//! Where the inputs of a collection run come from: prompt datasets (text, JSONL, CSV/TSV and Parquet files, folders
//! of Parquet files, Hugging Face dataset repos) and image datasets (folders and list files), plus content
//! fingerprints that tell whether two runs saw the same inputs.
//!
//! ```no_run
//! use sdscope::collection::sources::{fingerprint_prompts, read_prompts, resolve_prompt_source};
//! let source = resolve_prompt_source("prompts.csv", None)?; // reads the `caption`, `prompt` or `text` column
//! let prompts = read_prompts(&source, Some(1000))?;
//! println!("{} prompts from {:?}, fingerprint {}", prompts.len(), source.column, fingerprint_prompts(&prompts));
//! # Ok::<(), sdscope::Error>(())
//! ```

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::Array;
use hf_hub::api::sync::{ApiError, ApiRepo};
use hf_hub::{Repo, RepoType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::hub::{cache_dir, offline_from_env};

mod hub_cache;
mod images;
mod parquet_images;
mod readers;
#[cfg(test)]
mod tests;

use hub_cache::*;
use images::*;
pub use parquet_images::{read_parquet_images, ParquetImage, ParquetImageColumns};
use readers::*;

/// How the files of a [`PromptSource`] are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptFormat {
    /// One prompt per line; blank (or whitespace-only) lines are skipped, a trailing `\r` is removed.
    Text,
    /// One JSON object per line, the prompt in a string field; blank lines are skipped.
    Jsonl,
    /// Comma-separated values with a header row; RFC 4180 quoting (fields may hold commas, quotes, newlines).
    Csv,
    /// Tab-separated values with a header row; same quoting rules as [`PromptFormat::Csv`].
    Tsv,
    /// Apache Parquet; the prompt column must hold strings (Utf8, LargeUtf8 or Utf8View).
    Parquet,
}

/// A resolved prompt dataset: which files to read, how, and which column holds the prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSource {
    /// What the user gave: a path or a Hugging Face dataset repo id (`owner/name[@revision]`).
    pub spec: String,
    /// The column read (resolved from the first file when not given); `None` for [`PromptFormat::Text`].
    pub column: Option<String>,
    /// How every file is read.
    pub format: PromptFormat,
    /// The files, read in this order.
    pub files: Vec<PathBuf>,
}

/// Column names tried, in order, when no column is given (exact name first, then ignoring ASCII case).
pub const DEFAULT_COLUMNS: [&str; 3] = ["caption", "prompt", "text"];

/// Image file extensions [`list_images`] picks up in folders (compared ignoring ASCII case).
pub const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"];

pub(super) const ACCEPTED: &str = "pass a prompt file (.txt/.text/.lst or any other extension: one prompt per line; \
    .jsonl/.ndjson; .csv; .tsv; .parquet), a folder of .parquet files, or a Hugging Face dataset repo id \
    `owner/name` (optionally `owner/name@revision`)";

/// Resolves `spec` to the files to read and the column holding the prompts.
///
/// `spec` is a local file (the extension picks the format: `.jsonl`/`.ndjson` → JSONL, `.csv` → CSV, `.tsv` → TSV,
/// `.parquet` → Parquet, `.json` → an error, anything else → one prompt per line), a local folder (all `.parquet`
/// files below it, recursively, sorted by relative path in byte order; hidden entries and symlinked folders
/// skipped), or a Hugging Face dataset repo id `owner/name` or `owner/name@revision` (an existing local path wins).
/// A repo id is looked up in the Hugging Face cache ([`cache_dir`]) first; when it is not there and
/// `HF_HUB_OFFLINE` is not set, its `.parquet` files are downloaded into the cache. When the repo holds several
/// splits, only the files naming `train` (a path part such as `train/`, `train-00000-of-00004.parquet` or
/// `train.parquet`) are read.
///
/// `column` names the field or column holding the prompts (JSONL, CSV, TSV, Parquet); when `None`, the first of
/// [`DEFAULT_COLUMNS`] present in the first file is used. Giving a column for a plain-text file is an error.
///
/// ```no_run
/// use sdscope::collection::sources::{resolve_prompt_source, PromptFormat};
/// let laion = resolve_prompt_source("laion/relaion-pop@main", Some("caption"))?;
/// assert_eq!(laion.format, PromptFormat::Parquet);
/// let lines = resolve_prompt_source("prompts.txt", None)?;
/// assert_eq!(lines.column, None);
/// # Ok::<(), sdscope::Error>(())
/// ```
pub fn resolve_prompt_source(spec: &str, column: Option<&str>) -> Result<PromptSource> {
    resolve_in_cache(spec, column, &cache_dir(), offline_from_env())
}

/// All prompts of `source`, files concatenated in order, at most `limit` of them.
///
/// Text files: every non-blank line (trailing `\r` removed, nothing else trimmed). JSONL, CSV, TSV, Parquet: the
/// value of the source's column in every row, kept as is (an empty string is an empty prompt). A row without the
/// column, a null, or a non-string value is an error naming the file and the line (JSONL, CSV, TSV) or the row
/// (Parquet, counted from 0). Finding no prompt at all is an error unless `limit` is `Some(0)`.
///
/// ```no_run
/// use sdscope::collection::sources::{read_prompts, resolve_prompt_source};
/// let prompts = read_prompts(&resolve_prompt_source("captions.parquet", None)?, Some(100))?;
/// assert!(prompts.len() <= 100);
/// # Ok::<(), sdscope::Error>(())
/// ```
pub fn read_prompts(source: &PromptSource, limit: Option<usize>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for file in &source.files {
        let left = limit.map_or(usize::MAX, |n| n.saturating_sub(out.len()));
        if left == 0 {
            break;
        }
        let column = || source.column.as_deref().ok_or_else(|| no_column(file));
        let mut sink = Sink { out: &mut out, left };
        match source.format {
            PromptFormat::Text => read_text(file, &mut sink)?,
            PromptFormat::Jsonl => read_jsonl(file, column()?, &mut sink)?,
            PromptFormat::Csv => read_delimited(file, b',', column()?, &mut sink)?,
            PromptFormat::Tsv => read_delimited(file, b'\t', column()?, &mut sink)?,
            PromptFormat::Parquet => read_parquet(file, column()?, &mut sink)?,
        }
    }
    if out.is_empty() && limit != Some(0) {
        let why = "no prompts found (blank lines of text files are skipped)";
        return Err(Error::invalid(format!("prompt source `{}`", source.spec), why));
    }
    Ok(out)
}

/// One image of an image dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageItem {
    /// The image file.
    pub path: PathBuf,
    /// Its class: the sub-folder path (`/`-separated) in a folder, the text after the TAB in a list file.
    pub label: Option<String>,
}

/// The images of a folder or a list file, at most `limit` of them.
///
/// A folder is walked recursively: files with an image extension ([`IMAGE_EXTENSIONS`], any case) are taken,
/// sorted by their path relative to the folder in byte order (the same order on every machine); an image's label
/// is its sub-folder path relative to the folder (`cats/tabby`), `None` for files directly in it. Hidden entries
/// (names starting with `.`) are skipped, and symlinks to folders are not followed (symlinks to files are).
///
/// Any other file is a list: one image path per line, relative paths resolved against the list file's folder,
/// optionally a TAB and a label; blank lines and lines starting with `#` are skipped; order is kept. A single image
/// file is a dataset of one image without a label.
///
/// ```no_run
/// use sdscope::collection::sources::list_images;
/// for item in list_images(std::path::Path::new("imagenette/train"), Some(500))? {
///     println!("{} {:?}", item.path.display(), item.label);
/// }
/// # Ok::<(), sdscope::Error>(())
/// ```
pub fn list_images(dir_or_list: &Path, limit: Option<usize>) -> Result<Vec<ImageItem>> {
    let meta = std::fs::metadata(dir_or_list).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingFile {
            path: dir_or_list.into(),
            hint: Some("pass a folder of images or a list file (one image path per line)".into()),
        },
        _ => Error::io(dir_or_list, e),
    })?;
    let mut items = if meta.is_dir() {
        folder_images(dir_or_list)?
    } else if has_extension(dir_or_list, &IMAGE_EXTENSIONS) {
        vec![ImageItem { path: dir_or_list.into(), label: None }]
    } else {
        list_file_images(dir_or_list)?
    };
    if items.is_empty() {
        let why = format!(
            "no images found (folders are searched recursively for files ending in .{}, any case; \
            hidden entries and symlinked folders are skipped; list files name one image per line)",
            IMAGE_EXTENSIONS.join(", .")
        );
        return Err(Error::invalid(format!("images in {}", dir_or_list.display()), why));
    }
    items.truncate(limit.unwrap_or(usize::MAX));
    Ok(items)
}

/// A SHA-256 hex fingerprint of the prompts: the hash of each prompt's UTF-8 byte length (u64, little-endian)
/// followed by its bytes, for all prompts in order. Equal for equal lists, whatever file they came from.
///
/// ```
/// use sdscope::collection::sources::fingerprint_prompts;
/// let a = fingerprint_prompts(&["a cat".to_string(), "a dog".to_string()]);
/// assert_eq!(a.len(), 64);
/// assert_ne!(a, fingerprint_prompts(&["a ca".to_string(), "ta dog".to_string()]));
/// ```
pub fn fingerprint_prompts(prompts: &[String]) -> String {
    let mut hash = Sha256::new();
    for p in prompts {
        put_bytes(&mut hash, p.as_bytes());
    }
    hex(&hash.finalize())
}

/// A SHA-256 hex fingerprint of the images' content and naming, so that a copy of the dataset elsewhere has the
/// same fingerprint: for each item in order, its path relative to `root` (`/`-separated; the path as given when
/// outside `root`), its label and the SHA-256 of the file's bytes. `root` is what was passed to [`list_images`]
/// (for a list file, its folder is used).
///
/// Strings are hashed as u64 little-endian length then bytes; a label as byte 0 (none) or byte 1 then the string;
/// the file hash as its 32 raw bytes. An unreadable file is an error.
///
/// ```no_run
/// use sdscope::collection::sources::{fingerprint_images, list_images};
/// let root = std::path::Path::new("imagenette/train");
/// let fingerprint = fingerprint_images(&list_images(root, None)?, root)?;
/// println!("{fingerprint}");
/// # Ok::<(), sdscope::Error>(())
/// ```
pub fn fingerprint_images(items: &[ImageItem], root: &Path) -> Result<String> {
    let root = match root.is_file() {
        true => root.parent().unwrap_or(Path::new("")),
        false => root,
    };
    let mut hash = Sha256::new();
    for item in items {
        let rel = item.path.strip_prefix(root).unwrap_or(&item.path);
        put_bytes(&mut hash, slash_path(rel).as_bytes());
        match &item.label {
            None => hash.update([0u8]),
            Some(label) => {
                hash.update([1u8]);
                put_bytes(&mut hash, label.as_bytes());
            }
        }
        hash.update(file_sha256(&item.path)?);
    }
    Ok(hex(&hash.finalize()))
}

// ---------------------------------------------------------------------------------------------------------------
// Resolving prompt sources

/// [`resolve_prompt_source`] against the hub cache `cache`, downloading only when `offline` is false.
pub(super) fn resolve_in_cache(spec: &str, column: Option<&str>, cache: &Path, offline: bool) -> Result<PromptSource> {
    let path = Path::new(spec);
    let files = if spec.trim().is_empty() {
        return Err(Error::invalid("prompt source", format!("it is empty; {ACCEPTED}")));
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else if path.is_dir() {
        folder_parquet_files(path)?
    } else if looks_like_path(spec) {
        return Err(Error::MissingFile { path: path.into(), hint: Some(ACCEPTED.into()) });
    } else if let Some((repo, revision)) = parse_dataset_id(spec) {
        dataset_files(repo, revision, cache, offline)?
    } else {
        return Err(Error::invalid(format!("prompt source `{spec}`"), format!("no such file or folder; {ACCEPTED}")));
    };
    let format = if path.is_file() { format_of(path)? } else { PromptFormat::Parquet };
    let column = match (format, column) {
        (PromptFormat::Text, None) => None,
        (PromptFormat::Text, Some(c)) => {
            let why = format!(
                "a column (`{c}`) applies to JSONL, CSV, TSV and Parquet sources; this file is read as plain text, \
                one prompt per line"
            );
            return Err(Error::invalid(format!("prompt source {}", path.display()), why));
        }
        (_, given) => {
            let first = files.first().ok_or_else(|| Error::invalid(format!("prompt source `{spec}`"), "no files"))?;
            Some(pick_column(first, format, given)?)
        }
    };
    Ok(PromptSource { spec: spec.into(), column, format, files })
}

/// A spec that can only be meant as a local path (so a missing one is a missing file, not a repo id).
pub(super) fn looks_like_path(spec: &str) -> bool {
    let data_ext = ["txt", "text", "lst", "json", "jsonl", "ndjson", "csv", "tsv", "parquet"];
    spec.starts_with(['/', '.', '~'])
        || spec.contains('\\')
        || spec.split('@').next().is_some_and(|s| s.matches('/').count() > 1)
        || has_extension(Path::new(spec), &data_ext)
}

/// `owner/name` or `owner/name@revision` → (repo id, revision).
pub(super) fn parse_dataset_id(spec: &str) -> Option<(&str, &str)> {
    let (repo, revision) = spec.split_once('@').unwrap_or((spec, "main"));
    let part = |p: &str| {
        let chars_ok = p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        chars_ok && !p.is_empty() && p != "." && p != ".."
    };
    let repo_ok = matches!(repo.split_once('/'), Some((owner, name)) if part(owner) && part(name));
    let rev_ok = !revision.is_empty() && revision.split('/').all(part);
    (repo_ok && rev_ok).then_some((repo, revision))
}

pub(super) fn format_of(file: &Path) -> Result<PromptFormat> {
    let ext = file.extension().and_then(OsStr::to_str).unwrap_or("").to_ascii_lowercase();
    Ok(match ext.as_str() {
        "jsonl" | "ndjson" => PromptFormat::Jsonl,
        "csv" => PromptFormat::Csv,
        "tsv" => PromptFormat::Tsv,
        "parquet" => PromptFormat::Parquet,
        "json" => {
            let why = "JSON files are not read; write one JSON object per line (.jsonl) or one prompt per line (.txt)";
            return Err(Error::invalid(format!("prompt file {}", file.display()), why));
        }
        _ => PromptFormat::Text,
    })
}

/// The column to read: `given` if `file` has it, else the first of [`DEFAULT_COLUMNS`] it has.
pub(super) fn pick_column(file: &Path, format: PromptFormat, given: Option<&str>) -> Result<String> {
    let available = match format {
        PromptFormat::Jsonl => jsonl_columns(file)?,
        PromptFormat::Csv => delimited_columns(file, b',')?,
        PromptFormat::Tsv => delimited_columns(file, b'\t')?,
        PromptFormat::Parquet => parquet_columns(file)?,
        PromptFormat::Text => return Err(no_column(file)),
    };
    let found = match given {
        Some(c) => available.iter().find(|a| *a == c),
        None => DEFAULT_COLUMNS.iter().find_map(|d| {
            let exact = available.iter().find(|a| a == d);
            exact.or_else(|| available.iter().find(|a| a.eq_ignore_ascii_case(d)))
        }),
    };
    found.cloned().ok_or_else(|| {
        let wanted = match given {
            Some(c) => format!("there is no column `{c}`"),
            None => format!("none of the default columns ({}) exists; name one", DEFAULT_COLUMNS.join(", ")),
        };
        let what = format!("prompt column in {}", file.display());
        Error::invalid(what, format!("{wanted}; available columns: {}", list_or_none(&available)))
    })
}

pub(super) fn list_or_none(names: &[String]) -> String {
    match names.is_empty() {
        true => "(none)".into(),
        false => names.join(", "),
    }
}

pub(super) fn no_column(file: &Path) -> Error {
    Error::invalid(format!("prompt source {}", file.display()), "no column to read the prompts from")
}

pub(super) fn bad_file(file: &Path, why: impl Into<String>) -> Error {
    Error::invalid(format!("prompt file {}", file.display()), why)
}

pub(super) fn open(file: &Path) -> Result<File> {
    File::open(file).map_err(|e| Error::io(file, e))
}
