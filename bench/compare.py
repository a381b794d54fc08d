#!/usr/bin/env python3
"""Runs the graft, PyTorch and ONNX Runtime benchmark servers side by side and compares them.

  python bench/compare.py --graft "target/release/graft bench --serve" \\
      --torch "PY bench/torch_bench.py" [--ort "PY bench/ort_bench.py"] --threads T [--rounds 5] \\
      [--workloads a,b,...] [--cotenant mlp,...|none] [--quick] [--out bench/results.json] \\
      [--history bench/history.jsonl]

The Python commands get "--threads T" appended (unless they have --threads); the graft server gets
RAYON_NUM_THREADS=T, the Python servers OMP_NUM_THREADS=T and MKL_NUM_THREADS=T in their environment.
Every engine is a long-lived server started from the repository root, speaking one JSON object
per line: request {"workload": W, "warmup": N, "steps": M} on stdin, reply
{"workload": W, "batch": B, "seconds": [M step times]} (or {"error": "..."}) on stdout; the request
{"workload": "info"} answers {"engine": "..."}. ONNX Runtime runs the inference workloads only.
For each workload, each round asks every engine in turn, the first engine rotating from round to
round, so drift on a shared machine hits all alike; each turn starts after a pause of SETTLE_S, so
that threads the engine before left spinning have stopped. The headline of an engine is the median over
rounds of each round's median step time: batch / that (samples/s), or that in microseconds for the
latency workloads; min and max are over every step.

Co-tenant rows (--cotenant, default mlp): after the quiet rounds, the named workloads run again for
graft and PyTorch while a busy loop holds one core; the row gives each engine's speed under load and
its ratio to its own quiet speed.

Writes a JSON array (--out, atomically), appends the run to --history (one JSON line per full run),
and prints a Markdown table on stdout with, per ratio, its range over the full runs in the history
made by the same code (a fingerprint of crates/, Cargo.toml and the bench engines); progress goes to
stderr.
"""

import argparse
import hashlib
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

# name -> (timed steps per round, warm-up steps per round, batch the workload is defined with).
# The CNN's steps are short and noisy (one round's median moved by 20% with 10 steps): 40 per round; the MLP's
# are shorter still (1.2-4 ms): 80 per round, where 20 left one run's ratio at 1.48 against 2.5-2.8 in the others.
WORKLOADS = {
    "mlp": (80, 5, 128),
    "cnn": (40, 3, 64),
    "lstm": (10, 2, 32),
    "gru": (10, 2, 32),
    "bilstm": (10, 2, 32),
    "minilm_infer": (10, 2, 32),
    "minilm_latency_1x16": (100, 10, 1),
    "minilm_finetune": (10, 2, 32),
    "mlp_latency_b1": (200, 20, 1),
    "mlp_infer_b1024": (20, 3, 1024),
    "cnn_latency_b1": (200, 20, 1),
    "cnn_infer_b64": (40, 4, 64),
    "sgemm": (10, 2, 1),
}
# The parity rows against ONNX Runtime whose turns are short (5-50 ms of steps against the 0.25 s pause before
# each): a slow spell of the host covers whole rounds of one engine and fewer of the other's (one run put the
# batch-1 MLP at 0.79x ONNX Runtime by the median of 5 rounds, graft faster in 4 of them), so they run this many
# times the rounds, which costs seconds.
ROUND_FACTOR = {"mlp_latency_b1": 3, "cnn_latency_b1": 3, "mlp_infer_b1024": 3, "cnn_infer_b64": 3}
DEFAULT_STEPS_WARMUP = (10, 2)  # for a workload not in the list above (its batch is not checked)
LATENCY = {"mlp_latency_b1", "cnn_latency_b1", "minilm_latency_1x16"}
# The workloads ONNX Runtime runs: inference only (it does not train).
INFERENCE = {"mlp_latency_b1", "mlp_infer_b1024", "cnn_latency_b1", "cnn_infer_b64", "minilm_infer",
             "minilm_latency_1x16"}
ENGINES = ("graft", "pytorch", "onnxruntime")
ENGINE_TITLES = {"graft": "graft", "pytorch": "PyTorch", "onnxruntime": "ONNX Runtime"}
COTENANT_SUFFIX = "+cotenant"


def engines_for(workload, available):
    """The engines that run `workload`, in ENGINES order, among those `available`."""
    base = workload.removesuffix(COTENANT_SUFFIX)
    return [e for e in ENGINES if e in available
            and (e != "onnxruntime" or (base in INFERENCE and not workload.endswith(COTENANT_SUFFIX)))]


# --- FLOPs per step ---------------------------------------------------------------------------------
# Analytic, matmul-dominated counts: a multiply-add is 2 flops; element-wise work (activations,
# norms, softmax, the optimizer, pooling) is left out. A training step counts ~3x its forward pass
# (forward, then the backward matmuls for the input gradient and for the weight gradient), less the input
# gradient of a first layer (the data needs none; neither engine computes it).

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


def minilm_infer_flops(batch, seq=BERT_SEQ):
    return BERT_LAYERS * bert_layer_forward_flops(batch, seq=seq)


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


def mlp_train_flops(batch):
    """Forward, and a backward of twice its flops less the first layer's input gradient, which neither engine
    computes (the data needs none)."""
    return TRAIN_FACTOR * mlp_forward_flops(batch) - 2 * batch * 784 * 512


def cnn_train_flops(batch):
    """As `mlp_train_flops`: the first convolution's input gradient is not computed."""
    return TRAIN_FACTOR * cnn_forward_flops(batch) - 2 * batch * 26 * 26 * 32 * 9


FLOPS = {
    "mlp": mlp_train_flops,
    "cnn": cnn_train_flops,
    "lstm": lambda b: TRAIN_FACTOR * rnn_forward_flops(b, gates=4),
    "gru": lambda b: TRAIN_FACTOR * rnn_forward_flops(b, gates=3),
    "bilstm": lambda b: TRAIN_FACTOR * rnn_forward_flops(b, gates=4, directions=2),
    "minilm_infer": minilm_infer_flops,
    "minilm_latency_1x16": lambda b: minilm_infer_flops(b, seq=16),
    "minilm_finetune": minilm_finetune_flops,
    "mlp_latency_b1": mlp_forward_flops,
    "mlp_infer_b1024": mlp_forward_flops,
    "cnn_latency_b1": cnn_forward_flops,
    "cnn_infer_b64": cnn_forward_flops,
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


# Seconds every engine's turn waits before its request: ONNX Runtime's pool threads keep spinning after a run (its
# allow_spinning default), and an engine asked right after it ran its first ~15 ms at 0.6x speed on the cores they
# held (graft's CNN at batch 64: 12 steps at 1.3 ms, then 0.75 ms; with this pause 0.75 ms from the first step).
SETTLE_S = 0.25


def measure(servers, workload, rounds, steps, warmup):
    """Per engine that runs `workload`: {"batch", "seconds", "rounds"} (the step times pooled, and
    each round's median), or {"error"}."""
    base = workload.removesuffix(COTENANT_SUFFIX)
    expected_batch = WORKLOADS[base][2] if base in WORKLOADS else None
    names = engines_for(workload, servers)
    result = {name: {"batch": None, "seconds": [], "rounds": []} for name in names}
    req = {"workload": base, "warmup": warmup, "steps": steps}
    for r in range(rounds):
        # Each engine leads in turn: round 1 starts with graft, round 2 with the next engine, ...
        order = names[r % len(names):] + names[:r % len(names)]
        notes = []
        for name in order:
            res = result[name]
            if "error" in res:
                notes.append(f"{name} skipped (error)")
                continue
            time.sleep(SETTLE_S)
            try:
                batch, seconds = check_reply(
                    servers[name].request(req), base, steps, expected_batch)
                if res["batch"] is not None and batch != res["batch"]:
                    raise ValueError(f"batch changed from {res['batch']} to {batch}")
            except ValueError as e:
                result[name] = {"error": str(e)}
                notes.append(f"{name} ERROR: {e}")
                continue
            res["batch"] = batch
            res["seconds"].extend(seconds)
            res["rounds"].append(statistics.median(seconds))
            notes.append(f"{name} median {fmt_time(statistics.median(seconds))}")
        log(f"[{workload}] round {r + 1}/{rounds} ({order[0]} first, {steps} steps + {warmup} warm-up): "
            + ", ".join(notes))
    return result


def engine_stats(res, workload, threads, engine_name):
    if "error" in res:
        return {"error": res["error"], "threads": threads, "engine": engine_name}
    secs = res["seconds"]
    median = statistics.median(res["rounds"])
    base = workload.removesuffix(COTENANT_SUFFIX)
    flops = FLOPS[base](res["batch"]) if base in FLOPS else None
    return {
        "median_s": median,
        "round_medians_s": res["rounds"],
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
    if stats is None or "error" in stats:
        return None
    if workload.removesuffix(COTENANT_SUFFIX) in LATENCY:
        return stats["median_s"] * 1e6
    return stats["batch"] / stats["median_s"]


def speed_ratio(a, b, workload):
    """How many times faster the engine with headline `a` is than the one with `b` (latency: b / a)."""
    if a is None or b is None:
        return None
    return b / a if workload.removesuffix(COTENANT_SUFFIX) in LATENCY else a / b


def build_rows(measured, threads, engines):
    """The results.json objects, in workload order; measured: workload -> engine -> result."""
    stats = {w: {e: engine_stats(r, w, threads, engines.get(e)) for e, r in m.items()}
             for w, m in measured.items()}
    sgemm_gflops = [s["gflops"] for s in stats.get("sgemm", {}).values() if "error" not in s]
    peak = max(sgemm_gflops) if sgemm_gflops else None

    def fraction(s):
        if s is None or "error" in s or peak is None or s["gflops"] is None:
            return None
        return s["gflops"] / peak

    rows = []
    for w, st in stats.items():
        base = w.removesuffix(COTENANT_SUFFIX)
        heads = {e: headline(st.get(e), w) for e in ENGINES}
        row = {
            "workload": w,
            "unit": "us" if base in LATENCY else "samples/s",
            "graft": heads["graft"],
            "pytorch": heads["pytorch"],
            # graft's speed over the other engine's (higher is better for graft either way)
            "ratio": speed_ratio(heads["graft"], heads["pytorch"], w),
            "gflops_fraction_of_peak": fraction(st.get("graft")),
            "pytorch_gflops_fraction_of_peak": fraction(st.get("pytorch")),
            "peak_gflops": peak,
            "threads": threads,
            "graft_stats": st.get("graft"),
            "pytorch_stats": st.get("pytorch"),
        }
        if "onnxruntime" in st:
            row["onnxruntime"] = heads["onnxruntime"]
            row["ratio_vs_onnxruntime"] = speed_ratio(heads["graft"], heads["onnxruntime"], w)
            row["onnxruntime_gflops_fraction_of_peak"] = fraction(st["onnxruntime"])
            row["onnxruntime_stats"] = st["onnxruntime"]
        if w.endswith(COTENANT_SUFFIX) and base in stats:
            # Each engine under load against its own quiet speed (1.0: the busy core cost nothing).
            for e in ("graft", "pytorch"):
                quiet = headline(stats[base].get(e), base)
                row[f"{e}_vs_quiet"] = speed_ratio(heads[e], quiet, base)
        errors = [f"{e}: {s['error']}" for e, s in st.items() if s is not None and "error" in s]
        if errors:
            row["error"] = "; ".join(errors)
        rows.append(row)
    return rows, peak


# --- runs over time ---------------------------------------------------------------------------------

RATIO_KEYS = ("ratio", "ratio_vs_onnxruntime", "graft_vs_quiet", "pytorch_vs_quiet")


def code_fingerprint():
    """A hash of the code that decides the numbers: graft's crates, the manifest and the engines. Runs
    of the same code are comparable; the fingerprint changes with any edit, committed or not."""
    try:
        files = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "crates", "Cargo.toml", "bench/run.sh",
             "bench/compare.py", "bench/torch_bench.py", "bench/ort_bench.py"],
            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    h = hashlib.sha256()
    for name in sorted(files):
        try:
            with open(os.path.join(REPO, name), "rb") as f:
                data = f.read()
        except OSError:
            continue
        h.update(name.encode() + b"\0" + data + b"\0")
    return h.hexdigest()[:16]


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def read_history(path):
    runs = []
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    try:
                        runs.append(json.loads(line))
                    except json.JSONDecodeError:
                        log(f"{path}: skipping a line that is not JSON")
    except FileNotFoundError:
        pass
    return runs


def append_history(path, entry):
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def add_ranges(rows, runs):
    """Each row's ratios' [min, max] over `runs` (history entries of the same code, this run included)."""
    for row in rows:
        ranges = {}
        for key in RATIO_KEYS:
            values = [r["ratios"][row["workload"]][key] for r in runs
                      if r.get("ratios", {}).get(row["workload"], {}).get(key) is not None]
            if values:
                ranges[key] = [min(values), max(values)]
        row["runs"] = {"count": len(runs), "ranges": ranges}


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
    s = row.get(f"{engine}_stats")
    if s is None:
        return "–"
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


def fmt_ratio(row, key):
    value = row.get(key)
    if value is None:
        return "–"
    text = f"{value:.2f}×"
    span = row.get("runs", {}).get("ranges", {}).get(key)
    if span is not None and row["runs"]["count"] > 1:
        text += f" ({span[0]:.2f}–{span[1]:.2f})"
    return text


def fmt_range(s):
    if s is None or "error" in s:
        return "–"
    lo, hi = s["min_s"], s["max_s"]
    return f"{fmt_time(lo)} – {fmt_time(hi)}"


def markdown(rows, runs):
    span = f" (range over {runs} runs)" if runs > 1 else ""
    lines = [
        f"| workload | graft | PyTorch | ONNX Runtime | graft/PyTorch{span} | graft/ORT{span} "
        "| graft % of sgemm peak | PyTorch % of peak | graft min–max | PyTorch min–max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["workload"].endswith(COTENANT_SUFFIX):
            continue
        lines.append("| " + " | ".join([
            row["workload"], fmt_headline(row, "graft"), fmt_headline(row, "pytorch"),
            fmt_headline(row, "onnxruntime"), fmt_ratio(row, "ratio"),
            fmt_ratio(row, "ratio_vs_onnxruntime"),
            fmt_pct(row["gflops_fraction_of_peak"]), fmt_pct(row["pytorch_gflops_fraction_of_peak"]),
            fmt_range(row["graft_stats"]), fmt_range(row["pytorch_stats"]),
        ]) + " |")
    cotenant = [row for row in rows if row["workload"].endswith(COTENANT_SUFFIX)]
    if cotenant:
        lines += [
            "",
            f"| with one busy core | graft | PyTorch | graft/PyTorch{span} | graft vs its quiet speed "
            "| PyTorch vs its quiet speed | graft slowest step | PyTorch slowest step |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in cotenant:
            def slowest(e):
                s = row.get(f"{e}_stats")
                return "–" if s is None or "error" in s else fmt_time(s["max_s"])

            lines.append("| " + " | ".join([
                row["workload"], fmt_headline(row, "graft"), fmt_headline(row, "pytorch"),
                fmt_ratio(row, "ratio"), fmt_ratio(row, "graft_vs_quiet"),
                fmt_ratio(row, "pytorch_vs_quiet"), slowest("graft"), slowest("pytorch"),
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
    ap.add_argument("--ort", help="command that starts the ONNX Runtime server (default: no ORT column)")
    ap.add_argument("--threads", type=int, required=True, help="threads per engine")
    ap.add_argument("--rounds", type=int, help="rounds per workload (default 5, three times that for the "
                    "short parity rows in ROUND_FACTOR; 2 with --quick)")
    ap.add_argument("--workloads", help="comma-separated workloads (default: all, in order: "
                    + ",".join(WORKLOADS) + ")")
    ap.add_argument("--cotenant", default="mlp",
                    help="workloads measured again beside a busy core, or 'none' (default: mlp)")
    ap.add_argument("--quick", action="store_true",
                    help="2 rounds and a fifth of the steps (at least 2) per round")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results.json"),
                    help="results file (default: bench/results.json in the repository)")
    ap.add_argument("--history", default=os.path.join(REPO, "bench", "history.jsonl"),
                    help="full runs are appended here, and ratio ranges read from it "
                         "(default: bench/history.jsonl; 'none' for neither)")
    ap.add_argument("--timeout", type=float, default=900,
                    help="seconds to wait for any one reply (default 900)")
    args = ap.parse_args()
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    if args.rounds is not None and args.rounds < 1:
        ap.error("--rounds must be >= 1")
    args.full = args.rounds is None and not args.quick and not args.workloads
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    names = list(WORKLOADS) if not args.workloads else [
        w.strip() for w in args.workloads.split(",") if w.strip()]
    if not names:
        ap.error("--workloads names no workload")
    # The known workloads in their fixed order, then any others in the order given.
    args.workload_list = [w for w in WORKLOADS if w in names] + [
        w for w in dict.fromkeys(names) if w not in WORKLOADS]
    cotenant = [] if args.cotenant.strip() == "none" else [
        w.strip() for w in args.cotenant.split(",") if w.strip()]
    unknown = [w for w in cotenant if w not in WORKLOADS]
    if unknown:
        ap.error(f"--cotenant: unknown workload(s) {', '.join(unknown)}")
    # A co-tenant row needs its quiet row.
    args.cotenant_list = [w for w in cotenant if w in args.workload_list]
    return args


def python_command(command, threads):
    return command if "--threads" in shlex.split(command) else f"{command} --threads {threads}"


class BusyCore:
    """A process spinning on one core for as long as the `with` block runs: a noisy co-tenant."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)  # let it reach its loop
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def main():
    args = parse_args()
    t = str(args.threads)
    base = dict(os.environ)
    py_env = {**base, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t}
    servers = {
        "graft": Server("graft", args.graft, {**base, "RAYON_NUM_THREADS": t}, args.timeout),
        "pytorch": Server("pytorch", python_command(args.torch, t), py_env, args.timeout),
    }
    if args.ort:
        servers["onnxruntime"] = Server("onnxruntime", python_command(args.ort, t), py_env, args.timeout)
    engines = {}
    measured = {}
    try:
        for name in servers:
            info = servers[name].request({"workload": "info"})
            engines[name] = info.get("engine") if isinstance(info.get("engine"), str) else None
            if engines[name] is None:
                log(f"{name}: no engine info ({info.get('error', 'no engine field')})")
            else:
                log(f"{name}: {engines[name]}")

        def steps_of(w):
            steps, warmup = WORKLOADS.get(w, DEFAULT_STEPS_WARMUP)[:2]
            return (max(2, steps // 5) if args.quick else steps), warmup

        def rounds_of(w):
            return args.rounds if args.quick else args.rounds * ROUND_FACTOR.get(w, 1)

        for w in args.workload_list:
            measured[w] = measure(servers, w, rounds_of(w), *steps_of(w))
        if args.cotenant_list:
            log("== with one core busy")
            with BusyCore():
                for w in args.cotenant_list:
                    measured[w + COTENANT_SUFFIX] = measure(servers, w + COTENANT_SUFFIX, args.rounds,
                                                            *steps_of(w))
    finally:
        for s in servers.values():
            s.stop()

    rows, peak = build_rows(measured, args.threads, engines)
    code = code_fingerprint()
    runs = []
    if args.history != "none":
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": git_commit(),
            "code": code,
            "threads": args.threads,
            "machine": cpu_model(),
            "engines": engines,
            "ratios": {row["workload"]: {k: row[k] for k in RATIO_KEYS if row.get(k) is not None}
                       for row in rows},
        }
        if args.full:
            append_history(args.history, entry)
            log(f"appended this run to {args.history}")
        # Ranges over the full runs of this code (this one included, even when partial).
        runs = [r for r in read_history(args.history)
                if r.get("code") == code and r.get("threads") == args.threads and r is not entry]
        if not args.full:
            runs.append(entry)
    add_ranges(rows, runs)
    write_atomically(args.out, rows)
    log(f"wrote {args.out}")

    print(markdown(rows, len(runs)))
    print()
    peak_note = f"sgemm peak {peak:.1f} GFLOP/s" if peak is not None else "sgemm peak unknown"
    names = "; ".join(f"{ENGINE_TITLES[e]}: {engines.get(e) or 'unknown'}" for e in servers)
    print(f"Machine: {cpu_model()}, {args.threads} threads; {names}; "
          f"{args.rounds} round{'s' if args.rounds != 1 else ''} per workload"
          f"{'' if args.quick else f' ({args.rounds * max(ROUND_FACTOR.values())} for the short parity rows)'}"
          f"{' (quick)' if args.quick else ''}; {peak_note}; code {code} ({git_commit()}), "
          f"ranges over {len(runs)} run{'s' if len(runs) != 1 else ''} of this code.")


if __name__ == "__main__":
    main()
