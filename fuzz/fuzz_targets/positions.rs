//! Position paths as users type them (`up_blocks[1].attentions[0]`, `mid_block.attentions.0@update`, …):
//! normalization, resolution against a model's positions, and the error message (which ranks suggestions).
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// A slice of SD1's position list: more than 12 entries, so an unknown position gets ranked suggestions.
fn valid() -> &'static (Vec<String>, Vec<String>) {
    static LISTS: OnceLock<(Vec<String>, Vec<String>)> = OnceLock::new();
    LISTS.get_or_init(|| {
        let mut valid = vec!["conv_in".to_string(), "time_proj".into(), "mid_block".into(), "conv_out".into()];
        let mut updatable = vec!["mid_block".to_string()];
        for side in ["down_blocks", "up_blocks"] {
            for b in 0..4 {
                let block = format!("{side}[{b}]");
                valid.push(block.clone());
                updatable.push(block.clone());
                for r in 0..2 {
                    valid.push(format!("{block}.resnets[{r}]"));
                    let attention = format!("{block}.attentions[{r}]");
                    valid.push(attention.clone());
                    updatable.push(attention.clone());
                    valid.push(format!("{attention}.transformer_blocks[0].attn2"));
                }
            }
        }
        (valid, updatable)
    })
}

fuzz_target!(init: { common::init(); valid(); }, |data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = sdscope::taps::normalize_position(&text) {
        // Canonical text is a fixed point.
        assert_eq!(sdscope::taps::normalize_position(&p).ok().as_deref(), Some(p.as_str()), "{text:?}");
    }
    let _ = sdscope::taps::update_base(&text);
    let (valid, updatable) = valid();
    for given in [&*text, text.split('\n').next().unwrap_or("")] {
        match sdscope::pipeline::resolve_positions(valid, updatable, &[given]) {
            Ok(resolved) => assert!(resolved.len() == 1),
            Err(e) => drop(e.to_string()),
        }
    }
});
