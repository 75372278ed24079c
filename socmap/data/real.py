"""Real site data: the merged real profiles sampled on the real covariate cube.

:func:`load_real_sites` is what ``socmap train --data real-conus --data-dir DIR`` uses (through
``socmap.data.sites.load_real``): ``DIR`` holds ``cube.zarr`` written by
``socmap covariates build --source real-conus --out DIR``. Profiles come from the catalog
(NWCA 2011 + SoDaH by default) with the options in ``DIR/realcube.json`` (key ``profiles``:
``sources``, ``bulk_density`` "fill" | "measured", ``forest_floor`` "drop" | "shift"), or from
``DIR/profiles.csv`` when that file exists (a tidy table: site_id, lon, lat, top_m, bottom_m,
soc_g_m3). Keyword arguments override both.

Sites: one per ``site_id`` (a location). Each site is placed on the grid cell that contains it;
a site on a non-land cell (coastal wetlands) moves to the nearest land cell within one cell
(``snap_cells``); sites still off land or off the grid are dropped and counted. Repeated observations of the same layer
(same site, top and bottom — e.g. SoDaH time series) are merged into their geometric mean by
default (``aggregate=True``), so a site sampled 2,000 times does not dominate the loss.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from socmap.data.sites import SiteData, profiles_to_arrays

log = logging.getLogger(__name__)


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
                n_obs=("_log", "size"), source=("source", "first"), bd_estimated=("bd_estimated", "mean")).reset_index()
    out["soc_g_m3"] = np.exp(out.pop("_log"))
    return out


def snap_to_land(cube, where, lon, lat, max_cells: int = 1):
    """Move sites on water cells to the nearest land cell within ``max_cells`` cells (coastal wetlands).

    Returns the updated :class:`~socmap.cube.GridSample` and the number of sites moved;
    sites with no land cell that close keep the status ``water`` (dropped by the caller).
    """
    from socmap.cube import STATUS_OK, STATUS_WATER, GridSample

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


def load_real(directory, *, sources=None, bulk_density: str | None = None, forest_floor: str | None = None,
              aggregate: bool = True, snap_cells: int = 1) -> RealSites:
    """Real profiles on the real cube in ``directory`` (see the module docstring)."""
    from socmap.cube import sample_grid
    from socmap.data.profiles import load_profiles
    from socmap.cube import cell_forcing, open_cube

    directory = Path(directory)
    if not (directory / "cube.zarr").exists():
        raise FileNotFoundError(f"{directory} has no cube.zarr; build the real covariate cube with "
                                f"`socmap covariates build --source real-conus --out {directory}`")
    opts = _options(directory, {"sources": sources, "bulk_density": bulk_density, "forest_floor": forest_floor})
    report: dict[str, Any] = {"options": opts}
    if (directory / "profiles.csv").exists() and sources is None:
        table = pd.read_csv(directory / "profiles.csv", dtype={"site_id": str})
        missing = [c for c in ("site_id", "lon", "lat", "top_m", "bottom_m", "soc_g_m3") if c not in table]
        if missing:
            raise ValueError(f"{directory / 'profiles.csv'} lacks column(s) {missing}")
        if "depth_m" not in table:
            table["depth_m"] = 0.5 * (table["top_m"] + table["bottom_m"])
        for c, v in (("source", "profiles.csv"), ("bd_estimated", False)):
            if c not in table:
                table[c] = v
        report["profiles"] = {"file": str(directory / "profiles.csv"), "rows": len(table)}
    else:
        ps = load_profiles(opts["sources"], bulk_density=opts["bulk_density"], forest_floor=opts["forest_floor"])
        table = ps.table
        report["profiles"] = ps.report.to_dict()
        log.info("real profiles:\n%s", ps.report.table())
    table = table[np.isfinite(table["soc_g_m3"]) & (table["soc_g_m3"] > 0)]
    cube = open_cube(directory / "cube.zarr").load()
    sites = table.groupby("site_id", sort=True).agg(lon=("lon", "first"), lat=("lat", "first"), source=("source", "first")).reset_index()
    where = sample_grid(cube, sites["lon"].to_numpy(), sites["lat"].to_numpy())
    where, snapped = snap_to_land(cube, where, sites["lon"].to_numpy(), sites["lat"].to_numpy(), max_cells=snap_cells)
    status = pd.Series(where.status)
    dropped = {k: int(v) for k, v in status[~where.ok].value_counts().items()}
    report["sites"] = {"read": len(sites), "kept": int(where.ok.sum()), "snapped_to_nearest_land_cell": snapped, "dropped": dropped}
    if dropped:
        log.warning("real sites dropped (not on a land cell of %s): %s", directory / "cube.zarr", dropped)
    keep = np.flatnonzero(where.ok)
    sites = sites.iloc[keep].reset_index(drop=True)
    iy, ix = where.iy[keep], where.ix[keep]
    table = table[table["site_id"].isin(sites["site_id"])]
    layers_before = len(table)
    if aggregate:
        table = aggregate_layers(table)
    report["layers"] = {"rows": layers_before, "after_aggregation": len(table)}
    names = list(cube.attrs.get("numeric_covariates") or [])
    cov = np.column_stack([cube[n].values[iy, ix].astype(np.float64) for n in names])
    forcing = cell_forcing(cube, iy, ix, sites["lat"].to_numpy(np.float64))
    depth, soc = profiles_to_arrays(table, sites["site_id"].to_numpy())
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
    )
    return RealSites(data=data, profiles=table.reset_index(drop=True), report=report)


def load_real_sites(directory, **kwargs) -> SiteData:
    """:class:`SiteData` of the real profiles on the real cube in ``directory``."""
    return load_real(directory, **kwargs).data
