"""FitResult.plot, BatchResult.plot_maps and plot_histograms (matplotlib, Agg backend)."""

import sys

import numpy as np
import pytest

import autofit

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def decay(x, a, b, c):
    return a * np.exp(-b * x) + c


@pytest.fixture(scope="module")
def one_d():
    x = np.linspace(0, 10, 101)
    y = autofit.models.gaussian(x, 3.0, 4.0, 0.8, 0.5)
    y = y + 0.05 * np.random.default_rng(0).normal(size=x.size)
    return autofit.fit(autofit.models.gaussian, x, y, sigma=np.full(x.size, 0.05),
                       backend="numpy")


@pytest.fixture(scope="module")
def image_batch():
    """A (6, 7) batch of gaussians with a block of nan pixels (not fitted)."""
    x = np.linspace(-5, 5, 48)
    rows, columns = np.mgrid[0:6, 0:7]
    centers = 0.3 * columns - 0.2 * rows
    cube = autofit.models.gaussian(x, 2.0, centers, 0.8, 0.1)
    cube = cube + 0.02 * np.random.default_rng(1).normal(size=cube.shape)
    cube[1:3, 2:4] = np.nan
    return autofit.fit_batch(autofit.models.gaussian, x, cube, backend="numpy")


def test_fit_plot_has_data_fit_and_an_aligned_residual_panel(one_d, tmp_path):
    fig = one_d.plot(xlabel="time (s)", ylabel="signal")
    main, lower = fig.axes
    assert main.get_shared_x_axes().joined(main, lower)
    assert main.get_ylabel() == "signal" and lower.get_xlabel() == "time (s)"
    assert lower.get_ylabel() == "residual"
    curve = [line for line in main.get_lines() if line.get_label() == "fit"][0]
    grid, values = curve.get_data()
    assert grid.size == 1000 and grid[0] == 0.0 and grid[-1] == 10.0
    np.testing.assert_allclose(values, autofit.models.gaussian(grid, *one_d.params))
    assert len(main.containers) == 1 and main.containers[0].has_yerr  # sigma -> error bars
    points = lower.containers[0].lines[0].get_ydata()
    np.testing.assert_allclose(points, one_d.y - one_d.best_fit)
    assert "reduced χ²" in main.get_title()
    path = tmp_path / "fit.png"
    fig.savefig(path)
    assert path.stat().st_size > 10_000


def test_fit_plot_into_given_axes(one_d):
    fig, ax = plt.subplots()
    assert one_d.plot(ax=ax) is fig and fig.axes == [ax]
    fig, (top, bottom) = plt.subplots(2, 1)
    one_d.plot(ax=(top, bottom))
    assert bottom.get_ylabel() == "residual"


def test_failed_fit_plot_says_so():
    x = np.linspace(0, 10, 60)
    res = autofit.fit(decay, x, decay(x, 2.0, 0.5, 0.1), p0=[1, 1, 0], backend="numpy",
                      maxfev=5)
    fig = res.plot()
    assert "NOT CONVERGED (MAX_NFEV)" in fig.axes[0].get_title()


def test_plot_of_a_loaded_user_function_draws_the_fit_at_the_data(tmp_path):
    x = np.linspace(0, 4, 30)
    res = autofit.fit(decay, x, decay(x, 2.0, 1.3, 0.5), p0=[1, 1, 0], backend="numpy")
    res.save(tmp_path / "r.npz")
    back = autofit.load_result(tmp_path / "r.npz")
    fig = back.plot()
    curve = [line for line in fig.axes[0].get_lines() if line.get_label() == "fit"][0]
    np.testing.assert_allclose(curve.get_ydata(), res.best_fit)


def test_two_dimensional_fit_plots_images_on_the_pixel_grid():
    columns, rows = np.meshgrid(np.arange(9.0), np.arange(7.0))
    x = np.stack([columns.ravel(), rows.ravel()])
    model = autofit.models.gaussian_2d
    y = model(x, 5.0, 4.2, 3.1, 1.5, 0.5)
    y = y + 0.05 * np.random.default_rng(2).normal(size=y.size)
    res = autofit.fit(model, x, y, backend="numpy")
    fig = res.plot()
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert [im.axes.get_title() for im in images] == ["data", "fit", "residual"]
    np.testing.assert_allclose(images[0].get_array(), y.reshape(7, 9))
    np.testing.assert_allclose(images[2].get_array(), (y - res.best_fit).reshape(7, 9))
    assert images[0].get_extent() == [-0.5, 8.5, -0.5, 6.5]
    with pytest.raises(ValueError, match="1-D models"):
        res.plot(ax=fig.axes[0])


def test_two_dimensional_fit_off_a_grid_is_a_scatter_plot():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 8, size=(2, 150))
    model = autofit.models.gaussian_2d
    res = autofit.fit(model, x, model(x, 5.0, 4.0, 4.0, 1.5, 0.5), backend="numpy")
    fig = res.plot()
    assert not any(ax.images for ax in fig.axes)
    panels = [ax for ax in fig.axes if ax.get_title() in ("data", "fit", "residual")]
    assert len(panels) == 3
    for ax in panels:
        (points,) = ax.collections
        assert isinstance(points, matplotlib.collections.PathCollection)
        np.testing.assert_allclose(points.get_offsets(), x.T)


def test_maps_mask_the_fits_that_did_not_converge(image_batch, tmp_path):
    fig = image_batch.plot_maps()
    maps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in maps] == [*image_batch.param_names, "reduced χ²"]
    not_converged = ~image_batch.converged
    assert not_converged.sum() == 4
    for ax in maps:
        shown = ax.images[0].get_array()
        np.testing.assert_array_equal(np.ma.getmaskarray(shown), not_converged)
        assert ax.images[0].colorbar is not None
    center = maps[1].images[0].get_array()
    np.testing.assert_allclose(center[~not_converged], image_batch["center"][~not_converged])
    assert ax.images[0].get_cmap().get_bad()[:3] == pytest.approx(
        matplotlib.colors.to_rgb("lightgrey"))
    assert "not converged (4)" in fig.get_suptitle()
    fig.savefig(tmp_path / "maps.png")
    only = image_batch.plot_maps(["width"], chi2=False)
    assert [ax.get_title() for ax in only.axes if ax.images] == ["width"]


def test_maps_need_a_two_dimensional_batch():
    x = np.linspace(-3, 3, 30)
    y = autofit.models.gaussian(x, 1.0, np.zeros(5), 1.0, 0.0)
    res = autofit.fit_batch(autofit.models.gaussian, x, y, backend="numpy")
    with pytest.raises(ValueError, match=r"2-D leading shape.*\(5,\)"):
        res.plot_maps()
    fig = res.plot_histograms(bins=7)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4


def test_histograms_count_the_converged_fits(image_batch):
    fig = image_batch.plot_histograms(bins=10)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_xlabel() for ax in visible] == list(image_batch.param_names)
    heights = [patch.get_height() for patch in visible[0].patches]
    assert len(heights) == 10 and sum(heights) == image_batch.converged.sum()
    with pytest.raises(ValueError, match="unknown parameter"):
        image_batch.plot_histograms(["centre"])


def test_missing_matplotlib_gives_an_install_hint(one_d, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        one_d.plot()
