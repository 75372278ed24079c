"""User rasters as covariates: a catalog entry of kind ``raster`` adds one layer to the covariate cube.

An entry names a GeoTIFF or NetCDF file in any CRS and the one covariate it holds::

    entries:
      clay:
        kind: raster
        uri: soilgrids_clay_0-30cm_5070.tif     # relative to this catalog file
        format: geotiff                          # or netcdf
        crs: EPSG:5070                           # declared; checked against the file's own
        resampling: average                      # bilinear | nearest | average (optional)
        description: SoilGrids clay 0-30 cm, reprojected to CONUS Albers
        license: CC-BY-4.0
        variables:
          clay_pct: {units: "%", source_name: band_1, scale_factor: 0.1, nodata: 0}

The variable key is the covariate name in the cube (and the encoder's input name); its
``source_name`` is the band (``band_N``, a number, or a band description) of a GeoTIFF or the
variable of a NetCDF file; ``nodata`` (else the file's own nodata) becomes NaN; ``scale_factor``
and ``offset`` give physical values. Reading (:func:`read_raster`):

1. the file's CRS must equal the declared one (a file without a CRS takes the declared one):
   a mismatch is a :class:`RasterError` naming the entry, both CRSs and the fix;
2. the raster is clipped to the CONUS box (in its own CRS) — no overlap is an error;
3. it is reprojected onto the cube's EPSG:4326 grid with rioxarray (``reproject_match``) using
   the entry's ``resampling``, by default ``nearest`` for categories, ``average`` when a grid
   cell is larger than 1.5 source pixels, else ``bilinear``; nodata is excluded.

Land cells the raster does not cover (nodata or outside it) stay NaN: training drops the sites
there with the reason "covariate <name> missing", mapping leaves those cells empty. The cube's
attribute ``user_rasters_json`` records, per layer, the entry, the file, both CRSs, the
resampling, units and the land cells without a value (:func:`add_raster_layers`).
"""

from __future__ import annotations

import hashlib
import os
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from socmap.data.catalog import Catalog, Entry, load_catalog, quantity_of

log = logging.getLogger(__name__)

#: Cube variables a raster layer may not replace (the forcing and the grid need them as built).
RESERVED = ("land_mask", "land_cover", "air_temp_c", "precip_mm", "npp_g_m2_yr", "spatial_ref")


class RasterError(ValueError):
    """A raster entry that cannot be read as declared: names the catalog file, the entry, the field and the fix."""


def _where(entry: Entry) -> str:
    return f"{entry._catalog_path or '<catalog>'}: entry {entry.name!r}"


def raster_entries(catalog: Catalog | None = None) -> list[Entry]:
    """The non-template ``raster`` entries of ``catalog`` (default: the active catalog with its overlays)."""
    catalog = catalog or load_catalog()
    return [catalog.entry(n) for n in catalog.names("raster") if not catalog.entry(n).template]


def layer_name(entry: Entry) -> str:
    """The covariate name a raster entry adds (its one variable key)."""
    if len(entry.variables) != 1:
        raise RasterError(f"{_where(entry)}, field 'variables': a raster entry declares exactly one variable")
    return next(iter(entry.variables))


def fingerprint(entries: list[Entry]) -> str:
    """A short hash of the raster entries and their files (size, modification time): names a cube built with them."""
    parts = []
    for e in sorted(entries, key=lambda e: e.name):
        path = e.resolve_path(must_exist=True)
        st = path.stat()
        parts.append({"entry": e.model_dump(mode="json"), "file": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


def _same_crs(a, b) -> bool:
    from pyproj import CRS

    a, b = CRS.from_user_input(a), CRS.from_user_input(b)
    if a.equals(b, ignore_axis_order=True):
        return True
    ea, eb = a.to_epsg(min_confidence=70), b.to_epsg(min_confidence=70)
    return ea is not None and ea == eb


def _crs_label(crs) -> str:
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    code = c.to_epsg(min_confidence=70)
    return f"EPSG:{code} ({c.name})" if code else c.name


def _select(entry: Entry, path: Path):
    """The raw (y, x) DataArray of the entry's band / variable, with the file's CRS (or None)."""
    import rioxarray
    import xarray as xr

    name = layer_name(entry)
    source = entry.variables[name].source_name or name
    fmt = (entry.format or path.suffix.lstrip(".")).lower()
    try:
        if fmt in ("netcdf", "nc", "nc4", "hdf5", "h5"):
            ds = xr.open_dataset(path, decode_coords="all", mask_and_scale=False)
            if source not in ds.data_vars:
                raise RasterError(f"{_where(entry)}, field 'variables.{name}.source_name': {path} has no variable "
                                  f"{source!r}; it has {', '.join(map(str, ds.data_vars))}")
            da = ds[source]
            for xn, yn in (("x", "y"), ("lon", "lat"), ("longitude", "latitude")):
                if xn in da.dims and yn in da.dims:
                    da = da.rio.set_spatial_dims(x_dim=xn, y_dim=yn)
                    break
            if da.rio.crs is None and "crs" in da.attrs:
                da = da.rio.write_crs(da.attrs["crs"])
        else:
            da = rioxarray.open_rasterio(path, mask_and_scale=False)
            bands = [str(b) for b in da.attrs.get("long_name", ())] if isinstance(da.attrs.get("long_name"), tuple) else []
            token = str(source)
            if token.lower().startswith("band_"):
                token = token[5:]
            if token.isdigit():
                idx = int(token)
            elif token in bands:
                idx = bands.index(token) + 1
            elif da.sizes.get("band", 1) == 1 and source == name:
                idx = 1
            else:
                raise RasterError(f"{_where(entry)}, field 'variables.{name}.source_name': band {source!r} not in {path} "
                                  f"({da.sizes.get('band', 1)} band(s){'; names: ' + ', '.join(bands) if bands else ''}); "
                                  "write band_1 (or the band's number)")
            if not 1 <= idx <= da.sizes.get("band", 1):
                raise RasterError(f"{_where(entry)}, field 'variables.{name}.source_name': {path} has "
                                  f"{da.sizes.get('band', 1)} band(s), not band {idx}")
            da = da.sel(band=da["band"].values[idx - 1]) if "band" in da.dims else da
    except RasterError:
        raise
    except Exception as exc:  # rasterio/netCDF errors: not a raster socmap can read
        raise RasterError(f"{_where(entry)}, field 'uri': cannot read {path} as a {fmt} raster ({exc}); "
                          "give a GeoTIFF or NetCDF file and its format") from None
    extra = [d for d in da.dims if d not in (da.rio.y_dim, da.rio.x_dim)]
    for d in extra:
        if da.sizes[d] != 1:
            raise RasterError(f"{_where(entry)}, field 'variables.{name}.source_name': {source!r} has a dimension {d!r} of "
                              f"size {da.sizes[d]}; a raster covariate is one 2-D layer (select it in the file)")
        da = da.isel({d: 0})
    return da


def read_raster(entry: Entry):
    """The entry's layer as a float64 (y, x) DataArray in physical units, NaN for nodata, CRS checked.

    Raises :class:`RasterError` for a CRS that differs from the declared one, a missing band
    or variable, an unreadable file, or a raster that does not overlap CONUS.
    """
    from socmap.data.grid import CONUS_BOUNDS

    path = entry.resolve_path(must_exist=True)
    name = layer_name(entry)
    var = entry.variables[name]
    da = _select(entry, path)
    file_crs = da.rio.crs
    declared = entry.crs
    if file_crs is None:
        log.info("%s: %s has no CRS; using the declared %s", _where(entry), path, declared)
        da = da.rio.write_crs(declared)
    elif not _same_crs(file_crs, declared):
        raise RasterError(
            f"{_where(entry)}, field 'crs': {path} is in {_crs_label(file_crs)} but the entry declares "
            f"{_crs_label(declared)}. If the file is right, set `crs: {_crs_label(file_crs).split(' ')[0]}` in the entry; "
            "if the declaration is right, the file was written with a wrong CRS: reproject or re-tag it "
            "(e.g. gdalwarp -t_srs / gdal_edit.py -a_srs)")
    nodata = var.nodata if var.nodata is not None else da.rio.nodata
    if nodata is None:
        nodata = da.attrs.get("_FillValue")
    values = np.asarray(da.values, dtype=np.float64)
    if nodata is not None and np.isfinite(nodata):
        values = np.where(values == nodata, np.nan, values)
    values = values * var.scale_factor + var.offset
    out = da.copy(data=values).rio.write_nodata(np.nan)
    out.attrs = {"units": var.units, "long_name": var.long_name or entry.description.strip()}
    w, s, e, n = CONUS_BOUNDS
    try:
        out = out.rio.clip_box(w - 1.0, s - 1.0, e + 1.0, n + 1.0, crs="EPSG:4326")
    except Exception as exc:  # rioxarray.exceptions.NoDataInBounds, OneDimensionalRaster
        raise RasterError(f"{_where(entry)}, field 'uri': {path} ({_crs_label(out.rio.crs)}, bounds {out.rio.bounds()}) "
                          f"does not overlap CONUS ({exc}); check the file and its declared crs") from None
    return out


def _default_resampling(entry: Entry, src, target) -> str:
    name = layer_name(entry)
    if quantity_of(name, entry.variables[name]) == "category":
        return "nearest"
    target_m = abs(float(target["x"].values[1] - target["x"].values[0])) * 111_000.0
    res = np.abs(np.asarray(src.rio.resolution(), dtype=np.float64))
    source_m = float(res.max()) * (111_000.0 if src.rio.crs.is_geographic else 1.0)
    return "average" if target_m > 1.5 * source_m else "bilinear"


def regrid_raster(entry: Entry, src, cube) -> tuple[np.ndarray, str]:
    """``src`` (from :func:`read_raster`) on the cube's grid: ``(values [y, x] NaN off land, resampling)``."""
    from rasterio.enums import Resampling

    method = entry.resampling or _default_resampling(entry, src, cube)
    target = cube["land_mask"].astype(np.float32).rio.write_crs("EPSG:4326").rio.set_spatial_dims(x_dim="x", y_dim="y")
    out = src.astype(np.float64).rio.reproject_match(target, resampling=Resampling[method], nodata=np.nan)
    values = np.asarray(out.values, dtype=np.float64)
    if values.shape != target.shape:
        raise RasterError(f"{_where(entry)}: reprojection gave shape {values.shape}, the grid is {target.shape}")
    land = np.asarray(cube["land_mask"].values, dtype=bool)
    return np.where(land, values, np.nan), method


def add_raster_layers(cube, entries: list[Entry], progress: bool = False):
    """``cube`` with one covariate layer per raster entry (attrs, ``numeric_covariates``, ranges updated)."""
    from tqdm.auto import tqdm

    if not entries:
        return cube
    names = list(cube.attrs.get("numeric_covariates") or [])
    ranges = json.loads(cube.attrs.get("covariate_range_json") or "{}")
    records = json.loads(cube.attrs.get("user_rasters_json") or "{}")
    land = np.asarray(cube["land_mask"].values, dtype=bool)
    for entry in tqdm(entries, desc="user rasters", unit="layer", disable=not progress):
        name = layer_name(entry)
        if name in RESERVED or (name in cube.data_vars and name not in records):
            raise RasterError(f"{_where(entry)}, field 'variables': {name!r} is already a variable of the covariate cube "
                              f"(built by socmap); rename the variable key, e.g. {name + '_user'!r}")
        src = read_raster(entry)
        values, method = regrid_raster(entry, src, cube)
        missing = int((land & ~np.isfinite(values)).sum())
        if not np.isfinite(values).any():
            raise RasterError(f"{_where(entry)}: {entry.resolve_path()} has no value on any land cell of the grid "
                              "(all nodata after reprojection); check its nodata, extent and crs")
        var = entry.variables[name]
        cube[name] = (("y", "x"), values, {
            "units": var.units, "long_name": src.attrs.get("long_name", name), "source": str(entry.resolve_path()),
            "crs": _crs_label(src.rio.crs), "resampling": method, "catalog_entry": entry.name,
        })
        cube[name].encoding["grid_mapping"] = "spatial_ref"
        if name not in names:
            names.append(name)
        ranges[name] = [float(np.nanmin(values)), float(np.nanmax(values))]
        records[name] = {
            "entry": entry.name, "catalog": str(entry._catalog_path), "file": str(entry.resolve_path()),
            "declared_crs": entry.crs, "file_crs": _crs_label(src.rio.crs), "resampling": method, "units": var.units,
            "nodata": var.nodata, "scale_factor": var.scale_factor, "offset": var.offset,
            "land_cells_without_value": missing,
        }
        if missing:
            log.warning("raster %s: %d of %d land cells have no value (nodata or outside the raster); sites there are dropped",
                        name, missing, int(land.sum()))
    cube.attrs.update({"numeric_covariates": names, "covariate_range_json": json.dumps(ranges),
                       "user_rasters_json": json.dumps(records), "user_rasters_fingerprint": fingerprint(entries)})
    return cube


def cube_rasters(cube) -> dict[str, Any]:
    """What :func:`add_raster_layers` recorded in a cube (``{}`` for a cube without user rasters)."""
    return json.loads(cube.attrs.get("user_rasters_json") or "{}")


def write_cube_with_rasters(base: str | Path, out: str | Path, entries: list[Entry], progress: bool = False) -> Path:
    """Copy the cube folder ``base`` (``cube.zarr`` + its json) to ``out`` with the raster layers of
    ``entries`` (replacing any user raster layers ``base`` had), written atomically; returns ``out``."""
    import shutil
    import warnings

    from socmap.data.cube import open_cube
    from socmap.fsutil import swap_into_place

    base, out = Path(base), Path(out)
    cube = open_cube(base / "cube.zarr").load()
    old = cube_rasters(cube)
    if old:
        cube = cube.drop_vars([n for n in old if n in cube.data_vars])
        names = [n for n in cube.attrs.get("numeric_covariates", []) if n not in old]
        ranges = {k: v for k, v in json.loads(cube.attrs.get("covariate_range_json") or "{}").items() if k not in old}
        cube.attrs.update({"numeric_covariates": names, "covariate_range_json": json.dumps(ranges), "user_rasters_json": "{}"})
    cube = add_raster_layers(cube, entries, progress=progress)
    for var in cube.variables.values():
        var.encoding.pop("chunks", None)
        var.encoding.pop("preferred_chunks", None)
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            cube.to_zarr(tmp / "cube.zarr", mode="w", consolidated=True)
        for extra in base.glob("*.json"):
            shutil.copyfile(extra, tmp / extra.name)
        meta_path = tmp / "realcube.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        meta.update({"base_cube": str(base.resolve()), "user_rasters": cube_rasters(cube),
                     "covariate_range": json.loads(cube.attrs["covariate_range_json"])})
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
