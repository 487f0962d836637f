"""``autofit.fit_batch``: one model fitted to many curves, in memory or block by block with
dask; the in-memory engine is :mod:`autofit._batch`, the dask one :mod:`autofit._distributed`."""

from __future__ import annotations

from autofit import _batch, _dispatch, _distributed, _progress
from autofit._results import BatchResult


def fit_batch(model, x, y, p0=None, *, sigma=None, bounds=None, fixed=None, estimator="lse",
              max_iter=None, tol=None, jac=None, backend=None, strict=None, device=None,
              dtype=None, absolute_sigma=False, covariance=True, progress=None,
              checkpoint=None, chunk_size=None, scheduler=None, loss="linear",
              f_scale=1.0) -> BatchResult:
    """Fit one model to many curves at once: one independent fit per curve.

    Parameters
    ----------
    model : autofit.models.Model or callable ``f(x, *params)``
        A built-in model (analytic Jacobian, automatic starting point) or any function as
        for :func:`autofit.curve_fit`. On numba a user function must compile with
        ``numba.njit`` for scalar ``x`` (one point at a time); on jax it must be written
        with ``jax.numpy``; otherwise the dispatcher falls back (and says so).
    x : array
        ``(n_points,)`` shared by all fits; ``(k, n_points)`` shared, for a model of k
        variables (e.g. the pixel coordinates of ``gaussian_2d``); or one row per fit,
        ``(..., n_points)`` or ``(..., k, n_points)`` with the leading shape of ``y``.
    y : (..., n_points) array
        One curve per leading index, e.g. an image cube ``(height, width, n_points)``.
        Integers and float32 are converted to the working dtype. A curve holding nan or
        inf is not fitted (status ``NONFINITE_DATA``) and does not affect the others.
    p0 : (n_params,) or (..., n_params) array, optional
        One start for all fits or one per fit; default the model's ``guess`` for each
        curve (built-in models), or ones (user functions, as ``curve_fit``).
    sigma : (n_points,) or (..., n_points) array, optional
        Standard deviations of ``y`` (least squares only). ``inf`` drops a point.
    bounds : (lower, upper), optional
        Each a scalar, ``(n_params,)`` or ``(..., n_params)``; ``lower < upper``.
    fixed : (n_params,) bool or sequence of parameter names, optional
        Parameters held at p0 (Gpufit's ``parameters_to_fit``, inverted).
    estimator : {"lse", "mle"}
        Weighted least squares, or Poisson maximum likelihood (``y`` are counts).
    loss : {"linear", "soft_l1", "huber", "cauchy", "arctan"}
        A robust loss for least squares, as in :func:`scipy.optimize.least_squares`: each
        fit minimises ``Σ f_scale² rho(((y - f) / (sigma f_scale))²)``, so that outliers
        (hot pixels, cosmic rays, saturated points) pull on the fit far less than in least
        squares. ``chi2`` is that sum; the covariance follows ``scipy.optimize.curve_fit``
        (the inverse of ``Jᵀ diag(rho' + 2 rho'' z) J``, scaled by ``chi2 / dof`` unless
        ``absolute_sigma``). Not with ``estimator="mle"``.
    f_scale : float or (...,) array
        The residual (in units of sigma) where the robust loss bends: one for all fits or
        one per fit (the leading shape of ``y``). Default 1.
    max_iter : int, optional
        Iterations per fit (model passes, accepted or not); default 200, or 20 per
        parameter for models of more than 10 parameters.
    tol : float, optional
        Relative tolerance of the stopping tests; default 1e-8 (float64), 1e-5 (float32).
    jac : None or "2-point", optional
        None: analytic for built-in models; forward differences (numpy, numba) or
        autodiff (jax) for user functions. "2-point" forces forward differences.
    backend, strict : as for :func:`autofit.curve_fit`.
    device : {"cpu", "cuda"}, optional
        numba backend only: "cuda" runs one GPU thread per fit with numba.cuda. Default
        ``FFIT_DEVICE`` if set, else "cpu". Reported as ``result.device``.
    dtype : {numpy.float64, numpy.float32}, optional
        Working precision; float32 only when asked (default tolerance 1e-5 then).
    absolute_sigma : bool
        As in ``curve_fit``: False scales the least-squares covariance by each fit's
        reduced χ². Ignored for MLE (the inverse Fisher information is absolute).
    covariance : bool
        Keep the full covariance matrices (``n_fits * n_params**2`` numbers); errors are
        returned either way.
    progress : None, True or False
        A tqdm progress bar, updated as chunks of fits finish: None (default) shows it only
        once the batch has run for 2 s, True always, False never. It needs ``tqdm``
        (``pip install 'autofit-lm[progress]'``); without it None shows nothing and True
        warns. Logs (stderr not a terminal) get one plain line every 10 s.
    checkpoint : path, optional
        A directory where each finished chunk's results are saved at once (written to a
        temporary file, then renamed: a crash never leaves half a chunk). Calling again with
        the same path and the same inputs loads the finished chunks and fits only the rest.
        The path must not exist yet, be an empty directory, or be a checkpoint of the same
        run; a checkpoint of other inputs, options or chunking is refused with a ValueError,
        and nothing autofit did not write is ever overwritten.
    chunk_size : int, optional
        Fits per chunk, the unit of checkpoints and of the work sent to a dask worker when
        ``y`` is in memory. Default 65536 with a checkpoint; otherwise chosen so a chunk
        takes about 0.25 s on the CPU (progress updates), 65536 with ``progress=False``.
        Dask arrays are cut by their own chunks instead.
    scheduler : None, "threads", "processes" or a distributed Client
        Where the blocks of a dask ``y`` (or of any dask argument) are fitted. None: the
        active ``dask.distributed`` Client if there is one, else "threads". "threads": one
        block after another in this process, each using all cores through the backend.
        "processes": a ``LocalCluster`` of one single-threaded worker process per core,
        started for this call. A Client: its cluster. A ``scheduler`` with in-memory arrays
        sends them to it in chunks of ``chunk_size`` fits. With dask, every block is an
        in-memory sub-batch on a worker (points must fit in one chunk; autofit rechunks that
        axis), the result is an ordinary in-memory :class:`BatchResult`, equal fit for fit
        to the in-memory ``fit_batch``, and numba compiles its kernels once per worker
        process.

    Returns
    -------
    BatchResult

    Examples
    --------
    >>> import numpy as np, autofit
    >>> x = np.linspace(-3, 3, 32)
    >>> centers = np.array([[-0.5, 0.0], [0.5, 1.0]])
    >>> y = autofit.models.gaussian(x, 2.0, centers, 0.7, 0.1)  # one curve per centre
    >>> res = autofit.fit_batch(autofit.models.gaussian, x, y, backend="numpy")
    >>> res.params.shape, bool(res.converged.all())
    ((2, 2, 4), True)
    >>> np.allclose(res["center"], centers)
    True
    """
    progress = _progress.check_mode(progress)
    chunk_size = _batch.check_chunk_size(chunk_size)
    if _distributed.is_dask_call(scheduler, x, y, p0, sigma, bounds):
        return _distributed.fit(model, x, y, p0, sigma=sigma, bounds=bounds, fixed=fixed,
                                estimator=estimator, max_iter=max_iter, tol=tol, jac=jac,
                                backend=backend, strict=strict, device=device, dtype=dtype,
                                absolute_sigma=absolute_sigma, covariance=covariance,
                                progress=progress, checkpoint=checkpoint,
                                chunk_size=chunk_size, scheduler=scheduler, loss=loss,
                                f_scale=f_scale)
    problem = _batch.Problem.build(model, x, y, p0, sigma, bounds, fixed, estimator, max_iter, tol,
                             jac, dtype, loss=loss, f_scale=f_scale)
    device = _batch.choose_device(device)
    choice = _batch.quick_choice(problem, _dispatch.choose(backend), device, checkpoint)
    try:
        return _batch.solve(problem, choice, device, strict, absolute_sigma, covariance,
                            progress=progress, checkpoint=checkpoint, chunk_size=chunk_size)
    finally:
        if choice.after_call is not None:
            choice.after_call()
