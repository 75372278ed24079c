"""Small run folders for the dashboard tests (and for trying the dashboard by hand).

``build_run`` makes a tiny real run: the synthetic twin at 1°, a 2-epoch KAN (or MLP) with 3 folds,
then the run folder in the layout of the run-folder contract (schema version 2): ``run.json``
with ``schema_version``, the absolute ``data.dir``, ``parameters``, ``encoder`` and ``fold_models``;
the run's ``sites.csv`` and ``truth.json``; ``maps.zarr`` with the version-2 attrs, the gridded
variables (dims (y, x[, layer]), y descending, float32, NaN off land, ``kind`` attributes) and the
per-site fold profiles ``site_soc_fold`` [site, model, layer]; ``site_residuals.csv``; and
``kan_curves.nc`` (:func:`socmap.kan_curves.write_kan_curves`, as ``socmap map`` writes it). The store
is written here directly, on purpose without ``socmap.mapping``: the dashboard tests must not
depend on it. Training may already write the run.json fields; they are only filled when absent.

``upsample_store`` writes a larger store (e.g. 0.05°) from a small one by nearest-neighbour
resampling onto the CONUS land mask at that resolution: realistic sizes for timing the browser.

``build_scenario`` runs ``socmap scenario`` (+2 °C, a 5-year transient ramped over 3 years, with
sensitivities) on such a run: ``runs/R/scenarios/warm2`` for the Scenarios tab.

By hand: ``python tests/dashboard_fixtures.py /tmp/dash`` → /tmp/dash/runs/{kan,kan-005}.
"""

from __future__ import annotations

import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

LAYERS = 20
SCHEMA_VERSION = 2


def _attrs(units: str, long_name: str, kind: str) -> dict:
    return {"units": units, "long_name": long_name, "kind": kind}


def write_site_residuals(run_dir: Path) -> Path:
    pred = pd.read_csv(run_dir / "predictions.csv")
    pred["residual_g_m3"] = pred["soc_sim_g_m3"] - pred["soc_obs_g_m3"]
    with np.errstate(all="ignore"):
        pred["log_ratio"] = np.log(pred["soc_sim_g_m3"] / pred["soc_obs_g_m3"])
    out = run_dir / "site_residuals.csv"
    pred.to_csv(out, index=False)
    return out


def complete_run_folder(run_dir: Path) -> dict:
    """Fill what the contract asks of training into ``run_dir`` when training did not write it:
    the run.json fields, the run's sites.csv (site_id, lon, lat, fold, covariates, true_p_*)
    and truth.json. Returns the run record."""
    from socmap.clm5.parameters import resolve_subset

    record = json.loads((run_dir / "run.json").read_text())
    data_dir = Path(record["data"]["dir"]).resolve()
    record["schema_version"] = SCHEMA_VERSION
    record["data"]["dir"] = str(data_dir)
    record["data"].setdefault("kind", "synthetic" if (data_dir / "truth.json").exists() else "real")
    record.setdefault("parameters", list(resolve_subset(record["config"]["params"])))
    record.setdefault("encoder", record["config"]["encoder"])
    record.setdefault("fold_models", [str(p.relative_to(run_dir)) for p in sorted(run_dir.glob("folds/fold*/model.pt"))])
    (run_dir / "run.json").write_text(json.dumps(record, indent=1))
    if not (run_dir / "sites.csv").exists():
        folds = pd.read_csv(run_dir / "predictions.csv").groupby("site_id")["fold"].first()
        sites = pd.read_csv(data_dir / "sites.csv").set_index("site_id").loc[folds.index]
        sites["fold"] = folds
        true_p = [c for c in sites if c.startswith("true_p_")]
        sites[["lon", "lat", "fold", *record["data"]["covariates"], *true_p]].reset_index().to_csv(run_dir / "sites.csv", index=False)
    if (data_dir / "truth.json").exists() and not (run_dir / "truth.json").exists():
        shutil.copy2(data_dir / "truth.json", run_dir / "truth.json")
    return record


def write_store_from_model(run_dir: str | Path) -> Path:
    """Fill ``run_dir/maps.zarr`` from the run's fold ensemble over its cube's land cells, and
    the per-site SOC of every fold model at the sites' own covariates and cells."""
    import rioxarray  # noqa: F401
    import torch
    import xarray as xr

    import socmap
    from socmap.clm5 import bulk_diagnostics, prepare_forcing, soc_nodes, standard_stocks, steady_state
    from socmap.clm5.diagnostics import DIAGNOSTICS
    from socmap.clm5.grid import INTERFACE_BOTTOM_M, INTERFACE_TOP_M, NODE_M
    from socmap.clm5.parameters import DEFAULT, NAMES, PARAMETERS, to_physical
    from socmap.data.cube import cell_forcing, open_cube, sample_grid
    from socmap.data.synthetic import COVARIATES
    from socmap.runs import open_run
    from socmap.store import STORE_VERSION

    run_dir = Path(run_dir)
    record = complete_run_folder(run_dir)
    run = open_run(run_dir)
    cube = open_cube(Path(record["data"]["dir"]) / "cube.zarr")
    mask = cube["land_mask"].values.astype(bool)
    iy, ix = np.nonzero(mask)
    names = run.models[0].spec.covariate_names
    cov = np.column_stack([cube[n].values[iy, ix].astype(np.float64) for n in names])
    ok = np.isfinite(cov).all(1)
    iy, ix, cov = iy[ok], ix[ok], cov[ok]
    forcing = cell_forcing(cube, iy, ix)
    prepared = prepare_forcing(forcing)
    x = torch.as_tensor(cov, dtype=torch.float32)
    with torch.no_grad():
        p_folds = torch.stack([m(x).to(torch.float64) for m in run.models])  # [F, B, 21]
        theta = to_physical(p_folds.mean(0))
        pools = steady_state(theta, prepared)
        soc = soc_nodes(pools)
        stocks = standard_stocks(soc)
        diag = bulk_diagnostics(theta, prepared, pools)
        fold_stocks = [standard_stocks(soc_nodes(steady_state(to_physical(p), prepared))) for p in p_folds]
        theta_default = torch.as_tensor(DEFAULT, dtype=torch.float64).expand(len(iy), -1).clone()
        default_stocks = standard_stocks(soc_nodes(steady_state(theta_default, prepared, check_bounds_=False)))

    # every fold model at every site: the site's own covariates, the forcing of its cell
    sites = pd.read_csv(run_dir / "sites.csv")
    where = sample_grid(cube, sites["lon"].to_numpy(), sites["lat"].to_numpy())
    on = where.status == "ok"
    site_soc = np.full((len(sites), len(run.models), LAYERS), np.nan, np.float32)
    site_forcing = prepare_forcing(cell_forcing(cube, where.iy[on], where.ix[on], sites["lat"].to_numpy()[on]))
    x_sites = torch.as_tensor(sites.loc[on, names].to_numpy(np.float64), dtype=torch.float32)
    with torch.no_grad():
        for k, m in enumerate(run.models):
            site_soc[on, k] = soc_nodes(steady_state(to_physical(m(x_sites).to(torch.float64)), site_forcing)).numpy()

    ny, nx = mask.shape

    def grid2(values) -> np.ndarray:
        out = np.full((ny, nx), np.nan, np.float32)
        out[iy, ix] = np.asarray(values, dtype=np.float32)
        return out

    soc_grid = np.full((ny, nx, LAYERS), np.nan, np.float32)
    soc_grid[iy, ix, :] = soc.numpy().astype(np.float32)
    data_vars: dict = {
        "soc": (("y", "x", "layer"), soc_grid, _attrs("g C m-3", "soil organic carbon density", "soc")),
    }
    for key in ("soc_stock_0_30cm", "soc_stock_0_100cm"):
        depth = key.split("_")[-1]
        data_vars[key] = (("y", "x"), grid2(stocks[key].numpy()), _attrs("kg C m-2", f"SOC stock 0-{depth}", "stock"))
        spread = torch.stack([s[key] for s in fold_stocks]).std(0)
        data_vars[f"{key}_std"] = (("y", "x"), grid2(spread.numpy()), _attrs("kg C m-2", f"SOC stock 0-{depth}, fold-ensemble SD", "uncertainty"))
        data_vars[f"default_{key}"] = (("y", "x"), grid2(default_stocks[key].numpy()), _attrs("kg C m-2", f"SOC stock 0-{depth} with CLM5 default parameters", "stock"))
        data_vars[f"diff_default_{key}"] = (("y", "x"), grid2((stocks[key] - default_stocks[key]).numpy()),
                                            _attrs("kg C m-2", f"SOC stock 0-{depth}: hybrid - CLM5 default", "difference"))
    for j, prm in enumerate(PARAMETERS):
        data_vars[prm.name] = (("y", "x"), grid2(theta[:, j].numpy()), _attrs(prm.unit, prm.description, "parameter"))
    for key, (units, long_name) in DIAGNOSTICS.items():
        data_vars[key] = (("y", "x"), grid2(diag[key].numpy()), _attrs(units, long_name, "diagnostic"))
    for key, (units, long_name) in COVARIATES.items():
        if key in cube:
            data_vars[key] = (("y", "x"), np.where(mask, cube[key].values, np.nan).astype(np.float32), _attrs(units, long_name, "covariate"))
    data_vars["land_cover"] = (("y", "x"), np.where(mask, cube["land_cover"].values, np.nan).astype(np.float32), _attrs("1", "IGBP land cover class", "covariate"))
    data_vars["land_mask"] = (("y", "x"), mask.astype(np.float32), _attrs("1", "land mask", "mask"))
    data_vars["site_lon"] = (("site",), sites["lon"].to_numpy(np.float64), {"units": "degrees_east", "long_name": "site longitude", "kind": "site"})
    data_vars["site_lat"] = (("site",), sites["lat"].to_numpy(np.float64), {"units": "degrees_north", "long_name": "site latitude", "kind": "site"})
    data_vars["site_soc_fold"] = (("site", "model", "layer"), site_soc,
                                  _attrs("g C m-3", "soil organic carbon density of every fold model at the site", "site"))
    ds = xr.Dataset(
        data_vars,
        coords={
            "y": cube["y"].values, "x": cube["x"].values, "layer": np.arange(LAYERS),
            "depth_m": ("layer", NODE_M.astype(np.float32), {"units": "m", "long_name": "node depth"}),
            "layer_top_m": ("layer", INTERFACE_TOP_M.astype(np.float32), {"units": "m"}),
            "layer_bottom_m": ("layer", INTERFACE_BOTTOM_M.astype(np.float32), {"units": "m"}),
            # fixed-width text: open_store's chunks="auto" cannot size object arrays
            "site_id": ("site", sites["site_id"].to_numpy().astype("U")),
        },
        attrs={"store_version": STORE_VERSION, "run_name": run.name, "created": datetime.now(timezone.utc).isoformat(),
               "socmap_version": socmap.__version__, "resolution_deg": float(cube.attrs.get("resolution_deg", 1.0)),
               "crs": "EPSG:4326", "encoder": record["encoder"], "parameters": record["parameters"],
               "fold_models": record["fold_models"], "n_models": len(run.models), "data": record["data"],
               "covariates": list(names)},
    )
    ds = ds.rio.write_crs("EPSG:4326")
    ds.attrs["crs"] = "EPSG:4326"
    for v in ds.data_vars:
        ds[v].attrs.pop("grid_mapping", None)
        if {"y", "x"} <= set(ds[v].dims):
            ds[v].encoding["grid_mapping"] = "spatial_ref"
    out = run_dir / "maps.zarr"
    if out.exists():
        shutil.rmtree(out)
    ds.to_zarr(out, mode="w", consolidated=True)
    write_site_residuals(run_dir)
    assert set(NAMES) <= set(ds.data_vars)
    return out


def build_run(root: str | Path, name: str = "kan", encoder: str = "kan", sites: int = 150, epochs: int = 2,
              data_dir: str | Path | None = None) -> Path:
    """Synthetic twin (1°) + a tiny trained run + its run folder, under ``root``; returns the run dir."""
    from filelock import FileLock

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # pytest -n: two workers may ask for the same cached fixture at once; one builds, the other waits
    with FileLock(str(root / ".build.lock")):  # one lock: the runs share the twin under root/synth
        return _build_run(root, name, encoder, sites, epochs, data_dir)


def _build_run(root: Path, name: str, encoder: str, sites: int, epochs: int, data_dir: str | Path | None) -> Path:
    from socmap.data.synthetic import SynthConfig, write_synthetic
    from socmap.train import load_config, train

    data_dir = Path(data_dir) if data_dir else root / "synth"
    if not (data_dir / "truth.json").exists():
        write_synthetic(data_dir, SynthConfig(resolution_deg=1.0, n_sites=sites, seed=0))
    run_dir = root / "runs" / name
    if not (run_dir / "run.json").exists():
        if run_dir.exists():
            shutil.rmtree(run_dir)
        train(load_config(data_dir=str(data_dir), epochs=epochs, folds=3, encoder=encoder, mlp_hidden=[16], kan_polish_iters=5, kan_sparsify_epochs=2, kan_refit_epochs=2), run_dir, progress=False)
    if not (run_dir / "maps.zarr").exists() or not (run_dir / "sites.csv").exists():
        write_store_from_model(run_dir)
    if not (run_dir / "kan_curves.nc").exists():  # what `socmap map` writes beside the store
        from socmap.kan_curves import write_kan_curves
        from socmap.runs import open_run

        write_kan_curves(open_run(run_dir))
    return run_dir


def build_scenario(run_dir: str | Path, name: str = "warm2", warming_c: float = 2.0, years: int = 5,
                   ramp_years: int = 3) -> Path:
    """``socmap scenario`` on a fixture run (in this process, no progress bar); returns the scenario folder.

    Cached: a folder with ``scenario.json`` is reused (delete it to rebuild).
    """
    from filelock import FileLock

    from socmap.scenario import Scenario
    from socmap.scenario_mapping import ScenarioOptions, run_scenario, scenario_dir

    out = scenario_dir(run_dir, name)
    with FileLock(str(Path(run_dir).parent / ".scenario.lock")):
        if not (out / "scenario.json").exists():
            run_scenario(run_dir, Scenario(name=name, warming_c=warming_c, years=years, ramp_years=ramp_years),
                         ScenarioOptions(sensitivity=True, scheduler="synchronous", progress=False))
    return out


def upsample_store(src_run: str | Path, dst_run: str | Path, resolution: float = 0.05) -> Path:
    """Copy a run and resample its store to ``resolution`` on the CONUS land mask (timing tests)."""
    import rioxarray  # noqa: F401
    import xarray as xr

    from socmap.data.grid import grid_coords, land_mask_array

    src_run, dst_run = Path(src_run), Path(dst_run)
    if (dst_run / "maps.zarr").exists():
        return dst_run
    dst_run.mkdir(parents=True, exist_ok=True)
    for f in src_run.iterdir():
        if f.is_file():
            shutil.copy2(f, dst_run / f.name)
    if (src_run / "folds").exists() and not (dst_run / "folds").exists():
        shutil.copytree(src_run / "folds", dst_run / "folds")
    record = json.loads((dst_run / "run.json").read_text())
    record["name"] = dst_run.name
    (dst_run / "run.json").write_text(json.dumps(record))
    src = xr.open_zarr(src_run / "maps.zarr", decode_coords="all")
    lat, lon = grid_coords(resolution)
    mask = land_mask_array(resolution)
    # nearest land cell of the coarse grid: fill coarse NaNs by nearest neighbour first
    sx = src["x"].values
    sy = src["y"].values
    jx = np.clip(np.searchsorted(sx, lon), 0, len(sx) - 1)
    jx = np.where(np.abs(sx[np.clip(jx - 1, 0, None)] - lon) < np.abs(sx[jx] - lon), np.clip(jx - 1, 0, None), jx)
    jy = np.abs(sy[None, :] - lat[:, None]).argmin(1)
    smask = src["land_mask"].values > 0
    from scipy import ndimage

    _, (ny_idx, nx_idx) = ndimage.distance_transform_edt(~smask, return_indices=True)
    fy = ny_idx[jy[:, None], jx[None, :]]
    fx = nx_idx[jy[:, None], jx[None, :]]
    rng = np.random.default_rng(0)
    texture = ndimage.gaussian_filter(rng.normal(size=mask.shape), 3)
    texture = (texture / texture.std()).astype(np.float32)
    data_vars = {}
    for name, da in src.data_vars.items():
        vals = da.values
        if not {"y", "x"} <= set(da.dims):  # per-site variables stay as they are
            data_vars[name] = (da.dims, vals, dict(da.attrs))
            continue
        if name == "land_mask":
            out = mask.astype(np.float32)
        else:
            out = vals[fy, fx]
            if da.attrs.get("kind") in ("soc", "stock", "parameter", "diagnostic", "covariate", "uncertainty") and name != "land_cover":
                scale = 1 + 0.03 * (texture[..., None] if out.ndim == 3 else texture)
                out = out * scale
            out = np.where(mask[..., None] if out.ndim == 3 else mask, out, np.nan).astype(np.float32)
        data_vars[name] = (da.dims, out, dict(da.attrs))
    ds = xr.Dataset(
        data_vars,
        coords={"y": lat, "x": lon, "layer": src["layer"].values, "depth_m": src["depth_m"],
                "layer_top_m": src["layer_top_m"], "layer_bottom_m": src["layer_bottom_m"], "site_id": src["site_id"]},
        attrs={**src.attrs, "run_name": dst_run.name, "resolution_deg": resolution},
    )
    ds = ds.rio.write_crs("EPSG:4326")
    ds.attrs["crs"] = "EPSG:4326"
    for v in ds.data_vars:
        if {"y", "x"} <= set(ds[v].dims):
            ds[v].encoding["grid_mapping"] = "spatial_ref"
    chunks = {"y": 256, "x": 256, "layer": LAYERS, "site": -1, "model": -1}
    ds = ds.chunk({k: v for k, v in chunks.items() if k in ds.dims})
    ds.to_zarr(dst_run / "maps.zarr", mode="w", consolidated=True)
    return dst_run


if __name__ == "__main__":  # pragma: no cover
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dash")
    run = build_run(root)
    print(run)
    print(build_scenario(run))
    if "--mlp" in sys.argv:
        print(build_run(root, name="mlp", encoder="mlp"))
    if "--big" in sys.argv:
        print(upsample_store(run, root / "runs" / "kan-005", 0.05))
