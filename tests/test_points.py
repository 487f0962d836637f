"""The scalar point functions of :mod:`autofit.numba.points` against the NumPy reference.

They are checked as plain Python, compiled by ``numba.njit`` (through the compiled copies
in :mod:`autofit.numba.models`, with the one-column scratch layout a batched engine uses),
and compiled as CUDA device functions: under numba's CUDA simulator in a subprocess (the
simulator is chosen by an environment variable read at import), and on a real GPU when one
is present.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autofit import original
from autofit._declarations import MODELS
from autofit.selftest import cases as _cases
from tests.conftest import installed

ROOT = Path(__file__).resolve().parents[1]

# Per model, parameter sets for the checks: the test case's and a perturbed copy.
_MULTI_LORENTZIAN_2 = (0.8, -1.0, 0.6, -0.4, 1.5, 0.3, 0.2)


def _parameter_sets(name):
    truth = np.array(_cases.TRUE_PARAMS[name], dtype=np.float64)
    shifted = truth * np.linspace(0.9, 1.1, truth.size) + 0.05
    sets = [truth, shifted]
    if name == "multi_lorentzian":
        sets.append(np.array(_MULTI_LORENTZIAN_2))
    return sets


def _close(actual, expected, rtol=1e-12):
    """Relative agreement, with a floor of rtol / 10 of each column's largest entry (a few
    Jacobian columns are differences that cancel to 0 at some points)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    floor = 0.1 * rtol * np.max(np.abs(expected), axis=0, keepdims=True)
    return actual.shape == expected.shape and bool(
        np.all(np.abs(actual - expected) <= rtol * np.abs(expected) + floor))


def _inputs(name, n_points=23):
    """x as the point functions take it, (n_variables, n_points), and as the kernels do."""
    x = _cases.x_grid(name, n_points)
    return np.atleast_2d(x), x


def test_every_model_has_point_functions():
    from autofit.numba import points

    assert set(points.POINT_FUNCTIONS) == set(MODELS)
    assert points.N_VARIABLES == {name: spec.n_variables for name, spec in MODELS.items()}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_point_functions_match_reference(name):
    from autofit.numba import points

    value, gradient = points.POINT_FUNCTIONS[name]
    x2, x = _inputs(name)
    for params in _parameter_sets(name):
        expected = getattr(original, f"model_{name}")(x, params)
        expected_jac = getattr(original, f"jacobian_{name}")(x, params)
        n_points = x2.shape[1]
        values = np.array([value(x2, i, params) for i in range(n_points)])
        assert _close(values, expected)
        jac = np.full((params.size, n_points), np.nan)
        returned = np.array([gradient(x2, i, params, jac, i) for i in range(n_points)])
        np.testing.assert_array_equal(returned, values)  # the same value, bit for bit
        assert _close(jac.T, expected_jac)


@pytest.mark.skipif(not installed("numba"), reason="numba is not installed")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_compiled_gradient_writes_one_column(name):
    """njit-compiled, into the (n_params, 1) scratch column of a batched engine."""
    from autofit.numba import models

    value = getattr(models, f"_value_{name}")
    gradient = getattr(models, f"_gradient_{name}")
    x2, x = _inputs(name)
    params = _parameter_sets(name)[-1]
    expected = getattr(original, f"model_{name}")(x, params)
    expected_jac = getattr(original, f"jacobian_{name}")(x, params)
    column = np.empty((params.size, 1))
    values = np.empty(x2.shape[1])
    jac = np.empty(expected_jac.shape)
    for i in range(x2.shape[1]):
        values[i] = value(x2, i, params)
        assert gradient(x2, i, params, column, 0) == values[i]
        jac[i] = column[:, 0]
    # The same arithmetic as the reference; only exp and pow may round differently in
    # numba's libm than in NumPy's (NumPy 2.4's pow differs by 1 ulp on power_law's points).
    np.testing.assert_array_max_ulp(values, expected, maxulp=2)
    assert _close(jac, expected_jac)


def test_stretched_exponential_is_finite_at_zero():
    from autofit.numba import points

    x = np.zeros((1, 1))
    for beta in (0.5, 1.0, 2.0):
        params = np.array([2.0, 0.7, beta, 0.3])
        jac = np.empty((4, 1))
        assert points.gradient_stretched_exponential(x, 0, params, jac, 0) == 2.3
        assert np.all(np.isfinite(jac)) and jac[1, 0] == 0.0 and jac[2, 0] == 0.0
        np.testing.assert_array_equal(original.jacobian_stretched_exponential(
            np.zeros(1), params), jac.T)


def _cuda_available() -> bool:
    if importlib.util.find_spec("numba") is None:
        return False
    try:
        from numba import cuda
    except ImportError:
        return False
    return bool(cuda.is_available())  # False, not an error, without a usable driver


def _cuda_importable() -> bool:
    try:
        return importlib.util.find_spec("numba.cuda") is not None
    except ImportError:
        return False


@pytest.mark.parametrize("target", ["simulator", "gpu"])
def test_point_functions_compile_as_cuda_device_functions(target):
    if not _cuda_importable():
        pytest.skip("numba.cuda is not importable")
    env = dict(os.environ)
    if target == "simulator":
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    else:
        env.pop("NUMBA_ENABLE_CUDASIM", None)
        if not _cuda_available():
            pytest.skip("no CUDA GPU")
    command = [sys.executable, "-c", "import tests.test_points as t; t.cuda_main()"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all point functions agree" in result.stdout


_MAX_PARAMS = 16  # the scratch column of the CUDA check (multi_lorentzian here has 10)


def _cuda_kernels(value, gradient):
    """Two kernels around one model's device functions: one writes the Jacobian's transpose
    in global memory (``col = i``), one goes through a per-thread local ``(n_params, 1)``
    column (``col = 0``), the two layouts a batched engine uses."""
    from numba import float64

    device_value = cuda.jit(device=True)(value)
    device_gradient = cuda.jit(device=True)(gradient)

    @cuda.jit
    def in_global(x, p, values, returned, jac):
        i = cuda.grid(1)
        if i < values.shape[0]:
            values[i] = device_value(x, i, p)
            returned[i] = device_gradient(x, i, p, jac, i)

    @cuda.jit
    def in_local(x, p, returned, jac):
        i = cuda.grid(1)
        if i < returned.shape[0]:
            column = cuda.local.array((_MAX_PARAMS, 1), float64)
            returned[i] = device_gradient(x, i, p, column, 0)
            for j in range(p.shape[0]):
                jac[j, i] = column[j, 0]

    return in_global, in_local


def cuda_main():
    """Compile every point function as a CUDA device function and compare with the reference.

    Run in a subprocess by the test above (with ``NUMBA_ENABLE_CUDASIM=1`` for the
    simulator).
    """
    # A module global: the simulator runs a kernel with its own stand-in for the module
    # found under the kernel's global name ``cuda`` (a local name would not be swapped).
    global cuda
    from numba import cuda

    from autofit.numba import points

    failures = []
    for name, (value, gradient) in points.POINT_FUNCTIONS.items():
        in_global, in_local = _cuda_kernels(value, gradient)
        x2, x = _inputs(name, n_points=16)
        x2 = np.ascontiguousarray(x2)
        n_points = x2.shape[1]
        for params in _parameter_sets(name):
            expected = getattr(original, f"model_{name}")(x, params)
            expected_jac = getattr(original, f"jacobian_{name}")(x, params)
            values = np.zeros(n_points)
            returned = np.zeros(n_points)
            jac = np.zeros((params.size, n_points))
            in_global[1, 32](x2, params, values, returned, jac)
            local_returned = np.zeros(n_points)
            local_jac = np.zeros((params.size, n_points))
            in_local[1, 32](x2, params, local_returned, local_jac)
            for label, actual, wanted in (("value", values, expected),
                                          ("gradient value", returned, expected),
                                          ("jacobian", jac.T, expected_jac),
                                          ("local value", local_returned, expected),
                                          ("local jacobian", local_jac.T, expected_jac)):
                if not _close(actual, wanted):
                    failures.append(f"{name} {label}: max deviation "
                                    f"{np.max(np.abs(actual - wanted)):.2e}")
    if failures:
        print("\n".join(failures))
        raise SystemExit(1)
    print(f"all point functions agree ({len(points.POINT_FUNCTIONS)} models, "
          f"{'simulator' if os.environ.get('NUMBA_ENABLE_CUDASIM') == '1' else 'GPU'})")
