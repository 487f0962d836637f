"""Integer codes and solver constants shared by every backend's kernels.

Kernels return plain integers (numba and jax cannot return Python enums from compiled
code); :class:`autofit.Status` gives them names at the user-facing layer. The numbering of
the converged codes follows MINPACK's ``ier`` so that ``curve_fit(..., full_output=True)``
returns the same ``ier`` as scipy for the same stopping reason.
"""

RUNNING = 0
CONVERGED_FTOL = 1
CONVERGED_XTOL = 2
CONVERGED_FTOL_XTOL = 3
CONVERGED_GTOL = 4
MAX_NFEV = 5
MACHINE_PRECISION = 6
NONFINITE = 7

CONVERGED_CODES = (CONVERGED_FTOL, CONVERGED_XTOL, CONVERGED_FTOL_XTOL, CONVERGED_GTOL,
                   MACHINE_PRECISION)

# How lm_solve obtains the Jacobian.
JAC_ANALYTIC = 0
JAC_FORWARD = 1
JAC_CENTRAL = 2
JAC_AUTODIFF = 3

# Levenberg-Marquardt tuning, one definition for the three lm.py files.
EPS = 2.220446049250313e-16  # float64 machine epsilon
# Nielsen's initial damping relative to the (unit) diagonal of the scaled system.
INITIAL_DAMPING = 1e-3
# Damping beyond which no step can reduce chi2: the point is a minimum to float64 precision.
MAX_DAMPING = 1e32
# MINPACK accepts a step when it achieves this fraction of the predicted reduction.
ACCEPT_RATIO = 1e-4
# Geodesic acceleration: finite-difference probe along the velocity, and the largest
# acceptable |acceleration| / |velocity| (Transtrum & Sethna 2012 suggest 0.75).
GEODESIC_PROBE = 0.1
GEODESIC_MAX_RATIO = 0.75
