"""numba's CUDA engine through NVIDIA's compiler, on a machine without a GPU.

The simulator (``tests/test_parity.py``) runs the kernels' Python, which says nothing of
whether numba-cuda can type them, lower them and have NVVM compile them: a kernel that the
simulator runs may not compile for a GPU. Here every built-in model's kernel, forward
differences, float32 and a user's own function are compiled to PTX
(:func:`autofit.numba.gpu.ptx`) for a GPU of compute capability 8.0, as a launch from host
arrays would compile them.

The compiler is numba-cuda with NVIDIA's NVVM and NVRTC libraries (pip wheels, no GPU or
driver needed). Installed into the test environment, numba-cuda also replaces the CUDA
simulator, whose kernels then ran ~100x slower (600 s for ``test_parity``'s simulator
cases): ``.ci/run`` installs it into a folder of its own (``.ci/cuda-compiler.txt``) and
names it in ``AUTOFIT_CUDA_COMPILER``; the compilation runs in a subprocess that adds that
folder. Where it is named, a compiler that does not start is a failure; where it is not and
numba-cuda is not installed, the tests skip and say what to install.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from numpy import exp

from tests.conftest import installed

COMPILER = "AUTOFIT_CUDA_COMPILER"
INSTALL = ("pip install --no-deps --target DIR -r .ci/cuda-compiler.txt, then "
           f"{COMPILER}=DIR (as .ci/run does), or the 'cuda' extra")

COMPILE_SCRIPT = textwrap.dedent('''
    import json
    import re
    import site
    import sys

    for folder in sys.argv[2:]:
        site.addsitedir(folder)  # its .pth files: numba-cuda takes numba.cuda's place

    import numpy as np

    from autofit import _forward_mode
    from autofit._codes import JAC_ANALYTIC, JAC_FORWARD
    from autofit.numba import gpu, points
    from autofit.numba.user_points import user_point_function
    from autofit.selftest.cases import TRUE_PARAMS


    def peak(x, a, mu, s, c):
        return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + c


    def peaks(x, *p):  # as a scientist writes several peaks (experiments/user_models)
        out = np.full_like(x, p[-1])
        for k in range(len(p) // 3):
            a, c, w = p[3 * k:3 * k + 3]
            out = out + a * np.exp(-0.5 * ((x - c) / w) ** 2)
        return out


    cases = {}
    for name, (value, gradient) in points.POINT_FUNCTIONS.items():
        n_params = len(TRUE_PARAMS[name])  # the size the parity tests fit it at
        cases[f"{name}-float64"] = (value, gradient, JAC_ANALYTIC, n_params, np.float64)
    value, gradient = points.POINT_FUNCTIONS["gaussian"]
    cases["gaussian-float32"] = (value, gradient, JAC_ANALYTIC, 4, np.float32)
    cases["gaussian-forward-float64"] = (value, None, JAC_FORWARD, 4, np.float64)
    # fit_batch's engine for a user's model on a GPU: the exact derivatives generated from
    # its source where there are, else the user's function itself, forward differences
    x = np.linspace(0.0, 10.0, 50)
    start = np.array([1.0, 3.0, 0.5, 0.8, 4.0, 0.7, 0.6, 6.5, 0.4, 0.1])
    exact = _forward_mode.point_functions(peaks, 10, 1, x, start)
    for dtype in (np.float64, np.float32):
        name = np.dtype(dtype).name
        user = user_point_function(peak, 4, 1, "cuda", dtype)
        cases[f"user-{name}"] = (user, None, JAC_FORWARD, 4, dtype)
        cases[f"user-peaks-exact-{name}"] = (*exact, JAC_ANALYTIC, 10, dtype)

    found = {}
    try:  # the compiler itself first: numba-cuda, NVVM and NVRTC found and working
        from numba import cuda

        if getattr(cuda, "implementation", "") != "NVIDIA":
            raise RuntimeError(f"numba.cuda is numba's {cuda.implementation} target, not "
                               "numba-cuda's")

        def copy(a, b):
            b[0] = a[0]

        cuda.compile_ptx(copy, "void(float64[::1], float64[::1])", cc=(8, 0))
    except Exception as exc:
        found["compiler"] = f"{type(exc).__name__}: {exc}"[-2000:]
        cases = {}
    for case, arguments in cases.items():
        try:
            text = gpu.ptx(*arguments, compute_capability=(8, 0))
        except Exception as exc:
            found[case] = {"error": f"{type(exc).__name__}: {exc}"[-2000:]}
            continue
        found[case] = {"entries": len(re.findall(r"^\\.visible \\.entry", text, re.M)),
                       "target": re.search(r"^\\.target (\\S+)", text, re.M).group(1),
                       "float64_ops": len(re.findall(r"^\\s*[a-z.]+\\.f64\\b", text, re.M)),
                       "lines": text.count("\\n")}
    with open(sys.argv[1], "w") as out:
        json.dump(found, out)
''')


def _compiler_folders() -> list[str]:
    folder = os.environ.get(COMPILER)
    if folder:
        if not Path(folder, "numba_cuda").is_dir():
            pytest.fail(f"{COMPILER}={folder!r} holds no numba_cuda: {INSTALL}")
        return [folder]
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip(f"numba's CUDA compiler (numba-cuda, NVVM, NVRTC) is not installed: "
                    f"{INSTALL}")
    return []


def _library_path(folders) -> str:
    # NVIDIA's wheels put NVVM and NVRTC under nvidia/*/lib*, which cuda-pathfinder looks
    # for in site-packages only: a folder of their own is named to the dynamic loader.
    found = [str(lib) for folder in folders for lib in sorted(Path(folder).glob("nvidia/**/lib*"))
             if lib.is_dir() and any(lib.glob("*.so*"))]
    return os.pathsep.join(found + [os.environ.get("LD_LIBRARY_PATH", "")]).strip(os.pathsep)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    if not installed("numba"):
        pytest.skip("numba is not installed (pip install 'autofit-lm[numba]')")
    folders = _compiler_folders()
    folder = tmp_path_factory.mktemp("cuda-compiler")
    script = folder / "compile_kernels.py"  # a file: the user's model has a source
    script.write_text(COMPILE_SCRIPT)
    out = folder / "compiled.json"
    env = dict(os.environ, LD_LIBRARY_PATH=_library_path(folders))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    done = subprocess.run([sys.executable, str(script), str(out), *folders], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(out.read_text())
    if "compiler" in found:
        if folders:  # named: CI installed it, and it must work
            pytest.fail(f"numba's CUDA compiler in {folders[0]} does not start: "
                        f"{found['compiler']}")
        pytest.skip(f"numba-cuda is installed but its compiler does not start here "
                    f"({found['compiler'][:300]}): {INSTALL}")
    return found


def _cases():
    import numpy as np

    from autofit.numba import points

    names = [f"{name}-float64" for name in points.POINT_FUNCTIONS]
    names += ["gaussian-float32", "gaussian-forward-float64"]
    for dtype in (np.float64, np.float32):
        names += [f"user-{np.dtype(dtype).name}", f"user-peaks-exact-{np.dtype(dtype).name}"]
    return names


@pytest.mark.skipif(not installed("numba"), reason="numba is not installed")
@pytest.mark.parametrize("case", _cases() if installed("numba") else [])
def test_the_cuda_kernel_compiles_to_ptx(compiled, case):
    result = compiled[case]
    assert "error" not in result, result.get("error")
    assert result["entries"] == 1 and result["target"] == "sm_80", result
    assert result["lines"] > 1000  # the whole LM loop is in it, not a stub


def test_a_float32_kernel_computes_in_float32(compiled):
    """float32 is asked for speed (consumer GPUs run float64 at 1/32 to 1/64 the rate): the
    float32 kernels keep float64 to the once-per-iteration bookkeeping (λ, the acceptance
    tests), a quarter of the float64 kernel's double-precision instructions at most; a model
    or a pass over the points computed in float64 would take it to the float64 kernel's."""
    for name in ("gaussian", "user", "user-peaks-exact"):
        single = compiled[f"{name}-float32"]["float64_ops"]
        double = compiled[f"{name}-float64"]["float64_ops"]
        assert single <= double / 4, (name, single, double)


def test_the_deprecated_numba_cuda_target_is_refused_with_a_reason():
    """On numba's own (deprecated) CUDA target the kernels do not compile; ``ptx`` says what
    to install instead of failing inside numba."""
    if not installed("numba"):
        pytest.skip("numba is not installed (pip install 'autofit-lm[numba]')")
    if importlib.util.find_spec("numba_cuda") is not None:
        pytest.skip("numba-cuda is installed here: numba.cuda is NVIDIA's target")
    script = textwrap.dedent("""
        import numpy as np
        from autofit._codes import JAC_ANALYTIC
        from autofit.numba import gpu, points
        value, gradient = points.POINT_FUNCTIONS["gaussian"]
        try:
            gpu.ptx(value, gradient, JAC_ANALYTIC, 4, np.float64)
        except RuntimeError as exc:
            print(exc)
    """)
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "needs numba-cuda" in done.stdout and "cuda-compiler.txt" in done.stdout


def _decay_with_exp_imported(x, a):
    return a * exp(-x)


def _gaussian_on_a_line(x, a, mu, s, b):
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2) / np.sqrt(2.0 * np.pi) + b * np.abs(x)


def test_a_users_numpy_model_sees_maths_functions_of_one_point_on_cuda():
    """What numba-cuda compiles of a user's NumPy model (``for_cuda``): ``np`` there is NumPy
    with math's exp, sqrt, abs...; the same numbers on a point, the user's function and its
    module untouched, its source still readable (float32 kernels rewrite it)."""
    if not installed("numba"):
        pytest.skip("numba is not installed (pip install 'autofit-lm[numba]')")
    import inspect
    import math

    from autofit.numba.user_points import for_cuda

    rebuilt = for_cuda(_gaussian_on_a_line)
    assert rebuilt is not _gaussian_on_a_line
    assert rebuilt.__globals__["np"].exp is math.exp
    assert rebuilt.__globals__["np"].pi == np.pi and globals()["np"] is np
    for x in (-2.5, 0.0, 0.7, 3.0):
        assert rebuilt(x, 2.0, 0.3, 0.8, 0.1) == _gaussian_on_a_line(x, 2.0, 0.3, 0.8, 0.1)
    assert "np.exp" in inspect.getsource(rebuilt)
    assert for_cuda(math.hypot) is math.hypot  # nothing to rebuild

    def without_numpy(x, a):
        return a * x

    assert for_cuda(without_numpy) is without_numpy
    imported = for_cuda(_decay_with_exp_imported)
    assert imported.__globals__["exp"] is math.exp and imported(0.5, 2.0) == 2.0 * exp(-0.5)
