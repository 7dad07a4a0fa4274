//! 2-D projections against scikit-learn (`tests/fixtures/make_projection_refs.py`): PCA components and
//! transform, trustworthiness on fixed inputs (ties included), and the quality of our t-SNE on `digits`.

mod common;

use common::{assert_close, rel_l2, run_ok, scratch, sdscope};
use sdscope::project::{
    knn_overlap, project, trustworthiness, Method, Metric, Pca, ProjectOptions, TsneMethod, TsneOptions,
};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Kind, Tensor};

fn refs_dir() -> PathBuf {
    let dir = common::fixtures().join("projection");
    assert!(
        dir.join(".complete").is_file(),
        "projection references missing in {} — run `bash .ci/setup fixtures`",
        dir.display()
    );
    dir
}

fn tensors(name: &str) -> HashMap<String, Tensor> {
    sdscope::tensor_io::load(&refs_dir().join(name)).unwrap().0
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(refs_dir().join(name)).unwrap()).unwrap()
}

fn digits() -> Tensor {
    tensors("digits.safetensors").remove("x").unwrap()
}

#[test]
fn pca_matches_sklearn() {
    let t = tensors("pca.safetensors");
    for case in ["digits", "random"] {
        let x = &t[&format!("{case}_x")];
        let fitted = Pca::fit(x, 2).unwrap();
        assert_close(&format!("{case} components"), &fitted.components, &t[&format!("{case}_components")], 1e-5);
        assert_close(&format!("{case} mean"), &fitted.mean, &t[&format!("{case}_mean")], 1e-6);
        assert_close(
            &format!("{case} explained variance"),
            &fitted.explained_variance,
            &t[&format!("{case}_explained_variance")],
            1e-5,
        );
        let projected = project(x, &ProjectOptions { method: Method::Pca, ..Default::default() }).unwrap();
        assert_close(&format!("{case} transform"), &projected, &t[&format!("{case}_transformed")], 1e-5);
    }
}

#[test]
fn trustworthiness_equals_sklearn() {
    let t = tensors("trustworthiness.safetensors");
    let info = json("trustworthiness.json");
    for case in ["a", "b", "c", "d"] {
        let c = &info[case];
        let (x, y) = (&t[&format!("{case}_x")], &t[&format!("{case}_y")]);
        let k = c["k"].as_u64().unwrap() as usize;
        let ours = trustworthiness(x, y, k).unwrap();
        let tw = &c["trustworthiness"];
        let stable = tw["stable"].as_f64().unwrap();
        // Same tie rule as ours (distance, then index): equal up to rounding.
        assert!((ours - stable).abs() < 1e-9, "case {case}: ours {ours} vs stable {stable}");
        let bounds: Vec<f64> = tw["stable_bounds"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(ours >= bounds[0] - 1e-12 && ours <= bounds[1] + 1e-12, "case {case}: {ours} outside {bounds:?}");
        if c["boundary_ties_x"] == 0 && c["boundary_ties_y"] == 0 && case != "c" {
            let sk = tw["sklearn"].as_f64().unwrap();
            assert!((ours - sk).abs() < 1e-6, "case {case}: ours {ours} vs sklearn {sk}");
        }
        let overlap = knn_overlap(x, y, k).unwrap();
        let expected = c["knn_overlap"]["stable"].as_f64().unwrap();
        assert!((overlap - expected).abs() < 1e-12, "case {case}: knn overlap {overlap} vs {expected}");
    }
}

#[test]
fn quality_errors_are_typed() {
    let x = Tensor::randn([10, 4], (Kind::Float, tch::Device::Cpu));
    assert!(trustworthiness(&x, &x.narrow(0, 0, 9), 3).is_err(), "row counts differ");
    assert!(trustworthiness(&x, &x, 5).is_err(), "k must be below n / 2");
    assert!(knn_overlap(&x, &x, 0).is_err());
    assert!(Pca::fit(&x, 4).is_ok());
    assert!(Pca::fit(&x, 5).is_err(), "k above min(n, d)");
    assert!(Pca::fit(&x.flatten(0, -1), 1).is_err());
    let too_high =
        ProjectOptions { tsne: TsneOptions { perplexity: 10.0, ..Default::default() }, ..Default::default() };
    assert!(project(&x, &too_high).is_err(), "perplexity must be below n");
    assert!(Method::parse("mds").is_err());
    let with_nan = x.copy();
    let _ = with_nan.get(3).get(1).fill_(f64::NAN);
    for method in [Method::Pca, Method::Tsne, Method::Umap] {
        let options = ProjectOptions { method, ..Default::default() };
        assert!(project(&with_nan, &options).is_err(), "{method:?} on NaN input");
        assert!(project(&x.flatten(0, -1), &options).is_err(), "{method:?} on a 1-D input");
    }
}

/// Our exact t-SNE (scikit-learn's defaults, seed 0; `tests/tsne_bh.rs` does the same for Barnes-Hut) keeps neighbourhoods of `digits` at least as well as
/// 0.99 × scikit-learn's Barnes-Hut TSNE over three seeds, and far better than the PCA baseline.
#[test]
fn tsne_quality_on_digits() {
    let x = digits();
    let info = json("tsne_digits.json");
    let theirs_trust = info["min_over_seeds"]["trustworthiness"].as_f64().unwrap();
    let theirs_overlap = info["min_over_seeds"]["knn_overlap"].as_f64().unwrap();
    let pca_trust = info["baselines"]["pca"]["trustworthiness"]["stable"].as_f64().unwrap();
    let start = std::time::Instant::now();
    let exact =
        ProjectOptions { tsne: TsneOptions { method: TsneMethod::Exact, ..Default::default() }, ..Default::default() };
    let xy = project(&x, &exact).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(xy.size(), [1797, 2]);
    let trust = trustworthiness(&x, &xy, 15).unwrap();
    let overlap = knn_overlap(&x, &xy, 15).unwrap();
    eprintln!(
        "t-SNE digits: trustworthiness {trust:.4} (sklearn min {theirs_trust:.4}), kNN@15 overlap {overlap:.4} \
         (sklearn min {theirs_overlap:.4}), PCA {pca_trust:.4}; {seconds:.1} s (debug build)"
    );
    assert!(trust >= 0.99 * theirs_trust, "trustworthiness {trust} < 0.99 × {theirs_trust}");
    assert!(overlap >= 0.99 * theirs_overlap, "kNN overlap {overlap} < 0.99 × {theirs_overlap}");
    assert!(trust > pca_trust + 0.1, "no better than PCA ({pca_trust})");

    // Seeded and reproducible: the same options give the same map; a random start differs by seed.
    let small = x.narrow(0, 0, 200);
    let options = |seed| ProjectOptions {
        tsne: TsneOptions { pca_init: false, seed, max_iter: 300, ..Default::default() },
        ..Default::default()
    };
    let a = project(&small, &options(1)).unwrap();
    assert_eq!(rel_l2(&a, &project(&small, &options(1)).unwrap()), 0.0);
    assert!(rel_l2(&a, &project(&small, &options(2)).unwrap()) > 1e-3);
}

#[test]
fn project_cli_contract() {
    let dir = scratch("project-cli");
    let out = dir.join("xy.safetensors");
    let input = refs_dir().join("pca.safetensors");
    let stdout = run_ok(
        sdscope()
            .args(["project", "--input"])
            .arg(&input)
            .args(["--key", "random_x", "--method", "pca", "--metric", "euclidean", "--quality", "--out"])
            .arg(&out),
    );
    let q: Value = serde_json::from_str(stdout.trim()).unwrap();
    let t = tensors("pca.safetensors");
    let xy = sdscope::tensor_io::load(&out).unwrap().0.remove("xy").unwrap();
    assert_eq!(xy.kind(), Kind::Float);
    assert_close("CLI pca", &xy, &t["random_transformed"], 1e-5);
    let expected = trustworthiness(&t["random_x"], &t["random_transformed"], 15).unwrap();
    assert!((q["trustworthiness"].as_f64().unwrap() - expected).abs() < 1e-6, "{q}");
    assert!(q["knn_overlap"].as_f64().is_some() && q.get("cosine").is_none(), "{q}");

    // The default metric is cosine: the map of unit rows, quality also reported by angle.
    let stdout = run_ok(
        sdscope()
            .args(["project", "--input"])
            .arg(&input)
            .args(["--key", "random_x", "--method", "pca", "--quality", "--out"])
            .arg(&out),
    );
    let q: Value = serde_json::from_str(stdout.trim()).unwrap();
    let unit = Metric::Cosine.prepare(&t["random_x"]).unwrap();
    let xy = sdscope::tensor_io::load(&out).unwrap().0.remove("xy").unwrap();
    assert_close("CLI pca, cosine", &xy, &Pca::fit(&unit, 2).unwrap().transform(&unit).unwrap(), 1e-6);
    let by_angle = trustworthiness(&unit, &xy, 15).unwrap();
    assert!((q["cosine"]["trustworthiness"].as_f64().unwrap() - by_angle).abs() < 1e-9, "{q}");

    let missing =
        sdscope().args(["project", "--input"]).arg(&input).args(["--key", "nope", "--out"]).arg(&out).output().unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("random_x"), "the error lists the keys: {err}");
    let _ = std::fs::remove_dir_all(dir);
}
