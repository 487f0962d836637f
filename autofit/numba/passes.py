"""The passes over the points of numba's batched LM, generated as source for a model's size.

Each pass is unrolled over the (compile-time) number of parameters: the evaluation of χ²,
its gradient and the Gauss-Newton matrix point by point (the GPU) or as vectorisable dot
products over a work array of the fit's gradients (the CPU; blocks of ``TILE`` x ``TILE``
sums beyond ``FUSED_SUMS_MAX_PARAMS`` parameters), the geodesic probe, and the rewriting of
point functions (typed float literals, the vectorisable exp) before they are compiled.
:mod:`autofit.numba.fit_one` and :mod:`autofit.numba.fused` compile them.
"""

from __future__ import annotations

import ast
import inspect
import math
import textwrap

import numpy as np

from autofit._codes import (
    ESTIMATOR_LSE,
    ESTIMATOR_MLE,
    ROBUST_LOSSES,
    WEIGH_INFORMATION,
    WEIGH_NEWTON,
)

# Floating-point freedoms for the CPU kernel: reciprocals (a division by a loop-invariant
# parameter becomes one reciprocal per pass) and fused multiply-adds. No reassociation and
# no finite-math assumptions: sums keep their order and nan/inf stay detectable.
FASTMATH = {"arcp", "contract"}



def _evaluate_source(n_params: int) -> str:
    """Source of the pass over the points, unrolled over ``n_params`` parameters.

    ``evaluate(x, y, w, p, lower, upper, free, estimator, g, h, jac, work_p, weighing)``
    returns ``(chi2, positive)``: χ² (inf when not finite), and False when the Poisson model
    was <= 0 at a used point; it writes the gradient ``g = -½ ∂χ²/∂p`` and the
    Gauss-Newton matrix ``h``, its points weighed as ``weighing`` says (an int,
    :func:`autofit._rules.point_weight`; with ``WEIGH_INFORMATION`` the matrix whose inverse
    is the covariance: the Poisson Fisher information, or scipy's ``Σ w² max(rho1 + 2 rho2
    z, eps) J Jᵀ`` for a robust loss). The sums are scalar locals rather than array elements, which
    lets the compiler keep them in registers: with a loop over a run-time number of
    parameters, the pass cost 4x more.
    """
    n = range(n_params)
    pairs = [(a, b) for a in n for b in range(a + 1)]
    lines = [
        "def evaluate(x, y, w, p, lower, upper, free, estimator, g, h, jac, work_p, weighing):",
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
        f"            weight_h = wi / f if weighing == {WEIGH_INFORMATION} else wi * yi / (f * f)",
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
    the weight in H is ``w²`` times the point's weight that ``weighing`` chooses
    (:func:`_rules.point_weight`)."""
    pad = " " * indent
    return [pad + line for line in (
        "r = wi * (yi - f)",
        "z = r * r",
        "rho, rho1, rho2, curvature = robust_loss(z, estimator)",
        "chi2 += rho",
        "weight_g = wi * rho1 * r",
        "weight_h = wi * wi * point_weight(rho1, rho2, z, curvature, weighing)",
    )]


def _block_evaluate_source(n_params: int, forward: bool = False) -> str:
    """The pass of :func:`_evaluate_source` organised for SIMD on a CPU.

    First a loop over the points writes each point's gradient to ``jac[:n_params, i]``
    and its two weights (of the gradient and of the Gauss-Newton matrix) to
    ``jac[n_params, i]`` and ``jac[n_params + 1, i]``; then each sum is a dot product over
    the points (``_dot2``, compiled with reassociation so that they vectorise).
    The sums are the same as the point-by-point pass's, in another order. Poisson MLE has a
    loop of its own (``_mle_pass``); a robust loss takes the least-squares loop and then
    reweighs its rows (:func:`robust_rows`), so that loop carries no branch of either.

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
        "def evaluate(x, y, w, p, lower, upper, free, estimator, g, h, jac, work_p, weighing):",
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
        # The rows as plain ints (literals would compile it once per model size).
        f"            chi2 = robust_rows(jac, int({wg}), int({wh}), int({sq}), int({vr}),",
        "                               estimator, weighing)",
        "    else:",
        "        chi2 = _mle_pass(x, y, w, params, lower, upper, free, jac, work_p, weighing)",
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
        "def _mle_pass(x, y, w, params, lower, upper, free, jac, work_p, weighing):",
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
        f"        jac[{wh}, i] = wi / f if weighing == {WEIGH_INFORMATION} else wi * yi / (f * f)",
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
            "        h = relative_step(p[j], forward_step)",
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


# Reassociation lets the dot products over the points run in SIMD lanes (rounding-level
# changes only); nothing else is compiled with it.
_REDUCE_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
ROBUST_CODES = tuple(sorted(ROBUST_LOSSES.values()))


def _generated_evaluate(n_params, point, dtype=np.float64, block=False, inline=None,
                        value=None, forward_step=None, tag="", robust_loss=None,
                        relative_step=None):
    import numba

    forward = value is not None
    source = (_block_evaluate_source(n_params, forward) if block
              else _evaluate_source(n_params))
    tree = ast.parse(source)
    if np.dtype(dtype) != np.float64:
        tree = ast.fix_missing_locations(_TypedFloatLiterals().visit(tree))
    # __name__: numba's disk cache rebuilds each compiled function's environment from an
    # importable module (the CPU kernels of built-in models are cached, this pass included).
    from autofit import _rules

    namespace = {"__name__": __name__, "math": math, "point": point,
                 "robust_loss": robust_loss, "ESTIMATOR_LSE": ESTIMATOR_LSE,
                 "point_weight": (inline or numba.njit)(with_literals_of(_rules.point_weight,
                                                                          dtype)),
                 "ESTIMATOR_MLE": ESTIMATOR_MLE, "_real": numba.from_dtype(np.dtype(dtype))}
    if block:
        # Not inline="always": numba would inline the IR and compile it without these flags.
        reduce = _tagging(numba.njit(error_model="numpy", fastmath=_REDUCE_FASTMATH), tag)
        namespace["_dot2"] = reduce(_dot2)
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
        namespace["_mle_pass"] = _tagging(inline or numba.njit, tag)(namespace["_mle_pass"])
        namespace["robust_rows"] = robust_rows(dtype)
    if forward:
        # Not inlined: a call passes the perturbed parameters as scalars, which the
        # compiler then knows the work array cannot alias (the loop over points vectorises).
        namespace.update(value=value, forward_step=forward_step,
                         relative_step=relative_step)
        for name in ("_difference_row", "_forward_rows"):
            namespace[name] = _tagging(numba.njit(error_model="numpy", fastmath=FASTMATH),
                                       tag)(namespace[name])
    return namespace["evaluate"]


def _robust_rows_source() -> str:
    """``robust_rows(jac, wg, wh, sq, rho_row, estimator, weighing)``: from the least-squares
    rows of a CPU pass (row ``wg`` w r, ``wh`` w², ``sq`` r²) to the loss's: the gradient
    weight w rho1 r, the weight in H w² c, c the point's weight that ``weighing`` chooses
    (:func:`_rules.point_weight`), in row ``sq`` the geodesic probe's offset w (rho1 - c) r
    (:func:`_rules.geodesic_probe_weight`) and in row ``rho_row`` the loss; returns Σ rho.
    Zero columns (unused points) stay zero. One loop per loss, with its code a literal: no
    branch on the loss and no running sum in the loop (rho is summed apart), so that it
    runs over several points at once."""
    lines = ["def robust_rows(jac, wg, wh, sq, rho_row, estimator, weighing):"]
    for code in ROBUST_CODES:
        lines += [f"    {'if' if code == ROBUST_CODES[0] else 'elif'} estimator == {code}:",
                  f"        if weighing == {WEIGH_NEWTON}:",
                  f"            _reweigh_{code}_newton(jac, wg, wh, sq, rho_row, weighing)",
                  "        else:",
                  f"            _reweigh_{code}(jac, wg, wh, sq, rho_row, weighing)"]
    lines.append("    return _sum(jac, rho_row)")
    # Newton's weighing has a loop of its own, with the weighing a literal: the safe
    # curvature, which it does not use (a division by rho), is then not computed.
    for code in ROBUST_CODES:
        for suffix, weighing in (("", "weighing"), ("_newton", f"{WEIGH_NEWTON}")):
            lines += [
                "",
                "",
                f"def _reweigh_{code}{suffix}(jac, wg, wh, sq, rho_row, weighing):",
                "    for i in range(jac.shape[1]):",
                "        z = jac[sq, i]",
                f"        rho, rho1, rho2, c = robust_loss_{code}(z, {code})",
                f"        c = point_weight(rho1, rho2, z, c, {weighing})",
                "        jac[rho_row, i] = rho",
                "        wi2 = jac[wh, i]",
                "        w_r = jac[wg, i]",
                "        jac[wg, i] = w_r * rho1",
                "        jac[sq, i] = w_r * (rho1 - c)",
                "        jac[wh, i] = wi2 * c"]
    return "\n".join(lines) + "\n"


def _robust_rows_module(dtype, cache: bool) -> str:
    """A module's source defining :func:`_robust_rows_source`'s functions for ``dtype``
    (float literals of that type), compiled with numba's ``cache`` (it does not depend on
    the model: one compilation serves every CPU pass, and a disk cache every process)."""
    tree = ast.parse(_robust_rows_source())
    if np.dtype(dtype) != np.float64:
        tree = ast.fix_missing_locations(_TypedFloatLiterals().visit(tree))
    jit = f"numba.njit(cache={cache}, error_model='numpy', fastmath=FASTMATH)"
    return "\n".join([
        f'"""autofit: the robust losses\' rows of the CPU passes, {np.dtype(dtype).name} '
        '(generated; safe to delete)."""',
        "import numba",
        "",
        "from autofit.numba.passes import robust_rows_globals",
        "",
        f"globals().update(robust_rows_globals({np.dtype(dtype).name!r}))",
        "",
        "",
        ast.unparse(tree),
        "",
        "",
        inspect.getsource(_sum),
        f"_sum = numba.njit(cache={cache}, error_model='numpy', "
        "fastmath=_REDUCE_FASTMATH)(_sum)",
        *(f"_reweigh_{code}{suffix} = {jit}(_reweigh_{code}{suffix})" for code in ROBUST_CODES
          for suffix in ("", "_newton")),
        f"robust_rows = {jit}(robust_rows)",
        "",
    ])


def robust_rows_globals(dtype_name: str) -> dict:
    """What :func:`_robust_rows_module`'s source takes from here: each loss alone (with the
    dtype's literals and, in float64, the vectorisable log1p and atan), the flags, ``_real``."""
    import numba

    from autofit import _rules

    dtype = np.dtype(dtype_name)
    return {"FASTMATH": FASTMATH, "_REDUCE_FASTMATH": _REDUCE_FASTMATH,
            "_real": numba.from_dtype(dtype),
            "point_weight": numba.njit(inline="always", error_model="numpy", fastmath=FASTMATH)(
                with_literals_of(_rules.point_weight, dtype)),
            **robust_losses(numba.njit(inline="always", error_model="numpy",
                                       fastmath=FASTMATH), dtype, True)}


_ROBUST_ROWS: dict = {}


def robust_rows(dtype=np.float64):
    """``robust_rows(jac, wg, wh, sq, rho_row, estimator, weighing)`` (:func:`_robust_rows_source`)
    for ``dtype``, compiled once for every model: each model's batch kernel, each Jacobian
    method and the fused pass call the same one. From a generated module in the kernels'
    disk cache (:mod:`autofit.numba.generated`), so that only the first process ever
    compiles it (1.5 s); compiled in this process where that directory cannot be written."""
    key = np.dtype(dtype)
    if key not in _ROBUST_ROWS:
        from autofit.numba.generated import import_generated

        module = import_generated("autofit_rows", _robust_rows_module(key, cache=True))
        if module is None:
            namespace = {"__name__": __name__}
            exec(compile(_robust_rows_module(key, cache=False), "<autofit robust rows>",  # noqa: S102
                         "exec"), namespace)
            _ROBUST_ROWS[key] = namespace["robust_rows"]
        else:
            _ROBUST_ROWS[key] = module.robust_rows
    return _ROBUST_ROWS[key]


def _generated_probe_rows(n_params, value, dtype=np.float64, tag=""):
    """``probe_rows(x, y, w, q, free, estimator, jac, g_probe)``: ``g_probe = J_w(p)ᵀ W (y -
    f(q))`` from the Jacobian rows ``jac[:n_params]`` of the CPU pass at p (zero at unused
    points), with row ``n_params`` as scratch; for a robust loss each point weighs
    ``w² c (y - f(q)) + w (rho1 - c) r(p)`` (:func:`autofit._rules.geodesic_probe_weight`),
    ``w² c`` and the offset from rows ``n_params + 1`` and ``n_params + 2`` of the pass at
    p."""
    import numba

    n = range(n_params)
    row, weight, offset = n_params, n_params + 1, n_params + 2
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
        f"            jac[{row}, i] = jac[{weight}, i] * (y[i] - value(x, i, params)) "
        f"+ jac[{offset}, i]",
        "            n_unused += 1 if w[i] == 0.0 else 0",
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
    namespace = {"__name__": __name__, "value": value, "ESTIMATOR_LSE": ESTIMATOR_LSE,
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
    """Replace ``math.exp(...)``, ``math.log1p(...)`` and ``math.atan(...)`` by ``_vexp``,
    ``_vlog1p`` and ``_vatan`` (:mod:`autofit.numba.fastexp`)."""

    NAMES = {"exp": "_vexp", "log1p": "_vlog1p", "atan": "_vatan"}

    def visit_Call(self, node):
        self.generic_visit(node)
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr in self.NAMES
                and isinstance(f.value, ast.Name) and f.value.id == "math"):
            node.func = ast.copy_location(ast.Name(self.NAMES[f.attr], ast.Load()), f)
        return node


class _OneBranch(ast.NodeTransformer):
    """Cut every ``if name == CONSTANT: ... elif ...`` chain to the branch that ``name``'s
    known ``value`` takes (the constants are looked up in ``namespace``)."""

    def __init__(self, name, value, namespace):
        self.name, self.value, self.namespace = name, value, namespace

    def visit_If(self, node):
        test = node.test
        if (isinstance(test, ast.Compare) and len(test.ops) == 1
                and isinstance(test.ops[0], ast.Eq) and isinstance(test.left, ast.Name)
                and test.left.id == self.name):
            constant = eval(compile(ast.Expression(test.comparators[0]), "<branch>", "eval"),  # noqa: S307
                            dict(self.namespace))
            taken = node.body if constant == self.value else node.orelse
            kept = []
            for statement in taken:
                visited = self.visit(statement)
                kept.extend(visited if isinstance(visited, list) else [visited])
            return kept
        return self.generic_visit(node)


def with_literals_of(function, dtype, fast_exp=False, estimator=None):
    """``function`` recompiled from its source for the working dtype.

    Its float literals become scalars of ``dtype`` (float32 only: in float64 they already
    are), and with ``fast_exp`` (float64 CPU kernels) ``math.exp``, ``math.log1p`` and
    ``math.atan`` become the vectorisable :func:`autofit.numba.fastexp.vexp`,
    :func:`~autofit.numba.fastexp.vlog1p` and :func:`~autofit.numba.fastexp.vatan`. With
    ``estimator`` (a code), every ``if estimator == ...`` chain keeps only that code's
    branch: where the code is a literal, numba then inlines and compiles one loss instead
    of all of them. The identity when there is nothing to change, and for functions whose
    source cannot be read (they then run unchanged: correct, slower).
    """
    import numba

    float32 = np.dtype(dtype) != np.float64
    fast_exp = fast_exp and not float32
    if not (float32 or fast_exp or estimator is not None):
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
    if estimator is not None:
        tree = _OneBranch("estimator", estimator, function.__globals__).visit(tree)
    if float32:
        tree = _TypedFloatLiterals().visit(tree)
    if fast_exp:
        from autofit.numba.fastexp import vatan, vexp, vlog1p

        tree = _VectorisableExp().visit(tree)
    tree = ast.fix_missing_locations(tree)
    namespace = dict(function.__globals__)
    for name, cell in zip(function.__code__.co_freevars, function.__closure__ or (),
                          strict=True):
        namespace[name] = cell.cell_contents
    namespace["_real"] = numba.from_dtype(np.dtype(dtype))
    if fast_exp:
        namespace["_vexp"] = vexp
        namespace["_vlog1p"] = vlog1p
        namespace["_vatan"] = vatan
    exec(compile(tree, inspect.getsourcefile(function) or "<autofit>", "exec"),  # noqa: S102
         namespace)
    return namespace[definition.name]


def robust_losses(decorate, dtype, fast_exp) -> dict:
    """``{"robust_loss_<code>": function}``: :func:`autofit._rules.robust_loss` for each
    robust loss code alone (:func:`with_literals_of`), compiled by ``decorate``, for the
    generated passes that call a loss by its literal code (each inlined copy is then one
    loss, not five: a batch kernel compiled ~4 s faster)."""
    from autofit import _rules

    return {f"robust_loss_{code}": decorate(with_literals_of(_rules.robust_loss, dtype,
                                                             fast_exp, estimator=code))
            for code in ROBUST_CODES}


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
