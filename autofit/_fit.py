"""``autofit.fit``: one fit, returned as a :class:`FitResult` that reports, plots and saves."""

from __future__ import annotations

import html
import inspect
from dataclasses import dataclass, field

import numpy as np

from autofit._curve_fit import NotConvergedError, curve_fit
from autofit._status import Status
from autofit.models import BUILTIN, Model


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
        from autofit import _io

        _io.save_result(self, path, overwrite=overwrite)

    def __str__(self) -> str:
        return self.report()

    def __repr__(self) -> str:
        values = ", ".join(f"{n}={v:.6g}" for n, v in zip(self.param_names, self.params,
                                                         strict=True))
        return (f"FitResult(model={self.model!r}, success={self.success}, {values}, "
                f"reduced_chi2={self.reduced_chi2:.4g}, backend={self.backend!r})")

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.report())}</pre>"


def fit(model, x, y, p0=None, *, sigma=None, bounds=None, absolute_sigma=False, backend=None,
        **curve_fit_options) -> FitResult:
    """Fit ``model`` to ``(x, y)`` and return a :class:`FitResult` (report, plot, save).

    :func:`autofit.curve_fit` underneath, with the same arguments and the same errors for
    invalid input. Unlike ``curve_fit``, a fit that stops without converging (evaluation
    budget spent, a model that turns non-finite) does not raise: the result says so
    (``success`` False, ``status``, ``message``) and holds the parameters where it stopped,
    with nan errors, so that it can be reported and plotted.

    Parameters
    ----------
    model : callable ``f(x, p1, ..., pk)`` or a model from :mod:`autofit.models`
    x : (n_points,) or (k, n_points) array_like
    y : (n_points,) array_like
    p0 : (n_params,) array_like, optional
        Default: the built-in model's guess, else ones.
    sigma : (n_points,) or (n_points, n_points) array_like, optional
    bounds : (lower, upper), optional
    absolute_sigma : bool
    backend : {'numpy', 'numba', 'jax'}, optional
    **curve_fit_options
        Any other keyword of :func:`autofit.curve_fit` (``method``, ``jac``,
        ``nan_policy``, ``ftol``, ``xtol``, ``gtol``, ``maxfev``, ``strict``, ...).

    Returns
    -------
    FitResult

    Examples
    --------
    >>> import numpy as np, autofit
    >>> x = np.linspace(0, 10, 101)
    >>> y = autofit.models.gaussian(x, 3.0, 4.0, 0.8, 0.5)
    >>> y = y + 0.01 * np.random.default_rng(0).normal(size=x.size)
    >>> res = autofit.fit(autofit.models.gaussian, x, y, sigma=np.full(x.size, 0.01),
    ...                   backend="numpy")
    >>> res.success, round(res["center"], 2), res.param_names
    (True, 4.0, ('amplitude', 'center', 'width', 'offset'))
    >>> print(res.report())  # doctest: +ELLIPSIS
    model gaussian: converged (...)
    parameter  value   error  relative
    ...
    """
    for reserved in ("full_output", "xdata", "ydata", "f"):
        if reserved in curve_fit_options:
            raise TypeError(f"fit() got an unexpected keyword argument {reserved!r}: fit "
                            "always asks curve_fit for the full output and takes the model, "
                            "x and y positionally")
    call_bounds = (-np.inf, np.inf) if bounds is None else bounds
    try:
        params, covariance, info, message, _ = curve_fit(
            model, x, y, p0=p0, sigma=sigma, absolute_sigma=absolute_sigma,
            bounds=call_bounds, backend=backend, full_output=True, **curve_fit_options)
    except NotConvergedError as exc:
        params, info, message = exc.params, exc.infodict, str(exc)
        covariance = np.full((params.size, params.size), np.nan)
    params = np.asarray(params, dtype=np.float64)
    n_params = params.size
    status = Status(info["status"])
    dof = len(info["fvec"]) - n_params
    chi2 = float(info["chi2"])
    best_fit = np.asarray(model(np.asarray(x, dtype=np.float64), *params), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        errors = np.sqrt(np.diagonal(covariance)).copy()
    options = {"p0": None if p0 is None else np.atleast_1d(np.asarray(p0, float)).tolist(),
               "bounds": bounds is not None, "absolute_sigma": bool(absolute_sigma),
               "sigma": sigma is not None,
               **{k: v for k, v in curve_fit_options.items() if _is_plain(v)}}
    return FitResult(
        params=params, errors=errors, covariance=np.asarray(covariance, dtype=np.float64),
        chi2=chi2, reduced_chi2=chi2 / dof if dof > 0 else float("nan"),
        r_squared=_r_squared(y, best_fit), dof=int(dof), n_iter=int(info["nit"]),
        nfev=int(info["nfev"]), status=status, message=message, success=status.converged,
        backend=info["backend"], backend_reason=info["backend_reason"],
        device=_device(info["backend"]), param_names=_param_names(model, n_params),
        model=_model_name(model), model_spec=(builtin_spec(model.name, n_params)
                                     if isinstance(model, Model) else None), x=x, y=y,
        sigma=sigma, best_fit=best_fit, function=model, options=options)


def _is_plain(value) -> bool:
    """Whether ``value`` can be written to a result's JSON metadata."""
    return value is None or isinstance(value, (bool, int, float, str))


def _r_squared(y, best_fit) -> float:
    y = np.asarray(y, dtype=np.float64).ravel()
    best_fit = np.asarray(best_fit, dtype=np.float64).ravel()
    # A finite sum proves every value finite: then no mask and no copies (1e8 points).
    if not np.isfinite(np.sum(y) + np.sum(best_fit)):
        keep = np.isfinite(y) & np.isfinite(best_fit)
        y, best_fit = y[keep], best_fit[keep]
    if y.size == 0:
        return float("nan")
    deviation = y - y.mean()
    total = float(np.dot(deviation, deviation))
    if total == 0.0:
        return float("nan")
    np.subtract(y, best_fit, out=deviation)
    return 1.0 - float(np.dot(deviation, deviation)) / total


def _param_names(model, n_params: int) -> tuple[str, ...]:
    names = getattr(model, "param_names", None)
    if names and len(names) == n_params:
        return tuple(names)
    try:
        parameters = list(inspect.signature(model).parameters.values())[1:]
    except (TypeError, ValueError):
        parameters = []
    if len(parameters) == n_params and all(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters):
        return tuple(p.name for p in parameters)
    return tuple(f"p{j}" for j in range(n_params))


def _model_name(model) -> str:
    return str(getattr(model, "name", None) or getattr(model, "__name__", None)
               or type(model).__name__)


def builtin_spec(name: str, n_params: int) -> str | None:
    """The :func:`autofit.models.get` spec of built-in model ``name`` with ``n_params``."""
    if name not in BUILTIN:
        return None
    if name == "polynomial":
        return f"polynomial:{n_params - 1}"
    if name == "multi_lorentzian":
        return f"multi_lorentzian:{(n_params - 1) // 3}"
    return name


def _device(backend: str) -> str:
    if backend == "jax":
        import jax

        return jax.default_backend()
    return "cpu"
