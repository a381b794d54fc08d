#!/usr/bin/env python3
"""Runs the graft and PyTorch benchmark servers side by side and compares them.

  python bench/compare.py --graft "target/release/graft bench --serve" \\
      --torch "PY bench/torch_bench.py" --threads T [--rounds 5] [--workloads a,b,...] [--quick] \\
      [--out bench/results.json]

The torch command gets "--threads T" appended (unless it has --threads); the graft server gets
RAYON_NUM_THREADS=T, the torch server OMP_NUM_THREADS=T and MKL_NUM_THREADS=T in its environment.
Both engines are long-lived servers started from the repository root, speaking one JSON object
per line: request {"workload": W, "warmup": N, "steps": M} on stdin, reply
{"workload": W, "batch": B, "seconds": [M step times]} (or {"error": "..."}) on stdout; the request
{"workload": "info"} answers {"engine": "..."}. For each workload, each round asks both engines,
alternating which goes first (graft first on odd rounds). Per engine the step times of all rounds
are pooled; the headline is batch / median step time (samples/s), or the median in microseconds for
mlp_latency_b1. Writes a JSON array (--out, atomically) and prints a Markdown table on stdout;
progress goes to stderr.
"""

import argparse
import json
import os
import queue
import shlex
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (timed steps per round, warm-up steps per round, batch the workload is defined with)
WORKLOADS = {
    "mlp": (20, 3, 128),
    "cnn": (10, 2, 64),
    "lstm": (10, 2, 32),
    "gru": (10, 2, 32),
    "bilstm": (10, 2, 32),
    "minilm_infer": (10, 2, 32),
    "minilm_finetune": (10, 2, 32),
    "mlp_latency_b1": (200, 20, 1),
    "mlp_infer_b1024": (20, 3, 1024),
    "sgemm": (10, 2, 1),
}
DEFAULT_STEPS_WARMUP = (10, 2)  # for a workload not in the list above (its batch is not checked)
LATENCY = {"mlp_latency_b1"}
ENGINES = ("graft", "pytorch")


# --- FLOPs per step ---------------------------------------------------------------------------------
# Analytic, matmul-dominated counts: a multiply-add is 2 flops; element-wise work (activations,
# norms, softmax, the optimizer, pooling) is left out. A training step counts ~3x its forward pass
# (forward, then the backward matmuls for the input gradient and for the weight gradient).

TRAIN_FACTOR = 3


def mlp_forward_flops(batch):
    """Linear 784->512->256->10."""
    return 2 * batch * (784 * 512 + 512 * 256 + 256 * 10)


def cnn_forward_flops(batch):
    """conv1 3x3 1->32 on 26x26 outputs, conv2 3x3 32->64 on 11x11 outputs, dense 1600->128->10."""
    conv1 = 2 * batch * 26 * 26 * 32 * 9
    conv2 = 2 * batch * 11 * 11 * 64 * 32 * 9
    dense = 2 * batch * (64 * 5 * 5 * 128 + 128 * 10)
    return conv1 + conv2 + dense


def rnn_forward_flops(batch, gates, directions=1, seq=100, embed=128, hidden=128, classes=2):
    """Per time step and direction, the gates' input and recurrent matmuls ((E+H) x gates*H);
    then the head on the final hidden state(s). LSTM: 4 gates, GRU: 3."""
    recurrent = directions * 2 * batch * seq * (embed + hidden) * gates * hidden
    head = 2 * batch * directions * hidden * classes
    return recurrent + head


BERT_D, BERT_FF, BERT_SEQ, BERT_LAYERS = 384, 1536, 128, 6


def bert_layer_forward_flops(batch, d=BERT_D, ff=BERT_FF, seq=BERT_SEQ):
    """One encoder layer: per token, Q/K/V/output projections (4 d^2) and the feed-forward
    (2 d ff) as multiply-adds, plus attention scores and the weighted sum of values (2 seq d)."""
    per_token = 2 * (4 * d * d + 2 * d * ff) + 2 * 2 * seq * d
    return batch * seq * per_token


def minilm_infer_flops(batch):
    return BERT_LAYERS * bert_layer_forward_flops(batch)


def minilm_finetune_flops(batch, trainable_layers=2, classes=2):
    """Forward through all 6 layers; backward (2x forward) only through the trainable last 2
    layers: the frozen layers need no weight gradients and their input needs no gradient. The
    head Linear(384, 2) is trained (3x its forward)."""
    forward = BERT_LAYERS * bert_layer_forward_flops(batch)
    backward = 2 * trainable_layers * bert_layer_forward_flops(batch)
    head = TRAIN_FACTOR * 2 * batch * BERT_D * classes
    return forward + backward + head


def sgemm_flops(batch, n=2048):
    """One n x n x n float32 matmul (batch is 1 call)."""
    return 2 * n ** 3


FLOPS = {
    "mlp": lambda b: TRAIN_FACTOR * mlp_forward_flops(b),
    "cnn": lambda b: TRAIN_FACTOR * cnn_forward_flops(b),
    "lstm": lambda b: TRAIN_FACTOR * rnn_forward_flops(b, gates=4),
    "gru": lambda b: TRAIN_FACTOR * rnn_forward_flops(b, gates=3),
    "bilstm": lambda b: TRAIN_FACTOR * rnn_forward_flops(b, gates=4, directions=2),
    "minilm_infer": minilm_infer_flops,
    "minilm_finetune": minilm_finetune_flops,
    "mlp_latency_b1": mlp_forward_flops,
    "mlp_infer_b1024": mlp_forward_flops,
    "sgemm": sgemm_flops,
}


# --- servers ----------------------------------------------------------------------------------------


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Server:
    """One engine's server process; request() sends a line and waits for the reply line."""

    def __init__(self, name, command, env, timeout):
        self.name = name
        self.argv = shlex.split(command)
        self.env = env
        self.timeout = timeout
        self.proc = None
        self.lines = None

    def start(self):
        log(f"starting {self.name}: {shlex.join(self.argv)}")
        self.proc = subprocess.Popen(
            self.argv, cwd=REPO, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None, text=True, bufsize=1,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()

    @staticmethod
    def _read(proc, lines):
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # EOF

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def request(self, req):
        """The reply as a dict; transport failures come back as {"error": ...} and stop the
        server (it is started again for the next request)."""
        if not self.alive():
            if self.proc is not None:
                log(f"{self.name}: server had exited (status {self.proc.returncode}); restarting")
            try:
                self.start()
            except OSError as e:
                self.proc = None
                return {"error": f"cannot start the server: {e}"}
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            self.stop()
            return {"error": f"server closed its input: {e}"}
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                return {"error": f"no reply within {self.timeout:g} s"}
            if line is None:
                status = self.proc.wait()
                return {"error": f"server exited (status {status}) without replying"}
            if line.strip():
                break
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            self.stop()
            return {"error": f"reply is not JSON: {line.strip()[:200]!r}"}
        if not isinstance(obj, dict):
            return {"error": f"reply is not a JSON object: {line.strip()[:200]!r}"}
        return obj

    def stop(self):
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def check_reply(reply, workload, steps, expected_batch):
    """(batch, seconds) of a well-formed reply; raises ValueError with the reason otherwise."""
    if "error" in reply:
        raise ValueError(str(reply["error"]))
    if reply.get("workload") not in (None, workload):
        raise ValueError(f"reply is for workload {reply.get('workload')!r}")
    batch, seconds = reply.get("batch"), reply.get("seconds")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"bad batch {batch!r}")
    if expected_batch is not None and batch != expected_batch:
        raise ValueError(f"batch {batch}, but {workload} is defined with batch {expected_batch}")
    if not isinstance(seconds, list) or len(seconds) != steps:
        raise ValueError(f"expected {steps} step times, got {seconds!r:.100}")
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in seconds):
        raise ValueError("step times must be positive numbers")
    return batch, [float(s) for s in seconds]


# --- measurement ------------------------------------------------------------------------------------


def measure(servers, workload, rounds, steps, warmup):
    """Per engine: {"batch", "seconds"} pooled over rounds, or {"error"}."""
    expected_batch = WORKLOADS[workload][2] if workload in WORKLOADS else None
    result = {name: {"batch": None, "seconds": []} for name in ENGINES}
    req = {"workload": workload, "warmup": warmup, "steps": steps}
    for r in range(1, rounds + 1):
        order = ENGINES if r % 2 == 1 else ENGINES[::-1]
        notes = []
        for name in order:
            res = result[name]
            if "error" in res:
                notes.append(f"{name} skipped (error)")
                continue
            try:
                batch, seconds = check_reply(
                    servers[name].request(req), workload, steps, expected_batch)
                if res["batch"] is not None and batch != res["batch"]:
                    raise ValueError(f"batch changed from {res['batch']} to {batch}")
            except ValueError as e:
                result[name] = {"error": str(e)}
                notes.append(f"{name} ERROR: {e}")
                continue
            res["batch"] = batch
            res["seconds"].extend(seconds)
            notes.append(f"{name} median {fmt_time(statistics.median(seconds))}")
        log(f"[{workload}] round {r}/{rounds} ({order[0]} first, {steps} steps + {warmup} warm-up): "
            + ", ".join(notes))
    return result


def engine_stats(res, workload, threads, engine_name):
    if "error" in res:
        return {"error": res["error"], "threads": threads, "engine": engine_name}
    secs = res["seconds"]
    median = statistics.median(secs)
    flops = FLOPS[workload](res["batch"]) if workload in FLOPS else None
    return {
        "median_s": median,
        "min_s": min(secs),
        "max_s": max(secs),
        "steps": len(secs),
        "batch": res["batch"],
        "threads": threads,
        "engine": engine_name,
        "flops_per_step": flops,
        "gflops": flops / median / 1e9 if flops is not None else None,
    }


def headline(stats, workload):
    if "error" in stats:
        return None
    if workload in LATENCY:
        return stats["median_s"] * 1e6
    return stats["batch"] / stats["median_s"]


def build_rows(measured, threads, engines):
    """The results.json objects, in workload order; measured: workload -> engine -> result."""
    stats = {w: {e: engine_stats(m[e], w, threads, engines[e]) for e in ENGINES}
             for w, m in measured.items()}
    sgemm_gflops = [s["gflops"] for s in stats.get("sgemm", {}).values() if "error" not in s]
    peak = max(sgemm_gflops) if sgemm_gflops else None
    rows = []
    for w, st in stats.items():
        g, p = headline(st["graft"], w), headline(st["pytorch"], w)
        ratio = None
        if g is not None and p is not None:
            ratio = p / g if w in LATENCY else g / p  # higher is better for graft either way

        def fraction(s):
            if "error" in s or peak is None or s["gflops"] is None:
                return None
            return s["gflops"] / peak

        row = {
            "workload": w,
            "unit": "us" if w in LATENCY else "samples/s",
            "graft": g,
            "pytorch": p,
            "ratio": ratio,
            "gflops_fraction_of_peak": fraction(st["graft"]),
            "pytorch_gflops_fraction_of_peak": fraction(st["pytorch"]),
            "peak_gflops": peak,
            "threads": threads,
            "graft_stats": st["graft"],
            "pytorch_stats": st["pytorch"],
        }
        errors = [f"{e}: {st[e]['error']}" for e in ENGINES if "error" in st[e]]
        if errors:
            row["error"] = "; ".join(errors)
        rows.append(row)
    return rows, peak


# --- output -----------------------------------------------------------------------------------------


def fmt_time(s):
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.3f} s"


def fmt_num(x):
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_headline(row, engine):
    s = row[f"{engine}_stats"]
    if "error" in s:
        msg = s["error"].replace("|", "/").replace("\n", " ")
        return f"error: {msg[:80]}"
    value = row[engine]
    if row["unit"] == "us":
        return f"{value:.1f} µs"
    if row["workload"] == "sgemm":
        return f"{fmt_num(value)} calls/s ({s['gflops']:.1f} GFLOP/s)"
    return f"{fmt_num(value)} samples/s"


def fmt_pct(x):
    return "–" if x is None else f"{100 * x:.1f}%"


def fmt_range(s):
    if "error" in s:
        return "–"
    lo, hi = s["min_s"], s["max_s"]
    return f"{fmt_time(lo)} – {fmt_time(hi)}"


def markdown(rows):
    lines = [
        "| workload | graft | PyTorch | graft/PyTorch | graft % of sgemm peak | PyTorch % of peak "
        "| graft min–max | PyTorch min–max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = "–" if row["ratio"] is None else f"{row['ratio']:.2f}×"
        lines.append("| " + " | ".join([
            row["workload"], fmt_headline(row, "graft"), fmt_headline(row, "pytorch"), ratio,
            fmt_pct(row["gflops_fraction_of_peak"]), fmt_pct(row["pytorch_gflops_fraction_of_peak"]),
            fmt_range(row["graft_stats"]), fmt_range(row["pytorch_stats"]),
        ]) + " |")
    return "\n".join(lines)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":")[0].strip() in ("model name", "Model", "cpu model"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def write_atomically(path, rows):
    path = os.path.abspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(rows, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# --- main -------------------------------------------------------------------------------------------


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--graft", required=True, help="command that starts the graft server")
    ap.add_argument("--torch", required=True, help="command that starts the PyTorch server")
    ap.add_argument("--threads", type=int, required=True, help="threads per engine")
    ap.add_argument("--rounds", type=int, help="rounds per workload (default 5; 2 with --quick)")
    ap.add_argument("--workloads", help="comma-separated workloads (default: all, in order: "
                    + ",".join(WORKLOADS) + ")")
    ap.add_argument("--quick", action="store_true",
                    help="2 rounds and a fifth of the steps (at least 2) per round")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results.json"),
                    help="results file (default: bench/results.json in the repository)")
    ap.add_argument("--timeout", type=float, default=900,
                    help="seconds to wait for any one reply (default 900)")
    args = ap.parse_args()
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    if args.rounds is not None and args.rounds < 1:
        ap.error("--rounds must be >= 1")
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    names = list(WORKLOADS) if not args.workloads else [
        w.strip() for w in args.workloads.split(",") if w.strip()]
    if not names:
        ap.error("--workloads names no workload")
    # The known workloads in their fixed order, then any others in the order given.
    args.workload_list = [w for w in WORKLOADS if w in names] + [
        w for w in dict.fromkeys(names) if w not in WORKLOADS]
    return args


def main():
    args = parse_args()
    t = str(args.threads)
    base = dict(os.environ)
    torch_command = args.torch
    if "--threads" not in shlex.split(torch_command):
        torch_command += f" --threads {t}"
    servers = {
        "graft": Server("graft", args.graft, {**base, "RAYON_NUM_THREADS": t}, args.timeout),
        "pytorch": Server("pytorch", torch_command,
                          {**base, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t}, args.timeout),
    }
    engines = {}
    measured = {}
    try:
        for name in ENGINES:
            info = servers[name].request({"workload": "info"})
            engines[name] = info.get("engine") if isinstance(info.get("engine"), str) else None
            if engines[name] is None:
                log(f"{name}: no engine info ({info.get('error', 'no engine field')})")
            else:
                log(f"{name}: {engines[name]}")
        for w in args.workload_list:
            steps, warmup = WORKLOADS.get(w, DEFAULT_STEPS_WARMUP)[:2]
            if args.quick:
                steps = max(2, steps // 5)
            measured[w] = measure(servers, w, args.rounds, steps, warmup)
    finally:
        for s in servers.values():
            s.stop()

    rows, peak = build_rows(measured, args.threads, engines)
    write_atomically(args.out, rows)
    log(f"wrote {args.out}")

    print(markdown(rows))
    print()
    peak_note = f"sgemm peak {peak:.1f} GFLOP/s" if peak is not None else "sgemm peak unknown"
    print(f"Machine: {cpu_model()}, {args.threads} threads; "
          f"graft: {engines.get('graft') or 'unknown'}; "
          f"PyTorch: {engines.get('pytorch') or 'unknown'}; "
          f"{args.rounds} round{'s' if args.rounds != 1 else ''} per workload"
          f"{' (quick)' if args.quick else ''}; {peak_note}.")


if __name__ == "__main__":
    main()
