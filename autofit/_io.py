"""The result file formats: ``.npz`` (NumPy, no pickle) and ``.zarr`` (for large batches).

This module knows formats only: it writes and reads a result's arrays and metadata record;
:mod:`autofit._results` turns results into records and back.

Both formats hold the result's arrays under their attribute names and a JSON metadata
record (kind, model, parameter names, backend and why, device, estimator, options, autofit
version, creation time), so a result can be read back without autofit as well: ``np.load``
or ``zarr.open_group`` and ``json.loads``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from autofit._checkpoint import write_atomic

FORMAT_VERSION = 1
SUFFIXES = (".npz", ".zarr")
_METADATA = "metadata"  # the npz member / zarr attribute holding the JSON record
BATCH_ARRAYS = ("params", "errors", "covariance", "chi2", "n_iter", "status", "converged",
                 "dof")
FIT_ARRAYS = ("params", "errors", "covariance", "chi2", "reduced_chi2", "r_squared", "x",
               "y", "sigma", "best_fit")


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"cannot tell the format of {str(path)!r}: the name must end in "
                         f"{' or '.join(SUFFIXES)} (zarr for results too large for memory "
                         "twice over)")
    return suffix[1:]


def jsonable(value):
    """``value`` with numpy scalars and tuples turned into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def write_result(path, arrays: dict, metadata: dict, *, overwrite: bool = False) -> None:
    """Write a result's ``arrays`` and JSON ``metadata`` to ``path`` (``.npz`` or
    ``.zarr``)."""
    path = Path(path)
    kind = _format(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it")
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


def read_result(path) -> tuple[dict, dict]:
    """``(arrays, metadata)`` of a result file written by :func:`write_result`."""
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
    return arrays, metadata
