#!/usr/bin/env python3
"""Writes the Amazon fine-food reviews of the R package modeldata as two CSV files.

Usage: foods_to_csv.py DATA_DIR OUT_DIR

DATA_DIR is modeldata's data/ folder (from the Debian package r-cran-modeldata: it holds
Rdata.rdx and Rdata.rdb); OUT_DIR must exist. Writes OUT_DIR/train.csv from the R object
`training_data` and OUT_DIR/test.csv from `testing_data` ("small_fine_foods", MIT): UTF-8, header
`review,score`, the review text then its label (`great` or `other`), one record per line. Called by
scripts/fetch-data.sh, which checks the row counts and the sha256 of both files.

Needs the pure-Python package `rdata` (which parses R serialization) and its dependencies on the
import path; R itself is not needed.

The two files of an R lazy-load database, as R writes them (R's src/main/serialize.c: R_compress3 and
R_decompress3):

  Rdata.rdx  gzip'd R serialization of a list: `variables` maps each object name to the
             (offset, length) of its bytes in Rdata.rdb; `compressed` says how they were compressed
             (3: each chunk names its own method, see below).
  Rdata.rdb  the chunks, one per object. With compressed = 3 a chunk is a 4-byte big-endian length of
             the uncompressed data, one type byte ('Z' xz/LZMA2, '2' bzip2, '1' zlib, '0' stored as
             is), then the data: the object in R serialization.
"""

import bz2
import csv
import gzip
import lzma
import os
import struct
import sys
import warnings
import zlib

import rdata

# R object name in the database -> CSV file written.
SPLITS = {"training_data": "train.csv", "testing_data": "test.csv"}
# The label's R factor levels, in order.
LEVELS = ["great", "other"]

# For 'Z' chunks: R writes raw LZMA2 (no .xz container), so the decoder cannot read the dictionary
# size from a header and must be given one at least as large as the encoder's. 64 MiB is the largest
# any xz preset uses (preset 9), so it covers whatever preset R chose.
LZMA2_DICT_SIZE = 64 << 20


def fail(message):
    sys.exit(f"error: {message}")


def parse_r(serialized):
    """R serialization bytes -> Python objects (a data frame becomes a pandas DataFrame)."""
    with warnings.catch_warnings():
        # tibbles (class tbl_df/tbl) have no converter of their own; rdata warns and falls back to
        # their data.frame class, which is exactly what is wanted here.
        warnings.filterwarnings("ignore", message=r'Missing constructor for R class "tbl', category=UserWarning)
        # The bytes are bare serialization, as in an .rds file: say so, or rdata warns while guessing.
        parsed = rdata.parser.parse_data(serialized, extension=".rds")
        return rdata.conversion.convert(parsed)


def read_index(rdx_path):
    """Rdata.rdx -> ({object name: (offset, length)}, compressed)."""
    with open(rdx_path, "rb") as f:
        index = parse_r(gzip.decompress(f.read()))
    variables = {str(name): (int(where[0]), int(where[1])) for name, where in index["variables"].items()}
    compressed = int(index["compressed"][0])
    return variables, compressed


def decompress_chunk(chunk, name):
    """One Rdata.rdb chunk (compressed = 3 layout) -> the object's R serialization bytes."""
    if len(chunk) < 5:
        fail(f"{name}: chunk of {len(chunk)} bytes is too short")
    (size,) = struct.unpack(">I", chunk[:4])
    kind, payload = chunk[4:5], chunk[5:]
    if kind == b"Z":
        filters = [{"id": lzma.FILTER_LZMA2, "dict_size": LZMA2_DICT_SIZE}]
        data = lzma.decompress(payload, format=lzma.FORMAT_RAW, filters=filters)
    elif kind == b"2":
        data = bz2.decompress(payload)
    elif kind == b"1":
        data = zlib.decompress(payload)
    elif kind == b"0":
        data = payload
    else:
        fail(f"{name}: unknown compression type byte {kind!r}")
    if len(data) != size:
        fail(f"{name}: decompressed to {len(data)} bytes, the chunk header says {size}")
    return data


def one_line(text):
    """The review with every line break (CR LF, CR or LF) replaced by a space, so a record is one line."""
    return text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def main():
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} DATA_DIR OUT_DIR")
    data_dir, out_dir = sys.argv[1:]

    variables, compressed = read_index(os.path.join(data_dir, "Rdata.rdx"))
    if compressed != 3:
        fail(f"Rdata.rdx: compressed = {compressed}, this reader handles 3 (a type byte per chunk)")
    with open(os.path.join(data_dir, "Rdata.rdb"), "rb") as f:
        rdb = f.read()

    for name, file_name in SPLITS.items():
        if name not in variables:
            fail(f"Rdata.rdx has no object {name}")
        offset, length = variables[name]
        frame = parse_r(decompress_chunk(rdb[offset : offset + length], name))

        # Expected shape: columns product, review, score; score a factor with levels great/other.
        columns = [str(c) for c in frame.columns]
        if columns != ["product", "review", "score"]:
            fail(f"{name}: columns {columns}, expected product, review, score")
        levels = [str(level) for level in frame["score"].cat.categories]
        if levels != LEVELS:
            fail(f"{name}: score levels {levels}, expected {LEVELS}")
        if frame[["review", "score"]].isna().any().any():
            fail(f"{name}: missing values in review or score")

        # Rows in the order R stores them. QUOTE_MINIMAL quotes a field only when it holds a comma,
        # a quote (written twice) or a line break; "\n" ends each record.
        path = os.path.join(out_dir, file_name)
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["review", "score"])
            for review, score in zip(frame["review"], frame["score"]):
                writer.writerow([one_line(str(review)), str(score)])
        counts = frame["score"].value_counts()
        print(f"wrote {file_name}: {len(frame)} rows ({', '.join(f'{l} {counts[l]}' for l in LEVELS)})")


if __name__ == "__main__":
    main()
