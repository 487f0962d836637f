"""A scientist's first robust fit in a fresh process: ``curve_fit(model, x, y, p0,
loss=..., f_scale=..., method='trf')`` with their own NumPy model, autofit against scipy;
and a first small ``fit_batch`` of their model against a scipy loop.

Each (library, loss) runs in a new Python process, from a script file: the import, the
first call, a second call at once (autofit: still the NumPy engine, the quick start) and a
third (autofit: once compiled, after ``autofit.wait_for_compilation()``) are timed. Data:
a gaussian on a line, 3,000 points, noise 0.05, 150 spikes of +1 to +4 (5% of the points);
f_scale 0.05.

    python experiments/robust_batch/first_call.py

Writes ``first_call.json`` beside this file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SCRIPT = r'''
import json, sys, time
t0 = time.perf_counter()
import numpy as np
if sys.argv[1] == "scipy":
    from scipy.optimize import curve_fit
else:
    from autofit import curve_fit

def model(x, a, mu, s, b, c):
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + b * x + c

rng = np.random.default_rng(3)
x = np.linspace(-5, 5, 3000)
y = model(x, 2.0, 0.3, 0.8, 0.1, 0.5) + 0.05 * rng.standard_normal(x.size)
spikes = rng.choice(x.size, 150, replace=False)
y[spikes] += rng.uniform(1, 4, spikes.size)
t1 = time.perf_counter()
times = []
for _ in range(2):
    t = time.perf_counter()
    popt, pcov = curve_fit(model, x, y, p0=[1.5, 0.0, 1.0, 0.0, 0.0], loss=sys.argv[2],
                           f_scale=0.05, method="trf")
    times.append(time.perf_counter() - t)
if sys.argv[1] == "autofit":
    import autofit
    autofit.wait_for_compilation()  # numba's passes, compiled in the background
t = time.perf_counter()
popt, pcov = curve_fit(model, x, y, p0=[1.5, 0.0, 1.0, 0.0, 0.0], loss=sys.argv[2],
                       f_scale=0.05, method="trf")
times.append(time.perf_counter() - t)
print(json.dumps({"import_s": t1 - t0, "first_s": times[0], "second_s": times[1],
                  "compiled_s": times[2], "params": popt.tolist()}))
'''

BATCH = r'''
import json, sys, time, warnings
t0 = time.perf_counter()
import numpy as np

def peak(x, a, mu, s, c):
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + c

n_fits, loss = int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
x = np.linspace(-3, 3, 200)
truth = np.column_stack([rng.uniform(1, 3, n_fits), rng.uniform(-1, 1, n_fits),
                         rng.uniform(0.5, 1, n_fits), rng.uniform(0.1, 0.5, n_fits)])
y = np.stack([peak(x, *t) for t in truth]) + 0.05 * rng.standard_normal((n_fits, x.size))
y[:, ::25] += 2.0  # spikes
p0 = truth * 1.1
if sys.argv[1] == "scipy":
    from scipy.optimize import least_squares
else:
    import autofit
t = time.perf_counter()
if sys.argv[1] == "scipy":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = [least_squares(lambda p, i=i: peak(x, *p) - y[i], p0[i], loss=loss,
                                f_scale=0.05).x for i in range(n_fits)]
    backend = "scipy"
else:
    result = autofit.fit_batch(peak, x, y, p0, loss=loss, f_scale=0.05, progress=False)
    params, backend = result.params, result.backend
print(json.dumps({"first_s": time.perf_counter() - t, "backend": backend,
                  "params": np.asarray(params).tolist()}))
'''


def _run(script, *args):
    # From a file, as the scientist runs it (``python fit.py``): the model's source is then
    # readable, so autofit generates its derivatives (and numba's disk cache can keep what
    # it compiles for it; this script's models were compiled by its earlier runs).
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fit.py"
        path.write_text(script)
        done = subprocess.run([sys.executable, str(path), *args], capture_output=True,
                              text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def batches():
    rows = []
    for n_fits in (100, 1000):
        for loss in ("linear", "arctan"):
            ours, theirs = (_run(BATCH, library, str(n_fits), loss)
                            for library in ("autofit", "scipy"))
            rows.append({"n_fits": n_fits, "loss": loss, "autofit_first_s": ours["first_s"],
                         "ran_on": ours["backend"], "scipy_loop_s": theirs["first_s"],
                         "same_fit_share": float(np.mean(np.all(np.isclose(
                             ours["params"], theirs["params"], rtol=1e-4, atol=1e-6),
                             axis=1)))})
            row = rows[-1]
            print(f"fit_batch {n_fits:5d} fits, {loss:7s}: first call {row['autofit_first_s']:.3f}"
                  f" s on {row['ran_on']}, scipy loop {row['scipy_loop_s']:.3f} s; "
                  f"{100 * row['same_fit_share']:.1f}% of fits the same to 1e-4")
    return rows


def main():
    # autofit's modules byte-compiled, as pip's install leaves them (scipy's are): where
    # Python writes no bytecode (PYTHONDONTWRITEBYTECODE, a read-only checkout) an editable
    # install compiled every module in every process, 0.05 s of the import.
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    str(Path(__file__).resolve().parents[2] / "autofit")], check=True)
    rows = []
    for loss in ("soft_l1", "huber", "cauchy", "arctan"):
        row = {"loss": loss}
        for library in ("scipy", "autofit"):
            row[library] = _run(SCRIPT, library, loss)
        row["first_call_vs_scipy"] = row["autofit"]["first_s"] / row["scipy"]["first_s"]
        row["largest_param_difference"] = max(
            abs(a - b) for a, b in zip(row["autofit"]["params"], row["scipy"]["params"]))
        rows.append(row)
        print(f"{loss:8s} first call: autofit {row['autofit']['first_s']:.3f} s, scipy "
              f"{row['scipy']['first_s']:.3f} s ({row['first_call_vs_scipy']:.1f}x); second "
              f"{row['autofit']['second_s']:.4f} / {row['scipy']['second_s']:.4f} s; compiled "
              f"{row['autofit']['compiled_s']:.4f} / {row['scipy']['compiled_s']:.4f} s; import "
              f"{row['autofit']['import_s']:.2f} / {row['scipy']['import_s']:.2f} s; params "
              f"differ by {row['largest_param_difference']:.1e}")
    out = Path(__file__).with_name("first_call.json")
    out.write_text(json.dumps({"curve_fit": rows, "fit_batch": batches()}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
