"""fit_batch(..., checkpoint=path): resume after a crash, refuse what is not ours.

The crash test kills (SIGKILL) a subprocess part way through a batch of many small chunks,
then resumes in this process: the result must equal an uninterrupted run, and only the chunks
without a file may be computed again.
"""

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import autofit
from autofit import _batch, _checkpoint, _distributed, models

X = np.linspace(-5.0, 5.0, 24)
ROOT = Path(__file__).resolve().parents[1]


def batch(n_fits, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.array([3.0, 0.4, 1.1, 0.2]) * (1.0 + 0.1 * rng.normal(size=(n_fits, 4)))
    y = np.stack([models.gaussian(X, *t) for t in truth])
    return y + 0.05 * rng.normal(size=y.shape)


@pytest.fixture
def count_chunks(monkeypatch):
    """Counts the kernel calls of in-memory fit_batch (one per chunk computed)."""
    calls = []
    original = _batch._call

    def counting(*args):
        calls.append(args[2][1].shape[0])  # y of the chunk's rows
        return original(*args)

    monkeypatch.setattr(_batch, "_call", counting)
    return calls


def chunk_files(path):
    return sorted(p.name for p in Path(path).glob("chunk-*.npz"))


def fit(y, path, **options):
    return autofit.fit_batch(models.gaussian, X, y, backend="numpy", checkpoint=path,
                             progress=False, **options)


def assert_same(result, reference):
    for name in ("params", "errors", "covariance", "chi2", "n_iter", "status", "converged"):
        np.testing.assert_array_equal(getattr(result, name), getattr(reference, name), name)


def test_rerun_loads_every_chunk_and_computes_only_missing_ones(tmp_path, count_chunks):
    y = batch(100)
    reference = autofit.fit_batch(models.gaussian, X, y, backend="numpy", progress=False)
    path = tmp_path / "run"
    count_chunks.clear()
    assert_same(fit(y, path, chunk_size=30), reference)
    assert count_chunks == [30, 30, 30, 10]
    assert chunk_files(path) == [f"chunk-00000{i}.npz" for i in range(4)]
    count_chunks.clear()
    assert_same(fit(y, path, chunk_size=30), reference)
    assert count_chunks == []
    (path / "chunk-000002.npz").unlink()
    assert_same(fit(y, path, chunk_size=30), reference)
    assert count_chunks == [30]


def test_damaged_chunk_and_partial_write_are_recomputed(tmp_path, count_chunks):
    y = batch(60)
    reference = autofit.fit_batch(models.gaussian, X, y, backend="numpy", progress=False)
    path = tmp_path / "run"
    fit(y, path, chunk_size=20)
    (path / "chunk-000001.npz").write_bytes(b"PK\x03\x04 truncated")
    (path / ".autofit-k2x9.tmp").write_bytes(b"half a chunk")
    count_chunks.clear()
    assert_same(fit(y, path, chunk_size=20), reference)
    assert count_chunks == [20]
    assert not list(path.glob("*.tmp"))


def test_kill_part_way_then_resume(tmp_path, count_chunks):
    n_fits, chunk = 600, 4
    path = tmp_path / "run"
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import autofit
        from tests.test_checkpoint import X, batch
        autofit.fit_batch(autofit.models.gaussian, X, batch({n_fits}), backend="numpy",
                          checkpoint={str(path)!r}, chunk_size={chunk}, progress=False)
    """))
    job = subprocess.Popen([sys.executable, str(script)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while len(chunk_files(path)) < 10 and job.poll() is None:
            assert time.monotonic() < deadline, "the job wrote no chunks"
            time.sleep(0.005)
        job.send_signal(signal.SIGKILL)
    finally:
        job.wait()
    assert job.returncode == -signal.SIGKILL, "the job ended before it was killed"
    finished = len(chunk_files(path))
    total = n_fits // chunk
    assert 10 <= finished < total
    y = batch(n_fits)
    result = fit(y, path, chunk_size=chunk)
    # Every chunk with a file is loaded; only the others (the one in flight at the kill
    # among them) are computed.
    assert len(count_chunks) == total - finished
    assert_same(result, autofit.fit_batch(models.gaussian, X, y, backend="numpy",
                                          progress=False))
    assert len(chunk_files(path)) == total and not list(path.glob("*.tmp"))


def test_other_inputs_or_options_are_refused(tmp_path):
    y = batch(40)
    path = tmp_path / "run"
    fit(y, path, chunk_size=20)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(ValueError, match="belongs to a different run: its data differ"):
        fit(y * 1.5, path, chunk_size=20)
    with pytest.raises(ValueError, match=r"options \(tol\) differ"):
        fit(y, path, chunk_size=20, tol=1e-6)
    with pytest.raises(ValueError, match=r"options \(backend\) differ"):
        autofit.fit_batch(models.gaussian, X, y, backend="numba", checkpoint=path,
                          chunk_size=20)
    with pytest.raises(ValueError, match=r"model \(builtin, param_names\)"):
        autofit.fit_batch(models.lorentzian, X, y, backend="numpy", checkpoint=path,
                          chunk_size=20)
    with pytest.raises(ValueError, match="pass the same chunk_size"):
        fit(y, path, chunk_size=25)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


def test_never_writes_over_what_is_not_a_checkpoint(tmp_path):
    y = batch(10)
    user_file = tmp_path / "results.npz"
    user_file.write_bytes(b"the user's data")
    with pytest.raises(ValueError, match="is a file, not an autofit checkpoint"):
        fit(y, user_file)
    assert user_file.read_bytes() == b"the user's data"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files but no autofit checkpoint"):
        fit(y, folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    fit(y, empty)
    assert (empty / _checkpoint.MANIFEST).is_file()


def test_manifest_records_the_run(tmp_path):
    path = tmp_path / "run"
    fit(batch(5), path, chunk_size=2)
    manifest = json.loads((path / _checkpoint.MANIFEST).read_text())
    assert manifest["format"] == _checkpoint.FORMAT
    assert manifest["chunks"] == [[0, 2], [2, 4], [4, 5]]
    assert manifest["identity"]["model"] == {"builtin": "gaussian",
                                             "param_names": list(models.gaussian.param_names)}
    assert manifest["identity"]["options"]["backend"] == "numpy"


def test_user_function_identity_follows_its_code():
    def f(x, a):
        return a * x

    def g(x, a):
        return a * x + 1

    assert _checkpoint.model_identity(f) != _checkpoint.model_identity(g)
    assert _checkpoint.model_identity(f) == _checkpoint.model_identity(f)


def test_digest_sees_values_dtypes_and_shapes():
    a = np.arange(12.0).reshape(3, 4)
    digests = {_checkpoint.digest_arrays([a]), _checkpoint.digest_arrays([a.T]),
               _checkpoint.digest_arrays([a.reshape(4, 3)]),
               _checkpoint.digest_arrays([a.astype(np.float32)]),
               _checkpoint.digest_arrays([a + 1e-12]), _checkpoint.digest_arrays([a, None])}
    assert len(digests) == 6
    big = np.random.default_rng(0).normal(size=(10_000, 3))
    assert _checkpoint.digest_arrays([big]) == _checkpoint.digest_arrays([big.copy()])


def test_dask_blocks_resume(tmp_path, monkeypatch):
    da = pytest.importorskip("dask.array")
    y = batch(45).reshape(9, 5, X.size)
    reference = autofit.fit_batch(models.gaussian, X, y, backend="numpy", progress=False)
    y_dask = da.from_array(y, chunks=(3, 5, X.size))
    path = tmp_path / "run"
    first = autofit.fit_batch(models.gaussian, X, y_dask, backend="numpy", checkpoint=path)
    assert_same(first, reference)
    assert len(chunk_files(path)) == 3
    (path / "chunk-000001.npz").unlink()
    blocks = []
    original = _distributed._fit_block

    def counting(*args):
        blocks.append(args[3].shape)  # (model, its definition, x, y, ...)
        return original(*args)

    monkeypatch.setattr(_distributed, "_fit_block", counting)
    resumed = autofit.fit_batch(models.gaussian, X, y_dask, backend="numpy", checkpoint=path)
    assert blocks == [(3, 5, X.size)]
    assert_same(resumed, reference)
    assert resumed.param_names == reference.param_names and resumed.backend == "numpy"
    blocks.clear()
    complete = autofit.fit_batch(models.gaussian, X, y_dask, backend="numpy", checkpoint=path)
    assert blocks == []                     # everything from the checkpoint
    assert_same(complete, reference)
    assert complete.backend_reason == reference.backend_reason
    with pytest.raises(ValueError, match="data differ"):
        autofit.fit_batch(models.gaussian, X, y_dask * 2, backend="numpy", checkpoint=path)
