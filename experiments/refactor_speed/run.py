"""Speed before and after a refactor: the same workloads on two checkouts, back to back.

Issue 12 moves code without changing what it computes; this measures that the speed did not
move either. Each workload runs warm (compiled and run once first) in a fresh process per
checkout, the two checkouts alternating, ``ROUNDS`` times; the figure is the best time.

    git worktree add /tmp/before <commit>
    python experiments/refactor_speed/run.py /tmp/before .     # ~5 min on 2 cores

Writes ``results.json`` beside this file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROUNDS = 2

WORKLOADS = r'''
import json, sys, time
import numpy as np
import autofit
from autofit import models

def best(run, repeat=3):
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)

rng = np.random.default_rng(0)
out = {}
# Batch, built-in model (analytic gradient).
x = np.linspace(-3, 3, 64)
truth = np.array([2.0, 0.1, 0.7, 0.1])
y = models.gaussian(x, *truth) + 0.05 * rng.standard_normal((20000, 64))
out["batch gaussian 20000x64"] = best(lambda: autofit.fit_batch(
    models.gaussian, x, y, truth * 1.1, backend="numba"))
# Batch, user model (forward differences).
def user_gaussian(x, a, c, s, b):
    return a * np.exp(-0.5 * ((x - c) / s) ** 2) + b
out["batch user gaussian 5000x64"] = best(lambda: autofit.fit_batch(
    user_gaussian, x, y[:5000], truth * 1.1, backend="numba"))
# Batch, 25 parameters (tiled sums).
m8 = models.multi_lorentzian(8)
f = np.linspace(2.8, 2.95, 200)
p = np.concatenate([[-0.2, 2.81 + 0.017 * k, 0.004] for k in range(8)] + [[1.0]])
y8 = m8(f, *p) + 0.01 * rng.standard_normal((1000, 200))
out["batch multi_lorentzian(8) 1000x200"] = best(lambda: autofit.fit_batch(
    m8, f, y8, p, backend="numba"))
# Robust batch.
out["batch gaussian soft_l1 20000x64"] = best(lambda: autofit.fit_batch(
    models.gaussian, x, y, truth * 1.1, backend="numba", loss="soft_l1", f_scale=0.05))
# One huge fit on the fused path.
xx = np.linspace(0, 10, 1_000_000)
yy = 3.0 * np.exp(-0.7 * xx) + 0.5 + 0.01 * rng.standard_normal(xx.size)
out["fused exponential_decay 1e6"] = best(lambda: autofit.curve_fit(
    models.exponential_decay, xx, yy, p0=[2.0, 1.0, 0.0], backend="numba"))
def user_decay(x, a, b, c):
    return a * np.exp(-b * x) + c
out["fused user decay 1e6"] = best(lambda: autofit.curve_fit(
    user_decay, xx, yy, p0=[2.0, 1.0, 0.0], backend="numba"))
print(json.dumps(out))
'''


def measure(tree: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", WORKLOADS], cwd=tree, capture_output=True,
                          text=True, timeout=1800)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    before, after = (Path(p).resolve() for p in sys.argv[1:3])
    runs = {"before": [], "after": []}
    for _ in range(ROUNDS):
        runs["before"].append(measure(before))
        runs["after"].append(measure(after))
    rows = []
    for name in runs["before"][0]:
        b = min(r[name] for r in runs["before"])
        a = min(r[name] for r in runs["after"])
        rows.append({"workload": name, "before_s": b, "after_s": a, "after_over_before": a / b})
        print(f"{name:40s} before {b * 1e3:9.1f} ms  after {a * 1e3:9.1f} ms  ratio {a / b:.2f}")
    Path(__file__).with_name("results.json").write_text(json.dumps(
        {"before": str(before), "after": str(after), "rounds": ROUNDS, "rows": rows},
        indent=1))


if __name__ == "__main__":
    main()
