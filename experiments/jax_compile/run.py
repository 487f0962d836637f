"""First-call (compile) time of ``fit_batch(..., backend="jax")`` per model, in a fresh process.

For each workload a child process times: the first call (tracing + compilation + run), a
second call with other values and another number of fits in the same bucket (must not
compile anything), and the warm throughput (fits/s, median of ``--repeat`` calls). jax's
own compile events are summed to split the first call into tracing, lowering and XLA
compilation. Run from the repository root:

    python experiments/jax_compile/run.py [--repeat 3] [--fits 10000] [--runs 3] [--only NAME]
        [--cache-dir DIR]

``--cache-dir`` switches jax's persistent compilation cache on for the child processes
(``JAX_COMPILATION_CACHE_DIR``, ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0``) and fills it
with one unmeasured run per workload first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ("gaussian", "gaussian_2d", "multi_lorentzian_8", "user_gaussian_jnp")


def user_gaussian(x, a, c, w, o):
    """A user function in jax.numpy (one object for all calls: jax compiles per function)."""
    import jax.numpy as jnp

    return a * jnp.exp(-0.5 * ((x - c) / w) ** 2) + o


def problem(name, n_fits, seed):
    """(model, x, y, p0) of the workload ``name``."""
    from autofit import models

    rng = np.random.default_rng(seed)
    if name in ("gaussian", "user_gaussian_jnp"):
        x = np.linspace(-5.0, 5.0, 32)
        truth = np.array([3.0, 0.4, 1.1, 0.2]) * (1.0 + 0.1 * rng.normal(size=(n_fits, 4)))
        u = (x - truth[:, 1:2]) / truth[:, 2:3]
        y = truth[:, 0:1] * np.exp(-0.5 * u * u) + truth[:, 3:4]
        y += 0.05 * rng.normal(size=y.shape)
        p0 = truth * (1.0 + 0.05 * rng.normal(size=truth.shape))
        return (models.gaussian if name == "gaussian" else user_gaussian), x, y, p0
    if name == "gaussian_2d":
        grid = np.arange(11.0)
        gx, gy = np.meshgrid(grid, grid)
        x = np.stack([gx.ravel(), gy.ravel()])
        n_params = models.gaussian_2d.n_params
        truth = np.array([10.0, 5.0, 5.0, 1.5, 1.0])[:n_params]
        truth = truth * (1.0 + 0.05 * rng.normal(size=(n_fits, n_params)))
        y = models.gaussian_2d(x, *truth.T)
        y = y + 0.1 * rng.normal(size=y.shape)
        p0 = truth * (1.0 + 0.05 * rng.normal(size=truth.shape))
        return models.gaussian_2d, x, y, p0
    if name == "multi_lorentzian_8":
        sys.path.insert(0, os.path.join(HERE, "..", "batch_cpu"))
        from run import odmr_problem

        x, y, p0 = odmr_problem(n_fits, seed=seed)
        return models.multi_lorentzian(8), x, y, p0
    raise ValueError(f"unknown workload {name!r}; one of {WORKLOADS}")


def child(name, n_fits, repeat):
    """Run in a fresh process: print one JSON line of timings."""
    t_import = time.perf_counter()
    import jax
    from jax import monitoring

    import autofit

    import_s = time.perf_counter() - t_import
    events = {}

    def listen(event, duration, **kwargs):
        events[event] = events.get(event, 0.0) + duration
        events[event + ":count"] = events.get(event + ":count", 0) + 1

    monitoring.register_event_duration_secs_listener(listen)
    model, x, y, p0 = problem(name, n_fits, seed=0)
    t0, c0 = time.perf_counter(), time.process_time()
    res = autofit.fit_batch(model, x, y, p0=p0, backend="jax")
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    assert res.backend == "jax", res.backend_reason
    compiled = dict(events)
    # Other values, another number of fits in the same bucket: nothing may compile.
    model, x, y, p0 = problem(name, n_fits - n_fits // 20, seed=1)
    t0 = time.perf_counter()
    autofit.fit_batch(model, x, y, p0=p0, backend="jax")
    second = time.perf_counter() - t0
    recompiles = (events.get("/jax/core/compile/backend_compile_duration:count", 0)
                  - compiled.get("/jax/core/compile/backend_compile_duration:count", 0))
    model, x, y, p0 = problem(name, n_fits, seed=0)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = autofit.fit_batch(model, x, y, p0=p0, backend="jax")
        times.append(time.perf_counter() - t0)
    warm = float(min(times))

    def total(key):
        return compiled.get(f"/jax/core/compile/{key}_duration", 0.0)

    print(json.dumps({
        "workload": name, "n_fits": n_fits, "import_s": import_s, "first_call_s": first,
        "first_call_cpu_s": first_cpu,
        "trace_s": total("jaxpr_trace"), "lower_s": total("jaxpr_to_mlir_module"),
        "xla_compile_s": total("backend_compile"),
        "compilations": compiled.get("/jax/core/compile/backend_compile_duration:count", 0),
        "second_call_s": second, "recompilations_second_call": recompiles,
        "warm_s": warm, "compile_s": first - warm, "fits_per_s": n_fits / warm,
        "converged": float(res.converged.mean()), "jax": jax.__version__}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3, help="warm calls (minimum)")
    parser.add_argument("--fits", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1, help="fresh processes per workload")
    parser.add_argument("--only", choices=WORKLOADS, action="append")
    parser.add_argument("--out", default=None, help="write the rows to this JSON file")
    parser.add_argument("--cache-dir", default=None, help="jax's persistent cache, filled first")
    parser.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.fits, args.repeat)
        return
    env = dict(os.environ)
    if args.cache_dir:
        env.update(JAX_COMPILATION_CACHE_DIR=args.cache_dir,
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    rows = []
    for name in args.only or WORKLOADS:
        runs = []
        for run in range(args.runs + bool(args.cache_dir)):
            out = subprocess.run([sys.executable, __file__, "--child", name, "--fits",
                                  str(args.fits), "--repeat", str(args.repeat)],
                                 check=True, capture_output=True, text=True, env=env)
            if run or not args.cache_dir:
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        # Other helpers share the CPU: keep each column's minimum over the runs.
        row = dict(runs[0])
        for key in ("first_call_s", "first_call_cpu_s", "compile_s", "trace_s", "lower_s",
                    "xla_compile_s", "second_call_s",
                    "warm_s"):
            row[key] = min(r[key] for r in runs)
        row["fits_per_s"] = row["n_fits"] / row["warm_s"]
        row["recompilations_second_call"] = max(r["recompilations_second_call"]
                                                for r in runs)
        rows.append(row)
        print(f"{name:20s} first {row['first_call_s']:6.2f} s (cpu {row['first_call_cpu_s']:5.2f}, "
              f"first - warm {row['compile_s']:5.2f}; trace {row['trace_s']:5.2f}, "
              f"lower {row['lower_s']:5.2f}, xla {row['xla_compile_s']:5.2f}, "
              f"{row['compilations']} compilations)  second {row['second_call_s']:6.3f} s "
              f"({row['recompilations_second_call']} recompiled)  "
              f"{row['fits_per_s']:9.0f} fits/s", flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
