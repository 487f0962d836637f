"""Users' own NumPy models on a single fit: the quick start and the compiled numba driver.

The default rule answers a new user model on the NumPy engine while numba compiles it in
the background, then runs it compiled; ``backend="numba"`` compiles at once. Models written
the ways people write them (``*params``, loops over peaks, ``np.full_like``, ``np.where``,
``math`` calls, closures over constants) run on numba without falling back and agree with
the NumPy reference.
"""

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import autofit
from tests.conftest import backend_params, installed

needs_numba = pytest.mark.skipif(not installed("numba"), reason="numba is not installed")


def odmr(f, *p):
    out = np.full_like(f, p[24])
    for i in range(8):
        depth, centre, width = p[3 * i], p[3 * i + 1], p[3 * i + 2]
        out = out - depth * width ** 2 / ((f - centre) ** 2 + width ** 2)
    return out


def _closure(scale):
    def decay(x, a, b):
        return scale * a * np.exp(-b * x)

    return decay


def with_math(x, a, b, c):
    return a * np.exp(-x / b) * math.cos(0.5) + c


def ramp(x, a, b, c):
    return np.where(x > b, a * (x - b), 0.0) + c


def _odmr_problem():
    f = np.linspace(2.80, 2.95, 200)
    truth = []
    for i in range(8):
        truth += [0.02, 2.81 + 0.017 * i, 0.003]
    truth = np.array(truth + [1.0])
    y = odmr(f, *truth) + 1e-3 * np.random.default_rng(0).normal(size=f.size)
    p0 = truth * (1 + 0.01 * np.random.default_rng(1).normal(size=truth.size))
    p0[1:24:3] = truth[1:24:3] + 5e-4
    return f, y, p0


def _styles():
    x = np.linspace(0, 4, 300)
    f, y, p0 = _odmr_problem()
    closed = _closure(2.0)
    return [
        pytest.param(odmr, f, y, p0, id="star-params-loop-full_like"),
        pytest.param(closed, x, closed(x, 1.5, 0.7), [1.0, 1.0], id="closure"),
        pytest.param(with_math, x, with_math(x, 1.5, 0.7, 0.2), [1.0, 1.0, 0.0], id="math"),
        pytest.param(ramp, x, ramp(x, 1.5, 2.0, 0.2), [1.0, 1.9, 0.0], id="where"),
    ]


@needs_numba
@pytest.mark.parametrize("model, x, y, p0", _styles())
def test_user_model_styles_run_on_numba_without_fallback(model, x, y, p0):
    reference = autofit.curve_fit(model, x, y, p0=p0, backend="numpy", full_output=True)
    popt, _, info, _, _ = autofit.curve_fit(model, x, y, p0=p0, backend="numba",
                                            strict=True, full_output=True)
    assert info["backend"] == "numba"
    # The same minimum: χ² equal to rounding (relative to the data's scale), parameters close.
    scale = np.sum(np.asarray(y) ** 2)
    assert abs(info["chi2"] - reference[2]["chi2"]) <= 1e-12 * scale
    np.testing.assert_allclose(popt, reference[0], rtol=1e-5, atol=1e-9)


@needs_numba
def test_explicit_numba_compiles_at_once_and_reports_it():
    def shifted(x, a, b):
        return a * (x - b) ** 2

    x = np.linspace(-1, 1, 50)
    *_, info, _, _ = autofit.curve_fit(shifted, x, shifted(x, 2.0, 0.3), p0=[1, 0],
                                       backend="numba", full_output=True)
    assert info["backend"] == "numba"
    assert "quick start" not in info["backend_reason"]


@needs_numba
def test_a_fit_too_large_for_the_numpy_engine_compiles_at_once(monkeypatch):
    # Beyond QUICK_START_MAX_EVALUATIONS the NumPy engine would answer later than numba's
    # compilation (20,000,000 points: 6.5 s against 2.3 s): the default rule compiles.
    from autofit import _curve_fit

    def tilted(x, a, b, c):
        return a * np.exp(-b * x) + c * x

    x = np.linspace(0, 4, 2000)
    monkeypatch.setattr(_curve_fit, "QUICK_START_MAX_EVALUATIONS", 4 * x.size - 1)
    *_, info, _, _ = autofit.curve_fit(tilted, x, tilted(x, 2.0, 1.3, 0.1), p0=[1, 1, 0],
                                       full_output=True)
    assert info["backend"] == "numba"
    assert "no quick start" in info["backend_reason"]
    assert "8,000 point evaluations" in info["backend_reason"]
    monkeypatch.setattr(_curve_fit, "QUICK_START_MAX_EVALUATIONS", 4 * x.size)

    def tilted_again(x, a, b, c):
        return a * np.exp(-b * x) + c * x

    *_, info, _, _ = autofit.curve_fit(tilted_again, x, tilted(x, 2.0, 1.3, 0.1),
                                       p0=[1, 1, 0], full_output=True)
    assert info["backend"] == "numpy" and "quick start" in info["backend_reason"]
    autofit.wait_for_compilation(timeout=300)


@needs_numba
def test_a_huge_robust_fit_has_the_quick_start_up_to_its_own_size(monkeypatch):
    # A robust fit on the fused pass (here from 500 points on): the NumPy engine answers
    # while numba compiles, up to QUICK_START_MAX_EVALUATIONS_ROBUST; beyond it, numba.
    from autofit import _curve_fit

    monkeypatch.setattr(_curve_fit, "FUSED_MIN_POINTS", 500)
    x = np.linspace(0, 4, 2000)
    y = 2.0 * np.exp(-1.3 * x) + 0.1 * x + 0.01 * np.random.default_rng(2).normal(size=x.size)
    y[::40] += 1.0  # spikes

    def first(x, a, b, c):
        return a * np.exp(-b * x) + c * x

    def second(x, a, b, c):
        return a * np.exp(-b * x) + c * x

    fits = {}
    for model, limit in ((first, 4 * x.size), (second, 4 * x.size - 1)):
        monkeypatch.setattr(_curve_fit, "QUICK_START_MAX_EVALUATIONS_ROBUST", limit)
        popt, _, info, _, _ = autofit.curve_fit(model, x, y, p0=[1, 1, 0], loss="soft_l1",
                                                f_scale=0.01, method="trf", full_output=True)
        fits[model.__name__] = popt, info
    assert fits["first"][1]["backend"] == "numpy"
    assert "quick start" in fits["first"][1]["backend_reason"]
    assert fits["second"][1]["backend"] == "numba"
    assert "no quick start" in fits["second"][1]["backend_reason"]
    np.testing.assert_allclose(fits["first"][0], fits["second"][0], rtol=1e-6)
    np.testing.assert_allclose(fits["first"][0], [2.0, 1.3, 0.1], rtol=0.05)
    autofit.wait_for_compilation(timeout=300)


@needs_numba
def test_the_quick_start_keeps_copies_of_a_few_points_not_the_calls_arrays(monkeypatch):
    # What the quick start keeps for its compilation (maybe for good: a model the NumPy
    # engine answers in less than QUICK_START_COMPILE_AFTER_S) must not hold the call's
    # data: a view of 64 points kept a 1e6-point fit's x and y (16 MB) alive.
    import inspect

    from autofit import _curve_fit, _dispatch

    monkeypatch.setattr(_curve_fit, "FUSED_MIN_POINTS", 500)
    x = np.linspace(0, 4, 2000)
    y = 2.0 * np.exp(-1.3 * x) + 0.1 + 0.01 * np.random.default_rng(3).normal(size=x.size)

    def kept(x, a, b, c):
        return a * np.exp(-b * x) + c

    *_, info, _, _ = autofit.curve_fit(kept, x, y, p0=[1, 1, 0], full_output=True)
    assert info["backend"] == "numpy" and "quick start" in info["backend_reason"]
    rows = np.stack([y[:200]] * 6)
    batch = autofit.fit_batch(kept, x[:200], rows, np.tile([1.0, 1.0, 0.0], (6, 1)),
                              progress=False)
    assert batch.backend == "numpy"
    states = [state for key, state in _dispatch._warm_ups.items() if key[1] == id(kept)]
    fused = next(state.start.args[6] for state in states if state.start.args[6] is not None)
    warm_up = next(state.start.args[7] for state in states if state.start.args[7] is not None)
    sample = inspect.getclosurevars(warm_up).nonlocals["sample"]
    for kept_array in (*fused, sample.x, sample.y, sample.weights, sample.p0):
        for data in (x, y, rows):
            assert not np.shares_memory(kept_array, data)
    assert fused[1].shape == (64,) and sample.y.shape == (4, 200)
    autofit.wait_for_compilation(timeout=300)


@needs_numba
def test_a_first_call_refused_at_p0_still_counts_for_the_compilation():
    # The quick start's state is created before the model is checked at p0: a first call
    # refused there (nan at p0) must still register the model's compilation (which
    # wait_for_compilation starts), else later calls of the model ran on numpy for good
    # and wait_for_compilation never returned True.
    def rooted(x, a, b):
        return a * np.sqrt(b) * x + 1.0

    x = np.linspace(0, 1, 200)
    with pytest.raises(ValueError, match="non-finite"), np.errstate(invalid="ignore"):
        autofit.curve_fit(rooted, x, rooted(x, 2.0, 4.0), p0=[1.0, -1.0])
    assert autofit.wait_for_compilation(timeout=300) is True
    *_, info, _, _ = autofit.curve_fit(rooted, x, rooted(x, 2.0, 4.0), p0=[1.0, 1.0],
                                       full_output=True)
    assert info["backend"] == "numba"


@needs_numba
def test_fit_batch_of_a_new_model_quick_starts_below_its_size_limit(monkeypatch):
    # A user's model in a batch on the default rule: the NumPy engine answers the first
    # call while numba compiles its batched passes; once compiled, numba, with the same
    # fits. Beyond QUICK_START_MAX_EVALUATIONS (fits x points x (parameters + 1)) numba
    # compiles at once.
    from autofit import _batch

    def bump(x, a, mu, c):
        return a * np.exp(-((x - mu) ** 2)) + c

    def bump_too(x, a, mu, c):
        return a * np.exp(-((x - mu) ** 2)) + c

    x = np.linspace(-3, 3, 50)
    truth = np.column_stack([np.linspace(1, 2, 6), np.linspace(-0.5, 0.5, 6), np.full(6, 0.2)])
    y = np.stack([bump(x, *t) for t in truth])
    first = autofit.fit_batch(bump, x, y, truth * 1.1, progress=False)
    assert first.backend == "numpy" and "quick start" in first.backend_reason
    assert autofit.wait_for_compilation(timeout=300) is True
    second = autofit.fit_batch(bump, x, y, truth * 1.1, progress=False)
    assert second.backend == "numba" and "quick start" not in second.backend_reason
    np.testing.assert_allclose(second.params, first.params, rtol=1e-7)
    np.testing.assert_allclose(first.params, truth, rtol=1e-6)
    monkeypatch.setattr(_batch, "QUICK_START_MAX_EVALUATIONS", 6 * 50 * 4 - 1)
    big = autofit.fit_batch(bump_too, x, y, truth * 1.1, progress=False)
    assert big.backend == "numba" and "no quick start" in big.backend_reason


@needs_numba
def test_a_model_numba_cannot_compile_falls_back_with_the_reason():
    def needs_python(x, a, b):
        return a * np.array([float(str(v)) for v in x]) + b  # str() does not compile

    x = np.linspace(0, 1, 20)
    with pytest.warns(autofit.BackendFallbackWarning, match="numba cannot compile"):
        popt, _ = autofit.curve_fit(needs_python, x, 3 * x + 1, p0=[1, 0], backend="numba")
    np.testing.assert_allclose(popt, [3, 1], rtol=1e-10)


_QUICK_START = textwrap.dedent("""
    import json, time
    import numpy as np
    import autofit

    def decay(x, a, b, c):
        return a * np.exp(-b * x) + c

    x = np.linspace(0, 4, 1000)
    y = decay(x, 2.5, 1.3, 0.5) + 0.01 * np.random.default_rng(0).normal(size=x.size)
    before = autofit.explain_backend(model=decay)
    first = autofit.curve_fit(decay, x, y, p0=[1, 1, 0], full_output=True)
    during = autofit.explain_backend(model=decay)
    ready = autofit.wait_for_compilation(timeout=300)
    # ... with lm_solve's model and Jacobian built from the point functions, which a fit
    # takes when the fused pass stalls (hard multi-peak starts): compiled in the background
    # too, after the fused pass.
    from autofit import _forward_mode
    from autofit.numba import host
    value, _ = _forward_mode.point_functions(decay, 3, 1)
    points_ready = (3, 1, "points") in host._table(value)
    second = autofit.curve_fit(decay, x, y, p0=[1, 1, 0], full_output=True)
    # decay has exact derivatives (generated from its source): numba ran it on the fused
    # pass, which fused=True therefore finds compiled.
    fused_decay = autofit.curve_fit(decay, x, y, p0=[1, 1, 0], fused=True, full_output=True)

    # A model whose derivatives cannot be generated (a while loop): the fused pass with
    # finite differences has a quick start of its own.
    def decay_by_helper(x, a, b, c):
        total, k = np.full_like(x, c), 0
        while k < 1:
            total = total + a * np.exp(-b * x)
            k += 1
        return total

    fused_first = autofit.curve_fit(decay_by_helper, x, y, p0=[1, 1, 0], fused=True,
                                    full_output=True)
    autofit.wait_for_compilation(timeout=300)
    fused_second = autofit.curve_fit(decay_by_helper, x, y, p0=[1, 1, 0], fused=True,
                                     full_output=True)
    # A robust loss runs on the batched passes, which have a quick start of their own.
    def peak(x, a, mu, s, c):
        return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + c

    y_peak = peak(x, 2.0, 2.0, 0.5, 0.3) + 0.01 * np.random.default_rng(1).normal(size=x.size)
    y_peak[::50] += 3.0  # spikes
    robust = [autofit.curve_fit(peak, x, y_peak, p0=[1.5, 1.8, 0.6, 0.0], loss="soft_l1",
                                f_scale=0.01, method="trf", full_output=True)]
    robust_during = autofit.explain_backend(model=peak)
    autofit.wait_for_compilation(timeout=300)
    robust.append(autofit.curve_fit(peak, x, y_peak, p0=[1.5, 1.8, 0.6, 0.0], loss="soft_l1",
                                    f_scale=0.01, method="trf", full_output=True))
    print(json.dumps({
        "robust": [[r[2]["backend"], r[2]["backend_reason"], r[0].tolist()] for r in robust],
        "robust_during": robust_during,
        "fused_decay": [fused_decay[2]["backend"], fused_decay[2]["backend_reason"]],
        "fused": [fused_first[2]["backend"], fused_second[2]["backend"],
                  fused_first[0].tolist(), fused_second[0].tolist()],
        "before": before, "during": during, "ready": ready, "points_ready": points_ready,
        "after": autofit.explain_backend(model=decay),
        "first": [first[2]["backend"], first[2]["backend_reason"], first[0].tolist(),
                  first[2]["chi2"]],
        "second": [second[2]["backend"], second[2]["backend_reason"], second[0].tolist(),
                   second[2]["chi2"]],
    }))
""")


@needs_numba
def test_quick_start_numpy_answers_then_numba_runs_the_compiled_model(tmp_path):
    script = tmp_path / "quick_start.py"
    script.write_text(_QUICK_START)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("FFIT_")}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=600, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "quick start" in report["before"] and "not compiled yet" in report["before"]
    backend, reason, params, chi2 = report["first"]
    assert backend == "numpy" and "quick start" in reason and "'numba'" in reason
    assert report["ready"] is True and report["points_ready"] is True
    assert "compiled for 'numba'" in report["after"]
    backend2, reason2, params2, chi2_2 = report["second"]
    assert backend2 == "numba" and "quick start" not in reason2
    assert "derivatives: exact" in reason2
    assert report["fused_decay"][0] == "numba"
    assert "derivatives: exact" in report["fused_decay"][1]
    np.testing.assert_allclose(params2, params, rtol=1e-7)
    assert abs(chi2_2 - chi2) <= 1e-12 * chi2
    first_backend, second_backend, fused_params, fused_params2 = report["fused"]
    assert (first_backend, second_backend) == ("numpy", "numba")
    np.testing.assert_allclose(fused_params2, fused_params, rtol=1e-7)
    # A robust fit: numpy answers while numba compiles the batched passes, then numba.
    (robust_backend, robust_reason, robust_params), (robust_backend2, robust_reason2,
                                                      robust_params2) = report["robust"]
    assert robust_backend == "numpy" and "quick start" in robust_reason
    # explain_backend knows the batched passes' road: the NumPy engine answered the model
    assert "'numpy' has answered it" in report["robust_during"]
    assert robust_backend2 == "numba" and "quick start" not in robust_reason2
    np.testing.assert_allclose(robust_params2, robust_params, rtol=1e-7)
    np.testing.assert_allclose(robust_params, [2.0, 2.0, 0.5, 0.3], rtol=0.01)


# Another process loads a points module (its path in FFIT_CACHE_DIR): numba's cache hits
# and misses of its model and jacobian.
_LOAD_POINTS = """
import importlib.util, json, os, sys
path = os.path.join(os.environ["FFIT_CACHE_DIR"], "{name}.py")
spec = importlib.util.spec_from_file_location("{name}", path)
module = importlib.util.module_from_spec(spec)
sys.modules["{name}"] = module
spec.loader.exec_module(module)
print(json.dumps([[sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values())]
                  for f in (module.model, module.jacobian)]))
"""


def _peak_on_a_slope(x, a, mu, s, b):
    return a * np.exp(-((x - mu) / s) ** 2) + b * x


@needs_numba
def test_a_child_process_compiles_a_models_passes_for_this_one_to_load(tmp_path,
                                                                       monkeypatch):
    # The quick start's background compilation (autofit._elsewhere): the child compiles
    # the generated passes into the disk cache (curve_fit's fused pass; fit_batch's and a
    # robust curve_fit's batched passes), and this process then loads them from there.
    from autofit import _batch, _elsewhere, _forward_mode
    from autofit.numba import host

    monkeypatch.setenv("FFIT_CACHE_DIR", str(tmp_path))  # a cache that has nothing yet
    x = np.linspace(-3, 3, 40)
    p0 = np.array([1.0, 0.2, 0.8, 0.1])
    y = _peak_on_a_slope(x, 1.2, 0.0, 1.0, 0.05)
    sample = (x, y, np.ones(1), p0, np.full(4, -np.inf), np.full(4, np.inf))
    exact, _ = _forward_mode.exact_or_none(_peak_on_a_slope, 4, 1, x, p0)
    job = _elsewhere.fused_work("autofit.numba.host", exact, 4, sample)
    assert job["arguments"]["value_source"] == exact[0].generated_source
    assert not _forward_mode.is_compiled_on_disk(exact, "fused")
    assert _elsewhere.compile_in_child(job) is True
    assert _forward_mode.is_compiled_on_disk(exact, "fused")  # the child's marker
    written = sorted(path.name for path in tmp_path.glob("autofit_chunk_*.py"))
    assert len(written) == 1
    host.compile_fused(_peak_on_a_slope, 4, *sample)  # loads the child's module
    assert host.fused_compiled(*exact, 4)
    assert sorted(path.name for path in tmp_path.glob("autofit_chunk_*.py")) == written
    loaded = sys.modules[written[0][:-3]].chunk_sums.stats
    assert sum(loaded.cache_hits.values()) == 1 and not loaded.cache_misses  # not compiled
    # lm_solve's model and Jacobian from the point functions (what a fit stalled in a
    # curved valley takes) are compiled here, into the disk cache, where another process
    # (a script run again) loads them.
    assert not list(tmp_path.glob("autofit_points_*.py"))
    host.prepare_points(*exact, 4, 1)
    points = sorted(path.name for path in tmp_path.glob("autofit_points_*.py"))
    assert len(points) == 1
    loaded = subprocess.run(
        [sys.executable, "-c", _LOAD_POINTS.format(name=points[0][:-3])], capture_output=True,
        text=True, env={**os.environ, "FFIT_CACHE_DIR": str(tmp_path)}, timeout=300,
        check=True)
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == [[1, 0], [1, 0]]

    # The batched passes of a robust fit of two curves.
    problem = _batch.Problem.build(_peak_on_a_slope, x, np.stack([y, 1.1 * y]),
                                   np.stack([p0, p0]), None, (-np.inf, np.inf), None, "lse",
                                   None, None, None, np.float64, loss="cauchy")
    job = _elsewhere.batch_work("autofit.numba.host", problem.exact()[0], problem)
    assert job["arguments"]["estimator"] == problem.estimator
    assert not _forward_mode.is_compiled_on_disk(exact, "batch")
    assert _elsewhere.compile_in_child(job) is True
    assert _forward_mode.is_compiled_on_disk(exact, "batch")
    result = autofit.fit_batch(_peak_on_a_slope, x, np.stack([y, 1.1 * y]),
                               np.stack([p0, p0]), loss="cauchy", backend="numba",
                               progress=False)
    assert np.all(result.converged)

    # A model without generated derivatives has nothing a child could compile: the quick
    # start is given no job for it.
    assert _forward_mode.exact_or_none(np.polyval, 2, 1, x, p0[:2])[0] is None


def test_explicit_choices_are_never_second_guessed():
    def line(x, a, b):
        return a * x + b

    x = np.linspace(0, 1, 30)
    with autofit.use_backend("numpy"):
        *_, info, _, _ = autofit.curve_fit(line, x, 2 * x + 1, full_output=True)
    assert info["backend"] == "numpy" and "use_backend" in info["backend_reason"]
    assert "quick start" not in info["backend_reason"]


# --------------------------------------------------------------------------------------
# Batches of users' models: no fallback on the compiled engines
# --------------------------------------------------------------------------------------

def _odmr_batch(n_fits=6):
    f, _, _ = _odmr_problem()
    rng = np.random.default_rng(2)
    truth = np.array([v for i in range(8) for v in (0.02, 2.81 + 0.017 * i, 0.003)] + [1.0])
    params = truth * (1 + 0.1 * rng.normal(size=(n_fits, 25)))
    params[:, 1:24:3] = truth[1:24:3] + 0.001 * rng.normal(size=(n_fits, 8))
    params[:, 24] = 1.0
    y = np.stack([odmr(f, *p) for p in params]) + 1e-3 * rng.normal(size=(n_fits, f.size))
    return f, y, np.broadcast_to(truth, (n_fits, 25)).copy()


@pytest.mark.parametrize("backend", [pytest.param("numba", marks=needs_numba),
                                     pytest.param("jax", marks=pytest.mark.skipif(
                                         not installed("jax"), reason="jax is not installed"))])
def test_batch_of_a_loop_over_peaks_model_runs_without_fallback(backend, monkeypatch):
    f, y, p0 = _odmr_batch()
    reference = _reference_batch(monkeypatch, odmr, f, y, p0=p0)
    res = autofit.fit_batch(odmr, f, y, p0=p0, backend=backend, strict=True)
    assert res.backend == backend
    if backend == "jax":
        assert "translated to jax.numpy" in res.backend_reason
    # Both compiled engines take the derivatives generated from the model's source.
    assert "derivatives: exact" in res.backend_reason
    np.testing.assert_array_equal(res.status, reference.status)
    assert np.all(res.converged)
    np.testing.assert_allclose(res.chi2, reference.chi2, rtol=1e-6)
    np.testing.assert_allclose(res.params, reference.params, rtol=1e-5, atol=1e-8)


@pytest.mark.skipif(not installed("jax"), reason="jax is not installed")
def test_jax_batches_from_two_threads_at_once_finish_as_one_after_the_other():
    """Two fit_batch calls on jax from two threads (a user's thread pool, dask's threaded
    scheduler): both finish, with the results of the same calls made in turn. (Two batch
    programs running at once left XLA:CPU's thread pool wedged, both callers waiting for
    ever; autofit.jax.host now runs one batch program at a time.)"""
    import threading

    f, y, p0 = _odmr_batch(n_fits=200)
    halves = [slice(0, 100), slice(100, 200)]
    alone = [autofit.fit_batch(odmr, f, y[h], p0[h], backend="jax", progress=False)
             for h in halves]
    together = [None, None]

    def fit(k):
        together[k] = autofit.fit_batch(odmr, f, y[halves[k]], p0[halves[k]], backend="jax",
                                        progress=False)

    threads = [threading.Thread(target=fit, args=(k,), daemon=True) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a batch never finished"
    for one, other in zip(alone, together, strict=True):
        np.testing.assert_array_equal(other.params, one.params)
        np.testing.assert_array_equal(other.status, one.status)


def shifted_start(x, a, b):
    # Reads x[0]: numba cannot run it one point at a time, only on whole arrays.
    return a * np.exp(-b * (x - x[0]))


def raises_for_large_amplitude(x, a, b):
    if a > 5.0:
        raise ValueError("amplitude above 5")
    return a * np.exp(-b * (x - x[0]))


@needs_numba
def test_numba_batch_of_an_array_only_model_uses_the_array_engine():
    x = np.linspace(1.0, 4.0, 60)
    rng = np.random.default_rng(3)
    truth = np.column_stack([rng.uniform(1, 3, 8), rng.uniform(0.5, 1.5, 8)])
    y = np.stack([shifted_start(x, *t) for t in truth]) + 1e-3 * rng.normal(size=(8, 60))
    reference = autofit.fit_batch(shifted_start, x, y, p0=[2.0, 1.0], backend="numpy")
    res = autofit.fit_batch(shifted_start, x, y, p0=[2.0, 1.0], backend="numba", strict=True)
    assert res.backend == "numba"
    np.testing.assert_array_equal(res.status, reference.status)
    np.testing.assert_allclose(res.params, reference.params, rtol=1e-7)
    np.testing.assert_allclose(res.covariance, reference.covariance, rtol=1e-5, atol=1e-14)


@needs_numba
@pytest.mark.parametrize("loss", ["soft_l1", "huber", "cauchy", "arctan"])
def test_the_array_engine_follows_the_reference_under_a_robust_loss(loss):
    from autofit import _codes
    from autofit.numba import host
    from autofit.numba.array_batch import lm_batch_arrays
    from autofit.original.batch import lm_batch

    n_fits, n_points = 12, 60
    x = np.linspace(1.0, 4.0, n_points)
    rng = np.random.default_rng(5)
    truth = np.column_stack([rng.uniform(1, 3, n_fits), rng.uniform(0.5, 1.5, n_fits)])
    y = np.stack([shifted_start(x, *t) for t in truth]) + 1e-2 * rng.normal(
        size=(n_fits, n_points))
    for fit in range(n_fits):  # outliers: a few points of each fit off by about 1
        y[fit, rng.choice(n_points, size=5, replace=False)] += rng.choice([-1.0, 1.0], 5)
    weights = np.full((1, n_points), 1.0 / 0.05)  # f_scale 0.05, as fit_batch folds it in
    weights[0, 7] = 0.0
    p0 = truth * (1.0 + 0.1 * rng.normal(size=truth.shape))
    bounds = (np.full((1, 2), -np.inf), np.full((1, 2), np.inf))
    free = np.ones(2, dtype=bool)

    def run(solve, model, jacobian, estimator):
        return solve(model, jacobian, _codes.JAC_FORWARD, x[None, None, :], y, weights, p0,
                     *bounds, free, estimator, 1e-10, 200)

    model, jacobian = host.prepare(shifted_start, None, 2, 1)
    code = _codes.ROBUST_LOSSES[loss]
    params, chi2, _, status, covariance = run(lm_batch_arrays, model, jacobian, code)
    expected = run(lm_batch, lambda x, p: shifted_start(x, *p), None, code)
    np.testing.assert_array_equal(status, expected[3])
    assert np.isin(status, _codes.CONVERGED_CODES).all(), status
    np.testing.assert_allclose(params, expected[0], rtol=1e-7)
    np.testing.assert_allclose(chi2, expected[1], rtol=1e-9)
    np.testing.assert_allclose(covariance, expected[4], rtol=1e-5, atol=1e-14)
    # The loss is honoured: least squares on the same data lands elsewhere.
    least_squares = run(lm_batch_arrays, model, jacobian, _codes.ESTIMATOR_LSE)[0]
    assert np.max(np.abs(least_squares - params) / np.abs(params)) > 1e-3


@needs_numba
def test_a_model_raising_in_one_fit_of_a_numba_batch_spoils_no_other():
    x = np.linspace(1.0, 4.0, 60)
    y = np.stack([shifted_start(x, 2.0, 1.0), shifted_start(x, 2.0, 1.0)])
    p0 = np.array([[1.8, 1.1], [9.0, 1.0]])  # the second fit raises at its start
    res = autofit.fit_batch(raises_for_large_amplitude, x, y, p0=p0, backend="numba",
                            strict=True)
    assert res.backend == "numba"
    assert res.converged[0] and not res.converged[1]
    assert res.status[1] == autofit.Status.NONFINITE
    np.testing.assert_allclose(res.params[0], [2.0, 1.0], rtol=1e-8)


@needs_numba
def test_explain_backend_names_the_quick_start_for_a_new_model():
    def fresh(x, a):
        return a * x

    text = autofit.explain_backend(model=fresh)
    if autofit.get_backend() == "numba":  # the default rule on a CPU machine
        assert "quick start" in text and "not compiled yet" in text
    assert autofit.explain_backend("numpy", model=fresh) == autofit.explain_backend("numpy")


# --------------------------------------------------------------------------------------
# The NumPy engine: all fits in lockstep for models that broadcast
# --------------------------------------------------------------------------------------

def gaussian_offset(x, a, mu, s, c):
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + c


def _reference_batch(monkeypatch, *args, **kwargs):
    from autofit.original import host

    with monkeypatch.context() as patch:
        patch.setattr(host, "_broadcast_engine", lambda problem: None)
        return autofit.fit_batch(*args, backend="numpy", **kwargs)


def _gaussian_batch(n_fits=40, counts=False):
    x = np.linspace(-3, 3, 32)
    rng = np.random.default_rng(4)
    truth = np.column_stack([rng.uniform(1, 3, n_fits), rng.uniform(-1, 1, n_fits),
                             rng.uniform(0.5, 1, n_fits), rng.uniform(0.1, 0.5, n_fits)])
    clean = gaussian_offset(x, *[truth[:, j:j + 1] for j in range(4)])
    y = (rng.poisson(50 * clean).astype(float) if counts
         else clean + 0.05 * rng.normal(size=clean.shape))
    p0 = truth * (1 + 0.1 * rng.normal(size=truth.shape))
    if counts:
        p0[:, [0, 3]] *= 50
    y[3, 5] = np.nan            # not attempted: NONFINITE_DATA
    return x, y, p0


@pytest.mark.parametrize("variant", ["lse", "bounded-fixed", "mle", "per-fit-x-sigma"])
def test_numpy_broadcast_engine_follows_the_reference(variant, monkeypatch):
    from autofit.original import host

    x, y, p0 = _gaussian_batch(counts=variant == "mle")
    kwargs = {"p0": p0}
    if variant == "bounded-fixed":
        kwargs.update(bounds=([0, -2, 0.1, 0], [2.2, 2, 2, 1]),
                      fixed=[False, False, True, False])
        kwargs["p0"] = np.clip(p0, [0, -2, 0.1, 0], [2.2, 2, 2, 1])
    if variant == "mle":
        kwargs["estimator"] = "mle"
    if variant == "per-fit-x-sigma":
        x = np.broadcast_to(x, y.shape) + 0.01 * np.arange(y.shape[0])[:, None]
        kwargs["sigma"] = np.full(y.shape, 0.05)
    assert host._broadcast_engine is not None
    fast = autofit.fit_batch(gaussian_offset, x, y, backend="numpy", **kwargs)
    reference = _reference_batch(monkeypatch, gaussian_offset, x, y, **kwargs)
    # Which convergence test fires first (ftol, xtol, both) is decided by rounding at the
    # tolerance; every other status is the same.
    np.testing.assert_array_equal(fast.converged, reference.converged)
    np.testing.assert_array_equal(fast.status[~fast.converged],
                                  reference.status[~reference.converged])
    assert fast.status[3] == autofit.Status.NONFINITE_DATA
    assert np.count_nonzero(fast.converged) >= 35
    ok = reference.converged
    np.testing.assert_allclose(fast.chi2[ok], reference.chi2[ok], rtol=1e-7)
    # Rounding (einsum's sums against one fit's products) moves a converged fit by a tiny
    # fraction of its standard error.
    errors = np.where(reference.errors[ok] > 0, reference.errors[ok], 1.0)
    assert np.max(np.abs(fast.params[ok] - reference.params[ok]) / errors) < 1e-3
    # Covariances entry by entry against the scale of their row and column.
    scale = np.sqrt(np.einsum("kii->ki", reference.covariance[ok]))
    scale = scale[:, :, None] * scale[:, None, :]
    difference = np.abs(fast.covariance[ok] - reference.covariance[ok])
    assert np.all(difference <= 1e-4 * np.where(scale > 0, scale, 1.0))


@pytest.mark.parametrize("loss", ["soft_l1", "huber", "cauchy", "arctan"])
def test_numpy_broadcast_engine_follows_the_reference_with_robust_losses(loss):
    from autofit._codes import CONVERGED_CODES, JAC_FORWARD, ROBUST_LOSSES
    from autofit.original.batch import lm_batch
    from autofit.original.batch_broadcast import lm_batch_broadcast

    x, y, p0 = _gaussian_batch(n_fits=16)
    # Outliers (a few points of every fit off by a few amplitudes) put points in the
    # losses' outer parts; f_scale 0.1 is folded into the weights, as fit_batch does.
    rng = np.random.default_rng(11)
    for fit in range(y.shape[0]):
        where = rng.choice(x.size, size=3, replace=False)
        y[fit, where] += rng.choice([-1.0, 1.0], size=3) * rng.uniform(1.0, 3.0, size=3)
    weights = np.full((1, x.size), 1.0 / (0.05 * 0.1))
    weights[0, 7] = 0.0  # a point that must count for nothing
    lower = np.array([[0.0, -2.0, 0.1, -np.inf]])
    upper = np.array([[np.inf, 2.0, 2.0, np.inf]])
    p0 = np.clip(p0, lower, upper)
    free = np.array([True, True, True, True])
    args = (y, weights, p0, lower, upper, free, ROBUST_LOSSES[loss], 1e-10, 200)

    def model(x, p):
        return gaussian_offset(x, *p)

    fast = lm_batch_broadcast(gaussian_offset, x[None, :], *args)
    reference = lm_batch(model, None, JAC_FORWARD, x[None, None, :], *args)
    params, chi2, n_iter, status, covariance = reference
    if loss in ("cauchy", "arctan"):
        # (f_scale is a tenth of the noise here: every point is beyond it, and a fit may
        # crawl; of two paths split at rounding level, one may reach max_iter first.)
        differ = fast[3] != status
        assert np.count_nonzero(differ) <= 1
        assert np.all((fast[3][differ] == autofit.Status.MAX_ITERATIONS)
                      | (status[differ] == autofit.Status.MAX_ITERATIONS))
    else:
        np.testing.assert_array_equal(fast[3], status)
    if loss in ("cauchy", "arctan"):
        # Their costs bend down past f_scale, and once a fit has accepted a few steps its
        # H takes that bending (Newton's weight, negative there: _rules.pass_weighing):
        # some paths split at rounding level (the two engines sum in another order) and
        # meet at the same minimum a few iterations apart; the others are step for step.
        # (With f_scale a tenth of the noise, fits crawl for 50-200 iterations: arctan's
        # paths split in 6 of the 15 fits, cauchy's in 1; 5 and 2 when a robust fit's λ
        # started at 1e-3, as least squares' does.)
        assert np.count_nonzero(fast[2] != n_iter) <= (6 if loss == "arctan" else 3)
    else:
        np.testing.assert_array_equal(fast[2], n_iter)
    assert status[3] == autofit.Status.NONFINITE_DATA
    ok = np.isin(status, CONVERGED_CODES)
    assert np.count_nonzero(ok) >= 13
    if loss in ("cauchy", "arctan"):
        # With forward differences (rounding ~1e-8 of J, summed in another order) and λ set
        # by the gain ratio, one such split may end at another minimum of arctan's cost;
        # every other fit at the same one.
        same = np.isclose(fast[1][ok], chi2[ok], rtol=1e-10, atol=0.0)
        # (1 on an AMD EPYC, 2 on an Intel Xeon: the rounding of NumPy's exp differs.)
        assert np.count_nonzero(~same) <= 2, (fast[1][ok], chi2[ok])
        ok[ok] = same
    np.testing.assert_allclose(fast[1][ok], chi2[ok], rtol=1e-10)
    # The forward-difference Jacobian carries the model's rounding divided by its step
    # (~1e-8 |p|): a few 1e-6 of a standard error apart here, as least squares is.
    errors = np.sqrt(np.einsum("kii->ki", covariance[ok]))
    assert np.max(np.abs(fast[0][ok] - params[ok]) / errors) < 1e-5
    scale = errors[:, :, None] * errors[:, None, :]
    assert np.all(np.abs(fast[4][ok] - covariance[ok]) <= 1e-5 * scale)


def test_a_model_that_does_not_broadcast_runs_on_the_reference(monkeypatch):
    from autofit.original.batch_broadcast import broadcasts

    def first_point(x, a, b):
        return a * np.exp(-b * (x - x[0])) + 0 * float(a)  # float(column) cannot broadcast

    x = np.linspace(0, 1, 10)
    assert not broadcasts(first_point, x, np.array([[1.0, 1.0], [2.0, 1.0]]))
    assert broadcasts(gaussian_offset, x, np.array([[1.0, 0, 1, 0], [2.0, 0, 1, 0]]))
    y = np.stack([first_point(x, 2.0, 1.0), first_point(x, 1.0, 2.0)])
    res = autofit.fit_batch(first_point, x, y, p0=[1.5, 1.5], backend="numpy")
    np.testing.assert_allclose(res.params, [[2.0, 1.0], [1.0, 2.0]], rtol=1e-6)


@needs_numba
def test_users_exp_runs_the_vectorisable_exp_within_one_ulp():
    import numba

    from autofit.numba.host import with_vectorisable_exp

    def model(x, a, b):
        return a * np.exp(-b * x) + math.exp(b)

    rewritten = with_vectorisable_exp(model)
    assert "_exp_any" in rewritten.__code__.co_names  # the rewrite applied
    x = np.concatenate([np.linspace(-800, 800, 4001), [np.inf, -np.inf, np.nan, 0.0]])
    got = numba.njit(rewritten)(x, 1.0, 1.0)
    with np.errstate(over="ignore"):
        expected = model(x, 1.0, 1.0)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected) & (expected != 0)
    np.testing.assert_array_equal(got[~finite & ~np.isnan(expected)],
                                  expected[~finite & ~np.isnan(expected)])
    assert np.max(np.abs(got[finite] - expected[finite]) / np.abs(expected[finite])) <= 4.5e-16
    no_exp = with_vectorisable_exp(ramp)
    assert no_exp is ramp  # nothing to rewrite


def three_peaks(x, *p):
    out = np.full_like(x, p[-1])
    for k in range(len(p) // 3):
        a, c, w = p[3 * k:3 * k + 3]
        out = out + a * np.exp(-0.5 * ((x - c) / w) ** 2)
    return out


def _three_peaks_starts():
    """``experiments/user_models/hard_starts.py``'s data and starts 2-4: from start 2 the
    fit ends in a local minimum (χ² 6.4998, as scipy's), from 3 in the best one (4.8045),
    from 4 two peaks merge and the fused pass runs out of its budget."""
    rng = np.random.default_rng(7)
    x = np.linspace(0, 10, 2000)
    truth = np.array([1.0, 3.0, 0.5, 0.8, 4.0, 0.7, 0.6, 6.5, 0.4, 0.1])
    y = three_peaks(x, *truth) + 0.05 * rng.normal(size=x.size)
    starts = []
    for _ in range(5):
        p0 = truth * (1 + 0.3 * rng.normal(size=truth.size))
        p0[-1] = 0.0
        p0[[1, 4, 7]] = truth[[1, 4, 7]] + 0.4 * rng.normal(size=3)
        starts.append(p0)
    return x, y, starts[2:]


@pytest.mark.parametrize("backend", backend_params())
def test_every_backend_takes_one_road_to_one_minimum(backend):
    # A user's model below the huge sizes takes numba's road on every backend (the fused
    # pass within its budget, then lm_solve from p0): before, numpy and jax ran lm_solve
    # alone and reached χ² 4.8045 from start 2 where numba reached 6.4998.
    x, y, starts = _three_peaks_starts()
    expected = (6.499837, 4.804450, 4.804450)
    stalled = (False, False, True)
    for p0, chi2, runs_out in zip(starts, expected, stalled, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("error", autofit.BackendFallbackWarning)
            _, _, info, _, _ = autofit.curve_fit(three_peaks, x, y, p0=p0, backend=backend,
                                                 full_output=True)
        # numba cannot compile this model for whole arrays (p[3 * k:3 * k + 3] with a
        # run-time k): its lm_solve runs on the generated point functions, on numba.
        assert info["backend"] == backend
        assert info["chi2"] == pytest.approx(chi2, abs=1e-6)
        assert ("had not converged after 550 passes" in info["backend_reason"]) == runs_out
        if runs_out:  # the fused pass's evaluations are counted: 550 passes at least
            assert info["nfev"] > 550


def no_effect(x, a, b):
    return a * x + 0.0 * b


@pytest.mark.parametrize("backend", backend_params())
def test_a_parameter_without_effect_is_handed_to_lm_solve_on_every_backend(backend):
    # The fused pass's damping scales by diag(H), 0 for b: its matrix stays singular. The
    # fit is handed to lm_solve (a zero column keeps a scale of 1), whose covariance is the
    # pseudo-inverse, as scipy's 'trf' gives (numba ended SINGULAR here before).
    x = np.linspace(0, 5, 50)
    y = 0.7 * x + 0.01 * np.sin(7.0 * x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", autofit.BackendFallbackWarning)
        popt, pcov, info, _, _ = autofit.curve_fit(no_effect, x, y, p0=[1.0, 1.0],
                                                   backend=backend, full_output=True)
    assert "stopped at a singular matrix" in info["backend_reason"]
    assert popt[1] == 1.0 and pcov[1, 1] == 0.0
    slope = np.sum(x * y) / np.sum(x * x)
    assert popt[0] == pytest.approx(slope, rel=1e-12)
    assert pcov[0, 0] == pytest.approx(np.sum((y - slope * x) ** 2) / 48 / np.sum(x * x),
                                       rel=1e-6)


@pytest.mark.skipif(not installed("jax"), reason="jax is not installed")
def test_a_numpy_model_on_jax_is_checked_and_translated_once(monkeypatch):
    # A NumPy model cannot be traced: its failed trace raised and filtered a jax traceback
    # on every call (~3 ms of a 5 ms fit). The outcome is kept with the model.
    from autofit.jax import host

    def shifted_decay(x, a, b, c):
        return a * np.exp(-b * (x - 0.1)) + c

    x = np.linspace(0, 4, 200)
    y = shifted_decay(x, 2.0, 1.1, 0.3)
    traced = []
    real = host.check_compiles
    monkeypatch.setattr(host, "check_compiles", lambda *a: traced.append(1) or real(*a))
    reasons = []
    for _ in range(3):
        popt, _, info, _, _ = autofit.curve_fit(shifted_decay, x, y, p0=[1.0, 1.0, 0.0],
                                                backend="jax", full_output=True)
        np.testing.assert_allclose(popt, [2.0, 1.1, 0.3], rtol=1e-8)
        reasons.append(info["backend_reason"])
    assert len(traced) == 2  # the model as written, then its translation: once
    assert all(host.TRANSLATION_NOTE in reason for reason in reasons)


def _compiled(source):
    """A stand-in for ``_forward_mode.array_jacobian_code`` that compiles ``source``."""
    return lambda *args: compile(source, "<test derivatives>", "exec")


def two_bumps(x, *p):
    out = np.zeros_like(x) + p[6]
    for k in range(2):
        a, c, w = p[3 * k:3 * k + 3]
        bump = a * np.exp(-0.5 * ((x - c) / w) ** 2) if k == 0 else a / (1 + ((x - c) / w) ** 2)
        out = out + np.where(x > c - 10 * w, bump, 0.0)
    return out


def centred_decay(x, a, b):
    # A reduction over x: no derivative generated from the source; jax's autodiff instead.
    return a * np.exp(-b * (x - np.mean(x)))


@pytest.mark.skipif(not installed("jax"), reason="jax is not installed")
def test_jax_takes_the_derivatives_generated_from_a_numpy_models_source(monkeypatch):
    """jax runs a NumPy-written model translated to jax.numpy, with the Jacobian that
    autofit._forward_mode generates from its source (as numba does), on every point at
    once: the same columns as jax's autodiff of the translation; where no derivative can
    be generated, autodiff, and the reason says which."""
    import jax
    import jax.numpy as jnp

    from autofit import _forward_mode
    from autofit.jax import host

    x = np.linspace(-3.0, 5.0, 300)
    p0 = np.array([1.0, -0.5, 0.6, 0.7, 2.0, 0.4, 0.1])
    jacobian = host.exact_jacobian(two_bumps, 7, x, p0)
    assert jacobian is not None
    # jax's derivatives of the translation equal these: the batch's geodesic may take its
    # J u products from reverse mode (autofit.jax.batch._reverse_mode_agrees).
    assert jacobian.agrees_with_autodiff
    translated = host.translate(two_bumps)
    with jax.enable_x64(True):
        exact = np.asarray(jax.jit(jacobian)(jnp.asarray(x), jnp.asarray(p0)))
        autodiff = np.asarray(jax.jacfwd(lambda p: translated(jnp.asarray(x), *p))(
            jnp.asarray(p0)))
    assert exact.shape == (300, 7)
    np.testing.assert_allclose(exact, autodiff, rtol=1e-12, atol=1e-15)

    y = two_bumps(x, *(p0 * 1.05)) + 0.01 * np.random.default_rng(3).normal(size=(4, 300))
    result = autofit.fit_batch(two_bumps, x, y, np.tile(p0, (4, 1)), backend="jax",
                               strict=True, progress=False)
    assert "derivatives: exact" in result.backend_reason and np.all(result.converged)
    reference = autofit.fit_batch(two_bumps, x, y, np.tile(p0, (4, 1)), backend="numpy",
                                  progress=False)
    np.testing.assert_allclose(result.chi2, reference.chi2, rtol=1e-8)
    np.testing.assert_array_equal(result.n_iter, reference.n_iter)

    assert host.exact_jacobian(centred_decay, 2, x, np.array([1.0, 0.5])) is None
    y = centred_decay(x, 2.0, 0.3)
    result = autofit.fit_batch(centred_decay, x, np.stack([y, y]), np.array([[1.0, 0.5]] * 2),
                               backend="jax", strict=True, progress=False)
    assert "derivatives: exact" not in result.backend_reason
    np.testing.assert_allclose(result.params, [[2.0, 0.3]] * 2, rtol=1e-8)

    # Generated jax code that fails its check, or raises, is not used: autodiff instead.
    monkeypatch.setattr(_forward_mode, "array_jacobian_code", _compiled(
        "def jacobian(x, p):\n    raise RuntimeError('broken')\n"))
    assert host.exact_jacobian(two_bumps, 7, x, p0) is None
    monkeypatch.setattr(_forward_mode, "array_jacobian_code", _compiled(
        "def jacobian(x, p):\n    return _columns([p[0] * 0.0 + 1.0] * 7, _atleast_2d(x))\n"))
    assert host.exact_jacobian(two_bumps, 7, x, p0) is None


SCALE = 2.0


def scaled_decay(x, a, b):
    return SCALE * a * np.exp(-b * x)


@pytest.mark.skipif(not installed("jax"), reason="jax is not installed")
def test_a_changed_global_is_not_hidden_by_the_kept_check():
    # jax's translation holds the globals of its first call; the kept check is keyed on
    # the numbers the model names, so a changed one is checked again (and found out).
    global SCALE
    x = np.linspace(0, 4, 100)
    y = 2.0 * 1.5 * np.exp(-0.7 * x)
    popt, _ = autofit.curve_fit(scaled_decay, x, y, p0=[1.0, 1.0], backend="jax")
    np.testing.assert_allclose(popt, [1.5, 0.7], rtol=1e-8)
    SCALE = 3.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", autofit.BackendFallbackWarning)
            popt, _ = autofit.curve_fit(scaled_decay, x, y, p0=[1.0, 1.0], backend="jax")
    finally:
        SCALE = 2.0
    np.testing.assert_allclose(popt, [1.0, 0.7], rtol=1e-8)


def peak_with_constants(x, a, mu, *, width=1.0, offset=0.0):
    return a * np.exp(-((x - mu) / width) ** 2) + offset


@pytest.mark.parametrize("backend", backend_params())
def test_a_partial_with_keywords_runs_on_every_backend_without_falling_back(backend):
    # functools.partial binds a model's constants: numba and jax read or translate its
    # function (numba's batch crashed with numba's TypeError, jax fell back).
    import functools

    model = functools.partial(peak_with_constants, width=0.7, offset=0.1)
    x = np.linspace(-2, 2, 120)
    rng = np.random.default_rng(8)
    y = np.stack([model(x, 2.0, 0.3 + 0.1 * k) for k in range(3)]) + 0.01 * rng.normal(
        size=(3, x.size))
    with warnings.catch_warnings():
        warnings.simplefilter("error", autofit.BackendFallbackWarning)
        popt, _, info, _, _ = autofit.curve_fit(model, x, y[0], p0=[1.5, 0.0],
                                                backend=backend, full_output=True)
        batch = autofit.fit_batch(model, x, y, p0=[1.5, 0.0], backend=backend)
    assert info["backend"] == backend and batch.backend == backend
    assert batch.converged.all()
    np.testing.assert_allclose(batch.params[0], popt, rtol=1e-6)
    np.testing.assert_allclose(batch.params[:, 1], [0.3, 0.4, 0.5], atol=0.01)


@pytest.mark.parametrize("loss", ["soft_l1", "arctan"])
def test_numpy_broadcast_engine_a_fit_alone_or_in_company(loss):
    """The broadcast engine's fits do not depend on the others of their batch: fits 0-3 in
    a batch of 4 and of 16 (which end at other times) are the same, bit for bit. A single
    fit (a robust curve_fit) solves its systems with the reference's own ``cholesky_solve``
    (the vectorised solve cost it 131 against 37 us a system): the reference's path."""
    from autofit._codes import JAC_FORWARD, ROBUST_LOSSES
    from autofit.original.batch import lm_batch
    from autofit.original.batch_broadcast import lm_batch_broadcast

    x, y, p0 = _gaussian_batch(n_fits=16)
    y, p0 = y[4:], p0[4:]  # no NONFINITE_DATA fit
    rng = np.random.default_rng(12)
    for fit in range(y.shape[0]):
        where = rng.choice(x.size, size=3, replace=False)
        y[fit, where] += rng.uniform(1.0, 3.0, size=3)
    weights = np.full((1, x.size), 1.0 / 0.05)
    lower, upper = np.full((1, 4), -np.inf), np.full((1, 4), np.inf)
    free = np.ones(4, dtype=bool)

    def run(rows):
        return lm_batch_broadcast(gaussian_offset, x[None, :], y[rows], weights, p0[rows],
                                  lower, upper, free, ROBUST_LOSSES[loss], 1e-10, 200)

    few, many = run(slice(0, 4)), run(slice(0, 12))
    assert len(set(many[2].tolist())) > 2  # the fits end after different passes
    for a, b in zip(few, many):
        np.testing.assert_array_equal(a, b[:4])
    alone = run(slice(0, 1))
    reference = lm_batch(lambda x, p: gaussian_offset(x, *p), None, JAC_FORWARD,
                         x[None, None, :], y[:1], weights, p0[:1], lower, upper, free,
                         ROBUST_LOSSES[loss], 1e-10, 200)
    assert alone[3][0] == reference[3][0] and alone[2][0] == reference[2][0]
    np.testing.assert_allclose(alone[0], reference[0], rtol=1e-12)
    np.testing.assert_allclose(alone[1], reference[1], rtol=1e-13)


def bump_and_ramp(x, *p):
    # two_bumps' kinds of lines, and a conditional: np.where(x > c, ...)
    out = np.zeros_like(x) + p[4]
    out = out + p[0] * np.exp(-0.5 * ((x - p[1]) / p[2]) ** 2)
    return out + np.where(x > p[1], p[3] * (x - p[1]), 0.0)


def test_numpy_runs_the_generated_derivatives_on_every_point_at_once(monkeypatch):
    """The NumPy engine takes a user's model with the derivatives generated from its source
    (the point gradient's lines on arrays: its numbers, conditionals included), as numba
    takes them: one model call and the derivative lines a pass instead of n_params + 1
    calls, no central differences at the end, and numba's minimum to rounding. Where the
    lines cannot run on arrays, finite differences, as before."""
    from autofit import _adapters, _codes, _forward_mode
    from autofit.original import host

    x = np.linspace(-3.0, 5.0, 300)
    p0 = np.array([1.0, 0.4, 0.8, 0.3, 0.1])
    exact = _forward_mode.point_functions(bump_and_ramp, 5, 1, x, p0)
    prepared = host.exact_prepared(_adapters.prepare("numpy", bump_and_ramp, 5, None), exact,
                                   5, x, p0)
    assert prepared.jac_method == _codes.JAC_ANALYTIC and prepared.polish_method is None
    expected = np.zeros((5, x.size))
    for k in range(x.size):
        exact[1](x[None, :], k, p0, expected, k)
    np.testing.assert_allclose(prepared.jacobian(x, p0), expected.T, rtol=1e-13, atol=0)
    # A pass takes the model's value from the same lines (no call of the model): the
    # model's numbers, and the same columns.
    value, columns = prepared.jacobian.with_value(x, p0)
    np.testing.assert_allclose(value, bump_and_ramp(x, *p0), rtol=1e-13, atol=0)
    np.testing.assert_array_equal(columns, prepared.jacobian(x, p0))

    def level(x, c):  # a value that does not vary with x: one per point all the same
        return c * 1.0

    exact_level = _forward_mode.point_functions(level, 1, 1, x, [2.0])
    level_prepared = host.exact_prepared(_adapters.prepare("numpy", level, 1, None),
                                         exact_level, 1, x, [2.0])
    value, columns = level_prepared.jacobian.with_value(x, np.array([2.0]))
    assert value.shape == x.shape and np.all(value == 2.0)
    assert columns.shape == (x.size, 1) and np.all(columns == 1.0)

    y = bump_and_ramp(x, 1.2, 0.5, 0.7, 0.25, 0.05)
    y = y + 0.01 * np.random.default_rng(2).normal(size=x.size)
    popt, _, info, _, _ = autofit.curve_fit(bump_and_ramp, x, y, p0=p0, backend="numpy",
                                            full_output=True)
    assert _forward_mode.EXACT_NOTE in info["backend_reason"] and info["status"].converged
    if installed("numba"):
        compiled = autofit.curve_fit(bump_and_ramp, x, y, p0=p0, backend="numba")[0]
        np.testing.assert_allclose(popt, compiled, rtol=1e-10)

    # Lines that fail on arrays, or give other numbers: the NumPy engine's finite
    # differences (a model of its own: the Jacobian is kept per point gradient).
    def bump(x, a, c, w):
        return a * np.exp(-0.5 * ((x - c) / w) ** 2)

    y = bump(x, 1.0, 0.5, 0.7)
    for source in ("def jacobian(x, p):\n    raise RuntimeError('broken')\n",
                   "def jacobian(x, p):\n    return _columns([p[0]] * 3, _atleast_2d(x))\n"):
        monkeypatch.setattr(_forward_mode, "array_jacobian_code", _compiled(source))
        exact = _forward_mode.point_functions(bump, 3, 1, x, [0.9, 0.4, 0.8])
        before = _adapters.prepare("numpy", bump, 3, None)
        assert host.exact_prepared(before, exact, 3, x, [0.9, 0.4, 0.8]) is before
        _adapters._cache.pop(exact[1], None)
    _, _, info, _, _ = autofit.curve_fit(bump, x, y, p0=[0.9, 0.4, 0.8], backend="numpy",
                                         full_output=True)
    assert "derivatives: exact" not in info["backend_reason"] and info["status"].converged


def peak_on_a_level(x, a, mu, s, c):
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + c


def test_a_numpy_engine_pass_calls_no_model():
    """The NumPy engine's passes take the model's value from the derivative lines: a fit
    of a few passes calls the user's model only to check it at p0 (and whether its output
    broadcasts) and for fvec, however many passes it takes."""
    x = np.linspace(-4, 4, 500)
    y = peak_on_a_level(x, 2.0, 0.3, 0.8, 0.1) + 0.01 * np.random.default_rng(1).normal(
        size=x.size)
    autofit.curve_fit(peak_on_a_level, x, y, p0=[1.5, 0.0, 1.0, 0.0], backend="numpy")
    calls = []

    def count(frame, event, arg):  # the model's calls in this thread, by their x's shape
        if event == "call" and frame.f_code is peak_on_a_level.__code__:
            calls.append(np.shape(frame.f_locals["x"]))

    sys.setprofile(count)
    try:
        popt, _, info, _, _ = autofit.curve_fit(peak_on_a_level, x, y,
                                                p0=[1.5, 0.0, 1.0, 0.0], backend="numpy",
                                                full_output=True)
    finally:
        sys.setprofile(None)
    assert "derivatives: exact" in info["backend_reason"] and info["nfev"] >= 4
    # whether the output broadcasts (two points), the check at p0, fvec
    assert sorted(calls) == [(2,), (500,), (500,)]
    np.testing.assert_allclose(popt, [2.0, 0.3, 0.8, 0.1], rtol=0.02)


def test_numpy_batches_take_the_generated_derivatives_with_parameters_as_columns():
    """The broadcast engine (fit_batch on NumPy, a robust curve_fit) runs the generated
    derivative lines with each parameter a column of fits, as it calls the model: each
    fit's own columns, shared or per-fit x; numba's fits to rounding; finite differences
    where the lines do not take columns."""
    from autofit import _adapters, _forward_mode
    from autofit.original import host

    x, y, p0 = _gaussian_batch(n_fits=12)
    exact = _forward_mode.point_functions(gaussian_offset, 4, 1, x, p0[0])
    batched = host._batched_jacobian(exact[1], 4, x, p0[:3])
    single = host.exact_prepared(_adapters.prepare("numpy", gaussian_offset, 4, None), exact,
                                 4, x, p0[0]).jacobian
    expected = np.stack([single(x, p) for p in p0])
    np.testing.assert_allclose(batched(x, p0), expected, rtol=1e-13, atol=0)
    per_fit_x = np.broadcast_to(x, y.shape) + 0.01 * np.arange(12)[:, None]
    np.testing.assert_allclose(batched(per_fit_x, p0),
                               np.stack([single(xk, p) for xk, p in zip(per_fit_x, p0)]),
                               rtol=1e-13, atol=0)

    result = autofit.fit_batch(gaussian_offset, x, y, p0, backend="numpy", progress=False)
    assert _forward_mode.EXACT_NOTE in result.backend_reason
    assert np.count_nonzero(result.converged) == 11  # fit 3 holds a nan
    if installed("numba"):
        compiled = autofit.fit_batch(gaussian_offset, x, y, p0, backend="numba",
                                     progress=False)
        ok = result.converged
        np.testing.assert_allclose(result.params[ok], compiled.params[ok], rtol=1e-9)

    def offset_peak(x, a, mu, c):  # its own gradient: the check is kept per gradient
        return a * np.exp(-((x - mu) ** 2)) + c

    exact = _forward_mode.point_functions(offset_peak, 3, 1, x, p0[0, :3])
    real = _forward_mode.array_jacobian_source
    with pytest.MonkeyPatch.context() as patch:  # lines that take one fit, not columns
        patch.setattr(_forward_mode, "array_jacobian_code", lambda *a: _compiled(
            real(*a[:2]).replace("_p0 = p[0]", "_p0 = float(p[0])"))())
        assert host._checked_array_jacobian(exact[1], 3, x, p0[0, :3]) is not None
        assert host._batched_jacobian(exact[1], 3, x, p0[:3, :3]) is None
