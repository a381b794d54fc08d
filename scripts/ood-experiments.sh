#!/usr/bin/env bash
# The trust experiments of the README: an MLP trained on MNIST (Fashion-MNIST as out-of-distribution data) and one
# trained on Fashion-MNIST (MNIST as OOD), each also against uniform-noise images. Prints, per model and OOD set,
# AUROC and FPR at 95% TPR of every score (`graft ood`), then test accuracy with and without Monte-Carlo dropout
# (20 passes) and the expected calibration error before and after temperature scaling, also for an MNIST model
# trained with label smoothing 0.1.
#
#   bash scripts/fetch-data.sh mnist fashion-mnist
#   bash scripts/ood-experiments.sh        # a few minutes on 2 CPU cores
#
# Runs go to runs/{mnist,fashion}-ood/; an existing run is reused (delete it to retrain).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
for d in mnist fashion-mnist; do
    [[ -e "data/$d/t10k-images-idx3-ubyte.gz" ]] || {
        echo "error: data/$d is missing; run: bash scripts/fetch-data.sh mnist fashion-mnist" >&2
        exit 1
    }
done
cargo build --release --quiet
graft="$repo_root/target/release/graft"
mkdir -p runs/ood

# 2,000 images of uniform noise in [0, 1] (the models' input scale), as a float32 .npy.
python3 - runs/ood/noise.npy <<'PY'
import random, struct, sys
random.seed(0)
n = 2000
header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, 1, 28, 28), }" % n
header += " " * (63 - (10 + len(header)) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(struct.pack("<%df" % (n * 784), *(random.random() for _ in range(n * 784))))
PY

for model in mnist fashion mnist-smooth; do
    [[ -f "runs/$model-ood/metrics.json" ]] || "$graft" train "examples/$model-ood.toml" --out "runs/$model-ood" --quiet
done
test_images() { echo "data/$1/t10k-images-idx3-ubyte.gz"; }
"$graft" ood --model runs/mnist-ood --in-dist "$(test_images mnist)" --ood "$(test_images fashion-mnist)" > runs/ood/mnist-vs-fashion.json
"$graft" ood --model runs/mnist-ood --in-dist "$(test_images mnist)" --ood runs/ood/noise.npy > runs/ood/mnist-vs-noise.json
"$graft" ood --model runs/fashion-ood --in-dist "$(test_images fashion-mnist)" --ood "$(test_images mnist)" > runs/ood/fashion-vs-mnist.json
"$graft" ood --model runs/fashion-ood --in-dist "$(test_images fashion-mnist)" --ood runs/ood/noise.npy > runs/ood/fashion-vs-noise.json
for model in mnist fashion mnist-smooth; do
    d=$([[ $model == fashion ]] && echo fashion-mnist || echo mnist)
    "$graft" predict --model "runs/$model-ood" --input "$(test_images $d)" --output "runs/ood/$model-mc.jsonl" \
        --mc-dropout 20 2>/dev/null
done

python3 - <<'PY'
import gzip, json
scores = ["max_softmax", "entropy", "energy", "mc_mutual_information", "mahalanobis"]
print("| trained on | OOD set | " + " | ".join(f"{s} AUROC / FPR@95" for s in scores) + " |")
print("|---|---|" + "---|" * len(scores))
for name, model, ood in [("mnist-vs-fashion", "MNIST", "Fashion-MNIST"), ("mnist-vs-noise", "MNIST", "uniform noise"),
                         ("fashion-vs-mnist", "Fashion-MNIST", "MNIST"), ("fashion-vs-noise", "Fashion-MNIST", "uniform noise")]:
    r = json.load(open(f"runs/ood/{name}.json"))["scores"]
    cells = [f"{r[s]['auroc']:.4f} / {r[s]['fpr_at_95_tpr']:.4f}" if s in r else "—" for s in scores]
    print(f"| {model} | {ood} | " + " | ".join(cells) + " |")
print()
print("| trained on | test accuracy | with MC dropout (20 passes) | test ECE | ECE after temperature scaling | temperature |")
print("|---|---|---|---|---|---|")
for model, data in [("mnist", "mnist"), ("fashion", "fashion-mnist"), ("mnist-smooth", "mnist")]:
    m = json.load(open(f"runs/{model}-ood/metrics.json"))
    with gzip.open(f"data/{data}/t10k-labels-idx1-ubyte.gz") as f:
        labels = list(f.read()[8:])
    mc = [json.loads(l)["class_index"] for l in open(f"runs/ood/{model}-mc.jsonl")]
    mc_acc = sum(int(p == y) for p, y in zip(mc, labels)) / len(labels)
    c = m["calibration"]["model"]
    name = data + (" (label smoothing 0.1)" if "smooth" in model else "")
    print(f"| {name} | {m['test']['accuracy']:.4f} | {mc_acc:.4f} | {c['test_ece_before']:.4f} | "
          f"{c['test_ece_after']:.4f} | {c['temperature']:.3f} |")
PY
