//! SD3's prompt encoding (`StableDiffusion3Pipeline.encode_prompt`): both CLIPs' penultimate states side by side,
//! zero-padded to the T5 width, then the T5 tokens appended along the sequence; pooled = both CLIP projections.

use crate::config::{read_json, T5Config};
use crate::error::{Error, Result};
use crate::hub::component_weights;
use crate::models::t5::T5Encoder;
use crate::pipeline::{LoadOptions, Pipeline, TextConditioning};
use crate::tokenizer::t5::T5Tokenizer;
use crate::tokenizer::Encoding;
use crate::weights::Weights;
use std::path::Path;
use tch::{Kind, Tensor};

/// The T5 tokens appended to the CLIP tokens (the pipeline's `max_sequence_length` default).
pub const T5_MAX_SEQUENCE_LENGTH: usize = 256;

/// SD3's third text encoder with its tokenizer.
pub struct T5Text {
    pub tokenizer: T5Tokenizer,
    pub encoder: T5Encoder,
    /// T5 tokens per prompt (`max_sequence_length`).
    pub max_sequence_length: usize,
}

impl T5Text {
    /// `text_encoder_3/` + `tokenizer_3/` when the model has them and `options.skip_t5` is not set.
    pub fn load_optional(root: &Path, options: &LoadOptions) -> Result<Option<Self>> {
        let dir = root.join("text_encoder_3");
        if options.skip_t5 || !dir.join("config.json").is_file() {
            return Ok(None);
        }
        let tokenizer = T5Tokenizer::from_dir(&root.join("tokenizer_3"))?;
        let config_path = dir.join("config.json");
        let config: T5Config = read_json(&config_path)?;
        let dtype = options.t5_dtype.unwrap_or(options.dtype);
        let weights = Weights::open_mapped(&component_weights(&dir)?, dtype, options.device)?;
        let encoder = T5Encoder::load(config, &config_path, &weights)?;
        Ok(Some(Self { tokenizer, encoder, max_sequence_length: T5_MAX_SEQUENCE_LENGTH }))
    }

    /// The T5 tokens of a prompt (`max_sequence_length` ids, `</s>` then padding).
    pub fn tokenize(&self, prompt: &str) -> Result<Encoding> {
        self.tokenizer.encode(prompt, self.max_sequence_length)
    }
}

impl Pipeline {
    /// The joint text sequence and pooled vector of SD3.
    /// # Shapes
    /// → `hidden_states: [B, 77 + max_sequence_length, joint_attention_dim]`, `text_embeds: [B, P_l + P_g]`
    pub(crate) fn encode_sd3(&self, clip: &[Vec<Encoding>], prompts: &[&str]) -> Result<TextConditioning> {
        let ids = |tokenizer: usize| -> Result<Tensor> {
            let rows = clip.iter().map(|e| Tensor::from_slice(&e[tokenizer].ids)).collect::<Vec<_>>();
            Ok(Tensor::f_stack(&rows, 0)?.f_to_device(self.options.device)?)
        };
        let mut states = Vec::with_capacity(2);
        let mut pooled = Vec::with_capacity(2);
        for (i, encoder) in self.text_encoders.iter().enumerate() {
            let out = encoder.forward(&ids(i)?)?;
            states.push(out.penultimate);
            pooled.push(out.text_embeds.ok_or_else(|| {
                Error::invalid(
                    format!("text_encoder{}", if i == 0 { String::new() } else { format!("_{}", i + 1) }),
                    "has no text_projection (SD3 needs CLIPTextModelWithProjection for both CLIPs)",
                )
            })?);
        }
        let clip_states = Tensor::f_cat(&states, -1)?;
        let width = self.denoiser.context_width();
        let clip_width = clip_states.size()[2];
        if clip_width > width {
            return Err(Error::invalid(
                "SD3 text encoders",
                format!(
                    "the CLIP states are {clip_width} wide, more than the transformer's joint_attention_dim {width}"
                ),
            ));
        }
        let clip_states = clip_states.f_constant_pad_nd([0, width - clip_width])?;
        let batch = prompts.len() as i64;
        let t5_states = match &self.t5 {
            Some(t5) => {
                let rows =
                    prompts.iter().map(|p| Ok(Tensor::from_slice(&t5.tokenize(p)?.ids))).collect::<Result<Vec<_>>>()?;
                let ids = Tensor::f_stack(&rows, 0)?.f_to_device(self.options.device)?;
                let states = t5.encoder.forward(&ids)?;
                if states.size()[2] != width {
                    return Err(Error::invalid(
                        "text_encoder_3",
                        format!("T5 width {} differs from joint_attention_dim {width}", states.size()[2]),
                    ));
                }
                states
            }
            None => Tensor::f_zeros(
                [batch, T5_MAX_SEQUENCE_LENGTH as i64, width],
                (clip_states.kind(), clip_states.device()),
            )?,
        };
        let hidden_states = Tensor::f_cat(&[clip_states, t5_states.f_to_kind(self.options.dtype)?], 1)?;
        Ok(TextConditioning { hidden_states, text_embeds: Some(Tensor::f_cat(&pooled, -1)?) })
    }
}

/// The T5 dtype requested on the command line (`--t5-dtype bf16|fp16|fp32`).
pub fn parse_t5_dtype(given: &str) -> Result<Kind> {
    match given.to_ascii_lowercase().as_str() {
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        "fp16" | "f16" | "float16" | "half" => Ok(Kind::Half),
        "fp32" | "f32" | "float32" | "float" => Ok(Kind::Float),
        _ => Err(Error::invalid(format!("T5 dtype `{given}`"), "use bf16, fp16 or fp32")),
    }
}
