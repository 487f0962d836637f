"""numba's CPU batch kernel: all fits in parallel chunks (``prange``), each chunk with one
set of work arrays reused fit after fit, around the per-fit solver of
:mod:`autofit.numba.fit_one`. Its source (``RUN_SOURCE``) is compiled either here, in this
process (:func:`build_cpu_kernel`), or from a generated module that numba caches on disk
(:mod:`autofit.numba.kernel_cache`).
"""

from __future__ import annotations

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


# The CPU kernel over all fits, as source: it is compiled either from a namespace (user
# models) or from a module file that numba can cache on disk (built-in models).
# ``fit_one`` and ``WORK_ROWS`` are globals of wherever it is compiled.
RUN_SOURCE = """
def run(x, ydata, weights, p0, lower, upper, free, estimator, tol, max_iter, params,
        chi2, n_iter, status, covariance):
    n_fits, n_params = p0.shape
    # Chunks of fits share one set of work arrays (no allocation per fit); small chunks
    # keep the two threads balanced when some fits take far longer than others.
    chunk = 16
    n_chunks = (n_fits + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        trial = np.empty(n_params)
        step = np.empty(n_params)
        g = np.empty(n_params)
        trial_g = np.empty(n_params)
        scale_squared = np.empty(n_params)
        work_p = np.empty(n_params)
        h = np.empty((n_params, n_params))
        trial_h = np.empty((n_params, n_params))
        system = np.empty((n_params, n_params))
        jac = np.empty((WORK_ROWS, ydata.shape[1]))
        trial_jac = np.empty((WORK_ROWS, ydata.shape[1]))
        active = np.empty(n_params, dtype=np.bool_)
        for fit in range(c * chunk, min(n_fits, (c + 1) * chunk)):
            chi2[fit], n_iter[fit], status[fit] = fit_one(
                x[fit % x.shape[0]], ydata[fit], weights[fit % weights.shape[0]],
                p0[fit], lower[fit % lower.shape[0]], upper[fit % upper.shape[0]], free,
                estimator, tol, max_iter, params[fit], trial, step, g, h, trial_g,
                trial_h, scale_squared, system, jac, trial_jac, work_p, active, covariance[fit])
"""
RUN_OPTIONS = {"parallel": True, "error_model": "numpy"}


def build_cpu_kernel(value, gradient, jac_method, n_params, dtype=np.float64):
    """``run(x, ydata, weights, p0, lower, upper, free, estimator, tol, max_iter, params,
    chi2, n_iter, status, covariance)``: all fits, in parallel chunks, results in place.

    Compiled in this process only (numba cannot cache a kernel built around a closure);
    :func:`cpu_kernel` uses the disk-cached form where it can.
    """
    import numba

    namespace = {"__name__": __name__, "np": np, "numba": numba,
                 "WORK_ROWS": work_rows(n_params),
                 "fit_one": cpu_fit_one(value, gradient, jac_method, n_params, dtype)}
    exec(compile(RUN_SOURCE, f"<autofit CPU kernel {n_params}>", "exec"),  # noqa: S102
         namespace)
    return numba.njit(**RUN_OPTIONS)(namespace["run"])


def _no_gradient(x, i, p, jac, col):
    return 0.0


