"""egbad_ref.py - EGBAD in PyTorch, the reference our C port is checked against.

EGBAD (Zenati et al. 2018, houssamzenati/Efficient-GAN-Anomaly-Detection) is a
BiGAN: an encoder E (x -> z), a generator G (z -> x) and a discriminator
D(x, z) that tells the pairs (x, E(x)) from the pairs (G(z), z). The modules
are named after the authors' TensorFlow variable scopes (bigan/mnist_utilities.py),
so the state_dict keys, and hence our model files, read like their variables:
  encoder.layer_1.conv.weight, encoder.layer_2.batch_normalization.running_var,
  generator.layer_2.fc.weight, discriminator.y_fc_logits.fc.bias, ...

cfg is a dict with keys isize (32 or 64), nc, nz, nf, dropout. With
L = log2(isize / 8) stride-2 levels (every map ends 8x8):
  E  layer_1.conv Conv(nc->nf, 3, 1, 1) with no activation (the authors' code);
     layer_{i+1} (i = 1..L): Conv(3, 2, 1) -> 2^i nf, BN, LReLU 0.1;
     layer_{L+2}.fc Linear(2^L nf 64 -> nz)
  G  layer_1: Linear(nz -> 32 nf), BN, ReLU; layer_2: Linear(-> 2^L nf 64), BN,
     ReLU; view (2^L nf, 8, 8); layer_3 .. layer_{L+2}: ConvTranspose(4, 2, 1)
     halving the channels, BN, ReLU, the last to nc channels and tanh
  D  x_layer_1: Conv(nc->2nf, 4, 2, 1), LReLU, dropout; x_layer_2..L: Conv(2nf->2nf,
     4, 2, 1), BN, LReLU, dropout; flattened.  z_layer_1: Linear(nz -> 16 nf),
     LReLU, dropout.  y_layer_1: Linear(concat -> 32 nf), LReLU, dropout = the
     feature f; y_fc_logits: Linear(-> 1) = the logit.
Flattening is PyTorch's (C, H, W) order, as our C nets store activations; the
authors' NHWC flatten is the same network with the rows of the next weight
permuted. Batch norm has TensorFlow's defaults: eps 1e-3, momentum 0.01 in
PyTorch's convention (TF's 0.99). Biases are on (TF's default).

  model = build(cfg)                    # random init (torch), train mode
  write_model("m.safetensors", model, cfg)
  model, cfg, meta = read_model("m.safetensors")   # checksum verified, eval mode
  out = score(model, x)                 # z, x_hat, f_x, f_xhat, logits, parts
  tr = Trainer(model, hp); losses = tr.step(x, z1, z2)
"""

import contextlib
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

import safetensors_io
import ganomaly_ref
from ganomaly_ref import crc32_hex

LRELU = 0.1
BN_EPS, BN_MOMENTUM = 1e-3, 0.01
INIT_STD = 0.02
HP_DEFAULTS = {"lr": 1e-5, "beta1": 0.5, "beta2": 0.999, "ema": 0.999, "score_w": 0.1}


def levels(isize):
    """L, the stride-2 levels from isize down to 8."""
    return {32: 2, 64: 3}[isize]


class Scope(nn.Module):
    """A TensorFlow variable scope: named sub-layers, called by name."""

    def __init__(self, **layers):
        super().__init__()
        for k, v in layers.items():
            self.add_module(k, v)


def bn2d(c):
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


def bn1d(c):
    return nn.BatchNorm1d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class Encoder(nn.Module):
    """(N, nc, s, s) -> (N, nz)."""

    def __init__(self, cfg):
        super().__init__()
        nc, nf, nz, L = cfg["nc"], cfg["nf"], cfg["nz"], levels(cfg["isize"])
        self.L = L
        self.layer_1 = Scope(conv=nn.Conv2d(nc, nf, 3, 1, 1))
        for i in range(1, L + 1):
            self.add_module("layer_%d" % (i + 1),
                            Scope(conv=nn.Conv2d(nf << (i - 1), nf << i, 3, 2, 1),
                                  batch_normalization=bn2d(nf << i)))
        self.add_module("layer_%d" % (L + 2), Scope(fc=nn.Linear((nf << L) * 64, nz)))

    def forward(self, x):
        h = self.layer_1.conv(x)
        for i in range(2, self.L + 2):
            s = getattr(self, "layer_%d" % i)
            h = F.leaky_relu(s.batch_normalization(s.conv(h)), LRELU)
        return getattr(self, "layer_%d" % (self.L + 2)).fc(h.flatten(1))


class Generator(nn.Module):
    """(N, nz) -> (N, nc, s, s), tanh."""

    def __init__(self, cfg):
        super().__init__()
        nc, nf, nz, L = cfg["nc"], cfg["nf"], cfg["nz"], levels(cfg["isize"])
        self.L, self.top = L, nf << L
        self.layer_1 = Scope(fc=nn.Linear(nz, 32 * nf), batch_normalization=bn1d(32 * nf))
        self.layer_2 = Scope(fc=nn.Linear(32 * nf, self.top * 64),
                             batch_normalization=bn1d(self.top * 64))
        for j in range(1, L + 1):
            cin, cout = self.top >> (j - 1), (nc if j == L else self.top >> j)
            layers = {"conv": nn.ConvTranspose2d(cin, cout, 4, 2, 1)}
            if j < L:
                layers["batch_normalization"] = bn2d(cout)
            self.add_module("layer_%d" % (j + 2), Scope(**layers))

    def forward(self, z):
        h = F.relu(self.layer_1.batch_normalization(self.layer_1.fc(z)))
        h = F.relu(self.layer_2.batch_normalization(self.layer_2.fc(h)))
        h = h.reshape(h.shape[0], self.top, 8, 8)
        for j in range(1, self.L + 1):
            s = getattr(self, "layer_%d" % (j + 2))
            h = s.conv(h)
            h = torch.tanh(h) if j == self.L else F.relu(s.batch_normalization(h))
        return h


class Discriminator(nn.Module):
    """D(x, z) -> (logit (N,), f (N, 32 nf)).

    Dropout: identity in eval mode or with p 0; in train mode either
    F.dropout or, when masks is given (a list of 0/1 tensors, one per dropout
    in forward order: x_layer_1.., z_layer_1, y_layer_1), x * mask / (1 - p)."""

    def __init__(self, cfg):
        super().__init__()
        nc, nf, nz, L = cfg["nc"], cfg["nf"], cfg["nz"], levels(cfg["isize"])
        self.L, self.p = L, cfg.get("dropout", 0.5)
        self.x_layer_1 = Scope(conv=nn.Conv2d(nc, 2 * nf, 4, 2, 1))
        for j in range(2, L + 1):
            self.add_module("x_layer_%d" % j, Scope(conv=nn.Conv2d(2 * nf, 2 * nf, 4, 2, 1),
                                                    batch_normalization=bn2d(2 * nf)))
        self.z_layer_1 = Scope(fc=nn.Linear(nz, 16 * nf))
        self.y_layer_1 = Scope(fc=nn.Linear(2 * nf * 64 + 16 * nf, 32 * nf))
        self.y_fc_logits = Scope(fc=nn.Linear(32 * nf, 1))

    def _drop(self, h, masks):
        if not self.training or self.p == 0:
            return h
        if masks is None:
            return F.dropout(h, self.p, True)
        return h * masks.pop(0).to(h.dtype) / (1.0 - self.p)

    def forward(self, x, z, masks=None):
        masks = list(masks) if masks is not None else None
        h = x
        for j in range(1, self.L + 1):
            s = getattr(self, "x_layer_%d" % j)
            h = s.conv(h)
            if j > 1:
                h = s.batch_normalization(h)
            h = self._drop(F.leaky_relu(h, LRELU), masks)
        hz = self._drop(F.leaky_relu(self.z_layer_1.fc(z), LRELU), masks)
        y = torch.cat([h.flatten(1), hz], 1)
        f = self._drop(F.leaky_relu(self.y_layer_1.fc(y), LRELU), masks)
        return self.y_fc_logits.fc(f).reshape(-1), f

    def mask_shapes(self, n, isize):
        """The shapes of the dropout masks of a batch of n, in forward order."""
        c, s, shapes = self.x_layer_1.conv.out_channels, isize, []
        for _ in range(self.L):
            s //= 2
            shapes.append((n, c, s, s))
        return shapes + [(n, self.z_layer_1.fc.out_features), (n, self.y_layer_1.fc.out_features)]


class EGBAD(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(cfg)
        self.encoder = Encoder(cfg)
        self.generator = Generator(cfg)
        self.discriminator = Discriminator(cfg)


def build(cfg):
    """A fresh EGBAD with the authors' init from torch's global RNG: conv and
    dense weights N(0, 0.02), biases 0, BN gamma 1 and beta 0. Train mode."""
    model = EGBAD(cfg)
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(mod.weight, 0.0, INIT_STD)
            nn.init.zeros_(mod.bias)
    return model


def weight_modules(model):
    """The conv and dense layers in our nets' order (E, G, D's x, z, joint)."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]


def init_from_rng(model, r):
    """Our C init (net_init_normal(nt, r, 0.02f, 0) over E, G, Dx, Dz, Dj):
    every weight, in layer order and row-major in the state_dict layout,
    float(0.02f * rng_normal()), biases 0; BN gamma 1, beta 0, running
    statistics 0 and 1. r is anogan_ref.Rng, advanced past the draws."""
    std = float(torch.tensor(INIT_STD, dtype=torch.float32).item())
    with torch.no_grad():
        for mod in weight_modules(model):
            vals = [std * r.normal() for _ in range(mod.weight.numel())]
            mod.weight.copy_(torch.tensor(vals, dtype=torch.float64).float().reshape(mod.weight.shape))
            mod.bias.zero_()
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.reset_parameters()


def model_tensors(model):
    """name -> float32 numpy array, in state_dict order, as stored in the model file."""
    return {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def model_metadata(cfg, checksum):
    hp = {"nz": cfg["nz"], "nf": cfg["nf"]}
    if "dropout" in cfg:
        hp["dropout"] = cfg["dropout"]
    return ganomaly_ref.model_metadata(cfg, checksum, "egbad", hp)


def write_model(path, model, cfg):
    """Write model to path as a sqlite-anomaly 'egbad' model file; returns its size."""
    tensors = model_tensors(model)
    data = safetensors_io.encode(tensors, {})
    _, data_section = safetensors_io.decode_raw(data)
    return safetensors_io.save(path, tensors, model_metadata(cfg, crc32_hex(data_section)))


def read_model(path):
    """(model, cfg, metadata) from an 'egbad' model file, in eval mode."""
    header, data = safetensors_io.read_raw(path)
    meta = header.get("__metadata__", {})
    if meta.get("method") != "egbad" or meta.get("checksum") != crc32_hex(data):
        raise ValueError("%s: not an egbad model or bad checksum" % path)
    hp = json.loads(meta["hparams"])
    cfg = {"isize": int(meta["width"]), "nc": int(meta["channels"]),
           "nz": hp.get("nz", 200), "nf": hp.get("nf", 32), "dropout": hp.get("dropout", 0.5)}
    tensors, _ = safetensors_io.load(path)
    model = EGBAD(cfg)
    res = model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
    missing = [k for k in res.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or res.unexpected_keys:
        raise ValueError("%s: missing %s, unexpected %s" % (path, missing, res.unexpected_keys))
    model.eval()
    return model, cfg, meta


def score(model, x, score_w=HP_DEFAULTS["score_w"]):
    """The scoring pass in eval mode (running statistics, no dropout), per image:
    residual = sum |x - x_hat|, fm = sum |f(x, z) - f(x_hat, z)|,
    ce = softplus(-logit of D(x_hat, z)), score_fm / score_ce = (1 - w) residual + w (fm | ce)."""
    model.eval()
    with torch.no_grad():
        z = model.encoder(x)
        xh = model.generator(z)
        lx, fx = model.discriminator(x, z)
        lxh, fxh = model.discriminator(xh, z)
    n = x.shape[0]
    res = (x - xh).abs().reshape(n, -1).sum(1)
    fm = (fx - fxh).abs().sum(1)
    ce = F.softplus(-lxh)
    return {"z": z, "x_hat": xh, "f_x": fx, "f_xhat": fxh, "logit_x": lx, "logit_xhat": lxh,
            "residual": res, "fm": fm, "ce": ce,
            "score_fm": (1 - score_w) * res + score_w * fm,
            "score_ce": (1 - score_w) * res + score_w * ce}


@contextlib.contextmanager
def batch_stats_only(*nets):
    """Train-mode batch norm (batch statistics) that leaves the running
    statistics as they are: momentum 0 for the duration (exact in torch:
    (1 - 0) run + 0 stat)."""
    bns = [m for net in nets for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    keep = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, k in zip(bns, keep):
            m.momentum = k


def bce(logits, target):
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class Trainer:
    """The authors' training step (bigan/run_mnist.py) on one batch, z given:

      D step:  with E and G on batch statistics (running statistics untouched),
               L_D = BCE(D(x, E(x)), 1) + BCE(D(G(z1), z1), 0); Adam on D only;
               D's running statistics move on the real pair, then the fake one.
      G+E step (one forward, as their single sess.run): E(x) and G(z2) in train
               mode with running updates, D on batch statistics without;
               L_G = BCE(D(G(z2), z2), 1) -> Adam on G;
               L_E = BCE(D(x, E(x)), 0)   -> Adam on E.
      After each optimiser step, ema = decay ema + (1 - decay) w over its
      network; the average starts at zero and finish() divides it by
      1 - decay^steps (core/shadow.h: TensorFlow's starts from the initial
      weights, a deviation that matters only in short runs).

    One Adam per network (torch semantics, eps 1e-8). masks: None (F.dropout)
    or a callable returning the mask list of one D forward, called in forward
    order. Returns {"d", "g", "e"}.
    """

    def __init__(self, model, hp=None, masks=None):
        self.hp = dict(HP_DEFAULTS, **(hp or {}))
        self.model, self.masks = model, masks
        betas = (self.hp["beta1"], self.hp["beta2"])
        self.opt = {k: torch.optim.Adam(getattr(model, k).parameters(), lr=self.hp["lr"],
                                        betas=betas, eps=1e-8)
                    for k in ("encoder", "generator", "discriminator")}
        self.ema = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
        self.ema_steps = {"encoder": 0, "generator": 0, "discriminator": 0}
        model.train()

    def _d(self, x, z):
        return self.model.discriminator(x, z, self.masks() if self.masks else None)

    def _ema(self, part):
        d = self.hp["ema"]
        self.ema_steps[part] += 1
        with torch.no_grad():
            for k, v in self.model.named_parameters():
                if k.startswith(part + "."):
                    self.ema[k].mul_(d).add_((1 - d) * v)

    def step(self, x, z1, z2):
        m = self.model
        enc, gen, dis = m.encoder, m.generator, m.discriminator
        # D step
        with torch.no_grad(), batch_stats_only(enc, gen):
            ez, gz = enc(x), gen(z1)
        l_real, _ = self._d(x, ez)
        l_fake, _ = self._d(gz, z1)
        loss_d = bce(l_real, 1.0) + bce(l_fake, 0.0)
        self.opt["discriminator"].zero_grad()
        loss_d.backward()
        self.opt["discriminator"].step()
        self._ema("discriminator")
        # G and E step
        ez, gz = enc(x), gen(z2)
        with batch_stats_only(dis):
            l_real, _ = self._d(x, ez)
            l_fake, _ = self._d(gz, z2)
        loss_g = bce(l_fake, 1.0)
        loss_e = bce(l_real, 0.0)
        g_grads = torch.autograd.grad(loss_g, list(gen.parameters()), retain_graph=True)
        e_grads = torch.autograd.grad(loss_e, list(enc.parameters()))
        for p, g in zip(gen.parameters(), g_grads):
            p.grad = g
        for p, g in zip(enc.parameters(), e_grads):
            p.grad = g
        self.opt["generator"].step()
        self.opt["encoder"].step()
        self._ema("generator")
        self._ema("encoder")
        return {"d": loss_d.item(), "g": loss_g.item(), "e": loss_e.item()}

    def finish(self):
        """Put the averaged weights, bias-corrected, into the model (the
        authors test with the averages)."""
        with torch.no_grad():
            for k, v in self.model.named_parameters():
                t = self.ema_steps[k.split(".")[0]]
                corr = 1.0 - self.hp["ema"] ** t
                if t > 0 and corr > 0:
                    v.copy_(self.ema[k] / corr)
