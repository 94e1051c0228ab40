"""anogan_ref.py - AnoGAN in PyTorch, the reference our C port is checked against.

There is no official AnoGAN code. We use the DCGAN of GANomaly's code
(samet-akcay/ganomaly, lib/networks.py; built in ganomaly_ref.py), so the
tensor names are its state_dict names:
  G = Decoder(isize, nz, nc, ngf, extralayers)   (N, nz, 1, 1) -> (N, nc, isize, isize)
      tensors "netg." + key, e.g. netg.main.initial-16-32-convt.weight
  D = NetD(cfg): features (all but the last conv) and classifier (last conv +
      sigmoid); forward(x) = (prob (N,), features (N, C, 4, 4))
      tensors "netd." + key, e.g. netd.features.0.weight, netd.classifier.0.weight
f(x) = D's features. cfg is a dict with keys isize, nc, nz, ngf, extralayers.

The latent search (the paper's mapping), per image, with G and D in eval mode:
  L(z) = (1 - lam) * sum |x - G(z)| + lam * sum |f(x) - f(G(z))|
  z <- Adam(lr, betas (beta1, 0.999), eps 1e-8) on sum over images of L, steps times
  score = L at the final z

  netg, netd = build(cfg)                            # DCGAN init, train mode
  write_model("m.safetensors", netg, netd, cfg)
  netg, netd, cfg, meta = read_model("m.safetensors")   # eval mode
  z, loss, res, dis = search(netg, netd, x, z0, steps=5, lam=0.1, lr=0.01)
"""

import json
import math

import torch

import ganomaly_ref as gr
import safetensors_io


def build(cfg):
    """Fresh G and D with DCGAN init (torch's global RNG), train mode."""
    netg = gr.Decoder(cfg["isize"], cfg["nz"], cfg["nc"], cfg["ngf"], cfg["extralayers"])
    netd = gr.NetD(cfg)
    netg.apply(gr.weights_init)
    netd.apply(gr.weights_init)
    return netg, netd


def model_tensors(netg, netd):
    """name -> float32 numpy array, in state_dict order, as stored in the model file."""
    return gr.model_tensors(netg, netd)


def model_metadata(cfg, checksum):
    """The string metadata of an AnoGAN model file for cfg (search defaults implied)."""
    return gr.model_metadata(cfg, checksum, "anogan")


def write_model(path, netg, netd, cfg):
    """Write G and D to path as a sqlite-anomaly 'anogan' model file; returns its size."""
    tensors = model_tensors(netg, netd)
    data = safetensors_io.encode(tensors, {})
    _, data_section = safetensors_io.decode_raw(data)
    return safetensors_io.save(path, tensors, model_metadata(cfg, gr.crc32_hex(data_section)))


def read_model(path):
    """(netg, netd, cfg, metadata) from an 'anogan' model file, in eval mode."""
    header, data = safetensors_io.read_raw(path)
    meta = header.get("__metadata__", {})
    if meta.get("format") != "sqlite-anomaly" or meta.get("method") != "anogan":
        raise ValueError("%s: not a sqlite-anomaly anogan model" % path)
    if meta.get("checksum") != gr.crc32_hex(data):
        raise ValueError("%s: checksum mismatch" % path)
    hp = json.loads(meta["hparams"])
    cfg = {"isize": int(meta["width"]), "nc": int(meta["channels"]),
           "nz": hp["nz"], "ngf": hp["ngf"], "extralayers": hp["extralayers"]}
    tensors, _ = safetensors_io.load(path)
    netg, netd = build(cfg)
    for prefix, net in (("netg.", netg), ("netd.", netd)):
        sd = {k[len(prefix):]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith(prefix)}
        res = net.load_state_dict(sd, strict=False)
        missing = [k for k in res.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or res.unexpected_keys:
            raise ValueError("%s: %s missing %s, unexpected %s"
                             % (path, prefix, missing, res.unexpected_keys))
    netg.eval()
    netd.eval()
    return netg, netd, cfg, meta


def mapping_loss(netg, netd, x, fx, z, lam):
    """Per image (N,): L, sum |x - G(z)|, sum |f(x) - f(G(z))|; z is (N, nz)."""
    n = x.shape[0]
    xh = netg(z.reshape(n, -1, 1, 1))
    _, fg = netd(xh)
    res = (x - xh).abs().reshape(n, -1).sum(dim=1)
    dis = (fx - fg).abs().reshape(n, -1).sum(dim=1)
    return (1 - lam) * res + lam * dis, res, dis


def search(netg, netd, x, z0, steps, lam, lr, beta1=0.5):
    """The latent search from z0 (N, nz) for x (N, nc, H, W); G and D must be in
    eval mode. Returns (z, loss, residual, discrimination) at the final z."""
    for p in list(netg.parameters()) + list(netd.parameters()):
        p.requires_grad_(False)
    with torch.no_grad():
        _, fx = netd(x)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr, betas=(beta1, 0.999), eps=1e-8)
    for _ in range(steps):
        opt.zero_grad()
        loss, _, _ = mapping_loss(netg, netd, x, fx, z, lam)
        loss.sum().backward()
        opt.step()
    with torch.no_grad():
        loss, res, dis = mapping_loss(netg, netd, x, fx, z, lam)
    return z.detach(), loss, res, dis


# ---------------------------------------------------------------------------
# Training: one step of the PyTorch DCGAN example, with z given
# ---------------------------------------------------------------------------

TRAIN_DEFAULTS = {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999}


class Trainer:
    """The DCGAN training step (PyTorch examples, dcgan/main.py) on G and D.

      tr = Trainer(netg, netd)           # train mode, one Adam per network
      losses = tr.step(x, z)             # x (N, nc, H, W) in [-1, 1], z (N, nz)

    step runs, in this order (G's BNs update once, D's three times):
      D: zero grads; err_d_real = BCE(D(x), 1), backward;
         fake = G(z); err_d_fake = BCE(D(fake.detach()), 0), backward; Adam on D
      G: zero grads; err_g = BCE(D(fake), 1) with the updated D, backward; Adam on G
    Returns a dict of floats: err_g, err_d (= real + fake), err_d_real, err_d_fake.
    """

    def __init__(self, netg, netd, hp=None):
        self.hp = dict(TRAIN_DEFAULTS, **(hp or {}))
        self.netg, self.netd = netg, netd
        betas = (self.hp["beta1"], self.hp["beta2"])
        self.opt_g = torch.optim.Adam(netg.parameters(), lr=self.hp["lr"], betas=betas, eps=1e-8)
        self.opt_d = torch.optim.Adam(netd.parameters(), lr=self.hp["lr"], betas=betas, eps=1e-8)
        self.bce = torch.nn.BCELoss()
        netg.train()
        netd.train()

    def step(self, x, z):
        netg, netd = self.netg, self.netd
        n = x.shape[0]
        ones, zeros = x.new_ones(n), x.new_zeros(n)
        netd.zero_grad()
        err_d_real = self.bce(netd(x)[0], ones)
        err_d_real.backward()
        fake = netg(z.reshape(n, -1, 1, 1))
        err_d_fake = self.bce(netd(fake.detach())[0], zeros)
        err_d_fake.backward()
        self.opt_d.step()
        netg.zero_grad()
        err_g = self.bce(netd(fake)[0], ones)
        err_g.backward()
        self.opt_g.step()
        return {"err_g": err_g.item(), "err_d": err_d_real.item() + err_d_fake.item(),
                "err_d_real": err_d_real.item(), "err_d_fake": err_d_fake.item()}


# ---------------------------------------------------------------------------
# Our random generator (core/rng.c), for the z the C trainer draws
# ---------------------------------------------------------------------------

_M64 = (1 << 64) - 1


class Rng:
    """xoshiro256** seeded with splitmix64, normals by the polar method, exactly
    as core/rng.c: Rng(seed).normal() gives the C rng_normal() sequence."""

    def __init__(self, seed):
        x = seed & _M64
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & _M64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
            self.s.append(z ^ (z >> 31))
        self.spare = None

    @staticmethod
    def _rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & _M64

    def next(self):
        s = self.s
        result = (self._rotl((s[1] * 5) & _M64, 7) * 9) & _M64
        t = (s[1] << 17) & _M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def uniform(self):
        return (self.next() >> 11) * 2.0 ** -53

    def normal(self):
        if self.spare is not None:
            v, self.spare = self.spare, None
            return v
        while True:
            u = 2 * self.uniform() - 1
            v = 2 * self.uniform() - 1
            s = u * u + v * v
            if 0 < s < 1:
                break
        f = math.sqrt(-2 * math.log(s) / s)
        self.spare = v * f
        return u * f
