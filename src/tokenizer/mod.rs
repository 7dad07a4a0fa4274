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

mod added_tokens;
pub mod t5;
#[cfg(test)]
mod tests;

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
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};
use added_tokens::plan_added_tokens;
pub use t5::T5Tokenizer;

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
