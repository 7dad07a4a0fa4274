//! sdscope: look inside Stable Diffusion models (SD1.x, SD2.x, SDXL and their turbo/lightning variants) from Rust,
//! with numbers identical to diffusers.
//!
//! ```no_run
//! use sdscope::prelude::*;
//! let pipe = Pipeline::load("sd15")?;
//! let reprs = pipe.extract(&ExtractRequest::new(["mid_block", "up_blocks[1]"]).timestep(50).seed(42), &["cat.png"])?;
//! println!("{:?}", reprs.get("up_blocks[1]")?.size()); // [1, 1, 1280, 32, 32]: images, timesteps, C, h, w
//! # Ok::<(), sdscope::Error>(())
//! ```

pub mod bench;
pub mod collect;
pub mod collection;
pub mod config;
pub mod datasets;
pub mod denoiser;
pub mod display;
pub mod embed;
pub mod error;
pub mod hub;
pub mod models;
pub mod nn;
pub mod schedulers;
pub mod similarity;
pub mod taps;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};

/// Serialises use of libtorch's global random generator (seed, then draws) across threads.
pub static RNG_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
pub mod extract;
pub mod generate;
pub mod image_io;
pub mod interventions;
pub mod pipeline;
pub mod posterior_cache;
pub mod project;
pub mod representations;
pub mod sae;
pub mod sd3_text;
pub mod tensor_io;
pub mod xattn;

/// Everything a notebook needs, in one `use`.
pub mod prelude {
    pub use crate::display::{Bins, Figure, Html, Picture, PictureGrid, Plot};
    pub use crate::error::{Error, Result};
    pub use crate::extract::ExtractRequest;
    pub use crate::generate::{CaptureHalves, GenerateRequest, Generation};
    pub use crate::interventions::{Ablation, AddDirection, Interventions, StepContext};
    pub use crate::pipeline::{LoadOptions, Pipeline};
    pub use crate::representations::Representations;
    pub use crate::schedulers::SamplerKind;
    pub use crate::xattn::{AttentionCapture, AttentionMaps, AttentionRequest, Colormap, MapQuery, TokenSelection};
    pub use tch::{Device, Kind, Tensor};
}
