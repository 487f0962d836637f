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


@implements("model_double_exponential")
def model_double_exponential(x, params):
    return (params[0] * np.exp(-params[1] * x) + params[2] * np.exp(-params[3] * x)
            + params[4])


@implements("jacobian_double_exponential")
def jacobian_double_exponential(x, params):
    decay1 = np.exp(-params[1] * x)
    decay2 = np.exp(-params[3] * x)
    jac = np.empty((x.shape[0], 5))
    jac[:, 0] = decay1
    jac[:, 1] = -params[0] * x * decay1
    jac[:, 2] = decay2
    jac[:, 3] = -params[2] * x * decay2
    jac[:, 4] = 1.0
    return jac


def _stretch(x, params):
    """(rate * x)**beta, and rate * x with its zeros replaced by 1 (for the logarithm).

    Where rate * x is 0 the stretched term is defined as 0 (the model is amplitude + offset
    there, for any beta), so that x = 0 gives no 0**beta or log(0) in the Jacobian.
    """
    s = params[1] * x
    at_zero = s == 0.0
    safe = np.where(at_zero, 1.0, s)
    return np.where(at_zero, 0.0, safe ** params[2]), safe


@implements("model_stretched_exponential")
def model_stretched_exponential(x, params):
    t, _ = _stretch(x, params)
    return params[0] * np.exp(-t) + params[3]


@implements("jacobian_stretched_exponential")
def jacobian_stretched_exponential(x, params):
    t, safe = _stretch(x, params)
    decay = np.exp(-t)
    d_t = -params[0] * decay * t  # d model / d log(t)
    jac = np.empty((x.shape[0], 4))
    jac[:, 0] = decay
    jac[:, 1] = d_t * params[2] * x / safe  # x / (rate * x), not 1 / rate: finite at rate 0
    jac[:, 2] = d_t * np.log(safe)
    jac[:, 3] = 1.0
    return jac


_LN2 = float(np.log(2.0))


@implements("model_pseudo_voigt")
def model_pseudo_voigt(x, params):
    d = x - params[1]
    g2 = params[2] * params[2]
    lorentz = g2 / (d * d + g2)
    gauss = np.exp(-_LN2 * (d * d / g2))
    return params[0] * (params[3] * lorentz + (1.0 - params[3]) * gauss) + params[4]


@implements("jacobian_pseudo_voigt")
def jacobian_pseudo_voigt(x, params):
    amplitude, hwhm, eta = params[0], params[2], params[3]
    d = x - params[1]
    g2 = hwhm * hwhm
    denominator = d * d + g2
    inv = 1.0 / denominator
    lorentz = g2 / denominator
    u2 = d * d / g2
    gauss = np.exp(-_LN2 * u2)
    # (1 - eta) * d gauss / d center = gauss_weight * d / g2, and likewise for the hwhm.
    gauss_weight = (1.0 - eta) * gauss * (2.0 * _LN2)
    jac = np.empty((x.shape[0], 5))
    jac[:, 0] = eta * lorentz + (1.0 - eta) * gauss
    jac[:, 1] = amplitude * (eta * 2.0 * lorentz * d * inv + gauss_weight * d / g2)
    jac[:, 2] = amplitude * (eta * 2.0 * hwhm * d * d * inv * inv + gauss_weight * u2 / hwhm)
    jac[:, 3] = amplitude * (lorentz - gauss)
    jac[:, 4] = 1.0
    return jac


def _n_peaks(params):
    if params.shape[0] % 3 != 1:
        raise ValueError("multi_lorentzian takes 3 n_peaks + 1 parameters")
    return (params.shape[0] - 1) // 3


@implements("model_multi_lorentzian")
def model_multi_lorentzian(x, params):
    n_peaks = _n_peaks(params)
    y = np.full(x.shape[0], params[3 * n_peaks])
    for k in range(n_peaks):
        d = x - params[3 * k + 1]
        g2 = params[3 * k + 2] * params[3 * k + 2]
        y = y + params[3 * k] * g2 / (d * d + g2)
    return y


@implements("jacobian_multi_lorentzian")
def jacobian_multi_lorentzian(x, params):
    n_peaks = _n_peaks(params)
    jac = np.empty((x.shape[0], params.shape[0]))
    for k in range(n_peaks):
        amplitude = params[3 * k]
        hwhm = params[3 * k + 2]
        d = x - params[3 * k + 1]
        g2 = hwhm * hwhm
        inv = 1.0 / (d * d + g2)
        shape = g2 * inv
        jac[:, 3 * k] = shape
        jac[:, 3 * k + 1] = 2.0 * amplitude * shape * d * inv
        jac[:, 3 * k + 2] = 2.0 * amplitude * hwhm * d * d * inv * inv
    jac[:, 3 * n_peaks] = 1.0
    return jac


_TWO_PI = 2.0 * np.pi


@implements("model_damped_cosine")
def model_damped_cosine(x, params):
    return (params[0] * np.exp(-params[1] * x) * np.cos(_TWO_PI * params[2] * x + params[3])
            + params[4])


@implements("jacobian_damped_cosine")
def jacobian_damped_cosine(x, params):
    decay = np.exp(-params[1] * x)
    phase = _TWO_PI * params[2] * x + params[3]
    cosine = decay * np.cos(phase)
    d_phase = -params[0] * decay * np.sin(phase)
    jac = np.empty((x.shape[0], 5))
    jac[:, 0] = cosine
    jac[:, 1] = -params[0] * x * cosine
    jac[:, 2] = d_phase * _TWO_PI * x
    jac[:, 3] = d_phase
    jac[:, 4] = 1.0
    return jac


@implements("model_sine")
def model_sine(x, params):
    return params[0] * np.sin(_TWO_PI * params[1] * x + params[2]) + params[3]


@implements("jacobian_sine")
def jacobian_sine(x, params):
    phase = _TWO_PI * params[1] * x + params[2]
    d_phase = params[0] * np.cos(phase)
    jac = np.empty((x.shape[0], 4))
    jac[:, 0] = np.sin(phase)
    jac[:, 1] = d_phase * _TWO_PI * x
    jac[:, 2] = d_phase
    jac[:, 3] = 1.0
    return jac


def _logistic(x, params):
    """z = (x - center) / width, s = 1 / (1 + exp(-z)) and 1 - s, without overflow.

    exp is only taken of -|z|, so that both s and 1 - s keep full relative precision.
    """
    z = (x - params[1]) / params[2]
    small = np.exp(-np.abs(z))
    big = 1.0 / (1.0 + small)
    small = small * big
    rising = z >= 0.0
    return z, np.where(rising, big, small), np.where(rising, small, big)


@implements("model_logistic")
def model_logistic(x, params):
    _, s, _ = _logistic(x, params)
    return params[0] * s + params[3]


@implements("jacobian_logistic")
def jacobian_logistic(x, params):
    z, s, rest = _logistic(x, params)
    d_center = -params[0] * s * rest / params[2]
    jac = np.empty((x.shape[0], 4))
    jac[:, 0] = s
    jac[:, 1] = d_center
    jac[:, 2] = d_center * z
    jac[:, 3] = 1.0
    return jac


@implements("model_power_law")
def model_power_law(x, params):
    return params[0] * x ** params[1] + params[2]


@implements("jacobian_power_law")
def jacobian_power_law(x, params):
    power = x ** params[1]
    jac = np.empty((x.shape[0], 3))
    jac[:, 0] = power
    jac[:, 1] = params[0] * power * np.log(x)
    jac[:, 2] = 1.0
    return jac


@implements("model_gaussian_2d")
def model_gaussian_2d(x, params):
    u = (x[0] - params[1]) / params[3]
    v = (x[1] - params[2]) / params[3]
    return params[0] * np.exp(-0.5 * (u * u + v * v)) + params[4]


@implements("jacobian_gaussian_2d")
def jacobian_gaussian_2d(x, params):
    u = (x[0] - params[1]) / params[3]
    v = (x[1] - params[2]) / params[3]
    r2 = u * u + v * v
    peak = np.exp(-0.5 * r2)
    scaled = params[0] * peak / params[3]
    jac = np.empty((x.shape[1], 5))
    jac[:, 0] = peak
    jac[:, 1] = scaled * u
    jac[:, 2] = scaled * v
    jac[:, 3] = scaled * r2
    jac[:, 4] = 1.0
    return jac


@implements("model_gaussian_2d_elliptic")
def model_gaussian_2d_elliptic(x, params):
    u = (x[0] - params[1]) / params[3]
    v = (x[1] - params[2]) / params[4]
    return params[0] * np.exp(-0.5 * (u * u + v * v)) + params[5]


@implements("jacobian_gaussian_2d_elliptic")
def jacobian_gaussian_2d_elliptic(x, params):
    u = (x[0] - params[1]) / params[3]
    v = (x[1] - params[2]) / params[4]
    peak = np.exp(-0.5 * (u * u + v * v))
    d_x0 = params[0] * peak * u / params[3]
    d_y0 = params[0] * peak * v / params[4]
    jac = np.empty((x.shape[1], 6))
    jac[:, 0] = peak
    jac[:, 1] = d_x0
    jac[:, 2] = d_y0
    jac[:, 3] = d_x0 * u
    jac[:, 4] = d_y0 * v
    jac[:, 5] = 1.0
    return jac


def _rotated(x, params):
    """Coordinates along the ellipse's axes, in units of its widths: u, v, cos and sin."""
    cos, sin = np.cos(params[6]), np.sin(params[6])
    dx = x[0] - params[1]
    dy = x[1] - params[2]
    u = (dx * cos + dy * sin) / params[3]
    v = (dy * cos - dx * sin) / params[4]
    return u, v, cos, sin


@implements("model_gaussian_2d_rotated")
def model_gaussian_2d_rotated(x, params):
    u, v, _, _ = _rotated(x, params)
    return params[0] * np.exp(-0.5 * (u * u + v * v)) + params[5]


@implements("jacobian_gaussian_2d_rotated")
def jacobian_gaussian_2d_rotated(x, params):
    u, v, cos, sin = _rotated(x, params)
    peak = np.exp(-0.5 * (u * u + v * v))
    # Minus the derivatives of the model along the two axes.
    along_u = params[0] * peak * u / params[3]
    along_v = params[0] * peak * v / params[4]
    jac = np.empty((x.shape[1], 7))
    jac[:, 0] = peak
    jac[:, 1] = along_u * cos - along_v * sin
    jac[:, 2] = along_u * sin + along_v * cos
    jac[:, 3] = along_u * u
    jac[:, 4] = along_v * v
    jac[:, 5] = 1.0
    jac[:, 6] = along_v * u * params[3] - along_u * v * params[4]
    return jac


@implements("model_cauchy_2d_elliptic")
def model_cauchy_2d_elliptic(x, params):
    u = (x[0] - params[1]) / params[3]
    v = (x[1] - params[2]) / params[4]
    return params[0] / ((1.0 + u * u) * (1.0 + v * v)) + params[5]


@implements("jacobian_cauchy_2d_elliptic")
def jacobian_cauchy_2d_elliptic(x, params):
    u = (x[0] - params[1]) / params[3]
    v = (x[1] - params[2]) / params[4]
    inv_u = 1.0 / (1.0 + u * u)
    inv_v = 1.0 / (1.0 + v * v)
    shape = inv_u * inv_v
    d_x0 = 2.0 * params[0] * shape * inv_u * u / params[3]
    d_y0 = 2.0 * params[0] * shape * inv_v * v / params[4]
    jac = np.empty((x.shape[1], 6))
    jac[:, 0] = shape
    jac[:, 1] = d_x0
    jac[:, 2] = d_y0
    jac[:, 3] = d_x0 * u
    jac[:, 4] = d_y0 * v
    jac[:, 5] = 1.0
    return jac
