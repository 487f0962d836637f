"""The small linear algebra of the NumPy reference's Levenberg-Marquardt loops.

The order of every sum is the one numba's kernels follow (:mod:`autofit.numba.linalg`).
"""

import math

import numpy as np


def cholesky_solve(a, b):
    """Solve ``a z = b`` for symmetric positive-definite ``a`` ``(n, n)`` (its lower triangle
    is read): ``(z, ok)``, ok False (and z 0) when a pivot is not > 0 or not finite.

    On Python floats, each sum in the order of numba's loops
    (:func:`autofit.numba.linalg.cholesky_factor`, ``cholesky_substitute``: a product
    subtracted at a time), so that both give the same numbers. A single fit solves a small
    system or two per pass, and NumPy's per-call cost made a 5 x 5 solve 35 us (8 here): a
    fifth of a NumPy-engine fit of a user's model on 3,000 points.
    """
    z, ok = _solve_lists(a.tolist(), b.tolist())
    return np.array(z), ok


def damped_solve(rows, g, scale_squared, damping, active):
    """The solution of ``(H + λ diag(scale_squared)) δ = g`` over the ``active`` parameters
    (held ones get an identity row and a right-hand side of 0: their step is exactly 0),
    for one fit whose ``H`` (``rows``), ``g``, ``scale_squared`` and ``active`` are Python
    lists: ``(δ, ok)``, δ a list; the numbers of
    ``cholesky_solve(*damped_system(...))`` without the arrays between. ``rows`` is not
    changed."""
    n = len(g)
    system = []
    rhs = []
    for a in range(n):
        if active[a]:
            row = [value if active[b] else 0.0 for b, value in enumerate(rows[a])]
            row[a] = row[a] + damping * scale_squared[a]
            rhs.append(g[a])
        else:
            row = [0.0] * n
            row[a] = 1.0
            rhs.append(0.0)
        system.append(row)
    return _solve_lists(system, rhs)


def _solve_lists(rows, z):
    """:func:`cholesky_solve` on lists (``z`` holds b and is overwritten): ``(z, ok)``, z a
    list (zeros where not solved)."""
    n = len(z)
    chol = [[0.0] * n for _ in range(n)]
    for j in range(n):
        chol_j = chol[j]
        pivot = rows[j][j]
        for k in range(j):
            pivot -= chol_j[k] * chol_j[k]
        if not (pivot > 0.0 and math.isfinite(pivot)):
            return [0.0] * n, False
        diagonal = chol_j[j] = math.sqrt(pivot)
        for i in range(j + 1, n):
            chol_i = chol[i]
            s = rows[i][j]
            for k in range(j):
                s -= chol_i[k] * chol_j[k]
            chol_i[j] = s / diagonal
    for i in range(n):
        chol_i = chol[i]
        s = z[i]
        for k in range(i):
            s -= chol_i[k] * z[k]
        z[i] = s / chol_i[i]
    for i in range(n - 1, -1, -1):
        s = z[i]
        for k in range(i + 1, n):
            s -= chol[k][i] * z[k]
        z[i] = s / chol[i][i]
    return z, True


def cholesky_solve_many(a, b):
    """:func:`cholesky_solve` on k systems at once: ``a`` ``(k, n, n)``, ``b`` ``(k, n)``;
    returns ``(k, n)`` solutions (0 where not solved) and ``(k,)`` ok."""
    k, n = b.shape
    chol = np.zeros_like(a)
    ok = np.ones(k, dtype=bool)
    for j in range(n):
        pivot = a[:, j, j] - np.einsum("ki,ki->k", chol[:, j, :j], chol[:, j, :j])
        good = (pivot > 0.0) & np.isfinite(pivot)
        ok &= good
        chol[:, j, j] = np.sqrt(np.where(good, pivot, 1.0))
        for i in range(j + 1, n):
            chol[:, i, j] = (a[:, i, j] - np.einsum("ki,ki->k", chol[:, i, :j],
                                                    chol[:, j, :j])) / chol[:, j, j]
    z = np.empty_like(b)
    for i in range(n):
        z[:, i] = (b[:, i] - np.einsum("ki,ki->k", chol[:, i, :i], z[:, :i])) / chol[:, i, i]
    for i in range(n - 1, -1, -1):
        z[:, i] = (z[:, i] - np.einsum("ki,ki->k", chol[:, i + 1:, i], z[:, i + 1:])
                   ) / chol[:, i, i]
    return np.where(ok[:, None], z, 0.0), ok


def damped_system(h, g, scale_squared, damping, active):
    """``(H + λ diag(scale_squared), g)`` over the ``active`` parameters: held ones get an
    identity row and column and a right-hand side of 0, so that their step is exactly 0.
    One fit (``h`` ``(n, n)``) or many (``(k, n, n)``, ``damping`` ``(k,)``)."""
    system = np.where(active[..., :, None] & active[..., None, :], h, 0.0)
    diagonal = (np.diagonal(h, axis1=-2, axis2=-1)
                + np.asarray(damping)[..., None] * scale_squared)
    index = np.arange(g.shape[-1])
    system[..., index, index] = np.where(active, diagonal, 1.0)
    return system, np.where(active, g, 0.0)
