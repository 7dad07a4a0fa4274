//! Sparse autoencoders against PyTorch (references: `tests/fixtures/make_sae_refs.py`): encode/decode with ties,
//! the public checkpoint formats, training steps with AuxK and dead-latent bookkeeping, the geometric median,
//! recovery of planted features, and steering against the same edit made with a diffusers hook.

mod common;

use common::*;
use sdscope::prelude::*;
use sdscope::sae::{rows_of, FeatureEdit, Sae, SaeFormat, SteerOptions, TrainOptions, Trainer};
use std::collections::HashMap;

fn sae_fixtures() -> std::path::PathBuf {
    fixtures().join("sae")
}

fn load(path: &std::path::Path) -> HashMap<String, Tensor> {
    sdscope::tensor_io::load(path).unwrap().0
}

#[test]
fn encode_and_decode_match_pytorch_ties_included() {
    let dir = sae_fixtures().join("encode");
    let sae = Sae::load(&dir).unwrap();
    assert_eq!((sae.d_in(), sae.num_latents(), sae.k), (48, 192, 8));
    let cases = load(&dir.join("cases.safetensors"));
    let code = sae.encode(&cases["inputs"]).unwrap();
    assert!(code.indices.equal(&cases["indices"]), "indices differ from torch.topk's");
    assert_close("values", &code.values, &cases["values"], 1e-5);
    assert_close("recon", &sae.decode(&code).unwrap(), &cases["recon"], 1e-5);

    // [N, d, h, w]: positions are rows, channels last, rows ordered (item, y, x).
    let rows = rows_of(&cases["inputs_4d"], 48).unwrap();
    let code = sae.encode(&rows).unwrap();
    assert!(code.indices.equal(&cases["indices_4d"]), "4-D indices differ");
    assert_close("values 4d", &code.values, &cases["values_4d"], 1e-5);
    assert_close("recon 4d", &sae.decode(&code).unwrap(), &cases["recon_4d"], 1e-5);
}

#[test]
fn public_formats_load_the_same_sae() {
    let base = sae_fixtures();
    let ours = Sae::load(base.join("encode")).unwrap();
    let x = load(&base.join("encode/cases.safetensors"))["inputs"].shallow_clone();
    let expected = ours.reconstruct(&x).unwrap();
    for (dir, format, hook) in [
        (base.join("saelens"), SaeFormat::SaeLens, "mid_block.attentions[0]"),
        (base.join("sparsify/unet.mid_block.attentions.0"), SaeFormat::Sparsify, "mid_block.attentions[0]"),
    ] {
        let sae = Sae::load(&dir).unwrap();
        assert_eq!(sae.meta.format, format);
        assert_eq!(sae.meta.hook.as_deref(), Some(hook), "{format:?} hook");
        assert_close(&format!("{format:?} recon"), &sae.reconstruct(&x).unwrap(), &expected, 1e-6);
    }
    // Saving in our format and loading again keeps everything.
    let out = scratch("sae-roundtrip").join("sae");
    ours.save(&out).unwrap();
    let again = Sae::load(&out).unwrap();
    assert_close("round trip", &again.reconstruct(&x).unwrap(), &expected, 0.0);
    assert!(again.mean.is_some() && again.std.is_some());
}

#[test]
fn pickled_and_malformed_saes_are_refused_with_a_reason() {
    let base = sae_fixtures();
    let err = Sae::load(base.join("pickle")).unwrap_err().to_string();
    assert!(err.contains("pickle") && err.contains("Converting pickled SAEs"), "{err}");
    let err = Sae::load(base.join("sparsify")).unwrap_err().to_string();
    assert!(err.contains("unet.mid_block.attentions.0"), "a folder of hook points lists them: {err}");
    let err = Sae::load(base.join("nowhere")).unwrap_err().to_string();
    assert!(err.contains("not found"), "{err}");

    let sae = Sae::load(base.join("encode")).unwrap();
    let err = sae.encode(&Tensor::zeros([3, 47], (Kind::Float, Device::Cpu))).unwrap_err().to_string();
    assert!(err.contains("[N, 48]"), "{err}");
    let err = sae.direction(192).unwrap_err().to_string();
    assert!(err.contains("0..192"), "{err}");
}

#[test]
fn training_steps_match_pytorch_autograd() {
    let dir = sae_fixtures().join("train");
    let init = load(&dir.join("init.safetensors"));
    let batches = load(&dir.join("batches.safetensors"))["batches"].shallow_clone();
    let expected = load(&dir.join("expected.safetensors"));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("train.json")).unwrap()).unwrap();
    let mut sae = Sae::init(32, 128, cfg["k"].as_i64().unwrap(), 0).unwrap();
    sae.w_enc = init["W_enc"].shallow_clone();
    sae.b_enc = init["b_lat"].shallow_clone();
    sae.w_dec = init["W_dec"].shallow_clone();
    sae.b_pre = init["b_pre"].shallow_clone();
    let options = TrainOptions {
        latents: 128,
        k: cfg["k"].as_i64().unwrap(),
        auxk: cfg["auxk"].as_i64().unwrap(),
        auxk_coef: cfg["auxk_coef"].as_f64().unwrap(),
        dead_steps_threshold: cfg["dead_steps_threshold"].as_i64(),
        lr: cfg["lr"].as_f64().unwrap(),
        eps: cfg["eps"].as_f64().unwrap(),
        batch: 256,
        progress: false,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(sae, options, cfg["mse_scale"].as_f64().unwrap()).unwrap();
    let (mut losses, mut aux) = (Vec::new(), Vec::new());
    for s in 0..cfg["steps"].as_i64().unwrap() {
        let l = trainer.step(&batches.get(s)).unwrap();
        losses.push(l.loss as f32);
        aux.push(l.aux as f32);
    }
    assert_close("losses", &Tensor::from_slice(&losses), &expected["losses"], 1e-5);
    assert_close("aux losses", &Tensor::from_slice(&aux), &expected["aux_losses"], 1e-5);
    assert!(trainer.state.last_nonzero.equal(&expected["last_nonzero"]), "dead-latent bookkeeping differs");
    let sae = &trainer.sae;
    for (name, ours) in [("W_enc", &sae.w_enc), ("b_lat", &sae.b_enc), ("W_dec", &sae.w_dec), ("b_pre", &sae.b_pre)] {
        assert_close(name, ours, &expected[name], 1e-4);
    }
    // The AuxK term really was active (dead latents with positive pre-activations).
    assert!(Vec::<f32>::try_from(&expected["aux_losses"]).unwrap().iter().any(|&a| a > 0.0));
}

#[test]
fn geometric_median_and_variance_scale_match() {
    let g = load(&sae_fixtures().join("train/geomedian.safetensors"));
    let median = sdscope::sae::geometric_median(&g["points"]).unwrap();
    assert_close("geometric median", &median, &g["median"], 1e-5);
    let scale = sdscope::sae::variance_scale(&g["points"]).unwrap();
    let expected = g["scale"].double_value(&[0]);
    assert!((scale - expected).abs() / expected < 1e-6, "{scale} vs {expected}");
}

/// Synthetic data: each row a sparse positive mix of `m` planted unit directions plus noise.
fn planted(m: i64, d: i64, rows: i64, active: i64, seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let dirs = Tensor::randn([m, d], (Kind::Float, Device::Cpu));
    let dirs = &dirs / dirs.norm_scalaropt_dim(2, [1i64].as_slice(), true);
    let scores = Tensor::rand([rows, m], (Kind::Float, Device::Cpu));
    let (_, picked) = scores.topk(active, 1, true, false);
    let coeffs = Tensor::rand([rows, active], (Kind::Float, Device::Cpu)) * 2.0 + 0.5;
    let z = Tensor::zeros([rows, m], (Kind::Float, Device::Cpu)).scatter(1, &picked, &coeffs);
    let x = z.matmul(&dirs) + Tensor::randn([rows, d], (Kind::Float, Device::Cpu)) * 0.05;
    (x, dirs)
}

fn recovered(sae: &Sae, dirs: &Tensor) -> f64 {
    let cos = dirs.matmul(&sae.w_dec.tr()); // both unit rows
    let best = cos.amax([1i64].as_slice(), false);
    best.gt(0.9).to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
}

#[test]
fn training_recovers_planted_features_and_a_random_sae_does_not() {
    let (m, d, k) = (48, 32, 3);
    let (x, dirs) = planted(m, d, 24_576, k, 7);
    let options = TrainOptions {
        latents: 96,
        k,
        auxk: 32,
        batch: 512,
        lr: 3e-3,
        dead_steps_threshold: Some(40),
        progress: false,
        ..TrainOptions::default()
    };
    let mut sae = Sae::init(d, options.latents, k, 1).unwrap();
    sae.b_pre = sdscope::sae::geometric_median(&x.narrow(0, 0, 4096)).unwrap();
    let random = Sae { mean: None, ..Sae::init(d, options.latents, k, 2).unwrap() };
    let scale = sdscope::sae::variance_scale(&x).unwrap();
    let mut trainer = Trainer::new(sae, options, scale).unwrap();
    for epoch in 0..6 {
        let order = {
            tch::manual_seed(100 + epoch);
            Tensor::randperm(x.size()[0], (Kind::Int64, Device::Cpu))
        };
        let shuffled = x.index_select(0, &order);
        for b in 0..shuffled.size()[0] / 512 {
            trainer.step(&shuffled.narrow(0, b * 512, 512)).unwrap();
        }
    }
    let (sae, _) = trainer.finish().unwrap();
    let ev = |s: &Sae| {
        let r = s.reconstruct(&x).unwrap();
        let centred = &x - x.mean_dim([0i64].as_slice(), true, Kind::Float);
        1.0 - (&x - r).square().sum(Kind::Double).double_value(&[])
            / centred.square().sum(Kind::Double).double_value(&[])
    };
    let (found, explained) = (recovered(&sae, &dirs), ev(&sae));
    assert!(found >= 0.9, "recovered {:.0}% of planted directions", found * 100.0);
    assert!(explained > 0.9, "explained variance {explained:.3}");
    let (found_random, explained_random) = (recovered(&random, &dirs), ev(&random));
    assert!(found_random < 0.5 && explained_random < 0.9, "a random SAE passes: {found_random} {explained_random}");
}

#[test]
fn steering_equals_the_diffusers_hook() {
    let dir = sae_fixtures().join("steer");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let reference = load(&dir.join("case.safetensors"));
    let plain = load(&dir.join("plain.safetensors"));
    let sae = Sae::load(dir.join("sae")).unwrap();
    let pipe = Pipeline::load_with(
        pipeline_dir("sdxl").to_str().unwrap(),
        LoadOptions { progress: false, ..LoadOptions::default() },
    )
    .unwrap();
    let steer = &info["steer"];
    let mask = sdscope::sae::mask_from_png(&dir.join("mask.png")).unwrap();
    let iv = &info["intervention"];
    let options = SteerOptions::new(steer["feature"].as_i64().unwrap(), steer["strength"].as_f64().unwrap())
        .mask(mask)
        .steps(iv["step_start"].as_u64().unwrap() as usize..iv["step_end"].as_u64().unwrap() as usize);
    let mut edits = Interventions::new();
    sae.install(&mut edits, FeatureEdit::Steer(options)).unwrap();
    let request = GenerateRequest::new(info["prompt"].as_str().unwrap())
        .steps(info["steps"].as_u64().unwrap() as usize)
        .guidance(info["guidance"].as_f64().unwrap())
        .seed(info["seed"].as_i64().unwrap())
        .size(64, 64)
        .progress(false);
    let out = pipe.generate_with(&request, &mut edits).unwrap();
    assert_close("steered latents", &out.latents, &reference["latents"], 1e-3);
    let moved = rel_l2(&plain["latents"], &reference["latents"]);
    assert!(moved > 1e-2, "the steering must change the result (moved {moved:.2e})");
    let png = image::open(dir.join("case.png")).unwrap().to_rgb8();
    let ours = out.rgb8().unwrap();
    let ours = Vec::<u8>::try_from(ours.flatten(0, -1)).unwrap();
    let worst = ours.iter().zip(png.as_raw()).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
    assert!(worst <= 2, "PNG differs by {worst} levels");
}
