"""Parameter covariance from the Jacobian (JAX).

The rule of :mod:`autofit.original.covariance` with fixed shapes: singular values below
the threshold are masked with ``jnp.where`` instead of being removed.
"""

import jax
import jax.numpy as jnp
import numpy as np

from autofit._declarations import implements

_EPS = float(np.finfo(np.float64).eps)


@implements("covariance_from_jacobian")
@jax.jit
def covariance_from_jacobian(jac):
    jac = jnp.asarray(jac, dtype=float)
    _, singular_values, vt = jnp.linalg.svd(jac, full_matrices=False)
    # scipy's rule. Note that max(jac.shape) counts every row, so a Jacobian padded with
    # zero rows gets a larger threshold than the unpadded one.
    threshold = _EPS * max(jac.shape) * singular_values[0]
    kept = singular_values > threshold
    inverse_squares = jnp.where(kept, 1.0 / jnp.where(kept, singular_values, 1.0) ** 2, 0.0)
    pcov = (vt.T * inverse_squares) @ vt
    return pcov, jnp.sum(kept, dtype=int)
