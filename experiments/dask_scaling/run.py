"""Dask scaling of fit_batch: 1 against 2 single-threaded worker processes, and the cost of
one chunk (see README.md).

The curves are made on the workers (``map_blocks`` from a seed per block) and persisted
there before timing, as data read from a shared store would be; numba compiles once per
worker in a warm-up that is not timed. Each time is the minimum of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORKLOADS = {
    # name: (model spec, n_points, fits, fits per chunk)
    "gaussian": ("gaussian", 32, 1_000_000, 31_250),
    "multi_lorentzian:8": ("multi_lorentzian:8", 200, 20_000, 625),
}


def make_curves(block_info=None, *, spec, n_points):
    """The block's noisy curves, from a seed fixed by its position (runs on a worker)."""
    from autofit import models

    (start, stop), _ = block_info[None]["array-location"]
    rng = np.random.default_rng(start)
    n = stop - start
    model = models.get(spec)
    if spec == "gaussian":
        x = np.linspace(-3.0, 3.0, n_points)
        truth = np.column_stack([rng.uniform(1.5, 2.5, n), rng.uniform(-0.5, 0.5, n),
                                 rng.uniform(0.5, 0.9, n), rng.uniform(0.0, 0.2, n)])
        noise = 0.05
    else:
        x = np.linspace(2.80, 2.95, n_points)
        centers = np.linspace(2.81, 2.94, 8) + rng.uniform(-0.002, 0.002, (n, 8))
        peaks = np.stack([np.full((n, 8), -0.02), centers, np.full((n, 8), 0.002)], axis=-1)
        truth = np.concatenate([peaks.reshape(n, 24), np.ones((n, 1))], axis=1)
        noise = 0.002
    y = np.stack([model(x, *t) for t in truth]) + noise * rng.normal(size=(n, n_points))
    return y


def axis(spec, n_points):
    return (np.linspace(-3.0, 3.0, n_points) if spec == "gaussian"
            else np.linspace(2.80, 2.95, n_points))


def warm_up(spec, n_points):
    """Compile numba's kernels for this model in this process (runs on each worker)."""
    import autofit

    y = make_curves({None: {"array-location": [(0, 64), (0, n_points)]}}, spec=spec,
                    n_points=n_points)
    autofit.fit_batch(autofit.models.get(spec), axis(spec, n_points), y, backend="numba",
                      progress=False)
    return os.environ.get("NUMBA_NUM_THREADS")


def timed(run, repeat):
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure(name, n_workers, n_fits, chunk, repeat, tiny_chunk):
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    import autofit

    spec, n_points, _, _ = WORKLOADS[name]
    model = autofit.models.get(spec)
    x = axis(spec, n_points)
    out = {}
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, env={"NUMBA_NUM_THREADS": "1"}) as cluster, \
            Client(cluster) as client:
        start = time.perf_counter()
        threads = client.run(warm_up, spec, n_points)
        out["warm_up_s"] = time.perf_counter() - start
        assert set(threads.values()) == {"1"}, threads
        for label, size in (("chunks", chunk), ("tiny_chunks", tiny_chunk)):
            fits = n_fits if label == "chunks" else min(n_fits, 200 * tiny_chunk)
            y = da.map_blocks(make_curves, chunks=((size,) * (fits // size), (n_points,)),
                              dtype=np.float64, spec=spec, n_points=n_points).persist()
            wait(y)
            seconds, result = timed(lambda: autofit.fit_batch(
                model, x, y, backend="numba", covariance=False, progress=False), repeat)
            out[label] = {"fits": fits, "chunk": size, "chunks": fits // size,
                          "seconds": seconds, "fits_per_s": fits / seconds,
                          "converged": float(np.mean(result.converged))}
    return out


def in_memory_one_thread(name, n_fits, repeat):
    """The same fits in this process on one numba thread: the cost of dask on one core."""
    import dask.array as da
    import numba

    import autofit

    spec, n_points, _, chunk = WORKLOADS[name]
    numba.set_num_threads(1)
    y = da.map_blocks(make_curves, chunks=((chunk,) * (n_fits // chunk), (n_points,)),
                      dtype=np.float64, spec=spec, n_points=n_points).compute(
                          scheduler="sync")
    warm_up(spec, n_points)
    seconds, _ = timed(lambda: autofit.fit_batch(autofit.models.get(spec), axis(spec, n_points),
                                                 y, backend="numba", covariance=False,
                                                 progress=False), repeat)
    return {"fits": n_fits, "seconds": seconds, "fits_per_s": n_fits / seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10x fewer fits")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS),
                        choices=list(WORKLOADS))
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                          f"{platform.python_version()}",
               "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True, cwd=HERE).stdout.strip(),
               "command": "python experiments/dask_scaling/run.py"
                          + (" --quick" if args.quick else ""),
               "workloads": {}}
    for name in args.workloads:
        _, _, n_fits, chunk = WORKLOADS[name]
        if args.quick:
            n_fits, chunk = n_fits // 10, chunk // 10
        tiny = max(1, chunk // 64)
        row = {"in_memory_1_thread": in_memory_one_thread(name, n_fits, args.repeat)}
        for n_workers in (1, 2):
            row[f"workers_{n_workers}"] = measure(name, n_workers, n_fits, chunk, args.repeat,
                                                  tiny)
        one, two = row["workers_1"], row["workers_2"]
        row["speedup_1_to_2"] = one["chunks"]["seconds"] / two["chunks"]["seconds"]
        # Per chunk: what a chunk costs beyond its fits, from tiny chunks on one worker.
        per_fit = one["chunks"]["seconds"] / one["chunks"]["fits"]
        tiny_run = one["tiny_chunks"]
        row["overhead_per_chunk_ms"] = 1e3 * (tiny_run["seconds"] - per_fit * tiny_run["fits"]
                                              ) / tiny_run["chunks"]
        row["dask_1_worker_vs_in_memory"] = (one["chunks"]["seconds"]
                                             / row["in_memory_1_thread"]["seconds"])
        results["workloads"][name] = row
        print(json.dumps({name: row}, indent=1), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
