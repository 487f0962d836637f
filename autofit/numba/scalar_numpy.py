"""NumPy's ``*_like`` constructors on a scalar, for models compiled one point at a time.

numba's batch engines call a user's ``f(x, *params)`` with one scalar point. NumPy accepts
``np.full_like(x, c)``, ``np.zeros_like(x)``, ``np.ones_like(x)`` and ``np.empty_like(x)``
for a scalar ``x`` (a 0-d array that behaves as a scalar), and models written for scipy use
them to start their output (``out = np.full_like(x, offset)``, then a loop adding peaks).
numba implements them for arrays only; these overloads add the scalar case, with NumPy's
value and the dtype of ``x``. Importing this module registers them; it changes nothing for
arrays (numba's own implementations still serve those).
"""

import numpy as np
from numba import types
from numba.extending import overload
from numba.np.numpy_support import as_dtype


def _scalar_type(a):
    return as_dtype(a).type if isinstance(a, (types.Float, types.Integer)) else None


@overload(np.full_like)
def _full_like_scalar(a, fill_value, dtype=None):
    make = _scalar_type(a)
    if make is not None:
        def impl(a, fill_value, dtype=None):
            return make(fill_value)

        return impl


@overload(np.zeros_like)
def _zeros_like_scalar(a, dtype=None):
    make = _scalar_type(a)
    if make is not None:
        def impl(a, dtype=None):
            return make(0)

        return impl


@overload(np.ones_like)
def _ones_like_scalar(a, dtype=None):
    make = _scalar_type(a)
    if make is not None:
        def impl(a, dtype=None):
            return make(1)

        return impl


@overload(np.empty_like)
def _empty_like_scalar(a, dtype=None):
    make = _scalar_type(a)
    if make is not None:
        def impl(a, dtype=None):
            return make(0)

        return impl
