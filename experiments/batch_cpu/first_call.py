"""First ``fit_batch`` call in a fresh process: numba compiling the CPU kernel, then loading it.

Runs the same small gaussian batch in two new Python processes that share an empty kernel
cache directory (``AUTOFIT_CACHE_DIR``): the first compiles the kernel and writes it to the
cache, the second loads it. Run from the repository root:

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
hits = sum(sum(k.stats.cache_hits.values()) for k in batch._KERNELS.values())
print(f"import {t1 - t0:.2f} s, first fit_batch {t2 - t1:.2f} s, cache hits {hits}, "
      f"converged {result.converged.mean():.3f}")
"""


def main():
    with tempfile.TemporaryDirectory() as directory:
        env = dict(os.environ, AUTOFIT_CACHE_DIR=directory)
        for label in ("cold (compiles)", "warm (loads) "):
            done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, text=True,
                                  capture_output=True, check=True)
            print(f"{label}: {done.stdout.strip()}")


if __name__ == "__main__":
    main()
