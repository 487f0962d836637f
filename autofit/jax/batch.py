"""Batched Levenberg-Marquardt (JAX): many independent small fits, with compaction.

The algorithm of :mod:`autofit.original.batch`, step for step: the same pre-checks, the
same damping schedule, the same stopping tests in the same order, the same statuses, the
same ``n_iter`` counting and the same covariance. One pass of the reference's loop body is
the per-fit function :func:`_iteration`; the per-fit state it carries is the explicit
pytree :class:`BatchState` (params, χ², g, H, scale_squared, damping, n_iter, status,
n_accepted, how the pass at params weighed a robust loss's points, and their geodesic
probe weights there), so a fit can be stopped
after any pass and resumed later with the same result.

**One compiled program per model and bucket** (:func:`solve`; ``model``, ``jacobian``,
``jac_method`` and ``estimator`` static, but one program for every robust loss: its code is
traced, a ``switch`` around the loss alone, which under ``vmap`` stays a branch; a first
robust call compiles ~20% longer, another loss then nothing; ``lm_batch.jitted`` holds the
jitted functions, for ``._cache_size()``). It runs the whole batch: :func:`_prepare` (pre-checks,
``clip(p0)``) for every fit, then passes until no fit moves, then :func:`_finish` (the
covariance, and ``SINGULAR`` for a converged fit whose information matrix is not
invertible). A fit's first pass evaluates its starting point (the reference's step 2) and
every later pass a trial step: one evaluation of the model per pass either way, so that the
program holds the model (and its Jacobian and sums) once; compilation time grows with the
size of the program, and was the cost to cut (``experiments/jax_compile``).
:func:`lm_batch` (the declared kernel) and :func:`run_batch` (the same with options and
statistics) pad the batch, call it once and read the results back.

**Chunks and compaction.** The fits are advanced in chunks of :func:`_chunk_size` fits (on
CPU at most :data:`CPU_CHUNK`, and at most :data:`CPU_CHUNK_ENTRIES` Jacobian entries, so
that a chunk's temporaries stay in cache across its passes): a ``while_loop`` whose body is
the per-fit pass ``vmap``-ed over the chunk and applied only to its moving fits, which is
what ``vmap`` of a per-fit ``while_loop`` compiles to. A vmapped loop runs every fit until
the slowest one stops; here the batch runs in stages: each stage lists the moving fits
first (a stable partition of the fits: the same shapes, nothing to recompile) and runs the
chunks that hold them, each for at most :data:`STAGE_ITERATIONS` passes and only while more
than half of its fits still move. The slow fits of many chunks are so gathered into few,
and the work executed (fits x passes) follows the typical fit, not the slowest. Once the
moving fits fit in one chunk, it runs to the end. ``run_batch(..., compaction=False)`` runs
every chunk to its end in one stage, in the fits' order. Both run the same program, so a
fit's result does not depend on the order or the chunk it runs in: bit for bit (tested).

**Buckets.** The number of fits is padded up to :func:`bucket_size` (8, 12, 16, 24, 32,
48, ...: powers of two and 1.5 times powers of two): no recompilation while only values
change or the number of fits stays within a bucket. Padding fits copy fit 0's data, are
marked finished from the start (their chunks are not run), and are dropped from the
output. ``x`` and ``weights`` with leading size 1 are shared by all fits: ``vmap`` gets
them unbatched; bounds are always per fit (one program for shared and per-fit bounds).

**Compile time.** On CPU the program is compiled with
:data:`autofit.jax.compiler.CPU_COMPILER_OPTIONS`.
A new process compiles each (model, bucket, dtype) once: 1.3 to 1.8 s of tracing and
compilation for the built-in models on a 2-core CPU (``experiments/jax_compile``). To
keep compiled programs across processes, use jax's persistent compilation cache: set
``JAX_COMPILATION_CACHE_DIR`` to a directory and
``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0`` (jax otherwise skips programs that compile
in under a second); it is off unless set.

Differences from the reference, all deliberate:

* ``JAC_AUTODIFF`` (``jax.jacfwd`` of ``model`` with respect to the parameters) is
  accepted besides ``JAC_ANALYTIC`` and ``JAC_FORWARD``.
* Points with weight 0 contribute exactly nothing even where the model or its Jacobian is
  nan/inf (selects, never ``0 * value``), as the reference's ``f[used]`` does.
* A step that cannot be tried (its damped system is not positive definite, or its
  acceleration is refused) is, as in the reference, an iteration without an evaluation:
  inside a pass λ is raised and the step proposed again (a ``while_loop`` over the
  chunk) until every running fit has a step to try; the pass then evaluates every fit of
  the chunk (the fits that stopped meanwhile discard it).
* The geodesic acceleration's products ``J(p) u`` come from jax's reverse mode of the
  model (one ``vjp``) where it agrees with the Jacobian (``JAC_AUTODIFF``, or the exact
  derivatives generated from a NumPy model's source), else from the Jacobian's columns
  computed again; the same numbers to rounding.
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
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg
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
    JAC_AUTODIFF,
    JAC_FORWARD,
    MACHINE_PRECISION,
    MAX_ITERATIONS,
    MLE_NEGATIVE_DATA,
    MLE_NONPOSITIVE_MODEL,
    NONFINITE,
    NONFINITE_DATA,
    ROBUST_LOSSES,
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
    geodesic_probe_terms,
    initial_damping,
    judge_trial_where,
    pass_weighing_where,
    point_weight_where,
    predicted_reduction_where,
    robust_loss_where,
    step_not_tried_where,
)
from autofit.jax.compiler import jit
from autofit.jax.fastmath import CPU_NUMPY

# The most passes of a chunk in one compaction stage (a chunk's stage also ends as soon as
# no more than half of its fits still run).
STAGE_ITERATIONS = 16
# The smallest number of fits a batch is padded to.
MIN_BUCKET = 8
# Fits per chunk (at most; a power of two). On CPU a chunk is small: its per-point
# temporaries stay in cache across its passes, and the work of the fits that need many more
# passes than the others is paid for in chunks of this size.
CPU_CHUNK = 64
# ... and on CPU at most this many Jacobian entries (fits x parameters x points, 2 MB: one
# core's L2 cache here), so that the chunk's Jacobian stays in cache: the 8-Lorentzian user
# model (25 parameters, 200 points) ran 2,440 fits/s in chunks of 64, 2,630 in chunks of 32
# (a damped cosine of 3,000 points: 728 fits/s in 64, 782 in 16; experiments/user_models).
CPU_CHUNK_ENTRIES = 1 << 18
# On accelerators a chunk must fill the device.
ACCELERATOR_CHUNK = 1 << 16
# The status of the padding fits of a bucket: never running, dropped from the output.
_PADDING = -1
# The status of a fit whose starting point is still to be evaluated (by its first pass).
_STARTING = -2
# Statuses of fits that never reached the loop: no covariance.
_NOT_STARTED = (NONFINITE_DATA, MLE_NEGATIVE_DATA, TOO_FEW_POINTS, NONFINITE,
                MLE_NONPOSITIVE_MODEL, _PADDING)
_STATIC = ("model", "jacobian", "jac_method", "estimator")
# The estimators this engine compiles: least squares, Poisson MLE and the robust losses.
ESTIMATORS = (ESTIMATOR_LSE, ESTIMATOR_MLE, *ROBUST_LOSSES.values())
ROBUST_CODES = tuple(sorted(ROBUST_LOSSES.values()))
# The static ``estimator`` of the one program for every robust loss (its code traced).
ANY_ROBUST_LOSS = -1


class TracedLoss:
    """A robust loss whose code is traced, not static, so that one program serves every
    loss: what the passes get as ``estimator`` (it equals no estimator code). ``index`` is
    the code's position in :data:`ROBUST_CODES`."""

    def __init__(self, index):
        self.index = index

    def __eq__(self, other):
        return self is other

    __hash__ = object.__hash__


def static_estimator(estimator: int) -> tuple[int, int]:
    """``(static, index)``: how a program is keyed for ``estimator`` (a robust loss: the
    one program of :data:`ANY_ROBUST_LOSS`, and the loss's index in it)."""
    if estimator in ROBUST_CODES:
        return ANY_ROBUST_LOSS, ROBUST_CODES.index(estimator)
    return estimator, 0


def traced_estimator(static: int, index):
    """What the passes get as ``estimator`` for :func:`static_estimator`'s pair."""
    return TracedLoss(index) if static == ANY_ROBUST_LOSS else static


def robust_loss(z, estimator):
    """``robust_loss(z, estimator)`` for a code or a :class:`TracedLoss` (then a
    ``switch``: under ``vmap`` the code is shared by every fit, so it stays a branch and
    only the loss's own arithmetic runs)."""
    # On a CPU with an arctan that XLA runs over several values at once (its own is a scalar
    # call per value).
    xp = CPU_NUMPY if jax.default_backend() == "cpu" else jnp
    if isinstance(estimator, TracedLoss):
        branches = [functools.partial(robust_loss_where, xp, estimator=code)
                    for code in ROBUST_CODES]
        return jax.lax.switch(estimator.index, branches, z)
    return robust_loss_where(xp, z, estimator)


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
    scale_squared: jax.Array  # (n, n_params): running maximum of diag(h)
    damping: jax.Array  # (n,)
    n_iter: jax.Array  # (n,) int
    status: jax.Array  # (n,) int: RUNNING while the fit goes on
    # (n,) int: steps accepted, which with damping say how a pass weighs a robust loss's
    # points in H (autofit._rules.pass_weighing)
    n_accepted: jax.Array
    # (n,) int: how the pass at params weighed them (whether a step from there bends)
    weighing: jax.Array
    # (n, n_points) each for a robust loss, (n, 0) otherwise: the geodesic probe's point
    # weights at params, ``probe_factor r_probe + probe_offset``
    # (autofit._rules.geodesic_probe_terms), kept from the pass that evaluated params: the
    # loss at p recomputed for each probe cost the gaussians of experiments/robust_batch
    # 4.8 us per fit and pass with arctan on a CPU, 3.7-3.9 without (least squares 1.8).
    probe_factor: jax.Array
    probe_offset: jax.Array


class BatchStats(NamedTuple):
    """How much work a :func:`run_batch` call executed."""

    stages: int  # compaction stages (1 without compaction)
    trips: int  # chunk passes executed (one pass of one chunk), over all stages
    slots: int  # fit x pass slots executed: trips x chunk
    bucket: int  # the number of fits the batch was padded to (the compiled shape)
    chunk: int  # fits per chunk


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


def _dot(a, b):
    """``a @ b`` for two vectors over the parameters: an elementwise product reduced (under
    ``vmap`` a ``dot`` becomes a batch of tiny matrix products)."""
    return jnp.sum(a * b)


# On accelerators, models with up to this many parameters get one fused reduction per sum:
# under vmap a matrix product becomes a batch of tiny GEMMs there (H100, gaussian_2d
# float32: 1.35e6 -> 1.84e6 fits/s). On CPU the matrix products are as fast and compile
# smaller (experiments/jax_compile).
FUSED_SUMS_MAX_PARAMS = 8


def _pairs(n):
    return [(i, j) for i in range(n) for j in range(i, n)]


def _normal_sums(vectors, jac, residual, weight=None):
    """Each of ``vectors`` (n_points,) summed, the gradient ``jac @ residual`` and the
    matrix ``(jac * weight) @ jac.T`` (``jac @ jac.T`` without a weight), ``jac`` being
    ``(n_params, n_points)``."""
    weighted = jac if weight is None else jac * weight[None, :]
    n = jac.shape[0]
    if jax.default_backend() == "cpu" or n > FUSED_SUMS_MAX_PARAMS:
        return [jnp.sum(v) for v in vectors], jac @ residual, weighted @ jac.T
    g = jnp.stack([jnp.sum(jac[i] * residual) for i in range(n)])
    entries = {(i, j): jnp.sum(weighted[i] * jac[j]) for i, j in _pairs(n)}
    matrix = jnp.stack([jnp.stack([entries[min(i, j), max(i, j)] for j in range(n)])
                        for i in range(n)])
    return [jnp.sum(v) for v in vectors], g, matrix


def _robust(estimator):
    return estimator != ESTIMATOR_LSE and estimator != ESTIMATOR_MLE


def _no_probe_terms(estimator, d, dtype):
    """``(probe_factor, probe_offset)`` of a fit before its first pass: zeros, of length
    n_points for a robust loss, else 0 (least squares and MLE keep none)."""
    zeros = jnp.zeros(d.ydata.shape[-1] if _robust(estimator) else 0, dtype)
    return zeros, zeros


def _evaluate(model, jacobian, jac_method, estimator, d, p, free, weighing=WEIGH_CURVATURE):
    """chi2, g, h at p (chi2 = inf where they are not finite or, for MLE, some f <= 0),
    whether the Poisson model was positive at every used point, and the geodesic probe's
    point weights at p (:class:`BatchState`'s ``probe_factor, probe_offset``); a robust
    loss's points weighed in h as ``weighing`` says (:func:`autofit._rules.point_weight`)."""
    f, jac, used = _model_and_columns(model, jacobian, jac_method, d, p, free)
    y, w = d.ydata, d.weights
    probe = _no_probe_terms(estimator, d, p.dtype)
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
        # A robust loss: Σ rho, each point's weight in H the loss's curvature or Newton's
        # (the reference's _evaluate). r is exactly 0 at weight-0 points, so every term
        # there is 0 too.
        positive = jnp.asarray(True)
        r = jnp.where(used, w * (y - f), 0.0)
        z = r * r
        rho, rho1, rho2, curvature = robust_loss(z, estimator)
        weight = point_weight_where(jnp, rho1, rho2, z, curvature, weighing)
        (chi2,), g, h = _normal_sums((rho,), jac, jnp.where(used, w * rho1 * r, 0.0),
                                     jnp.where(used, w * w * weight, 0.0))
        probe = geodesic_probe_terms(jnp.where(used, w, 0.0), r, rho1, weight)
    finite = jnp.isfinite(chi2) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(h))
    return jnp.where(finite & positive, chi2, jnp.inf), g, h, positive, probe


def _reverse_mode_agrees(jac_method, jacobian):
    """Whether jax's reverse mode of the model gives the Jacobian's products ``J u``: where
    the Jacobian is jax's own derivative (``JAC_AUTODIFF``) or the exact one generated from
    a NumPy model's source (:func:`autofit.jax.host.exact_jacobian` marks it), not a
    user's analytic Jacobian or finite differences."""
    return jac_method == JAC_AUTODIFF or getattr(jacobian, "agrees_with_autodiff", False)


def _geodesic(model, jacobian, jac_method, estimator, d, s, step, active, chol, worth,
              free, reverse_mode):
    """The reference's geodesic acceleration (least squares and the robust losses): the
    step ``velocity + acceleration / 2``, whether the acceleration is trusted (else the
    step is refused like a rejected one; the step unchanged where it is not ``worth``
    bending: the reference's ``_worth_bending``, from :func:`_proposal`) and whether its
    right-hand side was finite.

    ``g_probe = J(p) u`` takes the Jacobian at p again: with ``reverse_mode`` one ``vjp`` of
    the model (about two evaluations of it; the 8-dip user model's columns cost 7), else
    its columns recomputed (storing them per fit between passes cost more: under vmap
    every pass copies the state).
    """
    velocity = jnp.minimum(jnp.maximum(s.params + step, d.lower), d.upper) - s.params
    h_v = jnp.sum(s.h * velocity[None, :], axis=1)
    mx = _model_x(d.x)
    f_probe = jnp.asarray(model(mx, s.params + GEODESIC_PROBE * velocity),
                          dtype=s.params.dtype)
    used = d.weights != 0.0
    if reverse_mode:
        f, pullback = jax.vjp(lambda q: jnp.asarray(model(mx, q), dtype=q.dtype), s.params)

        def jac_times(u):
            return pullback(u)[0] * free
    else:
        f, jac, used = _model_and_columns(model, jacobian, jac_method, d, s.params, free)

        def jac_times(u):
            return jac @ u
    w = jnp.where(used, d.weights, 0.0)
    if estimator == ESTIMATOR_LSE:
        g_probe = jac_times(w * w * jnp.where(used, d.ydata - f_probe, 0.0))
    else:
        # The model's bending along v, each point weighed as H weighs it (the reference's
        # _geodesic_rhs, with the weights of the pass at p).
        r_probe = jnp.where(used, w * (d.ydata - f_probe), 0.0)
        g_probe = jac_times(s.probe_factor * r_probe + s.probe_offset)
    second = (2.0 / GEODESIC_PROBE) * ((g_probe - s.g) / GEODESIC_PROBE + h_v)
    finite = jnp.all(jnp.isfinite(second))
    acceleration = _substitute(chol, jnp.where(active & finite, second, 0.0))
    trusted = finite & (2.0 * jnp.sqrt(_dot(s.scale_squared * acceleration, acceleration))
                        <= GEODESIC_MAX_RATIO
                        * jnp.sqrt(_dot(s.scale_squared * velocity, velocity)))
    return (jnp.where(worth, velocity + 0.5 * acceleration, step),
            jnp.where(worth, trusted, True), finite)


def _bend(model, jacobian, jac_method, estimator, s, fits, step, active, chol, worth, free):
    """:func:`_geodesic` for every fit of a chunk: ``(step, trusted)``. With reverse mode
    where it agrees (:func:`_reverse_mode_agrees`); where it cannot be traced (a
    ``while_loop`` in the model), or where a fit's right-hand side is not finite with it
    (an unused branch of a ``where`` can give nan derivatives), with the columns."""

    def run(reverse_mode):
        return _map_fits(lambda b, di: _geodesic(model, jacobian, jac_method, estimator, di,
                                                 *b, free, reverse_mode),
                         (s, step, active, chol, worth), fits)

    def with_columns(_):
        return run(False)[:2]

    if _reverse_mode_agrees(jac_method, jacobian):
        try:
            bent_step, trusted, finite = run(True)
        except (ValueError, NotImplementedError):  # jax cannot reverse the model
            return with_columns(None)
        return jax.lax.cond(jnp.any(worth & ~finite), with_columns,
                            lambda _: (bent_step, trusted), None)
    return with_columns(None)


def _cholesky(a):
    """The lower Cholesky factor of ``a`` and ok: False where a pivot is not > 0 or not
    finite (the reference's test; the factor is then nan). The library factorisation:
    for a handful of parameters it runs as fast as one unrolled into scalars (measured in
    ``experiments/jax_compile``) and compiles to one call, whatever the size."""
    chol = jnp.linalg.cholesky(a)
    return chol, jnp.all(jnp.isfinite(chol))


def _substitute(chol, b):
    """Solve ``L Lᵀ z = b`` with the factor of :func:`_cholesky` (``b`` a vector or a
    matrix of right-hand sides)."""
    return jax.scipy.linalg.cho_solve((chol, True), b)


def _damped_system(h, g, scale_squared, damping, free):
    # Fixed parameters get an identity row and column, so their step is exactly 0.
    system = jnp.where(free[:, None] & free[None, :], h, 0.0)
    diagonal = jnp.where(free, jnp.diag(h) + damping * scale_squared, 1.0)
    system = jnp.where(jnp.eye(free.shape[0], dtype=bool), diagonal[None, :], system)
    return system, jnp.where(free, g, 0.0)


def _invert(information, free):
    """The covariance: the inverse over the free parameters (0 elsewhere), nan and ok False
    when not positive definite."""
    n = free.shape[0]
    zeros = jnp.zeros(n, information.dtype)
    system, _ = _damped_system(information, zeros, zeros, 0.0, free)
    chol, ok = _cholesky(system)
    covariance = _substitute(chol, jnp.eye(n, dtype=information.dtype))
    covariance = jnp.where(free[:, None] & free[None, :], covariance, 0.0)
    return jnp.where(ok, covariance, jnp.nan), ok


def _known(estimator):
    """``estimator``, refused (``ValueError``) unless it is one of :data:`ESTIMATORS`:
    checked before anything is traced."""
    if estimator not in ESTIMATORS:
        raise ValueError("lm_batch: estimator must be ESTIMATOR_LSE, ESTIMATOR_MLE or a "
                         "robust loss (ESTIMATOR_SOFT_L1, ESTIMATOR_HUBER, ESTIMATOR_CAUCHY, "
                         f"ESTIMATOR_ARCTAN), not {estimator!r}")
    return estimator


def _prepare(estimator, d, p0, free):
    """The state of one fit before its first pass: the pre-checks, and ``clip(p0)`` with
    status ``_STARTING`` when the fit can start (its starting point is evaluated by its first
    pass, :func:`_iteration`)."""
    finite_data = (jnp.all(jnp.isfinite(d.x)) & jnp.all(jnp.isfinite(d.ydata))
                   & jnp.all(jnp.isfinite(d.weights)) & jnp.all(jnp.isfinite(p0)))
    used = d.weights != 0.0
    negative = jnp.any(used & (d.ydata < 0.0)) if estimator == ESTIMATOR_MLE else False
    too_few = jnp.sum(used) < jnp.sum(free)
    status = jnp.where(~finite_data, NONFINITE_DATA,
                       jnp.where(negative, MLE_NEGATIVE_DATA,
                                 jnp.where(too_few, TOO_FEW_POINTS, _STARTING)))
    n_params = p0.shape[0]
    probe = _no_probe_terms(estimator, d, p0.dtype)
    return BatchState(
        params=jnp.where(status == _STARTING, jnp.minimum(jnp.maximum(p0, d.lower), d.upper),
                         p0),
        chi2=jnp.asarray(jnp.nan, p0.dtype), g=jnp.zeros_like(p0),
        h=jnp.zeros((n_params, n_params), p0.dtype), scale_squared=jnp.zeros_like(p0),
        damping=jnp.asarray(initial_damping(_robust(estimator)), dtype=p0.dtype),
        n_iter=jnp.asarray(0, dtype=int), status=jnp.asarray(status, dtype=int),
        n_accepted=jnp.asarray(0, dtype=int), weighing=jnp.asarray(WEIGH_CURVATURE, dtype=int),
        probe_factor=probe[0], probe_offset=probe[1])


def _first_pass(s, chi2, g, h, positive, probe, free, max_iter):
    """The state after the evaluation of a fit's starting point ``s.params``: the
    reference's step 2."""
    started = jnp.isfinite(chi2)
    status = jnp.where(started, RUNNING, jnp.where(positive, NONFINITE, MLE_NONPOSITIVE_MODEL))
    status = jnp.where(started & ~jnp.any(free & (g != 0.0)), CONVERGED_GTOL, status)
    # The reference tests the budget at the top of each pass; here after each pass, and
    # after the first evaluation.
    status = jnp.where((status == RUNNING) & (max_iter <= 0), MAX_ITERATIONS, status)
    g = jnp.where(started, g, 0.0)
    h = jnp.where(started, h, 0.0)
    return s._replace(chi2=jnp.where(started, chi2, jnp.nan), g=g, h=h, scale_squared=jnp.diag(h),
                      status=jnp.asarray(status, dtype=int), probe_factor=probe[0],
                      probe_offset=probe[1])


def _proposal(s, d, free, tol, max_iter):
    """The LM step of one fit: ``(s, active, chol, ok, step, worth)``, ``worth`` whether a
    running fit's step is large enough to bend (see :func:`_geodesic`).

    Where the damped system does not factorise, λ is raised tenfold (an iteration without a
    pass, :func:`_not_tried`) and it is factorised again, until it does or the fit ends
    (``s`` is the state after those iterations; ``ok`` False only for a fit that ended):
    the reference's iterations one after another, in one proposal (each had cost a round of
    proposals, the geodesic probe included, for the whole chunk: a robust fit's Newton
    weighing does not factorise about once per fit)."""
    # The active set: a parameter at a bound whose descent direction points out is held.
    active = active_where(s.params, s.g, d.lower, d.upper, free)

    def factorise(s):
        system, rhs = _damped_system(s.h, s.g, s.scale_squared, s.damping, active)
        return _cholesky(system) + (rhs,)

    def failed(carry):
        s, _, ok, _ = carry
        return ~ok & (s.status == RUNNING)

    def raise_damping(carry):
        s = _not_tried(carry[0], False, max_iter)
        return (s, *factorise(s))

    s, chol, ok, rhs = jax.lax.while_loop(failed, raise_damping, (s, *factorise(s)))
    step = jnp.where(ok, _substitute(chol, rhs), 0.0)
    velocity = jnp.minimum(jnp.maximum(s.params + step, d.lower), d.upper) - s.params
    predicted = predicted_reduction_where(jnp, s.h, velocity, s.scale_squared, s.damping)
    worth = (ok & (s.status == RUNNING)
             & (predicted > jnp.maximum(tol, GEODESIC_MIN_REDUCTION) * s.chi2))
    return s, active, chol, ok, step, worth


def _group_size(chunk):
    """How many fits of a chunk of ``chunk`` a bend runs on at a time (:func:`_in_groups`):
    on a CPU, in a full chunk of :data:`CPU_CHUNK` fits (a small model), an eighth of it
    (groups of a quarter, or of 4 fits, were slower); else the whole chunk: on accelerators
    a chunk's fits run side by side, and a large model's smaller chunk gained little from
    groups (the 8-Lorentzian user model, chunks of 32: 1.5% more fits/s) for a first call
    0.65 s longer to compile (4.3 -> 5.0 s; the gaussians' 0.2 s, for 14%)."""
    if jax.default_backend() != "cpu" or chunk < CPU_CHUNK:
        return chunk
    return chunk // 8


def _in_groups(function, chosen, size, default, *per_fit):
    """``function`` for the ``chosen`` fits of a chunk, ``size`` fits at a time: the fits
    listed chosen first, in groups of ``size`` until the chosen ones are done (the last
    group's other fits get from ``function`` what ``default`` has for them, which it must
    ensure), each group's results put into ``default``. ``per_fit`` and the results are
    pytrees of arrays with the chunk's fits first (``BatchData`` fields of leading size 1,
    shared by all fits, are passed whole).

    Under ``vmap`` a bend costs each fit of the group the same whether it bends or not
    (0.47 us per gaussian fit on a CPU, in groups of 8 to 64 alike): the few fits that still
    bend late in a robust batch, or whose acceleration was refused, paid for the chunk's 64
    (20,000 gaussians on a CPU, experiments/robust_batch: least squares 403-413 -> 343-345
    ms, arctan 807-820 -> 694-697 ms)."""
    order = _running_first(chosen)

    def group(k, out):
        rows = jax.lax.dynamic_slice_in_dim(order, k * size, size)
        part = function(*jax.tree.map(lambda a: a if a.shape[0] == 1 else a[rows], per_fit))
        return jax.tree.map(lambda full, a: full.at[rows].set(a, unique_indices=True),
                            out, part)

    if size == chosen.shape[0]:
        return jax.lax.cond(jnp.any(chosen), lambda _: function(*per_fit),
                            lambda _: default, None)
    return jax.lax.fori_loop(0, _ceil_div(jnp.sum(chosen), size), group, default)


def _chunk_pass(model, jacobian, jac_method, estimator, s, fits, free, tol, max_iter):
    """One pass for every moving fit of a chunk: its step, then one evaluation of the model
    and its Jacobian (:func:`_iteration`). A step that cannot be tried (its factorisation
    failed, or its acceleration was refused) is an iteration without a pass, as in the
    reference: λ is raised and the step proposed again, until every running fit of the
    chunk has a step to try (a refused step cost a whole pass before: the 8-dip user
    model's 11 iterations per fit were 6.5 passes and 4.4 refusals). The geodesic probe
    (all but MLE) runs only when one of the fits it is for bends its step: under ``vmap``
    a per-fit choice would run it for every fit; on a CPU it runs for the fits that bend,
    gathered in groups of an eighth of the chunk (:func:`_in_groups`)."""
    group = _group_size(s.status.shape[0])

    def bend_all(s, fits, step, active, chol, worth):
        return _bend(model, jacobian, jac_method, estimator, s, fits, step, active, chol,
                     worth, free)

    def propose(s, asking):
        s, active, chol, ok, step, worth = _map_fits(
            lambda si, di: _proposal(si, di, free, tol, max_iter), s, fits)
        bent = jnp.ones_like(ok)
        if estimator != ESTIMATOR_MLE:
            worth = worth & asking & bends_from(s.weighing)
            # A fit not worth bending keeps its step and its trust (_geodesic): gathered
            # with the few that bend, it gets them back unchanged.
            step, bent = _in_groups(bend_all, worth, group, (step, bent), s, fits, step,
                                    active, chol, worth)
        return s, step, ok, bent

    def propose_asked(carry):
        # The fits asked for get a step (a system that does not factorise has λ raised
        # within the proposal); those whose acceleration is refused have λ raised (an
        # iteration) and are asked again while they run (few: their bends are gathered).
        s, step, ok, bent, asked = carry
        s, step, ok, bent = _where_fits(asked, propose(s, asked), (s, step, ok, bent))
        refused = asked & ok & ~bent
        s = _where_fits(refused, _not_tried(s, ok, max_iter), s)
        return s, step, ok, bent, refused & (s.status == RUNNING)

    running = s.status == RUNNING
    s, step, ok, bent, _ = jax.lax.while_loop(
        lambda carry: jnp.any(carry[-1]), propose_asked,
        (s, jnp.zeros_like(s.params), running, running, running))
    new = _map_fits(lambda b, di: _iteration(model, jacobian, jac_method, estimator, *b, di,
                                             free, tol, max_iter),
                    (s, jnp.where((ok & bent)[:, None], step, 0.0)), fits)
    return _where_fits(_moving(s.status), new, s)


def _where_fits(chosen, new, old):
    """``new`` for the ``chosen`` fits, ``old`` for the others (pytrees of per-fit arrays)."""
    return jax.tree.map(
        lambda n, o: jnp.where(chosen.reshape(chosen.shape + (1,) * (n.ndim - 1)), n, o),
        new, old)


def _not_tried(s, ok, max_iter):
    """A running fit after a step that could not be tried, an iteration without a pass:
    its factorisation failed (``ok`` False: SINGULAR once λ is spent) or its acceleration
    was not trusted (MACHINE_PRECISION)."""
    n_iter = s.n_iter + 1
    damping, status = step_not_tried_where(jnp, s.damping,
                                           jnp.where(ok, MACHINE_PRECISION, SINGULAR))
    status = jnp.where((status == RUNNING) & (n_iter >= max_iter), MAX_ITERATIONS, status)
    return s._replace(damping=damping, n_iter=n_iter, status=jnp.asarray(status, dtype=int))


def _iteration(model, jacobian, jac_method, estimator, s, step, d, free, tol, max_iter):
    """One pass of the reference's loop for one moving fit: a running fit (status
    ``RUNNING``) tries its (bent) step, a fit with status ``_STARTING`` has its starting
    point evaluated. Either way one evaluation of the model and its Jacobian, so that the
    compiled program holds them once."""
    first = s.status == _STARTING
    n_iter = s.n_iter + 1

    trial, small_step = clip_step_where(jnp, s.params, step, d.lower, d.upper,
                                        s.scale_squared, tol)
    trial = jnp.where(first, s.params, trial)
    trial_weighing = pass_weighing_where(jnp, _robust(estimator), s.n_accepted, s.damping)
    trial_chi2, trial_g, trial_h, positive, probe = _evaluate(
        model, jacobian, jac_method, estimator, d, trial, free, trial_weighing)
    started = _first_pass(s, trial_chi2, trial_g, trial_h, positive, probe, free, max_iter)
    predicted = predicted_reduction_where(jnp, s.h, step, s.scale_squared, s.damping)
    accept, status, judged = judge_trial_where(jnp, s.chi2, trial_chi2, predicted,
                                               small_step, tol, s.damping)
    status = jnp.where((status == RUNNING) & (n_iter >= max_iter), MAX_ITERATIONS, status)

    iterated = BatchState(
        params=jnp.where(accept, trial, s.params),
        chi2=jnp.where(accept, trial_chi2, s.chi2),
        g=jnp.where(accept, trial_g, s.g),
        h=jnp.where(accept, trial_h, s.h),
        scale_squared=jnp.where(accept, jnp.maximum(s.scale_squared, jnp.diag(trial_h)),
                                s.scale_squared),
        damping=judged,
        n_iter=n_iter,
        status=jnp.asarray(status, dtype=int),
        n_accepted=s.n_accepted + jnp.asarray(accept, dtype=s.n_accepted.dtype),
        weighing=jnp.where(accept, trial_weighing, s.weighing).astype(s.weighing.dtype),
        probe_factor=jnp.where(accept, probe[0], s.probe_factor),
        probe_offset=jnp.where(accept, probe[1], s.probe_offset))
    return jax.tree.map(lambda a, b: jnp.where(first, a, b), started, iterated)


def _finish(model, jacobian, jac_method, estimator, s, d, free):
    """The covariance of one fit, and its final status."""
    started = ~jnp.isin(s.status, jnp.asarray(_NOT_STARTED))
    if estimator == ESTIMATOR_MLE:
        # Fisher's information sum w J Jᵀ / f, one more pass.
        f, jac, used = _model_and_columns(model, jacobian, jac_method, d, s.params, free)
        weight = jnp.where(used, d.weights / jnp.where(used, f, 1.0), 0.0)
        _, _, information = _normal_sums((), jac, weight, weight)
    elif estimator == ESTIMATOR_LSE:
        information = s.h
    else:
        # scipy's Σ w² max(rho1 + 2 rho2 z, eps) J Jᵀ at the final p, one more pass (beyond
        # f_scale H keeps the square-root residuals' weight, not this curvature).
        f, jac, used = _model_and_columns(model, jacobian, jac_method, d, s.params, free)
        w = jnp.where(used, d.weights, 0.0)
        r = jnp.where(used, w * (d.ydata - f), 0.0)
        z = r * r
        _, rho1, rho2, curvature = robust_loss(z, estimator)
        weight = jnp.where(used, w * w * point_weight_where(jnp, rho1, rho2, z, curvature,
                                                            WEIGH_INFORMATION), 0.0)
        _, _, information = _normal_sums((), jac, weight, weight)
    covariance, ok = _invert(information, free)
    covariance = jnp.where(started, covariance, jnp.nan)
    singular = started & ~ok & jnp.isin(s.status, jnp.asarray(CONVERGED_CODES))
    status = jnp.where(singular, SINGULAR, s.status)
    return s.params, s.chi2, s.n_iter, status, covariance


# --- Over a batch ----------------------------------------------------------------------


def _ceil_div(a, b):
    return (a + b - 1) // b


def _chunk_size(n_fits, n_params=1, n_points=1):
    """Fits per chunk for a batch of ``n_fits`` (a bucket size): a divisor of it, at most
    :data:`CPU_CHUNK` on CPU, and there with at most :data:`CPU_CHUNK_ENTRIES` Jacobian
    entries (fits x parameters x points); :data:`ACCELERATOR_CHUNK` elsewhere."""
    if jax.default_backend() != "cpu":
        return math.gcd(n_fits, ACCELERATOR_CHUNK)
    limit = CPU_CHUNK
    while limit > 1 and limit * n_params * n_points > CPU_CHUNK_ENTRIES:
        limit //= 2
    return math.gcd(n_fits, limit)


def _take(tree, rows):
    """The fits ``rows`` of a batch (``BatchState`` or ``BatchData``); fields of leading
    size 1 (data shared by all fits) are kept whole."""
    return type(tree)(*(a if a.shape[0] == 1 else a[rows] for a in tree))


def _put(full, rows, part):
    """``full`` with the fits ``rows`` replaced by ``part`` (rows distinct)."""
    return type(full)(*(a.at[rows].set(b, unique_indices=True) for a, b in zip(full, part)))


def _map_fits(function, batched, data, *shared):
    """``function(batched_i, data_i, *shared)`` for every fit i of a chunk (``vmap``); the
    fields of ``data`` with leading size 1 are shared by all fits (never copied per fit)."""
    axes = BatchData(*(None if a.shape[0] == 1 else 0 for a in data))
    data = BatchData(*(a[0] if axis is None else a for a, axis in zip(data, axes)))
    return jax.vmap(function, in_axes=(0, axes) + (None,) * len(shared))(batched, data,
                                                                         *shared)


def _running_first(running):
    """A permutation of the fits that lists the running ones first, each group in its
    order (a stable partition, O(n))."""
    n_running = jnp.sum(running)
    position = jnp.where(running, jnp.cumsum(running) - 1,
                         n_running + jnp.cumsum(~running) - 1)
    return jnp.zeros_like(position).at[position].set(
        jnp.arange(running.shape[0], dtype=position.dtype), unique_indices=True)


def _moving(status):
    """Fits that a pass advances: running, or still to evaluate their starting point."""
    return (status == RUNNING) | (status == _STARTING)


def _run_stages(iteration, state, data, free, tol, max_iter, n_valid, stage_iterations,
                compaction, chunk):
    """Every moving fit to its end, in stages; returns ``(state, stages, trips)``.

    A stage lists the moving fits first (compaction) and runs each chunk of them as a
    ``vmap``-ed pass inside a ``while_loop`` (only moving fits change: what ``vmap`` of a
    per-fit ``while_loop`` does), for at most ``stage_iterations`` passes and only while
    more than half of the chunk still moves; with no more than one chunk of moving fits
    left (or without compaction), the chunks run to the end.
    """
    n_fits = state.status.shape[0]
    integer = state.n_iter.dtype
    unlimited = jnp.asarray(jnp.iinfo(integer).max, integer)

    def one_chunk(k, carry, order, n_steps, min_running):
        state, trips = carry
        rows = jax.lax.dynamic_slice_in_dim(order, k * chunk, chunk)
        fits = _take(data, rows)

        def cond(inner):
            s, passes = inner
            return (passes < n_steps) & (jnp.sum(_moving(s.status)) > min_running)

        def body(inner):
            s, passes = inner
            return iteration(s, fits, free, tol, max_iter), passes + 1

        s, passes = jax.lax.while_loop(cond, body,
                                       (_take(state, rows), jnp.asarray(0, integer)))
        return _put(state, rows, s), trips + passes

    def stage(carry):
        state, stages, trips = carry
        running = _moving(state.status)
        n_running = jnp.sum(running)
        order = jnp.where(compaction, _running_first(running), jnp.arange(n_fits))
        n_chunks = _ceil_div(jnp.where(compaction, n_running, n_valid), chunk)
        spread = compaction & (n_running > chunk)
        n_steps = jnp.where(spread, stage_iterations, unlimited)
        min_running = jnp.where(spread, chunk // 2, 0)
        state, trips = jax.lax.fori_loop(
            0, n_chunks, functools.partial(one_chunk, order=order, n_steps=n_steps,
                                           min_running=min_running), (state, trips))
        return state, stages + 1, trips

    zero = jnp.asarray(0, integer)
    return jax.lax.while_loop(lambda carry: jnp.any(_moving(carry[0].status)), stage,
                              (state, zero, zero))


def _results(finish, state, data, free, n_valid, chunk):
    """(params, chi2, n_iter, status, covariance) of every fit, chunk by chunk."""
    n_fits, n_params = state.params.shape
    out = (state.params, state.chi2, state.n_iter, state.status,
           jnp.zeros((n_fits, n_params, n_params), state.params.dtype))

    def one_chunk(k, out):
        rows = k * chunk + jnp.arange(chunk)
        new = _map_fits(lambda s, d: finish(s, d, free), _take(state, rows),
                        _take(data, rows))
        return tuple(a.at[rows].set(b, unique_indices=True) for a, b in zip(out, new))

    return jax.lax.fori_loop(0, _ceil_div(n_valid, chunk), one_chunk, out)


def _solve(model, jacobian, jac_method, estimator, data, p0, free, tol, max_iter, n_valid,
           stage_iterations, compaction, loss_index):
    estimator = traced_estimator(estimator, loss_index)
    statics = (model, jacobian, jac_method, estimator)
    chunk = _chunk_size(*p0.shape, data.ydata.shape[1])
    state = _map_fits(lambda p, d: _prepare(estimator, d, p, free), p0, data)
    state = state._replace(status=jnp.where(jnp.arange(p0.shape[0]) < n_valid, state.status,
                                            _PADDING))
    state, stages, trips = _run_stages(functools.partial(_chunk_pass, *statics), state, data,
                                       free, tol, max_iter, n_valid, stage_iterations,
                                       compaction, chunk)
    results = _results(functools.partial(_finish, *statics), state, data, free, n_valid,
                       chunk)
    return results, (stages, trips)


# XLA:CPU's newer fusion emitters compile this program about 1.5x slower, and it then runs
# about 2x slower, than with the loop emitters (measured in experiments/jax_compile).
_solve_jit = jit(_solve, static_argnames=_STATIC)


def solve(**arguments):
    """``solve(model=, jacobian=, jac_method=, estimator=, data=, p0=, free=, tol=,
    max_iter=, n_valid=, stage_iterations=, compaction=, loss_index=) -> (results, (stages,
    trips))``: a whole (padded) batch in one compiled program; fits ``n_valid`` and beyond
    are padding; ``estimator`` and ``loss_index`` as :func:`static_estimator` gives them.
    ``results`` is lm_batch's ``(params, chi2, n_iter, status, covariance)`` for every row,
    ``stages`` and ``trips`` those of :class:`BatchStats`."""
    return _solve_jit(**arguments)


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


def run_batch(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, free,
              estimator, tol, max_iter, *, compaction=True,
              stage_iterations=STAGE_ITERATIONS):
    """:func:`lm_batch` with options; returns ``(results, stats)``.

    ``results`` is lm_batch's ``(params, chi2, n_iter, status, covariance)`` (NumPy
    arrays), ``stats`` a :class:`BatchStats`. With ``compaction`` (the default, what
    :func:`lm_batch` does) the batch runs in stages of at most ``stage_iterations`` passes
    per chunk, and the running fits are listed first at each stage, so that they fill as
    few chunks as possible. ``compaction=False`` runs every chunk until its slowest fit
    stops (the cost of a ``vmap``-ed per-fit ``while_loop`` over each chunk). The results
    are identical either way (the same compiled program).
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
    free = np.asarray(free, dtype=bool).reshape(n_params)
    integer = np.dtype(jnp.asarray(0, dtype=int).dtype)
    if n_fits == 0:
        empty = (np.zeros((0, n_params), dtype), np.zeros(0, dtype), np.zeros(0, integer),
                 np.zeros(0, integer), np.zeros((0, n_params, n_params), dtype))
        return empty, BatchStats(0, 0, 0, 0, 0)

    # Pad to the bucket with copies of fit 0 (marked as padding on the device); ydata and
    # the bounds are always per fit (shared bounds are a few numbers per fit, and then one
    # program serves both), x and the weights shared when their leading size is 1.
    size = bucket_size(n_fits)
    rows = np.concatenate([np.arange(n_fits), np.zeros(size - n_fits, dtype=np.int64)])
    per_fit = ("ydata", "lower", "upper")
    data = BatchData(*(np.broadcast_to(a, (n_fits,) + a.shape[1:])[rows]
                       if name in per_fit or a.shape[0] != 1 else a
                       for name, a in zip(BatchData._fields, host)))
    static, loss_index = static_estimator(_known(estimator))
    results, (stages, trips) = solve(
        model=model, jacobian=jacobian, jac_method=int(jac_method), estimator=static,
        loss_index=np.asarray(loss_index, integer),
        data=data, p0=p0.astype(dtype)[rows], free=free, tol=np.asarray(tol, dtype),
        max_iter=np.asarray(max_iter, integer), n_valid=np.asarray(n_fits, integer),
        stage_iterations=np.asarray(stage_iterations, integer),
        compaction=np.asarray(bool(compaction)))
    results = tuple(np.asarray(r)[:n_fits] for r in jax.device_get(results))
    chunk = _chunk_size(size, n_params, host.ydata.shape[1])
    trips = int(trips)
    return results, BatchStats(int(stages), trips, trips * chunk, size, chunk)


@implements("lm_batch")
def lm_batch(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, free,
             estimator, tol, max_iter):
    require_jac_method("lm_batch", "jax", jac_method)
    results, _ = run_batch(model, jacobian, jac_method, x, ydata, weights, p0, lower,
                           upper, free, estimator, tol, max_iter)
    return results


# The compiled programs, for compile-cache inspection (``._cache_size()``).
lm_batch.jitted = {"solve_cpu": _solve_jit.cpu, "solve": _solve_jit.default}
