"""make_golden_egbad.py - write the EGBAD golden files under tests/data/ and check them.

  /usr/bin/python3 tests/bench/reference/make_golden_egbad.py

Everything is computed in float64 (a double copy of the float32 weights and
inputs) and rounded to float32; the same run in float32 is compared with it
and the largest differences are printed (what a float32 port can meet).

Forward (egbad_ref.score, eval mode):
  tests/data/tiny-egbad.safetensors        the model: isize 32, nc 3, nz 8, nf 1,
                                           seeded weights (N(0, 1/fan_in), biases
                                           N(0, 0.1)) and non-trivial batch norm
                                           (set_batchnorm), so outputs are O(1)
  tests/data/golden-egbad-tiny.safetensors 4 inputs (make_golden's gradient,
                                           checkerboard, noise, constant) and
    z (4, nz) = E(x), x_hat, f_x = f(x, z), f_xhat = f(x_hat, z) (4, 32 nf),
    logit_x, logit_xhat, residual, fm, ce, score_fm, score_ce (score_w 0.1)
  tests/data/golden-egbad-64.safetensors   the same for isize 64, nc 1, nz 4,
                                           nf 1 on 2 images, with the model's
                                           tensors in the same file
Training (egbad_ref.Trainer), golden-egbad-train-tiny.safetensors:
  isize 32, nc 1, nz 8, nf 1, dropout 0, ema 0.5 (so that the average moves
  visibly in two steps), the other hyper-parameters the defaults (lr 1e-5).
  The initial weights and the z of each step replay core/rng.c seeded with
  TRAIN_SEED (anogan_ref.Rng): first net_init_normal(0.02) over E, G, Dx, Dz,
  Dj as the C train_begin draws them, then per step z1 and z2, (8, nz) each.
    input (8, 1, 32, 32)      make_golden_train's batch
    before.<two tensors>      the first and last initialised weights (to
                              diagnose a different draw order)
    step1.<tensor>, step2.<tensor>   every model tensor after each step
    step1.d, .g, .e, step2.*  the losses of each step
  After two steps the moving average is 0.25 w0 + 0.25 w1 + 0.5 w2 (asserted
  here in float64), which the C test rebuilds from its own w0 and the goldens.
Gradients of D (golden-egbad-grad.safetensors): isize 32, nc 1, nz 8, nf 1,
  dropout 0.5 with the masks core/rng.c draws from MASK_SEED (rng_uniform, one
  per element in forward order; kept when u >= p), D's weights N(0, 1/fan_in),
  biases and BN affine random; L = sum r logit + sum q f over D(x, z) of 4
  pairs with batch statistics. Holds D's tensors, x, z, r, q, loss and
  grad.<D parameter>, grad.x, grad.z by float64 autograd.
Then every file is read back; the forward model is rebuilt from its file alone
and rerun bit for bit. Needs torch and numpy; deterministic, about 2 s.
"""

import copy
import math
import os
import sys

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import anogan_ref as ar  # noqa: E402
import egbad_ref as er  # noqa: E402
import make_golden as mg  # noqa: E402
import make_golden_train as mgt  # noqa: E402
import safetensors_io as st  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DATA = os.path.join(ROOT, "tests", "data")

FWD_CFG = {"isize": 32, "nc": 3, "nz": 8, "nf": 1, "dropout": 0.5}
FWD_SEED = 2468
FWD64_CFG = {"isize": 64, "nc": 1, "nz": 4, "nf": 1, "dropout": 0.5}
FWD64_SEED = 8642
TRAIN_CFG = {"isize": 32, "nc": 1, "nz": 8, "nf": 1, "dropout": 0.0}
TRAIN_HP = {"ema": 0.5}
TRAIN_SEED, BATCH, STEPS = 1357, 8, 2
GRAD_CFG = {"isize": 32, "nc": 1, "nz": 8, "nf": 1, "dropout": 0.5}
GRAD_SEED, MASK_SEED, GRAD_BATCH = 97531, 4242, 4
SCORE_W = 0.1
STATS_EXTRA = 28

OUTPUTS = ["z", "x_hat", "f_x", "f_xhat", "logit_x", "logit_xhat", "residual", "fm", "ce",
           "score_fm", "score_ce"]
LOSSES = ["d", "g", "e"]


def randomise(model_part, gen_std=1.0):
    """Weights N(0, gen_std / fan_in) so that activations stay O(1) through the
    tiny nets, biases N(0, 0.1); BN affine N(1, 0.1) / N(0, 0.1). torch RNG."""
    with torch.no_grad():
        for m in model_part.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan_in = m.weight[0].numel() if not isinstance(m, nn.ConvTranspose2d) \
                    else m.weight.shape[0] * m.weight.shape[2] * m.weight.shape[3] // 4
                m.weight.normal_(0.0, gen_std / math.sqrt(fan_in))
                m.bias.normal_(0.0, 0.1)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.normal_(1.0, 0.1)
                m.bias.normal_(0.0, 0.1)


def set_batchnorm(net, run):
    """make_golden.set_batchnorm for 1-d and 2-d batch norm and any call run():
    per channel, with m, v the mean and variance of the BN's input over the
    batch (and H, W) given the BNs before it, running_mean = m + N(0, 0.1)
    sqrt(v), running_var = v U(0.5, 1.5); set in forward order, eval mode."""
    net.eval()
    with torch.no_grad():
        for m in net.modules():
            if not isinstance(m, nn.modules.batchnorm._BatchNorm):
                continue
            seen = {}
            hook = m.register_forward_hook(lambda mod, inp, out: seen.setdefault("x", inp[0].clone()))
            run()
            hook.remove()
            a = seen["x"].double()
            dims = [0] + list(range(2, a.dim()))
            mean, var = a.mean(dim=dims), a.var(dim=dims, unbiased=False)
            c = mean.numel()
            m.running_mean.copy_(mean + torch.randn(c, dtype=torch.float64) * 0.1 * var.sqrt())
            m.running_var.copy_(var * (0.5 + torch.rand(c, dtype=torch.float64)))


def make_forward_model(cfg, seed, x32):
    """Random weights, then batch-norm statistics from the inputs plus
    STATS_EXTRA uniform-noise images: a few samples alone give the dense
    layers' BNs near-zero variances, whose amplification float32 cannot follow."""
    torch.manual_seed(seed)
    model = er.EGBAD(cfg)
    randomise(model)
    xs = torch.cat([x32, torch.rand((STATS_EXTRA,) + tuple(x32.shape[1:])) * 2 - 1])
    set_batchnorm(model.encoder, lambda: model.encoder(xs))
    with torch.no_grad():
        zs = model.encoder(xs)
    set_batchnorm(model.generator, lambda: model.generator(zs))
    set_batchnorm(model.discriminator, lambda: model.discriminator(xs, zs))
    model.eval()
    return model


def forward_runs(model, x32):
    out32 = er.score(model, x32, SCORE_W)
    out64 = er.score(copy.deepcopy(model).double(), x32.double(), SCORE_W)
    return out32, out64


def report_forward(name, out32, out64):
    for k in OUTPUTS:
        d = (out32[k].double() - out64[k]).abs().max().item()
        print("  float32 vs float64 %-10s %.3e (rel %.3e)"
              % (k, d, d / max(out64[k].abs().max().item(), 1e-300)))


def golden_forward():
    u8 = mg.make_inputs(FWD_CFG["nc"], FWD_CFG["isize"], FWD_SEED)
    x32 = torch.from_numpy((u8.astype(np.float64) / 127.5 - 1.0).astype(np.float32))
    model = make_forward_model(FWD_CFG, FWD_SEED, x32)
    out32, out64 = forward_runs(model, x32)
    model_path = os.path.join(DATA, "tiny-egbad.safetensors")
    golden_path = os.path.join(DATA, "golden-egbad-tiny.safetensors")
    msize = er.write_model(model_path, model, FWD_CFG)
    golden = {"input": x32.numpy()}
    for k in OUTPUTS:
        golden[k] = out64[k].float().numpy()
    meta = {"description": "EGBAD eval-mode outputs of tiny-egbad.safetensors for 4 inputs, "
                           "float64 rounded to float32", "score_w": str(SCORE_W),
            "input_order": "gradient,checkerboard,noise,constant128", "software": er.SOFTWARE}
    gsize = st.save(golden_path, golden, meta)
    print("forward %s: model %d bytes, golden %d bytes" % (FWD_CFG, msize, gsize))
    print("  residual %s" % np.array2string(golden["residual"], precision=4))
    print("  fm       %s" % np.array2string(golden["fm"], precision=4))
    print("  ce       %s" % np.array2string(golden["ce"], precision=4))
    print("  |x_hat| max %.3f, x_hat spread between images %.3f"
          % (np.abs(golden["x_hat"]).max(), np.ptp(golden["x_hat"], axis=0).max()))
    report_forward("tiny", out32, out64)
    # self-check from the files alone
    g, _ = st.load(golden_path)
    model2, cfg2, _ = er.read_model(model_path)
    assert cfg2 == FWD_CFG, cfg2
    re64 = er.score(model2.double(), torch.from_numpy(g["input"]).double(), SCORE_W)
    for k in OUTPUTS:
        assert np.array_equal(re64[k].float().numpy(), g[k]), k
    print("  self-check ok")


def golden_forward64():
    u8 = mg.make_inputs(FWD64_CFG["nc"], FWD64_CFG["isize"], FWD64_SEED)[[0, 2]]
    x32 = torch.from_numpy((u8.astype(np.float64) / 127.5 - 1.0).astype(np.float32))
    model = make_forward_model(FWD64_CFG, FWD64_SEED, x32)
    out32, out64 = forward_runs(model, x32)
    path = os.path.join(DATA, "golden-egbad-64.safetensors")
    golden = dict(er.model_tensors(model))
    golden["input"] = x32.numpy()
    for k in OUTPUTS:
        golden[k] = out64[k].float().numpy()
    size = st.save(path, golden, {"description": "EGBAD at isize 64: the model's tensors and its "
                                                 "eval-mode outputs for 2 inputs, float64 rounded "
                                                 "to float32", "cfg": str(FWD64_CFG),
                                  "score_w": str(SCORE_W), "software": er.SOFTWARE})
    print("forward %s: %d bytes" % (FWD64_CFG, size))
    print("  residual %s fm %s ce %s" % (np.array2string(golden["residual"], precision=4),
                                          np.array2string(golden["fm"], precision=4),
                                          np.array2string(golden["ce"], precision=4)))
    report_forward("64", out32, out64)
    g, _ = st.load(path)
    m2 = er.EGBAD(FWD64_CFG)
    m2.load_state_dict({k: torch.from_numpy(v) for k, v in g.items() if "." in k}, strict=False)
    re64 = er.score(m2.double(), torch.from_numpy(g["input"]).double(), SCORE_W)
    for k in OUTPUTS:
        assert np.array_equal(re64[k].float().numpy(), g[k]), k
    print("  self-check ok")


def feeds_bn(name, names):
    """Is name the bias of a layer followed by a batch norm (same scope)? Its
    gradient is 0 in exact arithmetic, rounding noise in float, which Adam
    scales to steps of up to lr; the running mean of that batch norm moves
    with it."""
    scope = name.rsplit(".", 2)[0]
    bn = scope + ".batch_normalization."
    return (name.endswith(".bias") and not name.startswith(bn) and bn + "weight" in names) \
        or name == bn + "running_mean"


def state(model):
    """Our tensor names -> float64 numpy arrays, in model-file order."""
    return {k: v.detach().double().numpy().copy() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def golden_train():
    r = ar.Rng(TRAIN_SEED)
    model = er.EGBAD(TRAIN_CFG)
    er.init_from_rng(model, r)
    n, nz = BATCH, TRAIN_CFG["nz"]
    zs = [torch.tensor([r.normal() for _ in range(n * nz)], dtype=torch.float64).float().reshape(n, nz)
          for _ in range(2 * STEPS)]
    x32 = torch.from_numpy(mgt.make_batch(BATCH, TRAIN_CFG["isize"], TRAIN_SEED))
    before = state(model)
    runs = {}
    for name, dt in (("f32", torch.float32), ("f64", torch.float64)):
        m2 = copy.deepcopy(model).to(dt)
        tr = er.Trainer(m2, TRAIN_HP)
        states, losses = [], []
        for s in range(STEPS):
            losses.append(tr.step(x32.to(dt), zs[2 * s].to(dt), zs[2 * s + 1].to(dt)))
            states.append(state(m2))
        tr.finish()
        runs[name] = (states, losses, state(m2))
    states, losses, final = runs["f64"]
    # the bias-corrected average after two steps at decay 0.5, buffers left alone
    for k, v in final.items():
        if "running" in k:
            assert np.array_equal(v, states[-1][k]), k
        else:
            want = (0.25 * states[0][k] + 0.5 * states[1][k]) / 0.75
            assert np.abs(v - want).max() <= 1e-15 * max(np.abs(want).max(), 1e-30), k
    golden = {"input": x32.numpy()}
    first, last = "encoder.layer_1.conv.weight", "discriminator.y_fc_logits.fc.weight"
    golden["before." + first] = before[first].astype(np.float32)
    golden["before." + last] = before[last].astype(np.float32)
    for i in range(STEPS):
        for k, v in states[i].items():
            golden["step%d.%s" % (i + 1, k)] = v.astype(np.float32)
        for k in LOSSES:
            golden["step%d.%s" % (i + 1, k)] = np.array([losses[i][k]], dtype=np.float32)
    path = os.path.join(DATA, "golden-egbad-train-tiny.safetensors")
    hp = dict(er.HP_DEFAULTS, **TRAIN_HP)
    size = st.save(path, golden, {
        "description": "two EGBAD training steps (D step, then one G+E step) of the tiny "
                       "network on one batch of 8 from our C init and z (core/rng.c seeded "
                       "with rng_seed), float64 rounded to float32",
        "rng_seed": str(TRAIN_SEED), "cfg": str(TRAIN_CFG), "hp": str(hp), "software": er.SOFTWARE})
    print("training %s %s, %d steps: %d bytes" % (TRAIN_CFG, TRAIN_HP, STEPS, size))
    lr = hp["lr"]
    for i in range(STEPS):
        s32, s64 = runs["f32"][0][i], runs["f64"][0][i]
        prev = before if i == 0 else runs["f64"][0][i - 1]
        groups = {}
        for k in s64:
            key = ("noise " if feeds_bn(k, s64) else "") + ("running" if "running" in k else "w")
            if "running" in k:
                d = np.abs(s32[k] - s64[k]).max() / max(np.abs(s64[k]).max(), 1e-30)
            else:
                d = np.abs(s32[k] - s64[k]).max() / lr
            groups[key] = max(groups.get(key, 0), d)
        moved = min(np.abs(s64[k] - prev[k]).min() for k in s64
                    if "running" not in k and not feeds_bn(k, s64)) / lr
        print("  step %d: float32 vs float64: weights %.2e lr, running stats rel %.2e, smallest "
              "update %.3f lr;" % (i + 1, groups["w"], groups["running"], moved))
        print("          biases feeding a batch norm %.2e lr, their batch norms' running means "
              "rel %.2e" % (groups["noise w"], groups["noise running"]))
        for k in LOSSES:
            a, b = runs["f32"][1][i][k], runs["f64"][1][i][k]
            print("    %-2s %.9f  float32 rel %.2e" % (k, b, abs(a - b) / abs(b)))
    g, _ = st.load(path)
    assert set(g) == set(golden)
    print("  self-check ok")


def rng_masks(r, shapes, p):
    """core/dropout.c's masks: one rng_uniform per element, kept when u >= p."""
    out = []
    for shp in shapes:
        cnt = int(np.prod(shp))
        out.append(torch.tensor([0.0 if r.uniform() < p else 1.0 for _ in range(cnt)],
                                dtype=torch.float64).reshape(shp))
    return out


def golden_grad():
    torch.manual_seed(GRAD_SEED)
    model = er.EGBAD(GRAD_CFG)
    dis = model.discriminator
    randomise(dis)
    n, nz, nf = GRAD_BATCH, GRAD_CFG["nz"], GRAD_CFG["nf"]
    x32 = (torch.rand(n, GRAD_CFG["nc"], GRAD_CFG["isize"], GRAD_CFG["isize"]) * 2 - 1).float()
    z32 = torch.randn(n, nz).float()
    r32 = torch.randn(n).float()
    q32 = torch.randn(n, 32 * nf).float()
    masks = rng_masks(ar.Rng(MASK_SEED), dis.mask_shapes(n, GRAD_CFG["isize"]), GRAD_CFG["dropout"])
    golden = {"x": x32.numpy(), "z": z32.numpy(), "r": r32.numpy(), "q": q32.numpy()}
    for k, v in dis.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            golden["discriminator." + k] = v.float().numpy().copy()
    res = {}
    for name, dt in (("f32", torch.float32), ("f64", torch.float64)):
        d = copy.deepcopy(dis).to(dt).train()
        x = x32.to(dt).clone().requires_grad_(True)
        z = z32.to(dt).clone().requires_grad_(True)
        with er.batch_stats_only(d):
            logit, f = d(x, z, [m.to(dt) for m in masks])
        loss = (logit * r32.to(dt)).sum() + (f * q32.to(dt)).sum()
        loss.backward()
        res[name] = {"loss": loss.detach().reshape(1), "grad.x": x.grad, "grad.z": z.grad}
        for k, p in d.named_parameters():
            res[name]["grad.discriminator." + k] = p.grad
    for k, v in res["f64"].items():
        golden[k] = v.detach().float().numpy()
    path = os.path.join(DATA, "golden-egbad-grad.safetensors")
    size = st.save(path, golden, {"description": "EGBAD D(x, z) gradients of sum(r logit) + "
                                                 "sum(q f) with batch statistics and our rng's "
                                                 "dropout masks, autograd in float64",
                                  "mask_seed": str(MASK_SEED), "cfg": str(GRAD_CFG),
                                  "software": er.SOFTWARE})
    names = set(golden)
    noise = [k for k in res["f64"] if k.startswith("grad.") and feeds_bn(k[5:], names)]
    worst = max((res["f32"][k].double() - res["f64"][k]).abs().max().item()
                / max(res["f64"][k].abs().max().item(), 1e-300) for k in res["f64"] if k not in noise)
    zero = max(res["f64"][k].abs().max().item() for k in noise)
    kept = sum(int(m.sum().item()) for m in masks), sum(m.numel() for m in masks)
    print("gradients %s, batch %d: %d bytes, loss %.6f, masks keep %d of %d; float32 vs "
          "float64 worst max|d| / max|truth| %.2e" % (GRAD_CFG, n, size, golden["loss"][0],
                                                      kept[0], kept[1], worst))
    print("  %s: gradient 0 (feeds a batch norm), float64 max |g| %.1e"
          % (", ".join(k[5:] for k in noise), zero))
    g2, _ = st.load(path)
    assert set(g2) == set(golden)
    print("  self-check ok")


def main():
    torch.set_num_threads(1)
    golden_forward()
    golden_forward64()
    golden_train()
    golden_grad()


if __name__ == "__main__":
    main()
