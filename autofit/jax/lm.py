"""Levenberg-Marquardt step and driver (JAX).

The algorithm of :mod:`autofit.original.lm`, step for step, written as a pure function:
the driver's ``while`` loop is a ``jax.lax.while_loop`` over an explicit :class:`_State`.
The tests at the top of the original's loop body (chi2 == 0, gtol, budget) are the loop
condition, and the status they give is set after the loop; the other ``break`` and
``return`` statements set ``status`` in the state. The ``if`` statements are ``jnp.where``
selects or, where they save work, ``jax.lax.cond``: a rejected step does not pay for a new
Jacobian, and a failed LM step skips the geodesic probe.

``lm_solve`` is jit-compiled with ``model``, ``jacobian`` and ``jac_method`` static:
repeated calls with the same functions and array shapes reuse the compiled code whatever
the data, bounds, tolerances and budget (``model`` and ``jacobian`` are keyed by identity,
so pass the same function objects, not fresh lambdas; ``lm_solve.jitted._cache_size()``
counts the compiled versions). Internally the weighted Jacobian is kept transposed,
``(n_params, n_points)``, so that the reductions over points are contiguous (several times
faster on CPU for large n_points).

Differences from the original, all deliberate:

* ``JAC_AUTODIFF`` (forward-mode ``jax.jacfwd`` of ``model``) is accepted and, like
  ``JAC_ANALYTIC``, costs 0 model evaluations in ``nfev`` (the Jacobian-vector products
  are not counted as evaluations).
* Points with weight 0 contribute exactly nothing, even where the model is not finite
  (``0 * inf`` would be NaN in the original): with 1-D weights the weighted residual is
  ``where(w != 0, w * r, 0)``; with 2-D weights the residuals of points whose column of
  the weight matrix is all zero are set to 0 before the product. The dispatcher pads data
  to bucket sizes with weight-0 points, and those points must not be able to stop a fit.
  Nothing in the solve depends on ``n_points`` otherwise.
* When the damped system is not positive definite (``ok`` False) the original skips the
  trial point; here the model is still evaluated there (a ``cond`` would copy the large
  arrays it returns), but the result is discarded and not counted in ``nfev``.
* The model evaluations (XLA fuses multiply-adds and has its own ``exp``), the Cholesky
  factorisation and the reductions round differently from NumPy's, so iterates agree to
  rounding, not bit for bit; finite-difference Jacobians amplify those differences by
  1/h (about 1e-8 relative for forward differences).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

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
    JAC_AUTODIFF,
    JAC_CENTRAL,
    JAC_FORWARD,
    MACHINE_PRECISION,
    MAX_DAMPING,
    MAX_NFEV,
    NONFINITE,
    RUNNING,
)
from autofit._declarations import implements, require_jac_method
from autofit.jax.batch import _cholesky, _substitute
from autofit.jax.compiler import jit
from autofit.jax.jacobians import autodiff_columns, central_columns, forward_columns


def _as_float(a):
    # The default float type: float64 under jax.enable_x64, float32 otherwise.
    return jnp.asarray(a, dtype=float)


def _cholesky_solve(a, b):
    """Solve ``a z = b`` for symmetric positive-definite ``a``; ok is False otherwise (a
    pivot not > 0 or not finite, as the original's test), and z is then 0.

    The library factorisation (one call, whatever the size): the original's column by
    column loop unrolled into scalars compiled lm_solve's program 20% slower and ran no
    faster.
    """
    chol, ok = _cholesky(a)
    z = _substitute(jnp.where(ok, chol, jnp.eye(b.shape[0], dtype=a.dtype)), b)
    return jnp.where(ok, z, 0.0), ok


def _lm_step(jtj, gradient, scale, damping, free):
    both_free = free[:, None] & free[None, :]
    system = jnp.where(both_free, jtj / (scale[:, None] * scale[None, :]), 0.0)
    system = system + jnp.diag(jnp.where(free, damping, 1.0))
    rhs = jnp.where(free, -gradient / scale, 0.0)
    scaled_step, ok = _cholesky_solve(system, rhs)
    return scaled_step / scale, ok


@implements("lm_step")
@jit
def lm_step(jtj, gradient, scale, damping, free):
    return _lm_step(_as_float(jtj), _as_float(gradient), _as_float(scale),
                    _as_float(damping), jnp.asarray(free, dtype=bool))


class _Weighting(NamedTuple):
    """The residual weighting, and which points it uses at all."""

    weights: jax.Array  # (n_points,) or (n_points, n_points)
    used: jax.Array  # (n_points,) bool: False where a point has weight 0

    @classmethod
    def of(cls, weights):
        if weights.ndim == 2:
            return cls(weights, jnp.any(weights != 0.0, axis=0))
        return cls(weights, weights != 0.0)

    def __call__(self, values):
        """Apply the weighting to a residual vector ``(n_points,)`` or to a transposed
        Jacobian ``(n_params, n_points)`` (each row is weighted as a residual vector)."""
        if self.weights.ndim == 2:
            return jnp.where(self.used, values, 0.0) @ self.weights.T  # (W @ values.T).T
        return jnp.where(self.used, self.weights * values, 0.0)


def _model_jacobian(model, jacobian, jac_method, x, params, f0, lower, upper):
    """The (unweighted) Jacobian by the chosen method, transposed to ``(n_params, n_points)``,
    and the model evaluations it cost."""
    n_params = params.shape[0]
    if jac_method == JAC_FORWARD:
        return forward_columns(model, x, params, f0, upper), n_params
    if jac_method == JAC_CENTRAL:
        return central_columns(model, x, params, lower, upper), 2 * n_params + 1
    if jac_method == JAC_ANALYTIC:
        jac = _as_float(jacobian(x, params))
        # Re-stacked column by column rather than transposed: a transpose inside the solve
        # is free for XLA (a layout change), which would leave the reductions over points
        # strided and several times slower; the stack makes the rows contiguous.
        return jnp.stack([jac[:, j] for j in range(n_params)]), 0
    if jac_method == JAC_AUTODIFF:
        # Counted like JAC_ANALYTIC: the Jacobian-vector products are not model evaluations.
        return autodiff_columns(model, x, params), 0
    raise ValueError("jac_method must be JAC_ANALYTIC, JAC_FORWARD, JAC_CENTRAL or "
                     "JAC_AUTODIFF")


def _normal_equations(jac_wt, residuals):
    """``JᵀJ`` and ``Jᵀr`` from the transposed weighted Jacobian ``jac_wt = Jᵀ``."""
    # A fused multiply-and-reduce over contiguous rows: several times faster on CPU than
    # XLA's dot for tall, narrow Jacobians.
    jtj = jnp.sum(jac_wt[:, None, :] * jac_wt[None, :, :], axis=-1)
    return jtj, jac_wt @ residuals


def _all_finite(*arrays):
    result = jnp.asarray(True)
    for a in arrays:
        result = result & jnp.all(jnp.isfinite(a))
    return result


class _State(NamedTuple):
    """Everything the original's loop carries from one iteration to the next.

    (The original's ``f`` is not carried: it is only used for the forward-difference
    Jacobian, which is computed right where ``f`` is.)
    """

    params: jax.Array
    residuals: jax.Array  # weighted
    chi2: jax.Array
    jac_wt: jax.Array  # weighted Jacobian at params, transposed: (n_params, n_points)
    jtj: jax.Array
    gradient: jax.Array
    column_norms: jax.Array
    scale: jax.Array
    damping: jax.Array
    growth: jax.Array
    nfev: jax.Array
    n_iter: jax.Array
    status: jax.Array


def _lm_solve(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, ftol, xtol,
              gtol, max_nfev):
    x, ydata, weights = _as_float(x), _as_float(ydata), _as_float(weights)
    p0, lower, upper = _as_float(p0), _as_float(lower), _as_float(upper)
    ftol, xtol, gtol = _as_float(ftol), _as_float(xtol), _as_float(gtol)
    max_nfev = jnp.asarray(max_nfev, dtype=int)
    weigh = _Weighting.of(weights)
    # Points of nonzero weight (the bucket's padding has weight 0), for χ²'s rounding.
    counted = weights != 0.0 if weights.ndim == 1 else jnp.any(weights != 0.0, axis=1)
    ftol_floor = EPS * jnp.sqrt(jnp.maximum(jnp.sum(counted), 1).astype(weights.dtype))
    ftol_used = jnp.maximum(ftol, ftol_floor)

    def integer(value):
        return jnp.asarray(value, dtype=int)

    def residuals_of(f):
        residuals = weigh(f - ydata)
        return residuals, residuals @ residuals

    def jacobian_and_normal_equations(params, f, residuals):
        jac_t, cost = _model_jacobian(model, jacobian, jac_method, x, params, f, lower,
                                      upper)
        jac_wt = weigh(jac_t)
        jtj, gradient = _normal_equations(jac_wt, residuals)
        return jac_wt, jtj, gradient, integer(cost)

    # --- Before the loop: the starting point, its Jacobian and normal equations. ---------
    params = p0
    n_params = params.shape[0]
    f = model(x, params)
    residuals, chi2 = residuals_of(f)
    chi2_finite = jnp.isfinite(chi2)

    def skipped_jacobian(params, f, residuals):
        n_points = residuals.shape[0]
        return (jnp.zeros((n_params, n_points), dtype=residuals.dtype),
                jnp.zeros((n_params, n_params), dtype=residuals.dtype),
                jnp.zeros(n_params, dtype=residuals.dtype), integer(0))

    # The original returns NONFINITE before computing the Jacobian when chi2 is not finite.
    jac_wt, jtj, gradient, cost = jax.lax.cond(
        chi2_finite, jacobian_and_normal_equations, skipped_jacobian, params, f, residuals)
    status = jnp.where(chi2_finite & _all_finite(jtj, gradient), RUNNING, NONFINITE)
    column_norms = jnp.sqrt(jnp.diag(jtj))
    state = _State(params=params, residuals=residuals, chi2=chi2, jac_wt=jac_wt, jtj=jtj,
                   gradient=gradient, column_norms=column_norms,
                   scale=jnp.where(column_norms > 0.0, column_norms, 1.0),
                   damping=_as_float(INITIAL_DAMPING), growth=_as_float(2.0),
                   nfev=integer(1) + cost, n_iter=integer(0), status=integer(status))

    # --- The tests at the top of the original's loop body. ------------------------------
    def free_parameters(s):
        # Parameters at a bound whose descent direction (-gradient) points outwards are held.
        return ~(((s.params <= lower) & (s.gradient > 0.0))
                 | ((s.params >= upper) & (s.gradient < 0.0)))

    def stop_code(s):
        """The status the original's loop sets before taking a step (RUNNING: go on)."""
        counted = free_parameters(s) & (s.column_norms > 0.0)
        cosines = jnp.abs(s.gradient) / (jnp.where(counted, s.column_norms, 1.0)
                                         * jnp.sqrt(s.chi2))
        # The original's running max(cosine, term) starting at 0 skips NaN terms.
        cosine = jnp.max(jnp.where(counted & ~jnp.isnan(cosines), cosines, 0.0),
                         initial=0.0)
        return jnp.where(s.chi2 == 0.0, CONVERGED_FTOL,
                         jnp.where(cosine <= gtol, CONVERGED_GTOL,
                                   jnp.where(s.nfev >= max_nfev, MAX_NFEV, RUNNING)))

    # --- One pass of the original's loop body, past those tests. ------------------------
    def geodesic_step(s, free, step):
        """Transtrum and Sethna's geodesic acceleration added to the LM step (velocity)."""
        velocity = jnp.minimum(jnp.maximum(s.params + step, lower), upper) - s.params
        probe = s.params + GEODESIC_PROBE * velocity
        directional = (weigh(model(x, probe) - ydata) - s.residuals) / GEODESIC_PROBE
        second = (2.0 / GEODESIC_PROBE) * (directional - velocity @ s.jac_wt)
        second_finite = _all_finite(second)
        acceleration, ok = _lm_step(s.jtj, s.jac_wt @ second, s.scale, s.damping, free)
        velocity_norm = jnp.sqrt(jnp.sum((s.scale * velocity) ** 2))
        acceleration_norm = jnp.sqrt(jnp.sum((s.scale * acceleration) ** 2))
        # As in the original: a NaN norm does not count as "too large".
        trusted = (second_finite & ok
                   & ~(2.0 * acceleration_norm > GEODESIC_MAX_RATIO * velocity_norm))
        return jnp.where(trusted, velocity + 0.5 * acceleration, velocity), trusted

    def body(s):
        free = free_parameters(s)
        step, ok = _lm_step(s.jtj, s.gradient, s.scale, s.damping, free)
        nfev = s.nfev + ok.astype(int)  # the geodesic probe
        step, ok = jax.lax.cond(ok, geodesic_step, lambda s, free, step: (step, ok),
                                s, free, step)

        # The trial point. The original evaluates it only when ok; here the model is
        # evaluated regardless (a cond would copy the large arrays it returns), and the
        # result, and its count in nfev, are only used when ok.
        trial = jnp.minimum(jnp.maximum(s.params + step, lower), upper)
        taken = trial - s.params
        step_norm = jnp.where(ok, jnp.sqrt(jnp.sum((s.scale * taken) ** 2)), 0.0)
        predicted = -(2.0 * (s.gradient @ taken) + taken @ (s.jtj @ taken))
        f_trial = model(x, trial)
        residuals_trial, chi2_trial = residuals_of(f_trial)
        nfev = nfev + ok.astype(int)
        improves = ok & (predicted > 0.0) & jnp.isfinite(chi2_trial)
        ratio = jnp.where(improves,
                          (s.chi2 - chi2_trial) / jnp.where(improves, predicted, 1.0), -1.0)
        params_norm = jnp.sqrt(jnp.sum((s.scale * s.params) ** 2))
        accept = ratio > ACCEPT_RATIO

        # Only an accepted step pays for a new Jacobian.
        def keep_jacobian(params, f, residuals):
            return s.jac_wt, s.jtj, s.gradient, integer(0)

        jac_wt, jtj, gradient, cost = jax.lax.cond(
            accept, jacobian_and_normal_equations, keep_jacobian,
            trial, f_trial, residuals_trial)

        # Accepted: MINPACK's convergence tests (or NONFINITE, as the original's return).
        actual_reduction = (s.chi2 - chi2_trial) / s.chi2
        predicted_reduction = predicted / s.chi2
        f_converged = ((actual_reduction <= ftol_used) & (predicted_reduction <= ftol_used)
                       & (ratio <= 2.0))
        x_converged = step_norm <= xtol * params_norm
        accepted_status = jnp.where(
            f_converged & x_converged, CONVERGED_FTOL_XTOL,
            jnp.where(f_converged, CONVERGED_FTOL,
                      jnp.where(x_converged, CONVERGED_XTOL, RUNNING)))
        accepted_status = jnp.where(_all_finite(jtj, gradient), accepted_status, NONFINITE)
        accepted_norms = jnp.sqrt(jnp.diag(jtj))

        # Rejected: raise the damping. No reduction even for a step at the rounding level of
        # the parameters means this point cannot be improved in float64.
        rejected_damping = s.damping * s.growth
        # As MINPACK, ftol is tested on a rejected step too.
        small_reduction = (ok & jnp.isfinite(chi2_trial)
                           & (jnp.abs(s.chi2 - chi2_trial) <= ftol_used * s.chi2)
                           & (predicted <= ftol_used * s.chi2))
        stuck = (ok & (step_norm <= EPS * params_norm)) | (rejected_damping > MAX_DAMPING)
        rejected_status = jnp.where(
            small_reduction, jnp.where(ftol >= ftol_floor, CONVERGED_FTOL, MACHINE_PRECISION),
            jnp.where(stuck, MACHINE_PRECISION, RUNNING))

        return _State(
            params=jnp.where(accept, trial, s.params),
            residuals=jnp.where(accept, residuals_trial, s.residuals),
            chi2=jnp.where(accept, chi2_trial, s.chi2),
            jac_wt=jac_wt, jtj=jtj, gradient=gradient,
            column_norms=jnp.where(accept, accepted_norms, s.column_norms),
            scale=jnp.where(accept, jnp.maximum(s.scale, accepted_norms), s.scale),
            damping=jnp.where(
                accept, s.damping * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3),
                rejected_damping),
            growth=jnp.where(accept, 2.0, s.growth * 2.0),
            nfev=nfev + cost,
            n_iter=s.n_iter + accept.astype(int),
            status=integer(jnp.where(accept, accepted_status, rejected_status)))

    # The original's loop tests chi2, gtol and the budget first and breaks with a status;
    # here those tests end the loop, and the status they give is set after it.
    state = jax.lax.while_loop(
        lambda s: (s.status == RUNNING) & (stop_code(s) == RUNNING), body, state)
    status = jnp.where(state.status == RUNNING, stop_code(state), state.status)
    return state.params, state.chi2, integer(status), state.nfev, state.n_iter


_lm_solve_jit = jit(_lm_solve, static_argnames=("model", "jacobian", "jac_method"))


@implements("lm_solve")
@functools.wraps(_lm_solve)
def lm_solve(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, ftol, xtol,
             gtol, max_nfev):
    require_jac_method("lm_solve", "jax", jac_method)
    # The scalars become strongly typed arrays first: jit keys its cache on weak types too,
    # so a Python float and an np.float64 tolerance would otherwise compile twice.
    return _lm_solve_jit(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper,
                         jnp.asarray(ftol, dtype=float), jnp.asarray(xtol, dtype=float),
                         jnp.asarray(gtol, dtype=float), jnp.asarray(max_nfev, dtype=int))


# The compiled function, for compile-cache inspection (``lm_solve.jitted._cache_size()``).
lm_solve.jitted = _lm_solve_jit
