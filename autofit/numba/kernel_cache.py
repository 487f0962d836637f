"""The disk cache of numba's CPU batch kernels for built-in models.

The kernel of a built-in model is compiled from a generated module in a per-user cache
directory with numba's ``cache=True`` (:func:`cached_cpu_kernel`), so that only the first
process ever compiles it; kernels around user functions are compiled in each process. The
module's name is a hash of its source, of every module of this package and of the shared
rules, and of the numba, llvmlite and Python versions: a changed kernel is never loaded
stale.
"""

from __future__ import annotations

import functools
import hashlib
import os

import numpy as np

from autofit.numba.kernel import FIT_RANGE_SOURCE
from autofit.numba.passes import work_rows

# Sources whose change must invalidate a disk-cached kernel (everything it compiles).
# What a generated kernel compiles besides its own source: every module of this package (the
# kernel's callees, the built-in models it imports) and the shared rules. numba's cache
# checks only the generated file itself, so all of them go into its name.
_KERNEL_SOURCES = ("autofit._codes", "autofit._rules")


def cache_directory():
    """Where the generated kernel modules (and numba's cache of them) are kept:
    :func:`autofit._environment.cache_directory` (``FFIT_CACHE_DIR``...), read at each call."""
    from autofit._environment import cache_directory as configured

    return configured()


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


@functools.cache
def _compiled_sources_digest() -> bytes:
    """A hash of everything a generated kernel compiles besides its own source (read once
    per process: the files do not change under a running process)."""
    import importlib
    import sys

    import llvmlite
    import numba

    digest = hashlib.sha256()
    package = os.path.dirname(os.path.abspath(__file__))
    files = sorted(os.path.join(package, name) for name in os.listdir(package)
                   if name.endswith(".py"))
    files += [importlib.import_module(name).__file__ for name in _KERNEL_SOURCES]
    for path in files:
        with open(path, "rb") as fh:
            digest.update(fh.read())
    digest.update(f"{numba.__version__} {llvmlite.__version__} {sys.version}".encode())
    return digest.digest()


def _cache_key(source):
    digest = hashlib.sha256(source.encode())
    digest.update(_compiled_sources_digest())
    return digest.hexdigest()[:24]


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


def import_generated(prefix: str, source: str):
    """The module of generated ``source``, written to :func:`cache_directory` as
    ``<prefix>_<hash>.py`` and imported (once per process), so that the functions it
    compiles with numba's ``cache=True`` are compiled by the first process only. The hash
    covers the source, the sources it compiles and the numba, llvmlite and Python versions:
    a changed module is never loaded stale. None when the directory cannot be written."""
    import importlib.util
    import sys
    import tempfile

    name = f"{prefix}_{_cache_key(source)}"
    directory = cache_directory()
    path = os.path.join(directory, name + ".py")
    try:
        if not os.path.exists(path):
            os.makedirs(directory, exist_ok=True)
            # Written whole, then renamed: a process starting at the same time never
            # imports a half-written file.
            handle, temporary = tempfile.mkstemp(suffix=".tmp", dir=directory)
            with os.fdopen(handle, "w") as fh:
                fh.write(source)
            os.replace(temporary, path)
    except OSError:
        return None
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        # Registered before it runs: numba's cache finds the kernel's globals by module name.
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]
