"""The covariate table is the one source of covariate units: every producer and the catalog agree with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from socmap.data.catalog import QUANTITY_UNITS, Variable, load_catalog, quantity_of
from socmap.data.covariates import COVARIATES, covariate, long_name
from socmap.data.grid import grid_coords

ROOT = Path(__file__).resolve().parents[1]


def test_table_covers_the_twin_covariates_with_their_units():
    from socmap.data.synthetic import COVARIATES as TWIN

    missing = sorted(set(TWIN) - set(COVARIATES))
    assert not missing, f"twin covariates without a row in socmap/data/covariates.py: {missing}"
    for name, (units, long) in TWIN.items():
        assert COVARIATES[name].units == units, name
        assert COVARIATES[name].long_name == long, name


def test_table_covers_the_real_cube_covariates_with_their_units():
    from socmap.data.realcube import REAL_COVARIATES

    missing = sorted(set(REAL_COVARIATES) - set(COVARIATES))
    assert not missing, f"real-cube covariates without a row in socmap/data/covariates.py: {missing}"
    for name, (units, long) in REAL_COVARIATES.items():
        assert COVARIATES[name].units == units, name
        assert long.startswith(COVARIATES[name].long_name), name  # the real cube appends its source


def test_every_unit_is_a_unit_of_its_quantity_and_the_catalog_infers_it():
    for c in COVARIATES.values():
        assert c.quantity in QUANTITY_UNITS, c.name
        assert c.units in QUANTITY_UNITS[c.quantity], c.name
        assert quantity_of(c.name, Variable(units=c.units)) == c.quantity, c.name
        lo, hi = c.valid_range
        assert lo < hi, c.name


def test_shipped_catalog_declares_the_table_units():
    catalog = load_catalog(ROOT / "data_catalog.yaml")
    checked = 0
    for entry_name, entry in catalog.entries.items():
        for name, var in entry.variables.items():
            if name in COVARIATES:
                assert var.units == COVARIATES[name].units, f"{entry_name}.{name}"
                checked += 1
    assert checked >= 10


def test_twin_values_lie_in_the_valid_ranges():
    from socmap.data.synthetic import COVARIATES as TWIN, make_landscape

    y, x = grid_coords(2.0)
    lon, lat = np.meshgrid(x, y)
    land = make_landscape(lon.ravel(), lat.ravel(), seed=0)
    for name in TWIN:
        lo, hi = COVARIATES[name].valid_range
        values = land[name]
        assert np.isfinite(values).all() and values.min() >= lo and values.max() <= hi, name


def test_lookup_errors_name_the_known_covariates_and_long_names_carry_the_source():
    with pytest.raises(KeyError, match="unknown covariate 'mat_k'.*mat_c.*socmap/data/covariates.py"):
        covariate("mat_k")
    assert long_name("mat_c") == "mean annual air temperature"
    assert long_name("mat_c", "ERA5 2000-2025") == "mean annual air temperature (ERA5 2000-2025)"
