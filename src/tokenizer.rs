//! CLIP byte-level BPE tokenizer that reproduces `transformers.CLIPTokenizer` (transformers 5) id for id.
//!
//! In transformers 5, `CLIPTokenizer` is no longer the pure-Python tokenizer with ftfy/BasicTokenizer
//! cleaning: it is a `tokenizers`-library pipeline assembled in code, and only the vocabulary and the
//! merges are taken from the files on disk. This module assembles the same pipeline with the Rust
//! `tokenizers` crate, so that crate does the normalization, splitting and BPE work:
//!
//! 1. **Added (special) tokens** are cut out of the text first. Tokens flagged `normalized: false` are
//!    matched in the raw text; the rest are matched in the normalized text (so, for instance,
//!    `<|STARTOFTEXT|>` is recognized as the BOS token in SD1 folders while `<|ENDOFTEXT|>` is not).
//!    Which tokens are added, and with which flags, follows transformers' loading rules (from
//!    `tokenizer_config.json`, `special_tokens_map.json`, ...). A quirk worth knowing: when the pad token is `!` (SD2, SDXL's
//!    `tokenizer_2`), transformers registers `!` as a special token, so every `!` in a prompt becomes
//!    the bare `!` token (id 0) instead of going through BPE (`!</w>`, `!!</w>`, ...). This module does
//!    the same, because the goal is to match the reference.
//! 2. **Normalizer**: Unicode NFC, then every run of `\s` replaced by one space, then lowercasing.
//! 3. **Pre-tokenizer**: the CLIP regex
//!    `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
//!    keeps its matches and drops everything between them (whitespace); then the GPT-2 byte-level
//!    step maps every UTF-8 byte to a printable character (with the GPT-2 regex applied again, and
//!    no prefix space).
//! 4. **Model**: BPE over those characters with the end-of-word suffix `</w>` and no continuing
//!    subword prefix; unknown token `<|endoftext|>`, no dropout, unknown tokens not fused.
//! 5. **Post-processing**: `<|startoftext|>` in front and `<|endoftext|>` at the end.
//! 6. **Truncation and padding** as the diffusers pipelines ask for them (`padding="max_length"`,
//!    `truncation=True`, `max_length=model_max_length`): at most `max_len - 2` text tokens are kept so
//!    that BOS stays first and EOS last, then the pad id fills up to `max_len` on the right.
//!
//! A `tokenizer.json` in the folder, when present, supplies the vocabulary, the merges and (for old
//! folders without `added_tokens_decoder` in `tokenizer_config.json`) the added tokens, exactly as
//! transformers uses it; its normalizer and pre-tokenizer are ignored by transformers too.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};

/// The pre-tokenization regex of CLIP, as transformers' `CLIPTokenizer` writes it.
const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Suffix BPE appends to the last symbol of every word.
const END_OF_WORD_SUFFIX: &str = "</w>";

/// Sequence length of every CLIP text encoder used by Stable Diffusion.
pub const DEFAULT_MAX_LEN: usize = 77;

/// `model_max_length` values above this are treated as "not set" (transformers writes a huge
/// sentinel, `int(1e30)`, when a tokenizer has no limit); [`DEFAULT_MAX_LEN`] is used instead.
const MAX_SANE_MAX_LEN: u64 = 1 << 16;

/// Named special-token attributes, in the order transformers registers them.
const SPECIAL_TOKEN_ATTRIBUTES: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

/// CLIP's defaults for the named special tokens it declares in its constructor.
const CLIP_DEFAULT_TOKENS: [(&str, &str); 4] = [
    ("unk_token", "<|endoftext|>"),
    ("bos_token", "<|startoftext|>"),
    ("eos_token", "<|endoftext|>"),
    ("pad_token", "<|endoftext|>"),
];

/// The result of [`ClipTokenizer::encode`]: one prompt, truncated and padded to
/// [`ClipTokenizer::max_len`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids, exactly `max_len` of them: BOS, the text tokens, EOS, then padding.
    pub ids: Vec<i64>,
    /// The token strings as the vocabulary spells them (e.g. `"cat</w>"`, `"<|startoftext|>"`,
    /// byte-level characters such as `"Ã©</w>"` for `é`), one per id, padding included.
    pub tokens: Vec<String>,
    /// Human-readable words that truncation cut off (empty when the prompt fit).
    pub truncated_words: Vec<String>,
    /// Number of non-padding tokens, BOS and EOS included (at most `max_len`).
    pub length: usize,
}

/// A CLIP tokenizer loaded from a Stable Diffusion `tokenizer/` (or `tokenizer_2/`) folder whose
/// ids equal those of `transformers.CLIPTokenizer` (transformers 5).
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    max_len: usize,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    byte_decoder: HashMap<char, u8>,
}

impl ClipTokenizer {
    /// Loads the tokenizer from a folder holding either `tokenizer.json` or `vocab.json` +
    /// `merges.txt`, plus (optionally) `tokenizer_config.json`, `special_tokens_map.json` and
    /// `added_tokens.json`.
    ///
    /// The sequence length is `model_max_length` from `tokenizer_config.json`; when that is missing
    /// or is transformers' "no limit" sentinel, it is [`DEFAULT_MAX_LEN`] (77).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                hint: Some("expected a tokenizer folder with vocab.json and merges.txt, or tokenizer.json".into()),
            });
        }
        let config = match read_json_if_exists(&dir.join("tokenizer_config.json"))? {
            Some(Value::Object(map)) => map,
            Some(_) => return Err(bad_config(&dir.join("tokenizer_config.json"), "not a JSON object")),
            None => Map::new(),
        };
        let tokenizer_json_path = dir.join("tokenizer.json");
        let tokenizer_json = read_json_if_exists(&tokenizer_json_path)?;
        let plan = plan_added_tokens(dir, &config, tokenizer_json.as_ref())?;

        let unk = plan.unk.as_deref();
        let bpe = match &tokenizer_json {
            Some(json) => bpe_from_tokenizer_json(json, &tokenizer_json_path, unk)?,
            None => bpe_from_vocab_and_merges(dir, unk)?,
        };

        for side in ["truncation_side", "padding_side"] {
            if let Some(value) = config.get(side).and_then(Value::as_str) {
                if value != "right" {
                    return Err(Error::Unsupported {
                        path: dir.join("tokenizer_config.json"),
                        why: format!("{side} = {value:?}; only \"right\" is supported"),
                    });
                }
            }
        }
        let max_len = max_len_from_config(&config);
        if max_len < 2 {
            return Err(bad_config(&dir.join("tokenizer_config.json"), "model_max_length must be at least 2"));
        }

        let mut inner = Tokenizer::new(bpe);
        inner.with_normalizer(Some(NormalizerSequence::new(vec![
            NFC.into(),
            Replace::new(ReplacePattern::Regex(r"\s+".into()), " ").map_err(tok_err)?.into(),
            Lowercase.into(),
        ])));
        inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            Split::new(SplitPattern::Regex(CLIP_SPLIT_PATTERN.into()), SplitDelimiterBehavior::Removed, true)
                .map_err(tok_err)?
                .into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        inner.add_tokens(&plan.added);

        let id_of = |token: &str| inner.token_to_id(token);
        let unk_id = plan.unk.as_deref().and_then(id_of);
        let resolve = |what: &str, token: &Option<String>| -> Result<u32> {
            let token = token
                .as_deref()
                .ok_or_else(|| Error::Tokenizer(format!("{}: no {what} token is configured", dir.display())))?;
            id_of(token).or(unk_id).ok_or_else(|| {
                Error::Tokenizer(format!("{}: {what} token {token:?} is not in the vocabulary", dir.display()))
            })
        };
        let bos_id = resolve("bos", &plan.bos)?;
        let eos_id = resolve("eos", &plan.eos)?;
        let pad_id = resolve("pad", &plan.pad)?;

        let bos = plan.bos.unwrap_or_default();
        let eos = plan.eos.unwrap_or_default();
        inner.with_post_processor(Some(
            RobertaProcessing::new((eos, eos_id), (bos, bos_id)).trim_offsets(false).add_prefix_space(false),
        ));

        let byte_decoder = byte_to_char_table().iter().enumerate().map(|(byte, &ch)| (ch, byte as u8)).collect();
        Ok(Self { inner, max_len, bos_id, eos_id, pad_id, byte_decoder })
    }

    /// Tokenizes one prompt, truncated to [`Self::max_len`] tokens (BOS first and EOS last are
    /// always kept) and padded on the right with [`Self::pad_id`].
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        let full = self.inner.encode(text, true).map_err(tok_err)?;
        let full_ids = full.get_ids();
        let (mut ids, cut): (Vec<u32>, &[u32]) = if full_ids.len() > self.max_len {
            let mut kept = full_ids[..self.max_len - 1].to_vec();
            kept.push(self.eos_id);
            (kept, &full_ids[self.max_len - 1..full_ids.len() - 1])
        } else {
            (full_ids.to_vec(), &[])
        };
        let length = ids.len();
        ids.resize(self.max_len, self.pad_id);

        let tokens = ids.iter().map(|&id| self.inner.id_to_token(id).unwrap_or_default()).collect();
        Ok(Encoding {
            ids: ids.iter().map(|&id| i64::from(id)).collect(),
            tokens,
            truncated_words: self.words_of(cut),
            length,
        })
    }

    /// Sequence length every [`Encoding`] has (77 for Stable Diffusion).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Id of the beginning-of-text token `<|startoftext|>`.
    pub fn bos_id(&self) -> i64 {
        i64::from(self.bos_id)
    }

    /// Id of the end-of-text token `<|endoftext|>`.
    pub fn eos_id(&self) -> i64 {
        i64::from(self.eos_id)
    }

    /// Id used for padding: `<|endoftext|>` for SD1, `!` for SD2 and SDXL's second tokenizer.
    pub fn pad_id(&self) -> i64 {
        i64::from(self.pad_id)
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The token string of one id as the vocabulary spells it (e.g. `"cat</w>"`).
    pub fn id_to_token(&self, id: i64) -> Option<String> {
        u32::try_from(id).ok().and_then(|id| self.inner.id_to_token(id))
    }

    /// Human-readable text of one token (e.g. `"cat"` for `cat</w>`, `"é"` for `Ã©</w>`,
    /// `"<|startoftext|>"` for BOS), for token tables. A token holding only part of a multi-byte
    /// character decodes with U+FFFD in place of the incomplete bytes. `None` for unknown ids.
    pub fn token_text(&self, id: i64) -> Option<String> {
        self.id_to_token(id).map(|token| self.readable(&token))
    }

    /// Decodes a vocabulary spelling: drops the end-of-word suffix and undoes the byte-level mapping.
    fn readable(&self, token: &str) -> String {
        let token = token.strip_suffix(END_OF_WORD_SUFFIX).unwrap_or(token);
        let mut bytes = Vec::with_capacity(token.len());
        for ch in token.chars() {
            match self.byte_decoder.get(&ch) {
                Some(&byte) => bytes.push(byte),
                None => bytes.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Groups token ids into words (a word ends with a `</w>` token or is an added token on its own)
    /// and decodes each.
    fn words_of(&self, ids: &[u32]) -> Vec<String> {
        let mut words = Vec::new();
        let mut current = String::new();
        let flush = |current: &mut String, words: &mut Vec<String>| {
            if !current.is_empty() {
                words.push(self.readable(current));
                current.clear();
            }
        };
        for &id in ids {
            let token = self.inner.id_to_token(id).unwrap_or_default();
            if self.inner.get_added_vocabulary().is_special_token(&token) {
                flush(&mut current, &mut words);
                words.push(self.readable(&token));
                continue;
            }
            let ends_word = token.ends_with(END_OF_WORD_SUFFIX);
            current.push_str(token.strip_suffix(END_OF_WORD_SUFFIX).unwrap_or(&token));
            if ends_word {
                flush(&mut current, &mut words);
            }
        }
        flush(&mut current, &mut words);
        words
    }
}

impl std::fmt::Debug for ClipTokenizer {
    /// A summary; the vocabulary itself is too large to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("max_len", &self.max_len)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

/// The added tokens transformers registers for a folder, and the named special tokens.
#[derive(Debug, Default)]
struct AddedTokenPlan {
    /// Tokens to add, one per content, in the order transformers first adds them, with the flags of
    /// the last addition (the `tokenizers` library keeps the last flags of a re-added token).
    added: Vec<AddedToken>,
    bos: Option<String>,
    eos: Option<String>,
    unk: Option<String>,
    pad: Option<String>,
}

/// A special-token value as transformers holds it before registration: a bare string or an
/// `AddedToken` with explicit flags. The two never compare equal, as in Python.
#[derive(Clone, Debug, PartialEq)]
enum SpecialValue {
    Plain(String),
    Added(AddedToken),
}

impl SpecialValue {
    fn content(&self) -> &str {
        match self {
            SpecialValue::Plain(s) => s,
            SpecialValue::Added(t) => &t.content,
        }
    }
}

/// Works out which added tokens `CLIPTokenizer.from_pretrained` registers, replaying
/// transformers 5's rules:
///
/// * the added-token table is `added_tokens_decoder` from `tokenizer_config.json`; in folders
///   without it, the legacy sources: `special_tokens_map.json` overrides the named tokens (objects
///   there become special tokens, `normalized` defaulting to false), `added_tokens.json`, then the
///   `added_tokens` of `tokenizer.json`;
/// * a named token whose text is in that table takes the table's flags;
/// * the table is registered in id order, followed by every named token (bos, eos, unk, sep, pad,
///   cls, mask, then model-specific ones) and extra special token whose text is not in the table
///   and that is not equal to one already queued; a bare string becomes a special token with
///   `normalized = false`;
/// * when one text is queued twice, its last flags win.
fn plan_added_tokens(
    dir: &Path,
    config: &Map<String, Value>,
    tokenizer_json: Option<&Value>,
) -> Result<AddedTokenPlan> {
    let config_path = dir.join("tokenizer_config.json");
    let mut init = config.clone();
    init.remove("tokenizer_class");
    if init.contains_key("additional_special_tokens") && !is_truthy(init.get("extra_special_tokens")) {
        if let Some(v) = init.remove("additional_special_tokens") {
            init.insert("extra_special_tokens".into(), v);
        }
    }

    // Table of added tokens, by id.
    let mut table: Vec<(i64, AddedToken)> = Vec::new();
    if let Some(decoder) = init.get("added_tokens_decoder") {
        let decoder =
            decoder.as_object().ok_or_else(|| bad_config(&config_path, "added_tokens_decoder is not an object"))?;
        for (idx, token) in decoder {
            let idx: i64 = idx.parse().map_err(|_| bad_config(&config_path, &format!("bad added token id {idx:?}")))?;
            let token = token
                .as_object()
                .ok_or_else(|| bad_config(&config_path, "added_tokens_decoder entries must be objects"))?;
            upsert(&mut table, idx, added_token_from_json(token, None, &config_path)?);
        }
    } else {
        let map_path = dir.join("special_tokens_map.json");
        if let Some(map) = read_json_if_exists(&map_path)? {
            let map = map.as_object().ok_or_else(|| bad_config(&map_path, "not a JSON object"))?;
            for (key, value) in map {
                let value = match value {
                    Value::Object(obj) if key != "extra_special_tokens" => {
                        let mut obj = obj.clone();
                        obj.remove("special");
                        added_token_to_json(&added_token_from_json(&obj, Some(true), &map_path)?)
                    }
                    Value::Array(list) if key == "extra_special_tokens" => {
                        let mut merged = match init.get("extra_special_tokens") {
                            Some(Value::Array(existing)) => existing.clone(),
                            _ => Vec::new(),
                        };
                        for tok in list {
                            let tok = match tok {
                                Value::Object(obj) => {
                                    added_token_to_json(&added_token_from_json(obj, Some(true), &map_path)?)
                                }
                                other => other.clone(),
                            };
                            if !merged.contains(&tok) {
                                merged.push(tok);
                            }
                        }
                        Value::Array(merged)
                    }
                    other => other.clone(),
                };
                init.insert(key.clone(), value);
            }
        }

        let added_path = dir.join("added_tokens.json");
        if let Some(added) = read_json_if_exists(&added_path)? {
            let added = added.as_object().ok_or_else(|| bad_config(&added_path, "not a JSON object"))?;
            // transformers compares `str(value)`, which is the token text for strings and for the
            // tokens built from special_tokens_map.json, but not for raw `__type` objects.
            let text_of = |v: &Value| match v {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) if !o.contains_key("__type") => o.get("content")?.as_str().map(str::to_string),
                _ => None,
            };
            let mut special: Vec<String> = SPECIAL_TOKEN_ATTRIBUTES
                .iter()
                .filter(|k| is_truthy(init.get(**k)))
                .filter_map(|k| text_of(&init[*k]))
                .collect();
            if let Some(Value::Array(extra)) = init.get("extra_special_tokens") {
                special.extend(extra.iter().filter_map(text_of));
            }
            for (content, idx) in added {
                let idx = idx.as_i64().ok_or_else(|| bad_config(&added_path, "ids must be integers"))?;
                let is_special = special.iter().any(|s| s == content);
                let token = AddedToken::from(content.clone(), is_special).normalized(!is_special);
                upsert(&mut table, idx, token);
            }
        }

        if let Some(json) = tokenizer_json {
            let path = dir.join("tokenizer.json");
            if let Some(list) = json.get("added_tokens").and_then(Value::as_array) {
                for entry in list {
                    let mut obj = entry
                        .as_object()
                        .cloned()
                        .ok_or_else(|| bad_config(&path, "added_tokens entries must be objects"))?;
                    let idx = obj
                        .remove("id")
                        .and_then(|v| v.as_i64())
                        .ok_or_else(|| bad_config(&path, "added token without an integer id"))?;
                    upsert(&mut table, idx, added_token_from_json(&obj, None, &path)?);
                }
            }
        }
    }
    table.sort_by_key(|(idx, _)| *idx);
    // Text -> flags, the last table entry of a text winning (as a Python dict keyed by text).
    let by_text: HashMap<&str, &AddedToken> = table.iter().map(|(_, t)| (t.content.as_str(), t)).collect();

    // Named special tokens, in registration order, with CLIP's constructor defaults.
    let mut named: Vec<(String, Option<SpecialValue>)> = Vec::new();
    for attr in SPECIAL_TOKEN_ATTRIBUTES {
        let value = match init.get(attr) {
            Some(v) => special_value(v, &config_path)?,
            None => CLIP_DEFAULT_TOKENS
                .iter()
                .find(|(key, _)| *key == attr)
                .map(|(_, default)| SpecialValue::Plain((*default).to_string())),
        };
        let value = value.map(|v| match by_text.get(v.content()) {
            Some(t) if init.contains_key(attr) => SpecialValue::Added((*t).clone()),
            _ => v,
        });
        named.push((attr.to_string(), value));
    }
    // Model-specific named tokens (`*_token` keys beyond the standard ones), then extra special tokens.
    let mut model_specific: Vec<(String, Value)> = init
        .iter()
        .filter(|(k, v)| {
            k.ends_with("_token") && !SPECIAL_TOKEN_ATTRIBUTES.contains(&k.as_str()) && (v.is_string() || v.is_object())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut extra: Vec<SpecialValue> = Vec::new();
    match init.get("extra_special_tokens") {
        Some(Value::Object(map)) => model_specific.extend(map.iter().map(|(k, v)| (k.clone(), v.clone()))),
        Some(Value::Array(list)) => {
            for v in list {
                if let Some(v) = special_value(v, &config_path)? {
                    extra.push(v);
                }
            }
        }
        _ => {}
    }
    for (key, value) in model_specific {
        named.push((key, special_value(&value, &config_path)?));
    }

    // The queue transformers hands to `add_tokens`.
    let mut queue: Vec<SpecialValue> = table.iter().map(|(_, t)| SpecialValue::Added(t.clone())).collect();
    let known: Vec<String> = queue.iter().map(|v| v.content().to_string()).collect();
    for value in named.iter().filter_map(|(_, v)| v.as_ref()).chain(extra.iter()) {
        if !known.iter().any(|k| k == value.content()) && !queue.contains(value) {
            queue.push(value.clone());
        }
    }
    let named_texts: Vec<&str> = named.iter().filter_map(|(_, v)| v.as_ref().map(SpecialValue::content)).collect();
    let mut added: Vec<AddedToken> = Vec::new();
    for value in queue {
        let token = match value {
            SpecialValue::Plain(s) => AddedToken::from(s, true).normalized(false),
            SpecialValue::Added(mut t) => {
                if !t.special && named_texts.contains(&t.content.as_str()) {
                    t.special = true;
                }
                t
            }
        };
        if token.content.is_empty() {
            continue;
        }
        match added.iter_mut().find(|t| t.content == token.content) {
            Some(existing) => *existing = token,
            None => added.push(token),
        }
    }

    let get = |attr: &str| {
        named.iter().find(|(k, _)| k == attr).and_then(|(_, v)| v.as_ref()).map(|v| v.content().to_string())
    };
    Ok(AddedTokenPlan {
        bos: get("bos_token"),
        eos: get("eos_token"),
        unk: get("unk_token"),
        pad: get("pad_token"),
        added,
    })
}

/// Replaces the entry with the same id or appends (a Python dict keyed by id).
fn upsert(table: &mut Vec<(i64, AddedToken)>, idx: i64, token: AddedToken) {
    match table.iter_mut().find(|(i, _)| *i == idx) {
        Some(slot) => slot.1 = token,
        None => table.push((idx, token)),
    }
}

/// Reads a special-token value: a string, or an object (with or without `"__type": "AddedToken"`).
fn special_value(value: &Value, path: &Path) -> Result<Option<SpecialValue>> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(SpecialValue::Plain(s.clone()))),
        Value::Object(obj) => Ok(Some(SpecialValue::Added(added_token_from_json(obj, None, path)?))),
        other => Err(bad_config(path, &format!("a special token must be a string or an object, found {other}"))),
    }
}

/// Builds an `AddedToken` from its JSON fields with Python's `AddedToken(**fields)` defaults:
/// `special` false unless given (or forced), `normalized` = not special unless given.
fn added_token_from_json(obj: &Map<String, Value>, force_special: Option<bool>, path: &Path) -> Result<AddedToken> {
    let content = obj
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_config(path, "added token without a string `content`"))?;
    let flag = |name: &str| obj.get(name).and_then(Value::as_bool);
    let special = force_special.or_else(|| flag("special")).unwrap_or(false);
    Ok(AddedToken::from(content, special)
        .single_word(flag("single_word").unwrap_or(false))
        .lstrip(flag("lstrip").unwrap_or(false))
        .rstrip(flag("rstrip").unwrap_or(false))
        .normalized(flag("normalized").unwrap_or(!special)))
}

/// The inverse of [`added_token_from_json`], for values stored back into the config map.
fn added_token_to_json(token: &AddedToken) -> Value {
    serde_json::json!({
        "content": token.content,
        "single_word": token.single_word,
        "lstrip": token.lstrip,
        "rstrip": token.rstrip,
        "normalized": token.normalized,
        "special": token.special,
    })
}

/// Python truthiness of an optional JSON value.
fn is_truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::Bool(true)) => true,
    }
}

/// `model_max_length` (or the legacy `max_len`) when it is a usable length, else 77.
fn max_len_from_config(config: &Map<String, Value>) -> usize {
    let value = config.get("model_max_length").or_else(|| config.get("max_len"));
    match value.and_then(Value::as_u64) {
        Some(n) if n <= MAX_SANE_MAX_LEN => n as usize,
        _ => DEFAULT_MAX_LEN,
    }
}

/// A BPE model configured as transformers' `CLIPTokenizer` configures it. The unknown token is
/// never produced in practice: every byte has a token in a byte-level vocabulary.
fn clip_bpe_builder(unk: Option<&str>) -> tokenizers::models::bpe::BpeBuilder {
    let builder = BPE::builder()
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(END_OF_WORD_SUFFIX.into())
        .fuse_unk(false);
    match unk {
        Some(unk) => builder.unk_token(unk.to_string()),
        None => builder,
    }
}

/// BPE from `vocab.json` + `merges.txt` (read by the `tokenizers` crate, as transformers does).
fn bpe_from_vocab_and_merges(dir: &Path, unk: Option<&str>) -> Result<BPE> {
    let vocab = dir.join("vocab.json");
    let merges = dir.join("merges.txt");
    for path in [&vocab, &merges] {
        if !path.is_file() {
            return Err(Error::MissingFile {
                path: path.clone(),
                hint: Some("a CLIP tokenizer folder needs vocab.json and merges.txt, or tokenizer.json".into()),
            });
        }
    }
    let (vocab, merges) = BPE::read_file(&path_str(&vocab)?, &path_str(&merges)?)
        .map_err(|e| Error::Tokenizer(format!("cannot read {}: {e}", dir.display())))?;
    clip_bpe_builder(unk)
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::Tokenizer(format!("cannot build the BPE model of {}: {e}", dir.display())))
}

/// BPE from the `model` section of a `tokenizer.json` (only its vocabulary and merges are used).
fn bpe_from_tokenizer_json(json: &Value, path: &Path, unk: Option<&str>) -> Result<BPE> {
    let model = json.get("model").ok_or_else(|| bad_config(path, "no `model` section"))?;
    if let Some(kind) = model.get("type").and_then(Value::as_str) {
        if kind != "BPE" {
            return Err(bad_config(path, &format!("model type is {kind:?}, a CLIP tokenizer needs BPE")));
        }
    }
    let mut vocab = Vocab::default();
    match model.get("vocab") {
        Some(Value::Object(map)) => {
            for (token, id) in map {
                let id = id.as_u64().ok_or_else(|| bad_config(path, "vocabulary ids must be integers"))?;
                vocab.insert(token.clone(), id as u32);
            }
        }
        Some(Value::Array(list)) => {
            for (id, entry) in list.iter().enumerate() {
                let token = match entry {
                    Value::String(s) => s.clone(),
                    Value::Array(pair) => pair.first().and_then(Value::as_str).unwrap_or_default().to_string(),
                    _ => return Err(bad_config(path, "bad vocabulary entry")),
                };
                vocab.insert(token, id as u32);
            }
        }
        _ => return Err(bad_config(path, "model.vocab is missing")),
    }
    let mut merges = Vec::new();
    for entry in model.get("merges").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        let pair = match entry {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(' ').collect();
                match parts.as_slice() {
                    [a, b] => (a.to_string(), b.to_string()),
                    _ => return Err(bad_config(path, &format!("bad merge {s:?}"))),
                }
            }
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => (a.clone(), b.clone()),
                _ => return Err(bad_config(path, "bad merge entry")),
            },
            _ => return Err(bad_config(path, "bad merge entry")),
        };
        merges.push(pair);
    }
    clip_bpe_builder(unk)
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::Tokenizer(format!("cannot build the BPE model of {}: {e}", path.display())))
}

/// GPT-2's reversible byte-to-character table: printable Latin-1 bytes map to themselves, the
/// others to consecutive code points from U+0100.
fn byte_to_char_table() -> [char; 256] {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut table = ['\0'; 256];
    let mut next = 0x100u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let b = b as u32;
        let code = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).expect("valid code point");
    }
    table
}

fn read_json_if_exists(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| bad_config(path, &e.to_string()))
}

fn path_str(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Tokenizer(format!("path is not valid UTF-8: {}", path.display())))
}

fn bad_config(path: &Path, why: &str) -> Error {
    Error::BadConfig { path: PathBuf::from(path), why: why.to_string() }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

#[cfg(test)]
mod tests {
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
}
