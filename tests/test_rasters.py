"""User rasters as covariates: CRS check, reprojection at known points, nodata, catalog validation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from socmap.data.catalog import CatalogError, load_catalog
from socmap.data.rasters import RasterError, add_raster_layers, raster_entries, read_raster, regrid_raster

# linear fields in the raster's own CRS: value = A + B * x_km + C * y_km (bilinear is exact on them)
A, B, C = 50.0, 0.004, -0.003


def write_tiff(path: Path, crs: str, *, nodata: float | None = -9999.0, hole: tuple[float, float] | None = None,
               tag_crs: str | None = None, step_m: float = 20_000.0) -> Path:
    """A GeoTIFF over CONUS (+ margin) in ``crs`` holding the linear field; ``hole`` (lon, lat) is the
    centre of a 600 km nodata square."""
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    lon = np.linspace(-127, -64, 60)
    lat = np.linspace(22, 52, 60)
    xs, ys = tr.transform(*np.meshgrid(lon, lat))
    x0, x1, y0, y1 = np.min(xs), np.max(xs), np.min(ys), np.max(ys)
    nx, ny = int((x1 - x0) / step_m) + 1, int((y1 - y0) / step_m) + 1
    xc = x0 + step_m * (np.arange(nx) + 0.5)
    yc = y1 - step_m * (np.arange(ny) + 0.5)
    values = (A + B * xc[None, :] / 1000.0 + C * yc[:, None] / 1000.0).astype(np.float32)
    if hole is not None:
        hx, hy = tr.transform(*hole)
        block = (np.abs(xc[None, :] - hx) < 300_000) & (np.abs(yc[:, None] - hy) < 300_000)
        values[block] = nodata
    profile = {"driver": "GTiff", "width": nx, "height": ny, "count": 1, "dtype": "float32",
               "crs": tag_crs or crs, "transform": from_origin(x0, y1, step_m, step_m), "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)
    return path


def catalog(tmp_path: Path, tif: str, crs: str, extra: str = "", name: str = "clay_pct") -> Path:
    text = f"""
    entries:
      user_clay:
        kind: raster
        uri: {tif}
        format: geotiff
        crs: {crs}
        description: a test raster
        license: CC0{extra}
        variables:
          {name}: {{units: "%", source_name: band_1}}
    """
    p = tmp_path / "mine.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def entry(tmp_path, monkeypatch, tif, crs, extra=""):
    monkeypatch.setenv("SOCMAP_CATALOG", str(catalog(tmp_path, tif, crs, extra)))
    (e,) = raster_entries()
    return e


@pytest.fixture(scope="module")
def grid():
    from socmap.data.grid import conus_grid

    return conus_grid(1.0)


def expected(crs: str, lon, lat):
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    return A + B * np.asarray(x) / 1000.0 + C * np.asarray(y) / 1000.0


POINTS = {"Denver": (-104.5, 39.5), "Kansas": (-98.5, 38.5), "Maine": (-69.5, 45.5), "Texas": (-99.5, 31.5), "Oregon": (-120.5, 44.5)}


@pytest.mark.parametrize("crs", ["EPSG:3857", "EPSG:5070"])
def test_reprojected_values_at_known_points(tmp_path, monkeypatch, grid, crs):
    e = entry(tmp_path, monkeypatch, write_tiff(tmp_path / "clay.tif", crs).name, crs, "\n        resampling: bilinear")
    values, method = regrid_raster(e, read_raster(e), grid)
    assert method == "bilinear" and values.shape == grid["land_mask"].shape
    land = grid["land_mask"].values
    assert np.isfinite(values[land]).all() and np.isnan(values[~land]).all()
    for place, (lon, lat) in POINTS.items():
        iy = int(np.argmin(np.abs(grid["y"].values - lat)))
        ix = int(np.argmin(np.abs(grid["x"].values - lon)))
        want = float(expected(crs, grid["x"].values[ix], grid["y"].values[iy]))
        assert values[iy, ix] == pytest.approx(want, abs=0.05), place  # field spans ~30 units over CONUS


def test_average_resampling_of_a_fine_raster(tmp_path, monkeypatch, grid):
    e = entry(tmp_path, monkeypatch, write_tiff(tmp_path / "c.tif", "EPSG:5070", step_m=10_000).name, "EPSG:5070")
    values, method = regrid_raster(e, read_raster(e), grid)
    assert method == "average"  # 1 deg cells are ~11 source pixels wide
    iy, ix = int(np.argmin(np.abs(grid["y"].values - 39.5))), int(np.argmin(np.abs(grid["x"].values + 98.5)))
    assert values[iy, ix] == pytest.approx(float(expected("EPSG:5070", -98.5, 39.5)), abs=0.3)


def test_crs_mismatch_names_entry_both_crs_and_fix(tmp_path, monkeypatch):
    tif = write_tiff(tmp_path / "clay.tif", "EPSG:3857")
    e = entry(tmp_path, monkeypatch, tif.name, "EPSG:4326")
    with pytest.raises(RasterError) as info:
        read_raster(e)
    msg = str(info.value)
    for needle in ("mine.yaml", "'user_clay'", "'crs'", "EPSG:3857", "EPSG:4326", "set `crs: EPSG:3857`"):
        assert needle in msg, (needle, msg)


def test_nodata_becomes_nan_and_counts(tmp_path, monkeypatch, grid):
    e = entry(tmp_path, monkeypatch, write_tiff(tmp_path / "h.tif", "EPSG:5070", hole=(-98.0, 38.5)).name, "EPSG:5070")
    cube = add_raster_layers(grid.copy(), [e])
    v = cube["clay_pct"].values
    iy, ix = int(np.argmin(np.abs(grid["y"].values - 38.5))), int(np.argmin(np.abs(grid["x"].values + 98.5)))
    assert np.isnan(v[iy, ix])  # inside the hole, not -9999 and not a smeared value
    assert np.nanmin(v) > 0  # no -9999 leaked into the average
    rec = cube.attrs["user_rasters_json"]
    assert "EPSG:5070" in rec and '"land_cells_without_value": 0' not in rec
    assert "clay_pct" in cube.attrs["numeric_covariates"]
    assert cube["clay_pct"].attrs["crs"].startswith("EPSG:5070") and cube["clay_pct"].attrs["source"].endswith("h.tif")


def test_raster_not_covering_conus_is_an_error(tmp_path, monkeypatch):
    import rasterio
    from rasterio.transform import from_origin

    tif = tmp_path / "europe.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=10, height=10, count=1, dtype="float32", crs="EPSG:4326",
                       transform=from_origin(0, 50, 1, 1)) as dst:
        dst.write(np.ones((10, 10), np.float32), 1)
    e = entry(tmp_path, monkeypatch, tif.name, "EPSG:4326")
    with pytest.raises(RasterError, match="does not overlap CONUS"):
        read_raster(e)


def test_reserved_name_and_missing_band(tmp_path, monkeypatch, grid):
    tif = write_tiff(tmp_path / "c.tif", "EPSG:5070")
    monkeypatch.setenv("SOCMAP_CATALOG", str(catalog(tmp_path, tif.name, "EPSG:5070", name="land_mask")))
    with pytest.raises(RasterError, match="rename the variable key"):
        add_raster_layers(grid.copy(), raster_entries())
    text = catalog(tmp_path, tif.name, "EPSG:5070").read_text().replace("band_1", "band_3")
    (tmp_path / "mine.yaml").write_text(text)
    with pytest.raises(RasterError, match="1 band"):
        read_raster(raster_entries()[0])


def test_raster_entry_validation(tmp_path):
    path = catalog(tmp_path, "x.tif", "EPSG:5070")
    bad = path.read_text().replace("    crs: EPSG:5070\n", "")
    path.write_text(bad)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert "'user_clay'" in str(info.value) and "crs" in str(info.value)
    path.write_text(bad.replace("license: CC0", "license: CC0\n    crs: EPSG:5070\n    resampling: cubic"))
    with pytest.raises(CatalogError, match="resampling"):
        load_catalog(path)
