#!/usr/bin/env bash
# The pretrained-CNN experiment of the README: Fashion-MNIST as folders of PNG files, trained from scratch (a small
# CNN on the 28×28 grey images), on frozen EfficientNet-Lite0 features (images read as RGB at 64×64 and at the
# model's own 224×224), and by fine-tuning EfficientNet-Lite0's top blocks (64×64), at 100, 1,000 (and 5,000)
# training images (balanced), each tested on the same 2,000 official test images (the first 200 of each class; the
# full 10,000 at 224×224 would take the feature pass alone past 20 minutes on 2 cores). Prints one table: test
# accuracy, macro-F1, epochs run and the wall time of `graft train` (data reading, feature caching, every epoch and
# the test pass included).
#
#   bash scripts/fetch-data.sh fashion-mnist efficientnet-lite0
#   bash scripts/image-transfer-experiments.sh                 # 100 and 1,000 images: about 20 minutes on 2 cores
#   bash scripts/image-transfer-experiments.sh 5k              # the 5,000-image size: over an hour
#   GRAFT_BIN=path/to/graft bash scripts/image-transfer-experiments.sh   # a built binary instead of cargo build
#
# Runs go to runs/fashion-<strategy>-<size>/; a run whose metrics.json exists is not trained again.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if [[ $# -gt 0 ]]; then sizes=("$@"); else sizes=(100 1k); fi
strategies=(scratch effnet-features effnet-features-224 effnet-finetune)

for needed in data/fashion-mnist/t10k-images-idx3-ubyte.gz data/efficientnet-lite0; do
    [[ -e "$needed" ]] || { echo "error: $needed is missing; run: bash scripts/fetch-data.sh fashion-mnist efficientnet-lite0" >&2; exit 1; }
done

images() { # images SPLIT OUT [--limit N]
    local split="$1" out="$2"
    shift 2
    [[ -d "$out" ]] && return 0
    python3 scripts/idx_to_png.py "data/fashion-mnist/$split-images-idx3-ubyte.gz" \
        "data/fashion-mnist/$split-labels-idx1-ubyte.gz" "$out.tmp" "$@"
    mv "$out.tmp" "$out"
}
images t10k data/fashion-png/test-2k --limit 200
for size in "${sizes[@]}"; do
    case "$size" in
        100) images train data/fashion-png/train-100 --limit 10 ;;
        1k) images train data/fashion-png/train-1k --limit 100 ;;
        5k) images train data/fashion-png/train-5k --limit 500 ;;
        *) echo "error: unknown size '$size' (100, 1k or 5k)" >&2; exit 2 ;;
    esac
done

[[ -n "${GRAFT_BIN:-}" ]] || cargo build --release --quiet
graft="${GRAFT_BIN:-$repo_root/target/release/graft}"
mkdir -p runs
now() { date +%s.%N; }
for size in "${sizes[@]}"; do
    for s in "${strategies[@]}"; do
        out="runs/fashion-$s-$size"
        [[ -f "$out/metrics.json" ]] && continue
        exp="examples/fashion-$s-$size.toml"
        # effnet-features-224: the 64×64 example at the backbone's own size.
        extra=""
        [[ "$s" == *-224 ]] && extra='s#size = \[64, 64\]#size = [224, 224]#g'
        sed "s#train-1k#train-$size#; s#fashion-png/test\"#fashion-png/test-2k\"#; $extra" \
            "examples/fashion-${s%-224}.toml" > "$exp"
        echo "training $out ..." >&2
        start=$(now)
        "$graft" train "$exp" --out "$out" --overwrite --quiet
        rm -f "$exp"
        awk -v a="$(now)" -v b="$start" 'BEGIN { print a - b }' > "$out/train_seconds.txt"
    done
done

python3 - "${sizes[@]}" <<'PY'
import json, sys
names = {"scratch": "small CNN from scratch (28×28 grey)",
         "effnet-features": "EfficientNet-Lite0 features, frozen and cached (64×64)",
         "effnet-features-224": "EfficientNet-Lite0 features, frozen and cached (224×224)",
         "effnet-finetune": "EfficientNet-Lite0, top blocks fine-tuned (64×64)"}
print("| training images | strategy | test accuracy | test macro-F1 | epochs | training time |")
print("|---|---|---|---|---|---|")
for size in sys.argv[1:]:
    for s, name in names.items():
        run = f"runs/fashion-{s}-{size}"
        m = json.load(open(f"{run}/metrics.json"))
        seconds = float(open(f"{run}/train_seconds.txt").read())
        epochs = len(m["history"]) if "history" in m else m.get("epochs", "?")
        print(f"| {size} | {name} | {m['test']['accuracy']:.4f} | {m['test']['f1_macro']:.4f} | {epochs} | {seconds:.0f} s |")
PY
