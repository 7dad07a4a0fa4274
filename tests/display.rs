//! Rich output: pictures, plots and tables render as self-contained HTML/SVG/PNG, with user text escaped.

mod common;

use common::*;
use sdscope::display::{Bins, Figure, Picture, PictureGrid, Plot};
use sdscope::prelude::*;
use sdscope::xattn::Colormap;

fn load(model: &str) -> Pipeline {
    Pipeline::load_with(
        pipeline_dir(model).to_str().unwrap(),
        LoadOptions { progress: false, ..LoadOptions::default() },
    )
    .unwrap()
}

#[test]
fn plots_render_to_svg_and_png() {
    let xs: Vec<f64> = (0..50).map(|i| i as f64).collect();
    let lines = Plot::lines("channel <scale>")
        .series("t=0", &xs, &xs.iter().map(|x| (x + 1.0).powf(-1.0)).collect::<Vec<_>>())
        .series("t=100 & more", &xs, &xs.iter().map(|x| 2.0 * (x + 1.0).powf(-1.2)).collect::<Vec<_>>())
        .x_label("channel (sorted)")
        .y_label("mean |value|")
        .log_y();
    let values: Vec<f64> =
        (1..2000).map(|i| (i as f64 * 0.37).sin().abs() * 10f64.powf((i % 7) as f64 - 3.0)).collect();
    let hist = Plot::histogram("per-channel mean |value|", &values, Bins::Log(50)).x_label("mean |value|");
    let map = Tensor::arange(48, (Kind::Float, Device::Cpu)).reshape([6, 8]);
    let heat = Plot::heatmap("spatial std", &map, Colormap::Viridis).unwrap();
    let picture = Picture::from_tensor(&Tensor::zeros([3, 16, 24], (Kind::Float, Device::Cpu)), "grey").unwrap();
    let scatter = Plot::scatter("scatter").series("pts", &[1.0, 2.0, 3.0], &[3.0, 1.0, 2.0]);
    let figure = Figure::row(vec![Plot::image("input", &picture), heat, lines.clone(), hist, scatter]);

    let svg = figure.to_svg().unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
    assert!(svg.contains("channel &lt;scale&gt;"), "titles are escaped in SVG");
    assert!(svg.contains("t=100 &amp; more"), "legend labels are escaped");
    let img = figure.to_image().unwrap();
    let distinct: std::collections::HashSet<_> = img.pixels().map(|p| p.0).collect();
    assert!(distinct.len() > 50, "the PNG is not blank ({} colours)", distinct.len());
    let dir = scratch("display");
    figure.save(dir.join("figure.png")).unwrap();
    figure.save(dir.join("figure.svg")).unwrap();
    assert!(image::open(dir.join("figure.png")).is_ok());
    assert!(std::fs::read_to_string(dir.join("figure.svg")).unwrap().contains("<svg"));

    // evcxr shows a cell's value with `Debug` when it cannot call `evcxr_display`: a summary, not the data.
    let debug = format!("{figure:?} {:?}", PictureGrid::new(vec![picture.clone(), picture.clone()]));
    assert!(debug.len() < 1000, "Debug prints the data: {} bytes", debug.len());
    assert!(
        debug.contains("Picture(24×16, \"grey\")") && debug.contains("Lines(2 series: t=0, t=100 & more)"),
        "{debug}"
    );

    let bad = Plot::lines("bad").series("s", &[1.0, 2.0], &[1.0]);
    assert!(bad.to_svg().is_err());
    assert!(Plot::histogram("neg", &[-1.0, -2.0], Bins::Log(10)).to_svg().is_err());
}

#[test]
fn result_types_render_as_html() {
    let pipe = load("sd1");
    let image = fixtures().join("images/square.png");
    let reprs = pipe
        .extract(&ExtractRequest::new(["mid_block", "up_blocks[1]"]).timesteps(&[10, 500]).progress(false), &[&image])
        .unwrap();
    let html = reprs.to_html().unwrap();
    assert!(html.contains("<table") && html.contains("up_blocks[1]") && html.contains("[2, 64, 8, 8]"), "{html}");

    let maps = pipe
        .cross_attention(&image, &AttentionRequest::new("a <script>alert(1)</script> cat, cat").timestep(300))
        .unwrap();
    let html = maps.to_html().unwrap();
    assert!(html.contains("data:image/png;base64,"));
    assert!(!html.contains("<script>"), "prompt text is escaped");
    assert!(html.contains("&lt;"));
    let grid = maps.layer_step_grid(&TokenSelection::Word("cat".into()), &sdscope::xattn::LayerSelect::All).unwrap();
    assert_eq!(grid.matches("<img").count(), maps.layers().len());

    let out = pipe.generate(&GenerateRequest::new("a <b>cat</b>").steps(2).size(64, 64).progress(false)).unwrap();
    let html = out.to_html().unwrap();
    assert!(html.contains("data:image/png;base64,") && html.contains("a &lt;b&gt;cat&lt;/b&gt;"));

    let grid =
        PictureGrid::new(vec![Picture::open(&image).unwrap(), Picture::from_tensor(&out.image, "generated").unwrap()]);
    assert_eq!(grid.to_html().unwrap().matches("<figure").count(), 2);
    // The PNG grid: 64-pixel pictures enlarged to the 128-pixel minimum, captions drawn in a strip below.
    let png = grid.to_image().unwrap();
    assert_eq!(png.dimensions(), (128 + 8 + 128, 128 + 22));
    for x0 in [0, 136] {
        let ink = (x0..x0 + 128)
            .flat_map(|x| (128..150).map(move |y| (x, y)))
            .filter(|&(x, y)| png.get_pixel(x, y).0[0] < 128);
        assert!(ink.count() > 20, "no caption drawn under the picture at x={x0}");
    }
}

#[test]
fn sample_photos_and_loaders() {
    let samples = sdscope::datasets::samples();
    assert_eq!(samples.len(), 4);
    for s in &samples {
        assert!(s.path.is_file(), "{} missing", s.path.display());
        let (_, img) = sdscope::datasets::load_resized(&s.path, 100).unwrap();
        let (h, w) = img.size;
        assert!(h % 8 == 0 && w % 8 == 0 && h.max(w) <= 100, "{}: {h}×{w}", s.name);
        assert_eq!(img.pixels.size(), vec![1, 3, h, w]);
    }
    assert!(sdscope::datasets::sample("CAT").is_ok());
    let err = sdscope::datasets::sample("dog").unwrap_err();
    assert!(err.to_string().contains("astronaut"), "{err}");
    let listed = sdscope::datasets::image_folder(sdscope::datasets::samples_dir()).unwrap();
    assert_eq!(listed.len(), 4);
}
