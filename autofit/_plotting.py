"""Figures of fit results: :meth:`FitResult.plot`, :meth:`BatchResult.plot_maps` and
:meth:`BatchResult.plot_histograms`.

matplotlib is optional (``pip install 'autofit-lm[plot]'``) and imported only when a figure
is asked for. New figures come from ``matplotlib.pyplot``, so ``plt.show()`` shows them and
a notebook displays them; close them (``plt.close(fig)``) when drawing many.
"""

from __future__ import annotations

import math

import numpy as np

# Points of the model curve drawn between the smallest and largest x of a 1-D fit.
CURVE_POINTS = 1000
# Above this many points, data are drawn as dots without error bars (bars would be a smear).
MAX_ERROR_BARS = 2000
# Colour limits of the maps: these percentiles of the converged values, so that a few
# outliers do not flatten the rest of the image to one colour.
MAP_PERCENTILES = (1.0, 99.0)
# Below this many converged pixels the percentiles would only trim real extremes: full range.
MAP_MIN_PIXELS_FOR_PERCENTILES = 100
NOT_CONVERGED_COLOUR = "lightgrey"


def pyplot():
    """``matplotlib.pyplot``, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib, which is not installed: "
                          "pip install matplotlib (or pip install 'autofit-lm[plot]')"
                          ) from exc
    return plt


def _sigma_bars(sigma, n_points):
    if sigma is None:
        return None
    sigma = np.asarray(sigma, dtype=np.float64)
    bars = np.sqrt(np.diagonal(sigma)) if sigma.ndim == 2 else np.broadcast_to(sigma,
                                                                               (n_points,))
    return bars if n_points <= MAX_ERROR_BARS else None


def plot_fit(result, ax=None, *, residuals=True, xlabel="x", ylabel="y"):
    """The figure of :meth:`autofit.FitResult.plot`."""
    plt = pyplot()
    x = np.asarray(result.x, dtype=np.float64)
    if x.ndim == 2:
        if ax is not None:
            raise ValueError("ax= is for 1-D models; a 2-D model's plot makes its own "
                             "figure of three images (data, fit, residuals)")
        return _plot_fit_2d(plt, result, x)
    y = np.asarray(result.y, dtype=np.float64)
    if ax is None:
        if residuals:
            fig, (main, lower) = plt.subplots(
                2, 1, sharex=True, figsize=(7, 5.5), layout="constrained",
                gridspec_kw={"height_ratios": (3, 1)})
        else:
            fig, main = plt.subplots(figsize=(7, 4.5), layout="constrained")
            lower = None
    elif isinstance(ax, (tuple, list)):
        main, lower = ax
        fig = main.figure
    else:
        main, lower, fig = ax, None, ax.figure
    bars = _sigma_bars(result.sigma, y.size)
    small = y.size > MAX_ERROR_BARS
    main.errorbar(x, y, yerr=bars, fmt=".", ms=2 if small else 4, color="0.25", ecolor="0.6",
                  elinewidth=0.8, label="data", zorder=1)
    order = np.argsort(x, kind="stable")
    if result.function is not None:
        finite = x[np.isfinite(x)]
        grid = np.linspace(finite.min(), finite.max(), CURVE_POINTS)
        main.plot(grid, result.evaluate(grid), color="C3", lw=1.6, label="fit", zorder=2)
    else:  # a loaded result of a user function: the model is known at the data only
        main.plot(x[order], result.best_fit[order], color="C3", lw=1.6, label="fit", zorder=2)
    main.set_ylabel(ylabel)
    status = "" if result.success else f", NOT CONVERGED ({result.status.name})"
    main.set_title(f"{result.model}: reduced χ² = {result.reduced_chi2:.4g}, "
                   f"R² = {result.r_squared:.4g}{status}")
    main.legend(loc="best")
    if lower is None:
        main.set_xlabel(xlabel)
        return fig
    lower.errorbar(x, result.residuals, yerr=bars, fmt=".", ms=2 if small else 4,
                   color="0.25", ecolor="0.6", elinewidth=0.8)
    lower.axhline(0.0, color="C3", lw=1.0)
    lower.set_xlabel(xlabel)
    lower.set_ylabel("residual")
    return fig


def _grid(x):
    """(row index, column index, shape) if the points lie on a full regular grid, else None."""
    columns, column_index = np.unique(x[0], return_inverse=True)
    rows, row_index = np.unique(x[1], return_inverse=True)
    if columns.size * rows.size != x.shape[1]:
        return None
    filled = np.zeros((rows.size, columns.size), dtype=bool)
    filled[row_index, column_index] = True
    if not filled.all():
        return None
    # Pixel edges, half a step outside the first and last coordinates.
    half_x = (columns[-1] - columns[0]) / max(columns.size - 1, 1) / 2 or 0.5
    half_y = (rows[-1] - rows[0]) / max(rows.size - 1, 1) / 2 or 0.5
    extent = (columns[0] - half_x, columns[-1] + half_x, rows[0] - half_y, rows[-1] + half_y)
    return row_index, column_index, (rows.size, columns.size), extent


def _plot_fit_2d(plt, result, x):
    y = np.asarray(result.y, dtype=np.float64)
    panels = (("data", y), ("fit", result.best_fit), ("residual", result.residuals))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    grid = _grid(x) if np.all(np.isfinite(x)) else None
    limits = np.nanmin(y), np.nanmax(y)
    for axis, (title, values) in zip(axes, panels, strict=True):
        diverging = title == "residual"
        if diverging:
            bound = float(np.nanmax(np.abs(values))) or 1.0
            vmin, vmax, cmap = -bound, bound, "RdBu_r"
        else:
            (vmin, vmax), cmap = limits, "viridis"
        if grid is not None:
            row_index, column_index, shape, extent = grid
            image = np.full(shape, np.nan)
            image[row_index, column_index] = values
            mappable = axis.imshow(image, origin="lower", extent=extent, vmin=vmin, vmax=vmax,
                                   cmap=cmap, interpolation="nearest", aspect="equal")
        else:
            mappable = axis.scatter(x[0], x[1], c=values, s=12, vmin=vmin, vmax=vmax,
                                    cmap=cmap)
            axis.set_aspect("equal")
        axis.set_title(title)
        axis.set_xlabel("x[0]")
        axis.set_ylabel("x[1]")
        fig.colorbar(mappable, ax=axis, shrink=0.85)
    status = "" if result.success else f", NOT CONVERGED ({result.status.name})"
    fig.suptitle(f"{result.model}: reduced χ² = {result.reduced_chi2:.4g}, "
                 f"R² = {result.r_squared:.4g}{status}")
    return fig


def _selected(result, params):
    if params is None:
        return list(result.param_names)
    params = [params] if isinstance(params, str) else list(params)
    unknown = [p for p in params if p not in result.param_names]
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; the parameters are "
                         f"{result.param_names}")
    return params


def _layout(plt, n_panels, width, height):
    n_columns = min(n_panels, 4)
    n_rows = math.ceil(n_panels / n_columns)
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(width * n_columns, height * n_rows),
                             layout="constrained", squeeze=False)
    for axis in axes.flat[n_panels:]:
        axis.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def plot_maps(result, params=None, *, chi2=True):
    """The figure of :meth:`autofit.BatchResult.plot_maps`."""
    if len(result.shape) != 2:
        raise ValueError(f"plot_maps draws one image per parameter and needs a batch of 2-D "
                         f"leading shape (height, width); this batch has shape "
                         f"{result.shape}. Reshape y to (height, width, n_points) before "
                         "fitting, or use plot_histograms()")
    plt = pyplot()
    names = _selected(result, params)
    converged = np.asarray(result.converged, dtype=bool)
    maps = [(name, result[name]) for name in names]
    if chi2:
        maps.append(("reduced χ²", np.asarray(result.reduced_chi2)))
    fig, axes = _layout(plt, len(maps), 3.6, 3.2)
    cmap = plt.get_cmap("viridis").with_extremes(bad=NOT_CONVERGED_COLOUR)
    for axis, (title, values) in zip(axes, maps, strict=True):
        shown = np.ma.masked_where(~converged | ~np.isfinite(values), values)
        kept = shown.compressed()
        if kept.size:
            vmin, vmax = (np.percentile(kept, MAP_PERCENTILES)
                          if kept.size >= MAP_MIN_PIXELS_FOR_PERCENTILES
                          else (kept.min(), kept.max()))
            if vmin == vmax:
                vmin, vmax = vmin - 0.5, vmax + 0.5
        else:
            vmin, vmax = 0.0, 1.0
        image = axis.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        extend = ("both" if kept.size and kept.min() < vmin and kept.max() > vmax
                  else "min" if kept.size and kept.min() < vmin
                  else "max" if kept.size and kept.max() > vmax else "neither")
        colorbar = fig.colorbar(image, ax=axis, shrink=0.85, extend=extend)
        # Whole values on the ticks: an offset ("1e-5+2.828") is hard to read off a map.
        colorbar.formatter.set_useOffset(False)
        axis.set_title(title)
        axis.set_xlabel("column")
        axis.set_ylabel("row")
    n_bad = int(np.count_nonzero(~converged))
    fig.suptitle(f"{result.model}: {converged.size - n_bad}/{converged.size} converged"
                 + (f"; {NOT_CONVERGED_COLOUR}: not converged ({n_bad})" if n_bad else ""))
    return fig


def plot_histograms(result, params=None, *, bins=50):
    """The figure of :meth:`autofit.BatchResult.plot_histograms`."""
    plt = pyplot()
    names = _selected(result, params)
    converged = np.asarray(result.converged, dtype=bool)
    fig, axes = _layout(plt, len(names), 3.4, 2.8)
    for axis, name in zip(axes, names, strict=True):
        values = np.asarray(result[name])[converged]
        values = values[np.isfinite(values)]
        if values.size:
            axis.hist(values, bins=bins, color="C0")
            median = float(np.median(values))
            axis.axvline(median, color="C3", lw=1.2, label=f"median {median:.4g}")
            axis.legend(loc="upper right", fontsize="small")
        else:
            axis.text(0.5, 0.5, "no converged fits", ha="center", va="center",
                      transform=axis.transAxes)
        axis.set_xlabel(name)
        axis.set_ylabel("fits")
    fig.suptitle(f"{result.model}: {int(converged.sum())}/{converged.size} converged fits")
    return fig
