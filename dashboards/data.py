"""Read-only access to a run for the dashboard: the run store, run.json, site tables, truth, models.

A run is opened once per process (``load_run`` is an ``lru_cache``) and shared by all sessions;
2-D layers, colour limits, curves and importances are cached on the :class:`RunData` object.
Nothing here writes to the run.
"""

from __future__ import annotations

import functools
import io
import json
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from socmap.clm5.parameters import INDEX, NAMES, PARAMETERS

ASSETS = Path(__file__).resolve().parent.parent / "assets"
KIND_ORDER = ("stock", "soc", "parameter", "diagnostic", "difference", "uncertainty", "covariate", "mask")
KIND_LABEL = {
    "stock": "SOC stocks", "soc": "SOC by layer", "parameter": "Parameters", "diagnostic": "Diagnostics",
    "difference": "Differences", "uncertainty": "Uncertainty", "covariate": "Covariates", "mask": "Masks",
}


def open_store_dataset(run_dir: Path) -> xr.Dataset:
    """The run store, through ``socmap.store.open_store`` when it exists."""
    try:
        from socmap.store import open_store  # type: ignore[import-not-found]
    except ImportError:
        open_store = None
    if open_store is not None:
        return open_store(run_dir)
    store = Path(run_dir) / "maps.zarr"
    if not store.exists():
        raise FileNotFoundError(f"{store} not found: run `socmap map --run {run_dir}` first")
    return xr.open_zarr(store, decode_coords="all")


@dataclass
class Curves:
    """One parameter's curves, one entry per covariate, ordered by importance (largest first)."""

    param: str
    method: str  # "kan edge" or "partial dependence"
    covariates: list[str]
    importance: np.ndarray
    xs: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    lo: dict[str, np.ndarray]
    hi: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    symbolic: dict[str, object]


class RunData:
    """Everything the dashboard shows about one run (lazy, cached, thread-safe enough)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir).resolve()
        record_path = self.path / "run.json"
        if not record_path.is_file():
            raise FileNotFoundError(f"{record_path} not found: {self.path} is not a finished socmap run")
        self.record = json.loads(record_path.read_text())
        self.ds = open_store_dataset(self.path)
        self.name = str(self.ds.attrs.get("run_name") or self.record.get("name") or self.path.name)
        self.encoder = str(self.ds.attrs.get("encoder") or self.record.get("config", {}).get("encoder", "?"))
        self.resolution = float(self.ds.attrs.get("resolution_deg") or abs(float(self.ds.x[1] - self.ds.x[0])))
        self.x = self.ds["x"].values.astype(np.float64)
        self.y = self.ds["y"].values.astype(np.float64)
        self.depth_m = self.ds["depth_m"].values if "depth_m" in self.ds.coords else None
        self.n_layers = int(self.ds.sizes.get("layer", 0))
        self._lock = threading.RLock()
        self._arrays: dict = {}
        self._clims: dict = {}
        self._curves: dict = {}
        self._curve_locks: dict = {}
        self._models = None
        self._sample = None

    # ---------------------------------------------------------------- store layers
    @functools.cached_property
    def variables(self) -> dict[str, str]:
        """Mappable variable -> kind, grouped in KIND_ORDER (2-D variables, and ``soc``)."""
        out = {}
        for kind in KIND_ORDER:
            for name, da in self.ds.data_vars.items():
                if da.attrs.get("kind") == kind and set(da.dims) <= {"y", "x", "layer"} and {"y", "x"} <= set(da.dims):
                    out[name] = kind
        for name, da in self.ds.data_vars.items():  # anything without a kind still shows
            if name not in out and set(da.dims) >= {"y", "x"} and set(da.dims) <= {"y", "x", "layer"}:
                out[name] = "other"
        return out

    @functools.cached_property
    def predicted_params(self) -> list[str]:
        params = self.record.get("config", {}).get("params", "four")
        from socmap.clm5.parameters import resolve_subset

        try:
            return list(resolve_subset(params))
        except ValueError:
            return []

    def kind(self, name: str) -> str:
        return self.variables.get(name, "other")

    def attrs(self, name: str) -> dict:
        return dict(self.ds[name].attrs)

    def units(self, name: str) -> str:
        return str(self.ds[name].attrs.get("units", ""))

    def label(self, name: str, layer: int | None = None) -> str:
        a = self.ds[name].attrs
        text = str(a.get("long_name", name))
        if name in INDEX:
            text = f"{name}: {text}"
        if "layer" in self.ds[name].dims and layer is not None and self.depth_m is not None:
            text += f", layer {layer} ({self.depth_m[layer]:.2f} m)"
        return text

    def has_layers(self, name: str) -> bool:
        return "layer" in self.ds[name].dims

    def array(self, name: str, layer: int | None = None) -> np.ndarray:
        """The 2-D float32 array (y, x) of a variable (at ``layer`` for 3-D variables); cached."""
        if not self.has_layers(name):
            layer = None
        key = (name, layer)
        with self._lock:
            if key not in self._arrays:
                da = self.ds[name]
                if layer is not None:
                    full = self._arrays.get((name, "all"))
                    if full is None:
                        full = da.transpose("y", "x", "layer").values.astype(np.float32, copy=False)
                        self._arrays[(name, "all")] = full
                    arr = np.ascontiguousarray(full[:, :, layer])
                else:
                    arr = da.transpose("y", "x").values.astype(np.float32, copy=False)
                self._arrays[key] = arr
            return self._arrays[key]

    def profile(self, name: str, iy: int, ix: int) -> np.ndarray:
        self.array(name, 0)
        return self._arrays[(name, "all")][iy, ix, :]

    def clim(self, name: str, layer: int | None = None) -> tuple[float, float]:
        """Robust colour limits (2–98 %); symmetric about zero for differences."""
        key = (name, layer if self.has_layers(name) else None)
        if key not in self._clims:
            arr = self.array(name, layer)
            finite = arr[np.isfinite(arr)]
            if finite.size == 0:
                lim = (0.0, 1.0)
            elif self.kind(name) == "difference":
                m = float(np.percentile(np.abs(finite), 98)) or float(np.abs(finite).max()) or 1.0
                lim = (-m, m)
            elif name in ("land_cover", "land_mask"):
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

    def cell(self, lon: float, lat: float) -> tuple[int, int] | None:
        """Grid indices of the cell holding (lon, lat), or None outside the grid."""
        if lon is None or lat is None:
            return None
        ix = int(np.abs(self.x - lon).argmin())
        iy = int(np.abs(self.y - lat).argmin())
        if abs(self.x[ix] - lon) > self.resolution or abs(self.y[iy] - lat) > self.resolution:
            return None
        return iy, ix

    def value(self, name: str, iy: int, ix: int, layer: int | None = None) -> float:
        return float(self.array(name, layer)[iy, ix])

    def dataarray(self, name: str, layer: int | None = None) -> xr.DataArray:
        """A 2-D DataArray (y, x) with CRS EPSG:4326, for export."""
        import rioxarray  # noqa: F401

        arr = self.array(name, layer)
        attrs = {k: v for k, v in self.attrs(name).items() if isinstance(v, (str, int, float))}
        if layer is not None and self.has_layers(name) and self.depth_m is not None:
            attrs["layer"] = int(layer)
            attrs["depth_m"] = float(self.depth_m[layer])
        da = xr.DataArray(arr, dims=("y", "x"), coords={"y": self.y, "x": self.x}, name=name, attrs=attrs)
        da = da.rio.write_crs("EPSG:4326").rio.set_spatial_dims(x_dim="x", y_dim="y")
        return da.rio.write_nodata(np.nan, encoded=False)

    def geotiff_bytes(self, name: str, layer: int | None = None) -> io.BytesIO:
        da = self.dataarray(name, layer)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "layer.tif"
            da.rio.to_raster(path, driver="GTiff", tiled=True, compress="DEFLATE")
            return io.BytesIO(path.read_bytes())

    def coarse(self, name: str, max_px: int = 240) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """Block-mean downsampled array for small multiples, and its bounds (l, b, r, t)."""
        arr = self.array(name)
        f = max(1, int(np.ceil(arr.shape[1] / max_px)))
        if f > 1:
            ny, nx = (arr.shape[0] // f) * f, (arr.shape[1] // f) * f
            blocks = arr[:ny, :nx].reshape(ny // f, f, nx // f, f)
            with np.errstate(all="ignore"):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    arr = np.nanmean(blocks, axis=(1, 3))
            xs, ys = self.x[: nx], self.y[: ny]
        else:
            xs, ys = self.x, self.y
        half = self.resolution / 2
        return arr, (xs.min() - half, ys.min() - half, xs.max() + half, ys.max() + half)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        half = self.resolution / 2
        return (self.x.min() - half, self.y.min() - half, self.x.max() + half, self.y.max() + half)

    # ---------------------------------------------------------------- sites
    @functools.cached_property
    def observations(self) -> pd.DataFrame:
        """One row per observation: predictions.csv (+ residual_g_m3, log_ratio)."""
        path = self.path / "site_residuals.csv"
        df = pd.read_csv(path if path.exists() else self.path / "predictions.csv")
        if "residual_g_m3" not in df:
            df["residual_g_m3"] = df["soc_sim_g_m3"] - df["soc_obs_g_m3"]
        if "log_ratio" not in df:
            with np.errstate(all="ignore"):
                df["log_ratio"] = np.log(df["soc_sim_g_m3"] / df["soc_obs_g_m3"])
        return df

    @functools.cached_property
    def sites(self) -> pd.DataFrame:
        """One row per site: lon, lat, fold, observed SOC of the top sample, mean log ratio."""
        obs = self.observations.sort_values(["site_id", "depth_m"])
        g = obs.groupby("site_id", sort=False)
        out = g.agg(lon=("lon", "first"), lat=("lat", "first"), fold=("fold", "first"),
                    top_depth_m=("depth_m", "first"), soc_obs_top=("soc_obs_g_m3", "first"),
                    log_ratio=("log_ratio", "mean"), n_obs=("depth_m", "size")).reset_index()
        return out

    @functools.cached_property
    def site_parameters(self) -> pd.DataFrame | None:
        path = self.path / "site_parameters.csv"
        return pd.read_csv(path).set_index("site_id") if path.exists() else None

    @functools.cached_property
    def data_dir(self) -> Path | None:
        d = self.record.get("data", {}).get("dir")
        return Path(d) if d and Path(d).exists() else None

    @functools.cached_property
    def site_table(self) -> pd.DataFrame | None:
        """sites.csv of the data dir (covariates, true p for the synthetic twin), if present."""
        if self.data_dir and (self.data_dir / "sites.csv").exists():
            return pd.read_csv(self.data_dir / "sites.csv").set_index("site_id")
        return None

    @functools.cached_property
    def truth(self) -> dict | None:
        if self.data_dir and (self.data_dir / "truth.json").exists():
            return json.loads((self.data_dir / "truth.json").read_text())
        return None

    # ---------------------------------------------------------------- models and curves
    @property
    def models(self) -> list:
        with self._lock:
            if self._models is None:
                try:
                    from socmap.runs import open_run

                    self._models = open_run(self.path).models
                except (FileNotFoundError, ValueError, KeyError):
                    self._models = []
            return self._models

    @functools.cached_property
    def covariate_names(self) -> list[str]:
        if self.models:
            return list(self.models[0].spec.covariate_names)
        return list(self.record.get("data", {}).get("covariates", []))

    def covariate_sample(self, n: int = 1500) -> np.ndarray:
        """Covariates [n, C] at land cells of the store (physical units), for importance and PD."""
        with self._lock:
            if self._sample is None:
                names = self.covariate_names
                if all(c in self.ds for c in names):
                    cols = [self.array(c).ravel() for c in names]
                    X = np.column_stack(cols).astype(np.float64)
                    X = X[np.isfinite(X).all(1)]
                elif self.site_table is not None:
                    X = self.site_table[names].to_numpy(np.float64)
                else:
                    X = np.zeros((0, len(names)))
                rng = np.random.default_rng(0)
                if len(X) > n:
                    X = X[rng.choice(len(X), n, replace=False)]
                self._sample = X
            return self._sample

    @property
    def is_kan(self) -> bool:
        m = self.models
        return bool(m) and m[0].is_kan and len(m[0].encoder.layers) == 1

    def _pd(self, model, X: np.ndarray, param: str, i: int, grid: np.ndarray) -> np.ndarray:
        """Partial dependence of p_param on covariate i, all grid values in one forward pass."""
        import torch

        from socmap.clm5.parameters import INDEX as PINDEX

        rows = np.repeat(X[None, :, :], len(grid), axis=0)
        rows[:, :, i] = grid[:, None]
        with torch.no_grad():
            p = model(torch.as_tensor(rows.reshape(-1, X.shape[1]), dtype=torch.float32))[:, PINDEX[param]]
        return p.numpy().reshape(len(grid), len(X)).mean(1)

    def curves(self, param: str, n: int = 81) -> Curves:
        """Edge curves (1-layer KAN) or partial dependence (otherwise), fold mean and range.

        Ordered by importance: KAN edge scores, or the spread of the PD curve for other encoders.
        """
        with self._lock:
            if param in self._curves:
                return self._curves[param]
            lock = self._curve_locks.setdefault(param, threading.Lock())
        with lock:
            if param in self._curves:
                return self._curves[param]
            out = self._compute_curves(param, n)
            self._curves[param] = out
            return out

    def _compute_curves(self, param: str, n: int) -> Curves:
        from socmap import interpret

        models = self.models
        X = self.covariate_sample()
        names = self.covariate_names
        kan = self.is_kan
        xs, curves = {}, {}
        for i, c in enumerate(names):
            q = np.quantile(X[:, i], [0.005, 0.995]) if len(X) else (models[0].spec.covariate_lo[i], models[0].spec.covariate_hi[i])
            grid = np.linspace(q[0], q[1], n if kan else 31)
            if kan:
                curves[c] = np.stack([interpret.edge_curve(m, param, c, grid) for m in models])
            else:
                curves[c] = np.stack([self._pd(m, X[:256], param, i, grid) for m in models])
            xs[c] = grid
        if kan:
            imps = np.mean([interpret.importance(m, X[:300])[m.param_names.index(param)] for m in models], axis=0)
        else:
            imps = np.array([np.std(curves[c].mean(0)) for c in names])
            imps = imps / max(imps.sum(), 1e-12)
        order = list(np.argsort(-imps))
        mean, lo, hi, truth, symbolic = {}, {}, {}, {}, {}
        for i in order:
            c = names[i]
            ys = curves[c]
            mean[c], lo[c], hi[c] = ys.mean(0), ys.min(0), ys.max(0)
            symbolic[c] = fast_symbolic(xs[c], mean[c]) if np.ptp(mean[c]) > 1e-9 else None
            truth[c] = None
            if self.truth is not None:
                from socmap.data.synthetic import truth_edge_function

                t = truth_edge_function(self.truth, param, c, xs[c])
                # edge constants are not identifiable: put the true curve on the learned curve's mean
                truth[c] = t - t.mean() + mean[c].mean() if np.ptp(t) > 0 else None
        return Curves(param, "KAN edge" if kan else "partial dependence", [names[i] for i in order], imps[order], xs, mean, lo, hi, truth, symbolic)

    def warm(self) -> None:
        """Compute the predicted parameters' curves (slow: symbolic fits) ahead of the first visit."""
        with self._lock:
            if getattr(self, "_warming", False):
                return
            self._warming = True
        for p in self.predicted_params:
            try:
                self.curves(p)
            except Exception:  # noqa: BLE001 - warming is best effort
                return

    def contributions(self, param: str, values: dict[str, float]) -> dict[str, float]:
        """Each covariate's contribution to p_param at one location (edge value for a KAN;
        PD value minus the PD mean otherwise), fold mean."""
        from socmap import interpret

        out = {}
        for c in self.covariate_names:
            v = values.get(c)
            if v is None or not np.isfinite(v):
                continue
            if self.is_kan:
                out[c] = float(np.mean([interpret.edge_curve(m, param, c, np.array([v]))[0] for m in self.models]))
            else:
                cv = self.curves(param)
                out[c] = float(np.interp(v, cv.xs[c], cv.mean[c]) - cv.mean[c].mean())
        return out


def fast_symbolic(xs: np.ndarray, ys: np.ndarray):
    """Vectorised :func:`socmap.interpret.suggest_symbolic` (same library, grids and formula text):
    for each f and (a, b) the least-squares (c, d) of ``c·f(a·x' + b) + d`` in closed form."""
    import warnings

    from socmap.interpret import _LIBRARY, SymbolicFit

    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    lo, hi = xs.min(), xs.max()
    u = (xs - lo) / (hi - lo if hi > lo else 1.0)
    yc = ys - ys.mean()
    sst = float((yc ** 2).sum())
    best = None
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind, f in _LIBRARY.items():
            if kind == "linear":
                ab = np.array([[1.0, 0.0]])
            else:
                a, b = np.meshgrid(np.linspace(-3, 3, 25), np.linspace(-2, 2, 17), indexing="ij")
                ab = np.column_stack([a.ravel(), b.ravel()])
                ab = ab[ab[:, 0] != 0]
            g = f(ab[:, :1] * u[None, :] + ab[:, 1:])
            ok = np.isfinite(g).all(1) & (g.std(1) >= 1e-12)
            if not ok.any():
                continue
            g, ab = g[ok], ab[ok]
            gc = g - g.mean(1, keepdims=True)
            c = (gc @ yc) / (gc ** 2).sum(1)
            d = ys.mean() - c * g.mean(1)
            sse = ((ys[None, :] - (c[:, None] * g + d[:, None])) ** 2).sum(1)
            r2 = 1.0 - sse / sst if sst > 0 else np.zeros_like(sse)
            k = int(np.argmax(r2))
            if best is None or r2[k] > best.r2 + 1e-9:
                a_, b_ = ab[k]
                inner = "x'" if kind == "linear" else f"{a_:.2g}·x'{b_:+.2g}"
                best = SymbolicFit(f"{c[k]:.3g}·{kind}({inner}) {d[k]:+.3g}", kind, float(r2[k]), (float(a_), float(b_), float(c[k]), float(d[k])))
    return best


@functools.lru_cache(maxsize=8)
def load_run(run_dir: str) -> RunData:
    """Open a run once per process (shared by all sessions)."""
    return RunData(run_dir)


@functools.lru_cache(maxsize=1)
def state_outlines() -> tuple[np.ndarray, np.ndarray]:
    """CONUS state outlines from assets/conus_states.geojson as NaN-separated (x, y) arrays."""
    geo = json.loads((ASSETS / "conus_states.geojson").read_text())
    xs, ys = [], []
    for feat in geo["features"]:
        g = feat["geometry"]
        polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
        for poly in polys:
            for ring in poly:
                a = np.asarray(ring, dtype=np.float64)
                xs.append(np.append(a[:, 0], np.nan))
                ys.append(np.append(a[:, 1], np.nan))
    return np.concatenate(xs), np.concatenate(ys)


def parameter_unit(name: str) -> str:
    return PARAMETERS[INDEX[name]].unit if name in INDEX else ""


def find_runs(root: str | Path = "runs") -> list[Path]:
    root = Path(root)
    return sorted(p.parent for p in root.glob("*/maps.zarr") if (p.parent / "run.json").exists())


__all__ = ["Curves", "RunData", "load_run", "state_outlines", "find_runs", "NAMES", "parameter_unit"]
