"""Finite-difference Jacobians (NumPy reference)."""

import numpy as np

from autofit._declarations import implements
from autofit._rules import CENTRAL_STEP, FORWARD_STEP, relative_step


def value_and_jacobian(model, jacobian, x, params):
    """``(f, J)`` at ``params`` for an analytic ``jacobian``: from one set of lines where it
    gives the model's value too (``jacobian.with_value``: a user's model's derivatives
    generated from its source, run on arrays by :mod:`autofit.original.host`), else the
    model's and the Jacobian's calls."""
    both = getattr(jacobian, "with_value", None)
    if both is not None:
        return both(x, params)
    return model(x, params), jacobian(x, params)


@implements("jacobian_forward")
def jacobian_forward(model, x, params, f0, lower, upper):
    n_params = params.shape[0]
    jac = np.empty((f0.shape[0], n_params))
    shifted = params.copy()
    for j in range(n_params):
        h = relative_step(params[j], FORWARD_STEP)
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
        h = relative_step(params[j], CENTRAL_STEP)
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
