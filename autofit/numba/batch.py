"""Batched Levenberg-Marquardt (numba): ``prange`` over fits on the CPU, one thread per fit
on a CUDA GPU, from one source.

The per-fit solver below (:func:`build_fit_one`) is written once in the subset of Python
that both ``numba.njit`` and ``numba.cuda.jit(device=True)`` compile: scalars, loops,
``math`` and indexing into work arrays that the caller provides, no allocation. It follows
:mod:`autofit.original.batch` step for step, with everything the reference keeps in
(n_points, n_params) arrays folded into one pass over the points per iteration. On a GPU
each point's model value and gradient are accumulated into χ², the gradient and the
Gauss-Newton matrix at once, in registers. On the CPU the pass first writes one fit's
gradients to a small work array and then forms every sum as a SIMD reduction (see
``block`` in :func:`build_fit_one`); the batch's Jacobian is never formed. The CPU kernel
(:func:`build_cpu_kernel`) gives each chunk of fits one set of work arrays, reused fit
after fit; the CUDA kernel (:mod:`autofit.numba.gpu`) gives each thread local arrays.

Models enter as point functions (:mod:`autofit.numba.points`): ``value(x, i, p)`` and
``gradient(x, i, p, jac, col)``. Without an analytic gradient, forward differences follow
the step rule of :func:`autofit.original.jacobian_forward`: on the GPU point by point, on
the CPU one parameter at a time, each a loop over the points that evaluates the model for
several points at once. For more than ``FUSED_SUMS_MAX_PARAMS`` parameters the CPU pass
forms the Gauss-Newton matrix in ``TILE`` x ``TILE`` blocks of sums (see
``experiments/batch_cpu/README.md`` for the measurements).

The CPU kernel of a built-in model is compiled from a generated module in a per-user cache
directory with numba's ``cache=True`` (:func:`cached_cpu_kernel`), so that only the first
process ever compiles it; kernels around user functions are compiled in each process.
"""

from __future__ import annotations

import ast
import inspect
import math
import os
import textwrap

import numpy as np

from autofit import _rules
from autofit._codes import (
    BATCH_DAMPING_DOWN,
    BATCH_DAMPING_UP,
    BATCH_INITIAL_DAMPING,
    BATCH_MIN_DAMPING,
    CONVERGED_FTOL,
    CONVERGED_FTOL_XTOL,
    CONVERGED_GTOL,
    CONVERGED_XTOL,
    EPS,
    ESTIMATOR_LSE,
    ESTIMATOR_MLE,
    GEODESIC_MAX_RATIO,
    GEODESIC_MIN_REDUCTION,
    GEODESIC_PROBE,
    JAC_ANALYTIC,
    MACHINE_PRECISION,
    MAX_DAMPING,
    MAX_ITERATIONS,
    MLE_NEGATIVE_DATA,
    MLE_NONPOSITIVE_MODEL,
    NONFINITE,
    NONFINITE_DATA,
    RUNNING,
    SINGULAR,
    TOO_FEW_POINTS,
)
from autofit._declarations import implements, require_jac_method

FORWARD_STEP = 1.4901161193847656e-08  # sqrt(float64 eps), as autofit.original.jacobians
# Floating-point freedoms for the CPU kernel: reciprocals (a division by a loop-invariant
# parameter becomes one reciprocal per pass) and fused multiply-adds. No reassociation and
# no finite-math assumptions: sums keep their order and nan/inf stay detectable.
FASTMATH = {"arcp", "contract"}


def build_fit_one(value, gradient, jac_method, n_params, jit, inline=None,
                  dtype=np.float64, block=False, tag=""):
    """The per-fit solver for one model, compiled by ``jit``.

    ``value`` and ``gradient`` are point functions already compiled by ``jit``;
    ``jac_method`` is ``JAC_ANALYTIC`` or ``JAC_FORWARD`` and ``n_params`` the number of
    parameters (compile-time constants: the pass over the points is generated for them).
    Returns ``fit_one(x, y, w, p0, lower, upper, free, estimator, tol, max_iter, p, trial,
    step, g, h, trial_g, trial_h, scale, system, jac, trial_jac, work_p, active, covariance)
    -> (chi2, n_iter, status)`` which writes the fitted parameters into ``p`` and the
    covariance into ``covariance``.

    ``block`` chooses how a pass over the points is organised. False (the GPU): each point's
    gradient goes to ``jac`` ``(n_params, 1)`` and is accumulated at once, in registers.
    True (the CPU): the weighted gradients of all points are written to ``jac``
    ``(n_params + 3, n_points)`` first, then every sum of χ²'s gradient and Gauss-Newton
    matrix is one vectorisable dot product over the points.

    ``tag`` ends the qualified name of every function compiled here (see :func:`_tagged`).
    """
    analytic = jac_method == JAC_ANALYTIC
    inline = _tagging(inline or jit, tag)
    jit = _tagging(jit, tag)
    trial_status = inline(_rules.trial_status)
    # The robust losses (M-estimators), with the working precision's literals.
    robust_loss = inline(with_literals_of(_rules.robust_loss, dtype))
    # sqrt(eps) of the working precision (float64's step would vanish in float32), as a
    # scalar of that type so that the step arithmetic stays in it.
    forward_step = np.dtype(dtype).type(FORWARD_STEP if np.dtype(dtype) == np.float64
                                        else np.sqrt(np.finfo(dtype).eps))

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
            h = forward_step * abs(p[j])
            if h == 0.0:
                h = forward_step
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

    if block:
        # The CPU pass: the model at the probe for all points in one vectorisable loop (the
        # parameters as a tuple, as in evaluate), its weighted residuals to a scratch row,
        # then one dot product per parameter with the rows the pass at p left in ``jac``.
        probe_rows = jit(_generated_probe_rows(n_params, value, dtype, tag, robust_loss))

    @inline
    def probe_gradient(x, y, w, p, q, lower, upper, free, estimator, jac, work_p, g_probe):
        # g_probe = J_w(p)ᵀ W (y - f(q)) over the used points; False where it is not
        # finite. It must use the very Jacobian that formed g and H: a forward difference
        # recomputed in other arithmetic (a vectorised exp against a scalar one) differs by
        # ~1e-8 of itself, and (g_probe - g) / h then measures that, not the curvature. So
        # the CPU pass reads the rows that the pass at p left in ``jac``; the GPU pass, which
        # keeps no rows, recomputes each point's gradient with the same point function.
        # A robust loss projects its square-root residuals s(q) = r root(r²) instead, by
        # their Jacobian at p, whose weight w rho1 / root the CPU pass left in a row too.
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
                    _, rho1, _, root = robust_loss(r * r, estimator)
                    r_q = wi * (y[i] - value(x, i, q))
                    _, _, _, root_q = robust_loss(r_q * r_q, estimator)
                    weight = (wi * rho1 / root) * (r_q * root_q)
                else:
                    weight = wi * wi * (y[i] - value(x, i, q))
                for a in range(n_params):
                    if free[a]:
                        g_probe[a] += weight * jac[a, 0]
        finite = True
        for a in range(n_params):
            finite = finite and math.isfinite(g_probe[a])
        return finite

    evaluate = jit(_generated_evaluate(n_params, point, dtype, block, inline,
                                       value if rows_of_differences else None,
                                       forward_step, tag, robust_loss))

    @jit
    def cholesky_factor(a):
        # Factor a (symmetric positive definite) in place into its lower Cholesky factor;
        # False when a pivot is not > 0 (the solve is then abandoned, as in the reference).
        for j in range(n_params):
            pivot = a[j, j]
            for k in range(j):
                pivot -= a[j, k] * a[j, k]
            if not (pivot > 0.0 and math.isfinite(pivot)):
                return False
            a[j, j] = math.sqrt(pivot)
            for i in range(j + 1, n_params):
                s = a[i, j]
                for k in range(j):
                    s -= a[i, k] * a[j, k]
                a[i, j] = s / a[j, j]
        return True

    @jit
    def cholesky_substitute(chol, b, z):
        # Solve (chol cholᵀ) z = b with the factor from cholesky_factor.
        for i in range(n_params):
            s = b[i]
            for k in range(i):
                s -= chol[i, k] * z[k]
            z[i] = s / chol[i, i]
        for i in range(n_params - 1, -1, -1):
            s = z[i]
            for k in range(i + 1, n_params):
                s -= chol[k, i] * z[k]
            z[i] = s / chol[i, i]

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

    @jit
    def damped_system(h, g, scale, damping, free, system, rhs):
        # Fixed parameters get an identity row and column, so their step is exactly 0.
        for a in range(n_params):
            for b in range(n_params):
                system[a, b] = h[a, b] if (free[a] and free[b]) else 0.0
            if free[a]:
                system[a, a] = h[a, a] + damping * scale[a]
                rhs[a] = g[a]
            else:
                system[a, a] = 1.0
                rhs[a] = 0.0

    @inline
    def bend(x, y, w, p, lower, upper, free, estimator, g, h, scale, damping, active,
             system, jac, work_p, step, trial, trial_g, chi2, tol):
        # Transtrum and Sethna's geodesic acceleration (least squares and robust losses),
        # as the reference's:
        # step (the LM step in, factor of the damped system in ``system``) becomes the
        # velocity plus half the acceleration; False when the acceleration is not finite or
        # large next to the velocity. A step whose predicted reduction is within tol of χ²
        # is left as it is (the reference's _worth_bending). trial and trial_g are scratch
        # (the velocity, then the probe, then the acceleration; the right-hand side).
        for a in range(n_params):
            trial[a] = min(max(p[a] + step[a], lower[a]), upper[a]) - p[a]
        predicted = 0.0
        for a in range(n_params):
            row = 0.0
            for b in range(n_params):
                row += h[a, b] * trial[b]
            predicted += trial[a] * row
        damped = 0.0
        for a in range(n_params):
            damped += scale[a] * trial[a] * trial[a]
        predicted += 2.0 * damping * damped
        if not predicted > max(tol, GEODESIC_MIN_REDUCTION) * chi2:
            return True
        for a in range(n_params):
            step[a] = trial[a]
            trial[a] = p[a] + GEODESIC_PROBE * step[a]
        if not probe_gradient(x, y, w, p, trial, lower, upper, free, estimator, jac, work_p,
                              trial_g):
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
            velocity2 += scale[a] * step[a] * step[a]
            acceleration2 += scale[a] * trial[a] * trial[a]
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

    @jit
    def fit_one(x, y, w, p0, lower, upper, free, estimator, tol, max_iter, p, trial, step,
                g, h, trial_g, trial_h, scale, system, jac, trial_jac, work_p, active,
                covariance):
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
        chi2, positive = evaluate(x, y, w, p, lower, upper, free, estimator, g, h, jac,
                                  work_p, False)
        if not math.isfinite(chi2):
            return math.nan, 0, (NONFINITE if positive else MLE_NONPOSITIVE_MODEL)
        any_gradient = False
        for a in range(n_params):
            scale[a] = h[a, a]
            if free[a] and g[a] != 0.0:
                any_gradient = True
        if not any_gradient:
            status = CONVERGED_GTOL
        damping = BATCH_INITIAL_DAMPING
        n_iter = 0
        while status == RUNNING:
            if n_iter >= max_iter:
                status = MAX_ITERATIONS
                break
            n_iter += 1
            # The active set: a parameter at a bound whose descent direction points out is
            # held for this step, so that it does not distort the others' step.
            for a in range(n_params):
                active[a] = free[a] and not (
                    (p[a] <= lower[a] and g[a] < 0.0) or (p[a] >= upper[a] and g[a] > 0.0))
            damped_system(h, g, scale, damping, active, system, work_p)
            if cholesky_factor(system):
                cholesky_substitute(system, work_p, step)
            else:
                damping *= BATCH_DAMPING_UP
                if damping > MAX_DAMPING:
                    status = SINGULAR
                continue
            if estimator != ESTIMATOR_MLE and not bend(
                    x, y, w, p, lower, upper, free, estimator, g, h, scale, damping, active,
                    system, jac, work_p, step, trial, trial_g, chi2, tol):
                damping *= BATCH_DAMPING_UP
                if damping > MAX_DAMPING:
                    status = MACHINE_PRECISION
                continue
            moved2 = 0.0
            size2 = 0.0
            for a in range(n_params):
                trial[a] = min(max(p[a] + step[a], lower[a]), upper[a])
                moved = trial[a] - p[a]
                moved2 += scale[a] * moved * moved
                size2 += scale[a] * p[a] * p[a]
            small_step = moved2 <= tol * tol * size2
            # Into the other work array: jac keeps the pass at p (the probe reads it).
            trial_chi2, _ = evaluate(x, y, w, trial, lower, upper, free, estimator, trial_g,
                                     trial_h, trial_jac, work_p, False)
            predicted = 0.0
            for a in range(n_params):
                row = 0.0
                for b in range(n_params):
                    row += h[a, b] * step[b]
                predicted += step[a] * row
            damped = 0.0
            for a in range(n_params):
                damped += scale[a] * step[a] * step[a]
            predicted += 2.0 * damping * damped
            small_reduction = (abs(chi2 - trial_chi2) <= tol * trial_chi2
                               and predicted <= tol * trial_chi2)
            accepted = trial_chi2 <= chi2
            status = trial_status(accepted, small_reduction, small_step, trial_chi2 == 0.0)
            if accepted:
                chi2 = trial_chi2
                jac, trial_jac = trial_jac, jac
                for a in range(n_params):
                    p[a] = trial[a]
                    g[a] = trial_g[a]
                    for b in range(n_params):
                        h[a, b] = trial_h[a, b]
                    scale[a] = max(scale[a], h[a, a])
                damping = max(damping * BATCH_DAMPING_DOWN, BATCH_MIN_DAMPING)
            else:
                damping *= BATCH_DAMPING_UP
                if status == RUNNING and damping > MAX_DAMPING:
                    status = MACHINE_PRECISION
        # Covariance: the inverse of H (least squares), of the Fisher information (MLE) or
        # of scipy's matrix for a robust loss (both one more pass).
        if estimator != ESTIMATOR_LSE:
            evaluate(x, y, w, p, lower, upper, free, estimator, trial_g, h, jac, work_p, True)
        for a in range(n_params):
            scale[a] = 0.0
        damped_system(h, scale, scale, 0.0, free, system, work_p)
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

    return fit_one


def _evaluate_source(n_params: int) -> str:
    """Source of the pass over the points, unrolled over ``n_params`` parameters.

    ``evaluate(x, y, w, p, lower, upper, free, estimator, g, h, jac, work_p, fisher)``
    returns ``(chi2, positive)``: χ² (inf when not finite), and False when the Poisson model
    was <= 0 at a used point; it writes the gradient ``g = -½ ∂χ²/∂p`` and the
    Gauss-Newton matrix ``h`` (with ``fisher`` set, the matrix whose inverse is the
    covariance: the Poisson Fisher information, or scipy's ``Σ w² max(rho1 + 2 rho2 z, eps)
    J Jᵀ`` for a robust loss). The sums are scalar locals rather than array elements, which
    lets the compiler keep them in registers: with a loop over a run-time number of
    parameters, the pass cost 4x more.
    """
    n = range(n_params)
    pairs = [(a, b) for a in n for b in range(a + 1)]
    lines = [
        "def evaluate(x, y, w, p, lower, upper, free, estimator, g, h, jac, work_p, fisher):",
        *(f"    work_p[{a}] = p[{a}]" for a in n),
        *(f"    free{a} = free[{a}]" for a in n),
        # The parameters as a tuple of scalars: the model cannot then alias the Jacobian
        # column it writes, so the compiler keeps them (and 1/width...) out of the loop.
        "    params = (" + "".join(f"p[{a}], " for a in n) + ")",
        *(f"    g{a} = 0.0" for a in n),
        *(f"    h{a}_{b} = 0.0" for a, b in pairs),
        "    mle = estimator == ESTIMATOR_MLE",
        "    lse = estimator == ESTIMATOR_LSE",
        "    chi2 = 0.0",
        "    for i in range(y.shape[0]):",
        "        wi = w[i]",
        "        if wi == 0.0:",
        "            continue",
        "        f = point(x, i, params, lower, upper, free, jac, work_p, 0)",
        "        yi = y[i]",
        "        if lse:",
        "            r = wi * (yi - f)",
        "            chi2 += r * r",
        "            weight_g = wi * r",
        "            weight_h = wi * wi",
        "        elif mle:",
        "            if not f > 0.0:",
        "                return math.inf, False",
        "            term = f - yi",
        "            if yi > 0.0:",
        "                term -= yi * math.log(f / yi)",
        "            chi2 += 2.0 * wi * term",
        "            weight_g = wi * (yi / f - 1.0)",
        "            weight_h = wi / f if fisher else wi * yi / (f * f)",
        "        else:",
        *_robust_point_lines(12),
        *(f"        j{a} = jac[{a}, 0] if free{a} else 0.0" for a in n),
        *(f"        g{a} += weight_g * j{a}" for a in n),
        *(f"        t{a} = weight_h * j{a}" for a in n),
        *(f"        h{a}_{b} += t{a} * j{b}" for a, b in pairs),
        "    finite = math.isfinite(chi2)",
        *(f"    g[{a}] = g{a}" for a in n),
        *(f"    finite = finite & math.isfinite(g{a})" for a in n),
        *(f"    h[{a}, {b}] = h{a}_{b}" for a, b in pairs),
        *(f"    h[{b}, {a}] = h{a}_{b}" for a, b in pairs if a != b),
        *(f"    finite = finite & math.isfinite(h{a}_{b})" for a, b in pairs),
        "    if not finite:",
        "        return math.inf, True",
        "    return chi2, True",
    ]
    return "\n".join(lines) + "\n"


def _robust_point_lines(indent):
    """Lines of a pass that form one used point's χ² term and two weights under a robust
    loss, from ``wi``, ``yi`` and the model value ``f`` (see :func:`_rules.robust_loss`):
    the Gauss-Newton weight is that of the square-root residuals, ``(w rho1 / root)²``;
    with ``fisher``, scipy's covariance weight. ``factor`` (w rho1 / root) is left for the
    probe of the geodesic acceleration."""
    pad = " " * indent
    return [pad + line for line in (
        "r = wi * (yi - f)",
        "z = r * r",
        "rho, rho1, rho2, root = robust_loss(z, estimator)",
        "chi2 += rho",
        "weight_g = wi * rho1 * r",
        "factor = wi * rho1 / root",
        # EPS as a literal, so that a float32 pass keeps it in float32.
        f"weight_h = wi * wi * max(rho1 + 2.0 * rho2 * z, {EPS!r}) if fisher "
        "else factor * factor",
    )]


def _block_evaluate_source(n_params: int, forward: bool = False) -> str:
    """The pass of :func:`_evaluate_source` organised for SIMD on a CPU.

    First a loop over the points writes each point's gradient to ``jac[:n_params, i]``
    and its two weights (of the gradient and of the Gauss-Newton matrix) to
    ``jac[n_params, i]`` and ``jac[n_params + 1, i]``; then each sum is a dot product over
    the points (``_dot2``/``_dot3``, compiled with reassociation so that they vectorise).
    The sums are the same as the point-by-point pass's, in another order. Poisson MLE has a
    loop of its own (``_mle_pass``); a robust loss takes the least-squares loop and then
    reweighs its rows (``_robust_rows``), so that loop carries no branch of either.

    With ``forward``, ``point`` returns the model value only; the values go to row
    ``_value_row(n_params)`` and ``_forward_rows`` then writes each parameter's row of
    forward differences by one loop over the points (in which the model, inlined, is
    evaluated for several points at once), instead of P + 1 scalar model calls per point.
    """
    n = range(n_params)
    wg, wh, sq = n_params, n_params + 1, n_params + 2
    vr = _value_row(n_params)
    # Only what must be unrolled is (the tuple of parameters, the fused sums of small
    # models); the rest are loops of constant length: hundreds of unrolled conditionals
    # (25 parameters: 325 sums) exhaust numba's SSA pass.
    small = n_params <= FUSED_SUMS_MAX_PARAMS

    def each_param(statement, indent):
        # ``statement`` (with ``{a}``) for every parameter: unrolled for small models,
        # a loop of constant length for large ones.
        pad = " " * indent
        if small:
            return [pad + statement.format(a=a) for a in n]
        return [f"{pad}for a in range({n_params}):", pad + "    " + statement.format(a="a")]

    lines = [
        "def evaluate(x, y, w, p, lower, upper, free, estimator, g, h, jac, work_p, fisher):",
        *each_param("work_p[{a}] = p[{a}]", 4),
        # Large models index their parameters in loops (multi_lorentzian's peaks): a tuple
        # indexed at run time costs a branch per access there, so they keep the array.
        # User functions (forward) index their parameters by constants: a tuple again.
        ("    params = (" + "".join(f"p[{a}], " for a in n) + ")") if small or forward else
        "    params = p",
        "    mle = estimator == ESTIMATOR_MLE",
        "    chi2 = 0.0",
        "    if not mle:",
        # Least squares: no branch, no early exit and no running sum in this loop, so the
        # compiler can run it over several points at once. Points of weight 0 are
        # evaluated like the others and their columns zeroed afterwards (a non-finite
        # model there must not reach the sums): zeroing them by selects inside the loop
        # compiled to masked loads and stores, which made the pass 20% slower (AMD Zen 3).
        "        n_unused = 0",
        "        for i in range(y.shape[0]):",
        "            wi = w[i]",
        "            yi = y[i]",
        "            f = point(x, i, params, lower, upper, free, jac, work_p, i)",
        *([f"            jac[{vr}, i] = f"] if forward else []),
        "            r = wi * (yi - f)",
        f"            jac[{wg}, i] = wi * r",
        f"            jac[{wh}, i] = wi * wi",
        f"            jac[{sq}, i] = r * r",
        "            n_unused += 1 if wi == 0.0 else 0",
        *(["        _forward_rows(x, p, upper, free, jac, work_p)"] if forward else []),
        "        if n_unused > 0:",
        "            for i in range(y.shape[0]):",
        "                if w[i] == 0.0:",
        f"                    for a in range({sq + 1}):",
        "                        jac[a, i] = 0.0",
        # A robust loss reweighs the least-squares rows point by point afterwards, so the
        # loop above (the model, vectorised) is the same for it.
        "        if estimator == ESTIMATOR_LSE:",
        f"            chi2 = _sum(jac, {sq})",
        "        else:",
        "            chi2 = _robust_rows(jac, y.shape[0], estimator, fisher)",
        "    else:",
        "        chi2 = _mle_pass(x, y, w, params, lower, upper, free, jac, work_p, fisher)",
        "        if chi2 == -1.0:",
        "            return math.inf, False",
        *([
            # The differences from the model values that the pass left in their row; the
            # columns of unused points are zeroed again (their model may not be finite).
            "    if mle:",
            "        _forward_rows(x, p, upper, free, jac, work_p)",
            "        for i in range(y.shape[0]):",
            "            if w[i] == 0.0:",
            f"                for a in range({n_params}):",
            "                    jac[a, i] = 0.0",
        ] if forward else []),
        "    finite = math.isfinite(chi2)",
        *(_fused_sums(n_params) if small else _tiled_sums(n_params)),
        f"    for a in range({n_params}):",
        "        finite = finite & math.isfinite(g[a])",
        "        for b in range(a + 1):",
        "            h[b, a] = h[a, b]",
        "            finite = finite & math.isfinite(h[a, b])",
        "    if not finite:",
        "        return math.inf, True",
        "    return chi2, True",
        "",
        "",
        "def _mle_pass(x, y, w, params, lower, upper, free, jac, work_p, fisher):",
        "    # chi2 (the Poisson deviance), or -1 when the model is <= 0 at a used point.",
        "    chi2 = 0.0",
        "    for i in range(y.shape[0]):",
        "        wi = w[i]",
        "        if wi == 0.0:",
        f"            for a in range({n_params + 2}):",
        "                jac[a, i] = 0.0",
        *([f"            jac[{vr}, i] = 0.0"] if forward else []),
        "            continue",
        "        f = point(x, i, params, lower, upper, free, jac, work_p, i)",
        *([f"        jac[{vr}, i] = f"] if forward else []),
        "        yi = y[i]",
        "        if not f > 0.0:",
        "            return -1.0",
        "        term = f - yi",
        "        if yi > 0.0:",
        "            term -= yi * math.log(f / yi)",
        "        chi2 += 2.0 * wi * term",
        f"        jac[{wg}, i] = wi * (yi / f - 1.0)",
        f"        jac[{wh}, i] = wi / f if fisher else wi * yi / (f * f)",
        "    return chi2",
        "",
        "",
        "def _robust_rows(jac, n_points, estimator, fisher):",
        # From the least-squares rows (w r, w², r²) to the loss's: the gradient weight
        # w rho1 r, the Gauss-Newton weight (w rho1 / root)² (with fisher, scipy's
        # w² max(rho1 + 2 rho2 z, eps)), and in row sq the probe's weight w rho1 / root
        # (probe_rows); returns Σ rho. Unused points' zero rows stay zero.
        "    chi2 = 0.0",
        "    for i in range(n_points):",
        f"        z = jac[{sq}, i]",
        "        rho, rho1, rho2, root = robust_loss(z, estimator)",
        "        chi2 += rho",
        "        ratio = rho1 / root",
        f"        wi2 = jac[{wh}, i]",
        f"        jac[{wg}, i] *= rho1",
        f"        jac[{sq}, i] = math.sqrt(wi2) * ratio",
        # EPS as a literal, so that a float32 pass keeps it in float32.
        f"        jac[{wh}, i] = wi2 * max(rho1 + 2.0 * rho2 * z, {EPS!r}) if fisher "
        "else wi2 * ratio * ratio",
        "    return chi2",
    ]
    if forward:
        # The step rule of autofit.original.jacobian_forward.
        lines += [
            "",
            "",
            "def _forward_rows(x, p, upper, free, jac, work_p):",
            f"    for j in range({n_params}):",
            "        if not free[j]:",
            "            for i in range(jac.shape[1]):",
            "                jac[j, i] = 0.0",
            "            continue",
            "        h = forward_step * abs(p[j])",
            "        if h == 0.0:",
            "            h = forward_step",
            "        if p[j] + h > upper[j]:",
            "            h = -h",
            "        work_p[j] = p[j] + h",
            "        h = work_p[j] - p[j]",
            "        _difference_row(x, (" + "".join(f"work_p[{a}], " for a in n)
            + "), jac, j, h)",
            "        work_p[j] = p[j]",
            "",
            "",
            "def _difference_row(x, q, jac, row, h):",
            "    for i in range(jac.shape[1]):",
            f"        jac[row, i] = (value(x, i, q) - jac[{vr}, i]) / h",
        ]
    return "\n".join(lines) + "\n"


# Up to this many parameters all sums of a pass are one loop over the points (each sum a
# vector accumulator); beyond it, one dot product per sum (fewer live accumulators).
FUSED_SUMS_MAX_PARAMS = 8


def _fused_sums(n_params):
    """Lines of evaluate that call ``_all_sums`` and unpack its tuple into g and h."""
    n = range(n_params)
    pairs = [(a, b) for a in n for b in range(a + 1)]
    names = [f"s{a}" for a in n] + [f"s{a}_{b}" for a, b in pairs]
    return ("    " + ", ".join(names) + ", = _all_sums(jac)",
            *(f"    g[{a}] = s{a} if free[{a}] else 0.0" for a in n),
            *(f"    h[{a}, {b}] = s{a}_{b} if free[{a}] and free[{b}] else 0.0"
              for a, b in pairs))


# Beyond FUSED_SUMS_MAX_PARAMS the Gauss-Newton matrix is formed in TILE x TILE blocks: one
# loop over the points per block, nine sums from six loads a point instead of one sum from
# two (25 parameters: the sums of a pass took 5 us instead of 10, AMD EPYC, AVX2; 3 x 3 was
# faster than 2 x 4, 4 x 3 or 4 x 4, whose accumulators no longer fit in the registers).
TILE = 3


def _tile_padding(n_params):
    """Rows after the weighted gradient rows that the last row of blocks reads past them."""
    return -n_params % TILE


def _tiled_sums(n_params):
    """Lines of evaluate that form g and the lower triangle of h in TILE x TILE blocks.

    Rows ``n_params + 3 + a`` of ``jac`` receive ``weight_h * J[a]`` (then each sum of h is a
    dot product of a weighted row and a gradient row); the blocks on the diagonal and the
    last row of blocks compute a few sums outside the triangle, which are dropped.
    """
    wg, wh, first = n_params, n_params + 1, n_params + 3
    padding = _tile_padding(n_params)
    pairs = [(i, j) for i in range(TILE) for j in range(TILE)]
    lines = [
        f"    for a in range({n_params}):",
        f"        _scaled_row(jac, {wh}, a, {first} + a)",
        f"        g[a] = _dot2(jac, {wg}, a) if free[a] else 0.0",
    ]
    if padding:
        # Read by the last row of blocks (for sums that are dropped); zeros keep garbage
        # (denormals) out of the arithmetic.
        lines += [f"    for a in range({first + n_params}, {first + n_params + padding}):",
                  "        jac[a, :] = 0.0"]
    lines += [
        f"    for a0 in range(0, {n_params}, {TILE}):",
        f"        for b0 in range(0, a0 + 1, {TILE}):",
        "            " + ", ".join(f"s{i}_{j}" for i, j in pairs)
        + f", = _tile(jac, {first} + a0, b0)",
    ]
    for i, j in pairs:
        lines += [f"            if a0 + {i} < {n_params} and b0 + {j} <= a0 + {i}:",
                  f"                h[a0 + {i}, b0 + {j}] = s{i}_{j} "
                  f"if free[a0 + {i}] and free[b0 + {j}] else 0.0"]
    return tuple(lines)


def _tile_source():
    """``_tile(m, a0, b0)``: the TILE x TILE dot products of rows a0.. with rows b0.. of m."""
    pairs = [(i, j) for i in range(TILE) for j in range(TILE)]
    names = [f"s{i}_{j}" for i, j in pairs]
    return "\n".join([
        "def _tile(m, a0, b0):",
        *(f"    {name} = 0.0" for name in names),
        "    for k in range(m.shape[1]):",
        *(f"        u{i} = m[a0 + {i}, k]" for i in range(TILE)),
        *(f"        v{j} = m[b0 + {j}, k]" for j in range(TILE)),
        *(f"        s{i}_{j} += u{i} * v{j}" for i, j in pairs),
        "    return (" + "".join(f"{name}, " for name in names) + ")",
    ]) + "\n"


def _all_sums_source(n_params):
    n = range(n_params)
    pairs = [(a, b) for a in n for b in range(a + 1)]
    wg, wh = n_params, n_params + 1
    names = [f"s{a}" for a in n] + [f"s{a}_{b}" for a, b in pairs]
    return "\n".join([
        "def _all_sums(jac):",
        *(f"    {name} = 0.0" for name in names),
        "    for i in range(jac.shape[1]):",
        f"        weight_g = jac[{wg}, i]",
        f"        weight_h = jac[{wh}, i]",
        *(f"        j{a} = jac[{a}, i]" for a in n),
        *(f"        s{a} += weight_g * j{a}" for a in n),
        *(f"        t{a} = weight_h * j{a}" for a in n),
        *(f"        s{a}_{b} += t{a} * j{b}" for a, b in pairs),
        "    return (" + "".join(f"{name}, " for name in names) + ")",
    ]) + "\n"


def _sum(m, row):
    total = 0.0
    for i in range(m.shape[1]):
        total += m[row, i]
    return total


def _tagged(function, tag):
    """A copy of ``function`` whose qualified name ends in ``__tag``.

    numba names a compiled function by its module, qualified name and a counter of this
    process. The disk-cached kernels of two models, compiled in different processes and
    loaded into one, could then carry one symbol for different code, and the loader keeps
    only one of them (a gaussian kernel ran a linear model's probe). Each kernel's functions
    are tagged with what the kernel is, so their names differ.
    """
    import types

    suffix = f"__{tag}"
    if not tag or function.__qualname__.endswith(suffix):
        return function
    copy = types.FunctionType(function.__code__, function.__globals__, function.__name__,
                              function.__defaults__, function.__closure__)
    copy.__qualname__ = function.__qualname__ + suffix
    copy.__kwdefaults__ = function.__kwdefaults__
    return copy


def _tagging(decorator, tag):
    """``decorator``, applied to the :func:`_tagged` copy of each function."""
    if not tag:
        return decorator
    return lambda function: decorator(_tagged(function, tag))


def _dot2(m, weight_row, a):
    total = 0.0
    for i in range(m.shape[1]):
        total += m[weight_row, i] * m[a, i]
    return total


def _scaled_row(m, weight_row, a, out_row):
    for i in range(m.shape[1]):
        m[out_row, i] = m[weight_row, i] * m[a, i]


def _dot3(m, weight_row, a, b):
    total = 0.0
    for i in range(m.shape[1]):
        total += m[weight_row, i] * m[a, i] * m[b, i]
    return total


# Reassociation lets the dot products over the points run in SIMD lanes (rounding-level
# changes only); nothing else is compiled with it.
_REDUCE_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


def _generated_evaluate(n_params, point, dtype=np.float64, block=False, inline=None,
                        value=None, forward_step=None, tag="", robust_loss=None):
    import numba

    forward = value is not None
    source = (_block_evaluate_source(n_params, forward) if block
              else _evaluate_source(n_params))
    tree = ast.parse(source)
    if np.dtype(dtype) != np.float64:
        tree = ast.fix_missing_locations(_TypedFloatLiterals().visit(tree))
    # __name__: numba's disk cache rebuilds each compiled function's environment from an
    # importable module (the CPU kernels of built-in models are cached, this pass included).
    namespace = {"__name__": __name__, "math": math, "point": point,
                 "robust_loss": robust_loss, "ESTIMATOR_LSE": ESTIMATOR_LSE,
                 "ESTIMATOR_MLE": ESTIMATOR_MLE, "_real": numba.from_dtype(np.dtype(dtype))}
    if block:
        # Not inline="always": numba would inline the IR and compile it without these flags.
        reduce = _tagging(numba.njit(error_model="numpy", fastmath=_REDUCE_FASTMATH), tag)
        namespace["_dot2"] = reduce(_dot2)
        namespace["_dot3"] = reduce(_dot3)
        namespace["_sum"] = reduce(_sum)
        namespace["_scaled_row"] = reduce(_scaled_row)
        if n_params <= FUSED_SUMS_MAX_PARAMS:
            exec(compile(_all_sums_source(n_params), f"<autofit sums {n_params}>", "exec"),  # noqa: S102
                 namespace)
            namespace["_all_sums"] = reduce(namespace["_all_sums"])
        else:
            exec(compile(_tile_source(), "<autofit tile>", "exec"), namespace)  # noqa: S102
            namespace["_tile"] = reduce(namespace["_tile"])
    exec(compile(tree, f"<autofit evaluate {n_params}>", "exec"), namespace)  # noqa: S102
    if block:
        # evaluate calls the passes through the namespace, so they must be compiled there.
        for name in ("_mle_pass", "_robust_rows"):
            namespace[name] = _tagging(inline or numba.njit, tag)(namespace[name])
    if forward:
        # Not inlined: a call passes the perturbed parameters as scalars, which the
        # compiler then knows the work array cannot alias (the loop over points vectorises).
        namespace.update(value=value, forward_step=forward_step)
        for name in ("_difference_row", "_forward_rows"):
            namespace[name] = _tagging(numba.njit(error_model="numpy", fastmath=FASTMATH),
                                       tag)(namespace[name])
    return namespace["evaluate"]


def _generated_probe_rows(n_params, value, dtype=np.float64, tag="", robust_loss=None):
    """``probe_rows(x, y, w, q, free, estimator, jac, g_probe)``: ``g_probe = J_w(p)ᵀ W (y -
    f(q))`` from the Jacobian rows ``jac[:n_params]`` of the CPU pass at p (zero at unused
    points), with row ``n_params`` as scratch; for a robust loss ``Σ (w rho1 / root)(p) J(p)
    s(q)``, ``s = r root(r²)`` the square-root residuals, the weights from row
    ``n_params + 2`` of the pass at p."""
    import numba

    n = range(n_params)
    row, factor = n_params, n_params + 2
    source = "\n".join([
        "def probe_rows(x, y, w, q, free, estimator, jac, g_probe):",
        "    params = (" + "".join(f"q[{a}], " for a in n) + ")",
        "    n_unused = 0",
        "    if estimator == ESTIMATOR_LSE:",
        "        for i in range(y.shape[0]):",
        "            wi = w[i]",
        f"            jac[{row}, i] = wi * wi * (y[i] - value(x, i, params))",
        "            n_unused += 1 if wi == 0.0 else 0",
        "    else:",
        "        for i in range(y.shape[0]):",
        "            wi = w[i]",
        "            r_q = wi * (y[i] - value(x, i, params))",
        "            _, _, _, root_q = robust_loss(r_q * r_q, estimator)",
        f"            jac[{row}, i] = jac[{factor}, i] * (r_q * root_q)",
        "            n_unused += 1 if wi == 0.0 else 0",
        # Points of weight 0 were evaluated like the others; their model may be inf or nan.
        "    if n_unused > 0:",
        "        for i in range(y.shape[0]):",
        "            if w[i] == 0.0:",
        f"                jac[{row}, i] = 0.0",
        f"    for a in range({n_params}):",
        f"        g_probe[a] = _dot2(jac, {row}, a) if free[a] else 0.0",
    ]) + "\n"
    tree = ast.parse(source)
    if np.dtype(dtype) != np.float64:
        tree = ast.fix_missing_locations(_TypedFloatLiterals().visit(tree))
    namespace = {"__name__": __name__, "value": value, "robust_loss": robust_loss,
                 "ESTIMATOR_LSE": ESTIMATOR_LSE,
                 # In the points' order, as the reference's sum (reassociated, the sums
                 # moved a generated case's parameters by 1.2e-8 of themselves).
                 "_dot2": _tagging(numba.njit(error_model="numpy"), tag)(_dot2),
                 "_real": numba.from_dtype(np.dtype(dtype))}
    exec(compile(tree, f"<autofit probe rows {n_params}>", "exec"), namespace)  # noqa: S102
    return namespace["probe_rows"]


class _TypedFloatLiterals(ast.NodeTransformer):
    """Wrap every float literal ``c`` as ``_real(c)``.

    numba types a Python float literal as float64, and float32 * float64 is float64: in a
    float32 kernel each literal would pull the arithmetic (and ``exp``) into float64.
    """

    def visit_Constant(self, node):
        if isinstance(node.value, float):
            call = ast.Call(ast.Name("_real", ast.Load()), [ast.Constant(node.value)], [])
            return ast.copy_location(call, node)
        return node


class _VectorisableExp(ast.NodeTransformer):
    """Replace ``math.exp(...)`` by ``_vexp(...)`` (:mod:`autofit.numba.fastexp`)."""

    def visit_Call(self, node):
        self.generic_visit(node)
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr == "exp"
                and isinstance(f.value, ast.Name) and f.value.id == "math"):
            node.func = ast.copy_location(ast.Name("_vexp", ast.Load()), f)
        return node


def with_literals_of(function, dtype, fast_exp=False):
    """``function`` recompiled from its source for the working dtype.

    Its float literals become scalars of ``dtype`` (float32 only: in float64 they already
    are), and with ``fast_exp`` (float64 CPU kernels) ``math.exp`` becomes the vectorisable
    :func:`autofit.numba.fastexp.vexp`. The identity when there is nothing to change, and
    for functions whose source cannot be read (they then run unchanged: correct, slower).
    """
    import numba

    float32 = np.dtype(dtype) != np.float64
    fast_exp = fast_exp and not float32
    if not (float32 or fast_exp):
        return function
    function = getattr(function, "py_func", function)
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return function
    tree = ast.parse(source)
    definition = tree.body[0]
    if not isinstance(definition, ast.FunctionDef):  # a lambda: leave it
        return function
    definition.decorator_list = []
    if float32:
        tree = _TypedFloatLiterals().visit(tree)
    if fast_exp:
        from autofit.numba.fastexp import vexp

        tree = _VectorisableExp().visit(tree)
    tree = ast.fix_missing_locations(tree)
    namespace = dict(function.__globals__)
    for name, cell in zip(function.__code__.co_freevars, function.__closure__ or (),
                          strict=True):
        namespace[name] = cell.cell_contents
    namespace["_real"] = numba.from_dtype(np.dtype(dtype))
    if fast_exp:
        namespace["_vexp"] = vexp
    exec(compile(tree, inspect.getsourcefile(function) or "<autofit>", "exec"),  # noqa: S102
         namespace)
    return namespace[definition.name]


def cpu_fit_one(value, gradient, jac_method, n_params, dtype=np.float64):
    """:func:`build_fit_one` for the CPU kernel (compiled lazily, at the kernel's first call)."""
    import numba

    jit = numba.njit(error_model="numpy", fastmath=FASTMATH)
    # The point functions are inlined into the pass over the points: a call per point that
    # passes numba's array structures would cost more than the model itself.
    inline = numba.njit(error_model="numpy", inline="always", fastmath=FASTMATH)
    # Built-in models (plain functions of autofit.numba.points) get the vectorisable exp;
    # user functions are compiled as written.
    fast_exp = getattr(value, "__module__", "") == "autofit.numba.points"
    tag = f"{getattr(value, '__name__', 'model')}_{int(jac_method)}_{n_params}_" \
          f"{np.dtype(dtype).name}"
    return build_fit_one(inline(with_literals_of(value, dtype, fast_exp)),
                         inline(with_literals_of(gradient, dtype, fast_exp)),
                         jac_method, n_params, jit, inline, dtype, block=True,
                         tag="".join(c if c.isalnum() else "_" for c in tag))


def work_rows(n_params):
    """Rows of the CPU pass's work array: the gradient, two weights and the squared residual
    (for a robust loss, the weight of the geodesic probe) per point, for large models the
    weighted gradient rows too (and the rows that the blocks of :func:`_tiled_sums` read past
    them), and the model values."""
    return _value_row(n_params) + 1


def _value_row(n_params):
    """The row of the CPU pass's work array that holds the model values (forward
    differences), after the rows described in :func:`work_rows`."""
    if n_params <= FUSED_SUMS_MAX_PARAMS:
        return n_params + 3
    return 2 * n_params + 3 + _tile_padding(n_params)


# The CPU kernel over all fits, as source: it is compiled either from a namespace (user
# models) or from a module file that numba can cache on disk (built-in models).
# ``fit_one`` and ``WORK_ROWS`` are globals of wherever it is compiled.
_RUN_SOURCE = """
def run(x, ydata, weights, p0, lower, upper, free, estimator, tol, max_iter, params,
        chi2, n_iter, status, covariance):
    n_fits, n_params = p0.shape
    # Chunks of fits share one set of work arrays (no allocation per fit); small chunks
    # keep the two threads balanced when some fits take far longer than others.
    chunk = 16
    n_chunks = (n_fits + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        trial = np.empty(n_params)
        step = np.empty(n_params)
        g = np.empty(n_params)
        trial_g = np.empty(n_params)
        scale = np.empty(n_params)
        work_p = np.empty(n_params)
        h = np.empty((n_params, n_params))
        trial_h = np.empty((n_params, n_params))
        system = np.empty((n_params, n_params))
        jac = np.empty((WORK_ROWS, ydata.shape[1]))
        trial_jac = np.empty((WORK_ROWS, ydata.shape[1]))
        active = np.empty(n_params, dtype=np.bool_)
        for fit in range(c * chunk, min(n_fits, (c + 1) * chunk)):
            chi2[fit], n_iter[fit], status[fit] = fit_one(
                x[fit % x.shape[0]], ydata[fit], weights[fit % weights.shape[0]],
                p0[fit], lower[fit % lower.shape[0]], upper[fit % upper.shape[0]], free,
                estimator, tol, max_iter, params[fit], trial, step, g, h, trial_g,
                trial_h, scale, system, jac, trial_jac, work_p, active, covariance[fit])
"""
_RUN_OPTIONS = {"parallel": True, "error_model": "numpy"}


def build_cpu_kernel(value, gradient, jac_method, n_params, dtype=np.float64):
    """``run(x, ydata, weights, p0, lower, upper, free, estimator, tol, max_iter, params,
    chi2, n_iter, status, covariance)``: all fits, in parallel chunks, results in place.

    Compiled in this process only (numba cannot cache a kernel built around a closure);
    :func:`cpu_kernel` uses the disk-cached form where it can.
    """
    import numba

    namespace = {"__name__": __name__, "np": np, "numba": numba,
                 "WORK_ROWS": work_rows(n_params),
                 "fit_one": cpu_fit_one(value, gradient, jac_method, n_params, dtype)}
    exec(compile(_RUN_SOURCE, f"<autofit CPU kernel {n_params}>", "exec"),  # noqa: S102
         namespace)
    return numba.njit(**_RUN_OPTIONS)(namespace["run"])


# Sources whose change must invalidate a disk-cached kernel (everything it compiles).
# What a generated kernel compiles besides its own source: every module of this package (the
# kernel's callees, the built-in models it imports) and the shared rules. numba's cache
# checks only the generated file itself, so all of them go into its name.
_KERNEL_SOURCES = ("autofit._codes", "autofit._rules")


def cache_directory():
    """Where the generated kernel modules (and numba's cache of them) are kept:
    :func:`autofit._environment.cache_directory` (``FFIT_CACHE_DIR``...), read at each call."""
    from autofit._environment import cache_directory as configured

    return configured()


def _importable_name(function):
    """``(module, name)`` when ``function`` is a module-level function that a generated
    module can import by name, else None."""
    import importlib

    module, name = getattr(function, "__module__", None), getattr(function, "__name__", "")
    if module not in ("autofit.numba.points", "autofit.numba.batch"):
        return None
    return (module, name) if getattr(importlib.import_module(module), name, None) is function \
        else None


def _kernel_module_source(value, gradient, jac_method, n_params, dtype):
    """The source of a module defining the CPU kernel ``run`` with ``cache=True``, or None
    when the point functions cannot be imported by name (user models)."""
    names = (_importable_name(value), _importable_name(gradient))
    if None in names:
        return None
    (value_module, value_name), (gradient_module, gradient_name) = names
    return "\n".join([
        f'"""autofit CPU batch kernel: {value_name}, jac_method {jac_method}, '
        f'{n_params} parameters, {np.dtype(dtype).name} (generated; safe to delete)."""',
        "import numba",
        "import numpy as np",
        "",
        "from autofit.numba.batch import cpu_fit_one",
        f"from {value_module} import {value_name} as value",
        f"from {gradient_module} import {gradient_name} as gradient",
        "",
        f"fit_one = cpu_fit_one(value, gradient, {int(jac_method)}, {int(n_params)}, "
        f"np.{np.dtype(dtype).name})",
        f"WORK_ROWS = {work_rows(n_params)}",
        _RUN_SOURCE,
        f"run = numba.njit(cache=True, **{_RUN_OPTIONS!r})(run)",
        "",
    ])


def _cache_key(source):
    import hashlib
    import importlib
    import sys

    import llvmlite
    import numba

    digest = hashlib.sha256(source.encode())
    package = os.path.dirname(os.path.abspath(__file__))
    files = sorted(os.path.join(package, name) for name in os.listdir(package)
                   if name.endswith(".py"))
    files += [importlib.import_module(name).__file__ for name in _KERNEL_SOURCES]
    for path in files:
        with open(path, "rb") as fh:
            digest.update(fh.read())
    digest.update(f"{numba.__version__} {llvmlite.__version__} {sys.version}".encode())
    return digest.hexdigest()[:24]


def cached_cpu_kernel(value, gradient, jac_method, n_params, dtype=np.float64):
    """The CPU kernel from a generated module in :func:`cache_directory`, compiled with
    numba's ``cache=True``, so that a later process loads it instead of compiling it.

    The module's name holds a hash of its source, of the sources it compiles and of the
    numba, llvmlite and Python versions, so a changed kernel is never loaded stale. None for
    user models, or when the directory cannot be written.
    """
    import importlib.util
    import os
    import sys
    import tempfile

    source = _kernel_module_source(value, gradient, jac_method, n_params, dtype)
    if source is None:
        return None
    name = f"autofit_batch_{_cache_key(source)}"
    directory = cache_directory()
    path = os.path.join(directory, name + ".py")
    try:
        if not os.path.exists(path):
            os.makedirs(directory, exist_ok=True)
            # Written whole, then renamed: a process starting at the same time never
            # imports a half-written file.
            handle, temporary = tempfile.mkstemp(suffix=".tmp", dir=directory)
            with os.fdopen(handle, "w") as fh:
                fh.write(source)
            os.replace(temporary, path)
    except OSError:
        return None
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        # Registered before it runs: numba's cache finds the kernel's globals by module name.
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name].run


_KERNELS: dict = {}


def cpu_kernel(value, gradient, jac_method, n_params, dtype=np.float64):
    """The compiled CPU kernel for these point functions (built once per process; for
    built-in models loaded from numba's disk cache when an earlier process compiled it)."""
    key = (value, gradient, jac_method, n_params, np.dtype(dtype))
    if key not in _KERNELS:
        _KERNELS[key] = (cached_cpu_kernel(value, gradient, jac_method, n_params, dtype)
                         or build_cpu_kernel(value, gradient, jac_method, n_params, dtype))
    return _KERNELS[key]


_USER_POINTS: dict = {}


def user_point_function(f, n_params, n_variables, device="cpu", dtype=np.float64):
    """A point function ``value(x, i, p)`` calling the user's ``f(x, *params)`` on one point.

    ``f`` is compiled for the target (``numba.njit`` or ``numba.cuda.jit(device=True)``)
    and called with a scalar x (one variable) or the column ``x[:, i]`` (several), and the
    parameters unpacked: numba cannot call ``f(x, *p)`` with an array ``p``. Built once per
    function, size and device.
    """
    from autofit.numba import scalar_numpy  # noqa: F401 - np.full_like(x, c) on a point

    key = (f, n_params, n_variables, device, np.dtype(dtype))
    if key not in _USER_POINTS:
        if device == "cuda":
            from numba import cuda

            user = cuda.jit(device=True, fastmath=np.dtype(dtype) == np.float32)(
                with_literals_of(f, dtype))
        else:
            import numba
            from numba.core.registry import CPUDispatcher

            user = f if isinstance(f, CPUDispatcher) else numba.njit(
                with_literals_of(f, dtype), error_model="numpy")
        point = "x[0, i]" if n_variables == 1 else "x[:, i]"
        arguments = ", ".join(f"p[{j}]" for j in range(n_params))
        source = (f"def value(x, i, p):\n"
                  f"    return user({point}, {arguments})\n")
        namespace = {"user": user}
        exec(compile(source, f"<autofit point function {n_params}>", "exec"),  # noqa: S102
             namespace)
        _USER_POINTS[key] = namespace["value"]
    return _USER_POINTS[key]


def _no_gradient(x, i, p, jac, col):
    return 0.0


@implements("lm_batch")
def lm_batch(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, free,
             estimator, tol, max_iter):
    require_jac_method("lm_batch", "numba", jac_method)
    n_fits, n_params = p0.shape
    run = cpu_kernel(model, jacobian if jac_method == JAC_ANALYTIC else _no_gradient,
                     jac_method, n_params, p0.dtype)
    params = np.empty((n_fits, n_params), dtype=p0.dtype)
    chi2 = np.empty(n_fits, dtype=p0.dtype)
    n_iter = np.empty(n_fits, dtype=np.int64)
    status = np.empty(n_fits, dtype=np.int64)
    covariance = np.empty((n_fits, n_params, n_params), dtype=p0.dtype)
    run(x, ydata, weights, p0, lower, upper, np.asarray(free, dtype=np.bool_), estimator,
        float(tol), int(max_iter), params, chi2, n_iter, status, covariance)
    return params, chi2, n_iter, status, covariance
