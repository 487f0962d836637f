"""Built-in models: use them wherever a model function is accepted.

Each is callable as ``model(x, *params)`` like any scipy model function, and carries what
the backends need to fit it fast: the name of its kernels (``model_<name>`` and
``jacobian_<name>`` on every backend, so its Jacobian is analytic), its parameter names, its
formula and a starting-point guess from the data.

Examples
--------
>>> import numpy as np, autofit
>>> x = np.linspace(0, 10, 200)
>>> y = autofit.models.gaussian(x, 3.0, 4.0, 0.8, 0.5)
>>> popt, pcov = autofit.curve_fit(autofit.models.gaussian, x, y, backend="numpy")
>>> np.allclose(popt, [3.0, 4.0, 0.8, 0.5])
True
"""

from __future__ import annotations

import numpy as np

from autofit import original
from autofit._declarations import MODELS


class Model:
    """A built-in model (see the module docstring)."""

    def __init__(self, name: str, guess):
        spec = MODELS[name]
        self.name = name
        self.param_names = spec.param_names
        self.formula = spec.formula
        self._guess = guess
        self._evaluate = getattr(original, f"model_{name}")
        self.__doc__ = f"{name}: y = {spec.formula}"

    @property
    def n_params(self) -> int | None:
        return None if self.param_names is None else len(self.param_names)

    def __call__(self, x, *params):
        return self._evaluate(np.asarray(x, dtype=np.float64),
                              np.asarray(params, dtype=np.float64))

    def guess(self, x, y) -> np.ndarray:
        """A starting point from the data: ``(n_params,) float64``."""
        if self._guess is None:
            raise ValueError(f"the {self.name} model has no automatic starting point; pass "
                             "p0 (for the polynomial its length sets the degree)")
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        order = np.argsort(x)
        return np.asarray(self._guess(x[order], y[order]), dtype=np.float64)

    def __repr__(self) -> str:
        return f"<autofit model {self.name}: y = {self.formula}>"


def _guess_linear(x, y):
    slope, intercept = np.polyfit(x, y, 1)
    return slope, intercept


def _guess_exponential_decay(x, y):
    offset = y[-1]
    amplitude = y[0] - offset
    span = x[-1] - x[0]
    return amplitude, (3.0 / span if span > 0 else 1.0), offset


def _peak_guess(x, y):
    """amplitude, center, half width at half maximum, offset of one peak or dip."""
    median = np.median(y)
    is_dip = median - y.min() > y.max() - median
    index = int(np.argmin(y) if is_dip else np.argmax(y))
    offset = y.max() if is_dip else y.min()
    amplitude = y[index] - offset
    above_half = np.abs(y - offset) >= 0.5 * abs(amplitude)
    span = x[-1] - x[0]
    half_width = 0.5 * span * np.count_nonzero(above_half) / max(len(x), 1)
    return amplitude, x[index], max(half_width, span / (10.0 * max(len(x), 1))), offset


def _guess_gaussian(x, y):
    amplitude, center, hwhm, offset = _peak_guess(x, y)
    return amplitude, center, hwhm / np.sqrt(2.0 * np.log(2.0)), offset


linear = Model("linear", _guess_linear)
polynomial = Model("polynomial", None)
exponential_decay = Model("exponential_decay", _guess_exponential_decay)
gaussian = Model("gaussian", _guess_gaussian)
lorentzian = Model("lorentzian", _peak_guess)

BUILTIN: dict[str, Model] = {m.name: m for m in (linear, polynomial, exponential_decay,
                                                 gaussian, lorentzian)}
