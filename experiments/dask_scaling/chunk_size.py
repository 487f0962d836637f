"""What smaller in-memory chunks cost: the same batch through fit_batch's kernel call in
chunks of 512 ... 65536 fits (progress bars and checkpoints move once per chunk).

Run: python experiments/dask_scaling/chunk_size.py [--fits N] [--backend numba]
Prints fits/s per chunk size (best of 3, compilation excluded).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import autofit
from autofit import _batch, _dispatch, models

SIZES = (512, 1024, 4096, 16384, 65536)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fits", type=int, default=65536)
    parser.add_argument("--backend", default="numba")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = np.linspace(-3, 3, 32)
    y = models.gaussian(x, 2.0, rng.uniform(-1, 1, args.fits), 0.7, 0.1)
    y = y + rng.normal(0, 0.05, y.shape)
    problem = _batch.Problem.build(models.gaussian, x, y, None, None, None, None, "lse", None,
                                    None, None, None)
    autofit.fit_batch(models.gaussian, x, y[:64], backend=args.backend, progress=False)
    model, jacobian, jac_method = _batch._backend_model(args.backend, "cpu", problem)
    solve = _dispatch.load(args.backend).lm_batch
    rates = {}
    for size in SIZES:
        best = np.inf
        for _ in range(3):
            start = time.perf_counter()
            for first in range(0, problem.n_fits, size):
                _batch._call(args.backend, solve, model, jacobian, jac_method,
                             *problem.rows(first, min(first + size, problem.n_fits)), problem)
            best = min(best, time.perf_counter() - start)
        rates[size] = problem.n_fits / best
        print(f"chunk {size:6d}: {rates[size]:12,.0f} fits/s", flush=True)
    print(json.dumps({"backend": args.backend, "fits": args.fits, "fits_per_s": rates}))


if __name__ == "__main__":
    main()
