"""safetensors_io.py - read and write safetensors files with Python and numpy only.

The format (https://huggingface.co/docs/safetensors):
  8 bytes   N, the header length, unsigned little-endian
  N bytes   a JSON object: optional "__metadata__" {str: str}, then for each
            tensor  name: {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}
            with b, e relative to the start of the data section; padded with
            spaces so that 8 + N is a multiple of 8
  the rest  the tensor bytes, little-endian, row-major, back to back

Usage:
  save("m.safetensors", {"w": np.ones((2, 3), np.float32)}, {"format": "x"})
  tensors, metadata = load("m.safetensors")      # dicts in header order
  header, data = read_raw("m.safetensors")        # parsed JSON and the data bytes

save writes only F32, in the order given, metadata first. load also reads
F16, BF16 and F64 (returned as float32 / float64 arrays) and checks offsets.
"""

import json
import struct

import numpy as np

_LOAD_DTYPES = {"F32": ("<f4", 4), "F64": ("<f8", 8), "F16": ("<f2", 2), "BF16": ("<u2", 2)}


def encode(tensors, metadata=None):
    """Return the bytes of a safetensors file holding tensors (name -> array, any
    float type; stored as F32) and metadata (str -> str), in the order given."""
    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("metadata %r: keys and values must be strings" % (k,))
        header["__metadata__"] = dict(metadata)
    chunks = []
    offset = 0
    for name, arr in tensors.items():
        if name == "__metadata__":
            raise ValueError("tensor name '__metadata__' is reserved")
        a = np.array(arr, dtype="<f4", order="C")  # keeps 0-d shapes
        raw = a.tobytes()
        header[name] = {"dtype": "F32", "shape": [int(d) for d in a.shape],
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * ((-(8 + len(text))) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save(path, tensors, metadata=None):
    """Write tensors and metadata to path (see encode)."""
    blob = encode(tensors, metadata)
    with open(path, "wb") as f:
        f.write(blob)
    return len(blob)


def decode_raw(blob):
    """Split file bytes into (header dict in file order, data section bytes)."""
    if len(blob) < 8:
        raise ValueError("file too short: %d bytes, expected at least 8" % len(blob))
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise ValueError("header length %d exceeds the %d bytes after it" % (n, len(blob) - 8))
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header, blob[8 + n:]


def read_raw(path):
    """(header dict, data section bytes) of the file at path."""
    with open(path, "rb") as f:
        return decode_raw(f.read())


def decode(blob):
    """(tensors, metadata) from file bytes; tensors keep the header order."""
    header, data = decode_raw(blob)
    metadata = header.get("__metadata__", {}) or {}
    for k, v in metadata.items():
        if not isinstance(v, str):
            raise ValueError("metadata %r: expected a string value, found %r" % (k, v))
    tensors = {}
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype")
        if dtype not in _LOAD_DTYPES:
            raise ValueError("tensor %r: unsupported dtype %r" % (name, dtype))
        np_dtype, size = _LOAD_DTYPES[dtype]
        shape = [int(d) for d in info["shape"]]
        if any(d < 0 for d in shape):
            raise ValueError("tensor %r: negative dimension in %r" % (name, shape))
        b, e = (int(x) for x in info["data_offsets"])
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not (0 <= b <= e <= len(data)) or e - b != numel * size:
            raise ValueError("tensor %r: data_offsets [%d, %d] do not fit shape %r of %s in %d bytes"
                             % (name, b, e, shape, dtype, len(data)))
        arr = np.frombuffer(data, dtype=np_dtype, count=numel, offset=b)
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif dtype == "F16":
            arr = arr.astype(np.float32)
        tensors[name] = arr.reshape(shape).copy()
        spans.append((b, e, name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise ValueError("tensors %r and %r overlap" % (n0, n1))
    return tensors, dict(metadata)


def load(path):
    """(tensors, metadata) of the file at path; see decode."""
    with open(path, "rb") as f:
        return decode(f.read())
