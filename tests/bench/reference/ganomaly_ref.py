"""ganomaly_ref.py - GANomaly's networks in PyTorch, the reference our C port is checked against.

The networks are laid out as in the authors' code (samet-akcay/ganomaly,
lib/networks.py), so state_dict keys, and hence our model files, use the same
names:
  Encoder(isize, nz, nc, ndf, extralayers)   DCGAN encoder, (N, nc, isize, isize) -> (N, nz, 1, 1)
  Decoder(isize, nz, nc, ngf, extralayers)   DCGAN decoder, (N, nz, 1, 1) -> (N, nc, isize, isize), tanh
  NetG(cfg)   encoder1 -> decoder -> encoder2; forward(x) = (x_hat, z, z_prime)
  NetD(cfg)   Encoder(isize, 1, nc, ngf, extralayers) split into `features` (all
              layers but the last) and `classifier` (last conv + sigmoid);
              forward(x) = (prob (N,), features (N, C, 4, 4))
cfg is a dict with keys isize, nc, nz, ngf, extralayers. All convolutions have
no bias; LeakyReLU slope 0.2; BatchNorm eps 1e-5, momentum 0.1.

  netg, netd = build(cfg)                 # DCGAN init (weights_init), train mode
  write_model("m.safetensors", netg, netd, cfg)
  netg, netd, cfg, meta = read_model("m.safetensors")   # checksum verified, eval mode
  tr = Trainer(netg, netd); losses = tr.step(x)         # the authors' optimize_params

Model file (a profile of safetensors): tensors "netg." + NetG state_dict key and
"netd." + NetD state_dict key, num_batches_tracked skipped, all F32; string
metadata as in model_metadata().
"""

import json
import zlib

import torch
import torch.nn as nn

import safetensors_io

CREATED = "2026-01-01T00:00:00Z"   # fixed so that regenerated files are identical
SOFTWARE = "sqlite-anomaly reference"


def weights_init(mod):
    """DCGAN initialisation: conv weights N(0, 0.02); BN weight N(1, 0.02), bias 0."""
    kind = type(mod).__name__
    if "Conv" in kind:
        nn.init.normal_(mod.weight, 0.0, 0.02)
    elif "BatchNorm" in kind:
        nn.init.normal_(mod.weight, 1.0, 0.02)
        nn.init.zeros_(mod.bias)


class Encoder(nn.Module):
    """(N, nc, isize, isize) -> (N, nz, 1, 1). isize must be a multiple of 16."""

    def __init__(self, isize, nz, nc, ndf, extralayers=0):
        super().__init__()
        if isize % 16:
            raise ValueError("isize must be a multiple of 16, found %d" % isize)
        m = nn.Sequential()
        m.add_module("initial-conv-%d-%d" % (nc, ndf), nn.Conv2d(nc, ndf, 4, 2, 1, bias=False))
        m.add_module("initial-relu-%d" % ndf, nn.LeakyReLU(0.2, inplace=True))
        size, ch = isize // 2, ndf
        for t in range(extralayers):
            m.add_module("extra-layers-%d-%d-conv" % (t, ch), nn.Conv2d(ch, ch, 3, 1, 1, bias=False))
            m.add_module("extra-layers-%d-%d-batchnorm" % (t, ch), nn.BatchNorm2d(ch))
            m.add_module("extra-layers-%d-%d-relu" % (t, ch), nn.LeakyReLU(0.2, inplace=True))
        while size > 4:
            m.add_module("pyramid-%d-%d-conv" % (ch, 2 * ch), nn.Conv2d(ch, 2 * ch, 4, 2, 1, bias=False))
            m.add_module("pyramid-%d-batchnorm" % (2 * ch), nn.BatchNorm2d(2 * ch))
            m.add_module("pyramid-%d-relu" % (2 * ch), nn.LeakyReLU(0.2, inplace=True))
            ch, size = 2 * ch, size // 2
        # the authors name the last conv "...-1-conv" whatever nz is
        m.add_module("final-%d-1-conv" % ch, nn.Conv2d(ch, nz, 4, 1, 0, bias=False))
        self.main = m

    def forward(self, x):
        return self.main(x)


class Decoder(nn.Module):
    """(N, nz, 1, 1) -> (N, nc, isize, isize) in [-1, 1]."""

    def __init__(self, isize, nz, nc, ngf, extralayers=0):
        super().__init__()
        if isize % 16:
            raise ValueError("isize must be a multiple of 16, found %d" % isize)
        ch, size = ngf // 2, 4          # ch doubles once per factor 2 from 4 to isize
        while size != isize:
            ch, size = ch * 2, size * 2
        m = nn.Sequential()
        m.add_module("initial-%d-%d-convt" % (nz, ch), nn.ConvTranspose2d(nz, ch, 4, 1, 0, bias=False))
        m.add_module("initial-%d-batchnorm" % ch, nn.BatchNorm2d(ch))
        m.add_module("initial-%d-relu" % ch, nn.ReLU(True))
        size = 4
        while size < isize // 2:
            m.add_module("pyramid-%d-%d-convt" % (ch, ch // 2),
                         nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False))
            m.add_module("pyramid-%d-batchnorm" % (ch // 2), nn.BatchNorm2d(ch // 2))
            m.add_module("pyramid-%d-relu" % (ch // 2), nn.ReLU(True))
            ch, size = ch // 2, size * 2
        for t in range(extralayers):
            m.add_module("extra-layers-%d-%d-conv" % (t, ch), nn.Conv2d(ch, ch, 3, 1, 1, bias=False))
            m.add_module("extra-layers-%d-%d-batchnorm" % (t, ch), nn.BatchNorm2d(ch))
            m.add_module("extra-layers-%d-%d-relu" % (t, ch), nn.ReLU(True))
        m.add_module("final-%d-%d-convt" % (ch, nc), nn.ConvTranspose2d(ch, nc, 4, 2, 1, bias=False))
        m.add_module("final-%d-tanh" % nc, nn.Tanh())
        self.main = m

    def forward(self, z):
        return self.main(z)


class NetG(nn.Module):
    """Generator: forward(x (N, nc, H, W)) -> x_hat (N, nc, H, W), z, z_prime (N, nz, 1, 1)."""

    def __init__(self, cfg):
        super().__init__()
        args = (cfg["isize"], cfg["nz"], cfg["nc"], cfg["ngf"], cfg["extralayers"])
        self.encoder1 = Encoder(*args)
        self.decoder = Decoder(*args)
        self.encoder2 = Encoder(*args)

    def forward(self, x):
        z = self.encoder1(x)
        x_hat = self.decoder(z)
        return x_hat, z, self.encoder2(x_hat)


class NetD(nn.Module):
    """Discriminator: forward(x) -> prob (N,), features (N, C, 4, 4). Keys are
    numeric (features.0.weight, ..., classifier.0.weight) as in the authors' code."""

    def __init__(self, cfg):
        super().__init__()
        enc = Encoder(cfg["isize"], 1, cfg["nc"], cfg["ngf"], cfg["extralayers"])
        layers = list(enc.main.children())
        self.features = nn.Sequential(*layers[:-1])
        self.classifier = nn.Sequential(layers[-1])
        self.classifier.add_module("Sigmoid", nn.Sigmoid())

    def forward(self, x):
        f = self.features(x)
        return self.classifier(f).view(-1), f


def build(cfg):
    """Fresh NetG and NetD with DCGAN init (uses torch's global RNG), train mode."""
    netg, netd = NetG(cfg), NetD(cfg)
    netg.apply(weights_init)
    netd.apply(weights_init)
    return netg, netd


def model_tensors(netg, netd):
    """name -> float32 numpy array, in state_dict order, as stored in the model file."""
    out = {}
    for prefix, net in (("netg.", netg), ("netd.", netd)):
        for k, v in net.state_dict().items():
            if k.endswith("num_batches_tracked"):
                continue
            out[prefix + k] = v.detach().cpu().float().numpy()
    return out


def model_metadata(cfg, checksum, method="ganomaly", hparams=None):
    """The string metadata of a model file of method for cfg; hparams (a dict)
    defaults to GANomaly's. Every reference's write_model uses it."""
    if hparams is None:
        hparams = {"nz": cfg["nz"], "ngf": cfg["ngf"], "extralayers": cfg["extralayers"]}
    return {
        "format": "sqlite-anomaly",
        "format_version": "1",
        "method": method,
        "width": str(cfg["isize"]),
        "height": str(cfg["isize"]),
        "channels": str(cfg["nc"]),
        "fit": "resize",
        "hparams": json.dumps(hparams, separators=(",", ":")),
        "calibration": json.dumps({"n": 0, "quantiles": [], "scales": {}}, separators=(",", ":")),
        "threshold": "null",
        "checksum": checksum,
        "created": CREATED,
        "software": SOFTWARE,
    }


def crc32_hex(data):
    """"crc32:%08x" of bytes, as stored in the checksum metadata."""
    return "crc32:%08x" % (zlib.crc32(data) & 0xFFFFFFFF)


def write_model(path, netg, netd, cfg):
    """Write netg and netd to path as a sqlite-anomaly model file; returns its size."""
    tensors = model_tensors(netg, netd)
    # the checksum covers the data section only, which does not depend on the header
    data = safetensors_io.encode(tensors, {})
    _, data_section = safetensors_io.decode_raw(data)
    return safetensors_io.save(path, tensors, model_metadata(cfg, crc32_hex(data_section)))


def read_model(path):
    """(netg, netd, cfg, metadata) from a model file, in eval mode. Checks the
    checksum and that the tensors are exactly the networks' parameters and buffers
    (num_batches_tracked excepted)."""
    header, data = safetensors_io.read_raw(path)
    meta = header.get("__metadata__", {})
    if meta.get("format") != "sqlite-anomaly" or meta.get("method") != "ganomaly":
        raise ValueError("%s: not a sqlite-anomaly ganomaly model" % path)
    if meta.get("checksum") != crc32_hex(data):
        raise ValueError("%s: checksum %s, data has %s" % (path, meta.get("checksum"), crc32_hex(data)))
    hp = json.loads(meta["hparams"])
    if meta["width"] != meta["height"]:
        raise ValueError("%s: width %s != height %s" % (path, meta["width"], meta["height"]))
    cfg = {"isize": int(meta["width"]), "nc": int(meta["channels"]),
           "nz": hp["nz"], "ngf": hp["ngf"], "extralayers": hp["extralayers"]}
    tensors, _ = safetensors_io.load(path)
    netg, netd = NetG(cfg), NetD(cfg)
    for prefix, net in (("netg.", netg), ("netd.", netd)):
        sd = {k[len(prefix):]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith(prefix)}
        res = net.load_state_dict(sd, strict=False)
        missing = [k for k in res.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or res.unexpected_keys:
            raise ValueError("%s: %s missing %s, unexpected %s"
                             % (path, prefix, missing, res.unexpected_keys))
    if any(not (k.startswith("netg.") or k.startswith("netd.")) for k in tensors):
        raise ValueError("%s: tensors outside netg./netd." % path)
    netg.eval()
    netd.eval()
    return netg, netd, cfg, meta


# ---------------------------------------------------------------------------
# Training: one step of the authors' Ganomaly.optimize_params (lib/model.py)
# ---------------------------------------------------------------------------

TRAIN_DEFAULTS = {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "w_adv": 1.0, "w_con": 50.0, "w_enc": 1.0}


def l2_loss(a, b):
    """Mean over all elements of (a - b)^2 (the authors' lib/loss.py l2_loss)."""
    return torch.mean(torch.pow(a - b, 2))


class Trainer:
    """The authors' GANomaly training step on netg and netd.

      tr = Trainer(netg, netd)           # train mode, one Adam per network
      losses = tr.step(x)                # x (N, nc, isize, isize) in [-1, 1]

    step(x) runs, in this order (D is evaluated 4 times in train mode, so each of
    its BNs updates its running statistics 4 times; G's BNs update once):
      fake, z, z' = G(x)
      p_real, f_real = D(x);  p_fake, f_fake = D(fake.detach())
      G: zero grads; adv = l2(D(x)[1], D(fake)[1]); con = mean|fake - x|;
         enc = l2(z', z); err_g = w_adv*adv + w_con*con + w_enc*enc;
         backward; Adam step on G only (D's gradients from err_g are dropped)
      D: zero grads; err_d = 0.5*(BCE(p_real, 1) + BCE(p_fake, 0)); backward
         (p_real and p_fake were computed with D's weights before this step);
         Adam step on D; if err_d < 1e-5, D is re-initialised (weights_init)
    Adam is torch's: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps), eps 1e-8.
    Returns a dict of Python floats: err_g, err_g_adv, err_g_con, err_g_enc,
    err_d, err_d_real, err_d_fake, and reinit_d (True if D was re-initialised).
    """

    def __init__(self, netg, netd, hp=None):
        self.hp = dict(TRAIN_DEFAULTS, **(hp or {}))
        self.netg, self.netd = netg, netd
        betas = (self.hp["beta1"], self.hp["beta2"])
        self.opt_g = torch.optim.Adam(netg.parameters(), lr=self.hp["lr"], betas=betas, eps=1e-8)
        self.opt_d = torch.optim.Adam(netd.parameters(), lr=self.hp["lr"], betas=betas, eps=1e-8)
        self.bce = nn.BCELoss()
        netg.train()
        netd.train()

    def step(self, x):
        hp, netg, netd = self.hp, self.netg, self.netd
        n = x.shape[0]
        ones, zeros = x.new_ones(n), x.new_zeros(n)
        # forward_g, forward_d
        fake, latent_i, latent_o = netg(x)
        pred_real, _ = netd(x)
        pred_fake, _ = netd(fake.detach())
        # backward_g
        self.opt_g.zero_grad()
        err_g_adv = l2_loss(netd(x)[1], netd(fake)[1])
        err_g_con = torch.mean(torch.abs(fake - x))
        err_g_enc = l2_loss(latent_o, latent_i)
        err_g = err_g_adv * hp["w_adv"] + err_g_con * hp["w_con"] + err_g_enc * hp["w_enc"]
        err_g.backward(retain_graph=True)
        self.opt_g.step()
        # backward_d
        self.opt_d.zero_grad()
        err_d_real = self.bce(pred_real, ones)
        err_d_fake = self.bce(pred_fake, zeros)
        err_d = (err_d_real + err_d_fake) * 0.5
        err_d.backward()
        self.opt_d.step()
        reinit = err_d.item() < 1e-5
        if reinit:
            netd.apply(weights_init)
        return {"err_g": err_g.item(), "err_g_adv": err_g_adv.item(), "err_g_con": err_g_con.item(),
                "err_g_enc": err_g_enc.item(), "err_d": err_d.item(), "err_d_real": err_d_real.item(),
                "err_d_fake": err_d_fake.item(), "reinit_d": reinit}
