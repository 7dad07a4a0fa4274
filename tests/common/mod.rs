//! Shared helpers of the integration tests: where the fixtures are, and how close is close.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// The fixture folder written by `tests/fixtures/make_fixtures.py` (`.ci/run` creates it).
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("SDSCOPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".sdscope/fixtures"));
    assert!(
        dir.join(".complete").is_file(),
        "fixtures not found in {} — run `bash .ci/run` (or `.sdscope/venv/bin/python tests/fixtures/make_fixtures.py DIR` and set SDSCOPE_FIXTURES=DIR)",
        dir.display()
    );
    dir
}

pub fn pipeline_dir(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// `‖a − b‖ / ‖b‖` in float64.
pub fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    let diff = (&a - &b).norm().double_value(&[]);
    let base = b.norm().double_value(&[]);
    if base == 0.0 {
        diff
    } else {
        diff / base
    }
}

pub fn assert_close(what: &str, ours: &Tensor, reference: &Tensor, tol: f64) {
    assert_eq!(ours.size(), reference.size(), "{what}: shape {:?} vs reference {:?}", ours.size(), reference.size());
    let err = rel_l2(ours, reference);
    assert!(err <= tol, "{what}: relative L2 error {err:.3e} > {tol:.0e}");
}

#[derive(Debug, serde::Deserialize)]
pub struct Case {
    pub file: String,
    pub image: String,
    pub prompt: String,
    pub timestep: i64,
    pub seed: i64,
    pub height: i64,
    pub width: i64,
}

pub fn cases(name: &str) -> Vec<Case> {
    let path = pipeline_dir(name).join("reference/cases.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

pub fn reference(name: &str, case: &Case) -> HashMap<String, Tensor> {
    sdscope::tensor_io::load(&pipeline_dir(name).join("reference").join(&case.file)).unwrap().0
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sdscope-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Generation references (`tests/fixtures/make_generation_refs.py`).
#[derive(Debug, serde::Deserialize)]
pub struct Intervention {
    pub position: String,
    pub strength: f64,
    pub step_start: usize,
    pub step_end: usize,
}

#[derive(Debug, serde::Deserialize)]
pub struct GenCase {
    pub id: usize,
    pub model: String,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub steps: usize,
    pub guidance: f64,
    pub seed: i64,
    pub width: i64,
    pub height: i64,
    pub scheduler: Option<String>,
    #[serde(default)]
    pub scheduler_overrides: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub capture: Vec<String>,
    #[serde(default)]
    pub capture_both_halves: bool,
    pub intervention: Option<Intervention>,
}

pub fn generation_dir() -> PathBuf {
    let dir = fixtures().join("generation");
    assert!(dir.join(".complete").is_file(), "generation references missing in {} — run `bash .ci/run`", dir.display());
    dir
}

pub fn gen_cases() -> Vec<GenCase> {
    serde_json::from_str(&std::fs::read_to_string(generation_dir().join("cases.json")).unwrap()).unwrap()
}

/// A PNG as uint8 `[H, W, 3]`.
pub fn load_png(path: &std::path::Path) -> Tensor {
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    Tensor::from_slice(img.as_raw()).reshape([h as i64, w as i64, 3])
}

/// The largest difference in levels between two uint8 pictures of one shape.
pub fn max_level_difference(a: &Tensor, b: &Tensor) -> i64 {
    assert_eq!(a.size(), b.size(), "picture shapes differ");
    (a.to_kind(Kind::Int) - b.to_kind(Kind::Int)).abs().max().int64_value(&[])
}

/// The `sdscope` binary of this build.
pub fn sdscope() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_sdscope"))
}

/// Run a command that must succeed; its stdout.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
