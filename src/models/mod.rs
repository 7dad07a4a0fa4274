//! Model components, mirroring diffusers/transformers module trees.

pub mod clip;
pub mod unet;
pub mod vae;
pub mod vae_decoder;

pub use clip::{ClipOutput, ClipTextModel};
pub use unet::{AddedConditioning, UNet};
pub use vae::{LatentDistribution, VaeEncoder};
pub use vae_decoder::VaeDecoder;
