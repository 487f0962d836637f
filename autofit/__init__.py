"""autofit: fast, trustworthy curve fitting on NumPy, Numba and JAX.

The same Levenberg-Marquardt and Jacobian kernels live in ``autofit.original`` (NumPy
reference), ``autofit.numba`` and ``autofit.jax``; a small dispatcher picks the backend per
call (``backend=``), per block (``use_backend``), per process (``set_backend``), from the
``FFIT_BACKEND`` environment variable, or by a documented default.
"""

from autofit import _curve_fit, _dispatch, _memory, models
from autofit._codes import CONVERGED_CODES
from autofit._curve_fit import ImproperInputError, curve_fit
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
from autofit._fit import fit
from autofit._fit_batch import fit_batch
from autofit._results import BatchResult, FitResult, load_result
from autofit._status import Status
from autofit._version import __version__  # noqa: F401  (autofit.__version__)

_memory.tune_malloc()  # glibc's thresholds for the NumPy engine's arrays (autofit._memory)


def __getattr__(name):
    # OptimizeWarning subclasses scipy's: made at its first use, so that importing autofit
    # does not import scipy.optimize (autofit._curve_fit.optimize_warning).
    if name == "OptimizeWarning":
        return _curve_fit.optimize_warning()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def explain_backend(backend: str | None = None, model=None, x_ndim: int = 1) -> str:
    """Which backend a call would run on now, and which rule chose it.

    With ``model`` (a user's function, or a built-in model), for a ``curve_fit`` of that
    model: on the default rule a user's model that numba has not compiled yet runs on
    ``numpy`` until its calls have taken ``_dispatch.compile_after_s(road)``, then
    numba compiles it in the background (the quick start), and this says where it stands.
    """
    choice = choose(backend)
    if model is None or isinstance(model, models.Model):
        return choice.reason
    from autofit._validation import fixed_parameter_count

    n_params = fixed_parameter_count(model)
    if n_params is None:
        return choice.reason
    reason = choice.reason
    if choice.requested in _dispatch.POINT_FUNCTION_BACKENDS:
        reason += _derivatives_note(model, n_params, x_ndim)
    if (choice.source != _dispatch.DEFAULT_RULE
            or choice.requested not in _dispatch.QUICK_START_BACKENDS):
        return reason
    states = {_dispatch.quick_start_state(choice.requested, model, n_params, x_ndim,
                                          road=road) for road in _dispatch.QUICK_START_ROADS}
    state = next((s for s in ("done", "compiling", "answered") if s in states), None)
    if state == "done":
        return (reason + f"; this model was compiled for {choice.requested!r} in the "
                "background (if it could not be, the fallback table runs it, with a warning)")
    if state == "compiling":
        return (f"{reason}; quick start: this model is being compiled for "
                f"{choice.requested!r} (while a child process compiles it 'numpy' answers "
                "its calls; they wait while this process loads it, or compiles it itself)")
    return (f"{reason}; quick start: this model is not compiled yet for "
            f"{choice.requested!r}: 'numpy' answers its calls until they have taken "
            f"{_dispatch.QUICK_START_COMPILE_ELSEWHERE_AFTER_S:g} s where its derivatives "
            "are generated (then a child process compiles it, and 'numpy' answers until "
            f"it is loaded), else {_dispatch.compile_after_s():g} s (a robust fit's: "
            f"{_dispatch.compile_after_s('batch'):g} s), then {choice.requested!r} compiles "
            "it in the background (autofit.wait_for_compilation() compiles it at once)"
            + ("; 'numpy' has answered it" if state == "answered" else ""))


def _derivatives_note(model, n_params: int, x_ndim: int) -> str:
    """What numba's engines use for the derivatives of a user's model."""
    if x_ndim != 1:
        return ""
    from autofit import _forward_mode

    try:
        _forward_mode.generate_source(model, n_params, 1)
    except _forward_mode.Unsupported as exc:
        return f"; {_forward_mode.finite_difference_note(exc)}"
    return (f"; {_forward_mode.EXACT_NOTE}, once they match the model and finite "
            "differences at the first call's p0")


def wait_for_compilation(timeout: float | None = None) -> bool:
    """Compile now the user models the quick start has answered on the NumPy engine, and
    wait until every background compilation is ready (True when none is left compiling);
    afterwards calls of those models run on the compiled backend."""
    return _dispatch.wait_for_compilation(timeout)


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
    "wait_for_compilation",
]
