"""glibc's ``malloc`` set for the NumPy engine's arrays (Linux), once, at import.

A pass of the NumPy engine makes and frees some twenty arrays of the data's size. glibc
gives the free top of its heap back to the system as soon as it exceeds 128 KiB
(``M_TRIM_THRESHOLD``), and serves an array of 128 KiB or more from a fresh mapping until
its own adaptation has raised that threshold (``M_MMAP_THRESHOLD``): each pass then has
every page of its arrays faulted in again by the kernel. Measured on a user's gaussian on a
line (``curve_fit(..., backend="numpy")`` in a loop, the 2-core VM): 3,000 points 405 page
faults and 1.62 ms a fit, 1 and 1.06 ms with the thresholds below (scipy's ``curve_fit``
1.0 ms either way); 30,000 points 7,388 faults and 12.4 ms, 16 and 5.5 ms (scipy 8.7-9.3
ms); 300,000 points 61 -> 46 ms; 3,000,000 points unchanged. Which of a process's loops
meets the first case depended on where its heap happened to stand: the same script ran at
either speed after an unrelated change.

So autofit sets the two thresholds where glibc's adaptation would take them at most (arrays
below 32 MiB from the heap, up to 64 MiB of free heap kept): a process that frees memory
keeps up to 64 MiB of it. ``FFIT_SYSTEM_MALLOC=1`` leaves glibc's settings as they are.
Nothing is done under another C library (musl, macOS, Windows).
"""

from __future__ import annotations

import os

from autofit import _environment

# mallopt's parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20

_state = {"report": "not set"}


def tune_malloc() -> str:
    """Set glibc's thresholds (module docstring) unless ``FFIT_SYSTEM_MALLOC`` is set;
    returns what was done, as :func:`malloc_report` says it."""
    if _environment.flag("SYSTEM_MALLOC"):
        _state["report"] = "glibc's own settings (FFIT_SYSTEM_MALLOC is set)"
        return _state["report"]
    try:
        library = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # not glibc (or not Linux)
        library = ""
    if not library.startswith("glibc"):
        _state["report"] = "the C library's own settings (not glibc)"
        return _state["report"]
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
        done = (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    except (OSError, AttributeError):
        done = False
    _state["report"] = (
        f"{library}: arrays below {MMAP_THRESHOLD >> 20} MiB from the heap, up to "
        f"{TRIM_THRESHOLD >> 20} MiB of free heap kept (FFIT_SYSTEM_MALLOC=1 leaves "
        "glibc's settings)" if done else f"{library}: its own settings (mallopt refused)")
    return _state["report"]


def malloc_report() -> str:
    """How ``malloc`` is set for this process (:func:`tune_malloc`)."""
    return _state["report"]
