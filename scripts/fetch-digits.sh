#!/usr/bin/env bash
# Re-creates crates/graft/data/digits.csv.gz, the built-in 8x8 digits set that graft embeds.
#
# Provenance: the file is copied verbatim from the scikit-learn 1.9.1 wheel
# (sklearn/datasets/data/digits.csv.gz; scikit-learn is BSD-3-Clause, the data are the UCI
# "Optical Recognition of Handwritten Digits" test set as shipped by scikit-learn).
# 1,797 rows; each row is 64 pixel values 0..16 followed by the label 0..9.
#
# Idempotent: if the file is already present with the pinned checksum, nothing is downloaded.
# Needs python3 with pip (for `pip download`) and network access to the Python package index.
set -euo pipefail

SKLEARN_VERSION="1.9.1"
# Measured on the file inside the wheel above; the data file is identical in every platform's wheel,
# but we pin one platform so the download is the same wherever the script runs.
PINNED_SHA256="09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
WHEEL_PLATFORM="manylinux_2_28_x86_64"
WHEEL_PYTHON="3.11"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo_root/crates/graft/data/digits.csv.gz"

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

check() {
    local actual
    actual="$(sha256_of "$1")"
    echo "sha256 $actual  $1"
    if [[ "$actual" != "$PINNED_SHA256" ]]; then
        echo "error: expected sha256 $PINNED_SHA256" >&2
        return 1
    fi
}

if [[ -f "$dest" ]] && [[ "$(sha256_of "$dest")" == "$PINNED_SHA256" ]]; then
    echo "already present: $dest"
    check "$dest"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m pip download --no-deps --only-binary=:all: \
    --platform "$WHEEL_PLATFORM" --python-version "$WHEEL_PYTHON" \
    "scikit-learn==$SKLEARN_VERSION" -d "$work"

wheel="$(ls "$work"/scikit_learn-"$SKLEARN_VERSION"-*.whl | head -n 1)"
python3 - "$wheel" "$work/digits.csv.gz" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    with open(sys.argv[2], "wb") as out:
        out.write(z.read("sklearn/datasets/data/digits.csv.gz"))
EOF

check "$work/digits.csv.gz"
mkdir -p "$(dirname "$dest")"
# Copy then rename, so an interrupted run never leaves a truncated file behind.
cp "$work/digits.csv.gz" "$dest.tmp"
mv "$dest.tmp" "$dest"
echo "wrote $dest"
