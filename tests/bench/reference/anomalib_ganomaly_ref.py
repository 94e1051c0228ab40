"""anomalib_ganomaly_ref.py - anomalib's GANomaly networks, as a test fixture.

A small PyTorch transcription, written from the facts of anomalib's
src/anomalib/models/image/ganomaly/torch_model.py (openvinotoolkit/anomalib),
that gives the same state_dict keys and the same forward pass, so that tests
can make "anomalib" checkpoints without anomalib installed. What differs from
the authors' GANomaly (ganomaly_ref.py):

  - modules are split into named Sequentials instead of one "main":
      encoder:  input_layers / extra_layers / pyramid_features / final_conv_layer
      decoder:  latent_input / inverse_pyramid / extra_layers / final_layers
    so keys read e.g. "encoder1.input_layers.initial-conv-3-64.weight",
    "encoder1.final_conv_layer.weight", "decoder.latent_input.initial-100-256-convt.weight";
  - the encoder's first conv pads by 4 (anomalib since it accepts sizes that
    are not powers of two; its first releases padded by 1, as the authors):
    first_padding selects it;
  - the decoder's extra layers end in LeakyReLU(0.2), the authors' in ReLU;
  - add_final_conv_layer=False leaves the encoders without their last conv;
  - GanomalyModel.forward pads the batch to the next power of two with zeros
    (pad_nextpow2) and scores mean over nz of (z - z')^2.
The discriminator flattens an Encoder(nz=1) into features.N / classifier.0,
as the authors' NetD, and its first conv pads like the encoders'.

  net = GanomalyModel(isize=32, nc=3, ngf=8, nz=16, first_padding=1)
  x_hat, z, z2 = net.generator(x);  prob, feat = net.discriminator(x)
  ckpt = lightning_checkpoint(net)   # {"state_dict": {"model.generator....": ...}, ...}
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Encoder(nn.Module):
    def __init__(self, isize, nz, nc, ngf, extra=0, final_conv=True, first_padding=4):
        super().__init__()
        self.input_layers = nn.Sequential()
        self.input_layers.add_module("initial-conv-%d-%d" % (nc, ngf),
                                     nn.Conv2d(nc, ngf, 4, 2, first_padding, bias=False))
        self.input_layers.add_module("initial-relu-%d" % ngf, nn.LeakyReLU(0.2, inplace=True))
        self.extra_layers = nn.Sequential()
        for t in range(extra):
            self.extra_layers.add_module("extra-layers-%d-%d-conv" % (t, ngf),
                                         nn.Conv2d(ngf, ngf, 3, 1, 1, bias=False))
            self.extra_layers.add_module("extra-layers-%d-%d-batchnorm" % (t, ngf), nn.BatchNorm2d(ngf))
            self.extra_layers.add_module("extra-layers-%d-%d-relu" % (t, ngf), nn.LeakyReLU(0.2, inplace=True))
        self.pyramid_features = nn.Sequential()
        dim, ch = isize // 2, ngf
        while dim > 4:
            self.pyramid_features.add_module("pyramid-%d-%d-conv" % (ch, 2 * ch),
                                             nn.Conv2d(ch, 2 * ch, 4, 2, 1, bias=False))
            self.pyramid_features.add_module("pyramid-%d-batchnorm" % (2 * ch), nn.BatchNorm2d(2 * ch))
            self.pyramid_features.add_module("pyramid-%d-relu" % (2 * ch), nn.LeakyReLU(0.2, inplace=True))
            ch, dim = 2 * ch, dim // 2
        self.final_conv_layer = nn.Conv2d(ch, nz, 4, 1, 0, bias=False) if final_conv else None

    def forward(self, x):
        y = self.pyramid_features(self.extra_layers(self.input_layers(x)))
        return self.final_conv_layer(y) if self.final_conv_layer is not None else y


class Decoder(nn.Module):
    def __init__(self, isize, nz, nc, ngf, extra=0):
        super().__init__()
        ch = ngf * 2 ** (math.ceil(math.log2(isize // 2)) - 2)
        self.latent_input = nn.Sequential()
        self.latent_input.add_module("initial-%d-%d-convt" % (nz, ch), nn.ConvTranspose2d(nz, ch, 4, 1, 0, bias=False))
        self.latent_input.add_module("initial-%d-batchnorm" % ch, nn.BatchNorm2d(ch))
        self.latent_input.add_module("initial-%d-relu" % ch, nn.ReLU(True))
        self.inverse_pyramid = nn.Sequential()
        dim = isize // 2
        while dim > 4:
            self.inverse_pyramid.add_module("pyramid-%d-%d-convt" % (ch, ch // 2),
                                            nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False))
            self.inverse_pyramid.add_module("pyramid-%d-batchnorm" % (ch // 2), nn.BatchNorm2d(ch // 2))
            self.inverse_pyramid.add_module("pyramid-%d-relu" % (ch // 2), nn.ReLU(True))
            ch, dim = ch // 2, dim // 2
        self.extra_layers = nn.Sequential()
        for t in range(extra):
            self.extra_layers.add_module("extra-layers-%d-%d-conv" % (t, ch), nn.Conv2d(ch, ch, 3, 1, 1, bias=False))
            self.extra_layers.add_module("extra-layers-%d-%d-batchnorm" % (t, ch), nn.BatchNorm2d(ch))
            self.extra_layers.add_module("extra-layers-%d-%d-relu" % (t, ch), nn.LeakyReLU(0.2, inplace=True))
        self.final_layers = nn.Sequential()
        self.final_layers.add_module("final-%d-%d-convt" % (ch, nc), nn.ConvTranspose2d(ch, nc, 4, 2, 1, bias=False))
        self.final_layers.add_module("final-%d-tanh" % nc, nn.Tanh())

    def forward(self, z):
        return self.final_layers(self.extra_layers(self.inverse_pyramid(self.latent_input(z))))


class Generator(nn.Module):
    def __init__(self, isize, nz, nc, ngf, extra=0, final_conv=True, first_padding=4):
        super().__init__()
        self.encoder1 = Encoder(isize, nz, nc, ngf, extra, final_conv, first_padding)
        self.decoder = Decoder(isize, nz, nc, ngf, extra)
        self.encoder2 = Encoder(isize, nz, nc, ngf, extra, final_conv, first_padding)

    def forward(self, x):
        z = self.encoder1(x)
        x_hat = self.decoder(z)
        return x_hat, z, self.encoder2(x_hat)


class Discriminator(nn.Module):
    def __init__(self, isize, nc, ngf, extra=0, first_padding=4):
        super().__init__()
        enc = Encoder(isize, 1, nc, ngf, extra, True, first_padding)
        layers = []
        for block in enc.children():
            layers.extend(block.children() if isinstance(block, nn.Sequential) else [block])
        self.features = nn.Sequential(*layers[:-1])
        self.classifier = nn.Sequential(layers[-1])
        self.classifier.add_module("Sigmoid", nn.Sigmoid())

    def forward(self, x):
        f = self.features(x)
        return self.classifier(f).view(-1, 1).squeeze(1), f


def pad_nextpow2(x):
    """Zero-pad (N, C, H, W) to a square of the next power of two of max(H, W), centred."""
    side = 2 ** math.ceil(math.log2(max(x.shape[-2:])))
    ph, pw = side - x.shape[-2], side - x.shape[-1]
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class GanomalyModel(nn.Module):
    """anomalib's GanomalyModel: `generator` and `discriminator`; forward(x) in
    eval mode gives the score per image, mean over nz of (z - z')^2."""

    def __init__(self, isize, nc, ngf, nz, extra=0, final_conv=True, first_padding=4):
        super().__init__()
        self.generator = Generator(isize, nz, nc, ngf, extra, final_conv, first_padding)
        self.discriminator = Discriminator(isize, nc, ngf, extra, first_padding)
        # ganomaly_ref.weights_init, in modules() order (apply() would visit
        # them children first, draw other numbers and change the golden file)
        for mod in self.modules():
            kind = type(mod).__name__
            if "Conv" in kind:
                nn.init.normal_(mod.weight, 0.0, 0.02)
            elif "BatchNorm" in kind:
                nn.init.normal_(mod.weight, 1.0, 0.02)
                nn.init.zeros_(mod.bias)

    def forward(self, x):
        _, z, z2 = self.generator(pad_nextpow2(x))
        return torch.mean((z - z2) ** 2, dim=1).view(-1)


def lightning_checkpoint(net, hyper_parameters=None, extra_state=None):
    """A dict shaped like the .ckpt Lightning writes for anomalib's Ganomaly
    module (whose attribute `model` is the GanomalyModel): state_dict keys
    prefixed "model.", plus the bookkeeping entries Lightning adds.
    extra_state (name -> tensor) adds module-level entries such as
    "image_threshold.value"."""
    sd = {"model." + k: v for k, v in net.state_dict().items()}
    sd.update(extra_state or {})
    return {
        "epoch": 1,
        "global_step": 10,
        "pytorch-lightning_version": "2.2.0",
        "state_dict": sd,
        "loops": {},
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
        "hyper_parameters": dict(hyper_parameters or {}),
    }
