//! Plots drawn with plotters and a bundled font (DejaVu Sans, no system fontconfig): line plots with labelled
//! series and a legend, scatter plots, histograms (linear or log-spaced bins), heat maps with a colour bar and
//! image panels; several panels side by side in a [`Figure`]. Inline SVG in notebooks, SVG or PNG files.

use super::{emit, picture::Picture};
use crate::error::{Error, Result};
use crate::xattn::render::{png_bytes, Colormap};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;
use tch::{Kind, Tensor};

pub(super) const FONT: &str = "sans-serif";

pub(super) fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, include_bytes!("DejaVuSans.ttf")).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("plot font", "the bundled DejaVu Sans could not be loaded"))
    }
}

pub(super) fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::invalid("drawing a plot", e.to_string())
}

/// One labelled series of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
}

/// Histogram bins between the smallest and largest value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bins {
    Linear(usize),
    /// Log-spaced (positive values only; use with a log x-axis).
    Log(usize),
}

/// What a plot shows.
#[derive(Clone)]
pub enum Panel {
    Lines(Vec<Series>),
    Scatter(Vec<Series>),
    Histogram {
        values: Vec<f64>,
        bins: Bins,
    },
    /// Row-major values `[h, w]`, row 0 at the top.
    Heatmap {
        values: Vec<f32>,
        h: usize,
        w: usize,
        colormap: Colormap,
        range: Option<(f64, f64)>,
    },
    Image(RgbImage),
}

/// What the panel holds, not its data (see [`Picture`]'s `Debug`).
impl std::fmt::Debug for Panel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels = |series: &[Series]| series.iter().map(|s| s.label.as_str()).collect::<Vec<_>>().join(", ");
        match self {
            Panel::Lines(series) => write!(f, "Lines({} series: {})", series.len(), labels(series)),
            Panel::Scatter(series) => write!(f, "Scatter({} series: {})", series.len(), labels(series)),
            Panel::Histogram { values, bins } => write!(f, "Histogram({} values, {bins:?})", values.len()),
            Panel::Heatmap { h, w, colormap, range, .. } => {
                write!(f, "Heatmap({h}×{w}, {colormap:?}, range {range:?})")
            }
            Panel::Image(image) => write!(f, "Image({}×{})", image.width(), image.height()),
        }
    }
}

/// One chart with a title and axis labels.
#[derive(Debug, Clone)]
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub panel: Panel,
    /// Pixels (SVG user units) of this panel.
    pub size: (u32, u32),
}

/// Width of a heat map's colour bar with its labels.
const COLORBAR_WIDTH: u32 = 90;

/// At most this many cells per side are drawn for heat maps and images (larger inputs are averaged down).
const MAX_CELLS: usize = 96;

fn pool(values: &[f32], h: usize, w: usize) -> (Vec<f32>, usize, usize) {
    let f = h.max(w).div_ceil(MAX_CELLS).max(1);
    if f == 1 {
        return (values.to_vec(), h, w);
    }
    let (nh, nw) = (h.div_ceil(f), w.div_ceil(f));
    let mut out = vec![0f32; nh * nw];
    let mut counts = vec![0f32; nh * nw];
    for y in 0..h {
        for x in 0..w {
            out[(y / f) * nw + x / f] += values[y * w + x];
            counts[(y / f) * nw + x / f] += 1.0;
        }
    }
    out.iter_mut().zip(&counts).for_each(|(v, c)| *v /= c.max(1.0));
    (out, nh, nw)
}

impl Plot {
    fn with(title: impl Into<String>, panel: Panel) -> Self {
        Self {
            title: title.into(),
            x_label: String::new(),
            y_label: String::new(),
            log_x: false,
            log_y: false,
            panel,
            size: (420, 300),
        }
    }

    /// An empty line plot; add series with [`Plot::series`].
    pub fn lines(title: impl Into<String>) -> Self {
        Self::with(title, Panel::Lines(Vec::new()))
    }

    pub fn scatter(title: impl Into<String>) -> Self {
        Self::with(title, Panel::Scatter(Vec::new()))
    }

    pub fn histogram(title: impl Into<String>, values: &[f64], bins: Bins) -> Self {
        let log_x = matches!(bins, Bins::Log(_));
        Self { log_x, ..Self::with(title, Panel::Histogram { values: values.to_vec(), bins }) }
    }

    /// A map `[h, w]` in a colormap with a colour bar.
    pub fn heatmap(title: impl Into<String>, map: &Tensor, colormap: Colormap) -> Result<Self> {
        if map.dim() != 2 {
            return Err(Error::Shape {
                context: "heat map".into(),
                why: format!("expected [h, w], got {:?}", map.size()),
            });
        }
        let (h, w) = (map.size()[0] as usize, map.size()[1] as usize);
        let values = Vec::<f32>::try_from(map.f_to_kind(Kind::Float)?.f_contiguous()?.f_flatten(0, -1)?)?;
        let size = (300u32 * w as u32 / h.max(1) as u32 + COLORBAR_WIDTH, 300);
        Ok(Self { size, ..Self::with(title, Panel::Heatmap { values, h, w, colormap, range: None }) })
    }

    /// A picture as a panel.
    pub fn image(title: impl Into<String>, picture: &Picture) -> Self {
        let (w, h) = picture.image.dimensions();
        let size = (300 * w / h.max(1), 300);
        Self { size, ..Self::with(title, Panel::Image(picture.image.clone())) }
    }

    /// Add a labelled series (line and scatter plots).
    pub fn series(mut self, label: impl Into<String>, xs: &[f64], ys: &[f64]) -> Self {
        if let Panel::Lines(s) | Panel::Scatter(s) = &mut self.panel {
            s.push(Series { label: label.into(), xs: xs.to_vec(), ys: ys.to_vec() });
        }
        self
    }

    pub fn x_label(mut self, label: impl Into<String>) -> Self {
        self.x_label = label.into();
        self
    }
    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = label.into();
        self
    }
    pub fn log_x(mut self) -> Self {
        self.log_x = true;
        self
    }
    pub fn log_y(mut self) -> Self {
        self.log_y = true;
        self
    }
    /// Fixed colour range of a heat map.
    pub fn range(mut self, vmin: f64, vmax: f64) -> Self {
        if let Panel::Heatmap { range, .. } = &mut self.panel {
            *range = Some((vmin, vmax));
        }
        self
    }
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    fn check(&self) -> Result<()> {
        if let Panel::Lines(series) | Panel::Scatter(series) = &self.panel {
            for s in series {
                if s.xs.len() != s.ys.len() {
                    return Err(Error::invalid(
                        format!("series `{}`", s.label),
                        format!("has {} x values and {} y values", s.xs.len(), s.ys.len()),
                    ));
                }
            }
        }
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        self.check()?;
        let title_style = (FONT, 15).into_font();
        match &self.panel {
            Panel::Lines(series) | Panel::Scatter(series) => {
                let scatter = matches!(self.panel, Panel::Scatter(_));
                self.draw_xy(area, series, scatter, title_style)
            }
            Panel::Histogram { values, bins } => self.draw_histogram(area, values, *bins, title_style),
            Panel::Heatmap { values, h, w, colormap, range } => {
                let (values, h, w) = pool(values, *h, *w);
                let finite = values.iter().copied().filter(|v| v.is_finite());
                let lo = range.map(|r| r.0).unwrap_or_else(|| finite.clone().fold(f32::MAX, f32::min) as f64);
                let hi = range.map(|r| r.1).unwrap_or_else(|| finite.fold(f32::MIN, f32::max) as f64);
                let span = if hi > lo { hi - lo } else { 1.0 };
                let color = |v: f32| {
                    let c = colormap.color(((v as f64 - lo) / span) as f32);
                    RGBColor(c[0], c[1], c[2])
                };
                let (main, bar) = area.split_horizontally(area.dim_in_pixel().0.saturating_sub(COLORBAR_WIDTH));
                draw_cells(&main, &self.title, h, w, title_style.clone(), |x, y| color(values[y * w + x]))?;
                let mut chart = ChartBuilder::on(&bar)
                    .margin_top(28)
                    .margin_bottom(8)
                    .y_label_area_size(60)
                    .margin_right(12)
                    .build_cartesian_2d(0.0..1.0, lo..lo + span)
                    .map_err(plot_error)?;
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .disable_y_mesh()
                    .disable_x_axis()
                    .y_labels(5)
                    .label_style((FONT, 10))
                    .draw()
                    .map_err(plot_error)?;
                let steps = 64;
                chart
                    .draw_series((0..steps).map(|i| {
                        let (a, b) = (lo + span * i as f64 / steps as f64, lo + span * (i + 1) as f64 / steps as f64);
                        let c = colormap.color((i as f32 + 0.5) / steps as f32);
                        Rectangle::new([(0.0, a), (1.0, b)], RGBColor(c[0], c[1], c[2]).filled())
                    }))
                    .map_err(plot_error)?;
                Ok(())
            }
            Panel::Image(img) => {
                let (w0, h0) = (img.width() as usize, img.height() as usize);
                let f = h0.max(w0).div_ceil(MAX_CELLS * 2).max(1);
                let (h, w) = (h0.div_ceil(f), w0.div_ceil(f));
                draw_cells(area, &self.title, h, w, title_style, |x, y| {
                    let p = img.get_pixel(((x * f) as u32).min(w0 as u32 - 1), ((y * f) as u32).min(h0 as u32 - 1)).0;
                    RGBColor(p[0], p[1], p[2])
                })
            }
        }
    }

    fn draw_xy<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        series: &[Series],
        scatter: bool,
        title: FontDesc,
    ) -> Result<()> {
        let tx = |v: f64| if self.log_x { v.log10() } else { v };
        let ty = |v: f64| if self.log_y { v.log10() } else { v };
        let points: Vec<Vec<(f64, f64)>> = series
            .iter()
            .map(|s| {
                s.xs.iter()
                    .zip(&s.ys)
                    .map(|(&x, &y)| (tx(x), ty(y)))
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect()
            })
            .collect();
        let (xr, yr) = bounds(points.iter().flatten().copied());
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, title)
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(xr, yr)
            .map_err(plot_error)?;
        let (log_x, log_y) = (self.log_x, self.log_y);
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style((FONT, 11))
            .axis_desc_style((FONT, 12))
            .x_label_formatter(&|v| tick(*v, log_x))
            .y_label_formatter(&|v| tick(*v, log_y))
            .draw()
            .map_err(plot_error)?;
        for (i, (s, pts)) in series.iter().zip(points).enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let drawn = if scatter {
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 2, color.filled()))).map_err(plot_error)?
            } else {
                chart.draw_series(LineSeries::new(pts, color.stroke_width(2))).map_err(plot_error)?
            };
            if !s.label.is_empty() {
                drawn
                    .label(&s.label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
            }
        }
        if series.iter().any(|s| !s.label.is_empty()) {
            chart
                .configure_series_labels()
                .label_font((FONT, 11))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(plot_error)?;
        }
        Ok(())
    }

    fn draw_histogram<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        values: &[f64],
        bins: Bins,
        title: FontDesc,
    ) -> Result<()> {
        let (log, n) = match bins {
            Bins::Linear(n) => (false, n.max(1)),
            Bins::Log(n) => (true, n.max(1)),
        };
        let usable: Vec<f64> = values.iter().copied().filter(|v| v.is_finite() && (!log || *v > 0.0)).collect();
        if usable.is_empty() {
            return Err(Error::invalid(
                "histogram",
                if log { "has no positive finite value for log bins" } else { "has no finite value" },
            ));
        }
        let t = |v: f64| if log { v.log10() } else { v };
        let lo = usable.iter().copied().fold(f64::MAX, f64::min);
        let hi = usable.iter().copied().fold(f64::MIN, f64::max);
        let (a, b) = (t(lo), if hi > lo { t(hi) } else { t(lo) + 1.0 });
        let width = (b - a) / n as f64;
        let mut counts = vec![0usize; n];
        for v in &usable {
            let i = (((t(*v) - a) / width) as usize).min(n - 1);
            counts[i] += 1;
        }
        let top = *counts.iter().max().unwrap_or(&1) as f64 * 1.05;
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, title)
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(a..b, 0.0..top.max(1.0))
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(if self.y_label.is_empty() { "count" } else { &self.y_label })
            .label_style((FONT, 11))
            .axis_desc_style((FONT, 12))
            .x_label_formatter(&|v| tick(*v, log))
            .draw()
            .map_err(plot_error)?;
        let color = Palette99::pick(0).to_rgba();
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let x0 = a + width * i as f64;
                Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], color.mix(0.8).filled())
            }))
            .map_err(plot_error)?;
        Ok(())
    }

    /// The plot as an SVG document.
    pub fn to_svg(&self) -> Result<String> {
        Figure::row(vec![self.clone()]).to_svg()
    }

    /// Write SVG or PNG, by the file's extension.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        Figure::row(vec![self.clone()]).save(path)
    }

    pub fn evcxr_display(&self) {
        Figure::row(vec![self.clone()]).evcxr_display()
    }
}

/// Grid cells `[h, w]` (row 0 at the top) under a title, keeping the aspect ratio.
fn draw_cells<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    h: usize,
    w: usize,
    font: FontDesc,
    color: impl Fn(usize, usize) -> RGBColor,
) -> Result<()> {
    let area = if title.is_empty() { area.clone() } else { area.titled(title, font).map_err(plot_error)? };
    let (pw, ph) = area.dim_in_pixel();
    let cell = ((pw as f64 - 8.0) / w as f64).min((ph as f64 - 8.0) / h as f64).max(0.1);
    let (ox, oy) = (((pw as f64 - cell * w as f64) / 2.0).max(0.0), 4.0);
    for y in 0..h {
        for x in 0..w {
            let x0 = (ox + cell * x as f64) as i32;
            let y0 = (oy + cell * y as f64) as i32;
            let x1 = (ox + cell * (x + 1) as f64).ceil() as i32;
            let y1 = (oy + cell * (y + 1) as f64).ceil() as i32;
            area.draw(&Rectangle::new([(x0, y0), (x1, y1)], color(x, y).filled())).map_err(plot_error)?;
        }
    }
    Ok(())
}

fn bounds(points: impl Iterator<Item = (f64, f64)>) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let pad = |a: f64, b: f64| {
        if a > b {
            (0.0, 1.0)
        } else if a == b {
            (a - 0.5, b + 0.5)
        } else {
            (a - (b - a) * 0.04, b + (b - a) * 0.04)
        }
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    (x0..x1, y0..y1)
}

/// A tick label; on a log axis the value is an exponent of 10.
fn tick(v: f64, log: bool) -> String {
    let v = if log { 10f64.powf(v) } else { v };
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e4).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{:.3}", v).trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Plots side by side (like matplotlib subplots in one row).
#[derive(Debug, Clone)]
pub struct Figure {
    pub panels: Vec<Plot>,
}

impl Figure {
    pub fn row(panels: Vec<Plot>) -> Self {
        Self { panels }
    }

    fn dims(&self) -> (u32, u32) {
        let w = self.panels.iter().map(|p| p.size.0).sum::<u32>().max(1);
        let h = self.panels.iter().map(|p| p.size.1).max().unwrap_or(1);
        (w, h)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()> {
        register_font()?;
        root.fill(&WHITE).map_err(plot_error)?;
        let mut rest = root;
        for (i, plot) in self.panels.iter().enumerate() {
            let (panel, right) = if i + 1 < self.panels.len() {
                rest.split_horizontally(plot.size.0)
            } else {
                (rest.clone(), rest.clone())
            };
            plot.draw(&panel)?;
            rest = right;
        }
        Ok(())
    }

    pub fn to_svg(&self) -> Result<String> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.dims()).into_drawing_area();
            self.draw(root.clone())?;
            root.present().map_err(plot_error)?;
        }
        Ok(svg)
    }

    pub fn to_image(&self) -> Result<RgbImage> {
        let (w, h) = self.dims();
        let mut buffer = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
            self.draw(root.clone())?;
            root.present().map_err(plot_error)?;
        }
        RgbImage::from_raw(w, h, buffer).ok_or_else(|| Error::invalid("figure", "bitmap has the wrong size"))
    }

    /// Write SVG (`.svg`) or PNG (anything else).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg")) {
            self.to_svg()?.into_bytes()
        } else {
            png_bytes(&self.to_image()?)?
        };
        std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
    }

    pub fn evcxr_display(&self) {
        let titles: Vec<&str> = self.panels.iter().map(|p| p.title.as_str()).collect();
        match self.to_svg() {
            Ok(svg) => emit(&svg, &format!("Figure: {}", titles.join(" | "))),
            Err(e) => println!("{e}"),
        }
    }
}
