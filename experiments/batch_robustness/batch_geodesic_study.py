"""Does geodesic acceleration, written the way a batch kernel can compute it, close the gap?

A NumPy copy of the batch LM of ``autofit.original.batch`` (least squares), run per curve,
as it is and with Transtrum and Sethna's geodesic acceleration added the way a batch kernel
can compute it: no residual vector is kept, only sums. With the batch's sign convention
(``g = J_wᵀ W (y - f)``, the step solves ``(H + λ D) δ = g``), the acceleration along the
velocity ``v`` solves

    (H + λ D) a = (2 / h) ((g_probe - g) / h + H v),   g_probe = J_w(p)ᵀ W (y - f(p + h v)),

one more pass over the points per iteration (the model at the probe, the Jacobian at p),
and the step becomes ``v + a / 2`` unless ``2 |a| > 0.75 |v|`` (then it is treated as a
rejected step), as in ``lm_solve``. Forward differences as the batch engines use for a
user's model; starts and scipy's reference as in ``run.py``.

    python experiments/batch_robustness/batch_geodesic_study.py     # ~3 min
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402  (this folder's benchmark: the families and scipy's reference)

from autofit import _codes  # noqa: E402
from autofit.original.jacobians import jacobian_forward  # noqa: E402
from autofit.original.linalg import cholesky_solve  # noqa: E402

STUDIES = {"8 Lorentzians (ODMR), centres 1 linewidth sd": (run._odmr_far, 100),
           "2 gaussians (user NumPy model)": (run._close_gaussians, 200)}


def _pass(model, x, y, p):
    f = model(x, *p)
    jac = jacobian_forward(lambda xx, q: model(xx, *q), x, p, f, np.full(p.size, -np.inf),
                           np.full(p.size, np.inf))
    r = y - f
    return r @ r, jac.T @ r, jac.T @ jac, jac


def fit(model, x, y, p0, geodesic, max_iter=200, tol=1e-8):
    """The batch LM of autofit.original.batch for one curve (unbounded, all free), with or
    without the acceleration (``geodesic``: False, True, or "after a rejection": from the
    first rejected step on); returns chi2, iterations, passes over the points, status."""
    accelerate = geodesic is True
    p = p0.copy()
    chi2, g, h, jac = _pass(model, x, y, p)
    scale = np.diag(h).copy()
    damping = _codes.BATCH_INITIAL_DAMPING
    n_iter, passes, status = 0, 1, _codes.RUNNING
    while status == _codes.RUNNING:
        if n_iter >= max_iter:
            status = _codes.MAX_ITERATIONS
            break
        n_iter += 1
        system = h + np.diag(damping * scale)
        step, ok = cholesky_solve(system, g)
        if ok and accelerate:
            probe = p + _codes.GEODESIC_PROBE * step
            g_probe = jac.T @ (y - model(x, *probe))
            passes += 1
            rhs = (2.0 / _codes.GEODESIC_PROBE) * (
                (g_probe - g) / _codes.GEODESIC_PROBE + h @ step)
            acceleration, ok = cholesky_solve(system, rhs)
            velocity_norm = np.sqrt(np.sum(scale * step * step))
            acceleration_norm = np.sqrt(np.sum(scale * acceleration * acceleration))
            ok = ok and 2.0 * acceleration_norm <= _codes.GEODESIC_MAX_RATIO * velocity_norm
            step = step + 0.5 * acceleration
        if not ok:
            damping *= _codes.BATCH_DAMPING_UP
            if damping > _codes.MAX_DAMPING:
                status = _codes.SINGULAR
            continue
        trial = p + step
        small_step = np.sum(scale * step * step) <= tol * tol * np.sum(scale * p * p)
        trial_chi2, trial_g, trial_h, trial_jac = _pass(model, x, y, trial)
        passes += 1
        predicted = step @ (h @ step) + 2.0 * damping * np.sum(scale * step * step)
        small_reduction = (abs(chi2 - trial_chi2) <= tol * trial_chi2
                           and predicted <= tol * trial_chi2)
        if trial_chi2 <= chi2:
            p, chi2, g, h, jac = trial, trial_chi2, trial_g, trial_h, trial_jac
            scale = np.maximum(scale, np.diag(h))
            damping = max(damping * _codes.BATCH_DAMPING_DOWN, _codes.BATCH_MIN_DAMPING)
            if small_reduction or small_step:
                status = _codes.CONVERGED_FTOL
        else:
            accelerate = bool(geodesic)
            if small_step:
                status = _codes.CONVERGED_XTOL
            damping *= _codes.BATCH_DAMPING_UP
            if status == _codes.RUNNING and damping > _codes.MAX_DAMPING:
                status = _codes.MACHINE_PRECISION
    return chi2, n_iter, passes, status


def main() -> None:
    warnings.simplefilter("ignore")
    for family, (make, n_fits) in STUDIES.items():
        rng = np.random.default_rng(2026)
        model, x, truth, start, noise = make(rng, n_fits)
        y = run._data(model, x, truth, noise, rng)
        scipy_chi2 = run._scipy(model, x, y, start, False)
        for geodesic in (False, True, "after a rejection"):
            begin = time.perf_counter()
            out = np.array([fit(model, x, y[k], start[k], geodesic) for k in range(n_fits)])
            chi2, n_iter, passes, status = out.T
            label = {False: "batch LM as it is", True: "batch LM + geodesic acceleration",
                     "after a rejection": "+ acceleration after a rejection"}[geodesic]
            print(f"{family:45s} {label:34s} converged "
                  f"{np.isin(status, _codes.CONVERGED_CODES).mean():6.1%}  worse than scipy "
                  f"{np.mean(chi2 > scipy_chi2 * (1 + run.WORSE)):6.1%}  better "
                  f"{np.mean(chi2 < scipy_chi2 * (1 - run.WORSE)):6.1%}  passes median "
                  f"{np.median(passes):.0f}, mean {np.mean(passes):.1f}, 99th pct. "
                  f"{np.percentile(passes, 99):.0f}  ({time.perf_counter() - begin:.1f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
