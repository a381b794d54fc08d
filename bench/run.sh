#!/usr/bin/env bash
# Benchmarks graft against PyTorch (and, on the inference workloads, ONNX Runtime) on this machine's
# CPU: builds graft, prepares a Python environment and the MiniLM model if needed, then runs
# bench/compare.py, which prints a Markdown table, writes bench/results.json and appends a full run
# to bench/history.jsonl (the ranges over runs of the same code come from there).
#
# Usage: bash bench/run.sh [--quick] [--threads T] [--workloads a,b,...] [other compare.py options]
#
#   --threads T      threads for each engine (default: nproc)
#   --quick          2 rounds with a fifth of the steps: a smoke test, not a measurement
#   --workloads W    comma-separated subset of: mlp,cnn,lstm,gru,bilstm,minilm_infer,
#                    minilm_latency_1x16,minilm_finetune,mlp_latency_b1,mlp_infer_b1024,
#                    cnn_latency_b1,cnn_infer_b64,sgemm
#   anything else (--rounds N, --cotenant W|none, --out FILE, --history FILE|none, --timeout S) is
#   passed on to compare.py.
#
# Python: $GRAFT_BENCH_PYTHON if set (it must have torch, numpy, transformers, safetensors and
# onnxruntime; onnx for the export), else bench/.venv/bin/python, creating bench/.venv with pinned
# packages on first use.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

threads="$(nproc)"
pass=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads)
            [[ $# -ge 2 ]] || { echo "error: --threads needs a value" >&2; exit 2; }
            threads="$2"
            shift 2
            ;;
        --threads=*)
            threads="${1#--threads=}"
            shift
            ;;
        -h|--help)
            sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            pass+=("$1")
            shift
            ;;
    esac
done
if ! [[ "$threads" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: --threads must be a positive integer, got '$threads'" >&2
    exit 2
fi

# --- Python --------------------------------------------------------------------------------------
if [[ -n "${GRAFT_BENCH_PYTHON:-}" ]]; then
    py="$GRAFT_BENCH_PYTHON"
else
    venv="bench/.venv"
    py="$venv/bin/python"
    # The marker is written only after every package installed, so an interrupted setup is redone.
    if [[ ! -x "$py" || ! -f "$venv/.installed" ]]; then
        echo "== creating $venv (torch, numpy, transformers, safetensors, onnxruntime, onnx," \
            "onnxscript)" >&2
        python3 -m venv "$venv"
        "$py" -m pip install torch==2.15.0 numpy==2.4.6 transformers==5.24.0 safetensors==0.8.0 \
            onnxruntime==1.32.0 onnx==1.23.2 onnxscript==0.7.2
        touch "$venv/.installed"
    fi
fi

# --- MiniLM --------------------------------------------------------------------------------------
if [[ ! -f data/minilm/model.safetensors ]]; then
    echo "== fetching the MiniLM model" >&2
    bash scripts/fetch-data.sh minilm
fi

# --- graft ---------------------------------------------------------------------------------------
echo "== cargo build --release" >&2
cargo build --release

# --- run -----------------------------------------------------------------------------------------
echo "== comparing with $threads threads" >&2
"$py" bench/compare.py \
    --graft "target/release/graft bench --serve" \
    --torch "$(printf '%q' "$py") bench/torch_bench.py" \
    --ort "$(printf '%q' "$py") bench/ort_bench.py" \
    --threads "$threads" \
    ${pass[@]+"${pass[@]}"}
