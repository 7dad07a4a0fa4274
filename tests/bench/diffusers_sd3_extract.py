#!/usr/bin/env python3
"""The diffusers side of `sdscope bench sd3`: time SD3 representation extraction as sdhelper-style code does it.

usage: python tests/bench/diffusers_sd3_extract.py MODEL_DIR IMAGE --positions P1,P2,... [--repeats N]
                                                   [--timestep T] [--seed S] [--prompt TEXT]

Loads a StableDiffusion3Pipeline from MODEL_DIR (timed; `text_encoder_3=None` when the folder has no T5), then
runs N extractions with sdscope's semantics: `encode_prompt(prompt)`, `torch.manual_seed(seed)`,
`(vae.encode(x).latent_dist.sample() − shift) × scaling`, `randn_like` noise, flow-matching `scale_noise` at
`timesteps[999 − T]` of the scheduler set to 1000 steps, and one transformer pass with forward hooks keeping the
image stream of each requested module (a joint block's second output), shown as the patch grid [1, C, h, w].
The hooks do not stop the pass: diffusers has no early exit. Image loading and preprocessing are not timed.

Prints one JSON object on stdout (the fields of sdscope's worker report). Progress goes to stderr.
"""

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.dont_write_bytecode = True


def log(msg):
    print(f"[diffusers] {msg}", file=sys.stderr, flush=True)


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def module_name(position: str) -> str:
    return position.replace("[", ".").replace("]", "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("image")
    parser.add_argument("--positions", required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timestep", type=int, default=50)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--prompt", default="")
    args = parser.parse_args()
    positions = [p.strip() for p in args.positions.split(",") if p.strip()]

    start = time.perf_counter()
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    from diffusers.image_processor import VaeImageProcessor
    from diffusers.utils import logging as dlogging
    from PIL import Image
    from transformers.utils import logging as tlogging

    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    import_s = time.perf_counter() - start

    start = time.perf_counter()
    extra = {} if os.path.isdir(os.path.join(args.model_dir, "text_encoder_3")) else \
        dict(text_encoder_3=None, tokenizer_3=None)
    pipe = StableDiffusion3Pipeline.from_pretrained(args.model_dir, **extra)
    load_s = time.perf_counter() - start
    peak_after_load = peak_rss_bytes()
    modules = [pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2]
    if pipe.text_encoder_3 is not None:
        modules.append(pipe.text_encoder_3)
    held = sum(t.numel() * t.element_size() for m in modules for t in list(m.parameters()) + list(m.buffers()))
    log(f"loaded in {load_s:.1f} s (imports {import_s:.1f} s), peak RSS {peak_after_load / 2**30:.2f} GiB")

    captured, grid = {}, {}

    def hook_for(position):
        def hook(module, _inputs, output):
            if position in captured:
                return
            if isinstance(output, tuple):
                output = output[1] if type(module).__name__ == "JointTransformerBlock" else output[0]
            if output.dim() == 3 and output.shape[1] == grid["h"] * grid["w"]:
                b, _, c = output.shape
                output = output.reshape(b, grid["h"], grid["w"], c).permute(0, 3, 1, 2)
            captured[position] = output.detach().clone()
        return hook

    handles = [pipe.transformer.get_submodule(module_name(p)).register_forward_hook(hook_for(p)) for p in positions]
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(1000)
    timestep = scheduler.timesteps[999 - args.timestep]
    x = VaeImageProcessor(vae_scale_factor=8).preprocess(Image.open(args.image).convert("RGB"))
    patch = pipe.transformer.config.patch_size
    grid.update(h=x.shape[2] // 8 // patch, w=x.shape[3] // 8 // patch)
    scaling, shift = pipe.vae.config.scaling_factor, pipe.vae.config.shift_factor or 0.0

    times = []
    for i in range(args.repeats):
        captured.clear()
        start = time.perf_counter()
        with torch.no_grad():
            ehs, _, pooled, _ = pipe.encode_prompt(args.prompt, None, None, device="cpu",
                                                    do_classifier_free_guidance=False)
            torch.manual_seed(args.seed)
            latents = (pipe.vae.encode(x).latent_dist.sample() - shift) * scaling
            noise = torch.randn_like(latents)
            noisy = scheduler.scale_noise(latents, timestep[None], noise)
            pipe.transformer(hidden_states=noisy, timestep=timestep[None], encoder_hidden_states=ehs,
                             pooled_projections=pooled)
        times.append(time.perf_counter() - start)
        log(f"extraction {i + 1}/{args.repeats}: {times[-1]:.2f} s")
    for h in handles:
        h.remove()

    missing = [p for p in positions if captured.get(p) is None]
    if missing:
        sys.exit(f"no output captured at {missing}")
    result = {
        "side": "diffusers",
        "positions": positions,
        "load_s": load_s,
        "import_s": import_s,
        "times_s": times,
        "peak_rss_after_load_bytes": peak_after_load,
        "peak_rss_bytes": peak_rss_bytes(),
        "weights_held_bytes": held,
        "threads": torch.get_num_threads(),
        "shapes": {p: list(captured[p].shape) for p in positions},
        "norms": {p: captured[p].double().norm().item() for p in positions},
        "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
