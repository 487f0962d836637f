"""The vectorisable exp of the CPU batch kernels against numpy.exp over all of float64."""

import numpy as np
import pytest

numba = pytest.importorskip("numba")


@pytest.fixture(scope="module")
def vexp_array():
    from autofit.numba.fastexp import vexp

    @numba.njit
    def apply(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = vexp(x[i])
        return out

    return apply


def test_within_one_ulp_over_the_whole_range(vexp_array):
    x = np.concatenate([np.linspace(-760.0, 720.0, 2_000_001),
                        np.random.default_rng(0).uniform(-50.0, 50.0, 100_000),
                        [0.0, -0.0, 1e-300, -1e-300, 709.78, -745.1, -708.4]])
    with np.errstate(over="ignore"):
        expected = np.exp(x)
    got = vexp_array(x)
    normal = np.isfinite(expected) & (expected > 0)
    ulps = np.abs(got[normal] - expected[normal]) / np.spacing(expected[normal])
    assert ulps.max() <= 1.0
    np.testing.assert_array_equal(got[~normal], expected[~normal])


def test_special_values(vexp_array):
    got = vexp_array(np.array([np.nan, np.inf, -np.inf, 1000.0, -1000.0]))
    assert np.isnan(got[0])
    np.testing.assert_array_equal(got[1:], [np.inf, 0.0, np.inf, 0.0])
