"""An ``exp`` (and a ``log1p``, an ``atan``) that the compiler can vectorise, for the CPU
kernels (float64).

numba calls libm's ``exp`` one value at a time (the PyPI llvmlite has no vector math
library), which keeps a loop over points scalar. :func:`vexp` is plain arithmetic instead:
``exp(x) = 2**k * exp(r)`` with ``k = round(x / ln 2)`` and ``|r| <= ln2 / 2`` (Cody-Waite
reduction with a two-part ln 2), ``exp(r)`` by its Taylor polynomial to degree 13 (the
truncation error is below 1e-17 relative), and ``2**k`` built from its bit pattern. It is
within 1 ulp of ``numpy.exp`` over the whole float64 range, subnormal results included
(tested), returns inf on overflow, 0 on underflow, and nan for nan.

It must not be compiled with ``reassoc``: the reduction's ``x - k ln2`` relies on the
order of operations (a reassociating compiler once made such an exp wrong by 47%).
"""

import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

LOG2E = 1.4426950408889634
LN2_HI = 0.6931471803691238  # ln 2 to 32 bits: k * LN2_HI is exact for |k| < 2**20
LN2_LO = 1.9082149292705877e-10  # ln 2 - LN2_HI


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float64 whose IEEE bit pattern is the int64 ``bits`` (a no-op bitcast)."""
    signature = types.float64(types.int64)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return signature, codegen


@intrinsic
def _bits_from_float(typingctx, value):
    """The int64 IEEE bit pattern of the float64 ``value`` (a no-op bitcast)."""
    signature = types.int64(types.float64)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return signature, codegen


# 2**52 + 2**51: adding it to an integer-valued float64 k (|k| < 2**51) leaves k in the low
# bits of the sum's bit pattern. This converts k to an integer without a float-to-int64
# instruction, which AVX2 lacks (the loop would not vectorise).
MAGIC = 6755399441055744.0


@numba.njit(fastmath={"arcp", "contract"}, inline="always", cache=True)
def _power_of_two(k):
    # 2**k for integer-valued float64 k in [-1022, 1023]; the magic constant's own bits all
    # sit at or above bit 51 and are shifted out.
    return _float_from_bits((_bits_from_float(k + MAGIC) + 1023) << 52)


@numba.njit(fastmath={"arcp", "contract"}, inline="always", cache=True)
def _horner(x, coefficients):
    """The polynomial ``coefficients`` (highest power first, a tuple of floats) at ``x``,
    by Horner's rule; the loop over the tuple unrolls, so loops over points that call it
    still vectorise."""
    p = coefficients[0]
    for c in coefficients[1:]:
        p = p * x + c
    return p


# exp(r) = Σ r^k / k! to k = 13, highest power first.
_EXP_SERIES = tuple(1.0 / math.factorial(k) for k in range(13, -1, -1))


@numba.njit(fastmath={"arcp", "contract"}, inline="always", cache=True)
def vexp(x):
    """``exp(x)`` for float64 ``x``, branch-free so that loops over it vectorise."""
    # Clamping keeps k within [-1077, 1025]; 2**k is applied as two factors 2**k1 * 2**k2,
    # each a normal float, so overflow to inf and gradual underflow to 0 come out right.
    low = x if x > -746.0 else -746.0
    clamped = low if low < 710.0 else 710.0
    k = np.floor(clamped * LOG2E + 0.5)
    r = (clamped - k * LN2_HI) - k * LN2_LO
    p = _horner(r, _EXP_SERIES)
    half = np.floor(k * 0.5)
    result = (p * _power_of_two(half)) * _power_of_two(k - half)
    return x if x != x else result  # nan stays nan (min/max would have dropped it)


# The bit pattern of MAGIC: MAGIC_BITS + k, read as a float64, is MAGIC + k for integer
# |k| < 2**51 (the int64-to-float64 conversion that AVX2 lacks, done with an add).
MAGIC_BITS = 0x4338000000000000
MANTISSA = (1 << 52) - 1
ONE_BITS = 1023 << 52
SQRT2 = 1.4142135623730951


# The odd series' coefficients 1/3, 1/5, ..., 1/23 as two polynomials in q², of its even
# and of its odd powers of q, highest power first: two Horner chains of half the length,
# which run side by side (one chain of 11 was bound by its latency: the arctan loss's loop
# took 15% longer).
_ODD_SERIES_EVEN = tuple(1.0 / k for k in range(23, 2, -4))  # 1/23, 1/19, ..., 1/3
_ODD_SERIES_ODD = tuple(1.0 / k for k in range(21, 4, -4))  # 1/21, 1/17, ..., 1/5


@numba.njit(fastmath={"arcp", "contract"}, inline="always", cache=True)
def _odd_series(q):
    """``1/3 + q/5 + q²/7 + ... + q¹⁰/23``: with ``q = s²``, ``atanh(s) = s + s q (this)``
    (the log's series); with ``q = -s²``, ``atan(s) = s + s q (this)``. For ``|q| <= 0.04``
    the next term is below 1e-17 of the sum's."""
    q2 = q * q
    return _horner(q2, _ODD_SERIES_EVEN) + q * _horner(q2, _ODD_SERIES_ODD)


# tan(pi / 8): above it (up to 1), atan(t) = pi/4 + atan((t - 1) / (t + 1)).
TAN_PI_8 = 0.41421356237309503
PI_4 = 0.7853981633974483
PI_4_LO = 3.061616997868383e-17  # pi/4 - PI_4
PI_2 = 1.5707963267948966


@numba.njit(fastmath={"arcp", "contract"}, error_model="numpy", inline="always", cache=True)
def vatan(x):
    """``atan(x)`` for float64 ``x``, branch-free so that loops over it vectorise (the
    arctan loss's rho). Within 3 ulps of ``numpy.arctan`` (tested); ±pi/2 for ±inf, nan for
    nan.

    ``t = min(|x|, 1/|x|)`` (``atan(|x|) = pi/2 - atan(1/|x|)`` above 1), then
    ``u = (t - 1) / (t + 1)`` above tan(pi/8) (``atan(t) = pi/4 + atan(u)``), so
    ``|u| <= tan(pi/8)``; one halving ``atan(u) = 2 atan(v)``, ``v = u / (1 + sqrt(1 + u²))``
    (``|v| <= 0.2``), and ``atan(v)`` by its odd series to ``v**23``. With ``u`` written
    as ``num / den`` (``|x|`` or 1 over 1 or ``|x|``; ``|x| - 1`` over ``|x| + 1`` or its
    negative where shifted), ``v = num / (den + sqrt(den² + num²))``: one division and one
    square root, where three divisions and a square root were (the arctan loss's loop is
    bound by them: 234 -> 194 ns per 64 points; the series to u**43 without the halving,
    one division and no square root, was slower).
    """
    a = abs(x)
    inverted = a > 1.0
    shifted = (a > TAN_PI_8) & (a < 1.0 / TAN_PI_8)
    num = (a - 1.0 if a <= 1.0 else 1.0 - a) if shifted else (1.0 if inverted else a)
    den = (a + 1.0) if shifted else (a if inverted else 1.0)
    # den² overflows only for |x| beyond 1e154, where v (about 1 / (2 |x|)) is 0 to rounding
    v = num / (den + math.sqrt(den * den + num * num))
    q = -(v * v)
    r = 2.0 * (v + v * (q * _odd_series(q)))
    r = PI_4 + (r + PI_4_LO) if shifted else r
    r = PI_2 - r if inverted else r
    r = r if x >= 0.0 else -r
    return r if x == x else x


@numba.njit(fastmath={"arcp", "contract"}, error_model="numpy", inline="always", cache=True)
def vlog1p(z):
    """``log1p(z)`` for float64 ``z``, branch-free so that loops over it vectorise (the
    cauchy loss's rho). Within 3 ulps of ``numpy.log1p`` (tested); inf for inf, nan for nan
    and for z < -1, -inf at -1.

    ``u = 1 + z`` is split as ``m 2**e`` with ``m`` in ``[sqrt(1/2), sqrt(2))`` by its bits;
    ``log(m) = 2 atanh(s)``, ``s = (m - 1) / (m + 1)`` (``|s| <= 0.172``), by its odd series
    to ``s**23``; then Kahan's correction ``log(u) * z / (u - 1)`` restores what the rounding
    of ``1 + z`` lost (``u - 1`` is exact)."""
    u = 1.0 + z
    # A positive finite stand-in for u = 0, inf or nan keeps the bit arithmetic defined;
    # the selects at the end give those inputs their answers.
    v = u if u > 0.0 else 2.0
    v = v if v < math.inf else 2.0
    bits = _bits_from_float(v)
    m = _float_from_bits((bits & MANTISSA) | ONE_BITS)
    e = _float_from_bits((bits >> 52) + MAGIC_BITS) - MAGIC - 1023.0
    big = m > SQRT2
    m = m * 0.5 if big else m
    e = e + 1.0 if big else e
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = _odd_series(s2)
    log_v = e * LN2_HI + (e * LN2_LO + 2.0 * s * (p * s2) + 2.0 * s)
    d = v - 1.0
    result = log_v * (z / d) if d != 0.0 else z
    low = -math.inf if z == -1.0 else math.nan
    result = result if z > -1.0 else low
    result = result if z < math.inf else z
    return result if z == z else z


def exp_any(x):
    """``np.exp`` for a user's model compiled by numba: :func:`vexp` on float64 scalars and
    arrays (a loop the compiler vectorises), ``np.exp`` on anything else."""
    return np.exp(x)


@overload(exp_any)
def _exp_any(x):
    if isinstance(x, types.Float) and x.bitwidth == 64:
        return lambda x: vexp(x)
    if isinstance(x, types.Array) and x.dtype == types.float64:
        def array_exp(x):
            flat = x.ravel()
            out = np.empty(flat.shape[0])
            for i in range(flat.shape[0]):
                out[i] = vexp(flat[i])
            return out.reshape(x.shape)

        return array_exp
    return lambda x: np.exp(x)
