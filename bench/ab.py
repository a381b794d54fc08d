"""A/B of two graft engines on the benchmark's workloads: how a lever was measured.

Usage: python3 bench/ab.py A B WORKLOADS [--rounds N] [--steps S]

A and B are `graft` binaries, each optionally followed by `+NAME=VALUE` environment settings, for example
`target/release/graft` against `target/release/graft+GRAFT_DIRECT_CONV=0` (a lever's switch), or two binaries built
from two commits (copy each out of target/ after building it). Either may also be `onnxruntime` or `pytorch`: the
benchmark's own servers (bench/ort_bench.py, bench/torch_bench.py) on $GRAFT_BENCH_PYTHON or bench/.venv's Python,
with as many threads as the machine has CPUs (as `bash bench/run.sh`), to follow a parity row between full runs. WORKLOADS is a comma-separated list of
`graft bench --serve` workloads (mlp, cnn, lstm, cnn_latency_b1, ...).

Both engines stay up as long-lived servers; each round runs S timed steps on one and then the other, the first
alternating between rounds, so a slow spell of a shared machine hits both. Printed per workload: each engine's
median step over the rounds, and B's step time over A's in every round (range and median): above 1 means A is
faster. Judge a lever by that median ratio, not by absolute times from different moments.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


PYTHON_ENGINES = {"onnxruntime": "bench/ort_bench.py", "pytorch": "bench/torch_bench.py"}


def start(spec):
    """Starts `graft bench --serve` from BINARY[+NAME=VALUE...], or one of the Python engines."""
    binary, *settings = spec.split("+")
    if binary in PYTHON_ENGINES:
        python = os.environ.get("GRAFT_BENCH_PYTHON", "bench/.venv/bin/python")
        command = [python, PYTHON_ENGINES[binary], "--threads", str(os.cpu_count() or 1)]
    else:
        command = [binary, "bench", "--serve"]
    env = dict(os.environ)
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep:
            sys.exit(f"error: '{setting}' in '{spec}' is not NAME=VALUE")
        env[name] = value
    try:
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env)
    except OSError as e:
        sys.exit(f"error: cannot start '{binary}': {e}")


def request(proc, workload, warmup, steps):
    """One request; the step times in seconds."""
    proc.stdin.write(json.dumps({"workload": workload, "warmup": warmup, "steps": steps}) + "\n")
    proc.stdin.flush()
    while True:
        line = proc.stdout.readline()
        if not line:
            sys.exit(f"error: an engine exited during '{workload}'")
        if line.startswith("{"):
            reply = json.loads(line)
            if "error" in reply:
                sys.exit(f"error: {reply['error']}")
            return reply["seconds"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", help="engine A: BINARY[+NAME=VALUE...]")
    ap.add_argument("b", help="engine B: BINARY[+NAME=VALUE...]")
    ap.add_argument("workloads", help="comma-separated workloads")
    ap.add_argument("--rounds", type=int, default=8, help="rounds per workload (default 8)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per round (default 30)")
    args = ap.parse_args()
    engines = {"A": start(args.a), "B": start(args.b)}
    for workload in args.workloads.split(","):
        for proc in engines.values():
            request(proc, workload, 3, 3)
        medians = {"A": [], "B": []}
        for r in range(args.rounds):
            for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                # As compare.py: ONNX Runtime's threads spin on after a run, and so would slow the next turn.
                time.sleep(0.25)
                medians[name].append(statistics.median(request(engines[name], workload, 2, args.steps)))
        ratios = [b / a for a, b in zip(medians["A"], medians["B"])]
        print(f"{workload}: A {statistics.median(medians['A']) * 1e3:.3f} ms, B "
              f"{statistics.median(medians['B']) * 1e3:.3f} ms per step; B/A per round "
              f"{min(ratios):.3f}–{max(ratios):.3f}, median {statistics.median(ratios):.3f}")
    for proc in engines.values():
        proc.stdin.close()
        proc.wait()


if __name__ == "__main__":
    main()
