//! Arbitrary bytes as a safetensors file, through every reader: the weights table (`Weights::open`, then every
//! tensor), `tensor_io::load` and the collection's `read_safetensors`.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;
use sdscope::prelude::{Device, Kind};
use sdscope::weights::Weights;

fuzz_target!(init: common::init(), |data: &[u8]| {
    let path = common::file("weights.safetensors", data);
    if let Ok(weights) = Weights::open(&[path.clone()], Kind::Float, Device::Cpu) {
        for name in weights.names() {
            let _ = weights.get(&name, None);
            // The squeeze path (a 1×1 conv where a linear weight is expected) and a plain mismatch.
            if let Some(shape) = weights.shape_of(&name).map(<[i64]>::to_vec) {
                let squeezed: Vec<i64> = shape.iter().copied().filter(|&d| d != 1).collect();
                let _ = weights.get(&name, Some(&squeezed));
                let _ = weights.get(&name, Some(&[i64::MAX, 3]));
            }
        }
        let _ = sdscope::tensor_io::load(&path);
    }
    let _ = sdscope::collection::shard_io::read_safetensors(&path);
});
