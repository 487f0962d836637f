"""Batched Levenberg-Marquardt on a CUDA GPU with numba.cuda: one thread per fit.

The per-fit solver is the one the CPU kernel runs (:func:`autofit.numba.fit_one.build_fit_one`),
compiled as a device function; each thread keeps its work arrays in local memory sized at
compile time from the number of parameters, so the whole LM loop of a fit runs in one
thread without touching global memory except to read its data and write its results.
Built-in models use their point functions (:mod:`autofit.numba.points`), user functions
are compiled as device functions, so no CUDA source is written by hand.

Without a GPU this module runs on numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set
before numba is imported), which the tests use for small batches; and :func:`ptx` compiles a
kernel with NVIDIA's own compiler (numba-cuda and NVVM, no GPU needed), which the tests use
to hold every model's kernel to what a GPU would be given.
"""

from __future__ import annotations

import contextlib
import types

import numba
import numpy as np
from numba import cuda  # a module global: the simulator swaps it inside kernels

from autofit._codes import JAC_ANALYTIC
from autofit._declarations import require_jac_method
from autofit.numba.fit_one import build_fit_one
from autofit.numba.kernel import _no_gradient
from autofit.numba.models import required_point_functions
from autofit.numba.passes import with_literals_of

THREADS_PER_BLOCK = 128
_KERNELS: dict = {}


def available() -> bool:
    """True when numba.cuda can run kernels here (a GPU, or the simulator)."""
    try:
        return bool(cuda.is_available())
    except Exception:  # numba-cuda missing or no driver
        return False


def build_kernel(value, gradient, jac_method, n_params, dtype):
    """The CUDA kernel for one model, size and dtype."""
    # float32 is asked for speed: fast division, reciprocals and exp (a few ulp), as Gpufit
    # does; float64 keeps IEEE arithmetic.
    fast = np.dtype(dtype) == np.float32
    device = cuda.jit(device=True, fastmath=fast)
    fit_one = build_fit_one(device(with_literals_of(value, dtype)),
                            device(with_literals_of(gradient, dtype)), jac_method, n_params,
                            device, dtype=dtype)
    real = numba.float32 if np.dtype(dtype) == np.float32 else numba.float64
    size = n_params

    @cuda.jit(fastmath=fast)
    def kernel(x, ydata, weights, p0, lower, upper, free, estimator, tol, max_iter, params,
               chi2, n_iter, status, covariance):
        fit = cuda.grid(1)
        if fit >= ydata.shape[0]:
            return
        trial = cuda.local.array(size, real)
        step = cuda.local.array(size, real)
        g = cuda.local.array(size, real)
        trial_g = cuda.local.array(size, real)
        scale_squared = cuda.local.array(size, real)
        work_p = cuda.local.array(size, real)
        h = cuda.local.array((size, size), real)
        trial_h = cuda.local.array((size, size), real)
        system = cuda.local.array((size, size), real)
        # One column, recomputed point by point: the pass keeps no rows, so the trial's
        # work array (trial_jac) is this one too.
        jac = cuda.local.array((size, 1), real)
        active = cuda.local.array(size, numba.boolean)
        chi2[fit], n_iter[fit], status[fit] = fit_one(
            x[fit % x.shape[0]], ydata[fit], weights[fit % weights.shape[0]], p0[fit],
            lower[fit % lower.shape[0]], upper[fit % upper.shape[0]], free, estimator, tol,
            max_iter, params[fit], trial, step, g, h, trial_g, trial_h, scale_squared, system,
            jac, jac, work_p, active, covariance[fit])

    return kernel


def kernel_types(dtype) -> tuple:
    """The numba types of a launch of :func:`build_kernel`'s kernel by
    :func:`lm_batch_device` from host arrays (contiguous device arrays; ``estimator`` and
    ``max_iter`` Python ints, ``tol`` of ``dtype``)."""
    real = numba.from_dtype(np.dtype(dtype))
    return (real[:, :, ::1], real[:, ::1], real[:, ::1], real[:, ::1], real[:, ::1],
            real[:, ::1], numba.boolean[::1], numba.int64, real, numba.int64, real[:, ::1],
            real[::1], numba.int64[::1], numba.int64[::1], real[:, :, ::1])


@contextlib.contextmanager
def _device_of(compute_capability):
    # numba compiles a device function for the current GPU's compute capability, which it
    # asks the driver for; where there is neither, it is given the one asked for.
    from numba.cuda import dispatcher

    asked = dispatcher.get_current_device
    device = types.SimpleNamespace(compute_capability=tuple(compute_capability))
    dispatcher.get_current_device = lambda: device
    try:
        yield
    finally:
        dispatcher.get_current_device = asked


def ptx(value, gradient, jac_method, n_params, dtype, compute_capability=(8, 0)) -> str:
    """The PTX that NVIDIA's compiler makes of the kernel :func:`lm_batch_device` launches
    for these point functions (``gradient`` None: forward differences), for a GPU of
    ``compute_capability``, on a machine with or without a GPU: the check that the CUDA
    engine compiles (type inference, lowering, NVVM) where nothing can run it.

    Needs numba-cuda and NVIDIA's NVVM and NVRTC libraries (the ``cuda`` extra, or
    ``.ci/cuda-compiler.txt``); numba's own deprecated CUDA target does not compile the
    kernels (RuntimeError)."""
    if getattr(cuda, "implementation", "") != "NVIDIA":
        raise RuntimeError("autofit.numba.gpu.ptx needs numba-cuda (NVIDIA's CUDA target "
                           "for numba: the 'cuda' extra, or .ci/cuda-compiler.txt), not "
                           f"numba's {getattr(cuda, 'implementation', 'missing')} target")
    kernel = build_kernel(value, _no_gradient if gradient is None else gradient, jac_method,
                          n_params, dtype)
    with _device_of(compute_capability):
        text, _ = cuda.compile_ptx(kernel.py_func, kernel_types(dtype),
                                   fastmath=np.dtype(dtype) == np.float32,
                                   cc=tuple(compute_capability))
    return text


def kernel_for(value, gradient, jac_method, n_params, dtype):
    key = (value, gradient, jac_method, n_params, np.dtype(dtype))
    if key not in _KERNELS:
        _KERNELS[key] = build_kernel(value, gradient, jac_method, n_params, dtype)
    return _KERNELS[key]


def lm_batch_device(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, free,
                    estimator, tol, max_iter, out=None):
    """``lm_batch`` on arrays already on the GPU (numba device arrays, or any array with
    ``__cuda_array_interface__``, e.g. CuPy or JAX); returns device arrays
    ``(params, chi2, n_iter, status, covariance)`` (``out`` reuses them)."""
    require_jac_method("lm_batch", "numba", jac_method)
    value, gradient = required_point_functions(model, jacobian, jac_method, "CUDA engine")
    n_fits, n_params = p0.shape
    dtype = np.dtype(p0.dtype)
    kernel = kernel_for(value, gradient if jac_method == JAC_ANALYTIC else _no_gradient,
                        jac_method, n_params, dtype)
    if out is None:
        out = (cuda.device_array((n_fits, n_params), dtype=dtype),
               cuda.device_array(n_fits, dtype=dtype),
               cuda.device_array(n_fits, dtype=np.int64),
               cuda.device_array(n_fits, dtype=np.int64),
               cuda.device_array((n_fits, n_params, n_params), dtype=dtype))
    blocks = (n_fits + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    if n_fits:
        kernel[blocks, THREADS_PER_BLOCK](x, ydata, weights, p0, lower, upper, free,
                                          estimator, dtype.type(tol), max_iter, *out)
    return out


def lm_batch_cuda(model, jacobian, jac_method, x, ydata, weights, p0, lower, upper, free,
                  estimator, tol, max_iter):
    """``lm_batch`` from host arrays: copies in, runs one thread per fit, copies out."""
    arrays = [cuda.to_device(np.ascontiguousarray(a))
              for a in (x, ydata, weights, p0, lower, upper)]
    free = cuda.to_device(np.ascontiguousarray(free, dtype=np.bool_))
    out = lm_batch_device(model, jacobian, jac_method, *arrays, free, estimator, tol,
                          max_iter)
    return tuple(o.copy_to_host() for o in out)
