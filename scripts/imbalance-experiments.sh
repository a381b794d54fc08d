#!/usr/bin/env bash
# The class-imbalance experiments of the README.
# 1. UCI Adult (official test split; >50K is 24% of the training rows): the plain model, balanced class weights,
#    random oversampling and a threshold tuned for F1, then 5-fold stratified cross-validation of the balanced
#    model. A Markdown table of test accuracy, macro-F1, minority-class (>50K) recall and ROC-AUC, and the
#    cross-validated mean ± std.
# 2. MNIST with 2% of the training 7s kept (1:47 against each other digit), on the official test set: no remedy,
#    balanced class weights, oversampling and class-balanced batches, and 5-fold cross-validation of the weighted
#    model. A table of test accuracy, macro-F1, and the 7s' recall, precision and average precision.
#
#   bash scripts/fetch-data.sh adult mnist-imbalanced
#   bash scripts/imbalance-experiments.sh      # about three minutes on 2 CPU cores
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
[[ -e data/adult/adult.data ]] || { echo "error: data/adult is missing; run: bash scripts/fetch-data.sh adult" >&2; exit 1; }
[[ -e data/mnist-imbalanced/counts.txt ]] || {
    echo "error: data/mnist-imbalanced is missing; run: bash scripts/fetch-data.sh mnist-imbalanced" >&2
    exit 1
}
cargo build --release --quiet
graft="$repo_root/target/release/graft"
experiments=(adult-mlp adult-mlp-balanced adult-mlp-oversample adult-mlp-threshold)
for e in "${experiments[@]}"; do
    "$graft" train "examples/$e.toml" --out "runs/imbalance/$e" --quiet
done
"$graft" cv examples/adult-mlp-balanced.toml --folds 5 --out runs/imbalance/cv-balanced --quiet
mnist=(mnist-imbalanced mnist-imbalanced-balanced mnist-imbalanced-oversample mnist-imbalanced-balanced-batches)
for e in "${mnist[@]}"; do
    "$graft" train "examples/$e.toml" --out "runs/imbalance/$e" --quiet
done
"$graft" cv examples/mnist-imbalanced-balanced.toml --folds 5 --out runs/imbalance/cv-mnist-balanced --quiet

python3 - "${experiments[@]}" <<'PY'
import json, sys
print("| experiment | test accuracy | macro-F1 | >50K recall | ROC-AUC |")
print("|---|---|---|---|---|")
def row(name, m):
    classes = m.get("classes") or []
    minority = classes.index(">50K") if ">50K" in classes else 1
    t = m["test"]
    return f"| {name} | {t['accuracy']:.4f} | {t['f1_macro']:.4f} | {t['recall_per_class'][minority]:.4f} | {t['roc_auc']:.4f} |"
for e in sys.argv[1:]:
    print(row(f"`{e}.toml`", json.load(open(f"runs/imbalance/{e}/metrics.json"))))
cv = json.load(open("runs/imbalance/cv-balanced/cv.json"))
minority = [f["recall_per_class"][1] for f in cv["folds"]]
mean_r = sum(minority) / len(minority)
std_r = (sum((r - mean_r) ** 2 for r in minority) / (len(minority) - 1)) ** 0.5
m, s = cv["mean"], cv["std"]
print(f"| `graft cv --folds 5` on the balanced model (mean ± std) | {m['accuracy']:.4f} ± {s['accuracy']:.4f} | "
      f"{m['f1_macro']:.4f} ± {s['f1_macro']:.4f} | {mean_r:.4f} ± {std_r:.4f} | {m['roc_auc']:.4f} ± {s['roc_auc']:.4f} |")
PY

python3 - "${mnist[@]}" <<'PY'
import json, statistics, sys
print()
print("| experiment (MNIST, 2% of the 7s) | test accuracy | macro-F1 | 7 recall | 7 precision | 7 average precision |")
print("|---|---|---|---|---|---|")
def sevens(t):
    ap = next(c["average_precision"] for c in t["curves"]["pr"] if c["class"] == 7)
    return t["recall_per_class"][7], t["precision_per_class"][7], ap
for e in sys.argv[1:]:
    t = json.load(open(f"runs/imbalance/{e}/metrics.json"))["test"]
    r, p, ap = sevens(t)
    print(f"| `{e}.toml` | {t['accuracy']:.4f} | {t['f1_macro']:.4f} | {r:.4f} | {p:.4f} | {ap:.4f} |")
cv = json.load(open("runs/imbalance/cv-mnist-balanced/cv.json"))
def ms(values):
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
folds = cv["folds"]
print(f"| `graft cv --folds 5` on the weighted model (mean ± std) | {ms([f['accuracy'] for f in folds])} | "
      f"{ms([f['f1_macro'] for f in folds])} | {ms([f['recall_per_class'][7] for f in folds])} | "
      f"{ms([f['precision_per_class'][7] for f in folds])} | |")
PY
