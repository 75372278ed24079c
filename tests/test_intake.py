"""Profile intake: `socmap profiles check` on bad and odd tables, unit inference, the load report, shipped data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from socmap.cli import app
from socmap.data.intake import ProfileDataError, infer_bd_unit, infer_carbon_unit, infer_cf_unit, infer_depth_unit
from socmap.data.profiles import load_nwca2011, load_profile_table, load_sodah, organic_bd_ptf

DATA = Path(__file__).parent / "data" / "intake"
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
runner = CliRunner()


def check(*args: str):
    res = runner.invoke(app, ["profiles", "check", *map(str, args)], catch_exceptions=False)
    return res.exit_code, " ".join(res.output.split())  # stdout and stderr, rich's line wrapping undone


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------ bad input: non-zero exit, clear message

BAD_FILES = {
    "empty.csv": ["empty.csv", "no header line"],
    "header_only.csv": ["header_only.csv", "no rows"],
    "all_dropped.csv": ["all_dropped.csv", "none of the 2 rows", "outside CONUS: 2 (lines 2, 3)"],
    "missing_column.csv": ["missing_column.csv", "no column for 'oc'", "columns:", "oc: <your column>"],
    "wrong.ext": ["wrong.ext", "cannot read files ending .ext", "save the"],
    "latin1.csv": ["latin1.csv", "not utf-8 text", "--encoding latin-1"],
    "fake.parquet": ["fake.parquet", "pyarrow"],
    "fake.xlsx": ["fake.xlsx", "openpyxl"],
    "depth_ambiguous.csv": ["depth_ambiguous.csv", "'top/bottom'", "could be cm or m", "units: {top: <unit>, bottom: <unit>}"],
    "no_such_file.csv": ["no_such_file.csv", "no such file"],
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_exits_nonzero_with_message(name):
    code, out = check(DATA / name)
    assert code != 0, out
    for part in BAD_FILES[name]:
        assert part in out, (part, out)
    assert "Traceback" not in out


def test_folder_and_bad_column_map(tmp_path):
    code, out = check(tmp_path)
    assert code == 2 and "is a folder" in out
    cmap = _write(tmp_path, "columns: {lat: Y}\nunits: {oc: furlongs}\n", "map.yaml")
    code, out = check(DATA / "mapped.csv", "--columns", cmap)
    assert code == 2 and "unit 'furlongs' for 'oc'" in out
    cmap = _write(tmp_path, "colums: {lat: Y}\n", "typo.yaml")
    code, out = check(DATA / "mapped.csv", "--columns", cmap)
    assert code == 2 and "unknown key(s) colums" in out
    code, out = check(DATA / "bad_rows.csv", "--columns", DATA / "map.yaml")
    assert code == 2 and "names column 'Y' for 'lat'" in out


def test_bad_rows_each_dropped_with_line_and_reason(tmp_path):
    out_csv = tmp_path / "report.csv"
    code, out = check(DATA / "bad_rows.csv", "--out", out_csv)
    assert code == 0, out
    rows = pd.read_csv(out_csv)
    by_line = dict(zip(rows["line"], rows["reason"].fillna("")))
    assert by_line == {
        2: "", 3: "", 4: "duplicate row", 5: "outside CONUS (lat/lon look swapped)", 6: "outside CONUS",
        7: "top >= bottom", 8: "non-numeric value in 'oc_pct'", 9: "organic horizon above mineral surface (negative top_cm)",
        10: "", 11: "implausible organic C (> 70 %: check the unit)", 12: "no carbon",
    }
    # kept + dropped = read, each row once
    assert len(rows) == 11 and rows["line"].is_unique and (rows["status"] == "kept").sum() == 3
    code, out = check(DATA / "bad_rows.csv", "--strict")
    assert code == 1 and "--strict and 8 of 11 rows dropped" in out


def test_organic_horizons_shift_keeps_them():
    table, report = load_profile_table(DATA / "bad_rows.csv", organic_horizons="shift")
    f = table[table["site_id"] == "bad_rows:F"].sort_values("top_m")
    assert f["top_m"].tolist() == [0.0, 0.05] and f["bottom_m"].tolist() == [0.05, 0.2]
    assert f["forest_floor"].tolist() == [True, False]
    code, out = check(DATA / "bad_rows.csv", "--organic-horizons", "keep")
    assert code == 2 and "'drop' or 'shift'" in out


def test_report_arithmetic_on_random_tables(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(5):
        n = 60
        df = pd.DataFrame({
            "site": rng.integers(0, 10, n), "lat": rng.uniform(20, 52, n), "lon": rng.uniform(-128, -60, n),
            "top_cm": rng.integers(-10, 60, n), "bottom_cm": rng.integers(0, 100, n),
            "oc_pct": rng.choice([0.5, 2.0, 30.0, -1.0, np.nan, 90.0], n), "bd_g_cm3": rng.choice([1.2, np.nan, 0.3], n),
        })
        df["oc_pct"] = df["oc_pct"].astype(object)
        df.loc[::7, "oc_pct"] = "x"
        p = tmp_path / f"r{k}.csv"
        df.to_csv(p, index=False)
        try:
            _, report = load_profile_table(p)
        except ProfileDataError as exc:  # every row dropped: the report still adds up
            report = exc.report
        rep = report.sources[f"r{k}"]
        assert rep.rows_read == n == rep.rows_kept + rep.rows_dropped
        assert sorted(report.rows()["line"]) == list(range(2, n + 2))


# ------------------------------------------------------------------ units

def test_depth_unit_inference():
    s = pd.Series
    assert infer_depth_unit(s([0, 10.0]), s([10, 60.0]), "f", "c")[0] == "cm"
    assert infer_depth_unit(s([0, 0.1]), s([0.1, 0.3]), "f", "c")[0] == "m"
    with pytest.raises(ProfileDataError, match="could be cm or m"):
        infer_depth_unit(s([0.0]), s([5.0]), "f", "c")


def test_carbon_unit_inference():
    s = pd.Series
    # > 70: cannot be %: g/kg
    assert infer_carbon_unit(s([5.0, 120.0]), s([np.nan, np.nan]), "f", "oc", "c")[0] == "g/kg"
    # an organic layer (light) with 38: % (as g/kg it would be a 3.8 % C layer of density 0.15)
    assert infer_carbon_unit(s([38.0, 2.0]), s([0.15, 1.3]), "f", "oc", "c")[0] == "%"
    # 25 with density 1.3: 325 kg C m-3 as %, impossible: g/kg
    assert infer_carbon_unit(s([25.0, 8.0]), s([1.3, 1.4]), "f", "oc", "c")[0] == "g/kg"
    # g/g: a light layer at 0.4 (as % or g/kg far too poor for its density)
    unit, why = infer_carbon_unit(s([0.4, 0.02]), s([0.2, 1.3]), "f", "oc", "c")
    assert unit == "g/g" and "not %" in why and "not g/kg" in why
    with pytest.raises(ProfileDataError, match=r"could be % or g/kg \(no measured bulk density"):
        infer_carbon_unit(s([2.0, 4.0]), s([np.nan, np.nan]), "f", "oc", "c")


def test_bd_and_cf_unit_inference():
    s = pd.Series
    assert infer_bd_unit(s([1.2, 0.3]), "f", "c")[0] == "g cm-3"
    assert infer_bd_unit(s([1200.0, 300.0]), "f", "c")[0] == "kg m-3"
    with pytest.raises(ProfileDataError, match="fit neither"):
        infer_bd_unit(s([1.2, 1300.0]), "f", "c")
    assert infer_cf_unit(s([0.0, 20.0]), "f", "c")[0] == "%"
    with pytest.raises(ProfileDataError, match="could be % or a volume fraction"):
        infer_cf_unit(s([0.1, 0.5]), "f", "c")


def test_units_from_column_map_and_kg_m3(tmp_path):
    table, report = load_profile_table(DATA / "mapped.csv", columns=DATA / "map.yaml")
    assert table["top_m"].tolist() == [0.0, 0.1] and table["bottom_m"].tolist() == [0.1, 0.3]
    assert table["oc_pct"].tolist() == pytest.approx([2.0, 0.8])  # g/kg -> %
    assert report.sources["mapped"].units["oc"] == {"column": "carbon_gkg", "unit": "g/kg", "how": "given"}
    p = _write(tmp_path, "site,lat,lon,top,bottom,oc_g_kg,bd_kg_m3\nA,40,-90,0,20,20,1300\n")
    table, _ = load_profile_table(p)
    assert table.loc[0, "bd_g_cm3"] == pytest.approx(1.3) and table.loc[0, "soc_g_m3"] == pytest.approx(0.02 * 1.3e6)


# ------------------------------------------------------------------ measured density, coarse fragments, new layout

def test_measured_bd_kept_ptf_flagged(tmp_path):
    """The named column `bulk_density_g_cm3` is used; only the gap is estimated, and flagged."""
    p = _write(tmp_path, "site_id,lat,lon,top_cm,bottom_cm,soc_pct,bulk_density_g_cm3\n"
               "A,40,-90,0,10,2.0,1.10\nA,40,-90,10,30,1.0,\nB,41,-91,0,20,3.0,0.95\n")
    table, report = load_profile_table(p)
    assert table["bd_estimated"].tolist() == [False, True, False]
    assert table["bd_g_cm3"].tolist()[::2] == [1.10, 0.95]
    assert table.loc[1, "bd_g_cm3"] == pytest.approx(organic_bd_ptf(1.0)[()])
    rep = report.sources["t"]
    assert (rep.bd_measured, rep.bd_estimated) == (2, 1)


def test_coarse_fragments_and_total_carbon_known_answer():
    table, _ = load_profile_table(DATA / "total_carbon.csv")
    t = table.set_index("source_line")
    # line 2: OC = 3.0 - 0.12*5 = 2.4 %, BD 1.2, 20 % coarse: 0.024 * 1.2e6 * 0.8
    assert t.loc[2, "oc_pct"] == pytest.approx(2.4) and t.loc[2, "soc_g_m3"] == pytest.approx(0.024 * 1.2e6 * 0.8)
    assert t.loc[2, "caco3_corrected"] and not t.loc[2, "carbon_is_total"]
    # line 3: no CaCO3: total C as organic (flagged), no coarse value: no correction
    assert t.loc[3, "carbon_is_total"] and t.loc[3, "soc_g_m3"] == pytest.approx(0.015 * 1.4e6)
    # line 4: density estimated, 50 % coarse
    assert t.loc[4, "bd_estimated"] and t.loc[4, "soc_g_m3"] == pytest.approx(0.008 * t.loc[4, "bd_g_cm3"] * 1e6 * 0.5)


def test_layout_never_seen(tmp_path):
    """latitude, longitude, hzn_top/hzn_bot in cm, oc in %, bd: loads without a column map."""
    tidy = tmp_path / "tidy.csv"
    code, out = check(DATA / "new_layout.csv", "--tidy", tidy)
    assert code == 0, out
    t = pd.read_csv(tidy)
    assert len(t) == 6 and t["site_id"].nunique() == 3 and set(t["site_id"]) == {"new_layout:P1", "new_layout:P2", "new_layout:P3"}
    assert t["top_m"].tolist()[:3] == [0.0, 0.08, 0.2] and t["bottom_m"].tolist()[:3] == [0.08, 0.2, 0.5]
    assert t.loc[0, "soc_g_m3"] == pytest.approx(0.38 * 0.15e6) and not t.loc[0, "bd_estimated"]
    assert t["bd_estimated"].tolist() == [False] * 4 + [True, False]
    assert {"site_id", "lon", "lat", "top_m", "bottom_m", "soc_g_m3", "source_line"} <= set(t.columns)
    assert "inferred" in out and "oc" in out


# ------------------------------------------------------------------ shipped public profile sets

def test_shipped_sets_load_with_readme_counts():
    nw = load_nwca2011().report.sources["nwca2011"]
    so = load_sodah().report.sources["sodah"]
    assert nw.files[0].endswith("socmap/data/shipped/nwca2011/nwca2011_soilchem.csv.gz")
    assert (nw.rows_kept, nw.sites) == (3140, 1032)
    assert (so.rows_kept, so.sites) == (7110, 858)
    sources = (Path(__file__).resolve().parents[1] / "socmap" / "data" / "shipped" / "SOURCES.md").read_text()
    for cite in ("public domain", "CC-BY 4.0", "10.1038/ncomms13835", "10.5194/essd-13-1843-2021"):
        assert cite in sources


@pytest.mark.skipif(not (REAL / "nwca2011").is_dir(), reason=f"original profile data not found at {REAL}")
def test_shipped_equal_originals(monkeypatch):
    shipped = (load_nwca2011().table, load_sodah().table)
    monkeypatch.setenv("SOCMAP_REAL_DATA", str(REAL))
    original = (load_nwca2011().table, load_sodah().table)
    for a, b in zip(shipped, original):
        pd.testing.assert_frame_equal(a.drop(columns="source_file"), b.drop(columns="source_file"))


# ------------------------------------------------------------------ the site-level wetland flag

def test_wetland_column_optional_with_a_report_note(tmp_path):
    """Without the column every site is upland and the report says so; with it, each spelling reads."""
    base = "site_id,lat,lon,top_cm,bottom_cm,oc_pct,bd_g_cm3"
    rows = ["A,40,-90,0,10,2.0,1.1", "B,41,-91,0,10,3.0,1.0", "C,42,-92,0,10,9.0,0.6", "D,43,-93,0,10,1.0,1.3"]
    table, report = load_profile_table(_write(tmp_path, "\n".join([base, *rows]) + "\n"))
    assert not table["wetland"].any()
    assert any("no wetland column" in n for n in report.sources["t"].notes)
    flags = ["yes", "0", "Wetland", ""]
    text = "\n".join([base + ",wetland", *(r + "," + f for r, f in zip(rows, flags))]) + "\n"
    table, report = load_profile_table(_write(tmp_path, text, "w.csv"))
    assert table.set_index("site_id")["wetland"].to_dict() == {"w:A": True, "w:B": False, "w:C": True, "w:D": False}
    assert not any("no wetland column" in n for n in report.sources["w"].notes)


def test_unreadable_wetland_flag_is_one_clear_error(tmp_path):
    text = "site_id,lat,lon,top_cm,bottom_cm,oc_pct,bd_g_cm3,is_wetland\nA,40,-90,0,10,2.0,1.1,maybe\n"
    with pytest.raises(ProfileDataError, match=r"'is_wetland' \(wetland flag\) holds 'maybe' on line\(s\) 2"):
        load_profile_table(_write(tmp_path, text))


@pytest.mark.skipif(not (REAL / "nwca2011").is_dir() or not (REAL / "sodah").is_dir(), reason=f"real profile data not found at {REAL}")
def test_shipped_sets_carry_the_wetland_flag():
    """NWCA samples wetlands only (its field class kept); SoDaH flags its NLCD wetland covers only."""
    nwca = load_nwca2011(REAL / "nwca2011").table
    assert nwca["wetland"].all() and nwca["wetland_class"].notna().all()
    assert set(nwca["wetland_class"]) <= {"PEM", "PFO", "PSS", "E2EM", "E2SS", "PUBPAB", "PF"}
    sodah = load_sodah(REAL / "sodah" / "sodah_conus_layers.csv.gz").table
    raw = pd.read_csv(REAL / "sodah" / "sodah_conus_layers.csv.gz", usecols=["land_cover"], low_memory=False)["land_cover"]
    assert 0 < sodah["wetland"].mean() < 0.2
    assert raw.isin(["woodyWetlands", "emergentHerbaceousWetlands"]).any()
