"""fit_batch on dask arrays: a real LocalCluster of 2 worker processes, and the local path.

Every dask result is compared field by field with the in-memory fit_batch on the same
backend: each fit runs the same code on the same numbers, so they must be identical.
"""

import dataclasses
import fractions
import warnings

import numpy as np
import pytest

import autofit
from autofit import Status, models

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

X = np.linspace(-5.0, 5.0, 24)
TRUE = np.array([3.0, 0.4, 1.1, 0.2])


def batch(shape, seed=0):
    """Noisy gaussians near TRUE shaped ``shape + (n_points,)``, one curve with a nan."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    truth = TRUE * (1.0 + 0.1 * rng.normal(size=(n, 4)))
    y = np.stack([models.gaussian(X, *t) for t in truth]) + 0.05 * rng.normal(size=(n, X.size))
    y[3, 5] = np.nan
    return y.reshape(shape + (X.size,)), truth.reshape(shape + (4,))


def assert_identical(result, reference):
    for item in dataclasses.fields(reference):
        got, want = getattr(result, item.name), getattr(reference, item.name)
        if isinstance(want, np.ndarray):
            assert got.shape == want.shape and got.dtype == want.dtype, item.name
            np.testing.assert_array_equal(got, want, err_msg=item.name)
        else:
            assert got == want, item.name


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


def fit_keys(client, run):
    """Run ``run()`` and return the keys of the tasks the cluster ran meanwhile."""
    with distributed.get_task_stream(client) as stream:
        result = run()
    return result, [task["key"] for task in stream.data]


def test_dask_cube_on_cluster_equals_in_memory(client):
    y, truth = batch((6, 10))
    p0 = truth * 1.02
    sigma = np.full(y.shape, 0.05)
    reference = autofit.fit_batch(models.gaussian, X, y, p0=p0, sigma=sigma,
                                  bounds=([0, -2, 0.1, -1], [10, 2, 5, 1]), backend="numpy")
    y_dask = da.from_array(y, chunks=(2, 5, 8))      # points split too: autofit rechunks
    result, keys = fit_keys(client, lambda: autofit.fit_batch(
        models.gaussian, X, y_dask, p0=da.from_array(p0, chunks=(3, 3, 4)),
        sigma=da.from_array(sigma), bounds=([0, -2, 0.1, -1], [10, 2, 5, 1]),
        backend="numpy"))
    assert any("_fit_block" in str(key) for key in keys)     # it ran on the active Client
    assert_identical(result, reference)
    assert result.status[0, 3] == Status.NONFINITE_DATA
    assert result.backend == "numpy" and result.params.shape == (6, 10, 4)


def test_user_function_is_shipped_to_the_workers(client):
    offset = 0.2

    def shifted_gaussian(x, a, c, w):       # a closure, pickled by value by cloudpickle
        return a * np.exp(-0.5 * ((x - c) / w) ** 2) + offset

    y, truth = batch((20,), seed=1)
    reference = autofit.fit_batch(shifted_gaussian, X, y, p0=[3.0, 0.4, 1.1],
                                  backend="numpy")
    result = autofit.fit_batch(shifted_gaussian, X, da.from_array(y, chunks=(7, 24)),
                               p0=[3.0, 0.4, 1.1], backend="numpy", scheduler=client)
    assert_identical(result, reference)
    assert result.converged.sum() == 19
    # The workers cannot read the closure's source: its definition goes with it, and they
    # fit with the derivatives generated from it, as the in-memory fit does.
    assert "derivatives: exact" in result.backend_reason


@pytest.mark.slow        # numba compiles in each worker process: about 25 s on 2 cores
def test_numba_on_the_cluster_equals_in_memory(client):
    y, truth = batch((40,), seed=2)
    reference = autofit.fit_batch(models.gaussian, X, y, backend="numba")
    result = autofit.fit_batch(models.gaussian, X, da.from_array(y, chunks=(15, 24)),
                               backend="numba")
    assert_identical(result, reference)
    assert result.backend == "numba"


def test_fallback_on_a_worker_is_reported_here(client):
    def not_for_numba(x, a, c, w, o):
        half = float(fractions.Fraction(1, 2))    # a Python class: numba cannot compile it
        return a * np.exp(-half * ((x - c) / w) ** 2) + o

    y, truth = batch((8,), seed=3)
    with pytest.warns(autofit.BackendFallbackWarning, match="numpy"):
        reference = autofit.fit_batch(not_for_numba, X, y, p0=TRUE, backend="numba")
    with pytest.warns(autofit.BackendFallbackWarning, match="numpy"):
        result = autofit.fit_batch(not_for_numba, X, da.from_array(y, chunks=(4, 24)),
                                   p0=TRUE, backend="numba")
    assert_identical(result, reference)
    assert result.backend == "numpy"


def test_in_memory_arrays_go_to_the_cluster_in_chunks(client):
    y, truth = batch((50,), seed=4)
    reference = autofit.fit_batch(models.gaussian, X, y, backend="numpy")
    result, keys = fit_keys(client, lambda: autofit.fit_batch(
        models.gaussian, X, y, backend="numpy", scheduler=client, chunk_size=12))
    assert sum("_fit_block" in str(key) for key in keys) == 5      # 50 fits / 12 per chunk
    assert_identical(result, reference)


def test_threads_scheduler_runs_here_not_on_the_client(client):
    y, truth = batch((4, 5), seed=5)
    reference = autofit.fit_batch(models.gaussian, X, y, backend="numpy")
    result, keys = fit_keys(client, lambda: autofit.fit_batch(
        models.gaussian, X, da.from_array(y, chunks=(1, 5, 24)), backend="numpy",
        scheduler="threads"))
    assert not any("_fit_block" in str(key) for key in keys)
    assert_identical(result, reference)


def test_processes_scheduler_starts_and_stops_a_local_cluster():
    y, truth = batch((12,), seed=9)
    reference = autofit.fit_batch(models.gaussian, X, y, backend="numpy")
    result = autofit.fit_batch(models.gaussian, X, da.from_array(y, chunks=(4, 24)),
                               backend="numpy", scheduler="processes")
    assert_identical(result, reference)


def test_per_fit_x_and_2d_model_blocks():
    rng = np.random.default_rng(6)
    u = np.tile(np.arange(7.0), 7)
    v = np.repeat(np.arange(7.0), 7)
    coords = np.stack([u, v])
    truth = np.column_stack([rng.uniform(5, 10, 9), rng.uniform(2, 4, 9), rng.uniform(2, 4, 9),
                             rng.uniform(0.8, 1.5, 9), np.full(9, 1.0)])
    y = np.stack([models.gaussian_2d(coords, *t) for t in truth])
    x_per_fit = np.broadcast_to(coords, (9, 2, 49)).copy()
    reference = autofit.fit_batch(models.gaussian_2d, x_per_fit, y, backend="numpy")
    result = autofit.fit_batch(models.gaussian_2d, da.from_array(x_per_fit, chunks=(4, 2, 49)),
                               da.from_array(y, chunks=(2, 49)), backend="numpy")
    assert_identical(result, reference)


def test_checkpoint_written_from_the_cluster_resumes(client, tmp_path):
    y, truth = batch((30,), seed=8)
    y_dask = da.from_array(y, chunks=(10, 24))
    reference = autofit.fit_batch(models.gaussian, X, y, backend="numpy")
    path = tmp_path / "run"
    first = autofit.fit_batch(models.gaussian, X, y_dask, backend="numpy", checkpoint=path)
    assert_identical(first, reference)
    (path / "chunk-000000.npz").unlink()
    resumed, keys = fit_keys(client, lambda: autofit.fit_batch(
        models.gaussian, X, y_dask, backend="numpy", checkpoint=path))
    assert sum("_fit_block" in str(key) for key in keys) == 1
    assert_identical(resumed, reference)


def test_argument_errors_are_raised_before_any_work():
    y = da.zeros((10, 24), chunks=(5, 24))
    with pytest.raises(ValueError, match="estimator must be"):
        autofit.fit_batch(models.gaussian, X, y, estimator="poisson")
    with pytest.raises(ValueError, match="p0 must have shape"):
        autofit.fit_batch(models.gaussian, X, y, p0=np.ones((10, 3)), backend="numpy")
    with pytest.raises(ValueError, match="x must end with"):
        autofit.fit_batch(models.gaussian, X[:5], y, backend="numpy")
    with pytest.raises(ValueError, match="chunk_size applies to in-memory"):
        autofit.fit_batch(models.gaussian, X, y, backend="numpy", chunk_size=3)
    with pytest.raises(ValueError, match="scheduler must be"):
        autofit.fit_batch(models.gaussian, X, y, backend="numpy", scheduler="cluster")
    with pytest.raises(ValueError, match="at least one axis of fits"):
        autofit.fit_batch(models.gaussian, X, da.zeros(24, chunks=24), backend="numpy")


def test_no_warning_without_fallback():
    y, truth = batch((6,), seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        autofit.fit_batch(models.gaussian, X, da.from_array(y, chunks=(3, 24)),
                          backend="numpy")
