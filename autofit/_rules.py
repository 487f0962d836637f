"""Decisions of the Levenberg-Marquardt iteration that every backend makes the same way.

Written once here and compiled by each backend (the NumPy reference calls them, numba
compiles them into its kernels, jax and the vectorised NumPy engine take the ``where`` form),
so that ``lm_batch`` and ``lm_fused`` on every engine end a fit by one rule. The generated
test ``tests/test_rules.py`` holds the two forms to each other on every combination.
"""

from autofit._codes import (
    CONVERGED_FTOL,
    CONVERGED_FTOL_XTOL,
    CONVERGED_XTOL,
    RUNNING,
)


def trial_status(accepted, small_reduction, small_step, zero_chi2):
    """The status after a trial step: RUNNING, or why the fit has converged.

    The step is accepted when χ² did not rise (``accepted``); ``small_reduction``: the actual
    and the predicted reductions of χ² both within ftol of it; ``small_step``: the step
    within xtol of the parameters (both scaled); ``zero_chi2``: the trial's χ² is 0.

    A rejected step ends the fit as an accepted one would: whether a step at rounding level
    is accepted is decided by rounding (χ² may rise by an ulp), so the status must not be.
    Without this a fit whose last steps tie would go on raising λ until a small step, on one
    engine and not on another.
    """
    if small_reduction and small_step:
        return CONVERGED_FTOL_XTOL
    if accepted and zero_chi2:
        return CONVERGED_FTOL
    if small_step:
        return CONVERGED_XTOL
    if small_reduction:
        return CONVERGED_FTOL
    return RUNNING


def trial_status_where(where, accepted, small_reduction, small_step, zero_chi2):
    """:func:`trial_status` on arrays of fits (boolean arrays), with ``where`` =
    ``numpy.where`` or ``jax.numpy.where``."""
    return where(small_reduction & small_step, CONVERGED_FTOL_XTOL,
                 where(accepted & zero_chi2, CONVERGED_FTOL,
                       where(small_step, CONVERGED_XTOL,
                             where(small_reduction, CONVERGED_FTOL, RUNNING))))
