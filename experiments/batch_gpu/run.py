"""Batched fits on a GPU: gaussian_2d spots, 11x11 pixels, Poisson data (Gpufit's benchmark).

1e6 fits (``--fits``), max 20 iterations, tolerance 1e-4, starts perturbed from the truth.
For the numba backend's CUDA path (built-in model and the same model as a plain user
function) and for the jax backend, in float32 and float64, LSE and Poisson MLE:

- "on device": data already on the GPU, kernel time only (synchronised), median of
  ``--repeat`` warm calls;
- "end to end": from host NumPy arrays to host results (copies included).

Run on a machine with an NVIDIA GPU, from the repository root:

    PYTHONPATH=. python experiments/batch_gpu/run.py --fits 1000000 --out results.json
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

import autofit
from autofit import _codes

SIDE = 11


def spots(n_fits, seed=0):
    rng = np.random.default_rng(seed)
    grid = np.arange(SIDE, dtype=np.float64)
    xx, yy = np.meshgrid(grid, grid)
    x = np.stack([xx.ravel(), yy.ravel()])
    true = np.empty((n_fits, 5))
    true[:, 0] = 500.0
    true[:, 1] = 5.0 + rng.uniform(-0.5, 0.5, n_fits)
    true[:, 2] = 5.0 + rng.uniform(-0.5, 0.5, n_fits)
    true[:, 3] = 1.5
    true[:, 4] = 10.0
    u = (x[0][None, :] - true[:, 1:2]) / true[:, 3:4]
    v = (x[1][None, :] - true[:, 2:3]) / true[:, 3:4]
    mean = true[:, 0:1] * np.exp(-0.5 * (u * u + v * v)) + true[:, 4:5]
    y = rng.poisson(mean).astype(np.float64)
    p0 = true * (1.0 + rng.uniform(-0.1, 0.1, true.shape))
    p0[:, 1:3] = true[:, 1:3] + rng.uniform(-0.3, 0.3, (n_fits, 2))
    return x, y, p0, true


def user_gaussian_2d(x, amplitude, x0, y0, width, offset):
    u = (x[0] - x0) / width
    v = (x[1] - y0) / width
    return amplitude * math.exp(-0.5 * (u * u + v * v)) + offset


def numba_cuda(x, y, p0, true, dtype, estimator, user, repeat):
    from numba import cuda

    from autofit.numba import gpu as fcuda
    from autofit.numba import points, user_points

    n_fits, n_params = p0.shape
    if user:
        value = user_points.user_point_function(user_gaussian_2d, n_params, 2, "cuda", dtype)
        gradient, jac_method = None, _codes.JAC_FORWARD
    else:
        value, gradient = points.POINT_FUNCTIONS["gaussian_2d"]
        jac_method = _codes.JAC_ANALYTIC
    host = [np.ascontiguousarray(a, dtype=dtype) for a in
            (x[None], y, np.ones((1, y.shape[1])), p0, np.full((1, n_params), -np.inf),
             np.full((1, n_params), np.inf))]
    free = np.ones(n_params, dtype=np.bool_)
    est = _codes.ESTIMATOR_MLE if estimator == "mle" else _codes.ESTIMATOR_LSE
    device = [cuda.to_device(a) for a in host]
    free_d = cuda.to_device(free)
    t0 = time.perf_counter()
    out = fcuda.lm_batch_device(value, gradient, jac_method, *device, free_d, est, 1e-4, 20)
    cuda.synchronize()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fcuda.lm_batch_device(value, gradient, jac_method, *device, free_d, est, 1e-4, 20,
                              out=out)
        cuda.synchronize()
        times.append(time.perf_counter() - t0)
    on_device = float(np.median(times))
    # End to end: pinned host buffers, copies in, kernel, copies out.
    pinned = [cuda.pinned_array(a.shape, dtype=a.dtype) for a in host]
    for dst, src in zip(pinned, host, strict=True):
        dst[...] = src
    e2e = []
    for _ in range(max(1, repeat // 2)):
        t0 = time.perf_counter()
        dev = [cuda.to_device(a) for a in pinned]
        res = fcuda.lm_batch_device(value, gradient, jac_method, *dev, free_d, est, 1e-4, 20)
        params = res[0].copy_to_host()
        status = res[3].copy_to_host()
        n_iter = res[2].copy_to_host()
        res[4].copy_to_host()
        e2e.append(time.perf_counter() - t0)
    return summarise(params, status, n_iter, true, n_fits, on_device, float(np.median(e2e)),
                     first)


def jax_backend(x, y, p0, true, dtype, estimator, repeat):
    import jax

    from autofit.jax import batch as jbatch
    from autofit.jax import models as jmodels

    n_fits, n_params = p0.shape
    est = _codes.ESTIMATOR_MLE if estimator == "mle" else _codes.ESTIMATOR_LSE
    with jax.enable_x64(dtype == np.float64):
        args = [jax.device_put(np.ascontiguousarray(a, dtype=dtype)) for a in
                (x[None], y, np.ones((1, y.shape[1])), p0, np.full((1, n_params), -np.inf),
                 np.full((1, n_params), np.inf))]
        free = np.ones(n_params, dtype=bool)

        def call(arrays):
            out = jbatch.lm_batch(jmodels.model_gaussian_2d, jmodels.jacobian_gaussian_2d,
                                  _codes.JAC_ANALYTIC, *arrays, free, est, 1e-4, 20)
            return [np.asarray(o) if not hasattr(o, "block_until_ready") else
                    o.block_until_ready() for o in out]

        t0 = time.perf_counter()
        call(args)
        first = time.perf_counter() - t0
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = call(args)
            times.append(time.perf_counter() - t0)
        host = [np.ascontiguousarray(a, dtype=dtype) for a in
                (x[None], y, np.ones((1, y.shape[1])), p0, np.full((1, n_params), -np.inf),
                 np.full((1, n_params), np.inf))]
        t0 = time.perf_counter()
        out = [np.asarray(o) for o in call(host)]
        e2e = time.perf_counter() - t0
    return summarise(np.asarray(out[0]), np.asarray(out[3]), np.asarray(out[2]), true,
                     n_fits, float(np.median(times)), e2e, first)


def summarise(params, status, n_iter, true, n_fits, on_device, e2e, first):
    converged = np.isin(status, _codes.CONVERGED_CODES)
    error = params[converged, 1] - true[converged, 1]
    return {"fits_per_s_on_device": n_fits / on_device, "fits_per_s_end_to_end": n_fits / e2e,
            "seconds_on_device": on_device, "seconds_end_to_end": e2e,
            "first_call_s": first, "converged_fraction": float(converged.mean()),
            "mean_iterations": float(n_iter.mean()),
            "x0_rms_error": float(np.sqrt(np.mean(error ** 2)))}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fits", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default="batch_gpu.json")
    parser.add_argument("--only", default="numba,user,jax")
    args = parser.parse_args()
    x, y, p0, true = spots(args.fits)
    rows = []
    only = args.only.split(",")
    engines = {"numba": "numba cuda, built-in", "user": "numba cuda, user function",
               "jax": "jax, built-in"}
    for engine in (e for e in ("numba", "user", "jax") if e in only):
        for dtype in (np.float32, np.float64):
            for estimator in ("lse", "mle"):
                name = engines[engine]
                if engine == "jax":
                    def run(dtype=dtype, estimator=estimator):
                        return jax_backend(x, y, p0, true, dtype, estimator, args.repeat)
                else:
                    def run(dtype=dtype, estimator=estimator, user=engine == "user"):
                        return numba_cuda(x, y, p0, true, dtype, estimator, user,
                                          args.repeat)
                try:
                    row = run()
                except Exception as exc:  # report and go on: one failure must not hide the rest
                    import traceback

                    traceback.print_exc(limit=-12)
                    row = {"error": f"{type(exc).__name__}: {exc}"[:400]}
                row.update(engine=name, dtype=np.dtype(dtype).name, estimator=estimator,
                           n_fits=args.fits)
                rows.append(row)
                print(json.dumps(row), flush=True)
                with open(args.out, "w") as fh:  # after every row: a timeout loses nothing
                    json.dump({"autofit": autofit.__version__, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
