"""Measure curve_fit on each backend against scipy.optimize.curve_fit.

Exponential decay a*exp(-b*x)+c, 1e3..1e6 points, 1% noise, p0=(1, 1, 0). Each timing is
the median of several warm calls (compilation excluded and reported separately). Run:

    python experiments/curve_fit_speed/run.py [default|scipy]
"""

import platform
import subprocess
import sys
import time
import warnings

import numpy as np
from scipy import optimize

import autofit

SIZES = (1_000, 10_000, 100_000, 1_000_000)
P0 = (1.0, 1.0, 0.0)
# "default": autofit's defaults (iterate to float64 precision); "scipy": scipy's tolerances
# (ftol = xtol = 1.49e-8), so both stop at the same accuracy.
MODE = sys.argv[1] if len(sys.argv) > 1 else "default"
TOLERANCES = {} if MODE == "default" else {"ftol": 1.49012e-8, "xtol": 1.49012e-8,
                                            "gtol": 0.0}


def decay(x, a, b, c):
    return a * np.exp(-b * x) + c


def jax_decay(x, a, b, c):
    import jax.numpy as jnp

    return a * jnp.exp(-b * x) + c


def median_seconds(call, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"tolerances: {MODE} {TOLERANCES}")
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} cores; python {platform.python_version()}; "
          f"commit {commit}\n")
    variants = [("numpy", "user"), ("numba", "user"), ("numba", "builtin"),
                ("jax", "user"), ("jax", "builtin")]
    header = "| points | scipy | " + " | ".join(f"{b} {m}" for b, m in variants) + " |"
    print(header)
    print("|" + "---|" * (2 + len(variants)))
    compile_times = {}
    for n_points in SIZES:
        x = np.linspace(0, 5, n_points)
        y = decay(x, 2.5, 1.3, 0.5) + 0.01 * np.random.default_rng(n_points).normal(
            size=n_points)
        repeats = 7 if n_points <= 100_000 else 3
        reference = median_seconds(lambda: optimize.curve_fit(decay, x, y, p0=P0), repeats)
        cells = [f"{reference * 1e3:.2f} ms"]
        for backend, model in variants:
            if model == "builtin":
                f = autofit.models.exponential_decay
            else:
                f = jax_decay if backend == "jax" else decay
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("error", autofit.BackendFallbackWarning)
                autofit.curve_fit(f, x, y, p0=P0, backend=backend)
            compile_times.setdefault((backend, model), time.perf_counter() - start)
            seconds = median_seconds(
                lambda: autofit.curve_fit(f, x, y, p0=P0, backend=backend, **TOLERANCES),
                repeats)
            cells.append(f"{seconds * 1e3:.2f} ms ({reference / seconds:.1f}x)")
        print(f"| {n_points:,} | " + " | ".join(cells) + " |", flush=True)
    print("\nfirst call (compilation included) at 1,000 points: " + ", ".join(
        f"{b} {m} {t:.2f} s" for (b, m), t in compile_times.items()))


if __name__ == "__main__":
    sys.exit(main())
