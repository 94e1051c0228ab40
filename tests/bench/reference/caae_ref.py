"""caae_ref.py - the constrained adversarial auto-encoder in PyTorch, the reference our C port
(core/detectors/caae.c) is checked against.

Chen and Konukoglu, MIDL 2018; the authors' TensorFlow/TensorLayer code is
aubreychen9012/cAAE (main.py, model.py, funcs/resblocks.py). The modules here
follow that code with symmetric padding, and their state_dict keys are our
model file's tensor names:
  Encoder   conv1 (3x3, bias) + LReLU, bn1 + LReLU, res1..res4 (ResDown), dense
            keys "encoder.conv1.weight", "encoder.res2.bn3.running_var", ...
  Decoder   dense (+ LReLU), view (16nf, s, s), conv1 (3x3, bias) + LReLU,
            res1..res4 (ResUp), conv2 (3x3, bias, linear output)
  Critic    h0, h1 (LReLU 0.2 after each), h2 -> 1
  ResDown(C)  main: conv1 3x3 s2 C->C, bn1, LReLU, conv2 3x3 C->2C, bn2, LReLU
              shortcut: conv3 3x3 s2 C->2C, bn3, LReLU; out = main + shortcut
  ResUp(C)    main: deconv1 ConvT 4x4 s2 p1 C->C, bn1, LReLU,
                    deconv2 ConvT 3x3 s1 p1 C->C/2, bn2, LReLU
              shortcut: conv3 ConvT 4x4 s2 p1 C->C/2, bn3, LReLU
Batch norm: eps 1e-5, momentum 0.1 (TensorLayer's decay 0.9). Convolutions
right before a batch norm have no bias. cfg is a dict with keys side, nc, nz,
nf, critic_h1, critic_h2.

  model = CAAE(cfg)                    # torch's default init
  init_like_c(model, Rng(seed))        # core/detectors/caae.c's init, same draws
  model, cfg, meta = read_model("m.safetensors")   # checksum verified, eval mode
  tr = Trainer(model, hp, rng)         # the authors' schedule (main.py)
  losses = tr.step(x)                  # rec, cons, critic, gp, enc
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from anogan_ref import Rng  # noqa: F401  (core/rng.c's generator, re-exported)

SLOPE = 0.2
BN_EPS = 1e-5
LOSSES = ["rec", "cons", "critic", "gp", "enc"]


def bn(c):
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.1)


def act(x):
    return F.leaky_relu(x, SLOPE)


class ResDown(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 2, 1, bias=False)
        self.bn1 = bn(c)
        self.conv2 = nn.Conv2d(c, 2 * c, 3, 1, 1, bias=False)
        self.bn2 = bn(2 * c)
        self.conv3 = nn.Conv2d(c, 2 * c, 3, 2, 1, bias=False)
        self.bn3 = bn(2 * c)

    def forward(self, x):
        main = act(self.bn2(self.conv2(act(self.bn1(self.conv1(x))))))
        return main + act(self.bn3(self.conv3(x)))


class ResUp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.deconv1 = nn.ConvTranspose2d(c, c, 4, 2, 1, bias=False)
        self.bn1 = bn(c)
        self.deconv2 = nn.ConvTranspose2d(c, c // 2, 3, 1, 1, bias=False)
        self.bn2 = bn(c // 2)
        self.conv3 = nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False)
        self.bn3 = bn(c // 2)

    def forward(self, x):
        main = act(self.bn2(self.deconv2(act(self.bn1(self.deconv1(x))))))
        return main + act(self.bn3(self.conv3(x)))


class Encoder(nn.Module):
    """(N, nc, side, side) -> (N, nz)."""

    def __init__(self, cfg):
        super().__init__()
        nf, s = cfg["nf"], cfg["side"] // 16
        self.conv1 = nn.Conv2d(cfg["nc"], nf, 3, 1, 1)
        self.bn1 = bn(nf)
        for k in range(4):
            setattr(self, "res%d" % (k + 1), ResDown(nf << k))
        self.dense = nn.Linear(16 * nf * s * s, cfg["nz"])

    def forward(self, x):
        h = act(self.bn1(act(self.conv1(x))))
        for k in range(4):
            h = getattr(self, "res%d" % (k + 1))(h)
        return self.dense(h.flatten(1))


class Decoder(nn.Module):
    """(N, nz) -> (N, nc, side, side), linear output."""

    def __init__(self, cfg):
        super().__init__()
        nf, self.s = cfg["nf"], cfg["side"] // 16
        self.c0 = 16 * nf
        self.dense = nn.Linear(cfg["nz"], self.c0 * self.s * self.s)
        self.conv1 = nn.Conv2d(self.c0, 8 * nf, 3, 1, 1)
        c = 8 * nf
        for k in range(4):
            setattr(self, "res%d" % (k + 1), ResUp(c))
            c //= 2
        self.conv2 = nn.Conv2d(c, cfg["nc"], 3, 1, 1)

    def forward(self, z):
        h = act(self.dense(z)).view(z.shape[0], self.c0, self.s, self.s)
        h = act(self.conv1(h))
        for k in range(4):
            h = getattr(self, "res%d" % (k + 1))(h)
        return self.conv2(h)


class Critic(nn.Module):
    """(N, nz) -> (N, 1): the WGAN critic in latent space."""

    def __init__(self, cfg):
        super().__init__()
        self.h0 = nn.Linear(cfg["nz"], cfg["critic_h1"])
        self.h1 = nn.Linear(cfg["critic_h1"], cfg["critic_h2"])
        self.h2 = nn.Linear(cfg["critic_h2"], 1)

    def forward(self, z):
        return self.h2(act(self.h1(act(self.h0(z)))))


class CAAE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.critic = Critic(cfg)

    def reconstruct(self, x):
        return self.decoder(self.encoder(x))


def tensors(model):
    """Our tensor name -> numpy array (the model's dtype), state_dict order, no
    num_batches_tracked."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def load_tensors(model, t, prefix=""):
    """Copy prefix + name arrays of t into the model (its dtype)."""
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in sd.items():
            if not k.endswith("num_batches_tracked"):
                v.copy_(torch.from_numpy(t[prefix + k]))


def read_model(path):
    """(model, cfg, metadata) from a 'caae' model file, in eval mode. Checks the
    checksum and that the tensors are exactly the model's (num_batches_tracked
    excepted)."""
    import json
    import safetensors_io
    from ganomaly_ref import crc32_hex
    header, data = safetensors_io.read_raw(path)
    meta = header.get("__metadata__", {})
    if meta.get("method") != "caae" or meta.get("checksum") != crc32_hex(data):
        raise ValueError("%s: not a caae model or bad checksum" % path)
    if meta["width"] != meta["height"]:
        raise ValueError("%s: width %s != height %s" % (path, meta["width"], meta["height"]))
    hp = json.loads(meta["hparams"])
    cfg = {"side": int(meta["width"]), "nc": int(meta["channels"]), "nz": hp.get("nz", 128),
           "nf": hp.get("nf", 16), "critic_h1": hp.get("critic_h1", 200),
           "critic_h2": hp.get("critic_h2", 400)}
    t, _ = safetensors_io.load(path)
    model = CAAE(cfg)
    expect = list(tensors(model))
    if list(t) != expect:
        raise ValueError("%s: tensors %s, expected %s" % (path, list(t), expect))
    load_tensors(model, t)
    model.eval()
    return model, cfg, meta


def gradient_penalty(critic, zhat):
    """GP = mean_i (||grad D(zhat_i)|| - 1)^2 with its graph kept (double backprop); also the
    gradient of D at zhat."""
    zhat = zhat.detach().requires_grad_(True)
    g = torch.autograd.grad(critic(zhat).sum(), zhat, create_graph=True)[0]
    return ((g.norm(2, dim=1) - 1) ** 2).mean(), g


# ---------------------------------------------------------------------------
# The C initialisation, draw for draw
# ---------------------------------------------------------------------------

def _draw(rng, std, truncated):
    while True:
        v = rng.normal()
        if not truncated or abs(v) <= 2.0:
            return std * v


def init_like_c(model, rng):
    """core/detectors/caae.c's init_weights with the generator rng: conv and transposed-conv
    weights truncated N(0, 0.02), dense weights truncated N(0, 0.1), the critic's N(0, 0.01),
    biases 0, BN gamma N(1, 0.01) for the encoder's bn1 and N(1, 0.02) elsewhere, beta 0,
    running statistics 0 and 1; layers in module order, each weight then each gamma."""
    with torch.no_grad():
        for part in (model.encoder, model.decoder, model.critic):
            for name, mod in part.named_modules():
                if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                    crit = part is model.critic
                    std = 0.01 if crit else (0.1 if isinstance(mod, nn.Linear) else 0.02)
                    w = [_draw(rng, std, not crit) for _ in range(mod.weight.numel())]
                    mod.weight.copy_(torch.tensor(w, dtype=torch.float64)
                                     .float().reshape(mod.weight.shape))
                    if mod.bias is not None:
                        mod.bias.zero_()
                elif isinstance(mod, nn.BatchNorm2d):
                    gs = 0.01 if (part is model.encoder and name == "bn1") else 0.02
                    gam = [1.0 + gs * rng.normal() for _ in range(mod.num_features)]
                    mod.weight.copy_(torch.tensor(gam, dtype=torch.float64).float())
                    mod.bias.zero_()
                    mod.running_mean.zero_()
                    mod.running_var.fill_(1.0)


# ---------------------------------------------------------------------------
# Training: the authors' main.py schedule
# ---------------------------------------------------------------------------

TRAIN_DEFAULTS = {"lr": 2e-5, "beta1": 0.5, "beta2": 0.9, "rho": 0.5, "gp": 10.0,
                  "n_critic": 20, "n_critic_early": 200, "early_epochs": 20,
                  "epoch_batches": 0}


class Trainer:
    """One batch a step, in the model's dtype; z_p and eps come from rng (core/rng.c's
    generator), z_p (n, nz) row-major once a batch, eps (n) per critic step.

      AE step   rec + rho cons on E and Dec (Adam 1); E' runs in eval mode (running stats)
      z_f = E(x) (train mode), z_p ~ N(0, I)
      critic    steps x: mean D(z_p) - mean D(z_f) + gp GP(eps z_p + (1 - eps) z_f) (Adam 2)
      E step    mean D(z_f) on E (Adam 3)
    steps is n_critic_early while step < early_epochs * epoch_batches or epoch_batches is
    0, else n_critic."""

    def __init__(self, model, hp, rng):
        self.m, self.hp, self.rng = model, dict(TRAIN_DEFAULTS, **hp), rng
        h = self.hp
        betas = (h["beta1"], h["beta2"])
        enc, dec, crit = model.encoder, model.decoder, model.critic
        self.opt_ae = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()),
                                       lr=h["lr"], betas=betas, eps=1e-8)
        self.opt_c = torch.optim.Adam(crit.parameters(), lr=h["lr"], betas=betas, eps=1e-8)
        self.opt_e = torch.optim.Adam(enc.parameters(), lr=h["lr"], betas=betas, eps=1e-8)
        self.count = 0

    def step(self, x):
        h, m = self.hp, self.m
        enc, dec, crit = m.encoder, m.decoder, m.critic
        m.train()
        n, nz = x.shape[0], crit.h0.in_features
        # AE step
        z1 = enc(x)
        xh = dec(z1)
        enc.eval()
        z2 = enc(xh)
        enc.train()
        rec = torch.sqrt(((xh - x) ** 2).sum(dim=(1, 2, 3)) + 1e-8).mean()
        cons = ((z1 - z2) ** 2).sum(dim=1).mean()
        self.opt_ae.zero_grad()
        (rec + h["rho"] * cons).backward()
        self.opt_ae.step()
        # z_f and the prior sample
        zf = enc(x)
        zp = torch.tensor([self.rng.normal() for _ in range(n * nz)],
                          dtype=torch.float64).float().to(x.dtype).reshape(n, nz)
        early = h["epoch_batches"] == 0 or self.count < h["early_epochs"] * h["epoch_batches"]
        loss_c = gp = None
        for _ in range(h["n_critic_early"] if early else h["n_critic"]):
            eps = torch.tensor([self.rng.uniform() for _ in range(n)],
                               dtype=torch.float64).float().to(x.dtype).reshape(n, 1)
            zfd = zf.detach()
            gp, _ = gradient_penalty(crit, eps * zp + (1 - eps) * zfd)
            loss_c = crit(zp).mean() - crit(zfd).mean() + h["gp"] * gp
            self.opt_c.zero_grad()
            loss_c.backward()
            self.opt_c.step()
        # E step
        enc_loss = crit(zf).mean()
        self.opt_e.zero_grad()
        enc_loss.backward()
        self.opt_e.step()
        self.count += 1
        return {"rec": rec.item(), "cons": cons.item(),
                "critic": loss_c.item() if loss_c is not None else 0.0,
                "gp": gp.item() if gp is not None else 0.0, "enc": enc_loss.item()}


def residual(x, xh):
    """The score (mean |x - x_hat|), the l2 part, and the per-pixel map (mean over
    channels)."""
    d = (x - xh).abs()
    return d.mean(dim=(1, 2, 3)), ((x - xh) ** 2).mean(dim=(1, 2, 3)), d.mean(dim=1)


if __name__ == "__main__":
    for side in (32, 64):
        c = {"side": side, "nc": 1, "nz": 128, "nf": 16, "critic_h1": 200, "critic_h2": 400}
        print("side %d, defaults: %d parameters" % (side, sum(p.numel() for p in CAAE(c).parameters())))
