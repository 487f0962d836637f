"""Poisson MLE reaches the Cramér-Rao lower bound on simulated 2-D Gaussian spots.

5,000 spots of 11x11 pixels with Poisson noise: the spread of the fitted centre must be
within 6% of the CRLB, the bound computed from the Fisher information at the true
parameters. Least squares (unweighted) is less efficient on Poisson data, so its spread
is larger: both are checked.
"""

import numpy as np
import pytest

import autofit
from autofit import models
from tests.conftest import installed

N_SPOTS = 5000
TRUE = np.array([200.0, 5.0, 5.0, 1.3, 4.0])  # amplitude, x0, y0, width, offset


def pixel_grid(side=11):
    yy, xx = np.mgrid[0:side, 0:side].astype(float)
    return np.stack([xx.ravel(), yy.ravel()])


def crlb_of_x0(x, params):
    """Cramér-Rao bound on the standard deviation of x0: sqrt(inv(F)[1, 1])."""
    from autofit import original

    mean = original.model_gaussian_2d(x, params)
    jac = original.jacobian_gaussian_2d(x, params)
    fisher = jac.T @ (jac / mean[:, None])
    return float(np.sqrt(np.linalg.inv(fisher)[1, 1]))


@pytest.fixture(scope="module")
def spots():
    x = pixel_grid()
    rng = np.random.default_rng(7)
    truth = np.tile(TRUE, (N_SPOTS, 1))
    truth[:, 1:3] += rng.uniform(-0.5, 0.5, (N_SPOTS, 2))
    mean = np.stack([models.gaussian_2d(x, *t) for t in truth])
    counts = rng.poisson(mean).astype(float)
    return x, counts, truth


def test_mle_spread_is_within_6_percent_of_the_crlb(spots):
    x, counts, truth = spots
    backend = "numba" if installed("numba") else "numpy"
    res = autofit.fit_batch(models.gaussian_2d, x, counts, estimator="mle", backend=backend)
    assert res.converged.mean() > 0.999
    ok = res.converged
    spread = np.std(res.params[ok, 1] - truth[ok, 1])
    bound = np.mean([crlb_of_x0(x, t) for t in truth[ok][:200]])
    ratio = spread / bound
    assert abs(ratio - 1.0) <= 0.06, f"MLE spread / CRLB = {ratio:.3f}"
    # The reported errors are the CRLB at the fitted parameters: their mean matches too.
    assert abs(np.mean(res.errors[ok, 1]) / bound - 1.0) <= 0.06

    lse = autofit.fit_batch(models.gaussian_2d, x, counts, estimator="lse", backend=backend)
    lse_spread = np.std(lse.params[lse.converged, 1] - truth[lse.converged, 1])
    assert lse_spread > spread, "unweighted least squares should not beat MLE on counts"
