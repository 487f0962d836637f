"""python -m autofit backends / validate."""

import subprocess
import sys

import pytest

from autofit import __main__ as cli
from autofit import validate
from tests.conftest import installed


def test_backends_lists_every_backend_and_the_fallback_table(capsys):
    assert cli.main(["backends"]) == 0
    out = capsys.readouterr().out
    for name in ("numpy", "numba", "jax"):
        assert name in out
    assert "jax    -> numba -> numpy" in out
    assert "jacobian_autodiff -> jax" in out
    assert "a call now would run on" in out


def test_validate_passes_and_prints_a_table(capsys):
    backends = [b for b in ("numba", "jax") if installed(b)] or ["numpy"]
    code = cli.main(["validate", "--sizes", "10,200", "--kernel", "model_gaussian",
                     "--kernel", "lm_solve", *sum((["--backend", b] for b in backends), [])])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "model_gaussian" in out and "lm_solve" in out
    assert "0 disagreement(s)" in out


def test_validate_exits_nonzero_on_disagreement(monkeypatch, capsys):
    if not installed("numba"):
        pytest.skip("numba is not installed")
    import autofit.numba
    import autofit.original

    monkeypatch.setattr(autofit.numba, "model_linear",
                        lambda x, p: autofit.original.model_linear(x, p) + 1e-6)
    code = cli.main(["validate", "--sizes", "10", "--kernel", "model_linear",
                     "--backend", "numba"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL model_linear" in out


def test_format_table_marks_errors():
    row = validate.Comparison("lm_solve", "analytic", 10, "jax", float("inf"), 1e-8, False,
                              0.0, "RuntimeError: boom")
    assert "FAIL lm_solve [analytic, n=10] on jax: RuntimeError: boom" in \
        validate.format_table([row])


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "autofit", "backends"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "fallback table" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "autofit", "frobnicate"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
