"""Every built-in model as scalar functions of one point: the one numba source of each model.

These are plain Python functions, compiled by their callers: :mod:`autofit.numba.models`
wraps them with ``numba.njit`` and loops over the points; a CUDA engine can compile the very
same functions with ``numba.cuda.jit(device=True)``. So each is self-contained: arithmetic,
``math.exp/log/sqrt/cos/sin/pow`` and array indexing only, no NumPy, no allocation, no call
to another function of this module. The arithmetic follows :mod:`autofit.original.models`
operation for operation, so the results agree with the NumPy reference bit for bit (only
the transcendental functions may round differently in another library).

For every model ``<name>``, with ``x`` always ``(n_variables, n_points)`` (a 1-D model reads
``x[0, i]``; a 2-D model ``x[0, i]`` and ``x[1, i]``) and ``p`` the ``(n_params,)`` parameters:

- ``value_<name>(x, i, p) -> float``: the model at point i.
- ``gradient_<name>(x, i, p, jac, col) -> float``: the model at point i (the same value as
  ``value_<name>``, bit for bit), after writing ``jac[j, col] = d model / d p[j]`` for every
  parameter j. ``jac`` is 2-D: ``(n_params, n_points)`` with ``col = i``, the transpose of a
  Jacobian, or ``(n_params, 1)`` with ``col = 0``, a per-thread scratch column.

``POINT_FUNCTIONS`` maps each model name to ``(value_<name>, gradient_<name>)``, and
``N_VARIABLES`` to the number of rows of its ``x``.
"""

import math

from autofit._declarations import MODELS

# Written out so that the functions need nothing but ``math`` (equal to np.log(2.0) and
# 2.0 * np.pi, the constants of the NumPy reference).
LN2 = 0.6931471805599453
TWO_PI = 6.283185307179586


def value_linear(x, i, p):
    return p[0] * x[0, i] + p[1]


def gradient_linear(x, i, p, jac, col):
    jac[0, col] = x[0, i]
    jac[1, col] = 1.0
    return p[0] * x[0, i] + p[1]


def value_polynomial(x, i, p):
    # Horner's rule; the degree is len(p) - 1.
    xi = x[0, i]
    n_params = len(p)
    y = p[n_params - 1]
    for j in range(n_params - 2, -1, -1):
        y = y * xi + p[j]
    return y


def gradient_polynomial(x, i, p, jac, col):
    xi = x[0, i]
    n_params = len(p)
    power = 1.0
    for j in range(n_params):
        jac[j, col] = power
        power = power * xi
    y = p[n_params - 1]
    for j in range(n_params - 2, -1, -1):
        y = y * xi + p[j]
    return y


def value_exponential_decay(x, i, p):
    return p[0] * math.exp(-p[1] * x[0, i]) + p[2]


def gradient_exponential_decay(x, i, p, jac, col):
    xi = x[0, i]
    decay = math.exp(-p[1] * xi)
    jac[0, col] = decay
    jac[1, col] = -p[0] * xi * decay
    jac[2, col] = 1.0
    return p[0] * decay + p[2]


def value_gaussian(x, i, p):
    u = (x[0, i] - p[1]) / p[2]
    return p[0] * math.exp(-0.5 * u * u) + p[3]


def gradient_gaussian(x, i, p, jac, col):
    u = (x[0, i] - p[1]) / p[2]
    peak = math.exp(-0.5 * u * u)
    d_center = p[0] * peak * u / p[2]
    jac[0, col] = peak
    jac[1, col] = d_center
    jac[2, col] = d_center * u
    jac[3, col] = 1.0
    return p[0] * peak + p[3]


def value_lorentzian(x, i, p):
    d = x[0, i] - p[1]
    g2 = p[2] * p[2]
    return p[0] * g2 / (d * d + g2) + p[3]


def gradient_lorentzian(x, i, p, jac, col):
    d = x[0, i] - p[1]
    g2 = p[2] * p[2]
    inv = 1.0 / (d * d + g2)
    shape = g2 * inv
    jac[0, col] = shape
    jac[1, col] = 2.0 * p[0] * shape * d * inv
    jac[2, col] = 2.0 * p[0] * p[2] * d * d * inv * inv
    jac[3, col] = 1.0
    return p[0] * g2 / (d * d + g2) + p[3]


def value_double_exponential(x, i, p):
    xi = x[0, i]
    return p[0] * math.exp(-p[1] * xi) + p[2] * math.exp(-p[3] * xi) + p[4]


def gradient_double_exponential(x, i, p, jac, col):
    xi = x[0, i]
    decay1 = math.exp(-p[1] * xi)
    decay2 = math.exp(-p[3] * xi)
    jac[0, col] = decay1
    jac[1, col] = -p[0] * xi * decay1
    jac[2, col] = decay2
    jac[3, col] = -p[2] * xi * decay2
    jac[4, col] = 1.0
    return p[0] * decay1 + p[2] * decay2 + p[4]


def value_stretched_exponential(x, i, p):
    # At rate * x = 0 the stretched term is 0 for any beta (the value is amplitude + offset).
    s = p[1] * x[0, i]
    t = 0.0
    if s != 0.0:
        t = math.pow(s, p[2])
    return p[0] * math.exp(-t) + p[3]


def gradient_stretched_exponential(x, i, p, jac, col):
    xi = x[0, i]
    s = p[1] * xi
    t = 0.0
    if s != 0.0:
        t = math.pow(s, p[2])
    else:
        s = 1.0  # t = 0 makes both derivatives below 0; s = 1 keeps log(s) finite
    decay = math.exp(-t)
    d_t = -p[0] * decay * t
    jac[0, col] = decay
    jac[1, col] = d_t * p[2] * xi / s
    jac[2, col] = d_t * math.log(s)
    jac[3, col] = 1.0
    return p[0] * decay + p[3]


def value_pseudo_voigt(x, i, p):
    d = x[0, i] - p[1]
    g2 = p[2] * p[2]
    lorentz = g2 / (d * d + g2)
    gauss = math.exp(-LN2 * (d * d / g2))
    return p[0] * (p[3] * lorentz + (1.0 - p[3]) * gauss) + p[4]


def gradient_pseudo_voigt(x, i, p, jac, col):
    amplitude = p[0]
    hwhm = p[2]
    eta = p[3]
    d = x[0, i] - p[1]
    g2 = hwhm * hwhm
    denominator = d * d + g2
    inv = 1.0 / denominator
    lorentz = g2 / denominator
    u2 = d * d / g2
    gauss = math.exp(-LN2 * u2)
    gauss_weight = (1.0 - eta) * gauss * (2.0 * LN2)
    shape = eta * lorentz + (1.0 - eta) * gauss
    jac[0, col] = shape
    jac[1, col] = amplitude * (eta * 2.0 * lorentz * d * inv + gauss_weight * d / g2)
    jac[2, col] = amplitude * (eta * 2.0 * hwhm * d * d * inv * inv + gauss_weight * u2 / hwhm)
    jac[3, col] = amplitude * (lorentz - gauss)
    jac[4, col] = 1.0
    return amplitude * shape + p[4]


def value_multi_lorentzian(x, i, p):
    # p = amplitude_1, center_1, hwhm_1, ..., amplitude_n, center_n, hwhm_n, offset.
    xi = x[0, i]
    n_peaks = (len(p) - 1) // 3
    y = p[3 * n_peaks]
    for k in range(n_peaks):
        d = xi - p[3 * k + 1]
        g2 = p[3 * k + 2] * p[3 * k + 2]
        y = y + p[3 * k] * g2 / (d * d + g2)
    return y


def gradient_multi_lorentzian(x, i, p, jac, col):
    xi = x[0, i]
    n_peaks = (len(p) - 1) // 3
    y = p[3 * n_peaks]
    for k in range(n_peaks):
        amplitude = p[3 * k]
        hwhm = p[3 * k + 2]
        d = xi - p[3 * k + 1]
        g2 = hwhm * hwhm
        inv = 1.0 / (d * d + g2)
        shape = g2 * inv
        jac[3 * k, col] = shape
        jac[3 * k + 1, col] = 2.0 * amplitude * shape * d * inv
        jac[3 * k + 2, col] = 2.0 * amplitude * hwhm * d * d * inv * inv
        y = y + amplitude * g2 / (d * d + g2)
    jac[3 * n_peaks, col] = 1.0
    return y


def value_damped_cosine(x, i, p):
    xi = x[0, i]
    return p[0] * math.exp(-p[1] * xi) * math.cos(TWO_PI * p[2] * xi + p[3]) + p[4]


def gradient_damped_cosine(x, i, p, jac, col):
    xi = x[0, i]
    decay = math.exp(-p[1] * xi)
    phase = TWO_PI * p[2] * xi + p[3]
    cos_phase = math.cos(phase)
    cosine = decay * cos_phase
    d_phase = -p[0] * decay * math.sin(phase)
    jac[0, col] = cosine
    jac[1, col] = -p[0] * xi * cosine
    jac[2, col] = d_phase * TWO_PI * xi
    jac[3, col] = d_phase
    jac[4, col] = 1.0
    return p[0] * decay * cos_phase + p[4]


def value_sine(x, i, p):
    return p[0] * math.sin(TWO_PI * p[1] * x[0, i] + p[2]) + p[3]


def gradient_sine(x, i, p, jac, col):
    xi = x[0, i]
    phase = TWO_PI * p[1] * xi + p[2]
    sin_phase = math.sin(phase)
    d_phase = p[0] * math.cos(phase)
    jac[0, col] = sin_phase
    jac[1, col] = d_phase * TWO_PI * xi
    jac[2, col] = d_phase
    jac[3, col] = 1.0
    return p[0] * sin_phase + p[3]


def value_logistic(x, i, p):
    # exp is only taken of -|z|, so s = 1 / (1 + exp(-z)) never overflows.
    z = (x[0, i] - p[1]) / p[2]
    if z >= 0.0:
        small = math.exp(-z)
        s = 1.0 / (1.0 + small)
    else:
        small = math.exp(z)
        s = small * (1.0 / (1.0 + small))
    return p[0] * s + p[3]


def gradient_logistic(x, i, p, jac, col):
    z = (x[0, i] - p[1]) / p[2]
    # s and rest = 1 - s, each with full relative precision.
    if z >= 0.0:
        small = math.exp(-z)
        s = 1.0 / (1.0 + small)
        rest = small * s
    else:
        small = math.exp(z)
        rest = 1.0 / (1.0 + small)
        s = small * rest
    d_center = -p[0] * s * rest / p[2]
    jac[0, col] = s
    jac[1, col] = d_center
    jac[2, col] = d_center * z
    jac[3, col] = 1.0
    return p[0] * s + p[3]


def value_power_law(x, i, p):
    return p[0] * math.pow(x[0, i], p[1]) + p[2]


def gradient_power_law(x, i, p, jac, col):
    xi = x[0, i]
    power = math.pow(xi, p[1])
    jac[0, col] = power
    jac[1, col] = p[0] * power * math.log(xi)
    jac[2, col] = 1.0
    return p[0] * power + p[2]


def value_gaussian_2d(x, i, p):
    u = (x[0, i] - p[1]) / p[3]
    v = (x[1, i] - p[2]) / p[3]
    return p[0] * math.exp(-0.5 * (u * u + v * v)) + p[4]


def gradient_gaussian_2d(x, i, p, jac, col):
    u = (x[0, i] - p[1]) / p[3]
    v = (x[1, i] - p[2]) / p[3]
    r2 = u * u + v * v
    peak = math.exp(-0.5 * r2)
    scaled = p[0] * peak / p[3]
    jac[0, col] = peak
    jac[1, col] = scaled * u
    jac[2, col] = scaled * v
    jac[3, col] = scaled * r2
    jac[4, col] = 1.0
    return p[0] * peak + p[4]


def value_gaussian_2d_elliptic(x, i, p):
    u = (x[0, i] - p[1]) / p[3]
    v = (x[1, i] - p[2]) / p[4]
    return p[0] * math.exp(-0.5 * (u * u + v * v)) + p[5]


def gradient_gaussian_2d_elliptic(x, i, p, jac, col):
    u = (x[0, i] - p[1]) / p[3]
    v = (x[1, i] - p[2]) / p[4]
    peak = math.exp(-0.5 * (u * u + v * v))
    d_x0 = p[0] * peak * u / p[3]
    d_y0 = p[0] * peak * v / p[4]
    jac[0, col] = peak
    jac[1, col] = d_x0
    jac[2, col] = d_y0
    jac[3, col] = d_x0 * u
    jac[4, col] = d_y0 * v
    jac[5, col] = 1.0
    return p[0] * peak + p[5]


def value_gaussian_2d_rotated(x, i, p):
    # u, v: coordinates along the ellipse's axes, in units of its widths.
    cos = math.cos(p[6])
    sin = math.sin(p[6])
    dx = x[0, i] - p[1]
    dy = x[1, i] - p[2]
    u = (dx * cos + dy * sin) / p[3]
    v = (dy * cos - dx * sin) / p[4]
    return p[0] * math.exp(-0.5 * (u * u + v * v)) + p[5]


def gradient_gaussian_2d_rotated(x, i, p, jac, col):
    cos = math.cos(p[6])
    sin = math.sin(p[6])
    dx = x[0, i] - p[1]
    dy = x[1, i] - p[2]
    u = (dx * cos + dy * sin) / p[3]
    v = (dy * cos - dx * sin) / p[4]
    peak = math.exp(-0.5 * (u * u + v * v))
    along_u = p[0] * peak * u / p[3]
    along_v = p[0] * peak * v / p[4]
    jac[0, col] = peak
    jac[1, col] = along_u * cos - along_v * sin
    jac[2, col] = along_u * sin + along_v * cos
    jac[3, col] = along_u * u
    jac[4, col] = along_v * v
    jac[5, col] = 1.0
    jac[6, col] = along_v * u * p[3] - along_u * v * p[4]
    return p[0] * peak + p[5]


def value_cauchy_2d_elliptic(x, i, p):
    u = (x[0, i] - p[1]) / p[3]
    v = (x[1, i] - p[2]) / p[4]
    return p[0] / ((1.0 + u * u) * (1.0 + v * v)) + p[5]


def gradient_cauchy_2d_elliptic(x, i, p, jac, col):
    u = (x[0, i] - p[1]) / p[3]
    v = (x[1, i] - p[2]) / p[4]
    inv_u = 1.0 / (1.0 + u * u)
    inv_v = 1.0 / (1.0 + v * v)
    shape = inv_u * inv_v
    d_x0 = 2.0 * p[0] * shape * inv_u * u / p[3]
    d_y0 = 2.0 * p[0] * shape * inv_v * v / p[4]
    jac[0, col] = shape
    jac[1, col] = d_x0
    jac[2, col] = d_y0
    jac[3, col] = d_x0 * u
    jac[4, col] = d_y0 * v
    jac[5, col] = 1.0
    return p[0] / ((1.0 + u * u) * (1.0 + v * v)) + p[5]


POINT_FUNCTIONS = {
    "linear": (value_linear, gradient_linear),
    "polynomial": (value_polynomial, gradient_polynomial),
    "exponential_decay": (value_exponential_decay, gradient_exponential_decay),
    "gaussian": (value_gaussian, gradient_gaussian),
    "lorentzian": (value_lorentzian, gradient_lorentzian),
    "double_exponential": (value_double_exponential, gradient_double_exponential),
    "stretched_exponential": (value_stretched_exponential, gradient_stretched_exponential),
    "pseudo_voigt": (value_pseudo_voigt, gradient_pseudo_voigt),
    "multi_lorentzian": (value_multi_lorentzian, gradient_multi_lorentzian),
    "damped_cosine": (value_damped_cosine, gradient_damped_cosine),
    "sine": (value_sine, gradient_sine),
    "logistic": (value_logistic, gradient_logistic),
    "power_law": (value_power_law, gradient_power_law),
    "gaussian_2d": (value_gaussian_2d, gradient_gaussian_2d),
    "gaussian_2d_elliptic": (value_gaussian_2d_elliptic, gradient_gaussian_2d_elliptic),
    "gaussian_2d_rotated": (value_gaussian_2d_rotated, gradient_gaussian_2d_rotated),
    "cauchy_2d_elliptic": (value_cauchy_2d_elliptic, gradient_cauchy_2d_elliptic),
}

N_VARIABLES = {name: MODELS[name].n_variables for name in POINT_FUNCTIONS}
