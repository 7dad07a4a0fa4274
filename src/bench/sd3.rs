//! `sdscope bench sd3`: SD3 extraction against diffusers on an SD3-Medium-architecture pipeline with random
//! weights (24 joint blocks, 1536 wide; no T5 on either side), at 512² on the CPU, in the same run: one
//! extraction of `transformer_blocks[12]` (sdscope stops after it; diffusers has no early exit) and one of every
//! joint block. Each side of each case runs in a fresh process (the `bench-worker` subcommand for sdscope,
//! `tests/bench/diffusers_sd3_extract.py` for diffusers), so peak memory is that of one extraction job.

use super::report::gib;
use super::{
    absolute, check_python, log, run_captured, test_picture, weight_sizes, write_script, SideReport, Sides, ALL_BLOCKS,
};
use crate::error::{Error, Result};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const MAKE_SCRIPT: (&str, &str) = ("make_random_sd3.py", include_str!("../../tests/bench/make_random_sd3.py"));
const DIFFUSERS_SCRIPT: (&str, &str) =
    ("diffusers_sd3_extract.py", include_str!("../../tests/bench/diffusers_sd3_extract.py"));

/// The goals: the early-exit case at most 0.8× diffusers' time, the full pass at most 1.0×, peak memory at most
/// 1.2× the loaded weights.
const GOAL_EARLY: f64 = 0.8;
const GOAL_FULL: f64 = 1.0;
const GOAL_MEMORY: f64 = 1.2;

/// What `sdscope bench sd3` measures and with what.
#[derive(Debug, Clone)]
pub struct Sd3BenchOptions {
    /// Where the random pipeline (about 12 GB), the test image and the scripts go (`.sdscope/bench`).
    pub work_dir: PathBuf,
    /// The Python with torch and diffusers (`.sdscope/venv/bin/python`).
    pub python: PathBuf,
    /// A folder with CLIP `tokenizer/` and `tokenizer_2/` (the SD3 test fixture's).
    pub tokenizers: PathBuf,
    /// Joint blocks of the random transformer (24, SD3 Medium's; fewer for a quick check).
    pub layers: usize,
    /// Extractions per case and side; the best is compared.
    pub repeats: usize,
    /// Side of the square test image, a multiple of 16.
    pub size: i64,
    /// Measure sdscope only.
    pub skip_python: bool,
    pub timestep: i64,
    pub seed: i64,
}

impl Default for Sd3BenchOptions {
    fn default() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        Self {
            work_dir: root.join(".sdscope/bench"),
            python: root.join(".sdscope/venv/bin/python"),
            tokenizers: root.join(".sdscope/fixtures/mmdit/sd3"),
            layers: 24,
            repeats: 2,
            size: 512,
            skip_python: false,
            timestep: 50,
            seed: 42,
        }
    }
}

struct Sd3Case {
    name: String,
    goal: f64,
    sdscope: SideReport,
    diffusers: Option<SideReport>,
}

/// Run the SD3 benchmark and print its table on stdout (progress on stderr). Takes minutes.
pub fn run(opts: &Sd3BenchOptions) -> Result<()> {
    if opts.repeats == 0 || opts.layers == 0 {
        return Err(Error::invalid("repeats / layers", "must be at least 1"));
    }
    if opts.size <= 0 || opts.size % 16 != 0 {
        return Err(Error::invalid("size", format!("{} is not a positive multiple of 16", opts.size)));
    }
    let work_dir = absolute(&opts.work_dir)?;
    let scripts = work_dir.join("scripts");
    let model =
        work_dir.join(if opts.layers == 24 { "sd3-random".to_string() } else { format!("sd3-random-{}", opts.layers) });
    if !(model.join(".complete").is_file() && opts.skip_python) {
        check_python(&opts.python)?;
        if !opts.tokenizers.join("tokenizer_2/vocab.json").is_file() {
            let hint = "a folder with CLIP tokenizer/ and tokenizer_2/, by default the SD3 test fixture \
                        (`bash .ci/setup fixtures` writes it)";
            return Err(Error::MissingFile {
                path: opts.tokenizers.join("tokenizer_2/vocab.json"),
                hint: Some(hint.into()),
            });
        }
        log(format!("the random SD3-Medium-architecture pipeline in {} (built once, a few minutes)", model.display()));
        let mut cmd = Command::new(&opts.python);
        cmd.arg(write_script(&scripts, MAKE_SCRIPT)?).arg(&model).arg(absolute(&opts.tokenizers)?);
        cmd.arg("--layers").arg(opts.layers.to_string());
        run_captured(cmd, "building the random SD3 pipeline")?;
    }
    let image = work_dir.join(format!("picture_{}.png", opts.size));
    if !image.is_file() {
        test_picture(opts.size as u32)
            .save(&image)
            .map_err(|e| Error::invalid(format!("writing {}", image.display()), e.to_string()))?;
    }
    let sizes = weight_sizes(&model)?;
    let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
    let diffusers_script = if opts.skip_python { None } else { Some(write_script(&scripts, DIFFUSERS_SCRIPT)?) };
    let early = format!("transformer_blocks[{}]", opts.layers / 2);
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
    for (name, positions, goal) in
        [(early.clone(), early.clone(), GOAL_EARLY), ("all blocks".to_string(), ALL_BLOCKS.to_string(), GOAL_FULL)]
    {
        let (sdscope, diffusers) = sides.run(&name, &positions)?;
        cases.push(Sd3Case { name, goal, sdscope, diffusers });
    }
    print!("{}", render(opts, &model, sizes.held, &cases));
    Ok(())
}

fn render(opts: &Sd3BenchOptions, model: &Path, held: u64, cases: &[Sd3Case]) -> String {
    let mut s = String::new();
    let threads = cases.first().map_or(0, |c| c.sdscope.threads);
    let _ = writeln!(
        s,
        "\nsdscope bench sd3: {}, {}×{} image, CPU, {} threads",
        model.display(),
        opts.size,
        opts.size,
        threads
    );
    let _ = writeln!(s, "SD3-Medium architecture ({} joint blocks), random weights, no T5 on either side", opts.layers);
    let _ = writeln!(s, "weights held by sdscope: {} (transformer, both CLIPs, VAE encoder)", gib(Some(held)));
    let _ = writeln!(s, "best of {} extractions (prompt, VAE encoding, noise, transformer pass):", opts.repeats);
    let _ = writeln!(s, "{:<26} {:>10} {:>10} {:>7}   goal", "positions", "sdscope", "diffusers", "ratio");
    let mut goals = Vec::new();
    for case in cases {
        let ours = case.sdscope.best_s();
        let theirs = case.diffusers.as_ref().map(SideReport::best_s);
        let ratio = theirs.map(|t| ours / t);
        let verdict = ratio.map(|r| if r <= case.goal { "met" } else { "NOT met" });
        if let Some(r) = ratio {
            goals.push((format!("{} ≤ {:.1}× diffusers' time", case.name, case.goal), r <= case.goal));
        }
        let _ = writeln!(
            s,
            "{:<26} {:>8.2} s {:>10} {:>7}   ≤ {:.1}×: {}",
            format!("{} ({})", case.name, case.sdscope.positions.len()),
            ours,
            theirs.map_or("-".into(), |t| format!("{t:.2} s")),
            ratio.map_or("-".into(), |r| format!("{r:.2}×")),
            case.goal,
            verdict.unwrap_or("-")
        );
    }
    let _ = writeln!(s, "\npeak resident memory of the process (goal ≤ {GOAL_MEMORY:.1}× the weights held):");
    for case in cases {
        let peak = case.sdscope.peak_rss_bytes;
        let r = peak.map(|p| p as f64 / held as f64);
        if let Some(r) = r {
            goals.push((format!("{}: peak ≤ {GOAL_MEMORY:.1}× weights", case.name), r <= GOAL_MEMORY));
        }
        let theirs = case.diffusers.as_ref().and_then(|d| d.peak_rss_bytes);
        let _ = writeln!(
            s,
            "{:<26} sdscope {} ({}), diffusers {}",
            case.name,
            gib(peak),
            r.map_or("-".into(), |r| format!("{r:.2}× weights")),
            gib(theirs)
        );
    }
    let _ = writeln!(s, "\ngoals:");
    for (goal, ok) in goals {
        let _ = writeln!(s, "  {}  {goal}", if ok { "met    " } else { "NOT met" });
    }
    s
}
