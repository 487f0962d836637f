"""A user's model ``f(x, *params)`` as a numba point function ``value(x, i, p)``: the glue
between the functions scientists write and the point functions the batch and fused passes
call (:mod:`autofit.numba.points` holds the built-in ones).
"""

from __future__ import annotations

import math
import types

import numpy as np

from autofit.numba.passes import with_literals_of

_USER_POINTS: dict = {}

# NumPy's functions of one point as the ``math`` functions or builtins that compute the same
# on a scalar: numba-cuda does not compile np.exp, np.sqrt or np.abs (numba-cuda 0.30: a
# KeyError in its ufunc database), so a user's NumPy model did not compile for a GPU
# (tests/test_cuda_compiler.py). np.maximum and np.minimum, which it compiles, keep NumPy's
# nan (Python's max would not).
SCALAR_MATH = {
    "exp": math.exp, "expm1": math.expm1, "log": math.log, "log1p": math.log1p,
    "log10": math.log10, "log2": math.log2, "sqrt": math.sqrt, "abs": abs, "absolute": abs,
    "fabs": math.fabs, "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "arcsin": math.asin, "arccos": math.acos, "arctan": math.atan, "arctan2": math.atan2,
    "sinh": math.sinh, "cosh": math.cosh, "tanh": math.tanh, "arcsinh": math.asinh,
    "arccosh": math.acosh, "arctanh": math.atanh, "hypot": math.hypot,
    "floor": math.floor, "ceil": math.ceil, "trunc": math.trunc, "isnan": math.isnan,
    "isinf": math.isinf, "isfinite": math.isfinite, "power": pow, "deg2rad": math.radians,
    "radians": math.radians, "rad2deg": math.degrees, "degrees": math.degrees,
}


def _numpy_of_a_point():
    """A module that is NumPy with :data:`SCALAR_MATH` in place of its functions of those
    names: what ``np`` is for a user's model compiled for CUDA (on one point the two give
    the same numbers; NumPy's constants and the rest stay NumPy's)."""
    module = types.ModuleType("numpy", "NumPy, its functions of one point as math's")
    module.__dict__.update((name, value) for name, value in vars(np).items()
                           if not name.startswith("__"))
    module.__dict__.update(SCALAR_MATH)
    return module


def for_cuda(f):
    """``f`` with every global name that is NumPy (``import numpy as np``) seeing
    :func:`_numpy_of_a_point` instead, and every one that is a NumPy function of
    :data:`SCALAR_MATH` (``from numpy import exp``) its math twin, for numba-cuda to
    compile one point at a time; ``f`` itself where it names neither."""
    f = getattr(f, "py_func", f)
    if not isinstance(f, types.FunctionType):
        return f
    point_numpy = None
    changed = {}
    for name in f.__code__.co_names:
        value = f.__globals__.get(name)
        if value is np:
            point_numpy = point_numpy or _numpy_of_a_point()
            changed[name] = point_numpy
        else:  # from numpy import exp
            for numpy_name, scalar in SCALAR_MATH.items():
                if value is getattr(np, numpy_name, None):
                    changed[name] = scalar
    if not changed:
        return f
    namespace = dict(f.__globals__, **changed)
    # the function's own globals dictionary, changed: with_literals_of rebuilds it from there
    rebuilt = types.FunctionType(f.__code__, namespace, f.__name__, f.__defaults__,
                                 f.__closure__)
    rebuilt.__kwdefaults__ = f.__kwdefaults__
    rebuilt.__module__ = f.__module__
    rebuilt.__qualname__ = f.__qualname__
    rebuilt.__wrapped__ = f  # inspect.getsource then reads f's source
    return rebuilt


def user_point_function(f, n_params, n_variables, device="cpu", dtype=np.float64):
    """A point function ``value(x, i, p)`` calling the user's ``f(x, *params)`` on one point.

    ``f`` is compiled for the target (``numba.njit`` or ``numba.cuda.jit(device=True)``)
    and called with a scalar x (one variable) or the column ``x[:, i]`` (several), and the
    parameters unpacked: numba cannot call ``f(x, *p)`` with an array ``p``. Built once per
    function, size and device.
    """
    from autofit.numba import scalar_numpy  # noqa: F401 - np.full_like(x, c) on a point

    key = (f, n_params, n_variables, device, np.dtype(dtype))
    if key not in _USER_POINTS:
        if device == "cuda":
            from numba import cuda

            user = cuda.jit(device=True, fastmath=np.dtype(dtype) == np.float32)(
                with_literals_of(for_cuda(f), dtype))
        else:
            import numba
            from numba.core.registry import CPUDispatcher

            user = f if isinstance(f, CPUDispatcher) else numba.njit(
                with_literals_of(f, dtype), error_model="numpy")
        point = "x[0, i]" if n_variables == 1 else "x[:, i]"
        arguments = ", ".join(f"p[{j}]" for j in range(n_params))
        source = (f"def value(x, i, p):\n"
                  f"    return user({point}, {arguments})\n")
        namespace = {"user": user}
        exec(compile(source, f"<autofit point function {n_params}>", "exec"),  # noqa: S102
             namespace)
        _USER_POINTS[key] = namespace["value"]
    return _USER_POINTS[key]


