"""Levenberg-Marquardt for one fit to very many points, without the Jacobian (JAX).

The algorithm of :mod:`autofit.original.fused`, step for step, as one jit-compiled
``lax.while_loop`` (the whole fit runs on the device; the host only reads the result).

The data are padded to a bucket of :func:`bucket_length` points (copies of the last point,
never read as data), and the number of points is an argument of the program, not its
shape: a new length within a bucket runs the program already compiled (a copy of the data,
one pass over memory, costs far less than a compilation). A pass over the points is a
``lax.fori_loop`` over the full chunks of :func:`chunk_size` points among the
``n_points``, each read with ``lax.dynamic_slice``; when ``chunk`` does not divide them,
one more chunk is read at ``n_points - chunk`` (at 0 when that is negative) and its points
that the full chunks already counted, or beyond ``n_points``, are masked out; the full
chunks need no such mask. Per chunk the model and its Jacobian (analytic, forward or
central differences, or ``jax.jacfwd``) are evaluated and folded into χ², ``JᵀW²r`` and
``JᵀW²J``; only one chunk's ``(n_params, chunk)`` Jacobian exists at a time.

On a CPU the program is compiled with ``autofit.jax.compiler.CPU_COMPILER_OPTIONS`` (XLA's
loop emitters), a chunk holds about ``CPU_CHUNK_ENTRIES`` Jacobian entries, and a model of
at most ``ENTRY_SUMS_UP_TO`` parameters gets one product-and-sum per entry of ``g`` and
``h``. Measured on a 2-core CPU, 10⁶ points, warm calls, ns per point per pass, before ->
after: exponential decay 27 -> 9.3, gaussian 20 -> 11.6, two Lorentzians (7 parameters)
21 -> 17; 10, 16 and 31 parameters unchanged within 7 % (they keep the matrix products).
Before: 16384-point chunks, ``J @ J.T`` and the default emitters. Most of what remains is
evaluating the model and its Jacobian (XLA's loop emitters compute ``exp`` slowly).

Differences from the reference, all deliberate:

* ``JAC_AUTODIFF`` is accepted besides the reference's methods.
* Points of weight 0 contribute exactly nothing even where the model or its Jacobian is
  nan/inf there (selects, never ``0 * value``), as in the reference.

One program serves every robust ``estimator`` (its code traced, a ``switch`` around the loss
alone: :func:`autofit.jax.batch.robust_loss`): its pass forms the reference's sums (the
loss's curvature the weight in H), and one more pass after the loop the information
``Σ w² max(rho1 + 2 rho2 z, eps) J Jᵀ``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from autofit._codes import (
    BATCH_INITIAL_DAMPING,
    CONVERGED_FTOL,
    CONVERGED_GTOL,
    ESTIMATOR_LSE,
    JAC_ANALYTIC,
    JAC_AUTODIFF,
    JAC_CENTRAL,
    JAC_FORWARD,
    MAX_NFEV,
    NONFINITE,
    RUNNING,
    SINGULAR,
    WEIGH_CURVATURE,
    WEIGH_INFORMATION,
)
from autofit._declarations import implements, require_jac_method
from autofit._rules import (
    UNSEEN_STEP,
    active_where,
    chi2_rounding,
    clip_step_where,
    evaluations_per_pass,
    fused_estimator,
    judge_trial_where,
    point_weight_where,
    predicted_reduction_where,
    step_not_tried_where,
)
from autofit.jax.batch import (
    _cholesky,
    _damped_system,
    _substitute,
    robust_loss,
    static_estimator,
    traced_estimator,
)
from autofit.jax.compiler import jit, run_compiled
from autofit.jax.jacobians import autodiff_columns, central_columns, forward_columns

# On a CPU, Jacobian entries (points x parameters) per chunk: enough points that the loop's
# cost per chunk (tens of µs) is small against theirs, few enough that the chunk's Jacobian
# stays in cache (a 10-parameter model's pass took 1.6x as long with 131072-point chunks as
# with 32768). On a GPU,
# points per chunk: a chunk must fill the device, and fewer chunks mean fewer launches.
CPU_CHUNK_ENTRIES = 1 << 19
GPU_CHUNK = 1 << 22

# On a CPU, up to this many parameters a chunk's sums are one reduction per entry of g and h;
# beyond it the n_params (n_params + 1) / 2 reductions of h cost more than a matrix product
# (a 16-parameter pass took 1.4x as long).
ENTRY_SUMS_UP_TO = 7


# The smallest bucket: a fit of up to this many points runs one program (a pass over a few
# thousand padded points costs tens of µs, a compilation about a second).
MIN_BUCKET = 4096


def bucket_length(n_points: int) -> int:
    """The length the data are padded to: ``MIN_BUCKET``, then the next of 4096, 6144,
    8192, 12288, ... (at most 1.5x the data)."""
    size = MIN_BUCKET
    while size < n_points:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def chunk_size(n_points: int, n_params: int, platform: str) -> int:
    """Points per chunk on ``platform`` ('cpu', 'gpu', ...) for data padded to ``n_points``,
    at most ``n_points``: on a CPU the largest power of two (at least 1024) with at most
    ``CPU_CHUNK_ENTRIES`` Jacobian entries."""
    if platform != "cpu":
        return min(n_points, GPU_CHUNK)
    points = CPU_CHUNK_ENTRIES // max(n_params, 1)
    return min(n_points, 1 << max(points.bit_length() - 1, 10))


def _as_float(a):
    # The default float type: float64 under jax.enable_x64, float32 otherwise.
    return jnp.asarray(a, dtype=float)


def _columns(model, jacobian, jac_method, mx, p, f, lower, upper):
    """The Jacobian of one chunk, transposed: ``(n_params, chunk)``."""
    if jac_method == JAC_ANALYTIC:
        return jnp.asarray(jacobian(mx, p), dtype=p.dtype).T
    if jac_method == JAC_FORWARD:
        return forward_columns(model, mx, p, f, upper)
    if jac_method == JAC_CENTRAL:
        return central_columns(model, mx, p, lower, upper)
    if jac_method == JAC_AUTODIFF:
        return autodiff_columns(model, mx, p)
    raise ValueError("lm_fused: jac_method must be JAC_ANALYTIC, JAC_FORWARD, JAC_CENTRAL "
                     "or JAC_AUTODIFF")


def _chunk_sums(model, jacobian, jac_method, xc, yc, wc, used, p, lower, upper,
                entry_sums, estimator=ESTIMATOR_LSE, weighing=WEIGH_CURVATURE):
    """``(chi2, g, h)`` of one chunk's points where ``used`` is true; for a robust
    ``estimator`` the loss's sums, its points weighed in h as ``weighing`` says
    (:func:`autofit._rules.point_weight`: with ``WEIGH_INFORMATION``, chi2 and g then
    unused, h is the robust information matrix)."""
    n_params = p.shape[0]
    mx = xc[0] if xc.shape[0] == 1 else xc
    f = jnp.asarray(model(mx, p), dtype=p.dtype)
    jac = _columns(model, jacobian, jac_method, mx, p, f, lower, upper)
    r = jnp.where(used, wc * (yc - f), 0.0)
    if estimator != ESTIMATOR_LSE:
        return _robust_chunk_sums(jac, r, wc, used, entry_sums, estimator, weighing)
    wj = jnp.where(used[None, :], wc[None, :] * jac, 0.0)
    if not entry_sums:
        return r @ r, wj @ r, wj @ wj.T
    # One product-and-sum per entry rather than matrix products: XLA:CPU fuses each into
    # one vectorized reduction, while the (n_params, chunk) @ (chunk, n_params) products
    # made a pass about 2x slower (module docstring). h is symmetric: its upper triangle.
    g = jnp.stack([jnp.sum(wj[i] * r) for i in range(n_params)])
    return jnp.sum(r * r), g, _entry_sums_h(wj, wj)


def _entry_sums_h(left, right):
    # Σ left[i] right[j] for the upper triangle, mirrored.
    n_params = left.shape[0]
    rows, cols = zip(*[(i, j) for i in range(n_params) for j in range(i, n_params)])
    upper_h = jnp.stack([jnp.sum(left[i] * right[j]) for i, j in zip(rows, cols)])
    h = jnp.zeros((n_params, n_params), left.dtype).at[rows, cols].set(upper_h)
    return h.at[cols, rows].set(upper_h)


def _robust_chunk_sums(jac, r, wc, used, entry_sums, estimator, weighing):
    # r is 0 where unused, where every loss is 0 with slope 1: only jac needs the mask.
    z = r * r
    rho, rho1, rho2, curvature = robust_loss(z, estimator)
    jac = jnp.where(used[None, :], jac, 0.0)
    weight_g = wc * rho1 * r
    weight = point_weight_where(jnp, rho1, rho2, z, curvature, weighing)
    left, right = jac * (wc * wc * weight)[None, :], jac
    if not entry_sums:
        return jnp.sum(rho), jac @ weight_g, left @ right.T
    g = jnp.stack([jnp.sum(jac[i] * weight_g) for i in range(jac.shape[0])])
    return jnp.sum(rho), g, _entry_sums_h(left, right)


def _normal_equations(model, jacobian, jac_method, x, ydata, weights, n_points, p, lower,
                      upper, chunk, entry_sums, estimator=ESTIMATOR_LSE,
                      weighing=WEIGH_CURVATURE):
    """One pass over the first ``n_points`` (a traced integer) of the padded data:
    ``(chi2, g, h)`` at ``p``; chi2 is inf if any of them is not finite."""
    n_full = n_points // chunk
    n_params = p.shape[0]

    def read(start):
        xc = jax.lax.dynamic_slice_in_dim(x, start, chunk, axis=1)
        yc = jax.lax.dynamic_slice_in_dim(ydata, start, chunk)
        if weights.shape[0] == 1:
            wc = jnp.broadcast_to(weights, (chunk,))
        else:
            wc = jax.lax.dynamic_slice_in_dim(weights, start, chunk)
        return xc, yc, wc

    def add(sums, start, mask):
        xc, yc, wc = read(start)
        used = wc != 0.0 if mask is None else mask & (wc != 0.0)
        terms = _chunk_sums(model, jacobian, jac_method, xc, yc, wc, used, p, lower, upper,
                            entry_sums, estimator, weighing)
        return tuple(a + b for a, b in zip(sums, terms))

    zero = jnp.zeros((), p.dtype)
    sums = (zero, jnp.zeros(n_params, p.dtype), jnp.zeros((n_params, n_params), p.dtype))
    # Only the last, partial chunk needs the position mask: the full chunks skip it.
    sums = jax.lax.fori_loop(0, n_full, lambda c, s: add(s, c * chunk, None), sums)
    start = jnp.maximum(n_points - chunk, 0)
    position = start + jnp.arange(chunk)
    sums = jax.lax.cond(
        n_points % chunk != 0,
        lambda s: add(s, start, (position >= n_full * chunk) & (position < n_points)),
        lambda s: s, sums)
    chi2, g, h = sums
    finite = jnp.isfinite(chi2) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(h))
    return jnp.where(finite, chi2, jnp.inf), g, h


class _State(NamedTuple):
    params: jax.Array
    chi2: jax.Array
    g: jax.Array
    h: jax.Array
    scale_squared: jax.Array
    damping: jax.Array
    nfev: jax.Array
    n_iter: jax.Array
    status: jax.Array


def _lm_fused(model, jacobian, jac_method, x, ydata, weights, n_points, p0, lower, upper,
              ftol, xtol, gtol, max_nfev, chunk, entry_sums, estimator, loss_index):
    estimator = traced_estimator(estimator, loss_index)
    x, ydata, weights = _as_float(x), _as_float(ydata), _as_float(weights)
    p0, lower, upper = _as_float(p0), _as_float(lower), _as_float(upper)
    ftol, xtol, gtol = _as_float(ftol), _as_float(xtol), _as_float(gtol)
    n_params = p0.shape[0]
    cost = evaluations_per_pass(jac_method, n_params)

    def evaluate(p):
        return _normal_equations(model, jacobian, jac_method, x, ydata, weights, n_points, p,
                                 lower, upper, chunk, entry_sums, estimator)

    def integer(value):
        return jnp.asarray(value, dtype=int)

    p = jnp.minimum(jnp.maximum(p0, lower), upper)
    chi2, g, h = evaluate(p)
    state = _State(params=p, chi2=chi2, g=g, h=h, scale_squared=jnp.diag(h),
                   damping=_as_float(BATCH_INITIAL_DAMPING), nfev=integer(cost),
                   n_iter=integer(0),
                   status=integer(jnp.where(jnp.isfinite(chi2), RUNNING, NONFINITE)))

    def body(s):
        # The tests at the top of the reference's loop.
        active = active_where(s.params, s.g, lower, upper, True)
        counted = active & (jnp.diag(s.h) > 0.0)
        cosines = jnp.abs(s.g) / (jnp.sqrt(jnp.where(counted, jnp.diag(s.h), 1.0))
                                 * jnp.sqrt(s.chi2))
        cosine = jnp.max(jnp.where(counted, cosines, 0.0), initial=0.0)
        newton_system, newton_rhs = _damped_system(s.h, s.g, s.scale_squared, 0.0, active)
        newton_chol, newton_factored = _cholesky(newton_system)
        newton = _substitute(newton_chol, newton_rhs)
        flat = (newton_factored & (newton @ newton_rhs <= ftol * s.chi2)
                & (jnp.sum(s.scale_squared * newton * newton)
                   <= UNSEEN_STEP ** 2 * jnp.sum(s.scale_squared * s.params * s.params)))
        stop = jnp.where(s.chi2 == 0.0, CONVERGED_FTOL,
                         jnp.where(cosine <= gtol, CONVERGED_GTOL,
                                   jnp.where(flat, CONVERGED_FTOL,
                                             jnp.where(s.nfev >= max_nfev, MAX_NFEV,
                                                       RUNNING))))
        system, rhs = _damped_system(s.h, s.g, s.scale_squared, s.damping, active)
        chol, factored = _cholesky(system)
        step = _substitute(chol, rhs)
        go = (stop == RUNNING) & factored

        trial, small_step = clip_step_where(jnp, s.params, step, lower, upper,
                                            s.scale_squared, xtol)
        # Only a factored step pays for a pass over the points.
        trial_chi2, trial_g, trial_h = jax.lax.cond(
            go, evaluate, lambda p: (jnp.asarray(jnp.inf, p.dtype), s.g, s.h), trial)
        predicted = predicted_reduction_where(jnp, s.h, step, s.scale_squared, s.damping)
        accepted, stepped, judged = judge_trial_where(jnp, s.chi2, trial_chi2, predicted,
                                                      small_step, ftol, s.damping)
        accept = go & accepted
        raised, failed_status = step_not_tried_where(jnp, s.damping, SINGULAR)
        damping = jnp.where(go, judged, raised)
        status = jnp.where(stop != RUNNING, stop, jnp.where(go, stepped, failed_status))
        h = jnp.where(accept, trial_h, s.h)
        # The reference takes the Gauss-Newton step that ended the fit without a pass.
        newton_stop = (s.status == RUNNING) & (s.chi2 != 0.0) & ~(cosine <= gtol) & flat
        newton_trial = jnp.minimum(jnp.maximum(s.params + newton, lower), upper)
        return _State(
            params=jnp.where(newton_stop, newton_trial, jnp.where(accept, trial, s.params)),
            chi2=jnp.where(accept, trial_chi2, s.chi2),
            g=jnp.where(accept, trial_g, s.g), h=h,
            scale_squared=jnp.where(accept, jnp.maximum(s.scale_squared, jnp.diag(h)),
                                    s.scale_squared),
            damping=jnp.where(stop != RUNNING, s.damping, damping),
            nfev=s.nfev + jnp.where(go, cost, 0), n_iter=s.n_iter + go.astype(int),
            status=integer(status))

    s = jax.lax.while_loop(lambda s: s.status == RUNNING, body, state)
    if estimator == ESTIMATOR_LSE:
        return s.params, s.chi2, s.status, s.nfev, s.n_iter, s.h
    # The reference returns the first pass's h, without this pass, when that pass failed.
    information = jax.lax.cond(
        s.status == NONFINITE, lambda p: s.h,
        lambda p: _normal_equations(model, jacobian, jac_method, x, ydata, weights, n_points,
                                    p, lower, upper, chunk, entry_sums, estimator,
                                    WEIGH_INFORMATION)[2],
        s.params)
    return s.params, s.chi2, s.status, s.nfev, s.n_iter, information


_STATIC = ("model", "jacobian", "jac_method", "chunk", "entry_sums", "estimator")
# XLA:CPU's loop emitters run a pass about 2x faster than its newer fusion emitters (as for
# the batch program: autofit.jax.compiler). Its two programs are called by the platform of
# the data (run_compiled), not by jax's default backend as the jit wrapper itself would.
_lm_fused_jit = jit(_lm_fused, static_argnames=_STATIC)
_lm_fused_cpu, _lm_fused_default = _lm_fused_jit.cpu, _lm_fused_jit.default


# JAX uses a NumPy array's memory in place (on a CPU) only if it starts on such a boundary.
_ALIGNMENT = 64


def _aligned_empty(shape, dtype):
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    buffer = np.empty(size + _ALIGNMENT, dtype=np.uint8)
    offset = -buffer.ctypes.data % _ALIGNMENT
    return buffer[offset:offset + size].view(dtype).reshape(shape)


def _padded(a, length):
    """``a`` (its last axis the points) padded to ``length`` points with copies of its last
    point, as a device array. A NumPy array is copied once, into memory that a CPU device
    then uses in place (NumPy aligns arrays to 16 bytes, and JAX would copy them again)."""
    extra = length - a.shape[-1]
    if isinstance(a, np.ndarray):
        if extra:
            padded = _aligned_empty(a.shape[:-1] + (length,), a.dtype)
            padded[..., :a.shape[-1]] = a
            padded[..., a.shape[-1]:] = a[..., -1:]
            a = padded
        return jax.device_put(a, may_alias=True)
    if extra:
        a = jnp.concatenate([a, jnp.repeat(a[..., -1:], extra, axis=-1)], axis=-1)
    return a


@implements("lm_fused")
def lm_fused(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, ftol, xtol,
             gtol, max_nfev, estimator=ESTIMATOR_LSE):
    require_jac_method("lm_fused", "jax", jac_method)
    estimator = fused_estimator(estimator)
    platform = jax.default_backend()
    n_params = int(np.shape(p0)[0])
    n_points = int(ydata.shape[0])
    length = bucket_length(n_points)
    chunk = chunk_size(length, n_params, platform)
    # Measured on a CPU only: elsewhere the matrix products, as before.
    entry_sums = platform == "cpu" and n_params <= ENTRY_SUMS_UP_TO
    ftol = max(float(ftol), chi2_rounding(n_points))
    x, ydata = _padded(x, length), _padded(ydata, length)
    weights = weights if np.shape(weights)[0] == 1 else _padded(weights, length)
    # One program for every robust loss (the loss's code traced).
    static, loss_index = static_estimator(estimator)
    arguments = (model, jacobian, jac_method, x, ydata, weights, n_points, p0, lower, upper,
                 ftol, xtol, gtol, max_nfev, chunk, entry_sums, static,
                 np.asarray(loss_index, np.int32))
    return run_compiled(_lm_fused_cpu, _lm_fused_default, platform, *arguments)
