//! Model components, mirroring diffusers/transformers module trees.

pub mod clip;
mod clip_encoder;
pub mod clip_vision;
pub mod unet;
pub mod vae;
pub mod vae_decoder;

pub use clip::{ClipOutput, ClipTextModel};
pub use clip_vision::{ClipVisionConfig, ClipVisionModel, ClipVisionOutput};
pub use unet::{AddedConditioning, UNet};
pub use vae::{LatentDistribution, VaeEncoder};
pub use vae_decoder::VaeDecoder;
