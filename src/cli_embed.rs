//! `sdscope embed`: CLIP image (and text) embeddings, or U-Net representations pooled over space; `sdscope
//! project`: 2-D maps of them.

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

#[derive(clap::Args)]
pub struct ProjectArgs {
    /// A safetensors file of embeddings (`sdscope embed --out`).
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long, default_value = "image_embeds")]
    pub key: String,
    /// tsne, umap or pca.
    #[arg(long, default_value = "tsne")]
    pub method: String,
    #[arg(long, default_value_t = 30.0)]
    pub perplexity: f64,
    /// UMAP's n_neighbors.
    #[arg(long, default_value_t = 15)]
    pub neighbors: usize,
    /// UMAP's min_dist.
    #[arg(long, default_value_t = 0.1)]
    pub min_dist: f64,
    /// cosine (default: CLIP features compare by angle) or euclidean.
    #[arg(long, default_value = "cosine")]
    pub metric: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// t-SNE iterations.
    #[arg(long, default_value_t = 1000)]
    pub max_iter: usize,
    #[arg(long)]
    pub out: PathBuf,
    /// Print {"trustworthiness": .., "knn_overlap": .., "k": 15} on stdout: Euclidean in the input space
    /// (scikit-learn's default definition); with --metric cosine also {"cosine": {..}} measured by angle.
    #[arg(long)]
    pub quality: bool,
}

pub fn project(a: &ProjectArgs) -> Result<()> {
    use sdscope::project::{neighbourhood_quality, project, Method, Metric, ProjectOptions, TsneOptions, UmapOptions};
    checks::inputs_exist(&[a.input.as_path()])?;
    checks::outputs_valid(&[("--out", Some(a.out.as_path()))])?;
    let options = ProjectOptions {
        method: Method::parse(&a.method)?,
        metric: Metric::parse(&a.metric)?,
        tsne: TsneOptions { perplexity: a.perplexity, seed: a.seed, max_iter: a.max_iter, ..TsneOptions::default() },
        umap: UmapOptions { n_neighbors: a.neighbors, min_dist: a.min_dist, seed: a.seed, ..Default::default() },
    };
    let (mut tensors, _) = sdscope::tensor_io::load(&a.input)?;
    let x = tensors.remove(&a.key).ok_or_else(|| {
        let mut keys: Vec<String> = tensors.keys().cloned().collect();
        keys.sort();
        Error::invalid(
            format!("--key {}", a.key),
            format!("not in {}; it holds: {}", a.input.display(), keys.join(", ")),
        )
    })?;
    if x.dim() != 2 {
        return Err(Error::Shape {
            context: "--input".into(),
            why: format!("`{}` must be [N, D], got {:?}", a.key, x.size()),
        });
    }
    let start = std::time::Instant::now();
    let xy = project(&x, &options)?;
    eprintln!("[sdscope] {} of {} points in {:.1} s", a.method, x.size()[0], start.elapsed().as_secs_f64());
    checks::create_parents(&[Some(a.out.as_path())])?;
    let meta = serde_json::json!({ "input": a.input.display().to_string(), "key": a.key, "method": a.method,
        "metric": a.metric, "perplexity": a.perplexity, "seed": a.seed });
    write_safetensors(&a.out, &[("xy", &xy)], &meta)?;
    if a.quality {
        let k = 15.min((x.size()[0] as usize).saturating_sub(1) / 2).max(1);
        let (trust, overlap) = neighbourhood_quality(&x, &xy, k)?;
        let mut q = serde_json::json!({ "trustworthiness": trust, "knn_overlap": overlap, "k": k });
        if options.metric == Metric::Cosine {
            let unit = Metric::Cosine.prepare(&x)?; // unit rows: their Euclidean order is the cosine order
            let (trust, overlap) = neighbourhood_quality(&unit, &xy, k)?;
            q["cosine"] = serde_json::json!({ "trustworthiness": trust, "knn_overlap": overlap });
        }
        println!("{q}");
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct BenchEmbedArgs {
    /// Embeddings to map besides digits (e.g. `sdscope embed --out` of real images with a real CLIP).
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    #[arg(long, default_value = "image_embeds")]
    pub key: String,
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Python with scikit-learn and umap-learn (the analysis virtualenv by default).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// `sdscope bench embed`: see [`sdscope::bench::embed::run`].
pub fn bench_embed(a: &BenchEmbedArgs) -> Result<()> {
    let mut o = sdscope::bench::embed::EmbedBenchOptions {
        embeddings: a.embeddings.clone().map(|p| (p, a.key.clone())),
        threads: a.threads,
        ..Default::default()
    };
    if let Some(dir) = &a.work_dir {
        o.work_dir = dir.clone();
    }
    if let Some(python) = &a.python {
        o.python = python.clone();
    }
    sdscope::bench::embed::run(&o)
}
