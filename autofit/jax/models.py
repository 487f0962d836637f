"""Built-in models and their analytic Jacobians (JAX).

Each function is jit-compiled (the polynomial's degree follows from the static shape of
``params``) and computes in the dtype of its inputs: float64 inside
``with jax.enable_x64(True):``. The Jacobians are written out, not differentiated, and
follow :mod:`autofit.original.models` expression for expression.
"""

import jax.numpy as jnp

from autofit._declarations import implements
from autofit.jax.compiler import jit


def _as_float(a):
    # The default float type: float64 under jax.enable_x64, float32 otherwise.
    return jnp.asarray(a, dtype=float)


@implements("model_linear")
@jit
def model_linear(x, params):
    x, params = _as_float(x), _as_float(params)
    return params[0] * x + params[1]


@implements("jacobian_linear")
@jit
def jacobian_linear(x, params):
    x = _as_float(x)
    return jnp.stack([x, jnp.ones_like(x)], axis=1)


@implements("model_polynomial")
@jit
def model_polynomial(x, params):
    x, params = _as_float(x), _as_float(params)
    # Horner's rule, unrolled over the (static) number of coefficients.
    y = jnp.full(x.shape[0], params[params.shape[0] - 1], dtype=x.dtype)
    for j in range(params.shape[0] - 2, -1, -1):
        y = y * x + params[j]
    return y


@implements("jacobian_polynomial")
@jit
def jacobian_polynomial(x, params):
    x = _as_float(x)
    columns = []
    power = jnp.ones_like(x)
    for _ in range(params.shape[0]):
        columns.append(power)
        power = power * x
    return jnp.stack(columns, axis=1)


@implements("model_exponential_decay")
@jit
def model_exponential_decay(x, params):
    x, params = _as_float(x), _as_float(params)
    return params[0] * jnp.exp(-params[1] * x) + params[2]


@implements("jacobian_exponential_decay")
@jit
def jacobian_exponential_decay(x, params):
    x, params = _as_float(x), _as_float(params)
    decay = jnp.exp(-params[1] * x)
    return jnp.stack([decay, -params[0] * x * decay, jnp.ones_like(x)], axis=1)


@implements("model_gaussian")
@jit
def model_gaussian(x, params):
    x, params = _as_float(x), _as_float(params)
    u = (x - params[1]) / params[2]
    return params[0] * jnp.exp(-0.5 * u * u) + params[3]


@implements("jacobian_gaussian")
@jit
def jacobian_gaussian(x, params):
    x, params = _as_float(x), _as_float(params)
    u = (x - params[1]) / params[2]
    peak = jnp.exp(-0.5 * u * u)
    d_center = params[0] * peak * u / params[2]
    return jnp.stack([peak, d_center, d_center * u, jnp.ones_like(x)], axis=1)


@implements("model_lorentzian")
@jit
def model_lorentzian(x, params):
    x, params = _as_float(x), _as_float(params)
    d = x - params[1]
    g2 = params[2] * params[2]
    return params[0] * g2 / (d * d + g2) + params[3]


@implements("jacobian_lorentzian")
@jit
def jacobian_lorentzian(x, params):
    x, params = _as_float(x), _as_float(params)
    d = x - params[1]
    g2 = params[2] * params[2]
    inv = 1.0 / (d * d + g2)
    shape = g2 * inv
    return jnp.stack([
        shape,
        2.0 * params[0] * shape * d * inv,
        2.0 * params[0] * params[2] * d * d * inv * inv,
        jnp.ones_like(x),
    ], axis=1)


@implements("model_double_exponential")
@jit
def model_double_exponential(x, params):
    x, params = _as_float(x), _as_float(params)
    return (params[0] * jnp.exp(-params[1] * x) + params[2] * jnp.exp(-params[3] * x)
            + params[4])


@implements("jacobian_double_exponential")
@jit
def jacobian_double_exponential(x, params):
    x, params = _as_float(x), _as_float(params)
    decay1 = jnp.exp(-params[1] * x)
    decay2 = jnp.exp(-params[3] * x)
    return jnp.stack([decay1, -params[0] * x * decay1, decay2, -params[2] * x * decay2,
                      jnp.ones_like(x)], axis=1)


def _stretch(x, params):
    # (rate * x)**beta, 0 where rate * x = 0; and rate * x with its zeros replaced by 1.
    s = params[1] * x
    at_zero = s == 0.0
    safe = jnp.where(at_zero, 1.0, s)
    return jnp.where(at_zero, 0.0, safe ** params[2]), safe


@implements("model_stretched_exponential")
@jit
def model_stretched_exponential(x, params):
    x, params = _as_float(x), _as_float(params)
    t, _ = _stretch(x, params)
    return params[0] * jnp.exp(-t) + params[3]


@implements("jacobian_stretched_exponential")
@jit
def jacobian_stretched_exponential(x, params):
    x, params = _as_float(x), _as_float(params)
    t, safe = _stretch(x, params)
    decay = jnp.exp(-t)
    d_t = -params[0] * decay * t
    return jnp.stack([decay, d_t * params[2] * x / safe, d_t * jnp.log(safe),
                      jnp.ones_like(x)], axis=1)


_LN2 = 0.6931471805599453  # np.log(2.0)


@implements("model_pseudo_voigt")
@jit
def model_pseudo_voigt(x, params):
    x, params = _as_float(x), _as_float(params)
    d = x - params[1]
    g2 = params[2] * params[2]
    lorentz = g2 / (d * d + g2)
    gauss = jnp.exp(-_LN2 * (d * d / g2))
    return params[0] * (params[3] * lorentz + (1.0 - params[3]) * gauss) + params[4]


@implements("jacobian_pseudo_voigt")
@jit
def jacobian_pseudo_voigt(x, params):
    x, params = _as_float(x), _as_float(params)
    amplitude, hwhm, eta = params[0], params[2], params[3]
    d = x - params[1]
    g2 = hwhm * hwhm
    denominator = d * d + g2
    inv = 1.0 / denominator
    lorentz = g2 / denominator
    u2 = d * d / g2
    gauss = jnp.exp(-_LN2 * u2)
    gauss_weight = (1.0 - eta) * gauss * (2.0 * _LN2)
    return jnp.stack([
        eta * lorentz + (1.0 - eta) * gauss,
        amplitude * (eta * 2.0 * lorentz * d * inv + gauss_weight * d / g2),
        amplitude * (eta * 2.0 * hwhm * d * d * inv * inv + gauss_weight * u2 / hwhm),
        amplitude * (lorentz - gauss),
        jnp.ones_like(x),
    ], axis=1)


def _n_peaks(params):
    # The number of parameters is static under jit: a wrong one fails when tracing.
    if params.shape[0] % 3 != 1:
        raise ValueError("multi_lorentzian takes 3 n_peaks + 1 parameters")
    return (params.shape[0] - 1) // 3


@implements("model_multi_lorentzian")
@jit
def model_multi_lorentzian(x, params):
    x, params = _as_float(x), _as_float(params)
    n_peaks = _n_peaks(params)
    y = jnp.full(x.shape[0], params[3 * n_peaks], dtype=x.dtype)
    for k in range(n_peaks):
        d = x - params[3 * k + 1]
        g2 = params[3 * k + 2] * params[3 * k + 2]
        y = y + params[3 * k] * g2 / (d * d + g2)
    return y


@implements("jacobian_multi_lorentzian")
@jit
def jacobian_multi_lorentzian(x, params):
    x, params = _as_float(x), _as_float(params)
    n_peaks = _n_peaks(params)
    columns = []
    for k in range(n_peaks):
        amplitude = params[3 * k]
        hwhm = params[3 * k + 2]
        d = x - params[3 * k + 1]
        g2 = hwhm * hwhm
        inv = 1.0 / (d * d + g2)
        shape = g2 * inv
        columns += [shape, 2.0 * amplitude * shape * d * inv,
                    2.0 * amplitude * hwhm * d * d * inv * inv]
    columns.append(jnp.ones_like(x))
    return jnp.stack(columns, axis=1)


_TWO_PI = 6.283185307179586  # 2.0 * np.pi


@implements("model_damped_cosine")
@jit
def model_damped_cosine(x, params):
    x, params = _as_float(x), _as_float(params)
    return (params[0] * jnp.exp(-params[1] * x) * jnp.cos(_TWO_PI * params[2] * x + params[3])
            + params[4])


@implements("jacobian_damped_cosine")
@jit
def jacobian_damped_cosine(x, params):
    x, params = _as_float(x), _as_float(params)
    decay = jnp.exp(-params[1] * x)
    phase = _TWO_PI * params[2] * x + params[3]
    cosine = decay * jnp.cos(phase)
    d_phase = -params[0] * decay * jnp.sin(phase)
    return jnp.stack([cosine, -params[0] * x * cosine, d_phase * _TWO_PI * x, d_phase,
                      jnp.ones_like(x)], axis=1)


@implements("model_sine")
@jit
def model_sine(x, params):
    x, params = _as_float(x), _as_float(params)
    return params[0] * jnp.sin(_TWO_PI * params[1] * x + params[2]) + params[3]


@implements("jacobian_sine")
@jit
def jacobian_sine(x, params):
    x, params = _as_float(x), _as_float(params)
    phase = _TWO_PI * params[1] * x + params[2]
    d_phase = params[0] * jnp.cos(phase)
    return jnp.stack([jnp.sin(phase), d_phase * _TWO_PI * x, d_phase, jnp.ones_like(x)],
                     axis=1)


def _logistic(x, params):
    # z, s = 1 / (1 + exp(-z)) and 1 - s; exp only of -|z|, so nothing overflows.
    z = (x - params[1]) / params[2]
    small = jnp.exp(-jnp.abs(z))
    big = 1.0 / (1.0 + small)
    small = small * big
    rising = z >= 0.0
    return z, jnp.where(rising, big, small), jnp.where(rising, small, big)


@implements("model_logistic")
@jit
def model_logistic(x, params):
    x, params = _as_float(x), _as_float(params)
    _, s, _ = _logistic(x, params)
    return params[0] * s + params[3]


@implements("jacobian_logistic")
@jit
def jacobian_logistic(x, params):
    x, params = _as_float(x), _as_float(params)
    z, s, rest = _logistic(x, params)
    d_center = -params[0] * s * rest / params[2]
    return jnp.stack([s, d_center, d_center * z, jnp.ones_like(x)], axis=1)


@implements("model_power_law")
@jit
def model_power_law(x, params):
    x, params = _as_float(x), _as_float(params)
    return params[0] * x ** params[1] + params[2]


@implements("jacobian_power_law")
@jit
def jacobian_power_law(x, params):
    x, params = _as_float(x), _as_float(params)
    power = x ** params[1]
    return jnp.stack([power, params[0] * power * jnp.log(x), jnp.ones_like(x)], axis=1)


@implements("model_gaussian_2d")
@jit
def model_gaussian_2d(x, params):
    x, params = _as_float(x), _as_float(params)
    u = (x[0] - params[1]) / params[3]
    v = (x[1] - params[2]) / params[3]
    return params[0] * jnp.exp(-0.5 * (u * u + v * v)) + params[4]


@implements("jacobian_gaussian_2d")
@jit
def jacobian_gaussian_2d(x, params):
    x, params = _as_float(x), _as_float(params)
    u = (x[0] - params[1]) / params[3]
    v = (x[1] - params[2]) / params[3]
    r2 = u * u + v * v
    peak = jnp.exp(-0.5 * r2)
    scaled = params[0] * peak / params[3]
    return jnp.stack([peak, scaled * u, scaled * v, scaled * r2, jnp.ones_like(u)], axis=1)


@implements("model_gaussian_2d_elliptic")
@jit
def model_gaussian_2d_elliptic(x, params):
    x, params = _as_float(x), _as_float(params)
    u = (x[0] - params[1]) / params[3]
    v = (x[1] - params[2]) / params[4]
    return params[0] * jnp.exp(-0.5 * (u * u + v * v)) + params[5]


@implements("jacobian_gaussian_2d_elliptic")
@jit
def jacobian_gaussian_2d_elliptic(x, params):
    x, params = _as_float(x), _as_float(params)
    u = (x[0] - params[1]) / params[3]
    v = (x[1] - params[2]) / params[4]
    peak = jnp.exp(-0.5 * (u * u + v * v))
    d_x0 = params[0] * peak * u / params[3]
    d_y0 = params[0] * peak * v / params[4]
    return jnp.stack([peak, d_x0, d_y0, d_x0 * u, d_y0 * v, jnp.ones_like(u)], axis=1)


def _rotated(x, params):
    # Coordinates along the ellipse's axes, in units of its widths: u, v, cos and sin.
    cos, sin = jnp.cos(params[6]), jnp.sin(params[6])
    dx = x[0] - params[1]
    dy = x[1] - params[2]
    u = (dx * cos + dy * sin) / params[3]
    v = (dy * cos - dx * sin) / params[4]
    return u, v, cos, sin


@implements("model_gaussian_2d_rotated")
@jit
def model_gaussian_2d_rotated(x, params):
    x, params = _as_float(x), _as_float(params)
    u, v, _, _ = _rotated(x, params)
    return params[0] * jnp.exp(-0.5 * (u * u + v * v)) + params[5]


@implements("jacobian_gaussian_2d_rotated")
@jit
def jacobian_gaussian_2d_rotated(x, params):
    x, params = _as_float(x), _as_float(params)
    u, v, cos, sin = _rotated(x, params)
    peak = jnp.exp(-0.5 * (u * u + v * v))
    along_u = params[0] * peak * u / params[3]
    along_v = params[0] * peak * v / params[4]
    return jnp.stack([
        peak,
        along_u * cos - along_v * sin,
        along_u * sin + along_v * cos,
        along_u * u,
        along_v * v,
        jnp.ones_like(u),
        along_v * u * params[3] - along_u * v * params[4],
    ], axis=1)


@implements("model_cauchy_2d_elliptic")
@jit
def model_cauchy_2d_elliptic(x, params):
    x, params = _as_float(x), _as_float(params)
    u = (x[0] - params[1]) / params[3]
    v = (x[1] - params[2]) / params[4]
    return params[0] / ((1.0 + u * u) * (1.0 + v * v)) + params[5]


@implements("jacobian_cauchy_2d_elliptic")
@jit
def jacobian_cauchy_2d_elliptic(x, params):
    x, params = _as_float(x), _as_float(params)
    u = (x[0] - params[1]) / params[3]
    v = (x[1] - params[2]) / params[4]
    inv_u = 1.0 / (1.0 + u * u)
    inv_v = 1.0 / (1.0 + v * v)
    shape = inv_u * inv_v
    d_x0 = 2.0 * params[0] * shape * inv_u * u / params[3]
    d_y0 = 2.0 * params[0] * shape * inv_v * v / params[4]
    return jnp.stack([shape, d_x0, d_y0, d_x0 * u, d_y0 * v, jnp.ones_like(u)], axis=1)
