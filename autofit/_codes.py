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
# Codes that only the batched solver (``lm_batch``) returns.
MAX_ITERATIONS = 8       # max_iter passes spent
SINGULAR = 9             # the damped system or the information matrix is not invertible
NONFINITE_DATA = 10      # this fit's data, sigma, x or p0 holds nan/inf: not attempted
MLE_NONPOSITIVE_MODEL = 11  # Poisson MLE at p0: the model is <= 0 where it must be > 0
MLE_NEGATIVE_DATA = 12   # Poisson MLE: negative counts; not attempted
TOO_FEW_POINTS = 13      # fewer usable points than free parameters; not attempted

CONVERGED_CODES = (CONVERGED_FTOL, CONVERGED_XTOL, CONVERGED_FTOL_XTOL, CONVERGED_GTOL,
                   MACHINE_PRECISION)

# How lm_solve obtains the Jacobian.
JAC_ANALYTIC = 0
JAC_FORWARD = 1
JAC_CENTRAL = 2
JAC_AUTODIFF = 3

# Estimators of the batched solver.
ESTIMATOR_LSE = 0  # weighted least squares, chi2 = sum (w (y - f))^2
ESTIMATOR_MLE = 1  # Poisson maximum likelihood, chi2 = 2 sum (f - y - y log(f / y))
# Robust least squares (M-estimators): chi2 = sum rho(z), z = (w (y - f))^2, with scipy's
# least_squares losses at f_scale 1 (the caller divides the weights by f_scale).
ESTIMATOR_SOFT_L1 = 2  # rho = 2 (sqrt(1 + z) - 1)
ESTIMATOR_HUBER = 3    # rho = z (z <= 1), 2 sqrt(z) - 1 (z > 1)
ESTIMATOR_CAUCHY = 4   # rho = log(1 + z)
ESTIMATOR_ARCTAN = 5   # rho = arctan(z)
ROBUST_LOSSES = {"soft_l1": ESTIMATOR_SOFT_L1, "huber": ESTIMATOR_HUBER,
                 "cauchy": ESTIMATOR_CAUCHY, "arctan": ESTIMATOR_ARCTAN}

# How a batch pass weighs each point in H under a robust loss (autofit._rules.point_weight):
# the loss's safe curvature (robust_loss's, never negative), scipy's information weight
# max(rho1 + 2 rho2 z, eps) (the covariance's matrix), or Newton's rho1 + 2 rho2 z, negative
# where the loss bends down (once the fit has accepted NEWTON_AFTER_ACCEPTED steps).
WEIGH_CURVATURE = 0
WEIGH_INFORMATION = 1
WEIGH_NEWTON = 2
NEWTON_AFTER_ACCEPTED = 3
# ... and while λ is at most this (the damping schedule trusts the quadratic model: the fit
# is near its minimum). Measured with λ starting at 1 (ROBUST_INITIAL_DAMPING), NumPy
# reference, iterations in all: a user's gaussian on a line from a poor start, 40 fits of
# 3,000 points with 5% spikes, arctan 1,337 -> 661 (705 with λ starting at 1e-3 and no
# such bound), cauchy 653 -> 453 (603); 300 gaussians and 300 pairs of Lorentzian dips
# with spikes (experiments/robust_batch): arctan 3,706 -> 3,404 and 5,206 -> 4,997, the
# other losses within 1% (huber on the dips 4,080 -> 3,834); the same fits worse and
# better than scipy's.
NEWTON_MAX_DAMPING = 1e-2

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
# (Measured and dropped, session 18: 2.0 in the batch for least squares cut its iterations
# by 20-45% on experiments/batch_robustness, but 0.45% of the two-gaussian fits then crawled
# into the valley of two huge peaks of opposite sign; experiments/user_models/README.md.)
# The batch bends only steps predicting at least this fraction of χ² as reduction: smaller
# steps are the end game, where the acceleration is rounding noise and its probe is a pass
# that buys nothing (1e-4 and 1e-2 end the same on experiments/batch_robustness; 1e-2
# probes a third fewer steps).
GEODESIC_MIN_REDUCTION = 1e-2

# Batched LM (a damping schedule that keeps the per-fit state to a few scalars): lambda
# starts at BATCH_INITIAL_DAMPING times the running maximum of diag(JᵀJ), grows tenfold on a
# rejected step and after an accepted one is multiplied by Nielsen's factor of the gain
# ratio, at least BATCH_DAMPING_DOWN (autofit._rules.judge_trial). (Measured and dropped,
# session 17: λ starting at 1 took 10-25% fewer iterations from rough starts, the
# experiments/batch_robustness families, but 50% more from good ones, gaussians 0.1-10%
# off: 3.3 -> 5.0 iterations, and a user's single fits of a decay 6-8 -> 8-11 passes.)
BATCH_INITIAL_DAMPING = 1e-3
# ... and a robust loss's batched fit starts at this λ (autofit._rules.initial_damping): its
# first steps rest on the loss's safe curvature, which cannot yet tell the outliers from
# the points the model will fit, and at 1e-3 the geodesic test refused them, 1.4 times per
# fit on the gaussians and 3.9 on the dips below (λ raised tenfold each time: a probe
# spent, and on jax a round of the whole chunk). Measured on the NumPy reference, 300
# gaussians and 300 pairs of Lorentzian dips with spikes (experiments/robust_batch), with
# NEWTON_MAX_DAMPING: iterations -9% to -21% per loss (arctan on the dips 6,184 -> 4,997),
# refused accelerations there 1,159 -> 425, the same fits worse or better than scipy's;
# without that bound Newton's weighing began too far from the minimum and a user's gaussian
# on a line took arctan twice the iterations.
ROBUST_INITIAL_DAMPING = 1.0
BATCH_DAMPING_DOWN = 0.1
BATCH_DAMPING_UP = 10.0
BATCH_MIN_DAMPING = 1e-12
