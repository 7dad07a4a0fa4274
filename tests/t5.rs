//! SD3's T5 text encoder and tokenizer against transformers (`T5EncoderModel`, `T5TokenizerFast`): token ids for
//! every reference text, `last_hidden_state` and the first block's output in float32, a bf16 and an fp16 encoder
//! against the float32 reference, and the errors for a folder without `tokenizer.json` or with an unknown
//! feed-forward activation.

mod common;

use common::*;
use sdscope::config::{read_json, T5Config};
use sdscope::hub::component_weights;
use sdscope::models::T5Encoder;
use sdscope::tokenizer::T5Tokenizer;
use sdscope::weights::Weights;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// The T5 sequence length of the references (SD3's `max_sequence_length`).
const MAX_LENGTH: usize = 256;

fn sd3_dir() -> PathBuf {
    let dir = fixtures().join("mmdit");
    assert!(dir.join(".complete").is_file(), "MMDiT references missing in {} — run `bash .ci/run`", dir.display());
    dir.join("sd3")
}

fn references() -> HashMap<String, Tensor> {
    sdscope::tensor_io::load(&sd3_dir().join("reference/t5.safetensors")).unwrap().0
}

/// The `K` of every `ids_K` reference, sorted.
fn cases(refs: &HashMap<String, Tensor>) -> Vec<usize> {
    let mut ks: Vec<usize> = refs.keys().filter_map(|k| k.strip_prefix("ids_")?.parse().ok()).collect();
    ks.sort();
    assert!(!ks.is_empty(), "no ids_K in reference/t5.safetensors");
    ks
}

fn encoder(dtype: Kind) -> T5Encoder {
    let dir = sd3_dir().join("text_encoder_3");
    let config_path = dir.join("config.json");
    let config: T5Config = read_json(&config_path).unwrap();
    let weights = Weights::open_mapped(&component_weights(&dir).unwrap(), dtype, Device::Cpu).unwrap();
    T5Encoder::load(config, &config_path, &weights).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

/// Relative L2 error, checked against `tol` and printed with the largest absolute difference.
fn check(what: &str, ours: &Tensor, reference: &Tensor, tol: f64) {
    assert_eq!(ours.size(), reference.size(), "{what}: shape {:?} vs reference {:?}", ours.size(), reference.size());
    let (err, abs) = (rel_l2(ours, reference), max_abs(ours, reference));
    println!("{what}: relative L2 {err:.3e}, max abs {abs:.3e}");
    assert!(err <= tol, "{what}: relative L2 error {err:.3e} > {tol:.0e} (max abs {abs:.3e})");
}

#[test]
fn token_ids_match_transformers() {
    let tokenizer = T5Tokenizer::from_dir(&sd3_dir().join("tokenizer_3")).unwrap();
    let path = sd3_dir().join("reference/t5_tokens.json");
    let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(!cases.is_empty(), "{} lists no texts", path.display());
    let mut failures = Vec::new();
    for case in &cases {
        let text = case["text"].as_str().expect("text");
        let expected: Vec<i64> = case["ids"].as_array().expect("ids").iter().map(|v| v.as_i64().unwrap()).collect();
        let encoding = tokenizer.encode(text, expected.len()).unwrap();
        if encoding.ids != expected {
            failures.push(format!("{text:?}\n  expected {expected:?}\n  got      {:?}", encoding.ids));
            continue;
        }
        assert_eq!(encoding.tokens.len(), expected.len(), "{text:?}: one token string per id");
        assert_eq!(encoding.ids[encoding.length - 1], tokenizer.eos_id(), "{text:?}: `</s>` ends the text");
        assert!(encoding.ids[encoding.length..].iter().all(|&id| id == tokenizer.pad_id()), "{text:?}: padding");
        if !encoding.truncated_words.is_empty() {
            assert_eq!(encoding.length, expected.len(), "{text:?}: truncated, so no padding");
        }
    }
    assert!(failures.is_empty(), "{} of {} texts differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn last_hidden_state_and_first_block_match_transformers() {
    let refs = references();
    let t5 = encoder(Kind::Float);
    for k in cases(&refs) {
        let ids = &refs[&format!("ids_{k}")];
        let out = t5.forward_with_hidden_states(ids).unwrap();
        assert_eq!(out.hidden_states.len() as i64, t5.config.num_layers + 1);
        check(
            &format!("text {k} last_hidden_state"),
            &out.last_hidden_state,
            &refs[&format!("last_hidden_state_{k}")],
            1e-4,
        );
        check(&format!("text {k} block 0"), &out.hidden_states[1], &refs[&format!("block0_{k}")], 1e-4);
        let plain = t5.forward(ids).unwrap();
        assert!(plain.equal(&out.last_hidden_state), "text {k}: forward and forward_with_hidden_states differ");
    }
}

#[test]
fn tokenizer_gives_the_reference_ids() {
    let refs = references();
    let tokenizer = T5Tokenizer::from_dir(&sd3_dir().join("tokenizer_3")).unwrap();
    let listed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sd3_dir().join("reference/t5.json")).unwrap()).unwrap();
    let texts = texts_of(&listed);
    for k in cases(&refs) {
        let text = texts.get(k).unwrap_or_else(|| panic!("reference/t5.json has no text {k}"));
        let ids = Tensor::from_slice(&tokenizer.encode(text, MAX_LENGTH).unwrap().ids).unsqueeze(0);
        assert!(ids.equal(&refs[&format!("ids_{k}")]), "text {k} {text:?}: ids differ from ids_{k}");
    }
}

/// The texts of `reference/t5.json`: a list of strings, of `{"text": ..}` objects, or either under `"texts"`.
fn texts_of(value: &serde_json::Value) -> Vec<String> {
    let list = value.get("texts").unwrap_or(value).as_array().expect("a list of texts");
    list.iter().map(|t| t.as_str().or_else(|| t["text"].as_str()).expect("a text").to_string()).collect()
}

#[test]
fn half_precision_encoders_stay_close_to_float32() {
    let refs = references();
    for (dtype, tol) in [(Kind::BFloat16, 2e-2), (Kind::Half, 5e-3)] {
        let t5 = encoder(dtype);
        for k in cases(&refs) {
            let out = t5.forward(&refs[&format!("ids_{k}")]).unwrap();
            assert_eq!(out.kind(), Kind::Float, "{dtype:?}: the output is float32");
            assert!(out.isfinite().all().int64_value(&[]) == 1, "{dtype:?} text {k}: non-finite values");
            check(
                &format!("{dtype:?} text {k} last_hidden_state"),
                &out,
                &refs[&format!("last_hidden_state_{k}")],
                tol,
            );
        }
    }
}

#[test]
fn sentencepiece_only_folder_says_tokenizer_json_is_needed() {
    let dir = scratch("t5-spiece-only");
    std::fs::write(dir.join("spiece.model"), b"not a real model").unwrap();
    let err = T5Tokenizer::from_dir(&dir).unwrap_err().to_string();
    for needle in ["tokenizer.json", "spiece.model", "SentencePiece", "save_pretrained"] {
        assert!(err.contains(needle), "the error should mention {needle}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_feed_forward_activation_lists_the_supported_ones() {
    let dir = sd3_dir().join("text_encoder_3");
    let mut config: T5Config = read_json(&dir.join("config.json")).unwrap();
    config.feed_forward_proj = "gated-mish".into();
    config.dense_act_fn = None;
    let weights = Weights::open(&component_weights(&dir).unwrap(), Kind::Float, Device::Cpu).unwrap();
    let err = T5Encoder::load(config, &dir.join("config.json"), &weights).err().expect("an error").to_string();
    assert!(err.contains("gated-mish") && err.contains("gated-silu") && err.contains("relu"), "{err}");
}
