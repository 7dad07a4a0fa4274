#!/usr/bin/env python3
"""The diffusers side of `sdscope bench`: time representation extraction as sdhelper-style code does it.

usage: python tests/bench/diffusers_extract.py MODEL_DIR IMAGE --positions P1,P2,... [--repeats N]
                                               [--timestep T] [--seed S] [--prompt TEXT]

Loads a StableDiffusionPipeline from MODEL_DIR (timed), then runs N extractions with sdscope's semantics:
`encode_prompt(prompt)`, `torch.manual_seed(seed)`, `vae.encode(x).latent_dist.sample() * scaling_factor`,
`randn_like` noise, DDPM `add_noise` at timestep T, and one U-Net pass with forward hooks keeping the (first)
output of each requested module. The hooks do not stop the pass: diffusers has no early exit. Image loading and
preprocessing are not timed (sdscope's worker prepares its image outside the timed region too).

Prints one JSON object on stdout: load time, per-extraction times, peak RSS (after loading and at the end), the
size of the weights held, the captured shapes and their L2 norms (to check that both sides computed the same).
Progress goes to stderr.
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
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def module_name(position: str) -> str:
    """`up_blocks[1].attentions[0]` -> `up_blocks.1.attentions.0`."""
    return position.replace("[", ".").replace("]", "")


def first_tensor(output):
    import torch

    if isinstance(output, dict):  # diffusers' BaseOutput is an OrderedDict
        output = next(iter(output.values()), None)
    elif isinstance(output, (tuple, list)):
        output = output[0] if output else None
    return output if isinstance(output, torch.Tensor) else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("image")
    parser.add_argument("--positions", required=True, help="comma-separated, sdhelper-style")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timestep", type=int, default=50)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--prompt", default="")
    args = parser.parse_args()
    positions = [p.strip() for p in args.positions.split(",") if p.strip()]

    start = time.perf_counter()
    import torch
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from diffusers.image_processor import VaeImageProcessor
    from diffusers.utils import logging as dlogging
    from PIL import Image
    from transformers.utils import logging as tlogging

    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    dlogging.disable_progress_bar()
    import_s = time.perf_counter() - start

    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(args.model_dir, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - start
    peak_after_load = peak_rss_bytes()
    held = sum(t.numel() * t.element_size() for m in (pipe.unet, pipe.vae, pipe.text_encoder)
               for t in list(m.parameters()) + list(m.buffers()))
    log(f"loaded in {load_s:.1f} s (imports {import_s:.1f} s), peak RSS {peak_after_load / 2**30:.2f} GiB")

    modules = {p: pipe.unet.get_submodule(module_name(p)) for p in positions}
    captured = {}

    def hook_for(position):
        def hook(_module, _inputs, output):
            if position not in captured:
                captured[position] = first_tensor(output)
        return hook

    handles = [m.register_forward_hook(hook_for(p)) for p, m in modules.items()]
    ddpm = DDPMScheduler.from_config(pipe.scheduler.config)
    x = VaeImageProcessor(vae_scale_factor=8).preprocess(Image.open(args.image).convert("RGB"))
    scaling = pipe.vae.config.scaling_factor

    times, prepare_times = [], []
    for i in range(args.repeats):
        captured.clear()
        start = time.perf_counter()
        with torch.no_grad():
            ehs = pipe.encode_prompt(args.prompt, device="cpu", num_images_per_prompt=1,
                                     do_classifier_free_guidance=False)[0]
            torch.manual_seed(args.seed)
            latents = pipe.vae.encode(x).latent_dist.sample() * scaling
            noise = torch.randn_like(latents)
            noisy = ddpm.add_noise(latents, noise, torch.tensor([args.timestep]))
            prepare_times.append(time.perf_counter() - start)
            pipe.unet(noisy, args.timestep, encoder_hidden_states=ehs)
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
        "prepare_times_s": prepare_times,
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
