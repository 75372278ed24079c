"""Steady state of the CLM5 soil-carbon matrix model: X* = (V̄ - A K̄)^-1 I  (docs/model.md §2.3).

Two paths over the same :class:`~socmap.clm5.operators.Operators`:

* ``"structured"`` (what users run): CWD has no transport, so ``K̄_cwd X_cwd = I_cwd`` and its
  decay flux equals its input; the three litter pools are 20-layer tridiagonal systems (one
  batched Thomas sweep); the three SOM pools form a block-tridiagonal system with 3×3 blocks
  whose off-diagonal blocks are scalar multiples of the identity (block Thomas, blocks inverted
  explicitly). Pieces are stored layer × site with **sites innermost**; gradients come from
  an adjoint solve (one transposed sweep, :class:`_AdjointSteadyState`; ``adjoint=False``
  differentiates through the 20-step sweeps instead).
* ``"dense"`` (the reference, as BINN): assemble A, K̄ and V̄ as 140×140 matrices per site and
  call a batched ``torch.linalg.solve``.

Both run in float64 (docs/model.md P2).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch

from socmap.clm5 import grid
from socmap.clm5.forcing import Forcing
from socmap.clm5.operators import (
    TRANSFER_EDGES, BedrockRule, Operators, PreparedForcing, build_operators, check_o_scalar, prepare_forcing,
)
from socmap.clm5.parameters import N_PARAMS, check_bounds
from socmap import allocator

allocator.configure()  # big temporaries reused from the heap, not mmapped per op (socmap/allocator.py)


Method = Literal["structured", "dense"]
NL = grid.N_LAYERS


class SingularSystemWarning(RuntimeWarning):
    """The steady-state system could not be solved for some sites (their result is NaN)."""


# ----------------------------------------------------------------------------------------
# structured path
# ----------------------------------------------------------------------------------------

def _thomas(lower: list[torch.Tensor], diag: list[torch.Tensor], upper: list[torch.Tensor], rhs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Tridiagonal solve, one list entry per layer (lists avoid per-layer slicing in autograd)."""
    cps, dps = [], []
    cp = upper[0] / diag[0]
    dp = rhs[0] / diag[0]
    cps.append(cp)
    dps.append(dp)
    for j in range(1, NL):
        denom = torch.addcmul(diag[j], lower[j], cp, value=-1.0)  # fused a - b·c: the sweeps are bound by op count
        cp = upper[j] / denom
        dp = torch.addcmul(rhs[j], lower[j], dp, value=-1.0).div_(denom)
        cps.append(cp)
        dps.append(dp)
    x = [dps[-1]]
    for j in range(NL - 2, -1, -1):
        x.append(torch.addcmul(dps[j], cps[j], x[-1], value=-1.0))
    return x[::-1]


# Adjugate of a row-major 3×3 matrix m[0..8]: adj[r] = m[P][r] * m[Q][r] - m[P][9 + r] * m[Q][9 + r].
_ADJ_P = [4, 2, 1, 5, 0, 2, 3, 1, 0, 5, 1, 2, 3, 2, 0, 4, 0, 1]
_ADJ_Q = [8, 7, 5, 6, 8, 3, 7, 6, 4, 7, 8, 4, 8, 6, 5, 6, 7, 3]
_index_cache: dict[tuple[str, torch.device], torch.Tensor] = {}


def _index(name: str, values: list[int], device: torch.device) -> torch.Tensor:
    key = (name, device)
    if key not in _index_cache:
        _index_cache[key] = torch.tensor(values, dtype=torch.long, device=device)
    return _index_cache[key]


def _inv3(m: torch.Tensor) -> torch.Tensor:
    """Inverse of 3×3 matrices stored row-major as [9, B], by the adjugate.

    All nine cofactors come from two gathers and one product over [18, B] (a handful of large
    ops instead of ~35 small ones: the sweeps are bound by per-op overhead, docs/model.md §2.3).
    Explicit cofactors beat ``torch.linalg.inv`` on [B, 3, 3] by 2–3× here (sites innermost).
    """
    prod = m.index_select(0, _index("P", _ADJ_P, m.device)) * m.index_select(0, _index("Q", _ADJ_Q, m.device))
    adj = prod[:9] - prod[9:]
    det = m[0] * adj[0] + m[1] * adj[3] + m[2] * adj[6]
    return adj / det


def _matvec3(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[9, B] (row-major 3×3) @ [3, B] -> [3, B]."""
    return (m.view(3, 3, -1) * v.unsqueeze(0)).sum(1)


def _block_thomas(lower: list[torch.Tensor], diag: list[torch.Tensor], upper: list[torch.Tensor], rhs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Block-tridiagonal solve: 3×3 diagonal blocks ``diag[j]`` [9, B] (row-major), scalar
    off-diagonal blocks ``lower[j]``/``upper[j]`` [B] (times identity), right-hand sides ``rhs[j]`` [3, B]."""
    invs, dps = [], []
    inv = _inv3(diag[0])
    dp = _matvec3(inv, rhs[0])
    invs.append(inv)
    dps.append(dp)
    for j in range(1, NL):
        # S_j = D_j - lower_j * upper_{j-1} * S_{j-1}^-1  (off-diagonal blocks are scalars)
        inv = _inv3(torch.addcmul(diag[j], lower[j] * upper[j - 1], inv, value=-1.0))
        dp = _matvec3(inv, torch.addcmul(rhs[j], lower[j], dp, value=-1.0))
        invs.append(inv)
        dps.append(dp)
    x = [dps[-1]]
    for j in range(NL - 2, -1, -1):
        x.append(torch.addcmul(dps[j], upper[j], _matvec3(invs[j], x[-1]), value=-1.0))
    return x[::-1]


_EDGE_NAMES = [name for _, _, name in TRANSFER_EDGES]
_SOM_TRANSPOSE = [0, 3, 6, 1, 4, 7, 2, 5, 8]


def _som_blocks(k: torch.Tensor, vdiag: torch.Tensor, f: dict[str, torch.Tensor]) -> torch.Tensor:
    """Diagonal 3×3 SOM blocks D_j = diag(K_s) + V_jj I - F K_s, row-major as [20, 9, B]."""
    ks = k[4:7]
    entries: list[list[torch.Tensor | None]] = [[None] * 3 for _ in range(3)]
    for r in range(3):
        entries[r][r] = ks[r] + vdiag
    for recv, donor, name in TRANSFER_EDGES:
        if recv >= 4 and donor >= 4:
            entries[recv - 4][donor - 4] = -f[name] * ks[donor - 4]
    zero = torch.zeros_like(vdiag)
    return torch.stack([e if e is not None else zero for row in entries for e in row], 1)


def _sweeps(k: torch.Tensor, transport: torch.Tensor, src: torch.Tensor, f: dict[str, torch.Tensor]) -> torch.Tensor:
    """The forward sweeps: pools [7, 20, B] from decay [7,20,B], transport [3,20,B], source [4,20,B]."""
    lower, vdiag, upper = transport.unbind(0)
    lower_l, upper_l = lower.unbind(0), upper.unbind(0)
    x_cwd = src[0] / k[0]
    cwd_out = src[0]  # K̄_cwd X_cwd: at steady state CWD decays exactly what it receives
    litter_rhs = torch.stack([src[1], src[2] + f["fcwdl2"] * cwd_out, src[3] + f["1-fcwdl2"] * cwd_out], 1)  # [20, 3, B]
    litter_diag = (k[1:4] + vdiag).transpose(0, 1).contiguous()  # [20, 3, B]
    x_lit = torch.stack(_thomas(lower_l, litter_diag.unbind(0), upper_l, litter_rhs.unbind(0)), 1)  # [3, 20, B]
    decay_flux = k[1:4] * x_lit  # litter decomposition flux, gC m-3 d-1
    som_rhs = torch.stack(
        [f["fl1s1"] * decay_flux[0] + f["fl2s1"] * decay_flux[1], f["fl3s2"] * decay_flux[2], torch.zeros_like(decay_flux[0])], 1
    )  # [20, 3, B]
    block = _som_blocks(k, vdiag, f)
    x_som = torch.stack(_block_thomas(lower_l, block.unbind(0), upper_l, som_rhs.unbind(0)), 1)  # [3, 20, B]
    return torch.cat([x_cwd[None], x_lit, x_som], 0)


def _adjoint_sweeps(k: torch.Tensor, transport: torch.Tensor, f: dict[str, torch.Tensor], g: torch.Tensor) -> torch.Tensor:
    """Solve the transposed system (V̄ - A K̄)^T λ = g with the same sweeps, in reverse pool order."""
    lower, vdiag, upper = transport.unbind(0)
    zero = torch.zeros_like(lower[:1])
    lower_t = torch.cat([zero, upper[:-1]]).unbind(0)  # (V^T)[j, j-1] = V[j-1, j]
    upper_t = torch.cat([lower[1:], zero]).unbind(0)  # (V^T)[j, j+1] = V[j+1, j]
    block_t = _som_blocks(k, vdiag, f)[:, _SOM_TRANSPOSE]
    lam_som = torch.stack(_block_thomas(lower_t, block_t.unbind(0), upper_t, g[4:7].transpose(0, 1).unbind(0)), 1)
    litter_rhs = torch.stack(
        [g[1] + f["fl1s1"] * k[1] * lam_som[0], g[2] + f["fl2s1"] * k[2] * lam_som[0], g[3] + f["fl3s2"] * k[3] * lam_som[1]], 1
    )
    litter_diag = (k[1:4] + vdiag).transpose(0, 1).contiguous()
    lam_lit = torch.stack(_thomas(lower_t, litter_diag.unbind(0), upper_t, litter_rhs.unbind(0)), 1)
    lam_cwd = g[0] / k[0] + f["fcwdl2"] * lam_lit[1] + f["1-fcwdl2"] * lam_lit[2]
    return torch.cat([lam_cwd[None], lam_lit, lam_som], 0)


class _AdjointSteadyState(torch.autograd.Function):
    """X = M^-1 I with M = V̄ - A K̄; the backward pass is one transposed solve (λ = M^-T g)
    plus outer products over M's sparsity, instead of autograd through ~2000 sweep operations."""

    @staticmethod
    def forward(ctx, k, transport, src, fractions):  # type: ignore[override]
        f = dict(zip(_EDGE_NAMES, fractions.unbind(0)))
        x = _sweeps(k, transport, src, f)
        ctx.save_for_backward(x, k, transport, fractions)
        return x

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, k, transport, fractions = ctx.saved_tensors
        f = dict(zip(_EDGE_NAMES, fractions.unbind(0)))
        lam = _adjoint_sweeps(k, transport, f, g.contiguous())
        # dL/dM = -λ xᵀ on M's pattern
        recv = torch.zeros_like(lam)
        for e, (r, d, _) in enumerate(TRANSFER_EDGES):
            recv[d] += fractions[e] * lam[r]
        grad_k = x * (recv - lam)
        lx = lam[1:] * x[1:]
        zero = torch.zeros_like(x[1:, :1])
        grad_lower = -(lam[1:] * torch.cat([zero, x[1:, :-1]], 1)).sum(0)
        grad_upper = -(lam[1:] * torch.cat([x[1:, 1:], zero], 1)).sum(0)
        grad_transport = torch.stack([grad_lower, -lx.sum(0), grad_upper])
        grad_src = lam[:4]
        grad_f = torch.stack([(lam[r] * k[d] * x[d]).sum(0) for r, d, _ in TRANSFER_EDGES])
        return grad_k, grad_transport, grad_src, grad_f


def solve_structured(ops: Operators, adjoint: bool = True) -> torch.Tensor:
    """Steady-state pools [7, 20, B] (gC m-3, sites innermost) by the structured sweeps.

    ``adjoint=True`` differentiates with one transposed solve (faster); ``False`` lets autograd
    record the sweeps (kept as a cross-check and for higher-order derivatives).
    """
    if not adjoint:
        return _sweeps(ops.decay_per_day, ops.transport, ops.source_g_m3_day, ops.fractions)
    fractions = torch.stack([ops.fractions[n] for n in _EDGE_NAMES])
    return _AdjointSteadyState.apply(ops.decay_per_day, ops.transport, ops.source_g_m3_day, fractions)


# ----------------------------------------------------------------------------------------
# dense reference path
# ----------------------------------------------------------------------------------------

def assemble_dense(ops: Operators) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense A [B,140,140], diag(K̄) as [B,140], V̄ [B,140,140] and the source I [B,140]."""
    b = ops.batch_size
    dt, dev = ops.decay_per_day.dtype, ops.decay_per_day.device
    n = grid.N_POOLS * NL
    layers = torch.arange(NL, device=dev)
    a = -torch.eye(n, dtype=dt, device=dev).expand(b, n, n).clone()
    for recv, donor, name in TRANSFER_EDGES:
        a[:, recv * NL + layers, donor * NL + layers] = ops.fractions[name][:, None]
    lower, diag, upper = ops.transport.movedim(-1, 0).unbind(1)  # each [B, 20]
    v = torch.zeros(b, n, n, dtype=dt, device=dev)
    for pool in range(1, grid.N_POOLS):
        rows = pool * NL + layers
        v[:, rows, rows] = diag
        v[:, rows[1:], rows[:-1]] = lower[:, 1:]
        v[:, rows[:-1], rows[1:]] = upper[:, :-1]
    source = torch.zeros(b, n, dtype=dt, device=dev)
    source[:, : 4 * NL] = ops.source_g_m3_day.movedim(-1, 0).reshape(b, -1)
    return a, ops.decay_per_day.movedim(-1, 0).reshape(b, -1), v, source


def solve_dense(ops: Operators) -> torch.Tensor:
    """Steady-state pools [7, 20, B] by assembling (V̄ - A K̄) and a batched dense solve."""
    a, k, v, source = assemble_dense(ops)
    m = v - a * k[:, None, :]  # A @ diag(K̄) without the O(n^3) product
    # Row equilibration (as LAPACK's expert drivers): deep layers with near-zero decay give
    # rows ~1e-35 in size, and without scaling the pivoted LU loses up to ~1e-4 relative accuracy.
    row_scale = 1.0 / m.detach().abs().amax(-1, keepdim=True)
    x = torch.linalg.solve(m * row_scale, (source.unsqueeze(-1) * row_scale)).squeeze(-1)
    return x.reshape(ops.batch_size, grid.N_POOLS, NL).movedim(0, -1)


# ----------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------

def steady_state(
    theta: torch.Tensor,
    forcing: Forcing | PreparedForcing,
    method: Method = "structured",
    *,
    bedrock_rule: BedrockRule = "conservative",
    check: bool = True,
    check_bounds_: bool = True,
    return_operators: bool = False,
    o_scalar: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, Operators]:
    """Steady-state carbon pools of the CLM5 soil matrix model.

    Parameters
    ----------
    theta : Tensor [B, 21]
        Physical parameter values (see :mod:`socmap.clm5.parameters`); differentiable.
    forcing : Forcing or PreparedForcing
        Batch of ``B`` sites; floating fields may require grad. Pass the result of
        :func:`~socmap.clm5.operators.prepare_forcing` to skip the θ-independent work when
        solving the same sites repeatedly (training).
    method : {"structured", "dense"}
        Fast structured solver (default) or the dense 140×140 reference.
    bedrock_rule : {"conservative", "binn"}
        Treatment of transport at the bedrock (docs/model.md P5; see :mod:`socmap.clm5.operators`).
    check : bool
        Validate shapes, NaNs and ranges of the inputs (cheap; turn off only in tight loops
        over already-validated data).
    check_bounds_ : bool
        Require ``theta`` inside the parameter bounds (off to run e.g. the CLM5 defaults).
    return_operators : bool
        Also return the :class:`~socmap.clm5.operators.Operators` the solve was built from, so
        that diagnostics of the same state need not build them again (mapping).
    o_scalar : Tensor [B, 20], optional
        Extra oxygen (anoxia) scalar per site and layer, 0–1, multiplying every decay rate
        (:func:`~socmap.clm5.operators.build_operators`; the learned wetland anoxia,
        docs/model.md §5.10); differentiable. None: no change.

    Returns
    -------
    Tensor [B, 7, 20], float64
        Pools CWD, L1, L2, L3, S1, S2, S3 per layer in gC m-3. Sites whose system is singular
        come back as NaN with a :class:`SingularSystemWarning` naming them. With
        ``return_operators``, the tuple ``(pools, operators)``.
    """
    if theta.dim() != 2 or theta.shape[1] != N_PARAMS:
        raise ValueError(f"theta must have shape [B, {N_PARAMS}] (sites × parameters); got {tuple(theta.shape)}")
    if theta.shape[0] != forcing.batch_size:
        raise ValueError(f"theta has {theta.shape[0]} sites but the forcing has {forcing.batch_size}")
    if method not in ("structured", "dense"):
        raise ValueError(f"method must be 'structured' or 'dense', not {method!r}")
    theta = theta.to(torch.float64)
    if check and check_bounds_:
        check_bounds(theta)
    if isinstance(forcing, Forcing):
        forcing = forcing.to(torch.float64, theta.device)
        if check:
            forcing.validate()
        forcing = prepare_forcing(forcing, bedrock_rule)
    elif forcing.bedrock_rule != bedrock_rule:
        raise ValueError(f"the forcing was prepared with bedrock_rule={forcing.bedrock_rule!r}, not {bedrock_rule!r}")
    if o_scalar is not None and check:
        check_o_scalar(o_scalar, theta.shape[0])
    ops = build_operators(theta, forcing, o_scalar)
    x = solve_structured(ops) if method == "structured" else solve_dense(ops)
    pools = _flag_failures(x)
    return (pools, ops) if return_operators else pools


def _flag_failures(x: torch.Tensor) -> torch.Tensor:
    """Pools [..., B] (sites innermost, as solved) as [B, ...], NaN (with a warning) at sites with a
    non-finite pool. The check runs in the solved layout: on the batch-first view it would copy."""
    bad = ~torch.isfinite(x.detach()).reshape(-1, x.shape[-1]).all(0)
    x = x.movedim(-1, 0)
    if bool(bad.any()):
        sites = torch.nonzero(bad).flatten().tolist()
        shown = ", ".join(map(str, sites[:10])) + (" …" if len(sites) > 10 else "")
        warnings.warn(
            f"the steady-state system is singular or overflowed at {len(sites)} site(s) "
            f"(indices {shown}); their pools are NaN. Check those sites' parameters and forcing.",
            SingularSystemWarning,
            stacklevel=3,
        )
        x = torch.where(bad[:, None, None], torch.full_like(x, float("nan")), x)
    return x


# ----------------------------------------------------------------------------------------
# shifted systems: implicit time steps (socmap.transient)
# ----------------------------------------------------------------------------------------

def _shifted_sweeps(k: torch.Tensor, transport: torch.Tensor, rhs: torch.Tensor, f: dict[str, torch.Tensor],
                    shift: torch.Tensor) -> torch.Tensor:
    """The forward sweeps of (s 𝟙 + V̄ - A K̄) X = b for a right-hand side in every pool.

    Same structure as :func:`_sweeps`: the shift only adds to the diagonal, which the litter
    and SOM sweeps see through V̄'s diagonal (it enters every mobile pool's diagonal once) and
    CWD through its decay rate.
    """
    lower, vdiag, upper = transport.unbind(0)
    lower_l, upper_l = lower.unbind(0), upper.unbind(0)
    vdiag_s = vdiag + shift
    x_cwd = rhs[0] / (k[0] + shift)
    cwd_out = k[0] * x_cwd  # CWD fragmentation flux, gC m-3 d-1
    litter_rhs = torch.stack([rhs[1], rhs[2] + f["fcwdl2"] * cwd_out, rhs[3] + f["1-fcwdl2"] * cwd_out], 1)
    litter_diag = (k[1:4] + vdiag_s).transpose(0, 1).contiguous()
    x_lit = torch.stack(_thomas(lower_l, litter_diag.unbind(0), upper_l, litter_rhs.unbind(0)), 1)
    decay_flux = k[1:4] * x_lit
    som_rhs = torch.stack(
        [rhs[4] + f["fl1s1"] * decay_flux[0] + f["fl2s1"] * decay_flux[1], rhs[5] + f["fl3s2"] * decay_flux[2], rhs[6]], 1
    )
    block = _som_blocks(k, vdiag_s, f)
    x_som = torch.stack(_block_thomas(lower_l, block.unbind(0), upper_l, som_rhs.unbind(0)), 1)
    return torch.cat([x_cwd[None], x_lit, x_som], 0)


def solve_shifted(ops: Operators, shift_per_day: torch.Tensor | float, rhs: torch.Tensor) -> torch.Tensor:
    """Solve (s 𝟙 + V̄ - A K̄) X = b with the structured sweeps (no dense matrices).

    The backward-Euler step of dX/dt = I - M X with M = V̄ - A K̄ is this system with
    s = 1/Δt and b = X_n/Δt + I; s = 0 and b = I (zero in the SOM pools) is the steady state.

    Parameters
    ----------
    ops : Operators
        Month-averaged operators of ``B`` sites (:func:`~socmap.clm5.operators.build_operators`).
    shift_per_day : float or Tensor [B]
        Diagonal shift s (d-1), ≥ 0.
    rhs : Tensor [7, 20, B]
        Right-hand side b in every pool (gC m-3 d-1), sites innermost.

    Returns
    -------
    Tensor [7, 20, B]
        Pools (gC m-3). Differentiable by autograd through the sweeps.
    """
    if tuple(rhs.shape) != (grid.N_POOLS, NL, ops.batch_size):
        raise ValueError(f"rhs must have shape [7, 20, {ops.batch_size}] (pools, layers, sites); got {tuple(rhs.shape)}")
    shift = torch.as_tensor(shift_per_day, dtype=rhs.dtype, device=rhs.device)
    return _shifted_sweeps(ops.decay_per_day, ops.transport, rhs, ops.fractions, shift)


class ShiftedFactorization:
    """The sweeps' elimination of (s 𝟙 + V̄ - A K̄), kept so that many right-hand sides cost only the
    substitutions (a transient with unchanging forcing: one factorization, one cheap solve per step).

    Built by :func:`factor_shifted`; :meth:`solve` equals :func:`solve_shifted` to rounding.
    """

    def __init__(self, ops: Operators, shift_per_day: torch.Tensor | float):
        k, transport, f = ops.decay_per_day, ops.transport, ops.fractions
        shift = torch.as_tensor(shift_per_day, dtype=k.dtype, device=k.device)
        lower, vdiag, upper = transport.unbind(0)
        vdiag_s = vdiag + shift
        self.batch_size = ops.batch_size
        self.k, self.f = k, f
        self.cwd_diag = k[0] + shift
        self.lower, self.upper = lower.unbind(0), upper.unbind(0)
        # litter (3 tridiagonal systems at once): c'_j and 1/denominator_j of the Thomas sweep
        diag = (k[1:4] + vdiag_s).transpose(0, 1).unbind(0)  # 20 × [3, B]
        self.lit_cp, self.lit_rden = [], []
        rden = 1.0 / diag[0]
        for j in range(NL):
            if j:
                rden = 1.0 / (diag[j] - self.lower[j] * self.lit_cp[-1])
            self.lit_rden.append(rden)
            self.lit_cp.append(self.upper[j] * rden)
        # SOM (3×3 blocks): the inverted Schur blocks S_j^-1 of the block sweep
        block = _som_blocks(k, vdiag_s, f).unbind(0)
        self.som_inv = [_inv3(block[0])]
        for j in range(1, NL):
            self.som_inv.append(_inv3(block[j] - (self.lower[j] * self.upper[j - 1]) * self.som_inv[-1]))

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """X for a right-hand side ``rhs`` [7, 20, B] (gC m-3 d-1); pools [7, 20, B]."""
        if tuple(rhs.shape) != (grid.N_POOLS, NL, self.batch_size):
            raise ValueError(f"rhs must have shape [7, 20, {self.batch_size}]; got {tuple(rhs.shape)}")
        k, f = self.k, self.f
        x_cwd = rhs[0] / self.cwd_diag
        cwd_out = k[0] * x_cwd
        lit_rhs = torch.stack([rhs[1], rhs[2] + f["fcwdl2"] * cwd_out, rhs[3] + f["1-fcwdl2"] * cwd_out], 1).unbind(0)
        dps = [lit_rhs[0] * self.lit_rden[0]]
        for j in range(1, NL):
            dps.append((lit_rhs[j] - self.lower[j] * dps[-1]) * self.lit_rden[j])
        xs = [dps[-1]]
        for j in range(NL - 2, -1, -1):
            xs.append(dps[j] - self.lit_cp[j] * xs[-1])
        x_lit = torch.stack(xs[::-1], 1)
        decay_flux = k[1:4] * x_lit
        som_rhs = torch.stack([rhs[4] + f["fl1s1"] * decay_flux[0] + f["fl2s1"] * decay_flux[1],
                               rhs[5] + f["fl3s2"] * decay_flux[2], rhs[6]], 1).unbind(0)
        dps = [_matvec3(self.som_inv[0], som_rhs[0])]
        for j in range(1, NL):
            dps.append(_matvec3(self.som_inv[j], som_rhs[j] - self.lower[j] * dps[-1]))
        xs = [dps[-1]]
        for j in range(NL - 2, -1, -1):
            xs.append(dps[j] - self.upper[j] * _matvec3(self.som_inv[j], xs[-1]))
        x_som = torch.stack(xs[::-1], 1)
        return torch.cat([x_cwd[None], x_lit, x_som], 0)


def factor_shifted(ops: Operators, shift_per_day: torch.Tensor | float) -> ShiftedFactorization:
    """Factor (s 𝟙 + V̄ - A K̄) once for repeated solves (see :class:`ShiftedFactorization`)."""
    return ShiftedFactorization(ops, shift_per_day)
