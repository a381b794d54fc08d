#!/usr/bin/env python3
"""Writes an IDX image/label pair (MNIST format, gzipped or not) as a folder of PNG files, one sub-folder per class:
the layout users' own images come in, for graft's `{ images = ... }` source. Standard library only (PNG is zlib
plus a few chunks), so it runs on a fresh machine.

    python3 scripts/idx_to_png.py data/fashion-mnist/train-images-idx3-ubyte.gz \
        data/fashion-mnist/train-labels-idx1-ubyte.gz data/fashion-png/train [--limit N] [--classes a,b,...]

With --limit, the first N images of each class are written (so a small training set stays balanced);
--repeat K writes each image K times under different names (a large folder for memory measurements).
"""

import argparse
import gzip
import os
import struct
import sys
import zlib

FASHION = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, kind, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or kind != 0x08:
        sys.exit(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return shape, data[4 + 4 * dims :]


def png(width, height, pixels):
    """A greyscale 8-bit PNG of `pixels` (row-major bytes)."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + pixels[y * width : (y + 1) * width] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images")
    p.add_argument("labels")
    p.add_argument("out")
    p.add_argument("--limit", type=int, default=None, help="at most this many images per class")
    p.add_argument("--repeat", type=int, default=1, help="write each image this many times")
    p.add_argument("--classes", default=",".join(FASHION), help="class folder names, comma-separated, in label order")
    a = p.parse_args()
    (n, h, w), pixels = read_idx(a.images)
    (m,), labels = read_idx(a.labels)
    if n != m:
        sys.exit(f"{n} images but {m} labels")
    names = a.classes.split(",")
    counts = {}
    for i in range(n):
        label = labels[i]
        if a.limit is not None and counts.get(label, 0) >= a.limit:
            continue
        counts[label] = counts.get(label, 0) + 1
        folder = os.path.join(a.out, names[label] if label < len(names) else str(label))
        os.makedirs(folder, exist_ok=True)
        body = png(w, h, pixels[i * h * w : (i + 1) * h * w])
        for r in range(a.repeat):
            suffix = f"-{r}" if a.repeat > 1 else ""
            with open(os.path.join(folder, f"{i:05d}{suffix}.png"), "wb") as f:
                f.write(body)
    print(f"{sum(counts.values()) * a.repeat} images in {len(counts)} class folders under {a.out}")


if __name__ == "__main__":
    main()
