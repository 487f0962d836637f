"""Batched Levenberg-Marquardt (numba): ``prange`` over fits on the CPU, one thread per fit
on a CUDA GPU (:mod:`autofit.numba.gpu`), from one per-fit solver.

The pieces, each in its own module:

- :mod:`autofit.numba.fit_one`: the per-fit LM (:func:`~autofit.numba.fit_one.build_fit_one`),
  written once for ``numba.njit`` and ``numba.cuda.jit(device=True)``;
- :mod:`autofit.numba.passes`: the generated passes over the points it runs;
- :mod:`autofit.numba.kernel`: the CPU kernel over all fits;
- :mod:`autofit.numba.kernel_cache`: the disk cache of built-in models' kernels;
- :mod:`autofit.numba.user_points`: a user's ``f(x, *params)`` as a point function.

The engines run models as point functions (:mod:`autofit.numba.points`): ``value(x, i, p)``
and ``gradient(x, i, p, jac, col)``. ``lm_batch`` takes a model as every backend's does,
``model(x, params)``: a built-in model's kernels run as their point functions
(:func:`autofit.numba.models.point_functions`), another compiled array model on the engine
for array models (:mod:`autofit.numba.array_batch`); point functions are taken as they are.
See ``experiments/batch_cpu/README.md`` for the measurements behind the CPU kernel's shape.
"""

from __future__ import annotations

import numpy as np

from autofit._codes import (
    JAC_ANALYTIC,
)
from autofit._declarations import implements, require_jac_method
from autofit.numba.array_batch import lm_batch_arrays
from autofit.numba.kernel import (
    _no_gradient,
    in_process_fit_range,
    in_process_passes,
    kernel_around,
)
from autofit.numba.kernel_cache import cached_fit_range, cached_passes
from autofit.numba.models import point_functions

_KERNELS: dict = {}
_SOLVERS: dict = {}


def cpu_kernel(value, gradient, jac_method, n_params, dtype=np.float64):
    """The compiled CPU kernel for these point functions (built once per process): the
    solver of ``n_params`` parameters, shared by every model and loaded from numba's disk
    cache when an earlier process compiled it, around the model's passes (for built-in
    models from the disk cache too)."""
    key = (value, gradient, jac_method, n_params, np.dtype(dtype))
    if key not in _KERNELS:
        size = (n_params, np.dtype(dtype))
        if size not in _SOLVERS:
            _SOLVERS[size] = (cached_fit_range(n_params, dtype)
                              or in_process_fit_range(n_params, dtype))
        passes = (cached_passes(value, gradient, jac_method, n_params, dtype)
                  or in_process_passes(value, gradient, jac_method, n_params, dtype))
        _KERNELS[key] = kernel_around(_SOLVERS[size], *passes, dtype)
    return _KERNELS[key]


@implements("lm_batch")
def lm_batch(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, free,
             estimator, tol, max_iter):
    require_jac_method("lm_batch", "numba", jac_method)
    functions = point_functions(model, jacobian if jac_method == JAC_ANALYTIC else None)
    if functions is None:  # a model compiled for whole arrays
        return lm_batch_arrays(model, jacobian, jac_method, x, ydata, weights, p0, lower,
                               upper, free, estimator, tol, max_iter)
    value, gradient = functions
    n_fits, n_params = p0.shape
    run = cpu_kernel(value, gradient if jac_method == JAC_ANALYTIC else _no_gradient,
                     jac_method, n_params, p0.dtype)
    params = np.empty((n_fits, n_params), dtype=p0.dtype)
    chi2 = np.empty(n_fits, dtype=p0.dtype)
    n_iter = np.empty(n_fits, dtype=np.int64)
    status = np.empty(n_fits, dtype=np.int64)
    covariance = np.empty((n_fits, n_params, n_params), dtype=p0.dtype)
    run(x, ydata, weights, p0, lower, upper, np.asarray(free, dtype=np.bool_), estimator,
        float(tol), int(max_iter), params, chi2, n_iter, status, covariance)
    return params, chi2, n_iter, status, covariance
