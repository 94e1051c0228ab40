#!/usr/bin/python3
"""torch_convert.py - PyTorch checkpoints <-> sqlite-anomaly model files.

Import a GANomaly or Skip-GANomaly checkpoint into a model file that
anomaly_score() can use, or export one of our model files back into the
authors' checkpoint layout. See docs/torch.md.

  torch_convert.py import --from authors-ganomaly netG.pth --netd netD.pth -o m.safetensors
  torch_convert.py import --from authors-skipganomaly netG.pth --netd netD.pth -o m.safetensors
  torch_convert.py import --from anomalib-ganomaly model.ckpt -o m.safetensors
  torch_convert.py export m.safetensors -o DIR          # writes DIR/netG.pth and DIR/netD.pth

Sources:
  authors-ganomaly       samet-akcay/ganomaly: netG.pth and netD.pth, each
                         torch.save({'epoch': e, 'state_dict': net.state_dict()})
  authors-skipganomaly   samet-akcay/skip-ganomaly: the same two files
  anomalib-ganomaly      anomalib's Lightning .ckpt (state_dict keys
                         "model.generator.*", "model.discriminator.*") or a
                         bare GanomalyModel state_dict

Import options (hyper-parameters are read from the tensor shapes; a flag
given is checked against them, and fills in what a checkpoint cannot tell):
  --isize N --nc N --nz N --ngf N --ndf N --extralayers N
  --fit resize|pad       how images are brought to the input size (resize)
  --threshold X          a score threshold in our units (default: none, "null")
  --first-conv-padding P anomalib only: the padding of the first conv of the
                         encoders and D, 4 (the default) or 1. anomalib pads
                         by 4 since it accepts any input size (2022); its
                         first releases padded by 1, like the authors. The
                         checkpoint does not say which; 4 is written to the
                         model's hparams as "first_pad":4.
  --trust-pickle         load checkpoints with full unpickling (runs code
                         stored in the file); by default only tensors and
                         plain containers are read (torch.load weights_only)
Export options:
  --epoch N              the 'epoch' stored in the checkpoints (0)

Exit status 0 on success, 1 with a message "torch_convert: ..." on stderr
otherwise. Outputs are written to a temporary file in the same directory
and renamed into place, so a failed run leaves no partial file.
Needs Python 3, numpy and torch (Debian: python3-torch python3-numpy).
"""

import argparse
import collections
import datetime
import json
import math
import io
import os
import pickle
import re
import struct
import sys
import tempfile
import zipfile
import zlib

import numpy as np

FORMAT_VERSION = 1
SOFTWARE = "sqlite-anomaly torch_convert.py"
UNCALIBRATED = '{"n":0,"quantiles":[],"scales":{}}'

# anomalib's Lightning module keeps a few non-network states next to
# "model."; they are dropped on import (named in a note).
ANOMALIB_IGNORED = ("image_threshold.", "pixel_threshold.", "normalization_metrics.",
                    "post_processor.", "pre_processor.", "evaluator.", "image_metrics.",
                    "pixel_metrics.", "min_max.")


class ConvertError(Exception):
    """A refusal or a failure, with the message the user sees."""


def note(msg):
    print("torch_convert: note: " + msg, file=sys.stderr)


# ---------------------------------------------------------------------------
# Layouts: the tensors a network has, in state_dict order. An entry is
# (module path, kind, shape); kind "w" (weight), "wb" (weight, bias) or
# "bn" (weight, bias, running_mean, running_var; num_batches_tracked in
# PyTorch's state_dict but not in our files).
# ---------------------------------------------------------------------------

def dcgan_encoder(isize, nz, nc, ngf, extra, numeric):
    """The authors' GANomaly Encoder: [(path, kind, shape)]. Paths are
    "main.<name>", or for NetD (numeric) "features.<i>" and "classifier.0"."""
    out, idx = [], [0]

    def add(name, kind, shape, skip_after=0):
        path = "features.%d" % idx[0] if numeric else "main." + name
        out.append((path, kind, shape))
        idx[0] += 1 + skip_after      # activations take an index but hold nothing

    add("initial-conv-%d-%d" % (nc, ngf), "w", (ngf, nc, 4, 4), 1)
    for t in range(extra):
        add("extra-layers-%d-%d-conv" % (t, ngf), "w", (ngf, ngf, 3, 3))
        add("extra-layers-%d-%d-batchnorm" % (t, ngf), "bn", (ngf,), 1)
    size, ch = isize // 2, ngf
    while size > 4:
        add("pyramid-%d-%d-conv" % (ch, 2 * ch), "w", (2 * ch, ch, 4, 4))
        add("pyramid-%d-batchnorm" % (2 * ch), "bn", (2 * ch,), 1)
        ch, size = 2 * ch, size // 2
    last = ("classifier.0" if numeric else "main.final-%d-1-conv" % ch, "w", (nz, ch, 4, 4))
    out.append(last)
    return out


def dcgan_decoder(isize, nz, nc, ngf, extra):
    ch, size = ngf // 2, 4
    while size != isize:
        ch, size = ch * 2, size * 2
    out = [("main.initial-%d-%d-convt" % (nz, ch), "w", (nz, ch, 4, 4)),
           ("main.initial-%d-batchnorm" % ch, "bn", (ch,))]
    size = 4
    while size < isize // 2:
        out += [("main.pyramid-%d-%d-convt" % (ch, ch // 2), "w", (ch, ch // 2, 4, 4)),
                ("main.pyramid-%d-batchnorm" % (ch // 2), "bn", (ch // 2,))]
        ch, size = ch // 2, size * 2
    for t in range(extra):
        out += [("main.extra-layers-%d-%d-conv" % (t, ch), "w", (ch, ch, 3, 3)),
                ("main.extra-layers-%d-%d-batchnorm" % (t, ch), "bn", (ch,))]
    out.append(("main.final-%d-%d-convt" % (ch, nc), "w", (ch, nc, 4, 4)))
    return out


def ganomaly_layout(c):
    """{"netg": [...], "netd": [...]} for cfg c (isize, nc, nz, ngf, extralayers)."""
    a = (c["isize"], c["nz"], c["nc"], c["ngf"], c["extralayers"])
    netg = []
    for name, entries in (("encoder1.", dcgan_encoder(*a, False)), ("decoder.", dcgan_decoder(*a)),
                          ("encoder2.", dcgan_encoder(*a, False))):
        netg += [(name + p, k, s) for p, k, s in entries]
    netd = dcgan_encoder(c["isize"], 1, c["nc"], c["ngf"], c["extralayers"], True)
    return {"netg": netg, "netd": netd}


def skipganomaly_layout(c):
    """pix2pix UnetGenerator (batch norm, no dropout) and BasicDiscriminator."""
    nc, ngf, ndf, nz, isize = c["nc"], c["ngf"], c["ndf"], c["nz"], c["isize"]
    levels = int(round(math.log2(isize)))
    # level b (0 outermost .. levels-1 innermost): (outer_nc, inner_nc, input_nc)
    widths = [(nc, ngf, nc), (ngf, 2 * ngf, ngf), (2 * ngf, 4 * ngf, 2 * ngf), (4 * ngf, 8 * ngf, 4 * ngf)]
    widths += [(8 * ngf, 8 * ngf, 8 * ngf)] * (levels - 4)
    netg, prefix = [], "model.model."
    for b in range(levels):
        outer, inner, inp = widths[b]
        if b == 0:
            netg += [(prefix + "0", "w", (inner, inp, 4, 4)), (prefix + "3", "wb", (2 * inner, outer, 4, 4))]
            inner_prefix = prefix + "1.model."
        elif b == levels - 1:
            netg += [(prefix + "1", "w", (inner, inp, 4, 4)), (prefix + "3", "w", (inner, outer, 4, 4)),
                     (prefix + "4", "bn", (outer,))]
        else:
            netg += [(prefix + "1", "w", (inner, inp, 4, 4)), (prefix + "2", "bn", (inner,)),
                     (prefix + "5", "w", (2 * inner, outer, 4, 4)), (prefix + "6", "bn", (outer,))]
            inner_prefix = prefix + "3.model."
        prefix = inner_prefix
    # state_dict order is depth first: a block's down layers, its sub-block, its up layers
    netg.sort(key=lambda e: _unet_order(e[0]))
    netd = [("feat.initial-conv-%d-%d" % (nc, ndf), "w", (ndf, nc, 4, 4))]
    size, ch = isize // 2, ndf
    while size > 4:
        netd += [("feat.pyramid-%d-%d-conv" % (ch, 2 * ch), "w", (2 * ch, ch, 4, 4)),
                 ("feat.pyramid-%d-batchnorm" % (2 * ch), "bn", (2 * ch,))]
        ch, size = 2 * ch, size // 2
    netd += [("feat.final-%d-1-conv" % ch, "w", (nz, ch, 4, 4)), ("clas.classifier", "w", (1, nz, 3, 3))]
    return {"netg": netg, "netd": netd}


def _unet_order(path):
    return [int(p) for p in path.split(".") if p.isdigit()]


def anomalib_path(net, path):
    """The anomalib name of an authors' GANomaly module path (net "netg"/"netd")."""
    if net == "netd":
        return path
    part, rest = path.split(".", 1)
    name = rest[len("main."):]
    if part.startswith("encoder"):
        if name.startswith("initial-"):
            return part + ".input_layers." + name
        if name.startswith("extra-layers-"):
            return part + ".extra_layers." + name
        if name.startswith("pyramid-"):
            return part + ".pyramid_features." + name
        return part + ".final_conv_layer"
    if name.startswith("initial-"):
        return part + ".latent_input." + name
    if name.startswith("pyramid-"):
        return part + ".inverse_pyramid." + name
    if name.startswith("extra-layers-"):
        return part + ".extra_layers." + name
    return part + ".final_layers." + name


BN_FIELDS = ("weight", "bias", "running_mean", "running_var")


def expand(entries, rename=None, with_nbt=False):
    """[(key, shape, is_nbt)] of layout entries, keys renamed by rename(path)."""
    out = []
    for path, kind, shape in entries:
        p = rename(path) if rename else path
        if kind == "w":
            out.append((p + ".weight", shape, False))
        elif kind == "wb":
            out += [(p + ".weight", shape, False), (p + ".bias", (shape[1],), False)]
        else:
            out += [(p + "." + f, shape, False) for f in BN_FIELDS]
            if with_nbt:
                out.append((p + ".num_batches_tracked", (), True))
    return out


# ---------------------------------------------------------------------------
# Reading checkpoints
# ---------------------------------------------------------------------------

def torch_module():
    try:
        import torch
    except ImportError:
        raise ConvertError("PyTorch is not installed for %s (Debian: apt-get install "
                           "python3-torch python3-numpy)" % sys.executable)
    return torch


STORAGE_DTYPES = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
                  "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
                  "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
                  "BoolStorage": "bool"}


def _rebuild_tensor(storage, offset, size, stride, *rest):
    torch = torch_module()
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data, *rest):
    return data


class _SafeUnpickler(pickle.Unpickler):
    """Reads the data.pkl of a torch.save zip archive allowing only tensors
    and plain containers: any other global (a class of the training code,
    argparse.Namespace, omegaconf...) is refused, never imported. (torch's
    weights_only mode means the same, but some releases, 1.13 among them,
    also reject plain floats, which every Lightning checkpoint holds.)"""

    def __init__(self, f, archive, prefix):
        super().__init__(f, encoding="utf-8")
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if module == "torch" and name in STORAGE_DTYPES.values():
            return getattr(torch_module(), name)
        raise pickle.UnpicklingError("global '%s.%s' is not allowed" % (module, name))

    def persistent_load(self, pid):
        torch = torch_module()
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"
                and pid[1] in STORAGE_DTYPES.values()):
            raise pickle.UnpicklingError("unknown persistent id %r" % (pid[:2],))
        raw = bytearray(self.archive.read(self.prefix + "data/" + str(pid[2])))
        dtype = getattr(torch, pid[1])
        if not raw:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(raw, dtype=dtype)


def load_checkpoint(path, trust):
    torch = torch_module()
    if not os.path.isfile(path):
        raise ConvertError("%s: no such file" % path)
    try:
        if trust:
            return torch.load(path, map_location="cpu")
        if not zipfile.is_zipfile(path):
            raise ConvertError("%s: not a zip-format torch.save file (torch < 1.6 wrote another "
                               "format, which only full unpickling reads); if you trust the file, "
                               "rerun with --trust-pickle" % path)
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise ConvertError("%s: a zip file, but not one torch.save wrote" % path)
            if any(n.endswith("/constants.pkl") for n in z.namelist()):
                raise ConvertError("%s: a TorchScript archive, not a checkpoint" % path)
            order = [n for n in z.namelist() if n.endswith("/byteorder")]
            if order and z.read(order[0]).strip() != b"little":
                raise ConvertError("%s: big-endian tensors are not supported" % path)
            prefix = pkl[0][:-len("data.pkl")]
            with z.open(pkl[0]) as f:
                return _SafeUnpickler(io.BytesIO(f.read()), z, prefix).load()
    except ConvertError:
        raise
    except pickle.UnpicklingError as exc:
        if trust:
            raise ConvertError("%s: cannot read it as a PyTorch checkpoint: %s" % (path, exc))
        raise ConvertError("%s: the checkpoint holds Python objects besides tensors (%s); "
                           "if you trust the file, rerun with --trust-pickle (unpickling may "
                           "run code stored in it)" % (path, exc))
    except Exception as exc:    # torch and zipfile raise many kinds here
        text = str(exc).strip()
        msg = text.splitlines()[0] if text else type(exc).__name__
        raise ConvertError("%s: cannot read it as a PyTorch checkpoint: %s" % (path, msg))


def state_dict_of(ckpt, path):
    """The state_dict of a checkpoint: ckpt['state_dict'], or ckpt itself if it
    is a mapping of names to tensors."""
    torch = torch_module()
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        sd = ckpt["state_dict"]
    else:
        sd = ckpt
    if not isinstance(sd, dict) or not sd:
        raise ConvertError("%s: expected {'epoch': ..., 'state_dict': {...}} or a state_dict, "
                           "found %s" % (path, type(ckpt).__name__))
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ConvertError("%s: state_dict entry %r is not a tensor" % (path, bad[0]))
    keys = list(sd)
    if all(k.startswith("module.") for k in keys):     # saved from nn.DataParallel
        sd = collections.OrderedDict((k[len("module."):], v) for k, v in sd.items())
    return sd


def shape_of(sd, key):
    return tuple(sd[key].shape) if key in sd else None


def find_one(sd, pattern, what, path):
    hits = [k for k in sd if re.fullmatch(pattern, k)]
    if len(hits) != 1:
        sample = ", ".join(list(sd)[:3])
        raise ConvertError("%s: %s: expected one key matching %s, found %d (the file's "
                           "first keys: %s); is --from right?" % (path, what, pattern,
                                                                   len(hits), sample))
    return hits[0]


def settle(cfg, args, names):
    """Check flags against what the checkpoint says; fill in what it does not."""
    for n in names:
        flag = getattr(args, n, None)
        if cfg.get(n) is None:
            if flag is None:
                raise ConvertError("cannot tell %s from the checkpoint; give --%s" % (n, n))
            cfg[n] = flag
        elif flag is not None and flag != cfg[n]:
            raise ConvertError("--%s %d disagrees with the checkpoint, whose tensors give %d"
                               % (n, flag, cfg[n]))
    return cfg


def match_layout(sd, keys, what, path, ignore_nbt=True):
    """Check sd holds exactly keys (num_batches_tracked aside) with their shapes;
    return [(key, float32 array)] in layout order."""
    torch = torch_module()
    want = {k: s for k, s, _ in keys}
    for k, v in sd.items():
        if ignore_nbt and k.endswith(".num_batches_tracked") and k[:-20] + ".running_var" in want:
            if v.numel() != 1 or v.is_floating_point():
                raise ConvertError("%s: %s must be one integer" % (path, k))
            continue
        if k not in want:
            raise ConvertError("%s: unknown key '%s' in the %s (a %s with these hyper-parameters "
                               "has no such tensor; our model format cannot hold it)"
                               % (path, k, what, what))
    out = []
    for k, s, _ in keys:
        if k not in sd:
            raise ConvertError("%s: the %s lacks '%s' (shape %s)" % (path, what, k, list(s)))
        v = sd[k]
        if tuple(v.shape) != tuple(s):
            raise ConvertError("%s: '%s' has shape %s, expected %s" % (path, k, list(v.shape), list(s)))
        if not v.is_floating_point():
            raise ConvertError("%s: '%s' is %s, expected a floating-point tensor" % (path, k, v.dtype))
        a = v.detach().to("cpu", torch.float32).contiguous().numpy()
        if not np.isfinite(a).all():
            raise ConvertError("%s: '%s' holds a non-finite value" % (path, k))
        if k.endswith("running_var") and (a < 0).any():
            raise ConvertError("%s: '%s' holds a negative variance" % (path, k))
        out.append((k, a))
    return out


# ---------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------

def infer_ganomaly(sd, path, prefix_of, what="generator"):
    """GANomaly hyper-parameters from a generator state_dict; prefix_of maps an
    authors' path ("encoder1.main.initial-...") to the source's key prefix."""
    k = find_one(sd, re.escape(prefix_of("encoder1.main.initial-")) + r"conv-\d+-\d+\.weight",
                 "the encoder's first conv", path)
    ngf, nc = shape_of(sd, k)[:2]
    extra = len([x for x in sd if re.fullmatch(re.escape(prefix_of("encoder1.main.extra-layers-"))
                                                 + r"\d+-\d+-conv\.weight", x)])
    pyr = len([x for x in sd if re.fullmatch(re.escape(prefix_of("encoder1.main.pyramid-"))
                                               + r"\d+-\d+-conv\.weight", x)])
    fin = [x for x in sd if re.fullmatch(re.escape(prefix_of("encoder1.main.final-")) + r".*weight", x)]
    nz = shape_of(sd, fin[0])[0] if len(fin) == 1 else None
    return {"isize": 8 << pyr, "nc": nc, "ngf": ngf, "nz": nz, "extralayers": extra}


def import_authors_ganomaly(args):
    if not args.netd:
        raise ConvertError("authors-ganomaly: give the discriminator with --netd netD.pth "
                           "(our model file holds both networks)")
    sdg = state_dict_of(load_checkpoint(args.checkpoint, args.trust_pickle), args.checkpoint)
    sdd = state_dict_of(load_checkpoint(args.netd, args.trust_pickle), args.netd)
    cfg = infer_ganomaly(sdg, args.checkpoint, lambda p: p)
    cfg = settle(cfg, args, ("isize", "nc", "nz", "ngf", "extralayers"))
    check_ganomaly_cfg(cfg)
    lay = ganomaly_layout(cfg)
    tensors = [("netg." + k, v) for k, v in match_layout(sdg, expand(lay["netg"]), "generator", args.checkpoint)]
    tensors += [("netd." + k, v) for k, v in match_layout(sdd, expand(lay["netd"]), "discriminator", args.netd)]
    hp = {"nz": cfg["nz"], "ngf": cfg["ngf"], "extralayers": cfg["extralayers"]}
    return "ganomaly", cfg, hp, tensors


def check_ganomaly_cfg(cfg):
    s = cfg["isize"]
    if s < 16 or s & (s - 1):
        raise ConvertError("ganomaly: the input side must be a power of two from 16, found %d" % s)
    if cfg["nc"] not in (1, 3):
        raise ConvertError("ganomaly: images must have 1 or 3 channels, the checkpoint has %d" % cfg["nc"])


def import_authors_skipganomaly(args):
    if not args.netd:
        raise ConvertError("authors-skipganomaly: give the discriminator with --netd netD.pth "
                           "(our model file holds both networks, and D's features are part of the score)")
    sdg = state_dict_of(load_checkpoint(args.checkpoint, args.trust_pickle), args.checkpoint)
    sdd = state_dict_of(load_checkpoint(args.netd, args.trust_pickle), args.netd)
    k = find_one(sdg, r"model\.model\.0\.weight", "the U-Net's first conv", args.checkpoint)
    ngf, nc = shape_of(sdg, k)[:2]
    levels, p = 1, "model.model.1."
    while p + "model.1.weight" in sdg:
        levels, p = levels + 1, p + "model.3."
    kd = find_one(sdd, r"feat\.initial-conv-\d+-\d+\.weight", "the discriminator's first conv", args.netd)
    kf = find_one(sdd, r"feat\.final-\d+-1-conv\.weight", "the discriminator's last conv", args.netd)
    cfg = {"isize": 1 << levels, "nc": nc, "ngf": ngf, "ndf": shape_of(sdd, kd)[0],
           "nz": shape_of(sdd, kf)[0]}
    cfg = settle(cfg, args, ("isize", "nc", "nz", "ngf", "ndf"))
    if cfg["isize"] not in (32, 64, 128):
        raise ConvertError("skipganomaly: the input side must be 32, 64 or 128, the U-Net has "
                           "%d levels (side %d)" % (levels, cfg["isize"]))
    if cfg["nc"] not in (1, 3) or shape_of(sdd, kd)[1] != cfg["nc"]:
        raise ConvertError("skipganomaly: generator and discriminator must take the same 1 or 3 "
                           "channels, found %d and %d" % (cfg["nc"], shape_of(sdd, kd)[1]))
    lay = skipganomaly_layout(cfg)
    tensors = [("netg." + k, v) for k, v in match_layout(sdg, expand(lay["netg"]), "generator", args.checkpoint)]
    tensors += [("netd." + k, v) for k, v in match_layout(sdd, expand(lay["netd"]), "discriminator", args.netd)]
    hp = {"nz": cfg["nz"], "ngf": cfg["ngf"], "ndf": cfg["ndf"]}
    return "skipganomaly", cfg, hp, tensors


def find_sizes(obj, depth=0):
    """Values of 'input_size' / 'image_size' anywhere in Lightning hyper_parameters."""
    out = []
    if depth > 6:
        return out
    items = obj.items() if isinstance(obj, dict) else []
    for k, v in items:
        if k in ("input_size", "image_size") and v is not None:
            out.append(v)
        elif isinstance(v, dict):
            out += find_sizes(v, depth + 1)
    return out


def import_anomalib_ganomaly(args):
    if args.netd:
        raise ConvertError("anomalib-ganomaly: the checkpoint holds both networks; drop --netd")
    ckpt = load_checkpoint(args.checkpoint, args.trust_pickle)
    sd = state_dict_of(ckpt, args.checkpoint)
    path = args.checkpoint
    # Lightning module keys are "model." + GanomalyModel's; a bare
    # GanomalyModel state_dict has none of that prefix
    root = "model." if any(k.startswith("model.generator.") for k in sd) else ""
    net_sd, ignored = {"netg": {}, "netd": {}}, []
    for k, v in sd.items():
        if k.startswith(root + "generator."):
            net_sd["netg"][k[len(root + "generator."):]] = v
        elif k.startswith(root + "discriminator."):
            net_sd["netd"][k[len(root + "discriminator."):]] = v
        elif root and not k.startswith(root) and k.startswith(ANOMALIB_IGNORED):
            ignored.append(k)
        else:
            raise ConvertError("%s: unknown key '%s' (an anomalib GANomaly checkpoint has "
                               "%sgenerator.* and %sdiscriminator.*)" % (path, k, root, root))
    if not net_sd["netg"] or not net_sd["netd"]:
        raise ConvertError("%s: no %sgenerator.* or %sdiscriminator.* keys: not an anomalib "
                           "GANomaly checkpoint" % (path, root, root))
    if ignored:
        note("dropped %d non-network entries (%s); thresholds and normalisation of anomalib "
             "are on its own score scale and are not carried over" % (len(ignored), ", ".join(ignored[:4])))
    sdg = net_sd["netg"]
    cfg = infer_ganomaly(sdg, path, lambda p: anomalib_path("netg", p) if not p.endswith("final-")
                         else "encoder1.final_conv_layer.")
    if cfg["nz"] is None:
        raise ConvertError("%s: the encoders have no final_conv_layer (anomalib's "
                           "add_final_conv_layer=False): its latent is a feature map, which our "
                           "ganomaly cannot hold" % path)
    if cfg["extralayers"] or any(".extra_layers." in k for k in sdg):
        raise ConvertError("%s: extra_layers > 0: anomalib's decoder ends its extra layers in "
                           "LeakyReLU(0.2) where the authors' (and ours) use ReLU; our format "
                           "cannot hold that network" % path)
    hyper = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    hyper = dict(hyper) if isinstance(hyper, dict) else {}
    for hk, ck in (("n_features", "ngf"), ("latent_vec_size", "nz"), ("extra_layers", "extralayers")):
        if hk in hyper and hyper[hk] != cfg[ck]:
            raise ConvertError("%s: hyper_parameters say %s = %r, the tensors give %d"
                               % (path, hk, hyper[hk], cfg[ck]))
    for size in find_sizes(hyper):
        sides = list(size) if isinstance(size, (list, tuple)) else [size, size]
        if any(s != cfg["isize"] for s in sides):
            raise ConvertError("%s: trained at input size %s: anomalib zero-pads such inputs to "
                               "%dx%d inside the model (pad_nextpow2) and sizes its layers from "
                               "the unpadded size; our format cannot reproduce that"
                               % (path, size, cfg["isize"], cfg["isize"]))
    # every anomalib release since 2022 pads the first conv by 4; the
    # checkpoint cannot tell, so 4 unless told otherwise
    pad = 4 if args.first_conv_padding is None else args.first_conv_padding
    if pad not in (1, 4):
        raise ConvertError("--first-conv-padding %d: anomalib's GANomaly pads its first conv by 4 "
                           "(its releases since 2022) or 1 (its first releases); our ganomaly "
                           "holds those two" % pad)
    cfg = settle(cfg, args, ("isize", "nc", "nz", "ngf", "extralayers"))
    check_ganomaly_cfg(cfg)
    if pad == 4 and cfg["isize"] < 32:
        raise ConvertError("%s: input side %d with the first conv padded by 4: the encoders end in "
                           "2x2, not 1x1 (anomalib's network only works from 32 up); if the "
                           "checkpoint comes from an early anomalib, give --first-conv-padding 1"
                           % (path, cfg["isize"]))
    lay = ganomaly_layout(cfg)
    tensors = []
    for net, what in (("netg", "generator"), ("netd", "discriminator")):
        keys = expand(lay[net], lambda p, n=net: anomalib_path(n, p))
        renamed = dict(zip([k for k, _, _ in keys], [k for k, _, _ in expand(lay[net])]))
        for k, v in match_layout(net_sd[net], keys, what, path):
            tensors.append((net + "." + renamed[k], v))
    hp = {"nz": cfg["nz"], "ngf": cfg["ngf"], "extralayers": cfg["extralayers"]}
    if pad != 1:
        hp["first_pad"] = pad
    for hk, ours in (("lr", "lr"), ("beta1", "beta1"), ("beta2", "beta2"), ("wadv", "w_adv"),
                     ("wcon", "w_con"), ("wenc", "w_enc")):
        if isinstance(hyper.get(hk), (int, float)) and not isinstance(hyper.get(hk), bool):
            hp[ours] = hyper[hk]
    note("anomalib feeds its networks images normalised by its pre-processor (ImageNet mean "
         "and std by default); sqlite-anomaly feeds v/127.5 - 1. Scores agree with anomalib's "
         "only for a model trained on inputs in [-1, 1]")
    return "ganomaly", cfg, hp, tensors


# ---------------------------------------------------------------------------
# Our model files
# ---------------------------------------------------------------------------

def encode_model(method, cfg, hp, tensors, fit, threshold, source):
    """The bytes of a model file: metadata first, tensors F32 in order."""
    blobs, entries, off = [], [], 0
    for name, a in tensors:
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        entries.append((name, {"dtype": "F32", "shape": [int(d) for d in a.shape],
                               "data_offsets": [off, off + len(b)]}))
        blobs.append(b)
        off += len(b)
    data = b"".join(blobs)
    meta = collections.OrderedDict([
        ("format", "sqlite-anomaly"), ("format_version", str(FORMAT_VERSION)),
        ("method", method), ("width", str(cfg["isize"])), ("height", str(cfg["isize"])),
        ("channels", str(cfg["nc"])), ("fit", fit),
        ("hparams", json.dumps(hp, separators=(",", ":"))),
        ("calibration", UNCALIBRATED),
        ("threshold", "null" if threshold is None else repr(float(threshold))),
        ("checksum", "crc32:%08x" % (zlib.crc32(data) & 0xFFFFFFFF)),
        ("created", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("software", SOFTWARE),
        ("source", source),
    ])
    header = collections.OrderedDict([("__metadata__", meta)] + entries)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data


def read_model(path):
    """(metadata, [(name, float32 array)]) of a model file, checksum verified."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as exc:
        raise ConvertError("%s: %s" % (path, exc.strerror))
    if len(blob) < 8:
        raise ConvertError("%s: %d bytes, too short for a safetensors file" % (path, len(blob)))
    n = struct.unpack("<Q", blob[:8])[0]
    if n < 2 or n > len(blob) - 8:
        raise ConvertError("%s: header length %d does not fit a %d-byte file" % (path, n, len(blob)))
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"), object_pairs_hook=collections.OrderedDict)
    except ValueError as exc:
        raise ConvertError("%s: the header is not JSON: %s" % (path, exc))
    data = blob[8 + n:]
    meta = header.pop("__metadata__", {})
    if meta.get("format") != "sqlite-anomaly":
        raise ConvertError("%s: not a sqlite-anomaly model (metadata 'format' is %r)" % (path, meta.get("format")))
    crc = "crc32:%08x" % (zlib.crc32(data) & 0xFFFFFFFF)
    if meta.get("checksum") != crc:
        raise ConvertError("%s: checksum %s, the data has %s (the file is corrupt)"
                           % (path, meta.get("checksum"), crc))
    dtypes = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2)}
    tensors = []
    for name, t in header.items():
        if t.get("dtype") not in dtypes:
            raise ConvertError("%s: tensor '%s' has dtype %r" % (path, name, t.get("dtype")))
        dt, size = dtypes[t["dtype"]]
        b, e = t["data_offsets"]
        shape = tuple(int(d) for d in t["shape"])
        if not 0 <= b <= e <= len(data) or e - b != size * int(np.prod(shape, dtype=np.int64)):
            raise ConvertError("%s: tensor '%s' has bad offsets" % (path, name))
        a = np.frombuffer(data, dtype=dt, count=(e - b) // size, offset=b)
        if t["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view("<f4")
        tensors.append((name, a.astype(np.float32).reshape(shape)))
    return meta, tensors


def write_atomic(path, blob):
    """Write blob to path through a temporary file in the same directory."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".torch_convert-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cmd_import(args):
    if args.first_conv_padding is not None and args.source != "anomalib-ganomaly":
        raise ConvertError("--first-conv-padding is for --from anomalib-ganomaly; the authors' "
                           "networks pad their first conv by 1")
    fn = {"authors-ganomaly": import_authors_ganomaly,
          "authors-skipganomaly": import_authors_skipganomaly,
          "anomalib-ganomaly": import_anomalib_ganomaly}[args.source]
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise ConvertError("--threshold must be a finite number")
    method, cfg, hp, tensors = fn(args)
    source = "%s %s" % (args.source, os.path.basename(args.checkpoint))
    if args.netd:
        source += " " + os.path.basename(args.netd)
    blob = encode_model(method, cfg, hp, tensors, args.fit, args.threshold, source)
    try:
        write_atomic(args.output, blob)
    except OSError as exc:
        raise ConvertError("%s: cannot write: %s" % (args.output, exc.strerror or exc))
    print("%s: %s %dx%dx%d %s, %d tensors, %d bytes"
          % (args.output, method, cfg["isize"], cfg["isize"], cfg["nc"],
             json.dumps(hp, separators=(",", ":")), len(tensors), len(blob)))


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------

def cmd_export(args):
    torch = torch_module()
    meta, tensors = read_model(args.model)
    method = meta.get("method")
    try:
        hp = json.loads(meta.get("hparams", "{}"))
        isize, height, nc = int(meta["width"]), int(meta["height"]), int(meta["channels"])
    except (ValueError, KeyError) as exc:
        raise ConvertError("%s: bad metadata: %s" % (args.model, exc))
    if isize != height:
        raise ConvertError("%s: input %dx%d is not square" % (args.model, isize, height))
    if method == "ganomaly" and hp.get("first_pad", 1) != 1:
        raise ConvertError("%s: first_pad %s (anomalib's network): the authors' encoders pad "
                           "their first conv by 1, so their nets would compute other scores from "
                           "these weights; there is no export to anomalib's layout"
                           % (args.model, hp["first_pad"]))
    if method == "ganomaly":
        cfg = {"isize": isize, "nc": nc, "nz": hp.get("nz", 100), "ngf": hp.get("ngf", 64),
               "extralayers": hp.get("extralayers", 0)}
        lay = ganomaly_layout(cfg)
        opts = "--isize %d --nc %d --nz %d --ngf %d --ndf %d --extralayers %d" % (
            isize, nc, cfg["nz"], cfg["ngf"], cfg["ngf"], cfg["extralayers"])
    elif method == "skipganomaly":
        cfg = {"isize": isize, "nc": nc, "nz": hp.get("nz", 100), "ngf": hp.get("ngf", 64),
               "ndf": hp.get("ndf", 64)}
        if isize not in (32, 64, 128):
            raise ConvertError("%s: skipganomaly input side %d is not 32, 64 or 128" % (args.model, isize))
        lay = skipganomaly_layout(cfg)
        opts = "--isize %d --nc %d --nz %d --ngf %d --ndf %d" % (isize, nc, cfg["nz"], cfg["ngf"], cfg["ndf"])
    else:
        raise ConvertError("%s: method '%s': only ganomaly and skipganomaly models export to "
                           "the authors' checkpoints" % (args.model, method))
    have = collections.OrderedDict(tensors)
    blobs = {}
    for net, fname in (("netg", "netG.pth"), ("netd", "netD.pth")):
        sd = collections.OrderedDict()
        for k, shape, nbt in expand(lay[net], with_nbt=True):
            if nbt:
                sd[k] = torch.tensor(0, dtype=torch.long)   # not stored; eval mode ignores it
                continue
            a = have.pop(net + "." + k, None)
            if a is None:
                raise ConvertError("%s: tensor '%s.%s' is missing" % (args.model, net, k))
            if tuple(a.shape) != tuple(shape):
                raise ConvertError("%s: '%s.%s' has shape %s, expected %s"
                                   % (args.model, net, k, list(a.shape), list(shape)))
            sd[k] = torch.from_numpy(a.copy())
        blobs[fname] = {"epoch": args.epoch, "state_dict": sd}
    if have:
        raise ConvertError("%s: unexpected tensor '%s'" % (args.model, next(iter(have))))
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as exc:
        raise ConvertError("%s: cannot create the directory: %s" % (args.output, exc.strerror))
    data = {}
    for fname, obj in blobs.items():       # both serialised before either is written
        buf = io.BytesIO()
        torch.save(obj, buf)
        data[fname] = buf.getvalue()
    try:
        for fname, blob in data.items():
            write_atomic(os.path.join(args.output, fname), blob)
    except OSError as exc:
        raise ConvertError("%s: cannot write: %s" % (args.output, exc.strerror or exc))
    print("%s: netG.pth, netD.pth (%s); the authors' options: %s" % (args.output, method, opts))


# ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(prog="torch_convert.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    im = sub.add_parser("import", help="PyTorch checkpoint -> model file")
    im.add_argument("--from", dest="source", required=True,
                    choices=["authors-ganomaly", "authors-skipganomaly", "anomalib-ganomaly"])
    im.add_argument("checkpoint", help="netG.pth, or anomalib's .ckpt")
    im.add_argument("--netd", help="netD.pth (authors-*)")
    im.add_argument("-o", "--output", required=True, help="the model file to write")
    for n in ("isize", "nc", "nz", "ngf", "ndf", "extralayers"):
        im.add_argument("--" + n, type=int)
    im.add_argument("--fit", choices=["resize", "pad"], default="resize")
    im.add_argument("--threshold", type=float)
    im.add_argument("--first-conv-padding", type=int, dest="first_conv_padding")
    im.add_argument("--trust-pickle", action="store_true")
    ex = sub.add_parser("export", help="model file -> netG.pth and netD.pth")
    ex.add_argument("model")
    ex.add_argument("-o", "--output", required=True, help="directory for netG.pth and netD.pth")
    ex.add_argument("--epoch", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd is None:
        ap.print_usage(sys.stderr)
        return 2
    try:
        if args.cmd == "import":
            cmd_import(args)
        else:
            cmd_export(args)
    except ConvertError as exc:
        print("torch_convert: " + str(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
