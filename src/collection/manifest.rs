//! `manifest.json`: what a collection holds and how it was made. Written once, atomically, by the first worker;
//! every later worker checks that it would write the same collection, so two runs with different options can
//! never mix their shards in one folder.

use super::layout::MANIFEST_FILE;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FORMAT: &str = "sdscope-collection";
pub const VERSION: u32 = 1;

/// One weight file of the model, by content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileHash {
    /// Relative to the model folder (`unet/diffusion_pytorch_model.safetensors`).
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// As given (`sdxl-turbo`, a repo id or a folder); informative, not compared.
    pub spec: String,
    pub files: Vec<FileHash>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// `prompts` or `images`.
    pub kind: String,
    /// As given; informative, not compared (the same data may live elsewhere on another machine).
    pub spec: String,
    pub column: Option<String>,
    /// Items in the work list (after `--limit`, times samples per prompt).
    pub items: u64,
    /// sha256 over the source's items (prompts, or image paths, labels and bytes).
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardsRecord {
    pub count: usize,
    /// Items per shard, in shard order.
    pub items: Vec<u64>,
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub sdscope_version: String,
    pub model: ModelRecord,
    pub source: SourceRecord,
    /// Positions in the order given, canonical (`mid_block.attentions[0]@update`).
    pub positions: Vec<String>,
    /// Everything that decides the stored numbers (collector-specific, compared key by key).
    pub options: serde_json::Value,
    pub shards: ShardsRecord,
    /// How to read the files, for people without sdscope.
    pub layout: String,
}

impl Manifest {
    /// Read `DIR/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: path.clone(),
                hint: Some("not a collection folder: `sdscope collect … --out DIR` creates it".into()),
            },
            _ => Error::io(&path, e),
        })?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| Error::BadConfig { path: path.clone(), why: e.to_string() })?;
        if manifest.format != FORMAT || manifest.version != VERSION {
            return Err(Error::BadConfig {
                path,
                why: format!(
                    "format {:?} version {}; this sdscope reads {FORMAT:?} version {VERSION}",
                    manifest.format, manifest.version
                ),
            });
        }
        if manifest.shards.items.len() != manifest.shards.count {
            return Err(Error::BadConfig { path, why: "shards.items must have one count per shard".into() });
        }
        Ok(manifest)
    }

    /// Write the manifest into `dir` unless one is there; if one is, it must describe the same collection.
    /// Returns whether this call wrote it.
    pub fn create_or_check(&self, dir: &Path) -> Result<bool> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(MANIFEST_FILE);
        if !path.exists() {
            // Unique per process and call: workers may be threads of one process too.
            static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = dir.join(format!("{MANIFEST_FILE}.tmp-{}-{call}", std::process::id()));
            let text = serde_json::to_string_pretty(self)? + "\n";
            std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
            // A hard link fails when the name exists: of several workers starting at once, one manifest wins.
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        let existing = Manifest::read(dir)?;
        let differences = self.differences(&existing);
        if differences.is_empty() {
            return Ok(false);
        }
        Err(Error::invalid(
            format!("collection folder {}", dir.display()),
            format!(
                "it holds a collection made with other settings, so its shards cannot be resumed or extended:\n  {}\nuse another --out folder, or run with the settings of its manifest.json",
                differences.join("\n  ")
            ),
        ))
    }

    /// What differs between two manifests, in the fields that decide the stored numbers.
    pub fn differences(&self, other: &Manifest) -> Vec<String> {
        let mut out = Vec::new();
        let mut compare = |what: &str, mine: String, theirs: String| {
            if mine != theirs {
                out.push(format!("{what}: this run {mine}, the folder {theirs}"));
            }
        };
        let files = |m: &Manifest| {
            m.model
                .files
                .iter()
                .map(|f| format!("{} {}", f.path, &f.sha256[..f.sha256.len().min(12)]))
                .collect::<Vec<_>>()
                .join(", ")
        };
        compare("model weights", files(self), files(other));
        compare("source kind", self.source.kind.clone(), other.source.kind.clone());
        compare("source items", self.source.items.to_string(), other.source.items.to_string());
        compare("source content (sha256)", self.source.fingerprint.clone(), other.source.fingerprint.clone());
        compare("source column", format!("{:?}", self.source.column), format!("{:?}", other.source.column));
        compare("positions", self.positions.join(","), other.positions.join(","));
        compare("shard count", self.shards.count.to_string(), other.shards.count.to_string());
        let keys: std::collections::BTreeSet<&String> = match (&self.options, &other.options) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => a.keys().chain(b.keys()).collect(),
            _ => Default::default(),
        };
        for key in keys {
            let get = |v: &serde_json::Value| v.get(key).map(|x| x.to_string()).unwrap_or_else(|| "(unset)".into());
            compare(&format!("--{}", key.replace('_', "-")), get(&self.options), get(&other.options));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(steps: u32) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            sdscope_version: "test".into(),
            model: ModelRecord {
                spec: "m".into(),
                files: vec![FileHash { path: "unet/w".into(), bytes: 1, sha256: "ab".repeat(32) }],
            },
            source: SourceRecord {
                kind: "prompts".into(),
                spec: "p".into(),
                column: None,
                items: 3,
                fingerprint: "f".into(),
            },
            positions: vec!["mid_block".into()],
            options: serde_json::json!({ "steps": steps }),
            shards: ShardsRecord { count: 2, items: vec![2, 1] },
            layout: String::new(),
        }
    }

    #[test]
    fn concurrent_workers_agree_on_one_manifest_and_others_are_refused() {
        let dir = std::env::temp_dir().join(format!("sdscope-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || manifest(2).create_or_check(&dir))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(Manifest::read(&dir).unwrap(), manifest(2));
        let err = manifest(3).create_or_check(&dir).unwrap_err().to_string();
        assert!(err.contains("--steps: this run 3, the folder 2"), "{err}");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from(MANIFEST_FILE)], "no temporary files left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
