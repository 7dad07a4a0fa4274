//! The files a collection is made of, as another run (or a damaged disk) may have left them: `manifest.json`,
//! a shard's `items.jsonl` and a position's safetensors file. The input is split in three (see
//! `common::split`).
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;
use sdscope::collection::layout::{position_file, shard_dir, ITEMS_FILE, MANIFEST_FILE};
use sdscope::collection::{Collection, Manifest};

/// A valid manifest of one shard holding position `mid_block`, used when the fuzzed one does not parse, so that
/// the item table and the position file are read either way.
const FALLBACK: &str = r#"{"format":"sdscope-collection","version":1,"sdscope_version":"0.1.0",
"model":{"spec":"m","files":[]},"source":{"kind":"prompts","spec":"p","column":null,"items":1,"fingerprint":"f"},
"positions":["mid_block"],"options":{},"shards":{"count":1,"items":[1]},"layout":"x"}"#;

fuzz_target!(init: common::init(), |data: &[u8]| {
    let parts = common::split(data, 3);
    let (manifest_text, items, tensors) = (parts[0], parts[1], parts[2]);
    let root = common::scratch().join("collection");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join(MANIFEST_FILE), manifest_text).unwrap();
    let manifest = match Manifest::read(&root) {
        Ok(manifest) => {
            let _ = manifest.differences(&manifest.clone());
            manifest
        }
        Err(e) => {
            drop(e.to_string());
            std::fs::write(root.join(MANIFEST_FILE), FALLBACK).unwrap();
            Manifest::read(&root).expect("fallback manifest")
        }
    };
    let collection = Collection { dir: root.clone(), manifest };
    let count = collection.shard_count();
    let _ = collection.status();
    if count == 0 {
        return;
    }
    let shard = shard_dir(&root, 0, count);
    std::fs::create_dir_all(&shard).unwrap();
    std::fs::write(shard.join(ITEMS_FILE), items).unwrap();
    let _ = collection.items(0);
    if let Some(position) = collection.manifest.positions.first().cloned() {
        let file = position_file(&shard, &position);
        // Positions are file names: a fuzzed one may not be a valid one (`/`, NUL, too long).
        if file.parent() == Some(shard.as_path()) && std::fs::write(&file, tensors).is_ok() {
            let _ = collection.read(0, &position);
        }
    }
    let path = common::file("shard.safetensors", tensors);
    let _ = sdscope::collection::shard_io::read_safetensors(&path);
});
