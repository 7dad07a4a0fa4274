//! Barnes-Hut t-SNE: its quality on `digits` against scikit-learn's Barnes-Hut TSNE, its gradient against the exact
//! one (angle 0 opens every cell), a 20 000-point map, and typed errors.

mod common;

use common::rel_l2;
use sdscope::project::{
    exact_and_barnes_hut_gradients, knn_overlap, project, trustworthiness, tsne, tsne_barnes_hut, ProjectOptions,
    TsneMethod, TsneOptions,
};
use serde_json::Value;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn digits() -> Tensor {
    let path = common::fixtures().join("projection/digits.safetensors");
    sdscope::tensor_io::load(&path).unwrap().0.remove("x").unwrap()
}

fn reference() -> Value {
    let path = common::fixtures().join("projection/tsne_digits.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn barnes_hut(angle: f64) -> TsneOptions {
    TsneOptions { method: TsneMethod::BarnesHut { angle }, ..Default::default() }
}

/// Our Barnes-Hut t-SNE (scikit-learn's defaults, angle 0.5) keeps neighbourhoods of `digits` at least as well as
/// 0.99 × scikit-learn's Barnes-Hut TSNE over three seeds, and far better than PCA.
#[test]
fn barnes_hut_quality_on_digits() {
    let x = digits();
    let info = reference();
    let theirs_trust = info["min_over_seeds"]["trustworthiness"].as_f64().unwrap();
    let theirs_overlap = info["min_over_seeds"]["knn_overlap"].as_f64().unwrap();
    let pca_trust = info["baselines"]["pca"]["trustworthiness"]["stable"].as_f64().unwrap();
    let start = Instant::now();
    let xy = project(&x, &ProjectOptions { tsne: barnes_hut(0.5), ..Default::default() }).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(xy.size(), [1797, 2]);
    assert_eq!(xy.kind(), Kind::Float);
    let trust = trustworthiness(&x, &xy, 15).unwrap();
    let overlap = knn_overlap(&x, &xy, 15).unwrap();
    eprintln!(
        "Barnes-Hut t-SNE digits: trustworthiness {trust:.4} (sklearn min {theirs_trust:.4}), kNN@15 overlap \
         {overlap:.4} (sklearn min {theirs_overlap:.4}), PCA {pca_trust:.4}; {seconds:.1} s"
    );
    assert!(trust >= 0.99 * theirs_trust, "trustworthiness {trust} < 0.99 × {theirs_trust}");
    assert!(overlap >= 0.99 * theirs_overlap, "kNN overlap {overlap} < 0.99 × {theirs_overlap}");
    assert!(trust > pca_trust + 0.1, "no better than PCA ({pca_trust})");
}

/// With angle 0 every cell is opened down to single points, so the repulsion is the exact one.
#[test]
fn angle_zero_gradient_equals_exact() {
    tch::manual_seed(7);
    let n = 300;
    let raw = Tensor::rand([n, n], (Kind::Double, Device::Cpu));
    let raw = (&raw + raw.tr()) * (Tensor::eye(n, (Kind::Double, Device::Cpu)) * -1.0 + 1.0);
    let p = &raw / raw.sum(Kind::Double);
    for (scale, exaggeration) in [(1e-4, 12.0), (1.0, 12.0), (10.0, 1.0)] {
        let y = Tensor::randn([n, 2], (Kind::Float, Device::Cpu)) * scale;
        let (exact, bh) = exact_and_barnes_hut_gradients(&p, &y, exaggeration, 0.0).unwrap();
        let err = rel_l2(&bh, &exact);
        let (_, approx) = exact_and_barnes_hut_gradients(&p, &y, exaggeration, 0.5).unwrap();
        let approx_err = rel_l2(&approx, &exact);
        eprintln!("scale {scale}: angle 0 rel. error {err:.2e}, angle 0.5 rel. error {approx_err:.2e}");
        assert!(err <= 1e-4, "angle 0: relative error {err:.3e}");
        assert!(approx_err <= 0.05, "angle 0.5: relative error {approx_err:.3e}");
    }
    // Duplicated points share a leaf; they still repel like the exact gradient says.
    let y = Tensor::randn([n, 2], (Kind::Float, Device::Cpu)).narrow(0, 0, n / 2).repeat([2, 1]);
    let (exact, bh) = exact_and_barnes_hut_gradients(&p, &y, 1.0, 0.0).unwrap();
    assert!(rel_l2(&bh, &exact) <= 1e-4, "duplicates: relative error {:.3e}", rel_l2(&bh, &exact));
}

/// When k = n − 1 covers every other point and angle is 0, Barnes-Hut is the exact method up to rounding (which
/// the early, exaggerated iterations amplify: 10 iterations agree to ~1e-5, 30 no longer do).
#[test]
fn full_neighbourhood_run_matches_exact() {
    let x = digits().narrow(0, 0, 40);
    let options = |method| TsneOptions { perplexity: 13.0, max_iter: 10, method, ..Default::default() };
    let exact = tsne(&x, &options(TsneMethod::Exact)).unwrap();
    let bh = tsne(&x, &options(TsneMethod::BarnesHut { angle: 0.0 })).unwrap();
    let err = rel_l2(&bh, &exact);
    eprintln!("40 points, 10 iterations: Barnes-Hut (angle 0) vs exact rel. difference {err:.2e}");
    assert!(err <= 1e-3, "relative difference {err:.3e}");
}

/// kNN (majority of `k`) label accuracy in the 2-D map.
fn knn_label_accuracy(y: &Tensor, labels: &[i64], k: i64) -> f64 {
    let y = y.to_kind(Kind::Double);
    let n = y.size()[0];
    let norms = y.square().sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
    let mut correct = 0;
    for start in (0..n).step_by(1000) {
        let rows = 1000.min(n - start);
        let d = norms.narrow(0, start, rows).unsqueeze(1) + norms.unsqueeze(0)
            - y.narrow(0, start, rows).matmul(&y.tr()) * 2.0;
        let own = Tensor::arange_start(start, start + rows, (Kind::Int64, Device::Cpu)).unsqueeze(1);
        let (_, idx) = d.scatter_value(1, &own, f64::INFINITY).topk(k, 1, false, true);
        let idx = Vec::<i64>::try_from(idx.flatten(0, -1)).unwrap();
        for (r, row) in idx.chunks_exact(k as usize).enumerate() {
            let mut votes = [0usize; 10];
            row.iter().for_each(|&j| votes[labels[j as usize] as usize] += 1);
            let best = (0..10).max_by_key(|&c| votes[c]).unwrap_or(0);
            correct += usize::from(best as i64 == labels[start as usize + r]);
        }
    }
    correct as f64 / n as f64
}

/// 20 000 points in 10 Gaussian clusters (32-D): `Auto` picks Barnes-Hut and the map separates the clusters.
#[test]
fn twenty_thousand_points_separate() {
    tch::manual_seed(0);
    let (n, clusters) = (20_000i64, 10i64);
    let centres = Tensor::randn([clusters, 32], (Kind::Float, Device::Cpu)) * 4.0;
    let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(clusters);
    let x = centres.index_select(0, &labels) + Tensor::randn([n, 32], (Kind::Float, Device::Cpu));
    let labels = Vec::<i64>::try_from(labels).unwrap();
    let start = Instant::now();
    let xy = tsne(&x, &TsneOptions { max_iter: 300, ..Default::default() }).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let accuracy = knn_label_accuracy(&xy, &labels, 10);
    eprintln!("20 000 points, 300 iterations: {seconds:.1} s, 10-NN label accuracy {accuracy:.4}");
    assert_eq!(xy.size(), [n, 2]);
    assert!(accuracy >= 0.95, "10-NN label accuracy {accuracy}");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let x = Tensor::randn([30, 4], (Kind::Float, Device::Cpu));
    for angle in [-0.1, 1.5, f64::NAN] {
        assert!(tsne_barnes_hut(&x, &TsneOptions::default(), angle).is_err(), "angle {angle}");
        assert!(tsne(&x.narrow(0, 0, 20), &barnes_hut(angle)).is_err(), "angle {angle}");
    }
    assert!(tsne_barnes_hut(&x, &TsneOptions::default(), 0.5).is_err(), "perplexity 30 ≥ n");
    let ok = TsneOptions { perplexity: 5.0, max_iter: 10, ..Default::default() };
    assert_eq!(tsne_barnes_hut(&x, &ok, 0.5).unwrap().size(), [30, 2]);
    assert!(tsne_barnes_hut(&x.flatten(0, -1), &ok, 0.5).is_err(), "1-D input");
    assert!(tsne_barnes_hut(&x.narrow(0, 0, 3), &ok, 0.5).is_err(), "fewer than 4 points");
    let with_nan = x.copy();
    let _ = with_nan.get(3).get(1).fill_(f64::NAN);
    assert!(tsne_barnes_hut(&with_nan, &ok, 0.5).is_err(), "NaN input");
    let p = Tensor::ones([30, 30], (Kind::Float, Device::Cpu));
    assert!(exact_and_barnes_hut_gradients(&p, &x, 1.0, 0.0).is_err(), "Y must be [n, 2]");
    assert!(exact_and_barnes_hut_gradients(&p.narrow(0, 0, 29), &x.narrow(1, 0, 2), 1.0, 0.0).is_err());
}

/// Release-build timing of both gradients on `digits`:
/// `cargo test --release --test tsne_bh -- --ignored --nocapture`.
#[test]
#[ignore]
fn digits_timing_exact_vs_barnes_hut() {
    let x = digits();
    for (name, method) in [("exact", TsneMethod::Exact), ("Barnes-Hut", TsneMethod::BarnesHut { angle: 0.5 })] {
        let start = Instant::now();
        let xy = tsne(&x, &TsneOptions { method, ..Default::default() }).unwrap();
        let seconds = start.elapsed().as_secs_f64();
        let trust = trustworthiness(&x, &xy, 15).unwrap();
        eprintln!("{name}: {seconds:.2} s, trustworthiness {trust:.4}");
    }
}
