//! `Representations`: several timesteps and images, subsets, spatial mean, concat, ndarray, save/load.

mod common;

use common::*;
use sdscope::extract::ExtractRequest;
use sdscope::pipeline::{LoadOptions, Pipeline};
use sdscope::representations::Representations;

#[test]
fn timesteps_stack_and_conveniences_work() {
    let name = "sd1";
    let pipe = Pipeline::load_with(
        pipeline_dir(name).to_str().unwrap(),
        LoadOptions { progress: false, ..Default::default() },
    )
    .unwrap();
    let all = cases(name);
    let square: Vec<_> = all.iter().filter(|c| c.image == "square.png").collect();
    let case = square[0];
    let steps = [0, case.timestep, 999];
    let positions = ["down_blocks[0]", "mid_block", "up_blocks[2]"];
    let request = ExtractRequest::new(positions).timesteps(&steps).seed(case.seed).prompt(&case.prompt).progress(false);
    let images = [fixtures().join("images/square.png"), fixtures().join("images/gray.png")];
    let reprs = pipe.extract(&request, &images).unwrap();

    // The step matching the reference equals diffusers; the others differ from it.
    let r = reference(name, case);
    let mid = reprs.get("mid_block").unwrap();
    assert_eq!(mid.size(), vec![2, 3, 64, 2, 2]);
    assert_close("mid_block at the reference step", &mid.get(0).get(1), &r["pos/mid_block"].get(0), 1e-4);
    assert!(rel_l2(&mid.get(0).get(0), &mid.get(0).get(2)) > 1e-2, "timesteps must differ");

    let sub = reprs.at(&["mid_block"], &[999]).unwrap();
    assert_eq!(sub.get("mid_block").unwrap().size(), vec![2, 1, 64, 2, 2]);
    assert_close("at()", &sub.get("mid_block").unwrap().get(0).get(0), &mid.get(0).get(2), 0.0);
    let mid0 = mid.get(0).get(0);
    assert!(reprs.at(&["mid_block"], &[7]).is_err());

    let means = reprs.spatial_mean().unwrap();
    assert_close(
        "spatial mean",
        &means.image("mid_block", 1).unwrap().get(0),
        &mid.get(1).get(0).mean_dim([1i64, 2].as_slice(), false, tch::Kind::Float),
        1e-6,
    );

    // concat: down_blocks[0] is 4×4, mid 2×2, up_blocks[2] 8×8 → everything on the 8×8 grid.
    let c = reprs.concat(0).unwrap();
    assert_eq!(c.size(), vec![3 * (32 + 64 + 32), 8, 8]);
    // Channel block of mid_block at the first timestep: each 2×2 cell covers a 4×4 patch of the 8×8 grid.
    let block = c.narrow(0, 3 * 32, 64);
    for (i, j) in [(0, 0), (3, 4), (7, 7), (5, 1)] {
        let expected = mid0.select(1, i / 4).select(1, j / 4);
        assert_close("nearest upsampling", &block.select(1, i).select(1, j), &expected, 0.0);
    }

    let array = reprs.to_ndarray("up_blocks[2]", 1, 999).unwrap();
    assert_eq!(array.shape(), &[32, 8, 8]);

    let path = scratch("reprs").join("r.safetensors");
    reprs.save(&path).unwrap();
    let back = Representations::load(&path).unwrap();
    assert_eq!(back.positions(), reprs.positions());
    assert_eq!(back.timesteps(), &steps);
    assert_eq!(back.images(), reprs.images());
    assert_close("save/load", &back.get("up_blocks[2]").unwrap(), &reprs.get("up_blocks[2]").unwrap(), 0.0);
}
