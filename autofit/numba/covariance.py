"""Parameter covariance from the Jacobian or the information matrix (numba)."""

import numpy as np
from numba import njit

from autofit._codes import EPS
from autofit._declarations import implements

_EPS = EPS


@implements("covariance_from_jacobian")
@njit(cache=True, error_model="numpy")
def covariance_from_jacobian(jac):
    _, singular_values, vt = np.linalg.svd(jac, full_matrices=False)
    threshold = _EPS * max(jac.shape[0], jac.shape[1]) * singular_values[0]
    n_params = vt.shape[1]
    inverse_squares = np.zeros(singular_values.shape[0])
    rank = 0
    for k in range(singular_values.shape[0]):
        if singular_values[k] > threshold:
            inverse_squares[k] = 1.0 / singular_values[k] ** 2
            rank += 1
    pcov = np.zeros((n_params, n_params))
    for k in range(singular_values.shape[0]):
        for i in range(n_params):
            vi = vt[k, i] * inverse_squares[k]
            for j in range(n_params):
                pcov[i, j] += vi * vt[k, j]
    return pcov, rank


@implements("covariance_from_information")
@njit(cache=True, error_model="numpy")
def covariance_from_information(information):
    n = information.shape[0]
    for i in range(n):
        for j in range(n):
            if not np.isfinite(information[i, j]):
                return np.full((n, n), np.nan), 0
    # eigh reads the lower triangle, as NumPy's.
    lower = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            lower[i, j] = information[i, j]
            lower[j, i] = information[i, j]
    eigenvalues, vectors = np.linalg.eigh(lower)
    cutoff = n * _EPS * max(eigenvalues[n - 1], 0.0)
    pcov = np.zeros((n, n))
    rank = 0
    for k in range(n):
        if eigenvalues[k] > cutoff:
            rank += 1
            inverse = 1.0 / eigenvalues[k]
            for i in range(n):
                vi = vectors[i, k] * inverse
                for j in range(n):
                    pcov[i, j] += vi * vectors[j, k]
    return pcov, rank
