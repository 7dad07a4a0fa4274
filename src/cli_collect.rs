//! `sdscope collect`: representations at dataset scale, sharded and resumable, one shard per array task.

use sdscope::collect::{
    CaptureSteps, CollectRequest, Collector, Reduce, ShardOutcome, ShardSelection, StoreDtype, WorkSource,
};
use sdscope::collection::sources::{list_images, read_prompts, resolve_prompt_source};
use sdscope::collection::{Collection, ShardState};
use sdscope::pipeline::{LoadOptions, Pipeline};
use sdscope::schedulers::SamplerKind;
use sdscope::{Error, Result};
use std::path::{Path, PathBuf};

/// Flags of `sdscope collect`.
#[derive(clap::Args, Debug)]
pub struct CollectArgs {
    /// A diffusers folder, a hub repo id, or an alias (sd15, sdxl-turbo, …).
    #[arg(long)]
    pub model: Option<String>,
    /// Prompts to generate from: a text file (one per line), .jsonl, .csv/.tsv, .parquet file or folder, or a
    /// Hugging Face dataset repo id (owner/name[@revision]) in the standard cache.
    #[arg(long)]
    pub prompts: Option<String>,
    /// The prompt column of JSONL/CSV/Parquet sources (default: caption, prompt or text).
    #[arg(long)]
    pub column: Option<String>,
    /// Images to extract from: a folder (recursively; the sub-folder is the label) or a list file.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Comma-separated positions; `P@update` for the module's output − input.
    #[arg(long, value_delimiter = ',')]
    pub positions: Vec<String>,
    /// Inference steps (default: the model's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Guidance scale (default: the model's).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Base seed: item k of the work list uses seed + k.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    #[arg(long)]
    pub width: Option<i64>,
    #[arg(long)]
    pub height: Option<i64>,
    /// Which U-Net calls to keep: all, last, or step indices such as 0,3.
    #[arg(long, default_value = "all")]
    pub capture_steps: String,
    /// none, mean (spatial mean) or sample:N (N random spatial positions per item).
    #[arg(long, default_value = "none")]
    pub reduce: String,
    /// Storage dtype: f32 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Keep each generated image as PNG in the shard (images/{index:08}.png).
    #[arg(long)]
    pub keep_images: bool,
    /// With --keep-images: a thumbnail whose longest side is this many pixels.
    #[arg(long)]
    pub thumbnail: Option<u32>,
    /// Take only the first N prompts or images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Items per U-Net pass (recorded: results depend on it at float precision).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Run shard I of N only.
    #[arg(long)]
    pub shard: Option<String>,
    /// Cut the work into N shards; with SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX set, run that shard, else all.
    #[arg(long)]
    pub shards: Option<usize>,
    #[arg(long)]
    pub out: PathBuf,
    /// Print the state of the collection in --out (shards complete / partial / missing, items, bytes).
    #[arg(long)]
    pub status: bool,
    /// With --status: one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Print an sbatch array script running this command, one shard per array task, and exit.
    #[arg(long)]
    pub slurm_script: bool,
    /// No progress lines (batch systems).
    #[arg(long)]
    pub quiet: bool,
    /// Images: noise timesteps in 0..=999.
    #[arg(long, value_delimiter = ',', default_value = "50")]
    pub timesteps: Vec<i64>,
    /// Images: the conditioning prompt (empty by default, as in `extract`).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Images: scale the shortest side to N and centre-crop N×N (N a multiple of 8), so every item has one shape.
    #[arg(long)]
    pub image_size: Option<u32>,
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// ddim, pndm, euler or euler_ancestral (default: the model's scheduler config).
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Items per prompt, each with its own seed.
    #[arg(long, default_value_t = 1)]
    pub samples_per_prompt: usize,
}

/// `sdscope collect`.
pub fn collect(args: &CollectArgs) -> Result<()> {
    if args.status {
        return status(&args.out, args.json);
    }
    let request = request_from(args)?;
    let selection = ShardSelection::resolve(args.shard.as_deref(), args.shards, &|k| std::env::var(k).ok())?;
    let model = args.model.as_deref().ok_or_else(|| Error::invalid("--model", "is required to collect"))?;
    if args.slurm_script {
        print!("{}", slurm_script(selection.count)?);
        return Ok(());
    }
    let source = read_source(args)?;
    let options = LoadOptions { progress: !args.quiet, ..Default::default() };
    let pipe = Pipeline::load_with(model, options)?;
    let collector = Collector::new(&pipe, source, request, &args.out, selection.count)?;
    let outcomes = collector.run(selection.index)?;
    if !args.quiet {
        let written = outcomes.iter().filter(|(_, o)| matches!(o, ShardOutcome::Written { .. })).count();
        eprintln!(
            "[sdscope] {written} shard(s) written, {} skipped; `sdscope collect --out {} --status` shows the whole collection",
            outcomes.len() - written,
            args.out.display()
        );
    }
    Ok(())
}

/// Everything the flags say, checked before any model is loaded or any file is written.
fn request_from(args: &CollectArgs) -> Result<CollectRequest> {
    match (&args.prompts, &args.images) {
        (Some(_), Some(_)) => return Err(Error::invalid("--prompts / --images", "give one source, not both")),
        (None, None) => return Err(Error::invalid("source", "give --prompts SRC or --images DIR_OR_LIST")),
        _ => {}
    }
    if args.positions.is_empty() {
        return Err(Error::invalid(
            "--positions",
            "give at least one position, e.g. mid_block or mid_block.attentions[0]@update",
        ));
    }
    if args.batch == 0 {
        return Err(Error::invalid("--batch 0", "give at least 1"));
    }
    let for_images = |flag: &str, set: bool| -> Result<()> {
        if set && args.images.is_none() {
            return Err(Error::invalid(flag, "applies to --images; prompts are generated with --steps/--guidance"));
        }
        Ok(())
    };
    for_images("--prompt", args.prompt.is_some())?;
    for_images("--image-size", args.image_size.is_some())?;
    if args.image_size.is_some_and(|s| s == 0 || !s.is_multiple_of(8)) {
        return Err(Error::invalid("--image-size", "must be a positive multiple of 8 (e.g. 512)"));
    }
    let for_prompts = |flag: &str, set: bool| -> Result<()> {
        if set && args.prompts.is_none() {
            return Err(Error::invalid(flag, "applies to --prompts (generation) only"));
        }
        Ok(())
    };
    for_prompts("--steps", args.steps.is_some())?;
    for_prompts("--guidance", args.guidance.is_some())?;
    for_prompts("--width/--height", args.width.is_some() || args.height.is_some())?;
    for_prompts("--keep-images", args.keep_images)?;
    for_prompts("--negative-prompt", args.negative_prompt.is_some())?;
    for_prompts("--scheduler", args.scheduler.is_some())?;
    for_prompts("--capture-steps", args.capture_steps != "all")?;
    for_prompts("--column", args.column.is_some())?;
    if args.thumbnail.is_some() && !args.keep_images {
        return Err(Error::invalid("--thumbnail", "needs --keep-images"));
    }
    if args.thumbnail == Some(0) {
        return Err(Error::invalid("--thumbnail 0", "give the longest side in pixels (e.g. 128)"));
    }
    let mut request = CollectRequest::new(args.positions.clone());
    request.steps = args.steps;
    request.guidance = args.guidance;
    request.width = args.width;
    request.height = args.height;
    request.seed = args.seed;
    request.negative_prompt = args.negative_prompt.clone();
    request.scheduler = args.scheduler.as_deref().map(SamplerKind::parse).transpose()?;
    request.capture_steps = CaptureSteps::parse(&args.capture_steps)?;
    request.samples_per_prompt = args.samples_per_prompt;
    request.timesteps = args.timesteps.clone();
    request.prompt = args.prompt.clone().unwrap_or_default();
    request.image_size = args.image_size;
    request.reduce = Reduce::parse(&args.reduce)?;
    request.dtype = StoreDtype::parse(&args.dtype)?;
    request.keep_images = args.keep_images;
    request.thumbnail = args.thumbnail;
    request.batch = args.batch;
    request.limit = args.limit;
    request.progress = !args.quiet;
    Ok(request)
}

fn read_source(args: &CollectArgs) -> Result<WorkSource> {
    if let Some(spec) = &args.prompts {
        let source = resolve_prompt_source(spec, args.column.as_deref())?;
        let prompts = read_prompts(&source, args.limit)?;
        return Ok(WorkSource::prompts(spec.clone(), source.column.clone(), prompts));
    }
    let path = args.images.as_ref().ok_or_else(|| Error::invalid("source", "give --prompts or --images"))?;
    let items = list_images(path, args.limit)?;
    let root = if path.is_dir() { path.clone() } else { path.parent().map(Path::to_path_buf).unwrap_or_default() };
    Ok(WorkSource::images(path.display().to_string(), root, items))
}

/// `sdscope collect --out DIR --status`.
fn status(dir: &Path, json: bool) -> Result<()> {
    let collection = Collection::open(dir)?;
    let shards = collection.status();
    let count = |state| shards.iter().filter(|s| s.state == state).count();
    let (complete, partial, missing) =
        (count(ShardState::Complete), count(ShardState::Partial), count(ShardState::Missing));
    let items_done: u64 = shards.iter().filter(|s| s.state == ShardState::Complete).map(|s| s.items).sum();
    let bytes: u64 = shards.iter().map(|s| s.bytes).sum();
    let items_total = collection.manifest.source.items;
    if json {
        let out = serde_json::json!({
            "dir": dir.display().to_string(),
            "shards": shards.len(),
            "complete": complete,
            "partial": partial,
            "missing": missing,
            "items": items_done,
            "items_total": items_total,
            "bytes": bytes,
            "positions": collection.manifest.positions,
            "per_shard": shards,
        });
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!(
        "collection {} ({} positions: {})",
        dir.display(),
        collection.manifest.positions.len(),
        collection.manifest.positions.join(", ")
    );
    println!(
        "shards: {} (complete {complete}, partial {partial}, missing {missing}); items: {items_done} of {items_total}; bytes: {bytes}",
        shards.len()
    );
    for s in &shards {
        let state = match s.state {
            ShardState::Complete => "complete",
            ShardState::Partial => "partial",
            ShardState::Missing => "missing",
        };
        println!(
            "  {}\t{state}\t{} items\t{} bytes",
            sdscope::collection::layout::shard_dir_name(s.index, shards.len()),
            s.items,
            s.bytes
        );
    }
    Ok(())
}

/// An sbatch array script that runs this very command line, one shard per task (`--shards N` fixed, so a
/// resubmitted single task still knows the shard count).
fn slurm_script(count: usize) -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::invalid("sdscope binary", e.to_string()))?;
    let mut args: Vec<String> = Vec::new();
    let mut given = std::env::args().skip(1).peekable();
    while let Some(arg) = given.next() {
        match arg.as_str() {
            "--slurm-script" | "--quiet" => {}
            "--shard" | "--shards" => {
                given.next();
            }
            a if a.starts_with("--shard=") || a.starts_with("--shards=") => {}
            _ => args.push(arg),
        }
    }
    let cwd = std::env::current_dir().map_err(|e| Error::invalid("working directory", e.to_string()))?;
    let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    Ok(format!(
        r#"#!/bin/bash
# sdscope collect as a Slurm job array: one shard per array task, {count} shards.
# Submit with `sbatch THIS_FILE`; rerun the same file (or `sbatch --array=I THIS_FILE` for one task) to finish
# shards that were killed: complete shards are skipped, partial ones redone.
#SBATCH --job-name=sdscope-collect
#SBATCH --array=0-{last}
#SBATCH --cpus-per-task=2
#SBATCH --output=sdscope-collect-%A_%a.log
##SBATCH --gres=gpu:1
##SBATCH --time=04:00:00
set -euo pipefail
cd {cwd}
exec {exe} {args} --shards {count} --quiet
"#,
        last = count.saturating_sub(1),
        cwd = shell_quote(&cwd.display().to_string()),
        exe = shell_quote(&exe.display().to_string()),
        args = quoted.join(" "),
    ))
}

fn shell_quote(text: &str) -> String {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
