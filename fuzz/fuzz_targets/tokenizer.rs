//! Prompts through every CLIP tokenizer of the test fixtures (SD1, SD2, both of SDXL's): arbitrary UTF-8, very
//! long text. Every encoding must have exactly `max_len` ids, BOS first, and every id must have a token.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;
use sdscope::tokenizer::ClipTokenizer;
use std::sync::OnceLock;

fn tokenizers() -> &'static [ClipTokenizer] {
    static ALL: OnceLock<Vec<ClipTokenizer>> = OnceLock::new();
    ALL.get_or_init(|| {
        let fixtures = common::fixtures().expect("the tokenizer target needs the test fixtures (.sdscope/fixtures)");
        ["sd1/tokenizer", "sd2/tokenizer", "sdxl/tokenizer", "sdxl/tokenizer_2"]
            .iter()
            .map(|dir| fixtures.join(dir))
            .filter(|dir| dir.is_dir())
            .map(|dir| ClipTokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
            .collect()
    })
}

fuzz_target!(init: { common::init(); assert!(!tokenizers().is_empty()); }, |data: &[u8]| {
    let prompt = String::from_utf8_lossy(data);
    for tokenizer in tokenizers() {
        let Ok(encoding) = tokenizer.encode(&prompt) else { continue };
        assert_eq!(encoding.ids.len(), tokenizer.max_len());
        assert_eq!(encoding.tokens.len(), tokenizer.max_len());
        assert!(encoding.length >= 2 && encoding.length <= tokenizer.max_len());
        assert_eq!(encoding.ids[0], tokenizer.bos_id());
        assert_eq!(encoding.ids[encoding.length - 1], tokenizer.eos_id());
        for &id in &encoding.ids {
            assert!(tokenizer.token_text(id).is_some(), "id {id} has no token");
        }
        drop(encoding.truncated_words);
    }
});
