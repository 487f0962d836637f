"""What the NumPy backend needs from a user's model, and what it runs on.

Every backend has a ``host`` module with the same names (:mod:`autofit.numba.host`,
:mod:`autofit.jax.host`); the user layer (``curve_fit``, ``fit_batch``, the CLI) calls them
through :func:`autofit._dispatch.host_of` and never branches on a backend's name:

- ``DEVICES``, :func:`device_name`, :func:`device_report`: where the backend runs;
- :func:`precision`: the context its kernels run in; :func:`padded_length`: the number of
  points a single fit is padded to;
- :func:`array_model`, :func:`no_jacobian`, ``JAC_WITHOUT_JACOBIAN``: a user's
  ``f(x, *params)`` as the ``model(x, params)`` its ``lm_solve`` takes;
- :func:`check_compiles`, :func:`run_instead`: whether it can run that model, and what runs
  a model it cannot;
- :func:`fused_model`, :func:`is_compile_error`: the model as its ``lm_fused`` takes it;
- :func:`batch_engine`, :func:`batch_call`, :func:`batch_rescue`, ``CHUNKS_RECOMPILE``:
  the engine that runs ``fit_batch``'s fits.

Here the model is called as it is; a batch of a user's model that broadcasts over fits
runs all fits in lockstep (:mod:`autofit.original.batch_broadcast`).
"""

from __future__ import annotations

import contextlib
import platform

import numpy as np

from autofit import _codes
from autofit._adapters import BatchEngine, prepare, unused_jacobian
from autofit.models import Model
from autofit.original.batch import lm_batch
from autofit.original.batch_broadcast import broadcasts, lm_batch_broadcast

DEVICES = ("cpu",)
# Without a Jacobian the model's derivatives are finite differences (None: no other way).
JAC_WITHOUT_JACOBIAN = None
# Whether a batch chunk of a new size costs a compilation (then chunks keep one size).
CHUNKS_RECOMPILE = False
# Whether a huge single fit starts from a fit to a strided subsample (autofit._fused):
# a pass over a subsample costs its share of a pass.
COARSE_START = True


def device_name(requested: str = "cpu") -> str:
    """The device the fits ran on."""
    return requested


def device_report() -> str:
    """One line for ``python -m autofit backends``."""
    return f"cpu ({platform.machine()})"


def precision(float64: bool = True):
    """The context the kernels run in (NumPy keeps each array's own dtype)."""
    return contextlib.nullcontext()


def padded_length(n_points: int) -> int:
    """The number of points a single fit's arrays are padded to (none here)."""
    return n_points


def array_model(f, n_params: int):
    """``model(x, params)`` calling the user's ``f(x, *params)``."""
    def model(x, params):
        return np.asarray(f(x, *params), dtype=np.float64)

    return model


def no_jacobian():
    """A placeholder for ``lm_solve``'s unused Jacobian argument."""
    return unused_jacobian


def check_compiles(prepared, x, p0) -> None:
    """Nothing to compile: NumPy runs any model that Python runs."""


def run_instead(prepared, error, x, p0, f, jac):
    """What runs a model :func:`check_compiles` refused: nothing here, the error stands."""
    raise error


def fused_model(f, jac, prepared, n_params: int, n_variables: int):
    """``(model, jacobian, jac_method, polish_method)`` as ``lm_fused`` takes them."""
    return (prepared.model, prepared.jacobian, prepared.jac_method,
            prepared.polish_method)


def is_compile_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the backend cannot compile the model (never, here)."""
    return False


def batch_engine(problem, device: str) -> BatchEngine:
    """The engine for ``fit_batch``'s ``problem``: all fits in lockstep for a user's
    one-variable float64 model that broadcasts over fits, else the reference (one fit
    after another)."""
    lockstep = _broadcast_engine(problem)
    if lockstep is not None:
        return lockstep
    prepared = prepare("numpy", problem.model, problem.n_params, problem.jac)
    return BatchEngine(lm_batch, prepared.model, prepared.jacobian, prepared.jac_method)


def batch_call(solve, args, dtype):
    """``solve(*args)``: one chunk of fits."""
    return solve(*args)


def batch_rescue(problem, device: str, error):
    """Another engine for a model the batch engine could not run: none here."""
    return None


def _broadcast_engine(problem):
    f = problem.model
    if (isinstance(f, Model) or problem.dtype != np.float64 or problem.x.shape[1] != 1
            or problem.jac not in (None, "2-point")):
        return None
    sample = problem.p0[:3].astype(np.float64)
    x = problem.x[:, 0, :]
    if not broadcasts(f, x[0] if x.shape[0] == 1 else x[:sample.shape[0]], sample):
        return None

    def solve(model, jacobian, jac_method, x, y, w, p0, lower, upper, free, estimator, tol,
              max_iter):
        return lm_batch_broadcast(f, x[:, 0, :], y, w, p0, lower, upper, free, estimator,
                                  tol, max_iter)

    return BatchEngine(solve, None, None, _codes.JAC_FORWARD)
