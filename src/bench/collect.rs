//! `sdscope bench collect`: dataset-scale collection against the same collection written with diffusers and
//! forward hooks, on an SDXL-architecture pipeline with random weights (float32, on the CPU).
//!
//! The recipe is the SDXL-Turbo sparse-autoencoder data collection: one inference step, guidance 0, the captions
//! of [`PROMPTS`] with seeds `0..n`, the updates (output − input) of the four transformer blocks of [`POSITIONS`],
//! conditional half, float32, written to disk. [`run`] builds the pipeline once (`tests/bench/make_random_sdxl.py`),
//! then measures each (side, batch size) in a fresh process: sdscope through the hidden
//! [`COLLECT_WORKER_SUBCOMMAND`] of the current executable ([`worker`]: a [`Collector`] into a fresh folder, one
//! shard), diffusers through `tests/bench/diffusers_collect.py`. The two collections of each batch size must agree
//! (relative L2 within [`AGREEMENT`]); the best batch size of each side is compared with the other's.

use super::collect_report;
use super::report::gib;
use super::{absolute, check_python, log, peak_rss_bytes, run_captured, write_script};
use crate::collect::{CollectRequest, Collector, WorkSource};
use crate::collection::reader::Collection;
use crate::error::{Error, Result};
use crate::pipeline::{LoadOptions, Pipeline};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tch::{Kind, Tensor};

/// The subcommand under which the executable must dispatch to [`worker`] (with [`CollectWorkerArgs`]).
pub const COLLECT_WORKER_SUBCOMMAND: &str = "bench-collect-worker";

/// The positions the SAE work collects: the updates of these transformer blocks.
pub const POSITIONS: [&str; 4] = [
    "down_blocks[2].attentions[1]@update",
    "mid_block.attentions[0]@update",
    "up_blocks[0].attentions[0]@update",
    "up_blocks[0].attentions[1]@update",
];

/// Largest relative L2 difference between the two sides' collections (per position) that counts as agreement.
pub const AGREEMENT: f64 = 1e-4;
/// The goals: at least this many times diffusers' items/s, and peak memory no higher than diffusers'.
pub(super) const GOAL_SPEED: f64 = 1.3;

/// Varied captions (the prompts file written to the work folder; the first `items` are used).
pub const PROMPTS: [&str; 32] = [
    "a red fox sitting in fresh snow at dawn",
    "an astronaut riding a horse on the moon, digital art",
    "a bowl of ramen with a soft-boiled egg, overhead photo",
    "a lighthouse on a rocky cliff during a thunderstorm",
    "a watercolor painting of a quiet Venetian canal",
    "a close-up portrait of an old fisherman with a grey beard",
    "a cyberpunk street market at night in the rain",
    "a golden retriever puppy playing with a tennis ball",
    "a minimalist living room with a large window and plants",
    "a vintage red car parked in front of a diner",
    "a field of sunflowers under a bright blue sky",
    "an oil painting of a ship in a stormy sea",
    "a macro photo of a dragonfly on a leaf",
    "a snowy mountain village with warm lights in the windows",
    "a plate of pancakes with blueberries and maple syrup",
    "a medieval castle on a hill surrounded by fog",
    "a child flying a kite on a windy beach",
    "a futuristic city with flying cars at sunset",
    "a black cat sleeping on a stack of old books",
    "a pencil sketch of a ballerina mid-leap",
    "a tropical waterfall in a dense jungle",
    "a steaming cup of coffee on a wooden table by a window",
    "a herd of elephants crossing a dusty savanna",
    "a neon sign that says open in a dark alley",
    "a bowl of fresh fruit in the style of Cezanne",
    "an underwater scene with a coral reef and turtles",
    "a hot air balloon over a patchwork of green fields",
    "a robot reading a newspaper on a park bench",
    "a cozy cabin in an autumn forest with falling leaves",
    "a glass of red wine on a marble countertop",
    "a busy train station in the 1920s, black and white photo",
    "a dragon made of clouds above a mountain lake",
];

const MAKE_SCRIPT: (&str, &str) = ("make_random_sdxl.py", include_str!("../../tests/bench/make_random_sdxl.py"));
const DIFFUSERS_SCRIPT: (&str, &str) = ("diffusers_collect.py", include_str!("../../tests/bench/diffusers_collect.py"));

/// What `sdscope bench collect` measures and with what.
#[derive(Debug, Clone)]
pub struct CollectBenchOptions {
    /// Where the random SDXL pipeline (about 14 GB), the prompts, the scripts and the collections go.
    pub work_dir: PathBuf,
    /// The Python with torch and diffusers.
    pub python: PathBuf,
    /// The two CLIP tokenizer folders of the random pipeline (the sdxl test fixture's).
    pub tokenizers: [PathBuf; 2],
    /// Side of the square images, a multiple of 8.
    pub size: i64,
    /// Items (prompts) per run.
    pub items: usize,
    /// Batch sizes to measure, each side and batch size in a fresh process.
    pub batches: Vec<usize>,
    /// Measure sdscope only (the random pipeline is still built with Python when missing).
    pub skip_python: bool,
}

impl Default for CollectBenchOptions {
    /// Paths are relative to the crate's folder (where `.sdscope/` lives).
    fn default() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let fixture = root.join(".sdscope/fixtures/sdxl");
        Self {
            work_dir: root.join(".sdscope/bench"),
            python: root.join(".sdscope/venv/bin/python"),
            tokenizers: [fixture.join("tokenizer"), fixture.join("tokenizer_2")],
            size: 256,
            items: 4,
            batches: vec![1, 2, 4],
            skip_python: false,
        }
    }
}

/// Flags of the hidden `bench-collect-worker` subcommand: one sdscope collection run, JSON report on stdout.
#[derive(Debug, Clone, clap::Args)]
pub struct CollectWorkerArgs {
    /// Diffusers pipeline folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompts file, one per line.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Collection folder to create (must not exist or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Positions, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub positions: Vec<String>,
    /// Items: the first N prompts.
    #[arg(long, default_value_t = 8)]
    pub items: usize,
    /// Items per U-Net pass.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Side of the square images.
    #[arg(long, default_value_t = 256)]
    pub size: i64,
}

/// What one side reports for one batch size (the JSON both workers print).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectSideReport {
    /// `sdscope` or `diffusers`.
    pub side: String,
    pub batch: usize,
    pub items: usize,
    /// Seconds of Python imports before loading (diffusers only).
    #[serde(default)]
    pub import_s: Option<f64>,
    /// Seconds to load the pipeline.
    pub load_s: f64,
    /// sdscope only: seconds of `Collector::new` (checks, manifest, hashes of the weight files).
    #[serde(default)]
    pub setup_s: Option<f64>,
    /// Seconds from the first item to the last byte written (prompt encoding, U-Net pass, writing).
    pub collect_s: f64,
    /// `items / collect_s`.
    pub items_per_s: f64,
    /// `items / (load_s + setup_s + collect_s)`.
    pub items_per_s_with_load: f64,
    /// Peak resident memory of the process.
    pub peak_rss_bytes: Option<u64>,
    /// Bytes of every file written (sdscope: tensors, manifest and item rows; diffusers: the tensors).
    pub bytes_written: u64,
    pub bytes_per_item: f64,
    /// Intra-op threads of torch.
    pub threads: i64,
}

impl CollectSideReport {
    /// Bytes written per second of collection.
    pub fn bytes_per_s(&self) -> f64 {
        self.bytes_written as f64 / self.collect_s
    }
}

/// Both sides at one batch size; `agreement`: the worst relative L2 difference and its position.
pub(super) struct BatchRun {
    pub(super) batch: usize,
    pub(super) sdscope: CollectSideReport,
    pub(super) diffusers: Option<CollectSideReport>,
    pub(super) agreement: Option<(String, f64)>,
}

// ------------------------------------------------------------------------------------------------------------
// Worker: one sdscope collection run in its own process
// ------------------------------------------------------------------------------------------------------------

/// The sdscope side of one batch size: load the pipeline (timed), collect `items` prompts into `out` (one shard),
/// print a [`CollectSideReport`] as JSON on stdout.
pub fn worker(args: &CollectWorkerArgs) -> Result<()> {
    let prompts = read_prompts(&args.prompts, args.items)?;
    let model = args.model.to_str().ok_or_else(|| Error::invalid("--model", "the path is not valid UTF-8"))?;
    let start = Instant::now();
    let pipe = Pipeline::load_with(model, LoadOptions { progress: false, ..LoadOptions::default() })?;
    let load_s = start.elapsed().as_secs_f64();
    eprintln!("[sdscope] loaded in {load_s:.1} s, peak RSS {}", gib(peak_rss_bytes()));

    let start = Instant::now();
    let request = CollectRequest::new(args.positions.clone())
        .steps(1)
        .guidance(0.0)
        .size(args.size, args.size)
        .batch(args.batch)
        .progress(true);
    let source = WorkSource::prompts(args.prompts.display().to_string(), None, prompts);
    let collector = Collector::new(&pipe, source, request, &args.out, 1)?;
    let setup_s = start.elapsed().as_secs_f64();
    eprintln!("[sdscope] collector set up (manifest, weight file hashes) in {setup_s:.1} s");
    let start = Instant::now();
    collector.run(None)?;
    let collect_s = start.elapsed().as_secs_f64();
    let bytes_written = dir_size(&args.out)?;
    let items = args.items;
    let report = CollectSideReport {
        side: "sdscope".into(),
        batch: args.batch,
        items,
        import_s: None,
        load_s,
        setup_s: Some(setup_s),
        collect_s,
        items_per_s: items as f64 / collect_s,
        items_per_s_with_load: items as f64 / (load_s + setup_s + collect_s),
        peak_rss_bytes: peak_rss_bytes(),
        bytes_written,
        bytes_per_item: bytes_written as f64 / items as f64,
        threads: tch::get_num_threads() as i64,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The first `n` non-empty lines of a prompts file.
fn read_prompts(path: &Path, n: usize) -> Result<Vec<String>> {
    if n == 0 {
        return Err(Error::invalid("--items 0", "give at least one item"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let prompts: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty()).take(n).map(str::to_string).collect();
    if prompts.len() < n {
        return Err(Error::invalid(
            format!("--items {n}"),
            format!("{} has {} prompts", path.display(), prompts.len()),
        ));
    }
    Ok(prompts)
}

/// Total size of the files under `dir`.
fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let meta = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

// ------------------------------------------------------------------------------------------------------------
// Orchestration
// ------------------------------------------------------------------------------------------------------------

/// Run the whole benchmark and print its table on stdout (progress on stderr). Takes many minutes.
pub fn run(opts: &CollectBenchOptions) -> Result<()> {
    if opts.size <= 0 || opts.size % 8 != 0 {
        return Err(Error::invalid(format!("--size {}", opts.size), "must be a positive multiple of 8"));
    }
    if opts.items == 0 || opts.items > PROMPTS.len() {
        return Err(Error::invalid(format!("--items {}", opts.items), format!("must be in 1..={}", PROMPTS.len())));
    }
    if opts.batches.is_empty() || opts.batches.contains(&0) {
        return Err(Error::invalid("--batches", "give batch sizes of at least 1, e.g. 1,2,4"));
    }
    let work_dir = absolute(&opts.work_dir)?;
    let scripts = work_dir.join("scripts");
    std::fs::create_dir_all(&work_dir).map_err(|e| Error::io(&work_dir, e))?;
    let model = build_model(opts, &work_dir, &scripts)?;
    let prompts = work_dir.join("collect_prompts.txt");
    let text = PROMPTS.join("\n") + "\n";
    if std::fs::read_to_string(&prompts).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&prompts, text).map_err(|e| Error::io(&prompts, e))?;
    }
    let diffusers_script = if opts.skip_python {
        None
    } else {
        check_python(&opts.python)?;
        Some(write_script(&scripts, DIFFUSERS_SCRIPT)?)
    };
    let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
    let threads = tch::get_num_threads();
    let runs_dir = work_dir.join("collect-runs");
    let mut runs = Vec::new();
    for &batch in &opts.batches {
        log(format!("batch {batch}: sdscope, {} items in a fresh process", opts.items));
        let out = fresh_dir(&runs_dir.join(format!("sdscope-b{batch}")))?;
        let mut cmd = Command::new(&exe);
        cmd.arg(COLLECT_WORKER_SUBCOMMAND).arg("--model").arg(&model).arg("--prompts").arg(&prompts);
        cmd.arg("--out").arg(&out).arg("--positions").arg(POSITIONS.join(","));
        cmd.arg("--items").arg(opts.items.to_string()).arg("--batch").arg(batch.to_string());
        cmd.arg("--size").arg(opts.size.to_string());
        let what = format!("sdscope collection worker (batch {batch})");
        let sdscope: CollectSideReport = parse_json(&run_captured(cmd, &what)?, &what)?;
        log(format!("batch {batch}: sdscope {:.3} items/s", sdscope.items_per_s));
        let (mut diffusers, mut agreement) = (None, None);
        if let Some(script) = &diffusers_script {
            log(format!("batch {batch}: diffusers, {} items in a fresh process", opts.items));
            let theirs = fresh_dir(&runs_dir.join(format!("diffusers-b{batch}")))?;
            let mut cmd = Command::new(&opts.python);
            cmd.arg(script).arg(&model).arg(&prompts).arg(&theirs).arg("--positions").arg(POSITIONS.join(","));
            cmd.arg("--items").arg(opts.items.to_string()).arg("--batch").arg(batch.to_string());
            cmd.arg("--size").arg(opts.size.to_string()).arg("--threads").arg(threads.to_string());
            let what = format!("diffusers collection worker (batch {batch})");
            let report: CollectSideReport = parse_json(&run_captured(cmd, &what)?, &what)?;
            log(format!("batch {batch}: diffusers {:.3} items/s", report.items_per_s));
            let worst = compare(&out, &theirs, opts.items)?;
            log(format!("batch {batch}: collections agree within {:.1e} (worst at `{}`)", worst.1, worst.0));
            if worst.1.is_nan() || worst.1 > AGREEMENT {
                return Err(Error::invalid(
                    format!("bench collect, batch {batch}"),
                    format!(
                        "the sdscope and diffusers collections differ at `{}` by {:.3e} (relative L2, more than \
                         {AGREEMENT:.0e}): {} vs {}",
                        worst.0,
                        worst.1,
                        out.display(),
                        theirs.display()
                    ),
                ));
            }
            (diffusers, agreement) = (Some(report), Some(worst));
        }
        runs.push(BatchRun { batch, sdscope, diffusers, agreement });
    }
    print!("{}", collect_report::render(opts, &model, threads as i64, &runs));
    Ok(())
}

/// Build the random SDXL pipeline unless it is there (the script itself checks that it is up to date; without
/// Python, a complete one will do).
fn build_model(opts: &CollectBenchOptions, work_dir: &Path, scripts: &Path) -> Result<PathBuf> {
    let model = work_dir.join("sdxl-random");
    let complete = model.join(".complete").is_file();
    if complete && opts.skip_python {
        return Ok(model);
    }
    if !complete {
        log(format!("building the random-weight SDXL pipeline in {} (minutes, about 14 GB)", model.display()));
    }
    check_python(&opts.python)?;
    for tokenizer in &opts.tokenizers {
        if !tokenizer.join("vocab.json").is_file() {
            let hint = "the CLIP tokenizer folders of the random pipeline, by default the sdxl test fixture's \
                (`bash .ci/setup fixtures` writes them)";
            return Err(Error::MissingFile { path: tokenizer.join("vocab.json"), hint: Some(hint.into()) });
        }
    }
    let mut cmd = Command::new(&opts.python);
    cmd.arg(write_script(scripts, MAKE_SCRIPT)?).arg(&model);
    for tokenizer in &opts.tokenizers {
        cmd.arg(absolute(tokenizer)?);
    }
    run_captured(cmd, "building the random SDXL pipeline")?;
    Ok(model)
}

/// Remove `dir` (a collection of an earlier run) and create it empty.
fn fresh_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    Ok(dir.to_path_buf())
}

fn parse_json<T: serde::de::DeserializeOwned>(stdout: &[u8], what: &str) -> Result<T> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| Error::invalid(what, "printed no JSON report"))?;
    Ok(serde_json::from_str(line)?)
}

/// The worst per-position relative L2 difference, `‖ours − theirs‖ / ‖theirs‖`, between sdscope's collection in
/// `ours` and diffusers' batch files in `theirs`.
///
/// # Shapes
/// sdscope's `x` per position: `[items, C, H, W]` (one kept step); each diffusers file holds `[batch, C, H, W]`
/// per position, the files concatenated in name order along the first axis.
fn compare(ours: &Path, theirs: &Path, items: usize) -> Result<(String, f64)> {
    let collection = Collection::open(ours)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(theirs)
        .map_err(|e| Error::io(theirs, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    let loaded = files.iter().map(|f| crate::tensor_io::load(f).map(|(t, _)| t)).collect::<Result<Vec<_>>>()?;
    let mut worst = (String::new(), 0.0);
    for position in POSITIONS {
        let a = collection.merged(position)?.x.f_to_kind(Kind::Double)?;
        let parts = loaded
            .iter()
            .map(|m| {
                m.get(position).ok_or_else(|| {
                    Error::invalid(format!("diffusers' files in {}", theirs.display()), format!("hold no `{position}`"))
                })
            })
            .collect::<Result<Vec<&Tensor>>>()?;
        let b = Tensor::f_cat(&parts, 0)?.f_to_kind(Kind::Double)?;
        if a.size() != b.size() || a.size().first() != Some(&(items as i64)) {
            return Err(Error::Shape {
                context: format!("bench collect, `{position}`"),
                why: format!("sdscope stored {:?}, diffusers {:?} ({items} items expected)", a.size(), b.size()),
            });
        }
        let diff = a.f_sub(&b)?.f_norm()?.f_double_value(&[])?;
        let rel = diff / b.f_norm()?.f_double_value(&[])?.max(f64::MIN_POSITIVE);
        if rel.is_nan() || rel >= worst.1 {
            worst = (position.to_string(), rel);
        }
    }
    Ok(worst)
}
