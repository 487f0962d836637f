"""The disk cache of numba's CPU batch kernels.

The solver of a chunk of fits (``fit_range``, one per number of parameters and dtype, for
every model) and a built-in model's passes over the points are compiled from generated
modules in a per-user cache directory with numba's ``cache=True``
(:func:`cached_fit_range`, :func:`cached_passes`, through :mod:`autofit.numba.generated`),
so that only the first process ever compiles them. So are the passes of a user's model
whose point functions :mod:`autofit._forward_mode` generated from its source (their source,
self-contained, is written into the module: a script run again loads its model's passes,
1.6 s of a 20,000-fit batch's first call, instead of compiling them); the passes of other
user functions are compiled in each process.
"""

from __future__ import annotations

import numpy as np

from autofit._codes import JAC_ANALYTIC
from autofit.numba.first_class import compiled_as

# cache_directory: where the kernels are kept (the setting's reader, as before the move).
from autofit.numba.generated import cache_directory, import_generated  # noqa: F401
from autofit.numba.kernel import FIT_RANGE_SOURCE, first_class_passes, fit_range_type
from autofit.numba.passes import work_rows


def _importable_name(function):
    """``(module, name)`` when ``function`` is a module-level function that a generated
    module can import by name, else None."""
    import importlib

    module, name = getattr(function, "__module__", None), getattr(function, "__name__", "")
    if module not in ("autofit.numba.points", "autofit.numba.kernel"):
        return None
    return (module, name) if getattr(importlib.import_module(module), name, None) is function \
        else None


def _solver_module_source(n_params, dtype):
    """The source of a module defining ``fit_range`` (:data:`FIT_RANGE_SOURCE`) for
    ``n_params`` parameters, compiled for its one signature with ``cache=True``."""
    dtype_name = np.dtype(dtype).name
    return "\n".join([
        f'"""autofit CPU batch solver: {n_params} parameters, {dtype_name} (generated; safe '
        'to delete)."""',
        "import numba",
        "import numpy as np",
        "",
        "from autofit.numba.kernel import cpu_fit_one, fit_range_type",
        "",
        f"fit_one = cpu_fit_one({int(n_params)}, np.{dtype_name})",
        f"N_PARAMS = {int(n_params)}",
        f"WORK_ROWS = {work_rows(n_params)}",
        FIT_RANGE_SOURCE,
        f"fit_range = numba.njit(fit_range_type(np.{dtype_name}).signature, cache=True, "
        "error_model='numpy')(fit_range)",
        "",
    ])


def cached_fit_range(n_params, dtype=np.float64):
    """``fit_range`` for ``n_params`` and ``dtype`` from a generated module in
    :func:`cache_directory`, as the first-class value the kernel takes; None when the
    directory cannot be written."""
    module = import_generated("autofit_solver", _solver_module_source(n_params, dtype))
    return None if module is None else compiled_as(module.fit_range, fit_range_type(dtype))


def point_function_definition(function, as_name):
    """Source lines that give a generated module ``function`` as ``as_name``: an import for
    a built-in point function, or the source of one generated from a user's model; None
    for anything else (a user's own function: its globals could be anything)."""
    found = _importable_name(function)
    if found is not None:
        return [f"from {found[0]} import {found[1]} as {as_name}"]
    source = getattr(function, "generated_source", None)
    if getattr(function, "__module__", None) != "autofit._forward_mode" or source is None:
        return None
    return [source.rstrip("\n"), "", "", f"{as_name} = {function.__name__}"]


def point_module_head(title: str, imports: str, value, gradient,
                      names=("value", "gradient")):
    """The first lines of a generated module that compiles something of these point
    functions with numba's ``cache=True``: its docstring (``title``), numba's and NumPy's
    imports and ``imports``, then ``value`` and ``gradient`` as ``names``
    (:func:`point_function_definition`; a ``gradient`` of None is None there); None where
    they can be neither imported by name nor written out."""
    definitions = (point_function_definition(value, names[0]),
                   [f"{names[1]} = None"] if gradient is None
                   else point_function_definition(gradient, names[1]))
    if None in definitions:
        return None
    return [f'"""{title} (generated; safe to delete)."""', "import math", "", "import numba",
            "import numpy as np", "", imports, "", *definitions[0], "", *definitions[1], ""]


def _passes_module_source(value, gradient, jac_method, n_params, dtype):
    """The source of a module defining a model's ``evaluate`` and ``probe_rows``
    (:func:`autofit.numba.kernel.cpu_passes`), each compiled for its one signature with
    ``cache=True``, or None when the point functions can be neither imported by name nor
    written out (:func:`point_function_definition`)."""
    name = getattr(value, "__name__", "model")
    dtype_name = np.dtype(dtype).name
    head = point_module_head(
        f"autofit CPU batch passes: {name}, jac_method {jac_method}, {n_params} parameters, "
        f"{dtype_name}", "from autofit.numba.kernel import cpu_passes, pass_types", value,
        gradient)
    if head is None:
        return None
    return "\n".join([
        *head,
        f"_evaluate, _probe_rows = cpu_passes(value, gradient, {int(jac_method)}, "
        f"{int(n_params)}, np.{dtype_name})",
        f"_evaluate_type, _probe_rows_type = pass_types(np.{dtype_name})",
        "",
        "",
        "def evaluate(x, y, w, p, lower, upper, free, estimator, g, h, jac, work_p, weighing):",
        "    return _evaluate(x, y, w, p, lower, upper, free, estimator, g, h, jac, work_p,",
        "                     weighing)",
        "",
        "",
        "def probe_rows(x, y, w, q, free, estimator, jac, g_probe):",
        "    _probe_rows(x, y, w, q, free, estimator, jac, g_probe)",
        "",
        "",
        "evaluate = numba.njit(_evaluate_type.signature, cache=True, "
        "error_model='numpy')(evaluate)",
        "probe_rows = numba.njit(_probe_rows_type.signature, cache=True, "
        "error_model='numpy')(probe_rows)",
        "",
    ])


def cached_passes(value, gradient, jac_method, n_params, dtype=np.float64):
    """A model's ``(evaluate, probe_rows)`` from a generated module in
    :func:`cache_directory`, compiled with numba's ``cache=True`` so that a later process
    loads them instead of compiling them, as the first-class values the kernel takes.

    The module's name holds a hash of its source (a user model's generated point functions,
    with its numbers, included), of the sources it compiles and of the numba, llvmlite and
    Python versions, so a changed kernel is never loaded stale. None for user functions
    without generated point functions, or when the directory cannot be written.
    """
    source = _passes_module_source(value, gradient, jac_method, n_params, dtype)
    module = None if source is None else import_generated("autofit_passes", source)
    if module is None:
        return None
    if jac_method == JAC_ANALYTIC and np.dtype(dtype) == np.float64:
        from autofit._forward_mode import mark_compiled

        mark_compiled(value, gradient, "batch")  # the next process's quick start
    return first_class_passes(module.evaluate, module.probe_rows, dtype)
