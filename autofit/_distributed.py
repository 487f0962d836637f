"""``fit_batch`` on dask arrays: every block of fits is an in-memory sub-batch.

The client side cuts the batch along ``y``'s dask chunks over the leading (per-fit) axes,
with all points of a curve in one chunk, and sends each block, with the matching blocks of
the per-fit arguments, to a worker (a ``dask.distributed`` cluster) or fits the blocks one
after another in this process (``scheduler="threads"``). A worker runs exactly the in-memory
path (:func:`autofit._batch.solve`) on its block, so each fit's result is the one the
in-memory ``fit_batch`` gives. The blocks' results come back as NumPy arrays and are placed
into one in-memory :class:`~autofit._results.BatchResult`; finished blocks go into the
checkpoint and the progress bar as they arrive.

The backend is chosen once, here (``backend=``, ``use_backend``, ``FFIT_BACKEND``, ... are
read on the client, not on the workers); warnings raised on a worker (a backend fallback)
are raised again here.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import sys
import warnings

import numpy as np

from autofit import _batch, _checkpoint, _dispatch, _forward_mode, _progress
from autofit import _validation as check
from autofit._results import BatchResult

SCHEDULERS = ("threads", "processes")


def _is_dask(value) -> bool:
    # No import of dask: an array can only be a dask array once dask.array is loaded.
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(value, module.Array)


def is_dask_call(scheduler, x, y, p0, sigma, bounds) -> bool:
    """Whether ``fit_batch`` goes through dask: a scheduler was named or an argument is a
    dask array."""
    pieces = [x, y, p0, sigma]
    if isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        pieces += list(bounds)
    return scheduler is not None or any(_is_dask(a) for a in pieces)


def fit(model, x, y, p0, *, sigma, bounds, fixed, estimator, max_iter, tol, jac, backend,
        strict, device, dtype, absolute_sigma, covariance, progress, checkpoint, chunk_size,
        scheduler, loss="linear", f_scale=1.0):
    """``fit_batch`` with dask arguments or a scheduler (see its docstring)."""
    if importlib.util.find_spec("dask") is None:
        raise ImportError("dask arrays or scheduler= need dask; install it with: pip install "
                          "'autofit-lm[dask]'")
    import dask
    import dask.array as da

    if np.ndim(f_scale) != 0:
        raise ValueError("with dask, f_scale must be one number for every fit; give "
                         "per-fit f_scale with in-memory arrays, or fold it into sigma")
    client, owned = _scheduler(scheduler)
    try:
        device = _batch.choose_device(device)
        choice = _dispatch.choose(backend)
        strict = _dispatch.is_strict(strict)
        if _is_dask(y) and chunk_size is not None:
            raise ValueError("chunk_size applies to in-memory arrays; a dask y is cut by its "
                             f"own chunks ({y.chunksize}): rechunk it instead")
        lower, upper = (None, None) if bounds is None else check.bound_pair(bounds)
        blocks = _Blocks(model, x, y, p0, sigma, lower, upper, chunk_size or _batch.CHUNK_FITS,
                         da)
        settings = {"fixed": fixed, "estimator": estimator, "max_iter": max_iter, "tol": tol,
                    "jac": jac, "dtype": dtype, "choice": choice, "device": device,
                    "strict": strict, "absolute_sigma": absolute_sigma,
                    "covariance": covariance, "loss": loss, "f_scale": f_scale}
        # Arguments and options are checked on the first curve here, before work is sent.
        _build(model, *blocks.first_curve(), settings)
        store = None
        if checkpoint is not None:
            identity = {"kind": "dask", "model": _checkpoint.model_identity(model),
                        "data": blocks.digest(dask, client),
                        "options": _options(settings)}
            store = _checkpoint.Checkpoint(checkpoint, identity, blocks.boxes())
        return _fit_blocks(model, blocks, settings, store, progress, client, dask)
    finally:
        if owned is not None:
            client.close()
            owned.close()


def _scheduler(scheduler):
    """(client or None, the cluster started here or None)."""
    if scheduler is None:
        return _active_client(), None
    if isinstance(scheduler, str) and scheduler in SCHEDULERS:
        if scheduler == "threads":
            return None, None
        from distributed import Client, LocalCluster

        # One single-threaded worker per core; each worker's numba runs one thread, so the
        # workers do not oversubscribe the cores.
        # A cluster for one call: no dashboard (its port may be taken, and nobody watches).
        cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1,
                               processes=True, env={"NUMBA_NUM_THREADS": "1"},
                               dashboard_address=None)
        return Client(cluster, set_as_default=False), cluster
    if "distributed" in sys.modules and isinstance(scheduler, sys.modules["distributed"].Client):
        return scheduler, None
    raise ValueError(f"scheduler must be None (the active dask.distributed Client, else "
                     f"threads), 'threads', 'processes' or a distributed.Client, got "
                     f"{scheduler!r}")


def _active_client():
    if "distributed" not in sys.modules:     # no Client can exist without it
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def _options(settings) -> dict:
    """The settings as JSON for a checkpoint's fingerprint."""
    fixed = settings["fixed"]
    return {"fixed": None if fixed is None else np.asarray(fixed).tolist(),
            "estimator": str(settings["estimator"]).lower(), "max_iter": settings["max_iter"],
            "tol": settings["tol"], "jac": settings["jac"],
            "dtype": str(np.dtype(np.float64 if settings["dtype"] is None
                                  else settings["dtype"])),
            "backend": settings["choice"].requested, "device": settings["device"],
            "absolute_sigma": bool(settings["absolute_sigma"]),
            "loss": str(settings["loss"]), "f_scale": float(settings["f_scale"]),
            "covariance": bool(settings["covariance"])}


class _Blocks:
    """The batch cut into blocks: y's chunks over the leading axes, points whole.

    Arguments given per fit (x, p0, sigma, a bound, by the same shape rules as in memory)
    are cut like y; shared ones go whole (as NumPy) with every block.
    """

    def __init__(self, model, x, y, p0, sigma, lower, upper, chunk_size, da):
        if not _is_dask(y):
            y = np.asarray(y)
            if y.ndim < 2:
                raise ValueError(f"a dask batch needs y of shape (..., n_points) with at "
                                 f"least one axis of fits, got shape {y.shape}")
            per_row = int(np.prod(y.shape[1:-1], dtype=np.int64))
            y = da.from_array(y, chunks=(max(1, chunk_size // per_row),) + y.shape[1:])
        if y.ndim < 2:
            raise ValueError(f"a dask batch needs y of shape (..., n_points) with at least "
                             f"one axis of fits, got shape {y.shape}")
        self.y = y.rechunk({y.ndim - 1: -1})
        leading, n_points = y.shape[:-1], y.shape[-1]
        self.leading = leading
        k = getattr(model, "n_variables", None)
        x_shape = np.shape(x)
        x_per_fit = ((len(x_shape) == len(leading) + 1 and x_shape[:-1] == leading
                      and k in (None, 1))
                     or (len(x_shape) == len(leading) + 2 and x_shape[:-2] == leading))

        def per_point_or_param(value):
            shape = np.shape(value)
            return len(shape) == len(leading) + 1 and shape[:-1] == leading

        self.arguments = {}
        for name, value, per_fit in (
                ("x", x, x_per_fit), ("p0", p0, per_point_or_param(p0)),
                ("sigma", sigma, np.shape(sigma) == leading + (n_points,)),
                ("lower", lower, per_point_or_param(lower)),
                ("upper", upper, per_point_or_param(upper))):
            if value is None:
                self.arguments[name] = (None, False)
            elif per_fit:
                value = da.asarray(value)
                trailing = tuple((s,) for s in value.shape[len(leading):])
                self.arguments[name] = (value.rechunk(self.y.chunks[:-1] + trailing), True)
            else:
                self.arguments[name] = (np.asarray(value.compute() if _is_dask(value)
                                                   else value), False)

    def ids(self):
        return list(np.ndindex(*self.y.numblocks[:-1]))

    def boxes(self) -> list:
        """Each block as [[start, stop] per leading axis], in the order of ``ids``."""
        edges = [np.concatenate([[0], np.cumsum(c)]).tolist() for c in self.y.chunks[:-1]]
        return [[[edges[a][i], edges[a][i + 1]] for a, i in enumerate(block)]
                for block in self.ids()]

    def pieces(self, block):
        """(x, y, p0, sigma, lower, upper) of one block; dask arrays for the per-fit ones."""
        out = []
        for name in ("x", "y", "p0", "sigma", "lower", "upper"):
            value, per_fit = (self.y, True) if name == "y" else self.arguments[name]
            if per_fit:
                value = value.blocks[block + (0,) * (value.ndim - len(self.leading))]
            out.append(value)
        return out

    def first_curve(self):
        """(x, y, p0, sigma, lower, upper) of the first fit, in memory, shaped (1, ...)."""
        index = (0,) * (len(self.leading) - 1) + (slice(0, 1),)
        out = []
        for name in ("x", "y", "p0", "sigma", "lower", "upper"):
            value, per_fit = (self.y, True) if name == "y" else self.arguments[name]
            out.append(np.asarray(value[index]) if per_fit else value)
        return out

    def digest(self, dask, client) -> str:
        """A hash of all the inputs, each block hashed where it is (one read of the data)."""
        tasks = [dask.delayed(_digest_block, pure=True)(*self.pieces(block))
                 for block in self.ids()]
        if client is not None:
            digests = client.gather(client.compute(tasks))
        else:
            digests = dask.compute(*tasks)
        return _checkpoint.digest_arrays([np.frombuffer("".join(digests).encode(),
                                                        dtype=np.uint8)])


def _digest_block(*pieces) -> str:
    return _checkpoint.digest_arrays(pieces)


def _fit_block(model, definition, x, y, p0, sigma, lower, upper, settings):
    """The in-memory fit of one block (on a worker): (per-fit arrays, other fields,
    warnings) of its BatchResult. ``definition``: the model's source as the caller's
    process read it (:func:`autofit._forward_mode.definition_to_ship`), for a worker that
    cannot: the same derivatives, the same fits."""
    _forward_mode.receive_definition(model, definition)
    y = np.asarray(y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problem = _build(model, x, y, p0, sigma, lower, upper, settings)
        result = _batch.solve(problem, copy.deepcopy(settings["choice"]), settings["device"],
                               settings["strict"], settings["absolute_sigma"],
                               settings["covariance"])
    arrays, others = _split(result, y.shape[:-1])
    return arrays, others, [(w.category, str(w.message)) for w in caught]


def _build(model, x, y, p0, sigma, lower, upper, settings):
    return _batch.Problem.build(model, x, y, p0, sigma,
                                 None if lower is None else (lower, upper), settings["fixed"],
                                 settings["estimator"], settings["max_iter"], settings["tol"],
                                 settings["jac"], settings["dtype"],
                                 loss=settings["loss"], f_scale=settings["f_scale"])


def _split(result, leading):
    """A BatchResult's fields: those with one entry per fit, and the rest."""
    arrays, others = {}, {}
    for item in dataclasses.fields(result):
        value = getattr(result, item.name)
        if isinstance(value, np.ndarray) and value.shape[:len(leading)] == tuple(leading):
            arrays[item.name] = value
        else:
            others[item.name] = value
    return arrays, others


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _fit_blocks(model, blocks, settings, store, progress, client, dask):
    ids, boxes = blocks.ids(), blocks.boxes()
    results = {}
    others = None
    if store is not None:
        for index in store.finished():
            shape = tuple(stop - start for start, stop in boxes[index])
            loaded = store.load(index, shape)
            if loaded is not None:
                results[index] = loaded[0]
                others = others or loaded[1]
    initial = sum(int(np.prod([stop - start for start, stop in boxes[i]])) for i in results)
    n_fits = int(np.prod(blocks.leading, dtype=np.int64))
    label = f"fit_batch {getattr(model, 'name', getattr(model, '__name__', 'model'))}"
    caught = {}
    pending = [i for i in range(len(ids)) if i not in results]
    computed_others = None

    def finish(index, outcome):
        nonlocal computed_others
        arrays, fields, block_warnings = outcome
        results[index] = arrays
        computed_others = computed_others or fields
        for category, message in block_warnings:
            caught.setdefault((category, message), None)
        if store is not None:
            store.save(index, arrays, json.loads(json.dumps(fields, default=_json_default)))
        bar.update(int(np.prod([stop - start for start, stop in boxes[index]])))

    definition = _forward_mode.definition_to_ship(model) if pending else None
    with _progress.ProgressBar(n_fits, progress, initial=initial, desc=label) as bar:
        if client is None:
            for index in pending:
                pieces = dask.compute(*blocks.pieces(ids[index]))
                finish(index, _fit_block(model, definition, *pieces, settings))
        else:
            from distributed import as_completed

            tasks = [dask.delayed(_fit_block, pure=False)(model, definition,
                                                          *blocks.pieces(ids[i]), settings)
                     for i in pending]
            futures = client.compute(tasks)
            where = {future.key: index for future, index in zip(futures, pending)}
            try:
                for future in as_completed(futures):
                    finish(where[future.key], future.result())
                    future.release()
            finally:
                client.cancel(futures)
    for category, message in caught:
        warnings.warn(message, category, stacklevel=4)
    fields = computed_others if computed_others is not None else _from_json(others)
    return BatchResult(**fields, **_assemble(results, ids, boxes, blocks.leading))


def _from_json(others: dict) -> dict:
    """The non-array fields as saved in a checkpoint, with tuples back as tuples."""
    fields = dict(others)
    fields["param_names"] = tuple(fields["param_names"])
    return fields


def _assemble(results, ids, boxes, leading):
    """Place each block's per-fit arrays into arrays shaped like the whole batch."""
    first = results[0]
    out = {name: np.empty(tuple(leading) + value.shape[len(leading):], dtype=value.dtype)
           for name, value in first.items()}
    for index in range(len(ids)):
        where = tuple(slice(start, stop) for start, stop in boxes[index])
        for name, value in results[index].items():
            out[name][where] = value
    return out
