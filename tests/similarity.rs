//! Similarity measures against a direct float64 computation, the `similarity` and `explorer` CLIs, and the
//! explorer page's content (its behaviour in a browser is checked by `tests/browser/explorer_check.mjs`).

mod common;

use common::*;
use sdscope::similarity::{similarity_maps, Measure, Query};
use tch::{Kind, Tensor};

/// A tiny deterministic generator, so the expected values do not depend on libtorch.
fn lcg(seed: &mut u64) -> f64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

/// `[c][h·w]` token-major vectors of one grid.
fn random_grid(seed: &mut u64, c: usize, h: usize, w: usize, zero_token: Option<usize>) -> Vec<Vec<f64>> {
    (0..h * w).map(|i| (0..c).map(|_| if Some(i) == zero_token { 0.0 } else { lcg(seed) * 3.0 }).collect()).collect()
}

fn to_tensor(tokens: &[Vec<f64>], c: usize, h: usize, w: usize) -> Tensor {
    let flat: Vec<f64> = tokens.iter().flatten().copied().collect();
    Tensor::from_slice(&flat)
        .reshape([(h * w) as i64, c as i64])
        .transpose(0, 1)
        .reshape([c as i64, h as i64, w as i64])
        .to_kind(Kind::Float)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}
fn mean_token(tokens: &[Vec<f64>]) -> Vec<f64> {
    let c = tokens[0].len();
    (0..c).map(|k| tokens.iter().map(|t| t[k]).sum::<f64>() / tokens.len() as f64).collect()
}

/// The explorer's definitions, written out plainly.
fn expected(measure: Measure, q: &[f64], src: &[Vec<f64>], target: &[Vec<f64>]) -> Vec<f64> {
    let by_max_abs = |v: Vec<f64>| {
        let m = v.iter().fold(0f64, |a, x| a.max(x.abs()));
        v.into_iter().map(|x| if m > 0.0 { x / m } else { 0.0 }).collect::<Vec<_>>()
    };
    let one_minus = |d: Vec<f64>| {
        let m = d.iter().fold(0f64, |a, x| a.max(*x));
        d.into_iter().map(|x| if m > 0.0 { 1.0 - x / m } else { 1.0 }).collect::<Vec<_>>()
    };
    match measure {
        Measure::Cosine => target.iter().map(|t| dot(q, t) / (norm(q) * norm(t) + 1e-10)).collect(),
        Measure::CosineCentered => {
            let (ms, mt) = (mean_token(src), mean_token(target));
            let m: Vec<f64> = ms.iter().zip(&mt).map(|(a, b)| (a + b) / 2.0).collect();
            let qc: Vec<f64> = q.iter().zip(&m).map(|(a, b)| a - b).collect();
            target
                .iter()
                .map(|t| {
                    let tc: Vec<f64> = t.iter().zip(&m).map(|(a, b)| a - b).collect();
                    dot(&qc, &tc) / (norm(&qc) * norm(&tc) + 1e-10)
                })
                .collect()
        }
        Measure::DotProduct => by_max_abs(target.iter().map(|t| dot(q, t)).collect()),
        Measure::Manhattan => {
            one_minus(target.iter().map(|t| t.iter().zip(q).map(|(a, b)| (a - b).abs()).sum()).collect())
        }
        Measure::Euclidean => one_minus(
            target.iter().map(|t| t.iter().zip(q).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt()).collect(),
        ),
        Measure::Chebyshev => {
            one_minus(target.iter().map(|t| t.iter().zip(q).fold(0f64, |m, (a, b)| m.max((a - b).abs()))).collect())
        }
        Measure::RelL2Norm => by_max_abs(target.iter().map(|t| norm(t) - norm(q)).collect()),
    }
}

#[test]
fn measures_match_a_direct_computation() {
    let mut seed = 7u64;
    let c = 16;
    // Grids of different sizes (aspect ratios), one with a zero token, one entirely zero.
    let shapes = [(4usize, 5usize, Some(3usize)), (3, 3, None), (2, 6, None)];
    let mut grids: Vec<Vec<Vec<f64>>> = shapes.iter().map(|&(h, w, z)| random_grid(&mut seed, c, h, w, z)).collect();
    grids.push(vec![vec![0.0; c]; 4]);
    let all_shapes: Vec<(usize, usize)> = shapes.iter().map(|s| (s.0, s.1)).chain([(2, 2)]).collect();
    let tensors: Vec<Tensor> = grids.iter().zip(&all_shapes).map(|(g, &(h, w))| to_tensor(g, c, h, w)).collect();
    // The f32 tensors are what the library sees: compare against f64 math on the same (rounded) values.
    let grids: Vec<Vec<Vec<f64>>> =
        grids.iter().map(|g| g.iter().map(|t| t.iter().map(|&v| v as f32 as f64).collect()).collect()).collect();
    for query in
        [Query { image: 0, row: 1, col: 2 }, Query { image: 0, row: 0, col: 3 }, Query { image: 2, row: 1, col: 5 }]
    {
        let q = &grids[query.image][(query.row * all_shapes[query.image].1 as i64 + query.col) as usize];
        for measure in Measure::ALL {
            let maps = similarity_maps(&tensors, query, measure).unwrap();
            for (i, m) in maps.iter().enumerate() {
                let exp = expected(measure, q, &grids[query.image], &grids[i]);
                let ours = Vec::<f32>::try_from(m.map.flatten(0, -1)).unwrap();
                assert_eq!(m.map.size(), vec![all_shapes[i].0 as i64, all_shapes[i].1 as i64]);
                for (k, (a, b)) in ours.iter().zip(&exp).enumerate() {
                    assert!(
                        (*a as f64 - b).abs() < 1e-5,
                        "{} query {query:?} image {i} token {k}: {a} vs {b}",
                        measure.name()
                    );
                }
                let best = exp.iter().enumerate().fold(0, |bi, (k, v)| if *v > exp[bi] { k } else { bi });
                let w = all_shapes[i].1 as i64;
                assert!((exp[(m.best.0 * w + m.best.1) as usize] - exp[best]).abs() < 1e-6, "{}: best", measure.name());
                let mean = exp.iter().sum::<f64>() / exp.len() as f64;
                let std = (exp.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / exp.len() as f64).sqrt();
                assert!((m.mean - mean).abs() < 1e-5 && (m.std - std).abs() < 1e-5, "{}: mean/std", measure.name());
            }
        }
    }
    // Sign conventions: the query is most similar to itself; a zero vector has cosine 0; signed norm differences.
    let maps = similarity_maps(&tensors, Query { image: 0, row: 1, col: 2 }, Measure::Cosine).unwrap();
    assert_eq!(maps[0].best, (1, 2));
    assert!((maps[0].map.double_value(&[1, 2]) - 1.0).abs() < 1e-5);
    assert_eq!(maps[0].map.double_value(&[0, 3]), 0.0);
    let rel = similarity_maps(&tensors, Query { image: 0, row: 1, col: 2 }, Measure::RelL2Norm).unwrap();
    assert!(rel[3].map.max().double_value(&[]) <= 0.0, "an all-zero image has smaller norms than the query");
    assert!(similarity_maps(&tensors, Query { image: 0, row: 4, col: 0 }, Measure::Cosine).is_err());
    assert!(similarity_maps(&tensors, Query { image: 9, row: 0, col: 0 }, Measure::Cosine).is_err());
    assert!(Measure::parse("cosine_centered").is_ok() && Measure::parse("cos").is_err());
}

#[test]
fn cli_similarity_and_explorer() {
    let dir = pipeline_dir("sd1");
    let images = fixtures().join("images");
    let tmp = scratch("cli-similarity");
    // A file name that must be shown as text.
    let odd = tmp.join("cat <script>alert(1).png");
    std::fs::copy(images.join("wide.png"), &odd).unwrap();
    let list = format!("{},{}", images.join("square.png").display(), odd.display());
    let out = tmp.join("maps.safetensors");
    let png = tmp.join("maps.png");
    let run = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_sdscope")).args(args).output().unwrap();
    let result = run(&[
        "similarity",
        "--model",
        dir.to_str().unwrap(),
        "--images",
        &list,
        "--position",
        "up_blocks[1]",
        "--timestep",
        "50",
        "--seed",
        "42",
        "--query",
        "1:3,5",
        "--measure",
        "cosine-centered",
        "--out",
        out.to_str().unwrap(),
        "--png",
        png.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let (maps, _) = sdscope::tensor_io::load(&out).unwrap();
    assert_eq!(maps.len(), 2);

    // The same maps from `sdscope extract` outputs (each image on its own, same seed and timestep).
    let mut grids = Vec::new();
    for path in [images.join("square.png"), odd.clone()] {
        let file = tmp.join("one.safetensors");
        let r = run(&[
            "extract",
            "--model",
            dir.to_str().unwrap(),
            "--image",
            path.to_str().unwrap(),
            "--positions",
            "up_blocks[1]",
            "--timestep",
            "50",
            "--seed",
            "42",
            "--out",
            file.to_str().unwrap(),
        ]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        grids.push(sdscope::tensor_io::load(&file).unwrap().0.remove("up_blocks[1]").unwrap());
    }
    let expected = similarity_maps(&grids, Query { image: 1, row: 3, col: 5 }, Measure::CosineCentered).unwrap();
    for (i, m) in expected.iter().enumerate() {
        assert_eq!(maps[&i.to_string()].size(), grids[i].size()[1..].to_vec(), "map {i} is the image's grid");
        assert_close(&format!("map {i}"), &maps[&i.to_string()], &m.map, 1e-6);
    }
    assert!((maps["1"].double_value(&[3, 5]) - 1.0).abs() < 1e-4, "the query token is most similar to itself");
    let picture = image::open(&png).unwrap().to_rgb8();
    assert!(picture.width() > 64 + 96);

    let result = run(&[
        "similarity",
        "--model",
        dir.to_str().unwrap(),
        "--images",
        &list,
        "--position",
        "up_blocks[1]",
        "--query",
        "0:99,0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!result.status.success());
    assert!(
        String::from_utf8_lossy(&result.stderr).contains("rows 0.."),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );

    let html = tmp.join("explorer.html");
    let result = run(&[
        "explorer",
        "--model",
        dir.to_str().unwrap(),
        "--images",
        &list,
        "--positions",
        "up_blocks[1],mid_block",
        "--timesteps",
        "0,50,200",
        "--html",
        html.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("http://") && !page.contains("https://"), "no network resources");
    assert!(!page.contains("<script>alert"), "user text never appears as markup");
    for m in Measure::ALL {
        assert!(page.contains(m.name()));
    }
    assert!(page.contains("t = 200") && page.contains("mid_block"));
}
