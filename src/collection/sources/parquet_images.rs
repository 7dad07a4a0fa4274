//! Images stored in Parquet, as Hugging Face `datasets` writes them: an image column that is a struct
//! `{bytes: binary, path: string}` (or plain binary), a `ClassLabel` column of integers whose names sit in the
//! schema's `huggingface` metadata (or a string column), and optional text columns.

use super::*;
use arrow_array::{BinaryArray, LargeBinaryArray, StructArray};

/// One image row of a Parquet file.
#[derive(Debug, Clone)]
pub struct ParquetImage {
    /// The encoded image (PNG, JPEG, …) as stored.
    pub bytes: Vec<u8>,
    /// The label's name (a `ClassLabel` index mapped through its names), or its text.
    pub label: Option<String>,
    pub caption: Option<String>,
}

/// Which columns hold what.
#[derive(Debug, Clone)]
pub struct ParquetImageColumns {
    pub image: String,
    /// `None`: `label` when the file has such a column.
    pub label: Option<String>,
    pub caption: Option<String>,
}

impl Default for ParquetImageColumns {
    fn default() -> Self {
        Self { image: "image".into(), label: None, caption: None }
    }
}

/// The image rows of a Parquet file, at most `limit`.
///
/// ```no_run
/// use sdscope::collection::sources::{read_parquet_images, ParquetImageColumns};
/// let rows = read_parquet_images(std::path::Path::new("train-00000.parquet"), &ParquetImageColumns::default(), Some(500))?;
/// println!("{} images, first label {:?}", rows.len(), rows[0].label);
/// # Ok::<(), sdscope::Error>(())
/// ```
pub fn read_parquet_images(
    file: &Path,
    columns: &ParquetImageColumns,
    limit: Option<usize>,
) -> Result<Vec<ParquetImage>> {
    guarded(file, || read_unguarded(file, columns, limit.unwrap_or(usize::MAX)))
}

/// `ClassLabel` names by column, from the `huggingface` schema metadata.
fn class_names(huggingface: Option<&str>, column: &str) -> Option<Vec<String>> {
    let info: Value = serde_json::from_str(huggingface?).ok()?;
    let names = info.pointer(&format!("/info/features/{column}/names"))?.as_array()?;
    names.iter().map(|n| n.as_str().map(str::to_string)).collect()
}

fn read_unguarded(file: &Path, columns: &ParquetImageColumns, limit: usize) -> Result<Vec<ParquetImage>> {
    let builder = parquet_builder(file)?;
    let schema = builder.schema().clone();
    let available: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let find = |name: &str| available.iter().position(|f| f == name);
    let missing = |name: &str| {
        bad_file(file, format!("there is no column `{name}`; available columns: {}", list_or_none(&available)))
    };
    let image = find(&columns.image).ok_or_else(|| missing(&columns.image))?;
    let label = match &columns.label {
        Some(name) => Some(find(name).ok_or_else(|| missing(name))?),
        None => find("label"),
    };
    let caption = match &columns.caption {
        Some(name) => Some(find(name).ok_or_else(|| missing(name))?),
        None => None,
    };
    let names =
        label.and_then(|i| class_names(schema.metadata().get("huggingface").map(|s| s.as_str()), &available[i]));
    let wanted: Vec<usize> = [Some(image), label, caption].into_iter().flatten().collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(limit.clamp(1, 1024))
        .build()
        .map_err(|e| bad_file(file, format!("cannot read the image columns: {e}")))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad_file(file, format!("cannot read the image columns: {e}")))?;
        let column = |index: usize| {
            batch.column_by_name(&available[index]).ok_or_else(|| bad_file(file, "a projected column came back empty"))
        };
        let images = column(image)?;
        let labels = label.map(column).transpose()?;
        let captions = caption.map(column).transpose()?;
        for r in 0..batch.num_rows() {
            if rows.len() == limit {
                return Ok(rows);
            }
            let at = rows.len();
            let bytes = image_bytes(images.as_ref(), r)
                .ok_or_else(|| bad_file(file, format!("row {at}: column `{}` holds no image bytes", columns.image)))?;
            let label = labels.as_ref().and_then(|a| label_text(a.as_ref(), r, names.as_deref()));
            let caption = captions.as_ref().and_then(|a| text(a.as_ref(), r));
            rows.push(ParquetImage { bytes, label, caption });
        }
    }
    Ok(rows)
}

fn binary(array: &dyn Array, row: usize) -> Option<Vec<u8>> {
    if array.is_null(row) {
        return None;
    }
    if let Some(a) = array.as_any().downcast_ref::<BinaryArray>() {
        return Some(a.value(row).to_vec());
    }
    array.as_any().downcast_ref::<LargeBinaryArray>().map(|a| a.value(row).to_vec())
}

/// A `{bytes, path}` struct (Hugging Face's `Image` feature) or a binary column.
fn image_bytes(array: &dyn Array, row: usize) -> Option<Vec<u8>> {
    match array.as_any().downcast_ref::<StructArray>() {
        Some(s) if !s.is_null(row) => binary(s.column_by_name("bytes")?.as_ref(), row),
        Some(_) => None,
        None => binary(array, row),
    }
}

fn text(array: &dyn Array, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    array
        .as_string_opt::<i32>()
        .map(|a| a.value(row).to_string())
        .or_else(|| array.as_string_opt::<i64>().map(|a| a.value(row).to_string()))
}

fn label_text(array: &dyn Array, row: usize, names: Option<&[String]>) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    use arrow_array::types::{Int16Type, Int32Type, Int64Type};
    let number = array
        .as_primitive_opt::<Int64Type>()
        .map(|a| a.value(row))
        .or_else(|| array.as_primitive_opt::<Int32Type>().map(|a| a.value(row) as i64))
        .or_else(|| array.as_primitive_opt::<Int16Type>().map(|a| a.value(row) as i64));
    match number {
        Some(i) => Some(names.and_then(|n| n.get(i as usize)).cloned().unwrap_or_else(|| i.to_string())),
        None => text(array, row),
    }
}
