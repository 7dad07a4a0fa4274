//! The token side of attention maps: which of the 77 positions holds which token and which word, and how a
//! user names the tokens a map is made of.
//!
//! Indices count positions in the tokenizer output: 0 is BOS, 1 the first token of the prompt (the
//! convention of the A1111 "Visualize Cross-Attention" extension), then EOS and padding. SD3's joint text
//! sequence has two segments: the 77 CLIP positions (0..77), then the T5 positions (77..333); a selection can be
//! restricted to one of them with [`TokenSelection::Within`].

use crate::error::{Error, Result};
use crate::tokenizer::Encoding;

/// What a token position holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TokenKind {
    Bos,
    /// A token of the prompt.
    Text,
    Eos,
    Padding,
}

/// Which encoder's part of the text sequence a position belongs to (SD3 has both; U-Nets only CLIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TokenSegment {
    Clip,
    T5,
}

impl TokenSegment {
    /// `clip` or `t5`.
    pub fn parse(given: &str) -> Result<Self> {
        match given.trim().to_ascii_lowercase().as_str() {
            "clip" => Ok(Self::Clip),
            "t5" => Ok(Self::T5),
            _ => Err(Error::invalid(format!("token segment `{given}`"), "use clip or t5")),
        }
    }
}

/// One token position.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenEntry {
    pub index: usize,
    pub id: i64,
    /// The token as readable text (`photo`, `realistic`, `,`).
    pub text: String,
    pub kind: TokenKind,
    /// Index of the word among the prompt's words (text tokens only).
    pub word_index: Option<usize>,
    /// The whole word the token belongs to (`photorealistic` for both `photo` and `realistic`).
    pub word: Option<String>,
    pub segment: TokenSegment,
}

/// Every token position of a prompt for one tokenizer, with the words truncation cut off.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenTable {
    pub entries: Vec<TokenEntry>,
    pub truncated_words: Vec<String>,
}

/// Which token positions a map is made of.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSelection {
    /// Explicit positions (1 = first token after BOS).
    Indices(Vec<usize>),
    /// Every sub-token of every occurrence of a word (case-insensitive), as DAAM does.
    Word(String),
    Bos,
    Eos,
    Padding,
    /// Every token of the prompt (BOS, EOS and padding excluded).
    AllText,
    /// Another selection restricted to one segment of a joint (SD3) sequence: `Within(T5, Word("cat"))`.
    Within(TokenSegment, Box<TokenSelection>),
}

const WORD_END: &str = "</w>";

/// A vocabulary token as text: the end-of-word marker removed; CLIP's byte-level characters mapped back.
fn readable(token: &str) -> String {
    let token = token.strip_suffix(WORD_END).unwrap_or(token);
    let bytes: Option<Vec<u8>> = token.chars().map(byte_of_char).collect();
    match bytes.and_then(|b| String::from_utf8(b).ok()) {
        Some(text) => text,
        None => token.to_string(),
    }
}

/// Inverse of GPT-2/CLIP's byte → printable character table.
fn byte_of_char(c: char) -> Option<u8> {
    let code = c as u32;
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    if code < 256 && printable(code) {
        return Some(code as u8);
    }
    // Non-printable bytes were shifted to 256 + n, in byte order.
    let offset = code.checked_sub(256)?;
    (0u32..256).filter(|&b| !printable(b)).nth(offset as usize).map(|b| b as u8)
}

impl TokenTable {
    pub fn from_encoding(encoding: &Encoding, bos_id: i64, eos_id: i64) -> Self {
        let mut entries = Vec::with_capacity(encoding.ids.len());
        let mut words: Vec<(usize, String)> = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut word_count = 0;
        let mut seen_eos = false;
        for (index, (&id, token)) in encoding.ids.iter().zip(&encoding.tokens).enumerate() {
            let kind = if index == 0 && id == bos_id {
                TokenKind::Bos
            } else if seen_eos || index >= encoding.length {
                TokenKind::Padding
            } else if id == eos_id {
                seen_eos = true;
                TokenKind::Eos
            } else {
                TokenKind::Text
            };
            let mut entry = TokenEntry {
                index,
                id,
                text: readable(token),
                kind,
                word_index: None,
                word: None,
                segment: TokenSegment::Clip,
            };
            if kind == TokenKind::Text {
                entry.word_index = Some(word_count);
                current.push(index);
                if token.ends_with(WORD_END) {
                    let word: String = current.iter().map(|&i| entries_text(&entries, i, &entry)).collect();
                    words.extend(current.drain(..).map(|i| (i, word.clone())));
                    word_count += 1;
                }
            }
            entries.push(entry);
        }
        // A word cut by truncation has no end marker: close it with what is there.
        if !current.is_empty() {
            let word: String = current.iter().map(|&i| entries[i].text.clone()).collect();
            words.extend(current.drain(..).map(|i| (i, word.clone())));
        }
        for (i, word) in words {
            entries[i].word = Some(word);
        }
        Self { entries, truncated_words: encoding.truncated_words.clone() }
    }

    /// The table of a T5 encoding (no BOS; words start at `▁`), its indices shifted by `offset` (77 in SD3's
    /// joint sequence) and its word numbers by `first_word`.
    pub fn from_t5_encoding(encoding: &Encoding, eos_id: i64, offset: usize, first_word: usize) -> Self {
        let mut entries: Vec<TokenEntry> = Vec::with_capacity(encoding.ids.len());
        let mut word_count = first_word;
        let mut seen_eos = false;
        let mut word_start: Option<usize> = None;
        let close = |entries: &mut Vec<TokenEntry>, start: Option<usize>| {
            if let Some(start) = start {
                let word: String = entries[start..].iter().map(|e| e.text.as_str()).collect();
                for e in &mut entries[start..] {
                    e.word = Some(word.clone());
                }
            }
        };
        for (i, (&id, token)) in encoding.ids.iter().zip(&encoding.tokens).enumerate() {
            let kind = if seen_eos || i >= encoding.length {
                TokenKind::Padding
            } else if id == eos_id {
                seen_eos = true;
                TokenKind::Eos
            } else {
                TokenKind::Text
            };
            let starts_word = token.starts_with('\u{2581}');
            let text = token.trim_start_matches('\u{2581}').to_string();
            if kind != TokenKind::Text || starts_word {
                close(&mut entries, word_start.map(|s| s - offset));
                word_start = None;
            }
            let mut entry = TokenEntry {
                index: offset + i,
                id,
                text,
                kind,
                word_index: None,
                word: None,
                segment: TokenSegment::T5,
            };
            if kind == TokenKind::Text {
                if word_start.is_none() {
                    word_start = Some(offset + i);
                    word_count += 1;
                }
                entry.word_index = Some(word_count - 1);
            }
            entries.push(entry);
        }
        close(&mut entries, word_start.map(|s| s - offset));
        Self { entries, truncated_words: encoding.truncated_words.clone() }
    }

    /// `n` padding positions of a segment that holds no tokens (SD3 without T5: zeros in the sequence).
    pub fn empty_segment(segment: TokenSegment, offset: usize, n: usize) -> Self {
        let entries = (0..n)
            .map(|i| TokenEntry {
                index: offset + i,
                id: 0,
                text: String::new(),
                kind: TokenKind::Padding,
                word_index: None,
                word: None,
                segment,
            })
            .collect();
        Self { entries, truncated_words: vec![] }
    }

    /// SD3's joint sequence: these CLIP positions, then `t5`'s (already offset).
    pub fn joint(clip: TokenTable, t5: TokenTable) -> Self {
        let mut entries = clip.entries;
        entries.extend(t5.entries);
        let mut truncated_words = clip.truncated_words;
        truncated_words.extend(t5.truncated_words.into_iter().map(|w| format!("{w} (T5)")));
        Self { entries, truncated_words }
    }

    /// The number of words (for numbering a following segment's words).
    pub fn word_count(&self) -> usize {
        self.entries.iter().filter_map(|e| e.word_index).max().map_or(0, |m| m + 1)
    }

    /// The token positions of a selection, checked; an unknown word or an index out of range is an error that
    /// lists what is there.
    pub fn select(&self, selection: &TokenSelection) -> Result<Vec<usize>> {
        let of_kind =
            |k: TokenKind| -> Vec<usize> { self.entries.iter().filter(|e| e.kind == k).map(|e| e.index).collect() };
        let picked = match selection {
            TokenSelection::Indices(indices) => {
                for &i in indices {
                    if i >= self.entries.len() {
                        return Err(Error::invalid(
                            format!("token index {i}"),
                            format!(
                                "valid indices are 0..={} (0 is BOS, 1 the first prompt token)",
                                self.entries.len() - 1
                            ),
                        ));
                    }
                }
                indices.clone()
            }
            TokenSelection::Word(word) => {
                let wanted = word.trim().to_lowercase();
                let found: Vec<usize> = self
                    .entries
                    .iter()
                    .filter(|e| e.word.as_deref().map(str::to_lowercase).as_deref() == Some(wanted.as_str()))
                    .map(|e| e.index)
                    .collect();
                if found.is_empty() {
                    let cut = if self.truncated_words.iter().any(|w| w.to_lowercase() == wanted) {
                        " (it was cut off: the prompt is longer than 77 tokens)"
                    } else {
                        ""
                    };
                    return Err(Error::invalid(
                        format!("word `{word}`"),
                        format!("is not in the prompt{cut}; its words are: {}", self.words().join(", ")),
                    ));
                }
                found
            }
            TokenSelection::Bos => of_kind(TokenKind::Bos),
            TokenSelection::Eos => of_kind(TokenKind::Eos),
            TokenSelection::Padding => of_kind(TokenKind::Padding),
            TokenSelection::AllText => of_kind(TokenKind::Text),
            TokenSelection::Within(segment, inner) => {
                let part = TokenTable {
                    entries: self.entries.iter().filter(|e| e.segment == *segment).cloned().collect(),
                    truncated_words: self.truncated_words.clone(),
                };
                if part.entries.is_empty() {
                    return Err(Error::invalid(
                        format!("token segment {segment:?}"),
                        "this model's text sequence has no such part (only SD3 has T5 positions)",
                    ));
                }
                part.select_in_part(inner)?
            }
        };
        if picked.is_empty() {
            return Err(Error::invalid(format!("token selection {selection:?}"), "selects no token"));
        }
        Ok(picked)
    }

    /// [`Self::select`] within a segment's entries (indices stay those of the joint sequence).
    fn select_in_part(&self, selection: &TokenSelection) -> Result<Vec<usize>> {
        match selection {
            TokenSelection::Indices(indices) => {
                let valid: Vec<usize> = self.entries.iter().map(|e| e.index).collect();
                if let Some(bad) = indices.iter().find(|i| !valid.contains(i)) {
                    return Err(Error::invalid(
                        format!("token index {bad}"),
                        format!(
                            "this segment holds positions {}..={}",
                            valid.first().copied().unwrap_or(0),
                            valid.last().copied().unwrap_or(0)
                        ),
                    ));
                }
                Ok(indices.clone())
            }
            other => {
                let position: std::collections::HashMap<usize, usize> =
                    self.entries.iter().enumerate().map(|(i, e)| (e.index, i)).collect();
                let local = TokenTable {
                    entries: self
                        .entries
                        .iter()
                        .enumerate()
                        .map(|(i, e)| TokenEntry { index: i, ..e.clone() })
                        .collect(),
                    truncated_words: self.truncated_words.clone(),
                };
                let picked = local.select(other)?;
                let back: std::collections::HashMap<usize, usize> = position.into_iter().map(|(g, l)| (l, g)).collect();
                Ok(picked.into_iter().map(|l| back[&l]).collect())
            }
        }
    }

    /// The prompt's words in order (each once per occurrence).
    pub fn words(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut last = None;
        for e in &self.entries {
            if e.word_index.is_some() && e.word_index != last {
                out.push(e.word.clone().unwrap_or_default());
                last = e.word_index;
            }
        }
        out
    }

    /// A short label for a selection (`photorealistic`, `#2+#5`, `<bos>`).
    pub fn label(&self, selection: &TokenSelection) -> String {
        match selection {
            TokenSelection::Indices(indices) => indices
                .iter()
                .map(|&i| match self.entries.get(i) {
                    Some(e) => format!("#{i} {}", e.text),
                    None => format!("#{i}"),
                })
                .collect::<Vec<_>>()
                .join(" + "),
            TokenSelection::Word(w) => w.clone(),
            TokenSelection::Bos => "<bos>".into(),
            TokenSelection::Eos => "<eos>".into(),
            TokenSelection::Padding => "<padding>".into(),
            TokenSelection::AllText => "all prompt tokens".into(),
            TokenSelection::Within(segment, inner) => {
                format!("{} ({})", self.label(inner), if *segment == TokenSegment::T5 { "T5" } else { "CLIP" })
            }
        }
    }

    /// The table as plain text, one row per non-padding token.
    pub fn to_text(&self) -> String {
        let mut out = String::from("index  id      token            word\n");
        for e in self.entries.iter().filter(|e| e.kind != TokenKind::Padding) {
            let word = match e.kind {
                TokenKind::Bos => "<bos>".to_string(),
                TokenKind::Eos => "<eos>".to_string(),
                _ => e.word.clone().unwrap_or_default(),
            };
            out.push_str(&format!("{:>5}  {:<6}  {:<15}  {word}\n", e.index, e.id, e.text));
        }
        let padding = self.entries.iter().filter(|e| e.kind == TokenKind::Padding).count();
        out.push_str(&format!("(+ {padding} padding positions)\n"));
        if !self.truncated_words.is_empty() {
            out.push_str(&format!("truncated (beyond the tokenizer's length): {}\n", self.truncated_words.join(" ")));
        }
        out
    }
}

fn entries_text(entries: &[TokenEntry], i: usize, current: &TokenEntry) -> String {
    entries.get(i).map(|e| e.text.clone()).unwrap_or_else(|| current.text.clone())
}
