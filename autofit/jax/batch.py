"""Batched Levenberg-Marquardt (JAX): many independent small fits, with compaction.

The algorithm of :mod:`autofit.original.batch`, step for step: the same pre-checks, the
same damping schedule, the same stopping tests in the same order, the same statuses, the
same ``n_iter`` counting and the same covariance. One pass of the reference's loop body is
the per-fit function :func:`_iteration`; the per-fit state it carries is the explicit
pytree :class:`BatchState` (params, χ², g, H, scale, damping, n_iter, status), so a fit can
be stopped after any pass and resumed later with the same result.

Three jit-compiled pieces (``model``, ``jacobian``, ``jac_method`` and ``estimator``
static; ``lm_batch.jitted`` holds them, for ``._cache_size()``):

* :func:`init_state`: pre-checks, ``clip(p0)`` and the first evaluation of a batch;
* :func:`advance`: at most ``n_steps`` passes of every running fit. It is a
  ``jax.lax.while_loop`` over the batch whose body is the per-fit pass, ``vmap``-ed and
  applied only to the fits still ``RUNNING``: exactly what ``vmap`` of a per-fit
  ``while_loop`` compiles to (JAX's batching rule runs the body while any fit's condition
  holds and keeps the old state of the others), written out so that a stage can also end
  early, as soon as at most ``min_running`` fits still run;
* :func:`finalize`: the covariance (and ``SINGULAR`` for a converged fit whose
  information matrix is not invertible).

:func:`lm_batch` (the declared kernel) and :func:`run_batch` (the same with options and
statistics) drive them from the host.

**Compaction.** A vmapped loop runs every fit until the slowest one stops. Here the batch
runs in stages of at most :data:`STAGE_ITERATIONS` passes, and a stage also ends as soon
as its running fits fit in the next smaller bucket; the host then reads the statuses back,
saves the whole stage's state, gathers the running fits (state and data) into that bucket
and resumes them from their saved state. The work executed (fits x passes) then follows the
typical fit, not the slowest. Compaction stops at :data:`MIN_COMPACT_BUCKET` fits (smaller
shapes save microseconds and cost a compilation each); with no smaller bucket left, the
remaining fits run to the end in one stage. ``run_batch(..., compaction=False)`` runs the
whole batch in one stage.

**Identical with and without compaction.** A fit's result must not depend on the size of
the batch it runs in. XLA may order a reduction differently for different shapes, so the
sums over points are written as a fixed pairwise tree of elementwise additions
(:func:`_sum_points`) and the sums over parameters as unrolled left-to-right additions;
every fit then computes bit for bit the same whatever its batch (tested).

**Buckets.** The number of fits is padded up to :func:`bucket_size` (8, 12, 16, 24, 32,
48, ...: powers of two and 1.5 times powers of two): no recompilation while only values
change or the number of fits stays within a bucket. Each bucket a batch compacts into
compiles once, on first use. Padding fits copy fit 0's data, are marked finished from the
start, and are dropped from the output. Inputs with leading size 1 (``x``, ``weights``,
``lower``, ``upper``) are shared by all fits: ``vmap`` gets them unbatched.

**CPU.** Inside each pass, fits are processed in chunks of :data:`CPU_CHUNK`
(``lax.map`` over ``vmap``-ed chunks) so that the per-point temporaries stay in cache;
on other backends the whole batch is one ``vmap``.

Differences from the reference, all deliberate:

* ``JAC_AUTODIFF`` (``jax.jacfwd`` of ``model`` with respect to the parameters) is
  accepted besides ``JAC_ANALYTIC`` and ``JAC_FORWARD``.
* Points with weight 0 contribute exactly nothing even where the model or its Jacobian is
  nan/inf (selects, never ``0 * value``), as the reference's ``f[used]`` does.
* A pass whose damped system is not positive definite still evaluates the model at the
  (unchanged) trial point and discards the result: every fit of a batch executes the same
  instructions.
* The budget is tested at the end of each pass (and once before the first) rather than at
  the top of the next: the same statuses and counts, one batched pass fewer.
* The dtype follows the inputs: float64 inside ``jax.enable_x64(True)`` with float64
  inputs, **float32** when the float inputs are float32 (or outside ``enable_x64``). Every
  quantity of the fit is then float32 (models that compute in float64 internally are cast
  back), the forward-difference step is ``sqrt(eps)`` of float32, and ``tol`` should be
  about 1e-6 or more: below float32's resolution the stopping tests are decided by
  rounding. n_iter and status are int64 under x64, int32 otherwise.
* The arithmetic is XLA's (its own ``exp`` and ``log``, its own evaluation order), so
  iterates agree with the reference to rounding, not bit for bit. Statuses and ``n_iter``
  therefore agree except where a fit's last decision is taken at the rounding floor of χ²
  (with ``tol`` = 1e-10, a trial whose χ² differs from the current one only in its last
  bits is accepted or not depending on those bits): a small fraction of fits, which still
  end converged at the same parameters.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np

from autofit._codes import (
    BATCH_DAMPING_DOWN,
    BATCH_DAMPING_UP,
    BATCH_INITIAL_DAMPING,
    BATCH_MIN_DAMPING,
    CONVERGED_CODES,
    CONVERGED_FTOL,
    CONVERGED_FTOL_XTOL,
    CONVERGED_GTOL,
    CONVERGED_XTOL,
    ESTIMATOR_LSE,
    ESTIMATOR_MLE,
    JAC_ANALYTIC,
    JAC_AUTODIFF,
    JAC_FORWARD,
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
from autofit._declarations import implements

# The most passes of one compaction stage (a stage also ends as soon as its running fits
# fit in the next smaller bucket).
STAGE_ITERATIONS = 16
# The smallest number of fits a batch is padded to.
MIN_BUCKET = 8
# Compaction never goes below this many fits: below it, the microseconds a pass would save
# do not pay for compiling one more shape (a second or two on CPU).
MIN_COMPACT_BUCKET = 64
# On CPU, fits are processed in chunks of this many inside each pass (cache-sized
# temporaries); on accelerators the whole batch is one vmap.
CPU_CHUNK = 256
# The status of the padding fits of a bucket: never running, dropped from the output.
_PADDING = -1
# Statuses of fits that never reached the loop: no covariance.
_NOT_STARTED = (NONFINITE_DATA, MLE_NEGATIVE_DATA, TOO_FEW_POINTS, NONFINITE,
                MLE_NONPOSITIVE_MODEL, _PADDING)
_STATIC = ("model", "jacobian", "jac_method", "estimator")


def bucket_size(n_fits):
    """The padded batch size for ``n_fits``: the smallest of 8, 12, 16, 24, 32, 48, ...
    (``2**k`` and ``3 * 2**(k - 1)``) that holds them."""
    size = MIN_BUCKET
    while True:
        if n_fits <= size:
            return size
        if n_fits <= size + size // 2:
            return size + size // 2
        size *= 2


def _smaller_bucket(size):
    """The next bucket below ``size`` that compaction uses (0 when there is none)."""
    if size <= MIN_COMPACT_BUCKET:
        return 0
    power = 1 << (size.bit_length() - 1)
    return power if power < size else 3 * (power // 4)


class BatchData(NamedTuple):
    """The data of a batch. Each field has a leading fit axis of the batch's size, or of
    size 1 when all fits share it (``ydata`` is always per fit)."""

    x: jax.Array  # (n, k, n_points)
    ydata: jax.Array  # (n, n_points)
    weights: jax.Array  # (n, n_points)
    lower: jax.Array  # (n, n_params)
    upper: jax.Array  # (n, n_params)


class BatchState(NamedTuple):
    """What the reference's loop carries from one pass to the next, per fit (leading fit
    axis): enough to resume a fit at any pass."""

    params: jax.Array  # (n, n_params)
    chi2: jax.Array  # (n,)
    g: jax.Array  # (n, n_params): -1/2 the gradient of chi2
    h: jax.Array  # (n, n_params, n_params): the Gauss-Newton matrix
    scale: jax.Array  # (n, n_params): running maximum of diag(h)
    damping: jax.Array  # (n,)
    n_iter: jax.Array  # (n,) int
    status: jax.Array  # (n,) int: RUNNING while the fit goes on


class BatchStats(NamedTuple):
    """How much work a :func:`run_batch` call executed."""

    stages: int  # calls of advance
    trips: int  # passes of the batched loop, over all stages
    slots: int  # fit x pass slots executed: sum over stages of bucket size x passes
    buckets: tuple  # the bucket size of each stage


# --- Per fit ---------------------------------------------------------------------------


def _model_x(x):
    # One-variable models take x as (n_points,), k-variable ones as (k, n_points).
    return x[0] if x.shape[0] == 1 else x


def _forward_columns(model, mx, p, f0, upper):
    """The reference's forward-difference Jacobian, transposed: ``(n_params, n_points)``."""
    relative = float(np.sqrt(np.finfo(p.dtype).eps))  # float64: the reference's step
    h = relative * jnp.abs(p)
    h = jnp.where(h == 0.0, relative, h)
    h = jnp.where(p + h > upper, -h, h)  # never step over the upper bound
    shifted = p + h
    h = shifted - p  # the step actually taken, exactly representable
    n_params = p.shape[0]
    probes = jnp.where(jnp.eye(n_params, dtype=bool), shifted[None, :], p[None, :])
    f_shifted = jax.vmap(lambda q: jnp.asarray(model(mx, q), dtype=p.dtype))(probes)
    return (f_shifted - f0[None, :]) / h[:, None]


def _columns(model, jacobian, jac_method, mx, p, f, upper):
    """The model's Jacobian at p, transposed: ``(n_params, n_points)``."""
    if jac_method == JAC_ANALYTIC:
        return jnp.asarray(jacobian(mx, p), dtype=p.dtype).T
    if jac_method == JAC_FORWARD:
        return _forward_columns(model, mx, p, f, upper)
    if jac_method == JAC_AUTODIFF:
        return jax.jacfwd(lambda q: jnp.asarray(model(mx, q), dtype=p.dtype))(p).T
    raise ValueError("lm_batch: jac_method must be JAC_ANALYTIC, JAC_FORWARD or "
                     "JAC_AUTODIFF")


def _model_and_columns(model, jacobian, jac_method, d, p, free):
    """f at p, the Jacobian (fixed columns times 0, as the reference's ``jac * free``, and
    exactly 0 at weight-0 points) and the mask of used points."""
    mx = _model_x(d.x)
    f = jnp.asarray(model(mx, p), dtype=p.dtype)
    used = d.weights != 0.0
    jac = _columns(model, jacobian, jac_method, mx, p, f, d.upper) * free[:, None]
    return f, jnp.where(used[None, :], jac, 0.0), used


# XLA orders a reduction by the shape it compiles for, so a fit can round differently in a
# bucket of another size; with fixed-order sums compaction is bit-identical to running the
# whole batch to the end, but the (n_params², n_points) temporaries it writes make it
# slow for many parameters and on GPUs. Off by default; the tests switch it on to check
# compaction bit for bit.
FIXED_ORDER_SUMS = False


def _sum_points(a):
    """Sum over the last axis (the points) in a fixed pairwise order.

    A tree of elementwise additions, not an XLA reduction: XLA may order a reduction
    differently for different batch sizes, and compaction runs a fit in batches of several
    sizes, which must give bit-identical results. Zero padding up to a power of two adds
    exact zeros.
    """
    n = a.shape[-1]
    size = 1 << max(n - 1, 0).bit_length()
    if size != n:
        a = jnp.concatenate([a, jnp.zeros(a.shape[:-1] + (size - n,), a.dtype)], axis=-1)
    while a.shape[-1] > 1:
        half = a.shape[-1] // 2
        a = a[..., :half] + a[..., half:]
    return a[..., 0]


def _sum_params(terms):
    """Sum of a (static, small) sequence of scalars, left to right."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _dot(a, b):
    """``a @ b`` for two vectors over the parameters, in a fixed order."""
    return _sum_params([a[i] * b[i] for i in range(a.shape[0])])


def _pairs(n):
    return [(i, j) for i in range(n) for j in range(i, n)]


def _symmetric(n, upper):
    """The (n, n) symmetric matrix from its upper triangle, listed as by :func:`_pairs`."""
    entries = dict(zip(_pairs(n), upper))
    return jnp.stack([jnp.stack([entries[min(i, j), max(i, j)] for j in range(n)])
                      for i in range(n)])


def _normal_sums(vectors, jac, residual, weight=None):
    """Each of ``vectors`` (n_points,) summed, the gradient ``jac @ residual`` and the
    matrix ``(jac * weight) @ jac.T`` (``jac @ jac.T`` without a weight), ``jac`` being
    ``(n_params, n_points)``: by XLA's reductions and matrix products, or, with
    :data:`FIXED_ORDER_SUMS`, by one tree of additions in a fixed order."""
    if not FIXED_ORDER_SUMS:
        weighted = jac if weight is None else jac * weight[None, :]
        n = jac.shape[0]
        if n > UNROLLED_MAX_PARAMS:
            return [jnp.sum(v) for v in vectors], jac @ residual, weighted @ jac.T
        # Small models: every sum an elementwise product reduced over the points, which XLA
        # fuses per sum; under vmap a matrix product becomes a batch of tiny GEMMs instead.
        g = jnp.stack([jnp.sum(jac[i] * residual) for i in range(n)])
        upper = [jnp.sum(weighted[i] * jac[j]) for i, j in _pairs(n)]
        return [jnp.sum(v) for v in vectors], g, _symmetric(n, upper)
    n = jac.shape[0]
    weighted = jac if weight is None else jac * weight[None, :]
    rows = list(vectors) + [jac[j] * residual for j in range(n)]
    rows += [weighted[i] * jac[j] for i, j in _pairs(n)]
    sums = _sum_points(jnp.stack(rows))
    k = len(vectors)
    matrix = _symmetric(n, [sums[k + n + t] for t in range(len(_pairs(n)))])
    return [sums[i] for i in range(k)], sums[k:k + n], matrix


def _evaluate(model, jacobian, jac_method, estimator, d, p, free):
    """chi2, g, h at p (chi2 = inf where they are not finite or, for MLE, some f <= 0),
    and whether the Poisson model was positive at every used point."""
    f, jac, used = _model_and_columns(model, jacobian, jac_method, d, p, free)
    y, w = d.ydata, d.weights
    if estimator == ESTIMATOR_MLE:
        positive = jnp.all(jnp.where(used, f > 0.0, True))
        f_used = jnp.where(used, f, 1.0)
        counts = used & (y > 0.0)
        ratio = jnp.where(counts, f, 1.0) / jnp.where(counts, y, 1.0)
        linear = jnp.where(used, w * (f - y), 0.0)
        logarithmic = jnp.where(counts, w * y * jnp.log(ratio), 0.0)
        # g = Jᵀ (w (y / f - 1)), h = sum (w y / f²) J Jᵀ.
        residual = jnp.where(used, w * (y / f_used - 1.0), 0.0)
        curvature = jnp.where(used, w * y / (f_used * f_used), 0.0)
        (linear, logarithmic), g, h = _normal_sums((linear, logarithmic), jac, residual,
                                                   curvature)
        chi2 = 2.0 * linear - 2.0 * logarithmic
    elif estimator == ESTIMATOR_LSE:
        positive = jnp.asarray(True)
        r = jnp.where(used, w * (y - f), 0.0)
        wj = jac * jnp.where(used, w, 0.0)[None, :]
        (chi2,), g, h = _normal_sums((r * r,), wj, r)
    else:
        raise ValueError("lm_batch: estimator must be ESTIMATOR_LSE or ESTIMATOR_MLE")
    finite = jnp.isfinite(chi2) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(h))
    return jnp.where(finite & positive, chi2, jnp.inf), g, h, positive


# Up to this many parameters the Cholesky factorisation is unrolled into scalars (fast for
# small systems, and fails exactly where the reference's does); beyond it, LAPACK-style
# library calls keep the compiled program small (25 parameters unrolled: minutes to
# compile). They fail (nan factor) where a pivot is not > 0, as the reference does.
UNROLLED_MAX_PARAMS = 8


def _cholesky(a):
    """The reference's column-by-column Cholesky factor of ``a``, as nested lists of
    scalars (unrolled over the static size), and ok: False as soon as a pivot is not > 0
    or not finite (the factor is then meaningless)."""
    n = a.shape[0]
    if n > UNROLLED_MAX_PARAMS:
        chol = jnp.linalg.cholesky(a)
        return chol, jnp.all(jnp.isfinite(chol))
    chol = [[None] * n for _ in range(n)]
    ok = jnp.asarray(True)
    for j in range(n):
        dot = sum((chol[j][k] * chol[j][k] for k in range(j)), jnp.zeros((), a.dtype))
        pivot = a[j, j] - dot
        ok = ok & (pivot > 0.0) & jnp.isfinite(pivot)
        chol[j][j] = jnp.sqrt(jnp.where(pivot > 0.0, pivot, 1.0))
        for i in range(j + 1, n):
            dot = sum((chol[i][k] * chol[j][k] for k in range(j)), jnp.zeros((), a.dtype))
            chol[i][j] = (a[i, j] - dot) / chol[j][j]
    return chol, ok


def _substitute(chol, b):
    """Solve ``L Lᵀ z = b`` with the factor of :func:`_cholesky`."""
    if not isinstance(chol, list):
        return jax.scipy.linalg.cho_solve((chol, True), b)
    n = len(chol)
    z = [None] * n
    for i in range(n):
        dot = sum((chol[i][k] * z[k] for k in range(i)), jnp.zeros((), b.dtype))
        z[i] = (b[i] - dot) / chol[i][i]
    for i in range(n - 1, -1, -1):
        dot = sum((chol[k][i] * z[k] for k in range(i + 1, n)), jnp.zeros((), b.dtype))
        z[i] = (z[i] - dot) / chol[i][i]
    return jnp.stack(z)


def _damped_system(h, g, scale, damping, free):
    # Fixed parameters get an identity row and column, so their step is exactly 0.
    system = jnp.where(free[:, None] & free[None, :], h, 0.0)
    diagonal = jnp.where(free, jnp.diag(h) + damping * scale, 1.0)
    system = jnp.where(jnp.eye(free.shape[0], dtype=bool), diagonal[None, :], system)
    return system, jnp.where(free, g, 0.0)


def _invert(information, free):
    """The covariance: the inverse over the free parameters (0 elsewhere), nan and ok False
    when not positive definite."""
    n = free.shape[0]
    zeros = jnp.zeros(n, information.dtype)
    system, _ = _damped_system(information, zeros, zeros, 0.0, free)
    chol, ok = _cholesky(system)
    eye = jnp.eye(n, dtype=information.dtype)
    if isinstance(chol, list):
        covariance = jnp.stack([_substitute(chol, eye[j]) for j in range(n)], axis=1)
    else:
        covariance = _substitute(chol, eye)
    covariance = jnp.where(free[:, None] & free[None, :], covariance, 0.0)
    return jnp.where(ok, covariance, jnp.nan), ok


def _start(model, jacobian, jac_method, estimator, d, p0, free, max_iter):
    """The state of one fit before the loop: pre-checks, clip(p0), the first evaluation."""
    finite_data = (jnp.all(jnp.isfinite(d.x)) & jnp.all(jnp.isfinite(d.ydata))
                   & jnp.all(jnp.isfinite(d.weights)) & jnp.all(jnp.isfinite(p0)))
    used = d.weights != 0.0
    negative = jnp.any(used & (d.ydata < 0.0)) if estimator == ESTIMATOR_MLE else False
    too_few = jnp.sum(used) < jnp.sum(free)
    not_attempted = jnp.where(~finite_data, NONFINITE_DATA,
                              jnp.where(negative, MLE_NEGATIVE_DATA,
                                        jnp.where(too_few, TOO_FEW_POINTS, RUNNING)))

    p = jnp.minimum(jnp.maximum(p0, d.lower), d.upper)
    chi2, g, h, positive = _evaluate(model, jacobian, jac_method, estimator, d, p, free)
    started = jnp.isfinite(chi2)
    status = jnp.where(not_attempted != RUNNING, not_attempted,
                       jnp.where(started, RUNNING,
                                 jnp.where(positive, NONFINITE, MLE_NONPOSITIVE_MODEL)))
    status = jnp.where((status == RUNNING) & ~jnp.any(free & (g != 0.0)), CONVERGED_GTOL,
                       status)
    # The reference tests the budget at the top of each pass; here after each pass, and
    # once before the first.
    status = jnp.where((status == RUNNING) & (max_iter <= 0), MAX_ITERATIONS, status)
    started = (not_attempted == RUNNING) & started
    g = jnp.where(started, g, 0.0)
    h = jnp.where(started, h, 0.0)
    return BatchState(
        params=jnp.where(not_attempted == RUNNING, p, p0),
        chi2=jnp.where(started, chi2, jnp.nan),
        g=g, h=h, scale=jnp.diag(h),
        damping=jnp.asarray(BATCH_INITIAL_DAMPING, dtype=p0.dtype),
        n_iter=jnp.asarray(0, dtype=int),
        status=jnp.asarray(status, dtype=int))


def _iteration(model, jacobian, jac_method, estimator, s, d, free, tol, max_iter):
    """One pass of the reference's loop for one running fit."""
    n_iter = s.n_iter + 1
    # The active set: a parameter at a bound whose descent direction points out is held.
    active = (free & ~((s.params <= d.lower) & (s.g < 0.0))
              & ~((s.params >= d.upper) & (s.g > 0.0)))
    system, rhs = _damped_system(s.h, s.g, s.scale, s.damping, active)
    chol, ok = _cholesky(system)
    step = jnp.where(ok, _substitute(chol, rhs), 0.0)
    raised = s.damping * BATCH_DAMPING_UP

    trial = jnp.minimum(jnp.maximum(s.params + step, d.lower), d.upper)
    moved = trial - s.params
    small_step = (_dot(s.scale * moved, moved)
                  <= tol * tol * _dot(s.scale * s.params, s.params))
    trial_chi2, trial_g, trial_h, _ = _evaluate(model, jacobian, jac_method, estimator, d,
                                                trial, free)
    accept = ok & (trial_chi2 <= s.chi2)

    # Accepted: MINPACK's predicted reduction of the quadratic model for the damped step.
    h_step = jnp.stack([_dot(s.h[i], step) for i in range(step.shape[0])])
    predicted = _dot(step, h_step) + 2.0 * s.damping * _dot(s.scale * step, step)
    small_reduction = ((jnp.abs(s.chi2 - trial_chi2) <= tol * trial_chi2)
                       & (predicted <= tol * trial_chi2))
    accepted_status = jnp.where(
        small_reduction & small_step, CONVERGED_FTOL_XTOL,
        jnp.where(small_reduction | (trial_chi2 == 0.0), CONVERGED_FTOL,
                  jnp.where(small_step, CONVERGED_XTOL, RUNNING)))
    # Rejected (and the factorisation failed: SINGULAR once the damping is spent).
    rejected_status = jnp.where(small_step,
                                jnp.where(small_reduction, CONVERGED_FTOL_XTOL, CONVERGED_XTOL),
                                jnp.where(raised > MAX_DAMPING, MACHINE_PRECISION, RUNNING))
    failed_status = jnp.where(raised > MAX_DAMPING, SINGULAR, RUNNING)
    status = jnp.where(~ok, failed_status,
                       jnp.where(accept, accepted_status, rejected_status))
    status = jnp.where((status == RUNNING) & (n_iter >= max_iter), MAX_ITERATIONS, status)

    return BatchState(
        params=jnp.where(accept, trial, s.params),
        chi2=jnp.where(accept, trial_chi2, s.chi2),
        g=jnp.where(accept, trial_g, s.g),
        h=jnp.where(accept, trial_h, s.h),
        scale=jnp.where(accept, jnp.maximum(s.scale, jnp.diag(trial_h)), s.scale),
        damping=jnp.where(accept,
                          jnp.maximum(s.damping * BATCH_DAMPING_DOWN, BATCH_MIN_DAMPING),
                          raised),
        n_iter=n_iter,
        status=jnp.asarray(status, dtype=int))


def _finish(model, jacobian, jac_method, estimator, s, d, free):
    """The covariance of one fit, and its final status."""
    started = ~jnp.isin(s.status, jnp.asarray(_NOT_STARTED))
    if estimator == ESTIMATOR_MLE:
        # Fisher's information sum w J Jᵀ / f, one more pass.
        f, jac, used = _model_and_columns(model, jacobian, jac_method, d, s.params, free)
        weight = jnp.where(used, d.weights / jnp.where(used, f, 1.0), 0.0)
        _, _, information = _normal_sums((), jac, weight, weight)
    else:
        information = s.h
    covariance, ok = _invert(information, free)
    covariance = jnp.where(started, covariance, jnp.nan)
    singular = started & ~ok & jnp.isin(s.status, jnp.asarray(CONVERGED_CODES))
    status = jnp.where(singular, SINGULAR, s.status)
    return s.params, s.chi2, s.n_iter, status, covariance


# --- Over a batch ----------------------------------------------------------------------


def _map_fits(function, batched, data, *shared):
    """``function(batched_i, data_i, *shared)`` for every fit i, stacked over fits.

    ``batched`` is a pytree of per-fit arrays; the fields of ``data`` with leading size 1
    are shared by all fits (never copied per fit). On CPU the fits are processed in chunks
    of :data:`CPU_CHUNK` (``lax.map`` over ``vmap``-ed chunks), so the per-point temporaries
    stay in cache; elsewhere the whole batch is one ``vmap``.
    """
    per_fit = BatchData(*(None if a.shape[0] == 1 else a for a in data))
    common = BatchData(*(a[0] if a.shape[0] == 1 else None for a in data))

    def one(args):
        fit, fit_data = args
        fit_data = BatchData(*(c if d is None else d for d, c in zip(fit_data, common)))
        return function(fit, fit_data, *shared)

    n_fits = jax.tree.leaves(batched)[0].shape[0]
    if jax.default_backend() == "cpu" and n_fits > CPU_CHUNK:
        return jax.lax.map(one, (batched, per_fit), batch_size=CPU_CHUNK)
    return jax.vmap(one)((batched, per_fit))


def _init(model, jacobian, jac_method, estimator, data, p0, free, max_iter, n_valid):
    start = functools.partial(_start, model, jacobian, jac_method, estimator)
    state = _map_fits(lambda p, d: start(d, p, free, max_iter), p0, data)
    padding = jnp.arange(p0.shape[0]) >= n_valid
    return state._replace(status=jnp.where(padding, _PADDING, state.status))


def _advance(model, jacobian, jac_method, estimator, state, data, free, tol, max_iter,
             n_steps, min_running):
    iteration = functools.partial(_iteration, model, jacobian, jac_method, estimator)

    def one_pass(s, d):
        # Only a running fit moves (what vmap of a per-fit while_loop does).
        new = iteration(s, d, free, tol, max_iter)
        return jax.tree.map(lambda n, o: jnp.where(s.status == RUNNING, n, o), new, s)

    def cond(carry):
        s, trips = carry
        return (trips < n_steps) & (jnp.sum(s.status == RUNNING) > min_running)

    def body(carry):
        s, trips = carry
        return _map_fits(one_pass, s, data), trips + 1

    return jax.lax.while_loop(cond, body, (state, jnp.asarray(0, dtype=int)))


def _finalize(model, jacobian, jac_method, estimator, state, data, free):
    finish = functools.partial(_finish, model, jacobian, jac_method, estimator)
    return _map_fits(lambda s, d: finish(s, d, free), state, data)


init_state = jax.jit(_init, static_argnames=_STATIC)
init_state.__doc__ = """``init_state(model, jacobian, jac_method, estimator, data, p0, free,
max_iter, n_valid) -> BatchState``: pre-checks and first evaluation of a (padded) batch;
fits ``n_valid`` and beyond are padding (never run)."""

advance = jax.jit(_advance, static_argnames=_STATIC)
advance.__doc__ = """``advance(model, jacobian, jac_method, estimator, state, data, free, tol,
max_iter, n_steps, min_running) -> (BatchState, trips)``: at most ``n_steps`` passes of
every running fit; stops early once at most ``min_running`` fits run (0: run them out).
``trips`` is the number of batched passes executed."""

finalize = jax.jit(_finalize, static_argnames=_STATIC)
finalize.__doc__ = """``finalize(model, jacobian, jac_method, estimator, state, data, free)
-> (params, chi2, n_iter, status, covariance)`` of a batch."""


# --- Host driver -----------------------------------------------------------------------


def _float_dtype(*arrays):
    dtype = jnp.result_type(*arrays)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return dtype


def _fit_axis(name, a, n_fits, ndim):
    if a.ndim != ndim or a.shape[0] not in (1, n_fits):
        raise ValueError(f"lm_batch: {name} must have {ndim} dimensions and a leading size "
                         f"of 1 or n_fits = {n_fits}, not shape {a.shape}")
    return a


def _per_fit(name, a):
    # ydata is always per fit; the others are shared when their leading size is 1.
    return name == "ydata" or a.shape[0] != 1


def _save(full, slots, state, n_valid):
    """Write the first ``n_valid`` fits of the device ``state`` into the host arrays
    ``full`` at rows ``slots``."""
    for target, source in zip(full, jax.device_get(state)):
        target[slots[:n_valid]] = source[:n_valid]


def run_batch(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, free,
              estimator, tol, max_iter, *, compaction=True,
              stage_iterations=STAGE_ITERATIONS):
    """:func:`lm_batch` with options; returns ``(results, stats)``.

    ``results`` is lm_batch's ``(params, chi2, n_iter, status, covariance)``, ``stats`` a
    :class:`BatchStats`. With ``compaction`` (the default, what :func:`lm_batch` does) the
    batch runs in stages of at most ``stage_iterations`` passes, each ending as soon as the
    running fits fit in the next smaller bucket, and the running fits are then gathered
    into that bucket. ``compaction=False`` runs the whole padded batch in one stage until
    its slowest fit stops (the cost of a vmapped per-fit ``while_loop``). The results are
    identical either way.
    """
    p0 = np.asarray(p0)
    dtype = _float_dtype(x, ydata, weights, p0, lower, upper)
    if p0.ndim != 2:
        raise ValueError(f"lm_batch: p0 must be (n_fits, n_params), not shape {p0.shape}")
    n_fits, n_params = p0.shape
    host = BatchData(
        x=_fit_axis("x", np.asarray(x, dtype=dtype), n_fits, 3),
        ydata=_fit_axis("ydata", np.asarray(ydata, dtype=dtype), n_fits, 2),
        weights=_fit_axis("weights", np.asarray(weights, dtype=dtype), n_fits, 2),
        lower=_fit_axis("lower", np.asarray(lower, dtype=dtype), n_fits, 2),
        upper=_fit_axis("upper", np.asarray(upper, dtype=dtype), n_fits, 2))
    if host.ydata.shape[0] != n_fits:
        raise ValueError("lm_batch: ydata must have one row per fit")
    free = jnp.asarray(np.asarray(free, dtype=bool).reshape(n_params))
    if n_fits == 0:
        empty = (jnp.zeros((0, n_params), dtype), jnp.zeros(0, dtype),
                 jnp.zeros(0, dtype=int), jnp.zeros(0, dtype=int),
                 jnp.zeros((0, n_params, n_params), dtype))
        return empty, BatchStats(0, 0, 0, ())
    statics = dict(model=model, jacobian=jacobian, jac_method=int(jac_method),
                   estimator=int(estimator))
    tol = jnp.asarray(tol, dtype=dtype)
    max_iter = int(max_iter)
    max_iter_arg = jnp.asarray(max_iter, dtype=int)

    # Pad to the bucket with copies of fit 0 (marked as padding by init_state).
    size = bucket_size(n_fits)
    rows = np.concatenate([np.arange(n_fits), np.zeros(size - n_fits, dtype=np.int64)])
    host = BatchData(*(a[rows] if _per_fit(name, a) else a
                       for name, a in zip(BatchData._fields, host)))
    full_data = data = BatchData(*(jnp.asarray(a) for a in host))
    state = init_state(data=data, p0=jnp.asarray(p0.astype(dtype)[rows]), free=free,
                       max_iter=max_iter_arg, n_valid=jnp.asarray(n_fits, dtype=int),
                       **statics)

    full = None  # host copy of the whole batch's state, once the batch has been compacted
    slots = np.arange(size)  # row in the whole batch of each fit of the current batch
    n_valid = n_fits  # the fits of the current batch that are not padding
    stages, trips_total, slot_total, buckets = 0, 0, 0, []
    status = np.asarray(state.status)
    while True:
        running = np.flatnonzero(status[:n_valid] == RUNNING)
        if running.size == 0:
            break
        if compaction:
            smaller = max(bucket_size(running.size), MIN_COMPACT_BUCKET)
            if smaller < size:
                # Save the current batch, then carry on with its running fits only.
                if full is None:
                    full = BatchState(*(np.array(a) for a in jax.device_get(state)))
                else:
                    _save(full, slots, state, n_valid)
                keep = np.concatenate([running,
                                       np.full(smaller - running.size, running[0])])
                slots = slots[keep]
                compact = BatchState(*(a[slots] for a in full))
                compact.status[running.size:] = _PADDING
                state = BatchState(*(jnp.asarray(a) for a in compact))
                data = BatchData(*(jnp.asarray(a[slots]) if _per_fit(name, a) else d
                                   for name, a, d in zip(BatchData._fields, host,
                                                         full_data)))
                size, n_valid = smaller, running.size
            min_running = _smaller_bucket(size)
            # With no smaller bucket to go to, the fits left run to the end.
            n_steps = stage_iterations if min_running else max(max_iter, 1)
        else:
            n_steps, min_running = max(max_iter, 1), 0
        state, trips = advance(state=state, data=data, free=free, tol=tol,
                               max_iter=max_iter_arg,
                               n_steps=jnp.asarray(min(n_steps, 2**31 - 1), dtype=int),
                               min_running=jnp.asarray(min_running, dtype=int), **statics)
        trips = int(trips)
        stages += 1
        trips_total += trips
        slot_total += size * trips
        buckets.append(size)
        status = np.asarray(state.status)

    if full is not None:
        _save(full, slots, state, n_valid)
        state = BatchState(*(jnp.asarray(a) for a in full))
    results = finalize(state=state, data=full_data, free=free, **statics)
    results = tuple(r[:n_fits] for r in results)
    return results, BatchStats(stages, trips_total, slot_total, tuple(buckets))


@implements("lm_batch")
def lm_batch(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, free,
             estimator, tol, max_iter):
    results, _ = run_batch(model, jacobian, jac_method, x, ydata, weights, p0, lower,
                           upper, free, estimator, tol, max_iter)
    return results


# The compiled functions, for compile-cache inspection (``._cache_size()``).
lm_batch.jitted = {"init_state": init_state, "advance": advance, "finalize": finalize}
