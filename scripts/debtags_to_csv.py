#!/usr/bin/env python3
"""A multi-label text classification data set from the Debian package index: short description -> debtags.

Usage: debtags_to_csv.py count DUMP
       debtags_to_csv.py build DUMP OUT_DIR
       debtags_to_csv.py check DIR

DUMP is the output of `apt-cache dumpavail`: one deb822 stanza per available package, stanzas
separated by blank lines, fields `Name: value` continued on lines that start with a space or a tab.
Called by scripts/fetch-data.sh (target debtags). Standard library only (Python 3.11).

count  prints how many distinct package names in DUMP have a Tag field.
build  writes OUT_DIR/{train,test}.csv and OUT_DIR/labels.txt (OUT_DIR must exist):
         - packages: those with a Tag field, one per name (the first stanza of a name is kept);
         - tags: the Tag field split on commas, without the facets special:: and suite:: and without
           any tag containing TODO;
         - split: test = packages whose sha256(name) starts with a byte < 51 (about 20%), the rest train;
         - text: the one-line short description (the first line of Description); the package name is
           left out, as it gives many tags away; rows with an empty description are dropped;
         - labels: the 20 most frequent tags over the train rows (ties broken by name), written to
           labels.txt one a line, most frequent first. They are counted on train only, so that the
           test rows play no part in choosing them;
         - tags column: the row's tags that are labels, in labels.txt order, joined with `|` (empty
           when it has none);
         - rows sorted by package name; header `text,tags`; UTF-8; fields quoted by Python's csv
           module as RFC 4180 asks (a field with a comma, a quote or a line break is quoted, quotes
           doubled); records end with "\\n".
check  checks DIR as fetch-data.sh wants it (header `text,tags` in both CSVs, at least MIN_TRAIN_ROWS
       train rows, NUM_LABELS labels, every tag a label) and prints the row counts, the labels with
       their train and test frequencies, and the sha256 of both CSVs. Exits 1 when a check fails.
"""

import csv
import hashlib
import os
import sys
from collections import Counter

NUM_LABELS = 20
# sha256(name)[0] < TEST_BYTE_BELOW puts a package in test: 51/256 = 19.9%.
TEST_BYTE_BELOW = 51
SKIPPED_FACETS = ("special::", "suite::")
HEADER = ["text", "tags"]
MIN_TRAIN_ROWS = 15000


def stanzas(path):
    """Yields each stanza of a deb822 file as {field name: value}, continuation lines joined by "\\n"."""
    fields, name = {}, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if fields:
                    yield fields
                fields, name = {}, None
            elif line[0] in " \t":
                if name is not None:
                    fields[name] += "\n" + line
            elif ":" in line:
                name, value = line.split(":", 1)
                fields[name] = value.strip()
            else:
                name = None
    if fields:
        yield fields


def tagged_packages(path):
    """{package name: (short description, [tags kept])} for the first stanza of each name with a Tag field."""
    packages = {}
    for fields in stanzas(path):
        name = fields.get("Package", "").strip()
        if not name or "Tag" not in fields or name in packages:
            continue
        tags = [t.strip() for t in fields["Tag"].replace("\n", " ").split(",")]
        tags = [t for t in tags if t and not t.startswith(SKIPPED_FACETS) and "TODO" not in t]
        description = fields.get("Description", "").split("\n", 1)[0].strip()
        packages[name] = (description, tags)
    return packages


def is_test(name):
    return hashlib.sha256(name.encode("utf-8")).digest()[0] < TEST_BYTE_BELOW


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def count(dump):
    print(len(tagged_packages(dump)))


def build(dump, out_dir):
    packages = tagged_packages(dump)
    rows = {"train": [], "test": []}
    for name in sorted(packages):
        description, tags = packages[name]
        if description:
            rows["test" if is_test(name) else "train"].append((name, description, tags))

    frequency = Counter(t for _, _, tags in rows["train"] for t in set(tags))
    labels = sorted(frequency, key=lambda t: (-frequency[t], t))[:NUM_LABELS]
    if len(labels) < NUM_LABELS:
        sys.exit(f"error: only {len(labels)} distinct tags in the train rows, expected at least {NUM_LABELS}")
    position = {t: i for i, t in enumerate(labels)}

    with open(os.path.join(out_dir, "labels.txt"), "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in labels)
    for split, split_rows in rows.items():
        with open(os.path.join(out_dir, f"{split}.csv"), "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(HEADER)
            for _, description, tags in split_rows:
                kept = sorted({t for t in tags if t in position}, key=position.get)
                writer.writerow([description, "|".join(kept)])
    dropped = len(packages) - len(rows["train"]) - len(rows["test"])
    print(f"{len(packages)} tagged packages, {dropped} dropped for an empty description: "
          f"train {len(rows['train'])}, test {len(rows['test'])}")


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, strict=True))


def check(folder):
    try:
        with open(os.path.join(folder, "labels.txt"), encoding="utf-8") as f:
            labels = f.read().split("\n")
        if labels[-1] != "":
            raise ValueError("labels.txt does not end with a newline")
        labels.pop()
        if len(labels) != NUM_LABELS or len(set(labels)) != NUM_LABELS or "" in labels:
            raise ValueError(f"labels.txt: {len(labels)} lines, expected {NUM_LABELS} distinct labels")
        tables = {split: read_csv(os.path.join(folder, f"{split}.csv")) for split in ("train", "test")}
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as e:
        sys.exit(f"error: {folder}: {e}")

    frequency = {}
    for split, table in tables.items():
        path = os.path.join(folder, f"{split}.csv")
        if not table or table[0] != HEADER:
            sys.exit(f"error: {path}: header {table[0] if table else None}, expected {HEADER}")
        counts = Counter()
        for number, row in enumerate(table[1:], 2):
            if len(row) != 2 or not row[0]:
                sys.exit(f"error: {path}: record {number} is {row}, expected a non-empty text and tags")
            tags = row[1].split("|") if row[1] else []
            unknown = [t for t in tags if t not in labels]
            if unknown:
                sys.exit(f"error: {path}: record {number} has tags {unknown} that are not in labels.txt")
            counts.update(tags)
        frequency[split] = counts
    rows = {split: len(table) - 1 for split, table in tables.items()}
    if rows["train"] < MIN_TRAIN_ROWS:
        sys.exit(f"error: {folder}/train.csv: {rows['train']} rows, expected at least {MIN_TRAIN_ROWS}")

    unlabelled = {split: sum(1 for row in table[1:] if not row[1]) for split, table in tables.items()}
    for split in ("train", "test"):
        print(f"rows       {split}.csv: {rows[split]} ({unlabelled[split]} with none of the labels)")
    print(f"labels     (label: train rows, test rows)")
    for label in labels:
        print(f"  {label:32} {frequency['train'][label]:6} {frequency['test'][label]:6}")
    for split in ("train", "test"):
        print(f"sha256     {split}.csv {sha256_file(os.path.join(folder, f'{split}.csv'))}")


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "count":
        count(args[1])
    elif len(args) == 3 and args[0] == "build":
        build(args[1], args[2])
    elif len(args) == 2 and args[0] == "check":
        check(args[1])
    else:
        sys.exit(f"usage: {sys.argv[0]} count DUMP | build DUMP OUT_DIR | check DIR")


if __name__ == "__main__":
    main()
