"""CLM5 operators built from parameters θ and forcing: A (transfers), K̄ (decay), V̄ (transport), I.

Everything is batch-first and per *day*, averaged over the 12 months **before** the solve
(docs/model.md §2.3, pitfall P1). The solver modules consume an :class:`Operators` bundle; they never
see θ or forcing directly, so the dense and structured paths share one physics.

Bedrock (docs/model.md P5). ``bedrock_rule="conservative"`` (the default) closes every interface at
or below the bedrock: diffusivity is active only for the ``nbedrock`` soil layers, no
conductance is overwritten, and V conserves the dz-weighted column stock exactly for every
bedrock depth. ``bedrock_rule="binn"`` reproduces BINN/ScIReN: one extra active interface
and, for rows at or below the bedrock, the lower conductance copied from the upper one —
which leaks ~1e-6 d-1 at the bedrock interface when ``nbedrock <= 18``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from socmap.clm5 import grid, kernels
from socmap.clm5.forcing import T_FREEZE_K, Forcing
from socmap.clm5.parameters import INDEX, NAMES

DAYS_PER_YEAR = 365.0
T_REF_K = 298.15  # reference temperature of the Q10 function (25 °C)
MAX_ALT_CRYOTURBATION_M = 2.0  # cryoturbation only where the active layer is this shallow
#: Cryoturbation never reaches below this depth; shallower bedrock ends it sooner (see
#: :func:`cryoturbation_taper_end_m`).
MAX_DEPTH_CRYOTURBATION_M = 3.0
TINY = 1e-30  # CLM's floor on diffusivities and advection (keeps the harmonic mean defined)

BedrockRule = Literal["conservative", "binn"]

#: Transfer edges (receiver pool, donor pool, parameter name); "1-fcwdl2" is derived.
TRANSFER_EDGES: tuple[tuple[int, int, str], ...] = (
    (2, 0, "fcwdl2"),
    (3, 0, "1-fcwdl2"),
    (4, 1, "fl1s1"),
    (4, 2, "fl2s1"),
    (5, 3, "fl3s2"),
    (5, 4, "fs1s2"),
    (6, 4, "fs1s3"),
    (4, 5, "fs2s1"),
    (6, 5, "fs2s3"),
    (4, 6, "fs3s1"),
)
#: Turnover-time parameter of each of the 7 pools (L3 shares τ_L2).
POOL_TAU = ("taucwd", "taul1", "taul2", "taul2", "tau4s1", "tau4s2", "tau4s3")


@dataclass
class PreparedForcing:
    """The θ-independent part of the operators, computed once per batch of sites.

    Stored **sites innermost** (the solver's layout). Training prepares its forcing once and
    reuses it every epoch; :func:`socmap.clm5.solver.steady_state` prepares on the fly when
    given a plain :class:`Forcing`.

    Attributes
    ----------
    inputs_g_m2_day : [4, B]        daily input to CWD, L1, L2, L3 (gC m-2 d-1).
    temp_exponent : [12, 20, B]     (T - 298.15 K) / 10, so that ξ^T = Q10 ** temp_exponent.
    water, oxygen, oxygen_nitrogen : [12, 20, B]   W, O and O·N scalars.
    transport_basis : [3, 3, 20, B] month-averaged V̄_b = diffus·basis[0] + cryo·basis[1] + basis[2]
        (first index: bioturbation, cryoturbation, fixed floor part; second: lower, diag, upper;
        diffusivities in m2 yr-1, V̄ in d-1).
    thawed : [B] bool               last year's maximum active layer > 0 (else all input goes to layer 0).
    """

    inputs_g_m2_day: torch.Tensor
    temp_exponent: torch.Tensor
    water: torch.Tensor
    oxygen: torch.Tensor
    oxygen_nitrogen: torch.Tensor
    transport_basis: torch.Tensor
    thawed: torch.Tensor
    bedrock_rule: str

    @property
    def batch_size(self) -> int:
        return int(self.inputs_g_m2_day.shape[-1])

    def subset(self, index: torch.Tensor | slice) -> "PreparedForcing":
        """Sites ``index`` (a slice, or an index tensor/array) of every field."""
        if isinstance(index, slice):
            def take(t: torch.Tensor) -> torch.Tensor:
                return t[..., index]
        else:
            index = torch.as_tensor(index, device=self.thawed.device)
            if index.dtype == torch.bool:
                index = torch.nonzero(index).flatten()

            # index_select, not advanced indexing: the same values, without the generic index
            # kernel's set-up per call (training subsets every mini-batch; issue 17)
            def take(t: torch.Tensor) -> torch.Tensor:
                return t.index_select(-1, index)
        return PreparedForcing(
            inputs_g_m2_day=take(self.inputs_g_m2_day),
            temp_exponent=take(self.temp_exponent),
            water=take(self.water),
            oxygen=take(self.oxygen),
            oxygen_nitrogen=take(self.oxygen_nitrogen),
            transport_basis=take(self.transport_basis),
            thawed=take(self.thawed),
            bedrock_rule=self.bedrock_rule,
        )

    def to(self, device: str | torch.device) -> "PreparedForcing":
        """Move every tensor to ``device``."""
        return PreparedForcing(
            **{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        )


@dataclass
class Operators:
    """Month-averaged CLM5 operators for ``B`` sites, float64, rates per day, sites innermost.

    Attributes
    ----------
    decay_per_day : [7, 20, B]   diagonal of K̄ (d-1), environmental scalars folded in.
    fractions : dict name -> [B]  transfer fractions (A's off-diagonals), incl. ``1-fcwdl2``.
    transport : [3, 20, B]       V̄_b[j, j-1], V̄_b[j, j], V̄_b[j, j+1] (d-1); the same block acts on
        pools 1–6 and CWD does not move; ``transport[0, 0]`` and ``transport[2, -1]`` are 0.
    source_g_m3_day : [4, 20, B]  input to CWD, L1, L2, L3 per layer (gC m-3 d-1).
    input_profile : [20, B]       fraction φ of the input going to each layer (sums to 1).
    """

    decay_per_day: torch.Tensor
    fractions: dict[str, torch.Tensor]
    transport: torch.Tensor
    source_g_m3_day: torch.Tensor
    input_profile: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.decay_per_day.shape[-1])


Theta = torch.Tensor | dict[str, torch.Tensor]  # θ [B, 21], or its columns by name (:func:`_columns`)


def _col(theta: Theta, name: str) -> torch.Tensor:
    """Column ``name`` of θ [B, 21] (or of its :func:`_columns`) as a [B] tensor."""
    return theta[name] if isinstance(theta, dict) else theta[:, INDEX[name]]


def _columns(theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """θ [B, 21] as contiguous [B] columns by name. One transposing copy for all of them: the
    backward pass then stacks the columns' gradients once, where a select per column would
    zero-fill a [B, 21] gradient for each (14 of them in :func:`build_operators`)."""
    return dict(zip(NAMES, theta.t().contiguous().unbind(0)))


def transfer_fractions(theta: Theta) -> dict[str, torch.Tensor]:
    """Fractions of each donor's decomposition passed to each receiver, ``{name: [B]}``."""
    out = {name: _col(theta, name).contiguous() for _, _, name in TRANSFER_EDGES if name != "1-fcwdl2"}
    out["1-fcwdl2"] = 1.0 - out["fcwdl2"]
    return out


def temperature_scalar(soil_temp_k: torch.Tensor, q10: torch.Tensor, q10_frozen: torch.Tensor | None = None) -> torch.Tensor:
    """Q10 temperature scalar ξ^T (dimensionless), reference 25 °C, with CLM's frozen branch.

    ``soil_temp_k`` [B, ...] in K; ``q10`` [B]. Below 0 °C the scalar is
    ``Q10^((273.15-298.15)/10) · Q10f^((T-273.15)/10)``; with ``q10_frozen=None`` (as in BINN)
    Q10f = Q10 and both branches coincide.
    """
    shape = (-1,) + (1,) * (soil_temp_k.dim() - 1)
    log_q = torch.log(q10).reshape(shape)
    log_qf = log_q if q10_frozen is None else torch.log(q10_frozen).reshape(shape)
    warm = torch.exp(log_q * (soil_temp_k - T_REF_K) / 10.0)
    cold = torch.exp(log_q * (T_FREEZE_K - T_REF_K) / 10.0 + log_qf * (soil_temp_k - T_FREEZE_K) / 10.0)
    return torch.where(soil_temp_k.detach() >= T_FREEZE_K, warm, cold)


def scaled_water_scalar(w: torch.Tensor, w_scaling: torch.Tensor) -> torch.Tensor:
    """The model's water factor ξ^W = min(1, w_scaling · W) from the forcing's water scalar W.

    ``w`` [B, ...] is the forcing field ``water_scalar`` (0–1, CESM2 ``W_SCALAR`` or derived);
    ``w_scaling`` [B] the fitted parameter (docs/model.md P6: zero gradient where clipped).
    """
    shape = (-1,) + (1,) * (w.dim() - 1)
    return torch.clamp(w_scaling.reshape(shape) * w, max=1.0)


def depth_scalar(efolding_m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """ξ^depth_j = exp(-z_j / z_τ) at the 20 nodes, shape [B, 20]."""
    z = grid.grid_tensor("NODE_M", like)
    return torch.exp(-z[None, :] / efolding_m[:, None])


def decay_rates_direct(theta: torch.Tensor, forcing: Forcing) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reference: month-averaged decay rates K̄ [B, 7, 20] (d-1) straight from the spec, batch-first."""
    xi_t = temperature_scalar(forcing.soil_temp_k, _col(theta, "q10"))
    xi_w = scaled_water_scalar(forcing.water_scalar, _col(theta, "w_scaling"))
    env = xi_t * xi_w * forcing.oxygen_scalar  # [B, 12, 20]
    env_mean = env.mean(1)
    env_n_mean = (env * forcing.nitrogen_scalar).mean(1)
    xi_depth = depth_scalar(_col(theta, "efolding"), theta)
    tau_yr = torch.stack([_col(theta, n) for n in POOL_TAU], 1)  # [B, 7]
    base = 1.0 / (DAYS_PER_YEAR * tau_yr)
    env_pool = torch.stack([env_mean, env_n_mean, env_n_mean, env_n_mean, env_mean, env_mean, env_mean], 1)
    k = base[:, :, None] * xi_depth[:, None, :] * env_pool
    return k, {"xi_temp_mean": xi_t.mean(1), "xi_water_mean": xi_w.mean(1), "xi_depth": xi_depth}


def _harmonic_conductance(d: torch.Tensor) -> torch.Tensor:
    """Conductance (d-1 m) between nodes j and j+1, j = 0..18, from diffusivities ``d[..., 0:20]``."""
    dz_node = grid.grid_tensor("DZ_NODE_M", d)[1:20]
    node_all = torch.as_tensor(grid.NODE_ALL_M[1:20], dtype=d.dtype, device=d.device)
    z_int = torch.as_tensor(grid.INTERFACE_BOTTOM_ALL_M[0:19], dtype=d.dtype, device=d.device)
    w = (node_all - z_int) / dz_node  # share of the node spacing lying in layer j+1
    return 1.0 / (((1.0 - w) / d[..., :19] + w / d[..., 1:20]) * dz_node)


def cryoturbation_taper_end_m(nbedrock: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Depth (m) at which the cryoturbation diffusivity has tapered to zero, [B].

    CLM5 (CTSM ``SoilBiogeochemLittVertTranspMod``) uses ``min(max_depth_cryoturb,
    zisoi(nbedrock+1))`` with Fortran's ``zisoi(j)`` the bottom of layer ``j`` (1-based): the
    bottom of the first level below the deepest soil layer, i.e. the deepest interface CLM
    still gives a diffusivity. That is ``INTERFACE_BOTTOM_ALL_M[nbedrock]`` here; 3 m wherever
    ``nbedrock >= 13``.
    """
    z_all = torch.as_tensor(grid.INTERFACE_BOTTOM_ALL_M, dtype=like.dtype, device=like.device)
    return torch.clamp(z_all[nbedrock.to(like.device)], max=MAX_DEPTH_CRYOTURBATION_M)


def _cryoturbation_shape(z: torch.Tensor, alt: torch.Tensor, taper_end: torch.Tensor) -> torch.Tensor:
    """D_cryo / cryo at interface depths ``z`` [20]: 1 above the active layer ``alt``, then
    linear to 0 at ``taper_end``, 0 below. ``alt`` and ``taper_end`` broadcast against ``z`` (e.g.
    [B, months, 1] with z [20], or sites innermost [months, 1, B] with z [20, 1]).

    Where the bedrock ends the taper at or above the active layer (length <= 0) no interface
    below ALT is mixed: the denominator is then replaced by 1 so the formula (and its gradient)
    stays finite, and every interface deeper than ``taper_end`` is 0 anyway.
    """
    length = taper_end - alt
    safe = torch.where(length > 0, length, torch.ones_like(length))
    tapered = torch.clamp(1.0 - (z - alt) / safe, min=0.0)
    above = z < alt.detach()
    return torch.where(above, torch.ones_like(tapered), torch.where(z <= taper_end, tapered, torch.zeros_like(tapered)))


def diffusivity(theta: torch.Tensor, forcing: Forcing, bedrock_rule: BedrockRule) -> torch.Tensor:
    """Bio/cryoturbation diffusivity at the bottom interface of the 20 layers, [B, 12, 20] (m2 d-1)."""
    z = grid.grid_tensor("INTERFACE_BOTTOM_M", theta)  # [20]
    alt = forcing.alt_m.detach()[:, :, None]  # [B, 12, 1]; a threshold, not differentiated
    cryo = _col(theta, "cryo")[:, None, None]
    bio = _col(theta, "diffus")[:, None, None]
    is_cryo = (alt > 0) & (alt <= MAX_ALT_CRYOTURBATION_M)
    taper_end = cryoturbation_taper_end_m(forcing.nbedrock, theta)[:, None, None]
    d_cryo = cryo * _cryoturbation_shape(z, alt, taper_end)
    d = torch.where(is_cryo, d_cryo, torch.where(alt > MAX_ALT_CRYOTURBATION_M, bio.expand_as(d_cryo), torch.zeros_like(d_cryo)))
    i = torch.arange(grid.N_LAYERS, device=theta.device)
    nb = forcing.nbedrock[:, None, None]
    active = (i <= nb) if bedrock_rule == "binn" else (i < nb)
    d = torch.where(active, d, torch.zeros_like(d))
    d = torch.where(d.abs() < TINY, torch.full_like(d, TINY), d)
    return d / DAYS_PER_YEAR


def transport_tridiagonal_direct(theta: torch.Tensor, forcing: Forcing, bedrock_rule: BedrockRule = "conservative") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference: month-averaged transport block V̄_b, straight from the spec, batch-first.

    Patankar power-law scheme with zero advection floored at 1e-30 (docs/model.md §2.6). Returns
    ``lower, diag, upper`` [B, 20] (d-1) and the monthly diagonal [B, 12, 20].
    """
    if bedrock_rule not in ("conservative", "binn"):
        raise ValueError(f"bedrock_rule must be 'conservative' or 'binn', not {bedrock_rule!r}")
    d = diffusivity(theta, forcing, bedrock_rule)
    g = _harmonic_conductance(d)  # [B, 12, 19] between j and j+1
    flux = TINY / DAYS_PER_YEAR  # advective flux F (floored zero advection)
    patankar = torch.clamp(1.0 - 0.1 * (flux / g).abs(), min=0.0) ** 5
    gp = g * patankar
    zero = torch.zeros_like(gp[..., :1])
    a = -torch.cat([zero, gp + max(flux, 0.0)], -1)  # coupling to the layer above (row j)
    c = -torch.cat([gp + max(-flux, 0.0), zero], -1)  # coupling to the layer below (row j)
    if bedrock_rule == "binn":
        rows = torch.arange(grid.N_LAYERS, device=theta.device)
        below = (rows >= forcing.nbedrock[:, None, None]) & (rows < grid.N_LAYERS - 1)
        c = torch.where(below, -torch.cat([zero, gp], -1), c)
    dz = grid.grid_tensor("DZ_M", theta)
    lower_m, upper_m, diag_m = a / dz, c / dz, -(a + c) / dz
    return lower_m.mean(1), diag_m.mean(1), upper_m.mean(1), diag_m


def _transport_basis(forcing: Forcing, bedrock_rule: BedrockRule) -> torch.Tensor:
    """Month-averaged V̄_b split into parts proportional to D_bio, D_cryo and a fixed floor part.

    Within a month the regime (bioturbation, cryoturbation, frozen) depends on the active
    layer only, and an open interface has conductance D × (a forcing-only shape), so V̄_b is
    linear in (diffus, cryo). Interfaces touching a closed layer (D floored at 1e-30) have a
    θ-independent conductance up to a relative 1e-25, as does the Patankar factor, which is
    exactly 1 in float64 on open interfaces. Equal to :func:`transport_tridiagonal_direct` to
    rounding for diffusivities above ~1e-20 m2 yr-1 (tested). Returns [3, 3, 20, B].

    V̄_b is linear in the three parts' interface conductances, so it is assembled once from their
    monthly means. A bioturbation month's conductances depend on the bedrock only and a frozen
    month's are constants, so each site's are counted, not recomputed; only the cryoturbation
    months (a shape that depends on that month's active layer) are computed, as a batch of
    (site, month) pairs. Float64 CPU forcing without a gradient takes the compiled
    ``kernels.transport_basis`` instead (the same ops in the same order, docs/model.md §3.6).
    """
    if bedrock_rule not in ("conservative", "binn"):
        raise ValueError(f"bedrock_rule must be 'conservative' or 'binn', not {bedrock_rule!r}")
    alt_m, nb, like = forcing.alt_m, forcing.nbedrock, forcing.soil_temp_k
    if _compiled_prepare(alt_m, like) and nb.device.type == "cpu" and nb.dtype == torch.int64 and nb.numel() > 0:
        lowest, highest = torch.aminmax(nb)
        if 0 <= int(lowest) and int(highest) < len(grid.INTERFACE_BOTTOM_ALL_M):  # else the torch ops' own error
            return kernels.transport_basis(alt_m.movedim(0, -1), nb, bedrock_rule == "binn", _kernel_constants())
    dt, dev, n_sites, n_months = like.dtype, like.device, alt_m.shape[0], alt_m.shape[1]
    taper_end = cryoturbation_taper_end_m(nb, like)  # [B]
    regime_alt = alt_m.detach()  # the regime is a threshold on ALT, not differentiated
    is_cryo = (regime_alt > 0) & (regime_alt <= MAX_ALT_CRYOTURBATION_M)  # [B, M]
    n_bio = (regime_alt > MAX_ALT_CRYOTURBATION_M).sum(1).to(dt)  # [B]
    n_frozen = (regime_alt <= 0).sum(1).to(dt)
    consts = _ConductanceConstants(like)
    i = torch.arange(grid.N_LAYERS, device=dev)[:, None]  # [20, 1]

    def open_below(nbedrock: torch.Tensor) -> torch.Tensor:  # [20, N]: interfaces above the bedrock
        return (i <= nbedrock) if bedrock_rule == "binn" else (i < nbedrock)

    g_bio, fixed_bio = consts.conductances(open_below(nb).to(dt))  # a bioturbation month: D·1 where open
    _, fixed_frozen = consts.conductances(torch.zeros((grid.N_LAYERS, 1), dtype=dt, device=dev))  # all closed
    sums = [g_bio * n_bio, torch.zeros_like(g_bio), fixed_bio * n_bio + fixed_frozen * n_frozen]  # [19, B] each
    z = grid.grid_tensor("INTERFACE_BOTTOM_M", like)[:, None]  # [20, 1]
    site, month = torch.nonzero(is_cryo, as_tuple=True)
    for start in range(0, site.numel(), n_sites):  # cryoturbation months in blocks of B pairs
        s, m = site[start:start + n_sites], month[start:start + n_sites]
        shape = _cryoturbation_shape(z, alt_m[s, m][None, :], taper_end[s][None, :])  # [20, P]
        g_cryo, fixed_cryo = consts.conductances(torch.where(open_below(nb[s]), shape, torch.zeros_like(shape)))
        sums[1] = sums[1].index_add(1, s, g_cryo)
        sums[2] = sums[2].index_add(1, s, fixed_cryo)

    gp = torch.stack(sums) / n_months  # [3, 19, B]: bio, cryo, floor
    zero = torch.zeros_like(gp[:, :1])
    # rows j couple to the layer above with -(gp_{j-1} + F) (the floored advection F enters the
    # floor part only) and to the layer below with -gp_j; the diagonal is minus their sum
    floored = torch.tensor([0.0, 0.0, consts.tiny_d], dtype=dt, device=dev)[:, None, None]
    above = torch.cat([zero, gp + floored], 1)  # [3, 20, B]
    under = torch.cat([gp, zero], 1)
    if bedrock_rule == "binn":
        below = (i >= nb) & (i < grid.N_LAYERS - 1)
        under = torch.where(below, torch.cat([zero, gp], 1), under)
    dz = grid.grid_tensor("DZ_M", like)[:, None]
    return torch.stack([above / -dz, (above + under) / dz, under / -dz], 1)  # [3, 3, 20, B]


class _ConductanceConstants:
    """Grid constants of the interface conductances of one month (:func:`_transport_basis`)."""

    def __init__(self, like: torch.Tensor):
        dt, dev = like.dtype, like.device
        dz_node = grid.grid_tensor("DZ_NODE_M", like)[1:20, None]
        node = torch.as_tensor(grid.NODE_ALL_M[1:20], dtype=dt, device=dev)[:, None]
        z_int = torch.as_tensor(grid.INTERFACE_BOTTOM_ALL_M[0:19], dtype=dt, device=dev)[:, None]
        w = (node - z_int) / dz_node  # [19, 1], share of the node spacing lying in layer j+1
        # open interfaces: harmonic mean of D·shape over the two half-spacings, per day
        self.resist_top, self.resist_bot = (1.0 - w) * dz_node * DAYS_PER_YEAR, w * dz_node * DAYS_PER_YEAR
        # interfaces touching a closed layer: D floored at TINY on the closed side(s), with the
        # Patankar factor of the floored advection; θ-independent, one value per closed pattern
        self.tiny_d = TINY / DAYS_PER_YEAR

        def fixed(closed_weight: torch.Tensor) -> torch.Tensor:
            g = self.tiny_d / (closed_weight * dz_node)
            return g * torch.clamp(1.0 - 0.1 * self.tiny_d / g, min=0.0) ** 5

        self.fixed_top, self.fixed_bot, self.fixed_both = fixed(1.0 - w), fixed(w), fixed((1.0 - w) + w)

    def conductances(self, shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conductance of the open interfaces per unit D (from the diffusivity shape [20, N],
        0 where a layer is closed) and the fixed floor conductance of the others, each [19, N] (d-1)."""
        is_open = shape.detach() > 0
        both = is_open[:19] & is_open[1:]
        safe = torch.where(is_open, shape, torch.ones_like(shape))
        g_shape = 1.0 / (self.resist_top / safe[:19] + self.resist_bot / safe[1:])
        g_shape = torch.where(both, g_shape, torch.zeros_like(g_shape))
        closed_top, closed_bot = ~is_open[:19], ~is_open[1:]
        zero = torch.zeros_like(self.fixed_bot)
        g_fixed = torch.where(closed_top & closed_bot, self.fixed_both,
                              torch.where(closed_top, self.fixed_top, torch.where(closed_bot, self.fixed_bot, zero)))
        return g_shape, g_fixed


#: Use the compiled passes of :func:`prepare_forcing` (socmap.clm5.kernels.transport_basis,
#: field_conversions, batch_first_fields; docs/model.md §3.6) on float64 CPU forcing that carries no
#: gradient; False keeps the torch ops everywhere (the tests' reference; CUDA and a forcing with a
#: gradient always take them). Both give the same results bit for bit.
COMPILED_PREPARE = True


def _compiled_prepare(*tensors: torch.Tensor) -> bool:
    return COMPILED_PREPARE and kernels.usable(*tensors) and not _needs_grad(*tensors)


@functools.lru_cache(maxsize=1)
def _kernel_constants() -> tuple:
    """The grid constants of :func:`_transport_basis` as ``kernels.transport_basis`` takes them
    (float64 NumPy, computed by the very torch ops of the reference path)."""
    like = torch.zeros((), dtype=torch.float64)
    c = _ConductanceConstants(like)

    def flat(t: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.reshape(-1).numpy())

    return (flat(grid.grid_tensor("INTERFACE_BOTTOM_M", like)), np.asarray(grid.INTERFACE_BOTTOM_ALL_M, dtype=np.float64),
            flat(grid.grid_tensor("DZ_M", like)), flat(c.resist_top), flat(c.resist_bot), flat(c.fixed_bot),
            flat(c.fixed_both), float(c.tiny_d), float(MAX_ALT_CRYOTURBATION_M), float(MAX_DEPTH_CRYOTURBATION_M))


def _sites_last(t: torch.Tensor) -> torch.Tensor:
    """[B, ...] -> [..., B] contiguous."""
    return t.movedim(0, -1).contiguous()


def prepare_forcing(forcing: Forcing, bedrock_rule: BedrockRule = "conservative") -> PreparedForcing:
    """Compute the θ-independent operator pieces once (float64, sites innermost).

    Float64 CPU forcing without a gradient is prepared by compiled passes (``COMPILED_PREPARE``,
    docs/model.md §3.6), with the same results bit for bit as the torch ops below; forcing laid
    out sites innermost keeps W and O as views of its own fields (no copy).
    """
    forcing = forcing.to(torch.float64)
    fields = (forcing.soil_temp_k, forcing.water_scalar, forcing.oxygen_scalar, forcing.nitrogen_scalar)
    temp_k, oxygen, nitrogen = (t.movedim(0, -1) for t in (fields[0], fields[2], fields[3]))
    compiled = _compiled_prepare(*fields)
    if compiled and all(t.is_contiguous() for t in (temp_k, oxygen, nitrogen)):
        # laid out sites innermost (clm5.forcing.batch_first): the two conversions in one fused pass
        temp_exponent, oxygen_nitrogen = kernels.field_conversions(temp_k, oxygen, nitrogen, T_REF_K)
        water = _sites_last(forcing.water_scalar)
    elif compiled and all(t.is_contiguous() for t in fields):  # batch-first: the transposing copies fused in
        temp_exponent, water, oxygen, oxygen_nitrogen = kernels.batch_first_fields(*fields, T_REF_K)
    else:
        temp_exponent = _sites_last((forcing.soil_temp_k - T_REF_K) / 10.0)
        oxygen_nitrogen = _sites_last(forcing.oxygen_scalar * forcing.nitrogen_scalar)
        water, oxygen = _sites_last(forcing.water_scalar), _sites_last(forcing.oxygen_scalar)
    return PreparedForcing(
        inputs_g_m2_day=_sites_last(forcing.inputs_g_m2_yr / DAYS_PER_YEAR),
        temp_exponent=temp_exponent,
        water=water,
        oxygen=oxygen,
        oxygen_nitrogen=oxygen_nitrogen,
        transport_basis=_transport_basis(forcing, bedrock_rule),
        thawed=forcing.altmax_lastyear_m.detach() > 0,
        bedrock_rule=bedrock_rule,
    )


def input_profile(beta: torch.Tensor, thawed: torch.Tensor) -> torch.Tensor:
    """Jackson-β vertical allocation φ of the carbon input, [20, B], summing to 1 over layers.

    ``rho_j = β^(100 z_top) - β^(100 z_bottom)`` (depth in cm, ``beta`` [B] per cm) normalised
    over the 20 layers. As in CLM5 (``SoilBiogeochemVerticalProfileMod``, which keys on
    ``altmax_lastyear_indx > 0``), ``thawed`` [B] is "last year's maximum active layer > 0";
    elsewhere (permafrost up to the surface last year, e.g. at a first thaw) everything goes to
    the top layer.
    """
    top_cm = 100.0 * grid.grid_tensor("INTERFACE_TOP_M", beta)[:, None]
    bot_cm = 100.0 * grid.grid_tensor("INTERFACE_BOTTOM_M", beta)[:, None]
    log_beta = torch.log(beta)
    rho = torch.exp(log_beta * top_cm) - torch.exp(log_beta * bot_cm)
    phi = rho / rho.sum(0)
    top_only = torch.zeros_like(phi)
    top_only[0] = 1.0
    return torch.where(thawed, phi, top_only)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


#: Up to this many values per [12, 20, B] field (B ≤ ~270 sites, a training mini-batch) the means
#: are taken over all months at once: a few whole-year ops cost less than 12 months of per-op overhead.
_WHOLE_YEAR_ELEMENTS = 2**16


#: Use the compiled pass (socmap.clm5.kernels.environment_sums) on float64 CPU tensors; False keeps
#: the torch ops below everywhere (the reference in the tests; CUDA always takes them).
COMPILED_MEANS = True


class _EnvironmentMeans(torch.autograd.Function):
    """Monthly means of ξ^T ξ^W ξ^O and ξ^T ξ^W ξ^O ξ^N, differentiable in log Q10 and w_scaling
    only (the forcing fields are constants here).

    One month at a time on [20, B] slices, in place, instead of [12, 20, B] temporaries (the
    fields make this memory-bound); small batches in whole-year ops (``_WHOLE_YEAR_ELEMENTS``).
    When a gradient is wanted the forward keeps each month's
    ξ^T ξ^W (it computes it anyway), and the backward needs no exponential: ∂/∂log Q10 = T_exp ξ^T ξ^W
    and ∂/∂w_scaling = ξ^T ξ^W / w_scaling where w_scaling·W ≤ 1 (0 where clipped, docs/model.md P6;
    w_scaling = 0 would make ξ^W = 0, no decay and no steady state). The indicator is written as
    0/1 floats: a masked ``where`` costs ~5× a multiply here.

    On float64 CPU tensors (``COMPILED_MEANS``) the months are summed by a compiled kernel instead,
    which also forms Σ ξ·T_exp and Σ ξ·1(w_scaling·W ≤ 1) for the backward: the same derivatives,
    with no field read again (fwd + bwd 1.33 → 0.73 µs per site at 16k sites, 2 threads).
    """

    @staticmethod
    def forward(ctx, log_q10, w_scaling, temp_exponent, water, oxygen, oxygen_nitrogen):  # type: ignore[override]
        n = temp_exponent.shape[0]
        keep = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        if COMPILED_MEANS and all(t.device.type == "cpu" and t.dtype == torch.float64
                                  for t in (log_q10, w_scaling, temp_exponent, water, oxygen, oxygen_nitrogen)):
            # ξ^T for the year in one vectorised exp, then one compiled pass over the fields that also
            # forms the sums the backward needs, which then reads no field again (docs/model.md §3.6)
            tw = torch.mul(temp_exponent, log_q10).exp_()
            sums = kernels.environment_sums(tw, water, oxygen, oxygen_nitrogen, temp_exponent, w_scaling, keep).div_(n)
            if keep:
                ctx.save_for_backward(w_scaling, sums[2:])
            return sums[0], sums[1]
        env, env_n = torch.zeros_like(temp_exponent[0]), torch.zeros_like(temp_exponent[0])
        w = torch.empty_like(env)
        if temp_exponent.numel() <= _WHOLE_YEAR_ELEMENTS:  # small batch: few ops over all months
            tw_all = torch.mul(temp_exponent, log_q10).exp_().mul_(torch.mul(water, w_scaling).clamp_(max=1.0))
            env.copy_((tw_all * oxygen).sum(0))
            env_n.copy_((tw_all * oxygen_nitrogen).sum(0))
            if keep:
                ctx.save_for_backward(w_scaling, tw_all, temp_exponent, water, oxygen, oxygen_nitrogen)
            return env.div_(n), env_n.div_(n)
        tw_all = torch.empty_like(temp_exponent) if keep else torch.empty_like(temp_exponent[:1])
        for m in range(n):
            tw = tw_all[m if keep else 0]
            torch.mul(temp_exponent[m], log_q10, out=tw).exp_()
            tw.mul_(torch.mul(water[m], w_scaling, out=w).clamp_(max=1.0))
            env.addcmul_(tw, oxygen[m])
            env_n.addcmul_(tw, oxygen_nitrogen[m])
        if keep:
            ctx.save_for_backward(w_scaling, tw_all, temp_exponent, water, oxygen, oxygen_nitrogen)
        return env.div_(n), env_n.div_(n)

    @staticmethod
    def backward(ctx, g_env, g_env_n):  # type: ignore[override]
        if len(ctx.saved_tensors) == 2:  # compiled: the forward kept the sums (÷ 12) weighted by T_exp and 1(unclipped)
            w_scaling, sums = ctx.saved_tensors
            g_env = torch.zeros_like(sums[0]) if g_env is None else g_env
            g_env_n = torch.zeros_like(sums[0]) if g_env_n is None else g_env_n
            grad_q = (g_env * sums[0]).addcmul_(g_env_n, sums[1]).sum(0)
            return grad_q, (g_env * sums[2]).addcmul_(g_env_n, sums[3]).sum(0).div_(w_scaling), None, None, None, None
        w_scaling, tw_all, temp_exponent, water, oxygen, oxygen_nitrogen = ctx.saved_tensors
        n = temp_exponent.shape[0]
        g_env = torch.zeros_like(oxygen[0]) if g_env is None else g_env / n
        g_env_n = torch.zeros_like(oxygen[0]) if g_env_n is None else g_env_n / n
        if temp_exponent.numel() <= _WHOLE_YEAR_ELEMENTS:
            h = (oxygen * g_env).addcmul_(oxygen_nitrogen, g_env_n).mul_(tw_all)
            unclipped = torch.le(torch.mul(water, w_scaling), 1.0).to(h.dtype)
            return (h * temp_exponent).sum((0, 1)), (h.mul_(unclipped)).sum((0, 1)).div_(w_scaling), None, None, None, None
        acc_q, acc_w = torch.zeros_like(g_env), torch.zeros_like(g_env)
        h, x = torch.empty_like(g_env), torch.empty_like(g_env)
        for m in range(n):
            torch.mul(g_env, oxygen[m], out=h).addcmul_(g_env_n, oxygen_nitrogen[m]).mul_(tw_all[m])  # ∂L/∂(ξ^T ξ^W) ξ^T ξ^W
            acc_q.addcmul_(h, temp_exponent[m])
            acc_w.addcmul_(h, torch.le(torch.mul(water[m], w_scaling, out=x), 1.0, out=x))
        return acc_q.sum(0), acc_w.sum(0).div_(w_scaling), None, None, None, None


def environment_means(theta: Theta, prepared: PreparedForcing) -> tuple[torch.Tensor, torch.Tensor]:
    """Monthly means of ξ^T ξ^W ξ^O and ξ^T ξ^W ξ^O ξ^N per layer, each [20, B]."""
    log_q10 = torch.log(_col(theta, "q10"))
    w_scaling = _col(theta, "w_scaling")
    fields = (prepared.temp_exponent, prepared.water, prepared.oxygen, prepared.oxygen_nitrogen)
    if not _needs_grad(*fields):
        return _EnvironmentMeans.apply(log_q10, w_scaling.contiguous(), *fields)
    # differentiable in the forcing too (e.g. its gradient check): plain autograd
    tw = torch.exp(log_q10 * prepared.temp_exponent) * torch.clamp(w_scaling * prepared.water, max=1.0)
    return (tw * prepared.oxygen).mean(0), (tw * prepared.oxygen_nitrogen).mean(0)


def check_o_scalar(o_scalar: torch.Tensor, batch_size: int) -> None:
    """Raise ``ValueError`` unless ``o_scalar`` is a [B, 20] tensor of 0–1 values (NaN-free)."""
    if tuple(o_scalar.shape) != (batch_size, grid.N_LAYERS):
        raise ValueError(f"o_scalar must have shape [{batch_size}, {grid.N_LAYERS}] (sites × layers); got {tuple(o_scalar.shape)}")
    v = o_scalar.detach()
    if not bool(((v >= 0) & (v <= 1)).all()):
        raise ValueError("o_scalar is an oxygen (anoxia) scalar: every value must lie in [0, 1] (no NaN)")


def build_operators(theta: torch.Tensor, prepared: PreparedForcing, o_scalar: torch.Tensor | None = None) -> Operators:
    """All month-averaged operators for physical parameters ``theta`` [B, 21] (float64).

    ``o_scalar`` [B, 20] (0–1, optional, may require grad) is an extra oxygen scalar per site and
    layer, constant over the year, multiplying the decay rate of every pool (docs/model.md §5.10:
    the learned wetland anoxia). Because it is constant over the months it multiplies the
    monthly means of ξ^T ξ^W ξ^O exactly as a factor on the forcing's O would. None leaves the
    operators untouched; ones give the same numbers bit for bit.
    """
    if theta.shape[0] != prepared.batch_size:
        raise ValueError(f"theta has {theta.shape[0]} sites but the prepared forcing has {prepared.batch_size}")
    like, theta = theta, _columns(theta)
    env, env_n = environment_means(theta, prepared)
    if o_scalar is not None:
        o = o_scalar.to(env.dtype).movedim(0, -1)  # [20, B], sites innermost like env
        env, env_n = env * o, env_n * o
    node = grid.grid_tensor("NODE_M", like)[:, None]
    xi_depth = torch.exp(-node / _col(theta, "efolding"))  # [20, B]
    tau_yr = torch.stack([_col(theta, n) for n in POOL_TAU])  # [7, B]
    base = 1.0 / (DAYS_PER_YEAR * tau_yr)
    env_n_depth = env_n * xi_depth
    env_depth = env * xi_depth
    decay = torch.stack(
        [base[0] * env_depth, base[1] * env_n_depth, base[2] * env_n_depth, base[3] * env_n_depth,
         base[4] * env_depth, base[5] * env_depth, base[6] * env_depth]
    )
    basis = prepared.transport_basis
    transport = torch.addcmul(torch.addcmul(basis[2], basis[0], _col(theta, "diffus")), basis[1], _col(theta, "cryo"))
    phi = input_profile(_col(theta, "beta"), prepared.thawed)
    dz = grid.grid_tensor("DZ_M", like)[:, None]
    source = prepared.inputs_g_m2_day[:, None, :] * (phi / dz)[None]
    return Operators(decay, transfer_fractions(theta), transport, source, phi)
