import numpy as np
import pytest
import torch

from socmap.clm5 import grid
from socmap.clm5 import parameters as P


def test_grid_matches_spec_table():
    assert grid.DZ_M.shape == (20,)
    np.testing.assert_allclose(grid.INTERFACE_BOTTOM_M[[0, 4, 9, 19]], [0.02, 0.32, 1.52, 8.60], atol=1e-12)
    np.testing.assert_allclose(grid.NODE_M[[0, 4, 9, 19]], [0.01, 0.26, 1.36, 8.03], atol=1e-12)
    np.testing.assert_allclose(grid.DZ_NODE_M[[0, 1, 19, 20]], [0.01, 0.03, 1.09, 1.765], atol=1e-12)
    np.testing.assert_allclose(grid.INTERFACE_BOTTOM_M - grid.NODE_M, grid.DZ_M / 2, atol=1e-12)
    np.testing.assert_allclose(grid.NODE_ALL_M[21], 13.3277669529664, rtol=1e-12)


def test_layer_overlap_integrates_exactly():
    np.testing.assert_allclose(grid.layer_overlap_m(0.0, 0.3).sum(), 0.3)
    np.testing.assert_allclose(grid.layer_overlap_m(0.0, 1.0).sum(), 1.0)
    ov = grid.layer_overlap_m(0.0, 0.3)
    assert ov[3] == pytest.approx(0.08) and ov[4] == pytest.approx(0.10) and ov[5] == 0
    with pytest.raises(ValueError, match="depth interval"):
        grid.layer_overlap_m(0.5, 0.2)


def test_parameter_table_is_consistent():
    assert P.N_PARAMS == 21 and len(set(P.NAMES)) == 21
    assert np.all(P.LOWER < P.UPPER)
    assert P.parameter("w-scaling").name == "w_scaling"
    assert P.SUBSETS["four"] == ("efolding", "tau4s3", "fs1s3", "w_scaling")
    assert len(P.SUBSETS["fifteen"]) == 16  # the ScIReN list really has 16 entries
    # bounds keep the SOM respiration fractions positive (docs/model.md §2.4)
    assert P.UPPER[P.INDEX["fs1s2"]] + P.UPPER[P.INDEX["fs1s3"]] < 1
    assert P.UPPER[P.INDEX["fs2s1"]] + P.UPPER[P.INDEX["fs2s3"]] < 1
    # the CLM5 fs1s2 default follows the sand formula
    assert P.clm5_fs1s2(100.0) == pytest.approx(1 - 0.85 - 0.004)


def test_unit_physical_roundtrip_and_bounds_check():
    p = torch.rand(5, 21, dtype=torch.float64)
    theta = P.to_physical(p)
    torch.testing.assert_close(P.to_unit(theta), p)
    P.check_bounds(theta)
    theta[3, P.INDEX["tau4s3"]] = 1000.0
    with pytest.raises(ValueError, match=r"site 3: tau4s3=1000"):
        P.check_bounds(theta)


def test_subset_resolution_errors():
    assert P.resolve_subset("tau4s3, q10") == ("tau4s3", "q10")
    with pytest.raises(ValueError, match="unknown parameter 'tau9'"):
        P.resolve_subset("tau9")
    with pytest.raises(ValueError, match="twice"):
        P.resolve_subset(["q10", "q10"])
