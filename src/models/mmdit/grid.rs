//! Image-stream tensors are token sequences `[B, h·w, C]` inside the transformer; at every tap they are shown as
//! the latent patch grid `[B, C, h, w]`, like a U-Net feature map, so captures, edits, similarity and SAEs work on
//! them unchanged.

use crate::error::{Error, Result};
use crate::taps::Taps;
use tch::Tensor;

/// The patch grid of one forward pass.
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    pub h: i64,
    pub w: i64,
}

impl Grid {
    /// `[B, h·w, C]` → `[B, C, h, w]` (a view).
    pub fn to_grid(&self, tokens: &Tensor) -> Result<Tensor> {
        let size = tokens.size();
        if size.len() != 3 || size[1] != self.h * self.w {
            return Err(Error::Shape {
                context: "image stream".into(),
                why: format!(
                    "expected [B, {}, C] tokens for a {}×{} grid, got {size:?}",
                    self.h * self.w,
                    self.h,
                    self.w
                ),
            });
        }
        Ok(tokens.f_view([size[0], self.h, self.w, size[2]])?.f_permute([0, 3, 1, 2])?)
    }

    /// `[B, C, h, w]` → `[B, h·w, C]`.
    pub fn to_tokens(&self, grid: &Tensor) -> Result<Tensor> {
        let size = grid.size();
        Ok(grid.f_permute([0, 2, 3, 1])?.f_reshape([size[0], self.h * self.w, size[1]])?)
    }

    /// [`Taps::visit`] for an image-stream output: taps see (and may replace) the grid form.
    pub fn visit(&self, taps: &mut Taps, path: &str, tokens: Tensor) -> Result<Tensor> {
        if taps.is_passive() {
            return Ok(tokens);
        }
        let seen = taps.visit(path, self.to_grid(&tokens)?)?;
        self.to_tokens(&seen)
    }

    /// [`Taps::enter`] for an image-stream input (for `P@update`).
    pub fn enter(&self, taps: &mut Taps, path: &str, tokens: &Tensor) -> Result<()> {
        if !taps.is_passive() {
            taps.enter(path, &self.to_grid(tokens)?);
        }
        Ok(())
    }
}
