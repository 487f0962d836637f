"""The small linear algebra of the NumPy reference's Levenberg-Marquardt loops.

The order of every sum is the one numba's kernels follow (:mod:`autofit.numba.linalg`).
"""

import numpy as np


def cholesky_solve(a, b):
    """Solve ``a z = b`` for symmetric positive-definite ``a`` ``(n, n)``: ``(z, ok)``, ok
    False (and z 0) when a pivot is not > 0 or not finite."""
    n = b.shape[0]
    chol = np.zeros((n, n))
    for j in range(n):
        pivot = a[j, j] - chol[j, :j] @ chol[j, :j]
        if not pivot > 0.0 or not np.isfinite(pivot):
            return np.zeros(n), False
        chol[j, j] = np.sqrt(pivot)
        for i in range(j + 1, n):
            chol[i, j] = (a[i, j] - chol[i, :j] @ chol[j, :j]) / chol[j, j]
    z = np.empty(n)
    for i in range(n):
        z[i] = (b[i] - chol[i, :i] @ z[:i]) / chol[i, i]
    for i in range(n - 1, -1, -1):
        z[i] = (z[i] - chol[i + 1:, i] @ z[i + 1:]) / chol[i, i]
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
