"""Saving and loading FitResult and BatchResult: .npz and .zarr round trips."""

import json
import sys
from datetime import datetime

import numpy as np
import pytest

import autofit
from autofit import Status


def zarr_or_skip():
    return pytest.importorskip("zarr", reason="zarr is not installed (an optional dependency)")


def formats():
    return ["npz", "zarr"]


@pytest.fixture(scope="module")
def batch():
    """A (4, 5) batch holding converged fits, nan pixels and negative counts (MLE)."""
    x = np.linspace(-4, 4, 40)
    rows, columns = np.mgrid[0:4, 0:5]
    cube = autofit.models.gaussian(x, 50.0, 0.2 * columns - 0.3 * rows, 1.0, 5.0)
    cube = np.random.default_rng(0).poisson(cube).astype(float)
    cube[0, 0] = np.nan
    cube[2, 3, 5] = -1.0
    return autofit.fit_batch(autofit.models.gaussian, x, cube, estimator="mle",
                             fixed=["offset"], backend="numpy")


def assert_same_batch(back, res):
    assert isinstance(back, autofit.BatchResult)
    for name in ("params", "errors", "covariance", "chi2", "n_iter", "status", "converged",
                 "dof"):
        original, loaded = getattr(res, name), getattr(back, name)
        if original is None:
            assert loaded is None
            continue
        loaded = np.asarray(loaded)
        assert loaded.shape == np.shape(original) and loaded.dtype == np.asarray(original).dtype
        np.testing.assert_array_equal(loaded, original)  # nan == nan here
    for name in ("backend", "backend_reason", "device", "model", "param_names", "estimator",
                 "options"):
        assert getattr(back, name) == getattr(res, name)
    assert back.status_counts() == res.status_counts()


@pytest.mark.parametrize("suffix", formats())
def test_batch_round_trip_keeps_statuses_shapes_and_nans(batch, tmp_path, suffix):
    if suffix == "zarr":
        zarr_or_skip()
    statuses = set(batch.status_counts())
    assert {Status.NONFINITE_DATA, Status.MLE_NEGATIVE_DATA} <= statuses
    assert np.isnan(batch.errors).any()
    path = tmp_path / f"batch.{suffix}"
    batch.save(path)
    back = autofit.load_result(path)
    assert_same_batch(back, batch)
    assert back.options["estimator"] == "mle" and back.options["fixed"] == ["offset"]
    assert back.summary() == batch.summary()


@pytest.mark.parametrize("suffix", formats())
def test_single_curve_batch_and_no_covariance(tmp_path, suffix):
    if suffix == "zarr":
        zarr_or_skip()
    x = np.linspace(-3, 3, 30)
    res = autofit.fit_batch(autofit.models.gaussian, x, autofit.models.gaussian(x, 1, 0, 1, 0),
                            backend="numpy", covariance=False)
    assert res.shape == () and isinstance(res.status, Status) and res.covariance is None
    res.save(tmp_path / f"one.{suffix}")
    back = autofit.load_result(tmp_path / f"one.{suffix}")
    assert isinstance(back.status, Status) and back.status == res.status
    assert_same_batch(back, res)


def test_npz_holds_plain_arrays_and_json_metadata(batch, tmp_path):
    path = tmp_path / "batch.npz"
    batch.save(path)
    with np.load(path, allow_pickle=False) as data:  # no object arrays anywhere
        metadata = json.loads(str(data["metadata"]))
        assert data["status"].dtype == np.int8
    assert metadata["kind"] == "BatchResult" and metadata["model"] == "gaussian"
    assert metadata["model_spec"] == "gaussian"
    assert metadata["param_names"] == list(batch.param_names)
    assert metadata["backend"] == "numpy" and metadata["device"] == "cpu"
    assert metadata["estimator"] == "mle" and metadata["options"]["tol"] == 1e-8
    assert metadata["autofit_version"] == autofit.__version__
    assert datetime.fromisoformat(metadata["created"]).tzinfo is not None
    assert not list(tmp_path.glob("*.partial*"))


@pytest.mark.parametrize("suffix", formats())
def test_fit_result_round_trip(tmp_path, suffix):
    if suffix == "zarr":
        zarr_or_skip()
    model = autofit.models.multi_lorentzian(2)
    x = np.linspace(2.80, 2.94, 200)
    y = model(x, -0.2, 2.85, 0.004, -0.3, 2.89, 0.005, 1.0)
    y = y + 0.003 * np.random.default_rng(1).normal(size=x.size)
    res = autofit.fit(model, x, y, sigma=np.full(x.size, 0.003), backend="numpy")
    res.save(tmp_path / f"fit.{suffix}")
    back = autofit.load_result(tmp_path / f"fit.{suffix}")
    assert isinstance(back, autofit.FitResult)
    for name in ("params", "errors", "covariance", "x", "y", "sigma", "best_fit"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    for name in ("chi2", "reduced_chi2", "r_squared", "dof", "n_iter", "nfev", "status",
                 "message", "success", "backend", "backend_reason", "device", "param_names",
                 "model", "model_spec", "options"):
        assert getattr(back, name) == getattr(res, name), name
    assert back.model_spec == "multi_lorentzian:2"
    np.testing.assert_allclose(back.evaluate(x), res.best_fit)  # the model is rebuilt
    assert back.report() == res.report()


def test_failed_fit_and_user_function_round_trip(tmp_path):
    def decay(x, a, b, c):
        return a * np.exp(-b * x) + c

    x = np.linspace(0, 10, 50)
    res = autofit.fit(decay, x, decay(x, 2.0, 0.5, 0.1), p0=[1, 1, 0], backend="numpy",
                      maxfev=5)
    res.save(tmp_path / "failed.npz")
    back = autofit.load_result(tmp_path / "failed.npz")
    assert not back.success and back.status == Status.MAX_NFEV
    assert np.all(np.isnan(back.errors)) and back.sigma is None
    assert back.function is None and back.options["maxfev"] == 5
    with pytest.raises(ValueError, match="user function"):
        back.evaluate(x)


@pytest.mark.parametrize("suffix", formats())
def test_refuses_to_overwrite_unless_asked(batch, tmp_path, suffix):
    if suffix == "zarr":
        zarr_or_skip()
    path = tmp_path / f"batch.{suffix}"
    batch.save(path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        batch.save(path)
    x = np.linspace(-3, 3, 30)
    other = autofit.fit_batch(autofit.models.gaussian, x,
                              autofit.models.gaussian(x, 1.0, np.zeros(3), 1.0, 0.0),
                              backend="numpy")
    other.save(path, overwrite=True)
    assert autofit.load_result(path).shape == (3,)


def test_bad_paths_and_files(batch, tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.npz or \.zarr"):
        batch.save(tmp_path / "batch.h5")
    with pytest.raises(FileNotFoundError, match="no result"):
        autofit.load_result(tmp_path / "missing.npz")
    np.savez(tmp_path / "plain.npz", a=np.arange(3))
    with pytest.raises(ValueError, match="no autofit metadata"):
        autofit.load_result(tmp_path / "plain.npz")
    (tmp_path / "junk.npz").write_text("not a zip file")
    with pytest.raises(ValueError, match="not a readable .npz"):
        autofit.load_result(tmp_path / "junk.npz")


def test_missing_zarr_gives_an_install_hint(batch, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(ImportError, match="pip install zarr"):
        batch.save(tmp_path / "batch.zarr")


def test_interrupted_save_leaves_the_old_file_and_no_debris(batch, tmp_path, monkeypatch):
    target = tmp_path / "res.npz"
    batch.save(target)
    before = target.read_bytes()
    neighbour = tmp_path / "res.npz.partial.npz"        # a name a user might have chosen
    neighbour.write_bytes(b"mine")

    def broken_savez(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        batch.save(target, overwrite=True)
    assert target.read_bytes() == before
    assert neighbour.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.npz", "res.npz.partial.npz"]
