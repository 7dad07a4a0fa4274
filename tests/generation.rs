//! Generation parity with diffusers' `StableDiffusionPipeline` / `StableDiffusionXLPipeline` on the tiny fixture
//! models: schedulers, guidance, negative prompts, sizes, per-step captures and interventions
//! (references: `tests/fixtures/make_generation_refs.py`).

mod common;

use common::*;
use sdscope::config::SchedulerConfig;
use sdscope::prelude::*;
use sdscope::schedulers::build_sampler;
use std::collections::HashMap;

/// The pipeline with the case's scheduler overrides applied to its config (what `from_config(**overrides)` does).
fn pipeline_for(case: &GenCase) -> Pipeline {
    let mut pipe = Pipeline::load_with(
        pipeline_dir(&case.model).to_str().unwrap(),
        LoadOptions { progress: false, ..LoadOptions::default() },
    )
    .unwrap();
    if !case.scheduler_overrides.is_empty() {
        let path = pipe.source.root.join("scheduler/scheduler_config.json");
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for (k, v) in &case.scheduler_overrides {
            config[k] = v.clone();
        }
        pipe.scheduler_config = serde_json::from_value(config).unwrap();
    }
    pipe
}

fn run_case(case: &GenCase) {
    let what = format!(
        "case {} ({} {:?} g={} {}x{})",
        case.id, case.model, case.scheduler, case.guidance, case.width, case.height
    );
    let reference =
        sdscope::tensor_io::load(&generation_dir().join(format!("case_{}.safetensors", case.id))).unwrap().0;
    let pipe = pipeline_for(case);
    let mut request = GenerateRequest::new(&case.prompt)
        .steps(case.steps)
        .guidance(case.guidance)
        .seed(case.seed)
        .size(case.width, case.height)
        .capture(case.capture.clone())
        .progress(false);
    request.negative_prompt = case.negative_prompt.clone();
    if let Some(name) = &case.scheduler {
        request = request.scheduler(SamplerKind::parse(name).unwrap());
    }
    if case.capture_both_halves {
        request = request.capture_halves(CaptureHalves::Both);
    }
    let mut edits = Interventions::new();
    if let Some(iv) = &case.intervention {
        let edit = AddDirection::new(reference["direction"].shallow_clone(), iv.strength)
            .mask(reference["mask"].shallow_clone())
            .steps(iv.step_start..iv.step_end);
        edits.add_direction(iv.position.as_str(), edit);
    }
    let out = pipe.generate_with(&request, &mut edits).unwrap();
    if case.intervention.is_some() {
        // The edit must matter: without it the result is far from the edited reference.
        let plain = pipe.generate(&request).unwrap();
        let err = rel_l2(&plain.latents, &reference["latents"]);
        assert!(err > 1e-3, "{what}: the intervention changed nothing measurable ({err:.1e})");
    }

    let timesteps = Tensor::from_slice(&out.timesteps).to_kind(Kind::Float);
    assert_close(&format!("{what}: timesteps"), &timesteps, &reference["timesteps"], 1e-7);
    let step_latents = Tensor::stack(&out.step_latents, 0);
    assert_close(&format!("{what}: latents after each step"), &step_latents, &reference["step_latents"], 1e-3);
    assert_close(&format!("{what}: final latents"), &out.latents, &reference["latents"], 1e-3);
    eprintln!("{what}: final latents within {:.1e}", rel_l2(&out.latents, &reference["latents"]));
    assert_close(&format!("{what}: decoded image"), &out.image, &reference["decoded"], 1e-3);

    let png = load_png(&generation_dir().join(format!("case_{}.png", case.id)));
    let ours = out.rgb8().unwrap();
    let max_diff = max_level_difference(&ours, &png);
    assert!(max_diff <= 2, "{what}: PNG differs by {max_diff} levels");
    eprintln!("{what}: PNG within {max_diff} levels");

    let reprs = out.representations.as_ref();
    for p in &case.capture {
        let reprs = reprs.expect("captures requested");
        let cond_index = if case.capture_both_halves && case.guidance > 1.0 { 1 } else { 0 };
        let ours = reprs.image(p, cond_index).unwrap();
        assert_close(&format!("{what}: capture {p}"), ours, &reference[&format!("cap/{p}")], 1e-4);
        if let Some(uncond) = reference.get(&format!("cap_uncond/{p}")) {
            assert_close(&format!("{what}: unconditional capture {p}"), reprs.image(p, 0).unwrap(), uncond, 1e-4);
        }
    }
}

fn run_model(model: &str) {
    let cases: Vec<GenCase> = gen_cases().into_iter().filter(|c| c.model == model).collect();
    assert!(!cases.is_empty(), "no generation references for {model}");
    for case in &cases {
        run_case(case);
    }
}

#[test]
fn generation_matches_diffusers_sd1() {
    run_model("sd1");
}

#[test]
fn generation_matches_diffusers_sd2() {
    run_model("sd2");
}

#[test]
fn generation_matches_diffusers_sdxl() {
    run_model("sdxl");
}

#[derive(Debug, serde::Deserialize)]
struct ScheduleRef {
    class: String,
    config: serde_json::Map<String, serde_json::Value>,
    steps: usize,
    timesteps: Vec<f64>,
    sigmas: Option<Vec<f64>>,
    init_noise_sigma: f64,
}

#[test]
fn sampler_schedules_match_diffusers() {
    let refs: Vec<ScheduleRef> =
        serde_json::from_str(&std::fs::read_to_string(generation_dir().join("schedulers.json")).unwrap()).unwrap();
    assert!(refs.len() > 50);
    let mut checked = HashMap::new();
    for r in &refs {
        let mut config = r.config.clone();
        config.insert("_class_name".into(), r.class.clone().into());
        let config: SchedulerConfig = serde_json::from_value(config.into()).unwrap();
        let what = format!("{} {:?} steps={}", r.class, r.config, r.steps);
        let sampler = match build_sampler(None, &config, std::path::Path::new("schedulers.json"), r.steps) {
            Ok(s) => s,
            Err(e) => panic!("{what}: {e}"),
        };
        assert_eq!(sampler.timesteps().len(), r.timesteps.len(), "{what}: number of timesteps");
        for (a, b) in sampler.timesteps().iter().zip(&r.timesteps) {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{what}: timesteps {:?} vs {:?}",
                sampler.timesteps(),
                r.timesteps
            );
        }
        let rel = (sampler.init_noise_sigma() - r.init_noise_sigma).abs() / r.init_noise_sigma.abs().max(1e-12);
        assert!(rel < 1e-6, "{what}: init_noise_sigma {} vs {}", sampler.init_noise_sigma(), r.init_noise_sigma);
        if let Some(sigmas) = &r.sigmas {
            let ours = sampler.sigmas().expect("an Euler sampler");
            assert_eq!(ours.len(), sigmas.len(), "{what}: sigmas");
            for (a, b) in ours.iter().zip(sigmas) {
                assert!((*a as f64 - b).abs() <= 1e-6 * b.abs().max(1e-3), "{what}: sigmas {ours:?} vs {sigmas:?}");
            }
        }
        *checked.entry(r.class.clone()).or_insert(0) += 1;
    }
    assert!(checked.len() >= 4, "schedulers covered: {checked:?}");
}

#[test]
fn generation_errors_are_typed() {
    let pipe = Pipeline::load_with(
        pipeline_dir("sd1").to_str().unwrap(),
        LoadOptions { progress: false, ..LoadOptions::default() },
    )
    .unwrap();
    let base = GenerateRequest::new("a cat").steps(2).progress(false);
    let err = pipe.generate(&base.clone().size(60, 64)).err().unwrap();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let err = pipe.generate(&base.clone().steps(0)).err().unwrap();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let err = pipe.generate(&base.clone().capture(["mid_blok"])).err().unwrap();
    assert!(matches!(err, Error::UnknownPosition { .. }), "{err}");
    assert!(SamplerKind::parse("dpm++").is_err());
    let mut edits = Interventions::new();
    edits.add_direction("mid_block", AddDirection::new(Tensor::ones([3], (Kind::Float, Device::Cpu)), 1.0));
    let err = pipe.generate_with(&base.clone().size(64, 64), &mut edits).err().unwrap();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(err.to_string().contains("channels"), "{err}");
}

/// In extraction, an added direction changes the edited position's output by exactly `strength · mask · d`,
/// and nothing before it.
#[test]
fn extraction_interventions_add_exactly_the_direction() {
    let pipe = Pipeline::load_with(
        pipeline_dir("sd1").to_str().unwrap(),
        LoadOptions { progress: false, ..LoadOptions::default() },
    )
    .unwrap();
    let image = fixtures().join("images/square.png");
    let positions = ["down_blocks[2]", "mid_block"];
    let request = ExtractRequest::new(positions).timesteps(&[100, 600]).seed(3).prompt("a cat").progress(false);
    let plain = pipe.extract(&request, &[&image]).unwrap();
    let channels = plain.image("mid_block", 0).unwrap().size()[1];
    let direction = Tensor::linspace(-1.0, 1.0, channels, (Kind::Float, Device::Cpu));
    let mask = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).reshape([2, 2]);
    let mut edits = Interventions::new();
    edits.add_direction(
        "mid_block",
        AddDirection::new(direction.shallow_clone(), 2.5).mask(mask.shallow_clone()).steps(1..2),
    );
    let edited = pipe.extract_with(&request, &[&image], &mut edits).unwrap();
    let before = plain.image("down_blocks[2]", 0).unwrap();
    assert_eq!(rel_l2(edited.image("down_blocks[2]", 0).unwrap(), before), 0.0, "upstream output changed");
    let delta = edited.image("mid_block", 0).unwrap() - plain.image("mid_block", 0).unwrap();
    assert_eq!(delta.get(0).abs().max().double_value(&[]), 0.0, "step 0 is outside the step range");
    let expected = direction.reshape([channels, 1, 1]) * mask.unsqueeze(0) * 2.5;
    assert_close("added direction", &delta.get(1), &expected, 1e-5);
}
