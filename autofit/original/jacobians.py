"""Finite-difference Jacobians (NumPy reference)."""

import numpy as np

from autofit._declarations import implements

_FORWARD_STEP = np.sqrt(np.finfo(np.float64).eps)
_CENTRAL_STEP = np.finfo(np.float64).eps ** (1.0 / 3.0)


def _relative_step(value, relative):
    # A step relative to the parameter (as MINPACK's lmdif), not max(1, |p|): NIST-style
    # parameters of size 1e-4 would otherwise get steps of 100% of their value.
    h = relative * abs(value)
    if h == 0.0:
        h = relative
    return h


@implements("jacobian_forward")
def jacobian_forward(model, x, params, f0, lower, upper):
    n_params = params.shape[0]
    jac = np.empty((f0.shape[0], n_params))
    shifted = params.copy()
    for j in range(n_params):
        h = _relative_step(params[j], _FORWARD_STEP)
        if params[j] + h > upper[j]:
            h = -h
        shifted[j] = params[j] + h
        h = shifted[j] - params[j]  # the step actually taken, exactly representable
        jac[:, j] = (model(x, shifted) - f0) / h
        shifted[j] = params[j]
    return jac


@implements("jacobian_central")
def jacobian_central(model, x, params, lower, upper):
    n_params = params.shape[0]
    shifted = params.copy()
    f0 = model(x, params)
    jac = np.empty((f0.shape[0], n_params))
    for j in range(n_params):
        h = _relative_step(params[j], _CENTRAL_STEP)
        if params[j] - h >= lower[j] and params[j] + h <= upper[j]:
            shifted[j] = params[j] + h
            f_up = model(x, shifted)
            shifted[j] = params[j] - h
            f_down = model(x, shifted)
            jac[:, j] = (f_up - f_down) / (2.0 * h)
        else:
            # At a bound: the second-order one-sided rule on the feasible side.
            if params[j] + 2.0 * h > upper[j]:
                h = -h
            shifted[j] = params[j] + h
            f_1 = model(x, shifted)
            shifted[j] = params[j] + 2.0 * h
            f_2 = model(x, shifted)
            jac[:, j] = (4.0 * f_1 - 3.0 * f0 - f_2) / (2.0 * h)
        shifted[j] = params[j]
    return jac
