"""Tests for socmap.nets.kan (KAN layers and networks)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from socmap.nets import KAN, KANLayer, bspline_basis


def _r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(1.0 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def _fit(model, x, y, steps=500, lr=2e-2, reg=None):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        if reg is not None:
            loss = loss + reg(model, x)
        loss.backward()
        opt.step()
    return model


def test_basis_partition_of_unity_and_support():
    layer = KANLayer(2, 1, grid_size=5)
    x = torch.rand(200, 2, dtype=torch.float64)
    b = bspline_basis(x, layer.grid.double(), 3)
    assert b.shape == (200, 2, 8)
    assert torch.allclose(b.sum(-1), torch.ones(200, 2, dtype=torch.float64), atol=1e-12)
    assert (b >= 0).all()
    # far outside the extended grid every basis function vanishes
    far = torch.tensor([[-5.0, 7.0]], dtype=torch.float64)
    assert bspline_basis(far, layer.grid.double(), 3).abs().max() == 0


@pytest.mark.parametrize("name", ["sin", "square"])
def test_kan_fits_1d_functions(name):
    torch.manual_seed(0)
    x = torch.linspace(0, 1, 200)[:, None]
    y = torch.sin(2 * math.pi * x) if name == "sin" else x**2
    model = _fit(KAN([1, 1], grid_size=10), x, y, steps=500)
    with torch.no_grad():
        assert _r2(model(x), y) > 0.99


def test_forward_equals_sum_of_edges_and_extrapolation():
    torch.manual_seed(1)
    layer = KANLayer(3, 4, grid_size=5, base="identity")
    x = torch.rand(16, 3)
    phi = layer.edge_values(x)
    assert phi.shape == (16, 4, 3)
    assert torch.allclose(layer(x), phi.sum(-1) + layer.bias, atol=1e-6)
    # outside the extended grid only the linear base term remains
    x_far = torch.full((2, 3), 10.0)
    expected = (layer.scale_base * 10.0).sum(-1) + layer.bias
    assert torch.allclose(layer(x_far), expected.expand(2, 4), atol=1e-5)
    # zero base: the function vanishes far away
    zl = KANLayer(3, 4, base="zero")
    assert torch.allclose(zl(x_far), zl.bias.expand(2, 4))


def test_float64_follows_input_dtype():
    layer = KANLayer(2, 3)
    out = layer(torch.rand(5, 2, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_update_grid_preserves_function_on_narrower_range():
    torch.manual_seed(0)
    x = torch.linspace(0, 1, 200)[:, None]
    model = _fit(KAN([1, 1], grid_size=10), x, torch.sin(2 * math.pi * x), steps=300)
    xs = 0.3 + 0.4 * torch.rand(300, 1)  # data now only in [0.3, 0.7]
    with torch.no_grad():
        before = model(xs)
        model.update_grid(xs, margin=0.05)
        after = model(xs)
    grid = model.layers[0].grid[0]
    lo, hi = float(xs.min()), float(xs.max())
    r = hi - lo
    # interior grid (knots k..k+G) spans [min - 0.05 R, max + 0.05 R]
    assert abs(float(grid[3]) - (lo - 0.05 * r)) < 1e-5
    assert abs(float(grid[13]) - (hi + 0.05 * r)) < 1e-5
    assert float((after - before).abs().max()) < 1e-3


def test_update_grid_2layer_propagates():
    torch.manual_seed(0)
    model = KAN([2, 3, 1], grid_size=5)
    x = torch.rand(64, 2)
    with torch.no_grad():
        before = model(x)
        model.update_grid(x)
        after = model(x)
        h = model.layers[0](x)
    g1 = model.layers[1].grid
    # the hidden layer's grid now brackets its inputs
    assert (g1[:, 3] <= h.min(0).values).all() and (g1[:, -4] >= h.max(0).values).all()
    assert float((after - before).abs().max()) < 1e-3


@pytest.fixture(scope="module")
def trained_gam():
    torch.manual_seed(0)
    x = torch.rand(256, 3)
    y = (torch.sin(2 * math.pi * x[:, 0]) + 2.0 * x[:, 1] ** 2)[:, None]
    model = KAN([3, 1], grid_size=5)
    reg = lambda m, xx: m.regularization(xx, l1=1e-3)  # noqa: E731
    _fit(model, x, y, steps=400, lr=2e-2, reg=reg)
    return model, x, y


def _gam(trained):
    model, x, y = trained
    return copy.deepcopy(model), x, y


def test_edge_scores_rank_active_inputs_and_pruning_removes_dead_edge(trained_gam):
    model, x, y = _gam(trained_gam)
    with torch.no_grad():
        assert _r2(model(x), y) > 0.98
    s = model.edge_scores(x)[0].detach()
    assert s.shape == (1, 3)
    assert s[0, 2] < 0.1 * min(s[0, 0], s[0, 1])
    imp = model.edge_importance(x)[0]
    assert torch.allclose(imp.sum(1), torch.ones(1))
    assert set(torch.argsort(imp[0], descending=True)[:2].tolist()) == {0, 1}

    remaining = model.prune(x, edge_quantile=None, threshold=0.05)
    mask = model.layers[0].mask
    assert remaining == [2]
    assert mask[0, 2] == 0 and mask[0, 0] == 1 and mask[0, 1] == 1
    # the masked edge no longer contributes
    assert torch.all(model.layers[0].edge_values(x)[:, 0, 2] == 0)


def test_prune_top_k_and_quantile(trained_gam):
    model, x, _ = _gam(trained_gam)
    layer = model.layers[0]
    assert layer.prune(x, keep_top_k=2, threshold=0.0) == 2
    assert layer.mask[0, 2] == 0
    layer.mask.fill_(1.0)
    # top 20 % of 3 inputs -> the single strongest edge survives
    assert layer.prune(x, edge_quantile=0.2, threshold=0.0) == 1


def test_entropy_and_l1_regularisers():
    layer = KANLayer(4, 2)
    x = torch.rand(32, 4)
    s = layer.edge_scores(x)
    assert torch.isclose(layer.reg_l1(x), s.sum())
    pi = s / s.sum()
    assert torch.isclose(layer.reg_entropy(x), -(pi * torch.log2(pi + 1e-4)).sum())
    # normalisation: mean over outputs of MAD(u) is the unit
    u = layer(x).detach()
    n = (u - u.mean(0)).abs().mean(0).mean()
    phi = layer.edge_values(x).detach()
    e = (phi - phi.mean(0)).abs().mean(0)
    assert torch.allclose(s.detach(), e / n, rtol=1e-5)
    # gradients flow through the score regulariser
    layer.reg_l1(x).backward()
    assert layer.scale_base.grad is not None and layer.scale_base.grad.abs().sum() > 0


def test_curvature_regulariser_zero_for_linear_coefficients():
    layer = KANLayer(2, 3, grid_size=5)
    with torch.no_grad():
        q = torch.arange(layer.n_basis, dtype=torch.float32)
        layer.coef.copy_((0.3 * q - 1.0).expand_as(layer.coef))
    assert float(layer.reg_coef_curvature().detach()) < 1e-8
    assert float(layer.reg_coef_smooth().detach()) > 0
    with torch.no_grad():
        layer.coef[0, 0, 2] += 1.0
    assert float(layer.reg_coef_curvature().detach()) > 0.5
    model = KAN([2, 3])
    assert float(model.regularization(torch.rand(4, 2), curvature=1.0).detach()) > 0


def test_edge_curve_matches_edge_values():
    torch.manual_seed(3)
    model = KAN([3, 2], grid_size=6)
    x = torch.rand(50, 3, dtype=torch.float64) * 1.4 - 0.2  # also outside the grid
    phi = model.layers[0].edge_values(x.float()).detach().double()
    for j in range(2):
        for i in range(3):
            curve = model.edge_curve(j, i, x[:, i].numpy())
            assert isinstance(curve, np.ndarray) and curve.shape == (50,)
            np.testing.assert_allclose(curve, phi[:, j, i].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="1-layer"):
        KAN([3, 4, 2]).edge_curve(0, 0, [0.5])


def test_two_layer_kan_shapes_and_training():
    torch.manual_seed(0)
    model = KAN([3, 5, 2], grid_size=5, base="silu")
    x = torch.rand(64, 3)
    y = torch.stack([x[:, 0] * x[:, 1], torch.sin(3 * x[:, 2])], dim=1)
    assert model(x).shape == (64, 2)
    scores = model.edge_scores(x)
    assert [tuple(s.shape) for s in scores] == [(5, 3), (2, 5)]
    model.update_grid(x)
    with torch.no_grad():
        loss0 = float(((model(x) - y) ** 2).mean())
    _fit(model, x, y, steps=150, lr=1e-2)
    with torch.no_grad():
        loss1 = float(((model(x) - y) ** 2).mean())
    assert loss1 < 0.3 * loss0
    reg = model.regularization(x, l1=1.0, entropy=1.0, curvature=1.0, smooth=1.0)
    assert reg.dim() == 0 and torch.isfinite(reg)
    assert len(model.prune(x, edge_quantile=0.5)) == 2


def test_gradcheck_float64():
    torch.manual_seed(0)
    layer = KANLayer(2, 2, grid_size=3).double()
    x = torch.rand(4, 2, dtype=torch.float64, requires_grad=True)
    names = ["coef", "scale_base", "scale_sp", "bias"]
    params = tuple(getattr(layer, n).detach().clone().requires_grad_(True) for n in names)

    def f(xx, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (xx,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError):
        KANLayer(2, 2, base="relu")
    with pytest.raises(ValueError):
        KAN([3])
    with pytest.raises(ValueError):
        KANLayer(2, 2)(torch.rand(4, 3))


def test_update_grid_degenerate_and_nan_columns():
    torch.manual_seed(0)
    layer = KANLayer(2, 2, grid_size=4)
    x = torch.rand(32, 2)
    x[:, 1] = 0.4  # constant column
    x[0, 0] = float("nan")
    layer.update_grid(x)
    g = layer.grid
    assert torch.isfinite(g).all() and torch.isfinite(layer.coef).all()
    assert float(g[1, 3]) == pytest.approx(-0.1) and float(g[1, -4]) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="finite"):
        layer.update_grid(torch.full((4, 2), float("nan")))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_update_and_curve():
    torch.manual_seed(0)
    model = KAN([3, 4, 2], grid_size=5).cuda()
    x = torch.rand(64, 3, device="cuda")
    before = model(x).detach()
    model.update_grid(x)
    assert (model(x).detach() - before).abs().max() < 1e-3
    model.regularization(x, l1=1.0, entropy=1.0, curvature=1.0).backward()
    gam = KAN([3, 2]).cuda()
    np.testing.assert_allclose(
        gam.edge_curve(1, 2, x[:, 2].cpu().numpy()),
        gam.layers[0].edge_values(x)[:, 1, 2].detach().cpu().numpy(),
        atol=1e-5,
    )


def test_reweighted_l1_moves_a_shared_signal_onto_the_true_edge():
    # y depends on x0 only; x1 is x0 plus a little noise (r = 0.98), x2 is independent
    torch.manual_seed(0)
    n = 400
    x0, x2 = torch.rand(n), torch.rand(n)
    x1 = 0.85 * x0 + 0.15 * torch.rand(n)
    x = torch.stack([x0, x1, x2], 1)
    y = (torch.exp(1.5 * x0) + 0.05 * torch.randn(n))[:, None]
    model = _fit(KAN([3, 1], grid_size=4), x, y, steps=400, reg=lambda m, xx: m.regularization(xx, l1=1e-4))
    imp = model.edge_importance(x)[0][0]
    assert imp[1] > 0.2  # plain L1 splits the signal between the correlated inputs
    for _ in range(2):
        w = model.adaptive_l1_weights(x)
        assert torch.allclose(w[0], 1.0 / (model.edge_importance(x)[0] + 0.02))
        _fit(model, x, y, steps=150, lr=1e-2, reg=lambda m, xx: 1e-2 * m.weighted_l1(xx, w))
    imp = model.edge_importance(x)[0][0]
    assert imp[0] > 0.99 and imp[1] < 0.01
    assert model.prune(x, edge_quantile=None, threshold=0.03) == [1]
    _fit(model, x, y, steps=300)
    xs = np.linspace(0.0, 1.0, 50)
    learned, truth = model.edge_curve(0, 0, xs), np.exp(1.5 * xs)
    r2 = 1.0 - np.sum((learned - learned.mean() - truth + truth.mean()) ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert r2 > 0.99


def test_clamped_layer_holds_edges_constant_beyond_the_grid():
    torch.manual_seed(2)
    free = KANLayer(2, 3, grid_size=4)
    held = copy.deepcopy(free)
    held.clamp = True
    x = torch.rand(64, 2)
    x[0] = torch.tensor([1.0, 1.0])  # the span's edge: both layers agree there
    assert torch.allclose(held(x), free(x), atol=1e-6)
    lo, hi = held.span()
    far = torch.tensor([[-3.0, 5.0], [9.0, -0.5]])
    edge = torch.stack([torch.stack([lo[0], hi[1]]), torch.stack([hi[0], lo[1]])])
    assert torch.allclose(held(far), free(edge), atol=1e-6)
    assert not torch.allclose(free(far), free(edge), atol=1e-3)  # the unclamped layer extrapolates
    xs = np.array([-3.0, 0.5, 9.0])
    np.testing.assert_allclose(held.edge_curve(1, 0, xs), free.edge_curve(1, 0, np.array([float(lo[0]), 0.5, float(hi[0])])), atol=1e-6)
    # a KAN clamps only its input layer (hidden layers would lose their gradients)
    assert [layer.clamp for layer in KAN([2, 3, 1]).layers] == [True, False]


def test_update_grid_on_a_clamped_layer_widens_the_span_like_a_free_one():
    torch.manual_seed(3)
    held = KANLayer(2, 2, grid_size=4, clamp=True)
    _fit(torch.nn.Sequential(held), torch.rand(128, 2), torch.rand(128, 2), steps=50)
    free = copy.deepcopy(held)
    free.clamp = False
    x = torch.rand(256, 2) * 1.6 - 0.3  # data beyond the old span [0, 1]
    held.update_grid(x)
    free.update_grid(x)
    lo, hi = held.span()
    assert float(lo.max()) < -0.3 and float(hi.min()) > 1.3
    # on the data (all inside the new span) the clamped layer is the free one
    torch.testing.assert_close(held(x), free(x))


def test_layer_inputs_are_each_layers_input_and_the_scores_their_edges():
    torch.manual_seed(0)
    model = KAN([3, 4, 2], grid_size=5)
    x = torch.rand(16, 3, dtype=torch.float64)
    ins = model.layer_inputs(x)
    assert len(ins) == 2 and ins[0] is x
    torch.testing.assert_close(ins[1], model.layers[0](x), rtol=0, atol=0)
    torch.testing.assert_close(model.layers[1](ins[1]), model(x), rtol=0, atol=0)
    scores = model.edge_scores(x)
    assert [tuple(s.shape) for s in scores] == [(4, 3), (2, 4)]
    torch.testing.assert_close(scores[1], model.layers[1].edge_scores(model.layers[0](x)), rtol=0, atol=0)
