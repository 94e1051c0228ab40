"""torch_methods.py - scoring throughput of the PyTorch reference of every detector.

  /usr/bin/python3 tests/bench/torch_methods.py METHOD MODEL INPUTS N --threads 1 [--batch 1,64] [--warmup K]

METHOD is one of ganomaly, skipganomaly, anogan, egbad, alad, defectgan, caae.
Loads MODEL (one of our model files, e.g. extracted from a database's
anomaly_models_data) into the reference networks of METHOD
(tests/bench/reference/<method>_ref.py, eval mode), reads N input tensors
(N, C, H, W) of raw float32 from INPUTS (written by bench_core --dump: the
same fitted images our scorer sees), and scores them at each batch size the
way core/detectors/<method>.c does: the same forward passes and the same
score formula, with the score-time settings (score kind, weights, LBP
options, AnoGAN's search) read from the model's hyper-parameters:

  ganomaly      z = E1(x), x_hat = Dec(z), z' = E2(x_hat); mean (z - z')^2
  skipganomaly  x_hat = U-Net(x); w mean (x - x_hat)^2 + (1 - w) mean (f(x) - f(x_hat))^2
  egbad         z = E(x), x_hat = G(z); (1 - w) sum |x - x_hat| + w (fm | ce)
                on D's features of (x, z) and (x_hat, z) and the logit of (x_hat, z)
  alad          z = E(x), x_hat = G(z), D_xx features of (x, x) and (x, x_hat)
                and the logit of (x, x_hat); fm (default), ch, l1 or l2
  defectgan     x_hat = Dec(E(x)); mean of the top fraction of the box-filtered
                Hamming map of the LBP codes of x and x_hat (batched in torch)
  caae          x_hat = Dec(E(x)); mean |x - x_hat|
  anogan        `steps` Adam steps on z from z0 (core/rng.c's normals, seed 0,
                one z0 for every image) on sum over images of
                (1 - lambda) sum |x - G(z)| + lambda sum |f(x) - f(G(z))|;
                the score is the loss at the final z
Every run is under torch.no_grad(), except AnoGAN's search steps, which need
the gradient with respect to z (the networks' parameters stay frozen). Per-image
reductions are in float64, as ours. One untimed batch of min(N, 64) images
at batch 64 warms up first (--warmup K: K images instead, 0 for none; AnoGAN's
long searches need no more than one). Decode and fit are not timed (done before).

Prints one JSON line: method, the batch sizes with seconds (wall clock),
images per second, ms per image, cpu_seconds (the process's CPU time: on a
busy machine the steadier figure) and the sum of the scores (compare with
bench_core's score_sum on the same model and inputs). Needs torch and numpy.
"""

import argparse
import json
import math
import os
import sys
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import safetensors_io  # noqa: E402

METHODS = ["ganomaly", "skipganomaly", "anogan", "egbad", "alad", "defectgan", "caae"]


def hparams(path):
    """The model file's hyper-parameters (a dict)."""
    header, _ = safetensors_io.read_raw(path)
    return json.loads(header["__metadata__"]["hparams"])


def l1_sum(a, b):
    """Per image (N,): sum |a - b| in float64."""
    return (a.double() - b.double()).abs().reshape(a.shape[0], -1).sum(1)


def sq_mean(a, b):
    """Per image (N,): mean (a - b)^2 in float64."""
    return ((a.double() - b.double()) ** 2).reshape(a.shape[0], -1).mean(1)


def softplus64(v):
    """softplus(v) in float64, as ours: max(v, 0) + log1p(exp(-|v|))."""
    v = v.double()
    return v.clamp(min=0) + torch.log1p(torch.exp(-v.abs()))


# ---------------------------------------------------------------------------
# Scorers: load(path) -> (score(x) -> per-image float64 scores, shape (C, H, W))
# ---------------------------------------------------------------------------

def load_ganomaly(path):
    import ganomaly_ref as gr
    netg, _, cfg, _ = gr.read_model(path)

    def score(x):
        z = netg.encoder1(x)
        z2 = netg.encoder2(netg.decoder(z))
        return sq_mean(z, z2)
    return score, (cfg["nc"], cfg["isize"], cfg["isize"])


def load_skipganomaly(path):
    import skipganomaly_ref as sr
    netg, netd, cfg, _ = sr.read_model(path)
    w = hparams(path).get("score_w", 0.9)

    def score(x):
        xh = netg(x)
        return w * sq_mean(x, xh) + (1 - w) * sq_mean(netd.feat(x), netd.feat(xh))
    return score, (cfg["nc"], cfg["isize"], cfg["isize"])


def load_egbad(path):
    import egbad_ref as er
    model, cfg, _ = er.read_model(path)
    hp = hparams(path)
    kind, w = hp.get("score", "fm"), hp.get("score_w", er.HP_DEFAULTS["score_w"])
    d = model.discriminator        # eval mode: its dropout is the identity

    def score(x):
        z = model.encoder(x)
        xh = model.generator(z)
        _, fx = d(x, z)
        logit, fxh = d(xh, z)
        part = l1_sum(fx, fxh) if kind == "fm" else softplus64(-logit)
        return (1 - w) * l1_sum(x, xh) + w * part
    return score, (cfg["nc"], cfg["isize"], cfg["isize"])


def load_alad(path):
    import alad_ref as ar
    nets, cfg, _ = ar.read_model(path)
    kind = hparams(path).get("score", "fm")
    e, g, dxx = nets["encoder"], nets["generator"], nets["discriminator_xx"]

    def features(a, b):
        """D_xx's f_xx of [a, b], eval mode: no dropout."""
        y = torch.cat([a, b], 1)
        y = ar.lrelu(dxx.layer_1.conv1(y))
        return ar.lrelu(dxx.layer_2.conv2(y)).reshape(a.shape[0], -1)

    def score(x):
        xh = g(e(x))
        fr, ff = features(x, x), features(x, xh)
        logit = dxx.layer_3.fc(ff).reshape(-1)
        if kind == "fm":
            return l1_sum(fr, ff)
        if kind == "ch":
            return softplus64(-logit)
        if kind == "l1":
            return l1_sum(x, xh)
        return (sq_mean(x, xh) * x[0].numel()).sqrt()
    return score, (cfg["nc"], cfg["isize"], cfg["isize"])


def lbp_tables(h, w, points, radius):
    """Per LBP point (defectgan_ref.lbp_points): flat indices of the four
    bilinear neighbours (H*W,) and the fractions dr, dc (H*W,) in float64."""
    import defectgan_ref as dr
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                             indexing="ij")
    out = []
    for dy, dx in dr.lbp_offsets(points, radius):
        ry, rx = rows + dy, cols + dx
        fy, fx = np.floor(ry), np.floor(rx)
        y0 = np.clip(fy, 0, h - 1).astype(np.int64)
        y1 = np.clip(np.ceil(ry), 0, h - 1).astype(np.int64)
        x0 = np.clip(fx, 0, w - 1).astype(np.int64)
        x1 = np.clip(np.ceil(rx), 0, w - 1).astype(np.int64)
        idx = [torch.from_numpy((a * w + b).ravel()) for a, b in ((y0, x0), (y0, x1), (y1, x0), (y1, x1))]
        out.append((idx, torch.from_numpy((ry - fy).ravel()), torch.from_numpy((rx - fx).ravel())))
    return out


def lbp_bits(g, tables):
    """Grey images g (N, H*W) float64 -> the code bits (N, P, H*W), bit p set
    when point p >= the centre (defectgan_ref.lbp_codes, batched)."""
    bits = []
    for (tl, tr, bl, br), drow, dcol in tables:
        a, b, c, d = g[:, tl], g[:, tr], g[:, bl], g[:, br]
        top = a + dcol * (b - a)
        bottom = c + dcol * (d - c)
        bits.append(top + drow * (bottom - top) >= g)
    return torch.stack(bits, 1)


def grey64(x):
    """(N, C, H, W) float32 -> (N, H*W) float64 grey, rounded to float32 once
    (defectgan_ref.grey)."""
    a = x.double()
    if a.shape[1] == 3:
        g = 0.299 * a[:, 0] + 0.587 * a[:, 1] + 0.114 * a[:, 2]
    else:
        g = a.sum(1) / a.shape[1] if a.shape[1] > 1 else a[:, 0]
    return g.float().double().reshape(x.shape[0], -1)


def load_defectgan(path):
    import defectgan_ref as dr
    netg, _, cfg, _ = dr.read_model(path)
    hp = hparams(path)
    points, radius = hp.get("lbp_points", 8), hp.get("lbp_radius", 1)
    win, top = hp.get("window", 3), hp.get("top", 0.01)
    h = w = cfg["isize"]
    tables = lbp_tables(h, w, points, radius)
    k = min(max(int(math.ceil(top * h * w)), 1), h * w)
    half = win // 2

    def score(x):
        xh = netg(x)
        n = x.shape[0]
        ham = (lbp_bits(grey64(x), tables) != lbp_bits(grey64(xh), tables)).sum(1)
        ham = ham.double().reshape(n, 1, h, w)
        box = F.avg_pool2d(F.pad(ham, (half, half, half, half), mode="replicate"), win, 1)
        m = box.float().double().reshape(n, -1)
        return m.topk(k, dim=1).values.sum(1) / k
    return score, (cfg["nc"], cfg["isize"], cfg["isize"])


def load_caae(path):
    import caae_ref as cr
    model, cfg, _ = cr.read_model(path)

    def score(x):
        xh = model.decoder(model.encoder(x))
        return l1_sum(x, xh) / x[0].numel()
    return score, (cfg["nc"], cfg["side"], cfg["side"])


def load_anogan(path):
    import anogan_ref as ar
    netg, netd, cfg, _ = ar.read_model(path)
    hp = hparams(path)
    steps, lam = hp.get("steps", 500), hp.get("lambda", 0.1)
    lr, beta1 = hp.get("search_lr", 0.001), hp.get("search_beta1", 0.5)
    for p in list(netg.parameters()) + list(netd.parameters()):
        p.requires_grad_(False)
    r = ar.Rng(0)
    z0 = torch.tensor([r.normal() for _ in range(cfg["nz"])], dtype=torch.float32)

    def score(x):
        n = x.shape[0]
        _, fx = netd(x)
        z = z0.repeat(n, 1).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr, betas=(beta1, 0.999), eps=1e-8)
        with torch.enable_grad():
            for _ in range(steps):
                opt.zero_grad()
                loss, _, _ = ar.mapping_loss(netg, netd, x, fx, z, lam)
                loss.sum().backward()
                opt.step()
        xh = netg(z.detach().reshape(n, -1, 1, 1))
        _, fg = netd(xh)
        return (1 - lam) * l1_sum(x, xh) + lam * l1_sum(fx, fg)
    score.settings = {"steps": steps, "lambda": lam, "lr": lr, "beta1": beta1}
    return score, (cfg["nc"], cfg["isize"], cfg["isize"])


# ---------------------------------------------------------------------------

def run(score, x, batch):
    """(wall seconds, CPU seconds of the process, sum of the scores) of scoring x at batch."""
    total = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, x.shape[0], batch):
        total += float(score(x[i:i + batch]).sum())
    return time.perf_counter() - t0, time.process_time() - c0, total


def main():
    ap = argparse.ArgumentParser(description="time the PyTorch reference scorers")
    ap.add_argument("method", choices=METHODS)
    ap.add_argument("model")
    ap.add_argument("inputs", help="raw float32 (N, C, H, W), from bench_core --dump")
    ap.add_argument("n", type=int, help="images to score (the first N in INPUTS)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--batch", default="1,64", help="comma-separated batch sizes (default 1,64)")
    ap.add_argument("--warmup", type=int, default=64,
                    help="images in the untimed warm-up batch (default 64, at most N)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    batches = [int(b) for b in a.batch.split(",")]
    score, shape = globals()["load_" + a.method](a.model)
    img = int(np.prod(shape))
    raw = np.fromfile(a.inputs, dtype=np.float32)
    if raw.size < a.n * img:
        sys.exit("torch_methods.py: %s holds %d images of %s, asked for %d"
                 % (a.inputs, raw.size // img, shape, a.n))
    x = torch.from_numpy(raw[:a.n * img].reshape((a.n,) + shape))
    out = {"impl": "pytorch", "method": a.method, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "images": a.n, "shape": list(shape)}
    if hasattr(score, "settings"):
        out["search"] = score.settings
    with torch.no_grad():
        if a.warmup > 0:
            run(score, x[:a.warmup], 64)
        for b in batches:
            s, cpu, total = run(score, x, b)
            out["batch%d" % b] = {"seconds": round(s, 6), "images_per_second": round(a.n / s, 3),
                                  "ms_per_image": round(1e3 * s / a.n, 4),
                                  "cpu_seconds": round(cpu, 6), "score_sum": total}
    print(json.dumps(out, separators=(", ", ": ")))


if __name__ == "__main__":
    main()
