"""Checks of user input at the public boundary, with scipy-style messages.

Every message says what was wrong, the offending value and how to fix it. Inputs are never
modified: arrays are converted to new float64 arrays where needed and never written to.
"""

from __future__ import annotations

import inspect
import math
import weakref

import numpy as np

from autofit import _codes, _threads


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


# f -> (signature, the parameters a positional argument can fill), or the ValueError
# reading its signature gave (read once: inspect.signature costs more than a small
# compiled fit).
_signatures: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _positional(f):
    """``f``'s signature and its parameters that a positional argument can fill."""
    try:
        known = _signatures.get(f)
    except TypeError:  # not weakly referenceable
        return _read_positional(f)
    if known is None:
        try:
            known = _read_positional(f)
        except ValueError as exc:
            known = exc
        _signatures[f] = known
    if isinstance(known, ValueError):
        raise ValueError(str(known)) from known.__cause__
    return known


def _read_positional(f):
    try:
        signature = inspect.signature(f)
    except (TypeError, ValueError) as exc:
        raise ValueError("Unable to determine number of fit parameters from the signature "
                         f"of {f!r}; pass p0") from exc
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return signature, [p for p in signature.parameters.values() if p.kind in kinds]


def count_parameters(f) -> int:
    """Number of fit parameters of ``f(x, p1, p2, ...)`` from its signature, as scipy counts
    them: the parameters after x that a positional argument can fill, those with a default
    included; keyword-only ones (a functools.partial's keywords) are not."""
    n_params = getattr(f, "n_params", None)
    if n_params is not None:
        return n_params
    signature, positional = _positional(f)
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
           for p in signature.parameters.values()) or len(positional) < 2:
        raise ValueError("Unable to determine number of fit parameters: f takes "
                         f"{signature}; pass p0 with one value per parameter")
    return len(positional) - 1


# f -> parameter_count_range(f) (it and the signature are read once per function; counting
# the signature's parameters cost a call 10 us)
_ranges: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def parameter_count_range(f) -> tuple[int, int | None] | None:
    """``(fewest, most)`` parameters after x that ``f(x, *p)`` accepts (``most`` None
    after ``*args``): those without a default, up to every positional one; both the
    model's ``n_params`` for a built-in model. None when the signature cannot be read."""
    n_params = getattr(f, "n_params", None)
    if n_params is not None:
        return n_params, n_params
    try:
        return _ranges[f]
    except (KeyError, TypeError):  # not counted yet, or not weakly referenceable
        pass
    found = _count_range(f)
    try:
        _ranges[f] = found
    except TypeError:
        pass
    return found


def _count_range(f):
    try:
        signature, positional = _positional(f)
    except ValueError:
        return None
    if not positional:
        return None
    after_x = positional[1:]
    fewest = sum(p.default is inspect.Parameter.empty for p in after_x)
    open_ended = any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values())
    return fewest, None if open_ended else len(after_x)


def fixed_parameter_count(f) -> int | None:
    """The number of parameters after x when the signature fixes it, else None (a
    parameter with a default, ``*args``, or no readable signature)."""
    found = parameter_count_range(f)
    return found[0] if found is not None and found[0] == found[1] else None


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
    found = parameter_count_range(f)
    if found is not None and not (found[0] <= p0.size
                                  and (found[1] is None or p0.size <= found[1])):
        takes = (f"{found[0]}" if found[0] == found[1] else
                 f"{found[0]} or more" if found[1] is None else f"{found[0]} to {found[1]}")
        raise ValueError(f"p0 has {p0.size} value(s) but the model takes {takes} "
                         f"parameter(s) after x; give one starting value per parameter")
    return p0


def is_unbounded(bounds) -> bool:
    """Whether ``bounds`` is the default ``(-inf, inf)`` (cheap: a small fit counts µs)."""
    return (type(bounds) is tuple and len(bounds) == 2 and type(bounds[0]) is float
            and type(bounds[1]) is float and bounds[0] == -np.inf and bounds[1] == np.inf)


def check_bounds(bounds, n_params: int) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) as float64 arrays of length n_params."""
    if is_unbounded(bounds):  # no checks to make
        return np.full(n_params, -np.inf), np.full(n_params, np.inf)
    lower, upper = bound_pair(bounds)
    limits = []
    for name, value in (("lower", lower), ("upper", upper)):
        array = as_float_array(value, f"the {name} bound")
        check_no_nan_bound(array, name)
        if array.ndim == 0:
            array = np.full(n_params, float(array))
        if array.shape != (n_params,):
            raise ValueError(f"the {name} bound has shape {array.shape} but there are "
                             f"{n_params} parameters; give a scalar or one value per "
                             "parameter")
        limits.append(array)
    lower, upper = limits
    check_bound_order(lower, upper)
    return lower, upper


def bound_pair(bounds) -> tuple:
    """``(lower, upper)`` from a 2-sequence or a ``scipy.optimize.Bounds``, unchecked."""
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):  # scipy.optimize.Bounds
        return bounds.lb, bounds.ub
    try:
        lower, upper = bounds
    except (TypeError, ValueError) as exc:
        raise ValueError("bounds must be a 2-tuple (lower, upper) of scalars or arrays, "
                         f"or a scipy.optimize.Bounds; got {bounds!r}") from exc
    return lower, upper


def check_no_nan_bound(array: np.ndarray, name: str) -> None:
    if np.isnan(array).any():
        raise ValueError(f"the {name} bound contains nan; use -inf/inf for no bound")


def check_bound_order(lower: np.ndarray, upper: np.ndarray) -> None:
    """Every lower bound strictly below its upper bound (arrays broadcast together)."""
    lower, upper = np.broadcast_arrays(lower, upper)
    if lower.ndim == 2 and lower.shape[0] == 1:  # one row shared by every fit
        lower, upper = lower[0], upper[0]
    bad = ~(lower < upper)
    if bad.any():
        index = np.unravel_index(int(np.argmax(bad)), bad.shape)
        where = ", ".join(str(int(i)) for i in index)
        raise ValueError("Each lower bound must be strictly less than each upper bound: "
                         f"lower[{where}] = {lower[index]} >= upper[{where}] = "
                         f"{upper[index]}" + (f" ({int(bad.sum())} pairs are not)"
                                              if bad.sum() > 1 else ""))


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


def value_range(array: np.ndarray) -> tuple:
    """``(smallest, largest)`` value of a non-empty array: two SIMD passes, no temporary.
    Both are finite only when every value is (nan propagates; an inf is one of them)."""
    return float(array.min()), float(array.max())


def sum_of_squares(array: np.ndarray) -> float:
    """``Σ a²`` over a non-empty array in one pass, no temporary for a contiguous one.
    Finite when every value is, unless a square overflows (|a| > ~1e154); the callers then
    test with :func:`value_range`. (One pass where the smallest and largest values take
    two: a huge fit of 10⁶ points read x and y four times before its first pass, ~1 ms of
    its ~4. ``einsum``, not BLAS's dot: BLAS's threads stay awake after it and took the
    cores from the fit's passes, 2.4 -> 7.3 ms.)"""
    flat = array.reshape(-1)
    return float(np.einsum("i,i->", flat, flat))


def check_data_scale(y, weights, y_squares=None) -> None:
    """Refuse data whose weighted magnitude puts χ² outside float64's range, naming the
    scale and the fix (fitting on would end with a misleading status, or at p0).
    ``y_squares``: ``sum_of_squares(y)`` when the caller has it."""
    magnitude = None
    if weights.shape == (1,) and y.size:
        # One weight (no sigma): no array of y's size. The largest |y| lies between the
        # root mean square and the root of the sum of squares: within the limits, the data
        # are; else (or when the squares overflow or underflow) the exact largest |y|.
        weight = abs(float(weights[0]))
        squares = sum_of_squares(y) if y_squares is None else y_squares
        if (math.isfinite(squares) and squares > 0.0
                and weight * math.sqrt(squares) <= LARGEST_DATA
                and weight * math.sqrt(squares / y.size) >= SMALLEST_DATA):
            return
        bottom, top = value_range(y)
        if math.isfinite(top - bottom):
            magnitude = weight * max(top, -bottom)
    if magnitude is None:
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


# ------------------------------------------------------------------------------ curve_fit
# scipy's keywords that choose scipy's path to the minimum, not the minimum: autofit's LM
# takes its own path (Marquardt scaling by the Jacobian's columns, i.e. x_scale='jac'; its
# own finite-difference steps, forward then central; normal equations solved exactly). They
# are checked as scipy checks them and not used; curve_fit's docstring says so.
PATH_KEYWORDS = ("x_scale", "diff_step", "epsfcn", "factor", "diag", "tr_solver",
                 "tr_options", "jac_sparsity")
SOLVER_KEYWORDS = ("ftol", "xtol", "gtol", "maxfev", "max_nfev", "loss", "f_scale",
                   "verbose", "col_deriv", *PATH_KEYWORDS)
METHODS = ("lm", "trf", "dogbox")
JAC_NAMES = ("2-point", "3-point", "cs", "exact")


def check_curve_fit_choices(f, method, jac, nan_policy) -> None:
    """curve_fit's model and its named choices: method, jac, nan_policy."""
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} (all run autofit's bounded LM) "
                         f"or None, got {method!r}")
    if not (jac is None or callable(jac) or (isinstance(jac, str) and jac in JAC_NAMES)):
        raise ValueError("jac must be a callable, '2-point', '3-point', 'cs', 'exact' or None, "
                         f"got {jac!r}")
    if nan_policy not in (None, "raise", "omit"):
        raise ValueError(f"nan_policy must be None, 'raise' or 'omit', got {nan_policy!r}")
    if not callable(f):
        raise TypeError(f"f must be callable as f(xdata, *params), got {f!r}")


def check_curve_data(x: np.ndarray, y: np.ndarray) -> None:
    """One curve: ydata (n_points,) and xdata (n_points,) or (k, n_points)."""
    if y.ndim != 1:
        raise ValueError(f"ydata must be 1-D, got shape {y.shape}; flatten it (and the "
                         "model's output) for multi-dimensional data")
    if x.ndim == 0 or x.ndim > 2 or x.shape[-1] != y.shape[0]:
        raise ValueError(f"xdata has shape {x.shape} but ydata has {y.shape[0]} points: "
                         "xdata must be (n_points,) or (k, n_points) with the same n_points")
    if y.size == 0:
        raise ValueError("`ydata` must not be empty!")


def solver_keywords(kwargs, defaults: dict) -> dict:
    """curve_fit's solver keywords (scipy's ``**kwargs``), checked as scipy checks them:
    ``defaults`` (ftol, xtol, gtol) overridden by the given tolerances, the loss, f_scale,
    verbose, col_deriv and max_nfev (None: the solver's default)."""
    if not kwargs:  # nothing to check (the checks below cost ~9 us: a tenth of a small fit)
        return {**defaults, "loss": "linear", "f_scale": 1.0, "verbose": 0,
                "col_deriv": False, "max_nfev": None}
    if "args" in kwargs:
        # scipy's error for the same call: the parameters are f's own arguments.
        raise ValueError("'args' is not a supported keyword argument: give f the extra "
                         "arguments itself (functools.partial or a closure)")
    unknown = sorted(set(kwargs) - set(SOLVER_KEYWORDS))
    if unknown:
        raise TypeError(f"curve_fit() got unexpected keyword argument(s) {unknown}; "
                        f"autofit's solver takes {list(SOLVER_KEYWORDS)}")
    if "maxfev" in kwargs and "max_nfev" in kwargs:
        raise TypeError("give maxfev or max_nfev, not both")
    options = {**defaults, "loss": kwargs.get("loss", "linear"),
               "f_scale": kwargs.get("f_scale", 1.0)}
    if not callable(options["loss"]):
        options["loss"] = check_loss(options["loss"], _codes.ESTIMATOR_LSE,
                                           allow_callable=True)[0]
    check_f_scale(options["f_scale"], ())
    options["verbose"] = kwargs.get("verbose", 0)
    if options["verbose"] not in (0, 1, 2) or isinstance(options["verbose"], bool):
        raise ValueError(f"verbose must be 0, 1 or 2, got {options['verbose']!r}")
    options["col_deriv"] = bool(kwargs.get("col_deriv", False))
    check_path_keywords(kwargs)
    for name in ("ftol", "xtol", "gtol"):
        if name in kwargs:
            value = kwargs[name]
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"{name} must be a number >= 0, got {kwargs[name]!r}") from None
            if not (value >= 0 and np.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {kwargs[name]!r}")
            options[name] = value
    name = "maxfev" if "maxfev" in kwargs else "max_nfev"
    budget = kwargs.get(name)
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer, float,
                                                               np.floating)):
            raise TypeError(f"{name} must be a positive integer, got {budget!r}")
        if not (np.isfinite(budget) and budget >= 1 and int(budget) == budget):
            raise ValueError(f"{name} must be a positive integer, got {budget!r}")
        budget = int(budget)
    options["max_nfev"] = budget
    return options


def _positive_numbers(value) -> bool:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return array.size > 0 and bool(np.all(np.isfinite(array)) and np.all(array > 0))


def _as_number_array(value):
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([np.nan])


def check_path_keywords(kwargs) -> None:
    """scipy's checks of the keywords in ``PATH_KEYWORDS`` (same errors for the same
    mistakes); the values are not used."""
    x_scale = kwargs.get("x_scale", "jac")
    if not (isinstance(x_scale, str) and x_scale == "jac") and not (
            not isinstance(x_scale, str) and _positive_numbers(x_scale)):
        raise ValueError(f"x_scale must be 'jac' or array_like with positive numbers, got "
                         f"{x_scale!r}")
    for name in ("diff_step", "epsfcn"):
        value = kwargs.get(name)
        if value is not None and not _positive_numbers(np.abs(_as_number_array(value))):
            raise ValueError(f"{name} must be None or a non-zero number, got {value!r}")
    factor = kwargs.get("factor", 100)
    if not (isinstance(factor, (int, float, np.integer, np.floating))
            and not isinstance(factor, bool) and 0 < factor < np.inf):
        raise ValueError(f"factor must be a positive number (scipy's leastsq takes 0.1 to "
                         f"100), got {factor!r}")
    diag = kwargs.get("diag")
    if diag is not None and not _positive_numbers(diag):
        raise ValueError(f"diag must be a sequence of positive numbers, got {diag!r}")
    if kwargs.get("tr_solver") not in (None, "exact", "lsmr"):
        raise ValueError(f"tr_solver must be None, 'exact' or 'lsmr', got "
                         f"{kwargs['tr_solver']!r}")
    if not isinstance(kwargs.get("tr_options", {}), dict):
        raise TypeError(f"tr_options must be a dict, got {kwargs['tr_options']!r}")


def apply_nan_policy(x, y, sigma, nan_policy, check_finite):
    """(x, y, sigma, y_squares) after the finiteness check and scipy's nan_policy ('omit'
    drops the points with a nan in x or y); ``y_squares``: y's ``sum_of_squares`` where
    the check found it finite (for :func:`check_data_scale`), else None."""
    y_squares = None
    if check_finite:
        # The sum of squares (one pass; x's and y's at once) is finite when every value
        # is; when it is not, the smallest and largest values say whether a value is or a
        # square overflowed.
        found_squares = _threads.both(
            lambda array: sum_of_squares(array) if array.size else 0.0, x, y)
        for array, name, squares in ((x, "xdata", found_squares[0]),
                                     (y, "ydata", found_squares[1])):
            if not math.isfinite(squares):
                found = value_range(array)
                if not (math.isfinite(found[0]) and math.isfinite(found[1])):
                    raise ValueError(first_nonfinite(array, name) + "; array must not "
                                     "contain infs or NaNs (drop those points, or pass "
                                     "nan_policy='omit' to skip nan points)")
            elif array is y:
                y_squares = squares
    if nan_policy == "raise":
        for array, name in ((x, "xdata"), (y, "ydata")):
            if np.isnan(array).any():
                raise ValueError("The input contains nan values: "
                                 + first_nonfinite(array, name)
                                 + "; pass nan_policy='omit' to skip them")
    if nan_policy == "omit":
        keep = ~((np.isnan(x) if x.ndim == 1 else np.isnan(x).any(axis=0)) | np.isnan(y))
        if not keep.all():
            x, y, y_squares = x[..., keep], y[keep], None
            if sigma is not None:
                sigma = np.asarray(sigma)
                sigma = sigma[keep] if sigma.ndim == 1 else sigma[np.ix_(keep, keep)]
        if y.size == 0:
            raise ValueError("every point has a nan in xdata or ydata; nothing is left to "
                             "fit after nan_policy='omit'")
    return x, y, sigma, y_squares

# ------------------------------------------------------------------------------ fit_batch
# The batch's arguments come per fit or shared: a per-fit array has y's leading shape in
# front; a shared one is broadcast. Fits are flattened to one leading axis (n_fits).

def check_dtype(dtype, allowed) -> np.dtype:
    """The working precision: float64 unless float32 is asked for."""
    dtype = np.dtype(np.float64 if dtype is None else dtype)
    if dtype not in allowed:
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    return dtype


def check_estimator(estimator) -> int:
    """The estimator's code from its name ('lse' or 'mle', any case)."""
    codes = {"lse": _codes.ESTIMATOR_LSE, "mle": _codes.ESTIMATOR_MLE}
    key = str(estimator).lower()
    if key not in codes:
        raise ValueError(f"estimator must be 'lse' (least squares) or 'mle' (Poisson maximum "
                         f"likelihood), got {estimator!r}")
    return codes[key]


def check_max_iter(max_iter, default: int) -> int:
    if max_iter is None:
        return default
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    return int(max_iter)


def check_tol(tol, default: float) -> float:
    tol = default if tol is None else float(tol)
    if not (np.isfinite(tol) and tol > 0.0):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    return tol


def check_batch_jac(jac) -> None:
    if jac not in (None, "2-point"):
        raise ValueError(f"jac must be None or '2-point' for fit_batch, got {jac!r} "
                         "(analytic Jacobians come with the built-in models)")


def check_batch_y(y) -> np.ndarray:
    """y as an array of shape (..., n_points) with at least one point."""
    y = as_float_array(y, "y")
    if y.ndim == 0 or y.shape[-1] == 0 or y.size == 0:
        raise ValueError(f"y must have shape (..., n_points) with n_points >= 1, got "
                         f"shape {y.shape}")
    return y


def batch_x(x, leading: tuple, n_points: int, n_variables: int | None,
            model_name: str) -> np.ndarray:
    """x as (1 or n_fits, k, n_points): shared (n_points,) or (k, n_points), or per fit."""
    x = as_float_array(x, "x")
    n_fits = int(np.prod(leading, dtype=np.int64))
    if x.ndim == 0 or x.shape[-1] != n_points:
        raise ValueError(f"x must end with the n_points={n_points} axis of y; got x of shape "
                         f"{x.shape} for y of shape {leading + (n_points,)}")
    if x.ndim == 1:
        shaped = x.reshape(1, 1, n_points)
    elif x.shape[:-1] == leading and n_variables in (None, 1):
        shaped = x.reshape(n_fits, 1, n_points)
    elif x.ndim == 2 and (n_variables is None or x.shape[0] == n_variables):
        shaped = x.reshape(1, x.shape[0], n_points)
    elif x.shape[:-2] == leading and x.ndim >= 2:
        shaped = x.reshape(n_fits, x.shape[-2], n_points)
    else:
        raise ValueError(f"x of shape {x.shape} does not fit y of shape "
                         f"{leading + (n_points,)}: give (n_points,), (k, n_points), or one "
                         "row per fit (y's leading shape, then [k,] n_points)")
    if n_variables is not None and shaped.shape[1] != n_variables:
        raise ValueError(f"the {model_name} model takes {n_variables} independent "
                         f"variable(s): x must be ({n_variables}, {n_points}) or per fit, "
                         f"got {x.shape}")
    return shaped


def batch_p0(p0, leading: tuple, n_params: int) -> np.ndarray:
    """p0 as (n_fits, n_params): one row for every fit, or one per fit."""
    p0 = as_float_array(p0, "p0")
    n_fits = int(np.prod(leading, dtype=np.int64))
    if p0.shape == (n_params,):
        return np.broadcast_to(p0, (n_fits, n_params))
    if p0.shape == leading + (n_params,):
        return p0.reshape(n_fits, n_params)
    raise ValueError(f"p0 must have shape ({n_params},) or {leading + (n_params,)} (one row "
                     f"per fit), got {p0.shape}")


def per_fit(value, name: str, leading: tuple, size: int) -> np.ndarray:
    """A per-parameter or per-point argument as (1 or n_fits, size): a scalar, (size,) or
    y's leading shape + (size,)."""
    value = as_float_array(value, name)
    n_fits = int(np.prod(leading, dtype=np.int64))
    if value.ndim == 0 or value.shape == (size,):
        return np.broadcast_to(value, (1, size))
    if value.shape == leading + (size,):
        return value.reshape(n_fits, size)
    raise ValueError(f"{name} must be a scalar, shape ({size},) or {leading + (size,)}, got "
                     f"{value.shape}")


def batch_bounds(bounds, leading: tuple, n_params: int) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper), each (1 or n_fits, n_params); the same forms as curve_fit's bounds
    (a pair or ``scipy.optimize.Bounds``), each side shared or per fit."""
    if bounds is None or is_unbounded(bounds):
        return np.full((1, n_params), -np.inf), np.full((1, n_params), np.inf)
    lower, upper = bound_pair(bounds)
    lower = per_fit(lower, "the lower bound", leading, n_params)
    upper = per_fit(upper, "the upper bound", leading, n_params)
    check_no_nan_bound(lower, "lower")
    check_no_nan_bound(upper, "upper")
    check_bound_order(lower, upper)
    return lower, upper


def check_batch_feasible(p0: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                         leading: tuple) -> None:
    infeasible = np.any(((p0 < lower) | (p0 > upper)) & np.isfinite(p0), axis=-1)
    if np.any(infeasible):
        first = np.unravel_index(int(np.argmax(infeasible)), leading) if leading else ()
        raise ValueError(f"p0 is outside the bounds for {int(infeasible.sum())} fit(s) "
                         f"(first at index {tuple(int(i) for i in first)}); give a p0 "
                         "inside [lower, upper]")


def free_mask(fixed, names: tuple) -> np.ndarray:
    """(n_params,) bool, True where a parameter is fitted, from ``fixed`` (None, a boolean
    mask, or parameter names)."""
    n_params = len(names)
    if fixed is None:
        return np.ones(n_params, dtype=bool)
    fixed = list(fixed) if not isinstance(fixed, np.ndarray) else fixed
    if len(fixed) and all(isinstance(f, str) for f in fixed):
        unknown = [f for f in fixed if f not in names]
        if unknown:
            raise ValueError(f"fixed names unknown parameter(s) {unknown}; the parameters "
                             f"are {names}")
        free = np.array([n not in fixed for n in names])
    else:
        mask = np.asarray(fixed)
        if mask.dtype != bool or mask.shape != (n_params,):
            raise ValueError(f"fixed must be a boolean mask of shape ({n_params},) or a list "
                             f"of parameter names, got {fixed!r}")
        free = ~mask
    if not free.any():
        raise ValueError("every parameter is fixed; leave at least one free")
    return free


def batch_weights(sigma, leading: tuple, n_points: int, estimator_code: int) -> np.ndarray:
    """Residual weights 1/sigma as (1 or n_fits, n_points); sigma inf drops a point."""
    if sigma is None:
        return np.ones((1, n_points))
    if estimator_code == _codes.ESTIMATOR_MLE:
        raise ValueError("sigma has no meaning for estimator='mle' (Poisson counts carry "
                         "their own variance); drop sigma or use estimator='lse'")
    sigma = per_fit(sigma, "sigma", leading, n_points)
    if np.any(sigma <= 0):
        raise ValueError(f"sigma must be > 0 (use inf to drop a point); found "
                         f"{int(np.count_nonzero(sigma <= 0))} value(s) <= 0")
    with np.errstate(divide="ignore"):
        return 1.0 / sigma
