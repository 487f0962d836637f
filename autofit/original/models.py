"""Built-in models and their analytic Jacobians (NumPy reference)."""

import numpy as np

from autofit._declarations import implements


@implements("model_linear")
def model_linear(x, params):
    return params[0] * x + params[1]


@implements("jacobian_linear")
def jacobian_linear(x, params):
    jac = np.empty((x.shape[0], 2))
    jac[:, 0] = x
    jac[:, 1] = 1.0
    return jac


@implements("model_polynomial")
def model_polynomial(x, params):
    # Horner's rule: one multiply-add per coefficient and point.
    y = np.full(x.shape[0], params[params.shape[0] - 1])
    for j in range(params.shape[0] - 2, -1, -1):
        y = y * x + params[j]
    return y


@implements("jacobian_polynomial")
def jacobian_polynomial(x, params):
    jac = np.empty((x.shape[0], params.shape[0]))
    power = np.ones(x.shape[0])
    for j in range(params.shape[0]):
        jac[:, j] = power
        power = power * x
    return jac


@implements("model_exponential_decay")
def model_exponential_decay(x, params):
    return params[0] * np.exp(-params[1] * x) + params[2]


@implements("jacobian_exponential_decay")
def jacobian_exponential_decay(x, params):
    decay = np.exp(-params[1] * x)
    jac = np.empty((x.shape[0], 3))
    jac[:, 0] = decay
    jac[:, 1] = -params[0] * x * decay
    jac[:, 2] = 1.0
    return jac


@implements("model_gaussian")
def model_gaussian(x, params):
    u = (x - params[1]) / params[2]
    return params[0] * np.exp(-0.5 * u * u) + params[3]


@implements("jacobian_gaussian")
def jacobian_gaussian(x, params):
    u = (x - params[1]) / params[2]
    peak = np.exp(-0.5 * u * u)
    d_center = params[0] * peak * u / params[2]
    jac = np.empty((x.shape[0], 4))
    jac[:, 0] = peak
    jac[:, 1] = d_center
    jac[:, 2] = d_center * u
    jac[:, 3] = 1.0
    return jac


@implements("model_lorentzian")
def model_lorentzian(x, params):
    d = x - params[1]
    g2 = params[2] * params[2]
    return params[0] * g2 / (d * d + g2) + params[3]


@implements("jacobian_lorentzian")
def jacobian_lorentzian(x, params):
    d = x - params[1]
    g2 = params[2] * params[2]
    inv = 1.0 / (d * d + g2)
    shape = g2 * inv
    jac = np.empty((x.shape[0], 4))
    jac[:, 0] = shape
    jac[:, 1] = 2.0 * params[0] * shape * d * inv
    jac[:, 2] = 2.0 * params[0] * params[2] * d * d * inv * inv
    jac[:, 3] = 1.0
    return jac
