#!/usr/bin/python3
"""
gen_image_seeds.py - write the image fuzzer's seed corpus: tiny valid files
of every format and flavour image_decode accepts, each well under 2 KB.

    /usr/bin/python3 tests/fuzz/gen_image_seeds.py tests/fuzz/corpus/image

Needs Debian's python3-pil. The files are committed; run this again only to
change them. Patterns are drawn, not random, so a rerun writes the same bytes
(for a given PIL version).
"""
import io
import os
import struct
import sys
import zlib

from PIL import Image


def pattern(w, h, mode):
    """A gradient with a square in it: edges for the JPEG coder, several colours."""
    im = Image.new(mode, (w, h))
    px = im.load()
    for y in range(h):
        for x in range(w):
            v = (x * 255 // max(w - 1, 1) + y * 7) & 255
            inside = w // 4 <= x < 3 * w // 4 and h // 4 <= y < 3 * h // 4
            if mode == "L":
                px[x, y] = 255 - v if inside else v
            elif mode == "I;16":
                px[x, y] = (v * 257 + x) & 0xFFFF
            elif mode == "LA":
                px[x, y] = (v, 255 - y * 8 & 255)
            elif mode == "RGBA":
                px[x, y] = (v, 255 - v, 128 if inside else 0, x * 16 & 255)
            else:
                px[x, y] = (v, 255 - v, 200 if inside else 30)
    return im


def save(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def pnm(magic, w, h, maxval, samples):
    """A binary PGM/PPM by hand: PIL writes no 16-bit PPM and no odd maxval."""
    head = b"%s\n# fuzz seed\n%d %d\n%d\n" % (magic, w, h, maxval)
    if maxval > 255:
        body = b"".join(s.to_bytes(2, "big") for s in samples)
    else:
        body = bytes(samples)
    return head + body


def png_adam7(w, h):
    """An interlaced 8-bit RGB PNG by hand: PIL does not write Adam7."""
    src = pattern(w, h, "RGB").load()
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
              (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        for y in range(y0, h, dy):
            row = [src[x, y] for x in range(x0, w, dx)]
            if row:
                raw += b"\0" + bytes(c for px in row for c in px)

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main(out):
    os.makedirs(out, exist_ok=True)
    seeds = {
        "grey8.png": save(pattern(8, 6, "L"), "PNG"),
        "rgb.png": save(pattern(7, 5, "RGB"), "PNG"),
        "palette.png": save(pattern(8, 8, "RGB").quantize(colors=6), "PNG"),
        "grey16.png": save(pattern(6, 4, "I;16"), "PNG"),
        "grey_alpha.png": save(pattern(5, 5, "LA"), "PNG"),
        "rgba.png": save(pattern(4, 6, "RGBA"), "PNG"),
        "interlaced.png": png_adam7(9, 7),
        "grey1bit.png": save(pattern(11, 3, "L").convert("1"), "PNG"),
        "baseline.jpg": save(pattern(16, 16, "RGB"), "JPEG", quality=60),
        "grey.jpg": save(pattern(9, 7, "L"), "JPEG", quality=50),
        "progressive.jpg": save(pattern(16, 8, "RGB"), "JPEG", quality=60,
                                progressive=True),
        "subsampled.jpg": save(pattern(17, 9, "RGB"), "JPEG", quality=40,
                               subsampling=2),
        "rgb24.bmp": save(pattern(5, 3, "RGB"), "BMP"),
        "grey8.bmp": save(pattern(6, 4, "L"), "BMP"),
        "palette.bmp": save(pattern(6, 6, "RGB").quantize(colors=4), "BMP"),
        "still.gif": save(pattern(8, 5, "RGB").quantize(colors=8), "GIF"),
        "grey.pgm": pnm(b"P5", 4, 3, 255, [(i * 21) & 255 for i in range(12)]),
        "odd_maxval.pgm": pnm(b"P5", 3, 3, 100, [i * 11 for i in range(9)]),
        "grey16.pgm": pnm(b"P5", 3, 2, 65535, [i * 9000 for i in range(6)]),
        "rgb.ppm": pnm(b"P6", 3, 2, 255, [(i * 13) & 255 for i in range(18)]),
        "rgb16.ppm": pnm(b"P6", 2, 2, 1023, [i * 80 for i in range(12)]),
    }
    # an animated GIF: only the first frame is decoded
    frames = [pattern(6, 6, "RGB").quantize(colors=4),
              pattern(6, 6, "L").convert("RGB").quantize(colors=4)]
    b = io.BytesIO()
    frames[0].save(b, "GIF", save_all=True, append_images=frames[1:], duration=10)
    seeds["animated.gif"] = b.getvalue()
    for name, data in seeds.items():
        assert len(data) < 2048, (name, len(data))
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        print("%-18s %5d bytes" % (name, len(data)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus/image")
