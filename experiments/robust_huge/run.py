"""A huge robust fit of a user's NumPy model: autofit's curve_fit against scipy's.

    python experiments/robust_huge/run.py [n_points ...]     # default 1,000,000

The user's own decay model, one point in 97 off by 3 (far beyond the noise 0.01), p0
(1, 1, 0), ``loss=`` soft_l1 and cauchy with ``f_scale=0.05`` and ``method='trf'`` (scipy
refuses a loss with its default 'lm'): scipy's ``curve_fit`` and autofit's (default
backend) in the same process; autofit's first call (compilation included) and then the
minimum over 3 interleaved rounds of warm calls (4 of autofit's and 1 of scipy's per
round). Prints one line per (size, loss).
"""

import sys
import time

import numpy as np
import scipy.optimize

import autofit


def decay(x, a, b, c):
    return a * np.exp(-b * x) + c


def timed(call):
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def main(sizes):
    for n_points in sizes:
        rng = np.random.default_rng(0)
        x = np.linspace(0.0, 5.0, n_points)
        y = decay(x, 2.5, 1.3, 0.5) + 0.01 * rng.normal(size=n_points)
        y[::97] += 3.0
        for loss in ("soft_l1", "cauchy"):
            options = {"p0": (1.0, 1.0, 0.0), "loss": loss, "f_scale": 0.05,
                       "method": "trf"}
            first, (popt, _, info, _, _) = timed(lambda: autofit.curve_fit(
                decay, x, y, full_output=True, **options))
            ours, theirs = [], []
            for _ in range(3):
                # Four calls of autofit's per round (~10 ms each: one call's minimum varied
                # by 1.5x between runs), one of scipy's (~1 s).
                ours += [timed(lambda: autofit.curve_fit(decay, x, y, **options))[0]
                         for _ in range(4)]
                seconds, (expected, _) = timed(lambda: scipy.optimize.curve_fit(
                    decay, x, y, **options))
                theirs.append(seconds)
            cost = np.sum(np.log1p(((decay(x, *popt) - y) / 0.05) ** 2) if loss == "cauchy"
                          else 2 * (np.sqrt(1 + ((decay(x, *popt) - y) / 0.05) ** 2) - 1))
            cost_scipy = np.sum(np.log1p(((decay(x, *expected) - y) / 0.05) ** 2)
                                if loss == "cauchy" else
                                2 * (np.sqrt(1 + ((decay(x, *expected) - y) / 0.05) ** 2) - 1))
            print(f"{n_points:>10,} {loss:8s} autofit {info['backend']}: first call "
                  f"{first:.2f} s, warm {min(ours) * 1e3:.1f} ms; scipy {min(theirs):.2f} s; "
                  f"x scipy {min(theirs) / min(ours):.1f}; robust cost autofit {cost:.6f} "
                  f"scipy {cost_scipy:.6f}", flush=True)


if __name__ == "__main__":
    main([int(n) for n in sys.argv[1:]] or [1_000_000])
