#!/usr/bin/env python3
"""Load test of `graft serve` on loopback with wrk (apt-get install wrk): throughput and p50/p99 latency at several
numbers of concurrent clients, one input per request, after checking that the server's answers equal
`graft predict`'s on the same inputs.

    python3 bench/serve_load.py --model runs/digits-mlp --name mlp
    python3 bench/serve_load.py --model runs/foods-lstm --name text --texts data/foods/test.csv --column review

Inputs: for array and image models, seeded random arrays in the model's input shape (values in [0, 1]); for text
models, the texts of --texts (a .txt file, one per line, or a CSV column). The server and wrk share this machine's
cores: the numbers are the pair's, not the server's alone.
"""
import argparse
import csv
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

LUA = r"""
local bodies = {}
local n = 0
init = function(args)
  for line in io.lines(args[1]) do
    n = n + 1
    bodies[n] = line
  end
end
local i = 0
request = function()
  i = i % n + 1
  return wrk.format("POST", "/v1/predict", {["Content-Type"] = "application/json"}, bodies[i])
end
"""


def start_server(graft, model, extra):
    proc = subprocess.Popen([graft, "serve", "--model", model, "--port", "0", *extra], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    m = re.search(r"http://([^/]+)/", line)
    if not m:
        proc.kill()
        sys.exit(f"graft serve did not start: {line}{proc.stderr.read()}")
    return proc, m.group(1)


def get(address, path):
    with urllib.request.urlopen(f"http://{address}{path}") as r:
        return json.load(r)


def post(address, body):
    req = urllib.request.Request(f"http://{address}/v1/predict", data=body.encode(), method="POST")
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def make_inputs(model, args):
    kind = model["input"]["json"]["kind"]
    if kind == "text":
        if not args.texts:
            sys.exit("a text model: give --texts FILE (and --column for a CSV)")
        path = Path(args.texts)
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                texts = [row[args.column] for row in csv.DictReader(f)]
        else:
            texts = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
        return texts[: args.n]
    if kind in ("array", "image"):
        rng = random.Random(args.seed)
        size = 1
        for d in model["input"]["shape"]:
            size *= d
        scale = model["input"]["json"].get("divided_by", 1.0)
        return [[round(rng.random() * scale, 4) for _ in range(size)] for _ in range(args.n)]
    sys.exit(f"inputs of kind {kind}: give an experiment of array, image or text inputs")


def close(a, b, tol=1e-5):
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= tol * (1 + abs(a))
    return a == b


def seconds(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def run_wrk(address, bodies, clients, duration, threads):
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(LUA)
        data = Path(tmp) / "bodies.jsonl"
        data.write_text("".join(b + "\n" for b in bodies))
        out = subprocess.run(
            ["wrk", "-t", str(min(threads, clients)), "-c", str(clients), "-d", f"{duration}s", "--latency",
             "-s", str(script), f"http://{address}", "--", str(data)],
            capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = seconds(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = seconds(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {"clients": clients, "requests": total, "requests_per_s": rps, "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3,
            "errors": errors}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graft", default="target/release/graft")
    ap.add_argument("--model", required=True, help="the run directory to serve")
    ap.add_argument("--name", required=True, help="the row's name in the table")
    ap.add_argument("--texts", help="texts for a text model: a .txt (one per line) or a .csv with --column")
    ap.add_argument("--column", default="text")
    ap.add_argument("--n", type=int, default=200, help="distinct inputs cycled through")
    ap.add_argument("--clients", default="1,8,64")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--serve-args", default="", help="extra flags for graft serve, e.g. '--max-wait-ms 1'")
    ap.add_argument("--out", help="append the results as JSON lines to this file")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")

    server, address = start_server(args.graft, args.model, args.serve_args.split())
    try:
        model = get(address, "/v1/model")
        inputs = make_inputs(model, args)
        lines = "".join(json.dumps(x) + "\n" for x in inputs)
        ref = subprocess.run([args.graft, "predict", "--model", args.model, "--input", "-", "--output", "-"],
                             input=lines, capture_output=True, text=True, check=True).stdout.splitlines()
        expected = [json.loads(l) for l in ref]
        mismatches = sum(not close(post(address, json.dumps({"inputs": [x]}))["predictions"][0], want)
                         for x, want in zip(inputs, expected))
        bodies = [json.dumps({"inputs": [x]}) for x in inputs]
        rows = []
        for clients in map(int, args.clients.split(",")):
            row = run_wrk(address, bodies, clients, args.seconds, args.wrk_threads)
            row.update(name=args.name, equal_to_predict=f"{len(inputs) - mismatches}/{len(inputs)}")
            rows.append(row)
            print(f"| {args.name} | {clients} | {row['requests_per_s']:.0f} | {row['p50_ms']:.2f} | "
                  f"{row['p99_ms']:.2f} | {row['errors']} | {row['equal_to_predict']} |", flush=True)
        metrics = urllib.request.urlopen(f"http://{address}/metrics").read().decode()
        batches = re.search(r"^graft_batch_size_count (\S+)", metrics, re.M)
        served = re.search(r"^graft_predictions_total (\S+)", metrics, re.M)
        if batches and served:
            print(f"  mean batch: {float(served.group(1)) / float(batches.group(1)):.1f} inputs per forward pass")
        if args.out:
            with open(args.out, "a") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
    finally:
        server.terminate()
        server.wait(timeout=30)
    if mismatches:
        sys.exit(f"{mismatches} of {len(inputs)} answers differ from graft predict")


if __name__ == "__main__":
    main()
