"""Compiled functions as first-class function values for numba's drivers (shared by the
single-fit driver of :mod:`autofit.numba.host`, the engine for array models of
:mod:`autofit.numba.array_batch` and the fused pass of :mod:`autofit.numba.fused`): their
numba types, and the value that carries a compiled function's address."""

from __future__ import annotations

import numpy as np
from numba import njit, types

from autofit._codes import CONVERGED_CODES

_F8 = types.float64
_X_TYPES = {1: _F8[::1], 2: _F8[:, ::1]}
# model(x, params) -> (n_points,), jacobian(x, params) -> (n_points, n_params)
MODEL_TYPES = {ndim: types.FunctionType(_F8[::1](x_type, _F8[::1]))
               for ndim, x_type in _X_TYPES.items()}
JACOBIAN_TYPES = {ndim: types.FunctionType(_F8[:, ::1](x_type, _F8[::1]))
                  for ndim, x_type in _X_TYPES.items()}
_CONVERGED = np.array(CONVERGED_CODES, dtype=np.int64)


@njit(cache=True, error_model="numpy")
def is_converged(status):
    """Whether a status code is one of ``CONVERGED_CODES`` (compiled code cannot use a tuple
    membership test on a global)."""
    for code in _CONVERGED:
        if status == code:
            return True
    return False


class CompiledFunction:
    """A compiled ``model(x, params)`` (or Jacobian) as a first-class function value.

    numba types it as its ``FunctionType`` and takes its machine address from
    ``__wrapper_address__`` (numba's wrapper address protocol), looked up once here: a bare
    dispatcher passed to the driver would be looked up on every call, which costs more than
    a whole small fit. Calling it from Python runs the dispatcher.
    """

    def __init__(self, dispatcher, function_type):
        from numba.experimental.function_type import _get_wrapper_address

        self.dispatcher = dispatcher
        self._numba_type_ = function_type
        self._address = _get_wrapper_address(dispatcher, function_type.signature)

    def __wrapper_address__(self):
        return self._address

    def __call__(self, x, params):
        return self.dispatcher(x, params)

    @property
    def address(self) -> int:
        """The compiled function's address, for a driver that takes it as an integer and
        turns it back into this function with :func:`function_at_address`."""
        return self._address


def _function_value(context, builder, function_type, address):
    """The first-class value of ``function_type`` (numba's struct of addresses) whose
    machine code is at the int64 ``address``: called through it with the C calling
    convention, as a value unboxed from a :class:`CompiledFunction` is (no Python object
    behind it, no numba-convention entry point)."""
    from numba.core import cgutils

    value = cgutils.create_struct_proxy(function_type)(context, builder)
    pointer = context.get_value_type(types.voidptr)
    # The fields by the names of this numba's model: (c_addr, py_addr, jit_addr) in recent
    # versions, the C entry point named addr before; every field but it is null (no
    # Python object, no numba-convention entry: calls take the C entry point).
    fields = context.data_model_manager[function_type]._fields
    for name in fields:
        setattr(value, name, builder.inttoptr(address, pointer) if name in ("c_addr", "addr")
                else cgutils.get_null_value(pointer))
    if not {"c_addr", "addr"} & set(fields):
        raise TypeError(f"numba's first-class function model has no C entry point field "
                        f"({fields})")
    return value._getvalue()


def function_at_address(type_for):
    """An intrinsic ``f(address, x)``: the first-class function value of type
    ``type_for(numba type of x)`` whose machine code is at ``address``
    (:attr:`CompiledFunction.address`), built inside compiled code (x only chooses the
    type). A driver that takes the address as an int64 instead of the function value saves
    numba's unboxing of that value on every call (two calls back into Python, ~2.7 us: a
    tenth of a 100-point fit)."""
    from numba.extending import intrinsic

    @intrinsic
    def function_at(typingctx, address, x):
        function_type = type_for(x)

        def codegen(context, builder, signature, args):
            return _function_value(context, builder, function_type, args[0])

        return function_type(types.int64, x), codegen

    return function_at


# model(x, params) and jacobian(x, params) from their addresses, for x's layout.
model_at = function_at_address(lambda x: MODEL_TYPES[x.ndim])
jacobian_at = function_at_address(lambda x: JACOBIAN_TYPES[x.ndim])


@njit(cache=True)
def zero_jacobian(x, params):
    """A Jacobian of zeros: the Jacobian argument of a solver that uses finite differences
    (it never calls it then)."""
    return np.zeros((x.shape[-1], params.shape[0]))


_NO_JACOBIAN: dict[int, CompiledFunction] = {}


def placeholder_jacobian(x_ndim: int) -> CompiledFunction:
    """:func:`zero_jacobian` as the first-class value the drivers take."""
    if x_ndim not in _NO_JACOBIAN:
        _NO_JACOBIAN[x_ndim] = first_class(zero_jacobian, "jacobian", x_ndim)
    return _NO_JACOBIAN[x_ndim]


# (dispatcher, function type) -> its first-class value: made once (compiling for the
# signature and looking up the address cost ~60 us, a third of a small compiled fit).
_FIRST_CLASS: dict = {}


def compiled_as(dispatcher, function_type) -> CompiledFunction:
    """A numba dispatcher as the first-class value of ``function_type`` (a
    ``types.FunctionType``), compiled for that one signature if that is not done yet; made
    once per dispatcher and type."""
    key = (dispatcher, function_type)
    known = _FIRST_CLASS.get(key)
    if known is None:
        if tuple(function_type.signature.args) not in dispatcher.overloads:
            dispatcher.compile(function_type.signature)
        known = _FIRST_CLASS[key] = CompiledFunction(dispatcher, function_type)
    return known


def first_class(function, kind: str, x_ndim: int) -> CompiledFunction:
    """``function`` (a numba-compiled ``model(x, params)``, or Jacobian for ``kind``
    "jacobian"; None for no Jacobian) as the first-class value the drivers take."""
    if isinstance(function, CompiledFunction):
        return function
    if function is None and kind == "jacobian":
        return placeholder_jacobian(x_ndim)
    if not hasattr(function, "compile"):
        raise TypeError(f"numba's engine for array models takes a numba-compiled {kind} "
                        f"(numba.njit), got {function!r}")
    return compiled_as(function, (MODEL_TYPES if kind == "model" else JACOBIAN_TYPES)[x_ndim])
