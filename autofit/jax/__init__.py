"""JAX implementation of every autofit kernel.

Every kernel is jit-compiled and computes in the default float type, so call it inside
``with jax.enable_x64(True):`` for float64 (the dispatcher does). Importing this package
does not change any global JAX configuration.
"""

from autofit.jax.covariance import covariance_from_jacobian
from autofit.jax.jacobians import jacobian_autodiff, jacobian_central, jacobian_forward
from autofit.jax.lm import lm_solve, lm_step
from autofit.jax.models import (
                                jacobian_exponential_decay,
                                jacobian_gaussian,
                                jacobian_linear,
                                jacobian_lorentzian,
                                jacobian_polynomial,
                                model_exponential_decay,
                                model_gaussian,
                                model_linear,
                                model_lorentzian,
                                model_polynomial,
)

__all__ = [
    "covariance_from_jacobian",
    "jacobian_autodiff",
    "jacobian_central",
    "jacobian_exponential_decay",
    "jacobian_forward",
    "jacobian_gaussian",
    "jacobian_linear",
    "jacobian_lorentzian",
    "jacobian_polynomial",
    "lm_solve",
    "lm_step",
    "model_exponential_decay",
    "model_gaussian",
    "model_linear",
    "model_lorentzian",
    "model_polynomial",
]
