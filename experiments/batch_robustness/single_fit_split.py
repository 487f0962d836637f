"""Do single fits reach the same minimum on every backend? (issue 10, item 6)

``curve_fit`` on 100 curves of the hard ODMR family of ``run.py``, once with the built-in
``multi_lorentzian(8)`` and once with the same model written by a user in NumPy, on the
numpy and the numba backends from the same starts. Built-in models run ``lm_solve`` on
both; a user's model runs, on numba, the fused pass with derivatives generated from its
source (no geodesic acceleration), handing over to ``lm_solve`` only when it stalls.

    python experiments/batch_robustness/single_fit_split.py       # ~1 min
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402  (this folder's benchmark: the families)

import autofit  # noqa: E402

N_FITS = 100


def odmr(f, *p):
    """The user's version of multi_lorentzian(8)."""
    out = np.full_like(f, p[24])
    for i in range(8):
        a, c, w = p[3 * i], p[3 * i + 1], p[3 * i + 2]
        out = out + a * w ** 2 / ((f - c) ** 2 + w ** 2)
    return out


def main() -> None:
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(2026)
    model, x, truth, start, noise = run._odmr_far(rng, N_FITS)
    y = run._data(model, x, truth, noise, rng)
    for label, function in (("built-in multi_lorentzian(8)", model), ("user model", odmr)):
        chi2 = {}
        for backend in ("numpy", "numba"):
            reached = np.full(N_FITS, np.inf)
            for k in range(N_FITS):
                try:
                    popt, _ = autofit.curve_fit(function, x, y[k], p0=start[k],
                                                backend=backend)
                    reached[k] = np.sum((model(x, *popt) - y[k]) ** 2)
                except (RuntimeError, ValueError):
                    pass
            chi2[backend] = reached
        relative = chi2["numba"] / chi2["numpy"] - 1.0
        print(f"{label:30s} numba ends above numpy on {np.mean(relative > run.WORSE):.0%} "
              f"of the curves, below on {np.mean(relative < -run.WORSE):.0%}")


if __name__ == "__main__":
    main()
