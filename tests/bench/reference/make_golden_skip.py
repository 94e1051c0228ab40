"""make_golden_skip.py - write the Skip-GANomaly golden files under tests/data/ and check them.

  /usr/bin/python3 tests/bench/reference/make_golden_skip.py

Forward: builds the tiny configuration (isize 32, nc 1, nz 16, ngf 8, ndf 8)
from a fixed seed, makes batch norm non-trivial (make_golden.set_batchnorm)
and writes
  tests/data/tiny-skipganomaly.safetensors    the model
  tests/data/golden-skip-tiny.safetensors     4 inputs and the eval-mode outputs
    x_hat, f_x = D's features of x, f_xhat = of x_hat, d_prob = D(x),
    rec = mean (x - x_hat)^2, lat = mean (f_x - f_xhat)^2, score = 0.9 rec + 0.1 lat
computed in float64 and rounded to float32.
Training: the smaller configuration TRAIN_CFG (nz 8, ngf 4, ndf 4), a fresh
init from another seed, two of the authors' optimize_params
steps (skipganomaly_ref.Trainer) on a batch of 8 images, written to
  tests/data/golden-skip-train-tiny.safetensors
as "before.", "step1.", "step2." + every model tensor and "stepK.<loss>" scalars,
from the float64 run. Prints how far the float32 runs are from the float64 ones,
then reloads the files and checks them.
Gradients: tests/data/golden-skip-grad-tiny.safetensors holds the U-Net's
dL/dx and dL/dparameters of L = sum(G(x) * r) in training mode (batch
statistics), by autograd in float64 (see golden_grad). Finite differences are
no exact oracle for this net: golden_grad prints how often, at h = 1e-3 and
in float64, they miss autograd by more than 2% (15 of 71 sampled parameters:
ReLU kinks, batch norm over few values); float32 cannot take a smaller h.
Needs torch and numpy; deterministic.
"""

import copy
import os
import sys

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import make_golden as mg  # noqa: E402
import make_golden_train as mgt  # noqa: E402
import safetensors_io as st  # noqa: E402
import skipganomaly_ref as sr  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DATA = os.path.join(ROOT, "tests", "data")

CFG = {"isize": 32, "nc": 1, "nz": 16, "ngf": 8, "ndf": 8}
TRAIN_CFG = {"isize": 32, "nc": 1, "nz": 8, "ngf": 4, "ndf": 4}   # smaller: three copies are stored
SEED = 2468
TRAIN_SEED = 1357
BATCH = 8
STEPS = 2
GRAD_CFG = {"isize": 32, "nc": 1, "nz": 4, "ngf": 2, "ndf": 2}
GRAD_SEED = 97531
GRAD_BATCH = 4
OUTPUTS = ["x_hat", "f_x", "f_xhat", "d_prob", "rec", "lat", "score"]
LOSSES = ["err_g", "err_g_adv", "err_g_con", "err_g_lat", "err_d", "err_d_real", "err_d_fake"]


def forward(netg, netd, x):
    with torch.no_grad():
        x_hat = netg(x)
        prob, fx = netd(x)
        _, fxh = netd(x_hat)
    n = x.shape[0]
    fx, fxh = fx.reshape(n, -1), fxh.reshape(n, -1)
    rec = ((x - x_hat) ** 2).reshape(n, -1).mean(dim=1)
    lat = ((fx - fxh) ** 2).mean(dim=1)
    return {"x_hat": x_hat, "f_x": fx, "f_xhat": fxh, "d_prob": prob, "rec": rec, "lat": lat,
            "score": 0.9 * rec + 0.1 * lat}


def golden_forward():
    torch.manual_seed(SEED)
    netg, netd = sr.build(CFG)
    u8 = mg.make_inputs(CFG["nc"], CFG["isize"], SEED)
    x32 = torch.from_numpy((u8.astype(np.float64) / 127.5 - 1.0).astype(np.float32))
    mg.set_batchnorm(netg, x32)
    mg.set_batchnorm(netd, x32)
    out32 = forward(netg, netd, x32)
    out64 = forward(copy.deepcopy(netg).double(), copy.deepcopy(netd).double(), x32.double())
    model_path = os.path.join(DATA, "tiny-skipganomaly.safetensors")
    golden_path = os.path.join(DATA, "golden-skip-tiny.safetensors")
    sr.write_model(model_path, netg, netd, CFG)
    golden = {"input": x32.numpy()}
    for k in OUTPUTS:
        golden[k] = out64[k].float().numpy()
    meta = {"description": "Skip-GANomaly eval-mode outputs of tiny-skipganomaly.safetensors for 4 "
                           "inputs, computed in float64 and rounded to float32",
            "input_order": "gradient,checkerboard,noise,constant128", "software": sr.SOFTWARE}
    st.save(golden_path, golden, meta)
    print("forward %s" % CFG)
    print("  tensors: %s ... %s" % (list(netg.state_dict())[:3], list(netd.state_dict())[-2:]))
    print("  score %s" % np.array2string(golden["score"], precision=6))
    print("  d_prob %s" % np.array2string(golden["d_prob"], precision=6))
    for k in OUTPUTS:
        d = (out32[k].double() - out64[k]).abs().max().item()
        print("  float32 vs float64 %-7s %.3e (rel %.3e)" % (k, d, d / max(out64[k].abs().max().item(), 1e-300)))
    # self-check from the files alone
    g, _ = st.load(golden_path)
    ng, nd, cfg2, _ = sr.read_model(model_path)
    assert cfg2 == CFG, cfg2
    re64 = forward(ng.double(), nd.double(), torch.from_numpy(g["input"]).double())
    for k in OUTPUTS:
        assert np.array_equal(re64[k].float().numpy(), g[k]), k
    print("  self-check ok")


def golden_train():
    torch.manual_seed(TRAIN_SEED)
    netg, netd = sr.build(TRAIN_CFG)
    before = mgt.state(netg, netd)
    x32 = torch.from_numpy(mgt.make_batch(BATCH, TRAIN_CFG["isize"], TRAIN_SEED))
    runs = {}
    for name, dt in (("f32", torch.float32), ("f64", torch.float64)):
        g2, d2 = copy.deepcopy(netg).to(dt), copy.deepcopy(netd).to(dt)
        tr = sr.Trainer(g2, d2)
        states, losses = [], []
        for _ in range(STEPS):
            loss = tr.step(x32.to(dt))
            assert not loss["reinit_d"]
            states.append(mgt.state(g2, d2))
            losses.append(loss)
        runs[name] = (states, losses)
    golden = {"input": x32.numpy()}
    for k, v in before.items():
        golden["before." + k] = v.astype(np.float32)
    for i in range(STEPS):
        for k, v in runs["f64"][0][i].items():
            golden["step%d.%s" % (i + 1, k)] = v.astype(np.float32)
        for k in LOSSES:
            golden["step%d.%s" % (i + 1, k)] = np.array([runs["f64"][1][i][k]], dtype=np.float32)
    path = os.path.join(DATA, "golden-skip-train-tiny.safetensors")
    st.save(path, golden, {"description": "two Skip-GANomaly optimize_params steps of the tiny "
                                          "network on one batch of 8, float64 rounded to float32",
                           "software": sr.SOFTWARE})
    print("training %s, %d steps" % (TRAIN_CFG, STEPS))
    lr = sr.TRAIN_DEFAULTS["lr"]
    for i in range(STEPS):
        s32, s64 = runs["f32"][0][i], runs["f64"][0][i]
        wmax = max(np.abs(s32[k] - s64[k]).max() for k in s64 if "running" not in k) / lr
        rmax = max(np.abs(s32[k] - s64[k]).max() / max(np.abs(s64[k]).max(), 1e-30)
                   for k in s64 if "running" in k)
        print("  step %d: float32 weights within %.2e lr, running stats rel %.2e" % (i + 1, wmax, rmax))
        for k in LOSSES:
            a, b = runs["f32"][1][i][k], runs["f64"][1][i][k]
            print("    %-10s %.9f  float32 rel %.2e" % (k, b, abs(a - b) / abs(b)))
    g, _ = st.load(path)
    assert set(g) == set(golden)
    print("  self-check ok")


def golden_grad():
    """The U-Net's gradients: L = sum(G(x) * r) with batch statistics, G's
    weights conv N(0, 0.3), BN weight N(1, 0.1) and bias N(0, 0.1), the last
    conv's bias N(0, 0.1); dL/dx and dL/d(every G parameter) by autograd in
    float64 from the float32 weights and inputs."""
    torch.manual_seed(GRAD_SEED)
    netg = sr.NetG(GRAD_CFG)
    with torch.no_grad():
        for m in netg.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.1)
                m.bias.normal_(0.0, 0.1)
            elif isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.normal_(0.0, 0.3)
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.1)
    shape = (GRAD_BATCH, GRAD_CFG["nc"], GRAD_CFG["isize"], GRAD_CFG["isize"])
    x32 = (0.8 * torch.randn(shape)).float()
    r32 = torch.randn(shape).float()
    golden = {"input": x32.numpy(), "r": r32.numpy()}
    for k, v in netg.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            golden["netg." + k] = v.float().numpy().copy()
    res = {}
    for name, dt in (("f32", torch.float32), ("f64", torch.float64)):
        g = copy.deepcopy(netg).to(dt).train()
        x = x32.to(dt).clone().detach().requires_grad_(True)
        loss = (g(x) * r32.to(dt)).sum()
        loss.backward()
        res[name] = {"loss": loss.detach().reshape(1), "grad.input": x.grad}
        for k, p in g.named_parameters():
            res[name]["grad.netg." + k] = p.grad
    for k, v in res["f64"].items():
        golden[k] = v.detach().float().numpy()
    path = os.path.join(DATA, "golden-skip-grad-tiny.safetensors")
    st.save(path, golden, {"description": "Skip-GANomaly U-Net gradients of sum(G(x) r) with batch "
                                          "statistics, autograd in float64", "software": sr.SOFTWARE})
    worst = max((res["f32"][k].double() - res["f64"][k]).abs().max().item()
                / max(res["f64"][k].abs().max().item(), 1e-300) for k in res["f64"])
    print("gradients %s, batch %d: loss %.6f; float32 autograd vs float64: worst "
          "max|d| / max|truth| over tensors %.2e" % (GRAD_CFG, GRAD_BATCH, golden["loss"][0], worst))
    # central differences in float64 with h = 1e-3, on the first, middle and
    # last element of every parameter: how often they miss autograd by > 2%
    g = copy.deepcopy(netg).double().train()
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.0          # leave the running statistics alone
    x64, r64 = x32.double(), r32.double()
    h, miss, total = 1e-3, 0, 0
    with torch.no_grad():
        for k, p in g.named_parameters():
            flat = p.view(-1)
            for i in sorted({0, flat.numel() // 2, flat.numel() - 1}):
                keep = flat[i].item()
                flat[i] = keep + h
                lp = (g(x64) * r64).sum().item()
                flat[i] = keep - h
                lm = (g(x64) * r64).sum().item()
                flat[i] = keep
                fd, an = (lp - lm) / (2 * h), res["f64"]["grad.netg." + k].view(-1)[i].item()
                miss += abs(fd - an) > 2e-3 + 2e-2 * abs(fd)
                total += 1
    print("  float64 central differences (h 1e-3) miss autograd by > 2%% on %d of %d parameters"
          % (miss, total))
    g2, _ = st.load(path)
    assert set(g2) == set(golden)
    print("  self-check ok")


def main():
    torch.set_num_threads(1)
    golden_forward()
    golden_train()
    golden_grad()


if __name__ == "__main__":
    main()
