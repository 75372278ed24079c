"""Reader of CLM5 forcing from a CESM2-style NetCDF climatology (the BINN / ScIReN inputs).

CESM2 history files already hold every field the model needs (litter inputs, TSOI, W_SCALAR,
O_SCALAR, FPI_vr, ALTMAX, nbedrock); :func:`read_cesm2_forcing` only renames, reorders, integrates
the litter inputs over depth and time, and checks units, producing the container
:class:`socmap.clm5.forcing.Forcing`. Deriving forcing from climate instead is
:mod:`socmap.climate_forcing`.
"""

from __future__ import annotations

from os import PathLike

import numpy as np

from socmap.clm5.forcing import N_MONTHS, Forcing
from socmap.clm5.grid import DZ_M, N_LAYERS

__all__ = ["CESM2_VARIABLES", "read_cesm2_forcing"]

#: CLM5 history variables read by :func:`read_cesm2_forcing` (docs/model.md §5.1).
CESM2_VARIABLES: tuple[str, ...] = (
    "CWD_INPUT_ACC_VECTOR", "LITR1_INPUT_ACC_VECTOR", "LITR2_INPUT_ACC_VECTOR", "LITR3_INPUT_ACC_VECTOR",
    "ALTMAX", "ALTMAX_LASTYEAR", "nbedrock", "O_SCALAR", "FPI_vr", "TSOI", "W_SCALAR",
)
_INPUT_VARIABLES = CESM2_VARIABLES[:4]
_MONTH_DIMS = ("month", "time", "mon", "months")
_LAYER_DIMS = ("layer", "levsoi", "levgrnd", "levdcmp", "lev", "nlevsoi", "layers")


def read_cesm2_forcing(
    path: str | PathLike[str],
    variable_map: dict[str, str] | None = None,
    *,
    validate: bool = True,
) -> Forcing:
    """Read CLM5 forcing from a CESM2-style NetCDF climatology (docs/model.md §5.1).

    Variables (CLM5 names; ``variable_map`` maps a CLM5 name to the name in the file):

    - ``CWD_INPUT_ACC_VECTOR``, ``LITR1/2/3_INPUT_ACC_VECTOR`` (site, month, layer) in
      gC m-3 month-1: multiplied by the layer thickness dz, summed over the 20 layers and over
      the 12 months (NaN months skipped) → ``inputs_g_m2_yr``. Without a layer dimension they
      are taken as column totals (gC m-2 month-1).
    - ``ALTMAX``, ``ALTMAX_LASTYEAR`` (site, month) or (site) m → ``alt_m`` = their monthly
      maximum (drives bio/cryoturbation, as in CLM5), and ``altmax_lastyear_m`` = the smallest
      monthly ``ALTMAX_LASTYEAR`` (CLM5's input profile keys on it alone; CLM holds it constant
      through the year, and PRODA requires every month > 0).
    - ``nbedrock`` (site) or (site, month): first month, cast to int.
    - ``O_SCALAR``, ``FPI_vr``, ``TSOI`` (K), ``W_SCALAR`` (site, month, layer).

    Dimensions are recognised by name: month = one of ``month/time/mon`` (length 12), layer =
    one of ``layer/levsoi/levgrnd/levdcmp/lev`` (the first 20 levels are used); all other
    dimensions are sites (several, e.g. lat × lon, are flattened in C order, the dataset's
    dimension order).

    Parameters
    ----------
    path : str or path-like
        NetCDF file.
    variable_map : dict, optional
        ``{CLM5 name: name in file}``.
    validate : bool
        Run :meth:`Forcing.validate` (raises on NaN sites, e.g. ocean cells) — default True.

    Returns
    -------
    Forcing
    """
    import xarray as xr

    variable_map = dict(variable_map or {})
    unknown = sorted(set(variable_map) - set(CESM2_VARIABLES))
    if unknown:
        raise ValueError(f"variable_map keys {unknown} are not CLM5 forcing variables; use keys from {list(CESM2_VARIABLES)}")
    with xr.open_dataset(path) as ds:
        names = {v: variable_map.get(v, v) for v in CESM2_VARIABLES}
        for std, name in names.items():
            if name not in ds.variables:
                hint = "" if std in variable_map else f" Pass variable_map={{'{std}': '<name in file>'}} if it is stored under another name."
                raise ValueError(
                    f"{path}: variable {name!r} (CLM5 {std}) is missing; the file has "
                    f"{sorted(map(str, ds.data_vars))}.{hint}"
                )
        site_dims = _site_dims(ds, [names[v] for v in CESM2_VARIABLES], path)
        arrays = {std: _standard_array(ds[name], std, site_dims, path) for std, name in names.items()}

    inputs = []
    for std in _INPUT_VARIABLES:
        a = arrays[std]
        if a.ndim == 3:
            a = np.sum(a * DZ_M[None, None, :], axis=-1)  # NaN layers propagate (like the source)
        inputs.append(np.nansum(a, axis=1))
    alt_last = _monthly(arrays["ALTMAX_LASTYEAR"], "ALTMAX_LASTYEAR", path)
    alt = np.fmax(_monthly(arrays["ALTMAX"], "ALTMAX", path), alt_last)
    nb = arrays["nbedrock"]
    nb = nb[:, 0] if nb.ndim > 1 else nb
    if nb.ndim != 1:
        raise ValueError(f"{path}: nbedrock must have dims (site) or (site, month); got {nb.ndim} dims")
    nb = np.where(np.isfinite(nb), np.rint(nb), 0).astype(np.int64)
    layered = {}
    for std in ("O_SCALAR", "FPI_vr", "TSOI", "W_SCALAR"):
        a = arrays[std]
        if a.ndim != 3:
            raise ValueError(f"{path}: {names[std]!r} (CLM5 {std}) needs dims (site, month, layer); it has {a.ndim} dims")
        layered[std] = a
    finite_t = layered["TSOI"][np.isfinite(layered["TSOI"])]
    if finite_t.size and finite_t.max() < 100.0:
        raise ValueError(f"{path}: TSOI (max {finite_t.max():.1f}) looks like °C; CLM5 forcing needs kelvin")
    forcing = Forcing.from_numpy(
        inputs_g_m2_yr=np.stack(inputs, axis=1),
        soil_temp_k=layered["TSOI"],
        water_scalar=layered["W_SCALAR"],
        oxygen_scalar=layered["O_SCALAR"],
        nitrogen_scalar=layered["FPI_vr"],
        alt_m=alt,
        nbedrock=nb,
        altmax_lastyear_m=alt_last.min(1),  # NaN months stay NaN: validate() names the site
    )
    if validate:
        forcing.validate()
    return forcing


def _site_dims(ds, names: list[str], path) -> tuple[str, ...]:
    dims: list[str] = []
    for name in names:
        for d in ds[name].dims:
            if d not in _MONTH_DIMS and d not in _LAYER_DIMS and d not in dims:
                dims.append(str(d))
    if not dims:
        raise ValueError(f"{path}: found no site dimension (every dimension is a month or layer dimension)")
    order = [str(d) for d in ds.dims]
    return tuple(sorted(dims, key=order.index))


def _standard_array(da, std: str, site_dims: tuple[str, ...], path) -> np.ndarray:
    """Values as (site[, month][, layer]) float64."""
    month = [d for d in da.dims if d in _MONTH_DIMS]
    layer = [d for d in da.dims if d in _LAYER_DIMS]
    if len(month) > 1 or len(layer) > 1:
        raise ValueError(f"{path}: {da.name!r} (CLM5 {std}) has several month or layer dimensions: {da.dims}")
    missing_sites = [d for d in site_dims if d not in da.dims]
    if missing_sites:
        raise ValueError(f"{path}: {da.name!r} (CLM5 {std}) lacks the site dimension(s) {missing_sites}; dims are {da.dims}")
    if month and da.sizes[month[0]] != N_MONTHS:
        raise ValueError(
            f"{path}: {da.name!r} (CLM5 {std}) has {da.sizes[month[0]]} steps along {month[0]!r}; expected a "
            "12-month climatology (average years first, e.g. ds.groupby('time.month').mean())"
        )
    if layer and da.sizes[layer[0]] < N_LAYERS:
        raise ValueError(f"{path}: {da.name!r} (CLM5 {std}) has {da.sizes[layer[0]]} layers along {layer[0]!r}; need at least {N_LAYERS}")
    da = da.transpose(*site_dims, *month, *layer)
    if layer:
        da = da.isel({layer[0]: slice(0, N_LAYERS)})
    values = np.asarray(da.values, dtype=np.float64)
    n_sites = int(np.prod([da.sizes[d] for d in site_dims]))
    return values.reshape(n_sites, *values.shape[len(site_dims):])


def _monthly(a: np.ndarray, std: str, path) -> np.ndarray:
    if a.ndim == 1:
        return np.repeat(a[:, None], N_MONTHS, axis=1)
    if a.ndim == 2:
        return a
    raise ValueError(f"{path}: {std} must have dims (site, month) or (site); got {a.ndim} dims")
