"""make_golden.py - write the GANomaly golden files under tests/data/ and check them.

  /usr/bin/python3 tests/bench/reference/make_golden.py

For each configuration in CONFIGS it builds NetG and NetD (ganomaly_ref.py) from
a fixed seed, makes batch norm non-trivial (random running statistics on the
scale of the activations, random affine parameters; see set_batchnorm) so that
inference-mode BN is exercised, and writes
  tests/data/<name>-ganomaly.safetensors     the model (write_model)
  tests/data/golden-<name>.safetensors       4 inputs and the eval-mode outputs
The outputs are computed in float64 (a double copy of the float32 weights) and
rounded to float32; the same run in float32 is compared with them and the
largest differences are printed (they tell what tolerance a float32 port can
meet). Then both files are read back with safetensors_io, the networks are
rebuilt from the model file alone, and the outputs are recomputed and compared.
Needs torch and numpy; deterministic (fixed seeds, one thread).
"""

import copy
import os
import sys

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import ganomaly_ref as gr  # noqa: E402
import safetensors_io as st  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DATA = os.path.join(ROOT, "tests", "data")

CONFIGS = [
    ("tiny", {"isize": 32, "nc": 1, "nz": 16, "ngf": 8, "extralayers": 0}, 1234),
    ("tiny64rgb", {"isize": 64, "nc": 3, "nz": 8, "ngf": 4, "extralayers": 1}, 5678),
]

OUTPUTS = ["z", "z_prime", "x_hat", "score", "recon_l1", "d_features", "d_prob"]


def set_batchnorm(net, x):
    """Give every BatchNorm of net non-trivial inference statistics and affine
    parameters, on the scale of the activations it sees for x: per channel, with
    m, v the mean and variance of its input over (N, H, W) given the BNs before
    it, running_mean = m + N(0, 0.1) * sqrt(v), running_var = v * U(0.5, 1.5),
    weight ~ N(1, 0.1), bias ~ N(0, 0.1) (torch's global RNG). Set in forward
    order, one forward pass each. Fixed N(0, 0.1) / U(0.5, 1.5) statistics would
    swamp the small activations of a DCGAN-initialised net and make the outputs
    almost independent of the input."""
    net.eval()
    with torch.no_grad():
        for m in net.modules():
            if not isinstance(m, torch.nn.BatchNorm2d):
                continue
            seen = {}
            hook = m.register_forward_hook(lambda mod, inp, out: seen.setdefault("x", inp[0].clone()))
            net(x)
            hook.remove()
            a = seen["x"].double()
            mean, var = a.mean(dim=(0, 2, 3)), a.var(dim=(0, 2, 3), unbiased=False)
            c = mean.numel()
            m.running_mean.copy_(mean + torch.randn(c, dtype=torch.float64) * 0.1 * var.sqrt())
            m.running_var.copy_(var * (0.5 + torch.rand(c, dtype=torch.float64)))
            m.weight.normal_(1.0, 0.1)
            m.bias.normal_(0.0, 0.1)


def make_inputs(nc, size, seed):
    """(4, nc, size, size) uint8: smooth gradient, checkerboard (4-pixel squares,
    0/255), uniform noise, constant 128."""
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    ramps = [xx / (size - 1), yy / (size - 1), (xx + yy) / (2 * (size - 1))]
    if nc == 1:
        ramps = [ramps[2]]
    grad = np.stack([np.rint(255 * r) for r in ramps[:nc]])
    check = np.broadcast_to(((xx // 4 + yy // 4) % 2) * 255, (nc, size, size))
    noise = np.random.RandomState(seed).randint(0, 256, size=(nc, size, size))
    const = np.full((nc, size, size), 128)
    return np.stack([grad, check, noise, const]).astype(np.uint8)


def forward(netg, netd, x):
    """All golden outputs for x (N, C, H, W), in x's dtype."""
    with torch.no_grad():
        x_hat, z, zp = netg(x)
        prob, feat = netd(x)
    n = x.shape[0]
    z, zp = z.reshape(n, -1), zp.reshape(n, -1)
    return {
        "z": z,
        "z_prime": zp,
        "x_hat": x_hat,
        "score": ((z - zp) ** 2).mean(dim=1),
        "recon_l1": (x - x_hat).abs().reshape(n, -1).mean(dim=1),
        "d_features": feat.reshape(n, -1),
        "d_prob": prob,
    }


def max_diffs(a, b):
    """name -> (max abs diff, max abs diff / max |b|) over OUTPUTS."""
    out = {}
    for k in OUTPUTS:
        d = (a[k].double() - b[k].double()).abs().max().item()
        out[k] = (d, d / max(b[k].double().abs().max().item(), 1e-300))
    return out


def run_config(name, cfg, seed):
    torch.manual_seed(seed)
    netg, netd = gr.build(cfg)
    u8 = make_inputs(cfg["nc"], cfg["isize"], seed)
    x32 = torch.from_numpy((u8.astype(np.float64) / 127.5 - 1.0).astype(np.float32))
    set_batchnorm(netg, x32)
    set_batchnorm(netd, x32)
    out32 = forward(netg, netd, x32)
    out64 = forward(copy.deepcopy(netg).double(), copy.deepcopy(netd).double(), x32.double())
    diffs = max_diffs(out32, out64)

    model_path = os.path.join(DATA, "%s-ganomaly.safetensors" % name)
    golden_path = os.path.join(DATA, "golden-%s.safetensors" % name)
    model_size = gr.write_model(model_path, netg, netd, cfg)
    golden = {"input_u8": u8.astype(np.float32), "input": x32.numpy()}
    for k in OUTPUTS:
        golden[k] = out64[k].float().numpy()
    meta = {
        "description": "GANomaly eval-mode outputs of %s-ganomaly.safetensors for 4 inputs, "
                       "computed in float64 and rounded to float32" % name,
        "model": "%s-ganomaly.safetensors" % name,
        "input_order": "gradient,checkerboard,noise,constant128",
        "d_features_shape": "N,%d,4,4" % (cfg["ngf"] * cfg["isize"] // 8),
        "software": gr.SOFTWARE,
    }
    golden_size = st.save(golden_path, golden, meta)

    # ---- self-check: everything again from the files alone ----
    g, gmeta = st.load(golden_path)
    assert list(g) == ["input_u8", "input"] + OUTPUTS, list(g)
    assert gmeta == meta
    for k, v in golden.items():
        assert g[k].dtype == np.float32 and np.array_equal(g[k], v), k
    assert np.array_equal(g["input"], (g["input_u8"].astype(np.float64) / 127.5 - 1).astype(np.float32))
    ng, nd, cfg2, mmeta = gr.read_model(model_path)      # verifies checksum and keys
    assert cfg2 == cfg, (cfg2, cfg)
    header, data = st.read_raw(model_path)
    assert mmeta["checksum"] == gr.crc32_hex(data)
    assert (os.path.getsize(model_path) - len(data)) % 8 == 0, "header not padded to 8 bytes"
    assert list(header)[0] == "__metadata__"
    tensors, _ = st.load(model_path)
    ref = gr.model_tensors(netg, netd)
    assert list(tensors) == list(ref)
    assert all(np.array_equal(tensors[k], ref[k]) for k in ref)
    x = torch.from_numpy(g["input"])
    re64 = forward(ng.double(), nd.double(), x.double())
    for k in OUTPUTS:
        assert np.array_equal(re64[k].float().numpy(), g[k]), "float64 rerun differs on " + k
    ng2, nd2, _, _ = gr.read_model(model_path)
    re32 = forward(ng2, nd2, x)
    rediffs = max_diffs(re32, {k: torch.from_numpy(g[k]) for k in OUTPUTS})

    print("%s: %s" % (name, cfg))
    print("  %-42s %7d bytes, %d tensors, %s"
          % (os.path.relpath(model_path, ROOT), model_size, len(tensors), mmeta["checksum"]))
    print("  %-42s %7d bytes" % (os.path.relpath(golden_path, ROOT), golden_size))
    print("  score %s" % np.array2string(g["score"], precision=6))
    print("  d_prob %s" % np.array2string(g["d_prob"], precision=6))
    print("  float32 run vs float64 truth (max abs, max abs / max |truth|):")
    for k in OUTPUTS:
        print("    %-10s %.3e  %.3e" % (k, diffs[k][0], diffs[k][1]))
    worst = max(d[0] for d in rediffs.values())
    print("  self-check ok: files reload, model rebuilds, float64 rerun bit-identical, "
          "float32 rerun within %.3e" % worst)
    return tensors


def main():
    torch.set_num_threads(1)
    os.makedirs(DATA, exist_ok=True)
    for name, cfg, seed in CONFIGS:
        run_config(name, cfg, seed)


if __name__ == "__main__":
    main()
