"""Exact derivatives generated from the source of a user's NumPy model (autofit._forward_mode).

The generated point functions are checked here in plain Python (no compilation): their value
must equal the user's model and their gradient must equal an independent high-order finite
difference, for every style of model people write. Models it cannot read must be refused
with a reason, never differentiated wrongly.
"""

import math
import sys

import numpy as np
import pytest
import scipy.optimize
from numpy import exp as bare_exp

from autofit import _forward_mode
from autofit._forward_mode import ArrayMath, Unsupported, _define, generate_source
from tests.conftest import backend_params

N_PEAKS = 3
WIDTH_SCALE = 0.5


def decay(x, a, b, c):
    return a * np.exp(-b * x) + c


def gaussian(x, a, mu, sigma, c):
    """A docstring is skipped."""
    return a * np.exp(-0.5 * ((x - mu) / sigma) ** 2) + c


def damped_cosine(x, a, tau, omega, phi, c):
    return a * np.exp(-x / tau) * np.cos(omega * x + phi) + c


def peaks_full_like(f, *p):
    out = np.full_like(f, p[-1])
    for i in range(len(p) // 3):
        a, c, w = p[3 * i], p[3 * i + 1], p[3 * i + 2]
        out = out - a * w ** 2 / ((f - c) ** 2 + w ** 2)
    return out


def peaks_global_count(x, *p):
    total = np.zeros_like(x)
    for k in range(N_PEAKS):
        amplitude, centre, width = p[3 * k:3 * k + 3]
        total += amplitude * np.exp(-((x - centre) / (WIDTH_SCALE * width)) ** 2)
    return total + p[3 * N_PEAKS]


def peaks_zip(x, *p):
    out = np.ones_like(x) * p[-1]
    for a, c, w in zip(p[0:-1:3], p[1:-1:3], p[2:-1:3]):
        out += a / (1 + ((x - c) / w) ** 2)
    return out


def gaussian_2d(xy, a, x0, y0, s, c):
    x, y = xy
    return a * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * s ** 2)) + c


def plane_indexed(xy, a, b, c):
    return a * xy[0] + b * xy[1] ** 2 + c


def functions_galore(x, a, b, c, d):
    u = np.sin(a * x) + np.cos(b) * np.tanh(c * x) + np.arctan(d * x)
    v = np.sqrt(a * a + x * x) + np.log1p(b * b * x * x) + np.expm1(-c * x) + np.abs(d - x)
    w = math.exp(-a) * math.erf(b) * x + np.arctan2(c, x + 2.0) + np.hypot(d, x)
    return u + v + w + np.power(x + 1.0, b) + np.clip(a * x, -1.0, 1.0) + bare_exp(-d)


def where_and_if(x, a, b, c):
    y = np.where(x > b, a * (x - b) ** 2, -a * (x - b))
    z = np.maximum(y, c * x) + (c if c > 0 else -c)
    return y + np.minimum(z, 10.0) - (x ** 2 if N_PEAKS > 2 else x)


def constants_folded(x, a, b):
    scale = np.exp(1.0) * float(2) + (3 if np.inf > 1.0 else 4)
    return a * x ** 1 * scale + b ** 0 + b * x ** 0 + a ** 1


def power_parameter(x, a, b):
    return a * x ** b + 2.0 ** b


def with_default(x, a, b, offset=1.5):
    return a * x + b + offset


def make_closure():
    scale = 3.0

    def scaled(x, a, b):
        return scale * a * np.exp(-b * x)

    return scaled


CASES = [
    (decay, (2.0, 1.3, 0.5), np.linspace(0.0, 4.0, 40)),
    (gaussian, (3.0, 0.2, 0.8, 0.5), np.linspace(-4, 4, 40)),
    (damped_cosine, (2.0, 3.0, 5.0, 0.3, 0.1), np.linspace(0, 10, 40)),
    (peaks_full_like, (0.02, 2.82, 0.004, 0.03, 2.86, 0.005, 1.0), np.linspace(2.8, 2.9, 60)),
    (peaks_global_count, (1.0, -1.0, 0.6, 0.5, 0.5, 0.4, 2.0, 2.0, 0.8, 0.1),
     np.linspace(-3, 3, 50)),
    (peaks_zip, (1.0, -1.0, 0.6, 0.5, 0.5, 0.4, 0.3), np.linspace(-3, 3, 50)),
    (functions_galore, (0.7, 0.3, 1.1, 0.45), np.linspace(0.1, 3, 30)),
    (where_and_if, (1.5, 0.95, 0.7), np.linspace(0, 3, 31)),
    (power_parameter, (1.2, 1.7), np.linspace(0.5, 3, 20)),
    (constants_folded, (1.2, 1.7), np.linspace(0.5, 3, 20)),
    (with_default, (1.2, 1.7), np.linspace(0.5, 3, 20)),
    (make_closure(), (1.2, 0.7), np.linspace(0.5, 3, 20)),
]
CASES_2D = [
    (gaussian_2d, (2.0, 0.1, -0.2, 0.7, 0.3)),
    (plane_indexed, (1.0, -2.0, 0.5)),
]


def _points(f, p, x):
    """The generated value and gradient run in Python over every point of x."""
    n_params = len(p)
    x2 = np.atleast_2d(x)
    value_source, gradient_source = generate_source(f, n_params, x2.shape[0])
    namespace = {"math": ArrayMath, "np": np, "abs": abs, "float": float}
    value = _define(value_source, "value", dict(namespace))
    gradient = _define(gradient_source, "gradient", dict(namespace))
    p = np.asarray(p, dtype=np.float64)
    values = np.array([value(x2, i, p) for i in range(x2.shape[1])])
    jac = np.zeros((n_params, x2.shape[1]))
    returned = np.array([gradient(x2, i, p, jac, i) for i in range(x2.shape[1])])
    np.testing.assert_array_equal(returned, values)  # the same value, bit for bit
    return values, jac


def _richardson(f, x, p, j):
    """d f / d p_j by central differences at h, h/2, h/4, extrapolated twice (error h^6)."""
    def central(h):
        up, down = np.array(p, dtype=float), np.array(p, dtype=float)
        up[j] += h
        down[j] -= h
        return (f(x, *up) - f(x, *down)) / (2 * h)

    h = 1e-4 * max(abs(p[j]), 1e-2)
    d1, d2, d3 = central(h), central(h / 2), central(h / 4)
    e1, e2 = (4 * d2 - d1) / 3, (4 * d3 - d2) / 3
    return (16 * e2 - e1) / 15


@pytest.mark.parametrize("f, p, x", CASES, ids=[c[0].__name__ for c in CASES])
def test_generated_value_and_gradient_match_the_model(f, p, x):
    values, jac = _points(f, p, x)
    np.testing.assert_allclose(values, f(x, *p), rtol=1e-13, atol=1e-13)
    for j in range(len(p)):
        expected = _richardson(f, x, p, j)
        np.testing.assert_allclose(jac[j], expected, rtol=1e-6,
                                   atol=1e-7 * (np.abs(expected).max() + 1e-3),
                                   err_msg=f"parameter {j}")


def test_a_square_is_a_product_equal_to_numpys_bit_for_bit():
    # ``u ** 2`` becomes ``u * u`` (NumPy's own square: the same bits), which the compiled
    # pass vectorises; the power kept the numba pass scalar (a gaussian 4.8 -> 1.5 ns/point).
    def parabola(x, a, b, c):
        return a * ((x - b) / 0.7) ** 2 + c

    value_source, gradient_source = generate_source(parabola, 3, 1)
    assert "**" not in value_source and "**" not in gradient_source
    x = np.linspace(-3.0, 3.0, 101)
    p = (1.7, 0.3, 0.2)
    values, _ = _points(parabola, p, x)
    np.testing.assert_array_equal(values, parabola(x, *p))


@pytest.mark.parametrize("f, p", CASES_2D, ids=[c[0].__name__ for c in CASES_2D])
def test_two_variable_models(f, p):
    rng = np.random.default_rng(3)
    xy = rng.uniform(-1, 1, size=(2, 25))
    values, jac = _points(f, p, xy)
    np.testing.assert_allclose(values, f(xy, *p), rtol=1e-13, atol=1e-13)
    for j in range(len(p)):
        np.testing.assert_allclose(jac[j], _richardson(f, xy, p, j), rtol=1e-6, atol=1e-8)


def test_a_peak_writes_no_derivative_for_other_peaks_parameters():
    _, gradient_source = generate_source(peaks_full_like, 7, 1)
    # Parameters are read once and the unrolled loop indexes them by constants.
    assert "range(" not in gradient_source and "p[3 * i" not in gradient_source
    # d/d(offset) of "full_like(x, p[-1])" minus peaks is the literal 1.0: nothing computed.
    assert "jac[6, col] = 1.0" in gradient_source


def sums_over_x(x, a, b):
    return a * x / np.sum(x) + b


def assigns_in_place(x, a, b):
    out = a * x
    out[x > 1] = b
    return out


def branches_on_data(x, a, b):
    if a > 0:
        return a * x
    return b * x


def loops_over_data(x, a, b):
    total = 0.0
    for value in x:
        total = total + a * value
    return total + b


def helper(x, a):
    return a * x


def calls_a_helper(x, a, b):
    return helper(x, a) + b


def while_loop(x, a, b):
    k = 0
    while k < 3:
        k += 1
    return a * x + b


@pytest.mark.parametrize("f, why", [
    (sums_over_x, "np.sum"),
    (assigns_in_place, "assigning"),
    (branches_on_data, "branch"),
    (loops_over_data, "loop"),
    (calls_a_helper, "helper"),
    (while_loop, "while"),
    ((lambda x, a, b: a * x + b, lambda x, a, b: a - x * b)[0], "2 lambdas with these"),
    (np.sin, "objects"),
])
def test_models_it_cannot_read_are_refused_with_a_reason(f, why):
    with pytest.raises(Unsupported, match=why):
        generate_source(f, 2, 1)


def test_a_lambda_is_read_as_its_def_would_be():
    # scipy users write lambdas; their derivatives were finite differences (5x slower on
    # numba). A lambda that a call's arguments continue below parses with its file.
    model = (lambda x, a, b, c:  # noqa: E731 - its first line does not parse alone
             a * np.exp(-b * x) + c)
    p, x = np.array([2.5, 1.3, 0.5]), np.linspace(0.0, 4.0, 7)
    values, jac = _points(model, p, x)
    np.testing.assert_allclose(values, model(x, *p), rtol=1e-15)
    np.testing.assert_allclose(jac[1], -p[0] * x * np.exp(-p[1] * x), rtol=1e-14)
    value_source, _ = generate_source(model, 3, 1)
    assert "math.exp" in value_source


def scaled_peak(x, a, mu, *, width=1.0, offset=0.0):
    return a * np.exp(-((x - mu) / width) ** 2) + offset


def test_a_partial_with_keywords_is_read_with_them_as_constants():
    # scipy users bind a model's constants with functools.partial; those fits ran on
    # the NumPy engine (numba cannot compile a partial), 10x slower than scipy.
    import functools

    model = functools.partial(scaled_peak, width=0.7)
    p, x = np.array([2.0, 0.3]), np.linspace(-2.0, 2.0, 9)
    values, jac = _points(model, p, x)
    np.testing.assert_allclose(values, model(x, *p), rtol=1e-14)
    np.testing.assert_allclose(jac[0], np.exp(-((x - 0.3) / 0.7) ** 2), rtol=1e-14)
    with pytest.raises(Unsupported, match="positional arguments"):
        generate_source(functools.partial(scaled_peak, np.zeros(3)), 2, 1)


def test_the_check_refuses_generated_code_that_disagrees_with_the_model(monkeypatch):
    def wider(x, a, mu, sigma, c):
        return a * np.exp(-0.25 * ((x - mu) / sigma) ** 2) + c

    generate = _forward_mode._generate
    wrong = generate(gaussian, 4, 1)
    monkeypatch.setattr(_forward_mode, "_generate", lambda f, n_params, n_variables: (
        wrong if f is wider else generate(f, n_params, n_variables)))
    found, reason = _forward_mode.exact_or_none(wider, 4, 1, np.linspace(0, 1, 5),
                                                np.array([1.0, 0.5, 0.3, 0.1]))
    assert found is None and "differs" in reason


def test_a_model_with_side_effects_is_refused():
    values = []

    def remembers(x, a, b):
        values.append(a)
        return a * x + b * len(values)

    found, reason = _forward_mode.exact_or_none(remembers, 2, 1, np.linspace(0, 1, 5),
                                                np.array([1.0, 2.0]))
    assert found is None and "values.append" in reason


def test_a_changed_global_regenerates_the_functions(monkeypatch):
    x = np.linspace(0.5, 3, 7)
    p = np.array([1.2, 0.7])
    first, _ = _forward_mode.exact_or_none(peaks_scale, 2, 1, x, p)
    again, _ = _forward_mode.exact_or_none(peaks_scale, 2, 1, x, p)
    assert again is first  # cached while the global is unchanged
    monkeypatch.setattr(sys.modules[__name__], "SCALE", 5.0)
    changed, _ = _forward_mode.exact_or_none(peaks_scale, 2, 1, x, p)
    assert changed is not first
    jac = np.zeros((2, 1))
    assert changed[1](x[None, :], 0, p, jac, 0) == pytest.approx(peaks_scale(x[:1], *p)[0])
    assert jac[0, 0] == pytest.approx(5.0 * x[0])


SCALE = 2.0


def peaks_scale(x, a, b):
    return SCALE * a * x + b


needs_numba = pytest.mark.skipif(not __import__("autofit")._dispatch.is_installed("numba"),
                                 reason="numba is not installed")


@needs_numba
def test_curve_fit_on_numba_uses_the_exact_derivatives_and_agrees_with_numpy():
    import autofit

    x = np.linspace(0, 10, 400)
    truth = (2.0, 3.0, 5.0, 0.3, 0.1)
    y = damped_cosine(x, *truth) + 0.05 * np.random.default_rng(0).normal(size=x.size)
    p0 = (1.8, 2.5, 4.9, 0.2, 0.0)
    popt, pcov, info, _, _ = autofit.curve_fit(damped_cosine, x, y, p0=p0, backend="numba",
                                               full_output=True)
    assert info["backend"] == "numba"
    assert "derivatives: exact" in info["backend_reason"]
    reference, reference_cov, info_np, _, _ = autofit.curve_fit(
        damped_cosine, x, y, p0=p0, backend="numpy", full_output=True)
    # χ² pins the parameters down to about sqrt(eps) relative: agreement to 1e-7.
    np.testing.assert_allclose(popt, reference, rtol=1e-7)
    np.testing.assert_allclose(pcov, reference_cov, rtol=1e-6)
    assert info["chi2"] <= info_np["chi2"] * (1 + 1e-12)
    forced, _, info_fd, _, _ = autofit.curve_fit(damped_cosine, x, y, p0=p0, jac="2-point",
                                                 backend="numba", full_output=True)
    assert "derivatives: finite differences" in info_fd["backend_reason"]
    np.testing.assert_allclose(forced, popt, rtol=1e-8)


@needs_numba
def test_curve_fit_of_a_lambda_on_numba_takes_its_exact_derivatives():
    import autofit

    x = np.linspace(0, 4, 200)
    y = 2.5 * np.exp(-1.3 * x) + 0.01 * np.random.default_rng(6).normal(size=x.size)
    popt, _, info, _, _ = autofit.curve_fit(lambda x, a, b: a * np.exp(-b * x),
                                            x, y, p0=[1.0, 1.0], backend="numba",
                                            full_output=True)
    assert "derivatives: exact" in info["backend_reason"], info["backend_reason"]
    expected, _ = scipy.optimize.curve_fit(lambda x, a, b: a * np.exp(-b * x), x, y,
                                           p0=[1.0, 1.0])
    np.testing.assert_allclose(popt, expected, rtol=1e-6)


@needs_numba
def test_curve_fit_of_a_partial_on_numba_takes_its_exact_derivatives():
    import functools

    import autofit

    x = np.linspace(-2, 2, 200)
    model = functools.partial(scaled_peak, width=0.7, offset=0.1)
    y = model(x, 2.0, 0.3) + 0.01 * np.random.default_rng(7).normal(size=x.size)
    popt, _, info, _, _ = autofit.curve_fit(model, x, y, p0=[1.5, 0.0], backend="numba",
                                            full_output=True)
    assert info["backend"] == "numba"
    assert "derivatives: exact" in info["backend_reason"], info["backend_reason"]
    expected, _ = scipy.optimize.curve_fit(model, x, y, p0=[1.5, 0.0])
    np.testing.assert_allclose(popt, expected, rtol=1e-6)


@needs_numba
def test_jac_exact_raises_when_the_derivatives_cannot_be_generated():
    import autofit

    x = np.linspace(0.1, 2, 50)
    with pytest.raises(ValueError, match="jac='exact'.*np.sum"):
        autofit.curve_fit(sums_over_x, x, 2 * x + 1, p0=[1, 1], jac="exact", backend="numba")
    popt, _ = autofit.curve_fit(decay, x, decay(x, 2, 1, 0.5), p0=[1.5, 1.2, 0.4],
                                jac="exact", backend="numba")
    np.testing.assert_allclose(popt, [2, 1, 0.5], rtol=1e-10)


@needs_numba
def test_fit_batch_on_numba_uses_the_exact_derivatives():
    import autofit

    f = np.linspace(2.8, 2.9, 60)
    truth = np.array([0.02, 2.82, 0.004, 0.03, 2.86, 0.005, 1.0])
    rng = np.random.default_rng(1)
    starts = truth * (1 + 0.05 * rng.normal(size=(20, 7)))
    starts[:, [1, 4]] = truth[[1, 4]] + 0.0005 * rng.normal(size=(20, 2))
    y = np.stack([peaks_full_like(f, *truth)] * 20) + 1e-4 * rng.normal(size=(20, 60))
    result = autofit.fit_batch(peaks_full_like, f, y, p0=starts, backend="numba")
    assert result.backend == "numba"
    assert "derivatives: exact" in result.backend_reason
    assert result.converged.all()
    reference = autofit.fit_batch(peaks_full_like, f, y, p0=starts, backend="numpy")
    np.testing.assert_allclose(result.chi2, reference.chi2, rtol=1e-6)


def rational(x, a, b, c):
    return a / (x - b) + c


@needs_numba
def test_the_common_call_returns_what_the_general_path_returns():
    import autofit
    from autofit import _curve_fit

    x = np.linspace(0, 4, 300)
    y = decay(x, 2.5, 1.3, 0.5) + 0.01 * np.random.default_rng(2).normal(size=x.size)
    p0 = [2.0, 1.0, 0.3]
    assert _curve_fit._common_call(decay, x, y, p0, "numpy") is None  # numpy: general path
    general = autofit.curve_fit(decay, x, y, p0=p0, backend="numba", full_output=True)
    common = _curve_fit._common_call(decay, x, y, p0, "numba")  # compiled by the call above
    assert common is not None
    np.testing.assert_array_equal(common[0], general[0])
    np.testing.assert_array_equal(common[1], general[1])
    popt, pcov = autofit.curve_fit(decay, x, y, p0, backend="numba")
    np.testing.assert_array_equal(popt, general[0])
    # Anything but the common case goes the general way, with its checks and messages.
    assert _curve_fit._common_call(decay, x, np.where(x > 1, np.nan, y), p0, "numba") is None
    with pytest.raises(ValueError, match="ydata contains 1 non-finite"):
        autofit.curve_fit(decay, x, np.where(x == x[7], np.inf, y), p0, backend="numba")
    assert _curve_fit._common_call(decay, x, y, [1.0, 2.0], "numba") is None
    with pytest.raises(ValueError, match="p0 has 2 value"):
        autofit.curve_fit(decay, x, y, [1.0, 2.0], backend="numba")
    assert _curve_fit._common_call(decay, list(x), y, p0, "numba") is None


@needs_numba
@pytest.mark.parametrize("weighting", ["none", "sigma", "absolute_sigma"])
def test_the_common_call_with_full_output_returns_what_the_general_path_returns(weighting):
    import autofit
    from autofit import _curve_fit

    x = np.linspace(0, 4, 300)
    rng = np.random.default_rng(9)
    sigma = 0.005 + 0.02 * rng.random(x.size)
    y = decay(x, 2.5, 1.3, 0.5) + sigma * rng.normal(size=x.size)
    kwargs = {"none": {}, "sigma": {"sigma": sigma},
              "absolute_sigma": {"sigma": sigma, "absolute_sigma": True}}[weighting]
    p0 = [2.0, 1.0, 0.3]
    autofit.curve_fit(decay, x, y, p0, backend="numba", **kwargs)  # compiles
    common = _curve_fit._common_call(decay, x, y, p0, "numba", kwargs.get("sigma"),
                                     kwargs.get("absolute_sigma", False), True)
    general = _curve_fit.solve(decay, x, y, p0, backend="numba", full_output=True,
                               **kwargs).curve_fit_output(True)
    assert common is not None
    np.testing.assert_array_equal(common[0], general[0])
    np.testing.assert_array_equal(common[1], general[1])
    assert common[3:] == general[3:]  # mesg, ier
    assert common[2].keys() == general[2].keys()
    for key, value in general[2].items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(common[2][key], value, err_msg=key)
        else:
            assert common[2][key] == value, key


@needs_numba
def test_the_common_call_never_loads_a_backend(monkeypatch):
    # In a fresh process the plain call loaded numba's host (importing numba, ~0.2 s) on
    # the first call, which then waited 160-290 ms where the general path answers in ~25
    # ms while numba loads in the background.
    from autofit import _curve_fit, _dispatch

    x = np.linspace(0, 4, 100)
    y = decay(x, 2.5, 1.3, 0.5)

    def loads(name):
        raise AssertionError(f"the common call loaded {name!r}'s host")

    monkeypatch.setattr(_dispatch, "_hosts", {})
    monkeypatch.setattr(_dispatch, "host_of", loads)
    assert _curve_fit._common_call(decay, x, y, [2.0, 1.0, 0.3], "numba") is None


@needs_numba
@pytest.mark.parametrize("absolute_sigma", [False, True])
def test_the_common_call_with_sigma_returns_what_the_general_path_returns(absolute_sigma):
    import autofit
    from autofit import _curve_fit

    x = np.linspace(0, 4, 300)
    rng = np.random.default_rng(4)
    sigma = 0.005 + 0.02 * rng.random(x.size)
    y = decay(x, 2.5, 1.3, 0.5) + sigma * rng.normal(size=x.size)
    p0 = [2.0, 1.0, 0.3]
    general = autofit.curve_fit(decay, x, y, p0=p0, sigma=sigma, absolute_sigma=absolute_sigma,
                                backend="numba", full_output=True)
    common = _curve_fit._common_call(decay, x, y, p0, "numba", sigma, absolute_sigma)
    assert common is not None
    np.testing.assert_array_equal(common[0], general[0])
    np.testing.assert_array_equal(common[1], general[1])
    popt, pcov = autofit.curve_fit(decay, x, y, p0, sigma=sigma, absolute_sigma=absolute_sigma,
                                   backend="numba")
    np.testing.assert_array_equal(pcov, general[1])
    # A sigma the general path must check, expand or refuse goes its way.
    for odd in (np.where(x > 1, 0.0, sigma), np.where(x > 1, np.inf, sigma), list(sigma),
                0.01, sigma[:-1], sigma.astype(np.float32)):
        assert _curve_fit._common_call(decay, x, y, p0, "numba", odd, absolute_sigma) is None
    with pytest.raises(ValueError, match="sigma must be positive"):
        autofit.curve_fit(decay, x, y, p0, sigma=np.where(x > 1, 0.0, sigma), backend="numba")


@needs_numba
def test_a_fit_that_fails_on_the_common_call_is_reported_by_the_general_path():
    import autofit

    x = np.linspace(0, 4, 50)
    y = rational(x, 1.0, -1.0, 0.5)
    autofit.curve_fit(rational, x, y, p0=[1.2, -1.1, 0.4], backend="numba")  # compiles
    with pytest.raises(ValueError, match="model's output at p0"):  # a pole at x = 2
        autofit.curve_fit(rational, x, y, p0=[1.0, x[25], 0.5], backend="numba")


def test_jac_exact_is_never_silently_finite_differences(monkeypatch):
    import autofit
    from autofit.original import host

    x = np.linspace(0.1, 2, 50)
    y = decay(x, 2, 1, 0.5)
    # NumPy runs the generated derivatives on arrays; where it could not, it would refuse.
    _, _, info, _, _ = autofit.curve_fit(decay, x, y, p0=[1.5, 1.2, 0.4], jac="exact",
                                         backend="numpy", full_output=True)
    assert info["backend"] == "numpy" and _forward_mode.EXACT_NOTE in info["backend_reason"]
    monkeypatch.setattr(host, "exact_prepared", lambda prepared, *args: prepared)
    with pytest.raises(autofit.BackendError, match="would use finite differences"):
        autofit.curve_fit(decay, x, y, p0=[1.5, 1.2, 0.4], jac="exact", backend="numpy")
    with pytest.raises(ValueError, match="fused=False"):
        autofit.curve_fit(decay, x, y, p0=[1.5, 1.2, 0.4], jac="exact", fused=False)


@needs_numba
def test_a_fused_fit_that_stalls_is_finished_by_lm_solve(monkeypatch):
    import autofit
    from autofit import _curve_fit

    x = np.linspace(0, 10, 300)
    y = damped_cosine(x, 2.0, 3.0, 5.0, 0.3, 0.1)
    p0 = (1.8, 2.5, 4.9, 0.2, 0.0)
    monkeypatch.setattr(_curve_fit, "fused_budget", lambda n_params: 2)
    popt, _, info, _, _ = autofit.curve_fit(damped_cosine, x, y, p0=p0, backend="numba",
                                            full_output=True)
    assert "had not converged after 2 passes" in info["backend_reason"]
    assert info["status"].converged
    np.testing.assert_allclose(popt, (2.0, 3.0, 5.0, 0.3, 0.1), rtol=1e-9)
    # The common call too: it hands a fit the fused pass did not finish to the general path.
    again, _ = autofit.curve_fit(damped_cosine, x, y, p0, backend="numba")
    np.testing.assert_array_equal(again, popt)


def root_of_a_product(x, a, b):
    return np.sqrt(a * x) + b


def singular_power(x, a, b):
    return a * x ** b


@pytest.mark.parametrize("backend", backend_params())
def test_a_derivative_that_is_0_over_0_where_the_model_is_finite_is_0(backend):
    """sqrt(a x) at x = 0: the tangent x / (2 sqrt(a x)) is 0/0, where the model does not
    move with a (finite differences find 0). The generated derivative is 0 there, and the
    fit ends where scipy's does on every backend (it ended NONFINITE on numba and jax)."""
    import autofit

    x = np.linspace(0.0, 4.0, 200)
    y = root_of_a_product(x, 2.0, 0.5) + 0.01 * np.random.default_rng(0).normal(size=x.size)
    expected, _ = scipy.optimize.curve_fit(root_of_a_product, x, y, p0=[1.0, 0.0])
    popt, _, info, _, _ = autofit.curve_fit(root_of_a_product, x, y, p0=[1.0, 0.0],
                                            backend=backend, strict=True, full_output=True)
    assert info["status"].converged and _forward_mode.EXACT_NOTE in info["backend_reason"]
    np.testing.assert_allclose(popt, expected, rtol=1e-7)
    x = np.linspace(0.0, 3.0, 100)
    y = singular_power(x, 1.5, 1.7) + 0.01 * np.random.default_rng(1).normal(size=x.size)
    expected, _ = scipy.optimize.curve_fit(singular_power, x, y, p0=[1.0, 1.5])
    popt, _, info, _, _ = autofit.curve_fit(singular_power, x, y, p0=[1.0, 1.5],
                                            backend=backend, strict=True, full_output=True)
    assert info["status"].converged
    np.testing.assert_allclose(popt, expected, rtol=1e-7)


def test_only_derivatives_through_a_singular_rule_take_the_nan_check():
    """The check (a select per derivative and point) is written only where a rule that can
    be 0/0 leads to the derivative: numba's pass of a gaussian was 8% slower with it."""
    _, plain = generate_source(gaussian, 4, 1)
    assert " if " not in plain
    _, root = generate_source(root_of_a_product, 2, 1)
    columns = [line.strip() for line in root.splitlines() if line.strip().startswith("jac[")]
    assert columns[0].endswith("else 0.0") and columns[1] == "jac[1, col] = 1.0"
    # On arrays the columns to check are listed for _columns (a select per column cost the
    # NumPy engine a third more): the first here, none of the gaussian's.
    for source, listed in ((root, "(0,)"), (plain, "()")):
        jacobian, both = _forward_mode.array_jacobian_source(source, 4 - 2 * (
            source is root)).split("\n\n")
        assert jacobian.rstrip().endswith(f", _X, {listed})")
        assert both.rstrip().endswith(f", _X, {listed}))")  # (value, columns)
    value, gradient = _forward_mode.point_functions(root_of_a_product, 2, 1)
    jac = np.zeros((2, 1))
    with np.errstate(invalid="ignore"):  # 0/0 in Python (numba's compiled code is silent)
        assert gradient(np.zeros((1, 1)), 0, np.array([2.0, 0.5]), jac, 0) == 0.5
    assert jac[0, 0] == 0.0 and jac[1, 0] == 1.0


def signature_over_lines(
    x, a,
    b,
):
    """A docstring whose lines
start at the margin."""
    return a * np.exp(
-b * x)  # a continuation at the margin


def _noted(f):
    return f


@_noted
def decorated(x, a, b): return a * x + b  # noqa: E704


def test_the_source_block_is_the_one_inspect_finds():
    """A model's lines are read without ``tokenize`` (1.5 ms of a script's first fit): the
    same definition as ``inspect.getsource`` gives, for every model of these tests and for
    signatures over lines, text at the margin, decorators and one-line bodies."""
    import ast
    import inspect
    import textwrap

    models = [case[0] for case in CASES + CASES_2D] + [signature_over_lines, decorated]
    for f in models:
        if f.__name__ == "<lambda>":
            continue
        expected = ast.dump(ast.parse(textwrap.dedent(inspect.getsource(f))))
        assert ast.dump(_forward_mode._function_block(f)) == expected, f.__name__
    x = np.linspace(0.0, 2.0, 20)
    for f, p in ((signature_over_lines, [1.5, 0.7]), (decorated, [2.0, 0.5])):
        value, gradient = _forward_mode.point_functions(f, 2, 1, x, np.array(p))
        assert value(x[None, :], 3, np.array(p)) == pytest.approx(f(x[3], *p), rel=1e-15)
