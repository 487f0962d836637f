"""Which ingredient of the single-fit solver keeps it out of the minima the batch kernels find?

On the hard ODMR family of ``run.py`` (8 Lorentzian dips, centres one linewidth off as a
standard deviation), autofit's single-fit LM (``autofit.original.lm_solve``: MINPACK
scaling, Nielsen damping, geodesic acceleration) is run as it is and with the geodesic
acceleration switched off (the step left as the LM velocity), from the same starts as
scipy's ``curve_fit``; the batch kernels (Gpufit damping, no acceleration) are run by
``run.py``.

    python experiments/batch_robustness/geodesic_study.py          # 100 fits, ~1 min
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402  (this folder's benchmark: the families and scipy's reference)

import autofit.original.lm as reference_lm  # noqa: E402
from autofit import _codes  # noqa: E402

N_FITS = 100


def _solve_all(model, x, y, start):
    chi2, n_iter, status = [], [], []
    n_params = start.shape[1]
    for k in range(len(y)):
        _, c, s, _, it = reference_lm.lm_solve(
            lambda xx, p: model(xx, *p), None, _codes.JAC_FORWARD, x, y[k], np.ones(x.size),
            start[k], np.full(n_params, -np.inf), np.full(n_params, np.inf), 1e-8, 1e-8, 0.0,
            100_000)
        chi2.append(c)
        n_iter.append(it)
        status.append(s)
    return np.array(chi2), np.array(n_iter), np.array(status)


def main() -> None:
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(2026)
    model, x, truth, start, noise = run._odmr_far(rng, N_FITS)
    y = run._data(model, x, truth, noise, rng)
    scipy_chi2 = run._scipy(model, x, y, start, False)
    with_acceleration = reference_lm._geodesic_step

    def velocity_only(*args):
        return args[-1], True  # the LM step, untouched

    for label, geodesic in (("lm_solve", with_acceleration),
                            ("lm_solve without geodesic acceleration", velocity_only)):
        reference_lm._geodesic_step = geodesic
        begin = time.perf_counter()
        chi2, n_iter, status = _solve_all(model, x, y, start)
        print(f"{label:40s} converged {np.isin(status, _codes.CONVERGED_CODES).mean():6.1%}  "
              f"worse than scipy {np.mean(chi2 > scipy_chi2 * (1 + run.WORSE)):6.1%}  "
              f"better {np.mean(chi2 < scipy_chi2 * (1 - run.WORSE)):6.1%}  iterations "
              f"median {np.median(n_iter):.0f}, 99th percentile "
              f"{np.percentile(n_iter, 99):.0f}  ({time.perf_counter() - begin:.1f} s)")
    reference_lm._geodesic_step = with_acceleration


if __name__ == "__main__":
    main()
