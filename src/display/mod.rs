//! Rich output for notebooks and files: pictures, plots and tables.
//!
//! In the evcxr Jupyter kernel a cell's value is shown through its `evcxr_display` method; every user-facing
//! type of sdscope has one and renders itself as one self-contained `text/html` block (pictures as base64 PNG,
//! plots as inline SVG) with a `text/plain` fallback. All user text is HTML-escaped.

pub mod collection;
pub mod figure;
pub mod picture;
pub mod tables;

pub use crate::xattn::render::escape_html;
pub use figure::{Bins, Figure, Panel, Plot, Series};
pub use picture::{Picture, PictureGrid};

/// Print one rich output the way evcxr collects it (one block per MIME type).
pub fn emit(html: &str, plain: &str) {
    println!("EVCXR_BEGIN_CONTENT text/html\n{html}\nEVCXR_END_CONTENT");
    println!("EVCXR_BEGIN_CONTENT text/plain\n{plain}\nEVCXR_END_CONTENT");
}

/// Ready-made HTML, shown as is in a notebook.
#[derive(Debug, Clone, PartialEq)]
pub struct Html(pub String);

impl Html {
    pub fn evcxr_display(&self) {
        emit(&self.0, "[html]");
    }
}

/// Wrap HTML blocks into one with a title above (escaped).
pub(crate) fn titled(title: &str, body: &str) -> String {
    format!(
        "<div style=\"margin:4px 0\"><div style=\"font:bold 13px sans-serif;margin-bottom:4px\">{}</div>{body}</div>",
        escape_html(title)
    )
}
