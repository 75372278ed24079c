"""Transient SOC: backward-Euler steps of the CLM5 matrix model from a steady state.

The model is dX/dt = I − M X with M = V̄ − A K̄ (docs/model.md §2.3; the steady state is
X* = M⁻¹ I). One implicit (backward-Euler) step of length Δt solves

    (𝟙/Δt + M) Xₙ₊₁ = Xₙ/Δt + I,

the steady-state system with the diagonal shifted by 1/Δt, so the structured sweeps do it
(:func:`socmap.clm5.solver.solve_shifted`); no dense matrix is formed. The step is unconditionally
stable and its fixed point is exactly X*, so unchanged forcing stays at the steady state.

Carbon balance of one step (tested). With S(X) = Σ_pools Σ_j X_kj dz_j the column carbon
(g C m⁻², litter and CWD included) and R(X) = Σ_j dz_j Σ_d r_d K̄_dj X_dj the respiration
(g C m⁻² d⁻¹; r_d = 1 − Σ of d's transfer fractions is the share of a donor's decay lost as CO₂,
0 for CWD), transport only redistributes carbon (dzᵀV̄ = 0, §2.6), so

    S(Xₙ₊₁) − S(Xₙ) = Δt · (ΣI − R(Xₙ₊₁))

exactly: the respiration of a step is evaluated at the end-of-step state, as the implicit step
implies.

Forcing during a transient is given by the caller as a function of the ramp fraction
(0 = present, 1 = scenario); the operators are rebuilt only when that fraction changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from socmap.clm5 import grid
from socmap.clm5.observe import STOCK_INTERVALS_M
from socmap.clm5.operators import TRANSFER_EDGES, Operators, PreparedForcing, build_operators
from socmap.clm5.solver import factor_shifted, solve_shifted

DAYS_PER_YEAR = 365.0


def source_pools(ops: Operators) -> torch.Tensor:
    """External input I in every pool, [7, 20, B] gC m-3 d-1 (zero in the SOM pools)."""
    src = ops.source_g_m3_day
    return torch.cat([src, torch.zeros((3,) + tuple(src.shape[1:]), dtype=src.dtype, device=src.device)], 0)


def column_carbon_g_m2(pools: torch.Tensor) -> torch.Tensor:
    """All carbon in the column, Σ_k Σ_j X_kj dz_j: pools [7, 20, B] gC m-3 -> [B] gC m-2."""
    dz = grid.grid_tensor("DZ_M", pools)
    return (pools * dz[None, :, None]).sum((0, 1))


def respiration_g_m2_day(ops: Operators, pools: torch.Tensor) -> torch.Tensor:
    """CO₂ leaving the column, Σ_j dz_j Σ_d r_d K̄_dj X_dj: [B] gC m-2 d-1 (see the module docstring)."""
    passed = [torch.zeros_like(ops.fractions["fcwdl2"]) for _ in range(grid.N_POOLS)]
    for _, donor, name in TRANSFER_EDGES:
        passed[donor] = passed[donor] + ops.fractions[name]
    respired_share = 1.0 - torch.stack(passed)  # [7, B]; 0 for CWD (it fragments without respiration)
    dz = grid.grid_tensor("DZ_M", pools)
    return (respired_share[:, None, :] * ops.decay_per_day * pools * dz[None, :, None]).sum((0, 1))


def implicit_step(ops: Operators, pools: torch.Tensor, dt_days: float) -> torch.Tensor:
    """One backward-Euler step: solve (𝟙/Δt + M) Xₙ₊₁ = Xₙ/Δt + I; pools [7, 20, B] gC m-3."""
    if not dt_days > 0:
        raise ValueError(f"the time step must be positive, not {dt_days} days")
    shift = 1.0 / dt_days
    return solve_shifted(ops, shift, pools * shift + source_pools(ops))


def steady_pools(ops: Operators) -> torch.Tensor:
    """The steady state X* = M⁻¹ I of the operators, [7, 20, B] gC m-3."""
    return solve_shifted(ops, 0.0, source_pools(ops))


def stocks_kg_m2(pools: torch.Tensor) -> dict[str, torch.Tensor]:
    """SOC stocks (S1+S2+S3) over :data:`~socmap.clm5.observe.STOCK_INTERVALS_M`, each [B] kg C m-2."""
    soc = pools[4:7].sum(0)  # [20, B]
    out = {}
    for name, (top, bottom) in STOCK_INTERVALS_M.items():
        overlap = torch.as_tensor(grid.layer_overlap_m(top, bottom), dtype=soc.dtype, device=soc.device)
        out[name] = (overlap[:, None] * soc).sum(0) / 1000.0
    return out


def ramp_fraction(year: float, ramp_years: float) -> float:
    """Share of the way from present (0) to scenario (1) forcing at ``year``: linear over ``ramp_years``."""
    if ramp_years < 0:
        raise ValueError(f"ramp_years must be >= 0, not {ramp_years}")
    return 1.0 if ramp_years == 0 else float(min(1.0, max(0.0, year / ramp_years)))


@dataclass(frozen=True)
class Trajectory:
    """Annual SOC stocks of a transient.

    Attributes
    ----------
    years : ndarray [T+1]
        Years since the start (0 = the starting steady state).
    stocks : dict of str to ndarray [T+1, B]
        ``soc_stock_0_30cm`` and ``soc_stock_0_100cm`` (kg C m-2) at the end of each year.
    final_pools : Tensor [7, 20, B]
        The last state (gC m-3).
    """

    years: np.ndarray
    stocks: dict[str, np.ndarray]
    final_pools: torch.Tensor


def run_transient(theta: torch.Tensor, prepared_at: Callable[[float], PreparedForcing], years: int,
                  ramp_years: float = 0.0, *, dt_years: float = 1.0) -> Trajectory:
    """Step the model from the present steady state while the forcing moves to the scenario.

    Parameters
    ----------
    theta : Tensor [B, 21]
        Physical parameters (float64), fixed in time.
    prepared_at : callable
        ``prepared_at(fraction)`` gives the prepared forcing of the ``B`` sites at ramp fraction
        ``fraction`` (0 = present climate, 1 = scenario).
    years : int
        Number of steps (≥ 1).
    ramp_years : float
        The forcing moves linearly from present to scenario over this many years (0 = a step
        change at the start); step n (ending at year n·Δt) uses the forcing of its end point.
    dt_years : float
        Step length (years).

    Returns
    -------
    Trajectory
    """
    if years < 1:
        raise ValueError(f"a transient needs at least one step; got years={years}")
    dt_days = dt_years * DAYS_PER_YEAR
    shift = 1.0 / dt_days
    with torch.no_grad():
        fraction = 0.0
        ops = build_operators(theta, prepared_at(fraction))
        pools = steady_pools(ops)
        out = {k: [v.cpu().numpy()] for k, v in stocks_kg_m2(pools).items()}
        factor = source = None
        for n in range(1, years + 1):
            f = ramp_fraction(n * dt_years, ramp_years)
            if f != fraction or factor is None:  # new forcing: new operators, new factorization
                if f != fraction:
                    fraction = f
                    ops = build_operators(theta, prepared_at(fraction))
                factor, source = factor_shifted(ops, shift), source_pools(ops)
            pools = factor.solve(pools * shift + source)  # = implicit_step(ops, pools, dt_days)
            for k, v in stocks_kg_m2(pools).items():
                out[k].append(v.cpu().numpy())
    return Trajectory(years=np.arange(years + 1) * dt_years, stocks={k: np.stack(v) for k, v in out.items()},
                      final_pools=pools)
