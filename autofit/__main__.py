"""Command line: ``python -m autofit backends`` and ``python -m autofit validate``."""

from __future__ import annotations

import argparse
import platform
import sys

from autofit import _dispatch, validate


def _device(name: str) -> str:
    if name == "jax":
        import jax

        return ", ".join(sorted({f"{d.platform}:{d.device_kind}" for d in jax.devices()}))
    if name == "numba":
        import numba

        cuda = "no CUDA GPU"
        try:
            from numba import cuda as numba_cuda

            if numba_cuda.is_available():
                cuda = f"CUDA GPU {numba_cuda.get_current_device().name}"
        except Exception:  # numba without a CUDA toolkit or driver
            pass
        return f"cpu ({numba.config.NUMBA_NUM_THREADS} threads), {cuda}"
    return f"cpu ({platform.machine()})"


def backends_report() -> str:
    lines = [f"{'backend':8} {'installed':10} {'version':10} device", "-" * 60]
    for name in _dispatch.BACKENDS:
        installed = _dispatch.is_installed(name)
        version = _dispatch.installed_version(name) if installed else "-"
        device = _device(name) if installed else f"pip install 'autofit-lm[{name}]'"
        lines.append(f"{name:8} {'yes' if installed else 'no':10} {version or '?':10} {device}")
    lines += ["", "fallback table (when a backend cannot run a model, the next one runs, "
              "with a warning; FFIT_STRICT=1 makes it an error):"]
    for name, chain in _dispatch.FALLBACK.items():
        lines.append(f"  {name:6} -> {' -> '.join(chain) if chain else '(none)'}")
    lines.append("kernels some backends lack run on:")
    for kernel_name, targets in _dispatch.KERNEL_FALLBACK.items():
        lines.append(f"  {kernel_name} -> {', '.join(targets)}")
    lines += ["", f"a call now would run on: {_dispatch.choose().reason}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autofit",
                                     description="autofit: fast curve fitting on NumPy, "
                                                 "Numba and JAX")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backends", help="list backends, versions, devices and fallbacks")
    check = commands.add_parser("validate", help="check every kernel on every backend "
                                                 "against the NumPy reference")
    check.add_argument("--backend", action="append", choices=_dispatch.BACKENDS,
                       help="only this backend (repeatable); default: all installed")
    check.add_argument("--sizes", default=",".join(str(s) for s in validate.SIZES),
                       help="comma-separated numbers of points (default: %(default)s)")
    check.add_argument("--kernel", action="append", help="only this kernel (repeatable)")
    args = parser.parse_args(argv)

    if args.command == "backends":
        print(backends_report())
        return 0
    sizes = tuple(int(s) for s in args.sizes.split(","))
    backends = args.backend or validate.available_backends()
    print(f"autofit validate: backends {', '.join(backends)}; sizes {sizes}", flush=True)
    rows = validate.run(backends=backends, sizes=sizes, kernels=args.kernel,
                        progress=lambda row: print(".", end="", flush=True))
    print()
    print(validate.format_table(rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
