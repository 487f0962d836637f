"""The disk cache of numba's CPU batch kernels for built-in models.

The kernel of a built-in model is compiled from a generated module in a per-user cache
directory with numba's ``cache=True`` (:func:`cached_cpu_kernel`, through
:mod:`autofit.numba.generated`), so that only the first process ever compiles it; kernels
around user functions are compiled in each process.
"""

from __future__ import annotations

import numpy as np

# cache_directory: where the kernels are kept (the setting's reader, as before the move).
from autofit.numba.generated import cache_directory, import_generated  # noqa: F401
from autofit.numba.kernel import FIT_RANGE_SOURCE
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


def _kernel_module_source(value, gradient, jac_method, n_params, dtype):
    """The source of a module defining ``fit_range`` (:data:`FIT_RANGE_SOURCE`) around the
    model's ``fit_one``, compiled for its one signature with ``cache=True``, or None when
    the point functions cannot be imported by name (user models)."""
    names = (_importable_name(value), _importable_name(gradient))
    if None in names:
        return None
    (value_module, value_name), (gradient_module, gradient_name) = names
    dtype_name = np.dtype(dtype).name
    return "\n".join([
        f'"""autofit CPU batch kernel: {value_name}, jac_method {jac_method}, '
        f'{n_params} parameters, {dtype_name} (generated; safe to delete)."""',
        "import numba",
        "import numpy as np",
        "",
        "from autofit.numba.kernel import cpu_fit_one, fit_range_type",
        f"from {value_module} import {value_name} as value",
        f"from {gradient_module} import {gradient_name} as gradient",
        "",
        f"fit_one = cpu_fit_one(value, gradient, {int(jac_method)}, {int(n_params)}, "
        f"np.{dtype_name})",
        f"N_PARAMS = {int(n_params)}",
        f"WORK_ROWS = {work_rows(n_params)}",
        FIT_RANGE_SOURCE,
        f"fit_range = numba.njit(fit_range_type(np.{dtype_name}).signature, cache=True, "
        "error_model='numpy')(fit_range)",
        "",
    ])


def cached_cpu_kernel(value, gradient, jac_method, n_params, dtype=np.float64):
    """The CPU kernel from a generated module in :func:`cache_directory`, compiled with
    numba's ``cache=True``, so that a later process loads it instead of compiling it.

    The module's name holds a hash of its source, of the sources it compiles and of the
    numba, llvmlite and Python versions, so a changed kernel is never loaded stale. None for
    user models, or when the directory cannot be written.
    """
    source = _kernel_module_source(value, gradient, jac_method, n_params, dtype)
    if source is None:
        return None
    module = import_generated("autofit_batch", source)
    if module is None:
        return None
    from autofit.numba.kernel import as_first_class, kernel_around

    return kernel_around(as_first_class(module.fit_range, dtype), dtype)
