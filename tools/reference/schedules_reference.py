#!/usr/bin/env python3
"""Reference learning-rate sequences for the tests in crates/graft/src/train/schedule.rs.

Every case is computed twice:

* by a pure-Python re-derivation of torch.optim.lr_scheduler (the chainable forms that
  `scheduler.step()` uses, with the same operation order as torch's source), which needs nothing
  but the standard library;
* by torch itself, when `import torch` works: the script then checks that both agree to 1e-12
  (relative) and prints torch's numbers.

Run it as `python3 tools/reference/schedules_reference.py`; it prints Rust `const` arrays to paste into
the tests. The header line says which of the two produced them.

Conventions (the same as graft's `Scheduler`):
* per-epoch schedules: entry e is the lr used during epoch e (0-based), i.e. the optimizer's lr after
  e calls of `scheduler.step()`;
* per-step schedules (warm-up, one-cycle): entry s is the lr of optimizer step s (0-based), read
  before that step;
* ReduceLROnPlateau: entry e is the lr used during epoch e; after each epoch `scheduler.step(metric)`
  runs on that epoch's metric, so the list has one entry more than the metrics (the lr after the last).
"""

import math
import sys

REL_TOL = 1e-12

# ----------------------------------------------------------------------------------------------
# The cases. Keep them in step with the Rust tests (same names, same parameters).
# ----------------------------------------------------------------------------------------------

BASE_LR = 0.1

CASES = {
    "STEP_LR": dict(kind="step", epochs=10, step_size=3, gamma=0.5),
    "EXPONENTIAL_LR": dict(kind="exponential", epochs=10, gamma=0.9),
    # t_max = the number of epochs (graft's default).
    "COSINE_LR": dict(kind="cosine", epochs=10, t_max=10, eta_min=0.001),
    # t_max shorter than the run: torch's chainable form goes back up after T_max.
    "COSINE_SHORT_LR": dict(kind="cosine", epochs=10, t_max=4, eta_min=0.002),
    # Linear warm-up over 6 steps from 0.1 * lr, then cosine per epoch (t_max = 5: the epochs that
    # hold post-warm-up steps), 4 steps per epoch, 6 epochs.
    "WARMUP_COSINE_LR": dict(kind="warmup_cosine", epochs=6, steps_per_epoch=4, warmup_steps=6,
                             start_factor=0.1, t_max=5, eta_min=0.0),
    # OneCycle over 5 epochs x 5 steps = 25 steps. The optimizer's own lr (0.5) is overridden.
    "ONE_CYCLE_COS_LR": dict(kind="one_cycle", epochs=5, steps_per_epoch=5, max_lr=0.1, pct_start=0.3,
                             anneal="cos", div_factor=25.0, final_div_factor=1e4, three_phase=False),
    "ONE_CYCLE_LINEAR_LR": dict(kind="one_cycle", epochs=5, steps_per_epoch=5, max_lr=0.1, pct_start=0.25,
                                anneal="linear", div_factor=10.0, final_div_factor=100.0, three_phase=False),
    "ONE_CYCLE_THREE_PHASE_LR": dict(kind="one_cycle", epochs=5, steps_per_epoch=5, max_lr=0.1, pct_start=0.3,
                                     anneal="cos", div_factor=25.0, final_div_factor=1e4, three_phase=True),
    "ONE_CYCLE_THREE_PHASE_LINEAR_LR": dict(kind="one_cycle", epochs=5, steps_per_epoch=5, max_lr=0.1,
                                            pct_start=0.4, anneal="linear", div_factor=25.0,
                                            final_div_factor=1e4, three_phase=True),
    # Slanted triangular (ULMFiT, Howard & Ruder 2018, eq. 3) over 4 epochs x 5 steps = 20 steps, as torch's
    # LambdaLR with that factor; three parameter groups at the discriminative rates lr / 2.6^g (g = 0 the top).
    "SLANTED_TRIANGULAR_LR": dict(kind="slanted_triangular", epochs=4, steps_per_epoch=5, cut_frac=0.2,
                                  ratio=32.0, decay=2.6, groups=3),
    # min mode, relative threshold 1% (0.895 after 0.9 is not an improvement), patience 1, cooldown 2,
    # floor at min_lr = 0.01.
    "PLATEAU_MIN_LR": dict(kind="plateau", mode="min", factor=0.5, patience=1, threshold=0.01,
                           threshold_mode="rel", cooldown=2, min_lr=0.01,
                           metrics=[1.0, 0.9, 0.895, 0.894, 0.85, 0.86, 0.87, 0.88, 0.80, 0.81, 0.82, 0.83,
                                    0.84, 0.85, 0.86, 0.87, 0.88, 0.89, 0.90, 0.91]),
    # max mode, absolute threshold 0.05, patience 0, cooldown 1, factor 0.1, min_lr 1e-4.
    "PLATEAU_MAX_LR": dict(kind="plateau", mode="max", factor=0.1, patience=0, threshold=0.05,
                           threshold_mode="abs", cooldown=1, min_lr=1e-4,
                           metrics=[0.5, 0.6, 0.64, 0.66, 0.70, 0.71, 0.72, 0.73, 0.80, 0.79, 0.78]),
}

# ----------------------------------------------------------------------------------------------
# Pure-Python re-derivation (mirrors torch/optim/lr_scheduler.py, chainable get_lr forms)
# ----------------------------------------------------------------------------------------------


def derive_step(c):
    lr, out = BASE_LR, []
    for last_epoch in range(c["epochs"]):
        out.append(lr)
        e = last_epoch + 1  # StepLR.get_lr after the increment in step()
        if not (e == 0 or e % c["step_size"] != 0):
            lr = lr * c["gamma"]
    return out


def derive_exponential(c):
    lr, out = BASE_LR, []
    for _ in range(c["epochs"]):
        out.append(lr)
        lr = lr * c["gamma"]
    return out


def cosine_chainable(lr, base_lr, last_epoch, t_max, eta_min):
    """CosineAnnealingLR.get_lr for last_epoch >= 1 (not the initial step)."""
    if (last_epoch - 1 - t_max) % (2 * t_max) == 0:
        return lr + (base_lr - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
    return (
        (1 + math.cos(math.pi * last_epoch / t_max))
        / (1 + math.cos(math.pi * (last_epoch - 1) / t_max))
        * (lr - eta_min)
        + eta_min
    )


def derive_cosine(c):
    lr, out = BASE_LR, []
    for e in range(c["epochs"]):
        out.append(lr)
        lr = cosine_chainable(lr, BASE_LR, e + 1, c["t_max"], c["eta_min"])
    return out


def linear_lr_chainable(lr, last_epoch, start_factor, end_factor, total_iters):
    """LinearLR.get_lr for last_epoch >= 1."""
    if last_epoch > total_iters:
        return lr
    return lr * (
        1.0
        + (end_factor - start_factor)
        / (total_iters * start_factor + (last_epoch - 1) * (end_factor - start_factor))
    )


def derive_warmup_cosine(c):
    w, sf = c["warmup_steps"], c["start_factor"]
    lr = BASE_LR * sf  # LinearLR's initial step
    warm_epoch, cos_epoch, cos_base = 0, None, None
    step, out = 0, []
    for _ in range(c["epochs"]):
        for _ in range(c["steps_per_epoch"]):
            out.append(lr)
            if step < w:
                warm_epoch += 1
                lr = linear_lr_chainable(lr, warm_epoch, sf, 1.0, w)
            step += 1
            if step == w:  # CosineAnnealingLR created now: base_lrs = initial_lr = BASE_LR
                cos_epoch, cos_base = 0, BASE_LR
        if cos_epoch is not None and step > w:
            cos_epoch += 1
            lr = cosine_chainable(lr, cos_base, cos_epoch, c["t_max"], c["eta_min"])
    return out


def derive_one_cycle(c):
    total = c["epochs"] * c["steps_per_epoch"]
    pct_start = c["pct_start"]
    initial_lr = c["max_lr"] / c["div_factor"]
    max_lr = c["max_lr"]
    min_lr = initial_lr / c["final_div_factor"]
    if c["three_phase"]:
        phases = [
            (float(pct_start * total) - 1, initial_lr, max_lr),
            (float(2 * pct_start * total) - 2, max_lr, initial_lr),
            (total - 1, initial_lr, min_lr),
        ]
    else:
        phases = [(float(pct_start * total) - 1, initial_lr, max_lr), (total - 1, max_lr, min_lr)]

    def anneal(start, end, pct):
        if c["anneal"] == "cos":
            cos_out = math.cos(math.pi * pct) + 1
            return end + (start - end) / 2.0 * cos_out
        return (end - start) * pct + start

    out = []
    for step_num in range(total):
        start_step = 0.0
        for i, (end_step, s_lr, e_lr) in enumerate(phases):
            if step_num <= end_step or i == len(phases) - 1:
                pct = (step_num - start_step) / (end_step - start_step)
                out.append(anneal(s_lr, e_lr, pct))
                break
            start_step = end_step
    return out


def stlr_factor(t, total, cut_frac, ratio):
    cut = math.floor(total * cut_frac)
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return (1 + p * (ratio - 1)) / ratio


def derive_slanted_triangular(c):
    total = c["epochs"] * c["steps_per_epoch"]
    out = []
    for t in range(total):
        f = stlr_factor(t, total, c["cut_frac"], c["ratio"])
        out.extend(BASE_LR / c["decay"] ** g * f for g in range(c["groups"]))
    return out


def derive_plateau(c):
    eps = 1e-8
    mode, thr, thr_mode = c["mode"], c["threshold"], c["threshold_mode"]

    def is_better(a, best):
        if mode == "min" and thr_mode == "rel":
            return a < best * (1.0 - thr)
        if mode == "min" and thr_mode == "abs":
            return a < best - thr
        if mode == "max" and thr_mode == "rel":
            return a > best * (thr + 1.0)
        return a > best + thr

    lr = BASE_LR
    best = math.inf if mode == "min" else -math.inf
    bad, cooldown_counter, out = 0, 0, []
    for current in c["metrics"]:
        out.append(lr)
        if is_better(current, best):
            best, bad = current, 0
        else:
            bad += 1
        if cooldown_counter > 0:
            cooldown_counter -= 1
            bad = 0
        if bad > c["patience"]:
            new_lr = max(lr * c["factor"], c["min_lr"])
            if lr - new_lr > eps:
                lr = new_lr
            cooldown_counter, bad = c["cooldown"], 0
    out.append(lr)
    return out


DERIVE = {
    "step": derive_step,
    "exponential": derive_exponential,
    "cosine": derive_cosine,
    "warmup_cosine": derive_warmup_cosine,
    "one_cycle": derive_one_cycle,
    "plateau": derive_plateau,
    "slanted_triangular": derive_slanted_triangular,
}

# ----------------------------------------------------------------------------------------------
# torch itself
# ----------------------------------------------------------------------------------------------


def torch_case(torch, c):
    from torch.optim import lr_scheduler as S

    def optimizer(lr):
        p = torch.zeros(1, requires_grad=True)
        return torch.optim.SGD([p], lr=lr, momentum=0.9)

    def lr_of(opt):
        return float(opt.param_groups[0]["lr"])

    kind = c["kind"]
    out = []
    if kind in ("step", "exponential", "cosine"):
        opt = optimizer(BASE_LR)
        if kind == "step":
            sched = S.StepLR(opt, step_size=c["step_size"], gamma=c["gamma"])
        elif kind == "exponential":
            sched = S.ExponentialLR(opt, gamma=c["gamma"])
        else:
            sched = S.CosineAnnealingLR(opt, T_max=c["t_max"], eta_min=c["eta_min"])
        for _ in range(c["epochs"]):
            out.append(lr_of(opt))
            opt.step()
            sched.step()
    elif kind == "warmup_cosine":
        opt = optimizer(BASE_LR)
        w = c["warmup_steps"]
        warm = S.LinearLR(opt, start_factor=c["start_factor"], end_factor=1.0, total_iters=w)
        cos, step = None, 0
        for _ in range(c["epochs"]):
            for _ in range(c["steps_per_epoch"]):
                out.append(lr_of(opt))
                opt.step()
                if step < w:
                    warm.step()
                step += 1
                if step == w:
                    cos = S.CosineAnnealingLR(opt, T_max=c["t_max"], eta_min=c["eta_min"])
            if cos is not None and step > w:
                cos.step()
    elif kind == "one_cycle":
        opt = optimizer(0.5)
        sched = S.OneCycleLR(
            opt,
            max_lr=c["max_lr"],
            epochs=c["epochs"],
            steps_per_epoch=c["steps_per_epoch"],
            pct_start=c["pct_start"],
            anneal_strategy=c["anneal"],
            cycle_momentum=False,
            div_factor=c["div_factor"],
            final_div_factor=c["final_div_factor"],
            three_phase=c["three_phase"],
        )
        for _ in range(c["epochs"] * c["steps_per_epoch"]):
            out.append(lr_of(opt))
            opt.step()
            sched.step()
    elif kind == "slanted_triangular":
        params = [torch.zeros(1, requires_grad=True) for _ in range(c["groups"])]
        opt = torch.optim.SGD(
            [{"params": [p], "lr": BASE_LR / c["decay"] ** g} for g, p in enumerate(params)], lr=BASE_LR
        )
        total = c["epochs"] * c["steps_per_epoch"]
        sched = S.LambdaLR(opt, lambda t: stlr_factor(t, total, c["cut_frac"], c["ratio"]))
        for _ in range(total):
            out.extend(float(g["lr"]) for g in opt.param_groups)
            opt.step()
            sched.step()
    elif kind == "plateau":
        opt = optimizer(BASE_LR)
        sched = S.ReduceLROnPlateau(
            opt,
            mode=c["mode"],
            factor=c["factor"],
            patience=c["patience"],
            threshold=c["threshold"],
            threshold_mode=c["threshold_mode"],
            cooldown=c["cooldown"],
            min_lr=c["min_lr"],
        )
        for metric in c["metrics"]:
            out.append(lr_of(opt))
            opt.step()
            sched.step(metric)
        out.append(lr_of(opt))
    else:
        raise ValueError(kind)
    return out


# ----------------------------------------------------------------------------------------------


def close(a, b):
    return a == b or abs(a - b) <= REL_TOL * max(abs(a), abs(b))


def main():
    derived = {name: DERIVE[c["kind"]](c) for name, c in CASES.items()}
    try:
        import warnings

        import torch

        warnings.filterwarnings("ignore")
    except ImportError:
        torch = None

    if torch is not None:
        results = {name: torch_case(torch, c) for name, c in CASES.items()}
        for name in CASES:
            a, b = results[name], derived[name]
            if len(a) != len(b) or not all(close(x, y) for x, y in zip(a, b)):
                print(f"MISMATCH in {name}:\n  torch:   {a}\n  derived: {b}", file=sys.stderr)
                sys.exit(1)
        source = f"torch {torch.__version__} (the pure-Python re-derivation agrees to {REL_TOL:g} relative)"
    else:
        results = derived
        source = "the pure-Python re-derivation of torch's formulas (torch not importable here)"

    print(f"// Generated by tools/reference/schedules_reference.py from {source}.")
    for name, values in results.items():
        body = ", ".join(repr(float(v)) for v in values)
        print(f"const {name}: [f64; {len(values)}] = [{body}];")


if __name__ == "__main__":
    main()
