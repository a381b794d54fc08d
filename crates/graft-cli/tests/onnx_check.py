"""Runs an ONNX model exported by graft in ONNX Runtime and compares its outputs with graft's.

    python3 onnx_check.py MODEL.onnx --input NAME=FILE.npy ... --expect NAME=FILE.npy ... [--tol 1e-5]

Inputs are cast to the type the model declares (int64 token ids, float32 otherwise). Prints one JSON line with the
largest absolute difference per output; exits 1 when an output differs by more than the tolerance, 2 when
onnxruntime is not installed (pip install -r crates/graft-cli/tests/requirements.txt).
"""

import argparse
import json
import sys

try:
    import numpy as np
    import onnxruntime as ort
except ImportError as e:
    print(f"onnxruntime is not installed: {e}", file=sys.stderr)
    sys.exit(2)


def pairs(items):
    return dict(item.split("=", 1) for item in items)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--input", action="append", default=[])
    parser.add_argument("--expect", action="append", default=[])
    parser.add_argument("--tol", type=float, default=1e-5)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in session.get_inputs()}
    feeds = {}
    for name, path in pairs(args.input).items():
        value = np.load(path)
        feeds[name] = value.astype(np.int64 if "int64" in types[name] else np.float32)
    expected = {name: np.load(path) for name, path in pairs(args.expect).items()}
    got = session.run(list(expected), feeds)
    report = {"onnxruntime": ort.__version__, "max_abs_diff": {}}
    ok = True
    for (name, want), have in zip(expected.items(), got):
        have = np.asarray(have, dtype=np.float32)
        if have.size != want.size:
            print(f"output {name}: onnxruntime gave shape {have.shape}, graft {want.shape}", file=sys.stderr)
            sys.exit(1)
        diff = float(np.max(np.abs(have.reshape(want.shape) - want))) if want.size else 0.0
        report["max_abs_diff"][name] = diff
        ok = ok and diff <= args.tol
    print(json.dumps(report))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
