"""Generated cross-backend tests: every kernel, every backend, against ``autofit.original``.

The parametrization comes from the kernel declarations, so a new kernel is tested on every
backend as soon as it is declared. Tolerances (float64): kernels 1e-10 relative, fitted
parameters 1e-8; integer outputs (statuses, flags, ranks) must be identical.
"""

import functools

import pytest

from autofit._declarations import KERNELS
from autofit.selftest import cases as _cases
from autofit.selftest import validate
from tests.conftest import backend_params, installed

SIZES = (10, 1000, 100_000)


@functools.lru_cache(maxsize=None)
def _variants(name, n_points) -> dict:
    return {case.variant: case for case in _cases.cases(name, n_points)}


@functools.lru_cache(maxsize=None)
def _reference(name, n_points, variant) -> tuple:
    # Computed once per variant, whichever backends are compared with it.
    return validate.reference(name, _variants(name, n_points)[variant])


def _params():
    for name, spec in KERNELS.items():
        for backend in ("numba", "jax"):
            if backend in spec.native:
                for n_points in SIZES:
                    for variant in _variants(name, n_points):
                        yield pytest.param(name, backend, n_points, variant,
                                           id=f"{name}-{backend}-{n_points}-{variant}",
                                           marks=backend_params((backend,))[0].marks)


@pytest.mark.parametrize("name, backend, n_points, variant", list(_params()))
def test_kernel_agrees_with_reference(name, backend, n_points, variant):
    case = _variants(name, n_points)[variant]
    row = validate.compare_case(name, backend, case, n_points,
                                _reference(name, n_points, variant), timed=False)
    assert row.error is None, row.error
    assert row.exact_ok, "integer outputs differ from the reference"
    assert row.deviation <= row.tolerance, (
        f"deviation {row.deviation:.2e} > {row.tolerance:.0e}")


@pytest.mark.parametrize("name", [n for n in KERNELS if KERNELS[n].case == "model"])
def test_reference_analytic_jacobians_match_finite_differences(name):
    """The reference's own analytic Jacobians, checked independently of the other backends."""
    import numpy as np

    from autofit import original
    from autofit.selftest import cases as _cases

    if not name.startswith("jacobian_"):
        pytest.skip("model evaluation kernels are checked through their Jacobians")
    model = getattr(original, "model_" + name.split("_", 1)[1])
    (case,) = _cases.cases(name, 200)
    x, params = case.args
    analytic = getattr(original, name)(x, params)
    numeric = original.jacobian_central(model, x, params, np.full(params.size, -np.inf),
                                        np.full(params.size, np.inf))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-8)


def test_validate_reports_a_disagreement(monkeypatch):
    """A backend whose kernel is wrong must fail validation (the check can fail)."""
    if not installed("numba"):
        pytest.skip("numba is not installed")
    import autofit.numba

    def broken(x, params):
        return autofit.original.model_gaussian(x, params) * (1 + 1e-6)

    import autofit.original

    monkeypatch.setattr(autofit.numba, "model_gaussian", broken)
    (row,) = validate.compare("model_gaussian", "numba", 100)
    assert not row.ok and row.deviation > 1e-7


def test_relative_deviation_is_absolute_only_at_rounding_level():
    """A difference of two terms of the array's magnitude keeps their rounding (a few ulps
    of the largest entry): that passes; a relative error of 1e-9 on a real entry does not."""
    import numpy as np

    expected = np.array([0.5, -1.4433032352e-07, 1e-3])
    rounding = expected + np.array([0.0, 2.8e-16, 0.0])  # 2.5 ulps of 0.5, on the small entry
    assert validate.relative_deviation(rounding, expected, _cases.KERNEL_RTOL) <= 1e-10
    wrong = expected * np.array([1.0, 1.0, 1.0 + 1e-9])
    assert validate.relative_deviation(wrong, expected, _cases.KERNEL_RTOL) > 1e-10
    # Without a tolerance the floor stays at 1e-8 of the largest entry.
    assert validate.relative_deviation(rounding, expected) > 1e-10


def _systems(n_systems=400):
    """Symmetric positive-definite systems of 1-8 unknowns, columns scaled over 10 decades,
    and a few that are not positive definite or not finite."""
    import numpy as np

    rng = np.random.default_rng(5)
    for k in range(n_systems):
        n = int(rng.integers(1, 9))
        m = rng.standard_normal((n + 3, n)) * 10.0 ** rng.uniform(-5, 5, n)
        a = m.T @ m
        if k % 50 == 1:
            a[n - 1, n - 1] = -1.0
        if k % 50 == 2:
            a[0, 0] = np.nan
        yield a, rng.standard_normal(n), rng.random(n) < 0.8, 10.0 ** rng.uniform(-6, 2)


def test_the_references_small_solves_are_numbas_sums_and_solve_the_systems():
    """``cholesky_solve`` (Python floats) gives numba's numbers bit for bit (the same sums in
    the same order), solves the system to rounding, and refuses what does not factorise;
    ``damped_solve`` (on lists) is ``cholesky_solve(*damped_system(...))`` bit for bit."""
    import numpy as np

    from autofit.original.linalg import cholesky_solve, damped_solve, damped_system

    if installed("numba"):
        import numba

        from autofit.numba import linalg

        factor, substitute = numba.njit(linalg.cholesky_factor), numba.njit(
            linalg.cholesky_substitute)
    refused = 0
    for a, b, active, damping in _systems():
        z, ok = cholesky_solve(a, b)
        if ok:
            assert np.max(np.abs(a @ z - b)) <= 1e-9 * np.abs(a).max() * np.abs(z).max()
        else:
            refused += 1
            assert not np.any(z)
        if installed("numba"):
            chol, compiled = a.copy(), np.zeros(b.size)
            assert factor(chol, b.size) == ok
            if ok:
                substitute(chol, b, compiled, b.size)
                np.testing.assert_array_equal(z, compiled)
        scale = np.abs(np.diag(a)) + 1.0
        rows = a.tolist()
        damped, damped_ok = damped_solve(rows, b.tolist(), scale.tolist(), damping,
                                         active.tolist())
        assert np.array_equal(np.array(rows), a, equal_nan=True)  # rows left as they were
        damped = np.array(damped)
        expected, expected_ok = cholesky_solve(*damped_system(a, b, scale, damping, active))
        assert damped_ok == expected_ok
        np.testing.assert_array_equal(damped, expected)
        assert np.all(damped[~active] == 0.0)
    assert refused >= 8
