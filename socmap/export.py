"""GeoTIFF / Cloud-Optimised GeoTIFF export of run-store layers (``socmap export``).

Choices (documented for users of the files):

* Layers are the store's 2-D ``(y, x)`` variables; ``--layers all`` exports all of them. Layered
  variables export one depth layer at a time by name: ``soc_layer7`` (layer 7, node depth in the
  tags), ``soc_std_layer0`` …; ``soc`` alone expands to ``soc_layer0`` … ``soc_layer19``.
* Time series ``(time, y, x)`` (a scenario store's ``transient_*``) export by name as one file with
  one band per year, band description ``year N`` (N the store's ``time`` coordinate, years since the
  start of the transient); ``all`` leaves them out.
* Float layers are float32 with nodata = NaN (off land / not computed). ``land_cover`` is int16
  with nodata 0 (water / outside land); ``land_mask`` is uint8 with nodata 255 (0 = water is data).
  A multi-band file holds float32 bands (integer layers converted), nodata NaN.
* Files are tiled (256 × 256), DEFLATE-compressed; tags: ``variable``, ``units``, ``long_name``,
  ``kind``, ``run_name``, ``run_id`` (name@created of the store), ``store_version``,
  ``socmap_version``; band descriptions are the variable name and its long name (for parameters,
  from the parameter table).
* COG: a tiled GTiff with internal overviews (factors 2, 4, … while the overview is ≥ 4 pixels;
  average for continuous layers, nearest for categorical ones) copied with GDAL's COG driver
  (``rasterio.shutil.copy(..., driver="COG")``; Dask-chunked ``rio.to_raster(driver="COG")``
  fails, see DESIGN.md).
* ``--crs EPSG:5070`` reprojects with rioxarray (bilinear for continuous layers, nearest for
  land cover and the mask) at the resolution GDAL suggests for the grid.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from socmap import store as S

log = logging.getLogger(__name__)

FORMATS = ("cog", "gtiff")
CRSES = ("EPSG:4326", "EPSG:5070")
CATEGORICAL = (S.LAND_COVER, S.LAND_MASK)
BLOCK = 256
_LAYER_RE = re.compile(r"^(?P<var>.+)_layer(?P<j>\d+)$")


class ExportError(ValueError):
    """Bad export request (message meant for the user)."""


@dataclass
class Layer:
    name: str
    data: np.ndarray  # [ny, nx]
    units: str
    long_name: str
    kind: str
    categorical: bool
    dtype: str
    nodata: float | int
    #: band descriptions of a (time, y, x) layer (one band per year); None for a 2-D layer
    band_names: list[str] | None = None

    def bands(self) -> list[np.ndarray]:
        """The [ny, nx] band(s) of the layer."""
        return list(self.data) if self.data.ndim == 3 else [self.data]


def _nodata(name: str, dtype: str) -> float | int:
    if name == S.LAND_MASK:
        return 255
    if name == S.LAND_COVER:
        return 0
    return float("nan")


def resolve_layers(ds, layers: str | list[str]) -> list[str]:
    """Expand ``all`` / ``soc`` and validate names against the store."""
    names = [s.strip() for s in layers.split(",") if s.strip()] if isinstance(layers, str) else list(layers)
    if not names:
        raise ExportError("--layers is empty; give variable names (e.g. tau4s3,soc_stock_0_30cm) or 'all'")
    def layered(v: str) -> bool:  # a (y, x, layer) grid variable (not a per-site one)
        return v in ds.data_vars and ds[v].dims[:2] == ("y", "x") and "layer" in ds[v].dims

    def series(v: str) -> bool:  # a (time, y, x) variable: one band per year
        return v in ds.data_vars and set(ds[v].dims) == {"time", "y", "x"}

    out: list[str] = []
    for n in names:
        if n == "all":
            out.extend(v for v in ds.data_vars if ds[v].dims == ("y", "x"))
        elif (n in ds.data_vars and ds[n].dims == ("y", "x")) or series(n):
            out.append(n)
        elif layered(n):
            out.extend(f"{n}_layer{j}" for j in range(ds.sizes["layer"]))
        elif (m := _LAYER_RE.match(n)) and layered(m["var"]):
            if int(m["j"]) >= ds.sizes["layer"]:
                raise ExportError(f"{n}: layer index must be 0..{ds.sizes['layer'] - 1}")
            out.append(n)
        else:
            two_d = [v for v in ds.data_vars if ds[v].dims == ("y", "x") or series(v)]
            raise ExportError(f"{n!r} is not a layer of this store; known: {', '.join(two_d)}, "
                              f"soc / soc_layer0..soc_layer{ds.sizes.get('layer', 20) - 1}, or 'all'")
    seen: set[str] = set()
    return [n for n in out if not (n in seen or seen.add(n))]


def load_layer(ds, name: str) -> Layer:
    from socmap.clm5.parameters import INDEX, PARAMETERS

    m = _LAYER_RE.match(name)
    band_names = None
    if name in ds.data_vars and "time" in ds[name].dims:
        var = ds[name].transpose("time", "y", "x")
        data = var.values
        band_names = [f"year {int(t)}" for t in ds["time"].values]
        long_name = var.attrs.get("long_name", name)
    elif name in ds.data_vars:
        var = ds[name]
        data = var.values
        long_name = var.attrs.get("long_name", name)
        if name in INDEX:
            long_name = PARAMETERS[INDEX[name]].description
    else:
        var = ds[m["var"]]
        j = int(m["j"])
        data = var.isel(layer=j).transpose("y", "x").values
        long_name = f"{var.attrs.get('long_name', m['var'])}, layer {j} (node depth {float(ds['depth_m'].values[j]):.3f} m)"
    categorical = name in CATEGORICAL
    dtype = str(data.dtype) if categorical else "float32"
    return Layer(name, data.astype(dtype), var.attrs.get("units", "1"), long_name, var.attrs.get("kind", ""),
                 categorical, dtype, _nodata(name, dtype), band_names)


def grid_transform(ds):
    from affine import Affine

    x, y = ds["x"].values, ds["y"].values
    rx = float(x[1] - x[0]) if x.size > 1 else float(ds.attrs.get("resolution_deg", 1.0))
    ry = float(y[0] - y[1]) if y.size > 1 else float(ds.attrs.get("resolution_deg", 1.0))
    return Affine(rx, 0.0, float(x[0]) - rx / 2, 0.0, -ry, float(y[0]) + ry / 2)


def _reproject(layers: list[Layer], ds, crs: str):
    """Reproject each layer; returns (arrays, transform, crs) on one common target grid."""
    import rioxarray  # noqa: F401
    import xarray as xr
    from rasterio.enums import Resampling

    out = []
    transform = shape = None
    for L in layers:
        bands = []
        for band in L.bands():
            da = xr.DataArray(band, dims=("y", "x"), coords={"y": ds["y"].values, "x": ds["x"].values})
            da = da.rio.write_crs(S.CRS).rio.set_spatial_dims(x_dim="x", y_dim="y").rio.write_nodata(L.nodata)
            kw = {"resampling": Resampling.nearest if L.categorical else Resampling.bilinear}
            if transform is not None:
                kw.update(transform=transform, shape=shape)
            r = da.rio.reproject(crs, **kw)
            if transform is None:
                transform, shape = r.rio.transform(), r.shape
            bands.append(np.asarray(r.values).astype(L.dtype))
        out.append(np.stack(bands) if L.data.ndim == 3 else bands[0])
    return out, transform


def _overview_factors(h: int, w: int) -> list[int]:
    f, out = 2, []
    while min(h, w) // f >= 4:
        out.append(f)
        f *= 2
    return out or [2]


def _write(path: Path, bands: list[np.ndarray], layers: list[Layer], transform, crs: str, fmt: str, tags: dict,
           multiband: bool) -> None:
    import rasterio
    import rasterio.shutil
    from rasterio.enums import Resampling

    # a (time, y, x) layer is several bands, each described by its year
    flat = [(b, L, name) for arr, L in zip(bands, layers)
            for b, name in zip(list(arr) if arr.ndim == 3 else [arr], L.band_names or [None])]
    h, w = flat[0][0].shape
    dtype = "float32" if multiband else layers[0].dtype
    nodata = float("nan") if multiband else layers[0].nodata
    tmpdir = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        gtiff = tmpdir / "tiled.tif"
        profile = dict(driver="GTiff", height=h, width=w, count=len(flat), dtype=dtype, crs=crs, transform=transform,
                       nodata=nodata, tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate")
        with rasterio.open(gtiff, "w", **profile) as dst:
            for i, (arr, L, band_name) in enumerate(flat, start=1):
                dst.write(arr.astype(dtype), i)
                if band_name is None:
                    dst.set_band_description(i, f"{L.name}: {L.long_name}")
                    dst.update_tags(i, name=L.name, units=L.units, long_name=L.long_name, kind=L.kind)
                else:
                    dst.set_band_description(i, band_name if not multiband else f"{L.name}: {band_name}")
                    dst.update_tags(i, name=L.name, units=L.units, long_name=L.long_name, kind=L.kind, time=band_name)
            dst.update_tags(**tags)
            if fmt == "cog":
                categorical = all(L.categorical for L in layers)
                dst.build_overviews(_overview_factors(h, w), Resampling.nearest if categorical else Resampling.average)
        part = tmpdir / "final.tif"
        if fmt == "cog":
            rasterio.shutil.copy(gtiff, part, driver="COG", compress="DEFLATE", blocksize=BLOCK,
                                 overviews="FORCE_USE_EXISTING")
        else:
            gtiff.rename(part)
        os.replace(part, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def export_layers(run_dir: str | Path, layers: str | list[str], out: str | Path, *, fmt: str = "cog",
                  crs: str = "EPSG:4326", multiband: bool = False) -> list[Path]:
    """Write the requested store layers as GeoTIFF/COG files into ``out``; returns the paths."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    crs = crs.upper()
    if crs not in CRSES:
        raise ExportError(f"--crs must be one of {', '.join(CRSES)}, not {crs!r}")
    ds = S.open_store(run_dir)
    names = resolve_layers(ds, layers)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the output folder {out}: {exc}") from exc
    if not os.access(out, os.W_OK):
        raise ExportError(f"cannot write to {out}")
    loaded = [load_layer(ds, n) for n in names]
    if crs == S.CRS:
        bands, transform = [L.data for L in loaded], grid_transform(ds)
    else:
        bands, transform = _reproject(loaded, ds, crs)
    run_name = str(ds.attrs.get("run_name", ""))
    tags = {"run_name": run_name, "run_id": f"{run_name}@{ds.attrs.get('created', '')}",
            "store_version": str(ds.attrs.get("store_version")), "socmap_version": str(ds.attrs.get("socmap_version", "")),
            "source": "socmap export"}
    files: list[Path] = []
    if multiband:
        path = out / f"{run_name or 'socmap'}_multiband.tif"
        _write(path, bands, loaded, transform, crs, fmt, {**tags, "layers": ",".join(names)}, True)
        files.append(path)
    else:
        for arr, L in zip(bands, loaded):
            path = out / f"{L.name}.tif"
            _write(path, [arr], [L], transform, crs, fmt,
                   {**tags, "variable": L.name, "units": L.units, "long_name": L.long_name, "kind": L.kind,
                    "nodata_note": "NaN" if not L.categorical else str(L.nodata)}, False)
            files.append(path)
    log.info("exported %d layer(s) to %s", len(names), out)
    return files
