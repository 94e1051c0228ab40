"""make_golden_train.py - write the golden GANomaly training steps and check them.

  /usr/bin/python3 tests/bench/reference/make_golden_train.py

Builds the tiny configuration (isize 32, nc 1, nz 16, ngf 8, extralayers 0) with
a fresh DCGAN init from torch.manual_seed(4321), makes a batch of 8 images, and
runs two of the authors' training steps (ganomaly_ref.Trainer, which follows
Ganomaly.optimize_params in lib/model.py) on that same batch, once in float32
and once in float64 from the same float32 weights. It writes
  tests/data/golden-train-tiny.safetensors
holding the input, every model tensor before the step and after steps 1 and 2
(weights and BN running statistics of G and D) and the losses of each step, all
from the float64 run rounded to float32. It prints how far the float32 run is
from the float64 one (the tolerance a float32 port can be held to), then
reloads the file, rebuilds the networks from its "before." tensors alone, reruns
the two float64 steps and checks that they reproduce the file bit for bit.
Needs torch and numpy; deterministic (fixed seeds, one thread), about 1 s.
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
OUT = os.path.join(ROOT, "tests", "data", "golden-train-tiny.safetensors")

CFG = {"isize": 32, "nc": 1, "nz": 16, "ngf": 8, "extralayers": 0}
SEED = 4321
BATCH = 8
STEPS = 2
HP = dict(gr.TRAIN_DEFAULTS)
LOSSES = ["err_g", "err_g_adv", "err_g_con", "err_g_enc", "err_d", "err_d_real", "err_d_fake"]
FLIP_REL = 1e-4   # elementwise relative difference above which an element is reported


def make_batch(n, size, seed):
    """(n, 1, size, size) float32 in [-0.9, 0.9]: ramps, sinusoids, a blob, noise,
    and smooth patterns with noise on top. Built in float64, rounded once."""
    rs = np.random.RandomState(seed)
    yy, xx = np.meshgrid(np.arange(size) / (size - 1), np.arange(size) / (size - 1), indexing="ij")
    imgs = [
        1.6 * xx - 0.8,                                                    # horizontal ramp
        0.8 - 1.6 * yy,                                                    # vertical ramp
        0.7 * np.sin(2 * np.pi * 2.0 * xx) * np.cos(2 * np.pi * 1.5 * yy),  # sinusoid
        1.6 * np.exp(-((xx - 0.4) ** 2 + (yy - 0.6) ** 2) / 0.05) - 0.8,  # gaussian blob
        rs.uniform(-0.9, 0.9, (size, size)),                               # uniform noise
        np.clip(0.3 * rs.randn(size, size), -0.9, 0.9),                    # gaussian noise
        0.5 * np.sin(2 * np.pi * 3.0 * (xx + yy) / 2) + rs.uniform(-0.3, 0.3, (size, size)),
        0.6 * np.where((xx < 0.5) == (yy < 0.5), 1.0, -1.0) + rs.uniform(-0.2, 0.2, (size, size)),
    ]
    x = np.stack(imgs[:n])[:, None]
    assert np.abs(x).max() <= 0.9 + 1e-12
    return x.astype(np.float32)


def state(netg, netd):
    """Our model tensor names -> float64 numpy arrays, in model-file order."""
    out = {}
    for prefix, net in (("netg.", netg), ("netd.", netd)):
        for k, v in net.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                out[prefix + k] = v.detach().cpu().double().numpy().copy()
    return out


def set_state(netg, netd, tensors, prefix):
    """Copy tensors[prefix + our name] into netg and netd (shapes must match)."""
    for p, net in (("netg.", netg), ("netd.", netd)):
        sd = net.state_dict()
        for k, v in sd.items():
            if k.endswith("num_batches_tracked"):
                continue
            src = tensors[prefix + p + k]
            assert tuple(src.shape) == tuple(v.shape), (k, src.shape, v.shape)
            with torch.no_grad():
                v.copy_(torch.from_numpy(src))


def grads(netg, netd):
    """Our parameter names -> the gradient the last step's Adam used (G's from
    err_g, D's from err_d; both are still in .grad after Trainer.step)."""
    return {p + k: v.grad.detach().double().numpy().copy()
            for p, net in (("netg.", netg), ("netd.", netd)) for k, v in net.named_parameters()}


def train(netg, netd, x, steps):
    """Run steps Trainer steps on x; returns [state after each step], [losses],
    [gradients of each step]."""
    tr = gr.Trainer(netg, netd, HP)
    states, losses, gs = [], [], []
    for _ in range(steps):
        loss = tr.step(x)
        assert not loss["reinit_d"], "D was re-initialised (err_d %g < 1e-5)" % loss["err_d"]
        states.append(state(netg, netd))
        losses.append(loss)
        gs.append(grads(netg, netd))
    return states, losses, gs


def group_of(name, shape):
    """Tensor group for the float32/float64 report."""
    net = "G" if name.startswith("netg.") else "D"
    if name.endswith("running_mean"):
        return net + " bn running_mean"
    if name.endswith("running_var"):
        return net + " bn running_var"
    if len(shape) == 4:
        return net + " conv weight"
    return net + " bn " + name.rsplit(".", 1)[1]


def compare(s32, s64, before):
    """Per group: max over tensors of max|d| / max|truth|, max elementwise
    |d| / |truth|, count of elements above FLIP_REL, max |d| / lr (the error of
    the update, for parameters), and the largest |truth| and |update| among the
    elements above FLIP_REL."""
    groups = {}
    for k in s64:
        a, b = s32[k], s64[k]
        d = np.abs(a - b)
        g = groups.setdefault(group_of(k, b.shape), {"rel": 0.0, "elem": 0.0, "n": 0, "numel": 0,
                                                     "upd": 0.0, "bad": [], "worst": ""})
        rel = d.max() / max(np.abs(b).max(), 1e-300)
        if rel > g["rel"]:
            g["rel"], g["worst"] = rel, k
        elem = d / np.maximum(np.abs(b), 1e-30)
        g["elem"] = max(g["elem"], elem.max())
        g["numel"] += b.size
        bad = elem > FLIP_REL
        g["n"] += int(bad.sum())
        if "running" not in k:
            g["upd"] = max(g["upd"], d.max() / HP["lr"])
        for i in np.flatnonzero(bad):
            g["bad"].append((k, np.abs(b.flat[i]), np.abs(b.flat[i] - before[k].flat[i]), d.flat[i]))
    return groups


def print_report(step, groups, l32, l64):
    print("step %d: float32 run vs float64 truth" % step)
    print("  %-20s %9s %9s %9s %11s  %s" % ("group", "rel", "elem rel", "|d|/lr", "elems>1e-4", "worst tensor"))
    for name in sorted(groups):
        g = groups[name]
        upd = "%9.2e" % g["upd"] if "running" not in name else "%9s" % "-"
        print("  %-20s %9.2e %9.2e %s %5d/%-5d  %s" % (name, g["rel"], g["elem"], upd, g["n"], g["numel"],
                                                      g["worst"]))
        for k, mag, upd_mag, d in g["bad"][:6]:
            print("      %s: |truth| %.3e, |update| %.3e (%.3f lr), |d| %.3e (%.3e lr)"
                  % (k, mag, upd_mag, upd_mag / HP["lr"], d, d / HP["lr"]))
        if len(g["bad"]) > 6:
            print("      ... %d more" % (len(g["bad"]) - 6))
    for k in LOSSES:
        d = abs(l32[k] - l64[k])
        print("  %-10s %.9f  float32 %.9f  rel %.2e" % (k, l64[k], l32[k], d / abs(l64[k])))


def print_tolerance(golden, s32, g64):
    """Fit the parameter tolerance |w - w_gold| <= a * lr + 2^-22 * |w_gold| to the
    float32 run: the smallest a it needs, for the elements whose golden step-1
    update is at least 0.99 lr ("stable": |g1| >= ~1e-6, Adam's first update is
    lr * g / (|g| + eps) ~ lr * sign(g)) and for the rest."""
    lr = HP["lr"]
    names = [k[len("before."):] for k in golden if k.startswith("before.") and "running" not in k]
    before = np.concatenate([golden["before." + k].astype(np.float64).ravel() for k in names])
    r1 = np.abs(np.concatenate([golden["step1." + k].astype(np.float64).ravel() for k in names]) - before) / lr
    stable = r1 >= 0.99
    print("parameters: tolerance |w - w_gold| <= a * lr + 2^-22 * |w_gold|; a the float32 run needs")
    for i in range(STEPS):
        gold = np.concatenate([golden["step%d.%s" % (i + 1, k)].astype(np.float64).ravel() for k in names])
        w32 = np.concatenate([s32[i][k].ravel() for k in names])
        need = (np.abs(w32 - gold) - 2.0 ** -22 * np.abs(gold)) / lr
        print("  step %d: %d stable elements (golden step-1 update >= 0.99 lr) %.2e; other %d %.2e"
              % (i + 1, stable.sum(), need[stable].max(), (~stable).sum(), need[~stable].max()))
    for i in range(STEPS):
        g = np.abs(np.concatenate([g64[i][k].ravel() for k in names]))
        print("  step %d gradients (float64): min |g| %.2e; %d below 1e-6, %d below 1e-5, %d exactly 0"
              % (i + 1, g.min(), (g < 1e-6).sum(), (g < 1e-5).sum(), (g == 0).sum()))
    print("running statistics and losses: see 'rel' above (max |d| / max |truth| per tensor)")


def main():
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    netg, netd = gr.build(CFG)
    before = state(netg, netd)
    for k, v in before.items():
        if k.endswith("running_mean"):
            assert not v.any(), k
        if k.endswith("running_var"):
            assert (v == 1).all(), k
    x32 = torch.from_numpy(make_batch(BATCH, CFG["isize"], SEED))

    g64, d64 = copy.deepcopy(netg).double(), copy.deepcopy(netd).double()
    s32, l32, _ = train(netg, netd, x32, STEPS)
    s64, l64, gr64 = train(g64, d64, x32.double(), STEPS)

    golden = {"input": x32.numpy()}
    golden.update({"before." + k: v for k, v in before.items()})
    for i in range(STEPS):
        golden.update({"step%d.%s" % (i + 1, k): v for k, v in s64[i].items()})
        golden.update({"step%d.%s" % (i + 1, k): np.array([l64[i][k]]) for k in LOSSES})
    golden = {k: np.asarray(v, dtype=np.float32) for k, v in golden.items()}
    meta = {
        "description": "two GANomaly training steps (the authors' optimize_params) on one batch, "
                       "from a fresh DCGAN init; computed in float64 and rounded to float32",
        "step": "G(x); D(x); D(fake.detach()); G loss w_adv*mean((D(x)[1]-D(fake)[1])^2)"
                "+w_con*mean|fake-x|+w_enc*mean((z'-z)^2), Adam on G; D loss "
                "0.5*(BCE(D(x)[0],1)+BCE(D(fake.detach())[0],0)) with the pre-step outputs, Adam on D; "
                "D runs 4 times per step in train mode, G once",
        "lr": repr(HP["lr"]), "beta1": repr(HP["beta1"]), "beta2": repr(HP["beta2"]),
        "w_adv": "%g" % HP["w_adv"], "w_con": "%g" % HP["w_con"], "w_enc": "%g" % HP["w_enc"],
        "batch": str(BATCH), "isize": str(CFG["isize"]), "nz": str(CFG["nz"]), "ngf": str(CFG["ngf"]),
        "nc": str(CFG["nc"]), "extralayers": str(CFG["extralayers"]),
        "bn_momentum": "0.1", "bn_eps": "1e-5", "adam_eps": "1e-8",
        "steps": str(STEPS), "torch_seed": str(SEED),
        "software": gr.SOFTWARE,
    }
    size = st.save(OUT, golden, meta)

    print("%s: %d bytes, %d tensors" % (os.path.relpath(OUT, ROOT), size, len(golden)))
    for i in range(STEPS):
        print()
        print_report(i + 1, compare(s32[i], s64[i], before), l32[i], l64[i])
    print()
    print_tolerance(golden, s32, gr64)
    print()
    print("D re-initialised: no (err_d %s, threshold 1e-5)"
          % ", ".join("%.6f" % l["err_d"] for l in l64))

    # ---- self-check: everything again from the file alone ----
    t, tmeta = st.load(OUT)
    assert tmeta == meta and list(t) == list(golden)
    assert all(np.array_equal(t[k], golden[k]) for k in golden)
    header, data = st.read_raw(OUT)
    assert list(header)[0] == "__metadata__" and (size - len(data)) % 8 == 0
    ng, nd = gr.NetG(CFG).double(), gr.NetD(CFG).double()
    set_state(ng, nd, {k: v.astype(np.float64) for k, v in t.items()}, "before.")
    rs, rl, _ = train(ng, nd, torch.from_numpy(t["input"]).double(), STEPS)
    for i in range(STEPS):
        pre = "step%d." % (i + 1)
        for k, v in rs[i].items():
            assert np.array_equal(v.astype(np.float32), t[pre + k]), pre + k
        for k in LOSSES:
            assert np.float32(rl[i][k]) == t[pre + k][0], pre + k
    print("self-check ok: file reloads, nets rebuilt from before.* reproduce step1.* and step2.* bit for bit")


if __name__ == "__main__":
    main()
