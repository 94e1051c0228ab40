"""make_models.py - the GANomaly models of the "peers" speed benchmark, made once.

  /usr/bin/python3 tests/bench/peers/make_models.py [--out build/bench] [--sizes 32 64]

For each size S writes, unless both files are already there and newer than
this script:
  OUT/speed-ganomaly-S.safetensors  our model file (nz 100, ngf 64, 1 channel,
                                    S x S, fit resize), which anomaly_model_from_file
                                    and bench_core load
  OUT/speed-ganomaly-S.onnx         its generator for ONNX Runtime, exported from the
                                    reference NetG that ganomaly_ref.read_model loads
                                    back from that file (eval mode): input "x"
                                    (N, 1, S, S), outputs "z" and "z_prime" (N, nz),
                                    N dynamic; score = mean over nz of (z - z')^2
The weights are not trained (speed only): DCGAN initialisation (seed S), then
the generator's BatchNorm running statistics set to the exact mean and
variance of 256 Fashion-MNIST training images resized to S x S, so that
activations have the scale of a real model's (no tiny or denormal values).

Prints one JSON line: for each size the two paths, the parameter count of
NetG and its FLOP per image (2 per multiply-add over every Conv2d and
ConvTranspose2d, counted from the layers' shapes in one forward pass).
Needs torch and numpy.
"""

import argparse
import gzip
import json
import os
import sys

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import ganomaly_ref as gr  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
NZ, NGF, NC = 100, 64, 1


def fashion_images(n, size):
    """The first n Fashion-MNIST training images, bilinear to size x size, in [-1, 1]."""
    with gzip.open(DATA, "rb") as f:
        raw = f.read(16 + n * 28 * 28)
    x = np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, 1, 28, 28).astype(np.float32)
    x = torch.from_numpy(x / 127.5 - 1.0)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def set_bn_stats(netg, x):
    """BatchNorm running mean and variance = their exact values over x (cumulative average)."""
    bns = [m for m in netg.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    netg.train()
    with torch.no_grad():
        for i in range(0, x.shape[0], 64):
            netg(x[i:i + 64])
    for m in bns:
        m.momentum = 0.1
    netg.eval()


def flops_per_image(netg, size):
    """2 x multiply-adds of every conv and transposed conv, for one image (a forward pass)."""
    total = [0]

    def hook(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        cin = mod.in_channels // mod.groups
        if isinstance(mod, nn.ConvTranspose2d):
            # every input pixel meets k weights for each output channel
            n = inp[0].shape[2] * inp[0].shape[3] * cin * mod.out_channels * k
        else:
            n = out.shape[2] * out.shape[3] * cin * mod.out_channels * k
        total[0] += 2 * n

    hs = [m.register_forward_hook(hook) for m in netg.modules()
          if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        netg(torch.zeros(1, NC, size, size))
    for h in hs:
        h.remove()
    return total[0]


class Latents(nn.Module):
    """NetG's scoring outputs: (z, z') flattened to (N, nz)."""

    def __init__(self, netg):
        super().__init__()
        self.netg = netg

    def forward(self, x):
        _, z, z_prime = self.netg(x)
        return z.flatten(1), z_prime.flatten(1)


def fresh(paths):
    me = os.path.getmtime(os.path.abspath(__file__))
    return all(os.path.exists(p) and os.path.getmtime(p) > me for p in paths)


def make(out, size):
    st = os.path.join(out, "speed-ganomaly-%d.safetensors" % size)
    onnx = os.path.join(out, "speed-ganomaly-%d.onnx" % size)
    made = False
    if not fresh([st, onnx]):
        cfg = {"isize": size, "nc": NC, "nz": NZ, "ngf": NGF, "extralayers": 0}
        torch.manual_seed(size)
        netg, netd = gr.build(cfg)
        set_bn_stats(netg, fashion_images(256, size))
        gr.write_model(st, netg, netd, cfg)
        netg, _, _, _ = gr.read_model(st)           # what our loader sees, eval mode
        torch.onnx.export(Latents(netg).eval(), torch.zeros(1, NC, size, size), onnx,
                          input_names=["x"], output_names=["z", "z_prime"],
                          dynamic_axes={"x": {0: "n"}, "z": {0: "n"}, "z_prime": {0: "n"}},
                          opset_version=17, do_constant_folding=True)
        made = True
    netg, _, _, _ = gr.read_model(st)
    return {"model": st, "onnx": onnx, "made": made, "nz": NZ, "ngf": NGF, "channels": NC,
            "params": sum(p.numel() for p in netg.parameters()),
            "flops": flops_per_image(netg, size)}


def main():
    ap = argparse.ArgumentParser(description="make the peers benchmark's GANomaly models")
    ap.add_argument("--out", default="build/bench")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    print(json.dumps({str(s): make(a.out, s) for s in a.sizes}, separators=(", ", ": ")))


if __name__ == "__main__":
    main()
