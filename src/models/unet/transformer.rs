//! diffusers' `Transformer2DModel` (spatial transformer) and `BasicTransformerBlock`.

use crate::error::Result;
use crate::nn::attention::AttentionSpec;
use crate::nn::{Attention, Conv2d, GroupNorm, LayerNorm, Linear};
use crate::taps::{Node, Taps};
use tch::Tensor;

/// GEGLU feed-forward: `net[2](a · gelu(b))` with `[a, b] = net[0].proj(x)`.
#[derive(Debug)]
struct FeedForward {
    path: String,
    geglu: (String, String, Linear),
    out: (String, Linear),
}

impl FeedForward {
    fn load(node: &Node, dim: i64) -> Result<Self> {
        let path = node.register_with_input();
        let inner = dim * 4;
        let geglu_node = node.item("net", 0);
        let geglu_path = geglu_node.register();
        let proj = geglu_node.child("proj");
        let out = node.item("net", 2);
        Ok(Self {
            path,
            geglu: (geglu_path, proj.register(), Linear::load(&proj.vb, dim, inner * 2, true)?),
            out: (out.register(), Linear::load(&out.vb, inner, dim, true)?),
        })
    }

    fn forward(&self, x: &Tensor, taps: &mut Taps) -> Result<Tensor> {
        taps.enter(&self.path, x);
        let (geglu_path, proj_path, proj) = &self.geglu;
        let both = taps.visit(proj_path, proj.forward(x)?)?;
        let halves = both.f_chunk(2, -1)?;
        let gated = halves[0].f_mul(&halves[1].f_gelu("none")?)?;
        let gated = taps.visit(geglu_path, gated)?;
        let out = taps.visit(&self.out.0, self.out.1.forward(&gated)?)?;
        taps.visit(&self.path, out)
    }
}

#[derive(Debug)]
struct BasicTransformerBlock {
    path: String,
    norm1: (String, LayerNorm),
    attn1: Attention,
    norm2: (String, LayerNorm),
    attn2: Attention,
    norm3: (String, LayerNorm),
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn load(node: &Node, dim: i64, heads: i64, head_dim: i64, context_dim: i64) -> Result<Self> {
        let path = node.register_with_input();
        let norm = |name: &str| -> Result<(String, LayerNorm)> {
            let n = node.child(name);
            Ok((n.register(), LayerNorm::load(&n.vb, dim, 1e-5)?))
        };
        let spec = |context_dim| AttentionSpec {
            query_dim: dim,
            context_dim,
            heads,
            head_dim,
            qkv_bias: false,
            spatial_norm: None,
        };
        Ok(Self {
            path,
            norm1: norm("norm1")?,
            attn1: Attention::load(&node.child("attn1"), spec(None))?,
            norm2: norm("norm2")?,
            attn2: Attention::load(&node.child("attn2"), spec(Some(context_dim)))?,
            norm3: norm("norm3")?,
            ff: FeedForward::load(&node.child("ff"), dim)?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor, taps: &mut Taps) -> Result<Tensor> {
        taps.enter(&self.path, x);
        let n = taps.visit(&self.norm1.0, self.norm1.1.forward(x)?)?;
        let x = self.attn1.forward(&n, None, taps)?.f_add(x)?;
        let n = taps.visit(&self.norm2.0, self.norm2.1.forward(&x)?)?;
        let x = self.attn2.forward(&n, Some(context), taps)?.f_add(&x)?;
        let n = taps.visit(&self.norm3.0, self.norm3.1.forward(&x)?)?;
        let x = self.ff.forward(&n, taps)?.f_add(&x)?;
        taps.visit(&self.path, x)
    }
}

#[derive(Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// Settings of one spatial transformer.
pub struct TransformerSpec {
    pub channels: i64,
    pub heads: i64,
    pub depth: usize,
    pub context_dim: i64,
    pub groups: i64,
    pub linear_projection: bool,
}

#[derive(Debug)]
pub struct Transformer2D {
    path: String,
    norm: (String, GroupNorm),
    proj_in: (String, Projection),
    blocks: Vec<BasicTransformerBlock>,
    proj_out: (String, Projection),
}

impl Transformer2D {
    pub fn load(node: &Node, spec: &TransformerSpec) -> Result<Self> {
        let path = node.register_with_input();
        let c = spec.channels;
        let head_dim = c / spec.heads;
        let norm_node = node.child("norm");
        let norm = (norm_node.register(), GroupNorm::load(&norm_node.vb, spec.groups, c, 1e-6)?);
        let projection = |name: &str| -> Result<(String, Projection)> {
            let n = node.child(name);
            let layer = if spec.linear_projection {
                Projection::Linear(Linear::load(&n.vb, c, c, true)?)
            } else {
                Projection::Conv(Conv2d::load(&n.vb, c, c, 1, 1, 0)?)
            };
            Ok((n.register(), layer))
        };
        let proj_in = projection("proj_in")?;
        let blocks = (0..spec.depth)
            .map(|i| {
                BasicTransformerBlock::load(
                    &node.item("transformer_blocks", i),
                    c,
                    spec.heads,
                    head_dim,
                    spec.context_dim,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let proj_out = projection("proj_out")?;
        Ok(Self { path, norm, proj_in, blocks, proj_out })
    }

    /// # Shapes
    /// `x: [B, C, H, W]`, `context: [B, S, D]` → `[B, C, H, W]`
    pub fn forward(&self, x: &Tensor, context: &Tensor, taps: &mut Taps) -> Result<Tensor> {
        taps.enter(&self.path, x);
        let size = x.size();
        let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
        let to_tokens = |t: &Tensor| -> Result<Tensor> { Ok(t.f_permute([0, 2, 3, 1])?.f_reshape([b, h * w, c])?) };
        let to_grid =
            |t: &Tensor| -> Result<Tensor> { Ok(t.f_reshape([b, h, w, c])?.f_permute([0, 3, 1, 2])?.f_contiguous()?) };
        let normed = taps.visit(&self.norm.0, self.norm.1.forward(x)?)?;
        let mut tokens = match &self.proj_in.1 {
            Projection::Conv(conv) => to_tokens(&taps.visit(&self.proj_in.0, conv.forward(&normed)?)?)?,
            Projection::Linear(lin) => taps.visit(&self.proj_in.0, lin.forward(&to_tokens(&normed)?)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context, taps)?;
        }
        let out = match &self.proj_out.1 {
            Projection::Conv(conv) => taps.visit(&self.proj_out.0, conv.forward(&to_grid(&tokens)?)?)?,
            Projection::Linear(lin) => to_grid(&taps.visit(&self.proj_out.0, lin.forward(&tokens)?)?)?,
        };
        taps.visit(&self.path, out.f_add(x)?)
    }
}
