#!/usr/bin/env python3
"""The PyTorch side of sdscope's SAE training benchmark: a TopK sparse autoencoder step, as sdscope trains it.

usage: python tests/bench/torch_sae_train.py [--d 1280] [--latents 5120] [--k 10] [--auxk 256] [--batch 4096]
                                             [--steps 8] [--dead-steps 2] [--threads N] [--seed 0]
                                             [--json OUT.json]

Random normal data ((steps + 1) batches of [batch, d]) is made in-process. One training step: `pre = (x - b_pre)
@ W_enc.T + b_lat`, `topk(pre, k)` + relu, dead-latent bookkeeping, AuxK on the dead latents (`topk(pre * dead,
auxk)`), gather decode `(W_dec[I] * z[..., None]).sum(1) + b_pre`, loss `mse_scale * mse + 1/32 * normalised
AuxK mse`, autograd backward, the decoder gradient made orthogonal to its unit rows, Adam (eps 6.25e-10,
foreach=False), decoder rows renormalised. One warm-up step, then `steps` timed steps (time.perf_counter).
Encode throughput times `encode` alone (pre-activations + topk, no grad) over the same timed batches, after
one warm-up call.

Prints one JSON object (also written to --json): tokens_per_s (batch * steps / seconds), seconds, steps,
encode_tokens_per_s, encode_seconds, peak_rss_bytes and the configuration. Progress goes to stderr.
"""

import argparse
import json
import resource
import sys
import time

sys.dont_write_bytecode = True


def log(msg):
    print(f"[torch-sae] {msg}", file=sys.stderr, flush=True)


class TopKSAE:
    def __init__(self, d, n, k, auxk, dead_steps, b_pre, mse_scale, lr=1e-4, auxk_coef=1.0 / 32):
        import torch

        bound = 1.0 / d ** 0.5
        w_enc = torch.empty(n, d).uniform_(-bound, bound)
        self.w_enc = w_enc.clone().requires_grad_(True)
        self.b_lat = torch.zeros(n, requires_grad=True)
        self.w_dec = (w_enc / w_enc.norm(dim=-1, keepdim=True)).requires_grad_(True)
        self.b_pre = b_pre.clone().requires_grad_(True)
        self.params = [self.w_enc, self.b_lat, self.w_dec, self.b_pre]
        self.opt = torch.optim.Adam(self.params, lr=lr, betas=(0.9, 0.999), eps=6.25e-10, foreach=False)
        self.k, self.auxk, self.dead_steps, self.auxk_coef = k, min(auxk, n), dead_steps, auxk_coef
        self.mse_scale = mse_scale
        self.last_nonzero = torch.zeros(n, dtype=torch.int64)

    def pre(self, x):
        return (x - self.b_pre) @ self.w_enc.T + self.b_lat

    def encode(self, x):
        import torch

        with torch.no_grad():
            vals, idx = self.pre(x).topk(self.k, dim=-1)
            return idx, vals.relu()

    def decode(self, idx, z):
        return (self.w_dec[idx] * z[..., None]).sum(1) + self.b_pre

    def step(self, x):
        import torch

        pre = self.pre(x)
        v, idx = pre.topk(self.k, dim=-1)
        z = v.relu()
        with torch.no_grad():
            fired = torch.zeros_like(self.last_nonzero)
            fired.scatter_add_(0, idx.reshape(-1), (v > 1e-3).to(fired.dtype).reshape(-1))
            self.last_nonzero.mul_(1 - fired.clamp(max=1)).add_(1)
        dead = (self.last_nonzero > self.dead_steps).to(pre.dtype)
        av, aidx = (pre * dead).topk(self.auxk, dim=-1)
        az = av.relu()

        recon = self.decode(idx, z)
        main = self.mse_scale * (recon - x).pow(2).mean()
        target = x - recon.detach() + self.b_pre.detach()
        r = self.decode(aidx, az)
        aux = ((r - target).pow(2).mean() / (target - target.mean(0, keepdim=True)).pow(2).mean()).nan_to_num(0)
        loss = main + self.auxk_coef * aux

        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            g = self.w_dec.grad
            g -= (g * self.w_dec).sum(-1, keepdim=True) * self.w_dec
        self.opt.step()
        with torch.no_grad():
            self.w_dec /= self.w_dec.norm(dim=-1, keepdim=True)
        return loss.detach()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=1280)
    ap.add_argument("--latents", type=int, default=5120)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--auxk", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--dead-steps", type=int, default=2, help="dead_steps_threshold (small so AuxK sees dead latents)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    t_import = time.perf_counter()
    import torch
    t_import = time.perf_counter() - t_import

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    batches = torch.randn(args.steps + 1, args.batch, args.d)
    flat = batches.reshape(-1, args.d)
    mse_scale = float(1.0 / (flat.double() - flat.double().mean(0)).pow(2).mean())
    b_pre = flat.mean(0)  # the benchmark does not time initialisation; the mean stands in for the median
    sae = TopKSAE(args.d, args.latents, args.k, args.auxk, args.dead_steps, b_pre, mse_scale)
    log(f"d {args.d} latents {args.latents} k {args.k} auxk {args.auxk} batch {args.batch} steps {args.steps} "
        f"threads {torch.get_num_threads()}")

    loss = sae.step(batches[0])  # warm-up
    t = time.perf_counter()
    losses = [float(sae.step(batches[s + 1])) for s in range(args.steps)]
    seconds = time.perf_counter() - t
    log(f"train: {seconds:.3f}s, warm-up loss {float(loss):.5f}, last loss {losses[-1]:.5f}, "
        f"{int((sae.last_nonzero > args.dead_steps).sum())} dead latents")

    sae.encode(batches[0])  # warm-up
    t = time.perf_counter()
    for s in range(args.steps):
        idx, vals = sae.encode(batches[s + 1])
    encode_seconds = time.perf_counter() - t
    tokens = args.batch * args.steps
    result = {
        "tokens_per_s": tokens / seconds,
        "seconds": seconds,
        "steps": args.steps,
        "encode_tokens_per_s": tokens / encode_seconds,
        "encode_seconds": encode_seconds,
        "batch": args.batch, "d": args.d, "latents": args.latents, "k": args.k, "auxk": args.auxk,
        "dead_steps": args.dead_steps, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "import_seconds": t_import, "final_loss": losses[-1] if losses else None,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # kilobytes on Linux
    }
    text = json.dumps(result, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
