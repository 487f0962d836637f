"""Levenberg-Marquardt for one fit to very many points, without the Jacobian (numba).

The algorithm of :mod:`autofit.original.fused`, step for step. A pass over the points runs
in chunks of at most :data:`CHUNK` points (:func:`chunk_length`), ``prange`` over blocks of
chunks: for each chunk a first
loop evaluates the model point by point (point functions, :mod:`autofit.numba.points`,
built-in models with the vectorisable :func:`autofit.numba.fastexp.vexp`) and writes each
point's gradient, its two weights and its squared residual to a small work array that stays
in cache; a second loop forms every sum of χ², ``JᵀW²r`` and the upper triangle of
``JᵀW²J`` at once (the batched solver's ``_all_sums``), as SIMD reductions. Each chunk's
sums go to its own row of a ``(n_chunks, n_sums)`` array that is then added up in chunk
order, so the result does not depend on the number of threads.

The point loop is branch-free, with one version for a single weight and one for a weight
per point; points of weight 0 are evaluated and then zeroed by a loop of their own, and
the columns of the work array beyond the last chunk's points are zeros.

User functions enter through :func:`autofit.numba.user_points.user_point_function` (one point at
a time) with forward or central differences, computed point by point with the step rules of
:mod:`autofit.original.jacobians`.

A robust ``estimator`` (an argument of ``chunk_sums``: one compiled pass per model serves
every loss) takes the least-squares point loop, and then the work array's rows are
reweighed by :func:`autofit.numba.passes.robust_rows`, the batched pass's own (one loop
per loss over the chunk, shared by every model): the two weights become the reference's
``w rho1 r`` and ``w² c`` (c the loss's curvature), and the sums are formed as for least
squares, χ² from the loss's row. One more pass, weighed with ``WEIGH_INFORMATION``, makes
the information (the h weight ``w² max(rho1 + 2 rho2 z, eps)``) after the fit.
"""

from __future__ import annotations

import math
import threading

import numba
import numpy as np

from autofit import _rules
from autofit._codes import (
    BATCH_INITIAL_DAMPING,
    CONVERGED_FTOL,
    CONVERGED_GTOL,
    ESTIMATOR_LSE,
    JAC_ANALYTIC,
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
    CENTRAL_STEP,
    FORWARD_STEP,
    chi2_rounding,
    evaluations_per_pass,
    fused_estimator,
)
from autofit.numba import linalg
from autofit.numba.first_class import function_at_address
from autofit.numba.models import required_point_functions
from autofit.numba.passes import (
    _REDUCE_FASTMATH,
    FASTMATH,
    FUSED_SUMS_MAX_PARAMS,
    _all_sums_source,
    _dot2,
    _scaled_row,
    _sum,
    robust_rows,
    with_literals_of,
)

# The iteration's decisions, shared with lm_batch (autofit._rules).
_is_active = numba.njit(inline="always")(_rules.is_active)
_clip_step = numba.njit(inline="always")(_rules.clip_step)
_predicted_reduction = numba.njit(inline="always")(_rules.predicted_reduction)
_unseen_step_ends = numba.njit(inline="always")(_rules.unseen_step_ends)
_judge_trial = numba.njit(inline="always")(_rules.judge_trial)
_step_not_tried = numba.njit(inline="always")(_rules.step_not_tried)
_relative_step = numba.njit(inline="always", error_model="numpy", fastmath=FASTMATH)(
    _rules.relative_step)

# Points per chunk: the work array ((n_params + 3) rows of CHUNK float64, 192 kB for three
# parameters) stays in the 512 kB L2 cache of a core.
CHUNK = 4096
CHUNKS_MULTIPLE = 8
# Blocks of chunks per pass (each block allocates its work array once); more blocks than
# threads balance the load when other processes share the cores.
BLOCKS = 64


def _point_source(jac_method: int, n_params: int) -> str:
    """``point(x, k, params, p, lower, upper, jac, work_p, col)``: the model at point k, its
    gradient written to ``jac[:, col]`` (analytic, forward or central differences)."""
    lines = ["def point(x, k, params, p, lower, upper, jac, work_p, col):"]
    if jac_method == JAC_ANALYTIC:
        return "\n".join(lines + ["    return gradient(x, k, params, jac, col)"]) + "\n"
    lines.append("    f0 = value(x, k, params)")
    lines.append(f"    for j in range({n_params}):")
    lines.append("        work_p[j] = p[j]")
    lines.append(f"    for j in range({n_params}):")
    if jac_method == JAC_FORWARD:
        lines += [
            f"        h = relative_step(p[j], {FORWARD_STEP!r})",
            "        if p[j] + h > upper[j]:",
            "            h = -h",
            "        work_p[j] = p[j] + h",
            "        h = work_p[j] - p[j]",
            "        jac[j, col] = (value(x, k, work_p) - f0) / h",
            "        work_p[j] = p[j]",
        ]
    else:
        # Both rules as one pair of model calls (p + step_a, p + step_b) and three
        # coefficients: each call site inlines the whole model, and four of them (twice
        # over, once per kind of weights) took 5 s to compile instead of 2.
        lines += [
            f"        h = relative_step(p[j], {CENTRAL_STEP!r})",
            "        if p[j] - h >= lower[j] and p[j] + h <= upper[j]:",
            "            step_a, step_b, c_a, c_0 = h, -h, 1.0, 0.0",
            "        else:",
            "            if p[j] + 2.0 * h > upper[j]:",
            "                h = -h",
            "            step_a, step_b, c_a, c_0 = h, 2.0 * h, 4.0, -3.0",
            "        work_p[j] = p[j] + step_a",
            "        f_a = value(x, k, work_p)",
            "        work_p[j] = p[j] + step_b",
            "        f_b = value(x, k, work_p)",
            # c_0 * f0 only for the one-sided rule: 0 * f0 would be nan where f0 is inf.
            "        near = c_a * f_a + c_0 * f0 if c_0 != 0.0 else f_a",
            "        jac[j, col] = (near - f_b) / (2.0 * h)",
            "        work_p[j] = p[j]",
        ]
    lines.append("    return f0")
    return "\n".join(lines) + "\n"


def _point_weights(n_params: int, point: str) -> list:
    """The point loop's body (indented for it): the model at point k, and its work
    column's two weights and squared residual (a robust loss reweighs them afterwards)."""
    wg, wh, sq = n_params, n_params + 1, n_params + 2
    return [f"r = wi * (y[k] - {point})",
            f"jac[{wg}, i] = wi * r",
            f"jac[{wh}, i] = wi * wi",
            f"jac[{sq}, i] = r * r"]


def _chunk_source(n_params: int) -> str:
    """``chunk_sums(x, y, w, start, p, lower, upper, jac, work_p, out, estimator,
    weighing)``: the sums of the chunk of points ``start, start + 1, ...``
    (``jac.shape[1]`` of them) written to ``out``: χ², then ``g`` (n_params), then
    ``h[a, b]`` for ``b <= a`` row by row (for a robust ``estimator`` the loss's sums, its
    points weighed in h as the int ``weighing`` says, :func:`autofit._rules.point_weight`:
    with ``WEIGH_INFORMATION`` the robust information matrix; least squares ignores it)."""
    n = range(n_params)
    wg, wh, sq = n_params, n_params + 1, n_params + 2
    small = n_params <= FUSED_SUMS_MAX_PARAMS
    point = "point(x, k, params, p, lower, upper, jac, work_p, i)"
    body = _point_weights(n_params, point)
    lines = [
        "def chunk_sums(x, y, w, start, p, lower, upper, jac, work_p, out, estimator,",
        "               weighing):",
        # The parameters as a tuple of scalars: the model cannot then alias the work array
        # it writes, so the compiler keeps them out of the loop (as in the batched pass).
        ("    params = (" + "".join(f"p[{a}], " for a in n) + ")") if small else
        "    params = p",
        "    width = min(jac.shape[1], y.shape[0] - start)",
        # One loop per kind of weights, each free of selects: a select on a per-point
        # weight inside the point loop (or a weight chosen per point between w[k] and w[0])
        # kept it scalar, 4x slower (AMD EPYC, AVX2). For the same reason the point's index
        # is unsigned: a signed start + i may be negative as far as the compiler knows, and
        # numba's wrap-around of negative indices then put a select on every load (a pass
        # over 1e7 points of a decay model: 17.5 ms signed, 8.8 ms unsigned).
        "    if w.shape[0] == 1:",
        "        wi = w[0]",
        "        for i in range(width):",
        "            k = unsigned(start + i)",
        *(f"            {line}" for line in body),
        "    else:",
        "        for i in range(width):",
        "            k = unsigned(start + i)",
        "            wi = w[k]",
        *(f"            {line}" for line in body),
        # Points of weight 0 are evaluated like the others (branch-free), then zeroed: their
        # model may be inf or nan there.
        "    if w.shape[0] > 1 or w[0] == 0.0:",
        "        for i in range(width):",
        "            if w[start + i if w.shape[0] > 1 else 0] == 0.0:",
        f"                for a in range({sq + 1}):",
        "                    jac[a, i] = 0.0",
        # The last chunk's unused columns: zeros, so that the sums need not know the width.
        "    for i in range(width, jac.shape[1]):",
        f"        for a in range({sq + 1}):",
        "            jac[a, i] = 0.0",
        # A robust loss: the rows reweighed, the loss in the row after them (free: the
        # sums of large models write it only afterwards).
        f"    if estimator == {ESTIMATOR_LSE}:",
        f"        out[0] = _sum(jac, {sq})",
        "    else:",
        # The rows as plain ints (literals would compile it once per model size).
        f"        out[0] = robust_rows(jac, int({wg}), int({wh}), int({sq}), int({sq + 1}),",
        "                             estimator, weighing)",
    ]
    if small:
        pairs = [(a, b) for a in n for b in range(a + 1)]
        names = [f"s{a}" for a in n] + [f"s{a}_{b}" for a, b in pairs]
        lines.append("    " + ", ".join(names) + ", = _all_sums(jac)")
        lines += [f"    out[{1 + i}] = {name}" for i, name in enumerate(names)]
    else:
        # One dot product per sum over rows sq + 1 + a = weight_h * J[a] (fewer live
        # accumulators than the fused loop, which numba's SSA pass cannot take for 25+).
        lines += [
            f"    for a in range({n_params}):",
            f"        out[1 + a] = _dot2(jac, {wg}, a)",
            f"        _scaled_row(jac, {wh}, a, {sq + 1} + a)",
            f"    index = {1 + n_params}",
            f"    for a in range({n_params}):",
            "        for b in range(a + 1):",
            f"            out[index] = _dot2(jac, {sq + 1} + a, b)",
            "            index += 1",
        ]
    return "\n".join(lines) + "\n"


def _chunk_signature():
    from numba import types

    f8 = types.float64
    return types.void(f8[:, ::1], f8[::1], f8[::1], types.int64, f8[::1], f8[::1], f8[::1],
                      f8[:, ::1], f8[::1], f8[::1], types.int64, types.int64)


# ``chunk_sums`` from its address, inside the driver.
_CHUNK_TYPE = numba.types.FunctionType(_chunk_signature())
_chunk_sums_at = function_at_address(lambda x: _CHUNK_TYPE)

_REDUCTIONS: dict = {}


def _reductions(n_params):
    """The sums' helpers for ``n_params`` parameters, compiled once per process and size
    (shared by every model's ``chunk_sums``)."""
    if n_params not in _REDUCTIONS:
        reduce = numba.njit(error_model="numpy", fastmath=_REDUCE_FASTMATH)
        found = {"_sum": reduce(_sum), "_dot2": reduce(_dot2),
                 "_scaled_row": reduce(_scaled_row)}
        if n_params <= FUSED_SUMS_MAX_PARAMS:
            namespace = {}
            exec(compile(_all_sums_source(n_params), "<autofit fused sums>", "exec"),  # noqa: S102
                 namespace)
            found["_all_sums"] = reduce(namespace["_all_sums"])
        _REDUCTIONS[n_params] = found
    return _REDUCTIONS[n_params]


def chunk_sums_namespace(value, gradient, jac_method, n_params, fast_exp):
    """What ``point`` (:func:`_point_source`) and ``chunk_sums`` (:func:`_chunk_source`)
    name, for these point functions: the model inlined, with the vectorisable exp where
    ``fast_exp`` (built-in models and the point functions generated from a user's source;
    other user functions are compiled as written). ``_inline`` compiles ``point``."""
    inline = numba.njit(error_model="numpy", inline="always", fastmath=FASTMATH)
    return {"math": math, "unsigned": numba.uint64, "robust_rows": robust_rows(),
            "relative_step": _relative_step, **_reductions(n_params),
            "value": inline(with_literals_of(value, np.float64, fast_exp)),
            "gradient": (inline(with_literals_of(gradient, np.float64, fast_exp))
                         if jac_method == JAC_ANALYTIC else None),
            "_inline": inline}


def _fast_exp(value) -> bool:
    return getattr(value, "__module__", "") in ("autofit.numba.points", "autofit._forward_mode")


def _chunk_module_source(value, gradient, jac_method, n_params):
    """The source of a module defining ``chunk_sums`` for these point functions, compiled
    for its one signature with numba's ``cache=True``, or None where they can be neither
    imported by name nor written out (a user's function compiled as written)."""
    from autofit.numba.kernel_cache import point_module_head

    name = getattr(value, "__name__", "model")
    head = point_module_head(
        f"autofit fused chunk sums: {name}, jac_method {int(jac_method)}, {int(n_params)} "
        "parameters",
        "from autofit.numba.fused import FASTMATH, _chunk_signature, chunk_sums_namespace",
        value, gradient if jac_method == JAC_ANALYTIC else None, ("_value", "_gradient"))
    if head is None:
        return None
    return "\n".join([
        *head,
        f"globals().update(chunk_sums_namespace(_value, _gradient, {int(jac_method)}, "
        f"{int(n_params)}, {_fast_exp(value)}))",
        "",
        _point_source(jac_method, n_params),
        "point = _inline(point)",
        "",
        _chunk_source(n_params),
        "chunk_sums = numba.njit(_chunk_signature(), cache=True, error_model='numpy',",
        "                        fastmath=FASTMATH)(chunk_sums)",
        "",
    ])


def build_chunk_sums(value, gradient, jac_method, n_params):
    """``chunk_sums`` for these point functions (see ``_chunk_source``), compiled for its one
    signature and passed to the driver as a first-class function: the only code compiled
    per model (the point loop, with the model inlined so that it vectorises). From a
    generated module in numba's disk cache (:mod:`autofit.numba.generated`) where the point
    functions can be written into it (built-in models, and those generated from a user's
    source: a script run again loads its model's pass instead of compiling it); else
    compiled in this process."""
    from numba import types

    from autofit.numba.first_class import CompiledFunction
    from autofit.numba.generated import import_generated

    signature = _chunk_signature()
    source = _chunk_module_source(value, gradient, jac_method, n_params)
    module = None if source is None else import_generated("autofit_chunk", source)
    if module is not None:
        if jac_method == JAC_ANALYTIC:
            from autofit._forward_mode import mark_compiled

            mark_compiled(value, gradient, "fused")  # the next process's quick start
        return CompiledFunction(module.chunk_sums, types.FunctionType(signature))
    namespace = chunk_sums_namespace(value, gradient, jac_method, n_params, _fast_exp(value))
    exec(compile(_point_source(jac_method, n_params), "<autofit fused point>", "exec"),  # noqa: S102
         namespace)
    namespace["point"] = namespace["_inline"](namespace["point"])
    exec(compile(_chunk_source(n_params), "<autofit fused chunk>", "exec"), namespace)  # noqa: S102
    compiled = numba.njit(signature, error_model="numpy", fastmath=FASTMATH)(
        namespace["chunk_sums"])
    return CompiledFunction(compiled, types.FunctionType(signature))


def chunk_length(n_points: int) -> int:
    """Points per chunk: at most CHUNK, in a number of chunks that is a multiple of
    CHUNKS_MULTIPLE, so that a pass over a few chunks keeps 2, 4 or 8 threads equally busy
    (10,000 points: 8 chunks of 1,250, where 3 of 4,096 gave one of two threads two chunks
    and the other one), and the order of the sums, so every result, does not depend on
    the number of threads."""
    if n_points <= CHUNK:
        return max(n_points, 1)
    n_chunks = -(-n_points // CHUNK)
    n_chunks = -(-n_chunks // CHUNKS_MULTIPLE) * CHUNKS_MULTIPLE
    return -(-n_points // n_chunks)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _sums_per_chunk(chunk_sums, estimator, weighing, x, y, w, p, lower, upper, chunk,
                    partial):
    n_params = p.shape[0]
    n_chunks = partial.shape[0]
    n_blocks = min(n_chunks, BLOCKS)
    for b in numba.prange(n_blocks):
        jac = np.empty((2 * n_params + 3, chunk))
        work_p = np.empty(n_params)
        for c in range(b * n_chunks // n_blocks, (b + 1) * n_chunks // n_blocks):
            chunk_sums(x, y, w, c * chunk, p, lower, upper, jac, work_p, partial[c],
                       estimator, weighing)


@numba.njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def _evaluate(chunk_sums, estimator, weighing, x, y, w, p, lower, upper, chunk, partial,
              g, h, work):
    # chi2 (inf if it, g or h is not finite); g and h written in place (h weighed as
    # ``weighing`` says: with WEIGH_INFORMATION, a robust loss's information matrix).
    # ``work``: the driver's arrays, allocated once per fit (a 100-point fit's 8 passes
    # allocated 24 arrays, ~20% of its time).
    n_params = p.shape[0]
    n_sums = partial.shape[1]
    jac, work_p, total = work
    if partial.shape[0] == 1:
        # One chunk: no parallel launch (waking the threads costs more than a small pass).
        chunk_sums(x, y, w, 0, p, lower, upper, jac, work_p, partial[0], estimator,
                   weighing)
    else:
        _sums_per_chunk(chunk_sums, estimator, weighing, x, y, w, p, lower, upper, chunk,
                        partial)
    total[:] = 0.0
    for c in range(partial.shape[0]):
        for s in range(n_sums):
            total[s] += partial[c, s]
    finite = math.isfinite(total[0])
    index = 1 + n_params
    for a in range(n_params):
        g[a] = total[1 + a]
        finite = finite and math.isfinite(g[a])
        for b in range(a + 1):
            h[a, b] = total[index]
            h[b, a] = total[index]
            finite = finite and math.isfinite(total[index])
            index += 1
    return total[0] if finite else math.inf


_cholesky_factor = numba.njit(inline="always", error_model="numpy", fastmath=FASTMATH)(
    linalg.cholesky_factor)
_cholesky_substitute = numba.njit(inline="always", error_model="numpy", fastmath=FASTMATH)(
    linalg.cholesky_substitute)
_damped_system = numba.njit(inline="always", error_model="numpy", fastmath=FASTMATH)(
    linalg.damped_system)


@numba.njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def _cholesky_solve(h, g, scale_squared, damping, active, step, system, rhs):
    # (h + damping diag(scale_squared)) step = g over the active parameters (step 0 for the
    # others: an identity row and column); False when a pivot is not > 0 (as the
    # reference's Cholesky). ``system`` and ``rhs``: the driver's work arrays.
    n_params = g.shape[0]
    _damped_system(h, g, scale_squared, damping, active, system, rhs, n_params)
    if not _cholesky_factor(system, n_params):
        return False
    _cholesky_substitute(system, rhs, step, n_params)
    return True


def _solve(chunk_address, estimator, cost, x, y, w, p0, lower, upper, ftol, xtol, gtol,
           max_nfev, chunk):
    chunk_sums = _chunk_sums_at(chunk_address, x)
    n_params = p0.shape[0]
    n_sums = 1 + n_params + n_params * (n_params + 1) // 2
    partial = np.empty(((y.shape[0] + chunk - 1) // chunk, n_sums))
    p = np.minimum(np.maximum(p0, lower), upper)
    g = np.empty(n_params)
    h = np.empty((n_params, n_params))
    trial_g = np.empty(n_params)
    trial_h = np.empty((n_params, n_params))
    step = np.empty(n_params)
    trial = np.empty(n_params)
    system = np.empty((n_params, n_params))
    rhs = np.empty(n_params)
    active = np.empty(n_params, dtype=np.bool_)
    # The single-chunk pass's work arrays (a parallel pass allocates its own per block).
    work = (np.empty((2 * n_params + 3, chunk if partial.shape[0] == 1 else 1)),
            np.empty(n_params), np.empty(n_sums))
    # The fit's passes weigh a robust loss's points by its safe curvature at every step
    # (lm_batch's Newton weighing took a single fit no fewer passes). As a plain int:
    # int() drops numba's literal type (each literal value compiled _evaluate and its
    # parallel pass once more, ~2 s of the driver's compilation each).
    weighing = int(WEIGH_CURVATURE)
    chi2 = _evaluate(chunk_sums, estimator, weighing, x, y, w, p, lower, upper, chunk,
                     partial, g, h, work)
    nfev = cost
    if not math.isfinite(chi2):
        return p, chi2, NONFINITE, nfev, 0, h
    scale_squared = np.empty(n_params)
    for a in range(n_params):
        scale_squared[a] = h[a, a]
    damping = BATCH_INITIAL_DAMPING
    n_iter = 0
    status = RUNNING
    while status == RUNNING:
        cosine = 0.0
        for a in range(n_params):
            active[a] = _is_active(p[a], g[a], lower[a], upper[a], True)
            if active[a] and h[a, a] > 0.0:
                cosine = max(cosine, abs(g[a]) / (math.sqrt(h[a, a]) * math.sqrt(chi2)))
        if chi2 == 0.0:
            status = CONVERGED_FTOL
            break
        if cosine <= gtol:
            status = CONVERGED_GTOL
            break
        if _cholesky_solve(h, g, scale_squared, 0.0, active, step, system, rhs):
            if _unseen_step_ends(step, g, active, scale_squared, p, chi2, ftol):
                for a in range(n_params):
                    trial[a] = min(max(p[a] + step[a], lower[a]), upper[a])
                p = trial
                status = CONVERGED_FTOL
                break
        if nfev >= max_nfev:
            status = MAX_NFEV
            break
        if not _cholesky_solve(h, g, scale_squared, damping, active, step, system, rhs):
            damping, status = _step_not_tried(damping, SINGULAR)
            continue
        small_step = _clip_step(p, step, lower, upper, scale_squared, xtol, trial)
        trial_chi2 = _evaluate(chunk_sums, estimator, weighing, x, y, w, trial, lower,
                               upper, chunk, partial, trial_g, trial_h, work)
        nfev += cost
        n_iter += 1
        predicted = _predicted_reduction(h, step, scale_squared, damping)
        accepted, status, damping = _judge_trial(chi2, trial_chi2, predicted, small_step, ftol,
                                                 damping)
        if accepted:
            chi2 = trial_chi2
            p, trial = trial, p
            g, trial_g = trial_g, g
            h, trial_h = trial_h, h
            for a in range(n_params):
                scale_squared[a] = max(scale_squared[a], h[a, a])
    if estimator != ESTIMATOR_LSE:
        # A robust loss's information: one more pass (not counted in nfev, as in the
        # reference); least squares' is its last h.
        robust_information = np.empty((n_params, n_params))
        _evaluate(chunk_sums, estimator, int(WEIGH_INFORMATION), x, y, w, p, lower, upper,
                  chunk, partial, trial_g, robust_information, work)
        return p, chi2, status, nfev, n_iter, robust_information
    return p, chi2, status, nfev, n_iter, h


_driver_lock = threading.Lock()
_DRIVER: list = []


def _driver():
    """The LM driver of the fused pass, compiled once (and kept in numba's disk cache) for
    every model: it takes the address of the model's ``chunk_sums`` (a first-class
    function rebuilt inside, :func:`autofit.numba.first_class.function_at_address`)."""
    with _driver_lock:
        if not _DRIVER:
            from numba import types

            f8, i8 = types.float64, types.int64
            vector, matrix = f8[::1], f8[:, ::1]
            _DRIVER.append(numba.njit((i8, i8, i8, matrix, vector,
                                       vector, vector, vector, vector, f8, f8, f8, i8, i8),
                                      cache=True, error_model="numpy",
                                      fastmath=FASTMATH)(_solve))
    return _DRIVER[0]


def build_solver(value, gradient, jac_method, n_params):
    """``solve(x, y, w, p0, lower, upper, ftol, xtol, gtol, max_nfev, estimator)`` for these
    point functions: the compiled ``lm_fused`` (returns its six outputs), for every
    estimator."""
    chunk_sums = build_chunk_sums(value, gradient, jac_method, n_params)
    cost = evaluations_per_pass(jac_method, n_params)
    driver = _driver()

    def solve(x, y, w, p0, lower, upper, ftol, xtol, gtol, max_nfev, estimator):
        # chunk_sums, held by this closure, keeps the machine code at its address alive.
        return driver(chunk_sums.address, estimator, cost, x, y, w, p0, lower, upper, ftol,
                      xtol, gtol, max_nfev, chunk_length(y.shape[0]))

    return solve


_SOLVERS: dict = {}


def _solver_key(value, gradient, jac_method, n_params):
    return (value, gradient if jac_method == JAC_ANALYTIC else None, jac_method, n_params)


def solver(value, gradient, jac_method, n_params):
    """The compiled solver for these point functions (built once per process; every
    estimator runs on it)."""
    key = _solver_key(value, gradient, jac_method, n_params)
    if key not in _SOLVERS:
        _SOLVERS[key] = build_solver(value, gradient, jac_method, n_params)
    return _SOLVERS[key]


def is_compiled(value, gradient, jac_method, n_params) -> bool:
    """Whether :func:`solver` has these point functions compiled (it compiles nothing)."""
    return _solver_key(value, gradient, jac_method, n_params) in _SOLVERS


@implements("lm_fused")
def lm_fused(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, ftol, xtol,
             gtol, max_nfev, estimator=ESTIMATOR_LSE):
    require_jac_method("lm_fused", "numba", jac_method)
    estimator = fused_estimator(estimator)
    functions = required_point_functions(model, jacobian, jac_method, "lm_fused")
    solve = solver(*functions, jac_method, p0.shape[0])
    ftol = max(float(ftol), chi2_rounding(ydata.shape[0]))
    params, chi2, status, nfev, n_iter, information = solve(
        np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(ydata, np.float64),
        np.ascontiguousarray(weights, np.float64), np.asarray(p0, np.float64),
        np.asarray(lower, np.float64), np.asarray(upper, np.float64), float(ftol),
        float(xtol), float(gtol), int(max_nfev), int(estimator))
    return params, float(chi2), int(status), int(nfev), int(n_iter), information
