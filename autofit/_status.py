"""Names and messages for the integer codes the kernels return."""

from enum import IntEnum

from autofit import _codes


class Status(IntEnum):
    """Why a fit stopped. Values 1-4 are MINPACK's (and scipy's) ``ier`` codes."""

    RUNNING = _codes.RUNNING
    CONVERGED_FTOL = _codes.CONVERGED_FTOL
    CONVERGED_XTOL = _codes.CONVERGED_XTOL
    CONVERGED_FTOL_XTOL = _codes.CONVERGED_FTOL_XTOL
    CONVERGED_GTOL = _codes.CONVERGED_GTOL
    MAX_NFEV = _codes.MAX_NFEV
    MACHINE_PRECISION = _codes.MACHINE_PRECISION
    NONFINITE = _codes.NONFINITE

    @property
    def converged(self) -> bool:
        return self.value in _codes.CONVERGED_CODES

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Status.RUNNING: "The fit has not finished.",
    Status.CONVERGED_FTOL: "Both actual and predicted relative reductions in the sum of "
                           "squares are at most ftol.",
    Status.CONVERGED_XTOL: "The relative error between two consecutive iterates is at most "
                           "xtol.",
    Status.CONVERGED_FTOL_XTOL: "Both actual and predicted relative reductions in the sum of "
                                "squares are at most ftol and the relative error between two "
                                "consecutive iterates is at most xtol.",
    Status.CONVERGED_GTOL: "The cosine of the angle between the residuals and any column of "
                           "the Jacobian is at most gtol in absolute value.",
    Status.MAX_NFEV: "The maximum number of function evaluations (max_nfev) was reached.",
    Status.MACHINE_PRECISION: "No further reduction in the sum of squares is possible: even a "
                              "step at the rounding level of the parameters does not reduce "
                              "it, so this is a minimum to float64 precision.",
    Status.NONFINITE: "The model or its Jacobian returned non-finite values (nan or inf) at "
                      "the current parameters.",
}
