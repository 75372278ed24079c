"""Property and known-answer tests of the CLM5 steady-state solver."""


import numpy as np
import pytest
import torch

from conftest import make_forcing, random_theta
from socmap.clm5 import grid, operators as O
from socmap.clm5.forcing import Forcing
from socmap.clm5.parameters import INDEX, default_theta, midrange_theta, to_physical, to_unit
from socmap.clm5.solver import SingularSystemWarning, assemble_dense, solve_structured, steady_state


def normwise_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max over (site, pool) of the max-norm relative difference of the depth profile."""
    return float(((a - b).abs().amax(-1) / b.abs().amax(-1).clamp_min(1e-300)).max())


def dense_system(theta, forcing, rule="conservative"):
    ops = O.build_operators(theta, O.prepare_forcing(forcing, rule))
    a, k, v, src = assemble_dense(ops)
    return v - a * k[:, None, :], src


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_structured_matches_dense(seed):
    forcing, theta = make_forcing(96, seed), random_theta(96, seed + 100)
    x_fast = steady_state(theta, forcing)
    x_dense = steady_state(theta, forcing, method="dense")
    assert x_fast.shape == (96, 7, 20) and x_fast.dtype == torch.float64
    assert normwise_rel_diff(x_fast, x_dense) <= 1e-9


def test_binn_bedrock_rule_structured_matches_equilibrated_dense():
    """BINN's leaky bedrock rule makes (V̄ - A K̄) very ill-conditioned for shallow bedrock
    (cond ~1e30); the structured sweeps keep a rounding-level backward error and agree with the
    row-equilibrated dense LU."""
    forcing, theta = make_forcing(48, 7), random_theta(48, 8)
    x_fast = steady_state(theta, forcing, bedrock_rule="binn")
    x_dense = steady_state(theta, forcing, "dense", bedrock_rule="binn")
    assert normwise_rel_diff(x_fast, x_dense) <= 1e-9
    m, src = dense_system(theta, forcing, "binn")
    resid = (m @ x_fast.reshape(48, -1, 1)).squeeze(-1) - src
    scale = (m.abs() @ x_fast.abs().reshape(48, -1, 1)).squeeze(-1) + src.abs()
    assert float((resid.abs() / scale.clamp_min(1e-300)).max()) < 1e-13


def test_steady_state_residual_is_at_rounding_level():
    """Componentwise backward error |M x - I| / (|M||x| + |I|) of the structured solution."""
    forcing, theta = make_forcing(64, 3), random_theta(64, 4)
    m, src = dense_system(theta, forcing)
    x = steady_state(theta, forcing).reshape(64, -1)
    resid = (m @ x.unsqueeze(-1)).squeeze(-1) - src
    scale = (m.abs() @ x.abs().unsqueeze(-1)).squeeze(-1) + src.abs()
    assert float((resid.abs() / scale.clamp_min(1e-300)).max()) < 1e-13


def test_pools_non_negative_in_bounds(forcing64, theta64):
    x = steady_state(theta64, forcing64)
    assert torch.isfinite(x).all()
    assert float(x.min()) >= 0.0
    assert float(x[:, 4:, :3].min()) > 0.0  # SOM present near the surface everywhere


def _column_imbalance(theta, forcing, rule):
    """dz-weighted column sums of V̄_b (zero when transport conserves the column stock)."""
    lower, diag, upper, _ = O.transport_tridiagonal_direct(theta, forcing, rule)
    dz = torch.tensor(grid.DZ_M)
    col = dz * diag
    col[:, 1:] += (dz * upper)[:, :-1]
    col[:, :-1] += (dz * lower)[:, 1:]
    return col, (dz * diag).abs().amax(1, keepdim=True)


def test_transport_conserves_column_stock_with_conservative_bedrock():
    forcing, theta = make_forcing(64, 5), random_theta(64, 6)
    col, scale = _column_imbalance(theta, forcing, "conservative")
    assert bool((col.abs() <= 1e-13 * scale + 1e-30).all())


def test_binn_bedrock_rule_leaks_only_at_shallow_bedrock():
    """Pitfall P5: BINN's rule is non-conservative at the bedrock interface when nbedrock <= 18."""
    n = 6
    forcing = make_forcing(n, 9, frozen_fraction=0.0)
    forcing = forcing.replace(alt_m=torch.full((n, 12), 10.0, dtype=torch.float64), nbedrock=torch.tensor([3, 8, 12, 18, 19, 20]))
    theta = midrange_theta(n)
    col, scale = _column_imbalance(theta, forcing, "binn")
    rel = (col.abs() / scale)
    for i, nb in enumerate([3, 8, 12, 18]):
        leaking = torch.nonzero(rel[i] > 1e-6).flatten().tolist()
        assert leaking and set(leaking) <= {nb - 1, nb, nb + 1}, (nb, leaking)
    assert float(rel[4:].max()) < 1e-13  # nbedrock 19 and 20 conserve
    col_c, scale_c = _column_imbalance(theta, forcing, "conservative")
    assert float((col_c.abs() / scale_c).max()) < 1e-13


def test_prepared_operators_equal_spec_formulas():
    """The θ-linear transport basis and the prepared decay rates reproduce the direct formulas."""
    forcing, theta = make_forcing(64, 11), random_theta(64, 12)
    steady_alt = forcing.replace(alt_m=forcing.alt_m[:, :1].expand(-1, 12).contiguous())  # shortcut path
    for rule, forcing in (("conservative", forcing), ("binn", forcing), ("conservative", steady_alt)):
        ops = O.build_operators(theta, O.prepare_forcing(forcing, rule))
        lower, diag, upper, _ = O.transport_tridiagonal_direct(theta, forcing, rule)
        direct = torch.stack([lower, diag, upper]).movedim(1, -1)
        assert float((ops.transport - direct).abs().max() / direct.abs().max()) < 1e-14
    k_direct, _ = O.decay_rates_direct(theta, forcing)
    torch.testing.assert_close(ops.decay_per_day, k_direct.movedim(0, -1), rtol=1e-13, atol=0)


def test_temperature_scalar_frozen_branch():
    t = torch.tensor([[263.15, 273.15, 298.15, 308.15]], dtype=torch.float64)
    q10 = torch.tensor([2.0], dtype=torch.float64)
    xi = O.temperature_scalar(t, q10)
    torch.testing.assert_close(xi, torch.tensor([[2.0**-3.5, 2.0**-2.5, 1.0, 2.0]], dtype=torch.float64))
    xi_f = O.temperature_scalar(t, q10, q10_frozen=torch.tensor([4.0], dtype=torch.float64))
    assert float(xi_f[0, 0]) == pytest.approx(2.0**-2.5 * 4.0**-1.0)  # frozen Q10 applies below 0 °C only
    assert float(xi_f[0, 3]) == pytest.approx(2.0)


def test_no_transport_column_equals_per_layer_7x7_solution(forcing64, theta64):
    ops = O.build_operators(theta64, O.prepare_forcing(forcing64))
    ops.transport = torch.zeros_like(ops.transport)
    x = solve_structured(ops).movedim(-1, 0).numpy()  # [B, 7, 20]
    k = ops.decay_per_day.movedim(-1, 0).numpy()
    src = ops.source_g_m3_day.movedim(-1, 0).numpy()
    for b in (0, 17, 63):
        a = -np.eye(7)
        for recv, donor, name in O.TRANSFER_EDGES:
            a[recv, donor] = float(ops.fractions[name][b])
        for j in (0, 5, 19):
            rhs = np.zeros(7)
            rhs[:4] = src[b, :, j]
            expected = np.linalg.solve(-a * k[b, :, j][None, :], rhs)
            np.testing.assert_allclose(x[b, :, j], expected, rtol=1e-10)
    # CWD does not move: X_cwd = I_cwd / K_cwd exactly, with or without transport
    np.testing.assert_allclose(x[:, 0], src[:, 0] / k[:, 0], rtol=1e-14)


def test_doubling_inputs_doubles_stocks(forcing64, theta64):
    x1 = steady_state(theta64, forcing64)
    x2 = steady_state(theta64, forcing64.replace(inputs_g_m2_yr=2 * forcing64.inputs_g_m2_yr))
    torch.testing.assert_close(x2, 2 * x1, rtol=1e-12, atol=0)


def test_longer_passive_turnover_stores_more_carbon(forcing64):
    theta = midrange_theta(64)
    slow = theta.clone()
    slow[:, INDEX["tau4s3"]] *= 1.5
    assert bool((steady_state(slow, forcing64)[:, 6].sum(-1) > steady_state(theta, forcing64)[:, 6].sum(-1)).all())


def test_gradcheck_theta_and_forcing():
    """Gradients w.r.t. normalised parameters (all O(1), so finite differences are accurate)
    and forcing: soil temperature, water scalar, carbon inputs."""
    forcing = make_forcing(2, 21, frozen_fraction=0.0)
    p = to_unit(random_theta(2, 22))
    p[:, INDEX["w_scaling"]] = 0.1  # keep w_scaling·W away from the clip at 1 (a kink)
    temp = forcing.soil_temp_k.clone().requires_grad_()
    water = forcing.water_scalar.clone().requires_grad_()
    inputs = forcing.inputs_g_m2_yr.clone().requires_grad_()
    th = p.clone().requires_grad_()

    def soc(p, temp, water, inputs):
        f = forcing.replace(soil_temp_k=temp, water_scalar=water, inputs_g_m2_yr=inputs)
        x = steady_state(to_physical(p), f, check=False)
        return x[:, 4:, :6].sum(1) / 1e4  # SOC in the top 6 layers, scaled to O(1)

    assert torch.autograd.gradcheck(soc, (th, temp, water, inputs), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_structured_and_dense_gradients_agree():
    forcing, theta = make_forcing(16, 31), random_theta(16, 32)
    grads = []
    for method in ("structured", "dense"):
        th = theta.clone().requires_grad_()
        inputs = forcing.inputs_g_m2_yr.clone().requires_grad_()
        x = steady_state(th, forcing.replace(inputs_g_m2_yr=inputs), method=method)
        torch.log(x[:, 4:, :8].sum(1)).sum().backward()
        grads.append((th.grad, inputs.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-7, atol=1e-12)


def test_clm5_defaults_run_with_bounds_check_off(forcing64):
    theta = default_theta(64)
    with pytest.raises(ValueError, match="efolding=10"):
        steady_state(theta, forcing64)
    x = steady_state(theta, forcing64, check_bounds_=False)
    assert torch.isfinite(x).all()


def test_bad_inputs_give_clear_errors(forcing64, theta64):
    with pytest.raises(ValueError, match=r"theta must have shape \[B, 21\]"):
        steady_state(theta64[:, :20], forcing64)
    with pytest.raises(ValueError, match="theta has 10 sites but the forcing has 64"):
        steady_state(theta64[:10], forcing64)
    t = forcing64.soil_temp_k.clone()
    t[5, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"soil_temp_k.*indices 5"):
        steady_state(theta64, forcing64.replace(soil_temp_k=t))
    with pytest.raises(ValueError, match="did you pass °C"):
        steady_state(theta64, forcing64.replace(soil_temp_k=forcing64.soil_temp_k - 273.15))
    with pytest.raises(ValueError, match=r"'water_scalar' has shape \(64, 20, 12\)"):
        steady_state(theta64, forcing64.replace(water_scalar=forcing64.water_scalar.transpose(1, 2)))
    with pytest.raises(ValueError, match="method must be"):
        steady_state(theta64, forcing64, method="lu")


def test_singular_sites_are_named_and_nan():
    forcing = make_forcing(4, 41)
    theta = random_theta(4, 42)
    theta[2, INDEX["taucwd"]] = float("inf")  # zero decay rate: no steady state for CWD
    with pytest.warns(SingularSystemWarning, match=r"indices 2"):
        x = steady_state(theta, forcing, check=False)
    assert torch.isnan(x[2]).all() and torch.isfinite(x[[0, 1, 3]]).all()


def test_forcing_container_roundtrip(forcing64):
    sub = forcing64.subset(slice(0, 5))
    assert sub.batch_size == 5
    both = Forcing.concat([sub, forcing64.subset(slice(5, 9))])
    torch.testing.assert_close(both.soil_temp_k, forcing64.soil_temp_k[:9])
    arrays = forcing64.to_numpy()
    again = Forcing.from_numpy(**arrays)
    torch.testing.assert_close(again.alt_m, forcing64.alt_m)
    with pytest.raises(ValueError, match="'nbedrock' is missing"):
        Forcing.from_numpy(**{k: v for k, v in arrays.items() if k != "nbedrock"})


def test_prepared_forcing_subset_matches_full_solve(forcing64, theta64):
    from socmap.clm5.operators import prepare_forcing

    prepared = prepare_forcing(forcing64)
    idx = torch.tensor([3, 10, 41])
    torch.testing.assert_close(steady_state(theta64[idx], prepared.subset(idx)), steady_state(theta64, prepared)[idx])


def test_adjoint_gradients_match_autograd_through_the_sweeps():
    from socmap.clm5.operators import prepare_forcing

    forcing, theta = make_forcing(32, 71), random_theta(32, 72)
    prepared = prepare_forcing(forcing)
    grads = []
    for adjoint in (True, False):
        th = theta.clone().requires_grad_()
        x = solve_structured(O.build_operators(th, prepared), adjoint=adjoint)
        torch.log(x[4:7].sum(0)[:8]).sum().backward()
        grads.append(th.grad)
    scale = grads[1].abs().amax(0, keepdim=True) + 1e-300
    assert float(((grads[0] - grads[1]).abs() / scale).max()) < 1e-8


# -- the learned wetland anoxia: an extra oxygen scalar on every decay rate (docs/model.md §5.10)

def test_o_scalar_of_ones_leaves_the_solution_unchanged_bit_for_bit(forcing64, theta64):
    ones = torch.ones(theta64.shape[0], grid.N_LAYERS, dtype=torch.float64)
    for method in ("structured", "dense"):
        plain = steady_state(theta64, forcing64, method)
        assert torch.equal(steady_state(theta64, forcing64, method, o_scalar=ones), plain)


def test_o_scalar_below_one_raises_stock_and_equals_a_scaled_oxygen_forcing(forcing64, theta64):
    n = theta64.shape[0]
    o = torch.ones(n, grid.N_LAYERS, dtype=torch.float64)
    o[:, 1:] = 0.2  # anoxic below the top node
    base = steady_state(theta64, forcing64)
    anoxic = steady_state(theta64, forcing64, o_scalar=o)
    dz = torch.as_tensor(grid.DZ_M, dtype=torch.float64)
    stock = lambda x: (x.sum(1) * dz).sum(1)  # noqa: E731
    deep = base[:, :, 1:].sum((1, 2)) > 1e-3 * base.sum((1, 2))  # a site with (almost) no carbon below the top node gains nothing
    assert bool(deep.any()) and bool((stock(anoxic)[deep] > stock(base)[deep] * (1 + 1e-6)).all())
    assert bool((stock(anoxic) >= stock(base) * (1 - 1e-12)).all())
    # constant over the months, the scalar acts exactly as the same factor on the forcing's O
    scaled = forcing64.replace(oxygen_scalar=forcing64.oxygen_scalar * o[:, None, :])
    torch.testing.assert_close(anoxic, steady_state(theta64, scaled), rtol=1e-12, atol=0)


def test_o_scalar_is_differentiable_and_checked(forcing64, theta64):
    n = theta64.shape[0]
    o = torch.full((n, grid.N_LAYERS), 0.5, dtype=torch.float64, requires_grad=True)
    steady_state(theta64, forcing64, o_scalar=o).sum().backward()
    # slower decay stores more carbon: d stock / d o <= 0 everywhere (0 in layers without carbon), < 0 at the top
    assert bool((o.grad <= 0).all()) and bool((o.grad[:, 0] < 0).all())
    with pytest.raises(ValueError, match="o_scalar must have shape"):
        steady_state(theta64, forcing64, o_scalar=torch.ones(n, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        steady_state(theta64, forcing64, o_scalar=torch.full((n, grid.N_LAYERS), 1.5, dtype=torch.float64))


# -- the kept factorization: explicit inverses on large batches, and the transposed solve of the adjoint

def test_explicit_inverse_path_matches_dense_and_the_adjoint(monkeypatch):
    """Batches from EXPLICIT_INVERSE_MIN_SITES on form the 3×3 inverses entry by entry; the same
    solution and gradients as the dense path (forced here on a small batch)."""
    from socmap.clm5 import solver as S

    forcing, theta = make_forcing(40, 81), random_theta(40, 82)
    x_dense = steady_state(theta, forcing, method="dense")
    monkeypatch.setattr(S, "EXPLICIT_INVERSE_MIN_SITES", 1)
    assert normwise_rel_diff(steady_state(theta, forcing), x_dense) < 1e-9
    prepared = O.prepare_forcing(forcing)
    grads = []
    for adjoint in (True, False):
        th = theta.clone().requires_grad_()
        torch.log(solve_structured(O.build_operators(th, prepared), adjoint=adjoint)[4:7].sum(0)[:8]).sum().backward()
        grads.append(th.grad)
    scale = grads[1].abs().amax(0, keepdim=True) + 1e-300
    assert float(((grads[0] - grads[1]).abs() / scale).max()) < 1e-8


@pytest.mark.parametrize("explicit", [False, True])
def test_transposed_solve_matches_dense_transpose(monkeypatch, explicit):
    """solve_transposed(g) solves (s 𝟙 + V̄ - A K̄)ᵀ λ = g with the forward's factors (a dense check)."""
    from socmap.clm5 import solver as S

    if explicit:
        monkeypatch.setattr(S, "EXPLICIT_INVERSE_MIN_SITES", 1)
    forcing, theta = make_forcing(12, 91), random_theta(12, 92)
    ops = O.build_operators(theta, O.prepare_forcing(forcing))
    a, k, v, _ = assemble_dense(ops)
    s = torch.linspace(0.0, 1e-3, 12, dtype=torch.float64)
    m = v - a * k[:, None, :] + s[:, None, None] * torch.eye(140, dtype=torch.float64)
    g = torch.rand(7, 20, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    lam = S.factor_shifted(ops, s).solve_transposed(g)
    dense = torch.linalg.solve(m.transpose(1, 2), g.movedim(-1, 0).reshape(12, 140, 1)).reshape(12, 7, 20).movedim(0, -1)
    assert float(((lam - dense).abs().amax((0, 1)) / dense.abs().amax((0, 1))).max()) < 1e-9
    with pytest.raises(ValueError, match="rhs must have shape"):
        S.factor_shifted(ops, s).solve_transposed(g[:, :, :3])


def test_adjoint_solve_frees_its_output_and_factorization(forcing64, theta64):
    """The adjoint keeps the factorization for the backward pass; the solution must not be reachable
    from it: a reference cycle through the autograd graph is freed only when Python's cyclic GC
    happens to run (rarely, in a loop of large solves), so memory and page faults grew per call."""
    import gc
    import weakref

    th = theta64.clone().requires_grad_()
    gc.disable()
    try:
        x = solve_structured(O.build_operators(th, O.prepare_forcing(forcing64)))  # the adjoint's own output
        ref = weakref.ref(x)
        x[4:].sum().backward()
        del x
        assert ref() is None  # freed by reference counting alone
    finally:
        gc.enable()
