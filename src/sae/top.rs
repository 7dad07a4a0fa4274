//! The top items of every feature over a collection: one streaming pass, memory bounded by
//! `per_feature × latents`, stored beside the SAE (`TOP_DIR/top.safetensors` + `top.json`).

use super::Sae;
use crate::collection::layout::image_file;
use crate::collection::reader::to_tokens;
use crate::collection::{Collection, ShardState};
use crate::error::{Error, Result};
use crate::tensor_io;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// How an item's score for a feature is formed from its positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopRank {
    /// The largest activation anywhere in the item.
    Max,
    /// The activation averaged over the item's positions (their "Explore": spatially averaged).
    Mean,
}

impl TopRank {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "max" => Ok(Self::Max),
            "mean" => Ok(Self::Mean),
            _ => Err(Error::invalid(format!("rank `{s}`"), "known: max, mean")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TopOptions {
    pub per_feature: usize,
    pub rank: TopRank,
    /// Token rows encoded at once (bounds memory: chunk_rows × latents floats).
    pub chunk_rows: i64,
    pub progress: bool,
}

impl Default for TopOptions {
    fn default() -> Self {
        Self { per_feature: 9, rank: TopRank::Max, chunk_rows: 4096, progress: true }
    }
}

/// The best items of each feature and each feature's firing statistics over the collection.
/// # Shapes
/// `scores`/`items` `[per_feature, n]` (column f: feature f's best items, best first; item −1 and score 0 where
/// fewer items had it active); `fire_count`/`activation_sum` `[n]` over token positions.
#[derive(Debug)]
pub struct TopItems {
    pub collection: PathBuf,
    pub position: String,
    pub rank: TopRank,
    pub scores: Tensor,
    pub items: Tensor,
    pub fire_count: Tensor,
    pub activation_sum: Tensor,
    pub tokens: u64,
}

const TOP_FILE: &str = "top.safetensors";
const TOP_JSON: &str = "top.json";

impl TopItems {
    /// One pass over every complete shard.
    pub fn compute(sae: &Sae, collection: &Collection, position: &str, options: &TopOptions) -> Result<Self> {
        let position = super::collection_training::pick_position(collection, Some(position))?;
        let n = sae.num_latents();
        let per = options.per_feature.max(1) as i64;
        let device = sae.device();
        let mut scores = Tensor::full([0, n], 0.0, (Kind::Float, device));
        let mut items = Tensor::full([0, n], -1, (Kind::Int64, device));
        let mut fire_count = Tensor::zeros([n], (Kind::Double, device));
        let mut activation_sum = Tensor::zeros([n], (Kind::Double, device));
        let mut tokens = 0u64;
        let shards: Vec<usize> =
            collection.status().into_iter().filter(|s| s.state == ShardState::Complete).map(|s| s.index).collect();
        for (done, &shard) in shards.iter().enumerate() {
            let part = collection.read(shard, &position)?;
            let rows_per_item = if part.x.size()[0] == 0 { 1 } else { part.x.numel() as i64 / part.x.size()[0] };
            let rows = to_tokens(&part)?.f_to_device(device)?;
            let per_item = rows_per_item / sae.d_in().max(1);
            let first_item = first_item_of(collection, shard);
            let item_count = part.x.size()[0];
            let chunk_items = (options.chunk_rows / per_item.max(1)).max(1);
            let mut start = 0;
            while start < item_count {
                let len = chunk_items.min(item_count - start);
                let x = rows.f_narrow(0, start * per_item, len * per_item)?;
                let code = sae.encode(&x)?;
                let active = code.values.f_gt(0.0)?;
                fire_count = fire_count.f_index_add(
                    0,
                    &code.indices.f_reshape([-1])?,
                    &active.f_to_kind(Kind::Double)?.f_reshape([-1])?,
                )?;
                activation_sum = activation_sum.f_index_add(
                    0,
                    &code.indices.f_reshape([-1])?,
                    &code.values.f_to_kind(Kind::Double)?.f_reshape([-1])?,
                )?;
                tokens += (len * per_item) as u64;
                // Per (item, latent) score from the chunk's dense code (chunk_rows × n floats at most).
                let dense = sae.dense(&code)?.f_reshape([len, per_item, n])?;
                let chunk_scores = match options.rank {
                    TopRank::Max => dense.f_amax([1i64].as_slice(), false)?,
                    TopRank::Mean => dense.f_mean_dim([1i64].as_slice(), false, Kind::Float)?,
                };
                let chunk_items =
                    Tensor::f_arange_start(first_item + start, first_item + start + len, (Kind::Int64, device))?
                        .f_unsqueeze(1)?
                        .f_expand([len, n], false)?;
                let all_scores = Tensor::f_cat(&[&scores, &chunk_scores], 0)?;
                let all_items = Tensor::f_cat(&[&items, &chunk_items], 0)?;
                let keep = per.min(all_scores.size()[0]);
                let (best, order) = all_scores.f_topk(keep, 0, true, true)?;
                items = all_items.f_gather(0, &order, false)?;
                scores = best;
                start += len;
            }
            if options.progress {
                eprintln!("[sae top] shard {}/{} ({tokens} tokens)", done + 1, shards.len());
            }
        }
        // Items whose score is 0 never had the feature active: mark them absent.
        let items = items.f_where_self(&scores.f_gt(0.0)?, &Tensor::from(-1i64).f_to_device(device)?)?;
        let pad = per - scores.size()[0];
        let (scores, items) = if pad > 0 {
            (
                Tensor::f_cat(&[&scores, &Tensor::zeros([pad, n], (Kind::Float, device))], 0)?,
                Tensor::f_cat(&[&items, &Tensor::full([pad, n], -1, (Kind::Int64, device))], 0)?,
            )
        } else {
            (scores, items)
        };
        Ok(Self {
            collection: collection.dir.clone(),
            position,
            rank: options.rank,
            scores,
            items,
            fire_count,
            activation_sum,
            tokens,
        })
    }

    /// Feature f's firing frequency over token positions.
    pub fn frequency(&self, feature: i64) -> Result<f64> {
        Ok(self.fire_count.f_double_value(&[feature])? / self.tokens.max(1) as f64)
    }

    /// Feature f's mean activation where active.
    pub fn mean_activation(&self, feature: i64) -> Result<f64> {
        let c = self.fire_count.f_double_value(&[feature])?;
        Ok(if c > 0.0 { self.activation_sum.f_double_value(&[feature])? / c } else { 0.0 })
    }

    /// Feature f's best items (global collection indices) with their scores, best first.
    pub fn best(&self, feature: i64) -> Result<Vec<(i64, f64)>> {
        let n = self.scores.size()[1];
        if !(0..n).contains(&feature) {
            return Err(Error::invalid(format!("feature {feature}"), format!("features are 0..{n}")));
        }
        let items = Vec::<i64>::try_from(self.items.f_select(1, feature)?.f_to_device(tch::Device::Cpu)?)?;
        let scores = Vec::<f64>::try_from(
            self.scores.f_select(1, feature)?.f_to_kind(Kind::Double)?.f_to_device(tch::Device::Cpu)?,
        )?;
        Ok(items.into_iter().zip(scores).filter(|(i, _)| *i >= 0).collect())
    }

    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        tensor_io::save(
            &dir.join(TOP_FILE),
            &[
                ("scores".into(), self.scores.shallow_clone()),
                ("fire_count".into(), self.fire_count.shallow_clone()),
                ("activation_sum".into(), self.activation_sum.shallow_clone()),
            ],
            None,
        )?;
        let items = Vec::<i64>::try_from(self.items.f_to_device(tch::Device::Cpu)?.f_reshape([-1])?)?;
        let meta = serde_json::json!({
            "collection": self.collection.display().to_string(),
            "position": self.position,
            "rank": self.rank,
            "tokens": self.tokens,
            "per_feature": self.items.size()[0],
            "items": items,
        });
        let path = dir.join(TOP_JSON);
        std::fs::write(&path, serde_json::to_string(&meta)?).map_err(|e| Error::io(&path, e))
    }

    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join(TOP_JSON);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let meta: serde_json::Value = serde_json::from_str(&text)?;
        let bad = |why: &str| Error::BadConfig { path: path.clone(), why: why.into() };
        let (mut t, _) = tensor_io::load(&dir.join(TOP_FILE))?;
        let scores = t.remove("scores").ok_or_else(|| bad("top.safetensors has no `scores`"))?;
        let items: Vec<i64> = serde_json::from_value(meta["items"].clone()).map_err(|_| bad("no `items` list"))?;
        if items.len() as i64 != scores.numel() as i64 {
            return Err(bad("`items` does not match the scores' shape"));
        }
        Ok(Self {
            collection: PathBuf::from(meta["collection"].as_str().ok_or_else(|| bad("no `collection`"))?),
            position: meta["position"].as_str().ok_or_else(|| bad("no `position`"))?.to_string(),
            rank: serde_json::from_value(meta["rank"].clone()).map_err(|_| bad("bad `rank`"))?,
            items: Tensor::from_slice(&items).f_reshape(scores.size())?,
            scores,
            fire_count: t.remove("fire_count").ok_or_else(|| bad("no `fire_count`"))?.to_kind(Kind::Double),
            activation_sum: t.remove("activation_sum").ok_or_else(|| bad("no `activation_sum`"))?.to_kind(Kind::Double),
            tokens: meta["tokens"].as_u64().unwrap_or(0),
        })
    }
}

/// The global index of a shard's first item.
pub(crate) fn first_item_of(collection: &Collection, shard: usize) -> i64 {
    collection.manifest.shards.items[..shard].iter().sum::<u64>() as i64
}

/// Which shard holds a global item index, and its local index there.
pub(crate) fn locate_item(collection: &Collection, item: i64) -> Result<(usize, i64)> {
    let mut start = 0i64;
    for (shard, &count) in collection.manifest.shards.items.iter().enumerate() {
        if item >= start && item < start + count as i64 {
            return Ok((shard, item - start));
        }
        start += count as i64;
    }
    Err(Error::invalid(format!("item {item}"), format!("the collection has items 0..{start}")))
}

/// Feature f's activation over one item's spatial grid (averaged over any step axis).
/// # Shapes
/// `[h, w]`.
pub fn activation_map(sae: &Sae, collection: &Collection, position: &str, feature: i64, item: i64) -> Result<Tensor> {
    sae.check_feature(feature)?;
    let (shard, local) = locate_item(collection, item)?;
    let part = collection.read(shard, position)?;
    let (Some(row), Some(col)) =
        (part.layout.iter().position(|a| a == "row"), part.layout.iter().position(|a| a == "col"))
    else {
        return Err(Error::invalid(
            format!("`{position}` in this collection"),
            format!("has layout {:?}: no spatial grid to map (collect maps, not sampled tokens)", part.layout),
        ));
    };
    let channel = part.layout.iter().position(|a| a == "channel").unwrap_or(1);
    let x = part.x.f_get(local)?; // drop the item axis
    let (row, col, channel) = (row as i64 - 1, col as i64 - 1, channel as i64 - 1);
    let x = x.f_movedim([channel].as_slice(), [-1i64].as_slice())?;
    let shape = x.size();
    let spatial = &shape[..shape.len() - 1];
    let act = sae.feature_activation(&x.f_reshape([-1, sae.d_in()])?.f_to_kind(Kind::Float)?, feature)?;
    let act = act.f_reshape(spatial)?;
    // Remaining axes in order, channel removed: move row/col last, average the rest.
    let (row, col) = (if row > channel { row - 1 } else { row }, if col > channel { col - 1 } else { col });
    let act = act.f_movedim([row, col].as_slice(), [-2i64, -1].as_slice())?;
    let act = act.f_reshape([-1, act.size()[act.dim() - 2], act.size()[act.dim() - 1]])?;
    Ok(act.f_mean_dim([0i64].as_slice(), false, Kind::Float)?)
}

/// The kept image of an item, if the collection kept images.
pub fn item_image(collection: &Collection, item: i64) -> Result<Option<PathBuf>> {
    let (shard, _) = locate_item(collection, item)?;
    let dir = collection.complete_shard(shard)?;
    let file = image_file(&dir, item as u64);
    Ok(file.is_file().then_some(file))
}

/// An item's prompt (or image path) from the item table.
pub fn item_caption(collection: &Collection, item: i64) -> Result<String> {
    let (shard, local) = locate_item(collection, item)?;
    let rows = collection.items(shard)?;
    let row = rows.get(local as usize).cloned().unwrap_or_default();
    Ok(row["prompt"].as_str().or_else(|| row["image"].as_str()).unwrap_or("").to_string())
}
