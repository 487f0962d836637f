"""numba's CPU batch kernel: all fits in parallel chunks (``prange``), each chunk with one
set of work arrays reused fit after fit, around the per-fit solver of
:mod:`autofit.numba.fit_one`. The loop over the fits (:func:`run_fits`) is compiled once
per working dtype into numba's disk cache and takes a model's ``fit_one`` as a first-class
function; ``fit_one`` is compiled either here, in this process (:func:`build_cpu_kernel`),
or from a generated module that numba caches on disk (:mod:`autofit.numba.kernel_cache`).
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from autofit.numba.fit_one import build_fit_one
from autofit.numba.passes import FASTMATH, with_literals_of, work_rows


def cpu_fit_one(value, gradient, jac_method, n_params, dtype=np.float64):
    """:func:`build_fit_one` for the CPU kernel (compiled lazily, at the kernel's first call)."""
    import numba

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
                         tag="".join(c if c.isalnum() else "_" for c in tag))


def fit_one_type(dtype=np.float64):
    """The numba type of a compiled ``fit_one`` for the working ``dtype`` (its arguments as
    :func:`run_fits` passes them: every array C-contiguous)."""
    from numba import from_dtype, types

    real = from_dtype(np.dtype(dtype))
    vector, matrix = real[::1], real[:, ::1]
    # The data and the bounds are only read (the caller's may be read-only arrays).
    data_vector, data_matrix, data_flags = (types.Array(t, n, "C", readonly=True) for t, n
                                            in ((real, 1), (real, 2), (types.boolean, 1)))
    return types.FunctionType(types.Tuple((real, types.int64, types.int64))(
        data_matrix, data_vector, data_vector, data_vector, data_vector, data_vector,
        data_flags, types.int64, types.float64, types.int64, vector, vector, vector, vector,
        matrix, vector, matrix, vector, matrix, matrix, matrix, vector, types.boolean[::1],
        matrix))


def run_fits(fit_one, work_rows, x, ydata, weights, p0, lower, upper, free, estimator, tol,
             max_iter, params, chi2, n_iter, status, covariance):
    # Chunks of fits share one set of work arrays (no allocation per fit); small chunks
    # keep the two threads balanced when some fits take far longer than others.
    n_fits, n_params = p0.shape
    chunk = 16
    n_chunks = (n_fits + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        trial = np.empty(n_params, p0.dtype)
        step = np.empty(n_params, p0.dtype)
        g = np.empty(n_params, p0.dtype)
        trial_g = np.empty(n_params, p0.dtype)
        scale_squared = np.empty(n_params, p0.dtype)
        work_p = np.empty(n_params, p0.dtype)
        h = np.empty((n_params, n_params), p0.dtype)
        trial_h = np.empty((n_params, n_params), p0.dtype)
        system = np.empty((n_params, n_params), p0.dtype)
        jac = np.empty((work_rows, ydata.shape[1]), p0.dtype)
        trial_jac = np.empty((work_rows, ydata.shape[1]), p0.dtype)
        active = np.empty(n_params, dtype=np.bool_)
        for fit in range(c * chunk, min(n_fits, (c + 1) * chunk)):
            chi2[fit], n_iter[fit], status[fit] = fit_one(
                x[fit % x.shape[0]], ydata[fit], weights[fit % weights.shape[0]],
                p0[fit], lower[fit % lower.shape[0]], upper[fit % upper.shape[0]], free,
                estimator, tol, max_iter, params[fit], trial, step, g, h, trial_g,
                trial_h, scale_squared, system, jac, trial_jac, work_p, active, covariance[fit])


_driver_lock = threading.Lock()
_DRIVERS: dict = {}


def _driver(dtype):
    """:func:`run_fits` for ``dtype``, compiled once (and kept in numba's disk cache) for
    every model: it takes the model's ``fit_one`` as a first-class function, so that a new
    model compiles only its ``fit_one`` (the parallel loop around it cost 4 s more for each
    model, and compiled the model's code a second time)."""
    key = np.dtype(dtype)
    with _driver_lock:
        if key not in _DRIVERS:
            from numba import from_dtype, types

            real = from_dtype(key)

            def data(dtype, ndim):  # read only (mutable arrays convert to it)
                return types.Array(dtype, ndim, "C", readonly=True)

            signature = (fit_one_type(key), types.int64, data(real, 3), data(real, 2),
                         data(real, 2), data(real, 2), data(real, 2), data(real, 2),
                         data(types.boolean, 1), types.int64, types.float64, types.int64,
                         real[:, ::1], real[::1], types.int64[::1], types.int64[::1],
                         real[:, :, ::1])
            _DRIVERS[key] = numba.njit(signature, parallel=True, cache=True,
                                       error_model="numpy")(run_fits)
    return _DRIVERS[key]


def as_first_class(fit_one, dtype=np.float64):
    """A compiled ``fit_one`` (a dispatcher) as the first-class value :func:`run_fits`
    takes; compiles it for its one signature if that is not done yet."""
    from autofit.numba.first_class import CompiledFunction

    function_type = fit_one_type(dtype)
    if tuple(function_type.signature.args) not in fit_one.overloads:
        fit_one.compile(function_type.signature)
    return CompiledFunction(fit_one, function_type)


def kernel_around(fit_one, n_params, dtype=np.float64):
    """``run(x, ydata, weights, p0, lower, upper, free, estimator, tol, max_iter, params,
    chi2, n_iter, status, covariance)``: all fits by the compiled driver around
    ``fit_one`` (a :func:`as_first_class` value), results in place."""
    driver = _driver(dtype)
    rows = work_rows(n_params)

    def run(x, ydata, weights, p0, lower, upper, free, estimator, tol, max_iter, params,
            chi2, n_iter, status, covariance):
        real = p0.dtype
        driver(fit_one, rows, *(np.ascontiguousarray(a, dtype=real)
                                for a in (x, ydata, weights, p0, lower, upper)),
               np.ascontiguousarray(free, dtype=np.bool_), int(estimator), float(tol),
               int(max_iter), params, chi2, n_iter, status, covariance)

    run.fit_one = fit_one  # what it runs (a disk-cached model's dispatcher: its cache stats)
    return run


def build_cpu_kernel(value, gradient, jac_method, n_params, dtype=np.float64):
    """``run(x, ydata, weights, p0, lower, upper, free, estimator, tol, max_iter, params,
    chi2, n_iter, status, covariance)``: all fits, in parallel chunks, results in place.

    ``fit_one`` is compiled in this process only (numba cannot cache a function built around
    a closure); :func:`cpu_kernel` uses the disk-cached form where it can.
    """
    fit_one = cpu_fit_one(value, gradient, jac_method, n_params, dtype)
    return kernel_around(as_first_class(fit_one, dtype), n_params, dtype)


def _no_gradient(x, i, p, jac, col):
    return 0.0


