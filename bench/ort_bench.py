#!/usr/bin/env python3
"""ONNX Runtime engine of the graft benchmark (see bench/compare.py); inference workloads only.

The same server protocol as bench/torch_bench.py: reads one JSON request per line on stdin, writes
exactly one JSON reply per line on stdout (flushed after each reply); logs go to stderr. EOF on
stdin ends it.

  request: {"workload": "mlp_latency_b1", "warmup": 3, "steps": 10}
  reply:   {"workload": "mlp_latency_b1", "batch": 1, "seconds": [t_1, ..., t_10]}
  request: {"workload": "info"}
  reply:   {"workload": "info", "engine": "onnxruntime 1.32.0", ...}
  on any failure: {"workload": ..., "error": "..."}

Workloads: mlp_latency_b1, mlp_infer_b1024, cnn_latency_b1, cnn_infer_b64, minilm_infer (32 x 128
tokens) and minilm_latency_1x16 (1 x 16 tokens). On its first request a workload's PyTorch model and
input are built with torch_bench.py's builders and seeds (so the weights and inputs are the same as
the PyTorch engine's), wrapped so that the graph includes the softmax (mlp, cnn) or the mean pooling
of the last hidden states (MiniLM), exported to ONNX at the exact input shape (no dynamic axes) in
the cache directory, and loaded into an InferenceSession on the CPU execution provider with
intra_op_num_threads = T, inter_op_num_threads = 1, sequential execution and all graph
optimizations. Before it is timed, its output is checked against the PyTorch model's on the same
input (max abs difference < 1e-4 for mlp/cnn, < 1e-3 for MiniLM; an error reply otherwise). A timed
step is one session.run(None, feeds) on numpy inputs prepared once, measured with time.perf_counter
exactly as in torch_bench.py.

Exporter: the TorchScript one, torch.onnx.export(..., dynamo=False, opset_version=17). With torch
2.15 it exports all six models to one self-contained .onnx file each (about 90 MB for MiniLM) with
output differences from PyTorch of 1e-8 (mlp, cnn) to 1e-6 (MiniLM). The dynamo exporter
(dynamo=True, onnxscript) also gives correct graphs, but it has no opset 17 (it exports opset 18
and tries to convert down; for MiniLM the conversion fails with a traceback in the log and the
graph stays at opset 18), prints its progress on stdout and writes the weights to separate
.onnx.data files; the TorchScript exporter only warns that it is deprecated.
MiniLM is loaded by torch_bench's load_bert, so with the attention implementation that engine uses
(sdpa, the default of transformers 5.x): the TorchScript exporter translates
scaled_dot_product_attention into plain ONNX operators, so "eager" is not needed. The attention
mask stays a real input of the graph (checked: a mask with zeros gives PyTorch's output too), and
token_type_ids is not one (BertModel defaults it to zeros, a constant of the graph).

Usage: python bench/ort_bench.py [--threads T] [--minilm DIR] [--cache DIR]   (cwd: the repository
root)
"""

import argparse
import contextlib
import json
import os
import sys
import time
import warnings

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

# Importing torch_bench must not leave a bench/__pycache__ in the working tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_bench as tb  # noqa: E402  (the model builders, seeds and timing loop)

# Set by main() to the real stdout; see redirect_stdout().
_REPLY_OUT = sys.stdout

# Max abs difference allowed between ONNX Runtime's output and PyTorch's.
TOLERANCE_DENSE = 1e-4
TOLERANCE_MINILM = 1e-3
OPSET = 17


def log(msg):
    print(f"[ort_bench] {msg}", file=sys.stderr, flush=True)


def reply(obj):
    _REPLY_OUT.write(json.dumps(obj) + "\n")
    _REPLY_OUT.flush()


def redirect_stdout():
    """Keeps file descriptor 1 for the replies and sends everything else that writes to stdout to
    stderr: Python prints (sys.stdout) and also native code writing to fd 1 (the exporters and
    ONNX Runtime are C++ underneath). Returns the reply stream."""
    reply_fd = os.dup(sys.stdout.fileno())
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return os.fdopen(reply_fd, "w")


# --- models ---------------------------------------------------------------------------------------


class Softmaxed(nn.Module):
    """model(x) followed by the softmax over its last axis, as in torch_bench's inference steps."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), dim=-1)


class MeanPooled(nn.Module):
    """BERT's last hidden states averaged over the sequence, as in torch_bench's MiniLM steps."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden.mean(dim=1)


def dense_infer(make_model, input_shape):
    """prepare(args) -> (batch, model, inputs by graph input name, tolerance) of an mlp/cnn
    inference workload: the same draws, in the same order, as torch_bench's build_mlp_infer /
    build_cnn_infer."""

    def prepare(args):
        tb.seeded()
        model = Softmaxed(make_model()).eval()
        x = torch.randn(*input_shape)
        return input_shape[0], model, {"x": x}, TOLERANCE_DENSE

    return prepare


def minilm_infer(batch, seq):
    """As torch_bench's build_minilm_infer(batch, seq)."""

    def prepare(args):
        tb.seeded()
        model = MeanPooled(tb.load_bert(args.minilm).eval()).eval()
        ids, mask = tb.minilm_inputs(batch, seq)
        return batch, model, {"input_ids": ids, "attention_mask": mask}, TOLERANCE_MINILM

    return prepare


PREPARE = {
    "mlp_latency_b1": dense_infer(tb.mlp_model, (1, 784)),
    "mlp_infer_b1024": dense_infer(tb.mlp_model, (1024, 784)),
    "cnn_latency_b1": dense_infer(tb.cnn_model, (1, 1, 28, 28)),
    "cnn_infer_b64": dense_infer(tb.cnn_model, (64, 1, 28, 28)),
    "minilm_infer": minilm_infer(tb.MINILM_BATCH, tb.MINILM_SEQ),
    "minilm_latency_1x16": minilm_infer(1, 16),
}


# --- export and session ---------------------------------------------------------------------------


def export(model, inputs, path):
    """Writes the ONNX graph of model(*inputs.values()) to path (atomically: a reader never sees a
    partly written file)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with torch.no_grad(), warnings.catch_warnings():
        # Expected, so only noise in the log: the TorchScript exporter is deprecated (see the module
        # docstring for why it is used), and tracing fixes shapes and Python-side conditions (the
        # graph is exported for exactly the input it is run on, and its output is checked).
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=".*TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        try:
            torch.onnx.export(
                model, tuple(inputs.values()), tmp, dynamo=False, opset_version=OPSET,
                input_names=list(inputs), output_names=["output"],
            )
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
    os.replace(tmp, path)


def session_options(threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def build(name, args):
    batch, model, inputs, tolerance = PREPARE[name](args)
    path = os.path.join(args.cache, f"{name}.onnx")
    t0 = time.perf_counter()
    export(model, inputs, path)
    log(f"exported {name} to {path} in {time.perf_counter() - t0:.2f} s")
    session = ort.InferenceSession(
        path, session_options(args.threads), providers=["CPUExecutionProvider"])

    # Feed exactly the graph's inputs: an exporter may drop an input that the traced graph does not
    # use (e.g. an all-ones attention mask that the model skips), and BERT's token_type_ids are
    # only an input if the wrapped model passes them (it does not: they default to zeros).
    graph_inputs = [i.name for i in session.get_inputs()]
    missing = [n for n in graph_inputs if n not in inputs]
    if missing:
        raise RuntimeError(f"the exported graph has inputs {missing} that the workload lacks")
    # numpy inputs prepared once: float32 for mlp/cnn, int64 ids and mask for MiniLM.
    feeds = {n: np.ascontiguousarray(inputs[n].numpy()) for n in graph_inputs}
    log(f"{name}: graph inputs {[(n, feeds[n].dtype.name, feeds[n].shape) for n in graph_inputs]}")

    # Correctness check (untimed): ONNX Runtime against the PyTorch model on the same input.
    with torch.inference_mode():
        expected = model(*inputs.values()).numpy()
    (actual,) = session.run(None, feeds)
    if actual.shape != expected.shape:
        raise RuntimeError(f"output shape {actual.shape}, PyTorch's is {expected.shape}")
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    log(f"{name}: max abs difference from PyTorch {diff:.3g} (tolerance {tolerance:g})")
    if not diff < tolerance:  # also catches NaN
        raise RuntimeError(
            f"output differs from PyTorch's: max abs difference {diff:.3g} >= {tolerance:g}")

    def step():
        return session.run(None, feeds)

    return tb.Workload(batch, step, contextlib.nullcontext)


# --- server ---------------------------------------------------------------------------------------


def info(args):
    import onnx

    tf_version = tb.transformers_version()
    return {
        "workload": "info",
        "engine": f"onnxruntime {ort.__version__}",
        "threads": args.threads,
        "interop_threads": 1,
        "execution_mode": "sequential",
        "graph_optimization_level": "all",
        "providers": ["CPUExecutionProvider"],
        "exporter": f"torch.onnx (TorchScript), opset {OPSET}",
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "transformers": tf_version,
        "device": "cpu",
        "dtype": "float32",
    }


# The request handling is torch_bench's, over this engine's builders and info.
BUILDERS = {name: (lambda args, name=name: build(name, args)) for name in PREPARE}


def main():
    global _REPLY_OUT
    _REPLY_OUT = redirect_stdout()

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=tb.default_threads(),
                        help="intra-op threads (default: $OMP_NUM_THREADS, else all CPUs)")
    parser.add_argument("--minilm", default="data/minilm",
                        help="MiniLM (BERT) model directory (default: data/minilm)")
    parser.add_argument("--cache", default="bench/.onnx",
                        help="directory for the exported .onnx files (default: bench/.onnx)")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    os.makedirs(args.cache, exist_ok=True)

    # PyTorch only builds, exports and checks the models; it gets the same thread count.
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    log(f"onnxruntime {ort.__version__}, {args.threads} intra-op threads, 1 inter-op thread; "
        f"pytorch {torch.__version__} for export")

    built = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        reply(tb.handle(line, args, built, builders=BUILDERS, describe=info))


if __name__ == "__main__":
    main()
