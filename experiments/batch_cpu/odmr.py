"""The ODMR workload of run.py alone: 8 Lorentzians and a background (25 parameters, 200
points), scipy's curve_fit loop against autofit numba with the built-in model and with the
same model as a plain NumPy user function, in one run.

Prints fits/s (the minimum time of ``--repeat`` warm calls), the ratio to scipy, the mean
number of iterations, microseconds per fit (wall) and CPU microseconds per fit (all threads,
minimum over the calls: less sensitive to other jobs on a shared machine), and the load
average. Run from the repository
root (``NUMBA_NUM_THREADS=1`` gives the single-thread cost per fit):

    python experiments/batch_cpu/odmr.py [--fits 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import time

from run import odmr_problem, scipy_rate, user_odmr

import autofit
from autofit import models


def best_time(model, x, y, p0, repeat):
    t0 = time.perf_counter()
    autofit.fit_batch(model, x, y, p0=p0, backend="numba", progress=False)
    first = time.perf_counter() - t0
    times, cpu_times = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = autofit.fit_batch(model, x, y, p0=p0, backend="numba", progress=False)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    return min(times), min(cpu_times), first, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=10_000)
    parser.add_argument("--scipy-fits", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    x, y, p0 = odmr_problem(args.fits)
    scipy_fits_per_s, _ = scipy_rate(user_odmr, x, y, p0, args.scipy_fits)
    print(f"load average {os.getloadavg()[0]:.2f}; scipy {scipy_fits_per_s:.0f} fits/s")
    for name, model in (("built-in", models.multi_lorentzian(8)), ("user function", user_odmr)):
        seconds, cpu_seconds, first, result = best_time(model, x, y, p0, args.repeat)
        rate = args.fits / seconds
        print(f"numba {name:14s} {rate:8.0f} fits/s {rate / scipy_fits_per_s:6.1f}x scipy "
              f"{1e6 * seconds / args.fits:7.1f} us/fit "
              f"{1e6 * cpu_seconds / args.fits:7.1f} CPU us/fit  mean iterations "
              f"{result.n_iter.mean():.2f}  converged {result.converged.mean():.3f}  "
              f"first call {first:.1f} s")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
