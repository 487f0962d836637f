"""The README's robust-fitting picture: one ODMR-like spectrum with hot pixels fitted with
loss='linear' and loss='soft_l1', and across a batch of such spectra the error of the fitted
dip positions.

    python experiments/robust_batch/picture.py     # writes robust_fit.png beside this file
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from run import F_SCALE, odmr_family  # noqa: E402

import autofit  # noqa: E402

N_FITS = 2000


def main():
    rng = np.random.default_rng(3)
    model, x, y, start, truth, _ = odmr_family(rng, N_FITS)
    fits = {loss: autofit.fit_batch(model, x, y, start, loss=loss, f_scale=F_SCALE,
                                    backend="numpy", progress=False)
            for loss in ("linear", "soft_l1")}
    figure, (curve, errors) = plt.subplots(1, 2, figsize=(10, 3.8))
    shown = 4
    fine = np.linspace(x[0], x[-1], 600)
    curve.plot(x, y[shown], ".", color="0.45", label="data (6 hot pixels)")
    curve.plot(fine, model(fine, *truth[shown]), color="k", lw=1, ls=":", label="truth")
    for loss, colour in (("linear", "tab:red"), ("soft_l1", "tab:blue")):
        curve.plot(fine, model(fine, *fits[loss].params[shown]), color=colour,
                   label=f"loss='{loss}'")
    curve.set_ylim(0.3, float(np.max(y[shown])) + 0.2)
    curve.set_xlabel("frequency (GHz)")
    curve.set_ylabel("signal")
    curve.legend(fontsize=8, loc="lower right")
    curve.set_title("one spectrum")
    bins = np.logspace(-6, -1, 60)
    for loss, colour in (("linear", "tab:red"), ("soft_l1", "tab:blue")):
        error = np.abs(fits[loss]["center_1"] - truth[:, 1]) * 1e3
        errors.hist(np.maximum(error, 1e-6), bins=bins * 1e3, color=colour, alpha=0.6,
                    label=f"loss='{loss}': median {np.median(error):.2f} MHz")
    errors.set_xscale("log")
    errors.set_xlabel("|fitted - true| first dip position (MHz)")
    errors.set_ylabel("fits")
    errors.set_title(f"{N_FITS} spectra, fit_batch")
    errors.legend(fontsize=8)
    figure.tight_layout()
    out = Path(__file__).with_name("robust_fit.png")
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
