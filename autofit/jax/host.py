"""What the jax backend needs from a user's model written with NumPy.

jax traces a model; a function written with ``numpy`` cannot be traced (``np.exp`` turns a
tracer into a NumPy array). Most models that scipy users write name NumPy through a module
global (``np.exp``, ``np.full_like``, ``numpy.where``) and ``math`` for scalar functions.
:func:`translate` makes a copy of such a function whose globals ``np`` / ``numpy`` refer to
``jax.numpy`` and ``math`` to the same functions of ``jax.numpy``: the same code, run by
jax. It is used only when the model cannot be traced as it is, is checked against the
NumPy original on the data at p0 before it is used, and is reported: every result that
used it says so in its ``backend_reason``. When it cannot run the model (in-place
assignment ``out[i] = ...``, NumPy functions jax lacks, values that disagree), the model
falls back to the next backend with the reason, as any model jax cannot run.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import types

import numpy as np

from autofit import _forward_mode
from autofit._adapters import (
    BatchEngine,
    Prepared,
    cached,
    check_runs,
    first_line,
    prepare,
    unused_jacobian,
)
from autofit._codes import JAC_ANALYTIC, JAC_AUTODIFF
from autofit._dispatch import BackendCannotRun

TRANSLATION_NOTE = ("jax runs this NumPy-written model translated to jax.numpy (its global "
                    "'np'/'numpy'/'math' names bound to jax.numpy; checked against NumPy at p0)")


class _MathOnJax(types.ModuleType):
    """``math`` whose functions are jax.numpy's (``math.cos(tracer)`` works), constants kept."""

    def __init__(self):
        super().__init__("math")
        import jax.numpy as jnp

        self._jnp = jnp

    def __getattr__(self, name):
        if name in ("pi", "e", "tau", "inf", "nan"):
            return getattr(math, name)
        if name == "fabs":
            return self._jnp.abs
        if name == "pow":
            return self._jnp.power
        return getattr(self._jnp, name)


def _replacements(f) -> dict:
    import jax.numpy as jnp

    names = {}
    for name in f.__code__.co_names:
        value = f.__globals__.get(name)
        if value is np:
            names[name] = jnp
        elif value is math:
            names[name] = _MathOnJax()
    return names


def translate(f):
    """A copy of ``f`` with its NumPy (and math) globals bound to jax.numpy.

    Raises BackendCannotRun when ``f`` is not a plain Python function (or a
    ``functools.partial`` of one with keywords, translated as its function) or names NumPy
    in no global it uses (nothing to translate).
    """
    function = _forward_mode.plain_function(f)
    if function is not None and function is not f:  # a partial: its function translated
        translated = functools.partial(translate(function), **f.keywords)
        translated.__wrapped_numpy__ = f
        return translated
    if function is None:
        raise BackendCannotRun(f"jax cannot trace {f!r} and cannot translate it (not a "
                               "Python function)")
    replacements = _replacements(f)
    if not replacements:
        raise BackendCannotRun("jax cannot trace the model, and it names NumPy in no global "
                               "that could be bound to jax.numpy")
    namespace = dict(f.__globals__)
    namespace.update(replacements)
    translated = types.FunctionType(f.__code__, namespace, f.__name__, f.__defaults__,
                                    f.__closure__)
    translated.__kwdefaults__ = f.__kwdefaults__
    translated.__qualname__ = f.__qualname__
    translated.__wrapped_numpy__ = f
    return translated


def check_translation(f, translated, x, p0) -> None:
    """BackendCannotRun unless ``translated`` gives ``f``'s values at p0 (to rounding)."""
    import jax

    try:
        with jax.enable_x64(True):
            got = np.asarray(translated(x, *p0), dtype=np.float64)
    except Exception as exc:  # whatever jax raises for code it cannot run
        text = str(exc).strip().splitlines()
        raise BackendCannotRun("jax cannot run the model translated to jax.numpy: "
                               f"{type(exc).__name__}: {text[0] if text else ''}") from exc
    expected = np.asarray(f(x, *p0), dtype=np.float64)
    if got.shape != expected.shape:
        expected = np.broadcast_to(expected, got.shape) if expected.ndim == 0 else expected
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-10,
                                                      atol=1e-12 * scale, equal_nan=True):
        raise BackendCannotRun("the model translated to jax.numpy does not give the NumPy "
                               "model's values at p0; jax cannot run it")


def exact_jacobian(f, n_params: int, x, p0):
    """The Jacobian of a user's NumPy model ``f`` as jax code, ``jacobian(x, params) ->
    (n_points, n_params)``, from the derivatives :mod:`autofit._forward_mode` generates
    from its source (each derivative written once, where it is not zero: a peak's
    parameters touch its own terms only, where autodiff carries every parameter's tangent
    through every operation; 3x faster on 8 Lorentzian dips). Checked against the
    generated point gradient on a sample of x at p0. None where there are none, or where
    that check fails."""
    n_variables = 1 if np.ndim(x) == 1 else np.shape(x)[0]
    found, _ = _forward_mode.exact_or_none(f, n_params, n_variables, x, p0)
    if found is None:
        return None
    try:
        return _checked_array_jacobian(f, n_params, found[1], x, p0)
    except Exception:  # noqa: BLE001 - whatever the generated code meets: autodiff instead
        return None


def _checked_array_jacobian(f, n_params, gradient, x, p0):
    import jax
    import jax.numpy as jnp

    # The source of the very point gradient checked here (registered for inspect by
    # autofit._forward_mode), not generated a second time.
    gradient_source = inspect.getsource(gradient)

    def columns(values, rows, guarded=()):
        shape = rows.shape[1:]
        values = [jnp.broadcast_to(jnp.asarray(v, dtype=rows.dtype), shape) for v in values]
        for j in guarded:  # a nan derivative is 0 there (autofit._forward_mode)
            values[j] = jnp.where(jnp.isnan(values[j]), 0.0, values[j])
        return jnp.stack(values, axis=-1)

    namespace = _forward_mode.namespace_of(f)
    namespace.update(math=_MathOnJax(), abs=jnp.abs, _where=jnp.where, _and=jnp.logical_and,
                     _or=jnp.logical_or, _not=jnp.logical_not, _atleast_2d=jnp.atleast_2d,
                     _columns=columns)
    name = getattr(f, "__name__", type(f).__name__)
    exec(_forward_mode.array_jacobian_code(  # noqa: S102 - generated from an AST
        gradient_source, n_params, f"<autofit jax derivatives of {name}>"), namespace)
    jacobian = namespace["jacobian"]
    x2 = np.atleast_2d(np.asarray(x, dtype=np.float64))
    sample = np.unique(np.linspace(0, x2.shape[1] - 1, min(x2.shape[1], 16)).astype(int))
    expected = np.zeros((n_params, sample.size))
    with np.errstate(all="ignore"):
        for k, point in enumerate(sample):
            gradient(x2, point, np.asarray(p0, dtype=np.float64), expected, k)
    with jax.enable_x64(True):
        # One program for the check (run op by op it compiled ~20 small ones).
        got = np.asarray(jax.jit(jacobian)(jnp.asarray(x2[:, sample]),
                                           jnp.asarray(p0, jnp.float64)))
    scale = np.nanmax(np.abs(expected), axis=1, initial=0.0)[None, :] + 1e-300
    if got.shape != (sample.size, n_params) or not np.allclose(
            got, expected.T, rtol=1e-9, atol=1e-12 * scale, equal_nan=True):
        return None
    # jax's own derivatives of the translated model equal these (autofit.jax.batch may
    # take J u products from reverse mode).
    jacobian.agrees_with_autodiff = True
    return jacobian


# ------------------------------------------------------------ the interface every host has
# (see autofit.original.host): the user layer calls these through autofit._dispatch.host_of.

DEVICES = ("cpu",)  # what fit_batch's device= may say; jax places its arrays itself
JAC_WITHOUT_JACOBIAN = JAC_AUTODIFF  # exact derivatives by automatic differentiation
CHUNKS_RECOMPILE = True  # a chunk of a new number of fits is a new program
# Whether a huge single fit starts from a fit to a strided subsample (autofit._fused):
# a subsample of a new size is a new program: seconds of compilation.
COARSE_START = False


def device_name(requested: str = "cpu") -> str:
    """The device jax ran on: its default device's platform ('cpu', 'gpu', 'tpu'), whatever
    ``device=`` said (jax places its arrays itself)."""
    import jax

    return jax.devices()[0].platform


def device_report() -> str:
    """One line for ``python -m autofit backends``: jax's devices."""
    import jax

    return ", ".join(sorted({f"{d.platform}:{d.device_kind}" for d in jax.devices()}))


def precision(float64: bool = True):
    """The context the kernels run in: jax's 64-bit mode for float64 (set only for the
    call, so the user's own jax code keeps its default)."""
    import jax

    return jax.enable_x64(bool(float64))


def padded_length(n_points: int) -> int:
    """The number of points a single fit is padded to (padding points have weight 0): the
    next of 16, 24, 32, 48, 64, ... (at most 1.5x the data), so that a new number of points
    within a bucket runs the program already compiled."""
    size = 16
    while size < n_points:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def array_model(f, n_params: int):
    """``model(x, params)`` calling the user's traceable ``f(x, *params)``."""
    import jax.numpy as jnp

    def model(x, params):
        return jnp.asarray(f(x, *(params[i] for i in range(n_params))), dtype=params.dtype)

    return model


def no_jacobian():
    """A placeholder for ``lm_solve``'s unused Jacobian argument."""
    return unused_jacobian


def check_compiles(prepared, x, p0) -> None:
    """Trace the model (and an analytic Jacobian) once (``jax.eval_shape``, nothing is
    compiled); BackendCannotRun if it cannot be traced."""
    import jax

    trace_errors = (jax.errors.TracerArrayConversionError,
                    jax.errors.ConcretizationTypeError,
                    jax.errors.TracerBoolConversionError,
                    jax.errors.TracerIntegerConversionError, TypeError)
    try:
        with jax.enable_x64(True):
            jax.eval_shape(prepared.model, x, p0)
            if prepared.jac_method == JAC_ANALYTIC:
                jax.eval_shape(prepared.jacobian, x, p0)
    except trace_errors as exc:
        raise BackendCannotRun(
            "jax cannot trace the model (it must be written with jax.numpy, not numpy): "
            + first_line(exc)) from exc


def run_instead(prepared, error, x, p0, f, jac):
    """A NumPy-written user model that cannot be traced: the model translated to jax.numpy
    (:func:`translate`), checked against NumPy at p0; its ``note`` says so.
    BackendCannotRun with both reasons when that cannot run either."""
    n_params = p0.shape[0]
    try:
        translated = cached(f, ("jax", n_params, "translated"), lambda: translate(f))
        check_translation(f, translated, x, p0)
        model = cached(f, ("jax", n_params, "translated model"),
                       lambda: array_model(translated, n_params))
        jacobian = prepared.jacobian
        methods = (prepared.jac_method, prepared.polish_method, prepared.covariance_method)
        note = TRANSLATION_NOTE
        if callable(jac):
            translated_jac = cached(jac, ("jax", n_params, "translated"),
                                    lambda: translate(jac))
            jacobian = cached(jac, ("jax", n_params, "translated jacobian"),
                              lambda: array_model(translated_jac, n_params))
        elif prepared.jac_method == JAC_AUTODIFF:
            # Built once per check of the model (autofit._adapters.check_runs), which is
            # made again when a number it reads (a global, a closure) has changed.
            exact = exact_jacobian(f, n_params, x, p0)
            if exact is not None:
                jacobian, methods = exact, (JAC_ANALYTIC, None, JAC_ANALYTIC)
                note = f"{TRANSLATION_NOTE}; {_forward_mode.EXACT_NOTE}"
        result = Prepared(model, jacobian, *methods, note=note)
        check_compiles(result, x, p0)
    except BackendCannotRun as exc:
        raise BackendCannotRun(f"{error}; {exc}") from exc
    return result


def exact_prepared(prepared, exact, n_params: int, x, p0):
    """``prepared`` as it is: jax's own derivatives are exact (automatic differentiation;
    a model it runs translated takes the generated ones already: :func:`exact_jacobian`)."""
    return prepared


def fused_model(f, jac, prepared, n_params: int, n_variables: int):
    """``(model, jacobian, jac_method, polish_method)`` as ``lm_fused`` takes them."""
    return (prepared.model, prepared.jacobian, prepared.jac_method,
            prepared.polish_method)


def is_compile_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the fused pass cannot run the model (a model that cannot be
    traced was refused before, by :func:`check_compiles`)."""
    return False


def batch_engine(problem, device: str) -> BatchEngine:
    """``lm_batch`` with the model as ``autofit._adapters.prepare`` builds it (translated
    to jax.numpy where it cannot be traced as written, and the note says so)."""
    from autofit.jax.batch import lm_batch

    prepared = prepare("jax", problem.model, problem.n_params, problem.jac)
    x = problem.x[0, 0] if problem.x.shape[1] == 1 else problem.x[0]
    prepared = check_runs("jax", prepared, x, problem.p0[0].astype(np.float64),
                          problem.model)
    return BatchEngine(lm_batch, prepared.model, prepared.jacobian, prepared.jac_method,
                       prepared.note)


# One batch program at a time in this process: two run at once from two threads (a user's
# thread pool, dask's threaded scheduler) left XLA:CPU's thread pool wedged, both callers
# waiting on their results for ever (jax 0.10, 2 cores; tests/test_jax_batch.py). They
# would share the same cores anyway.
_batch_lock = threading.Lock()


def batch_call(solve, args, dtype):
    """One chunk of fits, in jax's 64-bit mode for float64, its results on the host."""
    with _batch_lock, precision(np.dtype(dtype) == np.float64):
        return solve(*args)


def batch_rescue(problem, device: str, error):
    """Another engine for a model the batch engine could not run: none here."""
    return None


__all__ = ["TRANSLATION_NOTE", "check_translation", "translate"]
