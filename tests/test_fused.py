"""Large single fits: curve_fit's fused path (kernel ``lm_fused``) against scipy and lm_solve.

The cross-backend agreement of the kernel itself is in the generated tests
(``tests/test_kernels.py -k lm_fused``); here the user-facing path: routing, agreement with
scipy.optimize.curve_fit and with the stored-Jacobian path, memory, bad input.
"""

import contextlib
import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.optimize

import autofit
from autofit import _codes, _curve_fit, models
from autofit._codes import JAC_ANALYTIC
from tests.conftest import backend_params

N = 200_000
BACKENDS = backend_params()


def decay(x, a, b, c):
    return a * np.exp(-b * x) + c


def gaussian(x, a, mu, s, c):
    return a * np.exp(-((x - mu) ** 2) / (2.0 * s * s)) + c


def _data(model, truth, x, seed=0, noise=0.01):
    rng = np.random.default_rng(seed)
    return model(x, *truth) + noise * rng.normal(size=x.shape[-1])


def _user(f, backend):
    """The user function as that backend runs it: jax.numpy code on jax."""
    if backend != "jax":
        return f
    import jax.numpy as jnp

    namespace = dict(f.__globals__, np=jnp)
    return type(f)(f.__code__, namespace, f.__name__)


@pytest.fixture(scope="module")
def decay_data():
    x = np.linspace(0.0, 5.0, N)
    return x, _data(decay, (2.5, 1.3, 0.5), x)


def _scipy(f, x, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scipy.optimize.curve_fit(f, x, y, **kwargs)


def _close_to_scipy(popt, pcov, expected_popt, expected_pcov, rtol_cov=1e-4, within=1e-6):
    sigma = np.sqrt(np.diag(expected_pcov))
    # scipy's forward-difference Jacobian is good to ~1e-8: agreement to a millionth of
    # the parameters' standard errors (trf with bounds stops earlier: 1e-4), and of the
    # covariance to rtol_cov.
    assert np.all(np.abs(popt - expected_popt) <= within * sigma), (popt, expected_popt)
    np.testing.assert_allclose(pcov, expected_pcov, rtol=rtol_cov)


def test_large_problems_take_the_fused_path(decay_data, monkeypatch):
    x, y = decay_data
    calls = []
    real = _curve_fit._fused.run_fused
    # (backend, max_nfev) of each fused run
    monkeypatch.setattr(_curve_fit._fused, "run_fused",
                        lambda *a, **k: calls.append((a[0], a[11])) or real(*a, **k))
    whole_budget = _curve_fit.default_max_nfev(3)
    autofit.curve_fit(decay, x, y, p0=[2.0, 1.0, 0.4], backend="numpy")
    assert calls == [("numpy", whole_budget)]
    # A small problem of a model whose derivatives autofit can generate takes numba's
    # road: the fused pass within its own budget of passes (NumPy runs the generated
    # derivatives too: one evaluation each), lm_solve after it.
    autofit.curve_fit(decay, x[:1000], y[:1000], p0=[2.0, 1.0, 0.4], backend="numpy")
    assert calls[1:] == [("numpy", _curve_fit.fused_budget(3))]
    autofit.curve_fit(decay, x[:1000], y[:1000], p0=[2.0, 1.0, 0.4], backend="numpy",
                      fused=True)
    assert calls[2:] == [("numpy", whole_budget)]
    autofit.curve_fit(decay, x, y, p0=[2.0, 1.0, 0.4], backend="numpy", fused=False)
    autofit.curve_fit(decay, x[:1000], y[:1000], p0=[2.0, 1.0, 0.4], backend="numpy",
                      fused=False)
    assert len(calls) == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_exponential_decay_agrees_with_scipy(decay_data, backend):
    x, y = decay_data
    expected = _scipy(decay, x, y, p0=[2.0, 1.0, 0.4])
    for f in (models.exponential_decay, _user(decay, backend)):
        popt, pcov, info, _, ier = autofit.curve_fit(f, x, y, p0=[2.0, 1.0, 0.4],
                                                     backend=backend, full_output=True)
        _close_to_scipy(popt, pcov, *expected)
        assert ier in (1, 2, 3, 4, 6) and info["rank"] == 3
        assert info["fvec"].shape == (N,)
        np.testing.assert_allclose(info["fvec"] @ info["fvec"], info["chi2"], rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaussian_with_sigma_and_bounds_agrees_with_scipy(backend):
    x = np.linspace(-5.0, 5.0, N)
    sigma = 0.01 * (1.0 + 0.5 * np.abs(x))
    rng = np.random.default_rng(3)
    y = gaussian(x, 3.0, 0.4, 1.1, 0.2) + sigma * rng.normal(size=N)
    # The amplitude's upper bound sits below the best fit, so it ends active.
    bounds = ([0.0, -1.0, 0.1, -1.0], [2.9, 1.0, 5.0, 1.0])
    p0 = [2.5, 0.2, 1.0, 0.0]
    expected = _scipy(gaussian, x, y, p0=p0, sigma=sigma, bounds=bounds, method="trf",
                      ftol=1e-15, xtol=1e-15, gtol=1e-15)
    for f in (models.gaussian, _user(gaussian, backend)):
        popt, pcov = autofit.curve_fit(f, x, y, p0=p0, sigma=sigma, bounds=bounds,
                                       backend=backend)
        assert popt[0] == 2.9
        _close_to_scipy(popt, pcov, *expected, rtol_cov=1e-3, within=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_agrees_with_the_stored_jacobian_path(decay_data, backend):
    x, y = decay_data
    sigma = 0.01 * (1.0 + x)
    fused = autofit.curve_fit(models.exponential_decay, x, y, sigma=sigma, backend=backend,
                              absolute_sigma=True)
    stored = autofit.curve_fit(models.exponential_decay, x, y, sigma=sigma, backend=backend,
                               absolute_sigma=True, fused=False)
    # Both stop at float64 precision of chi2, which pins the parameters down to ~1e-5 of
    # their standard errors (a chi2 change of one part in 1e14 moves them that much).
    sigma = np.sqrt(np.diag(stored[1]))
    assert np.all(np.abs(fused[0] - stored[0]) <= 1e-4 * sigma)
    np.testing.assert_allclose(fused[1], stored[1], rtol=1e-7)


def test_backends_agree_tightly(decay_data):
    x, y = decay_data
    results = [autofit.curve_fit(models.exponential_decay, x, y, p0=[2.0, 1.0, 0.4],
                                 backend=b) for b in ("numpy", "numba", "jax")]
    for popt, pcov in results[1:]:
        np.testing.assert_allclose(popt, results[0][0], rtol=1e-10)
        np.testing.assert_allclose(pcov, results[0][1], rtol=1e-8)


def test_jax_chunk_loop_and_last_partial_chunk_agree_with_the_reference(decay_data,
                                                                        monkeypatch):
    # At the default chunk size 200,000 points of a 3-parameter model are a single chunk:
    # shrink the chunks so the loop over chunks and the masked last chunk both run.
    pytest.importorskip("jax")
    import autofit.jax.fused as jax_fused

    monkeypatch.setattr(jax_fused, "CPU_CHUNK_ENTRIES", 3000)
    assert N % jax_fused.chunk_size(N, 3, "cpu") != 0
    x, y = decay_data
    expected = autofit.curve_fit(models.exponential_decay, x, y, p0=[2.0, 1.0, 0.4],
                                 backend="numpy")
    popt, pcov = autofit.curve_fit(models.exponential_decay, x, y, p0=[2.0, 1.0, 0.4],
                                   backend="jax")
    np.testing.assert_allclose(popt, expected[0], rtol=1e-10)
    np.testing.assert_allclose(pcov, expected[1], rtol=1e-8)


def test_memory_stays_at_the_size_of_a_chunk():
    """The reference pass holds one chunk's Jacobian, never the (n_points, n_params) one."""
    from autofit import original
    from autofit.original.fused import CHUNK

    n = 3_000_000
    x = np.linspace(-5.0, 5.0, n)
    y = _data(gaussian, (3.0, 0.4, 1.1, 0.2), x)
    inf = np.full(4, np.inf)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = original.lm_fused(original.model_gaussian, original.jacobian_gaussian,
                                JAC_ANALYTIC, x[None, :], y, np.ones(1),
                                np.array([2.5, 0.2, 1.0, 0.0]), -inf, inf, 1e-10, 1e-10,
                                1e-10, 100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out[2] in (1, 2, 3, 4, 6)
    # A few chunk-sized temporaries (the chunk's Jacobian, its weighted copy, the model's
    # own), far below the 96 MB of the (n_points, n_params) Jacobian.
    chunk_jacobian = CHUNK * 4 * 8
    assert peak < 8 * chunk_jacobian < n * 4 * 8 / 5, f"peak {peak / 1e6:.1f} MB"


def test_curve_fit_on_numba_allocates_nothing_of_the_data_size():
    n = 1_000_000
    x = np.linspace(0.0, 5.0, n)
    y = _data(decay, (2.5, 1.3, 0.5), x)
    p0 = [2.0, 1.0, 0.4]
    autofit.curve_fit(models.exponential_decay, x, y, p0=p0, backend="numba")  # compile
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        autofit.curve_fit(models.exponential_decay, x, y, p0=p0, backend="numba")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Beyond an eighth of ydata, only the subsample the fit starts from: x and y at every
    # stride-th point (autofit._fused), a tenth of the data here.
    from autofit import _fused

    subsample = 2 * 8 * (n // _fused._coarse_stride(n))
    assert peak < n * 8 / 8 + subsample, (f"peak {peak / 1e6:.1f} MB for {n * 8 / 1e6:.0f} "
                                          f"MB of ydata")


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_data_is_handled_as_curve_fit_does(decay_data, backend):
    x, y = decay_data
    f = _user(decay, backend)
    bad = y.copy()
    bad[12345] = np.nan
    with pytest.raises(ValueError, match="must not contain infs or NaNs"):
        autofit.curve_fit(f, x, bad, p0=[2.0, 1.0, 0.4], backend=backend)
    bad[777] = np.inf
    with pytest.raises(ValueError, match="must not contain infs or NaNs"):
        autofit.curve_fit(f, x, bad, p0=[2.0, 1.0, 0.4], backend=backend)
    bad[777] = y[777]
    omitted = autofit.curve_fit(f, x, bad, p0=[2.0, 1.0, 0.4], backend=backend,
                                nan_policy="omit")
    keep = np.arange(N) != 12345
    clean = autofit.curve_fit(f, x[keep], y[keep], p0=[2.0, 1.0, 0.4], backend=backend)
    np.testing.assert_allclose(omitted[0], clean[0], rtol=1e-12)


def test_a_model_that_turns_nonfinite_stops_the_fit(decay_data):
    x, y = decay_data

    def overflowing(x, a, b, c):
        return a * np.exp(b * x * 200.0) + c

    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        autofit.curve_fit(overflowing, x, y, p0=[1.0, 0.7, 0.0], backend="numpy")


def test_float32_input_is_upcast(decay_data):
    x, y = decay_data
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    popt32, pcov32 = autofit.curve_fit(models.exponential_decay, x32, y32, backend="numpy")
    popt, pcov = autofit.curve_fit(models.exponential_decay, x32.astype(np.float64),
                                   y32.astype(np.float64), backend="numpy")
    assert popt32.dtype == np.float64
    np.testing.assert_array_equal(popt32, popt)
    np.testing.assert_array_equal(pcov32, pcov)


def test_bad_fused_option_and_matrix_sigma():
    x = np.linspace(0.0, 5.0, 50)
    y = decay(x, 2.5, 1.3, 0.5)
    with pytest.raises(ValueError, match="fused must be None, True or False"):
        autofit.curve_fit(decay, x, y, p0=[2, 1, 0.4], fused="yes")
    with pytest.raises(ValueError, match="fused=True cannot take a covariance matrix"):
        autofit.curve_fit(decay, x, y, p0=[2, 1, 0.4], sigma=np.eye(50), fused=True)
    # Without fused=True a covariance matrix simply takes the stored-Jacobian path.
    popt, _ = autofit.curve_fit(decay, x, y, p0=[2, 1, 0.4], sigma=np.eye(50),
                                backend="numpy")
    np.testing.assert_allclose(popt, [2.5, 1.3, 0.5], rtol=1e-10)


def test_a_user_function_numba_cannot_compile_per_point_falls_back(decay_data):
    x, y = decay_data

    def array_only(x, a, b, c):
        return a * np.exp(-b * x) + c * np.ones(x.shape)

    popt, _, info, _, _ = autofit.curve_fit(array_only, x, y, p0=[2.0, 1.0, 0.4],
                                            backend="numba", full_output=True)
    assert info["backend"] == "numba"
    expected, _ = autofit.curve_fit(decay, x, y, p0=[2.0, 1.0, 0.4], backend="numba")
    np.testing.assert_allclose(popt, expected, rtol=1e-8)


def _float64(backend):
    if backend != "jax":
        return contextlib.nullcontext()
    import jax

    return jax.enable_x64(True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_singular_information_gives_a_pseudo_inverse(backend):
    covariance_from_information = autofit.kernel("covariance_from_information", backend)
    jac = np.random.default_rng(0).normal(size=(100, 3))
    jac[:, 2] = 2.0 * jac[:, 0]
    with _float64(backend):
        pcov, rank = covariance_from_information(jac.T @ jac)
    assert int(rank) == 2
    np.testing.assert_allclose(pcov, np.linalg.pinv(jac.T @ jac), atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_polish_that_fails_does_not_undo_a_converged_fit(backend):
    # Noiseless data, a model without readable source (finite differences, then a central
    # polish): numba's forward fit ended with the offset at ~-2e-19, where the polish's
    # central step is below the model's rounding; its column was zero, the damped system
    # never factorised and curve_fit raised "parameters not determined" (scipy answers).
    namespace = {}
    exec("import numpy as np\ndef f(x, a, b, c):\n    return a * np.exp(-b * x) + c",  # noqa: S102
         namespace)
    x = np.linspace(0.0, 1.0, 100_000)
    popt, _, info, _, ier = autofit.curve_fit(namespace["f"], x, np.exp(-x), p0=[1.0, 1.0, 0.0],
                                              backend=backend, fused=True, full_output=True)
    assert "finite differences" in info["backend_reason"] or backend == "numpy"
    assert ier in (1, 2, 3, 4)
    np.testing.assert_allclose(popt, [1.0, 1.0, 0.0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1, 3, 7])
def test_a_fit_started_at_its_minimum_stops_after_one_step(backend, seed):
    # From the minimum the Gauss-Newton step predicts no measurable reduction of χ², so the
    # fit ends without taking it; and a step taken there (accepted or rejected by rounding
    # alone) must end it too, not raise λ step after step until the xtol test fires
    # (these seeds took 4 or 5 passes that way).
    x = np.linspace(0.0, 5.0, 20_000)
    y = _data(decay, (2.5, 1.3, 0.5), x, seed=seed)
    kwargs = {"fused": True, "backend": backend, "xtol": 0.0, "gtol": 0.0}
    best = autofit.curve_fit(models.exponential_decay, x, y, p0=[2.0, 1.0, 0.3], **kwargs)[0]
    popt, _, info, _, ier = autofit.curve_fit(models.exponential_decay, x, y, p0=best,
                                              full_output=True, **kwargs)
    assert info["nfev"] <= 2 and ier == 1, info
    np.testing.assert_allclose(popt, best, rtol=1e-10)  # an accepted step moves them ~1e-12


def _decay_kernel_parts(backend):
    if backend == "numba":
        from autofit.numba.points import POINT_FUNCTIONS

        return POINT_FUNCTIONS["exponential_decay"]
    from autofit.original import models as reference

    return reference.model_exponential_decay, reference.jacobian_exponential_decay


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_points_of_weight_zero_are_ignored_where_the_model_is_infinite(backend):
    from autofit import _dispatch

    x = np.linspace(0.0, 5.0, 10_001)
    y = _data(decay, (2.5, 1.3, 0.5), x)
    weights = np.ones_like(x)
    # exp(1.3 * 1000) overflows: these points would make every sum inf or nan.
    ignored = np.arange(3, x.size, 7)
    x_bad = x.copy()
    x_bad[ignored] = -1000.0
    weights[ignored] = 0.0
    kept = weights != 0.0
    model, jacobian = _decay_kernel_parts(backend)
    lm_fused = _dispatch.load(backend).lm_fused
    free = (np.full(3, -np.inf), np.full(3, np.inf))
    p0 = np.array([2.0, 1.0, 0.3])
    tolerances = (1e-12, 1e-12, 0.0, 1000)
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        with_zeros = lm_fused(model, jacobian, JAC_ANALYTIC, x_bad[None, :], y, weights, p0,
                              *free, *tolerances)
    # The model's own overflow may warn; autofit's masked sums do not.
    assert not [w for w in raised if w.filename.endswith("fused.py")]
    without = lm_fused(model, jacobian, JAC_ANALYTIC, x[None, kept], y[kept],
                       np.ones(kept.sum()), p0, *free, *tolerances)
    assert with_zeros[2] in (1, 2, 3, 4)
    # The same fit up to the order of the sums (the chunks hold other points).
    np.testing.assert_allclose(with_zeros[0], without[0], rtol=1e-9)
    np.testing.assert_allclose(with_zeros[1], without[1], rtol=1e-9)


def _outlier_gaussian(n=60, seed=5):
    """A gaussian with a tenth of its points off by one to three amplitudes, the weights
    1 / f_scale (0.05) as fit_batch folds f_scale in."""
    from autofit import original

    rng = np.random.default_rng(seed)
    x = np.linspace(-5.0, 5.0, n)
    truth = np.array([3.0, 0.4, 1.1, 0.2])
    y = original.model_gaussian(x, truth) + 0.03 * rng.normal(size=n)
    spikes = rng.choice(n, size=n // 10, replace=False)
    y[spikes] += rng.choice([-1.0, 1.0], size=spikes.size) * rng.uniform(1.0, 3.0,
                                                                          spikes.size)
    return x, y, np.full(n, 1.0 / 0.05), truth * 1.05


def _gaussian_kernel_parts(backend):
    if backend == "numba":
        from autofit.numba.points import POINT_FUNCTIONS

        return POINT_FUNCTIONS["gaussian"]
    from autofit import _dispatch

    module = _dispatch.load(backend)
    return module.model_gaussian, module.jacobian_gaussian


def _batch_reference(x, y, weights, p0, estimator):
    """lm_batch's fit of the same data, as one fit, converged to rounding level."""
    from autofit import original

    inf = np.full((1, 4), np.inf)
    params, _, _, status, covariance = original.lm_batch(
        original.model_gaussian, original.jacobian_gaussian, JAC_ANALYTIC, x[None, None],
        y[None], weights[None], p0[None], -inf, inf, np.ones(4, dtype=bool), estimator,
        1e-14, 500)
    assert status[0] in (1, 2, 3, 4, 6)
    return params[0], covariance[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", sorted(_codes.ROBUST_LOSSES))
def test_robust_lm_fused_agrees_with_lm_batch(backend, loss):
    # One fit by each solver: the same loss, hence the same minimum and scipy's covariance
    # (lm_fused's information is the matrix whose inverse lm_batch returns).
    from autofit import _dispatch

    code = _codes.ROBUST_LOSSES[loss]
    x, y, weights, p0 = _outlier_gaussian()
    expected_params, expected_covariance = _batch_reference(x, y, weights, p0, code)
    inf = np.full(4, np.inf)
    with _float64(backend):
        out = _dispatch.load(backend).lm_fused(
            *_gaussian_kernel_parts(backend), JAC_ANALYTIC, x[None, :], y, weights, p0,
            -inf, inf, 1e-14, 1e-14, 1e-14, 1000, code)
        params, chi2, status, _, _, information = (np.asarray(v) for v in out)
    assert int(status) in (1, 2, 3, 4, 6)
    np.testing.assert_allclose(params, expected_params, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.inv(information), expected_covariance, rtol=1e-5)
    # chi2 is the robust cost Σ rho, not the sum of squares (the spikes dominate that).
    from autofit import original

    residuals = weights * (y - original.model_gaussian(x, params))
    assert float(chi2) < 0.5 * residuals @ residuals


@pytest.mark.parametrize("backend", BACKENDS)
def test_lm_fused_refuses_an_estimator_it_does_not_fit(backend):
    from autofit import _dispatch

    x, y, weights, p0 = _outlier_gaussian()
    inf = np.full(4, np.inf)
    lm_fused = _dispatch.load(backend).lm_fused
    for code in (_codes.ESTIMATOR_MLE, 9):
        with pytest.raises(ValueError, match="lm_fused: estimator must be ESTIMATOR_LSE or "
                                             "a robust loss code"):
            lm_fused(*_gaussian_kernel_parts(backend), JAC_ANALYTIC, x[None, :], y, weights,
                     p0, -inf, inf, 1e-10, 1e-10, 1e-10, 100, code)


def test_numba_compiles_one_fused_pass_and_one_robust_reweighing_for_every_loss():
    # Least squares and every robust loss run on the one compiled pass of a model (a loss
    # reweighs the pass's rows afterwards), and the reweighing is compiled once for models
    # of every size: a compilation per loss, or per model size, would show here.
    pytest.importorskip("numba")
    from autofit.numba import fused, passes, points

    x, y, weights, p0 = _outlier_gaussian()
    inf = np.full(4, np.inf)
    functions = points.POINT_FUNCTIONS["gaussian"]
    for code in (_codes.ESTIMATOR_LSE, *sorted(_codes.ROBUST_LOSSES.values())):
        fused.lm_fused(*_gaussian_kernel_parts("numba"), JAC_ANALYTIC, x[None, :], y,
                       weights, p0, -inf, inf, 1e-10, 1e-10, 1e-10, 100, code)
        assert fused.is_compiled(*functions, JAC_ANALYTIC, 4)
    solvers = [key for key in fused._SOLVERS if key[0] is functions[0]]
    assert len(solvers) == 1, solvers
    decay_x = np.linspace(0.0, 5.0, 300)
    decay_y = 2.0 * np.exp(-1.3 * decay_x) + 0.5
    decay_y[::17] += 3.0
    fused.lm_fused(*points.POINT_FUNCTIONS["exponential_decay"], JAC_ANALYTIC,
                   decay_x[None, :], decay_y, np.ones(1), np.array([1.0, 1.0, 0.0]),
                   np.full(3, -np.inf), np.full(3, np.inf), 1e-10, 1e-10, 1e-10, 100,
                   _codes.ESTIMATOR_CAUCHY)
    # (none where the solvers came from the disk cache without compiling it)
    assert len(passes.robust_rows().signatures) <= 1


def test_numba_driver_compiles_its_pass_once_for_the_fit_and_the_information():
    # The flag that makes the last pass the robust information is a plain bool: as literals
    # (False in the loop, True after it) the driver compiled its pass twice.
    numba = pytest.importorskip("numba")
    from numba import types

    from autofit.numba import fused

    f8, i8 = types.float64, types.int64
    vector, matrix = f8[::1], f8[:, ::1]
    numba.njit((i8, i8, i8, matrix, vector, vector, vector, vector, vector, f8, f8, f8, i8,
                i8), cache=False, error_model="numpy")(fused._solve)
    assert len(fused._evaluate.signatures) == 1, fused._evaluate.signatures


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_fused_takes_a_robust_loss(backend):
    # curve_fit's fused path: the covariance is the pseudo-inverse of the robust
    # information, lm_batch's for the same loss.
    from autofit import _adapters, _fused

    x, y, weights, p0 = _outlier_gaussian()
    code = _codes.ESTIMATOR_CAUCHY
    expected_params, expected_covariance = _batch_reference(x, y, weights, p0, code)
    prepared = _adapters.prepare(backend, models.gaussian, 4, None)
    inf = np.full(4, np.inf)
    options = {"ftol": 1e-14, "xtol": 1e-14, "gtol": 1e-14}
    fit = _fused.run_fused(backend, models.gaussian, None, prepared, x, y, weights, p0, -inf,
                           inf, options, 1000, False, estimator=code)
    assert fit["status"] in _codes.CONVERGED_CODES and fit["rank"] == 4
    np.testing.assert_allclose(fit["params"], expected_params, rtol=1e-6)
    np.testing.assert_allclose(fit["pcov"], expected_covariance, rtol=1e-5)


def _recording(lm_fused, calls):
    def record(*args):
        out = lm_fused(*args)
        calls.append((args[4].shape[0], int(out[3])))
        return out
    return record


def _coarse_arguments(x, y, p0):
    n_params = len(p0)
    return (x[None, :], y, np.ones(1), np.asarray(p0, dtype=float), np.full(n_params, -np.inf),
            np.full(n_params, np.inf), (1e-15, 1e-15, 1e-15), 10_000, _codes.ESTIMATOR_LSE)


def test_a_huge_fit_starts_from_a_fit_to_a_subsample(decay_data, monkeypatch):
    from autofit import _fused
    from autofit.original import lm_fused, model_exponential_decay

    monkeypatch.setattr(_fused, "COARSE_MIN_POINTS", 100_000)
    monkeypatch.setattr(_fused, "COARSE_POINTS", 10_000)
    x, y = decay_data
    calls = []
    model = (model_exponential_decay, autofit.original.jacobian_exponential_decay,
             JAC_ANALYTIC)
    arguments = _coarse_arguments(x, y, [1.0, 1.0, 0.0])
    coarse = _fused._fit_from_coarse_start(_recording(lm_fused, calls), *model, *arguments,
                                           True)
    direct = _fused._fit_from_coarse_start(lm_fused, *model, *arguments, False)
    # Every 20th point first (200,000 // 10,000), then all of them from its minimum.
    assert [n for n, _ in calls] == [N // 20, N]
    assert coarse[3] == sum(nfev for _, nfev in calls)  # every evaluation counted
    assert calls[1][1] < direct[3]  # fewer passes over all the points
    assert int(coarse[2]) in _codes.CONVERGED_CODES
    errors = np.sqrt(np.diag(np.linalg.inv(direct[5])) * direct[1] / (N - 3))
    np.testing.assert_allclose(coarse[0], direct[0], rtol=0, atol=1e-6 * errors.max())
    assert coarse[1] <= direct[1] * (1 + 1e-12)


def test_a_subsample_that_misses_a_narrow_peak_does_not_decide_the_fit(monkeypatch):
    # A peak 3 points wide in 200,000: every 20th point sees none of it, so the subsample's
    # fit has no peak to find; the fit from p0 finds it, and that is what curve_fit returns.
    from autofit import _fused
    from autofit.original import jacobian_gaussian, lm_fused, model_gaussian

    monkeypatch.setattr(_fused, "COARSE_MIN_POINTS", 100_000)
    monkeypatch.setattr(_fused, "COARSE_POINTS", 10_000)
    x = np.arange(N, dtype=float)
    truth = [5.0, 100_007.0, 1.5, 0.2]
    y = model_gaussian(x, np.array(truth)) + 0.01 * np.random.default_rng(3).normal(size=N)
    assert np.max(model_gaussian(x[::20], np.array(truth)) - 0.2) < 1e-3
    p0 = [4.0, 100_006.0, 2.0, 0.0]
    calls = []
    model = (model_gaussian, jacobian_gaussian, JAC_ANALYTIC)
    arguments = _coarse_arguments(x, y, p0)
    coarse = _fused._fit_from_coarse_start(_recording(lm_fused, calls), *model, *arguments,
                                           True)
    direct = _fused._fit_from_coarse_start(lm_fused, *model, *arguments, False)
    np.testing.assert_allclose(direct[0], truth, rtol=1e-2)
    assert coarse[1] <= direct[1] * (1 + 1e-9)
    np.testing.assert_allclose(coarse[0], direct[0], rtol=1e-6)
    assert coarse[3] == sum(nfev for _, nfev in calls)
    assert max(nfev for _, nfev in calls) <= 10_000


@pytest.mark.parametrize("backend", BACKENDS)
def test_curve_fit_on_a_huge_fit_agrees_with_and_without_the_subsample(decay_data, backend,
                                                                        monkeypatch):
    from autofit import _fused

    x, y = decay_data
    expected, expected_cov = scipy.optimize.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0])
    found = {}
    for threshold in (100_000, 10**12):
        monkeypatch.setattr(_fused, "COARSE_MIN_POINTS", threshold)
        params, pcov, info, _, _ = autofit.curve_fit(_user(decay, backend), x, y,
                                                     p0=[1.0, 1.0, 0.0], backend=backend,
                                                     full_output=True)
        found[threshold] = params, info["nfev"]
        np.testing.assert_allclose(params, expected, rtol=0,
                                   atol=1e-6 * np.sqrt(np.diag(expected_cov)).max())
    np.testing.assert_allclose(found[100_000][0], found[10**12][0], rtol=1e-9)


def test_a_full_fit_worse_per_point_than_its_subsample_is_also_fitted_from_p0(monkeypatch):
    # The control flow alone, on a stand-in kernel: started from the subsample's minimum the
    # full fit ends at 5 per point against the subsample's 1, so the fit from p0 runs as
    # well and its lower χ² is kept; every evaluation is counted.
    from autofit import _fused

    monkeypatch.setattr(_fused, "COARSE_MIN_POINTS", 1000)
    monkeypatch.setattr(_fused, "COARSE_POINTS", 100)
    starts = []

    def kernel(model, jacobian, jac_method, x, y, w, start, lower, upper, ftol, xtol, gtol,
               max_nfev, estimator):
        starts.append((y.shape[0], float(start[0])))
        if y.shape[0] < 1000:
            return np.array([7.0]), 1.0 * y.shape[0], _codes.CONVERGED_FTOL, 4, 3, np.eye(1)
        per_point = 5.0 if start[0] == 7.0 else 1.0
        return (start + 1.0, per_point * y.shape[0], _codes.CONVERGED_FTOL, 2, 1, np.eye(1))

    x = np.zeros((1, 1000))
    out = _fused._fit_from_coarse_start(kernel, None, None, JAC_ANALYTIC, x, np.zeros(1000),
                                        np.ones(1), np.array([0.0]), np.array([-np.inf]),
                                        np.array([np.inf]), (1e-8, 1e-8, 1e-8), 100,
                                        _codes.ESTIMATOR_LSE, True)
    assert starts == [(100, 0.0), (1000, 7.0), (1000, 0.0)]
    assert out[0].tolist() == [1.0] and out[1] == 1000.0
    assert out[3] == 4 + 2 + 2 and out[4] == 3 + 1 + 1


@pytest.mark.parametrize("n_points", [1, 4096, 4097, 10_000, 30_000, 1_000_003])
def test_numba_chunks_balance_the_threads_and_cover_the_points(n_points):
    fused = pytest.importorskip("autofit.numba.fused")
    chunk = fused.chunk_length(n_points)
    n_chunks = -(-n_points // chunk)
    assert 1 <= chunk <= fused.CHUNK and n_chunks * chunk >= n_points
    if n_points > fused.CHUNK:
        assert n_chunks % fused.CHUNKS_MULTIPLE == 0
        assert (n_chunks - 1) * chunk < n_points  # no empty chunk


def test_a_numba_fused_fit_does_not_depend_on_the_number_of_threads(decay_data):
    numba = pytest.importorskip("numba")
    x, y = decay_data
    found = []
    threads = numba.get_num_threads()
    try:
        for n_threads in sorted({1, threads}):
            numba.set_num_threads(n_threads)
            found.append(autofit.curve_fit(decay, x[:10_000], y[:10_000], p0=[1.0, 1.0, 0.0],
                                           backend="numba", fused=True)[0])
    finally:
        numba.set_num_threads(threads)
    assert all(np.array_equal(found[0], other) for other in found[1:])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["sigma-bounds", "soft_l1"])
def test_the_subsample_start_keeps_sigma_bounds_and_robust_losses(decay_data, backend, case,
                                                                   monkeypatch):
    from autofit import _fused

    x, y = decay_data
    y = y.copy()
    y[::997] += 3.0  # outliers, for the robust loss
    kwargs = {"p0": [1.0, 1.0, 0.0], "backend": backend}
    if case == "sigma-bounds":
        # The offset's upper bound below its best value: the fit ends on it.
        kwargs |= {"sigma": np.linspace(0.5, 2.0, x.size) * 0.01,
                   "bounds": ([0.0, 0.0, -1.0], [10.0, 10.0, 0.45])}
    else:
        kwargs |= {"loss": "soft_l1", "f_scale": 0.05}
    found = []
    for threshold in (100_000, 10**12):
        monkeypatch.setattr(_fused, "COARSE_MIN_POINTS", threshold)
        params, pcov = autofit.curve_fit(_user(decay, backend), x, y, **kwargs)
        found.append((params, pcov))
    # The same minimum: within 1e-4 of a standard error (as the fused path against scipy;
    # a fit ending on a bound stops by ftol at a few 1e-6 of one), the same covariance.
    errors = np.sqrt(np.diag(found[1][1]))
    np.testing.assert_allclose(found[0][0], found[1][0], rtol=0, atol=1e-4 * errors.max())
    np.testing.assert_allclose(found[0][1], found[1][1], rtol=1e-4)
    if case == "sigma-bounds":
        assert found[0][0][2] == pytest.approx(0.45)


def test_two_large_arrays_are_read_in_two_threads_with_the_results_of_one(monkeypatch):
    import threading

    from autofit import _threads

    large = np.arange(300_000, dtype=np.float64)  # 2.4 MB: over the threshold
    threads = []

    def squares(array):
        threads.append(threading.get_ident())
        return float(np.sum(array * array))

    assert _threads.both(squares, large, large[::-1]) == (squares(large),) * 2
    assert len(set(threads[:2])) == 2 and threading.get_ident() in threads[:2]
    # A strided view reads the whole array (its cache lines): it counts as large.
    threads.clear()
    _threads.both(squares, large[::20], large[1::20])
    assert len(set(threads)) == 2
    threads.clear()
    _threads.both(squares, large[:1000], large)  # one small: no helper
    assert set(threads) == {threading.get_ident()}


@pytest.mark.parametrize("where", ["xdata", "ydata"])
def test_the_concurrent_checks_find_a_nan_in_either_array(decay_data, monkeypatch, where):
    from autofit import _threads

    monkeypatch.setattr(_threads, "CONCURRENT_MIN_BYTES", 1024)
    x, y = decay_data
    bad_x, bad_y = x.copy(), y.copy()
    (bad_x if where == "xdata" else bad_y)[N - 3] = np.nan
    with pytest.raises(ValueError, match=f"{where}.*must not contain infs or NaNs"):
        autofit.curve_fit(decay, bad_x, bad_y, p0=[2.0, 1.0, 0.4], backend="numpy")


def test_the_reference_solves_for_the_unseen_newton_step_only_where_it_can_end_the_fit(
        monkeypatch):
    """The NumPy reference's ``lm_fused`` skips the Gauss-Newton solve of its unseen-step
    test where ``_cosines``' lower bound of the predicted reduction already exceeds twice
    ftol: every output the same, bit for bit, as solving for it at every iteration (numba's
    loop does), on every kernel case and built-in model, and fewer solves."""
    from autofit import original
    from autofit.original import fused, linalg
    from autofit.selftest import cases as _cases
    from autofit.selftest import validate

    solves = []

    def counted(*args):
        solves.append(args[3])  # the damping: 0.0 for the Newton step
        return linalg.damped_solve(*args)

    monkeypatch.setattr(fused, "damped_solve", counted)
    bound = fused._cosines
    cases = _cases.cases("lm_fused", 300) + _cases.model_parity_cases("lm_fused")
    skipped = 0
    for case in cases:
        arguments = validate.resolve_arguments(case.args, original)
        solves.clear()
        with monkeypatch.context() as always:
            always.setattr(fused, "_cosines", lambda *a: (bound(*a)[0], 0.0))
            expected = fused.lm_fused(*arguments)
        newton_always = solves.count(0.0)
        solves.clear()
        found = fused.lm_fused(*arguments)
        skipped += newton_always - solves.count(0.0)
        for got, want in zip(found, expected, strict=True):
            assert np.array_equal(np.asarray(got), np.asarray(want), equal_nan=True), \
                case.variant
    assert skipped >= len(cases)  # the bound does skip solves: one a fit at least
