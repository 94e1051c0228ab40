"""make_golden_alad.py - write the ALAD golden files under tests/data/ and check them.

  /usr/bin/python3 tests/bench/reference/make_golden_alad.py

Forward: the tiny configuration CFG (isize 32, nc 1, nz 8, nf 4) from
torch.manual_seed(SEED) with PyTorch's default init (weights and biases on
the scale of 1 / sqrt(fan_in), so that no layer's output is negligible), batch
norm made non-trivial (make_golden.set_batchnorm on E, on G fed E(x), and on
D_xz's image branch), written as
  tests/data/tiny-alad.safetensors         the model
  tests/data/golden-alad-tiny.safetensors  make_golden's 4 inputs and the
    eval-mode outputs of alad_ref.score: z = E(x), x_hat, f_real = f_xx(x, x),
    f_fake = f_xx(x, x_hat), logit_real, logit_fake (D_xx), logit_xz =
    D_xz(x, E(x)), logit_zz = D_zz(E(x), E(x_hat)), and the scores fm, ch, l1, l2
computed in float64 and rounded to float32.
Training: TRAIN_CFG (nz 4, nf 2, dropout 0, sn 1, dzz 1; stored four times, so
small), initialised as the C port's train_begin does from core/rng.c's
generator seeded with TRAIN_SEED (anogan_ref.Rng: the weights N(0, 0.01), then
one u per normalised layer), then two alad_ref.Trainer steps on make_golden_train's
batch of 8 whose z1, z2 come from the same generator (8 * nz normals each, z1
then z2, each step), and train_finish. Written to
  tests/data/golden-alad-train-tiny.safetensors
    input                   the batch
    step1.<tensor>, step2.<tensor>   the live weights (raw / sigma on normalised
                            layers) and buffers after each step
    finish.<tensor>         after train_finish: the normalised moving averages
    step<k>.<loss>          d_xz, d_xx, d_zz, g, e of step k (one value each)
from the float64 run (from the same float32 start), rounded to float32. The
float32 run is compared with it and the differences printed: weights in units
of lr, and, on the normalised layers, relative to the tensor's largest value.
Then the files are read back and the float64 runs repeated from them alone.
Needs torch and numpy; deterministic, a few seconds.
"""

import copy
import os
import sys

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import alad_ref as ar  # noqa: E402
import anogan_ref  # noqa: E402
import make_golden as mg  # noqa: E402
import make_golden_train as mgt  # noqa: E402
import safetensors_io as st  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DATA = os.path.join(ROOT, "tests", "data")
MODEL = os.path.join(DATA, "tiny-alad.safetensors")
GOLDEN = os.path.join(DATA, "golden-alad-tiny.safetensors")
TRAIN = os.path.join(DATA, "golden-alad-train-tiny.safetensors")

CFG = {"isize": 32, "nc": 1, "nz": 8, "nf": 4}
SEED = 3141
TRAIN_CFG = {"isize": 32, "nc": 1, "nz": 4, "nf": 2, "dropout": 0.0, "sn": 1, "dzz": 1}
TRAIN_SEED = 2718
BATCH = 8
STEPS = 2
OUTPUTS = ["z", "x_hat", "f_real", "f_fake", "logit_real", "logit_fake", "logit_xz", "logit_zz",
           "fm", "ch", "l1", "l2"]
LOSSES = ["d_xz", "d_xx", "d_zz", "g", "e"]


class XBranch(torch.nn.Module):
    """D_xz's image branch alone (z = 0), for set_batchnorm."""

    def __init__(self, dxz, nz):
        super().__init__()
        self.dxz, self.nz = dxz, nz

    def forward(self, x):
        return self.dxz(x, x.new_zeros(x.shape[0], self.nz))


def golden_forward():
    torch.manual_seed(SEED)
    nets = ar.build(CFG)
    u8 = mg.make_inputs(CFG["nc"], CFG["isize"], SEED)
    x32 = torch.from_numpy((u8.astype(np.float64) / 127.5 - 1.0).astype(np.float32))
    mg.set_batchnorm(nets["encoder"], x32)
    with torch.no_grad():
        z = nets["encoder"](x32)
    mg.set_batchnorm(nets["generator"], z)
    mg.set_batchnorm(XBranch(nets["discriminator_xz"], CFG["nz"]), x32)
    out32 = ar.score(nets, x32)
    n64 = {k: copy.deepcopy(v).double() for k, v in nets.items()}
    out64 = ar.score(n64, x32.double())
    size = ar.write_model(MODEL, nets, CFG)
    golden = {"input": x32.numpy()}
    for k in OUTPUTS:
        golden[k] = out64[k].float().numpy()
    meta = {"description": "ALAD eval-mode outputs of tiny-alad.safetensors for 4 inputs, "
                           "computed in float64 and rounded to float32",
            "model": "tiny-alad.safetensors",
            "input_order": "gradient,checkerboard,noise,constant128", "software": ar.SOFTWARE}
    gsize = st.save(GOLDEN, golden, meta)
    print("forward %s, torch seed %d" % (CFG, SEED))
    print("  %-44s %7d bytes, %d tensors" % (os.path.relpath(MODEL, ROOT), size,
                                             len(ar.model_tensors(nets))))
    print("  %-44s %7d bytes" % (os.path.relpath(GOLDEN, ROOT), gsize))
    for k in ("fm", "ch", "l1", "l2", "logit_fake"):
        print("  %-10s %s" % (k, np.array2string(golden[k], precision=6)))
    for k in OUTPUTS:
        d = (out32[k].double() - out64[k]).abs().max().item()
        print("  float32 vs float64 %-10s %.3e (rel %.3e)"
              % (k, d, d / max(out64[k].abs().max().item(), 1e-300)))
    # self-check from the files alone
    g, _ = st.load(GOLDEN)
    rn, cfg2, _ = ar.read_model(MODEL)
    assert all(cfg2[k] == v for k, v in CFG.items()), cfg2
    re64 = ar.score({k: v.double() for k, v in rn.items()}, torch.from_numpy(g["input"]).double())
    for k in OUTPUTS:
        assert np.array_equal(re64[k].float().numpy(), g[k]), k
    print("  self-check ok")


def draw(rng, n, nz):
    return torch.from_numpy(np.array([rng.normal() for _ in range(n * nz)], np.float64)
                            .astype(np.float32).reshape(n, nz))


def train_run(dtype, x32):
    """A fresh TRAIN_CFG from core/rng.c's draws, STEPS steps and finish in
    dtype: (before raw, [live after each step], live after finish, [losses])."""
    rng = anogan_ref.Rng(TRAIN_SEED)
    nets = ar.build(TRAIN_CFG)
    us = ar.init_from_rng(nets, TRAIN_CFG, rng)
    before = ar.model_tensors(nets, "raw")
    nets = {k: v.to(dtype) for k, v in nets.items()}
    ar.add_sn(nets, TRAIN_CFG, us)
    tr = ar.Trainer(nets, TRAIN_CFG)
    states, raws, losses = [], [], []
    nz = TRAIN_CFG["nz"]
    for _ in range(STEPS):
        z1 = draw(rng, BATCH, nz).to(dtype)
        z2 = draw(rng, BATCH, nz).to(dtype)
        losses.append(tr.step(x32.to(dtype), z1, z2))
        states.append(ar.model_tensors(nets))
        raws.append(ar.model_tensors(nets, "raw"))
    tr.finish()
    return before, states, raws, ar.model_tensors(nets), losses


def differences(a, b, sn_names, lr):
    """float32 state a against float64 state b: (plain weights max |d| / lr,
    normalised weights max over tensors of max |d| / max |b|, running
    statistics max over tensors of max |d| / max |b|)."""
    plain, norm, stat = 0.0, 0.0, 0.0
    for k in b:
        d = np.abs(a[k] - b[k]).max()
        if "running" in k:
            stat = max(stat, d / max(np.abs(b[k]).max(), 1e-300))
        elif k in sn_names:
            norm = max(norm, d / np.abs(b[k]).max())
        else:
            plain = max(plain, d / lr)
    return plain, norm, stat


def golden_train():
    x32 = torch.from_numpy(mgt.make_batch(BATCH, TRAIN_CFG["isize"], TRAIN_SEED))
    b32, s32, r32, f32, l32 = train_run(torch.float32, x32)
    b64, s64, r64, f64, l64 = train_run(torch.float64, x32)
    assert all(np.array_equal(b32[k], b64[k]) for k in b64)
    golden = {"input": x32.numpy()}
    for i in range(STEPS):
        for k, v in s64[i].items():
            golden["step%d.%s" % (i + 1, k)] = v.astype(np.float32)
        for k in LOSSES:
            golden["step%d.%s" % (i + 1, k)] = np.array([l64[i][k]], np.float32)
    for k, v in f64.items():
        golden["finish." + k] = v.astype(np.float32)
    meta = {"description": "two ALAD training steps and train_finish of the tiny network from "
                           "core/rng.c's init, float64 rounded to float32",
            "rng_seed": str(TRAIN_SEED), "hparams": "lr=0.0002,beta1=0.5,beta2=0.999,ema=0.999",
            "losses": ",".join(LOSSES), "software": ar.SOFTWARE}
    size = st.save(TRAIN, golden, meta)
    print("training %s, rng seed %d, batch %d" % (TRAIN_CFG, TRAIN_SEED, BATCH))
    print("  %-44s %7d bytes" % (os.path.relpath(TRAIN, ROOT), size))
    lr = ar.TRAIN_DEFAULTS["lr"]
    sn_names = set(k for k in s64[0] if not np.array_equal(r64[0][k], s64[0][k]))
    print("  %d normalised weight tensors" % len(sn_names))
    for i in range(STEPS):
        small = 0
        for k in r64[i]:
            if "running" not in k:
                prev = b64[k] if i == 0 else r64[i - 1][k]
                small += int((np.abs(r64[i][k] - prev) < 0.99 * lr).sum())
        raw = max(np.abs(r32[i][k] - r64[i][k]).max() for k in r64[i] if "running" not in k) / lr
        print("  step %d float32 vs float64: raw weights %.2e lr; live: plain weights %.2e lr, "
              "normalised weights %.2e of the tensor's largest, running statistics %.2e; "
              "%d raw weights moved by less than 0.99 lr"
              % ((i + 1, raw) + differences(s32[i], s64[i], sn_names, lr) + (small,)))
        for k in LOSSES:
            a, b = l32[i][k], l64[i][k]
            print("    %-5s %.9f  float32 rel %.2e" % (k, b, abs(a - b) / max(abs(b), 1e-300)))
    print("  finish float32 vs float64: plain weights %.2e lr, normalised weights %.2e, running "
          "statistics %.2e" % differences(f32, f64, sn_names, lr))
    # self-check: the file, and a float64 rerun from its "input" alone
    g, gmeta = st.load(TRAIN)
    assert gmeta == meta and all(np.array_equal(g[k], v) for k, v in golden.items())
    _, re64, _, ref64, _ = train_run(torch.float64, torch.from_numpy(g["input"]))
    for i in range(STEPS):
        for k, v in re64[i].items():
            assert np.array_equal(v.astype(np.float32), g["step%d.%s" % (i + 1, k)]), k
    for k, v in ref64.items():
        assert np.array_equal(v.astype(np.float32), g["finish." + k]), k
    print("  self-check ok")


def main():
    torch.set_num_threads(1)
    golden_forward()
    golden_train()


if __name__ == "__main__":
    main()
