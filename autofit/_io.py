"""Saving and loading results: ``.npz`` (NumPy, no pickle) and ``.zarr`` (for large batches).

Both formats hold the result's arrays under their attribute names and a JSON metadata
record (kind, model, parameter names, backend and why, device, estimator, options, autofit
version, creation time), so a result can be read back without autofit as well: ``np.load``
or ``zarr.open_group`` and ``json.loads``.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from autofit._checkpoint import write_atomic
from autofit._status import Status

FORMAT_VERSION = 1
SUFFIXES = (".npz", ".zarr")
_METADATA = "metadata"  # the npz member / zarr attribute holding the JSON record
_BATCH_ARRAYS = ("params", "errors", "covariance", "chi2", "n_iter", "status", "converged",
                 "dof")
_FIT_ARRAYS = ("params", "errors", "covariance", "chi2", "reduced_chi2", "r_squared", "x",
               "y", "sigma", "best_fit")


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"cannot tell the format of {str(path)!r}: the name must end in "
                         f"{' or '.join(SUFFIXES)} (zarr for results too large for memory "
                         "twice over)")
    return suffix[1:]


def _jsonable(value):
    """``value`` with numpy scalars and tuples turned into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _record(result) -> tuple[dict, dict]:
    """(arrays, metadata) of a FitResult or BatchResult."""
    from autofit import __version__
    from autofit._batch import BatchResult
    from autofit._fit import builtin_spec

    metadata = {"format_version": FORMAT_VERSION, "autofit_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "model": result.model, "param_names": list(result.param_names),
                "backend": result.backend, "backend_reason": result.backend_reason,
                "device": result.device, "options": _jsonable(result.options)}
    if isinstance(result, BatchResult):
        metadata.update(kind="BatchResult", estimator=result.estimator,
                        model_spec=builtin_spec(result.model, len(result.param_names)))
        arrays = {name: getattr(result, name) for name in _BATCH_ARRAYS}
    else:
        metadata.update(kind="FitResult", estimator="lse", model_spec=result.model_spec,
                        n_iter=result.n_iter, nfev=result.nfev, dof=result.dof,
                        status=int(result.status), message=result.message,
                        success=bool(result.success))
        arrays = {name: getattr(result, name) for name in _FIT_ARRAYS}
    arrays = {name: np.asarray(value) for name, value in arrays.items() if value is not None}
    return arrays, metadata


def save_result(result, path, *, overwrite: bool = False) -> None:
    """Write ``result`` to ``path`` (``.npz`` or ``.zarr``); see :func:`load_result`."""
    path = Path(path)
    kind = _format(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it")
    arrays, metadata = _record(result)
    if kind == "npz":
        _save_npz(path, arrays, metadata)
    else:
        _save_zarr(path, arrays, metadata)


def _save_npz(path: Path, arrays: dict, metadata: dict) -> None:
    # An interrupted save leaves the old file (with overwrite=True) intact.
    write_atomic(path, lambda handle: np.savez(
        handle, **arrays, **{_METADATA: np.array(json.dumps(metadata))}))


def _zarr():
    try:
        import zarr
    except ImportError as exc:
        raise ImportError("saving or loading .zarr needs zarr, which is not installed: "
                          "pip install zarr (or 'autofit-lm[dask]'), or use a .npz path"
                          ) from exc
    return zarr


def _save_zarr(path: Path, arrays: dict, metadata: dict) -> None:
    zarr = _zarr()
    if path.exists():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    group = zarr.open_group(str(path), mode="w")
    create = getattr(group, "create_array", None) or group.create_dataset  # zarr 3, zarr 2
    for name, array in arrays.items():
        create(name, data=np.asarray(array, order="C"))
    group.attrs[_METADATA] = metadata


def load_result(path):
    """Read a result written by ``FitResult.save`` or ``BatchResult.save``.

    Parameters
    ----------
    path : str or Path
        A ``.npz`` file or a ``.zarr`` directory.

    Returns
    -------
    FitResult or BatchResult
        As saved. A FitResult of a built-in model gets its model back (``evaluate``,
        ``plot`` on a fine grid); one of a user function has ``function=None``.

    Examples
    --------
    >>> import numpy as np, autofit, tempfile, pathlib
    >>> x = np.linspace(0, 1, 20)
    >>> res = autofit.fit(autofit.models.linear, x, 2 * x + 1, backend="numpy")
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "line.npz"
    >>> res.save(path)
    >>> back = autofit.load_result(path)
    >>> back.param_names, bool(np.allclose(back.params, res.params))
    (('slope', 'intercept'), True)
    """
    path = Path(path)
    kind = _format(path)
    if not path.exists():
        raise FileNotFoundError(f"no result at {str(path)!r}")
    if kind == "npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{str(path)!r} is not a readable .npz file: {exc}") from exc
        if _METADATA not in arrays:
            raise ValueError(f"{str(path)!r} holds no autofit metadata; it was not written "
                             "by FitResult.save or BatchResult.save")
        metadata = json.loads(str(arrays.pop(_METADATA)))
    else:
        zarr = _zarr()
        group = zarr.open_group(str(path), mode="r")
        if _METADATA not in group.attrs:
            raise ValueError(f"{str(path)!r} holds no autofit metadata; it was not written "
                             "by FitResult.save or BatchResult.save")
        metadata = dict(group.attrs[_METADATA])
        arrays = {name: np.asarray(group[name][...]) for name in group.array_keys()}
    if metadata.get("kind") == "BatchResult":
        return _batch_from(arrays, metadata)
    if metadata.get("kind") == "FitResult":
        return _fit_from(arrays, metadata)
    raise ValueError(f"{str(path)!r}: unknown result kind {metadata.get('kind')!r}")


def _batch_from(arrays: dict, metadata: dict):
    from autofit._batch import BatchResult

    status = arrays["status"]
    return BatchResult(
        params=arrays["params"], errors=arrays["errors"],
        covariance=arrays.get("covariance"), chi2=arrays["chi2"], n_iter=arrays["n_iter"],
        status=Status(int(status)) if status.ndim == 0 else status,
        converged=arrays["converged"], backend=metadata["backend"],
        backend_reason=metadata["backend_reason"], device=metadata["device"],
        model=metadata["model"], param_names=tuple(metadata["param_names"]),
        estimator=metadata["estimator"], dof=arrays["dof"],
        options=metadata.get("options", {}))


def _fit_from(arrays: dict, metadata: dict):
    from autofit import models
    from autofit._fit import FitResult

    spec = metadata.get("model_spec")
    return FitResult(
        params=arrays["params"], errors=arrays["errors"], covariance=arrays["covariance"],
        chi2=float(arrays["chi2"]), reduced_chi2=float(arrays["reduced_chi2"]),
        r_squared=float(arrays["r_squared"]), dof=int(metadata["dof"]),
        n_iter=int(metadata["n_iter"]), nfev=int(metadata["nfev"]),
        status=Status(metadata["status"]), message=metadata["message"],
        success=bool(metadata["success"]), backend=metadata["backend"],
        backend_reason=metadata["backend_reason"], device=metadata["device"],
        param_names=tuple(metadata["param_names"]), model=metadata["model"],
        model_spec=spec, x=arrays["x"], y=arrays["y"], sigma=arrays.get("sigma"),
        best_fit=arrays["best_fit"], function=models.get(spec) if spec else None,
        options=metadata.get("options", {}))
