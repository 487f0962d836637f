"""First ``fit_batch`` call in a fresh process: numba compiling the CPU kernel, then loading it.

Runs the same small gaussian batch, with the built-in model and then with a user's own
NumPy function, in two new Python processes that share an empty kernel cache directory
(``FFIT_CACHE_DIR``): the first compiles the per-fit solver (shared by both models) and the
built-in model's passes and writes them to the cache, the second loads them; the user's
model compiles its two passes in each process. Run from the repository root:

    python experiments/batch_cpu/first_call.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

SCRIPT = """
import time
import numpy as np
t0 = time.perf_counter()
import autofit
from autofit import models
from autofit.numba import batch
t1 = time.perf_counter()
x = np.linspace(-5.0, 5.0, 32)
rng = np.random.default_rng(0)
p = np.array([3.0, 0.4, 1.1, 0.2]) * (1.0 + 0.05 * rng.normal(size=(1000, 4)))
y = p[:, :1] * np.exp(-0.5 * ((x - p[:, 1:2]) / p[:, 2:3]) ** 2) + p[:, 3:]
result = autofit.fit_batch(models.gaussian, x, y, p0=p * 1.02, backend="numba")
t2 = time.perf_counter()
(kernel,) = batch._KERNELS.values()
hits = sum(sum(piece.dispatcher.stats.cache_hits.values())
           for piece in (kernel.fit_range, kernel.evaluate, kernel.probe_rows))


def peak(x, a, mu, s, c):
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + c


t3 = time.perf_counter()
user = autofit.fit_batch(peak, x, y, p0=p * 1.02, backend="numba")
t4 = time.perf_counter()
print(f"import {t1 - t0:.2f} s, first fit_batch built-in {t2 - t1:.2f} s (pieces loaded "
      f"from the disk cache: {hits} of 3), then the user's model {t4 - t3:.2f} s; "
      f"converged {result.converged.mean():.3f} / {user.converged.mean():.3f}")
"""


def main():
    with tempfile.TemporaryDirectory() as directory:
        # numba's own cache of autofit's compiled functions (the loop over the fits) empty
        # too: the first process compiles everything.
        env = dict(os.environ, FFIT_CACHE_DIR=directory,
                   NUMBA_CACHE_DIR=os.path.join(directory, "numba"))
        for label in ("cold (compiles)", "warm (loads) "):
            done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, text=True,
                                  capture_output=True, check=True)
            print(f"{label}: {done.stdout.strip()}")


if __name__ == "__main__":
    main()
