#!/usr/bin/python3
"""
gen_model_seeds.py - write the model fuzzers' seed corpus: one tiny trained
model of every method (EGBAD's and caae's in F16 and BF16, since their
fixed-width dense layers make an F32 file large), and variants that reach
other paths of the reader: F16 and BF16 tensors, a padded model, an
uncalibrated one, a wrong checksum, a truncated file.

    make                                   # builds ./anomaly.so
    /usr/bin/python3 tests/fuzz/gen_model_seeds.py tests/fuzz/corpus/model

Trains through the extension itself (Python's sqlite3 module loads
./anomaly.so) on a few drawn images, one epoch at the smallest sizes each
method takes. Needs Debian's python3-pil. The files are committed; run this
again only to change them.
"""
import io
import json
import os
import sqlite3
import struct
import sys
import zlib

from PIL import Image

# method -> (options): the smallest input and networks each method takes
TINY = {
    "ganomaly": {"size": 16, "nz": 4, "ngf": 4},
    "skipganomaly": {"size": 32, "nz": 4, "ngf": 2, "ndf": 2},
    "anogan": {"size": 16, "nz": 4, "ngf": 4, "steps": 3},
    "egbad": {"size": 32, "nz": 4, "nf": 2},
    "alad": {"size": 32, "nz": 4, "nf": 2},
    "defectgan": {"size": 16, "nz": 4, "ngf": 4, "ndf": 4},
    "caae": {"size": 16, "nz": 4, "nf": 2, "critic_h1": 4, "critic_h2": 4,
             "n_critic": 1, "n_critic_early": 1, "early_epochs": 0},
}


def image(i, mode):
    im = Image.new(mode, (20, 20))
    px = im.load()
    for y in range(20):
        for x in range(20):
            v = (x * 12 + y * 5 + i * 37) & 255
            px[x, y] = v if mode == "L" else (v, 255 - v, (v * 3) & 255)
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def split(blob):
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def join(header, data):
    """A container as st_write lays it out, with the checksum recomputed."""
    meta = header.get("__metadata__")
    if meta and "checksum" in meta:
        meta["checksum"] = "crc32:%08x" % (zlib.crc32(data) & 0xFFFFFFFF)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def convert(blob, dtype):
    """Every F32 tensor as F16 or BF16."""
    header, data = split(blob)
    out = b""
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        vals = struct.unpack("<%df" % ((e - b) // 4), data[b:e])
        if dtype == "F16":
            raw = struct.pack("<%de" % len(vals), *vals)
        else:
            raw = b"".join(struct.pack("<f", v)[2:] for v in vals)
        t["dtype"] = dtype
        t["data_offsets"] = [len(out), len(out) + len(raw)]
        out += raw
    return join(header, out)


def edit_meta(blob, **kw):
    header, data = split(blob)
    header["__metadata__"].update(kw)
    return join(header, data)


def main(out):
    os.makedirs(out, exist_ok=True)
    db = sqlite3.connect(":memory:")
    db.enable_load_extension(True)
    db.load_extension("./anomaly")
    db.execute("CREATE TABLE imgs(id INTEGER PRIMARY KEY, grey BLOB, rgb BLOB)")
    for i in range(8):
        db.execute("INSERT INTO imgs(grey, rgb) VALUES (?, ?)",
                   (image(i, "L"), image(i, "RGB")))
    models = {}
    for method, opts in TINY.items():
        opts = dict(opts, epochs=1, batch=4, seed=1, quiet=True)
        col = "rgb" if method == "defectgan" else "grey"
        db.execute("SELECT anomaly_train(?, ?, %s, ?) FROM imgs ORDER BY id" % col,
                   (method, method, json.dumps(opts))).fetchall()
        blob = db.execute("SELECT model FROM anomaly_models WHERE name = ?",
                          (method,)).fetchone()[0]
        models[method] = bytes(blob)
    # egbad's and caae's dense layers have fixed widths: halve them with F16
    seeds = {"%s.safetensors" % k: v for k, v in models.items()
             if k not in ("egbad", "caae")}
    seeds["egbad-f16.safetensors"] = convert(models["egbad"], "F16")
    seeds["caae-bf16.safetensors"] = convert(models["caae"], "BF16")
    g = models["ganomaly"]
    seeds["ganomaly-f16.safetensors"] = convert(g, "F16")
    seeds["defectgan-bf16.safetensors"] = convert(models["defectgan"], "BF16")
    seeds["ganomaly-pad.safetensors"] = edit_meta(g, fit="pad")
    seeds["ganomaly-uncalibrated.safetensors"] = edit_meta(
        g, calibration='{"n":0,"quantiles":[],"scales":{}}', threshold="null")
    header, data = split(g)
    seeds["ganomaly-bad-checksum.safetensors"] = (
        g[:8 + struct.unpack("<Q", g[:8])[0]] + bytes([data[0] ^ 1]) + data[1:])
    seeds["ganomaly-truncated.safetensors"] = g[:len(g) * 2 // 3]
    for name, blob in sorted(seeds.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(blob)
        print("%-36s %6d bytes" % (name, len(blob)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus/model")
