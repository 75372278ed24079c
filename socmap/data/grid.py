"""The CONUS analysis grid (EPSG:4326, cell centres) and its land mask.

The grid's west and north edges are fixed at −125° and 49.5°; it covers at least the box
lon −125…−66.5, lat 24.5…49.5 (when the span is not a multiple of the resolution the last
column/row reaches a little further east/south). ``y`` runs north → south, ``x`` west → east,
so the affine transform is the usual north-up raster one.

The land mask is the union of the 48 states + DC in ``assets/conus_states.geojson`` (Great Lakes,
Great Salt Lake and Lake Okeechobee removed), rasterised with ``all_touched=False``: a cell is
land when its centre lies inside a state polygon.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import xarray as xr

from socmap.resources import shipped_file

#: Bounding box of the grid (degrees): west, south, east, north.
CONUS_BOUNDS: tuple[float, float, float, float] = (-125.0, 24.5, -66.5, 49.5)
CRS = "EPSG:4326"


def conus_states_path() -> Path:
    """Path of the shipped CONUS state outlines (``assets/conus_states.geojson``).

    ``SOCMAP_ASSETS`` (a folder) overrides the location; otherwise the file shipped with socmap
    (:func:`socmap.resources.shipped_file`) is used.
    """
    env = os.environ.get("SOCMAP_ASSETS")
    if env:
        path = Path(env) / "conus_states.geojson"
        if not path.is_file():
            raise FileNotFoundError(f"SOCMAP_ASSETS={env} holds no conus_states.geojson; unset it or fix the folder")
        return path
    return shipped_file("assets/conus_states.geojson")


@lru_cache(maxsize=2)
def _load_states(path: str) -> tuple[dict, ...]:
    with open(path, encoding="utf-8") as fh:
        fc = json.load(fh)
    return tuple(f["geometry"] for f in fc["features"])


def state_geometries(path: str | Path | None = None) -> list[dict]:
    """GeoJSON geometry dicts of the CONUS states (lon/lat degrees)."""
    return list(_load_states(str(path or conus_states_path())))


def grid_shape(resolution_deg: float) -> tuple[int, int]:
    """(ny, nx) of the CONUS grid at ``resolution_deg``."""
    if not (resolution_deg > 0 and np.isfinite(resolution_deg)):
        raise ValueError(f"resolution_deg must be a positive number of degrees, not {resolution_deg!r}")
    w, s, e, n = CONUS_BOUNDS
    nx = int(np.ceil((e - w) / resolution_deg - 1e-9))
    ny = int(np.ceil((n - s) / resolution_deg - 1e-9))
    return ny, nx


def grid_coords(resolution_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre coordinates ``(y, x)``: latitudes north → south, longitudes west → east."""
    ny, nx = grid_shape(resolution_deg)
    w, _, _, n = CONUS_BOUNDS
    x = w + resolution_deg * (np.arange(nx) + 0.5)
    y = n - resolution_deg * (np.arange(ny) + 0.5)
    return y, x


def land_mask_array(resolution_deg: float, geojson: str | Path | None = None) -> np.ndarray:
    """Boolean land mask ``[ny, nx]`` rasterised from the state outlines (cell centres inside)."""
    from affine import Affine
    from rasterio.features import rasterize

    ny, nx = grid_shape(resolution_deg)
    w, _, _, n = CONUS_BOUNDS
    transform = Affine(resolution_deg, 0.0, w, 0.0, -resolution_deg, n)
    shapes = [(g, 1) for g in state_geometries(geojson)]
    out = rasterize(shapes, out_shape=(ny, nx), transform=transform, fill=0, all_touched=False, dtype="uint8")
    return out.astype(bool)


def conus_grid(resolution_deg: float = 0.25, geojson: str | Path | None = None) -> xr.Dataset:
    """An empty CONUS grid with coordinates ``y`` (lat, descending), ``x`` (lon) and ``land_mask``.

    The dataset carries the CRS (EPSG:4326, via rioxarray) and CF attributes; build covariate
    cubes by adding ``(y, x)`` variables to it.
    """
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    y, x = grid_coords(resolution_deg)
    mask = land_mask_array(resolution_deg, geojson)
    ds = xr.Dataset(
        {"land_mask": (("y", "x"), mask, {"long_name": "land (cell centre inside a CONUS state)", "units": "1"})},
        coords={
            "y": ("y", y, {"standard_name": "latitude", "long_name": "latitude of cell centre", "units": "degrees_north", "axis": "Y"}),
            "x": ("x", x, {"standard_name": "longitude", "long_name": "longitude of cell centre", "units": "degrees_east", "axis": "X"}),
        },
        attrs={"resolution_deg": float(resolution_deg), "bounds": list(CONUS_BOUNDS), "crs": CRS},
    )
    ds = ds.rio.write_crs(CRS)
    ds = ds.rio.set_spatial_dims(x_dim="x", y_dim="y")
    return ds
