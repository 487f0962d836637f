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
