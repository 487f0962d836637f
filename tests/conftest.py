"""Shared test configuration.

JAX runs in float64 only inside autofit's own calls (``jax.enable_x64`` as a context), so the
test run needs no global JAX flag either.
"""

import importlib.util
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

ALL_BACKENDS = ("numpy", "numba", "jax")


def installed(backend: str) -> bool:
    module = {"numpy": "numpy", "numba": "numba", "jax": "jax"}[backend]
    return importlib.util.find_spec(module) is not None


def backend_params(backends=ALL_BACKENDS):
    """pytest params over backends, skipped with a reason where one is not installed."""
    return [pytest.param(b, id=b, marks=pytest.mark.skipif(
        not installed(b), reason=f"{b} is not installed (pip install 'autofit-lm[{b}]')"))
        for b in backends]


@pytest.fixture(autouse=True)
def _clean_backend_config(monkeypatch):
    """Each test starts from the default rule: no FFIT_* variables, no set_backend."""
    import autofit

    monkeypatch.delenv("FFIT_BACKEND", raising=False)
    monkeypatch.delenv("FFIT_STRICT", raising=False)
    monkeypatch.delenv("FFIT_DEVICE", raising=False)
    autofit.set_backend(None)
    yield
    autofit.set_backend(None)
