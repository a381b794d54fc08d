#!/usr/bin/env bash
# Runs the transfer-learning experiments of the README on the fine-food reviews (and SpamAssassin for the
# multi-task model) and prints their table: test accuracy and macro-F1 per task, wall time of `graft train`
# (data preparation, feature caching and every epoch included), and the time `graft predict` takes per 1,000
# texts, measured on the 1,000 fine-food test reviews (one forward pass serves both heads of the multi-task model).
#
#   bash scripts/fetch-data.sh foods spam minilm word2vec
#   bash scripts/transfer-experiments.sh            # every experiment, about an hour on 2 CPU cores
#   bash scripts/transfer-experiments.sh foods-lstm # only some
#
# Runs go to runs/<experiment>/; a run whose metrics.json exists is not trained again (delete it to rerun), so an
# interrupted sweep picks up where it stopped.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

all=(foods-lstm foods-lstm-w2v foods-minilm-features foods-minilm-finetune spam-minilm-finetune multitask)
if [[ $# -gt 0 ]]; then experiments=("$@"); else experiments=("${all[@]}"); fi

for needed in data/foods/test.csv data/minilm/config.json; do
    [[ -e "$needed" ]] || { echo "error: $needed is missing; run: bash scripts/fetch-data.sh foods spam minilm word2vec" >&2; exit 1; }
done

cargo build --release --quiet
graft="$repo_root/target/release/graft"
mkdir -p runs
texts="runs/foods-test-reviews.txt"
python3 - "$texts" <<'PY'
import csv, sys
with open("data/foods/test.csv", newline="", encoding="utf-8") as f, open(sys.argv[1], "w", encoding="utf-8") as out:
    for row in csv.DictReader(f):
        out.write(row["review"].replace("\n", " ") + "\n")
PY

now() { date +%s.%N; }
for e in "${experiments[@]}"; do
    [[ -f "examples/$e.toml" ]] || { echo "error: no examples/$e.toml" >&2; exit 1; }
    out="runs/$e"
    if [[ ! -f "$out/metrics.json" ]]; then
        echo "training $e ..." >&2
        start=$(now)
        "$graft" train "examples/$e.toml" --out "$out" --quiet
        awk -v a="$(now)" -v b="$start" 'BEGIN { print a - b }' > "$out/train_seconds.txt"
    fi
    start=$(now)
    "$graft" predict --model "$out" --input "$texts" --output "$out/foods-test-predictions.jsonl" 2>/dev/null
    awk -v a="$(now)" -v b="$start" 'BEGIN { print a - b }' > "$out/predict_seconds.txt"
done

python3 - "${experiments[@]}" <<'PY'
import json, sys
print("| experiment | task | test accuracy | test macro-F1 | training time | inference per 1,000 texts |")
print("|---|---|---|---|---|---|")
for e in sys.argv[1:]:
    run = f"runs/{e}"
    metrics = json.load(open(f"{run}/metrics.json"))
    train = float(open(f"{run}/train_seconds.txt").read())
    predict = float(open(f"{run}/predict_seconds.txt").read())
    test = metrics["test"]
    tasks = {k: v for k, v in test.items() if isinstance(v, dict)} or {"sentiment" if "spam" not in e else "spam": test}
    for i, (task, m) in enumerate(tasks.items()):
        name = f"`{e}.toml`" if i == 0 else ""
        times = f"{train:.0f} s | {predict:.1f} s" if i == 0 else "(one run) | (both heads)"
        print(f"| {name} | {task} | {m['accuracy']:.4f} | {m['f1_macro']:.4f} | {times} |")
PY
