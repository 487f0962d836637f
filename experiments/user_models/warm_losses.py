"""A warm single fit of a user's own model on the NumPy engine (the engine that answers a
new model), least squares and robust losses, against scipy's ``curve_fit`` in the same
process.

A gaussian on a line, 3,000 points, 30 spectra (the peak's centre moving), with 5% spikes
of +1 to +4 or without; ``loss=..., f_scale=0.05, method='trf'`` for the robust losses.
Each figure is the best of 5 passes over the 30 spectra, per fit.

    python experiments/user_models/warm_losses.py

Writes ``warm_losses.json`` beside this file and prints a table.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit as scipy_curve_fit

import autofit


def model(x, a, mu, s, b, c):
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + b * x + c


def _spectra(spikes: bool):
    rng = np.random.default_rng(3)
    x = np.linspace(-5, 5, 3000)
    out = []
    for k in range(30):
        y = model(x, 2.0, 0.3 + 0.3 * np.sin(k), 0.8, 0.1, 0.5)
        y = y + 0.05 * rng.standard_normal(x.size)
        if spikes:
            where = rng.choice(x.size, 150, replace=False)
            y[where] += rng.uniform(1, 4, where.size)
        out.append(y)
    return x, out


def _per_fit(fit, x, spectra, options):
    best = np.inf
    for _ in range(5):
        began = time.perf_counter()
        for y in spectra:
            fit(model, x, y, [1.5, 0.0, 1.0, 0.0, 0.0], **options)
        best = min(best, (time.perf_counter() - began) / len(spectra))
    return best


def main():
    rows = []
    print("| data | loss | autofit (NumPy engine) | scipy | ratio |")
    print("|---|---|---|---|---|")
    for spikes, losses in ((False, ("linear",)), (True, ("linear", "soft_l1", "arctan"))):
        x, spectra = _spectra(spikes)
        for loss in losses:
            options = {} if loss == "linear" else {"loss": loss, "f_scale": 0.05,
                                                   "method": "trf"}
            ours = _per_fit(autofit.curve_fit, x, spectra, {**options, "backend": "numpy"})
            theirs = _per_fit(scipy_curve_fit, x, spectra, options)
            rows.append({"spikes": spikes, "loss": loss, "autofit_s": ours, "scipy_s": theirs})
            print(f"| {'5% spikes' if spikes else 'clean'} | {loss} | {ours * 1e3:.2f} ms | "
                  f"{theirs * 1e3:.2f} ms | {ours / theirs:.2f} |", flush=True)
    out = Path(__file__).with_name("warm_losses.json")
    out.write_text(json.dumps({"machine": f"{platform.machine()}, {platform.processor()}",
                               "python": platform.python_version(), "rows": rows},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
