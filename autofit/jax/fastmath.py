"""An ``arctan`` and a ``log1p`` that XLA:CPU runs over several values at once (the arctan
and cauchy losses).

XLA:CPU's ``atan`` and ``log1p`` cost 4.8 and 2.7 ms per million values where its ``exp``
costs 0.3 (one core): jax's arctan batch was 10x its linear one. :func:`arctan` and
:func:`log1p` are the branch-free arithmetic of :func:`autofit.numba.fastexp.vatan` and
:func:`~autofit.numba.fastexp.vlog1p` (selects, bit operations, square roots, divisions and
a polynomial), written with ``jax.numpy``; within 4 ulps of NumPy's (tested; XLA:CPU treats
subnormal inputs as 0). :data:`CPU_NUMPY` is ``jax.numpy`` with them, for
:func:`autofit._rules.robust_loss_where` on a CPU.
"""

import jax
import jax.numpy as jnp

# tan(pi / 8): above it (up to 1), atan(t) = pi/4 + atan((t - 1) / (t + 1)).
TAN_PI_8 = 0.41421356237309503
PI_4 = 0.7853981633974483
PI_4_LO = 3.061616997868383e-17  # pi/4 - PI_4
PI_2 = 1.5707963267948966
# The odd series' coefficients 1/23, 1/21, ..., 1/3 (Horner's order).
_SERIES = tuple(1.0 / k for k in range(23, 2, -2))


def _odd_series(q):
    """``1/3 + q/5 + ... + q¹⁰/23`` (``autofit.numba.fastexp._odd_series``): with
    ``q = s²``, ``atanh(s) = s + s q (this)``; with ``q = -s²``, ``atan(s) = s + s q
    (this)``.

    By Estrin's scheme (pairs of terms, then pairs of pairs with q², q⁴, q⁸), not Horner's:
    XLA:CPU's loops carry one vector of values at a time, so the chain of dependent
    multiply-adds, not their number, sets the time (10 in a row by Horner's rule, 4 here:
    arctan 28 -> 21 us and log1p 31 -> 22 us per 4,096 values on one core)."""
    terms = list(reversed(_SERIES))  # ascending powers of q
    power = q
    while len(terms) > 1:
        terms = [terms[k] + power * terms[k + 1] if k + 1 < len(terms) else terms[k]
                 for k in range(0, len(terms), 2)]
        power = power * power
    return terms[0]


def arctan(x):
    """``arctan(x)`` elementwise, for float64 arrays (see the module docstring)."""
    a = jnp.abs(x)
    inverted = a > 1.0
    # u = num / den, v = u / (1 + sqrt(1 + u²)) in one division (vatan's arithmetic)
    shifted = (a > TAN_PI_8) & (a < 1.0 / TAN_PI_8)
    num = jnp.where(shifted, jnp.where(a <= 1.0, a - 1.0, 1.0 - a),
                    jnp.where(inverted, 1.0, a))
    den = jnp.where(shifted, a + 1.0, jnp.where(inverted, a, 1.0))
    v = num / (den + jnp.sqrt(den * den + num * num))
    q = -(v * v)
    r = 2.0 * (v + v * (q * _odd_series(q)))
    # Below 1e-8, atan(a) is a to rounding; and a / 2 may be subnormal, which XLA:CPU
    # flushes to 0.
    r = jnp.where(~inverted & (a < 1e-8), a, r)
    r = jnp.where(shifted, PI_4 + (r + PI_4_LO), r)
    r = jnp.where(inverted, PI_2 - r, r)
    r = jnp.where(x >= 0.0, r, -r)
    return jnp.where(jnp.isnan(x), x, r)


LN2_HI = 0.6931471803691238  # ln 2 to 32 bits: e * LN2_HI is exact for |e| < 2**20
LN2_LO = 1.9082149292705877e-10  # ln 2 - LN2_HI
SQRT2 = 1.4142135623730951
_MANTISSA = (1 << 52) - 1
_ONE_BITS = 1023 << 52


def log1p(z):
    """``log1p(z)`` elementwise, for float64 arrays: ``u = 1 + z`` split as ``m 2**e`` by its
    bits (``m`` in ``[sqrt(1/2), sqrt(2))``), ``log(m) = 2 atanh(s)`` with
    ``s = (m - 1) / (m + 1)`` by the odd series, and Kahan's ``log(u) z / (u - 1)`` for what
    the rounding of ``1 + z`` lost."""
    u = 1.0 + z
    # A positive finite stand-in for u <= 0, inf or nan keeps the bit arithmetic defined;
    # the selects at the end give those inputs their answers.
    v = jnp.where((u > 0.0) & (u < jnp.inf), u, 2.0)
    bits = jax.lax.bitcast_convert_type(v, jnp.int64)
    m = jax.lax.bitcast_convert_type((bits & _MANTISSA) | _ONE_BITS, jnp.float64)
    e = (bits >> 52).astype(jnp.float64) - 1023.0
    big = m > SQRT2
    m = jnp.where(big, m * 0.5, m)
    e = jnp.where(big, e + 1.0, e)
    s = (m - 1.0) / (m + 1.0)
    q = s * s
    log_v = e * LN2_HI + (e * LN2_LO + 2.0 * s * (_odd_series(q) * q) + 2.0 * s)
    d = v - 1.0
    result = jnp.where(d != 0.0, log_v * (z / jnp.where(d != 0.0, d, 1.0)), z)
    result = jnp.where(z > -1.0, result, jnp.where(z == -1.0, -jnp.inf, jnp.nan))
    result = jnp.where(z < jnp.inf, result, z)
    return jnp.where(jnp.isnan(z), z, result)


def _for_float64(function, fallback):
    """``function`` on float64 arrays, ``fallback`` (jax's own) on others: the bit
    arithmetic is float64's, and a float32 batch runs without x64 (no int64 to split a
    float32 by; a robust float32 batch on a CPU raised an OverflowError)."""

    def dispatched(x):
        return function(x) if jnp.result_type(x) == jnp.float64 else fallback(x)

    dispatched.__doc__ = function.__doc__
    return dispatched


class _CpuNumpy:
    """``jax.numpy`` with :func:`arctan` and :func:`log1p` (for float64)."""

    arctan = staticmethod(_for_float64(arctan, jnp.arctan))
    log1p = staticmethod(_for_float64(log1p, jnp.log1p))

    def __getattr__(self, name):
        return getattr(jnp, name)


CPU_NUMPY = _CpuNumpy()
