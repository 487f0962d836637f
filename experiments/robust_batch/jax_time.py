"""jax's batch on a CPU, each loss against ``loss='linear'``: the 20,000 gaussians of
``run.py`` (the built-in ``gaussian``, 64 points, 5 spikes a curve, f_scale 0.05), the best
of 5 warm calls, and the work executed (``BatchStats.slots``: fits x passes).

    python experiments/robust_batch/jax_time.py [n_fits]

Prints one line per loss (no file: the README's session-24 table is two runs of it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402  (this folder's families)

import autofit  # noqa: E402
from autofit.jax import batch  # noqa: E402


def main():
    n_fits = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    model, x, y, start, _, _ = run.gaussian_family(np.random.default_rng(20261204), n_fits)
    stats = {}
    run_batch = batch.run_batch

    def counted(*args, **kwargs):  # keeps the last call's BatchStats
        results, stats["last"] = run_batch(*args, **kwargs)
        return results, stats["last"]

    batch.run_batch = counted
    linear = None
    for loss in ("linear", "soft_l1", "huber", "cauchy", "arctan"):
        def call():
            return autofit.fit_batch(model, x, y, start, loss=loss, f_scale=run.F_SCALE,
                                     backend="jax", progress=False)
        call()
        times = []
        for _ in range(5):
            began = time.perf_counter()
            call()
            times.append(time.perf_counter() - began)
        best = min(times)
        linear = linear or best
        slots = stats["last"].slots
        print(f"{loss:8s} {best * 1e3:7.1f} ms  x{best / linear:.2f} of linear  "
              f"slots {slots:7d}  {best / slots * 1e6:.2f} us a slot", flush=True)


if __name__ == "__main__":
    main()
