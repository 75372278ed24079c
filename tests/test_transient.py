"""Backward-Euler transients of the CLM5 matrix model (socmap.transient, solver.solve_shifted)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_forcing, random_theta
from socmap.clm5 import build_operators, grid, prepare_forcing, steady_state
from socmap.clm5.parameters import INDEX
from socmap.clm5.solver import assemble_dense, factor_shifted, solve_shifted
from socmap.transient import (
    column_carbon_g_m2,
    implicit_step,
    ramp_fraction,
    respiration_g_m2_day,
    run_transient,
    source_pools,
    steady_pools,
    stocks_kg_m2,
)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max relative difference per site, against each site's largest pool (zeros occur in frozen columns)."""
    scale = b.abs().amax((0, 1), keepdim=True)
    return float(((a - b).abs() / scale).max())


@pytest.fixture(scope="module")
def system():
    f = make_forcing(24, seed=3)
    th = random_theta(24, seed=4)
    return th, f, build_operators(th, prepare_forcing(f))


def test_shifted_solve_matches_dense_and_steady_state(system):
    th, f, ops = system
    # s = 0, b = I is the steady state of the structured and of the dense path
    x = steady_pools(ops)
    assert _rel(x, steady_state(th, f).movedim(0, -1)) < 1e-12
    assert _rel(x, steady_state(th, f, method="dense").movedim(0, -1)) < 1e-9
    # a shifted system with a right-hand side in every pool, against a dense solve
    a, k, v, _ = assemble_dense(ops)
    m = v - a * k[:, None, :]
    s = torch.linspace(1e-4, 1e-2, ops.batch_size, dtype=torch.float64)
    rhs = torch.rand(7, 20, ops.batch_size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dense = torch.linalg.solve(m + s[:, None, None] * torch.eye(140, dtype=torch.float64),
                               rhs.movedim(-1, 0).reshape(ops.batch_size, 140, 1)).reshape(ops.batch_size, 7, 20).movedim(0, -1)
    assert _rel(solve_shifted(ops, s, rhs), dense) < 1e-10
    # the kept factorization gives the same result for any right-hand side
    fac = factor_shifted(ops, s)
    assert _rel(fac.solve(rhs), solve_shifted(ops, s, rhs)) < 1e-13
    assert _rel(fac.solve(2.0 * rhs + 1.0), solve_shifted(ops, s, 2.0 * rhs + 1.0)) < 1e-13
    with pytest.raises(ValueError, match="rhs must have shape"):
        solve_shifted(ops, 0.1, rhs[:, :, :3])


def test_unchanged_forcing_stays_at_steady_state(system):
    th, f, ops = system
    prepared = prepare_forcing(f)
    traj = run_transient(th, lambda frac: prepared, years=50, ramp_years=10)
    step = implicit_step(ops, steady_pools(ops), 365.0)
    assert _rel(step, steady_pools(ops)) <= 1e-8
    for name, s in traj.stocks.items():
        assert np.abs(s / s[0] - 1.0).max() <= 1e-8, name
    assert _rel(traj.final_pools, steady_pools(ops)) <= 1e-8


def test_one_implicit_step_conserves_carbon(system):
    th, f, ops = system
    x0 = steady_pools(ops)
    warm = build_operators(th, prepare_forcing(f.replace(soil_temp_k=f.soil_temp_k + 3.0,
                                                         inputs_g_m2_yr=f.inputs_g_m2_yr * 1.3)))
    dt = 365.0
    x1 = implicit_step(warm, x0, dt)
    dz = grid.grid_tensor("DZ_M", x1)
    inputs = (source_pools(warm) * dz[None, :, None]).sum((0, 1))  # = the column input, gC m-2 d-1
    assert torch.allclose(inputs, f.inputs_g_m2_yr.sum(1) * 1.3 / 365.0, rtol=1e-12)
    change = column_carbon_g_m2(x1) - column_carbon_g_m2(x0)
    budget = dt * (inputs - respiration_g_m2_day(warm, x1))
    scale = column_carbon_g_m2(x0)
    assert (change.abs() / scale).max() > 1e-4  # the step did change the stock
    assert ((change - budget).abs() / scale).max() < 1e-12


def test_step_change_converges_to_the_scenario_steady_state():
    f = make_forcing(6, seed=5, frozen_fraction=0.0)
    f = f.replace(soil_temp_k=torch.full_like(f.soil_temp_k, 288.15), alt_m=torch.full_like(f.alt_m, 10.0))
    th = random_theta(6, seed=6)
    th[:, INDEX["efolding"]] = 1.0
    th[:, INDEX["q10"]] = 2.0
    present = prepare_forcing(f)
    scenario = prepare_forcing(f.replace(soil_temp_k=f.soil_temp_k + 2.0))
    target = steady_pools(build_operators(th, scenario))
    # large steps: backward Euler is L-stable and its fixed point is the scenario's steady state
    traj = run_transient(th, lambda frac: scenario if frac > 0 else present, years=40, dt_years=1e7)
    assert _rel(traj.final_pools, target) < 1e-9
    # annual steps: 30 years later the 0-30 cm stock has lost carbon and moved toward the warmer
    # steady state (not monotonically: faster litter decay first feeds the SOM pools)
    annual = run_transient(th, lambda frac: scenario if frac > 0 else present, years=30)
    s = annual.stocks["soc_stock_0_30cm"]
    end = stocks_kg_m2(target)["soc_stock_0_30cm"].numpy()
    assert (end < s[0]).all() and (s[-1] < s[0]).all()
    assert (np.abs(s[-1] - end) < np.abs(s[0] - end)).all()


def test_ramp_moves_the_forcing_linearly():
    assert [ramp_fraction(y, 4) for y in (0, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert ramp_fraction(1, 0) == 1.0
    seen = []
    f = make_forcing(3, seed=7)
    p = prepare_forcing(f)
    run_transient(random_theta(3, seed=8), lambda frac: seen.append(frac) or p, years=6, ramp_years=4)
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="at least one step"):
        run_transient(random_theta(3), lambda frac: p, years=0)
