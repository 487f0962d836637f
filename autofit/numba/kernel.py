"""numba's CPU batch kernel: all fits in parallel chunks (``prange``), each chunk with one
set of work arrays reused fit after fit, around the per-fit solver of
:mod:`autofit.numba.fit_one`. The loop over the fits (:func:`run_fits`) is compiled once
per working dtype into numba's disk cache and takes a model's ``fit_range`` (a chunk of
fits, around its ``fit_one``) as a first-class function; ``fit_range`` is compiled either
here, in this process (:func:`build_cpu_kernel`), or from a generated module that numba
caches on disk (:mod:`autofit.numba.kernel_cache`).
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import from_dtype, types

from autofit.numba.fit_one import build_fit_one
from autofit.numba.passes import FASTMATH, with_literals_of, work_rows


def cpu_fit_one(value, gradient, jac_method, n_params, dtype=np.float64):
    """:func:`build_fit_one` for the CPU kernel (compiled lazily, at the kernel's first call)."""
    jit = numba.njit(error_model="numpy", fastmath=FASTMATH)
    # The point functions are inlined into the pass over the points: a call per point that
    # passes numba's array structures would cost more than the model itself.
    inline = numba.njit(error_model="numpy", inline="always", fastmath=FASTMATH)
    # Built-in models (plain functions of autofit.numba.points) get the vectorisable exp;
    # user functions are compiled as written.
    fast_exp = getattr(value, "__module__", "") == "autofit.numba.points"
    tag = f"{getattr(value, '__name__', 'model')}_{int(jac_method)}_{n_params}_" \
          f"{np.dtype(dtype).name}"
    return build_fit_one(inline(with_literals_of(value, dtype, fast_exp)),
                         inline(with_literals_of(gradient, dtype, fast_exp)),
                         jac_method, n_params, jit, inline, dtype, block=True,
                         tag="".join(c if c.isalnum() else "_" for c in tag),
                         share=("cpu", value))


# A chunk of fits, as source: compiled around a model's ``fit_one`` (with ``N_PARAMS`` and
# ``WORK_ROWS`` as globals of wherever it is compiled: here for user models, in a generated
# module that numba caches on disk for built-in ones). The fits of a chunk share one set of
# work arrays (no allocation per fit).
FIT_RANGE_SOURCE = """
def fit_range(first, last, x, ydata, weights, p0, lower, upper, free, estimator, tol,
              max_iter, params, chi2, n_iter, status, covariance):
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
            x[fit % x.shape[0]], ydata[fit], weights[fit % weights.shape[0]], p0[fit],
            lower[fit % lower.shape[0]], upper[fit % upper.shape[0]], free, estimator, tol,
            max_iter, params[fit], trial, step, g, h, trial_g, trial_h, scale_squared,
            system, jac, trial_jac, work_p, active, covariance[fit])
"""


def _argument_types(dtype):
    """The numba types of :func:`run_fits`'s data and result arguments for ``dtype``: the
    data and the bounds read only (mutable arrays convert to that), every array
    C-contiguous."""
    real = from_dtype(np.dtype(dtype))

    def data(element, ndim):
        return types.Array(element, ndim, "C", readonly=True)

    return (data(real, 3), data(real, 2), data(real, 2), data(real, 2), data(real, 2),
            data(real, 2), data(types.boolean, 1), types.int64, types.float64, types.int64,
            real[:, ::1], real[::1], types.int64[::1], types.int64[::1], real[:, :, ::1])


def fit_range_type(dtype=np.float64):
    """The numba type of a compiled ``fit_range(first, last, ...)`` for ``dtype``."""
    return types.FunctionType(types.void(types.int64, types.int64, *_argument_types(dtype)))


def run_fits(fit_range, x, ydata, weights, p0, lower, upper, free, estimator, tol, max_iter,
             params, chi2, n_iter, status, covariance):
    # Chunks of 16 fits: small chunks keep the two threads balanced when some fits take far
    # longer than others; one call per chunk, not per fit, through the function pointer.
    n_fits = p0.shape[0]
    chunk = 16
    n_chunks = (n_fits + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        fit_range(c * chunk, min(n_fits, (c + 1) * chunk), x, ydata, weights, p0, lower,
                  upper, free, estimator, tol, max_iter, params, chi2, n_iter, status,
                  covariance)


_driver_lock = threading.Lock()
_DRIVERS: dict = {}


def _driver(dtype):
    """:func:`run_fits` for ``dtype``, compiled once (and kept in numba's disk cache) for
    every model: it takes the model's ``fit_range`` as a first-class function, so that a new
    model compiles only that (the parallel loop cost 4 s more for each model, and compiled
    the model's code a second time)."""
    key = np.dtype(dtype)
    with _driver_lock:
        if key not in _DRIVERS:
            signature = (fit_range_type(key), *_argument_types(key))
            _DRIVERS[key] = numba.njit(signature, parallel=True, cache=True,
                                       error_model="numpy")(run_fits)
    return _DRIVERS[key]


def as_first_class(fit_range, dtype=np.float64):
    """A ``fit_range`` dispatcher as the first-class value :func:`run_fits` takes; compiles
    it for its one signature if that is not done yet."""
    from autofit.numba.first_class import CompiledFunction

    function_type = fit_range_type(dtype)
    if tuple(function_type.signature.args) not in fit_range.overloads:
        fit_range.compile(function_type.signature)
    return CompiledFunction(fit_range, function_type)


def kernel_around(fit_range, dtype=np.float64):
    """``run(x, ydata, weights, p0, lower, upper, free, estimator, tol, max_iter, params,
    chi2, n_iter, status, covariance)``: all fits by the compiled driver around
    ``fit_range`` (an :func:`as_first_class` value), results in place."""
    driver = _driver(dtype)

    def run(x, ydata, weights, p0, lower, upper, free, estimator, tol, max_iter, params,
            chi2, n_iter, status, covariance):
        real = p0.dtype
        driver(fit_range, *(np.ascontiguousarray(a, dtype=real)
                            for a in (x, ydata, weights, p0, lower, upper)),
               np.ascontiguousarray(free, dtype=np.bool_), int(estimator), float(tol),
               int(max_iter), params, chi2, n_iter, status, covariance)

    run.fit_range = fit_range  # what it runs (a disk-cached model's dispatcher: its stats)
    return run


def build_cpu_kernel(value, gradient, jac_method, n_params, dtype=np.float64):
    """``run(x, ydata, weights, p0, lower, upper, free, estimator, tol, max_iter, params,
    chi2, n_iter, status, covariance)``: all fits, in parallel chunks, results in place.

    ``fit_range`` is compiled in this process only (numba cannot cache a function built
    around a closure); :func:`cpu_kernel` uses the disk-cached form where it can.
    """
    namespace = {"__name__": __name__, "np": np, "N_PARAMS": n_params,
                 "WORK_ROWS": work_rows(n_params),
                 "fit_one": cpu_fit_one(value, gradient, jac_method, n_params, dtype)}
    exec(compile(FIT_RANGE_SOURCE, f"<autofit CPU kernel {n_params}>", "exec"),  # noqa: S102
         namespace)
    fit_range = numba.njit(error_model="numpy")(namespace["fit_range"])
    return kernel_around(as_first_class(fit_range, dtype), dtype)


def _no_gradient(x, i, p, jac, col):
    return 0.0


