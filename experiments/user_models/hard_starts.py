"""Hard data, poor starts: three overlapping gaussians written as a user's NumPy model.

Six starts 30% off in height and width and 0.4 off in centre (two of them lead two peaks
to merge: a curved valley), the same data, autofit's default rule against scipy's
``curve_fit`` (maxfev 20000) in the same process; the first call of the model is excluded
(``autofit.wait_for_compilation()`` after it).

    python experiments/user_models/hard_starts.py

Then the same starts with ``backend=`` each installed backend (warm): every backend takes
one road for a user's model below the huge sizes (the fused pass within its budget, then
lm_solve from p0), so from each start they reach the same minimum.
"""

import importlib.util
import time
import warnings

import numpy as np
import scipy.optimize as so

import autofit


def peaks(x, *p):
    out = np.full_like(x, p[-1])
    for k in range(len(p) // 3):
        a, c, w = p[3 * k:3 * k + 3]
        out = out + a * np.exp(-0.5 * ((x - c) / w) ** 2)
    return out


def main() -> None:
    rng = np.random.default_rng(7)
    x = np.linspace(0, 10, 2000)
    truth = np.array([1.0, 3.0, 0.5, 0.8, 4.0, 0.7, 0.6, 6.5, 0.4, 0.1])
    y = peaks(x, *truth) + 0.05 * rng.normal(size=x.size)
    starts = []
    for _ in range(6):
        p0 = truth * (1 + 0.3 * rng.normal(size=truth.size))
        p0[-1] = 0.0
        p0[[1, 4, 7]] = truth[[1, 4, 7]] + 0.4 * rng.normal(size=3)
        starts.append(p0)
    warnings.simplefilter("ignore")
    autofit.curve_fit(peaks, x, y, p0=truth)  # the first call: compiles in the background
    autofit.wait_for_compilation()
    print("| start | autofit (ran on) | autofit χ² | scipy | scipy χ² | reason |")
    print("|---|---|---|---|---|---|")
    for k, p0 in enumerate(starts):
        t = time.perf_counter()
        _, _, info, _, _ = autofit.curve_fit(peaks, x, y, p0=p0, full_output=True)
        t_autofit = time.perf_counter() - t
        t = time.perf_counter()
        popt, _ = so.curve_fit(peaks, x, y, p0=p0, maxfev=20000)
        t_scipy = time.perf_counter() - t
        chi2_scipy = float(np.sum((peaks(x, *popt) - y) ** 2))
        reason = info["backend_reason"].split("; ")[-1][:70]
        print(f"| {k} | {t_autofit * 1e3:.1f} ms ({info['backend']}) | {info['chi2']:.6f} "
              f"| {t_scipy * 1e3:.1f} ms | {chi2_scipy:.6f} | {reason} |")
    backends = [name for name in ("numpy", "numba", "jax")
                if importlib.util.find_spec(name) is not None]
    print()
    print("| start | " + " | ".join(f"{name} χ² (nfev, ms)" for name in backends) + " |")
    print("|---|" + "---|" * len(backends))
    rows = {k: [] for k in range(len(starts))}
    for name in backends:
        autofit.curve_fit(peaks, x, y, p0=truth, backend=name)  # compiles
        for k, p0 in enumerate(starts):
            t = time.perf_counter()
            _, _, info, _, _ = autofit.curve_fit(peaks, x, y, p0=p0, backend=name,
                                                 full_output=True)
            rows[k].append(f"{info['chi2']:.6f} ({info['nfev']}, "
                           f"{(time.perf_counter() - t) * 1e3:.0f})")
    for k, cells in rows.items():
        print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
