"""curve_fit's fused path: one large fit by ``lm_fused``, the Jacobian never stored.

:func:`autofit.curve_fit` calls :func:`run_fused` for problems of ``FUSED_MIN_POINTS``
points or more (or with ``fused=True``). It puts the model in the form the backend's
``lm_fused`` takes (its host's ``fused_model``: numba's point functions; NumPy's and jax's
the callables of :mod:`autofit._adapters`), runs it (finite differences: forward, then a
central polish, as the stored-Jacobian path does) and turns ``JᵀW²J`` into the covariance.
"""

from __future__ import annotations

import numpy as np

from autofit import _codes, _dispatch
from autofit._status import Status


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
            params, chi2, status, nfev, n_iter, information = kernels.lm_fused(
                model, jacobian, jac_method, x2, y, weights, p0, lower, upper, *tolerances,
                max_nfev, estimator)
        except Exception as exc:
            if host.is_compile_error(exc):
                return None  # f does not compile as the fused pass takes it
            raise
        nfev, n_iter = int(nfev), int(n_iter)
        if polish_method is not None and int(status) in _codes.CONVERGED_CODES:
            params, chi2, status, nfev_polish, n_polish, information = (
                np.asarray(v) for v in kernels.lm_fused(
                    model, jacobian, polish_method, x2, y, weights, params, lower,
                    upper, *tolerances, max(max_nfev - nfev, 1), estimator))
            nfev, n_iter = nfev + int(nfev_polish), n_iter + int(n_polish)
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
