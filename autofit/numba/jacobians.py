"""Finite-difference Jacobians (numba).

``model`` is a jit-compiled function (a numba dispatcher) passed as a first-class argument;
numba specialises each kernel for the model it is given, so a kernel is compiled on first
use once per model (and per type of ``x``).
"""

import numpy as np
from numba import njit

from autofit._declarations import implements
from autofit._rules import CENTRAL_STEP, FORWARD_STEP, relative_step

# The rule of autofit._rules, compiled here.
_relative_step = njit(cache=True, error_model="numpy")(relative_step)


# No disk cache: its key holds the model's dispatcher, new in every process (numba #6264).
@implements("jacobian_forward")
@njit(cache=False, error_model="numpy")
def jacobian_forward(model, x, params, f0, lower, upper):
    n_params = params.shape[0]
    n_points = f0.shape[0]
    jac = np.empty((n_points, n_params))
    shifted = params.copy()
    for j in range(n_params):
        h = _relative_step(params[j], FORWARD_STEP)
        if params[j] + h > upper[j]:
            h = -h
        shifted[j] = params[j] + h
        h = shifted[j] - params[j]  # the step actually taken, exactly representable
        f = model(x, shifted)
        for i in range(n_points):
            jac[i, j] = (f[i] - f0[i]) / h
        shifted[j] = params[j]
    return jac


# No disk cache: its key holds the model's dispatcher, new in every process (numba #6264).
@implements("jacobian_central")
@njit(cache=False, error_model="numpy")
def jacobian_central(model, x, params, lower, upper):
    n_params = params.shape[0]
    shifted = params.copy()
    f0 = model(x, params)
    n_points = f0.shape[0]
    jac = np.empty((n_points, n_params))
    for j in range(n_params):
        h = _relative_step(params[j], CENTRAL_STEP)
        if params[j] - h >= lower[j] and params[j] + h <= upper[j]:
            shifted[j] = params[j] + h
            f_up = model(x, shifted)
            shifted[j] = params[j] - h
            f_down = model(x, shifted)
            for i in range(n_points):
                jac[i, j] = (f_up[i] - f_down[i]) / (2.0 * h)
        else:
            # At a bound: the second-order one-sided rule on the feasible side.
            if params[j] + 2.0 * h > upper[j]:
                h = -h
            shifted[j] = params[j] + h
            f_1 = model(x, shifted)
            shifted[j] = params[j] + 2.0 * h
            f_2 = model(x, shifted)
            for i in range(n_points):
                jac[i, j] = (4.0 * f_1[i] - 3.0 * f0[i] - f_2[i]) / (2.0 * h)
        shifted[j] = params[j]
    return jac
