//! Using a feature during generation: paint it into a region (their "Paint"), draw its "icon" from an empty
//! prompt, ablate it, or splice the SAE's reconstruction in place of the block's update.

use super::{rows_of, Sae};
use crate::error::{Error, Result};
use crate::generate::{GenerateRequest, Generation};
use crate::interventions::{AddDirection, Interventions, StepContext};
use crate::pipeline::Pipeline;
use crate::taps::{update_base, UPDATE_SUFFIX};
use std::ops::Range;
use tch::{Kind, Tensor};

/// Painting a feature: add `strength · mean[f] · d_f` to the block's output at the masked positions.
#[derive(Debug)]
pub struct SteerOptions {
    pub feature: i64,
    pub strength: f64,
    /// A mask `[H, W]` at any resolution (weights in [0, 1]); it is average-pooled to the block's grid.
    pub mask: Option<Tensor>,
    /// Step indices to steer at (all when `None`).
    pub steps: Option<Range<usize>>,
    /// Leave the unconditional half alone (by default it gets the opposite sign, as theirs).
    pub conditional_only: bool,
}

impl SteerOptions {
    pub fn new(feature: i64, strength: f64) -> Self {
        Self { feature, strength, mask: None, steps: None, conditional_only: false }
    }

    pub fn mask(mut self, mask: Tensor) -> Self {
        self.mask = Some(mask);
        self
    }

    pub fn steps(mut self, steps: Range<usize>) -> Self {
        self.steps = Some(steps);
        self
    }

    pub fn conditional_only(mut self) -> Self {
        self.conditional_only = true;
        self
    }
}

/// What to do with a feature (or the whole SAE) during generation.
#[derive(Debug)]
pub enum FeatureEdit {
    /// Paint the feature (see [`SteerOptions`]).
    Steer(SteerOptions),
    /// Their "feature icon": the block's whole update replaced by `mean[f] · k · d_f` (use with an empty prompt).
    Icon { feature: i64 },
    /// Remove the feature's contribution `z_f · d_f` from the update wherever it is active.
    Ablate { feature: i64 },
    /// Replace the update by the SAE's reconstruction of it.
    Splice,
}

impl FeatureEdit {
    /// One line saying what the edit does.
    pub fn describe(&self) -> String {
        match self {
            FeatureEdit::Steer(o) => format!(
                "painting feature {} at strength {}{}{}{}",
                o.feature,
                o.strength,
                if o.mask.is_some() { " inside the mask" } else { "" },
                o.steps.as_ref().map(|r| format!(", steps {}..{}", r.start, r.end)).unwrap_or_default(),
                if o.conditional_only { ", conditional half only" } else { "" }
            ),
            FeatureEdit::Icon { feature } => format!("feature {feature}'s icon (update replaced by mean·k·d_f)"),
            FeatureEdit::Ablate { feature } => format!("ablating feature {feature}"),
            FeatureEdit::Splice => "splicing in the SAE's reconstruction".into(),
        }
    }
}

fn grid_error(ctx: &StepContext, out: &Tensor) -> Error {
    Error::Shape {
        context: format!("SAE edit at `{}`", ctx.position),
        why: format!("expected a block output [B, C, h, w], got {:?}", out.size()),
    }
}

impl Sae {
    /// The SAE's hook position, or an error saying how to give one.
    pub fn hook(&self) -> Result<&str> {
        self.meta.hook.as_deref().ok_or_else(|| {
            Error::invalid(
                "SAE",
                "records no hook position; set `sae.meta.hook` (e.g. `mid_block.attentions[0]@update`)",
            )
        })
    }

    /// The block the SAE reads: its hook without `@update`.
    pub fn block(&self) -> Result<String> {
        let hook = self.hook()?;
        Ok(update_base(hook).unwrap_or(hook).to_string())
    }

    /// Register an edit on `interventions` at the SAE's block.
    pub fn install<'s>(&'s self, interventions: &mut Interventions<'s>, edit: FeatureEdit) -> Result<()> {
        let block = self.block()?;
        let update = format!("{block}{UPDATE_SUFFIX}");
        let d = self.d_in();
        match edit {
            FeatureEdit::Steer(options) => {
                let direction = self.direction(options.feature)?.f_mul_scalar(self.feature_scale(options.feature)?)?;
                let mask = options.mask.as_ref().map(check_mask).transpose()?;
                interventions.add(block, move |ctx, out| {
                    if out.dim() != 4 || out.size()[1] != d {
                        return Err(grid_error(ctx, out));
                    }
                    // The mask comes at any resolution: pooled to this block's grid, then the shared edit.
                    let mut edit = AddDirection::new(direction.shallow_clone(), options.strength);
                    edit.steps = options.steps.clone();
                    edit.conditional_only = options.conditional_only;
                    if let Some(mask) = &mask {
                        let grid = [out.size()[2], out.size()[3]];
                        let pooled = mask.f_unsqueeze(0)?.f_unsqueeze(0)?.f_adaptive_avg_pool2d(grid)?;
                        edit.mask = Some(pooled.f_reshape(grid)?);
                    }
                    edit.apply(ctx, out)
                });
            }
            FeatureEdit::Icon { feature } => {
                let direction = self.direction(feature)?.f_mul_scalar(self.feature_scale(feature)? * self.k as f64)?;
                interventions.add(update, move |ctx, out| {
                    if out.dim() != 4 || out.size()[1] != d {
                        return Err(grid_error(ctx, out));
                    }
                    let dir = direction.f_to_device(out.device())?.f_to_kind(out.kind())?.f_reshape([1, d, 1, 1])?;
                    Ok(Some(dir.f_expand(out.size(), false)?.f_contiguous()?))
                });
            }
            FeatureEdit::Ablate { feature } => {
                self.check_feature(feature)?;
                interventions.add(update, move |ctx, out| {
                    if out.dim() != 4 || out.size()[1] != d {
                        return Err(grid_error(ctx, out));
                    }
                    let rows = rows_of(out, d)?.f_to_kind(Kind::Float)?;
                    let act = self.feature_activation(&rows, feature)?;
                    let removed = act.f_unsqueeze(1)?.f_mul(&self.w_dec.f_get(feature)?.f_unsqueeze(0)?)?;
                    Ok(Some(from_rows(&rows.f_sub(&removed)?, out)?))
                });
            }
            FeatureEdit::Splice => {
                interventions.add(update, move |ctx, out| {
                    if out.dim() != 4 || out.size()[1] != d {
                        return Err(grid_error(ctx, out));
                    }
                    let rows = rows_of(out, d)?.f_to_kind(Kind::Float)?;
                    Ok(Some(from_rows(&self.reconstruct(&rows)?, out)?))
                });
            }
        }
        Ok(())
    }
}

/// Rows `[B·h·w, C]` back to the layout of `like` `[B, C, h, w]`.
fn from_rows(rows: &Tensor, like: &Tensor) -> Result<Tensor> {
    let s = like.size();
    Ok(rows.f_reshape([s[0], s[2], s[3], s[1]])?.f_permute([0, 3, 1, 2])?.f_contiguous()?.f_to_kind(like.kind())?)
}

fn check_mask(mask: &Tensor) -> Result<Tensor> {
    let mask = match mask.dim() {
        2 => mask.shallow_clone(),
        3 if mask.size()[0] == 1 => mask.f_get(0)?,
        _ => {
            return Err(Error::Shape {
                context: "steering mask".into(),
                why: format!("expected [H, W] (any resolution), got {:?}", mask.size()),
            })
        }
    };
    Ok(mask.f_to_kind(Kind::Float)?)
}

/// A mask from a grayscale image file: white = 1, black = 0.
pub fn mask_from_png(path: &std::path::Path) -> Result<Tensor> {
    let img =
        image::open(path).map_err(|e| Error::BadImage { path: path.to_path_buf(), why: e.to_string() })?.to_luma8();
    let (w, h) = img.dimensions();
    let values: Vec<f32> = img.into_raw().into_iter().map(|v| v as f32 / 255.0).collect();
    Ok(Tensor::from_slice(&values).f_reshape([h as i64, w as i64])?)
}

/// What splicing the SAE's reconstruction in place of the block's update does to a generation.
pub struct SpliceEffect {
    pub plain: Generation,
    pub spliced: Generation,
    /// `‖latents_spliced − latents_plain‖ / ‖latents_plain‖`: the diffusion analogue of the spliced-in loss.
    pub latent_change: f64,
}

/// Generate twice, plain and with the SAE's reconstruction spliced in at its block, and compare the final latents.
pub fn splice_effect(pipe: &Pipeline, request: &GenerateRequest, sae: &Sae) -> Result<SpliceEffect> {
    let plain = pipe.generate(request)?;
    let mut edits = Interventions::new();
    sae.install(&mut edits, FeatureEdit::Splice)?;
    let spliced = pipe.generate_with(request, &mut edits)?;
    let a = spliced.latents.f_to_kind(Kind::Double)?;
    let b = plain.latents.f_to_kind(Kind::Double)?;
    let base = b.f_norm()?.f_double_value(&[])?;
    let diff = a.f_sub(&b)?.f_norm()?.f_double_value(&[])?;
    Ok(SpliceEffect { plain, spliced, latent_change: if base > 0.0 { diff / base } else { diff } })
}
