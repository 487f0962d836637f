"""fit_batch: shapes, arguments, bad fits, agreement across backends and with scipy.

Backends are compared at tol=1e-10 (parameters to 1e-8 relative to the largest parameter,
statuses and iteration counts exactly). The CUDA path runs on numba's CUDA simulator in a
subprocess (the simulator must be switched on before numba is imported).
"""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from scipy import optimize

import autofit
from autofit import Status, _batch, models
from tests.conftest import backend_params

BACKENDS = backend_params()
FAST_BACKENDS = backend_params(("numba", "jax"))
TRUE = np.array([3.0, 0.4, 1.1, 0.2])
X = np.linspace(-5.0, 5.0, 32)


def gaussian_batch(shape=(20,), seed=0, noise=0.05):
    """Noisy gaussians with per-fit parameters near TRUE, and starts near those."""
    rng = np.random.default_rng(seed)
    n_fits = int(np.prod(shape))
    truth = TRUE * (1.0 + 0.1 * rng.normal(size=(n_fits, 4)))
    y = np.stack([models.gaussian(X, *t) for t in truth])
    y += noise * rng.normal(size=y.shape)
    p0 = truth * (1.0 + 0.05 * rng.normal(size=truth.shape))
    return y.reshape(shape + (X.size,)), p0.reshape(shape + (4,)), truth


def user_gaussian(x, a, c, w, o):
    return a * np.exp(-0.5 * ((x - c) / w) ** 2) + o


def assert_same_fits(result, reference, rtol=1e-8):
    np.testing.assert_array_equal(np.asarray(result.status), np.asarray(reference.status))
    ok = np.asarray(reference.converged)
    scale = np.abs(reference.params[ok]).max(axis=-1, keepdims=True)
    deviation = np.abs(result.params[ok] - reference.params[ok]) / scale
    assert deviation.max() <= rtol, f"parameters differ by {deviation.max():.2e}"


# ------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("backend", BACKENDS)
def test_image_shaped_batch_keeps_its_shape(backend):
    y, p0, truth = gaussian_batch((3, 4), noise=0.01)
    res = autofit.fit_batch(models.gaussian, X, y, p0=p0, backend=backend)
    assert res.params.shape == (3, 4, 4)
    assert res.errors.shape == (3, 4, 4)
    assert res.covariance.shape == (3, 4, 4, 4)
    assert res.chi2.shape == res.n_iter.shape == res.status.shape == res.converged.shape
    assert res.converged.all()
    assert res.backend == backend and res.device == "cpu"
    np.testing.assert_allclose(res.params, truth.reshape(3, 4, 4), rtol=0.05, atol=0.05)
    np.testing.assert_allclose(res["center"], res.params[..., 1])


@pytest.mark.parametrize("absolute_sigma", [False, True])
def test_without_covariance_only_the_diagonal_is_kept(absolute_sigma):
    y, p0, _ = gaussian_batch((50,), noise=0.02)
    full = autofit.fit_batch(models.gaussian, X, y, p0=p0, backend="numpy",
                             absolute_sigma=absolute_sigma)
    lean = autofit.fit_batch(models.gaussian, X, y, p0=p0, backend="numpy",
                             absolute_sigma=absolute_sigma, covariance=False)
    assert lean.covariance is None
    np.testing.assert_array_equal(lean.errors, full.errors)
    np.testing.assert_array_equal(lean.params, full.params)
    problem = _batch.Problem.build(models.gaussian, X, y, p0, None, None, None, "lse", None,
                                    None, None, None)
    outputs = _batch._run("numpy", "cpu", problem, keep_covariance=False)
    assert outputs[4].shape == (50, 4)  # (n_fits, n_params), never (n_fits, 4, 4)


def test_single_curve_gives_a_status_enum():
    y, p0, _ = gaussian_batch((1,))
    res = autofit.fit_batch(models.gaussian, X, y[0], p0=p0[0], backend="numpy")
    assert res.params.shape == (4,)
    assert isinstance(res.status, Status) and res.status.converged


def test_guess_is_used_when_p0_is_none():
    y, _, truth = gaussian_batch((10,), noise=0.01)
    res = autofit.fit_batch(models.gaussian, X, y, backend="numpy")
    assert res.converged.all()
    np.testing.assert_allclose(res.params, truth, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_fit_x_sigma_bounds_and_p0(backend):
    y, p0, _ = gaussian_batch((6,))
    x = np.tile(X, (6, 1)) + np.arange(6)[:, None] * 1e-3
    sigma = np.full(y.shape, 0.05)
    sigma[:, :3] = np.inf  # dropped points
    lower = np.tile([0.0, -2.0, 0.1, -1.0], (6, 1))
    upper = np.tile([10.0, 2.0, 5.0, 1.0], (6, 1))
    res = autofit.fit_batch(models.gaussian, x, y, p0=p0, sigma=sigma,
                            bounds=(lower, upper), backend=backend, tol=1e-10)
    ref = autofit.fit_batch(models.gaussian, x, y, p0=p0, sigma=sigma,
                            bounds=(lower, upper), backend="numpy", tol=1e-10)
    assert ref.converged.all()
    assert_same_fits(res, ref)
    assert np.all(ref.dof == 32 - 3 - 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fixed_parameters_stay_at_p0(backend):
    y, p0, _ = gaussian_batch((5,))
    res = autofit.fit_batch(models.gaussian, X, y, p0=p0, fixed=["width"], backend=backend)
    np.testing.assert_array_equal(res.params[:, 2], p0[:, 2])
    assert np.all(res.errors[:, 2] == 0.0)
    assert res.converged.all()
    mask = autofit.fit_batch(models.gaussian, X, y, p0=p0,
                             fixed=np.array([False, False, True, False]), backend=backend)
    np.testing.assert_array_equal(mask.params, res.params)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bounds_are_respected(backend):
    y, p0, _ = gaussian_batch((5,))
    lower, upper = [0.0, -5.0, 0.1, 0.3], [10.0, 5.0, 5.0, 1.0]
    p0 = np.clip(p0, lower, upper)
    res = autofit.fit_batch(models.gaussian, X, y, p0=p0, bounds=(lower, upper),
                            backend=backend)
    assert np.all(res.params >= lower) and np.all(res.params <= upper)
    assert np.allclose(res.params[:, 3], 0.3)  # the offset (~0.2) is held at its bound
    # The active set holds it there, so the others converge as fast as without bounds.
    assert res.converged.all() and res.n_iter.max() <= 20


# ---------------------------------------------------------------------- agreement

@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("estimator", ["lse", "mle"])
def test_backends_agree_with_reference(backend, estimator):
    y, p0, _ = gaussian_batch((30,))
    if estimator == "mle":
        y = np.random.default_rng(1).poisson(np.clip(20 * y, 0, None)).astype(float)
        p0 = p0 * [20, 1, 1, 20]
        p0[:, 3] = np.abs(p0[:, 3]) + 1.0
    kwargs = dict(p0=p0, estimator=estimator, tol=1e-10)
    ref = autofit.fit_batch(models.gaussian, X, y, backend="numpy", **kwargs)
    res = autofit.fit_batch(models.gaussian, X, y, backend=backend, **kwargs)
    assert ref.converged.all()
    assert_same_fits(res, ref)
    np.testing.assert_array_equal(res.n_iter, ref.n_iter)
    np.testing.assert_allclose(res.covariance, ref.covariance, rtol=1e-7,
                               atol=1e-7 * np.abs(ref.covariance).max())


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_user_model_agrees_with_reference(backend):
    y, p0, _ = gaussian_batch((10,))
    ref = autofit.fit_batch(user_gaussian, X, y, p0=p0, backend="numpy", tol=1e-10)
    if backend == "jax":
        import jax.numpy as jnp

        def model(x, a, c, w, o):
            return a * jnp.exp(-0.5 * ((x - c) / w) ** 2) + o
    else:
        model = user_gaussian
    res = autofit.fit_batch(model, X, y, p0=p0, backend=backend, tol=1e-10)
    assert res.backend == backend
    # numpy's forward differences against numba's (same rule, one ulp of exp apart) or
    # jax's exact autodiff: the minimum is the same, the path to it may differ slightly.
    assert_same_fits(res, ref, rtol=1e-6)


def test_numpy_user_model_on_jax_runs_translated_and_says_so():
    y, p0, _ = gaussian_batch((4,))
    res = autofit.fit_batch(user_gaussian, X, y, p0=p0, backend="jax", strict=True)
    assert res.backend == "jax" and "translated to jax.numpy" in res.backend_reason
    ref = autofit.fit_batch(user_gaussian, X, y, p0=p0, backend="numpy")
    assert_same_fits(res, ref, rtol=1e-6)


def user_gaussian_in_place(x, a, mu, sigma, c):
    out = np.empty_like(x)
    out[:] = a * np.exp(-0.5 * ((x - mu) / sigma) ** 2) + c  # jax arrays are immutable
    return out


def test_numpy_user_model_jax_cannot_run_falls_back_with_a_warning():
    y, p0, _ = gaussian_batch((4,))
    with pytest.warns(autofit.BackendFallbackWarning, match="jax"):
        res = autofit.fit_batch(user_gaussian_in_place, X, y, p0=p0, backend="jax")
    assert res.backend == "numba"
    with pytest.raises(autofit.BackendError, match="strict"):
        autofit.fit_batch(user_gaussian_in_place, X, y, p0=p0, backend="jax", strict=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_agrees_with_curve_fit_and_scipy(backend):
    y, p0, _ = gaussian_batch((8,))
    res = autofit.fit_batch(models.gaussian, X, y, p0=p0, backend=backend, tol=1e-12)
    for i in range(8):
        popt, pcov = optimize.curve_fit(user_gaussian, X, y[i], p0=p0[i], xtol=1e-14,
                                        ftol=1e-14, gtol=1e-14)
        np.testing.assert_allclose(res.params[i], popt, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(res.errors[i], np.sqrt(np.diag(pcov)), rtol=1e-4)
        ours, _ = autofit.curve_fit(models.gaussian, X, y[i], p0=p0[i], backend="numpy")
        np.testing.assert_allclose(res.params[i], ours, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_float32_when_asked(backend):
    y, p0, _ = gaussian_batch((10,), noise=0.01)
    res64 = autofit.fit_batch(models.gaussian, X, y, p0=p0, backend=backend)
    res32 = autofit.fit_batch(models.gaussian, X, y.astype(np.float32), p0=p0,
                              backend=backend, dtype=np.float32)
    assert res64.params.dtype == np.float64
    assert res32.params.dtype == np.float32
    assert res32.converged.all()
    np.testing.assert_allclose(res32.params, res64.params, rtol=2e-3, atol=2e-3)


def test_integer_data_is_converted():
    y, p0, _ = gaussian_batch((3,))
    counts = np.round(100 * y).astype(np.int64)
    res = autofit.fit_batch(models.gaussian, X, counts, p0=p0 * [100, 1, 1, 100],
                            backend="numpy")
    assert res.params.dtype == np.float64 and res.converged.all()


# ---------------------------------------------------------------------- bad fits

@pytest.mark.parametrize("backend", BACKENDS)
def test_one_bad_fit_does_not_spoil_the_others(backend):
    y, p0, _ = gaussian_batch((8,))
    clean = autofit.fit_batch(models.gaussian, X, y, p0=p0, backend=backend)
    bad = y.copy()
    bad[1, 4] = np.nan                    # nan data
    bad[2, 7] = np.inf                    # inf data
    p0_bad = p0.copy()
    p0_bad[3, 0] = np.nan                 # nan start
    res = autofit.fit_batch(models.gaussian, X, bad, p0=p0_bad, backend=backend)
    assert [int(s) for s in res.status[1:4]] == [Status.NONFINITE_DATA] * 3
    assert np.isnan(res.chi2[1:4]).all() and (res.n_iter[1:4] == 0).all()
    keep = [0, 4, 5, 6, 7]
    np.testing.assert_array_equal(res.params[keep], clean.params[keep])
    np.testing.assert_array_equal(res.status[keep], clean.status[keep])


@pytest.mark.parametrize("backend", BACKENDS)
def test_mle_statuses(backend):
    y, p0, _ = gaussian_batch((4,))
    counts = np.abs(np.round(20 * y))
    counts[1, 0] = -1.0                   # negative counts
    p0 = p0 * [20, 1, 1, 20]
    p0[:, 3] = 2.0
    p0[2, 3] = -50.0                      # a model <= 0 at the start
    res = autofit.fit_batch(models.gaussian, X, counts, p0=p0, estimator="mle",
                            backend=backend)
    assert int(res.status[1]) == Status.MLE_NEGATIVE_DATA
    assert int(res.status[2]) == Status.MLE_NONPOSITIVE_MODEL
    assert res.converged[[0, 3]].all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_singular_and_too_few_points(backend):
    y, p0, _ = gaussian_batch((3,))
    p0[0, 0] = 0.0                        # amplitude 0: centre and width do nothing
    sigma = np.full(y.shape, 1.0)
    sigma[1, 2:] = np.inf                 # 2 usable points for 3 free parameters
    res = autofit.fit_batch(models.gaussian, X, y, p0=p0, sigma=sigma,
                            fixed=["amplitude"], backend=backend)
    assert int(res.status[0]) == Status.SINGULAR
    assert np.isnan(res.errors[0]).all()
    assert int(res.status[1]) == Status.TOO_FEW_POINTS
    assert res.converged[2]


@pytest.mark.parametrize("backend", backend_params(("numpy", "numba")))
def test_model_returning_nan_for_one_fit(backend):
    def model(x, a, c, w, o):
        return a * np.exp(-0.5 * ((x - c) / w) ** 2) + o + np.log(w)

    y, p0, _ = gaussian_batch((4,))
    p0[2, 2] = -1.0                       # log of a negative width: nan at the start
    res = autofit.fit_batch(model, X, y, p0=p0, backend=backend)
    assert int(res.status[2]) == Status.NONFINITE
    assert res.converged[[0, 1, 3]].all()


def test_default_max_iter_grows_with_the_parameters_beyond_ten():
    x = np.linspace(-2.0, 2.0, 40)
    gaussian = _batch.Problem.build(models.gaussian, x, np.ones((2, 40)), [1.0, 0.0, 1.0, 0.0],
                                    None, None, None, "lse", None, None, None, None)
    assert gaussian.max_iter == 200
    dips = models.multi_lorentzian(8)
    start = [v for i in range(8) for v in (-0.1, -1.5 + 0.4 * i, 0.1)] + [1.0]
    many = _batch.Problem.build(dips, x, np.ones((2, 40)), start, None, None, None, "lse",
                                None, None, None, None)
    assert many.max_iter == 20 * 25
    given = _batch.Problem.build(dips, x, np.ones((2, 40)), start, None, None, None, "lse",
                                 7, None, None, None)
    assert given.max_iter == 7


def test_max_iterations_status():
    y, p0, _ = gaussian_batch((3,))
    res = autofit.fit_batch(models.gaussian, X, y, p0=p0 * 1.5, max_iter=1,
                            backend="numpy")
    assert (np.asarray(res.status) == Status.MAX_ITERATIONS).all()
    assert (res.n_iter == 1).all() and not res.converged.any()


def test_a_model_that_raises_propagates_its_error():
    def model(x, a, c, w, o):
        raise RuntimeError("detector offline")

    y, p0, _ = gaussian_batch((2,))
    with pytest.raises(RuntimeError, match="detector offline"):
        autofit.fit_batch(model, X, y, p0=p0, backend="numpy")


# ---------------------------------------------------------------------- arguments

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(x=np.linspace(0, 1, 31)), ValueError, "n_points=32"),
    (dict(y=np.empty((3, 0))), ValueError, "n_points >= 1"),
    (dict(y=np.array(["a"] * 32)), TypeError, "numbers"),
    (dict(y=np.ones(32) * 1j), TypeError, "real"),
    (dict(estimator="chi2"), ValueError, "'lse'"),
    (dict(estimator="mle", sigma=np.ones(32)), ValueError, "sigma has no meaning"),
    (dict(sigma=np.zeros(32)), ValueError, "sigma must be > 0"),
    (dict(sigma=np.ones(31)), ValueError, "sigma must be"),
    (dict(bounds=([0, 0, 0, 0], [1, 1, 0, 1])), ValueError, "strictly less"),
    (dict(bounds=([0, 0, 0, 0], [1, 1, 1])), ValueError, "upper bound"),
    (dict(bounds=([5, 0, 0, 0], [9, 1, 9, 1])), ValueError, "outside the bounds"),
    (dict(p0=np.ones(3)), ValueError, "p0 must have shape"),
    (dict(fixed=["height"]), ValueError, "unknown parameter"),
    (dict(fixed=[True] * 4), ValueError, "every parameter is fixed"),
    (dict(max_iter=0), ValueError, "max_iter"),
    (dict(tol=-1.0), ValueError, "tol"),
    (dict(jac="3-point"), ValueError, "jac"),
    (dict(device="tpu"), ValueError, "device"),
    (dict(dtype=np.int32), ValueError, "dtype"),
    (dict(model=3), TypeError, "callable"),
])
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    y, p0, _ = gaussian_batch((2,))
    arguments = dict(model=models.gaussian, x=X, y=y[0], p0=p0[0], backend="numpy")
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        autofit.fit_batch(arguments.pop("model"), arguments.pop("x"), arguments.pop("y"),
                          **arguments)


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    pytest.importorskip("numba")
    from autofit.numba import gpu

    monkeypatch.setattr(gpu, "available", lambda: False)
    y, p0, _ = gaussian_batch((2,))
    with pytest.raises(RuntimeError, match="no usable GPU"):
        autofit.fit_batch(models.gaussian, X, y, p0=p0, backend="numba", device="cuda")
    monkeypatch.setenv("FFIT_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="FFIT_DEVICE"):
        autofit.fit_batch(models.gaussian, X, y, p0=p0, backend="numba")


# ---------------------------------------------------------------------- CUDA simulator

SIMULATOR_SCRIPT = textwrap.dedent("""
    import numpy as np, autofit
    from autofit import models
    x = np.linspace(-5, 5, 16)
    rng = np.random.default_rng(3)
    truth = np.array([3.0, 0.4, 1.1, 0.2]) * (1 + 0.1 * rng.normal(size=(6, 4)))
    y = np.stack([models.gaussian(x, *t) for t in truth]) + 0.05 * rng.normal(size=(6, 16))
    y[2, 3] = np.nan
    def user(x, a, c, w, o):
        return a * np.exp(-0.5 * ((x - c) / w) ** 2) + o
    for model in (models.gaussian, user):
        for estimator, data, p0 in (("lse", y, truth), ("mle", np.abs(20 * y),
                                                     truth * [20, 1, 1, 20])):
            ref = autofit.fit_batch(model, x, data, p0=p0, backend="numpy", tol=1e-10,
                                    estimator=estimator)
            gpu = autofit.fit_batch(model, x, data, p0=p0, backend="numba", device="cuda",
                                    tol=1e-10, estimator=estimator)
            assert gpu.device == "cuda" and gpu.backend == "numba"
            assert (gpu.status == ref.status).all(), (gpu.status, ref.status)
            ok = ref.converged
            assert ok.sum() == 5
            dev = np.abs(gpu.params[ok] - ref.params[ok]).max() / np.abs(ref.params).max()
            assert dev < 1e-6, dev
    print("simulator ok")
""")


def test_cuda_path_on_the_simulator():
    pytest.importorskip("numba")
    try:
        import numba.cuda  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"numba.cuda is not importable: {exc}")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    with warnings.catch_warnings():
        done = subprocess.run([sys.executable, "-c", SIMULATOR_SCRIPT], env=env,
                              capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "simulator ok" in done.stdout


CACHE_SCRIPT = textwrap.dedent("""
    import numpy as np
    import autofit
    from autofit import models
    from autofit.numba import batch

    x = np.linspace(0.0, 1.0, 16)
    y = np.stack([2.0 * x + 1.0, -x + 0.5])
    result = autofit.fit_batch(models.linear, x, y, p0=np.ones((2, 2)), backend="numba")
    assert result.converged.all() and np.allclose(result.params, [[2.0, 1.0], [-1.0, 0.5]])
    (kernel,) = batch._KERNELS.values()
    for piece in (kernel.fit_range, kernel.evaluate, kernel.probe_rows):
        stats = piece.dispatcher.stats
        print("hits", sum(stats.cache_hits.values()), "misses",
              sum(stats.cache_misses.values()))
""")


def test_built_in_kernels_are_loaded_from_the_disk_cache_by_a_second_process(tmp_path):
    pytest.importorskip("numba")
    env = dict(os.environ, AUTOFIT_CACHE_DIR=str(tmp_path))
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("FFIT_CACHE_DIR", None)  # (the newer name wins; CI sets it)
    runs = [subprocess.run([sys.executable, "-c", CACHE_SCRIPT], env=env, capture_output=True,
                           text=True, timeout=600) for _ in range(2)]
    for done in runs:
        assert done.returncode == 0, done.stderr[-3000:]
    # The solver of 2 parameters, and the linear model's two passes over the points.
    assert runs[0].stdout.split()[::4] == ["hits"] * 3, runs[0].stdout
    assert runs[0].stdout.split()[1::4] == ["0"] * 3, runs[0].stdout
    assert runs[1].stdout.split() == ["hits", "1", "misses", "0"] * 3, runs[1].stdout
    # The generated modules and numba's index and code for them, keyed by the source's hash.
    (solver,) = tmp_path.glob("autofit_solver_*.py")
    (passes,) = tmp_path.glob("autofit_passes_*.py")
    for module, name in ((solver, "fit_range"), (passes, "evaluate"), (passes, "probe_rows")):
        assert list((tmp_path / "__pycache__").glob(f"{module.stem}.{name}-*.nbi"))
        assert list((tmp_path / "__pycache__").glob(f"{module.stem}.{name}-*.nbc"))


USER_CACHE_SCRIPT = textwrap.dedent("""
    import numpy as np
    import autofit
    from autofit.numba import batch


    def peak(x, a, mu, s, c):
        return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + c


    x = np.linspace(-3.0, 3.0, 40)
    truth = np.array([[2.0, 0.1, 0.8, 0.3], [1.0, -0.4, 0.6, 0.1]])
    y = np.stack([peak(x, *t) for t in truth])
    result = autofit.fit_batch(peak, x, y, p0=truth * 1.1, backend="numba")
    assert result.converged.all() and np.allclose(result.params, truth, rtol=1e-8), result
    (kernel,) = batch._KERNELS.values()
    for piece in (kernel.evaluate, kernel.probe_rows):
        stats = piece.dispatcher.stats
        print("hits", sum(stats.cache_hits.values()), "misses",
              sum(stats.cache_misses.values()))
""")


def _a_script_run_twice(tmp_path, source):
    """A scientist's script (a file: the model's source must be readable) run in two
    processes one after the other, with a kernels' cache of its own
    (``tmp_path / "cache"``)."""
    script = tmp_path / "fit.py"
    script.write_text(source)
    env = dict(os.environ, AUTOFIT_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("FFIT_CACHE_DIR", None)  # (the newer name wins; CI sets it)
    runs = [subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                           text=True, timeout=600) for _ in range(2)]
    for done in runs:
        assert done.returncode == 0, done.stderr[-3000:]
    return runs


def test_a_user_models_passes_are_loaded_from_the_disk_cache_by_a_second_process(tmp_path):
    # A script run again: the passes of its model, compiled from the point functions
    # generated from its source, load from numba's disk cache (1.9 -> 0.5 s of a first
    # fit_batch of 20,000 fits) instead of being compiled in every process.
    pytest.importorskip("numba")
    runs = _a_script_run_twice(tmp_path, USER_CACHE_SCRIPT)
    assert runs[0].stdout.split()[:2] == ["hits", "0"], runs[0].stdout  # compiled
    assert runs[0].stdout.split()[4:6] == ["hits", "0"], runs[0].stdout
    assert runs[1].stdout.split() == ["hits", "1", "misses", "0"] * 2, runs[1].stdout
    (passes,) = (tmp_path / "cache").glob("autofit_passes_*.py")
    assert "def peak" not in passes.read_text()  # the generated point functions, not f
    assert "def value(x, i, p)" in passes.read_text()
    assert [m.name[:6] for m in (tmp_path / "cache" / "compiled").iterdir()] == ["batch-"]


FUSED_CACHE_SCRIPT = textwrap.dedent("""
    import numpy as np
    import autofit
    from autofit.numba import fused


    def decay(x, a, b, c):
        return a * np.exp(-b * x) + c


    x = np.linspace(0.0, 4.0, 300)
    y = decay(x, 2.0, 0.7, 0.3)
    popt, _ = autofit.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], backend="numba")
    assert np.allclose(popt, [2.0, 0.7, 0.3], rtol=1e-8), popt
    for solve in fused._SOLVERS.values():
        (chunk_sums,) = [cell.cell_contents for cell in solve.__closure__
                         if hasattr(cell.cell_contents, "dispatcher")]
        stats = chunk_sums.dispatcher.stats
        print("hits", sum(stats.cache_hits.values()))
""")


def test_the_fused_pass_of_a_model_is_loaded_from_the_disk_cache_by_a_second_process(
        tmp_path):
    # curve_fit's fused pass of a user's model (its generated point functions written into
    # the module): a script run again loads it (a user's 3,000-point gaussian: the first
    # numba call 1.55 -> 0.44 s).
    pytest.importorskip("numba")
    runs = _a_script_run_twice(tmp_path, FUSED_CACHE_SCRIPT)
    assert runs[0].stdout.split() == ["hits", "0"], runs[0].stdout
    assert runs[1].stdout.split() == ["hits", "1"], runs[1].stdout
    (module,) = (tmp_path / "cache").glob("autofit_chunk_*.py")
    assert "def value(x, i, p)" in module.read_text()  # generated from decay's source
    assert "def decay" not in module.read_text()
    # The hint for the next process's quick start (which must not import numba to ask).
    assert [m.name[:6] for m in (tmp_path / "cache" / "compiled").iterdir()] == ["fused-"]


# Each argument: a built-in model whose lm_batch kernel is run (and compiled or loaded) in
# turn, checked against the NumPy reference.
KERNELS_SCRIPT = textwrap.dedent("""
    import sys
    from autofit.selftest import cases as _cases, validate
    cases = {case.variant: case for case in _cases.model_parity_cases("lm_batch")}
    for model in sys.argv[1:]:
        expected = validate.reference("lm_batch", cases[model])
        row = validate.compare_case("lm_batch", "numba", cases[model], _cases.PARITY_POINTS,
                                    expected, timed=False)
        print(model, row.error is None and row.exact_ok and row.deviation <= row.tolerance)
""")


def test_kernels_cached_by_different_processes_run_side_by_side(tmp_path):
    # Compiled in two processes, the kernels' functions were named alike (numba counts
    # per process), and loaded into one the gaussian kernel ran the linear one's code.
    pytest.importorskip("numba")
    env = dict(os.environ, AUTOFIT_CACHE_DIR=str(tmp_path))
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("FFIT_CACHE_DIR", None)  # (the newer name wins; CI sets it)
    outputs = []
    for models_in_turn in (["linear"], ["gaussian"], ["linear", "gaussian"]):
        done = subprocess.run([sys.executable, "-c", KERNELS_SCRIPT, *models_in_turn],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout.split())
    assert outputs == [["linear", "True"], ["gaussian", "True"],
                       ["linear", "True", "gaussian", "True"]]


def test_user_functions_as_written_get_no_disk_cached_passes_but_the_shared_solver():
    pytest.importorskip("numba")
    from autofit._codes import JAC_ANALYTIC, JAC_FORWARD
    from autofit._forward_mode import point_functions
    from autofit.numba import kernel, kernel_cache, points, user_points

    # A user's function compiled as written (its globals could be anything): in-process.
    value = user_points.user_point_function(user_gaussian, 4, 1)
    assert kernel_cache.cached_passes(value, kernel._no_gradient, JAC_FORWARD, 4) is None
    assert kernel_cache._passes_module_source(*points.POINT_FUNCTIONS["gaussian"],
                                              JAC_ANALYTIC, 4, np.float64) is not None
    # The point functions generated from its source are self-contained: written out whole.
    x = np.linspace(-3.0, 3.0, 32)
    generated = point_functions(user_gaussian, 4, 1, x, np.array([1.0, 0.1, 0.8, 0.2]))
    source = kernel_cache._passes_module_source(*generated, JAC_ANALYTIC, 4, np.float64)
    assert generated[0].generated_source in source
    assert generated[1].generated_source in source
    assert kernel_cache._passes_module_source(generated[0], kernel._no_gradient, JAC_FORWARD,
                                              4, np.float64) is not None
    # The solver takes the passes as arguments: its module names no model.
    source = kernel_cache._solver_module_source(4, np.float64)
    assert "gaussian" not in source and "cpu_fit_one(4, np.float64)" in source


def test_kernels_of_one_size_share_one_solver():
    # Two models of 4 parameters and both Jacobian methods: one compiled solver (its linear
    # algebra and pre-checks included) for all three kernels, one probe pass per model.
    pytest.importorskip("numba")
    from autofit._codes import ESTIMATOR_LSE, JAC_ANALYTIC, JAC_FORWARD
    from autofit.numba import batch, fit_one, kernel, points, user_points

    x = np.linspace(-3.0, 3.0, 40)
    truth = np.array([1.0, 0.2, 0.8, 0.1])
    y = user_gaussian(x, *truth)[None, :]
    user = user_points.user_point_function(user_gaussian, 4, 1)
    built_in = points.POINT_FUNCTIONS["gaussian"]
    kernels = []
    for value, gradient, method in ((user, kernel._no_gradient, JAC_FORWARD),
                                    (*built_in, JAC_ANALYTIC), (*built_in, JAC_FORWARD)):
        run = batch.cpu_kernel(value, gradient, method, 4)
        params, chi2 = np.empty((1, 4)), np.empty(1)
        n_iter, status = np.empty(1, np.int64), np.empty(1, np.int64)
        run(x[None, None, :], y, np.ones((1, 40)), truth[None, :] * 1.1,
            np.full((1, 4), -np.inf), np.full((1, 4), np.inf), np.ones(4, bool),
            ESTIMATOR_LSE, 1e-10, 100, params, chi2, n_iter, status, np.empty((1, 4, 4)))
        np.testing.assert_allclose(params[0], truth, rtol=1e-6)
        kernels.append(run)
    assert len({id(run.fit_range) for run in kernels}) == 1
    assert len(kernels[0].fit_range.dispatcher.overloads) == 1
    assert len({id(run.evaluate) for run in kernels}) == 3
    probes = [key for key in fit_one._SHARED if key[0] == "probe_rows"
              and key[1][:3] == ("cpu", 4, "float64")]
    assert {key[1][3] for key in probes} >= {user, built_in[0]}


def test_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    pytest.importorskip("numba")
    from autofit.numba import kernel_cache

    monkeypatch.delenv("FFIT_CACHE_DIR", raising=False)  # (the newer name wins; CI sets it)
    monkeypatch.setenv("AUTOFIT_CACHE_DIR", str(tmp_path / "kernels"))
    assert kernel_cache.cache_directory() == str(tmp_path / "kernels")
    monkeypatch.delenv("AUTOFIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert kernel_cache.cache_directory() == os.path.join(str(tmp_path), "autofit")


def three_lorentzians(x, a1, c1, g1, a2, c2, g2, a3, c3, g3, offset):
    return (offset + a1 * g1 * g1 / ((x - c1) ** 2 + g1 * g1)
            + a2 * g2 * g2 / ((x - c2) ** 2 + g2 * g2)
            + a3 * g3 * g3 / ((x - c3) ** 2 + g3 * g3))


@pytest.mark.parametrize("estimator", ["lse", "mle"])
@pytest.mark.parametrize("form", ["built-in", "user function"])
def test_ten_parameters_agree_with_reference_on_numba(form, estimator):
    # 10 parameters: numba's CPU pass forms the Gauss-Newton matrix in 3 x 3 blocks (the
    # last row of blocks reads past the weighted rows) and a user function's forward
    # differences one parameter row at a time; one parameter is held and, for least
    # squares, some points are dropped (their rows must not reach the sums).
    pytest.importorskip("numba")
    rng = np.random.default_rng(7)
    x = np.linspace(0.0, 1.0, 61)
    truth = np.array([-0.3, 0.2, 0.05, -0.4, 0.5, 0.04, -0.25, 0.8, 0.06, 1.0])
    truth = truth * (1.0 + 0.02 * rng.normal(size=(12, 10)))
    y = np.stack([three_lorentzians(x, *t) for t in truth])
    kwargs = dict(fixed=np.arange(10) == 5, tol=1e-10, estimator=estimator)
    if estimator == "lse":
        y += 0.01 * rng.normal(size=y.shape)
        sigma = np.ones_like(y)
        sigma[:, ::9] = np.inf
        kwargs["sigma"] = sigma
    else:
        y = rng.poisson(200.0 * y).astype(float)
        truth = truth * np.r_[[200.0, 1.0, 1.0] * 3, 200.0]
    p0 = truth * (1.0 + 0.03 * rng.normal(size=truth.shape))
    model = models.multi_lorentzian(3) if form == "built-in" else three_lorentzians
    ref = autofit.fit_batch(model, x, y, p0=p0, backend="numpy", **kwargs)
    res = autofit.fit_batch(model, x, y, p0=p0, backend="numba", **kwargs)
    assert res.backend == "numba"
    assert ref.converged.all()
    np.testing.assert_array_equal(res.params[:, 5], p0[:, 5])
    if form == "built-in":
        assert_same_fits(res, ref)
        np.testing.assert_array_equal(res.n_iter, ref.n_iter)
        np.testing.assert_allclose(res.covariance, ref.covariance, rtol=1e-7,
                                   atol=1e-7 * np.abs(ref.covariance).max())
    else:
        # Forward differences a few ulps apart (numpy's and numba's model): the same minimum.
        assert_same_fits(res, ref, rtol=1e-6)
        np.testing.assert_allclose(res.errors, ref.errors, rtol=1e-4)


def test_numba_lm_batch_and_lm_fused_take_models_as_every_backend_does():
    """numba's kernels take ``model(x, params)`` as the others do: a built-in model's
    kernels run as its point functions (the same result as passing those), another
    compiled array model on the engine for array models (the reference's result);
    lm_fused, which runs point functions only, says so for an array model."""
    numba = pytest.importorskip("numba")
    import autofit.numba as kernels
    import autofit.original as reference
    from autofit._codes import ESTIMATOR_LSE, JAC_ANALYTIC, JAC_FORWARD
    from autofit.numba.points import POINT_FUNCTIONS

    x = np.linspace(-3, 3, 40)
    rng = np.random.default_rng(3)
    truth = np.array([[2.0, 0.1, 1.0, 0.3], [1.5, -0.4, 0.7, 0.2]])
    y = np.stack([reference.model_gaussian(x, p) for p in truth])
    y += 0.01 * rng.normal(size=y.shape)
    common = (x[None, None, :], y, np.ones((1, 40)), truth * 1.1, np.full((1, 4), -np.inf),
              np.full((1, 4), np.inf), np.ones(4, dtype=bool), ESTIMATOR_LSE, 1e-10, 100)
    built_in = kernels.lm_batch(kernels.model_gaussian, kernels.jacobian_gaussian,
                                JAC_ANALYTIC, *common)
    points = kernels.lm_batch(*POINT_FUNCTIONS["gaussian"], JAC_ANALYTIC, *common)
    for a, b in zip(built_in, points):
        np.testing.assert_array_equal(a, b)

    @numba.njit
    def own(x, p):
        return p[0] * np.exp(-0.5 * ((x - p[1]) / p[2]) ** 2) + p[3]

    arrays = kernels.lm_batch(own, None, JAC_FORWARD, *common)
    expected = reference.lm_batch(reference.model_gaussian, None, JAC_FORWARD, *common)
    np.testing.assert_allclose(arrays[0], expected[0], rtol=1e-7)
    assert list(arrays[3]) == list(expected[3])
    with pytest.raises(TypeError, match="lm_fused runs a built-in model's kernels"):
        kernels.lm_fused(own, None, JAC_FORWARD, x[None, :], y[0], np.ones(1), truth[0],
                         np.full(4, -np.inf), np.full(4, np.inf), 1e-10, 1e-10, 1e-10, 100)


EXACT_ON_THE_SIMULATOR = textwrap.dedent("""
    import numpy as np
    import autofit


    def peaks(x, *p):  # a scientist's several peaks: numba-cuda cannot compile it as written
        out = np.full_like(x, p[-1])
        for k in range(len(p) // 3):
            a, c, w = p[3 * k:3 * k + 3]
            out = out + a * np.exp(-0.5 * ((x - c) / w) ** 2)
        return out


    x = np.linspace(0.0, 10.0, 24)
    rng = np.random.default_rng(5)
    truth = np.array([1.0, 3.0, 0.8, 0.8, 6.0, 1.0, 0.1])
    y = np.stack([peaks(x, *truth) + 0.02 * rng.normal(size=x.size) for _ in range(3)])
    p0 = truth * 1.05
    ref = autofit.fit_batch(peaks, x, y, p0=p0, backend="numpy", tol=1e-10)
    gpu = autofit.fit_batch(peaks, x, y, p0=p0, backend="numba", device="cuda", tol=1e-10)
    assert gpu.device == "cuda", gpu.device
    assert "exact" in gpu.backend_reason, gpu.backend_reason
    assert (gpu.status == ref.status).all() and ref.converged.all(), (gpu.status, ref.status)
    assert np.abs(gpu.params - ref.params).max() < 1e-7 * np.abs(ref.params).max()
    print("simulator ok")
""")


def test_a_users_model_takes_its_exact_derivatives_on_the_cuda_engine(tmp_path):
    """On a GPU as on the CPU, a user's NumPy model runs as the point functions generated
    from its source (exact derivatives), which numba-cuda compiles where the model itself
    does not (tests/test_cuda_compiler.py); here on the simulator, against the NumPy engine,
    from a script file (the source readable, as a scientist's is)."""
    pytest.importorskip("numba")
    try:
        import numba.cuda  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"numba.cuda is not importable: {exc}")
    script = tmp_path / "fit_peaks.py"
    script.write_text(EXACT_ON_THE_SIMULATOR)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "simulator ok" in done.stdout
