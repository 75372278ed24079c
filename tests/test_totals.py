"""CONUS totals (socmap.totals): spherical cell areas, Pg C sums, fold spread, land-cover means."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from socmap.totals import AUTHALIC_EARTH_RADIUS_M, cell_area_m2, conus_totals, totals_lines


def _store(res: float, lon0: float, lon1: float, lat0: float, lat1: float, stock: float = 1.0,
           land_cover: int = 10, std: float | None = None) -> xr.Dataset:
    """A store-like dataset covering [lon0, lon1] × [lat0, lat1] with a uniform stock."""
    x = np.arange(lon0 + res / 2, lon1, res)
    y = np.arange(lat1 - res / 2, lat0, -res)
    shape = (y.size, x.size)
    ds = xr.Dataset(
        {"soc_stock_0_30cm": (("y", "x"), np.full(shape, stock, np.float32)),
         "soc_stock_0_100cm": (("y", "x"), np.full(shape, 2 * stock, np.float32)),
         "land_mask": (("y", "x"), np.ones(shape, np.uint8)),
         "land_cover": (("y", "x"), np.full(shape, land_cover, np.int16))},
        coords={"y": y, "x": x}, attrs={"resolution_deg": res})
    if std is not None:
        ds["soc_stock_0_30cm_std"] = (("y", "x"), np.full(shape, std, np.float32))
    return ds


def _box_area_m2(lon0, lon1, lat0, lat1) -> float:
    r = AUTHALIC_EARTH_RADIUS_M
    return r**2 * np.deg2rad(lon1 - lon0) * (np.sin(np.deg2rad(lat1)) - np.sin(np.deg2rad(lat0)))


@pytest.mark.parametrize("res", [0.25, 1.0])
def test_uniform_stock_over_a_box_is_its_spherical_area(res):
    ds = _store(res, -100.0, -90.0, 30.0, 40.0)
    t = conus_totals(ds)
    area = _box_area_m2(-100.0, -90.0, 30.0, 40.0)
    assert t["stocks"]["soc_stock_0_30cm"]["total_pg_c"] == pytest.approx(area * 1e-12, rel=1e-4)
    assert t["stocks"]["soc_stock_0_100cm"]["total_pg_c"] == pytest.approx(2 * area * 1e-12, rel=1e-4)
    assert t["land_area_km2"] == pytest.approx(area / 1e6, rel=1e-6)
    # no _std layers: no spread, and the record says why
    assert t["stocks"]["soc_stock_0_30cm"]["spread_pg_c"] is None
    assert "--ensemble" in t["notes"]["spread_pg_c"]


def test_cell_areas_add_up_to_the_sphere():
    lat = np.arange(-89.5, 90.0, 1.0)
    total = cell_area_m2(lat, 1.0, 1.0).sum() * 360
    assert total == pytest.approx(4 * np.pi * AUTHALIC_EARTH_RADIUS_M**2, rel=1e-12)
    # a cell shrinks with the cosine of its latitude
    a = cell_area_m2(np.array([0.0, 60.0]), 0.01, 0.01)
    assert a[1] / a[0] == pytest.approx(0.5, rel=1e-4)
    with pytest.raises(ValueError, match="positive"):
        cell_area_m2(lat, 0.0, 1.0)


def test_water_and_missing_cells_are_left_out_and_counted():
    ds = _store(1.0, -100.0, -90.0, 30.0, 40.0)
    land = ds["land_mask"].values.copy()
    land[0, :] = 0                      # the northern row is water
    ds["land_mask"][:] = land
    stock = ds["soc_stock_0_30cm"].values.copy()
    stock[0, :] = 1e6                   # water values must not count
    stock[5, 3] = np.nan                # one land cell without a value
    ds["soc_stock_0_30cm"][:] = stock
    t = conus_totals(ds)
    e = t["stocks"]["soc_stock_0_30cm"]
    y = ds["y"].values
    expected = (cell_area_m2(y[1:], 1.0, 1.0).sum() * 10 - cell_area_m2(y[5], 1.0, 1.0)) * 1e-12
    assert e["total_pg_c"] == pytest.approx(expected, rel=1e-4)
    assert e["cells_missing"] == 1
    assert t["land_cells"] == 90


def test_fold_spread_bounds_and_land_cover_means():
    ds = _store(1.0, -100.0, -90.0, 30.0, 40.0, stock=3.0, std=0.5)
    lc = ds["land_cover"].values.copy()
    lc[:, :5] = 4                       # west half deciduous broadleaf forest (group forest)
    ds["land_cover"][:] = lc
    stock = ds["soc_stock_0_30cm"].values.copy()
    stock[:, :5] = 6.0
    ds["soc_stock_0_30cm"][:] = stock
    t = conus_totals(ds)
    area = _box_area_m2(-100.0, -90.0, 30.0, 40.0)
    e = t["stocks"]["soc_stock_0_30cm"]
    assert e["spread_pg_c"] == pytest.approx(0.5 * area * 1e-12, rel=1e-4)  # fully correlated: Σ A σ
    assert 0 < e["spread_independent_pg_c"] < e["spread_pg_c"]
    assert "upper bound" in t["notes"]["spread_pg_c"]
    classes = {row["name"]: row for row in t["by_land_cover"]}
    assert set(classes) == {"deciduous broadleaf forest", "grassland"}
    assert classes["deciduous broadleaf forest"]["mean_kg_m2"]["soc_stock_0_30cm"] == pytest.approx(6.0)
    assert classes["grassland"]["mean_kg_m2"]["soc_stock_0_30cm"] == pytest.approx(3.0)
    assert set(t["by_group"]) == {"forest", "grass"}
    # class totals add up to the CONUS total
    assert sum(r["total_pg_c"]["soc_stock_0_30cm"] for r in t["by_land_cover"]) == pytest.approx(e["total_pg_c"], abs=1e-3)
    lines = "\n".join(totals_lines(t))
    assert "Pg C ±" in lines and "forest" in lines and "grass" in lines
