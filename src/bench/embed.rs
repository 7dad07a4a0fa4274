//! `sdscope bench embed`: our t-SNE and UMAP against scikit-learn's `TSNE` and umap-learn's `UMAP` on data
//! nobody here made (scikit-learn's bundled `digits`, 1797 × 64, and optionally a file of embeddings such as
//! CLIP features of real images), same thread count, same run: neighbourhood quality (trustworthiness and
//! kNN overlap at k = 15, both maps scored by the same code) and wall time.
//!
//! The Python side (`tests/bench/sklearn_projections.py`, analysis virtualenv) runs first in its own process and
//! writes the inputs and its maps; umap-learn's numba compilation is done by a warm-up fit and reported apart.

use super::{absolute, check_python, log, run_captured, write_script};
use crate::error::{Error, Result};
use crate::project::{neighbourhood_quality, project, Method, ProjectOptions};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use tch::Tensor;

const PYTHON_SCRIPT: (&str, &str) =
    ("sklearn_projections.py", include_str!("../../tests/bench/sklearn_projections.py"));

/// The goals: quality at least 0.99× the Python libraries', time at most 0.5× theirs.
pub const GOAL_QUALITY: f64 = 0.99;
pub const GOAL_TIME: f64 = 0.5;
const K: usize = 15;

#[derive(Debug, Clone)]
pub struct EmbedBenchOptions {
    /// Extra embeddings to map besides `digits` (`sdscope embed --out`), and the key to read.
    pub embeddings: Option<(PathBuf, String)>,
    pub threads: i32,
    pub work_dir: PathBuf,
    /// Python with scikit-learn and umap-learn (`.ci/setup venv-analysis`).
    pub python: PathBuf,
}

impl Default for EmbedBenchOptions {
    fn default() -> Self {
        Self {
            embeddings: None,
            threads: 2,
            work_dir: PathBuf::from(".sdscope/bench/embed"),
            python: PathBuf::from(".sdscope/venv-analysis/bin/python"),
        }
    }
}

#[derive(Debug, Deserialize)]
struct PythonReport {
    n: i64,
    d: i64,
    tsne_s: f64,
    umap_s: f64,
    umap_compile_s: f64,
}

struct Row {
    dataset: String,
    method: &'static str,
    ours: (f64, f64, f64),
    theirs: (f64, f64, f64),
}

fn load(path: &std::path::Path, key: &str) -> Result<Tensor> {
    let (mut tensors, _) = crate::tensor_io::load(path)?;
    tensors.remove(key).ok_or_else(|| Error::invalid(format!("key {key}"), format!("not in {}", path.display())))
}

/// Run both sides and print the table on stdout.
pub fn run(o: &EmbedBenchOptions) -> Result<()> {
    if o.threads < 1 {
        return Err(Error::invalid("bench embed", "threads must be at least 1"));
    }
    check_python(&o.python)?;
    let dir = absolute(&o.work_dir)?;
    let script = write_script(&dir, PYTHON_SCRIPT)?;
    log(format!("Python side: scikit-learn TSNE and umap-learn UMAP, {} threads", o.threads));
    let mut cmd = Command::new(&o.python);
    cmd.arg(&script).arg("--out").arg(&dir).args(["--threads", &o.threads.to_string()]);
    if let Some((path, key)) = &o.embeddings {
        cmd.arg("--input").arg(absolute(path)?).args(["--key", key]);
    }
    let stdout = run_captured(cmd, "scikit-learn / umap-learn benchmark")?;
    let text = String::from_utf8_lossy(&stdout);
    let json = text.find('{').map(|i| &text[i..]).unwrap_or("");
    let python: BTreeMap<String, PythonReport> = serde_json::from_str(json).map_err(|e| {
        Error::invalid("Python projection benchmark", format!("no JSON report on stdout ({e}): {text}"))
    })?;

    tch::set_num_threads(o.threads);
    let mut rows = Vec::new();
    for (name, report) in &python {
        let x = if name == "digits" {
            load(&dir.join("digits.safetensors"), "x")?
        } else {
            let (path, key) =
                o.embeddings.as_ref().ok_or_else(|| Error::invalid("bench embed", "unexpected dataset"))?;
            load(path, key)?
        };
        let theirs = crate::tensor_io::load(&dir.join(format!("{name}_python.safetensors")))?.0;
        log(format!("{name}: {} × {}", report.n, report.d));
        for (method, key, their_s) in [(Method::Tsne, "tsne", report.tsne_s), (Method::Umap, "umap", report.umap_s)] {
            let start = Instant::now();
            let xy = project(&x, &ProjectOptions { method, ..Default::default() })?;
            let ours_s = start.elapsed().as_secs_f64();
            let their_xy =
                theirs.get(key).ok_or_else(|| Error::invalid(key, "missing from the Python side's output"))?;
            let score = |y: &Tensor, s: f64| -> Result<(f64, f64, f64)> {
                let (trust, overlap) = neighbourhood_quality(&x, y, K)?;
                Ok((trust, overlap, s))
            };
            let row = Row {
                dataset: name.clone(),
                method: key,
                ours: score(&xy, ours_s)?,
                theirs: score(their_xy, their_s)?,
            };
            log(format!("{name} {key}: ours {ours_s:.2} s, theirs {their_s:.2} s"));
            rows.push(row);
        }
        log(format!("umap-learn's numba compilation (not in its time): {:.1} s", report.umap_compile_s));
    }
    print_table(&rows, o.threads);
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "not met"
    }
}

fn print_table(rows: &[Row], threads: i32) {
    println!("| projection ({threads} threads, k = {K}) | trustworthiness ours / theirs | kNN overlap ours / theirs | time ours / theirs | goals (quality ≥ {GOAL_QUALITY}×, time ≤ {GOAL_TIME}×) |");
    println!("|---|---:|---:|---:|---|");
    for r in rows {
        let (t, o, s) = (r.ours.0 / r.theirs.0, r.ours.1 / r.theirs.1, r.ours.2 / r.theirs.2);
        println!(
            "| {} {} | {:.4} / {:.4} ({t:.3}×) | {:.4} / {:.4} ({o:.3}×) | {:.2} s / {:.2} s ({s:.2}×) | quality {}, time {} |",
            r.dataset,
            r.method,
            r.ours.0,
            r.theirs.0,
            r.ours.1,
            r.theirs.1,
            r.ours.2,
            r.theirs.2,
            verdict(t >= GOAL_QUALITY && o >= GOAL_QUALITY),
            verdict(s <= GOAL_TIME)
        );
    }
}
