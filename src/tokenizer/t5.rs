//! T5 SentencePiece-Unigram tokenizer that reproduces transformers 5's `T5TokenizerFast` (SD3's `tokenizer_3`)
//! id for id.
//!
//! As for CLIP, transformers 5 does not run the pipeline stored in `tokenizer.json`: `T5Tokenizer` rebuilds it in
//! code and takes only a few pieces from the file. This module rebuilds the same pipeline:
//!
//! 1. **Added tokens** (`<pad>`, `</s>`, `<unk>`, the `<extra_id_N>` sentinels, ...) by transformers' loading rules
//!    (the same rules as the CLIP tokenizer's, with T5's defaults: eos `</s>`, unk `<unk>`, pad `<pad>`, no bos,
//!    and `extra_ids` (100) sentinels when the folder names no extra special tokens). They are cut out of the text
//!    first, so a literal `</s>` in a prompt is the end-of-sequence token.
//! 2. **Normalizer**: the SentencePiece `Precompiled` character map when the file's normalizer has one, and
//!    nothing else: other normalizers in the file (a `Replace` of repeated spaces, NFKC, ...) are dropped, as
//!    transformers drops them.
//! 3. **Pre-tokenizer**: split on whitespace (runs of it, leading and trailing, vanish), then `▁` in front of
//!    every word (Metaspace, `prepend_scheme = always`), whatever the file says.
//! 4. **Model**: Unigram over the file's vocabulary and scores, unknown id 2, no byte fallback.
//! 5. **Post-processing**: `</s>` at the end (no start token).
//! 6. **Truncation and padding** as SD3's pipeline asks (`padding="max_length"`, `truncation=True`): at most
//!    `max_length - 1` text tokens are kept so that `</s>` stays last, then the pad id fills up to `max_length`.
//!
//! SentencePiece models (`spiece.model`) are not read: the folder needs a `tokenizer.json`.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{Map, Value};
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::Precompiled;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::Tokenizer;

use super::added_tokens::plan_added_tokens;
use super::{bad_config, read_json_if_exists, tok_err, Encoding};
use crate::error::{Error, Result};

/// The Metaspace replacement character that marks the start of a word.
const WORD_START: char = '▁';

/// transformers' `T5Tokenizer` builds its Unigram model with this unknown id whatever the file says.
const UNK_ID: usize = 2;

/// Sentinels `T5Tokenizer` adds when the folder names no extra special tokens (its `extra_ids` default).
const DEFAULT_EXTRA_IDS: u64 = 100;

/// A T5 tokenizer loaded from a `tokenizer_3/` folder whose ids equal those of transformers 5's
/// `T5TokenizerFast`.
#[derive(Clone)]
pub struct T5Tokenizer {
    inner: Tokenizer,
    eos_id: u32,
    pad_id: u32,
}

impl T5Tokenizer {
    /// Loads the tokenizer from a folder holding `tokenizer.json` and (optionally) `tokenizer_config.json`,
    /// `special_tokens_map.json` and `added_tokens.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                hint: Some("expected a T5 tokenizer folder with tokenizer.json".into()),
            });
        }
        let json_path = dir.join("tokenizer.json");
        let json = read_json_if_exists(&json_path)?.ok_or_else(|| missing_tokenizer_json(dir))?;
        let config_path = dir.join("tokenizer_config.json");
        let mut config = match read_json_if_exists(&config_path)? {
            Some(Value::Object(map)) => map,
            Some(_) => return Err(bad_config(&config_path, "not a JSON object")),
            None => Map::new(),
        };
        for side in ["truncation_side", "padding_side"] {
            if let Some(value) = config.get(side).and_then(Value::as_str) {
                if value != "right" {
                    return Err(Error::Unsupported {
                        path: config_path,
                        why: format!("{side} = {value:?}; only \"right\" is supported"),
                    });
                }
            }
        }
        add_t5_defaults(&mut config, &config_path)?;
        let plan = plan_added_tokens(dir, &config, Some(&json))?;

        let mut inner = Tokenizer::new(unigram_from_json(&json, &json_path)?);
        if let Some(precompiled) = precompiled_normalizer(&json, &json_path)? {
            inner.with_normalizer(Some(precompiled));
        }
        inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            WhitespaceSplit.into(),
            Metaspace::new(WORD_START, PrependScheme::Always, true).into(),
        ])));
        inner.add_tokens(&plan.added);

        let resolve = |what: &str, token: &Option<String>| -> Result<u32> {
            let token = token
                .as_deref()
                .ok_or_else(|| Error::Tokenizer(format!("{}: no {what} token is configured", dir.display())))?;
            inner.token_to_id(token).ok_or_else(|| {
                Error::Tokenizer(format!("{}: {what} token {token:?} is not in the vocabulary", dir.display()))
            })
        };
        let eos_id = resolve("eos", &plan.eos)?;
        let pad_id = resolve("pad", &plan.pad)?;
        Ok(Self { inner, eos_id, pad_id })
    }

    /// Tokenizes one prompt as `T5TokenizerFast(text, padding="max_length", max_length=max_length,
    /// truncation=True)`: the text tokens (at most `max_length - 1`), `</s>`, then [`Self::pad_id`] up to
    /// `max_length` (256 in SD3's pipeline).
    pub fn encode(&self, text: &str, max_length: usize) -> Result<Encoding> {
        if max_length == 0 {
            return Err(Error::invalid("max_length", "must be at least 1, room for `</s>`"));
        }
        let encoded = self.inner.encode(text, false).map_err(tok_err)?;
        let text_ids = encoded.get_ids();
        let kept = text_ids.len().min(max_length - 1);
        let mut ids = text_ids[..kept].to_vec();
        ids.push(self.eos_id);
        let length = ids.len();
        ids.resize(max_length, self.pad_id);
        let tokens = ids.iter().map(|&id| self.inner.id_to_token(id).unwrap_or_default()).collect();
        Ok(Encoding {
            ids: ids.iter().map(|&id| i64::from(id)).collect(),
            tokens,
            truncated_words: self.words_of(&text_ids[kept..]),
            length,
        })
    }

    /// Id of the end-of-sequence token `</s>`, the last non-padding token of every [`Encoding`].
    pub fn eos_id(&self) -> i64 {
        i64::from(self.eos_id)
    }

    /// Id used for padding (`<pad>`, 0 in T5 vocabularies).
    pub fn pad_id(&self) -> i64 {
        i64::from(self.pad_id)
    }

    /// Number of ids, added tokens included (can be below the encoder's `vocab_size`, which T5 rounds up).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The token string of one id as the vocabulary spells it (e.g. `"▁cat"`, `"s"`, `"</s>"`).
    pub fn id_to_token(&self, id: i64) -> Option<String> {
        u32::try_from(id).ok().and_then(|id| self.inner.id_to_token(id))
    }

    /// Human-readable text of one token for token tables: the word-start mark `▁` becomes a space (`" cat"`
    /// for `▁cat`, `"s"` for a word's continuation, `"</s>"` for the end token). `None` for unknown ids.
    pub fn token_text(&self, id: i64) -> Option<String> {
        self.id_to_token(id).map(|token| token.replace(WORD_START, " "))
    }

    /// Groups token ids into words (a word starts at a `▁` token; an added token is a word on its own).
    fn words_of(&self, ids: &[u32]) -> Vec<String> {
        let mut words: Vec<String> = Vec::new();
        let mut open = false;
        for &id in ids {
            let token = self.inner.id_to_token(id).unwrap_or_default();
            if self.inner.get_added_vocabulary().is_special_token(&token) {
                words.push(token);
                open = false;
                continue;
            }
            match token.strip_prefix(WORD_START) {
                Some(rest) => {
                    words.push(rest.to_string());
                    open = true;
                }
                None if open => words.last_mut().expect("an open word").push_str(&token),
                None => {
                    words.push(token);
                    open = true;
                }
            }
        }
        words.retain(|w| !w.is_empty());
        words
    }
}

impl std::fmt::Debug for T5Tokenizer {
    /// A summary; the vocabulary itself is too large to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

fn missing_tokenizer_json(dir: &Path) -> Error {
    let found = if dir.join("spiece.model").is_file() { " (spiece.model is there)" } else { "" };
    Error::MissingFile {
        path: dir.join("tokenizer.json"),
        hint: Some(format!(
            "sdscope reads T5 tokenizers from tokenizer.json only, not from SentencePiece models{found}; write it \
             with transformers (the sentencepiece and protobuf packages installed): python -c \"from transformers \
             import T5TokenizerFast as T; T.from_pretrained('{dir}').save_pretrained('{dir}')\"",
            dir = dir.display()
        )),
    }
}

/// What transformers' `T5Tokenizer` supplies when the folder does not say: its default named tokens, no bos,
/// and `<extra_id_0>`, ... `<extra_id_{extra_ids-1}>` as extra special tokens.
fn add_t5_defaults(config: &mut Map<String, Value>, config_path: &Path) -> Result<()> {
    for (key, default) in [("eos_token", "</s>"), ("unk_token", "<unk>"), ("pad_token", "<pad>")] {
        config.entry(key).or_insert_with(|| default.into());
    }
    config.entry("bos_token").or_insert(Value::Null);
    if !config.contains_key("extra_special_tokens") && !config.contains_key("additional_special_tokens") {
        let n = match config.get("extra_ids") {
            None => DEFAULT_EXTRA_IDS,
            Some(v) => v.as_u64().filter(|&n| n <= 1 << 16).ok_or_else(|| {
                bad_config(config_path, &format!("extra_ids must be a count of sentinel tokens, found {v}"))
            })?,
        };
        config.insert("extra_special_tokens".into(), (0..n).map(|i| format!("<extra_id_{i}>")).collect());
    }
    Ok(())
}

/// The Unigram model from the `model` section of a `tokenizer.json` (only its pieces and scores are used).
fn unigram_from_json(json: &Value, path: &Path) -> Result<Unigram> {
    let model = json.get("model").ok_or_else(|| bad_config(path, "no `model` section"))?;
    if let Some(kind) = model.get("type").and_then(Value::as_str) {
        if kind != "Unigram" {
            return Err(bad_config(path, &format!("model type is {kind:?}, a T5 tokenizer needs Unigram")));
        }
    }
    let entries = model
        .get("vocab")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_config(path, "model.vocab must be a list of [piece, score] pairs"))?;
    let vocab = entries
        .iter()
        .map(|entry| match entry.as_array().map(Vec::as_slice) {
            Some([Value::String(piece), score]) => score.as_f64().map(|s| (piece.clone(), s)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad_config(path, "model.vocab must be a list of [piece, score] pairs"))?;
    if vocab.len() <= UNK_ID {
        return Err(bad_config(
            path,
            &format!("the vocabulary has {} pieces; T5 needs <pad>, </s>, <unk> first", vocab.len()),
        ));
    }
    Unigram::from(vocab, Some(UNK_ID), false)
        .map_err(|e| Error::Tokenizer(format!("cannot build the Unigram model of {}: {e}", path.display())))
}

/// The SentencePiece character map of the file's normalizer (alone or in a `Sequence`), if it has one.
fn precompiled_normalizer(json: &Value, path: &Path) -> Result<Option<Precompiled>> {
    let normalizer = json.get("normalizer").unwrap_or(&Value::Null);
    let candidates = match normalizer.get("type").and_then(Value::as_str) {
        Some("Sequence") => normalizer.get("normalizers").and_then(Value::as_array).cloned().unwrap_or_default(),
        _ => vec![normalizer.clone()],
    };
    let charsmap = candidates.iter().find_map(|n| match n.get("type").and_then(Value::as_str) {
        Some("Precompiled") => n.get("precompiled_charsmap").and_then(Value::as_str),
        _ => None,
    });
    let Some(charsmap) = charsmap else { return Ok(None) };
    let bytes = BASE64
        .decode(charsmap)
        .map_err(|e| bad_config(path, &format!("the Precompiled normalizer's charsmap is not base64: {e}")))?;
    Precompiled::from(&bytes)
        .map(Some)
        .map_err(|e| bad_config(path, &format!("cannot read the Precompiled normalizer's charsmap: {e}")))
}
