"""curve_fit is a drop-in for scipy.optimize.curve_fit: same arguments, results, meaning."""

import warnings

import numpy as np
import pytest
from scipy import optimize

import autofit
from tests.conftest import backend_params, installed


def decay(x, a, b, c):
    return a * np.exp(-b * x) + c


def decay_jac(x, a, b, c):
    e = np.exp(-b * x)
    return np.stack([e, -a * x * e, np.ones_like(x)], axis=1)


def model_for(backend, name="decay"):
    """The same model written for the backend (jax needs jax.numpy)."""
    if backend != "jax":
        return {"decay": decay, "decay_jac": decay_jac}[name]
    import jax.numpy as jnp

    if name == "decay":
        return lambda x, a, b, c: a * jnp.exp(-b * x) + c
    return lambda x, a, b, c: jnp.stack(
        [jnp.exp(-b * x), -a * x * jnp.exp(-b * x), jnp.ones_like(x)], axis=1)


RNG = np.random.default_rng(42)
X = np.linspace(0, 4, 60)
SIGMA = 0.02 + 0.01 * X
Y = decay(X, 2.5, 1.3, 0.5) + SIGMA * RNG.normal(size=X.size)
P0 = [1.0, 1.0, 0.0]
BACKENDS = backend_params()


def scipy_fit(**kwargs):
    kwargs.setdefault("p0", P0)
    return optimize.curve_fit(decay, X, Y, ftol=1e-14, xtol=1e-14, gtol=1e-15, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("options", [
    {},
    {"sigma": SIGMA},
    {"sigma": SIGMA, "absolute_sigma": True},
    {"sigma": np.diag(SIGMA ** 2)},
    {"bounds": ([0, 0, -1], [10, 10, 1])},
    {"bounds": optimize.Bounds([0, 0, -1], [10, 10, 1])},
    {"sigma": 0.05},
    {"sigma": np.array([0.05]), "absolute_sigma": True},
], ids=["plain", "sigma", "absolute-sigma", "covariance-sigma", "bounds", "Bounds",
        "scalar-sigma", "one-element-sigma"])
def test_same_result_as_scipy(backend, options):
    expected_popt, expected_pcov = scipy_fit(**options)
    popt, pcov = autofit.curve_fit(model_for(backend), X, Y, p0=P0, backend=backend,
                                   **options)
    assert popt.shape == (3,) and pcov.shape == (3, 3)
    np.testing.assert_allclose(popt, expected_popt, rtol=1e-7)
    np.testing.assert_allclose(pcov, expected_pcov, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("jac", ["callable", "2-point", "3-point"])
def test_jac_options(backend, jac):
    expected, _ = scipy_fit()
    jac_arg = model_for(backend, "decay_jac") if jac == "callable" else jac
    popt, pcov = autofit.curve_fit(model_for(backend), X, Y, p0=P0, jac=jac_arg,
                                   backend=backend)
    np.testing.assert_allclose(popt, expected, rtol=1e-6)
    assert np.all(np.isfinite(pcov))


@pytest.mark.parametrize("backend", BACKENDS)
def test_active_bound_is_respected_and_matches_scipy_trf(backend):
    bounds = ([0, 1.4, -1], [10, 10, 1])  # the rate's lower bound is active at the optimum
    expected, _ = optimize.curve_fit(decay, X, Y, p0=[1, 2, 0], bounds=bounds,
                                     ftol=1e-15, xtol=1e-15, gtol=1e-15)
    popt, _ = autofit.curve_fit(model_for(backend), X, Y, p0=[1, 2, 0], bounds=bounds,
                                backend=backend)
    assert popt[1] == 1.4
    np.testing.assert_allclose(popt, expected, rtol=1e-6)


def test_default_p0_from_signature_is_ones_like_scipy():
    def line(x, m, c):
        return m * x + c

    popt, _ = autofit.curve_fit(line, X, 2 * X + 1, backend="numpy")
    np.testing.assert_allclose(popt, [2, 1], rtol=1e-12)
    bounded, _ = autofit.curve_fit(line, X, 2 * X + 1, bounds=([0, 0], [5, 5]),
                                   backend="numpy")
    np.testing.assert_allclose(bounded, [2, 1], rtol=1e-10)


def test_full_output_like_scipy():
    popt, pcov, info, mesg, ier = autofit.curve_fit(decay, X, Y, p0=P0, full_output=True,
                                                    backend="numpy")
    _, _, scipy_info, _, scipy_ier = optimize.curve_fit(decay, X, Y, p0=P0, full_output=True)
    assert ier in (1, 2, 3, 4, 6) and scipy_ier in (1, 2, 3, 4)
    assert isinstance(mesg, str) and mesg
    assert info["fvec"].shape == scipy_info["fvec"].shape
    np.testing.assert_allclose(info["fvec"], decay(X, *popt) - Y, atol=1e-12)
    assert info["nfev"] > 0 and info["backend"] == "numpy"
    assert isinstance(info["status"], autofit.Status) and info["status"].converged


def test_builtin_models_use_analytic_jacobians_and_guesses():
    x = np.linspace(-3, 3, 101)
    for model, truth in [(autofit.models.gaussian, (2.0, 0.3, 0.7, 0.1)),
                         (autofit.models.lorentzian, (-1.5, -0.2, 0.5, 1.0)),
                         (autofit.models.exponential_decay, (3.0, 0.8, 0.2)),
                         (autofit.models.linear, (1.5, -2.0))]:
        y = model(x, *truth)
        popt, _, info, _, _ = autofit.curve_fit(model, x, y, backend="numpy",
                                                full_output=True)
        np.testing.assert_allclose(popt, truth, rtol=1e-8, atol=1e-10)
    poly, _ = autofit.curve_fit(autofit.models.polynomial, x, 1 + 2 * x - x ** 2,
                                p0=[0, 0, 0], backend="numpy")
    np.testing.assert_allclose(poly, [1, 2, -1], atol=1e-10)
    with pytest.raises(ValueError, match="p0"):
        autofit.curve_fit(autofit.models.polynomial, x, x, backend="numpy")


@pytest.mark.parametrize("backend", BACKENDS)
def test_builtin_model_on_every_backend(backend):
    x = np.linspace(-3, 3, 101)
    y = autofit.models.gaussian(x, 2.0, 0.3, 0.7, 0.1) + 0.01 * RNG.normal(size=x.size)
    reference, reference_cov = autofit.curve_fit(autofit.models.gaussian, x, y,
                                                 backend="numpy")
    popt, pcov = autofit.curve_fit(autofit.models.gaussian, x, y, backend=backend)
    np.testing.assert_allclose(popt, reference, rtol=1e-8)
    np.testing.assert_allclose(pcov, reference_cov, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_variable_xdata(backend):
    xy = np.stack(np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9))).reshape(2, -1)
    if backend == "jax":
        import jax.numpy as lib
    else:
        lib = np

    def plane_bump(xy, a, b, c):
        return a * lib.exp(-(xy[0] ** 2 + xy[1] ** 2) / b) + c

    z = 1.5 * np.exp(-(xy[0] ** 2 + xy[1] ** 2) / 0.5) + 0.2  # float64 data on every backend
    popt, _ = autofit.curve_fit(plane_bump, xy, z, p0=[1, 1, 0], backend=backend)
    np.testing.assert_allclose(popt, [1.5, 0.5, 0.2], rtol=1e-9)


def test_jax_does_not_change_global_precision():
    if not installed("jax"):
        pytest.skip("jax is not installed")
    import jax
    import jax.numpy as jnp

    before = jax.config.jax_enable_x64
    autofit.curve_fit(model_for("jax"), X, Y, p0=P0, backend="jax")
    assert jax.config.jax_enable_x64 == before
    assert jnp.ones(2).dtype == (jnp.float64 if before else jnp.float32)


def test_jax_recompiles_neither_for_new_values_nor_within_a_bucket():
    if not installed("jax"):
        pytest.skip("jax is not installed")
    import jax.numpy as jnp

    from autofit.jax import lm

    def jax_decay(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    autofit.curve_fit(jax_decay, X, Y, p0=P0, backend="jax")
    compiled = lm.lm_solve.jitted._cache_size()
    autofit.curve_fit(jax_decay, X, Y * 1.01, p0=[2, 1, 0], backend="jax")  # new values
    autofit.curve_fit(jax_decay, X[:55], Y[:55], p0=P0, backend="jax")  # same bucket (64)
    assert lm.lm_solve.jitted._cache_size() == compiled, "jax recompiled lm_solve"
    autofit.curve_fit(jax_decay, X[:20], Y[:20], p0=P0, backend="jax")  # bucket 24: compiles
    assert lm.lm_solve.jitted._cache_size() == compiled + 1


def test_jax_fused_fits_recompile_neither_within_a_bucket():
    # A huge fit's length is an argument of the program, the data padded to a bucket.
    if not installed("jax"):
        pytest.skip("jax is not installed")
    import jax.numpy as jnp

    from autofit.jax import fused

    def jax_decay(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    x = np.linspace(0, 4, 5000)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.01 * np.random.default_rng(1).normal(size=x.size)
    fits = {}
    for n in (5000, 4500, 4097, 10):  # buckets 6144, 6144, 6144, 4096
        fits[n] = autofit.curve_fit(jax_decay, x[:n], y[:n], p0=P0, backend="jax",
                                    fused=True, full_output=True)
        if n == 5000:
            compiled = fused._lm_fused_cpu._cache_size()
        if n == 4097:
            assert fused._lm_fused_cpu._cache_size() == compiled, "jax recompiled lm_fused"
    assert fused._lm_fused_cpu._cache_size() == compiled + 1  # the 4096 bucket
    # One program for every robust loss (its code traced): a second loss compiles nothing.
    for loss in ("soft_l1", "cauchy"):
        autofit.curve_fit(jax_decay, x[:10], y[:10], p0=P0, backend="jax", fused=True,
                          loss=loss, f_scale=0.1)
    assert fused._lm_fused_cpu._cache_size() == compiled + 2
    for n, (params, _, info, *_) in fits.items():
        # The padding is never read as data: the same fit as NumPy's on those points.
        reference, _, reference_info, *_ = autofit.curve_fit(
            decay, x[:n], y[:n], p0=P0, backend="numpy", fused=True, full_output=True)
        np.testing.assert_allclose(info["chi2"], reference_info["chi2"], rtol=1e-10,
                                   err_msg=f"{n} points")
        # 10 points over x <= 0.008 leave a and b nearly interchangeable (b ~ 217): the
        # engines' rounding moves them by ~1e-6 of themselves along that valley.
        np.testing.assert_allclose(params, reference, rtol=1e-7 if n > 10 else 1e-5,
                                   err_msg=f"{n} points")
        assert info["backend"] == "jax"


def test_xdata_none_calls_the_model_with_none_as_scipy_does():
    seen = []

    def no_x(x, a, b, c):  # a model over a grid of its own
        seen.append(x)
        return decay(X, a, b, c)

    expected, _ = scipy_fit()
    popt, _, info, _, _ = autofit.curve_fit(no_x, None, Y, p0=P0, full_output=True)
    np.testing.assert_allclose(popt, expected, rtol=1e-7)
    assert all(x is None for x in seen) and seen
    assert info["backend"] == "numpy" and "xdata=None" in info["backend_reason"]


def test_args_keyword_is_a_value_error_as_in_scipy():
    with pytest.raises(ValueError, match="'args' is not a supported keyword argument"):
        optimize.curve_fit(decay, X, Y, p0=P0, args=(1.0,))
    with pytest.raises(ValueError, match="'args' is not a supported keyword argument"):
        autofit.curve_fit(decay, X, Y, p0=P0, args=(1.0,))


def test_sigma_of_another_length_is_still_refused():
    with pytest.raises(ValueError, match="sigma has shape"):
        autofit.curve_fit(decay, X, Y, p0=P0, sigma=np.full(3, 0.1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e-100, 1e-30, 1e30, 1e100])
@pytest.mark.parametrize("fused", [None, True])
def test_data_of_any_magnitude_in_range_fits_as_at_unit_scale(backend, scale, fused):
    # The xtol test is relative to the scaled parameters (MINPACK's): an absolute floor
    # stopped fits of data ~1e-30 after two steps, at the fourth digit. The fused pass's
    # gtol test divides by sqrt(H_jj) sqrt(χ²): the square root of the product over- and
    # underflowed at 1e±100 (a cosine of 0 there would stop the fit at once).
    clean = decay(X, 2.5, 1.3, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        popt, _ = autofit.curve_fit(model_for(backend), X, clean * scale,
                                    p0=[scale, 1.0, 0.5 * scale], backend=backend,
                                    fused=fused)
    np.testing.assert_allclose(popt / [scale, 1.0, scale], [2.5, 1.3, 0.5], rtol=1e-9)


@pytest.mark.parametrize("scale", [1e300, 1e-300, 1e160, 1e150, 1e-150])
def test_data_beyond_float64_squares_is_refused_with_the_scale_and_the_fix(scale):
    with pytest.raises(ValueError, match=r"reaches .*e[+-]\d+.*Rescale the data"):
        autofit.curve_fit(decay, X, Y * scale, p0=[scale, 1.0, scale])


def test_the_one_pass_checks_of_x_and_y_agree_with_the_exact_ones():
    # The checks read a sum of squares; where it overflows or underflows, or sits near a
    # limit, the smallest and largest values decide.
    from autofit import _validation as check

    y = np.array([1.0, -2.0, 3.0])
    for x in (np.array([0.0, 1e200, -1e200]), np.array([1.0, 2.0, 3.0])):
        _, _, _, y_squares = check.apply_nan_policy(x, y, None, None, True)
        assert y_squares == 14.0
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="infs or NaNs"):
            check.apply_nan_policy(np.array([0.0, bad, 1.0]), y, None, None, True)
        with pytest.raises(ValueError, match="infs or NaNs"):
            check.apply_nan_policy(np.arange(3.0), np.array([0.0, 1e200, bad]), None, None,
                                   True)
    one = np.ones(1)
    for fine in ([0.0, 0.0], [1e-300, 1.0], [1e139, -1e139], [-1e-139, 1e-200]):
        check.check_data_scale(np.array(fine), one)
    for beyond in ([1e141, 0.0], [0.0, -1e200], [1e-141, 1e-200], [1e-160, -1e-160]):
        with pytest.raises(ValueError, match="Rescale the data"):
            check.check_data_scale(np.array(beyond), one)
