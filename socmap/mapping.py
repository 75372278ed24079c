"""``socmap map``: a trained run's covariate cube -> the Zarr run store, window by window on Dask.

The driver (:func:`map_run`) runs named steps: open the run and its cube (regridded once to
``--resolution`` into ``runs/NAME/cache/cube_<R>deg.zarr`` by :func:`socmap.data.cube.regrid_cube`),
start or resume the partial store (:func:`socmap.store.create_template`, with every fold
model's profile at the training sites), run one task per ``chunks × chunks`` window, and
finish (``site_residuals.csv``, the CONUS totals of :mod:`socmap.totals` into the store's
``totals`` attribute, rename, ``map.json`` with the same totals). The schema is in :mod:`socmap.store`.

Each window task (:func:`map_chunk`) reads the window's covariates and climate, derives the CLM5
forcing of its land cells (:func:`socmap.data.cube.cell_forcing`), predicts them with the one cell
function (:func:`socmap.cells.predict_cells`), and writes every variable into the window's
region of the store. Windows are aligned with the store's Zarr chunks, so parallel writers
never touch the same chunk.

Scheduling (:mod:`socmap.cluster`): a ``distributed.LocalCluster`` (processes, one thread each,
torch set to one thread in the task) sized to the machine by default; ``scheduler="tcp://host:port"``
submits the same tasks to an existing cluster (its workers need the run folder and the cube at
the same paths, e.g. a shared filesystem); ``scheduler="synchronous"`` runs in this process.

Safety: the store is built as ``maps.zarr.partial`` with a progress file listing finished windows
(written only by the driver, after a window's task has returned), so an interrupted run resumes
where it stopped when re-run with the same arguments; when every window is done the progress
file is removed and the folder renamed to ``maps.zarr`` (an existing store is swapped out).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from socmap import store as S
from socmap.cluster import SchedulerError, check_scheduler_address, connect, start_worker_server
from socmap.data.cube import (
    CLIMATE_VARS,
    CubeError,
    cell_forcing,
    cell_values,
    check_cube,
    climate_ok,
    cube_resolution,
    regrid_cube,
    sample_grid,
)
from socmap.data.covariates import WETLAND_FRACTION
from socmap.fsutil import probe_writable, swap_into_place, write_atomic
from socmap.kan_curves import write_kan_curves
from socmap.stages import StageClock, sum_stages
from socmap.windows import WindowTask, cached_cube, grid_windows, run_tasks

log = logging.getLogger(__name__)

#: Test hook: seconds to sleep in each chunk task (lets a test kill a run part-way).
_DELAY_ENV = "SOCMAP_MAP_TEST_DELAY_S"


class MappingError(RuntimeError):
    """Bad input or environment for ``socmap map`` (message meant for the user)."""


class MapInterrupted(MappingError):
    """Mapping stopped before all chunks were done (``stop_after``); the partial store remains."""


# ----------------------------------------------------------------------------------------
# one window (the task)
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChunkJob(WindowTask):
    """Everything one chunk task needs: the window (:class:`socmap.windows.WindowTask`) and the map's options."""

    ensemble: bool = False
    method: str = "structured"
    compare_store: str | None = None
    batch: int = 4096  # cells per solve: ~2-4k keeps the [12, 20, B] forcing pieces cache-friendly
    single_thread: bool = False
    hybrid: bool = True  # False: a baseline run (no parameter or diagnostic variables)
    allow_partial: bool = False  # the driver mapped a partial ensemble (socmap.runs.open_run)
    device: str = "cpu"  # resolved on the worker (socmap.devices.resolve_device)
    default_cache: str | None = None  # folder of the cube's cached CLM5-default stocks (None: always solve)


@lru_cache(maxsize=4)
def _models(run_dir: str, stamp: float, allow_partial: bool = False):
    from socmap.runs import open_run

    return open_run(run_dir, allow_partial=allow_partial).predictors


def load_models(run_dir: str | Path, allow_partial: bool = False):
    """The run's fold models (hybrid or baseline), cached per process (a worker loads them once
    per run.json version)."""
    run_dir = str(Path(run_dir).resolve())
    return _models(run_dir, os.path.getmtime(Path(run_dir) / "run.json"), allow_partial)


def default_cache_dir(cube_path: str | Path) -> Path:
    """The folder beside a cube that caches its CLM5-default stocks per window (:class:`DefaultStockCache`)."""
    p = Path(cube_path)
    return p.with_name(p.name.removesuffix(".zarr") + "_default_stocks")


_UNWRITABLE_CACHES: set[str] = set()  # cache folders a write already failed in (warned once)


class DefaultStockCache:
    """The CLM5-default stocks of one window's cells, cached beside the cube.

    The default map solves every cell with one parameter set (``socmap.cells.solve_default_stocks``),
    so it depends on the window's forcing inputs, the forcing constants, the solver and the
    socmap version only — not on the run. A second map on the same cube (another run, a re-map)
    reads it instead of solving every cell a second time. The file name is a content key over
    all of that (the cells ``iy, ix``, the window's :data:`~socmap.data.cube.FORCING_VARS` and
    latitudes, :class:`~socmap.forcing_config.ForcingConfig`, the default θ, ``method``,
    ``device``, ``socmap.__version__``), so a changed input reads as a miss and is solved
    again; nothing is ever invalidated in place. Entries are ``<key>.npz`` (float64 [N] per
    stock, ~16 B per cell), written atomically; stale ones may be deleted at any time. A folder
    that cannot be written only costs the solve (logged).

    Parameters
    ----------
    folder : str
        :func:`default_cache_dir` of the cube.
    win : xarray.Dataset
        The window (its ``FORCING_VARS`` and ``y``).
    iy, ix : ndarray [N]
        The window's solved cells, in the order of the cached arrays.
    method, device : str
        Solver method and the torch device the stocks are solved on.
    """

    def __init__(self, folder: str, win, iy: np.ndarray, ix: np.ndarray, method: str, device: str) -> None:
        import socmap
        from socmap.clm5.parameters import DEFAULT
        from socmap.data.cube import FORCING_VARS
        from socmap.forcing_config import ForcingConfig

        h = hashlib.blake2b(digest_size=20)
        h.update(json.dumps({"socmap": socmap.__version__, "method": method, "device": device, "stocks": S.STOCKS,
                             "forcing_config": repr(ForcingConfig()), "default_theta": np.asarray(DEFAULT).tolist()},
                            sort_keys=True).encode())
        for arr in (iy, ix, win["y"].values, *(win[v].values for v in FORCING_VARS)):
            a = np.ascontiguousarray(arr)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        self.n = int(np.asarray(iy).size)
        self.path = Path(folder) / f"{h.hexdigest()}.npz"

    def read(self) -> dict[str, np.ndarray] | None:
        """The cached stocks ``{stock: float64 [N]}``, or None (absent, unreadable or of other cells)."""
        import zipfile

        if not self.path.is_file():
            return None
        try:
            with np.load(self.path) as z:
                out = {k: np.asarray(z[k], dtype=np.float64) for k in S.STOCKS}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("ignoring the unreadable default-stock cache %s (%s): solving again", self.path, exc)
            return None
        return out if all(v.shape == (self.n,) for v in out.values()) else None

    def write(self, stocks: dict[str, np.ndarray]) -> None:
        """Store ``stocks`` ``{stock: [N]}`` atomically; a folder that cannot be written is logged, not raised."""
        import io

        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(stocks[k], dtype=np.float64) for k in S.STOCKS})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, buf.getvalue())
        except OSError as exc:
            folder = str(self.path.parent)
            if folder not in _UNWRITABLE_CACHES:  # once per folder and process, not once per window
                _UNWRITABLE_CACHES.add(folder)
                log.warning("cannot cache the default stocks in %s (%s): the next map solves them again", folder, exc)


def map_chunk(job: ChunkJob) -> dict[str, Any]:
    """Compute one window and write it into the store; returns counts and the per-stage seconds
    (:class:`socmap.stages.StageClock` table: read, covariates, default_cache, forcing, prepare,
    encoder, solve, stocks, diagnostics, solve_default, assemble, write)."""
    import torch

    from socmap.cells import predict_columns, solve_default_stocks, wetland_fraction
    from socmap.clm5 import prepare_forcing
    from socmap.devices import resolve_device

    t0 = time.perf_counter()
    if job.single_thread:
        torch.set_num_threads(1)
    clock = StageClock()
    with clock.stage("read"):
        cube = cached_cube(job.cube_path, True)
        names = list(job.covariates)
        extra = [WETLAND_FRACTION] if WETLAND_FRACTION in cube.data_vars and WETLAND_FRACTION not in names else []
        win = cube[[*names, *CLIMATE_VARS, *extra]].isel(y=slice(job.y0, job.y1), x=slice(job.x0, job.x1)).load()
    ny, nx = job.y1 - job.y0, job.x1 - job.x0
    with clock.stage("covariates"):
        land = np.asarray(win["land_mask"].values, dtype=bool)
        cov = np.stack([np.asarray(win[c].values, dtype=np.float64) for c in names], -1) if names else np.zeros((ny, nx, 0))
        valid = land & np.isfinite(cov).all(-1) & climate_ok(win)
        iy, ix = np.nonzero(valid)
        cov_cells = cov[iy, ix]  # [N, C], gathered once (not per batch)
        specs = S.variable_specs(names, ensemble=job.ensemble, compare=job.compare_store is not None, parameters=job.hybrid)
        arrays: dict[str, np.ndarray] = {}
        for name, spec in specs.items():
            shape = (ny, nx, 20) if spec.layered else (ny, nx)
            arrays[name] = np.full(shape, np.nan, dtype=np.float32) if spec.dtype == "float32" else np.zeros(shape, dtype=spec.dtype)
        for j, c in enumerate(names):
            arrays[c][iy, ix] = cov_cells[:, j]
        arrays[S.LAND_COVER][:] = np.where(land, np.nan_to_num(win["land_cover"].values), 0).astype(np.int16)
        arrays[S.LAND_MASK][:] = land.astype(np.uint8)

    failed = 0
    if iy.size:
        with clock.stage("models"):
            models = load_models(job.run_dir, job.allow_partial)
        dev = resolve_device(job.device)
        with clock.stage("default_cache"):
            cache = DefaultStockCache(job.default_cache, win, iy, ix, job.method, str(dev)) if job.default_cache else None
            known = cache.read() if cache is not None else None
        fresh = {k: np.empty(iy.size) for k in S.STOCKS} if known is None else None
        for start in range(0, iy.size, job.batch):
            sl = slice(start, min(iy.size, start + job.batch))
            with clock.stage("forcing"):
                forcing = cell_forcing(win, iy[sl], ix[sl], in_memory=True)
            with clock.stage("prepare"):
                prepared = prepare_forcing(forcing.to(torch.float64, dev))
            if fresh is not None:  # θ-independent: solved once per cube and cached (DefaultStockCache)
                for k, v in solve_default_stocks(prepared, job.method, clock).items():
                    fresh[k][sl] = v.cpu().numpy()
            defaults = {k: (fresh if known is None else known)[k][sl] for k in S.STOCKS}
            # an upland column, and a wetland column weighted by the cell's wetland share (docs/model.md §5.10)
            res = predict_columns(models, cov_cells[sl], prepared, wetland_fraction(win, iy[sl], ix[sl]),
                                  ensemble=job.ensemble, method=job.method, device=job.device, clock=clock,
                                  default_stocks=defaults).values
            with clock.stage("assemble"):
                failed += int((~np.isfinite(res["soc_stock_0_100cm"])).sum())
                for name, v in res.items():
                    arrays[name][iy[sl], ix[sl]] = v
        if cache is not None and fresh is not None:
            with clock.stage("default_cache"):
                cache.write(fresh)
    if job.compare_store is not None:
        with clock.stage("read"):
            other = cached_cube(job.compare_store, True)
            reg = dict(y=slice(job.y0, job.y1), x=slice(job.x0, job.x1))
            for s in S.STOCKS:
                arrays[S.DIFF_COMPARE_PREFIX + s][:] = arrays[s] - np.asarray(other[s].isel(**reg).values, dtype=np.float32)
    delay = float(os.environ.get(_DELAY_ENV, "0") or 0)
    if delay > 0:
        time.sleep(delay)
    with clock.stage("write"):
        S.write_window(job.store_path, arrays, job.y0, job.x0)
    return {"key": job.key, "cells": int(iy.size), "land": int(land.sum()), "failed": failed,
            "stages": clock.stages, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------
# the driver's steps
# ----------------------------------------------------------------------------------------

@dataclass
class MapOptions:
    """Arguments of ``socmap map`` (see the CLI help)."""

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
    allow_partial: bool = False  # map with the fold models that load (recorded in the store attrs)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (socmap.devices)
    default_cache: bool = True  # read/write the cube's CLM5-default stocks beside it (DefaultStockCache)


@dataclass
class _Inputs:
    """What the steps after :func:`_open_inputs` need."""

    run: Any  # socmap.runs.Run
    run_dir: Path
    covariates: list[str]
    model_files: list[str]
    cube: Any  # xr.Dataset at the mapping resolution
    cube_path: Path
    resolution: float
    store: Path
    partial: Path


def _check_options(opts: MapOptions) -> None:
    if opts.chunks < 1:
        raise MappingError(f"--chunks must be >= 1, not {opts.chunks}")
    if opts.method not in ("structured", "dense"):
        raise MappingError(f"method must be 'structured' or 'dense', not {opts.method!r}")
    from socmap.devices import DeviceError, check_device_name

    try:
        check_device_name(opts.device)
    except DeviceError as exc:
        raise MappingError(f"--device: {exc}") from exc
    try:
        check_scheduler_address(opts.scheduler)
    except SchedulerError as exc:
        raise MappingError(str(exc)) from exc


def _open_inputs(run_dir: Path, opts: MapOptions, timings: dict[str, float]) -> _Inputs:
    """Open and check the run (:func:`socmap.runs.open_run`: a damaged run raises its
    :class:`~socmap.runs.RunError`) and its cube (regridded to ``opts.resolution`` when asked)."""
    from socmap.runs import open_run

    run = open_run(run_dir, allow_partial=opts.allow_partial)
    if opts.ensemble and len(run.predictors) < 2:
        raise MappingError(f"--ensemble needs at least 2 fold models; run {run.name} has {len(run.predictors)}")
    from socmap.cells import cube_inputs

    covariates = cube_inputs(run.covariates)  # a wetland-flag input is set per column, not read from the cube
    store = Path(opts.out).resolve() if opts.out else S.store_path(run_dir)
    _check_writable(store.parent)

    cube_path = run.data_dir / "cube.zarr"
    if not cube_path.exists():
        raise MappingError(f"the run's covariate cube {cube_path} does not exist (run.json data.dir = {run.data_dir})")
    try:
        cube = cached_cube(str(cube_path))
        check_cube(cube, covariates, cube_path)
        res0 = cube_resolution(cube)
        resolution = res0 if opts.resolution is None else float(opts.resolution)
        if not (resolution > 0 and np.isfinite(resolution)):
            raise MappingError(f"--resolution must be a positive number of degrees, not {opts.resolution}")
        t = time.perf_counter()
        if abs(resolution - res0) > 1e-9:
            cube_path = regrid_cube(cube, resolution, covariates, run_dir / "cache" / f"cube_{resolution:g}deg.zarr")
            cube = cached_cube(str(cube_path))
            check_cube(cube, covariates, cube_path)
        timings["regrid"] = time.perf_counter() - t
    except CubeError as exc:
        raise MappingError(str(exc)) from exc
    return _Inputs(run, run_dir, covariates, run.fold_models, cube, cube_path, resolution,
                   store, store.parent / (store.name + S.PARTIAL_SUFFIX))


def _compare_store(opts: MapOptions, cube, resolution: float) -> str | None:
    """Path of the ``--compare`` store after checking it shares this map's grid (None without it)."""
    if not opts.compare:
        return None
    other = S.open_store(opts.compare)
    if not S.same_grid(other, cube):
        raise MappingError(f"--compare {opts.compare}: its store is on a {other.sizes['y']}×{other.sizes['x']} grid "
                           f"({other.attrs.get('resolution_deg')} deg), this map is {cube.sizes['y']}×{cube.sizes['x']} "
                           f"({resolution:g} deg); map both at the same --resolution")
    path = Path(opts.compare).resolve()
    return str(path if path.name == S.STORE_NAME else S.store_path(path))


def _variable_specs(inputs: _Inputs, opts: MapOptions, compare: bool) -> dict[str, S.VarSpec]:
    cube = inputs.cube
    attrs = {c: (cube[c].attrs.get("units", "1"), cube[c].attrs.get("long_name", c)) for c in inputs.covariates}
    return S.variable_specs(inputs.covariates, ensemble=opts.ensemble, compare=compare, covariate_attrs=attrs,
                            parameters=inputs.run.hybrid)


def _store_attrs(inputs: _Inputs, opts: MapOptions) -> dict[str, Any]:
    """The store's dataset attributes (schema in :mod:`socmap.store`)."""
    import socmap

    run = inputs.run
    data = dict(run.record.get("data", {}))
    data["dir"] = str(run.data_dir.resolve())
    return {
        "store_version": S.STORE_VERSION, "run_name": run.name, "run_dir": str(inputs.run_dir),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "socmap_version": socmap.__version__, "resolution_deg": float(inputs.resolution), "encoder": run.encoder,
        "crs": S.CRS, "parameters": list(run.models[0].spec.params) if run.models else [],
        "fold_models": inputs.model_files, "n_models": len(run.predictors), "data": data, "covariates": inputs.covariates,
        S.PARTIAL_ENSEMBLE_ATTR: int(run.partial), "fold_models_missing": list(run.missing_models),
        "ensemble": int(opts.ensemble), "compare_run": str(opts.compare) if opts.compare else "", "method": opts.method,
        "parameters_from": ("none: a baseline run (SOC is the mean of the fold models' predictions at the layer nodes)"
                            if not run.hybrid else "ensemble mean of per-fold solves" if opts.ensemble
                            else "mean of the fold models' normalised parameters (one solve)"),
        "default_parameters": "CLM5 defaults (socmap.clm5.parameters.DEFAULT), one set for every cell",
        "Conventions": "CF-1.8", "title": f"socmap run store: {run.name}",
    }


def _training_sites(run_dir: Path):
    """The run's training sites (``sites.csv``, else the sites of ``predictions.csv``), or None."""
    import pandas as pd

    if (run_dir / "sites.csv").is_file():
        return pd.read_csv(run_dir / "sites.csv")
    if (run_dir / "predictions.csv").is_file():
        pred = pd.read_csv(run_dir / "predictions.csv", usecols=["site_id", "lon", "lat"])
        return pred.drop_duplicates("site_id").reset_index(drop=True)
    log.warning("%s has neither sites.csv nor predictions.csv: no site profiles in the store", run_dir)
    return None


def site_profiles(inputs: _Inputs, batch: int = 4096, device: str = "cpu") -> S.SiteProfiles | None:
    """Every fold model's SOC profile at each training site (the store's ``site`` variables).

    Covariates come from the run's ``sites.csv`` when it has them, else from the cube at the
    site's cell; the forcing from the cube's climate at the site's cell (at the site's latitude).
    Sites off the land cells (or with incomplete inputs) get NaN profiles.
    """
    import xarray as xr

    from socmap.cells import predict_cells, with_flag_input

    sites = _training_sites(inputs.run_dir)
    if sites is None:
        return None
    cube, names, models = inputs.cube, inputs.covariates, inputs.run.predictors
    lon, lat = sites["lon"].to_numpy(np.float64), sites["lat"].to_numpy(np.float64)
    soc = np.full((len(sites), len(models), 20), np.nan)
    where = sample_grid(cube, lon, lat)
    ok = np.flatnonzero(where.ok)
    if ok.size:
        iy, ix = where.iy[ok], where.ix[ok]
        cov = (sites.loc[ok, names].to_numpy(np.float64) if all(n in sites for n in names)
               else cell_values(cube, names, iy, ix))
        at = cube[["air_temp_c", "precip_mm", "npp_g_m2_yr", "land_cover"]].isel(
            y=xr.DataArray(iy, dims="site"), x=xr.DataArray(ix, dims="site")).load()
        good = np.isfinite(cov).all(1) & climate_ok(at)
        ok, iy, ix, cov = ok[good], iy[good], ix[good], cov[good]
        # each site in its own land unit, as it was trained (a wetland site: the learned anoxia acts)
        flag = sites["wetland"].to_numpy(np.float64)[ok] if "wetland" in sites else np.zeros(ok.size)
        for wet in np.unique(flag):
            grp = np.flatnonzero(flag == wet)
            for start in range(0, grp.size, batch):
                sl = grp[start:start + batch]
                forcing = cell_forcing(cube, iy[sl], ix[sl], lat[ok[sl]])
                res = predict_cells(models, with_flag_input(models, cov[sl], wet), forcing, per_model=True, default=False,
                                    diagnostics=False, device=device, wetland=float(wet))
                soc[ok[sl]] = res.soc_models.transpose(1, 0, 2)
    return S.SiteProfiles(site_id=sites["site_id"].astype(str).to_numpy(), lon_deg=lon, lat_deg=lat,
                          soc_fold_g_m3=soc, models=tuple(inputs.model_files))


def _start_or_resume(inputs: _Inputs, opts: MapOptions, specs: dict[str, S.VarSpec], fingerprint: str,
                     n_windows: int, timings: dict[str, float], device: str = "cpu") -> tuple[dict[str, Any], int]:
    """The progress record of a resumable partial store, or a new template; ``(progress, resumed)``."""
    partial = inputs.partial
    progress = S.read_progress(partial) if partial.exists() else None
    if progress is not None and progress.get("store_version") != S.STORE_VERSION:
        log.warning("%s was written by run store version %s (this is %s): starting again", partial,
                    progress.get("store_version"), S.STORE_VERSION)
        progress = None
    elif progress is not None and progress.get("fingerprint") != fingerprint:
        log.warning("%s was started with other arguments or another model: starting again", partial)
        progress = None
    if progress is not None:
        resumed = len(progress["chunks_done"])
        if resumed:
            log.info("resuming %s: %d of %d chunks already done", partial, resumed, n_windows)
        return progress, resumed
    shutil.rmtree(partial, ignore_errors=True)
    t = time.perf_counter()
    from socmap.devices import torch_threads

    with torch_threads(1):  # a few hundred sites: more threads only wait on each other on a busy machine
        sites = site_profiles(inputs, opts.batch, device if opts.scheduler in (None, "synchronous") else "cpu")
    timings["sites"] = time.perf_counter() - t
    try:
        S.create_template(partial, inputs.cube, specs, opts.chunks, _store_attrs(inputs, opts), sites)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise MappingError(f"cannot create {partial}: {exc}") from exc
    progress = {"store_version": S.STORE_VERSION, "fingerprint": fingerprint, "chunks_done": {}}
    S.write_progress(partial, progress)
    return progress, 0


def _pending_jobs(inputs: _Inputs, opts: MapOptions, windows, progress: dict[str, Any], compare_store: str | None,
                  single_thread: bool, device: str = "cpu") -> list[ChunkJob]:
    """The windows still to do, largest land area first.

    Largest first because the tasks are few and uneven (10 windows at 0.05° with the default
    chunks, 0 to 65k land cells each): handed out in grid order, the last big window can start
    when the other workers are nearly idle, and the run waits on it.
    """
    jobs = [ChunkJob(idx, y0, y1, x0, x1, str(inputs.run_dir), str(inputs.cube_path), str(inputs.partial),
                     tuple(inputs.covariates), opts.ensemble, opts.method, compare_store, opts.batch, single_thread,
                     hybrid=inputs.run.hybrid, allow_partial=opts.allow_partial, device=device,
                     default_cache=str(default_cache_dir(inputs.cube_path)) if opts.default_cache else None)
            for idx, y0, y1, x0, x1 in windows]
    jobs = [j for j in jobs if j.key not in progress["chunks_done"]]
    land = np.asarray(inputs.cube["land_mask"].values, dtype=bool)
    if opts.max_chunks is not None:
        jobs = [j for j in jobs if land[j.y0:j.y1, j.x0:j.x1].any()][: opts.max_chunks]
    return sorted(jobs, key=lambda j: -int(land[j.y0:j.y1, j.x0:j.x1].sum()))


def warm_worker(run_dir: str, allow_partial: bool = False) -> float:
    """Import torch and the solver and load the run's models in a worker; returns the seconds taken."""
    t = time.perf_counter()
    import torch  # noqa: F401

    import socmap.cells  # noqa: F401
    import socmap.clm5.solver  # noqa: F401

    load_models(run_dir, allow_partial)
    return time.perf_counter() - t


def _warm_workers(client, run_dir: Path, allow_partial: bool) -> list:
    """Start :func:`warm_worker` on every worker without waiting, so that the ~1–2 s of imports and
    model loading per worker overlap the driver's site profiles and store template instead of
    delaying each worker's first window. Returns the futures (kept alive until the chunks are done)."""
    if client is None:
        return []
    workers = list(client.scheduler_info().get("workers", {}))
    return [client.submit(warm_worker, str(run_dir), allow_partial, workers=[w], allow_other_workers=False, pure=False,
                          key=f"warm-{i}-{os.getpid()}-{time.time_ns()}") for i, w in enumerate(workers)]


def _start_cluster(opts: MapOptions, n_workers: int | None, n_tasks: int, run_dir: Path,
                   timings: dict[str, float]) -> Future:
    """Connect to the scheduler and warm its workers; a future of ``(client, cluster, warm futures)``.

    An existing scheduler is connected to here and now, before the output is touched, so an
    unreachable one leaves nothing behind (:class:`MappingError`). A local cluster cannot be
    unreachable: it starts in a background thread while the driver computes the site profiles and
    the store template (its workers fork from the server :func:`start_worker_server` started).
    """
    def start() -> tuple[Any, Any, list]:
        t = time.perf_counter()
        client, cluster = connect(opts.scheduler, n_workers, n_tasks)
        timings["connect"] = time.perf_counter() - t
        return client, cluster, _warm_workers(client, run_dir, opts.allow_partial)

    if opts.scheduler is None:
        pool = ThreadPoolExecutor(1, thread_name_prefix="socmap-cluster")
        future = pool.submit(start)
        pool.shutdown(wait=False)  # the thread ends when the cluster is up
        return future
    done: Future = Future()
    try:
        done.set_result(start())
    except SchedulerError as exc:
        raise MappingError(str(exc)) from exc
    return done


def _job_device(opts: MapOptions) -> str:
    """The device name the chunk tasks get: resolved here for a local run (so that ``cuda`` on a
    machine without CUDA fails before any work), passed through for an existing cluster's workers."""
    from socmap.devices import DeviceError, check_device_name, resolve_device

    try:
        if opts.scheduler and opts.scheduler != "synchronous":
            return check_device_name(opts.device)
        return str(resolve_device(opts.device))
    except DeviceError as exc:
        raise MappingError(str(exc)) from exc


def map_run(run_dir: str | Path, opts: MapOptions | None = None, **kwargs: Any) -> dict[str, Any]:
    """Map a trained run into its Zarr store (see the module docstring); returns the ``map.json`` record."""
    opts = opts or MapOptions(**kwargs)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    run_dir = Path(run_dir).resolve()
    _check_options(opts)
    start_worker_server(opts.scheduler)  # its imports overlap the opening of the run and the cube
    inputs = _open_inputs(run_dir, opts, timings)
    compare_store = _compare_store(opts, inputs.cube, inputs.resolution)
    windows = grid_windows(inputs.cube.sizes["y"], inputs.cube.sizes["x"], opts.chunks)
    specs = _variable_specs(inputs, opts, compare_store is not None)
    fingerprint = _fingerprint(run_dir, inputs.cube_path, opts, inputs.covariates, inputs.model_files)

    device = _job_device(opts)
    # one GPU: one worker process drives it (several would only contend for it)
    n_workers = opts.workers or (1 if device.startswith("cuda") else None)
    starting = _start_cluster(opts, n_workers, len(windows), run_dir, timings)
    client = cluster = warm = None
    try:
        progress, resumed = _start_or_resume(inputs, opts, specs, fingerprint, len(windows), timings, device)
        t = time.perf_counter()
        try:
            client, cluster, warm = starting.result()
        except SchedulerError as exc:
            raise MappingError(str(exc)) from exc
        timings["cluster_wait"] = time.perf_counter() - t
        workers_used = len(client.scheduler_info().get("workers", {})) if client is not None else 1
        jobs = _pending_jobs(inputs, opts, windows, progress, compare_store, single_thread=client is not None,
                             device=device)
        t = time.perf_counter()
        stats = _run_jobs(jobs, client, inputs.partial, progress, opts)
        timings["chunks"] = time.perf_counter() - t
    finally:
        if client is None and starting.exception() is None:  # failed before the cluster was taken
            client, cluster, warm = starting.result()
        del warm
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    complete = len(progress["chunks_done"]) == len(windows)
    totals = None
    out_size = _dir_size(inputs.partial)
    if complete:
        t = time.perf_counter()
        write_site_residuals(run_dir)
        totals = _write_totals(inputs.partial)
        _finalise(inputs.partial, inputs.store)
        write_kan_curves(inputs.run, inputs.store.parent, store=inputs.store)  # the dashboard's KAN curves (socmap.kan_curves)
        timings["finalise"] = time.perf_counter() - t
    record = _record(inputs, opts, stats, timings, complete=complete, resumed=resumed, n_windows=len(windows),
                     out_size=out_size, seconds=time.perf_counter() - t_start, totals=totals,
                     workers_used=workers_used, device=device)
    if complete and opts.out is None:
        write_atomic(run_dir / S.MAP_RECORD, json.dumps(record, indent=1) + "\n")
    return record


def _write_totals(partial: Path) -> dict[str, Any]:
    """CONUS totals of the finished (still partial) store, written into its ``totals`` attribute
    before the store is renamed into place (:mod:`socmap.totals`)."""
    import warnings

    import zarr

    from socmap.totals import conus_totals

    totals = conus_totals(_open_partial(partial))
    with warnings.catch_warnings():  # the progress file is not part of the hierarchy
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy.*")
        group = zarr.open_group(str(partial), mode="r+")
        group.attrs["totals"] = totals
        zarr.consolidate_metadata(str(partial))
    return totals


def _open_partial(partial: Path):
    import warnings

    import xarray as xr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        return xr.open_zarr(partial, chunks=None)


def _record(inputs: _Inputs, opts: MapOptions, stats: list[dict], timings: dict[str, float], *, complete: bool,
            resumed: int, n_windows: int, out_size: int, seconds: float,
            totals: dict[str, Any] | None = None, workers_used: int = 1, device: str = "cpu") -> dict[str, Any]:
    """The ``map.json`` record: arguments, counts, timings and, for a complete store, the CONUS
    totals (:func:`socmap.totals.conus_totals`)."""
    cube = inputs.cube
    cells = sum(s["cells"] for s in stats)
    stages = sum_stages(s["stages"] for s in stats)
    busy = sum(s["seconds"] for s in stats)
    return {
        "command": "socmap map",
        "arguments": {"run": str(inputs.run_dir), "resolution": inputs.resolution, "chunks": opts.chunks,
                      "scheduler": opts.scheduler or "local", "ensemble": opts.ensemble, "compare": opts.compare,
                      "workers": opts.workers, "method": opts.method, "device": opts.device},
        "store": str(inputs.store if complete else inputs.partial), "complete": complete,
        "grid": [cube.sizes["y"], cube.sizes["x"]], "land_cells": int(np.asarray(cube["land_mask"].values, dtype=bool).sum()),
        "chunks_total": n_windows, "chunks_run": len(stats),
        "chunks_resumed": resumed, "cells_mapped": cells, "cells_failed": sum(s["failed"] for s in stats),
        "seconds": round(seconds, 3), "cells_per_s": round(cells / timings["chunks"], 1) if timings.get("chunks") else None,
        "output_bytes": out_size,
        # worker_stages: seconds summed over the chunk tasks (wall/user/sys per stage); task_seconds: the
        # tasks' own wall time, so workers × chunk phase − task_seconds is the scheduling overhead and idle time
        "timings_s": {**{k: round(v, 3) for k, v in timings.items()}, "worker_stages": stages,
                      "task_seconds": round(busy, 3)},
        "workers_used": workers_used, "device": device,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "totals": totals,
    }


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------

def _fingerprint(run_dir: Path, cube_path: Path, opts: MapOptions, covariates: list[str],
                 model_files: list[str] | None = None) -> str:
    rec = {"models": model_files,
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
        probe_writable(folder)
    except OSError as exc:
        raise MappingError(f"cannot write to {folder} ({exc.strerror or exc}); choose a writable run folder") from exc


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


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
    return write_atomic(run_dir / S.SITE_RESIDUALS, df.to_csv(index=False))


def _run_jobs(jobs: list[ChunkJob], client, partial: Path, progress: dict[str, Any], opts: MapOptions) -> list[dict]:
    from tqdm.auto import tqdm

    stats: list[dict] = []
    bar = tqdm(total=len(jobs), desc="socmap map", unit="chunk", disable=not opts.progress)

    def done(s: dict) -> None:
        stats.append(s)
        progress["chunks_done"][s["key"]] = s["cells"]
        S.write_progress(partial, progress)
        bar.update(1)
        bar.set_postfix_str(f"{sum(x['cells'] for x in stats)} cells")
        if opts.stop_after is not None and len(stats) >= opts.stop_after and len(stats) < len(jobs):
            raise MapInterrupted(f"stopped after {len(stats)} chunks (stop_after); re-run to resume")

    try:
        run_tasks(map_chunk, jobs, done, client)
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
    """Human summary of a ``map.json`` record (the CLI prints it)."""
    mb = record["output_bytes"] / 1e6
    lines = [
        f"{'mapped' if record['complete'] else 'partially mapped'} {record['cells_mapped']:,} cells "
        f"({record['land_cells']:,} land cells, grid {record['grid'][0]}×{record['grid'][1]}) in {record['chunks_run']} chunks"
        + (f" (+{record['chunks_resumed']} resumed)" if record["chunks_resumed"] else ""),
        f"{record['seconds']:.1f} s total, {record['cells_per_s'] or 0:,.0f} cells/s in the chunk phase; output {mb:.1f} MB → {record['store']}",
    ]
    if record["cells_failed"]:
        lines.append(f"warning: {record['cells_failed']} cells have no solution (NaN)")
    if record.get("totals"):
        from socmap.totals import totals_lines

        lines.extend(totals_lines(record["totals"]))
    return lines
