"""The KAN's local B-spline evaluation (socmap.nets.kan, docs/model.md §6.3) against the full
Cox–de Boor recursion it replaced: equality, partition of unity, points on knots and outside the
grid, gradients, and the basis shared between the forward pass and the regularisers."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

import socmap.nets.kan as kan
from socmap.nets import KAN, KANLayer, bspline_basis
from socmap.nets.kan import _uniform_grid, bspline_local, interval_polynomials


def cox_de_boor(x: torch.Tensor, grid: torch.Tensor, k: int) -> torch.Tensor:
    """The recursion over all knots on [B, n, M] (socmap's evaluation before the local one)."""
    xe = x.unsqueeze(-1)
    g = grid.unsqueeze(0)
    basis = ((xe >= g[..., :-1]) & (xe < g[..., 1:])).to(x.dtype)
    for p in range(1, k + 1):
        left = (xe - g[..., : -(p + 1)]) / (g[..., p:-1] - g[..., : -(p + 1)]) * basis[..., :-1]
        right = (g[..., p + 1 :] - xe) / (g[..., p + 1 :] - g[..., 1:-p]) * basis[..., 1:]
        basis = left + right
    return basis


TOL = {torch.float64: 1e-12, torch.float32: 1e-6}


def _grids(n: int, k: int, dtype: torch.dtype, uniform: bool, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if uniform:
        lo = torch.rand(n, generator=gen, dtype=torch.float64) - 0.5
        hi = lo + 0.5 + torch.rand(n, generator=gen, dtype=torch.float64)
        return _uniform_grid(lo, hi, 4, k).to(dtype)
    steps = 0.05 + torch.rand(n, 4 + 2 * k + 1, generator=gen, dtype=torch.float64)  # uneven, increasing
    return (torch.cumsum(steps, dim=1) - 1.0).to(dtype)


def _points(grid: torch.Tensor, b: int = 400, seed: int = 1) -> torch.Tensor:
    """Inside and outside the knots, every knot exactly, and non-finite values."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = grid[:, 0], grid[:, -1]
    span = hi - lo
    x = lo + (torch.rand(b, grid.shape[0], generator=gen, dtype=torch.float64) * 1.4 - 0.2).to(grid.dtype) * span
    return torch.cat([x, grid.T, torch.stack([lo - 5.0, hi + 3.0]),
                      torch.full((1, grid.shape[0]), float("nan"), dtype=grid.dtype),
                      torch.full((1, grid.shape[0]), float("inf"), dtype=grid.dtype),
                      torch.full((1, grid.shape[0]), -float("inf"), dtype=grid.dtype)]).to(grid.dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("uniform", [True, False])
def test_dense_basis_equals_the_full_recursion(dtype, k, uniform):
    grid = _grids(5, k, dtype, uniform)
    x = _points(grid)
    new, ref = bspline_basis(x, grid, k), cox_de_boor(x, grid, k)
    assert new.shape == ref.shape == (x.shape[0], 5, grid.shape[1] - k - 1)
    assert new.dtype == dtype
    assert torch.equal(torch.isnan(new), torch.isnan(ref))  # NaN exactly where the recursion has it
    torch.testing.assert_close(new.nan_to_num(0.0), ref.nan_to_num(0.0), rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("k", [1, 3])
def test_local_values_are_the_non_zero_part_of_the_basis(k):
    grid = _grids(3, k, torch.float64, uniform=False)
    x = _points(grid)[:-3]  # finite points
    first, values = bspline_local(x, grid, k)
    ref = cox_de_boor(x, grid, k)
    n_basis = ref.shape[-1]
    for r in range(k + 1):
        q = first + r
        exists = (q >= 0) & (q < n_basis)
        picked = ref.gather(-1, q.clamp(0, n_basis - 1).unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(torch.where(exists, values[..., r], 0.0), torch.where(exists, picked, 0.0),
                                   rtol=0, atol=1e-12)
        assert torch.all(values[..., r][~exists] == 0)
    # nothing outside the k + 1 values: they carry the whole basis
    torch.testing.assert_close(values.sum(-1), ref.sum(-1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_partition_of_unity_inside_and_zero_outside(dtype):
    k = 3
    grid = _grids(4, k, dtype, uniform=True)
    lo, hi = grid[:, k], grid[:, -1 - k]  # where all G + k functions overlap fully
    x = lo + torch.rand(300, 4, dtype=dtype) * (hi - lo)
    b = bspline_basis(x, grid, k)
    assert b.min() >= -TOL[dtype]  # a polynomial near its root: rounding, not a negative B-spline
    torch.testing.assert_close(b.sum(-1), torch.ones_like(x), rtol=0, atol=TOL[dtype])
    far = torch.stack([grid[:, 0] - 1e-3, grid[:, -1], grid[:, -1] + 7.0])
    assert torch.equal(bspline_basis(far, grid, k), torch.zeros(3, 4, grid.shape[1] - k - 1, dtype=dtype))


def test_cubic_known_answers_on_a_uniform_grid():
    # uniform cubic B-splines: at a knot 1/6, 2/3, 1/6; at an interval's midpoint 1/48, 23/48, 23/48, 1/48
    grid = torch.arange(-3.0, 8.0, dtype=torch.float64)[None]  # t_m = m - 3, G = 4
    b = bspline_basis(torch.tensor([[1.0], [1.5]], dtype=torch.float64), grid, 3)[:, 0]
    torch.testing.assert_close(b[0], torch.tensor([0, 1 / 6, 2 / 3, 1 / 6, 0, 0, 0], dtype=torch.float64),
                               rtol=0, atol=1e-15)
    torch.testing.assert_close(b[1], torch.tensor([0, 1 / 48, 23 / 48, 23 / 48, 1 / 48, 0, 0], dtype=torch.float64),
                               rtol=0, atol=1e-15)
    origin, poly = interval_polynomials(grid, 3)
    assert origin.shape == (1, 12) and poly.shape == (1, 12, 4, 4)
    assert torch.all(poly[:, 0] == 0) and torch.all(poly[:, -1] == 0)  # below / above the knots
    # the last non-zero function on an interval starts there: u^3 / 6
    torch.testing.assert_close(poly[0, 5, 3], torch.tensor([0, 0, 0, 1 / 6], dtype=torch.float64), rtol=0, atol=1e-15)


def test_bspline_basis_gradient_in_x():
    grid = _grids(2, 3, torch.float64, uniform=False)
    x = (grid[:, 0] + torch.rand(6, 2, dtype=torch.float64) * (grid[:, -1] - grid[:, 0])).requires_grad_()
    assert torch.autograd.gradcheck(lambda z: bspline_basis(z, grid, 3), (x,))
    # and the same derivative as the recursion
    ref = torch.autograd.grad(cox_de_boor(x, grid, 3).pow(2).sum(), x)[0]
    new = torch.autograd.grad(bspline_basis(x, grid, 3).pow(2).sum(), x)[0]
    torch.testing.assert_close(new, ref, rtol=0, atol=1e-10)


def _layer(dtype=torch.float64, clamp=False, seed=0) -> KANLayer:
    torch.manual_seed(seed)
    layer = KANLayer(3, 2, grid_size=4, clamp=clamp).to(dtype)
    layer.update_grid(torch.rand(64, 3, dtype=dtype) * 2.0 - 0.5)  # a non-trivial grid per input
    with torch.no_grad():
        layer.coef.normal_()
        layer.mask[1, 2] = 0.0
    return layer


def _reference_forward(layer: KANLayer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``u`` and ``phi`` from the full recursion (the formulas of the module docstring)."""
    x = layer._clamped(x)
    basis = cox_de_boor(x, layer.grid.to(x.dtype), layer.spline_order)
    spline = torch.einsum("biq,oiq->boi", basis, layer.coef.to(x.dtype))
    phi = layer.mask * (layer.scale_base * x[:, None, :] + layer.scale_sp * spline)
    return phi.sum(-1) + layer.bias, phi


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("clamp", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_layer_forward_and_edges_equal_the_full_recursion(dtype, clamp, grad):
    layer = _layer(dtype, clamp)
    lo, hi = layer.grid[:, 0], layer.grid[:, -1]
    x = lo + (torch.rand(200, 3, dtype=dtype) * 1.6 - 0.3) * (hi - lo)  # inside, beyond the span, beyond the knots
    x = torch.cat([x, layer.grid.T.to(dtype)])
    u_ref, phi_ref = _reference_forward(layer, x)
    with torch.set_grad_enabled(grad):
        u, phi = layer(x), layer.edge_values(x)
    assert u.requires_grad == grad
    tol = 10 * TOL[dtype]
    torch.testing.assert_close(u, u_ref, rtol=0, atol=tol)
    torch.testing.assert_close(phi, phi_ref, rtol=0, atol=tol)


def test_layer_gradients_pass_gradcheck_and_match_the_recursion():
    layer = _layer(torch.float64, clamp=False)
    lo, hi = layer.grid[:, 0], layer.grid[:, -1]
    x = (lo + torch.rand(8, 3, dtype=torch.float64) * (hi - lo)).requires_grad_()
    params = (layer.coef, layer.scale_sp, layer.scale_base)

    def f(z, coef, s_sp, s_b):  # the forward and the edges as functions of x and the parameters
        u = functional_call(layer, {"coef": coef, "scale_sp": s_sp, "scale_base": s_b}, (z,))
        return u, layer._spline_sum(z, coef, per_input=True)

    inputs = (x, *(p.detach().clone().requires_grad_() for p in params))
    assert torch.autograd.gradcheck(f, inputs)
    # the layer's own gradients equal those of the recursion
    u, phi = layer(x), layer.edge_values(x)
    u_ref, phi_ref = _reference_forward(layer, x)
    w = torch.randn_like(u)
    v = torch.randn_like(phi)
    wanted = [x, *params]
    new = torch.autograd.grad((u * w).sum() + (phi * v).sum(), wanted)
    ref = torch.autograd.grad((u_ref * w).sum() + (phi_ref * v).sum(), wanted)
    for a, b in zip(new, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_outside_the_knots_only_the_base_term_remains_and_nan_propagates():
    layer = _layer(torch.float64, clamp=False)
    far = torch.stack([layer.grid[:, 0] - 2.0, layer.grid[:, -1] + 2.0])
    with torch.no_grad():
        u = layer(far)
    torch.testing.assert_close(u, far @ (layer.mask * layer.scale_base).T + layer.bias, rtol=0, atol=1e-14)
    x = torch.rand(3, 3, dtype=torch.float64)
    x[1, 0] = float("nan")
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            out = layer(x)
        assert torch.isnan(out[1]).all() and torch.isfinite(out[[0, 2]]).all()


def test_empty_batch():
    layer = _layer()
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            assert layer(torch.zeros(0, 3, dtype=torch.float64)).shape == (0, 2)
            assert layer.edge_values(torch.zeros(0, 3, dtype=torch.float64)).shape == (0, 2, 3)


def test_polynomials_follow_the_grid():
    layer = _layer(torch.float64)
    x = torch.rand(50, 3, dtype=torch.float64)
    with torch.no_grad():
        layer(x)  # caches the polynomials of the current grid
        layer.update_grid(torch.rand(80, 3, dtype=torch.float64) * 3.0 - 1.0)
        torch.testing.assert_close(layer(x), _reference_forward(layer, x)[0], rtol=0, atol=1e-12)
        other = _layer(torch.float64, seed=5)
        layer.load_state_dict(other.state_dict())
        torch.testing.assert_close(layer(x), _reference_forward(other, x)[0], rtol=0, atol=1e-12)


def _step(model: KAN, x: torch.Tensor, shared: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    if shared:
        with model.shared_basis():
            loss = model(x).pow(2).mean() + model.regularization(x, l1=1e-2, entropy=1e-2, curvature=1e-3)
    else:
        loss = model(x).pow(2).mean() + model.regularization(x, l1=1e-2, entropy=1e-2, curvature=1e-3)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("widths", [[4, 3], [4, 3, 2]])
def test_shared_basis_is_evaluated_once_and_changes_nothing(widths, monkeypatch):
    torch.manual_seed(3)
    model = KAN(widths, grid_size=4).double()
    x = torch.rand(64, 4, dtype=torch.float64)
    model.update_grid(x)
    calls = []
    rows = kan._rows
    monkeypatch.setattr(kan, "_rows", lambda *a: calls.append(1) or rows(*a))
    loss, grads = _step(model, x, shared=False)
    alone = len(calls)
    calls.clear()
    loss_s, grads_s = _step(model, x, shared=True)
    assert len(calls) == len(widths) - 1 < alone  # one knot search per layer
    assert torch.equal(loss_s, loss)
    for a, b in zip(grads_s, grads):
        if len(widths) == 2:  # the first layer's basis has no graph: the same numbers
            assert torch.equal(a, b)
        else:  # the hidden layer's gradient reaches the first layer by one path instead of two
            torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    assert all(layer._basis_memo is None for layer in model.layers)  # forgotten after the block


def test_shared_basis_recomputes_for_new_inputs_grids_and_gradients(monkeypatch):
    torch.manual_seed(4)
    model = KAN([3, 2, 2], grid_size=4)
    calls = []
    rows = kan._rows
    monkeypatch.setattr(kan, "_rows", lambda *a: calls.append(1) or rows(*a))
    x, y = torch.rand(16, 3), torch.rand(16, 3)
    with model.shared_basis():
        with model.shared_basis():  # nested: the outer block keeps its store
            model(x)
        n = len(calls)
        assert n == 2
        model(x)
        assert len(calls) == n  # both layers reuse their basis
        model(y)
        assert len(calls) == n + 2  # a new input is evaluated
        n = len(calls)
        with torch.no_grad():
            model(y)
        assert len(calls) == n + 1  # the hidden layer's input had a graph before, not now
        model.layers[0].update_grid(torch.rand(16, 3))
        n = len(calls)
        out = model.layers[0](y)
        assert len(calls) == n + 1  # the grid moved
    torch.testing.assert_close(out, model.layers[0](y), rtol=0, atol=0)
    out.sum().backward()
    assert model.layers[0].coef.grad is not None and model.layers[0].coef.grad.abs().sum() > 0


def test_a_training_batch_evaluates_the_basis_once(tmp_path, monkeypatch):
    from socmap.data.synthetic import SynthConfig, write_synthetic
    from socmap.splits import make_folds
    from socmap.train import load_sites
    from socmap.train_config import load_config
    from socmap.trainer import HybridTrainer

    write_synthetic(tmp_path / "data", SynthConfig(resolution_deg=1.0, n_sites=60, seed=3, noise=0.05))
    cfg = load_config(data_dir=str(tmp_path / "data"), folds=3)
    assert cfg.kan_l1 and cfg.kan_entropy  # the score regularisers run (they evaluate the layers again)
    data = load_sites(cfg)
    fold = make_folds(data.lon, data.lat, cfg.folds, cfg.split, cfg.seed)[0]
    trainer = HybridTrainer(cfg, data, fold, tmp_path / "fold", torch.device("cpu"))
    calls = []
    rows = kan._rows
    monkeypatch.setattr(kan, "_rows", lambda *a: calls.append(1) or rows(*a))
    idx = fold.train[:16]
    shared = trainer.batch_loss(idx)
    assert len(calls) == len(trainer.model.encoder.layers)
    calls.clear()
    alone = trainer._batch_loss(idx)  # the same loss without the shared block
    assert len(calls) > len(trainer.model.encoder.layers)
    assert torch.equal(shared, alone)
