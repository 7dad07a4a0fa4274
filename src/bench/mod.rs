//! `sdscope bench`: extraction speed, load time and peak memory against diffusers, on an SD1.5-architecture
//! pipeline with random weights, at 512×512 on the CPU.
//!
//! [`run`] builds the pipeline once (with `tests/bench/make_random_sd15.py`), writes a test image, and then
//! measures three cases (`mid_block`, `up_blocks[1]`, and every top-level position), each side of each case in a
//! fresh process so that peak memory is that of one extraction job: sdscope through a hidden worker subcommand
//! of the current executable ([`WORKER_SUBCOMMAND`], handled by [`worker`]), diffusers through
//! `tests/bench/diffusers_extract.py`. Both scripts are compiled into the binary and written to the work folder.

pub mod collect;
mod collect_report;
pub mod embed;
pub mod memory;
mod report;
pub mod sae;
pub mod sd3;

use report::gib;

use crate::error::{Error, Result};
use crate::extract::ExtractRequest;
use crate::hub::component_weights;
use crate::image_io::{load_image, PreparedImage};
use crate::pipeline::{LoadOptions, Pipeline};
use crate::weights::Weights;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tch::Kind;

/// The subcommand under which the executable must dispatch to [`worker`] (with [`WorkerArgs`] as its flags).
pub const WORKER_SUBCOMMAND: &str = "bench-worker";

/// The worker's `--positions` value that stands for every top-level position (those without a dot).
pub const TOP_LEVEL: &str = "top-level";

/// The worker's `--positions` value that stands for every joint block of an SD3 transformer
/// (`transformer_blocks[i]`, the image stream).
pub const ALL_BLOCKS: &str = "all-blocks";

const MAKE_SCRIPT: (&str, &str) = ("make_random_sd15.py", include_str!("../../tests/bench/make_random_sd15.py"));
const DIFFUSERS_SCRIPT: (&str, &str) = ("diffusers_extract.py", include_str!("../../tests/bench/diffusers_extract.py"));

/// The goals: the full pass at most 0.9× diffusers' time, `mid_block` at most 0.6×,
/// peak memory at most 1.2× the weights' size.
pub(super) const GOAL_FULL: f64 = 0.9;
pub(super) const GOAL_MID: f64 = 0.6;
pub(super) const GOAL_MEMORY: f64 = 1.2;

/// What `sdscope bench` measures and with what.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Where the random pipeline, the test image and the scripts go (`.sdscope/bench` by default).
    pub work_dir: PathBuf,
    /// The Python with torch and diffusers (`.sdscope/venv/bin/python` by default).
    pub python: PathBuf,
    /// A CLIP tokenizer folder (vocab.json, merges.txt) for the random pipeline (the sd1 test fixture's).
    pub tokenizer: PathBuf,
    /// Benchmark this diffusers folder instead of building the random SD1.5 pipeline.
    pub model: Option<PathBuf>,
    /// Extractions per case and side; the best is compared.
    pub repeats: usize,
    /// Side of the square test image, a multiple of 8.
    pub size: i64,
    /// Measure sdscope only (the random pipeline is still built with Python when missing).
    pub skip_python: bool,
    /// Timestep of the extractions (50).
    pub timestep: i64,
    /// Seed of the extractions (42).
    pub seed: i64,
}

impl Default for BenchOptions {
    /// Paths are relative to the crate's folder (where `.sdscope/` lives).
    fn default() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        Self {
            work_dir: root.join(".sdscope/bench"),
            python: root.join(".sdscope/venv/bin/python"),
            tokenizer: root.join(".sdscope/fixtures/sd1/tokenizer"),
            model: None,
            repeats: 3,
            size: 512,
            skip_python: false,
            timestep: 50,
            seed: 42,
        }
    }
}

/// Flags of the hidden `bench-worker` subcommand, which measures the sdscope side of one case and prints JSON.
/// `--model DIR --image PNG --positions P1,P2,… [--repeats N] [--timestep T] [--seed S]`
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Diffusers pipeline folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Image to extract from.
    #[arg(long)]
    pub image: PathBuf,
    /// Positions, comma-separated; `top-level` stands for every position without a dot.
    #[arg(long, value_delimiter = ',', required = true)]
    pub positions: Vec<String>,
    /// Timed extractions of the image as new (then as many again with its VAE posterior cached).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Timestep of the noise added before the U-Net pass.
    #[arg(long, default_value_t = 50)]
    pub timestep: i64,
    /// Seed of the VAE sample and the noise.
    #[arg(long, default_value_t = 42)]
    pub seed: i64,
    /// Evict the model's files from the page cache before loading (a cold start).
    #[arg(long)]
    pub cold: bool,
}

/// What one side reports for one case (the JSON both workers print).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SideReport {
    /// `sdscope` or `diffusers`.
    pub side: String,
    /// The positions captured, resolved.
    pub positions: Vec<String>,
    /// Seconds to load the pipeline (after imports, for Python).
    pub load_s: f64,
    /// Seconds of Python imports before loading (diffusers only).
    #[serde(default)]
    pub import_s: Option<f64>,
    /// Seconds for each extraction: prompt encoding, VAE encoding, noise and the U-Net pass.
    pub times_s: Vec<f64>,
    /// sdscope only: seconds for each extraction of the same image again, its VAE posterior cached.
    #[serde(default)]
    pub cached_times_s: Vec<f64>,
    /// Peak resident memory of the process once the pipeline is loaded.
    pub peak_rss_after_load_bytes: Option<u64>,
    /// Peak resident memory of the process at the end (after every extraction).
    pub peak_rss_bytes: Option<u64>,
    /// Bytes of the weights the side holds in memory.
    pub weights_held_bytes: Option<u64>,
    /// Intra-op threads of torch.
    pub threads: i64,
    /// Shape of what was captured at each position.
    pub shapes: BTreeMap<String, Vec<i64>>,
    /// L2 norm of what was captured at each position (from the last extraction), to compare the sides.
    pub norms: BTreeMap<String, f64>,
    /// sdscope only: whether the model's files were evicted from the page cache before loading.
    #[serde(default)]
    pub cold: bool,
    /// sdscope only: seconds for a second `Pipeline::load` of the same model in the same process.
    #[serde(default)]
    pub second_load_s: Option<f64>,
    /// sdscope only: private and file-backed resident memory once loaded, and at the end.
    #[serde(default)]
    pub memory_after_load: Option<memory::ProcMemory>,
    #[serde(default)]
    pub memory_end: Option<memory::ProcMemory>,
}

impl SideReport {
    /// The fastest extraction.
    pub fn best_s(&self) -> f64 {
        best(&self.times_s)
    }

    /// The median extraction time.
    pub fn median_s(&self) -> f64 {
        median(&self.times_s)
    }
}

pub(super) fn best(times: &[f64]) -> f64 {
    times.iter().copied().fold(f64::NAN, f64::min)
}

pub(super) fn median(times: &[f64]) -> f64 {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    match t.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => t[n / 2],
        n => (t[n / 2 - 1] + t[n / 2]) / 2.0,
    }
}

/// The peak resident set size of this process (`VmHWM`), on Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

fn failed(what: impl Into<String>, why: impl Into<String>) -> Error {
    Error::invalid(what, why)
}

// ------------------------------------------------------------------------------------------------------------
// Worker: one side, one case, in its own process
// ------------------------------------------------------------------------------------------------------------

/// The sdscope side of one case: load the pipeline (timed), extract `repeats` times, print a [`SideReport`] as
/// JSON on stdout. Meant to run in a fresh process (peak memory is the process').
pub fn worker(args: &WorkerArgs) -> Result<()> {
    let report = measure(args)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn measure(args: &WorkerArgs) -> Result<SideReport> {
    if args.repeats == 0 {
        return Err(Error::invalid("--repeats", "must be at least 1"));
    }
    let model = args.model.to_str().ok_or_else(|| Error::invalid("--model", "the path is not valid UTF-8"))?;
    if args.cold {
        let files = model_files(&args.model)?;
        let evicted = memory::evict_from_page_cache(&files.iter().map(|p| p.as_path()).collect::<Vec<_>>());
        eprintln!("[sdscope] evicted {evicted} of {} weight files from the page cache", files.len());
    }
    let options = || LoadOptions { progress: false, ..LoadOptions::default() };
    let start = Instant::now();
    let pipe = Pipeline::load_with(model, options())?;
    let load_s = start.elapsed().as_secs_f64();
    let peak_rss_after_load_bytes = peak_rss_bytes();
    let memory_after_load = memory::ProcMemory::now();
    eprintln!("[sdscope] loaded in {load_s:.1} s, peak RSS {}", gib(peak_rss_after_load_bytes));

    let mut wanted = Vec::new();
    for p in &args.positions {
        if p == TOP_LEVEL {
            wanted.extend(pipe.positions().iter().filter(|p| !p.contains('.')).cloned());
        } else if p == ALL_BLOCKS {
            let block = |p: &&String| p.starts_with("transformer_blocks[") && p.ends_with(']') && !p.contains('.');
            wanted.extend(pipe.positions().iter().filter(block).cloned());
        } else {
            wanted.push(p.clone());
        }
    }
    let positions = pipe.resolve_positions(&wanted)?;
    let image = load_image(&args.image, pipe.pixel_multiple() as u32)?;
    let request = ExtractRequest::new(positions.clone()).timestep(args.timestep).seed(args.seed).progress(false);
    let (mut shapes, mut norms) = (BTreeMap::new(), BTreeMap::new());
    let mut extract = |fresh: bool, i: usize| -> Result<f64> {
        let prepared =
            PreparedImage { pixels: image.pixels.shallow_clone(), size: image.size, resized_from: image.resized_from };
        if fresh {
            pipe.posterior_cache.clear();
        }
        let start = Instant::now();
        let reprs = pipe.extract_prepared(&request, vec![(args.image.display().to_string(), prepared)])?;
        let seconds = start.elapsed().as_secs_f64();
        let what = if fresh { "extraction" } else { "extraction, posterior cached" };
        eprintln!("[sdscope] {what} {}/{}: {seconds:.2} s", i + 1, args.repeats);
        for p in &positions {
            let t = reprs.image(p, 0)?;
            shapes.insert(p.clone(), t.size());
            norms.insert(p.clone(), t.f_to_kind(Kind::Double)?.f_norm()?.f_double_value(&[])?);
        }
        Ok(seconds)
    };
    // As diffusers does every time: encode the image with the VAE (sdscope would skip that for an image it has
    // seen, which the second set measures).
    let times_s = (0..args.repeats).map(|i| extract(true, i)).collect::<Result<Vec<_>>>()?;
    let cached_times_s = (0..args.repeats).map(|i| extract(false, i)).collect::<Result<Vec<_>>>()?;
    let peak = peak_rss_bytes();
    let memory_end = memory::ProcMemory::now();
    let start = Instant::now();
    drop(Pipeline::load_with(model, options())?);
    let second_load_s = Some(start.elapsed().as_secs_f64());
    Ok(SideReport {
        side: "sdscope".into(),
        positions,
        load_s,
        import_s: None,
        times_s,
        cached_times_s,
        peak_rss_after_load_bytes,
        peak_rss_bytes: peak,
        weights_held_bytes: Some(weight_sizes(&args.model)?.held),
        threads: tch::get_num_threads() as i64,
        shapes,
        norms,
        cold: args.cold,
        second_load_s,
        memory_after_load,
        memory_end,
    })
}

/// The components whose weights a bench side holds (the VAE only in part).
const DENOISER_AND_ENCODERS: [&str; 6] =
    ["unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"];

/// Every weight file of a pipeline's components.
fn model_files(model: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for component in DENOISER_AND_ENCODERS {
        let dir = model.join(component);
        if dir.is_dir() {
            files.extend(component_weights(&dir)?);
        }
    }
    Ok(files)
}

// ------------------------------------------------------------------------------------------------------------
// Weights' size
// ------------------------------------------------------------------------------------------------------------

/// Sizes of a pipeline's weights, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct WeightSizes {
    /// The safetensors files of the denoiser, `vae/` and the text encoders (the goal is stated against this).
    pub files: u64,
    /// The denoiser: `unet/` or SD3's `transformer/`.
    pub unet: u64,
    pub vae: u64,
    pub text_encoder: u64,
    /// What sdscope holds in float32: U-Net, text encoder(s), and the VAE's encoder half.
    pub held: u64,
}

/// Measure the weights of a diffusers folder (reads only the safetensors headers).
pub fn weight_sizes(model: &Path) -> Result<WeightSizes> {
    let mut sizes = WeightSizes { files: 0, unet: 0, vae: 0, text_encoder: 0, held: 0 };
    for component in DENOISER_AND_ENCODERS {
        let dir = model.join(component);
        if !dir.is_dir() {
            continue;
        }
        let files = component_weights(&dir)?;
        let on_disk = files
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).map_err(|e| Error::io(f, e)))
            .sum::<Result<u64>>()?;
        let weights = Weights::open(&files, Kind::Float, tch::Device::Cpu)?;
        let held: i64 = weights
            .names()
            .iter()
            .filter(|n| component != "vae" || n.starts_with("encoder.") || n.starts_with("quant_conv."))
            .map(|n| weights.shape_of(n).map_or(0, |s| s.iter().product::<i64>()) * 4)
            .sum();
        sizes.files += on_disk;
        sizes.held += held as u64;
        match component {
            "unet" | "transformer" => sizes.unet = on_disk,
            "vae" => sizes.vae = on_disk,
            _ => sizes.text_encoder += on_disk,
        }
    }
    Ok(sizes)
}

// ------------------------------------------------------------------------------------------------------------
// Orchestration
// ------------------------------------------------------------------------------------------------------------

/// A smooth test picture: colour gradients, a soft disc and a hard-edged bar (as the test fixtures draw).
pub fn test_picture(size: u32) -> image::RgbImage {
    let s = (size.max(2) - 1) as f64;
    image::RgbImage::from_fn(size, size, |x, y| {
        let (xf, yf) = (x as f64, y as f64);
        let (u, v) = (xf / s, yf / s);
        let mut rgb = [
            0.5 + 0.5 * (2.0 * std::f64::consts::PI * u).sin(),
            v,
            0.5 + 0.4 * (std::f64::consts::PI * u * v * 3.0).cos(),
        ];
        let (cx, cy, rad) = (0.35 * size as f64, 0.55 * size as f64, 0.22 * size as f64);
        let d = ((xf - cx).powi(2) + (yf - cy).powi(2)).sqrt();
        let disc = ((rad - d) / 3.0 + 0.5).clamp(0.0, 1.0);
        for (c, target) in rgb.iter_mut().zip([0.95, 0.85, 0.1]) {
            *c = *c * (1.0 - disc) + target * disc;
        }
        let n = size as f64;
        if xf > 0.62 * n && xf < 0.8 * n && yf > 0.15 * n && yf < 0.85 * n {
            rgb = [0.1, 0.2, 0.7];
        }
        image::Rgb(rgb.map(|c| (c * 255.0).round().clamp(0.0, 255.0) as u8))
    })
}

/// Write a script compiled into the binary to `dir` (when it differs) and return its path.
fn write_script(dir: &Path, (name, text): (&str, &str)) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(name);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(path)
}

/// Run a command with stderr passed through; return its stdout.
fn run_captured(mut command: Command, what: &str) -> Result<Vec<u8>> {
    let program = PathBuf::from(command.get_program());
    let output = command.stdin(Stdio::null()).stderr(Stdio::inherit()).output().map_err(|e| Error::io(&program, e))?;
    if !output.status.success() {
        return Err(failed(what, format!("`{}` failed ({})", program.display(), output.status)));
    }
    Ok(output.stdout)
}

fn check_python(python: &Path) -> Result<()> {
    // A bare name (`python3`) is looked up in PATH when run.
    if python.components().count() > 1 && !python.exists() {
        let hint = "the Python with torch and diffusers: create it with `bash .ci/setup venv`, or pass another";
        return Err(Error::MissingFile { path: python.to_path_buf(), hint: Some(hint.into()) });
    }
    Ok(())
}

fn parse_report(stdout: &[u8], what: &str) -> Result<SideReport> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| failed(what, "printed no JSON report"))?;
    Ok(serde_json::from_str(line)?)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io(path, e))
}

/// One measured case.
pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) sdscope: SideReport,
    pub(super) diffusers: Option<SideReport>,
}

/// Run the whole benchmark and print its table on stdout (progress on stderr). Takes minutes.
pub fn run(opts: &BenchOptions) -> Result<()> {
    if opts.repeats == 0 {
        return Err(Error::invalid("repeats", "must be at least 1"));
    }
    if opts.size <= 0 || opts.size % 8 != 0 {
        return Err(Error::invalid("size", format!("{} is not a positive multiple of 8", opts.size)));
    }
    let work_dir = absolute(&opts.work_dir)?;
    let scripts = work_dir.join("scripts");
    std::fs::create_dir_all(&work_dir).map_err(|e| Error::io(&work_dir, e))?;

    let model = match &opts.model {
        Some(m) => absolute(m)?,
        None => {
            let model = work_dir.join("sd15-random");
            let complete = model.join(".complete").is_file();
            // The script itself checks that the pipeline is up to date; without Python, a complete one will do.
            if !(complete && opts.skip_python) {
                if !complete {
                    log(format!("building the random-weight SD1.5 pipeline in {} (a minute or two)", model.display()));
                }
                check_python(&opts.python)?;
                if !opts.tokenizer.join("vocab.json").is_file() {
                    let hint = "a CLIP tokenizer folder for the random pipeline, by default the sd1 test fixture's \
                        (`bash .ci/setup fixtures` writes it)";
                    return Err(Error::MissingFile {
                        path: opts.tokenizer.join("vocab.json"),
                        hint: Some(hint.into()),
                    });
                }
                let mut cmd = Command::new(&opts.python);
                cmd.arg(write_script(&scripts, MAKE_SCRIPT)?).arg(&model).arg(absolute(&opts.tokenizer)?);
                run_captured(cmd, "building the random SD1.5 pipeline")?;
            }
            model
        }
    };
    let image = work_dir.join(format!("picture_{}.png", opts.size));
    if !image.is_file() {
        test_picture(opts.size as u32)
            .save(&image)
            .map_err(|e| failed(format!("writing {}", image.display()), e.to_string()))?;
    }
    let sizes = weight_sizes(&model)?;
    log(format!(
        "model {}: {} of weights in files, {} held by sdscope",
        model.display(),
        gib(Some(sizes.files)),
        gib(Some(sizes.held))
    ));

    let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
    let diffusers_script = if opts.skip_python {
        None
    } else {
        check_python(&opts.python)?;
        Some(write_script(&scripts, DIFFUSERS_SCRIPT)?)
    };
    let mut cases = Vec::new();
    let sides = Sides {
        exe: &exe,
        model: &model,
        image: &image,
        repeats: opts.repeats,
        timestep: opts.timestep,
        seed: opts.seed,
        python: &opts.python,
        script: diffusers_script.as_deref(),
    };
    for (name, positions) in
        [("mid_block", "mid_block"), ("up_blocks[1]", "up_blocks[1]"), ("all top-level", TOP_LEVEL)]
    {
        let (sdscope, diffusers) = sides.run(name, positions)?;
        cases.push(Case { name, sdscope, diffusers });
    }
    log("mid_block: sdscope from a cold page cache (the model's files evicted), one extraction");
    let mut cmd = Command::new(&exe);
    cmd.arg(WORKER_SUBCOMMAND).arg("--model").arg(&model).arg("--image").arg(&image);
    cmd.args(["--positions", "mid_block", "--repeats", "1", "--cold"]);
    cmd.arg("--timestep").arg(opts.timestep.to_string()).arg("--seed").arg(opts.seed.to_string());
    let cold = parse_report(&run_captured(cmd, "sdscope worker (cold)")?, "sdscope worker (cold)")?;
    print!("{}", report::render(opts, &model, &sizes, &cases));
    print!("{}", report::render_loading(&sizes, &cases, &cold));
    Ok(())
}

/// What both sides of every case share: the executables, the model, the image and the extraction settings.
pub(super) struct Sides<'a> {
    pub(super) exe: &'a Path,
    pub(super) model: &'a Path,
    pub(super) image: &'a Path,
    pub(super) repeats: usize,
    pub(super) timestep: i64,
    pub(super) seed: i64,
    pub(super) python: &'a Path,
    /// The diffusers side's script (`None`: sdscope only).
    pub(super) script: Option<&'a Path>,
}

impl Sides<'_> {
    /// One case: sdscope's worker, then the diffusers script on the positions sdscope resolved, each in a fresh
    /// process; both must capture the same shapes.
    pub(super) fn run(&self, name: &str, positions: &str) -> Result<(SideReport, Option<SideReport>)> {
        let common = |cmd: &mut Command| {
            cmd.arg("--repeats").arg(self.repeats.to_string());
            cmd.arg("--timestep").arg(self.timestep.to_string()).arg("--seed").arg(self.seed.to_string());
        };
        log(format!("{name}: sdscope, {} extractions in a fresh process", self.repeats));
        let mut cmd = Command::new(self.exe);
        cmd.arg(WORKER_SUBCOMMAND).arg("--model").arg(self.model).arg("--image").arg(self.image);
        cmd.arg("--positions").arg(positions);
        common(&mut cmd);
        let what = format!("sdscope worker ({name})");
        let sdscope = parse_report(&run_captured(cmd, &what)?, &what)?;
        let Some(script) = self.script else { return Ok((sdscope, None)) };
        log(format!("{name}: diffusers, {} extractions in a fresh process", self.repeats));
        let mut cmd = Command::new(self.python);
        cmd.arg(script).arg(self.model).arg(self.image).arg("--positions").arg(sdscope.positions.join(","));
        common(&mut cmd);
        let what = format!("diffusers worker ({name})");
        let diffusers = parse_report(&run_captured(cmd, &what)?, &what)?;
        check_agreement(name, &sdscope, &diffusers)?;
        Ok((sdscope, Some(diffusers)))
    }
}

/// Both sides must have captured the same shapes; the norms say whether they computed the same thing.
fn check_agreement(name: &str, ours: &SideReport, theirs: &SideReport) -> Result<()> {
    if ours.shapes != theirs.shapes {
        return Err(failed(
            format!("bench case {name}"),
            format!("captured shapes differ: sdscope {:?}, diffusers {:?}", ours.shapes, theirs.shapes),
        ));
    }
    let worst = worst_norm_difference(ours, theirs);
    if worst.1 > 1e-3 {
        log(format!("warning: {name}: at `{}` the output norms differ by {:.1e} (relative)", worst.0, worst.1));
    }
    Ok(())
}

pub(super) fn worst_norm_difference(ours: &SideReport, theirs: &SideReport) -> (String, f64) {
    let mut worst = (String::new(), 0.0);
    for (p, &a) in &ours.norms {
        let b = theirs.norms.get(p).copied().unwrap_or(f64::NAN);
        let rel = (a - b).abs() / b.abs().max(f64::MIN_POSITIVE);
        if rel > worst.1 || rel.is_nan() {
            worst = (p.clone(), rel);
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picture_is_smooth_and_sized() {
        let img = test_picture(64);
        assert_eq!(img.dimensions(), (64, 64));
        // the bar is solid blue
        assert_eq!(img.get_pixel(45, 32).0, [26, 51, 179]);
    }

    #[test]
    fn report_statistics() {
        let r = SideReport {
            side: "x".into(),
            positions: vec![],
            load_s: 0.0,
            import_s: None,
            times_s: vec![3.0, 1.0, 2.0, 5.0],
            cached_times_s: vec![],
            peak_rss_after_load_bytes: None,
            peak_rss_bytes: None,
            weights_held_bytes: None,
            threads: 1,
            shapes: BTreeMap::new(),
            norms: BTreeMap::new(),
            cold: false,
            second_load_s: None,
            memory_after_load: None,
            memory_end: None,
        };
        assert_eq!(r.best_s(), 1.0);
        assert_eq!(r.median_s(), 2.5);
        assert!(peak_rss_bytes().is_some_and(|b| b > 0));
    }
}
