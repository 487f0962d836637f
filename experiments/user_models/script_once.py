"""A scientist's whole script, as they run it: ``python fit.py`` imports the library, fits
their own NumPy model to one spectrum (or to a few), prints the result and exits.

What they wait for is the process, start to end: Python's start, the import, the fits. Each
run is a new process running the script from a file (``python fit.py``: the model's source
is readable, as in theirs), autofit and scipy alternating, ``REPEATS`` runs each;
the median wall time of the process, and inside it the import and the fits (the script
times them itself). Data: a gaussian on a line, 3,000 points, noise 0.05; least squares
(``curve_fit``'s defaults), or with 150 spikes and ``loss='soft_l1', f_scale=0.05,
method='trf'``.

    python experiments/user_models/script_once.py

Writes ``script_once.json`` beside this file.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPEATS = 9

SCRIPT = r'''
import json, sys, time
t0 = time.perf_counter()
import numpy as np
if sys.argv[1] == "scipy":
    from scipy.optimize import curve_fit
else:
    from autofit import curve_fit
t1 = time.perf_counter()

def model(x, a, mu, s, b, c):
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + b * x + c

loss, n_fits = sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(3)
x = np.linspace(-5, 5, 3000)
options = {} if loss == "linear" else {"loss": loss, "f_scale": 0.05, "method": "trf"}
for k in range(n_fits):
    y = model(x, 2.0, 0.3 + 0.3 * np.sin(k), 0.8, 0.1, 0.5)
    y += 0.05 * rng.standard_normal(x.size)
    if loss != "linear":
        spikes = rng.choice(x.size, 150, replace=False)
        y[spikes] += rng.uniform(1, 4, spikes.size)
    popt, pcov = curve_fit(model, x, y, p0=[1.5, 0.0, 1.0, 0.0, 0.0], **options)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "fits_s": t2 - t1, "params": popt.tolist()}))
'''


def _run(script, library, loss, n_fits):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), library, loss, str(n_fits)],
                          capture_output=True, text=True, check=True)
    inside = json.loads(done.stdout.strip().splitlines()[-1])
    return {"process_s": time.perf_counter() - start, **inside}


def main():
    # autofit's modules byte-compiled, as pip's install leaves them (scipy's are): where
    # Python writes no bytecode (PYTHONDONTWRITEBYTECODE, a read-only checkout) an editable
    # install compiled every module in every process, 0.05 s of the import.
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    str(Path(__file__).resolve().parents[2] / "autofit")], check=True)
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "fit.py"
        script.write_text(SCRIPT)
        _measure(script)


def _measure(script):
    rows = []
    for loss in ("linear", "soft_l1"):
        for n_fits in (1, 10):
            runs = {"scipy": [], "autofit": []}
            for _ in range(REPEATS):
                for library in runs:
                    runs[library].append(_run(script, library, loss, n_fits))
            row = {"loss": loss, "n_fits": n_fits}
            for library, results in runs.items():
                for key in ("process_s", "import_s", "fits_s"):
                    row[f"{library}_{key}"] = statistics.median(r[key] for r in results)
            row["process_ratio"] = row["autofit_process_s"] / row["scipy_process_s"]
            rows.append(row)
            print(f"{loss:8s} {n_fits:3d} fit(s): process autofit {row['autofit_process_s']:.3f}"
                  f" s / scipy {row['scipy_process_s']:.3f} s ({row['process_ratio']:.2f}x);"
                  f" import {row['autofit_import_s']:.3f} / {row['scipy_import_s']:.3f} s;"
                  f" fits {row['autofit_fits_s']:.4f} / {row['scipy_fits_s']:.4f} s",
                  flush=True)
    out = Path(__file__).with_name("script_once.json")
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                               "python": platform.python_version(), "repeats": REPEATS,
                               "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
