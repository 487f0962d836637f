"""Checks of user input at the public boundary, with scipy-style messages.

Every message says what was wrong, the offending value and how to fix it. Inputs are never
modified: arrays are converted to new float64 arrays where needed and never written to.
"""

from __future__ import annotations

import inspect
import math
import weakref

import numpy as np

from autofit import _codes


class NotNumbersError(TypeError, ValueError):
    """An array argument that is not real numbers: a TypeError in spirit, and a ValueError
    as scipy raises it (``could not convert string to float``)."""


def as_float_array(value, name: str) -> np.ndarray:
    """``value`` as a float64 array; NotNumbersError naming ``name`` if it is not numeric."""
    if type(value) is np.ndarray and value.dtype == np.float64:
        return value  # the common case, at no cost (inputs are never written to)
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and exotic objects
        raise NotNumbersError(f"{name} must be an array of numbers; could not convert it: "
                              f"{exc}") from exc
    kind = array.dtype.kind
    if kind in "fiub":  # real floats, integers, booleans
        return np.asarray(array, dtype=np.float64)
    if kind == "c":
        raise NotNumbersError(f"{name} must be real; got a complex array. Fit the real "
                              "and imaginary parts as separate points instead")
    raise NotNumbersError(f"{name} must be an array of numbers, got dtype {array.dtype} "
                    f"(first element {array.flat[0]!r})" if array.size else
                    f"{name} must be an array of numbers, got dtype {array.dtype}")


# f -> its parameter count or the ValueError reading its signature gave (signatures are
# read once: inspect.signature costs more than a small compiled fit).
_parameter_counts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def count_parameters(f) -> int:
    """Number of fit parameters of ``f(x, p1, p2, ...)`` from its signature."""
    n_params = getattr(f, "n_params", None)
    if n_params is not None:
        return n_params
    try:
        known = _parameter_counts.get(f)
    except TypeError:  # not weakly referenceable
        return _count_parameters(f)
    if known is None:
        try:
            known = _count_parameters(f)
        except ValueError as exc:
            known = exc
        _parameter_counts[f] = known
    if isinstance(known, ValueError):
        raise ValueError(str(known)) from known.__cause__
    return known


def _count_parameters(f) -> int:
    try:
        signature = inspect.signature(f)
    except (TypeError, ValueError) as exc:
        raise ValueError("Unable to determine number of fit parameters from the signature "
                         f"of {f!r}; pass p0") from exc
    parameters = list(signature.parameters.values())
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters) or \
            len(parameters) < 2:
        raise ValueError("Unable to determine number of fit parameters: f takes "
                         f"{signature}; pass p0 with one value per parameter")
    return len(parameters) - 1


def fixed_parameter_count(f) -> int | None:
    """The number of parameters after x when the signature fixes it, else None."""
    try:
        return count_parameters(f)
    except ValueError:
        return None


def check_p0(p0, f) -> np.ndarray:
    p0 = np.atleast_1d(as_float_array(p0, "p0"))
    if p0.ndim != 1:
        raise ValueError(f"p0 must be 1-D (one value per parameter), got shape {p0.shape}")
    if p0.size == 0:
        raise ValueError("p0 is empty; a fit needs at least one parameter")
    if not np.isfinite(p0).all():
        i = int(np.argmax(~np.isfinite(p0)))
        raise ValueError(f"p0 must be finite, but p0[{i}] = {p0[i]}; give a finite "
                         "starting value for every parameter")
    expected = fixed_parameter_count(f)
    if expected is not None and expected != p0.size:
        raise ValueError(f"p0 has {p0.size} value(s) but the model takes {expected} "
                         f"parameter(s) "
                         f"after x; give one starting value per parameter")
    return p0


def is_unbounded(bounds) -> bool:
    """Whether ``bounds`` is the default ``(-inf, inf)`` (cheap: a small fit counts µs)."""
    return (type(bounds) is tuple and len(bounds) == 2 and type(bounds[0]) is float
            and type(bounds[1]) is float and bounds[0] == -np.inf and bounds[1] == np.inf)


def check_bounds(bounds, n_params: int) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) as float64 arrays of length n_params."""
    if is_unbounded(bounds):  # no checks to make
        return np.full(n_params, -np.inf), np.full(n_params, np.inf)
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):  # scipy.optimize.Bounds
        lower, upper = bounds.lb, bounds.ub
    else:
        try:
            lower, upper = bounds
        except (TypeError, ValueError) as exc:
            raise ValueError("bounds must be a 2-tuple (lower, upper) of scalars or arrays, "
                             f"or a scipy.optimize.Bounds; got {bounds!r}") from exc
    limits = []
    for name, value in (("lower", lower), ("upper", upper)):
        array = as_float_array(value, f"the {name} bound")
        if np.isnan(array).any():
            raise ValueError(f"the {name} bound contains nan; use -inf/inf for no bound")
        if array.ndim == 0:
            array = np.full(n_params, float(array))
        if array.shape != (n_params,):
            raise ValueError(f"the {name} bound has shape {array.shape} but there are "
                             f"{n_params} parameters; give a scalar or one value per "
                             "parameter")
        limits.append(array)
    lower, upper = limits
    bad = lower >= upper
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError("Each lower bound must be strictly less than each upper bound: "
                         f"lower[{i}] = {lower[i]} >= upper[{i}] = {upper[i]}")
    return lower, upper


def feasible_start(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """scipy's default p0 for bounded problems: 1, moved inside the bounds."""
    p0 = np.ones_like(lower)
    both = np.isfinite(lower) & np.isfinite(upper)
    p0[both] = 0.5 * (lower[both] + upper[both])
    only_lower = np.isfinite(lower) & ~np.isfinite(upper)
    p0[only_lower] = lower[only_lower] + 1.0
    only_upper = ~np.isfinite(lower) & np.isfinite(upper)
    p0[only_upper] = upper[only_upper] - 1.0
    return p0


def check_feasible(p0, lower, upper) -> None:
    outside = (p0 < lower) | (p0 > upper)
    if outside.any():
        i = int(np.argmax(outside))
        raise ValueError(f"p0 is infeasible: p0[{i}] = {p0[i]} is outside its bounds "
                         f"[{lower[i]}, {upper[i]}]; start inside the bounds")


def first_nonfinite(array: np.ndarray, name: str) -> str:
    bad = ~np.isfinite(array)
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
    where = index[0] if len(index) == 1 else index
    return (f"{name} contains {int(bad.sum())} non-finite value(s) "
            f"(first at index {where}: {array[index]})")


def expand_scalar_sigma(sigma, n_points: int):
    """A scalar (or one-element) sigma as the same standard deviation for every point, as
    scipy takes it; any other sigma unchanged."""
    if np.ndim(sigma) <= 1 and np.size(sigma) == 1 and n_points != 1:
        return np.full(n_points, as_float_array(sigma, "sigma").reshape(-1)[0])
    return sigma


# Weighted data beyond these magnitudes cannot be fitted in float64 by sums of squares: χ²
# and the Gauss-Newton matrix overflow above ~1e154 per point and underflow below ~1e-154.
LARGEST_DATA = 1e140
SMALLEST_DATA = 1e-140


def check_data_scale(y, weights) -> None:
    """Refuse data whose weighted magnitude puts χ² outside float64's range, naming the
    scale and the fix (fitting on would end with a misleading status, or at p0)."""
    if weights.shape == (1,) and y.size and math.isfinite(y.max() - y.min()):
        # One weight (no sigma): two passes over y and no array of its size.
        magnitude = abs(float(weights[0])) * max(float(y.max()), -float(y.min()))
    else:
        with np.errstate(all="ignore"):
            weighted = np.abs(weights @ y if weights.ndim == 2 else weights * y)
        # Non-finite values are the finiteness checks' business (check_finite=False lets
        # the solver report them); the scale is that of the finite data.
        weighted = weighted[np.isfinite(weighted)]
        magnitude = float(np.max(weighted)) if weighted.size else 0.0
    if magnitude > LARGEST_DATA or 0.0 < magnitude < SMALLEST_DATA:
        factor = 10.0 ** round(np.log10(magnitude))
        raise ValueError(
            f"ydata (divided by sigma) reaches {magnitude:.3g}: its squares, and χ², are "
            f"outside float64's range (1e-308 to 1e308). Rescale the data: fit ydata / "
            f"{factor:.0e} (and sigma / {factor:.0e}) with the model's scale parameters "
            f"divided by {factor:.0e}, then multiply them back")


def check_sigma_shape(sigma, n_points: int) -> None:
    shape = as_float_array(sigma, "sigma").shape
    if shape not in ((n_points,), (n_points, n_points)):
        raise ValueError(f"sigma has shape {shape}, but ydata has {n_points} points: give "
                         f"sigma of shape ({n_points},) (standard deviations) or "
                         f"({n_points}, {n_points}) (a covariance matrix)")


def check_sigma(sigma, n_points: int) -> tuple[np.ndarray, bool]:
    """Residual weights from sigma: (1/sigma, False) or (inverse Cholesky factor, True)."""
    sigma = as_float_array(sigma, "sigma")
    if sigma.shape == (n_points,):
        if not np.all(np.isfinite(sigma)):
            raise ValueError(first_nonfinite(sigma, "sigma") + "; sigma must be finite")
        if np.any(sigma <= 0):
            i = int(np.argmax(sigma <= 0))
            raise ValueError(f"sigma must be positive, but sigma[{i}] = {sigma[i]}; give "
                             "each point's standard deviation (> 0), or drop the point")
        return 1.0 / sigma, False
    if sigma.shape == (n_points, n_points):
        if not np.all(np.isfinite(sigma)):
            raise ValueError(first_nonfinite(sigma, "sigma") + "; sigma must be finite")
        try:
            cholesky = np.linalg.cholesky(sigma)
        except np.linalg.LinAlgError as exc:
            raise ValueError("`sigma` must be positive definite: a 2-D sigma is the "
                             "covariance matrix of ydata") from exc
        from scipy.linalg import solve_triangular

        return solve_triangular(cholesky, np.eye(n_points), lower=True), True
    raise ValueError(f"sigma has shape {sigma.shape}, but ydata has {n_points} points: give "
                     f"sigma of shape ({n_points},) (standard deviations) or "
                     f"({n_points}, {n_points}) (a covariance matrix)")


def check_loss(loss, estimator_code: int, allow_callable: bool):
    """``(loss, estimator code)`` for a ``loss=`` argument: 'linear' keeps the estimator,
    a robust loss's name gives its code (a callable, where allowed, is its own code)."""
    if callable(loss) and allow_callable:
        code = loss
    elif isinstance(loss, str) and (loss == "linear" or loss in _codes.ROBUST_LOSSES):
        code = estimator_code if loss == "linear" else _codes.ROBUST_LOSSES[loss]
    else:
        names = ("linear", *_codes.ROBUST_LOSSES)
        extra = (" or a callable rho(z) -> (3, n) as in scipy.optimize.least_squares"
                 if allow_callable else " (a callable loss runs in curve_fit, on NumPy)")
        raise ValueError(f"loss must be one of {names}{extra}, got {loss!r}")
    if loss != "linear" and estimator_code == _codes.ESTIMATOR_MLE:
        raise ValueError(f"loss={loss!r} is a robust loss for least squares; Poisson "
                         "maximum likelihood (estimator='mle') has its own: drop loss, or "
                         "use estimator='lse'")
    return ("callable" if callable(loss) else loss), code


def check_f_scale(f_scale, leading):
    """f_scale as a positive float, or one per fit ``(n_fits,)`` for the leading shape."""
    try:
        value = np.asarray(f_scale, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"f_scale must be a positive number or an array of them, got "
                        f"{f_scale!r}") from None
    if value.ndim and value.shape != tuple(leading):
        raise ValueError(f"f_scale has shape {value.shape}: give one number, or one per fit "
                         f"(shape {tuple(leading)})")
    if not (np.all(np.isfinite(value)) and np.all(value > 0)):
        raise ValueError(f"f_scale must be positive and finite, got {f_scale!r}")
    return float(value) if value.ndim == 0 else value.reshape(-1)
