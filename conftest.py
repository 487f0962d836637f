"""Repository-wide pytest configuration: which modules the doctest run leaves out, and why.

``--doctest-modules`` (``pyproject.toml``) runs the docstring examples of every module under
``autofit/``, so collecting imports each of them. pytest itself never imports ``__main__.py``
files (``autofit/__main__.py``, the command line). Two kinds of module are not imported here:

- those in :data:`NOT_DOCTESTED`, never, with the reason given there;
- a backend's modules where the package they import is not installed (``autofit/numba``
  without numba, ``autofit/jax`` without jax): the folder is reported as skipped, with the
  extra to install, instead of each module failing to import.

``tests/test_docstrings.py`` checks that none of these modules has an example to run.

It also keeps one test process within the operating system's limit on memory mappings (see
:func:`_release_compiled_jax`).
"""

from __future__ import annotations

import gc
import importlib.util
import sys
from pathlib import Path

import pytest

from autofit._dispatch import _TABLE as BACKEND_TABLE

ROOT = Path(__file__).resolve().parent

# Path relative to the repository root -> why the doctest run does not import it.
NOT_DOCTESTED: dict[str, str] = {
    "autofit/numba/gpu.py": (
        "numba CUDA code: importing it imports numba.cuda, which depends on the numba-cuda "
        "package and the CUDA driver; its tests run it on numba's simulator in a subprocess"
    ),
}

# Backend folder (relative path) -> (package it imports, extra that installs it), from the
# dispatcher's table so that a new backend is covered without editing this file.
OPTIONAL_FOLDERS: dict[str, tuple[str, str]] = {
    module.replace(".", "/"): (dependency, extra)
    for module, dependency, extra in BACKEND_TABLE.values()
    if dependency is not None
}


def _relative(path: Path) -> str | None:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return None


def missing_dependency(path: Path) -> str | None:
    """Why the backend folder at ``path`` cannot be imported here, or None when it can."""
    relative = _relative(path)
    if relative not in OPTIONAL_FOLDERS:
        return None
    dependency, extra = OPTIONAL_FOLDERS[relative]
    if importlib.util.find_spec(dependency) is not None:
        return None
    return (f"{dependency} is not installed, so the doctests of {relative}/ cannot run "
            f"(pip install 'autofit-lm[{extra}]')")


class _NotImportable(pytest.Directory):
    """Stands for a folder whose modules cannot be imported: collecting it reports a skip."""

    def __init__(self, *, reason: str, **kwargs):
        super().__init__(**kwargs)
        self.reason = reason

    def collect(self):
        pytest.skip(self.reason)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if _relative(collection_path) in NOT_DOCTESTED:
        return True
    return None  # pytest's own rules decide


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    # Only the doctest run imports the backends' modules; without it they are not collected.
    if not parent.config.option.doctestmodules:
        return None
    reason = missing_dependency(path)
    if reason is None:
        return None  # pytest's own Package or Dir
    return _NotImportable.from_parent(parent, path=path, reason=reason)


# Memory mappings one process may hold (Linux's vm.max_map_count default is 65530). Each
# program XLA compiles for a CPU holds hundreds of them until jax drops it: the suite
# compiles thousands (the NIST problems alone, ~20,000 mappings), and past the limit XLA's
# next compilation crashes the process with a segmentation fault. A module adds at most
# ~20,000 (test_nist), so releasing above 25,000 keeps the process under ~45,000 while
# recompiling as little as it can.
MAPPINGS_BEFORE_RELEASE = 25_000


def _memory_mappings() -> int | None:
    try:
        with open("/proc/self/maps", "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:  # not Linux: release after every module
        return None


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_jax():
    """After a test module, drop jax's compiled programs once the process holds many
    memory mappings (the next module recompiles what it needs)."""
    yield
    if "jax" not in sys.modules:
        return
    mappings = _memory_mappings()
    if mappings is None or mappings > MAPPINGS_BEFORE_RELEASE:
        sys.modules["jax"].clear_caches()
        gc.collect()
