"""Every keyword of scipy's curve_fit, with scipy's meaning (issue 11): those that change the
answer are honoured, those that only choose scipy's path are checked as scipy checks them,
and the same mistake raises the same type of error as scipy's."""

import warnings

import numpy as np
import pytest
import scipy.special
from scipy.optimize import curve_fit as scipy_curve_fit

import autofit
from tests.conftest import backend_params

X = np.linspace(0.0, 4.0, 60)


def decay(x, a, b, c):
    return a * np.exp(-b * x) + c


def decay_columns(x, a, b, c):
    """decay's Jacobian in MINPACK's column layout, (n_params, n_points)."""
    e = np.exp(-b * x)
    return np.array([e, -a * x * e, np.ones_like(x)])


def data(seed=0):
    rng = np.random.default_rng(seed)
    return decay(X, 2.5, 1.3, 0.5) + 0.01 * rng.standard_normal(X.size)


P0 = [1.0, 1.0, 1.0]


@pytest.mark.parametrize("keywords", [
    {"x_scale": "jac"}, {"x_scale": [1.0, 2.0, 3.0]}, {"x_scale": 2.0},
    {"diff_step": 1e-6}, {"epsfcn": 1e-10}, {"factor": 10}, {"diag": [1.0, 1.0, 1.0]},
    {"tr_solver": "exact"}, {"tr_solver": "lsmr", "tr_options": {"regularize": False}},
    {"jac_sparsity": np.ones((X.size, 3))},
], ids=lambda k: ",".join(k))
def test_keywords_that_choose_scipys_path_are_accepted_and_keep_the_minimum(keywords):
    y = data()
    plain, plain_cov = autofit.curve_fit(decay, X, y, p0=P0, backend="numpy")
    popt, pcov = autofit.curve_fit(decay, X, y, p0=P0, backend="numpy", **keywords)
    np.testing.assert_array_equal(popt, plain)
    np.testing.assert_array_equal(pcov, plain_cov)
    expected, _ = scipy_curve_fit(decay, X, y, p0=P0)
    np.testing.assert_allclose(popt, expected, rtol=1e-6)


@pytest.mark.parametrize("keywords", [
    {"x_scale": "foo"}, {"x_scale": [-1.0, 1.0, 1.0]}, {"x_scale": [0.0, 1.0, 1.0]},
    {"tr_solver": "qr"}, {"verbose": 3},
], ids=lambda k: f"{list(k)[0]}={list(k.values())[0]!r}")
def test_bad_path_keywords_raise_scipys_error_type(keywords):
    with pytest.raises(ValueError) as expected:
        scipy_curve_fit(decay, X, data(), p0=P0, method="trf", **keywords)
    with pytest.raises(type(expected.value)):
        autofit.curve_fit(decay, X, data(), p0=P0, backend="numpy", **keywords)


def test_verbose_1_prints_a_summary_and_2_a_line_per_evaluation(capsys):
    y = data()
    plain, _ = autofit.curve_fit(decay, X, y, p0=P0, backend="numpy")
    popt, _, info, _, _ = autofit.curve_fit(decay, X, y, p0=P0, verbose=1, full_output=True,
                                            backend="numpy")
    summary = capsys.readouterr().out
    assert f"Function evaluations {info['nfev']}" in summary and "final cost" in summary
    np.testing.assert_array_equal(popt, plain)
    popt, _, info, _, _ = autofit.curve_fit(decay, X, y, p0=P0, verbose=2, full_output=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["evaluation", "cost"]
    costs = [float(line.split()[1]) for line in lines[1:-1]]
    assert len(costs) >= info["nfev"]
    # the first line is the cost at p0, the smallest the cost at the minimum
    residuals = decay(X, *P0) - y
    np.testing.assert_allclose(costs[0], 0.5 * residuals @ residuals, rtol=1e-9)
    np.testing.assert_allclose(min(costs), 0.5 * info["fvec"] @ info["fvec"], rtol=1e-8)
    assert info["backend"] == "numpy" and "verbose=2" in info["backend_reason"]
    # verbose=2 fits the printing wrapper, by finite differences (plain: exact derivatives)
    assert "derivatives: exact" not in info["backend_reason"]
    np.testing.assert_allclose(popt, plain, rtol=1e-8)


def test_verbose_2_prints_the_robust_cost_under_a_robust_loss(capsys):
    """The printed cost is the one the fit minimises, scipy's ½ Σ f_scale² rho(z), not the
    sum of squares (whose 'minimum' would then mislead)."""
    y = data()
    y[::9] += 1.0  # outliers
    popt, _, info, _, _ = autofit.curve_fit(decay, X, y, p0=P0, verbose=2, loss="cauchy",
                                            f_scale=0.05, full_output=True)
    costs = [float(line.split()[1]) for line in capsys.readouterr().out.splitlines()[1:-1]]
    z = ((decay(X, *P0) - y) / 0.05) ** 2
    np.testing.assert_allclose(costs[0], 0.5 * 0.05 ** 2 * np.sum(np.log1p(z)), rtol=1e-9)
    np.testing.assert_allclose(min(costs), 0.5 * info["chi2"], rtol=1e-8)
    squares = 0.5 * np.sum((decay(X, *popt) - y) ** 2)
    assert min(costs) < 0.5 * squares


def test_col_deriv_reads_jac_in_minpacks_column_layout():
    y = data()
    popt, pcov = autofit.curve_fit(decay, X, y, p0=P0, jac=decay_columns, col_deriv=True)
    expected, expected_cov = scipy_curve_fit(decay, X, y, p0=P0, jac=decay_columns,
                                             col_deriv=True)
    np.testing.assert_allclose(popt, expected, rtol=1e-7)
    np.testing.assert_allclose(pcov, expected_cov, rtol=1e-5)


def test_jac_cs_is_scipys_complex_step():
    y = data(1)
    popt, pcov, info, _, _ = autofit.curve_fit(decay, X, y, p0=P0, jac="cs",
                                               full_output=True)
    expected, expected_cov = scipy_curve_fit(decay, X, y, p0=P0, jac="cs", method="trf",
                                             ftol=1e-12, xtol=1e-12, gtol=1e-12)
    np.testing.assert_allclose(popt, expected, rtol=1e-7)
    np.testing.assert_allclose(pcov, expected_cov, rtol=1e-5)
    assert "jac='cs'" in info["backend_reason"]


def test_jac_cs_refuses_a_model_that_drops_the_imaginary_part():
    def folded(x, a, b, c):
        return np.abs(a) * np.exp(-b * x) + c

    with pytest.raises(ValueError, match="complex-step derivative for parameter 0 disagrees"):
        autofit.curve_fit(folded, X, data(), p0=P0, jac="cs")


@pytest.mark.parametrize("shape", [(), (1,)], ids=["scalar", "one-element"])
def test_a_model_whose_output_broadcasts_against_ydata_fits_as_in_scipy(shape):
    rng = np.random.default_rng(2)
    y = 3.0 + 0.1 * rng.standard_normal(X.size)

    def constant(x, c):
        return np.reshape(c, shape)

    popt, pcov = autofit.curve_fit(constant, X, y, p0=[1.0])
    expected, expected_cov = scipy_curve_fit(constant, X, y, p0=[1.0])
    np.testing.assert_allclose(popt, expected, rtol=1e-10)
    np.testing.assert_allclose(pcov, expected_cov, rtol=1e-8)


def decay_jax(x, a, b, c):
    import jax.numpy as jnp

    return a * jnp.exp(-b * x) + c


@pytest.mark.parametrize("backend", backend_params())
def test_float32_data_is_fitted_in_float64(backend):
    y = data(3)
    x32, y32 = X.astype(np.float32), y.astype(np.float32)
    model = decay_jax if backend == "jax" else decay
    popt, pcov = autofit.curve_fit(model, x32, y32, p0=np.float32(P0), backend=backend,
                                   strict=True)
    same, same_cov = autofit.curve_fit(model, x32.astype(np.float64),
                                       y32.astype(np.float64), p0=P0, backend=backend,
                                       strict=True)
    assert popt.dtype == np.float64 and pcov.dtype == np.float64
    np.testing.assert_array_equal(popt, same)
    np.testing.assert_array_equal(pcov, same_cov)


def _call_both(**arguments):
    """The exception types scipy's and autofit's curve_fit raise for the same call."""
    found = []
    for curve_fit in (scipy_curve_fit, autofit.curve_fit):
        keywords = dict(arguments)
        if curve_fit is autofit.curve_fit:
            keywords.setdefault("backend", "numpy")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                curve_fit(**keywords)
        except Exception as exc:  # the point is which type
            found.append(type(exc))
        else:
            found.append(None)
    return found


MISTAKES = {
    "empty ydata": {"xdata": X[:0], "ydata": X[:0], "p0": P0},
    "nan in ydata": {"ydata": np.where(X > 1, np.nan, 1.0)},
    "inf in xdata": {"xdata": np.where(X > 1, np.inf, X)},
    "fewer points than parameters": {"xdata": X[:2], "ydata": data()[:2]},
    "unknown method": {"method": "newton"},
    "args keyword": {"args": (1.0,)},
    "unknown keyword": {"tolerance": 1e-3},
    "p0 outside bounds": {"bounds": ([2.0, 0.0, 0.0], [3.0, 3.0, 3.0])},
    "lower above upper": {"bounds": ([1.0, 1.0, 1.0], [0.0, 2.0, 2.0])},
    "sigma of the wrong length": {"sigma": np.ones(7)},
    "string ydata": {"ydata": ["a"] * X.size},
    "bad nan_policy": {"nan_policy": "drop"},
    "maxfev not a number": {"maxfev": "many"},
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_the_same_mistake_raises_scipys_error_type(mistake):
    arguments = {"f": decay, "xdata": X, "ydata": data(), "p0": P0, **MISTAKES[mistake]}
    scipy_error, our_error = _call_both(**arguments)
    assert scipy_error is not None, "scipy accepts this: not a mistake"
    assert our_error is not None and issubclass(our_error, scipy_error), (
        f"scipy raises {scipy_error.__name__}, autofit {getattr(our_error, '__name__', None)}")


def test_no_keywords_give_the_options_their_defaults_would():
    # curve_fit without keywords skips their checks; the options must be those of every
    # keyword given at its default value.
    from autofit import _validation

    defaults = {"ftol": 1e-15, "xtol": 1e-15, "gtol": 1e-15}
    spelled_out = {"loss": "linear", "f_scale": 1.0, "verbose": 0, "col_deriv": False,
                   "max_nfev": None, "x_scale": "jac", "diff_step": None, "factor": 100}
    assert (_validation.solver_keywords({}, defaults)
            == _validation.solver_keywords(spelled_out, defaults))


def decay_offset(x, a, b, c=0.5):
    return a * np.exp(-b * x) + c


def decay_scaled(x, a, b, *, scale=1.0):
    return a * np.exp(-b * x * scale)


@pytest.mark.parametrize("backend", backend_params())
def test_parameters_with_defaults_and_partial_keywords_fit_as_in_scipy(backend):
    # scipy calls f(x, *p0): a model's parameters with defaults are fitted only when p0
    # gives them, and keyword-only ones (a functools.partial's keywords) are not fit
    # parameters. autofit refused both ("p0 has 2 value(s) but the model takes 3").
    import functools

    y = decay_offset(X, 2.5, 1.3, 0.4) + 0.01 * np.random.default_rng(5).normal(size=X.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f, p0 in ((decay_offset, [1.0, 1.0]), (decay_offset, [1.0, 1.0, 0.0]),
                      (decay_scaled, [1.0, 1.0]),
                      (functools.partial(decay_scaled, scale=0.8), [1.0, 1.0])):
            expected, _ = scipy_curve_fit(f, X, y, p0=p0)
            popt, _ = autofit.curve_fit(f, X, y, p0=p0, backend=backend)
            assert popt.shape == (len(p0),)
            np.testing.assert_allclose(popt, expected, rtol=1e-5)
        # Without p0 scipy counts every positional parameter after x, defaults included.
        assert autofit.curve_fit(decay_offset, X, y, backend=backend)[0].shape == (3,)
        assert autofit.curve_fit(decay_scaled, X, y, backend=backend)[0].shape == (2,)
    with pytest.raises(ValueError, match=r"p0 has 4 value\(s\) but the model takes 2 to 3"):
        autofit.curve_fit(decay_offset, X, y, p0=[1.0, 1.0, 1.0, 1.0], backend=backend)
    with pytest.raises(ValueError, match=r"p0 has 1 value\(s\) but the model takes 2 to 3"):
        autofit.curve_fit(decay_offset, X, y, p0=[1.0], backend=backend)


def special_decay(x, a, b):
    return a * scipy.special.expit(-b * x)  # numba cannot compile scipy.special


def test_a_loop_of_fits_that_fall_back_warns_once():
    # Python shows a warning once per place by default; autofit's own use of
    # warnings.catch_warnings (on every call) reset that record, and a loop of fits of a
    # model numba cannot compile printed the fallback warning on every call.
    pytest.importorskip("numba")
    y = special_decay(X, 2.5, 1.3)
    autofit.curve_fit(special_decay, X, y, p0=[1.0, 1.0])
    autofit.wait_for_compilation()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(4):
            autofit.curve_fit(special_decay, X, y, p0=[1.0, 1.0])
    fallbacks = [w for w in caught if issubclass(w.category, autofit.BackendFallbackWarning)]
    assert len(fallbacks) == 1, [str(w.message) for w in caught]
