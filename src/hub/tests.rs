use super::*;

fn scratch(tag: &str) -> PathBuf {
    let nanos = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos();
    let name = format!("sdscope-hub-{tag}-{}-{nanos}", std::process::id());
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Creates the space-separated files under `root`.
fn touch(root: &Path, files: &str) {
    for f in files.split_whitespace() {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }
}

/// A fake cached pipeline with a sharded unet, an fp16-only vae and a plain text encoder.
fn fake_repo(cache: &Path, repo: &str) -> PathBuf {
    let dir = repo_dir(cache, repo);
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::write(dir.join("refs/main"), "abc123\n").unwrap();
    let snap = dir.join("snapshots/abc123");
    touch(
        &snap,
        "unet/config.json unet/u-1.safetensors unet/u-2.safetensors vae/config.json \
        vae/diffusion_pytorch_model.fp16.safetensors text_encoder/config.json text_encoder/model.safetensors \
        tokenizer/vocab.json tokenizer/merges.txt tokenizer/tokenizer_config.json \
        tokenizer/special_tokens_map.json scheduler/scheduler_config.json",
    );
    let shards = r#"{"weight_map": {"a": "u-1.safetensors", "b": "u-2.safetensors", "c": "u-1.safetensors"}}"#;
    std::fs::write(snap.join("unet/diffusion_pytorch_model.safetensors.index.json"), shards).unwrap();
    let index = r#"{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "PNDMScheduler"],
        "safety_checker": [null, null], "feature_extractor": ["transformers", "CLIPImageProcessor"]}"#;
    std::fs::write(snap.join("model_index.json"), index).unwrap();
    snap
}

#[test]
fn aliases_match_loosely() {
    let pairs = [("SD15", "sd1.5"), ("sd-1.5", "sd1.5"), ("SDXL_Turbo", "sdxl-turbo"), ("SD21", "sd2.1")];
    for (given, name) in pairs.into_iter().chain([("sdxl lightning 4step", "sdxl-lightning-4step")]) {
        assert_eq!(find_alias(given).map(|a| a.name), Some(name), "{given}");
    }
    assert_eq!(find_alias("sd2.1-base").unwrap().repo, "stabilityai/stable-diffusion-2-1-base");
    assert!(find_alias("flux").is_none());
    let sd35 = find_alias("SD3.5 Large Turbo").unwrap();
    assert_eq!(
        (sd35.repo, sd35.default_steps, sd35.default_guidance, sd35.family),
        ("stabilityai/stable-diffusion-3.5-large-turbo", 4, 0.0, "sd3")
    );
    assert_eq!(find_alias("sd3").unwrap().repo, find_alias("sd3-medium").unwrap().repo);
    let one = find_alias("sdxl-lightning-1step").unwrap();
    assert_eq!((one.prediction_type, one.timestep_spacing), (Some("sample"), Some("trailing")));
    assert_eq!((one.unet_repo, one.default_steps, one.default_guidance), (Some(LIGHTNING), 1, 0.0));
    assert_eq!(find_alias("sdxl-lightning-8step").unwrap().prediction_type, None);
    let sdxl = find_alias("sdxl").unwrap();
    assert_eq!((sdxl.unet_repo, sdxl.timestep_spacing, sdxl.default_guidance), (None, None, 5.0));
    assert!(is_repo_id("stabilityai/sdxl-turbo") && !is_repo_id("a b/c") && !is_repo_id("sdxl"));
}

#[test]
fn unknown_name_lists_aliases() {
    let cache = scratch("unknown");
    match resolve_in("no such model", &cache, true) {
        Err(Error::UnknownModel { given, known }) => {
            assert_eq!(given, "no such model");
            assert!(known.iter().any(|k| k == "sd1.5") && known.iter().any(|k| k == "sdxl-lightning-8step"));
        }
        other => panic!("expected UnknownModel, got {other:?}"),
    }
    assert!(matches!(resolve_in("./nope/here", &cache, true), Err(Error::MissingFile { .. })));
    std::fs::remove_dir_all(cache).ok();
}

#[test]
fn cached_repo_resolves_offline_to_snapshot() {
    let cache = scratch("cached");
    let snap = fake_repo(&cache, "acme/tiny");
    let src = resolve_in("acme/tiny", &cache, true).unwrap();
    assert_eq!((&src.root, src.repo.as_deref()), (&snap, Some("acme/tiny")));
    assert!(src.alias.is_none() && src.unet_override.is_none());
    let shards = component_weights(&src.root.join("unet")).unwrap();
    assert_eq!(shards, vec![snap.join("unet/u-1.safetensors"), snap.join("unet/u-2.safetensors")]);
    // The snapshot is also a valid local folder; a folder without model_index.json is not.
    let local = resolve_in(snap.to_str().unwrap(), &cache, true).unwrap();
    assert_eq!((local.root, local.repo), (snap.clone(), None));
    assert!(matches!(resolve_in(cache.to_str().unwrap(), &cache, true), Err(Error::MissingFile { .. })));
    std::fs::remove_dir_all(cache).ok();
}

#[test]
fn missing_files_give_model_not_cached() {
    let cache = scratch("missing");
    let snap = fake_repo(&cache, "acme/tiny");
    std::fs::remove_file(snap.join("vae/diffusion_pytorch_model.fp16.safetensors")).unwrap();
    std::fs::remove_file(snap.join("unet/u-2.safetensors")).unwrap();
    match resolve_in("acme/tiny", &cache, true) {
        Err(Error::ModelNotCached { repo, missing, fetch, cache: c, .. }) => {
            assert_eq!((repo.as_str(), c), ("acme/tiny", cache.display().to_string()));
            assert_eq!(missing, ["unet/u-2.safetensors", "vae/diffusion_pytorch_model.safetensors"]);
            assert!(fetch.starts_with("huggingface-cli download acme/tiny --include \"model_index.json\""));
            assert!(fetch.contains("\"unet/*\"") && fetch.contains("\"*.bin\"") && fetch.contains("HF_HOME"));
        }
        other => panic!("expected ModelNotCached, got {other:?}"),
    }
    match resolve_in("other/absent", &cache, true) {
        Err(Error::ModelNotCached { missing, .. }) => assert_eq!(missing, ["model_index.json"]),
        other => panic!("expected ModelNotCached, got {other:?}"),
    }
    std::fs::remove_dir_all(cache).ok();
}

/// An SD3 snapshot needs its transformer, three text encoders and `tokenizer_3/tokenizer.json`; without the
/// T5 files it resolves only when T5 is skipped (`SDSCOPE_NO_T5`, the CLI's `--no-t5`).
#[test]
fn sd3_snapshot_needs_t5_unless_skipped() {
    let cache = scratch("sd3");
    let dir = repo_dir(&cache, SD3_MEDIUM);
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::write(dir.join("refs/main"), "abc123\n").unwrap();
    let snap = dir.join("snapshots/abc123");
    let clip = |n: &str| {
        format!(
            "text_encoder{n}/config.json text_encoder{n}/model.safetensors tokenizer{n}/vocab.json \
             tokenizer{n}/merges.txt tokenizer{n}/tokenizer_config.json tokenizer{n}/special_tokens_map.json"
        )
    };
    let files = format!(
        "transformer/config.json transformer/diffusion_pytorch_model.safetensors vae/config.json \
         vae/diffusion_pytorch_model.safetensors scheduler/scheduler_config.json {} {}",
        clip(""),
        clip("_2")
    );
    touch(&snap, &files);
    let index = r#"{"_class_name": "StableDiffusion3Pipeline", "transformer": ["diffusers", "SD3Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "text_encoder_3": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "tokenizer_3": ["transformers", "T5TokenizerFast"], "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}"#;
    std::fs::write(snap.join("model_index.json"), index).unwrap();
    match resolve_in("sd3", &cache, true) {
        Err(Error::ModelNotCached { missing, fetch, .. }) => {
            let expected = [
                "text_encoder_3/config.json",
                "text_encoder_3/model.safetensors",
                "tokenizer_3/tokenizer.json",
                "tokenizer_3/tokenizer_config.json",
            ];
            assert_eq!(missing, expected);
            assert!(fetch.contains("\"transformer/*\"") && fetch.contains("\"text_encoder_3/*\""), "{fetch}");
        }
        other => panic!("expected ModelNotCached, got {other:?}"),
    }
    std::env::set_var("SDSCOPE_NO_T5", "1");
    let resolved = resolve_in("sd3", &cache, true);
    std::env::remove_var("SDSCOPE_NO_T5");
    assert_eq!(resolved.unwrap().root, snap);
    touch(&snap, "text_encoder_3/config.json text_encoder_3/model.safetensors tokenizer_3/tokenizer.json");
    touch(&snap, "tokenizer_3/tokenizer_config.json");
    assert_eq!(resolve_in("sd3", &cache, true).unwrap().alias.map(|a| a.family), Some("sd3"));
    std::fs::remove_dir_all(cache).ok();
}

#[test]
fn lightning_alias_needs_unet_file() {
    let cache = scratch("lightning");
    let snap = fake_repo(&cache, SDXL);
    match resolve_in("SDXL-Lightning-4step", &cache, true) {
        Err(Error::ModelNotCached { repo, missing, fetch, .. }) => {
            assert_eq!((repo.as_str(), missing), (LIGHTNING, vec!["sdxl_lightning_4step_unet.safetensors".into()]));
            assert!(fetch.starts_with("huggingface-cli download ByteDance/SDXL-Lightning sdxl_lightning_4step"));
        }
        other => panic!("expected ModelNotCached, got {other:?}"),
    }
    let light = repo_dir(&cache, LIGHTNING);
    std::fs::create_dir_all(light.join("refs")).unwrap();
    std::fs::write(light.join("refs/main"), "def456").unwrap();
    touch(&light.join("snapshots/def456"), "sdxl_lightning_4step_unet.safetensors");
    let src = resolve_in("sdxl-lightning-4step", &cache, true).unwrap();
    assert_eq!(src.root, snap);
    let file = light.join("snapshots/def456/sdxl_lightning_4step_unet.safetensors");
    assert_eq!((src.unet_override, src.alias.map(|a| a.default_steps)), (Some(file), Some(4)));
    // A repo id equal to a plain alias's repo picks up that alias's defaults.
    assert_eq!(resolve_in(SDXL, &cache, true).unwrap().alias.map(|a| a.name), Some("sdxl"));
    std::fs::remove_dir_all(cache).ok();
}

#[test]
fn component_weights_choice() {
    let dir = scratch("weights");
    assert!(matches!(component_weights(&dir), Err(Error::MissingFile { .. })));
    touch(&dir, "diffusion_pytorch_model.bin");
    match component_weights(&dir) {
        Err(Error::PickleRefused { path, kind }) => {
            assert_eq!((path, kind.as_str()), (dir.join("diffusion_pytorch_model.bin"), "PyTorch .bin checkpoint"));
        }
        other => panic!("expected PickleRefused, got {other:?}"),
    }
    touch(&dir, "diffusion_pytorch_model.fp16.safetensors");
    assert_eq!(component_weights(&dir).unwrap(), [dir.join("diffusion_pytorch_model.fp16.safetensors")]);
    touch(&dir, "diffusion_pytorch_model.safetensors");
    assert_eq!(component_weights(&dir).unwrap(), [dir.join("diffusion_pytorch_model.safetensors")]);
    std::fs::remove_dir_all(dir).ok();
}
