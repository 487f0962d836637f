"""One set of argument rules for every public entry point.

curve_fit, fit, fit_batch (in memory and with dask) check their arguments with the same
functions (autofit/_validation.py), so the same argument is accepted or refused, in the same
words, wherever it is given.
"""

import numpy as np
import pytest
from scipy.optimize import Bounds

import autofit
from autofit import models

X = np.linspace(-3.0, 3.0, 41)
TRUE = np.array([2.0, 0.3, 0.8, 0.1])


def _y(n_fits=None):
    rng = np.random.default_rng(5)
    y = models.gaussian(X, *TRUE)
    shape = (X.size,) if n_fits is None else (n_fits, X.size)
    return y + 0.01 * rng.standard_normal(shape)


def _curve_fit(bounds):
    return autofit.curve_fit(models.gaussian, X, _y(), p0=[1.5, 0.0, 1.0, 0.0],
                             bounds=bounds, backend="numpy")


def _fit(bounds):
    return autofit.fit(models.gaussian, X, _y(), p0=[1.5, 0.0, 1.0, 0.0], bounds=bounds,
                       backend="numpy")


def _fit_batch(bounds):
    return autofit.fit_batch(models.gaussian, X, _y(3), p0=[1.5, 0.0, 1.0, 0.0],
                             bounds=bounds, backend="numpy")


def _fit_batch_dask(bounds):
    da = pytest.importorskip("dask.array")
    return autofit.fit_batch(models.gaussian, X, da.from_array(_y(4), chunks=(2, X.size)),
                             p0=[1.5, 0.0, 1.0, 0.0], bounds=bounds, backend="numpy",
                             scheduler="threads")


ENTRY_POINTS = {"curve_fit": _curve_fit, "fit": _fit, "fit_batch": _fit_batch,
                "fit_batch (dask)": _fit_batch_dask}


def _params(outcome):
    return outcome[0] if isinstance(outcome, tuple) else np.asarray(outcome.params)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_scipy_bounds_are_taken_everywhere(entry):
    lower, upper = [0.0, -1.0, 0.1, -1.0], [10.0, 1.0, 5.0, 1.0]
    as_pair = _params(ENTRY_POINTS[entry]((lower, upper)))
    as_bounds = _params(ENTRY_POINTS[entry](Bounds(lower, upper)))
    np.testing.assert_array_equal(as_bounds, as_pair)
    np.testing.assert_allclose(np.reshape(as_pair, (-1, 4))[0], TRUE, atol=0.05)


# Each mistake, and the words every entry point must say for it.
MISTAKES = {
    "not a pair": ((0.0, 1.0, 2.0), "bounds must be a 2-tuple (lower, upper)"),
    "lower above upper": (([0.0, 0.0, 2.0, 0.0], [5.0, 1.0, 1.0, 1.0]),
                          "Each lower bound must be strictly less than each upper bound: "
                          "lower[2] = 2.0 >= upper[2] = 1.0"),
    "nan bound": (([0.0, np.nan, 0.0, 0.0], 5.0),
                  "the lower bound contains nan; use -inf/inf for no bound"),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_is_refused_in_the_same_words_everywhere(mistake, entry):
    bounds, words = MISTAKES[mistake]
    with pytest.raises(ValueError) as raised:
        ENTRY_POINTS[entry](bounds)
    assert str(raised.value).startswith(words), str(raised.value)


def test_the_user_layer_leaves_argument_checks_to_the_validation_module():
    """The in-memory batch, the dask batch and curve_fit hold no argument checks of their
    own: the helpers that once did are gone from them."""
    from autofit import _batch, _curve_fit, _distributed

    for module, moved in ((_batch, ("_bounds", "_per_fit", "_weights", "_fixed_mask",
                                    "_estimator_code", "_normalise_x")),
                          (_distributed, ("_pair",)),
                          (_curve_fit, ("_solver_options", "_check_path_keywords",
                                        "_apply_nan_policy"))):
        left = [name for name in moved if hasattr(module, name)]
        assert not left, f"{module.__name__} still checks arguments itself: {left}"
