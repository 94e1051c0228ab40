"""torch_convert_check.py - end-to-end check of scripts/torch_convert.py.

Run by tests/sql/torch_convert.sh with Debian's /usr/bin/python3 (torch,
numpy, and an sqlite3 module that loads extensions), from the repository
root; prints "torch_convert: ok" and the largest differences, or fails with
a message and exit status 1.

For each source (the authors' GANomaly and Skip-GANomaly, anomalib's
GANomaly), tiny reference nets (tests/bench/reference/*_ref.py) are built
with fixed seeds and non-trivial batch norm, saved as that source saves
them, converted, registered in SQLite through the extension ($ANOMALY_EXT,
default ./anomaly), and anomaly_score of 4 PNGs (encoded here at the
model's size and channels, so the input tensor is exactly v/127.5 - 1) is
compared with the score the PyTorch nets compute (1e-4 relative). Then the
model is exported back; the checkpoints must load strictly into the
reference nets with weights bit-identical to the originals, give the same
scores, and convert again to the same tensor bytes. anomalib's checkpoints
are made with both first-conv paddings, 4 (the converter's default, our
first_pad 4) and 1 (--first-conv-padding 1); only padding 1 exports. Last,
each refused case must fail with its message and leave no output file.
"""

import contextlib
import io
import os
import struct
import subprocess
import sys
import tempfile
import zlib

sys.dont_write_bytecode = True
ROOT = os.getcwd()
sys.path.insert(0, os.path.join(ROOT, "tests", "bench", "reference"))

import numpy as np  # noqa: E402
import sqlite3  # noqa: E402
import torch  # noqa: E402

import anomalib_ganomaly_ref as ar  # noqa: E402
import ganomaly_ref as gr  # noqa: E402
import skipganomaly_ref as sr  # noqa: E402
from make_golden import set_batchnorm  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import torch_convert  # noqa: E402

SCRIPT = os.path.join(ROOT, "scripts", "torch_convert.py")
TOL = 1e-4
torch.set_num_threads(1)
failures = []
worst = {}


def fail(msg):
    failures.append(msg)
    print("torch_convert: FAIL: " + msg, file=sys.stderr)


def png(u8):
    """PNG bytes of a (C, H, W) uint8 array, C 1 (grey) or 3 (RGB)."""
    c, h, w = u8.shape
    rows = np.ascontiguousarray(u8.transpose(1, 2, 0)).reshape(h, w * c)
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def images(nc, size, seed):
    """(4, nc, size, size) uint8: ramp, checkerboard, noise, a smooth blob."""
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    ramp = np.rint(255 * (xx + yy) / (2 * (size - 1)))
    check = ((xx // 4 + yy // 4) % 2) * 255
    noise = np.random.RandomState(seed).randint(0, 256, size=(nc, size, size))
    blob = np.rint(255 * np.exp(-((xx - size / 3) ** 2 + (yy - size / 2) ** 2) / (size * 2)))
    out = [np.broadcast_to(a, (nc, size, size)) for a in (ramp, check)] + [noise]
    out.append(np.stack([blob * (k + 1) / nc for k in range(nc)]))
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def to_input(u8):
    """What the extension feeds the model: v / 127.5 - 1 in float32."""
    return torch.from_numpy(u8.astype(np.float32) / np.float32(127.5) - np.float32(1.0))


def run_cli(*args):
    """The script as a user runs it: (exit status, stdout + stderr)."""
    p = subprocess.run([sys.executable, SCRIPT] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True)
    return p.returncode, p.stdout + p.stderr


def run(*args):
    """torch_convert.main(args) in this process (no second torch start-up)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = torch_convert.main(list(args))
    return rc, out.getvalue()


def convert_ok(what, *args, cli=False):
    rc, out = (run_cli if cli else run)(*args)
    if rc != 0:
        fail("%s: conversion failed (%d): %s" % (what, rc, out.strip()))
        return False
    return True


def sql_scores(model_path, pngs, name):
    db = sqlite3.connect(":memory:")
    db.enable_load_extension(True)
    db.load_extension(os.environ.get("ANOMALY_EXT", "./anomaly"))
    db.enable_load_extension(False)
    with open(model_path, "rb") as f:
        db.execute("INSERT INTO anomaly_models(name, model) VALUES (?, ?)", (name, f.read()))
    out = [db.execute("SELECT anomaly_score(?, ?)", (p, name)).fetchone()[0] for p in pngs]
    db.close()
    return np.array(out, dtype=np.float64)


def compare(what, got, want):
    rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-30)
    worst[what] = max(worst.get(what, 0.0), float(rel.max()))
    if not (rel <= TOL).all():
        fail("%s: SQL scores %s, PyTorch %s (relative difference %.3g)" % (what, got, want, rel.max()))
    if np.ptp(want) <= 1e-3 * np.abs(want).max():
        fail("%s: the reference scores hardly depend on the image: %s" % (what, want))


def ganomaly_scores(netg, x):
    with torch.no_grad():
        _, z, z2 = netg(x)
    return ((z - z2) ** 2).reshape(x.shape[0], -1).mean(dim=1).double().numpy()


def skip_scores(netg, netd, x, w=0.9):
    with torch.no_grad():
        xh = netg(x)
        f, fh = netd(x)[1], netd(xh)[1]
    n = x.shape[0]
    rec = ((x - xh) ** 2).reshape(n, -1).mean(dim=1)
    lat = ((f - fh) ** 2).reshape(n, -1).mean(dim=1)
    return (w * rec + (1 - w) * lat).double().numpy()


def same_weights(what, ref_sd, path_sd):
    """ref_sd: name -> tensor of the original; every tensor but
    num_batches_tracked must be bit-identical in the exported one."""
    for k, v in ref_sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        if k not in path_sd or not torch.equal(v.float(), path_sd[k]):
            fail("%s: exported '%s' differs from the original" % (what, k))
            return


def data_section(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    return blob[8 + n:]


def refuse(what, out_path, want_msg, *args, cli=False):
    rc, out = (run_cli if cli else run)(*args)
    if rc != 1 or want_msg not in out:
        fail("%s: expected exit 1 and '%s', got %d: %s" % (what, want_msg, rc, out.strip()))
    if os.path.exists(out_path):
        fail("%s: %s was created" % (what, out_path))
    leftovers = [f for f in os.listdir(os.path.dirname(out_path)) if f.startswith(".torch_convert-")]
    if leftovers:
        fail("%s: temporary files left: %s" % (what, leftovers))


def check_authors_ganomaly(tmp):
    cfg = {"isize": 32, "nc": 1, "nz": 16, "ngf": 8, "extralayers": 1}
    torch.manual_seed(101)
    netg, netd = gr.build(cfg)
    u8 = images(cfg["nc"], cfg["isize"], 7)
    x = to_input(u8)
    set_batchnorm(netg, x)
    set_batchnorm(netd, x)
    g, d = os.path.join(tmp, "netG.pth"), os.path.join(tmp, "netD.pth")
    torch.save({"epoch": 14, "state_dict": netg.state_dict()}, g)
    torch.save({"epoch": 14, "state_dict": netd.state_dict()}, d)
    model = os.path.join(tmp, "ga.safetensors")
    if not convert_ok("authors-ganomaly", "import", "--from", "authors-ganomaly", g, "--netd", d,
                      "-o", model, cli=True):
        return
    pngs = [png(a) for a in u8]
    want = ganomaly_scores(netg, x)
    compare("authors-ganomaly", sql_scores(model, pngs, "ga"), want)

    out = os.path.join(tmp, "ga-export")
    if not convert_ok("ganomaly export", "export", model, "-o", out):
        return
    g2, d2 = gr.NetG(cfg), gr.NetD(cfg)
    ck_g = torch.load(os.path.join(out, "netG.pth"))
    ck_d = torch.load(os.path.join(out, "netD.pth"))
    if set(ck_g) != {"epoch", "state_dict"}:
        fail("ganomaly export: netG.pth holds %s" % sorted(ck_g))
    g2.load_state_dict(ck_g["state_dict"])          # strict
    d2.load_state_dict(ck_d["state_dict"])
    if list(ck_g["state_dict"]) != list(netg.state_dict()):
        fail("ganomaly export: netG keys are not in the authors' state_dict order")
    same_weights("ganomaly export netG", netg.state_dict(), ck_g["state_dict"])
    same_weights("ganomaly export netD", netd.state_dict(), ck_d["state_dict"])
    g2.eval()
    compare("ganomaly round trip", ganomaly_scores(g2, x), want)
    again = os.path.join(tmp, "ga2.safetensors")
    if convert_ok("ganomaly re-import", "import", "--from", "authors-ganomaly",
                  os.path.join(out, "netG.pth"), "--netd", os.path.join(out, "netD.pth"), "-o", again):
        if data_section(again) != data_section(model):
            fail("ganomaly: export then import changed the tensor bytes")

    # refusals
    sd = netg.state_dict()
    sd["encoder1.main.attention.weight"] = torch.zeros(3)
    bad = os.path.join(tmp, "netG-extra-key.pth")
    torch.save({"epoch": 1, "state_dict": sd}, bad)
    dst = os.path.join(tmp, "refused.safetensors")
    refuse("unknown key", dst, "unknown key 'encoder1.main.attention.weight'",
           "import", "--from", "authors-ganomaly", bad, "--netd", d, "-o", dst, cli=True)
    refuse("flag disagrees", dst, "--nz 99 disagrees",
           "import", "--from", "authors-ganomaly", g, "--netd", d, "--nz", "99", "-o", dst)
    refuse("no netD", dst, "--netd", "import", "--from", "authors-ganomaly", g, "-o", dst)
    torch.manual_seed(5)
    other_d = gr.NetD(dict(cfg, ngf=4))
    bad_d = os.path.join(tmp, "netD-other.pth")
    torch.save({"epoch": 1, "state_dict": other_d.state_dict()}, bad_d)
    refuse("discriminator of another size", dst, "has shape",
           "import", "--from", "authors-ganomaly", g, "--netd", bad_d, "-o", dst)
    refuse("wrong source", dst, "is --from right",
           "import", "--from", "authors-skipganomaly", g, "--netd", d, "-o", dst)
    import argparse
    pickled = os.path.join(tmp, "netG-opt.pth")
    torch.save({"epoch": 1, "state_dict": netg.state_dict(), "opt": argparse.Namespace(nz=16)}, pickled)
    refuse("pickled object", dst, "--trust-pickle",
           "import", "--from", "authors-ganomaly", pickled, "--netd", d, "-o", dst)
    # a failed run leaves an existing output untouched
    with open(dst, "wb") as f:
        f.write(b"keep")
    rc, _ = run("import", "--from", "authors-ganomaly", bad, "--netd", d, "-o", dst)
    with open(dst, "rb") as f:
        if rc != 1 or f.read() != b"keep":
            fail("a failed import changed an existing output file")
    os.unlink(dst)


def check_authors_skipganomaly(tmp):
    cfg = {"isize": 32, "nc": 3, "nz": 16, "ngf": 8, "ndf": 8}
    torch.manual_seed(202)
    netg, netd = sr.build(cfg)
    u8 = images(cfg["nc"], cfg["isize"], 8)
    x = to_input(u8)
    set_batchnorm(netg, x)
    set_batchnorm(netd, x)
    with torch.no_grad():          # the outermost up-conv's bias is zero after init
        netg.model.model[3].bias.normal_(0.0, 0.1)
    netg.eval()
    g, d = os.path.join(tmp, "snetG.pth"), os.path.join(tmp, "snetD.pth")
    torch.save({"epoch": 3, "state_dict": netg.state_dict()}, g)
    torch.save({"epoch": 3, "state_dict": netd.state_dict()}, d)
    model = os.path.join(tmp, "sg.safetensors")
    if not convert_ok("authors-skipganomaly", "import", "--from", "authors-skipganomaly", g,
                      "--netd", d, "-o", model):
        return
    want = skip_scores(netg, netd, x)
    compare("authors-skipganomaly", sql_scores(model, [png(a) for a in u8], "sg"), want)
    out = os.path.join(tmp, "sg-export")
    if not convert_ok("skipganomaly export", "export", model, "-o", out):
        return
    g2, d2 = sr.NetG(cfg), sr.NetD(cfg)
    ck_g = torch.load(os.path.join(out, "netG.pth"))
    ck_d = torch.load(os.path.join(out, "netD.pth"))
    g2.load_state_dict(ck_g["state_dict"])
    d2.load_state_dict(ck_d["state_dict"])
    if list(ck_g["state_dict"]) != list(netg.state_dict()):
        fail("skipganomaly export: netG keys are not in the authors' state_dict order")
    same_weights("skipganomaly export netG", netg.state_dict(), ck_g["state_dict"])
    same_weights("skipganomaly export netD", netd.state_dict(), ck_d["state_dict"])
    g2.eval()
    d2.eval()
    compare("skipganomaly round trip", skip_scores(g2, d2, x), want)
    dst = os.path.join(tmp, "refused.safetensors")
    refuse("skipganomaly with a GANomaly discriminator", dst, "the discriminator's first conv",
           "import", "--from", "authors-skipganomaly", g, "--netd", os.path.join(tmp, "netD.pth"),
           "-o", dst)


def anomalib_net(padding, seed, u8):
    """anomalib's GanomalyModel (isize 32, nc 3, ngf 8, nz 16) with its first
    convs padded by padding, non-trivial batch norm, eval mode."""
    torch.manual_seed(seed)
    net = ar.GanomalyModel(32, 3, 8, 16, first_padding=padding)
    x = to_input(u8)
    set_batchnorm(net.generator, x)
    set_batchnorm(net.discriminator, x)
    net.eval()
    return net


def check_anomalib(tmp):
    u8 = images(3, 32, 9)
    x, pngs = to_input(u8), [png(a) for a in u8]
    hyper = {"batch_size": 32, "n_features": 8, "latent_vec_size": 16, "extra_layers": 0,
             "add_final_conv_layer": True, "wadv": 1, "wcon": 50, "wenc": 1, "lr": 0.0002,
             "beta1": 0.5, "beta2": 0.999}
    dst = os.path.join(tmp, "refused.safetensors")
    # padding 4 (every current release; the default) and 1 (its first releases)
    for padding, flag in ((4, []), (1, ["--first-conv-padding", "1"])):
        what = "anomalib-ganomaly padding %d" % padding
        net = anomalib_net(padding, 303, u8)
        ck = os.path.join(tmp, "anomalib-p%d.ckpt" % padding)
        torch.save(ar.lightning_checkpoint(net, hyper, {"image_threshold.value": torch.tensor(0.5)}), ck)
        model = os.path.join(tmp, "an-p%d.safetensors" % padding)
        if not convert_ok(what, "import", "--from", "anomalib-ganomaly", ck, "-o", model, *flag,
                          cli=padding == 4):
            continue
        hp = torch_convert.read_model(model)[0]["hparams"]
        if ('"first_pad":4' in hp) != (padding == 4):
            fail("%s: hparams %s" % (what, hp))
        with torch.no_grad():
            want = net(x).double().numpy()
        compare(what, sql_scores(model, pngs, "an%d" % padding), want)
        out = os.path.join(tmp, "an-export-p%d" % padding)
        if padding == 4:
            # the same weights read with the other padding give other scores
            wrong = os.path.join(tmp, "an-p4-as-p1.safetensors")
            if convert_ok(what + " as 1", "import", "--from", "anomalib-ganomaly", ck, "-o", wrong,
                          "--first-conv-padding", "1"):
                got = sql_scores(wrong, pngs, "wrong")
                if (np.abs(got - want) / np.abs(want)).max() < 0.05:
                    fail("%s: scoring it with padding 1 hardly changes the scores" % what)
            refuse("export of an anomalib padding 4 model", out,
                   "there is no export to anomalib's layout", "export", model, "-o", out)
            continue
        # padding 1 exports in the authors' layout: the authors' nets compute the same
        if convert_ok("anomalib export", "export", model, "-o", out):
            cfg = {"isize": 32, "nc": 3, "nz": 16, "ngf": 8, "extralayers": 0}
            g2 = gr.NetG(cfg)
            g2.load_state_dict(torch.load(os.path.join(out, "netG.pth"))["state_dict"])
            gr.NetD(cfg).load_state_dict(torch.load(os.path.join(out, "netD.pth"))["state_dict"])
            g2.eval()
            compare("anomalib round trip", ganomaly_scores(g2, x), want)

    ck = os.path.join(tmp, "anomalib-p4.ckpt")
    base = ["import", "--from", "anomalib-ganomaly", ck, "-o", dst]
    refuse("anomalib padding 2", dst, "--first-conv-padding 2: anomalib's GANomaly pads",
           *(base + ["--first-conv-padding", "2"]))
    refuse("padding with the authors' source", dst, "--first-conv-padding is for",
           "import", "--from", "authors-ganomaly", os.path.join(tmp, "netG.pth"), "--netd",
           os.path.join(tmp, "netD.pth"), "--first-conv-padding", "4", "-o", dst)
    torch.manual_seed(304)
    small = ar.GanomalyModel(16, 3, 8, 16, first_padding=1)   # its layout; padding 4 cannot run at 16
    p16 = os.path.join(tmp, "anomalib16.ckpt")
    torch.save(ar.lightning_checkpoint(small, dict(hyper)), p16)
    refuse("anomalib padding 4 at 16", dst, "the encoders end in 2x2",
           "import", "--from", "anomalib-ganomaly", p16, "-o", dst)

    net = anomalib_net(4, 303, u8)

    def variant(name, net2=None, hyper2=None, extra_state=None):
        p = os.path.join(tmp, name)
        torch.save(ar.lightning_checkpoint(net2 or net, hyper2 or hyper, extra_state), p)
        return ["import", "--from", "anomalib-ganomaly", p, "-o", dst]
    refuse("anomalib extra layers", dst, "LeakyReLU",
           *variant("extra.ckpt", ar.GanomalyModel(32, 3, 8, 16, extra=1),
                    dict(hyper, extra_layers=1)))
    refuse("anomalib without final conv", dst, "add_final_conv_layer=False",
           *variant("nofinal.ckpt", ar.GanomalyModel(32, 3, 8, 16, final_conv=False),
                    dict(hyper, add_final_conv_layer=False)))
    refuse("anomalib padded input size", dst, "pad_nextpow2",
           *variant("size.ckpt", hyper2=dict(hyper, input_size=[30, 30])))
    refuse("anomalib unknown key", dst, "unknown key 'model.memory_bank'",
           *variant("bank.ckpt", extra_state={"model.memory_bank": torch.zeros(2)}))


def main():
    with tempfile.TemporaryDirectory(prefix="torch_convert.") as tmp:
        check_authors_ganomaly(tmp)
        check_authors_skipganomaly(tmp)
        check_anomalib(tmp)
    if failures:
        print("torch_convert: %d failure(s)" % len(failures))
        return 1
    print("largest relative score differences, SQL vs PyTorch: %s"
          % ", ".join("%s %.2g" % kv for kv in sorted(worst.items())))
    print("torch_convert: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
