"""`socmap train --profiles`: a user's horizon table in a never-seen layout trains and maps; bad tables
fail with one clear message and leave --out untouched; a user raster (catalog overlay) becomes a covariate."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from socmap.cli import app
from socmap.data.realcube import SOURCES

MISSING = [pip for entry, (mod, pip) in SOURCES.items() if importlib.util.find_spec(mod) is None]
needs_pkgs = pytest.mark.skipif(bool(MISSING), reason=f"real-data packages not installed ({', '.join(MISSING)})")
SHIPPED_SODAH = Path(__file__).resolve().parents[1] / "socmap" / "data" / "shipped" / "sodah" / "sodah_conus_layers.csv.gz"

runner = CliRunner()
SMALL = {"epochs": 2, "folds": 3, "kan_polish_iters": 5, "kan_sparsify_epochs": 2, "kan_refit_epochs": 2}


def invoke(*args):
    res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.output


def never_seen_table(path: Path, n_sites: int = 60) -> pd.DataFrame:
    """60 SoDaH control profiles (mineral layers, carbon in %) renamed to a layout socmap has never seen."""
    d = pd.read_csv(SHIPPED_SODAH, low_memory=False)
    d = d[(d["control_sample"] == True) & (d["layer_top"] >= 0) & (d["lyr_soc"] > 0.1)  # noqa: E712
          & (d["layer_bot"] > d["layer_top"]) & ~d["data_file"].isin(["Wisconsin DIRT soil", "CWThemlock_soilCN"])]
    loc = d.groupby(["lat", "long"]).size().reset_index()[["lat", "long"]].sample(n_sites, random_state=0)
    d = d.merge(loc, on=["lat", "long"]).groupby(["lat", "long", "layer_top", "layer_bot"]).first().reset_index()
    out = pd.DataFrame({"latitude": d["lat"], "longitude": d["long"], "hzn_top": d["layer_top"], "hzn_bot": d["layer_bot"],
                        "oc": d["lyr_soc"], "bd": d["bd_samp"]})
    out.to_csv(path, index=False)
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with the table, its column map, a small training config and a 1 deg real cube."""
    base = tmp_path_factory.mktemp("profiles")
    never_seen_table(base / "horizons.csv")
    (base / "map.yaml").write_text('units: {oc: "%", top: cm, bottom: cm}\n')
    (base / "small.yaml").write_text("".join(f"{k}: {v}\n" for k, v in SMALL.items()))
    return base


def train_args(work: Path, out: Path, table: Path | None = None, *extra):
    return ["train", "--profiles", table or work / "horizons.csv", "--columns", work / "map.yaml", "--config",
            work / "small.yaml", "--data-dir", work / "cube", "--cube-resolution", "1.0", "--out", out, *extra]


@needs_pkgs
def test_never_seen_layout_trains_with_a_user_raster_and_maps(work, monkeypatch):
    from test_rasters import write_tiff

    monkeypatch.setenv("SOCMAP_CATALOG", "")  # recorded: the --catalog below does not leak into other tests
    table = pd.read_csv(work / "horizons.csv")
    hole = (float(table["longitude"].iloc[0]), float(table["latitude"].iloc[0]))  # nodata over the first site
    write_tiff(work / "clay_5070.tif", "EPSG:5070", hole=hole)
    (work / "mine.yaml").write_text(textwrap.dedent("""
        entries:
          user_clay:
            kind: raster
            uri: clay_5070.tif
            format: geotiff
            crs: EPSG:5070
            description: a test clay raster in CONUS Albers
            license: CC0
            variables:
              clay_pct: {units: "%", source_name: band_1, nodata: -9999}
    """))
    out = work / "runs" / "mine"
    code, text = invoke(*train_args(work, out), "--catalog", work / "mine.yaml")
    assert code == 0, text
    assert "Traceback" not in text and "dropped: covariate clay_pct missing" in text
    record = json.loads((out / "run.json").read_text())
    assert "clay_pct" in record["data"]["covariates"]  # the raster is an encoder input
    assert Path(record["data"]["dir"]).name.startswith("cube+rasters-")  # the base cube is left as built
    assert str((work / "mine.yaml").resolve()) in record["data"]["catalogs"]
    rep = record["load_report"]
    t = rep["totals"]
    assert t["rows_read"] == len(table) == t["rows_kept"] + sum(rep["dropped_by_reason"].values())
    assert rep["sites_dropped_by_reason"]["covariate clay_pct missing at the site's cell (raster nodata or outside its extent)"] >= 1
    assert rep["sources"][0]["units"]["oc"] == {"column": "oc", "unit": "%", "how": "given"}
    assert 0 < t["bd_estimated_rows"] < t["rows_kept"]
    mb = record["metrics"]["cv_measured_bd"]
    assert mb["n_obs"] + mb["n_obs_bd_estimated"] == record["data"]["n_obs"]
    assert np.isfinite(mb["pooled"]["nse"])
    pred = pd.read_csv(out / "predictions.csv")
    assert pred["bd_estimated"].sum() == mb["n_obs_bd_estimated"]
    code, text = invoke("map", "--run", out, "--scheduler", "synchronous")
    assert code == 0, text
    from socmap.store import open_store

    store = open_store(out)
    assert np.isfinite(store["soc_stock_0_30cm"].values).sum() > 100


BAD_TABLES = {
    "empty file": ("", "empty"),
    "header only": ("latitude,longitude,hzn_top,hzn_bot,oc,bd\n", "but no rows"),
    "missing carbon column": ("latitude,longitude,hzn_top,hzn_bot,bd\n40,-100,0,10,1.2\n", "oc"),
    "every row dropped": ("latitude,longitude,hzn_top,hzn_bot,oc,bd\n40,-100,10,0,2,1.2\n41,-101,30,5,1,1.3\n", "top >= bottom"),
    "all outside CONUS": ("latitude,longitude,hzn_top,hzn_bot,oc,bd\n52,13,0,10,2,1.2\n48,2,0,10,1,1.3\n", "outside CONUS"),
    "text in carbon": ("latitude,longitude,hzn_top,hzn_bot,oc,bd\n40,-100,0,10,n.d.,1.2\n", "non-numeric"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_tables_fail_clearly_and_write_nothing(work, case):
    text, needle = BAD_TABLES[case]
    table = work / f"bad_{case.replace(' ', '_')}.csv"
    table.write_text(text)
    out = work / "runs" / f"bad_{case.replace(' ', '_')}"
    code, output = invoke(*train_args(work, out, table))
    flat = " ".join(output.split())
    assert code != 0, output
    assert "Traceback" not in output and "cannot reshape" not in output
    assert table.name in flat and needle.lower() in flat.lower(), (case, output)
    assert not out.exists()  # no half run


def test_unknown_profiles_name_is_one_clear_error(work):
    out = work / "runs" / "nothing"
    code, output = invoke("train", "--profiles", "no_such_table.csv", "--out", out)
    assert code == 2 and "no such file" in output and "kind profiles" in " ".join(output.split())
    assert not out.exists()


def test_profiles_imply_the_real_cube_and_the_twin_is_built_when_missing(tmp_path, monkeypatch):
    from socmap import train as T
    from socmap.train_config import load_config

    assert load_config(profiles="x.csv").data == "real-conus"
    monkeypatch.chdir(tmp_path)
    calls = []
    import socmap.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "write_synthetic", lambda out, cfg, progress=False: calls.append(Path(out)))
    assert T.prepare_data(load_config(), progress=False) == (tmp_path / "data" / "synthetic").resolve()
    assert calls == [(tmp_path / "data" / "synthetic").resolve()]
    with pytest.raises(FileNotFoundError, match="socmap synth --out"):  # an explicit folder is never invented
        T.prepare_data(load_config(data_dir=str(tmp_path / "typo")), progress=False)
