"""Real SOC profile loaders: NWCA 2011, SoDaH and generic WoSIS/NCSS-style CSV files.

Every loader returns a :class:`ProfileSet` ``(table, report)``:

- ``table`` — the tidy profile table of DESIGN.md, one row per layer: ``site_id, lon, lat,
  top_m, bottom_m, depth_m`` (mid depth), ``soc_g_m3`` (SOC density, g C m-3), ``oc_pct``
  (organic C, % mass), ``bd_g_cm3`` (bulk density used), ``bd_estimated`` (True where the
  density comes from the pedotransfer function), ``source`` and provenance columns
  (``source_file``, ``source_line`` — the 1-based line in the file, header = line 1 —,
  ``profile_id``, ``observation_date`` and source-specific flags);
- ``report`` — a :class:`LoadReport`: rows read, kept and dropped *by reason*, per source, with
  notes (unit fixes, values treated as missing, …). ``read == kept + Σ dropped`` always holds
  (:meth:`LoadReport.check`); nothing is dropped without a counted reason.

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
  face value). Exact repeated rows are dropped as duplicates.
- **Coordinates** must lie in the CONUS box lon −125…−66, lat 24…50; a point that would be
  inside with lat and lon exchanged is reported as ``outside CONUS (lat/lon look swapped)``.
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

#: CONUS box for the coordinate check: west, south, east, north (degrees).
CONUS_BOX: tuple[float, float, float, float] = (-125.0, 24.0, -66.0, 50.0)

#: Adams (1973) mixing-model constants (g cm-3) and the van Bemmelen OM/OC factor.
ORGANIC_BD = 0.244
MINERAL_BD = 1.64
OM_PER_OC = 1.724

#: Largest plausible SOC density (g C m-3): pure peat holds ~0.05-0.1 g C cm-3; a measured bulk
#: density that gives more than this with the layer's carbon is treated as missing.
MAX_SOC_G_M3 = 150_000.0
#: NWCA lab's valid range of bulk density (g cm-3).
NWCA_BD_RANGE = (0.06, 2.53)
#: SoDaH source files that store carbon as g/g instead of %.
SODAH_FRACTION_FILES = ("Wisconsin DIRT soil", "CWThemlock_soilCN")

TIDY_COLUMNS = [
    "site_id", "lon", "lat", "top_m", "bottom_m", "depth_m", "soc_g_m3", "oc_pct", "bd_g_cm3",
    "bd_estimated", "source", "source_file", "source_line", "profile_id", "observation_date",
]

#: Boolean provenance flags (False where a source does not have them).
FLAG_COLUMNS = ("top_inferred", "caco3_corrected", "carbon_is_total", "carbon_was_fraction", "forest_floor")

# drop reasons (in the order the checks run)
R_NON_NUMERIC = "non-numeric value in {col}"
R_NO_COORDS = "no coordinates"
R_SWAPPED = "outside CONUS (lat/lon look swapped)"
R_OUTSIDE = "outside CONUS"
R_BAD_DEPTH = "bad depths (missing, negative or top >= bottom)"
R_NO_CARBON = "no carbon"
R_NONPOS_C = "organic C <= 0"
R_DUPLICATE = "duplicate row"
R_NO_BD = "no measured bulk density"


class ProfileDataError(ValueError):
    """A profile file cannot be read as asked: names the file, the column(s) and the fix."""


# ----------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------

@dataclass
class SourceReport:
    """Counts for one source: rows read, kept, dropped by reason; notes on what was changed."""

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

    def drop(self, reason: str, n: int) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(n)

    @property
    def rows_dropped(self) -> int:
        return int(sum(self.dropped.values()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "files": list(self.files), "rows_read": self.rows_read, "rows_kept": self.rows_kept,
            "rows_dropped": self.rows_dropped, "dropped": dict(self.dropped), "sites": self.sites,
            "bd_measured": self.bd_measured, "bd_estimated": self.bd_estimated, "ptf": dict(self.ptf), "notes": list(self.notes),
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

    def check(self) -> None:
        """Raise if any source's counts do not add up (read = kept + dropped)."""
        for r in self.sources.values():
            if r.rows_read != r.rows_kept + r.rows_dropped:
                raise AssertionError(f"{r.source}: read {r.rows_read} != kept {r.rows_kept} + dropped {r.rows_dropped}")

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
                lines.append(f"{'  dropped: ' + reason:<{width}}  {n:>7}")
            lines.append(f"{r.source + ' kept':<{width}}  {r.rows_kept:>7}  {r.sites:>6}  {r.bd_measured:>8}  {r.bd_estimated:>7}")
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

def _lines(idx) -> str:
    idx = list(idx)
    shown = ", ".join(str(int(i)) for i in idx[:8])
    return shown + (f" … ({len(idx)} in all)" if len(idx) > 8 else "")


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
    """Column as float and a mask of entries that held text that is not a number."""
    raw = df[col]
    if pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw):
        return raw.astype(np.float64), pd.Series(False, index=df.index)
    stripped = raw.astype("string").str.strip()
    blank = stripped.isna() | stripped.isin(["", "NA", "NaN", "nan", "N/A", "null", "None"])
    num = pd.to_numeric(stripped.where(~blank), errors="coerce").astype(np.float64)
    bad = num.isna() & ~blank
    if bad.any():
        ex = ", ".join(repr(str(v)) for v in raw[bad].unique()[:3])
        report.notes.append(f"{Path(path).name}: column {col!r} holds text that is not a number on line(s) "
                            f"{_lines(df.loc[bad, '_line'])} (e.g. {ex})")
    return num, bad


def _outside_conus(lon: pd.Series, lat: pd.Series) -> tuple[pd.Series, pd.Series]:
    w, s, e, n = CONUS_BOX
    inside = lon.between(w, e) & lat.between(s, n)
    swapped = ~inside & lat.between(w, e) & lon.between(s, n)
    return ~inside & ~swapped, swapped


def _finish(raw: pd.DataFrame, rep: SourceReport, path, *, bulk_density: str, bd_range: tuple[float, float] | None,
            dup_key: list[str], required_numeric: dict[str, pd.Series], ptf: str = "fit") -> pd.DataFrame:
    """Shared cleaning: coordinates, CONUS, depths, carbon, duplicates, bulk density, SOC density.

    ``raw`` holds numeric columns ``lon, lat, top_cm, bottom_cm, oc_pct, bd_meas`` plus
    provenance; ``required_numeric`` maps a source column name to its "held text" mask.
    """
    if ptf not in ("fit", "adams"):
        raise ValueError(f"ptf must be 'fit' or 'adams', not {ptf!r}")
    if bulk_density not in ("fill", "measured"):
        raise ValueError(f"bulk_density must be 'fill' or 'measured', not {bulk_density!r}")
    df = raw
    for col, bad in required_numeric.items():
        bad = bad.reindex(df.index, fill_value=False)
        rep.drop(R_NON_NUMERIC.format(col=repr(col)), int(bad.sum()))
        df = df[~bad]
    m = df["lon"].isna() | df["lat"].isna()
    rep.drop(R_NO_COORDS, int(m.sum()))
    df = df[~m]
    outside, swapped = _outside_conus(df["lon"], df["lat"])
    if swapped.any():
        rep.notes.append(f"{Path(path).name}: {int(swapped.sum())} row(s) have lat/lon that look exchanged "
                         f"(lines {_lines(df.loc[swapped, '_line'])}); fix the file's columns")
    rep.drop(R_SWAPPED, int(swapped.sum()))
    rep.drop(R_OUTSIDE, int(outside.sum()))
    df = df[~outside & ~swapped]
    bad_depth = df["top_cm"].isna() | df["bottom_cm"].isna() | (df["top_cm"] < 0) | (df["top_cm"] >= df["bottom_cm"])
    if bad_depth.any():
        rep.notes.append(f"{Path(path).name}: bad depths on line(s) {_lines(df.loc[bad_depth, '_line'])}")
    rep.drop(R_BAD_DEPTH, int(bad_depth.sum()))
    df = df[~bad_depth]
    m = df["oc_pct"].isna()
    rep.drop(R_NO_CARBON, int(m.sum()))
    df = df[~m]
    m = df["oc_pct"] <= 0
    rep.drop(R_NONPOS_C, int(m.sum()))
    df = df[~m]
    m = df.duplicated(subset=dup_key, keep="first")
    rep.drop(R_DUPLICATE, int(m.sum()))
    df = df[~m].copy()

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
                         f"(lines {_lines(df.loc[implausible, '_line'])}): density treated as missing")
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
        rep.drop(R_NO_BD, int((~measured).sum()))
        df = df[measured].copy()
        df["bd_g_cm3"] = bd[measured].to_numpy()
        df["bd_estimated"] = False
    else:
        df["bd_g_cm3"] = np.where(measured, bd.to_numpy(), est)
        df["bd_estimated"] = ~measured
    df["soc_g_m3"] = df["oc_pct"] / 100.0 * df["bd_g_cm3"] * 1e6
    df["top_m"] = df["top_cm"] / 100.0
    df["bottom_m"] = df["bottom_cm"] / 100.0
    df["depth_m"] = 0.5 * (df["top_m"] + df["bottom_m"])
    df["source"] = rep.source
    df["source_line"] = df["_line"].astype(np.int64)
    rep.rows_kept = len(df)
    rep.sites = int(df["site_id"].nunique())
    rep.bd_estimated = int(df["bd_estimated"].sum())
    rep.bd_measured = rep.rows_kept - rep.bd_estimated
    extra = [c for c in df.columns if c not in TIDY_COLUMNS and c not in ("top_cm", "bottom_cm", "bd_meas", "_line")]
    for c in TIDY_COLUMNS:
        if c not in df:
            df[c] = None
    return df[TIDY_COLUMNS + extra].reset_index(drop=True)


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what}: {path} not found. Set SOCMAP_REAL_DATA to the folder holding nwca2011/ and sodah/, "
                                "or see data_catalog.yaml for where to download the originals")
    try:
        df = pd.read_csv(path, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ProfileDataError(f"{path}: cannot parse as CSV ({exc})") from None
    df["_line"] = np.arange(len(df)) + 2
    return df


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
    chem_path = folder / "nwca2011_soilchem.csv"
    site_path = folder / "nwca2011_siteinfo-meta.csv"
    rep = SourceReport("nwca2011", files=[str(chem_path), str(site_path)])
    chem = _read_csv(chem_path, "NWCA 2011 soil chemistry")
    sites = _read_csv(site_path, "NWCA 2011 site information")
    _require_columns(chem, ["UID", "SITE_ID", "VISIT_NO", "PIT", "LAYER", "DEPTH", "TOT_CARBON", "CACO3_2MM", "BULK_DEN_DBF"], chem_path)
    _require_columns(sites, ["UID", "AA_CENTER_LAT", "AA_CENTER_LON"], site_path)
    rep.rows_read = len(chem)

    visit, _ = _numeric(chem, "VISIT_NO", chem_path, rep)
    m = visit > 1
    rep.drop("revisit (VISIT_NO > 1)", int(m.sum()))
    chem = chem[~m]
    if not sites["UID"].is_unique:
        dup = sites["UID"].duplicated(keep="first")
        rep.notes.append(f"{site_path.name}: {int(dup.sum())} repeated UID(s) (lines {_lines(sites.loc[dup, '_line'])}); first kept")
        sites = sites[~dup]
    m = ~chem["UID"].isin(sites["UID"])
    rep.drop("no site record (UID not in siteinfo)", int(m.sum()))
    chem = chem[~m]
    lat_s, _ = _numeric(sites, "AA_CENTER_LAT", site_path, rep)
    lon_s, _ = _numeric(sites, "AA_CENTER_LON", site_path, rep)
    coords = pd.DataFrame({"UID": sites["UID"].to_numpy(), "lat": lat_s.to_numpy(), "lon": lon_s.to_numpy()})
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
        "total_carbon_pct": tc,
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
        rep.drop("not a control row (treatment)", int((~ctrl).sum()))
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
    organic = top < 0
    if forest_floor == "drop":
        rep.drop("organic horizon above mineral surface (negative layer_top)", int(organic.sum()))
    else:
        shift = (-top.where(organic)).groupby(profile_id).transform("max").fillna(0.0)
        top = top + shift
        bot = bot + shift
        rep.notes.append(f"forest floor kept: {int(organic.sum())} organic layer(s); their profiles shifted down so the organic top is 0")
    keep = ~organic if forest_floor == "drop" else pd.Series(True, index=df.index)
    raw = pd.DataFrame({
        "site_id": site_id, "lon": lon, "lat": lat, "top_cm": top, "bottom_cm": bot, "oc_pct": carbon, "bd_meas": bd,
        "source_file": df["data_file"].astype(str), "_line": df["_line"], "profile_id": profile_id, "observation_date": date,
        "carbon_is_total": is_total, "carbon_was_fraction": frac, "forest_floor": organic,
        "horizon": df["hzn"].astype("string") if "hzn" in df else None,
        "network": df["network"].astype("string") if "network" in df else None,
        "site_code": df["site_code"].astype("string") if "site_code" in df else None,
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
# generic CSV (WoSIS / NCSS exports, users' own data)
# ----------------------------------------------------------------------------------------

GENERIC_COLUMNS = {"lon": "lon", "lat": "lat", "top": "top_cm", "bottom": "bottom_cm", "soc": "soc_pct", "bd": "bd_g_cm3"}
_SOC_FACTOR = {"%": 1.0, "g kg-1": 0.1, "g/kg": 0.1, "g g-1": 100.0, "g/g": 100.0}
_DEPTH_FACTOR = {"cm": 1.0, "m": 100.0}


def load_profile_csv(path: str | Path, *, columns: dict[str, str] | None = None, source: str | None = None,
                     soc_units: str = "%", depth_units: str = "cm", bulk_density: str = "fill",
                     site_column: str | None = "site_id", ptf: str = "fit") -> ProfileSet:
    """A WoSIS/NCSS-style layer table: lon, lat, top, bottom, SOC, bulk density.

    ``columns`` maps the logical names ``lon, lat, top, bottom, soc, bd`` to the file's columns
    (defaults: ``lon, lat, top_cm, bottom_cm, soc_pct, bd_g_cm3``; ``bd`` may be absent from the
    file, then every density is estimated). ``soc_units``: ``%``, ``g kg-1`` or ``g g-1``;
    ``depth_units``: ``cm`` or ``m``. Sites are ``site_column`` when the file has it, else one per
    coordinate pair. Source name defaults to the file stem.
    """
    path = Path(path)
    cols = {**GENERIC_COLUMNS, **(columns or {})}
    unknown = set(columns or {}) - set(GENERIC_COLUMNS)
    if unknown:
        raise ValueError(f"unknown logical column name(s) {sorted(unknown)}; use {sorted(GENERIC_COLUMNS)}")
    if soc_units not in _SOC_FACTOR:
        raise ValueError(f"soc_units must be one of {list(_SOC_FACTOR)}, not {soc_units!r}")
    if depth_units not in _DEPTH_FACTOR:
        raise ValueError(f"depth_units must be one of {list(_DEPTH_FACTOR)}, not {depth_units!r}")
    source = source or path.stem.replace(".csv", "")
    rep = SourceReport(source, files=[str(path)])
    df = _read_csv(path, f"profile table {source}")
    _require_columns(df, [cols[k] for k in ("lon", "lat", "top", "bottom", "soc")], path,
                     what="(lon, lat, top, bottom, soc: pass columns={'lon': ..., ...} to map yours)")
    rep.rows_read = len(df)
    lon, bad_lon = _numeric(df, cols["lon"], path, rep)
    lat, bad_lat = _numeric(df, cols["lat"], path, rep)
    top, bad_top = _numeric(df, cols["top"], path, rep)
    bot, bad_bot = _numeric(df, cols["bottom"], path, rep)
    soc, bad_soc = _numeric(df, cols["soc"], path, rep)
    if cols["bd"] in df:
        bd, _ = _numeric(df, cols["bd"], path, rep)
    else:
        bd = pd.Series(np.nan, index=df.index)
        rep.notes.append(f"{path.name}: no bulk-density column {cols['bd']!r}: all densities estimated")
    f = _DEPTH_FACTOR[depth_units]
    if site_column and site_column in df:
        site = f"{source}:" + df[site_column].astype(str)
    else:
        site = f"{source}:" + lat.round(5).map("{:.5f}".format) + "," + lon.round(5).map("{:.5f}".format)
    raw = pd.DataFrame({
        "site_id": site, "lon": lon, "lat": lat, "top_cm": top * f, "bottom_cm": bot * f, "oc_pct": soc * _SOC_FACTOR[soc_units],
        "bd_meas": bd, "source_file": path.name, "_line": df["_line"], "profile_id": site, "observation_date": None,
    })
    table = _finish(raw, rep, path, bulk_density=bulk_density, bd_range=(0.02, 2.65),
                    dup_key=["site_id", "top_cm", "bottom_cm", "oc_pct", "bd_meas"],
                    required_numeric={cols["lon"]: bad_lon, cols["lat"]: bad_lat, cols["top"]: bad_top,
                                      cols["bottom"]: bad_bot, cols["soc"]: bad_soc}, ptf=ptf)
    report = LoadReport()
    report.add(rep)
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
        elif Path(src).suffix in (".csv", ".gz") or Path(src).is_file():
            ps = load_profile_csv(src, bulk_density=bulk_density, ptf=ptf)
        else:
            raise ValueError(f"unknown profile source {src!r}: use {', '.join(LOADERS)} or the path of a CSV file")
        for rep in ps.report.sources.values():
            report.add(rep)
        tables.append(ps.table)
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
