"""autofit.fit and FitResult: numbers, names, failed fits and the text report."""

import warnings

import numpy as np
import pytest

import autofit
import autofit._report
from autofit._report import format_value_error
from tests.conftest import backend_params


def decay(x, a, b, c):
    return a * np.exp(-b * x) + c


@pytest.fixture
def gaussian_data():
    x = np.linspace(0, 10, 101)
    y = autofit.models.gaussian(x, 3.0, 4.0, 0.8, 0.5)
    y = y + 0.05 * np.random.default_rng(0).normal(size=x.size)
    return x, y, np.full(x.size, 0.05)


@pytest.mark.parametrize("backend", backend_params(("numpy", "numba")))
def test_fit_matches_curve_fit_and_fills_every_statistic(gaussian_data, backend):
    x, y, sigma = gaussian_data
    model = autofit.models.gaussian
    res = autofit.fit(model, x, y, sigma=sigma, backend=backend)
    popt, pcov, info, _, _ = autofit.curve_fit(model, x, y, sigma=sigma, backend=backend,
                                               full_output=True)
    np.testing.assert_allclose(res.params, popt, rtol=1e-12)
    np.testing.assert_allclose(res.covariance, pcov, rtol=1e-12)
    np.testing.assert_allclose(res.errors, np.sqrt(np.diag(pcov)), rtol=1e-12)
    best = model(x, *res.params)
    np.testing.assert_allclose(res.best_fit, best, rtol=1e-12)
    assert res.chi2 == pytest.approx(np.sum(((y - best) / sigma) ** 2), rel=1e-9)
    assert res.dof == x.size - 4 and res.n_points == x.size
    assert res.reduced_chi2 == pytest.approx(res.chi2 / res.dof)
    r2 = 1 - np.sum((y - best) ** 2) / np.sum((y - y.mean()) ** 2)
    assert res.r_squared == pytest.approx(r2, rel=1e-12)
    assert res.success and res.status.converged and res.status == info["status"]
    assert res.n_iter == info["nit"] and res.nfev == info["nfev"]
    assert res.backend == backend and backend in res.backend_reason
    assert res.device == "cpu"
    assert res.param_names == ("amplitude", "center", "width", "offset")
    assert res.model == "gaussian" and res.model_spec == "gaussian"
    assert res["center"] == pytest.approx(4.0, abs=0.02)
    # Data are kept by reference for plotting, not copied.
    assert res.x is x and res.y is y and res.sigma is sigma


def test_parameter_names_come_from_the_signature():
    x = np.linspace(0, 4, 40)
    res = autofit.fit(decay, x, decay(x, 2.0, 1.3, 0.5), p0=[1, 1, 0], backend="numpy")
    assert res.param_names == ("a", "b", "c") and res.model == "decay"
    assert res.model_spec is None

    def star(x, *p):
        return p[0] * x + p[1]

    res = autofit.fit(star, x, 2 * x + 1, p0=[1, 0], backend="numpy")
    assert res.param_names == ("p0", "p1")
    sized = autofit.models.get("polynomial:2")
    res = autofit.fit(sized, x, 1 + x + x**2, backend="numpy")
    assert res.param_names == ("c0", "c1", "c2") and res.model_spec == "polynomial:2"


def test_unknown_parameter_name_is_a_key_error(gaussian_data):
    x, y, _ = gaussian_data
    res = autofit.fit(autofit.models.gaussian, x, y, backend="numpy")
    with pytest.raises(KeyError, match="the parameters are"):
        res["sigma"]


def test_a_fit_that_does_not_converge_is_reported_not_raised():
    x = np.linspace(0, 10, 120)
    y = decay(x, 2.0, 0.5, 0.1)
    res = autofit.fit(decay, x, y, p0=[1, 1, 0], backend="numpy", maxfev=5)
    assert not res.success
    assert res.status == autofit.Status.MAX_NFEV
    assert "max_nfev = 5" in res.message
    assert np.all(np.isnan(res.errors)) and np.all(np.isnan(res.covariance))
    assert np.all(np.isfinite(res.params)) and res.nfev <= 6
    assert "NOT CONVERGED" in res.report()
    # curve_fit keeps scipy's behaviour: it raises.
    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        autofit.curve_fit(decay, x, y, p0=[1, 1, 0], backend="numpy", maxfev=5)


def test_bad_input_still_raises_curve_fits_errors():
    x = np.linspace(0, 1, 10)
    with pytest.raises(ValueError, match="ydata has"):
        autofit.fit(decay, x, np.ones(9), p0=[1, 1, 0])
    with pytest.raises(TypeError, match="full_output"):
        autofit.fit(decay, x, np.ones(10), p0=[1, 1, 0], full_output=False)
    with pytest.raises(TypeError, match="unexpected keyword"):
        autofit.fit(decay, x, np.ones(10), p0=[1, 1, 0], frobnicate=1)


def test_nan_policy_omit_counts_only_the_points_used():
    x = np.linspace(0, 4, 50)
    y = decay(x, 2.0, 1.3, 0.5)
    y[[3, 10]] = np.nan
    res = autofit.fit(decay, x, y, p0=[1, 1, 0], backend="numpy", nan_policy="omit")
    assert res.n_points == 48 and res.dof == 45
    assert np.isfinite(res.r_squared) and res.r_squared == pytest.approx(1.0)
    assert res.options["nan_policy"] == "omit"


def test_report_lists_values_errors_and_statistics(gaussian_data):
    x, y, sigma = gaussian_data
    res = autofit.fit(autofit.models.gaussian, x, y, sigma=sigma, backend="numpy")
    text = res.report()
    for name in res.param_names:
        assert name in text
    value, error = format_value_error(res["center"], res.errors[1])
    assert f"{value}  ± {error}" in text or f"{value} ± {error}" in " ".join(text.split())
    for label in ("chi2", "reduced chi2", "R^2", "dof 97", "iterations", "backend       numpy",
                  "status"):
        assert label in text
    assert str(res) == text and "<pre>" in res._repr_html_()
    assert "center=4.0" in repr(res)
    assert max(len(line) for line in text.splitlines()) <= autofit._report.REPORT_WIDTH


def test_report_says_when_the_covariance_is_unknown():
    x = np.linspace(0, 1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", autofit.OptimizeWarning)
        res = autofit.fit(decay, x, decay(x, 1.0, 1.0, 0.0), p0=[1, 1, 0], backend="numpy")
    assert res.dof == 0 and np.isnan(res.reduced_chi2) and np.all(np.isinf(res.errors))
    assert "± inf" in res.report() and "could not be estimated" in res.report()


@pytest.mark.parametrize("value, error, expected", [
    (2.50312, 0.01234, ("2.503", "0.012")),
    (-1234.567, 12.3, ("-1235", "12")),
    (0.00123456, 0.0000123, ("0.001235", "0.000012")),
    (0.000123456, 0.00000123, ("1.235e-04", "1.2e-06")),
    (6.02214e23, 1.5e20, ("6.0221e+23", "1.5e+20")),
    (5.0, 0.0, ("5", "0")),
    (5.0, float("nan"), ("5", "nan")),
    (0.0, 0.25, ("0.00", "0.25")),
])
def test_values_are_rounded_to_the_errors_second_digit(value, error, expected):
    assert format_value_error(value, error) == expected


def test_batch_summary_counts_statuses_and_describes_converged_fits():
    x = np.linspace(-4, 4, 40)
    centers = np.linspace(-1, 1, 12).reshape(3, 4)
    y = autofit.models.gaussian(x, 2.0, centers, 0.7, 0.1)
    y = y + 0.01 * np.random.default_rng(4).normal(size=y.shape)
    y[0, 0] = np.nan
    y[2, 1, :10] = np.inf
    res = autofit.fit_batch(autofit.models.gaussian, x, y, backend="numpy")
    stats = res.statistics()
    assert stats["shape"] == (3, 4) and stats["n_fits"] == 12 and stats["n_converged"] == 10
    assert stats["converged_fraction"] == pytest.approx(10 / 12)
    assert stats["status_counts"][autofit.Status.NONFINITE_DATA] == 2
    assert sum(stats["status_counts"].values()) == 12
    good = res["center"][res.converged]
    center = stats["parameters"]["center"]
    assert center["median"] == pytest.approx(np.median(good))
    q25, q75 = np.percentile(good, [25, 75])
    assert center["iqr"] == pytest.approx(q75 - q25)
    assert center["mean"] == pytest.approx(good.mean()) and center["std"] == pytest.approx(
        good.std())
    assert stats["median_reduced_chi2"] == pytest.approx(
        np.median(res.reduced_chi2[res.converged]))
    text = res.summary()
    assert "12 fit(s) of shape (3, 4)" in text and "converged 10/12 (83.3%)" in text
    assert "NONFINITE_DATA" in text and "(not converged)" in text
    for name in res.param_names:
        assert name in text


def test_r_squared_ignores_non_finite_points():
    from autofit._fit import _r_squared

    rng = np.random.default_rng(3)
    y, f = rng.normal(size=40), rng.normal(size=40)
    keep = np.ones(40, bool)
    y[5], f[9], keep[[5, 9]] = np.nan, np.inf, False
    expected = 1 - np.sum((y[keep] - f[keep]) ** 2) / np.sum((y[keep] - y[keep].mean()) ** 2)
    assert _r_squared(y, f) == pytest.approx(expected, rel=1e-12)
    assert np.isnan(_r_squared(np.full(3, 2.0), np.zeros(3)))      # constant data
