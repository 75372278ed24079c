import numpy as np
import pytest
import torch

from conftest import make_forcing, random_theta
from socmap.clm5 import bulk_diagnostics, interpolate_to_depths, prepare_forcing, soc_nodes, standard_stocks, steady_state
from socmap.clm5.grid import NODE_M
from socmap.clm5.parameters import INDEX, midrange_theta


def test_interpolation_known_answers():
    soc = torch.arange(20, dtype=torch.float64)[None].repeat(2, 1) * 10.0
    nan = float("nan")
    depth = torch.tensor([[0.0, NODE_M[3], (NODE_M[3] + NODE_M[4]) / 2, 9.0], [0.005, 8.03, nan, nan]], dtype=torch.float64)
    y = interpolate_to_depths(soc, depth)
    expected = torch.tensor([[0.0, 30.0, 35.0, 190.0], [0.0, 190.0, nan, nan]], dtype=torch.float64)
    torch.testing.assert_close(y, expected, equal_nan=True)


def test_interpolation_rejects_negative_depths():
    with pytest.raises(ValueError, match=r"profile\(s\) \[1\]"):
        interpolate_to_depths(torch.ones(2, 20), torch.tensor([[0.1], [-0.05]]))


def test_stocks_integrate_layers_exactly():
    soc = torch.full((3, 20), 20_000.0, dtype=torch.float64)  # 20 kg C m-3
    stocks = standard_stocks(soc)
    torch.testing.assert_close(stocks["soc_stock_0_30cm"], torch.full((3,), 6.0, dtype=torch.float64))
    torch.testing.assert_close(stocks["soc_stock_0_100cm"], torch.full((3,), 20.0, dtype=torch.float64))


def test_soc_is_sum_of_som_pools():
    x = torch.rand(4, 7, 20, dtype=torch.float64)
    torch.testing.assert_close(soc_nodes(x), x[:, 4] + x[:, 5] + x[:, 6])


def test_bulk_diagnostics_are_consistent():
    forcing, theta = make_forcing(32, 51), random_theta(32, 52)
    prepared = prepare_forcing(forcing)
    x = steady_state(theta, prepared)
    d = bulk_diagnostics(theta, prepared, x)
    dz = torch.as_tensor(np.diff(np.concatenate([[0.0], np.cumsum([0.02, 0.04, 0.06, 0.08, 0.12, 0.16, 0.20, 0.24, 0.28, 0.32, 0.36, 0.40, 0.44, 0.54, 0.64, 0.74, 0.84, 0.94, 1.04, 1.14])])))
    stock = (soc_nodes(x) * dz).sum(1)
    torch.testing.assert_close(d["residence_time"] * d["carbon_input"], stock)
    torch.testing.assert_close(d["carbon_input"], forcing.inputs_g_m2_yr.sum(1))
    assert bool(((d["cue"] > 0) & (d["cue"] < 1)).all())
    thawed = prepared.thawed  # frozen all year: all input in layer 0, allocation index 0
    assert bool(((d["input_allocation"][thawed] > 0) & (d["input_allocation"][thawed] < 1)).all())
    assert bool((d["input_allocation"][~thawed] == 0).all())
    assert bool((d["baseline_decomposition"] > 0).all() and (d["vertical_transport"] >= 0).all())
    # a deeper input profile (larger beta) gives a larger bulk allocation index
    deep = theta.clone()
    deep[:, INDEX["beta"]] = 0.99
    shallow = theta.clone()
    shallow[:, INDEX["beta"]] = 0.6
    d_deep = bulk_diagnostics(deep, prepared, steady_state(deep, prepared))
    d_shallow = bulk_diagnostics(shallow, prepared, steady_state(shallow, prepared))
    assert bool((d_deep["input_allocation"][thawed] > d_shallow["input_allocation"][thawed]).all())


def test_cue_equals_transfer_fraction_when_all_donors_share_it():
    forcing = make_forcing(8, 61)
    theta = midrange_theta(8)
    for name in ("fl1s1", "fl2s1", "fl3s2", "fs3s1"):
        theta[:, INDEX[name]] = 0.4
    for a, b in (("fs1s2", "fs1s3"), ("fs2s1", "fs2s3")):
        theta[:, INDEX[a]] = 0.35
        theta[:, INDEX[b]] = 0.05
    prepared = prepare_forcing(forcing)
    d = bulk_diagnostics(theta, prepared, steady_state(theta, prepared))
    torch.testing.assert_close(d["cue"], torch.full((8,), 0.4, dtype=torch.float64))
