"""python -m autofit backends / validate / fit / fit-batch."""

import subprocess
import sys

import numpy as np
import pytest

import autofit
from autofit import __main__ as cli
from autofit.selftest import validate
from tests.conftest import installed


def test_backends_lists_every_backend_and_the_fallback_table(capsys):
    assert cli.main(["backends"]) == 0
    out = capsys.readouterr().out
    for name in ("numpy", "numba", "jax"):
        assert name in out
    assert "jax    -> numba -> numpy" in out
    assert "jacobian_autodiff -> jax" in out
    assert "a call now would run on" in out


def test_validate_passes_and_prints_a_table(capsys):
    backends = [b for b in ("numba", "jax") if installed(b)] or ["numpy"]
    code = cli.main(["validate", "--sizes", "10,200", "--kernel", "model_gaussian",
                     "--kernel", "lm_solve", *sum((["--backend", b] for b in backends), [])])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "model_gaussian" in out and "lm_solve" in out
    assert "0 disagreement(s)" in out


def test_validate_exits_nonzero_on_disagreement(monkeypatch, capsys):
    if not installed("numba"):
        pytest.skip("numba is not installed")
    import autofit.numba
    import autofit.original

    monkeypatch.setattr(autofit.numba, "model_linear",
                        lambda x, p: autofit.original.model_linear(x, p) + 1e-6)
    code = cli.main(["validate", "--sizes", "10", "--kernel", "model_linear",
                     "--backend", "numba", "--jobs", "1"])  # the patch is in this process
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL model_linear" in out


def test_format_table_marks_errors():
    row = validate.Comparison("lm_solve", "analytic", 10, "jax", float("inf"), 1e-8, False,
                              0.0, "RuntimeError: boom")
    assert "FAIL lm_solve [analytic, n=10] on jax: RuntimeError: boom" in \
        validate.format_table([row])


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "autofit", "backends"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "fallback table" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "autofit", "frobnicate"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


# -- fit and fit-batch ---------------------------------------------------------------------


@pytest.fixture
def gaussian_csv(tmp_path):
    x = np.linspace(0, 10, 80)
    y = autofit.models.gaussian(x, 3.0, 4.0, 0.8, 0.5)
    y = y + 0.05 * np.random.default_rng(0).normal(size=x.size)
    path = tmp_path / "data.csv"
    lines = ["time,signal,err"] + [f"{a},{b},0.05" for a, b in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def one_line_error(capsys, code, *fragments):
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], captured.err
    for fragment in fragments:
        assert fragment in lines[0]
    return captured


def test_fit_prints_the_report_and_writes_the_plot(gaussian_csv, tmp_path, capsys):
    plot, out = tmp_path / "fit.png", tmp_path / "fit.npz"
    code = cli.main(["fit", str(gaussian_csv), "--model", "gaussian", "--x", "time", "--y",
                     "signal", "--sigma", "err", "--backend", "numpy", "--plot", str(plot),
                     "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert "model gaussian: converged" in stdout and "center" in stdout
    assert "reduced chi2" in stdout and "backend       numpy" in stdout
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"
    saved = autofit.load_result(out)
    assert saved["center"] == pytest.approx(4.0, abs=0.02) and saved.sigma is not None
    assert saved.x.shape == (80,)


def test_fit_defaults_and_indices_on_a_whitespace_table(tmp_path, capsys):
    x = np.linspace(0, 4, 40)
    y = 2.5 * np.exp(-1.3 * x) + 0.5
    path = tmp_path / "decay.dat"
    path.write_text("# time  counts\n" + "\n".join(f"{b:.12g}   {a:.12g}" for a, b in
                                                   zip(x, y)) + "\n\n")
    code = cli.main(["fit", str(path), "--model", "exponential_decay", "--x", "1",
                     "--backend", "numpy"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    amplitude = stdout.split("amplitude")[1].split()[0]
    assert float(amplitude) == pytest.approx(2.5, rel=1e-6)  # x from column 1, y column 0


def test_fit_skips_rows_with_missing_values(gaussian_csv, capsys):
    text = gaussian_csv.read_text().splitlines()
    text[5] = text[5].split(",")[0] + ",,0.05"
    gaussian_csv.write_text("\n".join(text))
    code = cli.main(["fit", str(gaussian_csv), "--model", "gaussian", "--backend", "numpy"])
    stdout = capsys.readouterr().out
    assert code == 0 and "1 row(s) with missing" in stdout and "points        79" in stdout


def test_fit_that_does_not_converge_exits_1(gaussian_csv, capsys):
    code = cli.main(["fit", str(gaussian_csv), "--model", "gaussian", "--backend", "numpy",
                     "--maxfev", "3"])
    assert code == 1 and "NOT CONVERGED" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, fragments", [
    (["--model", "gauss"], ("unknown model 'gauss'", "gaussian", "multi_lorentzian")),
    (["--model", "polynomial"], ("polynomial:<degree>",)),
    (["--model", "gaussian", "--y", "volts"], ("no column 'volts'", "time, signal, err")),
    (["--model", "gaussian", "--x", "7"], ("no column '7'", "0 to 2")),
    (["--model", "gaussian", "--p0", "1,two"], ("--p0 must be comma-separated",)),
    (["--model", "gaussian", "--p0", "1,2"], ("p0 has 2 value(s)",)),
    (["--model", "gaussian_2d", "--x", "time"], ("takes 2 x column(s)",)),
])
def test_fit_user_errors_exit_2_with_one_line(gaussian_csv, capsys, arguments, fragments):
    one_line_error(capsys, cli.main(["fit", str(gaussian_csv), *arguments]), *fragments)


def test_fit_unreadable_files(tmp_path, capsys):
    one_line_error(capsys, cli.main(["fit", str(tmp_path / "none.csv"), "--model", "linear"]),
                   "cannot read", "No such file")
    binary = tmp_path / "image.csv"
    binary.write_bytes(bytes(range(256)))
    one_line_error(capsys, cli.main(["fit", str(binary), "--model", "linear"]),
                   "not a text file")
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n2,abc\n3\n")
    one_line_error(capsys, cli.main(["fit", str(bad), "--model", "linear"]),
                   "bad.csv line 3, column 'y': 'abc' is not a number")
    bad.write_text("x,y\n1,2\n3\n")
    one_line_error(capsys, cli.main(["fit", str(bad), "--model", "linear"]),
                   "line 3 has 1 field(s); expected 2")


def test_fit_refuses_to_overwrite_before_fitting(gaussian_csv, tmp_path, capsys):
    plot = tmp_path / "fit.png"
    plot.write_bytes(b"keep me")
    captured = one_line_error(capsys, cli.main(["fit", str(gaussian_csv), "--model",
                                                "gaussian", "--plot", str(plot)]),
                              "exists; pass --overwrite")
    assert "model gaussian" not in captured.out and plot.read_bytes() == b"keep me"
    assert cli.main(["fit", str(gaussian_csv), "--model", "gaussian", "--backend", "numpy",
                     "--plot", str(plot), "--overwrite"]) == 0
    assert plot.read_bytes()[:4] == b"\x89PNG"
    one_line_error(capsys, cli.main(["fit", str(gaussian_csv), "--model", "gaussian",
                                     "--plot", str(tmp_path / "fit.xyz")]), "--plot")
    one_line_error(capsys, cli.main(["fit", str(gaussian_csv), "--model", "gaussian",
                                     "--out", str(tmp_path / "missing" / "r.npz")]),
                   "does not exist")


@pytest.fixture
def lorentzian_cube(tmp_path):
    x = np.linspace(2.80, 2.94, 120)
    model = autofit.models.multi_lorentzian(2)
    rows, columns = np.mgrid[0:3, 0:4]
    cube = model(x, -0.2, 2.85 + 0.002 * columns, 0.004, -0.3, 2.89 - 0.002 * rows, 0.005,
                 1.0)
    cube = cube + 0.002 * np.random.default_rng(3).normal(size=cube.shape)
    cube[0, 1] = np.nan
    path = tmp_path / "cube.npy"
    np.save(path, cube)
    return path, x


def test_fit_batch_saves_results_and_maps(lorentzian_cube, tmp_path, capsys):
    path, x = lorentzian_cube
    out, maps, histograms = tmp_path / "res.npz", tmp_path / "maps.png", tmp_path / "h.png"
    code = cli.main(["fit-batch", str(path), "--model", "multi_lorentzian:2", "--x-range",
                     "2.80", "2.94", "--backend", "numpy", "--out", str(out), "--plot-maps",
                     str(maps), "--plot-histograms", str(histograms), "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert "converged 11/12" in stdout and "NONFINITE_DATA" in stdout
    result = autofit.load_result(out)
    assert result.shape == (3, 4) and result.model == "multi_lorentzian"
    assert len(result.param_names) == 7 and result.covariance is None
    expected = 2.89 - 0.002 * np.mgrid[0:3, 0:4][0]
    good = result.converged
    np.testing.assert_allclose(result["center_2"][good], expected[good], atol=2e-4)
    assert maps.read_bytes()[:4] == b"\x89PNG" and histograms.stat().st_size > 10_000
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["fit-batch", str(path), "--model", "multi_lorentzian:2", "--x",
                     str(tmp_path / "x.npy"), "--backend", "numpy", "--out", str(out),
                     "--overwrite", "--covariance", "--no-progress"]) == 0
    assert autofit.load_result(out).covariance.shape == (3, 4, 7, 7)


def test_fit_batch_2d_model_defaults_to_pixel_coordinates(tmp_path, capsys):
    columns, rows = np.meshgrid(np.arange(9.0), np.arange(9.0))
    pixels = np.stack([columns.ravel(), rows.ravel()])
    spots = np.stack([autofit.models.gaussian_2d(pixels, 10.0, cx, 3.0, 1.2, 1.0)
                      for cx in (3.5, 4.0, 5.25)])
    np.save(tmp_path / "spots.npy", spots)
    out = tmp_path / "spots.zarr"
    assert cli.main(["fit-batch", str(tmp_path / "spots.npy"), "--model", "gaussian_2d",
                     "--backend", "numpy", "--out", str(out), "--no-progress"]) == 0
    result = autofit.load_result(out)
    np.testing.assert_allclose(result["x0"], [3.5, 4.0, 5.25], atol=1e-6)
    np.testing.assert_allclose(result["y0"], 3.0, atol=1e-6)
    np.save(tmp_path / "odd.npy", spots[:, :80])
    one_line_error(capsys, cli.main(["fit-batch", str(tmp_path / "odd.npy"), "--model",
                                     "gaussian_2d"]), "not a square spot")


def test_fit_batch_user_errors(lorentzian_cube, tmp_path, capsys):
    path, _ = lorentzian_cube
    one_line_error(capsys, cli.main(["fit-batch", str(path), "--model", "gaussian"]),
                   "--x x.npy or --x-range")
    one_line_error(capsys, cli.main(["fit-batch", str(tmp_path / "no.npy"), "--model",
                                     "gaussian", "--x-range", "0", "1"]), "cannot read")
    (tmp_path / "text.npy").write_text("hello")
    one_line_error(capsys, cli.main(["fit-batch", str(tmp_path / "text.npy"), "--model",
                                     "gaussian", "--x-range", "0", "1"]), "cannot read")
    np.save(tmp_path / "x.npy", np.linspace(0, 1, 7))
    one_line_error(capsys, cli.main(["fit-batch", str(path), "--model", "gaussian", "--x",
                                     str(tmp_path / "x.npy"), "--backend", "numpy"]),
                   "x must end with the n_points=120 axis")
    out = tmp_path / "res.npz"
    out.write_bytes(b"old")
    captured = one_line_error(capsys, cli.main(["fit-batch", str(path), "--model", "gaussian",
                                                "--x-range", "0", "1", "--out", str(out)]),
                              "exists; pass --overwrite")
    assert "fitting" not in captured.out and out.read_bytes() == b"old"
    np.save(tmp_path / "flat.npy", np.ones((5, 30)))
    one_line_error(capsys, cli.main(["fit-batch", str(tmp_path / "flat.npy"), "--model",
                                     "gaussian", "--x-range", "0", "1", "--plot-maps",
                                     str(tmp_path / "m.png")]), "(height, width, n_points)")


def test_fit_batch_asks_for_a_progress_bar_only_where_fit_batch_has_one(lorentzian_cube,
                                                                        monkeypatch):
    path, _ = lorentzian_cube
    real = autofit.fit_batch
    calls = []

    def with_progress(model, x, y, *, progress=None, **options):
        calls.append(progress)
        return real(model, x, y, **options)

    def without_progress(model, x, y, **options):
        calls.append(options.get("progress", "absent"))
        return real(model, x, y, **options)

    arguments = ["fit-batch", str(path), "--model", "multi_lorentzian:2", "--x-range", "2.80",
                 "2.94", "--backend", "numpy"]
    monkeypatch.setattr(autofit, "fit_batch", with_progress)
    assert cli.main(arguments) == 0 and cli.main([*arguments, "--no-progress"]) == 0
    monkeypatch.setattr(autofit, "fit_batch", without_progress)
    assert cli.main(arguments) == 0
    assert calls == [True, False, "absent"]


def test_fit_errors_from_a_subprocess_have_no_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "autofit", "fit", str(tmp_path / "no.csv"),
                          "--model", "gaussian"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("python -m autofit fit: error: cannot read")


def test_validate_bundles_keep_a_backend_together_and_split_the_longest():
    pairs = validate._pairs(["numba", "jax"], None)
    by_backend = validate.bundles(pairs, ["numba", "jax"], 2)
    assert [{backend for _, backend in bundle} for bundle in by_backend] == [{"numba"},
                                                                              {"jax"}]
    three = validate.bundles(pairs, ["numba", "jax"], 3)
    assert len(three) == 3
    assert sorted(pair for bundle in three for pair in bundle) == sorted(pairs)
    assert all(len({backend for _, backend in bundle}) == 1 for bundle in three)
    # The longest backend was split into two halves of about equal expected seconds, the
    # heavy kernels apart; each half keeps the table's order.
    backends = [bundle[0][1] for bundle in three]
    split = [b for b in three if backends.count(b[0][1]) == 2]
    longest = max(by_backend, key=validate._expected_seconds)
    assert {bundle[0][1] for bundle in split} == {longest[0][1]}
    halves = sorted(validate._expected_seconds(bundle) for bundle in split)
    assert halves[0] >= 0.75 * halves[1]
    for bundle in three:
        assert bundle == sorted(bundle, key=pairs.index)
    assert validate.bundles(pairs[:1], ["numba"], 3) == [pairs[:1]]


def test_validate_in_worker_processes_gives_the_rows_of_one_process():
    backends = validate.available_backends()
    if len(backends) < 2:
        pytest.skip("one backend installed: nothing to run side by side")
    kernels = ["model_linear", "jacobian_gaussian"]
    alone = validate.run(backends=backends, sizes=(10,), kernels=kernels, jobs=1)
    side_by_side = validate.run(backends=backends, sizes=(10,), kernels=kernels, jobs=2)
    key = [(r.kernel, r.variant, r.n_points, r.backend, r.deviation, r.ok) for r in alone]
    assert key == [(r.kernel, r.variant, r.n_points, r.backend, r.deviation, r.ok)
                   for r in side_by_side]
    assert {r.backend for r in side_by_side} >= set(backends) - {"numpy"}
