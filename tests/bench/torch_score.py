"""torch_score.py - GANomaly scoring throughput of the PyTorch reference.

  /usr/bin/python3 tests/bench/torch_score.py MODEL INPUTS N --threads 1

Loads MODEL (one of our model files) into the reference NetG with
ganomaly_ref.read_model (eval mode), reads N input tensors (N, C, H, W) of
raw float32 from INPUTS (written by bench_core --dump: the same fitted
images our scorer sees), and scores them under torch.no_grad() at batch 1
and at batch 64: z = encoder1(x), x_hat = decoder(z), z' = encoder2(x_hat),
score = mean (z - z')^2, and the parts recon_l1 and recon_l2, as our
anomaly_scores does. One untimed batch of 64 warms up first. Decode and fit
are not timed (they are done before). Prints one JSON line with images per
second at each batch size and the sum of the scores. Needs torch and numpy.
"""

import argparse
import json
import os
import sys
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import ganomaly_ref as gr  # noqa: E402


def score(netg, x):
    """The score and its parts for a batch x, as our ganomaly detector computes them."""
    x_hat, z, z_prime = netg(x)
    n = x.shape[0]
    latent = torch.mean((z - z_prime).reshape(n, -1) ** 2, dim=1)
    d = (x - x_hat).reshape(n, -1)
    return latent, torch.mean(d.abs(), dim=1), torch.mean(d * d, dim=1)


def run(netg, x, batch):
    total = 0.0
    t0 = time.perf_counter()
    for i in range(0, x.shape[0], batch):
        latent, _, _ = score(netg, x[i:i + batch])
        total += float(latent.sum())
    return time.perf_counter() - t0, total


def main():
    ap = argparse.ArgumentParser(description="time the PyTorch GANomaly scorer")
    ap.add_argument("model")
    ap.add_argument("inputs", help="raw float32 (N, C, H, W), from bench_core --dump")
    ap.add_argument("n", type=int, help="images in INPUTS")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    netg, _, cfg, _ = gr.read_model(a.model)
    netg.eval()
    shape = (a.n, cfg["nc"], cfg["isize"], cfg["isize"])
    x = torch.from_numpy(np.fromfile(a.inputs, dtype=np.float32).reshape(shape))
    out = {"impl": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
           "images": a.n, "cfg": cfg}
    with torch.no_grad():
        run(netg, x[:64], 64)
        for batch in (1, 64):
            s, total = run(netg, x, batch)
            out["batch%d" % batch] = {"seconds": s, "images_per_second": a.n / s, "score_sum": total}
    print(json.dumps(out, separators=(", ", ": ")))


if __name__ == "__main__":
    main()
