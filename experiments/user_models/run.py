"""Users' own NumPy models, measured as a user meets them (issue 9).

Each single-fit case runs in a fresh process: the first ``popt, pcov =
autofit.curve_fit(f, x, y, p0)`` call on the default rule (import excluded; the engine
that answers is that of the next call, made at once), then, after
``autofit.wait_for_compilation()``, warm calls on the default rule, on
``backend="numpy"`` and against ``scipy.optimize.curve_fit`` in the same process (minimum
of ``--repeats``; the plain ``popt, pcov = curve_fit(f, x, y, p0)`` call, the same with
``sigma=`` (0.05 for every point, as an array) and with ``full_output=True``). Also: a
per-pixel batch of the 8-Lorentzian user model written with a Python loop over the peaks
(each engine's warm call and scipy's loop over its first fits: the fastest of
``--batch-repeats``), and one huge fit of a user model.

    python experiments/user_models/run.py [--sizes 100 1000 10000 100000] [--repeats 5]

Writes ``results.json`` beside this file and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The users' models of the single fits, as each script defines them.
USER_MODELS = '''
def decay(x, a, b, c):
    return a * np.exp(-b * x) + c

def gaussian(x, a, mu, sigma, c):
    return a * np.exp(-0.5 * ((x - mu) / sigma) ** 2) + c

def damped_cosine(x, a, tau, omega, phi, c):
    return a * np.exp(-x / tau) * np.cos(omega * x + phi) + c
'''

SINGLE = r'''
import json, sys, time, warnings
t0 = time.perf_counter()
import numpy as np, scipy.optimize as so
import autofit
t_import = time.perf_counter() - t0
name, n, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
''' + USER_MODELS + r'''
cases = {"decay": (decay, (2.5, 1.3, 0.5), (1.0, 1.0, 0.0), (0, 4)),
         "gaussian": (gaussian, (3.0, 0.2, 0.8, 0.5), (2.5, 0.0, 1.0, 0.3), (-4, 4)),
         "damped_cosine": (damped_cosine, (2.0, 3.0, 5.0, 0.3, 0.1),
                           (1.8, 2.5, 4.9, 0.2, 0.0), (0, 10))}
f, truth, p0, span = cases[name]
x = np.linspace(*span, n)
y = f(x, *truth) + 0.05 * np.random.default_rng(0).normal(size=n)
t0 = time.perf_counter()
autofit.curve_fit(f, x, y, p0=p0)  # the call as users write it, the first of the process
t_first = time.perf_counter() - t0
# Which engine answers while numba compiles (the next call, before waiting).
first = autofit.curve_fit(f, x, y, p0=p0, full_output=True)
t0 = time.perf_counter()
autofit.wait_for_compilation()
t_compile = time.perf_counter() - t0

def best(call):
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); out = call(); times.append(time.perf_counter() - t)
    return min(times), out

# The call as users write it, popt, pcov = curve_fit(f, x, y, p0), against scipy's; then
# the same with full_output=True (infodict: the evaluations, chi2, the backend and why).
warm, plain = best(lambda: autofit.curve_fit(f, x, y, p0=p0))
scipy_time, _ = best(lambda: so.curve_fit(f, x, y, p0=p0))
warm_full, out = best(lambda: autofit.curve_fit(f, x, y, p0=p0, full_output=True))
assert np.array_equal(plain[0], out[0]) and np.array_equal(plain[1], out[1])
# With each point's standard deviation, as scientists usually call it.
sigma = np.full(n, 0.05)
sigma_time, with_sigma = best(lambda: autofit.curve_fit(f, x, y, p0=p0, sigma=sigma))
scipy_sigma, sp_sigma = best(lambda: so.curve_fit(f, x, y, p0=p0, sigma=sigma))
numpy_time, out_np = best(lambda: autofit.curve_fit(f, x, y, p0=p0, backend="numpy"))
out_np = autofit.curve_fit(f, x, y, p0=p0, backend="numpy", full_output=True)
scipy_full, out_sp = best(lambda: so.curve_fit(f, x, y, p0=p0, full_output=True))
print(json.dumps({
    "model": name, "n_points": n, "import_s": t_import, "first_s": t_first,
    "first_backend": first[2]["backend"], "background_compile_wait_s": t_compile,
    "warm_backend": out[2]["backend"], "warm_reason": out[2]["backend_reason"],
    "warm_s": warm, "warm_full_output_s": warm_full, "warm_nfev": out[2]["nfev"],
    "numpy_s": numpy_time, "scipy_s": scipy_time, "scipy_full_output_s": scipy_full,
    "sigma_s": sigma_time, "scipy_sigma_s": scipy_sigma,
    "sigma_popt_vs_scipy": float(np.max(np.abs(with_sigma[0] - sp_sigma[0])
                                        / np.sqrt(np.diag(sp_sigma[1])))),
    "scipy_nfev": int(out_sp[2]["nfev"]),
    "chi2": out[2]["chi2"], "chi2_numpy": out_np[2]["chi2"],
    "chi2_scipy": float(np.sum(out_sp[2]["fvec"] ** 2)),
}))
'''

# New models one after another in one fresh process: each one's first call.
NEW_MODELS = r'''
import json, time
import numpy as np
import autofit
''' + USER_MODELS + r'''
def double_decay(x, a, b, c, d):
    return a * np.exp(-b * x) + c * np.exp(-d * x)

rng = np.random.default_rng(0)
x = np.linspace(0, 4, 1000)
cases = [(decay, (2.5, 1.3, 0.5), (1.0, 1.0, 0.0)),
         (gaussian, (3.0, 2.0, 0.8, 0.5), (2.5, 1.8, 1.0, 0.3)),
         (damped_cosine, (2.0, 3.0, 5.0, 0.3, 0.1), (1.8, 2.5, 4.9, 0.2, 0.0)),
         (double_decay, (2.0, 1.5, 1.0, 0.3), (1.8, 1.4, 1.1, 0.35))]
out = []
for k, (f, truth, p0) in enumerate(cases):
    if k == len(cases) - 1:
        autofit.wait_for_compilation()  # the last one once the others have compiled
    y = f(x, *truth) + 0.05 * rng.normal(size=x.size)
    t = time.perf_counter()
    autofit.curve_fit(f, x, y, p0=p0)
    out.append([f.__name__, time.perf_counter() - t])
print(json.dumps(out))
'''

BATCH = r'''
import json, sys, time, warnings
import numpy as np, scipy.optimize as so
import autofit

def odmr(f, *p):
    out = np.full_like(f, p[24])
    for i in range(8):
        a, c, w = p[3 * i], p[3 * i + 1], p[3 * i + 2]
        out = out - a * w ** 2 / ((f - c) ** 2 + w ** 2)
    return out

n_fits = int(sys.argv[1])
f = np.linspace(2.80, 2.95, 200)
rng = np.random.default_rng(0)
truth = np.array([v for i in range(8) for v in (0.02, 2.81 + 0.017 * i, 0.003)] + [1.0])
# Depths and widths within 10% of the start, centres within a third of a linewidth.
params = truth * (1 + 0.1 * rng.normal(size=(n_fits, 25)))
params[:, 1:24:3] = truth[1:24:3] + 0.001 * rng.normal(size=(n_fits, 8))
params[:, 24] = 1.0
y = np.stack([odmr(f, *p) for p in params]) + 1e-3 * rng.normal(size=(n_fits, 200))
p0 = np.broadcast_to(truth, (n_fits, 25)).copy()
n_scipy = min(n_fits, int(sys.argv[2]))
out = {"n_fits": n_fits, "n_scipy_fits": n_scipy}
repeats = int(sys.argv[3])
scipy_chi2 = np.full(n_scipy, np.inf)
loops = []
for _ in range(repeats):  # the fastest of the loops, as for autofit's calls below
    t = time.perf_counter()
    for k in range(n_scipy):
        try:
            popt, _ = so.curve_fit(odmr, f, y[k], p0=p0[k])
            scipy_chi2[k] = np.sum((odmr(f, *popt) - y[k]) ** 2)
        except RuntimeError:
            pass
    loops.append(time.perf_counter() - t)
out["scipy_fits_per_s"] = n_scipy / min(loops)
out["scipy_converged"] = float(np.mean(np.isfinite(scipy_chi2)))
warnings.simplefilter("ignore", so.OptimizeWarning)
for backend in ("numba", "jax", "numpy"):
    m = n_fits if backend != "numpy" else n_scipy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", autofit.BackendFallbackWarning)
        t = time.perf_counter()
        autofit.fit_batch(odmr, f, y[:m], p0=p0[:m], backend=backend)  # compiles
        first = time.perf_counter() - t
        calls = []
        for _ in range(repeats):
            t = time.perf_counter()
            res = autofit.fit_batch(odmr, f, y[:m], p0=p0[:m], backend=backend)
            calls.append(time.perf_counter() - t)
        elapsed = min(calls)
    worse = res.chi2[:n_scipy] > scipy_chi2 * (1 + 1e-9)
    out[backend] = {"fits_per_s": m / elapsed, "first_call_s": first, "ran_on": res.backend,
                    "reason": res.backend_reason, "converged": float(np.mean(res.converged)),
                    "worse_than_scipy": float(np.mean(worse)),
                    "fallback": [str(w.message)[:160] for w in caught
                                 if issubclass(w.category, autofit.BackendFallbackWarning)][:1]}
print(json.dumps(out))
'''

HUGE = r'''
import json, sys, time
import numpy as np, scipy.optimize as so
import autofit

def decay(x, a, b, c):
    return a * np.exp(-b * x) + c

n, repeats = int(sys.argv[1]), int(sys.argv[2])
x = np.linspace(0, 4, n)
y = decay(x, 2.5, 1.3, 0.5) + 0.05 * np.random.default_rng(0).normal(size=n)
out = {"n_points": n, "repeats": repeats}
# The first call of each in this process (scipy's includes the first touch of the memory
# it allocates; autofit's the compilation of the model on numba).
t = time.perf_counter(); so.curve_fit(decay, x, y, p0=[1, 1, 0])
out["scipy_first_s"] = time.perf_counter() - t
t = time.perf_counter(); autofit.curve_fit(decay, x, y, p0=[1, 1, 0], backend="numba")
out["numba_first_s"] = time.perf_counter() - t
autofit.curve_fit(decay, x, y, p0=[1, 1, 0], backend="numpy")
times = {"numba": [], "numpy": [], "scipy": []}
for _ in range(repeats):  # warm, interleaved: the minimum of each
    for backend in ("numba", "numpy"):
        t = time.perf_counter(); autofit.curve_fit(decay, x, y, p0=[1, 1, 0], backend=backend)
        times[backend].append(time.perf_counter() - t)
    t = time.perf_counter(); so.curve_fit(decay, x, y, p0=[1, 1, 0])
    times["scipy"].append(time.perf_counter() - t)
out.update({name + "_s": min(found) for name, found in times.items()})
print(json.dumps(out))
'''


def _run(source: str, *args) -> dict:
    """Run ``source`` as a user's script file (as a scientist runs one) in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FFIT_")}
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "user_script.py"
        script.write_text(source)
        done = subprocess.run([sys.executable, str(script), *map(str, args)], env=env,
                              capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 1000, 10000, 100000])
    parser.add_argument("--models", nargs="+", default=["decay", "gaussian", "damped_cosine"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch-fits", type=int, default=2000)
    parser.add_argument("--scipy-fits", type=int, default=200)
    parser.add_argument("--batch-repeats", type=int, default=3)
    parser.add_argument("--huge", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--huge-repeats", type=int, default=5)
    args = parser.parse_args()
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                          f"Python {platform.python_version()}",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "single": [], "new_models": [], "batch": None, "huge": []}
    print("| model | points | first call (backend) | warm default (backend) | x scipy "
          "| sigma= x scipy's | full_output x scipy's | numpy engine x scipy "
          "| nfev (autofit / scipy) | chi2 / scipy's - 1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models:
        for n in args.sizes:
            r = _run(SINGLE, model, n, args.repeats)
            results["single"].append(r)
            print(f"| {model} | {n} | {r['first_s'] * 1e3:.1f} ms ({r['first_backend']}) "
                  f"| {r['warm_s'] * 1e3:.3f} ms ({r['warm_backend']}) "
                  f"| {r['scipy_s'] / r['warm_s']:.2f}x "
                  f"| {r['scipy_sigma_s'] / r['sigma_s']:.2f}x "
                  f"| {r['scipy_full_output_s'] / r['warm_full_output_s']:.2f}x "
                  f"| {r['scipy_s'] / r['numpy_s']:.2f}x "
                  f"| {r['warm_nfev']} / {r['scipy_nfev']} "
                  f"| {r['chi2'] / r['chi2_scipy'] - 1:.1e} |", flush=True)
    if args.sizes:
        results["new_models"] = found = _run(NEW_MODELS)
        print("\nNew models one after another in one fresh process (1,000 points), each one's "
              "first call: " + ", ".join(f"{name} {seconds * 1e3:.1f} ms"
                                        for name, seconds in found)
              + " (the last after wait_for_compilation())")
    if args.batch_fits:
        results["batch"] = r = _run(BATCH, args.batch_fits, args.scipy_fits,
                                    args.batch_repeats)
        print(f"\n8-Lorentzian user model (def odmr(f, *p), np.full_like, a loop over the "
              f"peaks), 200 points: scipy loop {r['scipy_fits_per_s']:.1f} fits/s "
              f"({r['n_scipy_fits']} fits; each the fastest of {args.batch_repeats} calls)")
        print("| engine | ran on | fits/s | x scipy | first call | converged "
              "| χ² worse than scipy's |")
        print("|---|---|---|---|---|---|---|")
        for engine in ("numba", "jax", "numpy"):
            e = r[engine]
            print(f"| {engine} | {e['ran_on']} | {e['fits_per_s']:.0f} "
                  f"| {e['fits_per_s'] / r['scipy_fits_per_s']:.1f}x "
                  f"| {e['first_call_s']:.1f} s | {100 * e['converged']:.1f}% "
                  f"| {100 * e['worse_than_scipy']:.1f}% |")
    for n in args.huge:
        r = _run(HUGE, n, args.huge_repeats)
        results["huge"].append(r)
        print(f"huge fit, {n} points, user decay model, warm (min of {args.huge_repeats}): "
              f"numba {r['scipy_s'] / r['numba_s']:.1f}x scipy ({r['numba_s']:.3f} s), numpy "
              f"{r['scipy_s'] / r['numpy_s']:.1f}x (scipy {r['scipy_s']:.3f} s); first calls: "
              f"numba {r['numba_first_s']:.2f} s, scipy {r['scipy_first_s']:.2f} s")
    # Parts not run keep their earlier figures.
    path = HERE / "results.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    for part, empty in (("single", []), ("new_models", []), ("batch", None), ("huge", [])):
        if results[part] == empty and part in earlier:
            results[part] = earlier[part]
    path.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
