"""Levenberg-Marquardt step and driver (NumPy reference).

Written with explicit loops where the numba port needs them, so that
``diff autofit/original/lm.py autofit/numba/lm.py`` shows only real differences.
"""

import numpy as np

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
from autofit.original.jacobians import jacobian_central, jacobian_forward
from autofit.original.linalg import cholesky_solve


@implements("lm_step")
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
    scaled_step, ok = cholesky_solve(system, rhs)
    return scaled_step / scale, ok


def _weigh(weights, values):
    """Apply the residual weighting to a residual vector or a Jacobian."""
    if weights.ndim == 2:
        return weights @ values
    if values.ndim == 1:
        return weights * values
    return weights[:, None] * values


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


def _geodesic_step(model, x, ydata, weights, params, residuals, jac, jtj, scale, damping,
                   free, lower, upper, step):
    """Add Transtrum and Sethna's geodesic acceleration to the LM step (the velocity).

    The second directional derivative of the residuals along the velocity, from one extra
    model evaluation, bends the step along the curved valleys of models such as MGH10 and
    BoxBOD. A step whose acceleration is large next to its velocity is not trusted: ok is
    False and the caller raises the damping, as for a rejected step.
    """
    velocity = np.minimum(np.maximum(params + step, lower), upper) - params
    probe = params + GEODESIC_PROBE * velocity
    jac_w = _weigh(weights, jac)
    directional = (_weigh(weights, model(x, probe) - ydata) - residuals) / GEODESIC_PROBE
    second = (2.0 / GEODESIC_PROBE) * (directional - jac_w @ velocity)
    if not np.all(np.isfinite(second)):
        return velocity, False
    acceleration, ok = lm_step(jtj, jac_w.T @ second, scale, damping, free)
    velocity_norm = np.sqrt(np.sum((scale * velocity) ** 2))
    acceleration_norm = np.sqrt(np.sum((scale * acceleration) ** 2))
    if not ok or 2.0 * acceleration_norm > GEODESIC_MAX_RATIO * velocity_norm:
        return velocity, False
    return velocity + 0.5 * acceleration, True


def chi2_rounding(weights):
    """Typical relative rounding error of χ² summed over the points of nonzero weight
    (``eps * sqrt(n)``): a relative change of χ² below it cannot be told from rounding."""
    if weights.ndim == 2:
        n_points = 0
        for i in range(weights.shape[0]):
            if np.any(weights[i] != 0.0):
                n_points += 1
    else:
        n_points = np.count_nonzero(weights)
    return EPS * np.sqrt(max(n_points, 1))


def _normal_equations(weights, jac, residuals):
    jac_w = _weigh(weights, jac)
    return jac_w.T @ jac_w, jac_w.T @ residuals


@implements("lm_solve")
def lm_solve(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, ftol, xtol,
             gtol, max_nfev):
    require_jac_method("lm_solve", "numpy", jac_method)
    n_params = p0.shape[0]
    # ftol is taken no lower than χ²'s rounding: below it the reduction is noise, and a fit
    # would reject step after step until the damping overflowed.
    ftol_floor = chi2_rounding(weights)
    ftol_used = max(ftol, ftol_floor)
    params = p0.copy()
    f = model(x, params)
    nfev = 1
    residuals = _weigh(weights, f - ydata)
    chi2 = residuals @ residuals
    if not np.isfinite(chi2):
        return params, chi2, NONFINITE, nfev, 0
    jac, cost = _model_jacobian(model, jacobian, jac_method, x, params, f, lower, upper)
    nfev += cost
    jtj, gradient = _normal_equations(weights, jac, residuals)
    if not (np.all(np.isfinite(jtj)) and np.all(np.isfinite(gradient))):
        return params, chi2, NONFINITE, nfev, 0
    column_norms = np.sqrt(np.diag(jtj))
    scale = np.where(column_norms > 0.0, column_norms, 1.0)
    damping = INITIAL_DAMPING
    growth = 2.0
    n_iter = 0
    status = RUNNING
    while status == RUNNING:
        if chi2 == 0.0:
            status = CONVERGED_FTOL
            break
        # Parameters at a bound whose descent direction (-gradient) points outwards are held.
        free = ~(((params <= lower) & (gradient > 0.0)) | ((params >= upper) & (gradient < 0.0)))
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
            step, ok = _geodesic_step(model, x, ydata, weights, params, residuals, jac, jtj,
                                      scale, damping, free, lower, upper, step)
            nfev += 1
        ratio = -1.0
        step_norm = 0.0
        if ok:
            trial = np.minimum(np.maximum(params + step, lower), upper)
            taken = trial - params
            step_norm = np.sqrt(np.sum((scale * taken) ** 2))
            predicted = -(2.0 * (gradient @ taken) + taken @ (jtj @ taken))
            f_trial = model(x, trial)
            nfev += 1
            residuals_trial = _weigh(weights, f_trial - ydata)
            chi2_trial = residuals_trial @ residuals_trial
            if predicted > 0.0 and np.isfinite(chi2_trial):
                ratio = (chi2 - chi2_trial) / predicted
        params_norm = np.sqrt(np.sum((scale * params) ** 2))
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
            jtj, gradient = _normal_equations(weights, jac, residuals)
            if not (np.all(np.isfinite(jtj)) and np.all(np.isfinite(gradient))):
                return params, chi2, NONFINITE, nfev, n_iter
            column_norms = np.sqrt(np.diag(jtj))
            scale = np.maximum(scale, column_norms)
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
            # As MINPACK, ftol is tested on a rejected step too: when the step predicts no
            # reduction beyond ftol and χ² did not measurably change, this is the minimum
            # (without the test, each further rejection costs two evaluations until the
            # damping overflows).
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
