"""The synthetic CONUS twin, the CONUS grid/land mask and the SiteData container."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from socmap.clm5.parameters import LOWER, NAMES, SUBSETS, UPPER
from socmap.data.cube import cell_forcing, open_cube, sample_grid
from socmap.data.grid import conus_grid, grid_shape
from socmap.data.sites import SiteData, layer_bounds, load_synthetic, profiles_to_arrays
from socmap.data.synthetic import (
    NUMERIC_COVARIATES,
    SynthConfig,
    build,
    simulate_soc,
    write_synthetic,
)
from socmap.truth import true_p_from_covariates, truth_edge_function

RES = 1.0
N_SITES = 100


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "twin"
    write_synthetic(out, SynthConfig(resolution_deg=RES, n_sites=N_SITES, seed=0, noise=0.0))
    return out


@pytest.fixture(scope="module")
def result():
    return build(SynthConfig(resolution_deg=RES, n_sites=N_SITES, seed=0, noise=0.1))


def _key_arrays(r):
    cube = r.cube
    out = {k: cube[k].values for k in (*NUMERIC_COVARIATES, "land_cover", "air_temp_c", "precip_mm", "true_p_efolding")}
    out["sites"] = r.sites.drop(columns="site_id").to_numpy(np.float64)
    out["soc"] = r.profiles["soc_g_m3"].to_numpy()
    out["depth"] = r.profiles["depth_m"].to_numpy()
    return out


def test_determinism(result):
    again = _key_arrays(build(SynthConfig(resolution_deg=RES, n_sites=N_SITES, seed=0, noise=0.1)))
    first = _key_arrays(result)
    for k, v in first.items():
        assert v.tobytes() == again[k].tobytes(), k
    other = _key_arrays(build(SynthConfig(resolution_deg=RES, n_sites=N_SITES, seed=1, noise=0.1)))
    for k in ("mat_c", "clay_pct", "true_p_efolding", "soc", "sites"):
        a, b = first[k], other[k]
        assert a.shape != b.shape or not np.array_equal(a, b, equal_nan=True), k


def test_truth_in_bounds_and_exact_range(result):
    cube, truth = result.cube, result.truth
    land = cube["land_mask"].values
    assert truth["targets"] == list(SUBSETS["four"])
    for j, name in enumerate(NAMES):
        p = cube[f"true_p_{name}"].values[land]
        theta = cube[f"true_{name}"].values[land]
        assert np.all(np.isfinite(p)) and np.all(np.isnan(cube[f"true_p_{name}"].values[~land]))
        assert np.all(theta >= LOWER[j]) and np.all(theta <= UPPER[j]), name
        if name in truth["targets"]:
            assert p.min() == pytest.approx(0.2, abs=1e-12) and p.max() == pytest.approx(0.8, abs=1e-12), name
            assert p.min() >= 0.2 and p.max() <= 0.8
            edges = truth["parameters"][name]["edges"]
            assert len({e["covariate"] for e in edges}) == 2
            assert sum(e["importance"] for e in edges) == pytest.approx(1.0)
            # the stored edges reproduce the field
            total = sum(truth_edge_function(truth, name, e["covariate"], cube[e["covariate"]].values[land]) for e in edges)
            np.testing.assert_allclose(total, p, atol=1e-12)
        else:
            assert np.all(p == 0.5), name
    # sites table agrees with the functions applied to the site covariates
    np.testing.assert_allclose(true_p_from_covariates(truth, result.sites),
                               result.sites[[f"true_p_{n}" for n in NAMES]].to_numpy(), atol=1e-12)
    # a covariate that is not an edge contributes nothing
    unused = next(c for c in NUMERIC_COVARIATES if c not in {e["covariate"] for e in truth["parameters"]["tau4s3"]["edges"]})
    assert np.all(truth_edge_function(truth, "tau4s3", unused, np.linspace(0, 100, 5)) == 0)


def test_all_parameters_flag():
    r = build(SynthConfig(resolution_deg=2.0, n_sites=20, seed=3, params="all"))
    land = r.cube["land_mask"].values
    assert r.truth["targets"] == list(NAMES)
    for name in NAMES:
        p = r.cube[f"true_p_{name}"].values[land]
        assert p.min() == pytest.approx(0.2, abs=1e-12) and p.max() == pytest.approx(0.8, abs=1e-12)


def test_covariates_look_real(result):
    cube = result.cube
    land = cube["land_mask"].values
    lat2, lon2 = np.meshgrid(cube["y"].values, cube["x"].values, indexing="ij")
    lat, lon = lat2[land], lon2[land]
    v = {k: cube[k].values[land] for k in NUMERIC_COVARIATES}
    assert len(NUMERIC_COVARIATES) >= 10
    for k, arr in v.items():
        assert np.all(np.isfinite(arr)), k
        assert np.all(np.isnan(cube[k].values[~land])), k
        assert cube[k].attrs["units"] and cube[k].attrs["long_name"], k
    low = v["elevation_m"] < 500
    assert np.corrcoef(lat[low], v["mat_c"][low])[0, 1] < -0.7  # colder to the north
    east, southwest = lon > -90, (lon < -105) & (lat < 40)
    assert v["map_mm"][east].mean() > 2 * v["map_mm"][southwest].mean()
    nw_coast = (lon < -122) & (lat > 43)
    assert v["map_mm"][nw_coast].mean() > 1500
    rockies = (lon > -110) & (lon < -105) & (lat > 37) & (lat < 45)
    assert v["elevation_m"][rockies].mean() > 1500 > v["elevation_m"][east].mean() + 1000
    assert v["ph"][east].mean() < 6.5 < v["ph"][southwest].mean()
    assert np.all((v["clay_pct"] + v["sand_pct"] <= 100) & (v["clay_pct"] > 0) & (v["sand_pct"] > 0))
    assert np.all((v["bulk_density_g_cm3"] > 0.8) & (v["bulk_density_g_cm3"] < 1.8))
    assert np.all(v["npp_g_m2_yr"] > 0) and np.all(v["aridity_index"] > 0)
    lc = cube["land_cover"].values[land]
    classes = set(np.unique(lc).tolist())
    assert {4, 7, 10, 12} <= classes and classes <= set(range(1, 17))
    assert np.all(cube["land_cover"].values[~land] == 0)
    forest = np.isin(lc, [1, 4, 5])
    assert forest[east].mean() > 0.4 and (lc[southwest] == 7).mean() > 0.4


def test_cube_store_has_crs_and_cf_attrs(synth_dir):
    cube = open_cube(synth_dir / "cube.zarr")
    assert cube.rio.crs.to_epsg() == 4326
    assert cube["y"].values[0] > cube["y"].values[-1]
    assert cube["air_temp_c"].dims == ("month", "y", "x") and cube.sizes["month"] == 12
    for name in (*NUMERIC_COVARIATES, "air_temp_c", "precip_mm", "true_p_tau4s3", "true_tau4s3"):
        assert "units" in cube[name].attrs and "long_name" in cube[name].attrs, name
    assert (cube.sizes["y"], cube.sizes["x"]) == grid_shape(RES)
    meta = json.loads((synth_dir / "synth.json").read_text())
    assert meta["seed"] == 0 and meta["counts"]["sites_written"] + meta["counts"]["sites_dropped_nonfinite"] == N_SITES
    assert {"torch", "numpy", "xarray"} <= set(meta["versions"])
    truth = json.loads((synth_dir / "truth.json").read_text())
    for name in truth["targets"]:
        for e in truth["parameters"][name]["edges"]:
            assert {"covariate", "type", "a", "b", "c", "d", "x_min", "x_max", "importance"} <= set(e)


def test_forcing_plausible_over_whole_grid(result):
    cube = result.cube
    iy, ix = np.nonzero(cube["land_mask"].values)
    f = cell_forcing(cube, iy, ix)
    f.validate()
    t = f.soil_temp_k
    assert float(t.min()) > 273.15 - 30 and float(t.max()) < 273.15 + 40
    for s in (f.water_scalar, f.oxygen_scalar, f.nitrogen_scalar):
        assert float(s.min()) >= 0 and float(s.max()) <= 1
    assert bool((f.inputs_g_m2_yr.sum(1) > 0).all()) and bool((f.inputs_g_m2_yr >= 0).all())
    assert bool((f.alt_m >= 0).all())
    assert f.batch_size == iy.size



def test_forcing_of_a_loaded_window_is_the_lazy_cubes(result):
    """cell_forcing's NumPy gather (in_memory=True, a loaded window) equals xarray's vectorised isel."""
    cube = result.cube
    win = cube.isel(y=slice(2, 14), x=slice(3, 30)).load()
    iy, ix = np.nonzero(np.asarray(win["land_mask"].values, bool))
    assert iy.size > 20
    fast, lazy = cell_forcing(win, iy, ix, in_memory=True), cell_forcing(win, iy, ix)
    for name, v in fast.to_numpy().items():
        np.testing.assert_array_equal(v, lazy.to_numpy()[name], err_msg=name)

def test_land_mask_known_places():
    ds = conus_grid(0.25)
    lon = [-104.99, -87.63, -84.39, -124.9, -90.0, -70.0, -130.0, -87.0]
    lat = [39.74, 41.88, 33.75, 36.0, 27.0, 35.0, 40.0, 43.5]
    s = sample_grid(ds, lon, lat)
    assert list(s.status) == ["ok", "ok", "ok", "water", "water", "water", "outside grid", "water"]
    assert s.iy[-2] == -1 and s.ix[-2] == -1
    assert ds["x"].values[s.ix[0]] == pytest.approx(-104.875) and ds["y"].values[s.iy[0]] == pytest.approx(39.625)
    assert ds.rio.crs.to_epsg() == 4326
    frac = float(ds["land_mask"].mean())
    assert 0.5 < frac < 0.65  # CONUS fills a bit over half of its bounding box


def test_synthetic_soc_equals_solver_at_truth(synth_dir):
    sd = load_synthetic(synth_dir)
    assert isinstance(sd, SiteData) and len(sd) == N_SITES
    assert sd.covariates.shape == (N_SITES, len(NUMERIC_COVARIATES)) and sd.covariates.dtype == np.float64
    assert sd.covariate_names == list(NUMERIC_COVARIATES) and sd.covariate_units[0] == "degC"
    assert set(sd.covariate_range) == set(NUMERIC_COVARIATES)
    rerun = simulate_soc(sd.true_p, sd.forcing, sd.depth_m)
    obs = np.isfinite(sd.depth_m)
    assert np.array_equal(np.isfinite(sd.soc_g_m3), obs)
    np.testing.assert_allclose(rerun[obs], sd.soc_g_m3[obs], rtol=1e-10)
    prof = pd.read_csv(synth_dir / "profiles.csv")
    np.testing.assert_array_equal(prof["soc_g_m3"], prof["soc_true_g_m3"])  # noise 0
    assert set(prof["source"]) == {"synthetic"}
    sub = sd.subset(np.arange(N_SITES) % 3 == 0)
    assert len(sub) == len(range(0, N_SITES, 3)) and sub.forcing.batch_size == len(sub)
    np.testing.assert_array_equal(sub.true_p, sd.true_p[::3])


def test_noise_is_lognormal(result):
    prof = result.profiles
    ratio = np.log(prof["soc_g_m3"] / prof["soc_true_g_m3"])
    assert abs(ratio.mean()) < 0.03 and 0.08 < ratio.std() < 0.12


def test_profile_depths(result):
    prof = result.profiles
    assert np.all(prof["top_m"] >= 0) and np.all(prof["bottom_m"] <= 3.0)
    assert np.all(prof["bottom_m"] > prof["top_m"])
    np.testing.assert_allclose(prof["depth_m"], 0.5 * (prof["top_m"] + prof["bottom_m"]))
    for _, g in prof.groupby("site_id"):
        assert 3 <= len(g) <= 10
        assert g["top_m"].iloc[0] == 0.0
        assert np.all(np.diff(g["depth_m"].to_numpy()) > 0)
        np.testing.assert_allclose(g["top_m"].to_numpy()[1:], g["bottom_m"].to_numpy()[:-1])
    assert prof.groupby("site_id")["bottom_m"].max().median() <= 1.5
    assert np.all(prof["soc_g_m3"] > 0)


def test_site_locations_on_land(result):
    s = result.sites
    ds = conus_grid(RES)
    assert np.all(sample_grid(ds, s["lon"], s["lat"]).status == "ok")


def test_refuses_to_overwrite_and_cli(tmp_path):
    from typer.testing import CliRunner

    from socmap.cli import app

    out = tmp_path / "twin"
    out.mkdir()
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_synthetic(out, SynthConfig(resolution_deg=2.0, n_sites=5))
    runner = CliRunner()
    res = runner.invoke(app, ["synth", "--out", str(out), "--resolution", "2", "--sites", "5"])
    assert res.exit_code == 2 and "already exists" in " ".join(res.output.split())
    res = runner.invoke(app, ["synth", "--out", str(out), "--resolution", "2", "--sites", "5", "--overwrite",
                              "--params", "tau4s3,q10"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "truth.json").read_text())["targets"] == ["tau4s3", "q10"]
    assert not list(tmp_path.glob("twin.tmp-*")) and not list(tmp_path.glob("twin.old-*"))


def test_profiles_to_arrays_ragged():
    prof = pd.DataFrame({
        "site_id": ["b", "a", "a", "b", "zz"],
        "depth_m": [0.5, 0.3, 0.1, 0.05, 1.0],
        "soc_g_m3": [1.0, 2.0, 3.0, 4.0, 5.0],
    })
    d, s = profiles_to_arrays(prof, ["a", "b", "c"])
    assert d.shape == (3, 2)
    np.testing.assert_array_equal(d[0], [0.1, 0.3])
    np.testing.assert_array_equal(s[1], [4.0, 1.0])
    assert np.all(np.isnan(d[2]))


def test_layer_bounds_follow_the_depth_order():
    prof = pd.DataFrame({
        "site_id": ["b", "a", "a", "b"],
        "top_m": [0.3, 0.2, 0.0, 0.0], "bottom_m": [0.7, 0.4, 0.2, 0.1],
        "soc_g_m3": [1.0, 2.0, 3.0, 4.0],
    })
    d, _ = profiles_to_arrays(prof, ["a", "b"])
    top, bottom = layer_bounds(prof, ["a", "b"])
    np.testing.assert_array_equal(top, [[0.0, 0.2], [0.0, 0.3]])
    np.testing.assert_array_equal(bottom, [[0.2, 0.4], [0.1, 0.7]])
    np.testing.assert_allclose(d, 0.5 * (top + bottom))
    assert layer_bounds(prof.drop(columns=["top_m"]), ["a", "b"]) == (None, None)


def test_simulate_reports_nonfinite_as_nan(result):
    cube = result.cube
    iy, ix = np.nonzero(cube["land_mask"].values)
    f = cell_forcing(cube, iy[:3], ix[:3])
    p = np.full((3, len(NAMES)), 0.5)
    bad = f.replace(inputs_g_m2_yr=torch.where(torch.arange(3)[:, None] == 1, torch.nan, f.inputs_g_m2_yr))
    depth = np.array([[0.1, 0.2]] * 3)
    with pytest.raises(ValueError):  # the solver validates its inputs: bad forcing is caught early
        simulate_soc(p, bad, depth)
    out = simulate_soc(p, f, depth)
    assert np.all(np.isfinite(out))
