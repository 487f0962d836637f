"""autofit's settings from the environment, read in one place.

One prefix, ``FFIT_``:

- ``FFIT_BACKEND``: ``jax``, ``numba`` or ``numpy``, the backend of a call that names none;
- ``FFIT_STRICT``: ``1``/``true``/``yes``/``on`` makes a fallback an error;
- ``FFIT_DEVICE``: ``cpu`` or ``cuda``, for numba's batches;
- ``FFIT_CACHE_DIR``: where numba's generated kernels are kept (default
  ``$XDG_CACHE_HOME/autofit`` or ``~/.cache/autofit``);
- ``FFIT_SYSTEM_MALLOC``: ``1``/``true``/``yes``/``on`` leaves glibc's ``malloc`` settings
  as they are (read once, at import: :mod:`autofit._memory`).

Older spellings are still honoured: ``AUTOFIT_CACHE_DIR``. Each is read when it is used, so
a variable set in a running process takes effect at the next call (but
``FFIT_SYSTEM_MALLOC``).
"""

from __future__ import annotations

import os

PREFIX = "FFIT_"
# name -> older variables that mean the same, read when the FFIT_ one is unset
_OLDER = {"CACHE_DIR": ("AUTOFIT_CACHE_DIR",)}
_TRUE = ("1", "true", "yes", "on")


def setting(name: str) -> tuple[str, str] | None:
    """``(variable, value)`` for setting ``name`` (``"BACKEND"``...): the FFIT_ variable, or
    an older spelling of it; None when none is set to a non-blank value."""
    for variable in (PREFIX + name, *_OLDER.get(name, ())):
        value = os.environ.get(variable, "").strip()
        if value:
            return variable, value
    return None


def value(name: str, default: str | None = None) -> str | None:
    """The value of setting ``name``, or ``default``."""
    found = setting(name)
    return default if found is None else found[1]


def flag(name: str) -> bool:
    """Whether setting ``name`` is switched on (``1``, ``true``, ``yes`` or ``on``)."""
    return str(value(name, "")).lower() in _TRUE


def cache_directory() -> str:
    """Where generated kernel modules (and numba's cache of them) are kept."""
    explicit = value("CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "autofit")
