"""The run store schema: ``runs/NAME/maps.zarr`` (written by :mod:`socmap.mapping`).

The dashboard and the exporters read the store only through this module: the names, the
attributes and :func:`open_store`, which checks the store version.

Layout
------
* dims ``(y, x)`` or ``(y, x, layer)``; ``y`` latitude of cell centres (descending), ``x``
  longitude; coords ``layer`` 0..19, ``depth_m`` (node depth), ``layer_top_m``,
  ``layer_bottom_m``; CRS EPSG:4326 (rioxarray ``spatial_ref`` + CF ``grid_mapping``).
* float32 variables, NaN off land (and where a cell could not be computed); each has CF
  ``units``, ``long_name`` and a ``kind`` (see :data:`KINDS`).
* ``land_cover`` int16 (IGBP code, 0 = water / outside land); ``land_mask`` uint8 (1 = land).
* dataset attrs: :data:`REQUIRED_ATTRS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Version of the schema below; bump it when names or meanings change.
STORE_VERSION = "1"
STORE_NAME = "maps.zarr"
PARTIAL_SUFFIX = ".partial"
PROGRESS_FILE = "socmap_progress.json"
SITE_RESIDUALS = "site_residuals.csv"
MAP_RECORD = "map.json"
CRS = "EPSG:4326"

KINDS = ("soc", "stock", "parameter", "diagnostic", "covariate", "difference", "uncertainty", "mask")

SOC = "soc"
STOCKS: tuple[str, ...] = ("soc_stock_0_30cm", "soc_stock_0_100cm")
STOCK_LONG_NAMES = {
    "soc_stock_0_30cm": "soil organic carbon stock 0-30 cm",
    "soc_stock_0_100cm": "soil organic carbon stock 0-100 cm",
}
DEFAULT_PREFIX = "default_"          # CLM5 default parameters ("one set of parameters")
DIFF_DEFAULT_PREFIX = "diff_default_"  # hybrid - default
DIFF_COMPARE_PREFIX = "diff_compare_"  # this run - other run (--compare)
STD_SUFFIX = "_std"                  # --ensemble: standard deviation across the fold models
LAND_COVER = "land_cover"
LAND_MASK = "land_mask"

REQUIRED_ATTRS = ("store_version", "run_name", "created", "socmap_version", "resolution_deg", "encoder", "crs")


class StoreError(RuntimeError):
    """A run store is missing, incomplete or of another schema version."""


@dataclass(frozen=True)
class VarSpec:
    """One store variable."""

    name: str
    dims: tuple[str, ...]
    dtype: str
    units: str
    long_name: str
    kind: str

    @property
    def layered(self) -> bool:
        return "layer" in self.dims


def variable_specs(covariates: list[str] | tuple[str, ...], *, ensemble: bool = False,
                   compare: bool = False, covariate_attrs: dict[str, tuple[str, str]] | None = None) -> dict[str, VarSpec]:
    """Every variable of a store mapped with these covariates and options, in store order."""
    from socmap.clm5.diagnostics import DIAGNOSTICS
    from socmap.clm5.parameters import PARAMETERS

    yx, yxl = ("y", "x"), ("y", "x", "layer")
    out: dict[str, VarSpec] = {}

    def add(name, dims, units, long_name, kind, dtype="float32"):
        out[name] = VarSpec(name, dims, dtype, units, long_name, kind)

    add(SOC, yxl, "g C m-3", "soil organic carbon density at the layer node (S1+S2+S3)", "soc")
    for s in STOCKS:
        add(s, yx, "kg C m-2", STOCK_LONG_NAMES[s], "stock")
    for p in PARAMETERS:
        add(p.name, yx, p.unit, p.description, "parameter")
    for name, (units, long_name) in DIAGNOSTICS.items():
        add(name, yx, units, long_name, "diagnostic")
    for c in covariates:
        units, long_name = (covariate_attrs or {}).get(c, ("1", c))
        add(c, yx, units, long_name, "covariate")
    add(LAND_COVER, yx, "1", "IGBP land-cover class (0 = water / outside land)", "covariate", "int16")
    add(LAND_MASK, yx, "1", "land (1) / water or outside CONUS (0)", "mask", "uint8")
    for s in STOCKS:
        add(DEFAULT_PREFIX + s, yx, "kg C m-2", STOCK_LONG_NAMES[s] + ", CLM5 default parameters", "stock")
    for s in STOCKS:
        add(DIFF_DEFAULT_PREFIX + s, yx, "kg C m-2", STOCK_LONG_NAMES[s] + ", hybrid minus CLM5 default parameters", "difference")
    if compare:
        for s in STOCKS:
            add(DIFF_COMPARE_PREFIX + s, yx, "kg C m-2", STOCK_LONG_NAMES[s] + ", this run minus the compared run", "difference")
    if ensemble:
        for s in STOCKS:
            add(s + STD_SUFFIX, yx, "kg C m-2", STOCK_LONG_NAMES[s] + ", standard deviation across fold models", "uncertainty")
        add(SOC + STD_SUFFIX, yxl, "g C m-3", "soil organic carbon density, standard deviation across fold models", "uncertainty")
        for p in PARAMETERS:
            add(p.name + STD_SUFFIX, yx, p.unit, p.description + ", standard deviation across fold models", "uncertainty")
    return out


def store_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / STORE_NAME


def partial_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / (STORE_NAME + PARTIAL_SUFFIX)


def check_version(attrs: dict[str, Any], where: str | Path) -> None:
    """Raise :class:`StoreError` unless ``attrs['store_version']`` is :data:`STORE_VERSION`."""
    found = attrs.get("store_version")
    if found is None:
        raise StoreError(f"{where} has no store_version attribute: it was not written by `socmap map` "
                         f"(store version {STORE_VERSION}); re-create it with `socmap map --run RUN`")
    if str(found) != STORE_VERSION:
        raise StoreError(f"{where} is run store version {found}, but this socmap reads version {STORE_VERSION}; "
                         f"re-create it with `socmap map --run RUN` (the old store is replaced)")


def open_store(run_dir: str | Path, *, chunks: Any = "auto"):
    """Open ``run_dir/maps.zarr`` lazily (CRS decoded); clear errors if missing or of another version.

    ``run_dir`` may also be the ``maps.zarr`` path itself.
    """
    import warnings

    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    run_dir = Path(run_dir)
    path = run_dir if run_dir.name == STORE_NAME else store_path(run_dir)
    if not path.exists():
        partial = path.parent / (STORE_NAME + PARTIAL_SUFFIX)
        hint = (f" ({partial} exists: mapping was interrupted; re-run `socmap map --run {path.parent}` to resume)"
                if partial.exists() else f" (create it with `socmap map --run {path.parent}`)")
        raise StoreError(f"no run store at {path}{hint}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            ds = xr.open_zarr(path, decode_coords="all", chunks=chunks)
    except Exception as exc:  # noqa: BLE001 - any zarr/xarray failure means "not a readable store"
        raise StoreError(f"{path} is not a readable Zarr run store: {exc}") from exc
    check_version(ds.attrs, path)
    return ds


def store_grid_signature(ds) -> tuple[int, int, float, float, float, float]:
    """(ny, nx, y0, y1, x0, x1): enough to tell whether two stores share a grid."""
    y, x = ds["y"].values, ds["x"].values
    return (len(y), len(x), float(y[0]), float(y[-1]), float(x[0]), float(x[-1]))


def same_grid(a, b, tol: float = 1e-9) -> bool:
    import numpy as np

    if a.sizes["y"] != b.sizes["y"] or a.sizes["x"] != b.sizes["x"]:
        return False
    return bool(np.allclose(a["y"].values, b["y"].values, atol=tol) and np.allclose(a["x"].values, b["x"].values, atol=tol))
