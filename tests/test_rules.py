"""The iteration's shared decisions (``autofit._rules``): the scalar form that the reference
and numba compile and the ``where`` form of the vectorised engines agree on every case."""


import numpy as np
import pytest

from autofit import _codes, _rules

FTOL = 1e-8
# (chi2, trial_chi2, predicted): accepted or not, reductions small or not, χ² reaching 0,
# a trial whose χ² is not finite, a tie, gain ratios of 1/2, 1/10, 0 and 3/2.
CHI2_CASES = [(10.0, 5.0, 5.0), (10.0, 10.0 - 1e-9, 1e-9), (10.0, 10.0 + 1e-9, 1e-9),
              (10.0, 10.0 - 1e-9, 1.0), (10.0, 20.0, 1.0), (1.0, 0.0, 1.0), (0.0, 0.0, 0.0),
              (10.0, np.inf, 1.0), (10.0, np.nan, 1.0), (10.0, 10.0, 0.0),
              (10.0, 9.0, 2.0), (10.0, 9.9, 1.0), (10.0, 10.0, 1.0), (10.0, 7.0, 2.0)]
DAMPINGS = [1e-3, 1e-12, 0.5e32, 2e32]
CASES = [(*c, small_step, damping) for c in CHI2_CASES for small_step in (False, True)
         for damping in DAMPINGS]


def _columns(xp, cases):
    chi2, trial, predicted, small_step, damping = zip(*cases, strict=True)
    return (xp.asarray(chi2), xp.asarray(trial), xp.asarray(predicted),
            xp.asarray(small_step), FTOL, xp.asarray(damping))


def _scalar(case):
    chi2, trial, predicted, small_step, damping = case
    return _rules.judge_trial(chi2, trial, predicted, small_step, FTOL, damping)


def test_judge_trial_forms_agree_on_numpy():
    expected = [_scalar(case) for case in CASES]
    with np.errstate(invalid="ignore"):
        accepted, status, damping = _rules.judge_trial_where(np, *_columns(np, CASES))
    assert accepted.tolist() == [e[0] for e in expected]
    assert status.tolist() == [e[1] for e in expected]
    assert damping.tolist() == [e[2] for e in expected]


def test_judge_trial_where_on_jax():
    jax = pytest.importorskip("jax")
    expected = [_scalar(case) for case in CASES]
    with jax.enable_x64(True):
        import jax.numpy as jnp

        accepted, status, damping = _rules.judge_trial_where(jnp, *_columns(jnp, CASES))
        assert np.asarray(accepted).tolist() == [e[0] for e in expected]
        assert np.asarray(status).tolist() == [e[1] for e in expected]
        assert np.asarray(damping).tolist() == [e[2] for e in expected]


def test_numba_compiles_the_scalar_rules():
    numba = pytest.importorskip("numba")
    judge = numba.njit(_rules.judge_trial)
    for case in CASES:
        chi2, trial, predicted, small_step, damping = case
        assert judge(chi2, trial, predicted, small_step, FTOL, damping) == _scalar(case)
    rng = np.random.default_rng(0)
    h = rng.normal(size=(4, 4))
    h = h @ h.T
    step, scale_squared = rng.normal(size=4), rng.uniform(1.0, 2.0, size=4)
    assert numba.njit(_rules.predicted_reduction)(h, step, scale_squared, 0.1) == pytest.approx(
        _rules.predicted_reduction(h, step, scale_squared, 0.1), rel=1e-15)
    p, lower, upper = rng.normal(size=4), np.full(4, -0.5), np.full(4, 0.5)
    trial = np.empty(4)
    for xtol in (1e-8, 10.0):
        small = numba.njit(_rules.clip_step)(p, step, lower, upper, scale_squared, xtol, trial)
        expected_trial, expected_small = _rules.clip_step_where(np, p, step, lower, upper,
                                                                scale_squared, xtol)
        assert small == expected_small and trial.tolist() == expected_trial.tolist()


def test_judge_trial_ends_a_rejected_step_as_an_accepted_one():
    # A step at rounding level may raise χ² by an ulp: accepted or not, the same status.
    for small_step in (False, True):
        down = _rules.judge_trial(10.0, 10.0 - 1e-9, 1e-9, small_step, FTOL, 1e-3)
        up = _rules.judge_trial(10.0, 10.0 + 1e-9, 1e-9, small_step, FTOL, 1e-3)
        assert down[0] and not up[0] and down[1] == up[1] != _codes.RUNNING
    assert _rules.judge_trial(1.0, 0.0, 1.0, False, FTOL, 1e-3)[1] == _codes.CONVERGED_FTOL
    assert _rules.judge_trial(10.0, 5.0, 5.0, False, FTOL, 1e-3) == (
        True, _codes.RUNNING, 1e-3 * _codes.BATCH_DAMPING_DOWN)
    assert _rules.judge_trial(10.0, 20.0, 1.0, False, FTOL, 1e-3) == (
        False, _codes.RUNNING, 1e-3 * _codes.BATCH_DAMPING_UP)
    # λ spent on a rejected step: the fit ends at machine precision.
    assert _rules.judge_trial(10.0, 20.0, 1.0, False, FTOL, 2e32)[1] == _codes.MACHINE_PRECISION


def test_an_accepted_step_scales_the_damping_by_its_gain_ratio():
    # Nielsen's 1 - (2ρ - 1)³, at least a tenth: a step that did what the model predicted
    # (ρ = 1 or more) a tenth, half of it (ρ = 1/2) the same λ, a tie (ρ = 0) twice.
    for trial, predicted, factor in [(5.0, 5.0, 0.1), (7.0, 2.0, 0.1), (9.0, 2.0, 1.0),
                                     (9.875, 1.0, 1.0 + 0.75 ** 3), (10.0, 1.0, 2.0),
                                     (9.0, 0.0, 0.1)]:
        accepted, status, damping = _rules.judge_trial(10.0, trial, predicted, False, FTOL, 1e-3)
        assert accepted and status == _codes.RUNNING
        assert damping == pytest.approx(1e-3 * factor, rel=1e-12)
    # ρ on a grid of 1/64: a difference in χ²'s last digits leaves λ as it is.
    near = [_rules.judge_trial(1.0, 1.0 - 0.7e-6 * (1.0 + d), 1e-6, False, FTOL, 1e-3)[2]
            for d in (0.0, 1e-9, -1e-9)]
    assert near[0] == near[1] == near[2]
    assert near[0] == 1e-3 * (1.0 - (2.0 * 45.0 / 64.0 - 1.0) ** 3)
    # Never below the floor.
    assert _rules.judge_trial(10.0, 5.0, 5.0, False, FTOL, 1e-12)[2] == _codes.BATCH_MIN_DAMPING


def test_a_trial_to_a_non_finite_chi2_is_rejected_not_converged():
    # abs(chi2 - inf) <= ftol * inf would read as a small reduction.
    for trial in (np.inf, np.nan):
        assert _rules.judge_trial(10.0, trial, 1.0, False, FTOL, 1e-3)[:2] == (
            False, _codes.RUNNING)


def test_step_not_tried_raises_the_damping_until_spent():
    assert _rules.step_not_tried(1e-3, _codes.SINGULAR) == (1e-2, _codes.RUNNING)
    assert _rules.step_not_tried(2e31, _codes.SINGULAR) == (2e31 * 10.0, _codes.SINGULAR)
    damping, status = _rules.step_not_tried_where(np, np.array([1e-3, 2e31]),
                                                  _codes.MACHINE_PRECISION)
    assert damping.tolist() == [1e-3 * 10.0, 2e31 * 10.0]
    assert status.tolist() == [_codes.RUNNING, _codes.MACHINE_PRECISION]


def test_active_set_forms_agree():
    p = np.array([0.0, 1.0, 1.0, 0.5, 0.0, 1.0])
    g = np.array([-1.0, 1.0, -1.0, 1.0, 1.0, -1.0])
    lower, upper = np.zeros(6), np.ones(6)
    free = np.array([True, True, True, True, False, True])
    expected = [False, False, True, True, False, True]
    assert _rules.active_where(p, g, lower, upper, free).tolist() == expected
    assert [_rules.is_active(*v) for v in zip(p, g, lower, upper, free, strict=True)] == expected


def test_predicted_reduction_forms_agree():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(3, 5, 5))
    step, scale_squared = rng.normal(size=(3, 5)), rng.uniform(size=(3, 5))
    damping = np.array([1e-3, 1.0, 10.0])
    together = _rules.predicted_reduction_where(np, h, step, scale_squared, damping)
    apart = [_rules.predicted_reduction(h[k], step[k], scale_squared[k], damping[k])
             for k in range(3)]
    np.testing.assert_allclose(together, apart, rtol=1e-14)


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


@pytest.mark.parametrize("code", [_codes.ESTIMATOR_LSE, *sorted(_codes.ROBUST_LOSSES.values())])
def test_a_loss_cut_to_its_own_branch_is_that_loss(code):
    # The numba passes that call a loss by its literal code compile robust_loss cut to that
    # code's branch (autofit.numba.passes.with_literals_of): the same numbers, one branch.
    pytest.importorskip("numba")
    from autofit.numba.passes import with_literals_of

    alone = with_literals_of(_rules.robust_loss, np.float64, estimator=code)
    assert alone is not _rules.robust_loss
    for z in (0.0, 1e-12, 1e-3, 0.5, 1.0, 2.0, 37.5, 1e8):
        assert alone(z, code) == _rules.robust_loss(z, code)
        # The code argument no longer chooses anything: the branch is the one cut to.
        assert alone(z, -1) == _rules.robust_loss(z, code)


def test_pass_weighing_turns_to_newton_after_the_accepted_steps_once_damping_is_low():
    after, low = _codes.NEWTON_AFTER_ACCEPTED, _codes.NEWTON_MAX_DAMPING
    for damping in (1e-5, low, 1.0001 * low, 1.0):
        for n_accepted in range(after + 3):
            newton = n_accepted >= after and damping <= low
            expected = _codes.WEIGH_NEWTON if newton else _codes.WEIGH_CURVATURE
            assert _rules.pass_weighing(True, n_accepted, damping) == expected
            # Least squares and Poisson MLE keep their H at every step.
            assert _rules.pass_weighing(False, n_accepted, damping) == _codes.WEIGH_CURVATURE
    counts = np.repeat(np.arange(after + 3), 2)
    dampings = np.tile([low, 10.0 * low], after + 3)
    np.testing.assert_array_equal(
        _rules.pass_weighing_where(np, True, counts, dampings),
        [_rules.pass_weighing(True, n, d) for n, d in zip(counts, dampings, strict=True)])
    np.testing.assert_array_equal(_rules.pass_weighing_where(np, False, counts, dampings),
                                  np.full(counts.size, _codes.WEIGH_CURVATURE))


def test_a_robust_batch_starts_with_more_damping_than_least_squares():
    assert _rules.initial_damping(True) == _codes.ROBUST_INITIAL_DAMPING
    assert _rules.initial_damping(False) == _codes.BATCH_INITIAL_DAMPING
    # A robust fit's first passes take the safe curvature, Newton's weighing only once λ
    # has fallen from its start.
    assert _codes.ROBUST_INITIAL_DAMPING > _codes.NEWTON_MAX_DAMPING


@pytest.mark.parametrize("loss", sorted(_codes.ROBUST_LOSSES))
def test_point_weight_forms_agree_and_newton_is_the_losss_curvature(loss):
    code = _codes.ROBUST_LOSSES[loss]
    z = np.array([0.0, 0.1, 0.5, 0.9, 1.0, 2.0, 30.0, 1e6])
    rho, rho1, rho2, curvature = _rules.robust_loss_where(np, z, code)
    # Newton's weight is the second derivative of rho(r²) in r, over 2: rho1 + 2 rho2 z.
    r = np.sqrt(z)
    step = 1e-4 * np.maximum(r, 1.0)
    second = (_rules.robust_loss_where(np, (r + step) ** 2, code)[0] - 2.0 * rho
              + _rules.robust_loss_where(np, (r - step) ** 2, code)[0]) / step ** 2
    for weighing, expected in ((_codes.WEIGH_CURVATURE, curvature),
                               (_codes.WEIGH_INFORMATION, np.maximum(rho1 + 2 * rho2 * z,
                                                                     _codes.EPS)),
                               (_codes.WEIGH_NEWTON, rho1 + 2 * rho2 * z)):
        where = _rules.point_weight_where(np, rho1, rho2, z, curvature, weighing)
        scalar = [_rules.point_weight(a, b, c, d, weighing)
                  for a, b, c, d in zip(rho1, rho2, z, curvature, strict=True)]
        np.testing.assert_array_equal(where, scalar)
        np.testing.assert_array_equal(where, expected)
    newton = _rules.point_weight_where(np, rho1, rho2, z, curvature, _codes.WEIGH_NEWTON)
    smooth = ~((loss == "huber") & (np.abs(z - 1.0) < 0.2))  # huber's kink at z = 1
    np.testing.assert_allclose((0.5 * second)[smooth], newton[smooth], rtol=1e-5, atol=1e-7)
    # The safe curvature is never negative; Newton's is where the loss bends down.
    assert np.all(curvature > 0.0)
    if loss in ("cauchy", "arctan"):
        assert np.any(newton < 0.0)


def test_a_step_bends_unless_the_pass_at_the_parameters_took_newtons_weights():
    weighings = np.array([_codes.WEIGH_CURVATURE, _codes.WEIGH_NEWTON,
                          _codes.WEIGH_INFORMATION])
    np.testing.assert_array_equal(_rules.bends_from(weighings), [True, False, True])
    assert _rules.bends_from(_codes.WEIGH_CURVATURE)
    assert not _rules.bends_from(_codes.WEIGH_NEWTON)
