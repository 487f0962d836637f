"""Levenberg-Marquardt for one fit to very many points, without the Jacobian (NumPy reference).

This file defines the algorithm of ``lm_fused``; the numba and jax kernels follow it step
for step and the generated tests hold them to it.

Each iteration is one pass over the points, in chunks of :data:`CHUNK` points: the model
and its Jacobian are evaluated on a chunk and folded at once into χ², ``g = JᵀW²(y - f)``
(= -½ ∂χ²/∂p) and the Gauss-Newton matrix ``H = JᵀW²J``; the ``(n_points, n_params)``
Jacobian is never stored, so the memory beyond the data is that of one chunk.

The iteration is that of the batched solver (:mod:`autofit.original.batch`): its damping
(λ starts at 1e-3, ×10 on a rejected step, after an accepted one Nielsen's factor of the
gain ratio, a tenth at best: :func:`autofit._rules.judge_trial`) on Marquardt's
``scale_squared`` (the running maximum of ``diag(H)``), a Cholesky solve of
``(H + λ diag(scale_squared)) δ = g`` over the active parameters, bounds by projection with
an active set. Its stopping tests take scipy's three tolerances:

- before each step: ``chi2 == 0`` (``CONVERGED_FTOL``); the largest cosine between the
  residual vector and an active Jacobian column, ``|g_j| / sqrt(H_jj chi2)``, at most
  ``gtol`` (``CONVERGED_GTOL``); the reduction the Gauss-Newton step predicts,
  ``g·H⁻¹g`` over the active parameters, at most ``ftol * chi2`` for a step within
  :data:`UNSEEN_STEP` of the parameters (``CONVERGED_FTOL``; that step is taken without a
  pass over the points); the budget ``max_nfev`` spent
  (``MAX_NFEV``);
- an accepted step whose actual and predicted relative reductions of χ² are both at most
  ``ftol`` ends with ``CONVERGED_FTOL``; ftol is taken no lower than :func:`chi2_rounding`,
  the relative rounding of a sum of n_points squares (below it a reduction of χ² cannot be
  told from rounding, and a fit of 1e7 points at ftol = 1e-15 would iterate on noise);
  one whose scaled size is at most ``xtol`` times the scaled parameters with
  ``CONVERGED_XTOL`` (``..._FTOL_XTOL`` for both); a rejected step passing either test
  ends the fit the same way (the minimum is closer than the tolerances);
- λ beyond ``MAX_DAMPING`` ends with ``MACHINE_PRECISION`` after a rejected step, or
  ``SINGULAR`` after a failed factorisation.

Robust losses (``estimator``: ``lm_batch``'s codes other than Poisson MLE) are the batched
solver's: χ² is ``Σ rho``, ``g = Σ w rho1 r J`` and ``H = Σ w² c J Jᵀ`` with c the loss's
curvature of :func:`autofit._rules.robust_loss`, and every test above reads them unchanged.
The information returned is then scipy's ``Σ w² max(rho1 + 2 rho2 z, eps) J Jᵀ`` at the
final parameters, from one more pass (beyond f_scale ``H`` keeps the square-root
residuals' Gauss-Newton weight, not the curvature the covariance needs).
"""

import math

import numpy as np

from autofit._codes import (
    BATCH_INITIAL_DAMPING,
    CONVERGED_FTOL,
    CONVERGED_GTOL,
    ESTIMATOR_LSE,
    JAC_ANALYTIC,
    JAC_CENTRAL,
    JAC_FORWARD,
    MAX_NFEV,
    NONFINITE,
    RUNNING,
    SINGULAR,
    WEIGH_INFORMATION,
)
from autofit._declarations import implements, require_jac_method
from autofit._rules import (
    chi2_rounding,
    clip_step,
    evaluations_per_pass,
    fused_estimator,
    is_active,
    judge_trial,
    point_weight_where,
    predicted_reduction,
    robust_loss_where,
    step_not_tried,
    unseen_step_ends,
)
from autofit.original.jacobians import jacobian_central, jacobian_forward, value_and_jacobian
from autofit.original.linalg import damped_solve

# Points per chunk: the chunk's Jacobian and temporaries (a few MB) stay in cache.
CHUNK = 65536


def _chunk_jacobian(model, jacobian, jac_method, mx, p, f, lower, upper):
    if jac_method == JAC_ANALYTIC:
        return jacobian(mx, p)
    if jac_method == JAC_FORWARD:
        return jacobian_forward(model, mx, p, f, lower, upper)
    if jac_method == JAC_CENTRAL:
        return jacobian_central(model, mx, p, lower, upper)
    raise ValueError("lm_fused: jac_method must be JAC_ANALYTIC, JAC_FORWARD or JAC_CENTRAL "
                     "on this backend")


def _chunks(model, jacobian, jac_method, x, ydata, weights, p, lower, upper):
    """Per chunk: ``(y, w, f, jac, used)`` at ``p`` (``used``: the points of weight != 0).
    A weight shared by every point comes as a number, and then ``used`` is None where it
    is not 0: nothing to mask (a user's unweighted fit; the masks and the array of equal
    weights took half the time of a pass's sums on 3,000 points, for the same numbers)."""
    n_points = ydata.shape[0]
    for start in range(0, n_points, CHUNK):
        stop = min(start + CHUNK, n_points)
        mx = x[0, start:stop] if x.shape[0] == 1 else x[:, start:stop]
        if jac_method == JAC_ANALYTIC:
            f, jac = value_and_jacobian(model, jacobian, mx, p)
        else:
            f = model(mx, p)
            jac = _chunk_jacobian(model, jacobian, jac_method, mx, p, f, lower, upper)
        if weights.shape[0] == 1 and weights[0] != 0.0:
            yield ydata[start:stop], weights[0], f, jac, None
        else:
            w = weights[start:stop] if weights.shape[0] > 1 else np.full(stop - start,
                                                                         weights[0])
            yield ydata[start:stop], w, f, jac, w != 0.0


def _masked(used, values, ndim=1):
    """``values`` where the point is ``used``, else 0 (``used`` None: every point is)."""
    if used is None:
        return values
    return np.where(used if ndim == 1 else used[:, None], values, 0.0)


def normal_equations(model, jacobian, jac_method, x, ydata, weights, p, lower, upper,
                     estimator=ESTIMATOR_LSE):
    """One pass: ``(chi2, g, h)`` at ``p``, chunk by chunk; chi2 is inf if any is not finite.

    Points of weight 0 contribute nothing, even where the model is not finite there. For a
    robust ``estimator`` they are the loss's sums (module docstring).
    """
    n_params = p.shape[0]
    chi2 = 0.0
    g = np.zeros(n_params)
    h = np.zeros((n_params, n_params))
    for y, w, f, jac, used in _chunks(model, jacobian, jac_method, x, ydata, weights, p,
                                      lower, upper):
        # Not finite (a model that overflows, or is inf at points of weight 0, masked here)
        # is what the test below reports: no RuntimeWarning from autofit's own sums. The
        # model's warnings, raised in _chunks, still reach the user.
        with np.errstate(invalid="ignore", over="ignore"):
            # (a weight of 1, an unweighted fit's, multiplies nothing: the same numbers)
            unweighted = used is None and w == 1.0
            r = y - f if unweighted else _masked(used, w * (y - f))
            if estimator == ESTIMATOR_LSE:
                wj = jac if unweighted else _masked(used, jac * np.asarray(w)[..., None],
                                                    ndim=2)
                chi2 += r @ r
                g += wj.T @ r
                h += wj.T @ wj
                continue
            # r is 0 where unused, where every loss is 0 with slope 1: only jac needs the
            # mask.
            rho, rho1, _, curvature = robust_loss_where(np, r * r, estimator)
            jac = _masked(used, jac, ndim=2)
            chi2 += np.sum(rho)
            g += jac.T @ (w * rho1 * r)
            h += (jac * (w * w * curvature)[:, None]).T @ jac
    if not (np.isfinite(chi2) and np.all(np.isfinite(g)) and np.all(np.isfinite(h))):
        return np.inf, g, h
    return chi2, g, h


def robust_information(model, jacobian, jac_method, x, ydata, weights, p, lower, upper,
                       estimator):
    """One pass: scipy's ``Σ w² max(rho1 + 2 rho2 z, eps) J Jᵀ`` at ``p`` for a robust
    ``estimator`` (the matrix whose pseudo-inverse is its covariance)."""
    n_params = p.shape[0]
    information = np.zeros((n_params, n_params))
    for y, w, f, jac, used in _chunks(model, jacobian, jac_method, x, ydata, weights, p,
                                      lower, upper):
        with np.errstate(invalid="ignore", over="ignore"):  # as in normal_equations
            r = _masked(used, w * (y - f))
            z = r * r
            _, rho1, rho2, curvature = robust_loss_where(np, z, estimator)
            jac = _masked(used, jac, ndim=2)
            weight = point_weight_where(np, rho1, rho2, z, curvature, WEIGH_INFORMATION)
            information += (jac * (w * w * weight)[:, None]).T @ jac
    return information


def _cosines(g, rows, chi2, active):
    """``(largest, newton_bound)`` for one fit's lists (``rows``: H's): the largest cosine
    between the residual vector and an active column, ``|g_j| / sqrt(H_jj chi2)`` (the gtol
    test), and a lower bound of the Gauss-Newton step's predicted reduction over chi2,
    ``g·H⁻¹g / chi2 >= Σ cosine_j² / n``: with D = diag(H), ``D^-1/2 H D^-1/2`` has a unit
    diagonal, so its largest eigenvalue is at most n (the active columns with ``H_jj > 0``;
    one with ``H_jj = 0`` makes H singular, and then no Newton step is taken at all)."""
    largest = 0.0
    squares = 0.0
    counted = 0
    root_chi2 = math.sqrt(chi2)
    for j, g_j in enumerate(g):
        if active[j] and rows[j][j] > 0.0:
            cosine = abs(g_j) / (math.sqrt(rows[j][j]) * root_chi2)
            largest = max(largest, cosine)
            squares += cosine * cosine
            counted += 1
    return largest, squares / max(counted, 1)


@implements("lm_fused")
def lm_fused(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, ftol, xtol,
             gtol, max_nfev, estimator=ESTIMATOR_LSE):
    require_jac_method("lm_fused", "numpy", jac_method)
    estimator = fused_estimator(estimator)

    def evaluate(p):
        return normal_equations(model, jacobian, jac_method, x, ydata, weights, p, lower,
                                upper, estimator)

    cost = evaluations_per_pass(jac_method, p0.shape[0])
    ftol = max(ftol, chi2_rounding(ydata.shape[0]))
    p = np.minimum(np.maximum(p0, lower), upper)
    chi2, g, h = evaluate(p)
    nfev = cost
    if not np.isfinite(chi2):
        return p, chi2, NONFINITE, nfev, 0, h
    # The iteration's small arithmetic runs on Python floats, with the scalar rules that
    # numba compiles (the same numbers): NumPy's per-call cost on arrays of a handful of
    # parameters made it 50 us an iteration, as much as a pass over 3,000 points.
    n_params = p.shape[0]
    p, lower_list, upper_list = p.tolist(), lower.tolist(), upper.tolist()
    g, rows = g.tolist(), h.tolist()
    scale_squared = [rows[a][a] for a in range(n_params)]
    damping = BATCH_INITIAL_DAMPING
    n_iter = 0
    status = RUNNING
    while status == RUNNING:
        # The active set: a parameter at a bound whose descent direction points out is held.
        active = [is_active(p[a], g[a], lower_list[a], upper_list[a], True)
                  for a in range(n_params)]
        if chi2 == 0.0:
            status = CONVERGED_FTOL
            break
        largest_cosine, newton_bound = _cosines(g, rows, chi2, active)
        if largest_cosine <= gtol:
            status = CONVERGED_GTOL
            break
        # The Gauss-Newton step's predicted reduction (g·H⁻¹g, the undamped ``predicted``
        # below) within ftol: the step is taken, and the pass that would only confirm that
        # χ² did not change measurably is skipped (4 passes instead of 5 for a fit of 1e6
        # points). χ², g and H stay those of the last pass (within ftol of the new point's).
        # Only a small step is taken unseen: along a direction χ² barely sees, a tiny
        # predicted reduction can come with a large step. Where the bound of _cosines is
        # already twice ftol the step cannot pass, and is not solved for (numba's loop
        # solves it and finds the same).
        if newton_bound <= 2.0 * ftol:
            newton, factored = damped_solve(rows, g, scale_squared, 0.0, active)
            if factored and unseen_step_ends(newton, g, active, scale_squared, p, chi2,
                                             ftol):
                p, unseen = [0.0] * n_params, p
                clip_step(unseen, newton, lower_list, upper_list, scale_squared, xtol, p)
                status = CONVERGED_FTOL
                break
        if nfev >= max_nfev:
            status = MAX_NFEV
            break
        step, ok = damped_solve(rows, g, scale_squared, damping, active)
        if not ok:
            damping, status = step_not_tried(damping, SINGULAR)
            continue
        trial = [0.0] * n_params
        small_step = clip_step(p, step, lower_list, upper_list, scale_squared, xtol, trial)
        trial_chi2, trial_g, trial_h = evaluate(np.array(trial))
        nfev += cost
        n_iter += 1
        # (MINPACK also tests ftol on rejected steps: without it, a fit of 1e7 points
        # rejected ~10 steps at rounding level while λ grew until the xtol test fired.)
        predicted = predicted_reduction(rows, step, scale_squared, damping)
        accepted, status, damping = judge_trial(chi2, trial_chi2, predicted, small_step, ftol,
                                                damping)
        if accepted:
            p, chi2, g, h = trial, trial_chi2, trial_g.tolist(), trial_h
            rows = h.tolist()
            scale_squared = [max(largest, rows[a][a])
                             for a, largest in enumerate(scale_squared)]
    p = np.array(p)
    if estimator != ESTIMATOR_LSE:
        # Not counted in nfev: like lm_batch's information pass, it is no part of the fit.
        h = robust_information(model, jacobian, jac_method, x, ydata, weights, p, lower,
                               upper, estimator)
    return p, chi2, status, nfev, n_iter, h
