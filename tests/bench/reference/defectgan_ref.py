"""defectgan_ref.py - DefectGAN in PyTorch and numpy, the reference our C port is checked against.

No author code exists for Zhao et al. (PRICAI 2018); everything here is our
design (docs/defectgan.md), written once in C (core/detectors/defectgan.c,
core/defects.c, core/lbp.c) and once here.

Networks: GANomaly's (ganomaly_ref.py) without the second encoder, with the
same state_dict names:
  NetG(cfg)   encoder1 = Encoder(isize, nz, nc, ngf, extralayers), decoder = Decoder(...);
              forward(x) = decoder(encoder1(x))        tensors netg.encoder1.*, netg.decoder.*
  NetD(cfg)   GANomaly's NetD with width ndf           tensors netd.features.*, netd.classifier.0.*
cfg: isize, nc, nz, ngf, ndf, extralayers.

Scoring (numpy, float64, as core/lbp.c computes it, bit for bit):
  grey(img)                    luma 0.299 R + 0.587 G + 0.114 B for 3 channels, else the mean
  lbp_codes(grey, P, R)        skimage's 'default' LBP with edge-replicating borders
  hamming(a, b), box(m, win), top_mean(m, top)
  score_map(x, x_hat, P, R, win) = box(hamming(codes(grey x), codes(grey x_hat)), win)

Training: Trainer(netg, netd).step(x, xt), x the clean batch and xt = C(x) the
batch with defects, as defectgan_train_step (GANomaly's optimize_params layout).

The synthesiser C(x~|x): defects_apply(img, opts, rng) repeats core/defects.c
draw for draw with Rng, a copy of core/rng.c (anogan_ref.Rng plus below()).
"""

import json
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import anogan_ref
import ganomaly_ref as gr
import safetensors_io

SOFTWARE = gr.SOFTWARE
_M64 = (1 << 64) - 1


# ---------------------------------------------------------------------------
# Networks and model files
# ---------------------------------------------------------------------------

class NetG(nn.Module):
    """Encoder-decoder: forward(x (N, nc, H, W)) -> x_hat (N, nc, H, W)."""

    def __init__(self, cfg):
        super().__init__()
        args = (cfg["isize"], cfg["nz"], cfg["nc"], cfg["ngf"], cfg["extralayers"])
        self.encoder1 = gr.Encoder(*args)
        self.decoder = gr.Decoder(*args)

    def forward(self, x):
        return self.decoder(self.encoder1(x))


def NetD(cfg):
    """GANomaly's NetD of width ndf: forward(x) -> prob (N,), features."""
    return gr.NetD({"isize": cfg["isize"], "nc": cfg["nc"], "ngf": cfg["ndf"],
                    "extralayers": cfg["extralayers"]})


def d_logit(netd, x):
    """D's logit (N,): the classifier conv before its sigmoid."""
    return netd.classifier[0](netd.features(x)).view(-1)


def build(cfg):
    """Fresh NetG and NetD with the DCGAN init (torch's global RNG), train mode."""
    netg, netd = NetG(cfg), NetD(cfg)
    netg.apply(gr.weights_init)
    netd.apply(gr.weights_init)
    return netg, netd


def model_tensors(netg, netd):
    return gr.model_tensors(netg, netd)


def model_metadata(cfg, checksum):
    return gr.model_metadata(cfg, checksum, "defectgan",
                             {"nz": cfg["nz"], "ngf": cfg["ngf"], "ndf": cfg["ndf"],
                              "extralayers": cfg["extralayers"]})


def write_model(path, netg, netd, cfg):
    """Write G and D to path as a sqlite-anomaly 'defectgan' model file; returns its size."""
    tensors = model_tensors(netg, netd)
    data = safetensors_io.encode(tensors, {})
    _, data_section = safetensors_io.decode_raw(data)
    return safetensors_io.save(path, tensors, model_metadata(cfg, gr.crc32_hex(data_section)))


def read_model(path):
    """(netg, netd, cfg, metadata) from a model file, eval mode, checksum checked."""
    header, data = safetensors_io.read_raw(path)
    meta = header.get("__metadata__", {})
    if meta.get("method") != "defectgan" or meta.get("checksum") != gr.crc32_hex(data):
        raise ValueError("%s: not a defectgan model or bad checksum" % path)
    hp = json.loads(meta["hparams"])
    cfg = {"isize": int(meta["width"]), "nc": int(meta["channels"]), "nz": hp.get("nz", 100),
           "ngf": hp.get("ngf", 64), "ndf": hp.get("ndf", 64), "extralayers": hp.get("extralayers", 0)}
    tensors, _ = safetensors_io.load(path)
    netg, netd = NetG(cfg), NetD(cfg)
    for prefix, net in (("netg.", netg), ("netd.", netd)):
        sd = {k[len(prefix):]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith(prefix)}
        res = net.load_state_dict(sd, strict=False)
        missing = [k for k in res.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or res.unexpected_keys:
            raise ValueError("%s: %s missing %s, unexpected %s" % (path, prefix, missing, res.unexpected_keys))
    netg.eval()
    netd.eval()
    return netg, netd, cfg, meta


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

TRAIN_DEFAULTS = {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "w_adv": 1.0, "w_l1": 50.0}


class Trainer:
    """One DefectGAN step on netg and netd, laid out as GANomaly's optimize_params:

      fake = G(xt)
      l_real = D(x) logit;  l_fake = D(fake.detach()) logit          (forward_d)
      G: zero grads; adv = BCE(D(fake) logit, 1)   <- a third D pass, on fake
         l1 = mean |fake - x|; err_g = w_adv adv + w_l1 l1; backward; Adam on G
      D: zero grads; err_d = BCE(l_real, 1) + BCE(l_fake, 0) (pre-step D); backward;
         Adam on D; D re-initialised (weights_init) when err_d < 1e-5
    BCE on logits (binary_cross_entropy_with_logits, mean over the batch). All in
    train mode: G's BNs update their running statistics once, D's three times
    (x, fake, fake). Returns err_g, err_d, err_l1 (floats) and reinit_d.
    """

    def __init__(self, netg, netd, hp=None):
        self.hp = dict(TRAIN_DEFAULTS, **(hp or {}))
        self.netg, self.netd = netg, netd
        betas = (self.hp["beta1"], self.hp["beta2"])
        self.opt_g = torch.optim.Adam(netg.parameters(), lr=self.hp["lr"], betas=betas, eps=1e-8)
        self.opt_d = torch.optim.Adam(netd.parameters(), lr=self.hp["lr"], betas=betas, eps=1e-8)
        netg.train()
        netd.train()

    def step(self, x, xt):
        hp, netg, netd = self.hp, self.netg, self.netd
        n = x.shape[0]
        ones, zeros = x.new_ones(n), x.new_zeros(n)
        fake = netg(xt)
        l_real = d_logit(netd, x)
        l_fake = d_logit(netd, fake.detach())
        self.opt_g.zero_grad()
        err_adv = F.binary_cross_entropy_with_logits(d_logit(netd, fake), ones)
        err_l1 = torch.mean(torch.abs(fake - x))
        err_g = hp["w_adv"] * err_adv + hp["w_l1"] * err_l1
        err_g.backward()
        self.opt_g.step()
        self.opt_d.zero_grad()
        err_d = (F.binary_cross_entropy_with_logits(l_real, ones)
                 + F.binary_cross_entropy_with_logits(l_fake, zeros))
        err_d.backward()
        self.opt_d.step()
        reinit = err_d.item() < 1e-5
        if reinit:
            netd.apply(gr.weights_init)
        return {"err_g": err_g.item(), "err_d": err_d.item(), "err_l1": err_l1.item(),
                "reinit_d": reinit}


# ---------------------------------------------------------------------------
# LBP (numpy, float64; core/lbp.c)
# ---------------------------------------------------------------------------

def grey(img):
    """(C, H, W) float32 -> (H, W) float32."""
    a = img.astype(np.float64)
    if a.shape[0] == 3:
        g = 0.299 * a[0] + 0.587 * a[1] + 0.114 * a[2]
    else:
        g = a[0].copy()
        for k in range(1, a.shape[0]):
            g = g + a[k]
        g = g / a.shape[0]
    return g.astype(np.float32)


def lbp_offsets(P, R):
    """(dy, dx) per point, rounded to 5 decimals as skimage (np.round)."""
    out = []
    for p in range(P):
        a = 2.0 * math.pi * p / P
        dy = np.round(np.float64(-R * math.sin(a)), 5)
        dx = np.round(np.float64(R * math.cos(a)), 5)
        out.append((float(dy), float(dx)))
    return out


def lbp_points(g, P, R):
    """Per point of lbp_offsets(P, R), in order: (v, self_only), each (H, W) over
    the pixels of g ((H, W) float32 grey): v the point's bilinear value in
    float64, points outside the image reading the nearest edge pixel, and
    self_only where the point reads only the centre pixel itself."""
    h, w = g.shape
    img = g.astype(np.float64)
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                             indexing="ij")
    yy, xx = rows.astype(np.int64), cols.astype(np.int64)
    for dy, dx in lbp_offsets(P, R):
        ry, rx = rows + dy, cols + dx
        fy, fx = np.floor(ry), np.floor(rx)
        dr, dc = ry - fy, rx - fx
        y0 = np.clip(fy, 0, h - 1).astype(np.int64)
        y1 = np.clip(np.ceil(ry), 0, h - 1).astype(np.int64)
        x0 = np.clip(fx, 0, w - 1).astype(np.int64)
        x1 = np.clip(np.ceil(rx), 0, w - 1).astype(np.int64)
        tl, tr, bl, br = img[y0, x0], img[y0, x1], img[y1, x0], img[y1, x1]
        top = tl + dc * (tr - tl)
        bottom = bl + dc * (br - bl)
        v = top + dr * (bottom - top)
        yield v, (y0 == yy) & (y1 == yy) & (x0 == xx) & (x1 == xx)


def lbp_codes(g, P, R):
    """(H, W) float32 grey -> (H, W) int64 codes; bit p set when point p >= centre.
    Points outside the image read the nearest edge pixel."""
    img = g.astype(np.float64)
    codes = np.zeros(g.shape, np.int64)
    for p, (v, _) in enumerate(lbp_points(g, P, R)):
        codes |= (v >= img).astype(np.int64) << p
    return codes


def lbp_margin(g, P, R):
    """Smallest |point value - centre| over every pixel and point (how close the
    codes of g are to flipping), leaving out exact ties: points that read only
    the centre pixel itself (edge replication) and points equal to the centre
    (flat regions, such as a repair that is exactly 0 where every ReLU is off)
    stay ties in any implementation."""
    img = g.astype(np.float64)
    best = np.inf
    for v, self_only in lbp_points(g, P, R):
        d = np.abs(v - img)[~self_only]
        d = d[d > 0]
        if d.size:
            best = min(best, d.min())
    return best


def hamming(a, b):
    d = np.bitwise_xor(a, b)
    bits = np.zeros(d.shape, np.int64)
    while d.any():
        bits += d & 1
        d = d >> 1
    return bits.astype(np.float32)


def box(m, win):
    """Mean over a win x win window, edges replicated; float64 sums, float32 out."""
    h, w = m.shape
    half = win // 2
    p = np.pad(m.astype(np.float64), half, mode="edge")
    s = np.zeros((h, w), np.float64)
    for j in range(win):
        for i in range(win):
            s += p[j:j + h, i:i + w]
    return (s / (float(win) * win)).astype(np.float32)


def top_mean(m, top):
    v = np.sort(m.astype(np.float64).ravel())
    k = int(math.ceil(top * v.size))
    k = min(max(k, 1), v.size)
    return float(v[v.size - k:].sum() / k)


def score_map(x, xh, P, R, win):
    """(C, H, W) image and its repair -> the smoothed Hamming map (H, W) float32."""
    return box(hamming(lbp_codes(grey(x), P, R), lbp_codes(grey(xh), P, R)), win)


# ---------------------------------------------------------------------------
# The defect synthesiser (core/defects.c)
# ---------------------------------------------------------------------------

class Rng(anogan_ref.Rng):
    """core/rng.c: uniform(), normal(), and below(n) = rng_below."""

    def below(self, n):
        limit = _M64 - _M64 % n
        while True:
            x = self.next()
            if x < limit:
                return x % n


KINDS = ["block", "line", "noise", "shift"]
DEFECT_DEFAULTS = {"p": 0.9, "max": 3, "size_min": 0.05, "size_max": 0.3, "kinds": KINDS}


def _clamp(v):
    return -1.0 if v < -1.0 else 1.0 if v > 1.0 else v


def _px(s, limit):
    v = 1 if s < 1.0 else int(math.floor(s + 0.5))
    return min(v, limit)


def defects_apply(img, opts, r):
    """Paint defects onto img (C, H, W) float32 in place, as core/defects.c.
    Returns (count, mask (H, W) uint8)."""
    c, h, w = img.shape
    mask = np.zeros((h, w), np.uint8)
    if not r.uniform() < opts["p"]:
        return 0, mask
    kinds = [k for k in KINDS if k in opts["kinds"]]
    side = min(h, w)

    def size():
        return side * (opts["size_min"] + (opts["size_max"] - opts["size_min"]) * r.uniform())

    def put(ch, y, x, v):
        img[ch, y, x] = np.float32(_clamp(v))

    count = 1 + r.below(opts["max"])
    for _ in range(count):
        kind = kinds[r.below(len(kinds))]
        if kind == "block":
            bw = _px(size(), w)
            bh = _px(size(), h)
            x0 = r.below(w - bw + 1)
            y0 = r.below(h - bh + 1)
            for ch in range(c):
                v = np.float32(_clamp(2.0 * r.uniform() - 1.0))
                img[ch, y0:y0 + bh, x0:x0 + bw] = v
            mask[y0:y0 + bh, x0:x0 + bw] = 1
        elif kind == "line":
            cx = r.uniform() * (w - 1)
            cy = r.uniform() * (h - 1)
            a = math.pi * r.uniform()
            length = size()
            t = 1 + r.below(1 + int(math.floor(length / 8.0)))
            hx, hy, ht = 0.5 * length * math.cos(a), 0.5 * length * math.sin(a), 0.5 * t
            x0, y0, x1, y1 = cx - hx, cy - hy, cx + hx, cy + hy
            dx, dy = x1 - x0, y1 - y0
            len2 = dx * dx + dy * dy
            for ch in range(c):
                v = _clamp(2.0 * r.uniform() - 1.0)
                for y in range(h):
                    for x in range(w):
                        tt = 0.0
                        if len2 > 0.0:
                            tt = ((x - x0) * dx + (y - y0) * dy) / len2
                            tt = 0.0 if tt < 0.0 else 1.0 if tt > 1.0 else tt
                        ex, ey = x - (x0 + tt * dx), y - (y0 + tt * dy)
                        if ex * ex + ey * ey > ht * ht:
                            continue
                        put(ch, y, x, v)
                        mask[y, x] = 1
        else:
            cx = r.uniform() * (w - 1)
            cy = r.uniform() * (h - 1)
            rx = max(0.5, size() / 2)
            ry = max(0.5, size() / 2)
            if kind == "noise":
                amount = 0.2 + 0.8 * r.uniform()
            else:
                amount = 0.2 + 0.6 * r.uniform()
                if r.uniform() < 0.5:
                    amount = -amount
            for y in range(h):
                for x in range(w):
                    ddx, ddy = (x - cx) / rx, (y - cy) / ry
                    if not ddx * ddx + ddy * ddy <= 1.0:
                        continue
                    for ch in range(c):
                        add = amount * r.normal() if kind == "noise" else amount
                        put(ch, y, x, float(img[ch, y, x]) + add)
                    mask[y, x] = 1
    return count, mask
