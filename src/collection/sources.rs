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
use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Repo, RepoType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::hub::cache_dir;

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

const ACCEPTED: &str = "pass a prompt file (.txt/.text/.lst or any other extension: one prompt per line; \
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

fn offline_from_env() -> bool {
    let v = std::env::var("HF_HUB_OFFLINE").unwrap_or_default().to_ascii_lowercase();
    matches!(v.trim(), "1" | "true" | "yes" | "on")
}

/// [`resolve_prompt_source`] against the hub cache `cache`, downloading only when `offline` is false.
fn resolve_in_cache(spec: &str, column: Option<&str>, cache: &Path, offline: bool) -> Result<PromptSource> {
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
fn looks_like_path(spec: &str) -> bool {
    let data_ext = ["txt", "text", "lst", "json", "jsonl", "ndjson", "csv", "tsv", "parquet"];
    spec.starts_with(['/', '.', '~'])
        || spec.contains('\\')
        || spec.split('@').next().is_some_and(|s| s.matches('/').count() > 1)
        || has_extension(Path::new(spec), &data_ext)
}

/// `owner/name` or `owner/name@revision` → (repo id, revision).
fn parse_dataset_id(spec: &str) -> Option<(&str, &str)> {
    let (repo, revision) = spec.split_once('@').unwrap_or((spec, "main"));
    let part = |p: &str| {
        let chars_ok = p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        chars_ok && !p.is_empty() && p != "." && p != ".."
    };
    let repo_ok = matches!(repo.split_once('/'), Some((owner, name)) if part(owner) && part(name));
    let rev_ok = !revision.is_empty() && revision.split('/').all(part);
    (repo_ok && rev_ok).then_some((repo, revision))
}

fn format_of(file: &Path) -> Result<PromptFormat> {
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
fn pick_column(file: &Path, format: PromptFormat, given: Option<&str>) -> Result<String> {
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

fn list_or_none(names: &[String]) -> String {
    match names.is_empty() {
        true => "(none)".into(),
        false => names.join(", "),
    }
}

fn no_column(file: &Path) -> Error {
    Error::invalid(format!("prompt source {}", file.display()), "no column to read the prompts from")
}

fn bad_file(file: &Path, why: impl Into<String>) -> Error {
    Error::invalid(format!("prompt file {}", file.display()), why)
}

fn open(file: &Path) -> Result<File> {
    File::open(file).map_err(|e| Error::io(file, e))
}

// ---------------------------------------------------------------------------------------------------------------
// Reading prompts

/// Collects prompts until `left` reaches 0.
struct Sink<'a> {
    out: &'a mut Vec<String>,
    left: usize,
}

impl Sink<'_> {
    /// Adds `prompt`; returns whether more are wanted.
    fn push(&mut self, prompt: String) -> bool {
        self.out.push(prompt);
        self.left -= 1;
        self.left > 0
    }
}

/// The lines of a file: 1-based number and text, `\r\n` or `\n` endings, a leading UTF-8 BOM removed.
fn lines(file: &Path) -> Result<impl Iterator<Item = Result<(usize, String)>> + '_> {
    let reader = BufReader::new(open(file)?);
    Ok(reader.split(b'\n').enumerate().map(move |(i, line)| {
        let mut bytes = line.map_err(|e| Error::io(file, e))?;
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if i == 0 && bytes.starts_with(b"\xEF\xBB\xBF") {
            bytes.drain(..3);
        }
        let text = String::from_utf8(bytes).map_err(|_| bad_file(file, format!("line {} is not UTF-8", i + 1)))?;
        Ok((i + 1, text))
    }))
}

fn read_text(file: &Path, sink: &mut Sink) -> Result<()> {
    for line in lines(file)? {
        let (_, text) = line?;
        if !text.trim().is_empty() && !sink.push(text) {
            break;
        }
    }
    Ok(())
}

fn jsonl_object(file: &Path, number: usize, text: &str) -> Result<serde_json::Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad_file(file, format!("line {number} is not a JSON object"))),
        Err(e) => Err(bad_file(file, format!("line {number} is not valid JSON: {e}"))),
    }
}

/// The keys of the first object of a JSONL file.
fn jsonl_columns(file: &Path) -> Result<Vec<String>> {
    for line in lines(file)? {
        let (number, text) = line?;
        if !text.trim().is_empty() {
            return Ok(jsonl_object(file, number, &text)?.keys().cloned().collect());
        }
    }
    Ok(Vec::new())
}

fn read_jsonl(file: &Path, column: &str, sink: &mut Sink) -> Result<()> {
    for line in lines(file)? {
        let (number, text) = line?;
        if text.trim().is_empty() {
            continue;
        }
        let prompt = match jsonl_object(file, number, &text)?.remove(column) {
            Some(Value::String(s)) => s,
            Some(Value::Null) => return Err(bad_file(file, format!("line {number}: `{column}` is null"))),
            Some(other) => {
                let why = format!("line {number}: `{column}` is not a string but {}", json_kind(&other));
                return Err(bad_file(file, why));
            }
            None => return Err(bad_file(file, format!("line {number} has no `{column}` field"))),
        };
        if !sink.push(prompt) {
            break;
        }
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn csv_reader(file: &Path, delimiter: u8) -> Result<csv::Reader<File>> {
    Ok(csv::ReaderBuilder::new().delimiter(delimiter).flexible(true).from_reader(open(file)?))
}

fn csv_error(file: &Path, e: csv::Error) -> Error {
    let message = e.to_string();
    match e.into_kind() {
        csv::ErrorKind::Io(io) => Error::io(file, io),
        csv::ErrorKind::Utf8 { pos, .. } => {
            let line = pos.map_or(String::new(), |p| format!(" on line {}", p.line()));
            bad_file(file, format!("a field{line} is not UTF-8"))
        }
        _ => bad_file(file, message),
    }
}

/// The header row of a CSV/TSV file, a leading UTF-8 BOM removed.
fn delimited_columns(file: &Path, delimiter: u8) -> Result<Vec<String>> {
    let mut reader = csv_reader(file, delimiter)?;
    let headers = reader.headers().map_err(|e| csv_error(file, e))?;
    Ok(headers.iter().map(|h| h.trim_start_matches('\u{feff}').to_string()).collect())
}

fn read_delimited(file: &Path, delimiter: u8, column: &str, sink: &mut Sink) -> Result<()> {
    let mut reader = csv_reader(file, delimiter)?;
    let headers = reader.headers().map_err(|e| csv_error(file, e))?.clone();
    let Some(index) = headers.iter().position(|h| h.trim_start_matches('\u{feff}') == column) else {
        let available: Vec<String> = headers.iter().map(str::to_string).collect();
        let why = format!("there is no column `{column}`; available columns: {}", list_or_none(&available));
        return Err(bad_file(file, why));
    };
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(file, e))?;
        let Some(field) = record.get(index) else {
            let line = record.position().map_or(0, |p| p.line());
            return Err(bad_file(file, format!("line {line} has no `{column}` field (too few fields)")));
        };
        if !sink.push(field.to_string()) {
            break;
        }
    }
    Ok(())
}

fn parquet_builder(file: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    ParquetRecordBatchReaderBuilder::try_new(open(file)?)
        .map_err(|e| bad_file(file, format!("not a readable Parquet file: {e}")))
}

/// Runs a Parquet read, turning a panic of the parquet crate (some corrupt files still cause one) into an error.
fn guarded<T>(file: &Path, read: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|payload| {
        let text = payload.downcast_ref::<String>().map(String::as_str);
        let why = text.or_else(|| payload.downcast_ref::<&str>().copied()).unwrap_or("no details");
        Err(bad_file(file, format!("corrupt Parquet file (the reader gave up: {why})")))
    })
}

fn parquet_columns(file: &Path) -> Result<Vec<String>> {
    let builder = guarded(file, || parquet_builder(file))?;
    Ok(builder.schema().fields().iter().map(|f| f.name().clone()).collect())
}

fn read_parquet(file: &Path, column: &str, sink: &mut Sink) -> Result<()> {
    guarded(file, || read_parquet_unguarded(file, column, sink))
}

fn read_parquet_unguarded(file: &Path, column: &str, sink: &mut Sink) -> Result<()> {
    let builder = parquet_builder(file)?;
    let fields = builder.schema().fields();
    let Some(index) = fields.iter().position(|f| f.name() == column) else {
        let available: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        let why = format!("there is no column `{column}`; available columns: {}", list_or_none(&available));
        return Err(bad_file(file, why));
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let mut builder = builder.with_projection(mask).with_batch_size(sink.left.min(8192));
    if sink.left < usize::MAX {
        builder = builder.with_limit(sink.left);
    }
    let reader = builder.build().map_err(|e| bad_file(file, format!("cannot read column `{column}`: {e}")))?;
    let mut row = 0;
    for batch in reader {
        let batch = batch.map_err(|e| bad_file(file, format!("cannot read column `{column}`: {e}")))?;
        let Some(array) = batch.columns().first() else {
            return Err(bad_file(file, format!("column `{column}` came back empty")));
        };
        if !push_strings(file, column, array.as_ref(), row, sink)? {
            break;
        }
        row += array.len();
    }
    Ok(())
}

/// Pushes the strings of a Utf8 / LargeUtf8 / Utf8View array; `first_row` numbers its rows in errors.
fn push_strings(file: &Path, column: &str, array: &dyn Array, first_row: usize, sink: &mut Sink) -> Result<bool> {
    let values: Box<dyn Iterator<Item = Option<&str>>> = if let Some(a) = array.as_string_opt::<i32>() {
        Box::new(a.iter())
    } else if let Some(a) = array.as_string_opt::<i64>() {
        Box::new(a.iter())
    } else if let Some(a) = array.as_string_view_opt() {
        Box::new(a.iter())
    } else {
        let why = format!("column `{column}` holds {}, not strings", array.data_type());
        return Err(bad_file(file, why));
    };
    for (i, value) in values.enumerate() {
        let Some(prompt) = value else {
            let why = format!("column `{column}` is null in row {} (counting from 0)", first_row + i);
            return Err(bad_file(file, why));
        };
        if !sink.push(prompt.to_string()) {
            return Ok(false);
        }
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------------------------------
// Folders and the Hugging Face cache

/// A file found under a root: its path and its path relative to the root as `/`-separated components.
struct Found {
    path: PathBuf,
    rel: Vec<String>,
    key: Vec<u8>,
}

/// The files under `root` (recursively) that `keep` accepts, sorted by relative path in byte order. Hidden entries
/// are skipped; symlinks to folders are not followed, symlinks to files are.
fn walk(root: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), Vec::<String>::new(), Vec::<u8>::new())];
    while let Some((dir, rel, key)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            if name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let path = entry.path();
            let mut rel = rel.clone();
            rel.push(name.to_string_lossy().into_owned());
            let mut key = key.clone();
            if !key.is_empty() {
                key.push(b'/');
            }
            key.extend_from_slice(name.as_encoded_bytes());
            let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if kind.is_dir() {
                stack.push((path, rel, key));
            } else if (kind.is_file() || (kind.is_symlink() && path.is_file())) && keep(&path) {
                found.push(Found { path, rel, key });
            }
        }
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    let ext = path.extension().and_then(OsStr::to_str);
    ext.is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn is_parquet(path: &Path) -> bool {
    has_extension(path, &["parquet"])
}

fn folder_parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = walk(dir, &is_parquet)?.into_iter().map(|f| f.path).collect();
    if files.is_empty() {
        let why = "a folder is read as a Parquet dataset, and it holds no .parquet files (searched recursively); \
            for a text, JSONL, CSV or TSV file pass the file itself";
        return Err(Error::invalid(format!("prompt source {}", dir.display()), why));
    }
    Ok(files)
}

/// Whether a `/`-separated relative path names the train split (`train/…`, `train-00000-of-00004.parquet`, …).
fn names_train(rel: &str) -> bool {
    rel.split(['/', '-', '_', '.']).any(|part| part.eq_ignore_ascii_case("train"))
}

/// The `.parquet` files among `rel` paths, sorted in byte order; only the train split's when there are several.
fn choose_parquet(mut rel: Vec<String>) -> Vec<String> {
    rel.retain(|r| is_parquet(Path::new(r)));
    rel.sort();
    let train = rel.iter().filter(|r| names_train(r)).count();
    if train > 0 && train < rel.len() {
        rel.retain(|r| names_train(r));
    }
    rel
}

/// `<cache>/datasets--owner--name`.
fn dataset_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("datasets--{}", repo.replace('/', "--")))
}

/// The cached snapshot of `revision`: `refs/<revision>`'s commit, or a snapshot named by the revision itself;
/// for the default `main` without a ref, the newest snapshot holding `.parquet` files.
fn cached_snapshot(dir: &Path, revision: &str) -> Option<PathBuf> {
    let snapshots = dir.join("snapshots");
    if let Ok(commit) = std::fs::read_to_string(dir.join("refs").join(revision)) {
        let snap = snapshots.join(commit.trim());
        return snap.is_dir().then_some(snap);
    }
    if snapshots.join(revision).is_dir() {
        return Some(snapshots.join(revision));
    }
    if revision != "main" {
        return None;
    }
    let entries = std::fs::read_dir(&snapshots).ok()?;
    let with_parquet = |p: &PathBuf| walk(p, &is_parquet).is_ok_and(|f| !f.is_empty());
    let snaps = entries.filter_map(|e| Some(e.ok()?.path())).filter(with_parquet);
    snaps.max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

/// The parquet files of a cached snapshot (split preference applied), as paths.
fn snapshot_parquet(snap: &Path) -> Result<Vec<PathBuf>> {
    let found = walk(snap, &is_parquet)?;
    Ok(choose_parquet(found.into_iter().map(|f| f.rel.join("/")).collect()).iter().map(|r| snap.join(r)).collect())
}

fn fetch_command(repo: &str, revision: &str) -> String {
    let rev = match revision {
        "main" => String::new(),
        r => format!(" --revision {r}"),
    };
    format!(
        "huggingface-cli download --repo-type dataset {repo}{rev} --include \"*.parquet\"\n  \
        (this fills the Hugging Face cache, $HF_HOME/hub, by default ~/.cache/huggingface/hub; copy it here or \
        point HF_HOME at it)"
    )
}

const NO_PARQUET: &str = "datasets that are not stored as Parquet usually have a Parquet conversion: \
    use `owner/name@refs/convert/parquet`";

/// The parquet files of a hub dataset: from the cache, else downloaded unless `offline`.
fn dataset_files(repo: &str, revision: &str, cache: &Path, offline: bool) -> Result<Vec<PathBuf>> {
    let dir = dataset_dir(cache, repo);
    if let Some(snap) = cached_snapshot(&dir, revision) {
        let files = snapshot_parquet(&snap)?;
        if !files.is_empty() {
            return Ok(files);
        }
        if offline {
            let why = format!("its cached snapshot {} holds no .parquet files; {NO_PARQUET}", snap.display());
            return Err(Error::Hub { repo: repo.into(), why });
        }
    }
    let not_cached = |why: String| {
        let why = format!(
            "dataset (revision {revision}) is not in the Hugging Face cache (looked in {}) and the hub cannot be \
            reached: {why}\nfetch it on a machine with network access with:\n  {}",
            dir.display(),
            fetch_command(repo, revision)
        );
        Error::Hub { repo: repo.into(), why }
    };
    if offline {
        return Err(not_cached("HF_HUB_OFFLINE is set, so nothing was downloaded".into()));
    }
    download_dataset(repo, revision, cache, &not_cached)
}

fn api_repo(repo: &str, revision: &str, cache: &Path) -> std::result::Result<ApiRepo, ApiError> {
    let mut builder = ApiBuilder::from_cache(hf_hub::Cache::new(cache.into())).with_progress(false);
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/').into());
    }
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        builder = builder.with_token(Some(token.trim().into()));
    }
    Ok(builder.build()?.repo(Repo::with_revision(repo.into(), RepoType::Dataset, revision.into())))
}

/// HTTP 401/403/404 are the repo's fault; anything else means the hub is unreachable.
fn hub_failure(repo: &str, err: ApiError, not_cached: &dyn Fn(String) -> Error) -> Error {
    let why = err.to_string();
    if ["401", "403", "404"].iter().any(|code| why.contains(&format!("status code {code}"))) {
        let why = format!(
            "{why}: no such dataset, revision or file, or it is private or gated (check the id; for a gated \
            dataset accept its terms on huggingface.co and set HF_TOKEN)"
        );
        return Error::Hub { repo: repo.into(), why };
    }
    not_cached(why)
}

fn download_dataset(
    repo: &str,
    revision: &str,
    cache: &Path,
    not_cached: &dyn Fn(String) -> Error,
) -> Result<Vec<PathBuf>> {
    let api = api_repo(repo, revision, cache).map_err(|e| not_cached(e.to_string()))?;
    let info = api.info().map_err(|e| hub_failure(repo, e, not_cached))?;
    let files = choose_parquet(info.siblings.into_iter().map(|s| s.rfilename).collect());
    if files.is_empty() {
        let why = format!("the dataset has no .parquet files at revision {revision}; {NO_PARQUET}");
        return Err(Error::Hub { repo: repo.into(), why });
    }
    let mut paths = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        eprintln!("[sdscope] fetching {file} from dataset {repo} ({}/{})", i + 1, files.len());
        paths.push(api.get(file).map_err(|e| hub_failure(repo, e, not_cached))?);
    }
    Ok(paths)
}

// ---------------------------------------------------------------------------------------------------------------
// Images

fn is_image(path: &Path) -> bool {
    has_extension(path, &IMAGE_EXTENSIONS)
}

fn folder_images(dir: &Path) -> Result<Vec<ImageItem>> {
    let found = walk(dir, &is_image)?;
    let item = |f: Found| {
        let folders = &f.rel[..f.rel.len() - 1];
        ImageItem { path: f.path, label: (!folders.is_empty()).then(|| folders.join("/")) }
    };
    Ok(found.into_iter().map(item).collect())
}

fn list_file_images(list: &Path) -> Result<Vec<ImageItem>> {
    let base = list.parent().unwrap_or(Path::new(""));
    let mut items = Vec::new();
    for line in lines(list)? {
        let (number, text) = line?;
        let text = text.trim_start();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let (file, label) = text.split_once('\t').unwrap_or((text, ""));
        let label = Some(label.trim()).filter(|l| !l.is_empty()).map(str::to_string);
        let path = base.join(file.trim_end());
        if !path.is_file() {
            let hint = format!("listed on line {number} of {}", list.display());
            return Err(Error::MissingFile { path, hint: Some(hint) });
        }
        items.push(ImageItem { path, label });
    }
    Ok(items)
}

// ---------------------------------------------------------------------------------------------------------------
// Hashing

fn put_bytes(hash: &mut Sha256, bytes: &[u8]) {
    hash.update((bytes.len() as u64).to_le_bytes());
    hash.update(bytes);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A relative path as `/`-separated text (lossy for non-UTF-8 names), the same on every platform.
fn slash_path(path: &Path) -> String {
    let parts = path.components().map(|c| match c {
        Component::Normal(s) => s.to_string_lossy(),
        Component::RootDir => "".into(),
        other => other.as_os_str().to_string_lossy(),
    });
    parts.collect::<Vec<_>>().join("/")
}

fn file_sha256(path: &Path) -> Result<[u8; 32]> {
    let mut file = open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(hash.finalize().into());
        }
        hash.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, LargeStringArray, RecordBatch, StringArray, StringViewArray};
    use std::sync::Arc;

    fn scratch(tag: &str) -> PathBuf {
        let nanos = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos();
        let name = format!("sdscope-sources-{tag}-{}-{nanos}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, content: impl AsRef<[u8]>) -> PathBuf {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        path.to_path_buf()
    }

    /// Writes one row group per batch; every batch has the same (nullable) columns.
    fn write_parquet(path: &Path, batches: &[Vec<(&str, ArrayRef)>]) -> PathBuf {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let batches: Vec<RecordBatch> = batches
            .iter()
            .map(|b| RecordBatch::try_from_iter_with_nullable(b.iter().map(|(n, a)| (*n, a.clone(), true))).unwrap())
            .collect();
        let file = File::create(path).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), None).unwrap();
        for batch in &batches {
            writer.write(batch).unwrap();
            writer.flush().unwrap();
        }
        writer.close().unwrap();
        path.to_path_buf()
    }

    fn strings(values: &[&str]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    fn resolve(spec: &Path, column: Option<&str>) -> Result<PromptSource> {
        resolve_in_cache(spec.to_str().unwrap(), column, Path::new("/nonexistent-sdscope-cache"), true)
    }

    fn read(spec: &Path, column: Option<&str>, limit: Option<usize>) -> Result<Vec<String>> {
        read_prompts(&resolve(spec, column)?, limit)
    }

    fn message(result: Result<impl std::fmt::Debug>) -> String {
        result.expect_err("expected an error").to_string()
    }

    #[test]
    fn text_lines_skip_blanks_and_crlf() {
        let dir = scratch("text");
        let file = write(&dir.join("p.txt"), "\u{feff}a cat\r\n\r\n  \nа dog, running \r\nlast");
        let src = resolve(&file, None).unwrap();
        assert_eq!(
            (src.format, src.column.as_deref(), src.files.clone()),
            (PromptFormat::Text, None, vec![file.clone()])
        );
        assert_eq!(read_prompts(&src, None).unwrap(), ["a cat", "а dog, running ", "last"]);
        assert_eq!(read_prompts(&src, Some(2)).unwrap(), ["a cat", "а dog, running "]);
        assert!(read_prompts(&src, Some(0)).unwrap().is_empty());
        // Unknown extensions are text too; a column makes no sense for them.
        let other = write(&dir.join("p.prompts"), "x\ny\n");
        assert_eq!(read(&other, None, None).unwrap(), ["x", "y"]);
        assert!(message(resolve(&other, Some("caption"))).contains("plain text"));
        let blank = write(&dir.join("blank.txt"), "\n \r\n");
        assert!(message(read(&blank, None, None)).contains("no prompts found"));
        let binary = write(&dir.join("bin.lst"), b"ok\n\xff\xfe\n");
        assert!(message(read(&binary, None, None)).contains("line 2 is not UTF-8"));
        assert!(message(resolve(&write(&dir.join("a.json"), "[]"), None)).contains(".jsonl"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn jsonl_columns_and_errors() {
        let dir = scratch("jsonl");
        let file = write(
            &dir.join("p.jsonl"),
            "{\"id\": 1, \"prompt\": \"a\", \"text\": \"t\"}\n\n{\"prompt\": \"b\\nc\"}\r\n",
        );
        let src = resolve(&file, None).unwrap();
        assert_eq!((src.format, src.column.as_deref()), (PromptFormat::Jsonl, Some("prompt")));
        assert_eq!(read_prompts(&src, None).unwrap(), ["a", "b\nc"]);
        assert_eq!(read_prompts(&src, Some(1)).unwrap(), ["a"]);
        // The default column is found ignoring case; a named column must match exactly.
        let upper = write(&dir.join("u.ndjson"), "{\"TEXT\": \"x\"}\n");
        assert_eq!(resolve(&upper, None).unwrap().column.as_deref(), Some("TEXT"));
        let err = message(resolve(&file, Some("caption")));
        assert!(err.contains("no column `caption`") && err.contains("available columns: id, prompt, text"), "{err}");
        let none = write(&dir.join("n.jsonl"), "{\"a\": \"x\", \"b\": 2}\n");
        let err = message(resolve(&none, None));
        assert!(err.contains("caption, prompt, text") && err.contains("available columns: a, b"), "{err}");
        let cases = [
            ("{\"prompt\": \"a\"}\n{\"prompt\": null}\n", "line 2: `prompt` is null"),
            ("{\"prompt\": \"a\"}\n\n{\"prompt\": 3}\n", "line 3: `prompt` is not a string but a number"),
            ("{\"prompt\": \"a\"}\n{\"other\": \"b\"}\n", "line 2 has no `prompt` field"),
            ("{\"prompt\": \"a\"}\n[1]\n", "line 2 is not a JSON object"),
            ("{\"prompt\": \"a\"}\n{\"prompt\": \n", "line 2 is not valid JSON"),
        ];
        for (i, (content, expected)) in cases.into_iter().enumerate() {
            let f = write(&dir.join(format!("bad{i}.jsonl")), content);
            let err = message(read(&f, None, None));
            assert!(err.contains(expected) && err.contains(&format!("bad{i}.jsonl")), "{err}");
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn csv_and_tsv_quoting() {
        let dir = scratch("csv");
        let csv = "\u{feff}id,caption,url\r\n1,\"a cat, sitting\",u1\r\n2,\"two\nlines, \"\"quoted\"\"\",u2\n3,,u3\n";
        let file = write(&dir.join("p.csv"), csv);
        let src = resolve(&file, None).unwrap();
        assert_eq!((src.format, src.column.as_deref()), (PromptFormat::Csv, Some("caption")));
        assert_eq!(read_prompts(&src, None).unwrap(), ["a cat, sitting", "two\nlines, \"quoted\"", ""]);
        assert_eq!(read(&file, Some("id"), Some(2)).unwrap(), ["1", "2"]);
        let err = message(resolve(&file, Some("prompt")));
        assert!(err.contains("available columns: id, caption, url"), "{err}");
        let short = write(&dir.join("short.csv"), "id,caption\n1,a\n2\n");
        assert!(message(read(&short, None, None)).contains("line 3 has no `caption` field"));
        let tsv = write(&dir.join("p.tsv"), "prompt\tn\na, b\t1\n\"x\ty\"\t2\n");
        let src = resolve(&tsv, None).unwrap();
        assert_eq!((src.format, src.column.as_deref()), (PromptFormat::Tsv, Some("prompt")));
        assert_eq!(read_prompts(&src, None).unwrap(), ["a, b", "x\ty"]);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn parquet_projection_limit_and_types() {
        let dir = scratch("parquet");
        let groups: Vec<Vec<(&str, ArrayRef)>> = (0..4)
            .map(|g| {
                let caps: Vec<String> = (0..3).map(|i| format!("p{}", g * 3 + i)).collect();
                let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
                vec![("id", Arc::new(Int64Array::from(vec![g; 3])) as ArrayRef), ("caption", strings(&caps))]
            })
            .collect();
        let file = write_parquet(&dir.join("p.parquet"), &groups);
        let src = resolve(&file, None).unwrap();
        assert_eq!((src.format, src.column.as_deref()), (PromptFormat::Parquet, Some("caption")));
        let all: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
        assert_eq!(read_prompts(&src, None).unwrap(), all);
        for limit in [1, 3, 4, 7, 12, 50] {
            assert_eq!(read_prompts(&src, Some(limit)).unwrap(), all[..limit.min(12)], "limit {limit}");
        }
        let err = message(read(&file, Some("id"), None));
        assert!(err.contains("column `id` holds Int64, not strings"), "{err}");
        assert!(message(resolve(&file, Some("nope"))).contains("available columns: id, caption"));
        // LargeUtf8 and Utf8View columns; nulls are errors naming the row.
        let large = vec![("text", Arc::new(LargeStringArray::from(vec!["l0", "l1"])) as ArrayRef)];
        let large = write_parquet(&dir.join("large.parquet"), &[large]);
        assert_eq!(read(&large, None, None).unwrap(), ["l0", "l1"]);
        let view = vec![("prompt", Arc::new(StringViewArray::from(vec!["v0", "v1"])) as ArrayRef)];
        let view = write_parquet(&dir.join("view.parquet"), &[view]);
        assert_eq!(read(&view, None, None).unwrap(), ["v0", "v1"]);
        let nulls = |v: Vec<Option<&str>>| vec![("caption", Arc::new(StringArray::from(v)) as ArrayRef)];
        let with_null = write_parquet(
            &dir.join("null.parquet"),
            &[nulls(vec![Some("a"), Some("b")]), nulls(vec![Some("c"), None])],
        );
        let err = message(read(&with_null, None, None));
        assert!(err.contains("null in row 3 (counting from 0)"), "{err}");
        assert_eq!(read(&with_null, None, Some(3)).unwrap(), ["a", "b", "c"]);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn corrupt_parquet_is_an_error() {
        let dir = scratch("corrupt");
        let fake = write(&dir.join("fake.parquet"), "caption\nnot parquet at all\n");
        assert!(message(resolve(&fake, None)).contains("not a readable Parquet file"));
        let good = write_parquet(&dir.join("good.parquet"), &[vec![("caption", strings(&["a", "b"]))]]);
        let mut bytes = std::fs::read(&good).unwrap();
        bytes.truncate(bytes.len() - 12);
        let cut = write(&dir.join("cut.parquet"), &bytes);
        assert!(message(resolve(&cut, None)).contains("not a readable Parquet file"));
        // A damaged data page (footer intact) fails when read, without panicking.
        let mut bytes = std::fs::read(&good).unwrap();
        for b in &mut bytes[4..20] {
            *b = 0xff;
        }
        let damaged = write(&dir.join("damaged.parquet"), &bytes);
        assert!(read(&damaged, None, None).is_err());
        // Damage that makes the parquet crate panic (found by flipping every byte of the pyarrow file) is an error.
        let pyarrow = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/captions.parquet")).unwrap();
        for (i, value) in [(14, 0x00), (231, 0xff), (601, 0x00), (746, 0xff), (1212, 0xff), (1585, 0xff), (1591, 0xff)]
        {
            let mut bytes = pyarrow.clone();
            bytes[i] = value;
            let file = write(&dir.join(format!("flip{i}.parquet")), &bytes);
            let source = PromptSource {
                spec: "flipped".into(),
                column: Some("caption".into()),
                format: PromptFormat::Parquet,
                files: vec![file],
            };
            assert!(read_prompts(&source, None).is_err(), "byte {i}");
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn pyarrow_file_is_read() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/captions.parquet");
        let src = resolve(&file, None).unwrap();
        assert_eq!(src.column.as_deref(), Some("caption"));
        let prompts = read_prompts(&src, None).unwrap();
        assert_eq!(prompts.len(), 20);
        assert_eq!((prompts[0].as_str(), prompts[19].as_str()), ("a photo of item 0", "a photo of item 19"));
        assert_eq!(
            (prompts[3].as_str(), prompts[7].as_str()),
            ("a cat, a dog, and a bird", "café crème on a table, 東京")
        );
        assert_eq!(read_prompts(&src, Some(12)).unwrap(), prompts[..12]);
        assert_eq!(read(&file, Some("url"), Some(1)).unwrap(), ["https://example.com/0.jpg"]);
        assert!(message(read(&file, Some("aesthetic"), None)).contains("holds Float64"));
    }

    #[test]
    fn parquet_folder_in_path_order() {
        let dir = scratch("folder");
        write_parquet(&dir.join("b/0.parquet"), &[vec![("text", strings(&["b0"]))]]);
        write_parquet(&dir.join("a/1.parquet"), &[vec![("text", strings(&["a1"]))]]);
        write_parquet(&dir.join("a/0.PARQUET"), &[vec![("text", strings(&["a0"]))]]);
        write_parquet(&dir.join(".hidden/0.parquet"), &[vec![("text", strings(&["hidden"]))]]);
        write(&dir.join("notes.txt"), "ignored");
        let src = resolve(&dir, None).unwrap();
        assert_eq!((src.format, src.column.as_deref(), src.files.len()), (PromptFormat::Parquet, Some("text"), 3));
        assert_eq!(read_prompts(&src, None).unwrap(), ["a0", "a1", "b0"]);
        assert_eq!(read_prompts(&src, Some(2)).unwrap(), ["a0", "a1"]);
        write_parquet(&dir.join("c.parquet"), &[vec![("other", strings(&["c"]))]]);
        assert!(message(read(&dir, None, None)).contains("no column `text`"));
        let empty = scratch("folder-empty");
        assert!(message(resolve(&empty, None)).contains("no .parquet files"));
        std::fs::remove_dir_all(dir).ok();
        std::fs::remove_dir_all(empty).ok();
    }

    #[test]
    fn hub_dataset_from_fake_cache() {
        let cache = scratch("hub");
        let repo = dataset_dir(&cache, "o/n");
        write(&repo.join("refs/main"), "abc123\n");
        let snap = repo.join("snapshots/abc123");
        write_parquet(&snap.join("data/train-0001.parquet"), &[vec![("caption", strings(&["t1"]))]]);
        write_parquet(&snap.join("data/train-0000.parquet"), &[vec![("caption", strings(&["t0"]))]]);
        write_parquet(&snap.join("data/test-0000.parquet"), &[vec![("caption", strings(&["x"]))]]);
        write(&snap.join("README.md"), "card");
        let src = resolve_in_cache("o/n", None, &cache, true).unwrap();
        assert_eq!(src.files, [snap.join("data/train-0000.parquet"), snap.join("data/train-0001.parquet")]);
        assert_eq!((src.spec.as_str(), src.format), ("o/n", PromptFormat::Parquet));
        assert_eq!(read_prompts(&src, None).unwrap(), ["t0", "t1"]);
        // A named revision via refs/, or a commit hash directly.
        write(&repo.join("refs/v2"), "def456");
        write_parquet(&repo.join("snapshots/def456/x.parquet"), &[vec![("prompt", strings(&["v2"]))]]);
        assert_eq!(read_prompts(&resolve_in_cache("o/n@v2", None, &cache, true).unwrap(), None).unwrap(), ["v2"]);
        assert_eq!(resolve_in_cache("o/n@abc123", None, &cache, true).unwrap().files.len(), 2);
        match resolve_in_cache("o/absent@dev", None, &cache, true) {
            Err(Error::Hub { repo, why }) => {
                assert_eq!(repo, "o/absent");
                assert!(why.contains(&dataset_dir(&cache, "o/absent").display().to_string()), "{why}");
                let fetch =
                    "huggingface-cli download --repo-type dataset o/absent --revision dev --include \"*.parquet\"";
                assert!(why.contains(fetch) && why.contains("HF_HUB_OFFLINE"), "{why}");
            }
            other => panic!("expected Error::Hub, got {other:?}"),
        }
        std::fs::remove_dir_all(cache).ok();
    }

    #[test]
    fn spec_shapes() {
        let cache = Path::new("/nonexistent-sdscope-cache");
        assert!(matches!(resolve_in_cache("./missing.txt", None, cache, true), Err(Error::MissingFile { .. })));
        assert!(matches!(resolve_in_cache("data/prompts.csv", None, cache, true), Err(Error::MissingFile { .. })));
        assert!(matches!(resolve_in_cache("a/b/c", None, cache, true), Err(Error::MissingFile { .. })));
        for bad in ["prompts", "a b/c", "o/n@", ""] {
            let err = message(resolve_in_cache(bad, None, cache, true));
            assert!(err.contains("owner/name"), "{bad}: {err}");
        }
        assert_eq!(parse_dataset_id("o/n@refs/convert/parquet"), Some(("o/n", "refs/convert/parquet")));
        assert_eq!(parse_dataset_id("o/n"), Some(("o/n", "main")));
        assert_eq!(parse_dataset_id("o/n@../x"), None);
        let files = ["b/test.parquet", "a/train.parquet", "constrained.parquet", "README.md"].map(String::from);
        assert_eq!(choose_parquet(files.to_vec()), ["a/train.parquet"]);
        let one_split = ["data/validation-0.parquet", "data/validation-1.parquet"].map(String::from);
        assert_eq!(choose_parquet(one_split.to_vec()), one_split);
    }

    #[test]
    fn image_folder_labels_and_order() {
        let dir = scratch("images");
        for f in ["b.PNG", "a.jpg", "cats/tabby/z.webp", "cats/a.jpeg", "dogs/x.tif", "notes.txt", ".hidden.png"] {
            write(&dir.join(f), f);
        }
        let items = list_images(&dir, None).unwrap();
        let got: Vec<(String, Option<&str>)> =
            items.iter().map(|i| (slash_path(i.path.strip_prefix(&dir).unwrap()), i.label.as_deref())).collect();
        let expected = [
            ("a.jpg", None),
            ("b.PNG", None),
            ("cats/a.jpeg", Some("cats")),
            ("cats/tabby/z.webp", Some("cats/tabby")),
            ("dogs/x.tif", Some("dogs")),
        ];
        assert_eq!(got, expected.map(|(p, l)| (p.to_string(), l)));
        assert_eq!(list_images(&dir, Some(2)).unwrap(), items[..2]);
        #[cfg(unix)]
        {
            // A symlink loop is not followed; a symlinked file is taken.
            std::os::unix::fs::symlink(&dir, dir.join("cats/loop")).unwrap();
            std::os::unix::fs::symlink(dir.join("a.jpg"), dir.join("dogs/link.jpg")).unwrap();
            let again = list_images(&dir, None).unwrap();
            assert_eq!(again.len(), 6);
            assert_eq!(again[4], ImageItem { path: dir.join("dogs/link.jpg"), label: Some("dogs".into()) });
        }
        let single = list_images(&dir.join("a.jpg"), None).unwrap();
        assert_eq!(single, [ImageItem { path: dir.join("a.jpg"), label: None }]);
        let empty = scratch("images-empty");
        write(&empty.join("x.txt"), "");
        let err = message(list_images(&empty, None));
        assert!(err.contains("no images found") && err.contains(".png, .jpg"), "{err}");
        assert!(matches!(list_images(&empty.join("nope"), None), Err(Error::MissingFile { .. })));
        std::fs::remove_dir_all(dir).ok();
        std::fs::remove_dir_all(empty).ok();
    }

    #[test]
    fn image_list_file() {
        let dir = scratch("list");
        write(&dir.join("imgs/one.png"), "1");
        let abs = write(&dir.join("elsewhere/two.bin"), "2");
        let list = format!("# comment\n\nimgs/one.png\tcat\r\n  {}\t\n", abs.display());
        let list = write(&dir.join("list.txt"), list);
        let items = list_images(&list, None).unwrap();
        let expected = [
            ImageItem { path: dir.join("imgs/one.png"), label: Some("cat".into()) },
            ImageItem { path: abs.clone(), label: None },
        ];
        assert_eq!(items, expected);
        assert_eq!(list_images(&list, Some(1)).unwrap(), expected[..1]);
        let bad = write(&dir.join("bad.lst"), "imgs/one.png\nimgs/missing.png\tx\n");
        match list_images(&bad, None) {
            Err(Error::MissingFile { path, hint }) => {
                assert_eq!(path, dir.join("imgs/missing.png"));
                assert!(hint.unwrap().contains("line 2"));
            }
            other => panic!("expected MissingFile, got {other:?}"),
        }
        let empty = write(&dir.join("empty.txt"), "# nothing\n");
        assert!(message(list_images(&empty, None)).contains("no images found"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn fingerprints() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // sha256 of the empty input, and of u64le(1) ++ "a".
        assert_eq!(fingerprint_prompts(&[]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let mut one = Sha256::new();
        one.update([1, 0, 0, 0, 0, 0, 0, 0, b'a']);
        assert_eq!(fingerprint_prompts(&p(&["a"])), hex(&one.finalize()));
        assert_ne!(fingerprint_prompts(&p(&["ab", "c"])), fingerprint_prompts(&p(&["a", "bc"])));
        assert_ne!(fingerprint_prompts(&p(&["a", "b"])), fingerprint_prompts(&p(&["b", "a"])));

        let (a, b) = (scratch("fp-a"), scratch("fp-b"));
        for root in [&a, &b] {
            write(&root.join("cats/1.png"), "pixels");
            write(&root.join("2.jpg"), "more");
        }
        let fp = |root: &Path| fingerprint_images(&list_images(root, None).unwrap(), root).unwrap();
        assert_eq!(fp(&a), fp(&b));
        assert_eq!(fp(&a).len(), 64);
        write(&b.join("cats/1.png"), "pixelz");
        assert_ne!(fp(&a), fp(&b));
        // The label counts, and a list file's folder is the root.
        let items = list_images(&a, None).unwrap();
        let relabelled: Vec<ImageItem> = items.iter().map(|i| ImageItem { label: None, ..i.clone() }).collect();
        assert_ne!(fingerprint_images(&relabelled, &a).unwrap(), fp(&a));
        let list = write(&a.join("list.txt"), "2.jpg\ncats/1.png\tcats\n");
        let listed = list_images(&list, None).unwrap();
        assert_eq!(fingerprint_images(&listed, &list).unwrap(), fp(&a));
        std::fs::remove_file(a.join("2.jpg")).unwrap();
        assert!(matches!(fingerprint_images(&items, &a), Err(Error::Io { .. })));
        std::fs::remove_dir_all(a).ok();
        std::fs::remove_dir_all(b).ok();
    }
}
