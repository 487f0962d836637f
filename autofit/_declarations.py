"""The one declaration of every kernel: name, parameters in order, and docstring.

Each backend (``autofit.original``, ``autofit.numba``, ``autofit.jax``) implements these
functions under the same names and with the same parameters; ``implements`` attaches the
declared docstring to each implementation, so documentation lives here only. The dispatcher,
the generated cross-backend tests (``tests/test_kernels.py``), ``python -m autofit validate``
and the docs all read ``KERNELS`` and ``MODELS``, so the backends cannot drift apart
unnoticed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """A built-in model: its parameters and formula.

    ``param_names`` is None for models whose number of parameters is chosen by the caller
    (the polynomial's degree follows from the length of ``params``).
    """

    name: str
    param_names: tuple[str, ...] | None
    formula: str


@dataclass(frozen=True)
class KernelSpec:
    """A kernel every backend provides under ``name`` with parameters ``signature``.

    ``native`` lists the backends that implement it; any other backend runs it through the
    fallback table in :mod:`autofit._dispatch`. ``case`` names the input factory in
    :mod:`autofit._cases` that the generated tests and ``validate`` use.
    """

    name: str
    signature: tuple[str, ...]
    doc: str
    case: str
    native: tuple[str, ...] = ("original", "numba", "jax")


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("linear", ("slope", "intercept"), "slope * x + intercept"),
        ModelSpec("polynomial", None, "c0 + c1 * x + c2 * x**2 + ... (degree = len(params) - 1)"),
        ModelSpec("exponential_decay", ("amplitude", "rate", "offset"),
                  "amplitude * exp(-rate * x) + offset"),
        ModelSpec("gaussian", ("amplitude", "center", "width", "offset"),
                  "amplitude * exp(-(x - center)**2 / (2 * width**2)) + offset"),
        ModelSpec("lorentzian", ("amplitude", "center", "hwhm", "offset"),
                  "amplitude * hwhm**2 / ((x - center)**2 + hwhm**2) + offset"),
    )
}


def _model_kernels(spec: ModelSpec) -> tuple[KernelSpec, KernelSpec]:
    names = ", ".join(spec.param_names) if spec.param_names else "c0, c1, ..., c_degree"
    n = f"({len(spec.param_names)},)" if spec.param_names else "(degree + 1,)"
    evaluate = KernelSpec(
        f"model_{spec.name}", ("x", "params"),
        f"""Evaluate the {spec.name} model ``{spec.formula}``.

Parameters
----------
x : (n_points,) float64
    Independent variable.
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
x : (n_points,) float64
params : {n} float64
    {names}.

Returns
-------
jac : (n_points, n_params) float64
    ``jac[i, j] = d model(x[i]) / d params[j]``.
""", case="model")
    return evaluate, jacobian


_GENERIC = (
    KernelSpec(
        "jacobian_forward", ("model", "x", "params", "f0", "lower", "upper"),
        """Forward-difference Jacobian of ``model`` at ``params``.

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
        """Central-difference Jacobian of ``model`` at ``params``.

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
        """Solve the damped, scaled normal equations for one Levenberg-Marquardt step.

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
        """Minimise ``||W (model(x, p) - ydata)||²`` over ``lower <= p <= upper`` by Levenberg-Marquardt.

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
""", case="lm_solve"),
    KernelSpec(
        "covariance_from_jacobian", ("jac",),
        """Unscaled parameter covariance ``(JᵀJ)⁺`` from the weighted Jacobian.

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
)


def _all_kernels() -> dict[str, KernelSpec]:
    kernels: list[KernelSpec] = []
    for spec in MODELS.values():
        kernels.extend(_model_kernels(spec))
    kernels.extend(_GENERIC)
    return {k.name: k for k in kernels}


KERNELS: dict[str, KernelSpec] = _all_kernels()
BACKENDS: tuple[str, ...] = ("original", "numba", "jax")


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
