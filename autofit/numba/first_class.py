"""Compiled functions as first-class function values for numba's drivers (shared by the
single-fit driver of :mod:`autofit.numba.host` and the fused pass of
:mod:`autofit.numba.fused`)."""

from __future__ import annotations


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
