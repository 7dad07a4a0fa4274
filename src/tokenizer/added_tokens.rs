//! Which added (special) tokens `CLIPTokenizer.from_pretrained` registers for a tokenizer folder,
//! replaying transformers 5's loading rules.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};
use tokenizers::AddedToken;

use super::{bad_config, read_json_if_exists, CLIP_DEFAULT_TOKENS, SPECIAL_TOKEN_ATTRIBUTES};
use crate::error::Result;

/// The added tokens transformers registers for a folder, and the named special tokens.
#[derive(Debug, Default)]
pub(super) struct AddedTokenPlan {
    /// Tokens to add, one per content, in the order transformers first adds them, with the flags of
    /// the last addition (the `tokenizers` library keeps the last flags of a re-added token).
    pub(super) added: Vec<AddedToken>,
    pub(super) bos: Option<String>,
    pub(super) eos: Option<String>,
    pub(super) unk: Option<String>,
    pub(super) pad: Option<String>,
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
pub(super) fn plan_added_tokens(
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
