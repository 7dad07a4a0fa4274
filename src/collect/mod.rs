//! Representations at dataset scale: a work list (prompts × seeds, or images) cut into shards by index, each
//! shard generated or extracted in batches and written atomically into a collection folder
//! ([`crate::collection`]). A shard is a pure function of (source, shard index, shard count, options): item `k`
//! (counted over the whole work list) always gets seed `seed + k`, whatever shard or batch it runs in.
//!
//! ```no_run
//! use sdscope::collect::{CollectRequest, Collector, WorkSource};
//! use sdscope::prelude::*;
//! let pipe = Pipeline::load("sdxl-turbo")?;
//! let prompts = vec!["a cat".to_string(), "a red car".to_string()];
//! let request = CollectRequest::new(["mid_block.attentions[0]@update"]).steps(1).guidance(0.0).batch(2);
//! let collector = Collector::new(&pipe, WorkSource::prompts("inline", None, prompts), request, "runs/turbo", 1)?;
//! collector.run(None)?;
//! # Ok::<(), sdscope::Error>(())
//! ```

pub mod model_files;
pub mod options;
pub mod reduce;
mod request;

use crate::collection::layout::{image_file, position_file, shard_range};
use crate::collection::manifest::{Manifest, ModelRecord, ShardsRecord, SourceRecord, FORMAT, VERSION};
use crate::collection::shard_io::ShardWriter;
use crate::collection::sources::{fingerprint_images, fingerprint_prompts, ImageItem};
use crate::collection::{Collection, ShardState};
use crate::error::{Error, Result};
use crate::extract::ExtractRequest;
use crate::generate::{BatchItem, GenerateRequest};
use crate::image_io::{load_image, load_square};
use crate::interventions::Interventions;
use crate::pipeline::Pipeline;
use crate::schedulers::build_sampler;
pub use options::{CaptureSteps, Reduce, ShardSelection, StoreDtype};
use reduce::{native_layout, reduce_item, reduced_layout};
pub use request::CollectRequest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Kind, Tensor};

/// What the items are.
#[derive(Debug, Clone)]
pub enum WorkSource {
    /// Prompts to generate from (each `samples_per_prompt` times).
    Prompts { spec: String, column: Option<String>, prompts: Vec<String> },
    /// Images to extract from; `root` is what item paths are written relative to.
    Images { spec: String, root: PathBuf, items: Vec<ImageItem> },
}

impl WorkSource {
    pub fn prompts(spec: impl Into<String>, column: Option<String>, prompts: Vec<String>) -> Self {
        Self::Prompts { spec: spec.into(), column, prompts }
    }

    pub fn images(spec: impl Into<String>, root: impl Into<PathBuf>, items: Vec<ImageItem>) -> Self {
        Self::Images { spec: spec.into(), root: root.into(), items }
    }
}

/// What running one shard did.
#[derive(Debug, Clone, PartialEq)]
pub enum ShardOutcome {
    /// It was complete already.
    Skipped,
    Written {
        items: u64,
        bytes: u64,
        seconds: f64,
    },
}

/// A collection being made: the pipeline, the work list and the folder, checked against each other.
pub struct Collector<'p> {
    pipe: &'p Pipeline,
    dir: PathBuf,
    source: WorkSource,
    request: CollectRequest,
    positions: Vec<String>,
    manifest: Manifest,
    /// Generation: steps, guidance, width, height resolved; the kept U-Net call indices.
    resolved: Resolved,
    created: Created,
    /// Images: the conditioning of the (one) extraction prompt, encoded once.
    image_cond: Option<crate::pipeline::TextConditioning>,
}

/// What this collector created, so that a run that fails before any shard is complete leaves nothing behind.
#[derive(Debug, Clone, Copy)]
struct Created {
    manifest: bool,
    folder: bool,
}

#[derive(Debug, Clone)]
struct Resolved {
    steps: usize,
    guidance: f64,
    width: i64,
    height: i64,
    kept: Vec<usize>,
    /// The timestep of each kept step.
    timesteps: Vec<f64>,
}

impl<'p> Collector<'p> {
    /// Check the request against the model and the source, then write `dir/manifest.json` (or check the one
    /// there: a folder made with other settings is refused). No shard is touched.
    pub fn new(
        pipe: &'p Pipeline,
        source: WorkSource,
        request: CollectRequest,
        dir: impl AsRef<Path>,
        shard_count: usize,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if request.positions.is_empty() {
            return Err(Error::invalid(
                "--positions",
                "give at least one position, e.g. mid_block or mid_block@update",
            ));
        }
        if shard_count == 0 {
            return Err(Error::invalid("--shards 0", "give at least one shard"));
        }
        if request.samples_per_prompt == 0 {
            return Err(Error::invalid("--samples-per-prompt 0", "give at least one sample per prompt"));
        }
        let positions = pipe.resolve_positions(&request.positions)?;
        pipe.check_updates(&positions)?;
        let resolved = match &source {
            WorkSource::Prompts { .. } => Self::resolve_generation(pipe, &request)?,
            WorkSource::Images { .. } => {
                if request.timesteps.is_empty() {
                    return Err(Error::invalid("--timesteps", "give at least one timestep in 0..=999"));
                }
                for &t in &request.timesteps {
                    pipe.noise_schedule.check_timestep(t)?;
                }
                if request.keep_images {
                    return Err(Error::invalid("--keep-images", "only for prompts: image items are files already"));
                }
                Resolved {
                    steps: 0,
                    guidance: 0.0,
                    width: 0,
                    height: 0,
                    kept: (0..request.timesteps.len()).collect(),
                    timesteps: request.timesteps.iter().map(|&t| t as f64).collect(),
                }
            }
        };
        let (items, source_record) = match &source {
            WorkSource::Prompts { spec, column, prompts } => {
                let items = (prompts.len() * request.samples_per_prompt) as u64;
                let record = SourceRecord {
                    kind: "prompts".into(),
                    spec: spec.clone(),
                    column: column.clone(),
                    items,
                    fingerprint: fingerprint_prompts(prompts),
                };
                (items, record)
            }
            WorkSource::Images { spec, root, items } => {
                let record = SourceRecord {
                    kind: "images".into(),
                    spec: spec.clone(),
                    column: None,
                    items: items.len() as u64,
                    fingerprint: fingerprint_images(items, root)?,
                };
                (items.len() as u64, record)
            }
        };
        if items == 0 {
            return Err(Error::invalid("source", "has no items"));
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            sdscope_version: env!("CARGO_PKG_VERSION").into(),
            model: ModelRecord {
                spec: pipe.source.root.display().to_string(),
                files: model_files::model_file_hashes(pipe)?,
            },
            source: source_record,
            positions: positions.clone(),
            options: Self::options_record(&source, &request, &resolved),
            shards: ShardsRecord {
                count: shard_count,
                items: (0..shard_count).map(|i| shard_range(items, i, shard_count)).map(|r| r.end - r.start).collect(),
            },
            layout: LAYOUT_NOTE.into(),
        };
        let new_folder = !dir.exists();
        let wrote_manifest = manifest.create_or_check(&dir)?;
        let created = Created { manifest: wrote_manifest, folder: new_folder };
        let image_cond = match &source {
            WorkSource::Images { .. } => Some(pipe.encode_prompt(&request.prompt)?),
            WorkSource::Prompts { .. } => None,
        };
        Ok(Self { pipe, dir, source, request, positions, manifest, resolved, created, image_cond })
    }

    fn resolve_generation(pipe: &Pipeline, request: &CollectRequest) -> Result<Resolved> {
        let defaults = pipe.generation_defaults();
        let steps = request.steps.unwrap_or(defaults.steps);
        let guidance = request.guidance.unwrap_or(defaults.guidance);
        let (width, height) = (request.width.unwrap_or(defaults.width), request.height.unwrap_or(defaults.height));
        let factor = pipe.vae.scale_factor();
        for (what, v) in [("--width", width), ("--height", height)] {
            if v <= 0 || v % factor != 0 {
                return Err(Error::invalid(format!("{what} {v}"), format!("must be a positive multiple of {factor}")));
            }
        }
        if !guidance.is_finite() {
            return Err(Error::invalid(format!("--guidance {guidance}"), "must be a finite number"));
        }
        let path = pipe.source.root.join("scheduler").join("scheduler_config.json");
        let sampler = build_sampler(request.scheduler, &pipe.scheduler_config, &path, steps)?;
        let all = sampler.timesteps();
        let kept = request.capture_steps.indices(all.len())?;
        let timesteps = kept.iter().map(|&s| all[s]).collect();
        Ok(Resolved { steps, guidance, width, height, kept, timesteps })
    }

    fn options_record(source: &WorkSource, r: &CollectRequest, resolved: &Resolved) -> serde_json::Value {
        let common = serde_json::json!({
            "seed": r.seed,
            "reduce": r.reduce,
            "dtype": r.dtype,
            "limit": r.limit,
            "batch": r.batch,
        });
        let specific = match source {
            WorkSource::Prompts { .. } => serde_json::json!({
                "steps": resolved.steps,
                "guidance": resolved.guidance,
                "width": resolved.width,
                "height": resolved.height,
                "negative_prompt": r.negative_prompt,
                "scheduler": r.scheduler.map(|k| k.name()),
                "capture_steps": resolved.kept,
                "samples_per_prompt": r.samples_per_prompt,
                "keep_images": r.keep_images,
                "thumbnail": r.thumbnail,
            }),
            WorkSource::Images { .. } => {
                serde_json::json!({ "timesteps": r.timesteps, "prompt": r.prompt, "image_size": r.image_size })
            }
        };
        let mut all = common;
        if let (Some(a), serde_json::Value::Object(b)) = (all.as_object_mut(), specific) {
            a.extend(b);
        }
        all
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Run one shard (`Some(i)`) or every shard in turn (`None`), skipping complete ones.
    pub fn run(&self, shard: Option<usize>) -> Result<Vec<(usize, ShardOutcome)>> {
        let count = self.manifest.shards.count;
        let shards: Vec<usize> = match shard {
            Some(i) if i < count => vec![i],
            Some(i) => {
                return Err(Error::invalid(format!("shard {i}"), format!("there are {count} shards (0..{count})")))
            }
            None => (0..count).collect(),
        };
        let start = Instant::now();
        let mut out = Vec::new();
        let (mut done_items, total_items): (u64, u64) =
            (0, shards.iter().map(|&i| self.manifest.shards.items[i]).sum());
        for (n, &i) in shards.iter().enumerate() {
            let outcome = self.run_shard(i).inspect_err(|_| self.clean_up_after_failure())?;
            done_items += self.manifest.shards.items[i];
            if self.request.progress {
                let name = crate::collection::layout::shard_dir_name(i, count);
                match &outcome {
                    ShardOutcome::Skipped => {
                        eprintln!("[sdscope] {name}: complete already, skipped ({}/{})", n + 1, shards.len())
                    }
                    ShardOutcome::Written { items, bytes, seconds } => {
                        let elapsed = start.elapsed().as_secs_f64();
                        let eta = elapsed / done_items.max(1) as f64 * (total_items - done_items) as f64;
                        eprintln!(
                            "[sdscope] {name}: {items} items in {seconds:.1} s ({:.2} items/s, {:.1} MB), {}/{} shards, ETA {eta:.0} s",
                            *items as f64 / seconds.max(1e-9),
                            *bytes as f64 / 1e6,
                            n + 1,
                            shards.len()
                        );
                    }
                }
            }
            out.push((i, outcome));
        }
        Ok(out)
    }

    /// After an error: the manifest this collector wrote, and the folder it created, are removed again when no
    /// shard is complete or being written (the manifest is a function of the settings, so a worker that still
    /// needs it writes the same one again).
    fn clean_up_after_failure(&self) {
        let collection = Collection { dir: self.dir.clone(), manifest: self.manifest.clone() };
        let untouched = collection.status().iter().all(|s| s.state == ShardState::Missing);
        if self.created.manifest && untouched {
            let _ = std::fs::remove_file(self.dir.join(crate::collection::layout::MANIFEST_FILE));
            if self.created.folder {
                let _ = std::fs::remove_dir(&self.dir);
            }
        }
    }

    /// Write shard `index`, unless it is complete. Killing the process at any moment leaves at most a partial
    /// folder, which the next attempt removes; an error removes it at once.
    pub fn run_shard(&self, index: usize) -> Result<ShardOutcome> {
        let count = self.manifest.shards.count;
        let Some(writer) = ShardWriter::begin(&self.dir, index, count)? else { return Ok(ShardOutcome::Skipped) };
        let partial = writer.dir().to_path_buf();
        self.fill_shard(writer, index).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&partial);
        })
    }

    fn fill_shard(&self, writer: ShardWriter, index: usize) -> Result<ShardOutcome> {
        let count = self.manifest.shards.count;
        let start = Instant::now();
        let range = shard_range(self.manifest.source.items, index, count);
        let throttle = std::env::var("SDSCOPE_COLLECT_THROTTLE_MS").ok().and_then(|v| v.parse::<u64>().ok());
        let mut stored: BTreeMap<String, StoredPosition> = BTreeMap::new();
        let mut rows = Vec::new();
        let batch = self.request.batch as u64;
        let mut block = range.start / batch * batch;
        while block < range.end && !range.is_empty() {
            let (slots, real) = batch_slots(block, batch, &range);
            let captured = match &self.source {
                WorkSource::Prompts { prompts, .. } => {
                    self.generate_items(prompts, &slots, real.clone(), &writer, &mut rows)?
                }
                WorkSource::Images { root, items, .. } => {
                    self.extract_items(root, items, &slots, real.clone(), &mut rows)?
                }
            };
            for (&k, per_position) in slots[real].iter().zip(captured) {
                for (position, x) in per_position {
                    let seed = self.item_seed(k);
                    stored.entry(position.clone()).or_default().push(&position, k, x, self.request.reduce, seed)?;
                }
            }
            if let Some(ms) = throttle {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            block += batch;
        }
        let mut bytes = 0;
        for position in &self.positions {
            let data = stored.remove(position).unwrap_or_default();
            let path = position_file(writer.dir(), position);
            self.write_position(&writer, &path, position, data)?;
            bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        }
        writer.write_items(&rows)?;
        writer.finish()?;
        Ok(ShardOutcome::Written { items: range.end - range.start, bytes, seconds: start.elapsed().as_secs_f64() })
    }

    fn item_seed(&self, item: u64) -> i64 {
        self.request.seed.wrapping_add(item as i64)
    }

    /// Generate one batch (`slots`: the item of each batch slot; `real`: the slots whose results are kept); per
    /// kept item, position → `[kept steps, ..native]`.
    fn generate_items(
        &self,
        prompts: &[String],
        slots: &[u64],
        real: std::ops::Range<usize>,
        writer: &ShardWriter,
        rows: &mut Vec<serde_json::Value>,
    ) -> Result<Vec<BTreeMap<String, Tensor>>> {
        let r = &self.resolved;
        let per = self.request.samples_per_prompt as u64;
        let items: Vec<BatchItem> = slots
            .iter()
            .map(|&k| BatchItem {
                prompt: prompts[(k / per) as usize].clone(),
                negative_prompt: self.request.negative_prompt.clone(),
                seed: self.item_seed(k),
            })
            .collect();
        let mut request = GenerateRequest::new("")
            .steps(r.steps)
            .guidance(r.guidance)
            .size(r.width, r.height)
            .capture(self.positions.clone())
            .decode(self.request.keep_images)
            .captures_only(!self.request.keep_images)
            .progress(false);
        request.scheduler = self.request.scheduler;
        let generations = self.pipe.generate_batch(&request, &items)?;
        let keep = Tensor::from_slice(&r.kept.iter().map(|&s| s as i64).collect::<Vec<_>>());
        let mut out = Vec::with_capacity(generations.len());
        for (&k, generation) in slots[real.clone()].iter().zip(generations.into_iter().skip(real.start)) {
            let reprs =
                generation.representations.as_ref().ok_or_else(|| Error::invalid("generation", "captured nothing"))?;
            let mut per_position = BTreeMap::new();
            for p in &self.positions {
                let all = reprs.image(p, 0)?;
                per_position.insert(p.clone(), all.f_index_select(0, &keep.f_to_device(all.device())?)?);
            }
            let timesteps: Vec<f64> = r.kept.iter().map(|&s| generation.timesteps[s]).collect();
            let mut row = serde_json::json!({
                "index": k,
                "prompt": generation.prompt,
                "prompt_index": k / per,
                "sample": k % per,
                "seed": generation.seed,
                "steps": r.kept,
                "timesteps": timesteps,
            });
            if self.request.keep_images {
                let file = image_file(writer.dir(), k);
                self.save_image(&generation.rgb8()?, &file)?;
                row["image_file"] =
                    serde_json::json!(format!("images/{}", file.file_name().unwrap_or_default().to_string_lossy()));
            }
            rows.push(row);
            out.push(per_position);
        }
        Ok(out)
    }

    fn save_image(&self, rgb: &Tensor, file: &Path) -> Result<()> {
        let rgb = crate::xattn::render::tensor_to_rgb(rgb)?;
        let rgb = match self.request.thumbnail {
            Some(side) => {
                let scale = (side as f64 / rgb.width().max(rgb.height()) as f64).min(1.0);
                let (w, h) =
                    ((rgb.width() as f64 * scale).round() as u32, (rgb.height() as f64 * scale).round() as u32);
                image::imageops::thumbnail(&rgb, w.max(1), h.max(1))
            }
            None => rgb,
        };
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        rgb.save(file).map_err(|e| Error::invalid(format!("image {}", file.display()), e.to_string()))
    }

    /// Extract one batch of images (`slots` and `real` as for generation); images of different sizes run in
    /// separate passes, each image keeping its slot. Per kept item, position → `[T, ..native]`.
    fn extract_items(
        &self,
        root: &Path,
        items: &[ImageItem],
        slots: &[u64],
        real: std::ops::Range<usize>,
        rows: &mut Vec<serde_json::Value>,
    ) -> Result<Vec<BTreeMap<String, Tensor>>> {
        let request = ExtractRequest::new(self.positions.clone())
            .timesteps(&self.request.timesteps)
            .prompt(&self.request.prompt)
            .progress(false);
        let cond = self.image_cond.as_ref().ok_or_else(|| Error::invalid("collector", "no image conditioning"))?;
        let mut prepared = Vec::new();
        for &k in &slots[real.clone()] {
            let item = &items[k as usize];
            let image = match self.request.image_size {
                Some(side) => load_square(&item.path, side)?,
                None => load_image(&item.path, 8)?,
            };
            let relative = item.path.strip_prefix(root).unwrap_or(&item.path).to_string_lossy().replace('\\', "/");
            rows.push(serde_json::json!({
                "index": k,
                "image": relative,
                "label": item.label,
                "seed": self.item_seed(k),
                "size": [image.size.0, image.size.1],
                "resized_from": image.resized_from,
                "timesteps": self.request.timesteps,
            }));
            prepared.push(image);
        }
        let mut out: Vec<Option<BTreeMap<String, Tensor>>> = (0..prepared.len()).map(|_| None).collect();
        let mut sizes: Vec<(i64, i64)> = prepared.iter().map(|p| p.size).collect();
        sizes.dedup();
        for size in sizes {
            // Every slot of the batch holds an image of this size: the item of that slot, or a filler.
            let filler = prepared.iter().position(|p| p.size == size).unwrap_or(0);
            let group: Vec<&crate::image_io::PreparedImage> = (0..slots.len())
                .map(|j| {
                    let own = j.checked_sub(real.start).filter(|&i| i < prepared.len() && prepared[i].size == size);
                    &prepared[own.unwrap_or(filler)]
                })
                .collect();
            let seeds: Vec<i64> = (0..slots.len()).map(|j| self.item_seed(slots[j])).collect();
            let captured =
                self.pipe.extract_batch(&request, &self.positions, cond, &group, &seeds, &mut Interventions::new())?;
            for (j, result) in captured.into_iter().enumerate().skip(real.start).take(prepared.len()) {
                if prepared[j - real.start].size == size {
                    out[j - real.start] = Some(result);
                }
            }
        }
        out.into_iter().map(|o| o.ok_or_else(|| Error::invalid("extraction", "an image was not extracted"))).collect()
    }

    fn write_position(&self, writer: &ShardWriter, path: &Path, position: &str, data: StoredPosition) -> Result<()> {
        let kept = self.resolved.kept.len();
        let native = data.native.clone().unwrap_or_default();
        let mut layout = vec!["item"];
        if kept > 1 && !data.items.is_empty() {
            layout.push("step");
        }
        layout.extend(reduced_layout(&native, self.request.reduce));
        if data.items.is_empty() {
            // A shard without items (more shards than items): `x` is `[0]`, its only axis the item axis.
            layout.truncate(1);
        }
        let x = if data.items.is_empty() {
            Tensor::f_zeros([0], (Kind::Float, tch::Device::Cpu))?
        } else {
            let x = Tensor::f_stack(&data.items, 0)?;
            let x = if kept > 1 { x } else { x.f_squeeze_dim(1)? };
            x.f_to_device(tch::Device::Cpu)?.f_to_kind(self.request.dtype.kind())?
        };
        let steps = Tensor::from_slice(&self.resolved.kept.iter().map(|&s| s as i64).collect::<Vec<_>>());
        let timesteps = Tensor::from_slice(&self.resolved.timesteps);
        let pos = if data.pos.is_empty() { None } else { Some(Tensor::f_stack(&data.pos, 0)?) };
        let mut tensors: Vec<(&str, &Tensor)> = vec![("x", &x)];
        if kept > 1 {
            tensors.push(("step", &steps));
            tensors.push(("timestep", &timesteps));
        }
        if let Some(pos) = &pos {
            tensors.push(("pos", pos));
        }
        let metadata = serde_json::json!({
            "position": position,
            "layout": layout,
            "native_layout": native,
            "steps": self.resolved.kept,
            "dtype": self.request.dtype,
        });
        writer.write_tensors(path, &tensors, &metadata)
    }
}

/// The batch of global block `block` (items `block..block + batch`): the item in each slot, and the slots that
/// belong to `range`. Slots outside `range` hold a copy of the first item in range; their results are dropped.
/// libtorch's CPU kernels give an image the same bits whatever its batch partners, but not whatever the batch size
/// or (with guidance) its place in the batch (measured: 1e-7–2e-6 relative): running item k always in slot
/// `k mod batch` of a batch of exactly `batch` makes a shard's bytes independent of where shard boundaries fall.
fn batch_slots(block: u64, batch: u64, range: &std::ops::Range<u64>) -> (Vec<u64>, std::ops::Range<usize>) {
    let first = block.max(range.start);
    let last = (block + batch).min(range.end);
    let slots = (block..block + batch).map(|k| if (first..last).contains(&k) { k } else { first }).collect();
    (slots, (first - block) as usize..(last - block) as usize)
}

/// One position's reduced captures of a shard, item by item.
#[derive(Default)]
struct StoredPosition {
    items: Vec<Tensor>,
    pos: Vec<Tensor>,
    native: Option<Vec<&'static str>>,
}

impl StoredPosition {
    fn push(&mut self, position: &str, item: u64, x: Tensor, reduce: Reduce, seed: i64) -> Result<()> {
        if self.native.is_none() {
            self.native = Some(native_layout(x.dim() - 1)?);
        }
        let (reduced, pos) = reduce_item(&x.f_to_device(tch::Device::Cpu)?, reduce, seed)?;
        if let Some(first) = self.items.first().filter(|f| f.size() != reduced.size()) {
            return Err(Error::Shape {
                context: format!("`{position}` of item {item}"),
                why: format!(
                    "its maps are {:?}, an earlier item's {:?}: images of different sizes need --image-size N (scale \
                     and centre-crop every image to N×N) or a reduction that removes the spatial axes \
                     (--reduce mean or sample:N)",
                    &reduced.size()[1..],
                    &first.size()[1..]
                ),
            });
        }
        self.items.push(reduced);
        self.pos.extend(pos);
        Ok(())
    }
}

/// The manifest's note on how to read a collection without sdscope.
pub const LAYOUT_NOTE: &str = "shard-IIIII-of-NNNNN/{position}.safetensors holds tensor x [items, (steps,) ..] \
(axis names in the file's __metadata__.sdscope JSON, key layout), plus step and timestep [steps] when several steps \
are kept and pos [items, N] (flat spatial indices) with --reduce sample:N; shard-IIIII-of-NNNNN/items.jsonl has one \
JSON object per item, in the order of x; item k of the whole work list uses seed = options.seed + k; shards hold \
contiguous item ranges (shards.items); folders named *.partial-* are unfinished and must be ignored.";
