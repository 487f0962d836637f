"""Built-in models and their analytic Jacobians (numba).

Each kernel is one explicit loop over the points: no temporaries, and each Jacobian fills
its (n_points, n_params) array in a single pass. The arithmetic is written in the same
order as the NumPy reference, so the results agree with it bit for bit (only ``exp`` could
round differently on another libm). No ``fastmath``: it would buy little here (``exp`` and
the division dominate) and would break that agreement.
"""

import numpy as np
from numba import njit

from autofit._declarations import implements


@implements("model_linear")
@njit(cache=True, error_model="numpy")
def model_linear(x, params):
    slope = params[0]
    intercept = params[1]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = slope * x[i] + intercept
    return y


@implements("jacobian_linear")
@njit(cache=True, error_model="numpy")
def jacobian_linear(x, params):
    jac = np.empty((x.shape[0], 2))
    for i in range(x.shape[0]):
        jac[i, 0] = x[i]
        jac[i, 1] = 1.0
    return jac


@implements("model_polynomial")
@njit(cache=True, error_model="numpy")
def model_polynomial(x, params):
    # Horner's rule: one multiply-add per coefficient and point.
    n_params = params.shape[0]
    if n_params == 0:
        raise IndexError("model_polynomial needs at least one coefficient")
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        xi = x[i]
        yi = params[n_params - 1]
        for j in range(n_params - 2, -1, -1):
            yi = yi * xi + params[j]
        y[i] = yi
    return y


@implements("jacobian_polynomial")
@njit(cache=True, error_model="numpy")
def jacobian_polynomial(x, params):
    n_params = params.shape[0]
    jac = np.empty((x.shape[0], n_params))
    for i in range(x.shape[0]):
        xi = x[i]
        power = 1.0
        for j in range(n_params):
            jac[i, j] = power
            power = power * xi
    return jac


@implements("model_exponential_decay")
@njit(cache=True, error_model="numpy")
def model_exponential_decay(x, params):
    amplitude = params[0]
    minus_rate = -params[1]
    offset = params[2]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = amplitude * np.exp(minus_rate * x[i]) + offset
    return y


@implements("jacobian_exponential_decay")
@njit(cache=True, error_model="numpy")
def jacobian_exponential_decay(x, params):
    minus_amplitude = -params[0]
    minus_rate = -params[1]
    jac = np.empty((x.shape[0], 3))
    for i in range(x.shape[0]):
        decay = np.exp(minus_rate * x[i])
        jac[i, 0] = decay
        jac[i, 1] = minus_amplitude * x[i] * decay
        jac[i, 2] = 1.0
    return jac


@implements("model_gaussian")
@njit(cache=True, error_model="numpy")
def model_gaussian(x, params):
    amplitude = params[0]
    center = params[1]
    width = params[2]
    offset = params[3]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        u = (x[i] - center) / width
        y[i] = amplitude * np.exp(-0.5 * u * u) + offset
    return y


@implements("jacobian_gaussian")
@njit(cache=True, error_model="numpy")
def jacobian_gaussian(x, params):
    amplitude = params[0]
    center = params[1]
    width = params[2]
    jac = np.empty((x.shape[0], 4))
    for i in range(x.shape[0]):
        u = (x[i] - center) / width
        peak = np.exp(-0.5 * u * u)
        d_center = amplitude * peak * u / width
        jac[i, 0] = peak
        jac[i, 1] = d_center
        jac[i, 2] = d_center * u
        jac[i, 3] = 1.0
    return jac


@implements("model_lorentzian")
@njit(cache=True, error_model="numpy")
def model_lorentzian(x, params):
    amplitude = params[0]
    center = params[1]
    g2 = params[2] * params[2]
    offset = params[3]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        d = x[i] - center
        y[i] = amplitude * g2 / (d * d + g2) + offset
    return y


@implements("jacobian_lorentzian")
@njit(cache=True, error_model="numpy")
def jacobian_lorentzian(x, params):
    amplitude = params[0]
    center = params[1]
    hwhm = params[2]
    g2 = hwhm * hwhm
    jac = np.empty((x.shape[0], 4))
    for i in range(x.shape[0]):
        d = x[i] - center
        inv = 1.0 / (d * d + g2)
        shape = g2 * inv
        jac[i, 0] = shape
        jac[i, 1] = 2.0 * amplitude * shape * d * inv
        jac[i, 2] = 2.0 * amplitude * hwhm * d * d * inv * inv
        jac[i, 3] = 1.0
    return jac
