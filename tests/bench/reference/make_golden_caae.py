"""make_golden_caae.py - write the cAAE golden files under tests/data/ and check them.

  /usr/bin/python3 tests/bench/reference/make_golden_caae.py

tests/data/golden-caae-tiny.safetensors: inference and the gradient penalty.
  The model (side 32, nc 1, nz 8, nf 2, critic 16 -> 32) with torch's default
  init from torch.manual_seed(FWD_SEED) and non-trivial batch norm
  (make_golden.set_batchnorm on the encoder then the decoder: running statistics
  on the scale of the activations, random affine parameters), every tensor
  under its own name, and:
    input (4, 1, 32, 32)      make_golden's 4 images / 127.5 - 1
    z (4, nz), x_hat (4, 1, 32, 32)     E(x), Dec(z) in eval mode
    residual, l2 (4)          mean |x - x_hat|, mean (x - x_hat)^2
    critic_z (4, nz), critic_out (4, 1)   D on N(0, 1.5^2) latents
    gp_zhat (6, nz)           N(0, 1.5^2) latents
    gp (1), gp_dz (6, nz)     the penalty mean_i (||grad D(z_i)|| - 1)^2, grad D
    gp_grad.<critic tensor>   dGP/dtheta by autograd (create_graph=True)
  in float64 from the float32 weights, rounded to float32.
tests/data/golden-caae-train-tiny.safetensors: two training steps.
  The model (side 16, nc 3, nz 8, nf 2, critic 16 -> 32, lr 2e-4, n_critic 2,
  n_critic_early 3, early_epochs 1, one batch an epoch: 3 critic steps, then 2)
  initialised as core/detectors/caae.c does from core/rng.c's generator seeded
  with TRAIN_SEED; the same generator then draws z_p and eps, as the C
  trainer does. Stored:
    input (4, 3, 16, 16)      from make_golden_train's batch
    init.<tensor>             a few tensors of the initialisation
    step1.<loss>, step2.<loss>   rec, cons, critic, gp, enc (1)
    step2.<tensor>            every tensor after step 2
  from a float64 run rounded to float32; the float32 run's distance is printed.
Then both files are read back and the float64 runs repeated bit for bit.
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

import caae_ref as cr  # noqa: E402
import make_golden as mg  # noqa: E402
import make_golden_train as mgt  # noqa: E402
import safetensors_io as st  # noqa: E402
from ganomaly_ref import SOFTWARE  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DATA = os.path.join(ROOT, "tests", "data")
FWD = os.path.join(DATA, "golden-caae-tiny.safetensors")
TRAIN = os.path.join(DATA, "golden-caae-train-tiny.safetensors")

FWD_CFG = {"side": 32, "nc": 1, "nz": 8, "nf": 2, "critic_h1": 16, "critic_h2": 32}
FWD_SEED = 8642
TRAIN_CFG = {"side": 16, "nc": 3, "nz": 8, "nf": 2, "critic_h1": 16, "critic_h2": 32}
TRAIN_HP = {"lr": 2e-4, "n_critic": 2, "n_critic_early": 3, "early_epochs": 1,
            "epoch_batches": 1}
TRAIN_SEED, BATCH = 2024, 4
INIT_KEYS = ["encoder.conv1.weight", "encoder.bn1.weight", "encoder.res4.bn3.weight",
             "decoder.dense.weight", "decoder.res1.deconv1.weight", "critic.h2.weight"]


def forward_outputs(model, x, zc, zhat):
    """Every golden output of the forward file, in the model's dtype."""
    model.eval()
    with torch.no_grad():
        z = model.encoder(x)
        xh = model.decoder(z)
        res, l2, _ = cr.residual(x, xh)
        cout = model.critic(zc)
    crit = model.critic
    crit.zero_grad()
    gp, g = cr.gradient_penalty(crit, zhat)
    gp.backward()
    out = {"z": z, "x_hat": xh, "residual": res, "l2": l2, "critic_out": cout,
           "gp": gp.detach().reshape(1), "gp_dz": g.detach()}
    for k, p in crit.named_parameters():
        # a parameter outside the graph of grad D (the last bias) has gradient 0
        out["gp_grad.critic." + k] = (p.grad.detach().clone() if p.grad is not None
                                      else torch.zeros_like(p))
    return out


def make_forward():
    torch.manual_seed(FWD_SEED)
    model = cr.CAAE(FWD_CFG)
    u8 = mg.make_inputs(FWD_CFG["nc"], FWD_CFG["side"], FWD_SEED)
    x = torch.from_numpy((u8.astype(np.float64) / 127.5 - 1.0).astype(np.float32))
    mg.set_batchnorm(torch.nn.Sequential(model.encoder, model.decoder), x)   # reconstruct(x)
    zc = (1.5 * torch.randn(4, FWD_CFG["nz"])).float()
    zhat = (1.5 * torch.randn(6, FWD_CFG["nz"])).float()
    out32 = forward_outputs(model, x, zc, zhat)
    m64 = copy.deepcopy(model).double()
    out64 = forward_outputs(m64, x.double(), zc.double(), zhat.double())
    golden = dict(cr.tensors(model))
    golden.update({"input": x.numpy(), "critic_z": zc.numpy(), "gp_zhat": zhat.numpy()})
    for k, v in out64.items():
        golden[k] = v.float().numpy()
    meta = {"description": "cAAE side 32, nc 1, nz 8, nf 2, critic 16-32: eval-mode outputs "
                           "and the gradient penalty with autograd's gradients; float64 "
                           "rounded to float32",
            "input_order": "gradient,checkerboard,noise,constant128", "software": SOFTWARE}
    size = st.save(FWD, golden, meta)
    g, gm = st.load(FWD)
    assert gm == meta and all(np.array_equal(g[k], v) for k, v in golden.items())
    m2 = cr.CAAE(FWD_CFG)
    cr.load_tensors(m2, g)
    re64 = forward_outputs(m2.double(), torch.from_numpy(g["input"]).double(),
                           torch.from_numpy(g["critic_z"]).double(),
                           torch.from_numpy(g["gp_zhat"]).double())
    for k, v in re64.items():
        assert np.array_equal(v.float().numpy(), g[k]), "float64 rerun differs on " + k
    print("%s: %d bytes, %d tensors" % (os.path.relpath(FWD, ROOT), size, len(golden)))
    print("  residual %s  gp %.6f" % (np.array2string(g["residual"], precision=5), g["gp"][0]))
    print("  float32 run vs float64 (max |d| / max(1, max |truth|)):")
    for k in out64:
        d = (out32[k].double() - out64[k]).abs().max().item()
        print("    %-28s %.2e" % (k, d / max(1.0, out64[k].abs().max().item())))


def make_batch():
    """(4, 3, 16, 16) float32: channel c of image i is make_golden_train's image (i + 3c) % 8."""
    b = mgt.make_batch(8, TRAIN_CFG["side"], TRAIN_SEED)[:, 0]
    return np.stack([np.stack([b[(i + 3 * c) % 8] for c in range(3)]) for i in range(BATCH)])


def train_run(model, x, rng):
    tr = cr.Trainer(model, TRAIN_HP, rng)
    losses = [tr.step(x) for _ in range(2)]
    return losses, {k: v.astype(np.float64) for k, v in cr.tensors(model).items()}


def make_train():
    rng = cr.Rng(TRAIN_SEED)
    model = cr.CAAE(TRAIN_CFG)
    cr.init_like_c(model, rng)
    init = cr.tensors(model)
    x = torch.from_numpy(make_batch())
    l32, t32 = train_run(copy.deepcopy(model), x, copy.deepcopy(rng))
    l64, t64 = train_run(copy.deepcopy(model).double(), x.double(), copy.deepcopy(rng))
    golden = {"input": x.numpy()}
    for k in INIT_KEYS:
        golden["init." + k] = init[k]
    for s in range(2):
        for k in cr.LOSSES:
            golden["step%d.%s" % (s + 1, k)] = np.array([l64[s][k]], np.float32)
    for k, v in t64.items():
        golden["step2." + k] = v.astype(np.float32)
    meta = {"description": "two cAAE training steps from core/rng.c's generator seeded %d "
                           "(init, z_p and eps), float64 rounded to float32" % TRAIN_SEED,
            "cfg": str(TRAIN_CFG), "hp": str(TRAIN_HP), "losses": ",".join(cr.LOSSES),
            "software": SOFTWARE}
    size = st.save(TRAIN, golden, meta)
    g, gm = st.load(TRAIN)
    assert gm == meta and all(np.array_equal(g[k], v) for k, v in golden.items())
    rng2 = cr.Rng(TRAIN_SEED)
    m2 = cr.CAAE(TRAIN_CFG)
    cr.init_like_c(m2, rng2)
    for k in INIT_KEYS:
        assert np.array_equal(cr.tensors(m2)[k], g["init." + k]), k
    re, rt = train_run(m2.double(), torch.from_numpy(g["input"]).double(), rng2)
    for s in range(2):
        for k in cr.LOSSES:
            assert np.float32(re[s][k]) == g["step%d.%s" % (s + 1, k)][0], k
    for k, v in rt.items():
        assert np.array_equal(v.astype(np.float32), g["step2." + k]), k
    print("%s: %d bytes, %d tensors" % (os.path.relpath(TRAIN, ROOT), size, len(golden)))
    lr = TRAIN_HP["lr"]
    for s in range(2):
        print("  step %d losses %s; float32 rel %s" % (
            s + 1, " ".join("%s %.6g" % (k, l64[s][k]) for k in cr.LOSSES),
            " ".join("%.1e" % (abs(l32[s][k] - l64[s][k]) / max(1e-3, abs(l64[s][k])))
                     for k in cr.LOSSES)))
    wmax, smax, wname = 0.0, 0.0, ""
    moved = []
    for k in t64:
        d = np.abs(t32[k] - t64[k])
        if "running" in k:
            smax = max(smax, d.max() / max(np.abs(t64[k]).max(), 1e-3))
        else:
            if d.max() / lr > wmax:
                wmax, wname = d.max() / lr, k
            moved.append(np.abs(t64[k] - init[k].astype(np.float64)).max() / lr)
    print("  step 2 float32 vs float64: weights max |d| %.2e lr (%s), running stats %.2e "
          "of the tensor's max; weights moved up to %.1f lr" % (wmax, wname, smax, max(moved)))


if __name__ == "__main__":
    torch.set_num_threads(1)
    make_forward()
    make_train()
