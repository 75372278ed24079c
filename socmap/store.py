"""The run store schema (version 2): ``runs/NAME/maps.zarr``, written by :mod:`socmap.mapping`.

The run folder is the contract between training/mapping and every consumer (the dashboard,
``socmap export``): they read the store through this module (:func:`open_store` checks the
version) and never the data folder. Bump :data:`STORE_VERSION` when names or meanings change.

Grid variables
--------------
* dims ``(y, x)`` or ``(y, x, layer)``; ``y`` latitude of cell centres (descending), ``x``
  longitude; coords ``layer`` 0..19, ``depth_m`` (node depth), ``layer_top_m``,
  ``layer_bottom_m``; CRS EPSG:4326 (rioxarray ``spatial_ref`` + CF ``grid_mapping``).
* float32 variables, NaN off land (and where a cell could not be computed); each has CF
  ``units``, ``long_name`` and a ``kind`` (see :data:`KINDS`); names and units in
  :func:`variable_specs`: ``soc`` (g C m-3 per layer), the :data:`STOCKS` (kg C m-2), the 21
  parameters, the bulk diagnostics, the encoder covariates, ``default_*`` / ``diff_default_*``
  stocks, with ``--compare`` ``diff_compare_*``, with ``--ensemble`` the ``*_std`` spreads.
* ``land_cover`` int16 (IGBP code, 0 = water / outside land); ``land_mask`` uint8 (1 = land).

Site variables (kind ``"site"``, :func:`site_variable_specs`)
-------------------------------------------------------------
On a ``site`` dimension (coord ``site_id``) and a ``model`` dimension (coord ``model``: the fold
model files, relative to the run folder): ``site_lon``, ``site_lat`` (degrees) and
``site_soc_fold`` (site, model, layer; g C m-3): every fold model's SOC profile at the training
site's covariates and forcing (NaN where the site is off the grid's land cells).

Dataset attributes
------------------
:data:`REQUIRED_ATTRS`: ``store_version``, ``run_name``, ``created``, ``socmap_version``,
``resolution_deg``, ``crs``, ``encoder``, ``parameters`` (predicted parameter names),
``fold_models`` (model files used, relative to the run folder), ``n_models``, ``data`` (the
run.json ``data`` dict: entry, kind, absolute dir) and ``covariates`` (encoder covariate names).
Optional: ``partial_ensemble`` (1 when ``socmap map --allow-partial`` left out damaged or
missing fold models; ``fold_models`` then lists the ones used and ``fold_models_missing`` the
others; 0 or absent otherwise).

Baseline runs (encoder ``rf`` or ``nn``; ``parameters`` empty) have no parameter or diagnostic
variables (nor their ``*_std``): ``soc``, the stocks, the covariates, the masks, the
``default_*`` stocks and ``diff_default_*`` (this run minus the CLM5 default parameters).

Beside the store, in the run folder: ``site_residuals.csv`` (:data:`SITE_RESIDUALS`),
``map.json`` (:data:`MAP_RECORD`) and, for hybrid runs, ``kan_curves.nc`` (:data:`KAN_CURVES`:
every fold model's KAN edge curves or partial dependence, importances, pruning, symbolic fits,
fold band and covariate histograms; its schema is in :mod:`socmap.kan_curves`). While mapping, the store is built as ``maps.zarr.partial``
holding :data:`PROGRESS_FILE` (finished windows); :func:`create_template` writes its metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from socmap.data.grid import CRS

#: Version of the schema below; bump it when names or meanings change.
STORE_VERSION = "2"
STORE_NAME = "maps.zarr"
PARTIAL_SUFFIX = ".partial"
PROGRESS_FILE = "socmap_progress.json"
SITE_RESIDUALS = "site_residuals.csv"
MAP_RECORD = "map.json"
KAN_CURVES = "kan_curves.nc"  # schema: socmap.kan_curves

KINDS = ("soc", "stock", "parameter", "diagnostic", "covariate", "difference", "uncertainty", "mask", "site",
         "sensitivity", "transient")  # the last two: scenario stores (socmap.scenario_mapping)

SOC = "soc"
STOCKS: tuple[str, ...] = ("soc_stock_0_30cm", "soc_stock_0_100cm")
STOCK_LONG_NAMES = {
    "soc_stock_0_30cm": "soil organic carbon stock 0-30 cm",
    "soc_stock_0_100cm": "soil organic carbon stock 0-100 cm",
}
DEFAULT_PREFIX = "default_"          # CLM5 default parameters ("one set of parameters")
DIFF_DEFAULT_PREFIX = "diff_default_"  # hybrid - default
DIFF_COMPARE_PREFIX = "diff_compare_"  # this run - other run (--compare)
STD_SUFFIX = "_std"                  # --ensemble: standard deviation across the fold models
LAND_COVER = "land_cover"
LAND_MASK = "land_mask"

#: Optional attribute: 1 when the map used only some of the run's fold models (``--allow-partial``).
PARTIAL_ENSEMBLE_ATTR = "partial_ensemble"

REQUIRED_ATTRS = ("store_version", "run_name", "created", "socmap_version", "resolution_deg", "crs", "encoder",
                  "parameters", "fold_models", "n_models", "data", "covariates")

#: Per-site variables (see the module docstring).
SITE_DIM = "site"
MODEL_DIM = "model"
SITE_ID = "site_id"
SITE_LON = "site_lon"
SITE_LAT = "site_lat"
SITE_SOC_FOLD = "site_soc_fold"


class StoreError(RuntimeError):
    """A run store is missing, incomplete or of another schema version."""


@dataclass(frozen=True)
class VarSpec:
    """One store variable."""

    name: str
    dims: tuple[str, ...]
    dtype: str
    units: str
    long_name: str
    kind: str

    @property
    def layered(self) -> bool:
        return "layer" in self.dims


def variable_specs(covariates: list[str] | tuple[str, ...], *, ensemble: bool = False,
                   compare: bool = False, covariate_attrs: dict[str, tuple[str, str]] | None = None,
                   parameters: bool = True) -> dict[str, VarSpec]:
    """Every variable of a store mapped with these covariates and options, in store order.

    ``parameters=False`` (a baseline run) leaves out the parameters and the diagnostics.
    """
    from socmap.clm5.diagnostics import DIAGNOSTICS
    from socmap.clm5.parameters import PARAMETERS

    yx, yxl = ("y", "x"), ("y", "x", "layer")
    out: dict[str, VarSpec] = {}

    def add(name, dims, units, long_name, kind, dtype="float32"):
        out[name] = VarSpec(name, dims, dtype, units, long_name, kind)

    add(SOC, yxl, "g C m-3", "soil organic carbon density at the layer node (S1+S2+S3)", "soc")
    for s in STOCKS:
        add(s, yx, "kg C m-2", STOCK_LONG_NAMES[s], "stock")
    for p in PARAMETERS if parameters else ():
        add(p.name, yx, p.unit, p.description, "parameter")
    for name, (units, long_name) in DIAGNOSTICS.items() if parameters else ():
        add(name, yx, units, long_name, "diagnostic")
    for c in covariates:
        units, long_name = (covariate_attrs or {}).get(c, ("1", c))
        add(c, yx, units, long_name, "covariate")
    add(LAND_COVER, yx, "1", "IGBP land-cover class (0 = water / outside land)", "covariate", "int16")
    add(LAND_MASK, yx, "1", "land (1) / water or outside CONUS (0)", "mask", "uint8")
    for s in STOCKS:
        add(DEFAULT_PREFIX + s, yx, "kg C m-2", STOCK_LONG_NAMES[s] + ", CLM5 default parameters", "stock")
    for s in STOCKS:
        add(DIFF_DEFAULT_PREFIX + s, yx, "kg C m-2", STOCK_LONG_NAMES[s] + (", hybrid" if parameters else ", this run")
            + " minus CLM5 default parameters", "difference")
    if compare:
        for s in STOCKS:
            add(DIFF_COMPARE_PREFIX + s, yx, "kg C m-2", STOCK_LONG_NAMES[s] + ", this run minus the compared run", "difference")
    if ensemble:
        for s in STOCKS:
            add(s + STD_SUFFIX, yx, "kg C m-2", STOCK_LONG_NAMES[s] + ", standard deviation across fold models", "uncertainty")
        add(SOC + STD_SUFFIX, yxl, "g C m-3", "soil organic carbon density, standard deviation across fold models", "uncertainty")
        for p in PARAMETERS if parameters else ():
            add(p.name + STD_SUFFIX, yx, p.unit, p.description + ", standard deviation across fold models", "uncertainty")
    return out


def store_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / STORE_NAME


def check_version(attrs: dict[str, Any], where: str | Path) -> None:
    """Raise :class:`StoreError` unless ``attrs['store_version']`` is :data:`STORE_VERSION`."""
    found = attrs.get("store_version")
    if found is None:
        raise StoreError(f"{where} has no store_version attribute: it was not written by `socmap map` "
                         f"(store version {STORE_VERSION}); re-create it with `socmap map --run RUN`")
    if str(found) == "1":
        raise StoreError(f"{where} is run store version 1, which does not record the predicted parameters, the "
                         f"fold models or the site profiles; this socmap reads version {STORE_VERSION}: "
                         f"re-run `socmap map --run RUN` (the old store is replaced)")
    if str(found) != STORE_VERSION:
        raise StoreError(f"{where} is run store version {found}, but this socmap reads version {STORE_VERSION}; "
                         f"re-create it with `socmap map --run RUN` (the old store is replaced)")


def open_store(run_dir: str | Path, *, chunks: Any = "auto"):
    """Open ``run_dir/maps.zarr`` lazily (CRS decoded); clear errors if missing or of another version.

    ``run_dir`` may also be the ``maps.zarr`` path itself.
    """
    import warnings

    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    run_dir = Path(run_dir)
    path = run_dir if run_dir.name == STORE_NAME else store_path(run_dir)
    if not path.exists():
        partial = path.parent / (STORE_NAME + PARTIAL_SUFFIX)
        hint = (f" ({partial} exists: mapping was interrupted; re-run `socmap map --run {path.parent}` to resume)"
                if partial.exists() else f" (create it with `socmap map --run {path.parent}`)")
        raise StoreError(f"no run store at {path}{hint}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            ds = xr.open_zarr(path, decode_coords="all", chunks=chunks)
    except Exception as exc:  # noqa: BLE001 - any zarr/xarray failure means "not a readable store"
        raise StoreError(f"{path} is not a readable Zarr run store: {exc}") from exc
    check_version(ds.attrs, path)
    return ds


def same_grid(a, b, tol: float = 1e-9) -> bool:


    if a.sizes["y"] != b.sizes["y"] or a.sizes["x"] != b.sizes["x"]:
        return False
    return bool(np.allclose(a["y"].values, b["y"].values, atol=tol) and np.allclose(a["x"].values, b["x"].values, atol=tol))


# ----------------------------------------------------------------------------------------
# writing: the template, the per-site profiles and the progress file (used by socmap.mapping)
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SiteProfiles:
    """Every fold model's SOC profile at the training sites (the store's ``site`` variables).

    ``site_id``, ``lon_deg``, ``lat_deg`` [S]; ``soc_fold_g_m3`` [S, K, 20] (NaN for a site off
    the land cells); ``models`` [K] fold model files relative to the run folder.
    """

    site_id: np.ndarray
    lon_deg: np.ndarray
    lat_deg: np.ndarray
    soc_fold_g_m3: np.ndarray
    models: tuple[str, ...]


def site_variable_specs() -> dict[str, VarSpec]:
    """The per-site variables of the store (kind ``"site"``), in store order."""
    return {
        SITE_LON: VarSpec(SITE_LON, (SITE_DIM,), "float64", "degrees_east", "longitude of the training site", "site"),
        SITE_LAT: VarSpec(SITE_LAT, (SITE_DIM,), "float64", "degrees_north", "latitude of the training site", "site"),
        SITE_SOC_FOLD: VarSpec(SITE_SOC_FOLD, (SITE_DIM, MODEL_DIM, "layer"), "float32", "g C m-3",
                               "soil organic carbon density at the site from each fold model", "site"),
    }


def create_template(path: Path, cube, specs: dict[str, VarSpec], chunks: int, attrs: dict[str, Any],
                    sites: SiteProfiles | None = None) -> None:
    """Write the store's metadata (grid data left unwritten) with Zarr chunks equal to the windows.

    Grid variables are filled later, window by window, by the chunk tasks; the per-site
    variables (small) are written here in full.
    """
    import warnings

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
    coords = {
        "y": ("y", cube["y"].values, dict(cube["y"].attrs) or {"units": "degrees_north", "standard_name": "latitude"}),
        "x": ("x", cube["x"].values, dict(cube["x"].attrs) or {"units": "degrees_east", "standard_name": "longitude"}),
        "layer": ("layer", np.arange(20, dtype=np.int16), {"long_name": "CLM5 soil layer index (0 = top)", "units": "1"}),
        "depth_m": ("layer", NODE_M.astype(np.float32), {"long_name": "depth of the layer node", "units": "m", "positive": "down"}),
        "layer_top_m": ("layer", INTERFACE_TOP_M.astype(np.float32), {"long_name": "depth of the layer top", "units": "m"}),
        "layer_bottom_m": ("layer", INTERFACE_BOTTOM_M.astype(np.float32), {"long_name": "depth of the layer bottom", "units": "m"}),
    }
    site_specs = site_variable_specs() if sites is not None else {}
    if sites is not None:
        coords[SITE_ID] = (SITE_DIM, np.asarray(sites.site_id, dtype=str), {"long_name": "training site id"})
        coords[MODEL_DIM] = (MODEL_DIM, np.asarray(sites.models, dtype=str), {"long_name": "fold model file (relative to the run folder)"})
        values = {SITE_LON: sites.lon_deg, SITE_LAT: sites.lat_deg, SITE_SOC_FOLD: sites.soc_fold_g_m3}
        for name, spec in site_specs.items():
            data[name] = (spec.dims, np.asarray(values[name], dtype=spec.dtype),
                          {"units": spec.units, "long_name": spec.long_name, "kind": spec.kind})
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    ds = ds.rio.write_crs(CRS).rio.set_spatial_dims(x_dim="x", y_dim="y")
    ds.attrs.update(attrs)  # write_crs drops a "crs" attribute
    for name, spec in specs.items():
        ds[name].encoding["chunks"] = ((cy, cx, 20) if spec.layered else (cy, cx))
        ds[name].encoding["_FillValue"] = np.nan if spec.dtype == "float32" else None
        ds[name].encoding["grid_mapping"] = "spatial_ref"
    for name, spec in site_specs.items():
        ds[name].encoding["_FillValue"] = np.nan if spec.dtype.startswith("float") else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        ds.to_zarr(path, mode="w", compute=False, consolidated=True, zarr_format=2)


@dataclass(frozen=True)
class _ChunkLayout:
    """What a direct chunk write needs from one Zarr v2 array's ``.zarray``."""

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    fill: Any
    codec: Any  # numcodecs codec (the array's compressor), or None for raw bytes
    separator: str


_LAYOUTS: dict[tuple[str, int, int], dict[str, _ChunkLayout] | None] = {}


def _chunk_layouts(path: Path) -> dict[str, _ChunkLayout] | None:
    """Every array's chunk layout from the store's consolidated metadata (``.zmetadata``), cached
    per process while that file is unchanged; None when a direct write does not apply (no
    consolidated v2 metadata, filters, Fortran order)."""
    import json

    import numcodecs

    meta = Path(path) / ".zmetadata"
    try:
        st = meta.stat()
    except OSError:
        return None
    key = (str(meta), st.st_mtime_ns, st.st_size)
    cached = _LAYOUTS.get(key, False)  # one lookup: another thread may clear the cache meanwhile
    if cached is not False:
        return cached
    layouts: dict[str, _ChunkLayout] | None = {}
    try:
        entries = json.loads(meta.read_text())["metadata"]
        for name, m in entries.items():
            if not name.endswith("/.zarray"):
                continue
            if m.get("filters") or m.get("order", "C") != "C" or m.get("zarr_format") != 2:
                layouts = None
                break
            dtype = np.dtype(m["dtype"])
            fill = m["fill_value"]
            fill = np.nan if fill == "NaN" else (0 if fill is None else fill)  # null: zarr reads 0
            codec = numcodecs.get_codec(m["compressor"]) if m.get("compressor") else None
            layouts[name[: -len("/.zarray")]] = _ChunkLayout(tuple(m["shape"]), tuple(m["chunks"]), dtype,
                                                             dtype.type(fill), codec, m.get("dimension_separator", "."))
    except (OSError, ValueError, KeyError, TypeError):
        layouts = None
    if len(_LAYOUTS) > 8:  # a worker maps one store at a time: keep a few
        _LAYOUTS.clear()
    _LAYOUTS[key] = layouts  # (threads racing here store the same value)
    return layouts


def _one_chunk(lay: _ChunkLayout, shape: tuple[int, ...], y0: int, x0: int) -> bool:
    """Whether a window of ``shape`` at (``y0``, ``x0``) is one whole chunk, or the part of an edge
    chunk that lies on the grid (so that padding it with the fill value loses nothing)."""
    if len(shape) != len(lay.chunks) or y0 % lay.chunks[0] or x0 % lay.chunks[1] or shape[2:] != lay.chunks[2:]:
        return False
    return all(n == c or (n < c and o + n == size) for n, c, o, size in zip(shape, lay.chunks, (y0, x0), lay.shape))


def write_window(path: str | Path, arrays: dict[str, np.ndarray], y0: int, x0: int) -> None:
    """Write one mapping window (its top-left cell at row ``y0``, column ``x0``) of every variable
    in ``arrays`` ([ny, nx] or [ny, nx, 20]) into the store at ``path``.

    The windows are the store's chunks (:func:`create_template`), so each variable's window is
    one chunk: it is encoded with the array's own compressor and written as that chunk's file
    (atomically): the bytes zarr would store, padded with the fill value at the grid's edge as
    zarr pads (an all-fill chunk, which zarr leaves out, is written too; it reads the same).
    zarr's own writer costs ~1.3 ms per variable and window in per-call overhead
    (the map's ~50 variables: ~2 µs per land cell at 0.05°); a variable whose window is not one
    chunk, or a store without consolidated v2 metadata, is written through zarr.
    """
    from socmap.fsutil import write_atomic

    path = Path(path)
    layouts = _chunk_layouts(path)
    rest = {}
    for name, arr in arrays.items():
        lay = None if layouts is None else layouts.get(name)
        if lay is None or not _one_chunk(lay, arr.shape, y0, x0):
            rest[name] = arr
            continue
        if arr.shape == lay.chunks and arr.dtype == lay.dtype:
            chunk = np.ascontiguousarray(arr)
        else:  # an edge window: zarr stores the whole chunk, the part beyond the grid at the fill value
            chunk = np.full(lay.chunks, lay.fill, dtype=lay.dtype)
            chunk[: arr.shape[0], : arr.shape[1]] = arr
        index = (y0 // lay.chunks[0], x0 // lay.chunks[1]) + (0,) * (arr.ndim - 2)
        target = path / name / lay.separator.join(str(i) for i in index)
        data = chunk.tobytes() if lay.codec is None else bytes(lay.codec.encode(chunk))
        try:
            write_atomic(target, data)
        except FileNotFoundError:  # the array's folder (create_template writes it with the metadata)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, data)
    if rest:
        import zarr

        group = zarr.open_group(str(path), mode="r+")
        for name, arr in rest.items():
            group[name][y0:y0 + arr.shape[0], x0:x0 + arr.shape[1], ...] = arr


def read_progress(partial: Path) -> dict[str, Any] | None:
    """The progress record of a partial store (``None`` if absent or unreadable)."""
    import json

    f = Path(partial) / PROGRESS_FILE
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def write_progress(partial: Path, progress: dict[str, Any]) -> None:
    """Replace the progress record of a partial store atomically."""
    import json

    from socmap.fsutil import write_atomic

    write_atomic(Path(partial) / PROGRESS_FILE, json.dumps(progress))


# ----------------------------------------------------------------------------------------
# comparing runs: one run's layer on another run's grid
# ----------------------------------------------------------------------------------------

def _nearest_index(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest ``src`` cell centre for each ``dst`` coordinate, and whether ``dst``
    lies on the ``src`` grid (within half a cell of its outer centres). ``src`` monotonic."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    order = np.argsort(src)
    s = src[order]
    j = np.clip(np.searchsorted(s, dst), 1, len(s) - 1) if len(s) > 1 else np.zeros(len(dst), int)
    if len(s) > 1:
        j = np.where(np.abs(s[j - 1] - dst) <= np.abs(s[j] - dst), j - 1, j)
    half = 0.5 * (float(np.median(np.diff(s))) if len(s) > 1 else 0.0)
    inside = (dst >= s[0] - half - 1e-9) & (dst <= s[-1] + half + 1e-9)
    return order[j], inside


def align_layer(values: np.ndarray, src_x: np.ndarray, src_y: np.ndarray,
                dst_x: np.ndarray, dst_y: np.ndarray) -> np.ndarray:
    """A 2-D layer [y, x] on the grid (``src_y``, ``src_x``) resampled to (``dst_y``, ``dst_x``)
    by the nearest cell centre (no interpolation: the values stay the source run's values).

    Parameters
    ----------
    values : [len(src_y), len(src_x)] the layer (any units).
    src_x, src_y, dst_x, dst_y : cell-centre longitudes / latitudes (degrees), monotonic.

    Returns
    -------
    [len(dst_y), len(dst_x)] float array; NaN where the destination cell centre is off the
    source grid (more than half a source cell beyond its outer centres). On the same grid the
    values come back unchanged.
    """
    values = np.asarray(values)
    if values.shape != (len(src_y), len(src_x)):
        raise ValueError(f"values have shape {values.shape}, the source grid is {(len(src_y), len(src_x))} (y, x)")
    ix, okx = _nearest_index(src_x, dst_x)
    iy, oky = _nearest_index(src_y, dst_y)
    out = values[iy[:, None], ix[None, :]].astype(np.float64 if values.dtype.kind != "f" else values.dtype, copy=True)
    out[~(oky[:, None] & okx[None, :])] = np.nan
    return out
