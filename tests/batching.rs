//! Batched generation and extraction against one image at a time: the seeded draws are identical, the numbers
//! equal within 1e-5 relative L2 (libtorch kernels may sum in another order for another batch size).

mod common;

use common::{pipeline_dir, rel_l2};
use sdscope::generate::BatchItem;
use sdscope::prelude::*;

const TOLERANCE: f64 = 1e-5;

fn load(name: &str) -> Pipeline {
    let options = LoadOptions { progress: false, ..Default::default() };
    Pipeline::load_with(pipeline_dir(name).to_str().unwrap(), options).unwrap()
}

#[test]
fn batched_generation_equals_one_at_a_time() {
    for (name, guidance, scheduler) in [
        ("sdxl", 0.0, None),
        ("sdxl", 5.0, Some(SamplerKind::EulerAncestral)),
        ("sd1", 7.5, None),
        ("sd2", 1.0, Some(SamplerKind::Ddim)),
    ] {
        let pipe = load(name);
        let positions = ["mid_block", "up_blocks[1].attentions[0]@update", "down_blocks[1].resnets[1]@update"];
        let mut request = GenerateRequest::new("").steps(3).guidance(guidance).capture(positions).progress(false);
        request.scheduler = scheduler;
        let items: Vec<BatchItem> = ["a red cube", "a photo of a cat", "", "green"]
            .iter()
            .enumerate()
            .map(|(i, p)| BatchItem::new(*p, 100 + i as i64))
            .collect();
        let batch = pipe.generate_batch(&request, &items).unwrap();
        let mut worst: f64 = 0.0;
        let mut exact = true;
        for (item, batched) in items.iter().zip(&batch) {
            let single = pipe.generate(&request.clone().seed(item.seed).tap_prompt(&item.prompt)).unwrap();
            let err = rel_l2(&batched.latents, &single.latents);
            exact &= batched.latents.equal(&single.latents);
            worst = worst.max(err);
            for p in positions {
                let a = batched.representations.as_ref().unwrap().image(p, 0).unwrap();
                let b = single.representations.as_ref().unwrap().image(p, 0).unwrap();
                exact &= a.equal(b);
                worst = worst.max(rel_l2(a, b));
            }
        }
        eprintln!("{name} guidance {guidance}: batched vs single worst rel L2 {worst:.2e}, bit-identical: {exact}");
        assert!(worst <= TOLERANCE, "{name}: batched generation differs by {worst:.2e}");
    }
}

trait TapPrompt {
    fn tap_prompt(self, prompt: &str) -> Self;
}

impl TapPrompt for GenerateRequest {
    fn tap_prompt(mut self, prompt: &str) -> Self {
        self.prompt = prompt.to_string();
        self
    }
}

#[test]
fn batched_extraction_equals_one_at_a_time() {
    for name in ["sd1", "sdxl"] {
        let pipe = load(name);
        let images = common::fixtures().join("images");
        let files = ["square.png", "gray.png", "rgba.png", "wide.png", "square.png"].map(|f| images.join(f));
        let positions = ["mid_block", "up_blocks[1]", "down_blocks[1].attentions[0]@update"];
        let request = ExtractRequest::new(positions).timesteps(&[0, 500]).progress(false);
        let single = pipe.extract(&request, &files).unwrap();
        pipe.posterior_cache.clear();
        let batched = pipe.extract(&request.clone().batch(3), &files).unwrap();
        let (mut worst, mut exact): (f64, bool) = (0.0, true);
        for p in positions {
            for i in 0..files.len() {
                let (a, b) = (batched.image(p, i).unwrap(), single.image(p, i).unwrap());
                exact &= a.equal(b);
                worst = worst.max(rel_l2(a, b));
            }
        }
        eprintln!("{name}: batched extraction worst rel L2 {worst:.2e}, bit-identical: {exact}");
        assert!(worst <= TOLERANCE, "{name}: batched extraction differs by {worst:.2e}");
    }
}

#[test]
fn batched_seeded_latents_draw_exactly_the_single_draws() {
    let pipe = load("sdxl");
    let images = common::fixtures().join("images");
    let prepared: Vec<_> =
        ["square.png", "gray.png"].iter().map(|f| sdscope::image_io::load_image(&images.join(f), 8).unwrap()).collect();
    let pixels: Vec<&Tensor> = prepared.iter().map(|p| &p.pixels).collect();
    let batched = pipe.seeded_latents_batch(&pixels, &[7, 8]).unwrap();
    pipe.posterior_cache.clear();
    for (i, seed) in [7, 8].into_iter().enumerate() {
        let single = pipe.seeded_latents(pixels[i], seed).unwrap();
        assert!(batched[i].noise.equal(&single.noise), "noise of image {i} differs");
        let err = rel_l2(&batched[i].latents, &single.latents);
        assert!(err <= TOLERANCE, "latents of image {i}: {err:.2e}");
    }
}

#[test]
fn captures_only_keeps_the_captures_and_skips_the_rest() {
    let pipe = load("sdxl");
    let positions = ["down_blocks[1].attentions[0]@update", "mid_block.attentions[0]@update"];
    let request = GenerateRequest::new("a cube").steps(2).guidance(4.0).capture(positions).progress(false);
    let items = [BatchItem::new("a cube", 3), BatchItem::new("a ball", 4)];
    let full = pipe.generate_batch(&request, &items).unwrap();
    let cut = pipe.generate_batch(&request.clone().captures_only(true), &items).unwrap();
    for (a, b) in full.iter().zip(&cut) {
        for p in positions {
            let (x, y) = (a.representations.as_ref().unwrap(), b.representations.as_ref().unwrap());
            assert!(x.image(p, 0).unwrap().equal(y.image(p, 0).unwrap()), "{p}");
        }
        assert_eq!(b.latents.numel(), 0);
        assert!(b.rgb8().is_err(), "no image was decoded");
    }
    assert!(pipe.generate(&GenerateRequest::new("x").captures_only(true)).is_err(), "nothing to capture");
}
