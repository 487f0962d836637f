"""The package's structure: an acyclic import graph (every import statement counts, lazy
ones inside functions too), and one version."""

import ast
import pathlib
import sys

import autofit

PACKAGE = pathlib.Path(autofit.__file__).parent


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module -> the autofit modules it imports (``from autofit import _codes`` is an edge
    to ``autofit._codes``; ``from autofit import curve_fit`` one to the package)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                    node.module.split(".")[0] == "autofit"):
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    edges.add(submodule if submodule in modules else node.module)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name.split(".")[0] == "autofit")
        graph[name] = {edge for edge in edges if edge in modules and edge != name}
    return graph


def cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for node in graph:
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_the_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_result_types_and_formats_are_apart():
    graph = import_graph()
    # _io knows formats only; results and entry points build on it, never the reverse.
    assert not graph["autofit._io"] - {"autofit._checkpoint"}
    assert "autofit._io" in graph["autofit._results"]
    assert autofit.BatchResult.__module__ == autofit.FitResult.__module__ == "autofit._results"


def test_one_version():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    assert project["version"] == autofit.__version__


BACKEND_NAMES = {"numpy", "numba", "jax", "original"}
# The dispatcher holds the tables of backends (names, fallbacks, aliases) and the kernel
# table of the docs names them; every other module of the user layer asks a backend's host.
_NAMES_BACKENDS_ALLOWED = {"_dispatch.py", "_kernel_table.py"}


def _user_layer():
    return [path for path in sorted(PACKAGE.glob("*.py"))
            if path.name not in _NAMES_BACKENDS_ALLOWED]


def _backend_name_tests(tree) -> list[str]:
    """Comparisons with a backend's name, and dicts keyed by backend names."""
    found = []
    for node in ast.walk(tree):
        constants = []
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                elements = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                constants += [e.value for e in elements if isinstance(e, ast.Constant)]
        elif isinstance(node, ast.Dict):
            constants = [k.value for k in node.keys if isinstance(k, ast.Constant)]
        if BACKEND_NAMES & {c for c in constants if isinstance(c, str)}:
            found.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_the_user_layer_never_branches_on_a_backend_name():
    """What differs between backends is asked of the backend's host module."""
    branches = {path.name: _backend_name_tests(ast.parse(path.read_text()))
                for path in _user_layer()}
    assert {name: found for name, found in branches.items() if found} == {}


def test_the_branch_finder_finds_a_branch():
    tree = ast.parse("if backend == 'jax':\n    pass\nwrap = {'numba': 1}[name]\n"
                     "ok = name in ('numpy', 'numba')\nfine = kind == 'model'\n")
    assert len(_backend_name_tests(tree)) == 3


def test_the_user_layer_imports_no_backend_module():
    graph = import_graph()
    backend_folders = ("autofit.original", "autofit.numba", "autofit.jax")
    for path in _user_layer():
        name = "autofit." + path.stem if path.stem != "__init__" else "autofit"
        assert not {m for m in graph[name] if m.startswith(backend_folders)}, name


HOST_INTERFACE = ("DEVICES", "JAC_WITHOUT_JACOBIAN", "CHUNKS_RECOMPILE", "device_name",
                  "device_report", "precision", "padded_length", "array_model", "no_jacobian",
                  "check_compiles", "run_instead", "fused_model", "is_compile_error",
                  "batch_engine", "batch_call", "batch_rescue")


def test_every_host_offers_the_same_interface():
    """Each backend's host module defines every name of the interface, functions with the
    same parameters (parsed, so that no backend needs to be installed)."""
    signatures = {}
    for folder in ("original", "numba", "jax"):
        tree = ast.parse((PACKAGE / folder / "host.py").read_text())
        defined = {}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                defined[node.name] = tuple(a.arg for a in node.args.args)
            elif isinstance(node, ast.Assign):
                defined.update({t.id: "constant" for t in node.targets
                                if isinstance(t, ast.Name)})
        missing = [name for name in HOST_INTERFACE if name not in defined]
        assert not missing, f"autofit/{folder}/host.py lacks {missing}"
        signatures[folder] = {name: defined[name] for name in HOST_INTERFACE}
    assert signatures["numba"] == signatures["original"] == signatures["jax"]


# The batched and fused solvers' Marquardt diagonal is ``scale_squared``; ``scale`` (column
# norms, MINPACK's diag) belongs to lm_step and lm_solve (see autofit._declarations).
_SQUARED_SCALE_SOLVERS = ("original/batch.py", "original/batch_broadcast.py",
                          "original/fused.py", "numba/fit_one.py", "numba/kernel.py",
                          "numba/gpu.py", "numba/array_batch.py", "numba/fused.py",
                          "jax/batch.py", "jax/fused.py")
_NORM_SCALE_SOLVERS = ("original/lm.py", "numba/lm.py", "jax/lm.py")


def _names(path) -> set[str]:
    import io
    import tokenize

    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return {token.string for token in tokens if token.type == tokenize.NAME}


def test_scale_means_one_thing():
    for relative in _SQUARED_SCALE_SOLVERS:
        assert "scale" not in _names(PACKAGE / relative), relative
    for relative in _NORM_SCALE_SOLVERS:
        names = _names(PACKAGE / relative)
        assert "scale_squared" not in names and "scale" in names, relative


# The batched and fused LM loops' damping schedule (Gpufit's λ x10 / x0.1) and acceptance
# rule are autofit._rules'; no engine names them, so none can decide a step its own way.
_SCHEDULE = {"BATCH_DAMPING_UP", "BATCH_DAMPING_DOWN", "BATCH_MIN_DAMPING"}


def test_one_acceptance_rule_for_every_batched_and_fused_loop():
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in ("_codes.py", "_rules.py"):
            continue
        assert not (_SCHEDULE & _names(path)), relative
    for backend in ("original", "numba", "jax"):
        for module in ("batch.py", "fused.py"):
            path = PACKAGE / backend / module
            names = _names(path)
            if backend == "numba" and module == "batch.py":
                names = _names(PACKAGE / "numba" / "fit_one.py")
            assert {"judge_trial", "judge_trial_where"} & names, path
