//! Bad inputs give typed errors with useful messages, never panics; tolerant loading (fp16 variants, legacy
//! VAE names) gives the same numbers.

mod common;

use common::*;
use sdscope::extract::ExtractRequest;
use sdscope::pipeline::{LoadOptions, Pipeline};
use sdscope::weights::Weights;
use sdscope::Error;
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

fn load(dir: &Path) -> sdscope::Result<Pipeline> {
    Pipeline::load_with(dir.to_str().unwrap(), LoadOptions { progress: false, ..Default::default() })
}

/// A copy of a fixture pipeline whose components are symlinks, so one can be replaced.
fn linked_copy(name: &str, tag: &str, replace: &str) -> PathBuf {
    let src = pipeline_dir(name);
    let dst = scratch(tag).join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let target = dst.join(entry.file_name());
        if entry.file_name() == replace {
            std::fs::create_dir_all(&target).unwrap();
            for f in std::fs::read_dir(entry.path()).unwrap() {
                let f = f.unwrap();
                if f.file_name() == "config.json" {
                    std::os::unix::fs::symlink(f.path(), target.join(f.file_name())).unwrap();
                }
            }
        } else {
            std::os::unix::fs::symlink(entry.path(), &target).unwrap();
        }
    }
    dst
}

#[test]
fn unknown_position_lists_valid_ones() {
    let pipe = load(&pipeline_dir("sd1")).unwrap();
    let image = fixtures().join("images/square.png");
    let err = pipe.extract(&ExtractRequest::new(["up_blocks[7]"]).progress(false), &[&image]).unwrap_err();
    match &err {
        Error::UnknownPosition { given, valid } => {
            assert_eq!(given, "up_blocks[7]");
            assert!(valid.iter().any(|v| v == "up_blocks[1]") && valid.iter().any(|v| v == "mid_block"));
        }
        other => panic!("expected UnknownPosition, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("did you mean") && text.contains("up_blocks[1]"), "message suggests the closest: {text}");
    assert!(text.contains("sdscope positions") && text.lines().count() < 10, "a short message: {text}");
    let err = pipe.extract(&ExtractRequest::new(["mid_blok"]).progress(false), &[&image]).unwrap_err().to_string();
    assert_eq!(err.lines().nth(1).map(str::trim), Some("mid_block"), "the closest first: {err}");
    let err = pipe.extract(&ExtractRequest::new(["__import__('os')"]).progress(false), &[&image]).unwrap_err();
    assert!(matches!(err, Error::BadPositionSyntax { .. }), "{err:?}");
}

#[test]
fn bad_timestep_is_rejected() {
    let pipe = load(&pipeline_dir("sd1")).unwrap();
    let image = fixtures().join("images/square.png");
    for t in [-1, 1000, 5000] {
        let err = pipe.extract(&ExtractRequest::new(["mid_block"]).timestep(t).progress(false), &[&image]).unwrap_err();
        assert!(matches!(err, Error::BadTimestep(v, 999) if v == t), "{err:?}");
        assert!(err.to_string().contains("0..=999"));
    }
}

#[test]
fn missing_image_and_model_files() {
    let pipe = load(&pipeline_dir("sd1")).unwrap();
    let err = pipe.extract(&ExtractRequest::new(["mid_block"]).progress(false), &["/nonexistent/cat.png"]).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");

    let dir = linked_copy("sd1", "missing-unet", "unet");
    let err = load(&dir).err().expect("loading without U-Net weights must fail");
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
    assert!(err.to_string().contains("unet"), "{err}");
}

#[test]
fn pickle_weights_are_refused() {
    let dir = linked_copy("sd1", "pickle", "unet");
    std::fs::write(dir.join("unet/diffusion_pytorch_model.bin"), b"\x80\x02}q\x00.").unwrap();
    let err = load(&dir).err().expect("pickle must be refused");
    assert!(matches!(err, Error::PickleRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("arbitrary code"), "{err}");
    let err = Weights::open(&[dir.join("unet/diffusion_pytorch_model.bin")], Kind::Float, Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::PickleRefused { .. }), "{err:?}");
}

#[test]
fn truncated_and_corrupt_safetensors() {
    let src = pipeline_dir("sd1").join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&src).unwrap();
    let dir = scratch("corrupt");

    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1000]).unwrap();
    let err = Weights::open(&[truncated], Kind::Float, Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::BadSafetensors { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");

    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a safetensors file at all").unwrap();
    assert!(matches!(Weights::open(&[garbage], Kind::Float, Device::Cpu), Err(Error::BadSafetensors { .. })));

    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(Weights::open(&[empty], Kind::Float, Device::Cpu), Err(Error::BadSafetensors { .. })));
}

#[test]
fn missing_and_misshaped_tensors_are_named() {
    let path = pipeline_dir("sd1").join("unet/diffusion_pytorch_model.safetensors");
    let w = Weights::open(std::slice::from_ref(&path), Kind::Float, Device::Cpu).unwrap();
    let err = w.get("conv_in.weight", Some(&[7, 7, 3, 3])).unwrap_err();
    match &err {
        Error::ShapeMismatch { name, expected, .. } => {
            assert_eq!(name, "conv_in.weight");
            assert_eq!(expected, &vec![7, 7, 3, 3]);
        }
        other => panic!("{other:?}"),
    }
    let err = w.get("no_such.weight", Some(&[1])).unwrap_err();
    assert!(matches!(err, Error::MissingTensor { .. }), "{err:?}");
    assert!(err.to_string().contains("no_such.weight") && err.to_string().contains("diffusion_pytorch_model"));
}

/// An fp16-only U-Net loads (cast to float32) and stays close to the float32 reference.
#[test]
fn fp16_variant_loads_and_casts() {
    let pipe = load(&pipeline_dir("sd1_fp16")).unwrap();
    let case = &cases("sd1")[0];
    let r = reference("sd1", case);
    let cond = sdscope::pipeline::TextConditioning {
        hidden_states: r["encoder_hidden_states"].shallow_clone(),
        text_embeds: None,
    };
    let out = pipe
        .unet_pass(&r["noisy"], case.timestep, &cond, (case.height, case.width), &mut sdscope::taps::Taps::none())
        .unwrap()
        .unwrap();
    assert_eq!(out.kind(), Kind::Float);
    let err = rel_l2(&out, &r["unet_out"]);
    assert!(err < 1e-2, "fp16 weights drift too far: {err:.2e}");
}

/// A VAE saved with diffusers' legacy attention names (`query/key/value/proj_attn`) gives the same posterior.
#[test]
fn legacy_vae_attention_names() {
    let dir = linked_copy("sd1", "legacy-vae", "vae");
    let (tensors, _) =
        sdscope::tensor_io::load(&pipeline_dir("sd1").join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let renamed: Vec<(String, tch::Tensor)> = tensors
        .into_iter()
        .map(|(k, v)| {
            let k = k
                .replace(".to_q.", ".query.")
                .replace(".to_k.", ".key.")
                .replace(".to_v.", ".value.")
                .replace(".to_out.0.", ".proj_attn.");
            (k, v)
        })
        .collect();
    assert!(renamed.iter().any(|(k, _)| k.contains(".query.")), "fixture VAE has attention weights");
    sdscope::tensor_io::save(&dir.join("vae/diffusion_pytorch_model.safetensors"), &renamed, None).unwrap();
    let pipe = load(&dir).unwrap();
    let case = &cases("sd1")[0];
    let r = reference("sd1", case);
    let image = sdscope::image_io::load_image(&fixtures().join("images").join(&case.image), 8).unwrap();
    let dist = pipe.vae.encode(&image.pixels).unwrap();
    assert_close("legacy-name VAE latent mean", &dist.mean, &r["latent_mean"], 1e-4);
}

#[test]
fn odd_sizes_are_reduced_to_multiples_of_8() {
    let pipe = load(&pipeline_dir("sd1")).unwrap();
    let reprs =
        pipe.extract(&ExtractRequest::new(["conv_in"]).progress(false), &[fixtures().join("images/odd.png")]).unwrap();
    let info = &reprs.images()[0];
    assert_eq!(info.size, (64, 64));
    assert_eq!(info.resized_from, Some((66, 70)));
    assert_eq!(reprs.image("conv_in", 0).unwrap().size(), vec![1, 32, 8, 8]);
}
