"""numba implementation of every autofit kernel.

Nothing is compiled at import: each kernel compiles on its first call for the types it is
given. The models, ``lm_step`` and ``covariance_from_jacobian`` keep their machine code in
numba's on-disk cache; the kernels that take a model function as an argument
(``jacobian_forward``, ``jacobian_central``, ``lm_solve``) compile once per model and
process, because numba cannot key its disk cache on a function argument.

Every kernel is compiled with ``error_model="numpy"``: a division by zero gives inf or nan,
as in the NumPy reference, instead of raising ``ZeroDivisionError`` (numba's default), so
that a fit that wanders into a singular model ends with status ``NONFINITE`` on both.
"""

from autofit.numba.covariance import covariance_from_jacobian
from autofit.numba.jacobians import jacobian_central, jacobian_forward
from autofit.numba.lm import lm_solve, lm_step
from autofit.numba.models import (
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
