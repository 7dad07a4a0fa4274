#!/usr/bin/env python3
"""An SDXL-architecture diffusers pipeline with random weights, for `sdscope bench collect`.

usage: python tests/bench/make_random_sdxl.py OUTDIR TOKENIZER_DIR TOKENIZER_2_DIR

The component configs below are those of stabilityai/stable-diffusion-xl-base-1.0 (a U-Net of 2.6B parameters,
the AutoencoderKL with 4 levels, CLIP ViT-L/14's and OpenCLIP ViT-bigG/14's text towers), with the scheduler of
stabilityai/sdxl-turbo (Euler ancestral, trailing timesteps); only the weights are random (seeded, PyTorch's and
transformers' default initialisation). The tokenizer folders (vocab.json, merges.txt, e.g. the sdxl test fixture's
`tokenizer/` and `tokenizer_2/`) are copied as they are. Everything is saved as float32 safetensors, about 14 GB,
one component at a time (the U-Net in 2 GB shards) so that memory stays near the U-Net's size.

The pipeline is written to OUTDIR.tmp and renamed to OUTDIR when complete; OUTDIR/.complete then holds a hash of
this script, and a later run with the same script returns at once. Concurrent runs wait on OUTDIR.lock.
"""

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.dont_write_bytecode = True

T0 = time.time()
NEEDED_BYTES = 16 * 10**9  # 14 GB of weights and some room

# stabilityai/stable-diffusion-xl-base-1.0, unet/config.json (keys diffusers 0.42 fills with the same defaults
# omitted).
UNET = dict(
    act_fn="silu",
    addition_embed_type="text_time",
    addition_embed_type_num_heads=64,
    addition_time_embed_dim=256,
    attention_head_dim=(5, 10, 20),
    block_out_channels=(320, 640, 1280),
    center_input_sample=False,
    cross_attention_dim=2048,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    mid_block_type="UNetMidBlock2DCrossAttn",
    norm_eps=1e-5,
    norm_num_groups=32,
    out_channels=4,
    projection_class_embeddings_input_dim=2816,
    resnet_time_scale_shift="default",
    sample_size=128,
    time_embedding_type="positional",
    transformer_layers_per_block=(1, 2, 10),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    use_linear_projection=True,
)

# vae/config.json
VAE = dict(
    act_fn="silu",
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    force_upcast=True,
    in_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    out_channels=3,
    sample_size=1024,
    scaling_factor=0.13025,
    up_block_types=("UpDecoderBlock2D",) * 4,
)

# text_encoder/config.json (CLIP ViT-L/14 text tower)
TEXT_ENCODER = dict(
    attention_dropout=0.0,
    bos_token_id=0,
    dropout=0.0,
    eos_token_id=2,
    hidden_act="quick_gelu",
    hidden_size=768,
    initializer_factor=1.0,
    initializer_range=0.02,
    intermediate_size=3072,
    layer_norm_eps=1e-5,
    max_position_embeddings=77,
    num_attention_heads=12,
    num_hidden_layers=12,
    pad_token_id=1,
    projection_dim=768,
    vocab_size=49408,
)

# text_encoder_2/config.json (OpenCLIP ViT-bigG/14 text tower, with its projection)
TEXT_ENCODER_2 = dict(
    attention_dropout=0.0,
    bos_token_id=0,
    dropout=0.0,
    eos_token_id=2,
    hidden_act="gelu",
    hidden_size=1280,
    initializer_factor=1.0,
    initializer_range=0.02,
    intermediate_size=5120,
    layer_norm_eps=1e-5,
    max_position_embeddings=77,
    num_attention_heads=20,
    num_hidden_layers=32,
    pad_token_id=1,
    projection_dim=1280,
    vocab_size=49408,
)

# stabilityai/sdxl-turbo, scheduler/scheduler_config.json
SCHEDULER = dict(
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    clip_sample=False,
    interpolation_type="linear",
    num_train_timesteps=1000,
    prediction_type="epsilon",
    sample_max_value=1.0,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    timestep_spacing="trailing",
    trained_betas=None,
    use_karras_sigmas=False,
)

MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "feature_extractor": [None, None],
    "force_zeros_for_empty_prompt": True,
    "image_encoder": [None, None],
    "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def log(msg):
    print(f"[random-sdxl {time.time() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def source_hash():
    return hashlib.sha256(Path(__file__).resolve().read_bytes()).hexdigest()


def generate(out: Path, tokenizers: list):
    import diffusers
    import torch
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from diffusers.utils import logging as dlogging
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    from transformers.utils import logging as tlogging

    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    torch.set_grad_enabled(False)

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # One component at a time: built, saved, dropped.
    builders = [
        ("unet", lambda: UNet2DConditionModel(**UNET), "2GB"),
        ("vae", lambda: AutoencoderKL(**VAE), None),
        ("text_encoder", lambda: CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER)), None),
        ("text_encoder_2", lambda: CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_ENCODER_2)), None),
    ]
    for seed, (name, build, shard) in enumerate(builders):
        torch.manual_seed(seed)
        model = build().eval()
        log(f"{name} built: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters")
        kwargs = {"max_shard_size": shard} if shard else {"max_shard_size": "20GB"}
        model.save_pretrained(str(tmp / name), safe_serialization=True, **kwargs)
        del model
    EulerAncestralDiscreteScheduler.from_config(SCHEDULER).save_pretrained(str(tmp / "scheduler"))
    # The tokenizer folders as SDXL repositories have them (vocab.json + merges.txt, no tokenizer.json).
    for name, src in zip(("tokenizer", "tokenizer_2"), tokenizers):
        shutil.copytree(src, tmp / name)
    index = dict(MODEL_INDEX, _diffusers_version=diffusers.__version__)
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    for path in tmp.rglob("*"):
        if path.is_file():
            os.chmod(path, 0o644)  # safetensors creates files private to their owner
    sizes = {sub: sum(p.stat().st_size for p in (tmp / sub).glob("*.safetensors")) for sub in
             ("unet", "vae", "text_encoder", "text_encoder_2")}
    log("saved: " + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in sizes.items()))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main():
    if len(sys.argv) != 4:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR TOKENIZER_DIR TOKENIZER_2_DIR")
    out = Path(sys.argv[1]).resolve()
    tokenizers = [Path(a).resolve() for a in sys.argv[2:]]
    for tok in tokenizers:
        for name in ("vocab.json", "merges.txt"):
            if not (tok / name).is_file():
                sys.exit(f"{tok} has no {name}: pass CLIP tokenizer folders (e.g. the sdxl fixture's tokenizer/)")
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = source_hash()

    import fcntl

    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent run waits, then finds the stamp
        stamp_file = out / ".complete"
        if stamp_file.is_file() and stamp_file.read_text().strip() == stamp:
            log(f"random SDXL pipeline in {out} is up to date")
            return
        # What an old pipeline there and a partial one hold is freed before writing.
        free = shutil.disk_usage(out.parent).free
        for old in (out, out.with_name(out.name + ".tmp")):
            if old.is_dir():
                free += sum(p.stat().st_size for p in old.rglob("*") if p.is_file())
        if free < NEEDED_BYTES:
            sys.exit(f"not enough disk space in {out.parent}: {free / 1e9:.1f} GB free, "
                     f"{NEEDED_BYTES / 1e9:.0f} GB needed for the random SDXL pipeline")
        log(f"building a random-weight SDXL pipeline into {out} (takes a few minutes, about 14 GB)")
        generate(out, tokenizers)
        stamp_file.write_text(stamp + "\n")
        log("done")


if __name__ == "__main__":
    main()
