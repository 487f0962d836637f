"""Parameter covariance from the Jacobian or the information matrix (NumPy reference)."""

import math

import numpy as np

from autofit._codes import EPS
from autofit._declarations import implements


@implements("covariance_from_jacobian")
def covariance_from_jacobian(jac):
    _, singular_values, vt = np.linalg.svd(jac, full_matrices=False)
    threshold = EPS * max(jac.shape) * singular_values[0]
    kept = singular_values > threshold
    inverse_squares = np.where(kept, 1.0 / np.where(kept, singular_values, 1.0) ** 2, 0.0)
    pcov = (vt.T * inverse_squares) @ vt
    return pcov, int(np.sum(kept))


@implements("covariance_from_information")
def covariance_from_information(information):
    n = information.shape[0]
    # A finite sum proves every entry finite in one pass (the full check runs only when it
    # is not); a small fit counts microseconds here.
    if not math.isfinite(information.sum()) and not np.isfinite(information).all():
        return np.full((n, n), np.nan), 0
    eigenvalues, vectors = np.linalg.eigh(information)
    cutoff = n * EPS * max(float(eigenvalues[-1]), 0.0)
    if eigenvalues[0] > cutoff:  # full rank, the common case: two operations
        return (vectors / eigenvalues) @ vectors.T, n
    keep = eigenvalues > cutoff
    inverse = np.where(keep, 1.0 / np.where(keep, eigenvalues, 1.0), 0.0)
    return (vectors * inverse) @ vectors.T, int(np.count_nonzero(keep))
