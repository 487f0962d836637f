"""The quick start's background compilation of a user's model, in another process.

The default rule's quick start (:func:`autofit._dispatch.quick_choice`) answers a new
model's calls on the NumPy engine, and once those have taken their time, the compiling
backend compiles the model in the background. On a thread of this process that
compilation shares Python's lock with the calls, which ran 2-6x slower beside it and made
it twice as long, so the calls waited for it instead: a scientist's loop of 1,000 fits of
their own gaussian on 3,000 points stopped for 1.5 s, and took 2.7 s where scipy's took
1.1 s.

Where the model's derivatives were generated from its source, what the backend compiles
for it (curve_fit's fused pass, the batched passes of fit_batch and of a robust curve_fit)
is text (:mod:`autofit._forward_mode`: the point functions name only ``math``, ``np`` and
literals), which the backend writes into modules of its disk cache. A child process (this
Python, this autofit) compiles them into the disk cache on another core while the calls go
on on the NumPy engine; this process then loads them (0.4 s, during which its calls wait).
A child still compiling when this process exits is stopped.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading

# The folder that holds this autofit package: the child imports the same one.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CHILD = ("import sys; sys.path.insert(0, {root!r}); "
          "from autofit._elsewhere import main; main()")

_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()
_exiting = threading.Event()


class Stopped(Exception):
    """This process is exiting: the compilation stopped, and nothing is left to load."""


def fused_work(host: str, exact, n_params: int, sample) -> dict:
    """What a child compiles for a fused pass with ``compile_fused_from_sources`` of the
    backend's ``host`` module (its name): ``exact``, a model's ``(value, gradient)`` point
    functions generated from its source (:mod:`autofit._forward_mode`); ``sample``, a few
    points of a call's data, ``(x, ydata, weights, p0, lower, upper)``, ``x`` (n_points,)
    or (n_variables, n_points)."""
    return _job(host, "compile_fused_from_sources", exact, n_params=int(n_params),
                **dict(zip(("x", "ydata", "weights", "p0", "lower", "upper"), sample)))


def batch_work(host: str, exact, problem) -> dict:
    """What a child compiles for the batched passes of ``problem`` (a few fits of a
    ``fit_batch`` or a robust ``curve_fit``: :class:`autofit._batch.Problem`) with the point
    functions ``exact`` (its model's), with ``compile_batch_from_sources`` of the
    backend's ``host`` module."""
    return _job(host, "compile_batch_from_sources", exact, x=problem.x, ydata=problem.y,
                weights=problem.weights, p0=problem.p0, lower=problem.lower,
                upper=problem.upper, free=problem.free, estimator=int(problem.estimator),
                tol=float(problem.tol), max_iter=int(problem.max_iter))


def _job(host, function, exact, **arguments):
    import numpy as np

    value, gradient = exact
    arrays = {name: {"array": a.tolist(), "dtype": a.dtype.name}
              for name, a in arguments.items() if isinstance(a, np.ndarray)}
    return {"host": host, "function": function,
            "arguments": {**arguments, **arrays, "value_source": value.generated_source,
                          "gradient_source": gradient.generated_source}}


def compile_in_child(job: dict) -> bool:
    """Run :func:`fused_work`'s or :func:`batch_work`'s ``job`` in a child process and wait
    for it (this thread only: waiting holds no lock of Python's). True when it compiled;
    :class:`Stopped` when this process began to exit meanwhile."""
    if not sys.executable or _exiting.is_set():
        return False
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD.format(root=_ROOT)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return False
    with _children_lock:
        _children.add(child)
    try:
        try:
            child.stdin.write(json.dumps(job).encode())
            child.stdin.close()
        except OSError:  # the child has ended already: its exit status says how
            pass
        child.wait()
    finally:
        with _children_lock:
            _children.discard(child)
    if _exiting.is_set():
        raise Stopped
    return child.returncode == 0


@atexit.register
def _stop_children() -> None:
    _exiting.set()
    with _children_lock:
        children = list(_children)
    for child in children:
        child.kill()
        child.wait()


def main() -> None:
    """The child: compile the job on stdin (exit status 0 when it did)."""
    import importlib

    import numpy as np

    job = json.loads(sys.stdin.read())
    try:
        os.nice(5)  # the parent's calls, on the NumPy engine meanwhile, come first
    except (AttributeError, OSError):
        pass
    arguments = {name: np.asarray(a["array"], dtype=a["dtype"]) if isinstance(a, dict) else a
                 for name, a in job["arguments"].items()}
    getattr(importlib.import_module(job["host"]), job["function"])(**arguments)
