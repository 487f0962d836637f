"""What the NumPy backend needs from a user's model, and what it runs on.

Every backend has a ``host`` module with the same names (:mod:`autofit.numba.host`,
:mod:`autofit.jax.host`); the user layer (``curve_fit``, ``fit_batch``, the CLI) calls them
through :func:`autofit._dispatch.host_of` and never branches on a backend's name:

- ``DEVICES``, :func:`device_name`, :func:`device_report`: where the backend runs;
- :func:`precision`: the context its kernels run in; :func:`padded_length`: the number of
  points a single fit is padded to;
- :func:`array_model`, :func:`no_jacobian`, ``JAC_WITHOUT_JACOBIAN``: a user's
  ``f(x, *params)`` as the ``model(x, params)`` its ``lm_solve`` takes;
- :func:`check_compiles`, :func:`run_instead`: whether it can run that model, and what runs
  a model it cannot;
- :func:`fused_model`, :func:`is_compile_error`: the model as its ``lm_fused`` takes it;
- :func:`exact_prepared`: the model with the exact derivatives generated from its source
  (:mod:`autofit._forward_mode`), where the backend runs them as they are generated;
- :func:`batch_engine`, :func:`batch_call`, :func:`batch_rescue`, ``CHUNKS_RECOMPILE``:
  the engine that runs ``fit_batch``'s fits.

Here the model is called as it is; a batch of a user's model that broadcasts over fits
runs all fits in lockstep (:mod:`autofit.original.batch_broadcast`).
"""

from __future__ import annotations

import contextlib
import platform

import numpy as np

from autofit import _codes, _forward_mode
from autofit._adapters import BatchEngine, Prepared, cached, prepare, unused_jacobian
from autofit.models import Model
from autofit.original.batch import lm_batch
from autofit.original.batch_broadcast import broadcasts, lm_batch_broadcast

DEVICES = ("cpu",)
# Without a Jacobian the model's derivatives are finite differences (None: no other way).
JAC_WITHOUT_JACOBIAN = None
# Whether a batch chunk of a new size costs a compilation (then chunks keep one size).
CHUNKS_RECOMPILE = False
# Whether a huge single fit starts from a fit to a strided subsample (autofit._fused):
# a pass over a subsample costs its share of a pass.
COARSE_START = True


def device_name(requested: str = "cpu") -> str:
    """The device the fits ran on."""
    return requested


def device_report() -> str:
    """One line for ``python -m autofit backends``."""
    return f"cpu ({platform.machine()})"


def precision(float64: bool = True):
    """The context the kernels run in (NumPy keeps each array's own dtype)."""
    return contextlib.nullcontext()


def padded_length(n_points: int) -> int:
    """The number of points a single fit's arrays are padded to (none here)."""
    return n_points


def array_model(f, n_params: int):
    """``model(x, params)`` calling the user's ``f(x, *params)``."""
    def model(x, params):
        return np.asarray(f(x, *params), dtype=np.float64)

    return model


def no_jacobian():
    """A placeholder for ``lm_solve``'s unused Jacobian argument."""
    return unused_jacobian


def check_compiles(prepared, x, p0) -> None:
    """Nothing to compile: NumPy runs any model that Python runs."""


def run_instead(prepared, error, x, p0, f, jac):
    """What runs a model :func:`check_compiles` refused: nothing here, the error stands."""
    raise error


def fused_model(f, jac, prepared, n_params: int, n_variables: int):
    """``(model, jacobian, jac_method, polish_method)`` as ``lm_fused`` takes them."""
    return (prepared.model, prepared.jacobian, prepared.jac_method,
            prepared.polish_method)


def exact_prepared(prepared, exact, n_params: int, x, p0):
    """``prepared`` with the Jacobian of a user's model from ``exact``, the ``(value,
    gradient)`` point functions generated from its source (:mod:`autofit._forward_mode`,
    checked there against the model): the gradient's lines run on every point at once,
    each derivative written once where it is not zero. ``prepared`` as it is where they do
    not run on arrays (checked once, against the point gradient at ``p0`` on a sample of
    ``x``).

    A pass takes the model's value from the same lines where they give it
    (``jacobian.with_value``, :func:`_checked_array_jacobian`): a pass of the gaussian on a
    line (5 parameters, 3,000 points) costs those lines (~30 us) where forward differences
    cost six models and their arithmetic (110 us), and the fit needs no central differences
    for its last steps and covariance: the same road as numba's fused pass, with the same
    derivatives. The user's own function still gives the value at p0's check and fvec.
    """
    jacobian = _array_jacobian(exact[1], n_params, x, p0)
    if jacobian is None:
        return prepared
    return Prepared(prepared.model, jacobian, _codes.JAC_ANALYTIC, None, _codes.JAC_ANALYTIC,
                    note=_forward_mode.EXACT_NOTE)


def _array_jacobian(gradient, n_params: int, x, p0):
    """:func:`_checked_array_jacobian`, built once per point gradient."""
    return cached(gradient, ("numpy", n_params, "array jacobian"),
                  lambda: _checked_array_jacobian(gradient, n_params, x, p0))


def _columns(values, rows, guarded=()):
    # (n_params, ...) filled derivative by derivative (one may be a number: x's
    # coefficient), returned as the (..., n_params) view the solvers take: (n_points,
    # n_params) for a fit, (n_fits, n_points, n_params) for the batch's columns of
    # parameters (_batched_jacobian); a nan derivative of the guarded columns is 0
    # (autofit._forward_mode), found by one sum
    if rows.ndim == 2:
        shape = rows.shape[1:]
    else:
        shape = np.broadcast_shapes(rows.shape[1:], *(np.shape(v) for v in values))
    out = np.empty((len(values),) + shape)
    for j, value in enumerate(values):
        out[j] = value
    for j in guarded:
        if np.isnan(np.sum(out[j])):
            out[j][np.isnan(out[j])] = 0.0
    return out.transpose(tuple(range(1, out.ndim)) + (0,))  # (np.moveaxis: 5 us more)


def _values(value, rows):
    # the model's value at every point: (n_points,) (or (n_fits, n_points) for columns of
    # parameters); a model that does not vary with x gives a number here
    shape = np.broadcast_shapes(rows.shape[1:], np.shape(value))
    if np.shape(value) == shape:
        return value
    return np.broadcast_to(np.asarray(value, dtype=np.float64), shape)


_ARRAY_NAMESPACE = {"math": _forward_mode.ArrayMath, "np": np, "abs": np.abs,
                    "_where": np.where, "_and": np.logical_and, "_or": np.logical_or,
                    "_not": np.logical_not, "_atleast_2d": np.atleast_2d,
                    "_columns": _columns, "_values": _values}


def _checked_array_jacobian(gradient, n_params: int, x, p0):
    """``jacobian(x, params) -> (n_points, n_params)`` from the point ``gradient``'s source,
    or None where it does not give the point gradient's numbers on a sample of ``x``.
    ``jacobian.with_value(x, params) -> (f, jacobian)`` gives the model's value from the
    same lines (the gradient's value, which was checked against the model), where they give
    the point gradient's value too: a pass of the fused loop or of the reference batch
    then calls no model (:func:`autofit.original.jacobians.value_and_jacobian`; a
    gaussian on a line, 3,000 points: 14 us of a 100 us pass)."""
    namespace = dict(_ARRAY_NAMESPACE)
    try:
        exec(_forward_mode.array_jacobian_code(  # noqa: S102 - generated from an AST
            gradient.generated_source, n_params, "<autofit numpy derivatives>"), namespace)
        on_arrays = namespace["jacobian"]
        both_on_arrays = namespace.get("value_and_jacobian")

        # Overflow or 0/0 on the way is no news to the user: a non-finite value or
        # derivative makes the pass non-finite, which the fit reports (NONFINITE), and the
        # model's own warnings come from its calls outside the passes (its check at p0,
        # the residuals of full_output).
        def jacobian(x, params):
            with np.errstate(all="ignore"):
                return on_arrays(x, params)

        def with_value(x, params):
            with np.errstate(all="ignore"):
                return both_on_arrays(x, params)

        jacobian.on_arrays = on_arrays

        x2 = np.atleast_2d(np.asarray(x, dtype=np.float64))
        sample = np.linspace(0, x2.shape[1] - 1, min(x2.shape[1], 16)).astype(np.int64)
        p = np.asarray(p0, dtype=np.float64)
        expected = np.zeros((n_params, sample.size))
        values = np.zeros(sample.size)
        with np.errstate(all="ignore"):
            for k, point in enumerate(sample):
                values[k] = gradient(x2, point, p, expected, k)
        x_sample = x2[:, sample] if x2.shape[0] > 1 else x2[0, sample]
        got = jacobian(x_sample, p)
        got_both = with_value(x_sample, p) if both_on_arrays is not None else None
    except Exception:  # noqa: BLE001 - whatever the lines meet on arrays: the point way
        return None
    if got.shape != (sample.size, n_params) or not np.allclose(
            got, expected.T, rtol=1e-12, atol=0.0, equal_nan=True):
        return None
    if got_both is not None and np.shape(got_both[0]) == values.shape and np.allclose(
            got_both[0], values, rtol=1e-12, atol=0.0, equal_nan=True) and np.array_equal(
            got_both[1], got, equal_nan=True):
        jacobian.with_value = with_value
    return jacobian


def is_compile_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the backend cannot compile the model (never, here)."""
    return False


def batch_engine(problem, device: str) -> BatchEngine:
    """The engine for ``fit_batch``'s ``problem``: all fits in lockstep for a user's
    one-variable float64 model that broadcasts over fits, else the reference (one fit
    after another), which also runs a single fit (a robust ``curve_fit``: the lockstep's
    bookkeeping cost it more than it saved, soft_l1 on 3,000 points 5.1 against 3.2 ms).
    A user's model takes the derivatives generated from its source where there are
    (:func:`exact_prepared`; in lockstep: :func:`_batched_jacobian`)."""
    lockstep = _broadcast_engine(problem) if problem.n_fits > 1 else None
    if lockstep is not None:
        return lockstep
    prepared = prepare("numpy", problem.model, problem.n_params, problem.jac)
    if not isinstance(problem.model, Model) and problem.dtype == np.float64:
        exact, _ = problem.exact()
        if exact is not None:
            x = problem.x[0, 0] if problem.x.shape[1] == 1 else problem.x[0]
            prepared = exact_prepared(prepared, exact, problem.n_params, x, problem.p0[0])
    return BatchEngine(lm_batch, prepared.model, prepared.jacobian, prepared.jac_method,
                       prepared.note)


def batch_call(solve, args, dtype):
    """``solve(*args)``: one chunk of fits."""
    return solve(*args)


def batch_rescue(problem, device: str, error):
    """Another engine for a model the batch engine could not run: none here."""
    return None


def _broadcast_engine(problem):
    f = problem.model
    if (isinstance(f, Model) or problem.dtype != np.float64 or problem.x.shape[1] != 1
            or problem.jac not in (None, "2-point")):
        return None
    sample = problem.p0[:3].astype(np.float64)
    x = problem.x[:, 0, :]
    x_sample = x[0] if x.shape[0] == 1 else x[:sample.shape[0]]
    if not broadcasts(f, x_sample, sample):
        return None
    jacobian = None
    exact, _ = problem.exact()
    if exact is not None:
        jacobian = cached(exact[1], ("numpy", problem.n_params, "batched jacobian"),
                          lambda: _batched_jacobian(exact[1], problem.n_params, x_sample,
                                                    sample))

    def solve(model, _, jac_method, x, y, w, p0, lower, upper, free, estimator, tol,
              max_iter):
        return lm_batch_broadcast(f, x[:, 0, :], y, w, p0, lower, upper, free, estimator,
                                  tol, max_iter, jacobian)

    if jacobian is None:
        return BatchEngine(solve, None, None, _codes.JAC_FORWARD)
    return BatchEngine(solve, None, None, _codes.JAC_ANALYTIC, _forward_mode.EXACT_NOTE)


def _batched_jacobian(gradient, n_params: int, x, p_rows):
    """``jacobian(x, p) -> (n_fits, n_points, n_params)`` for the broadcast engine (``x``
    ``(1 or n_fits, n_points)``, ``p`` ``(n_fits, n_params)``): the point ``gradient``'s
    lines on arrays (:func:`exact_prepared`) with each parameter a column ``(n_fits, 1)``,
    as the model is called; None where they do not give a fit's own columns for the rows
    of ``p_rows`` (checked once)."""
    single = _array_jacobian(gradient, n_params, x if x.ndim == 1 else x[0], p_rows[0])
    if single is None:
        return None
    on_arrays = single.on_arrays

    def jacobian(x, p):
        x = np.atleast_2d(x)
        with np.errstate(all="ignore"):  # (as in _checked_array_jacobian)
            columns = on_arrays(x[None], p.T[:, :, None])
        return np.broadcast_to(columns, (p.shape[0], x.shape[-1], p.shape[1]))

    try:
        together = jacobian(x, p_rows)
        apart = np.stack([single(x if x.ndim == 1 else x[k], row)
                          for k, row in enumerate(p_rows)])
    except Exception:  # noqa: BLE001 - lines that do not take columns: finite differences
        return None
    if together.shape != apart.shape or not np.allclose(together, apart, rtol=1e-12, atol=0.0,
                                                        equal_nan=True):
        return None
    return jacobian
