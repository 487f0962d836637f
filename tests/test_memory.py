"""glibc's malloc thresholds that autofit sets at import (autofit._memory)."""

import json
import os
import subprocess
import sys

import pytest

import autofit  # noqa: F401  (sets them)
from autofit import _memory


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):
        return False


needs_glibc = pytest.mark.skipif(not _glibc(), reason="malloc's thresholds are glibc's")

# A pass of the NumPy engine in miniature: twenty arrays of 30,000 points made and freed,
# fifty times; the page faults it takes (resource's count of minor faults).
_PASSES = """
import json, resource, sys
import numpy as np
import autofit
x = np.linspace(0.0, 1.0, 30_000)
for _ in range(3):  # (numpy's and autofit's own first allocations)
    arrays = [x * k for k in range(20)]
    del arrays
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    arrays = [x * k for k in range(20)]
    del arrays
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
from autofit import _memory
print(json.dumps({"faults": after - before, "report": _memory.malloc_report()}))
"""


def _passes(**environment):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FFIT_")}
    env.update(environment)
    done = subprocess.run([sys.executable, "-c", _PASSES], capture_output=True, text=True,
                          env=env, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_glibc
def test_the_arrays_of_a_pass_come_back_without_page_faults():
    tuned = _passes()
    assert "below 32 MiB from the heap" in tuned["report"]
    untouched = _passes(FFIT_SYSTEM_MALLOC="1")
    assert "FFIT_SYSTEM_MALLOC is set" in untouched["report"]
    # 50 rounds of 20 arrays of 240 kB: glibc's own settings fault their pages in again
    # (each array of 128 kiB or more a fresh mapping); tuned, the heap keeps them.
    assert tuned["faults"] < 100
    assert untouched["faults"] > 10 * max(tuned["faults"], 10)


@needs_glibc
def test_this_process_was_set_at_import():
    assert _memory.malloc_report() == _memory.tune_malloc()
    if os.environ.get("FFIT_SYSTEM_MALLOC", "").strip().lower() in ("1", "true", "yes",
                                                                    "on"):
        assert "FFIT_SYSTEM_MALLOC is set" in _memory.malloc_report()
    else:
        assert f"{_memory.TRIM_THRESHOLD >> 20} MiB of free heap kept" in (
            _memory.malloc_report())


def test_another_c_library_keeps_its_settings(monkeypatch):
    monkeypatch.delenv("FFIT_SYSTEM_MALLOC", raising=False)
    monkeypatch.setattr(os, "confstr", lambda name: "musl 1.2")
    try:
        assert "not glibc" in _memory.tune_malloc()
    finally:
        monkeypatch.undo()
        _memory.tune_malloc()
