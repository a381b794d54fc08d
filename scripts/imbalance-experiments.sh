#!/usr/bin/env bash
# The class-imbalance experiments of the README on UCI Adult (official test split; >50K is 24% of the training
# rows): the plain model, balanced class weights, random oversampling and a threshold tuned for F1, then 5-fold
# stratified cross-validation of the balanced model. Prints a Markdown table of test accuracy, macro-F1,
# minority-class (>50K) recall and ROC-AUC, and the cross-validated mean ± std.
#
#   bash scripts/fetch-data.sh adult
#   bash scripts/imbalance-experiments.sh      # under a minute on 2 CPU cores
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
[[ -e data/adult/adult.data ]] || { echo "error: data/adult is missing; run: bash scripts/fetch-data.sh adult" >&2; exit 1; }
cargo build --release --quiet
graft="$repo_root/target/release/graft"
experiments=(adult-mlp adult-mlp-balanced adult-mlp-oversample adult-mlp-threshold)
for e in "${experiments[@]}"; do
    "$graft" train "examples/$e.toml" --out "runs/imbalance/$e" --quiet
done
"$graft" cv examples/adult-mlp-balanced.toml --folds 5 --out runs/imbalance/cv-balanced --quiet

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
