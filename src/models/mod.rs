//! Model components, mirroring diffusers/transformers module trees.

pub mod clip;
mod clip_encoder;
pub mod clip_vision;
pub mod mmdit;
pub mod t5;
pub mod unet;
pub mod vae;
pub mod vae_decoder;

pub use clip::{ClipOutput, ClipTextModel};
pub use clip_vision::{ClipVisionConfig, ClipVisionModel, ClipVisionOutput};
pub use mmdit::Sd3Transformer;
pub use t5::{T5Encoder, T5Output};
pub use unet::{AddedConditioning, UNet};
pub use vae::{LatentDistribution, VaeEncoder};
pub use vae_decoder::VaeDecoder;
