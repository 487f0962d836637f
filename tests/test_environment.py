"""The environment is read in one place (autofit._environment), with one prefix (FFIT_) and
the older spellings still honoured."""

import pathlib
import re

import pytest

import autofit
from autofit import _environment

PACKAGE = pathlib.Path(autofit.__file__).parent


def test_only_the_environment_module_reads_the_environment():
    readers = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                     if re.search(r"os\.environ|os\.getenv", path.read_text())
                     and path.name != "_environment.py")
    assert readers == []


def test_cache_directory_from_ffit_then_the_older_name_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("FFIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("AUTOFIT_CACHE_DIR", str(tmp_path / "old"))
    assert _environment.cache_directory() == str(tmp_path / "old")
    monkeypatch.setenv("FFIT_CACHE_DIR", str(tmp_path / "new"))
    assert _environment.cache_directory() == str(tmp_path / "new")
    monkeypatch.delenv("FFIT_CACHE_DIR")
    monkeypatch.delenv("AUTOFIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _environment.cache_directory() == str(tmp_path / "xdg" / "autofit")


def test_the_numba_kernel_cache_follows_the_setting(monkeypatch, tmp_path):
    pytest.importorskip("numba", reason="numba is not installed")
    from autofit.numba.kernel_cache import cache_directory

    monkeypatch.setenv("FFIT_CACHE_DIR", str(tmp_path))
    assert cache_directory() == str(tmp_path)


@pytest.mark.parametrize("text, expected", [("1", True), ("yes", True), (" On ", True),
                                            ("0", False), ("", False), ("no", False)])
def test_strict_flag(monkeypatch, text, expected):
    monkeypatch.setenv("FFIT_STRICT", text)
    assert _environment.flag("STRICT") is expected
    assert autofit._dispatch.is_strict() is expected


def test_a_blank_variable_is_unset(monkeypatch):
    monkeypatch.setenv("FFIT_BACKEND", "   ")
    assert _environment.setting("BACKEND") is None
    assert "FFIT_BACKEND" not in autofit.explain_backend()


def test_the_backend_variable_is_named_in_the_explanation(monkeypatch):
    monkeypatch.setenv("FFIT_BACKEND", " numpy ")
    assert _environment.setting("BACKEND") == ("FFIT_BACKEND", "numpy")
    assert autofit.get_backend() == "numpy"
    assert "the FFIT_BACKEND variable" in autofit.explain_backend()
