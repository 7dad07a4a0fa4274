//! The CLI contract, unchanged, on an SD3 model: `positions`, `tokens --json` (three tokenizers), `extract`
//! (keys as given, `@text`, `@update`), `generate`, `xattn` (CLIP / T5 segments), `similarity`, and `--no-t5`.

mod common;

use common::*;
use std::collections::HashMap;

fn sd3_dir() -> std::path::PathBuf {
    fixtures().join("mmdit/sd3")
}

fn case0() -> (serde_json::Value, HashMap<String, tch::Tensor>) {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sd3_dir().join("reference/cases.json")).unwrap()).unwrap();
    let case = cases[0].clone();
    let r = sdscope::tensor_io::load(&sd3_dir().join("reference").join(case["file"].as_str().unwrap())).unwrap().0;
    (case, r)
}

#[test]
fn sd3_positions_list_every_module_with_shapes() {
    let out = run_ok(sdscope().args(["positions", "--model", sd3_dir().to_str().unwrap(), "--size", "64"]));
    let lines: Vec<(&str, &str)> = out.lines().map(|l| l.split_once('\t').expect("path<TAB>shape")).collect();
    let (_, r) = case0();
    for (path, shape) in &lines {
        let reference = r.get(&format!("pos/{path}")).unwrap_or_else(|| panic!("diffusers has no `{path}`"));
        assert_eq!(*shape, format!("{:?}", &reference.size()[1..]), "{path}");
    }
    for p in
        ["pos_embed", "transformer_blocks[0]", "transformer_blocks[1]@text", "transformer_blocks[2].attn", "proj_out"]
    {
        assert!(lines.iter().any(|(path, _)| path == &p), "missing {p}");
    }
    let bad = sdscope().args(["positions", "--model", sd3_dir().to_str().unwrap(), "--size", "72"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("multiple of 16"));
}

#[test]
fn sd3_tokens_json_has_all_three_tokenizers() {
    let prompts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sd3_dir().join("reference/prompts.json")).unwrap()).unwrap();
    for p in prompts.as_array().unwrap() {
        let text = p["prompt"].as_str().unwrap();
        let out =
            run_ok(sdscope().args(["tokens", "--model", sd3_dir().to_str().unwrap(), "--prompt", text, "--json"]));
        let got: serde_json::Value = serde_json::from_str(&out).unwrap();
        let got = got.as_array().unwrap();
        assert_eq!(got.len(), 3, "CLIP-L, CLIP-G, T5");
        assert_eq!(got[0]["ids"], p["clip_ids"], "{text:?}");
        assert_eq!(got[1]["ids"], p["clip_2_ids"], "{text:?}");
        assert_eq!(got[2]["ids"], p["t5_ids"], "{text:?}");
    }
}

#[test]
fn sd3_extract_keys_positions_as_given() {
    let (case, r) = case0();
    let out = scratch("cli-sd3-extract").join("reprs.safetensors");
    let given = [
        "transformer_blocks.1",
        "transformer_blocks[0]@text",
        "transformer_blocks[2].attn",
        "transformer_blocks[1]@update",
    ];
    let image = fixtures().join("images").join(case["image"].as_str().unwrap());
    run_ok(
        sdscope().args(["extract", "--model", sd3_dir().to_str().unwrap(), "--image", image.to_str().unwrap()]).args([
            "--positions",
            &given.join(","),
            "--timestep",
            &case["t"].to_string(),
            "--seed",
            &case["seed"].to_string(),
            "--prompt",
            case["prompt"].as_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]),
    );
    let (tensors, _) = sdscope::tensor_io::load(&out).unwrap();
    assert_eq!(tensors.len(), given.len());
    for (key, canonical) in given[..3].iter().zip(["transformer_blocks[1]", given[1], given[2]]) {
        assert_close(key, &tensors[*key], &r[&format!("pos/{canonical}")].get(0), 1e-4);
    }
    // The block's update: its image stream out − in (block 0's output is block 1's input).
    let update = r["pos/transformer_blocks[1]"].get(0) - r["pos/transformer_blocks[0]"].get(0);
    assert_close("transformer_blocks[1]@update", &tensors[given[3]], &update, 1e-4);
    assert_eq!(tensors[given[1]].size(), [333, 32], "text stream [tokens, C]");
    assert_eq!(tensors[given[0]].size(), [32, 4, 4], "image stream [C, H/16, W/16]");
}

#[test]
fn sd3_generate_and_xattn_and_no_t5() {
    let gen_dir = fixtures().join("mmdit/generation");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gen_dir.join("cases.json")).unwrap()).unwrap();
    let case = cases
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["negative_prompt"].is_string())
        .expect("a case with a negative prompt");
    let id = case["id"].as_u64().unwrap();
    let r = sdscope::tensor_io::load(&gen_dir.join(format!("case_{id}.safetensors"))).unwrap().0;
    let tmp = scratch("cli-sd3-generate");
    let (png, latents) = (tmp.join("out.png"), tmp.join("latents.safetensors"));
    let out = sdscope()
        .args(["generate", "--model", sd3_dir().to_str().unwrap(), "--prompt", case["prompt"].as_str().unwrap()])
        .args(["--negative-prompt", case["negative_prompt"].as_str().unwrap()])
        .args(["--steps", &case["steps"].to_string(), "--guidance", &case["guidance"].to_string()])
        .args(["--seed", &case["seed"].to_string(), "--width", &case["width"].to_string()])
        .args(["--height", &case["height"].to_string(), "--out", png.to_str().unwrap()])
        .args(["--latents-out", latents.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (saved, _) = sdscope::tensor_io::load(&latents).unwrap();
    assert_close("latents", &saved["latents"], &r["latents"], 1e-3);
    let ours = image::open(&png).unwrap().to_rgb8();
    let theirs = image::open(gen_dir.join(format!("case_{id}.png"))).unwrap().to_rgb8();
    let max_diff = ours.as_raw().iter().zip(theirs.as_raw()).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
    assert!(max_diff <= 2, "PNG differs by {max_diff} levels");

    // xattn: [333, h, w] per joint layer; a word from the T5 part; a T5 index is valid.
    let (case0, r0) = case0();
    let image = fixtures().join("images").join(case0["image"].as_str().unwrap());
    let maps = tmp.join("maps.safetensors");
    let heat = tmp.join("cat_t5.png");
    let out = sdscope()
        .args(["xattn", "--model", sd3_dir().to_str().unwrap(), "--image", image.to_str().unwrap()])
        .args(["--prompt", case0["prompt"].as_str().unwrap(), "--timestep", &case0["t"].to_string()])
        .args(["--seed", &case0["seed"].to_string(), "--out", maps.to_str().unwrap()])
        .args(["--word", "cat", "--segment", "t5", "--png", heat.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (layers, _) = sdscope::tensor_io::load(&maps).unwrap();
    assert_eq!(layers.len(), 3);
    let reference = r0["attn/transformer_blocks[1].attn"]
        .mean_dim(1, false, tch::Kind::Float)
        .get(0)
        .transpose(0, 1)
        .reshape([333, 4, 4]);
    assert_close("xattn transformer_blocks[1].attn", &layers["transformer_blocks[1].attn"], &reference, 1e-4);
    assert!(heat.is_file());

    // --no-t5: the T5 part of the text is zeros, as diffusers without text_encoder_3.
    let no_t5 = tmp.join("no_t5.safetensors");
    run_ok(
        sdscope()
            .args(["--no-t5", "extract", "--model", sd3_dir().to_str().unwrap(), "--image", image.to_str().unwrap()])
            .args([
                "--positions",
                "context_embedder",
                "--prompt",
                "a photo of a cat",
                "--out",
                no_t5.to_str().unwrap(),
            ]),
    );
    let with_t5 = tmp.join("with_t5.safetensors");
    run_ok(
        sdscope().args(["extract", "--model", sd3_dir().to_str().unwrap(), "--image", image.to_str().unwrap()]).args([
            "--positions",
            "context_embedder",
            "--prompt",
            "a photo of a cat",
            "--out",
            with_t5.to_str().unwrap(),
        ]),
    );
    let a = &sdscope::tensor_io::load(&no_t5).unwrap().0["context_embedder"];
    let b = &sdscope::tensor_io::load(&with_t5).unwrap().0["context_embedder"];
    assert_close("CLIP part unchanged", &a.narrow(0, 0, 77), &b.narrow(0, 0, 77), 1e-6);
    // Zero T5 states go through the context embedder as its bias alone: every T5 row is the same.
    let t5_rows = a.narrow(0, 77, 256);
    assert_close("T5 part constant", &t5_rows, &t5_rows.get(0).unsqueeze(0).expand([256, -1], false), 1e-6);
    assert!(rel_l2(&b.narrow(0, 77, 256), &t5_rows) > 1e-2, "with T5 the rows differ");
    let bad = sdscope().args(["--t5-dtype", "int8", "positions", "--model", "x"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("bf16"));
}

/// `collect` on SD3: block updates and a text stream per step, item k equal to generating its prompt with seed k
/// and capturing the same positions; the manifest hashes the transformer and the T5 files.
#[test]
fn sd3_collect_matches_generation_captures() {
    use sdscope::generate::GenerateRequest;
    let tmp = scratch("cli-sd3-collect");
    let prompts = tmp.join("prompts.txt");
    std::fs::write(&prompts, "a cat\na dog on the beach\n").unwrap();
    let out = tmp.join("collection");
    let positions = ["transformer_blocks[1]@update", "transformer_blocks[0]@text"];
    run_ok(
        sdscope()
            .args(["collect", "--model", sd3_dir().to_str().unwrap(), "--prompts", prompts.to_str().unwrap()])
            .args([
                "--positions",
                &positions.join(","),
                "--steps",
                "2",
                "--guidance",
                "0",
                "--width",
                "64",
                "--height",
                "64",
                "--quiet",
                "--out",
                out.to_str().unwrap(),
            ]),
    );
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(
        manifest.contains("transformer/diffusion_pytorch_model.safetensors") && manifest.contains("text_encoder_3/")
    );
    let pipe = sdscope::pipeline::Pipeline::load_with(
        sd3_dir().to_str().unwrap(),
        sdscope::pipeline::LoadOptions { progress: false, ..Default::default() },
    )
    .unwrap();
    for p in positions {
        let (saved, _) =
            sdscope::tensor_io::load(&out.join("shard-00000-of-00001").join(format!("{p}.safetensors"))).unwrap();
        let x = &saved["x"]; // [items, steps, ...]
        for (k, prompt) in ["a cat", "a dog on the beach"].iter().enumerate() {
            let request = GenerateRequest::new(*prompt)
                .steps(2)
                .guidance(0.0)
                .seed(k as i64)
                .size(64, 64)
                .capture(vec![p.to_string()])
                .progress(false);
            let generated = pipe.generate(&request).unwrap();
            let ours = generated.representations.unwrap();
            assert_close(&format!("{p} item {k}"), &x.get(k as i64), ours.image(p, 0).unwrap(), 1e-5);
        }
    }
}

/// `similarity` and `explorer` on SD3: maps on each image's patch grid, the explorer's default position the middle
/// joint block.
#[test]
fn sd3_similarity_and_explorer() {
    let tmp = scratch("cli-sd3-similarity");
    let images = fixtures().join("images");
    let list = format!("{},{}", images.join("square.png").display(), images.join("wide.png").display());
    let maps = tmp.join("maps.safetensors");
    run_ok(sdscope().args(["similarity", "--model", sd3_dir().to_str().unwrap(), "--images", &list]).args([
        "--position",
        "transformer_blocks[1]",
        "--query",
        "1:2,3",
        "--out",
        maps.to_str().unwrap(),
    ]));
    let (saved, _) = sdscope::tensor_io::load(&maps).unwrap();
    assert_eq!(saved["0"].size(), [4, 4]);
    assert_eq!(saved["1"].size(), [4, 6]);
    assert!((saved["1"].double_value(&[2, 3]) - 1.0).abs() < 1e-5, "the query token is most similar to itself");
    let html = tmp.join("explorer.html");
    let out = sdscope()
        .args(["explorer", "--model", sd3_dir().to_str().unwrap(), "--images", &list, "--html", html.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("transformer_blocks[1]"), "3 blocks: the default is block 1");
}
