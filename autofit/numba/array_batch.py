"""Batched LM for models that work on whole arrays of points (numba, CPU).

numba's main batch engine (:mod:`autofit.numba.batch`) calls a model one scalar point at a
time. Models written the way people write them for scipy often cannot run that way: they
build their output with ``np.full_like(x, c)`` or ``np.zeros_like(x)``, index ``x``, or call
array functions. This engine runs the reference algorithm of
:mod:`autofit.original.batch` step for step on such a model compiled for arrays
(:mod:`autofit.numba.host`'s first-class ``model(x, params)``), ``prange`` over the fits:
the same statuses, tolerances and covariances as every other batch engine. Its driver is
compiled once per layout of ``x`` and kept in numba's disk cache, so a new model costs only
its own compilation.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit, prange, types

from autofit import _rules
from autofit._codes import (
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
from autofit.numba.first_class import JACOBIAN_TYPES, MODEL_TYPES, first_class, is_converged
from autofit.numba.jacobians import jacobian_forward
from autofit.numba.linalg import cholesky_factor, cholesky_substitute, damped_system

# The iteration's decisions, shared with every lm_batch and lm_fused (autofit._rules).
_is_active = njit(inline="always")(_rules.is_active)
_clip_step = njit(inline="always")(_rules.clip_step)
_predicted_reduction = njit(inline="always")(_rules.predicted_reduction)
_judge_trial = njit(inline="always")(_rules.judge_trial)
_step_not_tried = njit(inline="always")(_rules.step_not_tried)
_factor = njit(inline="always")(cholesky_factor)
_substitute = njit(inline="always")(cholesky_substitute)
_damped = njit(inline="always")(damped_system)
_robust_loss = njit(inline="always")(_rules.robust_loss)
_geodesic_probe_weight = njit(inline="always")(_rules.geodesic_probe_weight)
_point_weight = njit(inline="always")(_rules.point_weight)
_pass_weighing = njit(inline="always")(_rules.pass_weighing)
_initial_damping = njit(inline="always")(_rules.initial_damping)
_bends_from = njit(inline="always")(_rules.bends_from)

_F8 = types.float64


@njit(cache=True, error_model="numpy")
def _sums(f, jac, y, w, free, estimator, weighing):
    """χ², g and H over the points of non-zero weight (the reference's ``_evaluate``), a
    robust loss's points weighed in H as ``weighing`` says (:func:`_rules.point_weight`),
    or with ``WEIGH_INFORMATION`` the matrix whose inverse is the covariance in H (the
    Poisson Fisher information, or scipy's for a robust loss: the reference's
    ``_information``). ``ok`` is
    False where the model is not usable (non-finite, or ≤ 0 for MLE: then ``positive`` is
    False)."""
    n_points, n_params = jac.shape
    g = np.zeros(n_params)
    h = np.zeros((n_params, n_params))
    chi2 = 0.0
    row = np.empty(n_params)
    for i in range(n_points):
        if w[i] == 0.0:
            continue
        if estimator == ESTIMATOR_MLE:
            if not f[i] > 0.0:
                return np.inf, g, h, False
            chi2 += 2.0 * w[i] * (f[i] - y[i])
            if y[i] > 0.0:
                chi2 -= 2.0 * w[i] * y[i] * np.log(f[i] / y[i])
            residual_weight = w[i] * (y[i] / f[i] - 1.0)
            curvature = (w[i] / f[i] if weighing == WEIGH_INFORMATION
                         else w[i] * y[i] / (f[i] * f[i]))
            for j in range(n_params):
                row[j] = jac[i, j] if free[j] else 0.0
                g[j] += row[j] * residual_weight
            for j in range(n_params):
                for k in range(j, n_params):
                    h[j, k] += row[j] * row[k] * curvature
        elif estimator == ESTIMATOR_LSE:
            r = w[i] * (y[i] - f[i])
            chi2 += r * r
            for j in range(n_params):
                row[j] = w[i] * jac[i, j] if free[j] else 0.0
                g[j] += row[j] * r
            for j in range(n_params):
                for k in range(j, n_params):
                    h[j, k] += row[j] * row[k]
        else:
            # A robust loss: Σ rho, each point's weight in H the loss's curvature or
            # Newton's (see autofit._rules.pass_weighing).
            r = w[i] * (y[i] - f[i])
            z = r * r
            rho, rho1, rho2, curvature = _robust_loss(z, estimator)
            chi2 += rho
            residual_weight = w[i] * rho1 * r
            curvature = w[i] * w[i] * _point_weight(rho1, rho2, z, curvature, weighing)
            for j in range(n_params):
                row[j] = jac[i, j] if free[j] else 0.0
                g[j] += row[j] * residual_weight
            for j in range(n_params):
                for k in range(j, n_params):
                    h[j, k] += row[j] * row[k] * curvature
    for j in range(n_params):
        for k in range(j):
            h[j, k] = h[k, j]
    finite = np.isfinite(chi2)
    for j in range(n_params):
        finite = finite and np.isfinite(g[j])
        for k in range(n_params):
            finite = finite and np.isfinite(h[j, k])
    return (chi2 if finite else np.inf), g, h, True


@njit(cache=True, error_model="numpy")
def _model_jacobian(model, jacobian, jac_method, x, p, lower, upper):
    f = model(x, p)
    if jac_method == JAC_ANALYTIC:
        return f, jacobian(x, p)
    return f, jacobian_forward(model, x, p, f, lower, upper)


@njit(cache=True, error_model="numpy")
def _damped_system(h, g, scale_squared, damping, active):
    n_params = g.shape[0]
    system = np.empty((n_params, n_params))
    rhs = np.empty(n_params)
    _damped(h, g, scale_squared, damping, active, system, rhs, n_params)
    return system, rhs


@njit(cache=True, error_model="numpy")
def _cholesky_solve(system, rhs):
    """Factor ``system`` in place and solve it for ``rhs``: ``(z, ok)``."""
    n_params = rhs.shape[0]
    z = np.zeros(n_params)
    if not _factor(system, n_params):
        return z, False
    _substitute(system, rhs, z, n_params)
    return z, True


@njit(cache=True, error_model="numpy")
def _bend(model, x, y, w, p, lower, upper, free, estimator, weighing, active, g, h,
          scale_squared, damping, system, f, jac, step, chi2, tol):
    """The reference's geodesic acceleration (least squares and robust losses): ``(step,
    ok)``, the step ``velocity + acceleration / 2``; ok False when the acceleration is not
    finite or large next to the velocity; the step unchanged when its predicted reduction is
    within tol of χ² (the reference's ``_worth_bending``). ``f`` and ``jac`` are the model
    and the Jacobian that formed g and H, ``weighing`` how that pass weighed the points."""
    n_params = p.shape[0]
    velocity = np.empty(n_params)
    probe = np.empty(n_params)
    for j in range(n_params):
        velocity[j] = min(max(p[j] + step[j], lower[j]), upper[j]) - p[j]
        probe[j] = p[j] + GEODESIC_PROBE * velocity[j]
    predicted = _predicted_reduction(h, velocity, scale_squared, damping)
    if not predicted > max(tol, GEODESIC_MIN_REDUCTION) * chi2:
        return step, True
    f_probe = model(x, probe)
    g_probe = np.zeros(n_params)
    for i in range(y.shape[0]):
        if w[i] == 0.0:
            continue
        if estimator == ESTIMATOR_LSE:
            weight = w[i] * w[i] * (y[i] - f_probe[i])
        else:
            # The model's bending along v, each point weighed as H weighs it.
            r = w[i] * (y[i] - f[i])
            z = r * r
            _, rho1, rho2, curvature = _robust_loss(z, estimator)
            weight = _geodesic_probe_weight(w[i], r, w[i] * (y[i] - f_probe[i]), rho1,
                                            _point_weight(rho1, rho2, z, curvature, weighing))
        for j in range(n_params):
            if free[j]:
                g_probe[j] += weight * jac[i, j]
    second = np.zeros(n_params)
    for j in range(n_params):
        if not np.isfinite(g_probe[j]):
            return velocity, False
        h_velocity = 0.0
        for k in range(n_params):
            h_velocity += h[j, k] * velocity[k]
        if active[j]:
            second[j] = (2.0 / GEODESIC_PROBE) * ((g_probe[j] - g[j]) / GEODESIC_PROBE
                                                  + h_velocity)
    acceleration = np.empty(n_params)
    _substitute(system, second, acceleration, n_params)  # system holds the step's factor
    velocity2 = 0.0
    acceleration2 = 0.0
    for j in range(n_params):
        velocity2 += scale_squared[j] * velocity[j] * velocity[j]
        acceleration2 += scale_squared[j] * acceleration[j] * acceleration[j]
    if not (2.0 * np.sqrt(acceleration2) <= GEODESIC_MAX_RATIO * np.sqrt(velocity2)):
        return velocity, False
    for j in range(n_params):
        velocity[j] += 0.5 * acceleration[j]
    return velocity, True


@njit(cache=True, error_model="numpy")
def _not_attempted(x, y, w, p0, free, estimator):
    for value in x.ravel():
        if not np.isfinite(value):
            return NONFINITE_DATA
    used = 0
    for i in range(y.shape[0]):
        if not (np.isfinite(y[i]) and np.isfinite(w[i])):
            return NONFINITE_DATA
        if w[i] != 0.0:
            used += 1
            if estimator == ESTIMATOR_MLE and y[i] < 0.0:
                return MLE_NEGATIVE_DATA
    n_free = 0
    for j in range(p0.shape[0]):
        if not np.isfinite(p0[j]):
            return NONFINITE_DATA
        if free[j]:
            n_free += 1
    if used < n_free:
        return TOO_FEW_POINTS
    return RUNNING


@njit(cache=True, error_model="numpy")
def _fit_one(model, jacobian, jac_method, x, y, w, p0, lower, upper, free, estimator, tol,
             max_iter, params_out, covariance_out):
    """The reference's ``_fit_one``; writes params and covariance, returns the rest."""
    n_params = p0.shape[0]
    covariance_out[:, :] = np.nan
    status = _not_attempted(x, y, w, p0, free, estimator)
    if status != RUNNING:
        params_out[:] = p0
        return np.nan, 0, status
    p = np.empty(n_params)
    for j in range(n_params):
        p[j] = min(max(p0[j], lower[j]), upper[j])
    f_p, jac = _model_jacobian(model, jacobian, jac_method, x, p, lower, upper)
    # How the pass at p weighed its points, as a plain int (int() drops numba's literal
    # type: _sums would be compiled once for each literal value).
    weighing = int(WEIGH_CURVATURE)
    chi2, g, h, positive = _sums(f_p, jac, y, w, free, estimator, weighing)
    params_out[:] = p
    if not np.isfinite(chi2):
        return np.nan, 0, NONFINITE if positive else MLE_NONPOSITIVE_MODEL
    any_gradient = False
    for j in range(n_params):
        if free[j] and g[j] != 0.0:
            any_gradient = True
    if not any_gradient:
        status = CONVERGED_GTOL
    scale_squared = np.empty(n_params)
    for j in range(n_params):
        scale_squared[j] = h[j, j]
    robust = estimator != ESTIMATOR_LSE and estimator != ESTIMATOR_MLE
    damping = _initial_damping(robust)
    n_iter = 0
    n_accepted = 0
    active = np.empty(n_params, dtype=np.bool_)
    trial = np.empty(n_params)
    while status == RUNNING:
        if n_iter >= max_iter:
            status = MAX_ITERATIONS
            break
        n_iter += 1
        for j in range(n_params):
            active[j] = _is_active(p[j], g[j], lower[j], upper[j], free[j])
        system, rhs = _damped_system(h, g, scale_squared, damping, active)
        step, ok = _cholesky_solve(system, rhs)
        if not ok:
            damping, status = _step_not_tried(damping, SINGULAR)
            continue
        if estimator != ESTIMATOR_MLE and _bends_from(weighing):
            step, bent = _bend(model, x, y, w, p, lower, upper, free, estimator, weighing,
                               active, g, h, scale_squared, damping, system, f_p, jac, step,
                               chi2, tol)
            if not bent:
                damping, status = _step_not_tried(damping, MACHINE_PRECISION)
                continue
        small_step = _clip_step(p, step, lower, upper, scale_squared, tol, trial)
        f, trial_jac = _model_jacobian(model, jacobian, jac_method, x, trial, lower, upper)
        trial_weighing = int(_pass_weighing(robust, n_accepted, damping))
        trial_chi2, trial_g, trial_h, _ = _sums(f, trial_jac, y, w, free, estimator,
                                                trial_weighing)
        predicted = _predicted_reduction(h, step, scale_squared, damping)
        accepted, status, damping = _judge_trial(chi2, trial_chi2, predicted, small_step, tol,
                                                 damping)
        if accepted:
            p = trial.copy()
            chi2, g, h, f_p, jac = trial_chi2, trial_g, trial_h, f, trial_jac
            weighing = trial_weighing
            n_accepted += 1
            for j in range(n_params):
                scale_squared[j] = max(scale_squared[j], h[j, j])
    params_out[:] = p
    if estimator != ESTIMATOR_LSE:
        # The information matrix of MLE or of a robust loss, from the pass at p kept above.
        _, _, h, _ = _sums(f_p, jac, y, w, free, estimator, int(WEIGH_INFORMATION))
    # The covariance: the inverse over the free parameters (identity rows for fixed ones).
    system, _ = _damped_system(h, np.zeros(n_params), np.zeros(n_params), 0.0, free)
    if not _factor(system, n_params):
        covariance_out[:, :] = np.nan
        if is_converged(status):
            status = SINGULAR
        return chi2, n_iter, status
    unit = np.zeros(n_params)
    column = np.empty(n_params)
    for j in range(n_params):
        unit[:] = 0.0
        unit[j] = 1.0
        _substitute(system, unit, column, n_params)
        for i in range(n_params):
            covariance_out[i, j] = column[i] if free[i] and free[j] else 0.0
    return chi2, n_iter, status


def _batch(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, free,
           estimator, tol, max_iter):
    n_fits, n_params = p0.shape
    params = np.empty((n_fits, n_params))
    chi2 = np.empty(n_fits)
    n_iter = np.empty(n_fits, dtype=np.int64)
    status = np.empty(n_fits, dtype=np.int64)
    covariance = np.empty((n_fits, n_params, n_params))
    for fit in prange(n_fits):
        # x is (n_x, n_points) for one variable, (n_x, n_variables, n_points) for several:
        # its row is what the model takes.
        chi2[fit], n_iter[fit], status[fit] = _fit_one(
            model, jacobian, jac_method, x[fit % x.shape[0]], ydata[fit],
            weights[fit % weights.shape[0]], p0[fit], lower[fit % lower.shape[0]],
            upper[fit % upper.shape[0]], free, estimator, tol, max_iter, params[fit],
            covariance[fit])
    return params, chi2, n_iter, status, covariance


_lock = threading.Lock()
_drivers: dict = {}


def _driver(n_variables: int):
    """The batch driver for models of ``n_variables`` variables, compiled once (disk cache)."""
    with _lock:
        if n_variables not in _drivers:
            array2 = _F8[:, ::1]
            x_type = array2 if n_variables == 1 else _F8[:, :, ::1]
            signature = (MODEL_TYPES[1 if n_variables == 1 else 2],
                         JACOBIAN_TYPES[1 if n_variables == 1 else 2], types.int64,
                         x_type, array2, array2, array2, array2, array2,
                         types.boolean[::1], types.int64, _F8, types.int64)
            _drivers[n_variables] = njit(signature, cache=True, parallel=True,
                                         error_model="numpy")(_batch)
    return _drivers[n_variables]


def lm_batch_arrays(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, free,
                    estimator, tol, max_iter):
    """``lm_batch`` (see its declaration) for a model compiled for arrays: by
    :func:`autofit.numba.host.prepare`, or any ``numba.njit`` function ``model(x, params)``
    (with ``jacobian`` one too, or None); x is ``(n_x, n_variables, n_points)``."""
    n_variables = x.shape[1]
    c = np.ascontiguousarray
    if n_variables == 1:
        x = x[:, 0, :]
    x_ndim = 1 if n_variables == 1 else 2
    model = first_class(model, "model", x_ndim)
    jacobian = first_class(jacobian, "jacobian", x_ndim)
    return _driver(n_variables)(
        model, jacobian, int(jac_method), c(x, dtype=np.float64), c(ydata, dtype=np.float64),
        c(weights, dtype=np.float64), c(p0, dtype=np.float64), c(lower, dtype=np.float64),
        c(upper, dtype=np.float64), c(free, dtype=np.bool_), int(estimator), float(tol),
        int(max_iter))


__all__ = ["lm_batch_arrays"]
