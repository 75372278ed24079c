"""The map layers of a run store, as the dashboard shows them: 2-D arrays, colour limits,
units, labels, coarse copies for small multiples, and GeoTIFF bytes of one layer.

Arrays are read once from the store and cached (float32, ``(y, x)``); the store is opened
through :func:`socmap.store.open_store`, which checks its schema version.
"""

from __future__ import annotations

import io
import tempfile
import threading
import warnings
from functools import cached_property
from pathlib import Path

import numpy as np
import xarray as xr

from socmap.clm5.parameters import INDEX
from socmap.store import open_store

KIND_ORDER = ("stock", "soc", "parameter", "diagnostic", "difference", "sensitivity", "uncertainty", "covariate", "mask")
KIND_LABEL = {
    "stock": "SOC stocks", "soc": "SOC by layer", "parameter": "Parameters", "diagnostic": "Diagnostics",
    "difference": "Differences", "sensitivity": "Sensitivity", "uncertainty": "Uncertainty", "covariate": "Covariates",
    "mask": "Masks",
}


def _is_map(da: xr.DataArray) -> bool:
    """A variable on the grid: (y, x) or (y, x, layer); per-site variables are not maps."""
    return {"y", "x"} <= set(da.dims) <= {"y", "x", "layer"}


class MapLayers:
    """Read-only view of ``run_dir/maps.zarr``: the gridded variables and their metadata."""

    def __init__(self, run_dir: str | Path) -> None:
        self.ds = open_store(run_dir)
        self.x = self.ds["x"].values.astype(np.float64)
        self.y = self.ds["y"].values.astype(np.float64)
        self.resolution_deg = float(self.ds.attrs.get("resolution_deg") or abs(self.x[1] - self.x[0]))
        self.depth_m = self.ds["depth_m"].values if "depth_m" in self.ds.coords else None
        self.n_layers = int(self.ds.sizes.get("layer", 0))
        self._lock = threading.RLock()
        self._arrays: dict[tuple, np.ndarray] = {}
        self._clims: dict[tuple, tuple[float, float]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.ds

    @cached_property
    def variables(self) -> dict[str, str]:
        """Mappable variable -> kind, grouped in KIND_ORDER; variables without a kind come last."""
        maps = {name: da for name, da in self.ds.data_vars.items() if _is_map(da)}
        out = {name: kind for kind in KIND_ORDER for name, da in maps.items() if da.attrs.get("kind") == kind}
        out.update({name: "other" for name in maps if name not in out})
        return out

    @cached_property
    def _meta(self) -> dict[str, tuple[tuple[str, ...], dict]]:
        """(dims, attrs) of every variable and coordinate, read once: each session asks for the
        units and dims of every layer (its layer menu), and xarray's lookup by name is slow."""
        return {str(name): (tuple(var.dims), dict(var.attrs)) for name, var in self.ds.variables.items()}

    def kind(self, name: str) -> str:
        return self.variables.get(name, "other")

    def attrs(self, name: str) -> dict:
        return dict(self._meta[name][1])

    def units(self, name: str) -> str:
        return str(self._meta[name][1].get("units", ""))

    def has_layers(self, name: str) -> bool:
        return "layer" in self._meta[name][0]

    def label(self, name: str, layer: int | None = None) -> str:
        """``long_name`` (prefixed by the name for parameters), with the soil layer's depth."""
        text = str(self._meta[name][1].get("long_name", name))
        if name in INDEX:
            text = f"{name}: {text}"
        if self.has_layers(name) and layer is not None and self.depth_m is not None:
            text += f", layer {layer} ({self.depth_m[layer]:.2f} m)"
        return text

    def depth_text(self, layer: int) -> str:
        """Interfaces and node depth of one soil layer, e.g. ``layer 3: 0.06–0.12 m (node 0.09 m)``."""
        if self.depth_m is None:
            return ""
        top, bottom = self._interfaces[0][layer], self._interfaces[1][layer]
        return f"layer {layer}: {top:.2f}–{bottom:.2f} m (node {self.depth_m[layer]:.2f} m)"

    @cached_property
    def _interfaces(self) -> tuple[np.ndarray, np.ndarray]:
        """Top and bottom depth of each soil layer [layer] in m (NaN where the store has none)."""
        nan = np.full(self.n_layers, np.nan)
        return tuple(self.ds[c].values if c in self.ds.coords else nan for c in ("layer_top_m", "layer_bottom_m"))

    def array(self, name: str, layer: int | None = None) -> np.ndarray:
        """The 2-D float32 array [y, x] of a variable (at soil ``layer`` for 3-D ones); cached."""
        if not self.has_layers(name):
            layer = None
        key = (name, layer)
        with self._lock:
            if key not in self._arrays:
                if layer is None:
                    self._arrays[key] = self.ds[name].transpose("y", "x").values.astype(np.float32, copy=False)
                else:
                    self._arrays[key] = np.ascontiguousarray(self._cube(name)[:, :, layer])
            return self._arrays[key]

    def _cube(self, name: str) -> np.ndarray:
        """A 3-D variable as [y, x, layer] float32, read once."""
        key = (name, "all")
        with self._lock:
            if key not in self._arrays:
                self._arrays[key] = self.ds[name].transpose("y", "x", "layer").values.astype(np.float32, copy=False)
            return self._arrays[key]

    def profile(self, name: str, iy: int, ix: int) -> np.ndarray:
        """[layer] values of a 3-D variable at one cell."""
        return self._cube(name)[iy, ix, :]

    def value(self, name: str, iy: int, ix: int, layer: int | None = None) -> float:
        return float(self.array(name, layer)[iy, ix])

    def clim(self, name: str, layer: int | None = None) -> tuple[float, float]:
        """Robust colour limits (2–98 %); symmetric about zero for differences; full range for classes."""
        key = (name, layer if self.has_layers(name) else None)
        if key not in self._clims:
            arr = self.array(name, layer)
            finite = arr[np.isfinite(arr)]
            if finite.size == 0:
                lim = (0.0, 1.0)
            elif self.kind(name) == "difference":
                m = float(np.percentile(np.abs(finite), 98)) or float(np.abs(finite).max()) or 1.0
                lim = (-m, m)
            elif name in ("land_cover", "land_mask") or "flag_values" in self.ds[name].attrs:
                lim = (float(finite.min()), float(finite.max()))
            else:
                lo, hi = np.percentile(finite, [2, 98])
                if hi <= lo:
                    lo, hi = float(finite.min()), float(finite.max())
                    if hi <= lo:
                        hi = lo + (abs(lo) * 0.01 or 1.0)
                lim = (float(lo), float(hi))
            self._clims[key] = lim
        return self._clims[key]

    def cell(self, lon: float | None, lat: float | None) -> tuple[int, int] | None:
        """Grid indices (iy, ix) of the cell holding (lon, lat) in degrees, or None outside the grid."""
        if lon is None or lat is None:
            return None
        ix = int(np.abs(self.x - lon).argmin())
        iy = int(np.abs(self.y - lat).argmin())
        if abs(self.x[ix] - lon) > self.resolution_deg or abs(self.y[iy] - lat) > self.resolution_deg:
            return None
        return iy, ix

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Outer edges of the grid (left, bottom, right, top) in degrees."""
        half = self.resolution_deg / 2
        return (self.x.min() - half, self.y.min() - half, self.x.max() + half, self.y.max() + half)

    def coarse(self, name: str, max_px: int = 240) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """Block-mean downsampled array (at most ``max_px`` columns) and its bounds (l, b, r, t)."""
        arr = self.array(name)
        f = max(1, int(np.ceil(arr.shape[1] / max_px)))
        xs, ys = self.x, self.y
        if f > 1:
            ny, nx = (arr.shape[0] // f) * f, (arr.shape[1] // f) * f
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks off land
                arr = np.nanmean(arr[:ny, :nx].reshape(ny // f, f, nx // f, f), axis=(1, 3))
            xs, ys = self.x[:nx], self.y[:ny]
        half = self.resolution_deg / 2
        return arr, (xs.min() - half, ys.min() - half, xs.max() + half, ys.max() + half)

    def dataarray(self, name: str, layer: int | None = None) -> xr.DataArray:
        """A 2-D DataArray [y, x] with CRS EPSG:4326 and NaN as no-data, for export."""
        import rioxarray  # noqa: F401  (registers .rio)

        attrs = {k: v for k, v in self.attrs(name).items() if isinstance(v, (str, int, float))}
        if layer is not None and self.has_layers(name) and self.depth_m is not None:
            attrs["layer"] = int(layer)
            attrs["depth_m"] = float(self.depth_m[layer])
        da = xr.DataArray(self.array(name, layer), dims=("y", "x"), coords={"y": self.y, "x": self.x}, name=name, attrs=attrs)
        da = da.rio.write_crs("EPSG:4326").rio.set_spatial_dims(x_dim="x", y_dim="y")
        return da.rio.write_nodata(np.nan, encoded=False)

    def geotiff_bytes(self, name: str, layer: int | None = None, values: np.ndarray | None = None) -> io.BytesIO:
        """A tiled, DEFLATE-compressed GeoTIFF of one layer (or of ``values`` [y, x] on its grid)."""
        da = self.dataarray(name, layer)
        if values is not None:
            da = da.copy(data=values)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "layer.tif"
            da.rio.to_raster(path, driver="GTiff", tiled=True, compress="DEFLATE")
            return io.BytesIO(path.read_bytes())
