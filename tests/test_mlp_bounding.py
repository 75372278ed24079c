"""Tests for socmap.nets.mlp, socmap.nets.bounding and the factories."""

from __future__ import annotations

import math

import pytest
import torch

from socmap.nets import (
    KAN,
    HardSigmoidBound,
    LonLatEncoding,
    MLPEncoder,
    PureNN,
    ScaledSigmoidBound,
    expand_parameters,
    make_bound,
    make_encoder,
    param_reg,
)


def test_mlp_shapes_and_init():
    torch.manual_seed(0)
    enc = MLPEncoder(10, 21, hidden=[32, 16])
    z = enc(torch.rand(8, 10))
    assert z.shape == (8, 21)
    linears = [m for m in enc.modules() if isinstance(m, torch.nn.Linear)]
    assert [lin.out_features for lin in linears] == [32, 16, 21]
    assert all(torch.all(lin.bias == 0) for lin in linears)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in enc.modules()) == 2
    # Xavier-uniform bound with the leaky-ReLU(0.3) gain
    gain = math.sqrt(2.0 / (1 + 0.3**2))
    bound = gain * math.sqrt(6.0 / (10 + 32))
    assert linears[0].weight.abs().max() <= bound + 1e-6
    assert linears[0].weight.abs().max() > 0.8 * bound


def test_mlp_float64_and_lonlat():
    torch.manual_seed(0)
    enc = MLPEncoder(5, 4, hidden=[16], lonlat=True, lonlat_kwargs={"out_features": 8}).double()
    x = torch.rand(6, 5, dtype=torch.float64)
    ll = torch.stack([torch.rand(6) * 60 - 125, torch.rand(6) * 25 + 25], dim=1).double()
    z = enc(x, ll)
    assert z.shape == (6, 4) and z.dtype == torch.float64
    with pytest.raises(ValueError, match="lonlat"):
        enc(x)
    z.sum().backward()
    assert enc.lonlat_encoding.linear.weight.grad.abs().sum() > 0


def test_lonlat_encoding_wavelengths():
    enc = LonLatEncoding(n_freq=4, lambda_min=1.0, lambda_max=360.0, out_features=3)
    periods = 2 * math.pi / enc.omega
    assert torch.allclose(periods, torch.tensor([1.0, 360 ** (1 / 3), 360 ** (2 / 3), 360.0]), rtol=1e-5)
    f = enc.features(torch.tensor([[0.0, 0.0], [360.0, 1.0]]))
    assert f.shape == (2, 16)
    # a 360 degree shift in longitude is invisible to the channels whose period divides 360
    lon_sin = f[:, :4]
    assert torch.allclose(lon_sin[0, [0, 3]], lon_sin[1, [0, 3]], atol=1e-4)
    assert enc(torch.zeros(3, 2)).shape == (3, 3)


def test_mc_dropout_sampling():
    torch.manual_seed(0)
    x = torch.rand(16, 6)
    enc = MLPEncoder(6, 3, hidden=[32, 32], dropout=0.3, mc_dropout=True)
    enc.train()
    enc(x)  # populate BatchNorm running stats
    enc.eval()
    s = enc.sample(x, 5)
    assert s.shape == (5, 16, 3)
    assert (s.std(dim=0) > 0).any()
    assert not torch.allclose(s[0], s[1])

    det = MLPEncoder(6, 3, hidden=[32, 32], dropout=0.3, mc_dropout=False)
    det.train()
    det(x)
    det.eval()
    s2 = det.sample(x, 3)
    assert torch.equal(s2[0], s2[1]) and torch.equal(s2[1], s2[2])


def test_pure_nn_shapes_nan_depths_and_decode():
    torch.manual_seed(0)
    net = PureNN(4, hidden=[16, 16], target="log")
    x = torch.rand(5, 4)
    y1 = net(x, torch.rand(5))
    assert y1.shape == (5,)
    depth = torch.tensor([[0.1, 0.3, float("nan")]] * 5)
    y = net(x, depth)
    assert y.shape == (5, 3)
    assert torch.isnan(y[:, 2]).all() and torch.isfinite(y[:, :2]).all()
    loss = y[torch.isfinite(y)].pow(2).sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    net.set_target_stats(mean=2.0, std=0.5)
    assert torch.allclose(net.decode(torch.tensor([0.0, 2.0])), torch.exp(torch.tensor([2.0, 3.0])))
    std_net = PureNN(4, target="standard")
    std_net.set_target_stats(10.0, 2.0)
    assert torch.allclose(std_net.decode(torch.tensor([1.0])), torch.tensor([12.0]))
    with pytest.raises(ValueError):
        PureNN(4, target="raw")


def test_hardsigmoid_values_and_violation():
    bound = HardSigmoidBound()
    z = torch.tensor([[-6.0, -3.0, 0.0], [1.5, 3.0, 4.5]], requires_grad=True)
    p, u = bound(z)
    assert torch.allclose(p, torch.tensor([[0.0, 0.0, 0.5], [0.75, 1.0, 1.0]]))
    assert torch.equal(u, z)
    # sum over batch and params: |-6| - 3 = 3, 4.5 - 3 = 1.5
    assert float(bound.violation(u).detach()) == pytest.approx(4.5)
    p.sum().backward()
    assert torch.allclose(z.grad, torch.tensor([[0.0, 1 / 6, 1 / 6], [1 / 6, 1 / 6, 0.0]]))
    # temperature and a learnable bias
    b2 = HardSigmoidBound(n_params=3, temperature=2.0, final_bias="learnable")
    with torch.no_grad():
        b2.bias.fill_(1.0)
    _, u2 = b2(torch.tensor([[2.0, 4.0, -2.0]]))
    assert torch.allclose(u2, torch.tensor([[2.0, 3.0, 0.0]]))


def test_scaled_sigmoid_starts_near_half():
    bound = ScaledSigmoidBound()
    assert float(bound.temperature.detach()) == pytest.approx(59.5)
    z = torch.randn(32, 21) * 3
    p, u = bound(z)
    assert torch.all((p - 0.5).abs() < 0.05)
    assert torch.allclose(u, z / 59.5)
    assert float(bound.violation(u).detach()) == 0.0
    p.sum().backward()
    assert bound.t.grad is not None
    plain = ScaledSigmoidBound(1.0, 1.0)
    assert torch.allclose(plain(z)[0], torch.sigmoid(z))


def test_param_reg():
    assert float(param_reg(torch.full((4, 3), 0.5))) == 0.0
    assert float(param_reg(torch.tensor([0.0, 1.0]))) == pytest.approx(math.cosh(5.0) - 1.0)


def test_expand_parameters_columns_and_gradients():
    fixed = torch.linspace(0.0, 1.0, 21).requires_grad_(True)
    p_sub = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]], requires_grad=True)
    idx = [3, 9, 14, 19]
    full = expand_parameters(p_sub, idx, fixed)
    assert full.shape == (2, 21)
    assert torch.equal(full[:, idx], p_sub.detach())
    others = [i for i in range(21) if i not in idx]
    assert torch.equal(full[:, others], fixed.detach()[others].expand(2, -1))
    w = torch.arange(42, dtype=torch.float32).reshape(2, 21)
    (full * w).sum().backward()
    assert torch.equal(p_sub.grad, w[:, idx])
    assert torch.all(fixed.grad[idx] == 0) and torch.all(fixed.grad[others] == w[:, others].sum(0))
    # per-site fixed values
    per_site = torch.rand(2, 21)
    full2 = expand_parameters(p_sub.detach(), idx, per_site)
    assert torch.equal(full2[:, others], per_site[:, others])
    with pytest.raises(ValueError):
        expand_parameters(p_sub, [3, 3, 14, 19], fixed)
    with pytest.raises(ValueError):
        expand_parameters(p_sub, [3, 9, 14], fixed)


def test_factories():
    kan = make_encoder("kan", 10, 4, grid_size=3)
    assert isinstance(kan, KAN) and kan.widths == [10, 4]
    kan2 = make_encoder("kan", 10, 4, hidden=[16])
    assert kan2.widths == [10, 16, 4]
    mlp = make_encoder("mlp", 10, 4, hidden=[8])
    assert isinstance(mlp, MLPEncoder) and mlp(torch.rand(3, 10)).shape == (3, 4)
    with pytest.raises(ValueError, match="kan"):
        make_encoder("transformer", 10, 4)
    assert isinstance(make_bound("hardsigmoid"), HardSigmoidBound)
    assert isinstance(make_bound("sigmoid", t_min=1.0, t_max=1.0), ScaledSigmoidBound)
    with pytest.raises(ValueError, match="hardsigmoid"):
        make_bound("tanh")


def test_encoder_plus_bound_end_to_end():
    torch.manual_seed(0)
    enc = make_encoder("kan", 10, 4, grid_size=3)
    bound = make_bound("hardsigmoid")
    p, u = bound(enc(torch.rand(8, 10)))
    full = expand_parameters(p, [3, 9, 14, 19], torch.full((21,), 0.5))
    assert full.shape == (8, 21) and ((full >= 0) & (full <= 1)).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_encoders_and_bounds():
    enc = MLPEncoder(5, 4, hidden=[8], lonlat=True).cuda()
    x = torch.rand(6, 5, device="cuda")
    ll = torch.rand(6, 2, device="cuda") * 50
    p, u = make_bound("sigmoid").cuda()(enc(x, ll))
    full = expand_parameters(p, [0, 1, 2, 3], torch.full((21,), 0.5))
    assert full.device.type == "cuda" and full.shape == (6, 21)
    net = PureNN(5, hidden=[8]).cuda()
    assert net(x, torch.rand(6, 3, device="cuda")).shape == (6, 3)
