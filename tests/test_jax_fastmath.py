"""jax's vectorisable arctan (autofit.jax.fastmath) against numpy.arctan."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")


def test_arctan_within_four_ulps_over_the_whole_range():
    from autofit.jax.fastmath import arctan

    rng = np.random.default_rng(2)
    magnitudes = np.concatenate([10.0 ** rng.uniform(-320.0, 308.0, 300_000),
                                 rng.uniform(0.0, 3.0, 200_000),
                                 np.linspace(0.40, 0.43, 10_001), np.linspace(0.99, 1.01, 10_001),
                                 [0.0, 1e-8, 0.41421356237309503, 1.0, 1e300,
                                  np.finfo(float).max]])
    x = np.concatenate([magnitudes, -magnitudes])
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(arctan)(x))
    expected = np.arctan(x)
    normal = np.abs(expected) >= np.finfo(float).tiny
    ulps = np.abs(got[normal] - expected[normal]) / np.spacing(np.abs(expected[normal]))
    assert ulps.max() <= 4.0
    assert np.mean(ulps) < 0.2
    # XLA:CPU treats subnormal inputs as 0: the result is subnormal or 0 too.
    assert np.all(np.abs(got[~normal]) < np.finfo(float).tiny)


def test_arctan_special_values():
    from autofit.jax.fastmath import arctan

    with jax.enable_x64(True):
        got = np.asarray(jax.jit(arctan)(np.array([np.nan, np.inf, -np.inf, -0.0])))
    assert np.isnan(got[0])
    np.testing.assert_array_equal(got[1:], [np.pi / 2, -np.pi / 2, 0.0])


def test_the_batch_losses_agree_with_the_numpy_reference():
    # A code as a Python int and as a traced index (one program for every loss) alike.
    from autofit._codes import ROBUST_LOSSES
    from autofit._rules import robust_loss_where
    from autofit.jax import batch

    z = np.concatenate([[0.0, 1e-12, 1e-8, 0.5, 1.0], 10.0 ** np.linspace(-6, 8, 200)])
    for code in ROBUST_LOSSES.values():
        expected = robust_loss_where(np, z, code)
        index = batch.ROBUST_CODES.index(code)
        with jax.enable_x64(True):
            static = jax.jit(lambda z, code=code: batch.robust_loss(z, code))(z)
            traced = jax.jit(lambda z, i: batch.robust_loss(z, batch.TracedLoss(i)))(z, index)
        for got in (static, traced):
            for g, e in zip(got, expected, strict=True):
                np.testing.assert_allclose(np.asarray(g), e, rtol=1e-14, atol=1e-300)


def test_log1p_within_three_ulps_over_the_whole_range():
    from autofit.jax.fastmath import log1p

    rng = np.random.default_rng(1)
    z = np.concatenate([10.0 ** rng.uniform(-300.0, 308.0, 300_000),
                        -(10.0 ** rng.uniform(-300.0, -1e-12, 100_000)),
                        rng.uniform(-1.0, 4.0, 200_000),
                        [0.0, 1e-17, 1.1e-16, 2.2e-16, 1e-8, 0.5, 1.0, 2.0, 1e300,
                         np.finfo(float).max, -0.5, -0.9999999999999999]])
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(log1p)(z))
    expected = np.log1p(z)
    ulps = np.abs(got - expected) / np.spacing(np.abs(expected))
    assert ulps.max() <= 3.0
    assert np.mean(ulps) < 0.1


def test_log1p_special_values():
    from autofit.jax.fastmath import log1p

    with jax.enable_x64(True):
        got = np.asarray(jax.jit(log1p)(np.array([np.nan, np.inf, -np.inf, -1.0, -2.0, -0.0])))
    assert np.isnan(got[0]) and np.isnan(got[2]) and np.isnan(got[4])
    np.testing.assert_array_equal(got[[1, 3, 5]], [np.inf, -np.inf, -0.0])
    assert np.signbit(got[5])
