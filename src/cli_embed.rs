//! `sdscope embed`: CLIP image (and text) embeddings, or U-Net representations pooled over space.

use crate::cli_checks as checks;
use sdscope::collection::shard_io::write_safetensors;
use sdscope::collection::sources::list_images;
use sdscope::embed::ClipModel;
use sdscope::extract::ExtractRequest;
use sdscope::hub::find_alias;
use sdscope::pipeline::Pipeline;
use sdscope::{Error, Result};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

#[derive(clap::Args)]
pub struct EmbedArgs {
    /// A CLIP model (folder, hub repo id, alias such as clip-vit-base-patch32) or, with --position, a Stable
    /// Diffusion model.
    #[arg(long)]
    pub model: String,
    /// Comma-separated image files, embedded in this order.
    #[arg(long, value_delimiter = ',', conflicts_with = "dir")]
    pub images: Vec<PathBuf>,
    /// A folder of images (searched recursively), embedded in sorted path order.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// U-Net positions (comma-separated) whose spatial means, concatenated, are the embedding (SD models).
    #[arg(long, value_delimiter = ',')]
    pub position: Vec<String>,
    /// Comma-separated prompts to embed with the text tower (CLIP models).
    #[arg(long, value_delimiter = ',')]
    pub text: Vec<String>,
    /// Images per forward pass (CLIP).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Noise timestep for U-Net embeddings.
    #[arg(long, default_value_t = 50)]
    pub timestep: i64,
    #[arg(long, default_value_t = 42)]
    pub seed: i64,
    #[arg(long)]
    pub out: PathBuf,
}

fn is_pipeline(model: &str) -> bool {
    Path::new(model).join("model_index.json").is_file() || find_alias(model).is_some()
}

pub fn embed(a: &EmbedArgs) -> Result<()> {
    checks::outputs_valid(&[("--out", Some(a.out.as_path()))])?;
    let images: Vec<PathBuf> = match (&a.dir, a.images.is_empty()) {
        (Some(dir), true) => list_images(dir, None)?.into_iter().map(|i| i.path).collect(),
        (None, false) => {
            checks::inputs_exist(&a.images)?;
            a.images.clone()
        }
        (None, true) => return Err(Error::invalid("embed", "give --images A,B,.. or --dir DIR")),
        (Some(_), false) => return Err(Error::invalid("embed", "give --images or --dir, not both")),
    };
    let mut tensors: Vec<(&str, Tensor)> = Vec::new();
    let meta = if is_pipeline(&a.model) {
        if a.position.is_empty() {
            return Err(Error::invalid(
                "--position",
                "a Stable Diffusion model embeds at U-Net positions: give --position P",
            ));
        }
        if !a.text.is_empty() {
            return Err(Error::invalid("--text", "text embeddings need a CLIP model"));
        }
        let pipe = Pipeline::load(&a.model)?;
        let positions = pipe.resolve_positions(&a.position)?;
        checks::create_parents(&[Some(a.out.as_path())])?;
        let request = ExtractRequest::new(positions.clone()).timestep(a.timestep).seed(a.seed).progress(false);
        let mut rows = Vec::new();
        for (i, image) in images.iter().enumerate() {
            let reprs = pipe.extract(&request, &[image])?.spatial_mean()?;
            let parts =
                positions.iter().map(|p| Ok(reprs.image(p, 0)?.f_flatten(0, -1)?)).collect::<Result<Vec<_>>>()?;
            rows.push(Tensor::f_cat(&parts, 0)?);
            eprintln!("[sdscope] embedded {}/{} images", i + 1, images.len());
        }
        tensors.push(("image_embeds", Tensor::f_stack(&rows, 0)?.f_to_kind(Kind::Float)?));
        serde_json::json!({ "model": a.model, "positions": positions, "timestep": a.timestep, "seed": a.seed,
            "pooling": "spatial mean, positions concatenated", "images": paths_json(&images) })
    } else {
        if !a.position.is_empty() {
            return Err(Error::invalid("--position", "U-Net positions need a Stable Diffusion model, not CLIP"));
        }
        let clip = ClipModel::load_with(&a.model, sdscope::pipeline::LoadOptions::default())?;
        checks::create_parents(&[Some(a.out.as_path())])?;
        tensors.push(("image_embeds", clip.image_embeds(&images, a.batch, true)?));
        if !a.text.is_empty() {
            let prompts: Vec<&str> = a.text.iter().map(|s| s.as_str()).collect();
            tensors.push(("text_embeds", clip.text_embeds(&prompts)?));
        }
        serde_json::json!({ "model": a.model, "features": "CLIP get_image_features / get_text_features (not normalised)",
            "images": paths_json(&images), "text": a.text })
    };
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (*k, t)).collect();
    write_safetensors(&a.out, &refs, &meta)?;
    eprintln!(
        "[sdscope] wrote {} to {}",
        refs.iter().map(|(k, t)| format!("{k} {:?}", t.size())).collect::<Vec<_>>().join(", "),
        a.out.display()
    );
    Ok(())
}

fn paths_json(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}
