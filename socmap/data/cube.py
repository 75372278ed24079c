"""Covariate cubes: open, check, sample at points, build cell forcing, scatter to the grid, regrid.

A *cube* is a ``cube.zarr`` xarray Dataset on an EPSG:4326 grid (``y`` latitude descending,
``x`` longitude ascending, cell centres) holding the encoder covariates ``(y, x)`` in physical
units, ``land_cover`` (IGBP int16, 0 off land), ``land_mask``, ``npp_g_m2_yr`` and the monthly
climate ``air_temp_c`` / ``precip_mm`` ``(month, y, x)``. Producers (the synthetic twin, the
real-data builder, or anything else) write it; this module is the one place that reads it.

Regridding (``socmap map --resolution``) is chosen by the cube attribute ``regrid``:

* ``"interpolate"`` (the default): xarray interpolation onto the CONUS grid at the new
  resolution — linear for continuous fields, nearest for land cover — with that grid's land mask.
* ``"regenerate"``: the producer named by ``regrid_producer`` (a module name) recomputes the
  cube at the new resolution. The module is imported by name only when needed and registers its
  regenerator with :func:`register_regenerator`, so nothing here imports any producer.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from socmap.data.grid import CRS
from socmap.fsutil import swap_into_place

log = logging.getLogger(__name__)

#: Cube variables the forcing derivation needs besides the encoder's covariates.
CLIMATE_VARS = ("air_temp_c", "precip_mm", "land_cover", "npp_g_m2_yr", "land_mask")

#: Regridding methods (cube attribute ``regrid``).
REGRID_INTERPOLATE = "interpolate"
REGRID_REGENERATE = "regenerate"

STATUS_OK = "ok"
STATUS_OUTSIDE = "outside grid"
STATUS_WATER = "water"

#: Title of twin cubes written before the ``regrid`` attribute existed (see :func:`regrid_method`).
_LEGACY_TWIN_TITLE = "socmap synthetic CONUS twin"
_LEGACY_TWIN_PRODUCER = "socmap.data.synthetic"

#: producer module name -> function(cube, grid) -> (regenerated Dataset, description)
_REGENERATORS: dict[str, Callable[[Any, Any], tuple[Any, str]]] = {}


class CubeError(ValueError):
    """A cube that cannot be used (CRS, missing variables, layout); the message says what to fix."""


# ----------------------------------------------------------------------------------------
# open and check
# ----------------------------------------------------------------------------------------

def open_cube(path: str | Path, *, lazy_numpy: bool = False):
    """Open a ``cube.zarr`` (or any socmap Zarr store) lazily, with its CRS decoded.

    ``decode_coords="all"`` turns the CF ``grid_mapping`` links into the ``spatial_ref``
    coordinate, so ``cube.rio.crs`` is EPSG:4326. ``lazy_numpy`` gives lazily indexed
    NumPy-backed variables instead of Dask arrays, so that a window read inside a Dask worker
    never schedules Dask work of its own.
    """
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        return xr.open_zarr(path, decode_coords="all", chunks=None if lazy_numpy else {})


def check_cube(cube, covariates: list[str] | tuple[str, ...], path: str | Path) -> None:
    """Raise :class:`CubeError` for a cube that cannot be mapped: CRS, missing variables, grid layout."""
    import rioxarray  # noqa: F401

    crs = cube.rio.crs
    if crs is None:
        raise CubeError(f"{path} has no CRS; socmap maps need EPSG:4326 (write it with rioxarray .rio.write_crs)")
    if crs.to_epsg() != 4326:
        raise CubeError(f"{path} is in {crs.to_string()}, but socmap maps need a cube in EPSG:4326 (lon/lat degrees); "
                        "reproject the cube first")
    missing_cov = [c for c in covariates if c not in cube.data_vars]
    if missing_cov:
        raise CubeError(f"{path} lacks covariate(s) {missing_cov} that the run's encoder needs "
                        f"(it was trained on {list(covariates)})")
    missing = [v for v in CLIMATE_VARS if v not in cube.data_vars]
    if missing:
        raise CubeError(f"{path} lacks variable(s) {missing} needed to derive the CLM5 forcing "
                        f"(monthly air_temp_c and precip_mm, land_cover, npp_g_m2_yr, land_mask)")
    for d in ("y", "x"):
        if d not in cube.dims:
            raise CubeError(f"{path} has no '{d}' dimension; cube dims are {dict(cube.sizes)}")
    y = cube["y"].values
    if y.size > 1 and not (np.diff(y) < 0).all():
        raise CubeError(f"{path}: y (latitude) must descend north → south")


def cube_resolution(cube) -> float:
    """Cell size in degrees: the ``resolution_deg`` attribute, else the ``x`` spacing."""
    res = cube.attrs.get("resolution_deg")
    if res is None:
        res = abs(float(cube["x"].values[1] - cube["x"].values[0]))
    return float(res)


# ----------------------------------------------------------------------------------------
# points -> cells
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GridSample:
    """Nearest-cell lookup of points on a grid.

    ``iy``/``ix`` are -1 where the point is outside the grid; ``status`` is one of
    ``"ok"``, ``"outside grid"`` or ``"water"`` (inside the grid but not a land cell).
    """

    iy: np.ndarray
    ix: np.ndarray
    status: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return self.status == STATUS_OK


def _axis_index(coord: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the cell containing each value along a regular axis; -1 outside."""
    step = float(coord[1] - coord[0]) if coord.size > 1 else 1.0
    first_edge = coord[0] - step / 2
    idx = np.floor((values - first_edge) / step).astype(np.int64, copy=False) if values.size else np.zeros(0, np.int64)
    bad = ~np.isfinite(values) | (idx < 0) | (idx >= coord.size)
    return np.where(bad, -1, idx)


def sample_grid(ds, lon, lat) -> GridSample:
    """Nearest grid cell of each point (lon, lat in degrees, shape [N]) and whether it is usable.

    Points outside the grid extent get status ``"outside grid"``; points on a non-land cell
    (``ds.land_mask`` False) get ``"water"``; the others ``"ok"``.
    """
    lon = np.atleast_1d(np.asarray(lon, dtype=float))
    lat = np.atleast_1d(np.asarray(lat, dtype=float))
    if lon.shape != lat.shape:
        raise ValueError(f"lon and lat must have the same shape; got {lon.shape} and {lat.shape}")
    ix = _axis_index(np.asarray(ds["x"].values, dtype=float), lon)
    iy = _axis_index(np.asarray(ds["y"].values, dtype=float), lat)
    outside = (ix < 0) | (iy < 0)
    ix = np.where(outside, -1, ix)
    iy = np.where(outside, -1, iy)
    status = np.full(lon.shape, STATUS_OK, dtype=object)
    status[outside] = STATUS_OUTSIDE
    if "land_mask" in ds:
        mask = np.asarray(ds["land_mask"].values, dtype=bool)
        inside = ~outside
        water = np.zeros(lon.shape, dtype=bool)
        water[inside] = ~mask[iy[inside], ix[inside]]
        status[water] = STATUS_WATER
    return GridSample(iy=iy, ix=ix, status=status.astype(str))


def sample_cube(cube, lon, lat, variables: list[str] | None = None) -> dict[str, np.ndarray]:
    """Cube values at points (nearest cell; NaN where the point is not on a land cell).

    ``variables`` default to the cube's ``numeric_covariates`` attribute plus ``land_cover``;
    ``(y, x)`` variables come back as [N], ``(month, y, x)`` ones (``air_temp_c``,
    ``precip_mm``) as [N, 12]. ``status`` holds each point's :class:`GridSample` status.
    """
    where = sample_grid(cube, lon, lat)
    names = list(variables) if variables is not None else [*cube.attrs.get("numeric_covariates", []), "land_cover"]
    out: dict[str, np.ndarray] = {"status": where.status}
    ok = where.ok
    for k in [*names, *(m for m in ("air_temp_c", "precip_mm") if m not in names)]:
        monthly = "month" in cube[k].dims
        v = np.full((len(ok), 12) if monthly else len(ok), np.nan)
        if ok.any():
            vals = cube[k].values
            v[ok] = vals[:, where.iy[ok], where.ix[ok]].T if monthly else vals[where.iy[ok], where.ix[ok]]
        out[k] = v
    return out


def cell_values(cube, names: list[str] | tuple[str, ...], iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Covariates ``names`` at cells (iy, ix) as float64 [N, len(names)] (physical units)."""
    if not len(names):
        return np.zeros((len(iy), 0))
    return np.column_stack([np.asarray(cube[n].values[iy, ix], dtype=np.float64) for n in names])


#: The cube variables :func:`cell_forcing` derives the forcing from (with the ``y`` coordinate: latitude).
FORCING_VARS: tuple[str, ...] = ("air_temp_c", "precip_mm", "land_cover", "npp_g_m2_yr")


def cell_forcing(cube, iy: np.ndarray, ix: np.ndarray, lat: np.ndarray | None = None, *, in_memory: bool = False):
    """CLM5 :class:`~socmap.clm5.forcing.Forcing` derived from the cube's climate at cells (iy, ix).

    Nothing per cell is stored: the forcing is a deterministic function of the stored monthly
    climate, land cover, NPP and latitude (``lat`` [N] degrees, default the cell centres).
    ``in_memory``: the caller has loaded ``cube`` (e.g. one window of it), so the cells are
    gathered with NumPy indexing; xarray's vectorised ``isel`` (which reads only those cells of a
    lazily opened cube) costs ~7x more per cell.
    """
    import xarray as xr

    from socmap.climate_forcing import derive_forcing

    iy = np.asarray(iy)
    ix = np.asarray(ix)
    if in_memory:
        def column(name: str, *lead: str) -> np.ndarray:  # [N, ...] of a [..., y, x] variable
            return np.moveaxis(cube[name].transpose(*lead, "y", "x").values[..., iy, ix], -1, 0).astype(np.float64)
        air, precip = column("air_temp_c", "month"), column("precip_mm", "month")
        land_cover, npp = column("land_cover").astype(np.int64), column("npp_g_m2_yr")
    else:
        sel = cube[list(FORCING_VARS)].isel(y=xr.DataArray(iy, dims="site"), x=xr.DataArray(ix, dims="site")).load()
        air = sel["air_temp_c"].transpose("site", "month").values.astype(np.float64)
        precip = sel["precip_mm"].transpose("site", "month").values.astype(np.float64)
        land_cover, npp = sel["land_cover"].values.astype(np.int64), sel["npp_g_m2_yr"].values.astype(np.float64)
    lat = cube["y"].values[iy] if lat is None else np.asarray(lat, dtype=np.float64)
    return derive_forcing(air, precip, land_cover, lat, npp_g_m2_yr=npp)


def climate_ok(cube) -> np.ndarray:
    """Cells [ny, nx] whose climate, NPP and land cover allow deriving the forcing."""
    return (np.isfinite(cube["air_temp_c"].values).all(0) & np.isfinite(cube["precip_mm"].values).all(0)
            & np.isfinite(cube["npp_g_m2_yr"].values) & (cube["land_cover"].values > 0))


def to_grid(values: np.ndarray, iy: np.ndarray, ix: np.ndarray, shape: tuple[int, int],
            fill: float = np.nan, dtype=np.float64) -> np.ndarray:
    """Scatter per-cell ``values`` [..., N] onto a grid [..., ny, nx] at cells (iy, ix); ``fill`` elsewhere."""
    out = np.full(values.shape[:-1] + tuple(shape), fill, dtype=dtype)
    out[..., iy, ix] = values
    return out


# ----------------------------------------------------------------------------------------
# regridding
# ----------------------------------------------------------------------------------------

def register_regenerator(producer: str) -> Callable:
    """Decorator: register ``fn(cube, grid) -> (Dataset, description)`` as the regenerator of ``producer``.

    ``producer`` is the module name a cube names in its ``regrid_producer`` attribute; the
    function returns the cube's covariates, ``land_cover`` and monthly climate on ``grid``
    (a :func:`socmap.data.grid.conus_grid`).
    """
    def deco(fn: Callable) -> Callable:
        _REGENERATORS[producer] = fn
        return fn
    return deco


def regrid_method(attrs: dict[str, Any]) -> tuple[str, str | None]:
    """``(method, producer)`` for a cube's attributes (see the module docstring)."""
    method = attrs.get("regrid")
    if method is None:
        # Compatibility: twin cubes written before the "regrid" attribute carry only the title
        # and the seed; they were (and still are) regenerated from the seed.
        if attrs.get("title") == _LEGACY_TWIN_TITLE and "seed" in attrs:
            return REGRID_REGENERATE, _LEGACY_TWIN_PRODUCER
        return REGRID_INTERPOLATE, None
    if method not in (REGRID_INTERPOLATE, REGRID_REGENERATE):
        raise CubeError(f"cube attribute regrid={method!r} is not {REGRID_INTERPOLATE!r} or {REGRID_REGENERATE!r}")
    producer = attrs.get("regrid_producer") if method == REGRID_REGENERATE else None
    if method == REGRID_REGENERATE and not producer:
        raise CubeError("cube attribute regrid='regenerate' needs a regrid_producer attribute (a module name)")
    return method, producer


def _regenerate(cube, grid, producer: str):
    if producer not in _REGENERATORS:
        try:
            importlib.import_module(producer)
        except ImportError as exc:
            raise CubeError(f"the cube's regrid_producer {producer!r} cannot be imported ({exc})") from exc
    fn = _REGENERATORS.get(producer)
    if fn is None:
        raise CubeError(f"module {producer!r} registers no cube regenerator (socmap.data.cube.register_regenerator)")
    return fn(cube, grid)


def _interpolate(cube, grid, covariates: list[str]):
    src = cube[[*covariates, *[v for v in CLIMATE_VARS if v != "land_mask"]]]
    cont = [v for v in src.data_vars if v != "land_cover"]
    new = src[cont].interp(y=grid["y"], x=grid["x"], method="linear")
    new["land_cover"] = src["land_cover"].sel(y=grid["y"], x=grid["x"], method="nearest").fillna(0).astype(np.int16)
    new = new.assign_coords(y=grid["y"], x=grid["x"])
    new["land_mask"] = grid["land_mask"]
    return new, "interpolated (linear; land cover nearest)"


def regrid_cube(cube, resolution: float, covariates: list[str], out: Path) -> Path:
    """Write ``cube`` at ``resolution`` degrees to the Zarr folder ``out`` (once; reused later).

    An existing ``out`` holding every needed variable is reused; the method follows
    :func:`regrid_method`. Returns ``out``.
    """
    import rioxarray  # noqa: F401

    from socmap.data.grid import conus_grid

    if out.exists():
        existing = open_cube(out)
        if all(v in existing.data_vars for v in [*covariates, *CLIMATE_VARS]):
            return out
        shutil.rmtree(out)
    grid = conus_grid(resolution)
    ny, nx = grid["land_mask"].shape
    method, producer = regrid_method(cube.attrs)
    new, how = _regenerate(cube, grid, producer) if method == REGRID_REGENERATE else _interpolate(cube, grid, covariates)
    new = new.drop_vars("spatial_ref", errors="ignore")
    new.attrs = {**{k: v for k, v in cube.attrs.items() if k != "resolution_deg"},
                 "resolution_deg": float(resolution), "regridded_from": f"{cube_resolution(cube)} deg, {how}"}
    new = new.rio.write_crs(CRS)
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
    swap_into_place(tmp, out)
    log.info("regridded the cube to %g deg (%s): %s", resolution, how, out)
    return out
