"""The per-fit Levenberg-Marquardt solver of numba's batch, for the CPU and CUDA alike.

:func:`build_fit_one` is written once in the subset of Python that both ``numba.njit`` and
``numba.cuda.jit(device=True)`` compile: scalars, loops, ``math`` and indexing into work
arrays that the caller provides, no allocation. It follows :mod:`autofit.original.batch`
step for step, with everything the reference keeps in (n_points, n_params) arrays folded
into one pass over the points per iteration (:mod:`autofit.numba.passes`). On a GPU each
point's model value and gradient are accumulated into χ², the gradient and the Gauss-Newton
matrix at once, in registers. On the CPU the pass first writes one fit's gradients to a
small work array and then forms every sum as a SIMD reduction (see ``block``).

Without an analytic gradient, forward differences follow the step rule of
:func:`autofit.original.jacobian_forward`: on the GPU point by point, on the CPU one
parameter at a time, each a loop over the points.
"""

from __future__ import annotations

import ast
import inspect
import math
import textwrap

import numpy as np

from autofit import _rules
from autofit._codes import (
    CONVERGED_FTOL,
    CONVERGED_FTOL_XTOL,
    CONVERGED_GTOL,
    CONVERGED_XTOL,
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
    WEIGH_INFORMATION,
)
from autofit.numba import linalg
from autofit.numba.passes import (
    _generated_evaluate,
    _generated_probe_rows,
    _tagging,
    with_literals_of,
)

# Compiled pieces shared between the passes that :func:`build_passes` builds with a
# ``share`` key: see there.
_SHARED: dict = {}


def _shared(key, build):
    """``build()``, once per ``key`` (None: not shared)."""
    if key is None:
        return build()
    if key not in _SHARED:
        _SHARED[key] = build()
    return _SHARED[key]


def build_passes(value, gradient, jac_method, n_params, jit, inline=None,
                 dtype=np.float64, tag="", share=None):
    """``(evaluate, probe_rows)``: one model's two passes over the points on the CPU, compiled
    by ``jit``, that the solver of :func:`build_fit_one` takes as arguments.

    ``value`` and ``gradient`` are point functions already compiled by ``jit``;
    ``jac_method`` is ``JAC_ANALYTIC`` or ``JAC_FORWARD`` and ``n_params`` the number of
    parameters (compile-time constants: the passes are generated for them).
    ``evaluate(x, y, w, p, lower, upper, free, estimator, g, h, jac, work_p, weighing) ->
    (chi2, positive)`` forms χ², its gradient and the Gauss-Newton matrix at ``p``, its
    points weighed as the int ``weighing`` says (:func:`autofit._rules.point_weight`; the
    information with ``WEIGH_INFORMATION``); ``probe_rows(x, y, w, q, free, estimator, jac,
    g_probe)`` the gradient at a probe ``q`` from the rows the pass at ``p`` left in ``jac``.

    ``share``, a key ``(flavour, model)`` (None: nothing shared), lets the passes of one
    ``model`` share the probe's pass across the Jacobian methods (compiled once per process,
    not once per method).
    """
    inline = _tagging(inline or jit, tag)
    _, evaluate, probe_rows, _ = _model_functions(value, gradient, jac_method, n_params,
                                               _tagging(jit, tag), inline, dtype, True, tag,
                                               share)
    return evaluate, probe_rows


def _model_functions(value, gradient, jac_method, n_params, jit, inline, dtype, block, tag,
                     share):
    """``(point_gradient, evaluate, probe_rows, robust_loss)`` of :func:`build_passes`
    (``block``, the CPU) and of the GPU's solver (``probe_rows`` None: its probe recomputes
    each point's gradient with ``point_gradient``, and weighs it with ``robust_loss``)."""
    analytic = jac_method == JAC_ANALYTIC
    # The robust losses (M-estimators), with the working precision's literals (the GPU's
    # pass; the CPU's reweighs its rows by passes.robust_rows, shared by every model).
    robust_loss = inline(with_literals_of(_rules.robust_loss, dtype, fast_exp=block))
    # sqrt(eps) of the working precision (float64's step would vanish in float32), as a
    # scalar of that type so that the step arithmetic stays in it.
    forward_step = np.dtype(dtype).type(_rules.forward_step(dtype))
    relative_step = inline(_rules.relative_step)

    # Forward differences on the CPU: the pass evaluates the model only, and then the
    # differences row by row (see _forward_rows in _block_evaluate_source).
    rows_of_differences = block and not analytic

    @inline
    def point_gradient(x, i, p, lower, upper, free, jac, work_p, col):
        # Model value at point i; its gradient goes to jac[:, col]. work_p holds p.
        if analytic:
            return gradient(x, i, p, jac, col)
        f0 = value(x, i, p)
        for j in range(n_params):
            if not free[j]:
                jac[j, col] = 0.0
                continue
            h = relative_step(p[j], forward_step)
            if p[j] + h > upper[j]:
                h = -h
            work_p[j] = p[j] + h
            h = work_p[j] - p[j]
            jac[j, col] = (value(x, i, work_p) - f0) / h
            work_p[j] = p[j]
        return f0

    if rows_of_differences:
        @inline
        def point(x, i, p, lower, upper, free, jac, work_p, col):
            return value(x, i, p)
    else:
        point = point_gradient

    probe_rows = None
    if block:
        # The CPU pass: the model at the probe for all points in one vectorisable loop (the
        # parameters as a tuple, as in evaluate), its weighted residuals to a scratch row,
        # then one dot product per parameter with the rows the pass at p left in ``jac``.
        with_model = share and (share[0], n_params, np.dtype(dtype).name, share[1])
        probe_rows = _shared(with_model and ("probe_rows", with_model), lambda: jit(
            _generated_probe_rows(n_params, value, dtype, tag)))
    evaluate = jit(_generated_evaluate(n_params, point, dtype, block, inline,
                                       value if rows_of_differences else None,
                                       forward_step, tag, robust_loss, relative_step))
    return point_gradient, evaluate, probe_rows, robust_loss


def build_fit_one(value, gradient, jac_method, n_params, jit, inline=None,
                  dtype=np.float64, block=False, tag=""):
    """The per-fit solver, compiled by ``jit``.

    ``n_params`` is the number of parameters (a compile-time constant: the loops over the
    parameters are unrolled for it). Without ``block`` (the GPU) the solver is built for one
    model: ``value`` and ``gradient`` are point functions already compiled by ``jit`` and
    ``jac_method`` is ``JAC_ANALYTIC`` or ``JAC_FORWARD``; it is ``fit_one(x, y, w, p0,
    lower, upper, free, estimator, tol, max_iter, p, trial, step, g, h, trial_g, trial_h,
    scale_squared, system, jac, trial_jac, work_p, active, covariance) -> (chi2, n_iter,
    status)``, which writes the fitted parameters into ``p`` and the covariance into
    ``covariance``. With ``block`` (the CPU) it serves every model of ``n_params``
    parameters (``value``, ``gradient`` and ``jac_method`` are not used): it takes the
    model's two passes (:func:`build_passes`) as its first arguments, ``fit_one(evaluate,
    probe_rows, x, y, ...)``, as first-class functions, so that it is compiled once per size
    and precision (and kept in numba's disk cache), and a new model compiles its passes
    only.

    ``block`` chooses how a pass over the points is organised. False (the GPU): each point's
    gradient goes to ``jac`` ``(n_params, 1)`` and is accumulated at once, in registers.
    True (the CPU): the weighted gradients of all points are written to ``jac``
    ``(n_params + 3, n_points)`` first, then every sum of χ²'s gradient and Gauss-Newton
    matrix is one vectorisable dot product over the points.

    ``tag`` ends the qualified name of every function compiled here (see :func:`_tagged`).
    """
    inline = _tagging(inline or jit, tag)
    jit = _tagging(jit, tag)
    # The iteration's decisions, shared with lm_fused (autofit._rules).
    is_active = inline(_rules.is_active)
    clip_step = inline(_rules.clip_step)
    predicted_reduction = inline(_rules.predicted_reduction)
    judge_trial = inline(_rules.judge_trial)
    step_not_tried = inline(_rules.step_not_tried)
    pass_weighing = inline(_rules.pass_weighing)
    initial_damping = inline(_rules.initial_damping)
    bends_from = inline(_rules.bends_from)
    if block:
        evaluate = probe_rows = point_gradient = robust_loss = geodesic_probe_weight = None
        point_weight = None
    else:
        # The GPU's pass point by point, and its probe recomputes each point's gradient.
        point_gradient, evaluate, _, robust_loss = _model_functions(
            value, gradient, jac_method, n_params, jit, inline, dtype, block, tag, None)
        probe_rows = None
        geodesic_probe_weight = inline(_rules.geodesic_probe_weight)
        point_weight = inline(with_literals_of(_rules.point_weight, dtype))

    @inline
    def probe_gradient(probe_rows, x, y, w, p, q, lower, upper, free, estimator, weighing, jac,
                       work_p, g_probe):
        # g_probe = J_w(p)ᵀ W (y - f(q)) over the used points; False where it is not
        # finite. It must use the very Jacobian that formed g and H: a forward difference
        # recomputed in other arithmetic (a vectorised exp against a scalar one) differs by
        # ~1e-8 of itself, and (g_probe - g) / h then measures that, not the curvature. So
        # the CPU pass reads the rows that the pass at p left in ``jac``; the GPU pass, which
        # keeps no rows, recomputes each point's gradient with the same point function.
        # A robust loss weighs each point as _rules.geodesic_probe_weight says, with the
        # weight in H of the pass at p (``weighing``; the CPU pass left its two terms'
        # weights in rows too).
        if block:
            probe_rows(x, y, w, q, free, estimator, jac, g_probe)
        else:
            robust = estimator != ESTIMATOR_LSE
            for a in range(n_params):
                work_p[a] = p[a]
                g_probe[a] = 0.0
            for i in range(y.shape[0]):
                wi = w[i]
                if wi == 0.0:
                    continue
                f = point_gradient(x, i, p, lower, upper, free, jac, work_p, 0)
                if robust:
                    r = wi * (y[i] - f)
                    z = r * r
                    _, rho1, rho2, curvature = robust_loss(z, estimator)
                    weight = geodesic_probe_weight(
                        wi, r, wi * (y[i] - value(x, i, q)), rho1,
                        point_weight(rho1, rho2, z, curvature, weighing))
                else:
                    weight = wi * wi * (y[i] - value(x, i, q))
                for a in range(n_params):
                    if free[a]:
                        g_probe[a] += weight * jac[a, 0]
        finite = True
        for a in range(n_params):
            finite = finite and math.isfinite(g_probe[a])
        return finite

    factor = inline(linalg.cholesky_factor)
    substitute = inline(linalg.cholesky_substitute)

    @jit
    def cholesky_factor(a):
        return factor(a, n_params)

    @jit
    def cholesky_substitute(chol, b, z):
        substitute(chol, b, z, n_params)

    @jit
    def inverse_from_factor(chol, work, inverse):
        # (chol cholᵀ)⁻¹ = Xᵀ X with X = chol⁻¹, into the lower triangle of inverse. Rows of
        # X, then of the sum, are updated by whole (vectorisable) row operations: a third
        # of the work of solving for each column of the identity, without its reductions
        # (25 parameters: 2.7 us instead of 20).
        for i in range(n_params):
            for c in range(n_params):
                work[i, c] = 0.0
            for k in range(i):
                factor = chol[i, k]
                for c in range(k + 1):
                    work[i, c] -= factor * work[k, c]
            work[i, i] = 1.0
            diagonal = 1.0 / chol[i, i]
            for c in range(i + 1):
                work[i, c] *= diagonal
        for a in range(n_params):
            for b in range(a + 1):
                inverse[a, b] = 0.0
        for k in range(n_params):
            for a in range(k + 1):
                factor = work[k, a]
                for b in range(a + 1):
                    inverse[a, b] += factor * work[k, b]

    damped = inline(linalg.damped_system)

    @jit
    def damped_system(h, g, scale_squared, damping, active, system, rhs):
        damped(h, g, scale_squared, damping, active, system, rhs, n_params)

    @inline
    def bend(probe_rows, x, y, w, p, lower, upper, free, estimator, weighing, g, h,
             scale_squared, damping, active, system, jac, work_p, step, trial, trial_g, chi2,
             tol):
        # Transtrum and Sethna's geodesic acceleration (least squares and robust losses),
        # as the reference's:
        # step (the LM step in, factor of the damped system in ``system``) becomes the
        # velocity plus half the acceleration; False when the acceleration is not finite or
        # large next to the velocity. A step whose predicted reduction is within tol of χ²
        # is left as it is (the reference's _worth_bending). trial and trial_g are scratch
        # (the velocity, then the probe, then the acceleration; the right-hand side).
        for a in range(n_params):
            trial[a] = min(max(p[a] + step[a], lower[a]), upper[a]) - p[a]
        predicted = predicted_reduction(h, trial, scale_squared, damping)
        if not predicted > max(tol, GEODESIC_MIN_REDUCTION) * chi2:
            return True
        for a in range(n_params):
            step[a] = trial[a]
            trial[a] = p[a] + GEODESIC_PROBE * step[a]
        if not probe_gradient(probe_rows, x, y, w, p, trial, lower, upper, free, estimator,
                              weighing, jac, work_p, trial_g):
            return False
        for a in range(n_params):
            h_velocity = 0.0
            for b in range(n_params):
                h_velocity += h[a, b] * step[b]
            second = (2.0 / GEODESIC_PROBE) * ((trial_g[a] - g[a]) / GEODESIC_PROBE
                                               + h_velocity)
            trial_g[a] = second if active[a] else 0.0
        cholesky_substitute(system, trial_g, trial)
        velocity2 = 0.0
        acceleration2 = 0.0
        for a in range(n_params):
            velocity2 += scale_squared[a] * step[a] * step[a]
            acceleration2 += scale_squared[a] * trial[a] * trial[a]
        if not (2.0 * math.sqrt(acceleration2) <= GEODESIC_MAX_RATIO * math.sqrt(velocity2)):
            return False
        for a in range(n_params):
            step[a] = step[a] + 0.5 * trial[a]
        return True

    @jit
    def not_attempted(x, y, w, p0, free, estimator):
        for v in range(x.shape[0]):
            for i in range(x.shape[1]):
                if not math.isfinite(x[v, i]):
                    return NONFINITE_DATA
        n_used = 0
        negative = False
        for i in range(y.shape[0]):
            if not (math.isfinite(y[i]) and math.isfinite(w[i])):
                return NONFINITE_DATA
            if w[i] != 0.0:
                n_used += 1
                if y[i] < 0.0:
                    negative = True
        n_free = 0
        for j in range(n_params):
            if not math.isfinite(p0[j]):
                return NONFINITE_DATA
            if free[j]:
                n_free += 1
        if estimator == ESTIMATOR_MLE and negative:
            return MLE_NEGATIVE_DATA
        if n_used < n_free:
            return TOO_FEW_POINTS
        return RUNNING

    def fit_one(evaluate, probe_rows, x, y, w, p0, lower, upper, free, estimator, tol,
                max_iter, p, trial, step, g, h, trial_g, trial_h, scale_squared, system, jac,
                trial_jac, work_p, active, covariance):
        # n_params is the compile-time constant, not p0.shape[0], so that loops of known
        # length can be unrolled and the work arrays kept in registers.
        for a in range(n_params):
            for b in range(n_params):
                covariance[a, b] = math.nan
        status = not_attempted(x, y, w, p0, free, estimator)
        if status != RUNNING:
            for a in range(n_params):
                p[a] = p0[a]
            return math.nan, 0, status
        for a in range(n_params):
            p[a] = min(max(p0[a], lower[a]), upper[a])
        # How the pass at p weighed its points in H (_rules.pass_weighing), as a plain int
        # (int() drops numba's literal type: each literal value would compile the whole
        # pass once more, 4 s for each model's kernel).
        weighing = int(pass_weighing(False, 0, 1.0))
        chi2, positive = evaluate(x, y, w, p, lower, upper, free, estimator, g, h, jac,
                                  work_p, weighing)
        if not math.isfinite(chi2):
            return math.nan, 0, (NONFINITE if positive else MLE_NONPOSITIVE_MODEL)
        any_gradient = False
        for a in range(n_params):
            scale_squared[a] = h[a, a]
            if free[a] and g[a] != 0.0:
                any_gradient = True
        if not any_gradient:
            status = CONVERGED_GTOL
        robust = estimator != ESTIMATOR_LSE and estimator != ESTIMATOR_MLE
        damping = initial_damping(robust)
        n_iter = 0
        n_accepted = 0
        while status == RUNNING:
            if n_iter >= max_iter:
                status = MAX_ITERATIONS
                break
            n_iter += 1
            for a in range(n_params):
                active[a] = is_active(p[a], g[a], lower[a], upper[a], free[a])
            damped_system(h, g, scale_squared, damping, active, system, work_p)
            if cholesky_factor(system):
                cholesky_substitute(system, work_p, step)
            else:
                damping, status = step_not_tried(damping, SINGULAR)
                continue
            if estimator != ESTIMATOR_MLE and bends_from(weighing) and not bend(
                    probe_rows, x, y, w, p, lower, upper, free, estimator, weighing, g, h,
                    scale_squared, damping, active, system, jac, work_p, step, trial, trial_g,
                    chi2, tol):
                damping, status = step_not_tried(damping, MACHINE_PRECISION)
                continue
            small_step = clip_step(p, step, lower, upper, scale_squared, tol, trial)
            # Into the other work array: jac keeps the pass at p (the probe reads it).
            trial_weighing = int(pass_weighing(robust, n_accepted, damping))
            trial_chi2, _ = evaluate(x, y, w, trial, lower, upper, free, estimator, trial_g,
                                     trial_h, trial_jac, work_p, trial_weighing)
            predicted = predicted_reduction(h, step, scale_squared, damping)
            accepted, status, damping = judge_trial(chi2, trial_chi2, predicted, small_step,
                                                    tol, damping)
            if accepted:
                chi2 = trial_chi2
                weighing = trial_weighing
                n_accepted += 1
                jac, trial_jac = trial_jac, jac
                for a in range(n_params):
                    p[a] = trial[a]
                    g[a] = trial_g[a]
                    for b in range(n_params):
                        h[a, b] = trial_h[a, b]
                    scale_squared[a] = max(scale_squared[a], h[a, a])
        # Covariance: the inverse of H (least squares), of the Fisher information (MLE) or
        # of scipy's matrix for a robust loss (both one more pass).
        if estimator != ESTIMATOR_LSE:
            evaluate(x, y, w, p, lower, upper, free, estimator, trial_g, h, jac, work_p,
                     int(WEIGH_INFORMATION))
        for a in range(n_params):
            scale_squared[a] = 0.0
        damped_system(h, scale_squared, scale_squared, 0.0, free, system, work_p)
        invertible = cholesky_factor(system)
        if invertible:
            inverse_from_factor(system, trial_h, covariance)
            for a in range(n_params):
                for b in range(a + 1):
                    c = covariance[a, b] if (free[a] and free[b]) else 0.0
                    covariance[a, b] = c
                    covariance[b, a] = c
        if not invertible:
            for a in range(n_params):
                for b in range(n_params):
                    covariance[a, b] = math.nan
            if (status == CONVERGED_FTOL or status == CONVERGED_XTOL
                    or status == CONVERGED_FTOL_XTOL or status == CONVERGED_GTOL
                    or status == MACHINE_PRECISION):
                status = SINGULAR
        return chi2, n_iter, status

    if block:
        return jit(fit_one)
    return jit(_bound(fit_one, evaluate=evaluate, probe_rows=probe_rows))


def _bound(function, **values):
    """``function`` (a nested function) recompiled from its source without the parameters
    named in ``values``, which become constants of its namespace, as its free variables
    do: the same solver with the model's passes fixed (the GPU's: a CUDA device function
    cannot take another as an argument)."""
    source = textwrap.dedent(inspect.getsource(function))
    tree = ast.parse(source)
    definition = tree.body[0]
    definition.decorator_list = []
    definition.args.args = [arg for arg in definition.args.args if arg.arg not in values]
    ast.increment_lineno(tree, function.__code__.co_firstlineno - 1)
    namespace = {**function.__globals__, **inspect.getclosurevars(function).nonlocals,
                 **values}
    exec(compile(tree, function.__code__.co_filename, "exec"), namespace)  # noqa: S102
    return namespace[function.__name__]


