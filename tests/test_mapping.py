"""socmap map: the run store's schema and values, difference/ensemble layers, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from socmap import store as S
from socmap.clm5.diagnostics import DIAGNOSTICS
from socmap.clm5.parameters import NAMES

pytestmark = pytest.mark.slow


def _cube(run_dir: Path):
    from socmap.data.cube import open_cube
    from socmap.runs import open_run

    return open_cube(open_run(run_dir).data_dir / "cube.zarr")


def _land_cells(ds, n=5, seed=0):
    iy, ix = np.nonzero(ds["land_mask"].values.astype(bool))
    pick = np.random.default_rng(seed).choice(iy.size, n, replace=False)
    return iy[pick], ix[pick]


def _predict(run_dir: Path, iy, ix, **kw):
    """The one cell function at cells (iy, ix) of the run's cube (covariates and forcing from the cube)."""
    from socmap.cells import predict_cells
    from socmap.data.cube import cell_forcing, cell_values
    from socmap.runs import open_run

    run = open_run(run_dir)
    cube = _cube(run_dir)
    cov = cell_values(cube, run.models[0].spec.covariate_names, iy, ix)
    return predict_cells(run.models, cov, cell_forcing(cube, iy, ix), **kw)


def test_store_schema_units_crs(mapped_run, main_store):
    ds = main_store
    covs = list(ds.attrs["covariates"])
    specs = {**S.variable_specs(covs), **S.site_variable_specs()}
    assert set(specs) == set(ds.data_vars)
    for name, spec in specs.items():
        var = ds[name]
        assert var.dims == spec.dims, name
        assert var.attrs["units"] and var.attrs["long_name"] and var.attrs["kind"] in S.KINDS, name
        assert str(var.dtype) == spec.dtype, name
    for p in NAMES:
        assert ds[p].attrs["kind"] == "parameter"
    assert set(DIAGNOSTICS) <= set(ds.data_vars)
    assert ds["soc"].attrs["units"] == "g C m-3" and ds["soc_stock_0_30cm"].attrs["units"] == "kg C m-2"
    assert ds.rio.crs.to_epsg() == 4326
    assert ds["soc_stock_0_30cm"].encoding.get("grid_mapping") == "spatial_ref" or "grid_mapping" in ds["soc_stock_0_30cm"].attrs
    for a in S.REQUIRED_ATTRS:
        assert a in ds.attrs, a
    assert ds.attrs["store_version"] == S.STORE_VERSION == "2" and ds.attrs["crs"] == "EPSG:4326" and ds.attrs["run_name"] == "main"
    from socmap.runs import open_run

    assert ds.attrs["parameters"] == list(open_run(mapped_run).models[0].spec.params) and set(ds.attrs["parameters"]) <= set(NAMES)
    assert ds.attrs["fold_models"] == [f"folds/fold{k}/model.pt" for k in range(3)] and ds.attrs["n_models"] == 3
    assert all((mapped_run / f).is_file() for f in ds.attrs["fold_models"])
    assert Path(ds.attrs["data"]["dir"]).is_absolute() and (Path(ds.attrs["data"]["dir"]) / "cube.zarr").exists()
    assert ds.attrs["encoder"] == "kan"
    assert np.all(np.diff(ds["y"].values) < 0) and np.all(np.diff(ds["x"].values) > 0)
    np.testing.assert_allclose(ds["depth_m"].values[:3], [0.01, 0.04, 0.09], atol=1e-6)
    assert list(ds["layer"].values) == list(range(20))
    assert not (mapped_run / "maps.zarr.partial").exists()
    assert not (mapped_run / "maps.zarr" / S.PROGRESS_FILE).exists()
    rec = json.loads((mapped_run / "map.json").read_text())
    assert rec["complete"] and rec["cells_mapped"] == int(ds["land_mask"].values.sum()) and rec["output_bytes"] > 0


def test_values_equal_the_cell_function(mapped_run, main_store):
    """Each window of the store holds what predict_cells gives for its cells."""
    ds = main_store
    iy, ix = _land_cells(ds, 6)
    ref = _predict(mapped_run, iy, ix).values
    np.testing.assert_allclose(ds["soc"].values[iy, ix], ref["soc"], rtol=2e-6)
    for k in [*S.STOCKS, *NAMES, *DIAGNOSTICS, "default_soc_stock_0_30cm", "default_soc_stock_0_100cm"]:
        np.testing.assert_allclose(ds[k].values[iy, ix], ref[k], rtol=2e-6, err_msg=k)
    cube = _cube(mapped_run)
    for c in ds.attrs["covariates"]:
        np.testing.assert_allclose(ds[c].values[iy, ix], cube[c].values[iy, ix], rtol=1e-6)
    np.testing.assert_array_equal(ds["land_cover"].values, np.where(cube["land_mask"].values, cube["land_cover"].values, 0))


def test_cell_function_matches_the_solver(mapped_run):
    """predict_cells: θ from the mean normalised output, SOC from the steady state, defaults, per-model SOC."""
    from socmap.clm5 import soc_nodes, standard_stocks, steady_state
    from socmap.clm5.parameters import default_theta, to_physical
    from socmap.data.cube import cell_forcing, cell_values
    from socmap.runs import open_run

    run = open_run(mapped_run)
    cube = _cube(mapped_run)
    iy, ix = _land_cells(cube, 4, seed=3)
    cov = cell_values(cube, run.models[0].spec.covariate_names, iy, ix)
    forcing = cell_forcing(cube, iy, ix)
    res = _predict(mapped_run, iy, ix, per_model=True)
    with torch.no_grad():
        p = torch.stack([m(torch.as_tensor(cov, dtype=torch.float32)).to(torch.float64) for m in run.models])
        theta = to_physical(p.mean(0))
        soc = soc_nodes(steady_state(theta, forcing)).numpy()
        dstock = standard_stocks(soc_nodes(steady_state(default_theta(len(iy)), forcing, check_bounds_=False)))
        fold_soc = [soc_nodes(steady_state(to_physical(p[k]), forcing)).numpy() for k in range(len(run.models))]
    np.testing.assert_allclose(res.p_models, p.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(res.values["soc"], soc, rtol=1e-12)
    for j, name in enumerate(NAMES):
        np.testing.assert_allclose(res.values[name], theta[:, j].numpy(), rtol=1e-12)
    for k, v in dstock.items():
        np.testing.assert_allclose(res.values["default_" + k], v.numpy(), rtol=1e-12)
        np.testing.assert_allclose(res.values["diff_default_" + k], res.values[k] - v.numpy(), rtol=1e-12)
    assert res.soc_models.shape == (3, 4, 20)
    np.testing.assert_allclose(res.soc_models, np.stack(fold_soc), rtol=1e-12)
    assert np.abs(res.soc_models[0] - res.soc_models[1]).max() > 0  # the folds differ
    lean = _predict(mapped_run, iy, ix, default=False, diagnostics=False).values
    assert "default_soc_stock_0_30cm" not in lean and not set(DIAGNOSTICS) & set(lean)
    np.testing.assert_array_equal(lean["soc"], res.values["soc"])


def test_site_fold_profiles(mapped_run, main_store):
    """site_soc_fold: every fold model at each training site's cell (site covariates, site latitude)."""
    from socmap.cells import predict_cells
    from socmap.data.cube import cell_forcing, sample_grid
    from socmap.runs import open_run

    ds = main_store
    run = open_run(mapped_run)
    pred = pd.read_csv(mapped_run / "predictions.csv").drop_duplicates("site_id")
    assert ds.sizes["site"] == len(pred) and ds.sizes["model"] == 3
    assert list(ds["model"].values) == ds.attrs["fold_models"]
    assert ds["site_soc_fold"].dims == ("site", "model", "layer") and ds["site_soc_fold"].attrs["kind"] == "site"
    assert ds["site_soc_fold"].attrs["units"] == "g C m-3"
    pick = [0, 7, len(pred) - 1]
    ids = list(ds["site_id"].values)
    cube = _cube(mapped_run)
    for i in pick:
        sid = ids[i]
        row = pred.set_index("site_id").loc[sid]
        np.testing.assert_allclose([ds["site_lon"].values[i], ds["site_lat"].values[i]], [row["lon"], row["lat"]])
        s = sample_grid(cube, [row["lon"]], [row["lat"]])
        cov = np.array([[float(cube[n].values[s.iy[0], s.ix[0]]) for n in ds.attrs["covariates"]]])
        res = predict_cells(run.models, cov, cell_forcing(cube, s.iy, s.ix, np.array([row["lat"]])), per_model=True)
        np.testing.assert_allclose(ds["site_soc_fold"].values[i], res.soc_models[:, 0], rtol=2e-6)
    assert np.isfinite(ds["site_soc_fold"].values).all()


def test_regrid_method_is_an_attribute():
    from socmap.data.cube import CubeError, regrid_method

    assert regrid_method({"regrid": "regenerate", "regrid_producer": "socmap.data.synthetic"}) == ("regenerate", "socmap.data.synthetic")
    assert regrid_method({"regrid": "interpolate", "title": "socmap synthetic CONUS twin", "seed": 0}) == ("interpolate", None)
    assert regrid_method({"title": "anything"}) == ("interpolate", None)
    # twin cubes written before the attribute existed
    assert regrid_method({"title": "socmap synthetic CONUS twin", "seed": 0}) == ("regenerate", "socmap.data.synthetic")
    with pytest.raises(CubeError, match="regrid_producer"):
        regrid_method({"regrid": "regenerate"})
    with pytest.raises(CubeError, match="not 'interpolate'"):
        regrid_method({"regrid": "cubic"})


def test_stocks_are_integrated_layers(main_store):
    from socmap.clm5 import stock_kg_m2

    ds = main_store
    land = ds["land_mask"].values.astype(bool)
    soc = torch.as_tensor(ds["soc"].values[land].astype(np.float64))
    np.testing.assert_allclose(ds["soc_stock_0_30cm"].values[land], stock_kg_m2(soc, 0.0, 0.3).numpy(), rtol=1e-5)
    np.testing.assert_allclose(ds["soc_stock_0_100cm"].values[land], stock_kg_m2(soc, 0.0, 1.0).numpy(), rtol=1e-5)
    assert (ds["soc_stock_0_100cm"].values[land] > ds["soc_stock_0_30cm"].values[land]).all()


def test_default_and_difference_maps(main_store):
    ds = main_store
    land = ds["land_mask"].values.astype(bool)
    for s in S.STOCKS:
        diff = ds["diff_default_" + s].values
        np.testing.assert_allclose(diff[land], (ds[s].values - ds["default_" + s].values)[land], rtol=1e-5, atol=1e-5)
        assert ds["diff_default_" + s].attrs["kind"] == "difference"
        assert np.nanstd(ds["default_" + s].values) > 0  # one parameter set, but forcing varies
        assert np.nanmax(np.abs(diff)) > 0


def test_water_cells_are_nan(main_store):
    ds = main_store
    land = ds["land_mask"].values.astype(bool)
    assert 0 < land.sum() < land.size
    for name, var in ds.data_vars.items():
        if var.dtype == np.float32 and var.attrs["kind"] != "site":
            v = var.values
            assert np.isnan(v[~land]).all(), name
            assert np.isfinite(v[land]).all(), name
    assert (ds["land_cover"].values[~land] == 0).all() and (ds["land_cover"].values[land] > 0).all()


def test_site_residuals(mapped_run):
    df = pd.read_csv(mapped_run / "site_residuals.csv")
    assert list(df.columns) == ["site_id", "lon", "lat", "fold", "depth_m", "soc_obs_g_m3", "soc_sim_g_m3", "residual_g_m3", "log_ratio"]
    np.testing.assert_allclose(df["residual_g_m3"], df["soc_sim_g_m3"] - df["soc_obs_g_m3"])
    np.testing.assert_allclose(df["log_ratio"], np.log(df["soc_sim_g_m3"] / df["soc_obs_g_m3"]))


def test_ensemble_and_compare(run_copy, mapped_run, main_store):
    from socmap.cells import predict_cells
    from socmap.data.cube import cell_forcing
    from socmap.mapping import load_models, map_run
    from socmap.store import open_store

    run = run_copy("ens")

    rec = map_run(run, scheduler="synchronous", chunks=16, ensemble=True, compare=str(mapped_run), progress=False)
    assert rec["complete"]
    ds = open_store(run).load()
    land = ds["land_mask"].values.astype(bool)
    for v in ("soc_std", "soc_stock_0_30cm_std", "soc_stock_0_100cm_std", "tau4s3_std"):
        assert ds[v].attrs["kind"] == "uncertainty"
        assert (ds[v].values[land] >= 0).all()
    assert ds["tau4s3_std"].values[land].max() > 0
    # mean of per-fold maps, computed fold by fold on every land cell
    iy, ix = np.nonzero(land)
    cube = _cube(run)
    models = load_models(run)
    cov = np.column_stack([cube[c].values[iy, ix] for c in ds.attrs["covariates"]])
    forcing = cell_forcing(cube, iy, ix)
    per_fold = [predict_cells([m], cov, forcing).values for m in models]
    for k in ("soc_stock_0_30cm", "soc_stock_0_100cm", "tau4s3", "cue"):
        folds = np.stack([f[k] for f in per_fold])
        np.testing.assert_allclose(ds[k].values[iy, ix], folds.mean(0), rtol=1e-5)
        if k != "cue":
            np.testing.assert_allclose(ds[k + "_std"].values[iy, ix], folds.std(0, ddof=1), rtol=1e-4, atol=1e-6)
    soc_folds = np.stack([f["soc"] for f in per_fold])
    np.testing.assert_allclose(ds["soc"].values[iy, ix], soc_folds.mean(0), rtol=1e-5)
    # --compare: this run minus the other
    for s in S.STOCKS:
        np.testing.assert_allclose(ds["diff_compare_" + s].values[land], (ds[s].values - main_store[s].values)[land], rtol=1e-5, atol=1e-6)
    assert np.abs(ds["diff_compare_soc_stock_0_30cm"].values[land]).max() > 0


def test_compare_other_grid_or_missing_is_an_error(run_copy, mapped_run, tmp_path):
    from socmap.mapping import MappingError, map_run

    run = run_copy("coarse")
    with pytest.raises(MappingError, match="same --resolution"):
        map_run(run, scheduler="synchronous", resolution=2.0, compare=str(mapped_run), progress=False)
    assert not (run / "maps.zarr").exists() and not (run / "maps.zarr.partial").exists()
    with pytest.raises(S.StoreError, match="no run store"):
        map_run(run, scheduler="synchronous", compare=str(tmp_path), progress=False)


def test_resolution_regenerates_synthetic_landscape(run_copy):
    from socmap.mapping import map_run

    run = run_copy("coarse2")
    rec = map_run(run, scheduler="synchronous", resolution=2.0, chunks=64, progress=False)
    ds = S.open_store(run)
    assert ds.sizes["y"] == 13 and ds.sizes["x"] == 30 and ds.attrs["resolution_deg"] == 2.0
    assert rec["cells_mapped"] == int(ds["land_mask"].values.sum()) > 0
    assert (run / "cache" / "cube_2deg.zarr").exists()
    from socmap.data.cube import open_cube

    regridded = open_cube(run / "cache" / "cube_2deg.zarr")
    assert regridded.attrs["regridded_from"].startswith("1.0 deg, regenerated (synthetic twin, seed 0)")


def test_legacy_twin_cube_regenerates_the_same(tiny_run, run_copy):
    """A twin cube written before the ``regrid`` attribute (title + seed only) regrids exactly as a new one."""
    from socmap.data.cube import open_cube, regrid_cube

    cube = _cube(tiny_run).load()
    assert cube.attrs["regrid"] == "regenerate"
    legacy = cube.copy()
    legacy.attrs = {k: v for k, v in cube.attrs.items() if k not in ("regrid", "regrid_producer")}
    out = tiny_run.parent / "regrid-test"
    covs = ["mat_c", "clay_pct"]
    a = open_cube(regrid_cube(cube, 2.0, covs, out / "new.zarr")).load()
    b = open_cube(regrid_cube(legacy, 2.0, covs, out / "legacy.zarr")).load()
    assert "regenerated" in b.attrs["regridded_from"]
    for v in [*covs, "air_temp_c", "precip_mm", "land_cover", "land_mask"]:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)


def test_resume_after_stop_hook(run_copy, main_store, map_chunks):
    from socmap.mapping import MapInterrupted, map_run

    run = run_copy("stopped")
    with pytest.raises(MapInterrupted):
        map_run(run, scheduler="synchronous", chunks=map_chunks, stop_after=3, progress=False)
    assert not (run / "maps.zarr").exists()
    progress = json.loads((run / "maps.zarr.partial" / S.PROGRESS_FILE).read_text())
    assert len(progress["chunks_done"]) == 3
    with pytest.raises(S.StoreError, match="interrupted"):
        S.open_store(run)
    rec = map_run(run, scheduler="synchronous", chunks=map_chunks, progress=False)
    assert rec["chunks_resumed"] == 3 and rec["chunks_run"] == rec["chunks_total"] - 3
    ds = S.open_store(run).load()
    for k in ("soc", "soc_stock_0_100cm", "tau4s3", "diff_default_soc_stock_0_30cm"):
        np.testing.assert_allclose(ds[k].values, main_store[k].values, rtol=1e-6, equal_nan=True)


def test_resume_after_killed_process(run_copy, main_store, map_chunks):
    from socmap.mapping import map_run

    run = run_copy("killed")
    env = {**os.environ, "SOCMAP_MAP_TEST_DELAY_S": "0.3"}
    cmd = [sys.executable, "-m", "socmap.cli", "map", "--run", str(run), "--chunks", str(map_chunks), "--scheduler", "synchronous"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    progress_file = run / "maps.zarr.partial" / S.PROGRESS_FILE
    done = 0
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if progress_file.exists():
                try:
                    done = len(json.loads(progress_file.read_text())["chunks_done"])
                except ValueError:
                    done = 0
                if done >= 2:
                    break
            assert proc.poll() is None, "socmap map finished before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert done >= 2
    assert not (run / "maps.zarr").exists(), "a killed run must not leave a store that looks complete"
    with pytest.raises(S.StoreError):
        S.open_store(run)
    done = len(json.loads(progress_file.read_text())["chunks_done"])
    rec = map_run(run, scheduler="synchronous", chunks=map_chunks, progress=False)
    assert rec["chunks_resumed"] == done and rec["chunks_run"] == rec["chunks_total"] - done
    ds = S.open_store(run).load()
    for k in ("soc", "soc_stock_0_30cm", "cue", "default_soc_stock_0_100cm"):
        np.testing.assert_allclose(ds[k].values, main_store[k].values, rtol=1e-6, equal_nan=True)


def test_store_version_mismatch_is_a_clear_error(mapped_run, tmp_path):
    import shutil

    import zarr

    dst = tmp_path / "old" / "maps.zarr"
    shutil.copytree(mapped_run / "maps.zarr", dst)
    g = zarr.open_group(str(dst), mode="r+")
    g.attrs["store_version"] = "0"
    zarr.consolidate_metadata(str(dst))
    with pytest.raises(S.StoreError, match="version 0.*reads version 2"):
        S.open_store(dst.parent)
    g.attrs["store_version"] = "1"
    zarr.consolidate_metadata(str(dst))
    with pytest.raises(S.StoreError, match="version 1.*re-run `socmap map"):
        S.open_store(dst.parent)
    with pytest.raises(S.StoreError, match="no run store"):
        S.open_store(tmp_path / "nothing")


def test_stale_partial_is_discarded(run_copy, map_chunks):
    """A partial store from another store version or other arguments is not resumed."""
    from socmap.mapping import map_run

    run = run_copy("stale")
    partial = run / "maps.zarr.partial"
    partial.mkdir()
    (partial / S.PROGRESS_FILE).write_text(json.dumps({"store_version": "0", "fingerprint": "x", "chunks_done": {"0_0": 1}}))
    rec = map_run(run, scheduler="synchronous", chunks=map_chunks, progress=False)
    assert rec["chunks_resumed"] == 0 and rec["complete"] and rec["chunks_run"] == rec["chunks_total"]
    assert not partial.exists()


def _run_with_cube(run_copy, name, cube):
    """A run copy whose data folder holds ``cube`` (run.json points there)."""
    import warnings

    run = run_copy(name)
    data = run.parent / f"{name}-data"
    data.mkdir(exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube.to_zarr(data / "cube.zarr", mode="w")
    rec = json.loads((run / "run.json").read_text())
    rec["data"]["dir"] = str(data)
    (run / "run.json").write_text(json.dumps(rec))
    return run


def test_bad_cubes_are_clear_errors(tiny_run, run_copy):
    from socmap.mapping import MappingError, map_run

    cube = _cube(tiny_run).load()
    for v in cube.data_vars:
        cube[v].encoding.clear()
    run = _run_with_cube(run_copy, "nocov", cube.drop_vars("clay_pct"))
    with pytest.raises(MappingError, match="clay_pct"):
        map_run(run, scheduler="synchronous", progress=False)
    assert not (run / "maps.zarr.partial").exists()
    run = _run_with_cube(run_copy, "noclim", cube.drop_vars("precip_mm"))
    with pytest.raises(MappingError, match="precip_mm"):
        map_run(run, scheduler="synchronous", progress=False)
    run = _run_with_cube(run_copy, "albers", cube.rio.write_crs("EPSG:5070"))
    with pytest.raises(MappingError, match="EPSG:4326"):
        map_run(run, scheduler="synchronous", progress=False)


def test_unwritable_output_is_a_clear_error(tiny_run, tmp_path):
    from socmap.mapping import MappingError, map_run

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MappingError, match="does not exist|cannot write"):
        map_run(tiny_run, scheduler="synchronous", out=str(blocker / "maps.zarr"), progress=False)
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # root ignores permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(MappingError, match="cannot write"):
                map_run(tiny_run, scheduler="synchronous", out=str(ro / "maps.zarr"), progress=False)
        finally:
            ro.chmod(0o755)


def test_cli_map_summary(run_copy):
    from typer.testing import CliRunner

    from socmap.cli import app

    run = run_copy("cli")
    res = CliRunner().invoke(app, ["map", "--run", str(run), "--chunks", "32", "--scheduler", "synchronous"])
    assert res.exit_code == 0, res.output
    assert "cells/s" in res.output and "MB" in res.output and (run / "maps.zarr").exists()
    res = CliRunner().invoke(app, ["map", "--run", str(run / "nope")])
    assert res.exit_code == 2 and "not a finished socmap run" in " ".join(res.output.split())


def test_baseline_run_maps_without_parameters_and_compares_with_the_hybrid(tiny_run, mapped_run, main_store, map_chunks):
    """A random-forest run maps (SOC at the nodes, stocks, no parameter layers) and --compare
    against the hybrid gives rf − hybrid stock differences; the hybrid compares back."""
    from socmap.cells import predict_cells
    from socmap.data.cube import cell_values
    from socmap.mapping import map_run
    from socmap.runs import open_run
    from socmap.store import open_store
    from socmap.train import train
    from socmap.train_config import load_config

    rf = tiny_run.parent / "rf"
    if not (rf / "run.json").exists():
        train(load_config(data_dir=str(tiny_run.parent.parent / "data"), folds=3, encoder="rf", rf_trees=8), rf, progress=False)
    map_run(rf, scheduler="synchronous", chunks=map_chunks, compare=str(mapped_run), progress=False)
    ds = open_store(rf).load()
    assert ds.attrs["encoder"] == "rf" and list(ds.attrs["parameters"]) == [] and ds.attrs["n_models"] == 3
    assert not {"tau4s3", "cue", *NAMES, *DIAGNOSTICS} & set(ds.data_vars)
    assert list(ds.attrs["fold_models"]) == [f"folds/fold{k}/model.joblib" for k in range(3)]
    land = ds["land_mask"].values.astype(bool)
    assert np.isfinite(ds["soc_stock_0_100cm"].values[land]).all() and (ds["soc"].values[land] > 0).all()
    # the store's values are the cell function's (mean of the fold forests at the node depths)
    iy, ix = _land_cells(ds)
    run = open_run(rf)
    cov = cell_values(_cube(rf), run.covariates, iy, ix)
    res = predict_cells(run.predictors, cov, None, default=False).values
    np.testing.assert_allclose(ds["soc_stock_0_30cm"].values[iy, ix], res["soc_stock_0_30cm"], rtol=1e-5)
    for s in S.STOCKS:
        np.testing.assert_allclose(ds["diff_compare_" + s].values[land], (ds[s].values - main_store[s].values)[land], rtol=1e-5, atol=1e-6)
    assert ds["site_soc_fold"].shape[1] == 3 and np.isfinite(ds["site_soc_fold"].values).any()


def test_damaged_run_is_an_error_and_allow_partial_is_recorded(run_copy, map_chunks):
    from socmap.mapping import map_run
    from socmap.runs import RunError
    from socmap.store import open_store

    run = run_copy("partial")
    (run / "folds" / "fold1" / "model.pt").unlink()
    with pytest.raises(RunError, match=r"fold1/model.pt: fold model is missing; re-train the missing or damaged folds"):
        map_run(run, scheduler="synchronous", chunks=map_chunks, progress=False)
    assert not (run / "maps.zarr").exists() and not (run / "maps.zarr.partial").exists()
    map_run(run, scheduler="synchronous", chunks=map_chunks, allow_partial=True, max_chunks=1, progress=False)
    attrs = json.loads((run / "maps.zarr.partial" / ".zattrs").read_text())
    assert attrs["partial_ensemble"] == 1 and attrs["n_models"] == 2
    assert attrs["fold_models"] == ["folds/fold0/model.pt", "folds/fold2/model.pt"]
    assert attrs["fold_models_missing"] == ["folds/fold1/model.pt"]
