#!/usr/bin/env bash
# The evaluation grid of `[train] transfer = "auto"`: two text tasks (Amazon fine-food reviews, great vs other;
# SpamAssassin, ham vs spam), three training-set sizes each, every fixed strategy (features, fine_tune_top,
# fine_tune_all) and auto, on all-MiniLM-L6-v2 with texts cut to 128 tokens. Prints test accuracy, macro-F1 and
# training time per cell, auto's choice and evidence, and whether auto is within 1 point of the best fixed strategy.
#
#   bash scripts/fetch-data.sh foods spam minilm
#   bash scripts/transfer-auto-experiments.sh                 # sizes 50, 500 and all: about 1.5 hours on 2 CPU cores
#   bash scripts/transfer-auto-experiments.sh 50 500          # only some sizes ("all": the whole training pool)
#
# The training sets are stratified draws (seed 42) from the fine-food training file and from SpamAssassin minus a
# fixed stratified test set of 1,000 e-mails; every cell tests on the same 1,000 texts of its task (the official
# fine-food test file). Each size holds out 15% of its examples for validation. Runs go to
# runs/transfer-grid/<task>-<size>-<strategy>/; a run whose metrics.json exists is not trained again.
#
# auto's run *is* the run of the strategy it chooses (the same resolved settings and seed: the CLI test
# `transfer_auto_trains_exactly_the_strategy_it_names` checks that the two give identical weights), so auto's cell
# takes its decision from `graft train --plan` (measured afresh, its time added) and the chosen strategy's run
# instead of training it twice. GRAFT_BIN overrides the binary.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
if [[ $# -gt 0 ]]; then sizes=("$@"); else sizes=(50 500 all); fi
for needed in data/foods/test.csv data/spam/spam-1 data/minilm/config.json; do
    [[ -e "$needed" ]] || { echo "error: $needed is missing; run: bash scripts/fetch-data.sh foods spam minilm" >&2; exit 1; }
done
if [[ -z "${GRAFT_BIN:-}" ]]; then
    cargo build --release --quiet
    GRAFT_BIN="$repo_root/target/release/graft"
fi
grid="runs/transfer-grid"
mkdir -p "$grid/data"

python3 - "$grid/data" "${sizes[@]}" <<'PY'
import csv, os, random, sys
out, sizes = sys.argv[1], sys.argv[2:]
csv.field_size_limit(1 << 30)

def stratified(rows, n, seed):
    """n rows with the classes in their proportions (largest remainders), drawn by seed."""
    rng = random.Random(seed)
    by = {}
    for r in rows:
        by.setdefault(r["label"], []).append(r)
    labels = sorted(by)
    quota = {l: n * len(by[l]) / len(rows) for l in labels}
    take = {l: int(quota[l]) for l in labels}
    for l in sorted(labels, key=lambda l: quota[l] - take[l], reverse=True)[: n - sum(take.values())]:
        take[l] += 1
    chosen = []
    for l in labels:
        pool = by[l][:]
        rng.shuffle(pool)
        chosen += pool[: take[l]]
    rng.shuffle(chosen)
    return chosen

def write(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)

def read_foods(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [{"text": r["review"], "label": r["score"]} for r in csv.DictReader(f)]

foods_train = read_foods("data/foods/train.csv")
write(f"{out}/foods-test.csv", read_foods("data/foods/test.csv"))
spam = []
for folder, label in [("easy-ham-1", "ham"), ("easy-ham-2", "ham"), ("hard-ham-1", "ham"), ("spam-1", "spam"), ("spam-2", "spam")]:
    d = f"data/spam/{folder}"
    for name in sorted(os.listdir(d)):
        if name.endswith(".txt"):
            with open(f"{d}/{name}", "rb") as f:
                spam.append({"text": f.read().decode("utf-8", errors="replace"), "label": label})
spam_test = stratified(spam, 1000, 7)
taken = {id(r) for r in spam_test}
spam_pool = [r for r in spam if id(r) not in taken]
write(f"{out}/spam-test.csv", spam_test)
for size in sizes:
    for task, pool in [("foods", foods_train), ("spam", spam_pool)]:
        n = len(pool) if size == "all" else min(int(size), len(pool))
        write(f"{out}/{task}-{size}.csv", stratified(pool, n, 42))
PY

experiment() { # task size strategy-toml-value
    cat <<EOF
[data]
dataset = { text = { path = "data/$1-$2.csv", column = "text", label = "label", tokenizer = { pretrained = "$repo_root/data/minilm", length = 128 } } }
test = { text = { path = "data/$1-test.csv", column = "text", label = "label" } }
split = { validation = 0.15, stratify = true }

[model]
layers = [
  { name = "bert", bert = { pretrained = "$repo_root/data/minilm" } },
  { dropout = { rate = 0.1 } },
  { name = "hidden", dense = { units = 128, activation = "relu" } },
  { name = "logits", dense = { units = 2 } },
]

[train]
batch_size = 16
loss = "sparse_categorical_crossentropy"
metrics = ["accuracy", "f1_macro"]
transfer = $3
EOF
}

now() { date +%s.%N; }
for size in "${sizes[@]}"; do
    for task in foods spam; do
        for strategy in features fine_tune_top fine_tune_all; do
            run="$grid/$task-$size-$strategy"
            [[ -f "$run/metrics.json" ]] && continue
            experiment "$task" "$size" "\"$strategy\"" > "$grid/$task-$size-$strategy.toml"
            echo "training $task-$size-$strategy ..." >&2
            start=$(now)
            "$GRAFT_BIN" train "$grid/$task-$size-$strategy.toml" --out "$run" --overwrite --quiet
            awk -v a="$(now)" -v b="$start" 'BEGIN { print a - b }' > "$run/train_seconds.txt"
        done
        # auto: the decision (measured afresh), then the run of the strategy it names.
        experiment "$task" "$size" '"auto"' > "$grid/$task-$size-auto.toml"
        start=$(now)
        "$GRAFT_BIN" train "$grid/$task-$size-auto.toml" --out "$grid/unused" --plan > "$grid/$task-$size-auto.plan.json"
        awk -v a="$(now)" -v b="$start" 'BEGIN { print a - b }' > "$grid/$task-$size-auto.plan_seconds.txt"
    done
done

python3 - "$grid" "${sizes[@]}" <<'PY'
import json, os, sys
grid, sizes = sys.argv[1], sys.argv[2:]
strategies = ["features", "fine_tune_top", "fine_tune_all"]
print("| examples (15% validation) | task | " + " | ".join(strategies) + " | auto (its choice) | auto − best | domain shift | smallest class |")
print("|---|---|" + "---|" * (len(strategies) + 4))
verdicts = []
for size in sizes:
    for task in ["foods", "spam"]:
        cells, acc = [], {}
        seconds = {}
        for s in strategies:
            run = f"{grid}/{task}-{size}-{s}"
            acc[s] = json.load(open(f"{run}/metrics.json"))["test"]["accuracy"]
            seconds[s] = float(open(f"{run}/train_seconds.txt").read())
            cells.append(f"{acc[s]:.4f} ({seconds[s]:.0f} s)")
        plan = json.load(open(f"{grid}/{task}-{size}-auto.plan.json"))
        ev, chosen = plan["evidence"], plan["strategy"]
        acc["auto"] = acc[chosen]
        decide = float(open(f"{grid}/{task}-{size}-auto.plan_seconds.txt").read())
        cells.append(f"{acc['auto']:.4f} ({chosen}, {seconds[chosen] + decide:.0f} s)")
        best = max(acc[s] for s in strategies)
        worst = min(acc[s] for s in strategies)
        gap = acc["auto"] - best
        ok = gap >= -0.01 and (acc["auto"] > worst or best == worst)
        verdicts.append(ok)
        print(f"| {size} | {task} | " + " | ".join(cells) + f" | {100 * gap:+.1f} pts{'' if ok else ' ✗'} | {ev['domain_shift']:.3f} | {ev['smallest_class']} |")
print(f"\nauto within 1 point of the best fixed strategy and never the worst in {sum(verdicts)} of {len(verdicts)} cells")
PY
