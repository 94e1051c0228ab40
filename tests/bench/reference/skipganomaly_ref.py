"""skipganomaly_ref.py - Skip-GANomaly's networks in PyTorch, the reference our C port is checked against.

The networks are laid out as in the authors' code (samet-akcay/skip-ganomaly,
lib/models/networks.py: pix2pix's UnetGenerator with batch norm, and
BasicDiscriminator), so state_dict keys, and hence our model files, use the
same names:
  UnetBlock(outer_nc, inner_nc, input_nc, sub, outermost, innermost)
      one level of the U-Net; forward(x) = cat([x, model(x)], 1) except at the
      outermost level. Its first LeakyReLU is in place, as in pix2pix, so the
      x that is concatenated is LeakyReLU(x).
  NetG(cfg)   UnetGenerator(nc, nc, log2(isize), ngf): keys "model.model.0.weight", ...
  NetD(cfg)   BasicDiscriminator: `feat` (DCGAN encoder to nz x 1 x 1) and
              `clas` (Conv(3,1,1) nz->1, sigmoid); forward(x) = (prob (N,), feat (N, nz, 1, 1))
cfg is a dict with keys isize, nc, nz, ngf, ndf.

  netg, netd = build(cfg)                 # the authors' normal init, train mode
  write_model("m.safetensors", netg, netd, cfg)
  netg, netd, cfg, meta = read_model("m.safetensors")   # checksum verified, eval mode
  tr = Trainer(netg, netd); losses = tr.step(x)         # the authors' optimize_params
"""

import json
import math

import torch
import torch.nn as nn

import safetensors_io
import ganomaly_ref
from ganomaly_ref import crc32_hex, l2_loss


class UnetBlock(nn.Module):
    def __init__(self, outer_nc, inner_nc, input_nc=None, sub=None, outermost=False,
                 innermost=False):
        super().__init__()
        self.outermost = outermost
        if input_nc is None:
            input_nc = outer_nc
        down_conv = nn.Conv2d(input_nc, inner_nc, 4, 2, 1, bias=False)
        if outermost:
            layers = [down_conv, sub, nn.ReLU(True),
                      nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1), nn.Tanh()]
        elif innermost:
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.ReLU(True),
                      nn.ConvTranspose2d(inner_nc, outer_nc, 4, 2, 1, bias=False),
                      nn.BatchNorm2d(outer_nc)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.BatchNorm2d(inner_nc), sub,
                      nn.ReLU(True), nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1, bias=False),
                      nn.BatchNorm2d(outer_nc)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class NetG(nn.Module):
    """(N, nc, isize, isize) -> (N, nc, isize, isize), tanh."""

    def __init__(self, cfg):
        super().__init__()
        nc, ngf, levels = cfg["nc"], cfg["ngf"], int(round(math.log2(cfg["isize"])))
        blk = UnetBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(levels - 5):
            blk = UnetBlock(ngf * 8, ngf * 8, sub=blk)
        blk = UnetBlock(ngf * 4, ngf * 8, sub=blk)
        blk = UnetBlock(ngf * 2, ngf * 4, sub=blk)
        blk = UnetBlock(ngf, ngf * 2, sub=blk)
        self.model = UnetBlock(nc, ngf, input_nc=nc, sub=blk, outermost=True)

    def forward(self, x):
        return self.model(x)


class NetD(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        isize, nc, nz, ndf = cfg["isize"], cfg["nc"], cfg["nz"], cfg["ndf"]
        feat, clas = nn.Sequential(), nn.Sequential()
        feat.add_module("initial-conv-%d-%d" % (nc, ndf), nn.Conv2d(nc, ndf, 4, 2, 1, bias=False))
        feat.add_module("initial-relu-%d" % ndf, nn.LeakyReLU(0.2, inplace=True))
        size, ch = isize // 2, ndf
        while size > 4:
            feat.add_module("pyramid-%d-%d-conv" % (ch, ch * 2), nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False))
            feat.add_module("pyramid-%d-batchnorm" % (ch * 2), nn.BatchNorm2d(ch * 2))
            feat.add_module("pyramid-%d-relu" % (ch * 2), nn.LeakyReLU(0.2, inplace=True))
            ch, size = ch * 2, size // 2
        feat.add_module("final-%d-1-conv" % ch, nn.Conv2d(ch, nz, 4, 1, 0, bias=False))
        clas.add_module("classifier", nn.Conv2d(nz, 1, 3, 1, 1, bias=False))
        clas.add_module("Sigmoid", nn.Sigmoid())
        self.feat, self.clas = feat, clas

    def forward(self, x):
        f = self.feat(x)
        return self.clas(f).view(-1, 1).squeeze(1), f


def init_weights(mod):
    """The authors' init_weights('normal', 0.02): conv weights N(0, 0.02),
    conv biases 0; BN weight N(1, 0.02), bias 0."""
    kind = type(mod).__name__
    if "Conv" in kind:
        nn.init.normal_(mod.weight, 0.0, 0.02)
        if mod.bias is not None:
            nn.init.zeros_(mod.bias)
    elif "BatchNorm2d" in kind:
        nn.init.normal_(mod.weight, 1.0, 0.02)
        nn.init.zeros_(mod.bias)


def build(cfg):
    netg, netd = NetG(cfg), NetD(cfg)
    netg.apply(init_weights)
    netd.apply(init_weights)
    return netg, netd


def model_tensors(netg, netd):
    out = {}
    for prefix, net in (("netg.", netg), ("netd.", netd)):
        for k, v in net.state_dict().items():
            if k.endswith("num_batches_tracked"):
                continue
            out[prefix + k] = v.detach().cpu().float().numpy()
    return out


def model_metadata(cfg, checksum):
    return ganomaly_ref.model_metadata(cfg, checksum, "skipganomaly",
                                       {"nz": cfg["nz"], "ngf": cfg["ngf"], "ndf": cfg["ndf"]})


def write_model(path, netg, netd, cfg):
    tensors = model_tensors(netg, netd)
    data = safetensors_io.encode(tensors, {})
    _, data_section = safetensors_io.decode_raw(data)
    return safetensors_io.save(path, tensors, model_metadata(cfg, crc32_hex(data_section)))


def read_model(path):
    header, data = safetensors_io.read_raw(path)
    meta = header.get("__metadata__", {})
    if meta.get("method") != "skipganomaly" or meta.get("checksum") != crc32_hex(data):
        raise ValueError("%s: not a skipganomaly model or bad checksum" % path)
    hp = json.loads(meta["hparams"])
    cfg = {"isize": int(meta["width"]), "nc": int(meta["channels"]),
           "nz": hp.get("nz", 100), "ngf": hp.get("ngf", 64), "ndf": hp.get("ndf", 64)}
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


TRAIN_DEFAULTS = {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "w_adv": 1.0, "w_con": 50.0, "w_lat": 1.0}


class Trainer:
    """The authors' Skipganomaly.optimize_params on netg and netd (no noise):
      fake = G(x); p_real, f_real = D(x); p_fake, f_fake = D(fake)
      G: adv = BCE(p_fake, 1); con = mean|fake - x|; lat = l2(f_fake, f_real);
         err_g = w_adv adv + w_con con + w_lat lat; backward; Adam on G
      D: p_fake2 = D(fake.detach()); err_d = BCE(p_real, 1) + BCE(p_fake2, 0)
         + w_lat lat; backward into D's parameters only; Adam on D; re-init D
         when err_d < 1e-5.
    The authors call err_d.backward() on the whole graph, which in torch >= 1.5
    fails (G's weights were changed in place by G's step); its gradients for D
    are the same as backward(inputs=D's parameters), used here."""

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
        fake = netg(x)
        pred_real, feat_real = netd(x)
        pred_fake, feat_fake = netd(fake)
        self.opt_g.zero_grad()
        adv = self.bce(pred_fake, ones)
        con = torch.mean(torch.abs(fake - x))
        lat = l2_loss(feat_fake, feat_real)
        err_g = hp["w_adv"] * adv + hp["w_con"] * con + hp["w_lat"] * lat
        err_g.backward(retain_graph=True)
        self.opt_g.step()
        self.opt_d.zero_grad()
        pred_fake2, _ = netd(fake.detach())
        err_d_fake = self.bce(pred_fake2, zeros)
        err_d_real = self.bce(pred_real, ones)
        err_d = err_d_real + err_d_fake + hp["w_lat"] * lat
        err_d.backward(inputs=list(netd.parameters()))
        self.opt_d.step()
        reinit = err_d.item() < 1e-5
        if reinit:
            netd.apply(init_weights)
        return {"err_g": err_g.item(), "err_g_adv": adv.item(), "err_g_con": con.item(),
                "err_g_lat": lat.item(), "err_d": err_d.item(), "err_d_real": err_d_real.item(),
                "err_d_fake": err_d_fake.item(), "reinit_d": reinit}
