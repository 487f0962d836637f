"""Checkpoints for ``fit_batch(..., checkpoint=path)``: finished chunks survive a crash.

A checkpoint is a directory that autofit owns::

    path/autofit-checkpoint.json    what the run was: a fingerprint of its inputs and options,
                                    and how the fits were cut into chunks
    path/chunk-000012.npz           the outputs of chunk 12, written once it finished

Each file is written to a temporary name in the same directory and renamed into place
(``os.replace``, atomic on POSIX and Windows), so a run killed at any moment leaves whole
chunk files and at most a stray temporary file, which the next run removes. A rerun with the
same path loads the finished chunks and computes only the others; a run whose inputs,
options or chunking differ is refused, as is a path that holds anything else: autofit never
overwrites a file it did not write.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

MANIFEST = "autofit-checkpoint.json"
FORMAT = "autofit-checkpoint/1"
_META = "__meta__"
# Rows hashed per update: bounds the temporary copy of a non-contiguous slice.
_HASH_ROWS = 4096


def digest_arrays(arrays) -> str:
    """A hash of the dtypes, shapes and bytes of ``arrays`` (None allowed), row block by row
    block so a large array is never copied whole."""
    h = hashlib.blake2b(digest_size=20)
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        a = np.asarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        rows = a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(1, -1)
        for start in range(0, rows.shape[0], _HASH_ROWS):
            h.update(np.ascontiguousarray(rows[start:start + _HASH_ROWS]).data)
    return h.hexdigest()


def model_identity(model) -> dict:
    """What names a model in a fingerprint: a built-in's name and parameters, or a user
    function's qualified name and compiled code (values it reads from globals or a closure are
    not part of it)."""
    names = getattr(model, "param_names", None)
    if getattr(model, "formula", None) is not None and names is not None:
        return {"builtin": model.name, "param_names": list(names)}
    function = getattr(model, "py_func", model)   # a numba dispatcher: its Python function
    code = getattr(function, "__code__", None)
    name = getattr(function, "__qualname__", type(function).__qualname__)
    module = getattr(function, "__module__", None)
    code_hash = (hashlib.blake2b(marshal.dumps(code), digest_size=20).hexdigest()
                 if code is not None else None)
    return {"function": f"{module}.{name}", "code": code_hash}


def write_atomic(target: Path, write) -> None:
    """Write ``target`` whole or not at all: ``write(file)`` fills a uniquely named temporary
    file beside it (prefix ``.autofit-``, suffix ``.tmp``), which is then renamed into place.

    A crash mid-write leaves ``target`` as it was and, at worst, a temporary file of ours;
    no name the user might have chosen is ever written except ``target`` itself.
    """
    target = Path(target)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".autofit-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class Checkpoint:
    """One checkpoint directory, opened for a run whose identity and chunks are known.

    Parameters
    ----------
    path : directory
    identity : dict
        JSON-able description of the run (fingerprints of the data, the model, the options);
        a checkpoint with another identity is refused.
    chunks : list
        JSON-able description of each chunk (e.g. ``[start, stop]`` of the fits), in order.
    """

    def __init__(self, path, identity: dict, chunks: list):
        self.path = Path(path)
        self.identity = json.loads(json.dumps(identity))
        self.chunks = json.loads(json.dumps(chunks))
        manifest = self.path / MANIFEST
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"checkpoint={str(path)!r} is a file, not an autofit checkpoint; "
                             "give a path that does not exist yet (a directory is created "
                             "there) or an empty directory; autofit never overwrites files "
                             "it did not write")
        if manifest.is_file():
            self._check(self._read_manifest())
            self._remove_partial_writes()
        else:
            if self.path.is_dir() and any(self.path.iterdir()):
                raise ValueError(f"checkpoint={str(path)!r} is a directory that holds files "
                                 "but no autofit checkpoint; give a path that does not exist "
                                 "yet or an empty directory (autofit never overwrites files it "
                                 "did not write)")
            self.path.mkdir(parents=True, exist_ok=True)
            self._write_atomic(MANIFEST, lambda f: f.write(json.dumps(
                {"format": FORMAT, "identity": self.identity, "chunks": self.chunks},
                indent=1).encode()))

    def _read_manifest(self) -> dict:
        try:
            manifest = json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"checkpoint={str(self.path)!r}: its {MANIFEST} cannot be read "
                             f"({exc}); delete the directory or give another path") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(f"checkpoint={str(self.path)!r} was written in another format "
                             f"({manifest.get('format') if isinstance(manifest, dict) else '?'}"
                             f", this autofit reads {FORMAT}); delete it or give another path")
        return manifest

    def _check(self, manifest: dict) -> None:
        saved = manifest.get("identity", {})
        differ = sorted(k for k in set(saved) | set(self.identity)
                        if saved.get(k) != self.identity.get(k))
        if differ:
            what = []
            for key in differ:
                old, new = saved.get(key), self.identity.get(key)
                if isinstance(old, dict) and isinstance(new, dict):
                    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                    what.append(f"{key} ({', '.join(keys)})")
                else:
                    what.append(key)
            raise ValueError(f"checkpoint={str(self.path)!r} belongs to a different run: its "
                             f"{', '.join(what)} differ from this call's. To resume that run, "
                             "call fit_batch with the same inputs and options; to start a new "
                             "one, give another checkpoint path or delete this directory")
        if manifest.get("chunks") != self.chunks:
            old = manifest.get("chunks") or []
            raise ValueError(f"checkpoint={str(self.path)!r} cut the fits into {len(old)} "
                             f"chunk(s) (first {old[:1]}) but this call cuts them into "
                             f"{len(self.chunks)} (first {self.chunks[:1]}); pass the same "
                             "chunk_size= (or the same dask chunks) as the run that wrote it, "
                             "or give another checkpoint path")

    def _chunk_name(self, index: int) -> str:
        return f"chunk-{index:06d}.npz"

    def _remove_partial_writes(self) -> None:
        """Temporary files of a run killed mid-write: ours by name, never renamed into place."""
        for stray in self.path.glob(".autofit-*.tmp"):
            stray.unlink(missing_ok=True)

    def _write_atomic(self, name: str, write) -> None:
        write_atomic(self.path / name, write)

    def finished(self) -> list[int]:
        """Indexes of the chunks whose files exist."""
        return [i for i in range(len(self.chunks)) if (self.path / self._chunk_name(i)).is_file()]

    def save(self, index: int, arrays: dict, meta: dict | None = None) -> None:
        """Store one finished chunk's arrays (and JSON-able ``meta``) atomically."""
        payload = dict(arrays)
        payload[_META] = np.array(json.dumps(meta or {}))
        self._write_atomic(self._chunk_name(index), lambda f: np.savez(f, **payload))

    def load(self, index: int, leading: tuple[int, ...]):
        """``(arrays, meta)`` of a finished chunk, or None when its file is missing, damaged
        or not shaped ``leading + ...`` (the chunk is then computed again)."""
        try:
            with np.load(self.path / self._chunk_name(index), allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        meta = arrays.pop(_META, None)
        if meta is None or any(a.shape[:len(leading)] != tuple(leading)
                               for a in arrays.values()):
            return None
        return arrays, json.loads(str(meta))
