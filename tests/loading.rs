//! Zero-copy loading: model weights view a private (copy-on-write) mapping of their file, which outlives the
//! loader; writes never reach the file; casts and data files still copy.

mod common;

use common::*;
use sdscope::weights::Weights;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use tch::{Device, Kind};

fn unet_file(model: &str) -> PathBuf {
    let dir = pipeline_dir(model).join("unet");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap()
}

fn sha256(path: &std::path::Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

fn first_float_name(w: &Weights) -> String {
    w.names().into_iter().find(|n| n.ends_with("conv_in.weight")).expect("conv_in.weight")
}

#[test]
fn mapped_weights_are_views_that_never_write_the_file() {
    let file = unet_file("sd1");
    let before = sha256(&file);
    let weights = Weights::open_mapped(std::slice::from_ref(&file), Kind::Float, Device::Cpu).unwrap();
    assert!(weights.is_mapped());
    let name = first_float_name(&weights);
    let a = weights.get(&name, None).unwrap();
    let b = weights.get(&name, None).unwrap();
    let original = a.copy();
    // Two reads of one tensor share the mapped page: a view, not a copy.
    let mut a_mut = a.shallow_clone();
    let _ = a_mut.f_add_scalar_(1.0).unwrap();
    assert_close("second view sees the write", &b, &(&original + 1.0), 0.0);
    // The mapping outlives the loader: the views stay valid after it is dropped.
    drop(weights);
    assert_close("after the loader is gone", &a, &(&original + 1.0), 0.0);
    // The file is unchanged, and a new mapping reads the original values.
    assert_eq!(sha256(&file), before, "a write into a mapped weight reached the file");
    let again = Weights::open_mapped(std::slice::from_ref(&file), Kind::Float, Device::Cpu).unwrap();
    assert_close("fresh mapping", &again.get(&name, None).unwrap(), &original, 0.0);
}

#[test]
fn casts_and_data_files_copy() {
    // float16 weights loaded as float32: a cast, so a private copy per read.
    let file = unet_file("sd1_fp16");
    let weights = Weights::open_mapped(std::slice::from_ref(&file), Kind::Float, Device::Cpu).unwrap();
    let name = first_float_name(&weights);
    let a = weights.get(&name, None).unwrap();
    assert_eq!(a.kind(), Kind::Float);
    let mut a_mut = a.shallow_clone();
    let _ = a_mut.f_add_scalar_(1.0).unwrap();
    let b = weights.get(&name, None).unwrap();
    assert!(!a.equal(&b), "a cast tensor must be a copy");
    // Data files (tensor_io) are read into memory, never mapped.
    let copied = Weights::open(std::slice::from_ref(&unet_file("sd1")), Kind::Float, Device::Cpu).unwrap();
    assert!(!copied.is_mapped());
    let x = copied.get(&first_float_name(&copied), None).unwrap();
    let mut x_mut = x.shallow_clone();
    let _ = x_mut.f_add_scalar_(1.0).unwrap();
    let y = copied.get(&first_float_name(&copied), None).unwrap();
    assert!(!x.equal(&y));
}

#[test]
fn a_pipeline_loads_twice_and_gives_the_same_numbers() {
    let dir = pipeline_dir("sd1");
    let load = || {
        sdscope::pipeline::Pipeline::load_with(
            dir.to_str().unwrap(),
            sdscope::pipeline::LoadOptions { progress: false, ..Default::default() },
        )
        .unwrap()
    };
    let first = load();
    let second = load();
    let image = fixtures().join("images/square.png");
    let request = sdscope::extract::ExtractRequest::new(["mid_block"]).timestep(50).seed(1).progress(false);
    let a = first.extract(&request, &[&image]).unwrap().get("mid_block").unwrap();
    drop(first);
    let b = second.extract(&request, &[&image]).unwrap().get("mid_block").unwrap();
    assert_close("two loads", &a, &b, 0.0);
}
