#!/usr/bin/env python3
"""The diffusers side of `sdscope bench collect`: dataset collection as the SDXL-Turbo sparse-autoencoder work does it.

usage: python tests/bench/diffusers_collect.py MODEL_DIR PROMPTS_TXT OUT_DIR --positions P1@update,...
                                               [--items N] [--batch B] [--size S] [--threads T]

Loads a StableDiffusionXLPipeline from MODEL_DIR in float32 (timed), then runs the first N prompts of PROMPTS_TXT
(one per line) in batches of B: `num_inference_steps=1, guidance_scale=0.0, output_type="latent"`, one
`torch.Generator().manual_seed(k)` per prompt k, and forward hooks (`with_kwargs=True`) on the modules of the
positions keeping each one's update, `output[0] - input`. After each batch the captured updates are written to
OUT_DIR/batch-IIIII.safetensors, one float32 tensor `[B, C, H, W]` per position, keyed by the position as given.

Prints one JSON object on stdout: import, load and collection seconds, items/s (without and with loading), peak
RSS, bytes written, torch threads. Progress goes to stderr.
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
    """`up_blocks[0].attentions[1]@update` -> `up_blocks.0.attentions.1`."""
    return position.split("@")[0].replace("[", ".").replace("]", "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("prompts")
    parser.add_argument("out_dir")
    parser.add_argument("--positions", required=True, help="comma-separated, P@update")
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    positions = args.positions.split(",")
    with open(args.prompts, encoding="utf-8") as f:
        prompts = [line.strip() for line in f if line.strip()][: args.items]
    if len(prompts) < args.items:
        sys.exit(f"{args.prompts} has {len(prompts)} prompts, {args.items} wanted")
    os.makedirs(args.out_dir, exist_ok=True)

    t0 = time.perf_counter()
    import torch
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import logging as dlogging
    from safetensors.torch import save_file

    dlogging.disable_progress_bar()  # the per-component loading bars

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    import_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    pipe = StableDiffusionXLPipeline.from_pretrained(args.model_dir, torch_dtype=torch.float32, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t0
    log(f"loaded in {load_s:.1f} s (imports {import_s:.1f} s), peak RSS {peak_rss_bytes() / 2**30:.2f} GiB, "
        f"{torch.get_num_threads()} threads")

    captured = {}

    def hook_for(position):
        def hook(module, args_, kwargs, output):
            x = args_[0] if args_ else kwargs["hidden_states"]
            out = output[0] if isinstance(output, (tuple, list)) else output.sample
            captured[position] = (out - x).float().cpu()

        return hook

    handles = [pipe.unet.get_submodule(module_name(p)).register_forward_hook(hook_for(p), with_kwargs=True)
               for p in positions]

    written = 0
    t0 = time.perf_counter()
    for n, start in enumerate(range(0, len(prompts), args.batch)):
        tb = time.perf_counter()
        batch = prompts[start: start + args.batch]
        generators = [torch.Generator().manual_seed(k) for k in range(start, start + len(batch))]
        captured.clear()
        pipe(prompt=batch, num_inference_steps=1, guidance_scale=0.0, height=args.size, width=args.size,
             generator=generators, output_type="latent")
        path = os.path.join(args.out_dir, f"batch-{n:05d}.safetensors")
        save_file({p: captured[p].contiguous() for p in positions}, path)
        written += os.path.getsize(path)
        log(f"batch {n + 1}: {len(batch)} items in {time.perf_counter() - tb:.2f} s")
    collect_s = time.perf_counter() - t0
    for h in handles:
        h.remove()

    items = len(prompts)
    print(json.dumps({
        "side": "diffusers",
        "batch": args.batch,
        "items": items,
        "import_s": import_s,
        "load_s": load_s,
        "collect_s": collect_s,
        "items_per_s": items / collect_s,
        "items_per_s_with_load": items / (load_s + collect_s),
        "peak_rss_bytes": peak_rss_bytes(),
        "bytes_written": written,
        "bytes_per_item": written / items,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
