//! What a collection run asks for: positions, generation or extraction settings, storage and batching.

use super::options::{CaptureSteps, Reduce, StoreDtype};
use crate::schedulers::SamplerKind;

/// How to collect. `None` fields take the model's generation defaults (recorded resolved in the manifest).
#[derive(Debug, Clone)]
pub struct CollectRequest {
    /// Positions, `P` or `P@update`.
    pub positions: Vec<String>,
    pub steps: Option<usize>,
    pub guidance: Option<f64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    /// Item `k` uses seed `seed + k`.
    pub seed: i64,
    pub negative_prompt: Option<String>,
    pub scheduler: Option<SamplerKind>,
    pub capture_steps: CaptureSteps,
    /// Items per prompt (prompt `p`, sample `j` is item `p · samples + j`).
    pub samples_per_prompt: usize,
    /// Images: the noise timesteps, as in `extract`.
    pub timesteps: Vec<i64>,
    /// Images: the conditioning prompt (empty by default, as in `extract`).
    pub prompt: String,
    /// Images: bring every image to `side`×`side` (shortest side scaled, centre crop), so that maps of images
    /// of different sizes can be stored together. `None`: each image at its own size (multiples of 8).
    pub image_size: Option<u32>,
    pub reduce: Reduce,
    pub dtype: StoreDtype,
    /// Keep each generated image as PNG (`thumbnail`: longest side in pixels instead of the full image).
    pub keep_images: bool,
    pub thumbnail: Option<u32>,
    /// Items per U-Net pass (does not change which items a shard holds).
    pub batch: usize,
    /// Recorded in the manifest (the caller applies it to the source).
    pub limit: Option<usize>,
    /// One line per shard on stderr.
    pub progress: bool,
}

impl CollectRequest {
    pub fn new<I, S>(positions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            positions: positions.into_iter().map(Into::into).collect(),
            steps: None,
            guidance: None,
            width: None,
            height: None,
            seed: 0,
            negative_prompt: None,
            scheduler: None,
            capture_steps: CaptureSteps::All,
            samples_per_prompt: 1,
            timesteps: vec![50],
            prompt: String::new(),
            image_size: None,
            reduce: Reduce::None,
            dtype: StoreDtype::F32,
            keep_images: false,
            thumbnail: None,
            batch: 1,
            limit: None,
            progress: true,
        }
    }

    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = Some(steps);
        self
    }

    pub fn guidance(mut self, guidance: f64) -> Self {
        self.guidance = Some(guidance);
        self
    }

    pub fn size(mut self, width: i64, height: i64) -> Self {
        (self.width, self.height) = (Some(width), Some(height));
        self
    }

    pub fn seed(mut self, seed: i64) -> Self {
        self.seed = seed;
        self
    }

    pub fn capture_steps(mut self, steps: CaptureSteps) -> Self {
        self.capture_steps = steps;
        self
    }

    pub fn reduce(mut self, reduce: Reduce) -> Self {
        self.reduce = reduce;
        self
    }

    pub fn dtype(mut self, dtype: StoreDtype) -> Self {
        self.dtype = dtype;
        self
    }

    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    pub fn keep_images(mut self, yes: bool) -> Self {
        self.keep_images = yes;
        self
    }

    pub fn timesteps(mut self, timesteps: &[i64]) -> Self {
        self.timesteps = timesteps.to_vec();
        self
    }

    pub fn progress(mut self, yes: bool) -> Self {
        self.progress = yes;
        self
    }
}
