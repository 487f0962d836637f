"""Built-in models and their analytic Jacobians (JAX).

Each function is jit-compiled (the polynomial's degree follows from the static shape of
``params``) and computes in the dtype of its inputs: float64 inside
``with jax.enable_x64(True):``. The Jacobians are written out, not differentiated, and
follow :mod:`autofit.original.models` expression for expression.
"""

import jax
import jax.numpy as jnp

from autofit._declarations import implements


def _as_float(a):
    # The default float type: float64 under jax.enable_x64, float32 otherwise.
    return jnp.asarray(a, dtype=float)


@implements("model_linear")
@jax.jit
def model_linear(x, params):
    x, params = _as_float(x), _as_float(params)
    return params[0] * x + params[1]


@implements("jacobian_linear")
@jax.jit
def jacobian_linear(x, params):
    x = _as_float(x)
    return jnp.stack([x, jnp.ones_like(x)], axis=1)


@implements("model_polynomial")
@jax.jit
def model_polynomial(x, params):
    x, params = _as_float(x), _as_float(params)
    # Horner's rule, unrolled over the (static) number of coefficients.
    y = jnp.full(x.shape[0], params[params.shape[0] - 1], dtype=x.dtype)
    for j in range(params.shape[0] - 2, -1, -1):
        y = y * x + params[j]
    return y


@implements("jacobian_polynomial")
@jax.jit
def jacobian_polynomial(x, params):
    x = _as_float(x)
    columns = []
    power = jnp.ones_like(x)
    for _ in range(params.shape[0]):
        columns.append(power)
        power = power * x
    return jnp.stack(columns, axis=1)


@implements("model_exponential_decay")
@jax.jit
def model_exponential_decay(x, params):
    x, params = _as_float(x), _as_float(params)
    return params[0] * jnp.exp(-params[1] * x) + params[2]


@implements("jacobian_exponential_decay")
@jax.jit
def jacobian_exponential_decay(x, params):
    x, params = _as_float(x), _as_float(params)
    decay = jnp.exp(-params[1] * x)
    return jnp.stack([decay, -params[0] * x * decay, jnp.ones_like(x)], axis=1)


@implements("model_gaussian")
@jax.jit
def model_gaussian(x, params):
    x, params = _as_float(x), _as_float(params)
    u = (x - params[1]) / params[2]
    return params[0] * jnp.exp(-0.5 * u * u) + params[3]


@implements("jacobian_gaussian")
@jax.jit
def jacobian_gaussian(x, params):
    x, params = _as_float(x), _as_float(params)
    u = (x - params[1]) / params[2]
    peak = jnp.exp(-0.5 * u * u)
    d_center = params[0] * peak * u / params[2]
    return jnp.stack([peak, d_center, d_center * u, jnp.ones_like(x)], axis=1)


@implements("model_lorentzian")
@jax.jit
def model_lorentzian(x, params):
    x, params = _as_float(x), _as_float(params)
    d = x - params[1]
    g2 = params[2] * params[2]
    return params[0] * g2 / (d * d + g2) + params[3]


@implements("jacobian_lorentzian")
@jax.jit
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
