//! The embedding map: neighbours against brute force, thumbnails packed where the page looks for them, the
//! page self-contained with captions escaped, typed errors for mismatched inputs, and the `map` command.

mod common;

use common::*;
use image::RgbImage;
use sdscope::embed::map::{nearest_neighbours, nearest_neighbours_in_blocks, EmbeddingMap, MapOptions, Thumbnails};
use sdscope::project::Metric;
use tch::{Device, Kind, Tensor};

fn randn(shape: &[i64], seed: i64) -> Tensor {
    let _lock = sdscope::RNG_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    tch::manual_seed(seed);
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

fn rows(x: &Tensor) -> Vec<Vec<f64>> {
    let (n, d) = (x.size()[0] as usize, x.size()[1] as usize);
    let v = Vec::<f64>::try_from(x.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    (0..n).map(|i| v[i * d..(i + 1) * d].to_vec()).collect()
}

/// Distance as the metric ranks it (smaller is nearer), in float64.
fn distance(a: &[f64], b: &[f64], metric: Metric) -> f64 {
    match metric {
        Metric::Euclidean => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt(),
        Metric::Cosine => {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            1.0 - dot / (norm(a) * norm(b))
        }
    }
}

#[test]
fn neighbours_match_brute_force() {
    let x = randn(&[157, 12], 3);
    let data = rows(&x);
    for metric in [Metric::Euclidean, Metric::Cosine] {
        for block in [1, 10, 64, 1000] {
            let nn = nearest_neighbours_in_blocks(&x, 7, metric, block).unwrap();
            assert_eq!(nn.size(), [157, 7]);
            let nn = Vec::<i64>::try_from(nn.flatten(0, -1)).unwrap();
            for i in 0..157 {
                let mut brute: Vec<(f64, usize)> =
                    (0..157).filter(|&j| j != i).map(|j| (distance(&data[i], &data[j], metric), j)).collect();
                brute.sort_by(|a, b| a.0.total_cmp(&b.0));
                for r in 0..7 {
                    let j = nn[i * 7 + r] as usize;
                    assert_ne!(j, i, "a point is not its own neighbour");
                    let d = distance(&data[i], &data[j], metric);
                    assert!(
                        (d - brute[r].0).abs() < 1e-4,
                        "{metric:?} block {block}: point {i} rank {r}: got {j} at {d}, brute force {:?}",
                        brute[r]
                    );
                }
            }
        }
    }
    // k is capped by the other points; a single point has none.
    assert_eq!(nearest_neighbours(&randn(&[4, 3], 1), 10, Metric::Cosine).unwrap().size(), [4, 3]);
    assert_eq!(nearest_neighbours(&randn(&[1, 3], 1), 10, Metric::Cosine).unwrap().size(), [1, 0]);
    assert!(nearest_neighbours(&randn(&[4], 1), 2, Metric::Cosine).is_err());
}

fn flat(w: u32, h: u32, rgb: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, image::Rgb(rgb))
}

#[test]
fn thumbnails_are_packed_where_the_page_looks() {
    let n = 1030; // two atlases
    let colour = |i: usize| [(i * 67 + 40) as u8, (i * 151 + 90) as u8, (i * 29 + 160) as u8];
    let sizes = [(200u32, 100u32), (30, 90), (64, 64), (10, 7)];
    let images: Vec<RgbImage> = (0..n).map(|i| flat(sizes[i % 4].0, sizes[i % 4].1, colour(i))).collect();
    let xy = randn(&[n as i64, 2], 1);
    let emb = randn(&[n as i64, 8], 2);
    let names = vec![String::new(); n];
    let map = EmbeddingMap::new(&xy, &emb, names.clone(), names, Thumbnails::Images(&images), &MapOptions::default())
        .unwrap();
    assert_eq!(map.atlases().len(), 2);
    let atlases: Vec<RgbImage> = map.atlases().iter().map(|a| image::load_from_memory(a).unwrap().to_rgb8()).collect();
    let expected_size = [(64, 32), (21, 64), (64, 64), (10, 7)];
    for i in [0, 1, 2, 3, 31, 32, 33, 1023, 1024, 1029] {
        let (a, x, y, w, h) = map.thumbnail_cell(i).unwrap();
        assert_eq!((w, h), expected_size[i % 4], "point {i}");
        let p = atlases[a].get_pixel(x + w / 2, y + h / 2).0;
        let want = colour(i);
        assert!(p.iter().zip(want).all(|(&g, e)| (g as i32 - e as i32).abs() <= 12), "point {i}: {p:?} vs {want:?}");
    }
    assert!(map.thumbnail_cell(n).is_none());
}

#[test]
fn page_is_self_contained_and_escapes_captions() {
    let map = EmbeddingMap::synthetic(1500, 7).unwrap();
    let html = map.to_html().unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "the page must not load anything");
    assert!(!html.contains("<script>alert"), "a caption with <script> must not reach the HTML as markup");
    assert!(html.contains("\\u003cscript>alert(1)\\u003c/script> & friends"), "the caption is kept, as JSON text");
    assert_eq!(html.matches("<script").count(), 2, "only the payload and the page's own script");
    assert_eq!(map.neighbours(0).unwrap().len(), 10);
    let size = map.size().unwrap();
    assert_eq!(size.points, 1500);
    assert!(size.per_point < 1500.0, "{size:?}");
    assert!(size.thumbnails < size.html && size.thumbnails > 100 * 1500, "{size:?}");
    // The title goes into the HTML too: escaped.
    let xy = randn(&[3, 2], 1);
    let options = MapOptions { title: "<img src=x onerror=alert(1)>".into(), ..MapOptions::default() };
    let caps = vec!["a".to_string(), "b".into(), "c".into()];
    let titled = EmbeddingMap::new(&xy, &xy, caps.clone(), caps, Thumbnails::None, &options).unwrap();
    let html = titled.to_html().unwrap();
    assert!(html.contains("&lt;img src=x") && !html.contains("<img src=x"));
    let out = scratch("map").join("titled.html");
    titled.save_html(&out).unwrap();
    assert!(std::fs::read_to_string(&out).unwrap().starts_with("<!DOCTYPE html>"));
}

#[test]
fn mismatched_inputs_are_typed_errors() {
    let xy = randn(&[5, 2], 1);
    let emb = randn(&[5, 4], 2);
    let five = || (0..5).map(|i| format!("p{i}")).collect::<Vec<_>>();
    let four = || (0..4).map(|i| format!("p{i}")).collect::<Vec<_>>();
    let o = MapOptions::default();
    let err = |r: sdscope::Result<EmbeddingMap>| r.err().map(|e| e.to_string()).expect("an error");
    assert!(err(EmbeddingMap::new(&xy, &emb, four(), five(), Thumbnails::None, &o)).contains("4 labels for 5 points"));
    assert!(err(EmbeddingMap::new(&xy, &emb, five(), four(), Thumbnails::None, &o)).contains("4 captions for 5 points"));
    let images = vec![flat(4, 4, [0, 0, 0]); 6];
    assert!(err(EmbeddingMap::new(&xy, &emb, five(), five(), Thumbnails::Images(&images), &o)).contains("6 thumbnails"));
    assert!(
        err(EmbeddingMap::new(&randn(&[5, 3], 1), &emb, five(), five(), Thumbnails::None, &o)).contains("[n ≥ 1, 2]")
    );
    assert!(err(EmbeddingMap::new(&xy, &randn(&[6, 4], 1), five(), five(), Thumbnails::None, &o)).contains("[5, D]"));
    let bad = Tensor::from_slice(&[0f32, 0., f32::NAN, 1., 2., 2., 3., 3., 4., 4.]).reshape([5, 2]);
    assert!(err(EmbeddingMap::new(&bad, &emb, five(), five(), Thumbnails::None, &o)).contains("point 1 is not finite"));
    let tensors: Vec<Tensor> = (0..5).map(|_| Tensor::zeros([4, 4], (Kind::Uint8, Device::Cpu))).collect();
    assert!(err(EmbeddingMap::new(&xy, &emb, five(), five(), Thumbnails::Tensors(&tensors), &o)).contains("[H, W, 3]"));
    let tiny = MapOptions { thumb_px: 2, ..MapOptions::default() };
    assert!(err(EmbeddingMap::new(&xy, &emb, five(), five(), Thumbnails::None, &tiny)).contains("thumb_px"));
    let missing = vec![std::path::PathBuf::from("/no/such.png"); 5];
    assert!(EmbeddingMap::new(&xy, &emb, five(), five(), Thumbnails::Paths(&missing), &o).is_err());
    assert!(EmbeddingMap::synthetic(0, 0).is_err());
}

#[test]
fn map_command_writes_a_page() {
    let dir = scratch("map-cli");
    let images = dir.join("images");
    for label in ["cats", "dogs"] {
        std::fs::create_dir_all(images.join(label)).unwrap();
        for name in ["square.png", "wide.png", "odd.png"] {
            std::fs::copy(fixtures().join("images").join(name), images.join(label).join(name)).unwrap();
        }
    }
    std::fs::copy(fixtures().join("images/tall_odd.png"), images.join("dogs/a <script>alert(1).png")).unwrap();
    let captions = r#"{"cats/square.png": "a photo of a <b>cat</b>", "wide.png": "a wide one"}"#;
    std::fs::write(images.join("captions.json"), captions).unwrap();
    let out = dir.join("map.html");
    let model = fixtures().join("clip/quick_gelu_p8");
    for method in ["pca", "tsne"] {
        run_ok(
            sdscope()
                .args(["map", "--dir"])
                .arg(&images)
                .arg("--model")
                .arg(&model)
                .args(["--method", method, "--html"])
                .arg(&out),
        );
        let html = std::fs::read_to_string(&out).unwrap();
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains("<script>alert") && html.contains("dogs/a \\u003cscript>alert(1).png"));
        assert!(html.contains("a photo of a \\u003cb>cat\\u003c/b>"), "captions.json by relative path");
        assert_eq!(html.matches("a wide one").count(), 2, "captions.json by file name");
        assert!(
            html.contains(r#""labels":["cats","dogs"]"#) && html.contains(r#""label":[0,0,0,1,1,1,1]"#),
            "labels from sub-folders"
        );
    }
    let bad = sdscope()
        .args(["map", "--dir"])
        .arg(&images)
        .arg("--model")
        .arg(&model)
        .args(["--method", "nope", "--html"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--method nope"));
}

/// The walkthrough's layout: `concept{i}.jpg` beside `concept.json` (its prompts, in order) gives labels and captions;
/// the default method is UMAP.
#[test]
fn map_reads_the_walkthrough_layout() {
    let dir = scratch("map-walkthrough");
    let images = dir.join("lexica");
    std::fs::create_dir_all(&images).unwrap();
    let sources = ["square.png", "wide.png", "odd.png", "tall_odd.png"];
    for concept in ["cat", "castle"] {
        for (i, name) in sources.iter().enumerate() {
            std::fs::copy(fixtures().join("images").join(name), images.join(format!("{concept}{i}.png"))).unwrap();
        }
        let prompts: Vec<String> = (0..sources.len()).map(|i| format!("{concept} prompt {i}")).collect();
        std::fs::write(images.join(format!("{concept}.json")), serde_json::to_string(&prompts).unwrap()).unwrap();
    }
    let out = dir.join("map.html");
    run_ok(
        sdscope()
            .args(["map", "--dir"])
            .arg(&images)
            .arg("--model")
            .arg(fixtures().join("clip/quick_gelu_p8"))
            .args(["--html"])
            .arg(&out),
    );
    let html = std::fs::read_to_string(&out).unwrap();
    // Sorted paths: castle0..3, then cat0..3.
    assert!(html.contains(r#""labels":["castle","cat"]"#) && html.contains(r#""label":[0,0,0,0,1,1,1,1]"#), "labels");
    for concept in ["cat", "castle"] {
        for i in 0..sources.len() {
            assert!(html.contains(&format!("{concept} prompt {i}")), "caption {concept} {i}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A collection with kept images maps as is: one point per kept image, labelled and captioned by its prompt.
#[test]
fn map_reads_a_collection() {
    let dir = scratch("map-collection");
    let prompts = dir.join("prompts.txt");
    std::fs::write(&prompts, "a red cube\na photo of a cat\ngreen hills\na <b>bold</b> prompt\n").unwrap();
    let collection = dir.join("collection");
    let model = fixtures().join("sdxl");
    run_ok(
        sdscope()
            .args(["collect", "--model"])
            .arg(&model)
            .arg("--prompts")
            .arg(&prompts)
            .args([
                "--positions",
                "mid_block",
                "--steps",
                "1",
                "--guidance",
                "0",
                "--width",
                "64",
                "--height",
                "64",
                "--keep-images",
                "--shards",
                "2",
                "--out",
            ])
            .arg(&collection),
    );
    let out = dir.join("map.html");
    run_ok(
        sdscope()
            .args(["map", "--dir"])
            .arg(&collection)
            .arg("--model")
            .arg(fixtures().join("clip/quick_gelu_p8"))
            .args(["--method", "pca", "--html"])
            .arg(&out),
    );
    let html = std::fs::read_to_string(&out).unwrap();
    for prompt in ["a red cube", "a photo of a cat", "green hills", "a \\u003cb>bold\\u003c/b> prompt"] {
        assert!(html.contains(prompt), "{prompt}");
    }
    assert!(html.contains(r#""label":[0,1,2,3]"#), "one label per prompt, in collection order");
    let _ = std::fs::remove_dir_all(dir);
}

/// A Parquet file as Hugging Face `datasets` writes it (`tests/data/images.parquet`, made with pyarrow): image
/// structs of PNG and JPEG bytes, ClassLabel names from the schema metadata, a text column as captions.
#[test]
fn map_reads_a_parquet_image_dataset() {
    use sdscope::collection::sources::{read_parquet_images, ParquetImageColumns};
    let file = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/images.parquet");
    let columns = ParquetImageColumns { caption: Some("text".into()), ..Default::default() };
    let rows = read_parquet_images(&file, &columns, None).unwrap();
    assert_eq!(rows.len(), 9);
    for (i, row) in rows.iter().enumerate() {
        let img = image::load_from_memory(&row.bytes).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (24 + 4 * i as u32, 20), "row {i}");
        assert_eq!(row.label.as_deref(), Some(["cat", "dog", "car"][i % 3]), "ClassLabel names");
    }
    assert_eq!(rows[4].caption.as_deref(), Some("a <script>alert(1)</script> dog"));
    assert_eq!(read_parquet_images(&file, &columns, Some(5)).unwrap().len(), 5);
    let bad = ParquetImageColumns { image: "pixels".into(), ..Default::default() };
    let err = read_parquet_images(&file, &bad, None).unwrap_err().to_string();
    assert!(err.contains("pixels") && err.contains("image, label, text"), "{err}");

    let dir = scratch("map-parquet");
    let out = dir.join("map.html");
    run_ok(
        sdscope()
            .args(["map", "--dir"])
            .arg(&file)
            .arg("--model")
            .arg(fixtures().join("clip/quick_gelu_p8"))
            .args(["--caption-column", "text", "--method", "pca", "--html"])
            .arg(&out),
    );
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains(r#""labels":["cat","dog","car"]"#) && html.contains(r#""label":[0,1,2,0,1,2,0,1,2]"#));
    assert!(html.contains("a \\u003cscript>alert(1)\\u003c/script> dog") && !html.contains("<script>alert"));
    let _ = std::fs::remove_dir_all(dir);
}
