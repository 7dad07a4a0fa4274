//! `sdscope map`: a folder of images (sub-folder = label) embedded with CLIP, projected to 2-D and written as the
//! interactive embedding map (a standalone, offline HTML page).

use crate::cli_checks as checks;
use sdscope::collection::layout::MANIFEST_FILE;
use sdscope::collection::sources::{list_images, read_parquet_images, ParquetImageColumns};
use sdscope::collection::Collection;
use sdscope::embed::map::{EmbeddingMap, MapOptions, Thumbnails};
use sdscope::embed::ClipModel;
use sdscope::project::{project, Method, Metric, ProjectOptions};
use sdscope::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct MapArgs {
    /// A folder of images, searched recursively; an image's label is its sub-folder (relative to DIR). Also: a
    /// list file, a collection folder with kept images, or a Parquet file of images (Hugging Face datasets).
    #[arg(long)]
    pub dir: PathBuf,
    /// A CLIP model: folder, hub repo id or alias.
    #[arg(long, default_value = "clip-vit-base-patch32")]
    pub model: String,
    /// umap, tsne or pca.
    #[arg(long, default_value = "umap")]
    pub method: String,
    /// euclidean or cosine: for the projection and for the nearest neighbours.
    #[arg(long, default_value = "cosine")]
    pub metric: String,
    /// Nearest neighbours listed per point.
    #[arg(long, default_value_t = 10)]
    pub neighbours: usize,
    /// Longest side of the thumbnails in pixels.
    #[arg(long, default_value_t = 64)]
    pub thumb: u32,
    /// JPEG quality of the thumbnails.
    #[arg(long, default_value_t = 80)]
    pub quality: u8,
    /// At most this many images (the first in sorted path order).
    #[arg(long)]
    pub limit: Option<usize>,
    /// A JSON object of captions (prompts) by image path relative to DIR, or by file name; default
    /// DIR/captions.json when it exists. Images without one are captioned with their path.
    #[arg(long)]
    pub captions: Option<PathBuf>,
    /// Images per CLIP forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub html: PathBuf,
    /// With a Parquet file as --dir: the column of encoded images (a Hugging Face `Image` struct or binary).
    #[arg(long, default_value = "image")]
    pub image_column: String,
    /// With a Parquet file: the label column (default `label` when present; ClassLabel names are used).
    #[arg(long)]
    pub label_column: Option<String>,
    /// With a Parquet file: a text column shown as the caption.
    #[arg(long)]
    pub caption_column: Option<String>,
}

/// `sdscope map-synthetic`: a map of random clusters with generated thumbnails, for timing the page.
#[derive(clap::Args)]
pub struct MapSyntheticArgs {
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub html: PathBuf,
}

fn report(map: &EmbeddingMap, html: &Path, seconds: f64) -> Result<()> {
    let bytes = std::fs::metadata(html).map_err(|e| Error::io(html, e))?.len() as f64;
    let thumbnails: usize = map.atlases().iter().map(|a| a.len()).sum();
    let n = map.len().max(1) as f64;
    eprintln!(
        "[sdscope] wrote {} ({} points, {:.2} MB, {:.0} bytes per point of which {:.0} thumbnail JPEG) in {seconds:.1} s",
        html.display(),
        map.len(),
        bytes / 1e6,
        bytes / n,
        thumbnails as f64 / n
    );
    Ok(())
}

fn read_captions(path: Option<PathBuf>) -> Result<HashMap<String, String>> {
    let Some(path) = path else { return Ok(HashMap::new()) };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::invalid(format!("--captions {}", path.display()), format!("needs a JSON object of strings: {e}"))
    })
}

/// The layout of the well-known CLIP + t-SNE walkthrough: `DIR/<concept><i>.jpg` beside `DIR/<concept>.json`, a
/// JSON list whose i-th entry is the prompt of image i. Such an image's label is the concept, its caption the prompt.
#[derive(Default)]
struct Walkthrough {
    prompts: HashMap<String, Option<Vec<String>>>,
}

impl Walkthrough {
    fn concept(&mut self, dir: &Path, path: &Path) -> Result<Option<(String, Option<String>)>> {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let concept = stem.trim_end_matches(|c: char| c.is_ascii_digit());
        let Ok(index) = stem[concept.len()..].parse::<usize>() else { return Ok(None) };
        if concept.is_empty() {
            return Ok(None);
        }
        if !self.prompts.contains_key(concept) {
            let file = dir.join(format!("{concept}.json"));
            let prompts = if file.is_file() {
                let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
                let list: Vec<String> = serde_json::from_str(&text).map_err(|e| {
                    Error::invalid(format!("{}", file.display()), format!("needs a JSON list of prompts: {e}"))
                })?;
                Some(list)
            } else {
                None
            };
            self.prompts.insert(concept.to_string(), prompts);
        }
        Ok(match self.prompts.get(concept) {
            Some(Some(list)) => Some((concept.to_string(), list.get(index).cloned())),
            _ => None,
        })
    }
}

pub fn map(a: &MapArgs) -> Result<()> {
    checks::outputs_valid(&[("--html", Some(a.html.as_path()))])?;
    Method::parse(&a.method)?; // checked before any image is read
    Metric::parse(&a.metric)?;
    let start = std::time::Instant::now();
    if a.dir.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")) && a.dir.is_file() {
        let scratch = std::env::temp_dir().join(format!("sdscope-map-{}", std::process::id()));
        let result = parquet_images(a, &scratch)
            .and_then(|(paths, labels, captions)| map_images(a, paths, labels, captions, start));
        let _ = std::fs::remove_dir_all(&scratch);
        return result;
    }
    if a.dir.join(MANIFEST_FILE).is_file() {
        let (paths, labels, captions) = collection_images(&a.dir, a.limit)?;
        return map_images(a, paths, labels, captions, start);
    }
    let items = list_images(&a.dir, a.limit)?;
    let paths: Vec<PathBuf> = items.iter().map(|i| i.path.clone()).collect();
    let mut walkthrough = Walkthrough::default();
    let concepts: Vec<Option<(String, Option<String>)>> = items
        .iter()
        .map(|i| if i.label.is_none() { walkthrough.concept(&a.dir, &i.path) } else { Ok(None) })
        .collect::<Result<_>>()?;
    let labels: Vec<String> = items
        .iter()
        .zip(&concepts)
        .map(|(i, c)| {
            i.label.clone().or_else(|| c.as_ref().map(|c| c.0.clone())).unwrap_or_else(|| "(no folder)".into())
        })
        .collect();
    let given =
        read_captions(a.captions.clone().or_else(|| Some(a.dir.join("captions.json")).filter(|p| p.is_file())))?;
    let captions: Vec<String> = paths
        .iter()
        .zip(&concepts)
        .map(|(p, c)| {
            let relative = p.strip_prefix(&a.dir).unwrap_or(p).to_string_lossy().replace('\\', "/");
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            given
                .get(&relative)
                .or_else(|| given.get(&name))
                .cloned()
                .or_else(|| c.as_ref().and_then(|c| c.1.clone()))
                .unwrap_or(relative)
        })
        .collect();
    map_images(a, paths, labels, captions, start)
}

/// The images of a Parquet file (Hugging Face `datasets` layout), written to `scratch` so they can be read like
/// files; label and caption from the chosen columns (the caption defaults to the row number).
fn parquet_images(a: &MapArgs, scratch: &Path) -> Result<(Vec<PathBuf>, Vec<String>, Vec<String>)> {
    let columns = ParquetImageColumns {
        image: a.image_column.clone(),
        label: a.label_column.clone(),
        caption: a.caption_column.clone(),
    };
    let rows = read_parquet_images(&a.dir, &columns, a.limit)?;
    std::fs::create_dir_all(scratch).map_err(|e| Error::io(scratch, e))?;
    let (mut paths, mut labels, mut captions) = (Vec::new(), Vec::new(), Vec::new());
    for (i, row) in rows.into_iter().enumerate() {
        let extension = image::guess_format(&row.bytes)
            .ok()
            .and_then(|f| f.extensions_str().first().copied())
            .ok_or_else(|| Error::invalid(format!("row {i} of {}", a.dir.display()), "its bytes are not an image"))?;
        let path = scratch.join(format!("{i:06}.{extension}"));
        std::fs::write(&path, &row.bytes).map_err(|e| Error::io(&path, e))?;
        paths.push(path);
        labels.push(row.label.unwrap_or_else(|| "(no label)".into()));
        captions.push(row.caption.unwrap_or_else(|| format!("row {i}")));
    }
    Ok((paths, labels, captions))
}

/// The kept images of a collection (`collect --keep-images`): label and caption are each item's prompt.
fn collection_images(dir: &Path, limit: Option<usize>) -> Result<(Vec<PathBuf>, Vec<String>, Vec<String>)> {
    let collection = Collection::open(dir)?;
    let (mut paths, mut prompts) = (Vec::new(), Vec::new());
    for shard in 0..collection.shard_count() {
        let shard_dir = collection.complete_shard(shard)?;
        for row in collection.items(shard)? {
            if let (Some(file), Some(prompt)) = (row["image_file"].as_str(), row["prompt"].as_str()) {
                paths.push(shard_dir.join(file));
                prompts.push(prompt.to_string());
            }
        }
    }
    if paths.is_empty() {
        let why = "its items have no kept images with prompts: collect from prompts with --keep-images";
        return Err(Error::invalid(format!("collection {}", dir.display()), why));
    }
    paths.truncate(limit.unwrap_or(usize::MAX));
    prompts.truncate(paths.len());
    Ok((paths, prompts.clone(), prompts))
}

fn map_images(
    a: &MapArgs,
    paths: Vec<PathBuf>,
    labels: Vec<String>,
    captions: Vec<String>,
    start: std::time::Instant,
) -> Result<()> {
    if paths.len() < 2 {
        return Err(Error::invalid(format!("--dir {}", a.dir.display()), "a map needs at least 2 images"));
    }
    let method = Method::parse(&a.method)?;
    let metric = Metric::parse(&a.metric)?;
    let clip = ClipModel::load_with(&a.model, sdscope::pipeline::LoadOptions::default())?;
    let embeds = clip.image_embeds(&paths, a.batch, true)?;
    let n = paths.len();
    let mut options = ProjectOptions { method, metric, ..ProjectOptions::default() };
    // t-SNE needs perplexity < n and UMAP fewer neighbours than points: small folders get smaller ones.
    options.tsne.perplexity = options.tsne.perplexity.min(((n - 1) as f64 / 3.0).max(1.0));
    options.tsne.seed = a.seed;
    options.umap.n_neighbors = options.umap.n_neighbors.min(n - 1).max(2);
    options.umap.seed = a.seed;
    let t = std::time::Instant::now();
    let xy = project(&embeds, &options)?;
    eprintln!("[sdscope] {} of {n} points in {:.1} s", a.method, t.elapsed().as_secs_f64());
    let map_options = MapOptions {
        k: a.neighbours,
        metric,
        thumb_px: a.thumb,
        jpeg_quality: a.quality,
        title: format!("{} · {} · {}", a.dir.display(), a.model, a.method),
        ..MapOptions::default()
    };
    let map = EmbeddingMap::new(&xy, &embeds, labels, captions, Thumbnails::Paths(&paths), &map_options)?;
    checks::create_parents(&[Some(a.html.as_path())])?;
    map.save_html(&a.html)?;
    report(&map, &a.html, start.elapsed().as_secs_f64())
}

pub fn map_synthetic(a: &MapSyntheticArgs) -> Result<()> {
    checks::outputs_valid(&[("--html", Some(a.html.as_path()))])?;
    let start = std::time::Instant::now();
    let map = EmbeddingMap::synthetic(a.n, a.seed)?;
    checks::create_parents(&[Some(a.html.as_path())])?;
    map.save_html(&a.html)?;
    report(&map, &a.html, start.elapsed().as_secs_f64())
}
