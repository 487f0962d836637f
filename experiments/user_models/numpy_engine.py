"""The NumPy engine (the engine that answers a user's new model) against scipy's
``curve_fit``: a warm fit per loss in one process, and a loop's page faults with glibc's
malloc as autofit sets it and as glibc leaves it (``FFIT_SYSTEM_MALLOC=1``).

1. Warm, one process: a gaussian on a line, 3,000 points, 30 spectra (the peak's centre
   moving), clean or with 5% spikes of +1 to +4; ``loss=..., f_scale=0.05, method='trf'``
   for the robust losses; the best of 5 passes over the 30 spectra, per fit.
2. Page faults: each (points, setting) in a fresh process, from a script file as a
   scientist runs it: the gaussian with 5% spikes, each spectrum made in the loop and
   fitted with ``curve_fit(..., backend="numpy")``; the median time and the page faults per
   fit (``resource``'s minor faults, counted around the fits only), then the same for scipy.

    python experiments/user_models/numpy_engine.py

Writes ``numpy_engine.json`` beside this file and prints the tables.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit as scipy_curve_fit

import autofit


def model(x, a, mu, s, b, c):
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + b * x + c


def _spectra(spikes: bool):
    rng = np.random.default_rng(3)
    x = np.linspace(-5, 5, 3000)
    out = []
    for k in range(30):
        y = model(x, 2.0, 0.3 + 0.3 * np.sin(k), 0.8, 0.1, 0.5)
        y = y + 0.05 * rng.standard_normal(x.size)
        if spikes:
            where = rng.choice(x.size, 150, replace=False)
            y[where] += rng.uniform(1, 4, where.size)
        out.append(y)
    return x, out


def _per_fit(fit, x, spectra, options):
    best = np.inf
    for _ in range(5):
        began = time.perf_counter()
        for y in spectra:
            fit(model, x, y, [1.5, 0.0, 1.0, 0.0, 0.0], **options)
        best = min(best, (time.perf_counter() - began) / len(spectra))
    return best


SCRIPT = r'''
import json, resource, sys, time
import numpy as np
library, n_points, n_calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if library == "autofit":  # (each library alone in its process, as in a user's script)
    import autofit
else:
    from scipy.optimize import curve_fit

def model(x, a, mu, s, b, c):
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + b * x + c

rng = np.random.default_rng(3)
x = np.linspace(-5, 5, n_points)
p0 = [1.5, 0.0, 1.0, 0.0, 0.0]
fit = ((lambda y: autofit.curve_fit(model, x, y, p0, backend="numpy"))
       if library == "autofit" else (lambda y: curve_fit(model, x, y, p0)))

def spectrum(k):  # made in the loop, as a script reads or makes each one
    y = model(x, 2.0, 0.3 + 0.3 * np.sin(k), 0.8, 0.1, 0.5)
    y += 0.05 * rng.standard_normal(x.size)
    spikes = rng.choice(x.size, x.size // 20, replace=False)
    y[spikes] += rng.uniform(1, 4, spikes.size)
    return y

fit(spectrum(0))
times, faults = [], 0
for k in range(n_calls):
    y = spectrum(k)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.perf_counter()
    fit(y)
    times.append(time.perf_counter() - t)
    faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
import autofit._memory
print(json.dumps({"median_s": float(np.median(times)), "faults_per_fit": faults / n_calls,
                  "malloc": autofit._memory.malloc_report()}))
'''

CASES = ((3_000, 300), (30_000, 100), (300_000, 20), (3_000_000, 5))


def _run(folder, library, n_points, n_calls, system_malloc):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FFIT_")}
    if system_malloc:
        env["FFIT_SYSTEM_MALLOC"] = "1"
    # From a file, as the scientist runs it: the model's source is readable, so autofit
    # generates its derivatives (from ``-c`` it would fit with finite differences).
    script = Path(folder) / "fit.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), library, str(n_points),
                           str(n_calls)], capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _warm_losses():
    rows = []
    print("| data | loss | autofit (NumPy engine) | scipy | ratio |")
    print("|---|---|---|---|---|")
    for spikes, losses in ((False, ("linear",)), (True, ("linear", "soft_l1", "arctan"))):
        x, spectra = _spectra(spikes)
        for loss in losses:
            options = {} if loss == "linear" else {"loss": loss, "f_scale": 0.05,
                                                   "method": "trf"}
            ours = _per_fit(autofit.curve_fit, x, spectra, {**options, "backend": "numpy"})
            theirs = _per_fit(scipy_curve_fit, x, spectra, options)
            rows.append({"spikes": spikes, "loss": loss, "autofit_s": ours, "scipy_s": theirs})
            print(f"| {'5% spikes' if spikes else 'clean'} | {loss} | {ours * 1e3:.2f} ms | "
                  f"{theirs * 1e3:.2f} ms | {ours / theirs:.2f} |", flush=True)
    return rows


def _page_faults():
    rows = []
    print("| points | malloc | autofit (NumPy engine) | faults a fit | scipy | faults a fit |")
    print("|---|---|---|---|---|---|")
    folder = tempfile.mkdtemp()
    for n_points, n_calls in CASES:
        for system_malloc in (False, True):
            ours = _run(folder, "autofit", n_points, n_calls, system_malloc)
            theirs = _run(folder, "scipy", n_points, n_calls, system_malloc)
            rows.append({"n_points": n_points, "n_calls": n_calls,
                         "system_malloc": system_malloc, "autofit": ours, "scipy": theirs})
            setting = "glibc's own" if system_malloc else "autofit's"
            print(f"| {n_points:,} | {setting} | {ours['median_s'] * 1e3:.2f} ms | "
                  f"{ours['faults_per_fit']:.0f} | {theirs['median_s'] * 1e3:.2f} ms | "
                  f"{theirs['faults_per_fit']:.0f} |", flush=True)
    return rows


def main():
    warm = _warm_losses()
    print()
    faults = _page_faults()
    out = Path(__file__).with_name("numpy_engine.json")
    out.write_text(json.dumps({"machine": f"{platform.machine()}, {platform.processor()}",
                               "python": platform.python_version(), "warm_losses": warm,
                               "page_faults": faults}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
