"""Built-in models: use them wherever a model function is accepted.

Each is callable as ``model(x, *params)`` like any scipy model function, and carries what
the backends need to fit it fast: the name of its kernels (``model_<name>`` and
``jacobian_<name>`` on every backend, so its Jacobian is analytic), its parameter names, its
formula, the number of rows of its ``x`` (``n_variables``: 2 for the models of an image,
whose x is ``(2, n_points)``, the x and y coordinate of each point) and a starting-point
guess from the data.

``guess(x, y)`` is vectorised: ``y`` may hold many curves, ``(..., n_points)``, measured at
the same ``x``, and the result is ``(..., n_params)``, computed with array operations over
all curves at once. Guesses are finite for any finite data (flat, constant, a single spike)
and close enough for Levenberg-Marquardt to converge from on realistic noisy data.

``BUILTIN`` maps each name to its model. The polynomial and the multi-Lorentzian have no
fixed number of parameters there (it follows from the length of ``p0``, and they have no
guess); :func:`get` and :func:`multi_lorentzian` give sized ones, with a guess.

Examples
--------
>>> import numpy as np, autofit
>>> x = np.linspace(0, 10, 200)
>>> y = autofit.models.gaussian(x, 3.0, 4.0, 0.8, 0.5)
>>> popt, pcov = autofit.curve_fit(autofit.models.gaussian, x, y, backend="numpy")
>>> np.allclose(popt, [3.0, 4.0, 0.8, 0.5])
True

Guesses for a stack of curves at once:

>>> curves = np.stack([autofit.models.gaussian(x, a, 5.0, 1.0, 0.0) for a in (1, 2, 3)])
>>> autofit.models.gaussian.guess(x, curves).shape
(3, 4)
"""

from __future__ import annotations

import copy

import numpy as np

from autofit import _dispatch
from autofit._declarations import MODELS


class Model:
    """A built-in model (see the module docstring).

    ``param_names`` overrides the declared names, for the sized variants of the models whose
    number of parameters is free (``get("polynomial:3")``, ``multi_lorentzian(2)``).
    """

    def __init__(self, name: str, guess, param_names: tuple[str, ...] | None = None):
        spec = MODELS[name]
        self.name = name
        self.param_names = spec.param_names if param_names is None else tuple(param_names)
        self.formula = spec.formula
        self.n_variables = spec.n_variables
        self._guess = guess
        self._evaluate = getattr(_dispatch.load("numpy"), f"model_{name}")
        self.__doc__ = f"{name}: y = {spec.formula}"

    @property
    def n_params(self) -> int | None:
        return None if self.param_names is None else len(self.param_names)

    def __call__(self, x, *params):
        """``model(x, p1, p2, ...)``; parameters may be arrays of one common (broadcast) shape
        S, giving one curve per parameter set: the result is then ``S + (n_points,)``."""
        x = np.asarray(x, dtype=np.float64)
        arrays = np.broadcast_arrays(*(np.asarray(p, dtype=np.float64) for p in params))
        shape = arrays[0].shape if arrays else ()
        if shape == ():
            return self._evaluate(x, np.asarray(params, dtype=np.float64))
        stacked = np.stack([a.reshape(-1) for a in arrays], axis=-1)
        curves = [self._evaluate(x, row) for row in stacked]
        return np.stack(curves).reshape(shape + curves[0].shape)

    def guess(self, x, y) -> np.ndarray:
        """A starting point from the data.

        Parameters
        ----------
        x : (n_points,) or (n_variables, n_points) array_like
            Shared by all curves.
        y : (..., n_points) array_like
            One curve, or many stacked along the leading axes.

        Returns
        -------
        p0 : (..., n_params) float64
        """
        if self._guess is None:
            size = "degree" if self.name == "polynomial" else "n_peaks"
            raise ValueError(f"the {self.name} model has no automatic starting point: its "
                             f"number of parameters is free; pass p0 (its length sets the "
                             f"{size}) or use autofit.models.get('{self.name}:<{size}>')")
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        expected = "(n_points,)" if self.n_variables == 1 else f"({self.n_variables}, n_points)"
        if x.ndim != (1 if self.n_variables == 1 else 2) or (
                self.n_variables > 1 and x.shape[0] != self.n_variables):
            raise ValueError(f"the {self.name} model takes x of shape {expected}, got "
                             f"{x.shape}")
        if y.ndim == 0 or y.shape[-1] != x.shape[-1] or x.shape[-1] == 0:
            raise ValueError(f"y must be (..., n_points) with the {x.shape[-1]} points of x "
                             f"(at least one), got shape {y.shape}")
        # Sorted x (the usual case) skips the argsort and the copies of x and y: at 1e7
        # points they cost more than a pass of the fit, the check a fraction of one.
        if self.n_variables == 1 and not np.all(x[:-1] <= x[1:]):
            order = np.argsort(x, kind="stable")
            x, y = x[order], y[..., order]
        return np.asarray(self._guess(x, y), dtype=np.float64)

    def __repr__(self) -> str:
        return f"<autofit model {self.name}: y = {self.formula}>"


# Helpers shared by the guesses. x is sorted (1-D models) and shared by every curve; y is
# (..., n_points). Every division is guarded, so that flat or constant data give finite
# numbers.


def _span(x) -> float:
    """Width of the range of sorted 1-D x (1 when all points coincide)."""
    span = float(x[-1] - x[0])
    return span if span > 0 else 1.0


def _stack(*columns) -> np.ndarray:
    return np.stack(np.broadcast_arrays(*columns), axis=-1).astype(np.float64)


def _safe(denominator, fallback=1.0):
    return np.where(denominator != 0, denominator, fallback)


def _take(values, index):
    """values[..., index[...]] for an index per curve."""
    return np.take_along_axis(values, index[..., np.newaxis], axis=-1)[..., 0]


def _subsample(x, y, n_max=512):
    """At most n_max evenly chosen points (the guesses need the shape, not every point)."""
    n = x.shape[-1]
    if n <= n_max:
        return x, y
    keep = np.unique(np.linspace(0, n - 1, n_max).round().astype(np.intp))
    return x[..., keep], y[..., keep]


def _best_of(bases, y):
    """Linear least squares of y on each candidate basis; the best candidate per curve.

    bases : (n_candidates, n_points, m), shared by all curves. Returns the index of the
    candidate with the smallest residual and its coefficients ``(..., m)``: a grid search
    over the nonlinear parameters with the linear ones (amplitudes, offset) solved exactly.
    """
    q, r = np.linalg.qr(bases)
    n_candidates, n_points, m = q.shape
    # One matrix product for all curves and candidates: (..., n_points) @ (n_points, K m).
    projection = (y @ q.transpose(1, 0, 2).reshape(n_points, n_candidates * m)).reshape(
        *y.shape[:-1], n_candidates, m)
    best = np.argmax(np.sum(projection * projection, axis=-1), axis=-1)
    chosen = np.take_along_axis(projection, best[..., np.newaxis, np.newaxis], axis=-2)[..., 0, :]
    coefficients = np.einsum("...ij,...j->...i", np.linalg.pinv(r)[best], chosen)
    return best, coefficients


def _solve_normal(basis, y):
    """Least squares of y on a per-curve basis ``(..., n_points, m)``: coefficients (..., m).

    Solved through the normal equations scaled to unit diagonal and nudged by 1e-10, so
    that a degenerate basis (a zero column) gives finite coefficients.
    """
    norms = np.sqrt(np.sum(basis * basis, axis=-2))
    norms = np.where(norms > 0, norms, 1.0)
    scaled = basis / norms[..., np.newaxis, :]
    matrix = np.swapaxes(scaled, -1, -2) @ scaled + 1e-10 * np.eye(basis.shape[-1])
    rhs = np.einsum("...nm,...n->...m", scaled, y)
    return np.linalg.solve(matrix, rhs[..., np.newaxis])[..., 0] / norms


def _half_width(x, height, index):
    """Half width at half maximum of the peak of ``height`` (>= 0) at ``index``.

    The run of points at or above half the peak's height that contains the peak, measured
    halfway between its innermost and outermost bounds; at least a quarter of a mean
    spacing.
    """
    n = x.shape[-1]
    positions = np.arange(n)
    half = 0.5 * _take(height, index)[..., np.newaxis]
    below = height < half
    left = np.max(np.where(below & (positions < index[..., np.newaxis]), positions, -1),
                  axis=-1)
    right = np.min(np.where(below & (positions > index[..., np.newaxis]), positions, n),
                   axis=-1)
    inner = x[right - 1] - x[left + 1]
    outer = x[np.minimum(right, n - 1)] - x[np.maximum(left, 0)]
    return np.maximum(0.25 * (inner + outer), 0.25 * _span(x) / max(n - 1, 1))


def _peak(x, y):
    """amplitude, center, half width at half maximum and offset of one peak or dip."""
    median = np.median(y, axis=-1)
    low, high = np.min(y, axis=-1), np.max(y, axis=-1)
    is_dip = median - low > high - median
    offset = np.where(is_dip, high, low)
    sign = np.where(is_dip, -1.0, 1.0)
    height = sign[..., np.newaxis] * (y - offset[..., np.newaxis])  # the peak made positive
    index = np.argmax(height, axis=-1)
    return sign * _take(height, index), x[index], _half_width(x, height, index), offset


# The guesses, one per model.


def _guess_linear(x, y):
    mean_x = np.mean(x)
    dx = x - mean_x
    sxx = float(dx @ dx)
    slope = (y @ dx) / sxx if sxx > 0 else np.zeros(y.shape[:-1])
    return _stack(slope, np.mean(y, axis=-1) - slope * mean_x)


def _sized_polynomial_guess(n_params):
    def guess(x, y):
        # The least-squares fit itself (the model is linear), for all curves in one solve;
        # the columns of x**j are scaled to unit norm for conditioning.
        powers = x[:, np.newaxis] ** np.arange(n_params)
        norms = np.sqrt(np.sum(powers * powers, axis=0))
        norms = np.where(norms > 0, norms, 1.0)
        columns = y.reshape(-1, x.shape[0]).T
        coefficients = np.linalg.lstsq(powers / norms, columns, rcond=None)[0]
        return (coefficients / norms[:, np.newaxis]).T.reshape(*y.shape[:-1], n_params)

    return guess


_RATES = np.geomspace(0.05, 200.0, 48)  # rate * span of the candidate decays


def _exponential_basis(x, rates):
    """exp(-rate (x - x[0])) for each rate: (n_rates, n_points)."""
    return np.exp(-np.multiply.outer(rates, x - x[0]))


def _from_shifted(amplitude, rate, x0):
    # a exp(-r (x - x0)) = (a exp(r x0)) exp(-r x); the exponent is clipped to stay finite.
    return amplitude * np.exp(np.clip(rate * x0, -700.0, 700.0))


def _refine_decay(xs, ys, amplitude, rate, offset, n_steps=2):
    """Gauss-Newton steps for ``amplitude exp(-rate (xs - xs[0])) + offset`` on the sample,
    each kept only for the curves whose squared residual it lowers (and stays finite).

    The grid's rate is only within a few percent; from the refined one, a fit of 1e6 points
    needs one pass fewer (measured in ``experiments/large_fit``).
    """
    shifted = xs - xs[0]

    def residual(a, r, c):
        return ys - (a[..., None] * np.exp(-r[..., None] * shifted) + c[..., None])

    with np.errstate(all="ignore"):
        current = np.sum(residual(amplitude, rate, offset) ** 2, axis=-1)
        for _ in range(n_steps):
            decay = np.exp(-rate[..., None] * shifted)
            jac = np.stack(np.broadcast_arrays(decay, -amplitude[..., None] * shifted * decay,
                                               np.ones_like(decay)), axis=-1)
            jtj = np.swapaxes(jac, -1, -2) @ jac
            # A little damping keeps collinear columns (flat data) solvable.
            jtj += (1e-9 * np.trace(jtj, axis1=-2, axis2=-1)[..., None, None] + 1e-300) * np.eye(3)
            rhs = np.einsum("...ij,...i->...j", jac, residual(amplitude, rate, offset))
            step = np.linalg.solve(jtj, rhs[..., None])[..., 0]
            trial = amplitude + step[..., 0], rate + step[..., 1], offset + step[..., 2]
            trial_ssr = np.sum(residual(*trial) ** 2, axis=-1)
            better = np.isfinite(trial_ssr) & (trial_ssr < current) & np.all(
                np.isfinite(step), axis=-1)
            amplitude, rate, offset = (np.where(better, t, v) for t, v in
                                       zip(trial, (amplitude, rate, offset)))
            current = np.where(better, trial_ssr, current)
    return amplitude, rate, offset


def _guess_exponential_decay(x, y):
    span = _span(x)
    xs, ys = _subsample(x, y)
    rates = _RATES / span
    bases = np.stack([_exponential_basis(xs, rates), np.ones((rates.size, xs.size))], axis=-1)
    best, coefficients = _best_of(bases, ys)
    amplitude, rate, offset = _refine_decay(xs, ys, coefficients[..., 0], rates[best],
                                            coefficients[..., 1])
    return _stack(_from_shifted(amplitude, rate, x[0]), rate, offset)


def _guess_double_exponential(x, y):
    span = _span(x)
    xs, ys = _subsample(x, y)
    rates = np.geomspace(0.1, 100.0, 16) / span
    slow, fast = np.triu_indices(rates.size, 1)  # every pair of rates, the faster second
    decays = _exponential_basis(xs, rates)
    bases = np.stack([decays[fast], decays[slow], np.ones((fast.size, xs.size))], axis=-1)
    best, coefficients = _best_of(bases, ys)
    rate1, rate2 = rates[fast[best]], rates[slow[best]]
    return _stack(_from_shifted(coefficients[..., 0], rate1, x[0]), rate1,
                  _from_shifted(coefficients[..., 1], rate2, x[0]), rate2,
                  coefficients[..., 2])


def _guess_stretched_exponential(x, y):
    # Defined for x >= 0: the points at negative x (where the model is nan) are not used;
    # if every x is negative, their magnitudes give at least a finite guess.
    keep = x >= 0
    if not keep.any():
        keep = np.ones(x.shape, dtype=bool)
    xs, ys = _subsample(np.abs(x[keep]), y[..., keep])
    x_max = float(np.max(xs)) if np.max(xs) > 0 else 1.0
    rates = np.geomspace(0.1, 30.0, 20) / x_max
    betas = np.array([0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2])
    rate_grid, beta_grid = (g.ravel() for g in np.meshgrid(rates, betas, indexing="ij"))
    stretched = np.exp(-(np.multiply.outer(rate_grid, xs)) ** beta_grid[:, np.newaxis])
    bases = np.stack([stretched, np.ones(stretched.shape)], axis=-1)
    best, coefficients = _best_of(bases, ys)
    return _stack(coefficients[..., 0], rate_grid[best], beta_grid[best], coefficients[..., 1])


def _guess_gaussian(x, y):
    amplitude, center, hwhm, offset = _peak(x, y)
    return _stack(amplitude, center, hwhm / np.sqrt(2.0 * np.log(2.0)), offset)


def _guess_lorentzian(x, y):
    return _stack(*_peak(x, y))


def _guess_pseudo_voigt(x, y):
    amplitude, center, hwhm, offset = _peak(x, y)
    return _stack(amplitude, center, hwhm, 0.5, offset)


def _multi_lorentzian_guess(n_peaks):
    def guess(x, y):
        # The n highest peaks (or deepest dips) are taken one at a time, each subtracted
        # as a Lorentzian and a window around it masked. Many overlapping lines leave
        # little of the background in view: it is first taken as the 90th percentile on
        # the side away from the lines, then as the median of the data minus the lines
        # found, and the lines are taken again from there.
        median = np.median(y, axis=-1)
        is_dip = median - np.min(y, axis=-1) > np.max(y, axis=-1) - median
        sign = np.where(is_dip, -1.0, 1.0)
        offset = np.where(is_dip, np.quantile(y, 0.9, axis=-1), np.quantile(y, 0.1, axis=-1))
        for _ in range(2):
            amplitudes, centers, hwhms, lines = _lines(x, y - offset[..., np.newaxis], sign,
                                                       n_peaks)
            offset = np.median(y - lines, axis=-1)
        order = np.argsort(centers, axis=-1, kind="stable")
        columns = [np.take_along_axis(a, order, axis=-1)
                   for a in (amplitudes, centers, hwhms)]
        params = np.stack(columns, axis=-1).reshape(*y.shape[:-1], 3 * n_peaks)
        return np.concatenate([params, offset[..., np.newaxis]], axis=-1)

    return guess


def _lines(x, residual, sign, n_peaks):
    """Greedy search for n_peaks Lorentzians of the given sign in residual.

    Returns their amplitudes, centers and half widths, each ``(..., n_peaks)``, and their
    sum ``(..., n_points)``.
    """
    height = sign[..., np.newaxis] * residual
    available = np.ones(residual.shape, dtype=bool)
    peaks = []
    for _ in range(n_peaks):
        index = np.argmax(np.where(available, height, -np.inf), axis=-1)
        top = _take(height, index)
        hwhm = _half_width(x, height, index)
        center = x[index]
        d = x - center[..., np.newaxis]
        g2 = (hwhm * hwhm)[..., np.newaxis]
        height = height - top[..., np.newaxis] * g2 / (d * d + g2)
        available &= np.abs(d) > hwhm[..., np.newaxis]
        peaks.append((sign * top, center, hwhm))
    amplitudes, centers, hwhms = (np.stack(p, axis=-1) for p in zip(*peaks))
    lines = sign[..., np.newaxis] * (sign[..., np.newaxis] * residual - height)
    return amplitudes, centers, hwhms, lines


def _uniform(x, y):
    """y linearly interpolated onto n evenly spaced points over the range of x."""
    n = x.shape[0]
    grid = np.linspace(x[0], x[-1], n)
    if n < 2:
        return grid, y
    left = np.clip(np.searchsorted(x, grid, side="right") - 1, 0, n - 2)
    step = x[left + 1] - x[left]
    weight = np.where(step > 0, (grid - x[left]) / _safe(step), 0.0)
    return grid, y[..., left] * (1.0 - weight) + y[..., left + 1] * weight


def _detrend(x, y):
    dx = x - np.mean(x)
    sxx = float(dx @ dx)
    slope = (y @ dx) / sxx if sxx > 0 else 0.0
    return y - np.mean(y, axis=-1, keepdims=True) - np.multiply.outer(slope, dx)


def _frequency(x, y):
    """The strongest frequency of the detrended data, from its zero-padded FFT."""
    n = x.shape[0]
    grid, uniform = _uniform(x, y)
    if n < 4:
        return np.full(y.shape[:-1], 1.0 / _span(x)), grid, uniform
    spacing = _span(x) / (n - 1)
    size = 1 << int(np.ceil(np.log2(4 * n)))  # zero padded to a quarter of a bin
    power = np.abs(np.fft.rfft(_detrend(grid, uniform), n=size, axis=-1)) ** 2
    power[..., 0] = -1.0  # not the constant
    k = np.argmax(power, axis=-1)
    # Parabola through the peak bin and its neighbours.
    before = _take(power, np.maximum(k - 1, 0))
    at = _take(power, k)
    after = _take(power, np.minimum(k + 1, power.shape[-1] - 1))
    curvature = before - 2.0 * at + after
    shift = np.where(curvature < 0, 0.5 * (before - after) / _safe(curvature), 0.0)
    k = k + np.clip(shift, -0.5, 0.5)
    return np.maximum(k, 0.5) / (size * spacing), grid, uniform


def _guess_sine(x, y):
    frequency, _, _ = _frequency(x, y)
    phase = 2.0 * np.pi * frequency[..., np.newaxis] * x
    basis = np.stack(np.broadcast_arrays(np.sin(phase), np.cos(phase), 1.0), axis=-1)
    along_sin, along_cos, offset = np.moveaxis(_solve_normal(basis, y), -1, 0)
    # a sin(t + phi) = a cos(phi) sin(t) + a sin(phi) cos(t)
    return _stack(np.hypot(along_sin, along_cos), frequency,
                  np.arctan2(along_cos, along_sin), offset)


def _envelope(signal):
    """|analytic signal|: the envelope of an oscillation, by the FFT (Hilbert transform)."""
    n = signal.shape[-1]
    weights = np.zeros(n)
    weights[0] = 1.0
    weights[1:(n + 1) // 2] = 2.0
    if n % 2 == 0:
        weights[n // 2] = 1.0
    return np.abs(np.fft.ifft(np.fft.fft(signal, axis=-1) * weights, axis=-1))


def _guess_damped_cosine(x, y):
    span = _span(x)
    frequency, grid, uniform = _frequency(x, y)
    # The decay rate from a straight line through log(envelope), weighted by the envelope
    # squared (so that the noise floor of the tail counts little), edges left out.
    envelope = _envelope(_detrend(grid, uniform))
    n = x.shape[0]
    inner = slice(n // 10, n - n // 10) if n >= 10 else slice(None)
    t, e = grid[inner], envelope[..., inner]
    w = e * e
    total = _safe(np.sum(w, axis=-1))
    mean_t = np.sum(w * t, axis=-1) / total
    log_e = np.log(e + 1e-300)
    mean_log = np.sum(w * log_e, axis=-1) / total
    dt = t - mean_t[..., np.newaxis]
    slope = (np.sum(w * dt * (log_e - mean_log[..., np.newaxis]), axis=-1)
             / _safe(np.sum(w * dt * dt, axis=-1)))
    rate = np.clip(-slope, 0.0, 50.0 / span)
    decay = np.exp(-rate[..., np.newaxis] * (x - x[0]))
    phase = 2.0 * np.pi * frequency[..., np.newaxis] * x
    basis = np.stack(np.broadcast_arrays(decay * np.cos(phase), decay * np.sin(phase), 1.0),
                     axis=-1)
    along_cos, along_sin, offset = np.moveaxis(_solve_normal(basis, y), -1, 0)
    # a cos(t + phi) = a cos(phi) cos(t) - a sin(phi) sin(t)
    amplitude = _from_shifted(np.hypot(along_cos, along_sin), rate, x[0])
    return _stack(amplitude, rate, frequency, np.arctan2(-along_sin, along_cos), offset)


def _integral(x, y):
    """Trapezoidal integral of y over x, along the last axis."""
    return np.sum(0.5 * (y[..., 1:] + y[..., :-1]) * np.diff(x), axis=-1)


def _guess_logistic(x, y):
    # Plateaus from the first and last tenth; then, with q the data scaled to run from 0
    # to 1, integral(q) = x_end - center and integral(q (1 - q)) = width for a logistic.
    n = x.shape[0]
    tenth = max(n // 10, 1)
    low = np.mean(y[..., :tenth], axis=-1)
    high = np.mean(y[..., n - tenth:], axis=-1)
    step = high - low
    flat = np.abs(step) <= 1e-12 * (np.abs(low) + np.abs(high)) + 1e-300
    q = np.clip((y - low[..., np.newaxis]) / _safe(np.where(flat, 0.0, step))[..., np.newaxis],
                0.0, 1.0)
    span = _span(x)
    center = np.where(flat, 0.5 * (x[0] + x[-1]), x[-1] - _integral(x, q))
    width = np.where(flat, 0.25 * span, _integral(x, q * (1.0 - q)))
    return _stack(step, center, np.maximum(width, 0.25 * span / max(n - 1, 1)), low)


def _guess_power_law(x, y):
    # Defined for x > 0: other points are not used. A grid of exponents, with the
    # amplitude and offset solved exactly for each.
    keep = x > 0
    if not keep.any():
        return _stack(np.zeros(y.shape[:-1]), 1.0, np.mean(y, axis=-1))
    xs, ys = _subsample(x[keep], y[..., keep])
    exponents = np.linspace(-4.05, 4.05, 82)  # not 0: x**0 is the offset's column
    powers = xs / xs[-1]  # scaled for conditioning; undone below
    bases = np.stack([powers ** exponents[:, np.newaxis], np.ones((exponents.size, xs.size))],
                     axis=-1)
    best, coefficients = _best_of(bases, ys)
    exponent = exponents[best]
    amplitude = coefficients[..., 0] * np.exp(np.clip(-exponent * np.log(xs[-1]), -700, 700))
    return _stack(amplitude, exponent, coefficients[..., 1])


_LN2 = np.log(2.0)


def _spot(x, y):
    """One spot on a background in 2-D data: amplitude, offset, and the centroid and
    covariance (cxx, cyy, cxy) of the points at or above half its height.

    The background is the median of the outer points (within a tenth of the range of
    either edge), where a spot in the field of view is not.
    """
    low, high = np.min(x, axis=1), np.max(x, axis=1)
    extent = np.where(high > low, high - low, 1.0)
    relative = (x - low[:, np.newaxis]) / extent[:, np.newaxis]
    border = np.any((relative < 0.1) | (relative > 0.9), axis=0)
    offset = np.median(y[..., border] if border.sum() >= 3 else y, axis=-1)
    residual = y - offset[..., np.newaxis]
    is_dip = -np.min(residual, axis=-1) > np.max(residual, axis=-1)
    sign = np.where(is_dip, -1.0, 1.0)
    height = sign[..., np.newaxis] * residual
    top = np.max(height, axis=-1)
    region = (height >= 0.5 * top[..., np.newaxis]).astype(np.float64)
    count = np.sum(region, axis=-1)  # >= 1: the top itself
    center_x = region @ x[0] / count
    center_y = region @ x[1] / count
    dx = x[0] - center_x[..., np.newaxis]
    dy = x[1] - center_y[..., np.newaxis]
    # Plus a pixel's own spread, so that a one-pixel spot has a width.
    pixel = np.sqrt(extent[0] * extent[1] / x.shape[1])
    own = pixel * pixel / 12.0
    cxx = np.sum(region * dx * dx, axis=-1) / count + own
    cyy = np.sum(region * dy * dy, axis=-1) / count + own
    cxy = np.sum(region * dx * dy, axis=-1) / count
    return sign * top, offset, center_x, center_y, cxx, cyy, cxy


# The region above half height of a Gaussian is an ellipse of semi-axes
# width * sqrt(2 ln 2); a uniform ellipse of semi-axis R has variance R**2 / 4.
_GAUSS_WIDTH = 2.0 / np.sqrt(2.0 * _LN2)


def _guess_gaussian_2d(x, y):
    amplitude, offset, x0, y0, cxx, cyy, _ = _spot(x, y)
    return _stack(amplitude, x0, y0, _GAUSS_WIDTH * np.sqrt(0.5 * (cxx + cyy)), offset)


def _guess_gaussian_2d_elliptic(x, y):
    amplitude, offset, x0, y0, cxx, cyy, _ = _spot(x, y)
    return _stack(amplitude, x0, y0, _GAUSS_WIDTH * np.sqrt(cxx), _GAUSS_WIDTH * np.sqrt(cyy),
                  offset)


def _guess_gaussian_2d_rotated(x, y):
    amplitude, offset, x0, y0, cxx, cyy, cxy = _spot(x, y)
    # Principal axes of the covariance: the major one at `angle`.
    angle = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
    mean = 0.5 * (cxx + cyy)
    radius = np.hypot(0.5 * (cxx - cyy), cxy)
    minor = np.maximum(mean - radius, 0.25 * mean)
    return _stack(amplitude, x0, y0, _GAUSS_WIDTH * np.sqrt(mean + radius),
                  _GAUSS_WIDTH * np.sqrt(minor), offset, angle)


def _guess_cauchy_2d_elliptic(x, y):
    # Above half height (1 + u**2)(1 + v**2) <= 2: semi-axes of about one width.
    amplitude, offset, x0, y0, cxx, cyy, _ = _spot(x, y)
    return _stack(amplitude, x0, y0, 2.0 * np.sqrt(cxx), 2.0 * np.sqrt(cyy), offset)


linear = Model("linear", _guess_linear)
polynomial = Model("polynomial", None)
exponential_decay = Model("exponential_decay", _guess_exponential_decay)
gaussian = Model("gaussian", _guess_gaussian)
lorentzian = Model("lorentzian", _guess_lorentzian)
double_exponential = Model("double_exponential", _guess_double_exponential)
stretched_exponential = Model("stretched_exponential", _guess_stretched_exponential)
pseudo_voigt = Model("pseudo_voigt", _guess_pseudo_voigt)
damped_cosine = Model("damped_cosine", _guess_damped_cosine)
sine = Model("sine", _guess_sine)
logistic = Model("logistic", _guess_logistic)
power_law = Model("power_law", _guess_power_law)
gaussian_2d = Model("gaussian_2d", _guess_gaussian_2d)
gaussian_2d_elliptic = Model("gaussian_2d_elliptic", _guess_gaussian_2d_elliptic)
gaussian_2d_rotated = Model("gaussian_2d_rotated", _guess_gaussian_2d_rotated)
cauchy_2d_elliptic = Model("cauchy_2d_elliptic", _guess_cauchy_2d_elliptic)


def multi_lorentzian(n_peaks: int) -> Model:
    """The sum of ``n_peaks`` Lorentzians on a constant background (an ODMR spectrum).

    Its parameters are ``amplitude_1, center_1, hwhm_1, ..., amplitude_n, center_n, hwhm_n,
    offset``; its kernels are ``model_multi_lorentzian`` and ``jacobian_multi_lorentzian``,
    and its guess takes the ``n_peaks`` highest peaks (or deepest dips) one at a time.

    Examples
    --------
    >>> import numpy as np, autofit
    >>> odmr = autofit.models.multi_lorentzian(2)
    >>> odmr.n_params, odmr.param_names[:3]
    (7, ('amplitude_1', 'center_1', 'hwhm_1'))
    >>> x = np.linspace(2.80, 2.94, 300)
    >>> y = odmr(x, -0.2, 2.85, 0.004, -0.3, 2.89, 0.005, 1.0)
    >>> np.round(odmr.guess(x, y)[[1, 4]], 2)
    array([2.85, 2.89])
    """
    if isinstance(n_peaks, bool) or not isinstance(n_peaks, (int, np.integer)) or n_peaks < 1:
        raise ValueError(f"n_peaks must be a positive integer, got {n_peaks!r}")
    n_peaks = int(n_peaks)
    names = [f"{kind}_{k}" for k in range(1, n_peaks + 1)
             for kind in ("amplitude", "center", "hwhm")]
    return Model("multi_lorentzian", _multi_lorentzian_guess(n_peaks), (*names, "offset"))


BUILTIN: dict[str, Model] = {m.name: m for m in (
    linear, polynomial, exponential_decay, gaussian, lorentzian, double_exponential,
    stretched_exponential, pseudo_voigt,
    # Any number of peaks, set by the length of p0; multi_lorentzian(n) is sized.
    Model("multi_lorentzian", None),
    damped_cosine, sine, logistic, power_law, gaussian_2d, gaussian_2d_elliptic,
    gaussian_2d_rotated, cauchy_2d_elliptic)}


def get(spec: str) -> Model:
    """The built-in model named by ``spec``: a name, or ``name:n`` for the sized ones.

    ``"polynomial:3"`` is the polynomial of degree 3 (4 parameters, with a least-squares
    guess); ``"multi_lorentzian:8"`` is :func:`multi_lorentzian` with 8 peaks.

    Examples
    --------
    >>> import autofit
    >>> autofit.models.get("gaussian").param_names
    ('amplitude', 'center', 'width', 'offset')
    >>> autofit.models.get("polynomial:3").n_params
    4
    >>> autofit.models.get("multi_lorentzian:8").n_params
    25
    """
    name, _, size = str(spec).partition(":")
    name = name.strip()
    if name not in BUILTIN:
        raise ValueError(f"unknown model {spec!r}; the built-in models are "
                         f"{', '.join(BUILTIN)} (polynomial:<degree> and "
                         "multi_lorentzian:<n_peaks> give sized ones)")
    if not size:
        return BUILTIN[name]
    if name not in ("polynomial", "multi_lorentzian"):
        raise ValueError(f"the {name} model has a fixed number of parameters; "
                         f"ask for {name!r}, not {spec!r}")
    try:
        n = int(size)
    except ValueError:
        n = -1
    if n < (0 if name == "polynomial" else 1):
        what = "degree" if name == "polynomial" else "number of peaks"
        raise ValueError(f"{spec!r}: the {what} after ':' must be a "
                         f"{'non-negative' if name == 'polynomial' else 'positive'} integer")
    if name == "multi_lorentzian":
        return multi_lorentzian(n)
    sized = copy.copy(polynomial)
    sized.param_names = tuple(f"c{j}" for j in range(n + 1))
    sized._guess = _sized_polynomial_guess(n + 1)
    return sized
