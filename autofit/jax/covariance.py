"""Parameter covariance from the Jacobian or the information matrix (JAX).

The rule of :mod:`autofit.original.covariance` with fixed shapes: singular values below
the threshold are masked with ``jnp.where`` instead of being removed.
"""

import jax.numpy as jnp

from autofit._codes import EPS
from autofit._declarations import implements
from autofit.jax.compiler import jit

_EPS = EPS


@implements("covariance_from_jacobian")
@jit
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


@implements("covariance_from_information")
@jit
def covariance_from_information(information):
    information = jnp.asarray(information, dtype=float)
    n = information.shape[0]
    finite = jnp.all(jnp.isfinite(information))
    safe = jnp.where(finite, information, 0.0)
    eigenvalues, vectors = jnp.linalg.eigh(safe, symmetrize_input=False)
    cutoff = n * _EPS * jnp.maximum(eigenvalues[-1], 0.0)
    kept = eigenvalues > cutoff
    inverse = jnp.where(kept, 1.0 / jnp.where(kept, eigenvalues, 1.0), 0.0)
    pcov = (vectors * inverse) @ vectors.T
    return (jnp.where(finite, pcov, jnp.nan),
            jnp.where(finite, jnp.sum(kept, dtype=int), 0))
