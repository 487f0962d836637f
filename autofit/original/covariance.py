"""Parameter covariance from the Jacobian (NumPy reference)."""

import numpy as np

from autofit._declarations import implements


@implements("covariance_from_jacobian")
def covariance_from_jacobian(jac):
    _, singular_values, vt = np.linalg.svd(jac, full_matrices=False)
    threshold = np.finfo(np.float64).eps * max(jac.shape) * singular_values[0]
    kept = singular_values > threshold
    inverse_squares = np.where(kept, 1.0 / np.where(kept, singular_values, 1.0) ** 2, 0.0)
    pcov = (vt.T * inverse_squares) @ vt
    return pcov, int(np.sum(kept))
