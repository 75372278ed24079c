"""Reading a user's horizon table: file formats, column names, units.

This module turns "a table somebody made" into named numeric columns in known units; the
cleaning, the checks row by row, the SOC density and the load report live in
:mod:`socmap.data.profiles` (:func:`~socmap.data.profiles.load_profile_table`).

Columns
-------
Each *field* (``site_id, lat, lon, top, bottom, oc, total_c, caco3, bd, cf, wetland``) is found by a list
of common names (:data:`ALIASES`; matching ignores case, spaces and punctuation, and a unit
suffix such as ``_cm``, ``_pct`` or ``(g/kg)``), or named in a column map (YAML)::

    columns:            # field: the column in your file
      lat: Y_WGS84
      top: depth_from
    units:              # field: unit (see UNITS)
      top: cm
      oc: g/kg

Units
-----
A unit is *given* (column map), read from the column name (``hzn_top_cm``, ``oc_pct``,
``bd_g_cm3``), or *inferred* from the values only when one unit is possible:

- depth: deepest value > 10 → cm (metres would mean a > 10 m profile); ≤ 3 → m (centimetres
  would mean a ≤ 3 cm profile); otherwise ask.
- carbon (organic or total): a unit is possible when the richest layer stays ≤ 70 % and, on the
  layers with a measured density, at most 5 % of them are physically impossible in that unit:
  *dense yet carbon-rich* (SOC density > 150 kg C m-3) or *light yet carbon-poor* (bulk density
  < 0.4 g cm-3 with < 5 % C: such light horizons are organic). % and g/kg differ by 10 and
  overlap in value, so without measured densities a table often needs its unit stated.
- bulk density: all values ≤ 2.9 → g cm-3; all 20–2,900 → kg m-3; otherwise ask.
- coarse fragments (volume): largest value > 1 → %; all zero → % (no effect); otherwise ask.

The optional ``wetland`` field is a flag, not a measurement: 1/0, true/false, yes/no, y/n or
wetland/upland (:func:`flag_column`); a blank is upland (0).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Largest plausible organic-carbon content (% mass): organic matter is ~58 % C, a few peats and
#: charcoal-rich layers measure up to ~65-69 %.
MAX_OC_PCT = 70.0
#: Largest plausible SOC density (g C m-3): pure peat holds ~0.05-0.1 g C cm-3.
MAX_SOC_G_M3 = 150_000.0


class ProfileDataError(ValueError):
    """A profile file cannot be read as asked: names the file, the column(s), the rows and the fix.

    ``report`` holds the :class:`~socmap.data.profiles.LoadReport` when the rows were read but
    none could be kept.
    """

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


# ----------------------------------------------------------------------------------------
# fields, aliases, units
# ----------------------------------------------------------------------------------------

#: What each field is, for messages.
FIELD_DESCRIPTIONS: dict[str, str] = {
    "site_id": "site or profile identifier",
    "lat": "latitude (degrees north, WGS84)",
    "lon": "longitude (degrees east, WGS84)",
    "top": "top depth of the horizon",
    "bottom": "bottom depth of the horizon",
    "oc": "organic carbon content",
    "total_c": "total carbon content (organic = total - 0.12 CaCO3)",
    "caco3": "calcium carbonate content",
    "bd": "bulk density of the fine earth",
    "cf": "coarse fragments (volume)",
    "wetland": "the site is a wetland (1/0, true/false, yes/no, wetland/upland; optional, default 0)",
}

#: Common column names per field, normalised (see :func:`normalise`), most specific first.
ALIASES: dict[str, tuple[str, ...]] = {
    "site_id": ("site_id", "siteid", "site", "site_code", "profile_id", "profile", "pedon_id", "pedon_key",
                "pedon", "plot_id", "plot", "location_id", "pit_id", "core_id", "id"),
    "lat": ("lat", "latitude", "lat_dd", "latitude_dd", "decimal_latitude", "lat_wgs84", "latitude_wgs84", "y_wgs84", "y"),
    "lon": ("lon", "long", "lng", "longitude", "lon_dd", "longitude_dd", "decimal_longitude", "lon_wgs84",
            "longitude_wgs84", "x_wgs84", "x"),
    "top": ("top", "hzn_top", "hzdept", "hzdept_r", "depth_top", "top_depth", "upper_depth", "upper", "layer_top",
            "horizon_top", "depth_from", "from"),
    "bottom": ("bottom", "bot", "hzn_bot", "hzn_bottom", "hzdepb", "hzdepb_r", "depth_bottom", "depth_bot",
               "bottom_depth", "lower_depth", "lower", "layer_bot", "layer_bottom", "horizon_bottom", "depth_to", "to"),
    "oc": ("oc", "soc", "org_c", "orgc", "c_org", "corg", "organic_carbon", "soil_organic_carbon", "lyr_soc", "oc_wb",
           "c_organic"),
    "total_c": ("total_c", "tc", "c_tot", "tot_c", "total_carbon", "tot_carbon", "c_total", "lyr_c_tot", "carbon"),
    "caco3": ("caco3", "caco3_2mm", "caco3_equiv", "cce", "carbonate", "calcium_carbonate"),
    "bd": ("bd", "bulk_density", "bulk_den", "bulk_den_dbf", "db", "bdod", "bd_fine", "bd_samp", "dbovendry",
           "dbthirdbar", "db_od", "bulkdensity"),
    "cf": ("cf", "cfvo", "coarse_frag", "coarse_fragments", "coarse_fragment", "cf_vol", "frag_vol",
           "rock_fragments", "gravel", "stones"),
    "wetland": ("wetland", "is_wetland", "wetland_flag", "hydric", "hydric_soil"),
}

#: Field kind -> unit spelling -> factor to the working unit (cm, %, g cm-3, volume fraction).
UNITS: dict[str, dict[str, float]] = {
    "depth": {"cm": 1.0, "m": 100.0, "mm": 0.1},
    "carbon": {"%": 1.0, "g/kg": 0.1, "g/g": 100.0},
    "bd": {"g cm-3": 1.0, "kg m-3": 0.001},
    "cf": {"%": 0.01, "1": 1.0},
}
#: Other spellings accepted for each unit (normalised: lower case, no spaces).
UNIT_SYNONYMS: dict[str, str] = {
    "centimetre": "cm", "centimeter": "cm", "centimetres": "cm", "centimeters": "cm", "metre": "m", "meter": "m",
    "metres": "m", "meters": "m", "millimetre": "mm", "millimeter": "mm",
    "pct": "%", "percent": "%", "perc": "%", "g/100g": "%", "gkg-1": "g/kg", "gkg^-1": "g/kg", "g_kg": "g/kg",
    "mg/g": "g/kg", "permille": "g/kg", "‰": "g/kg", "gg-1": "g/g", "g_g": "g/g", "fraction": "g/g", "kg/kg": "g/g",
    "gcm-3": "g cm-3", "g/cm3": "g cm-3", "g/cm^3": "g cm-3", "g/cc": "g cm-3", "mgm-3": "g cm-3", "mg/m3": "g cm-3",
    "t/m3": "g cm-3", "kgdm-3": "g cm-3", "kg/dm3": "g cm-3", "kgm-3": "kg m-3", "kg/m3": "kg m-3", "kg/m^3": "kg m-3",
    "vol%": "%", "%vol": "%", "volumefraction": "1", "m3/m3": "1", "m3m-3": "1",
}
FIELD_KIND: dict[str, str] = {"top": "depth", "bottom": "depth", "oc": "carbon", "total_c": "carbon", "caco3": "carbon",
                              "bd": "bd", "cf": "cf"}
#: Unit suffixes of column names (normalised), longest first.
_NAME_UNITS: tuple[tuple[str, str], ...] = (
    ("_g_cm3", "g cm-3"), ("_g_cm_3", "g cm-3"), ("_g_cc", "g cm-3"), ("_mg_m3", "g cm-3"), ("_kg_m3", "kg m-3"),
    ("_kg_m_3", "kg m-3"), ("_g_kg", "g/kg"), ("_gkg", "g/kg"), ("_g_g", "g/g"), ("_pct", "%"), ("_percent", "%"),
    ("_perc", "%"), ("_cm", "cm"), ("_mm", "mm"), ("_m", "m"),
)

def normalise(name: object) -> str:
    """Column name in matching form: lower case, ``%`` → ``pct``, other punctuation → ``_``."""
    s = str(name).strip().lower().replace("%", "_pct").replace("‰", "_gkg").replace("/", "_").replace("^", "")
    s = re.sub(r"[^0-9a-z]+", "_", s)
    return s.strip("_")


def _strip_unit(norm: str) -> tuple[str, str | None]:
    for suffix, unit in _NAME_UNITS:
        if norm.endswith(suffix) and len(norm) > len(suffix):
            return norm[: -len(suffix)], unit
    return norm, None


def canonical_unit(field_name: str, unit: str, where: str) -> str:
    """The canonical spelling of ``unit`` for ``field_name``, or a :class:`ProfileDataError`."""
    kind = FIELD_KIND[field_name]
    key = str(unit).strip()
    if key in UNITS[kind]:
        return key
    low = key.lower().replace(" ", "")
    for u in UNITS[kind]:
        if low == u.replace(" ", ""):
            return u
    syn = UNIT_SYNONYMS.get(low)
    if syn in UNITS[kind]:
        return syn
    raise ProfileDataError(f"{where}: unit {unit!r} for {field_name!r} ({FIELD_DESCRIPTIONS[field_name]}) is not known; "
                           f"use one of {', '.join(repr(u) for u in UNITS[kind])}")


# ----------------------------------------------------------------------------------------
# the column map
# ----------------------------------------------------------------------------------------

@dataclass
class ColumnMap:
    """Explicit column names and units per field (both optional; aliases fill the rest)."""

    columns: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    path: str | None = None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ColumnMap":
        """Read a column map file: ``{columns: {field: column}, units: {field: unit}, source: name}``."""
        from socmap.yaml_file import read_mapping

        raw = read_mapping(path, ProfileDataError, what="column map (--columns)", keys_hint="keys columns, units, source")
        return cls.from_dict(raw, where=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "column map") -> "ColumnMap":
        unknown = set(raw) - {"columns", "units", "source"}
        if unknown:
            raise ProfileDataError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                                   "a column map has columns:, units: and source:")
        columns = raw.get("columns") or {}
        units = raw.get("units") or {}
        for what, d in (("columns", columns), ("units", units)):
            if not isinstance(d, dict):
                raise ProfileDataError(f"{where}: {what}: must map a field to a {'column name' if what == 'columns' else 'unit'}")
            bad = [k for k in d if k not in FIELD_DESCRIPTIONS or (what == "units" and k not in FIELD_KIND)]
            if bad:
                allowed = FIELD_DESCRIPTIONS if what == "columns" else FIELD_KIND
                raise ProfileDataError(f"{where}: {what}: unknown field(s) {', '.join(map(repr, bad))}; "
                                       f"use {', '.join(allowed)}")
        units = {k: canonical_unit(k, v, f"{where}: units") for k, v in units.items()}
        return cls(columns={k: str(v) for k, v in columns.items()}, units=units,
                   source=raw.get("source"), path=where)


def match_columns(df: pd.DataFrame, cmap: ColumnMap, path: Path | str) -> tuple[dict[str, str], dict[str, str]]:
    """Find each field's column: ``({field: column}, {field: unit read from the column name})``.

    Explicit columns of ``cmap`` win; the others are matched by :data:`ALIASES` (the first
    alias present wins; a column is used for one field only).
    """
    cols = [c for c in df.columns if c != "_line"]
    for f, c in cmap.columns.items():
        if c not in cols:
            close = difflib.get_close_matches(c, [str(x) for x in cols], n=2, cutoff=0.6)
            raise ProfileDataError(f"{path}: the column map names column {c!r} for {f!r}, but the file has no such column"
                                   + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
                                   + f"; its columns are {', '.join(repr(str(x)) for x in cols[:30])}")
    found = dict(cmap.columns)
    used = set(found.values())
    all_aliases = {a for v in ALIASES.values() for a in v}
    norm: dict[str, tuple[str, str | None]] = {}  # column -> (name without unit suffix, unit of the suffix)
    for c in cols:
        n = normalise(c)
        norm[c] = (n, None) if n in all_aliases else _strip_unit(n)
    for f, aliases in ALIASES.items():
        if f in found:
            continue
        for alias in aliases:
            hit = [c for c in cols if c not in used and norm[c][0] == alias]
            if hit:
                found[f] = hit[0]
                used.add(hit[0])
                break
    name_units = {f: norm[c][1] for f, c in found.items() if c in norm and norm[c][1] and f in FIELD_KIND}
    return found, name_units


def require_fields(found: dict[str, str], df: pd.DataFrame, path: Path | str) -> None:
    """Raise naming the missing fields, the names tried, close matches and the fix."""
    need = ["lat", "lon", "top", "bottom"]
    missing = [f for f in need if f not in found]
    if "oc" not in found and "total_c" not in found:
        missing.append("oc")
    if not missing:
        return
    cols = [str(c) for c in df.columns if c != "_line"]
    parts = []
    for f in missing:
        close = difflib.get_close_matches(f, cols, n=2, cutoff=0.6)
        tried = ", ".join(ALIASES[f][:6])
        parts.append(f"{f!r} ({FIELD_DESCRIPTIONS[f]}; tried {tried}, …"
                     + (f"; closest: {', '.join(map(repr, close))}" if close else "") + ")")
    example = "\n".join(f"    {f}: <your column>" for f in missing)
    raise ProfileDataError(
        f"{path}: no column for {', '.join(parts)}. The file has: {', '.join(map(repr, cols[:30]))}"
        + (" …" if len(cols) > 30 else "")
        + f". Rename the column(s) or pass a column map (--columns map.yaml) with\n  columns:\n{example}")


# ----------------------------------------------------------------------------------------
# reading files
# ----------------------------------------------------------------------------------------

_TEXT_SUFFIXES = {".csv": ",", ".txt": None, ".tsv": "\t", ".tab": "\t"}


def read_table(path: str | Path, *, encoding: str = "utf-8", missing_hint: str = "check the path") -> pd.DataFrame:
    """A table file as a DataFrame with ``_line``: the row's line in the file (header = line 1).

    CSV/TSV/TXT (optionally ``.gz``; separator sniffed for ``.txt`` and for ``;`` in CSV),
    Parquet (needs pyarrow) and Excel (needs openpyxl; ``_line`` is the sheet row). Every
    failure is a :class:`ProfileDataError` naming the file and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise ProfileDataError(f"{path}: no such file; {missing_hint}")
    if path.is_dir():
        raise ProfileDataError(f"{path} is a folder; give the path of a table file (.csv, .parquet, .xlsx)")
    suffixes = [s.lower() for s in path.suffixes]
    kind = suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    try:
        if kind in _TEXT_SUFFIXES:
            df = _read_text(path, kind, encoding)
            first_line = 2
        elif kind in (".parquet", ".pq"):
            df = _with_engine(lambda: pd.read_parquet(path), path, "Parquet", "pyarrow")
            first_line = 1
        elif kind in (".xlsx", ".xlsm", ".xls"):
            engine = "xlrd" if kind == ".xls" else "openpyxl"
            df = _with_engine(lambda: pd.read_excel(path, engine=engine), path, "Excel", engine)
            first_line = 2
        else:
            raise ProfileDataError(f"{path}: cannot read files ending {''.join(path.suffixes) or '(no extension)'}; "
                                   "save the table as .csv (or .csv.gz, .tsv, .parquet, .xlsx)")
    except UnicodeDecodeError as exc:
        raise ProfileDataError(f"{path}: not {encoding} text (byte {exc.object[exc.start:exc.start + 1]!r} at position "
                               f"{exc.start}); save it as UTF-8, or pass its encoding (--encoding latin-1)") from None
    except pd.errors.EmptyDataError:
        raise ProfileDataError(f"{path}: the file is empty (no header line); it needs a header and one row per horizon") from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        if isinstance(exc, ProfileDataError):
            raise
        raise ProfileDataError(f"{path}: cannot read it as a {kind.lstrip('.') or 'table'} file "
                               f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from None
    df.columns = [str(c).strip() for c in df.columns]
    dup = [c for c in set(df.columns) if list(df.columns).count(c) > 1]
    if dup:
        raise ProfileDataError(f"{path}: column name(s) {', '.join(map(repr, sorted(dup)))} appear more than once; "
                               "rename them so each is unique")
    if len(df) == 0:
        raise ProfileDataError(f"{path}: the file has a header ({', '.join(map(repr, list(df.columns)[:8]))}) "
                               "but no rows")
    df["_line"] = np.arange(len(df)) + first_line
    return df


def _read_text(path: Path, kind: str, encoding: str) -> pd.DataFrame:
    sep = _TEXT_SUFFIXES[kind]
    if sep != "\t":
        import gzip

        opener = gzip.open if path.suffix.lower() == ".gz" else open
        with opener(path, "rt", encoding=encoding) as fh:  # type: ignore[operator]
            head = fh.readline()
        if sep is None:
            sep = "\t" if "\t" in head else (";" if ";" in head else ",")
        elif ";" in head and "," not in head:
            sep = ";"
    # blank lines kept (as empty rows) so that row i is line i + 2 of the file
    return pd.read_csv(path, sep=sep, encoding=encoding, low_memory=False, skip_blank_lines=False)


def _with_engine(read, path: Path, what: str, package: str) -> pd.DataFrame:
    try:
        return read()
    except ImportError:
        raise ProfileDataError(f"{path}: reading {what} files needs the {package} package; install it "
                               f"(`pip install {package}`) or save the table as .csv") from None


# ----------------------------------------------------------------------------------------
# numbers and units
# ----------------------------------------------------------------------------------------

def line_list(lines) -> str:
    """The first few line numbers, and how many there are in all."""
    lines = list(lines)
    shown = ", ".join(str(int(i)) for i in lines[:8])
    return shown + (f" … ({len(lines)} in all)" if len(lines) > 8 else "")


_BLANKS = ["", "NA", "NaN", "nan", "N/A", "n/a", "null", "NULL", "None", "-", "--", "."]


def numeric_column(df: pd.DataFrame, col: str, path: Path | str, notes: list[str]) -> tuple[pd.Series, pd.Series]:
    """Column ``col`` as float, and the mask of entries holding text that is not a number.

    Blanks and the usual missing-value codes (NA, N/A, null, -) are missing, not text; text is
    described in ``notes`` with its lines and examples.
    """
    raw = df[col]
    if pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw):
        return raw.astype(np.float64), pd.Series(False, index=df.index)
    stripped = raw.astype("string").str.strip()
    blank = stripped.isna() | stripped.isin(_BLANKS)
    num = pd.to_numeric(stripped.where(~blank), errors="coerce").astype(np.float64)
    bad = num.isna() & ~blank
    if bad.any():
        examples = [str(v) for v in raw[bad].unique()[:3]]
        hint = " (decimal commas? save the file with decimal points)" if any(re.fullmatch(r"-?\d+,\d+", e) for e in examples) else ""
        notes.append(f"{Path(path).name}: column {col!r} holds text that is not a number on line(s) "
                     f"{line_list(df.loc[bad, '_line'])} (e.g. {', '.join(map(repr, examples))}){hint}")
    return num, bad


#: Spellings of a yes/no flag (normalised: stripped, lower case).
FLAG_TRUE = ("1", "1.0", "true", "t", "yes", "y", "wetland")
FLAG_FALSE = ("0", "0.0", "false", "f", "no", "n", "upland")


def flag_column(df: pd.DataFrame, col: str, path: Path | str) -> pd.Series:
    """Column ``col`` as a boolean flag (:data:`FLAG_TRUE` / :data:`FLAG_FALSE`; blanks are False).

    Raises :class:`ProfileDataError` naming the column, the lines and the values it cannot read.
    """
    raw = df[col]
    if pd.api.types.is_bool_dtype(raw):
        return raw.fillna(False).astype(bool)
    text = raw.astype("string").str.strip().str.lower()
    blank = text.isna() | text.isin([b.lower() for b in _BLANKS])
    yes, no = text.isin(FLAG_TRUE), text.isin(FLAG_FALSE)
    bad = ~(blank | yes | no)
    if bad.any():
        examples = ", ".join(repr(str(v)) for v in raw[bad].unique()[:3])
        raise ProfileDataError(f"{path}: column {col!r} (wetland flag) holds {examples} on line(s) "
                               f"{line_list(df.loc[bad, '_line'])}; use 1/0, true/false, yes/no or wetland/upland")
    return yes.fillna(False).astype(bool)


def _ask(path, field_name: str, column: str, why: str) -> ProfileDataError:
    units = ", ".join(repr(u) for u in UNITS[FIELD_KIND[field_name]])
    fields = ("top", "bottom") if FIELD_KIND[field_name] == "depth" else (field_name,)
    return ProfileDataError(f"{path}: column {column!r} ({'/'.join(fields)}): {why}; state the unit in a column map "
                            f"(--columns map.yaml with `units: {{{', '.join(f + ': <unit>' for f in fields)}}}`, one of {units})")


def infer_depth_unit(top: pd.Series, bottom: pd.Series, path, column: str) -> tuple[str, str]:
    """``(unit, reason)`` for depths from the deepest value; ambiguous → :class:`ProfileDataError`."""
    v = pd.concat([top.abs(), bottom.abs()])
    v = v[np.isfinite(v)]
    if v.empty:
        return "cm", "no depth values (cm assumed)"
    deepest = float(v.max())
    if 10.0 < deepest <= 1000.0:
        return "cm", f"deepest value {deepest:g} > 10 (in m it would be a profile deeper than 10 m)"
    if deepest <= 3.0:
        return "m", f"deepest value {deepest:g} <= 3 (in cm it would be a profile at most 3 cm deep)"
    why = (f"the deepest value is {deepest:g}, which could be cm or m" if deepest <= 10 else
           f"the deepest value is {deepest:g}, more than 10 m in cm (mm?)")
    raise _ask(path, "top", column, why)


def infer_bd_unit(bd: pd.Series, path, column: str) -> tuple[str, str]:
    """``(unit, reason)`` for bulk density; mixed or implausible values → :class:`ProfileDataError`."""
    v = bd[np.isfinite(bd) & (bd > 0)]
    if v.empty:
        return "g cm-3", "no positive values (g cm-3 assumed)"
    lo, hi = float(v.min()), float(v.max())
    if hi <= 2.9:
        return "g cm-3", f"all values {lo:g}-{hi:g} <= 2.9 (soil is at most ~2.65 g cm-3)"
    if lo >= 20 and hi <= 2900:
        return "kg m-3", f"all values {lo:g}-{hi:g} within 20-2,900 (kg m-3; in g cm-3 they would be impossible)"
    raise _ask(path, "bd", column, f"values {lo:g}-{hi:g} fit neither g cm-3 (<= 2.9) nor kg m-3 (20-2,900) throughout")


def infer_cf_unit(cf: pd.Series, path, column: str) -> tuple[str, str]:
    """``(unit, reason)`` for coarse fragments (% or volume fraction)."""
    v = cf[np.isfinite(cf)]
    if v.empty or float(v.abs().max()) == 0.0:
        return "%", "all values zero or missing (no correction either way)"
    hi = float(v.max())
    if hi > 1.0:
        return "%", f"largest value {hi:g} > 1 (a volume fraction is at most 1)"
    raise _ask(path, "cf", column, f"all values are <= {hi:g}, which could be % or a volume fraction")


def infer_carbon_unit(carbon: pd.Series, bd_g_cm3: pd.Series, path, field_name: str, column: str) -> tuple[str, str]:
    """``(unit, reason)`` for a carbon column (% / g/kg / g/g) from the values and measured densities.

    A unit is possible when the richest layer stays <= :data:`MAX_OC_PCT` % in it and at most
    5 % of the layers with a measured density are impossible in it (SOC density above
    :data:`MAX_SOC_G_M3`, or lighter than 0.4 g cm-3 with less than 5 % C). Exactly one
    possible unit is the answer; none or several → :class:`ProfileDataError`.
    """
    ok = np.isfinite(carbon) & (carbon > 0)
    v = carbon[ok]
    if v.empty:
        return "%", "no positive values (% assumed)"
    vmax = float(v.max())
    bd = bd_g_cm3.reindex(carbon.index)[ok]
    has_bd = np.isfinite(bd) & (bd > 0)
    n_bd = int(has_bd.sum())
    possible, why_not = [], {}
    for unit, factor in UNITS["carbon"].items():
        if vmax * factor > MAX_OC_PCT:
            why_not[unit] = f"the largest value {vmax:g} would be {vmax * factor:g} % C"
            continue
        pct = v[has_bd] * factor
        dense_rich = int((pct / 100.0 * bd[has_bd] * 1e6 > MAX_SOC_G_M3).sum())
        light_poor = int(((bd[has_bd] < 0.4) & (pct < 5.0)).sum())
        if n_bd and dense_rich + light_poor > 0.05 * n_bd:
            why_not[unit] = (f"{dense_rich + light_poor} of {n_bd} layers with a measured density would be impossible "
                             f"({dense_rich} denser than possible for their carbon, {light_poor} too light for their carbon)")
            continue
        possible.append(unit)
    if len(possible) == 1:
        others = "; ".join(f"not {u}: {w}" for u, w in why_not.items())
        return possible[0], f"values up to {vmax:g}; {others}"
    if not possible:
        raise _ask(path, field_name, column, f"no unit fits the values ({'; '.join(f'{u}: {w}' for u, w in why_not.items())})")
    raise _ask(path, field_name, column, f"values up to {vmax:g} could be {' or '.join(possible)}"
               + (" (no measured bulk density to tell them apart)" if not n_bd else ""))


@dataclass
class UnitChoice:
    """The unit used for one field and how it was chosen (for the load report)."""

    column: str
    unit: str
    how: str  # "given", "column name" or "inferred: <reason>"

    def to_dict(self) -> dict[str, str]:
        return {"column": self.column, "unit": self.unit, "how": self.how}
