"""Elasticities of the 0-100 cm stock (socmap.sensitivity) against finite differences."""

from __future__ import annotations

import numpy as np
import torch

from conftest import make_forcing, random_theta
from socmap.clm5 import prepare_forcing, soc_nodes, standard_stocks, steady_state
from socmap.clm5.parameters import INDEX, NAMES
from socmap.sensitivity import PROCESS_GROUPS, PROCESS_NAMES, dominant_process, elasticities, process_scores


def _stock(theta: torch.Tensor, prepared) -> np.ndarray:
    return standard_stocks(soc_nodes(steady_state(theta, prepared, check_bounds_=False)))["soc_stock_0_100cm"].numpy()


def test_elasticities_agree_with_finite_differences():
    f = make_forcing(6, seed=11, frozen_fraction=0.0)
    theta = random_theta(6, seed=12)
    prepared = prepare_forcing(f)
    e, stock = elasticities(theta, prepared)
    assert e.shape == (6, 21) and np.isfinite(e).all()
    assert np.allclose(stock, _stock(theta, prepared), rtol=1e-14)
    h = 1e-6
    for j, name in enumerate(NAMES):
        up, down = theta.clone(), theta.clone()
        up[:, j] *= 1 + h
        down[:, j] *= 1 - h
        fd = (np.log(_stock(up, prepared)) - np.log(_stock(down, prepared))) / (np.log1p(h) - np.log1p(-h))
        assert np.allclose(e[:, j], fd, rtol=1e-4, atol=1e-7), (name, e[:, j], fd)
    # turnover of the passive pool matters; a longer turnover time stores more carbon
    assert (e[:, INDEX["tau4s3"]] > 0).all()


def test_elasticities_nan_where_the_stock_is_not_positive():
    f = make_forcing(3, seed=13)
    f = f.replace(inputs_g_m2_yr=f.inputs_g_m2_yr * torch.tensor([[1.0], [0.0], [1.0]], dtype=torch.float64))
    e, stock = elasticities(random_theta(3, seed=14), prepare_forcing(f))
    assert np.isnan(e[1]).all() and np.isfinite(e[[0, 2]]).all() and stock[1] == 0


def test_dominant_process_groups():
    assert sorted(p for g in PROCESS_GROUPS.values() for p in g) == sorted(NAMES)
    e = np.zeros((3, 21))
    e[0, INDEX["q10"]] = -0.9
    e[0, INDEX["tau4s3"]] = 0.5
    e[1, INDEX["fs1s2"]] = 0.3
    e[1, INDEX["fs2s3"]] = -0.6  # the largest |e| of the CUE group (0.6) beats q10 (0.5)
    e[1, INDEX["q10"]] = 0.5
    e[2] = np.nan
    code = dominant_process(e)
    assert PROCESS_NAMES[int(code[0])] == "temperature response"
    assert PROCESS_NAMES[int(code[1])] == "carbon-use efficiency"
    assert np.isnan(code[2])
    assert np.isclose(process_scores(e[1])[PROCESS_NAMES.index("carbon-use efficiency")], 0.6)
