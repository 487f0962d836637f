"""Batched LM on NumPy, all fits in lockstep: the model is called once for every fit.

The reference :mod:`autofit.original.batch` fits one curve after another, so a batch of a
user's NumPy model costs a Python call of the model per fit and per evaluation, slower than
a loop of scipy's ``curve_fit``. Most models written for scipy broadcast: called with each
parameter as a column ``(n_fits, 1)`` they return ``(n_fits, n_points)``. This engine runs
the reference algorithm, step for step and with the same arithmetic per fit, on all running
fits at once: one model call evaluates every fit, the forward-difference Jacobian costs
``n_params`` calls for the whole batch, and the small linear algebra is vectorised over
fits. :func:`broadcasts` decides, on the call's own data, whether a model can run this way;
one that cannot runs on the reference.
"""

from __future__ import annotations

import numpy as np

from autofit._codes import (
    CONVERGED_CODES,
    CONVERGED_GTOL,
    ESTIMATOR_LSE,
    ESTIMATOR_MLE,
    GEODESIC_MAX_RATIO,
    GEODESIC_MIN_REDUCTION,
    GEODESIC_PROBE,
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
from autofit._rules import (
    FORWARD_STEP,
    active_where,
    bends_from,
    clip_step_where,
    geodesic_probe_terms,
    initial_damping,
    judge_trial_where,
    pass_weighing_where,
    point_weight_where,
    predicted_reduction_where,
    relative_step_where,
    robust_loss_where,
    step_not_tried_where,
)
from autofit.original.linalg import cholesky_solve, cholesky_solve_many, damped_system


def _solver(n_fits):
    """The small solves of a batch of ``n_fits``: a batch's vectorised ones, whose sums do
    not depend on which other fits still run; for a single fit (a robust ``curve_fit``)
    the reference's own ``cholesky_solve``, the reference's arithmetic and 3.5x faster for
    it (37 against 131 us with 5 parameters; a fit solves ~18 systems)."""
    if n_fits > 1:
        return cholesky_solve_many

    def solve_one(a, b):
        z, solved = cholesky_solve(a[0], b[0])
        return z[None, :], np.array([solved])

    return solve_one


def _call(f, x, p):
    """f on every row of ``p`` (k, n_params) at once: (k, n_points).

    x goes in as ``(k, n_points)`` (a view when shared), so that what the model builds from
    it (``np.full_like(x, c)``, ``np.zeros_like(x)``) has a row per fit too."""
    shape = (p.shape[0], x.shape[-1])
    columns = [p[:, j:j + 1] for j in range(p.shape[1])]
    # x[None] (read-only, as broadcast_to's view) and a result of the right shape as they
    # are: np.broadcast_to costs 5 us a call, and a single robust fit makes ~70 calls.
    if x.ndim == 1 and shape[0] == 1:
        x = x[None]
        x.flags.writeable = False
    else:
        x = np.broadcast_to(x, shape)
    out = np.asarray(f(x, *columns), dtype=np.float64)
    return out if out.shape == shape else np.broadcast_to(out, shape)


def broadcasts(f, x, p_rows) -> bool:
    """Whether ``f`` broadcasts over a leading axis of parameters, checked on ``p_rows``
    (a few fits' starts) with ``x`` shared ``(n_points,)`` or one row per fit: the same
    values, to rounding, as one call per fit."""
    try:
        with np.errstate(all="ignore"):
            together = _call(f, x, p_rows)
            apart = np.stack([np.asarray(f(x if x.ndim == 1 else x[i], *row),
                                         dtype=np.float64) for i, row in enumerate(p_rows)])
    except Exception:  # a model that cannot take columns runs on the reference
        return False
    if together.shape != apart.shape:
        return False
    magnitude = np.nanmax(np.abs(apart)) if np.any(np.isfinite(apart)) else 1.0
    return bool(np.allclose(together, apart, rtol=1e-12, atol=1e-14 * magnitude, equal_nan=True))


def _evaluate(f, x, y, w, p, upper, free, estimator, weighing=WEIGH_CURVATURE,
              jacobian=None):
    """χ², g, H at each row of p (the reference's ``_evaluate``); χ² inf where unusable,
    ``positive`` False where the Poisson model is ≤ 0, and what the geodesic probe needs:
    ``(wj, factor, offset)``, ``g_probe = wjᵀ (factor r_probe + offset)`` (least squares:
    ``J`` times ``w``, 1 and 0; a robust loss: ``J`` and
    :func:`autofit._rules.geodesic_probe_terms`; MLE: the
    plain ``J``). ``weighing``: a code or one per row (:func:`autofit._rules.point_weight`);
    with ``WEIGH_INFORMATION`` (MLE and the robust losses), H is the reference's
    ``_information``, whose inverse is the covariance. ``jacobian(x, p) -> (n_fits,
    n_points, n_params)``: the model's exact derivatives, else forward differences."""
    information = np.all(weighing == WEIGH_INFORMATION)
    with np.errstate(all="ignore"):
        f0 = _call(f, x, p)
        n_params = p.shape[1]
        if jacobian is not None:
            jac = jacobian(x, p)
        else:
            jac = np.empty(f0.shape + (n_params,))
            for j in range(n_params):
                h = relative_step_where(np, p[:, j], FORWARD_STEP)
                h = np.where(p[:, j] + h > upper[:, j], -h, h)
                shifted = p.copy()
                shifted[:, j] = p[:, j] + h
                h = shifted[:, j] - p[:, j]
                jac[:, :, j] = (_call(f, x, shifted) - f0) / h[:, None]
        used = w != 0.0
        # Every point used and every parameter free (a user's unweighted fit): nothing to
        # mask, the same numbers without the temporaries.
        every = bool(np.all(used))
        if not (every and np.all(free)):
            jac = np.where(used[:, :, None], jac * free, 0.0)
        # The geodesic probe's factor and offset of least squares (a robust loss's below).
        factor, offset = np.ones_like(f0), np.zeros_like(f0)
        if estimator == ESTIMATOR_MLE:
            positive = np.all(np.where(used, f0 > 0.0, True), axis=1)
            safe_f = np.where(used & positive[:, None], f0, 1.0)
            counts = used & (y > 0.0)
            chi2 = 2.0 * np.sum(np.where(used, w * (safe_f - y), 0.0), axis=1) - 2.0 * np.sum(
                np.where(counts, w * y * np.log(safe_f / np.where(counts, y, 1.0)), 0.0),
                axis=1)
            g = _transposed_times(jac, np.where(used, w * (y / safe_f - 1.0), 0.0))
            curvature = w / safe_f if information else w * y / (safe_f * safe_f)
            h = np.matmul((jac * np.where(used, curvature, 0.0)[:, :, None]).transpose(0, 2, 1),
                          jac)
            wj = jac
        elif estimator == ESTIMATOR_LSE:
            positive = np.ones(p.shape[0], dtype=bool)
            r = w * (y - f0) if every else np.where(used, w * (y - f0), 0.0)
            chi2 = np.einsum("kn,kn->k", r, r)
            wj = jac * w[:, :, None]
            g = _transposed_times(wj, r)
            h = np.matmul(wj.transpose(0, 2, 1), wj)  # batched BLAS products
        else:
            # A robust loss: Σ rho, each point's weight in H the loss's curvature
            # (autofit._rules.robust_loss). r is exactly 0 at weight-0 points, so every
            # term there is 0 too.
            positive = np.ones(p.shape[0], dtype=bool)
            r = w * (y - f0) if every else np.where(used, w * (y - f0), 0.0)
            z = r * r
            rho, rho1, rho2, curvature = robust_loss_where(np, z, estimator)
            chi2 = np.sum(rho, axis=1)
            g = _transposed_times(jac, w * rho1 * r)
            # H weighs each point by the loss's curvature or Newton's; the information
            # (whose inverse is the covariance) by scipy's max(rho1 + 2 rho2 z, eps).
            weight = point_weight_where(np, rho1, rho2, z, curvature,
                                        np.reshape(weighing, (-1, 1)))
            wj = jac
            in_h = w * w * weight if every else np.where(used, w * w * weight, 0.0)
            h = np.matmul((jac * in_h[:, :, None]).transpose(0, 2, 1), jac)
            if not information:
                factor, offset = geodesic_probe_terms(w, r, rho1, weight)
        finite = (np.isfinite(chi2) & np.all(np.isfinite(g), axis=1)
                  & np.all(np.isfinite(h), axis=(1, 2)) & positive)
    return np.where(finite, chi2, np.inf), g, h, positive, (wj, factor, offset)


def _geodesic(f, x, y, w, p, lower, upper, step, g, h, probe, system, scale_squared,
              damping, active, chi2, tol, solve=cholesky_solve_many):
    """The reference's geodesic acceleration for every row: ``(step, accepted)``, the step
    ``velocity + acceleration / 2`` where the acceleration is trusted (the step unchanged
    where it is too small to bend: the reference's ``_worth_bending``)."""
    velocity = np.clip(p + step, lower, upper) - p
    predicted = predicted_reduction_where(np, h, velocity, scale_squared, damping)
    worth = predicted > max(tol, GEODESIC_MIN_REDUCTION) * chi2
    with np.errstate(all="ignore"):
        f_probe = _call(f, x, p + GEODESIC_PROBE * velocity)
        r_probe = np.where(w != 0.0, w * (y - f_probe), 0.0)
        wj, factor, offset = probe
        g_probe = _transposed_times(wj, factor * r_probe + offset)
        second = (2.0 / GEODESIC_PROBE) * ((g_probe - g) / GEODESIC_PROBE
                                           + np.einsum("kpq,kq->kp", h, velocity))
    finite = np.all(np.isfinite(second), axis=1)
    _, second = damped_system(h, np.where(finite[:, None], second, 0.0), scale_squared, damping,
                               active)
    acceleration, solved = solve(system, second)
    trusted = (2.0 * np.sqrt(np.sum(scale_squared * acceleration * acceleration, axis=1))
               <= GEODESIC_MAX_RATIO * np.sqrt(np.sum(scale_squared * velocity * velocity, axis=1)))
    bent = np.where(worth[:, None], velocity + 0.5 * acceleration, step)
    return bent, ~worth | (finite & solved & trusted)


def _transposed_times(jac, v):
    """``jac[k].T @ v[k]`` for every fit k: (k, n_params)."""
    return np.matmul(jac.transpose(0, 2, 1), v[:, :, None])[:, :, 0]


def _not_attempted(x, y, w, p0, free, estimator):
    status = np.full(y.shape[0], RUNNING)
    nonfinite = ~(np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=1)
                  & np.all(np.isfinite(y), axis=1) & np.all(np.isfinite(w), axis=1)
                  & np.all(np.isfinite(p0), axis=1))
    negative = np.any((w != 0.0) & (y < 0.0), axis=1) & (estimator == ESTIMATOR_MLE)
    too_few = np.count_nonzero(w, axis=1) < np.count_nonzero(free)
    status = np.where(too_few, TOO_FEW_POINTS, status)
    status = np.where(negative, MLE_NEGATIVE_DATA, status)
    return np.where(nonfinite, NONFINITE_DATA, status)


def lm_batch_broadcast(f, x, ydata, weights, p0, lower, upper, free, estimator, tol,
                       max_iter, jacobian=None):
    """``lm_batch`` (forward differences, or ``jacobian(x, p) -> (n_fits, n_points,
    n_params)``: the exact derivatives) for a user's function ``f(x, *params)`` that
    broadcasts over fits; ``x`` is ``(1, n_points)`` shared or ``(n_fits, n_points)``.

    Returns params (n_fits, n_params), chi2, n_iter, status and covariance, as the
    reference's ``lm_batch``.
    """
    n_fits, n_params = p0.shape
    solve = _solver(n_fits)
    y = ydata
    w = np.broadcast_to(weights, y.shape)
    xs = np.broadcast_to(x, y.shape)  # only to find the fits with non-finite x
    lower = np.broadcast_to(lower, p0.shape)
    upper = np.broadcast_to(upper, p0.shape)
    free = np.asarray(free, dtype=bool)
    params = p0.astype(np.float64, copy=True)
    chi2 = np.full(n_fits, np.nan)
    n_iter = np.zeros(n_fits, dtype=np.int64)
    covariance = np.full((n_fits, n_params, n_params), np.nan)
    status = _not_attempted(xs, y, w, p0, free, estimator)
    go = np.flatnonzero(status == RUNNING)
    p = np.clip(p0[go], lower[go], upper[go])
    params[go] = p

    def at(rows):  # the data of the fits ``rows`` (indices into the batch)
        return (x[0] if x.shape[0] == 1 else x[rows]), y[rows], w[rows], upper[rows]

    x_go, y_go, w_go, upper_go = at(go)
    c, g, h, positive, probe = _evaluate(f, x_go, y_go, w_go, p, upper_go, free, estimator,
                                         jacobian=jacobian)
    bad = ~np.isfinite(c)
    status[go[bad]] = np.where(positive[bad], NONFINITE, MLE_NONPOSITIVE_MODEL)
    chi2[go] = np.where(bad, np.nan, c)
    keep = ~bad
    go, p, c, g, h = go[keep], p[keep], c[keep], g[keep], h[keep]
    probe = [part[keep] for part in probe]
    no_gradient = ~np.any((g != 0.0) & free, axis=1)
    status[go[no_gradient]] = CONVERGED_GTOL
    scale_squared = np.einsum("kii->ki", h).copy()
    robust = estimator not in (ESTIMATOR_LSE, ESTIMATOR_MLE)
    damping = np.full(go.shape[0], initial_damping(robust))
    n_accepted = np.zeros(go.shape[0], dtype=np.int64)
    # How the pass at each fit's parameters weighed its points (_rules.pass_weighing).
    weighing = np.full(go.shape[0], WEIGH_CURVATURE)
    # State of every fit that started (index into go); the loop works on the running ones.
    state_p, state_c, state_g, state_h, state_probe = p, c, g, h, probe
    running = ~no_gradient
    while np.any(running):
        r = np.flatnonzero(running)
        out = n_iter[go[r]] >= max_iter
        status[go[r[out]]] = MAX_ITERATIONS
        running[r[out]] = False
        r = r[~out]
        if r.size == 0:
            break
        n_iter[go[r]] += 1
        p, g, h = state_p[r], state_g[r], state_h[r]
        lo, hi = lower[go[r]], upper[go[r]]
        active = active_where(p, g, lo, hi, free)
        system, rhs = damped_system(h, g, scale_squared[r], damping[r], active)
        step, ok = solve(system, rhs)
        failed = r[~ok]
        damping[failed], status[go[failed]] = step_not_tried_where(np, damping[failed], SINGULAR)
        running[failed] = status[go[failed]] == RUNNING
        r, p, g, h, step = r[ok], p[ok], g[ok], h[ok], step[ok]
        if r.size == 0:
            continue
        if estimator != ESTIMATOR_MLE:
            c = np.flatnonzero(bends_from(weighing[r]))
            bent = np.ones(r.size, dtype=bool)
            if c.size:
                rc, step = r[c], step.copy()
                step[c], bent[c] = _geodesic(
                    f, at(go[rc])[0], y[go[rc]], w[go[rc]], p[c], lower[go[rc]],
                    upper[go[rc]], step[c], g[c], h[c], [part[rc] for part in state_probe],
                    system[ok][c], scale_squared[rc], damping[rc], active[ok][c], state_c[rc],
                    tol, solve)
            refused = r[~bent]
            damping[refused], status[go[refused]] = step_not_tried_where(
                np, damping[refused], MACHINE_PRECISION)
            running[refused] = status[go[refused]] == RUNNING
            r, p, g, h, step = r[bent], p[bent], g[bent], h[bent], step[bent]
            if r.size == 0:
                continue
        s = scale_squared[r]
        trial, small_step = clip_step_where(np, p, step, lower[go[r]], upper[go[r]], s, tol)
        xs_r, y_r, w_r, up_r = at(go[r])
        trial_weighing = pass_weighing_where(np, robust, n_accepted[r], damping[r])
        t_c, t_g, t_h, _, t_probe = _evaluate(f, xs_r, y_r, w_r, trial, up_r, free, estimator,
                                               trial_weighing, jacobian)
        predicted = predicted_reduction_where(np, h, step, s, damping[r])
        with np.errstate(invalid="ignore"):
            accept, status[go[r]], damping[r] = judge_trial_where(
                np, state_c[r], t_c, predicted, small_step, tol, damping[r])
        a = r[accept]
        n_accepted[a] += 1
        weighing[a] = trial_weighing[accept]
        state_p[a], state_c[a], state_g[a], state_h[a] = (trial[accept], t_c[accept],
                                                          t_g[accept], t_h[accept])
        for part, trial_part in zip(state_probe, t_probe):
            part[a] = trial_part[accept]
        scale_squared[a] = np.maximum(scale_squared[a], np.einsum("kii->ki", t_h[accept]))
        running[r] = status[go[r]] == RUNNING
    params[go], chi2[go] = state_p, state_c
    if go.size:
        information = state_h
        if estimator != ESTIMATOR_LSE:
            xs_g, y_g, w_g, up_g = at(go)
            _, _, information, _, _ = _evaluate(f, xs_g, y_g, w_g, state_p, up_g, free,
                                                estimator, WEIGH_INFORMATION, jacobian)
        k = go.size
        system, _ = damped_system(information, np.zeros((k, n_params)),
                                   np.zeros((k, n_params)), np.zeros(k),
                                   np.broadcast_to(free, (k, n_params)))
        inverse = np.empty((k, n_params, n_params))
        inverted = np.ones(k, dtype=bool)
        for j in range(n_params):
            unit = np.zeros((k, n_params))
            unit[:, j] = 1.0
            column, ok = solve(system, unit)
            inverse[:, :, j] = column
            inverted &= ok
        both = free[:, None] & free[None, :]
        covariance[go] = np.where(inverted[:, None, None], np.where(both, inverse, 0.0),
                                  np.nan)
        lost = go[~inverted & np.isin(status[go], CONVERGED_CODES)]
        status[lost] = SINGULAR
    return params, chi2, n_iter, status, covariance


__all__ = ["broadcasts", "lm_batch_broadcast"]
