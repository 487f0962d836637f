"""Which backend runs, and why: the backend table, the precedence rule and the fallbacks.

Precedence, first match wins:

1. the ``backend=`` argument of the call;
2. the innermost ``with autofit.use_backend(name):`` block in this thread / task;
3. ``autofit.set_backend(name)`` (process-wide);
4. the environment variable ``FFIT_BACKEND`` (read at call time);
5. the default: ``jax`` when jax is installed and sees a GPU, else ``numba`` when numba is
   installed, else ``numpy``.

A backend named in 1-4 that is not installed raises ImportError naming the extra to install.
When the chosen backend cannot run something (a kernel it does not implement, a user model
numba cannot compile or jax cannot trace), the next backend in ``FALLBACK`` runs and a
:class:`BackendFallbackWarning` names the reason; in strict mode (``strict=True``, or
``FFIT_STRICT=1``) that is a :class:`BackendError` instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.util
import os
import sys
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from types import ModuleType

from autofit import _environment
from autofit._declarations import KERNELS

BACKENDS: tuple[str, ...] = ("numpy", "numba", "jax")
ALIASES: dict[str, str] = {"original": "numpy"}
# Backend name -> (module with its kernels, the distribution it needs, the extra to install).
_TABLE: dict[str, tuple[str, str | None, str | None]] = {
    "numpy": ("autofit.original", None, None),
    "numba": ("autofit.numba", "numba", "numba"),
    "jax": ("autofit.jax", "jax", "jax"),
}
# What runs when a backend cannot run a model or a kernel, in order of preference.
FALLBACK: dict[str, tuple[str, ...]] = {
    "jax": ("numba", "numpy"),
    "numba": ("numpy",),
    "numpy": (),
}
# Kernels only some backends implement: where the others send them.
KERNEL_FALLBACK: dict[str, tuple[str, ...]] = {
    name: tuple(b if b != "original" else "numpy" for b in spec.native)
    for name, spec in KERNELS.items()
    if set(spec.native) != {"original", "numba", "jax"}
}

DEFAULT_RULE = "the default rule (jax on GPU, else numba, else numpy)"
_context_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "autofit_backend", default=None)
_context_strict: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "autofit_strict", default=None)
_config_lock = threading.Lock()
_config: dict[str, object] = {"backend": None}
_default_cache: dict[str, str] = {}


class BackendError(RuntimeError):
    """A backend cannot run what was asked and strict mode forbids a fallback."""


class BackendFallbackWarning(UserWarning):
    """Another backend ran instead of the one chosen; the message says why."""


class BackendCannotRun(Exception):
    """Raised inside autofit when a backend cannot run a model; caught by the dispatcher."""


@dataclass
class BackendChoice:
    """The dispatcher's decision, recorded on every result.

    ``requested`` is the backend the precedence rule picked, ``source`` where it came from,
    ``backend`` the one that actually ran and ``fallbacks`` each backend skipped, with why.
    """

    requested: str
    source: str
    backend: str
    fallbacks: list[tuple[str, str]] = field(default_factory=list)
    # How the backend that ran took the model, when worth saying (jax's NumPy translation).
    notes: list[str] = field(default_factory=list)
    # Work to start once the call has its answer (the quick start's background compilation).
    after_call: object = field(default=None, repr=False, compare=False)
    # Whether ``backend`` ran the call to its answer (run_with_fallback).
    ran: bool = field(default=False, repr=False, compare=False)
    # The whole reason of a call made for this one (a robust curve_fit's fit_batch), which
    # said how its backend was chosen already; its notes follow.
    given_reason: str | None = field(default=None, repr=False, compare=False)

    @property
    def reason(self) -> str:
        if self.given_reason is not None:
            return "; ".join([self.given_reason, *self.notes])
        text = f"{self.requested!r} chosen by {self.source}"
        for skipped, why in self.fallbacks:
            text += f"; {skipped!r} could not run it ({why})"
        if self.backend != self.requested:
            text += f"; ran on {self.backend!r}"
        for note in self.notes:
            text += f"; {note}"
        return text


def normalize(name: str) -> str:
    """Canonical backend name; ValueError listing the valid ones for anything else."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string such as 'numba', got {name!r}")
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in _TABLE:
        valid = ", ".join(repr(b) for b in BACKENDS + tuple(ALIASES))
        raise ValueError(f"unknown backend {name!r}; valid backends are {valid}")
    return key


_installed: dict[str, bool] = {}


def is_installed(name: str) -> bool:
    """Whether the packages a backend needs can be imported (without importing them).

    Looked up once per process (``importlib.util.find_spec`` costs tens of microseconds, a
    tenth of a small fit): a package installed while the process runs is seen by the next.
    """
    dependency = _TABLE[normalize(name)][1]
    if dependency is None:
        return True
    found = _installed.get(dependency)
    if found is None:
        found = _installed[dependency] = importlib.util.find_spec(dependency) is not None
    return found


def _check_installed(name: str) -> None:
    """ImportError naming the extra to install when the backend's package is missing."""
    _, dependency, extra = _TABLE[name]
    if not is_installed(name):
        raise ImportError(f"the {name!r} backend needs the {dependency!r} package, which is "
                          f"not installed; install it with: pip install 'autofit-lm[{extra}]'")


_loaded: dict[str, ModuleType] = {}


def load(name: str) -> ModuleType:
    """The kernel module of a backend; ImportError naming the extra when it is missing."""
    module = _loaded.get(name)
    if module is None:
        name = normalize(name)
        _check_installed(name)
        module = _loaded[name] = importlib.import_module(_TABLE[name][0])
    return module


def installed_version(name: str) -> str | None:
    import importlib.metadata  # here: importing it costs a script that never asks 17 ms

    dependency = _TABLE[normalize(name)][1] or "numpy"
    try:
        return importlib.metadata.version(dependency)
    except importlib.metadata.PackageNotFoundError:
        return None


def set_backend(name: str | None) -> None:
    """Set the process-wide backend (``None`` restores the environment variable / default)."""
    with _config_lock:
        _config["backend"] = None if name is None else normalize(name)


@contextlib.contextmanager
def use_backend(name: str, *, strict: bool | None = None):
    """Run the enclosed calls on ``name`` (in this thread or task only).

    Examples
    --------
    >>> import autofit
    >>> with autofit.use_backend("numpy"):
    ...     autofit.get_backend()
    'numpy'
    """
    backend_token = _context_backend.set(normalize(name))
    strict_token = _context_strict.set(strict)
    try:
        yield
    finally:
        _context_backend.reset(backend_token)
        _context_strict.reset(strict_token)


def default_backend() -> str:
    """The documented default: jax on a GPU, else numba, else numpy."""
    if "default" not in _default_cache:
        choice = "numpy"
        if is_installed("numba"):
            choice = "numba"
        if is_installed("jax") and _jax_sees_gpu():
            choice = "jax"
        _default_cache["default"] = choice
    return _default_cache["default"]


# What a jax GPU plugin (CUDA or ROCm) installs on the path: its package or its
# .dist-info folder (names normalised to lower case and underscores).
_JAX_GPU_PLUGINS = ("jax_cuda", "jax_rocm", "jaxlib_cuda", "jax_plugins")


def _jax_gpu_plugin_installed(path=None) -> bool:
    """Whether a jax GPU plugin (CUDA or ROCm) is installed, without importing jax: a name
    on the import path (``path``, default ``sys.path``) that starts as one's does. (Reading
    every installed distribution's metadata took ~20 ms of a fresh process's first fit.)"""
    for entry in sys.path if path is None else path:
        try:
            names = os.listdir(entry or ".")
        except (OSError, TypeError):  # not a folder (a zip file, say)
            continue
        for name in names:
            if name.lower().replace("-", "_").startswith(_JAX_GPU_PLUGINS):
                return True
    return False


def _jax_sees_gpu() -> bool:
    # Importing jax takes seconds: only a machine with a GPU plugin can have a jax GPU.
    if not _jax_gpu_plugin_installed():
        return False
    try:
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    except Exception:  # a broken jax install is "no GPU" for choosing the default
        return False


def choose(backend: str | None = None) -> BackendChoice:
    """Apply the precedence rule; the backend is checked to be installed."""
    if backend is not None:
        name, source = normalize(backend), "the backend= argument"
    elif _context_backend.get() is not None:
        name, source = _context_backend.get(), "autofit.use_backend()"
    elif _config["backend"] is not None:
        name, source = _config["backend"], "autofit.set_backend()"
    elif _environment.setting("BACKEND") is not None:
        variable, value = _environment.setting("BACKEND")
        name, source = normalize(value), f"the {variable} variable"
    else:
        name, source = default_backend(), DEFAULT_RULE
    _check_installed(name)  # the backend itself is imported when it runs
    return BackendChoice(requested=name, source=source, backend=name)


_hosts: dict[str, ModuleType] = {}


def loaded_host(name: str) -> ModuleType | None:
    """The backend's ``host`` module if this process has loaded it, else None (nothing is
    imported: numba's import alone takes ~0.2 s)."""
    return _hosts.get(name)


def _host_module(name: str) -> str:
    return _TABLE[name][0] + ".host"


def host_of(name: str) -> ModuleType:
    """The backend's ``host`` module: what it needs from a user's model, where it runs and
    how its engines are called (the same names on every backend; see
    :mod:`autofit.original.host`). ImportError naming the extra when it is missing."""
    module = _hosts.get(name)
    if module is None:
        name = normalize(name)
        _check_installed(name)
        module = _hosts[name] = importlib.import_module(_host_module(name))
    return module


# The quick start of users' models, by backend name and key (:func:`_warm_up_key`): a
# _QuickStart each. Kept here, so that deciding costs no import of the compiling backend.
_warm_ups: dict[tuple, _QuickStart] = {}
_warm_ups_lock = threading.Lock()
# One per warm-up thread: set when it has compiled everything (also what only some calls
# need, after its event let calls run on the backend).
_warm_ups_finished: list[threading.Event] = []
# The backends whose host module offers warm_up (the compiling ones).
QUICK_START_BACKENDS = ("numba",)
# The backends whose fused pass takes a model as point functions (value, gradient): a
# user's model then runs on it with exact derivatives generated from its source.
POINT_FUNCTION_BACKENDS = ("numba",)


# What a quick start compiles a user's model for: lm_solve's driver, the fused pass
# (lm_fused), or the batched passes (lm_batch: a single fit with a robust loss).
QUICK_START_ROADS = ("model", "fused", "batch")

# The NumPy engine answers a user's model until its calls have taken this long in all
# (seconds): then numba compiles the model on a background thread (a ski rental: the
# NumPy engine's time is the rent, the compilation, 0.6-1.8 s per model and road on the
# 2-core VM, the price). Compiling after the first call cost a scientist's loop of fits
# more than it saved: 50 robust fits of their own model on 3,000 points took 2.7-4.3 s
# (scipy 0.3-0.4 s), each call beside the compiling thread 2-6x slower and the compilation
# 2x longer for sharing Python's lock; 50 least-squares fits 1.2 s (scipy 0.06).
QUICK_START_COMPILE_AFTER_S = 1.0
# ... for the batched passes (a single fit with a robust loss, fit_batch), whose
# compilation costs more (2.8 s for a new model on the 2-core VM, the fused pass 1.6 s), and
# which the NumPy engine runs nearer scipy's speed since it takes the generated derivatives
# (a robust fit of a gaussian on 3,000 points 3.5 against scipy's 5 ms): a scientist's
# loop of 300 arctan fits of a new model took 4.0 s with 1 s (scipy 2.3 s), numba
# compiling 2.8 s of it, where the NumPy engine alone takes 1.9 s.
QUICK_START_COMPILE_AFTER_BATCH_S = 2.0
# ... and this long for a model whose compiled code numba keeps in its disk cache (the
# caller says so: ``cached``): loading it costs 0.4-0.5 s, not 1.6-2.7 s (a scientist's
# script run again: 300 robust fits of their model on 3,000 points, 1.6 -> 1.1 s).
QUICK_START_LOAD_AFTER_S = 0.3
# ... and this long for a fused pass that a child process compiles (autofit._elsewhere:
# the calls go on meanwhile, and wait only for its loading here, 0.4 s): a scientist's loop
# of 3,000 least-squares fits of a new model (a gaussian on 3,000 points) took 3.3 s with
# 1 s, scipy's 3.0 s.
QUICK_START_COMPILE_ELSEWHERE_AFTER_S = 0.3

# How long a call waits for its model's compilation under way in this process before the
# NumPy engine answers it instead (while a child process compiles it, none waits).
QUICK_START_WAIT_S = 30.0


@dataclass
class _QuickStart:
    """Where one model (one backend, layout and road) stands in the quick start."""

    compiled: threading.Event = field(default_factory=threading.Event)
    # Set once this process's own share of the compilation has begun (the calls then wait
    # for it); until then a child process compiles (autofit._elsewhere), and the NumPy
    # engine answers the calls.
    loading: threading.Event = field(default_factory=threading.Event)
    # Seconds the NumPy engine has answered the model's calls in, all together.
    spent: float = 0.0
    # Whether the backend keeps the model compiled in its disk cache (it then answers for
    # QUICK_START_LOAD_AFTER_S, not QUICK_START_COMPILE_AFTER_S, before the backend loads
    # it); None until asked.
    cached: bool | None = None
    # Starts the compilation (with the latest call's sample), once a call has run.
    start: object = None
    started: bool = False
    # The road (QUICK_START_ROADS), whose compilation the rent is set against.
    road: str = "model"
    # Whether a child process can compile it (quick_choice's ``elsewhere``).
    elsewhere: bool = False
    # The model (a weak reference where it takes one): a key holds its id, which Python
    # gives a new function once the old one is gone (a test's model ran on numba, taken for
    # compiled, because an earlier test's compiled model had had its id).
    model: object = None

    def is_for(self, f) -> bool:
        found = self.model() if isinstance(self.model, weakref.ref) else self.model
        return found is f


def _state(key, f) -> _QuickStart:
    """The quick start's state of model ``f`` under ``key`` (a new one where the key's id
    was another function's); the caller holds ``_warm_ups_lock``."""
    state = _warm_ups.get(key)
    if state is None or not state.is_for(f):
        try:
            model = weakref.ref(f)
        except TypeError:
            model = f
        state = _warm_ups[key] = _QuickStart(model=model, road=key[-1])
    return state


def compile_after_s(road: str = "model") -> float:
    """The NumPy engine's time on a model before numba compiles it for ``road``
    (:data:`QUICK_START_COMPILE_AFTER_S`, :data:`QUICK_START_COMPILE_AFTER_BATCH_S`)."""
    return QUICK_START_COMPILE_AFTER_BATCH_S if road == "batch" else QUICK_START_COMPILE_AFTER_S


def _warm_up_key(name, f, n_params, x_ndim, weights_ndim, road="model"):
    return (name, id(f), n_params, x_ndim, weights_ndim, road)


def quick_choice(choice: BackendChoice, f, n_params: int, x_ndim: int,
                 weights_ndim: int = 1, *, fused_sample=None, warm_up=None,
                 evaluations: int = 0, max_evaluations: int | None = None,
                 cached=None, elsewhere=None) -> BackendChoice:
    """The default rule's quick start for a user's model, for one call.

    When the default rule chose a compiling backend (numba) that has not compiled ``f``,
    compiling it would make this call wait for seconds where the NumPy engine answers in
    milliseconds: this call runs on ``numpy``, which the returned choice says. Once the
    NumPy engine has spent :data:`QUICK_START_COMPILE_AFTER_S` on the model's calls (a
    loop of fits, or one large call), the backend compiles ``f`` on a background thread,
    and the calls from then on run on it: a call that finds the compilation under way
    waits for it (up to :data:`QUICK_START_WAIT_S`; the NumPy engine beside the compiling
    thread, both taking turns at Python's lock, answered 2-6x slower and made the
    compilation twice as long). :func:`wait_for_compilation` compiles at once. An explicit
    choice (``backend=``, :func:`use_backend`, :func:`set_backend`, ``FFIT_BACKEND``) is
    returned unchanged; once it has run on the compiling backend, the model counts as
    compiled for the default rule's later calls (as after a call too large for the NumPy
    engine).

    ``fused_sample`` ``(x, y, weights, p0, lower, upper)``, a few points of the call's data,
    is for a fit on the fused path (``lm_fused``), which the backend compiles separately.
    ``warm_up``, a function of no arguments, is for a fit on the batched passes
    (``lm_batch``, a single fit with a robust loss): it runs on the background thread in
    place of the backend's compilation of the model.

    ``evaluations``, the call's model evaluations at one point per pass (points x
    (parameters + 1)), against ``max_evaluations``, where the NumPy engine's fit costs as
    much as the backend's compilation (measured per road by the caller): beyond it the
    call compiles at once (its choice says why); from a third of it the compilation starts
    after this call, whatever the NumPy engine has spent.

    ``cached``, a function of no arguments: whether the backend keeps this model's compiled
    code in its disk cache (the caller can tell without importing it), so that it loads
    rather than compiles, and the NumPy engine answers for :data:`QUICK_START_LOAD_AFTER_S`
    only. Asked once per model and road, and only where the quick start applies (finding
    out may cost the caller some work: the derivatives generated from the model's source).

    ``elsewhere``, a function of the backend's host module (its name): what a child
    process can compile for this road (:mod:`autofit._elsewhere`: a model whose
    derivatives were generated from its source), or None. The NumPy engine then goes on
    answering while the child compiles; it starts after
    :data:`QUICK_START_COMPILE_ELSEWHERE_AFTER_S`, and only its loading here makes calls
    wait.
    """
    if choice.requested not in QUICK_START_BACKENDS:
        return choice
    road = "fused" if fused_sample is not None else "batch" if warm_up is not None else "model"
    key = _warm_up_key(choice.requested, f, n_params, x_ndim, weights_ndim, road)
    if choice.source != DEFAULT_RULE:
        # An explicit choice compiles at once; once it has run, the default rule's calls of
        # the model run compiled too (they were answered by the NumPy engine for a second).
        choice.after_call = functools.partial(_compiled_by_the_call, choice, key, f)
        return choice
    if max_evaluations is not None and evaluations > max_evaluations:
        choice.notes.append(f"no quick start: at {evaluations:,} point evaluations per pass "
                            f"{choice.requested}'s compilation costs less than the NumPy "
                            "engine's fit")
        choice.after_call = functools.partial(_compiled_by_the_call, choice, key, f)
        return choice
    large = max_evaluations is not None and evaluations > max_evaluations // 3
    with _warm_ups_lock:
        state = _state(key, f)
        started = state.started
        state.elsewhere = elsewhere is not None
    if state.cached is None and not started:
        state.cached = bool(cached()) if cached is not None else False
    if state.compiled.is_set() or (started and state.loading.is_set()
                                   and state.compiled.wait(QUICK_START_WAIT_S)):
        return choice  # compiled (or known not to compile: the fallback says why)
    where = ("in a child process" if state.elsewhere and not state.cached
             else "on a background thread")
    quick = BackendChoice(
        requested="numpy", backend="numpy",
        source=(f"{DEFAULT_RULE}: {choice.requested!r} compiles this model {where} once "
                f"the NumPy engine has spent {_rent(state):g} s on its calls, and runs it "
                "from then on (quick start); 'numpy' answers meanwhile "
                f"(backend={choice.requested!r}, or autofit.wait_for_compilation(), "
                "compiles it at once)"))
    # Run by the caller once this call has its answer: compiling on another thread would
    # compete with it for the interpreter.
    quick.after_call = functools.partial(
        _after_quick_call, state, time.perf_counter(), large,
        functools.partial(_start_warm_up, choice.requested, f, n_params, x_ndim,
                          weights_ndim, state, fused_sample, warm_up, elsewhere))
    return quick


def _compiled_by_the_call(choice: BackendChoice, key, f) -> None:
    """A call that ran on the compiling backend itself (an explicit choice, or a call too
    large for the NumPy engine) has compiled the model for its road: the quick start of
    that model is done."""
    if not (choice.ran and choice.backend == choice.requested):
        return  # it fell back, or failed: nothing is known to be compiled
    with _warm_ups_lock:
        state = _state(key, f)
        state.started = True
    state.loading.set()
    state.compiled.set()


def _rent(state: _QuickStart) -> float:
    """The NumPy engine's time on a model before the quick start compiles (or loads) it."""
    if state.cached:
        return QUICK_START_LOAD_AFTER_S
    if state.elsewhere:
        return QUICK_START_COMPILE_ELSEWHERE_AFTER_S
    return compile_after_s(state.road)


def _after_quick_call(state: _QuickStart, began: float, large: bool, start) -> None:
    """A call the NumPy engine answered: its time counts, and the compilation starts once
    the model has had its share (:func:`compile_after_s` for its road,
    :data:`QUICK_START_LOAD_AFTER_S` where the backend keeps it compiled,
    :data:`QUICK_START_COMPILE_ELSEWHERE_AFTER_S` where a child process compiles it), or
    after a large call."""
    with _warm_ups_lock:
        state.spent += time.perf_counter() - began
        state.start = start
        go = not state.started and (large or state.spent >= _rent(state))
        state.started = state.started or go
    if go:
        # (a model in the disk cache loads here faster than a child could start)
        start(in_child=state.elsewhere and not state.cached)


def _start_warm_up(name, f, n_params, x_ndim, weights_ndim, state, fused_sample=None,
                   warm_up=None, elsewhere=None, in_child=False):
    """Compile ``f`` for its road on a background thread (``state``: its _QuickStart).
    ``in_child``: a child process compiles ``elsewhere``'s job first (:mod:`autofit._elsewhere`),
    the calls answered meanwhile, and this thread then loads what it compiled;
    :func:`wait_for_compilation`, which makes them wait anyway, compiles here at once."""
    finished = threading.Event()
    with _warm_ups_lock:
        _warm_ups_finished.append(finished)

    def work():
        later = None
        try:
            if in_child and elsewhere is not None:
                from autofit import _elsewhere

                job = elsewhere(_host_module(name))
                if job is not None:
                    # (else this thread compiles it below). Not numba's import meanwhile:
                    # beside the calls it cost a loop of 1,000 fits 0.2 s, more than the
                    # calls that wait for it save where the child finishes in time.
                    _elsewhere.compile_in_child(job)
            state.loading.set()
            if warm_up is not None:
                warm_up()
            elif fused_sample is None:
                host_of(name).compile_model(f, n_params, x_ndim, weights_ndim)
            else:
                later = host_of(name).compile_fused(f, n_params, *fused_sample)
        except Exception:  # noqa: BLE001 - the call on that backend reports it again
            pass
        finally:
            state.loading.set()
            state.compiled.set()  # calls run on the backend from now on
        try:
            if later is not None:
                later()  # what only some calls need (compile_fused says which)
        except Exception:  # noqa: BLE001 - the call that needs it reports it again
            pass
        finally:
            finished.set()

    threading.Thread(target=work, name=f"autofit-{name}-compile", daemon=True).start()


def quick_start_state(name: str, f, n_params: int, x_ndim: int = 1,
                      weights_ndim: int = 1, road: str = "model") -> str | None:
    """None (never asked), 'answered' (by the NumPy engine, not compiling yet),
    'compiling' or 'done' for a user's model on backend ``name`` and one of the
    :data:`QUICK_START_ROADS`."""
    state = _warm_ups.get(_warm_up_key(name, f, n_params, x_ndim, weights_ndim, road))
    if state is None or not state.is_for(f):
        return None
    if state.compiled.is_set():
        return "done"
    return "compiling" if state.started else "answered"


def wait_for_compilation(timeout: float | None = None) -> bool:
    """Compile at once the user models the quick start has run on the NumPy engine (see
    :func:`quick_choice`), and wait for every background compilation.

    Returns True when none is left compiling.
    """
    with _warm_ups_lock:
        pending = [state for state in _warm_ups.values()
                   if not state.started and state.start is not None]
        for state in pending:
            state.started = True
    for state in pending:
        state.start()
    with _warm_ups_lock:
        events = ([state.compiled for state in _warm_ups.values() if state.started]
                  + list(_warm_ups_finished))
    return all(event.wait(timeout) for event in events)


def get_backend() -> str:
    """The backend a call without ``backend=`` would run on now."""
    return choose().backend


def is_strict(strict: bool | None = None) -> bool:
    if strict is not None:
        return bool(strict)
    if _context_strict.get() is not None:
        return bool(_context_strict.get())
    return _environment.flag("STRICT")


def fallback_chain(name: str) -> tuple[str, ...]:
    """``name`` then its installed fallbacks, in order."""
    return (name,) + tuple(b for b in FALLBACK[name] if is_installed(b))


def run_with_fallback(choice: BackendChoice, attempt, *, strict: bool | None = None):
    """Call ``attempt(backend_name)`` along the fallback chain until one can run.

    ``attempt`` raises :class:`BackendCannotRun` to pass to the next backend. Each skip is
    recorded on ``choice`` and warned about (or raised, in strict mode).
    """
    strict = is_strict(strict)
    for name in fallback_chain(choice.requested):
        try:
            result = attempt(name)
        except BackendCannotRun as exc:
            choice.fallbacks.append((name, str(exc)))
            if strict:
                raise BackendError(f"backend {name!r} cannot run this: {exc} (strict mode "
                                   "forbids falling back; pass strict=False or unset "
                                   "FFIT_STRICT to allow it)") from exc
            continue
        choice.backend = name
        choice.ran = True
        if choice.fallbacks:
            warnings.warn(f"autofit ran on {name!r} instead: {choice.reason}",
                          BackendFallbackWarning, stacklevel=3)
        return result
    raise BackendError(f"no backend could run this: {choice.reason}")


def kernel(name: str, backend: str | None = None, *, strict: bool | None = None):
    """The implementation of kernel ``name`` on the chosen backend (or its fallback).

    Examples
    --------
    >>> import numpy as np, autofit
    >>> model = autofit.kernel("model_linear", backend="numpy")
    >>> model(np.array([0.0, 1.0]), np.array([2.0, 1.0]))
    array([1., 3.])
    """
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; see autofit.KERNELS for the list")
    choice = choose(backend)
    chain = list(fallback_chain(choice.requested))
    chain += [b for b in KERNEL_FALLBACK.get(name, ()) if b not in chain and is_installed(b)]
    for backend_name in chain:
        module = load(backend_name)
        if name not in module.__all__:
            continue
        if backend_name != choice.requested:
            why = (f"kernel {name!r} is not implemented on {choice.requested!r}; the fallback "
                   f"table sends it to {backend_name!r}")
            if is_strict(strict):
                raise BackendError(why + " (strict mode forbids falling back)")
            warnings.warn(why, BackendFallbackWarning, stacklevel=2)
        return getattr(module, name)
    raise BackendError(f"kernel {name!r} is not available on {choice.requested!r} nor on any "
                       f"installed fallback ({', '.join(chain)})")
