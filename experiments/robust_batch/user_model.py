"""A robust batch of a user's own NumPy model on numba, in a fresh process.

First call (compilation included) and warm, against the same batch with loss='linear' and
against a loop of scipy's ``least_squares`` with the same loss (200 fits):

    python experiments/robust_batch/user_model.py
"""

import time

import numpy as np
from scipy.optimize import least_squares

import autofit


def peak(x, a, mu, s, c):  # the user's own model, plain NumPy
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + c


def data(n_fits=2000, n_points=64, seed=1):
    """Gaussian curves with 5 spikes each (hot pixels), starts within 10% of the truth."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-3, 3, n_points)
    truth = np.column_stack([rng.uniform(1, 3, n_fits), rng.uniform(-1, 1, n_fits),
                             rng.uniform(0.5, 1, n_fits), rng.uniform(0.1, 0.5, n_fits)])
    y = peak(x, *[truth[:, j:j + 1] for j in range(4)])
    y += 0.05 * rng.normal(size=y.shape)
    for row in y:
        row[rng.choice(n_points, 5, replace=False)] += rng.uniform(1, 4, 5)
    return x, y, truth * (1 + 0.1 * rng.normal(size=truth.shape))


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def main(n_scipy=200):
    x, y, p0 = data()
    n_fits = y.shape[0]
    linear_s = None
    for loss in ("linear", "soft_l1", "huber", "cauchy", "arctan"):
        options = {} if loss == "linear" else {"loss": loss, "f_scale": 0.05}

        def batch(options=options):
            return autofit.fit_batch(peak, x, y, p0=p0, backend="numba", progress=False,
                                     **options)

        _, first = timed(batch)
        result, warm = timed(batch)
        linear_s = linear_s or warm
        _, scipy_s = timed(lambda loss=loss: [
            least_squares(lambda p, k=k: peak(x, *p) - y[k], p0[k], loss=loss, f_scale=0.05,
                          xtol=1e-10, ftol=1e-10, gtol=1e-10) for k in range(n_scipy)])
        scipy_rate = n_scipy / scipy_s
        print(f"{loss:8} first call {first:5.1f} s, warm {n_fits / warm:8.0f} fits/s = "
              f"{n_fits / warm / scipy_rate:4.0f}x scipy least_squares ({scipy_rate:.0f} "
              f"fits/s); time vs linear {warm / linear_s:.2f}; converged "
              f"{result.converged.mean():.3f}", flush=True)


if __name__ == "__main__":
    main()
