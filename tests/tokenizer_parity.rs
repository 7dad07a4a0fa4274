//! Token ids must equal those of `transformers.CLIPTokenizer` for every reference prompt of every
//! fixture pipeline (`reference/tokens.json`, written by `tests/fixtures/make_fixtures.py`).

use std::path::{Path, PathBuf};

use sdscope::tokenizer::ClipTokenizer;
use serde_json::Value;

/// The fixtures folder: `$SDSCOPE_FIXTURES`, else `.sdscope/fixtures` in the crate, else the cache
/// the fixture script writes to. Fails (never skips) when there is none.
fn fixtures_root() -> PathBuf {
    let hint = "create them with `.sdscope/venv/bin/python tests/fixtures/make_fixtures.py OUTDIR` and \
                set SDSCOPE_FIXTURES=OUTDIR (or link OUTDIR to .sdscope/fixtures)";
    if let Some(dir) = std::env::var_os("SDSCOPE_FIXTURES") {
        let dir = PathBuf::from(dir);
        assert!(dir.is_dir(), "SDSCOPE_FIXTURES={} is not a folder; {hint}", dir.display());
        return dir;
    }
    let mut candidates = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(".sdscope/fixtures")];
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/sdscope/fixtures"));
    }
    candidates
        .iter()
        .find(|dir| dir.is_dir())
        .cloned()
        .unwrap_or_else(|| panic!("no fixtures folder (looked in {candidates:?}); {hint}"))
}

#[test]
fn ids_match_transformers_for_every_fixture() {
    let root = fixtures_root();
    let mut pipelines: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|dir| dir.join("reference/tokens.json").is_file())
        .collect();
    pipelines.sort();
    assert!(
        !pipelines.is_empty(),
        "no pipeline with reference/tokens.json under {}; rerun tests/fixtures/make_fixtures.py",
        root.display()
    );

    let mut compared = 0usize;
    let mut failures = Vec::new();
    for pipeline in &pipelines {
        let path = pipeline.join("reference/tokens.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let reference: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let reference = reference.as_object().unwrap_or_else(|| panic!("{} is not an object", path.display()));
        assert!(!reference.is_empty(), "{} lists no tokenizer", path.display());

        for (folder, cases) in reference {
            let dir = pipeline.join(folder);
            let tokenizer = ClipTokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let cases = cases.as_array().unwrap_or_else(|| panic!("{}: `{folder}` is not a list", path.display()));
            assert!(!cases.is_empty(), "{}: no cases for `{folder}`", path.display());
            for case in cases {
                let text = case["text"].as_str().unwrap_or_else(|| panic!("{}: case without text", path.display()));
                let expected: Vec<i64> = case["ids"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{}: case without ids", path.display()))
                    .iter()
                    .map(|v| v.as_i64().expect("integer id"))
                    .collect();
                let encoding = tokenizer.encode(text).unwrap_or_else(|e| panic!("{}: {text:?}: {e}", dir.display()));
                compared += 1;
                if encoding.ids != expected {
                    failures.push(format!(
                        "{} {text:?}\n  expected {expected:?}\n  got      {:?}",
                        dir.display(),
                        encoding.ids
                    ));
                    continue;
                }
                let padding = &encoding.ids[encoding.length..];
                if encoding.length < 2 || padding.iter().any(|&id| id != tokenizer.pad_id()) {
                    failures.push(format!("{} {text:?}: length {} is inconsistent", dir.display(), encoding.length));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} prompts differ from transformers:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{compared} prompts in {} pipelines match transformers", pipelines.len());
}
