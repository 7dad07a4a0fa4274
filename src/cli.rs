//! The subcommands behind `sdscope`, as thin wrappers over the library.

use crate::cli_checks as checks;
use sdscope::denoiser::{load_denoiser, DenoiserInput};
use sdscope::extract::ExtractRequest;
use sdscope::generate::{CaptureHalves, GenerateRequest};
use sdscope::hub::resolve;
use sdscope::pipeline::{load_tokenizers, LoadOptions, Pipeline};
use sdscope::schedulers::SamplerKind;
use sdscope::similarity::explorer::Explorer;
use sdscope::similarity::{similarity_maps, Measure, Query};
use sdscope::taps::Taps;
use sdscope::xattn::{AttentionRequest, Colormap, MapQuery, Normalize, RenderMode, RenderOptions};
use sdscope::{Error, Result};
use std::path::PathBuf;
use tch::{Kind, Tensor};

pub struct ExtractArgs {
    pub model: String,
    pub image: PathBuf,
    pub positions: Vec<String>,
    pub timestep: i64,
    pub seed: i64,
    pub prompt: String,
    pub out: PathBuf,
    pub whole_pass: bool,
}

/// Flags of `sdscope bench` (defaults in [`sdscope::bench::BenchOptions`]); `sdscope bench collect` instead
/// benchmarks dataset collection ([`BenchCollectArgs`]).
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub kind: Option<BenchKind>,
    /// Where the random SD1.5-architecture pipeline, the test image and the scripts go.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Python with torch and diffusers (the reference virtualenv by default).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Benchmark this diffusers folder instead of the random SD1.5 pipeline.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Extractions per case and side (the best is compared).
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Side of the square test image.
    #[arg(long)]
    pub size: Option<i64>,
    /// Measure sdscope only.
    #[arg(long)]
    pub skip_python: bool,
}

/// What `sdscope bench` measures: extraction (without a subcommand) or collection.
#[derive(clap::Subcommand)]
pub enum BenchKind {
    /// Dataset-scale collection (SDXL, 1 step, 4 transformer-block updates) against diffusers with forward hooks.
    Collect(BenchCollectArgs),
    /// SAE training and encoding throughput against the PyTorch training loop of the same SAE.
    Sae(crate::cli_sae::BenchSaeArgs),
    /// t-SNE and UMAP quality and time against scikit-learn and umap-learn (digits, optional embeddings).
    Embed(crate::cli_embed::BenchEmbedArgs),
    /// SD3 extraction (one block with early exit, every joint block) against diffusers, SD3-Medium architecture.
    Sd3(BenchSd3Args),
}

/// Flags of `sdscope bench sd3` (defaults in [`sdscope::bench::sd3::Sd3BenchOptions`]).
#[derive(clap::Args)]
pub struct BenchSd3Args {
    /// Where the random SD3-Medium-architecture pipeline (about 12 GB), the image and the scripts go.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Python with torch and diffusers (the reference virtualenv by default).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Joint blocks of the random transformer [default: 24, SD3 Medium's].
    #[arg(long)]
    pub layers: Option<usize>,
    /// Extractions per case and side (the best is compared) [default: 2].
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Side of the square test image, a multiple of 16 [default: 512].
    #[arg(long)]
    pub size: Option<i64>,
    /// Measure sdscope only.
    #[arg(long)]
    pub skip_python: bool,
}

/// Flags of `sdscope bench collect` (defaults in [`sdscope::bench::collect::CollectBenchOptions`]).
#[derive(clap::Args)]
pub struct BenchCollectArgs {
    /// Side of the square images, a multiple of 8 [default: 256].
    #[arg(long)]
    pub size: Option<i64>,
    /// Items (prompts, seeds 0..N) per run [default: 4].
    #[arg(long)]
    pub items: Option<usize>,
    /// Batch sizes to measure, each side and batch size in a fresh process [default: 1,2,4].
    #[arg(long, value_delimiter = ',')]
    pub batches: Option<Vec<usize>>,
    /// Where the random SDXL-architecture pipeline (about 14 GB), the prompts and the collections go.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Python with torch and diffusers (the reference virtualenv by default).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Measure sdscope only.
    #[arg(long)]
    pub skip_python: bool,
}

/// `sdscope positions`: one dummy pass at SIZE×SIZE capturing every module, printing `path<TAB>shape`.
pub fn positions(model: &str, size: i64) -> Result<()> {
    if size <= 0 || size % 8 != 0 {
        return Err(Error::invalid("--size", format!("{size} must be a positive multiple of 8")));
    }
    let source = resolve(model)?;
    let denoiser = load_denoiser(&source, &LoadOptions::default())?;
    let latent = size / 8;
    if latent % denoiser.latent_multiple() != 0 {
        let multiple = 8 * denoiser.latent_multiple();
        return Err(Error::invalid("--size", format!("{size} must be a multiple of {multiple} for this model")));
    }
    let (sample, cond) = denoiser.dummy_inputs((latent, latent))?;
    let time_ids =
        Tensor::from_slice(&[size as f32, size as f32, 0.0, 0.0, size as f32, size as f32]).f_unsqueeze(0)?;
    let input = DenoiserInput {
        context: &cond.hidden_states,
        pooled: cond.text_embeds.as_ref(),
        time_ids: cond.text_embeds.as_ref().map(|_| &time_ids),
    };
    eprintln!("[sdscope] running one {size}×{size} pass to measure output shapes");
    let mut taps = Taps::capture_all();
    let _guard = tch::no_grad_guard();
    denoiser.forward(&sample, 50.0, &input, &mut taps)?;
    let captured = taps.into_captured();
    for p in denoiser.positions() {
        let shape = captured.get(p).map(|t| format!("{:?}", &t.size()[1..])).unwrap_or_else(|| "?".into());
        println!("{p}\t{shape}");
    }
    Ok(())
}

/// `sdscope tokens`: ids and token strings per tokenizer.
pub fn tokens(model: &str, prompt: &str, json: bool) -> Result<()> {
    let source = resolve(model)?;
    let tokenizers = load_tokenizers(&source.root)?;
    let mut encodings = tokenizers.iter().map(|t| t.encode(prompt)).collect::<Result<Vec<_>>>()?;
    let mut padded_to: Vec<usize> = tokenizers.iter().map(|t| t.max_len()).collect();
    // SD3's T5 tokenizer (`tokenizer_3/`), when the model has one.
    let t5_dir = source.root.join("tokenizer_3");
    if t5_dir.join("tokenizer.json").is_file() || t5_dir.join("spiece.model").is_file() {
        let t5 = sdscope::tokenizer::T5Tokenizer::from_dir(&t5_dir)?;
        encodings.push(t5.encode(prompt, sdscope::sd3_text::T5_MAX_SEQUENCE_LENGTH)?);
        padded_to.push(sdscope::sd3_text::T5_MAX_SEQUENCE_LENGTH);
    }
    if json {
        let out: Vec<_> = encodings.iter().map(|e| serde_json::json!({"ids": e.ids, "tokens": e.tokens})).collect();
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    for (i, (e, max_len)) in encodings.iter().zip(&padded_to).enumerate() {
        println!("tokenizer {}: {} tokens (incl. special tokens), padded to {max_len}", i + 1, e.length);
        for (j, (id, tok)) in e.ids.iter().zip(&e.tokens).enumerate().take(e.length) {
            println!("  {j:>3}  {id:>6}  {tok}");
        }
        if !e.truncated_words.is_empty() {
            println!("  truncated: {}", e.truncated_words.join(" "));
        }
    }
    Ok(())
}

/// `sdscope extract`: one image, one timestep; one float32 tensor per position, keyed as given.
pub fn extract(args: &ExtractArgs) -> Result<()> {
    checks::inputs_exist(&[&args.image])?;
    checks::outputs_valid(&[("--out", Some(&args.out))])?;
    let pipe = Pipeline::load(&args.model)?;
    let canonical = pipe.resolve_positions(&args.positions)?;
    checks::create_parents(&[Some(&args.out)])?;
    let request = ExtractRequest::new(canonical.clone())
        .timestep(args.timestep)
        .seed(args.seed)
        .prompt(&args.prompt)
        .whole_pass(args.whole_pass);
    let reprs = pipe.extract(&request, &[&args.image])?;
    let mut tensors = Vec::new();
    for (given, position) in args.positions.iter().zip(&canonical) {
        tensors.push((given.clone(), reprs.image(position, 0)?.f_get(0)?));
    }
    sdscope::tensor_io::save(&args.out, &tensors, None)?;
    eprintln!("[sdscope] wrote {} positions to {}", tensors.len(), args.out.display());
    Ok(())
}

/// `sdscope bench`: see [`sdscope::bench::run`].
pub fn bench(args: &BenchArgs) -> Result<()> {
    match &args.kind {
        Some(BenchKind::Collect(collect)) => return bench_collect(collect),
        Some(BenchKind::Sae(sae)) => return crate::cli_sae::bench_sae(sae),
        Some(BenchKind::Embed(embed)) => return crate::cli_embed::bench_embed(embed),
        Some(BenchKind::Sd3(sd3)) => return bench_sd3(sd3),
        None => {}
    }
    let mut opts = sdscope::bench::BenchOptions::default();
    if let Some(dir) = &args.work_dir {
        opts.work_dir = dir.clone();
    }
    if let Some(python) = &args.python {
        opts.python = python.clone();
    }
    opts.model = args.model.clone();
    if let Some(repeats) = args.repeats {
        opts.repeats = repeats;
    }
    if let Some(size) = args.size {
        opts.size = size;
    }
    opts.skip_python = args.skip_python;
    sdscope::bench::run(&opts)
}

/// `sdscope bench sd3`: see [`sdscope::bench::sd3::run`].
fn bench_sd3(args: &BenchSd3Args) -> Result<()> {
    let mut opts = sdscope::bench::sd3::Sd3BenchOptions::default();
    if let Some(dir) = &args.work_dir {
        opts.work_dir = dir.clone();
    }
    if let Some(python) = &args.python {
        opts.python = python.clone();
    }
    opts.layers = args.layers.unwrap_or(opts.layers);
    opts.repeats = args.repeats.unwrap_or(opts.repeats);
    opts.size = args.size.unwrap_or(opts.size);
    opts.skip_python = args.skip_python;
    sdscope::bench::sd3::run(&opts)
}

/// `sdscope bench collect`: see [`sdscope::bench::collect::run`].
fn bench_collect(args: &BenchCollectArgs) -> Result<()> {
    let mut opts = sdscope::bench::collect::CollectBenchOptions::default();
    if let Some(dir) = &args.work_dir {
        opts.work_dir = dir.clone();
    }
    if let Some(python) = &args.python {
        opts.python = python.clone();
    }
    if let Some(size) = args.size {
        opts.size = size;
    }
    if let Some(items) = args.items {
        opts.items = items;
    }
    if let Some(batches) = &args.batches {
        opts.batches = batches.clone();
    }
    opts.skip_python = args.skip_python;
    sdscope::bench::collect::run(&opts)
}

/// Flags of `sdscope generate`; steps, guidance and size default to the model's (see
/// [`Pipeline::generation_defaults`]).
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// A diffusers folder, a hub repo id, or an alias (sd15, sdxl-turbo, …).
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub prompt: String,
    /// Negative prompt. Leaving it out is not the same as `""` for SDXL (zero unconditional embeddings).
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Inference steps (model default: SD1.5 50, SDXL 40, Turbo 4, …).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale; at most 1 turns guidance off.
    #[arg(long)]
    pub guidance: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Width in pixels, a multiple of 8 (default: the model's native size).
    #[arg(long)]
    pub width: Option<i64>,
    /// Height in pixels, a multiple of 8.
    #[arg(long)]
    pub height: Option<i64>,
    /// ddim, pndm, euler or euler_ancestral (default: the model's scheduler config).
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Where to write the PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the final latents (before VAE decode) as safetensors under the key `latents`.
    #[arg(long)]
    pub latents_out: Option<PathBuf>,
    /// Comma-separated positions to capture at every step.
    #[arg(long, value_delimiter = ',')]
    pub extract: Vec<String>,
    /// Where the per-step representations go: one float32 tensor [steps, ..] per position, keyed as given.
    #[arg(long)]
    pub reprs_out: Option<PathBuf>,
    /// Capture both halves of a guided batch (keys `P` and `P@uncond`), not only the conditional one.
    #[arg(long)]
    pub both_halves: bool,
    #[command(flatten)]
    pub sae: crate::cli_sae::GenerateSaeArgs,
}

/// `sdscope generate`: text to image, optionally with the final latents and per-step representations.
pub fn generate(args: &GenerateArgs) -> Result<()> {
    if !args.extract.is_empty() && args.reprs_out.is_none() {
        return Err(Error::invalid("--extract", "needs --reprs-out FILE.safetensors to write the captures to"));
    }
    if args.reprs_out.is_some() && args.extract.is_empty() {
        return Err(Error::invalid("--reprs-out", "needs --extract P1,P2 (the positions to capture)"));
    }
    let scheduler = args.scheduler.as_deref().map(SamplerKind::parse).transpose()?;
    let outputs = [Some(args.out.as_path()), args.latents_out.as_deref(), args.reprs_out.as_deref()];
    checks::outputs_valid(&[("--out", outputs[0]), ("--latents-out", outputs[1]), ("--reprs-out", outputs[2])])?;
    let feature_edit = args.sae.edit()?;
    let pipe = Pipeline::load(&args.model)?;
    let canonical = pipe.resolve_positions(&args.extract)?;
    checks::create_parents(&outputs)?;
    let mut request = GenerateRequest::new(&args.prompt).seed(args.seed).capture(canonical.clone());
    request.negative_prompt = args.negative_prompt.clone();
    request.steps = args.steps;
    request.guidance = args.guidance;
    request.width = args.width;
    request.height = args.height;
    request.scheduler = scheduler;
    if args.both_halves {
        request = request.capture_halves(CaptureHalves::Both);
    }
    let defaults = pipe.generation_defaults();
    eprintln!(
        "[sdscope] generating {}×{}, {} steps, guidance {}, seed {}",
        request.width.unwrap_or(defaults.width),
        request.height.unwrap_or(defaults.height),
        request.steps.unwrap_or(defaults.steps),
        request.guidance.unwrap_or(defaults.guidance),
        request.seed
    );
    let out = match feature_edit {
        Some((sae, edit)) => crate::cli_sae::generate_with_feature(&pipe, &request, &sae, edit)?,
        None => pipe.generate(&request)?,
    };
    out.save_png(&args.out)?;
    eprintln!("[sdscope] wrote {}", args.out.display());
    if let Some(path) = &args.latents_out {
        out.save_latents(path)?;
        eprintln!("[sdscope] wrote final latents to {}", path.display());
    }
    if let (Some(path), Some(reprs)) = (&args.reprs_out, &out.representations) {
        let mut tensors = Vec::new();
        for (index, info) in reprs.images().iter().enumerate() {
            let suffix = if info.source.starts_with("generated (unconditional)") { "@uncond" } else { "" };
            for (given, position) in args.extract.iter().zip(&canonical) {
                tensors.push((format!("{given}{suffix}"), reprs.image(position, index)?.f_to_kind(Kind::Float)?));
            }
        }
        let timesteps: Vec<String> = out.timesteps.iter().map(|t| t.to_string()).collect();
        let metadata = [("timesteps".to_string(), timesteps.join(","))].into_iter().collect();
        sdscope::tensor_io::save(path, &tensors, Some(metadata))?;
        eprintln!("[sdscope] wrote {} per-step captures to {}", tensors.len(), path.display());
    }
    Ok(())
}

/// Flags of `sdscope xattn`.
#[derive(clap::Args)]
pub struct XattnArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub image: PathBuf,
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Noise timestep in 0..=999.
    #[arg(long, default_value_t = 50)]
    pub timestep: i64,
    #[arg(long, default_value_t = 42)]
    pub seed: i64,
    /// Where the maps go: one float32 [77, h, w] per cross-attention layer, keyed by its path (SD3: [333, h, w]
    /// per joint attention layer, the CLIP positions 0..77 then the T5 positions).
    #[arg(long)]
    pub out: PathBuf,
    /// SD3: take --word / --tokens from one part of the joint text sequence only: clip or t5.
    #[arg(long)]
    pub segment: Option<String>,
    /// Token positions to render, summed (1 = first token after BOS, as the A1111 extension counts).
    #[arg(long, value_delimiter = ',', conflicts_with = "word")]
    pub tokens: Vec<usize>,
    /// A word to render: every sub-token of every occurrence, averaged (DAAM).
    #[arg(long)]
    pub word: Option<String>,
    /// Render the aggregated map (all layers, bicubic to the image size) of --tokens or --word as PNG.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// heat, overlay, masked or grey.
    #[arg(long, default_value = "heat")]
    pub mode: String,
    /// jet, viridis, magma, gray or greys (heat and overlay).
    #[arg(long, default_value = "jet")]
    pub colormap: String,
}

/// `sdscope xattn`: cross-attention maps of an image for a prompt.
pub fn xattn(args: &XattnArgs) -> Result<()> {
    let mut selection = match (&args.word, args.tokens.is_empty()) {
        (Some(word), _) => Some(MapQuery::word(word).normalize(Normalize::MinMax)),
        (None, false) => Some(MapQuery::tokens(&args.tokens).normalize(Normalize::Max)),
        (None, true) => None,
    };
    if let Some(segment) = &args.segment {
        let segment = sdscope::xattn::TokenSegment::parse(segment)?;
        let query = selection.as_mut().ok_or_else(|| Error::invalid("--segment", "needs --tokens or --word"))?;
        query.tokens = sdscope::xattn::TokenSelection::Within(segment, Box::new(query.tokens.clone()));
    }
    if args.png.is_some() && selection.is_none() {
        return Err(Error::invalid("--png", "needs --tokens I,J or --word W (what to render)"));
    }
    let options = RenderOptions {
        colormap: Colormap::parse(&args.colormap)?,
        ..RenderOptions::mode(RenderMode::parse(&args.mode)?)
    };
    checks::inputs_exist(&[&args.image])?;
    checks::outputs_valid(&[("--out", Some(&args.out)), ("--png", args.png.as_deref())])?;
    // Token indices against the tokenizer's length, before the model is loaded.
    let source = resolve(&args.model)?;
    let mut max_len = load_tokenizers(&source.root)?.first().map(|t| t.max_len()).unwrap_or(77);
    if sdscope::denoiser::denoiser_folder(&source.root) == "transformer" {
        max_len += sdscope::sd3_text::T5_MAX_SEQUENCE_LENGTH; // SD3's joint sequence: CLIP, then T5
    }
    if let Some(bad) = args.tokens.iter().find(|&&t| t >= max_len) {
        return Err(Error::invalid(
            format!("--tokens {bad}"),
            format!("token indices are 0..{max_len} (0 is BOS, 1 the first prompt token; `sdscope tokens` lists them)"),
        ));
    }
    let pipe = Pipeline::load(&args.model)?;
    let request = AttentionRequest::new(&args.prompt).timestep(args.timestep).seed(args.seed);
    let maps = pipe.cross_attention(&args.image, &request)?;
    eprint!("{}", maps.tokens.to_text());
    // The selection (a word may not be in the prompt) is checked before anything is written.
    let rendered = match &selection {
        Some(query) if args.png.is_some() => {
            let map = maps.map(query)?;
            Some((sdscope::xattn::render(&map, maps.image.as_ref(), &options)?, maps.tokens.label(&query.tokens)))
        }
        _ => None,
    };
    let tensors = maps.layers().iter().map(|l| Ok((l.clone(), maps.head_mean(l, 0)?))).collect::<Result<Vec<_>>>()?;
    checks::create_parents(&[Some(&args.out), args.png.as_deref()])?;
    sdscope::tensor_io::save(&args.out, &tensors, None)?;
    eprintln!("[sdscope] wrote {} cross-attention layers to {}", tensors.len(), args.out.display());
    if let (Some(png), Some((picture, label))) = (&args.png, rendered) {
        picture.save(png).map_err(|e| Error::invalid(format!("writing {}", png.display()), e.to_string()))?;
        eprintln!("[sdscope] wrote the map of {label} to {}", png.display());
    }
    Ok(())
}

/// Flags of `sdscope similarity`.
#[derive(clap::Args)]
pub struct SimilarityArgs {
    #[arg(long)]
    pub model: String,
    /// Comma-separated image files.
    #[arg(long, value_delimiter = ',', required = true)]
    pub images: Vec<PathBuf>,
    #[arg(long)]
    pub position: String,
    #[arg(long, default_value_t = 50)]
    pub timestep: i64,
    #[arg(long, default_value_t = 42)]
    pub seed: i64,
    /// The query token: IMAGE_INDEX:ROW,COL (0-based; ROW, COL index that image's grid at the position).
    #[arg(long)]
    pub query: String,
    /// cosine, cosine-centered, dot-product, manhattan, euclidean, chebyshev or rel-l2-norm.
    #[arg(long, default_value = "cosine")]
    pub measure: String,
    /// A PNG grid of the maps over the images (query marked in green, best matches in white).
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// One float32 map [h, w] per image, keyed "0", "1", … in the order given.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn parse_query(text: &str) -> Result<Query> {
    let bad = || Error::invalid(format!("--query {text}"), "expected IMAGE_INDEX:ROW,COL, e.g. 0:12,20");
    let (image, rest) = text.split_once(':').ok_or_else(bad)?;
    let (row, col) = rest.split_once(',').ok_or_else(bad)?;
    Ok(Query {
        image: image.trim().parse().map_err(|_| bad())?,
        row: row.trim().parse().map_err(|_| bad())?,
        col: col.trim().parse().map_err(|_| bad())?,
    })
}

/// `sdscope similarity`: one query token against every token of each image.
pub fn similarity(args: &SimilarityArgs) -> Result<()> {
    let query = parse_query(&args.query)?;
    let measure = Measure::parse(&args.measure)?;
    if args.png.is_none() && args.out.is_none() {
        return Err(Error::invalid("similarity", "give --out FILE.safetensors and/or --png OUT.png"));
    }
    checks::inputs_exist(&args.images)?;
    checks::outputs_valid(&[("--out", args.out.as_deref()), ("--png", args.png.as_deref())])?;
    if query.image >= args.images.len() {
        return Err(Error::invalid(
            format!("--query {}", args.query),
            format!(
                "image index {} is out of range: {} images given (0..{})",
                query.image,
                args.images.len(),
                args.images.len()
            ),
        ));
    }
    let pipe = Pipeline::load(&args.model)?;
    let position = pipe.resolve_positions(&[args.position.as_str()])?.remove(0);
    checks::create_parents(&[args.out.as_deref(), args.png.as_deref()])?;
    let request = ExtractRequest::new([position.clone()]).timestep(args.timestep).seed(args.seed);
    let mut grids = Vec::new();
    let mut pictures = Vec::new();
    for path in &args.images {
        // Each image on its own, exactly as `sdscope extract` does it.
        let reprs = pipe.extract(&request, &[path])?;
        grids.push(reprs.image(&position, 0)?.f_get(0)?);
        pictures.push(sdscope::image_io::load_image(path, 8)?);
    }
    let maps = similarity_maps(&grids, query, measure)?;
    for (i, m) in maps.iter().enumerate() {
        eprintln!(
            "[sdscope] image {i} ({}): {:?} grid, mean {:.4} ± {:.4}, best match {:?}",
            args.images[i].display(),
            m.map.size(),
            m.mean,
            m.std,
            m.best
        );
    }
    if let Some(out) = &args.out {
        let tensors: Vec<(String, Tensor)> =
            maps.iter().enumerate().map(|(i, m)| (i.to_string(), m.map.shallow_clone())).collect();
        sdscope::tensor_io::save(out, &tensors, None)?;
        eprintln!("[sdscope] wrote {} maps to {}", tensors.len(), out.display());
    }
    if let Some(png) = &args.png {
        let images = pictures
            .iter()
            .map(|p| sdscope::models::vae_decoder::to_rgb8(&p.pixels.f_get(0)?))
            .collect::<Result<Vec<_>>>()?;
        let grid = sdscope::similarity::render_maps(&maps, &images, query)?;
        grid.save(png)?;
        eprintln!("[sdscope] wrote {}", png.display());
    }
    Ok(())
}

/// Flags of `sdscope explorer`.
#[derive(clap::Args)]
pub struct ExplorerArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long, value_delimiter = ',', required = true)]
    pub images: Vec<PathBuf>,
    /// Positions to offer (default: up_blocks[1] for one text encoder, up_blocks[0] for SDXL).
    #[arg(long, value_delimiter = ',')]
    pub positions: Vec<String>,
    /// Noise steps to offer.
    #[arg(long, value_delimiter = ',', default_values_t = [0i64, 20, 50, 100, 200, 500, 999])]
    pub timesteps: Vec<i64>,
    #[arg(long, default_value_t = 42)]
    pub seed: i64,
    /// Where the standalone page goes.
    #[arg(long)]
    pub html: PathBuf,
}

/// `sdscope explorer`: the hover explorer as a standalone HTML page.
pub fn explorer(args: &ExplorerArgs) -> Result<()> {
    checks::inputs_exist(&args.images)?;
    checks::outputs_valid(&[("--html", Some(&args.html))])?;
    let pipe = Pipeline::load(&args.model)?;
    let positions = if args.positions.is_empty() { vec![pipe.default_position()] } else { args.positions.clone() };
    let request = ExtractRequest::new(positions).timesteps(&args.timesteps).seed(args.seed);
    pipe.resolve_positions(&request.positions)?;
    checks::create_parents(&[Some(&args.html)])?;
    let reprs = pipe.extract(&request, &args.images)?;
    let pictures = args
        .images
        .iter()
        .map(|p| sdscope::models::vae_decoder::to_rgb8(&sdscope::image_io::load_image(p, 8)?.pixels.f_get(0)?))
        .collect::<Result<Vec<_>>>()?;
    let explorer = Explorer::new(&reprs, &pictures)?;
    explorer.save_html(&args.html)?;
    eprintln!(
        "[sdscope] wrote {} ({:.1} MB of float16 representations)",
        args.html.display(),
        explorer.data_bytes() as f64 / 1e6
    );
    Ok(())
}
