//! `sdscope sae train|encode|eval|top` and the SAE flags of `sdscope generate`.

use crate::cli_checks as checks;
use sdscope::collection::shard_io::write_safetensors;
use sdscope::collection::Collection;
use sdscope::generate::{GenerateRequest, Generation};
use sdscope::interventions::Interventions;
use sdscope::pipeline::Pipeline;
use sdscope::sae::{
    evaluate, rows_of, train_on_collection, Activation, CollectionTraining, FeatureCard, FeatureEdit, LrSchedule, Sae,
    SteerOptions, TopItems, TopOptions, TopRank, TrainOptions,
};
use sdscope::{Error, Result};
use std::ops::Range;
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

#[derive(clap::Args)]
pub struct SaeArgs {
    #[command(subcommand)]
    pub command: SaeCommand,
}

#[derive(clap::Subcommand)]
pub enum SaeCommand {
    /// Train a TopK SAE on one position of a collection (one pass by default; a shard held out for evaluation).
    Train(TrainArgs),
    /// Encode rows with an SAE: `indices` int64 [N, k], `values` float32 [N, k] (descending), `recon` [N, d].
    Encode(EncodeArgs),
    /// Reconstruction and sparsity of an SAE on a collection.
    Eval(EvalArgs),
    /// The top items of every feature over a collection (one streaming pass), optionally as HTML feature cards.
    Top(TopArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// A collection folder (`sdscope collect --out`).
    #[arg(long)]
    pub data: PathBuf,
    /// The collection position to train on (default: its only one).
    #[arg(long)]
    pub position: Option<String>,
    #[arg(long, default_value_t = 10)]
    pub k: i64,
    #[arg(long, default_value_t = 5120)]
    pub latents: i64,
    /// Dead latents that reconstruct the residual (AuxK).
    #[arg(long, default_value_t = 256)]
    pub auxk: i64,
    #[arg(long, default_value_t = 1.0 / 32.0)]
    pub auxk_coef: f64,
    /// Steps without firing after which a latent is dead (default: 10 M tokens / batch).
    #[arg(long)]
    pub dead_steps: Option<i64>,
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 6.25e-10)]
    pub eps: f64,
    /// Linear learning-rate warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    /// Fraction of the run over which the learning rate decays linearly to 0 at the end (needs --steps).
    #[arg(long, default_value_t = 0.0)]
    pub decay_fraction: f64,
    /// Train for exactly N steps (repeating the data if needed); default: one pass.
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// BatchTopK: k active latents per row on average over the batch.
    #[arg(long)]
    pub batch_topk: bool,
    /// Shard held out for evaluation (default: the last complete one when there are two or more).
    #[arg(long)]
    pub holdout: Option<usize>,
    /// Shuffle-buffer rows.
    #[arg(long, default_value_t = 262_144)]
    pub buffer: usize,
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print a progress line every N steps.
    #[arg(long, default_value_t = 50)]
    pub log_every: usize,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct EncodeArgs {
    #[arg(long)]
    pub sae: PathBuf,
    /// A safetensors file holding `[N, d]` rows or `[N, d, h, w]` maps (positions become rows, channels last:
    /// row `i·h·w + y·w + x`).
    #[arg(long)]
    pub input: PathBuf,
    /// The tensor to encode (default: `x`, or the file's only tensor).
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub sae: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    /// Position (default: the SAE's hook when the collection has it, else the collection's only position).
    #[arg(long)]
    pub position: Option<String>,
    /// Only these shards (comma-separated; default: every complete shard).
    #[arg(long, value_delimiter = ',')]
    pub shards: Vec<usize>,
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct TopArgs {
    #[arg(long)]
    pub sae: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub position: Option<String>,
    #[arg(long, default_value_t = 9)]
    pub per_feature: usize,
    /// max (an item's largest activation) or mean (spatially averaged, their "Explore").
    #[arg(long, default_value = "max")]
    pub rank: String,
    #[arg(long)]
    pub out: PathBuf,
    /// Also write TOP_DIR/index.html with feature cards.
    #[arg(long)]
    pub html: bool,
    /// Features shown in the HTML (default: the --html-count most frequent).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<i64>,
    #[arg(long, default_value_t = 32)]
    pub html_count: usize,
}

pub fn sae(args: &SaeArgs) -> Result<()> {
    match &args.command {
        SaeCommand::Train(a) => train(a),
        SaeCommand::Encode(a) => encode(a),
        SaeCommand::Eval(a) => eval(a),
        SaeCommand::Top(a) => top(a),
    }
}

fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Ok(Device::Cuda(n)),
            None => Err(Error::invalid(format!("--device {s}"), "expected cpu, cuda or cuda:N")),
        },
    }
}

fn train(a: &TrainArgs) -> Result<()> {
    checks::inputs_exist(&[a.data.as_path()])?;
    if a.out.is_file() {
        return Err(Error::invalid(format!("--out {}", a.out.display()), "is a file: an SAE is saved as a folder"));
    }
    let device = parse_device(&a.device)?;
    if device.is_cuda() && !tch::Cuda::is_available() {
        return Err(Error::invalid("--device", "CUDA is not available in this libtorch build or machine"));
    }
    let options = TrainOptions {
        latents: a.latents,
        k: a.k,
        activation: if a.batch_topk { Activation::BatchTopK } else { Activation::TopK },
        auxk: a.auxk,
        auxk_coef: a.auxk_coef,
        dead_steps_threshold: a.dead_steps,
        batch: a.batch,
        lr: a.lr,
        eps: a.eps,
        schedule: LrSchedule { warmup_steps: a.warmup_steps, decay_fraction: a.decay_fraction },
        steps: a.steps,
        seed: a.seed,
        log_every: a.log_every,
        progress: true,
        ..TrainOptions::default()
    };
    let data = CollectionTraining { position: a.position.clone(), holdout: a.holdout, buffer: a.buffer, device };
    let (sae, state, held_out) = train_on_collection(&a.data, &options, &data)?;
    sae.save(&a.out)?;
    eprintln!("[sae] {} steps, {} tokens; wrote {}", state.steps, state.firing.tokens, a.out.display());
    if let Some(m) = held_out {
        eprintln!(
            "[sae] held-out shard: explained variance {:.4}, nmse {:.4}, l0 {:.2}, dead {:.1}%, l2 ratio {:.3}",
            m.explained_variance,
            m.nmse,
            m.l0,
            m.dead_fraction * 100.0,
            m.l2_ratio
        );
    }
    Ok(())
}

fn encode(a: &EncodeArgs) -> Result<()> {
    checks::inputs_exist(&[a.sae.as_path(), a.input.as_path()])?;
    checks::outputs_valid(&[("--out", Some(a.out.as_path()))])?;
    let sae = Sae::load(&a.sae)?;
    let (mut tensors, _) = sdscope::tensor_io::load(&a.input)?;
    let key = match &a.key {
        Some(k) => k.clone(),
        None if tensors.contains_key("x") => "x".into(),
        None if tensors.len() == 1 => tensors.keys().next().cloned().unwrap_or_default(),
        None => {
            let mut keys: Vec<&String> = tensors.keys().collect();
            keys.sort();
            return Err(Error::invalid(
                "--key",
                format!(
                    "the input has no `x`; pick one of: {}",
                    keys.into_iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    };
    let x = tensors.remove(&key).ok_or_else(|| Error::MissingTensor {
        name: key.clone(),
        file: a.input.clone(),
        expected: Some(vec![-1, sae.d_in()]),
    })?;
    let rows = rows_of(&x, sae.d_in())?.f_to_kind(Kind::Float)?;
    let code = sae.encode(&rows)?;
    let recon = sae.decode(&code)?;
    checks::create_parents(&[Some(a.out.as_path())])?;
    let meta = serde_json::json!({ "sae": a.sae.display().to_string(), "input": a.input.display().to_string(),
        "key": key, "input_shape": x.size() });
    write_safetensors(
        &a.out,
        &[("indices", &code.indices), ("values", &code.values.f_contiguous()?), ("recon", &recon)],
        &meta,
    )?;
    eprintln!("[sae] encoded {} rows (k = {}) into {}", rows.size()[0], sae.k, a.out.display());
    Ok(())
}

/// The position to read: given, else the SAE's hook if the collection has it, else the collection's only one.
fn position_for(sae: &Sae, collection: &Collection, given: Option<&str>) -> Result<String> {
    if let Some(p) = given {
        return Ok(p.to_string());
    }
    let positions = &collection.manifest.positions;
    if let Some(hook) = sae.meta.hook.as_ref().filter(|h| positions.contains(h)) {
        return Ok(hook.clone());
    }
    match positions.as_slice() {
        [only] => Ok(only.clone()),
        _ => Err(Error::invalid("--position", format!("pick one of the collection's: {}", positions.join(", ")))),
    }
}

fn eval(a: &EvalArgs) -> Result<()> {
    checks::inputs_exist(&[a.sae.as_path(), a.data.as_path()])?;
    let sae = Sae::load(&a.sae)?;
    let collection = Collection::open(&a.data)?;
    let position = position_for(&sae, &collection, a.position.as_deref())?;
    let shards = (!a.shards.is_empty()).then(|| a.shards.clone());
    if let Some(list) = &shards {
        for &s in list {
            collection.complete_shard(s)?;
        }
    }
    let m = evaluate(&sae, &collection, &position, shards, a.batch)?;
    if a.json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        println!("position            {position}");
        println!("tokens              {}", m.tokens);
        println!("explained_variance  {:.6}", m.explained_variance);
        println!("nmse                {:.6}", m.nmse);
        println!("l0                  {:.3}", m.l0);
        println!("dead_fraction       {:.6}", m.dead_fraction);
        println!("l2_ratio            {:.6}", m.l2_ratio);
    }
    Ok(())
}

fn top(a: &TopArgs) -> Result<()> {
    checks::inputs_exist(&[a.sae.as_path(), a.data.as_path()])?;
    checks::outputs_valid(&[("--out", Some(a.out.join("top.json").as_path()))])?;
    let sae = Sae::load(&a.sae)?;
    let collection = Collection::open(&a.data)?;
    let position = position_for(&sae, &collection, a.position.as_deref())?;
    if a.per_feature == 0 {
        return Err(Error::invalid("--per-feature", "must be at least 1"));
    }
    let options = TopOptions { per_feature: a.per_feature, rank: TopRank::parse(&a.rank)?, ..TopOptions::default() };
    let top = TopItems::compute(&sae, &collection, &position, &options)?;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    top.save(&a.out)?;
    eprintln!("[sae top] wrote {}", a.out.join("top.safetensors").display());
    if a.html {
        let features = if a.features.is_empty() { most_frequent(&top, a.html_count)? } else { a.features.clone() };
        let path = a.out.join("index.html");
        write_cards(&sae, &top, &collection, &features, &path)?;
        eprintln!("[sae top] wrote {} feature cards to {}", features.len(), path.display());
    }
    Ok(())
}

fn most_frequent(top: &TopItems, count: usize) -> Result<Vec<i64>> {
    let n = top.fire_count.size()[0];
    let (_, order) = top.fire_count.f_topk((count as i64).min(n), 0, true, true)?;
    let order = Vec::<i64>::try_from(order.f_to_device(Device::Cpu)?)?;
    Ok(order.into_iter().filter(|&f| top.fire_count.double_value(&[f]) > 0.0).collect())
}

fn write_cards(sae: &Sae, top: &TopItems, collection: &Collection, features: &[i64], path: &Path) -> Result<()> {
    let mut body = String::new();
    for &f in features {
        body.push_str(&FeatureCard::build(sae, top, collection, f)?.to_html()?);
    }
    let title = sdscope::display::escape_html(&format!("SAE features at {}", top.position));
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif\"><h2>{title}</h2>{body}</body></html>"
    );
    std::fs::write(path, html).map_err(|e| Error::io(path, e))
}

/// `A..B` (steps A to B − 1) or a single step `A`.
pub fn parse_steps(s: &str) -> Result<Range<usize>> {
    let bad = || Error::invalid(format!("--feature-steps {s}"), "expected A..B (steps A to B − 1) or one step A");
    if let Some((a, b)) = s.split_once("..") {
        let a: usize = if a.is_empty() { 0 } else { a.trim().parse().map_err(|_| bad())? };
        let b: usize = if b.is_empty() { usize::MAX } else { b.trim().parse().map_err(|_| bad())? };
        if a >= b {
            return Err(bad());
        }
        return Ok(a..b);
    }
    let a: usize = s.trim().parse().map_err(|_| bad())?;
    Ok(a..a + 1)
}

/// The SAE flags of `sdscope generate`.
#[derive(clap::Args, Debug, Default)]
pub struct GenerateSaeArgs {
    /// An SAE folder: steer generation with one of its features at its block.
    #[arg(long)]
    pub sae: Option<PathBuf>,
    /// The feature index.
    #[arg(long)]
    pub feature: Option<i64>,
    /// Steering strength, in units of the feature's mean activation.
    #[arg(long)]
    pub strength: Option<f64>,
    /// A mask image (any resolution; white = steer), pooled to the block's grid.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Steps to steer at: A..B (A to B − 1) or one step.
    #[arg(long)]
    pub feature_steps: Option<String>,
    /// steer (default), icon (replace the update by mean·k·d_f), ablate, or splice (the SAE's reconstruction).
    #[arg(long, default_value = "steer")]
    pub feature_mode: String,
    /// Steer the conditional half only (default: the opposite sign on the unconditional half).
    #[arg(long)]
    pub conditional_only: bool,
}

impl GenerateSaeArgs {
    /// The SAE and its edit, or `None` without `--sae` (feature flags without it are an error).
    pub fn edit(&self) -> Result<Option<(Sae, FeatureEdit)>> {
        let Some(dir) = &self.sae else {
            if self.feature.is_some() || self.strength.is_some() || self.mask.is_some() || self.feature_steps.is_some()
            {
                return Err(Error::invalid("--feature/--strength/--mask/--feature-steps", "need --sae SAE_DIR"));
            }
            return Ok(None);
        };
        checks::inputs_exist(&[dir.as_path()])?;
        if let Some(mask) = &self.mask {
            checks::inputs_exist(&[mask.as_path()])?;
        }
        let sae = Sae::load(dir)?;
        sae.hook()?;
        let feature = || {
            self.feature.ok_or_else(|| Error::invalid("--sae", format!("needs --feature F (0..{})", sae.num_latents())))
        };
        let steer_only = [
            ("--strength", self.strength.is_some()),
            ("--mask", self.mask.is_some()),
            ("--feature-steps", self.feature_steps.is_some()),
            ("--conditional-only", self.conditional_only),
        ];
        if self.feature_mode != "steer" {
            if let Some((flag, _)) = steer_only.iter().find(|(_, given)| *given) {
                let why = "applies to --feature-mode steer only (icon, ablate and splice act at every step)";
                return Err(Error::invalid(format!("{flag} with --feature-mode {}", self.feature_mode), why));
            }
        }
        let edit = match self.feature_mode.as_str() {
            "steer" => {
                let strength = self.strength.ok_or_else(|| Error::invalid("--sae", "steering needs --strength S"))?;
                let mut options = SteerOptions::new(feature()?, strength);
                if let Some(mask) = &self.mask {
                    options = options.mask(sdscope::sae::mask_from_png(mask)?);
                }
                if let Some(steps) = &self.feature_steps {
                    options = options.steps(parse_steps(steps)?);
                }
                options.conditional_only = self.conditional_only;
                if sae.feature_scale(options.feature)? == 0.0 {
                    eprintln!(
                        "[sae] warning: feature {} has mean activation 0 (it never fired in training): steering adds nothing",
                        options.feature
                    );
                }
                FeatureEdit::Steer(options)
            }
            "icon" => FeatureEdit::Icon { feature: feature()? },
            "ablate" => FeatureEdit::Ablate { feature: feature()? },
            "splice" => FeatureEdit::Splice,
            other => {
                return Err(Error::invalid(format!("--feature-mode {other}"), "known: steer, icon, ablate, splice"))
            }
        };
        Ok(Some((sae, edit)))
    }
}

/// Generate with an SAE edit installed; a splice also reports how far it moved the final latents.
pub fn generate_with_feature(
    pipe: &Pipeline,
    request: &GenerateRequest,
    sae: &Sae,
    edit: FeatureEdit,
) -> Result<Generation> {
    let block = sae.block()?;
    if let FeatureEdit::Splice = edit {
        let effect = sdscope::sae::splice_effect(pipe, request, sae)?;
        eprintln!(
            "[sae] splicing the reconstruction at `{block}` moved the final latents by {:.4} (relative L2)",
            effect.latent_change
        );
        return Ok(effect.spliced);
    }
    eprintln!("[sae] {} at `{block}`", edit.describe());
    let mut edits = Interventions::new();
    sae.install(&mut edits, edit)?;
    pipe.generate_with(request, &mut edits)
}

/// Flags of `sdscope bench sae` (defaults: the SDXL-Turbo SAE's shapes, 2 threads).
#[derive(clap::Args)]
pub struct BenchSaeArgs {
    #[arg(long, default_value_t = 1280)]
    pub d: i64,
    #[arg(long, default_value_t = 5120)]
    pub latents: i64,
    #[arg(long, default_value_t = 10)]
    pub k: i64,
    #[arg(long, default_value_t = 256)]
    pub auxk: i64,
    #[arg(long, default_value_t = 4096)]
    pub batch: i64,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    /// Steps without firing after which a latent is dead (small, so that AuxK works on dead latents).
    #[arg(long, default_value_t = 2)]
    pub dead_steps: i64,
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Python with torch (the reference virtualenv by default).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Measure sdscope only.
    #[arg(long)]
    pub skip_python: bool,
}

/// `sdscope bench sae`: see [`sdscope::bench::sae::run`].
pub fn bench_sae(a: &BenchSaeArgs) -> Result<()> {
    let mut o = sdscope::bench::sae::SaeBenchOptions {
        d: a.d,
        latents: a.latents,
        k: a.k,
        auxk: a.auxk,
        batch: a.batch,
        steps: a.steps,
        dead_steps: a.dead_steps,
        threads: a.threads,
        skip_python: a.skip_python,
        ..Default::default()
    };
    if let Some(dir) = &a.work_dir {
        o.work_dir = dir.clone();
    }
    if let Some(python) = &a.python {
        o.python = python.clone();
    }
    sdscope::bench::sae::run(&o)
}
