"""Command line: ``python -m autofit backends | validate | fit | fit-batch``.

``fit`` fits one curve read from a CSV or text file and prints the report; ``fit-batch``
fits every curve of a ``.npy`` cube and saves the results. Mistakes in the command (a file
that cannot be read, an unknown model or column, an output that exists) end with a one-line
message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from autofit import _dispatch, _memory
from autofit.selftest import validate


def backends_report() -> str:
    lines = [f"{'backend':8} {'installed':10} {'version':10} device", "-" * 60]
    for name in _dispatch.BACKENDS:
        installed = _dispatch.is_installed(name)
        version = _dispatch.installed_version(name) if installed else "-"
        device = (_dispatch.host_of(name).device_report() if installed
                  else f"pip install 'autofit-lm[{name}]'")
        lines.append(f"{name:8} {'yes' if installed else 'no':10} {version or '?':10} {device}")
    lines += ["", "fallback table (when a backend cannot run a model, the next one runs, "
              "with a warning; FFIT_STRICT=1 makes it an error):"]
    for name, chain in _dispatch.FALLBACK.items():
        lines.append(f"  {name:6} -> {' -> '.join(chain) if chain else '(none)'}")
    lines.append("kernels some backends lack run on:")
    for kernel_name, targets in _dispatch.KERNEL_FALLBACK.items():
        lines.append(f"  {kernel_name} -> {', '.join(targets)}")
    lines += ["", f"a call now would run on: {_dispatch.choose().reason}",
              f"malloc: {_memory.malloc_report()}"]
    return "\n".join(lines)


class UsageError(Exception):
    """A mistake in the command line or its files: reported in one line, exit status 2."""


# What a user's mistake raises inside autofit (argument checks, files, missing extras).
_USER_ERRORS = (UsageError, ValueError, TypeError, OSError, ImportError, _dispatch.BackendError)


def _model_help() -> str:
    from autofit import models

    return ("a built-in model: " + ", ".join(models.BUILTIN) + "; polynomial:<degree> and "
            "multi_lorentzian:<n_peaks> for the sized ones (e.g. multi_lorentzian:8)")


def read_table(path: Path) -> tuple[list[str] | None, np.ndarray]:
    """(column names or None, (n_rows, n_columns) float64) from a CSV or text table.

    ``.csv``: comma-separated; ``.tsv``: tab-separated; anything else: whitespace-separated.
    Blank lines and lines starting with ``#`` are skipped; the first remaining row is a
    header when any of its fields is not a number. Empty fields are nan.
    """
    delimiter = {".csv": ",", ".tsv": "\t"}.get(path.suffix.lower())
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read {str(path)!r}: not a text file ({exc.reason})") from exc
    except OSError as exc:
        raise UsageError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if delimiter is None:
        rows = [(number, line.split()) for number, line in lines]
    else:
        rows = [(number, [field.strip() for field in fields]) for (number, _), fields in
                zip(lines, csv.reader([line for _, line in lines], delimiter=delimiter),
                    strict=True)]
    if not rows:
        raise UsageError(f"{str(path)!r} holds no data rows")
    names = None
    if not all(_is_number(field) for field in rows[0][1]):
        names, rows = rows[0][1], rows[1:]
        if not rows:
            raise UsageError(f"{str(path)!r} has a header row but no data rows")
    width = len(names) if names is not None else len(rows[0][1])
    data = np.empty((len(rows), width))
    for i, (number, fields) in enumerate(rows):
        if len(fields) != width:
            raise UsageError(f"{path.name} line {number} has {len(fields)} field(s); "
                             f"expected {width} like the {'header' if names else 'first row'}")
        for j, field in enumerate(fields):
            if field == "":
                data[i, j] = np.nan
            elif _is_number(field):
                data[i, j] = float(field)
            else:
                column = repr(names[j]) if names else j
                raise UsageError(f"{path.name} line {number}, column {column}: {field!r} is "
                                 "not a number")
    return names, data


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _column(spec: str, names: list[str] | None, n_columns: int, path: Path) -> int:
    """The 0-based index of column ``spec`` (a header name or an index)."""
    if names is not None and spec in names:
        return names.index(spec)
    try:
        index = int(spec)
    except ValueError:
        index = None
    if index is not None and 0 <= index < n_columns:
        return index
    known = f"the columns are {', '.join(names)}" if names else "the file has no header"
    raise UsageError(f"no column {spec!r} in {path.name}: {known}; give a name or a 0-based "
                     f"index from 0 to {n_columns - 1}")


def _model(spec: str, p0) -> object:
    from autofit import models

    model = models.get(spec)
    if model.n_params is None and p0 is None:
        size = "degree" if model.name == "polynomial" else "n_peaks"
        raise UsageError(f"the {model.name} model needs its size: --model "
                         f"{model.name}:<{size}> (e.g. {model.name}:2)")
    return model


def _check_output(path: str | None, overwrite: bool, suffixes: tuple[str, ...],
                  what: str) -> Path | None:
    """Check an output path before any fitting: right suffix, a folder that exists, and
    no file there unless ``--overwrite``."""
    if path is None:
        return None
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"{what} {str(path)!r} must end in one of {', '.join(suffixes)}")
    if not path.parent.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not "
                         "exist")
    if path.exists() and not overwrite:
        raise UsageError(f"{str(path)!r} exists; pass --overwrite to replace it")
    return path


def _image_suffixes() -> tuple[str, ...]:
    from autofit import _plotting

    try:
        import matplotlib

        matplotlib.use("Agg")  # figures go to files: no window, no display needed
    except ImportError:
        pass
    _plotting.pyplot()  # the ImportError that says how to install matplotlib, before fitting
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(f".{name}" for name in FigureCanvasBase.get_supported_filetypes())


def _save_figure(figure, path: Path) -> None:
    from autofit import _plotting

    figure.savefig(path, dpi=120)
    _plotting.pyplot().close(figure)
    print(f"wrote {path}")


def _parse_p0(text: str | None):
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise UsageError(f"--p0 must be comma-separated numbers, got {text!r}") from exc


def run_fit(args) -> int:
    """``python -m autofit fit``: read the table, fit, print the report (and plot/save)."""
    import autofit

    p0 = _parse_p0(args.p0)
    model = _model(args.model, p0)
    plot = _check_output(args.plot, args.overwrite, _image_suffixes() if args.plot else (),
                         "--plot")
    out = _check_output(args.out, args.overwrite, (".npz", ".zarr"), "--out")
    path = Path(args.data)
    names, data = read_table(path)
    n_columns = data.shape[1]
    n_x = model.n_variables
    given = {}
    if args.x is not None:
        given["x"] = [_column(c.strip(), names, n_columns, path) for c in args.x.split(",")]
        if len(given["x"]) != n_x:
            raise UsageError(f"the {model.name} model takes {n_x} x column(s); --x gave "
                             f"{len(given['x'])}")
    for role in ("y", "sigma"):
        value = getattr(args, role)
        if value is not None:
            given[role] = [_column(value, names, n_columns, path)]
    used = {c for columns in given.values() for c in columns}
    free = iter(c for c in range(n_columns) if c not in used)
    x_columns = given.get("x") or [next(free, None) for _ in range(n_x)]
    y_column = given.get("y", [next(free, None)])[0]
    if None in x_columns or y_column is None:
        raise UsageError(f"{path.name} has {n_columns} column(s): too few for {n_x} x "
                         "column(s) and a y column")
    columns = [*x_columns, y_column, *given.get("sigma", [])]
    keep = np.all(np.isfinite(data[:, columns]), axis=1)
    if not keep.all():
        print(f"note: {int((~keep).sum())} row(s) with missing or non-finite values skipped")
    data = data[keep]
    x = data[:, x_columns[0]] if n_x == 1 else data[:, x_columns].T
    sigma = data[:, given["sigma"][0]] if "sigma" in given else None
    result = autofit.fit(model, x, data[:, y_column], p0, sigma=sigma,
                         absolute_sigma=args.absolute_sigma, backend=args.backend,
                         maxfev=args.maxfev)
    print(result.report())
    if plot is not None:
        labels = {}
        if names is not None and n_x == 1:
            labels = {"xlabel": names[x_columns[0]], "ylabel": names[y_column]}
        _save_figure(result.plot(**labels), plot)
    if out is not None:
        result.save(out, overwrite=args.overwrite)
        print(f"wrote {out}")
    return 0 if result.success else 1


def _batch_x(args, model, n_points: int):
    if args.x is not None:
        try:
            x = np.load(args.x, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read --x {args.x!r} as a .npy array: {exc}") from exc
        return x
    if args.x_range is not None:
        start, stop = args.x_range
        return np.linspace(start, stop, n_points)
    if model.n_variables == 2:
        side = int(round(np.sqrt(n_points)))
        if side * side != n_points:
            raise UsageError(f"the {model.name} model needs pixel coordinates: the cube's "
                             f"last axis has {n_points} points, not a square spot; give "
                             "--x coords.npy of shape (2, n_points)")
        rows, columns = np.divmod(np.arange(n_points, dtype=np.float64), side)
        return np.stack([columns, rows])
    raise UsageError(f"fit-batch needs the x value of each of the cube's {n_points} points: "
                     "--x x.npy or --x-range START STOP")


def run_fit_batch(args) -> int:
    """``python -m autofit fit-batch``: fit every curve of a cube; summary, save, maps."""
    import autofit

    model = _model(args.model, None)
    images = _image_suffixes() if (args.plot_maps or args.plot_histograms) else ()
    maps = _check_output(args.plot_maps, args.overwrite, images, "--plot-maps")
    histograms = _check_output(args.plot_histograms, args.overwrite, images,
                               "--plot-histograms")
    out = _check_output(args.out, args.overwrite, (".npz", ".zarr"), "--out")
    try:
        cube = np.load(args.cube, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {args.cube!r} as a .npy array: {exc}") from exc
    if not isinstance(cube, np.ndarray) or cube.ndim == 0:
        raise UsageError(f"{args.cube!r} must hold one array of shape (..., n_points)")
    if maps is not None and cube.ndim != 3:
        raise UsageError(f"--plot-maps needs a cube of shape (height, width, n_points); "
                         f"{args.cube!r} has shape {cube.shape}")
    x = _batch_x(args, model, cube.shape[-1])
    options = {"backend": args.backend, "estimator": args.estimator, "max_iter": args.max_iter,
               "tol": args.tol, "device": args.device, "covariance": args.covariance,
               "dtype": np.float32 if args.float32 else None}
    if "progress" in inspect.signature(autofit.fit_batch).parameters:
        options["progress"] = not args.no_progress
    print(f"fitting {int(np.prod(cube.shape[:-1]))} curve(s) of {cube.shape[-1]} points "
          f"with {args.model}", flush=True)
    result = autofit.fit_batch(model, x, cube, **options)
    print(result.summary())
    if out is not None:
        result.save(out, overwrite=args.overwrite)
        print(f"wrote {out}")
    if maps is not None:
        _save_figure(result.plot_maps(), maps)
    if histograms is not None:
        _save_figure(result.plot_histograms(), histograms)
    return 0


def _add_fit_parsers(commands) -> dict:
    single = commands.add_parser(
        "fit", help="fit one curve from a CSV or text table and print the report",
        description="Fit a built-in model to columns of a table and print the parameters "
                    "with their errors and the fit statistics. Exit status: 0 converged, 1 "
                    "not converged (the report says why), 2 a mistake in the command.")
    single.add_argument("data", help="a .csv (comma-separated) or .txt/.dat (whitespace) "
                                     "table; an optional header row names the columns; lines "
                                     "starting with # are comments")
    single.add_argument("--model", required=True, help=_model_help())
    single.add_argument("--x", help="x column: header name or 0-based index; two, comma-"
                                    "separated, for 2-D models (default: the first unused "
                                    "column(s))")
    single.add_argument("--y", help="y column (default: the first column not used for x)")
    single.add_argument("--sigma", help="column of standard deviations of y (default: none)")
    single.add_argument("--p0", help="comma-separated starting values (default: the model's "
                                     "guess from the data)")
    single.add_argument("--absolute-sigma", action="store_true",
                        help="sigma is absolute: do not scale errors by the reduced chi2")
    single.add_argument("--backend", choices=_dispatch.BACKENDS)
    single.add_argument("--maxfev", type=int, help="model evaluations allowed (default "
                                                  "30000 * (n_params + 1))")
    single.add_argument("--plot", metavar="IMAGE", help="write data, fit and residuals here "
                                                       "(e.g. fit.png)")
    single.add_argument("--out", metavar="RESULT", help="save the result (.npz or .zarr)")
    single.add_argument("--overwrite", action="store_true", help="replace existing outputs")

    batch = commands.add_parser(
        "fit-batch", help="fit every curve of a .npy cube (one fit per pixel)",
        description="Fit one built-in model to every curve of a cube (..., n_points) and "
                    "print a summary; optionally save the results and plot maps. The x of "
                    "the points is required for 1-D models (--x or --x-range); for 2-D models "
                    "(gaussian_2d, ...) it defaults to the pixel coordinates of a square spot "
                    "flattened row by row (x[0] = column, x[1] = row).")
    batch.add_argument("cube", help=".npy array of shape (..., n_points), e.g. (height, "
                                    "width, n_points)")
    batch.add_argument("--model", required=True, help=_model_help())
    axis = batch.add_mutually_exclusive_group()
    axis.add_argument("--x", metavar="X.npy", help="x of the points: (n_points,), or "
                                                   "(2, n_points) for 2-D models")
    axis.add_argument("--x-range", nargs=2, type=float, metavar=("START", "STOP"),
                      help="x evenly spaced from START to STOP (inclusive)")
    batch.add_argument("--out", metavar="RESULT", help="save the results (.npz, or .zarr for "
                                                       "large ones)")
    batch.add_argument("--plot-maps", metavar="IMAGE", help="one map per parameter and the "
                                                            "reduced chi2 (cube (h, w, n))")
    batch.add_argument("--plot-histograms", metavar="IMAGE",
                       help="histograms of each parameter over the converged fits")
    batch.add_argument("--backend", choices=_dispatch.BACKENDS)
    batch.add_argument("--device", choices=("cpu", "cuda"))
    batch.add_argument("--estimator", choices=("lse", "mle"), default="lse",
                       help="least squares, or Poisson maximum likelihood for counts "
                            "(default: %(default)s)")
    batch.add_argument("--max-iter", type=int, help="iterations per fit (default 200)")
    batch.add_argument("--tol", type=float, help="relative tolerance (default 1e-8)")
    batch.add_argument("--float32", action="store_true", help="work in float32")
    batch.add_argument("--covariance", action="store_true",
                       help="keep (and save) the full covariance matrices; errors are kept "
                            "either way")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar")
    batch.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return {"fit": (single, run_fit), "fit-batch": (batch, run_fit_batch)}


def _run_reporting_errors(parser, command, args) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = command(args)
        except _USER_ERRORS as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            print(f"{parser.prog}: error: {message}", file=sys.stderr)
            code = 2
    for warning in caught:
        print(f"warning: {' '.join(str(warning.message).split())}", file=sys.stderr)
    return code


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autofit",
                                     description="autofit: fast curve fitting on NumPy, "
                                                 "Numba and JAX")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backends", help="list backends, versions, devices and fallbacks")
    check = commands.add_parser("validate", help="check every kernel on every backend "
                                                 "against the NumPy reference")
    check.add_argument("--backend", action="append", choices=_dispatch.BACKENDS,
                       help="only this backend (repeatable); default: all installed")
    check.add_argument("--sizes", default=",".join(str(s) for s in validate.SIZES),
                       help="comma-separated numbers of points (default: %(default)s)")
    check.add_argument("--kernel", action="append", help="only this kernel (repeatable)")
    check.add_argument("--jobs", type=int, default=0,
                       help="worker processes (default: one per CPU core; 1: this process)")
    fitting = _add_fit_parsers(commands)
    args = parser.parse_args(argv)

    if args.command in fitting:
        sub, command = fitting[args.command]
        return _run_reporting_errors(sub, command, args)
    if args.command == "backends":
        print(backends_report())
        return 0
    sizes = tuple(int(s) for s in args.sizes.split(","))
    backends = args.backend or validate.available_backends()
    print(f"autofit validate: backends {', '.join(backends)}; sizes {sizes}", flush=True)
    jobs = args.jobs if args.jobs > 0 else (os.cpu_count() or 1)
    rows = validate.run(backends=backends, sizes=sizes, kernels=args.kernel, jobs=jobs,
                        progress=lambda row: print(".", end="", flush=True))
    print()
    print(validate.format_table(rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
