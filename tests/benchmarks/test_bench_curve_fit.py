"""curve_fit on each backend against scipy: exponential decay, 1e3 ... 1e6 points.

Opt-in (skipped in the normal test run):

    python -m pytest tests/benchmarks --benchmark-only --benchmark-group-by=param:n_points

Compilation is excluded (one warm-up call per case); jax timings include the transfer back
to NumPy, as a user sees them. Ratios against scipy are written up in
experiments/curve_fit_speed/README.md.
"""

import numpy as np
import pytest
from scipy import optimize

import autofit
from tests.conftest import backend_params, installed

SIZES = (1_000, 10_000, 100_000, 1_000_000)
P0 = (1.0, 1.0, 0.0)


def decay(x, a, b, c):
    return a * np.exp(-b * x) + c


def jax_decay(x, a, b, c):
    import jax.numpy as jnp

    return a * jnp.exp(-b * x) + c


def data(n_points):
    x = np.linspace(0, 5, n_points)
    rng = np.random.default_rng(n_points)
    return x, decay(x, 2.5, 1.3, 0.5) + 0.01 * rng.normal(size=n_points)


@pytest.mark.parametrize("n_points", SIZES)
def test_scipy(benchmark, n_points):
    x, y = data(n_points)
    popt, _ = benchmark(optimize.curve_fit, decay, x, y, p0=P0)
    assert abs(popt[1] - 1.3) < 1e-2


@pytest.mark.parametrize("n_points", SIZES)
@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("model", ["user", "builtin"])
def test_autofit(benchmark, n_points, backend, model):
    x, y = data(n_points)
    if model == "builtin":
        f = autofit.models.exponential_decay
    else:
        f = jax_decay if backend == "jax" else decay
    autofit.curve_fit(f, x, y, p0=P0, backend=backend)  # compile outside the timing
    popt, _ = benchmark(autofit.curve_fit, f, x, y, p0=P0, backend=backend)
    assert abs(popt[1] - 1.3) < 1e-2


def test_backends_installed_for_benchmark():
    assert installed("numpy")
