"""``autofit.fit``: one fit, returned as a :class:`FitResult` that reports, plots and saves."""

from __future__ import annotations

import inspect

import numpy as np

from autofit import _dispatch
from autofit._curve_fit import solve
from autofit._results import FitResult, builtin_spec
from autofit._status import Status
from autofit.models import Model


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
    outcome = solve(model, x, y, p0=p0, sigma=sigma, absolute_sigma=absolute_sigma,
                    bounds=call_bounds, backend=backend, full_output=True,
                    **curve_fit_options)
    covariance, info, message = outcome.pcov, outcome.infodict, outcome.message
    params = np.asarray(outcome.params, dtype=np.float64)
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


def _device(backend: str) -> str:
    return _dispatch.host_of(backend).device_name("cpu")
