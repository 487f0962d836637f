"""Per-pixel fits with outliers: fit_batch(loss=...) against scipy's least_squares(loss=...)
fit for fit, and its speed against the same batch with loss='linear'.

Two families, each ``N_FITS`` curves with hot pixels / cosmic rays (a few points of every
curve far off, the use robust losses are for):

- ``gaussian``: the built-in ``gaussian`` (4 parameters, 64 points), 5 spikes per curve;
- ``odmr``: the built-in ``multi_lorentzian(2)`` (7 parameters, 100 points), 6 spikes.

Per engine (numpy reference, numba CPU, jax CPU) and loss: the share of fits converged, the
share whose robust cost ends above (and below) scipy's by more than WORSE (scipy's
``least_squares`` with the same loss and f_scale, from the same start, tolerances 1e-10, on
the first ``N_SCIPY`` fits), the median error of the peak position against the truth, and
fits per second (warm: the batch runs once to compile, then the best of 5 calls; the NumPy
engine once) as a ratio to the same engine's ``loss='linear'`` run of the same batch.

Of the fits that end above scipy's cost (numba, the engines agree fit for fit): how many
scipy lowers when started from autofit's end (``worse_improved_by_scipy``: 0 means each is
a minimum of its own, another basin than scipy's, not a fit stopped early), and in how many
autofit's curve is the closer to the clean curve (``worse_closer_to_truth``, the RMS of
model minus truth over x).

    python experiments/robust_batch/run.py            # ~12 min on 2 cores
    python experiments/robust_batch/run.py --quick

Writes ``results.json`` beside this file (``results_quick.json`` with --quick).
"""

from __future__ import annotations

import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.optimize as so

import autofit
from autofit import models

QUICK = "--quick" in sys.argv
N_FITS = 300 if QUICK else 2000
N_SCIPY = 100 if QUICK else 300
ENGINES = ("numpy", "numba", "jax")
LOSSES = ("linear", "soft_l1", "huber", "cauchy", "arctan")
F_SCALE = 0.05  # the noise level: residuals beyond it are doubted
# A robust cost above scipy's by more than this (relative) counts as worse: both solvers stop
# when the cost falls by less than ~1e-10 of itself, so ends at one minimum agree far closer.
WORSE = 1e-6


def _spiked(rng, clean, n_spikes):
    y = clean + F_SCALE * rng.standard_normal(clean.shape)
    for fit in range(y.shape[0]):
        where = rng.choice(y.shape[1], n_spikes, replace=False)
        y[fit, where] += rng.uniform(1.0, 4.0, n_spikes) * np.sign(
            rng.uniform(-0.3, 1.0, n_spikes))
    return y


def gaussian_family(rng, n):
    model = models.gaussian
    x = np.linspace(-3.0, 3.0, 64)
    truth = np.array([2.0, 0.0, 0.7, 0.1]) * (1.0 + 0.1 * rng.standard_normal((n, 4)))
    truth[:, 1] = 0.3 * rng.standard_normal(n)
    clean = np.stack([model(x, *t) for t in truth])
    start = truth * (1.0 + 0.1 * rng.standard_normal(truth.shape))
    start[:, 1] = truth[:, 1] + 0.1 * rng.standard_normal(n)
    return model, x, _spiked(rng, clean, 5), start, truth, 1


def odmr_family(rng, n):
    model = models.multi_lorentzian(2)
    x = np.linspace(2.80, 2.95, 100)
    base = np.array([-0.3, 2.85, 0.004, -0.3, 2.89, 0.004, 1.0])
    truth = base * (1.0 + 0.05 * rng.standard_normal((n, 7)))
    truth[:, [1, 4]] = base[[1, 4]] + 0.002 * rng.standard_normal((n, 2))
    clean = np.stack([model(x, *t) for t in truth])
    start = np.broadcast_to(base, truth.shape).copy()
    return model, x, _spiked(rng, clean, 6), start, truth, 1


FAMILIES = {"gaussian": gaussian_family, "odmr": odmr_family}


def _least_squares(model, x, y_i, start_i, loss):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return so.least_squares(lambda p: model(x, *p) - y_i, start_i, loss=loss,
                                f_scale=F_SCALE, method="trf", ftol=1e-10, xtol=1e-10,
                                gtol=1e-10)


def scipy_costs(model, x, y, start, loss):
    costs = np.empty(min(N_SCIPY, y.shape[0]))
    t0 = time.perf_counter()
    for i in range(costs.size):
        costs[i] = 2.0 * _least_squares(model, x, y[i], start[i], loss).cost  # autofit's chi2
    return costs, costs.size / (time.perf_counter() - t0)


def worse_fits(model, x, y, start, truth, loss, result, worse):
    """``(improved by scipy from our end, ours closer to the truth)`` over the fits in
    ``worse`` (indices into the first fits)."""
    improved = closer = 0
    for i in np.flatnonzero(worse):
        again = _least_squares(model, x, y[i], result.params[i], loss)
        improved += bool(2.0 * again.cost < result.chi2[i] * (1.0 - WORSE))
        theirs = _least_squares(model, x, y[i], start[i], loss).x
        clean = model(x, *truth[i])
        closer += bool(np.sqrt(np.mean((model(x, *result.params[i]) - clean) ** 2))
                       < np.sqrt(np.mean((model(x, *theirs) - clean) ** 2)))
    return improved, closer


def run_engine(engine, model, x, y, start, loss):
    def call():
        return autofit.fit_batch(model, x, y, start, loss=loss, f_scale=F_SCALE,
                                 backend=engine, strict=True, progress=False)

    repeats = 1
    if engine != "numpy":
        call()  # compile (the NumPy engine compiles nothing)
        repeats = 5  # a numba batch takes a few ms here: the best of 5 calls
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - t0)
    return result, y.shape[0] / best


def main():
    rng = np.random.default_rng(20261204)
    rows = []
    for family, build in FAMILIES.items():
        model, x, y, start, truth, centre = build(rng, N_FITS)
        for loss in LOSSES:
            costs, scipy_rate = scipy_costs(model, x, y, start, loss)
            for engine in ENGINES:
                result, rate = run_engine(engine, model, x, y, start, loss)
                chi2 = result.chi2[:costs.size]
                worse = ~(chi2 <= costs * (1.0 + WORSE))
                improved = closer = None
                if engine == "numba" and loss != "linear":
                    improved, closer = worse_fits(model, x, y, start, truth, loss, result,
                                                  worse)
                rows.append({
                    "family": family, "loss": loss, "engine": engine,
                    "converged": float(np.mean(result.converged)),
                    "worse_than_scipy": float(np.mean(worse)),
                    "better_than_scipy": float(np.mean(chi2 < costs * (1.0 - WORSE))),
                    "n_worse": int(np.sum(worse)),
                    "worse_improved_by_scipy": improved,
                    "worse_closer_to_truth": closer,
                    "median_centre_error": float(np.median(np.abs(
                        result.params[:, centre] - truth[:, centre]))),
                    "median_iterations": float(np.median(result.n_iter)),
                    "fits_per_s": rate, "scipy_fits_per_s": scipy_rate,
                })
                print(json.dumps(rows[-1]))
    for row in rows:
        linear = next(r for r in rows if r["family"] == row["family"]
                      and r["engine"] == row["engine"] and r["loss"] == "linear")
        row["time_vs_linear"] = linear["fits_per_s"] / row["fits_per_s"]
    out = Path(__file__).with_name("results_quick.json" if QUICK else "results.json")
    out.write_text(json.dumps({"machine": f"{platform.machine()}, {platform.processor()}",
                               "n_fits": N_FITS, "n_scipy": N_SCIPY, "f_scale": F_SCALE,
                               "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
