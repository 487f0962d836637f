"""An ``exp`` that the compiler can vectorise, for the CPU batch kernels (float64).

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
def vexp(x):
    """``exp(x)`` for float64 ``x``, branch-free so that loops over it vectorise."""
    # Clamping keeps k within [-1077, 1025]; 2**k is applied as two factors 2**k1 * 2**k2,
    # each a normal float, so overflow to inf and gradual underflow to 0 come out right.
    low = x if x > -746.0 else -746.0
    clamped = low if low < 710.0 else 710.0
    k = np.floor(clamped * LOG2E + 0.5)
    r = (clamped - k * LN2_HI) - k * LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    half = np.floor(k * 0.5)
    result = (p * _power_of_two(half)) * _power_of_two(k - half)
    return x if x != x else result  # nan stays nan (min/max would have dropped it)


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
