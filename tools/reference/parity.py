"""PyTorch reference fixtures for graft's parity tests and its import/export end-to-end tests.

Run from the repository root, in a virtual environment with the pinned versions:

    python -m venv .venv && .venv/bin/pip install -r tools/reference/requirements.txt
    .venv/bin/python tools/reference/parity.py

or, to write only some parity fixtures (names or shell patterns; the others and the end-to-end fixtures are left
as they are):

    .venv/bin/python tools/reference/parity.py 'pool1d-avg_*' pool2d-avg_2

Without arguments it rewrites

* `crates/graft/tests/fixtures/parity/<group>-<case>.safetensors`: one file per case. The unit tests in
  `crates/graft/tests/numerics/parity.rs` (`cargo test --release -p graft --test numerics parity`) compare graft against them;
  `GRAFT_PARITY_REPORT=1` also writes the measured maximum errors to `crates/graft/tests/fixtures/parity/REPORT.md`.
* `crates/graft/tests/fixtures/e2e/{cnn,bilstm}/`: two small models trained in PyTorch, for `graft import`,
  `graft predict` and `graft export` (crates/graft-cli/tests/cli.rs).

CI never runs this script; it only reads the committed fixtures.

Layer fixtures hold, as float32:

* `param.<name>`: the weights (and batch-norm buffers) under graft's names, which are PyTorch's state-dict keys
  prefixed by the node name (`layer.weight_ih_l0`, `layer.self_attn.in_proj_weight`, `emb.weight`, ...);
* `input.<k>`: the model inputs in graft's layouts (images `[B, C, H, W]`; sequences `[B, T, F]`, also for the
  1D convolutions and pools, which torch runs on the transposed `[B, C, L]`; token ids as floats);
* `output.<k>`: the model outputs, `probe.<k>`: a fixed random tensor of the same shape;
* `grad_input.<k>` (float inputs only) and `grad_param.<name>`: the gradient of `sum_k sum(output_k * probe_k)`;
* `after.<name>` (train-mode batch norm): the running statistics after the forward pass.

Metadata: `spec` (a graft `[model]` table in graph form), `mode` (`train` or `eval`) and `note`.

The reference is PyTorch evaluated in float64 on weights and inputs that are exactly representable in float32, so
each measured error is graft's own float32 error against PyTorch's definition, not the sum of two rounding errors.

Loss fixtures (`loss-*`) hold `logits`, `target`, optional `weights` (per row), `value` and `grad_logits`, with the
graft loss as metadata `loss`. Optimizer fixtures (`optim-*`) train the same small model (Linear 4→3, tanh,
Linear 3→2, MSE on fixed data) for 20 steps and hold the parameters after every step (`step.<k>.<name>`) and the
loss before it (`loss.<k>`).

Loss-function fixtures (`loss_fn-*`: `graft::task::{divergence, metric_learning, gan}`) hold the function's float
inputs `input.<name>`, integer `labels` (as floats) where it takes them, `value`, an optional `probe` (for a per-row
value) and `grad_input.<name>`: the gradient of the value (of sum(value · probe)) w.r.t. every float input, with
metadata `fn`, `inputs` (the names in argument order) and `options` (graft's options struct as TOML). The mined
triplet losses are written out with loops in plain torch (`mined_reference`).

Gradient-penalty fixtures (`gradient_penalty-*`) hold a small critic's weights, `real`,
`fake`, the interpolation coefficients `alpha`, the score `score` = D(x̂), the input gradient `grad_input`, the WGAN-GP
penalty `value` (λ = 10, metadata `lambda`) and its gradient w.r.t. every parameter (`grad_param.<name>`), the
second-order gradients of `torch.autograd.grad(create_graph=True)`.
"""

import fnmatch
import json
import math
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

ROOT = Path(__file__).resolve().parents[2]
PARITY = ROOT / "crates/graft/tests/fixtures/parity"
E2E = ROOT / "crates/graft/tests/fixtures/e2e"
DT = torch.float64
# torch notes that padding='same' with an even kernel copies the input; that is the case being tested.
warnings.filterwarnings("ignore", message="Using padding='same'")


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def rounded(t):
    """The float64 tensor holding the float32 rounding of `t` (so graft, in float32, sees exactly the same numbers)."""
    return t.to(torch.float32).to(DT)


def randn(*shape, scale=1.0):
    return rounded(torch.randn(*shape, dtype=DT) * scale)


def uniform(*shape, lo=-1.0, hi=1.0):
    return rounded(torch.rand(*shape, dtype=DT) * (hi - lo) + lo)


def np32(t):
    return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def model_toml(inputs, nodes, outputs):
    """A graft `[model]` table in graph form. `nodes`: (name, [sources], {kind: options})."""
    lines = ["[model]", f"inputs = {toml_value(inputs)}", f"outputs = {toml_value(outputs)}"]
    for name, sources, layer in nodes:
        lines += ["", "[[model.nodes]]", f"name = {json.dumps(name)}", f"from = {toml_value(sources)}"]
        for kind, options in layer.items():
            lines.append(f"{kind} = {toml_value(options)}")
    return "\n".join(lines) + "\n"


def one_node(layer, shape, outputs=("layer",)):
    """`x [shape] → layer`."""
    return model_toml({"x": list(shape)}, [("layer", ["x"], layer)], list(outputs))


def with_embedding(layer, steps, vocab, dim, extra_inputs=None, sources=("emb",), outputs=("layer",)):
    """`ids [steps] → emb (padding_idx 0) → layer` (the embedding yields the padding mask)."""
    inputs = {"ids": [steps]}
    inputs.update(extra_inputs or {})
    nodes = [
        ("emb", ["ids"], {"embedding": {"input_dim": vocab, "output_dim": dim, "padding_idx": 0}}),
        ("layer", list(sources), layer),
    ]
    return model_toml(inputs, nodes, list(outputs))


def padded_ids(lengths, steps, vocab):
    """Right-padded token ids (0 = padding) as floats, graft's input layout."""
    ids = torch.randint(1, vocab, (len(lengths), steps))
    for b, n in enumerate(lengths):
        ids[b, n:] = 0
    return ids.to(DT)


def channels_last(f):
    """Applies a channels-first torch op `[B, C, L]` to graft's channels-last sequences `[B, L, C]`."""
    return lambda x: f(x.transpose(1, 2)).transpose(1, 2)


NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d)


def randomize(mods):
    """Fixed random weights, exactly representable in float32."""
    with torch.no_grad():
        norm_params = set()
        for prefix, m in mods.named_modules():
            if isinstance(m, NORMS):
                for n, p in m.named_parameters(recurse=False):
                    full = f"{prefix}.{n}" if prefix else n
                    norm_params.add(full)
                    p.copy_(uniform(*p.shape, lo=0.7, hi=1.3) if n == "weight" else uniform(*p.shape, lo=-0.3, hi=0.3))
        for name, p in mods.named_parameters():
            if name in norm_params:
                continue
            if p.dim() >= 2:
                bound = 1.2 / math.sqrt(p[0].numel())
                p.copy_(uniform(*p.shape, lo=-bound, hi=bound))
            else:
                p.copy_(uniform(*p.shape, lo=-0.5, hi=0.5))
        for name, b in mods.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(randn(*b.shape, scale=0.3))
            elif name.endswith("running_var"):
                b.copy_(uniform(*b.shape, lo=0.5, hi=1.5))


def save_file(tensors, path, metadata):
    """Writes float32 tensors in the safetensors format with sorted keys, so the same inputs give the same bytes
    (the safetensors package orders the metadata differently from run to run)."""
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        shape = list(tensors[name].shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        f.writelines(blobs)


def write(name, tensors, meta):
    if ONLY and not any(fnmatch.fnmatchcase(name, pattern) for pattern in ONLY):
        return
    path = PARITY / f"{name}.safetensors"
    save_file({k: np32(v) if torch.is_tensor(v) else v for k, v in tensors.items()}, path, meta)
    WRITTEN.append(name)


WRITTEN = []
# Fixture names (shell patterns) given on the command line; empty: every fixture.
ONLY = []


class Case:
    """One fixture; seeds torch from its name so every case is reproducible on its own."""

    def __init__(self, group, case):
        self.name = f"{group}-{case}"
        torch.manual_seed(zlib.crc32(self.name.encode()))

    def layer(self, spec, mods, inputs, forward, mode="eval", ids=(), padding_rows=(), note="", meta=None):
        """Runs `forward(mods, inputs) -> [outputs]` in float64 and writes the fixture.

        `ids`: indices of token-id inputs (no gradient); `padding_rows`: (parameter, row) set to zero, the
        embedding rows at `padding_idx` (graft outputs zeros at padding positions, torch looks the row up)."""
        mods = mods.to(DT)
        randomize(mods)
        with torch.no_grad():
            params = dict(mods.named_parameters())
            for pname, row in padding_rows:
                params[pname][row].zero_()
        buffers = {
            n: b.detach().clone() for n, b in mods.named_buffers() if not n.endswith("num_batches_tracked")
        }
        mods.train(mode == "train")
        xs = []
        for i, x in enumerate(inputs):
            x = rounded(x.detach().clone())
            if i not in ids:
                x.requires_grad_(True)
            xs.append(x)
        outs = forward(mods, xs)
        probes = [randn(*o.shape) for o in outs]
        total = sum((o * p).sum() for o, p in zip(outs, probes))
        float_inputs = [x for i, x in enumerate(xs) if i not in ids]
        targets = float_inputs + list(params.values())
        grads = torch.autograd.grad(total, targets, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(targets, grads)]
        tensors = {}
        for n, p in params.items():
            tensors[f"param.{n}"] = p
        for n, b in buffers.items():
            tensors[f"param.{n}"] = b
        for i, x in enumerate(xs):
            tensors[f"input.{i}"] = x
        for k, (o, p) in enumerate(zip(outs, probes)):
            tensors[f"output.{k}"] = o
            tensors[f"probe.{k}"] = p
        g = iter(grads)
        for i in range(len(xs)):
            if i not in ids:
                tensors[f"grad_input.{i}"] = next(g)
        for n in params:
            tensors[f"grad_param.{n}"] = next(g)
        if mode == "train":
            for n, b in mods.named_buffers():
                if not n.endswith("num_batches_tracked"):
                    tensors[f"after.{n}"] = b
        write(self.name, tensors, {"spec": spec, "mode": mode, "note": note, **(meta or {})})


def mods(**kw):
    return nn.ModuleDict(kw)


def apply_layer(f):
    """forward for one-node cases: `f(module, x)`."""
    return lambda m, xs: [f(m["layer"], xs[0])]


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------


def dense():
    cases = [
        ("basic", (3, 5), {"units": 4}, nn.Linear(5, 4), lambda y: y),
        ("batch1_relu", (1, 7), {"units": 3, "activation": "relu"}, nn.Linear(7, 3), F.relu),
        ("no_bias", (4, 6), {"units": 5, "use_bias": False}, nn.Linear(6, 5, bias=False), lambda y: y),
        ("sequence_tanh", (2, 4, 6), {"units": 5, "activation": "tanh"}, nn.Linear(6, 5), torch.tanh),
        ("softmax", (3, 5), {"units": 4, "activation": "softmax"}, nn.Linear(5, 4), lambda y: F.softmax(y, -1)),
    ]
    for case, shape, opts, module, act in cases:
        c = Case("dense", case)
        c.layer(
            one_node({"dense": opts}, shape[1:]),
            mods(layer=module),
            [randn(*shape)],
            lambda m, xs, act=act: [act(m["layer"](xs[0]))],
            note="nn.Linear on the last axis",
        )
    c = Case("dense", "time_distributed")
    c.layer(
        one_node({"time_distributed": {"layer": {"dense": {"units": 3}}}}, [4, 6]),
        mods(layer=nn.Linear(6, 3)),
        [randn(2, 4, 6)],
        apply_layer(lambda m, x: m(x)),
        note="time_distributed(dense) = nn.Linear on every step",
    )
    c = Case("dense", "shared_twice")
    c.layer(
        model_toml(
            {"x": [5]},
            [
                ("layer", ["x"], {"dense": {"units": 5, "activation": "tanh"}}),
                ("again", ["layer"], {"shared": "layer"}),
            ],
            ["again"],
        ),
        mods(layer=nn.Linear(5, 5)),
        [randn(3, 5)],
        lambda m, xs: [torch.tanh(m["layer"](torch.tanh(m["layer"](xs[0]))))],
        note="one nn.Linear applied twice (graft: a node sharing its weights); the gradients of both uses add up",
    )


def conv1d():
    # (case, [B, L, C], options, Conv1d kwargs, explicit F.pad (left, right) or None, note)
    cases = [
        ("basic", (2, 9, 3), {"filters": 4, "kernel": 3}, dict(out_channels=4, kernel_size=3), None, ""),
        (
            "stride2_pad1",
            (2, 10, 3),
            {"filters": 5, "kernel": 3, "stride": 2, "padding": 1},
            dict(out_channels=5, kernel_size=3, stride=2, padding=1),
            None,
            "",
        ),
        (
            "dilated",
            (2, 11, 2),
            {"filters": 3, "kernel": 3, "dilation": 2},
            dict(out_channels=3, kernel_size=3, dilation=2),
            None,
            "",
        ),
        (
            "grouped",
            (3, 8, 4),
            {"filters": 6, "kernel": 3, "groups": 2, "padding": 1},
            dict(out_channels=6, kernel_size=3, groups=2, padding=1),
            None,
            "",
        ),
        (
            "same_odd",
            (2, 8, 3),
            {"filters": 4, "kernel": 5, "padding": "same"},
            dict(out_channels=4, kernel_size=5, padding="same"),
            None,
            "torch padding='same'",
        ),
        (
            "same_even",
            (2, 7, 3),
            {"filters": 4, "kernel": 4, "padding": "same"},
            dict(out_channels=4, kernel_size=4, padding="same"),
            None,
            "torch padding='same' (the extra zero on the right)",
        ),
        (
            "same_dilated_even",
            (1, 9, 2),
            {"filters": 3, "kernel": 2, "dilation": 3, "padding": "same"},
            dict(out_channels=3, kernel_size=2, dilation=3, padding="same"),
            None,
            "torch padding='same'",
        ),
        (
            "same_stride2",
            (2, 10, 3),
            {"filters": 4, "kernel": 3, "stride": 2, "padding": "same"},
            dict(out_channels=4, kernel_size=3, stride=2),
            (0, 1),
            "torch has no 'same' for stride > 1: F.pad by the TF/Keras SAME rule (0, 1), then a valid conv",
        ),
        (
            "batch1_k1_no_bias",
            (1, 6, 5),
            {"filters": 2, "kernel": 1, "use_bias": False},
            dict(out_channels=2, kernel_size=1, bias=False),
            None,
            "",
        ),
        (
            "relu",
            (2, 7, 3),
            {"filters": 4, "kernel": 3, "activation": "relu"},
            dict(out_channels=4, kernel_size=3),
            None,
            "activation option",
        ),
    ]
    for case, shape, opts, kw, pad, note in cases:
        c = Case("conv1d", case)
        act = F.relu if opts.get("activation") == "relu" else (lambda y: y)

        def forward(m, xs, pad=pad, act=act):
            x = xs[0].transpose(1, 2)
            if pad:
                x = F.pad(x, pad)
            return [act(m["layer"](x)).transpose(1, 2)]

        c.layer(
            one_node({"conv1d": opts}, shape[1:]),
            mods(layer=nn.Conv1d(shape[2], **kw)),
            [randn(*shape)],
            forward,
            note=("nn.Conv1d on [B, C, L] (graft: [B, L, C]); " + note).rstrip("; "),
        )


def conv2d():
    cases = [
        ("3x3", (2, 2, 7, 6), {"filters": 3, "kernel": 3}, dict(out_channels=3, kernel_size=3), None, ""),
        ("1x1", (2, 3, 5, 4), {"filters": 4, "kernel": 1}, dict(out_channels=4, kernel_size=1), None, ""),
        (
            "3x1_pad",
            (2, 2, 6, 5),
            {"filters": 3, "kernel": [3, 1], "padding": [1, 0]},
            dict(out_channels=3, kernel_size=(3, 1), padding=(1, 0)),
            None,
            "",
        ),
        (
            "1x3_stride",
            (2, 2, 6, 7),
            {"filters": 3, "kernel": [1, 3], "stride": [1, 2]},
            dict(out_channels=3, kernel_size=(1, 3), stride=(1, 2)),
            None,
            "",
        ),
        (
            "dilated",
            (2, 2, 9, 8),
            {"filters": 3, "kernel": 3, "dilation": 2, "padding": 2},
            dict(out_channels=3, kernel_size=3, dilation=2, padding=2),
            None,
            "",
        ),
        (
            "grouped",
            (2, 4, 6, 5),
            {"filters": 4, "kernel": 3, "groups": 2, "padding": 1},
            dict(out_channels=4, kernel_size=3, groups=2, padding=1),
            None,
            "",
        ),
        (
            "depthwise",
            (2, 3, 5, 5),
            {"filters": 6, "kernel": 3, "groups": 3},
            dict(out_channels=6, kernel_size=3, groups=3),
            None,
            "",
        ),
        (
            "same_odd",
            (2, 2, 6, 7),
            {"filters": 3, "kernel": 3, "padding": "same"},
            dict(out_channels=3, kernel_size=3, padding="same"),
            None,
            "torch padding='same'",
        ),
        (
            "same_even",
            (2, 2, 6, 7),
            {"filters": 3, "kernel": [2, 4], "padding": "same"},
            dict(out_channels=3, kernel_size=(2, 4), padding="same"),
            None,
            "torch padding='same' (the extra zero at the bottom/right)",
        ),
        (
            "same_stride2",
            (1, 2, 7, 6),
            {"filters": 3, "kernel": 3, "stride": 2, "padding": "same"},
            dict(out_channels=3, kernel_size=3, stride=2),
            (0, 1, 1, 1),
            "torch has no 'same' for stride > 1: F.pad by the TF/Keras SAME rule, then a valid conv",
        ),
        (
            "batch1_stride2_pad1",
            (1, 3, 7, 7),
            {"filters": 2, "kernel": 3, "stride": 2, "padding": 1},
            dict(out_channels=2, kernel_size=3, stride=2, padding=1),
            None,
            "",
        ),
        (
            "no_bias_elu",
            (2, 2, 5, 5),
            {"filters": 3, "kernel": 2, "use_bias": False, "activation": "elu"},
            dict(out_channels=3, kernel_size=2, bias=False),
            None,
            "activation option",
        ),
    ]
    for case, shape, opts, kw, pad, note in cases:
        c = Case("conv2d", case)
        act = F.elu if opts.get("activation") == "elu" else (lambda y: y)

        def forward(m, xs, pad=pad, act=act):
            x = xs[0]
            if pad:
                x = F.pad(x, pad)
            return [act(m["layer"](x))]

        c.layer(
            one_node({"conv2d": opts}, shape[1:]),
            mods(layer=nn.Conv2d(shape[1], **kw)),
            [randn(*shape)],
            forward,
            note=("nn.Conv2d; " + note).rstrip("; "),
        )


def conv_transpose():
    """ConvTranspose2d and ConvTranspose1d (graft `conv_transpose2d`, `conv_transpose1d` on [B, L, C])."""
    cases2d = [
        ("k3", (2, 2, 4, 5), {"filters": 3, "kernel": 3}, dict(out_channels=3, kernel_size=3)),
        (
            "s2_p1_op1",
            (2, 3, 4, 4),
            {"filters": 2, "kernel": 4, "stride": 2, "padding": 1, "output_padding": 1},
            dict(out_channels=2, kernel_size=4, stride=2, padding=1, output_padding=1),
        ),
        (
            "rect_stride",
            (2, 2, 3, 5),
            {"filters": 3, "kernel": [3, 2], "stride": [2, 1], "padding": [1, 0]},
            dict(out_channels=3, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
        ),
        (
            "dilated_grouped",
            (2, 4, 3, 3),
            {"filters": 6, "kernel": 2, "dilation": 2, "groups": 2, "use_bias": False},
            dict(out_channels=6, kernel_size=2, dilation=2, groups=2, bias=False),
        ),
    ]
    for case, shape, opts, kw in cases2d:
        Case("conv_transpose", "2d_" + case).layer(
            one_node({"conv_transpose2d": opts}, shape[1:]),
            mods(layer=nn.ConvTranspose2d(shape[1], **kw)),
            [randn(*shape)],
            lambda m, xs: [m["layer"](xs[0])],
            note="nn.ConvTranspose2d",
        )
    cases1d = [
        ("k3_s2", (2, 5, 3), {"filters": 2, "kernel": 3, "stride": 2}, dict(out_channels=2, kernel_size=3, stride=2)),
        (
            "p1_op1_relu",
            (2, 4, 2),
            {"filters": 3, "kernel": 3, "stride": 2, "padding": 1, "output_padding": 1, "activation": "relu"},
            dict(out_channels=3, kernel_size=3, stride=2, padding=1, output_padding=1),
        ),
    ]
    for case, shape, opts, kw in cases1d:
        act = F.relu if opts.get("activation") == "relu" else (lambda y: y)
        Case("conv_transpose", "1d_" + case).layer(
            one_node({"conv_transpose1d": opts}, shape[1:]),
            mods(layer=nn.ConvTranspose1d(shape[2], **kw)),
            [randn(*shape)],
            lambda m, xs, act=act: [act(m["layer"](xs[0].transpose(1, 2))).transpose(1, 2)],
            note="nn.ConvTranspose1d on [B, C, L] (graft: [B, L, C])",
        )


def upsampling():
    """nn.Upsample with an integer scale factor (graft `upsampling2d`; `upsampling1d` on [B, L, C])."""
    cases2d = [
        ("nearest_2", (2, 2, 3, 4), {"size": 2}, dict(scale_factor=2, mode="nearest")),
        ("nearest_2x3", (2, 1, 3, 2), {"size": [2, 3]}, dict(scale_factor=(2, 3), mode="nearest")),
        (
            "bilinear_2",
            (2, 2, 3, 4),
            {"size": 2, "interpolation": "bilinear"},
            dict(scale_factor=2, mode="bilinear", align_corners=False),
        ),
        (
            "bilinear_3_corners",
            (1, 2, 3, 3),
            {"size": 3, "interpolation": "bilinear", "align_corners": True},
            dict(scale_factor=3, mode="bilinear", align_corners=True),
        ),
    ]
    for case, shape, opts, kw in cases2d:
        Case("upsampling", "2d_" + case).layer(
            one_node({"upsampling2d": opts}, shape[1:]),
            mods(layer=nn.Upsample(**kw)),
            [randn(*shape)],
            lambda m, xs: [m["layer"](xs[0])],
            note="nn.Upsample",
        )
    cases1d = [
        ("nearest_2", (2, 4, 3), {"size": 2}, dict(scale_factor=2, mode="nearest")),
        (
            "linear_3",
            (2, 4, 2),
            {"size": 3, "interpolation": "bilinear"},
            dict(scale_factor=3, mode="linear", align_corners=False),
        ),
    ]
    for case, shape, opts, kw in cases1d:
        Case("upsampling", "1d_" + case).layer(
            one_node({"upsampling1d": opts}, shape[1:]),
            mods(layer=nn.Upsample(**kw)),
            [randn(*shape)],
            lambda m, xs: [m["layer"](xs[0].transpose(1, 2)).transpose(1, 2)],
            note="nn.Upsample on [B, C, L] (graft: [B, L, C]; bilinear is torch's linear)",
        )


def avg_exclude_pad(pool, x, pad, *args):
    """Average pooling over asymmetric padding that leaves the padding out (count_include_pad=False)."""
    return pool(F.pad(x, pad), *args) / pool(F.pad(torch.ones_like(x), pad), *args)


def pool2d():
    neg = float("-inf")
    cases = [
        ("max_2", {"max_pool2d": {"size": 2}}, (2, 3, 7, 6), lambda x: F.max_pool2d(x, 2), "floor of odd sizes"),
        (
            "max_3_stride2_pad1",
            {"max_pool2d": {"size": 3, "stride": 2, "padding": 1}},
            (2, 2, 7, 6),
            lambda x: F.max_pool2d(x, 3, 2, 1),
            "",
        ),
        (
            "max_2x3_stride1x2",
            {"max_pool2d": {"size": [2, 3], "stride": [1, 2]}},
            (1, 2, 5, 7),
            lambda x: F.max_pool2d(x, (2, 3), (1, 2)),
            "",
        ),
        (
            "max_same_2",
            {"max_pool2d": {"size": 2, "stride": 1, "padding": "same"}},
            (2, 2, 5, 4),
            lambda x: F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=neg), 2, 1),
            "graft 'same' (TF rule): F.pad with -inf (0, 1) per axis",
        ),
        (
            "max_same_3_stride2",
            {"max_pool2d": {"size": 3, "stride": 2, "padding": "same"}},
            (2, 2, 7, 6),
            lambda x: F.max_pool2d(F.pad(x, (0, 1, 1, 1), value=neg), 3, 2),
            "graft 'same' (TF rule): F.pad with -inf",
        ),
        ("avg_2", {"avg_pool2d": {"size": 2}}, (2, 3, 7, 6), lambda x: F.avg_pool2d(x, 2), "floor of odd sizes"),
        (
            "avg_3_stride2_pad1",
            {"avg_pool2d": {"size": 3, "stride": 2, "padding": 1, "count_include_pad": False}},
            (2, 2, 7, 6),
            lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
            "count_include_pad=False",
        ),
        (
            "avg_3_stride1_pad1_batch1",
            {"avg_pool2d": {"size": 3, "stride": 1, "padding": 1, "count_include_pad": False}},
            (1, 2, 5, 5),
            lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
            "count_include_pad=False",
        ),
        (
            "avg_same_3_stride2",
            {"avg_pool2d": {"size": 3, "stride": 2, "padding": "same", "count_include_pad": False}},
            (2, 2, 7, 6),
            lambda x: avg_exclude_pad(F.avg_pool2d, x, (0, 1, 1, 1), 3, 2),
            "graft 'same' (TF rule), padding left out of the average",
        ),
        (
            "avg_3_stride2_pad1_include_pad",
            {"avg_pool2d": {"size": 3, "stride": 2, "padding": 1}},
            (2, 2, 7, 6),
            lambda x: F.avg_pool2d(x, 3, 2, 1),
            "count_include_pad=True (both defaults)",
        ),
        (
            "avg_2x3_stride1_pad1x0_include_pad",
            {"avg_pool2d": {"size": [2, 3], "stride": 1, "padding": [1, 0], "count_include_pad": True}},
            (1, 2, 5, 6),
            lambda x: F.avg_pool2d(x, (2, 3), 1, (1, 0), count_include_pad=True),
            "count_include_pad=True",
        ),
        (
            "avg_same_3_stride2_include_pad",
            {"avg_pool2d": {"size": 3, "stride": 2, "padding": "same"}},
            (2, 2, 7, 6),
            lambda x: F.avg_pool2d(F.pad(x, (0, 1, 1, 1)), 3, 2),
            "graft 'same' (TF rule): F.pad with zeros, counted in the average",
        ),
    ]
    for case, layer, shape, f, note in cases:
        c = Case("pool2d", case)
        c.layer(one_node(layer, shape[1:]), mods(), [randn(*shape)], lambda m, xs, f=f: [f(xs[0])], note=note)


def pool1d():
    neg = float("-inf")
    cases = [
        ("max_2", {"max_pool1d": {"size": 2}}, (2, 9, 3), lambda x: F.max_pool1d(x, 2), "floor of odd lengths"),
        (
            "max_3_stride1_pad1",
            {"max_pool1d": {"size": 3, "stride": 1, "padding": 1}},
            (2, 7, 3),
            lambda x: F.max_pool1d(x, 3, 1, 1),
            "",
        ),
        (
            "max_same_2",
            {"max_pool1d": {"size": 2, "stride": 1, "padding": "same"}},
            (1, 6, 2),
            lambda x: F.max_pool1d(F.pad(x, (0, 1), value=neg), 2, 1),
            "graft 'same' (TF rule): F.pad with -inf (0, 1)",
        ),
        ("avg_2", {"avg_pool1d": {"size": 2}}, (2, 9, 3), lambda x: F.avg_pool1d(x, 2), "floor of odd lengths"),
        (
            "avg_3_stride2_pad1",
            {"avg_pool1d": {"size": 3, "stride": 2, "padding": 1, "count_include_pad": False}},
            (2, 8, 3),
            lambda x: F.avg_pool1d(x, 3, 2, 1, count_include_pad=False),
            "count_include_pad=False",
        ),
        (
            "avg_same_2_stride1",
            {"avg_pool1d": {"size": 2, "stride": 1, "padding": "same", "count_include_pad": False}},
            (2, 5, 2),
            lambda x: avg_exclude_pad(F.avg_pool1d, x, (0, 1), 2, 1),
            "graft 'same' (TF rule), padding left out of the average",
        ),
        (
            "avg_3_stride2_pad1_include_pad",
            {"avg_pool1d": {"size": 3, "stride": 2, "padding": 1}},
            (2, 8, 3),
            lambda x: F.avg_pool1d(x, 3, 2, 1),
            "count_include_pad=True (both defaults)",
        ),
        (
            "avg_4_stride1_pad2_include_pad",
            {"avg_pool1d": {"size": 4, "stride": 1, "padding": 2, "count_include_pad": True}},
            (1, 6, 2),
            lambda x: F.avg_pool1d(x, 4, 1, 2, count_include_pad=True),
            "count_include_pad=True",
        ),
        (
            "avg_same_2_stride1_include_pad",
            {"avg_pool1d": {"size": 2, "stride": 1, "padding": "same"}},
            (2, 5, 2),
            lambda x: F.avg_pool1d(F.pad(x, (0, 1)), 2, 1),
            "graft 'same' (TF rule): F.pad with zeros, counted in the average",
        ),
    ]
    for case, layer, shape, f, note in cases:
        c = Case("pool1d", case)
        c.layer(
            one_node(layer, shape[1:]),
            mods(),
            [randn(*shape)],
            lambda m, xs, f=f: [channels_last(f)(xs[0])],
            note=("torch on [B, C, L] (graft: [B, L, C]); " + note).rstrip("; "),
        )


def global_pool():
    cases = [
        ("avg2d", "global_avg_pool2d", (2, 3, 5, 4), lambda x: nn.AdaptiveAvgPool2d(1)(x).flatten(1)),
        ("max2d", "global_max_pool2d", (2, 3, 5, 4), lambda x: nn.AdaptiveMaxPool2d(1)(x).flatten(1)),
        ("avg1d", "global_avg_pool1d", (2, 7, 3), lambda x: nn.AdaptiveAvgPool1d(1)(x.transpose(1, 2)).squeeze(2)),
        (
            "max1d_batch1",
            "global_max_pool1d",
            (1, 6, 4),
            lambda x: nn.AdaptiveMaxPool1d(1)(x.transpose(1, 2)).squeeze(2),
        ),
    ]
    for case, kind, shape, f in cases:
        c = Case("global_pool", case)
        c.layer(
            one_node({kind: {}}, shape[1:]),
            mods(),
            [randn(*shape)],
            lambda m, xs, f=f: [f(xs[0])],
            note="adaptive pooling to 1",
        )
    # Adaptive average pooling to other sizes: windows that overlap (7 → 3), that do not divide (5 → 3, 4 → 3),
    # and upsampling (3 → 5 repeats inputs).
    for case, layer, shape, f in [
        ("adaptive2d_7x5_to_3x3", {"adaptive_avg_pool2d": {"size": 3}}, (2, 3, 7, 5), nn.AdaptiveAvgPool2d(3)),
        ("adaptive2d_4x6_to_3x2", {"adaptive_avg_pool2d": {"size": [3, 2]}}, (2, 2, 4, 6), nn.AdaptiveAvgPool2d((3, 2))),
        (
            "adaptive1d_7_to_3",
            {"adaptive_avg_pool1d": {"size": 3}},
            (2, 7, 4),
            lambda x: nn.AdaptiveAvgPool1d(3)(x.transpose(1, 2)).transpose(1, 2),
        ),
        (
            "adaptive1d_3_to_5",
            {"adaptive_avg_pool1d": {"size": 5}},
            (2, 3, 2),
            lambda x: nn.AdaptiveAvgPool1d(5)(x.transpose(1, 2)).transpose(1, 2),
        ),
    ]:
        c = Case("global_pool", case)
        c.layer(
            one_node(layer, shape[1:]),
            mods(),
            [randn(*shape)],
            lambda m, xs, f=f: [f(xs[0])],
            note="torch.nn.AdaptiveAvgPool1d/2d (1D on the transposed [B, C, L])",
        )
    # Masked: ids → embedding (padding_idx 0) → global pooling over the real steps only.
    for kind, pool in [("global_avg_pool1d", nn.AdaptiveAvgPool1d(1)), ("global_max_pool1d", nn.AdaptiveMaxPool1d(1))]:
        c = Case("global_pool", f"{kind.split('_')[1]}1d_masked")
        lengths = [6, 3, 1]
        ids = padded_ids(lengths, 6, 9)

        def forward(m, xs, pool=pool, lengths=lengths):
            e = m["emb"](xs[0].long())
            return [torch.cat([pool(e[b : b + 1, :n].transpose(1, 2)).squeeze(2) for b, n in enumerate(lengths)])]

        c.layer(
            with_embedding({kind: {}}, 6, 9, 4),
            mods(emb=nn.Embedding(9, 4, padding_idx=0)),
            [ids],
            forward,
            ids=(0,),
            padding_rows=[("emb.weight", 0)],
            note="per sample, adaptive pooling over its real steps (padding mask from the embedding)",
        )


def batch_norm():
    cases = [
        ("vector", (6, 4), {}, lambda: nn.BatchNorm1d(4), lambda bn, x: bn(x), "BatchNorm1d on [B, F]"),
        (
            "sequence",
            (3, 5, 4),
            {},
            lambda: nn.BatchNorm1d(4),
            lambda bn, x: channels_last(bn)(x),
            "BatchNorm1d on [B, C, L] (graft: [B, L, C])",
        ),
        (
            "sequence_batch1",
            (1, 6, 3),
            {"momentum": 0.25},
            lambda: nn.BatchNorm1d(3, momentum=0.25),
            lambda bn, x: channels_last(bn)(x),
            "BatchNorm1d on [B, C, L], batch 1",
        ),
        (
            "image",
            (2, 3, 4, 5),
            {"momentum": 0.3, "epsilon": 0.001},
            lambda: nn.BatchNorm2d(3, eps=1e-3, momentum=0.3),
            lambda bn, x: bn(x),
            "BatchNorm2d",
        ),
    ]
    for mode in ["train", "eval"]:
        for case, shape, opts, make, f, note in cases:
            c = Case("batch_norm", f"{case}_{mode}")
            extra = "; outputs, gradients and the updated running statistics" if mode == "train" else ""
            c.layer(
                one_node({"batch_norm": opts}, shape[1:]),
                mods(layer=make()),
                [randn(*shape, scale=1.5) + 0.5],
                lambda m, xs, f=f: [f(m["layer"], xs[0])],
                mode=mode,
                note=f"{note}, {mode} mode{extra}",
            )
    c = Case("batch_norm", "shared_twice_train")
    c.layer(
        model_toml(
            {"x": [4]},
            [("layer", ["x"], {"batch_norm": {}}), ("again", ["layer"], {"shared": "layer"})],
            ["again"],
        ),
        mods(layer=nn.BatchNorm1d(4)),
        [randn(5, 4, scale=2.0) + 1.0],
        lambda m, xs: [m["layer"](m["layer"](xs[0]))],
        mode="train",
        note="one BatchNorm1d applied twice in a train step (graft: a shared node): the running statistics are "
        "updated twice",
    )


def layer_norm():
    cases = [
        ("vector", (3, 6), {}, nn.LayerNorm(6)),
        ("sequence_eps", (2, 5, 7), {"epsilon": 0.001}, nn.LayerNorm(7, eps=1e-3)),
        ("image_last_axis", (2, 2, 3, 4), {}, nn.LayerNorm(4)),
    ]
    for case, shape, opts, module in cases:
        c = Case("layer_norm", case)
        c.layer(
            one_node({"layer_norm": opts}, shape[1:]),
            mods(layer=module),
            [randn(*shape, scale=2.0) + 0.3],
            apply_layer(lambda m, x: m(x)),
            note="nn.LayerNorm over the last axis",
        )


def group_norm():
    cases = [
        ("image", (2, 6, 3, 4), {"groups": 3}, nn.GroupNorm(3, 6), lambda m, x: m(x), "on [B, C, H, W]"),
        (
            "sequence",
            (2, 5, 4),
            {"groups": 2, "epsilon": 0.001},
            nn.GroupNorm(2, 4, eps=1e-3),
            lambda m, x: channels_last(m)(x),
            "on [B, C, L] (graft: [B, L, C])",
        ),
        ("vector", (3, 6), {"groups": 2}, nn.GroupNorm(2, 6), lambda m, x: m(x), "on [B, C]"),
        ("batch1_one_group", (1, 4, 3, 3), {"groups": 1}, nn.GroupNorm(1, 4), lambda m, x: m(x), "on [B, C, H, W]"),
    ]
    for case, shape, opts, module, f, note in cases:
        c = Case("group_norm", case)
        c.layer(
            one_node({"group_norm": opts}, shape[1:]),
            mods(layer=module),
            [randn(*shape, scale=2.0) - 0.4],
            apply_layer(f),
            note=f"nn.GroupNorm {note}",
        )


def instance_norm():
    cases = [
        ("image", (2, 3, 4, 5), {}, nn.InstanceNorm2d(3), lambda m, x: m(x), "InstanceNorm2d"),
        (
            "image_affine",
            (2, 3, 4, 5),
            {"affine": True, "epsilon": 0.001},
            nn.InstanceNorm2d(3, affine=True, eps=1e-3),
            lambda m, x: m(x),
            "InstanceNorm2d(affine=True)",
        ),
        (
            "sequence_affine",
            (2, 6, 4),
            {"affine": True},
            nn.InstanceNorm1d(4, affine=True),
            lambda m, x: channels_last(m)(x),
            "InstanceNorm1d(affine=True) on [B, C, L] (graft: [B, L, C])",
        ),
    ]
    for case, shape, opts, module, f, note in cases:
        c = Case("instance_norm", case)
        c.layer(
            one_node({"instance_norm": opts}, shape[1:]),
            mods(layer=module),
            [randn(*shape, scale=2.0) + 0.2],
            apply_layer(f),
            note=note,
        )


def embedding():
    c = Case("embedding", "plain")
    c.layer(
        one_node({"embedding": {"input_dim": 7, "output_dim": 4}}, [5]),
        mods(layer=nn.Embedding(7, 4)),
        [torch.randint(0, 7, (3, 5)).to(DT)],
        lambda m, xs: [m["layer"](xs[0].long())],
        ids=(0,),
        note="nn.Embedding; ids as floats",
    )
    for case, pad, lengths in [("padding_idx0", 0, [5, 2, 4]), ("padding_idx3_batch1", 3, [3])]:
        c = Case("embedding", case)
        ids = torch.randint(0, 7, (len(lengths), 5))
        ids[ids == pad] = (pad + 1) % 7
        for b, n in enumerate(lengths):
            ids[b, n:] = pad
        c.layer(
            one_node({"embedding": {"input_dim": 7, "output_dim": 4, "padding_idx": pad}}, [5]),
            mods(layer=nn.Embedding(7, 4, padding_idx=pad)),
            [ids.to(DT)],
            lambda m, xs: [m["layer"](xs[0].long())],
            ids=(0,),
            padding_rows=[("layer.weight", pad)],
            note=f"nn.Embedding(padding_idx={pad}) with that row zero: graft outputs zeros at padding positions, "
            "torch looks the row up",
        )


RNN = {"simple_rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


MERGES = {
    "sum": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "ave": lambda a, b: (a + b) / 2,
    "concat": lambda a, b: torch.cat([a, b], dim=-1),
}


def recurrent(kind):
    """simple_rnn / lstm / gru: sequences, last state, stacking, bidirectional (every merge), final and initial
    states, padding."""
    lstm = kind == "lstm"
    per_dir = 2 if lstm else 1
    seq, state = dict(return_sequences=True), dict(return_state=True)
    # (case, B, T, F, H, options, merge of a bidirectional layer or None, initial states, padded lengths or None)
    cases = [
        ("seq", 3, 5, 4, 6, seq, None, False, None),
        ("last", 2, 6, 3, 5, {}, None, False, None),
        ("batch1_t1_state", 1, 1, 3, 4, {**seq, **state}, None, False, None),
        ("no_bias", 2, 4, 3, 4, {**seq, "use_bias": False}, None, False, None),
        ("stacked_state", 2, 5, 3, 4, {**seq, **state, "num_layers": 2}, None, False, None),
        ("bidir_seq", 2, 5, 3, 4, seq, "concat", False, None),
        ("bidir_last_state", 3, 4, 3, 5, state, "concat", False, None),
        ("stacked_bidir_state", 2, 5, 4, 3, {**seq, **state, "num_layers": 2}, "concat", False, None),
        ("bidir_sum_seq", 2, 5, 3, 4, seq, "sum", False, None),
        ("bidir_mul_last", 2, 4, 3, 4, {}, "mul", False, None),
        ("bidir_ave_seq_state", 2, 4, 3, 4, {**seq, **state}, "ave", False, None),
        ("initial_state", 2, 5, 3, 4, {**seq, **state}, None, True, None),
        ("bidir_initial_state", 2, 4, 3, 4, state, "concat", True, None),
        ("padded", 3, 6, 4, 5, {**seq, **state}, None, False, [6, 3, 1]),
        ("padded_bidir_last", 3, 6, 4, 5, state, "concat", False, [2, 6, 4]),
        ("padded_stacked_bidir", 3, 5, 3, 4, {**seq, **state, "num_layers": 2}, "concat", False, [5, 1, 3]),
        ("padded_initial_state", 3, 5, 3, 4, {**seq, **state}, None, True, [2, 5, 3]),
        ("padded_bidir_initial_state", 2, 5, 3, 4, state, "concat", True, [3, 5]),
    ]
    if kind == "simple_rnn":
        cases.append(("relu_seq", 2, 5, 3, 4, {**seq, "activation": "relu"}, None, False, None))
    for case, B, T, Fdim, H, opts, merge, initial, lengths in cases:
        c = Case(kind, case)
        bidir = merge is not None
        opts = {"units": H, **opts}
        layer = {kind: opts}
        if bidir:
            layer = {"bidirectional": {"layer": layer, "merge": merge}}
        kw = dict(num_layers=opts.get("num_layers", 1), bias=opts.get("use_bias", True), batch_first=True)
        if kind == "simple_rnn":
            kw["nonlinearity"] = opts.get("activation", "tanh")
        module = RNN[kind](Fdim, H, bidirectional=bidir, **kw)
        dirs = 2 if bidir else 1
        n_out = 1 + (dirs * per_dir if opts.get("return_state") else 0)
        outputs = ["layer"] + [f"layer:{k}" for k in range(1, n_out)]
        state_names = [n + ("_reverse" if d else "") for d in range(dirs) for n in (["h0", "c0"] if lstm else ["h0"])]
        states = {n: [H] for n in state_names} if initial else {}
        vocab = 9
        if lengths is not None:
            spec = with_embedding(layer, T, vocab, Fdim, extra_inputs=states, sources=["emb", *states], outputs=outputs)
            inputs = [padded_ids(lengths, T, vocab)]
            m = mods(emb=nn.Embedding(vocab, Fdim, padding_idx=0), layer=module)
        else:
            inputs = [randn(B, T, Fdim)]
            ins = {"x": [T, Fdim], **states}
            spec = model_toml(ins, [("layer", list(ins), layer)], outputs)
            m = mods(layer=module)
        inputs += [randn(B, H, scale=0.5) for _ in states]

        def forward(m, xs, opts=opts, dirs=dirs, lengths=lengths, initial=initial, T=T, H=H, merge=merge):
            rnn = m["layer"]
            hx = None
            if initial:
                given = xs[1:]
                h0 = torch.stack(given[0::per_dir])
                hx = (h0, torch.stack(given[1::per_dir])) if lstm else h0
            if lengths is not None:
                x = m["emb"](xs[0].long())
                packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
                out, hn = rnn(packed, hx)
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
            else:
                out, hn = rnn(xs[0], hx)
            h_n, c_n = hn if lstm else (hn, None)
            last_h = h_n[-dirs:]
            if opts.get("return_sequences"):
                first = MERGES[merge](out[..., :H], out[..., H:]) if bidir else out
            else:
                first = MERGES[merge](last_h[0], last_h[1]) if bidir else last_h[0]
            outs = [first]
            if opts.get("return_state"):
                for d in range(dirs):
                    outs.append(last_h[d])
                    if lstm:
                        outs.append(c_n[-dirs:][d])
            return outs

        torch_name = {"simple_rnn": "nn.RNN", "lstm": "nn.LSTM", "gru": "nn.GRU"}[kind]
        note = f"{torch_name}(batch_first=True"
        note += ", bidirectional=True" if bidir else ""
        note += f", num_layers={kw['num_layers']}" if kw["num_layers"] > 1 else ""
        note += ", bias=False" if not kw["bias"] else ""
        if kind == "simple_rnn" and kw["nonlinearity"] != "tanh":
            note += f", nonlinearity='{kw['nonlinearity']}'"
        note += ")"
        if opts.get("return_sequences"):
            parts = ["the full output"]
        else:
            parts = ["the last hidden state" + (" (h_n of both directions)" if bidir else "")]
        if merge not in (None, "concat"):
            parts[0] += f", directions merged by {merge} (graft merge = \"{merge}\")"
        if opts.get("return_state"):
            last = " of the last layer" + (" per direction" if bidir else "")
            parts.append("h_n" + (" and c_n" if lstm else "") + last)
        if initial:
            parts.append("initial states h0" + (" and c0" if lstm else "") + " as graph inputs")
        if lengths is not None:
            parts.append(
                f"right-padded lengths {lengths}: graft masks via the embedding's padding_idx, torch packs "
                "(pack_padded_sequence / pad_packed_sequence, zeros at padded steps)"
            )
        c.layer(
            spec,
            m,
            inputs,
            forward,
            ids=(0,) if lengths is not None else (),
            padding_rows=[("emb.weight", 0)] if lengths is not None else [],
            note=f"{note}; " + "; ".join(parts),
        )


def attention():
    def mha(E, heads, bias=True):
        return nn.MultiheadAttention(E, heads, bias=bias, batch_first=True)

    # self-attention, batch 1 with 3 heads, cross (query + key/value), query/key/value, no bias, causal
    c = Case("multi_head_attention", "self")
    c.layer(
        one_node({"multi_head_attention": {"num_heads": 2}}, [5, 6]),
        mods(layer=mha(6, 2)),
        [randn(2, 5, 6)],
        lambda m, xs: [m["layer"](xs[0], xs[0], xs[0], need_weights=False)[0]],
        note="nn.MultiheadAttention(batch_first=True), self-attention",
    )
    c = Case("multi_head_attention", "self_batch1_3heads")
    c.layer(
        one_node({"multi_head_attention": {"num_heads": 3}}, [4, 6]),
        mods(layer=mha(6, 3)),
        [randn(1, 4, 6)],
        lambda m, xs: [m["layer"](xs[0], xs[0], xs[0], need_weights=False)[0]],
        note="nn.MultiheadAttention, self-attention",
    )
    c = Case("multi_head_attention", "cross")
    c.layer(
        model_toml(
            {"q": [4, 6], "kv": [7, 6]},
            [("layer", ["q", "kv"], {"multi_head_attention": {"num_heads": 2}})],
            ["layer"],
        ),
        mods(layer=mha(6, 2)),
        [randn(2, 4, 6), randn(2, 7, 6)],
        lambda m, xs: [m["layer"](xs[0], xs[1], xs[1], need_weights=False)[0]],
        note="nn.MultiheadAttention, query attends to a key/value sequence",
    )
    c = Case("multi_head_attention", "query_key_value")
    c.layer(
        model_toml(
            {"q": [3, 8], "k": [5, 8], "v": [5, 8]},
            [("layer", ["q", "k", "v"], {"multi_head_attention": {"num_heads": 4}})],
            ["layer"],
        ),
        mods(layer=mha(8, 4)),
        [randn(2, 3, 8), randn(2, 5, 8), randn(2, 5, 8)],
        lambda m, xs: [m["layer"](xs[0], xs[1], xs[2], need_weights=False)[0]],
        note="nn.MultiheadAttention, separate query, key and value",
    )
    c = Case("multi_head_attention", "no_bias")
    c.layer(
        one_node({"multi_head_attention": {"num_heads": 2, "use_bias": False}}, [5, 4]),
        mods(layer=mha(4, 2, bias=False)),
        [randn(2, 5, 4)],
        lambda m, xs: [m["layer"](xs[0], xs[0], xs[0], need_weights=False)[0]],
        note="nn.MultiheadAttention(bias=False)",
    )
    c = Case("multi_head_attention", "causal")
    mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    c.layer(
        one_node({"multi_head_attention": {"num_heads": 2, "causal": True}}, [5, 6]),
        mods(layer=mha(6, 2)),
        [randn(2, 5, 6)],
        lambda m, xs: [m["layer"](xs[0], xs[0], xs[0], attn_mask=mask, need_weights=False)[0]],
        note="nn.MultiheadAttention with attn_mask = triu(ones, 1) (future steps masked)",
    )
    # Key padding masks: graft takes them from an embedding with padding_idx.
    lengths = [5, 3, 2]
    c = Case("multi_head_attention", "self_key_padding_mask")
    c.layer(
        with_embedding({"multi_head_attention": {"num_heads": 2}}, 5, 9, 6),
        mods(emb=nn.Embedding(9, 6, padding_idx=0), layer=mha(6, 2)),
        [padded_ids(lengths, 5, 9)],
        lambda m, xs: [
            m["layer"](*(3 * [m["emb"](xs[0].long())]), key_padding_mask=xs[0] == 0, need_weights=False)[0]
        ],
        ids=(0,),
        padding_rows=[("emb.weight", 0)],
        note="key_padding_mask = (ids == 0); graft's mask comes from the embedding's padding_idx; every position "
        "compared, padded queries included",
    )
    c = Case("multi_head_attention", "cross_key_padding_mask")
    c.layer(
        with_embedding(
            {"multi_head_attention": {"num_heads": 3}}, 6, 9, 6, extra_inputs={"q": [4, 6]}, sources=("q", "emb")
        ),
        mods(emb=nn.Embedding(9, 6, padding_idx=0), layer=mha(6, 3)),
        [padded_ids([6, 2], 6, 9), randn(2, 4, 6)],
        lambda m, xs: [
            m["layer"](
                xs[1], m["emb"](xs[0].long()), m["emb"](xs[0].long()), key_padding_mask=xs[0] == 0, need_weights=False
            )[0]
        ],
        ids=(0,),
        padding_rows=[("emb.weight", 0)],
        note="cross-attention, key_padding_mask = (ids == 0) on the key/value sequence",
    )


def attention_fully_masked():
    """Rows whose every key is masked: torch gives them zero attention weights (the output is the output
    projection's bias)."""
    c = Case("multi_head_attention", "fully_padded_sample")
    c.layer(
        with_embedding({"multi_head_attention": {"num_heads": 2}}, 5, 9, 6),
        mods(emb=nn.Embedding(9, 6, padding_idx=0), layer=nn.MultiheadAttention(6, 2, batch_first=True)),
        [padded_ids([5, 0, 3], 5, 9)],
        lambda m, xs: [
            m["layer"](*(3 * [m["emb"](xs[0].long())]), key_padding_mask=xs[0] == 0, need_weights=False)[0]
        ],
        ids=(0,),
        padding_rows=[("emb.weight", 0)],
        note="key_padding_mask = (ids == 0) with one sample all padding: its rows get zero attention weights",
    )
    c = Case("multi_head_attention", "causal_left_padded")
    ids = padded_ids([5, 5], 5, 9)
    ids[0, :2] = 0
    ids[1, :1] = 0
    future = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    c.layer(
        with_embedding({"multi_head_attention": {"num_heads": 2, "causal": True}}, 5, 9, 6),
        mods(emb=nn.Embedding(9, 6, padding_idx=0), layer=nn.MultiheadAttention(6, 2, batch_first=True)),
        [ids],
        lambda m, xs: [
            m["layer"](
                *(3 * [m["emb"](xs[0].long())]), key_padding_mask=xs[0] == 0, attn_mask=future, need_weights=False
            )[0]
        ],
        ids=(0,),
        padding_rows=[("emb.weight", 0)],
        note="causal attn_mask plus key_padding_mask on left-padded ids: the first queries see only padded keys "
        "(zero attention weights)",
    )
    c = Case("transformer_encoder", "fully_padded_sample")
    c.layer(
        with_embedding({"transformer_encoder": {"num_heads": 2, "ff_dim": 8, "dropout": 0.0}}, 4, 9, 6),
        mods(
            emb=nn.Embedding(9, 6, padding_idx=0),
            layer=nn.TransformerEncoderLayer(6, 2, 8, dropout=0.0, batch_first=True),
        ),
        [padded_ids([4, 0], 4, 9)],
        lambda m, xs: [m["layer"](m["emb"](xs[0].long()), src_key_padding_mask=xs[0] == 0)],
        ids=(0,),
        padding_rows=[("emb.weight", 0)],
        note="nn.TransformerEncoderLayer(dropout=0), eval mode; src_key_padding_mask with one sample all padding",
    )


def transformer():
    cases = [
        ("post_norm_relu", (2, 5, 6), dict(num_heads=2, ff_dim=10), dict(nhead=2, dim_feedforward=10), None),
        (
            "norm_first_gelu",
            (2, 5, 6),
            dict(num_heads=3, ff_dim=8, activation="gelu", norm_first=True),
            dict(nhead=3, dim_feedforward=8, activation="gelu", norm_first=True),
            None,
        ),
        (
            "batch1_eps",
            (1, 4, 8),
            dict(num_heads=4, ff_dim=12, epsilon=0.001),
            dict(nhead=4, dim_feedforward=12, layer_norm_eps=1e-3),
            None,
        ),
        ("post_norm_masked", (3, 5, 6), dict(num_heads=2, ff_dim=10), dict(nhead=2, dim_feedforward=10), [5, 2, 4]),
        (
            "norm_first_gelu_masked",
            (2, 6, 4),
            dict(num_heads=2, ff_dim=7, activation="gelu", norm_first=True),
            dict(nhead=2, dim_feedforward=7, activation="gelu", norm_first=True),
            [3, 6],
        ),
    ]
    for case, (B, T, E), opts, kw, lengths in cases:
        c = Case("transformer_encoder", case)
        layer = nn.TransformerEncoderLayer(E, dropout=0.0, batch_first=True, **kw)
        layer_spec = {"transformer_encoder": {**opts, "dropout": 0.0}}
        note = "nn.TransformerEncoderLayer(dropout=0, batch_first=True), eval mode"
        if lengths is None:
            c.layer(
                one_node(layer_spec, [T, E]),
                mods(layer=layer),
                [randn(B, T, E)],
                apply_layer(lambda m, x: m(x)),
                note=note,
            )
        else:
            c.layer(
                with_embedding(layer_spec, T, 9, E),
                mods(emb=nn.Embedding(9, E, padding_idx=0), layer=layer),
                [padded_ids(lengths, T, 9)],
                lambda m, xs: [m["layer"](m["emb"](xs[0].long()), src_key_padding_mask=xs[0] == 0)],
                ids=(0,),
                padding_rows=[("emb.weight", 0)],
                note=note + "; src_key_padding_mask = (ids == 0) from the embedding's padding_idx",
            )


def activations():
    cases = [
        ("relu", {"relu": {}}, F.relu),
        ("leaky_relu_0.2", {"leaky_relu": {"alpha": 0.2}}, lambda x: F.leaky_relu(x, 0.2)),
        ("leaky_relu_default", {"activation": "leaky_relu"}, lambda x: F.leaky_relu(x, 0.01)),
        ("elu_0.7", {"elu": {"alpha": 0.7}}, lambda x: F.elu(x, 0.7)),
        ("elu_default", {"activation": "elu"}, F.elu),
        ("selu", {"selu": {}}, F.selu),
        ("gelu", {"gelu": {}}, F.gelu),
        ("gelu_tanh", {"gelu": {"approximate": True}}, lambda x: F.gelu(x, approximate="tanh")),
        ("mish", {"mish": {}}, F.mish),
        ("tanh", {"tanh": {}}, torch.tanh),
        ("sigmoid", {"sigmoid": {}}, torch.sigmoid),
        ("softmax", {"softmax": {}}, lambda x: F.softmax(x, -1)),
        ("softmax_axis0", {"softmax": {"axis": 0}}, lambda x: F.softmax(x, 1)),
        ("activation_softmax", {"activation": "softmax"}, lambda x: F.softmax(x, -1)),
        ("linear", {"linear": {}}, lambda x: x),
        ("relu6", {"relu6": {}}, F.relu6),
        ("hardswish", {"hardswish": {}}, F.hardswish),
        ("silu", {"silu": {}}, F.silu),
        ("activation_relu6", {"activation": "relu6"}, F.relu6),
    ]
    for case, layer, f in cases:
        c = Case("activation", case)
        kind = next(iter(layer))
        # relu6 and hardswish are flat beyond ±3 and 6: wider inputs reach those parts too.
        scale = 4.0 if case in ("relu6", "hardswish", "activation_relu6") else 2.0
        c.layer(
            one_node(layer, [4, 5]),
            mods(),
            [randn(3, 4, 5, scale=scale)],
            lambda m, xs, f=f: [f(xs[0])],
            note=f"torch.nn.functional on [B, 4, 5] (layer `{kind}`)",
        )


def dropout():
    c = Case("dropout", "eval_identity")
    c.layer(
        one_node({"dropout": {"rate": 0.3}}, [4, 5]),
        mods(layer=nn.Dropout(0.3)),
        [randn(3, 4, 5)],
        apply_layer(lambda m, x: m(x)),
        note="nn.Dropout(0.3) in eval mode: the identity",
    )
    # Train mode: masks are random, so the fixture holds torch's scaling rule, x / (1 - p) where an element is kept;
    # the test checks every graft output is 0 or that value, and the kept fraction.
    c = Case("dropout", "train_scaling_rule")
    p = 0.25
    probe = F.dropout(torch.ones(100000, dtype=DT), p, training=True)
    scale = probe.max().item()
    x = randn(4, 50, 50)
    c.layer(
        one_node({"dropout": {"rate": p}}, [50, 50]),
        mods(),
        [x],
        lambda m, xs: [xs[0] * scale],
        mode="train",
        meta={"check": "dropout_rule", "rate": str(p)},
        note=f"F.dropout(p={p}, training=True) keeps an element as x / (1 - p) = x * {scale!r}; graft's outputs "
        "must each be 0 or that value (gradients likewise), with about 1 - p of them kept",
    )


# ----------------------------------------------------------------------------------------------------------------
# Gradient penalty (WGAN-GP)
# ----------------------------------------------------------------------------------------------------------------

GP_LAMBDA = 10.0


def gradient_penalty():
    """WGAN-GP's penalty (Gulrajani et al. 2017) on small critics: x̂ = α·real + (1 − α)·fake with one fixed α per
    sample, g = ∂(Σ D(x̂))/∂x̂ by `torch.autograd.grad(create_graph=True)`, gp = λ·mean_rows((‖g‖₂ − 1)²), λ = 10,
    and ∂gp/∂θ for every critic parameter (zeros where gp does not depend on it). The fixture holds `param.<name>`,
    `real`, `fake`, `alpha` [B], `score` (D(x̂)), `grad_input` (g), `value` (gp) and `grad_param.<name>`."""
    cases = [
        (
            "mlp_leaky_relu",
            model_toml(
                {"x": [6]},
                [
                    ("fc1", ["x"], {"dense": {"units": 16}}),
                    ("act1", ["fc1"], {"leaky_relu": {"alpha": 0.2}}),
                    ("fc2", ["act1"], {"dense": {"units": 16}}),
                    ("act2", ["fc2"], {"leaky_relu": {"alpha": 0.2}}),
                    ("out", ["act2"], {"dense": {"units": 1}}),
                ],
                ["out"],
            ),
            mods(fc1=nn.Linear(6, 16), fc2=nn.Linear(16, 16), out=nn.Linear(16, 1)),
            lambda m, x: m["out"](F.leaky_relu(m["fc2"](F.leaky_relu(m["fc1"](x), 0.2)), 0.2)),
            (5, 6),
            "Linear 6→16, LeakyReLU(0.2), Linear 16→16, LeakyReLU(0.2), Linear 16→1",
        ),
        (
            "conv2d_stride2",
            model_toml(
                {"x": [2, 8, 8]},
                [
                    ("conv1", ["x"], {"conv2d": {"filters": 4, "kernel": 3, "stride": 2, "padding": 1}}),
                    ("act1", ["conv1"], {"leaky_relu": {"alpha": 0.2}}),
                    ("conv2", ["act1"], {"conv2d": {"filters": 6, "kernel": 3, "stride": 2, "padding": 1}}),
                    ("act2", ["conv2"], {"leaky_relu": {"alpha": 0.2}}),
                    ("flat", ["act2"], {"flatten": {}}),
                    ("out", ["flat"], {"dense": {"units": 1}}),
                ],
                ["out"],
            ),
            mods(
                conv1=nn.Conv2d(2, 4, 3, stride=2, padding=1),
                conv2=nn.Conv2d(4, 6, 3, stride=2, padding=1),
                out=nn.Linear(24, 1),
            ),
            lambda m, x: m["out"](
                F.leaky_relu(m["conv2"](F.leaky_relu(m["conv1"](x), 0.2)), 0.2).flatten(1)
            ),
            (4, 2, 8, 8),
            "Conv2d 2→4 k3 s2 p1, LeakyReLU(0.2), Conv2d 4→6 k3 s2 p1, LeakyReLU(0.2), flatten, Linear 24→1 "
            "(8×8 with stride 2 leaves the last row and column unread: the transposed convolution's output padding)",
        ),
        (
            "conv1d_layer_norm_gelu",
            model_toml(
                {"x": [5, 3]},
                [
                    ("conv", ["x"], {"conv1d": {"filters": 6, "kernel": 3, "padding": 1}}),
                    ("norm", ["conv"], {"layer_norm": {}}),
                    ("act", ["norm"], {"gelu": {}}),
                    ("flat", ["act"], {"flatten": {}}),
                    ("fc", ["flat"], {"dense": {"units": 8, "activation": "tanh"}}),
                    ("out", ["fc"], {"dense": {"units": 1}}),
                ],
                ["out"],
            ),
            mods(conv=nn.Conv1d(3, 6, 3, padding=1), norm=nn.LayerNorm(6), fc=nn.Linear(30, 8), out=nn.Linear(8, 1)),
            lambda m, x: m["out"](
                torch.tanh(m["fc"](F.gelu(m["norm"](m["conv"](x.transpose(1, 2)).transpose(1, 2))).flatten(1)))
            ),
            (4, 5, 3),
            "Conv1d 3→6 k3 p1 on [B, C, L] (graft: [B, L, C]), LayerNorm(6) over the channels, exact GELU, flatten, "
            "Linear 30→8, tanh, Linear 8→1",
        ),
    ]
    for case, spec, modules, critic, shape, note in cases:
        c = Case("gradient_penalty", case)
        modules = modules.to(DT)
        randomize(modules)
        params = dict(modules.named_parameters())
        real = randn(*shape)
        fake = randn(*shape, scale=0.5) + 0.3
        alpha = uniform(shape[0], lo=0.0, hi=1.0)
        a = alpha.view(-1, *([1] * (len(shape) - 1)))
        x_hat = (a * real + (1 - a) * fake).requires_grad_(True)
        score = critic(modules, x_hat)
        (g,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
        gp = GP_LAMBDA * ((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
        grads = torch.autograd.grad(gp, list(params.values()), allow_unused=True)
        tensors = {f"param.{n}": p for n, p in params.items()}
        tensors.update(real=real, fake=fake, alpha=alpha, score=score, grad_input=g, value=gp.reshape(1))
        for (n, p), grad in zip(params.items(), grads):
            tensors[f"grad_param.{n}"] = torch.zeros_like(p) if grad is None else grad
        write(
            c.name,
            tensors,
            {
                "spec": spec,
                "mode": "train",
                "lambda": repr(GP_LAMBDA),
                "note": f"{note}; gp = {GP_LAMBDA:g}·mean((‖∂ΣD(x̂)/∂x̂‖ − 1)²) by autograd.grad(create_graph=True)",
            },
        )


# ----------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------


def loss_case(case, loss, logits, target, target_kind, fn, weights=None, class_weights=None, note=""):
    c = Case("loss", case)
    logits = rounded(logits).requires_grad_(True)
    target = rounded(target)
    value = fn(logits)
    (grad,) = torch.autograd.grad(value, logits)
    tensors = {"logits": logits, "target": target, "value": value.reshape(1), "grad_logits": grad}
    if weights is not None:
        tensors["weights"] = rounded(weights)
    if class_weights is not None:
        tensors["class_weights"] = rounded(class_weights)
    write(c.name, tensors, {"loss": f"loss = {toml_value(loss)}", "target": target_kind, "note": note})


def losses():
    torch.manual_seed(7)
    N, K = 6, 4
    z = torch.randn(N, K, dtype=DT) * 1.5
    t = torch.randn(N, K, dtype=DT)
    loss_case("mse", "mse", z, t, "values", lambda l: F.mse_loss(l, t), note="F.mse_loss")
    loss_case("mae", "mae", z, t, "values", lambda l: F.l1_loss(l, t), note="F.l1_loss")
    t2 = torch.randn(N, K, dtype=DT) * 2.0
    for case, delta in [("huber_1", 1.0), ("huber_0.5", 0.5)]:
        loss_case(
            case,
            {"huber": {"delta": delta}},
            z,
            t2,
            "values",
            lambda l, delta=delta: F.huber_loss(l, t2, delta=delta),
            note=f"F.huber_loss(delta={delta})",
        )
    w = rounded(torch.rand(N, dtype=DT) + 0.5)
    loss_case(
        "mse_sample_weights",
        "mse",
        z,
        t,
        "values",
        lambda l: (F.mse_loss(l, t, reduction="none").mean(1) * w).sum() / w.sum(),
        weights=w,
        note="per-row MSE, weighted mean over rows",
    )
    b = (torch.rand(N, K) > 0.5).to(DT)
    loss_case(
        "bce",
        "binary_crossentropy",
        z,
        b,
        "values",
        lambda l: F.binary_cross_entropy_with_logits(l, b),
        note="F.binary_cross_entropy_with_logits",
    )
    pw = rounded(torch.tensor([0.5, 2.0, 3.0, 1.5], dtype=DT))
    loss_case(
        "bce_pos_weight",
        {"binary_crossentropy": {"pos_weight": [0.5, 2.0, 3.0, 1.5]}},
        z,
        b,
        "values",
        lambda l: F.binary_cross_entropy_with_logits(l, b, pos_weight=pw),
        note="F.binary_cross_entropy_with_logits(pos_weight per output)",
    )
    loss_case(
        "bce_pos_weight_scalar",
        {"binary_crossentropy": {"pos_weight": [2.5]}},
        z,
        b,
        "values",
        lambda l: F.binary_cross_entropy_with_logits(l, b, pos_weight=torch.tensor([2.5], dtype=DT)),
        note="F.binary_cross_entropy_with_logits(pos_weight=[2.5]) broadcast",
    )
    soft = torch.rand(N, K, dtype=DT)
    loss_case(
        "bce_soft_targets",
        "binary_crossentropy",
        z * 2,
        soft,
        "values",
        lambda l: F.binary_cross_entropy_with_logits(l, rounded(soft)),
        note="F.binary_cross_entropy_with_logits with targets in [0, 1]",
    )
    z1 = torch.randn(7, 1, dtype=DT) * 3
    y1 = torch.randint(0, 2, (7,)).to(DT)
    loss_case(
        "bce_binary_classes",
        "binary_crossentropy",
        z1,
        y1,
        "classes",
        lambda l: F.binary_cross_entropy_with_logits(l[:, 0], y1),
        note="one logit, class labels 0/1",
    )
    y = torch.randint(0, K, (N,))
    yf = y.to(DT)
    loss_case(
        "sparse_ce",
        "sparse_categorical_crossentropy",
        z,
        yf,
        "classes",
        lambda l: F.cross_entropy(l, y),
        note="F.cross_entropy(class indices)",
    )
    loss_case(
        "nll",
        "sparse_categorical_crossentropy",
        z,
        yf,
        "classes",
        lambda l: F.nll_loss(F.log_softmax(l, 1), y),
        note="F.nll_loss(F.log_softmax(logits)): graft's sparse cross-entropy",
    )
    cw = rounded(torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=DT))
    loss_case(
        "sparse_ce_class_weights",
        "sparse_categorical_crossentropy",
        z,
        yf,
        "classes",
        lambda l: F.cross_entropy(l, y, weight=cw),
        class_weights=cw,
        note="F.cross_entropy(weight=class weights)",
    )
    loss_case(
        "sparse_ce_class_weights_label_smoothing",
        {"sparse_categorical_crossentropy": {"label_smoothing": 0.1}},
        z,
        yf,
        "classes",
        lambda l: F.cross_entropy(l, y, weight=cw, label_smoothing=0.1),
        class_weights=cw,
        note="F.cross_entropy(weight=class weights, label_smoothing=0.1): the smoothing term weights each class by w_c",
    )
    loss_case(
        "sparse_ce_class_and_sample_weights",
        "sparse_categorical_crossentropy",
        z,
        yf,
        "classes",
        lambda l: (F.cross_entropy(l, y, weight=cw, reduction="none") * w).sum() / (cw[y] * w).sum(),
        weights=w,
        class_weights=cw,
        note="class weights inside the loss, sample weights on rows: Σ s·w_y·l / Σ s·w_y",
    )
    loss_case(
        "sparse_ce_label_smoothing",
        {"sparse_categorical_crossentropy": {"label_smoothing": 0.1}},
        z,
        yf,
        "classes",
        lambda l: F.cross_entropy(l, y, label_smoothing=0.1),
        note="F.cross_entropy(label_smoothing=0.1)",
    )
    loss_case(
        "sparse_ce_sample_weights",
        "sparse_categorical_crossentropy",
        z,
        yf,
        "classes",
        lambda l: (F.cross_entropy(l, y, reduction="none") * w).sum() / w.sum(),
        weights=w,
        note="per-row cross-entropy, weighted mean over rows",
    )
    probs = torch.softmax(torch.randn(N, K, dtype=DT), 1)
    loss_case(
        "categorical_ce_soft",
        "categorical_crossentropy",
        z,
        probs,
        "values",
        lambda l: F.cross_entropy(l, rounded(probs)),
        note="F.cross_entropy(probability targets)",
    )
    loss_case(
        "categorical_ce_soft_label_smoothing",
        {"categorical_crossentropy": {"label_smoothing": 0.2}},
        z,
        probs,
        "values",
        lambda l: F.cross_entropy(l, rounded(probs), label_smoothing=0.2),
        note="F.cross_entropy(probability targets, label_smoothing=0.2)",
    )
    loss_case(
        "categorical_ce_classes",
        "categorical_crossentropy",
        z,
        yf,
        "classes",
        lambda l: F.cross_entropy(l, y),
        note="categorical loss given class indices (one-hot inside)",
    )
    loss_case(
        "categorical_ce_one_hot_class_weights",
        "categorical_crossentropy",
        z,
        F.one_hot(y, K).to(DT),
        "values",
        lambda l: F.cross_entropy(l, y, weight=cw),
        weights=cw[y],
        note="one-hot targets, F.cross_entropy(weight=class weights)",
    )


# ----------------------------------------------------------------------------------------------------------------
# Losses as functions: divergences, metric learning, GANs (graft::task::{divergence, metric_learning, gan})
# ----------------------------------------------------------------------------------------------------------------


def fn_case(case, fn, inputs, forward, labels=None, options="", probe=False, no_grad=(), note=""):
    """A `loss_fn-<case>` fixture: `forward(*inputs) -> value` in float64 on the float32-exact `inputs` (a dict in
    argument order), and the gradient of the value (with `probe`: of sum(value · probe)) w.r.t. every float input
    not in `no_grad`. `labels`: integer class labels, no gradient. `options`: TOML for graft's options struct."""
    xs = {k: rounded(v.detach().clone()).requires_grad_(k not in no_grad) for k, v in inputs.items()}
    lab = None if labels is None else torch.as_tensor(labels)
    value = forward(*xs.values(), *([] if lab is None else [lab]))
    tensors = {f"input.{k}": x for k, x in xs.items()}
    objective = value
    if probe:
        p = randn(*value.shape)
        tensors["probe"] = p
        objective = (value * p).sum()
    tensors["value"] = value.reshape(-1)
    wanted = [k for k in xs if k not in no_grad]
    grads = torch.autograd.grad(objective, [xs[k] for k in wanted], allow_unused=True)
    for k, g in zip(wanted, grads):
        tensors[f"grad_input.{k}"] = torch.zeros_like(xs[k]) if g is None else g
    if lab is not None:
        tensors["labels"] = lab.to(DT)
    meta = {"fn": fn, "inputs": ",".join(xs), "options": options, "note": note}
    write(f"loss_fn-{case}", tensors, meta)


def row_distances(x):
    """d[i][j] = ‖x_i − x_j‖₂, element by element (the diagonal is never used)."""
    n = x.shape[0]
    return [[torch.linalg.vector_norm(x[i] - x[j]) for j in range(n)] for i in range(n)]


def mined_reference(x, y, margin, mining):
    """The mined triplet losses, written out with loops; returns (value, the pre-clamp terms, pairs that fell back
    to the farthest negative, pairs that did not)."""
    d = row_distances(x)
    n = len(y)
    y = [int(v) for v in y]
    pos = lambda a: [p for p in range(n) if p != a and y[p] == y[a]]
    neg = lambda a: [k for k in range(n) if y[k] != y[a]]
    terms, fallback, semihard = [], 0, 0
    for a in range(n):
        if mining == "batch_all":
            terms += [d[a][p] - d[a][k] + margin for p in pos(a) for k in neg(a)]
        elif mining == "batch_hard":
            if pos(a) and neg(a):
                hp = torch.stack([d[a][p] for p in pos(a)]).max()
                hn = torch.stack([d[a][k] for k in neg(a)]).min()
                terms.append(hp - hn + margin)
        else:
            for p in pos(a) if neg(a) else []:
                outside = [d[a][k] for k in neg(a) if d[a][k] > d[a][p]]
                if outside:
                    dn = torch.stack(outside).min()
                    semihard += 1
                else:
                    dn = torch.stack([d[a][k] for k in neg(a)]).max()
                    fallback += 1
                terms.append(d[a][p] - dn + margin)
    clamped = [F.relu(t) for t in terms]
    if mining == "batch_all":
        active = [c for c in clamped if c > 0]
        value = torch.stack(active).mean() if active else x.sum() * 0
    else:
        value = torch.stack(clamped).mean()
    return value, terms, fallback, semihard


def separated(x, terms, gap=1e-4):
    """No two distances from one row within `gap` (no ties for max, min or the semi-hard comparison, in float32
    either) and no loss term within `gap` of 0 (the clamp and batch-all's count decided alike)."""
    d = torch.cdist(x, x)
    for row in d:
        v = torch.sort(row).values
        if (v[1:] - v[:-1]).min() < gap:
            return False
    return all(abs(float(t)) > gap for t in terms)


def mined_case(case, labels, margin, mining, options, draw, note, need_fallback=False):
    Case("loss_fn", case)
    for _ in range(1000):
        x = draw()
        value, terms, fallback, semihard = mined_reference(x, labels, margin, mining)
        active = sum(float(t) > 0 for t in terms)
        if not separated(x, terms) or active in (0, len(terms)):
            continue
        if mining == "semi_hard" and (semihard == 0 or (need_fallback and fallback == 0)):
            continue
        break
    else:
        raise RuntimeError(f"{case}: no draw met the conditions")
    fn_case(
        case,
        "mined_triplet_loss",
        {"embeddings": x},
        lambda e, lab: mined_reference(e, lab.tolist(), margin, mining)[0],
        labels=labels,
        options=options,
        note=f"{note}; {len(terms)} terms, {active} above 0"
        + (f", {fallback} fell back to the farthest negative" if mining == "semi_hard" else ""),
    )


def loss_functions():
    G = "loss_fn"
    # Divergences
    Case(G, "gaussian_kl")
    mean, log_var = randn(6, 4), uniform(6, 4, lo=-2.0, hi=1.0)
    normal_kl = lambda m, lv: torch.distributions.kl_divergence(
        torch.distributions.Normal(m, (0.5 * lv).exp()), torch.distributions.Normal(torch.zeros_like(m), 1.0)
    ).sum(1)
    fn_case(
        "gaussian_kl",
        "gaussian_kl",
        {"mean": mean, "log_var": log_var},
        lambda m, lv: normal_kl(m, lv).mean(),
        note="torch.distributions.kl_divergence(Normal(μ, e^{lv/2}), Normal(0, 1)), sum over latents, mean over rows",
    )
    Case(G, "gaussian_kl_per_row")
    mean, log_var = randn(5, 3, scale=1.5), uniform(5, 3, lo=-3.0, hi=2.0)
    fn_case(
        "gaussian_kl_per_row",
        "gaussian_kl_per_row",
        {"mean": mean, "log_var": log_var},
        normal_kl,
        probe=True,
        note="torch.distributions.kl_divergence(Normal(μ, e^{lv/2}), Normal(0, 1)), sum over latents, per row",
    )
    Case(G, "kl_div")
    log_input = F.log_softmax(torch.randn(5, 4, dtype=DT) * 1.5, 1)
    target = torch.softmax(torch.randn(5, 4, dtype=DT), 1)
    fn_case(
        "kl_div",
        "kl_div",
        {"log_input": log_input, "target": target},
        lambda x, t: F.kl_div(x, t, reduction="batchmean"),
        note='F.kl_div(reduction="batchmean"), gradients w.r.t. both inputs',
    )
    Case(G, "kl_div_zero_targets")
    log_input = F.log_softmax(torch.randn(5, 4, dtype=DT) * 1.5, 1)
    target = torch.softmax(torch.randn(5, 4, dtype=DT), 1)
    target[0, 1] = target[2, 0] = target[2, 3] = target[4, 2] = 0.0
    target = target / target.sum(1, keepdim=True)
    fn_case(
        "kl_div_zero_targets",
        "kl_div",
        {"log_input": log_input, "target": target},
        lambda x, t: F.kl_div(x, t, reduction="batchmean"),
        no_grad=("target",),
        note='F.kl_div(reduction="batchmean"), 4 zero targets; w.r.t. log_input only (torch: NaN at a zero target)',
    )

    # Metric learning
    Case(G, "contrastive")
    a, b = randn(8, 3, scale=0.5), randn(8, 3, scale=0.5)
    b[5] = a[5] + 1.5  # a dissimilar pair beyond the margin
    b[6] = a[6]  # an identical dissimilar pair
    b[7] = a[7]  # an identical similar pair
    same = torch.tensor([1, 0, 1, 0, 0, 0, 0, 1], dtype=DT)
    margin = 1.0
    d = torch.linalg.vector_norm(rounded(a) - rounded(b), dim=1)
    assert d[5] > margin and all(abs(float(v) - margin) > 1e-3 for v in d)

    def contrastive(a, b, y):
        d = torch.linalg.vector_norm(a - b, dim=1)
        return (0.5 * (y * d**2 + (1 - y) * torch.clamp_min(margin - d, 0.0) ** 2)).mean()

    fn_case(
        "contrastive",
        "contrastive_loss",
        {"a": a, "b": b, "same": same},
        contrastive,
        options="margin = 1.0",
        note="Hadsell et al. 2006 with torch.linalg.vector_norm; a pair beyond the margin, two identical pairs",
    )
    Case(G, "triplet_margin_loss")
    anchor, positive, negative = randn(7, 4), randn(7, 4), randn(7, 4)
    terms = F.pairwise_distance(anchor, positive) - F.pairwise_distance(anchor, negative) + 0.5
    assert all(abs(float(t)) > 1e-3 for t in terms) and 0 < int((terms > 0).sum()) < len(terms)
    fn_case(
        "triplet_margin_loss",
        "triplet_margin_loss",
        {"anchor": anchor, "positive": positive, "negative": negative},
        lambda a, p, n: F.triplet_margin_loss(a, p, n, margin=0.5),
        options="margin = 0.5",
        note="F.triplet_margin_loss(margin=0.5, p=2, eps=1e-6, swap=False)",
    )
    labels4 = [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    mined_case(
        "mined_batch_all",
        labels4,
        0.5,
        "batch_all",
        'margin = 0.5\nmining = "batch_all"',
        lambda: randn(10, 4, scale=0.7),
        "batch all: mean over the triplets with a loss above 0 (Hermans et al. 2017)",
    )
    mined_case(
        "mined_batch_hard",
        [0, 0, 0, 1, 1, 1, 2, 2, 2, 3],
        0.5,
        "batch_hard",
        'margin = 0.5\nmining = "batch_hard"',
        lambda: randn(10, 4, scale=0.7),
        "batch hard: farthest positive, closest negative per anchor; class 3 a singleton",
    )
    mined_case(
        "mined_semi_hard",
        labels4,
        0.2,
        "semi_hard",
        "",
        lambda: randn(10, 4, scale=0.7),
        "semi-hard (TF Addons triplet_semihard_loss), default options (margin 0.2)",
    )
    labels3 = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3]

    def clusters():
        centers = randn(4, 3, scale=1.0)
        x = centers[torch.tensor(labels3)] + randn(12, 3, scale=0.3)
        x[3] = x[3] + rounded(torch.tensor([6.0, 0.0, 0.0], dtype=DT))  # a class-0 row far from its class
        return rounded(x)

    mined_case(
        "mined_semi_hard_fallback",
        labels3,
        0.3,
        "semi_hard",
        'margin = 0.3\nmining = "semi_hard"',
        clusters,
        "semi-hard with a class-0 row far from its class: pairs with it fall back to the farthest negative",
        need_fallback=True,
    )

    # GANs
    bce = F.binary_cross_entropy_with_logits
    Case(G, "discriminator")
    real, fake = randn(6, 1, scale=2.0), randn(5, 1, scale=2.0)
    discriminator = lambda r, f: bce(r, torch.ones_like(r)) + bce(f, torch.zeros_like(f))
    fn_case(
        "discriminator",
        "discriminator_loss",
        {"real_logits": real, "fake_logits": fake},
        discriminator,
        note="F.binary_cross_entropy_with_logits(real, 1) + (fake, 0)",
    )
    Case(G, "discriminator_extreme_logits")
    real = torch.tensor([[40.0], [-30.0], [90.0], [0.5]], dtype=DT)
    fake = torch.tensor([[-60.0], [35.0], [-0.25]], dtype=DT)
    fn_case(
        "discriminator_extreme_logits",
        "discriminator_loss",
        {"real_logits": real, "fake_logits": fake},
        discriminator,
        note="logits up to ±90: the softplus form neither overflows nor loses the small terms",
    )
    Case(G, "generator")
    fake = randn(7, 2, scale=2.0)
    fn_case(
        "generator",
        "generator_loss",
        {"fake_logits": fake},
        lambda f: bce(f, torch.ones_like(f)),
        note="F.binary_cross_entropy_with_logits(fake, 1), two outputs",
    )
    Case(G, "critic")
    real, fake = randn(6, 1, scale=3.0), randn(5, 1, scale=3.0)
    fn_case(
        "critic",
        "critic_loss",
        {"real_scores": real, "fake_scores": fake},
        lambda r, f: f.mean() - r.mean(),
        note="mean(fake) − mean(real)",
    )
    Case(G, "wasserstein_generator")
    fake = randn(5, 2, scale=3.0)
    fn_case(
        "wasserstein_generator",
        "wasserstein_generator_loss",
        {"fake_scores": fake},
        lambda f: -f.mean(),
        note="−mean(fake)",
    )
    Case(G, "gradient_penalty")
    grad = randn(6, 5, scale=0.6)
    grad[2] = 0.0
    fn_case(
        "gradient_penalty",
        "gradient_penalty_from_grad",
        {"input_grad": grad},
        lambda g: ((g.norm(2, dim=1) - 1) ** 2).mean(),
        note="((g.norm(2, dim=1) − 1)²).mean() (WGAN-GP); one zero row",
    )
    # word2vec
    Case(G, "negative_sampling")
    scores = randn(7, 6, scale=3.0)
    scores[0, 0], scores[1, 2] = 25.0, -30.0  # saturated candidates: no overflow, gradients ≈ 0
    fn_case(
        "negative_sampling",
        "negative_sampling_loss",
        {"scores": scores},
        lambda s: -(F.logsigmoid(s[:, 0]) + F.logsigmoid(-s[:, 1:]).sum(1)).mean(),
        note="−(logsigmoid(s[:, 0]) + logsigmoid(−s[:, 1:]).sum(1)).mean() (skip-gram negative sampling, k = 5)",
    )


# ----------------------------------------------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------------------------------------------

OPTIM_SPEC = model_toml(
    {"x": [4]},
    [
        ("fc1", ["x"], {"dense": {"units": 3, "activation": "tanh"}}),
        ("fc2", ["fc1"], {"dense": {"units": 2}}),
    ],
    ["fc2"],
)


def optimizers():
    O = torch.optim
    cases = [
        ("sgd", {"sgd": {"lr": 0.1}}, O.SGD, dict(lr=0.1)),
        (
            "sgd_momentum_dampening",
            {"sgd": {"lr": 0.05, "momentum": 0.9, "dampening": 0.1}},
            O.SGD,
            dict(lr=0.05, momentum=0.9, dampening=0.1),
        ),
        (
            "sgd_nesterov_weight_decay",
            {"sgd": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}},
            O.SGD,
            dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        ),
        ("sgd_weight_decay", {"sgd": {"lr": 0.1, "weight_decay": 0.05}}, O.SGD, dict(lr=0.1, weight_decay=0.05)),
        ("adagrad", {"adagrad": {"lr": 0.1}}, O.Adagrad, dict(lr=0.1)),
        (
            "adagrad_lr_decay_weight_decay",
            {"adagrad": {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.01}},
            O.Adagrad,
            dict(lr=0.1, lr_decay=0.01, weight_decay=0.01),
        ),
        ("adadelta", {"adadelta": {"lr": 1.0}}, O.Adadelta, dict(lr=1.0)),
        (
            "adadelta_rho_weight_decay",
            {"adadelta": {"lr": 0.5, "rho": 0.8, "weight_decay": 0.01}},
            O.Adadelta,
            dict(lr=0.5, rho=0.8, weight_decay=0.01),
        ),
        ("rmsprop", {"rmsprop": {"lr": 0.01}}, O.RMSprop, dict(lr=0.01)),
        ("rmsprop_centered", {"rmsprop": {"lr": 0.01, "centered": True}}, O.RMSprop, dict(lr=0.01, centered=True)),
        (
            "rmsprop_momentum_weight_decay",
            {"rmsprop": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.01}},
            O.RMSprop,
            dict(lr=0.01, momentum=0.9, weight_decay=0.01),
        ),
        (
            "rmsprop_centered_momentum",
            {"rmsprop": {"lr": 0.005, "centered": True, "momentum": 0.5, "alpha": 0.9}},
            O.RMSprop,
            dict(lr=0.005, centered=True, momentum=0.5, alpha=0.9),
        ),
        ("adam", {"adam": {"lr": 0.01}}, O.Adam, dict(lr=0.01)),
        ("adam_amsgrad", {"adam": {"lr": 0.01, "amsgrad": True}}, O.Adam, dict(lr=0.01, amsgrad=True)),
        ("adam_weight_decay", {"adam": {"lr": 0.01, "weight_decay": 0.01}}, O.Adam, dict(lr=0.01, weight_decay=0.01)),
        (
            "adam_betas_eps",
            {"adam": {"lr": 0.02, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6}},
            O.Adam,
            dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6),
        ),
        ("adamw", {"adamw": {"lr": 0.01}}, O.AdamW, dict(lr=0.01)),
        (
            "adamw_amsgrad",
            {"adamw": {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}},
            O.AdamW,
            dict(lr=0.01, weight_decay=0.1, amsgrad=True),
        ),
        ("nadam", {"nadam": {"lr": 0.01}}, O.NAdam, dict(lr=0.01)),
        (
            "nadam_weight_decay",
            {"nadam": {"lr": 0.01, "weight_decay": 0.01}},
            O.NAdam,
            dict(lr=0.01, weight_decay=0.01),
        ),
    ]
    torch.manual_seed(11)
    x = randn(8, 4)
    y = randn(8, 2)
    base = mods(fc1=nn.Linear(4, 3), fc2=nn.Linear(3, 2)).to(DT)
    randomize(base)
    initial = {n: p.detach().clone() for n, p in base.named_parameters()}
    steps = 20
    for case, spec, cls, kw in cases:
        c = Case("optim", case)
        m = mods(fc1=nn.Linear(4, 3), fc2=nn.Linear(3, 2)).to(DT)
        with torch.no_grad():
            for n, p in m.named_parameters():
                p.copy_(initial[n])
        opt = cls(m.parameters(), **kw)
        tensors = {f"param.{n}": v for n, v in initial.items()}
        tensors["x"] = x
        tensors["y"] = y
        for k in range(1, steps + 1):
            opt.zero_grad()
            loss = F.mse_loss(m["fc2"](torch.tanh(m["fc1"](x))), y)
            loss.backward()
            opt.step()
            tensors[f"loss.{k}"] = loss.detach().reshape(1)
            for n, p in m.named_parameters():
                tensors[f"step.{k}.{n}"] = p.detach().clone()
        kwargs = ", ".join(f"{k}={v}" for k, v in kw.items())
        write(
            c.name,
            tensors,
            {
                "spec": OPTIM_SPEC,
                "optimizer": f"optimizer = {toml_value(spec)}",
                "steps": str(steps),
                "note": f"torch.optim.{cls.__name__}({kwargs}); Linear 4→3, tanh, Linear 3→2, MSE on 8 fixed rows",
            },
        )


# ----------------------------------------------------------------------------------------------------------------
# End-to-end models for graft import / predict / export
# ----------------------------------------------------------------------------------------------------------------


def save_npy(path, array):
    np.save(path, np.ascontiguousarray(array, dtype=np.float32))


def save_e2e(name, model, spec, inputs, expected):
    out = E2E / name
    out.mkdir(parents=True, exist_ok=True)
    state = {k: np32(v) for k, v in model.state_dict().items()}
    save_file(state, out / "state_dict.safetensors", {"format": "pt"})
    (out / "model.toml").write_text(spec)
    save_npy(out / "inputs.npy", inputs)
    save_npy(out / "expected.npy", expected)


class CNN(nn.Module):
    """conv (graft node `conv`) → relu → max pool 2 → flatten → linear (node `fc`) over 10 classes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


CNN_SPEC = """[model]
input = [1, 8, 8]
layers = [
  { name = "conv", conv2d = { filters = 4, kernel = 3, padding = "same", activation = "relu" } },
  { name = "pool", max_pool2d = { size = 2 } },
  { name = "flatten", flatten = {} },
  { name = "fc", dense = { units = 10, activation = "softmax" } },
]
"""


class BiLSTM(nn.Module):
    """embedding (padding_idx 0, node `emb`) → bidirectional LSTM (node `lstm`, final states) → linear 2 (`fc`)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8, padding_idx=0)
        self.lstm = nn.LSTM(8, 6, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(12, 2)

    def forward(self, ids):
        lengths = (ids != 0).sum(1)
        packed = pack_padded_sequence(self.emb(ids), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.fc(torch.cat([h[-2], h[-1]], dim=1))


BILSTM_SPEC = """[model]
input = [10]
layers = [
  { name = "emb", embedding = { input_dim = 20, output_dim = 8, padding_idx = 0 } },
  { name = "lstm", bidirectional = { layer = { lstm = { units = 6 } }, merge = "concat" } },
  { name = "fc", dense = { units = 2, activation = "softmax" } },
]
"""


def train(model, x, y, steps=50):
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def e2e():
    torch.manual_seed(1234)
    cnn = CNN()
    images = torch.randn(64, 1, 8, 8)
    labels = torch.randint(0, 10, (64,))
    train(cnn, images, labels)
    test = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        probs = F.softmax(cnn(test), 1)
    save_e2e("cnn", cnn, CNN_SPEC, test.numpy(), probs.numpy())

    torch.manual_seed(4321)

    def sequences(n):
        ids = torch.randint(1, 20, (n, 10))
        lengths = torch.randint(2, 11, (n,))
        for b in range(n):
            ids[b, lengths[b] :] = 0
        # class 1: more high ids (>= 10) than low ones among the real tokens
        high = ((ids >= 10) & (ids != 0)).sum(1)
        labels = (2 * high > lengths).long()
        return ids, labels

    lstm = BiLSTM()
    ids, labels = sequences(64)
    train(lstm, ids, labels)
    test_ids, _ = sequences(12)
    test_ids[0, :] = torch.arange(1, 11)  # one full-length sequence
    with torch.no_grad():
        probs = F.softmax(lstm(test_ids), 1)
    save_e2e("bilstm", lstm, BILSTM_SPEC, test_ids.float().numpy(), probs.numpy())


def main():
    ONLY.extend(sys.argv[1:])
    PARITY.mkdir(parents=True, exist_ok=True)
    if not ONLY:
        for old in PARITY.glob("*.safetensors"):
            old.unlink()
    dense()
    conv1d()
    conv2d()
    conv_transpose()
    upsampling()
    pool1d()
    pool2d()
    global_pool()
    batch_norm()
    layer_norm()
    group_norm()
    instance_norm()
    embedding()
    for kind in RNN:
        recurrent(kind)
    attention()
    attention_fully_masked()
    transformer()
    activations()
    dropout()
    gradient_penalty()
    losses()
    loss_functions()
    optimizers()
    if ONLY:
        print(f"{len(WRITTEN)} parity fixtures rewritten: {', '.join(WRITTEN) or 'none matched'}")
        return
    size = sum(p.stat().st_size for p in PARITY.glob("*.safetensors"))
    print(f"{len(WRITTEN)} parity fixtures, {size / 1e6:.2f} MB, in {PARITY.relative_to(ROOT)}")
    e2e()
    print(f"end-to-end fixtures in {E2E.relative_to(ROOT)}: cnn, bilstm")


if __name__ == "__main__":
    main()
