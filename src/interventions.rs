//! Interventions: functions that may replace a module's output during generation or extraction.
//!
//! An intervention is registered at a position and called with a [`StepContext`] and the module's output (the
//! whole batch: `[uncond, cond]` when guidance doubles it); it returns `Some(replacement)` of the same shape, or
//! `None` to leave the output alone. Helpers cover the usual edits: add a direction (SDXL-Turbo SAE steering),
//! scale, ablate, replace with a stored representation.
//!
//! ```no_run
//! use sdscope::prelude::*;
//! use sdscope::interventions::{AddDirection, Interventions};
//! let pipe = Pipeline::load("sdxl-turbo")?;
//! let direction = Tensor::randn([1280], (Kind::Float, Device::Cpu));
//! let mut edits = Interventions::new();
//! edits.add_direction("mid_block", AddDirection::new(direction, 4.0).steps(0..1));
//! let out = pipe.generate_with(&GenerateRequest::new("a cat").seed(1), &mut edits)?;
//! out.save_png("steered.png")?;
//! # Ok::<(), sdscope::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::taps::Taps;
use std::ops::Range;
use tch::{Kind, Tensor};

/// Where an intervention is being called.
#[derive(Debug, Clone, Copy)]
pub struct StepContext<'a> {
    /// The position (`mid_block`, `up_blocks[1].attentions[0]`).
    pub position: &'a str,
    /// Step index (0-based); in extraction, the index of the timestep in the request.
    pub step: usize,
    /// The timestep the U-Net sees.
    pub timestep: f64,
    /// Whether the batch is `[unconditional, conditional]` (classifier-free guidance).
    pub guided: bool,
}

/// What a direction edit does to the unconditional half of a guided batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnconditionalHalf {
    Opposite,
    Same,
    Untouched,
}

impl StepContext<'_> {
    /// One factor per batch element: `+1` on the conditional half (all of an unguided batch); on the unconditional
    /// half, which is the first half of a guided batch (`[uncond_1..B, cond_1..B]`), `-1`, `+1` or `0`.
    fn signs(&self, batch: i64, unconditional: UnconditionalHalf) -> Vec<f32> {
        let factor = match unconditional {
            UnconditionalHalf::Opposite => -1.0,
            UnconditionalHalf::Same => 1.0,
            UnconditionalHalf::Untouched => 0.0,
        };
        (0..batch).map(|i| if self.guided && i < batch / 2 { factor } else { 1.0 }).collect()
    }
}

/// A function that may replace a module's output.
pub type InterventionFn<'a> = Box<dyn FnMut(&StepContext, &Tensor) -> Result<Option<Tensor>> + 'a>;

/// Interventions by position; several at one position run in the order they were added.
#[derive(Default)]
pub struct Interventions<'a> {
    pub(crate) entries: Vec<(String, InterventionFn<'a>)>,
}

/// Add `strength · mask · direction` to a module's output (inside a step range), with the opposite sign on the
/// unconditional half of a guided batch, as the SDXL-Turbo SAE work does.
/// # Shapes
/// `direction: [C]`; `mask: [h, w]` matching the output's spatial size. Works on `[B, C, h, w]` block outputs and
/// on `[B, h·w, C]` token outputs.
pub struct AddDirection {
    pub direction: Tensor,
    pub strength: f64,
    pub mask: Option<Tensor>,
    pub steps: Option<Range<usize>>,
    pub same_sign_on_unconditional: bool,
    /// Leave the unconditional half alone (wins over `same_sign_on_unconditional`).
    pub conditional_only: bool,
}

impl AddDirection {
    pub fn new(direction: Tensor, strength: f64) -> Self {
        Self {
            direction,
            strength,
            mask: None,
            steps: None,
            same_sign_on_unconditional: false,
            conditional_only: false,
        }
    }

    /// Only inside this spatial mask `[h, w]` (values are weights; 0/1 for a hard mask).
    pub fn mask(mut self, mask: Tensor) -> Self {
        self.mask = Some(mask);
        self
    }

    /// Only at these step indices.
    pub fn steps(mut self, steps: Range<usize>) -> Self {
        self.steps = Some(steps);
        self
    }

    /// Add with the same sign on both halves of a guided batch.
    pub fn same_sign_on_unconditional(mut self) -> Self {
        self.same_sign_on_unconditional = true;
        self
    }

    /// Add on the conditional half only.
    pub fn conditional_only(mut self) -> Self {
        self.conditional_only = true;
        self
    }
}

/// What ablation puts in place of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ablation {
    Zero,
    /// Each channel's mean over the spatial positions (or tokens).
    SpatialMean,
}

fn in_range(steps: &Option<Range<usize>>, step: usize) -> bool {
    steps.as_ref().is_none_or(|r| r.contains(&step))
}

fn shape_error(ctx: &StepContext, why: String) -> Error {
    Error::Shape { context: format!("intervention at `{}`", ctx.position), why }
}

/// `[B, C, h, w]` → (C, h, w, channel axis); `[B, L, C]` → (C, L, 1, channel axis).
fn layout(ctx: &StepContext, out: &Tensor) -> Result<(i64, i64, i64, bool)> {
    let s = out.size();
    match s.len() {
        4 => Ok((s[1], s[2], s[3], true)),
        3 => Ok((s[2], s[1], 1, false)),
        _ => Err(shape_error(ctx, format!("expected an output [B, C, h, w] or [B, L, C], got {s:?}"))),
    }
}

/// Per-batch signs shaped to broadcast against `out`.
fn sign_tensor(ctx: &StepContext, out: &Tensor, unconditional: UnconditionalHalf) -> Result<Tensor> {
    let mut shape = vec![out.size()[0]];
    shape.resize(out.dim(), 1);
    Ok(Tensor::from_slice(&ctx.signs(out.size()[0], unconditional))
        .f_to_kind(out.kind())?
        .f_to_device(out.device())?
        .f_reshape(shape)?)
}

impl AddDirection {
    /// The edited output, or `None` outside the step range.
    pub(crate) fn apply(&self, ctx: &StepContext, out: &Tensor) -> Result<Option<Tensor>> {
        if !in_range(&self.steps, ctx.step) {
            return Ok(None);
        }
        let (channels, h, w, channel_first) = layout(ctx, out)?;
        if self.direction.size() != [channels] {
            return Err(shape_error(
                ctx,
                format!("direction has shape {:?}; this output has {channels} channels", self.direction.size()),
            ));
        }
        let dir = self.direction.f_to_kind(Kind::Float)?.f_to_device(out.device())?;
        let mut delta = if channel_first { dir.f_reshape([channels, 1, 1])? } else { dir.f_reshape([1, channels])? };
        if let Some(mask) = &self.mask {
            let spatial = if channel_first { vec![h, w] } else { vec![h * w] };
            let expected = if channel_first { format!("[{h}, {w}]") } else { format!("[h, w] with h·w = {h}") };
            if mask.numel() as i64 != h * w || (channel_first && mask.size() != spatial) {
                return Err(shape_error(ctx, format!("mask has shape {:?}, expected {expected}", mask.size())));
            }
            let mask = mask.f_to_kind(Kind::Float)?.f_to_device(out.device())?;
            let mask = if channel_first { mask.f_reshape([1, h, w])? } else { mask.f_reshape([h * w, 1])? };
            delta = delta.f_mul(&mask)?;
        }
        let delta = delta.f_mul_scalar(self.strength)?.f_unsqueeze(0)?.f_to_kind(out.kind())?;
        let unconditional = match (self.conditional_only, self.same_sign_on_unconditional) {
            (true, _) => UnconditionalHalf::Untouched,
            (false, true) => UnconditionalHalf::Same,
            (false, false) => UnconditionalHalf::Opposite,
        };
        let signs = sign_tensor(ctx, out, unconditional)?;
        Ok(Some(out.f_add(&delta.f_mul(&signs)?)?))
    }
}

impl<'a> Interventions<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The positions with an intervention, in the order they were added.
    pub fn positions(&self) -> Vec<String> {
        self.entries.iter().map(|(p, _)| p.clone()).collect()
    }

    /// A custom intervention: `f(context, output)` returns `Some(replacement)` or `None`.
    pub fn add<F>(&mut self, position: impl Into<String>, f: F) -> &mut Self
    where
        F: FnMut(&StepContext, &Tensor) -> Result<Option<Tensor>> + 'a,
    {
        self.entries.push((position.into(), Box::new(f)));
        self
    }

    /// Add a direction (see [`AddDirection`]).
    pub fn add_direction(&mut self, position: impl Into<String>, edit: AddDirection) -> &mut Self {
        self.add(position, move |ctx, out| edit.apply(ctx, out))
    }

    /// Multiply the output by `factor` (at these steps; all when `None`).
    pub fn scale(&mut self, position: impl Into<String>, factor: f64, steps: Option<Range<usize>>) -> &mut Self {
        self.add(position, move |ctx, out| {
            if !in_range(&steps, ctx.step) {
                return Ok(None);
            }
            Ok(Some(out.f_mul_scalar(factor)?))
        })
    }

    /// Zero the output, or replace it by each channel's spatial mean.
    pub fn ablate(&mut self, position: impl Into<String>, how: Ablation, steps: Option<Range<usize>>) -> &mut Self {
        self.add(position, move |ctx, out| {
            if !in_range(&steps, ctx.step) {
                return Ok(None);
            }
            Ok(Some(match how {
                Ablation::Zero => out.f_zeros_like()?,
                Ablation::SpatialMean => {
                    let (_, _, _, channel_first) = layout(ctx, out)?;
                    let dims: &[i64] = if channel_first { &[2, 3] } else { &[1] };
                    out.f_mean_dim(dims, true, out.kind())?.f_expand_as(out)?.f_contiguous()?
                }
            }))
        })
    }

    /// Replace the output by a stored representation: either one tensor with the module's native shape (no batch
    /// dimension; used at every step) or one per step, stacked `[steps, ..native]` (as `Representations::image`
    /// returns it). Every batch element gets the same replacement.
    pub fn replace(&mut self, position: impl Into<String>, with: Tensor, steps: Option<Range<usize>>) -> &mut Self {
        self.add(position, move |ctx, out| {
            if !in_range(&steps, ctx.step) {
                return Ok(None);
            }
            let native = &out.size()[1..];
            let one = if with.size() == native {
                with.shallow_clone()
            } else if with.dim() == native.len() + 1 && &with.size()[1..] == native {
                let available = with.size()[0];
                if ctx.step as i64 >= available {
                    return Err(shape_error(
                        ctx,
                        format!("the stored representation has {available} steps; step {} was asked for", ctx.step),
                    ));
                }
                with.f_get(ctx.step as i64)?
            } else {
                return Err(shape_error(
                    ctx,
                    format!(
                        "replacement has shape {:?}; expected {native:?} or [steps, {}]",
                        with.size(),
                        native.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            let one = one.f_to_kind(out.kind())?.f_to_device(out.device())?;
            Ok(Some(one.f_unsqueeze(0)?.f_expand_as(out)?.f_contiguous()?))
        })
    }
}

impl<'a> Interventions<'a> {
    /// Check every position against the model's and rewrite it in canonical form.
    pub(crate) fn resolve(&mut self, pipe: &crate::pipeline::Pipeline) -> Result<()> {
        for (position, _) in &mut self.entries {
            *position = pipe.resolve_positions(&[position.as_str()])?.remove(0);
        }
        Ok(())
    }

    /// Register the interventions on the taps of one U-Net pass.
    pub(crate) fn install<'t>(&'t mut self, taps: &mut Taps<'t>, step: usize, timestep: f64, guided: bool) {
        let mut by_position: Vec<(String, Vec<&'t mut InterventionFn<'a>>)> = Vec::new();
        for (position, f) in self.entries.iter_mut() {
            match by_position.iter_mut().find(|(p, _)| p == position) {
                Some((_, fns)) => fns.push(f),
                None => by_position.push((position.clone(), vec![f])),
            }
        }
        for (position, mut fns) in by_position {
            taps.edit(
                position,
                Box::new(move |path: &str, out: &Tensor| {
                    let ctx = StepContext { position: path, step, timestep, guided };
                    let mut current: Option<Tensor> = None;
                    for f in fns.iter_mut() {
                        if let Some(replacement) = f(&ctx, current.as_ref().unwrap_or(out))? {
                            current = Some(replacement);
                        }
                    }
                    Ok(current)
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guided batch of two images is `[uncond_0, uncond_1, cond_0, cond_1]`: the first half gets the
    /// unconditional factor.
    #[test]
    fn unconditional_half_is_the_first_half() {
        let ctx = StepContext { position: "mid_block", step: 0, timestep: 1.0, guided: true };
        assert_eq!(ctx.signs(4, UnconditionalHalf::Opposite), [-1.0, -1.0, 1.0, 1.0]);
        assert_eq!(ctx.signs(2, UnconditionalHalf::Untouched), [0.0, 1.0]);
        assert_eq!(ctx.signs(4, UnconditionalHalf::Same), [1.0; 4]);
        let unguided = StepContext { guided: false, ..ctx };
        assert_eq!(unguided.signs(3, UnconditionalHalf::Opposite), [1.0; 3]);
    }
}
