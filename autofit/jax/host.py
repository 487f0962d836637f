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

import math
import types

import numpy as np

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

    Raises BackendCannotRun when ``f`` is not a plain Python function or names NumPy in no
    global it uses (nothing to translate).
    """
    if not isinstance(f, types.FunctionType):
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


__all__ = ["TRANSLATION_NOTE", "check_translation", "translate"]


def device_name(requested: str) -> str:
    """The device jax ran on: its default device's platform ('cpu', 'gpu', 'tpu'), whatever
    ``device=`` said (jax places its arrays itself)."""
    import jax

    return jax.devices()[0].platform

