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
    MAX_ITERATIONS = _codes.MAX_ITERATIONS
    SINGULAR = _codes.SINGULAR
    NONFINITE_DATA = _codes.NONFINITE_DATA
    MLE_NONPOSITIVE_MODEL = _codes.MLE_NONPOSITIVE_MODEL
    MLE_NEGATIVE_DATA = _codes.MLE_NEGATIVE_DATA
    TOO_FEW_POINTS = _codes.TOO_FEW_POINTS

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
    Status.MAX_ITERATIONS: "The maximum number of iterations (max_iter) was reached.",
    Status.SINGULAR: "The fit stopped at a point where the parameters are not determined: "
                     "the (damped) normal equations or the information matrix could not be "
                     "inverted (a parameter without influence on the model, or two that act "
                     "alike). The parameters are returned; their covariance is nan.",
    Status.NONFINITE_DATA: "This fit's data, x, sigma or starting point holds nan or inf; it "
                           "was not attempted (params are the starting point).",
    Status.MLE_NONPOSITIVE_MODEL: "Poisson maximum likelihood needs a positive model "
                                  "wherever it is evaluated; the model is <= 0 at the "
                                  "starting point. Start from a positive background.",
    Status.MLE_NEGATIVE_DATA: "Poisson maximum likelihood needs counts >= 0; this fit's "
                              "data holds negative values. Subtract no background, or use "
                              "estimator='lse'.",
    Status.TOO_FEW_POINTS: "Fewer usable data points than free parameters; the fit was not "
                           "attempted.",
}
