"""The small linear algebra of numba's batched and fused LM (one for both).

Plain functions on arrays, compiled by their callers (``numba.njit`` inlined into the CPU
kernels, ``numba.cuda.jit(device=True)`` on a GPU): they allocate nothing and work on the
leading ``n`` x ``n`` block, ``n`` being a compile-time constant where the caller has one.
The damped system is :func:`autofit.original.linalg.damped_system`'s.
"""

import math


def cholesky_factor(a, n):
    """Factor ``a[:n, :n]`` (symmetric positive definite; its lower triangle is read) in
    place into its lower Cholesky factor. False when a pivot is not > 0 or not finite: the
    solve is then abandoned, as in the reference."""
    for j in range(n):
        pivot = a[j, j]
        for k in range(j):
            pivot -= a[j, k] * a[j, k]
        if not (pivot > 0.0 and math.isfinite(pivot)):
            return False
        a[j, j] = math.sqrt(pivot)
        for i in range(j + 1, n):
            s = a[i, j]
            for k in range(j):
                s -= a[i, k] * a[j, k]
            a[i, j] = s / a[j, j]
    return True


def cholesky_substitute(chol, b, z, n):
    """Solve ``(chol cholᵀ) z = b`` with the factor from :func:`cholesky_factor`."""
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= chol[i, k] * z[k]
        z[i] = s / chol[i, i]
    for i in range(n - 1, -1, -1):
        s = z[i]
        for k in range(i + 1, n):
            s -= chol[k, i] * z[k]
        z[i] = s / chol[i, i]


def damped_system(h, g, scale_squared, damping, active, system, rhs, n):
    """Write ``H + λ diag(scale_squared)`` over the ``active`` parameters into
    ``system[:n, :n]`` and ``g`` into ``rhs``; a held parameter gets an identity row and
    column and a right-hand side of 0, so that its step is exactly 0."""
    for a in range(n):
        for b in range(n):
            system[a, b] = h[a, b] if (active[a] and active[b]) else 0.0
        if active[a]:
            system[a, a] = h[a, a] + damping * scale_squared[a]
            rhs[a] = g[a]
        else:
            system[a, a] = 1.0
            rhs[a] = 0.0
