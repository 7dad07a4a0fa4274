//! The CLI contract: `positions`, `tokens --json`, `extract`, and errors on stderr with a non-zero exit.

mod common;

use common::*;

#[test]
fn positions_lists_every_module_with_shapes() {
    let dir = pipeline_dir("sdxl");
    let out = run_ok(sdscope().args(["positions", "--model", dir.to_str().unwrap(), "--size", "64"]));
    let lines: Vec<(&str, &str)> = out.lines().map(|l| l.split_once('\t').expect("path<TAB>shape")).collect();
    let case = cases("sdxl").into_iter().find(|c| c.height == 64 && c.width == 64).unwrap();
    let r = reference("sdxl", &case);
    assert!(lines.len() > 100);
    for (path, shape) in &lines {
        let reference = r.get(&format!("pos/{path}")).unwrap_or_else(|| panic!("diffusers has no `{path}`"));
        let dims = &reference.size()[1..];
        // add_time_proj's batch axis is the six time ids; everything else has batch 1 first.
        if *path != "add_time_proj" {
            assert_eq!(*shape, format!("{dims:?}"), "{path}");
        }
    }
    for p in ["conv_in", "down_blocks[0]", "mid_block", "up_blocks[1]", "conv_out"] {
        assert!(lines.iter().any(|(path, _)| path == &p), "missing {p}");
    }
}

#[test]
fn tokens_json_matches_transformers() {
    let dir = pipeline_dir("sdxl");
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference/tokens.json")).unwrap()).unwrap();
    for i in [1usize, 5, 12] {
        let text = refs["tokenizer"][i]["text"].as_str().unwrap();
        let out = run_ok(sdscope().args(["tokens", "--model", dir.to_str().unwrap(), "--prompt", text, "--json"]));
        let got: serde_json::Value = serde_json::from_str(&out).unwrap();
        let got = got.as_array().unwrap();
        assert_eq!(got.len(), 2, "one object per tokenizer");
        for (k, name) in ["tokenizer", "tokenizer_2"].iter().enumerate() {
            let expected = &refs[*name][i];
            assert_eq!(expected["text"].as_str().unwrap(), text);
            assert_eq!(got[k]["ids"], expected["ids"], "{name} on {text:?}");
            assert_eq!(got[k]["tokens"].as_array().unwrap().len(), 77);
        }
    }
}

#[test]
fn extract_writes_positions_keyed_as_given() {
    let name = "sd2";
    let case = cases(name).into_iter().find(|c| c.width != c.height).expect("a non-square case");
    let r = reference(name, &case);
    let out = scratch("cli-extract").join("reprs.safetensors");
    let given = ["mid_block", "up_blocks.1", "down_blocks[1].attentions[0].transformer_blocks[0].attn2"];
    run_ok(sdscope().args([
        "extract",
        "--model",
        pipeline_dir(name).to_str().unwrap(),
        "--image",
        fixtures().join("images").join(&case.image).to_str().unwrap(),
        "--positions",
        &given.join(","),
        "--timestep",
        &case.timestep.to_string(),
        "--seed",
        &case.seed.to_string(),
        "--prompt",
        &case.prompt,
        "--out",
        out.to_str().unwrap(),
    ]));
    let (tensors, _) = sdscope::tensor_io::load(&out).unwrap();
    assert_eq!(tensors.len(), given.len());
    for (key, canonical) in given.iter().zip(["mid_block", "up_blocks[1]", given[2]]) {
        let ours = &tensors[*key];
        assert_eq!(ours.kind(), tch::Kind::Float);
        assert_close(key, ours, &r[&format!("pos/{canonical}")].get(0), 1e-4);
    }
}

#[test]
fn errors_go_to_stderr_with_nonzero_exit() {
    let hf_home = scratch("cli-offline");
    let out = sdscope()
        .args(["positions", "--model", "sdxl-turbo"])
        .env("HF_HOME", &hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stabilityai/sdxl-turbo") && stderr.contains("huggingface-cli download"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = sdscope().args(["positions", "--model", "no-such-model"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sdxl-turbo") && stderr.contains("sd1.5"), "lists aliases: {stderr}");

    let out = sdscope()
        .args(["extract", "--model", pipeline_dir("sd1").to_str().unwrap()])
        .args(["--image", fixtures().join("images/square.png").to_str().unwrap()])
        .args(["--positions", "mid_blok", "--out", "/tmp/never.safetensors"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown position `mid_blok`; did you mean:\n  mid_block\n"), "{stderr}");
    assert!(stderr.contains("sdscope positions"), "says how to list them all: {stderr}");
}

/// `generate` against a diffusers reference: the PNG, `--latents-out` (key `latents`, [1, 4, H/8, W/8]) and
/// `--extract … --reprs-out` (per-step captures keyed as given), with one progress line per step.
#[test]
fn generate_writes_png_latents_and_per_step_captures() {
    let dir = generation_dir();
    let cases = gen_cases();
    let case = cases
        .iter()
        .find(|c| {
            c.scheduler_overrides.is_empty()
                && c.intervention.is_none()
                && !c.capture_both_halves
                && !c.capture.is_empty()
                && c.negative_prompt.is_some()
        })
        .or_else(|| {
            cases.iter().find(|c| c.scheduler_overrides.is_empty() && c.intervention.is_none() && !c.capture.is_empty())
        })
        .expect("a plain generation case with captures");
    let r = sdscope::tensor_io::load(&dir.join(format!("case_{}.safetensors", case.id))).unwrap().0;
    let tmp = scratch("cli-generate");
    let (png, latents, reprs) = (tmp.join("out.png"), tmp.join("latents.safetensors"), tmp.join("reprs.safetensors"));
    let mut cmd = sdscope();
    cmd.args(["generate", "--model", pipeline_dir(&case.model).to_str().unwrap(), "--prompt", &case.prompt]);
    if let Some(n) = &case.negative_prompt {
        cmd.args(["--negative-prompt", n]);
    }
    cmd.args(["--steps", &case.steps.to_string(), "--guidance", &case.guidance.to_string()]);
    cmd.args(["--seed", &case.seed.to_string(), "--width", &case.width.to_string()]);
    cmd.args(["--height", &case.height.to_string(), "--out", png.to_str().unwrap()]);
    cmd.args(["--latents-out", latents.to_str().unwrap(), "--extract", &case.capture.join(",")]);
    cmd.args(["--reprs-out", reprs.to_str().unwrap()]);
    if let Some(s) = &case.scheduler {
        cmd.args(["--scheduler", s]);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let step_lines =
        stderr.lines().filter(|l| l.contains("step ") && l.contains(&format!("/{}", r["timesteps"].size()[0]))).count();
    assert_eq!(step_lines as i64, r["timesteps"].size()[0], "one progress line per step:\n{stderr}");

    let (saved, _) = sdscope::tensor_io::load(&latents).unwrap();
    assert_eq!(saved.keys().collect::<Vec<_>>(), vec!["latents"]);
    assert_eq!(saved["latents"].size(), vec![1, 4, case.height / 8, case.width / 8]);
    assert_close("latents", &saved["latents"], &r["latents"], 1e-3);

    let ours = image::open(&png).unwrap().to_rgb8();
    let theirs = image::open(dir.join(format!("case_{}.png", case.id))).unwrap().to_rgb8();
    assert_eq!(ours.dimensions(), (case.width as u32, case.height as u32));
    let max_diff = ours.as_raw().iter().zip(theirs.as_raw()).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
    assert!(max_diff <= 2, "PNG differs by {max_diff} levels");

    let (captures, _) = sdscope::tensor_io::load(&reprs).unwrap();
    assert_eq!(captures.len(), case.capture.len());
    for p in &case.capture {
        assert_close(p, &captures[p], &r[&format!("cap/{p}")], 1e-4);
    }
}

/// Every argument is checked before any work or any write; missing output folders are created and said so.
#[test]
fn arguments_are_checked_before_any_write() {
    let dir = std::env::temp_dir().join(format!("sdscope-cli-checks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let model = pipeline_dir("sd1");
    let image = fixtures().join("images/square.png");
    let xattn = |extra: &[&str], out: &std::path::Path| {
        sdscope()
            .args(["xattn", "--model", model.to_str().unwrap(), "--image", image.to_str().unwrap()])
            .args(["--prompt", "a red hat", "--timestep", "300", "--seed", "1", "--out"])
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = dir.join("layers.safetensors");
    let png = dir.join("map.png");
    for (extra, needle) in [
        (vec!["--tokens", "99", "--png", png.to_str().unwrap()], "--tokens 99"),
        (vec!["--word", "umbrella", "--png", png.to_str().unwrap()], "umbrella"),
    ] {
        let o = xattn(&extra, &out);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(needle), "{extra:?}: {err}");
        assert!(!out.exists() && !png.exists(), "{extra:?} wrote a file before failing");
    }
    // A missing output folder is created, and said.
    let o = xattn(&["--word", "hat", "--png", png.to_str().unwrap()], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("created folder"));
    assert!(out.is_file() && png.is_file());
    // An output that is a folder, a missing input, an out-of-range query: errors before the model is loaded.
    let o = sdscope()
        .args(["extract", "--model", model.to_str().unwrap(), "--image", image.to_str().unwrap()])
        .args(["--positions", "mid_block", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("is a folder"));
    let o = sdscope()
        .args(["similarity", "--model", model.to_str().unwrap(), "--images"])
        .arg(format!("{},{}", image.display(), image.display()))
        .args(["--position", "mid_block", "--query", "5:0,0", "--out"])
        .arg(dir.join("maps.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("out of range") && !err.contains("loaded"), "{err}");
    let o = sdscope()
        .args(["extract", "--model", model.to_str().unwrap(), "--image", "/nonexistent.png"])
        .args(["--positions", "mid_block", "--out"])
        .arg(dir.join("x.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("file not found") && !err.contains("loaded"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
