"""socmap export: GeoTIFF / COG files read back with rasterio against the run store."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from socmap.export import ExportError, export_layers, grid_transform

pytestmark = pytest.mark.slow


def test_gtiff_crs_transform_nodata_values(mapped_run, main_store, tmp_path):
    files = export_layers(mapped_run, "tau4s3,soc_stock_0_30cm,land_cover,land_mask,soc_layer2", tmp_path, fmt="gtiff")
    assert [f.name for f in files] == ["tau4s3.tif", "soc_stock_0_30cm.tif", "land_cover.tif", "land_mask.tif", "soc_layer2.tif"]
    ds = main_store
    for f in files:
        name = f.stem
        with rasterio.open(f) as src:
            assert src.crs.to_epsg() == 4326
            assert src.transform.almost_equals(grid_transform(ds))
            assert src.transform.a == pytest.approx(1.0) and src.transform.c == pytest.approx(-125.0) and src.transform.f == pytest.approx(49.5)
            assert src.profile["compress"] == "deflate" and src.profile["tiled"]
            arr = src.read(1)
            tags = src.tags()
            assert tags["run_name"] == "main" and tags["variable"] == name and "units" in tags and tags["long_name"]
            if name == "soc_layer2":
                expected = ds["soc"].values[:, :, 2]
            else:
                expected = ds[name].values
            if name == "land_cover":
                assert src.nodata == 0 and src.dtypes[0] == "int16"
                np.testing.assert_array_equal(arr, expected)
            elif name == "land_mask":
                assert src.nodata == 255 and src.dtypes[0] == "uint8"
                np.testing.assert_array_equal(arr, expected)
            else:
                assert np.isnan(src.nodata) and src.dtypes[0] == "float32"
                np.testing.assert_array_equal(arr, expected.astype(np.float32))
                assert tags["units"] == ds[name].attrs["units"] if name in ds else tags["units"] == "g C m-3"
    with rasterio.open(tmp_path / "tau4s3.tif") as src:
        assert src.tags()["units"] == "yr" and src.tags(1)["long_name"] == "turnover time of passive SOM (S3)"


def test_cog_has_overviews(mapped_run, main_store, tmp_path):
    (f,) = export_layers(mapped_run, "soc_stock_0_100cm", tmp_path, fmt="cog")
    with rasterio.open(f) as src:
        assert src.overviews(1), "a COG needs overviews"
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.crs.to_epsg() == 4326 and np.isnan(src.nodata)
        np.testing.assert_array_equal(src.read(1), main_store["soc_stock_0_100cm"].values)


def test_multiband_descriptions(mapped_run, main_store, tmp_path):
    (f,) = export_layers(mapped_run, "tau4s3,efolding,land_cover", tmp_path, fmt="gtiff", multiband=True)
    with rasterio.open(f) as src:
        assert src.count == 3 and src.dtypes == ("float32",) * 3
        assert src.descriptions[0] == "tau4s3: turnover time of passive SOM (S3)"
        assert src.descriptions[1].startswith("efolding: e-folding depth")
        assert src.tags(2)["units"] == "m"
        np.testing.assert_array_equal(src.read(2), main_store["efolding"].values)
        np.testing.assert_array_equal(src.read(3), main_store["land_cover"].values.astype(np.float32))


def test_all_layers_and_bad_names(mapped_run, main_store, tmp_path):
    from socmap.export import resolve_layers

    names = resolve_layers(main_store, "all")
    assert set(names) == {v for v in main_store.data_vars if main_store[v].dims == ("y", "x")}
    assert len(resolve_layers(main_store, "soc")) == 20
    with pytest.raises(ExportError, match="not a layer"):
        export_layers(mapped_run, "tau4s3,nonsense", tmp_path)
    with pytest.raises(ExportError, match="--crs"):
        export_layers(mapped_run, "tau4s3", tmp_path, crs="EPSG:3857")
    with pytest.raises(ExportError, match="--format"):
        export_layers(mapped_run, "tau4s3", tmp_path, fmt="png")


def test_epsg5070_keeps_values_at_known_points(mapped_run, main_store, tmp_path):
    from pyproj import Transformer

    files = export_layers(mapped_run, "soc_stock_0_30cm,land_cover", tmp_path, fmt="cog", crs="EPSG:5070")
    ds = main_store
    stock = ds["soc_stock_0_30cm"].values
    lc = ds["land_cover"].values
    # interior land cells: every cell of the 3×3 neighbourhood is land
    land = ds["land_mask"].values.astype(bool)
    interior = land.copy()
    interior[[0, -1], :] = False
    interior[:, [0, -1]] = False
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            interior &= np.roll(np.roll(land, dy, 0), dx, 1)
    iy, ix = np.nonzero(interior)
    pick = np.random.default_rng(1).choice(iy.size, 12, replace=False)
    iy, ix = iy[pick], ix[pick]
    to_albers = Transformer.from_crs("EPSG:4326", "EPSG:5070", always_xy=True)
    px, py = to_albers.transform(ds["x"].values[ix], ds["y"].values[iy])
    with rasterio.open(files[0]) as src:
        assert src.crs.to_epsg() == 5070 and src.overviews(1)
        got = np.array([v[0] for v in src.sample(list(zip(px, py)))])
    for k, (a, b) in enumerate(zip(iy, ix)):
        hood = stock[a - 1:a + 2, b - 1:b + 2]
        lo, hi = hood.min(), hood.max()
        slack = 0.05 * abs(stock[a, b])
        assert lo - slack <= got[k] <= hi + slack, (k, got[k], stock[a, b], lo, hi)
    with rasterio.open(files[1]) as src:
        assert src.crs.to_epsg() == 5070 and src.nodata == 0
        got_lc = np.array([v[0] for v in src.sample(list(zip(px, py)))])
    hoods = [set(lc[a - 1:a + 2, b - 1:b + 2].ravel().tolist()) for a, b in zip(iy, ix)]
    assert all(g in h for g, h in zip(got_lc, hoods)), "nearest resampling keeps land-cover classes"


def test_cli_export(mapped_run, tmp_path):
    from typer.testing import CliRunner

    from socmap.cli import app

    res = CliRunner().invoke(app, ["export", "--run", str(mapped_run), "--layers", "cue,beta", "--out", str(tmp_path / "o"), "--format", "gtiff"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["beta.tif", "cue.tif"]
    res = CliRunner().invoke(app, ["export", "--run", str(tmp_path), "--layers", "cue", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no run store" in " ".join(res.output.split())
