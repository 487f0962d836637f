"""A scientist's loop of fits in a fresh process: ``curve_fit(model, x, y, p0, ...)`` with
their own NumPy model, once per spectrum, autofit against scipy.

Each (library, loss, number of calls) runs in a new Python process, from a script file as
the scientist runs it (``python fit.py``: the model's source is readable, so autofit
generates its derivatives, and numba's disk cache can keep what it compiles for it): the
import, then the loop, each call timed. autofit runs twice: its model new to the cache (a
tag in the model's source that no earlier run used: what its first run costs), then the
same script again. Data: a gaussian on a line, 3,000 points, noise 0.05, 150 spikes of +1
to +4 (5% of the points), the peak's centre moving from spectrum to spectrum; least
squares, or ``loss=..., f_scale=0.05, method='trf'``.

    python experiments/robust_batch/loop.py

10, 50, 300 and 1,000 calls of each loss, 3,000 of least squares (where the quick start
has numba take over: a child process compiles the model while the NumPy engine answers).
Writes ``loop.json`` beside this file.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

SCRIPT = r'''
import json, sys, time
import numpy as np
library, loss, n_calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
if library == "scipy":
    from scipy.optimize import curve_fit
else:
    from autofit import curve_fit

def model(x, a, mu, s, b, c):
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + b * x + c * 1.000TAG

rng = np.random.default_rng(3)
x = np.linspace(-5, 5, 3000)
options = {} if loss == "linear" else {"loss": loss, "f_scale": 0.05, "method": "trf"}
times = []
for k in range(n_calls):
    y = model(x, 2.0, 0.3 + 0.3 * np.sin(k), 0.8, 0.1, 0.5)
    y += 0.05 * rng.standard_normal(x.size)
    spikes = rng.choice(x.size, 150, replace=False)
    y[spikes] += rng.uniform(1, 4, spikes.size)
    t = time.perf_counter()
    curve_fit(model, x, y, p0=[1.5, 0.0, 1.0, 0.0, 0.0], **options)
    times.append(time.perf_counter() - t)
print(json.dumps(times))
'''


LOSSES = ("linear", "soft_l1", "arctan")


def _run(folder, library, loss, n_calls, tag):
    script = Path(folder) / "fit.py"
    script.write_text(SCRIPT.replace("TAG", tag))
    done = subprocess.run([sys.executable, str(script), library, loss, str(n_calls)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    # autofit's modules byte-compiled, as pip's install leaves them (scipy's are): where
    # Python writes no bytecode (PYTHONDONTWRITEBYTECODE, a read-only checkout) an editable
    # install compiled every module in every process, 0.05 s of the import.
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    str(Path(__file__).resolve().parents[2] / "autofit")], check=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n_calls, losses in ((10, LOSSES), (50, LOSSES), (300, LOSSES), (1000, LOSSES),
                                (3000, ("linear",))):
            for loss in losses:
                # c * 1.000<tag>: a number in the model's source that no earlier run had (its
                # derivatives then differ: a model new to the cache)
                tag = f"{uuid.uuid4().int % 10**12:012d}"
                for library, run in (("scipy", "-"), ("autofit", "new model"),
                                     ("autofit", "run again")):
                    times = _run(folder, library, loss, n_calls, tag)
                    rows.append({"library": library, "run": run, "loss": loss,
                                 "n_calls": n_calls, "loop_s": sum(times),
                                 "first_s": times[0], "slowest_s": max(times),
                                 "last_s": times[-1]})
                    print(json.dumps(rows[-1]), flush=True)
    out = Path(__file__).with_name("loop.json")
    out.write_text(json.dumps({"machine": f"{platform.machine()}, {platform.processor()}",
                               "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
