"""Turn a model function into the callables one backend's kernels take.

User models are written ``f(x, *params)`` (scipy's convention); kernels take
``model(x, params)`` with ``params`` an array. What that takes on each backend lives in the
backend's host module (``autofit/<backend>/host.py``, the same names on each):

- ``numpy``: a thin Python wrapper.
- ``numba``: the user function is compiled with ``numba.njit`` and wrapped by a generated
  jitted function that unpacks ``params``; if numba cannot compile it, the backend cannot run
  it (:class:`BackendCannotRun`) and the dispatcher falls back.
- ``jax``: the user function must be traceable. It is checked by tracing it once
  (``jax.eval_shape``); a NumPy-written model that cannot be traced runs translated to
  jax.numpy where that gives the NumPy model's values at p0, which the result's
  ``backend_reason`` says; else the dispatcher falls back, with a warning that says why.

Wrappers are cached per function so that jax's and numba's compiled code is reused across
calls (a new wrapper object would mean a new compilation).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from autofit import _codes
from autofit._dispatch import BackendCannotRun, host_of, load
from autofit.models import Model

_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_strong_cache: dict = {}  # for callables that cannot be weakly referenced


@dataclass(frozen=True)
class Prepared:
    """Everything ``lm_solve`` needs about the model on one backend.

    ``jac_method`` is used for the iterations; when ``polish_method`` is set, a second
    ``lm_solve`` from the first one's result uses it (finite differences: forward while far
    from the minimum, central for the last steps). ``covariance_method`` gives the Jacobian
    the covariance is computed from.
    """

    model: object
    jacobian: object
    jac_method: int
    polish_method: int | None
    covariance_method: int
    # How the backend runs the user's model when that is worth saying (jax's translation).
    note: str | None = None


class BatchEngine(NamedTuple):
    """What runs ``fit_batch``'s fits on one backend (its host's ``batch_engine``):
    ``solve`` with ``lm_batch``'s arguments, the model in the form ``solve`` takes, and
    how its engine gets the derivatives when that is worth saying (``note``)."""

    solve: object
    model: object
    jacobian: object
    jac_method: int
    note: str | None = None


def cached(f, key, build):
    """``build()``, once per function ``f`` and ``key`` (a wrapper rebuilt for every call
    would be compiled or traced again)."""
    try:
        per_function = _cache.setdefault(f, {})
    except TypeError:
        per_function = _strong_cache.setdefault(id(f), {"function": f})
    if key not in per_function:
        per_function[key] = build()
    return per_function[key]


def finite_difference_methods(jac):
    """(iteration, polish, covariance) Jacobian methods for a string or None ``jac``."""
    if jac is None:
        return _codes.JAC_FORWARD, _codes.JAC_CENTRAL, _codes.JAC_CENTRAL
    if jac == "2-point":
        return _codes.JAC_FORWARD, None, _codes.JAC_FORWARD
    return _codes.JAC_CENTRAL, None, _codes.JAC_CENTRAL


def prepare(backend: str, f, n_params: int, jac) -> Prepared:
    """Build the backend's callables for model ``f`` (its host module's adapters)."""
    kernels = load(backend)
    host = host_of(backend)
    if isinstance(f, Model):
        model = getattr(kernels, f"model_{f.name}")
    else:
        model = cached(f, (backend, n_params, "model"), lambda: host.array_model(f, n_params))
    if callable(jac):
        jacobian = cached(jac, (backend, n_params, "jacobian"),
                          lambda: host.array_model(jac, n_params))
        return Prepared(model, jacobian, _codes.JAC_ANALYTIC, None, _codes.JAC_ANALYTIC)
    if isinstance(f, Model) and jac is None:
        return Prepared(model, getattr(kernels, f"jacobian_{f.name}"), _codes.JAC_ANALYTIC,
                        None, _codes.JAC_ANALYTIC)
    if jac is None and host.JAC_WITHOUT_JACOBIAN is not None:
        method = host.JAC_WITHOUT_JACOBIAN
        return Prepared(model, host.no_jacobian(), method, None, method)
    iterate, polish, covariance = finite_difference_methods(jac)
    return Prepared(model, host.no_jacobian(), iterate, polish, covariance)


# What each checked model runs, by (jacobian, jac_method, x.ndim): the model itself, what
# its host runs instead, or the BackendCannotRun that says why neither can run. A model
# is checked once (at its first call's x and p0), as its exact derivatives are: a failed
# trace raised and filtered a jax traceback on every call (~3 ms of a 5 ms fit).
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_runs(backend: str, prepared: Prepared, x: np.ndarray, p0: np.ndarray,
               f=None, jac=None) -> Prepared:
    """Compile or trace the model once; BackendCannotRun with the reason if it fails.

    Returns what to run: ``prepared``, or what the backend's host runs instead for a user
    function ``f`` it cannot compile as it is (jax: the model translated to jax.numpy; its
    ``note`` says so).
    """
    key = (id(prepared.jacobian), prepared.jac_method, x.ndim,
           None if f is None or isinstance(f, Model) else (id(f), id(jac), _numbers_of(f)))
    try:
        done = _checked.setdefault(prepared.model, {})
    except TypeError:  # not weakly referenceable: check every time
        done = {}
    if key not in done:
        done[key] = _check(backend, prepared, x, p0, f, jac)
    found = done[key]
    if isinstance(found, BackendCannotRun):
        raise BackendCannotRun(str(found))
    return found


def _numbers_of(f) -> tuple:
    """The numbers among the globals and closure cells ``f`` names, as ``(name, value)``:
    a script may change one between fits, and jax's translation of ``f`` holds the values
    of its first call (its check against NumPy then fails, and says so)."""
    code = getattr(f, "__code__", None)
    if code is None:
        return ()
    cells = dict(zip(code.co_freevars, getattr(f, "__closure__", None) or (), strict=True))
    found = []
    for name in (*code.co_names, *code.co_freevars):
        try:
            value = (cells[name].cell_contents if name in cells
                     else getattr(f, "__globals__", {}).get(name))
        except ValueError:  # an empty cell
            continue
        if isinstance(value, (int, float, complex, np.number)):
            found.append((name, value))
    return tuple(found)


def _check(backend, prepared, x, p0, f, jac):
    host = host_of(backend)
    try:
        host.check_compiles(prepared, x, p0)
    except BackendCannotRun as exc:
        if f is None or isinstance(f, Model):
            return exc
        try:
            return host.run_instead(prepared, exc, x, p0, f, jac)
        except BackendCannotRun as reason:
            return reason
    return prepared


def unused_jacobian(x, params):
    """The Jacobian argument of ``lm_solve`` when ``jac_method`` does not call it."""
    raise NotImplementedError("no analytic Jacobian was given")


def first_line(exc: BaseException) -> str:
    """``"TypeName: the first line of the message"``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
