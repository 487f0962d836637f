"""Levenberg-Marquardt step and driver (numba).

The same algorithm as ``autofit/original/lm.py``, step for step and in the same order, so
that ``diff autofit/original/lm.py autofit/numba/lm.py`` shows only what numba needs:

- The array arithmetic of the reference is written as loops in small helpers compiled with
  ``cache=True``. The solver takes the model and its Jacobian as first-class functions, so
  it is compiled once per layout of x and kept in numba's disk cache for every model
  (a later process loads it); keeping it free of NumPy array expressions and BLAS calls
  (whose generated code LLVM re-optimises in every caller) keeps that compilation short.
- ``_weigh`` is specialised on the ndim of the values by an overload; the weights are
  always 2-D (per-point weights as one column), so one compilation serves both kinds.
- The weighted Jacobian is kept between iterations instead of being recomputed for the
  geodesic acceleration, and ``JᵀJ`` and ``Jᵀr`` are accumulated in one pass over it.
- Variables that the reference binds in one branch only are bound before the branch.
"""

import numpy as np
from numba import njit
from numba.extending import overload

from autofit._codes import (
    ACCEPT_RATIO,
    CONVERGED_FTOL,
    CONVERGED_FTOL_XTOL,
    CONVERGED_GTOL,
    CONVERGED_XTOL,
    EPS,
    GEODESIC_MAX_RATIO,
    GEODESIC_PROBE,
    INITIAL_DAMPING,
    JAC_ANALYTIC,
    JAC_CENTRAL,
    JAC_FORWARD,
    MACHINE_PRECISION,
    MAX_DAMPING,
    MAX_NFEV,
    NONFINITE,
    RUNNING,
)
from autofit._declarations import implements, require_jac_method
from autofit.numba.first_class import first_class
from autofit.numba.jacobians import jacobian_central, jacobian_forward


@njit(cache=True, error_model="numpy")
def _cholesky_solve(a, b):
    """Solve ``a z = b`` for symmetric positive-definite ``a``; ok is False otherwise."""
    n = b.shape[0]
    chol = np.zeros((n, n))
    for j in range(n):
        s = 0.0
        for k in range(j):
            s += chol[j, k] * chol[j, k]
        pivot = a[j, j] - s
        if not pivot > 0.0 or not np.isfinite(pivot):
            return np.zeros(n), False
        chol[j, j] = np.sqrt(pivot)
        for i in range(j + 1, n):
            s = 0.0
            for k in range(j):
                s += chol[i, k] * chol[j, k]
            chol[i, j] = (a[i, j] - s) / chol[j, j]
    z = np.empty(n)
    for i in range(n):
        s = 0.0
        for k in range(i):
            s += chol[i, k] * z[k]
        z[i] = (b[i] - s) / chol[i, i]
    for i in range(n - 1, -1, -1):
        s = 0.0
        for k in range(i + 1, n):
            s += chol[k, i] * z[k]
        z[i] = (z[i] - s) / chol[i, i]
    return z, True


@implements("lm_step")
@njit(cache=True, error_model="numpy")
def lm_step(jtj, gradient, scale, damping, free):
    n_params = gradient.shape[0]
    system = np.zeros((n_params, n_params))
    rhs = np.zeros(n_params)
    for i in range(n_params):
        if free[i]:
            rhs[i] = -gradient[i] / scale[i]
            for j in range(n_params):
                if free[j]:
                    system[i, j] = jtj[i, j] / (scale[i] * scale[j])
            system[i, i] += damping
        else:
            system[i, i] = 1.0
    scaled_step, ok = _cholesky_solve(system, rhs)
    for i in range(n_params):
        scaled_step[i] /= scale[i]
    return scaled_step, ok


def _weigh(weights, values):
    """Apply the residual weighting to a residual vector or a Jacobian.

    Plain Python, as the reference; in compiled code the overload below picks the
    implementation for the ndim of ``weights`` and ``values`` at typing time.
    """
    if weights.ndim == 2:
        return weights @ values
    if values.ndim == 1:
        return weights * values
    return weights[:, None] * values


@njit(cache=True, error_model="numpy")
def _weigh_matrix(weights, values):
    # A dense (n_points, n_points) weight matrix: a BLAS product, as NumPy's matmul.
    return np.ascontiguousarray(weights) @ np.ascontiguousarray(values)


# In compiled code the weights are always 2-D: per-point weights as one column, a weight
# matrix as itself (see lm_solve), so that one compiled solver serves both.
@njit(cache=True, error_model="numpy")
def _weigh_vector(weights, values):
    if weights.shape[1] != 1:
        return _weigh_matrix(weights, values)
    weighted = np.empty(values.shape[0])
    for i in range(values.shape[0]):
        weighted[i] = weights[i, 0] * values[i]
    return weighted


@njit(cache=True, error_model="numpy")
def _weigh_rows(weights, values):
    if weights.shape[1] != 1:
        return _weigh_matrix(weights, values)
    weighted = np.empty((values.shape[0], values.shape[1]))
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            weighted[i, j] = weights[i, 0] * values[i, j]
    return weighted


@overload(_weigh)
def _weigh_overload(weights, values):
    if values.ndim == 1:
        return lambda weights, values: _weigh_vector(weights, values)
    return lambda weights, values: _weigh_rows(weights, values)


def _weigh_difference(weights, f, ydata):
    """``_weigh(weights, f - ydata)``, in one pass over the points for per-point weights."""
    return _weigh(weights, f - ydata)


@njit(cache=True, error_model="numpy")
def _weigh_difference_columns(weights, f, ydata):
    if weights.shape[1] != 1:
        difference = np.empty(ydata.shape[0])
        for i in range(ydata.shape[0]):
            difference[i] = f[i] - ydata[i]
        return _weigh_matrix(weights, difference)
    weighted = np.empty(ydata.shape[0])
    for i in range(ydata.shape[0]):
        weighted[i] = weights[i, 0] * (f[i] - ydata[i])
    return weighted


@overload(_weigh_difference)
def _weigh_difference_overload(weights, f, ydata):
    return lambda weights, f, ydata: _weigh_difference_columns(weights, f, ydata)


# No disk cache: its key holds the model's dispatcher, new in every process (numba #6264).
@njit(cache=False, error_model="numpy")
def _model_jacobian(model, jacobian, jac_method, x, params, f0, lower, upper):
    """The (unweighted) Jacobian by the chosen method, and the model evaluations it cost."""
    n_params = params.shape[0]
    if jac_method == JAC_FORWARD:
        return jacobian_forward(model, x, params, f0, lower, upper), n_params
    if jac_method == JAC_CENTRAL:
        return jacobian_central(model, x, params, lower, upper), 2 * n_params + 1
    if jac_method == JAC_ANALYTIC:
        return jacobian(x, params), 0
    raise ValueError("jac_method must be JAC_ANALYTIC, JAC_FORWARD or JAC_CENTRAL here")


# No disk cache: its key holds the model's dispatcher, new in every process (numba #6264).
@njit(cache=False, error_model="numpy")
def _geodesic_step(model, x, ydata, weights, params, residuals, jac_w, jtj, scale, damping,
                   free, lower, upper, step):
    """Add Transtrum and Sethna's geodesic acceleration to the LM step (the velocity).

    The second directional derivative of the residuals along the velocity, from one extra
    model evaluation, bends the step along the curved valleys of models such as MGH10 and
    BoxBOD. A step whose acceleration is large next to its velocity is not trusted: ok is
    False and the caller raises the damping, as for a rejected step.
    """
    velocity = _project(params, step, lower, upper)
    for j in range(velocity.shape[0]):
        velocity[j] -= params[j]
    probe = _axpy(GEODESIC_PROBE, velocity, params)
    residuals_probe = _weigh_difference(weights, model(x, probe), ydata)
    return _geodesic_acceleration(residuals_probe, residuals, jac_w, jtj, scale, damping,
                                  free, velocity)


@njit(cache=True, error_model="numpy")
def _geodesic_acceleration(residuals_probe, residuals, jac_w, jtj, scale, damping, free,
                           velocity):
    """The model-free rest of ``_geodesic_step``."""
    n_points, n_params = jac_w.shape
    second = np.empty(n_points)
    for i in range(n_points):
        jac_velocity = 0.0
        for j in range(n_params):
            jac_velocity += jac_w[i, j] * velocity[j]
        directional = (residuals_probe[i] - residuals[i]) / GEODESIC_PROBE
        second[i] = (2.0 / GEODESIC_PROBE) * (directional - jac_velocity)
        if not np.isfinite(second[i]):
            return velocity, False
    acceleration, ok = lm_step(jtj, _jt_dot(jac_w, second), scale, damping, free)
    velocity_norm = _scaled_norm(scale, velocity)
    acceleration_norm = _scaled_norm(scale, acceleration)
    if not ok or 2.0 * acceleration_norm > GEODESIC_MAX_RATIO * velocity_norm:
        return velocity, False
    return _axpy(0.5, acceleration, velocity), True


@njit(cache=True, error_model="numpy")
def _normal_equations(weights, jac, residuals):
    # jac_w, then JᵀJ (one triangle, mirrored) and Jᵀr in one pass over it, four rows at a
    # time: with a single row per update the loop is bound by the read-modify-write of
    # the sums and runs about three times slower (and two matmuls slower still).
    jac_w = _weigh(weights, jac)
    n_points, n_params = jac_w.shape
    jtj = np.zeros((n_params, n_params))
    gradient = np.zeros(n_params)
    n_blocked = n_points - n_points % 4
    for i in range(0, n_blocked, 4):
        r0, r1, r2, r3 = residuals[i], residuals[i + 1], residuals[i + 2], residuals[i + 3]
        for j in range(n_params):
            a0, a1, a2, a3 = jac_w[i, j], jac_w[i + 1, j], jac_w[i + 2, j], jac_w[i + 3, j]
            gradient[j] += (a0 * r0 + a1 * r1) + (a2 * r2 + a3 * r3)
            for k in range(j, n_params):
                jtj[j, k] += ((a0 * jac_w[i, k] + a1 * jac_w[i + 1, k])
                              + (a2 * jac_w[i + 2, k] + a3 * jac_w[i + 3, k]))
    for i in range(n_blocked, n_points):
        for j in range(n_params):
            gradient[j] += jac_w[i, j] * residuals[i]
            for k in range(j, n_params):
                jtj[j, k] += jac_w[i, j] * jac_w[i, k]
    for j in range(n_params):
        for k in range(j):
            jtj[j, k] = jtj[k, j]
    return jac_w, jtj, gradient


@njit(cache=True, error_model="numpy")
def _jt_dot(jac_w, v):
    """``jac_w.T @ v``, four rows at a time (see _normal_equations)."""
    n_points, n_params = jac_w.shape
    product = np.zeros(n_params)
    n_blocked = n_points - n_points % 4
    for i in range(0, n_blocked, 4):
        for j in range(n_params):
            product[j] += ((jac_w[i, j] * v[i] + jac_w[i + 1, j] * v[i + 1])
                           + (jac_w[i + 2, j] * v[i + 2] + jac_w[i + 3, j] * v[i + 3]))
    for i in range(n_blocked, n_points):
        for j in range(n_params):
            product[j] += jac_w[i, j] * v[i]
    return product


@njit(cache=True, error_model="numpy")
def chi2_rounding(weights):
    """Typical relative rounding error of χ² summed over the points of nonzero weight
    (``weights`` 2-D: a column of per-point weights, or a weight matrix)."""
    n_points = 0
    for i in range(weights.shape[0]):
        for j in range(weights.shape[1]):
            if weights[i, j] != 0.0:
                n_points += 1
                break
    return EPS * np.sqrt(max(n_points, 1))


# Loops for the array expressions of the reference's lm_solve.
@njit(cache=True, error_model="numpy")
def _residuals(weights, f, ydata):
    """``_weigh(weights, f - ydata)`` and its squared norm."""
    residuals = _weigh_difference(weights, f, ydata)
    chi2 = 0.0
    for i in range(residuals.shape[0]):
        chi2 += residuals[i] * residuals[i]
    return residuals, chi2


@njit(cache=True, error_model="numpy")
def _all_finite(jtj, gradient):
    for i in range(gradient.shape[0]):
        if not np.isfinite(gradient[i]):
            return False
        for j in range(gradient.shape[0]):
            if not np.isfinite(jtj[i, j]):
                return False
    return True


@njit(cache=True, error_model="numpy")
def _column_norms(jtj):
    norms = np.empty(jtj.shape[0])
    for j in range(jtj.shape[0]):
        norms[j] = np.sqrt(jtj[j, j])
    return norms


@njit(cache=True, error_model="numpy")
def _initial_scale(column_norms):
    """``np.where(column_norms > 0.0, column_norms, 1.0)``"""
    scale = np.ones(column_norms.shape[0])
    for j in range(column_norms.shape[0]):
        if column_norms[j] > 0.0:
            scale[j] = column_norms[j]
    return scale


@njit(cache=True, error_model="numpy")
def _running_max(scale, column_norms):
    """``np.maximum(scale, column_norms)``"""
    new_scale = np.empty(scale.shape[0])
    for j in range(scale.shape[0]):
        new_scale[j] = np.maximum(scale[j], column_norms[j])
    return new_scale


@njit(cache=True, error_model="numpy")
def _free_parameters(params, lower, upper, gradient):
    free = np.empty(params.shape[0], dtype=np.bool_)
    for j in range(params.shape[0]):
        free[j] = not ((params[j] <= lower[j] and gradient[j] > 0.0)
                       or (params[j] >= upper[j] and gradient[j] < 0.0))
    return free


@njit(cache=True, error_model="numpy")
def _project(params, step, lower, upper):
    """``np.minimum(np.maximum(params + step, lower), upper)``"""
    trial = np.empty(params.shape[0])
    for j in range(params.shape[0]):
        trial[j] = np.minimum(np.maximum(params[j] + step[j], lower[j]), upper[j])
    return trial


@njit(cache=True, error_model="numpy")
def _axpy(a, x, y):
    """``y + a * x``"""
    result = np.empty(y.shape[0])
    for j in range(y.shape[0]):
        result[j] = y[j] + a * x[j]
    return result


@njit(cache=True, error_model="numpy")
def _scaled_norm(scale, v):
    """``np.sqrt(np.sum((scale * v) ** 2))``"""
    total = 0.0
    for j in range(v.shape[0]):
        total += (scale[j] * v[j]) ** 2
    return np.sqrt(total)


@njit(cache=True, error_model="numpy")
def _trial_point(params, step, lower, upper, scale, gradient, jtj):
    """The projected trial point, the scaled norm of the step taken, and the reduction of
    chi2 that the linearisation predicts for it."""
    trial = _project(params, step, lower, upper)
    n_params = params.shape[0]
    taken = np.empty(n_params)
    for j in range(n_params):
        taken[j] = trial[j] - params[j]
    gradient_taken = 0.0
    curvature = 0.0
    for i in range(n_params):
        gradient_taken += gradient[i] * taken[i]
        jtj_taken = 0.0
        for j in range(n_params):
            jtj_taken += jtj[i, j] * taken[j]
        curvature += taken[i] * jtj_taken
    predicted = -(2.0 * gradient_taken + curvature)
    return trial, _scaled_norm(scale, taken), predicted


@implements("lm_solve")
def lm_solve(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, ftol, xtol,
             gtol, max_nfev):
    require_jac_method("lm_solve", "numba", jac_method)
    x = _contiguous(x)
    return lm_solve_2d(first_class(model, "model", x.ndim),
                       first_class(jacobian, "jacobian", x.ndim), int(jac_method), x,
                       _contiguous(ydata), as_weight_columns(weights), _contiguous(p0),
                       _contiguous(lower), _contiguous(upper), float(ftol), float(xtol),
                       float(gtol), int(max_nfev))


def _contiguous(array):
    """``array`` as the solver's signature takes it: C-contiguous, writable float64 (a copy
    only where it is not)."""
    array = np.ascontiguousarray(array, dtype=np.float64)
    return array if array.flags.writeable else array.copy()


def as_weight_columns(weights):
    """``weights`` as :func:`lm_solve_2d` takes them: per-point weights ``(n_points,)`` as
    one column ``(n_points, 1)``, a weight matrix as it is (C-contiguous float64), so that
    both kinds share one compilation of the solver (a second kind compiled it all again)."""
    weights = np.asarray(weights, dtype=np.float64)
    return _contiguous(weights.reshape(-1, 1) if weights.ndim == 1 else weights)


# Called with the model and its Jacobian as first-class functions (``FunctionType``
# arguments, :mod:`autofit.numba.first_class`), so that one compilation per layout of x, kept
# in numba's disk cache, serves every model (the kernel above and the single-fit driver of
# :mod:`autofit.numba.host`); specialised on a model's dispatcher it compiled again for
# every model, in every process (numba #6264 keeps such a key out of the disk cache).
@njit(cache=True, error_model="numpy")
def lm_solve_2d(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, ftol, xtol,
           gtol, max_nfev):
    n_params = p0.shape[0]
    ftol_floor = chi2_rounding(weights)
    ftol_used = max(ftol, ftol_floor)
    params = p0.copy()
    f = model(x, params)
    nfev = 1
    residuals, chi2 = _residuals(weights, f, ydata)
    if not np.isfinite(chi2):
        return params, chi2, NONFINITE, nfev, 0
    jac, cost = _model_jacobian(model, jacobian, jac_method, x, params, f, lower, upper)
    nfev += cost
    jac_w, jtj, gradient = _normal_equations(weights, jac, residuals)
    if not _all_finite(jtj, gradient):
        return params, chi2, NONFINITE, nfev, 0
    column_norms = _column_norms(jtj)
    scale = _initial_scale(column_norms)
    damping = INITIAL_DAMPING
    growth = 2.0
    n_iter = 0
    status = RUNNING
    while status == RUNNING:
        if chi2 == 0.0:
            status = CONVERGED_FTOL
            break
        # Parameters at a bound whose descent direction (-gradient) points outwards are held.
        free = _free_parameters(params, lower, upper, gradient)
        cosine = 0.0
        residual_norm = np.sqrt(chi2)
        for j in range(n_params):
            if free[j] and column_norms[j] > 0.0:
                cosine = max(cosine, abs(gradient[j]) / (column_norms[j] * residual_norm))
        if cosine <= gtol:
            status = CONVERGED_GTOL
            break
        if nfev >= max_nfev:
            status = MAX_NFEV
            break
        step, ok = lm_step(jtj, gradient, scale, damping, free)
        if ok:
            step, ok = _geodesic_step(model, x, ydata, weights, params, residuals, jac_w, jtj,
                                      scale, damping, free, lower, upper, step)
            nfev += 1
        ratio = -1.0
        step_norm = 0.0
        # Bound on every path for numba's typing; only read when ok.
        trial, f_trial, residuals_trial, chi2_trial, predicted = params, f, residuals, chi2, 0.0
        if ok:
            trial, step_norm, predicted = _trial_point(params, step, lower, upper, scale,
                                                       gradient, jtj)
            f_trial = model(x, trial)
            nfev += 1
            residuals_trial, chi2_trial = _residuals(weights, f_trial, ydata)
            if predicted > 0.0 and np.isfinite(chi2_trial):
                ratio = (chi2 - chi2_trial) / predicted
        params_norm = _scaled_norm(scale, params)
        if ratio > ACCEPT_RATIO:
            actual_reduction = (chi2 - chi2_trial) / chi2
            predicted_reduction = predicted / chi2
            params = trial
            f = f_trial
            residuals = residuals_trial
            chi2 = chi2_trial
            n_iter += 1
            jac, cost = _model_jacobian(model, jacobian, jac_method, x, params, f, lower, upper)
            nfev += cost
            jac_w, jtj, gradient = _normal_equations(weights, jac, residuals)
            if not _all_finite(jtj, gradient):
                return params, chi2, NONFINITE, nfev, n_iter
            column_norms = _column_norms(jtj)
            scale = _running_max(scale, column_norms)
            damping *= max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
            growth = 2.0
            f_converged = (actual_reduction <= ftol_used and predicted_reduction <= ftol_used
                           and ratio <= 2.0)
            x_converged = step_norm <= xtol * params_norm
            if f_converged and x_converged:
                status = CONVERGED_FTOL_XTOL
            elif f_converged:
                status = CONVERGED_FTOL
            elif x_converged:
                status = CONVERGED_XTOL
        else:
            damping *= growth
            growth *= 2.0
            small_reduction = False
            if ok and np.isfinite(chi2_trial):
                small_reduction = (abs(chi2 - chi2_trial) <= ftol_used * chi2
                                   and predicted <= ftol_used * chi2)
            if small_reduction:
                status = CONVERGED_FTOL if ftol >= ftol_floor else MACHINE_PRECISION
            # No reduction even for a step at the rounding level of the parameters: this
            # point cannot be improved in float64.
            elif (ok and step_norm <= EPS * params_norm) or damping > MAX_DAMPING:
                status = MACHINE_PRECISION
    return params, chi2, status, nfev, n_iter
