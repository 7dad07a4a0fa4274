//! A small cache of VAE posteriors keyed by image content: encoding dominates extraction time (the SD1.5 VAE
//! encoder at 512² costs more than a whole U-Net pass), and the seeded sample drawn from a cached posterior is
//! the same as from a fresh one, so an image extracted again (other positions, timesteps, prompts) is encoded
//! once.

use crate::error::Result;
use crate::models::LatentDistribution;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use tch::{Kind, Tensor};

const CAPACITY: usize = 16;

/// Which pixels a posterior belongs to: a hash of their values and their shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelsKey {
    hash: u64,
    size: Vec<i64>,
}

impl PixelsKey {
    /// The key of these pixels (one pass over their values).
    pub fn of(pixels: &Tensor) -> Result<Self> {
        let flat = pixels.f_to_kind(Kind::Float)?.f_to_device(tch::Device::Cpu)?.f_contiguous()?.f_flatten(0, -1)?;
        let values = Vec::<f32>::try_from(&flat)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for v in values {
            v.to_bits().hash(&mut hasher);
        }
        Ok(Self { hash: hasher.finish(), size: pixels.size() })
    }
}

#[derive(Default)]
pub struct PosteriorCache {
    entries: Mutex<VecDeque<(PixelsKey, LatentDistribution)>>,
}

impl PosteriorCache {
    /// The cached posterior of the pixels with this key, if any.
    pub fn get(&self, key: &PixelsKey) -> Option<LatentDistribution> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().find(|(k, _)| k == key).map(|(_, d)| d.shallow_clone())
    }

    /// Remember a posterior (the oldest one is forgotten beyond the capacity).
    pub fn insert(&self, key: PixelsKey, dist: &LatentDistribution) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() == CAPACITY {
            entries.pop_front();
        }
        entries.push_back((key, dist.shallow_clone()));
    }

    /// Forget every cached posterior.
    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
