//! Component `config.json` files: the first byte picks the component, the rest is the file. A config that parses
//! goes through the architecture checks that follow it: the model is built against the test fixture's weights
//! (so a config that contradicts its weights is exercised too), the scheduler builds its noise schedule and a
//! sampler.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;
use sdscope::config::{read_json, ClipConfig, SchedulerConfig, UNetConfig, VaeConfig};
use sdscope::prelude::{Device, Kind};
use sdscope::weights::Weights;
use std::sync::OnceLock;

/// The fixture's weights for a component (header only; tensors are read when a model asks), else an empty table.
fn weights(component: &'static str) -> &'static Weights {
    static CACHE: OnceLock<Vec<(&'static str, Weights)>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        [
            ("unet", "unet/diffusion_pytorch_model.safetensors"),
            ("vae", "vae/diffusion_pytorch_model.safetensors"),
            ("text_encoder", "text_encoder/model.safetensors"),
        ]
        .into_iter()
        .map(|(name, file)| {
            let path = common::fixtures().map(|f| f.join("sd1").join(file));
            let weights = path
                .filter(|p| p.is_file())
                .and_then(|p| Weights::open(&[p], Kind::Float, Device::Cpu).ok())
                .unwrap_or_else(|| Weights::open(&[], Kind::Float, Device::Cpu).expect("empty weights"));
            (name, weights)
        })
        .collect()
    });
    &all.iter().find(|(n, _)| *n == component).expect("component").1
}

fuzz_target!(init: { common::init(); weights("unet"); }, |data: &[u8]| {
    let Some((&which, json)) = data.split_first() else { return };
    let path = common::file("config.json", json);
    match which % 5 {
        0 => {
            if let Ok(config) = read_json::<UNetConfig>(&path) {
                let _ = sdscope::models::UNet::load(config, &path, weights("unet"));
            }
        }
        1 => {
            if let Ok(config) = read_json::<VaeConfig>(&path) {
                let _ = sdscope::models::VaeEncoder::load(config.clone(), &path, weights("vae"));
                let _ = sdscope::models::VaeDecoder::load(config, &path, weights("vae"));
            }
        }
        2 => {
            if let Ok(config) = read_json::<ClipConfig>(&path) {
                let _ = sdscope::models::ClipTextModel::load(config, &path, weights("text_encoder"));
            }
        }
        _ => {
            if let Ok(config) = read_json::<SchedulerConfig>(&path) {
                let _ = sdscope::schedulers::noise::NoiseSchedule::from_config(&config, &path);
                let steps = usize::from(which / 5 % 8) + 1;
                let _ = sdscope::schedulers::build_sampler(None, &config, &path, steps);
            }
        }
    }
});
