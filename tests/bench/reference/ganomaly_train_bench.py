"""ganomaly_train_bench.py - time PyTorch's GANomaly training step on the CPU.

  /usr/bin/python3 tests/bench/reference/ganomaly_train_bench.py --threads 1 --batches 20

Builds the full-size network (isize 32, nc 1, nz 100, ngf 64, extralayers 0,
DCGAN init) and runs the authors' training step (ganomaly_ref.Trainer: the
Ganomaly.optimize_params of lib/model.py, Adam lr 2e-4, betas (0.5, 0.999),
w_adv 1, w_con 50, w_enc 1) on random batches in [-1, 1]. The first --warmup
batches are not timed. Prints one JSON line:
  {"threads": .., "batch": .., "batches": .., "seconds_per_batch": ..,
   "images_per_second": .., ...}
so that the numbers can be set beside the C port's. Needs torch.
"""

import argparse
import json
import os
import sys
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import ganomaly_ref as gr  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="time the GANomaly training step in PyTorch")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--batches", type=int, default=10, help="timed batches (default 10)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed batches first (default 1)")
    ap.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    ap.add_argument("--isize", type=int, default=32)
    ap.add_argument("--nc", type=int, default=1)
    ap.add_argument("--nz", type=int, default=100)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.threads < 1 or a.batches < 1 or a.warmup < 0 or a.batch < 1:
        ap.error("--threads, --batches and --batch must be >= 1, --warmup >= 0")

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cfg = {"isize": a.isize, "nc": a.nc, "nz": a.nz, "ngf": a.ngf, "extralayers": 0}
    netg, netd = gr.build(cfg)
    tr = gr.Trainer(netg, netd)
    n = a.warmup + a.batches
    data = torch.rand(n, a.batch, a.nc, a.isize, a.isize) * 2 - 1

    for i in range(a.warmup):
        tr.step(data[i])
    reinit = 0
    t0 = time.perf_counter()
    for i in range(a.warmup, n):
        reinit += tr.step(data[i])["reinit_d"]
    dt = time.perf_counter() - t0

    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": a.threads,
        "batch": a.batch,
        "batches": a.batches,
        "warmup": a.warmup,
        "cfg": cfg,
        "seconds_per_batch": dt / a.batches,
        "images_per_second": a.batches * a.batch / dt,
        "d_reinits": reinit,
    }, separators=(", ", ": ")))


if __name__ == "__main__":
    main()
