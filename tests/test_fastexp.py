"""The vectorisable exp of the CPU batch kernels against numpy.exp over all of float64."""

import numpy as np
import pytest

numba = pytest.importorskip("numba")


def _applied(name):
    """The fast function ``name`` of autofit.numba.fastexp over an array, in a compiled loop
    (the kernels' error model: no division check, so the loop vectorises)."""
    from autofit.numba import fastexp

    function = getattr(fastexp, name)

    @numba.njit(error_model="numpy")
    def apply(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = function(x[i])
        return out

    return apply


def assert_within_ulps(got, expected, most, mean):
    """At most ``most`` ulps of ``expected`` apart, ``mean`` on average (subnormal results:
    within 2 of the smallest subnormal)."""
    tiny = np.abs(expected) < np.finfo(float).tiny
    ulps = np.abs(got[~tiny] - expected[~tiny]) / np.spacing(np.abs(expected[~tiny]))
    assert ulps.max() <= most
    assert np.mean(ulps) < mean
    assert np.all(np.abs(got[tiny] - expected[tiny]) <= 2 * 5e-324)


@pytest.fixture(scope="module")
def vexp_array():
    return _applied("vexp")


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


@pytest.fixture(scope="module")
def vlog1p_array():
    return _applied("vlog1p")


def test_vlog1p_within_three_ulps_over_the_whole_range(vlog1p_array):
    rng = np.random.default_rng(1)
    z = np.concatenate([10.0 ** rng.uniform(-323.0, 308.0, 500_000),
                        -(10.0 ** rng.uniform(-323.0, -1e-12, 100_000)),
                        rng.uniform(-1.0, 4.0, 200_000), np.linspace(0.0, 1e-15, 10_001),
                        [0.0, 5e-324, 1e-17, 1.1e-16, 2.2e-16, 1e-8, 0.5, 1.0, 2.0, 1e300,
                         np.finfo(float).max, -0.5, -0.9999999999999999]])
    expected = np.log1p(z)
    assert np.all(np.isfinite(expected))
    assert_within_ulps(vlog1p_array(z), expected, 3.0, 0.1)  # almost always exact


def test_vlog1p_special_values(vlog1p_array):
    got = vlog1p_array(np.array([np.nan, np.inf, -np.inf, -1.0, -2.0, -0.0]))
    assert np.isnan(got[0]) and got[1] == np.inf and np.isnan(got[2])
    assert got[3] == -np.inf and np.isnan(got[4])
    assert got[5] == 0.0 and np.signbit(got[5])  # log1p(-0) is -0, as numpy's


@pytest.fixture(scope="module")
def vatan_array():
    return _applied("vatan")


def test_vatan_within_three_ulps_over_the_whole_range(vatan_array):
    rng = np.random.default_rng(2)
    magnitudes = np.concatenate([10.0 ** rng.uniform(-320.0, 308.0, 500_000),
                                 rng.uniform(0.0, 3.0, 300_000),
                                 np.linspace(0.40, 0.43, 10_001), np.linspace(0.99, 1.01, 10_001),
                                 [0.0, 5e-324, 1e-8, 0.41421356237309503, 1.0, 2.0, 1e300,
                                  np.finfo(float).max]])
    x = np.concatenate([magnitudes, -magnitudes])
    assert_within_ulps(vatan_array(x), np.arctan(x), 3.0, 0.2)  # mostly exact or 1 ulp


def test_vatan_special_values(vatan_array):
    got = vatan_array(np.array([np.nan, np.inf, -np.inf, -0.0]))
    assert np.isnan(got[0])
    np.testing.assert_array_equal(got[1:], [np.pi / 2, -np.pi / 2, 0.0])
