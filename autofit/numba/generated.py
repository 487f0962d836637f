"""Generated modules in the kernels' disk cache, so that what numba compiles from them with
``cache=True`` is compiled by the first process only (:func:`import_generated`): the batch
kernels of built-in models (:mod:`autofit.numba.kernel_cache`) and the robust losses' rows
of the CPU passes (:func:`autofit.numba.passes.robust_rows`). A module's name is a hash of
its source, of every module of this package and of the shared rules, and of the numba,
llvmlite and Python versions: a changed module is never loaded stale.
"""

from __future__ import annotations

import functools
import hashlib
import os

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
