//! The `sdscope` command line: the engine's batch interface.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;
mod cli_checks;
mod cli_collect;
mod cli_embed;
mod cli_map;
mod cli_sae;

#[derive(Parser)]
#[command(
    name = "sdscope",
    version,
    about = "Look inside Stable Diffusion models: positions, tokens, representations, generation."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// SD3: do not load the T5 text encoder (its part of the text sequence is zeros, as in diffusers).
    #[arg(long, global = true)]
    no_t5: bool,
    /// SD3: keep the T5 encoder in this dtype (bf16, fp16 or fp32) while the rest is float32.
    #[arg(long, global = true, value_name = "DTYPE")]
    t5_dtype: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// List every valid U-Net position with its output shape (batch dimension removed) for a SIZE×SIZE input.
    Positions {
        /// A diffusers folder, a hub repo id, or an alias (sd15, sdxl-turbo, …).
        #[arg(long)]
        model: String,
        /// Image side in pixels the shapes are computed for.
        #[arg(long, default_value_t = 512)]
        size: i64,
    },
    /// Tokenize a prompt with each of the model's tokenizers.
    Tokens {
        #[arg(long)]
        model: String,
        #[arg(long)]
        prompt: String,
        /// Print a JSON array, one {"ids", "tokens"} object per tokenizer.
        #[arg(long)]
        json: bool,
    },
    /// Extract representations of one image at the given positions and write them as safetensors.
    Extract {
        #[arg(long)]
        model: String,
        #[arg(long)]
        image: PathBuf,
        /// Comma-separated positions, e.g. `mid_block,up_blocks[1]`.
        #[arg(long, value_delimiter = ',', required = true)]
        positions: Vec<String>,
        /// Noise timestep in 0..=999.
        #[arg(long, default_value_t = 50)]
        timestep: i64,
        #[arg(long, default_value_t = 42)]
        seed: i64,
        #[arg(long, default_value = "")]
        prompt: String,
        #[arg(long)]
        out: PathBuf,
        /// Run the whole U-Net instead of stopping after the last requested position.
        #[arg(long)]
        whole_pass: bool,
    },
    /// Generate an image from a prompt (diffusers-identical), optionally capturing positions at every step.
    Generate(cli::GenerateArgs),
    /// Cross-attention maps of an image for a prompt, per layer; optionally render tokens or a word as PNG.
    Xattn(cli::XattnArgs),
    /// Similarity of one query token to every token of each image, as maps (safetensors and/or PNG).
    Similarity(cli::SimilarityArgs),
    /// The hover similarity explorer as a standalone, offline HTML page.
    Explorer(cli::ExplorerArgs),
    /// Collect representations over a dataset of prompts or images: batched, sharded, resumable (Slurm arrays).
    Collect(Box<cli_collect::CollectArgs>),
    /// Image (and text) embeddings: CLIP features, or U-Net representations pooled over space.
    Embed(Box<cli_embed::EmbedArgs>),
    /// A 2-D map (t-SNE, PCA) of embeddings, optionally with its quality.
    Project(Box<cli_embed::ProjectArgs>),
    /// The embedding map: a folder of images embedded with CLIP, projected to 2-D, as an interactive offline page.
    Map(Box<cli_map::MapArgs>),
    /// A map of random clusters with generated thumbnails, for timing the page in a browser.
    #[command(hide = true)]
    MapSynthetic(Box<cli_map::MapSyntheticArgs>),
    /// Sparse autoencoders on collected representations: train, encode, eval, top.
    Sae(cli_sae::SaeArgs),
    /// Time extraction (SD1.5) or, with `collect`, dataset collection (SDXL) against diffusers, random weights.
    Bench(cli::BenchArgs),
    #[command(hide = true)]
    BenchWorker(sdscope::bench::WorkerArgs),
    #[command(hide = true)]
    BenchCollectWorker(sdscope::bench::collect::CollectWorkerArgs),
    /// An explorer page over random representations, for timing hover updates in a browser.
    #[command(hide = true)]
    ExplorerSynthetic {
        #[arg(long)]
        html: PathBuf,
        #[arg(long, default_value_t = 4)]
        images: usize,
        #[arg(long, default_value_t = 32)]
        side: i64,
        #[arg(long, default_value_t = 1280)]
        channels: i64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every command builds its pipeline from `LoadOptions::default()`, which reads these.
    if cli.no_t5 {
        std::env::set_var("SDSCOPE_NO_T5", "1");
    }
    if let Some(dtype) = &cli.t5_dtype {
        if let Err(e) = sdscope::sd3_text::parse_t5_dtype(dtype) {
            eprintln!("error: --t5-dtype: {e}");
            return ExitCode::from(2);
        }
        std::env::set_var("SDSCOPE_T5_DTYPE", dtype);
    }
    let result = match cli.command {
        Command::Positions { model, size } => cli::positions(&model, size),
        Command::Tokens { model, prompt, json } => cli::tokens(&model, &prompt, json),
        Command::Extract { model, image, positions, timestep, seed, prompt, out, whole_pass } => {
            cli::extract(&cli::ExtractArgs { model, image, positions, timestep, seed, prompt, out, whole_pass })
        }
        Command::Generate(args) => cli::generate(&args),
        Command::Xattn(args) => cli::xattn(&args),
        Command::Similarity(args) => cli::similarity(&args),
        Command::Explorer(args) => cli::explorer(&args),
        Command::Collect(args) => cli_collect::collect(&args),
        Command::Map(args) => cli_map::map(&args),
        Command::MapSynthetic(args) => cli_map::map_synthetic(&args),
        Command::Sae(args) => cli_sae::sae(&args),
        Command::Embed(args) => cli_embed::embed(&args),
        Command::Project(args) => cli_embed::project(&args),
        Command::Bench(args) => cli::bench(&args),
        Command::BenchWorker(args) => sdscope::bench::worker(&args),
        Command::BenchCollectWorker(args) => sdscope::bench::collect::worker(&args),
        Command::ExplorerSynthetic { html, images, side, channels } => {
            sdscope::similarity::explorer::Explorer::synthetic(images, side, side, channels, 0)
                .and_then(|e| e.save_html(&html))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
