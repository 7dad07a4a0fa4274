//! Reading prompts from text, JSONL, CSV/TSV and Parquet files.

use super::*;

/// Collects prompts until `left` reaches 0.
pub(super) struct Sink<'a> {
    pub(super) out: &'a mut Vec<String>,
    pub(super) left: usize,
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
pub(super) fn lines(file: &Path) -> Result<impl Iterator<Item = Result<(usize, String)>> + '_> {
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

pub(super) fn read_text(file: &Path, sink: &mut Sink) -> Result<()> {
    for line in lines(file)? {
        let (_, text) = line?;
        if !text.trim().is_empty() && !sink.push(text) {
            break;
        }
    }
    Ok(())
}

pub(super) fn jsonl_object(file: &Path, number: usize, text: &str) -> Result<serde_json::Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad_file(file, format!("line {number} is not a JSON object"))),
        Err(e) => Err(bad_file(file, format!("line {number} is not valid JSON: {e}"))),
    }
}

/// The keys of the first object of a JSONL file.
pub(super) fn jsonl_columns(file: &Path) -> Result<Vec<String>> {
    for line in lines(file)? {
        let (number, text) = line?;
        if !text.trim().is_empty() {
            return Ok(jsonl_object(file, number, &text)?.keys().cloned().collect());
        }
    }
    Ok(Vec::new())
}

pub(super) fn read_jsonl(file: &Path, column: &str, sink: &mut Sink) -> Result<()> {
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

pub(super) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn csv_reader(file: &Path, delimiter: u8) -> Result<csv::Reader<File>> {
    Ok(csv::ReaderBuilder::new().delimiter(delimiter).flexible(true).from_reader(open(file)?))
}

pub(super) fn csv_error(file: &Path, e: csv::Error) -> Error {
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
pub(super) fn delimited_columns(file: &Path, delimiter: u8) -> Result<Vec<String>> {
    let mut reader = csv_reader(file, delimiter)?;
    let headers = reader.headers().map_err(|e| csv_error(file, e))?;
    Ok(headers.iter().map(|h| h.trim_start_matches('\u{feff}').to_string()).collect())
}

pub(super) fn read_delimited(file: &Path, delimiter: u8, column: &str, sink: &mut Sink) -> Result<()> {
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

pub(super) fn parquet_builder(file: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    ParquetRecordBatchReaderBuilder::try_new(open(file)?)
        .map_err(|e| bad_file(file, format!("not a readable Parquet file: {e}")))
}

/// Runs a Parquet read, turning a panic of the parquet crate (some corrupt files still cause one) into an error.
pub(super) fn guarded<T>(file: &Path, read: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|payload| {
        let text = payload.downcast_ref::<String>().map(String::as_str);
        let why = text.or_else(|| payload.downcast_ref::<&str>().copied()).unwrap_or("no details");
        Err(bad_file(file, format!("corrupt Parquet file (the reader gave up: {why})")))
    })
}

pub(super) fn parquet_columns(file: &Path) -> Result<Vec<String>> {
    let builder = guarded(file, || parquet_builder(file))?;
    Ok(builder.schema().fields().iter().map(|f| f.name().clone()).collect())
}

pub(super) fn read_parquet(file: &Path, column: &str, sink: &mut Sink) -> Result<()> {
    guarded(file, || read_parquet_unguarded(file, column, sink))
}

pub(super) fn read_parquet_unguarded(file: &Path, column: &str, sink: &mut Sink) -> Result<()> {
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
pub(super) fn push_strings(
    file: &Path,
    column: &str,
    array: &dyn Array,
    first_row: usize,
    sink: &mut Sink,
) -> Result<bool> {
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
