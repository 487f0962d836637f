"""Cross-backend validation: every kernel on every available backend against ``original``.

``python -m autofit validate`` prints a table (kernel x backend: largest relative deviation
from the NumPy reference, and time per call) and exits non-zero on any disagreement. The
generated tests (``tests/test_kernels.py``) run the same comparisons.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from autofit import _dispatch
from autofit._declarations import KERNELS
from autofit.selftest import cases as _cases

SIZES = (10, 1000, 100_000)


@dataclass
class Comparison:
    """One kernel variant on one backend, compared with the reference."""

    kernel: str
    variant: str
    n_points: int
    backend: str
    deviation: float  # largest relative deviation over the compared float outputs
    tolerance: float
    exact_ok: bool  # integer / flag outputs identical
    seconds: float  # one warm call
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.exact_ok and self.deviation <= self.tolerance


def _module(backend: str):
    return _dispatch.load(backend)


def _context(backend: str):
    return _dispatch.host_of(backend).precision()


def resolve_arguments(args, module) -> tuple:
    """A case's arguments with its placeholders replaced by ``module``'s own callables."""
    return tuple(_resolve_one(a, module) for a in args)


def _resolve_one(arg, module):
    if isinstance(arg, _cases.Ref):
        return getattr(module, arg.kernel)
    return arg


def _as_tuple(output) -> tuple:
    return tuple(output) if isinstance(output, tuple) else (output,)


def call(name: str, backend: str, case: _cases.Case,
         timed: bool = True) -> tuple[tuple, float]:
    """Run one case on one backend: its outputs as NumPy values, and a warm call's time
    (with ``timed``; else nan, and the case runs once)."""
    module = _module(backend)
    function = getattr(module, name)
    args = resolve_arguments(case.args, module)
    with _context(backend):
        output = _as_tuple(function(*args))
        _block(output)
        seconds = np.nan
        if timed:
            del output
            start = time.perf_counter()
            output = _as_tuple(function(*args))
            _block(output)
            seconds = time.perf_counter() - start
    return tuple(np.asarray(o) for o in output), seconds


def _block(outputs):
    for value in outputs:
        if hasattr(value, "block_until_ready"):
            value.block_until_ready()


def relative_deviation(actual: np.ndarray, expected: np.ndarray,
                       rtol: float | None = None) -> float:
    """max |actual - expected| / (|expected| + floor): relative per element, with a floor so
    entries that are zero up to rounding do not dominate.

    The floor is 1e-8 max|expected|, raised for a tight ``rtol`` to 64 eps max|expected| /
    rtol: an entry that is a difference of terms of the array's magnitude (a Jacobian column
    where two peak shapes cross) carries their rounding, a few ulps of max|expected|, so
    below that floor the comparison is absolute, at 64 ulps of the largest entry.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return np.inf
    actual, expected = _without_shared_nans(actual, expected)
    if expected.size == 0:
        return 0.0
    relative_floor = 1e-8 if rtol is None else max(1e-8, _ROUNDING_ULPS * _EPS / rtol)
    floor = relative_floor * np.max(np.abs(expected)) + np.finfo(np.float64).tiny
    with np.errstate(invalid="ignore"):
        deviation = np.max(np.abs(actual - expected) / (np.abs(expected) + floor))
    return float(deviation) if np.isfinite(deviation) else np.inf


_EPS = float(np.finfo(np.float64).eps)
_ROUNDING_ULPS = 64


def _without_shared_nans(actual, expected):
    # nan in both (a fit not attempted, an undefined covariance) is agreement; nan in one
    # only stays and makes the deviation infinite.
    both = np.isnan(actual) & np.isnan(expected)
    return actual[~both], expected[~both]


def normwise_deviation(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return np.inf
    actual, expected = _without_shared_nans(actual, expected)
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    deviation = np.max(np.abs(actual - expected)) / scale if scale > 0 else 0.0
    return float(deviation) if np.isfinite(deviation) else np.inf


def _tolerance(compare: tuple[str, ...]) -> float:
    if "fit" in compare:
        return _cases.FIT_RTOL
    for how in compare:
        if how.startswith("fd-"):
            return _cases.FD_RTOL[how[3:]]
    return _cases.KERNEL_RTOL


def reference(name: str, case: _cases.Case) -> tuple:
    """The outputs that ``case`` of kernel ``name`` must reproduce: the NumPy reference's
    (``case.reference``'s, for kernels without a NumPy implementation)."""
    if case.reference is not None:
        expected_fn = getattr(_module("numpy"), case.reference)
        return tuple(np.asarray(o) for o in _as_tuple(
            expected_fn(*resolve_arguments(case.args[1:], _module("numpy")))))
    expected, _ = call(name, "numpy", case, timed=False)
    return expected


def compare_case(name: str, backend: str, case: _cases.Case, n_points: int, expected,
                 timed: bool = True) -> Comparison:
    """One variant of kernel ``name`` on ``backend`` against its ``expected`` outputs."""
    try:
        actual, seconds = call(name, backend, case, timed)
    except Exception as exc:  # reported in the table, never hidden
        return Comparison(name, case.variant, n_points, backend, np.inf,
                          _tolerance(case.compare), False, 0.0, f"{type(exc).__name__}: {exc}")
    return judge(name, backend, case, n_points, actual, expected, seconds)


def judge(name: str, backend: str, case: _cases.Case, n_points: int, actual, expected,
          seconds: float = np.nan) -> Comparison:
    """The comparison of outputs ``actual`` (computed anywhere: another process, a GPU)
    with ``expected``, by the rules of ``case.compare``."""
    deviation, exact_ok = 0.0, len(actual) == len(case.compare)
    tolerance = _tolerance(case.compare)
    for how, a, e in zip(case.compare, actual, expected):
        if how in ("kernel", "fit"):
            deviation = max(deviation, relative_deviation(a, e, tolerance))
        elif how.startswith("fd-") or how == "normwise":
            deviation = max(deviation, normwise_deviation(a, e))
        elif how == "exact":
            exact_ok = exact_ok and np.array_equal(np.asarray(a), np.asarray(e))
    return Comparison(name, case.variant, n_points, backend, deviation, tolerance, exact_ok,
                      seconds)


def compare(name: str, backend: str, n_points: int) -> list[Comparison]:
    """Compare kernel ``name`` on ``backend`` with ``original`` for every case variant."""
    return [compare_case(name, backend, case, n_points, reference(name, case))
            for case in _cases.cases(name, n_points)]


def available_backends() -> list[str]:
    return [b for b in _dispatch.BACKENDS if _dispatch.is_installed(b)]


def implementing(name: str, backends) -> list[str]:
    """Backends that implement kernel ``name`` themselves (others use the fallback table)."""
    return [b for b in backends if name in _module(b).__all__]


# Seconds of CPU that the slowest (kernel, backend) pairs take on empty caches (2-core
# machine, one backend at a time; mostly compilation; every other pair ~0.3 s): the parallel
# run balances its workers by them.
_EXPECTED_SECONDS = {("lm_batch", "numba"): 11.0, ("lm_fused", "numba"): 11.0,
                     ("lm_solve", "numba"): 7.0, ("lm_fused", "jax"): 17.0,
                     ("lm_batch", "jax"): 14.0, ("lm_solve", "jax"): 6.0}


def _pairs(backends, kernels) -> list[tuple[str, str]]:
    """(kernel, backend) pairs to compare, in table order (numpy only for autodiff cases)."""
    return [(name, backend) for name in (kernels or KERNELS) for backend in backends
            if backend != "numpy" or KERNELS[name].case == "autodiff"]


def _compare_pair(name: str, backend: str, sizes) -> list[Comparison]:
    """Every size of one kernel on one backend (none if the backend does not implement it:
    the fallback table runs another backend's)."""
    if name not in _module(backend).__all__:
        return []
    return [row for n_points in sizes for row in compare(name, backend, n_points)]


def _compare_pairs(pairs, sizes) -> list[list[Comparison]]:
    return [_compare_pair(name, backend, sizes) for name, backend in pairs]


def _expected_seconds(pairs) -> float:
    return sum(_EXPECTED_SECONDS.get(pair, 0.3) for pair in pairs)


def bundles(pairs, backends, n_bundles: int) -> list[list[tuple[str, str]]]:
    """``pairs`` in at most ``n_bundles`` bundles, one per worker process: each backend's
    pairs together (they share an import and compiled helpers, which a second process would
    import and compile again), then, while there are fewer bundles than ``n_bundles``, the
    bundle expected to take longest split in two of about equal expected seconds (pairs
    dealt longest first to the lighter half; each half keeps the table's order)."""
    found = [[pair for pair in pairs if pair[1] == backend] for backend in backends]
    found = [bundle for bundle in found if bundle]
    while len(found) < n_bundles:
        longest = max(found, key=_expected_seconds)
        if len(longest) < 2:
            break
        halves: tuple[list, list] = ([], [])
        for pair in sorted(longest, key=lambda pair: -_expected_seconds([pair])):
            min(halves, key=_expected_seconds).append(pair)
        found.remove(longest)
        found += [sorted(half, key=longest.index) for half in halves]
    return found


def run(backends=None, sizes=SIZES, kernels=None, progress=None,
        jobs: int = 1) -> list[Comparison]:
    """All comparisons for the given backends (default: every installed one).

    ``jobs`` > 1 runs the backends side by side in ``jobs + 1`` worker processes at most
    (:func:`bundles`): on empty caches the run is mostly compilation, which one process does
    on one core (numba) or a few (jax). The rows come back in the same order as with
    ``jobs=1``.
    """
    backends = list(backends or available_backends())
    pairs = _pairs(backends, kernels)
    if jobs <= 1 or len(pairs) <= 1:
        rows = []
        for name, backend in pairs:
            found = _compare_pair(name, backend, sizes)
            rows.extend(found)
            if progress and found:
                progress(found[-1])
        return rows
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    found: dict[tuple[str, str], list[Comparison]] = {}
    # One worker more than jobs: jax compiles on threads of its own and the expected
    # seconds are estimates, so with one worker per core a core idles while the last
    # bundle ends (2 cores, empty caches: 56.5-58.8 s with three workers, jax's kernels
    # split in two, against 59.8-65.0 s with one worker per backend).
    work = bundles(pairs, backends, jobs + 1)
    # spawn: a worker must not inherit the threads of an imported jax or numba.
    with ProcessPoolExecutor(max_workers=len(work),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_compare_pairs, bundle, tuple(sizes)): bundle
                   for bundle in sorted(work, key=_expected_seconds, reverse=True)}
        for future in as_completed(futures):
            for pair, rows in zip(futures[future], future.result(), strict=True):
                found[pair] = rows
                if progress and rows:
                    progress(rows[-1])
    return [row for pair in pairs for row in found[pair]]


def format_table(rows: list[Comparison]) -> str:
    """One line per kernel and backend: worst deviation over sizes and variants, time."""
    backends = sorted({r.backend for r in rows}, key=_dispatch.BACKENDS.index)
    kernels = list(dict.fromkeys(r.kernel for r in rows))
    width = max(len(k) for k in kernels) + 2 if kernels else 10
    header = "kernel".ljust(width) + "".join(f"{b:>26}" for b in backends)
    lines = [header, "-" * len(header)]
    for kernel_name in kernels:
        cells = []
        for backend in backends:
            mine = [r for r in rows if r.kernel == kernel_name and r.backend == backend]
            if not mine:
                cells.append(f"{'(fallback)':>26}")
                continue
            worst = max(r.deviation for r in mine)
            seconds = max(r.seconds for r in mine)
            mark = "ok" if all(r.ok for r in mine) else "FAIL"
            cells.append(f"{worst:9.1e} {_format_seconds(seconds):>10} {mark:>5}")
        lines.append(kernel_name.ljust(width) + "".join(cells))
    failures = [r for r in rows if not r.ok]
    lines.append("")
    lines.append(f"{len(rows)} comparisons, {len(failures)} disagreement(s); deviation = "
                 "largest relative difference from autofit.original over sizes "
                 f"{sorted({r.n_points for r in rows})}; time = slowest warm call")
    for r in failures:
        why = r.error or (f"deviation {r.deviation:.2e} > {r.tolerance:.0e}"
                          if r.deviation > r.tolerance else "integer outputs differ")
        lines.append(f"  FAIL {r.kernel} [{r.variant}, n={r.n_points}] on {r.backend}: {why}")
    return "\n".join(lines)


def _format_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"
