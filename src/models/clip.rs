//! transformers' `CLIPTextModel` / `CLIPTextModelWithProjection`: the text encoders of SD1, SD2 and SDXL.

use super::clip_encoder::{Activation, ClipEncoder, EncoderShape};
use crate::config::{check_dims, ClipConfig};
use crate::error::{Error, Result};
use crate::nn::{LayerNorm, Linear};
use crate::weights::Weights;
use std::path::Path;
use tch::{Kind, Tensor};

/// What the encoder gives back.
/// # Shapes
/// `last_hidden_state`, `penultimate`: `[B, 77, hidden]`; `pooled`: `[B, hidden]`; `text_embeds`: `[B, projection]`
pub struct ClipOutput {
    /// After the final layer norm (SD1/SD2 conditioning).
    pub last_hidden_state: Tensor,
    /// Output of the second-to-last layer, no final norm (`hidden_states[-2]`, SDXL conditioning).
    pub penultimate: Tensor,
    /// `last_hidden_state` at the end-of-text token.
    pub pooled: Tensor,
    /// `text_projection(pooled)` for `CLIPTextModelWithProjection`.
    pub text_embeds: Option<Tensor>,
}

pub struct ClipTextModel {
    pub config: ClipConfig,
    token_embedding: Tensor,
    position_embedding: Tensor,
    encoder: ClipEncoder,
    final_layer_norm: LayerNorm,
    text_projection: Option<Linear>,
}

impl ClipTextModel {
    pub fn load(config: ClipConfig, config_path: &Path, weights: &Weights) -> Result<Self> {
        let activation = Activation::parse(&config.hidden_act, config_path)?;
        check_dims(
            config_path,
            1,
            [
                ("vocab_size", config.vocab_size),
                ("hidden_size", config.hidden_size),
                ("intermediate_size", config.intermediate_size),
                ("num_hidden_layers", config.num_hidden_layers),
                ("num_attention_heads", config.num_attention_heads),
                ("max_position_embeddings", config.max_position_embeddings),
            ]
            .into_iter()
            .chain(config.projection_dim.map(|p| ("projection_dim", p))),
        )?;
        let d = config.hidden_size;
        if d % config.num_attention_heads != 0 {
            return Err(Error::BadConfig {
                path: config_path.into(),
                why: "hidden_size is not a multiple of num_attention_heads".into(),
            });
        }
        let root = weights.root();
        // Hub checkpoints nest everything under `text_model.`; transformers 5 saves CLIPTextModel without it.
        let tm = if root.contains("text_model.embeddings.token_embedding.weight") {
            root.pp("text_model")
        } else {
            root.clone()
        };
        let emb = tm.pp("embeddings");
        let token_embedding = emb.pp("token_embedding").get("weight", &[config.vocab_size, d])?;
        let position_embedding = emb.pp("position_embedding").get("weight", &[config.max_position_embeddings, d])?;
        let eps = config.layer_norm_eps;
        let shape = EncoderShape {
            hidden: d,
            intermediate: config.intermediate_size,
            layers: config.num_hidden_layers,
            heads: config.num_attention_heads,
            eps,
        };
        let encoder = ClipEncoder::load(&tm.pp("encoder"), shape, activation)?;
        let final_layer_norm = LayerNorm::load(&tm.pp("final_layer_norm"), d, eps)?;
        let text_projection = match (config.projection_dim, root.contains("text_projection.weight")) {
            (Some(p), true) => Some(Linear::load(&root.pp("text_projection"), d, p, false)?),
            _ => None,
        };
        Ok(Self { config, token_embedding, position_embedding, encoder, final_layer_norm, text_projection })
    }

    /// # Shapes
    /// `ids: [B, L]` (int64, L ≤ max_position_embeddings)
    pub fn forward(&self, ids: &Tensor) -> Result<ClipOutput> {
        let (b, l) = ids.size2()?;
        if l > self.config.max_position_embeddings {
            return Err(Error::Shape {
                context: "text encoder input".into(),
                why: format!("{l} tokens, at most {}", self.config.max_position_embeddings),
            });
        }
        let ids = ids.f_to_kind(Kind::Int64)?.f_to_device(self.token_embedding.device())?;
        let max_id = ids.f_max()?.int64_value(&[]);
        if max_id >= self.config.vocab_size || ids.f_min()?.int64_value(&[]) < 0 {
            return Err(Error::invalid(
                "token ids",
                format!("must lie in 0..{} (found {max_id})", self.config.vocab_size),
            ));
        }
        let tokens = Tensor::f_embedding(&self.token_embedding, &ids, -1, false, false)?;
        let positions = self.position_embedding.f_narrow(0, 0, l)?.f_unsqueeze(0)?;
        let encoded = self.encoder.forward(&tokens.f_add(&positions)?, true)?;
        let penultimate = encoded.penultimate;
        let last_hidden_state = self.final_layer_norm.forward(&encoded.last)?;
        // transformers: the first end-of-text token, or the largest id for configs with the legacy eos id 2.
        let eos_index = if self.config.eos_token_id == 2 {
            ids.f_argmax(-1, false)?
        } else {
            ids.f_eq(self.config.eos_token_id)?.f_to_kind(Kind::Int)?.f_argmax(-1, false)?
        };
        let rows = Tensor::f_arange(b, (Kind::Int64, ids.device()))?;
        let pooled = last_hidden_state.f_index(&[Some(rows), Some(eos_index)])?;
        let text_embeds = match &self.text_projection {
            Some(p) => Some(p.forward(&pooled)?),
            None => None,
        };
        Ok(ClipOutput { last_hidden_state, penultimate, pooled, text_embeds })
    }
}
