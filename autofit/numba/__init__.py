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

from autofit.numba.batch import lm_batch
from autofit.numba.covariance import covariance_from_information, covariance_from_jacobian
from autofit.numba.fused import lm_fused
from autofit.numba.jacobians import jacobian_central, jacobian_forward
from autofit.numba.lm import lm_solve, lm_step
from autofit.numba.models import (
    jacobian_cauchy_2d_elliptic,
    jacobian_damped_cosine,
    jacobian_double_exponential,
    jacobian_exponential_decay,
    jacobian_gaussian,
    jacobian_gaussian_2d,
    jacobian_gaussian_2d_elliptic,
    jacobian_gaussian_2d_rotated,
    jacobian_linear,
    jacobian_logistic,
    jacobian_lorentzian,
    jacobian_multi_lorentzian,
    jacobian_polynomial,
    jacobian_power_law,
    jacobian_pseudo_voigt,
    jacobian_sine,
    jacobian_stretched_exponential,
    model_cauchy_2d_elliptic,
    model_damped_cosine,
    model_double_exponential,
    model_exponential_decay,
    model_gaussian,
    model_gaussian_2d,
    model_gaussian_2d_elliptic,
    model_gaussian_2d_rotated,
    model_linear,
    model_logistic,
    model_lorentzian,
    model_multi_lorentzian,
    model_polynomial,
    model_power_law,
    model_pseudo_voigt,
    model_sine,
    model_stretched_exponential,
)

__all__ = [
    "covariance_from_information",
    "covariance_from_jacobian",
    "jacobian_cauchy_2d_elliptic",
    "jacobian_central",
    "jacobian_damped_cosine",
    "jacobian_double_exponential",
    "jacobian_exponential_decay",
    "jacobian_forward",
    "jacobian_gaussian",
    "jacobian_gaussian_2d",
    "jacobian_gaussian_2d_elliptic",
    "jacobian_gaussian_2d_rotated",
    "jacobian_linear",
    "jacobian_logistic",
    "jacobian_lorentzian",
    "jacobian_multi_lorentzian",
    "jacobian_polynomial",
    "jacobian_power_law",
    "jacobian_pseudo_voigt",
    "jacobian_sine",
    "jacobian_stretched_exponential",
    "lm_batch",
    "lm_fused",
    "lm_solve",
    "lm_step",
    "model_cauchy_2d_elliptic",
    "model_damped_cosine",
    "model_double_exponential",
    "model_exponential_decay",
    "model_gaussian",
    "model_gaussian_2d",
    "model_gaussian_2d_elliptic",
    "model_gaussian_2d_rotated",
    "model_linear",
    "model_logistic",
    "model_lorentzian",
    "model_multi_lorentzian",
    "model_polynomial",
    "model_power_law",
    "model_pseudo_voigt",
    "model_sine",
    "model_stretched_exponential",
]
