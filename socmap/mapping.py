"""Dask-chunked grid inference: a trained run's covariate cube -> the Zarr run store.

``map_run`` (the ``socmap map`` command) tiles the grid into ``chunks × chunks`` cell windows.
Each window is one task (:func:`map_chunk`): read the window's covariates and monthly climate
from the cube, derive the CLM5 forcing of its land cells (:func:`socmap.data.synthetic.cell_forcing`),
prepare it once, run the fold encoder(s), solve the steady state with the structured solver
(hybrid parameters, and CLM5 defaults for the difference map), compute stocks and the bulk
diagnostics, and write every variable into the window's region of the store. Windows are
aligned with the store's Zarr chunks, so parallel writers never touch the same chunk.

Scheduling: a ``distributed.LocalCluster`` (processes, one thread each, torch set to one thread in
the task) sized to the machine by default; ``scheduler="tcp://host:port"`` submits the same tasks
to an existing cluster (its workers need the run folder and the cube at the same paths, e.g. a
shared filesystem); ``scheduler="synchronous"`` runs in this process (tests, debugging).

Safety: the store is built as ``maps.zarr.partial`` with a progress file listing finished windows
(written only by the driver, after a window's task has returned), so an interrupted run resumes
where it stopped when re-run with the same arguments; when every window is done the progress
file is removed and the folder renamed to ``maps.zarr`` (an existing store is swapped out).

Resolution: when ``resolution`` differs from the cube's, the cube is regridded once into
``runs/NAME/cache/cube_<R>deg.zarr``. For the synthetic twin the landscape is *regenerated* at the
new resolution with the cube's seed (its covariates are analytic functions of lon/lat, so this is
exact, not an interpolation); other cubes are interpolated with xarray (linear for continuous
fields, nearest for land cover) onto the CONUS grid at that resolution, with its land mask.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from socmap.fsutil import swap_into_place
from typing import Any

import numpy as np

from socmap import store as S

log = logging.getLogger(__name__)

#: Cube variables the forcing derivation needs besides the encoder's covariates.
CLIMATE_VARS = ("air_temp_c", "precip_mm", "land_cover", "npp_g_m2_yr", "land_mask")
SYNTHETIC_TITLE = "socmap synthetic CONUS twin"
#: Test hook: seconds to sleep in each chunk task (lets a test kill a run part-way).
_DELAY_ENV = "SOCMAP_MAP_TEST_DELAY_S"


class MappingError(RuntimeError):
    """Bad input or environment for ``socmap map`` (message meant for the user)."""


class MapInterrupted(MappingError):
    """Mapping stopped before all chunks were done (``stop_after``); the partial store remains."""


# ----------------------------------------------------------------------------------------
# one chunk
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChunkJob:
    """Everything one chunk task needs (picklable; paths must be visible to the worker)."""

    index: tuple[int, int]
    y0: int
    y1: int
    x0: int
    x1: int
    run_dir: str
    cube_path: str
    store_path: str
    covariates: tuple[str, ...]
    ensemble: bool = False
    method: str = "structured"
    compare_store: str | None = None
    batch: int = 4096  # cells per solve: ~2-4k keeps the [12, 20, B] forcing pieces cache-friendly
    single_thread: bool = False

    @property
    def key(self) -> str:
        return f"{self.index[0]}_{self.index[1]}"


@lru_cache(maxsize=4)
def _models(run_dir: str, stamp: float):
    from socmap.runs import open_run

    run = open_run(run_dir)
    if not run.models:
        raise MappingError(f"run {run_dir} has no hybrid fold models to map")
    return run.models


@lru_cache(maxsize=8)
def _open_zarr(path: str, lazy_numpy: bool = False):
    """Open a Zarr store; ``lazy_numpy`` gives lazily indexed NumPy-backed variables (no Dask),
    which chunk tasks use so that a window read never schedules Dask work inside a worker."""
    import rioxarray  # noqa: F401
    import xarray as xr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        return xr.open_zarr(path, decode_coords="all", chunks=None if lazy_numpy else {})


def load_models(run_dir: str | Path):
    run_dir = str(Path(run_dir).resolve())
    return _models(run_dir, os.path.getmtime(Path(run_dir) / "run.json"))


def compute_cells(models, covariates: np.ndarray, forcing, *, ensemble: bool = False,
                  method: str = "structured") -> dict[str, np.ndarray]:
    """All per-cell outputs for a batch of cells.

    ``covariates`` [N, C] physical (the encoder's order), ``forcing`` a :class:`Forcing` or
    :class:`PreparedForcing` of the same N cells. Returns float64 arrays: ``soc`` [N, 20], the
    stocks, parameters, diagnostics, default stocks and their differences [N] (and the ``*_std``
    variables with ``ensemble``). Without ``ensemble`` the parameters are the mean of the fold
    models' normalised outputs (one solve); with it each model is solved and the outputs averaged.
    """
    import torch

    from socmap.clm5 import bulk_diagnostics, prepare_forcing, soc_nodes, standard_stocks, steady_state
    from socmap.clm5.diagnostics import DIAGNOSTICS
    from socmap.clm5.forcing import Forcing
    from socmap.clm5.parameters import NAMES, default_theta, to_physical

    prepared = prepare_forcing(forcing) if isinstance(forcing, Forcing) else forcing
    n = covariates.shape[0]
    x = torch.as_tensor(covariates, dtype=torch.float32)
    out: dict[str, np.ndarray] = {}

    def solve(theta, bounds=True):
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            pools = steady_state(theta, prepared, method=method, check_bounds_=bounds, check=False)
        soc = soc_nodes(pools)
        stocks = standard_stocks(soc)
        return pools, soc, stocks

    with torch.no_grad():
        ps = torch.stack([m(x).to(torch.float64) for m in models])  # [K, N, 21]
        if ensemble:
            members = []
            for k in range(ps.shape[0]):
                theta = to_physical(ps[k])
                pools, soc, stocks = solve(theta)
                diag = bulk_diagnostics(theta, prepared, pools)
                members.append({"soc": soc, **stocks, **{d: diag[d] for d in DIAGNOSTICS},
                                **{name: theta[:, j] for j, name in enumerate(NAMES)}})
            for key in members[0]:
                stack = torch.stack([m[key] for m in members])
                out[key] = stack.mean(0).numpy()
                if key in ("soc", *S.STOCKS, *NAMES):
                    out[key + S.STD_SUFFIX] = stack.std(0, correction=1).numpy()
        else:
            theta = to_physical(ps.mean(0))
            pools, soc, stocks = solve(theta)
            diag = bulk_diagnostics(theta, prepared, pools)
            out["soc"] = soc.numpy()
            for k, v in stocks.items():
                out[k] = v.numpy()
            for d in DIAGNOSTICS:
                out[d] = diag[d].numpy()
            for j, name in enumerate(NAMES):
                out[name] = theta[:, j].numpy()
        _, _, dstocks = solve(default_theta(n), bounds=False)
        for k, v in dstocks.items():
            out[S.DEFAULT_PREFIX + k] = v.numpy()
            out[S.DIFF_DEFAULT_PREFIX + k] = out[k] - out[S.DEFAULT_PREFIX + k]
    return out


def map_chunk(job: ChunkJob) -> dict[str, Any]:
    """Compute one window and write it into the store; returns counts and stage timings."""
    import torch
    import zarr

    from socmap.data.synthetic import cell_forcing

    t0 = time.perf_counter()
    if job.single_thread:
        torch.set_num_threads(1)
    timings = {"read": 0.0, "forcing": 0.0, "model": 0.0, "write": 0.0}
    cube = _open_zarr(job.cube_path, True)
    names = list(job.covariates)
    win = cube[[*names, *CLIMATE_VARS]].isel(y=slice(job.y0, job.y1), x=slice(job.x0, job.x1)).load()
    ny, nx = job.y1 - job.y0, job.x1 - job.x0
    land = np.asarray(win["land_mask"].values, dtype=bool)
    cov = np.stack([np.asarray(win[c].values, dtype=np.float64) for c in names], -1) if names else np.zeros((ny, nx, 0))
    clim_ok = (np.isfinite(win["air_temp_c"].values).all(0) & np.isfinite(win["precip_mm"].values).all(0)
               & np.isfinite(win["npp_g_m2_yr"].values) & (win["land_cover"].values > 0))
    valid = land & np.isfinite(cov).all(-1) & clim_ok
    iy, ix = np.nonzero(valid)
    timings["read"] = time.perf_counter() - t0

    specs = S.variable_specs(names, ensemble=job.ensemble, compare=job.compare_store is not None)
    arrays: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        shape = (ny, nx, 20) if spec.layered else (ny, nx)
        arrays[name] = np.full(shape, np.nan, dtype=np.float32) if spec.dtype == "float32" else np.zeros(shape, dtype=spec.dtype)
    for j, c in enumerate(names):
        arrays[c][valid] = cov[valid, j]
    arrays[S.LAND_COVER][:] = np.where(land, np.nan_to_num(win["land_cover"].values), 0).astype(np.int16)
    arrays[S.LAND_MASK][:] = land.astype(np.uint8)

    failed = 0
    if iy.size:
        models = load_models(job.run_dir)
        for start in range(0, iy.size, job.batch):
            sl = slice(start, min(iy.size, start + job.batch))
            t1 = time.perf_counter()
            forcing = cell_forcing(win, iy[sl], ix[sl])
            t2 = time.perf_counter()
            res = compute_cells(models, cov[iy[sl], ix[sl]], forcing, ensemble=job.ensemble, method=job.method)
            t3 = time.perf_counter()
            timings["forcing"] += t2 - t1
            timings["model"] += t3 - t2
            failed += int((~np.isfinite(res["soc_stock_0_100cm"])).sum())
            for name, v in res.items():
                arrays[name][iy[sl], ix[sl]] = v
    if job.compare_store is not None:
        other = _open_zarr(job.compare_store, True)
        reg = dict(y=slice(job.y0, job.y1), x=slice(job.x0, job.x1))
        for s in S.STOCKS:
            arrays[S.DIFF_COMPARE_PREFIX + s][:] = arrays[s] - np.asarray(other[s].isel(**reg).values, dtype=np.float32)
    delay = float(os.environ.get(_DELAY_ENV, "0") or 0)
    if delay > 0:
        time.sleep(delay)
    t4 = time.perf_counter()
    group = zarr.open_group(job.store_path, mode="r+")
    for name, arr in arrays.items():
        group[name][job.y0:job.y1, job.x0:job.x1, ...] = arr
    timings["write"] = time.perf_counter() - t4
    return {"key": job.key, "cells": int(iy.size), "land": int(land.sum()), "failed": failed,
            "timings": timings, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------
# inputs: cube checks and regridding
# ----------------------------------------------------------------------------------------

def check_cube(cube, covariates: list[str], path: str | Path) -> None:
    """Clear errors for a cube that cannot be mapped: CRS, missing variables, grid layout."""
    import rioxarray  # noqa: F401

    crs = cube.rio.crs
    if crs is None:
        raise MappingError(f"{path} has no CRS; socmap maps need EPSG:4326 (write it with rioxarray .rio.write_crs)")
    if crs.to_epsg() != 4326:
        raise MappingError(f"{path} is in {crs.to_string()}, but socmap maps need a cube in EPSG:4326 (lon/lat degrees); "
                           "reproject the cube first")
    missing_cov = [c for c in covariates if c not in cube.data_vars]
    if missing_cov:
        raise MappingError(f"{path} lacks covariate(s) {missing_cov} that the run's encoder needs "
                           f"(it was trained on {list(covariates)})")
    missing = [v for v in CLIMATE_VARS if v not in cube.data_vars]
    if missing:
        raise MappingError(f"{path} lacks variable(s) {missing} needed to derive the CLM5 forcing "
                           f"(monthly air_temp_c and precip_mm, land_cover, npp_g_m2_yr, land_mask)")
    for d in ("y", "x"):
        if d not in cube.dims:
            raise MappingError(f"{path} has no '{d}' dimension; cube dims are {dict(cube.sizes)}")
    y = cube["y"].values
    if y.size > 1 and not (np.diff(y) < 0).all():
        raise MappingError(f"{path}: y (latitude) must descend north → south")


def cube_resolution(cube) -> float:
    res = cube.attrs.get("resolution_deg")
    if res is None:
        res = abs(float(cube["x"].values[1] - cube["x"].values[0]))
    return float(res)


def regrid_cube(cube, resolution: float, covariates: list[str], out: Path) -> Path:
    """Write the cube at ``resolution`` to ``out`` (once; reused later). See the module docstring."""
    import rioxarray  # noqa: F401

    from socmap.data.grid import conus_grid

    if out.exists():
        existing = _open_zarr(str(out))
        if all(v in existing.data_vars for v in [*covariates, *CLIMATE_VARS]):
            return out
        shutil.rmtree(out)
    grid = conus_grid(resolution)
    mask = grid["land_mask"].values
    ny, nx = mask.shape
    if cube.attrs.get("title") == SYNTHETIC_TITLE and "seed" in cube.attrs:
        from socmap.data.synthetic import COVARIATES, make_landscape

        iy, ix = np.nonzero(mask)
        land = make_landscape(grid["x"].values[ix], grid["y"].values[iy], int(cube.attrs["seed"]))

        def to_grid(v, fill=np.nan, dtype=np.float64):
            a = np.full(v.shape[:-1] + (ny, nx), fill, dtype=dtype)
            a[..., iy, ix] = v
            return a

        data = {k: (("y", "x"), to_grid(land[k]), {"units": u, "long_name": ln}) for k, (u, ln) in COVARIATES.items()}
        data["land_cover"] = (("y", "x"), to_grid(land["land_cover"], 0, np.int16), dict(cube["land_cover"].attrs))
        for k in ("air_temp_c", "precip_mm"):
            data[k] = (("month", "y", "x"), to_grid(land[k], dtype=np.float32), dict(cube[k].attrs))
        new = grid.assign(data).assign_coords(month=("month", np.arange(1, 13)))
        how = "regenerated (synthetic twin, seed %d)" % int(cube.attrs["seed"])
    else:
        src = cube[[*covariates, *[v for v in CLIMATE_VARS if v != "land_mask"]]]
        cont = [v for v in src.data_vars if v != "land_cover"]
        new = src[cont].interp(y=grid["y"], x=grid["x"], method="linear")
        new["land_cover"] = src["land_cover"].sel(y=grid["y"], x=grid["x"], method="nearest").fillna(0).astype(np.int16)
        new = new.assign_coords(y=grid["y"], x=grid["x"])
        new["land_mask"] = grid["land_mask"]
        how = "interpolated (linear; land cover nearest)"
    new = new.drop_vars("spatial_ref", errors="ignore")
    new.attrs = {**{k: v for k, v in cube.attrs.items() if k != "resolution_deg"},
                 "resolution_deg": float(resolution), "regridded_from": f"{cube_resolution(cube)} deg, {how}"}
    new = new.rio.write_crs(S.CRS)
    chunk = {"y": min(256, ny), "x": min(512, nx)}
    for name in new.data_vars:
        var = new[name]
        var.encoding["chunks"] = tuple(chunk.get(d, new.sizes[d]) for d in var.dims)
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        new.to_zarr(tmp, mode="w", consolidated=True)
    tmp.rename(out)
    log.info("regridded the cube to %g deg (%s): %s", resolution, how, out)
    return out


# ----------------------------------------------------------------------------------------
# the store template and progress
# ----------------------------------------------------------------------------------------

def _windows(ny: int, nx: int, chunks: int) -> list[tuple[tuple[int, int], int, int, int, int]]:
    out = []
    for i, y0 in enumerate(range(0, ny, chunks)):
        for j, x0 in enumerate(range(0, nx, chunks)):
            out.append(((i, j), y0, min(ny, y0 + chunks), x0, min(nx, x0 + chunks)))
    return out


def create_template(path: Path, cube, specs: dict[str, S.VarSpec], chunks: int, attrs: dict[str, Any]) -> None:
    """Write the store's metadata (no data) with Zarr chunks equal to the processing windows."""
    import dask.array as da
    import rioxarray  # noqa: F401
    import xarray as xr

    from socmap.clm5.grid import INTERFACE_BOTTOM_M, INTERFACE_TOP_M, NODE_M

    ny, nx = cube.sizes["y"], cube.sizes["x"]
    cy, cx = min(chunks, ny), min(chunks, nx)
    data = {}
    for name, spec in specs.items():
        shape = (ny, nx, 20) if spec.layered else (ny, nx)
        ch = (cy, cx, 20) if spec.layered else (cy, cx)
        fill = np.nan if spec.dtype == "float32" else 0
        arr = da.full(shape, fill, dtype=spec.dtype, chunks=ch)
        data[name] = (spec.dims, arr, {"units": spec.units, "long_name": spec.long_name, "kind": spec.kind})
    ds = xr.Dataset(
        data,
        coords={
            "y": ("y", cube["y"].values, dict(cube["y"].attrs) or {"units": "degrees_north", "standard_name": "latitude"}),
            "x": ("x", cube["x"].values, dict(cube["x"].attrs) or {"units": "degrees_east", "standard_name": "longitude"}),
            "layer": ("layer", np.arange(20, dtype=np.int16), {"long_name": "CLM5 soil layer index (0 = top)", "units": "1"}),
            "depth_m": ("layer", NODE_M.astype(np.float32), {"long_name": "depth of the layer node", "units": "m", "positive": "down"}),
            "layer_top_m": ("layer", INTERFACE_TOP_M.astype(np.float32), {"long_name": "depth of the layer top", "units": "m"}),
            "layer_bottom_m": ("layer", INTERFACE_BOTTOM_M.astype(np.float32), {"long_name": "depth of the layer bottom", "units": "m"}),
        },
        attrs=attrs,
    )
    ds = ds.rio.write_crs(S.CRS).rio.set_spatial_dims(x_dim="x", y_dim="y")
    ds.attrs.update(attrs)  # write_crs drops a "crs" attribute
    for name, spec in specs.items():
        ds[name].encoding["chunks"] = ((cy, cx, 20) if spec.layered else (cy, cx))
        ds[name].encoding["_FillValue"] = np.nan if spec.dtype == "float32" else None
        ds[name].encoding["grid_mapping"] = "spatial_ref"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        ds.to_zarr(path, mode="w", compute=False, consolidated=True, zarr_format=2)


def _read_progress(partial: Path) -> dict[str, Any] | None:
    f = partial / S.PROGRESS_FILE
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def _write_progress(partial: Path, progress: dict[str, Any]) -> None:
    f = partial / S.PROGRESS_FILE
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(progress))
    tmp.replace(f)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------
# schedulers
# ----------------------------------------------------------------------------------------

def _check_scheduler_address(scheduler: str | None) -> None:
    if scheduler and scheduler != "synchronous" and not scheduler.startswith(("tcp://", "tls://", "ws://", "wss://", "inproc://", "ucx://")):
        raise MappingError(f"--scheduler {scheduler!r} is not a Dask scheduler address (like tcp://host:8786) "
                           "nor 'synchronous'")


def connect(scheduler: str | None, workers: int | None, n_tasks: int, timeout_s: float = 5.0):
    """``(client, cluster)`` for a scheduler address, a new LocalCluster (None) or (None, None) for
    ``"synchronous"``. An unreachable address raises :class:`MappingError` within ``timeout_s``."""
    if scheduler == "synchronous":
        return None, None
    import dask
    from distributed import Client, LocalCluster

    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core", "distributed.http.proxy",
                 "distributed.batched", "distributed.worker"):
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger(name).setLevel(logging.WARNING)

    if scheduler:
        _check_scheduler_address(scheduler)
        try:
            with dask.config.set({"distributed.comm.timeouts.connect": f"{timeout_s}s"}):
                client = Client(scheduler, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError) as exc:
            raise MappingError(f"cannot reach the Dask scheduler at {scheduler} within {timeout_s:g} s: {exc}") from exc
        if not client.scheduler_info().get("workers"):
            try:
                client.wait_for_workers(1, timeout=timeout_s)
            except TimeoutError as exc:
                client.close()
                raise MappingError(f"the Dask scheduler at {scheduler} has no workers") from exc
        return client, None
    n = workers or os.cpu_count() or 1
    n = max(1, min(n, n_tasks))
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    return client, cluster


# ----------------------------------------------------------------------------------------
# the driver
# ----------------------------------------------------------------------------------------

@dataclass
class MapOptions:
    resolution: float | None = None
    chunks: int = 256
    scheduler: str | None = None
    ensemble: bool = False
    compare: str | None = None
    workers: int | None = None
    method: str = "structured"
    batch: int = 4096  # cells per solve: ~2-4k keeps the [12, 20, B] forcing pieces cache-friendly
    out: str | None = None  # store path (default: run_dir/maps.zarr)
    max_chunks: int | None = None  # map only the first N windows with land (benchmarks); the store stays partial
    stop_after: int | None = None  # test hook: raise MapInterrupted after N windows
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _fingerprint(run_dir: Path, cube_path: Path, opts: MapOptions, covariates: list[str]) -> str:
    rec = {
        "store_version": S.STORE_VERSION, "resolution": opts.resolution, "chunks": opts.chunks,
        "ensemble": opts.ensemble, "compare": str(Path(opts.compare).resolve()) if opts.compare else None,
        "method": opts.method, "cube": str(cube_path), "covariates": covariates,
        "run_json_mtime": os.path.getmtime(run_dir / "run.json"),
    }
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16]


def _check_writable(folder: Path) -> None:
    if not folder.is_dir():
        raise MappingError(f"output folder {folder} does not exist")
    try:
        fd, probe = __import__("tempfile").mkstemp(prefix=".socmap-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise MappingError(f"cannot write to {folder} ({exc.strerror or exc}); choose a writable run folder") from exc


def write_site_residuals(run_dir: Path) -> Path | None:
    """``site_residuals.csv``: the run's held-out predictions with sim − obs and ln(sim/obs)."""
    import pandas as pd

    src = run_dir / "predictions.csv"
    if not src.is_file():
        log.warning("%s not found: no site residual table written", src)
        return None
    df = pd.read_csv(src)
    need = ["site_id", "lon", "lat", "fold", "depth_m", "soc_obs_g_m3", "soc_sim_g_m3"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise MappingError(f"{src} lacks column(s) {missing}")
    df = df[need].copy()
    df["residual_g_m3"] = df["soc_sim_g_m3"] - df["soc_obs_g_m3"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = df["soc_sim_g_m3"].to_numpy(float) / df["soc_obs_g_m3"].to_numpy(float)
        df["log_ratio"] = np.where(ratio > 0, np.log(np.where(ratio > 0, ratio, 1.0)), np.nan)
    out = run_dir / S.SITE_RESIDUALS
    tmp = out.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(out)
    return out


def map_run(run_dir: str | Path, opts: MapOptions | None = None, **kwargs: Any) -> dict[str, Any]:
    """Map a trained run into its Zarr store (see the module docstring); returns the ``map.json`` record."""
    import socmap
    from socmap.data.synthetic import COVARIATES
    from socmap.runs import open_run

    opts = opts or MapOptions(**kwargs)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    run_dir = Path(run_dir).resolve()
    if opts.chunks < 1:
        raise MappingError(f"--chunks must be >= 1, not {opts.chunks}")
    if opts.method not in ("structured", "dense"):
        raise MappingError(f"method must be 'structured' or 'dense', not {opts.method!r}")
    _check_scheduler_address(opts.scheduler)
    try:
        run = open_run(run_dir)
    except FileNotFoundError as exc:
        raise MappingError(str(exc)) from exc
    if not run.models:
        raise MappingError(f"run {run.name} has encoder {run.encoder!r}: mapping needs a hybrid (kan or mlp) run")
    if opts.ensemble and len(run.models) < 2:
        raise MappingError(f"--ensemble needs at least 2 fold models; run {run.name} has {len(run.models)}")
    covariates = list(run.models[0].spec.covariate_names)
    for m in run.models[1:]:
        if list(m.spec.covariate_names) != covariates:
            raise MappingError(f"the fold models of {run.name} use different covariates")
    store = Path(opts.out).resolve() if opts.out else S.store_path(run_dir)
    partial = store.parent / (store.name + S.PARTIAL_SUFFIX)
    _check_writable(store.parent)

    cube_path = run.data_dir / "cube.zarr"
    if not cube_path.exists():
        raise MappingError(f"the run's covariate cube {cube_path} does not exist (run.json data.dir = {run.data_dir})")
    cube = _open_zarr(str(cube_path))
    check_cube(cube, covariates, cube_path)
    res0 = cube_resolution(cube)
    resolution = res0 if opts.resolution is None else float(opts.resolution)
    if not (resolution > 0 and np.isfinite(resolution)):
        raise MappingError(f"--resolution must be a positive number of degrees, not {opts.resolution}")
    t = time.perf_counter()
    if abs(resolution - res0) > 1e-9:
        cube_path = regrid_cube(cube, resolution, covariates, run_dir / "cache" / f"cube_{resolution:g}deg.zarr")
        cube = _open_zarr(str(cube_path))
        check_cube(cube, covariates, cube_path)
    timings["regrid"] = time.perf_counter() - t

    compare_store = None
    if opts.compare:
        other = S.open_store(opts.compare)
        if not S.same_grid(other, cube):
            raise MappingError(f"--compare {opts.compare}: its store is on a {other.sizes['y']}×{other.sizes['x']} grid "
                               f"({other.attrs.get('resolution_deg')} deg), this map is {cube.sizes['y']}×{cube.sizes['x']} "
                               f"({resolution:g} deg); map both at the same --resolution")
        compare_store = str(S.store_path(Path(opts.compare).resolve()) if Path(opts.compare).name != S.STORE_NAME
                            else Path(opts.compare).resolve())

    ny, nx = cube.sizes["y"], cube.sizes["x"]
    windows = _windows(ny, nx, opts.chunks)
    land = np.asarray(cube["land_mask"].values, dtype=bool)
    n_land = int(land.sum())
    specs = S.variable_specs(covariates, ensemble=opts.ensemble, compare=compare_store is not None,
                             covariate_attrs={c: (cube[c].attrs.get("units", COVARIATES.get(c, ("1",))[0]),
                                                  cube[c].attrs.get("long_name", COVARIATES.get(c, ("", c))[1])) for c in covariates})
    fingerprint = _fingerprint(run_dir, cube_path, opts, covariates)

    # connect before touching the output, so an unreachable scheduler leaves nothing behind
    t = time.perf_counter()
    client, cluster = connect(opts.scheduler, opts.workers, len(windows))
    timings["connect"] = time.perf_counter() - t
    try:
        progress = _read_progress(partial) if partial.exists() else None
        if progress is not None and progress.get("store_version") != S.STORE_VERSION:
            log.warning("%s was written by run store version %s (this is %s): starting again", partial,
                        progress.get("store_version"), S.STORE_VERSION)
            progress = None
        elif progress is not None and progress.get("fingerprint") != fingerprint:
            log.warning("%s was started with other arguments or another model: starting again", partial)
            progress = None
        if progress is None:
            shutil.rmtree(partial, ignore_errors=True)
            attrs = {
                "store_version": S.STORE_VERSION, "run_name": run.name, "run_dir": str(run_dir),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "socmap_version": socmap.__version__, "resolution_deg": float(resolution), "encoder": run.encoder,
                "crs": S.CRS, "ensemble": int(opts.ensemble), "n_models": len(run.models),
                "compare_run": str(opts.compare) if opts.compare else "", "method": opts.method,
                "covariates": covariates, "parameters_from": "ensemble mean of per-fold solves" if opts.ensemble
                else "mean of the fold models' normalised parameters (one solve)",
                "default_parameters": "CLM5 defaults (socmap.clm5.parameters.DEFAULT), one set for every cell",
                "Conventions": "CF-1.8", "title": f"socmap run store: {run.name}",
            }
            try:
                create_template(partial, cube, specs, opts.chunks, attrs)
            except OSError as exc:
                shutil.rmtree(partial, ignore_errors=True)
                raise MappingError(f"cannot create {partial}: {exc}") from exc
            progress = {"store_version": S.STORE_VERSION, "fingerprint": fingerprint, "chunks_done": {}}
            _write_progress(partial, progress)
            resumed = 0
        else:
            resumed = len(progress["chunks_done"])
            if resumed:
                log.info("resuming %s: %d of %d chunks already done", partial, resumed, len(windows))

        jobs = []
        for idx, y0, y1, x0, x1 in windows:
            job = ChunkJob(idx, y0, y1, x0, x1, str(run_dir), str(cube_path), str(partial), tuple(covariates),
                           opts.ensemble, opts.method, compare_store, opts.batch, single_thread=client is not None)
            if job.key not in progress["chunks_done"]:
                jobs.append(job)
        if opts.max_chunks is not None:
            with_land = [j for j in jobs if land[j.y0:j.y1, j.x0:j.x1].any()]
            jobs = with_land[: opts.max_chunks]
        t = time.perf_counter()
        stats = _run_jobs(jobs, client, partial, progress, opts)
        timings["chunks"] = time.perf_counter() - t
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    complete = len(progress["chunks_done"]) == len(windows)
    out_size = _dir_size(partial)
    if complete:
        t = time.perf_counter()
        write_site_residuals(run_dir)
        _finalise(partial, store)
        timings["finalise"] = time.perf_counter() - t
    seconds = time.perf_counter() - t_start
    cells = sum(s["cells"] for s in stats)
    stage = {k: round(sum(s["timings"][k] for s in stats), 3) for k in ("read", "forcing", "model", "write")}
    record = {
        "command": "socmap map",
        "arguments": {"run": str(run_dir), "resolution": resolution, "chunks": opts.chunks, "scheduler": opts.scheduler or "local",
                      "ensemble": opts.ensemble, "compare": opts.compare, "workers": opts.workers, "method": opts.method},
        "store": str(store if complete else partial), "complete": complete,
        "grid": [ny, nx], "land_cells": n_land, "chunks_total": len(windows), "chunks_run": len(stats),
        "chunks_resumed": resumed, "cells_mapped": cells, "cells_failed": sum(s["failed"] for s in stats),
        "seconds": round(seconds, 3), "cells_per_s": round(cells / timings["chunks"], 1) if timings.get("chunks") else None,
        "output_bytes": out_size, "timings_s": {**{k: round(v, 3) for k, v in timings.items()}, "worker_stage_sums": stage},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if complete and opts.out is None:
        (run_dir / S.MAP_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return record


def _run_jobs(jobs: list[ChunkJob], client, partial: Path, progress: dict[str, Any], opts: MapOptions) -> list[dict]:
    from tqdm.auto import tqdm

    stats: list[dict] = []
    bar = tqdm(total=len(jobs), desc="socmap map", unit="chunk", disable=not opts.progress)

    def done(s: dict) -> None:
        stats.append(s)
        progress["chunks_done"][s["key"]] = s["cells"]
        _write_progress(partial, progress)
        bar.update(1)
        bar.set_postfix_str(f"{sum(x['cells'] for x in stats)} cells")
        if opts.stop_after is not None and len(stats) >= opts.stop_after and len(stats) < len(jobs):
            raise MapInterrupted(f"stopped after {len(stats)} chunks (stop_after); re-run to resume")

    try:
        if client is None:
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # one worker, one thread (as the cluster workers)
            try:
                for job in jobs:
                    done(map_chunk(job))
            finally:
                torch.set_num_threads(threads)
        else:
            from distributed import as_completed

            futures = client.map(map_chunk, jobs, pure=False, key=[f"map_chunk-{j.key}-{os.getpid()}-{time.time_ns()}" for j in jobs])
            try:
                for fut in as_completed(futures):
                    done(fut.result())
            except BaseException:
                client.cancel(futures)
                raise
    except OSError as exc:
        raise MappingError(f"writing the store failed ({exc}); finished chunks are kept in {partial}, re-run to resume") from exc
    finally:
        bar.close()
    return stats


def _finalise(partial: Path, store: Path) -> None:
    """Remove the progress file and rename ``partial`` to ``store`` (swapping out an old store)."""
    (partial / S.PROGRESS_FILE).unlink(missing_ok=True)
    swap_into_place(partial, store)


def summary_lines(record: dict[str, Any]) -> list[str]:
    mb = record["output_bytes"] / 1e6
    lines = [
        f"{'mapped' if record['complete'] else 'partially mapped'} {record['cells_mapped']:,} cells "
        f"({record['land_cells']:,} land cells, grid {record['grid'][0]}×{record['grid'][1]}) in {record['chunks_run']} chunks"
        + (f" (+{record['chunks_resumed']} resumed)" if record["chunks_resumed"] else ""),
        f"{record['seconds']:.1f} s total, {record['cells_per_s'] or 0:,.0f} cells/s in the chunk phase; output {mb:.1f} MB → {record['store']}",
    ]
    if record["cells_failed"]:
        lines.append(f"warning: {record['cells_failed']} cells have no solution (NaN)")
    return lines
