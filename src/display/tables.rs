//! Notebook display of sdscope's result types: representations, token tables, attention maps, generations.

use super::picture::{Picture, PictureGrid};
use super::{emit, escape_html, titled};
use crate::error::Result;
use crate::generate::Generation;
use crate::representations::Representations;
use crate::xattn::render::{render, RenderMode, RenderOptions};
use crate::xattn::{AttentionMaps, MapQuery, Normalize, TokenKind, TokenSegment, TokenSelection, TokenTable};
use tch::Kind;

const TABLE: &str = "border-collapse:collapse;font:12px monospace";
const CELL: &str = "border:1px solid #ccc;padding:2px 6px;text-align:left";

pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut html = format!("<table style=\"{TABLE}\"><tr>");
    for h in headers {
        html.push_str(&format!("<th style=\"{CELL};background:#f3f3f3\">{}</th>", escape_html(h)));
    }
    html.push_str("</tr>");
    for row in rows {
        html.push_str("<tr>");
        for c in row {
            html.push_str(&format!("<td style=\"{CELL}\">{}</td>", escape_html(c)));
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    html
}

impl Representations {
    /// One row per position: shape per image, dtype and value range.
    pub fn summary_rows(&self) -> Result<Vec<Vec<String>>> {
        let mut rows = Vec::new();
        for p in self.positions() {
            let t = self.image(p, 0)?;
            let (mut lo, mut hi) = (f64::MAX, f64::MIN);
            for i in 0..self.images().len() {
                let x = self.image(p, i)?.f_to_kind(Kind::Float)?;
                lo = lo.min(x.f_min()?.double_value(&[]));
                hi = hi.max(x.f_max()?.double_value(&[]));
            }
            rows.push(vec![
                p.clone(),
                format!("{:?}", t.size()),
                format!("{:?}", t.kind()),
                format!("{lo:.4}"),
                format!("{hi:.4}"),
            ]);
        }
        Ok(rows)
    }

    pub fn to_html(&self) -> Result<String> {
        let head = format!(
            "{} images × {} timesteps {:?} (shape per image: [timesteps, ..])",
            self.images().len(),
            self.timesteps().len(),
            self.timesteps()
        );
        Ok(titled(&head, &table(&["position", "shape", "dtype", "min", "max"], &self.summary_rows()?)))
    }

    pub fn evcxr_display(&self) {
        let plain = format!("Representations: {} positions, {} images", self.positions().len(), self.images().len());
        match self.to_html() {
            Ok(html) => emit(&html, &plain),
            Err(e) => println!("{e}"),
        }
    }
}

impl TokenTable {
    pub fn to_html(&self) -> String {
        // SD3's joint sequence: say which encoder each position belongs to.
        let joint = self.entries.iter().any(|e| e.segment == TokenSegment::T5);
        let rows: Vec<Vec<String>> = self
            .entries
            .iter()
            .filter(|e| e.kind != TokenKind::Padding)
            .map(|e| {
                let word = match e.kind {
                    TokenKind::Bos => "<bos>".to_string(),
                    TokenKind::Eos => "<eos>".to_string(),
                    _ => e.word.clone().unwrap_or_default(),
                };
                let mut row = vec![e.index.to_string(), e.id.to_string(), e.text.clone(), word];
                if joint {
                    row.push(if e.segment == TokenSegment::T5 { "T5" } else { "CLIP" }.to_string());
                }
                row
            })
            .collect();
        let padding = self.entries.iter().filter(|e| e.kind == TokenKind::Padding).count();
        let headers: &[&str] =
            if joint { &["index", "id", "token", "word", "part"] } else { &["index", "id", "token", "word"] };
        let mut html = table(headers, &rows);
        html.push_str(&format!("<div style=\"font:11px sans-serif;color:#666\">+ {padding} padding positions</div>"));
        if !self.truncated_words.is_empty() {
            html.push_str(&format!(
                "<div style=\"font:12px sans-serif;color:#b00\">cut off beyond the tokenizer's length (77 CLIP tokens, 256 T5): {}</div>",
                escape_html(&self.truncated_words.join(" "))
            ));
        }
        html
    }

    pub fn evcxr_display(&self) {
        emit(&self.to_html(), &self.to_text());
    }
}

impl AttentionMaps {
    fn layer_matches(&self, layer: &str, select: &crate::xattn::LayerSelect) -> bool {
        use crate::xattn::LayerSelect;
        match select {
            LayerSelect::All => true,
            LayerSelect::Block(prefix) => {
                crate::taps::normalize_position(prefix).map(|p| layer.starts_with(&format!("{p}."))).unwrap_or(false)
            }
            LayerSelect::Resolution(h) => self.grid(layer).map(|g| g.0 == *h).unwrap_or(false),
            LayerSelect::List(list) => list.iter().any(|l| l == layer),
        }
    }

    fn picture(&self, query: &MapQuery, mode: RenderMode, caption: String) -> Result<Picture> {
        let map = self.map(query)?;
        let image = if matches!(mode, RenderMode::Overlay | RenderMode::Masked) { self.image.as_ref() } else { None };
        Ok(Picture::new(render(&map, image, &RenderOptions::mode(mode))?, caption))
    }

    /// One map per word of the prompt (DAAM's word maps, min-max normalized), over the image when there is one.
    pub fn word_grid(&self) -> Result<PictureGrid> {
        let mode = if self.image.is_some() { RenderMode::Overlay } else { RenderMode::Heat };
        let mut seen = Vec::new();
        let mut pictures = Vec::new();
        if let Some(img) = &self.image {
            pictures.push(Picture::from_tensor(img, "image")?);
        }
        for word in self.tokens.words() {
            let key = word.to_lowercase();
            if seen.contains(&key) || !word.chars().any(char::is_alphanumeric) {
                continue;
            }
            seen.push(key);
            pictures.push(self.picture(&MapQuery::word(&word).normalize(Normalize::MinMax), mode, word)?);
        }
        Ok(PictureGrid::new(pictures))
    }

    /// One map per selected token (or word), layer and step: rows are the selected layers, columns steps.
    pub fn layer_step_grid(&self, tokens: &TokenSelection, layers: &crate::xattn::LayerSelect) -> Result<String> {
        use crate::xattn::{LayerSelect, StepSelect};
        let chosen: Vec<String> = self.layers().iter().filter(|l| self.layer_matches(l, layers)).cloned().collect();
        if chosen.is_empty() {
            return Err(crate::error::Error::invalid(format!("layers {layers:?}"), "select no recorded layer"));
        }
        let mut html = String::new();
        for layer in &chosen {
            let mut pictures = Vec::new();
            for (s, t) in self.timesteps.iter().enumerate() {
                let query = MapQuery::new(tokens.clone())
                    .layers(LayerSelect::List(vec![layer.clone()]))
                    .steps(StepSelect::Single(s))
                    .upsample(crate::xattn::Upsample::Nearest);
                pictures.push(self.picture(&query, RenderMode::Heat, format!("t={t:.0}"))?);
            }
            html.push_str(&titled(layer, &PictureGrid { pictures, min_width: 64 }.to_html()?));
        }
        Ok(titled(&format!("{} by layer and step", self.tokens.label(tokens)), &html))
    }

    pub fn to_html(&self) -> Result<String> {
        let head = format!(
            "Cross-attention: {} layers, {} step(s), image {}×{}",
            self.layers().len(),
            self.timesteps.len(),
            self.image_size.1,
            self.image_size.0
        );
        Ok(titled(&head, &format!("{}{}", self.word_grid()?.to_html()?, self.tokens.to_html())))
    }

    pub fn evcxr_display(&self) {
        let plain = format!("AttentionMaps: {} layers, {} steps", self.layers().len(), self.timesteps.len());
        match self.to_html() {
            Ok(html) => emit(&html, &plain),
            Err(e) => println!("{e}"),
        }
    }
}

impl Generation {
    pub fn to_html(&self) -> Result<String> {
        let picture = Picture::from_tensor(&self.image, format!("seed {}", self.seed))?;
        let mut info =
            format!("{} — {} steps with {}, seed {}", self.prompt, self.timesteps.len(), self.sampler, self.seed);
        if let Some(r) = &self.representations {
            info.push_str(&format!("; captured: {}", r.positions().join(", ")));
        }
        Ok(titled(&info, &picture.to_html()?))
    }

    pub fn evcxr_display(&self) {
        let plain = format!("Generation: {:?} ({} steps, seed {})", self.prompt, self.timesteps.len(), self.seed);
        match self.to_html() {
            Ok(html) => emit(&html, &plain),
            Err(e) => println!("{e}"),
        }
    }
}
