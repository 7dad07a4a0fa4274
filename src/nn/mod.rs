//! Building blocks shared by the U-Net, the VAE and the text encoders.

pub mod attention;
pub mod embeddings;
pub mod layers;
pub mod resnet;

pub use attention::Attention;
pub use layers::{Conv2d, GroupNorm, LayerNorm, Linear};
pub use resnet::ResnetBlock2D;

use crate::error::{Error, Result};
use crate::weights::VarBuilder;

pub(crate) fn check_groups(vb: &VarBuilder, groups: i64, channels: i64) -> Result<()> {
    if groups <= 0 || channels % groups != 0 {
        return Err(Error::invalid(
            format!("group norm `{}`", vb.prefix()),
            format!("{channels} channels cannot be split into {groups} groups (norm_num_groups in config.json)"),
        ));
    }
    Ok(())
}
