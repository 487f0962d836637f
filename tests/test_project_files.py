"""Consistency checks between the project's packaging and CI files.

pyproject.toml (pip), pixi.toml (conda-forge), .ci/run and the README each say how to
install and test autofit; these tests keep them from drifting apart.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
PIXI = ROOT / "pixi.toml"
CI_RUN = ROOT / ".ci" / "run"
README = ROOT / "README.md"

# pyproject extra -> pixi feature holding the same packages (core deps: the default feature).
EXTRA_TO_FEATURE = {"numba": "numba", "jax": "jax", "test": "test"}

PYTEST_CMD = re.compile(r"python -m pytest\b[^\"'()\n]*")


def _load(path: Path) -> dict:
    with path.open("rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return _load(PYPROJECT)


@pytest.fixture(scope="module")
def pixi() -> dict:
    return _load(PIXI)


def normalize(requirement: str) -> str:
    """Package name of a PEP 508 requirement or a conda spec key, normalised.

    Lowercase, runs of '-', '_' and '.' as one '-', extras, version and markers stripped:
    ``"Dask[array]>=1; python_version<'3.11'"`` -> ``"dask"``.
    """
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"cannot read a package name from {requirement!r}"
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _feature_tables(pixi: dict, feature: str) -> list[dict]:
    """The tables that make up ``feature`` (``default``: the top-level ones)."""
    if feature == "default":
        tables = [pixi]
        if "default" in pixi.get("feature", {}):
            tables.append(pixi["feature"]["default"])
        return tables
    return [pixi["feature"][feature]]


def pixi_names(pixi: dict, feature: str) -> set[str]:
    """Normalised names of every conda and PyPI dependency of a pixi feature, all targets."""
    names: set[str] = set()
    for table in _feature_tables(pixi, feature):
        sections = [table]
        sections += list(table.get("target", {}).values())
        for section in sections:
            for key in ("dependencies", "pypi-dependencies"):
                names.update(normalize(name) for name in section.get(key, {}))
    return names


def environment_features(spec) -> list[str]:
    """Features of an [environments] entry: a list, or a table with ``features``."""
    if isinstance(spec, list):
        return spec
    assert isinstance(spec, dict) and "features" in spec, f"bad environment entry {spec!r}"
    return spec["features"]


# -- (a) pixi.toml ---------------------------------------------------------------------------


def test_pixi_workspace(pixi):
    workspace = pixi.get("workspace", pixi.get("project"))
    assert workspace is not None, "pixi.toml needs a [workspace] table"
    assert "conda-forge" in workspace["channels"]
    assert {"linux-64", "osx-arm64", "osx-64", "win-64"} <= set(workspace["platforms"])
    assert {"python", "numpy", "scipy"} <= pixi_names(pixi, "default")


@pytest.mark.parametrize("environment", ["cpu", "cuda"])
def test_pixi_environment_built_from_existing_features(pixi, environment):
    environments = pixi.get("environments", {})
    assert environment in environments, f"pixi.toml has no {environment!r} environment"
    features = environment_features(environments[environment])
    assert features, f"environment {environment!r} has no features"
    defined = set(pixi.get("feature", {})) | {"default"}
    missing = [name for name in features if name not in defined]
    assert not missing, f"environment {environment!r} uses undefined features {missing}"


def test_pixi_cuda_environment(pixi):
    features = environment_features(pixi["environments"]["cuda"])
    assert "cuda" in features
    assert "cuda" not in environment_features(pixi["environments"]["cpu"])
    cuda = pixi["feature"]["cuda"]
    assert str(cuda.get("system-requirements", {}).get("cuda", "")).startswith("12")


def test_pixi_tasks(pixi):
    tasks = dict(pixi.get("tasks", {}))
    for feature in pixi.get("feature", {}).values():
        tasks.update(feature.get("tasks", {}))

    def command(task):
        return task if isinstance(task, str) else task.get("cmd", "")

    assert command(tasks["test"]).startswith("python -m pytest")
    assert command(tasks["validate"]) == "python -m autofit validate"


def test_pixi_installs_the_package_editable(pixi, pyproject):
    name = pyproject["project"]["name"]
    spec = pixi.get("pypi-dependencies", {}).get(name)
    assert spec == {"path": ".", "editable": True}, (
        f"pixi.toml [pypi-dependencies] should install {name} = "
        f'{{ path = ".", editable = true }}, got {spec!r}'
    )


# -- (b) pyproject.toml and pixi.toml list the same packages ---------------------------------


def test_core_dependencies_in_pixi(pyproject, pixi):
    wanted = {normalize(req) for req in pyproject["project"]["dependencies"]}
    missing = wanted - pixi_names(pixi, "default")
    assert not missing, f"core dependencies missing from pixi.toml [dependencies]: {missing}"


@pytest.mark.parametrize("extra", sorted(EXTRA_TO_FEATURE))
def test_extra_dependencies_in_pixi(pyproject, pixi, extra):
    extras = pyproject["project"]["optional-dependencies"]
    assert extra in extras, f"pyproject.toml has no [{extra}] extra"
    feature = EXTRA_TO_FEATURE[extra]
    assert feature in pixi.get("feature", {}), f"pixi.toml has no feature {feature!r}"
    own = normalize(pyproject["project"]["name"])
    wanted = {normalize(req) for req in extras[extra]} - {own}
    have = pixi_names(pixi, feature) | pixi_names(pixi, "default")
    missing = wanted - have
    assert not missing, (
        f"dependencies of extra [{extra}] missing from pixi feature {feature!r} "
        f"(or the default feature): {missing}"
    )


def test_extras(pyproject):
    extras = pyproject["project"]["optional-dependencies"]
    assert {"numba", "jax", "cuda", "dask", "plot", "progress", "test", "all"} <= set(extras)
    own = normalize(pyproject["project"]["name"])
    in_all: set[str] = set()
    for req in extras["all"]:
        if normalize(req) == own:
            match = re.search(r"\[([^\]]*)\]", req)
            in_all.update(part.strip() for part in match.group(1).split(","))
        else:
            in_all.add(normalize(req))
    assert {"numba", "jax", "dask", "plot", "progress"} <= in_all
    assert "cuda" not in in_all, "[all] must not pull in the CUDA extra"


# -- (c) distribution name -------------------------------------------------------------------


def test_distribution_name_is_not_taken(pyproject):
    # "autofit" on PyPI is another project; the import package stays `autofit`.
    name = normalize(pyproject["project"]["name"])
    assert name != "autofit"
    assert name == "autofit-lm"


def test_package_data_ships_py_typed(pyproject):
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["autofit"]
    assert (ROOT / "autofit" / "py.typed").is_file()


# -- (d) .ci/run and the README run the same test command ------------------------------------


def ci_test_command() -> str:
    assert CI_RUN.is_file(), ".ci/run is missing"
    commands = {m.group(0).strip() for m in PYTEST_CMD.finditer(CI_RUN.read_text())}
    assert len(commands) == 1, f".ci/run should name one pytest command, found {commands}"
    return commands.pop()


def readme_test_commands(text: str) -> list[str]:
    """``python -m pytest`` commands (alone or after ``&&``) in fenced code blocks, in order."""
    commands = []
    fence = None
    for line in text.splitlines():
        stripped = line.strip()
        marker = re.match(r"(`{3,}|~{3,})", stripped)
        if marker:
            if fence is None:
                fence = marker.group(1)
            elif stripped.startswith(fence) and not stripped[len(fence):].strip():
                fence = None
            continue
        if fence is None:
            continue
        command = re.sub(r"^\$\s+", "", stripped)  # a "$ " shell prompt
        command = re.sub(r"\s+#.*$", "", command)  # a trailing shell comment
        # The quick start may install first: "pip install ... && python -m pytest ...".
        command = command.split("&&")[-1].strip()
        if command.startswith("python -m pytest"):
            commands.append(" ".join(command.split()))
    return commands


def test_ci_run_script():
    assert CI_RUN.is_file(), ".ci/run is missing"
    text = CI_RUN.read_text()
    assert text.startswith("#!"), ".ci/run needs a shebang line"
    assert "set -euo pipefail" in text
    if os.name == "posix":
        assert os.access(CI_RUN, os.X_OK), ".ci/run is not executable"
    assert ci_test_command() == "python -m pytest -q -p no:cacheprovider"


def test_ci_run_matches_readme_quick_start():
    ci_command = " ".join(ci_test_command().split())
    if not README.is_file():
        pytest.skip("README.md does not exist yet: no quick-start test command to compare")
    commands = readme_test_commands(README.read_text(encoding="utf-8"))
    assert commands, (
        "README.md has no fenced code block line starting with 'python -m pytest' "
        f"(expected the quick-start test command {ci_command!r})"
    )
    # The first such line is the quick start's test command.
    assert commands[0] == ci_command, (
        f"README quick start runs {commands[0]!r} but .ci/run runs {ci_command!r}"
    )


def test_readme_parser():
    text = "\n".join([
        "Run `python -m pytest` here (inline, ignored).",
        "```bash",
        "pip install -e '.[test]'",
        "$ python -m pytest  -q -p no:cacheprovider   # quick start",
        "```",
        "python -m pytest outside a fence",
        "~~~",
        "python -m pytest tests/benchmarks --benchmark-only",
        "~~~",
    ])
    assert readme_test_commands(text) == [
        "python -m pytest -q -p no:cacheprovider",
        "python -m pytest tests/benchmarks --benchmark-only",
    ]
