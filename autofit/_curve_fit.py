"""``autofit.curve_fit``: scipy.optimize.curve_fit's interface on every backend."""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from dataclasses import dataclass

import numpy as np

from autofit import _adapters, _codes, _dispatch, _elsewhere, _forward_mode, _fused, _rules
from autofit import _validation as check
from autofit._dispatch import BackendCannotRun
from autofit._status import Status
from autofit.models import Model


@functools.cache
def optimize_warning():
    """autofit's ``OptimizeWarning`` (the covariance could not be estimated): a subclass of
    scipy's, so that users catching scipy's keep catching ours. Made at its first use:
    ``import scipy.optimize`` takes 0.26 s, two thirds of what importing autofit took, for
    a warning that most scripts never see (``autofit.OptimizeWarning`` makes it too)."""
    try:
        from scipy.optimize import OptimizeWarning as scipy_warning
    except ImportError:  # pragma: no cover - scipy is a dependency
        scipy_warning = UserWarning

    class OptimizeWarning(scipy_warning):
        """The covariance could not be estimated (a subclass of scipy's OptimizeWarning)."""

    # Found where users name it (and pickle finds it): autofit.OptimizeWarning.
    OptimizeWarning.__module__, OptimizeWarning.__qualname__ = "autofit", "OptimizeWarning"
    return OptimizeWarning


def __getattr__(name):
    if name == "OptimizeWarning":
        return optimize_warning()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ImproperInputError(ValueError, TypeError):
    """Fewer points than parameters (a TypeError in scipy, a ValueError in spirit)."""


class NotConvergedError(RuntimeError):
    """curve_fit's RuntimeError for a fit that stopped without converging.

    Carries where it stopped, for :func:`autofit.fit`'s report: ``params`` (n_params,) and
    ``infodict`` (as with ``full_output=True``).
    """

    def __init__(self, message: str, params, infodict: dict):
        super().__init__(message)
        self.params = params
        self.infodict = infodict


@dataclass
class SingleFit:
    """One fit's outcome as the solver returns it: :func:`curve_fit` unpacks it into scipy's
    tuple (raising for a fit that did not converge), :func:`autofit.fit` into a FitResult.

    ``pcov`` is scaled as curve_fit returns it (nan when the fit did not converge);
    ``message`` is curve_fit's ``mesg``, or the RuntimeError's text for a fit that did not
    converge.
    """

    params: np.ndarray
    pcov: np.ndarray
    infodict: dict
    message: str
    status: Status

    def curve_fit_output(self, full_output: bool):
        if not self.status.converged:
            raise NotConvergedError(self.message, self.params, self.infodict)
        if not full_output:
            return self.params, self.pcov
        return self.params, self.pcov, self.infodict, self.message, int(self.status)


# From this many points on, curve_fit takes the fused path (see ``fused``): below it the
# stored Jacobian costs little memory and lm_solve's geodesic steps are worth having.
FUSED_MIN_POINTS = 100_000
# Points on which the fused path checks the model at p0 in Python.
_CHECK_SAMPLE = 1000
# The quick start (the NumPy engine answers a model's first calls) only below this many
# points x (parameters + 1), a pass of finite differences: beyond it the NumPy engine takes
# longer than numba's compilation plus its fit (a user's 5-parameter gaussian on a line,
# first call in a fresh process: 2,000,000 points NumPy 0.55 s / numba 1.44 s, 5,000,000
# 1.53 / 1.59 s, 20,000,000 6.45 / 2.34 s).
QUICK_START_MAX_EVALUATIONS = 30_000_000
# The same for a robust loss, whose fits take the NumPy engine about 3x the passes (arctan,
# the same model with 5% spikes, NumPy / numba: 600,000 points 0.87 / 1.35 s, 2,000,000
# 2.44 / 1.47 s, 5,000,000 6.95 / 1.74 s).
QUICK_START_MAX_EVALUATIONS_ROBUST = 6_000_000
DEFAULT_FTOL = 1e-15
DEFAULT_XTOL = 1e-15
DEFAULT_GTOL = 1e-15


def default_max_nfev(n_params: int) -> int:
    """Model evaluations allowed by default (finite-difference ones included).

    Generous, because a budget stop loses a fit that was still improving (NIST's MGH10 from
    its far start needs about 80,000); a fit that cannot improve stops long before it.
    """
    return 30000 * (n_params + 1)


SHARED_ROAD_NOTE = ("a model whose derivatives autofit can generate takes the fused pass "
                    "below the huge sizes on every backend (numba's road), so that every "
                    "backend reaches the same minimum")


def _hands_over(fit: dict, budget: int, max_nfev: int) -> bool:
    """Whether a fused pass below the huge sizes leaves the fit to lm_solve: it spent its
    own budget (not the caller's max_nfev), or stopped at a singular matrix, where
    lm_solve's scaling (a column of zeros keeps a scale of 1) still steps and its
    covariance is the pseudo-inverse, as scipy's."""
    status = fit["status"]
    return status == Status.SINGULAR or (status == Status.MAX_NFEV and budget < max_nfev)


def _handover_note(fit: dict, n_params: int) -> str:
    why = (f"had not converged after {fused_budget(n_params)} passes"
           if fit["status"] == Status.MAX_NFEV else "stopped at a singular matrix")
    return f"the fused pass {why}: lm_solve (geodesic acceleration) ran the fit from p0"


def fused_budget(n_params: int) -> int:
    """Passes the fused pass gets for a fit below the huge sizes before lm_solve takes over:
    easy fits need 5-12, a fit crawling through a curved valley thousands (measured: three
    gaussians two of which merge, 21,787 passes to a worse minimum where lm_solve's geodesic
    steps reach the best one in about 300 evaluations)."""
    return 50 * (n_params + 1)


def curve_fit(f, xdata, ydata, p0=None, sigma=None, absolute_sigma=False, check_finite=None,
              bounds=(-np.inf, np.inf), method=None, jac=None, *, full_output=False,
              nan_policy=None, backend=None, strict=None, fused=None, **kwargs):
    """Use non-linear least squares to fit a function ``f`` to data.

    A drop-in replacement for :func:`scipy.optimize.curve_fit`: same arguments, same return
    values, same meaning, plus ``backend=`` and ``strict=``. Fits ``ydata = f(xdata, *params)
    + eps`` with autofit's Levenberg-Marquardt (bounded problems by a projected LM; every
    ``method`` runs it), on the backend chosen by :func:`autofit.get_backend`'s rule.

    Parameters
    ----------
    f : callable ``f(x, p1, ..., pk) -> (n_points,)``, or a model from :mod:`autofit.models`
        NumPy code runs on ``numpy`` and ``numba`` (compiled with ``numba.njit``);
        ``jax.numpy`` code runs on ``jax``. A NumPy model asked to run on jax falls back to
        the next backend with a warning (an error in strict mode).
    xdata : (n_points,) or (k, n_points) array_like, or None
        None: f is called with None (on NumPy unless a backend is named).
    ydata : (n_points,) array_like
        Integers and float32 are fitted in float64. A model may return a scalar (or one
        value) that broadcasts against ydata, as scipy's ``f(xdata, *p) - ydata`` allows.
    p0 : (n_params,) array_like, optional
        Starting values. Default: the built-in model's guess, else 1 for each parameter of
        ``f``'s signature (moved inside finite bounds, as scipy does).
    sigma : scalar, (n_points,) or (n_points, n_points) array_like, optional
        Standard deviations of ``ydata`` (a scalar: the same for every point), or its
        covariance matrix.
    absolute_sigma : bool
        If True, sigma is absolute and pcov is not scaled by the reduced chi-square.
    check_finite : bool, optional
        Raise on nan/inf input. Default True unless ``nan_policy`` is given.
    bounds : 2-tuple of scalars or (n_params,) arrays, or scipy.optimize.Bounds
    method : {None, 'lm', 'trf', 'dogbox'}
        Accepted for compatibility; all run autofit's (bounded) LM.
    jac : callable, or {'2-point', '3-point', 'cs', 'exact'}, optional
        A callable is ``jac(x, p1, ..., pk) -> (n_points, n_params)``.
        None: analytic for built-in models, autodiff on jax; for a user's model on numba
        and NumPy, exact derivatives generated from the model's source where that can be
        done (:mod:`autofit._forward_mode`; ``infodict['backend_reason']`` says which),
        else forward differences with central differences for the final steps and the
        covariance. '2-point' / '3-point': finite differences always. 'cs': complex
        steps (exact to rounding; the model must carry complex parameters through, which
        is checked at p0; on NumPy unless a backend is named). 'exact': the generated
        derivatives or a ValueError saying why they cannot be had.
    full_output : bool
        Also return ``infodict, mesg, ier``.
    nan_policy : {None, 'raise', 'omit'}
        'omit' drops points where xdata or ydata is nan.
    backend : {'numpy', 'numba', 'jax'}, optional
    strict : bool, optional
        Raise instead of falling back to another backend (default: ``FFIT_STRICT``).
    fused : bool, optional
        Fit without storing the ``(n_points, n_params)`` Jacobian: each iteration is one
        chunked pass over the points (kernel ``lm_fused``), so the memory beyond the data is
        that of a chunk. From 500,000 points (numpy and numba) the fit first runs on a
        strided subsample of about 50,000 points (a copy of x and y at every 10th-64th
        point) and the fit to all points starts from its minimum: about three passes over
        all the points instead of about six; if the full fit then ends more than twice
        as far per point from the data as the subsample's, it is also run from p0 and the
        lower χ² kept. ``nfev`` counts the subsample's evaluations too. Default: for
        ``FUSED_MIN_POINTS`` (100,000) points or more, unless ``sigma`` is a covariance
        matrix (which needs the old path) or the backend is numba with a callable ``jac``
        (numba's fused pass takes models one point at a time).
        ``True`` asks for it at any size, ``False`` never uses it. Below that size, a
        user's model whose derivatives autofit can generate (``jac='exact'`` would work)
        first runs on the fused pass on every backend, within ``fused_budget`` passes;
        a fit that runs out of them or stops at a singular matrix is run again from p0
        by ``lm_solve`` (geodesic acceleration; ``backend_reason`` says so, ``nfev``
        counts both).
    **kwargs
        scipy's keywords, with scipy's meaning:

        - ``ftol``, ``xtol``, ``gtol`` (defaults 1e-15: stop at float64 precision) and
          ``maxfev`` / ``max_nfev`` (default ``30000 * (n_params + 1)``).
        - ``loss`` ('linear', 'soft_l1', 'huber', 'cauchy', 'arctan', or a callable
          ``rho(z) -> (3, n)`` as in :func:`scipy.optimize.least_squares`) and ``f_scale``
          (default 1): minimise ``Σ f_scale² rho((r / f_scale)²)`` of the weighted
          residuals r, on every backend (by the batched solver with one fit, and on the
          fused path, ``lm_fused``, from ``FUSED_MIN_POINTS`` points; a callable runs on
          NumPy). The covariance follows scipy: the inverse of
          ``Jᵀ diag(rho' + 2 rho'' z) J`` scaled by that sum over ``n_points - n_params``
          (unless ``absolute_sigma``); ``infodict['chi2']`` is the sum. Any ``method``
          takes a loss (scipy's 'lm' refuses it).
        - ``verbose``: 1 prints a summary at the end, 2 also the cost of each model
          evaluation (on NumPy unless a backend is named).
        - ``col_deriv``: a callable ``jac`` returns ``(n_params, n_points)``.
        - Accepted, checked as scipy checks them, and not used, because they choose
          scipy's path to the minimum rather than the minimum: ``x_scale`` (autofit's LM
          always scales by the Jacobian's columns, scipy's 'jac'), ``diff_step`` and
          ``epsfcn`` (autofit takes its own finite-difference steps, forward then central
          for the last steps and the covariance, or exact derivatives), ``factor`` and
          ``diag`` (MINPACK's initial step bound and scaling), ``tr_solver``,
          ``tr_options`` and ``jac_sparsity`` (the normal equations are solved exactly).

    Returns
    -------
    popt : (n_params,) ndarray
    pcov : (n_params, n_params) ndarray
        inf where the covariance cannot be estimated (with an OptimizeWarning).
    infodict : dict, if full_output
        ``nfev``, ``fvec`` (weighted residuals), ``nit``, ``status`` (:class:`autofit.Status`),
        ``backend`` (the backend that ran) and ``backend_reason``.
    mesg : str, if full_output
    ier : int, if full_output
        1-4 as in scipy, 6 for "converged to float64 precision".

    Raises
    ------
    ValueError
        For invalid input (nan/inf data, mismatched lengths, bad bounds, sigma or p0...).
    RuntimeError
        If the fit does not converge (budget spent, non-finite model during the fit).

    Examples
    --------
    >>> import numpy as np, autofit
    >>> def decay(x, a, b, c):
    ...     return a * np.exp(-b * x) + c
    >>> x = np.linspace(0, 4, 50)
    >>> popt, pcov = autofit.curve_fit(decay, x, decay(x, 2.5, 1.3, 0.5), backend="numpy")
    >>> np.round(popt, 6)
    array([2.5, 1.3, 0.5])
    """
    if (p0 is not None and jac is None and method is None and not kwargs
            and check_finite is None and nan_policy is None and fused is None
            and check.is_unbounded(bounds)):
        fitted = _common_call(f, xdata, ydata, p0, backend, sigma, absolute_sigma,
                              full_output)
        if fitted is not None:
            return fitted
    return solve(f, xdata, ydata, p0, sigma, absolute_sigma, check_finite, bounds, method, jac,
                 full_output=full_output, nan_policy=nan_policy, backend=backend,
                 strict=strict, fused=fused, **kwargs).curve_fit_output(full_output)


def solve(f, xdata, ydata, p0=None, sigma=None, absolute_sigma=False, check_finite=None,
          bounds=(-np.inf, np.inf), method=None, jac=None, *, full_output=False,
          nan_policy=None, backend=None, strict=None, fused=None, **kwargs) -> SingleFit:
    """The single-fit solver behind :func:`curve_fit` and :func:`autofit.fit` (the same
    arguments): its outcome as a :class:`SingleFit`, also for a fit that did not converge
    (``full_output``: compute the residuals even on the fused path)."""
    options = check.solver_keywords(kwargs, {"ftol": DEFAULT_FTOL, "xtol": DEFAULT_XTOL,
                                              "gtol": DEFAULT_GTOL})
    loss, f_scale = options.pop("loss"), options.pop("f_scale")
    verbose = options.pop("verbose")
    # Wrappers only Python can call (the default rule then runs NumPy; an explicit backend
    # is tried, and falls back visibly).
    python_only = []
    if options.pop("col_deriv") and callable(jac):
        jac = _transposed(jac)
        python_only.append("col_deriv=True (jac's output is transposed in Python)")
    check.check_curve_fit_choices(f, method, jac, nan_policy)
    if check_finite is None:
        check_finite = nan_policy is None

    y = check.as_float_array(ydata, "ydata")
    no_x = xdata is None
    if no_x:
        # scipy passes xdata to f whatever it is; None is the case of a model that needs
        # no x. The engines take an x array: f gets None from a wrapper, on NumPy.
        f, xdata = _without_x(f, y.shape[0] if y.ndim == 1 else 0)
    x = check.as_float_array(xdata, "xdata")
    check.check_curve_data(x, y)
    if sigma is not None:
        sigma = check.expand_scalar_sigma(sigma, y.shape[0])
        check.check_sigma_shape(sigma, y.shape[0])
    x, y, sigma, y_squares = check.apply_nan_policy(x, y, sigma, nan_policy, check_finite)

    if p0 is not None:
        p0 = check.check_p0(p0, f)
        lower, upper = check.check_bounds(bounds, p0.shape[0])
    else:
        lower, upper = check.check_bounds(bounds, _n_params_hint(f, p0))
        p0 = check.check_p0(_default_p0(f, x, y, lower, upper), f)
        if lower.shape[0] != p0.shape[0]:
            lower, upper = check.check_bounds(bounds, p0.shape[0])
    if not check.is_unbounded(bounds):
        check.check_feasible(p0, lower, upper)
    if _output_broadcasts(f, x, p0):
        f = _broadcasting(f)
        python_only.append("the model's output broadcasts against ydata (it is broadcast "
                           "in Python)")
    if isinstance(jac, str) and jac == "cs":
        jac = _complex_step(f, x, p0)
        python_only.append("jac='cs' (the model is called with complex parameters)")
    n_params = p0.shape[0]
    if y.shape[0] < n_params:
        raise ImproperInputError(f"Improper input: func (m={y.shape[0]}) < n={n_params}: "
                                 f"{y.shape[0]} points cannot determine {n_params} "
                                 "parameters; give at least as many points as parameters")
    if sigma is None:
        # One weight for every point: the fused path needs no array of the data's size.
        weights, sigma_is_matrix = np.ones(1), False
    else:
        weights, sigma_is_matrix = check.check_sigma(sigma, y.shape[0])
    check.check_data_scale(y, weights, y_squares)
    max_nfev = options.pop("max_nfev") or default_max_nfev(n_params)
    if verbose == 2:
        f = _printing(f, y, weights, loss, f_scale)
        python_only.append("verbose=2 (each evaluation is printed from Python)")
    if no_x:
        python_only.append("xdata=None (f is called with None)")
    if fused not in (None, True, False):
        raise ValueError(f"fused must be None, True or False, got {fused!r}")
    if fused and sigma_is_matrix:
        raise ValueError("fused=True cannot take a covariance matrix sigma (its weights "
                         "couple the points); pass 1-D sigma or fused=None")
    use_fused = (fused if fused is not None
                 else y.shape[0] >= FUSED_MIN_POINTS and not sigma_is_matrix)
    if loss != "linear":
        if sigma_is_matrix:
            raise ValueError(f"loss={loss!r} takes sigma as standard deviations (n_points,); "
                             "a covariance matrix couples the residuals the loss weighs one "
                             "by one: pass 1-D sigma, or loss='linear'")
        if use_fused and not (callable(loss) or callable(jac) or python_only):
            fit, choice = _robust_fused(f, jac, x, y, weights, p0, lower, upper, loss,
                                        f_scale, options, max_nfev, full_output, backend,
                                        strict)
        else:
            fit, choice = _robust(f, jac, x, y, sigma, p0, lower, upper, loss, f_scale,
                                  options, max_nfev, "numpy" if python_only and backend is None
                                  else backend, strict, check.is_unbounded(bounds))
        return _outcome(fit, choice, y, n_params, absolute_sigma, max_nfev, verbose)

    choice = _dispatch.choose(backend)
    if python_only and choice.source == _dispatch.DEFAULT_RULE:
        choice = _dispatch.BackendChoice(requested="numpy", backend="numpy",
                                         source="; ".join(python_only))
    # Exact derivatives of a user's model, generated from its source, for the engines that
    # take point functions (numba): with them numba runs every size on its fused pass, and
    # below the huge sizes every backend takes that road (see attempt).
    exact, exact_reason = None, None
    user_model = not isinstance(f, Model) and not callable(jac)
    if user_model and not sigma_is_matrix and jac in (None, "exact"):
        exact, exact_reason = _forward_mode.exact_or_none(
            f, n_params, 1 if x.ndim == 1 else x.shape[0], x, p0)
    if jac == "exact" and fused is False:
        raise ValueError("jac='exact' runs on numba's fused pass; it cannot be combined with "
                         "fused=False (pass jac=None to let autofit choose)")
    if jac == "exact" and exact is None:
        raise ValueError(f"jac='exact': the derivatives of {getattr(f, '__name__', f)!r} "
                         f"cannot be generated from its source: {exact_reason}")
    # numba's fused pass takes the exact point functions at every size (fused=False: never).
    # Below the huge sizes such a model runs the same algorithm on every backend: the
    # fused pass within fused_budget, then lm_solve (numpy and jax with their own
    # derivatives); otherwise the backends would take different roads through a
    # multi-minimum problem and end at different minima from the same start.
    exact_fused = exact is not None and fused is not False
    points_fused = use_fused or exact_fused
    if user_model:
        # A user's model on the default rule: the engine that answers this call fastest.
        fused_sample = (_fused_sample(x, y, weights, p0, lower, upper) if points_fused
                        else None)
        choice = _dispatch.quick_choice(
            choice, f, n_params, x.ndim, 1 if weights.ndim == 1 else 2,
            fused_sample=fused_sample, evaluations=y.shape[0] * (n_params + 1),
            max_evaluations=QUICK_START_MAX_EVALUATIONS,
            cached=lambda: exact_fused and _forward_mode.is_compiled_on_disk(exact, "fused"),
            elsewhere=(functools.partial(_elsewhere.fused_work, exact=exact,
                                         n_params=n_params, sample=fused_sample)
                       if exact_fused else None))
    # The fused path checks the model on a sample (a full evaluation in Python would cost
    # more than the fit); a non-finite value elsewhere ends the fit with NONFINITE.
    sample = slice(None) if not use_fused else slice(0, min(y.shape[0], _CHECK_SAMPLE))
    try:
        _check_model_at_p0(f, jac, x[..., sample], y[sample], p0, choice.requested,
                           y_checked=check_finite)
    except BaseException:
        # The call still counts for the quick start: its time, and the compilation that
        # wait_for_compilation starts (else that model's state waited for a call that
        # never came).
        if choice.after_call is not None:
            choice.after_call()
        raise

    # What a fused pass that ran out of its budget spent: a backend tried after it (the
    # fallback) goes straight to lm_solve.
    spent = {"nfev": 0, "nit": 0, "note": ""}

    def fused_road(name, prepared, budget, note):
        """The fit by the fused pass, or None: it cannot run ``f`` here, or below the huge
        sizes it handed the fit to lm_solve (what it spent is then in ``spent``)."""
        fit = _fused.run_fused(name, f, jac, prepared, x, y, weights, p0, lower, upper,
                               options, budget, full_output,
                               exact=exact if prepared is None else None)
        if fit is None:
            return None
        if use_fused or not _hands_over(fit, budget, max_nfev):
            choice.notes.append(note)
            return fit
        spent.update(nfev=fit["nfev"], nit=fit["nit"], note=_handover_note(fit, n_params))
        return None

    def attempt(name):
        takes_points = name in _dispatch.POINT_FUNCTION_BACKENDS
        if takes_points and exact_fused and not spent["nfev"]:
            # The generated point functions are all the fused pass needs. Below the huge
            # sizes it gets a budget of its own: a fit that crawls along a curved valley
            # (peaks that merge) is finished by lm_solve's geodesic steps instead.
            fit = fused_road(name, None, max_nfev if use_fused else min(
                max_nfev, fused_budget(n_params)), _forward_mode.EXACT_NOTE)
            if fit is not None:
                return fit
        stalled = spent["note"] or None
        if exact is None:
            fd_note = _forward_mode.finite_difference_note(exact_reason)
        else:
            fd_note = _forward_mode.finite_difference_note(
                "fused=False" if fused is False else "the generated ones did not compile")
        if stalled is not None:
            fd_note = _forward_mode.finite_difference_note(stalled)
        if takes_points and not use_fused and not isinstance(f, Model):
            full_weights = np.ones(y.shape[0]) if sigma is None else weights
            # After a stalled fused pass, lm_solve takes the same exact derivatives.
            fit, exact_used = _run_compiled_model(
                name, f, None if jac == "exact" else jac, x, y, full_weights, p0, lower,
                upper, options, max(max_nfev - spent["nfev"], 1),
                exact if stalled is not None else None)
            if exact_used:
                choice.notes.extend([_forward_mode.EXACT_NOTE, stalled])
            elif user_model:
                choice.notes.append(fd_note)
            return _counting(fit, spent)
        prepared = _adapters.prepare(name, f, n_params, None if jac == "exact" else jac)
        prepared = _adapters.check_runs(name, prepared, x[..., sample], p0, f,
                                        None if jac == "exact" else jac)
        if exact_fused:
            # The generated derivatives where this backend runs them as they are (NumPy: on
            # arrays of points; its host says), so that it takes numba's road with numba's
            # derivatives.
            prepared = _dispatch.host_of(name).exact_prepared(prepared, exact, n_params,
                                                              x[..., sample], p0)
        if prepared.note is not None:
            choice.notes.append(prepared.note)
        # numba's road for this model (above), with this backend's derivatives: the budget
        # counts passes, as there (a pass of finite differences costs more evaluations).
        # A max_nfev below it (a caller's tight budget) is lm_solve's alone, which counts
        # its evaluations one by one as scipy's does.
        road_budget = fused_budget(n_params) * _rules.evaluations_per_pass(
            prepared.jac_method, n_params)
        if jac == "exact" and prepared.jac_method not in (_codes.JAC_ANALYTIC,
                                                          _codes.JAC_AUTODIFF):
            raise BackendCannotRun(f"jac='exact': {name!r} would use finite differences")
        if use_fused:
            fit = _fused.run_fused(name, f, jac, prepared, x, y, weights, p0, lower, upper,
                                   options, max_nfev, full_output)
            if fit is not None:
                if takes_points and user_model:
                    choice.notes.append(fd_note)
                return fit
        elif exact_fused and not takes_points:
            if not spent["nfev"] and road_budget <= max_nfev:
                fit = fused_road(name, prepared, road_budget, SHARED_ROAD_NOTE)
                if fit is not None:
                    return fit
            if spent["nfev"]:
                choice.notes.append(spent["note"])
        full_weights = np.ones(y.shape[0]) if sigma is None else weights
        return _counting(_run_backend(name, prepared, x, y, full_weights, p0, lower, upper,
                                      options, max(max_nfev - spent["nfev"], 1)), spent)

    try:
        fit = _dispatch.run_with_fallback(choice, attempt, strict=strict)
    finally:
        if choice.after_call is not None:
            choice.after_call()
    return _outcome(fit, choice, y, n_params, absolute_sigma, max_nfev, verbose)


_ONE_WEIGHT = np.ones(1)


def _common_call(f, xdata, ydata, p0, backend, sigma=None, absolute_sigma=False,
                 full_output=False):
    """``curve_fit(f, x, y, p0)`` with every option at its default but ``sigma`` (None, or
    a float64 array of one positive finite standard deviation per point),
    ``absolute_sigma`` and ``full_output``, for a user's model whose exact point functions
    are compiled on the chosen backend's fused pass: the general path's result (the same
    kernel calls with the same arguments, and with ``full_output`` the same infodict, built
    by the same :func:`_outcome`), with less Python around it (the general path spends more
    time checking than a 100-point fit takes: 80 us of a 110 us fit with sigma). None when
    the call is anything else, or the fit does not end as the common case does (converged,
    finite covariance): the general path then runs it and reports what happened.
    """
    if (type(xdata) is not np.ndarray or type(ydata) is not np.ndarray
            or xdata.dtype != np.float64 or ydata.dtype != np.float64 or xdata.ndim != 1
            or ydata.shape != xdata.shape or ydata.shape[0] >= FUSED_MIN_POINTS
            or _forward_mode.plain_function(f) is None):
        return None
    # The backend first: on NumPy, or before numba is loaded (a fresh process's quick
    # start), the checks below were 15 us of a 1 ms call for nothing.
    try:
        choice = _dispatch.choose(backend)
    except (ValueError, ImportError):  # the general path says what is wrong, in its order
        return None
    if choice.requested not in _dispatch.POINT_FUNCTION_BACKENDS:
        return None
    # Not loaded yet: nothing can be compiled for this model, and importing numba here
    # (~0.2 s) would make a fresh process's first call wait for it; the general path
    # answers that call (the quick start).
    host = _dispatch.loaded_host(choice.requested)
    if host is None:
        return None
    weights, weighted_y = _ONE_WEIGHT, ydata
    if sigma is not None:
        if (type(sigma) is not np.ndarray or sigma.dtype != np.float64
                or sigma.shape != ydata.shape or not float(sigma.min()) > 0.0
                or not math.isfinite(float(sigma.max()))):
            return None  # the general path checks (or expands) it
        weights = 1.0 / sigma
        weighted_y = weights * ydata
    try:
        start = np.array(p0, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    n_points, n_params = ydata.shape[0], start.size
    if (start.ndim != 1 or not 0 < n_params < n_points or not math.isfinite(start.sum())
            or not math.isfinite(xdata.sum())
            or check.fixed_parameter_count(f) not in (None, n_params)):
        return None
    # The weighted y's smallest and largest values: both finite only when every y is (nan
    # propagates; the weights are finite), and the larger magnitude of the two is theirs.
    magnitude = max(-float(weighted_y.min()), float(weighted_y.max()))
    if not (magnitude <= check.LARGEST_DATA) or 0.0 < magnitude < check.SMALLEST_DATA:
        return None  # the general path says why it cannot fit this
    exact, _ = _forward_mode.exact_or_none(f, n_params, 1, xdata, start)
    if exact is None or not host.fused_compiled(*exact, n_params):
        return None
    kernels = _dispatch.load(choice.requested)
    params, chi2, status, nfev, n_iter, information = kernels.lm_fused(
        *exact, _codes.JAC_ANALYTIC, xdata[None, :], ydata, weights, start,
        np.full(n_params, -np.inf), np.full(n_params, np.inf), DEFAULT_FTOL, DEFAULT_XTOL,
        DEFAULT_GTOL, fused_budget(n_params))
    if int(status) not in _codes.CONVERGED_CODES:
        return None
    pcov, rank = kernels.covariance_from_information(information)
    if not math.isfinite(pcov.sum()):  # a nan or an inf in it (or an overflowing sum)
        return None
    if full_output:
        # As run_fused and the general path's outcome make it (fvec: the model in Python).
        params = np.array(params, dtype=np.float64)
        fvec = weights * (np.asarray(f(xdata, *params), dtype=np.float64) - ydata)
        fit = {"params": params, "chi2": float(chi2), "status": Status(int(status)),
               "nfev": int(nfev), "nit": int(n_iter),
               "pcov": np.asarray(pcov, dtype=np.float64), "rank": int(rank), "fvec": fvec}
        choice.notes.append(_forward_mode.EXACT_NOTE)
        return _outcome(fit, choice, ydata, n_params, absolute_sigma,
                        default_max_nfev(n_params)).curve_fit_output(True)
    if absolute_sigma:  # scipy's rule, with or without sigma
        return np.array(params, dtype=np.float64), pcov
    return np.array(params, dtype=np.float64), pcov * (float(chi2) / (n_points - n_params))


def _fused_sample(x, y, weights, p0, lower, upper):
    """The few points on which the quick start compiles the fused pass in the background
    (:func:`autofit._dispatch.quick_choice`'s ``fused_sample``): copies, as the quick start
    keeps them until numba compiles (maybe never), and views would keep the call's whole
    arrays alive."""
    few = slice(0, min(y.shape[0], 64))
    return (np.array(x[..., few]), np.array(y[few]),
            np.array(weights[few] if weights.shape[0] > 1 else weights), np.array(p0),
            np.array(lower), np.array(upper))


def _robust_fused(f, jac, x, y, weights, p0, lower, upper, loss, f_scale, options, max_nfev,
                  full_output, backend, strict):
    """A huge fit with a robust loss: ``lm_fused`` with the loss's estimator code, the
    Jacobian never stored; the result in curve_fit's units (chi2 = Σ f_scale² rho, the
    covariance before scaling = the inverse of scipy's ``Jᵀ diag(rho' + 2 rho'' z) J``)."""
    f_scale = check.check_f_scale(f_scale, ())
    estimator = _codes.ROBUST_LOSSES[loss]
    choice = _dispatch.choose(backend)
    sample = slice(0, min(y.shape[0], _CHECK_SAMPLE))
    _check_model_at_p0(f, jac, x[..., sample], y[sample], p0, choice.requested,
                       y_checked=True)

    # A user's model on the engines that take point functions: its exact derivatives, as
    # for least squares (finite differences cost n_params more evaluations per pass).
    exact, exact_reason = None, None
    user_model = not isinstance(f, Model) and jac is None
    if user_model:
        exact, exact_reason = _forward_mode.exact_or_none(
            f, p0.shape[0], 1 if x.ndim == 1 else x.shape[0], x, p0)
        # numba compiles one fused pass for least squares and every loss (the quick start
        # of either serves both).
        choice = _dispatch.quick_choice(
            choice, f, p0.shape[0], x.ndim, 1,
            fused_sample=_fused_sample(x, y, weights, p0, lower, upper),
            evaluations=y.shape[0] * (p0.shape[0] + 1),
            max_evaluations=QUICK_START_MAX_EVALUATIONS_ROBUST,
            cached=lambda: _forward_mode.is_compiled_on_disk(exact, "fused"))

    def attempt(name):
        fit = None
        if exact is not None and name in _dispatch.POINT_FUNCTION_BACKENDS:
            fit = _fused.run_fused(name, f, jac, None, x, y, weights / f_scale, p0, lower,
                                   upper, options, max_nfev, full_output, exact=exact,
                                   estimator=estimator)
            if fit is not None:
                choice.notes.append(_forward_mode.EXACT_NOTE)
        if fit is None:
            prepared = _adapters.prepare(name, f, p0.shape[0], jac)
            prepared = _adapters.check_runs(name, prepared, x[..., sample], p0, f, jac)
            if exact is not None:  # (NumPy: on arrays of points)
                prepared = _dispatch.host_of(name).exact_prepared(
                    prepared, exact, p0.shape[0], x[..., sample], p0)
            if prepared.note is not None:
                choice.notes.append(prepared.note)
            if user_model and name in _dispatch.POINT_FUNCTION_BACKENDS:
                choice.notes.append(_forward_mode.finite_difference_note(exact_reason))
            fit = _fused.run_fused(name, f, jac, prepared, x, y, weights / f_scale, p0,
                                   lower, upper, options, max_nfev, full_output,
                                   estimator=estimator)
        if fit is None:
            raise BackendCannotRun(f"{name!r} cannot run the model on its fused pass")
        fit["chi2"] *= f_scale ** 2
        fit["pcov"] = fit["pcov"] / f_scale ** 2
        if fit["fvec"] is not None:
            fit["fvec"] = fit["fvec"] * f_scale  # weights * (f - y), without the f_scale
        return fit

    try:
        fit = _dispatch.run_with_fallback(choice, attempt, strict=strict)
    finally:
        if choice.after_call is not None:
            choice.after_call()
    return fit, choice


def _robust(f, jac, x, y, sigma, p0, lower, upper, loss, f_scale, options, max_nfev,
            backend, strict, unbounded):
    """A fit with a robust loss, by the batched solver with one fit (``lm_batch`` carries
    the losses on every engine); its result as ``_finish`` takes it.

    The batch's tolerance is the looser of ftol and xtol (not below 1e-13: its stopping
    tests are relative changes of the robust cost), its iteration budget max_nfev. A
    callable loss or jac runs on the NumPy reference engine, which calls them.
    """
    from autofit._fit_batch import fit_batch

    tol = max(min(options["ftol"], options["xtol"]), 1e-13)
    max_iter = int(min(max_nfev, 100_000))
    if callable(loss) or callable(jac):
        f_scale = check.check_f_scale(f_scale, ())
        choice = _dispatch.choose(backend)
        reason = "a callable loss" if callable(loss) else "a callable jac"
        choice = _dispatch.BackendChoice(requested="numpy", backend="numpy",
                                         source=f"{reason} with a robust loss (the NumPy "
                                                f"engine calls it; asked for "
                                                f"{choice.requested!r})")
        prepared = _adapters.prepare("numpy", f, p0.shape[0], jac)
        estimator = (loss if callable(loss) else _codes.ROBUST_LOSSES[loss])
        weights = (np.ones(y.shape[0]) if sigma is None
                   else check.check_sigma(sigma, y.shape[0])[0]) / f_scale
        params, chi2, n_iter, status, covariance = _dispatch.load("numpy").lm_batch(
            prepared.model, prepared.jacobian, prepared.jac_method, x.reshape(1, -1,
                                                                              y.shape[0]),
            y[None], weights[None], p0[None], lower[None], upper[None],
            np.ones(p0.shape[0], dtype=bool), estimator, tol, max_iter)
        params, chi2, status = params[0], chi2[0] * f_scale ** 2, int(status[0])
        covariance, n_iter = covariance[0] / f_scale ** 2, int(n_iter[0])
    else:
        # (A user's model on the default rule: fit_batch's quick start, the NumPy engine
        # until the model's calls have had their time, then numba's batched passes.)
        result = fit_batch(
            f, x, y, p0, sigma=sigma, bounds=None if unbounded else (lower, upper),
            loss=loss, f_scale=f_scale, tol=tol, max_iter=max_iter,
            jac="2-point" if jac in ("2-point", "3-point") else None, backend=backend,
            strict=strict, absolute_sigma=True, progress=False)
        choice = _dispatch.BackendChoice(requested=result.backend, backend=result.backend,
                                         source="fit_batch",
                                         given_reason=result.backend_reason)
        params, chi2, status = result.params, float(result.chi2), int(result.status)
        covariance, n_iter = result.covariance, int(result.n_iter)
    fitted = _adapters.prepare("numpy", f, p0.shape[0], None).model(x, params)
    weights = 1.0 if sigma is None else 1.0 / np.asarray(sigma, dtype=np.float64)
    singular = status == _codes.SINGULAR and np.isfinite(chi2)
    return {"params": np.array(params, dtype=np.float64), "chi2": float(chi2),
            "status": Status(_codes.MACHINE_PRECISION if singular else status),
            "nfev": n_iter + 1, "nit": n_iter,
            "pcov": np.array(covariance, dtype=np.float64), "rank": p0.shape[0],
            "fvec": weights * (fitted - y)}, choice


def _output_broadcasts(f, x, p0) -> bool:
    """Whether f returns fewer values than points that broadcast against them (a constant
    model's scalar, say), as scipy's ``f(xdata, *p) - ydata`` allows; tried on two points."""
    if isinstance(f, Model) or x.shape[-1] < 2:
        return False
    # NumPy's floating-point warnings are silenced; a warning of the user's own code would
    # come again from the check at p0 (on every point). Not warnings.catch_warnings: each
    # use resets Python's once-per-place record, and a fallback warning was then shown
    # on every call of a loop of fits instead of once.
    try:
        with np.errstate(all="ignore"):
            shape = np.shape(f(x[..., :2], *p0))
    except Exception:  # the full check at p0 reports what is wrong
        return False
    return shape != (2,) and shape in ((), (1,))


def _broadcasting(f):
    def model(x, *params):
        return np.broadcast_to(np.asarray(f(x, *params), dtype=np.float64), x.shape[-1:])

    model.__name__ = getattr(f, "__name__", "model")
    model.__signature__ = inspect.signature(f) if _has_signature(f) else None
    return model


# Complex step: f(p + i h e_j) = f(p) + i h ∂f/∂p_j + O(h²) with no subtraction, so the
# derivative is exact to rounding for any h small enough that h² vanishes next to 1.
_COMPLEX_STEP = 1e-20


def _complex_step(f, x, p0):
    """``jac='cs'``: the Jacobian of f by complex steps, ``(n_points, n_params)``; a
    ValueError when f does not carry complex parameters through."""
    def jacobian(x, *params):
        params = np.asarray(params, dtype=np.complex128)
        columns = []
        for j in range(params.shape[0]):
            shifted = params.copy()
            shifted[j] += 1j * _COMPLEX_STEP
            columns.append(np.imag(np.asarray(f(x, *shifted))) / _COMPLEX_STEP)
        return np.stack(columns, axis=-1)

    try:
        exact = jacobian(x, *p0)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"jac='cs' calls the model with complex parameters, and it raised "
                         f"{type(exc).__name__}: {exc}; use jac='2-point', '3-point' or a "
                         "callable") from exc
    # A model that drops the imaginary part somewhere (abs, real-only functions, casts)
    # gives wrong columns: check each against a forward difference at p0.
    base = np.asarray(f(x, *p0), dtype=np.float64)
    for j in range(p0.shape[0]):
        step = 1e-7 * max(abs(p0[j]), 1.0)
        shifted = p0.copy()
        shifted[j] += step
        difference = (np.asarray(f(x, *shifted), dtype=np.float64) - base) / step
        size = max(float(np.max(np.abs(difference))), float(np.max(np.abs(exact[..., j]))))
        if size > 0 and np.max(np.abs(difference - exact[..., j])) > 1e-3 * size:
            raise ValueError(f"jac='cs': the complex-step derivative for parameter {j} "
                             "disagrees with a finite difference at p0, so the model drops "
                             "the imaginary part of its parameters (abs, real-only functions "
                             "or casts to float): use jac='2-point', '3-point' or a callable")
    jacobian.__name__ = f"complex_step_{getattr(f, '__name__', 'model')}"
    return jacobian


def _transposed(jac):
    """``col_deriv=True``: jac returns (n_params, n_points), as MINPACK's column layout."""
    def jacobian(x, *params):
        return np.transpose(jac(x, *params))

    jacobian.__name__ = getattr(jac, "__name__", "jac")
    return jacobian


def _printing(f, y, weights, loss="linear", f_scale=1.0):
    """``verbose=2``: the model, printing the cost of each evaluation at all the points
    (finite-difference ones included) as the solver calls it: ½ Σ (w (f - y))², or under a
    robust loss scipy's ½ Σ f_scale² rho((w (f - y) / f_scale)²), the cost it minimises."""
    count = [0]
    print(f"{'evaluation':>10}  {'cost':>16}")

    def model(x, *params):
        value = f(x, *params)
        count[0] += 1
        output = np.asarray(value, dtype=np.float64)
        if output.shape == y.shape:  # not a chunk of the fused pass, nor the check at p0
            with np.errstate(all="ignore"):
                weighted = (weights @ (output - y) if weights.ndim == 2
                            else weights * (output - y))
                print(f"{count[0]:>10}  {_cost(weighted, loss, f_scale):>16.9e}")
        return value

    model.__name__ = getattr(f, "__name__", "model")
    model.__signature__ = inspect.signature(f) if _has_signature(f) else None
    return model


def _cost(weighted_residuals, loss, f_scale) -> float:
    """½ Σ f_scale² rho((r / f_scale)²) of the weighted residuals r (½ Σ r² for 'linear')."""
    if isinstance(loss, str) and loss == "linear":
        return 0.5 * float(weighted_residuals @ weighted_residuals)
    estimator = loss if callable(loss) else _codes.ROBUST_LOSSES[loss]
    z = (weighted_residuals / f_scale) ** 2
    rho = _rules.robust_loss_where(np, z, estimator)[0]
    return 0.5 * f_scale * f_scale * float(np.sum(rho))


def _without_x(f, n_points):
    """``(model, x)`` for ``xdata=None``: a model ``model(x, *p) = f(None, *p)`` and x the
    point indices."""
    def model(x, *params):
        return f(None, *params)

    model.__name__ = getattr(f, "__name__", "model")
    model.__signature__ = inspect.signature(f) if _has_signature(f) else None
    return model, np.arange(float(n_points))


def _has_signature(f) -> bool:
    try:
        inspect.signature(f)
    except (TypeError, ValueError):
        return False
    return True


def _n_params_hint(f, p0) -> int:
    if p0 is not None:
        return np.atleast_1d(check.as_float_array(p0, "p0")).shape[0]
    try:
        return check.count_parameters(f)  # scipy's count: defaults included
    except ValueError:
        return 1


def _default_p0(f, x, y, lower, upper):
    guess = getattr(f, "guess", None)
    n_variables = getattr(f, "n_variables", 1)
    if (guess is not None and getattr(f, "n_params", None) is not None
            and x.ndim == (1 if n_variables == 1 else 2)):
        return np.clip(f.guess(x, y), lower, upper)
    check.count_parameters(f)  # raises scipy's "Unable to determine number" error
    return check.feasible_start(lower, upper)


def _check_model_at_p0(f, jac, x, y, p0, backend, y_checked=False):
    """Evaluate the model (and a callable jac) once in Python at p0.

    The user's own exceptions propagate unchanged; wrong shapes and non-finite values are
    reported here, before any backend compiles anything. ``y_checked``: ydata is known to
    be finite already.
    """
    with _dispatch.host_of(backend).precision():
        f0 = np.asarray(f(x, *p0), dtype=np.float64)
        j0 = np.asarray(jac(x, *p0), dtype=np.float64) if callable(jac) else None
    if not y_checked and not np.isfinite(y).all():
        raise ValueError("Residuals are not finite in the initial point: "
                         + check.first_nonfinite(y, "ydata") + " (check_finite=False lets "
                         "it through); drop those points or use nan_policy='omit'")
    if j0 is not None and j0.shape != (y.shape[0], p0.shape[0]):
        raise ValueError(f"jac returned shape {j0.shape} at p0, but it must return "
                         f"(n_points, n_params) = ({y.shape[0]}, {p0.shape[0]})")
    if j0 is not None and not np.all(np.isfinite(j0)):
        raise ValueError(check.first_nonfinite(j0, "jac's output at p0")
                         + "; choose a p0 where the Jacobian is finite")
    if f0.shape != y.shape:
        raise ValueError(f"the model returned shape {f0.shape} at p0, but ydata has shape "
                         f"{y.shape}; f(xdata, *params) must return one value per point")
    if not np.isfinite(f0).all():
        raise ValueError(check.first_nonfinite(f0, "the model's output at p0") +
                         "; choose a p0 where the model is finite")


def _pad(x, y, weights, size):
    extra = size - y.shape[0]
    if extra == 0:
        return x, y, weights
    x = np.concatenate([x, np.repeat(x[..., -1:], extra, axis=-1)], axis=-1)
    y = np.concatenate([y, np.full(extra, y[-1])])
    if weights.ndim == 1:
        weights = np.concatenate([weights, np.zeros(extra)])
    else:
        weights = np.pad(weights, ((0, extra), (0, extra)))
    return x, y, weights


def _counting(fit: dict, spent: dict) -> dict:
    """``fit`` with the evaluations and iterations ``spent`` before it added to its own."""
    fit["nfev"] += spent["nfev"]
    fit["nit"] += spent["nit"]
    return fit


def _run_backend(name, prepared, x, y, weights, p0, lower, upper, options, max_nfev):
    """lm_solve (and its polish pass) plus the covariance, on one backend."""
    kernels = _dispatch.load(name)
    host = _dispatch.host_of(name)
    n_points = y.shape[0]
    x, y, weights = _pad(x, y, weights, host.padded_length(n_points))
    with host.precision():
        tolerances = (options["ftol"], options["xtol"], options["gtol"])
        params, chi2, status, nfev, n_iter = (
            _to_numpy(v) for v in kernels.lm_solve(
                prepared.model, prepared.jacobian, prepared.jac_method, x, y, weights, p0,
                lower, upper, *tolerances, max_nfev))
        if prepared.polish_method is not None and int(status) in _codes.CONVERGED_CODES:
            params, chi2, status, nfev_polish, n_polish = (
                _to_numpy(v) for v in kernels.lm_solve(
                    prepared.model, prepared.jacobian, prepared.polish_method, x, y, weights,
                    params, lower, upper, *tolerances, max(max_nfev - int(nfev), 1)))
            nfev, n_iter = int(nfev) + int(nfev_polish), int(n_iter) + int(n_polish)
        if int(status) in _codes.CONVERGED_CODES:
            jac = _jacobian(kernels, prepared, x, params, lower, upper)
            jac_w = weights @ jac if weights.ndim == 2 else weights[:, None] * jac
            # Without jax's padding rows: the rank threshold scales with the number of rows.
            jac_w = jac_w[:n_points]
            pcov, rank = (_to_numpy(v) for v in kernels.covariance_from_jacobian(jac_w))
        else:  # curve_fit raises for this fit; there is no covariance to estimate
            pcov, rank = np.full((p0.shape[0], p0.shape[0]), np.nan), 0
        f = _to_numpy(prepared.model(x, params))
    residuals = weights @ (f - y) if weights.ndim == 2 else weights * (f - y)
    return {"params": np.array(params, dtype=np.float64), "chi2": float(chi2),
            "status": Status(int(status)), "nfev": int(nfev), "nit": int(n_iter),
            "pcov": np.array(pcov, dtype=np.float64), "rank": int(rank),
            "fvec": np.array(residuals[:n_points], dtype=np.float64)}


def _run_compiled_model(name, f, jac, x, y, weights, p0, lower, upper, options, max_nfev,
                        exact=None):
    """A user's model on a backend whose host compiles it (numba): compiled once, run by
    the host's driver, which takes the model as a first-class function. With ``exact``
    point functions, the model and its exact Jacobian are built from them (where numba
    compiles them), else the user's ``f`` is compiled for whole arrays. Returns the fit
    and whether ``exact`` ran it."""
    host = _dispatch.host_of(name)
    kernels = _dispatch.load(name)
    x = np.ascontiguousarray(x)
    weights = np.ascontiguousarray(weights)
    exact_used = False
    if exact is not None:
        try:
            model, jacobian = host.prepare_points(*exact, p0.shape[0], x.ndim)
            methods = (_codes.JAC_ANALYTIC, None, _codes.JAC_ANALYTIC)
            exact_used = True
        except BackendCannotRun:
            pass
    if not exact_used:
        model, jacobian = host.prepare(f, jac, p0.shape[0], x.ndim)
        if callable(jac):
            methods = (_codes.JAC_ANALYTIC, None, _codes.JAC_ANALYTIC)
        else:
            methods = _adapters.finite_difference_methods(jac)
    params, chi2, status, nfev, n_iter, jac_at_params = host.solve(
        model, jacobian, *methods, x, y, weights, p0, lower, upper, options["ftol"],
        options["xtol"], options["gtol"], max_nfev)
    if int(status) == _codes.NONFINITE:
        # Maybe the model raised inside compiled code (the wrapper turns that into nan):
        # the same fit on the NumPy engine raises the user's own exception, if there is one.
        _run_backend("numpy", _adapters.prepare("numpy", f, p0.shape[0], jac), x, y, weights,
                     p0, lower, upper, options, max_nfev)
    if int(status) in _codes.CONVERGED_CODES:
        jac_w = (weights @ jac_at_params if weights.ndim == 2
                 else weights[:, None] * jac_at_params)
        pcov, rank = kernels.covariance_from_jacobian(jac_w)
    else:
        pcov, rank = np.full((p0.shape[0], p0.shape[0]), np.nan), 0
    f_fit = model(x, params)
    residuals = weights @ (f_fit - y) if weights.ndim == 2 else weights * (f_fit - y)
    return {"params": np.array(params, dtype=np.float64), "chi2": float(chi2),
            "status": Status(int(status)), "nfev": int(nfev), "nit": int(n_iter),
            "pcov": np.array(pcov, dtype=np.float64), "rank": int(rank),
            "fvec": residuals}, exact_used


def _jacobian(kernels, prepared, x, params, lower, upper):
    method = prepared.covariance_method
    if method == _codes.JAC_ANALYTIC:
        return prepared.jacobian(x, params)
    if method == _codes.JAC_AUTODIFF:
        return kernels.jacobian_autodiff(prepared.model, x, params)
    if method == _codes.JAC_CENTRAL:
        return kernels.jacobian_central(prepared.model, x, params, lower, upper)
    f0 = prepared.model(x, params)
    return kernels.jacobian_forward(prepared.model, x, params, f0, lower, upper)


def _outcome(fit, choice, y, n_params, absolute_sigma, max_nfev, verbose=0) -> SingleFit:
    """The engines' result as a SingleFit: the covariance scaled as scipy's (inf, with an
    OptimizeWarning, where it cannot be estimated; nan for a fit that did not converge)."""
    status = fit["status"]
    if verbose:
        print(f"{status.message} Function evaluations {fit['nfev']}, iterations "
              f"{fit['nit']}, final cost {0.5 * fit['chi2']:.4e} (backend "
              f"{choice.backend!r}).")
    infodict = _infodict(fit, choice)
    if not status.converged:
        detail = (f"The maximum number of function evaluations is exceeded "
                  f"(max_nfev = {max_nfev})." if status == Status.MAX_NFEV else status.message)
        return SingleFit(fit["params"], np.full((n_params, n_params), np.nan), infodict,
                         f"Optimal parameters not found: {detail}", status)
    pcov = fit["pcov"]
    warn_cov = not np.isfinite(pcov).all()
    if warn_cov:
        pcov = np.full((n_params, n_params), np.inf)
    elif not absolute_sigma:
        dof = y.shape[0] - n_params
        if dof > 0:
            pcov = pcov * (fit["chi2"] / dof)
        else:
            pcov = np.full((n_params, n_params), np.inf)
            warn_cov = True
    if warn_cov:  # the user's call -> curve_fit or fit -> solve -> here
        warnings.warn("Covariance of the parameters could not be estimated",
                      category=optimize_warning(), stacklevel=4)
    return SingleFit(fit["params"], pcov, infodict, status.message, status)


def _infodict(fit, choice) -> dict:
    return {"nfev": fit["nfev"], "fvec": fit["fvec"], "nit": fit["nit"],
            "status": fit["status"], "chi2": fit["chi2"], "rank": fit["rank"],
            "backend": choice.backend, "backend_reason": choice.reason}


def _to_numpy(value):
    return np.asarray(value)
