"""Compiled per-site pass of the bulk-process diagnostics (docs/model.md §2.11, §3.6).

:func:`socmap.clm5.diagnostics.bulk_diagnostics` in torch reads the [12, 20, B] forcing fields in
several whole-array ops and issues ~60 small ops over [7, 20, B] and [20, B] tensors; on a CPU it
is bound by that memory traffic and per-op overhead. Here one compiled pass per range of sites
(:func:`socmap.clm5.kernels._over_sites` splits the sites over threads) reads each field once.
numba's ``math.exp`` is a scalar libm call (no SVML here), so ξ^T = Q10^T_exp and ξ^depth use the
pass's own exponential in plain arithmetic, which the compiler vectorises (:func:`_exp`; forming
ξ^T for the year in a torch exp first, then summing it, measured 0.23 + 0.19 µs per site against
0.33 fused), and the allocation terms' powers from its exp and log (:func:`_log`).

Layouts are the solver's: layer × site with **sites innermost**, float64, C-contiguous.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from socmap.clm5 import grid
from socmap.clm5.kernels import _np, _over_sites
from socmap.clm5.operators import DAYS_PER_YEAR, POOL_TAU
from socmap.clm5.parameters import INDEX

NL = grid.N_LAYERS
# contract: a·b + c as one FMA (the exponential's polynomial; rounding changes ≤ 1 ulp per op)
_jit = numba.njit(nogil=True, cache=True, error_model="numpy", boundscheck=False, fastmath={"contract"})
#: Unsigned site indices, as in socmap.clm5.kernels: a signed index's wrap-around check keeps the
#: inner loops from vectorising.
_u = numba.uint64

#: Rows of the kernel's output ``out`` [7, B].
CARBON_INPUT, CUE, BASELINE, ENV_MODIFIER, VERTICAL, RESIDENCE, ALLOCATION = range(7)
#: Rows of the per-site scratch ``acc`` [N_ACC, B]: stocks of the 7 pools (g C m-2), decomposition
#: fluxes of the 6 donors L1, L2, L3, S1, S2, S3, 1 / τ of pools 1–6 (a multiply by a reciprocal
#: is ≤ 1 ulp from the reference's division), the monthly sums of ξ^T and ξ^W of one layer, Σ ξ̂
#: SOC dz, Σ V̄_jj SOC dz, Σ SOC dz, the cumulative input fraction, the count of allocation layers,
#: 1 / carbon input, w_scaling, SOC of one layer, -1 / efolding, the count of exponents out of range
#: and the sum of the allocation terms.
STOCK, FLUX, R_TAU = 0, 7, 13
XI_T, XI_W, ENV, VERT, SOC_TOTAL, CUM, COUNT, R_INPUT, W_SCALING, SOC = range(19, 29)
R_EFOLD, OUT_OF_RANGE, ALLOC = range(29, 32)
N_ACC = 32
#: Sites per block of the kernel: a block's scratch rows stay in L2 while the short loops of each
#: layer (each over few rows, so that the compiler vectorises it) pass over them. Measured at 4,096
#: sites, 1 thread: 128–4,096 within noise; larger batches would stream the rows from memory.
KBLOCK = 1024


# ----------------------------------------------------------------------------------------
# exp(y) in plain arithmetic that the compiler vectorises (numba's math.exp is a scalar libm call):
# y = k ln2 + r with k = round(y / ln2), |r| ≤ ln2 / 2 (Cody–Waite: ln2 in two parts, so k·LN2_HI
# is exact), exp(r) by its Taylor polynomial of degree 13 (truncation < 1e-17 relative), times 2^k
# built in the exponent bits. Within a few ulp of libm's exp on |y| ≤ EXP_RANGE (tested).
# ----------------------------------------------------------------------------------------

#: |y| beyond which the kernel does not trust its exponential (2^k must stay a normal number):
#: a call that meets one is flagged and its caller takes the torch ops instead.
EXP_RANGE = 700.0
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 to 32 bits: k · _LN2_HI exact for |k| < 2^20
_LN2_LO = 1.90821492927058770002e-10
#: 1.5 · 2^52: adding it rounds to an integer, which then sits in the low mantissa bits
_ROUND = 6755399441055744.0
_ROUND_BITS = int(np.float64(_ROUND).view(np.int64))
_C = tuple(1.0 / math.factorial(k) for k in range(14))
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = _C[2:]


@_jit
def _exp(y):
    """exp(y) for |y| ≤ EXP_RANGE (see above; the caller checks the range)."""
    t = y * _LOG2E + _ROUND
    k = t - _ROUND
    r = (y - k * _LN2_HI) - k * _LN2_LO
    p = _C13
    p = p * r + _C12
    p = p * r + _C11
    p = p * r + _C10
    p = p * r + _C9
    p = p * r + _C8
    p = p * r + _C7
    p = p * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * r + 1.0
    p = p * r + 1.0
    scale = (np.float64(t).view(np.int64) - _ROUND_BITS + 1023) << 52  # 2^k: k sits in t's low bits
    return p * np.int64(scale).view(np.float64)


#: ln x = e ln2 + ln m for x = m 2^e, m in [√½, √2): ln m = 2 atanh(u), u = (m - 1)/(m + 1), |u| ≤
#: 0.1716, by its series to u^23 (truncation < 1e-18 relative). Positive normal x only: the caller's
#: arguments lie in [1e-300, 1] (the allocation terms); within a few ulp of libm's log (tested).
_MANTISSA = (1 << 52) - 1
_ONE_BITS = int(np.float64(1.0).view(np.int64))
_SQRT2 = math.sqrt(2.0)
_A = tuple(1.0 / (2 * k + 1) for k in range(12))


@_jit
def _log(x):
    """ln(x) for a positive normal ``x`` (see above)."""
    b = np.float64(x).view(np.int64)
    e = np.float64((b >> 52) - 1023)
    m = np.int64((b & _MANTISSA) | _ONE_BITS).view(np.float64)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = e + 1.0 if big else e
    u = (m - 1.0) / (m + 1.0)
    u2 = u * u
    q = _A[11]
    q = q * u2 + _A[10]
    q = q * u2 + _A[9]
    q = q * u2 + _A[8]
    q = q * u2 + _A[7]
    q = q * u2 + _A[6]
    q = q * u2 + _A[5]
    q = q * u2 + _A[4]
    q = q * u2 + _A[3]
    q = q * u2 + _A[2]
    q = q * u2 + _A[1]
    q = q * u2 + 1.0
    return e * _LN2_HI + (e * _LN2_LO + 2.0 * u * q)


@_jit
def _exp_log_rows(y, exp_out, log_out):
    """:func:`_exp` and :func:`_log` of ``y`` [N] into ``exp_out`` and ``log_out`` [N] (for the tests)."""
    for i in range(y.shape[0]):
        exp_out[i] = _exp(y[i])
        log_out[i] = _log(y[i])


@_jit
def _bulk_sites(temp_exponent, log_q10, water, theta, tau_col, w_col, efolding_col, node, x, dz,
                fl1s1, fl2s1, fl3s2, fs1s2, fs1s3, fs2s1, fs2s3, fs3s1, inputs, v_diag, profile,
                out, soc_layer, xi_dz, flags, acc, lo, hi):
    """The diagnostics' per-site sums (docs/model.md §2.11) for sites [lo, hi).

    Inputs: ``temp_exponent`` (T - 298.15 K) / 10 and ``water`` W [12, 20, B]; ``log_q10`` [B];
    physical θ [B, 21], with the columns of the 7 pools' turnover times ``tau_col`` [7] (yr), of
    w_scaling ``w_col`` and of the e-folding depth ``efolding_col`` (m); the layer nodes ``node``
    and thicknesses ``dz`` [20] (m); pools ``x`` [7, 20, B] (g C m-3); the transfer fractions ``fl1s1``
    … ``fs3s1`` [B]; ``inputs`` [4, B] (g C m-2 d-1); ``v_diag`` [20, B] V̄'s diagonal (d-1);
    ``profile`` [20, B] input fractions φ.

    Outputs: ``out`` [7, B] (rows ``CARBON_INPUT`` … ``ALLOCATION``); ``soc_layer`` [20, B] SOC
    per layer / carbon input (yr m-1); ``flags`` [B] > 0 at a site where an exponent was out of
    ``EXP_RANGE`` or NaN (its values are then not to be used). ``xi_dz`` [20, B] and ``acc``
    [N_ACC, B] are scratch.

    Blocks of sites, then layers, then sites: every inner loop streams contiguous rows and
    vectorises. The two monthly means multiply (ξ̂ = mean ξ^T · mean min(w_scaling W, 1) ·
    ξ^depth, as the torch reference does); each sum runs in the reference's order (layers, then pools).
    """
    n = temp_exponent.shape[0]
    # the monthly means, in blocks of sites whose scratch rows stay in L2 (see KBLOCK)
    for b0 in range(lo, hi, KBLOCK):
        s0, s1 = _u(b0), _u(min(hi, b0 + KBLOCK))
        for i in range(s0, s1):
            acc[W_SCALING, i] = theta[i, w_col]
            acc[R_EFOLD, i] = -1.0 / theta[i, efolding_col]
            acc[OUT_OF_RANGE, i] = 0.0
        for j in range(NL):
            d = dz[j]
            for i in range(s0, s1):
                acc[XI_T, i] = 0.0
                acc[XI_W, i] = 0.0
            for m in range(n):
                for i in range(s0, s1):
                    y = temp_exponent[m, j, i] * log_q10[i]
                    acc[OUT_OF_RANGE, i] += 0.0 if abs(y) <= EXP_RANGE else 1.0
                    acc[XI_T, i] += _exp(y)
                    acc[XI_W, i] += min(water[m, j, i] * acc[W_SCALING, i], 1.0)
            for i in range(s0, s1):  # ξ^depth = exp(-z_j / efolding), kept in XI_W
                y = node[j] * acc[R_EFOLD, i]
                acc[OUT_OF_RANGE, i] += 0.0 if abs(y) <= EXP_RANGE else 1.0
                acc[XI_W, i] = (acc[XI_W, i] / n) * _exp(y)
            for i in range(s0, s1):  # ξ̂_j dz_j
                xi_dz[j, i] = (acc[XI_T, i] / n) * acc[XI_W, i] * d
        for i in range(s0, s1):
            flags[i] = acc[OUT_OF_RANGE, i]
    # the rest, in the same blocks
    for b0 in range(lo, hi, KBLOCK):
        s0, s1 = _u(b0), _u(min(hi, b0 + KBLOCK))
        for r in range(XI_T):
            for i in range(s0, s1):
                acc[r, i] = 0.0
        for r in (ENV, VERT, SOC_TOTAL, CUM, COUNT, ALLOC):
            for i in range(s0, s1):
                acc[r, i] = 0.0
        for i in range(s0, s1):
            ci = (((inputs[0, i] + inputs[1, i]) + inputs[2, i]) + inputs[3, i]) * DAYS_PER_YEAR
            out[CARBON_INPUT, i] = ci
            acc[R_INPUT, i] = 1.0 / ci
        for p in range(1, 7):
            c = tau_col[p]
            for i in range(s0, s1):
                acc[R_TAU + p - 1, i] = 1.0 / theta[i, c]
        for j in range(NL):
            d = dz[j]
            # one output row per loop, so that the vectoriser's runtime overlap checks stay few
            for i in range(s0, s1):
                acc[STOCK, i] += x[0, j, i] * d
            for p in range(1, 7):  # Σ_j x ξ̂ dz per pool; × 1/τ after the layers
                for i in range(s0, s1):
                    v = x[p, j, i]
                    acc[STOCK + p, i] += v * d
                    acc[FLUX + p - 1, i] += v * xi_dz[j, i]
            for i in range(s0, s1):
                acc[SOC, i] = (x[4, j, i] + x[5, j, i]) + x[6, j, i]
            for i in range(s0, s1):
                acc[SOC_TOTAL, i] += acc[SOC, i] * d
            for i in range(s0, s1):
                acc[ENV, i] += xi_dz[j, i] * acc[SOC, i]
            for i in range(s0, s1):
                acc[VERT, i] += v_diag[j, i] * (acc[SOC, i] * d)
            for i in range(s0, s1):
                soc_layer[j, i] = acc[SOC, i] * acc[R_INPUT, i]
            for i in range(s0, s1):
                acc[CUM, i] += profile[j, i]
            # Jackson-β allocation terms (1 - cumulative φ)^(1 / (100 z_j)) over the layers where the
            # cumulative fraction is below 1 - 1e-12 (elsewhere the log of 1, then masked: no NaN/inf enters)
            e = 1.0 / (100.0 * node[j])
            for i in range(s0, s1):
                c = acc[CUM, i]
                use = c < 1.0 - 1e-12
                acc[COUNT, i] += 1.0 if use else 0.0
                term = _exp(e * _log(max(1.0 - c, 1e-300) if use else 1.0))
                acc[ALLOC, i] += term if use else 0.0
        for p in range(1, 7):
            for i in range(s0, s1):
                acc[FLUX + p - 1, i] *= acc[R_TAU + p - 1, i]
        for i in range(s0, s1):
            stock_all = acc[STOCK, i]
            stock_rate = acc[STOCK, i] / theta[i, tau_col[0]]
            for p in range(1, 7):
                stock_all += acc[STOCK + p, i]
                stock_rate += acc[STOCK + p, i] * acc[R_TAU + p - 1, i]
            passed = (fl1s1[i] * acc[FLUX, i] + fl2s1[i] * acc[FLUX + 1, i] + fl3s2[i] * acc[FLUX + 2, i]
                      + (fs1s2[i] + fs1s3[i]) * acc[FLUX + 3, i] + (fs2s1[i] + fs2s3[i]) * acc[FLUX + 4, i]
                      + fs3s1[i] * acc[FLUX + 5, i])
            flux_all = acc[FLUX, i]
            for p in range(1, 6):
                flux_all += acc[FLUX + p, i]
            soc_total = acc[SOC_TOTAL, i]
            out[CUE, i] = passed / flux_all
            out[BASELINE, i] = stock_rate / stock_all
            out[ENV_MODIFIER, i] = acc[ENV, i] / soc_total
            out[VERTICAL, i] = DAYS_PER_YEAR * acc[VERT, i] / soc_total
            out[RESIDENCE, i] = soc_total * acc[R_INPUT, i]
            out[ALLOCATION, i] = acc[ALLOC, i] / max(acc[COUNT, i], 1.0)


#: θ columns the kernel reads (socmap.clm5.operators.POOL_TAU order for the turnover times).
_TAU_COLUMNS = np.array([INDEX[name] for name in POOL_TAU], dtype=np.int64)
_FRACTIONS = ("fl1s1", "fl2s1", "fl3s2", "fs1s2", "fs1s3", "fs2s1", "fs2s3", "fs3s1")


def bulk_sums(temp_exponent: torch.Tensor, log_q10: torch.Tensor, water: torch.Tensor, theta: torch.Tensor,
              node: torch.Tensor, pools: torch.Tensor, dz: torch.Tensor, fractions: dict[str, torch.Tensor],
              inputs: torch.Tensor, v_diag: torch.Tensor, profile: torch.Tensor,
              ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Run :func:`_bulk_sites` over all sites, split over threads (float64 CPU tensors, shapes as
    documented there; ``pools`` [7, 20, B]; ``fractions`` as :attr:`Operators.fractions`).

    Returns ``out`` [7, B] and ``soc_layer`` [20, B]; None where an exponent left the kernel's
    range (``EXP_RANGE``) or was NaN.
    """
    b = int(pools.shape[-1])
    out, soc_layer = torch.empty((7, b), dtype=torch.float64), torch.empty((NL, b), dtype=torch.float64)
    flags = np.empty(b)
    _over_sites(_bulk_sites, b, _np(temp_exponent), _np(log_q10), _np(water), _np(theta), _TAU_COLUMNS,
                INDEX["w_scaling"], INDEX["efolding"], _np(node), _np(pools), _np(dz),
                *(_np(fractions[name]) for name in _FRACTIONS), _np(inputs), _np(v_diag), _np(profile), out.numpy(),
                soc_layer.numpy(), np.empty((NL, b)), flags, np.empty((N_ACC, b)))
    if flags.any():
        return None
    return out, soc_layer


def warm_up() -> None:
    """Load (or compile, the first time on a machine) the kernels now, on a few sites (see
    :func:`socmap.clm5.kernels.warm_up`)."""
    n, z = 8, np.zeros
    fields, rows, pools, frac = np.full((12, NL, n), 0.5), np.full((NL, n), 0.5), np.ones((7, NL, n)), np.full(n, 0.1)
    _bulk_sites(fields, np.ones(n), fields, np.ones((n, len(INDEX))), _TAU_COLUMNS, INDEX["w_scaling"], INDEX["efolding"],
                np.ones(NL), pools, np.ones(NL), *([frac] * len(_FRACTIONS)), np.ones((4, n)), rows, rows, z((7, n)),
                z((NL, n)), z((NL, n)), z(n), z((N_ACC, n)), 0, n)
