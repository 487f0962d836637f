"""How this backend's programs are compiled: one rule for every kernel.

On a CPU, XLA's loop emitters compile autofit's programs about twice as fast as its newer
fusion emitters, and the programs run about as fast or faster: the batch program about 2x
faster; ``lm_solve`` on validate's cases and the models' kernels compile in about half the
time and run in 0.76-1.13x their time otherwise (a few 2-3x faster)
(``experiments/jax_compile/kernels.py``, README there). So every jitted kernel here is
compiled with :data:`CPU_COMPILER_OPTIONS` when it runs on a CPU; on another platform, or
with a jaxlib that lacks the option, with XLA's defaults.
"""

from __future__ import annotations

import functools

import jax

CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def run_compiled(cpu, default, platform: str, *args, **kwargs):
    """``cpu(*args, **kwargs)`` on the CPU platform, else ``default(...)``; also
    ``default`` where this jaxlib does not know :data:`CPU_COMPILER_OPTIONS`."""
    if platform != "cpu":
        return default(*args, **kwargs)
    try:
        return cpu(*args, **kwargs)
    except jax.errors.JaxRuntimeError as error:
        if "No such compile option" not in str(error):
            raise
        return default(*args, **kwargs)


def jit(function=None, *, static_argnames=None):
    """``jax.jit(function, static_argnames=...)``, compiled with :data:`CPU_COMPILER_OPTIONS`
    where jax's default backend is the CPU (:func:`run_compiled`).

    Called with traced arguments (inside another program), it is the plain jitted function.
    The result's ``cpu`` and ``default`` are the two jitted functions; ``_cache_size()``
    counts the programs of both (the tests' check that nothing recompiles).
    """
    if function is None:
        return functools.partial(jit, static_argnames=static_argnames)
    cpu = jax.jit(function, static_argnames=static_argnames,
                  compiler_options=CPU_COMPILER_OPTIONS)
    default = jax.jit(function, static_argnames=static_argnames)

    @functools.wraps(function)
    def compiled(*args, **kwargs):
        if _traced(args, kwargs):
            # Called inside another program (a model inside lm_solve's): jax takes compiler
            # options at the top level only, and the enclosing program's apply.
            return default(*args, **kwargs)
        return run_compiled(cpu, default, jax.default_backend(), *args, **kwargs)

    compiled.cpu, compiled.default = cpu, default
    compiled._cache_size = lambda: cpu._cache_size() + default._cache_size()
    return compiled


def _traced(args, kwargs) -> bool:
    return any(isinstance(leaf, jax.core.Tracer)
               for leaf in jax.tree_util.tree_leaves((args, kwargs)))
