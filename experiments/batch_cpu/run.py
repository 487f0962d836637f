"""Batched fits on the CPU against a loop of scipy.optimize.curve_fit (what users run today).

Workloads (the issue's):

- gaussian, 32 points, 1e5 fits (5% noise, starts 5-10% off);
- multi_lorentzian with 8 dips and a background (25 parameters), 200 points, 1e4 fits
  (ODMR-like spectra), as the built-in model and as a plain NumPy user function;
- the slow-fit experiment: the gaussian batch with 1% of the fits started far away (about
  10x more iterations), against the same batch without them.

scipy runs without a Jacobian (``curve_fit(f, x, y_i, p0_i)``) on a subset and is reported
as fits/s; autofit's times are the median of ``--repeat`` warm calls (compilation excluded
and reported). Ratios are taken within one run. Run from the repository root:

    python experiments/batch_cpu/run.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import numpy as np
from scipy import optimize

import autofit
from autofit import models

HERE = os.path.dirname(os.path.abspath(__file__))


def gaussian_problem(n_fits, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(-5.0, 5.0, 32)
    truth = np.array([3.0, 0.4, 1.1, 0.2]) * (1.0 + 0.1 * rng.normal(size=(n_fits, 4)))
    u = (x - truth[:, 1:2]) / truth[:, 2:3]
    y = truth[:, 0:1] * np.exp(-0.5 * u * u) + truth[:, 3:4]
    y += 0.05 * rng.normal(size=y.shape)
    p0 = truth * (1.0 + 0.05 * rng.normal(size=truth.shape))
    return x, y, p0


def odmr_problem(n_fits, seed=0, n_peaks=8):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, 200)
    centers = np.linspace(0.1, 0.9, n_peaks)
    truth = np.empty((n_fits, 3 * n_peaks + 1))
    truth[:, 0:-1:3] = -0.02 * (1.0 + 0.1 * rng.normal(size=(n_fits, n_peaks)))
    truth[:, 1:-1:3] = centers + 0.005 * rng.normal(size=(n_fits, n_peaks))
    truth[:, 2:-1:3] = 0.012 * (1.0 + 0.1 * rng.normal(size=(n_fits, n_peaks)))
    truth[:, -1] = 1.0
    y = np.full((n_fits, x.size), 1.0)
    for k in range(n_peaks):
        a, c, g = (truth[:, 3 * k + j, None] for j in range(3))
        y += a * g * g / ((x - c) ** 2 + g * g)
    y += 0.002 * rng.normal(size=y.shape)
    p0 = truth.copy()
    p0[:, 0:-1:3] *= 1.0 + 0.1 * rng.normal(size=(n_fits, n_peaks))
    p0[:, 1:-1:3] += 0.002 * rng.normal(size=(n_fits, n_peaks))
    p0[:, 2:-1:3] *= 1.0 + 0.1 * rng.normal(size=(n_fits, n_peaks))
    return x, y, p0


def user_gaussian(x, a, c, w, o):
    return a * np.exp(-0.5 * ((x - c) / w) ** 2) + o


def user_odmr(x, a1, c1, g1, a2, c2, g2, a3, c3, g3, a4, c4, g4, a5, c5, g5, a6, c6, g6,
              a7, c7, g7, a8, c8, g8, offset):
    y = offset
    y = y + a1 * g1 * g1 / ((x - c1) ** 2 + g1 * g1)
    y = y + a2 * g2 * g2 / ((x - c2) ** 2 + g2 * g2)
    y = y + a3 * g3 * g3 / ((x - c3) ** 2 + g3 * g3)
    y = y + a4 * g4 * g4 / ((x - c4) ** 2 + g4 * g4)
    y = y + a5 * g5 * g5 / ((x - c5) ** 2 + g5 * g5)
    y = y + a6 * g6 * g6 / ((x - c6) ** 2 + g6 * g6)
    y = y + a7 * g7 * g7 / ((x - c7) ** 2 + g7 * g7)
    y = y + a8 * g8 * g8 / ((x - c8) ** 2 + g8 * g8)
    return y


def scipy_rate(f, x, y, p0, n):
    n = min(n, y.shape[0])
    failures = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        for i in range(n):
            try:
                optimize.curve_fit(f, x, y[i], p0=p0[i])
            except RuntimeError:
                failures += 1
        elapsed = time.perf_counter() - t0
    return n / elapsed, failures / n


def autofit_rate(model, x, y, p0, backend, repeat, **kwargs):
    t0 = time.perf_counter()
    res = autofit.fit_batch(model, x, y, p0=p0, backend=backend, **kwargs)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = autofit.fit_batch(model, x, y, p0=p0, backend=backend, **kwargs)
        times.append(time.perf_counter() - t0)
    elapsed = float(np.median(times))
    return {"fits_per_s": y.shape[0] / elapsed, "seconds": elapsed, "first_call_s": first,
            "converged": float(res.converged.mean()), "mean_iter": float(res.n_iter.mean()),
            "backend": res.backend}


def slow_fit_experiment(backend, n_fits, repeat):
    x, y, p0 = gaussian_problem(n_fits, seed=3)
    base = autofit_rate(models.gaussian, x, y, p0, backend, repeat)
    slow = p0.copy()
    pick = np.arange(0, n_fits, 100)  # 1% of the fits
    # Centre 5.5 off and width 2.5x: about 11x the typical iterations (measured: 44 vs 3.9).
    slow[pick, 1] += 5.5
    slow[pick, 2] *= 2.5
    mixed = autofit_rate(models.gaussian, x, y, slow, backend, repeat)
    res = autofit.fit_batch(models.gaussian, x, y, p0=slow, backend=backend)
    others = np.setdiff1d(np.arange(n_fits), pick)
    return {"backend": backend, "n_fits": n_fits,
            "time_ratio": base["fits_per_s"] / mixed["fits_per_s"],
            "iterations_slow": float(res.n_iter[pick].mean()),
            "iterations_typical": float(res.n_iter[others].mean()),
            "converged_slow": float(res.converged[pick].mean())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="10x fewer fits")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    rows = []

    x, y, p0 = gaussian_problem(100_000 // scale)
    scipy_g, scipy_fail = scipy_rate(user_gaussian, x, y, p0, 2000 // scale)
    rows.append({"workload": "gaussian, 32 points", "engine": "scipy curve_fit loop",
                 "fits_per_s": scipy_g, "failed": scipy_fail})
    for backend in ("numba", "jax"):
        row = autofit_rate(models.gaussian, x, y, p0, backend, args.repeat)
        row.update(workload="gaussian, 32 points", engine=f"autofit {backend}, built-in")
        rows.append(row)
    row = autofit_rate(user_gaussian, x, y, p0, "numba", args.repeat)
    row.update(workload="gaussian, 32 points", engine="autofit numba, NumPy user function")
    rows.append(row)

    x, y, p0 = odmr_problem(10_000 // scale)
    scipy_o, scipy_fail = scipy_rate(user_odmr, x, y, p0, 100 // max(1, scale // 2))
    rows.append({"workload": "8 Lorentzians, 200 points", "engine": "scipy curve_fit loop",
                 "fits_per_s": scipy_o, "failed": scipy_fail})
    odmr = models.multi_lorentzian(8)
    for backend in ("numba", "jax"):
        row = autofit_rate(odmr, x, y, p0, backend, args.repeat)
        row.update(workload="8 Lorentzians, 200 points", engine=f"autofit {backend}, built-in")
        rows.append(row)
    row = autofit_rate(user_odmr, x, y, p0, "numba", args.repeat)
    row.update(workload="8 Lorentzians, 200 points",
               engine="autofit numba, NumPy user function")
    rows.append(row)

    for row in rows:
        reference = scipy_g if row["workload"].startswith("gaussian") else scipy_o
        row["vs_scipy"] = row["fits_per_s"] / reference
    slow = [slow_fit_experiment(b, 100_000 // scale, args.repeat) for b in ("numba", "jax")]
    result = {"machine": f"{platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} cores", "autofit": autofit.__version__,
              "rows": rows, "slow_fits": slow}
    name = "results_quick.json" if args.quick else "results.json"
    with open(os.path.join(HERE, name), "w") as fh:
        json.dump(result, fh, indent=1)
    for row in rows:
        print(f"{row['workload']:28s} {row['engine']:40s} {row['fits_per_s']:12.0f} fits/s "
              f"{row['vs_scipy']:8.1f}x scipy  converged {row.get('converged', float('nan')):.3f}")
    for s in slow:
        print(f"slow fits on {s['backend']}: time ratio {s['time_ratio']:.2f}, iterations "
              f"{s['iterations_slow']:.1f} (slow) vs {s['iterations_typical']:.1f} (typical)")


if __name__ == "__main__":
    main()
