"""fit_batch's progress bar: shown, delayed or silent as asked, readable in logs."""

import time

import numpy as np
import pytest

import autofit
from autofit import _batch, _progress, models

X = np.linspace(-5.0, 5.0, 24)


def batch(n_fits, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.array([3.0, 0.4, 1.1, 0.2]) * (1.0 + 0.1 * rng.normal(size=(n_fits, 4)))
    return np.stack([models.gaussian(X, *t) for t in truth])


def slow_gaussian(x, a, c, w, o):
    time.sleep(0.0005)       # long enough for the automatic bar's (shortened) delay
    # float(): one fit per call (the NumPy engine would otherwise run all fits in one call).
    return float(a) * np.exp(-0.5 * ((x - c) / w) ** 2) + o


def test_progress_true_writes_a_bar(capsys):
    autofit.fit_batch(models.gaussian, X, batch(300), backend="numpy", progress=True)
    err = capsys.readouterr().err
    assert "fit_batch gaussian on numpy" in err
    assert "100%" in err and "300/300" in err


def test_progress_false_and_short_automatic_batches_write_nothing(capsys):
    autofit.fit_batch(models.gaussian, X, batch(50), backend="numpy", progress=False)
    autofit.fit_batch(models.gaussian, X, batch(50), backend="numpy")   # well under 2 s
    assert capsys.readouterr().err == ""


def test_automatic_bar_appears_once_a_batch_runs_long(capsys, monkeypatch):
    monkeypatch.setattr(_progress, "AUTO_DELAY_S", 0.05)
    monkeypatch.setattr(_batch, "MIN_CHUNK_FITS", 8)
    autofit.fit_batch(slow_gaussian, X, batch(32), p0=[3.0, 0.4, 1.1, 0.2], backend="numpy")
    err = capsys.readouterr().err
    assert "fit_batch slow_gaussian on numpy" in err and "32/32" in err


def test_automatic_bar_stays_silent_for_a_batch_finished_in_one_long_chunk(capsys,
                                                                            monkeypatch):
    monkeypatch.setattr(_progress, "AUTO_DELAY_S", 0.05)
    bar = _progress.ProgressBar(30, None, desc="demo")
    time.sleep(0.1)
    bar.update(30)           # the only update: the batch is already done
    bar.close()
    assert capsys.readouterr().err == ""


def test_log_output_is_one_line_per_update_without_carriage_returns(capsys, monkeypatch):
    monkeypatch.setattr(_progress, "LOG_INTERVAL_S", 0.0)
    bar = _progress.ProgressBar(30, True, desc="demo")
    for _ in range(3):
        bar.update(10)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("demo:") and "0/30" in lines[0]
    assert "30/30" in lines[-1] and len(lines) == len(set(lines)) >= 4


def test_resumed_checkpoint_starts_at_the_finished_count(capsys, tmp_path):
    y = batch(300)
    path = tmp_path / "run"
    autofit.fit_batch(models.gaussian, X, y, backend="numpy", checkpoint=path, chunk_size=100,
                      progress=False)
    (path / "chunk-000002.npz").unlink()
    autofit.fit_batch(models.gaussian, X, y, backend="numpy", checkpoint=path, chunk_size=100,
                      progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert "200/300" in lines[0] and "300/300" in lines[-1]


def test_dask_batches_show_progress_per_block(capsys):
    da = pytest.importorskip("dask.array")
    y = da.from_array(batch(40), chunks=(10, X.size))
    autofit.fit_batch(models.gaussian, X, y, backend="numpy", progress=True,
                      scheduler="threads")
    lines = capsys.readouterr().err.splitlines()
    assert "fit_batch gaussian" in lines[0] and "40/40" in lines[-1]


def test_missing_tqdm(monkeypatch, capsys):
    monkeypatch.setattr(_progress, "tqdm_installed", lambda: False)
    with pytest.warns(UserWarning, match=r"needs the tqdm package.*autofit-lm\[progress\]"):
        autofit.fit_batch(models.gaussian, X, batch(20), backend="numpy", progress=True)
    autofit.fit_batch(models.gaussian, X, batch(20), backend="numpy")     # silent
    assert capsys.readouterr().err == ""


def test_bad_progress_value():
    with pytest.raises(ValueError, match="progress must be None"):
        autofit.fit_batch(models.gaussian, X, batch(2), progress="yes")


def test_adaptive_chunks_give_the_same_fits_as_one_chunk(monkeypatch):
    monkeypatch.setattr(_batch, "MIN_CHUNK_FITS", 16)
    y = batch(200)
    y[7, 3] = np.nan
    one = autofit.fit_batch(models.gaussian, X, y, backend="numpy", progress=False)
    sizes = []
    original = _batch._call

    def recording(*args):
        sizes.append(args[2][1].shape[0])  # y of the chunk's rows
        return original(*args)

    monkeypatch.setattr(_batch, "_call", recording)
    many = autofit.fit_batch(models.gaussian, X, y, backend="numpy", progress=True)
    assert sizes[0] == 16 and sum(sizes) == 200
    for name in ("params", "covariance", "chi2", "n_iter", "status"):
        np.testing.assert_array_equal(getattr(many, name), getattr(one, name))


def test_next_chunk_size_aims_at_a_quarter_second():
    assert _batch._next_chunk_size(1024, 0.0625) == 4096
    assert _batch._next_chunk_size(1024, 10.0) == _batch.MIN_CHUNK_FITS
    assert _batch._next_chunk_size(1024, 0.0) == _batch.CHUNK_FITS
