#!/usr/bin/env python3
"""An SD1.5-architecture diffusers pipeline with random weights, for `sdscope bench`.

usage: python tests/bench/make_random_sd15.py OUTDIR TOKENIZER_DIR

The component configs below are those of runwayml/stable-diffusion-v1-5 (a U-Net of 860M parameters, the
AutoencoderKL with 4 levels, CLIP ViT-L/14's text tower and the PNDM scheduler); only the weights are random
(seeded, PyTorch's and transformers' default initialisation). TOKENIZER_DIR is copied as `tokenizer/`: pass a
folder holding the real CLIP vocabulary (vocab.json, merges.txt, e.g. the sd1 test fixture's `tokenizer/`).
Everything is saved as float32 safetensors, about 4.3 GB.

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

# runwayml/stable-diffusion-v1-5, unet/config.json (keys diffusers 0.42 would fill with the same defaults omitted).
UNET = dict(
    act_fn="silu",
    attention_head_dim=8,
    block_out_channels=(320, 640, 1280, 1280),
    center_input_sample=False,
    cross_attention_dim=768,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
    norm_num_groups=32,
    out_channels=4,
    sample_size=64,
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)

# vae/config.json
VAE = dict(
    act_fn="silu",
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    in_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    out_channels=3,
    sample_size=512,
    scaling_factor=0.18215,
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

# scheduler/scheduler_config.json; `clip_sample` is no PNDM argument: `from_config` ignores it, as with the real file.
SCHEDULER = dict(
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    clip_sample=False,
    num_train_timesteps=1000,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    trained_betas=None,
)


def log(msg):
    print(f"[random-sd15 {time.time() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def source_hash():
    return hashlib.sha256(Path(__file__).resolve().read_bytes()).hexdigest()


def build(tokenizer_dir: Path):
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with torch.no_grad():
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**UNET).eval()
        log(f"U-Net built: {sum(p.numel() for p in unet.parameters()) / 1e6:.0f}M parameters")
        torch.manual_seed(1)
        vae = AutoencoderKL(**VAE).eval()
        torch.manual_seed(2)
        text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER)).eval()
        log("VAE and text encoder built")
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(str(tokenizer_dir)),
        unet=unet, scheduler=PNDMScheduler.from_config(SCHEDULER),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def generate(out: Path, tokenizer_dir: Path):
    import torch
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    torch.set_grad_enabled(False)

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = build(tokenizer_dir)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    del pipe
    # The tokenizer folder as SD repositories have it (vocab.json + merges.txt, no tokenizer.json).
    shutil.rmtree(tmp / "tokenizer")
    shutil.copytree(tokenizer_dir, tmp / "tokenizer")
    for path in tmp.rglob("*"):
        if path.is_file():
            os.chmod(path, 0o644)  # safetensors creates files private to their owner
    sizes = {sub: sum(p.stat().st_size for p in (tmp / sub).glob("*.safetensors")) for sub in
             ("unet", "vae", "text_encoder")}
    log("saved: " + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in sizes.items()))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main():
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR TOKENIZER_DIR")
    out, tokenizer_dir = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    for name in ("vocab.json", "merges.txt"):
        if not (tokenizer_dir / name).is_file():
            sys.exit(f"{tokenizer_dir} has no {name}: pass a CLIP tokenizer folder (e.g. the sd1 fixture's tokenizer/)")
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = source_hash()

    import fcntl

    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent run waits, then finds the stamp
        stamp_file = out / ".complete"
        if stamp_file.is_file() and stamp_file.read_text().strip() == stamp:
            log(f"random SD1.5 pipeline in {out} is up to date")
            return
        log(f"building a random-weight SD1.5 pipeline into {out} (takes a few minutes)")
        generate(out, tokenizer_dir)
        stamp_file.write_text(stamp + "\n")
        log("done")


if __name__ == "__main__":
    main()
