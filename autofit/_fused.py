"""curve_fit's fused path: one large fit by ``lm_fused``, the Jacobian never stored.

:func:`autofit.curve_fit` calls :func:`run_fused` for problems of ``FUSED_MIN_POINTS``
points or more (or with ``fused=True``). It puts the model in the form the backend's
``lm_fused`` takes (its host's ``fused_model``: numba's point functions; NumPy's and jax's
the callables of :mod:`autofit._adapters`), runs it (finite differences: forward, then a
central polish, as the stored-Jacobian path does) and turns ``JᵀW²J`` into the covariance.
"""

from __future__ import annotations

import numpy as np

from autofit import _codes, _dispatch, _threads
from autofit._status import Status

# From this many points on, a fit first runs on every ``stride``-th point (a strided
# subsample of about COARSE_POINTS points, the stride at most COARSE_MAX_STRIDE; recursively
# for fits far larger), and the fit to all the points starts where that one ended, on the
# backends whose host says it pays (``COARSE_START``). A pass over the subsample costs
# 1/stride of a pass over all the points, and the full fit, started within the subsample's
# statistical error of its minimum, ends after about three passes instead of about six
# (``experiments/user_models``). Its minimum is the full data's, by the same stopping tests.
COARSE_MIN_POINTS = 500_000
COARSE_POINTS = 50_000
COARSE_MAX_STRIDE = 64
# The full fit's χ² per point above this multiple of the subsample's: the subsample missed
# what the data hold (a feature narrower than the stride), and the fit from p0 runs too.
COARSE_MISSED = 2.0


def _coarse_stride(n_points: int) -> int:
    """Every how many points the coarse fit takes (1: no coarse fit)."""
    if n_points < COARSE_MIN_POINTS:
        return 1
    return max(2, min(COARSE_MAX_STRIDE, n_points // COARSE_POINTS))


def _fit_from_coarse_start(lm_fused, model, jacobian, jac_method, x2, y, weights, p0, lower,
                           upper, tolerances, max_nfev, estimator, coarse):
    """``lm_fused``'s outputs for all the points, started (with ``coarse``) from the fit to
    a strided subsample when that one converged. nfev counts every fit's model evaluations
    (a subsample's as whole calls) within ``max_nfev`` (the subsample gets half of it).
    When the full fit ends with a χ² per point above ``COARSE_MISSED`` times the
    subsample's, it is also fitted from p0 and the lower χ² is kept."""
    stride = _coarse_stride(y.shape[0]) if coarse else 1

    def full(start, budget):
        return lm_fused(model, jacobian, jac_method, x2, y, weights, start, lower, upper,
                        *tolerances, max(budget, 1), estimator)

    if stride == 1:
        params, chi2, status, nfev, n_iter, information = full(p0, max_nfev)
        return params, chi2, status, int(nfev), int(n_iter), information
    sample_weights = weights if weights.shape[0] == 1 else weights[::stride]
    sample_y, sample_x = _threads.both(np.ascontiguousarray, y[::stride], x2[:, ::stride])
    sample = _fit_from_coarse_start(
        lm_fused, model, jacobian, jac_method, sample_x, sample_y,
        np.ascontiguousarray(sample_weights), p0, lower, upper, tolerances,
        max(max_nfev // 2, 1), estimator, coarse)
    spent, spent_iterations = sample[3], sample[4]
    if int(sample[2]) not in _codes.CONVERGED_CODES:
        sample = None
    fit = full(p0 if sample is None else np.asarray(sample[0], dtype=np.float64),
               max_nfev - spent)
    spent, spent_iterations = spent + int(fit[3]), spent_iterations + int(fit[4])
    if sample is not None and not (float(fit[1]) / y.shape[0]
                                   <= COARSE_MISSED * float(sample[1]) / sample_y.shape[0]):
        from_p0 = full(p0, max_nfev - spent)
        spent, spent_iterations = spent + int(from_p0[3]), spent_iterations + int(from_p0[4])
        if float(from_p0[1]) < float(fit[1]) or not np.isfinite(float(fit[1])):
            fit = from_p0
    params, chi2, status, _, _, information = fit
    return params, chi2, status, spent, spent_iterations, information


def run_fused(name, f, jac, prepared, x, y, weights, p0, lower, upper, options, max_nfev,
              full_output, exact=None, estimator=_codes.ESTIMATOR_LSE):
    """The fit as curve_fit's result dict, or None when this backend cannot run ``f`` on the
    fused path (curve_fit then takes the stored-Jacobian path on the same backend).

    ``exact``: ``(value, gradient)`` point functions with exact derivatives of a user's
    model (:mod:`autofit._forward_mode`), for the backends that take point functions; then
    ``prepared`` is None (nothing else is needed). ``estimator``: ``ESTIMATOR_LSE`` or a
    robust loss code (``weights`` already divided by f_scale); the covariance is then the
    pseudo-inverse of the robust information ``lm_fused`` returns.
    """
    kernels = _dispatch.load(name)
    host = _dispatch.host_of(name)
    n_params = p0.shape[0]
    x2 = x[None, :] if x.ndim == 1 else x  # a view: lm_fused takes (n_variables, n_points)
    if prepared is None:  # exact point functions: the user's f itself gives fvec
        model, jacobian, jac_method, polish_method = (*exact, _codes.JAC_ANALYTIC, None)

        def evaluate(x, params):
            return f(x, *params)
    else:
        model, jacobian = prepared.model, prepared.jacobian
        jac_method, polish_method = prepared.jac_method, prepared.polish_method
        evaluate = prepared.model
    if prepared is not None:
        form = host.fused_model(f, jac, prepared, n_params, x2.shape[0])
        if form is None:
            return None
        model, jacobian, jac_method, polish_method = form
    tolerances = (options["ftol"], options["xtol"], options["gtol"])
    with host.precision():
        try:
            params, chi2, status, nfev, n_iter, information = _fit_from_coarse_start(
                kernels.lm_fused, model, jacobian, jac_method, x2, y, weights, p0, lower,
                upper, tolerances, max_nfev, estimator, host.COARSE_START)
        except Exception as exc:
            if host.is_compile_error(exc):
                return None  # f does not compile as the fused pass takes it
            raise
        nfev, n_iter = int(nfev), int(n_iter)
        if polish_method is not None and int(status) in _codes.CONVERGED_CODES:
            polished = [np.asarray(v) for v in kernels.lm_fused(
                model, jacobian, polish_method, x2, y, weights, params, lower, upper,
                *tolerances, max(max_nfev - nfev, 1), estimator)]
            nfev, n_iter = nfev + int(polished[3]), n_iter + int(polished[4])
            # A polish that ends unconverged does not undo the converged fit: at a
            # parameter of ~1e-19 (noiseless data) its central step is below the model's
            # rounding, the column is zero and the damped system never factorises.
            if int(polished[2]) in _codes.CONVERGED_CODES:
                params, chi2, status, _, _, information = polished
        converged = int(status) in _codes.CONVERGED_CODES
        fvec = None
        if full_output or not converged:  # the size of the data: only when asked for
            f_fit = np.asarray(evaluate(x, params), dtype=np.float64)
            fvec = weights * (f_fit - y)
        if converged:
            pcov, rank = kernels.covariance_from_information(
                np.asarray(information, dtype=np.float64))
            pcov, rank = np.asarray(pcov, dtype=np.float64), int(rank)
        else:
            pcov, rank = np.full((n_params, n_params), np.nan), 0
    return {"params": np.array(params, dtype=np.float64), "chi2": float(chi2),
            "status": Status(int(status)), "nfev": nfev, "nit": n_iter, "pcov": pcov,
            "rank": rank, "fvec": fvec}
