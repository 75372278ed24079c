"""The site's own land class as a one-hot encoder input (docs/model.md §5.11)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import make_forcing
from socmap.data.profiles import LAND_CLASS_OF, LAND_CLASSES, land_class
from socmap.data.sites import SiteData, land_class_inputs, with_land_class_input


def _sites(classes: list[str]) -> SiteData:
    n = len(classes)
    return SiteData(site_id=np.array([f"s{i}" for i in range(n)]), lon=np.zeros(n), lat=np.zeros(n),
                    covariates=np.arange(2 * n, dtype=np.float64).reshape(n, 2), covariate_names=["a", "b"],
                    covariate_units=["1", "1"], land_cover=np.zeros(n, dtype=np.int64), forcing=make_forcing(n),
                    depth_m=np.full((n, 1), 0.1), soc_g_m3=np.full((n, 1), 1e4), covariate_range={"a": (0.0, 9.0)},
                    land_class=np.array(classes, dtype=object))


def test_source_classes_group_into_the_documented_land_classes():
    got = land_class(pd.Series(["PFO", " E2EM", "evergreenForest", "pastureHay", "urban", None, "PEM"]))
    assert got.tolist() == ["woody_wetland", "tidal_wetland", "forest", "grass", "", "", "emergent_wetland"]
    assert set(LAND_CLASS_OF.values()) == set(LAND_CLASSES)  # every class is reachable, none undocumented


def test_land_class_input_is_one_hot_per_site():
    d = _sites(["forest", "", "tidal_wetland", "forest"])
    x = with_land_class_input(d)
    names = land_class_inputs()
    assert x.covariate_names == ["a", "b", *names] and all(x.covariate_range[n] == (0.0, 1.0) for n in names)
    onehot = x.covariates[:, 2:]
    np.testing.assert_array_equal(onehot.sum(1), [1, 0, 1, 1])  # unknown class: all zeros
    assert onehot[0, LAND_CLASSES.index("forest")] == 1 and onehot[2, LAND_CLASSES.index("tidal_wetland")] == 1
    np.testing.assert_array_equal(x.covariates[:, :2], d.covariates)
    assert with_land_class_input(x) is x  # applied once
    np.testing.assert_array_equal(x.subset(np.array([2])).land_class, ["tidal_wetland"])


def test_land_class_input_without_any_class_is_a_clear_error():
    with pytest.raises(ValueError, match="no site has a land class"):
        with_land_class_input(_sites(["", ""]))
    with pytest.raises(ValueError, match="land_class has shape"):
        SiteData(**{**_sites(["forest"]).__dict__, "land_class": np.array(["forest", "grass"], dtype=object)})


def test_runs_with_land_class_inputs_refuse_to_map_with_a_clear_message():
    from socmap.cells import cube_inputs

    assert cube_inputs(["a", "wetland"]) == ["a"]
    with pytest.raises(ValueError, match="land_class_input"):
        cube_inputs(["a", *land_class_inputs()])
