#!/usr/bin/env python3
"""The Python side of `sdscope bench embed`: scikit-learn's TSNE and umap-learn's UMAP on the same inputs.

usage: sklearn_projections.py --out DIR --threads T [--input FILE.safetensors --key KEY --name NAME]

Writes DIR/digits.safetensors (`x` float32 [1797, 64], sklearn's bundled digits) and, for every dataset,
DIR/<name>_python.safetensors (`tsne`, `umap` float32 [n, 2]); prints one JSON object on stdout:
{"<name>": {"n": .., "d": .., "tsne_s": .., "umap_s": .., "umap_compile_s": ..}}. Timed: the fit_transform
call alone, with numba's compilation done by a warm-up fit first (reported apart). Defaults as the CLI's:
TSNE(perplexity=30, init="pca", learning_rate="auto", random_state=0), UMAP(n_neighbors=15, min_dist=0.1,
metric="euclidean", random_state=0).
"""

import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--input")
    ap.add_argument("--key", default="image_embeds")
    ap.add_argument("--name", default="embeddings")
    a = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(a.threads)

    import numpy as np
    import umap
    from safetensors.numpy import load_file, save_file
    from sklearn.datasets import load_digits
    from sklearn.manifold import TSNE

    os.makedirs(a.out, exist_ok=True)
    digits = np.ascontiguousarray(load_digits().data.astype(np.float32))
    save_file({"x": digits}, os.path.join(a.out, "digits.safetensors"))
    datasets = [("digits", digits)]
    if a.input:
        datasets.append((a.name, np.ascontiguousarray(load_file(a.input)[a.key].astype(np.float32))))

    t = time.time()
    umap.UMAP(random_state=0).fit_transform(np.random.default_rng(0).standard_normal((300, 16)))
    compile_s = time.time() - t
    report = {}
    for name, x in datasets:
        x64 = x.astype(np.float64)
        t = time.time()
        tsne = TSNE(n_components=2, perplexity=30, init="pca", learning_rate="auto", random_state=0).fit_transform(x64)
        tsne_s = time.time() - t
        t = time.time()
        um = umap.UMAP(n_neighbors=15, min_dist=0.1, metric="euclidean", random_state=0).fit_transform(x64)
        umap_s = time.time() - t
        save_file({"tsne": np.ascontiguousarray(tsne.astype(np.float32)), "umap": np.ascontiguousarray(um.astype(np.float32))},
                  os.path.join(a.out, f"{name}_python.safetensors"))
        report[name] = {"n": int(x.shape[0]), "d": int(x.shape[1]), "tsne_s": tsne_s, "umap_s": umap_s,
                        "umap_compile_s": compile_s}
        print(f"[python] {name}: t-SNE {tsne_s:.1f} s, UMAP {umap_s:.1f} s", file=sys.stderr, flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
