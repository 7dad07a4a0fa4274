#!/usr/bin/env python3
"""An SD3-Medium-architecture diffusers pipeline with random weights, for `sdscope bench sd3`.

usage: python tests/bench/make_random_sd3.py OUTDIR CLIP_TOKENIZERS_DIR [--layers N]

The transformer, VAE and both CLIP text towers have the configs of stabilityai/stable-diffusion-3-medium-diffusers
(a 2.0B-parameter MMDiT with 24 joint blocks, 1536 wide; the 16-channel AutoencoderKL; CLIP ViT-L/14 and
OpenCLIP ViT-bigG/14 text towers with projections); only the weights are random (seeded, PyTorch's and
transformers' default initialisation). The T5-XXL encoder (4.7B parameters, 19 GB in float32) is left out, as
`text_encoder_3=None` in diffusers and `--no-t5` in sdscope: its part of the text sequence is zeros on both
sides. CLIP_TOKENIZERS_DIR holds `tokenizer/` and `tokenizer_2/` (the SD3 test fixture's, real CLIP vocabulary).
Everything is saved as float32 safetensors, about 12 GB. `--layers N` builds a smaller transformer (a quick check
of the benchmark itself).

The pipeline is written to OUTDIR.tmp and renamed to OUTDIR when complete; OUTDIR/.complete then holds a hash of
this script and the arguments, and a later run with the same returns at once. Concurrent runs wait on OUTDIR.lock.
"""

import hashlib
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

# stabilityai/stable-diffusion-3-medium-diffusers, transformer/config.json
TRANSFORMER = dict(
    attention_head_dim=64,
    caption_projection_dim=1536,
    in_channels=16,
    joint_attention_dim=4096,
    num_attention_heads=24,
    num_layers=24,
    out_channels=16,
    patch_size=2,
    pooled_projection_dim=2048,
    pos_embed_max_size=192,
    sample_size=128,
)

# vae/config.json
VAE = dict(
    act_fn="silu",
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    force_upcast=True,
    in_channels=3,
    latent_channels=16,
    layers_per_block=2,
    norm_num_groups=32,
    out_channels=3,
    sample_size=1024,
    scaling_factor=1.5305,
    shift_factor=0.0609,
    up_block_types=("UpDecoderBlock2D",) * 4,
    use_post_quant_conv=False,
    use_quant_conv=False,
)

# text_encoder/config.json (CLIP ViT-L/14) and text_encoder_2/config.json (OpenCLIP ViT-bigG/14)
CLIP_L = dict(hidden_act="quick_gelu", hidden_size=768, intermediate_size=3072, num_attention_heads=12,
              num_hidden_layers=12, projection_dim=768, vocab_size=49408, max_position_embeddings=77,
              bos_token_id=0, eos_token_id=2, pad_token_id=1, layer_norm_eps=1e-5)
CLIP_G = dict(hidden_act="gelu", hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
              num_hidden_layers=32, projection_dim=1280, vocab_size=49408, max_position_embeddings=77,
              bos_token_id=0, eos_token_id=2, pad_token_id=1, layer_norm_eps=1e-5)

SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)


def log(msg):
    print(f"[random-sd3 {time.time() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def stamp_for(layers: int) -> str:
    return hashlib.sha256(Path(__file__).resolve().read_bytes() + f"layers={layers}".encode()).hexdigest()


def build(tokenizers: Path, layers: int):
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from diffusers import StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    with torch.no_grad():
        torch.manual_seed(0)
        transformer = SD3Transformer2DModel(**{**TRANSFORMER, "num_layers": layers}).eval()
        log(f"transformer built: {sum(p.numel() for p in transformer.parameters()) / 1e9:.2f}B parameters")
        torch.manual_seed(1)
        vae = AutoencoderKL(**VAE).eval()
        torch.manual_seed(2)
        clip_l = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L)).eval()
        torch.manual_seed(3)
        clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G)).eval()
        log("VAE and text encoders built")
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=vae,
        text_encoder=clip_l, tokenizer=CLIPTokenizer.from_pretrained(str(tokenizers / "tokenizer")),
        text_encoder_2=clip_g, tokenizer_2=CLIPTokenizer.from_pretrained(str(tokenizers / "tokenizer_2")),
        text_encoder_3=None, tokenizer_3=None,
    )


def generate(out: Path, tokenizers: Path, layers: int):
    import torch
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    torch.set_grad_enabled(False)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = build(tokenizers, layers)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    del pipe
    for name in ("tokenizer", "tokenizer_2"):
        shutil.rmtree(tmp / name)
        shutil.copytree(tokenizers / name, tmp / name)
    for path in tmp.rglob("*"):
        if path.is_file():
            os.chmod(path, 0o644)
    sizes = {sub: sum(p.stat().st_size for p in (tmp / sub).glob("*.safetensors")) for sub in
             ("transformer", "vae", "text_encoder", "text_encoder_2")}
    log("saved: " + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in sizes.items()))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main():
    args = sys.argv[1:]
    layers = TRANSFORMER["num_layers"]
    if "--layers" in args:
        i = args.index("--layers")
        layers = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR CLIP_TOKENIZERS_DIR [--layers N]")
    out, tokenizers = Path(args[0]).resolve(), Path(args[1]).resolve()
    for name in ("tokenizer/vocab.json", "tokenizer_2/vocab.json"):
        if not (tokenizers / name).is_file():
            sys.exit(f"{tokenizers} has no {name}: pass a folder with CLIP tokenizer/ and tokenizer_2/ (the SD3 fixture)")
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = stamp_for(layers)

    import fcntl

    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp_file = out / ".complete"
        if stamp_file.is_file() and stamp_file.read_text().strip() == stamp:
            log(f"random SD3 pipeline in {out} is up to date")
            return
        log(f"building a random-weight SD3-Medium-architecture pipeline ({layers} blocks) into {out}")
        generate(out, tokenizers, layers)
        stamp_file.write_text(stamp + "\n")
        log("done")


if __name__ == "__main__":
    main()
