//! Reading a collection: its state shard by shard, one shard's tensors and items, and a stream of token
//! vectors for training (shards in a seeded order, rows shuffled in a bounded buffer).

use super::layout::{partial_dirs, position_file, shard_dir, ITEMS_FILE};
use super::manifest::Manifest;
use super::shard_io::{read_safetensors, ShardFile};
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// A collection folder and its manifest.
#[derive(Debug, Clone)]
pub struct Collection {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// Where a shard stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardState {
    Complete,
    /// A worker is writing it, or one was killed while writing it (its partial folder is never read).
    Partial,
    Missing,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardStatus {
    pub index: usize,
    pub state: ShardState,
    /// Planned items.
    pub items: u64,
    /// Bytes on disk (complete shards only).
    pub bytes: u64,
}

/// One position of one shard: `x` `[items, ..]` and, where kept, the step indices, timesteps and sampled
/// positions; `layout` names each axis of `x` (`item`, `step`, `channel`, `row`, `col`, `token`, `sample`).
pub struct ShardTensors {
    pub x: Tensor,
    pub step: Option<Tensor>,
    pub timestep: Option<Tensor>,
    pub pos: Option<Tensor>,
    pub layout: Vec<String>,
}

impl Collection {
    /// Open a collection folder (its manifest must be readable).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = Manifest::read(&dir)?;
        Ok(Self { dir, manifest })
    }

    pub fn shard_count(&self) -> usize {
        self.manifest.shards.count
    }

    /// Every shard's state, planned items and bytes.
    pub fn status(&self) -> Vec<ShardStatus> {
        let n = self.shard_count();
        (0..n)
            .map(|index| {
                let dir = shard_dir(&self.dir, index, n);
                let items = self.manifest.shards.items[index];
                let (state, bytes) = if dir.is_dir() {
                    (ShardState::Complete, dir_bytes(&dir))
                } else if !partial_dirs(&self.dir, index, n).is_empty() {
                    (ShardState::Partial, 0)
                } else {
                    (ShardState::Missing, 0)
                };
                ShardStatus { index, state, items, bytes }
            })
            .collect()
    }

    /// The folder of a complete shard, or an error saying it is not complete.
    pub fn complete_shard(&self, index: usize) -> Result<PathBuf> {
        let n = self.shard_count();
        if index >= n {
            return Err(Error::invalid(format!("shard {index}"), format!("the collection has shards 0..{n}")));
        }
        let dir = shard_dir(&self.dir, index, n);
        if !dir.is_dir() {
            return Err(Error::invalid(
                format!("shard {index}"),
                "is not complete yet (see `sdscope collect --out DIR --status`)",
            ));
        }
        Ok(dir)
    }

    fn check_position(&self, position: &str) -> Result<()> {
        if self.manifest.positions.iter().any(|p| p == position) {
            return Ok(());
        }
        Err(Error::UnknownPosition { given: position.to_string(), valid: self.manifest.positions.clone() })
    }

    /// One position of one complete shard.
    pub fn read(&self, shard: usize, position: &str) -> Result<ShardTensors> {
        self.check_position(position)?;
        let path = position_file(&self.complete_shard(shard)?, position);
        let ShardFile { mut tensors, metadata } = read_safetensors(&path)?;
        let x = tensors.remove("x").ok_or_else(|| Error::MissingTensor {
            name: "x".into(),
            file: path.clone(),
            expected: None,
        })?;
        let layout: Vec<String> = metadata
            .get("layout")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .ok_or_else(|| Error::BadSafetensors { path: path.clone(), why: "no `layout` in its metadata".into() })?;
        if layout.len() != x.dim() {
            return Err(Error::BadSafetensors {
                path,
                why: format!("layout {layout:?} does not match x's shape {:?}", x.size()),
            });
        }
        Ok(ShardTensors {
            x,
            step: tensors.remove("step"),
            timestep: tensors.remove("timestep"),
            pos: tensors.remove("pos"),
            layout,
        })
    }

    /// The item table of a complete shard.
    pub fn items(&self, shard: usize) -> Result<Vec<serde_json::Value>> {
        let path = self.complete_shard(shard)?.join(ITEMS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        text.lines()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .map_err(|e| Error::BadConfig { path: path.clone(), why: format!("line {}: {e}", i + 1) })
            })
            .collect()
    }

    /// One position over the whole collection, shards concatenated in order (every shard must be complete):
    /// `x` `[all items, ..]`, `pos` likewise; `step` and `timestep` as in each shard.
    pub fn merged(&self, position: &str) -> Result<ShardTensors> {
        let parts = (0..self.shard_count()).map(|i| self.read(i, position)).collect::<Result<Vec<_>>>()?;
        let first = parts
            .iter()
            .find(|p| p.x.numel() > 0)
            .or(parts.first())
            .ok_or_else(|| Error::invalid("collection", "has no shards"))?;
        let layout = first.layout.clone();
        let (step, timestep) =
            (first.step.as_ref().map(|t| t.shallow_clone()), first.timestep.as_ref().map(|t| t.shallow_clone()));
        let xs: Vec<&Tensor> = parts.iter().map(|p| &p.x).filter(|x| x.numel() > 0).collect();
        let x = if xs.is_empty() { first.x.shallow_clone() } else { Tensor::f_cat(&xs, 0)? };
        let pos: Vec<&Tensor> = parts.iter().filter_map(|p| p.pos.as_ref()).collect();
        let pos = if pos.is_empty() { None } else { Some(Tensor::f_cat(&pos, 0)?) };
        Ok(ShardTensors { x, step, timestep, pos, layout })
    }

    /// Every item row of the collection, shards in order (every shard must be complete).
    pub fn merged_items(&self) -> Result<Vec<serde_json::Value>> {
        let mut rows = Vec::new();
        for i in 0..self.shard_count() {
            rows.extend(self.items(i)?);
        }
        Ok(rows)
    }

    /// Stream the token vectors of a position over the complete shards: see [`TokenStream`].
    pub fn tokens(&self, position: &str, options: StreamOptions) -> Result<TokenStream> {
        self.check_position(position)?;
        if options.batch == 0 || options.buffer < options.batch {
            return Err(Error::invalid(
                "token stream",
                format!("batch {} must be at least 1 and at most the buffer ({})", options.batch, options.buffer),
            ));
        }
        let mut shards: Vec<usize> = self
            .status()
            .into_iter()
            .filter(|s| s.state == ShardState::Complete && options.shards.as_ref().is_none_or(|w| w.contains(&s.index)))
            .map(|s| s.index)
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(options.seed);
        if options.shuffle {
            shards.shuffle(&mut rng);
        }
        Ok(TokenStream {
            collection: self.clone(),
            position: position.to_string(),
            shards,
            options,
            rng,
            buffer: Vec::new(),
            buffered_rows: 0,
            ready: Vec::new(),
        })
    }
}

/// Rows of `x` as token vectors `[rows, C]`: the `channel` axis last, every other axis flattened.
pub fn to_tokens(t: &ShardTensors) -> Result<Tensor> {
    let channel = t
        .layout
        .iter()
        .position(|a| a == "channel")
        .ok_or_else(|| Error::invalid("shard layout", format!("{:?} has no `channel` axis", t.layout)))?;
    let c = t.x.size()[channel];
    Ok(t.x.f_movedim([channel as i64], [-1])?.f_reshape([-1, c])?.f_to_kind(Kind::Float)?)
}

/// How to stream tokens.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Rows per yielded batch.
    pub batch: usize,
    /// Rows held at most before shuffling and yielding (bounds memory: buffer × C × 4 bytes, plus one shard).
    pub buffer: usize,
    /// Shuffle shard order and rows (seeded); off: shards and rows in order.
    pub shuffle: bool,
    pub seed: u64,
    /// Only these shards (e.g. a held-out one for evaluation).
    pub shards: Option<Vec<usize>>,
    /// Yield the last, smaller batch too.
    pub keep_last: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self { batch: 4096, buffer: 262_144, shuffle: true, seed: 0, shards: None, keep_last: false }
    }
}

/// Batches `[batch, C]` (float32) of token vectors of one position, reading one shard at a time.
pub struct TokenStream {
    collection: Collection,
    position: String,
    /// Shards still to read, in reading order (popped from the front).
    shards: Vec<usize>,
    options: StreamOptions,
    rng: rand_chacha::ChaCha8Rng,
    buffer: Vec<Tensor>,
    buffered_rows: usize,
    ready: Vec<Tensor>,
}

impl TokenStream {
    fn fill(&mut self) -> Result<()> {
        while self.buffered_rows < self.options.buffer && !self.shards.is_empty() {
            let shard = self.shards.remove(0);
            let tokens = to_tokens(&self.collection.read(shard, &self.position)?)?;
            self.buffered_rows += tokens.size()[0] as usize;
            self.buffer.push(tokens);
        }
        if self.buffer.is_empty() {
            return Ok(());
        }
        let all = Tensor::f_cat(&self.buffer, 0)?;
        self.buffer.clear();
        let rows = all.size()[0] as usize;
        let mut order: Vec<i64> = (0..rows as i64).collect();
        if self.options.shuffle {
            order.shuffle(&mut self.rng);
        }
        let all = all.f_index_select(0, &Tensor::from_slice(&order))?;
        let batch = self.options.batch;
        let full = rows / batch;
        for b in 0..full {
            self.ready.push(all.f_narrow(0, (b * batch) as i64, batch as i64)?);
        }
        let rest = rows - full * batch;
        self.buffered_rows = rest;
        if rest > 0 {
            self.buffer.push(all.f_narrow(0, (full * batch) as i64, rest as i64)?);
        }
        self.ready.reverse();
        Ok(())
    }
}

impl Iterator for TokenStream {
    type Item = Result<Tensor>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ready.is_empty() && !self.shards.is_empty() {
            if let Err(e) = self.fill() {
                self.shards.clear();
                return Some(Err(e));
            }
        }
        if let Some(batch) = self.ready.pop() {
            return Some(Ok(batch));
        }
        if self.options.keep_last && !self.buffer.is_empty() {
            let rest = Tensor::f_cat(&std::mem::take(&mut self.buffer), 0);
            self.buffered_rows = 0;
            return Some(rest.map_err(Error::from));
        }
        None
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
