#!/usr/bin/env python3
"""PyTorch engine of the graft benchmark (see bench/compare.py).

A long-lived server: reads one JSON request per line on stdin, writes exactly one JSON reply per
line on stdout (flushed after each reply); logs go to stderr. EOF on stdin ends it.

  request: {"workload": "mlp", "warmup": 3, "steps": 10}
  reply:   {"workload": "mlp", "batch": 128, "seconds": [t_1, ..., t_10]}
  request: {"workload": "info"}
  reply:   {"workload": "info", "engine": "pytorch 2.15.0", ...}
  on any failure: {"workload": ..., "error": "..."}

Every workload's model and data are built on its first request (seeded, float32, CPU) and kept,
so later requests for it need less warm-up. Each timed step is measured with time.perf_counter;
the value a step returns is kept alive until after its timing ends, so freeing it is not timed.

Usage: python bench/torch_bench.py [--threads T] [--minilm DIR]   (cwd: the repository root)
"""

import argparse
import contextlib
import json
import math
import os
import sys
import time
import traceback

import torch
from torch import nn

# Where replies go. main() points it at the real stdout and sends sys.stdout to stderr; that is
# done there, not at import, so that bench/ort_bench.py can import the model builders of this module
# without its own stdout being taken away.
_REPLY_OUT = sys.stdout


def log(msg):
    print(f"[torch_bench] {msg}", file=sys.stderr, flush=True)


def reply(obj):
    _REPLY_OUT.write(json.dumps(obj) + "\n")
    _REPLY_OUT.flush()


class Workload:
    """batch: samples per step; step(): one step, returns what must outlive the timing;
    context(): entered around the warm-up and timed steps of a request."""

    def __init__(self, batch, step, context=contextlib.nullcontext):
        self.batch = batch
        self.step = step
        self.context = context


def seeded():
    torch.manual_seed(0)


def train_step(model, loss_fn, opt, x, y):
    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = loss_fn(out, y)
        loss.backward()
        opt.step()
        return loss

    return step


def classifier_workload(model, x, y, lr=1e-3, params=None):
    model.train()
    opt = torch.optim.Adam(model.parameters() if params is None else params, lr=lr)
    return Workload(y.shape[0], train_step(model, nn.CrossEntropyLoss(), opt, x, y))


# --- mlp / cnn ------------------------------------------------------------------------------------


def mlp_model():
    return nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)
    )


def build_mlp(args):
    seeded()
    model = mlp_model()
    x = torch.randn(128, 784)
    y = torch.randint(0, 10, (128,))
    return classifier_workload(model, x, y)


def build_mlp_infer(batch):
    def build(args):
        seeded()
        model = mlp_model().eval()
        x = torch.randn(batch, 784)

        def step():
            return torch.softmax(model(x), dim=-1)

        return Workload(batch, step, torch.inference_mode)

    return build


def cnn_model():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def build_cnn(args):
    seeded()
    model = cnn_model()
    x = torch.randn(64, 1, 28, 28)
    y = torch.randint(0, 10, (64,))
    return classifier_workload(model, x, y)


def build_cnn_infer(batch):
    def build(args):
        seeded()
        model = cnn_model().eval()
        x = torch.randn(batch, 1, 28, 28)

        def step():
            return torch.softmax(model(x), dim=-1)

        return Workload(batch, step, torch.inference_mode)

    return build


# --- recurrent ------------------------------------------------------------------------------------


class RnnClassifier(nn.Module):
    """Embedding(10000,128) -> LSTM/GRU(128,128) -> last hidden state(s) -> Linear(.., 2)."""

    def __init__(self, kind, bidirectional=False):
        super().__init__()
        self.embed = nn.Embedding(10000, 128)
        cell = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = cell(128, 128, batch_first=True, bidirectional=bidirectional)
        self.bidirectional = bidirectional
        self.head = nn.Linear(256 if bidirectional else 128, 2)

    def forward(self, ids):
        _, h = self.rnn(self.embed(ids))
        h_n = h[0] if isinstance(h, tuple) else h  # LSTM: (h_n, c_n); GRU: h_n. [dirs, B, H]
        if self.bidirectional:
            last = torch.cat([h_n[0], h_n[1]], dim=-1)  # [forward final, backward final]
        else:
            last = h_n[-1]
        return self.head(last)


def build_rnn(kind, bidirectional=False):
    def build(args):
        seeded()
        model = RnnClassifier(kind, bidirectional)
        ids = torch.randint(0, 10000, (32, 100))
        y = torch.randint(0, 2, (32,))
        return classifier_workload(model, ids, y)

    return build


# --- MiniLM ---------------------------------------------------------------------------------------

MINILM_BATCH, MINILM_SEQ = 32, 128


def minilm_inputs(batch=MINILM_BATCH, seq=MINILM_SEQ):
    ids = torch.randint(1000, 30000, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    return ids, mask


def load_bert(path, **config_overrides):
    import transformers
    from transformers import BertModel

    # The pooler is never used: leave it out so that it is not computed either (its weights in the
    # checkpoint are then reported as unexpected, which is the one thing the load would report).
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    model = BertModel.from_pretrained(path, add_pooling_layer=False, **config_overrides).float()
    log(f"loaded {path}: attention implementation {model.config._attn_implementation}")
    return model


def build_minilm_infer(batch, seq):
    """Embeddings of `batch` sequences of `seq` tokens: the mean of the last hidden states."""

    def build(args):
        seeded()
        model = load_bert(args.minilm).eval()
        ids, mask = minilm_inputs(batch, seq)

        def step():
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            return hidden.mean(dim=1)

        return Workload(batch, step, torch.inference_mode)

    return build


class MiniLMClassifier(nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert
        self.head = nn.Linear(bert.config.hidden_size, 2)

    def forward(self, inputs):
        ids, mask = inputs
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        return self.head(hidden.mean(dim=1))


def build_minilm_finetune(args):
    seeded()
    bert = load_bert(args.minilm, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    bert.requires_grad_(False)
    for i in (4, 5):
        bert.encoder.layer[i].requires_grad_(True)
    model = MiniLMClassifier(bert)
    trainable = [p for p in model.parameters() if p.requires_grad]
    log(f"minilm_finetune: {sum(p.numel() for p in trainable)} trainable parameters")
    ids, mask = minilm_inputs()
    y = torch.randint(0, 2, (MINILM_BATCH,))
    return classifier_workload(model, (ids, mask), y, lr=1e-4, params=trainable)


# --- sgemm ----------------------------------------------------------------------------------------


def build_sgemm(args):
    seeded()
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)

    def step():
        return torch.matmul(a, b)

    return Workload(1, step)


BUILDERS = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "lstm": build_rnn("lstm"),
    "gru": build_rnn("gru"),
    "bilstm": build_rnn("lstm", bidirectional=True),
    "minilm_infer": build_minilm_infer(MINILM_BATCH, MINILM_SEQ),
    "minilm_finetune": build_minilm_finetune,
    "mlp_latency_b1": build_mlp_infer(1),
    "mlp_infer_b1024": build_mlp_infer(1024),
    "sgemm": build_sgemm,
    "cnn_latency_b1": build_cnn_infer(1),
    "cnn_infer_b64": build_cnn_infer(64),
    "minilm_latency_1x16": build_minilm_infer(1, 16),
}


# --- server ---------------------------------------------------------------------------------------


def count(req, key, default, minimum):
    value = req.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"'{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def transformers_version():
    """The installed transformers' version, None without it (only the MiniLM workloads need it)."""
    try:
        import transformers

        return transformers.__version__
    except Exception:
        return None


def info(args):
    import numpy

    tf_version = transformers_version()
    return {
        "workload": "info",
        "engine": f"pytorch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "numpy": numpy.__version__,
        "transformers": tf_version,
        "device": "cpu",
        "dtype": "float32",
    }


def run(workload, warmup, steps):
    seconds = []
    with workload.context():
        for _ in range(warmup):
            workload.step()
        for _ in range(steps):
            t0 = time.perf_counter()
            out = workload.step()
            t1 = time.perf_counter()
            del out
            seconds.append(t1 - t0)
    return seconds


def handle(line, args, built, builders=None, describe=None):
    """The reply to one request line. builders (name -> build(args) -> Workload) and describe (the info
    reply) default to this engine's; bench/ort_bench.py passes its own."""
    builders = BUILDERS if builders is None else builders
    describe = info if describe is None else describe
    try:
        req = json.loads(line)
    except json.JSONDecodeError as e:
        return {"error": f"invalid JSON request: {e}"}
    if not isinstance(req, dict):
        return {"error": "the request must be a JSON object"}
    name = req.get("workload")
    if name == "info":
        return describe(args)
    if name not in builders:
        return {"workload": name, "error": f"unknown workload {name!r}"}
    try:
        warmup = count(req, "warmup", 0, 0)
        steps = count(req, "steps", 1, 1)
    except ValueError as e:
        return {"workload": name, "error": str(e)}
    try:
        if name not in built:
            t0 = time.perf_counter()
            built[name] = builders[name](args)
            log(f"built {name} in {time.perf_counter() - t0:.2f} s")
        workload = built[name]
        seconds = run(workload, warmup, steps)
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        return {"workload": name, "error": f"{type(e).__name__}: {e}"}
    if not all(math.isfinite(s) for s in seconds):
        return {"workload": name, "error": "non-finite timing"}
    return {"workload": name, "batch": workload.batch, "seconds": seconds}


def default_threads():
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return os.cpu_count() or 1


def main():
    global _REPLY_OUT
    # stdout carries only protocol replies: anything else that prints (libraries included) goes to
    # stderr.
    _REPLY_OUT, sys.stdout = sys.stdout, sys.stderr

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="intra-op threads (default: $OMP_NUM_THREADS, else all CPUs)")
    parser.add_argument("--minilm", default="data/minilm",
                        help="MiniLM (BERT) model directory (default: data/minilm)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError as e:
        log(f"set_num_interop_threads(1) failed: {e}")
    torch.set_default_dtype(torch.float32)
    seeded()
    log(f"pytorch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{torch.get_num_interop_threads()} interop threads")

    built = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        reply(handle(line, args, built))


if __name__ == "__main__":
    main()
