"""One fit of a user's NumPy model on the jax and NumPy engines, warm, against scipy.

``backend=`` each engine, the default road (below the huge sizes: the fused pass, then
lm_solve if it stalls) and ``fused=False`` (lm_solve alone), the minimum of 7 warm calls,
and ``scipy.optimize.curve_fit`` in the same process.

    python experiments/user_models/single_engines.py
"""

import time
import warnings

import numpy as np
import scipy.optimize as so

import autofit


def decay(x, a, b, c):
    return a * np.exp(-b * x) + c


def gaussian(x, a, mu, sigma, c):
    return a * np.exp(-0.5 * ((x - mu) / sigma) ** 2) + c


CASES = {"decay": (decay, (2.5, 1.3, 0.5), (1.0, 1.0, 0.0), (0, 4)),
         "gaussian": (gaussian, (3.0, 0.2, 0.8, 0.5), (2.5, 0.0, 1.0, 0.3), (-4, 4))}


def best(call, repeats=7):
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    return min(times)


def main() -> None:
    warnings.simplefilter("ignore")
    print("| engine | model | points | default road | fused=False | scipy |")
    print("|---|---|---|---|---|---|")
    for backend in ("jax", "numpy"):
        for name, (f, truth, p0, span) in CASES.items():
            for n in (100, 1000, 10000):
                x = np.linspace(*span, n)
                y = f(x, *truth) + 0.05 * np.random.default_rng(0).normal(size=n)
                row = []
                for fused in (None, False):
                    def fit(fused=fused):
                        autofit.curve_fit(f, x, y, p0=p0, backend=backend, fused=fused)

                    fit()  # compiles
                    row.append(best(fit))
                scipy_s = best(lambda: so.curve_fit(f, x, y, p0=p0))
                print(f"| {backend} | {name} | {n} | {row[0] * 1e3:.2f} ms | "
                      f"{row[1] * 1e3:.2f} ms | {scipy_s * 1e3:.2f} ms |", flush=True)


if __name__ == "__main__":
    main()
