//! UMAP against umap-learn's references (`tests/fixtures/make_projection_refs.py`): quality on the digits,
//! determinism, errors for bad inputs, and the a/b curve fit.

mod common;

use sdscope::project::{
    find_ab_params, knn_overlap, project, trustworthiness, umap, Method, ProjectOptions, UmapOptions,
};
use tch::{Kind, Tensor};

fn digits() -> (Tensor, serde_json::Value) {
    let dir = common::fixtures().join("projection");
    let (tensors, _) = sdscope::tensor_io::load(&dir.join("digits.safetensors")).unwrap();
    let x = tensors["x"].to_kind(Kind::Double);
    let refs = serde_json::from_str(&std::fs::read_to_string(dir.join("umap_digits.json")).unwrap()).unwrap();
    (x, refs)
}

fn number(v: &serde_json::Value, pointer: &str) -> f64 {
    v.pointer(pointer).and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("{pointer} missing from umap_digits.json"))
}

#[test]
fn digits_quality_matches_umap_learn() {
    let (x, refs) = digits();
    let start = std::time::Instant::now();
    let xy = project(&x, &ProjectOptions { method: Method::Umap, ..Default::default() }).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(xy.size(), [1797, 2]);
    assert_eq!(xy.kind(), Kind::Float);
    let trust = trustworthiness(&x, &xy, 15).unwrap();
    let overlap = knn_overlap(&x, &xy, 15).unwrap();
    let their_trust = number(&refs, "/min_over_seeds/trustworthiness");
    let their_overlap = number(&refs, "/min_over_seeds/knn_overlap");
    let pca_trust = number(&refs, "/baselines/pca/trustworthiness/sklearn");
    let pca_overlap = number(&refs, "/baselines/pca/knn_overlap/stable");
    let their_seconds = number(&refs, "/runs/0/wall_s");
    eprintln!(
        "umap digits: trustworthiness {trust:.6} (umap-learn min {their_trust:.6}, PCA {pca_trust:.6}), \
         kNN overlap {overlap:.6} (umap-learn min {their_overlap:.6}, PCA {pca_overlap:.6}), \
         {seconds:.1} s (umap-learn {their_seconds:.1} s)"
    );
    assert!(trust >= 0.99 * their_trust, "trustworthiness {trust} < 0.99 × umap-learn's {their_trust}");
    assert!(overlap >= 0.99 * their_overlap, "kNN overlap {overlap} < 0.99 × umap-learn's {their_overlap}");
    // a projection that merely looks plausible (PCA, a random linear map) is far below these
    assert!(trust > pca_trust + 0.1, "trustworthiness {trust} is not clearly above PCA's {pca_trust}");
    assert!(overlap > 2.0 * pca_overlap, "kNN overlap {overlap} is not clearly above PCA's {pca_overlap}");
}

#[test]
fn seeds_are_reproducible() {
    let (x, _) = digits();
    let x = x.narrow(0, 0, 300);
    let options = |seed| UmapOptions { seed, n_epochs: Some(100), ..Default::default() };
    let a = umap(&x, &options(0)).unwrap();
    let b = umap(&x, &options(0)).unwrap();
    let c = umap(&x, &options(1)).unwrap();
    assert!(a.equal(&b), "the same seed gave different maps");
    assert!(!a.equal(&c), "different seeds gave the same map");
    assert!(bool::try_from(a.isfinite().all()).unwrap());
}

#[test]
fn bad_inputs_are_errors() {
    let x = Tensor::randn([20, 4], (Kind::Double, tch::Device::Cpu));
    let err = |x: &Tensor, o: UmapOptions| umap(x, &o).expect_err("expected an error").to_string();
    let msg = err(&x, UmapOptions { n_neighbors: 20, ..Default::default() });
    assert!(msg.contains("n_neighbors"), "{msg}");
    assert!(err(&x, UmapOptions { n_neighbors: 1, ..Default::default() }).contains("n_neighbors"));
    let nan = x.copy();
    let _ = nan.get(3).get(1).fill_(f64::NAN);
    assert!(err(&nan, UmapOptions { n_neighbors: 5, ..Default::default() }).contains("NaN"));
    assert!(err(&Tensor::randn([20], (Kind::Double, tch::Device::Cpu)), UmapOptions::default()).contains("shape"));
    assert!(err(&x.narrow(0, 0, 2), UmapOptions { n_neighbors: 2, ..Default::default() }).contains("shape"));
    assert!(err(&x, UmapOptions { n_neighbors: 5, min_dist: 2.0, ..Default::default() }).contains("min_dist"));
    assert!(err(&x, UmapOptions { n_neighbors: 5, min_dist: -0.1, ..Default::default() }).contains("min_dist"));
    assert!(err(&x, UmapOptions { n_neighbors: 5, learning_rate: f64::NAN, ..Default::default() })
        .contains("learning_rate"));
    // the CLI-level entry point too
    let options = ProjectOptions {
        method: Method::Umap,
        umap: UmapOptions { n_neighbors: 50, ..Default::default() },
        ..Default::default()
    };
    assert!(project(&x, &options).is_err());
}

#[test]
fn ab_params_match_umap_learn() {
    // umap-learn 0.5.12 `find_ab_params(spread, min_dist)` (scipy curve_fit)
    for (spread, min_dist, a, b) in [
        (1.0, 0.1, 1.5769434602697652, 0.8950608778515733),
        (1.0, 0.0, 1.93280839734315, 0.7904949732233831),
        (2.0, 0.5, 0.2588787412869628, 1.0574996994409025),
    ] {
        let (ours_a, ours_b) = find_ab_params(spread, min_dist).unwrap();
        assert!(
            (ours_a - a).abs() < 1e-3 && (ours_b - b).abs() < 1e-3,
            "spread {spread} min_dist {min_dist}: ({ours_a}, {ours_b}) vs ({a}, {b})"
        );
    }
    assert!(find_ab_params(1.0, 1.5).is_err());
    assert!(find_ab_params(0.0, 0.0).is_err());
}

#[test]
fn larger_set() {
    // more points than Lanczos steps: the spectral vectors are approximate
    let (x, _) = digits();
    tch::manual_seed(0);
    let x = Tensor::cat(&[&x, &(&x + x.randn_like() * 0.5)], 0);
    let xy = umap(&x, &UmapOptions::default()).unwrap();
    let trust = trustworthiness(&x, &xy, 15).unwrap();
    let overlap = knn_overlap(&x, &xy, 15).unwrap();
    eprintln!(
        "umap digits + jittered copy ({} points): trustworthiness {trust:.6}, kNN overlap {overlap:.6}",
        x.size()[0]
    );
    assert!(trust > 0.97 && overlap > 0.35, "trustworthiness {trust}, kNN overlap {overlap}");
}

#[test]
fn small_and_disconnected_inputs() {
    // three far-apart blobs: the 5-NN graph falls apart, so the layout starts from random positions
    tch::manual_seed(1);
    let centres = Tensor::from_slice(&[0.0f64, 0.0, 100.0, 0.0, 0.0, 100.0]).reshape([3, 1, 2]);
    let x = (Tensor::randn([3, 30, 2], (Kind::Double, tch::Device::Cpu)) + centres).reshape([90, 2]);
    let xy = umap(&x, &UmapOptions { n_neighbors: 5, ..Default::default() }).unwrap();
    assert!(bool::try_from(xy.isfinite().all()).unwrap());
    assert!(trustworthiness(&x, &xy, 5).unwrap() > 0.9);
    let tiny = Tensor::from_slice(&[0.0f64, 1.0, 3.0]).reshape([3, 1]);
    let xy = umap(&tiny, &UmapOptions { n_neighbors: 2, n_epochs: Some(0), ..Default::default() }).unwrap();
    assert_eq!(xy.size(), [3, 2]);
    assert!(bool::try_from(xy.isfinite().all()).unwrap());
}
