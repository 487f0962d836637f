"""What the numba backend needs from a user's own model for one fit (``curve_fit``).

A user writes ``f(x, a, b, c)`` in NumPy. numba compiles it (``numba.njit``) and a small
generated wrapper ``model(x, params)`` with a fixed signature; the wrapper is passed to the
single-fit driver :func:`solve` as a *first-class function* (``numba.types.FunctionType``),
by its address (:func:`autofit.numba.first_class.model_at`).
The driver is therefore compiled once for each layout of ``x`` and of the weights, not once
per model, and it lives in numba's disk cache: a model the process has never seen costs only
the compilation of that model (0.6-1.3 s measured), and a new process loads the driver. The
user's ``exp`` calls run the vectorisable exp (:func:`with_vectorisable_exp`); an exception
the user's code raises in compiled code comes back as nan (see ``_wrapper_source``).

:func:`compile_model` is what the default rule's quick start
(:func:`autofit._dispatch.quick_choice`) runs on a background thread, once the NumPy
engine has answered a new model's first calls for their time. ``backend="numba"`` given
explicitly compiles at once (:func:`prepare`).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import math
import textwrap
import threading
import types as types_module
import weakref

import numpy as np
from numba import njit, types
from numba.core.errors import NumbaError

from autofit._adapters import BatchEngine, first_line
from autofit._codes import (
    JAC_ANALYTIC,
    JAC_CENTRAL,
    JAC_FORWARD,
)
from autofit._dispatch import BackendCannotRun
from autofit.models import Model
from autofit.numba.first_class import (
    _F8,
    _X_TYPES,
    JACOBIAN_TYPES,
    MODEL_TYPES,
    CompiledFunction,
    is_converged,
    jacobian_at,
    model_at,
    placeholder_jacobian,
    zero_jacobian,
)
from autofit.numba.jacobians import jacobian_central, jacobian_forward
from autofit.numba.lm import as_weight_columns, lm_solve_2d
from autofit.numba.points import POINT_FUNCTIONS


def _solve(model_address, jacobian_address, jac_method, polish_method, covariance_method,
           x, ydata, weights, p0, lower, upper, ftol, xtol, gtol, max_nfev):
    model, jacobian = model_at(model_address, x), jacobian_at(jacobian_address, x)
    params, chi2, status, nfev, n_iter = lm_solve_2d(
        model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, ftol, xtol, gtol,
        max_nfev)
    if polish_method >= 0 and is_converged(status):
        params, chi2, status, nfev_polish, n_polish = lm_solve_2d(
            model, jacobian, polish_method, x, ydata, weights, params, lower, upper, ftol,
            xtol, gtol, max(max_nfev - nfev, 1))
        nfev += nfev_polish
        n_iter += n_polish
    n_points = ydata.shape[0]
    jac = np.zeros((n_points, p0.shape[0]))
    if is_converged(status):
        if covariance_method == JAC_ANALYTIC:
            jac = jacobian(x, params)
        elif covariance_method == JAC_CENTRAL:
            jac = jacobian_central(model, x, params, lower, upper)
        else:
            jac = jacobian_forward(model, x, params, model(x, params), lower, upper)
    return params, chi2, status, nfev, n_iter, jac


def _solve_signature(x_ndim: int):
    array = _F8[::1]
    # The weights as lm_solve_2d takes them (as_weight_columns): always 2-D.
    # The model and its Jacobian by address (:func:`autofit.numba.first_class.model_at`).
    return (types.int64, types.int64, types.int64, types.int64,
            types.int64, _X_TYPES[x_ndim], array, _F8[:, ::1], array, array, array, _F8, _F8,
            _F8, types.int64)


_solve_lock = threading.Lock()
_solvers: dict = {}  # x_ndim -> the driver compiled for that layout


def _solver(x_ndim: int):
    """The driver for these layouts, compiled (or loaded from numba's disk cache) once.

    A dispatcher with one explicit signature per layout: it never compiles again, so a
    compiled model passed to it is converted to the first-class function type instead of
    starting a compilation specialised on that model.
    """
    with _solve_lock:
        if x_ndim not in _solvers:
            _solvers[x_ndim] = njit(_solve_signature(x_ndim), cache=True,
                                    error_model="numpy")(_solve)
    return _solvers[x_ndim]


def solve(model, jacobian, jac_method, polish_method, covariance_method, x, ydata, weights,
          p0, lower, upper, ftol, xtol, gtol, max_nfev):
    """One fit of a compiled model: ``lm_solve``, its polish pass and the covariance Jacobian.

    Parameters
    ----------
    model, jacobian : compiled functions from :func:`prepare`
    jac_method, polish_method, covariance_method : int
        ``autofit._codes.JAC_*``; ``polish_method`` -1 for no polish pass.
    x : (n_points,) or (k, n_points) float64, C-contiguous
    ydata : (n_points,) float64
    weights : (n_points,) or (n_points, n_points) float64
    p0, lower, upper : (n_params,) float64

    Returns
    -------
    params, chi2, status, nfev, n_iter, jac
        ``jac`` (n_points, n_params) is the unweighted Jacobian at ``params`` for the
        covariance (zeros when the fit did not converge).
    """
    polish = -1 if polish_method is None else polish_method
    # model and jacobian (held by the caller) keep the code at their addresses alive.
    return _solver(x.ndim)(
        model.address, jacobian.address, jac_method, polish, covariance_method, x, ydata,
        as_weight_columns(weights), p0, lower,
        upper, float(ftol), float(xtol), float(gtol), int(max_nfev))


def _wrapper_source(n_params: int, returns: str, catch: bool = True) -> str:
    """``call_<returns>_<n_params>(x, params)``: ``user(x, params[0], params[1], ...)`` as a
    float64 array (numba cannot call ``f(x, *params)`` with an array)."""
    arguments = ", ".join(f"params[{i}]" for i in range(n_params))
    call = f"np.asarray(user(x, {arguments}), dtype=np.float64)"
    if not catch:
        return f"def call_{returns}_{n_params}(x, params):\n    return {call}\n"
    shape = "x.shape[-1]" if returns == "model" else f"(x.shape[-1], {n_params})"
    # The declared result is a C-contiguous float64 array: a function returning anything
    # else does not compile, and numba cannot run it (the NumPy engine does). An exception
    # cannot cross a first-class function call (it would crash the process): the wrapper
    # returns nan instead, the fit ends NONFINITE, and the caller reruns it on NumPy, where
    # the user's exception is raised as it is.
    return (f"def call_{returns}_{n_params}(x, params):\n"
            f"    try:\n"
            f"        return {call}\n"
            f"    except Exception:\n"
            f"        return np.full({shape}, np.nan)\n")


class _ExpCalls(ast.NodeTransformer):
    """``np.exp(...)`` / ``math.exp(...)`` (the names bound to those modules) become
    ``_exp_any(...)``."""

    def __init__(self, names):
        self.names = names

    def visit_Call(self, node):
        self.generic_visit(node)
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr == "exp"
                and isinstance(f.value, ast.Name) and f.value.id in self.names):
            node.func = ast.copy_location(ast.Name("_exp_any", ast.Load()), f)
        return node


def with_vectorisable_exp(f):
    """``f`` recompiled from its source with its ``exp`` calls on float64 running
    :func:`autofit.numba.fastexp.vexp` (within 1 ulp of ``numpy.exp``; numba's own exp is
    libm's, one value at a time, about twice as slow). ``f`` itself where its source cannot
    be read or it calls no exp."""
    from autofit.numba.fastexp import exp_any

    names = {name for name in f.__code__.co_names
             if f.__globals__.get(name) is np or f.__globals__.get(name) is math}
    if "exp" not in f.__code__.co_names or not names:
        return f
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(f)))
    except (OSError, TypeError, SyntaxError):
        return f
    definition = tree.body[0] if tree.body else None
    if not isinstance(definition, ast.FunctionDef) or definition.name != f.__name__:
        return f
    definition.decorator_list = []
    tree = ast.fix_missing_locations(_ExpCalls(names).visit(tree))
    namespace = dict(f.__globals__)
    for name, cell in zip(f.__code__.co_freevars, f.__closure__ or (), strict=True):
        namespace[name] = cell.cell_contents
    namespace["_exp_any"] = exp_any
    try:
        exec(compile(tree, inspect.getsourcefile(f) or "<autofit>", "exec"),  # noqa: S102
             namespace)
    except Exception:  # noqa: BLE001 - anything odd: compile the user's function as it is
        return f
    return namespace[definition.name]


def _compile_wrapper(f, n_params: int, x_ndim: int, returns: str):
    import numba
    from numba.core.registry import CPUDispatcher

    try:
        user = f if isinstance(f, CPUDispatcher) else numba.njit(error_model="numpy")(
            with_vectorisable_exp(f) if isinstance(f, types_module.FunctionType) else f)
    except Exception as exc:  # numba refuses some callables outright (builtins, classes)
        raise BackendCannotRun(f"numba cannot compile {_name(f)}: {exc}") from exc
    namespace = {"np": np, "user": user}
    exec(_wrapper_source(n_params, returns), namespace)  # noqa: S102 - from integers only
    kind = MODEL_TYPES if returns == "model" else JACOBIAN_TYPES
    signature = kind[x_ndim].signature
    try:
        return CompiledFunction(numba.njit(signature, error_model="numpy")(
            namespace[f"call_{returns}_{n_params}"]), kind[x_ndim])
    except NumbaError as exc:
        raise BackendCannotRun("numba cannot compile the model: " + first_line(exc)) from exc
    except Exception as exc:  # e.g. a Python error numba raised while typing the user's code
        raise BackendCannotRun(f"numba cannot compile the model: {first_line(exc)}"
                               ) from exc


# f -> {(n_params, x_ndim, kind): compiled wrapper or the exception that stopped it}
_wrappers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_strong_wrappers: dict = {}  # for callables that cannot be weakly referenced
_wrappers_lock = threading.Lock()


def _table(f):
    try:
        return _wrappers.setdefault(f, {})
    except TypeError:
        return _strong_wrappers.setdefault(id(f), {"function": f})


def _wrapper(f, n_params: int, x_ndim: int, returns: str):
    """The compiled wrapper of ``f`` (compiled now if no warm-up has done it)."""
    return _kept(f, (n_params, x_ndim, returns),
                 lambda: _compile_wrapper(f, n_params, x_ndim, returns))


def _kept(f, key, build):
    """What ``build()`` compiled for ``f`` under ``key``, built once (also when a warm-up
    is running: a call that needs it waits for it, a call that needs something else of
    ``f`` does not); BackendCannotRun, kept too, if it cannot be."""
    with _wrappers_lock:
        table = _table(f)
        building = table.setdefault(("building", *key), threading.Lock())
    with building:
        with _wrappers_lock:
            found = table.get(key)
        if found is None:
            try:
                found = build()
            except BackendCannotRun as exc:
                found = exc
            with _wrappers_lock:
                table[key] = found
    if isinstance(found, BackendCannotRun):
        raise BackendCannotRun(str(found))
    return found


def _points_source(n_params: int, x_ndim: int) -> str:
    """``model(x, params)`` and ``jacobian(x, params)`` looping over the points with the
    point functions ``value(x2, i, p)`` and ``gradient(x2, i, p, jac, col)`` (x2: the
    variables by rows, as the fused pass holds them)."""
    rows = "x.reshape((1, x.shape[0]))" if x_ndim == 1 else "x"
    return (f"def model(x, params):\n"
            f"    x2 = {rows}\n"
            f"    out = np.empty(x2.shape[1])\n"
            f"    for i in range(x2.shape[1]):\n"
            f"        out[i] = value(x2, i, params)\n"
            f"    return out\n"
            f"def jacobian(x, params):\n"
            f"    x2 = {rows}\n"
            f"    by_rows = np.empty(({n_params}, x2.shape[1]))\n"
            f"    for i in range(x2.shape[1]):\n"
            f"        gradient(x2, i, params, by_rows, i)\n"
            f"    return np.ascontiguousarray(by_rows.T)\n")


def prepare_points(value, gradient, n_params: int, x_ndim: int):
    """(model, jacobian) for :func:`solve` built from the exact point functions of
    :mod:`autofit._forward_mode`: ``lm_solve`` with the exact Jacobian for a model numba
    cannot compile for whole arrays (``p[3 * k:3 * k + 3]`` with a run-time k) but whose
    derivatives were generated; BackendCannotRun if they do not compile."""
    return _kept(value, (n_params, x_ndim, "points"),
                 lambda: _compile_points(value, gradient, n_params, x_ndim))


def _points_module_source(value, gradient, n_params: int, x_ndim: int) -> str | None:
    """The source of a module defining :func:`prepare_points`'s ``model`` and ``jacobian``,
    each compiled for its one signature with ``cache=True`` (numba's disk cache: a script
    run again, or the quick start's child process, compiles them once), or None where the
    point functions cannot be written out."""
    from autofit.numba.kernel_cache import point_module_head

    head = point_module_head(
        f"autofit lm_solve model and Jacobian from the point functions of "
        f"{getattr(value, '__name__', 'model')}, {int(n_params)} parameters, x of "
        f"{int(x_ndim)} dimension(s)",
        "from autofit.numba.first_class import JACOBIAN_TYPES, MODEL_TYPES", value, gradient)
    if head is None:
        return None
    compiled = "numba.njit({}[{}].signature, cache=True, error_model='numpy')({})"
    return "\n".join([
        *head,
        "value = numba.njit(error_model='numpy')(value)",
        "gradient = numba.njit(error_model='numpy')(gradient)",
        _points_source(n_params, x_ndim),
        "model = " + compiled.format("MODEL_TYPES", int(x_ndim), "model"),
        "jacobian = " + compiled.format("JACOBIAN_TYPES", int(x_ndim), "jacobian"),
        "",
    ])


def _compile_points(value, gradient, n_params: int, x_ndim: int):
    import numba

    from autofit.numba.generated import import_generated

    try:
        source = _points_module_source(value, gradient, n_params, x_ndim)
        module = None if source is None else import_generated("autofit_points", source)
        if module is not None:
            return (CompiledFunction(module.model, MODEL_TYPES[x_ndim]),
                    CompiledFunction(module.jacobian, JACOBIAN_TYPES[x_ndim]))
        namespace = {"np": np, "value": numba.njit(error_model="numpy")(value),
                     "gradient": numba.njit(error_model="numpy")(gradient)}
        exec(_points_source(n_params, x_ndim), namespace)  # noqa: S102 - from integers only
        return tuple(CompiledFunction(numba.njit(kind[x_ndim].signature,
                                                 error_model="numpy")(namespace[name]),
                                      kind[x_ndim])
                     for name, kind in (("model", MODEL_TYPES),
                                        ("jacobian", JACOBIAN_TYPES)))
    except Exception as exc:  # noqa: BLE001 - whatever stops numba: the caller falls back
        raise BackendCannotRun("numba cannot compile the generated derivatives: "
                               + first_line(exc)) from exc


def compile_model(f, n_params: int, x_ndim: int, weights_ndim: int = 1) -> None:
    """Compile ``f`` and the driver for these layouts (BackendCannotRun if numba cannot);
    run by the dispatcher's quick start on a background thread. One driver serves both
    ``weights_ndim`` (see :func:`autofit.numba.lm.as_weight_columns`)."""
    _solver(x_ndim)
    placeholder_jacobian(x_ndim)
    _wrapper(f, n_params, x_ndim, "model")


def compile_fused(f, n_params: int, x, ydata, weights, p0, lower, upper):
    """Compile numba's fused pass (``lm_fused``) for ``f``, by running it briefly on a few
    points of the call's data; run by the quick start in the background. With the exact
    point functions of :mod:`autofit._forward_mode` (curve_fit then takes the fused pass at
    every size), else with finite differences (the huge-fit path).

    Returns what may be compiled once calls run on the fused pass, or None: with exact
    point functions, ``lm_solve``'s model and Jacobian built from them (:func:`prepare_points`:
    1.25 s for three gaussians), which a fit takes when the fused pass stalls in a curved
    valley (hard multi-peak starts: ``experiments/user_models/hard_starts.py``), so that
    such a fit does not wait for them."""
    from autofit._forward_mode import exact_or_none
    from autofit.numba.user_points import user_point_function

    x2 = np.ascontiguousarray(x[None, :] if x.ndim == 1 else x)
    exact, _ = exact_or_none(f, n_params, x2.shape[0], x, p0)
    if exact is not None:
        runs = [(*exact, JAC_ANALYTIC)]
    else:
        value = user_point_function(f, n_params, x2.shape[0])
        runs = [(value, None, JAC_FORWARD), (value, None, JAC_CENTRAL)]  # iterate, polish
    _run_fused_briefly(runs, n_params, x2, ydata, weights, p0, lower, upper)
    if exact is None:
        return None
    return functools.partial(prepare_points, *exact, n_params, np.ndim(x))


def compile_fused_from_sources(value_source: str, gradient_source: str, n_params: int, x,
                               ydata, weights, p0, lower, upper) -> None:
    """:func:`compile_fused` for the exact point functions of these sources (their
    ``generated_source``), into the disk cache: in a child process
    (:mod:`autofit._elsewhere`), whose parent then loads what it compiled."""
    from autofit._forward_mode import point_functions_from_sources

    x2 = np.ascontiguousarray(x[None, :] if x.ndim == 1 else x)
    value, gradient = point_functions_from_sources(value_source, gradient_source)
    # (Not prepare_points, which compile_fused leaves for later: 0.7 s more before the
    # calls can run on the fused pass.)
    _run_fused_briefly([(value, gradient, JAC_ANALYTIC)], n_params, x2, ydata, weights, p0,
                       lower, upper)


def compile_batch_from_sources(value_source: str, gradient_source: str, x, ydata, weights,
                               p0, lower, upper, free, estimator: int, tol: float,
                               max_iter: int) -> None:
    """The batched passes (``lm_batch``) of the exact point functions of these sources,
    compiled into the disk cache by running them on a few fits (the arrays as
    :class:`autofit._batch.Problem` holds them): in a child process
    (:mod:`autofit._elsewhere`), whose parent then loads what it compiled."""
    from autofit._forward_mode import point_functions_from_sources
    from autofit.numba.batch import lm_batch

    value, gradient = point_functions_from_sources(value_source, gradient_source)
    lm_batch(value, gradient, JAC_ANALYTIC, x, ydata, weights, p0, lower, upper, free,
             estimator, tol, max_iter)


def _run_fused_briefly(runs, n_params, x2, ydata, weights, p0, lower, upper):
    from autofit.numba.covariance import covariance_from_information
    from autofit.numba.fused import lm_fused

    for value, gradient, method in runs:
        lm_fused(value, gradient, method, x2, ydata, weights, p0, lower, upper, 1e-15, 1e-15,
                 1e-15, 2)
    # The covariance after the fit, loaded here too: a call must not wait for numba's
    # compiler lock while the work returned by compile_fused compiles.
    covariance_from_information(np.eye(n_params))


def fused_compiled(value, gradient, n_params: int) -> bool:
    """Whether the fused pass for these exact point functions is compiled (so that a call
    runs at once)."""
    from autofit.numba.fused import is_compiled  # imported once the pass has run

    return is_compiled(value, gradient, JAC_ANALYTIC, n_params)


def device_name(requested: str) -> str:
    """The device numba ran on: the one asked for ('cpu', or 'cuda' for its CUDA engine)."""
    return requested


def has_failed(f, n_params: int, x_ndim: int) -> str | None:
    """Why numba could not compile ``f``, if it tried and failed."""
    found = _table(f).get((n_params, x_ndim, "model"))
    return str(found) if isinstance(found, BackendCannotRun) else None


def prepare(f, jac, n_params: int, x_ndim: int):
    """(model, jacobian) compiled for :func:`solve`; BackendCannotRun if numba cannot."""
    model = _wrapper(f, n_params, x_ndim, "model")
    if callable(jac):
        return model, _wrapper(jac, n_params, x_ndim, "jacobian")
    return model, placeholder_jacobian(x_ndim)


def _name(f) -> str:
    return getattr(f, "__qualname__", None) or repr(f)


# ------------------------------------------------------------ the interface every host has
# (see autofit.original.host): the user layer calls these through autofit._dispatch.host_of.

DEVICES = ("cpu", "cuda")
JAC_WITHOUT_JACOBIAN = None  # finite differences
CHUNKS_RECOMPILE = False
# Whether a huge single fit starts from a fit to a strided subsample (autofit._fused):
# a pass over a subsample costs its share of a pass.
COARSE_START = True


def device_report() -> str:
    """One line for ``python -m autofit backends``: CPU threads and the CUDA GPU, if any."""
    import numba

    cuda = "no CUDA GPU"
    try:
        from numba import cuda as numba_cuda

        if numba_cuda.is_available():
            cuda = f"CUDA GPU {numba_cuda.get_current_device().name}"
    except Exception:  # noqa: BLE001 - numba without a CUDA toolkit or driver
        pass
    return f"cpu ({numba.config.NUMBA_NUM_THREADS} threads), {cuda}"


def precision(float64: bool = True):
    """The context the kernels run in (numba keeps each array's own dtype)."""
    return contextlib.nullcontext()


def padded_length(n_points: int) -> int:
    """The number of points a single fit's arrays are padded to (none: numba compiles
    once for every length)."""
    return n_points


def array_model(f, n_params: int):
    """``model(x, params)`` for ``lm_solve``: ``f`` compiled with ``numba.njit`` and a
    generated jitted wrapper that unpacks ``params`` (numba cannot call ``f(x, *params)``
    with an array); BackendCannotRun if numba refuses ``f``."""
    from numba.core.registry import CPUDispatcher

    try:
        user = f if isinstance(f, CPUDispatcher) else njit(f)
    except Exception as exc:  # numba refuses some callables outright (builtins, classes)
        raise BackendCannotRun(f"numba cannot compile {_name(f)}: {exc}") from exc
    namespace = {"np": np, "user": user}
    # An exception raised in the user's code propagates here (no first-class call).
    exec(_wrapper_source(n_params, "model", catch=False), namespace)  # noqa: S102
    return njit(namespace[f"call_model_{n_params}"])


def no_jacobian():
    """A placeholder of the right kind for ``lm_solve``'s unused Jacobian argument."""
    return zero_jacobian


def check_compiles(prepared, x, p0) -> None:
    """Compile the model (and an analytic Jacobian) by calling it once at ``p0``;
    BackendCannotRun with numba's reason if it cannot."""
    try:
        prepared.model(x, p0)
        if prepared.jac_method == JAC_ANALYTIC:
            prepared.jacobian(x, p0)
    except NumbaError as exc:
        raise BackendCannotRun("numba cannot compile the model: " + first_line(exc)) from exc


def run_instead(prepared, error, x, p0, f, jac):
    """What runs a model numba cannot compile: nothing on numba (the fallback table says
    what runs it)."""
    raise error


def exact_prepared(prepared, exact, n_params: int, x, p0):
    """``prepared`` as it is: numba takes the generated point functions themselves, on its
    fused pass and in ``lm_solve`` (:func:`compile_model`)."""
    return prepared


def fused_model(f, jac, prepared, n_params: int, n_variables: int):
    """``(value, gradient, jac_method, polish_method)``: the point functions numba's fused
    pass runs for ``f``; None where it cannot run f (a user's Jacobian is an array
    function, not a point function)."""
    if callable(jac):
        return None
    if isinstance(f, Model):  # lm_fused runs a built-in model's kernels as point functions
        return (prepared.model, prepared.jacobian, prepared.jac_method,
                prepared.polish_method)
    from autofit.numba.user_points import user_point_function

    return (user_point_function(f, n_params, n_variables), None, prepared.jac_method,
            prepared.polish_method)


def is_compile_error(exc: BaseException) -> bool:
    """Whether ``exc`` is numba's: the model does not compile (one point at a time)."""
    return isinstance(exc, NumbaError)


# User functions numba cannot compile one point at a time -> why (for the array engine).
_point_failures: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
ARRAY_ENGINE_NOTE = ("derivatives: finite differences (numba's engine for models compiled "
                     "for arrays)")


def batch_engine(problem, device: str) -> BatchEngine:
    """The engine for ``fit_batch``'s ``problem`` on ``device``.

    Every engine takes point functions (one point at a time): a built-in model's, or a
    user's model compiled point by point, with exact derivatives generated from its source
    where they can be (checked at the first fit's start; else forward differences, and the
    note says why). On the CPU a user's model that was found not to compile point by point
    goes to the engine for array models (:func:`batch_rescue`).
    """
    from autofit.numba.user_points import user_point_function

    f = problem.model
    if device == "cuda":
        from autofit.numba import gpu

        if not gpu.available():
            raise RuntimeError("device='cuda' was asked for (argument or FFIT_DEVICE), but "
                               "numba.cuda finds no usable GPU here; install "
                               "'autofit-lm[cuda]' on a machine with an NVIDIA GPU, or use "
                               "device='cpu'")
        solve = gpu.lm_batch_cuda
    else:
        from autofit.numba.batch import lm_batch as solve
    if isinstance(f, Model):
        value, gradient = POINT_FUNCTIONS[f.name]
        if problem.jac == "2-point":
            return BatchEngine(solve, value, None, JAC_FORWARD)
        return BatchEngine(solve, value, gradient, JAC_ANALYTIC)
    if device == "cpu":
        try:
            known_failure = _point_failures.get(f)
        except TypeError:  # not weakly referenceable
            known_failure = None
        if known_failure is not None:
            rescue = batch_rescue(problem, device, known_failure)
            if rescue is not None:
                return rescue
    n_variables = problem.x.shape[1]
    reason = None
    if problem.jac is None:
        # (on a GPU too: numba-cuda compiles the generated lines where a user's own function
        # may not compile, a loop over peaks slicing *p, np.full_like on a point:
        # tests/test_cuda_compiler.py)
        exact, reason = problem.exact()
        if exact is not None:  # the user's f itself is not compiled
            return BatchEngine(solve, *exact, JAC_ANALYTIC,
                               "derivatives: exact, generated from the model's source "
                               "(forward mode)")
    if not isinstance(f, types_module.FunctionType) and not hasattr(f, "py_func"):
        raise BackendCannotRun(f"numba compiles functions defined with def or lambda, not "
                               f"{type(f).__name__} objects")
    point = user_point_function(f, problem.n_params, n_variables, device, problem.dtype)
    if reason is None:
        return BatchEngine(solve, point, None, JAC_FORWARD)
    return BatchEngine(solve, point, None, JAC_FORWARD,
                       f"derivatives: finite differences ({reason})")


def batch_call(solve, args, dtype):
    """One chunk of fits; BackendCannotRun if numba cannot compile the model."""
    try:
        return solve(*args)
    except NumbaError as exc:
        raise BackendCannotRun("numba cannot compile the model for batched fitting (it must "
                               "work on one scalar point at a time): "
                               + str(exc).strip().splitlines()[0]) from exc


def batch_rescue(problem, device: str, error) -> BatchEngine | None:
    """numba's engine for array models, for a user's function that cannot run one point at
    a time (``error`` says why; remembered for the next batch of ``f``); None where it
    does not apply; BackendCannotRun if numba cannot compile f for arrays either."""
    f = problem.model
    if device != "cpu" or isinstance(f, Model) or problem.dtype != np.float64:
        return None
    from autofit.numba.array_batch import lm_batch_arrays

    n_variables = problem.x.shape[1]
    try:
        model, jacobian = prepare(f, None, problem.n_params, 1 if n_variables == 1 else 2)
    except BackendCannotRun as exc:
        raise BackendCannotRun(f"{error}; nor for whole arrays: {exc}") from exc
    with contextlib.suppress(TypeError):  # not weakly referenceable: tried again next time
        _point_failures[f] = error
    return BatchEngine(lm_batch_arrays, model, jacobian, JAC_FORWARD, ARRAY_ENGINE_NOTE)


__all__ = ["compile_fused", "compile_model", "device_name", "fused_compiled", "has_failed",
           "prepare", "solve"]
