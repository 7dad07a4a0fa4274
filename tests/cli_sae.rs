//! The `sdscope sae` contract end to end on the SDXL fixture: collect block updates, train, encode, eval, top,
//! then steer, ablate and splice in `sdscope generate`; errors exit 1 with a message.

mod common;

use common::*;
use sdscope::sae::{rows_of, Sae};
use std::path::Path;
use std::process::Command;
use tch::{Kind, Tensor};

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "expected exit 1: {}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    err
}

const BLOCK: &str = "mid_block.attentions[0]";

fn collect(dir: &Path) -> std::path::PathBuf {
    let prompts = dir.join("prompts.txt");
    std::fs::write(
        &prompts,
        "a red cube\na photo of a cat\ngreen hills\nan astronaut\na bowl of fruit\na <script>alert(1)</script>\n",
    )
    .unwrap();
    let out = dir.join("collection");
    run_ok(sdscope().args(["collect", "--model", pipeline_dir("sdxl").to_str().unwrap()]).args([
        "--prompts",
        prompts.to_str().unwrap(),
        "--positions",
        &format!("{BLOCK}@update"),
        "--steps",
        "2",
        "--guidance",
        "0",
        "--width",
        "64",
        "--height",
        "64",
        "--keep-images",
        "--shards",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]));
    out
}

#[test]
fn sae_train_encode_eval_top_and_steer() {
    let dir = scratch("cli-sae");
    let collection = collect(&dir);
    let sae_dir = dir.join("sae");
    let flags = ["--latents", "96", "--k", "4", "--auxk", "8", "--batch", "8", "--lr", "1e-3", "--steps", "12"];
    run_ok(
        sdscope()
            .args(["sae", "train", "--data", collection.to_str().unwrap(), "--out", sae_dir.to_str().unwrap()])
            .args(flags),
    );
    let sae = Sae::load(&sae_dir).unwrap();
    assert_eq!((sae.d_in(), sae.num_latents(), sae.k), (64, 96, 4));
    assert_eq!(sae.meta.hook.as_deref(), Some("mid_block.attentions[0]@update"));
    assert!(sae.meta.extra.contains_key("training") && sae.meta.extra.contains_key("eval"));

    // encode: [N, d, h, w] input, rows channel-last; indices int64, values float32 descending, recon [N, d].
    let input = dir.join("x.safetensors");
    let x = Tensor::randn([2, 64, 3, 5], (Kind::Float, tch::Device::Cpu));
    sdscope::tensor_io::save(&input, &[("x".into(), x.shallow_clone())], None).unwrap();
    let encoded = dir.join("codes.safetensors");
    run_ok(
        sdscope()
            .args(["sae", "encode", "--sae", sae_dir.to_str().unwrap(), "--input", input.to_str().unwrap()])
            .args(["--out", encoded.to_str().unwrap()]),
    );
    let (codes, _) = sdscope::tensor_io::load(&encoded).unwrap();
    assert_eq!(codes["indices"].kind(), Kind::Int64);
    assert_eq!(codes["indices"].size(), [30, 4]);
    assert_eq!(codes["values"].size(), [30, 4]);
    assert_eq!(codes["recon"].size(), [30, 64]);
    let diffs = codes["values"].narrow(1, 0, 3) - codes["values"].narrow(1, 1, 3);
    assert!(diffs.min().double_value(&[]) >= 0.0, "values must be descending");
    let expected = sae.reconstruct(&rows_of(&x, 64).unwrap()).unwrap();
    assert_close("recon", &codes["recon"], &expected, 1e-6);

    // eval --json: the contract's keys.
    let json = run_ok(sdscope().args([
        "sae",
        "eval",
        "--sae",
        sae_dir.to_str().unwrap(),
        "--data",
        collection.to_str().unwrap(),
        "--json",
    ]));
    let m: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    for key in ["explained_variance", "nmse", "l0", "dead_fraction", "l2_ratio"] {
        assert!(m[key].is_number(), "eval --json lacks {key}: {json}");
    }
    assert!((m["l0"].as_f64().unwrap() - 4.0).abs() < 1e-9 || m["l0"].as_f64().unwrap() < 4.0);

    // top --html: files beside each other, captions escaped.
    let top = dir.join("top");
    run_ok(
        sdscope()
            .args(["sae", "top", "--sae", sae_dir.to_str().unwrap(), "--data", collection.to_str().unwrap()])
            .args(["--per-feature", "3", "--out", top.to_str().unwrap(), "--html"]),
    );
    let loaded = sdscope::sae::TopItems::load(&top).unwrap();
    assert_eq!(loaded.items.size(), [3, 96]);
    let html = std::fs::read_to_string(top.join("index.html")).unwrap();
    assert!(html.contains("feature ") && html.contains("data:image/png;base64"));
    assert!(!html.contains("<script>alert"), "captions must be escaped");

    // generate: steering and ablation change the picture; a splice reports how far the latents moved.
    let gen = |extra: &[&str], out: &Path| {
        let mut cmd = sdscope();
        cmd.args(["generate", "--model", pipeline_dir("sdxl").to_str().unwrap(), "--prompt", "a photo of a cat"])
            .args(["--steps", "2", "--guidance", "5", "--width", "64", "--height", "64", "--latents-out"])
            .arg(out.with_extension("safetensors"))
            .args(["--out", out.to_str().unwrap()])
            .args(extra);
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let latents =
            sdscope::tensor_io::load(&out.with_extension("safetensors")).unwrap().0.remove("latents").unwrap();
        (latents, String::from_utf8(o.stderr).unwrap())
    };
    let (plain, _) = gen(&[], &dir.join("plain.png"));
    let frequent = loaded.fire_count.argmax(0, false).int64_value(&[]).to_string();
    let mask = fixtures().join("sae/steer/mask.png");
    let sae_arg = sae_dir.to_str().unwrap();
    let (steered, _) = gen(
        &[
            "--sae",
            sae_arg,
            "--feature",
            &frequent,
            "--strength",
            "8",
            "--mask",
            mask.to_str().unwrap(),
            "--feature-steps",
            "0..1",
        ],
        &dir.join("steered.png"),
    );
    assert!(rel_l2(&steered, &plain) > 1e-4, "steering changed nothing");
    let (_, log) = gen(&["--sae", sae_arg, "--feature-mode", "splice"], &dir.join("spliced.png"));
    assert!(log.contains("moved the final latents by"), "{log}");

    // Errors: exit 1 with a message, before any work.
    let err =
        run_err(sdscope().args(["sae", "encode", "--sae", fixtures().join("sae/pickle").to_str().unwrap()]).args([
            "--input",
            input.to_str().unwrap(),
            "--out",
            dir.join("e.safetensors").to_str().unwrap(),
        ]));
    assert!(err.contains("pickle"), "{err}");
    let err = run_err(
        sdscope()
            .args(["sae", "encode", "--sae", sae_arg, "--input", input.to_str().unwrap(), "--key", "nope", "--out"])
            .arg(dir.join("e.safetensors")),
    );
    assert!(err.contains("nope"), "{err}");
    let err = run_err(sdscope().args([
        "sae",
        "eval",
        "--sae",
        sae_arg,
        "--data",
        collection.to_str().unwrap(),
        "--position",
        "mid_block",
    ]));
    assert!(err.contains("mid_block.attentions[0]@update"), "valid positions listed: {err}");
    let err = run_err(
        sdscope()
            .args(["generate", "--model", pipeline_dir("sdxl").to_str().unwrap(), "--prompt", "x", "--out"])
            .arg(dir.join("e.png"))
            .args(["--sae", sae_arg, "--feature", "96", "--strength", "1"]),
    );
    assert!(err.contains("0..96"), "{err}");
    let err = run_err(
        sdscope()
            .args(["generate", "--model", pipeline_dir("sdxl").to_str().unwrap(), "--prompt", "", "--out"])
            .arg(dir.join("e.png"))
            .args(["--sae", sae_arg, "--feature", "3", "--feature-mode", "icon", "--feature-steps", "0..1"]),
    );
    assert!(err.contains("--feature-steps") && err.contains("steer only"), "steer-only flags are refused: {err}");
    std::fs::remove_dir_all(&dir).ok();
}
