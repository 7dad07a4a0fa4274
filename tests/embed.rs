//! CLIP embeddings against transformers (references: `tests/fixtures/make_clip_refs.py`): the Pillow-based
//! `CLIPImageProcessor` byte for byte (alpha composited onto white, bicubic resize, centre crop), image features
//! of quick_gelu / gelu towers with patch sizes 8 and 4, text features, and a vision-only checkpoint.

mod common;

use common::*;
use sdscope::embed::processor::load_rgb;
use sdscope::embed::ClipModel;
use std::collections::HashMap;
use tch::{Kind, Tensor};

fn clip_dir() -> std::path::PathBuf {
    fixtures().join("clip")
}

fn cases() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(clip_dir().join("cases.json")).unwrap()).unwrap()
}

fn refs(model: &str) -> HashMap<String, Tensor> {
    sdscope::tensor_io::load(&clip_dir().join(model).join("refs.safetensors")).unwrap().0
}

fn image_paths() -> Vec<(String, std::path::PathBuf)> {
    cases()["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap().to_string(), fixtures().join(i["path"].as_str().unwrap())))
        .collect()
}

fn rgb_tensor(img: &image::RgbImage) -> Tensor {
    Tensor::from_slice(img.as_raw()).reshape([img.height() as i64, img.width() as i64, 3])
}

#[test]
fn preprocessing_is_byte_exact() {
    for model in ["quick_gelu_p8", "gelu_p4", "vision_only"] {
        let clip = ClipModel::load(clip_dir().join(model).to_str().unwrap()).unwrap();
        let r = refs(model);
        for (name, path) in image_paths() {
            let rgb = load_rgb(&path).unwrap();
            assert!(rgb_tensor(&rgb).equal(&r[&format!("rgb/{name}")]), "{model} {name}: RGB conversion differs");
            let resized = clip.processor.resize(&rgb);
            let expected = &r[&format!("resized/{name}")];
            assert_eq!(rgb_tensor(&resized).size(), expected.size(), "{model} {name}: resized size");
            let diff =
                (rgb_tensor(&resized).to_kind(Kind::Int) - expected.to_kind(Kind::Int)).abs().max().int64_value(&[]);
            assert_eq!(diff, 0, "{model} {name}: bicubic resize differs by {diff} levels");
            let pixels = clip.processor.finish(&resized).unwrap();
            assert_close(&format!("{model} {name} pixel_values"), &pixels, &r[&format!("pixel_values/{name}")], 1e-6);
        }
    }
}

#[test]
fn image_and_text_features_match_transformers() {
    for model in ["quick_gelu_p8", "gelu_p4", "vision_only"] {
        let clip = ClipModel::load(clip_dir().join(model).to_str().unwrap()).unwrap();
        let r = refs(model);
        let images = image_paths();
        let paths: Vec<_> = images.iter().map(|(_, p)| p.clone()).collect();
        let embeds = clip.image_embeds(&paths, 3, false).unwrap();
        for (i, (name, _)) in images.iter().enumerate() {
            assert_close(
                &format!("{model} {name} image_embeds"),
                &embeds.get(i as i64),
                &r[&format!("image_embeds/{name}")],
                1e-4,
            );
        }
        if model == "vision_only" {
            assert!(clip.text.is_none());
            let err = clip.text_embeds(&["a cat"]).unwrap_err().to_string();
            assert!(err.contains("no text tower"), "{err}");
            continue;
        }
        let prompts: Vec<String> =
            cases()["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
        let prompts: Vec<&str> = prompts.iter().map(|s| s.as_str()).collect();
        let ids: Vec<i64> = prompts.iter().flat_map(|p| clip.tokenize(p).unwrap()).collect();
        assert!(
            Tensor::from_slice(&ids).reshape([prompts.len() as i64, -1]).equal(&r["text/input_ids"]),
            "{model}: ids"
        );
        let texts = clip.text_embeds(&prompts).unwrap();
        assert_close(&format!("{model} text_embeds"), &texts, &r["text/text_embeds"], 1e-4);
    }
}

#[test]
fn clip_errors_are_typed() {
    let err = ClipModel::load("no-such-clip").err().unwrap().to_string();
    assert!(err.contains("clip-vit-base-patch32"), "unknown names list the aliases: {err}");
    let clip = ClipModel::load(clip_dir().join("quick_gelu_p8").to_str().unwrap()).unwrap();
    let err =
        clip.embed_pixels(&Tensor::zeros([1, 3, 31, 32], (Kind::Float, tch::Device::Cpu))).unwrap_err().to_string();
    assert!(err.contains("[B, 3, 32, 32]"), "{err}");
    let err = clip.image_embeds(&[fixtures().join("nope.png")], 1, false).unwrap_err().to_string();
    assert!(err.contains("nope.png"), "{err}");
}

#[test]
fn embed_cli_contract() {
    let dir = scratch("embed-cli");
    let out = dir.join("clip.safetensors");
    let model = clip_dir().join("quick_gelu_p8");
    let images = [fixtures().join("images/square.png"), fixtures().join("images/odd.png")];
    let list = images.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",");
    run_ok(
        sdscope()
            .args(["embed", "--model", model.to_str().unwrap(), "--images", &list])
            .args(["--text", "a cat,a dog", "--out"])
            .arg(&out),
    );
    let (t, _) = sdscope::tensor_io::load(&out).unwrap();
    let clip = ClipModel::load(model.to_str().unwrap()).unwrap();
    assert_close(
        "image_embeds in the given order",
        &t["image_embeds"],
        &clip.image_embeds(&images, 8, false).unwrap(),
        1e-6,
    );
    assert_close("text_embeds", &t["text_embeds"], &clip.text_embeds(&["a cat", "a dog"]).unwrap(), 1e-6);

    // --dir: sorted paths.
    run_ok(
        sdscope()
            .args(["embed", "--model", model.to_str().unwrap(), "--dir"])
            .arg(clip_dir().join("images"))
            .arg("--out")
            .arg(&out),
    );
    let (t, _) = sdscope::tensor_io::load(&out).unwrap();
    let sorted = [clip_dir().join("images/big.png"), clip_dir().join("images/small.png")];
    assert_close("--dir order", &t["image_embeds"], &clip.image_embeds(&sorted, 8, false).unwrap(), 1e-6);

    // A Stable Diffusion model embeds at U-Net positions: spatial means, concatenated.
    run_ok(
        sdscope()
            .args(["embed", "--model", pipeline_dir("sd1").to_str().unwrap(), "--images", &list])
            .args(["--position", "mid_block,up_blocks[0]", "--out"])
            .arg(&out),
    );
    let (t, _) = sdscope::tensor_io::load(&out).unwrap();
    let pipe = sdscope::pipeline::Pipeline::load_with(
        pipeline_dir("sd1").to_str().unwrap(),
        sdscope::pipeline::LoadOptions { progress: false, ..Default::default() },
    )
    .unwrap();
    let request =
        sdscope::extract::ExtractRequest::new(["mid_block", "up_blocks[0]"]).timestep(50).seed(42).progress(false);
    let reprs = pipe.extract(&request, &[&images[1]]).unwrap().spatial_mean().unwrap();
    let expected = Tensor::cat(
        &[reprs.image("mid_block", 0).unwrap().flatten(0, -1), reprs.image("up_blocks[0]", 0).unwrap().flatten(0, -1)],
        0,
    );
    assert_close("U-Net embedding", &t["image_embeds"].get(1), &expected, 1e-6);

    let out_err = sdscope()
        .args(["embed", "--model", model.to_str().unwrap(), "--images", &list, "--position", "mid_block", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(out_err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out_err.stderr).contains("Stable Diffusion model"));
    std::fs::remove_dir_all(&dir).ok();
}
