//! diffusers' `ResnetBlock2D`: two 3×3 convolutions with group norms, an optional time-embedding shift and a
//! 1×1 shortcut when the channel count changes.

use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm, Linear};
use crate::taps::{Node, Taps};
use tch::Tensor;

#[derive(Debug)]
pub struct ResnetBlock2D {
    path: String,
    norm1: (String, GroupNorm),
    conv1: (String, Conv2d),
    time_emb_proj: Option<(String, Linear)>,
    norm2: (String, GroupNorm),
    conv2: (String, Conv2d),
    conv_shortcut: Option<(String, Conv2d)>,
}

/// Channels and norm settings of one resnet block.
pub struct ResnetSpec {
    pub in_channels: i64,
    pub out_channels: i64,
    /// Width of the time embedding, `None` in the VAE.
    pub temb_channels: Option<i64>,
    pub groups: i64,
    pub eps: f64,
}

impl ResnetBlock2D {
    pub fn load(node: &Node, spec: &ResnetSpec) -> Result<Self> {
        let path = node.register_with_input();
        let (cin, cout) = (spec.in_channels, spec.out_channels);
        let norm = |name: &str, ch: i64| -> Result<(String, GroupNorm)> {
            let n = node.child(name);
            Ok((n.register(), GroupNorm::load(&n.vb, spec.groups, ch, spec.eps)?))
        };
        let conv = |name: &str, i: i64, o: i64, k: i64| -> Result<(String, Conv2d)> {
            let n = node.child(name);
            Ok((n.register(), Conv2d::load(&n.vb, i, o, k, 1, k / 2)?))
        };
        let time_emb_proj = match spec.temb_channels {
            Some(t) => {
                let n = node.child("time_emb_proj");
                Some((n.register(), Linear::load(&n.vb, t, cout, true)?))
            }
            None => None,
        };
        let conv_shortcut = if cin != cout { Some(conv("conv_shortcut", cin, cout, 1)?) } else { None };
        Ok(Self {
            path,
            norm1: norm("norm1", cin)?,
            conv1: conv("conv1", cin, cout, 3)?,
            time_emb_proj,
            norm2: norm("norm2", cout)?,
            conv2: conv("conv2", cout, cout, 3)?,
            conv_shortcut,
        })
    }

    /// # Shapes
    /// `x: [B, in, H, W]`, `temb: [B, T]` → `[B, out, H, W]`
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>, taps: &mut Taps) -> Result<Tensor> {
        taps.enter(&self.path, x);
        // Each activation-sized temporary is consumed by the next op (shadowing would keep them all alive to
        // the end of the function, which costs several full-resolution buffers in the VAE encoder).
        let mut h = {
            let activated = silu(taps.visit(&self.norm1.0, self.norm1.1.forward(x)?)?, taps)?;
            taps.visit(&self.conv1.0, self.conv1.1.forward(&activated)?)?
        };
        if let (Some((path, proj)), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = taps.visit(path, proj.forward(&temb.f_silu()?)?)?;
            h = h.f_add(&t.f_unsqueeze(-1)?.f_unsqueeze(-1)?)?;
        }
        let h = {
            let activated = silu(taps.visit(&self.norm2.0, self.norm2.1.forward(&h)?)?, taps)?;
            drop(h);
            taps.visit(&self.conv2.0, self.conv2.1.forward(&activated)?)?
        };
        let shortcut = match &self.conv_shortcut {
            Some((path, conv)) => taps.visit(path, conv.forward(x)?)?,
            None => x.shallow_clone(),
        };
        taps.visit(&self.path, shortcut.f_add(&h)?)
    }
}

/// SiLU, in place when no tap can hold the input (saves one activation-sized buffer at peak, which matters for
/// the VAE encoder at full resolution).
fn silu(mut x: Tensor, taps: &Taps) -> Result<Tensor> {
    Ok(if taps.is_passive() { x.f_silu_()? } else { x.f_silu()? })
}
