"""The built-in models' user-facing objects: API, ``get``, and the vectorised guesses.

A guess is judged by what it is for: Levenberg-Marquardt started from it must reach the
same minimum as when started from the true parameters, on noisy data, for peaks and dips
of either sign. And it must be finite for any finite data.
"""

import warnings

import numpy as np
import pytest

import autofit
from autofit import models
from autofit._declarations import MODELS
from autofit.selftest import cases as _cases
from tests.conftest import backend_params

GUESSED = [name for name, model in models.BUILTIN.items() if model._guess is not None]
SIZED = ["multi_lorentzian:2", "multi_lorentzian:8", "polynomial:3"]


def _grid_2d(side=32, low=-5.0, high=5.0):
    axis = np.linspace(low, high, side)
    grid_y, grid_x = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([grid_x.ravel(), grid_y.ravel()])


def _odmr(n_peaks):
    def draw(rng):
        # Dips at least 3 line widths apart (about 2.4 half widths at the narrowest).
        while True:
            centers = np.sort(rng.uniform(2.81, 2.93, n_peaks))
            if n_peaks == 1 or np.min(np.diff(centers)) > 0.012:
                break
        params = []
        for center in centers:
            params += [-rng.uniform(0.05, 0.3), center, rng.uniform(0.002, 0.005)]
        return np.linspace(2.80, 2.94, 400), params + [1.0]

    return draw


def _sign(rng):
    return rng.choice([-1.0, 1.0])


# (x, true parameters) drawn at random over realistic ranges, per model.
DRAWS = {
    "linear": lambda r: (np.linspace(-3, 7, 100), [r.uniform(-3, 3), r.uniform(-5, 5)]),
    "polynomial:3": lambda r: (np.linspace(-2, 3, 100), list(r.uniform(-2, 2, 4))),
    "exponential_decay": lambda r: (np.linspace(0, 10, 200), [
        _sign(r) * r.uniform(0.5, 5), r.uniform(0.2, 3), r.uniform(-2, 2)]),
    "gaussian": lambda r: (np.linspace(-10, 10, 300), [
        _sign(r) * r.uniform(0.5, 5), r.uniform(-6, 6), r.uniform(0.3, 2.5), r.uniform(-2, 2)]),
    "lorentzian": lambda r: (np.linspace(-10, 10, 300), [
        _sign(r) * r.uniform(0.5, 5), r.uniform(-6, 6), r.uniform(0.3, 2.5), r.uniform(-2, 2)]),
    "double_exponential": lambda r: (np.linspace(0, 10, 300), [
        r.uniform(0.5, 3), r.uniform(2, 6), r.uniform(0.5, 3), r.uniform(0.1, 0.7),
        r.uniform(-1, 1)]),
    "stretched_exponential": lambda r: (np.linspace(0, 10, 300), [
        _sign(r) * r.uniform(0.5, 3), r.uniform(0.2, 2), r.uniform(0.4, 1.8),
        r.uniform(-1, 1)]),
    "pseudo_voigt": lambda r: (np.linspace(-10, 10, 300), [
        _sign(r) * r.uniform(0.5, 5), r.uniform(-6, 6), r.uniform(0.3, 2.5), r.uniform(0.1, 0.9),
        r.uniform(-2, 2)]),
    "multi_lorentzian:2": _odmr(2),
    "multi_lorentzian:8": _odmr(8),
    "damped_cosine": lambda r: (np.linspace(0, 10, 400), [
        r.uniform(0.5, 3), r.uniform(0.05, 0.6), r.uniform(0.3, 3), r.uniform(-3, 3),
        r.uniform(-1, 1)]),
    "sine": lambda r: (np.linspace(0, 10, 300), [
        r.uniform(0.5, 3), r.uniform(0.15, 3), r.uniform(-3, 3), r.uniform(-1, 1)]),
    "logistic": lambda r: (np.linspace(-10, 10, 200), [
        _sign(r) * r.uniform(0.5, 3), r.uniform(-5, 5), r.uniform(0.2, 2), r.uniform(-1, 1)]),
    "power_law": lambda r: (np.linspace(0.1, 10, 200), [
        _sign(r) * r.uniform(0.5, 3), r.uniform(-2, 2.5), r.uniform(-1, 1)]),
    "gaussian_2d": lambda r: (_grid_2d(), [
        _sign(r) * r.uniform(0.5, 3), r.uniform(-2.5, 2.5), r.uniform(-2.5, 2.5),
        r.uniform(0.5, 2), r.uniform(-1, 1)]),
    "gaussian_2d_elliptic": lambda r: (_grid_2d(), [
        _sign(r) * r.uniform(0.5, 3), r.uniform(-2.5, 2.5), r.uniform(-2.5, 2.5),
        r.uniform(0.5, 2), r.uniform(0.5, 2), r.uniform(-1, 1)]),
    "gaussian_2d_rotated": lambda r: (_grid_2d(), [
        _sign(r) * r.uniform(0.5, 3), r.uniform(-2, 2), r.uniform(-2, 2), r.uniform(1.0, 2),
        r.uniform(0.4, 0.9), r.uniform(-1, 1), r.uniform(-1.5, 1.5)]),
    "cauchy_2d_elliptic": lambda r: (_grid_2d(), [
        _sign(r) * r.uniform(0.5, 3), r.uniform(-2.5, 2.5), r.uniform(-2.5, 2.5),
        r.uniform(0.5, 2), r.uniform(0.5, 2), r.uniform(-1, 1)]),
}


def _noisy(model, x, params, rng, noise=0.02):
    clean = model(x, *params)
    return clean + noise * np.ptp(clean) * rng.normal(size=clean.shape)


def _chi2_of_fit(model, x, y, p0):
    popt, _ = autofit.curve_fit(model, x, y, p0=p0, backend="numpy")
    residual = model(x, *popt) - y
    return float(residual @ residual)


def test_every_guessed_model_has_a_draw():
    assert set(GUESSED) - set(DRAWS) == set()
    assert set(MODELS) - set(GUESSED) == {"polynomial", "multi_lorentzian"}


@pytest.mark.parametrize("spec", sorted(DRAWS))
def test_fit_from_guess_reaches_the_best_minimum(spec):
    """From the guess, LM ends where it ends from the truth (or lower), on noisy data."""
    model = models.get(spec)
    rng = np.random.default_rng(sum(map(ord, spec)))
    for _ in range(6):
        x, truth = DRAWS[spec](rng)
        y = _noisy(model, x, truth, rng)
        guess = model.guess(x, y)
        assert guess.shape == (model.n_params,) and np.all(np.isfinite(guess))
        from_truth = _chi2_of_fit(model, x, y, np.array(truth))
        from_guess = _chi2_of_fit(model, x, y, guess)
        assert from_guess <= from_truth * (1 + 1e-6), (
            f"truth {np.round(truth, 3)}, guess {np.round(guess, 3)}: chi2 {from_guess:.4g} "
            f"from the guess, {from_truth:.4g} from the truth")


@pytest.mark.parametrize("spec", sorted(DRAWS))
def test_guess_is_vectorised_over_leading_axes(spec):
    model = models.get(spec)
    rng = np.random.default_rng(1)
    x, truth = DRAWS[spec](rng)
    curves = np.stack([_noisy(model, x, truth, rng) for _ in range(6)])
    single = np.stack([model.guess(x, curve) for curve in curves])
    assert single.shape == (6, model.n_params) and single.dtype == np.float64
    batch = model.guess(x, curves)
    np.testing.assert_allclose(batch, single, rtol=1e-9, atol=1e-12)
    assert model.guess(x, curves.reshape(2, 3, -1)).shape == (2, 3, model.n_params)
    assert model.guess(x, curves[:1]).shape == (1, model.n_params)


def _degenerate_data(n_points):
    spike = np.zeros(n_points)
    spike[n_points // 2] = 1.0
    noise = np.random.default_rng(n_points).normal(size=n_points)
    return {"zeros": np.zeros(n_points), "constant": np.full(n_points, 3.7), "spike": spike,
            "dip": 1.0 - spike, "noise": noise, "large": 1e100 * noise,
            "small": 1e-100 * noise, "ramp": np.arange(n_points, dtype=float)}


@pytest.mark.parametrize("spec", sorted(DRAWS))
@pytest.mark.parametrize("n_points", [1, 2, 5, 64])
def test_guess_is_finite_for_any_finite_data(spec, n_points):
    model = models.get(spec)
    if model.n_variables == 2:
        x = _grid_2d(side=int(np.ceil(np.sqrt(n_points))))[:, :n_points]
    else:
        x = np.linspace(0.5, 3.0, n_points)
    data = _degenerate_data(n_points)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero or overflow on the way either
        guesses = model.guess(x, np.stack(list(data.values())))
    for label, guess in zip(data, guesses):
        assert np.all(np.isfinite(guess)), f"{label}: {guess}"


@pytest.mark.parametrize("spec", [s for s in sorted(DRAWS) if models.get(s).n_variables == 1])
def test_guess_is_finite_when_every_x_is_the_same(spec):
    model = models.get(spec)
    rng = np.random.default_rng(2)
    guess = model.guess(np.full(10, 2.0), rng.normal(size=(3, 10)))
    assert np.all(np.isfinite(guess))


def test_guess_does_not_depend_on_the_order_of_the_points():
    rng = np.random.default_rng(3)
    x = np.sort(rng.uniform(-5, 5, 200))
    y = models.gaussian(x, -2.0, 1.0, 0.7, 0.5) + 0.01 * rng.normal(size=200)
    order = rng.permutation(200)
    np.testing.assert_array_equal(models.gaussian.guess(x[order], y[order]),
                                  models.gaussian.guess(x, y))


@pytest.mark.parametrize("name", [n for n in sorted(GUESSED) if models.get(n).n_variables == 1])
def test_curve_fit_uses_the_guess_without_p0(name):
    x, y = _cases.noisy_data(name, 300)
    popt, _ = autofit.curve_fit(models.BUILTIN[name], x, y, backend="numpy")
    np.testing.assert_allclose(popt, _cases.TRUE_PARAMS[name], rtol=0.05, atol=0.05)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("name", ["gaussian_2d", "gaussian_2d_rotated", "cauchy_2d_elliptic"])
def test_2d_models_fit_on_every_backend(name, backend):
    x, y = _cases.noisy_data(name, 400)
    model = models.BUILTIN[name]
    popt, _ = autofit.curve_fit(model, x, y, p0=model.guess(x, y), backend=backend)
    np.testing.assert_allclose(popt, _cases.TRUE_PARAMS[name], rtol=0.05, atol=0.05)


def test_guess_checks_the_shapes():
    x = np.linspace(0, 1, 10)
    with pytest.raises(ValueError, match="points"):
        models.gaussian.guess(x, np.zeros(9))
    with pytest.raises(ValueError, match=r"\(2, n_points\)"):
        models.gaussian_2d.guess(x, np.zeros(10))
    with pytest.raises(ValueError, match=r"\(n_points,\)"):
        models.gaussian.guess(np.stack([x, x]), np.zeros(10))


def test_builtin_lists_every_model_with_its_declaration():
    assert set(models.BUILTIN) == set(MODELS)
    for name, model in models.BUILTIN.items():
        spec = MODELS[name]
        assert model.name == name and model.param_names == spec.param_names
        assert model.n_variables == spec.n_variables and model.formula == spec.formula
    assert models.gaussian_2d.n_variables == 2 and models.gaussian.n_variables == 1


@pytest.mark.parametrize("name", ["polynomial", "multi_lorentzian"])
def test_free_size_models_have_no_guess(name):
    with pytest.raises(ValueError, match="p0"):
        models.BUILTIN[name].guess(np.linspace(0, 1, 10), np.zeros(10))


def test_multi_lorentzian_factory():
    model = models.multi_lorentzian(3)
    assert model.name == "multi_lorentzian" and model.n_params == 10
    assert model.param_names == ("amplitude_1", "center_1", "hwhm_1", "amplitude_2",
                                 "center_2", "hwhm_2", "amplitude_3", "center_3", "hwhm_3",
                                 "offset")
    x = np.linspace(-5, 5, 50)
    np.testing.assert_array_equal(
        model(x, *_cases.TRUE_PARAMS["multi_lorentzian"]),
        autofit.original.model_multi_lorentzian(x, np.array(_cases.TRUE_PARAMS[
            "multi_lorentzian"])))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_peaks"):
            models.multi_lorentzian(bad)


def test_multi_lorentzian_finds_peaks_as_well_as_dips():
    model = models.multi_lorentzian(2)
    x = np.linspace(0, 10, 300)
    truth = np.array([1.5, 3.0, 0.3, 0.8, 7.0, 0.5, 0.2])
    y = model(x, *truth) + 0.01 * np.random.default_rng(4).normal(size=x.size)
    guess = model.guess(x, y)
    np.testing.assert_allclose(guess[[1, 4]], truth[[1, 4]], atol=0.1)
    assert guess[0] > 0 and guess[3] > 0


def test_get():
    assert models.get("gaussian") is models.gaussian
    assert models.get("polynomial") is models.polynomial
    cubic = models.get("polynomial:3")
    assert cubic.name == "polynomial" and cubic.n_params == 4
    assert cubic.param_names == ("c0", "c1", "c2", "c3")
    assert models.polynomial.n_params is None  # the shared one is left alone
    x = np.linspace(-2, 2, 50)
    np.testing.assert_allclose(cubic.guess(x, 1 - x + 0.5 * x ** 3), [1, -1, 0, 0.5],
                               atol=1e-12)
    popt, _ = autofit.curve_fit(cubic, x, 2 + x ** 2, backend="numpy")
    np.testing.assert_allclose(popt, [2, 0, 1, 0], atol=1e-10)
    odmr = models.get("multi_lorentzian:8")
    assert odmr.n_params == 25 and odmr.param_names[-1] == "offset"
    with pytest.raises(ValueError, match="gaussian, .*cauchy_2d_elliptic"):
        models.get("gausian")
    with pytest.raises(ValueError, match="fixed number"):
        models.get("gaussian:2")
    with pytest.raises(ValueError, match="number of peaks"):
        models.get("multi_lorentzian:0")
    with pytest.raises(ValueError, match="degree"):
        models.get("polynomial:x")
