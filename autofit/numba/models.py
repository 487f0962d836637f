"""Built-in models and their analytic Jacobians (numba).

Each model is written once, as scalar functions of one point in :mod:`autofit.numba.points`
(which a CUDA engine compiles as device functions too); the kernels here compile them with
``njit`` and loop over the points: no temporaries, and each Jacobian is filled in one pass,
row by row (the point function writes row i through the transposed view ``jac.T``). A 1-D
``x`` is passed to the point functions as the ``(1, n_points)`` view ``x[np.newaxis, :]``. The
arithmetic is in the same order as the NumPy reference, so the results agree with it bit
for bit (only ``exp`` and the other transcendental functions could round differently on
another libm). No ``fastmath``: it would buy little here (``exp`` and the division
dominate) and would break that agreement.

numba keys the disk cache of a kernel on this file only: after editing ``points.py``, delete
``autofit/numba/__pycache__`` (an installed package gets fresh files, so only development is
affected).
"""

import numpy as np
from numba import njit

from autofit._codes import JAC_ANALYTIC
from autofit._declarations import implements
from autofit.numba import points

_compile = njit(cache=True, error_model="numpy")


_value_linear = _compile(points.value_linear)
_gradient_linear = _compile(points.gradient_linear)


@implements("model_linear")
@njit(cache=True, error_model="numpy")
def model_linear(x, params):
    points_x = x[np.newaxis, :]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = _value_linear(points_x, i, params)
    return y


@implements("jacobian_linear")
@njit(cache=True, error_model="numpy")
def jacobian_linear(x, params):
    points_x = x[np.newaxis, :]
    jac = np.empty((x.shape[0], 2))
    columns = jac.T
    for i in range(x.shape[0]):
        _gradient_linear(points_x, i, params, columns, i)
    return jac


_value_polynomial = _compile(points.value_polynomial)
_gradient_polynomial = _compile(points.gradient_polynomial)


@implements("model_polynomial")
@njit(cache=True, error_model="numpy")
def model_polynomial(x, params):
    if params.shape[0] == 0:
        raise IndexError("model_polynomial needs at least one coefficient")
    points_x = x[np.newaxis, :]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = _value_polynomial(points_x, i, params)
    return y


@implements("jacobian_polynomial")
@njit(cache=True, error_model="numpy")
def jacobian_polynomial(x, params):
    points_x = x[np.newaxis, :]
    jac = np.empty((x.shape[0], params.shape[0]))
    if params.shape[0] == 0:
        return jac
    columns = jac.T
    for i in range(x.shape[0]):
        _gradient_polynomial(points_x, i, params, columns, i)
    return jac


_value_exponential_decay = _compile(points.value_exponential_decay)
_gradient_exponential_decay = _compile(points.gradient_exponential_decay)


@implements("model_exponential_decay")
@njit(cache=True, error_model="numpy")
def model_exponential_decay(x, params):
    points_x = x[np.newaxis, :]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = _value_exponential_decay(points_x, i, params)
    return y


@implements("jacobian_exponential_decay")
@njit(cache=True, error_model="numpy")
def jacobian_exponential_decay(x, params):
    points_x = x[np.newaxis, :]
    jac = np.empty((x.shape[0], 3))
    columns = jac.T
    for i in range(x.shape[0]):
        _gradient_exponential_decay(points_x, i, params, columns, i)
    return jac


_value_gaussian = _compile(points.value_gaussian)
_gradient_gaussian = _compile(points.gradient_gaussian)


@implements("model_gaussian")
@njit(cache=True, error_model="numpy")
def model_gaussian(x, params):
    points_x = x[np.newaxis, :]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = _value_gaussian(points_x, i, params)
    return y


@implements("jacobian_gaussian")
@njit(cache=True, error_model="numpy")
def jacobian_gaussian(x, params):
    points_x = x[np.newaxis, :]
    jac = np.empty((x.shape[0], 4))
    columns = jac.T
    for i in range(x.shape[0]):
        _gradient_gaussian(points_x, i, params, columns, i)
    return jac


_value_lorentzian = _compile(points.value_lorentzian)
_gradient_lorentzian = _compile(points.gradient_lorentzian)


@implements("model_lorentzian")
@njit(cache=True, error_model="numpy")
def model_lorentzian(x, params):
    points_x = x[np.newaxis, :]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = _value_lorentzian(points_x, i, params)
    return y


@implements("jacobian_lorentzian")
@njit(cache=True, error_model="numpy")
def jacobian_lorentzian(x, params):
    points_x = x[np.newaxis, :]
    jac = np.empty((x.shape[0], 4))
    columns = jac.T
    for i in range(x.shape[0]):
        _gradient_lorentzian(points_x, i, params, columns, i)
    return jac


_value_double_exponential = _compile(points.value_double_exponential)
_gradient_double_exponential = _compile(points.gradient_double_exponential)


@implements("model_double_exponential")
@njit(cache=True, error_model="numpy")
def model_double_exponential(x, params):
    points_x = x[np.newaxis, :]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = _value_double_exponential(points_x, i, params)
    return y


@implements("jacobian_double_exponential")
@njit(cache=True, error_model="numpy")
def jacobian_double_exponential(x, params):
    points_x = x[np.newaxis, :]
    jac = np.empty((x.shape[0], 5))
    columns = jac.T
    for i in range(x.shape[0]):
        _gradient_double_exponential(points_x, i, params, columns, i)
    return jac


_value_stretched_exponential = _compile(points.value_stretched_exponential)
_gradient_stretched_exponential = _compile(points.gradient_stretched_exponential)


@implements("model_stretched_exponential")
@njit(cache=True, error_model="numpy")
def model_stretched_exponential(x, params):
    points_x = x[np.newaxis, :]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = _value_stretched_exponential(points_x, i, params)
    return y


@implements("jacobian_stretched_exponential")
@njit(cache=True, error_model="numpy")
def jacobian_stretched_exponential(x, params):
    points_x = x[np.newaxis, :]
    jac = np.empty((x.shape[0], 4))
    columns = jac.T
    for i in range(x.shape[0]):
        _gradient_stretched_exponential(points_x, i, params, columns, i)
    return jac


_value_pseudo_voigt = _compile(points.value_pseudo_voigt)
_gradient_pseudo_voigt = _compile(points.gradient_pseudo_voigt)


@implements("model_pseudo_voigt")
@njit(cache=True, error_model="numpy")
def model_pseudo_voigt(x, params):
    points_x = x[np.newaxis, :]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = _value_pseudo_voigt(points_x, i, params)
    return y


@implements("jacobian_pseudo_voigt")
@njit(cache=True, error_model="numpy")
def jacobian_pseudo_voigt(x, params):
    points_x = x[np.newaxis, :]
    jac = np.empty((x.shape[0], 5))
    columns = jac.T
    for i in range(x.shape[0]):
        _gradient_pseudo_voigt(points_x, i, params, columns, i)
    return jac


_value_multi_lorentzian = _compile(points.value_multi_lorentzian)
_gradient_multi_lorentzian = _compile(points.gradient_multi_lorentzian)


@implements("model_multi_lorentzian")
@njit(cache=True, error_model="numpy")
def model_multi_lorentzian(x, params):
    if params.shape[0] % 3 != 1:
        raise ValueError("multi_lorentzian takes 3 n_peaks + 1 parameters")
    points_x = x[np.newaxis, :]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = _value_multi_lorentzian(points_x, i, params)
    return y


@implements("jacobian_multi_lorentzian")
@njit(cache=True, error_model="numpy")
def jacobian_multi_lorentzian(x, params):
    if params.shape[0] % 3 != 1:
        raise ValueError("multi_lorentzian takes 3 n_peaks + 1 parameters")
    points_x = x[np.newaxis, :]
    jac = np.empty((x.shape[0], params.shape[0]))
    columns = jac.T
    for i in range(x.shape[0]):
        _gradient_multi_lorentzian(points_x, i, params, columns, i)
    return jac


_value_damped_cosine = _compile(points.value_damped_cosine)
_gradient_damped_cosine = _compile(points.gradient_damped_cosine)


@implements("model_damped_cosine")
@njit(cache=True, error_model="numpy")
def model_damped_cosine(x, params):
    points_x = x[np.newaxis, :]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = _value_damped_cosine(points_x, i, params)
    return y


@implements("jacobian_damped_cosine")
@njit(cache=True, error_model="numpy")
def jacobian_damped_cosine(x, params):
    points_x = x[np.newaxis, :]
    jac = np.empty((x.shape[0], 5))
    columns = jac.T
    for i in range(x.shape[0]):
        _gradient_damped_cosine(points_x, i, params, columns, i)
    return jac


_value_sine = _compile(points.value_sine)
_gradient_sine = _compile(points.gradient_sine)


@implements("model_sine")
@njit(cache=True, error_model="numpy")
def model_sine(x, params):
    points_x = x[np.newaxis, :]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = _value_sine(points_x, i, params)
    return y


@implements("jacobian_sine")
@njit(cache=True, error_model="numpy")
def jacobian_sine(x, params):
    points_x = x[np.newaxis, :]
    jac = np.empty((x.shape[0], 4))
    columns = jac.T
    for i in range(x.shape[0]):
        _gradient_sine(points_x, i, params, columns, i)
    return jac


_value_logistic = _compile(points.value_logistic)
_gradient_logistic = _compile(points.gradient_logistic)


@implements("model_logistic")
@njit(cache=True, error_model="numpy")
def model_logistic(x, params):
    points_x = x[np.newaxis, :]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = _value_logistic(points_x, i, params)
    return y


@implements("jacobian_logistic")
@njit(cache=True, error_model="numpy")
def jacobian_logistic(x, params):
    points_x = x[np.newaxis, :]
    jac = np.empty((x.shape[0], 4))
    columns = jac.T
    for i in range(x.shape[0]):
        _gradient_logistic(points_x, i, params, columns, i)
    return jac


_value_power_law = _compile(points.value_power_law)
_gradient_power_law = _compile(points.gradient_power_law)


@implements("model_power_law")
@njit(cache=True, error_model="numpy")
def model_power_law(x, params):
    points_x = x[np.newaxis, :]
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = _value_power_law(points_x, i, params)
    return y


@implements("jacobian_power_law")
@njit(cache=True, error_model="numpy")
def jacobian_power_law(x, params):
    points_x = x[np.newaxis, :]
    jac = np.empty((x.shape[0], 3))
    columns = jac.T
    for i in range(x.shape[0]):
        _gradient_power_law(points_x, i, params, columns, i)
    return jac


_value_gaussian_2d = _compile(points.value_gaussian_2d)
_gradient_gaussian_2d = _compile(points.gradient_gaussian_2d)


@implements("model_gaussian_2d")
@njit(cache=True, error_model="numpy")
def model_gaussian_2d(x, params):
    points_x = x
    y = np.empty(x.shape[1])
    for i in range(x.shape[1]):
        y[i] = _value_gaussian_2d(points_x, i, params)
    return y


@implements("jacobian_gaussian_2d")
@njit(cache=True, error_model="numpy")
def jacobian_gaussian_2d(x, params):
    points_x = x
    jac = np.empty((x.shape[1], 5))
    columns = jac.T
    for i in range(x.shape[1]):
        _gradient_gaussian_2d(points_x, i, params, columns, i)
    return jac


_value_gaussian_2d_elliptic = _compile(points.value_gaussian_2d_elliptic)
_gradient_gaussian_2d_elliptic = _compile(points.gradient_gaussian_2d_elliptic)


@implements("model_gaussian_2d_elliptic")
@njit(cache=True, error_model="numpy")
def model_gaussian_2d_elliptic(x, params):
    points_x = x
    y = np.empty(x.shape[1])
    for i in range(x.shape[1]):
        y[i] = _value_gaussian_2d_elliptic(points_x, i, params)
    return y


@implements("jacobian_gaussian_2d_elliptic")
@njit(cache=True, error_model="numpy")
def jacobian_gaussian_2d_elliptic(x, params):
    points_x = x
    jac = np.empty((x.shape[1], 6))
    columns = jac.T
    for i in range(x.shape[1]):
        _gradient_gaussian_2d_elliptic(points_x, i, params, columns, i)
    return jac


_value_gaussian_2d_rotated = _compile(points.value_gaussian_2d_rotated)
_gradient_gaussian_2d_rotated = _compile(points.gradient_gaussian_2d_rotated)


@implements("model_gaussian_2d_rotated")
@njit(cache=True, error_model="numpy")
def model_gaussian_2d_rotated(x, params):
    points_x = x
    y = np.empty(x.shape[1])
    for i in range(x.shape[1]):
        y[i] = _value_gaussian_2d_rotated(points_x, i, params)
    return y


@implements("jacobian_gaussian_2d_rotated")
@njit(cache=True, error_model="numpy")
def jacobian_gaussian_2d_rotated(x, params):
    points_x = x
    jac = np.empty((x.shape[1], 7))
    columns = jac.T
    for i in range(x.shape[1]):
        _gradient_gaussian_2d_rotated(points_x, i, params, columns, i)
    return jac


_value_cauchy_2d_elliptic = _compile(points.value_cauchy_2d_elliptic)
_gradient_cauchy_2d_elliptic = _compile(points.gradient_cauchy_2d_elliptic)


@implements("model_cauchy_2d_elliptic")
@njit(cache=True, error_model="numpy")
def model_cauchy_2d_elliptic(x, params):
    points_x = x
    y = np.empty(x.shape[1])
    for i in range(x.shape[1]):
        y[i] = _value_cauchy_2d_elliptic(points_x, i, params)
    return y


@implements("jacobian_cauchy_2d_elliptic")
@njit(cache=True, error_model="numpy")
def jacobian_cauchy_2d_elliptic(x, params):
    points_x = x
    jac = np.empty((x.shape[1], 6))
    columns = jac.T
    for i in range(x.shape[1]):
        _gradient_cauchy_2d_elliptic(points_x, i, params, columns, i)
    return jac


# numba's kernels of each built-in model -> its name (for point_functions).
_BUILT_IN = {globals()[f"{part}_{name}"]: name for name in points.POINT_FUNCTIONS
             for part in ("model", "jacobian")}


def point_functions(model, jacobian):
    """``(value, gradient)``: the point functions numba's batched and fused engines run for
    a model given as ``lm_batch`` and ``lm_fused`` take it on every backend.

    ``model`` is either a built-in model's kernel (``model_<name>`` of this module, with
    ``jacobian_<name>`` or anything unused as ``jacobian``): its point functions of
    :mod:`autofit.numba.points`; or point functions already (``value(x, i, p)``, with
    ``gradient(x, i, p, jac, col)`` or None), returned as they are. None for a model
    compiled for whole arrays, ``model(x, params) -> (n_points,)``, that is not built in.
    """
    try:
        name = _BUILT_IN.get(model)
    except TypeError:  # unhashable: not a kernel of this module
        name = None
    if name is not None:
        value, gradient = points.POINT_FUNCTIONS[name]
        if jacobian is not None and _BUILT_IN.get(jacobian, name) != name:
            raise ValueError(f"the Jacobian given is {_BUILT_IN[jacobian]!r}'s, the model "
                             f"{name!r}")
        return value, gradient
    code = getattr(getattr(model, "py_func", model), "__code__", None)
    if code is not None and code.co_argcount == 2:
        return None  # model(x, params): an array model
    return model, jacobian


def required_point_functions(model, jacobian, jac_method, engine: str):
    """:func:`point_functions` for an engine that runs point functions only (``engine``
    names it in the error): TypeError for a model compiled for whole arrays."""
    functions = point_functions(model, jacobian if jac_method == JAC_ANALYTIC else None)
    if functions is None:
        raise TypeError(f"numba's {engine} runs a built-in model's kernels "
                        "(autofit.numba.model_<name>) or point functions "
                        "(autofit.numba.points); a model compiled for whole arrays runs on "
                        "numba's lm_solve or lm_batch, or on another backend")
    return functions
