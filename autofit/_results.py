"""The result types: :class:`FitResult` (:func:`autofit.fit`) and :class:`BatchResult`
(:func:`autofit.fit_batch`), their records for saving (:mod:`autofit._io` writes them) and
:func:`load_result`."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from autofit import _io, models
from autofit._status import Status
from autofit._version import __version__
from autofit.models import BUILTIN


@dataclass(repr=False)
class FitResult:
    """The outcome of :func:`autofit.fit`.

    Attributes
    ----------
    params : (n_params,) float64
        Best-fit values (where the solver stopped, if it did not converge).
    errors : (n_params,) float64
        Standard errors, ``sqrt(diag(covariance))``; inf where the covariance could not be
        estimated, nan for a fit that did not converge.
    covariance : (n_params, n_params) float64
        Scaled by the reduced χ² unless ``absolute_sigma`` (as scipy's ``pcov``).
    chi2 : float
        Sum of squared weighted residuals, ``sum(((y - f) / sigma)**2)``.
    reduced_chi2 : float
        ``chi2 / dof``; nan when ``dof <= 0``.
    r_squared : float
        Coefficient of determination ``1 - sum((y - f)**2) / sum((y - mean(y))**2)`` on the
        data as given (unweighted, finite points only).
    dof : int
        Points used minus parameters.
    n_iter, nfev : int
        Solver iterations and model evaluations.
    status : autofit.Status
    message : str
        Why the solver stopped.
    success : bool
        Whether the status is a converged one.
    backend, backend_reason, device : str
        The backend that ran, why it was chosen, and its device.
    param_names : tuple of str
        From a built-in model, else from the function's signature (``p0, p1, ...`` for
        ``f(x, *params)``).
    model : str
        The model's name (a built-in's name, or the function's ``__name__``).
    model_spec : str or None
        For built-in models, the :func:`autofit.models.get` spec that rebuilds the model
        (e.g. ``"multi_lorentzian:8"``); None for user functions.
    x : (n_points,) or (k, n_points) array
    y : (n_points,) array
    sigma : (n_points,) or (n_points, n_points) array or None
        The data as passed to :func:`fit` (references, not copies), for plotting.
    best_fit : (n_points,) float64
        The model at ``x`` and ``params``.
    function : callable or None
        The model function (None after :func:`autofit.load_result` for a user function).
    options : dict
        The settings of the fit (``p0``, whether bounds were given, ``absolute_sigma``, the
        solver options), saved with the result.
    """

    params: np.ndarray
    errors: np.ndarray
    covariance: np.ndarray
    chi2: float
    reduced_chi2: float
    r_squared: float
    dof: int
    n_iter: int
    nfev: int
    status: Status
    message: str
    success: bool
    backend: str
    backend_reason: str
    device: str
    param_names: tuple[str, ...]
    model: str
    model_spec: str | None
    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray | None
    best_fit: np.ndarray
    function: object = None
    options: dict = field(default_factory=dict)

    @property
    def n_points(self) -> int:
        """Points used in the fit (nan points dropped by ``nan_policy='omit'`` excluded)."""
        return self.dof + len(self.params)

    @property
    def residuals(self) -> np.ndarray:
        """``y - best_fit`` (n_points,)."""
        return np.asarray(self.y, dtype=np.float64) - self.best_fit

    def __getitem__(self, name: str) -> float:
        """``result["center"]``: one parameter's value."""
        if name not in self.param_names:
            raise KeyError(f"no parameter {name!r}; the parameters are {self.param_names}")
        return float(self.params[self.param_names.index(name)])

    def evaluate(self, x) -> np.ndarray:
        """The fitted model at ``x`` (the same layout as the fit's x)."""
        if self.function is None:
            raise ValueError(f"this result's model {self.model!r} is a user function that was "
                             "not saved with it; call your function with result.params")
        return np.asarray(self.function(np.asarray(x, dtype=np.float64), *self.params),
                          dtype=np.float64)

    def report(self) -> str:
        """A table of values ± errors (rounded to the errors' second significant digit) and
        relative errors, then χ², reduced χ², R², dof, iterations, backend and status."""
        from autofit import _report

        return _report.fit_report(self)

    def plot(self, ax=None, *, residuals: bool = True, xlabel: str = "x", ylabel: str = "y"):
        """Data, fit and residuals as a matplotlib Figure.

        1-D models: the data (with error bars when sigma was given), the model on a fine
        grid, and the residuals in a panel beneath sharing the x axis. 2-D models: images
        (data, fit, residuals) when x is a regular grid, else scatter plots coloured by value.

        Parameters
        ----------
        ax : matplotlib Axes or pair of Axes, optional
            Where to draw (1-D models): one Axes for data and fit only, or (main, residual)
            Axes. Default: a new figure.
        residuals : bool
            Draw the residual panel (new figures only).
        xlabel, ylabel : str
            Axis labels (1-D models).
        """
        from autofit import _plotting

        return _plotting.plot_fit(self, ax, residuals=residuals, xlabel=xlabel, ylabel=ylabel)

    def save(self, path, *, overwrite: bool = False) -> None:
        """Write to ``.npz`` or ``.zarr`` (see :func:`autofit.load_result`)."""
        save_result(self, path, overwrite=overwrite)

    def __str__(self) -> str:
        return self.report()

    def __repr__(self) -> str:
        values = ", ".join(f"{n}={v:.6g}" for n, v in zip(self.param_names, self.params,
                                                         strict=True))
        return (f"FitResult(model={self.model!r}, success={self.success}, {values}, "
                f"reduced_chi2={self.reduced_chi2:.4g}, backend={self.backend!r})")

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.report())}</pre>"


@dataclass
class BatchResult:
    """Results of :func:`fit_batch`, shaped like the data's leading dimensions.

    Attributes
    ----------
    params : (..., n_params) array
    errors : (..., n_params) array
        Standard errors, ``sqrt(diag(covariance))``; nan where the covariance is not
        available (status ``SINGULAR`` or a fit not attempted).
    covariance : (..., n_params, n_params) array or None
        None when ``fit_batch(..., covariance=False)``.
    chi2 : (...) array
        Weighted sum of squared residuals (least squares) or Poisson deviance (MLE).
    n_iter : (...) int array
    status : (...) int8 array of :class:`autofit.Status` codes
        (a single :class:`autofit.Status` for a single curve).
    converged : (...) bool array
    backend : str
        The backend that ran (after any fallback); ``backend_reason`` says why.
    device : str
        ``"cpu"`` or ``"cuda"``.
    """

    params: np.ndarray
    errors: np.ndarray
    covariance: np.ndarray | None
    chi2: np.ndarray
    n_iter: np.ndarray
    status: np.ndarray
    converged: np.ndarray
    backend: str
    backend_reason: str
    device: str
    model: str
    param_names: tuple[str, ...]
    estimator: str
    dof: np.ndarray = field(repr=False)
    options: dict = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """The leading (per-fit) shape of the batch."""
        return self.chi2.shape

    @property
    def reduced_chi2(self) -> np.ndarray:
        """``chi2 / (n_points - n_free)`` per fit (points with weight 0 not counted)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.chi2 / self.dof

    def status_counts(self) -> dict[Status, int]:
        """How many fits ended with each status."""
        codes, counts = np.unique(np.asarray(self.status), return_counts=True)
        return {Status(int(c)): int(n) for c, n in zip(codes, counts, strict=True)}

    def __getitem__(self, name: str) -> np.ndarray:
        """``result["center"]``: one parameter's values over the batch."""
        if name not in self.param_names:
            raise KeyError(f"no parameter {name!r}; the parameters are {self.param_names}")
        return self.params[..., self.param_names.index(name)]

    def statistics(self) -> dict:
        """:meth:`summary`'s numbers as a dict (status counts, per-parameter statistics)."""
        from autofit import _report

        return _report.batch_statistics(self)

    def summary(self) -> str:
        """Shape, counts per status, converged fraction, per-parameter median, IQR and
        mean ± std over the converged fits, and the median reduced χ²."""
        from autofit import _report

        return _report.batch_summary(self)

    def plot_maps(self, params=None, *, chi2: bool = True):
        """One image per parameter (and the reduced χ²) for a batch of 2-D leading shape.

        Pixels whose fit did not converge are masked (grey). Returns a matplotlib Figure.
        """
        from autofit import _plotting

        return _plotting.plot_maps(self, params, chi2=chi2)

    def plot_histograms(self, params=None, *, bins: int = 50):
        """Histograms of each parameter over the converged fits (a matplotlib Figure)."""
        from autofit import _plotting

        return _plotting.plot_histograms(self, params, bins=bins)

    def save(self, path, *, overwrite: bool = False) -> None:
        """Write to ``.npz`` or ``.zarr`` (see :func:`autofit.load_result`)."""
        save_result(self, path, overwrite=overwrite)


def builtin_spec(name: str, n_params: int) -> str | None:
    """The :func:`autofit.models.get` spec of built-in model ``name`` with ``n_params``."""
    if name not in BUILTIN:
        return None
    if name == "polynomial":
        return f"polynomial:{n_params - 1}"
    if name == "multi_lorentzian":
        return f"multi_lorentzian:{(n_params - 1) // 3}"
    return name


def save_result(result, path, *, overwrite: bool = False) -> None:
    """Write ``result`` to ``path`` (``.npz`` or ``.zarr``); see :func:`load_result`."""
    arrays, metadata = to_record(result)
    _io.write_result(path, arrays, metadata, overwrite=overwrite)


def to_record(result) -> tuple[dict, dict]:
    """(arrays, metadata) of a FitResult or BatchResult."""
    metadata = {"format_version": _io.FORMAT_VERSION, "autofit_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "model": result.model, "param_names": list(result.param_names),
                "backend": result.backend, "backend_reason": result.backend_reason,
                "device": result.device, "options": _io.jsonable(result.options)}
    if isinstance(result, BatchResult):
        metadata.update(kind="BatchResult", estimator=result.estimator,
                        model_spec=builtin_spec(result.model, len(result.param_names)))
        arrays = {name: getattr(result, name) for name in _io.BATCH_ARRAYS}
    else:
        metadata.update(kind="FitResult", estimator="lse", model_spec=result.model_spec,
                        n_iter=result.n_iter, nfev=result.nfev, dof=result.dof,
                        status=int(result.status), message=result.message,
                        success=bool(result.success))
        arrays = {name: getattr(result, name) for name in _io.FIT_ARRAYS}
    arrays = {name: np.asarray(value) for name, value in arrays.items() if value is not None}
    return arrays, metadata


def load_result(path):
    """Read a result written by ``FitResult.save`` or ``BatchResult.save``.

    Parameters
    ----------
    path : str or Path
        A ``.npz`` file or a ``.zarr`` directory.

    Returns
    -------
    FitResult or BatchResult
        As saved. A FitResult of a built-in model gets its model back (``evaluate``,
        ``plot`` on a fine grid); one of a user function has ``function=None``.

    Examples
    --------
    >>> import numpy as np, autofit, tempfile, pathlib
    >>> x = np.linspace(0, 1, 20)
    >>> res = autofit.fit(autofit.models.linear, x, 2 * x + 1, backend="numpy")
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "line.npz"
    >>> res.save(path)
    >>> back = autofit.load_result(path)
    >>> back.param_names, bool(np.allclose(back.params, res.params))
    (('slope', 'intercept'), True)
    """
    arrays, metadata = _io.read_result(path)
    if metadata.get("kind") == "BatchResult":
        return _batch_from(arrays, metadata)
    if metadata.get("kind") == "FitResult":
        return _fit_from(arrays, metadata)
    raise ValueError(f"{str(path)!r}: unknown result kind {metadata.get('kind')!r}")


def _batch_from(arrays: dict, metadata: dict):
    status = arrays["status"]
    return BatchResult(
        params=arrays["params"], errors=arrays["errors"],
        covariance=arrays.get("covariance"), chi2=arrays["chi2"], n_iter=arrays["n_iter"],
        status=Status(int(status)) if status.ndim == 0 else status,
        converged=arrays["converged"], backend=metadata["backend"],
        backend_reason=metadata["backend_reason"], device=metadata["device"],
        model=metadata["model"], param_names=tuple(metadata["param_names"]),
        estimator=metadata["estimator"], dof=arrays["dof"],
        options=metadata.get("options", {}))


def _fit_from(arrays: dict, metadata: dict):
    spec = metadata.get("model_spec")
    return FitResult(
        params=arrays["params"], errors=arrays["errors"], covariance=arrays["covariance"],
        chi2=float(arrays["chi2"]), reduced_chi2=float(arrays["reduced_chi2"]),
        r_squared=float(arrays["r_squared"]), dof=int(metadata["dof"]),
        n_iter=int(metadata["n_iter"]), nfev=int(metadata["nfev"]),
        status=Status(metadata["status"]), message=metadata["message"],
        success=bool(metadata["success"]), backend=metadata["backend"],
        backend_reason=metadata["backend_reason"], device=metadata["device"],
        param_names=tuple(metadata["param_names"]), model=metadata["model"],
        model_spec=spec, x=arrays["x"], y=arrays["y"], sigma=arrays.get("sigma"),
        best_fit=arrays["best_fit"], function=models.get(spec) if spec else None,
        options=metadata.get("options", {}))
