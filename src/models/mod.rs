//! Model components, mirroring diffusers/transformers module trees.

pub mod clip;
pub mod unet;
pub mod vae;

pub use clip::{ClipOutput, ClipTextModel};
pub use unet::{AddedConditioning, UNet};
pub use vae::{LatentDistribution, VaeEncoder};
