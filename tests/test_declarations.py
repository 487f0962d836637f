"""Every backend implements the declared kernels under the declared names and signatures."""

import inspect
from pathlib import Path

import pytest

import autofit
from autofit import _dispatch, _kernel_table
from autofit._declarations import KERNELS, MODELS
from tests.conftest import backend_params

MODULE_NAME = {"numpy": "original", "numba": "numba", "jax": "jax"}


def _module(backend):
    return _dispatch.load(backend)


@pytest.mark.parametrize("backend", backend_params())
def test_backend_implements_exactly_its_declared_kernels(backend):
    declared = {name for name, spec in KERNELS.items() if MODULE_NAME[backend] in spec.native}
    assert set(_module(backend).__all__) == declared


def test_original_is_complete_apart_from_autodiff():
    missing = {n for n in KERNELS if n not in autofit.original.__all__}
    assert missing == {"jacobian_autodiff"}
    assert set(_dispatch.KERNEL_FALLBACK) == missing


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_signature_and_docstring_match_declaration(backend, name):
    module = _module(backend)
    if name not in module.__all__:
        assert name in _dispatch.KERNEL_FALLBACK, f"{backend} lacks {name} with no fallback"
        return
    function = getattr(module, name)
    python_function = getattr(function, "py_func", function)
    assert tuple(inspect.signature(python_function).parameters) == KERNELS[name].signature
    assert function.__doc__ == KERNELS[name].doc


def test_every_model_has_an_evaluation_and_a_jacobian_kernel():
    for model in MODELS:
        assert f"model_{model}" in KERNELS and f"jacobian_{model}" in KERNELS
        assert model in autofit.models.BUILTIN


def test_implements_rejects_a_drifted_signature():
    from autofit._declarations import implements

    def model_linear(x, p):  # wrong parameter name
        return x

    with pytest.raises(TypeError, match="declaration says"):
        implements("model_linear")(model_linear)


def test_declared_docstrings_give_shapes():
    for spec in KERNELS.values():
        assert "Parameters" in spec.doc and "Returns" in spec.doc
        assert "(n_points" in spec.doc or "(n_params" in spec.doc


def test_readme_kernel_table_is_generated_from_the_declarations():
    readme = Path(__file__).resolve().parents[1] / "README.md"
    found = _kernel_table.table_in(readme.read_text(encoding="utf-8"))
    assert found == _kernel_table.kernel_table(), (
        "README.md's kernel table differs from the one the declarations give; regenerate it "
        "with `python -m autofit._kernel_table README.md`")


def test_kernel_table_names_every_kernel():
    table = _kernel_table.kernel_table()
    for name in KERNELS:
        row_name = next((f"{kind}_<m>" for kind in ("model", "jacobian") for model in MODELS
                         if name == f"{kind}_{model}"), name)
        assert f"| `{row_name}` |" in table


def test_kernel_table_replaces_only_what_lies_between_its_markers():
    start, end = _kernel_table.TABLE_START, _kernel_table.TABLE_END
    text = f"before\n{start}\n| stale |\n{end}\nafter\n"
    updated = _kernel_table.with_kernel_table(text)
    assert updated == f"before\n{start}\n{_kernel_table.kernel_table()}{end}\nafter\n"
    assert _kernel_table.with_kernel_table(updated) == updated
    for broken in ("no markers", f"{end}\n{start}\n"):
        with pytest.raises(ValueError, match="kernel-table"):
            _kernel_table.with_kernel_table(broken)
