use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A throw-away folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("sdscope-tokenizer-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const MERGES: [(&str, &str); 8] = [
    ("c", "a"),
    ("ca", "t</w>"),
    ("d", "o"),
    ("do", "g</w>"),
    ("!", "!</w>"),
    ("Ã", "©</w>"),
    ("a", "n"),
    ("an", "d</w>"),
];

/// A miniature CLIP vocabulary: the 256 byte characters, the same with `</w>`, a few merges,
/// then the two special tokens (ids in the same layout as the real one).
fn vocab() -> Vec<String> {
    // GPT-2 order (printable bytes first), which sorting by code point gives.
    let mut chars = byte_to_char_table();
    chars.sort();
    let bytes: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    let mut vocab = bytes.clone();
    vocab.extend(bytes.iter().map(|b| format!("{b}</w>")));
    vocab.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    vocab
}

fn id(token: &str) -> i64 {
    vocab().iter().position(|t| t == token).unwrap() as i64
}

fn write_vocab_files(dir: &Path) {
    let map: Map<String, Value> = vocab().into_iter().enumerate().map(|(i, t)| (t, Value::from(i))).collect();
    fs::write(dir.join("vocab.json"), Value::Object(map).to_string()).unwrap();
    let mut merges = String::from("#version: 0.2\n");
    for (a, b) in MERGES {
        merges.push_str(&format!("{a} {b}\n"));
    }
    fs::write(dir.join("merges.txt"), merges).unwrap();
}

/// The legacy configuration SD repos ship: bos/eos/unk as normalized `AddedToken`s, pad a string.
fn write_sd_config(dir: &Path, pad: &str) {
    let added = |content: &str| {
        serde_json::json!({"__type": "AddedToken", "content": content, "lstrip": false,
                           "normalized": true, "rstrip": false, "single_word": false})
    };
    let config = serde_json::json!({
        "add_prefix_space": false, "bos_token": added("<|startoftext|>"), "do_lower_case": true,
        "eos_token": added("<|endoftext|>"), "errors": "replace", "model_max_length": 77,
        "pad_token": pad, "tokenizer_class": "CLIPTokenizer", "unk_token": added("<|endoftext|>"),
    });
    fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let plain = |content: &str| {
        serde_json::json!({"content": content, "lstrip": false, "normalized": true,
                           "rstrip": false, "single_word": false})
    };
    let map = serde_json::json!({
        "bos_token": plain("<|startoftext|>"), "eos_token": plain("<|endoftext|>"),
        "pad_token": pad, "unk_token": plain("<|endoftext|>"),
    });
    fs::write(dir.join("special_tokens_map.json"), map.to_string()).unwrap();
}

fn sd_tokenizer(pad: &str) -> (TempDir, ClipTokenizer) {
    let dir = TempDir::new();
    write_vocab_files(&dir.0);
    write_sd_config(&dir.0, pad);
    let tok = ClipTokenizer::from_dir(&dir.0).unwrap();
    (dir, tok)
}

fn head(enc: &Encoding) -> &[i64] {
    &enc.ids[..enc.length]
}

#[test]
fn basic_words_and_padding_sd1() {
    let (_dir, tok) = sd_tokenizer("<|endoftext|>");
    assert_eq!(tok.max_len(), 77);
    assert_eq!(tok.bos_id(), id("<|startoftext|>"));
    assert_eq!(tok.eos_id(), id("<|endoftext|>"));
    assert_eq!(tok.pad_id(), tok.eos_id());
    assert!(format!("{tok:?}").contains("vocab_size: 522"));
    let enc = tok.encode("A  CAT and\tdog").unwrap();
    assert_eq!(enc.ids.len(), 77);
    assert_eq!(enc.tokens.len(), 77);
    assert_eq!(head(&enc), [tok.bos_id(), id("a</w>"), id("cat</w>"), id("and</w>"), id("dog</w>"), tok.eos_id()]);
    assert_eq!(enc.length, 6);
    assert_eq!(&enc.tokens[..3], ["<|startoftext|>", "a</w>", "cat</w>"]);
    assert!(enc.ids[6..].iter().all(|&i| i == tok.pad_id()));
    assert!(enc.truncated_words.is_empty());
}

#[test]
fn empty_text_is_bos_eos_then_padding() {
    for pad in ["<|endoftext|>", "!"] {
        let (_dir, tok) = sd_tokenizer(pad);
        let enc = tok.encode("").unwrap();
        assert_eq!(enc.length, 2);
        assert_eq!(&enc.ids[..2], [tok.bos_id(), tok.eos_id()]);
        assert!(enc.ids[2..].iter().all(|&i| i == tok.pad_id()));
        let blank = tok.encode(" \n\t ").unwrap();
        assert_eq!(blank, enc);
    }
}

#[test]
fn sd2_pads_with_bang_and_treats_bang_as_special() {
    let (_dir, tok) = sd_tokenizer("!");
    assert_eq!(tok.pad_id(), id("!"));
    assert_eq!(tok.pad_id(), 0);
    let enc = tok.encode("cat!!").unwrap();
    // transformers registers the pad token `!` as a special token: every `!` is cut out alone.
    assert_eq!(head(&enc), [tok.bos_id(), id("cat</w>"), 0, 0, tok.eos_id()]);
    assert_eq!(enc.ids[5], 0);
    let (_dir1, sd1) = sd_tokenizer("<|endoftext|>");
    let enc1 = sd1.encode("cat!!").unwrap();
    assert_eq!(head(&enc1), [sd1.bos_id(), id("cat</w>"), id("!!</w>"), sd1.eos_id()]);
}

#[test]
fn special_tokens_written_in_the_text() {
    let (_dir, sd1) = sd_tokenizer("<|endoftext|>");
    let (bos, eos) = (sd1.bos_id(), sd1.eos_id());
    // <|endoftext|> is matched in the raw text only (normalized=false after pad registration),
    // <|startoftext|> in the lowercased text.
    let enc = sd1.encode("cat<|endoftext|>dog <|STARTOFTEXT|>").unwrap();
    assert_eq!(head(&enc), [bos, id("cat</w>"), eos, id("dog</w>"), bos, eos]);
    let upper = sd1.encode("<|ENDOFTEXT|>").unwrap();
    assert!(!head(&upper)[1..upper.length - 1].contains(&eos));
    let (_dir2, sd2) = sd_tokenizer("!");
    let upper2 = sd2.encode("<|ENDOFTEXT|>").unwrap();
    assert_eq!(head(&upper2), [bos, eos, eos]);
}

#[test]
fn truncation_keeps_bos_and_eos() {
    let (_dir, tok) = sd_tokenizer("<|endoftext|>");
    let fits = vec!["cat"; 75].join(" ");
    let enc = tok.encode(&fits).unwrap();
    assert_eq!(enc.length, 77);
    assert_eq!(enc.ids[76], tok.eos_id());
    assert!(enc.truncated_words.is_empty());

    let long = format!("{} and dog dog", vec!["cat"; 74].join(" "));
    let enc = tok.encode(&long).unwrap();
    assert_eq!(enc.ids.len(), 77);
    assert_eq!(enc.length, 77);
    assert_eq!(enc.ids[0], tok.bos_id());
    assert_eq!(enc.ids[75], id("and</w>"));
    assert_eq!(enc.ids[76], tok.eos_id());
    assert_eq!(enc.truncated_words, ["dog", "dog"]);

    let (_dir2, sd2) = sd_tokenizer("!");
    let enc = sd2.encode(&vec!["dog"; 100].join(" ")).unwrap();
    assert_eq!(enc.length, 77);
    assert_eq!(enc.ids[76], sd2.eos_id());
    assert_eq!(enc.truncated_words.len(), 25);
}

#[test]
fn bytes_and_token_text() {
    let (_dir, tok) = sd_tokenizer("<|endoftext|>");
    let enc = tok.encode("é").unwrap();
    assert_eq!(enc.tokens[1], "Ã©</w>");
    assert_eq!(tok.token_text(enc.ids[1]).as_deref(), Some("é"));
    assert_eq!(tok.token_text(id("cat</w>")).as_deref(), Some("cat"));
    assert_eq!(tok.token_text(tok.bos_id()).as_deref(), Some("<|startoftext|>"));
    assert_eq!(tok.token_text(-1), None);
    assert_eq!(tok.token_text(1 << 40), None);
    // A word with characters outside the miniature merges falls back to single bytes.
    let enc = tok.encode("日").unwrap();
    assert_eq!(enc.length, 5);
    let text: String = enc.ids[1..4].iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
    assert_eq!(tok.readable(&text), "日");
}

#[test]
fn tokenizer_json_gives_the_same_ids() {
    let (_dir, reference) = sd_tokenizer("!");
    let dir = TempDir::new();
    let vocab: Map<String, Value> = vocab().into_iter().enumerate().map(|(i, t)| (t, Value::from(i))).collect();
    let merges: Vec<Value> = MERGES.iter().map(|(a, b)| Value::from(format!("{a} {b}"))).collect();
    let added = |id: i64, content: &str, normalized: bool| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": normalized, "special": true})
    };
    let json = serde_json::json!({
        "version": "1.0",
        "added_tokens": [added(0, "!", false), added(id("<|startoftext|>"), "<|startoftext|>", true),
                         added(id("<|endoftext|>"), "<|endoftext|>", true)],
        "model": {"type": "BPE", "vocab": vocab, "merges": merges, "end_of_word_suffix": "</w>"},
    });
    fs::write(dir.0.join("tokenizer.json"), json.to_string()).unwrap();
    let config = serde_json::json!({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "!", "model_max_length": 77});
    fs::write(dir.0.join("tokenizer_config.json"), config.to_string()).unwrap();
    let tok = ClipTokenizer::from_dir(&dir.0).unwrap();
    for text in ["a cat and dog!!", "<|ENDOFTEXT|> É", "", &vec!["dog"; 90].join(" ")] {
        assert_eq!(tok.encode(text).unwrap(), reference.encode(text).unwrap(), "{text:?}");
    }
}

#[test]
fn added_tokens_decoder_flags_are_used() {
    let dir = TempDir::new();
    write_vocab_files(&dir.0);
    let entry = |content: &str, normalized: bool| {
        serde_json::json!({"content": content, "lstrip": false, "normalized": normalized,
                           "rstrip": false, "single_word": false, "special": true})
    };
    let config = serde_json::json!({
        "added_tokens_decoder": {
            id("<|startoftext|>").to_string(): entry("<|startoftext|>", true),
            id("<|endoftext|>").to_string(): entry("<|endoftext|>", true),
        },
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "model_max_length": 77,
    });
    fs::write(dir.0.join("tokenizer_config.json"), config.to_string()).unwrap();
    let tok = ClipTokenizer::from_dir(&dir.0).unwrap();
    // <|endoftext|> is normalized here, so the upper-case spelling is recognized.
    let enc = tok.encode("<|ENDOFTEXT|>").unwrap();
    assert_eq!(head(&enc), [tok.bos_id(), tok.eos_id(), tok.eos_id()]);
}

#[test]
fn defaults_without_config_and_sentinel_max_length() {
    let dir = TempDir::new();
    write_vocab_files(&dir.0);
    let tok = ClipTokenizer::from_dir(&dir.0).unwrap();
    assert_eq!(tok.max_len(), DEFAULT_MAX_LEN);
    assert_eq!(tok.pad_id(), id("<|endoftext|>"));
    let config = serde_json::json!({"model_max_length": 1000000000000000019884624838656.0f64});
    fs::write(dir.0.join("tokenizer_config.json"), config.to_string()).unwrap();
    assert_eq!(ClipTokenizer::from_dir(&dir.0).unwrap().max_len(), DEFAULT_MAX_LEN);
    fs::write(dir.0.join("tokenizer_config.json"), r#"{"model_max_length": 16}"#).unwrap();
    let short = ClipTokenizer::from_dir(&dir.0).unwrap();
    let enc = short.encode(&vec!["cat"; 20].join(" ")).unwrap();
    assert_eq!(enc.ids.len(), 16);
    assert_eq!(enc.ids[15], short.eos_id());
    assert_eq!(enc.truncated_words.len(), 6);
}

#[test]
fn missing_files_are_reported() {
    let dir = TempDir::new();
    match ClipTokenizer::from_dir(&dir.0) {
        Err(Error::MissingFile { path, .. }) => assert!(path.ends_with("vocab.json")),
        other => panic!("expected MissingFile, got {other:?}"),
    }
    match ClipTokenizer::from_dir(&dir.0.join("nope")) {
        Err(Error::MissingFile { .. }) => {}
        other => panic!("expected MissingFile, got {other:?}"),
    }
}
