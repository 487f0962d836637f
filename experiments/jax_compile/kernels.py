"""XLA:CPU's loop emitters against its fusion emitters for jax's single-fit kernels.

    python experiments/jax_compile/kernels.py [--points 1000000]

For five built-in models, the model and Jacobian kernels at ``--points`` points, and
``lm_solve`` on validate's cases (gaussian, analytic / forward / central / bounded /
2-D weights, 1,000 and 100,000 points): the first call (tracing and compilation) and the
minimum of 5 warm calls, each jitted both ways in this process. autofit compiles every jax
kernel with the loop emitters on a CPU (``autofit/jax/compiler.py``).
"""

import argparse
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from autofit.jax import lm, models  # noqa: E402
from autofit.jax.compiler import CPU_COMPILER_OPTIONS  # noqa: E402
from autofit.selftest import cases, validate  # noqa: E402

OPTIONS = (("fusion", {}), ("loop", CPU_COMPILER_OPTIONS))
MODELS = ("gaussian", "multi_lorentzian", "gaussian_2d_rotated", "damped_cosine",
          "double_exponential")


def first_and_warm(call, repeats=5):
    start = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - start
    warm = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        warm = min(warm, time.perf_counter() - start)
    return first, warm


def model_kernels(n_points):
    for name in MODELS:
        for kind in ("model", "jacobian"):
            function = getattr(models, f"{kind}_{name}").__wrapped__
            x = cases.x_grid(name, n_points)
            params = np.array(cases.TRUE_PARAMS[name])
            cells = []
            for label, options in OPTIONS:
                jitted = jax.jit(function, compiler_options=options)
                first, warm = first_and_warm(lambda j=jitted: j(x, params))
                cells.append(f"{label} first {first * 1e3:6.1f} ms warm {warm * 1e3:6.2f} ms")
            print(f"{kind}_{name:22s} " + " | ".join(cells), flush=True)


def solver():
    static = ("model", "jacobian", "jac_method")
    for label, options in OPTIONS:
        jitted = jax.jit(lm._lm_solve, static_argnames=static, compiler_options=options)
        rows = []
        compile_seconds = 0.0
        for n_points in (1000, 100_000):
            for case in cases.cases("lm_solve", n_points):
                args = validate.resolve_arguments(case.args, models)
                first, warm = first_and_warm(lambda a=args: jitted(*a))
                compile_seconds += first
                rows.append(f"{case.variant}@{n_points}: {warm * 1e3:.2f} ms")
        print(f"lm_solve {label}: first calls {compile_seconds:.2f} s; warm " + ", ".join(rows),
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.default_backend()}, {args.points:,} points")
    model_kernels(args.points)
    solver()


if __name__ == "__main__":
    main()
