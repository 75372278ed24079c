"""CONUS totals of a run store: SOC stocks summed over the land cells in Pg C, with the fold
spread, and the mean stock per IGBP land-cover class and litter group.

A cell of the regular lat/lon grid (centre latitude φ, spacings Δφ, Δλ) has the area of a
band of a sphere of radius R cut to Δλ::

    A = R² · Δλ · (sin(φ + Δφ/2) − sin(φ − Δφ/2))      [m²; angles in radians]

with R the authalic (equal-area) Earth radius, so the areas of all cells add up to the
ellipsoid's surface. A stock in kg C m-2 times A is kg C; 1 Pg = 1e12 kg.

Fold spread: an ensemble store (``socmap map --ensemble``) holds per-cell standard deviations
across the fold models (``*_std``) but not the per-fold maps, so the standard deviation of a
total across the folds is bounded, not known: ``Σ A·σ`` is its value when the fold models'
deviations are fully correlated from cell to cell (the upper bound, reported as the spread;
fold models trained on overlapping data tend to err alike everywhere), and ``√Σ (A·σ)²`` its
value when they are independent (reported beside it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from socmap.land_cover import IGBP_CLASSES, LAND_COVER_GROUPS, LITTER_GROUP_NAMES

__all__ = ["AUTHALIC_EARTH_RADIUS_M", "KG_PER_PG", "cell_area_m2", "conus_totals", "totals_lines"]

#: Radius of the sphere with the WGS84 ellipsoid's surface area (m).
AUTHALIC_EARTH_RADIUS_M = 6_371_007.2
#: Kilograms in a petagram.
KG_PER_PG = 1e12

_STOCKS = ("soc_stock_0_30cm", "soc_stock_0_100cm")
_STD_SUFFIX = "_std"
_DEFAULT_PREFIX = "default_"
_SPREAD_NOTE = ("fold SD of the total, upper bound: sum over cells of area x the per-cell SD across fold models "
                "(exact if the folds' deviations are fully correlated between cells); "
                "spread_independent_pg_c assumes independent cells")


def cell_area_m2(lat_deg: np.ndarray, dlat_deg: float, dlon_deg: float,
                 radius_m: float = AUTHALIC_EARTH_RADIUS_M) -> np.ndarray:
    """Area of lat/lon grid cells on a sphere.

    Parameters
    ----------
    lat_deg : array-like [...]
        Latitude of the cell centres (degrees north, −90…90).
    dlat_deg, dlon_deg : float
        Cell size in latitude and longitude (degrees, > 0).
    radius_m : float
        Sphere radius (m); default the authalic Earth radius.

    Returns
    -------
    ndarray [...] float64
        Cell area in m², the shape of ``lat_deg``.
    """
    if not (dlat_deg > 0 and dlon_deg > 0):
        raise ValueError(f"cell sizes must be positive degrees; got dlat={dlat_deg}, dlon={dlon_deg}")
    lat = np.asarray(lat_deg, dtype=np.float64)
    hi = np.deg2rad(np.clip(lat + dlat_deg / 2, -90.0, 90.0))
    lo = np.deg2rad(np.clip(lat - dlat_deg / 2, -90.0, 90.0))
    return radius_m**2 * np.deg2rad(dlon_deg) * (np.sin(hi) - np.sin(lo))


def _spacing(coord: np.ndarray, fallback: float | None, name: str) -> float:
    c = np.asarray(coord, dtype=np.float64)
    if c.size >= 2:
        return float(np.abs(np.diff(c)).mean())
    if fallback:
        return float(fallback)
    raise ValueError(f"cannot tell the grid spacing from a single {name} value; the store needs attrs resolution_deg")


def _sum_pg(stock: np.ndarray, area: np.ndarray) -> float:
    return float(np.sum(stock * area) / KG_PER_PG)


def conus_totals(ds: Any) -> dict[str, Any]:
    """Totals of a run store (an xarray Dataset read by :func:`socmap.store.open_store`).

    Parameters
    ----------
    ds : xarray.Dataset
        Grid variables on ``(y, x)``: the stocks ``soc_stock_0_30cm`` / ``soc_stock_0_100cm``
        (kg C m-2), ``land_mask`` (1 = land), optionally ``land_cover`` (IGBP code), the
        ``*_std`` fold spreads and the ``default_*`` stocks (CLM5 default parameters).

    Returns
    -------
    dict
        JSON-ready: ``land_area_km2``, ``land_cells``, ``stocks`` (per stock: ``total_pg_c``,
        ``spread_pg_c`` and ``spread_independent_pg_c`` or None without ``*_std``,
        ``default_total_pg_c``, ``cells_missing`` = land cells without a value and their
        ``area_missing_km2``; the totals cover the cells with a value), ``by_land_cover`` (per
        IGBP class present: code, name, group, cells, area_km2, area-weighted ``mean_kg_m2`` and
        ``total_pg_c`` per stock), ``by_group`` (the same per litter group) and ``notes``.
    """
    y = np.asarray(ds["y"].values, dtype=np.float64)
    x = np.asarray(ds["x"].values, dtype=np.float64)
    res = ds.attrs.get("resolution_deg")
    area = cell_area_m2(y[:, None], _spacing(y, res, "y"), _spacing(x, res, "x")) * np.ones((1, x.size))
    land = np.asarray(ds["land_mask"].values) == 1
    lc = (np.asarray(ds["land_cover"].values).astype(np.int64) if "land_cover" in ds
          else np.zeros(land.shape, dtype=np.int64))

    out: dict[str, Any] = {
        "land_cells": int(land.sum()), "land_area_km2": round(float(area[land].sum()) / 1e6, 1),
        "earth_radius_m": AUTHALIC_EARTH_RADIUS_M, "stocks": {},
    }
    values: dict[str, np.ndarray] = {}
    for name in _STOCKS:
        if name not in ds:
            continue
        v = np.asarray(ds[name].values, dtype=np.float64)
        ok = land & np.isfinite(v)
        values[name] = np.where(ok, v, np.nan)
        entry: dict[str, Any] = {
            "total_pg_c": round(_sum_pg(v[ok], area[ok]), 4),
            "spread_pg_c": None, "spread_independent_pg_c": None, "default_total_pg_c": None,
            "cells_missing": int((land & ~ok).sum()),
            "area_missing_km2": round(float(area[land & ~ok].sum()) / 1e6, 1),
        }
        if name + _STD_SUFFIX in ds:
            sd = np.asarray(ds[name + _STD_SUFFIX].values, dtype=np.float64)
            okd = ok & np.isfinite(sd)
            entry["spread_pg_c"] = round(_sum_pg(sd[okd], area[okd]), 4)
            entry["spread_independent_pg_c"] = round(float(np.sqrt(np.sum((sd[okd] * area[okd]) ** 2))) / KG_PER_PG, 4)
        if _DEFAULT_PREFIX + name in ds:
            dv = np.asarray(ds[_DEFAULT_PREFIX + name].values, dtype=np.float64)
            okv = land & np.isfinite(dv)
            entry["default_total_pg_c"] = round(_sum_pg(dv[okv], area[okv]), 4)
        out["stocks"][name] = entry

    def summarise(mask: np.ndarray) -> dict[str, Any]:
        row: dict[str, Any] = {"cells": int(mask.sum()), "area_km2": round(float(area[mask].sum()) / 1e6, 1),
                               "mean_kg_m2": {}, "total_pg_c": {}}
        for name, v in values.items():
            ok = mask & np.isfinite(v)
            a = float(area[ok].sum())
            row["mean_kg_m2"][name] = round(float(np.sum(v[ok] * area[ok]) / a), 3) if a > 0 else None
            row["total_pg_c"][name] = round(_sum_pg(v[ok], area[ok]), 4)
        return row

    out["by_land_cover"] = [{"code": code, "name": IGBP_CLASSES[code], "group": LAND_COVER_GROUPS[code],
                             **summarise(land & (lc == code))}
                            for code in sorted(IGBP_CLASSES) if (land & (lc == code)).any()]
    table = np.array([LAND_COVER_GROUPS[c] for c in range(len(IGBP_CLASSES))])
    group_of = table[np.clip(lc, 0, len(IGBP_CLASSES) - 1)]  # store codes are 0-16 (socmap.store)
    out["by_group"] = {g: summarise(land & (group_of == g)) for g in LITTER_GROUP_NAMES if (land & (group_of == g)).any()}
    out["notes"] = {
        "area": "cell areas on a sphere of the authalic Earth radius from the store's lat/lon grid; land cells only",
        "spread_pg_c": _SPREAD_NOTE if any(e["spread_pg_c"] is not None for e in out["stocks"].values())
        else "no fold spread: the store has no *_std layers (map with --ensemble)",
        "mean_kg_m2": "area-weighted mean stock of the class's land cells (kg C m-2)",
        "default_total_pg_c": "the same total with the CLM5 default parameters everywhere",
    }
    return out


def _depth_label(stock: str) -> str:
    """``soc_stock_0_30cm`` -> ``0–30 cm``."""
    return stock.removeprefix("soc_stock_").replace("_", "–").replace("cm", " cm")


def totals_lines(totals: dict[str, Any], *, max_groups: int = 8) -> list[str]:
    """Human lines for a :func:`conus_totals` record (``socmap map`` prints them)."""
    lines = [f"CONUS land {totals['land_area_km2'] / 1e6:.2f} million km² ({totals['land_cells']:,} cells):"]
    for name, e in totals["stocks"].items():
        depth = _depth_label(name)
        spread = f" ± {e['spread_pg_c']:.2f} (fold SD, upper bound)" if e["spread_pg_c"] is not None else ""
        default = f"; CLM5 defaults {e['default_total_pg_c']:.2f}" if e["default_total_pg_c"] is not None else ""
        missing = f"; {e['cells_missing']} land cells without a value" if e["cells_missing"] else ""
        lines.append(f"  SOC stock {depth}: {e['total_pg_c']:.2f} Pg C{spread}{default}{missing}")
    groups = sorted(totals["by_group"].items(), key=lambda kv: -kv[1]["area_km2"])[:max_groups]
    if groups:
        names = list(totals["stocks"])
        lines.append("  mean stock by land-cover group (kg C m-2, " + " / ".join(
            _depth_label(n) for n in names) + "; share of land area):")
        area = max(totals["land_area_km2"], 1e-9)
        for g, row in groups:
            means = " / ".join("—" if row["mean_kg_m2"].get(n) is None else f"{row['mean_kg_m2'][n]:.1f}" for n in names)
            lines.append(f"    {g:<14} {means}  ({100 * row['area_km2'] / area:.0f} %)")
    return lines
