"""Real SOC profile loaders: counts on the real files, the load report, the PTF, malformed input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from socmap.data.profiles import (
    ProfileDataError, fit_organic_bd_ptf, load_nwca2011, load_profile_table, load_profiles, load_sodah, organic_bd_ptf,
)

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
needs_real = pytest.mark.skipif(not (REAL / "nwca2011").is_dir() or not (REAL / "sodah").is_dir(),
                                reason=f"real profile data not found at {REAL} (provided beside the project; see its README)")


@pytest.fixture(scope="module")
def merged():
    return load_profiles(["nwca2011", "sodah"], paths={"nwca2011": REAL / "nwca2011", "sodah": REAL / "sodah" / "sodah_conus_layers.csv.gz"})


def _counts_add_up(report) -> None:
    report.check()
    for r in report.sources.values():
        assert r.rows_read == r.rows_kept + sum(r.dropped.values())
        assert r.rows_kept == r.bd_measured + r.bd_estimated


@needs_real
def test_real_counts_in_readme_ranges(merged):
    table, report = merged
    _counts_add_up(report)
    nw, so = report.sources["nwca2011"], report.sources["sodah"]
    # README: NWCA ~3,120 horizons at ~1,030 sites, ~2,190 with measured BD
    assert 3000 <= nw.rows_kept <= 3250 and 990 <= nw.sites <= 1070
    assert 2100 <= nw.bd_measured <= 2280
    assert nw.dropped["revisit (VISIT_NO > 1)"] == 316
    # README: SoDaH ~7,160 layers at ~830 sites, ~2,430 with measured BD
    assert 6900 <= so.rows_kept <= 7400 and 800 <= so.sites <= 880
    assert 2350 <= so.bd_measured <= 2500
    assert so.dropped["not a control row (treatment)"] == 12482
    assert so.dropped["organic horizon above mineral surface (negative layer_top)"] > 1000
    assert so.dropped["duplicate row"] > 50
    # the table matches the report
    assert (table["source"] == "nwca2011").sum() == nw.rows_kept
    assert table["bd_estimated"].sum() == nw.bd_estimated + so.bd_estimated
    txt = report.table()
    assert "dropped: duplicate row" in txt and "nwca2011 kept" in txt


@needs_real
def test_real_soc_plausible(merged):
    table, _ = merged
    soc = table["soc_g_m3"]
    assert soc.gt(0).all() and soc.le(150_000).all()
    assert 5_000 < soc.median() < 40_000  # 5-40 kg C m-3 typical of topsoils
    assert ((table["top_m"] >= 0) & (table["bottom_m"] > table["top_m"])).all()
    assert np.allclose(table["depth_m"], 0.5 * (table["top_m"] + table["bottom_m"]))
    assert table["lon"].between(-125, -66).all() and table["lat"].between(24, 50).all()
    # g/g sources were fixed: their carbon is now in %, > 0.4 at the top
    frac = table[table["carbon_was_fraction"]]
    assert len(frac) > 30 and frac["oc_pct"].max() > 1.0
    # SOC density = OC fraction x BD x 1e6
    assert np.allclose(table["soc_g_m3"], table["oc_pct"] / 100 * table["bd_g_cm3"] * 1e6)


@needs_real
def test_measured_density_only_and_forest_floor_shift():
    m = load_nwca2011(REAL / "nwca2011", bulk_density="measured")
    _counts_add_up(m.report)
    assert not m.table["bd_estimated"].any()
    assert m.report.sources["nwca2011"].dropped["no measured bulk density"] > 800
    s = load_sodah(REAL / "sodah" / "sodah_conus_layers.csv.gz", forest_floor="shift")
    _counts_add_up(s.report)
    ff = s.table[s.table["forest_floor"]]
    assert len(ff) > 1000 and ff["oc_pct"].median() > 20  # organic horizons kept, carbon-rich
    assert (s.table["top_m"] >= 0).all()


def test_ptf_flags_and_shape(tmp_path):
    # Adams mixing model: decreasing with carbon, mineral end member at 0 % C
    bd = organic_bd_ptf([0.0, 1.0, 5.0, 20.0, 50.0])
    assert bd[0] == pytest.approx(1.64) and np.all(np.diff(bd) < 0) and 0.2 < bd[-1] < 0.3
    oc = np.linspace(0.2, 45, 200)
    fit = fit_organic_bd_ptf(oc, organic_bd_ptf(oc, 1.3, 0.11))
    assert fit == pytest.approx((1.3, 0.11), rel=1e-3)
    p = tmp_path / "p.csv"
    pd.DataFrame({"lon": [-90.0, -90.0, -91.0], "lat": [40.0, 40.0, 41.0], "top_cm": [0, 10, 0], "bottom_cm": [10, 30, 20],
                  "soc_pct": [2.0, 1.0, 3.0], "bd_g_cm3": [1.3, np.nan, 1.2]}).to_csv(p, index=False)
    table, report = load_profile_table(p)
    assert table["bd_estimated"].tolist() == [False, True, False]
    assert table.loc[1, "bd_g_cm3"] == pytest.approx(organic_bd_ptf(1.0)[()])  # < 30 measured pairs: Adams constants
    assert report.sources["p"].bd_estimated == 1
    table_m, report_m = load_profile_table(p, bulk_density="measured")
    assert len(table_m) == 2 and report_m.sources["p"].dropped == {"no measured bulk density": 1}


def _write(tmp_path: Path, rows: dict, name="bad.csv") -> Path:
    p = tmp_path / name
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


GOOD = {"lon": [-90.0, -95.0], "lat": [40.0, 35.0], "top_cm": [0, 0], "bottom_cm": [10, 20], "soc_pct": [2.0, 1.0], "bd_g_cm3": [1.3, 1.4]}


def test_wrong_column_names(tmp_path):
    rows = dict(GOOD)
    rows["longitude"] = rows.pop("lon")
    rows["lng_east"] = rows.pop("longitude")
    with pytest.raises(ProfileDataError, match=r"(?s)bad\.csv: no column for 'lon'.*lng_east.*columns:\n    lon: <your column>"):
        load_profile_table(_write(tmp_path, rows))
    # a mapping fixes it
    table, _ = load_profile_table(_write(tmp_path, rows), columns={"lon": "lng_east"})
    assert len(table) == 2


def test_text_in_numeric_columns(tmp_path):
    rows = {k: list(v) + [v[0]] for k, v in GOOD.items()}
    rows["soc_pct"][2] = "n.d."
    rows["bd_g_cm3"][1] = "about 1.4"
    rows["top_cm"][0] = 0
    table, report = load_profile_table(_write(tmp_path, rows))
    rep = report.sources["bad"]
    assert rep.dropped == {"non-numeric value in 'soc_pct'": 1}
    assert any("'soc_pct'" in n and "line(s) 4" in n and "n.d." in n for n in rep.notes)
    assert any("'bd_g_cm3'" in n and "about 1.4" in n for n in rep.notes)  # density: treated as missing, estimated
    assert table["bd_estimated"].sum() == 1
    _counts_add_up(report)


def test_negative_depths_and_top_below_bottom(tmp_path):
    rows = {k: list(v) * 2 for k, v in GOOD.items()}
    rows["top_cm"] = [-5, 30, 0, 10]
    rows["bottom_cm"] = [10, 20, 10, 20]
    rows["lon"] = [-90.0, -91.0, -92.0, -93.0]
    table, report = load_profile_table(_write(tmp_path, rows))
    rep = report.sources["bad"]
    assert rep.dropped == {"organic horizon above mineral surface (negative top_cm)": 1, "top >= bottom": 1}
    assert rep.dropped_lines == {"organic horizon above mineral surface (negative top_cm)": [2], "top >= bottom": [3]}
    assert len(table) == 2


def test_swapped_lat_lon_and_outside(tmp_path):
    rows = {k: list(v) + [v[0], v[0]] for k, v in GOOD.items()}
    rows["lon"] = [-90.0, 40.0, 10.0, np.nan]
    rows["lat"] = [40.0, -90.0, 45.0, 40.0]
    rows["top_cm"] = [0, 0, 0, 0]
    table, report = load_profile_table(_write(tmp_path, rows))
    rep = report.sources["bad"]
    assert rep.dropped == {"outside CONUS (lat/lon look swapped)": 1, "outside CONUS": 1, "no coordinates": 1}
    assert any("look exchanged" in n and "lines 3" in n for n in rep.notes)
    assert len(table) == 1


def test_duplicated_rows(tmp_path):
    rows = {k: list(v) + [v[0]] for k, v in GOOD.items()}
    table, report = load_profile_table(_write(tmp_path, rows))
    assert report.sources["bad"].dropped == {"duplicate row": 1}
    assert len(table) == 2


def test_nwca_and_sodah_malformed(tmp_path):
    folder = tmp_path / "nwca"
    folder.mkdir()
    pd.DataFrame({"UID": [1, 1, 1, 2], "SITE_ID": ["a", "a", "a", "b"], "VISIT_NO": [1, 1, 1, 2], "PIT": ["A"] * 4,
                  "LAYER": [1, 2, 4, 1], "DEPTH": [10, 5, 40, 10], "TOT_CARBON": [5.0, 2.0, "x", 1.0], "CACO3_2MM": [10.0, None, None, None],
                  "BULK_DEN_DBF": [0.01, 1.2, 1.3, 1.1], "DATE_COL": ["d"] * 4}).to_csv(folder / "nwca2011_soilchem.csv", index=False)
    pd.DataFrame({"UID": [1, 2], "AA_CENTER_LAT": [40.0, 41.0], "AA_CENTER_LON": [-90.0, -91.0]}).to_csv(folder / "nwca2011_siteinfo-meta.csv", index=False)
    table, report = load_nwca2011(folder)
    rep = report.sources["nwca2011"]
    _counts_add_up(report)
    # line 3: top 10 > bottom 5; line 4: text carbon; line 5: revisit
    assert rep.dropped == {"revisit (VISIT_NO > 1)": 1, "non-numeric value in 'TOT_CARBON'": 1, "top >= bottom": 1}
    assert rep.dropped_lines == {"revisit (VISIT_NO > 1)": [5], "non-numeric value in 'TOT_CARBON'": [4], "top >= bottom": [3]}
    assert len(table) == 1 and table.loc[0, "oc_pct"] == pytest.approx(5.0 - 0.12 * 10.0)
    assert table.loc[0, "bd_estimated"]  # 0.01 g cm-3 is outside the valid range
    (folder / "nwca2011_siteinfo-meta.csv").write_text("UID,LAT,LON\n1,40,-90\n")
    with pytest.raises(ProfileDataError, match="nwca2011_siteinfo-meta.csv: missing column.*AA_CENTER_LAT"):
        load_nwca2011(folder)
    p = tmp_path / "sodah.csv"
    pd.DataFrame({"lat": [40.0, 40.0, 40.0, 40.0], "long": [-90.0] * 4, "layer_top": [-2, 0, 0, 0], "layer_bot": [0, 10, 10, 10],
                  "lyr_soc": [40.0, 0.02, 0.02, np.nan], "lyr_c_tot": [np.nan, np.nan, np.nan, np.nan], "bd_samp": [np.nan, 1.2, 1.2, 1.1],
                  "control_sample": [True, True, True, False], "data_file": ["f", "Wisconsin DIRT soil", "Wisconsin DIRT soil", "f"]}).to_csv(p, index=False)
    table, report = load_sodah(p)
    _counts_add_up(report)
    assert report.sources["sodah"].dropped == {"not a control row (treatment)": 1, "duplicate row": 1,
                                               "organic horizon above mineral surface (negative layer_top)": 1}
    assert table.loc[0, "oc_pct"] == pytest.approx(2.0)  # g/g -> %
