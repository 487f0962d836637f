"""Large single fits: autofit.curve_fit's fused path against scipy.optimize.curve_fit.

Exponential decay ``a exp(-b x) + c`` (a, b, c = 2.5, 1.3, 0.5, x in [0, 5], gaussian noise
of 0.01) at 1e6 and 1e7 points. Warm timings (compilation excluded, reported apart), the
minimum of repeats; ratios are scipy's time over autofit's in the same run. Also: passes
over the data, time per pass and point, and the peak resident memory a warm call adds.

    python experiments/large_fit/run.py            # 1e6 and 1e7 points
    python experiments/large_fit/run.py 1e6        # one size
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy
import scipy.optimize

import autofit
from autofit import models

HERE = Path(__file__).resolve().parent
TRUTH = (2.5, 1.3, 0.5)
FIXED_P0 = (1.0, 1.0, 0.0)  # scipy's usual start for this model (its default is all ones)


def decay(x, a, b, c):
    return a * np.exp(-b * x) + c


def data(n_points):
    x = np.linspace(0.0, 5.0, n_points)
    noise = np.random.default_rng(0).normal(scale=0.01, size=n_points)
    return x, decay(x, *TRUTH) + noise


def _status_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def peak_extra_mb(call):
    """Peak resident memory added by ``call()`` (Linux: VmHWM reset through clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return float("nan")
    before = _status_kb("VmRSS")
    call()
    return (_status_kb("VmHWM") - before) / 1024.0


def measure(call, repeats):
    """(first call s, min warm s, last result)."""
    start = time.perf_counter()
    result = call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return first, min(times), result


def variants(x, y):
    def scipy_fit():
        popt, _ = scipy.optimize.curve_fit(decay, x, y, p0=FIXED_P0)
        return popt, None

    def autofit_fit(model, backend, p0):
        def run():
            # full_output=False: the timed call returns no fvec (a model evaluation on all
            # points); the iteration counts come from one more call (info below).
            popt, _ = autofit.curve_fit(model, x, y, p0=p0, backend=backend)
            return popt, (model, backend, p0)
        return run

    return {
        "scipy (user f, 2-point jac)": scipy_fit,
        "numba builtin, guessed p0": autofit_fit(models.exponential_decay, "numba", None),
        "numba builtin, fixed p0": autofit_fit(models.exponential_decay, "numba", FIXED_P0),
        "numba user f, fixed p0": autofit_fit(decay, "numba", FIXED_P0),
        "jax builtin, guessed p0": autofit_fit(models.exponential_decay, "jax", None),
        "jax builtin, fixed p0": autofit_fit(models.exponential_decay, "jax", FIXED_P0),
    }


def run(n_points):
    x, y = data(n_points)
    rows = []
    scipy_time = None
    for name, call in variants(x, y).items():
        repeats = 3 if (n_points <= 1_000_000 or name.startswith("numba b")
                        or name.startswith("jax")) else 1
        first, best, (popt, how) = measure(call, repeats)
        info = None
        if how is not None:
            model, backend, p0 = how
            info = autofit.curve_fit(model, x, y, p0=p0, backend=backend,
                                     full_output=True)[2]
        memory = peak_extra_mb(call)
        if scipy_time is None:
            scipy_time, reference = best, popt
        passes = None if info is None else info["nit"] + 1
        row = {"variant": name, "n_points": n_points, "seconds": best, "first_call": first,
               "speedup_vs_scipy": scipy_time / best, "peak_extra_mb": memory,
               "params": popt.tolist(),
               "max_rel_diff_vs_scipy": float(np.max(np.abs(popt - reference)
                                                     / np.abs(reference)))}
        if info is not None:
            row.update(nfev=info["nfev"], passes=passes, backend=info["backend"],
                       ns_per_point_per_pass=best / passes / n_points * 1e9
                       if info["nfev"] == passes else None)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows):
    lines = ["| points | variant | time | vs scipy | passes | ns/point/pass | peak extra MB | "
             "first call |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_pass = r.get("ns_per_point_per_pass")
        lines.append(
            f"| {r['n_points']:,} | {r['variant']} | {r['seconds'] * 1e3:.1f} ms | "
            f"{r['speedup_vs_scipy']:.1f}x | {r.get('passes', '-')} | "
            f"{'-' if per_pass is None else f'{per_pass:.2f}'} | {r['peak_extra_mb']:.0f} | "
            f"{r['first_call']:.2f} s |")
    return "\n".join(lines)


def main(argv):
    sizes = [int(float(a)) for a in argv] or [1_000_000, 10_000_000]
    warnings.simplefilter("ignore")
    rows = [row for n in sizes for row in run(n)]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE).stdout.strip()
    import jax
    import numba

    result = {"machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))}"
                         " cores", "commit": commit,
              "versions": {"numpy": np.__version__, "scipy": scipy.__version__,
                           "numba": numba.__version__, "jax": jax.__version__},
              "rows": rows}
    (HERE / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
