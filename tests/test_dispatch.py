"""Backend selection: precedence, errors, fallbacks, strict mode, thread safety."""

import threading
import time
import warnings

import numpy as np
import pytest

import autofit
from autofit import _curve_fit, _dispatch, _elsewhere, _forward_mode
from tests.conftest import installed

needs_numba = pytest.mark.skipif(not installed("numba"), reason="numba is not installed")
needs_jax = pytest.mark.skipif(not installed("jax"), reason="jax is not installed")


def numpy_decay(x, a, b):
    return a * np.exp(-b * x)


def numpy_inplace_decay(x, a, b):
    # In-place assignment: jax cannot run it even translated to jax.numpy.
    out = np.empty_like(x)
    out[:] = a * np.exp(-b * x)
    return out


X = np.linspace(0, 3, 40)
Y = numpy_decay(X, 2.0, 1.5)


def test_default_rule_without_gpu_prefers_numba_then_numpy(monkeypatch):
    monkeypatch.setattr(_dispatch, "_default_cache", {})
    monkeypatch.setattr(_dispatch, "_jax_sees_gpu", lambda: False)
    expected = "numba" if installed("numba") else "numpy"
    assert autofit.get_backend() == expected
    assert "default rule" in autofit.explain_backend()


def test_default_rule_picks_jax_when_it_sees_a_gpu(monkeypatch):
    monkeypatch.setattr(_dispatch, "_default_cache", {})
    monkeypatch.setattr(_dispatch, "_jax_sees_gpu", lambda: True)
    monkeypatch.setattr(_dispatch, "is_installed", lambda name: True)
    assert _dispatch.default_backend() == "jax"


def test_precedence_argument_context_config_environment(monkeypatch):
    monkeypatch.setenv("FFIT_BACKEND", "numpy")
    assert autofit.get_backend() == "numpy"
    assert "FFIT_BACKEND" in autofit.explain_backend()
    autofit.set_backend("original")
    assert autofit.explain_backend().endswith("autofit.set_backend()")
    with autofit.use_backend("numpy"):
        assert "use_backend" in autofit.explain_backend()
        assert autofit.explain_backend("numpy").endswith("the backend= argument")


@pytest.mark.parametrize("bad", ["cuda", "NUMPYY", ""])
def test_unknown_backend_lists_valid_names(bad):
    with pytest.raises(ValueError, match="valid backends are 'numpy', 'numba', 'jax'"):
        autofit.curve_fit(numpy_decay, X, Y, backend=bad)


def test_unknown_backend_in_environment(monkeypatch):
    monkeypatch.setenv("FFIT_BACKEND", "tpu")
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        autofit.get_backend()


def test_missing_backend_names_the_extra(monkeypatch):
    real = _dispatch.is_installed
    monkeypatch.setattr(_dispatch, "is_installed", lambda n: n == "numpy" or (
        real(n) and n != "jax"))
    with pytest.raises(ImportError, match=r"pip install 'autofit-lm\[jax\]'"):
        autofit.curve_fit(numpy_decay, X, Y, backend="jax")


def test_names_are_case_insensitive_and_aliased():
    assert _dispatch.normalize(" NumPy ") == "numpy"
    assert _dispatch.normalize("original") == "numpy"


@needs_jax
def test_numpy_model_on_jax_runs_translated_and_says_so():
    with warnings.catch_warnings():
        warnings.simplefilter("error", autofit.BackendFallbackWarning)
        popt, _, info, _, _ = autofit.curve_fit(numpy_decay, X, Y, p0=[1, 1], backend="jax",
                                                full_output=True)
    assert info["backend"] == "jax"
    assert "translated to jax.numpy" in info["backend_reason"]
    np.testing.assert_allclose(popt, [2.0, 1.5], rtol=1e-9)


@needs_jax
def test_numpy_model_jax_cannot_run_falls_back_with_a_warning():
    with pytest.warns(autofit.BackendFallbackWarning, match="jax cannot trace the model"):
        popt, _, info, _, _ = autofit.curve_fit(numpy_inplace_decay, X, Y, p0=[1, 1],
                                                backend="jax", full_output=True)
    assert info["backend"] in ("numba", "numpy")
    assert "could not run it" in info["backend_reason"]
    assert "immutable" in info["backend_reason"]  # why the translation could not run it
    np.testing.assert_allclose(popt, [2.0, 1.5], rtol=1e-9)


@needs_jax
@pytest.mark.parametrize("how", ["argument", "environment", "context"])
def test_strict_mode_turns_the_fallback_into_an_error(how, monkeypatch):
    kwargs = {}
    if how == "argument":
        kwargs["strict"] = True
    elif how == "environment":
        monkeypatch.setenv("FFIT_STRICT", "1")
    if how == "context":
        with autofit.use_backend("jax", strict=True):
            with pytest.raises(autofit.BackendError, match="strict mode"):
                autofit.curve_fit(numpy_inplace_decay, X, Y, p0=[1, 1])
        return
    with pytest.raises(autofit.BackendError, match="strict mode"):
        autofit.curve_fit(numpy_inplace_decay, X, Y, p0=[1, 1], backend="jax", **kwargs)


@needs_numba
def test_model_numba_cannot_compile_falls_back_to_numpy():
    def plain_python_helper(value):
        return value

    def uses_python_objects(x, a, b):
        # Calling a plain (not jitted) Python function is something numba cannot compile.
        return plain_python_helper(a) * np.exp(-b * x)

    with pytest.warns(autofit.BackendFallbackWarning, match="numba cannot compile"):
        *_, info, _, _ = autofit.curve_fit(uses_python_objects, X, Y, p0=[1, 1],
                                           backend="numba", full_output=True)
    assert info["backend"] == "numpy"


@needs_jax
def test_jax_model_runs_on_jax_without_warning():
    import jax.numpy as jnp

    def jax_decay(x, a, b):
        return a * jnp.exp(-b * x)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        popt, _, info, _, _ = autofit.curve_fit(jax_decay, X, Y, p0=[1, 1], backend="jax",
                                                full_output=True)
    assert info["backend"] == "jax"
    np.testing.assert_allclose(popt, [2.0, 1.5], rtol=1e-10)


def test_use_backend_is_local_to_each_thread():
    seen = {}
    barrier = threading.Barrier(2)

    def worker(name):
        with autofit.use_backend(name):
            barrier.wait()
            seen[name] = autofit.get_backend()
            barrier.wait()

    names = ["numpy", "numba" if installed("numba") else "numpy"]
    threads = [threading.Thread(target=worker, args=(n,)) for n in set(names)]
    if len(threads) == 1:
        pytest.skip("needs two installed backends")
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {n: n for n in set(names)}


def test_every_result_records_the_backend_that_ran():
    *_, info, _, _ = autofit.curve_fit(numpy_decay, X, Y, p0=[1, 1], backend="numpy",
                                       full_output=True)
    assert info["backend"] == "numpy"
    # numpy_decay's derivatives can be generated: numba's road on every backend, with
    # them (NumPy runs them on arrays), said.
    assert info["backend_reason"] == ("'numpy' chosen by the backend= argument; "
                                      + _forward_mode.EXACT_NOTE + "; "
                                      + _curve_fit.SHARED_ROAD_NOTE)


def test_kernel_lookup_falls_back_for_autodiff_on_numpy():
    if not installed("jax"):
        with pytest.raises(autofit.BackendError):
            autofit.kernel("jacobian_autodiff", backend="numpy")
        return
    with pytest.warns(autofit.BackendFallbackWarning, match="fallback table sends it"):
        function = autofit.kernel("jacobian_autodiff", backend="numpy")
    assert function.__module__.startswith("autofit.jax")
    with pytest.raises(autofit.BackendError, match="strict"):
        autofit.kernel("jacobian_autodiff", backend="numpy", strict=True)


def test_import_autofit_does_not_import_jax_or_numba():
    import subprocess
    import sys

    code = ("import sys, autofit; "
            "print(any(m in sys.modules for m in ('jax', 'numba')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_a_jax_gpu_plugin_is_found_on_the_path_without_reading_metadata(tmp_path):
    # The default rule asks whether jax could see a GPU: only with a GPU plugin installed.
    # Reading every distribution's metadata for that took ~20 ms of the first fit.
    plain, plugin, namespace = tmp_path / "plain", tmp_path / "plugin", tmp_path / "ns"
    for folder in (plain, plugin, namespace):
        folder.mkdir()
    (plain / "numpy-2.4.6.dist-info").mkdir()
    (plain / "jax").mkdir()
    (plain / "jaxlib-0.10.2.dist-info").mkdir()
    (plugin / "jax_cuda12_plugin-0.10.2.dist-info").mkdir()
    (namespace / "jax_plugins").mkdir()
    archive = tmp_path / "packages.zip"
    archive.write_bytes(b"")
    assert not _dispatch._jax_gpu_plugin_installed([str(plain), str(archive)])
    assert _dispatch._jax_gpu_plugin_installed([str(plain), str(plugin)])
    assert _dispatch._jax_gpu_plugin_installed([str(namespace)])


def _quick_start_choice():
    """The default rule's choice where it picks a compiling backend; else the test skips."""
    choice = _dispatch.choose(None)
    if choice.requested not in _dispatch.QUICK_START_BACKENDS:
        pytest.skip("the default rule chose no compiling backend here (numba not installed)")
    return choice


def test_a_model_runs_on_numpy_until_its_calls_have_had_their_time(monkeypatch):
    # The quick start's ski rental: the NumPy engine answers a model's calls until they
    # have taken compile_after_s(road) in all (the batched passes':
    # QUICK_START_COMPILE_AFTER_BATCH_S); then numba compiles it on a background thread,
    # and a call that finds the compilation under way waits for it.
    choice = _quick_start_choice()
    monkeypatch.setattr(_dispatch, "QUICK_START_COMPILE_AFTER_BATCH_S", 0.05)

    def model(x, a):
        return a * x

    compiled = threading.Event()  # the warm-up below "compiles" until this is set
    for _ in range(2):  # quick calls: their time does not reach the rent
        call = _dispatch.quick_choice(choice, model, 1, 1, warm_up=compiled.wait)
        assert call.requested == "numpy" and "quick start" in call.reason
        call.after_call()
    assert _dispatch.quick_start_state(choice.requested, model, 1, road="batch") == "answered"
    call = _dispatch.quick_choice(choice, model, 1, 1, warm_up=compiled.wait)
    time.sleep(0.06)  # a slow call: the NumPy engine has now spent more than 0.05 s
    call.after_call()
    assert _dispatch.quick_start_state(choice.requested, model, 1, road="batch") == "compiling"
    threading.Timer(0.2, compiled.set).start()
    waited = _dispatch.quick_choice(choice, model, 1, 1, warm_up=compiled.wait)
    assert waited.requested == choice.requested and compiled.is_set()
    assert _dispatch.quick_start_state(choice.requested, model, 1, road="batch") == "done"


def test_a_model_the_backend_keeps_compiled_on_disk_is_loaded_sooner(monkeypatch):
    # Loading a model's passes from numba's disk cache costs less than compiling them: the
    # quick start's rent is shorter for it (the caller says so, without importing numba).
    choice = _quick_start_choice()
    monkeypatch.setattr(_dispatch, "QUICK_START_COMPILE_AFTER_BATCH_S", 10.0)
    monkeypatch.setattr(_dispatch, "QUICK_START_LOAD_AFTER_S", 0.05)

    def compiled_model(x, a):
        return a * x

    def new_model(x, a):
        return a * x

    for model, cached in ((compiled_model, True), (new_model, False)):
        call = _dispatch.quick_choice(choice, model, 1, 1, warm_up=lambda: None,
                                      cached=lambda cached=cached: cached)
        assert call.requested == "numpy"
        time.sleep(0.06)  # more than the load's rent, less than the compilation's
        call.after_call()
    assert _dispatch.quick_start_state(choice.requested, compiled_model, 1,
                                       road="batch") in ("compiling", "done")
    assert _dispatch.quick_start_state(choice.requested, new_model, 1,
                                       road="batch") == "answered"
    assert _dispatch.wait_for_compilation(timeout=300) is True


def test_a_child_process_compiles_the_fused_pass_while_the_calls_go_on(monkeypatch):
    # A fused pass that a child process can compile (the model's derivatives generated:
    # autofit._elsewhere) is rented QUICK_START_COMPILE_ELSEWHERE_AFTER_S; while the child
    # works the NumPy engine answers every call, and calls wait only while this process
    # loads what it compiled.
    choice = _quick_start_choice()
    monkeypatch.setattr(_dispatch, "QUICK_START_COMPILE_ELSEWHERE_AFTER_S", 0.05)
    monkeypatch.setattr(_dispatch, "QUICK_START_COMPILE_AFTER_S", 1000.0)
    monkeypatch.setattr(_dispatch, "QUICK_START_WAIT_S", 20.0)
    child_done, loaded = threading.Event(), threading.Event()
    children = []
    monkeypatch.setattr(_elsewhere, "compile_in_child",
                        lambda job: children.append(job) or child_done.wait(20))

    class Host:
        @staticmethod
        def compile_fused(*args):
            loaded.wait(20)

    monkeypatch.setattr(_dispatch, "host_of", lambda name: Host)

    def model(x, a):
        return a * x

    sample = (np.ones(3), np.ones(3), np.ones(1), np.ones(1), -np.inf * np.ones(1),
              np.inf * np.ones(1))
    key = _dispatch._warm_up_key(choice.requested, model, 1, 1, 1, "fused")
    try:
        call = _dispatch.quick_choice(choice, model, 1, 1, fused_sample=sample,
                                      elsewhere=lambda host: {"job": host})
        assert call.requested == "numpy"
        assert "in a child process" in call.reason and "spent 0.05 s" in call.reason
        time.sleep(0.06)
        call.after_call()
        assert children == [{"job": _dispatch._host_module(choice.requested)}]
        assert _dispatch.quick_start_state(choice.requested, model, 1, road="fused") == (
            "compiling")
        began = time.perf_counter()
        answered = _dispatch.quick_choice(choice, model, 1, 1, fused_sample=sample,
                                          elsewhere=lambda host: {"job": host})
        # (not the 20 s a call waits for a compilation in this process)
        assert answered.requested == "numpy" and time.perf_counter() - began < 10.0
        child_done.set()  # now this process loads it: a call waits for that
        threading.Timer(0.2, loaded.set).start()
        waited = _dispatch.quick_choice(choice, model, 1, 1, fused_sample=sample,
                                        elsewhere=lambda host: {"job": host})
        assert waited.requested == choice.requested and loaded.is_set()
        assert _dispatch.quick_start_state(choice.requested, model, 1, road="fused") == "done"
    finally:
        child_done.set()
        loaded.set()
        _dispatch._warm_ups.pop(key, None)


def test_a_child_still_compiling_when_the_process_exits_is_stopped(monkeypatch):
    monkeypatch.setattr(_elsewhere, "_CHILD", "import time; time.sleep(60)")
    outcome = []

    def compile_in_child():
        try:
            outcome.append(_elsewhere.compile_in_child({"job": 1}))
        except _elsewhere.Stopped as exc:
            outcome.append(exc)

    thread = threading.Thread(target=compile_in_child)
    thread.start()
    try:
        for _ in range(200):
            if _elsewhere._children:
                break
            time.sleep(0.05)
        assert len(_elsewhere._children) == 1
        _elsewhere._stop_children()  # what the interpreter runs at exit
        thread.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], _elsewhere.Stopped)
        assert not _elsewhere._children
        assert _elsewhere.compile_in_child({"job": 2}) is False  # none starts any more
    finally:
        _elsewhere._exiting.clear()
        thread.join(30)


def test_a_large_call_starts_the_compilation_and_wait_for_compilation_starts_the_rest():
    choice = _quick_start_choice()

    def large_model(x, a):
        return a * x

    def small_model(x, a):
        return a * x

    compiled = threading.Event()
    # From a third of max_evaluations (here 34 of 100) the compilation starts after the call
    large = _dispatch.quick_choice(choice, large_model, 1, 1, warm_up=compiled.wait,
                                   evaluations=40, max_evaluations=100)
    assert large.requested == "numpy"
    large.after_call()
    assert _dispatch.quick_start_state(choice.requested, large_model, 1,
                                       road="batch") == "compiling"
    compiled.set()
    small = _dispatch.quick_choice(choice, small_model, 1, 1, warm_up=lambda: None,
                                   evaluations=30, max_evaluations=100)
    small.after_call()
    assert _dispatch.quick_start_state(choice.requested, small_model, 1,
                                       road="batch") == "answered"
    # The user's "compile now": every model the NumPy engine has answered.
    assert _dispatch.wait_for_compilation(timeout=300) is True
    assert _dispatch.quick_start_state(choice.requested, small_model, 1,
                                       road="batch") == "done"
    assert _dispatch.quick_start_state(choice.requested, large_model, 1,
                                       road="batch") == "done"


def test_an_explicit_call_that_compiled_a_model_ends_its_quick_start():
    # A model compiled by a call that named the compiling backend: the default rule's
    # later calls run compiled at once (the NumPy engine answered them for a second).
    default = _dispatch.choose(None)
    if default.requested not in _dispatch.QUICK_START_BACKENDS:
        pytest.skip("the default rule chose no compiling backend here (numba not installed)")
    name = default.requested

    def model(x, a):
        return a * x

    def failing(x, a):
        return a * x

    explicit = _dispatch.quick_choice(_dispatch.choose(name), model, 1, 1,
                                      warm_up=lambda: None)
    assert explicit.requested == name and explicit.after_call is not None
    assert _dispatch.quick_start_state(name, model, 1, road="batch") is None
    _dispatch.run_with_fallback(explicit, lambda backend: "fitted")
    explicit.after_call()
    assert _dispatch.quick_start_state(name, model, 1, road="batch") == "done"
    later = _dispatch.quick_choice(default, model, 1, 1, warm_up=lambda: None)
    assert later.requested == name and "quick start" not in later.reason
    # A call that fell back compiled nothing: the model keeps its quick start.
    fell_back = _dispatch.quick_choice(_dispatch.choose(name), failing, 1, 1,
                                       warm_up=lambda: None)

    def attempt(backend):
        if backend == name:
            raise _dispatch.BackendCannotRun("cannot compile it")
        return "fitted"

    with pytest.warns(autofit.BackendFallbackWarning):
        _dispatch.run_with_fallback(fell_back, attempt)
    fell_back.after_call()
    assert _dispatch.quick_start_state(name, failing, 1, road="batch") is None
    assert _dispatch.quick_choice(default, failing, 1, 1,
                                  warm_up=lambda: None).requested == "numpy"


def test_a_user_model_fitted_with_backend_numba_then_runs_compiled_on_the_default_rule():
    pytest.importorskip("numba")
    default = _dispatch.choose(None)
    if default.requested != "numba":
        pytest.skip("the default rule does not choose numba here")

    def decay(x, a, b):
        return a * np.exp(-b * x)

    x = np.linspace(0.0, 4.0, 200)
    y = decay(x, 2.0, 0.7) + 0.01 * np.sin(7 * x)
    explicit = autofit.fit(decay, x, y, p0=[1.0, 1.0], backend="numba")
    assert explicit.backend == "numba"
    later = autofit.fit(decay, x, y, p0=[1.0, 1.0])
    assert later.backend == "numba", later.backend_reason
    assert "quick start" not in later.backend_reason
    np.testing.assert_allclose(later.params, explicit.params, rtol=1e-12)


def test_a_quick_start_state_belongs_to_its_model_not_to_an_id():
    """The quick start keys a model by id(f), which Python gives a new function once the
    old one is gone: a model found the compiled state of a dead one with its id and ran
    on numba at once (a test failed by the order tests ran in). The state holds its model
    and is only found for it."""
    def dead(x, a):
        return a * x

    def new(x, a):
        return a * x

    choice = _dispatch.BackendChoice(requested="numba", backend="numba",
                                     source=_dispatch.DEFAULT_RULE)
    key = _dispatch._warm_up_key("numba", new, 1, 1, 1, "model")
    with _dispatch._warm_ups_lock:
        stale = _dispatch._state(key, dead)  # what a dead model with new's id left
    stale.started = True
    stale.compiled.set()
    try:
        quick = _dispatch.quick_choice(choice, new, 1, 1)
        assert quick.backend == "numpy" and "quick start" in quick.reason
        assert _dispatch.quick_start_state("numba", new, 1) == "answered"
        with _dispatch._warm_ups_lock:
            assert _dispatch._state(key, new) is not stale
    finally:
        _dispatch._warm_ups.pop(key, None)


def test_the_batched_passes_are_rented_longer_than_the_fused_pass(monkeypatch):
    """A robust fit's road (the batched passes) costs numba more to compile than the fused
    pass, and the NumPy engine runs it near scipy's speed: its rent is longer."""
    choice = _quick_start_choice()
    assert _dispatch.QUICK_START_COMPILE_AFTER_BATCH_S > _dispatch.QUICK_START_COMPILE_AFTER_S
    monkeypatch.setattr(_dispatch, "QUICK_START_COMPILE_AFTER_S", 0.05)
    monkeypatch.setattr(_dispatch, "QUICK_START_COMPILE_AFTER_BATCH_S", 10.0)

    robust_model, plain_model = (lambda x, a: a * x), (lambda x, a: a * x)  # two models
    started = []  # the models whose compilation the quick start started
    monkeypatch.setattr(_dispatch, "_start_warm_up",
                        lambda name, f, *a, **k: started.append(f))
    keys = [_dispatch._warm_up_key(choice.requested, robust_model, 1, 1, 1, "batch"),
            _dispatch._warm_up_key(choice.requested, plain_model, 1, 1, 1, "model")]
    try:
        robust = _dispatch.quick_choice(choice, robust_model, 1, 1, warm_up=lambda: None)
        plain = _dispatch.quick_choice(choice, plain_model, 1, 1)
        assert "spent 10 s" in robust.reason and "spent 0.05 s" in plain.reason
        time.sleep(0.06)
        robust.after_call()
        plain.after_call()
        assert started == [plain_model]
        assert _dispatch.quick_start_state(choice.requested, robust_model, 1,
                                           road="batch") == "answered"
        assert _dispatch.quick_start_state(choice.requested, plain_model, 1) == "compiling"
    finally:  # nothing left for wait_for_compilation to wait for
        for key in keys:
            _dispatch._warm_ups.pop(key, None)
