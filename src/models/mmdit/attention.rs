//! diffusers' `Attention` with `JointAttnProcessor2_0`: image and text tokens attend jointly (image first, then
//! text, along the sequence), with optional RMS q/k norms (SD3.5).

use super::grid::Grid;
use crate::error::{Error, Result};
use crate::nn::Linear;
use crate::taps::{Node, Taps};
use crate::weights::VarBuilder;
use tch::{Kind, Tensor};

/// diffusers' `RMSNorm` over the last dimension: variance in float32, weight applied in the weight's dtype.
#[derive(Debug)]
pub struct RmsNorm {
    weight: Option<Tensor>,
    eps: f64,
}

impl RmsNorm {
    pub fn load(vb: &VarBuilder, dim: i64, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.get_opt("weight", &[dim])?, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let variance = x.f_to_kind(Kind::Float)?.f_pow_tensor_scalar(2)?.f_mean_dim(-1, true, Kind::Float)?;
        let normed = x.f_mul(&variance.f_add_scalar(self.eps)?.f_rsqrt()?)?;
        match &self.weight {
            Some(w) => Ok(normed.f_to_kind(w.kind())?.f_mul(w)?),
            None => Ok(normed.f_to_kind(x.kind())?),
        }
    }
}

/// One projection with its position.
type Proj = (String, Linear);

fn proj(node: &Node, name: &str, in_dim: i64, out_dim: i64) -> Result<Proj> {
    let child = node.child(name);
    Ok((child.register(), Linear::load(&child.vb, in_dim, out_dim, true)?))
}

fn qk_norm(node: &Node, name: &str, kind: Option<&str>, head_dim: i64) -> Result<Option<(String, RmsNorm)>> {
    match kind {
        None => Ok(None),
        Some("rms_norm") => {
            let child = node.child(name);
            Ok(Some((child.register(), RmsNorm::load(&child.vb, head_dim, 1e-6)?)))
        }
        Some(other) => Err(Error::Unsupported {
            path: node.vb.prefix().into(),
            why: format!("qk_norm `{other}` (supported: rms_norm, or none)"),
        }),
    }
}

/// The text side of a joint attention layer.
#[derive(Debug)]
struct Added {
    q: Proj,
    k: Proj,
    v: Proj,
    norm_q: Option<(String, RmsNorm)>,
    norm_k: Option<(String, RmsNorm)>,
    /// `None` in the last block (`context_pre_only`): its text output is not used.
    out: Option<Proj>,
}

#[derive(Debug)]
pub struct JointAttention {
    pub path: String,
    to_q: Proj,
    to_k: Proj,
    to_v: Proj,
    norm_q: Option<(String, RmsNorm)>,
    norm_k: Option<(String, RmsNorm)>,
    to_out: Proj,
    dropout_path: String,
    added: Option<Added>,
    heads: i64,
    head_dim: i64,
}

/// How a joint attention layer is wired.
pub struct JointAttentionSpec<'a> {
    pub dim: i64,
    pub heads: i64,
    pub head_dim: i64,
    pub qk_norm: Option<&'a str>,
    /// Text tokens take part (`added_kv_proj_dim`); `false` for SD3.5's image-only `attn2`.
    pub joint: bool,
    pub context_pre_only: bool,
}

impl JointAttention {
    pub fn load(node: &Node, spec: &JointAttentionSpec) -> Result<Self> {
        let path = node.register_with_input();
        let inner = spec.heads * spec.head_dim;
        let norm_q = qk_norm(node, "norm_q", spec.qk_norm, spec.head_dim)?;
        let norm_k = qk_norm(node, "norm_k", spec.qk_norm, spec.head_dim)?;
        let to_q = proj(node, "to_q", spec.dim, inner)?;
        let to_k = proj(node, "to_k", spec.dim, inner)?;
        let to_v = proj(node, "to_v", spec.dim, inner)?;
        let added = if spec.joint {
            Some(Added {
                k: proj(node, "add_k_proj", spec.dim, inner)?,
                v: proj(node, "add_v_proj", spec.dim, inner)?,
                q: proj(node, "add_q_proj", spec.dim, inner)?,
                norm_q: qk_norm(node, "norm_added_q", spec.qk_norm, spec.head_dim)?,
                norm_k: qk_norm(node, "norm_added_k", spec.qk_norm, spec.head_dim)?,
                out: if spec.context_pre_only { None } else { Some(proj(node, "to_add_out", inner, spec.dim)?) },
            })
        } else {
            None
        };
        let out_node = node.item("to_out", 0);
        let to_out = (out_node.register(), Linear::load(&out_node.vb, inner, spec.dim, true)?);
        let dropout_path = node.item("to_out", 1).register();
        Ok(Self {
            path,
            to_q,
            to_k,
            to_v,
            norm_q,
            norm_k,
            to_out,
            dropout_path,
            added,
            heads: spec.heads,
            head_dim: spec.head_dim,
        })
    }

    /// `[B, L, heads·d]` → `[B, heads, L, d]`.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l) = (x.size()[0], x.size()[1]);
        Ok(x.f_view([b, l, self.heads, self.head_dim])?.f_transpose(1, 2)?)
    }

    fn heads_of(
        &self,
        (path, layer): &Proj,
        norm: &Option<(String, RmsNorm)>,
        x: &Tensor,
        grid: Option<Grid>,
        taps: &mut Taps,
    ) -> Result<Tensor> {
        let projected = layer.forward(x)?;
        let projected = match grid {
            Some(g) => g.visit(taps, path, projected)?,
            None => taps.visit(path, projected)?,
        };
        let heads = self.split_heads(&projected)?;
        match norm {
            Some((path, n)) => taps.visit(path, n.forward(&heads)?),
            None => Ok(heads),
        }
    }

    /// Image → text attention probabilities of the joint softmax, computed explicitly in float32.
    /// # Shapes
    /// `q_image: [B, heads, N, d]`, `k: [B, heads, N + S, d]` → `[B, heads or 1, N, S]`
    fn image_to_text(&self, q_image: &Tensor, k: &Tensor, n: i64, per_head: bool) -> Result<Tensor> {
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = q_image
            .f_to_kind(Kind::Float)?
            .f_matmul(&k.f_to_kind(Kind::Float)?.f_transpose(-1, -2)?)?
            .f_mul_scalar(scale)?;
        let probs = scores.f_softmax(-1, Kind::Float)?;
        let text = probs.f_narrow(-1, n, k.size()[2] - n)?;
        Ok(if per_head { text } else { text.f_mean_dim(1, true, Kind::Float)? })
    }

    /// Returns the image output and, for a joint layer, the text output.
    /// # Shapes
    /// `image: [B, N, dim]`, `text: [B, S, dim]` → (`[B, N, dim]`, `[B, S, dim]`)
    pub fn forward(
        &self,
        image: &Tensor,
        text: Option<&Tensor>,
        grid: Grid,
        taps: &mut Taps,
    ) -> Result<(Tensor, Option<Tensor>)> {
        grid.enter(taps, &self.path, image)?;
        let g = Some(grid);
        let mut q = self.heads_of(&self.to_q, &self.norm_q, image, g, taps)?;
        let mut k = self.heads_of(&self.to_k, &self.norm_k, image, g, taps)?;
        let mut v = self.heads_of(&self.to_v, &None, image, g, taps)?;
        let n = image.size()[1];
        let q_image = q.shallow_clone();
        let joint = match (&self.added, text) {
            (Some(added), Some(text)) => {
                let tk = self.heads_of(&added.k, &added.norm_k, text, None, taps)?;
                let tv = self.heads_of(&added.v, &None, text, None, taps)?;
                let tq = self.heads_of(&added.q, &added.norm_q, text, None, taps)?;
                q = Tensor::f_cat(&[&q, &tq], 2)?;
                k = Tensor::f_cat(&[&k, &tk], 2)?;
                v = Tensor::f_cat(&[&v, &tv], 2)?;
                true
            }
            (None, None) => false,
            _ => {
                return Err(Error::invalid(
                    format!("`{}`", self.path),
                    "a joint attention layer needs the text stream, an image-only one must not get it",
                ))
            }
        };
        if joint {
            if let Some(per_head) = taps.wants_attention(&self.path, true) {
                taps.store_attention(&self.path, self.image_to_text(&q_image, &k, n, per_head)?);
            }
        }
        let attended = Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false)?;
        let (b, l) = (attended.size()[0], attended.size()[2]);
        let merged = attended.f_transpose(1, 2)?.f_reshape([b, l, self.heads * self.head_dim])?;
        let image_part = merged.f_narrow(1, 0, n)?;
        let text_out = match (&self.added, joint) {
            (Some(added), true) => {
                let text_part = merged.f_narrow(1, n, l - n)?;
                Some(match &added.out {
                    Some((path, layer)) => taps.visit(path, layer.forward(&text_part)?)?,
                    None => text_part,
                })
            }
            _ => None,
        };
        let out = grid.visit(taps, &self.to_out.0, self.to_out.1.forward(&image_part)?)?;
        let out = grid.visit(taps, &self.dropout_path, out)?;
        let out = grid.visit(taps, &self.path, out)?;
        Ok((out, text_out))
    }
}
