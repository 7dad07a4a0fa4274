//! Parity with diffusers/transformers on the tiny fixture pipelines: text conditioning, VAE posterior, seeded
//! draws, noising, and the output of every U-Net module, within 1e-4 relative L2 error.

mod common;

use common::*;
use sdscope::image_io::load_image;
use sdscope::pipeline::{LoadOptions, Pipeline};
use sdscope::taps::Taps;

const TOL: f64 = 1e-4;

fn load(name: &str) -> Pipeline {
    Pipeline::load_with(pipeline_dir(name).to_str().unwrap(), LoadOptions { progress: false, ..Default::default() })
        .unwrap()
}

fn check_pipeline(name: &str) {
    let pipe = load(name);
    let cases = cases(name);
    assert!(cases.len() >= 3, "{name}: expected several reference cases");
    for case in &cases {
        let r = reference(name, case);
        let tag = format!("{name}/{} ({}, t={}, {:?})", case.file, case.image, case.timestep, case.prompt);

        let cond = pipe.encode_prompt(&case.prompt).unwrap();
        assert_close(&format!("{tag} encoder_hidden_states"), &cond.hidden_states, &r["encoder_hidden_states"], TOL);
        if let Some(te) = &cond.text_embeds {
            assert_close(&format!("{tag} text_embeds"), te, &r["text_embeds"], TOL);
            assert_close(
                &format!("{tag} time_ids"),
                &pipe.time_ids(case.height, case.width).unwrap(),
                &r["time_ids"],
                0.0,
            );
        }

        let image = load_image(&fixtures().join("images").join(&case.image), 8).unwrap();
        assert_eq!(image.size, (case.height, case.width));
        assert_close(&format!("{tag} image"), &image.pixels, &r["image"], 1e-6);

        let dist = pipe.vae.encode(&image.pixels).unwrap();
        assert_close(&format!("{tag} latent_mean"), &dist.mean, &r["latent_mean"], TOL);
        assert_close(&format!("{tag} latent_std"), &dist.std, &r["latent_std"], TOL);
        let seeded = pipe.seeded_latents(&image.pixels, case.seed).unwrap();
        assert_close(&format!("{tag} latents"), &seeded.latents, &r["latents"], TOL);
        assert_close(&format!("{tag} noise"), &seeded.noise, &r["noise"], 0.0);

        // The U-Net itself is checked on the reference's own noisy input, so its errors are not compounded.
        let noisy = pipe.noise_schedule.add_noise(&r["latents"], &r["noise"], case.timestep).unwrap();
        assert_close(&format!("{tag} noisy"), &noisy, &r["noisy"], 1e-6);
        let ref_cond = sdscope::pipeline::TextConditioning {
            hidden_states: r["encoder_hidden_states"].shallow_clone(),
            text_embeds: r.get("text_embeds").map(|t| t.shallow_clone()),
        };
        let mut taps = Taps::capture_all();
        let out = pipe
            .unet_pass(&r["noisy"], case.timestep, &ref_cond, (case.height, case.width), &mut taps)
            .unwrap()
            .unwrap();
        assert_close(&format!("{tag} unet_out"), &out, &r["unet_out"], TOL);
        let captured = taps.into_captured();
        let mut compared = 0;
        for position in pipe.positions() {
            let key = format!("pos/{position}");
            let reference = r.get(&key).unwrap_or_else(|| panic!("{tag}: diffusers has no module `{position}`"));
            let ours = captured.get(position).unwrap_or_else(|| panic!("{tag}: `{position}` was not visited"));
            assert_close(&format!("{tag} {position}"), ours, reference, TOL);
            compared += 1;
        }
        assert!(compared > 100, "{tag}: only {compared} positions compared");
    }
}

#[test]
fn sd1_matches_diffusers() {
    check_pipeline("sd1");
}

#[test]
fn sd2_matches_diffusers() {
    check_pipeline("sd2");
}

#[test]
fn sdxl_matches_diffusers() {
    check_pipeline("sdxl");
}

/// The end-to-end extraction API (image file → seeded latents → noise → U-Net, early exit) gives the same
/// outputs as diffusers' hooks.
#[test]
fn extraction_api_matches_diffusers() {
    for name in ["sd1", "sdxl"] {
        let pipe = load(name);
        for case in cases(name) {
            let r = reference(name, &case);
            let positions = ["down_blocks[1]", "mid_block", "up_blocks[1].attentions[0]", "down_blocks[1].resnets[0]"];
            let request = sdscope::extract::ExtractRequest::new(positions)
                .timestep(case.timestep)
                .seed(case.seed)
                .prompt(&case.prompt)
                .progress(false);
            let reprs = pipe.extract(&request, &[fixtures().join("images").join(&case.image)]).unwrap();
            for p in positions {
                let ours = reprs.image(p, 0).unwrap().get(0);
                let reference = r[&format!("pos/{p}")].get(0);
                assert_close(&format!("{name}/{} extract {p}", case.file), &ours, &reference, TOL);
            }
        }
    }
}
