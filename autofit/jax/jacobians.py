"""Finite-difference and automatic-differentiation Jacobians (JAX).

The finite-difference rules are those of :mod:`autofit.original.jacobians`, step for step;
the per-parameter branches become ``jnp.where`` and the shifted parameter vectors are
evaluated together with ``jax.vmap`` (one batched model evaluation of shape
``(n_params, n_points)``), so the model is evaluated exactly as often as in the original.
The ``*_columns`` helpers return the transposed Jacobian ``(n_params, n_points)``, the
layout ``lm_solve`` works in (its reductions over points are then contiguous).
``model`` is a static argument: a new model function compiles once, then repeated calls
with arrays of the same shapes reuse the compiled code.
"""

import jax
import jax.numpy as jnp

from autofit._declarations import implements
from autofit._rules import CENTRAL_STEP, FORWARD_STEP, relative_step_where
from autofit.jax.compiler import jit


def _as_float(a):
    # The default float type: float64 under jax.enable_x64, float32 otherwise.
    return jnp.asarray(a, dtype=float)


def _relative_step(params, relative):
    return relative_step_where(jnp, params, relative)


def _evaluate_shifted(model, x, params, shifted_values):
    """``model(x, p_j)`` for every j, p_j being params with entry j set to shifted_values[j].

    Returns an ``(n_params, n_points)`` array.
    """
    n_params = params.shape[0]
    on_diagonal = jnp.eye(n_params, dtype=bool)
    shifted = jnp.where(on_diagonal, shifted_values[None, :], params[None, :])
    return jax.vmap(lambda p: model(x, p))(shifted)


def forward_columns(model, x, params, f0, upper):
    """The forward-difference Jacobian, transposed: ``(n_params, n_points)``."""
    h = _relative_step(params, FORWARD_STEP)
    h = jnp.where(params + h > upper, -h, h)  # never step over the upper bound
    shifted = params + h
    h = shifted - params  # the step actually taken, exactly representable
    f_shifted = _evaluate_shifted(model, x, params, shifted)
    return (f_shifted - f0[None, :]) / h[:, None]


def central_columns(model, x, params, lower, upper):
    """The central-difference Jacobian, transposed: ``(n_params, n_points)``."""
    f0 = model(x, params)
    h = _relative_step(params, CENTRAL_STEP)
    central = (params - h >= lower) & (params + h <= upper)
    # At a bound: the second-order one-sided rule on the feasible side.
    h_side = jnp.where(params + 2.0 * h > upper, -h, h)
    first = jnp.where(central, params + h, params + h_side)
    second = jnp.where(central, params - h, params + 2.0 * h_side)
    f_1 = _evaluate_shifted(model, x, params, first)
    f_2 = _evaluate_shifted(model, x, params, second)
    central_diff = (f_1 - f_2) / (2.0 * h[:, None])
    one_sided = (4.0 * f_1 - 3.0 * f0[None, :] - f_2) / (2.0 * h_side[:, None])
    return jnp.where(central[:, None], central_diff, one_sided)


def autodiff_columns(model, x, params):
    """The forward-mode autodiff Jacobian, transposed: ``(n_params, n_points)``."""
    # One Jacobian-vector product per parameter (n_params is small): jacfwd's vmap of jvp.
    return jax.jacfwd(lambda p: model(x, p))(params).T


@implements("jacobian_forward")
@jit(static_argnames=("model",))
def jacobian_forward(model, x, params, f0, lower, upper):
    x, params, f0, upper = _as_float(x), _as_float(params), _as_float(f0), _as_float(upper)
    return forward_columns(model, x, params, f0, upper).T


@implements("jacobian_central")
@jit(static_argnames=("model",))
def jacobian_central(model, x, params, lower, upper):
    x, params = _as_float(x), _as_float(params)
    lower, upper = _as_float(lower), _as_float(upper)
    return central_columns(model, x, params, lower, upper).T


@implements("jacobian_autodiff")
@jit(static_argnames=("model",))
def jacobian_autodiff(model, x, params):
    x, params = _as_float(x), _as_float(params)
    return autodiff_columns(model, x, params).T
