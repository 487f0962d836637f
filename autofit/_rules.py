"""Decisions of the Levenberg-Marquardt iteration that every backend makes the same way.

Written once here and compiled by each backend (the NumPy reference calls them, numba
compiles them into its kernels, jax and the vectorised NumPy engine take the ``where`` form),
so that ``lm_batch`` and ``lm_fused`` on every engine end a fit by one rule. The generated
test ``tests/test_rules.py`` holds the two forms to each other on every combination.
"""

import math

import numpy as np

from autofit._codes import (
    BATCH_DAMPING_DOWN,
    BATCH_DAMPING_UP,
    BATCH_INITIAL_DAMPING,
    BATCH_MIN_DAMPING,
    CONVERGED_FTOL,
    CONVERGED_FTOL_XTOL,
    CONVERGED_XTOL,
    EPS,
    ESTIMATOR_ARCTAN,
    ESTIMATOR_CAUCHY,
    ESTIMATOR_HUBER,
    ESTIMATOR_LSE,
    ESTIMATOR_SOFT_L1,
    JAC_CENTRAL,
    JAC_FORWARD,
    MACHINE_PRECISION,
    MAX_DAMPING,
    NEWTON_AFTER_ACCEPTED,
    NEWTON_MAX_DAMPING,
    ROBUST_INITIAL_DAMPING,
    RUNNING,
    WEIGH_CURVATURE,
    WEIGH_INFORMATION,
    WEIGH_NEWTON,
)

# ---------------------------------------------------------------- finite differences
# Steps relative to the parameter (as MINPACK's lmdif), not max(1, |p|): NIST-style
# parameters of size 1e-4 would otherwise get steps of 100% of their value. Forward
# differences step by sqrt(eps) of the working precision, central ones by eps^(1/3).
FORWARD_STEP = math.sqrt(EPS)
CENTRAL_STEP = float(np.float64(EPS) ** (1.0 / 3.0))


def forward_step(dtype) -> float:
    """The forward-difference step of the working precision (float64's would vanish in
    float32)."""
    return FORWARD_STEP if np.dtype(dtype) == np.float64 else \
        float(np.sqrt(np.finfo(dtype).eps))


def relative_step(value, relative):
    """The finite-difference step for a parameter of this value: ``relative |value|``, or
    ``relative`` itself where the value is 0."""
    h = relative * abs(value)
    if h == 0.0:
        h = relative
    return h


def relative_step_where(xp, params, relative):
    """:func:`relative_step` on an array of parameters (``xp`` is numpy or jax.numpy)."""
    h = relative * xp.abs(params)
    return xp.where(h == 0.0, relative, h)


# ---------------------------------------------------------------- one LM iteration
# Every batched and fused Levenberg-Marquardt loop (lm_batch and lm_fused, on every engine)
# takes its step by these rules; the engines differ only in how a pass over the points
# forms χ², g (= -½ ∂χ²/∂p) and H, and in what they test before a step (lm_fused's gtol and
# unseen Newton step, lm_batch's iteration budget and geodesic acceleration). The scalar
# forms loop over the parameters (numba compiles them, for the CPU and CUDA alike, and the
# NumPy reference's single fit runs them on Python lists: hence ``len`` and ``h[a][b]``); the
# ``_where`` forms take ``xp`` (``numpy`` or ``jax.numpy``) and arrays with the parameters
# on the last axis, so that one call serves one fit or a whole batch of them.


def is_active(p, g, lower, upper, free):
    """Whether a parameter moves in this step: free, and not at a bound that its descent
    direction ``g`` pushes against (such a parameter is held for the step, so that it does
    not distort the others' step)."""
    return free and not ((p <= lower and g < 0.0) or (p >= upper and g > 0.0))


def active_where(p, g, lower, upper, free):
    """:func:`is_active` on arrays."""
    return free & ~((p <= lower) & (g < 0.0)) & ~((p >= upper) & (g > 0.0))


def predicted_reduction(h, step, scale_squared, damping):
    """MINPACK's predicted reduction of χ² for the damped step δ:
    ``δᵀHδ + 2 λ Σ scale_squared δ²`` (the reduction of the quadratic model, which the
    ftol test compares with χ²)."""
    predicted = 0.0
    damped = 0.0
    for a in range(len(step)):
        row = 0.0
        h_a = h[a]
        for b in range(len(step)):
            row += h_a[b] * step[b]
        predicted += step[a] * row
        damped += scale_squared[a] * step[a] * step[a]
    return predicted + 2.0 * damping * damped


def predicted_reduction_where(xp, h, step, scale_squared, damping):
    """:func:`predicted_reduction` on arrays (``h`` ``(..., n, n)``, the others ``(..., n)``,
    ``damping`` ``(...)``)."""
    return (xp.sum(step * xp.sum(h * step[..., None, :], axis=-1), axis=-1)
            + 2.0 * damping * xp.sum(scale_squared * step * step, axis=-1))


def clip_step(p, step, lower, upper, scale_squared, xtol, trial):
    """Write the trial point ``clip(p + step, lower, upper)`` into ``trial``; return whether
    the step it takes is small: its scaled size within ``xtol`` of the scaled parameters
    (MINPACK's xtol test, with ``scale_squared`` the running maximum of ``diag(H)``)."""
    moved2 = 0.0
    size2 = 0.0
    for a in range(len(p)):
        trial[a] = min(max(p[a] + step[a], lower[a]), upper[a])
        moved = trial[a] - p[a]
        moved2 += scale_squared[a] * moved * moved
        size2 += scale_squared[a] * p[a] * p[a]
    return moved2 <= xtol * xtol * size2


def clip_step_where(xp, p, step, lower, upper, scale_squared, xtol):
    """:func:`clip_step` on arrays: ``(trial, small_step)``."""
    trial = xp.minimum(xp.maximum(p + step, lower), upper)
    moved = trial - p
    return trial, (xp.sum(scale_squared * moved * moved, axis=-1)
                   <= xtol * xtol * xp.sum(scale_squared * p * p, axis=-1))


# The gain ratio that sets λ after an accepted step is rounded to this grid: rounding in χ²'s
# differences moves it by far less than a step of the grid, so every engine takes the same
# λ (unrounded, two engines' λ differed in the last digits, and a fit crawling for 200
# iterations ended 1e-7 apart on them).
GAIN_GRID = 64.0


def judge_trial(chi2, trial_chi2, predicted, small_step, ftol, damping):
    """The acceptance rule: ``(accepted, status, damping)`` after a trial step.

    The step is accepted when χ² did not rise, else λ grows tenfold. After an accepted
    step λ is multiplied by Nielsen's factor ``1 - (2ρ - 1)³`` of the gain ratio ρ (the
    reduction of χ² over the reduction ``predicted``, on a grid of ``1 / GAIN_GRID``), at
    least ``BATCH_DAMPING_DOWN``, and kept at ``BATCH_MIN_DAMPING`` or above: a tenth when
    the step did what the quadratic model predicted (ρ ≈ 1), about 1 at ρ = 1/2, up to 2 as
    ρ falls to 0. (A tenth after every accepted step, Gpufit's schedule, took λ on a fit
    crawling along a valley, where ρ stays near 0.7, below what the valley allows: the next
    step was refused and λ went back up, every other iteration wasted.
    ``experiments/batch_robustness``, 8 Lorentzian dips with starts one linewidth off: 99th
    percentile of iterations 64 -> 40, 16 of the 22 fits that spent 200 iterations converge
    within 500; two dips with spikes (``experiments/robust_batch``, least squares, NumPy
    reference): median iterations 84 -> 42; easy fits unchanged.)
    ``small_step``: the step within xtol of the parameters (:func:`clip_step`). The
    reduction is small (MINPACK's ftol test) when the actual and the ``predicted``
    reductions are both within ``ftol`` of the trial's χ²; a trial whose χ² is not finite
    never is (it is a step too far, not a tie). The status is then ``CONVERGED_FTOL_XTOL``
    for both tests, ``CONVERGED_FTOL`` for an accepted step to χ² = 0, ``CONVERGED_XTOL``
    or ``CONVERGED_FTOL`` for either test, ``MACHINE_PRECISION`` for a rejected step that
    leaves λ beyond ``MAX_DAMPING``, else ``RUNNING``.

    A rejected step ends the fit as an accepted one would: whether a step at rounding level
    is accepted is decided by rounding (χ² may rise by an ulp), so the status must not be.
    Without this a fit whose last steps tie would go on raising λ until a small step, on one
    engine and not on another.
    """
    small_reduction = (trial_chi2 < math.inf and abs(chi2 - trial_chi2) <= ftol * trial_chi2
                       and predicted <= ftol * trial_chi2)
    accepted = trial_chi2 <= chi2
    if small_reduction and small_step:
        status = CONVERGED_FTOL_XTOL
    elif accepted and trial_chi2 == 0.0:
        status = CONVERGED_FTOL
    elif small_step:
        status = CONVERGED_XTOL
    elif small_reduction:
        status = CONVERGED_FTOL
    else:
        status = RUNNING
    if accepted:
        gain = (chi2 - trial_chi2) / predicted if predicted > 0.0 else 1.0
        bend = 2.0 * (math.floor(GAIN_GRID * gain + 0.5) / GAIN_GRID) - 1.0
        factor = max(BATCH_DAMPING_DOWN, 1.0 - bend * bend * bend)
        return True, status, max(damping * factor, BATCH_MIN_DAMPING)
    damping = damping * BATCH_DAMPING_UP
    if status == RUNNING and damping > MAX_DAMPING:
        status = MACHINE_PRECISION
    return False, status, damping


def judge_trial_where(xp, chi2, trial_chi2, predicted, small_step, ftol, damping):
    """:func:`judge_trial` on arrays of fits."""
    small_reduction = ((trial_chi2 < math.inf) & (xp.abs(chi2 - trial_chi2) <= ftol * trial_chi2)
                       & (predicted <= ftol * trial_chi2))
    accepted = trial_chi2 <= chi2
    status = xp.where(small_reduction & small_step, CONVERGED_FTOL_XTOL,
                      xp.where(accepted & (trial_chi2 == 0.0), CONVERGED_FTOL,
                               xp.where(small_step, CONVERGED_XTOL,
                                        xp.where(small_reduction, CONVERGED_FTOL, RUNNING))))
    raised = damping * BATCH_DAMPING_UP
    status = xp.where(~accepted & (status == RUNNING) & (raised > MAX_DAMPING),
                      MACHINE_PRECISION, status)
    positive = predicted > 0.0
    gain = xp.where(positive, (chi2 - trial_chi2) / xp.where(positive, predicted, 1.0), 1.0)
    bend = 2.0 * (xp.floor(GAIN_GRID * gain + 0.5) / GAIN_GRID) - 1.0
    factor = xp.maximum(BATCH_DAMPING_DOWN, 1.0 - bend * bend * bend)
    damping = xp.where(accepted, xp.maximum(damping * factor, BATCH_MIN_DAMPING), raised)
    return accepted, status, damping


def step_not_tried(damping, spent_status):
    """``(damping, status)`` after a step that could not be tried (the damped system did not
    factorise: ``spent_status`` SINGULAR; its geodesic acceleration was refused:
    MACHINE_PRECISION): λ grows tenfold, and the fit ends with ``spent_status`` once λ is
    beyond ``MAX_DAMPING``."""
    damping = damping * BATCH_DAMPING_UP
    return damping, (spent_status if damping > MAX_DAMPING else RUNNING)


def step_not_tried_where(xp, damping, spent_status):
    """:func:`step_not_tried` on arrays of fits."""
    damping = damping * BATCH_DAMPING_UP
    return damping, xp.where(damping > MAX_DAMPING, spent_status, RUNNING)


def robust_loss(z, estimator):
    """A robust loss at one point: ``(rho, rho1, rho2, curvature)``.

    ``rho``, its first and second derivatives in z (scipy's ``least_squares`` losses at
    ``f_scale`` 1; z = r², r the weighted residual), and the point's weight in the LM
    matrix ``H = Σ w² curvature J Jᵀ`` (the gradient is ``Σ w rho1 r J``):

    - inside f_scale (z < 1), where the point is trusted, Newton's ``rho1 + 2 rho2 z``
      (Triggs' correction, scipy's ``least_squares`` scaling), floored at EPS where the
      loss bends down;
    - beyond it, the Gauss-Newton weight of the square-root residuals ``s = r sqrt(rho /
      z)`` (``Σ s² = Σ rho``), ``(ds/dr)² = rho1² z / rho``, which is positive for every
      loss: a doubted point keeps some curvature, so a step does not run after it.

    (Measured on gaussians and pairs of Lorentzian dips with spikes,
    ``experiments/robust_batch``: the Gauss-Newton weight everywhere took cauchy 14
    iterations and arctan 20 where least squares takes 9, this one 11 and 16; Newton's
    everywhere, as scipy, let more dips collapse onto a spike: 1.5% of the cauchy fits
    ended worse than scipy's, against 0.2%.) Least squares: 1 everywhere. The covariance
    uses scipy's matrix ``Σ max(rho1 + 2 rho2 z, eps) J Jᵀ`` at every point. This is the
    weight of a fit's first steps: once a batched fit has accepted a few and λ has fallen,
    its passes take Newton's signed weight instead (:func:`pass_weighing`,
    :func:`point_weight`).
    """
    if estimator == ESTIMATOR_SOFT_L1:
        t = 1.0 + z
        root_t = math.sqrt(t)
        # rho = z rho / z, without 2 (sqrt(1 + z) - 1)'s cancellation
        rho = 2.0 / (root_t + 1.0) * z
        rho1 = 1.0 / root_t
        rho2 = -0.5 / (t * root_t)
    elif estimator == ESTIMATOR_HUBER:
        if z <= 1.0:
            rho, rho1, rho2 = z, 1.0, 0.0
        else:
            root_z = math.sqrt(z)
            rho = 2.0 * root_z - 1.0
            rho1 = 1.0 / root_z
            rho2 = -0.5 / (z * root_z)
    elif estimator == ESTIMATOR_CAUCHY:
        rho = math.log1p(z)
        rho1 = 1.0 / (1.0 + z)
        rho2 = -rho1 * rho1
    elif estimator == ESTIMATOR_ARCTAN:
        rho = math.atan(z)
        rho1 = 1.0 / (1.0 + z * z)
        rho2 = -2.0 * z * rho1 * rho1
    else:  # least squares
        rho, rho1, rho2 = z, 1.0, 0.0
    if z < 1.0:
        # EPS as a literal, which a float32 kernel keeps in float32
        curvature = max(rho1 + 2.0 * rho2 * z, 2.220446049250313e-16)
    else:
        curvature = rho1 * rho1 * z / rho
    return rho, rho1, rho2, curvature


def initial_damping(robust):
    """λ of a batched fit's first step: ``ROBUST_INITIAL_DAMPING`` for a robust loss (see
    :mod:`autofit._codes`), else ``BATCH_INITIAL_DAMPING`` (least squares, Poisson MLE).
    ``lm_fused``, which does not bend its steps, starts at ``BATCH_INITIAL_DAMPING`` for
    every loss."""
    return ROBUST_INITIAL_DAMPING if robust else BATCH_INITIAL_DAMPING


def pass_weighing(robust, n_accepted, damping):
    """How the pass at a trial point weighs each point in H (``WEIGH_CURVATURE`` or
    ``WEIGH_NEWTON``) for a fit that has accepted ``n_accepted`` steps and proposed this one
    with λ = ``damping``.

    A robust fit takes its first steps on the loss's safe curvature (:func:`robust_loss`),
    which is never negative: far from the minimum many good points look like outliers, and
    Newton's weight, negative where the loss bends down, leaves H indefinite there. Once the
    fit has accepted ``NEWTON_AFTER_ACCEPTED`` steps and λ has fallen to
    ``NEWTON_MAX_DAMPING`` it is near a minimum, where Newton's H is the loss's true
    curvature and the steps converge fast; where that H is not positive definite the step
    is not tried and λ grows, as for any matrix that does not factorise. (The safe
    curvature overestimates the loss's bending at the points near f_scale, which are most
    inliers when f_scale is the noise level: its steps fell short by a steady factor, the
    gain ratio stayed at 1.5, and arctan converged linearly. Measured on the NumPy engine,
    gaussians and pairs of Lorentzian dips with spikes, ``experiments/robust_batch``:
    median iterations cauchy 11 -> 9, arctan 16 -> 10 on the gaussians, 15 -> 13 and 20 ->
    17 on ODMR, the fits ending as before against scipy; Newton's weight from the first
    step, or after a number of iterations rather than of accepted steps, took more; the
    bound on λ: see :mod:`autofit._codes`.) Least squares and Poisson MLE: always
    ``WEIGH_CURVATURE`` (their H is unchanged). Every ``lm_batch`` weighs its passes so
    and keeps how the pass at its parameters was weighed; ``lm_fused`` keeps the safe
    curvature.

    A step from a point whose pass took Newton's weights is not bent by the geodesic
    acceleration (its probe costs a model evaluation: arctan probed 6.6 times per fit where
    least squares probes 2.5, and without the probes there 4.6, at the same iterations).
    """
    if robust and n_accepted >= NEWTON_AFTER_ACCEPTED and damping <= NEWTON_MAX_DAMPING:
        return WEIGH_NEWTON
    return WEIGH_CURVATURE


def pass_weighing_where(xp, robust, n_accepted, damping):
    """:func:`pass_weighing` on arrays of fits' ``n_accepted`` and ``damping``."""
    return xp.where(robust & (n_accepted >= NEWTON_AFTER_ACCEPTED)
                    & (damping <= NEWTON_MAX_DAMPING), WEIGH_NEWTON, WEIGH_CURVATURE)


def bends_from(weighing):
    """Whether a step from a point whose pass was weighed so may take the geodesic
    acceleration: not from Newton's (:func:`pass_weighing`); scalars or arrays."""
    return weighing != WEIGH_NEWTON


def point_weight(rho1, rho2, z, curvature, weighing):
    """A point's weight in H under a robust loss (before the data weight w²), scalars or
    arrays: the safe ``curvature`` (:func:`robust_loss`), scipy's information weight
    ``max(rho1 + 2 rho2 z, eps)`` or Newton's ``rho1 + 2 rho2 z``, as ``weighing`` says
    (``WEIGH_CURVATURE``, ``WEIGH_INFORMATION``, ``WEIGH_NEWTON``)."""
    newton = rho1 + 2.0 * rho2 * z
    if weighing == WEIGH_NEWTON:
        return newton
    if weighing == WEIGH_INFORMATION:
        # EPS as a literal, which a float32 kernel keeps in float32
        return max(newton, 2.220446049250313e-16)
    return curvature


def point_weight_where(xp, rho1, rho2, z, curvature, weighing):
    """:func:`point_weight` on arrays; ``weighing`` a code or an array of codes (one per fit,
    broadcast against the points' axis by the caller)."""
    newton = rho1 + 2.0 * rho2 * z
    return xp.where(weighing == WEIGH_NEWTON, newton,
                    xp.where(weighing == WEIGH_INFORMATION, xp.maximum(newton, EPS), curvature))


def geodesic_probe_weight(w, r, r_probe, rho1, curvature):
    """One used point's weight in ``g_probe = Σ weight J`` (J the model's gradient at p),
    whose ``(g_probe - g) / h`` the geodesic acceleration takes, under a robust loss;
    scalars or arrays.

    ``w`` the point's weight, ``r`` and ``r_probe`` its weighted residuals at p and at the
    probe ``p + h v``, ``rho1`` and ``curvature`` (c) the loss's at p (:func:`robust_loss`).
    Then ``g_probe - g = Σ w c J (r_probe - r)``: the model's bending along v, each point
    weighed as H weighs it, as least squares does (c = 1). The loss's own bending along v
    is left out: at the points near f_scale it is large next to the velocity, the
    acceleration then fails its trust test and the step is refused (on a gaussian with
    outliers, the cauchy loss took 20 iterations with it; least squares takes 9).
    """
    return w * curvature * r_probe + w * (rho1 - curvature) * r


def geodesic_probe_terms(w, r, rho1, curvature):
    """:func:`geodesic_probe_weight` as ``factor * r_probe + offset`` (bit for bit): the
    two terms known at p, for the engines that form them in the pass at p and keep them
    until the probe (arrays or scalars)."""
    return w * curvature, w * (rho1 - curvature) * r


def robust_loss_where(xp, z, estimator):
    """:func:`robust_loss` on an array of z (``xp`` = ``numpy`` or ``jax.numpy``), for one
    estimator code (a Python int: the branch is chosen once), or (NumPy) a user's loss
    ``rho(z) -> (3, n)`` as :func:`scipy.optimize.least_squares` takes it."""
    if callable(estimator):
        rho, rho1, rho2 = (xp.asarray(v, dtype=xp.float64) for v in estimator(z))
    elif estimator == ESTIMATOR_SOFT_L1:
        root_t = xp.sqrt(1.0 + z)
        rho, rho1, rho2 = (2.0 / (root_t + 1.0) * z, 1.0 / root_t,
                           -0.5 / ((1.0 + z) * root_t))
    elif estimator == ESTIMATOR_HUBER:
        inside = z <= 1.0
        root_z = xp.sqrt(xp.where(inside, 1.0, z))
        rho = xp.where(inside, z, 2.0 * root_z - 1.0)
        rho1 = xp.where(inside, 1.0, 1.0 / root_z)
        rho2 = xp.where(inside, 0.0, -0.5 / (root_z ** 3))
    elif estimator == ESTIMATOR_CAUCHY:
        rho = xp.log1p(z)
        rho1 = 1.0 / (1.0 + z)
        rho2 = -rho1 * rho1
    elif estimator == ESTIMATOR_ARCTAN:
        rho = xp.arctan(z)
        rho1 = 1.0 / (1.0 + z * z)
        rho2 = -2.0 * z * rho1 * rho1
    else:
        rho, rho1, rho2 = z, xp.ones_like(z), 0.0 * z
    # Newton's weight inside f_scale, the square-root residuals' beyond (robust_loss); a
    # user's loss that is not positive there keeps Newton's.
    newton = z < 1.0
    if callable(estimator):
        newton = newton | ~(rho > 0.0)
    curvature = xp.where(newton, xp.maximum(rho1 + 2.0 * rho2 * z, EPS),
                         rho1 * rho1 * z / xp.where(newton, 1.0, rho))
    return rho, rho1, rho2, curvature


# ---------------------------------------------------------------- lm_fused
# The largest final Gauss-Newton step taken without a pass over the points, relative to the
# parameters (both scaled as in the xtol test).
UNSEEN_STEP = 1e-6


def unseen_step_ends(newton, g, active, scale_squared, p, chi2, ftol):
    """Whether lm_fused takes its Gauss-Newton step ``newton`` without a pass over the
    points and ends (``CONVERGED_FTOL``): the reduction it predicts, ``newton · g`` over the
    active parameters, within ``ftol`` of χ², and the step within :data:`UNSEEN_STEP` of the
    parameters (scaled as in the xtol test). Scalars looped over the parameters (numba
    compiles it; the NumPy reference runs it on lists)."""
    decrement = 0.0
    moved2 = 0.0
    size2 = 0.0
    for a in range(len(p)):
        decrement += newton[a] * (g[a] if active[a] else 0.0)
        moved2 += scale_squared[a] * newton[a] * newton[a]
        size2 += scale_squared[a] * p[a] * p[a]
    return decrement <= ftol * chi2 and moved2 <= UNSEEN_STEP ** 2 * size2


# What lm_fused fits: least squares and the robust losses (Poisson MLE is lm_batch's only).
FUSED_ESTIMATORS = (ESTIMATOR_LSE, ESTIMATOR_SOFT_L1, ESTIMATOR_HUBER, ESTIMATOR_CAUCHY,
                    ESTIMATOR_ARCTAN)


def fused_estimator(estimator) -> int:
    """``estimator`` as an int, or the ValueError every backend's ``lm_fused`` raises for a
    code it does not fit."""
    if isinstance(estimator, (bool, np.bool_)) or estimator not in FUSED_ESTIMATORS:
        raise ValueError("lm_fused: estimator must be ESTIMATOR_LSE or a robust loss code "
                         f"(ESTIMATOR_SOFT_L1, _HUBER, _CAUCHY, _ARCTAN: 2-5); got "
                         f"{estimator!r}")
    return int(estimator)


def evaluations_per_pass(jac_method: int, n_params: int) -> int:
    """Model evaluations one pass costs (the analytic Jacobian is not counted, as in
    ``lm_solve``): 1, ``n_params + 1`` (forward) or ``2 n_params + 1`` (central)."""
    if jac_method == JAC_FORWARD:
        return n_params + 1
    if jac_method == JAC_CENTRAL:
        return 2 * n_params + 1
    return 1


def chi2_rounding(n_points: int) -> float:
    """Typical relative rounding error of χ² summed over ``n_points`` points:
    ``eps * sqrt(n_points)`` (2e-13 at 1e6 points)."""
    return EPS * n_points ** 0.5
