"""NumPy reference implementation of every autofit kernel.

The other backends are checked against this one; it favours clarity over speed.
"""

from autofit.original.covariance import covariance_from_jacobian
from autofit.original.jacobians import jacobian_central, jacobian_forward
from autofit.original.lm import lm_solve, lm_step
from autofit.original.models import (
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
