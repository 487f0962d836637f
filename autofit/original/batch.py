"""Batched Levenberg-Marquardt (NumPy reference): many independent small fits.

One fit at a time, vectorised over its points. This file defines the algorithm; the numba
(CPU ``prange`` and CUDA) and jax engines follow it step for step, and the generated tests
hold them to it.

The algorithm per fit (the same on every backend):

1. Not attempted, with a status, when the fit's data, x, weights or p0 hold nan/inf
   (``NONFINITE_DATA``), when Poisson counts are negative (``MLE_NEGATIVE_DATA``), or when
   fewer points have a non-zero weight than there are free parameters (``TOO_FEW_POINTS``).
2. ``p = clip(p0, lower, upper)``; one pass over the points gives χ², the descent
   direction ``g = -½ ∂χ²/∂p`` (minus ``lm_solve``'s ``gradient``) and the Gauss-Newton
   matrix ``H`` (``JᵀW²J`` for least squares, ``Σ w y/f² J Jᵀ`` for Poisson MLE, as in
   Gpufit). Non-finite here ends the fit with
   ``NONFINITE`` (``MLE_NONPOSITIVE_MODEL`` when the Poisson model is ≤ 0).
3. Each iteration solves ``(H + λ diag(scale_squared)) δ = g`` by Cholesky over the active
   parameters (free, and not at a bound that the gradient pushes against: those are held
   for the step), where ``scale_squared`` is the running maximum of ``diag(H)``
   (Marquardt's scaling; the square of ``lm_solve``'s ``scale`` for least squares), and
   λ starts at :func:`autofit._rules.initial_damping` (1e-3; 1 for a robust loss).
   Least squares then bends the step along the valley (Transtrum and Sethna's geodesic
   acceleration, as in ``lm_solve``) when it predicts a reduction of χ² above
   ``max(tol, GEODESIC_MIN_REDUCTION)`` of it: the velocity ``v = clip(p + δ) - p``, one
   more evaluation of the model at ``p + GEODESIC_PROBE v`` gives the acceleration ``a``
   (the damped system solved for the directional second derivative projected by ``J(p)``),
   and the step is ``v + a/2``; when ``2|a| > GEODESIC_MAX_RATIO |v|`` (scaled norms) the
   step is refused like a rejected one, without a pass. Without this acceleration a fourth
   of the hard multi-peak fits crawled to ``max_iter`` or to another minimum
   (``experiments/batch_robustness``). The iteration then evaluates χ², g and H at
   ``clip(p + step)`` in one pass, and accepts the step when χ² does not grow (λ times
   Nielsen's factor of the gain ratio, a tenth at best: :func:`autofit._rules.judge_trial`)
   or rejects it (λ *= 10). A failed factorisation also raises λ. An iteration is one such
   step, accepted, rejected or refused; ``max_iter`` bounds them.
4. Stopping (MINPACK's tests with one tolerance, :func:`autofit._rules.judge_trial`, the
   rule of ``lm_fused`` too): after a trial step, accepted or rejected, the actual and the
   predicted relative reductions of χ² both ≤ tol (``CONVERGED_FTOL``) and/or the scaled
   step ≤ tol × the scaled parameters (``CONVERGED_XTOL``; ``..._FTOL_XTOL`` for both);
   a rejected step ends the fit as an accepted one would (accepting or rejecting a step at
   rounding level is a coin toss, the status is not); λ > MAX_DAMPING ends with
   ``MACHINE_PRECISION`` (converged) or ``SINGULAR`` (the factorisation never succeeded).
5. The covariance is the inverse of the information matrix over the free parameters:
   ``JᵀW²J`` for least squares, the Fisher information ``Σ w J Jᵀ / f`` for Poisson MLE
   (one more pass); zero rows and columns for fixed parameters. When it is not positive
   definite the covariance is nan and a converged status becomes ``SINGULAR``.
"""

import numpy as np

from autofit._codes import (
    CONVERGED_CODES,
    CONVERGED_GTOL,
    ESTIMATOR_LSE,
    ESTIMATOR_MLE,
    GEODESIC_MAX_RATIO,
    GEODESIC_MIN_REDUCTION,
    GEODESIC_PROBE,
    JAC_ANALYTIC,
    MACHINE_PRECISION,
    MAX_ITERATIONS,
    MLE_NEGATIVE_DATA,
    MLE_NONPOSITIVE_MODEL,
    NONFINITE,
    NONFINITE_DATA,
    RUNNING,
    SINGULAR,
    TOO_FEW_POINTS,
    WEIGH_CURVATURE,
    WEIGH_INFORMATION,
)
from autofit._declarations import implements, require_jac_method
from autofit._rules import (
    active_where,
    bends_from,
    clip_step_where,
    geodesic_probe_weight,
    initial_damping,
    judge_trial,
    pass_weighing,
    point_weight_where,
    predicted_reduction_where,
    robust_loss_where,
    step_not_tried,
)
from autofit.original.jacobians import jacobian_forward, value_and_jacobian
from autofit.original.linalg import cholesky_solve, damped_system


def _model_x(x):
    # One-variable models take x as (n_points,), k-variable ones as (k, n_points).
    return x[0] if x.shape[0] == 1 else x


def _model_and_jacobian(model, jacobian, jac_method, x, w, p, lower, upper, free):
    """f and J at the points of non-zero weight; J's columns of fixed parameters are 0."""
    mx = _model_x(x)
    if jac_method == JAC_ANALYTIC:
        f, jac = value_and_jacobian(model, jacobian, mx, p)
    else:
        f = model(mx, p)
        jac = jacobian_forward(model, mx, p, f, lower, upper)
    used = w != 0.0
    if used.all():  # (a user's unweighted fit: the same numbers without the copies)
        return f, (jac if free.all() else jac * free)
    return f[used], jac[used] * free


def _used(y, w):
    """y and w at the points of non-zero weight (as they are where every point is used)."""
    used = w != 0.0
    return (y, w) if used.all() else (y[used], w[used])


def _evaluate(model, jacobian, jac_method, x, y, w, p, lower, upper, free, estimator,
              weighing=WEIGH_CURVATURE):
    """chi2, g, H at p (chi2 = inf where the model is non-finite or, for MLE, f <= 0); a
    robust loss's H weighs its points as ``weighing`` says (:func:`_rules.point_weight`)."""
    f, jac = _model_and_jacobian(model, jacobian, jac_method, x, w, p, lower, upper,
                                  free)
    y, w = _used(y, w)
    if estimator == ESTIMATOR_MLE:
        if not np.all(f > 0.0):
            return np.inf, None, None, False
        counts = y > 0.0
        chi2 = 2.0 * np.sum(w * (f - y)) - 2.0 * np.sum(
            w[counts] * y[counts] * np.log(f[counts] / y[counts]))
        g = jac.T @ (w * (y / f - 1.0))
        h = (jac * (w * y / (f * f))[:, None]).T @ jac
    elif estimator == ESTIMATOR_LSE:
        r = w * (y - f)
        chi2 = r @ r
        wj = jac * w[:, None]
        g = wj.T @ r
        h = wj.T @ wj
    else:
        # A robust loss: Σ rho, each point's weight in H the loss's curvature or Newton's
        # (autofit._rules.pass_weighing).
        r = w * (y - f)
        z = r * r
        rho, rho1, rho2, curvature = robust_loss_where(np, z, estimator)
        chi2 = np.sum(rho)
        g = jac.T @ (w * rho1 * r)
        weight = point_weight_where(np, rho1, rho2, z, curvature, weighing)
        h = (jac * (w * w * weight)[:, None]).T @ jac
    finite = np.isfinite(chi2) and np.all(np.isfinite(g)) and np.all(np.isfinite(h))
    return (chi2 if finite else np.inf), g, h, True


def _geodesic_rhs(model, jacobian, jac_method, x, y, w, p, lower, upper, free, estimator,
                  velocity, g, h, weighing):
    """The right-hand side whose damped solve is Transtrum and Sethna's geodesic
    acceleration along ``velocity`` (least squares), from one more model evaluation at
    ``p + h v``: ``(2/h) ((g_probe - g)/h + H v)``, ``g_probe = J_w(p)ᵀ W (y - f(p + h v))``
    (the batch's signs: the step solves ``(H + λD) δ = g``); None where the probe's model is
    not finite. ``weighing``: how the pass at p weighed the points in H."""
    f, jac = _model_and_jacobian(model, jacobian, jac_method, x, w, p, lower, upper, free)
    used = w != 0.0
    y, w = _used(y, w)
    f_probe = model(_model_x(x), p + GEODESIC_PROBE * velocity)
    if not used.all():
        f_probe = f_probe[used]
    r_probe = w * (y - f_probe)
    if estimator == ESTIMATOR_LSE:
        g_probe = (jac * w[:, None]).T @ r_probe
    else:
        # The model's bending along v, each point weighed as H weighs it.
        r = w * (y - f)
        z = r * r
        _, rho1, rho2, curvature = robust_loss_where(np, z, estimator)
        weight = point_weight_where(np, rho1, rho2, z, curvature, weighing)
        g_probe = jac.T @ geodesic_probe_weight(w, r, r_probe, rho1, weight)
    if not np.all(np.isfinite(g_probe)):
        return None
    return (2.0 / GEODESIC_PROBE) * ((g_probe - g) / GEODESIC_PROBE + h @ velocity)


def _worth_bending(velocity, h, scale_squared, damping, chi2, tol):
    """Whether the step is large enough for its geodesic acceleration: not when the
    reduction of χ² it predicts is within tol of χ² (the fit is converging; there the
    acceleration is rounding noise, which would decide the last steps)."""
    predicted = predicted_reduction_where(np, h, velocity, scale_squared, damping)
    return predicted > max(tol, GEODESIC_MIN_REDUCTION) * chi2


def _information(model, jacobian, jac_method, x, y, w, p, lower, upper, free, estimator,
                 h):
    """The matrix whose inverse is the covariance: H itself (LSE), Fisher's (MLE), or for a
    robust loss scipy's ``Σ w² max(rho1 + 2 rho2 z, eps) J Jᵀ``."""
    if estimator == ESTIMATOR_LSE:
        return h
    f, jac = _model_and_jacobian(model, jacobian, jac_method, x, w, p, lower, upper,
                                  free)
    y, w = _used(y, w)
    if estimator == ESTIMATOR_MLE:
        return (jac * (w / f)[:, None]).T @ jac
    z = (w * (y - f)) ** 2
    _, rho1, rho2, curvature = robust_loss_where(np, z, estimator)
    weight = point_weight_where(np, rho1, rho2, z, curvature, WEIGH_INFORMATION)
    return (jac * (w * w * weight)[:, None]).T @ jac


def _invert(information, free):
    n_params = free.shape[0]
    system, _ = damped_system(information, np.zeros(n_params), np.zeros(n_params), 0.0,
                               free)
    covariance = np.empty((n_params, n_params))
    for j in range(n_params):
        column, ok = cholesky_solve(system, np.eye(n_params)[j])
        if not ok:
            return np.full((n_params, n_params), np.nan), False
        covariance[:, j] = column
    return np.where(np.outer(free, free), covariance, 0.0), True


def _not_attempted(x, y, w, p0, free, estimator):
    """The status of a fit that cannot start, or RUNNING."""
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.isfinite(w))
            and np.all(np.isfinite(p0))):
        return NONFINITE_DATA
    if estimator == ESTIMATOR_MLE and np.any(y[w != 0.0] < 0.0):
        return MLE_NEGATIVE_DATA
    if np.count_nonzero(w) < np.count_nonzero(free):
        return TOO_FEW_POINTS
    return RUNNING


def _fit_one(model, jacobian, jac_method, x, y, w, p0, lower, upper, free, estimator, tol,
             max_iter):
    n_params = p0.shape[0]
    nan_covariance = np.full((n_params, n_params), np.nan)
    status = _not_attempted(x, y, w, p0, free, estimator)
    if status != RUNNING:
        return p0.copy(), np.nan, 0, status, nan_covariance
    p = np.clip(p0, lower, upper)
    chi2, g, h, positive = _evaluate(model, jacobian, jac_method, x, y, w, p, lower, upper,
                                     free, estimator)
    if not np.isfinite(chi2):
        return p, np.nan, 0, (NONFINITE if positive else MLE_NONPOSITIVE_MODEL), nan_covariance
    if not np.any(g[free] != 0.0):
        status = CONVERGED_GTOL
    scale_squared = np.diag(h).copy()
    robust = estimator not in (ESTIMATOR_LSE, ESTIMATOR_MLE)
    damping = initial_damping(robust)
    n_iter = 0
    n_accepted = 0
    weighing = WEIGH_CURVATURE  # how the pass at p weighed its points
    while status == RUNNING:
        if n_iter >= max_iter:
            status = MAX_ITERATIONS
            break
        n_iter += 1
        active = active_where(p, g, lower, upper, free)
        system, rhs = damped_system(h, g, scale_squared, damping, active)
        step, ok = cholesky_solve(system, rhs)
        if not ok:
            damping, status = step_not_tried(damping, SINGULAR)
            continue
        velocity = np.clip(p + step, lower, upper) - p
        if (estimator != ESTIMATOR_MLE and bends_from(weighing)
                and _worth_bending(velocity, h, scale_squared, damping, chi2, tol)):
            # The step bends along the valley: velocity + acceleration / 2, or it is refused
            # like a rejected step when the acceleration is large next to the velocity.
            second = _geodesic_rhs(model, jacobian, jac_method, x, y, w, p, lower, upper,
                                   free, estimator, velocity, g, h, weighing)
            accelerated = second is not None
            if accelerated:
                _, second = damped_system(h, second, scale_squared, damping, active)
                acceleration, accelerated = cholesky_solve(system, second)
                accelerated = accelerated and (
                    2.0 * np.sqrt(np.sum(scale_squared * acceleration * acceleration))
                    <= GEODESIC_MAX_RATIO * np.sqrt(np.sum(scale_squared * velocity * velocity)))
            if not accelerated:
                damping, status = step_not_tried(damping, MACHINE_PRECISION)
                continue
            step = velocity + 0.5 * acceleration
        trial, small_step = clip_step_where(np, p, step, lower, upper, scale_squared, tol)
        trial_weighing = pass_weighing(robust, n_accepted, damping)
        trial_chi2, trial_g, trial_h, _ = _evaluate(model, jacobian, jac_method, x, y, w,
                                                    trial, lower, upper, free, estimator,
                                                    trial_weighing)
        predicted = predicted_reduction_where(np, h, step, scale_squared, damping)
        accepted, status, damping = judge_trial(chi2, trial_chi2, predicted, small_step, tol,
                                                damping)
        if accepted:
            p, chi2, g, h = trial, trial_chi2, trial_g, trial_h
            weighing = trial_weighing
            n_accepted += 1
            scale_squared = np.maximum(scale_squared, np.diag(h))
    information = _information(model, jacobian, jac_method, x, y, w, p, lower, upper, free,
                               estimator, h)
    covariance, ok = _invert(information, free)
    if not ok and status in CONVERGED_CODES:
        status = SINGULAR
    return p, chi2, n_iter, status, covariance


@implements("lm_batch")
def lm_batch(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, free,
             estimator, tol, max_iter):
    require_jac_method("lm_batch", "numpy", jac_method)
    n_fits, n_params = p0.shape
    params = np.empty((n_fits, n_params))
    chi2 = np.empty(n_fits)
    n_iter = np.empty(n_fits, dtype=np.int64)
    status = np.empty(n_fits, dtype=np.int64)
    covariance = np.empty((n_fits, n_params, n_params))
    free = np.asarray(free, dtype=bool)
    for fit in range(n_fits):
        (params[fit], chi2[fit], n_iter[fit], status[fit],
         covariance[fit]) = _fit_one(
            model, jacobian, jac_method, x[fit % x.shape[0]], ydata[fit],
            weights[fit % weights.shape[0]], p0[fit], lower[fit % lower.shape[0]],
            upper[fit % upper.shape[0]], free, estimator, tol, max_iter)
    return params, chi2, n_iter, status, covariance
