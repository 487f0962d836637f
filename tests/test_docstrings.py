"""The docstring examples: their run, and where they are required.

pytest runs the examples itself: ``--doctest-modules`` over ``autofit/`` (``pyproject.toml``),
less the modules the repository's ``conftest.py`` leaves out. These tests keep that run from
shrinking unnoticed (a dropped option, an excluded module that has examples, an ``Examples``
section with nothing for doctest to run) and keep an example in every public function whose
docstring documents its parameters.
"""

from __future__ import annotations

import ast
import doctest
import importlib.util
import inspect
import re
import sys
from pathlib import Path

import autofit
import autofit.models

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "autofit"


def _section(name: str) -> re.Pattern:
    """A NumPy-style section heading: the name, then a line of as many dashes."""
    return re.compile(rf"^[ \t]*{name}[ \t]*\n[ \t]*-{{{len(name)}}}[ \t]*$", re.MULTILINE)


EXAMPLES = _section("Examples")
PARAMETERS = _section("Parameters")


def _has_examples(docstring: str) -> bool:
    return bool(doctest.DocTestParser().get_examples(docstring))


def _docstrings(path: Path) -> list[tuple[str, str]]:
    """``(name, docstring)`` of everything in the source file doctest would search.

    Read from the source, not by importing, so that modules the doctest run must not import
    are checked too.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node, clean=True)
            if docstring:
                found.append((getattr(node, "name", path.name), docstring))
    return found


def _root_conftest():
    # A copy of its own: the one pytest loaded is registered under a name that depends on
    # the import mode.
    spec = importlib.util.spec_from_file_location("_autofit_root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_test_command_runs_the_docstring_examples():
    with (ROOT / "pyproject.toml").open("rb") as f:
        options = tomllib.load(f)["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in options["addopts"].split()
    assert "autofit" in options["testpaths"]
    assert "NORMALIZE_WHITESPACE" in options.get("doctest_optionflags", [])


def test_modules_left_out_of_the_doctest_run_have_no_examples():
    left_out = sorted(_root_conftest().NOT_DOCTESTED)
    stale = [relative for relative in left_out if not (ROOT / relative).is_file()]
    assert not stale, f"conftest.py leaves out modules that do not exist: {stale}"
    # pytest never imports __main__.py files for their doctests.
    left_out += [path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("__main__.py")]
    with_examples = [f"{relative}::{name}" for relative in left_out
                     for name, docstring in _docstrings(ROOT / relative)
                     if _has_examples(docstring)]
    assert not with_examples, (
        f"these examples are never run (the doctest run does not import their modules): "
        f"{with_examples}; move them to a module it imports, or make the module importable")


def test_every_examples_section_has_an_example_to_run():
    empty = [f"{path.relative_to(ROOT).as_posix()}::{name}"
             for path in sorted(PACKAGE.rglob("*.py"))
             for name, docstring in _docstrings(path)
             if EXAMPLES.search(docstring) and not _has_examples(docstring)]
    assert not empty, f"Examples sections without a '>>>' example for doctest to run: {empty}"


def _public_api() -> dict[str, object]:
    """The functions and classes a user reaches: ``autofit.<name>`` and ``autofit.models``'."""
    api = {f"autofit.{name}": getattr(autofit, name) for name in autofit.__all__}
    api.update({f"autofit.models.{name}": value for name, value in vars(autofit.models).items()
                if not name.startswith("_") and inspect.isfunction(value)
                and value.__module__ == autofit.models.__name__})
    return {name: value for name, value in api.items()
            if inspect.isfunction(value) or inspect.isclass(value)}


def test_public_functions_that_document_parameters_show_an_example():
    documented = {name: inspect.getdoc(value) for name, value in _public_api().items()
                  if PARAMETERS.search(inspect.getdoc(value) or "")}
    assert documented, "no public function has a NumPy-style Parameters section"
    missing = [name for name, docstring in documented.items()
               if not (EXAMPLES.search(docstring) and _has_examples(docstring))]
    assert not missing, (
        f"public functions with a Parameters section but no Examples section with a '>>>' "
        f"example: {missing}")
