"""numba's CPU batch kernel: all fits in parallel chunks (``prange``), each chunk with one
set of work arrays reused fit after fit, around the per-fit solver of
:mod:`autofit.numba.fit_one`.

Three compiled pieces, joined as first-class functions so that each is compiled once for
what it depends on:

- the loop over the fits (:func:`run_fits`), once per working dtype;
- the solver of a chunk of fits (``fit_range``, around ``fit_one``), once per number of
  parameters and dtype, for every model;
- a model's two passes over the points (``evaluate`` and ``probe_rows``, see
  :func:`autofit.numba.fit_one.build_passes`), once per model.

The first is kept in numba's disk cache; the second and a built-in model's passes are
compiled from generated modules that numba caches on disk
(:mod:`autofit.numba.kernel_cache`), or here, in this process (:func:`in_process_fit_range`)
where those cannot be written. A user's model compiles its passes only (2-4 s), not the
solver (4-5 s more).
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import from_dtype, types

from autofit.numba.first_class import compiled_as
from autofit.numba.fit_one import build_fit_one, build_passes
from autofit.numba.passes import FASTMATH, with_literals_of, work_rows


def _flavour():
    """``(jit, inline)`` of the CPU kernel's pieces (compiled lazily, at the first call)."""
    jit = numba.njit(error_model="numpy", fastmath=FASTMATH)
    # The point functions are inlined into the pass over the points: a call per point that
    # passes numba's array structures would cost more than the model itself.
    inline = numba.njit(error_model="numpy", inline="always", fastmath=FASTMATH)
    return jit, inline


def _tag(*parts):
    return "".join(c if c.isalnum() else "_" for c in "_".join(map(str, parts)))


def cpu_passes(value, gradient, jac_method, n_params, dtype=np.float64):
    """``(evaluate, probe_rows)``: :func:`~autofit.numba.fit_one.build_passes` for the CPU
    kernel."""
    jit, inline = _flavour()
    # Built-in models (plain functions of autofit.numba.points) get the vectorisable exp;
    # user functions are compiled as written.
    fast_exp = getattr(value, "__module__", "") == "autofit.numba.points"
    return build_passes(inline(with_literals_of(value, dtype, fast_exp)),
                        inline(with_literals_of(gradient, dtype, fast_exp)),
                        jac_method, n_params, jit, inline, dtype,
                        tag=_tag(getattr(value, "__name__", "model"), int(jac_method),
                                 n_params, np.dtype(dtype).name),
                        share=("cpu", value))


def cpu_fit_one(n_params, dtype=np.float64):
    """:func:`~autofit.numba.fit_one.build_fit_one` for the CPU kernel: ``fit_one(evaluate,
    probe_rows, x, ...)``, for every model of ``n_params`` parameters."""
    jit, inline = _flavour()
    return build_fit_one(None, None, None, n_params, jit, inline, dtype, block=True,
                         tag=_tag("solver", n_params, np.dtype(dtype).name))


# A chunk of fits, as source: compiled around ``fit_one`` (with ``N_PARAMS`` and
# ``WORK_ROWS`` as globals of wherever it is compiled: a generated module that numba caches
# on disk, or here). The fits of a chunk share one set of work arrays (no allocation per
# fit); the model's passes come in as first-class functions.
FIT_RANGE_SOURCE = """
def fit_range(evaluate, probe_rows, first, last, x, ydata, weights, p0, lower, upper, free,
              estimator, tol, max_iter, params, chi2, n_iter, status, covariance):
    trial = np.empty(N_PARAMS, p0.dtype)
    step = np.empty(N_PARAMS, p0.dtype)
    g = np.empty(N_PARAMS, p0.dtype)
    trial_g = np.empty(N_PARAMS, p0.dtype)
    scale_squared = np.empty(N_PARAMS, p0.dtype)
    work_p = np.empty(N_PARAMS, p0.dtype)
    h = np.empty((N_PARAMS, N_PARAMS), p0.dtype)
    trial_h = np.empty((N_PARAMS, N_PARAMS), p0.dtype)
    system = np.empty((N_PARAMS, N_PARAMS), p0.dtype)
    jac = np.empty((WORK_ROWS, ydata.shape[1]), p0.dtype)
    trial_jac = np.empty((WORK_ROWS, ydata.shape[1]), p0.dtype)
    active = np.empty(N_PARAMS, dtype=np.bool_)
    for fit in range(first, last):
        chi2[fit], n_iter[fit], status[fit] = fit_one(
            evaluate, probe_rows, x[fit % x.shape[0]], ydata[fit],
            weights[fit % weights.shape[0]], p0[fit], lower[fit % lower.shape[0]],
            upper[fit % upper.shape[0]], free, estimator, tol, max_iter, params[fit], trial,
            step, g, h, trial_g, trial_h, scale_squared, system, jac, trial_jac, work_p,
            active, covariance[fit])
"""


def _data(element, ndim):
    # What the kernel reads only: the data and the bounds (mutable arrays convert to it).
    return types.Array(element, ndim, "C", readonly=True)


def _argument_types(dtype):
    """The numba types of :func:`run_fits`'s data and result arguments for ``dtype``: the
    data and the bounds read only, every array C-contiguous."""
    real = from_dtype(np.dtype(dtype))
    return (_data(real, 3), _data(real, 2), _data(real, 2), _data(real, 2), _data(real, 2),
            _data(real, 2), _data(types.boolean, 1), types.int64, types.float64, types.int64,
            real[:, ::1], real[::1], types.int64[::1], types.int64[::1], real[:, :, ::1])


def pass_types(dtype=np.float64):
    """The numba types ``(evaluate, probe_rows)`` of a model's passes for ``dtype``, as
    ``fit_range`` calls them."""
    real = from_dtype(np.dtype(dtype))
    x, vector, flags = _data(real, 2), _data(real, 1), _data(types.boolean, 1)
    evaluate = types.FunctionType(types.Tuple((types.float64, types.boolean))(
        x, vector, vector, real[::1], vector, vector, flags, types.int64, real[::1],
        real[:, ::1], real[:, ::1], real[::1], types.int64))
    probe_rows = types.FunctionType(types.none(
        x, vector, vector, real[::1], flags, types.int64, real[:, ::1], real[::1]))
    return evaluate, probe_rows


def fit_range_type(dtype=np.float64):
    """The numba type of a compiled ``fit_range(evaluate, probe_rows, first, last, ...)``
    for ``dtype``."""
    return types.FunctionType(types.void(*pass_types(dtype), types.int64, types.int64,
                                         *_argument_types(dtype)))


def run_fits(fit_range, evaluate, probe_rows, x, ydata, weights, p0, lower, upper, free,
             estimator, tol, max_iter, params, chi2, n_iter, status, covariance):
    # Chunks of 16 fits: small chunks keep the two threads balanced when some fits take far
    # longer than others; one call per chunk, not per fit, through the function pointer.
    n_fits = p0.shape[0]
    chunk = 16
    n_chunks = (n_fits + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        fit_range(evaluate, probe_rows, c * chunk, min(n_fits, (c + 1) * chunk), x, ydata,
                  weights, p0, lower, upper, free, estimator, tol, max_iter, params, chi2,
                  n_iter, status, covariance)


# At most this many fits (one chunk of run_fits) run without the parallel loop.
SERIAL_FITS = 16

_driver_lock = threading.Lock()
_DRIVERS: dict = {}


def _driver(dtype):
    """:func:`run_fits` for ``dtype``, compiled once (and kept in numba's disk cache) for
    every model and size: it takes ``fit_range`` and the model's passes as first-class
    functions (the parallel loop cost 4 s more for each model, and compiled the model's
    code a second time)."""
    key = np.dtype(dtype)
    with _driver_lock:
        if key not in _DRIVERS:
            signature = (fit_range_type(key), *pass_types(key), *_argument_types(key))
            _DRIVERS[key] = numba.njit(signature, parallel=True, cache=True,
                                       error_model="numpy")(run_fits)
    return _DRIVERS[key]


def first_class_passes(evaluate, probe_rows, dtype=np.float64):
    """A model's compiled passes as the first-class values the kernel takes."""
    return tuple(compiled_as(function, function_type) for function, function_type in zip(
        (evaluate, probe_rows), pass_types(dtype), strict=True))


def kernel_around(fit_range, evaluate, probe_rows, dtype=np.float64):
    """``run(x, ydata, weights, p0, lower, upper, free, estimator, tol, max_iter, params,
    chi2, n_iter, status, covariance)``: all fits by the compiled driver around
    ``fit_range`` and the model's passes (first-class values), results in place."""
    driver = _driver(dtype)

    def run(x, ydata, weights, p0, lower, upper, free, estimator, tol, max_iter, params,
            chi2, n_iter, status, covariance):
        real = p0.dtype
        arguments = (*(np.ascontiguousarray(a, dtype=real)
                       for a in (x, ydata, weights, p0, lower, upper)),
                     np.ascontiguousarray(free, dtype=np.bool_), int(estimator), float(tol),
                     int(max_iter), params, chi2, n_iter, status, covariance)
        n_fits = p0.shape[0]
        if n_fits <= SERIAL_FITS:
            # One chunk: fit_range itself, without waking the parallel loop's threads (a
            # robust curve_fit, one fit: 0.8 ms, and 4 ms every fourth or fifth call that
            # found them asleep).
            fit_range.dispatcher(evaluate, probe_rows, 0, n_fits, *arguments)
        else:
            driver(fit_range, evaluate, probe_rows, *arguments)

    # What it runs (disk-cached dispatchers: their stats).
    run.fit_range, run.evaluate, run.probe_rows = fit_range, evaluate, probe_rows
    return run


def in_process_fit_range(n_params, dtype=np.float64):
    """``fit_range`` for ``n_params`` and ``dtype`` compiled in this process (where the disk
    cache cannot be written), as a first-class value."""
    namespace = {"__name__": __name__, "np": np, "N_PARAMS": n_params,
                 "WORK_ROWS": work_rows(n_params), "fit_one": cpu_fit_one(n_params, dtype)}
    exec(compile(FIT_RANGE_SOURCE, f"<autofit CPU kernel {n_params}>", "exec"),  # noqa: S102
         namespace)
    return compiled_as(numba.njit(error_model="numpy")(namespace["fit_range"]),
                       fit_range_type(dtype))


def in_process_passes(value, gradient, jac_method, n_params, dtype=np.float64):
    """A model's passes compiled in this process, as first-class values."""
    return first_class_passes(*cpu_passes(value, gradient, jac_method, n_params, dtype), dtype)


def _no_gradient(x, i, p, jac, col):
    return 0.0


