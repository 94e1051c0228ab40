"""make_golden_anogan.py - write the AnoGAN golden files under tests/data/ and check them.

  /usr/bin/python3 tests/bench/reference/make_golden_anogan.py

Builds the tiny AnoGAN (isize 32, nc 1, nz 16, ngf 8, extralayers 0) from
torch.manual_seed(2468) with the DCGAN init, makes batch norm non-trivial
(make_golden.set_batchnorm: running statistics on the scale of the activations,
random affine parameters), and writes
  tests/data/tiny-anogan.safetensors          the model (anogan_ref.write_model)
  tests/data/golden-anogan-tiny.safetensors   the golden values:
    z (4, nz)                 4 latents, N(0, 1)
    g_out (4, 1, 32, 32)      G(z), eval mode
    input_u8, input           make_golden's 4 images (gradient, checkerboard,
                              noise, constant 128), and input / 127.5 - 1
    d_features (4, 64, 4, 4), d_prob (4)   D on input, eval mode
    search_input (2, 1, 32, 32)   a generated image plus noise, and the gradient image
    search_z0 (2, nz)         the start of the search (one row each)
    search_loss0 (2)          L at z0
    search_z (2, nz)          z after 5 Adam steps (lr 0.01, betas (0.5, 0.999)) on L, lambda 0.1
    search_loss, search_residual, search_discrimination (2)   at that z
and
  tests/data/golden-anogan-train-tiny.safetensors   two DCGAN training steps:
    input (8, 1, 32, 32)      make_golden_train's batch
    z1, z2 (8, nz)            the z of each step: rng_normal() of core/rng.c
                              seeded with Z_SEED (anogan_ref.Rng), 8 * nz a step
    before.<tensor>, step1.<tensor>, step2.<tensor>   every model tensor
    loss1, loss2 (4)          err_g, err_d, err_d_real, err_d_fake of each step
  from a fresh DCGAN init (torch.manual_seed(TRAIN_SEED)), anogan_ref.Trainer.
Everything is computed in float64 (a double copy of the float32 weights) and
rounded to float32; the same run in float32 is compared with it and the largest
differences are printed (what a float32 port can meet). Then the files are read
back, the networks rebuilt from the model file alone and the float64 run
repeated bit for bit. Needs torch and numpy; deterministic, under a second.
"""

import copy
import os
import sys

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import anogan_ref as ar  # noqa: E402
import ganomaly_ref as gr  # noqa: E402
import make_golden as mg  # noqa: E402
import make_golden_train as mgt  # noqa: E402
import safetensors_io as st  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DATA = os.path.join(ROOT, "tests", "data")
MODEL = os.path.join(DATA, "tiny-anogan.safetensors")
GOLDEN = os.path.join(DATA, "golden-anogan-tiny.safetensors")
TRAIN = os.path.join(DATA, "golden-anogan-train-tiny.safetensors")
TRAIN_SEED, Z_SEED, BATCH = 1357, 99, 8

CFG = {"isize": 32, "nc": 1, "nz": 16, "ngf": 8, "extralayers": 0}
SEED = 2468
STEPS, LAM, LR, BETA1 = 5, 0.1, 0.01, 0.5

FORWARD = ["g_out", "d_features", "d_prob"]
SEARCH = ["search_loss0", "search_z", "search_loss", "search_residual", "search_discrimination"]


def compute(netg, netd, z, x, sx, sz0):
    """All golden outputs, in the dtype of the inputs."""
    with torch.no_grad():
        g_out = netg(z.reshape(z.shape[0], -1, 1, 1))
        prob, feat = netd(x)
        _, fsx = netd(sx)
        loss0, _, _ = ar.mapping_loss(netg, netd, sx, fsx, sz0, LAM)
    zs, loss, res, dis = ar.search(netg, netd, sx, sz0, STEPS, LAM, LR, BETA1)
    return {"g_out": g_out, "d_features": feat.reshape(x.shape[0], -1), "d_prob": prob,
            "search_loss0": loss0, "search_z": zs, "search_loss": loss,
            "search_residual": res, "search_discrimination": dis}


def max_diffs(a, b):
    """name -> (max abs diff, max abs diff / max |b|)."""
    out = {}
    for k in FORWARD + SEARCH:
        d = (a[k].double() - b[k].double()).abs().max().item()
        out[k] = (d, d / max(b[k].double().abs().max().item(), 1e-300))
    return out


def main():
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    netg, netd = ar.build(CFG)
    nz, size = CFG["nz"], CFG["isize"]
    z = torch.randn(4, nz)
    u8 = mg.make_inputs(CFG["nc"], size, SEED)
    x32 = torch.from_numpy((u8.astype(np.float64) / 127.5 - 1.0).astype(np.float32))
    mg.set_batchnorm(netg, z.reshape(4, nz, 1, 1))
    mg.set_batchnorm(netd, x32)
    netg.eval()
    netd.eval()
    # the search inputs: G(z') plus a little noise (close to the range of G),
    # and the gradient image (far from it)
    with torch.no_grad():
        near = netg(torch.randn(1, nz, 1, 1)) + 0.05 * torch.randn(1, 1, size, size)
    sx = torch.cat([near.clamp(-1, 1), x32[:1]]).float()
    sz0 = torch.randn(2, nz)

    out32 = compute(netg, netd, z, x32, sx, sz0)
    out64 = compute(copy.deepcopy(netg).double(), copy.deepcopy(netd).double(),
                    z.double(), x32.double(), sx.double(), sz0.double())
    diffs = max_diffs(out32, out64)

    model_size = ar.write_model(MODEL, netg, netd, CFG)
    golden = {"z": z.numpy(), "input_u8": u8.astype(np.float32), "input": x32.numpy(),
              "search_input": sx.numpy(), "search_z0": sz0.numpy()}
    for k in FORWARD + SEARCH:
        golden[k] = out64[k].float().numpy()
    meta = {
        "description": "AnoGAN outputs of tiny-anogan.safetensors in eval mode: G(z), D on 4 "
                       "inputs, and %d steps of the latent search (Adam lr %g, beta1 %g, lambda %g) "
                       "on 2 images; float64, rounded to float32" % (STEPS, LR, BETA1, LAM),
        "model": "tiny-anogan.safetensors",
        "input_order": "gradient,checkerboard,noise,constant128",
        "search_input_order": "generated+noise,gradient",
        "search": "steps=%d,lr=%g,beta1=%g,beta2=0.999,eps=1e-8,lambda=%g" % (STEPS, LR, BETA1, LAM),
        "software": gr.SOFTWARE,
    }
    golden_size = st.save(GOLDEN, golden, meta)

    # ---- self-check from the files alone ----
    g, gmeta = st.load(GOLDEN)
    assert gmeta == meta
    for k, v in golden.items():
        assert g[k].dtype == np.float32 and np.array_equal(g[k], v), k
    ng, nd, cfg2, mmeta = ar.read_model(MODEL)
    assert cfg2 == CFG, cfg2
    tensors, _ = st.load(MODEL)
    ref = ar.model_tensors(netg, netd)
    assert list(tensors) == list(ref)
    assert all(np.array_equal(tensors[k], ref[k]) for k in ref)
    re64 = compute(ng.double(), nd.double(), torch.from_numpy(g["z"]).double(),
                   torch.from_numpy(g["input"]).double(), torch.from_numpy(g["search_input"]).double(),
                   torch.from_numpy(g["search_z0"]).double())
    for k in FORWARD + SEARCH:
        assert np.array_equal(re64[k].float().numpy(), g[k]), "float64 rerun differs on " + k

    print("tiny anogan: %s, torch seed %d" % (CFG, SEED))
    print("  %-42s %7d bytes, %d tensors, %s" % (os.path.relpath(MODEL, ROOT), model_size,
                                                 len(tensors), mmeta["checksum"]))
    print("  %-42s %7d bytes" % (os.path.relpath(GOLDEN, ROOT), golden_size))
    print("  d_prob %s" % np.array2string(g["d_prob"], precision=6))
    print("  search loss0 %s -> loss %s" % (np.array2string(g["search_loss0"], precision=4),
                                            np.array2string(g["search_loss"], precision=4)))
    print("  float32 run vs float64 truth (max abs, max abs / max |truth|):")
    for k in FORWARD + SEARCH:
        print("    %-22s %.3e  %.3e" % (k, diffs[k][0], diffs[k][1]))
    print("  self-check ok: files reload, model rebuilds, float64 rerun bit-identical")


def train_run(netg, netd, x, zs):
    """Two Trainer steps on x with z zs[i]; [state after each], [losses]."""
    tr = ar.Trainer(netg, netd)
    states, losses = [], []
    for z in zs:
        loss = tr.step(x, z)
        states.append({k: v.copy() for k, v in ar.model_tensors(netg, netd).items()}
                      if x.dtype == torch.float32 else
                      {p + k: v.detach().double().numpy().copy()
                       for p, net in (("netg.", netg), ("netd.", netd))
                       for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")})
        losses.append([loss[k] for k in ("err_g", "err_d", "err_d_real", "err_d_fake")])
    return states, losses


def make_train_golden():
    torch.manual_seed(TRAIN_SEED)
    netg, netd = ar.build(CFG)
    before = ar.model_tensors(netg, netd)
    x = torch.from_numpy(mgt.make_batch(BATCH, CFG["isize"], TRAIN_SEED))
    r = ar.Rng(Z_SEED)
    zs = [torch.tensor([r.normal() for _ in range(BATCH * CFG["nz"])], dtype=torch.float64)
          .float().reshape(BATCH, CFG["nz"]) for _ in range(2)]
    s32, l32 = train_run(copy.deepcopy(netg), copy.deepcopy(netd), x, zs)
    s64, l64 = train_run(copy.deepcopy(netg).double(), copy.deepcopy(netd).double(), x.double(),
                         [z.double() for z in zs])
    golden = {"input": x.numpy(), "z1": zs[0].numpy(), "z2": zs[1].numpy()}
    for k, v in before.items():
        golden["before." + k] = v
    for i in range(2):
        for k, v in s64[i].items():
            golden["step%d.%s" % (i + 1, k)] = v.astype(np.float32)
    golden["loss1"] = np.array(l64[0], np.float32)
    golden["loss2"] = np.array(l64[1], np.float32)
    meta = {"description": "two DCGAN training steps of the tiny AnoGAN from a fresh init, "
                           "float64 rounded to float32",
            "z_seed": str(Z_SEED), "losses": "err_g,err_d,err_d_real,err_d_fake",
            "hparams": "lr=0.0002,beta1=0.5,beta2=0.999", "software": gr.SOFTWARE}
    size = st.save(TRAIN, golden, meta)
    g, gmeta = st.load(TRAIN)
    assert gmeta == meta and all(np.array_equal(g[k], v) for k, v in golden.items())
    # a float64 rerun from the file alone is bit-identical
    ng, nd = ar.build(CFG)
    for p, net in (("netg.", ng), ("netd.", nd)):
        net.load_state_dict({k: torch.from_numpy(g["before." + p + k]) for k in net.state_dict()
                             if not k.endswith("num_batches_tracked")}, strict=False)
    re64, _ = train_run(ng.double(), nd.double(), torch.from_numpy(g["input"]).double(),
                        [torch.from_numpy(g["z1"]).double(), torch.from_numpy(g["z2"]).double()])
    for i in range(2):
        for k, v in re64[i].items():
            assert np.array_equal(v.astype(np.float32), g["step%d.%s" % (i + 1, k)]), k
    print("  %-42s %7d bytes" % (os.path.relpath(TRAIN, ROOT), size))
    lr = ar.TRAIN_DEFAULTS["lr"]
    for i in range(2):
        wmax, smax, small = 0.0, 0.0, 0
        for k in s64[i]:
            d = np.abs(s32[i][k].astype(np.float64) - s64[i][k])
            if "running" in k:
                smax = max(smax, d.max() / max(np.abs(s64[i][k]).max(), 1e-300))
            else:
                wmax = max(wmax, d.max() / lr)
                if i == 0:
                    small += int((np.abs(s64[0][k] - before[k]) < 0.99 * lr).sum())
        print("  step %d float32 vs float64: weights max |d| %.2e lr, running stats rel %.2e; "
              "losses %s vs %s" % (i + 1, wmax, smax, np.array2string(np.array(l64[i]), precision=6),
                                   np.array2string(np.array(l32[i]) - np.array(l64[i]), precision=2)))
        if i == 0:
            print("  step 1: %d weights moved by less than 0.99 lr" % small)


if __name__ == "__main__":
    main()
    make_train_golden()
