"""A user's model ``f(x, *params)`` as a numba point function ``value(x, i, p)``: the glue
between the functions scientists write and the point functions the batch and fused passes
call (:mod:`autofit.numba.points` holds the built-in ones).
"""

from __future__ import annotations

import numpy as np

from autofit.numba.passes import with_literals_of

_USER_POINTS: dict = {}


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
                with_literals_of(f, dtype))
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


