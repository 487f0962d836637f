"""The one declaration of every kernel: name, parameters in order, and docstring.

Each backend (``autofit.original``, ``autofit.numba``, ``autofit.jax``) implements these
functions under the same names and with the same parameters; ``implements`` attaches the
declared docstring to each implementation, so documentation lives here only. The dispatcher,
the generated cross-backend tests (``tests/test_kernels.py``), ``python -m autofit validate``
and the README's kernel table (:mod:`autofit._kernel_table`) all read ``KERNELS`` and
``MODELS``, so the backends and the docs cannot drift apart unnoticed.

One vocabulary, in the declarations below and in every backend's solvers (``r = f - y``
the residuals, ``W`` the weights, ``J`` the Jacobian of the model):

- ``gradient``: ``Jᵀ W² r``, half the gradient of χ² (``lm_step``, ``lm_solve``); the
  batched and fused solvers carry its negative, the descent direction ``g = -gradient``,
  the right-hand side of their step equations ``(H + λ diag(scale_squared)) δ = g``.
  A model's gradient at one point (``gradient_<name>`` of ``autofit.numba.points``) is its
  row of J.
- ``scale``: MINPACK's ``diag``, the running maximum of the column norms of ``W J``
  (``lm_step``, ``lm_solve``); ``scale_squared``: the running maximum of ``diag(H)``, the
  squares of those norms for least squares (Marquardt's scaling in the batched and fused
  solvers). ``scale`` never names a square.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """A built-in model: its parameters and formula.

    ``param_names`` is None for models whose number of parameters is chosen by the caller
    (the polynomial's degree and the multi-Lorentzian's number of peaks follow from the
    length of ``params``); ``variable_params`` then says, for the docs, how the parameters
    are named and how many there are. ``n_variables`` is 2 for models of an image: their x
    is ``(2, n_points)``, the x and y coordinate of each point.
    """

    name: str
    param_names: tuple[str, ...] | None
    formula: str
    n_variables: int = 1
    variable_params: tuple[str, str] | None = None


@dataclass(frozen=True)
class KernelSpec:
    """A kernel every backend provides under ``name`` with parameters ``signature``.

    ``native`` lists the backends that implement it; any other backend runs it through the
    fallback table in :mod:`autofit._dispatch`. ``case`` names the input factory in
    :mod:`autofit.selftest.cases` that the generated tests and ``validate`` use. A kernel with a
    ``jac_method`` parameter accepts the codes of ``jac_methods`` on every backend, and
    those of ``jac_methods_extra`` (``(backend, codes)`` pairs) on that backend too; any
    other code is refused by :func:`require_jac_method`, in the same words everywhere.
    """

    name: str
    signature: tuple[str, ...]
    doc: str
    case: str
    native: tuple[str, ...] = ("original", "numba", "jax")
    jac_methods: tuple[int, ...] = ()
    jac_methods_extra: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def accepted_jac_methods(self, backend: str) -> tuple[int, ...]:
        """The ``jac_method`` codes this kernel accepts on ``backend``."""
        return self.jac_methods + dict(self.jac_methods_extra).get(backend, ())


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("linear", ("slope", "intercept"), "slope * x + intercept"),
        ModelSpec("polynomial", None, "c0 + c1 * x + c2 * x**2 + ... (degree = len(params) - 1)",
                  variable_params=("c0, c1, ..., c_degree", "degree + 1")),
        ModelSpec("exponential_decay", ("amplitude", "rate", "offset"),
                  "amplitude * exp(-rate * x) + offset"),
        ModelSpec("gaussian", ("amplitude", "center", "width", "offset"),
                  "amplitude * exp(-(x - center)**2 / (2 * width**2)) + offset"),
        ModelSpec("lorentzian", ("amplitude", "center", "hwhm", "offset"),
                  "amplitude * hwhm**2 / ((x - center)**2 + hwhm**2) + offset"),
        ModelSpec("double_exponential", ("amplitude1", "rate1", "amplitude2", "rate2", "offset"),
                  "amplitude1 * exp(-rate1 * x) + amplitude2 * exp(-rate2 * x) + offset"),
        ModelSpec("stretched_exponential", ("amplitude", "rate", "beta", "offset"),
                  "amplitude * exp(-(rate * x)**beta) + offset (x >= 0; the value at "
                  "rate * x = 0 is amplitude + offset, with zero derivatives in rate and "
                  "beta)"),
        ModelSpec("pseudo_voigt", ("amplitude", "center", "hwhm", "eta", "offset"),
                  "amplitude * (eta * L + (1 - eta) * G) + offset, "
                  "L = hwhm**2 / ((x - center)**2 + hwhm**2), "
                  "G = exp(-ln(2) * (x - center)**2 / hwhm**2)"),
        ModelSpec("multi_lorentzian", None,
                  "sum over peaks k of amplitude_k * hwhm_k**2 / ((x - center_k)**2 + "
                  "hwhm_k**2) + offset (n_peaks = (len(params) - 1) / 3)",
                  variable_params=(("amplitude_1, center_1, hwhm_1, ..., amplitude_n, "
                                    "center_n, hwhm_n, offset"), "3 n_peaks + 1")),
        ModelSpec("damped_cosine", ("amplitude", "rate", "frequency", "phase", "offset"),
                  "amplitude * exp(-rate * x) * cos(2 * pi * frequency * x + phase) + offset"),
        ModelSpec("sine", ("amplitude", "frequency", "phase", "offset"),
                  "amplitude * sin(2 * pi * frequency * x + phase) + offset"),
        ModelSpec("logistic", ("amplitude", "center", "width", "offset"),
                  "amplitude / (1 + exp(-(x - center) / width)) + offset"),
        ModelSpec("power_law", ("amplitude", "exponent", "offset"),
                  "amplitude * x**exponent + offset (x > 0)"),
        ModelSpec("gaussian_2d", ("amplitude", "x0", "y0", "width", "offset"),
                  "amplitude * exp(-((x - x0)**2 + (y - y0)**2) / (2 * width**2)) + offset",
                  n_variables=2),
        ModelSpec("gaussian_2d_elliptic",
                  ("amplitude", "x0", "y0", "width_x", "width_y", "offset"),
                  "amplitude * exp(-(x - x0)**2 / (2 * width_x**2) "
                  "- (y - y0)**2 / (2 * width_y**2)) + offset",
                  n_variables=2),
        ModelSpec("gaussian_2d_rotated",
                  ("amplitude", "x0", "y0", "width_x", "width_y", "offset", "angle"),
                  "amplitude * exp(-u**2 / (2 * width_x**2) - v**2 / (2 * width_y**2)) "
                  "+ offset, u = (x - x0) * cos(angle) + (y - y0) * sin(angle), "
                  "v = -(x - x0) * sin(angle) + (y - y0) * cos(angle) (angle: of the "
                  "ellipse's x axis, in radians)",
                  n_variables=2),
        ModelSpec("cauchy_2d_elliptic",
                  ("amplitude", "x0", "y0", "width_x", "width_y", "offset"),
                  "amplitude / ((1 + ((x - x0) / width_x)**2) * (1 + ((y - y0) / width_y)**2))"
                  " + offset",
                  n_variables=2),
    )
}


def _model_kernels(spec: ModelSpec) -> tuple[KernelSpec, KernelSpec]:
    if spec.param_names is not None:
        names, n = ", ".join(spec.param_names), f"({len(spec.param_names)},)"
    else:
        names, count = spec.variable_params
        n = f"({count},)"
    if spec.n_variables == 1:
        x_doc = "x : (n_points,) float64\n    Independent variable."
        point = "x[i]"
    else:
        x_doc = (f"x : ({spec.n_variables}, n_points) float64\n"
                 "    Coordinates of each point: row 0 is x, row 1 is y.")
        point = "x[:, i]"
    evaluate = KernelSpec(
        f"model_{spec.name}", ("x", "params"),
        f"""Evaluate the {spec.name} model ``{spec.formula}``.

Parameters
----------
{x_doc}
params : {n} float64
    {names}.

Returns
-------
y : (n_points,) float64
""", case="model")
    jacobian = KernelSpec(
        f"jacobian_{spec.name}", ("x", "params"),
        f"""Analytic Jacobian of the {spec.name} model with respect to its parameters.

Parameters
----------
{x_doc}
params : {n} float64
    {names}.

Returns
-------
jac : (n_points, n_params) float64
    ``jac[i, j] = d model({point}) / d params[j]``.
""", case="model")
    return evaluate, jacobian


# The jac_method codes of autofit._codes (0 analytic, 1 forward, 2 central, 3 autodiff),
# written as numbers: this module imports nothing of autofit's.
_JAC_METHOD_NAMES = {0: "JAC_ANALYTIC", 1: "JAC_FORWARD", 2: "JAC_CENTRAL", 3: "JAC_AUTODIFF"}
_SOLVER_JAC_METHODS = (0, 1, 2)
_BATCH_JAC_METHODS = (0, 1)
_AUTODIFF_ON_JAX = (("jax", (3,)),)

_GENERIC = (
    KernelSpec(
        "jacobian_forward", ("model", "x", "params", "f0", "lower", "upper"),
        """Forward-difference Jacobian of ``model`` at ``params``: relative steps, bound-aware.

The step for parameter j is ``sqrt(eps) * |params[j]|`` (``sqrt(eps)`` where it is 0),
rounded so that ``params[j] + h`` is exactly representable; where the step would cross
``upper[j]`` it is taken backwards instead, so the model is not evaluated outside the bounds
(unless the box is narrower than the step itself). Costs n_params model evaluations.

Parameters
----------
model : callable ``model(x, params) -> (n_points,)``
    On numba a jit-compiled function, on jax a traceable one.
x : (n_points,) or (k, n_points) float64
params : (n_params,) float64
f0 : (n_points,) float64
    ``model(x, params)``, already computed.
lower, upper : (n_params,) float64
    Bounds (``-inf``/``inf`` when unbounded).

Returns
-------
jac : (n_points, n_params) float64
""", case="finite_difference"),
    KernelSpec(
        "jacobian_central", ("model", "x", "params", "lower", "upper"),
        """Central-difference Jacobian of ``model`` at ``params``: relative steps, bound-aware.

The step for parameter j is ``eps**(1/3) * |params[j]|`` (``eps**(1/3)`` where it is 0),
which balances truncation and rounding error for a second-order rule (about 10 correct
digits against about 8 for forward differences). Where ``params[j] +- h`` would leave the
bounds, the second-order one-sided rule ``(4 f(p+h) - 3 f(p) - f(p+2h)) / 2h`` on the
feasible side is used. Costs 2 n_params + 1 model evaluations.

Parameters
----------
model : callable ``model(x, params) -> (n_points,)``
x : (n_points,) or (k, n_points) float64
params : (n_params,) float64
lower, upper : (n_params,) float64

Returns
-------
jac : (n_points, n_params) float64
""", case="finite_difference"),
    KernelSpec(
        "jacobian_autodiff", ("model", "x", "params"),
        """Exact Jacobian of ``model`` by forward-mode automatic differentiation.

Only the jax backend differentiates code; on the other backends the fallback table sends
this kernel to jax (the model must then be written with ``jax.numpy``).

Parameters
----------
model : callable ``model(x, params) -> (n_points,)``, traceable by jax
x : (n_points,) or (k, n_points) float64
params : (n_params,) float64

Returns
-------
jac : (n_points, n_params) float64
""", case="autodiff", native=("jax",)),
    KernelSpec(
        "lm_step", ("jtj", "gradient", "scale", "damping", "free"),
        """Solve the damped, scaled normal equations of one Levenberg-Marquardt step by Cholesky.

Solves ``(JᵀJ + damping * diag(scale)**2) step = -gradient`` over the free parameters
(``step`` is 0 for the others) by Cholesky factorisation of the system scaled to unit
diagonal (Marquardt's scaling), which keeps badly scaled problems well conditioned.

Parameters
----------
jtj : (n_params, n_params) float64
    ``JᵀJ`` of the weighted Jacobian.
gradient : (n_params,) float64
    ``Jᵀr`` (half the gradient of χ²).
scale : (n_params,) float64
    Positive parameter scales (MINPACK's ``diag``: running maximum of the column norms).
damping : float
    Levenberg-Marquardt parameter λ ≥ 0.
free : (n_params,) bool
    False for parameters held at an active bound.

Returns
-------
step : (n_params,) float64
ok : bool
    False when the damped system is not positive definite (the caller raises λ).
""", case="lm_step"),
    KernelSpec(
        "lm_solve", ("model", "jacobian", "jac_method", "x", "ydata", "weights", "p0",
                     "lower", "upper", "ftol", "xtol", "gtol", "max_nfev"),
        """Minimise ``||W (model(x, p) - ydata)||²`` over ``lower <= p <= upper`` by LM.

A MINPACK-style LM: Marquardt scaling by the running maximum of the Jacobian's column
norms, Nielsen's update of the damping from the gain ratio, MINPACK's stopping rules, and
Transtrum-Sethna geodesic acceleration (one extra model evaluation per step) that keeps
the iteration on track along curved valleys.
Bounds are handled by a projected LM with an active set: parameters at a bound whose
gradient points outwards are held; the others take the damped step, projected onto the
box, and the gain ratio is computed for the projected step, so every iterate is feasible
and the end point satisfies the first-order (KKT) conditions.

Parameters
----------
model : callable ``model(x, params) -> (n_points,)``
jacobian : callable ``jacobian(x, params) -> (n_points, n_params)``
    The analytic Jacobian; only called when ``jac_method`` is ``JAC_ANALYTIC``.
jac_method : int
    ``autofit._codes.JAC_ANALYTIC``, ``JAC_FORWARD``, ``JAC_CENTRAL`` or ``JAC_AUTODIFF``
    (jax only).
x : (n_points,) or (k, n_points) float64
ydata : (n_points,) float64
weights : (n_points,) or (n_points, n_points) float64
    1-D: multiplies the residuals (``1 / sigma``). 2-D: lower-triangular matrix applied to
    the residual vector (the inverse Cholesky factor of a covariance ``sigma``).
p0 : (n_params,) float64
    Feasible starting point.
lower, upper : (n_params,) float64
ftol : float
    Stop when the actual and predicted relative reductions of χ² are both below ftol.
xtol : float
    Stop when the scaled step is below ``xtol`` times the scaled parameter norm.
gtol : float
    Stop when the largest cosine between the residual and a Jacobian column is below gtol.
max_nfev : int
    Budget of model evaluations (finite-difference ones included).

Returns
-------
params : (n_params,) float64
chi2 : float
    ``||W (model(x, params) - ydata)||²``.
status : int
    A code from :mod:`autofit._codes` (1-4, 6 converged; 5 budget spent; 7 non-finite).
nfev : int
    Model evaluations used.
n_iter : int
    Accepted steps.
""", case="lm_solve", jac_methods=_SOLVER_JAC_METHODS, jac_methods_extra=_AUTODIFF_ON_JAX),
    KernelSpec(
        "lm_batch", ("model", "jacobian", "jac_method", "x", "ydata", "weights", "p0",
                     "lower", "upper", "free", "estimator", "tol", "max_iter"),
        """Fit many independent curves at once by Levenberg-Marquardt (LSE or Poisson MLE).

Each fit is independent: one bad fit gets a status and never changes another's result.
The algorithm is defined in :mod:`autofit.original.batch` (Gpufit's damping schedule with
Marquardt scaling, MINPACK's stopping tests with one tolerance, bounds by projection).

Parameters
----------
model : callable ``model(x, params) -> (n_points,)``
    The same form on every backend: a built-in model's kernel (``model_<name>`` of the
    backend's module), or the caller's own (jax: traceable; numba: compiled with
    ``numba.njit``, run by its engine for array models). numba runs a built-in model's
    kernels as their point functions (:mod:`autofit.numba.points`), and also takes point
    functions ``value(x, i, params) -> float`` directly.
jacobian : callable ``jacobian(x, params) -> (n_points, n_params)``
    Used when ``jac_method`` is ``JAC_ANALYTIC`` (numba: or a point function
    ``gradient(x, i, params, jac, col) -> float`` beside a point-function model).
jac_method : int
    ``JAC_ANALYTIC``, ``JAC_FORWARD`` or (jax) ``JAC_AUTODIFF``.
x : (1 or n_fits, n_variables, n_points) float64
    Shared by all fits (leading size 1) or one per fit. One-variable models receive
    ``x[fit, 0]`` as ``(n_points,)``.
ydata : (n_fits, n_points) float64
    Data; counts for Poisson MLE.
weights : (1 or n_fits, n_points) float64
    ``1 / sigma`` for least squares; 1 or 0 for Poisson MLE. Points with weight 0 are
    ignored (the model is not even required to be finite there): padding and masks.
p0 : (n_fits, n_params) float64
lower, upper : (1 or n_fits, n_params) float64
free : (n_params,) bool
    False for parameters held at p0.
estimator : int
    ``ESTIMATOR_LSE`` or ``ESTIMATOR_MLE``.
tol : float
    Relative tolerance of the stopping tests.
max_iter : int
    Iterations (model passes, accepted or rejected) per fit.

Returns
-------
params : (n_fits, n_params) float64
chi2 : (n_fits,) float64
    Weighted sum of squares, or the Poisson deviance ``2 Σ (f - y - y log(f / y))``; nan
    for fits not attempted.
n_iter : (n_fits,) int64
status : (n_fits,) int64
    A code from :mod:`autofit._codes` (see :class:`autofit.Status`).
covariance : (n_fits, n_params, n_params) float64
    Inverse of ``JᵀW²J`` (least squares, not scaled by the reduced χ²) or of the Fisher
    information (MLE); nan when not invertible; 0 in rows and columns of fixed parameters.
""", case="lm_batch", jac_methods=_BATCH_JAC_METHODS, jac_methods_extra=_AUTODIFF_ON_JAX),
    KernelSpec(
        "lm_fused", ("model", "jacobian", "jac_method", "x", "ydata", "weights", "p0",
                     "lower", "upper", "ftol", "xtol", "gtol", "max_nfev", "estimator"),
        """Fit one model to very many points by LM without storing the Jacobian.

Each iteration is one pass over the points, in chunks, that evaluates the model (and its
Jacobian) at the trial point and accumulates χ², ``JᵀW²r`` and ``JᵀW²J`` at once, so the
memory beyond the data is that of a chunk. The algorithm (the batched solver's damping and
bounds with scipy's ftol/xtol/gtol stopping tests, and its robust losses) is defined in
:mod:`autofit.original.fused`.

Parameters
----------
model : callable ``model(x, params) -> (n_points,)``
    The same form on every backend, called on chunks of the points (jax: traceable). numba
    fuses the model into its pass point by point: it runs a built-in model's kernels as
    their point functions (:mod:`autofit.numba.points`) and takes point functions
    ``value(x, i, params) -> float`` directly; another array model raises TypeError there.
jacobian : callable ``jacobian(x, params) -> (n_points, n_params)``
    Used when ``jac_method`` is ``JAC_ANALYTIC`` (numba: or a point function
    ``gradient(x, i, params, jac, col) -> float`` beside a point-function model).
jac_method : int
    ``JAC_ANALYTIC``, ``JAC_FORWARD``, ``JAC_CENTRAL`` or (jax) ``JAC_AUTODIFF``.
x : (n_variables, n_points) float64
    One-variable models receive ``x[0]`` (a chunk of it) as ``(n_points,)``.
ydata : (n_points,) float64
weights : (n_points,) or (1,) float64
    ``1 / sigma`` per point, or one weight for every point (no array of the data's size
    is then needed). Points of weight 0 are ignored.
p0 : (n_params,) float64
lower, upper : (n_params,) float64
ftol, xtol, gtol : float
    Relative reduction of χ², relative step, and largest cosine between the residuals and a
    Jacobian column below which the fit has converged.
max_nfev : int
    Budget of model evaluations (a pass costs 1, ``n_params + 1`` forward or
    ``2 n_params + 1`` central).
estimator : int, optional
    ``ESTIMATOR_LSE`` (the default) or a robust loss, ``ESTIMATOR_SOFT_L1``, ``_HUBER``,
    ``_CAUCHY`` or ``_ARCTAN`` (scipy's losses at ``f_scale`` 1: divide the weights by
    f_scale); anything else, Poisson MLE included, raises ValueError.

Returns
-------
params : (n_params,) float64
chi2 : float
    ``Σ (w (y - model(x, params)))²``; for a robust loss ``Σ rho(z)``, ``z`` that square
    per point.
status : int
    A code from :mod:`autofit._codes` (1-4, 6 converged; 5 budget spent; 7 non-finite;
    9 singular).
nfev : int
    Model evaluations of the fit (a robust loss's information pass is not counted).
n_iter : int
    Passes over the points after the first (accepted or rejected steps).
information : (n_params, n_params) float64
    ``JᵀW²J`` at ``params`` (the covariance is its pseudo-inverse); for a robust loss
    scipy's ``Σ w² max(rho1 + 2 rho2 z, eps) J Jᵀ`` at ``params``, from one more pass.
""", case="lm_fused", jac_methods=_SOLVER_JAC_METHODS, jac_methods_extra=_AUTODIFF_ON_JAX),
    KernelSpec(
        "covariance_from_jacobian", ("jac",),
        """Unscaled parameter covariance ``(JᵀJ)⁺`` from the weighted Jacobian, by SVD.

Uses the SVD of ``jac`` and drops singular values below ``eps * max(jac.shape) * s_max``
(scipy's rule), so a rank-deficient Jacobian gives the pseudo-inverse.

Parameters
----------
jac : (n_points, n_params) float64
    Weighted Jacobian at the solution.

Returns
-------
pcov : (n_params, n_params) float64
rank : int
    Number of singular values kept.
""", case="covariance"),
    KernelSpec(
        "covariance_from_information", ("information",),
        """Unscaled parameter covariance ``(JᵀW²J)⁺`` from the information matrix.

What ``lm_fused`` returns instead of a Jacobian. Eigenvalues below
``n_params * eps * λ_max`` are dropped (a pseudo-inverse where the matrix is singular):
``JᵀW²J`` is only known to about ``eps * λ_max``, so scipy's rule on the singular values of
J (relative ``eps * n_points``, squared here) cannot be used. Only the lower triangle is
read. A matrix with a non-finite entry gives a covariance of nan and rank 0.

Parameters
----------
information : (n_params, n_params) float64
    ``JᵀW²J`` at the solution.

Returns
-------
pcov : (n_params, n_params) float64
rank : int
    Number of eigenvalues kept.
""", case="information"),
)


def _all_kernels() -> dict[str, KernelSpec]:
    kernels: list[KernelSpec] = []
    for spec in MODELS.values():
        kernels.extend(_model_kernels(spec))
    kernels.extend(_GENERIC)
    return {k.name: k for k in kernels}


KERNELS: dict[str, KernelSpec] = _all_kernels()
BACKENDS: tuple[str, ...] = ("original", "numba", "jax")


def require_jac_method(kernel: str, backend: str, jac_method) -> None:
    """Refuse a ``jac_method`` that ``kernel`` does not accept on ``backend`` ('numpy',
    'numba', 'jax'): the one ValueError, worded the same by every backend."""
    accepted = KERNELS[kernel].accepted_jac_methods(backend)
    if jac_method not in accepted:
        names = ", ".join(f"{_JAC_METHOD_NAMES[code]} ({code})" for code in accepted)
        raise ValueError(f"{kernel} on {backend}: jac_method must be one of {names}; got "
                         f"{jac_method!r}")


def implements(name: str):
    """Mark a backend function as the implementation of kernel ``name``.

    Attaches the declared docstring and checks, at import, that the parameter names match
    the declaration (a mismatch is a programming error in autofit, so it raises at once).
    """
    spec = KERNELS[name]

    def decorate(func):
        python_func = getattr(func, "py_func", func)  # numba dispatchers keep the original
        params = tuple(inspect.signature(python_func).parameters)
        if params != spec.signature:
            raise TypeError(f"{python_func.__module__}.{name} has parameters {params}, "
                            f"but the declaration says {spec.signature}")
        func.__doc__ = spec.doc
        try:
            python_func.__doc__ = spec.doc
        except AttributeError:
            pass
        return func

    return decorate
