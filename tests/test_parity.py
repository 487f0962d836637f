"""The parity suite: every engine against the NumPy reference, one test item per variant.

- ``lm_batch`` and ``lm_fused`` on all built-in models, through each engine's real compiled
  path (numba's generated per-model kernels, jax's jitted programs);
- ``lm_solve`` on real-shaped problems with several minima (the same minimum, step for step);
- the CUDA engine (numba's CUDA simulator, in a process of its own: the simulator must be
  chosen before numba is imported) on the batch edge cases of ``_cases`` (non-finite data,
  too few points, MLE negative data, singular, bounds active, fixed parameters, finite
  differences at a bound) and on every built-in model;
- float32: numba against jax, with its own tolerance row;
- one rule for an unsupported ``jac_method``: the same ValueError from every backend.

The CPU engines' edge cases are the generated ``lm_batch`` cases of ``test_kernels.py``.
Each reference is computed once; nothing here is timed.
"""

import functools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from autofit import _codes
from autofit._declarations import KERNELS
from autofit._dispatch import load
from autofit.selftest import cases as _cases
from autofit.selftest import validate
from tests.conftest import backend_params, installed

MODELS = tuple(_cases.TRUE_PARAMS)
ENGINES = backend_params(("numba", "jax"))


@functools.lru_cache(maxsize=None)
def _model_cases(kernel) -> dict:
    return {case.variant: case for case in _cases.model_parity_cases(kernel)}


@functools.lru_cache(maxsize=None)
def _model_reference(kernel, model) -> tuple:
    return validate.reference(kernel, _model_cases(kernel)[model])


def _assert_ok(row):
    assert row.error is None, row.error
    assert row.exact_ok, "integer outputs (statuses, iterations) differ from the reference"
    assert row.deviation <= row.tolerance, (
        f"deviation {row.deviation:.2e} > {row.tolerance:.0e}")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("kernel", ["lm_batch", "lm_fused"])
def test_every_built_in_model_agrees_with_reference(kernel, backend, model):
    case = _model_cases(kernel)[model]
    expected = _model_reference(kernel, model)
    # The case must be one the reference solves, or agreeing with it proves little.
    status = expected[3] if kernel == "lm_batch" else expected[2]
    assert np.isin(status, _codes.CONVERGED_CODES).all(), status
    _assert_ok(validate.compare_case(kernel, backend, case, _cases.PARITY_POINTS, expected,
                                     timed=False))


@functools.lru_cache(maxsize=None)
def _hard_cases() -> dict:
    return {case.variant: case for case in _cases.lm_solve_hard_cases()}


@functools.lru_cache(maxsize=None)
def _hard_reference(variant) -> tuple:
    return validate.reference("lm_solve", _hard_cases()[variant])


@pytest.mark.parametrize("variant", [case.variant for case in _cases.lm_solve_hard_cases()])
@pytest.mark.parametrize("backend", ENGINES)
def test_lm_solve_reaches_the_same_minimum_on_problems_with_several(backend, variant):
    """Real-shaped problems where the path decides the minimum (crossed peaks, exponential
    tails): every backend follows the reference step for step to the same one."""
    case = _hard_cases()[variant]
    expected = _hard_reference(variant)
    assert expected[2] in _codes.CONVERGED_CODES, expected[2]
    _assert_ok(validate.compare_case("lm_solve", backend, case, case.args[3].size, expected,
                                     timed=False))


# ---------------------------------------------------------------- the CUDA engine

SIMULATOR_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import autofit.numba
    from autofit.selftest import cases as _cases, validate
    from autofit.numba import gpu

    found = {}
    groups = (("edge", _cases.cases("lm_batch", int(sys.argv[2]))),
              ("model", _cases.model_parity_cases("lm_batch")))
    for group, cases in groups:
        for case in cases:
            arguments = validate.resolve_arguments(case.args, autofit.numba)
            try:
                for i, value in enumerate(gpu.lm_batch_cuda(*arguments)):
                    found[f"{group}:{case.variant}:{i}"] = np.asarray(value)
            except Exception as exc:
                found[f"{group}:{case.variant}:error"] = np.array(f"{type(exc).__name__}: {exc}")
    np.savez(sys.argv[1], **found)
""")
SIMULATOR_POINTS = 10  # the simulator runs each thread in Python: small cases only


@pytest.fixture(scope="module")
def simulator_outputs(tmp_path_factory):
    if not installed("numba"):
        pytest.skip("numba is not installed (pip install 'autofit-lm[numba]')")
    path = tmp_path_factory.mktemp("cuda") / "outputs.npz"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([sys.executable, "-c", SIMULATOR_SCRIPT, str(path),
                           str(SIMULATOR_POINTS)], env=env, capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0 and "numba.cuda" in done.stderr and "ImportError" in done.stderr:
        pytest.skip(f"numba.cuda is not importable: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(path) as outputs:
        return {key: outputs[key] for key in outputs.files}


def _simulator_params():
    for variant in (case.variant for case in _cases.cases("lm_batch", SIMULATOR_POINTS)):
        yield pytest.param("edge", variant, id=f"edge-{variant}")
    for model in MODELS:
        yield pytest.param("model", model, id=f"model-{model}")


@functools.lru_cache(maxsize=None)
def _edge_cases() -> dict:
    return {case.variant: case for case in _cases.cases("lm_batch", SIMULATOR_POINTS)}


@pytest.mark.parametrize("group, variant", list(_simulator_params()))
def test_cuda_engine_agrees_with_reference_on_the_simulator(simulator_outputs, group,
                                                            variant):
    if group == "edge":
        case = _edge_cases()[variant]
        expected = validate.reference("lm_batch", case)
    else:
        case = _model_cases("lm_batch")[variant]
        expected = _model_reference("lm_batch", variant)
    error = simulator_outputs.get(f"{group}:{variant}:error")
    assert error is None, str(error)
    actual = tuple(simulator_outputs[f"{group}:{variant}:{i}"] for i in range(5))
    _assert_ok(validate.judge("lm_batch", "numba-cuda", case, SIMULATOR_POINTS, actual,
                              expected))


# ---------------------------------------------------------------- float32

# float32 engines against each other. The minimum of χ² fixes the parameters to about
# sqrt(eps32) = 3.5e-4 of themselves (χ² is flat to first order there), so two float32
# engines that stop at different rounding-level points agree to that, not to eps32
# (measured: 1e-5 gaussian, 4.4e-5 multi_lorentzian); the covariance, an inverse of the
# float32 Gauss-Newton matrix, to its condition number times eps32 (measured up to 8e-3).
# Statuses may differ between converged codes (which stopping rule fires first in float32).
FLOAT32_FIT_RTOL = 3.5e-4
FLOAT32_COVARIANCE_RTOL = 5e-2
FLOAT32_MODELS = ("gaussian", "multi_lorentzian", "gaussian_2d")


def _float32_run(backend, case):
    module = load(backend)
    arguments = list(validate.resolve_arguments(case.args, module))
    for i in range(3, 9):  # x, ydata, weights, p0, lower, upper
        arguments[i] = np.asarray(arguments[i], dtype=np.float32)
    with validate._context(backend):
        outputs = module.lm_batch(*arguments)
    return [np.asarray(o) for o in outputs]


@pytest.mark.parametrize("model", FLOAT32_MODELS)
def test_float32_numba_agrees_with_float32_jax(model):
    for backend in ("numba", "jax"):
        if not installed(backend):
            pytest.skip(f"{backend} is not installed")
    case = _model_cases("lm_batch")[model]
    numba_out = _float32_run("numba", case)
    jax_out = _float32_run("jax", case)
    for outputs in (numba_out, jax_out):
        assert outputs[0].dtype == np.float32
        assert np.isin(outputs[3], _codes.CONVERGED_CODES).all(), outputs[3]
    assert validate.relative_deviation(numba_out[0], jax_out[0]) <= FLOAT32_FIT_RTOL
    assert validate.relative_deviation(numba_out[1], jax_out[1]) <= FLOAT32_FIT_RTOL
    assert validate.relative_deviation(numba_out[4], jax_out[4]) <= FLOAT32_COVARIANCE_RTOL
    # And both near the float64 reference, by the same rule.
    reference = _model_reference("lm_batch", model)
    for outputs in (numba_out, jax_out):
        assert validate.relative_deviation(outputs[0], reference[0]) <= FLOAT32_FIT_RTOL


# ---------------------------------------------------------------- jac_method

_UNSUPPORTED = {"lm_batch": (_codes.JAC_CENTRAL, 9), "lm_fused": (9, -1),
                "lm_solve": (9, -1)}


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("kernel", list(_UNSUPPORTED))
def test_an_unsupported_jac_method_is_refused_alike_everywhere(kernel, backend):
    module = load(backend)
    case = _cases.cases(kernel, 10)[0]
    accepted = KERNELS[kernel].accepted_jac_methods(backend)
    for code in _UNSUPPORTED[kernel] + ((_codes.JAC_AUTODIFF,) if backend != "jax" else ()):
        assert code not in accepted
        arguments = list(validate.resolve_arguments(case.args, module))
        arguments[2] = code
        with pytest.raises(ValueError) as raised:
            getattr(module, kernel)(*arguments)
        assert str(raised.value) == _refusal(kernel, backend, code)


def _refusal(kernel, backend, code):
    accepted = KERNELS[kernel].accepted_jac_methods(backend)
    names = ", ".join(f"{_JAC_NAMES[c]} ({c})" for c in accepted)
    return f"{kernel} on {backend}: jac_method must be one of {names}; got {code!r}"


def test_the_cuda_engine_refuses_an_unsupported_jac_method_alike():
    if not installed("numba"):
        pytest.skip("numba is not installed (pip install 'autofit-lm[numba]')")
    try:
        from autofit.numba import gpu
    except ImportError as exc:
        pytest.skip(f"numba.cuda is not importable: {exc}")
    import autofit.numba

    case = _cases.cases("lm_batch", 10)[0]
    arguments = list(validate.resolve_arguments(case.args, autofit.numba))
    arguments[2] = _codes.JAC_CENTRAL
    with pytest.raises(ValueError) as raised:
        gpu.lm_batch_device(*arguments)
    assert str(raised.value) == _refusal("lm_batch", "numba", _codes.JAC_CENTRAL)


_JAC_NAMES = {_codes.JAC_ANALYTIC: "JAC_ANALYTIC", _codes.JAC_FORWARD: "JAC_FORWARD",
              _codes.JAC_CENTRAL: "JAC_CENTRAL", _codes.JAC_AUTODIFF: "JAC_AUTODIFF"}
