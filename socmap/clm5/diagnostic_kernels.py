"""Compiled per-site pass of the bulk-process diagnostics (docs/model.md §2.11, §3.6).

:func:`socmap.clm5.diagnostics.bulk_diagnostics` in torch reads the [12, 20, B] forcing fields in
several whole-array ops and issues ~60 small ops over [7, 20, B] and [20, B] tensors; on a CPU it
is bound by that memory traffic and per-op overhead. Here the exponentials stay vectorised in
torch (numba's ``exp`` and ``pow`` are scalar libm calls on this machine, no SVML): ξ^T for the
year, the depth scalar and the input-allocation terms. Everything between them is one compiled
pass per range of sites (:func:`socmap.clm5.kernels._over_sites` splits the sites over threads).

Layouts are the solver's: layer × site with **sites innermost**, float64, C-contiguous.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from socmap.clm5 import grid
from socmap.clm5.kernels import _np, _over_sites
from socmap.clm5.operators import DAYS_PER_YEAR, POOL_TAU
from socmap.clm5.parameters import INDEX

NL = grid.N_LAYERS
_jit = numba.njit(nogil=True, cache=True, error_model="numpy", boundscheck=False)
#: Unsigned site indices, as in socmap.clm5.kernels: a signed index's wrap-around check keeps the
#: inner loops from vectorising.
_u = numba.uint64

#: Rows of the kernel's output ``out`` [6, B] (the allocation index is finished in torch).
CARBON_INPUT, CUE, BASELINE, ENV_MODIFIER, VERTICAL, RESIDENCE = range(6)
#: Rows of the per-site scratch ``acc`` [N_ACC, B]: stocks of the 7 pools (g C m-2), decomposition
#: fluxes of the 6 donors L1, L2, L3, S1, S2, S3, 1 / τ of pools 1–6 (a multiply by a reciprocal
#: is ≤ 1 ulp from the reference's division), the monthly sums of ξ^T and ξ^W of one layer, Σ ξ̂
#: SOC dz, Σ V̄_jj SOC dz, Σ SOC dz, the cumulative input fraction, the count of allocation layers,
#: 1 / carbon input and w_scaling.
STOCK, FLUX, R_TAU = 0, 7, 13
XI_T, XI_W, ENV, VERT, SOC_TOTAL, CUM, COUNT, R_INPUT, W_SCALING, SOC = range(19, 29)
N_ACC = 29
#: Sites per block of the kernel: a block's scratch rows stay in L1/L2 while the ~30 short loops of
#: each layer (each over few arrays, so the compiler vectorises it) pass over them.
KBLOCK = 256
KBLOCK_B = 256


@_jit
def _bulk_sites(tw, water, theta, tau_col, w_col, depth, x, dz, fl1s1, fl2s1, fl3s2, fs1s2, fs1s3, fs2s1, fs2s3,
                fs3s1, inputs, v_diag, profile, out, rest, keep, soc_layer, xi_dz, acc, lo, hi):
    """The diagnostics' per-site sums (docs/model.md §2.11) for sites [lo, hi).

    Inputs: ``tw`` = ξ^T and ``water`` W [12, 20, B]; physical θ [B, 21], with the columns of the
    7 pools' turnover times ``tau_col`` [7] (yr) and of w_scaling ``w_col``; ``depth`` = ξ^depth
    [20, B]; pools ``x`` [7, 20, B] (g C m-3); ``dz`` [20] (m); the transfer fractions ``fl1s1``
    … ``fs3s1`` [B]; ``inputs`` [4, B] (g C m-2 d-1); ``v_diag`` [20, B] V̄'s diagonal (d-1);
    ``profile`` [20, B] input fractions φ.

    Outputs: ``out`` [6, B] (rows ``CARBON_INPUT`` … ``RESIDENCE``); ``soc_layer`` [20, B] SOC
    per layer / carbon input (yr m-1); ``keep`` [20, B] 1 where the cumulative input fraction is
    below 1 - 1e-12, else 0, and ``rest`` [20, B] max(1 - cumulative fraction, 1e-300) there, 1
    elsewhere (the caller raises it to 1/(100 z_j) in vectorised torch; 1, not 0, because log(0)
    takes exp's slow path), with the count of kept layers in ``acc[COUNT]``. ``acc`` [N_ACC, B]
    is scratch.

    Blocks of sites, then layers, then sites: every inner loop streams contiguous rows and
    vectorises. The two monthly means multiply (ξ̂ = mean ξ^T · mean min(w_scaling W, 1) ·
    ξ^depth, as the torch reference does); each sum runs in the reference's order (layers, then pools).
    """
    n = tw.shape[0]
    # the monthly means, in blocks of sites whose two month sums stay in L1 (12 passes per layer)
    for b0 in range(lo, hi, KBLOCK):
        s0, s1 = _u(b0), _u(min(hi, b0 + KBLOCK))
        for i in range(s0, s1):
            acc[W_SCALING, i] = theta[i, w_col]
        for j in range(NL):
            d = dz[j]
            for i in range(s0, s1):
                acc[XI_T, i] = 0.0
                acc[XI_W, i] = 0.0
            for m in range(n):
                for i in range(s0, s1):
                    acc[XI_T, i] += tw[m, j, i]
                    acc[XI_W, i] += min(water[m, j, i] * acc[W_SCALING, i], 1.0)
            for i in range(s0, s1):  # ξ̂_j dz_j
                xi_dz[j, i] = (acc[XI_T, i] / n) * (acc[XI_W, i] / n) * depth[j, i] * d
    # the rest, in blocks of sites whose scratch rows stay in L1
    for b0 in range(lo, hi, KBLOCK_B):
        s0, s1 = _u(b0), _u(min(hi, b0 + KBLOCK_B))
        for r in range(XI_T):
            for i in range(s0, s1):
                acc[r, i] = 0.0
        for r in range(ENV, COUNT + 1):
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
            for p in range(7):
                for i in range(s0, s1):
                    acc[STOCK + p, i] += x[p, j, i] * d
            for p in range(1, 7):
                for i in range(s0, s1):
                    acc[FLUX + p - 1, i] += x[p, j, i] * acc[R_TAU + p - 1, i] * xi_dz[j, i]
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
            for i in range(s0, s1):
                keep[j, i] = 1.0 if acc[CUM, i] < 1.0 - 1e-12 else 0.0
            for i in range(s0, s1):
                acc[COUNT, i] += keep[j, i]
            for i in range(s0, s1):
                rest[j, i] = max(1.0 - acc[CUM, i], 1e-300) if keep[j, i] != 0.0 else 1.0
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


#: θ columns the kernel reads (socmap.clm5.operators.POOL_TAU order for the turnover times).
_TAU_COLUMNS = np.array([INDEX[name] for name in POOL_TAU], dtype=np.int64)
_FRACTIONS = ("fl1s1", "fl2s1", "fl3s2", "fs1s2", "fs1s3", "fs2s1", "fs2s3", "fs3s1")


def bulk_sums(tw: torch.Tensor, water: torch.Tensor, theta: torch.Tensor, depth: torch.Tensor, pools: torch.Tensor,
              dz: torch.Tensor, fractions: dict[str, torch.Tensor], inputs: torch.Tensor, v_diag: torch.Tensor,
              profile: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run :func:`_bulk_sites` over all sites, split over threads (float64 CPU tensors, shapes as
    documented there; ``pools`` [7, 20, B]; ``fractions`` as :attr:`Operators.fractions`).
    Returns ``out`` [6, B], ``soc_layer``, ``rest`` and ``keep`` [20, B] and the count of kept
    layers [B]."""
    b = int(pools.shape[-1])
    out = torch.empty((6, b), dtype=torch.float64)
    soc_layer, rest, keep = (torch.empty((NL, b), dtype=torch.float64) for _ in range(3))
    acc = np.empty((N_ACC, b))
    _over_sites(_bulk_sites, b, _np(tw), _np(water), _np(theta), _TAU_COLUMNS, INDEX["w_scaling"], _np(depth),
                _np(pools), _np(dz), *(_np(fractions[name]) for name in _FRACTIONS), _np(inputs), _np(v_diag),
                _np(profile), out.numpy(), rest.numpy(), keep.numpy(), soc_layer.numpy(), np.empty((NL, b)), acc)
    return out, soc_layer, rest, keep, torch.from_numpy(acc[COUNT])


def warm_up() -> None:
    """Load (or compile, the first time on a machine) the kernel now, on a few sites (see
    :func:`socmap.clm5.kernels.warm_up`)."""
    n, z = 8, np.zeros
    fields, rows, pools, frac = np.full((12, NL, n), 0.5), np.full((NL, n), 0.5), np.ones((7, NL, n)), np.full(n, 0.1)
    _bulk_sites(fields, fields, np.ones((n, len(INDEX))), _TAU_COLUMNS, INDEX["w_scaling"], rows, pools, np.ones(NL),
                *([frac] * len(_FRACTIONS)), np.ones((4, n)), rows, rows, z((6, n)), z((NL, n)), z((NL, n)),
                z((NL, n)), z((NL, n)), z((N_ACC, n)), 0, n)
