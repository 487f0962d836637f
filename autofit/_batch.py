"""``fit_batch``: many independent fits of one model in one call, on any backend.

The public boundary of the batched solver: it checks and normalises the arguments once,
turns the model into each backend's form, runs the backend's ``lm_batch`` kernel over
chunks of fits, and wraps the results in a :class:`BatchResult` shaped like the data.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace

import numpy as np

from autofit import (
    _checkpoint,
    _codes,
    _dispatch,
    _elsewhere,
    _environment,
    _forward_mode,
    _progress,
)
from autofit import _validation as check
from autofit._dispatch import BackendCannotRun
from autofit._results import BatchResult
from autofit._status import Status
from autofit.models import Model

DEFAULT_TOL = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-5}
# Iterations per fit by default: 200, or 20 per parameter for models of more than ten. A fit
# that crawls along a valley (a pair of dips merging, a width running off) needs more
# iterations the more parameters share it; scipy's budget grows with them too (100 (n + 1)
# evaluations with a Jacobian). 8 Lorentzian dips (25 parameters), starts one linewidth off
# (experiments/batch_robustness): 99.2% converged within 200, 99.65% within 500, at the
# batch's speed within this machine's noise.
DEFAULT_MAX_ITER = 200
MAX_ITER_PER_PARAMETER = 20


def default_max_iter(n_params: int) -> int:
    """``max_iter`` when the call gives none."""
    return max(DEFAULT_MAX_ITER, MAX_ITER_PER_PARAMETER * n_params)


# Fits per kernel call: bounds the memory of the per-fit work arrays and covariances that
# are not kept, and is the unit of progress.
CHUNK_FITS = 1 << 16
DEVICES = ("cpu", "cuda")


# The default rule's quick start for a user's model (the NumPy engine answers its first
# calls, then numba compiles its batched passes on a background thread:
# autofit._dispatch.quick_choice) up to this many point
# evaluations per pass, fits x points x (parameters + 1): beyond it numba's compilation
# (~1.8 s in a fresh process) answers sooner. A user's 4-parameter peak on 200 points,
# first call, NumPy engine / numba: 1,000 fits 0.19 / 1.70 s, 5,000 1.28 / 1.72 s, 20,000
# 5.89 / 1.86 s; with arctan 1,000 fits 0.43 s, 5,000 2.56 s.
QUICK_START_MAX_EVALUATIONS = 6_000_000
QUICK_START_MAX_EVALUATIONS_ROBUST = 3_000_000  # a robust loss or Poisson MLE
# Fits the background compilation runs (a few passes each).
_WARM_UP_FITS = 4


def quick_choice(problem, choice, device, checkpoint=None):
    """The default rule's quick start for ``problem`` (see
    :func:`autofit._dispatch.quick_choice`): for a user's float64 model on the CPU, up to
    :data:`QUICK_START_MAX_EVALUATIONS`; a choice whose ``after_call`` the caller runs once
    the call has its answer. Else ``choice``."""
    if (isinstance(problem.model, Model) or device != "cpu" or checkpoint is not None
            or problem.dtype != np.float64):
        return choice
    evaluations = problem.n_fits * problem.y.shape[1] * (problem.n_params + 1)
    limit = (QUICK_START_MAX_EVALUATIONS
             if problem.estimator == _codes.ESTIMATOR_LSE else
             QUICK_START_MAX_EVALUATIONS_ROBUST)

    # A few fits, copied: the quick start keeps its warm-up until numba compiles (maybe
    # never), and views would keep the call's whole arrays alive.
    k = min(problem.n_fits, _WARM_UP_FITS)
    x, y, weights, p0, lower, upper = (np.array(a) for a in problem.rows(0, k))
    sample = replace(problem, x=x, y=y, weights=weights, p0=p0, lower=lower, upper=upper,
                     leading=(k,), max_iter=2, f_scale=1.0)

    def warm_up():  # on the background thread: a few passes of a few fits
        _run(choice.requested, device, sample, keep_covariance=False)

    exact, _ = problem.exact()
    return _dispatch.quick_choice(
        choice, problem.model, problem.n_params, 1 if problem.x.shape[1] == 1 else 2,
        warm_up=warm_up, evaluations=evaluations, max_evaluations=limit,
        cached=lambda: _forward_mode.is_compiled_on_disk(exact, "batch"),
        elsewhere=(functools.partial(_elsewhere.batch_work, exact=exact, problem=sample)
                   if exact is not None else None))


def solve(problem, choice, device, strict, absolute_sigma, covariance, *, progress=False,
           checkpoint=None, chunk_size=None):
    """Run a built problem on the chosen backend (with its fallbacks) into a BatchResult."""
    store = None
    if checkpoint is not None:
        chunk_size = chunk_size or CHUNK_FITS
        store = _checkpoint.Checkpoint(checkpoint,
                                       _identity(problem, choice, device, covariance),
                                       [[s, min(s + chunk_size, problem.n_fits)]
                                        for s in range(0, problem.n_fits, chunk_size)])

    def attempt(name):
        devices = _dispatch.host_of(name).DEVICES
        if device not in devices:
            raise BackendCannotRun(f"device={device!r} is not one of the {name} backend's "
                                   f"devices {devices}")
        return _run(name, device, problem, chunk_size=chunk_size, store=store,
                    progress=progress, keep_covariance=covariance, notes=choice.notes)

    outputs = _dispatch.run_with_fallback(choice, attempt, strict=strict)
    return problem.result(outputs, choice, device, absolute_sigma, covariance)


def check_chunk_size(chunk_size):
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer (fits per chunk), got "
                         f"{chunk_size!r}")
    return int(chunk_size)


def _identity(problem, choice, device, keep_covariance=True):
    """What a checkpoint of this in-memory problem must match: data, model and options."""
    return {
        "kind": "in-memory",
        "model": _checkpoint.model_identity(problem.model),
        "data": _checkpoint.digest_arrays([problem.x, problem.y, problem.weights, problem.p0,
                                           problem.lower, problem.upper, problem.free]),
        "options": {"backend": choice.requested, "device": device,
                    "dtype": str(problem.dtype), "estimator": int(problem.estimator),
                    "tol": problem.tol, "max_iter": problem.max_iter, "jac": problem.jac,
                    "covariance": bool(keep_covariance)},
    }


def _device_ran_on(backend: str, requested: str) -> str:
    """The device the backend ran on, as its host module reports it (jax places arrays
    itself: on a GPU machine a jax batch runs on 'gpu' whatever ``device=`` says)."""
    return _dispatch.host_of(backend).device_name(requested)


def choose_device(device):
    device = device if device is not None else _environment.value("DEVICE", "cpu")
    device = str(device).lower()
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r} (from the "
                         "argument or FFIT_DEVICE)")
    return device


@dataclass
class Problem:
    """The normalised arguments: fits flattened to one leading axis."""

    model: object
    n_params: int
    param_names: tuple[str, ...]
    leading: tuple[int, ...]
    x: np.ndarray          # (1 or n_fits, k, n_points)
    y: np.ndarray          # (n_fits, n_points)
    weights: np.ndarray    # (1 or n_fits, n_points)
    p0: np.ndarray         # (n_fits, n_params)
    lower: np.ndarray      # (1 or n_fits, n_params)
    upper: np.ndarray
    free: np.ndarray       # (n_params,) bool
    estimator: int
    tol: float
    max_iter: int
    jac: str | None
    dtype: np.dtype
    loss: str = "linear"
    f_scale: np.ndarray | float = 1.0  # (n_fits,) or a scalar; folded into the weights

    @classmethod
    def build(cls, model, x, y, p0, sigma, bounds, fixed, estimator, max_iter, tol, jac,
              dtype, loss="linear", f_scale=1.0):
        if not callable(model):
            raise TypeError(f"model must be callable f(x, *params) or an autofit model, got "
                            f"{type(model).__name__}")
        dtype = check.check_dtype(dtype, DEFAULT_TOL)
        estimator_code = check.check_estimator(estimator)
        loss, estimator_code = check.check_loss(loss, estimator_code, allow_callable=False)
        y = check.check_batch_y(y)
        leading, n_points = y.shape[:-1], y.shape[-1]
        y = y.reshape(-1, n_points)
        x = check.batch_x(x, leading, n_points, getattr(model, "n_variables", None),
                          getattr(model, "name", "given"))
        n_params, param_names = _parameters(model, p0)
        p0 = _start(model, p0, x, y, leading, n_params)
        lower, upper = check.batch_bounds(bounds, leading, n_params)
        free = check.free_mask(fixed, param_names)
        weights = check.batch_weights(sigma, leading, n_points, estimator_code)
        f_scale = check.check_f_scale(f_scale, leading)
        if loss != "linear":
            # rho on (r / f_scale)²: the kernels take f_scale 1 with the weights divided.
            weights = weights / (f_scale if np.ndim(f_scale) == 0 else f_scale[:, None])
        max_iter = check.check_max_iter(max_iter, default_max_iter(n_params))
        tol = check.check_tol(tol, DEFAULT_TOL[dtype])
        check.check_batch_jac(jac)
        check.check_batch_feasible(p0, lower, upper, leading)

        def cast(a):
            return np.ascontiguousarray(a, dtype=dtype)

        return cls(model, n_params, param_names, leading, cast(x), cast(y), cast(weights),
                   cast(p0), cast(lower), cast(upper), free, estimator_code, tol,
                   max_iter, jac, dtype, loss, f_scale)

    @property
    def n_fits(self) -> int:
        return self.y.shape[0]

    def exact(self):
        """``(point functions, None)`` generated from the model's source for every engine
        that takes them (:mod:`autofit._forward_mode`, checked at the first fit's x and
        start), or ``(None, why not)``; a Jacobian asked for (``jac``) takes none."""
        if self.jac is not None:
            return None, f"jac={self.jac!r}"
        n_variables = self.x.shape[1]
        x = self.x[0, 0] if n_variables == 1 else self.x[0]
        return _forward_mode.exact_or_none(self.model, self.n_params, n_variables, x,
                                           self.p0[0].astype(np.float64))

    def rows(self, start, stop):
        """The per-fit argument arrays (x, y, weights, p0, lower, upper) of fits start:stop."""
        def rows(a):
            return a if a.shape[0] == 1 else a[start:stop]

        return (rows(self.x), self.y[start:stop], rows(self.weights), self.p0[start:stop],
                rows(self.lower), rows(self.upper))

    def result(self, outputs, choice, device, absolute_sigma, keep_covariance):
        params, chi2, n_iter, status, cov = outputs
        n_used = np.count_nonzero(np.broadcast_to(self.weights != 0, self.y.shape), axis=1)
        dof = n_used - np.count_nonzero(self.free)
        robust = self.loss != "linear"
        if self.estimator != _codes.ESTIMATOR_MLE and not absolute_sigma:
            # (robust: the kernels' chi2 and covariance are in units of f_scale², which
            # cancel here, as in scipy's curve_fit)
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(dof > 0, chi2 / dof, np.inf)
            cov = cov * (factor[:, None, None] if cov.ndim == 3 else factor[:, None])
        elif robust:
            squared = np.broadcast_to(np.asarray(self.f_scale, dtype=cov.dtype) ** 2,
                                      chi2.shape)
            cov = cov / (squared[:, None, None] if cov.ndim == 3 else squared[:, None])
        if robust:
            chi2 = chi2 * np.asarray(self.f_scale, dtype=chi2.dtype) ** 2
        # Without keep_covariance, _run kept each covariance's diagonal only.
        diagonal = np.diagonal(cov, axis1=1, axis2=2) if cov.ndim == 3 else cov
        with np.errstate(invalid="ignore"):
            errors = np.sqrt(diagonal)
        status = status.astype(np.int8)
        converged = np.isin(status, _codes.CONVERGED_CODES)
        shape = self.leading
        single_status = Status(int(status[0])) if shape == () else status.reshape(shape)
        # The settings, saved with the result: JSON-compatible values only.
        options = {"estimator": "mle" if self.estimator == _codes.ESTIMATOR_MLE else "lse",
                   "tol": self.tol, "max_iter": self.max_iter, "dtype": self.dtype.name,
                   "jac": self.jac, "absolute_sigma": bool(absolute_sigma),
                   "fixed": [n for n, free in zip(self.param_names, self.free, strict=True)
                             if not free],
                   "bounds": bool(np.isfinite(self.lower).any()
                                  or np.isfinite(self.upper).any()),
                   "n_points": int(self.y.shape[1]), "covariance_kept": bool(keep_covariance),
                   "loss": self.loss}
        return BatchResult(
            params=params.reshape(shape + (self.n_params,)),
            errors=errors.reshape(shape + (self.n_params,)),
            covariance=(cov.reshape(shape + (self.n_params, self.n_params))
                        if keep_covariance else None),
            chi2=chi2.reshape(shape), n_iter=n_iter.reshape(shape), status=single_status,
            converged=converged.reshape(shape), backend=choice.backend,
            backend_reason=choice.reason, device=_device_ran_on(choice.backend, device),
            model=getattr(self.model, "name", getattr(self.model, "__name__", "model")),
            param_names=self.param_names,
            estimator="mle" if self.estimator == _codes.ESTIMATOR_MLE else "lse",
            dof=dof.reshape(shape), options=options)


def _parameters(model, p0):
    if isinstance(model, Model) and model.n_params is not None:
        n_params = model.n_params
    elif p0 is not None:
        n_params = np.shape(p0)[-1] if np.ndim(p0) else 1
    else:
        n_params = check.count_parameters(model)
    names = getattr(model, "param_names", None)
    if not names or len(names) != n_params:
        names = tuple(f"p{j}" for j in range(n_params))
    return n_params, tuple(names)


def _model_x(x):
    return x[:, 0] if x.shape[1] == 1 else x


def _start(model, p0, x, y, leading, n_params):
    n_fits = y.shape[0]
    if p0 is None:
        if isinstance(model, Model):
            if x.shape[0] == 1:
                with np.errstate(all="ignore"):
                    guess = model.guess(_model_x(x)[0], y)
            else:
                with np.errstate(all="ignore"):
                    guess = np.stack([model.guess(_model_x(x)[i], y[i])
                                      for i in range(n_fits)])
            return np.asarray(guess, dtype=np.float64).reshape(n_fits, n_params)
        return np.ones((n_fits, n_params))
    return check.batch_p0(p0, leading, n_params)


# ----------------------------------------------------------------------------- backends

def _run(backend, device, problem, *, chunk_size=None, store=None, progress=False,
         keep_covariance=True, notes=None):
    """All chunks on one backend; BackendCannotRun if it cannot run this model.

    Without ``keep_covariance`` only each covariance's diagonal is kept, ``(n_fits,
    n_params)``: 4 million 25-parameter fits would otherwise hold 20 GB of matrices.

    Chunks are ``chunk_size`` fits when given (always with a checkpoint ``store``, whose
    finished chunks are loaded, not run); else CHUNK_FITS with ``progress=False`` or off
    the CPU; else sized as they go to take about TARGET_CHUNK_S each, so a progress bar
    moves a few times a second (this costs nothing measurable on numba, see
    experiments/dask_scaling).
    """
    host = _dispatch.host_of(backend)
    engine = host.batch_engine(problem, device)
    n, p = problem.n_fits, problem.n_params
    dtype = problem.dtype
    params = np.empty((n, p), dtype=dtype)
    chi2 = np.empty(n, dtype=dtype)
    n_iter = np.empty(n, dtype=np.int64)
    status = np.empty(n, dtype=np.int64)
    cov = np.empty((n, p, p) if keep_covariance else (n, p), dtype=dtype)
    outputs = (params, chi2, n_iter, status, cov)
    finished = set()
    if store is not None:
        for index in store.finished():
            start, stop = store.chunks[index]
            loaded = store.load(index, (stop - start,))
            if loaded is not None and set(loaded[0]) == set(_OUTPUT_NAMES):
                for name, out in zip(_OUTPUT_NAMES, outputs):
                    out[start:stop] = loaded[0][name]
                finished.add(index)
    adaptive = (chunk_size is None and progress is not False and device == "cpu"
                and not host.CHUNKS_RECOMPILE)
    size = MIN_CHUNK_FITS if adaptive else chunk_size or CHUNK_FITS
    done = sum(store.chunks[i][1] - store.chunks[i][0] for i in finished)
    label = f"fit_batch {_model_name(problem.model)} on {backend}"
    with _progress.ProgressBar(n, progress, initial=done, desc=label) as bar:
        start, index = 0, 0
        while start < n:
            stop = min(start + size, n)
            if index not in finished:
                began = time.perf_counter()
                rows = problem.rows(start, stop)
                try:
                    out = _call(host, engine, rows, problem)
                except BackendCannotRun as exc:
                    # The engine cannot run this model: another of the backend's may
                    # (numba's for models compiled for arrays), else BackendCannotRun again.
                    engine = host.batch_rescue(problem, device, exc)
                    if engine is None:
                        raise
                    out = _call(host, engine, rows, problem)
                out = [np.asarray(value) for value in out]
                if not keep_covariance:
                    out[4] = np.diagonal(out[4], axis1=1, axis2=2)
                for target, value in zip(outputs, out):
                    target[start:stop] = value
                if store is not None:
                    store.save(index, {name: target[start:stop]
                                       for name, target in zip(_OUTPUT_NAMES, outputs)})
                bar.update(stop - start)
                if adaptive:
                    size = _next_chunk_size(stop - start, time.perf_counter() - began)
            start, index = stop, index + 1
    if engine.note is not None and notes is not None:  # only for the backend that ran
        notes.append(engine.note)
    return outputs


_OUTPUT_NAMES = ("params", "chi2", "n_iter", "status", "covariance")
# Adaptive chunks (progress on, CPU): from MIN_CHUNK_FITS, sized to take about TARGET_CHUNK_S.
MIN_CHUNK_FITS = 1024
TARGET_CHUNK_S = 0.25


def _next_chunk_size(n_fits, seconds):
    """A power of two of fits expected to take about TARGET_CHUNK_S, within
    [MIN_CHUNK_FITS, CHUNK_FITS]."""
    wanted = n_fits * TARGET_CHUNK_S / max(seconds, 1e-9)
    size = 1 << max(int(np.log2(max(wanted, 1.0))), 0)
    return int(min(max(size, MIN_CHUNK_FITS), CHUNK_FITS))


def _model_name(model):
    return getattr(model, "name", getattr(model, "__name__", "model"))


def _call(host, engine, rows, problem):
    x, y, w, p0, lower, upper = rows
    return host.batch_call(engine.solve, (
        engine.model, engine.jacobian, engine.jac_method, x, y, w, p0, lower, upper,
        problem.free, problem.estimator, problem.tol, problem.max_iter), problem.dtype)


