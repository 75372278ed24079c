"""``socmap scenario``: a run's fold models under a climate scenario, mapped into the run folder.

Output, in ``runs/R/scenarios/NAME/``:

* ``maps.zarr`` — a run store (schema :mod:`socmap.store`, same grid and dataset attributes as
  the present map plus ``scenario``, ``scenario_name``, ``present_store``), so ``socmap export
  --run runs/R/scenarios/NAME`` and the dashboard read it like any store. Grid variables:

  - ``soc`` (y, x, layer) and the stocks: the scenario's steady state, computed like the present
    map (the store attribute ``ensemble`` of the present map decides mean-of-parameters or
    ensemble mean); ``present_*`` the present stocks recomputed in the same pass;
  - ``delta_soc`` (g C m-3), ``delta_<stock>`` (kg C m-2) and ``delta_pct_<stock>`` (%): scenario
    minus present; ``<stock>_std`` and ``delta_<stock>_std``: spread (standard deviation) over
    the fold models' own solves;
  - with ``years > 0`` (kind ``transient``): ``transient_<stock>`` (time, y, x), the fold-mean
    stock at the end of each year, ``transient_<stock>_std`` its fold spread, and
    ``conus_<stock>_pg`` (time, model), the CONUS total of every fold model (Pg C);
  - with ``--sensitivity`` (kind ``sensitivity``): ``elasticity_<param>`` (fold mean of
    ∂ ln stock₀₋₁₀₀ / ∂ ln θ under the scenario climate, :mod:`socmap.sensitivity`),
    ``elasticity_<param>_std`` and ``dominant_process`` (codes with CF ``flag_values`` /
    ``flag_meanings``). A zero scenario (no ``--warming-c``/``--precip-pct``) gives the present
    climate's sensitivities.

* ``scenario.json`` — the definition, arguments, counts, timings and CONUS summaries (present,
  scenario and Δ totals in Pg C with the fold spread, sensitivity summary).
* ``transient_totals.csv`` — per year, CONUS totals of every fold and their mean, std, min, max.

CONUS totals use the cell area on the sphere (:func:`cell_area_m2`) over the cells that every fold
solved (present, scenario and transient finite).

The store is built as ``maps.zarr.partial`` with a progress file and renamed when complete, so an
interrupted run resumes (same arguments) where it stopped. Windows (``--chunks`` cells a side)
are tasks on a Dask ``LocalCluster`` (one single-threaded process per core), an existing cluster
(``--scheduler tcp://…``) or this process (``synchronous``), as for ``socmap map``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from socmap import store as S
from socmap.scenario import Scenario
from socmap.windows import WindowTask, cached_cube, grid_windows, run_tasks

log = logging.getLogger(__name__)

SCENARIOS_DIR = "scenarios"
RECORD = "scenario.json"
TOTALS_CSV = "transient_totals.csv"
EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)
TIME_DIM = "time"

PRESENT_PREFIX = "present_"
DELTA_PREFIX = "delta_"
DELTA_PCT_PREFIX = "delta_pct_"
TRANSIENT_PREFIX = "transient_"
CONUS_PREFIX = "conus_"
ELASTICITY_PREFIX = "elasticity_"
DOMINANT = "dominant_process"


class ScenarioRunError(RuntimeError):
    """Bad input for ``socmap scenario`` (message meant for the user)."""


class ScenarioInterrupted(ScenarioRunError):
    """Stopped before all windows were done (``stop_after``); the partial store remains."""


@dataclass
class ScenarioOptions:
    """Arguments of ``socmap scenario`` besides the scenario itself (see the CLI help)."""

    resolution: float | None = None
    chunks: int = 64  # small windows: the tasks that share the cores (the transient dominates the cost)
    batch: int = 4096  # cells per batch; the transient solves batch × folds sites at once
    sensitivity: bool = False
    scheduler: str | None = None  # as `socmap map`: None = LocalCluster, "synchronous", or tcp://host:port
    workers: int | None = None
    progress: bool = True
    stop_after: int | None = None  # test hook: raise ScenarioInterrupted after N windows


def scenario_dir(run_dir: str | Path, name: str) -> Path:
    """``runs/R/scenarios/NAME``."""
    return Path(run_dir) / SCENARIOS_DIR / name


def cell_area_m2(lat_deg: np.ndarray, res_deg: float) -> np.ndarray:
    """Area (m²) of lon/lat cells of ``res_deg`` degrees centred at ``lat_deg``, on a sphere.

    ``A = R² Δλ (sin φ_north − sin φ_south)`` with R the mean Earth radius.
    """
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    half = np.radians(res_deg) / 2.0
    return EARTH_RADIUS_M**2 * np.radians(res_deg) * (np.sin(lat + half) - np.sin(lat - half))


# ----------------------------------------------------------------------------------------
# variables
# ----------------------------------------------------------------------------------------

def grid_specs(*, sensitivity: bool) -> dict[str, S.VarSpec]:
    """The scenario store's (y, x[, layer]) variables."""
    from socmap.clm5.parameters import PARAMETERS
    from socmap.sensitivity import STOCK

    yx, yxl = ("y", "x"), ("y", "x", "layer")
    out: dict[str, S.VarSpec] = {}

    def add(name, dims, units, long_name, kind, dtype="float32"):
        out[name] = S.VarSpec(name, dims, dtype, units, long_name, kind)

    add(S.SOC, yxl, "g C m-3", "soil organic carbon density at the layer node (S1+S2+S3), scenario steady state", "soc")
    add(DELTA_PREFIX + S.SOC, yxl, "g C m-3", "soil organic carbon density, scenario minus present", "difference")
    for s in S.STOCKS:
        ln = S.STOCK_LONG_NAMES[s]
        add(s, yx, "kg C m-2", ln + ", scenario steady state", "stock")
        add(PRESENT_PREFIX + s, yx, "kg C m-2", ln + ", present climate", "stock")
        add(DELTA_PREFIX + s, yx, "kg C m-2", ln + ", scenario minus present", "difference")
        add(DELTA_PCT_PREFIX + s, yx, "%", ln + ", scenario minus present relative to present", "difference")
        add(s + S.STD_SUFFIX, yx, "kg C m-2", ln + ", scenario, standard deviation across fold models", "uncertainty")
        add(DELTA_PREFIX + s + S.STD_SUFFIX, yx, "kg C m-2",
            ln + ", scenario minus present, standard deviation across fold models", "uncertainty")
    add(S.LAND_COVER, yx, "1", "IGBP land-cover class (0 = water / outside land)", "covariate", "int16")
    add(S.LAND_MASK, yx, "1", "land (1) / water or outside CONUS (0)", "mask", "uint8")
    if sensitivity:
        for p in PARAMETERS:
            add(ELASTICITY_PREFIX + p.name, yx, "1", f"elasticity of the 0-100 cm SOC stock to {p.name} "
                f"({p.description}), d ln stock / d ln {p.name}", "sensitivity")
        for p in PARAMETERS:
            add(ELASTICITY_PREFIX + p.name + S.STD_SUFFIX, yx, "1",
                f"elasticity of the 0-100 cm SOC stock to {p.name}, standard deviation across fold models", "uncertainty")
        add(DOMINANT, yx, "1", f"dominant process of the {STOCK} sensitivity (group of the largest |elasticity|)", "sensitivity")
    return out


def _transient_names() -> list[str]:
    return [TRANSIENT_PREFIX + s + suf for s in S.STOCKS for suf in ("", S.STD_SUFFIX)]


# ----------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------

@dataclass
class _Inputs:
    run: Any
    run_dir: Path
    covariates: list[str]
    present: Any  # the present store (xarray, lazy)
    present_path: Path
    cube: Any
    cube_path: Path
    resolution: float
    ensemble: bool
    out_dir: Path
    store: Path
    partial: Path


def _open_inputs(run_dir: Path, scenario: Scenario, opts: ScenarioOptions) -> _Inputs:
    from socmap.data.cube import CubeError, check_cube, cube_resolution, open_cube, regrid_cube
    from socmap.runs import open_run

    try:
        run = open_run(run_dir)
    except FileNotFoundError as exc:
        raise ScenarioRunError(str(exc)) from exc
    if not run.models:
        raise ScenarioRunError(f"run {run.name} has encoder {run.encoder!r}: scenarios need a hybrid (kan or mlp) run")
    try:
        present = S.open_store(run_dir)
    except S.StoreError as exc:
        raise ScenarioRunError(f"a scenario is mapped against the present map, which is missing or unusable: {exc}") from exc
    res_present = float(present.attrs["resolution_deg"])
    resolution = res_present if opts.resolution is None else float(opts.resolution)
    if abs(resolution - res_present) > 1e-9:
        raise ScenarioRunError(f"the present map of {run.name} is at {res_present:g} deg, not {resolution:g} deg: "
                               f"map it first with `socmap map --run {run_dir} --resolution {resolution:g}`")
    covariates = list(present.attrs["covariates"])
    if list(run.models[0].spec.covariate_names) != covariates:
        raise ScenarioRunError(f"the present map of {run.name} was made with covariates {covariates}, but the run's "
                               f"models use {list(run.models[0].spec.covariate_names)}: re-run `socmap map --run {run_dir}`")
    cube_path = run.data_dir / "cube.zarr"
    if not cube_path.exists():
        raise ScenarioRunError(f"the run's covariate cube {cube_path} does not exist (run.json data.dir = {run.data_dir})")
    try:
        cube = open_cube(cube_path)
        check_cube(cube, covariates, cube_path)
        if abs(cube_resolution(cube) - resolution) > 1e-9:
            cube_path = regrid_cube(cube, resolution, covariates, run_dir / "cache" / f"cube_{resolution:g}deg.zarr")
            cube = open_cube(cube_path)
    except CubeError as exc:
        raise ScenarioRunError(str(exc)) from exc
    if not S.same_grid(present, cube):
        raise ScenarioRunError(f"the present map and the cube {cube_path} are on different grids: re-run `socmap map --run {run_dir}`")
    out_dir = scenario_dir(run_dir, scenario.name)
    store = out_dir / S.STORE_NAME
    return _Inputs(run, run_dir, covariates, present, S.store_path(run_dir), cube, cube_path, resolution,
                   bool(int(present.attrs.get("ensemble", 0))), out_dir, store, out_dir / (S.STORE_NAME + S.PARTIAL_SUFFIX))


def _fingerprint(inputs: _Inputs, scenario: Scenario, opts: ScenarioOptions) -> str:
    rec = {"store_version": S.STORE_VERSION, "scenario": scenario.model_dump(), "chunks": opts.chunks,
           "sensitivity": opts.sensitivity, "present_created": inputs.present.attrs.get("created"),
           "cube": str(inputs.cube_path), "run_json_mtime": os.path.getmtime(inputs.run_dir / "run.json")}
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16]


def _attrs(inputs: _Inputs, scenario: Scenario, opts: ScenarioOptions) -> dict[str, Any]:
    attrs = {k: v for k, v in inputs.present.attrs.items() if k != "crs"}
    attrs.update({
        "crs": S.CRS, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "title": f"socmap scenario store: {inputs.run.name} / {scenario.name}",
        "scenario_name": scenario.name, "scenario": scenario.model_dump(),
        "present_store": str(inputs.present_path), "present_created": str(inputs.present.attrs.get("created", "")),
        "sensitivity": int(opts.sensitivity), "transient_years": scenario.years,
    })
    return attrs


def _create_template(inputs: _Inputs, scenario: Scenario, opts: ScenarioOptions) -> None:
    import warnings

    import dask.array as da
    import xarray as xr

    attrs = _attrs(inputs, scenario, opts)
    S.create_template(inputs.partial, inputs.cube, grid_specs(sensitivity=opts.sensitivity), opts.chunks, attrs)
    if opts.sensitivity:
        import zarr

        from socmap.sensitivity import PROCESS_NAMES

        var = zarr.open_group(str(inputs.partial), mode="r+")[DOMINANT]
        var.attrs.update({"flag_values": list(range(len(PROCESS_NAMES))),
                          "flag_meanings": " ".join(p.replace(" ", "_").replace("-", "_") for p in PROCESS_NAMES)})
        zarr.consolidate_metadata(str(inputs.partial))
    if not scenario.years:
        return
    ny, nx = inputs.cube.sizes["y"], inputs.cube.sizes["x"]
    nt = scenario.years + 1
    ch = (nt, min(opts.chunks, ny), min(opts.chunks, nx))
    data = {}
    for s in S.STOCKS:
        ln = S.STOCK_LONG_NAMES[s]
        data[TRANSIENT_PREFIX + s] = ((TIME_DIM, "y", "x"), da.full((nt, ny, nx), np.nan, dtype="float32", chunks=ch),
                                      {"units": "kg C m-2", "long_name": ln + ", transient, mean over fold models, end of year",
                                       "kind": "transient"})
        data[TRANSIENT_PREFIX + s + S.STD_SUFFIX] = (
            (TIME_DIM, "y", "x"), da.full((nt, ny, nx), np.nan, dtype="float32", chunks=ch),
            {"units": "kg C m-2", "long_name": ln + ", transient, standard deviation across fold models", "kind": "uncertainty"})
        data[CONUS_PREFIX + s + "_pg"] = ((TIME_DIM, S.MODEL_DIM), np.full((nt, len(inputs.run.models)), np.nan),
                                          {"units": "Pg C", "long_name": ln + ", CONUS total of each fold model, transient",
                                           "kind": "transient"})
    coords = {TIME_DIM: (TIME_DIM, np.arange(nt, dtype=np.int32),
                         {"units": "yr", "long_name": "years since the start of the transient (end of each simulated year)"}),
              S.MODEL_DIM: (S.MODEL_DIM, np.asarray(inputs.present.attrs["fold_models"], dtype=str),
                            {"long_name": "fold model file (relative to the run folder)"})}
    ds = xr.Dataset(data, coords=coords, attrs=attrs)  # appending replaces the dataset attributes
    for name in ds.data_vars:
        ds[name].encoding["_FillValue"] = np.nan
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        ds.to_zarr(inputs.partial, mode="a", compute=False, consolidated=True)


# ----------------------------------------------------------------------------------------
# one window
# ----------------------------------------------------------------------------------------

def _fold_stocks(soc_models: np.ndarray) -> dict[str, np.ndarray]:
    """Stocks [K, N] (kg C m-2) from per-fold SOC [K, N, 20] (the layer-constant integral of §2.10)."""
    from socmap.clm5.grid import layer_overlap_m
    from socmap.clm5.observe import STOCK_INTERVALS_M

    return {s: soc_models @ layer_overlap_m(*STOCK_INTERVALS_M[s]) / 1000.0 for s in S.STOCKS}


def _std(a: np.ndarray) -> np.ndarray:
    return a.std(0, ddof=1) if a.shape[0] > 1 else np.full(a.shape[1:], np.nan)


def _batch(models, cov: np.ndarray, climate: dict, present_forcing, scenario: Scenario, ensemble: bool,
           sensitivity: bool, timings: dict[str, float]) -> dict[str, Any]:
    """Everything of one batch of N cells: grid values [N(, 20)], per-fold stocks, transient, elasticities."""
    import torch

    from socmap.cells import predict_cells
    from socmap.clm5 import prepare_forcing
    from socmap.clm5.parameters import to_physical
    from socmap.scenario import interpolate_forcing, prepare_scenario, scenario_forcing

    t0 = time.perf_counter()
    present_p = prepare_forcing(present_forcing)
    scen_forcing = scenario_forcing(climate, scenario)
    scen_p = prepare_scenario(scen_forcing, present_p, scenario.hold_inputs)
    t1 = time.perf_counter()
    kw = dict(ensemble=ensemble, per_model=True, default=False, diagnostics=False)
    pres = predict_cells(models, cov, present_p, **kw)
    scen = predict_cells(models, cov, scen_p, **kw)
    t2 = time.perf_counter()
    timings["forcing"] += t1 - t0
    timings["model"] += t2 - t1
    pk, sk = _fold_stocks(pres.soc_models), _fold_stocks(scen.soc_models)
    v: dict[str, np.ndarray] = {S.SOC: scen.values[S.SOC], DELTA_PREFIX + S.SOC: scen.values[S.SOC] - pres.values[S.SOC]}
    for s in S.STOCKS:
        now, new = pres.values[s], scen.values[s]
        v[s], v[PRESENT_PREFIX + s], v[DELTA_PREFIX + s] = new, now, new - now
        with np.errstate(divide="ignore", invalid="ignore"):
            v[DELTA_PCT_PREFIX + s] = np.where(now > 0, 100.0 * (new - now) / np.where(now > 0, now, 1.0), np.nan)
        v[s + S.STD_SUFFIX] = _std(sk[s])
        v[DELTA_PREFIX + s + S.STD_SUFFIX] = _std(sk[s] - pk[s])
    out: dict[str, Any] = {"values": v, "present_folds": pk, "scenario_folds": sk, "present_map": pres.values}

    n, k = cov.shape[0], pres.p_models.shape[0]
    theta = to_physical(torch.as_tensor(pres.p_models, dtype=torch.float64).reshape(k * n, -1))
    tile = torch.arange(n).repeat(k)  # fold-major: site k·N + i is cell i under fold model k
    if scenario.years:
        from socmap.transient import run_transient

        def prepared_at(fraction: float):
            if fraction == 0.0:
                return present_p.subset(tile)
            if fraction == 1.0:
                return scen_p.subset(tile)
            mid = interpolate_forcing(present_forcing, scen_forcing, fraction)
            return prepare_scenario(mid, present_p, scenario.hold_inputs).subset(tile)

        t3 = time.perf_counter()
        traj = run_transient(theta, prepared_at, scenario.years, scenario.ramp_years)
        timings["transient"] += time.perf_counter() - t3
        out["transient"] = {s: traj.stocks[s].reshape(-1, k, n) for s in S.STOCKS}  # [T+1, K, N]
    if sensitivity:
        from socmap.sensitivity import elasticities

        t4 = time.perf_counter()
        e, _ = elasticities(theta, scen_p.subset(tile))
        timings["sensitivity"] += time.perf_counter() - t4
        out["elasticity"] = e.reshape(k, n, -1)  # [K, N, 21]
    return out


@dataclass(frozen=True)
class WindowJob(WindowTask):
    """Everything one scenario window task needs: the window (:class:`socmap.windows.WindowTask`;
    ``store_path`` is the scenario's partial store) and the scenario's options."""

    present_path: str  # the run's present-day maps.zarr
    scenario_json: str
    ensemble: bool
    resolution: float
    batch: int
    sensitivity: bool


def scenario_window(job: WindowJob) -> dict[str, Any]:
    """Compute one window, write it into the partial store; returns its statistics (the task)."""
    import torch
    import zarr

    torch.set_num_threads(1)  # one thread per task: multi-threaded torch spins on a busy machine
    arrays, stats = _window(job)
    t = time.perf_counter()
    group = zarr.open_group(job.store_path, mode="r+")
    for name, arr in arrays.items():
        if name.startswith(TRANSIENT_PREFIX):
            group[name][:, job.y0:job.y1, job.x0:job.x1] = arr
        else:
            group[name][job.y0:job.y1, job.x0:job.x1, ...] = arr
    stats["timings"]["write"] = time.perf_counter() - t
    stats["key"] = job.key
    return stats


def _window(job: WindowJob) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays of one window and its statistics (per-fold CONUS sums, counts, timings)."""
    from socmap.clm5.parameters import NAMES
    from socmap.data.cube import CLIMATE_VARS, cell_forcing, climate_ok
    from socmap.mapping import load_models
    from socmap.scenario import cell_climate
    from socmap.sensitivity import PROCESS_NAMES, dominant_process

    scenario = Scenario.model_validate_json(job.scenario_json)
    y0, y1, x0, x1 = job.y0, job.y1, job.x0, job.x1
    specs = grid_specs(sensitivity=job.sensitivity)
    timings = {"read": 0.0, "forcing": 0.0, "model": 0.0, "transient": 0.0, "sensitivity": 0.0, "write": 0.0}
    t0 = time.perf_counter()
    names = list(job.covariates)
    cube = cached_cube(job.cube_path, True)
    win = cube[[*names, *CLIMATE_VARS]].isel(y=slice(y0, y1), x=slice(x0, x1)).load()
    present_win = cached_cube(job.present_path, True)[list(S.STOCKS)].isel(y=slice(y0, y1), x=slice(x0, x1)).load()
    ny, nx = y1 - y0, x1 - x0
    land = np.asarray(win["land_mask"].values, dtype=bool)
    cov = np.stack([np.asarray(win[c].values, dtype=np.float64) for c in names], -1) if names else np.zeros((ny, nx, 0))
    valid = land & np.isfinite(cov).all(-1) & climate_ok(win)
    iy, ix = np.nonzero(valid)
    timings["read"] = time.perf_counter() - t0

    nt = scenario.years + 1
    arrays: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        shape = (ny, nx, 20) if spec.layered else (ny, nx)
        arrays[name] = np.full(shape, np.nan, dtype=np.float32) if spec.dtype == "float32" else np.zeros(shape, dtype=spec.dtype)
    if scenario.years:
        for name in _transient_names():
            arrays[name] = np.full((nt, ny, nx), np.nan, dtype=np.float32)
    arrays[S.LAND_COVER][:] = np.where(land, np.nan_to_num(win["land_cover"].values), 0).astype(np.int16)
    arrays[S.LAND_MASK][:] = land.astype(np.uint8)

    models = load_models(job.run_dir)
    k = len(models)
    res = job.resolution
    sums = {key: np.zeros(k) for key in (f"{w}_{s}" for w in ("present", "scenario") for s in S.STOCKS)}
    sums.update({f"map_{w}_{s}": 0.0 for w in ("present", "scenario") for s in S.STOCKS})
    transient_sums = {s: np.zeros((nt, k)) for s in S.STOCKS}
    elast_sum, process_area = np.zeros(len(NAMES)), np.zeros(len(PROCESS_NAMES))
    area_total, elast_area, failed, dev = 0.0, 0.0, 0, 0.0
    for start in range(0, iy.size, job.batch):
        sl = slice(start, min(iy.size, start + job.batch))
        t1 = time.perf_counter()
        present_forcing = cell_forcing(win, iy[sl], ix[sl], in_memory=True)
        climate = cell_climate(win, iy[sl], ix[sl])
        timings["forcing"] += time.perf_counter() - t1
        b = _batch(models, cov[iy[sl], ix[sl]], climate, present_forcing, scenario, job.ensemble, job.sensitivity, timings)
        for name, val in b["values"].items():
            arrays[name][iy[sl], ix[sl]] = val
        good = np.ones(sl.stop - sl.start, dtype=bool)
        for s in S.STOCKS:
            good &= np.isfinite(b["present_folds"][s]).all(0) & np.isfinite(b["scenario_folds"][s]).all(0)
            good &= np.isfinite(b["values"][s]) & np.isfinite(b["values"][PRESENT_PREFIX + s])
        if "transient" in b:
            for s in S.STOCKS:
                good &= np.isfinite(b["transient"][s]).all((0, 1))
        failed += int((~good).sum())
        area = cell_area_m2(cube["y"].values[y0 + iy[sl]], res) * good
        area_total += float(area.sum())
        aw = np.where(good, area, 0.0)
        for s in S.STOCKS:
            sums[f"present_{s}"] += np.nansum(np.where(good, b["present_folds"][s], 0.0) * aw, 1) / 1e12
            sums[f"scenario_{s}"] += np.nansum(np.where(good, b["scenario_folds"][s], 0.0) * aw, 1) / 1e12
            sums[f"map_present_{s}"] += float(np.where(good, b["values"][PRESENT_PREFIX + s], 0.0) @ aw) / 1e12
            sums[f"map_scenario_{s}"] += float(np.where(good, b["values"][s], 0.0) @ aw) / 1e12
            stored = present_win[s].values[iy[sl], ix[sl]]
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.abs(b["present_map"][s] - stored) / np.abs(stored)
            dev = max(dev, float(np.nanmax(np.where(good, rel, 0.0))) if good.any() else 0.0)
            if "transient" in b:
                tr = b["transient"][s]  # [T+1, K, N]
                arrays[TRANSIENT_PREFIX + s][:, iy[sl], ix[sl]] = tr.mean(1)
                arrays[TRANSIENT_PREFIX + s + S.STD_SUFFIX][:, iy[sl], ix[sl]] = tr.std(1, ddof=1) if k > 1 else np.nan
                transient_sums[s] += np.where(good, tr, 0.0) @ aw / 1e12
        if "elasticity" in b:
            e = b["elasticity"]  # [K, N, 21]
            mean_e = e.mean(0)
            for j, p in enumerate(NAMES):
                arrays[ELASTICITY_PREFIX + p][iy[sl], ix[sl]] = mean_e[:, j]
                arrays[ELASTICITY_PREFIX + p + S.STD_SUFFIX][iy[sl], ix[sl]] = _std(e[:, :, j])
            dom = dominant_process(mean_e)
            arrays[DOMINANT][iy[sl], ix[sl]] = dom
            ok = good & np.isfinite(mean_e).all(1)
            elast_sum += (np.where(ok[:, None], mean_e, 0.0) * np.where(ok, area, 0.0)[:, None]).sum(0)
            elast_area += float(np.where(ok, area, 0.0).sum())
            for c in range(len(PROCESS_NAMES)):
                process_area[c] += float(np.where(ok & (dom == c), area, 0.0).sum())
    stats = {"cells": int(iy.size), "failed": failed, "area_m2": area_total, "present_map_max_rel_diff": dev,
             "sums_pg": {kk: (vv.tolist() if isinstance(vv, np.ndarray) else vv) for kk, vv in sums.items()},
             "transient_pg": {s: v.tolist() for s, v in transient_sums.items()} if scenario.years else None,
             "elasticity_area_sum": elast_sum.tolist(), "elasticity_area_m2": elast_area,
             "process_area_m2": process_area.tolist(), "timings": timings}
    return arrays, stats


# ----------------------------------------------------------------------------------------
# the driver
# ----------------------------------------------------------------------------------------

def run_scenario(run_dir: str | Path, scenario: Scenario, opts: ScenarioOptions | None = None) -> dict[str, Any]:
    """Map ``scenario`` for a mapped run into ``runs/R/scenarios/NAME`` (module docstring); returns the record."""
    import zarr

    from socmap.cluster import SchedulerError, check_scheduler_address, start_worker_server
    from socmap.fsutil import swap_into_place, write_atomic

    opts = opts or ScenarioOptions()
    try:
        check_scheduler_address(opts.scheduler)
    except SchedulerError as exc:
        raise ScenarioRunError(str(exc)) from exc
    if opts.chunks < 1 or opts.batch < 1:
        raise ScenarioRunError(f"--chunks and the batch size must be >= 1 (got {opts.chunks}, {opts.batch})")
    t_start = time.perf_counter()
    run_dir = Path(run_dir).resolve()
    start_worker_server(opts.scheduler)  # its imports overlap the opening of the inputs
    inputs = _open_inputs(run_dir, scenario, opts)
    inputs.out_dir.mkdir(parents=True, exist_ok=True)
    windows = grid_windows(inputs.cube.sizes["y"], inputs.cube.sizes["x"], opts.chunks)
    fingerprint = _fingerprint(inputs, scenario, opts)

    progress = S.read_progress(inputs.partial) if inputs.partial.exists() else None
    if progress is None or progress.get("fingerprint") != fingerprint:
        if progress is not None:
            log.warning("%s was started with another scenario or present map: starting again", inputs.partial)
        shutil.rmtree(inputs.partial, ignore_errors=True)
        try:
            _create_template(inputs, scenario, opts)
        except OSError as exc:
            shutil.rmtree(inputs.partial, ignore_errors=True)
            raise ScenarioRunError(f"cannot create {inputs.partial}: {exc}") from exc
        progress = {"store_version": S.STORE_VERSION, "fingerprint": fingerprint, "chunks_done": {}}
        S.write_progress(inputs.partial, progress)
    resumed = sum(v is not None for v in progress["chunks_done"].values())
    land = np.asarray(inputs.cube["land_mask"].values, dtype=bool)
    for idx, y0, y1, x0, x1 in windows:  # windows without land are done at once
        if not land[y0:y1, x0:x1].any():
            progress["chunks_done"].setdefault(f"{idx[0]}_{idx[1]}", None)
    jobs = [WindowJob(idx, y0, y1, x0, x1, str(run_dir), str(inputs.cube_path), str(inputs.partial),
                      tuple(inputs.covariates), present_path=str(inputs.present_path),
                      scenario_json=scenario.model_dump_json(), ensemble=inputs.ensemble,
                      resolution=inputs.resolution, batch=opts.batch, sensitivity=opts.sensitivity)
            for idx, y0, y1, x0, x1 in windows if f"{idx[0]}_{idx[1]}" not in progress["chunks_done"]]
    S.write_progress(inputs.partial, progress)
    t_chunks = time.perf_counter()
    _run_jobs(jobs, progress, inputs.partial, opts, scenario.name)
    chunk_s = time.perf_counter() - t_chunks

    done = [s for s in progress["chunks_done"].values() if s]
    record = _record(inputs, scenario, opts, done, resumed=resumed, n_windows=len(windows), chunk_s=chunk_s)
    if scenario.years:
        group = zarr.open_group(str(inputs.partial), mode="r+")
        for s in S.STOCKS:
            group[CONUS_PREFIX + s + "_pg"][:] = np.asarray(record["transient"]["folds_pg"][s])
        write_atomic(inputs.out_dir / TOTALS_CSV, _totals_csv(record["transient"]))
    (inputs.partial / S.PROGRESS_FILE).unlink(missing_ok=True)
    swap_into_place(inputs.partial, inputs.store)
    record["seconds"] = round(time.perf_counter() - t_start, 3)
    write_atomic(inputs.out_dir / RECORD, json.dumps(record, indent=1) + "\n")
    return record


def _run_jobs(jobs: list[WindowJob], progress: dict[str, Any], partial: Path, opts: ScenarioOptions, name: str) -> None:
    """Run the window tasks on the scheduler (or in this process), recording each finished window."""
    from tqdm.auto import tqdm

    from socmap.cluster import SchedulerError, connect

    try:
        client, cluster = connect(opts.scheduler, opts.workers, max(1, len(jobs))) if jobs else (None, None)
    except SchedulerError as exc:
        raise ScenarioRunError(str(exc)) from exc
    bar = tqdm(total=len(jobs), desc=f"socmap scenario {name}", unit="chunk", disable=not opts.progress)
    ran = 0

    def done(stats: dict[str, Any]) -> None:
        nonlocal ran
        progress["chunks_done"][stats["key"]] = stats
        S.write_progress(partial, progress)
        bar.update(1)
        ran += 1
        if opts.stop_after is not None and ran >= opts.stop_after and ran < len(jobs):
            raise ScenarioInterrupted(f"stopped after {ran} windows (stop_after); re-run to resume")

    try:
        run_tasks(scenario_window, jobs, done, client)
    except OSError as exc:
        raise ScenarioRunError(f"writing the store failed ({exc}); finished windows are kept in {partial}, re-run to resume") from exc
    finally:
        bar.close()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _fold_summary(folds: np.ndarray) -> dict[str, Any]:
    folds = np.asarray(folds, dtype=float)
    return {"mean": float(folds.mean()), "std": float(folds.std(ddof=1)) if folds.size > 1 else None,
            "min": float(folds.min()), "max": float(folds.max()), "folds": [float(v) for v in folds]}


def _record(inputs: _Inputs, scenario: Scenario, opts: ScenarioOptions, stats: list[dict], *, resumed: int,
            n_windows: int, chunk_s: float) -> dict[str, Any]:
    from socmap.clm5.parameters import NAMES
    from socmap.sensitivity import PROCESS_GROUPS, PROCESS_NAMES

    k = len(inputs.run.models)

    def total(key: str) -> np.ndarray:
        return np.sum([np.asarray(s["sums_pg"][key]) for s in stats], 0) if stats else np.zeros(k)

    conus = {}
    for s in S.STOCKS:
        now, new = total(f"present_{s}"), total(f"scenario_{s}")
        conus[s] = {"present_pg": _fold_summary(now), "scenario_pg": _fold_summary(new), "delta_pg": _fold_summary(new - now),
                    "delta_pct": _fold_summary(100.0 * (new - now) / now),
                    "map_present_pg": float(total(f"map_present_{s}")), "map_scenario_pg": float(total(f"map_scenario_{s}")),
                    "map_delta_pg": float(total(f"map_scenario_{s}") - total(f"map_present_{s}"))}
    rec: dict[str, Any] = {
        "command": "socmap scenario", "scenario": scenario.model_dump(),
        "arguments": {"run": str(inputs.run_dir), "resolution": inputs.resolution, "chunks": opts.chunks,
                      "batch": opts.batch, "sensitivity": opts.sensitivity},
        "store": str(inputs.store), "present_store": str(inputs.present_path),
        "present_parameters_from": ("ensemble mean of per-fold solves" if inputs.ensemble
                                    else "mean of the fold models' normalised parameters (one solve)"),
        "n_models": k, "grid": [inputs.cube.sizes["y"], inputs.cube.sizes["x"]],
        "chunks_total": n_windows, "chunks_resumed": resumed,
        "cells_mapped": sum(s["cells"] for s in stats), "cells_failed": sum(s["failed"] for s in stats),
        "area_km2": sum(s["area_m2"] for s in stats) / 1e6,
        "present_map_max_rel_diff": max([s["present_map_max_rel_diff"] for s in stats] or [0.0]),
        "conus": conus, "chunk_phase_s": round(chunk_s, 3),
        "timings_s": {key: round(sum(s["timings"][key] for s in stats), 3)
                      for key in ("read", "forcing", "model", "transient", "sensitivity", "write")},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if rec["present_map_max_rel_diff"] > 1e-4:
        log.warning("the present stocks recomputed for the scenario differ from %s by up to %.2g (relative): "
                    "the present map was made with other models, cube or options; re-run `socmap map`",
                    inputs.present_path, rec["present_map_max_rel_diff"])
    if scenario.years:
        folds = {s: np.sum([np.asarray(st["transient_pg"][s]) for st in stats], 0) for s in S.STOCKS}  # [T+1, K]
        rec["transient"] = {"years": list(range(scenario.years + 1)), "ramp_years": scenario.ramp_years,
                            "folds_pg": {s: v.tolist() for s, v in folds.items()},
                            "final_delta_pg": {s: _fold_summary(v[-1] - v[0]) for s, v in folds.items()}}
    if opts.sensitivity:
        area = sum(s["elasticity_area_m2"] for s in stats)
        esum = np.sum([s["elasticity_area_sum"] for s in stats], 0)
        parea = np.sum([s["process_area_m2"] for s in stats], 0)
        rec["sensitivity"] = {
            "stock": "soc_stock_0_100cm",
            "area_mean_elasticity": {p: float(esum[j] / area) if area else None for j, p in enumerate(NAMES)},
            "dominant_process_area_share": {p: float(parea[c] / area) if area else None for c, p in enumerate(PROCESS_NAMES)},
            "process_groups": {g: list(v) for g, v in PROCESS_GROUPS.items()},
        }
    return rec


def _totals_csv(transient: dict[str, Any]) -> str:
    import pandas as pd

    cols: dict[str, Any] = {"year": transient["years"]}
    for s, folds in transient["folds_pg"].items():
        f = np.asarray(folds)
        tag = s.replace("soc_stock_", "")
        for j in range(f.shape[1]):
            cols[f"{tag}_fold{j}_pg"] = f[:, j]
        cols[f"{tag}_mean_pg"] = f.mean(1)
        cols[f"{tag}_std_pg"] = f.std(1, ddof=1) if f.shape[1] > 1 else np.nan
        cols[f"{tag}_min_pg"], cols[f"{tag}_max_pg"] = f.min(1), f.max(1)
    return pd.DataFrame(cols).to_csv(index=False, float_format="%.6g")


def summary_lines(record: dict[str, Any]) -> list[str]:
    """Human summary of a ``scenario.json`` record (the CLI prints it)."""
    sc = record["scenario"]
    c = record["conus"]["soc_stock_0_100cm"]
    d = c["delta_pg"]
    spread = f" ± {d['std']:.3f}" if d["std"] is not None else ""
    lines = [
        f"scenario {sc['name']}: ΔT {np.mean(sc['warming_c']):+.2g} °C, ΔP {np.mean(sc['precip_pct']):+.3g} %"
        + (", inputs held" if sc["hold_inputs"] else "") + f"; {record['cells_mapped']:,} cells in {record['seconds']:.1f} s",
        f"CONUS SOC 0-100 cm: present {c['present_pg']['mean']:.3f} Pg C, scenario {c['scenario_pg']['mean']:.3f} Pg C, "
        f"Δ {d['mean']:+.3f}{spread} Pg C (fold mean ± sd, {record['n_models']} models)",
    ]
    if "transient" in record:
        f = record["transient"]["final_delta_pg"]["soc_stock_0_100cm"]
        lines.append(f"transient {len(record['transient']['years']) - 1} years (ramp {record['transient']['ramp_years']}): "
                     f"Δ 0-100 cm after the last year {f['mean']:+.3f} Pg C")
    if "sensitivity" in record:
        share = record["sensitivity"]["dominant_process_area_share"]
        top = max(share, key=lambda k: share[k] or 0)
        lines.append(f"sensitivity: dominant process over {100 * (share[top] or 0):.0f} % of the area is {top}")
    if record["cells_failed"]:
        lines.append(f"warning: {record['cells_failed']} cells have no solution (NaN), left out of the totals")
    lines.append(f"→ {record['store']}")
    return lines
