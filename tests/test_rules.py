"""The iteration's shared decisions (``autofit._rules``): the scalar form that the reference
and numba compile and the ``where`` form of the vectorised engines agree on every case."""

import itertools

import numpy as np
import pytest

from autofit import _codes, _rules

CASES = list(itertools.product([False, True], repeat=4))


@pytest.mark.parametrize("case", CASES, ids=lambda c: "".join("FT"[v] for v in c))
def test_trial_status_forms_agree(case):
    scalar = _rules.trial_status(*case)
    vector = _rules.trial_status_where(np.where, *(np.array([v]) for v in case))
    assert vector.tolist() == [scalar]


def test_trial_status_where_on_jax():
    jnp = pytest.importorskip("jax.numpy")
    columns = [jnp.array([case[k] for case in CASES]) for k in range(4)]
    expected = [_rules.trial_status(*case) for case in CASES]
    assert np.asarray(_rules.trial_status_where(jnp.where, *columns)).tolist() == expected


def test_trial_status_ends_a_rejected_step_as_an_accepted_one():
    # A step at rounding level may raise χ² by an ulp: accepted or not, the same status.
    for small_reduction, small_step in itertools.product([False, True], repeat=2):
        assert (_rules.trial_status(False, small_reduction, small_step, False)
                == _rules.trial_status(True, small_reduction, small_step, False))
    assert _rules.trial_status(True, False, False, True) == _codes.CONVERGED_FTOL
    assert _rules.trial_status(False, False, False, False) == _codes.RUNNING
    assert _rules.trial_status(False, True, False, False) == _codes.CONVERGED_FTOL


def test_numba_compiles_the_scalar_rule():
    numba = pytest.importorskip("numba")
    compiled = numba.njit(_rules.trial_status)
    for case in CASES:
        assert compiled(*case) == _rules.trial_status(*case)


# (No value whose step is subnormal: XLA on a CPU flushes subnormals to 0, so jax would
# step by `relative` where the others step by a subnormal.)
STEP_VALUES = [0.0, -0.0, 1.0, -3.5, 1e-4, 2.5e7, 1e-290, 1e300]


@pytest.mark.parametrize("relative", [_rules.FORWARD_STEP, _rules.CENTRAL_STEP])
def test_relative_step_forms_agree(relative):
    values = np.array(STEP_VALUES)
    scalar = [_rules.relative_step(v, relative) for v in STEP_VALUES]
    assert _rules.relative_step_where(np, values, relative).tolist() == scalar
    assert scalar[0] == scalar[1] == relative  # a parameter at 0 still gets a step
    assert scalar[2] == relative and scalar[3] == 3.5 * relative


def test_relative_step_on_numba_and_jax():
    values = np.array(STEP_VALUES)
    expected = _rules.relative_step_where(np, values, _rules.FORWARD_STEP).tolist()
    numba = pytest.importorskip("numba")
    compiled = numba.njit(_rules.relative_step)
    assert [compiled(v, _rules.FORWARD_STEP) for v in STEP_VALUES] == expected
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        import jax.numpy as jnp

        on_jax = _rules.relative_step_where(jnp, jnp.asarray(values), _rules.FORWARD_STEP)
        assert np.asarray(on_jax).tolist() == expected


def test_forward_step_follows_the_working_precision():
    assert _rules.forward_step(np.float64) == _rules.FORWARD_STEP == np.sqrt(np.finfo(float).eps)
    assert _rules.forward_step(np.float32) == pytest.approx(np.sqrt(np.finfo(np.float32).eps))
