"""Compiled per-site kernels of the structured steady-state solver (docs/model.md §3.6).

The torch sweeps of :mod:`socmap.clm5.solver` issue ~15 small tensor ops per layer; on a CPU they
are bound by per-op overhead and memory traffic, and ops on [B] slices run on one thread. These
kernels do the same eliminations (litter Thomas LU, SOM block LU with explicit 3×3 inverses),
substitutions and adjoint outer products in one compiled pass per layer over a range of sites
(numba): each intermediate lives in registers, each layer's rows are streamed once. The monthly
environmental means of :mod:`socmap.clm5.operators` are summed here too. The caller's threads each
take a range of sites (the kernels release the GIL).

Layouts follow the solver's: every array is layer × site with **sites innermost**, float64,
C-contiguous. ``f`` [10, B] holds the transfer fractions in ``TRANSFER_EDGES`` order (``EDGES``).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

from socmap.clm5 import grid

NL = grid.N_LAYERS
#: Below this many sites a call runs on the calling thread only (a thread hand-off costs ~20 µs).
MIN_SITES_PER_THREAD = 2048

# fractions by row of ``f``, in socmap.clm5.operators.TRANSFER_EDGES order (socmap.clm5.solver checks
# at import that the edges are these (receiver, donor) pairs)
F_CWD_L2, F_CWD_L3, F_L1_S1, F_L2_S1, F_L3_S2, F_S1_S2, F_S1_S3, F_S2_S1, F_S2_S3, F_S3_S1 = range(10)
EDGES = ((2, 0), (3, 0), (4, 1), (4, 2), (5, 3), (5, 4), (6, 4), (4, 5), (6, 5), (4, 6))

_jit = numba.njit(nogil=True, cache=True, error_model="numpy", boundscheck=False)
#: Site indices are unsigned: numba wraps negative indices around, and the check that needs on a
#: signed index the compiler cannot bound keeps the inner loops from vectorising.
_u = numba.uint64


@_jit
def _cwd_litter_solve(k, lower, f, cwd_diag, cwd_decayed, rden, cp, src, x, lo, hi):
    """CWD (no transport) and its fragmentation flux into L2/L3, the litter substitutions, and the
    litter decomposition fluxes as the SOM right-hand side, from b in ``src`` into ``x``: ``src``
    [7, 20, B] (may be ``x`` itself) or [4, 20, B] (zero SOM input, the steady state)."""
    full = src.shape[0] == 7
    for j in range(NL):
        for i in range(_u(lo), _u(hi)):
            c = src[0, j, i]
            flux = c * cwd_decayed[j, i]
            x[0, j, i] = c / cwd_diag[j, i]
            x[1, j, i] = src[1, j, i]
            x[2, j, i] = src[2, j, i] + flux * f[F_CWD_L2, i]
            x[3, j, i] = src[3, j, i] + flux * f[F_CWD_L3, i]
    for j in range(NL):
        for p in range(3):
            for i in range(_u(lo), _u(hi)):
                y = x[1 + p, j, i]
                if j > 0:
                    y -= x[1 + p, j - 1, i] * lower[j, i]
                x[1 + p, j, i] = y * rden[j, p, i]
    for j in range(NL - 2, -1, -1):
        for p in range(3):
            for i in range(_u(lo), _u(hi)):
                x[1 + p, j, i] -= cp[j, p, i] * x[1 + p, j + 1, i]
    for j in range(NL):
        for i in range(_u(lo), _u(hi)):
            s4 = src[4, j, i] if full else 0.0
            s5 = src[5, j, i] if full else 0.0
            x[4, j, i] = s4 + k[1, j, i] * x[1, j, i] * f[F_L1_S1, i] + k[2, j, i] * x[2, j, i] * f[F_L2_S1, i]
            x[5, j, i] = s5 + k[3, j, i] * x[3, j, i] * f[F_L3_S2, i]
            x[6, j, i] = src[6, j, i] if full else 0.0


@_jit
def _factor_sites(k, lower, vds, upper, f, cwd_diag, cwd_decayed, src, rhs, has_rhs, rden, cp, inv, lo, hi):
    """The LU factors of M_s for sites [lo, hi), and, given ``has_rhs``, M_s X = b solved into
    ``rhs``, where b is ``src`` [7, 20, B] or, with 4 pools, ``src`` and zero SOM input (the
    steady state); ``src`` may be ``rhs`` itself."""
    # litter: Thomas LU of the three tridiagonal systems, pivots 1/d_j and multipliers c_j
    for j in range(NL):
        for p in range(3):
            for i in range(_u(lo), _u(hi)):
                d = k[1 + p, j, i] + vds[j, i]
                if j > 0:
                    d -= cp[j - 1, p, i] * lower[j, i]
                r = 1.0 / d
                rden[j, p, i] = r
                cp[j, p, i] = r * upper[j, i]
    if has_rhs:
        _cwd_litter_solve(k, lower, f, cwd_diag, cwd_decayed, rden, cp, src, rhs, lo, hi)
    # SOM: S_j = D_j - l_j u_{j-1} S_{j-1}^-1, inverted by the adjugate; forward substitution alongside
    for j in range(NL):
        for i in range(_u(lo), _u(hi)):
            vd = vds[j, i]
            s1, s2, s3 = k[4, j, i], k[5, j, i], k[6, j, i]
            # D_j = diag(K_s) + V_jj 𝟙 - F K_s, row-major (S2 receives nothing from S3)
            a, b, c = s1 + vd, -f[F_S2_S1, i] * s2, -f[F_S3_S1, i] * s3
            d, e, g6 = -f[F_S1_S2, i] * s1, s2 + vd, 0.0
            g, h, m9 = -f[F_S1_S3, i] * s1, -f[F_S2_S3, i] * s2, s3 + vd
            if j > 0:
                w = -(lower[j, i] * upper[j - 1, i])
                a += w * inv[j - 1, 0, i]
                b += w * inv[j - 1, 1, i]
                c += w * inv[j - 1, 2, i]
                d += w * inv[j - 1, 3, i]
                e += w * inv[j - 1, 4, i]
                g6 += w * inv[j - 1, 5, i]
                g += w * inv[j - 1, 6, i]
                h += w * inv[j - 1, 7, i]
                m9 += w * inv[j - 1, 8, i]
            c0 = e * m9 - g6 * h
            c1 = c * h - b * m9
            c2 = b * g6 - c * e
            c3 = g6 * g - d * m9
            c4 = a * m9 - c * g
            c5 = c * d - a * g6
            c6 = d * h - e * g
            c7 = b * g - a * h
            c8 = a * e - b * d
            rdet = 1.0 / (a * c0 + b * c3 + c * c6)
            c0 *= rdet
            c1 *= rdet
            c2 *= rdet
            c3 *= rdet
            c4 *= rdet
            c5 *= rdet
            c6 *= rdet
            c7 *= rdet
            c8 *= rdet
            inv[j, 0, i], inv[j, 1, i], inv[j, 2, i] = c0, c1, c2
            inv[j, 3, i], inv[j, 4, i], inv[j, 5, i] = c3, c4, c5
            inv[j, 6, i], inv[j, 7, i], inv[j, 8, i] = c6, c7, c8
            if has_rhs:  # y_j = S_j^-1 (b_j - l_j y_{j-1}) while S_j^-1 is in registers (as in _solve_sites;
                # a helper called here, even inlined, measured 0.4 µs per site slower at 16k sites)
                t0, t1, t2 = rhs[4, j, i], rhs[5, j, i], rhs[6, j, i]
                if j > 0:
                    lj = lower[j, i]
                    t0 -= rhs[4, j - 1, i] * lj
                    t1 -= rhs[5, j - 1, i] * lj
                    t2 -= rhs[6, j - 1, i] * lj
                rhs[4, j, i] = c0 * t0 + c1 * t1 + c2 * t2
                rhs[5, j, i] = c3 * t0 + c4 * t1 + c5 * t2
                rhs[6, j, i] = c6 * t0 + c7 * t1 + c8 * t2
    if has_rhs:
        _som_back(upper, inv, rhs, lo, hi)


@_jit
def _som_back(upper, inv, x, lo, hi):
    """x_j = y_j - u_j S_j^-1 x_{j+1} on the SOM pools of ``x``."""
    for j in range(NL - 2, -1, -1):
        for i in range(_u(lo), _u(hi)):
            x0, x1, x2 = x[4, j + 1, i], x[5, j + 1, i], x[6, j + 1, i]
            u = upper[j, i]
            x[4, j, i] -= u * (inv[j, 0, i] * x0 + inv[j, 1, i] * x1 + inv[j, 2, i] * x2)
            x[5, j, i] -= u * (inv[j, 3, i] * x0 + inv[j, 4, i] * x1 + inv[j, 5, i] * x2)
            x[6, j, i] -= u * (inv[j, 6, i] * x0 + inv[j, 7, i] * x1 + inv[j, 8, i] * x2)


@_jit
def _solve_sites(k, lower, upper, f, cwd_diag, cwd_decayed, rden, cp, inv, x, lo, hi):
    """M_s X = b in place in ``x`` with a kept factorization (the substitutions only)."""
    _cwd_litter_solve(k, lower, f, cwd_diag, cwd_decayed, rden, cp, x, x, lo, hi)
    for j in range(NL):  # y_j = S_j^-1 (b_j - l_j y_{j-1}), written out: a call per site measured 2× slower
        for i in range(_u(lo), _u(hi)):
            t0, t1, t2 = x[4, j, i], x[5, j, i], x[6, j, i]
            if j > 0:
                lj = lower[j, i]
                t0 -= x[4, j - 1, i] * lj
                t1 -= x[5, j - 1, i] * lj
                t2 -= x[6, j - 1, i] * lj
            x[4, j, i] = inv[j, 0, i] * t0 + inv[j, 1, i] * t1 + inv[j, 2, i] * t2
            x[5, j, i] = inv[j, 3, i] * t0 + inv[j, 4, i] * t1 + inv[j, 5, i] * t2
            x[6, j, i] = inv[j, 6, i] * t0 + inv[j, 7, i] * t1 + inv[j, 8, i] * t2
    _som_back(upper, inv, x, lo, hi)


@_jit
def _transposed_sites(k, lower, upper, f, rden, cp, inv, lam, lo, hi):
    """M_sᵀ λ = g in place in ``lam`` for the SOM and litter pools (Mᵀ is block upper triangular:
    SOM first); CWD's row is left to the caller (``ShiftedFactorization._cwd_adjoint``)."""
    # SOM: Uᵀ z = g, z_j = S_j^-T (g_j - u_{j-1} z_{j-1}); then Lᵀ λ = z, λ_j = z_j - l_{j+1} S_j^-T λ_{j+1}
    for j in range(NL):
        for i in range(_u(lo), _u(hi)):
            t0, t1, t2 = lam[4, j, i], lam[5, j, i], lam[6, j, i]
            if j > 0:
                u = upper[j - 1, i]
                t0 -= lam[4, j - 1, i] * u
                t1 -= lam[5, j - 1, i] * u
                t2 -= lam[6, j - 1, i] * u
            lam[4, j, i] = inv[j, 0, i] * t0 + inv[j, 3, i] * t1 + inv[j, 6, i] * t2
            lam[5, j, i] = inv[j, 1, i] * t0 + inv[j, 4, i] * t1 + inv[j, 7, i] * t2
            lam[6, j, i] = inv[j, 2, i] * t0 + inv[j, 5, i] * t1 + inv[j, 8, i] * t2
    for j in range(NL - 2, -1, -1):
        for i in range(_u(lo), _u(hi)):
            z0, z1, z2 = lam[4, j + 1, i], lam[5, j + 1, i], lam[6, j + 1, i]
            w = lower[j + 1, i]
            lam[4, j, i] -= w * (inv[j, 0, i] * z0 + inv[j, 3, i] * z1 + inv[j, 6, i] * z2)
            lam[5, j, i] -= w * (inv[j, 1, i] * z0 + inv[j, 4, i] * z1 + inv[j, 7, i] * z2)
            lam[6, j, i] -= w * (inv[j, 2, i] * z0 + inv[j, 5, i] * z1 + inv[j, 8, i] * z2)
    # litter: g' = g + K Aᵀ λ_SOM; Uᵀ y = g' (y_j = g'_j - c_{j-1} y_{j-1}); Lᵀ λ = y (λ_j = (y_j - l_{j+1} λ_{j+1}) / d_j)
    for j in range(NL):
        for i in range(_u(lo), _u(hi)):
            lam[1, j, i] += k[1, j, i] * lam[4, j, i] * f[F_L1_S1, i]
            lam[2, j, i] += k[2, j, i] * lam[4, j, i] * f[F_L2_S1, i]
            lam[3, j, i] += k[3, j, i] * lam[5, j, i] * f[F_L3_S2, i]
    for j in range(1, NL):
        for p in range(3):
            for i in range(_u(lo), _u(hi)):
                lam[1 + p, j, i] -= cp[j - 1, p, i] * lam[1 + p, j - 1, i]
    for p in range(3):
        for i in range(_u(lo), _u(hi)):
            lam[1 + p, NL - 1, i] *= rden[NL - 1, p, i]
    for j in range(NL - 2, -1, -1):
        for p in range(3):
            for i in range(_u(lo), _u(hi)):
                lam[1 + p, j, i] = (lam[1 + p, j, i] - lam[1 + p, j + 1, i] * lower[j + 1, i]) * rden[j, p, i]


# ----------------------------------------------------------------------------------------
# dispatch: tensors in, site ranges over the caller's threads
# ----------------------------------------------------------------------------------------

_pool: ThreadPoolExecutor | None = None


def _forget_pool() -> None:
    global _pool
    _pool = None  # a forked child inherits the pool object but not its threads


os.register_at_fork(after_in_child=_forget_pool)


def _threads_for(n_sites: int) -> int:
    return max(1, min(torch.get_num_threads(), n_sites // MIN_SITES_PER_THREAD))


def _over_sites(kernel, n_sites: int, *args) -> None:
    """Run ``kernel(*args, lo, hi)`` over [0, n_sites) split into one range per thread
    (``torch.get_num_threads()``, so a process limited to one thread stays on one)."""
    global _pool
    n = _threads_for(n_sites)
    if n == 1:
        kernel(*args, 0, n_sites)
        return
    if _pool is None or _pool._max_workers < n - 1:  # noqa: SLF001 - grow to the thread count asked for
        _pool = ThreadPoolExecutor(max(n - 1, os.cpu_count() or 1), thread_name_prefix="socmap-kernel")
    step = 8 * math.ceil(n_sites / (8 * n))  # whole cache lines of sites per range
    bounds = [(lo, min(n_sites, lo + step)) for lo in range(0, n_sites, step)]
    futures = [_pool.submit(kernel, *args, lo, hi) for lo, hi in bounds[1:]]
    kernel(*args, *bounds[0])
    for fut in futures:
        fut.result()


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the kernels apply: float64 tensors on the CPU."""
    return all(t.device.type == "cpu" and t.dtype == torch.float64 for t in tensors)


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy())


def factor(k: torch.Tensor, lower: torch.Tensor, vdiag_s: torch.Tensor, upper: torch.Tensor, f: torch.Tensor,
           cwd_diag: torch.Tensor, cwd_decayed: torch.Tensor, rhs: torch.Tensor | None, out: torch.Tensor | None = None,
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The factorization of :class:`~socmap.clm5.solver.ShiftedFactorization`, and M_s X = ``rhs`` solved.

    Parameters: decay ``k`` [7, 20, B] (d-1); V̄'s bands ``lower``, ``vdiag_s`` (shift included),
    ``upper`` [20, B]; fractions ``f`` [10, B]; CWD's ``k + s`` and ``k/(k + s)`` [20, B]; ``rhs``
    [7, 20, B], or [4, 20, B] for inputs to CWD and litter only (the steady state's), or None;
    ``out`` [7, 20, B] C-contiguous for the solution (may be ``rhs``; default a new tensor).
    Returns the litter pivots 1/d_j and multipliers c_j [20, 3, B], the Schur inverses S_j^-1
    [20, 9, B] and the solution X [7, 20, B] (None without ``rhs``).
    """
    b = int(k.shape[-1])
    rden = torch.empty((NL, 3, b), dtype=torch.float64)
    cp, inv = torch.empty_like(rden), torch.empty((NL, 9, b), dtype=torch.float64)
    if rhs is not None and out is None:
        out = torch.empty((7, NL, b), dtype=torch.float64)
    if out is not None and not out.is_contiguous():
        raise ValueError("out must be C-contiguous")
    empty = np.empty((7, NL, 0))
    _over_sites(_factor_sites, b, _np(k), _np(lower), _np(vdiag_s), _np(upper), _np(f), _np(cwd_diag), _np(cwd_decayed),
                empty if rhs is None else _np(rhs), empty if out is None else out.numpy(), rhs is not None,
                rden.numpy(), cp.numpy(), inv.numpy())
    return rden, cp, inv, out


def solve(k, lower, upper, f, cwd_diag, cwd_decayed, rden, cp, inv, x: torch.Tensor) -> torch.Tensor:
    """M_s X = b for b in ``x`` [7, 20, B] (C-contiguous, overwritten), with :func:`factor`'s factors."""
    _over_sites(_solve_sites, int(x.shape[-1]), _np(k), _np(lower), _np(upper), _np(f), _np(cwd_diag), _np(cwd_decayed),
                rden.numpy(), cp.numpy(), inv.numpy(), x.numpy())
    return x


def solve_transposed(k, lower, upper, f, rden, cp, inv, lam: torch.Tensor) -> torch.Tensor:
    """M_sᵀ λ = g for g in ``lam`` [7, 20, B] (C-contiguous, overwritten), with :func:`factor`'s
    factors, except CWD's λ (pool 0 keeps g_c): the caller forms it in torch, with the same ops as
    the gradient that cancels against it (docs/model.md §3.3: τ_CWD's exact zero)."""
    _over_sites(_transposed_sites, int(lam.shape[-1]), _np(k), _np(lower), _np(upper), _np(f),
                rden.numpy(), cp.numpy(), inv.numpy(), lam.numpy())
    return lam


#: Sites per block of the adjoint's outer products: a block's rows stay in L1/L2 while ~700 short
#: loops (each over few arrays, so the compiler vectorises it) pass over them.
GRAD_BLOCK = 256


@_jit
def _steady_grads_sites(k, f, x, lam, grad_k, grad_t, grad_f, lo, hi):
    """Outer products of the steady state's adjoint over M's sparsity (docs/model.md §3.3):
    dL/dk_d = x_d (Σ_r A_rd λ_r - λ_d), dL/dV̄ = -Σ_p λ_p xₚᵀ on the three bands (pools 1–6; CWD
    has no transport), dL/df_(r←d) = Σ_j λ_r k_d x_d. Blocks of sites, each term its own loop."""
    edges = ((F_CWD_L2, 2, 0), (F_CWD_L3, 3, 0), (F_L1_S1, 4, 1), (F_L2_S1, 4, 2), (F_L3_S2, 5, 3),
             (F_S1_S2, 5, 4), (F_S1_S3, 6, 4), (F_S2_S1, 4, 5), (F_S2_S3, 6, 5), (F_S3_S1, 4, 6))
    for b0 in range(lo, hi, GRAD_BLOCK):
        s0, s1 = _u(b0), _u(min(hi, b0 + GRAD_BLOCK))
        for j in range(NL):
            # dL/dk: -λ_d, plus λ_r f for every transfer out of d, times x_d; CWD's (d = 0) is the
            # caller's, from the very sum its λ was formed with (so that it cancels exactly)
            for d in range(1, 7):
                for i in range(s0, s1):
                    grad_k[d, j, i] = -lam[d, j, i]
            for e, r, d in edges[2:]:
                for i in range(s0, s1):
                    grad_k[d, j, i] += lam[r, j, i] * f[e, i]
            for d in range(1, 7):
                for i in range(s0, s1):
                    grad_k[d, j, i] *= x[d, j, i]
            # dL/dV̄, bands (lower, diagonal, upper) of row j
            for band in range(3):
                col = j + band - 1
                if col < 0 or col >= NL:
                    for i in range(s0, s1):
                        grad_t[band, j, i] = 0.0
                    continue
                for i in range(s0, s1):
                    grad_t[band, j, i] = -lam[1, j, i] * x[1, col, i]
                for p in range(2, 7):
                    for i in range(s0, s1):
                        grad_t[band, j, i] -= lam[p, j, i] * x[p, col, i]
            # dL/df
            for e, r, d in edges:
                if j == 0:
                    for i in range(s0, s1):
                        grad_f[e, i] = lam[r, 0, i] * k[d, 0, i] * x[d, 0, i]
                else:
                    for i in range(s0, s1):
                        grad_f[e, i] += lam[r, j, i] * k[d, j, i] * x[d, j, i]


def steady_state_gradients(k: torch.Tensor, f: torch.Tensor, x: torch.Tensor, lam: torch.Tensor,
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients to the decay rates [7, 20, B] (pools 1–6; row 0, CWD's, is left to the caller), V̄'s
    bands [3, 20, B] and the fractions [10, B] of a loss with adjoint ``lam`` at the steady state
    ``x`` (both [7, 20, B])."""
    b = int(x.shape[-1])
    grad_k, grad_t = torch.empty((7, NL, b), dtype=torch.float64), torch.empty((3, NL, b), dtype=torch.float64)
    grad_f = torch.empty((10, b), dtype=torch.float64)
    _over_sites(_steady_grads_sites, b, _np(k), _np(f), _np(x), _np(lam), grad_k.numpy(), grad_t.numpy(), grad_f.numpy())
    return grad_k, grad_t, grad_f


# ----------------------------------------------------------------------------------------
# monthly means of the environmental scalars (socmap.clm5.operators._EnvironmentMeans)
# ----------------------------------------------------------------------------------------

@_jit
def _environment_sites(tw, water, oxygen, oxygen_nitrogen, temp_exponent, w_scaling, sums, keep, lo, hi):
    """Month sums per layer and site of ξ^T ξ^W ξ^O and ξ^T ξ^W ξ^O ξ^N into ``sums[0:2]``, from
    ``tw`` = ξ^T and the fields (all [12, 20, B]); with ``keep`` also the sums the gradient needs,
    ``sums[2:6]``: the same two weighted by T_exp and by 1(w_scaling·W ≤ 1) (docs/model.md §3.6).

    Layer by layer, months, then sites: every inner loop streams contiguous rows (a month-innermost
    order, the sums in registers, strided 12 × 5 streams and measured 3× slower on fields not in cache)."""
    n_sums = 6 if keep else 2
    for j in range(NL):
        for c in range(n_sums):
            for i in range(_u(lo), _u(hi)):
                sums[c, j, i] = 0.0
        for m in range(tw.shape[0]):
            for i in range(_u(lo), _u(hi)):
                w = water[m, j, i] * w_scaling[i]
                xi = tw[m, j, i] * min(w, 1.0)
                xo = xi * oxygen[m, j, i]
                xn = xi * oxygen_nitrogen[m, j, i]
                sums[0, j, i] += xo
                sums[1, j, i] += xn
                if keep:
                    t = temp_exponent[m, j, i]
                    sums[2, j, i] += xo * t
                    sums[3, j, i] += xn * t
                    if w <= 1.0:
                        sums[4, j, i] += xo
                        sums[5, j, i] += xn


def environment_sums(tw: torch.Tensor, water: torch.Tensor, oxygen: torch.Tensor, oxygen_nitrogen: torch.Tensor,
                     temp_exponent: torch.Tensor, w_scaling: torch.Tensor, keep: bool) -> torch.Tensor:
    """[2, 20, B] (or [6, 20, B] with ``keep``) month sums of :func:`_environment_sites`; inputs
    [12, 20, B] float64 on the CPU (``tw`` = ξ^T), ``w_scaling`` [B]."""
    b = int(tw.shape[-1])
    sums = torch.empty((6 if keep else 2, NL, b), dtype=torch.float64)
    _over_sites(_environment_sites, b, _np(tw), _np(water), _np(oxygen), _np(oxygen_nitrogen), _np(temp_exponent),
                _np(w_scaling), sums.numpy(), keep)
    return sums


# ----------------------------------------------------------------------------------------
# forcing preparation (socmap.clm5.operators.prepare_forcing, docs/model.md §3.5–3.6)
# ----------------------------------------------------------------------------------------

@_jit
def _field_conversion_sites(soil_temp_k, oxygen, nitrogen, t_ref_k, temp_exponent, oxygen_nitrogen, lo, hi):
    """(T - t_ref_k)/10 and O·N, all [12, 20, B] sites innermost, in one pass over the three fields,
    row by row, each output its own loop (both in one loop, five streams, ran 1.25× slower at 16k
    sites)."""
    for m in range(soil_temp_k.shape[0]):
        for j in range(soil_temp_k.shape[1]):
            for i in range(_u(lo), _u(hi)):
                temp_exponent[m, j, i] = (soil_temp_k[m, j, i] - t_ref_k) / 10.0
            for i in range(_u(lo), _u(hi)):
                oxygen_nitrogen[m, j, i] = oxygen[m, j, i] * nitrogen[m, j, i]


def field_conversions(soil_temp_k: torch.Tensor, oxygen: torch.Tensor, nitrogen: torch.Tensor, t_ref_k: float,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The Q10 exponent (T - ``t_ref_k``)/10 (T in K) and the product O·N, each a new [12, 20, B]
    tensor, from C-contiguous float64 CPU fields [12, 20, B] (sites innermost)."""
    b = int(soil_temp_k.shape[-1])
    temp_exponent, oxygen_nitrogen = torch.empty_like(soil_temp_k), torch.empty_like(soil_temp_k)
    _over_sites(_field_conversion_sites, b, _np(soil_temp_k), _np(oxygen), _np(nitrogen), float(t_ref_k),
                temp_exponent.numpy(), oxygen_nitrogen.numpy())
    return temp_exponent, oxygen_nitrogen


#: Sites per block of :func:`_batch_first_fields_sites` (64–2,048 measured at 4k and 16k sites: 512
#: best; the block's rows of a field stay in L2 while its 240 output rows are written).
TRANSPOSE_BLOCK = 512


@_jit
def _batch_first_fields_sites(soil_temp_k, water, oxygen, nitrogen, t_ref_k, temp_exponent, water_out, oxygen_out,
                              oxygen_nitrogen, lo, hi):
    """As :func:`_field_conversion_sites` from batch-first fields [B, 240] (month × layer rows), and W
    and O copied too, into [240, B] (sites innermost): the transposing copies and the conversions in
    one pass over blocks of sites, one output at a time (writing all four at once touched 960
    pages per block and ran 2× slower)."""
    for b0 in range(lo, hi, TRANSPOSE_BLOCK):
        s0, s1 = _u(b0), _u(min(hi, b0 + TRANSPOSE_BLOCK))
        for r in range(soil_temp_k.shape[1]):
            for i in range(s0, s1):
                temp_exponent[r, i] = (soil_temp_k[i, r] - t_ref_k) / 10.0
        for r in range(soil_temp_k.shape[1]):
            for i in range(s0, s1):
                water_out[r, i] = water[i, r]
        for r in range(soil_temp_k.shape[1]):
            for i in range(s0, s1):
                oxygen_out[r, i] = oxygen[i, r]
        for r in range(soil_temp_k.shape[1]):
            for i in range(s0, s1):
                oxygen_nitrogen[r, i] = oxygen[i, r] * nitrogen[i, r]


def batch_first_fields(soil_temp_k: torch.Tensor, water: torch.Tensor, oxygen: torch.Tensor, nitrogen: torch.Tensor,
                       t_ref_k: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`field_conversions` for C-contiguous batch-first fields [B, 12, 20] (float64, CPU): the
    Q10 exponent, W, O and O·N, each a new [12, 20, B] tensor (sites innermost)."""
    b, months, layers = (int(d) for d in soil_temp_k.shape)
    outs = [torch.empty((months, layers, b), dtype=torch.float64) for _ in range(4)]
    rows = [_np(t).reshape(b, months * layers) for t in (soil_temp_k, water, oxygen, nitrogen)]
    _over_sites(_batch_first_fields_sites, b, *rows, float(t_ref_k), *(o.numpy().reshape(months * layers, b) for o in outs))
    return outs[0], outs[1], outs[2], outs[3]


#: Sites per block of :func:`_transport_basis_sites`; its scratch rows are padded by 8 values so that
#: the 19 rows a site's cryoturbation months update do not share one cache set (a power-of-two stride).
BASIS_BLOCK = 256


@_jit
def _transport_basis_sites(alt, nbedrock, binn, z, z_all, dz, resist_top, resist_bot, fixed_bot,
                           fixed_both, tiny_d, max_alt, max_depth, out, lo, hi):
    """V̄_b's three parts [3, 3, 20, B] for sites [lo, hi), as ``_transport_basis``'s torch ops form
    them, op for op in the same order (so bit for bit): per site, the bioturbation (ALT >
    ``max_alt``) and frozen (ALT <= 0) months counted, each cryoturbation month's diffusivity shape
    (1 above ALT, a linear taper to ``min(z_all[nbedrock], max_depth)``) turned into interface
    conductances and summed in month order, the monthly means assembled into the three bands.
    ``alt`` [12, B] (m), ``nbedrock`` [B] int64 within ``z_all``'s range; grid constants [20] /
    [19] from ``socmap.clm5.operators._ConductanceConstants``.

    Blocks of sites, each pass a loop over the block's sites (vectorised; the output rows are
    written contiguously), except the cryoturbation months: site by site, in small scratch rows."""
    n_months = alt.shape[0]
    gp = np.empty((3, NL - 1, BASIS_BLOCK + 8))  # per block: bio, cryo, floor conductance sums
    n_bio, n_frozen = np.empty(BASIS_BLOCK), np.empty(BASIS_BLOCK)
    has_cryo = np.empty(BASIS_BLOCK, dtype=np.bool_)
    shape, g_cryo, f_cryo = np.empty(NL), np.empty(NL - 1), np.empty(NL - 1)
    for b0 in range(lo, hi, BASIS_BLOCK):
        s0, nblk = b0, min(hi, b0 + BASIS_BLOCK) - b0
        for i in range(_u(nblk)):
            n_bio[i], n_frozen[i], has_cryo[i] = 0.0, 0.0, False
        for m in range(n_months):
            for i in range(_u(nblk)):
                a = alt[m, s0 + i]
                n_bio[i] += 1.0 if a > max_alt else 0.0
                n_frozen[i] += 1.0 if a <= 0.0 else 0.0
                has_cryo[i] |= (a > 0.0) & (a <= max_alt)
        # bioturbation and frozen months: their conductances depend on the bedrock only
        for k in range(NL - 1):
            g_open = 1.0 / (resist_top[k] / 1.0 + resist_bot[k] / 1.0)
            for i in range(_u(nblk)):
                n_open = nbedrock[s0 + i] + (1 if binn else 0)  # layers k < n_open are above the bedrock
                both = k + 1 < n_open
                f_bio = 0.0 if both else (fixed_bot[k] if k < n_open else fixed_both[k])
                gp[0, k, i] = (g_open if both else 0.0) * n_bio[i] / n_months
                gp[1, k, i] = 0.0
                gp[2, k, i] = f_bio * n_bio[i] + fixed_both[k] * n_frozen[i]
        # cryoturbation months, in month order (the torch path's index_add order). The open layers of
        # a month (D·shape > 0) are a prefix of the column (above the bedrock, then above ALT or on
        # the decreasing taper), so an open layer never lies below a closed one
        any_cryo = False
        for i in range(nblk):
            if not has_cryo[i]:
                continue
            any_cryo = True
            nb = nbedrock[s0 + i]
            n_open = min(nb + 1 if binn else nb, NL)
            taper_end = min(z_all[nb], max_depth)
            for k in range(NL - 1):
                g_cryo[k], f_cryo[k] = gp[1, k, i], gp[2, k, i]
            for m in range(n_months):
                a = alt[m, s0 + i]
                if not (a > 0.0 and a <= max_alt):
                    continue
                length = taper_end - a
                safe = length if length > 0.0 else 1.0
                n_pos = 0  # layers 0 .. n_pos-1 are open this month
                for k in range(n_open):
                    zk = z[k]
                    if zk < a:
                        shape[k] = 1.0
                    elif zk <= taper_end and 1.0 - (zk - a) / safe > 0.0:
                        shape[k] = 1.0 - (zk - a) / safe
                    else:
                        break
                    n_pos = k + 1
                for k in range(n_pos - 1):  # both layers open
                    g_cryo[k] += 1.0 / (resist_top[k] / shape[k] + resist_bot[k] / shape[k + 1])
                if 0 < n_pos < NL:  # the last open layer above a closed one
                    f_cryo[n_pos - 1] += fixed_bot[n_pos - 1]
                for k in range(n_pos, NL - 1):  # both closed
                    f_cryo[k] += fixed_both[k]
            for k in range(NL - 1):
                gp[1, k, i], gp[2, k, i] = g_cryo[k], f_cryo[k]
        for p in range(1, 3):
            for k in range(NL - 1):
                for i in range(_u(nblk)):
                    gp[p, k, i] /= n_months
        # the three bands of V̄_b's parts: rows j couple to the layer above with -(gp_{j-1} + F) (the
        # floored advection F enters the floor part only), to the layer below with -gp_j
        for p in range(3):
            if p == 1 and not any_cryo:  # no cryoturbation in the block: 0/(-dz), (0 + 0)/dz, 0/(-dz)
                for j in range(NL):
                    for i in range(_u(nblk)):
                        out[1, 0, j, s0 + i], out[1, 1, j, s0 + i], out[1, 2, j, s0 + i] = -0.0, 0.0, -0.0
                continue
            floored = tiny_d if p == 2 else 0.0
            for j in range(NL):
                r = dz[j]
                for i in range(_u(nblk)):
                    above = gp[p, j - 1, i] + floored if j > 0 else 0.0
                    if j == NL - 1:
                        under = 0.0
                    elif binn and j >= nbedrock[s0 + i]:  # BINN: rows at or below the bedrock copy the upper one
                        under = gp[p, j - 1, i] if j > 0 else 0.0
                    else:
                        under = gp[p, j, i]
                    out[p, 0, j, s0 + i] = above / -r
                    out[p, 1, j, s0 + i] = (above + under) / r
                    out[p, 2, j, s0 + i] = under / -r


def transport_basis(alt_m: torch.Tensor, nbedrock: torch.Tensor, binn: bool, constants: tuple) -> torch.Tensor:
    """``socmap.clm5.operators._transport_basis`` compiled: [3, 3, 20, B] float64 from the monthly
    active layer ``alt_m`` [12, B] (m, float64) and ``nbedrock`` [B] (int64, a valid index of
    ``z_all``); ``constants`` = (z, z_all, dz, resist_top, resist_bot, fixed_bot, fixed_both,
    tiny_d, max_alt, max_depth) as ``_transport_basis_sites`` takes them (no ``fixed_top``: an open
    layer below a closed one does not occur)."""
    b = int(alt_m.shape[-1])
    out = torch.empty((3, 3, NL, b), dtype=torch.float64)
    _over_sites(_transport_basis_sites, b, _np(alt_m), _np(nbedrock), bool(binn), *constants, out.numpy())
    return out


def warm_up() -> None:
    """Load (or compile, the first time on a machine) every kernel now, on a few sites: a process
    that forks workers calls this first so that they inherit the machine code instead of each
    loading it on its first batch (~0.3 s of CPU apiece from numba's cache)."""
    n, z = 8, np.zeros
    k, bands, f = np.ones((7, NL, n)), np.ones((NL, n)), np.full((10, n), 0.1)
    rden, cp, inv, x = z((NL, 3, n)), z((NL, 3, n)), z((NL, 9, n)), z((7, NL, n))
    _factor_sites(k, bands, bands, bands, f, bands, bands, z((4, NL, n)), x, True, rden, cp, inv, 0, n)
    _solve_sites(k, bands, bands, f, bands, bands, rden, cp, inv, x, 0, n)
    _transposed_sites(k, bands, bands, f, rden, cp, inv, x, 0, n)
    _steady_grads_sites(k, f, x, x, z((7, NL, n)), z((3, NL, n)), z((10, n)), 0, n)
    fields = np.full((12, NL, n), 0.5)
    _environment_sites(fields, fields, fields, fields, fields, np.ones(n), z((6, NL, n)), True, 0, n)
    temp, on = z((12, NL, n)), z((12, NL, n))
    _field_conversion_sites(fields, fields, fields, 298.15, temp, on, 0, n)
    rows, cols = np.full((n, 12 * NL), 0.5), z((12 * NL, n))
    _batch_first_fields_sites(rows, rows, rows, rows, 298.15, cols, cols, cols, cols, 0, n)
    grid_20, grid_19 = np.ones(NL), np.ones(NL - 1)
    for binn in (False, True):
        _transport_basis_sites(np.full((12, n), 0.5), np.full(n, NL, dtype=np.int64), binn, grid_20, np.ones(NL + 5), grid_20,
                               grid_19, grid_19, grid_19, grid_19, 1e-30, 2.0, 3.0, z((3, 3, NL, n)), 0, n)
