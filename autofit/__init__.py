"""autofit: fast, trustworthy curve fitting on NumPy, Numba and JAX.

The same Levenberg-Marquardt and Jacobian kernels live in ``autofit.original`` (NumPy
reference), ``autofit.numba`` and ``autofit.jax``; a small dispatcher picks the backend per
call (``backend=``), per block (``use_backend``), per process (``set_backend``), from the
``FFIT_BACKEND`` environment variable, or by a documented default.
"""

from autofit import models
from autofit._batch import BatchResult, fit_batch
from autofit._codes import CONVERGED_CODES
from autofit._curve_fit import ImproperInputError, OptimizeWarning, curve_fit
from autofit._declarations import KERNELS, MODELS
from autofit._dispatch import (
    BACKENDS,
    FALLBACK,
    KERNEL_FALLBACK,
    BackendChoice,
    BackendError,
    BackendFallbackWarning,
    choose,
    get_backend,
    kernel,
    set_backend,
    use_backend,
)
from autofit._fit import FitResult, fit
from autofit._io import load_result
from autofit._status import Status

__version__ = "0.1.0"


def explain_backend(backend: str | None = None) -> str:
    """Which backend a call would run on now, and which rule chose it."""
    return choose(backend).reason


__all__ = [
    "BACKENDS",
    "CONVERGED_CODES",
    "FALLBACK",
    "KERNELS",
    "KERNEL_FALLBACK",
    "MODELS",
    "BackendChoice",
    "BackendError",
    "BackendFallbackWarning",
    "BatchResult",
    "FitResult",
    "ImproperInputError",
    "OptimizeWarning",
    "Status",
    "curve_fit",
    "explain_backend",
    "fit",
    "fit_batch",
    "get_backend",
    "kernel",
    "load_result",
    "models",
    "set_backend",
    "use_backend",
]
