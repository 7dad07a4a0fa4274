//! Collection at dataset scale: `@update` against diffusers hooks, the SDXL-Turbo SAE recipe against diffusers,
//! byte-for-byte sharding invariance, resume after a kill, refusal of mixed settings, the `collect` CLI contract.

mod common;

use common::{assert_close, fixtures, pipeline_dir, sdscope};
use sdscope::collect::{CaptureSteps, CollectRequest, Collector, Reduce, StoreDtype, WorkSource};
use sdscope::collection::layout::shard_dir_name;
use sdscope::collection::sources::list_images;
use sdscope::collection::{Collection, ShardState};
use sdscope::prelude::*;
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-4;

fn load(name: &str) -> Pipeline {
    let options = LoadOptions { progress: false, ..Default::default() };
    Pipeline::load_with(pipeline_dir(name).to_str().unwrap(), options).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sdscope-test-collect-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn references(file: &str) -> std::collections::HashMap<String, Tensor> {
    sdscope::tensor_io::load(&fixtures().join("collect").join(file)).unwrap().0
}

fn prompts() -> Vec<String> {
    ["a red cube", "a photo of a cat", "", "green hills", "a blue car, parked", "sunset", "an astronaut"]
        .map(String::from)
        .to_vec()
}

#[test]
fn updates_match_diffusers_hooks_in_extraction() {
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("collect/extract_updates.json")).unwrap())
            .unwrap();
    let refs = references("extract_updates.safetensors");
    let mut compared = 0;
    for (k, case) in cases.iter().enumerate() {
        let pipe = load(case["model"].as_str().unwrap());
        let positions: Vec<String> = serde_json::from_value(case["positions"].clone()).unwrap();
        let request = ExtractRequest::new(positions.clone())
            .timestep(case["timestep"].as_i64().unwrap())
            .seed(case["seed"].as_i64().unwrap())
            .prompt(case["prompt"].as_str().unwrap())
            .progress(false);
        let image = fixtures().join("images").join(case["image"].as_str().unwrap());
        let reprs = pipe.extract(&request, &[image]).unwrap();
        for p in &positions {
            let ours = reprs.image(p, 0).unwrap().get(0);
            assert_close(&format!("case {k} {p}"), &ours, &refs[&format!("{k}/{p}")], TOL);
            compared += 1;
        }
    }
    assert!(compared >= 20, "only {compared} updates compared");
}

#[test]
fn an_edit_at_an_update_replaces_the_update() {
    let pipe = load("sdxl");
    let image = fixtures().join("images/square.png");
    let positions = ["mid_block.resnets[0]", "mid_block.attentions[0]", "mid_block.attentions[0]@update"];
    let request = ExtractRequest::new(positions).progress(false);
    let mut edits = Interventions::new();
    edits.add("mid_block.attentions[0]@update", |_, update| Ok(Some(update.zeros_like())));
    let reprs = pipe.extract_with(&request, &[&image], &mut edits).unwrap();
    let input = reprs.image("mid_block.resnets[0]", 0).unwrap();
    assert!(
        reprs.image("mid_block.attentions[0]", 0).unwrap().equal(input),
        "a zero update makes the block an identity"
    );
    assert_eq!(reprs.image("mid_block.attentions[0]@update", 0).unwrap().abs().max().double_value(&[]), 0.0);
    let err = pipe.extract(&ExtractRequest::new(["conv_in@update"]), &[&image]).unwrap_err().to_string();
    assert!(err.contains("@update") && err.contains("e.g."), "{err}");
}

/// The SDXL-Turbo sparse-autoencoder recipe (1 step, guidance 0, four block updates) on the tiny SDXL fixture
/// against the same collection written with diffusers and forward hooks.
#[test]
fn sae_recipe_matches_diffusers() {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("collect/sae_recipe.json")).unwrap()).unwrap();
    let refs = references("sae_recipe.safetensors");
    let prompts: Vec<String> = serde_json::from_value(meta["prompts"].clone()).unwrap();
    let positions: Vec<String> = serde_json::from_value(meta["positions"].clone()).unwrap();
    let pipe = load("sdxl");
    let dir = scratch("sae");
    let request = CollectRequest::new(positions.clone()).steps(1).guidance(0.0).size(64, 64).batch(2).progress(false);
    let collector =
        Collector::new(&pipe, WorkSource::prompts("inline", None, prompts.clone()), request, &dir, 2).unwrap();
    collector.run(None).unwrap();
    let collection = Collection::open(&dir).unwrap();
    for p in &positions {
        let merged = collection.merged(p).unwrap();
        assert_eq!(merged.layout, ["item", "channel", "row", "col"]);
        assert_close(&format!("collect {p}"), &merged.x, &refs[p], TOL);
    }
    // The token stream yields every token vector once: in order without shuffling, a permutation with it.
    let position = &positions[1];
    let tokens = sdscope::collection::reader::to_tokens(&collection.merged(position).unwrap()).unwrap();
    let ordered = sdscope::collection::StreamOptions {
        batch: 3,
        buffer: 6,
        shuffle: false,
        keep_last: true,
        ..Default::default()
    };
    let streamed: Vec<Tensor> = collection.tokens(position, ordered).unwrap().map(|b| b.unwrap()).collect();
    assert!(Tensor::cat(&streamed, 0).equal(&tokens));
    let shuffled = sdscope::collection::StreamOptions { batch: 4, buffer: 8, keep_last: true, ..Default::default() };
    let streamed =
        Tensor::cat(&collection.tokens(position, shuffled).unwrap().map(|b| b.unwrap()).collect::<Vec<_>>(), 0);
    assert_eq!(streamed.size(), tokens.size());
    assert!(!streamed.equal(&tokens), "shuffled");
    let sort = |t: &Tensor| t.sum_dim_intlist([1i64].as_slice(), false, Kind::Double).sort(0, false).0;
    assert!(sort(&streamed).allclose(&sort(&tokens), 0.0, 0.0, false), "the same rows");
    let items = collection.merged_items().unwrap();
    assert_eq!(items.len(), prompts.len());
    for (k, row) in items.iter().enumerate() {
        assert_eq!(row["prompt"], prompts[k].as_str());
        assert_eq!(row["seed"], k as i64);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn run_collection(
    pipe: &Pipeline,
    source: WorkSource,
    request: CollectRequest,
    dir: &Path,
    shards: usize,
    order: &[usize],
) {
    for &i in order {
        // A fresh collector per shard, as separate workers would make.
        Collector::new(pipe, source.clone(), request.clone(), dir, shards).unwrap().run(Some(i)).unwrap();
    }
    if order.is_empty() {
        Collector::new(pipe, source, request, dir, shards).unwrap().run(None).unwrap();
    }
}

fn merged_bytes(dir: &Path, positions: &[&str]) -> Vec<(Vec<u8>, String)> {
    let collection = Collection::open(dir).unwrap();
    assert!(collection.status().iter().all(|s| s.state == ShardState::Complete));
    let mut out: Vec<(Vec<u8>, String)> = positions
        .iter()
        .map(|p| {
            let m = collection.merged(p).unwrap();
            let mut bytes = vec![0u8; m.x.numel() * m.x.kind().elt_size_in_bytes()];
            m.x.copy_data_u8(&mut bytes, m.x.numel());
            if let Some(pos) = &m.pos {
                let mut b = vec![0u8; pos.numel() * 8];
                pos.copy_data_u8(&mut b, pos.numel());
                bytes.extend(b);
            }
            (bytes, format!("{:?} {:?}", m.x.size(), m.layout))
        })
        .collect();
    out.push((serde_json::to_vec(&collection.merged_items().unwrap()).unwrap(), "items".into()));
    out
}

#[test]
fn shards_hold_the_same_bytes_whatever_the_sharding() {
    let pipe = load("sdxl");
    let positions = ["mid_block.attentions[0]@update", "up_blocks[1]"];
    let request = CollectRequest::new(positions)
        .steps(2)
        .guidance(3.0)
        .size(64, 64)
        .batch(3)
        .reduce(Reduce::Sample(3))
        .progress(false);
    let source = WorkSource::prompts("inline", None, prompts());
    let one = scratch("one");
    run_collection(&pipe, source.clone(), request.clone(), &one, 1, &[]);
    let reference = merged_bytes(&one, &positions);
    assert!(reference[0].1.starts_with("[7, 2, 3, 64]"), "{}", reference[0].1);
    for (shards, order) in [(3, vec![2, 0, 1]), (4, vec![]), (7, vec![6, 5, 4, 3, 2, 1, 0]), (9, vec![])] {
        let dir = scratch(&format!("shards{shards}"));
        run_collection(&pipe, source.clone(), request.clone(), &dir, shards, &order);
        let got = merged_bytes(&dir, &positions);
        for (a, b) in got.iter().zip(&reference) {
            assert_eq!(a.1, b.1);
            assert!(a.0 == b.0, "{shards} shards: {} differs from one shard", a.1);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::remove_dir_all(&one).unwrap();
}

#[test]
fn image_collections_are_invariant_and_labelled() {
    let pipe = load("sd1");
    let root = scratch("images-src");
    for (label, file) in
        [("cats", "square.png"), ("cats", "gray.png"), ("dogs", "wide.png"), ("dogs", "rgba.png"), ("", "odd.png")]
    {
        let dir = root.join(label);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(fixtures().join("images").join(file), dir.join(file)).unwrap();
    }
    let items = list_images(&root, None).unwrap();
    let positions = ["mid_block", "down_blocks[1].attentions[0]@update"];
    let request = CollectRequest::new(positions).timesteps(&[50, 500]).batch(2).dtype(StoreDtype::F16).progress(false);
    // Different sizes cannot be stacked: a clear error, unless every image is brought to one size.
    let source = WorkSource::images("folder", &root, items.clone());
    let mixed = scratch("img-mixed");
    let err = Collector::new(&pipe, source.clone(), request.clone(), &mixed, 1).unwrap().run(None).unwrap_err();
    assert!(err.to_string().contains("--image-size"), "{err}");
    assert!(!mixed.exists(), "a run that failed before any shard was complete leaves no folder");
    let mut request = request;
    request.image_size = Some(64);
    let (one, two) = (scratch("img1"), scratch("img2"));
    run_collection(&pipe, source.clone(), request.clone(), &one, 1, &[]);
    run_collection(&pipe, source, request, &two, 2, &[1, 0]);
    assert_eq!(merged_bytes(&one, &positions), merged_bytes(&two, &positions));
    let collection = Collection::open(&one).unwrap();
    let merged = collection.merged("mid_block").unwrap();
    assert_eq!(merged.x.kind(), Kind::Half);
    assert_eq!(merged.layout, ["item", "step", "channel", "row", "col"]);
    assert_eq!(merged.x.size()[..2], [5, 2]);
    let rows = collection.merged_items().unwrap();
    let labels: Vec<&str> = rows.iter().map(|r| r["label"].as_str().unwrap_or("-")).collect();
    assert_eq!(labels, ["cats", "cats", "dogs", "dogs", "-"]);
    assert_eq!(rows[4]["image"], "odd.png");
    assert_eq!(rows[4]["resized_from"], serde_json::json!([66, 70]));
    // Item k is extracted exactly as `extract` does with seed 0 + k (a 64×64 image is not resized).
    let k = 1;
    assert_eq!(rows[1]["image"], "cats/square.png");
    assert_eq!(rows[1]["resized_from"], serde_json::Value::Null);
    let single = pipe
        .extract(
            &ExtractRequest::new(["mid_block"]).timesteps(&[50, 500]).seed(k).progress(false),
            &[&items[k as usize].path],
        )
        .unwrap();
    assert_close(
        "item 3",
        &merged.x.get(k).to_kind(Kind::Float),
        &single.image("mid_block", 0).unwrap().to_kind(Kind::Half).to_kind(Kind::Float),
        1e-3,
    );
    for d in [root, one, two] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_folder_made_with_other_settings_is_refused() {
    let pipe = load("sd1");
    let dir = scratch("refused");
    let source = WorkSource::prompts("inline", None, prompts());
    let request = CollectRequest::new(["mid_block"]).steps(2).guidance(1.0).size(64, 64).progress(false);
    Collector::new(&pipe, source.clone(), request.clone(), &dir, 2).unwrap();
    // The manifest names every weight file by its content.
    let manifest = Collection::open(&dir).unwrap().manifest;
    let unet = manifest.model.files.iter().find(|f| f.path.starts_with("unet/")).unwrap();
    let bytes = std::fs::read(pipeline_dir("sd1").join(&unet.path)).unwrap();
    use sha2::Digest;
    assert_eq!(unet.sha256, format!("{:x}", sha2::Sha256::digest(&bytes)));
    assert_eq!(unet.bytes, bytes.len() as u64);
    let err = |r: CollectRequest, shards: usize, s: WorkSource| {
        Collector::new(&pipe, s, r, &dir, shards).err().unwrap().to_string()
    };
    assert!(err(request.clone().steps(3), 2, source.clone()).contains("--steps: this run 3, the folder 2"));
    assert!(err(request.clone(), 3, source.clone()).contains("shard count"));
    assert!(err(request.clone().reduce(Reduce::Mean), 2, source.clone()).contains("--reduce"));
    let fewer = WorkSource::prompts("inline", None, prompts()[..3].to_vec());
    assert!(err(request.clone(), 2, fewer).contains("source"));
    assert!(err(request.clone().capture_steps(CaptureSteps::List(vec![5])), 2, source.clone())
        .contains("--capture-steps 5"));
    // The same settings are accepted (resume), whatever the batch size? No: the batch is recorded.
    Collector::new(&pipe, source.clone(), request.clone(), &dir, 2).unwrap();
    assert!(err(request.batch(4), 2, source).contains("--batch"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn write_prompts(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("prompts.txt");
    let text: Vec<String> = (0..n).map(|i| format!("prompt number {i}")).collect();
    std::fs::write(&file, text.join("\n")).unwrap();
    file
}

#[test]
fn a_killed_worker_loses_only_its_shard_and_a_rerun_completes_it() {
    let base = scratch("kill");
    let file = write_prompts(&base, 6);
    let model = pipeline_dir("sd1");
    let args = |out: &Path| {
        let mut c = sdscope();
        c.args(["collect", "--model", model.to_str().unwrap(), "--prompts", file.to_str().unwrap()])
            .args(["--positions", "mid_block,up_blocks[1].attentions[0]@update", "--steps", "2", "--guidance", "1"])
            .args(["--width", "64", "--height", "64", "--shards", "2", "--batch", "1", "--quiet", "--out"])
            .arg(out);
        c
    };
    let out = base.join("killed");
    let mut child = args(&out).env("SDSCOPE_COLLECT_THROTTLE_MS", "700").spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let partial_of_second = || {
        std::fs::read_dir(&out)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().starts_with("shard-00001-of-00002.partial-"))
            })
            .unwrap_or(false)
    };
    while !(out.join(shard_dir_name(0, 2)).is_dir() && partial_of_second()) {
        assert!(std::time::Instant::now() < deadline, "the worker never reached its second shard");
        assert!(child.try_wait().unwrap().is_none(), "the worker ended before it could be killed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join(shard_dir_name(1, 2)).exists(), "a killed shard must not look complete");
    let status = sdscope().args(["collect", "--status", "--json", "--out"]).arg(&out).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!((status["complete"].as_u64(), status["partial"].as_u64()), (Some(1), Some(1)), "{status}");
    let rerun = args(&out).output().unwrap();
    assert!(rerun.status.success(), "{}", String::from_utf8_lossy(&rerun.stderr));
    let fresh = base.join("fresh");
    assert!(args(&fresh).status().unwrap().success());
    for shard in 0..2 {
        for name in ["mid_block.safetensors", "up_blocks[1].attentions[0]@update.safetensors", "items.jsonl"] {
            let path = |root: &Path| root.join(shard_dir_name(shard, 2)).join(name);
            assert!(
                std::fs::read(path(&out)).unwrap() == std::fs::read(path(&fresh)).unwrap(),
                "{name} of shard {shard} differs"
            );
        }
    }
    assert!(!std::fs::read_dir(&out).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(".partial-")));
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn cli_contract() {
    let base = scratch("cli");
    let file = write_prompts(&base, 5);
    let model = pipeline_dir("sdxl");
    let run = |extra: &[&str], out: &Path| {
        sdscope()
            .args(["collect", "--model", model.to_str().unwrap(), "--prompts", file.to_str().unwrap(), "--quiet"])
            .args(["--positions", "mid_block.attentions[0]@update,up_blocks[0].attentions[1].transformer_blocks[0]"])
            .args(extra)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let x_of = |out: &Path, shard: usize, shards: usize, position: &str| {
        let path = out.join(shard_dir_name(shard, shards)).join(format!("{position}.safetensors"));
        sdscope::tensor_io::load(&path).unwrap().0
    };
    // Every step, both kinds of native layout, thumbnails, --shard I/N.
    let all = base.join("all");
    for i in 0..2 {
        let o = run(
            &["--steps", "3", "--guidance", "0", "--shard", &format!("{i}/2"), "--keep-images", "--thumbnail", "16"],
            &all,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let t = x_of(&all, 0, 2, "mid_block.attentions[0]@update");
    assert_eq!(t["x"].size(), [3, 3, 64, 2, 2]);
    assert_eq!(t["step"].size(), [3]);
    assert_eq!(t["timestep"].size(), [3]);
    let t = x_of(&all, 1, 2, "up_blocks[0].attentions[1].transformer_blocks[0]");
    assert_eq!(t["x"].size(), [2, 3, 4, 64]);
    let rows = std::fs::read_to_string(all.join(shard_dir_name(1, 2)).join("items.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 2);
    let thumb = image::open(all.join(shard_dir_name(1, 2)).join("images/00000004.png")).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (16, 16));
    let status = sdscope().args(["collect", "--status", "--out"]).arg(&all).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("complete 2, partial 0, missing 0") && text.contains("items: 5 of 5"), "{text}");

    // One step kept, reductions, float16.
    let reduced = base.join("mean");
    let o = run(
        &["--steps", "2", "--guidance", "0", "--capture-steps", "last", "--reduce", "mean", "--dtype", "f16"],
        &reduced,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = x_of(&reduced, 0, 1, "mid_block.attentions[0]@update");
    assert_eq!(t["x"].size(), [5, 64]);
    assert!(!t.contains_key("step"));
    let sampled = base.join("sample");
    let o = run(&["--steps", "1", "--guidance", "0", "--reduce", "sample:3"], &sampled);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = x_of(&sampled, 0, 1, "up_blocks[0].attentions[1].transformer_blocks[0]");
    assert_eq!((t["x"].size(), t["pos"].size()), (vec![5, 3, 64], vec![5, 3]));

    // The Slurm script: an array of N tasks running the same command with --shards N.
    let o = run(&["--steps", "1", "--shards", "4", "--slurm-script"], &base.join("slurm"));
    let script = String::from_utf8_lossy(&o.stdout);
    assert!(
        script.contains("#SBATCH --array=0-3")
            && script.contains("--shards 4")
            && script.contains("##SBATCH --gres=gpu:1"),
        "{script}"
    );
    assert!(!script.contains("--slurm-script") && !base.join("slurm").exists());

    // Bad input: an error, a non-zero exit, and nothing written.
    for (extra, needle) in [
        (vec!["--reduce", "max"], "--reduce"),
        (vec!["--capture-steps", "9", "--steps", "2"], "--capture-steps"),
        (vec!["--shard", "2/2"], "--shard"),
        (vec!["--images", "x"], "one source"),
        (vec!["--dtype", "f8"], "--dtype"),
        (vec!["--thumbnail", "8"], "--keep-images"),
        (vec!["--prompt", "a cat"], "--images"),
    ] {
        let out = base.join("bad");
        let o = run(&extra, &out);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(needle), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
    std::fs::remove_dir_all(&base).unwrap();
}
