//! SD3 / SD3.5 (MMDiT) parity with diffusers on the tiny fixture pipelines (`tests/fixtures/make_mmdit_refs.py`):
//! prompt encoding (with and without T5), VAE posterior and seeded draws, flow-matching noise, the output of every
//! transformer module, image → text attention probabilities, and the extraction API end to end.

mod common;

use common::*;
use sdscope::image_io::load_image;
use sdscope::pipeline::{LoadOptions, Pipeline, TextConditioning};
use sdscope::taps::Taps;
use std::collections::HashMap;
use tch::Tensor;

const TOL: f64 = 1e-4;

#[derive(Debug, serde::Deserialize)]
struct Sd3Case {
    file: String,
    image: String,
    prompt: String,
    t: i64,
    seed: i64,
    height: i64,
    width: i64,
    timestep: f64,
    #[serde(default)]
    multi_call: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
struct PromptCase {
    key: usize,
    prompt: String,
}

fn model_dir(name: &str) -> std::path::PathBuf {
    let dir = fixtures().join("mmdit");
    assert!(dir.join(".complete").is_file(), "MMDiT references missing in {} — run `bash .ci/run`", dir.display());
    dir.join(name)
}

fn load_with(name: &str, options: LoadOptions) -> Pipeline {
    Pipeline::load_with(model_dir(name).to_str().unwrap(), LoadOptions { progress: false, ..options }).unwrap()
}

fn load(name: &str) -> Pipeline {
    load_with(name, LoadOptions::default())
}

fn read_json<T: serde::de::DeserializeOwned>(path: std::path::PathBuf) -> T {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn tensors(path: std::path::PathBuf) -> HashMap<String, Tensor> {
    sdscope::tensor_io::load(&path).unwrap().0
}

fn check_prompts(name: &str) {
    let pipe = load(name);
    let reference = tensors(model_dir(name).join("reference/prompts.safetensors"));
    let prompts: Vec<PromptCase> = read_json(model_dir(name).join("reference/prompts.json"));
    assert!(prompts.len() >= 4);
    let no_t5 = (name == "sd3").then(|| load_with(name, LoadOptions { skip_t5: true, ..Default::default() }));
    for p in &prompts {
        let tag = format!("{name} prompt {} ({:?})", p.key, p.prompt);
        let cond = pipe.encode_prompt(&p.prompt).unwrap();
        assert_close(
            &format!("{tag} prompt_embeds"),
            &cond.hidden_states,
            &reference[&format!("prompt_embeds_{}", p.key)],
            TOL,
        );
        assert_close(
            &format!("{tag} pooled"),
            cond.text_embeds.as_ref().unwrap(),
            &reference[&format!("pooled_{}", p.key)],
            TOL,
        );
        if let Some(no_t5) = &no_t5 {
            let cond = no_t5.encode_prompt(&p.prompt).unwrap();
            let key = format!("no_t5_prompt_embeds_{}", p.key);
            assert_close(&format!("{tag} without T5"), &cond.hidden_states, &reference[&key], TOL);
        }
    }
}

#[test]
fn sd3_prompt_encoding_matches_diffusers() {
    check_prompts("sd3");
}

#[test]
fn sd35_prompt_encoding_without_t5_matches_diffusers() {
    check_prompts("sd35");
}

fn check_modules(name: &str) {
    let pipe = load(name);
    let cases: Vec<Sd3Case> = read_json(model_dir(name).join("reference/cases.json"));
    assert!(cases.len() >= 2);
    for case in &cases {
        let r = tensors(model_dir(name).join("reference").join(&case.file));
        let tag = format!("{name}/{} ({}, t={}, {:?})", case.file, case.image, case.t, case.prompt);
        let cond = pipe.encode_prompt(&case.prompt).unwrap();
        assert_close(&format!("{tag} prompt_embeds"), &cond.hidden_states, &r["prompt_embeds"], TOL);

        let image = load_image(&fixtures().join("images").join(&case.image), 16).unwrap();
        assert_eq!(image.size, (case.height, case.width));
        assert_close(&format!("{tag} image"), &image.pixels, &r["image"], 1e-6);
        let dist = pipe.vae.encode(&image.pixels).unwrap();
        assert_close(&format!("{tag} latent_mean"), &dist.mean, &r["latent_mean"], TOL);
        let seeded = pipe.seeded_latents(&image.pixels, case.seed).unwrap();
        assert_close(&format!("{tag} latents"), &seeded.latents, &r["latents"], TOL);
        assert_close(&format!("{tag} noise"), &seeded.noise, &r["noise"], 0.0);

        let noisy = pipe.noise_schedule.add_noise(&r["latents"], &r["noise"], case.t).unwrap();
        assert_close(&format!("{tag} noisy"), &noisy, &r["noisy"], 1e-6);
        let timestep = pipe.noise_schedule.model_timestep(case.t, &noisy).unwrap();
        assert_eq!(timestep as f32, case.timestep as f32, "{tag}: model timestep");

        let ref_cond = TextConditioning {
            hidden_states: r["prompt_embeds"].shallow_clone(),
            text_embeds: Some(r["pooled"].shallow_clone()),
        };
        let mut taps = Taps::capture_all();
        taps.record_attention(None, true);
        let out =
            pipe.unet_pass(&r["noisy"], case.t, &ref_cond, (case.height, case.width), &mut taps).unwrap().unwrap();
        assert_close(&format!("{tag} transformer_out"), &out, &r["transformer_out"], TOL);
        let attention = taps.take_attention();
        let captured = taps.into_captured();
        let mut compared = 0;
        for position in pipe.positions() {
            let reference =
                r.get(&format!("pos/{position}")).unwrap_or_else(|| panic!("{tag}: diffusers has no `{position}`"));
            let ours = captured.get(position).unwrap_or_else(|| panic!("{tag}: `{position}` was not visited"));
            assert_close(&format!("{tag} {position}"), ours, reference, TOL);
            compared += 1;
        }
        let unlisted: Vec<&str> = r
            .keys()
            .filter_map(|k| k.strip_prefix("pos/"))
            .filter(|p| !pipe.positions().iter().any(|q| q == p))
            .collect();
        assert!(unlisted.is_empty(), "{tag}: diffusers has modules sdscope does not list: {unlisted:?}");
        assert!(compared > 60, "{tag}: only {compared} positions compared");
        assert!(case.multi_call.is_empty(), "{tag}: modules called twice: {:?}", case.multi_call);
        let mut layers = 0;
        for (key, reference) in r.iter().filter(|(k, _)| k.starts_with("attn/")) {
            let layer = &key["attn/".len()..];
            let ours = attention.get(layer).unwrap_or_else(|| panic!("{tag}: no attention recorded at {layer}"));
            assert_close(&format!("{tag} attention {layer}"), ours, reference, TOL);
            layers += 1;
        }
        assert_eq!(layers, attention.len(), "{tag}: attention layers");
    }
}

#[test]
fn sd3_every_module_matches_diffusers() {
    check_modules("sd3");
}

#[test]
fn sd35_qk_norm_and_dual_attention_match_diffusers() {
    check_modules("sd35");
}

/// The extraction API (file → seeded latents → flow-matching noise → transformer, early exit) = diffusers' hooks.
#[test]
fn sd3_extraction_api_matches_diffusers() {
    for name in ["sd3", "sd35"] {
        let pipe = load(name);
        let cases: Vec<Sd3Case> = read_json(model_dir(name).join("reference/cases.json"));
        for case in cases {
            let r = tensors(model_dir(name).join("reference").join(&case.file));
            let positions =
                ["transformer_blocks[1]", "transformer_blocks[0]@text", "transformer_blocks[1].attn", "pos_embed"];
            let request = sdscope::extract::ExtractRequest::new(positions)
                .timestep(case.t)
                .seed(case.seed)
                .prompt(&case.prompt)
                .progress(false);
            let reprs = pipe.extract(&request, &[fixtures().join("images").join(&case.image)]).unwrap();
            for p in positions {
                let ours = reprs.image(p, 0).unwrap().get(0);
                let reference = r[&format!("pos/{p}")].get(0);
                assert_close(&format!("{name}/{} extract {p}", case.file), &ours, &reference, TOL);
            }
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct AddDirectionSpec {
    strength: f64,
    step_start: usize,
    step_end: usize,
}

/// The case's edit: the image stream scaled, or a direction added (`direction`, `mask` saved with the case).
#[derive(Debug, serde::Deserialize)]
struct Edit {
    position: String,
    scale: Option<f64>,
    add_direction: Option<AddDirectionSpec>,
}

#[derive(Debug, serde::Deserialize)]
struct GenCase {
    id: usize,
    model: String,
    prompt: String,
    negative_prompt: Option<String>,
    steps: usize,
    guidance: f64,
    seed: i64,
    width: i64,
    height: i64,
    #[serde(default)]
    max_sequence_length: Option<usize>,
    #[serde(default)]
    capture: Vec<String>,
    intervention: Option<Edit>,
}

/// `StableDiffusion3Pipeline.__call__`: flow-matching Euler, guidance on `[uncond, cond]`, negative prompts,
/// non-square sizes, SD3.5 without guidance, per-step captures, and edits (a scaled image stream; a masked
/// direction added over a step range, as SAE steering does) equal to the same diffusers hook.
#[test]
fn sd3_generation_matches_diffusers() {
    use sdscope::generate::GenerateRequest;
    use sdscope::interventions::{AddDirection, Interventions};
    let dir = model_dir("generation");
    let cases: Vec<GenCase> = read_json(dir.join("cases.json"));
    let mut pipes: HashMap<String, Pipeline> = HashMap::new();
    let mut ran = 0;
    for case in &cases {
        if case.max_sequence_length.is_some_and(|m| m != 256) {
            continue; // the pipeline's default T5 length only
        }
        let what = format!("case {} ({} g={} {}x{})", case.id, case.model, case.guidance, case.width, case.height);
        let reference = tensors(dir.join(format!("case_{}.safetensors", case.id)));
        let pipe = pipes.entry(case.model.clone()).or_insert_with(|| load(&case.model));
        let mut request = GenerateRequest::new(&case.prompt)
            .steps(case.steps)
            .guidance(case.guidance)
            .seed(case.seed)
            .size(case.width, case.height)
            .capture(case.capture.clone())
            .progress(false);
        request.negative_prompt = case.negative_prompt.clone();
        let mut edits = Interventions::new();
        if let Some(edit) = &case.intervention {
            match (edit.scale, &edit.add_direction) {
                (Some(factor), _) => {
                    edits.scale(edit.position.as_str(), factor, None);
                }
                (None, Some(add)) => {
                    let direction = AddDirection::new(reference["direction"].shallow_clone(), add.strength)
                        .mask(reference["mask"].shallow_clone())
                        .steps(add.step_start..add.step_end);
                    edits.add_direction(edit.position.as_str(), direction);
                }
                (None, None) => panic!("{what}: an edit without scale or add_direction"),
            }
        }
        let out = pipe.generate_with(&request, &mut edits).unwrap();
        if case.intervention.is_some() {
            let plain = pipe.generate(&request).unwrap();
            let err = rel_l2(&plain.latents, &reference["latents"]);
            assert!(err > 1e-3, "{what}: the intervention changed nothing measurable ({err:.1e})");
        }
        let timesteps = Tensor::from_slice(&out.timesteps).to_kind(tch::Kind::Float);
        assert_close(&format!("{what}: timesteps"), &timesteps, &reference["timesteps"], 1e-7);
        let step_latents = Tensor::stack(&out.step_latents, 0);
        assert_close(&format!("{what}: latents after each step"), &step_latents, &reference["step_latents"], 1e-3);
        assert_close(&format!("{what}: final latents"), &out.latents, &reference["latents"], 1e-3);
        assert_close(&format!("{what}: decoded image"), &out.image, &reference["image"], 1e-3);
        let png = load_png(&dir.join(format!("case_{}.png", case.id)));
        let ours = out.rgb8().unwrap();
        let max_diff = max_level_difference(&ours, &png);
        assert!(max_diff <= 2, "{what}: PNG differs by {max_diff} levels");
        for p in &case.capture {
            let reprs = out.representations.as_ref().expect("captures requested");
            let ours = reprs.image(p, 0).unwrap();
            assert_close(&format!("{what}: capture {p}"), ours, &reference[&format!("capture/{p}")], 1e-4);
        }
        ran += 1;
    }
    assert!(ran >= 5, "only {ran} generation cases ran");
}

/// Attention maps on SD3: the image → text part of every joint attention layer, head-averaged, equals diffusers'
/// probabilities, and the token table spans the joint sequence (CLIP-L's 77 positions, then T5's 256).
#[test]
fn sd3_attention_maps_match_diffusers() {
    use sdscope::xattn::{AttentionRequest, MapQuery, TokenKind, TokenSegment, TokenSelection};
    for name in ["sd3", "sd35"] {
        let pipe = load(name);
        let cases: Vec<Sd3Case> = read_json(model_dir(name).join("reference/cases.json"));
        let case = cases.iter().find(|c| c.prompt.contains("cat")).expect("a case with `cat`");
        let r = tensors(model_dir(name).join("reference").join(&case.file));
        let request = AttentionRequest::new(&case.prompt).timestep(case.t).seed(case.seed);
        let maps = pipe.cross_attention(fixtures().join("images").join(&case.image), &request).unwrap();
        let expected_layers: Vec<String> = r
            .keys()
            .filter_map(|k| k.strip_prefix("attn/"))
            .map(String::from)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(maps.layers().len(), expected_layers.len(), "{name}: joint attention layers");
        let (gh, gw) = (case.height / 16, case.width / 16);
        for layer in &expected_layers {
            let reference = r[&format!("attn/{layer}")].mean_dim(1, false, tch::Kind::Float).get(0); // [N, S]
            let s = reference.size()[1];
            let reference = reference.transpose(0, 1).reshape([s, gh, gw]);
            let ours = maps.head_mean(layer, 0).unwrap();
            assert_close(&format!("{name} {layer} attention"), &ours, &reference, TOL);
        }
        let table = &maps.tokens;
        assert_eq!(table.entries.len(), 77 + 256, "{name}: joint token table");
        assert!(table.entries[..77].iter().all(|e| e.segment == TokenSegment::Clip));
        assert!(table.entries[77..].iter().all(|e| e.segment == TokenSegment::T5));
        let clip_cat = table
            .select(&TokenSelection::Within(TokenSegment::Clip, Box::new(TokenSelection::Word("cat".into()))))
            .unwrap();
        assert!(clip_cat.iter().all(|&i| i < 77), "{name}: CLIP `cat` at {clip_cat:?}");
        let all_cat = table.select(&TokenSelection::Word("cat".into())).unwrap();
        if name == "sd3" {
            let t5_cat = table
                .select(&TokenSelection::Within(TokenSegment::T5, Box::new(TokenSelection::Word("cat".into()))))
                .unwrap();
            assert!(t5_cat.iter().all(|&i| i >= 77), "{name}: T5 `cat` at {t5_cat:?}");
            assert_eq!(all_cat.len(), clip_cat.len() + t5_cat.len());
            let prompts: Vec<serde_json::Value> = read_json(model_dir(name).join("reference/prompts.json"));
            let ids = prompts.iter().find(|p| p["prompt"] == case.prompt.as_str()).map(|p| p["t5_ids"].clone());
            if let Some(ids) = ids {
                let ours: Vec<i64> = table.entries[77..].iter().map(|e| e.id).collect();
                let theirs: Vec<i64> = serde_json::from_value(ids).unwrap();
                assert_eq!(ours, theirs, "{name}: T5 ids in the token table");
            }
            assert_eq!(table.entries.iter().filter(|e| e.kind == TokenKind::Eos).count(), 2);
        } else {
            // No T5: its part of the sequence is zeros, shown as padding.
            assert!(table.entries[77..].iter().all(|e| e.kind == TokenKind::Padding));
            assert_eq!(all_cat, clip_cat);
        }
        let map = maps.map(&MapQuery::word("cat")).unwrap();
        assert_eq!(map.size(), [case.height, case.width]);
    }
}

/// `FlowMatchEulerDiscreteScheduler.set_timesteps`: static shift and dynamic (μ) shifting, 1 to 1000 steps.
#[test]
fn flow_match_schedules_match_diffusers() {
    use sdscope::config::SchedulerConfig;
    use sdscope::schedulers::FlowMatchSettings;
    let rows: Vec<serde_json::Value> = read_json(fixtures().join("mmdit/schedulers.json"));
    assert!(rows.len() >= 10);
    for row in rows {
        let mut config = row["config"].clone();
        config["_class_name"] = "FlowMatchEulerDiscreteScheduler".into();
        let config: SchedulerConfig = serde_json::from_value(config).unwrap();
        let settings = FlowMatchSettings::from_config(&config, std::path::Path::new("schedulers.json")).unwrap();
        let steps = row["steps"].as_u64().unwrap() as usize;
        let tokens = row["image_seq_len"].as_i64();
        if let (Some(d), Some(mu)) = (&settings.dynamic, row["mu"].as_f64()) {
            assert_eq!(d.mu(tokens.unwrap()), mu, "μ for {tokens:?} tokens");
        }
        let (timesteps, sigmas) = settings.schedule(steps, tokens).unwrap();
        let theirs_t: Vec<f32> = serde_json::from_value(row["timesteps"].clone()).unwrap();
        let theirs_s: Vec<f32> = serde_json::from_value(row["sigmas"].clone()).unwrap();
        assert_eq!(timesteps, theirs_t, "timesteps, {steps} steps, {}", row["config"]);
        assert_eq!(sigmas, theirs_s, "sigmas, {steps} steps, {}", row["config"]);
    }
}

/// T5 kept in bfloat16 while the rest is float32 (what lets SD3 Medium fit 24 GB): close to the float32 text.
#[test]
fn sd3_t5_in_bf16_stays_close() {
    let pipe = load_with("sd3", LoadOptions { t5_dtype: Some(tch::Kind::BFloat16), ..Default::default() });
    let reference = tensors(model_dir("sd3").join("reference/prompts.safetensors"));
    let cond = pipe.encode_prompt("a photo of a cat").unwrap();
    assert_eq!(cond.hidden_states.kind(), tch::Kind::Float);
    let err = rel_l2(&cond.hidden_states, &reference["prompt_embeds_0"]);
    assert!(err < 2e-2 && err > 0.0, "bf16 T5: {err:.2e}");
}
