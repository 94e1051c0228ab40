"""to_f16.py - rewrite a sqlite-anomaly model file with F16 tensors.

    python3 tests/bench/reference/to_f16.py in.safetensors out.safetensors

Halves the file (a full-size GANomaly: 15.5 MB -> 7.7 MB) for shipping in
models/. Readers convert F16 back to float32 on load; weights of magnitude
1e-2 keep about 3 decimal digits, and the scores of models/ move by less than
the AUROC's third decimal (models/README.md gives both). Metadata is kept,
the checksum recomputed over the new data section. Needs numpy only.
"""

import json
import struct
import sys
import zlib

import numpy as np


def main(src, dst):
    raw = open(src, "rb").read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    data = raw[8 + hlen:]
    out_header, chunks, offset = {}, [], 0
    meta = header.pop("__metadata__", None)
    if meta is not None:
        out_header["__metadata__"] = meta
    for name, t in header.items():
        b, e = t["data_offsets"]
        if t["dtype"] != "F32":
            raise SystemExit("%s: tensor %s is %s, expected F32" % (src, name, t["dtype"]))
        a = np.frombuffer(data[b:e], dtype="<f4").astype("<f2")
        if not np.all(np.isfinite(a)):
            raise SystemExit("%s: tensor %s overflows F16" % (src, name))
        chunk = a.tobytes()
        out_header[name] = {"dtype": "F16", "shape": t["shape"],
                            "data_offsets": [offset, offset + len(chunk)]}
        chunks.append(chunk)
        offset += len(chunk)
    body = b"".join(chunks)
    if meta is not None:
        meta["checksum"] = "crc32:%08x" % (zlib.crc32(body) & 0xFFFFFFFF)
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + body)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
