//! `AttentionMaps`: cross-attention probabilities per layer and step, and the named reductions that turn them
//! into one map per token selection.

use super::tokens::{TokenSelection, TokenTable};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// How heads are combined (only when the maps were recorded per head; otherwise they are already averaged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadReduce {
    Mean,
    Sum,
    Single(usize),
}

/// Which layers enter a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSelect {
    All,
    /// Layers under a block, e.g. `up_blocks[1]` or `mid_block`.
    Block(String),
    /// Layers whose latent grid has this height (e.g. 16 for the 16×16 layers of a 512² SD1.5 image).
    Resolution(i64),
    List(Vec<String>),
}

/// Which steps enter a map (indices into [`AttentionMaps::timesteps`]); selected steps are summed like DAAM does,
/// then divided by their number (a mean, so maps of different step counts are comparable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepSelect {
    All,
    Range(std::ops::Range<usize>),
    Single(usize),
}

/// How the selected tokens are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenReduce {
    /// Sum the tokens' maps (the A1111 extension's comma-separated indices).
    Sum,
    /// Average them (DAAM's words: mean over sub-tokens and occurrences).
    Mean,
}

/// How each layer's map is brought to the image size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsample {
    Nearest,
    Bilinear,
    /// Bicubic, then clamped at 0 (DAAM).
    Bicubic,
}

/// How the final map is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    None,
    /// Divide by the maximum (the A1111 extension).
    Max,
    /// To [0, 1] by min and max (DAAM).
    MinMax,
    /// At every pixel, divide by the sum over all prompt tokens (BOS, EOS and padding excluded), so the prompt's
    /// words share each pixel — before upsampling, layer by layer.
    TokenShare,
}

/// A full description of one aggregated map. Defaults: all layers, all steps, head mean, token sum, bicubic to
/// the image size, no normalization.
#[derive(Debug, Clone, PartialEq)]
pub struct MapQuery {
    pub tokens: TokenSelection,
    pub heads: HeadReduce,
    pub layers: LayerSelect,
    pub steps: StepSelect,
    pub token_reduce: TokenReduce,
    pub upsample: Upsample,
    pub normalize: Normalize,
}

impl MapQuery {
    pub fn new(tokens: TokenSelection) -> Self {
        Self {
            tokens,
            heads: HeadReduce::Mean,
            layers: LayerSelect::All,
            steps: StepSelect::All,
            token_reduce: TokenReduce::Sum,
            upsample: Upsample::Bicubic,
            normalize: Normalize::None,
        }
    }

    /// Tokens at these positions (1 = first token after BOS), summed.
    pub fn tokens(indices: &[usize]) -> Self {
        Self::new(TokenSelection::Indices(indices.to_vec()))
    }

    /// Every sub-token of every occurrence of a word, averaged (DAAM's word maps).
    pub fn word(word: &str) -> Self {
        Self { token_reduce: TokenReduce::Mean, ..Self::new(TokenSelection::Word(word.to_string())) }
    }

    pub fn heads(mut self, h: HeadReduce) -> Self {
        self.heads = h;
        self
    }
    pub fn layers(mut self, l: LayerSelect) -> Self {
        self.layers = l;
        self
    }
    pub fn steps(mut self, s: StepSelect) -> Self {
        self.steps = s;
        self
    }
    pub fn token_reduce(mut self, t: TokenReduce) -> Self {
        self.token_reduce = t;
        self
    }
    pub fn upsample(mut self, u: Upsample) -> Self {
        self.upsample = u;
        self
    }
    pub fn normalize(mut self, n: Normalize) -> Self {
        self.normalize = n;
        self
    }
}

/// Cross-attention probabilities of several layers over one or more steps, for one image.
///
/// # Shapes
/// Per layer `[steps, heads or 1, 77, h, w]` float32 on the CPU: tokens first, then the layer's latent grid.
/// Memory: 4 bytes × 77 × h·w per layer, step and (when kept) head. For SD1.5 at 512² the 16 cross-attention
/// layers hold 26 944 positions in all: about 8.3 MB per step head-averaged, 66 MB per step with 8 heads —
/// 415 MB / 3.3 GB for 50 steps.
#[derive(Debug)]
pub struct AttentionMaps {
    layers: Vec<String>,
    pub timesteps: Vec<f64>,
    /// `(height, width)` in pixels.
    pub image_size: (i64, i64),
    /// The first tokenizer's view of the prompt.
    pub tokens: TokenTable,
    /// The image the maps belong to, `[H, W, 3]` uint8 (the input image, or the generated one).
    pub image: Option<Tensor>,
    per_head: bool,
    maps: BTreeMap<String, Tensor>,
}

impl AttentionMaps {
    pub(crate) fn new(
        maps: BTreeMap<String, Tensor>,
        order: Vec<String>,
        timesteps: Vec<f64>,
        image_size: (i64, i64),
        tokens: TokenTable,
        per_head: bool,
    ) -> Self {
        Self { layers: order, timesteps, image_size, tokens, image: None, per_head, maps }
    }

    /// Layer paths in forward order.
    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// Whether heads were kept separately.
    pub fn per_head(&self) -> bool {
        self.per_head
    }

    /// One layer: `[steps, heads or 1, 77, h, w]`.
    pub fn layer(&self, path: &str) -> Result<&Tensor> {
        self.maps.get(path).ok_or_else(|| {
            Error::invalid(format!("attention layer `{path}`"), format!("recorded layers: {}", self.layers.join(", ")))
        })
    }

    /// The latent grid `(h, w)` of a layer.
    pub fn grid(&self, path: &str) -> Result<(i64, i64)> {
        let s = self.layer(path)?.size();
        Ok((s[3], s[4]))
    }

    /// A layer averaged over heads at one step: `[77, h, w]` (what `sdscope xattn` writes).
    pub fn head_mean(&self, path: &str, step: usize) -> Result<Tensor> {
        let t = self.layer(path)?;
        let steps = t.size()[0] as usize;
        if step >= steps {
            return Err(Error::invalid(format!("step {step}"), format!("there are {steps} recorded steps")));
        }
        Ok(t.f_get(step as i64)?.f_mean_dim(0, false, Kind::Float)?)
    }

    fn selected_layers(&self, select: &LayerSelect) -> Result<Vec<String>> {
        let picked: Vec<String> = match select {
            LayerSelect::All => self.layers.clone(),
            LayerSelect::Block(prefix) => {
                let prefix = crate::taps::normalize_position(prefix)?;
                self.layers.iter().filter(|l| l.starts_with(&format!("{prefix}."))).cloned().collect()
            }
            LayerSelect::Resolution(h) => {
                self.layers.iter().filter(|l| self.grid(l).map(|g| g.0 == *h).unwrap_or(false)).cloned().collect()
            }
            LayerSelect::List(list) => {
                for l in list {
                    self.layer(l)?;
                }
                list.clone()
            }
        };
        if picked.is_empty() {
            let grids: Vec<String> =
                self.layers.iter().map(|l| format!("{l} {:?}", self.grid(l).unwrap_or((0, 0)))).collect();
            return Err(Error::invalid(
                format!("layer selection {select:?}"),
                format!("matches no layer; recorded: {}", grids.join(", ")),
            ));
        }
        Ok(picked)
    }

    fn step_indices(&self, select: &StepSelect) -> Result<Vec<i64>> {
        let n = self.timesteps.len();
        let range = match select {
            StepSelect::All => 0..n,
            StepSelect::Range(r) => r.clone(),
            StepSelect::Single(s) => *s..*s + 1,
        };
        if range.is_empty() || range.end > n {
            return Err(Error::invalid(format!("steps {select:?}"), format!("there are {n} recorded steps (0..{n})")));
        }
        Ok(range.map(|i| i as i64).collect())
    }

    /// One layer reduced over steps and heads: `[77, h, w]`.
    fn layer_tokens(&self, path: &str, steps: &[i64], heads: HeadReduce) -> Result<Tensor> {
        let t = self.layer(path)?.f_index_select(0, &Tensor::from_slice(steps))?.f_mean_dim(0, false, Kind::Float)?;
        let n_heads = t.size()[0];
        Ok(match (self.per_head, heads) {
            (false, HeadReduce::Single(_)) => {
                return Err(Error::invalid(
                    "HeadReduce::Single",
                    "the maps were recorded head-averaged; record per head",
                ))
            }
            (false, _) => t.f_get(0)?,
            (true, HeadReduce::Mean) => t.f_mean_dim(0, false, Kind::Float)?,
            (true, HeadReduce::Sum) => t.f_sum_dim_intlist(0, false, Kind::Float)?,
            (true, HeadReduce::Single(h)) => {
                if h as i64 >= n_heads {
                    return Err(Error::invalid(format!("head {h}"), format!("the layer `{path}` has {n_heads} heads")));
                }
                t.f_get(h as i64)?
            }
        })
    }

    /// Per selected token, the map at image size averaged over the selected layers: `[n_tokens, H, W]`.
    pub fn token_maps(&self, query: &MapQuery) -> Result<(Vec<usize>, Tensor)> {
        let tokens = self.tokens.select(&query.tokens)?;
        let text_tokens = self.tokens.select(&TokenSelection::AllText).ok();
        let layers = self.selected_layers(&query.layers)?;
        let steps = self.step_indices(&query.steps)?;
        let index = Tensor::from_slice(&tokens.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let (height, width) = self.image_size;
        let mut sum: Option<Tensor> = None;
        for path in &layers {
            let all = self.layer_tokens(path, &steps, query.heads)?;
            let mut picked = all.f_index_select(0, &index)?;
            if query.normalize == Normalize::TokenShare {
                let share_of = match &text_tokens {
                    Some(t) => Tensor::from_slice(&t.iter().map(|&i| i as i64).collect::<Vec<_>>()),
                    None => return Err(Error::invalid("Normalize::TokenShare", "the prompt has no tokens")),
                };
                let total = all.f_index_select(0, &share_of)?.f_sum_dim_intlist(0, true, Kind::Float)?;
                picked = picked.f_div(&total.f_clamp_min(1e-12)?)?;
            }
            let up = upsample(&picked.f_unsqueeze(0)?, (height, width), query.upsample)?.f_squeeze_dim(0)?;
            sum = Some(match sum {
                Some(s) => s.f_add(&up)?,
                None => up,
            });
        }
        let maps = sum.expect("at least one layer").f_div_scalar(layers.len() as f64)?;
        Ok((tokens, maps))
    }

    /// The aggregated map of a query: `[H, W]` float32.
    pub fn map(&self, query: &MapQuery) -> Result<Tensor> {
        let (_, maps) = self.token_maps(query)?;
        let combined = match query.token_reduce {
            TokenReduce::Sum => maps.f_sum_dim_intlist(0, false, Kind::Float)?,
            TokenReduce::Mean => maps.f_mean_dim(0, false, Kind::Float)?,
        };
        normalize(&combined, query.normalize)
    }
}

/// `[1, C, h, w]` → `[1, C, H, W]`.
fn upsample(x: &Tensor, (height, width): (i64, i64), how: Upsample) -> Result<Tensor> {
    Ok(match how {
        Upsample::Nearest => x.f_upsample_nearest2d([height, width], None, None)?,
        Upsample::Bilinear => x.f_upsample_bilinear2d([height, width], false, None, None)?,
        Upsample::Bicubic => x.f_upsample_bicubic2d([height, width], false, None, None)?.f_clamp_min(0.0)?,
    })
}

pub(crate) fn normalize(map: &Tensor, how: Normalize) -> Result<Tensor> {
    Ok(match how {
        Normalize::None | Normalize::TokenShare => map.shallow_clone(),
        Normalize::Max => {
            let max = map.f_max()?.double_value(&[]);
            if max > 0.0 {
                map.f_div_scalar(max)?
            } else {
                map.shallow_clone()
            }
        }
        Normalize::MinMax => {
            let (min, max) = (map.f_min()?.double_value(&[]), map.f_max()?.double_value(&[]));
            if max > min {
                map.f_sub_scalar(min)?.f_div_scalar(max - min)?
            } else {
                map.f_zeros_like()?
            }
        }
    })
}
