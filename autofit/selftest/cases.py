"""Inputs for every kernel, shared by the generated tests, ``validate`` and the benchmarks.

``cases(kernel_name, n_points)`` returns named variants; each holds the arguments, with
:class:`Ref` placeholders for callables that must come from the backend under test (numba
kernels take jitted models, jax kernels traceable ones), and how each output is compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autofit import _codes
from autofit._declarations import KERNELS, MODELS

# Tolerances of the cross-backend comparison (float64), per kind of output.
KERNEL_RTOL = 1e-10
FIT_RTOL = 1e-8
# Finite differences divide a difference of model values by the step h, so a one-ulp
# difference between two backends' exp (XLA's and libm's differ) becomes about
# eps |f| / h, with h = sqrt(eps) |p| (forward) or eps**(1/3) |p| (central). For the gaussian
# case (|f| <= 3.2, smallest |p| = 0.2, |J| up to 3) that is ~1e-7 and ~5e-10 of max |J|
# (measured: 1.5e-7 and 5.5e-10 on jax; numba, on the same libm, is bit-identical). These
# kernels are therefore compared norm-wise with a tolerance ten times that bound.
FD_RTOL = {"forward": 1e-6, "central": 1e-8}

TRUE_PARAMS = {
    "linear": (1.5, -0.5),
    "polynomial": (0.5, -1.2, 0.3, 0.05),
    "exponential_decay": (2.5, 1.3, 0.5),
    "gaussian": (3.0, 0.4, 1.1, 0.2),
    "lorentzian": (2.0, -0.3, 0.7, 0.1),
    # The models below stay away from 0 on their grids: the relative comparison of a sum
    # that cancels to 0 would measure the cancellation, not the kernel.
    "double_exponential": (2.0, 3.0, 1.0, 0.4, 0.3),
    "stretched_exponential": (2.0, 0.8, 0.6, 0.2),
    "pseudo_voigt": (2.5, 0.3, 0.8, 0.4, 0.2),
    # An ODMR spectrum: three dips (negative amplitudes) on a background of 1.
    "multi_lorentzian": (-0.3, -2.5, 0.4, -0.5, 0.2, 0.3, -0.2, 2.8, 0.5, 1.0),
    "damped_cosine": (1.5, 0.4, 0.7, 0.3, 2.0),
    "sine": (1.2, 0.35, -0.8, 1.5),
    "logistic": (2.0, 0.5, 0.8, 0.3),
    "power_law": (1.5, 0.7, 0.4),
    "gaussian_2d": (3.0, 0.4, -0.6, 1.2, 0.2),
    "gaussian_2d_elliptic": (2.5, -0.5, 0.3, 1.4, 0.8, 0.1),
    "gaussian_2d_rotated": (2.0, 0.3, -0.4, 1.6, 0.7, 0.2, 0.5),
    "cauchy_2d_elliptic": (1.8, 0.2, 0.6, 1.1, 0.7, 0.1),
}


@dataclass(frozen=True)
class Ref:
    """A backend's own kernel, looked up by name when the case runs on that backend."""

    kernel: str


@dataclass(frozen=True)
class Case:
    """One variant: ``args`` for the kernel and how to compare each output.

    ``compare`` has one entry per output (a kernel returning one array has one): 'kernel'
    (relative tolerance KERNEL_RTOL), 'fit' (FIT_RTOL), 'fd-forward' / 'fd-central'
    (norm-wise, FD_RTOL), 'normwise' (norm-wise at the case's tolerance: for matrices whose
    entries cancel to rounding by symmetry, where a relative rule measures the
    cancellation), 'exact' (integers, flags) or 'skip' (counts that may legitimately differ,
    such as evaluations). ``reference`` names the
    ``original`` kernel that gives the expected value when the kernel itself has no NumPy
    implementation (autodiff is checked against the analytic Jacobian).
    """

    variant: str
    args: tuple
    compare: tuple[str, ...]
    reference: str | None = None


def x_grid(model: str, n_points: int) -> np.ndarray:
    """The points of ``model``'s cases: ``(n_points,)``, or ``(2, n_points)`` for a 2-D model.

    A 2-D model gets the first ``n_points`` pixels, row by row, of a square grid on
    [-5, 5]² with ``ceil(sqrt(n_points))`` pixels a side.
    """
    if MODELS[model].n_variables == 2:
        side = max(int(np.ceil(np.sqrt(n_points))), 2)
        axis = np.linspace(-5.0, 5.0, side)
        grid_y, grid_x = np.meshgrid(axis, axis, indexing="ij")
        return np.stack([grid_x.ravel(), grid_y.ravel()])[:, :n_points].copy()
    if model in ("exponential_decay", "double_exponential", "stretched_exponential",
                 "damped_cosine"):
        return np.linspace(0.0, 5.0, n_points)
    if model == "power_law":
        return np.linspace(0.1, 10.0, n_points)
    if model == "polynomial":
        return np.linspace(-2.0, 2.0, n_points)
    return np.linspace(-5.0, 5.0, n_points)


def noisy_data(model: str, n_points: int, seed: int = 0):
    """x, y = model(x, TRUE_PARAMS) + 1% gaussian noise, with the NumPy reference model."""
    from autofit import original

    x = x_grid(model, n_points)
    params = np.array(TRUE_PARAMS[model])
    clean = getattr(original, f"model_{model}")(x, params)
    noise = np.random.default_rng(seed).normal(size=n_points)
    return x, clean + 0.01 * np.abs(clean).max() * noise


def cases(name: str, n_points: int) -> list[Case]:
    """The variants for kernel ``name`` on data of ``n_points`` points."""
    kind = KERNELS[name].case
    if kind == "model":
        model = name.split("_", 1)[1]
        return [Case("typical", (x_grid(model, n_points), np.array(TRUE_PARAMS[model])),
                     ("kernel",))]
    return _FACTORIES[kind](name, n_points)


def _finite_difference(name, n_points):
    x = x_grid("gaussian", n_points)
    params = np.array(TRUE_PARAMS["gaussian"])
    unbounded = (np.full(4, -np.inf), np.full(4, np.inf))
    at_upper = (np.full(4, -np.inf), params + np.array([0.0, 1e-12, 0.0, 0.0]))
    from autofit.original import model_gaussian

    f0 = model_gaussian(x, params)
    variants = []
    for label, (lower, upper) in (("unbounded", unbounded), ("at-upper-bound", at_upper)):
        if name == "jacobian_forward":
            args = (Ref("model_gaussian"), x, params, f0, lower, upper)
        else:
            args = (Ref("model_gaussian"), x, params, lower, upper)
        variants.append(Case(label, args, ("fd-" + name.split("_")[1],)))
    return variants


def _autodiff(name, n_points):
    x = x_grid("gaussian", n_points)
    params = np.array(TRUE_PARAMS["gaussian"])
    return [Case("gaussian", (Ref("model_gaussian"), x, params), ("kernel",),
                 reference="jacobian_gaussian")]


def _lm_step(name, n_points):
    rng = np.random.default_rng(n_points)
    n_params = 5
    basis = rng.normal(size=(max(n_points, n_params), n_params)) * np.logspace(0, 3, n_params)
    jtj = basis.T @ basis
    gradient = rng.normal(size=n_params) * 10.0
    scale = np.sqrt(np.diag(jtj))
    all_free = np.ones(n_params, dtype=bool)
    one_held = all_free.copy()
    one_held[2] = False
    return [Case("all-free", (jtj, gradient, scale, 1e-3, all_free), ("kernel", "exact")),
            Case("one-held", (jtj, gradient, scale, 1e-1, one_held), ("kernel", "exact"))]


def _lm_solve(name, n_points):
    x, y = noisy_data("gaussian", n_points)
    truth = np.array(TRUE_PARAMS["gaussian"])
    p0 = truth * np.array([1.2, 1.0, 0.8, 1.0]) + np.array([0.0, 0.2, 0.0, 0.05])
    free = (np.full(4, -np.inf), np.full(4, np.inf))
    # The amplitude's upper bound sits below the best fit, so it ends active.
    capped = (np.full(4, -np.inf), np.array([2.9, np.inf, np.inf, np.inf]))
    ones = np.ones(n_points)
    compare = ("fit", "fit", "exact", "skip", "skip")
    # Tolerances well above rounding, so that the stopping rule that fires is decided by the
    # iteration, not by the last bits of chi2 (at 1e-15 it is a coin toss between "ftol" and
    # "no further reduction possible", legitimately different across backends).
    tolerances = (1e-10, 1e-10, 1e-10, 100000)
    variants = []
    for label, method in (("analytic", _codes.JAC_ANALYTIC), ("forward", _codes.JAC_FORWARD),
                          ("central", _codes.JAC_CENTRAL)):
        args = (Ref("model_gaussian"), Ref("jacobian_gaussian"), method, x, y, ones, p0,
                *free, *tolerances)
        variants.append(Case(label, args, compare))
    args = (Ref("model_gaussian"), Ref("jacobian_gaussian"), _codes.JAC_ANALYTIC, x, y,
            ones, p0, *capped, *tolerances)
    variants.append(Case("bounded", args, compare))
    if n_points <= 2000:  # the 2-D weights are n_points x n_points
        weights = np.diag(1.0 / (1.0 + 0.1 * np.abs(x)))
        weights[np.tril_indices(n_points, -1)] = 0.001
        args = (Ref("model_gaussian"), Ref("jacobian_gaussian"), _codes.JAC_ANALYTIC, x, y,
                weights, p0, *free, *tolerances)
        variants.append(Case("matrix-weights", args, compare))
    return variants


def _lm_batch(name, n_points):
    """16 noisy gaussians (at most 256 points each) with a NaN fit and a short one."""
    n_fits, n = 16, min(n_points, 256)
    rng = np.random.default_rng(n_points)
    x = x_grid("gaussian", n)
    truth = np.array(TRUE_PARAMS["gaussian"]) * (1.0 + 0.1 * rng.normal(size=(n_fits, 4)))
    from autofit.original import model_gaussian

    clean = np.stack([model_gaussian(x, t) for t in truth])
    y = clean + 0.03 * rng.normal(size=clean.shape)
    y[3, n // 2] = np.nan                             # not attempted: NONFINITE_DATA
    counts = np.round(np.abs(50.0 * clean) + 5.0 + rng.normal(size=clean.shape))
    p0 = truth * (1.0 + 0.05 * rng.normal(size=truth.shape))
    p0_counts = p0 * np.array([50.0, 1.0, 1.0, 1.0]) + np.array([0.0, 0.0, 0.0, 8.0])
    weights = np.ones((n_fits, n))
    weights[5, 3:] = 0.0                              # 3 points for 4 parameters
    shared_x = x[None, None, :]
    unbounded = (np.full((1, 4), -np.inf), np.full((1, 4), np.inf))
    per_fit = (np.tile([0.0, -4.0, 0.2, -1.0], (n_fits, 1)),
               np.tile([2.9, 4.0, 5.0, 1.0], (n_fits, 1)))  # amplitude ends at its bound
    free = np.ones(4, dtype=bool)
    held = np.array([True, True, False, True])
    model, jacobian = Ref("model_gaussian"), Ref("jacobian_gaussian")
    exact = ("fit", "fit", "exact", "exact", "fit")
    fd = ("fd-forward", "fd-forward", "skip", "exact", "fd-forward")
    # A tolerance well above rounding: near the minimum the relative reduction of chi2
    # shrinks quadratically (1e-3, 1e-6, 1e-12...), and a tolerance that one of those lands
    # on within rounding makes the stopping iteration a coin toss between backends.
    tol, max_iter = 1e-8, 200
    lse, mle = _codes.ESTIMATOR_LSE, _codes.ESTIMATOR_MLE
    analytic, forward = _codes.JAC_ANALYTIC, _codes.JAC_FORWARD

    def args(method, data, start, bounds, mask, estimator, w=weights, tol=tol):
        return (model, jacobian, method, shared_x, data, w, start, *bounds, mask, estimator,
                tol, max_iter)

    clip = np.clip(p0, per_fit[0], per_fit[1])
    counts[7, 1] = -1.0                               # not attempted: MLE_NEGATIVE_DATA
    # Amplitude held at 0 in three fits: centre and width then do not change the model.
    no_peak = p0.copy()
    no_peak[2:5, 0] = 0.0
    amplitude_held = np.array([False, True, True, True])
    # Fit 5 keeps 2 points for the 3 free parameters (3 would fit them exactly, where
    # whether H is singular is decided by rounding).
    two_points = weights.copy()
    two_points[5, 2:] = 0.0
    # With the width held, fit 5 keeps all its points: with its first 3 or 4 (3 free
    # parameters) it runs off along a valley to max_iter, where whether a step in its last
    # iterations is within xtol is decided by rounding.
    all_points = np.ones_like(weights)
    # Every width starts at its upper bound, where the forward step goes backwards; the
    # best fits lie below it.
    width_cap = (unbounded[0], np.array([[np.inf, np.inf, 1.6, np.inf]]))
    at_cap = p0.copy()
    at_cap[:, 2] = 1.6
    robust = _robust_batch_cases(n, truth, p0, per_fit, model, jacobian, exact, fd, tol,
                                 max_iter)
    return robust + [
        Case("lse-analytic", args(analytic, y, p0, unbounded, free, lse), exact),
        Case("lse-forward", args(forward, y, p0, unbounded, free, lse), fd),
        Case("lse-bounded-per-fit", args(analytic, y, clip, per_fit, free, lse), exact),
        Case("lse-width-fixed", args(analytic, y, p0, unbounded, held, lse, all_points),
             exact),
        Case("lse-singular", args(analytic, y, no_peak, unbounded, amplitude_held, lse,
                                  two_points), exact),
        Case("lse-forward-at-bound", args(forward, y, at_cap, width_cap, free, lse), fd),
        Case("mle-analytic", args(analytic, counts, p0_counts, unbounded, free, mle,
                                  np.ones((1, n)), tol=1e-6), exact),
    ]


def _robust_batch_cases(n, truth, p0, per_fit, model, jacobian, exact, fd, tol, max_iter):
    """Robust losses on hot pixels and cosmic rays: a few points of every fit off by several
    amplitudes, f_scale 0.05 folded into the weights as fit_batch does. At least 40 points
    (the smallest sizes would leave a spike a fit could settle on, where the covariance is
    decided by rounding)."""
    from autofit.original import model_gaussian

    n = max(n, 40)
    n_fits = truth.shape[0]
    rng = np.random.default_rng(n)
    x = x_grid("gaussian", n)
    y = np.stack([model_gaussian(x, t) for t in truth]) + 0.03 * rng.normal(size=(n_fits, n))
    for fit in range(n_fits):
        where = rng.choice(n, size=n // 12, replace=False)
        y[fit, where] += rng.choice([-1.0, 1.0], size=where.size) * rng.uniform(
            1.0, 3.0, size=where.size)
    y[3, n // 2] = np.nan                             # not attempted: NONFINITE_DATA
    weights = np.full((1, n), 1.0 / 0.05)
    unbounded = (np.full((1, 4), -np.inf), np.full((1, 4), np.inf))
    free = np.ones(4, dtype=bool)

    def args(method, start, bounds, estimator):
        return (model, jacobian, method, x[None, None, :], y, weights, start, *bounds, free,
                estimator, tol, max_iter)

    analytic, forward = _codes.JAC_ANALYTIC, _codes.JAC_FORWARD
    cases = [Case(f"{loss}-analytic", args(analytic, p0, unbounded, code), exact)
             for loss, code in _codes.ROBUST_LOSSES.items()]
    cases.append(Case("soft_l1-forward", args(forward, p0, unbounded,
                                              _codes.ESTIMATOR_SOFT_L1), fd))
    cases.append(Case("cauchy-bounded-per-fit", args(
        analytic, np.clip(p0, per_fit[0], per_fit[1]), per_fit, _codes.ESTIMATOR_CAUCHY),
        exact))
    return cases


def lm_solve_hard_cases() -> list[Case]:
    """``lm_solve`` on real-shaped problems with several minima, from starts where the path
    matters: three Lorentzian peaks whose start has two centres crossed over, and two
    exponential tails from starts 40% off, each with the analytic Jacobian and with forward
    differences. Not in :func:`cases` (each model is a compilation of ``lm_solve`` on
    numba, which ``validate`` should not pay for)."""
    peaks_truth = np.array([1.0, -1.5, 0.4, 0.7, 0.3, 0.5, 0.8, 1.2, 0.3, 0.1])
    peaks_start = np.array([0.8, -1.3, 0.6, 0.6, 1.0, 0.4, 1.0, 0.2, 0.5, 0.0])
    tails_truth = np.array([2.0, 3.0, 1.0, 0.4, 0.3])
    tails_start = tails_truth * np.array([1.4, 0.6, 0.6, 1.4, 1.0])
    problems = (("three-peaks", "multi_lorentzian", np.linspace(-4.0, 4.0, 300),
                 peaks_truth, peaks_start),
                ("two-tails", "double_exponential", np.linspace(0.0, 6.0, 200),
                 tails_truth, tails_start))
    # Forward differences: the same minimum, norm-wise at FD_RTOL (a poorly conditioned
    # minimum such as two exponential tails moves by ~5e-9 of the parameters with the
    # rounding of the difference quotients); another minimum differs by 1e-3 and more.
    compare = {_codes.JAC_ANALYTIC: ("fit", "fit", "exact", "skip", "skip"),
               _codes.JAC_FORWARD: ("fd-forward", "fd-forward", "exact", "skip", "skip")}
    found = []
    for label, model, x, truth, start in problems:
        from autofit import original

        clean = getattr(original, f"model_{model}")(x, truth)
        y = clean + 0.02 * np.abs(clean).max() * np.random.default_rng(7).normal(size=x.size)
        free = np.full(truth.size, -np.inf), np.full(truth.size, np.inf)
        for method_label, method in (("analytic", _codes.JAC_ANALYTIC),
                                     ("forward", _codes.JAC_FORWARD)):
            args = (Ref(f"model_{model}"), Ref(f"jacobian_{model}"), method, x, y,
                    np.ones(x.size), start, *free, 1e-10, 1e-10, 1e-10, 100000)
            found.append(Case(f"{label}-{method_label}", args, compare[method]))
    return found


# Models whose batch and fused cases start further from the truth would test the start, not
# the engine: every fit starts within a few per cent of its own truth.
PARITY_FITS = 6
PARITY_POINTS = 40


def model_parity_cases(kernel: str) -> list[Case]:
    """``lm_batch`` or ``lm_fused`` on every built-in model (analytic Jacobian, small
    sizes): one variant per model, named after it. Not in :func:`cases`: each model is a
    kernel of its own to compile on numba, which ``validate`` should not pay for."""
    return [_model_parity_case(kernel, model) for model in TRUE_PARAMS]


def _model_parity_case(kernel, model):
    rng = np.random.default_rng(sorted(TRUE_PARAMS).index(model))
    x = x_grid(model, PARITY_POINTS)
    truth = np.array(TRUE_PARAMS[model])
    from autofit import original

    evaluate = getattr(original, f"model_{model}")
    refs = Ref(f"model_{model}"), Ref(f"jacobian_{model}")
    n_params = truth.size
    unbounded = np.full(n_params, -np.inf), np.full(n_params, np.inf)
    x_rows = x if x.ndim == 2 else x[None, :]
    if kernel == "lm_fused":
        y = evaluate(x, truth)
        y = y + 0.01 * np.abs(y).max() * rng.normal(size=y.shape)
        p0 = truth * (1.0 + 0.03 * rng.normal(size=n_params))
        args = (*refs, _codes.JAC_ANALYTIC, x_rows, y, np.ones(1), p0, *unbounded,
                1e-10, 1e-10, 1e-10, 100000)
        return Case(model, args, ("fit", "fit", "exact", "skip", "exact", "normwise"))
    truths = truth * (1.0 + 0.02 * rng.normal(size=(PARITY_FITS, n_params)))
    y = np.stack([evaluate(x, t) for t in truths])
    y = y + 0.01 * np.abs(y).max() * rng.normal(size=y.shape)
    p0 = truths * (1.0 + 0.03 * rng.normal(size=truths.shape))
    args = (*refs, _codes.JAC_ANALYTIC, x_rows[None], y, np.ones((1, x.shape[-1])), p0,
            unbounded[0][None], unbounded[1][None], np.ones(n_params, dtype=bool),
            _codes.ESTIMATOR_LSE, 1e-8, 200)
    # The covariance norm-wise: entries that vanish by symmetry (the polynomial's on its
    # symmetric grid) are rounding noise.
    return Case(model, args, ("fit", "fit", "exact", "exact", "normwise"))


def _covariance(name, n_points):
    rng = np.random.default_rng(n_points + 1)
    n_rows = max(n_points, 6)
    jac = rng.normal(size=(n_rows, 4)) * np.array([1.0, 10.0, 0.1, 1e3])
    deficient = jac.copy()
    deficient[:, 3] = 2.0 * deficient[:, 0]
    return [Case("full-rank", (jac,), ("kernel", "exact")),
            Case("rank-deficient", (deficient,), ("kernel", "exact"))]


def _information(name, n_points):
    """JᵀJ of the covariance cases' Jacobians: full rank, rank-deficient, not finite."""
    jac = _covariance(name, n_points)[0].args[0]
    deficient = _covariance(name, n_points)[1].args[0]
    broken = jac.T @ jac
    broken[2, 1] = np.inf
    return [Case("full-rank", (jac.T @ jac,), ("kernel", "exact")),
            Case("rank-deficient", (deficient.T @ deficient,), ("kernel", "exact")),
            Case("not-finite", (broken,), ("kernel", "exact"))]


def _lm_fused(name, n_points):
    """One large fit: gaussian and exponential decay, analytic and finite differences,
    bounded, per-point and shared weights (the chunked pass's tail is covered by sizes that
    are not a multiple of any backend's chunk)."""
    x, y = noisy_data("gaussian", n_points)
    truth = np.array(TRUE_PARAMS["gaussian"])
    p0 = truth * np.array([1.2, 1.0, 0.8, 1.0]) + np.array([0.0, 0.2, 0.0, 0.05])
    free = (np.full(4, -np.inf), np.full(4, np.inf))
    capped = (np.full(4, -np.inf), np.array([2.9, np.inf, np.inf, np.inf]))
    shared = np.ones(1)
    weights = 1.0 / (1.0 + 0.1 * np.abs(x))
    # JᵀW²J norm-wise: the gaussian's mixed entries cancel by symmetry to ~1e-9 of the
    # largest, where rounding decides.
    exact = ("fit", "fit", "exact", "skip", "exact", "normwise")
    fd = ("fd-forward", "fd-forward", "exact", "skip", "skip", "fd-forward")
    central = ("fd-central", "fd-central", "exact", "skip", "skip", "fd-central")
    # Tolerances well above rounding, so that the iteration decides the stopping rule.
    tolerances = (1e-10, 1e-10, 1e-10, 100000)
    model = Ref("model_gaussian")
    jacobian = Ref("jacobian_gaussian")
    analytic = _codes.JAC_ANALYTIC

    def args(method, w, bounds, data=(x[None, :], y), start=p0, m=model, j=jacobian):
        return (m, j, method, data[0], data[1], w, start, *bounds, *tolerances)

    xd, yd = noisy_data("exponential_decay", n_points, seed=1)
    decay = (Ref("model_exponential_decay"),
             Ref("jacobian_exponential_decay"))
    decay_start = np.array(TRUE_PARAMS["exponential_decay"]) * np.array([0.8, 1.3, 1.2])
    return [
        Case("analytic", args(analytic, shared, free), exact),
        Case("weights", args(analytic, weights, free), exact),
        Case("bounded", args(analytic, shared, capped), exact),
        Case("forward", args(_codes.JAC_FORWARD, weights, free), fd),
        Case("central", args(_codes.JAC_CENTRAL, shared, free), central),
        Case("decay", args(analytic, shared, (np.full(3, -np.inf), np.full(3, np.inf)),
                           (xd[None, :], yd), decay_start, *decay), exact),
        *_robust_fused_cases(n_points, p0, free, tolerances, model, jacobian, exact),
    ]


def _robust_fused_cases(n_points, p0, free, tolerances, model, jacobian, compare):
    """One large fit per robust loss, on a gaussian with hot pixels and cosmic rays (a
    twelfth of the points off by one to three amplitudes), f_scale 0.05 folded into the
    weights; two losses with one weight per point, two with a shared one (numba's two point
    loops). At least 40 points, as the robust lm_batch cases: fewer leave a spike the fit
    could settle on, where the information is decided by rounding."""
    from autofit.original import model_gaussian

    n = max(n_points, 40)
    rng = np.random.default_rng(n + 2)
    x = x_grid("gaussian", n)
    y = model_gaussian(x, np.array(TRUE_PARAMS["gaussian"])) + 0.03 * rng.normal(size=n)
    where = rng.choice(n, size=n // 12, replace=False)
    y[where] += rng.choice([-1.0, 1.0], size=where.size) * rng.uniform(1.0, 3.0, where.size)
    f_scale = 0.05
    per_point = {"huber", "arctan"}
    return [Case(f"{loss}", (model, jacobian, _codes.JAC_ANALYTIC, x[None, :], y,
                             np.full(n if loss in per_point else 1, 1.0 / f_scale), p0, *free,
                             *tolerances, code), compare)
            for loss, code in _codes.ROBUST_LOSSES.items()]


_FACTORIES = {
    "lm_batch": _lm_batch,
    "lm_fused": _lm_fused,
    "finite_difference": _finite_difference,
    "autodiff": _autodiff,
    "lm_step": _lm_step,
    "lm_solve": _lm_solve,
    "covariance": _covariance,
    "information": _information,
}
