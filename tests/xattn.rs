//! Cross-attention maps against diffusers (explicit float32 probabilities in every `attn2`, see
//! `tests/fixtures/make_xattn_refs.py`), token selection, reductions, rendering and the `xattn` CLI.

mod common;

use common::*;
use sdscope::prelude::*;
use sdscope::taps::Taps;
use sdscope::xattn::*;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, serde::Deserialize)]
struct XCase {
    id: usize,
    model: String,
    image: String,
    prompt: String,
    timestep: i64,
    seed: i64,
    width: i64,
    height: i64,
    heads_layer: String,
    truncated: bool,
}

fn xattn_dir() -> PathBuf {
    let dir = fixtures().join("xattn");
    assert!(
        dir.join(".complete").is_file(),
        "cross-attention references missing in {} — run `bash .ci/run`",
        dir.display()
    );
    dir
}

fn xcases() -> Vec<XCase> {
    serde_json::from_str(&std::fs::read_to_string(xattn_dir().join("cases.json")).unwrap()).unwrap()
}

fn xreference(case: &XCase) -> HashMap<String, Tensor> {
    sdscope::tensor_io::load(&xattn_dir().join(format!("case_{}.safetensors", case.id))).unwrap().0
}

fn load(model: &str) -> Pipeline {
    Pipeline::load_with(
        pipeline_dir(model).to_str().unwrap(),
        LoadOptions { progress: false, ..LoadOptions::default() },
    )
    .unwrap()
}

fn request(case: &XCase) -> AttentionRequest {
    AttentionRequest::new(&case.prompt).timestep(case.timestep).seed(case.seed)
}

fn image_path(case: &XCase) -> PathBuf {
    fixtures().join("images").join(&case.image)
}

/// The maps are close to uniform (≈ 1/77) on random weights, so besides the relative error of the whole map
/// the deviation from uniform is compared too, and the largest absolute difference.
fn assert_probs_close(what: &str, ours: &Tensor, theirs: &Tensor) {
    assert_close(what, ours, theirs, 1e-4);
    let uniform = 1.0 / 77.0;
    assert_close(&format!("{what} (minus uniform)"), &(ours - uniform), &(theirs - uniform), 1e-3);
    let max_abs = (ours - theirs).abs().max().double_value(&[]);
    assert!(max_abs < 1e-6, "{what}: max abs difference {max_abs:.2e}");
}

fn run_parity(model: &str) {
    let cases: Vec<XCase> = xcases().into_iter().filter(|c| c.model == model).collect();
    assert!(!cases.is_empty());
    let pipe = load(model);
    for case in &cases {
        let r = xreference(case);
        let maps = pipe.cross_attention(image_path(case), &request(case)).unwrap();
        let expected: Vec<&String> = r.keys().filter(|k| k.ends_with(".attn2") && !k.starts_with("heads/")).collect();
        assert_eq!(maps.layers().len(), expected.len(), "case {}: layers {:?}", case.id, maps.layers());
        assert_eq!(maps.layers(), pipe.cross_attention_layers().as_slice());
        for layer in maps.layers() {
            let ours = maps.head_mean(layer, 0).unwrap();
            assert_probs_close(&format!("case {} {layer}", case.id), &ours, &r[layer]);
            let sums = ours.sum_dim_intlist(0, false, Kind::Float);
            let worst = (sums - 1.0).abs().max().double_value(&[]);
            assert!(worst < 1e-5, "case {} {layer}: token probabilities sum to 1 ± {worst:.1e}", case.id);
        }
        assert_eq!(maps.image_size, (case.height, case.width));

        let per_head = pipe.cross_attention(image_path(case), &request(case).per_head(true)).unwrap();
        let layer = &case.heads_layer;
        let ours = per_head.layer(layer).unwrap().get(0);
        assert_probs_close(&format!("case {} {layer} per head", case.id), &ours, &r[&format!("heads/{layer}")]);
    }
}

#[test]
fn probabilities_match_diffusers_sd1() {
    run_parity("sd1");
}

#[test]
fn probabilities_match_diffusers_sd2() {
    run_parity("sd2");
}

#[test]
fn probabilities_match_diffusers_sdxl() {
    run_parity("sdxl");
}

#[test]
fn recording_attention_leaves_the_unet_output_unchanged() {
    for model in ["sd1", "sdxl"] {
        let case = xcases().into_iter().find(|c| c.model == model).unwrap();
        let r = xreference(&case);
        let pipe = load(model);
        let cond = pipe.encode_prompt(&case.prompt).unwrap();
        let size = (case.height, case.width);
        let plain = pipe.unet_pass(&r["noisy"], case.timestep, &cond, size, &mut Taps::none()).unwrap().unwrap();
        let mut taps = Taps::none();
        taps.record_attention(None, true);
        let recorded = pipe.unet_pass(&r["noisy"], case.timestep, &cond, size, &mut taps).unwrap().unwrap();
        assert_eq!(taps.take_attention().len(), pipe.cross_attention_layers().len());
        assert_close(&format!("{model}: U-Net output while recording"), &recorded, &plain, 1e-5);
        assert_close(&format!("{model}: U-Net output vs diffusers"), &plain, &r["unet_out"], 1e-4);
    }
}

#[test]
fn tokens_words_and_truncation() {
    let pipe = load("sd1");
    let cases = xcases();
    let case = cases.iter().find(|c| c.model == "sd1" && c.prompt.contains("photorealistic") && !c.truncated).unwrap();
    let maps = pipe.cross_attention(image_path(case), &request(case)).unwrap();
    let table = &maps.tokens;
    // VXA's convention: 0 is BOS, 1 the first token of the prompt.
    assert_eq!(table.entries[0].kind, TokenKind::Bos);
    let first_word = case.prompt.split_whitespace().next().unwrap();
    assert_eq!((table.entries[1].kind, table.entries[1].text.as_str()), (TokenKind::Text, first_word));
    assert_eq!(table.select(&TokenSelection::Indices(vec![1])).unwrap(), vec![1]);
    // A word split into sub-tokens is found whole.
    let photo = table.select(&TokenSelection::Word("Photorealistic".into())).unwrap();
    assert!(photo.len() >= 2, "photorealistic is several BPE tokens: {photo:?}");
    assert!(photo.iter().all(|&i| table.entries[i].word.as_deref() == Some("photorealistic")));
    let eos = table.select(&TokenSelection::Eos).unwrap();
    assert_eq!(eos.len(), 1);
    assert!(table.entries[eos[0]].index > *photo.last().unwrap());

    // A word map is the mean of its tokens' maps (every sub-token of every occurrence): check against maps
    // made one token at a time.
    let cat = table.select(&TokenSelection::Word("cat".into())).unwrap();
    assert!(cat.len() >= 2, "the prompt repeats `cat`");
    let word_map = maps.map(&MapQuery::word("cat")).unwrap();
    let by_hand =
        cat.iter().map(|&i| maps.map(&MapQuery::tokens(&[i])).unwrap()).fold(None, |acc: Option<Tensor>, m| {
            Some(match acc {
                Some(a) => a + m,
                None => m,
            })
        });
    let by_hand = by_hand.unwrap() / cat.len() as f64;
    assert_close("word map vs. its tokens", &word_map, &by_hand, 1e-6);
    // Summed indices (VXA) = sum of the single-token maps.
    let summed = maps.map(&MapQuery::tokens(&cat)).unwrap();
    assert_close("summed tokens", &summed, &(by_hand * cat.len() as f64), 1e-6);
    // Per layer, before upsampling, the hand computation is plain indexing.
    let layer = maps.layers()[0].clone();
    let (h, w) = maps.grid(&layer).unwrap();
    let query = MapQuery::word("cat").layers(LayerSelect::List(vec![layer.clone()])).upsample(Upsample::Nearest);
    let (_, per_token) = maps.token_maps(&query).unwrap();
    let probs = maps.head_mean(&layer, 0).unwrap();
    let scale = case.height / h;
    assert_eq!(case.width / w, scale);
    for (k, &i) in cat.iter().enumerate() {
        let ours = per_token.get(k as i64).slice(0, 0, None, scale).slice(1, 0, None, scale);
        assert_close("nearest upsampling keeps values", &ours, &probs.get(i as i64), 1e-7);
    }

    let long = cases.iter().find(|c| c.truncated).expect("a case over 77 tokens");
    let tables = pipe.token_tables(&long.prompt).unwrap();
    assert!(!tables[0].truncated_words.is_empty());
    assert!(tables[0].to_text().contains("truncated"));
    let cut = tables[0].truncated_words.last().unwrap().to_lowercase();
    let cut: String = cut.chars().filter(|c| c.is_alphanumeric()).collect();
    if !tables[0].words().iter().any(|w| w.to_lowercase() == cut) {
        let err = tables[0].select(&TokenSelection::Word(cut.clone())).unwrap_err();
        assert!(err.to_string().contains("cut off"), "{err}");
    }
    let err = table.select(&TokenSelection::Word("zebra".into())).unwrap_err();
    assert!(err.to_string().contains("photorealistic"), "lists the words: {err}");
    let err = table.select(&TokenSelection::Indices(vec![77])).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

#[test]
fn reductions_and_renders() {
    let pipe = load("sd2");
    let case = xcases().into_iter().find(|c| c.model == "sd2" && c.width != c.height).unwrap();
    let maps = pipe.cross_attention(image_path(&case), &request(&case).per_head(true)).unwrap();
    let (h, w) = maps.image_size;
    let base = MapQuery::tokens(&[1, 2]);
    for query in [
        base.clone(),
        base.clone().heads(HeadReduce::Sum),
        base.clone().heads(HeadReduce::Single(0)),
        base.clone().layers(LayerSelect::Block("up_blocks[1]".into())),
        base.clone().layers(LayerSelect::Resolution(maps.grid(&maps.layers()[0]).unwrap().0)),
        base.clone().upsample(Upsample::Bilinear).normalize(Normalize::MinMax),
        base.clone().token_reduce(TokenReduce::Mean).normalize(Normalize::Max),
        base.clone().normalize(Normalize::TokenShare),
    ] {
        let map = maps.map(&query).unwrap();
        assert_eq!(map.size(), vec![h, w], "{query:?}");
        assert!(map.min().double_value(&[]) >= 0.0, "{query:?}");
    }
    let max = maps.map(&base.clone().normalize(Normalize::Max)).unwrap();
    assert!((max.max().double_value(&[]) - 1.0).abs() < 1e-6);
    let heads_sum = maps.map(&base.clone().heads(HeadReduce::Sum)).unwrap();
    let heads_mean = maps.map(&base.clone()).unwrap();
    let n_heads = maps.layer(&maps.layers()[0]).unwrap().size()[1];
    let first = LayerSelect::List(vec![maps.layers()[0].clone()]);
    let sum0 = maps.map(&base.clone().heads(HeadReduce::Sum).layers(first.clone())).unwrap();
    let mean0 = maps.map(&base.clone().layers(first)).unwrap();
    assert_close("head sum = heads × mean", &sum0, &(mean0 * n_heads as f64), 1e-6);
    assert!(heads_sum.max().double_value(&[]) > heads_mean.max().double_value(&[]));
    assert!(maps.map(&base.clone().heads(HeadReduce::Single(99))).is_err());
    assert!(maps.map(&base.clone().layers(LayerSelect::Block("down_blocks[7]".into()))).is_err());
    assert!(maps.map(&base.clone().steps(StepSelect::Single(3))).is_err());

    let map = maps.map(&base).unwrap();
    for mode in [RenderMode::Heat, RenderMode::Overlay, RenderMode::Masked, RenderMode::Grey] {
        let img = render(&map, maps.image.as_ref(), &RenderOptions::mode(mode)).unwrap();
        assert_eq!(img.height() as i64, h);
        if mode == RenderMode::Heat {
            assert!(img.width() as i64 > w, "a colour bar is added");
        } else {
            assert_eq!(img.width() as i64, w);
        }
        let distinct: std::collections::HashSet<_> = img.pixels().map(|p| p.0).collect();
        assert!(distinct.len() > 8, "{mode:?} render is not blank");
    }
    assert!(render(&map, None, &RenderOptions::mode(RenderMode::Overlay)).is_err());
    let html =
        html_grid(&[("<b>cat</b> & hat".into(), render(&map, None, &RenderOptions::default()).unwrap())], 64).unwrap();
    assert!(html.contains("data:image/png;base64,") && html.contains("&lt;b&gt;cat&lt;/b&gt; &amp; hat"));
}

#[test]
fn attention_during_generation() {
    let pipe = load("sdxl");
    let request = GenerateRequest::new("a cat wearing a red hat, the cat is happy")
        .steps(3)
        .guidance(5.0)
        .size(64, 64)
        .seed(5)
        .progress(false)
        .attention(AttentionCapture::default());
    let out = pipe.generate(&request).unwrap();
    let maps = out.attention.as_ref().unwrap();
    assert_eq!(maps.timesteps, out.timesteps);
    assert_eq!(maps.layers(), pipe.cross_attention_layers().as_slice());
    for layer in maps.layers() {
        let t = maps.layer(layer).unwrap();
        assert_eq!(t.size()[..3], [3, 1, 77]);
        let sums = t.sum_dim_intlist(2, false, Kind::Float);
        assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-5);
    }
    let hat = maps.map(&MapQuery::word("hat").steps(StepSelect::Range(1..3))).unwrap();
    assert_eq!(hat.size(), vec![64, 64]);
    let overlay = render(&hat, maps.image.as_ref(), &RenderOptions::mode(RenderMode::Overlay)).unwrap();
    assert_eq!(overlay.dimensions(), (64, 64));
    // Recording attention does not change the image.
    let plain = pipe.generate(&GenerateRequest { attention: None, ..request.clone() }).unwrap();
    assert_close("latents with and without attention recording", &out.latents, &plain.latents, 1e-6);
}

#[test]
fn cli_writes_every_layer_and_renders() {
    let case = xcases().into_iter().find(|c| c.model == "sdxl" && c.width != c.height).unwrap();
    let r = xreference(&case);
    let tmp = scratch("cli-xattn");
    let out = tmp.join("maps.safetensors");
    let run = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sdscope"));
        cmd.args(["xattn", "--model", pipeline_dir(&case.model).to_str().unwrap()]);
        cmd.args(["--image", image_path(&case).to_str().unwrap(), "--prompt", &case.prompt]);
        cmd.args(["--timestep", &case.timestep.to_string(), "--seed", &case.seed.to_string()]);
        cmd.args(["--out", out.to_str().unwrap()]).args(extra);
        cmd.output().unwrap()
    };
    let result = run(&[]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let (tensors, _) = sdscope::tensor_io::load(&out).unwrap();
    let expected: Vec<&String> = r.keys().filter(|k| k.ends_with(".attn2") && !k.starts_with("heads/")).collect();
    assert_eq!(tensors.len(), expected.len());
    for key in expected {
        let ours = &tensors[key.as_str()];
        assert_eq!(ours.kind(), Kind::Float);
        assert_eq!(ours.size()[0], 77, "{key}: tokens first");
        assert_probs_close(key, ours, &r[key]);
    }
    for (mode, flag) in [("heat", "--tokens"), ("overlay", "--word"), ("masked", "--tokens"), ("grey", "--word")] {
        let png = tmp.join(format!("{mode}.png"));
        let value = if flag == "--word" { "cat" } else { "2,5" };
        let result = run(&[flag, value, "--png", png.to_str().unwrap(), "--mode", mode]);
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        let img = image::open(&png).unwrap().to_rgb8();
        assert_eq!(img.height() as i64, case.height);
    }
    let result = run(&["--word", "zebra", "--png", tmp.join("z.png").to_str().unwrap()]);
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("zebra") && !stderr.contains("panicked"), "{stderr}");
}
