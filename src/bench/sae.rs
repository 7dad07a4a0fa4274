//! `sdscope bench sae`: SAE training and encoding throughput against the PyTorch training loop of the same SAE
//! (`tests/bench/torch_sae_train.py`: autograd, gather decode, Adam), same CPU threads, same run.
//!
//! Both sides train on random normal batches from one warm-up step, then time `steps` steps; encode throughput
//! is pre-activations + top-k over the same batches. The PyTorch side runs in its own process first.

use super::report::gib;
use super::{absolute, check_python, log, peak_rss_bytes, run_captured, write_script};
use crate::error::{Error, Result};
use crate::sae::{Sae, TrainOptions, Trainer};
use serde::Deserialize;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const TORCH_SCRIPT: (&str, &str) = ("torch_sae_train.py", include_str!("../../tests/bench/torch_sae_train.py"));

/// The goal of the issue: at least this many times PyTorch's training tokens/s.
pub const GOAL_SPEED: f64 = 1.5;

#[derive(Debug, Clone)]
pub struct SaeBenchOptions {
    pub d: i64,
    pub latents: i64,
    pub k: i64,
    pub auxk: i64,
    pub batch: i64,
    pub steps: usize,
    /// Dead-latent threshold in steps (small, so that AuxK has dead latents to work on).
    pub dead_steps: i64,
    pub threads: i32,
    pub work_dir: PathBuf,
    pub python: PathBuf,
    pub skip_python: bool,
}

impl Default for SaeBenchOptions {
    fn default() -> Self {
        Self {
            d: 1280,
            latents: 5120,
            k: 10,
            auxk: 256,
            batch: 4096,
            steps: 8,
            dead_steps: 2,
            threads: 2,
            work_dir: PathBuf::from(".sdscope/bench"),
            python: PathBuf::from(".sdscope/venv/bin/python"),
            skip_python: false,
        }
    }
}

#[derive(Debug, Deserialize)]
struct TorchReport {
    tokens_per_s: f64,
    encode_tokens_per_s: f64,
    peak_rss_bytes: Option<u64>,
}

struct OursReport {
    tokens_per_s: f64,
    encode_tokens_per_s: f64,
    peak_rss_bytes: Option<u64>,
    dead: i64,
}

fn ours(o: &SaeBenchOptions) -> Result<OursReport> {
    tch::set_num_threads(o.threads);
    tch::manual_seed(0);
    let batches = Tensor::f_randn([o.steps as i64 + 1, o.batch, o.d], (Kind::Float, Device::Cpu))?;
    let flat = batches.f_reshape([-1, o.d])?;
    let scale = crate::sae::variance_scale(&flat)?;
    let mut sae = Sae::init(o.d, o.latents, o.k, 0)?;
    sae.b_pre = flat.f_mean_dim([0i64].as_slice(), false, Kind::Float)?;
    let options = TrainOptions {
        latents: o.latents,
        k: o.k,
        auxk: o.auxk,
        dead_steps_threshold: Some(o.dead_steps),
        batch: o.batch as usize,
        progress: false,
        log_every: usize::MAX,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(sae, options, scale)?;
    trainer.step(&batches.f_get(0)?)?;
    let start = Instant::now();
    for s in 0..o.steps {
        trainer.step(&batches.f_get(s as i64 + 1)?)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let dead = trainer.state.last_nonzero.f_gt(o.dead_steps)?.f_sum(Kind::Int64)?.int64_value(&[]);
    let sae = &trainer.sae;
    sae.encode(&batches.f_get(0)?)?;
    let start = Instant::now();
    for s in 0..o.steps {
        sae.encode(&batches.f_get(s as i64 + 1)?)?;
    }
    let encode_seconds = start.elapsed().as_secs_f64();
    let tokens = (o.batch as usize * o.steps) as f64;
    Ok(OursReport {
        tokens_per_s: tokens / seconds,
        encode_tokens_per_s: tokens / encode_seconds,
        peak_rss_bytes: peak_rss_bytes(),
        dead,
    })
}

/// Run both sides and print the table on stdout.
pub fn run(o: &SaeBenchOptions) -> Result<()> {
    if o.steps == 0 || o.batch < 1 || o.threads < 1 {
        return Err(Error::invalid("bench sae", "steps, batch and threads must be at least 1"));
    }
    log(format!(
        "SAE training: d {}, {} latents, k {}, auxk {}, batch {}, {} timed steps, dead after {} steps, {} threads",
        o.d, o.latents, o.k, o.auxk, o.batch, o.steps, o.dead_steps, o.threads
    ));
    let torch =
        if o.skip_python {
            None
        } else {
            check_python(&o.python)?;
            let script = write_script(&absolute(&o.work_dir)?, TORCH_SCRIPT)?;
            log("PyTorch side (autograd, gather decode, Adam) in its own process");
            let mut cmd = Command::new(&o.python);
            cmd.arg(&script).args([
                "--d",
                &o.d.to_string(),
                "--latents",
                &o.latents.to_string(),
                "--k",
                &o.k.to_string(),
                "--auxk",
                &o.auxk.to_string(),
                "--batch",
                &o.batch.to_string(),
                "--steps",
                &o.steps.to_string(),
                "--dead-steps",
                &o.dead_steps.to_string(),
                "--threads",
                &o.threads.to_string(),
            ]);
            let stdout = run_captured(cmd, "PyTorch SAE benchmark")?;
            let text = String::from_utf8_lossy(&stdout);
            let json = text.find('{').map(|i| &text[i..]).unwrap_or("");
            Some(serde_json::from_str::<TorchReport>(json).map_err(|e| {
                Error::invalid("PyTorch SAE benchmark", format!("no JSON report on stdout ({e}): {text}"))
            })?)
        };
    log("sdscope side (hand-written sparse gradients)");
    let ours = ours(o)?;
    log(format!("{} latents dead at the end", ours.dead));

    let mem = gib;
    println!(
        "| SAE {}×{} k={} auxk={} batch {} | sdscope | PyTorch | ratio | goal |",
        o.d, o.latents, o.k, o.auxk, o.batch
    );
    println!("|---|---:|---:|---:|---|");
    match &torch {
        Some(t) => {
            let ratio = ours.tokens_per_s / t.tokens_per_s;
            let verdict = if ratio >= GOAL_SPEED { "met" } else { "not met" };
            println!(
                "| training tokens/s | {:.0} | {:.0} | {ratio:.2}× | ≥ {GOAL_SPEED}× ({verdict}) |",
                ours.tokens_per_s, t.tokens_per_s
            );
            println!(
                "| encode tokens/s | {:.0} | {:.0} | {:.2}× | |",
                ours.encode_tokens_per_s,
                t.encode_tokens_per_s,
                ours.encode_tokens_per_s / t.encode_tokens_per_s
            );
            println!("| peak RSS | {} | {} | | |", mem(ours.peak_rss_bytes), mem(t.peak_rss_bytes));
        }
        None => {
            println!("| training tokens/s | {:.0} | – | | |", ours.tokens_per_s);
            println!("| encode tokens/s | {:.0} | – | | |", ours.encode_tokens_per_s);
            println!("| peak RSS | {} | – | | |", mem(ours.peak_rss_bytes));
        }
    }
    Ok(())
}
