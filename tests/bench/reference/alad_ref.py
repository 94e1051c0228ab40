"""alad_ref.py - ALAD's networks and training step in PyTorch, the reference
our C port (core/detectors/alad.c) is checked against.

ALAD (Zenati et al., ICDM 2018; houssamzenati/Adversarially-Learned-Anomaly-
Detection, alad/cifar10_utilities.py and alad/run.py) in the layout of our C
port, which adapts the authors' CIFAR-10 networks to 32 or 64 pixels and 1 or
3 channels. cfg is a dict with keys isize (32 or 64), nc, nz, nf, and
optionally dropout (0.2), sn (1), dzz (1). With L = log2(isize) - 2 and
C_i = min(nf 2^i, 4 nf):
  Encoder        "encoder."           layer_i.conv Conv(4,2,1) -> C_(i-1), layer_i.batch_normalization,
                                      LReLU 0.2 (i = 1..L); layer_(L+1).conv Conv(4,1,0) -> nz
  Generator      "generator."         layer_1.tconv1 ConvT(4,1,0) nz -> C_(L-1) (4x4), BN, ReLU;
                                      layer_k.tconvk ConvT(4,2,1) down the C_i, BN, ReLU (k = 2..L);
                                      layer_(L+1).tconv(L+1) ConvT(4,2,1) -> nc, tanh
  DiscriminatorXZ "discriminator_xz." x: x_layer_1.conv1 Conv(4,2,1) -> C_0, LReLU; x_layer_i.convi
                                      -> C_(i-1), BN, LReLU (i = 2..L); flattened (CHW order)
                                      z: z_layer_1.conv, z_layer_2.conv 1x1 -> 4 nf, LReLU, dropout
                                      joint [x, z]: y_layer_1.conv 1x1 -> 8 nf, LReLU, dropout;
                                      y_layer_2.conv 1x1 -> 1 (the logit)
  DiscriminatorXX "discriminator_xx." [x, x'] stacked along channels: layer_1.conv1 Conv(5,2,2) ->
                                      nf/2, LReLU, dropout; layer_2.conv2 Conv(5,2,2) -> nf, LReLU,
                                      dropout; flattened = f_xx; layer_3.fc Linear -> 1
  DiscriminatorZZ "discriminator_zz." [z, z']: y_layer_1.fc Linear -> 64, y_layer_2.fc -> 32
                                      (LReLU, dropout each), y_layer_3.fc -> 1
Every conv, transposed conv and linear layer has a bias. Batch norm: TF's eps
1e-3 and momentum 0.99 (PyTorch's 0.01). The tensor names are prefix + the
module path + .weight / .bias / .running_mean / .running_var, as the C port's
net_tensor names them.

Spectral normalisation (cfg sn = 1) on every convolution and linear layer of
E, D_xz, D_xx, D_zz except E's last conv and the logit layers, done
functionally: the layer's parameter is the raw weight W, and it computes with
W / sigma, sigma = u^T W v, u and v constant (parametrize.SpectralNorm);
refresh() runs one power iteration v = normalize(W^T u), u = normalize(W v).

  nets = build(cfg)                       # PyTorch's default init
  init_from_rng(nets, cfg, Rng(seed))     # core/rng.c's draws: weights, then u
  tr = Trainer(nets, cfg); losses = tr.step(x, z1, z2)
  tr.finish()                             # the moving averages, normalised
  out = score(nets, x)                    # eval mode: x_hat, f_xx, scores
  write_model(path, nets, cfg); nets, cfg, meta = read_model(path)
"""

import json
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

import safetensors_io
import ganomaly_ref
from ganomaly_ref import crc32_hex

SLOPE = 0.2
BN_EPS, BN_MOMENTUM = 1e-3, 0.01
SN_EPS = 1e-12
INIT_STD = 0.01
TRAIN_DEFAULTS = {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "ema": 0.999}
NETS = ["encoder", "generator", "discriminator_xz", "discriminator_xx", "discriminator_zz"]


def full_cfg(cfg):
    return dict({"dropout": 0.2, "sn": 1, "dzz": 1}, **cfg)


def widths(cfg):
    levels = int(round(math.log2(cfg["isize"]))) - 2
    return [min(cfg["nf"] * 2 ** i, 4 * cfg["nf"]) for i in range(levels)]


class Scope(nn.Module):
    """A named container (a TF variable scope): its children are attributes."""


class BN(nn.BatchNorm2d):
    """Batch norm with TF's defaults. update = False: batch statistics in
    training mode but the running statistics left alone."""

    def __init__(self, c):
        super().__init__(c, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.update = True

    def forward(self, x):
        if self.training and not self.update:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)


def scope(parent, name, **children):
    s = Scope()
    for k, v in children.items():
        s.add_module(k, v)
    parent.add_module(name, s)
    return s


def lrelu(x):
    return F.leaky_relu(x, SLOPE)


class Net(nn.Module):
    """The parametric layers in the C port's order: (path, module)."""

    def layers(self):
        return [(k, m) for k, m in self.named_modules()
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d))]


class Encoder(Net):
    def __init__(self, cfg):
        super().__init__()
        cin = cfg["nc"]
        self.levels = len(widths(cfg))
        for i, c in enumerate(widths(cfg)):
            scope(self, "layer_%d" % (i + 1), conv=nn.Conv2d(cin, c, 4, 2, 1),
                  batch_normalization=BN(c))
            cin = c
        scope(self, "layer_%d" % (self.levels + 1), conv=nn.Conv2d(cin, cfg["nz"], 4, 1, 0))

    def forward(self, x):
        for i in range(1, self.levels + 1):
            s = getattr(self, "layer_%d" % i)
            x = lrelu(s.batch_normalization(s.conv(x)))
        return getattr(self, "layer_%d" % (self.levels + 1)).conv(x)   # (N, nz, 1, 1)


class Generator(Net):
    def __init__(self, cfg):
        super().__init__()
        w = widths(cfg)
        self.levels = len(w)
        scope(self, "layer_1", tconv1=nn.ConvTranspose2d(cfg["nz"], w[-1], 4, 1, 0),
              batch_normalization=BN(w[-1]))
        for k in range(2, self.levels + 1):
            cin, cout = w[self.levels - k + 1], w[self.levels - k]
            scope(self, "layer_%d" % k, **{"tconv%d" % k: nn.ConvTranspose2d(cin, cout, 4, 2, 1),
                                           "batch_normalization": BN(cout)})
        k = self.levels + 1
        scope(self, "layer_%d" % k, **{"tconv%d" % k: nn.ConvTranspose2d(w[0], cfg["nc"], 4, 2, 1)})

    def forward(self, z):
        x = z.reshape(z.shape[0], -1, 1, 1)
        for k in range(1, self.levels + 1):
            s = getattr(self, "layer_%d" % k)
            x = F.relu(s.batch_normalization(getattr(s, "tconv%d" % k)(x)))
        k = self.levels + 1
        return torch.tanh(getattr(getattr(self, "layer_%d" % k), "tconv%d" % k)(x))


class DiscriminatorXZ(Net):
    def __init__(self, cfg):
        super().__init__()
        w, nf, p = widths(cfg), cfg["nf"], cfg["dropout"]
        self.levels = len(w)
        scope(self, "x_layer_1", conv1=nn.Conv2d(cfg["nc"], w[0], 4, 2, 1))
        for i in range(2, self.levels + 1):
            scope(self, "x_layer_%d" % i, **{"conv%d" % i: nn.Conv2d(w[i - 2], w[i - 1], 4, 2, 1),
                                             "batch_normalization": BN(w[i - 1])})
        scope(self, "z_layer_1", conv=nn.Conv2d(cfg["nz"], 4 * nf, 1), dropout=nn.Dropout(p))
        scope(self, "z_layer_2", conv=nn.Conv2d(4 * nf, 4 * nf, 1), dropout=nn.Dropout(p))
        scope(self, "y_layer_1", conv=nn.Conv2d(w[-1] * 16 + 4 * nf, 8 * nf, 1),
              dropout=nn.Dropout(p))
        scope(self, "y_layer_2", conv=nn.Conv2d(8 * nf, 1, 1))

    def forward(self, x, z):
        """(logit (N,), feature (N, 8 nf, 1, 1))"""
        n = x.shape[0]
        x = lrelu(self.x_layer_1.conv1(x))
        for i in range(2, self.levels + 1):
            s = getattr(self, "x_layer_%d" % i)
            x = lrelu(s.batch_normalization(getattr(s, "conv%d" % i)(x)))
        x = x.reshape(n, -1, 1, 1)
        z = z.reshape(n, -1, 1, 1)
        for s in (self.z_layer_1, self.z_layer_2):
            z = s.dropout(lrelu(s.conv(z)))
        y = torch.cat([x, z], 1)
        y = self.y_layer_1.dropout(lrelu(self.y_layer_1.conv(y)))
        return self.y_layer_2.conv(y).reshape(n), y


class DiscriminatorXX(Net):
    def __init__(self, cfg):
        super().__init__()
        nf, p, s = cfg["nf"], cfg["dropout"], cfg["isize"] // 4
        scope(self, "layer_1", conv1=nn.Conv2d(2 * cfg["nc"], nf // 2, 5, 2, 2), dropout=nn.Dropout(p))
        scope(self, "layer_2", conv2=nn.Conv2d(nf // 2, nf, 5, 2, 2), dropout=nn.Dropout(p))
        scope(self, "layer_3", fc=nn.Linear(nf * s * s, 1))

    def forward(self, x, xr):
        """(logit (N,), f_xx (N, nf (isize/4)^2))"""
        n = x.shape[0]
        y = torch.cat([x, xr], 1)
        y = self.layer_1.dropout(lrelu(self.layer_1.conv1(y)))
        y = self.layer_2.dropout(lrelu(self.layer_2.conv2(y)))
        f = y.reshape(n, -1)
        return self.layer_3.fc(f).reshape(n), f


class DiscriminatorZZ(Net):
    def __init__(self, cfg):
        super().__init__()
        p = cfg["dropout"]
        scope(self, "y_layer_1", fc=nn.Linear(2 * cfg["nz"], 64), dropout=nn.Dropout(p))
        scope(self, "y_layer_2", fc=nn.Linear(64, 32), dropout=nn.Dropout(p))
        scope(self, "y_layer_3", fc=nn.Linear(32, 1))

    def forward(self, z, zr):
        n = z.shape[0]
        y = torch.cat([z.reshape(n, -1), zr.reshape(n, -1)], 1)
        for s in (self.y_layer_1, self.y_layer_2):
            y = s.dropout(lrelu(s.fc(y)))
        return self.y_layer_3.fc(y).reshape(n), y


def build(cfg):
    """{name: net} in the model's order (D_zz only with dzz), train mode."""
    cfg = full_cfg(cfg)
    nets = {"encoder": Encoder(cfg), "generator": Generator(cfg),
            "discriminator_xz": DiscriminatorXZ(cfg), "discriminator_xx": DiscriminatorXX(cfg)}
    if cfg["dzz"]:
        nets["discriminator_zz"] = DiscriminatorZZ(cfg)
    return nets


def sn_layers(nets, cfg):
    """The spectrally normalised layers, in the C port's order: E, D_xz, D_xx, D_zz."""
    cfg = full_cfg(cfg)
    if not cfg["sn"]:
        return []
    e, dxz, dxx = nets["encoder"], nets["discriminator_xz"], nets["discriminator_xx"]
    out = [getattr(e, "layer_%d" % i).conv for i in range(1, e.levels + 1)]
    out += [getattr(getattr(dxz, "x_layer_%d" % i), "conv%d" % i) for i in range(1, dxz.levels + 1)]
    out += [dxz.z_layer_1.conv, dxz.z_layer_2.conv, dxz.y_layer_1.conv]
    out += [dxx.layer_1.conv1, dxx.layer_2.conv2]
    if "discriminator_zz" in nets:
        out += [nets["discriminator_zz"].y_layer_1.fc, nets["discriminator_zz"].y_layer_2.fc]
    return out


class SpectralNorm(nn.Module):
    """Parametrisation W -> W / sigma, sigma = u^T W v with u and v constant
    (buffers); refresh(W) is one power iteration, as core/layers/spectral_norm.c."""

    def __init__(self, u, cols):
        super().__init__()
        self.register_buffer("u", u.clone())
        self.register_buffer("v", torch.zeros(cols, dtype=u.dtype))

    def forward(self, w):
        wm = w.reshape(w.shape[0], -1)
        return w / torch.dot(self.u, wm @ self.v)

    @torch.no_grad()
    def refresh(self, w):
        wm = w.reshape(w.shape[0], -1)
        self.v.copy_(F.normalize(wm.t() @ self.u, dim=0, eps=SN_EPS))
        self.u.copy_(F.normalize(wm @ self.v, dim=0, eps=SN_EPS))


def add_sn(nets, cfg, us):
    """Normalise sn_layers(nets, cfg), the i-th starting from us[i], and run
    the first power iteration (the C port's train_begin)."""
    for m, u in zip(sn_layers(nets, cfg), us):
        parametrize.register_parametrization(m, "weight", SpectralNorm(u.to(m.weight.dtype),
                                                                       m.weight[0].numel()))
        refresh(m)


def refresh(m):
    m.parametrizations.weight[0].refresh(m.parametrizations.weight.original)


def raw_weight(m):
    return m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight


def init_from_rng(nets, cfg, rng, std=INIT_STD):
    """The C port's train_begin: net_init_normal(net, r, std, 0) over the nets
    in order (weights N(0, std) drawn element by element from core/rng.c's
    rng_normal and rounded to float32, biases 0, batch norm gamma 1, beta 0,
    running mean 0, variance 1), then one u per normalised layer (rows normals
    rounded to float32, divided by their norm taken in double). Returns the u's
    (float32 tensors)."""
    s = float(np.float32(std))
    with torch.no_grad():
        for name in NETS:
            if name not in nets:
                continue
            for _, m in nets[name].layers():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.fill_(1)
                    m.bias.zero_()
                    m.running_mean.zero_()
                    m.running_var.fill_(1)
                    continue
                w = raw_weight(m)
                vals = np.array([s * rng.normal() for _ in range(w.numel())], np.float64)
                w.copy_(torch.from_numpy(vals.astype(np.float32).reshape(tuple(w.shape))))
                m.bias.zero_()
    us = []
    for m in sn_layers(nets, cfg):
        u = np.array([rng.normal() for _ in range(m.weight.shape[0])], np.float64)
        u = u.astype(np.float32).astype(np.float64)
        u = (u / max(math.sqrt(float(np.sum(u * u))), SN_EPS)).astype(np.float32)
        us.append(torch.from_numpy(u))
    return us


def model_tensors(nets, which="live"):
    """name -> float64 numpy array in the C port's order. which: "live" (the
    weights the layers compute with, what a model file stores) or "raw"."""
    out = {}
    for name in NETS:
        if name not in nets:
            continue
        for path, m in nets[name].layers():
            p = "%s.%s." % (name, path)
            if isinstance(m, nn.BatchNorm2d):
                for k in ("weight", "bias", "running_mean", "running_var"):
                    out[p + k] = getattr(m, k).detach().double().numpy().copy()
                continue
            w = m.weight if which == "live" else raw_weight(m)
            out[p + "weight"] = w.detach().double().numpy().copy()
            out[p + "bias"] = m.bias.detach().double().numpy().copy()
    return out


def set_tensors(nets, tensors):
    """Load plain (not parametrised) nets from name -> array."""
    with torch.no_grad():
        for name, net in nets.items():
            for path, m in net.layers():
                keys = ("weight", "bias", "running_mean", "running_var") \
                    if isinstance(m, nn.BatchNorm2d) else ("weight", "bias")
                for k in keys:
                    getattr(m, k).copy_(torch.from_numpy(np.asarray(tensors["%s.%s.%s" % (name, path, k)])))


def set_mode(nets, train, update=True):
    for net in nets.values():
        net.train(train)
        for m in net.modules():
            if isinstance(m, BN):
                m.update = update


# ---------------------------------------------------------------------------
# Scoring (the authors' run.py "Testing" scope, inference mode)
# ---------------------------------------------------------------------------

def score(nets, x):
    """Eval-mode outputs for x (N, nc, s, s): z = E(x), x_hat = G(z), D_xx's
    features and logits for (x, x) and (x, x_hat), and the four scores
      fm = sum |f_xx(x, x) - f_xx(x, x_hat)|  (tf.norm ord 1, degree 1)
      ch = softplus(-logit D_xx(x, x_hat))    (sigmoid CE against 1)
      l1 = sum |x - x_hat|, l2 = sqrt(sum (x - x_hat)^2)
    plus D_xz's logit of (x, E(x)) and D_zz's of (z, E(x_hat)) when present."""
    set_mode(nets, False)
    n = x.shape[0]
    with torch.no_grad():
        z = nets["encoder"](x)
        xh = nets["generator"](z)
        lr_, fr = nets["discriminator_xx"](x, x)
        lf, ff = nets["discriminator_xx"](x, xh)
        lxz, _ = nets["discriminator_xz"](x, z)
        d = (x - xh).reshape(n, -1)
        out = {"z": z.reshape(n, -1), "x_hat": xh, "f_real": fr, "f_fake": ff,
               "logit_real": lr_, "logit_fake": lf, "logit_xz": lxz,
               "fm": (fr - ff).abs().sum(1), "ch": F.softplus(-lf),
               "l1": d.abs().sum(1), "l2": d.pow(2).sum(1).sqrt()}
        if "discriminator_zz" in nets:
            out["logit_zz"], _ = nets["discriminator_zz"](z, nets["encoder"](xh))
    return out


# ---------------------------------------------------------------------------
# Training (the authors' run.py, one batch)
# ---------------------------------------------------------------------------

def bce(logits, target):
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


class Trainer:
    """The authors' training step on nets (build + init_from_rng + add_sn):

      D step, z1: E and G in training mode (batch statistics, running
        statistics untouched), no gradients: E(x), G(z1), G(E(x)), E(G(z1));
        d_xz = BCE(D_xz(x, E(x)), 1) + BCE(D_xz(G(z1), z1), 0)
        d_xx = BCE(D_xx(x, x), 1) + BCE(D_xx(x, G(E(x))), 0)
        d_zz = BCE(D_zz(z1, z1), 1) + BCE(D_zz(z1, E(G(z1))), 0)
        each D its own Adam step; D's running statistics move (real pass, then fake)
      G/E step, z2: E and G update their running statistics (E(x), G(z2),
        G(E(x)), E(G(z2)), in that order), the D's do not;
        cycle = BCE(D_xx(x, x), 0) + BCE(D_xx(x, x_rec), 1)
              + BCE(D_zz(z2, z2), 0) + BCE(D_zz(z2, z_rec), 1)
        g = BCE(D_xz(G(z2), z2), 1) + cycle -> Adam on G
        e = BCE(D_xz(x, E(x)), 0) + cycle   -> Adam on E
    After each Adam step: the moving average of that network's raw weights
    (decay ema), then one power iteration of its normalised layers (refresh).
    The biases of layers that feed a batch norm get gradient 0 (see _update).
    z1 and z2 are given (the C port draws them from its rng). Returns the
    losses d_xz, d_xx, d_zz, g, e (d_zz 0 without D_zz)."""

    def __init__(self, nets, cfg, hp=None):
        self.cfg, self.nets = full_cfg(cfg), nets
        self.hp = dict(TRAIN_DEFAULTS, **(hp or {}))
        betas = (self.hp["beta1"], self.hp["beta2"])
        self.opt = {k: torch.optim.Adam(list(v.parameters()), lr=self.hp["lr"], betas=betas, eps=1e-8)
                    for k, v in nets.items()}
        # the moving average starts at zero and is bias-corrected in finish()
        # (core/shadow.h); TensorFlow's starts from the initial weights
        self.ema = {k: [torch.zeros_like(p) for p in v.parameters()] for k, v in nets.items()}
        self.ema_steps = {k: 0 for k in nets}
        self.sn = set(id(m) for m in sn_layers(nets, cfg))
        self.bn_fed = set()
        for net in nets.values():
            lst = [m for _, m in net.layers()]
            for j, m in enumerate(lst[:-1]):
                if not isinstance(m, nn.BatchNorm2d) and isinstance(lst[j + 1], nn.BatchNorm2d):
                    self.bn_fed.add(id(m.bias))

    def _update(self, name, grads):
        net = self.nets[name]
        for p, g in zip(net.parameters(), grads):
            # a bias that feeds a training-mode batch norm has gradient 0 in
            # exact arithmetic (the batch mean removes it); what autograd
            # returns is rounding noise, which Adam would turn into steps of
            # up to lr: set to 0, as the C port does
            p.grad = torch.zeros_like(p) if id(p) in self.bn_fed else g.detach().clone()
        self.opt[name].step()
        d = self.hp["ema"]
        self.ema_steps[name] += 1
        with torch.no_grad():
            for a, p in zip(self.ema[name], net.parameters()):
                a.mul_(d).add_((1 - d) * p)
        for _, m in net.layers():
            if id(m) in self.sn:
                refresh(m)

    def step(self, x, z1, z2):
        nets = self.nets
        e, g = nets["encoder"], nets["generator"]
        dxz, dxx, dzz = nets["discriminator_xz"], nets["discriminator_xx"], nets.get("discriminator_zz")
        n = x.shape[0]
        z1, z2 = z1.reshape(n, -1, 1, 1), z2.reshape(n, -1, 1, 1)
        # D step
        set_mode(nets, True)
        set_mode({"e": e, "g": g}, True, update=False)
        with torch.no_grad():
            ex = e(x)
            gz = g(z1)
            rx = g(ex)
            rz = e(gz)
        losses, dnames = {}, ["discriminator_xz", "discriminator_xx"]
        l_enc, _ = dxz(x, ex)
        l_gen, _ = dxz(gz, z1)
        losses["d_xz"] = bce(l_enc, 1) + bce(l_gen, 0)
        xr, _ = dxx(x, x)
        xf, _ = dxx(x, rx)
        losses["d_xx"] = bce(xr, 1) + bce(xf, 0)
        if dzz is not None:
            zr, _ = dzz(z1, z1)
            zf, _ = dzz(z1, rz)
            losses["d_zz"] = bce(zr, 1) + bce(zf, 0)
            dnames.append("discriminator_zz")
        for name, key in zip(dnames, ["d_xz", "d_xx", "d_zz"]):
            grads = torch.autograd.grad(losses[key], list(nets[name].parameters()))
            self._update(name, grads)
        # G/E step
        set_mode(nets, True, update=False)
        set_mode({"e": e, "g": g}, True, update=True)
        ex = e(x)
        gz = g(z2)
        rx = g(ex)
        rz = e(gz)
        l_enc, _ = dxz(x, ex)
        l_gen, _ = dxz(gz, z2)
        xr, _ = dxx(x, x)
        xf, _ = dxx(x, rx)
        cycle = bce(xr, 0) + bce(xf, 1)
        if dzz is not None:
            zr, _ = dzz(z2, z2)
            zf, _ = dzz(z2, rz)
            cycle = cycle + bce(zr, 0) + bce(zf, 1)
        losses["g"] = bce(l_gen, 1) + cycle
        losses["e"] = bce(l_enc, 0) + cycle
        gg = torch.autograd.grad(losses["g"], list(g.parameters()), retain_graph=True)
        ge = torch.autograd.grad(losses["e"], list(e.parameters()))
        self._update("generator", gg)
        self._update("encoder", ge)
        out = {k: float(v.item()) for k, v in losses.items()}
        out.setdefault("d_zz", 0.0)
        return out

    def finish(self):
        """The model to score with: the averaged weights divided by
        1 - decay^steps (a network never stepped keeps its weights), each
        normalised layer after one more power iteration on its average (the
        C port's shadow_finish)."""
        with torch.no_grad():
            for name, net in self.nets.items():
                t = self.ema_steps[name]
                corr = 1.0 - self.hp["ema"] ** t
                if t > 0 and corr > 0:
                    for a, p in zip(self.ema[name], net.parameters()):
                        p.copy_(a / corr)
                for _, m in net.layers():
                    if id(m) in self.sn:
                        refresh(m)


# ---------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------

def model_metadata(cfg, checksum):
    cfg = full_cfg(cfg)
    hp = {"nz": cfg["nz"], "nf": cfg["nf"], "dropout": cfg["dropout"], "sn": cfg["sn"],
          "dzz": cfg["dzz"]}
    return ganomaly_ref.model_metadata(cfg, checksum, "alad", hp)


def write_model(path, nets, cfg):
    """The live weights of nets as an 'alad' model file; returns its size."""
    tensors = {k: v.astype(np.float32) for k, v in model_tensors(nets).items()}
    data = safetensors_io.encode(tensors, {})
    _, data_section = safetensors_io.decode_raw(data)
    return safetensors_io.save(path, tensors, model_metadata(cfg, crc32_hex(data_section)))


def read_model(path):
    """(nets, cfg, metadata) from an 'alad' model file, eval mode, plain layers."""
    header, data = safetensors_io.read_raw(path)
    meta = header.get("__metadata__", {})
    if meta.get("method") != "alad" or meta.get("checksum") != crc32_hex(data):
        raise ValueError("%s: not an alad model or bad checksum" % path)
    hp = json.loads(meta["hparams"])
    cfg = {"isize": int(meta["width"]), "nc": int(meta["channels"]), "nz": hp["nz"], "nf": hp["nf"],
           "dropout": hp.get("dropout", 0.2), "sn": hp.get("sn", 1), "dzz": hp.get("dzz", 1)}
    tensors, _ = safetensors_io.load(path)
    nets = build(cfg)
    expect = model_tensors(nets)
    if list(tensors) != list(expect):
        raise ValueError("%s: tensors %s, expected %s" % (path, list(tensors), list(expect)))
    set_tensors(nets, tensors)
    set_mode(nets, False)
    return nets, cfg, meta
