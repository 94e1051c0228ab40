"""make_golden_sn.py - write the spectral-normalisation golden file under tests/data/ and check it.

  /usr/bin/python3 tests/bench/reference/make_golden_sn.py

From torch.manual_seed(SEED) builds a Conv2d(3, 5, 3) and a Linear(7, 4), each
wrapped in torch.nn.utils.spectral_norm (n_power_iterations 1, eps 1e-12,
dim 0: W is (5, 27) and (4, 7)), and one fixed random R per layer with the
weight's shape. In float64 (a double copy of the float32 module: the weight,
u and v are float32 values), the module runs CALLS training-mode forwards,
each one power iteration that updates u, and after the last one L = sum(wn * R)
is differentiated by autograd. tests/data/golden-sn.safetensors holds, per
layer prefix "conv." and "linear.":
  weight_orig               the weight (OC, C, K, K) or (OUT, IN)
  u0 (rows)                 the initial u (weight_u before the first call)
  u<k>, v<k> (rows), (cols) weight_u and weight_v after call k = 1..CALLS
  sigma<k> (1)              u<k>^T W v<k>
  wn<k>                     the normalised weight of call k (module.weight)
  r                         R
  grad                      dL/dweight_orig at the last call
all rounded to float32. The float64 values are then checked against the
formulas of core/layers/spectral_norm.c written out in numpy (forward and
dw = (R - <R, wn> u v^T) / sigma), the same run in float32 is compared with
them (what a float32 port can meet), and the file is read back.
Needs torch and numpy; deterministic, well under a second.
"""

import copy
import os
import sys

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import safetensors_io as st  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
GOLDEN = os.path.join(ROOT, "tests", "data", "golden-sn.safetensors")
SEED = 8642
CALLS = 3
EPS = 1e-12
SOFTWARE = "sqlite-anomaly reference"


def build():
    """The two wrapped layers, their inputs and R, from the seed (float32)."""
    torch.manual_seed(SEED)
    conv = torch.nn.utils.spectral_norm(torch.nn.Conv2d(3, 5, 3), eps=EPS)
    linear = torch.nn.utils.spectral_norm(torch.nn.Linear(7, 4), eps=EPS)
    layers = [("conv", conv, torch.zeros(1, 3, 3, 3)), ("linear", linear, torch.zeros(1, 7))]
    rs = {name: torch.randn(m.weight_orig.shape) for name, m, _ in layers}
    return layers, rs


def run(module, x, r):
    """CALLS training-mode forwards of module on x, then autograd of
    sum(wn * r) at the last: {name: tensor} in the module's dtype."""
    module.train()
    out = {"weight_orig": module.weight_orig.detach().clone(), "u0": module.weight_u.clone()}
    for k in range(1, CALLS + 1):
        module.weight_orig.grad = None
        module(x)   # the pre-hook runs one power iteration and sets module.weight
        wmat = module.weight_orig.detach().reshape(module.weight_orig.shape[0], -1)
        out["u%d" % k] = module.weight_u.clone()
        out["v%d" % k] = module.weight_v.clone()
        out["sigma%d" % k] = torch.dot(module.weight_u, wmat @ module.weight_v).reshape(1)
        out["wn%d" % k] = module.weight.detach().clone()
    (module.weight * r).sum().backward()
    out["r"] = r.clone()
    out["grad"] = module.weight_orig.grad.clone()
    return out


def numpy_check(g):
    """The float64 values against the C file's formulas; max abs difference."""
    w = g["weight_orig"].numpy().reshape(g["u0"].shape[0], -1)
    u = g["u0"].numpy().copy()
    worst = 0.0
    for k in range(1, CALLS + 1):
        v = w.T @ u
        v = v / max(np.linalg.norm(v), EPS)
        wv = w @ v
        u = wv / max(np.linalg.norm(wv), EPS)
        sigma = u @ wv
        wn = w / sigma
        for name, val in (("u", u), ("v", v), ("sigma", [sigma]), ("wn", wn)):
            ref = g["%s%d" % (name, k)].numpy().reshape(np.shape(val))
            worst = max(worst, np.abs(np.asarray(val) - ref).max())
    r = g["r"].numpy().reshape(w.shape)
    dw = (r - (r * wn).sum() * np.outer(u, v)) / sigma
    return max(worst, np.abs(dw - g["grad"].numpy().reshape(w.shape)).max())


def main():
    torch.set_num_threads(1)
    layers, rs = build()
    golden = {}
    print("spectral norm golden: torch seed %d, %d training-mode calls, eps %g"
          % (SEED, CALLS, EPS))
    for name, m, x in layers:
        g64 = run(copy.deepcopy(m).double(), x.double(), rs[name].double())
        g32 = run(copy.deepcopy(m), x, rs[name])
        for k, v in g64.items():
            golden["%s.%s" % (name, k)] = v.float().numpy()
        err = numpy_check(g64)
        assert err < 1e-12, (name, err)
        d32 = max((g32[k].double() - g64[k]).abs().max().item() for k in g64)
        sig = ", ".join("%.6f" % g64["sigma%d" % k].item() for k in range(1, CALLS + 1))
        rows, cols = g64["u0"].shape[0], g64["v1"].shape[0]
        sv = torch.linalg.svdvals(g64["weight_orig"].reshape(rows, -1))[0].item()
        print("  %-6s W (%d, %d): sigma %s (largest singular value %.6f)" % (name, rows, cols, sig, sv))
        print("         numpy formulas within %.1e; float32 run within %.2e" % (err, d32))
    meta = {"description": "torch.nn.utils.spectral_norm (n_power_iterations 1, dim 0) of a "
                           "Conv2d(3, 5, 3) and a Linear(7, 4): %d training-mode calls and the "
                           "gradient of sum(wn * r) at the last; float64, rounded to float32"
                           % CALLS,
            "seed": str(SEED), "eps": repr(EPS), "software": SOFTWARE}
    size = st.save(GOLDEN, golden, meta)
    g, gmeta = st.load(GOLDEN)
    assert gmeta == meta and list(g) == list(golden)
    assert all(g[k].dtype == np.float32 and np.array_equal(g[k], v) for k, v in golden.items())
    # a float64 rerun from the stored weight and u0 alone is bit-identical
    for name, m, x in layers:
        m2 = copy.deepcopy(m).double()
        with torch.no_grad():
            m2.weight_orig.copy_(torch.from_numpy(g[name + ".weight_orig"]))
            m2.weight_u.copy_(torch.from_numpy(g[name + ".u0"]))
        re = run(m2, x.double(), torch.from_numpy(g[name + ".r"]).double())
        for k, v in re.items():
            assert np.array_equal(v.float().numpy(), g["%s.%s" % (name, k)]), (name, k)
    print("  %s: %d bytes, %d tensors; self-check ok"
          % (os.path.relpath(GOLDEN, ROOT), size, len(g)))


if __name__ == "__main__":
    main()
