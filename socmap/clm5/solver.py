"""Steady state of the CLM5 soil-carbon matrix model: X* = (V̄ - A K̄)^-1 I  (docs/model.md §2.3).

Two paths over the same :class:`~socmap.clm5.operators.Operators`:

* ``"structured"`` (what users run): CWD has no transport, so ``K̄_cwd X_cwd = I_cwd`` and its
  decay flux equals its input; the three litter pools are 20-layer tridiagonal systems (one
  batched Thomas sweep); the three SOM pools form a block-tridiagonal system with 3×3 blocks
  whose off-diagonal blocks are scalar multiples of the identity (block Thomas, blocks inverted
  explicitly). Pieces are stored layer × site with **sites innermost**. The eliminations are
  kept (:class:`ShiftedFactorization`): gradients come from an adjoint solve with the forward's
  factors (one transposed substitution, :class:`_AdjointSteadyState`; ``adjoint=False``
  differentiates through the 20-step sweeps instead), and transients reuse them per step.
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
from socmap.clm5 import kernels
from socmap import allocator

allocator.configure()  # big temporaries reused from the heap, not mmapped per op (socmap/allocator.py)


Method = Literal["structured", "dense"]
NL = grid.N_LAYERS
if tuple((r, d) for r, d, _ in TRANSFER_EDGES) != kernels.EDGES:  # pragma: no cover - a model change
    raise ImportError("socmap.clm5.kernels is written for the CLM5 transfer edges of docs/model.md §2.4; "
                      "TRANSFER_EDGES changed: update the kernels' block structure")
#: Use the compiled kernels (socmap.clm5.kernels) for float64 CPU factorizations; False keeps the
#: torch sweeps everywhere (the kernels' reference in the tests; CUDA always takes them).
COMPILED_KERNELS = True


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

    All nine cofactors come from two gathers and one product over [18, B]: a handful of large ops
    instead of ~35 small ones, the better choice where per-op overhead dominates (small batches,
    and the autograd sweeps; :func:`_inv3_into` takes over on large ones, docs/model.md §3.2).
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
#: Transfers among the SOM pools as (receiver, donor, name), pools counted from S1 = 0.
_SOM_EDGES = [(recv - 4, donor - 4, name) for recv, donor, name in TRANSFER_EDGES if recv >= 4 and donor >= 4]
#: Row-major entries of a SOM block that no transfer fills (S2 receives nothing from S3).
_SOM_ZERO = [i for i in range(9) if i % 4 and (i // 3, i % 3) not in {(r, d) for r, d, _ in _SOM_EDGES}]


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


class _AdjointSteadyState(torch.autograd.Function):
    """X = M^-1 I with M = V̄ - A K̄, by the sweeps of :class:`ShiftedFactorization` (s = 0); the
    backward pass is one transposed solve λ = M^-T g with the forward's factorization (no second
    elimination) plus outer products over M's sparsity, instead of autograd through the sweeps."""

    @staticmethod
    def forward(ctx, k, transport, src, fractions):  # type: ignore[override]
        f = dict(zip(_EDGE_NAMES, fractions.unbind(0)))
        fac = ShiftedFactorization(k, transport, f, rhs=src, overwrite_rhs=True)  # no input to the SOM pools
        # ctx must not hold the output outside save_for_backward: x -> grad_fn -> ctx -> fac -> x
        # would be a cycle, freed only when Python's cyclic GC runs (rarely in a loop of large
        # solves: memory grew by ~110 MB and ~25k page faults per 16k-site call)
        x, fac.solution = fac.solution, None
        if any(ctx.needs_input_grad):
            ctx.fac = fac
            ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        fac = ctx.fac
        k, fractions = fac.k, fac.f
        lam = fac._solve_transposed(g.contiguous())
        if fac.compiled and kernels.usable(lam, x):
            grad_k, grad_transport, grad_f = kernels.steady_state_gradients(k, fac._f_rows, x, lam)
            # CWD: dL/dk_c = x_c (f λ_L2 + (1 - f) λ_L3 - λ_c), from the sum λ_c was formed with: exactly
            # 0 where λ_c is that sum (g_c = 0 at s = 0; τ_CWD leaves litter and SOM untouched)
            torch.sub(fac.cwd_received, lam[0], out=grad_k[0]).mul_(x[0])
            return grad_k, grad_transport, lam[:4], grad_f
        # dL/dM = -λ xᵀ on M's pattern; dL/dk_d = x_d (Σ_r A_rd λ_r - λ_d) (every pool is a donor)
        grad_k = torch.empty_like(lam)
        first = set()
        for r, d, name in TRANSFER_EDGES:
            if d in first:
                grad_k[d].addcmul_(lam[r], fractions[name])
            else:
                torch.mul(lam[r], fractions[name], out=grad_k[d])
                first.add(d)
        grad_k.sub_(lam).mul_(x)
        # V̄ acts on pools 1–6: dL/dV[j, j-1] = -Σ_p λ_p[j] x_p[j-1], and likewise the diagonal and upper band
        grad_transport = torch.zeros_like(k[:3])
        for band, (rows, cols) in enumerate(((slice(1, None), slice(0, -1)), (slice(None), slice(None)), (slice(0, -1), slice(1, None)))):
            acc = grad_transport[band, rows]
            torch.mul(lam[1, rows], x[1, cols], out=acc)
            for p in range(2, grid.N_POOLS):
                acc.addcmul_(lam[p, rows], x[p, cols])
        grad_transport.neg_()
        grad_src = lam[:4]
        grad_f = torch.stack([torch.linalg.vecdot(lam[r], k[d] * x[d], dim=0) for r, d, _ in TRANSFER_EDGES])
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


#: From this many sites on, 3×3 inverses are formed entry by entry on [B] slices (they stay in
#: cache: ~3× faster at 16k sites); below it the few large ops of :func:`_inv3` cost less per-op
#: overhead (a training mini-batch).
EXPLICIT_INVERSE_MIN_SITES = 1024


def _inv3_into(m: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` [9, B] = inverse of the row-major 3×3 matrices ``m`` [9, B] (no autograd)."""
    if m.shape[1] < EXPLICIT_INVERSE_MIN_SITES:
        return out.copy_(_inv3(m))
    a, b, c, d, e, f, g, h, i = m.unbind(0)
    for row, (p, q, r, s) in enumerate(((e, i, f, h), (c, h, b, i), (b, f, c, e), (f, g, d, i), (a, i, c, g),
                                        (c, d, a, f), (d, h, e, g), (b, g, a, h), (a, e, b, d))):
        torch.mul(p, q, out=out[row]).addcmul_(r, s, value=-1.0)  # adjugate entry p·q - r·s
    det = (a * out[0]).addcmul_(b, out[3]).addcmul_(c, out[6])
    return out.div_(det)


def _matvec3_into(m: torch.Tensor, v: torch.Tensor, out: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """``out`` [3, B] = m v (or mᵀ v) for row-major 3×3 ``m`` [9, B] and ``v`` [3, B] (no autograd):
    on large batches three multiply-adds of [3, B] columns (or rows), ~2× faster than a [9, B]
    product and a reduction, which small batches keep (fewer ops)."""
    m3 = m.view(3, 3, -1)
    if m.shape[1] < EXPLICIT_INVERSE_MIN_SITES:
        return torch.sum(m3 * (v[:, None] if transposed else v[None]), 0 if transposed else 1, out=out)
    cols = m3.unbind(0) if transposed else m3.unbind(1)
    torch.mul(cols[0], v[0], out=out)
    return out.addcmul_(cols[1], v[1]).addcmul_(cols[2], v[2])


class ShiftedFactorization:
    """The sweeps' elimination of M_s = s 𝟙 + V̄ - A K̄, kept so that right-hand sides cost only the
    substitutions: :meth:`solve` (M_s X = b; a transient with unchanging forcing) and
    :meth:`solve_transposed` (M_sᵀ λ = g; the adjoint of the steady state, docs/model.md §3.3).

    Litter: one Thomas LU per pool, M = L U with L lower bidiagonal (pivots ``d_j``) and U unit upper
    (``c_j``), so Mᵀ = Uᵀ Lᵀ reuses them. SOM: block LU with the Schur blocks S_j, whose inverses
    are kept; Mᵀ = Uᵀ Lᵀ needs S_j⁻ᵀ only, i.e. the same inverses read transposed. Values only (no
    autograd; computed under ``no_grad``). Built by :func:`factor_shifted`; :meth:`solve` equals
    :func:`solve_shifted` to rounding.

    Every layer step works in place on [3, B] (or [9, B]) slices, sites innermost; the Schur block of
    a layer is formed in a scratch [9, B] and never stored. Given ``rhs``, the first solve runs inside
    the elimination (each inverse is used while it is still in cache) and is kept as ``solution``.

    Parameters
    ----------
    k : Tensor [7, 20, B]
        Decay rates (d-1).
    transport : Tensor [3, 20, B]
        V̄_b's lower, diagonal and upper bands (d-1).
    f : dict name -> Tensor [B]
        Transfer fractions (A's off-diagonals, incl. ``1-fcwdl2``).
    shift_per_day : float or Tensor [B]
        Diagonal shift s (d-1), ≥ 0.
    rhs : Tensor [7, 20, B] or [4, 20, B], optional
        A right-hand side solved during the factorization (``solution``); with 4 pools, inputs to
        CWD and litter only (the SOM pools' zero, as in the steady state); None: factor only.
    overwrite_rhs : bool
        Allow ``rhs`` [7, 20, B] to be overwritten by the solution (it may become ``solution``).

    On float64 CPU tensors the eliminations and substitutions run in the compiled kernels of
    :mod:`socmap.clm5.kernels` (same factors, same layout; docs/model.md §3.6); elsewhere (CUDA)
    in the torch ops below.
    """

    def __init__(self, k: torch.Tensor, transport: torch.Tensor, f: dict[str, torch.Tensor],
                 shift_per_day: torch.Tensor | float = 0.0, rhs: torch.Tensor | None = None, overwrite_rhs: bool = False):
        self.batch_size = int(k.shape[-1])
        if rhs is not None:
            self._check(rhs, source=True)
            rhs = rhs.detach()
        with torch.no_grad():
            self.solution = self._factor(k.detach(), transport.detach(), {n: v.detach() for n, v in f.items()},
                                         shift_per_day, rhs, overwrite_rhs)

    def _factor(self, k: torch.Tensor, transport: torch.Tensor, f: dict[str, torch.Tensor], shift_per_day,
                rhs: torch.Tensor | None, overwrite_rhs: bool) -> torch.Tensor | None:
        shift = torch.as_tensor(shift_per_day, dtype=k.dtype, device=k.device)
        lower, vdiag, upper = transport.unbind(0)
        vdiag_s = vdiag + shift  # [20, B]
        self.k, self.f = k, f
        self.cwd_diag = k[0] + shift
        # the share of CWD's inflow that leaves it by decay, k/(k + s): exactly 1 when s = 0, so
        # that the steady state's litter input (and its gradient) is independent of τ_CWD exactly
        self.cwd_decayed = k[0] / self.cwd_diag
        self.compiled = COMPILED_KERNELS and kernels.usable(k, transport, vdiag_s, *([] if rhs is None else [rhs]))
        if self.compiled:  # the same eliminations, compiled, one pass per layer over ranges of sites (docs/model.md §3.6)
            self.k = k = k.contiguous()
            self._bands = (lower.contiguous(), vdiag_s.contiguous(), upper.contiguous())
            self._f_rows = torch.stack([f[n] for n in _EDGE_NAMES])
            in_place = overwrite_rhs and rhs is not None and rhs.shape[0] == grid.N_POOLS and rhs.is_contiguous()
            out = rhs if in_place else None
            self.lit_rden, self.lit_cp, self.som_inv, out = kernels.factor(
                k, *self._bands, self._f_rows, self.cwd_diag, self.cwd_decayed, rhs, out)
            return out
        self.lower, self.upper = lower.unbind(0), upper.unbind(0)
        if rhs is not None and rhs.shape[0] < grid.N_POOLS:  # inputs to CWD and litter only
            rhs = torch.cat([rhs, rhs.new_zeros((grid.N_POOLS - rhs.shape[0],) + rhs.shape[1:])])
        elif rhs is not None and not overwrite_rhs:
            rhs = rhs.clone()
        out = None if rhs is None else self._cwd_and_litter_rhs(rhs)  # solved in place
        # litter (3 tridiagonal systems at once): 1/d_j and c_j of the Thomas LU, [20, 3, B]
        b = k.shape[-1]
        self.lit_rden = rden = torch.empty((NL, 3, b), dtype=k.dtype, device=k.device)
        self.lit_cp = cp = torch.empty_like(rden)
        # per-layer views taken once (each indexing is a Python-level call; small batches are
        # bound by those): layer j of the pivots, multipliers, solution pools, rates
        self._rden, self._cp, vds, k_lit = rden.unbind(0), cp.unbind(0), vdiag_s.unbind(0), k[1:4].unbind(1)
        lit = None if out is None else out[1:4].unbind(1)
        for j in range(NL):
            torch.add(k_lit[j], vds[j], out=self._rden[j])
            if j:
                self._rden[j].addcmul_(self._cp[j - 1], self.lower[j], value=-1.0)
            self._rden[j].reciprocal_()
            torch.mul(self._rden[j], self.upper[j], out=self._cp[j])
            if lit is not None:
                self._litter_forward(lit, j)
        if out is not None:
            self._litter_back(lit)
            self._som_rhs(out)
        # SOM (3×3 blocks): the inverted Schur blocks S_j^-1 = (D_j - l_j u_{j-1} S_{j-1}^-1)^-1, [20, 9, B]
        self.som_inv = torch.empty((NL, 9, b), dtype=k.dtype, device=k.device)
        self._inv = inv = self.som_inv.unbind(0)
        neg_lu = (lower[1:] * upper[:-1]).neg_().unbind(0)  # 19 × [B]
        som = None if out is None else out[4:7].unbind(1)
        schur, t = torch.empty_like(inv[0]), torch.empty_like(inv[0][:3])
        ks = k[4:7]
        neg_f = {name: -f[name] for _, _, name in _SOM_EDGES}
        # small batches: all D_j at once (few ops); large ones: each D_j in the scratch (stays in cache)
        blocks = _som_blocks(k, vdiag_s, f).unbind(0) if b < EXPLICIT_INVERSE_MIN_SITES else None
        for j in range(NL):
            # D_j = diag(K_s) + V_jj 𝟙 - F K_s (docs/model.md §3.2), then S_j = D_j - l_j u_{j-1} S_{j-1}^-1
            # (formed in this order: S_j is often much smaller than its two terms)
            if blocks is not None:
                if j:
                    torch.addcmul(blocks[j], inv[j - 1], neg_lu[j - 1], out=schur)
                else:
                    schur.copy_(blocks[0])
            else:
                for i in _SOM_ZERO:
                    schur[i].zero_()
                torch.add(ks[:, j], vds[j], out=schur[0::4])
                for recv, donor, name in _SOM_EDGES:
                    torch.mul(ks[donor, j], neg_f[name], out=schur[3 * recv + donor])
                if j:
                    schur.addcmul_(inv[j - 1], neg_lu[j - 1])
            _inv3_into(schur, inv[j])
            if som is not None:
                self._som_forward(som, j, t)
        if som is not None:
            self._som_back(som, t)
        return out

    # -- the substitution steps, in place on the pools' layer slices ([3, B], sites innermost)

    def _cwd_and_litter_rhs(self, out: torch.Tensor) -> torch.Tensor:
        """``out`` (a right-hand side, overwritten) with CWD solved and its fragmentation flux added to L2 and L3."""
        f = self.f
        cwd_out = out[0] * self.cwd_decayed  # CWD fragmentation flux k X_cwd, gC m-3 d-1
        out[0].div_(self.cwd_diag)
        out[2].addcmul_(cwd_out, f["fcwdl2"])
        out[3].addcmul_(cwd_out, f["1-fcwdl2"])
        return out

    def _litter_forward(self, lit: tuple[torch.Tensor, ...], j: int) -> None:
        """y_j = (b_j - l_j y_{j-1}) / d_j on the litter pools' layer views ``lit`` (20 × [3, B])."""
        if j:
            lit[j].addcmul_(lit[j - 1], self.lower[j], value=-1.0)
        lit[j].mul_(self._rden[j])

    def _litter_back(self, lit: tuple[torch.Tensor, ...]) -> None:
        """x_j = y_j - c_j x_{j+1}."""
        for j in range(NL - 2, -1, -1):
            lit[j].addcmul_(self._cp[j], lit[j + 1], value=-1.0)

    def _som_rhs(self, out: torch.Tensor) -> None:
        """Add the litter decomposition fluxes (solved litter in ``out[1:4]``) to the SOM right-hand side."""
        k, f = self.k, self.f
        out[4].addcmul_(k[1] * out[1], f["fl1s1"]).addcmul_(k[2] * out[2], f["fl2s1"])
        out[5].addcmul_(k[3] * out[3], f["fl3s2"])

    def _som_forward(self, som: tuple[torch.Tensor, ...], j: int, t: torch.Tensor) -> None:
        """y_j = S_j^-1 (b_j - l_j y_{j-1}) on the SOM pools' layer views ``som`` (20 × [3, B])."""
        if j:
            torch.addcmul(som[j], som[j - 1], self.lower[j], value=-1.0, out=t)
        else:
            t.copy_(som[0])
        _matvec3_into(self._inv[j], t, som[j])

    def _som_back(self, som: tuple[torch.Tensor, ...], t: torch.Tensor) -> None:
        """x_j = y_j - u_j S_j^-1 x_{j+1}."""
        for j in range(NL - 2, -1, -1):
            som[j].addcmul_(_matvec3_into(self._inv[j], som[j + 1], t), self.upper[j], value=-1.0)

    def _check(self, rhs: torch.Tensor, source: bool = False) -> None:
        pools = (grid.N_POOLS, 4) if source else (grid.N_POOLS,)
        if rhs.shape[0] not in pools or tuple(rhs.shape[1:]) != (NL, self.batch_size):
            want = "[7, 20, B] (or [4, 20, B]: inputs to CWD and litter only)" if source else "[7, 20, B]"
            raise ValueError(f"rhs must have shape {want} with B = {self.batch_size}; got {tuple(rhs.shape)}")


    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """X for a right-hand side ``rhs`` [7, 20, B] (gC m-3 d-1); pools [7, 20, B] (no autograd)."""
        self._check(rhs)
        if self.compiled and kernels.usable(rhs):
            lower, _, upper = self._bands
            return kernels.solve(self.k, lower, upper, self._f_rows, self.cwd_diag, self.cwd_decayed, self.lit_rden,
                                 self.lit_cp, self.som_inv, rhs.detach().clone(memory_format=torch.contiguous_format))
        with torch.no_grad():
            out = self._cwd_and_litter_rhs(rhs.detach().clone())
            lit, som = out[1:4].unbind(1), out[4:7].unbind(1)
            for j in range(NL):
                self._litter_forward(lit, j)
            self._litter_back(lit)
            self._som_rhs(out)
            t = torch.empty_like(out[0, :3])
            for j in range(NL):
                self._som_forward(som, j, t)
            self._som_back(som, t)
            return out

    def solve_transposed(self, g: torch.Tensor) -> torch.Tensor:
        """λ with M_sᵀ λ = ``g`` [7, 20, B]; [7, 20, B] (no autograd). Pools in reverse order: SOM,
        litter, CWD (Mᵀ is block upper triangular over the pool groups)."""
        self._check(g)
        with torch.no_grad():
            return self._solve_transposed(g.detach())

    def _solve_transposed(self, g: torch.Tensor) -> torch.Tensor:
        if self.compiled and kernels.usable(g):
            lower, _, upper = self._bands
            out = kernels.solve_transposed(self.k, lower, upper, self._f_rows, self.lit_rden, self.lit_cp, self.som_inv,
                                           g.clone(memory_format=torch.contiguous_format))
            return self._cwd_adjoint(out)
        k, f, out = self.k, self.f, g.clone()
        # SOM: Uᵀ z = g (z_j = S_j^-T (g_j - u_{j-1} z_{j-1})), then Lᵀ λ = z (λ_j = z_j - l_{j+1} S_j^-T λ_{j+1})
        t = torch.empty_like(out[0, :3])
        lam, z = out[4:7], out[4:7].unbind(1)
        for j in range(NL):
            if j:
                torch.addcmul(z[j], z[j - 1], self.upper[j - 1], value=-1.0, out=t)
            else:
                t.copy_(z[0])
            _matvec3_into(self._inv[j], t, z[j], transposed=True)
        for j in range(NL - 2, -1, -1):
            z[j].addcmul_(_matvec3_into(self._inv[j], z[j + 1], t, transposed=True), self.lower[j + 1], value=-1.0)
        # litter: g' = g + K Aᵀ λ_SOM; Uᵀ y = g' (y_j = g'_j - c_{j-1} y_{j-1}), then Lᵀ λ = y (λ_j = (y_j - l_{j+1} λ_{j+1}) / d_j)
        out[1].addcmul_(k[1] * lam[0], f["fl1s1"])
        out[2].addcmul_(k[2] * lam[0], f["fl2s1"])
        out[3].addcmul_(k[3] * lam[1], f["fl3s2"])
        y, yl = out[1:4], out[1:4].unbind(1)
        for j in range(1, NL):
            yl[j].addcmul_(self._cp[j - 1], yl[j - 1], value=-1.0)
        yl[NL - 1].mul_(self._rden[NL - 1])
        for j in range(NL - 2, -1, -1):
            yl[j].addcmul_(yl[j + 1], self.lower[j + 1], value=-1.0).mul_(self._rden[j])
        return self._cwd_adjoint(out)

    def _cwd_adjoint(self, out: torch.Tensor) -> torch.Tensor:
        """CWD's row of Mᵀ λ = g: (k_c + s) λ_c = g_c + k_c (f λ_L2 + (1 - f) λ_L3), given λ_L2, λ_L3 in ``out``.

        In torch on both paths: the backward's dL/dk_c sums f λ_L2 + (1 - f) λ_L3 by the same ops,
        so at s = 0 the two cancel exactly and τ_CWD's gradient is exactly 0 (docs/model.md §3.3).
        """
        f = self.f
        self.cwd_received = received = torch.mul(out[2], f["fcwdl2"]).addcmul_(out[3], f["1-fcwdl2"])
        out[0].div_(self.cwd_diag).addcmul_(received, self.cwd_decayed)
        return out


def factor_shifted(ops: Operators, shift_per_day: torch.Tensor | float) -> ShiftedFactorization:
    """Factor (s 𝟙 + V̄ - A K̄) once for repeated solves (see :class:`ShiftedFactorization`)."""
    return ShiftedFactorization(ops.decay_per_day, ops.transport, ops.fractions, shift_per_day)
