"""NIST StRD certified problems, default options, every backend.

Goals: every (problem, start) pair reaches minimum parameter LRE >= 4, at least 50 of 54
reach LRE >= 6, and at least 50 of 54 standard errors reach LRE >= 4. (scipy's curve_fit
with defaults: 45/54 at >= 4 and 29/54 at >= 6 on this data.)
"""

import pytest

from autofit.selftest import nist
from tests.conftest import SHARED, backend_params

DATA = SHARED / "nist_strd"
pytestmark = pytest.mark.skipif(not (DATA / "nist_strd.json").exists(),
                                reason=f"NIST reference data not found at {DATA} (it lives in "
                                       "../shared beside the repository clone)")

_scores: dict[str, list] = {}


def scores(backend):
    if backend not in _scores:
        _scores[backend] = nist.score_all(DATA, backend)
    return _scores[backend]


@pytest.mark.parametrize("backend", backend_params())
def test_every_pair_reaches_four_digits(backend):
    failing = [f"{s.problem}/{s.start}: LRE {s.lre:.1f} {s.error or ''}"
               for s in scores(backend) if s.lre < 4]
    assert not failing, failing


@pytest.mark.parametrize("backend", backend_params())
def test_at_least_50_pairs_reach_six_digits(backend):
    counts = nist.summary(scores(backend))
    assert counts["pairs"] == 54
    assert counts["lre>=6"] >= 50, nist.format_table({backend: scores(backend)})


@pytest.mark.parametrize("backend", backend_params())
def test_at_least_50_standard_errors_reach_four_digits(backend):
    assert nist.summary(scores(backend))["std>=4"] >= 50, nist.format_table(
        {backend: scores(backend)})


def test_lre_scoring():
    assert nist.lre([1.0], [1.0]) == nist.LRE_CAP
    assert abs(nist.lre([1.0001], [1.0]) - 4.0) < 1e-6
    assert nist.lre([2.0], [1.0]) == 0.0
    assert nist.lre([float("nan")], [1.0]) == 0.0
