"""SOC profile loaders: NWCA 2011, SoDaH (shipped in ``socmap/data/shipped/``) and a user's own table.

:func:`load_profile_table` reads a horizon table in any layout (columns and units through
:mod:`socmap.data.intake`; ``socmap profiles check FILE`` prints its report). Every loader
returns a :class:`ProfileSet` ``(table, report)``:

- ``table`` — the tidy profile table of DESIGN.md, one row per layer: ``site_id, lon, lat,
  top_m, bottom_m, depth_m`` (mid depth), ``soc_g_m3`` (SOC density, g C m-3), ``oc_pct``
  (organic C, % mass), ``bd_g_cm3`` (bulk density used), ``bd_estimated`` (True where the
  density comes from the pedotransfer function), ``wetland`` (True where the site is a wetland:
  see "Wetland sites" below), ``source`` and provenance columns
  (``source_file``, ``source_line`` — the 1-based line in the file, header = line 1 —,
  ``profile_id``, ``observation_date`` and source-specific flags);
- ``report`` — a :class:`LoadReport`: rows read, kept and dropped *by reason* with their file
  lines, per source, the units used and how they were chosen, and notes (unit fixes, values
  treated as missing, …). ``read == kept + Σ dropped`` always holds, each row once
  (:meth:`LoadReport.check`; :meth:`LoadReport.rows` lists every row); nothing is dropped
  without a reason.

SOC density = organic C fraction × bulk density (g cm-3) × 1e6 (g C m-3).

Decisions (documented, each an option)
--------------------------------------
- **Bulk density gaps** (``bulk_density="fill"``, the default): a missing or out-of-range
  density is estimated with the organic-matter mixing model of Adams (1973)
  (:func:`organic_bd_ptf`) and the row is flagged ``bd_estimated``; ``bulk_density="measured"``
  drops those rows instead (reason ``no measured bulk density``). With ``ptf="fit"`` (default)
  the model's two end-member densities are calibrated on the same source's measured pairs
  (:func:`fit_organic_bd_ptf`; with Adams' textbook constants the estimates run 15–40 % high on
  these sets); ``ptf="adams"`` uses BD_om 0.244, BD_min 1.64 g cm-3. The report gives the
  constants used and the estimate/measured ratio on the measured rows.
- **NWCA 2011**: first visit only (``VISIT_NO`` 1); a layer's top is the bottom of the previous
  layer of the same UID/PIT (0 for the first); where layer numbers skip, the top is the last
  known bottom above it and the row is flagged ``top_inferred``; organic C = TOT_CARBON −
  0.12·CACO3_2MM where CaCO3 was measured (``caco3_corrected``); bulk densities outside the
  lab's valid range 0.06–2.53 g cm-3 are treated as missing.
- **SoDaH**: control rows only (``control_sample``); carbon = ``lyr_soc``, else ``lyr_c_tot``
  (``carbon_is_total``); the two sources that store carbon as g/g (Wisconsin DIRT, CWThemlock —
  and any other file whose maximum carbon is below 0.1) are multiplied by 100.
  **Forest floor**: organic horizons above the mineral surface carry negative ``layer_top``;
  their depths are ordinal codes (−1…0, −2…−1 "cm"), not measured thicknesses, and CLM5's depth
  axis starts at the mineral surface (forest-floor carbon belongs to its litter pools). By default
  (``forest_floor="drop"``) those rows are dropped with the reason ``organic horizon above
  mineral surface``; ``forest_floor="shift"`` keeps them and shifts each profile down so that
  the top of its uppermost organic layer is depth 0 (the coded thicknesses are then taken at
  face value). Exact repeated rows are dropped as duplicates. A user's table gets the same
  choice (``organic_horizons="drop"|"shift"``) for horizons with a negative top depth.
- **Coarse fragments** (user tables with a coarse-fragment volume column): bulk density is of
  the fine earth, so SOC density of the whole soil = OC × BD × (1 − coarse volume fraction).
- **Implausible carbon**: organic C above 70 % (pure organic matter is ~58 % C) is a unit error,
  dropped with its reason.
- **Coordinates** must lie in the CONUS box lon −125…−66, lat 24…50; a point that would be
  inside with lat and lon exchanged is reported as ``outside CONUS (lat/lon look swapped)``.
- **Wetland sites** (column ``wetland``, a site-level attribute: the site's own land unit, which a
  0.25° cell's covariates cannot see): every NWCA 2011 site is a wetland (its field class
  ``CLASS_FIELD_FWSST`` is kept as ``wetland_class``); a SoDaH site is a wetland where its
  ``land_cover`` is ``woodyWetlands`` or ``emergentHerbaceousWetlands``; a user's table may carry
  an optional ``wetland`` column (1/0, true/false, yes/no, wetland/upland; blank = 0), else every
  site is taken as upland (0) and the report says so.
- **Land class** (column ``land_class``, site-level, :data:`LAND_CLASSES`): the sources' own site
  classes grouped into forest, shrub, grass, crop, emergent, woody and tidal wetland
  (:data:`LAND_CLASS_OF`; NWCA from ``CLASS_FIELD_FWSST``, SoDaH from ``land_cover``); "" where a
  site has none (user tables, blanks, urban).
- **Cross-source duplicates**: sites of different sources within ~100 m (coordinates equal to
  3 decimals) are flagged (``dup_coords_other_source``) and counted; both are kept.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from socmap.data.intake import (
    FIELD_KIND, MAX_OC_PCT, MAX_SOC_G_M3, UNITS, ColumnMap, ProfileDataError, UnitChoice, canonical_unit, flag_column, infer_bd_unit,
    infer_carbon_unit, infer_cf_unit, infer_depth_unit, line_list, match_columns, numeric_column, read_table,
    require_fields,
)

#: CONUS box for the coordinate check: west, south, east, north (degrees).
CONUS_BOX: tuple[float, float, float, float] = (-125.0, 24.0, -66.0, 50.0)

#: Adams (1973) mixing-model constants (g cm-3) and the van Bemmelen OM/OC factor.
ORGANIC_BD = 0.244
MINERAL_BD = 1.64
OM_PER_OC = 1.724

#: NWCA lab's valid range of bulk density (g cm-3).
NWCA_BD_RANGE = (0.06, 2.53)
#: SoDaH source files that store carbon as g/g instead of %.
SODAH_FRACTION_FILES = ("Wisconsin DIRT soil", "CWThemlock_soilCN")

TIDY_COLUMNS = [
    "site_id", "lon", "lat", "top_m", "bottom_m", "depth_m", "soc_g_m3", "oc_pct", "bd_g_cm3",
    "bd_estimated", "wetland", "source", "source_file", "source_line", "profile_id", "observation_date",
]

#: Boolean provenance flags (False where a source does not have them).
FLAG_COLUMNS = ("top_inferred", "caco3_corrected", "carbon_is_total", "carbon_was_fraction", "forest_floor", "wetland")

#: SoDaH ``land_cover`` values (NLCD-style names) that make a site a wetland.
SODAH_WETLAND_COVERS = ("woodyWetlands", "emergentHerbaceousWetlands")

#: The site's own land class (column ``land_class``; docs/model.md §5.11): a few groups of the
#: sources' own site classes, "" where a site has none (a user table, SoDaH blanks, urban).
LAND_CLASSES = ("forest", "shrub", "grass", "crop", "emergent_wetland", "woody_wetland", "tidal_wetland")
#: Source value -> land class: SoDaH ``land_cover`` (NLCD-style names) and NWCA 2011
#: ``CLASS_FIELD_FWSST`` (Cowardin: P palustrine, E2 estuarine intertidal; EM emergent, SS
#: scrub-shrub, FO forested, UB/AB open water / aquatic bed, F farmed).
LAND_CLASS_OF = {
    "forest": "forest", "deciduousForest": "forest", "evergreenForest": "forest", "mixedForest": "forest",
    "shrubScrub": "shrub", "shrubland": "shrub",
    "grasslandHerbaceous": "grass", "rangeland/grassland": "grass", "pastureHay": "grass",
    "cultivatedCrops": "crop", "cultivated": "crop", "PF": "crop",
    "emergentHerbaceousWetlands": "emergent_wetland", "PEM": "emergent_wetland", "PUBPAB": "emergent_wetland",
    "woodyWetlands": "woody_wetland", "PFO": "woody_wetland", "PSS": "woody_wetland",
    "E2EM": "tidal_wetland", "E2SS": "tidal_wetland",
}


def land_class(values: pd.Series) -> pd.Series:
    """The land class (:data:`LAND_CLASSES`) of each source class value; "" where unknown."""
    return values.astype("string").str.strip().map(LAND_CLASS_OF).fillna("").astype(object)

# drop reasons (in the order the checks run)
R_NON_NUMERIC = "non-numeric value in {col}"
R_NO_COORDS = "no coordinates"
R_SWAPPED = "outside CONUS (lat/lon look swapped)"
R_OUTSIDE = "outside CONUS"
R_NO_DEPTH = "missing depth"
R_NEG_DEPTH = "negative depth"
R_TOP_GE_BOTTOM = "top >= bottom"
R_NO_CARBON = "no carbon"
R_NONPOS_C = "organic C <= 0"
R_IMPLAUSIBLE_C = f"implausible organic C (> {MAX_OC_PCT:g} %: check the unit)"
R_BAD_CF = "coarse fragments outside 0-100 %"
R_EMPTY = "empty row"
R_ORGANIC = "organic horizon above mineral surface (negative {col})"
R_DUPLICATE = "duplicate row"
R_NO_BD = "no measured bulk density"


# ----------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------

@dataclass
class SourceReport:
    """One source: rows read, kept, dropped by reason (with their lines), units used, notes.

    Lines are the rows' lines in the source's main file (header = line 1).
    """

    source: str
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sites: int = 0
    bd_measured: int = 0
    bd_estimated: int = 0
    ptf: dict[str, Any] = field(default_factory=dict)
    units: dict[str, dict[str, str]] = field(default_factory=dict)
    dropped_lines: dict[str, list[int]] = field(default_factory=dict)
    kept_lines: list[int] = field(default_factory=list)

    def drop(self, reason: str, lines) -> None:
        """Record the rows on ``lines`` (file line numbers) as dropped for ``reason``."""
        lines = [int(x) for x in lines]
        if lines:
            self.dropped[reason] = self.dropped.get(reason, 0) + len(lines)
            self.dropped_lines.setdefault(reason, []).extend(lines)

    @property
    def rows_dropped(self) -> int:
        return int(sum(self.dropped.values()))

    def rows(self) -> pd.DataFrame:
        """Every row read, one line each: ``source, line, status`` (kept | dropped), ``reason``."""
        parts = [pd.DataFrame({"line": self.kept_lines, "status": "kept", "reason": ""})]
        parts += [pd.DataFrame({"line": lines, "status": "dropped", "reason": reason}) for reason, lines in self.dropped_lines.items()]
        out = pd.concat(parts, ignore_index=True).sort_values("line", kind="stable").reset_index(drop=True)
        out.insert(0, "source", self.source)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "files": list(self.files), "rows_read": self.rows_read, "rows_kept": self.rows_kept,
            "rows_dropped": self.rows_dropped, "dropped": dict(self.dropped), "sites": self.sites,
            "bd_measured": self.bd_measured, "bd_estimated": self.bd_estimated, "ptf": dict(self.ptf), "notes": list(self.notes),
            "units": {k: dict(v) for k, v in self.units.items()},
            "first_dropped_lines": {k: v[:10] for k, v in self.dropped_lines.items()},
        }


@dataclass
class LoadReport:
    """Per-source :class:`SourceReport` s plus cross-source findings; prints as a table."""

    sources: dict[str, SourceReport] = field(default_factory=dict)
    cross_source_duplicate_sites: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, rep: SourceReport) -> None:
        self.sources[rep.source] = rep

    @property
    def rows_read(self) -> int:
        return sum(r.rows_read for r in self.sources.values())

    @property
    def rows_kept(self) -> int:
        return sum(r.rows_kept for r in self.sources.values())

    @property
    def rows_dropped(self) -> int:
        return sum(r.rows_dropped for r in self.sources.values())

    def check(self) -> None:
        """Raise if any source's counts do not add up (read = kept + dropped, each row once)."""
        for r in self.sources.values():
            if r.rows_read != r.rows_kept + r.rows_dropped:
                raise AssertionError(f"{r.source}: read {r.rows_read} != kept {r.rows_kept} + dropped {r.rows_dropped}")
            if len(r.kept_lines) + sum(len(v) for v in r.dropped_lines.values()) != r.rows_read:
                raise AssertionError(f"{r.source}: the lines kept and dropped do not cover the {r.rows_read} rows read")

    def rows(self) -> pd.DataFrame:
        """The per-row report of every source (:meth:`SourceReport.rows`)."""
        return pd.concat([r.rows() for r in self.sources.values()], ignore_index=True)

    def to_dict(self) -> dict[str, Any]:
        return {"sources": {k: v.to_dict() for k, v in self.sources.items()},
                "cross_source_duplicate_sites": self.cross_source_duplicate_sites, "notes": list(self.notes)}

    def table(self) -> str:
        """Plain-text table: one block per source (read, kept, each drop reason, notes)."""
        width = max([len(k) for r in self.sources.values() for k in r.dropped] + [30])
        lines = [f"{'source / reason':<{width}}  {'rows':>7}  {'sites':>6}  {'BD meas.':>8}  {'BD est.':>7}"]
        lines.append("-" * len(lines[0]))
        for r in self.sources.values():
            lines.append(f"{r.source + ' read':<{width}}  {r.rows_read:>7}")
            for reason, n in r.dropped.items():
                lines.append(f"{'  dropped: ' + reason:<{width}}  {n:>7}  (lines {line_list(r.dropped_lines.get(reason, []))})")
            lines.append(f"{r.source + ' kept':<{width}}  {r.rows_kept:>7}  {r.sites:>6}  {r.bd_measured:>8}  {r.bd_estimated:>7}")
            for fld, u in r.units.items():
                lines.append(f"  unit: {fld} ({u['column']}) in {u['unit']}, {u['how']}")
            for note in r.notes:
                lines.append(f"  note: {note}")
        if len(self.sources) > 1:
            lines.append("-" * len(lines[0]))
            lines.append(f"{'all kept':<{width}}  {self.rows_kept:>7}  {sum(r.sites for r in self.sources.values()):>6}  "
                         f"{sum(r.bd_measured for r in self.sources.values()):>8}  {sum(r.bd_estimated for r in self.sources.values()):>7}")
            lines.append(f"sites sharing coordinates with another source (flagged, kept): {self.cross_source_duplicate_sites}")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


class ProfileSet(NamedTuple):
    """A tidy profile table and its :class:`LoadReport` (unpacks as ``table, report``)."""

    table: pd.DataFrame
    report: LoadReport


# ----------------------------------------------------------------------------------------
# pedotransfer function
# ----------------------------------------------------------------------------------------

def organic_bd_ptf(oc_pct, mineral_bd: float = MINERAL_BD, organic_bd: float = ORGANIC_BD, om_per_oc: float = OM_PER_OC) -> np.ndarray:
    """Bulk density (g cm-3) from organic carbon (% mass): the Adams (1973) mixing model.

    ``BD = 1 / (f_om / BD_om + (1 − f_om) / BD_min)`` with ``f_om = min(1.724 · OC% / 100, 1)``
    (van Bemmelen factor), ``BD_om = 0.244 g cm-3`` (Adams 1973) and a mineral-soil density
    ``BD_min = 1.64 g cm-3``. Volumes of the organic and mineral fractions add (the same form
    as Federer et al. 1993). Mineral soils get ~1.4–1.6, peats (40–50 % C) ~0.25–0.3.

    Adams, W. A. (1973), The effect of organic matter on the bulk and true densities of some
    uncultivated podzolic soils, Journal of Soil Science 24:10–17.
    """
    oc = np.asarray(oc_pct, dtype=np.float64)
    f_om = np.clip(om_per_oc * oc / 100.0, 0.0, 1.0)
    return 1.0 / (f_om / organic_bd + (1.0 - f_om) / mineral_bd)


def fit_organic_bd_ptf(oc_pct, bd_g_cm3, om_per_oc: float = OM_PER_OC, min_rows: int = 30) -> tuple[float, float] | None:
    """Fit the two densities of :func:`organic_bd_ptf` to measured pairs (least squares in log BD).

    Returns ``(mineral_bd, organic_bd)`` bounded to 0.8–2.2 and 0.05–0.6 g cm-3, or None with
    fewer than ``min_rows`` finite pairs.
    """
    from scipy.optimize import least_squares

    oc = np.asarray(oc_pct, dtype=np.float64)
    bd = np.asarray(bd_g_cm3, dtype=np.float64)
    ok = np.isfinite(oc) & np.isfinite(bd) & (bd > 0) & (oc >= 0)
    if ok.sum() < min_rows:
        return None
    oc, bd = oc[ok], bd[ok]

    def resid(q):
        return np.log(organic_bd_ptf(oc, q[0], q[1], om_per_oc)) - np.log(bd)

    sol = least_squares(resid, x0=[MINERAL_BD, ORGANIC_BD], bounds=([0.8, 0.05], [2.2, 0.6]))
    return float(sol.x[0]), float(sol.x[1])


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------

def _require_columns(df: pd.DataFrame, needed: list[str], path: Path | str, what: str = "") -> None:
    missing = [c for c in needed if c not in df.columns]
    if not missing:
        return
    hints = []
    for m in missing:
        close = difflib.get_close_matches(m, [str(c) for c in df.columns], n=2, cutoff=0.6)
        hints.append(f"{m!r}" + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""))
    have = ", ".join(repr(str(c)) for c in list(df.columns)[:30])
    raise ProfileDataError(
        f"{path}: missing column(s) {', '.join(hints)}{' ' + what if what else ''}; the file has: {have}"
        + (" …" if len(df.columns) > 30 else "")
        + ". Rename the columns or pass a column mapping (columns={...})."
    )


def _numeric(df: pd.DataFrame, col: str, path, report: SourceReport) -> tuple[pd.Series, pd.Series]:
    return numeric_column(df, col, path, report.notes)


def _outside_conus(lon: pd.Series, lat: pd.Series) -> tuple[pd.Series, pd.Series]:
    w, s, e, n = CONUS_BOX
    inside = lon.between(w, e) & lat.between(s, n)
    swapped = ~inside & lat.between(w, e) & lon.between(s, n)
    return ~inside & ~swapped, swapped


def _finish(raw: pd.DataFrame, rep: SourceReport, path, *, bulk_density: str, bd_range: tuple[float, float] | None,
            dup_key: list[str], required_numeric: dict[str, pd.Series], ptf: str = "fit") -> pd.DataFrame:
    """Shared cleaning: coordinates, CONUS, depths, carbon, duplicates, bulk density, SOC density.

    ``raw`` holds numeric columns ``lon, lat, top_cm, bottom_cm, oc_pct, bd_meas`` (and, when
    coarse fragments are known, ``cf_vol``, volume fraction) plus provenance and ``_line``;
    ``required_numeric`` maps a source column name to its "held text" mask. Each check drops
    the rows it fails with its reason and their lines (:meth:`SourceReport.drop`).
    """
    if ptf not in ("fit", "adams"):
        raise ValueError(f"ptf must be 'fit' or 'adams', not {ptf!r}")
    if bulk_density not in ("fill", "measured"):
        raise ValueError(f"bulk_density must be 'fill' or 'measured', not {bulk_density!r}")
    df = raw

    def drop(reason: str, mask: pd.Series) -> pd.DataFrame:
        mask = mask.reindex(df.index, fill_value=False).astype(bool)
        rep.drop(reason, df.loc[mask, "_line"])
        return df[~mask]

    for col, bad in required_numeric.items():
        df = drop(R_NON_NUMERIC.format(col=repr(col)), bad)
    df = drop(R_NO_COORDS, df["lon"].isna() | df["lat"].isna())
    outside, swapped = _outside_conus(df["lon"], df["lat"])
    if swapped.any():
        rep.notes.append(f"{Path(path).name}: {int(swapped.sum())} row(s) have lat/lon that look exchanged "
                         f"(lines {line_list(df.loc[swapped, '_line'])}); fix the file's columns")
    df = drop(R_SWAPPED, swapped)
    df = drop(R_OUTSIDE, outside.reindex(df.index))
    df = drop(R_NO_DEPTH, df["top_cm"].isna() | df["bottom_cm"].isna())
    df = drop(R_NEG_DEPTH, (df["top_cm"] < 0) | (df["bottom_cm"] < 0))
    df = drop(R_TOP_GE_BOTTOM, df["top_cm"] >= df["bottom_cm"])
    df = drop(R_NO_CARBON, df["oc_pct"].isna())
    df = drop(R_NONPOS_C, df["oc_pct"] <= 0)
    df = drop(R_IMPLAUSIBLE_C, df["oc_pct"] > MAX_OC_PCT)
    if "cf_vol" in df:
        df = drop(R_BAD_CF, (df["cf_vol"] < 0) | (df["cf_vol"] >= 1))
    df = drop(R_DUPLICATE, df.duplicated(subset=dup_key, keep="first")).copy()

    bd = df["bd_meas"]
    if bd_range is not None:
        out = bd.notna() & ~bd.between(*bd_range)
        if out.any():
            rep.notes.append(f"{int(out.sum())} bulk densities outside the valid range {bd_range[0]}-{bd_range[1]} g cm-3 treated as missing")
        bd = bd.where(~out)
    else:
        out = bd.notna() & ~(bd > 0)
        if out.any():
            rep.notes.append(f"{int(out.sum())} non-positive bulk densities treated as missing")
        bd = bd.where(~out)
    implausible = bd.notna() & (df["oc_pct"] / 100.0 * bd * 1e6 > MAX_SOC_G_M3)
    if implausible.any():
        rep.notes.append(f"{int(implausible.sum())} measured bulk densities give SOC > {MAX_SOC_G_M3:,.0f} g C m-3 with their carbon "
                         f"(lines {line_list(df.loc[implausible, '_line'])}): density treated as missing")
        bd = bd.where(~implausible)
    measured = bd.notna().to_numpy()
    fitted = fit_organic_bd_ptf(df["oc_pct"].to_numpy()[measured], bd.to_numpy()[measured]) if ptf == "fit" else None
    if ptf == "fit" and fitted is None:
        rep.notes.append("too few measured densities to calibrate the pedotransfer function: Adams (1973) constants used")
    mineral, organic = fitted or (MINERAL_BD, ORGANIC_BD)
    if fitted:
        rep.notes.append(f"pedotransfer (Adams 1973 mixing model) calibrated on this source's measured densities: "
                         f"BD_mineral {mineral:.3f}, BD_organic {organic:.3f} g cm-3")
    rep.ptf = {"mineral_bd": mineral, "organic_bd": organic, "calibrated": bool(fitted)}
    est = organic_bd_ptf(df["oc_pct"].to_numpy(), mineral, organic)
    if measured.sum() >= 10:
        ratio = est[measured] / bd.to_numpy()[measured]
        rep.notes.append(f"pedotransfer check on {int(measured.sum())} measured densities: median estimate/measured "
                         f"{np.median(ratio):.2f}, RMSE {np.sqrt(np.mean((est[measured] - bd.to_numpy()[measured]) ** 2)):.2f} g cm-3")
    if bulk_density == "measured":
        rep.drop(R_NO_BD, df.loc[~measured, "_line"])
        df = df[measured].copy()
        df["bd_g_cm3"] = bd[measured].to_numpy()
        df["bd_estimated"] = False
    else:
        df["bd_g_cm3"] = np.where(measured, bd.to_numpy(), est)
        df["bd_estimated"] = ~measured
    df["soc_g_m3"] = df["oc_pct"] / 100.0 * df["bd_g_cm3"] * 1e6
    if "cf_vol" in df:  # bulk density is of the fine earth: the whole soil holds (1 - coarse volume) of it
        missing = df["cf_vol"].isna()
        if missing.any():
            rep.notes.append(f"{int(missing.sum())} row(s) without coarse fragments: no correction (lines {line_list(df.loc[missing, '_line'])})")
        df["cf_vol"] = df["cf_vol"].fillna(0.0)
        df["soc_g_m3"] = df["soc_g_m3"] * (1.0 - df["cf_vol"])
    df["top_m"] = df["top_cm"] / 100.0
    df["bottom_m"] = df["bottom_cm"] / 100.0
    df["depth_m"] = 0.5 * (df["top_m"] + df["bottom_m"])
    df["source"] = rep.source
    df["source_line"] = df["_line"].astype(np.int64)
    rep.rows_kept = len(df)
    rep.kept_lines = [int(x) for x in df["_line"]]
    rep.sites = int(df["site_id"].nunique())
    rep.bd_estimated = int(df["bd_estimated"].sum())
    rep.bd_measured = rep.rows_kept - rep.bd_estimated
    extra = [c for c in df.columns if c not in TIDY_COLUMNS and c not in ("top_cm", "bottom_cm", "bd_meas", "_line")]
    for c in TIDY_COLUMNS:
        if c not in df:
            df[c] = None
    return df[TIDY_COLUMNS + extra].reset_index(drop=True)


def _csv_or_gz(path: Path) -> Path:
    """``path`` (a ``.csv``), or its gzipped copy ``.csv.gz`` when only that exists (the shipped sets)."""
    gz = path.with_name(path.name + ".gz")
    return gz if not path.exists() and gz.exists() else path


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    """A source file of a known set, with ``_line``."""
    return read_table(path, missing_hint=f"it should hold the {what}; set SOCMAP_REAL_DATA to the folder holding "
                      "nwca2011/ and sodah/, or see data_catalog.yaml for where to download the originals")


def _organic_horizons(top: pd.Series, bottom: pd.Series, profile_id: pd.Series, lines: pd.Series, mode: str,
                      rep: SourceReport, column: str) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """Organic horizons above the mineral surface (negative top depth, cm): drop or shift.

    ``mode="drop"`` records them as dropped; ``mode="shift"`` moves each profile down so the top
    of its uppermost organic horizon is depth 0 (see the module docstring). Returns the depths,
    the organic mask and the mask of rows to keep.
    """
    if mode not in ("drop", "shift"):
        raise ValueError(f"organic horizons: use 'drop' or 'shift', not {mode!r}")
    organic = (top < 0).fillna(False).astype(bool)
    if mode == "drop":
        rep.drop(R_ORGANIC.format(col=column), lines[organic])
        return top, bottom, organic, ~organic
    shift = (-top.where(organic)).groupby(profile_id).transform("max").fillna(0.0)
    rep.notes.append(f"organic horizons kept: {int(organic.sum())} layer(s) with negative {column}; their profiles "
                     "shifted down so the organic top is 0")
    return top + shift, bottom + shift, organic, pd.Series(True, index=top.index)


def _catalog_path(entry: str) -> Path:
    from socmap.data.catalog import load_catalog

    return Path(load_catalog().entry(entry).resolve_path())


# ----------------------------------------------------------------------------------------
# NWCA 2011
# ----------------------------------------------------------------------------------------

def load_nwca2011(folder: str | Path | None = None, *, bulk_density: str = "fill", ptf: str = "fit") -> ProfileSet:
    """NWCA 2011 wetland soil horizons (``nwca2011_soilchem.csv`` ⋈ ``nwca2011_siteinfo-meta.csv``).

    ``folder`` defaults to the catalog entry ``nwca2011``. Site id: ``nwca2011:<SITE_ID>``.
    """
    folder = Path(folder) if folder is not None else _catalog_path("nwca2011")
    chem_path = _csv_or_gz(folder / "nwca2011_soilchem.csv")
    site_path = _csv_or_gz(folder / "nwca2011_siteinfo-meta.csv")
    rep = SourceReport("nwca2011", files=[str(chem_path), str(site_path)])
    chem = _read_csv(chem_path, "NWCA 2011 soil chemistry")
    sites = _read_csv(site_path, "NWCA 2011 site information")
    _require_columns(chem, ["UID", "SITE_ID", "VISIT_NO", "PIT", "LAYER", "DEPTH", "TOT_CARBON", "CACO3_2MM", "BULK_DEN_DBF"], chem_path)
    _require_columns(sites, ["UID", "AA_CENTER_LAT", "AA_CENTER_LON"], site_path)
    rep.rows_read = len(chem)

    visit, _ = _numeric(chem, "VISIT_NO", chem_path, rep)
    m = visit > 1
    rep.drop("revisit (VISIT_NO > 1)", chem.loc[m, "_line"])
    chem = chem[~m]
    if not sites["UID"].is_unique:
        dup = sites["UID"].duplicated(keep="first")
        rep.notes.append(f"{site_path.name}: {int(dup.sum())} repeated UID(s) (lines {line_list(sites.loc[dup, '_line'])}); first kept")
        sites = sites[~dup]
    m = ~chem["UID"].isin(sites["UID"])
    rep.drop("no site record (UID not in siteinfo)", chem.loc[m, "_line"])
    chem = chem[~m]
    lat_s, _ = _numeric(sites, "AA_CENTER_LAT", site_path, rep)
    lon_s, _ = _numeric(sites, "AA_CENTER_LON", site_path, rep)
    coords = pd.DataFrame({"UID": sites["UID"].to_numpy(), "lat": lat_s.to_numpy(), "lon": lon_s.to_numpy(),
                           "wetland_class": (sites["CLASS_FIELD_FWSST"].astype("string").to_numpy()
                                             if "CLASS_FIELD_FWSST" in sites else None)})
    chem = chem.merge(coords, on="UID", how="left", validate="many_to_one")
    chem.index = pd.RangeIndex(len(chem))

    depth, bad_depth = _numeric(chem, "DEPTH", chem_path, rep)
    layer, bad_layer = _numeric(chem, "LAYER", chem_path, rep)
    tc, bad_c = _numeric(chem, "TOT_CARBON", chem_path, rep)
    caco3, _ = _numeric(chem, "CACO3_2MM", chem_path, rep)
    bd, _ = _numeric(chem, "BULK_DEN_DBF", chem_path, rep)
    chem = chem.assign(_depth=depth, _layer=layer)
    chem = chem.sort_values(["UID", "PIT", "_layer"], kind="stable")
    g = chem.groupby(["UID", "PIT"], sort=False)
    # top = last known bottom above this layer in the same pit (0 for the first)
    top = g["_depth"].transform(lambda s: s.ffill().shift(1)).fillna(0.0)
    prev_layer = g["_layer"].shift(1)
    top_inferred = (prev_layer.isna() & (chem["_layer"] > 1)) | (prev_layer.notna() & (chem["_layer"] - prev_layer != 1))
    top_inferred |= prev_layer.notna() & g["_depth"].shift(1).isna()
    n_inf = int(top_inferred.sum())
    if n_inf:
        rep.notes.append(f"{n_inf} horizon(s) follow a skipped layer number: top = last known bottom above (flagged top_inferred)")
    chem = chem.sort_index()
    top = top.sort_index()
    top_inferred = top_inferred.sort_index()
    corrected = caco3.notna() & tc.notna()
    oc = tc - 0.12 * caco3.fillna(0.0)
    rep.notes.append(f"organic C = TOT_CARBON - 0.12 CACO3_2MM on {int(corrected.sum())} horizon(s) with measured CaCO3")
    raw = pd.DataFrame({
        "site_id": "nwca2011:" + chem["SITE_ID"].astype(str),
        "lon": chem["lon"], "lat": chem["lat"], "top_cm": top, "bottom_cm": chem["_depth"], "oc_pct": oc, "bd_meas": bd,
        "source_file": chem_path.name, "_line": chem["_line"],
        "profile_id": "nwca2011:" + chem["UID"].astype(str) + "-" + chem["PIT"].astype(str),
        "observation_date": chem["DATE_COL"].astype(str) if "DATE_COL" in chem else None,
        "layer_no": chem["_layer"], "top_inferred": top_inferred.astype(bool), "caco3_corrected": corrected.astype(bool),
        "total_carbon_pct": tc, "wetland": True, "wetland_class": chem["wetland_class"],  # NWCA samples wetlands only
        "land_class": land_class(chem["wetland_class"]),
    })
    table = _finish(raw, rep, chem_path, bulk_density=bulk_density, bd_range=NWCA_BD_RANGE,
                    dup_key=["profile_id", "top_cm", "bottom_cm", "oc_pct", "bd_meas"],
                    required_numeric={"DEPTH": bad_depth, "TOT_CARBON": bad_c, "LAYER": bad_layer}, ptf=ptf)
    report = LoadReport()
    report.add(rep)
    return ProfileSet(table, report)


# ----------------------------------------------------------------------------------------
# SoDaH
# ----------------------------------------------------------------------------------------

def load_sodah(path: str | Path | None = None, *, bulk_density: str = "fill", forest_floor: str = "drop", ptf: str = "fit") -> ProfileSet:
    """SoDaH CONUS layers (control rows). ``path`` defaults to the catalog entry ``sodah``.

    ``forest_floor``: ``"drop"`` (default) or ``"shift"`` — see the module docstring.
    Site id: ``sodah:<lat>,<lon>`` (5 decimals): one site per location, whatever the date.
    """
    if forest_floor not in ("drop", "shift"):
        raise ValueError(f"forest_floor must be 'drop' or 'shift', not {forest_floor!r}")
    path = Path(path) if path is not None else _catalog_path("sodah")
    rep = SourceReport("sodah", files=[str(path)])
    df = _read_csv(path, "SoDaH layers")
    _require_columns(df, ["lat", "long", "layer_top", "layer_bot", "lyr_soc", "lyr_c_tot", "bd_samp"], path)
    rep.rows_read = len(df)
    if "control_sample" in df:
        ctrl = df["control_sample"]
        if not pd.api.types.is_bool_dtype(ctrl):
            ctrl = ctrl.astype("string").str.strip().str.lower().isin(["true", "1", "yes", "t"])
        rep.drop("not a control row (treatment)", df.loc[~ctrl.to_numpy(), "_line"])
        df = df[ctrl.to_numpy()]
    else:
        rep.notes.append(f"{path.name}: no control_sample column: all rows taken as controls")
    if "data_file" not in df:
        df = df.assign(data_file=path.name)
    lat, bad_lat = _numeric(df, "lat", path, rep)
    lon, bad_lon = _numeric(df, "long", path, rep)
    top, bad_top = _numeric(df, "layer_top", path, rep)
    bot, bad_bot = _numeric(df, "layer_bot", path, rep)
    soc, bad_soc = _numeric(df, "lyr_soc", path, rep)
    ctot, bad_ctot = _numeric(df, "lyr_c_tot", path, rep)
    bd, _ = _numeric(df, "bd_samp", path, rep)
    carbon = soc.where(soc.notna(), ctot)
    is_total = soc.isna() & ctot.notna()
    # g/g instead of %: the two known files, and any file whose carbon never reaches 0.1
    fmax = carbon.groupby(df["data_file"]).transform("max")
    frac = df["data_file"].isin(SODAH_FRACTION_FILES) | (fmax < 0.1)
    if frac.any():
        files = sorted(df.loc[frac, "data_file"].astype(str).unique())
        rep.notes.append(f"carbon stored as g/g multiplied by 100 in {int(frac.sum())} row(s) of {', '.join(files)}")
    carbon = carbon.where(~frac, carbon * 100.0)
    date = (df["observation_date"].astype("string").fillna("").astype(str) if "observation_date" in df
            else pd.Series("", index=df.index))
    site_id = "sodah:" + lat.round(5).map("{:.5f}".format) + "," + lon.round(5).map("{:.5f}".format)
    profile_id = site_id + ":" + df["data_file"].astype(str) + ":" + date
    top, bot, organic, keep = _organic_horizons(top, bot, profile_id, df["_line"], forest_floor, rep, "layer_top")
    raw = pd.DataFrame({
        "site_id": site_id, "lon": lon, "lat": lat, "top_cm": top, "bottom_cm": bot, "oc_pct": carbon, "bd_meas": bd,
        "source_file": df["data_file"].astype(str), "_line": df["_line"], "profile_id": profile_id, "observation_date": date,
        "carbon_is_total": is_total, "carbon_was_fraction": frac, "forest_floor": organic,
        "horizon": df["hzn"].astype("string") if "hzn" in df else None,
        "network": df["network"].astype("string") if "network" in df else None,
        "site_code": df["site_code"].astype("string") if "site_code" in df else None,
        "wetland": df["land_cover"].isin(SODAH_WETLAND_COVERS).to_numpy() if "land_cover" in df else False,
        "land_class": land_class(df["land_cover"]) if "land_cover" in df else "",
    })[keep.to_numpy()]
    # text in the carbon columns: only a problem when no usable carbon is left
    bad_c = (bad_soc & ctot.isna()) | (bad_ctot & soc.isna())
    table = _finish(raw, rep, path, bulk_density=bulk_density, bd_range=None,
                    dup_key=["source_file", "site_id", "observation_date", "top_cm", "bottom_cm", "oc_pct", "bd_meas"],
                    required_numeric={"lat": bad_lat, "long": bad_lon, "layer_top": bad_top, "layer_bot": bad_bot,
                                      "lyr_soc/lyr_c_tot": bad_c}, ptf=ptf)
    report = LoadReport()
    report.add(rep)
    return ProfileSet(table, report)


# ----------------------------------------------------------------------------------------
# a user's table in any layout
# ----------------------------------------------------------------------------------------

#: Valid range of a measured bulk density in a user's table (g cm-3); outside it is missing.
USER_BD_RANGE = (0.02, 2.65)


def _column_map(columns: ColumnMap | dict[str, Any] | str | Path | None) -> ColumnMap:
    if columns is None:
        return ColumnMap()
    if isinstance(columns, ColumnMap):
        return columns
    if isinstance(columns, dict):
        return ColumnMap.from_dict(columns if {"columns", "units", "source"} & set(columns) else {"columns": columns})
    return ColumnMap.from_yaml(columns)


def load_profile_table(path: str | Path, *, columns: ColumnMap | dict[str, Any] | str | Path | None = None,
                       source: str | None = None, organic_horizons: str = "drop", bulk_density: str = "fill",
                       ptf: str = "fit", encoding: str = "utf-8") -> ProfileSet:
    """A user's horizon table (CSV, TSV, Parquet, Excel) in any layout, as a tidy :class:`ProfileSet`.

    Columns are found by their common names or ``columns`` (a :class:`~socmap.data.intake.ColumnMap`,
    its YAML file, or a dict ``{field: column}`` / ``{"columns": ..., "units": ...}``); units are
    given, read from the column names or inferred (:mod:`socmap.data.intake`; the report says
    which and why). Organic C is the ``oc`` column, else total C − 0.12·CaCO3 (flag
    ``caco3_corrected``), else total C (flag ``carbon_is_total``). Measured bulk density is used
    wherever present; gaps are filled by the pedotransfer function (``bd_estimated``) or, with
    ``bulk_density="measured"``, dropped. With coarse fragments (volume), SOC density of the
    whole soil = OC × BD(fine earth) × (1 − coarse fraction). ``organic_horizons``: ``"drop"``
    (default) or ``"shift"`` — horizons with a negative top depth lie above the mineral surface
    (module docstring). Site ids are ``<source>:<site column>``, else one site per coordinate pair.

    Raises :class:`ProfileDataError` (file, column, rows, fix) for a file that cannot be read, a
    missing column, an ambiguous unit, or when no row can be kept (with the report attached).
    """
    path = Path(path)
    cmap = _column_map(columns)
    df = read_table(path, encoding=encoding)
    found, name_units = match_columns(df, cmap, path)
    require_fields(found, df, path)
    source = source or cmap.source or path.name.split(".")[0]
    rep = SourceReport(source, files=[str(path)])
    rep.rows_read = len(df)
    empty = df.drop(columns="_line").isna().all(axis=1)
    rep.drop(R_EMPTY, df.loc[empty, "_line"])
    df = df[~empty]
    num: dict[str, pd.Series] = {}
    text: dict[str, pd.Series] = {}
    for f in ("lat", "lon", "top", "bottom", "oc", "total_c", "caco3", "bd", "cf"):
        if f in found:
            num[f], text[f] = numeric_column(df, found[f], path, rep.notes)
    nan = pd.Series(np.nan, index=df.index)

    def unit(f: str, infer, fallback: UnitChoice | None = None) -> UnitChoice:
        col = found[f]
        if f in cmap.units:
            return UnitChoice(col, cmap.units[f], "given")
        if f in name_units and name_units[f] in UNITS[FIELD_KIND[f]]:
            return UnitChoice(col, canonical_unit(f, name_units[f], str(path)), "column name")
        if fallback is not None:
            return fallback
        u, why = infer()
        return UnitChoice(col, u, f"inferred: {why}")

    units: dict[str, UnitChoice] = {}
    # one depth unit for both columns (each may still be given on its own)
    depth = next((UnitChoice(found[f], cmap.units[f], "given") for f in ("top", "bottom") if f in cmap.units), None)
    depth = depth or next((UnitChoice(found[f], name_units[f], "column name") for f in ("top", "bottom")
                           if name_units.get(f) in UNITS["depth"]), None)
    if depth is None:
        u, why = infer_depth_unit(num["top"], num["bottom"], path, f"{found['top']}/{found['bottom']}")
        depth = UnitChoice(f"{found['top']}/{found['bottom']}", u, f"inferred: {why}")
    for f in ("top", "bottom"):
        if f in cmap.units:
            units[f] = UnitChoice(found[f], cmap.units[f], "given")
        elif name_units.get(f) in UNITS["depth"]:
            units[f] = UnitChoice(found[f], name_units[f], "column name")
        else:
            units[f] = UnitChoice(found[f], depth.unit, depth.how if depth.column.startswith(f"{found['top']}/")
                                  else f"as {depth.column} ({depth.how})")
    if "bd" in found:
        units["bd"] = unit("bd", lambda: infer_bd_unit(num["bd"], path, found["bd"]))
    bd = num["bd"] * UNITS["bd"][units["bd"].unit] if "bd" in found else nan
    for f in ("oc", "total_c"):
        if f in found:
            units[f] = unit(f, lambda f=f: infer_carbon_unit(num[f], bd, path, f, found[f]))
    if "caco3" in found:
        units["caco3"] = unit("caco3", lambda: infer_carbon_unit(num["caco3"] * 0.12, bd, path, "caco3", found["caco3"]),
                              UnitChoice(found["caco3"], units["total_c"].unit, "as total_c") if "total_c" in units else None)
    if "cf" in found:
        units["cf"] = unit("cf", lambda: infer_cf_unit(num["cf"], path, found["cf"]))
    rep.units = {f: u.to_dict() for f, u in units.items()}

    def value(f: str, kind: str) -> pd.Series:
        return num[f] * UNITS[kind][units[f].unit] if f in num else nan

    depth_factor = UNITS["depth"]
    top = num["top"] * depth_factor[units["top"].unit]
    bottom = num["bottom"] * depth_factor[units["bottom"].unit]
    oc, tc, caco3 = value("oc", "carbon"), value("total_c", "carbon"), value("caco3", "carbon")
    from_total = oc.isna() & tc.notna()
    caco3_corrected = from_total & caco3.notna()
    carbon = oc.where(~from_total, tc - 0.12 * caco3.fillna(0.0))
    if from_total.any():
        rep.notes.append(f"organic C from total C on {int(from_total.sum())} row(s): minus 0.12 CaCO3 on "
                         f"{int(caco3_corrected.sum())} (caco3_corrected), as total C on the rest (carbon_is_total)")
    carbon_text = text["oc"] if "oc" in text else text["total_c"]
    if "oc" in text and "total_c" in text:
        carbon_text = carbon_text & tc.isna()
    if "site_id" in found:
        site = f"{source}:" + df[found["site_id"]].astype(str).str.strip()
    else:
        site = f"{source}:" + num["lat"].round(5).map("{:.5f}".format) + "," + num["lon"].round(5).map("{:.5f}".format)
        rep.notes.append(f"{path.name}: no site column: one site per coordinate pair")
    top, bottom, organic, keep = _organic_horizons(top, bottom, site, df["_line"], organic_horizons, rep, found["top"])
    raw = pd.DataFrame({
        "site_id": site, "lon": num["lon"], "lat": num["lat"], "top_cm": top, "bottom_cm": bottom, "oc_pct": carbon,
        "bd_meas": bd, "source_file": path.name, "_line": df["_line"], "profile_id": site, "observation_date": None,
        "caco3_corrected": caco3_corrected, "carbon_is_total": from_total & ~caco3_corrected, "forest_floor": organic,
    })
    if "cf" in found:
        raw["cf_vol"] = value("cf", "cf")
    if "wetland" in found:  # the site's own land unit (module docstring, "Wetland sites")
        raw["wetland"] = flag_column(df, found["wetland"], path)
    else:
        raw["wetland"] = False
        rep.notes.append(f"{path.name}: no wetland column: every site taken as upland (wetland = 0); add a column "
                         "'wetland' (1/0) to mark wetland sites")
    table = _finish(raw[keep.to_numpy()], rep, path, bulk_density=bulk_density, bd_range=USER_BD_RANGE,
                    dup_key=["site_id", "top_cm", "bottom_cm", "oc_pct", "bd_meas"],
                    required_numeric={found["lat"]: text["lat"], found["lon"]: text["lon"], found["top"]: text["top"],
                                      found["bottom"]: text["bottom"], found.get("oc", found.get("total_c")): carbon_text},
                    ptf=ptf)
    report = LoadReport()
    report.add(rep)
    report.check()
    if rep.rows_kept == 0:
        reasons = "; ".join(f"{r}: {n} (lines {line_list(rep.dropped_lines[r])})" for r, n in rep.dropped.items())
        raise ProfileDataError(f"{path}: none of the {rep.rows_read} rows can be used — {reasons}. Fix those rows "
                               "or the column map (units, columns) and check again", report)
    return ProfileSet(table, report)


# ----------------------------------------------------------------------------------------
# merged
# ----------------------------------------------------------------------------------------

LOADERS = {"nwca2011": load_nwca2011, "sodah": load_sodah}


def flag_cross_source_duplicates(table: pd.DataFrame, decimals: int = 3) -> tuple[pd.DataFrame, int]:
    """Add ``dup_coords_other_source``: the site's coordinates (rounded) also occur in another source."""
    key = table["lat"].round(decimals).astype(str) + "," + table["lon"].round(decimals).astype(str)
    n_src = table.assign(_k=key).groupby("_k")["source"].transform("nunique")
    table = table.assign(dup_coords_other_source=(n_src > 1).to_numpy())
    n_sites = int(table.loc[table["dup_coords_other_source"], "site_id"].nunique())
    return table, n_sites


def load_profiles(sources=("nwca2011", "sodah"), *, bulk_density: str = "fill", forest_floor: str = "drop",
                  ptf: str = "fit", paths: dict[str, str | Path] | None = None) -> ProfileSet:
    """Merge several sources into one tidy table with one :class:`LoadReport`.

    ``sources`` are names of :data:`LOADERS` (located through the catalog unless ``paths`` gives
    a folder/file) or paths of generic CSV files (:func:`load_profile_csv`).
    """
    if isinstance(sources, str):
        sources = [s.strip() for s in sources.split(",") if s.strip()]
    paths = paths or {}
    tables, report = [], LoadReport()
    for src in sources:
        if src == "sodah":
            ps = load_sodah(paths.get(src), bulk_density=bulk_density, forest_floor=forest_floor, ptf=ptf)
        elif src in LOADERS:
            ps = LOADERS[src](paths.get(src), bulk_density=bulk_density, ptf=ptf)
        elif Path(src).suffix in (".csv", ".gz", ".tsv", ".parquet", ".xlsx") or Path(src).is_file():
            ps = load_profile_table(src, bulk_density=bulk_density, organic_horizons=forest_floor, ptf=ptf)
        else:
            raise ValueError(f"unknown profile source {src!r}: use {', '.join(LOADERS)} or the path of a CSV file")
        for rep in ps.report.sources.values():
            report.add(rep)
        tables.append(ps.table)
    return merge_profile_sets(tables, report)


def merge_profile_sets(tables: list[pd.DataFrame], report: LoadReport) -> ProfileSet:
    """One tidy table from the sources' tables (flags filled, sites at the same coordinates in two
    sources flagged ``dup_coords_other_source``); ``report`` already holds every source's report."""
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=TIDY_COLUMNS)
    for flag in FLAG_COLUMNS:
        if flag in table:
            table[flag] = table[flag].fillna(False).astype(bool)
    if len(tables) > 1:
        table, n = flag_cross_source_duplicates(table)
        report.cross_source_duplicate_sites = n
    else:
        table["dup_coords_other_source"] = False
    report.check()
    return ProfileSet(table, report)
