"""Turn a model function into the callables one backend's kernels take.

User models are written ``f(x, *params)`` (scipy's convention); kernels take
``model(x, params)`` with ``params`` an array. Per backend:

- ``numpy``: a thin Python wrapper.
- ``numba``: the user function is compiled with ``numba.njit`` and wrapped by a generated
  jitted function that unpacks ``params``; if numba cannot compile it, the backend cannot run
  it (:class:`BackendCannotRun`) and the dispatcher falls back.
- ``jax``: the user function must be traceable (written with ``jax.numpy``). It is checked by
  tracing it once (``jax.eval_shape``); a NumPy-written model cannot be traced and the
  dispatcher falls back to the next backend, with a warning that says so. autofit never
  rewrites a user's NumPy calls into jax.numpy behind their back.

Wrappers are cached per function so that jax's and numba's compiled code is reused across
calls (a new wrapper object would mean a new compilation).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from autofit import _codes
from autofit._dispatch import BackendCannotRun, load
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


def _cached(f, key, build):
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
    """Build the backend's callables for model ``f``; BackendCannotRun if it cannot."""
    kernels = load(backend)
    wrap = {"numpy": _numpy_wrapper, "numba": _numba_wrapper, "jax": _jax_wrapper}[backend]
    if isinstance(f, Model):
        model = getattr(kernels, f"model_{f.name}")
    else:
        model = _cached(f, (backend, n_params, "model"), lambda: wrap(f, n_params))
    if callable(jac):
        jacobian = _cached(jac, (backend, n_params, "jacobian"), lambda: wrap(jac, n_params))
        return Prepared(model, jacobian, _codes.JAC_ANALYTIC, None, _codes.JAC_ANALYTIC)
    if isinstance(f, Model) and jac is None:
        return Prepared(model, getattr(kernels, f"jacobian_{f.name}"), _codes.JAC_ANALYTIC,
                        None, _codes.JAC_ANALYTIC)
    no_jacobian = _no_jacobian(backend)
    if backend == "jax" and jac is None:
        return Prepared(model, no_jacobian, _codes.JAC_AUTODIFF, None, _codes.JAC_AUTODIFF)
    iterate, polish, covariance = finite_difference_methods(jac)
    return Prepared(model, no_jacobian, iterate, polish, covariance)


def _numpy_wrapper(f, n_params):
    def model(x, params):
        return np.asarray(f(x, *params), dtype=np.float64)

    return model


_NO_JACOBIAN: dict[str, object] = {}


def _no_jacobian(backend):
    """A placeholder Jacobian of the right kind for lm_solve's unused argument."""
    if backend not in _NO_JACOBIAN:
        def no_jacobian(x, params):
            raise NotImplementedError("no analytic Jacobian was given")

        if backend == "numba":
            import numba

            def no_jacobian(x, params):
                return np.zeros((x.shape[-1], params.shape[0]))

            no_jacobian = numba.njit(no_jacobian)
        _NO_JACOBIAN[backend] = no_jacobian
    return _NO_JACOBIAN[backend]


def _numba_wrapper(f, n_params):
    import numba
    from numba.core.registry import CPUDispatcher

    try:
        user = f if isinstance(f, CPUDispatcher) else numba.njit(f)
    except Exception as exc:  # numba refuses some callables outright (builtins, classes)
        raise BackendCannotRun(f"numba cannot compile {_name(f)}: {exc}") from exc
    # numba cannot call f(x, *params) with an array; generate the unpacking once per size.
    arguments = ", ".join(f"params[{i}]" for i in range(n_params))
    source = (f"def call_{n_params}(x, params):\n"
              f"    return np.asarray(user(x, {arguments}), dtype=np.float64)\n")
    namespace = {"np": np, "user": user}
    exec(source, namespace)  # noqa: S102 - generated from an integer only
    return numba.njit(namespace[f"call_{n_params}"])


def _jax_wrapper(f, n_params):
    import jax.numpy as jnp

    def model(x, params):
        return jnp.asarray(f(x, *(params[i] for i in range(n_params))), dtype=params.dtype)

    return model


# Models that compiled or traced: (model, jacobian, jac_method, x.ndim) need no new check.
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_runs(backend: str, prepared: Prepared, x: np.ndarray, p0: np.ndarray,
               f=None, jac=None) -> Prepared:
    """Compile or trace the model once; BackendCannotRun with the reason if it fails.

    Returns what to run: ``prepared``, or on jax, for a NumPy-written user function ``f``
    that cannot be traced, the model translated to jax.numpy (:mod:`autofit.jax.host`; its
    ``note`` says so).
    """
    key = (id(prepared.jacobian), prepared.jac_method, x.ndim)
    try:
        done = _checked.setdefault(prepared.model, set())
    except TypeError:  # not weakly referenceable: check every time
        done = set()
    if key in done:
        return prepared
    try:
        _check_runs(backend, prepared, x, p0)
    except BackendCannotRun as exc:
        if backend != "jax" or f is None or isinstance(f, Model):
            raise
        return _translated_for_jax(prepared, exc, x, p0, f, jac)
    done.add(key)
    return prepared


def _translated_for_jax(prepared, trace_error, x, p0, f, jac):
    from autofit.jax import host

    n_params = p0.shape[0]
    try:
        translated = _cached(f, ("jax", n_params, "translated"), lambda: host.translate(f))
        host.check_translation(f, translated, x, p0)
        model = _cached(f, ("jax", n_params, "translated model"),
                        lambda: _jax_wrapper(translated, n_params))
        jacobian = prepared.jacobian
        if callable(jac):
            translated_jac = _cached(jac, ("jax", n_params, "translated"),
                                     lambda: host.translate(jac))
            jacobian = _cached(jac, ("jax", n_params, "translated jacobian"),
                               lambda: _jax_wrapper(translated_jac, n_params))
        result = Prepared(model, jacobian, prepared.jac_method, prepared.polish_method,
                          prepared.covariance_method, note=host.TRANSLATION_NOTE)
        _check_runs("jax", result, x, p0)
    except BackendCannotRun as exc:
        raise BackendCannotRun(f"{trace_error}; {exc}") from exc
    return result


def _check_runs(backend, prepared, x, p0):
    if backend == "numba":
        from numba.core.errors import NumbaError

        try:
            prepared.model(x, p0)
            if prepared.jac_method == _codes.JAC_ANALYTIC:
                prepared.jacobian(x, p0)
        except NumbaError as exc:
            raise BackendCannotRun("numba cannot compile the model: "
                                   + _first_line(exc)) from exc
    elif backend == "jax":
        import jax

        trace_errors = (jax.errors.TracerArrayConversionError,
                        jax.errors.ConcretizationTypeError,
                        jax.errors.TracerBoolConversionError,
                        jax.errors.TracerIntegerConversionError, TypeError)
        try:
            with jax.enable_x64(True):
                jax.eval_shape(prepared.model, x, p0)
                if prepared.jac_method == _codes.JAC_ANALYTIC:
                    jax.eval_shape(prepared.jacobian, x, p0)
        except trace_errors as exc:
            raise BackendCannotRun(
                "jax cannot trace the model (it must be written with jax.numpy, not numpy): "
                + _first_line(exc)) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _name(f) -> str:
    return getattr(f, "__qualname__", None) or repr(f)
