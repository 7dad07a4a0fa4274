//! Training and evaluating on a collection folder: token batches streamed shard by shard through a bounded
//! shuffle buffer, one shard held out for evaluation.

use super::metrics::{EvalAccumulator, EvalMetrics};
use super::{geometric_median, variance_scale, Sae, TrainOptions, TrainState, Trainer};
use crate::collection::{Collection, ShardState, StreamOptions};
use crate::error::{Error, Result};
use serde_json::json;
use std::path::Path;
use tch::{Device, Tensor};

/// Where the training data comes from.
#[derive(Debug, Clone)]
pub struct CollectionTraining {
    /// The collection position to train on; `None`: the collection's only position.
    pub position: Option<String>,
    /// The shard kept out of training for evaluation; `None`: the last complete shard when there are at least
    /// two, else none.
    pub holdout: Option<usize>,
    /// Shuffle-buffer rows (bounds memory: rows × d × 4 bytes, plus one shard).
    pub buffer: usize,
    pub device: Device,
}

impl Default for CollectionTraining {
    fn default() -> Self {
        Self { position: None, holdout: None, buffer: 262_144, device: Device::Cpu }
    }
}

/// The position to use: the given one (checked) or the only one.
pub(crate) fn pick_position(collection: &Collection, given: Option<&str>) -> Result<String> {
    let positions = &collection.manifest.positions;
    match given {
        Some(p) if positions.iter().any(|q| q == p) => Ok(p.to_string()),
        Some(p) => Err(Error::UnknownPosition { given: p.to_string(), valid: positions.clone() }),
        None if positions.len() == 1 => Ok(positions[0].clone()),
        None => Err(Error::invalid(
            "position",
            format!("the collection holds several; pick one with --position: {}", positions.join(", ")),
        )),
    }
}

fn complete_shards(collection: &Collection) -> Vec<usize> {
    collection.status().into_iter().filter(|s| s.state == ShardState::Complete).map(|s| s.index).collect()
}

/// Train an SAE on a collection's tokens at one position; returns the SAE (its `mean`/`std`, hook, model and
/// training record filled in), the final training state, and the held-out metrics when a shard was held out.
pub fn train_on_collection(
    dir: impl AsRef<Path>,
    options: &TrainOptions,
    data: &CollectionTraining,
) -> Result<(Sae, TrainState, Option<EvalMetrics>)> {
    let collection = Collection::open(dir)?;
    let position = pick_position(&collection, data.position.as_deref())?;
    let complete = complete_shards(&collection);
    if complete.is_empty() {
        return Err(Error::invalid(
            "collection",
            "has no complete shard yet (see `sdscope collect --out DIR --status`)",
        ));
    }
    let holdout = match data.holdout {
        Some(h) => {
            collection.complete_shard(h)?;
            Some(h)
        }
        None if complete.len() >= 2 => complete.last().copied(),
        None => None,
    };
    let train_shards: Vec<usize> = complete.iter().copied().filter(|s| Some(*s) != holdout).collect();
    let stream = |epoch: u64| {
        collection.tokens(
            &position,
            StreamOptions {
                batch: options.batch,
                buffer: data.buffer.max(options.batch),
                shuffle: true,
                seed: options.seed.wrapping_add(epoch),
                shards: Some(train_shards.clone()),
                keep_last: false,
            },
        )
    };

    // The first batches set b_pre (geometric median) and the MSE scale (variance), then are trained on too.
    let mut first = Vec::new();
    let mut batches = stream(0)?;
    for batch in batches.by_ref().take(options.init_batches.max(1)) {
        first.push(batch?.f_to_device(data.device)?);
    }
    if first.is_empty() {
        return Err(Error::invalid(
            "collection",
            format!("has fewer than {} tokens at `{position}` in its training shards; lower --batch", options.batch),
        ));
    }
    let sample = Tensor::f_cat(&first, 0)?;
    let d = sample.size()[1];
    let mut sae = Sae::init(d, options.latents, options.k, options.seed)?.to_device(data.device)?;
    sae.activation = options.activation;
    sae.b_pre = geometric_median(&sample)?.f_to_device(data.device)?;
    let mse_scale = variance_scale(&sample)?;
    drop(sample);

    let mut trainer = Trainer::new(sae, options.clone(), mse_scale)?;
    if options.progress {
        eprintln!(
            "[sae] training on `{position}` of {} ({} shard(s){}): d {d}, {} latents, k {}, batch {}",
            collection.dir.display(),
            train_shards.len(),
            holdout.map(|h| format!(", shard {h} held out")).unwrap_or_default(),
            options.latents,
            options.k,
            options.batch
        );
    }
    let limit = options.steps.unwrap_or(usize::MAX);
    let mut epoch = 0;
    let mut pending = first.into_iter();
    'outer: loop {
        for batch in pending.by_ref() {
            if trainer.state.steps >= limit {
                break 'outer;
            }
            trainer.step(&batch)?;
        }
        for batch in batches.by_ref() {
            if trainer.state.steps >= limit {
                break 'outer;
            }
            trainer.step(&batch?.f_to_device(data.device)?)?;
        }
        if options.steps.is_none() || trainer.state.steps >= limit {
            break;
        }
        if trainer.state.steps == 0 {
            break;
        }
        epoch += 1;
        batches = stream(epoch)?;
    }
    let (mut sae, state) = trainer.finish()?;
    sae.meta.hook = Some(position.clone());
    sae.meta.model = Some(collection.manifest.model.spec.clone());
    let held_out = match holdout {
        Some(h) => Some(evaluate(&sae, &collection, &position, Some(vec![h]), options.batch)?),
        None => None,
    };
    let (histogram, never) = state.firing.log10_histogram(32)?;
    let extra = &mut sae.meta.extra;
    extra.insert(
        "training".into(),
        json!({
            "collection": collection.dir.display().to_string(),
            "options": options,
            "steps": state.steps,
            "tokens": state.firing.tokens,
            "mse_scale": state.mse_scale,
            "train_shards": train_shards,
            "holdout_shard": holdout,
            "log": state.logs,
            "log10_frequency_histogram": histogram,
            "never_fired": never,
        }),
    );
    if let Some(m) = &held_out {
        extra.insert("eval".into(), serde_json::to_value(m)?);
    }
    Ok((sae, state, held_out))
}

/// Reconstruction and sparsity of an SAE on a collection's tokens (the given shards, or every complete one).
pub fn evaluate(
    sae: &Sae,
    collection: &Collection,
    position: &str,
    shards: Option<Vec<usize>>,
    batch: usize,
) -> Result<EvalMetrics> {
    let stream = collection.tokens(
        position,
        StreamOptions {
            batch: batch.max(1),
            buffer: batch.max(1),
            shuffle: false,
            seed: 0,
            shards: Some(shards.unwrap_or_else(|| complete_shards(collection))),
            keep_last: true,
        },
    )?;
    let mut acc = EvalAccumulator::default();
    for x in stream {
        let x = sae.check_rows(&x?, &format!("tokens of `{position}`"))?;
        let code = sae.encode(&x)?;
        let recon = sae.decode(&code)?;
        acc.add(&x, &recon, &code.indices, &code.values, sae.num_latents())?;
    }
    acc.finish()
}
