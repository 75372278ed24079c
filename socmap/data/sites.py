"""Site data: the :class:`SiteData` container and every loader that fills one.

:class:`SiteData` holds N sites with their covariates (physical units), land cover, CLM5 forcing
and NaN-padded SOC observations; it is what training consumes. Loaders, chosen by the catalog
``kind`` of the data entry through :data:`SITE_LOADERS`:

- ``synthetic``: :func:`load_synthetic` reads a ``socmap synth`` output folder;
- ``covariates``: :func:`load_real_sites` samples real profiles on a real covariate cube
  (``socmap covariates build --source real-conus --out DIR``); :func:`load_real` returns the
  same sites together with the profile table and a report of what was dropped.

Real profiles come from ``profiles=`` (a user's tables: :func:`load_profile_sources`, files read
by the intake or catalog entries of kind ``profiles``), else from the catalog (NWCA 2011 + SoDaH by
default) with the options in
``DIR/realcube.json`` (key ``profiles``: ``sources``, ``bulk_density`` "fill" | "measured",
``forest_floor`` "drop" | "shift"), or from ``DIR/profiles.csv`` when that file exists (a tidy
table: site_id, lon, lat, top_m, bottom_m, soc_g_m3). Keyword arguments override both. Each real
site (one per ``site_id``) is placed on the grid cell that contains it; a site on a non-land cell
(coastal wetlands) moves to the nearest land cell within one cell (``snap_cells``); sites still
off land or off the grid are dropped and counted. Repeated observations of the same layer (same
site, top and bottom, e.g. SoDaH time series) are merged into their geometric mean by default
(``aggregate=True``), so a site sampled 2,000 times does not dominate the loss.

:func:`profiles_to_arrays` turns a tidy profile table (one row per layer) into the padded arrays.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from socmap.clm5 import Forcing
from socmap.clm5.parameters import NAMES

log = logging.getLogger(__name__)


@dataclass
class SiteData:
    """N sites: covariates, forcing and observed SOC profiles (truth too, for synthetic data)."""

    site_id: np.ndarray  # [N] str
    lon: np.ndarray  # [N] degrees east
    lat: np.ndarray  # [N] degrees north
    covariates: np.ndarray  # [N, C] float64, physical units
    covariate_names: list[str]
    covariate_units: list[str]
    land_cover: np.ndarray  # [N] int IGBP
    forcing: Forcing  # N sites
    depth_m: np.ndarray  # [N, L] NaN-padded observation mid depths (m)
    soc_g_m3: np.ndarray  # [N, L] NaN-padded observed SOC density (g C m-3)
    true_p: np.ndarray | None = None  # [N, 21] normalised truth (synthetic only)
    truth: dict | None = None  # truth.json content (synthetic only)
    covariate_range: dict[str, tuple[float, float]] | None = None  # min/max over the land grid
    bd_estimated: np.ndarray | None = None  # [N, L] bool: the observation's bulk density is a pedotransfer estimate
    top_m: np.ndarray | None = None  # [N, L] NaN-padded observed layer tops (m), where the table has them
    bottom_m: np.ndarray | None = None  # [N, L] NaN-padded observed layer bottoms (m)
    wetland: np.ndarray | None = None  # [N] float64 0/1: the site's own land unit is a wetland (None: unknown = upland)
    land_class: np.ndarray | None = None  # [N] str: the site's own land class (profiles.LAND_CLASSES; "" unknown)

    def __post_init__(self) -> None:
        n = len(self.site_id)
        checks = {
            "lon": (self.lon, (n,)), "lat": (self.lat, (n,)), "land_cover": (self.land_cover, (n,)),
            "covariates": (self.covariates, (n, len(self.covariate_names))),
        }
        for name, (arr, shape) in checks.items():
            if tuple(np.shape(arr)) != shape:
                raise ValueError(f"SiteData.{name} has shape {np.shape(arr)}; expected {shape} for {n} sites")
        if len(self.covariate_units) != len(self.covariate_names):
            raise ValueError("SiteData.covariate_units must have one entry per covariate name")
        if self.depth_m.shape != self.soc_g_m3.shape or self.depth_m.shape[0] != n:
            raise ValueError(f"SiteData.depth_m {self.depth_m.shape} and soc_g_m3 {self.soc_g_m3.shape} must both be [{n}, L]")
        if self.forcing.batch_size != n:
            raise ValueError(f"SiteData.forcing has {self.forcing.batch_size} sites, not {n}")
        if self.wetland is not None and tuple(np.shape(self.wetland)) != (n,):
            raise ValueError(f"SiteData.wetland has shape {np.shape(self.wetland)}; expected ({n},)")
        if self.land_class is not None and tuple(np.shape(self.land_class)) != (n,):
            raise ValueError(f"SiteData.land_class has shape {np.shape(self.land_class)}; expected ({n},)")
        if self.true_p is not None and self.true_p.shape != (n, len(NAMES)):
            raise ValueError(f"SiteData.true_p has shape {self.true_p.shape}; expected {(n, len(NAMES))}")

    def __len__(self) -> int:
        return len(self.site_id)

    def subset(self, idx) -> "SiteData":
        """Sites ``idx`` (integer indices, a boolean mask or a slice)."""
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean index has shape {idx.shape}; expected ({len(self)},)")
            idx = np.nonzero(idx)[0]
        idx = idx.astype(np.int64)
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "forcing":
                out[f.name] = v.subset(torch.as_tensor(idx))
            elif isinstance(v, np.ndarray):
                out[f.name] = v[idx]
            else:
                out[f.name] = v
        return SiteData(**out)

    def wetland_flag(self) -> np.ndarray:
        """The site-level wetland flag [N] float64 (0 = upland, 1 = wetland); zeros when unknown."""
        return np.zeros(len(self)) if self.wetland is None else np.asarray(self.wetland, dtype=np.float64)

    def covariate_frame(self) -> pd.DataFrame:
        """Covariates as a DataFrame (columns = covariate names)."""
        return pd.DataFrame(self.covariates, columns=self.covariate_names)

    def scaling_range(self) -> tuple[list[float], list[float]]:
        """Min–max scaling range per covariate, physical units: ``(lo [C], hi [C])``.

        The land-grid range when the loader knew it, else the sites' own range; a constant
        covariate gets a span of 1 so that scaling never divides by zero.
        """
        lo, hi = [], []
        for i, name in enumerate(self.covariate_names):
            if self.covariate_range and name in self.covariate_range:
                a, b = self.covariate_range[name]
            else:
                a, b = float(np.nanmin(self.covariates[:, i])), float(np.nanmax(self.covariates[:, i]))
            if not b > a:
                b = a + 1.0
            lo.append(float(a))
            hi.append(float(b))
        return lo, hi


#: Name of the site-level wetland flag when it is an encoder input (:func:`with_wetland_input`).
WETLAND_INPUT = "wetland"


#: Prefix of the one-hot site land-class inputs (:func:`with_land_class_input`): ``land_forest``, …
LAND_CLASS_PREFIX = "land_"


def land_class_inputs() -> list[str]:
    """The names of the one-hot land-class inputs, one per :data:`socmap.data.profiles.LAND_CLASSES`."""
    from socmap.data.profiles import LAND_CLASSES

    return [LAND_CLASS_PREFIX + c for c in LAND_CLASSES]


def with_land_class_input(data: SiteData) -> SiteData:
    """``data`` with the site's own land class (docs/model.md §5.11) appended as one-hot covariates
    ``land_<class>`` (0/1, scaling range 0–1; a site of unknown class has all zeros), so every
    encoder and baseline sees it. In the KAN each is one edge per parameter evaluated at 0 or 1
    only: a constant offset for the sites of that class.

    Raises
    ------
    ValueError
        No site has a land class (a table without the sources' site classes).
    """
    from socmap.data.profiles import LAND_CLASSES

    names = land_class_inputs()
    if names[0] in data.covariate_names:
        return data
    classes = np.asarray(data.land_class if data.land_class is not None else np.full(len(data), ""), dtype=object)
    if not any(c in LAND_CLASSES for c in classes):
        raise ValueError("land_class_input: no site has a land class; it comes from the real profiles' own site "
                         "classes (NWCA 2011 CLASS_FIELD_FWSST, SoDaH land_cover). Train without land_class_input")
    onehot = np.column_stack([(classes == c).astype(np.float64) for c in LAND_CLASSES])
    out = {f.name: getattr(data, f.name) for f in fields(data)}
    out["covariates"] = np.column_stack([data.covariates, onehot])
    out["covariate_names"] = [*data.covariate_names, *names]
    out["covariate_units"] = [*data.covariate_units, *(["1"] * len(names))]
    out["covariate_range"] = {**(data.covariate_range or {}), **{n: (0.0, 1.0) for n in names}}
    return SiteData(**out)


def with_wetland_input(data: SiteData) -> SiteData:
    """``data`` with the site-level wetland flag appended as the last covariate :data:`WETLAND_INPUT`
    (0 = upland, 1 = wetland; scaling range 0–1), so every encoder and baseline sees it.

    The flag is an attribute of the site, not of its cell: a map evaluates each cell once as
    upland (0) and once as wetland (1) and area-weights the two columns
    (:func:`socmap.cells.wetland_weighted`).
    """
    if WETLAND_INPUT in data.covariate_names:
        return data
    out = {f.name: getattr(data, f.name) for f in fields(data)}
    out["covariates"] = np.column_stack([data.covariates, data.wetland_flag()])
    out["covariate_names"] = [*data.covariate_names, WETLAND_INPUT]
    out["covariate_units"] = [*data.covariate_units, "1"]
    out["covariate_range"] = {**(data.covariate_range or {}), WETLAND_INPUT: (0.0, 1.0)}
    return SiteData(**out)


def profiles_to_arrays(profiles: pd.DataFrame, site_ids) -> tuple[np.ndarray, np.ndarray]:
    """NaN-padded ``(depth_m [N, L], soc [N, L])`` from a tidy profile table, in ``site_ids`` order.

    Rows are sorted by depth within each site; ``depth_m`` is taken from the ``depth_m`` column, or
    the mid point of ``top_m`` and ``bottom_m`` when that column is absent. Sites without rows get
    an all-NaN row; rows whose site is not in ``site_ids`` are ignored.
    """
    site_ids = np.asarray(site_ids).astype(str)
    if "depth_m" in profiles:
        depth = profiles["depth_m"].to_numpy(np.float64)
    elif {"top_m", "bottom_m"} <= set(profiles.columns):
        depth = 0.5 * (profiles["top_m"].to_numpy(np.float64) + profiles["bottom_m"].to_numpy(np.float64))
    else:
        raise KeyError("the profile table needs a depth_m column or top_m and bottom_m columns")
    if "soc_g_m3" not in profiles:
        raise KeyError("the profile table needs a soc_g_m3 column (SOC density, g C m-3)")
    pos = pd.Index(site_ids)
    if not pos.is_unique:
        raise ValueError("site_ids must be unique")
    row_site = pos.get_indexer(profiles["site_id"].astype(str).to_numpy())
    keep = row_site >= 0
    frame = pd.DataFrame({"site": row_site[keep], "depth": depth[keep], "soc": profiles["soc_g_m3"].to_numpy(np.float64)[keep]})
    frame = frame.sort_values(["site", "depth"], kind="stable")
    rank = frame.groupby("site").cumcount().to_numpy()
    n_layers = int(rank.max()) + 1 if len(frame) else 1
    d = np.full((len(site_ids), n_layers), np.nan)
    s = np.full((len(site_ids), n_layers), np.nan)
    d[frame["site"].to_numpy(), rank] = frame["depth"].to_numpy()
    s[frame["site"].to_numpy(), rank] = frame["soc"].to_numpy()
    return d, s


def layer_bounds(profiles: pd.DataFrame, site_ids) -> tuple[np.ndarray | None, np.ndarray | None]:
    """NaN-padded ``(top_m, bottom_m)`` [N, L] in the order of :func:`profiles_to_arrays`, or
    ``(None, None)`` when the table has no ``top_m``/``bottom_m`` columns."""
    if not {"top_m", "bottom_m"} <= set(profiles.columns):
        return None, None
    _, top = profiles_to_arrays(profiles.assign(soc_g_m3=profiles["top_m"].to_numpy(np.float64)), site_ids)
    _, bottom = profiles_to_arrays(profiles.assign(soc_g_m3=profiles["bottom_m"].to_numpy(np.float64)), site_ids)
    return top, bottom


def load_synthetic(directory: str | Path) -> SiteData:
    """Load a ``socmap synth`` output folder as :class:`SiteData`.

    Reads ``sites.csv``, ``profiles.csv`` and ``truth.json``; samples the monthly climate at the
    sites' cells from ``cube.zarr`` and derives the forcing exactly as the generator did.
    """
    from socmap.data.cube import cell_forcing, open_cube, sample_grid
    from socmap.data.covariates import COVARIATES

    directory = Path(directory)
    needed = ["sites.csv", "profiles.csv", "truth.json", "cube.zarr"]
    missing = [n for n in needed if not (directory / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a complete socmap synth output (missing {', '.join(missing)}); "
            f"create one with `socmap synth --out {directory}`"
        )
    sites = pd.read_csv(directory / "sites.csv", dtype={"site_id": str})
    profiles = pd.read_csv(directory / "profiles.csv", dtype={"site_id": str})
    truth = json.loads((directory / "truth.json").read_text())
    cube = open_cube(directory / "cube.zarr")
    names = list(cube.attrs.get("numeric_covariates") or truth["covariates"])
    ranges_json = cube.attrs.get("covariate_range_json")
    ranges = json.loads(ranges_json) if ranges_json else truth["covariate_range"]
    lon = sites["lon"].to_numpy(np.float64)
    lat = sites["lat"].to_numpy(np.float64)
    where = sample_grid(cube, lon, lat)
    if not where.ok.all():
        bad = np.nonzero(~where.ok)[0]
        raise ValueError(f"{len(bad)} site(s) of {directory / 'sites.csv'} are not on land cells of the cube "
                         f"(e.g. {sites['site_id'].iloc[bad[0]]}: {where.status[bad[0]]}); the folder is inconsistent")
    forcing = cell_forcing(cube, where.iy, where.ix, lat)
    depth, soc = profiles_to_arrays(profiles, sites["site_id"].to_numpy())
    top, bottom = layer_bounds(profiles, sites["site_id"].to_numpy())
    p_cols = [f"true_p_{n}" for n in NAMES]
    true_p = sites[p_cols].to_numpy(np.float64) if all(c in sites for c in p_cols) else None
    return SiteData(
        site_id=sites["site_id"].to_numpy().astype(str),
        lon=lon,
        lat=lat,
        covariates=sites[names].to_numpy(np.float64),
        covariate_names=names,
        covariate_units=[COVARIATES[n].units if n in COVARIATES else cube[n].attrs.get("units", "") for n in names],
        land_cover=sites["land_cover"].to_numpy(np.int64),
        forcing=forcing,
        depth_m=depth,
        soc_g_m3=soc,
        true_p=true_p,
        truth=truth,
        covariate_range={k: (float(v[0]), float(v[1])) for k, v in ranges.items()},
        top_m=top,
        bottom_m=bottom,
    )


# ----------------------------------------------------------------------------------------
# real profiles on a real covariate cube
# ----------------------------------------------------------------------------------------

@dataclass
class RealSites:
    """:class:`SiteData` plus the profile table it came from and what was dropped."""

    data: SiteData
    profiles: pd.DataFrame  # the (aggregated) layers of the kept sites
    report: dict[str, Any] = field(default_factory=dict)


def _options(directory: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    opts: dict[str, Any] = {"sources": ["nwca2011", "sodah"], "bulk_density": "fill", "forest_floor": "drop"}
    meta = directory / "realcube.json"
    if meta.exists():
        opts.update({k: v for k, v in json.loads(meta.read_text()).get("profiles", {}).items() if k in opts})
    opts.update({k: v for k, v in overrides.items() if v is not None})
    return opts


def aggregate_layers(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (site_id, top_m, bottom_m): geometric mean SOC, count in ``n_obs``."""
    t = table.assign(_log=np.log(table["soc_g_m3"].to_numpy(np.float64)))
    g = t.groupby(["site_id", "top_m", "bottom_m"], sort=False)
    out = g.agg(lon=("lon", "first"), lat=("lat", "first"), depth_m=("depth_m", "first"), _log=("_log", "mean"),
                n_obs=("_log", "size"), source=("source", "first"), bd_estimated=("bd_estimated", "mean"),
                **({"wetland": ("wetland", "max")} if "wetland" in t else {})).reset_index()
    out["soc_g_m3"] = np.exp(out.pop("_log"))
    return out


def snap_to_land(cube, where, lon, lat, max_cells: int = 1):
    """Move sites on water cells to the nearest land cell within ``max_cells`` cells (coastal wetlands).

    Returns the updated :class:`~socmap.data.cube.GridSample` and the number of sites moved;
    sites with no land cell that close keep the status ``water`` (dropped by the caller).
    """
    from socmap.data.cube import STATUS_OK, STATUS_WATER, GridSample

    if max_cells <= 0:
        return where, 0
    mask = np.asarray(cube["land_mask"].values, dtype=bool)
    xs, ys = np.asarray(cube["x"].values), np.asarray(cube["y"].values)
    iy, ix, status = where.iy.copy(), where.ix.copy(), where.status.astype(object).copy()
    moved = 0
    for k in np.flatnonzero(where.status == STATUS_WATER):
        y0, x0 = iy[k], ix[k]
        best, best_d = None, np.inf
        for dy in range(-max_cells, max_cells + 1):
            for dx in range(-max_cells, max_cells + 1):
                y, x = y0 + dy, x0 + dx
                if 0 <= y < mask.shape[0] and 0 <= x < mask.shape[1] and mask[y, x]:
                    d = ((xs[x] - lon[k]) * np.cos(np.deg2rad(lat[k]))) ** 2 + (ys[y] - lat[k]) ** 2
                    if d < best_d:
                        best, best_d = (y, x), d
        if best is not None:
            iy[k], ix[k] = best
            status[k] = STATUS_OK
            moved += 1
    return GridSample(iy=iy, ix=ix, status=status.astype(str)), moved


#: Site-level drop reasons of :func:`load_real` (cube sampling status -> reason in the report).
SITE_DROP_REASONS = {"outside grid": "site outside the covariate grid", "water": "site on a water cell (no land cell within reach)"}
R_BAD_SOC = "SOC density not positive"
R_MISSING_COVARIATE = "covariate {name} missing at the site's cell (raster nodata or outside its extent)"


def _row_report(ps) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Per-source dicts and the row drops by reason of a :class:`~socmap.data.profiles.ProfileSet` report."""
    sources, by_reason = [], {}
    for rep in ps.report.sources.values():
        d = rep.to_dict()
        sources.append(d)
        for reason, n in rep.dropped.items():
            by_reason[reason] = by_reason.get(reason, 0) + int(n)
    return sources, by_reason


def load_real(directory: str | Path, *, sources: list[str] | None = None, bulk_density: str | None = None,
              forest_floor: str | None = None, aggregate: bool = True, snap_cells: int = 1, profiles=None) -> RealSites:
    """Real profiles on the real cube in ``directory``, with their profile table and a load report.

    ``profiles`` (a :class:`~socmap.data.profiles.ProfileSet`, e.g. a user's table read by
    :func:`~socmap.data.profiles.load_profile_table`) replaces the catalog sources. The report
    (``report["load_report"]``) is a plain dict ``{"sources": [...], "totals": {...},
    "dropped_by_reason": {reason: rows}, "sites_dropped_by_reason": {reason: sites}}``: every row
    read is kept or dropped for a reason (the row checks of the profile loader, then sites off the
    grid, on water or without a covariate value), so ``rows_read = rows_kept + Σ dropped``.
    See the module docstring for the other options; :func:`load_real_sites` returns only the sites.
    """
    from socmap.data.cube import cell_forcing, open_cube, sample_grid
    from socmap.data.profiles import load_profiles

    directory = Path(directory)
    if not (directory / "cube.zarr").exists():
        raise FileNotFoundError(f"{directory} has no cube.zarr; build the real covariate cube with "
                                f"`socmap covariates build --source real-conus --out {directory}`")
    opts = _options(directory, {"sources": sources, "bulk_density": bulk_density, "forest_floor": forest_floor})
    report: dict[str, Any] = {"options": opts}
    if profiles is not None:
        table = profiles.table
        report["profiles"] = profiles.report.to_dict()
        src_rows, by_reason = _row_report(profiles)
        opts["sources"] = [r["source"] for r in src_rows]
    elif (directory / "profiles.csv").exists() and sources is None:
        table = pd.read_csv(directory / "profiles.csv", dtype={"site_id": str})
        missing = [c for c in ("site_id", "lon", "lat", "top_m", "bottom_m", "soc_g_m3") if c not in table]
        if missing:
            raise ValueError(f"{directory / 'profiles.csv'} lacks column(s) {missing}")
        if "depth_m" not in table:
            table["depth_m"] = 0.5 * (table["top_m"] + table["bottom_m"])
        for c, v in (("source", "profiles.csv"), ("bd_estimated", False), ("wetland", False)):
            if c not in table:
                table[c] = v
        report["profiles"] = {"file": str(directory / "profiles.csv"), "rows": len(table)}
        src_rows = [{"source": "profiles.csv", "files": [str(directory / "profiles.csv")], "rows_read": len(table),
                     "rows_kept": len(table), "rows_dropped": 0, "dropped": {}}]
        by_reason = {}
    else:
        ps = load_profiles(opts["sources"], bulk_density=opts["bulk_density"], forest_floor=opts["forest_floor"])
        table = ps.table
        report["profiles"] = ps.report.to_dict()
        src_rows, by_reason = _row_report(ps)
        log.info("real profiles:\n%s", ps.report.table())
    rows_read = sum(int(r["rows_read"]) for r in src_rows)
    bad_soc = ~(np.isfinite(table["soc_g_m3"].to_numpy(np.float64)) & (table["soc_g_m3"].to_numpy(np.float64) > 0))
    if bad_soc.any():
        by_reason[R_BAD_SOC] = by_reason.get(R_BAD_SOC, 0) + int(bad_soc.sum())
    table = table[~bad_soc]
    if "wetland" not in table:  # a table from before the wetland column: every site upland
        table = table.assign(wetland=False)
    table = table.assign(wetland=table["wetland"].fillna(False).astype(bool))
    cube = open_cube(directory / "cube.zarr").load()
    if "land_class" in table:  # the site's own land class: its first non-blank value
        table = table.assign(land_class=table["land_class"].fillna("").astype(str).replace("", None))
    sites = table.groupby("site_id", sort=True).agg(lon=("lon", "first"), lat=("lat", "first"), source=("source", "first"),
                                                    wetland=("wetland", "max"),
                                                    **({"land_class": ("land_class", "first")} if "land_class" in table else {})
                                                    ).reset_index()
    rows_per_site = table.groupby("site_id", sort=True).size().reindex(sites["site_id"]).to_numpy()
    where = sample_grid(cube, sites["lon"].to_numpy(), sites["lat"].to_numpy())
    where, snapped = snap_to_land(cube, where, sites["lon"].to_numpy(), sites["lat"].to_numpy(), max_cells=snap_cells)
    names = list(cube.attrs.get("numeric_covariates") or [])
    reason = np.array([SITE_DROP_REASONS.get(st, st) if st != "ok" else "" for st in where.status], dtype=object)
    ok = np.flatnonzero(where.ok)
    for n in names:  # a site whose cell has no value of a covariate (user raster nodata): dropped, named
        vals = np.full(len(sites), np.nan)
        vals[ok] = cube[n].values[where.iy[ok], where.ix[ok]]
        reason[(reason == "") & ~np.isfinite(vals)] = R_MISSING_COVARIATE.format(name=n)
    sites_dropped: dict[str, int] = {}
    for r in pd.unique(reason[reason != ""]):
        m = reason == r
        sites_dropped[str(r)] = int(m.sum())
        by_reason[str(r)] = by_reason.get(str(r), 0) + int(rows_per_site[m].sum())
    dropped = {k: int(v) for k, v in pd.Series(where.status)[~where.ok].value_counts().items()}
    keep_mask = reason == ""
    report["sites"] = {"read": len(sites), "kept": int(keep_mask.sum()), "snapped_to_nearest_land_cell": snapped,
                       "dropped": dropped, "dropped_by_reason": sites_dropped}
    if sites_dropped:
        log.warning("real sites dropped on the cube %s: %s", directory / "cube.zarr", sites_dropped)
    keep = np.flatnonzero(keep_mask)
    sites = sites.iloc[keep].reset_index(drop=True)
    iy, ix = where.iy[keep], where.ix[keep]
    table = table[table["site_id"].isin(sites["site_id"])]
    layers_before = len(table)
    n_est = int(np.asarray(table["bd_estimated"], dtype=bool).sum()) if "bd_estimated" in table else 0
    if aggregate:
        table = aggregate_layers(table)
    report["layers"] = {"rows": layers_before, "after_aggregation": len(table)}
    report["load_report"] = {
        "sources": src_rows,
        "totals": {
            "rows_read": rows_read, "rows_kept": layers_before, "rows_dropped": int(sum(by_reason.values())),
            "sites_read": len(reason), "sites_kept": len(sites), "sites_snapped_to_nearest_land_cell": int(snapped),
            "layers_after_merging_repeats": len(table), "bd_measured_rows": layers_before - n_est, "bd_estimated_rows": n_est,
            "wetland_sites": int(sites["wetland"].sum()), "upland_sites": int((~sites["wetland"].astype(bool)).sum()),
        },
        "wetland": _wetland_note(sites),
        "dropped_by_reason": by_reason,
        "sites_dropped_by_reason": sites_dropped,
        "bulk_density": opts["bulk_density"],
    }
    if not len(sites):
        raise ValueError(f"no usable sites on the cube {directory / 'cube.zarr'}: of {len(reason)} site(s), "
                         + "; ".join(f"{k}: {v}" for k, v in sites_dropped.items())
                         + ". Check the coordinates (CONUS, WGS84 lon/lat) and the raster covariates' coverage")
    cov = np.column_stack([cube[n].values[iy, ix].astype(np.float64) for n in names])
    forcing = cell_forcing(cube, iy, ix, sites["lat"].to_numpy(np.float64))
    depth, soc = profiles_to_arrays(table, sites["site_id"].to_numpy())
    top, bottom = layer_bounds(table, sites["site_id"].to_numpy())
    # per observation: the bulk density came from the pedotransfer function (any merged repeat estimated)
    _, est = profiles_to_arrays(table.assign(soc_g_m3=np.asarray(table["bd_estimated"], dtype=np.float64)),
                                sites["site_id"].to_numpy())
    ranges = json.loads(cube.attrs["covariate_range_json"]) if "covariate_range_json" in cube.attrs else {}
    data = SiteData(
        site_id=sites["site_id"].to_numpy().astype(str),
        lon=sites["lon"].to_numpy(np.float64),
        lat=sites["lat"].to_numpy(np.float64),
        covariates=cov,
        covariate_names=names,
        covariate_units=[str(cube[n].attrs.get("units", "")) for n in names],
        land_cover=cube["land_cover"].values[iy, ix].astype(np.int64),
        forcing=forcing,
        depth_m=depth,
        soc_g_m3=soc,
        covariate_range={k: (float(v[0]), float(v[1])) for k, v in ranges.items()},
        bd_estimated=np.where(np.isfinite(est), est > 0, False),
        top_m=top,
        bottom_m=bottom,
        wetland=sites["wetland"].to_numpy(np.float64),
        land_class=sites["land_class"].fillna("").to_numpy(object) if "land_class" in sites else None,
    )
    return RealSites(data=data, profiles=table.reset_index(drop=True), report=report)


def _wetland_note(sites: pd.DataFrame) -> str:
    """The load-report line on the site-level wetland flag: how many sites of each source are wetlands."""
    per = sites.groupby("source")["wetland"].agg(["sum", "size"])
    parts = [f"{src}: {int(r['sum'])} of {int(r['size'])}" for src, r in per.iterrows()]
    return ("wetland sites (the site's own land unit; sources without the flag count as upland): "
            + "; ".join(parts))


#: Catalog variable names of a ``profiles`` entry -> intake fields (:mod:`socmap.data.intake`).
_ENTRY_FIELDS = {
    "site_id": "site_id", "lat": "lat", "lon": "lon", "top": "top", "bottom": "bottom", "oc": "oc",
    "organic_carbon": "oc", "total_c": "total_c", "total_carbon": "total_c", "caco3": "caco3", "bd": "bd",
    "bulk_density": "bd", "cf": "cf", "coarse_fragments": "cf",
}


def entry_column_map(entry) -> dict[str, Any]:
    """The column map (``{"columns": …, "units": …, "source": …}``) a catalog ``profiles`` entry declares."""
    columns, units = {}, {}
    for key, var in entry.variables.items():
        f = _ENTRY_FIELDS.get(key)
        if f is None:
            continue
        columns[f] = var.source_name or key
        if f not in ("site_id", "lat", "lon"):
            units[f] = var.units
    return {"columns": columns, "units": units, "source": entry.name}


def load_profile_sources(spec: str, columns: str | Path | None = None, *, bulk_density: str = "fill",
                         organic_horizons: str = "drop"):
    """Profiles named by ``spec`` (comma-separated: files and/or catalog entries of kind ``profiles``), merged.

    A file is read by :func:`~socmap.data.profiles.load_profile_table` with the column map
    ``columns`` (YAML) — the same reading and checks as ``socmap profiles check``. An entry is a
    shipped set (``nwca2011``, ``sodah``) or a user table whose ``variables`` give its columns and
    units. Returns one :class:`~socmap.data.profiles.ProfileSet`; raises
    :class:`~socmap.data.intake.ProfileDataError` naming the file for a table that cannot be used.
    """
    from socmap.data.catalog import load_catalog
    from socmap.data.intake import ColumnMap, ProfileDataError
    from socmap.data.profiles import LOADERS, LoadReport, load_profile_table, load_profiles, merge_profile_sets

    items = [x.strip() for x in str(spec).split(",") if x.strip()]
    if not items:
        raise ProfileDataError("--profiles is empty; give a horizon table (CSV, Parquet, Excel) or a catalog entry of kind profiles")
    catalog = load_catalog()
    profile_entries = catalog.names("profiles")
    cmap = ColumnMap.from_yaml(columns) if columns is not None else None
    tables, report = [], LoadReport()
    for item in items:
        if item in profile_entries:
            entry = catalog.entry(item)
            if item in LOADERS:
                ps = load_profiles([item], bulk_density=bulk_density, forest_floor=organic_horizons)
            else:
                path = entry.resolve_path(must_exist=True)
                ps = load_profile_table(path, columns=cmap or entry_column_map(entry), source=item,
                                        organic_horizons=organic_horizons, bulk_density=bulk_density)
        elif Path(item).expanduser().is_file():
            ps = load_profile_table(Path(item).expanduser(), columns=cmap, organic_horizons=organic_horizons,
                                    bulk_density=bulk_density)
        else:
            raise ProfileDataError(f"--profiles {item}: no such file, and no catalog entry of kind profiles has that name "
                                   f"(entries: {', '.join(profile_entries)}); give the path of a horizon table")
        for rep in ps.report.sources.values():
            if rep.source in report.sources:
                raise ProfileDataError(f"--profiles: two tables have the source name {rep.source!r}; rename one file "
                                       "(site ids are <source>:<site>)")
            report.add(rep)
        tables.append(ps.table)
    return merge_profile_sets(tables, report)


def load_real_sites(directory: str | Path, **kwargs: Any) -> SiteData:
    """:class:`SiteData` of the real profiles on the real cube in ``directory`` (kwargs: :func:`load_real`)."""
    return load_real(directory, **kwargs).data


# ----------------------------------------------------------------------------------------
# the loader registry
# ----------------------------------------------------------------------------------------

#: Catalog ``kind`` of a data entry -> the loader that turns its folder into :class:`SiteData`.
#: A ``covariates`` entry is a real covariate cube: its sites are the real profiles on it.
SITE_LOADERS: dict[str, Callable[[Path], SiteData]] = {
    "synthetic": load_synthetic,
    "covariates": load_real_sites,
}


def load_site_data(kind: str, directory: str | Path) -> SiteData:
    """Load the folder ``directory`` of a data entry of catalog kind ``kind`` as :class:`SiteData`."""
    try:
        loader = SITE_LOADERS[kind]
    except KeyError:
        raise ValueError(f"no site loader for data of kind {kind!r}; known kinds: {', '.join(SITE_LOADERS)} "
                         "(train on a synthetic twin or a real covariate cube)") from None
    return loader(Path(directory))
