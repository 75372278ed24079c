"""Derivation of CLM5 forcing from monthly climate and land cover.

The CLM5 soil-carbon model (:mod:`socmap.clm5`) needs, per site, annual litter/CWD inputs, and
monthly per-layer soil temperature, water, oxygen and nitrogen scalars, the active-layer depth and
the bedrock layer (docs/model.md §2.5, §2.8, §5.1; container :class:`socmap.clm5.forcing.Forcing`). BINN and
ScIReN take all of these from a CESM2 run (the reader is :mod:`socmap.cesm2_forcing`). Most users
only have monthly air-temperature and precipitation climatologies plus a land-cover map, so
:func:`derive_forcing` builds the same container from those with simple, documented physics:

========================  ====================================================================
forcing field             derivation (function)
========================  ====================================================================
``soil_temp_k``           air-temperature cycle propagated into a homogeneous half-space by
                          heat conduction: every harmonic is damped as ``exp(-z/d)`` and
                          lagged by ``z/d`` radians, ``d = sqrt(2κ/ω)``
                          (:mod:`socmap.soil_temperature`)
``water_scalar``          monthly P/PET moisture ratio (Thornthwaite PET,
                          :func:`pet_thornthwaite_mm`), blended with depth into the annual ratio
                          (:func:`water_scalar_from_climate`)
``oxygen_scalar``         1, except below a shallow water table in permanent wetlands (IGBP 11)
                          where it is CLM's anaerobic floor ``mino2lim`` (:func:`oxygen_scalar`)
``nitrogen_scalar``       a constant FPI (:func:`nitrogen_scalar`)
``alt_m``                 deepest 0 °C isotherm of the thaw season from the soil-temperature
                          profile (:func:`socmap.soil_temperature.active_layer_depth_m`)
``altmax_lastyear_m``     the same annual maximum thaw depth: in a repeating climatology last
                          year's maximum is this year's
``nbedrock``              layers whose bottom lies above the bedrock depth
                          (:func:`nbedrock_from_depth`)
``inputs_g_m2_yr``        steady state, litterfall = NPP: Miami NPP (:func:`miami_npp_g_m2_yr`)
                          or a user NPP, split by land cover (:func:`litter_split`)
========================  ====================================================================

Every constant is a field of :class:`socmap.forcing_config.ForcingConfig`, with its units and
source. Everything is vectorised over sites (no Python loop over cells); shapes follow the
batch-first contract (sites, months, layers).

Known simplifications (documented, not hidden): the soil-temperature model ignores latent heat
and snow/organic insulation unless ``surface_offset_c`` is set, so thaw depths in permafrost
are upper-end values; the water scalar is an index of climatic wetness, not a soil-water
balance and is not reduced in frozen layers (the temperature scalar's frozen branch already
slows decomposition there); NPP from the Miami model is climatic potential NPP.
"""

from __future__ import annotations

import numpy as np

from socmap import climate_kernels
from socmap.clm5.forcing import N_MONTHS, Forcing, batch_first
from socmap.clm5.grid import INTERFACE_BOTTOM_M, N_LAYERS, NODE_M
from socmap.forcing_config import ForcingConfig, LitterQuality, metabolic_fraction
from socmap.input_checks import as_float_array, check_celsius, check_nonnegative, rows_text
from socmap.land_cover import LAND_COVER_GROUPS, N_IGBP_CLASSES, WETLAND_CLASS, land_cover_codes
from socmap.soil_temperature import active_layer_depth_m, soil_temperature_k

__all__ = [
    "DAYS_IN_MONTH",
    "daylength_h",
    "derive_forcing",
    "litter_split",
    "miami_npp_g_m2_yr",
    "lue_npp_g_m2_yr",
    "fapar_from_ndvi",
    "extraterrestrial_radiation_mj",
    "nbedrock_from_depth",
    "nitrogen_scalar",
    "oxygen_scalar",
    "pet_thornthwaite_mm",
    "water_scalar_from_climate",
    "water_scalar_from_potential",
]

#: Days in each month of a 365-day year.
DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=float)
#: Day of year of the middle of each month (365-day year).
MID_MONTH_DOY = np.cumsum(DAYS_IN_MONTH) - DAYS_IN_MONTH / 2.0 + 0.5


# ----------------------------------------------------------------------------- bedrock


def nbedrock_from_depth(bedrock_depth_m: np.ndarray | None, n: int | None = None) -> np.ndarray:
    """CLM5 ``nbedrock``: number of soil layers whose bottom interface lies above the bedrock.

    Parameters
    ----------
    bedrock_depth_m : ndarray [N] or None
        Depth to bedrock (m, ≥ 0). ``np.inf`` (or anything ≥ 8.6 m) = below the column.
        ``None`` = no bedrock anywhere (needs ``n``).
    n : int, optional
        Number of sites: required when ``bedrock_depth_m`` is None, checked against its length
        otherwise.

    Returns
    -------
    ndarray [N] int64
        1–20; a layer counts when its bottom interface is ≤ the bedrock depth (1e-9 m
        tolerance); at least 1 (CLM keeps one soil layer), 20 = no bedrock in the column.
    """
    if bedrock_depth_m is None:
        if n is None:
            raise ValueError("nbedrock_from_depth(None) needs the number of sites n")
        return np.full(n, N_LAYERS, dtype=np.int64)
    depth = as_float_array("bedrock_depth_m", bedrock_depth_m, (n,), allow_inf=True)
    neg = depth < 0
    if neg.any():
        raise ValueError(f"bedrock_depth_m must be >= 0 m (use np.inf for 'no bedrock'); negative at {rows_text(neg)}")
    count = np.searchsorted(INTERFACE_BOTTOM_M, depth + 1e-9, side="right")
    return np.clip(count, 1, N_LAYERS).astype(np.int64)



# ----------------------------------------------------------------------------- water, oxygen, nitrogen


def daylength_h(latitude_deg: np.ndarray, day_of_year: np.ndarray = MID_MONTH_DOY) -> np.ndarray:
    """Astronomical daylength (h), [N, len(day_of_year)].

    Solar declination ``δ = 23.45° sin(2π (284 + doy) / 365)`` (Cooper 1969); sunset hour angle
    ``ω_s = arccos(-tan φ tan δ)`` clipped to polar day/night; daylength ``24 ω_s / π``.
    """
    lat = np.radians(np.clip(np.asarray(latitude_deg, dtype=np.float64), -89.999, 89.999))
    decl = np.radians(23.45) * np.sin(2.0 * np.pi * (284.0 + np.asarray(day_of_year, dtype=np.float64)) / 365.0)
    cos_ws = np.clip(-np.tan(lat)[:, None] * np.tan(decl)[None, :], -1.0, 1.0)
    return 24.0 / np.pi * np.arccos(cos_ws)


def pet_thornthwaite_mm(air_temp_c: np.ndarray, latitude_deg: np.ndarray) -> np.ndarray:
    """Monthly potential evapotranspiration by Thornthwaite (1948), mm month-1.

    Heat index ``I = Σ (T_m/5)^1.514`` over months with T > 0; exponent
    ``a = 6.75e-7 I³ - 7.71e-5 I² + 1.792e-2 I + 0.49239``; unadjusted PET
    ``16 (10 T / I)^a`` mm for 0 < T < 26.5 °C, ``-415.85 + 32.24 T - 0.43 T²`` above 26.5 °C
    (Willmott et al. 1985), 0 at T ≤ 0. Adjusted for daylength ``L`` (h, mid-month,
    :func:`daylength_h`) and month length ``N`` (days): ``× (L/12)(N/30)``.

    Parameters
    ----------
    air_temp_c : ndarray [N, 12]
        Monthly mean air temperature (°C).
    latitude_deg : ndarray [N]
        Latitude (degrees north).

    Returns
    -------
    ndarray [N, 12]
        PET (mm month-1), ≥ 0.
    """
    t = as_float_array("air_temp_c", air_temp_c, (None, N_MONTHS))
    check_celsius("air_temp_c", t)
    lat = as_float_array("latitude_deg", latitude_deg, (t.shape[0],))
    tp = np.maximum(t, 0.0)
    heat = ((tp / 5.0) ** 1.514).sum(1, keepdims=True)
    a = 6.75e-7 * heat**3 - 7.71e-5 * heat**2 + 1.792e-2 * heat + 0.49239
    with np.errstate(divide="ignore", invalid="ignore"):
        mild = 16.0 * (10.0 * tp / np.where(heat > 0, heat, 1.0)) ** a
    hot = -415.85 + 32.24 * t - 0.43 * t**2
    pet = np.where(t <= 0, 0.0, np.where(t < 26.5, mild, hot))
    adjust = daylength_h(lat) / 12.0 * (DAYS_IN_MONTH / 30.0)[None, :]
    return np.maximum(pet, 0.0) * adjust


def water_scalar_from_potential(psi_mpa: np.ndarray, config: ForcingConfig = ForcingConfig()) -> np.ndarray:
    """CLM's water scalar from soil water potential ψ (MPa, negative), same shape as ``psi_mpa``.

    ``W = log(ψmin/ψ) / log(ψmin/ψmax)``: 0 at or below ψmin = −2 MPa and 1 at or above
    ψmax = −0.002 MPa (``config.psi_min_mpa``, ``config.psi_max_mpa``).
    """
    psi = np.minimum(np.asarray(psi_mpa, dtype=np.float64), config.psi_max_mpa)
    psi = np.maximum(psi, config.psi_min_mpa)
    return np.log(config.psi_min_mpa / psi) / np.log(config.psi_min_mpa / config.psi_max_mpa)


def water_scalar_from_climate(
    precip_mm: np.ndarray,
    pet_mm: np.ndarray,
    depth_m: np.ndarray = NODE_M,
    config: ForcingConfig = ForcingConfig(),
    *,
    land_cover: np.ndarray | None = None,
) -> np.ndarray:
    """Water scalar per month and layer from the precipitation / PET ratio, CLM5-style.

    ``r_m = P_m / max(PET_m, pet_floor)`` is the month's wetness and ``R = ΣP / max(ΣPET, floor)``
    the year's. Layer ``j`` sees ``r_jm = e^{-z_j/z_w} r_m + (1 - e^{-z_j/z_w}) R`` (seasonal
    signal near the surface, annual mean at depth; ``z_w = moisture_memory_depth_m``). The ratio
    is read as a soil water potential ``ψ = ψ_fc (r_jm / moisture_ratio_wet)^(−b)`` and mapped
    as CLM does (:func:`water_scalar_from_potential`): ``W = log(ψmin/ψ) / log(ψmin/ψmax)``, clipped to
    ``[water_scalar_floor, 1]``. So W ≈ 0.59 where P = PET and reaches 1 only for r ≳ 4 (with the defaults), like
    CESM2's W_SCALAR (a linear r → W map would saturate most humid soils and erase the
    sensitivity to the ``w_scaling`` parameter). Permanent wetlands (IGBP 11, when
    ``land_cover`` is given) get ``wetland_water_scalar``. This is the forcing field W; the model
    scales it by its ``w_scaling`` parameter (:func:`socmap.clm5.operators.scaled_water_scalar`).

    Parameters
    ----------
    precip_mm, pet_mm : ndarray [N, 12]
        Monthly precipitation and PET (mm month-1).
    depth_m : ndarray [J]
        Layer node depths (m).
    config : ForcingConfig
    land_cover : ndarray [N] of IGBP codes, optional

    Returns
    -------
    ndarray [N, 12, J]
        Water scalar in [water_scalar_floor, 1].
    """
    p = as_float_array("precip_mm", precip_mm, (None, N_MONTHS))
    e = as_float_array("pet_mm", pet_mm, (p.shape[0], N_MONTHS))
    check_nonnegative("precip_mm", p)
    check_nonnegative("pet_mm", e)
    z = np.atleast_1d(np.asarray(depth_m, dtype=np.float64))
    monthly = p / np.maximum(e, config.pet_floor_mm)
    annual = p.sum(1) / np.maximum(e.sum(1), config.pet_floor_mm)
    wz = np.exp(-z / config.moisture_memory_depth_m)  # [J]
    wet = (land_cover_codes(land_cover) == WETLAND_CLASS) if land_cover is not None else np.zeros(p.shape[0], bool)
    # computed sites innermost, [12, J, N] (returned as its batch-first view, clm5.forcing.batch_first),
    # in two compiled passes around one log (socmap.climate_kernels): W of ψ = ψ_fc (r/r_wet)^(−b) in
    # log space, log(ψmin/ψ) = log(ψmin/ψ_fc) + b log(r/r_wet), so one log per value instead of a
    # power and a log (water_scalar_from_potential of that ψ to rounding; clipping ψ to [ψmin, ψmax]
    # is clipping W to [0, 1])
    w = climate_kernels.water_scalar(
        monthly.T, annual, wz, config.moisture_ratio_wet, config.psi_exponent,
        np.log(config.psi_min_mpa / config.psi_field_capacity_mpa), np.log(config.psi_min_mpa / config.psi_max_mpa),
        max(config.water_scalar_floor, 0.0), wet, config.wetland_water_scalar)
    return batch_first(w)


def oxygen_scalar(
    land_cover: np.ndarray,
    depth_m: np.ndarray = NODE_M,
    config: ForcingConfig = ForcingConfig(),
) -> np.ndarray:
    """Oxygen scalar per month and layer: waterlogging of permanent wetlands.

    Aerated soil has ``O = 1`` (CLM5 without anoxia). In permanent wetlands (IGBP 11) layers
    whose node lies below ``wetland_water_table_m`` are anoxic all year and decompose at CLM's
    anaerobic floor ``anoxic_oxygen_scalar`` (``mino2lim`` = 0.2).

    Parameters
    ----------
    land_cover : ndarray [N]
        IGBP class codes 0–16.
    depth_m : ndarray [J]
        Node depths (m).
    config : ForcingConfig

    Returns
    -------
    ndarray [N, 12, J]
        Oxygen scalar in [0, 1].
    """
    lc = land_cover_codes(land_cover)
    z = np.atleast_1d(np.asarray(depth_m, dtype=np.float64))
    anoxic = np.where(z > config.wetland_water_table_m, config.anoxic_oxygen_scalar, 1.0)  # [J]
    per_site = np.where((lc == WETLAND_CLASS)[None, :], anoxic[:, None], 1.0)  # [J, N]
    out = np.empty((N_MONTHS, *per_site.shape))  # sites innermost (clm5.forcing.batch_first)
    for month in out:  # month by month: a broadcast assignment over the months measured ~9x slower
        month[...] = per_site
    return batch_first(out)


def nitrogen_scalar(n: int, config: ForcingConfig = ForcingConfig(), n_layers: int = N_LAYERS) -> np.ndarray:
    """Nitrogen scalar (FPI), the constant ``config.nitrogen_scalar`` as [n, 12, n_layers]."""
    return batch_first(np.full((N_MONTHS, n_layers, n), config.nitrogen_scalar, dtype=np.float64))



# ----------------------------------------------------------------------------- carbon inputs


def miami_npp_g_m2_yr(mat_c: np.ndarray, map_mm: np.ndarray, config: ForcingConfig = ForcingConfig()) -> np.ndarray:
    """Net primary production from climate by the Miami model (Lieth 1975), gC m-2 yr-1.

    ``NPP_dm = min(3000 / (1 + exp(1.315 - 0.119 T)), 3000 (1 - exp(-0.000664 P)))`` in
    g dry matter m-2 yr-1 (T = mean annual temperature °C, P = annual precipitation mm),
    times ``carbon_fraction`` (0.45 gC/g).

    Parameters
    ----------
    mat_c : ndarray [N]
        Mean annual air temperature (°C).
    map_mm : ndarray [N]
        Annual precipitation (mm yr-1), ≥ 0.

    Returns
    -------
    ndarray [N]
        NPP (gC m-2 yr-1).
    """
    t = np.asarray(mat_c, dtype=np.float64)
    p = np.asarray(map_mm, dtype=np.float64)
    c = config
    temp_limit = c.miami_npp_max_g_dm / (1.0 + np.exp(c.miami_temp_a - c.miami_temp_b * t))
    precip_limit = c.miami_npp_max_g_dm * (1.0 - np.exp(-c.miami_precip_c * p))
    return np.minimum(temp_limit, precip_limit) * c.carbon_fraction



def extraterrestrial_radiation_mj(latitude_deg: np.ndarray, day_of_year: np.ndarray = MID_MONTH_DOY) -> np.ndarray:
    """Daily extraterrestrial shortwave radiation (MJ m-2 d-1), [N, len(day_of_year)].

    FAO-56 (Allen et al. 1998) eq. 21: ``Ra = 24·60/π · Gsc · dr · (ωs sinφ sinδ + cosφ cosδ sin ωs)``
    with ``Gsc = 0.0820`` MJ m-2 min-1, ``dr = 1 + 0.033 cos(2π doy/365)`` and the declination and
    sunset hour angle of :func:`daylength_h`.
    """
    lat = np.radians(np.clip(np.asarray(latitude_deg, dtype=np.float64), -89.999, 89.999))[:, None]
    doy = np.asarray(day_of_year, dtype=np.float64)[None, :]
    decl = np.radians(23.45) * np.sin(2.0 * np.pi * (284.0 + doy) / 365.0)
    ws = np.arccos(np.clip(-np.tan(lat) * np.tan(decl), -1.0, 1.0))
    dr = 1.0 + 0.033 * np.cos(2.0 * np.pi * doy / 365.0)
    ra = 24.0 * 60.0 / np.pi * 0.0820 * dr * (ws * np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.sin(ws))
    return np.maximum(ra, 0.0)


def fapar_from_ndvi(ndvi: np.ndarray, config: ForcingConfig = ForcingConfig()) -> np.ndarray:
    """fAPAR from NDVI, the linear relation of Myneni & Williams (1994): ``1.1638 NDVI − 0.1426``,
    clipped to [0, 0.95] (bare soil absorbs no PAR for plants)."""
    f = config.fapar_ndvi_slope * np.asarray(ndvi, dtype=np.float64) + config.fapar_ndvi_offset
    return np.clip(f, 0.0, 0.95)


def lue_npp_g_m2_yr(ndvi_max: np.ndarray, ndvi_min: np.ndarray, air_temp_c: np.ndarray,
                    latitude_deg: np.ndarray, config: ForcingConfig = ForcingConfig()) -> np.ndarray:
    """NPP from absorbed light, a light-use-efficiency (Monteith) model, gC m-2 yr-1.

    ``NPP = ε Σ_m days_m · PAR_m · fAPAR_m``, with ``PAR_m = par_fraction · clearness_index · Ra_m``
    (:func:`extraterrestrial_radiation_mj`), and ``fAPAR_m`` rising from the dormant-season value
    ``fAPAR(NDVI_min)`` to the peak ``fAPAR(NDVI_max)`` (:func:`fapar_from_ndvi`) with the thermal
    growing-season weight ``g_m = clip((T_m − T_min) / (T_opt − T_min), 0, 1)`` (docs/model.md
    §5.9). ``ε`` = ``lue_epsilon_g_mj``. Water limitation is not applied again: it is already in
    the observed canopy. (PT-JPL's fAPARmax is not used here: it reads ~0.2 over bare desert.)

    Parameters
    ----------
    ndvi_max, ndvi_min : ndarray [N]
        Annual maximum and minimum NDVI.
    air_temp_c : ndarray [N, 12]
        Monthly mean air temperature (°C).
    latitude_deg : ndarray [N]

    Returns
    -------
    ndarray [N]
        NPP (gC m-2 yr-1), ≥ 0.
    """
    c = config
    fmax = fapar_from_ndvi(ndvi_max, c)
    fmin = np.minimum(fapar_from_ndvi(ndvi_min, c), fmax)
    t = as_float_array("air_temp_c", air_temp_c, (fmax.shape[0], N_MONTHS))
    g = np.clip((t - c.lue_t_min_c) / (c.lue_t_opt_c - c.lue_t_min_c), 0.0, 1.0)
    fapar = fmin[:, None] + (fmax - fmin)[:, None] * g
    par = c.par_fraction * c.clearness_index * extraterrestrial_radiation_mj(latitude_deg) * DAYS_IN_MONTH[None, :]
    return c.lue_epsilon_g_mj * (par * fapar).sum(1)


def _split_table(config: ForcingConfig) -> np.ndarray:
    """[17, 4] fractions (CWD, metabolic, cellulose, lignin) per IGBP class."""
    groups = {g: LitterQuality(*q) for g, q in config.litter_quality}
    rows = []
    for code in range(N_IGBP_CLASSES):
        q = groups[LAND_COVER_GROUPS[code]]
        fm = metabolic_fraction(q)
        fine = 1.0 - q.cwd_fraction
        rows.append([q.cwd_fraction, fine * fm, fine * (1.0 - fm - q.lignin_fraction), fine * q.lignin_fraction])
    return np.array(rows)


def litter_split(land_cover: np.ndarray, config: ForcingConfig = ForcingConfig()) -> np.ndarray:
    """Fractions of litterfall entering CWD, metabolic, cellulose and lignin litter by land cover.

    A group's CWD fraction is its wood share of litterfall; the rest (leaf + fine root) is split
    by litter chemistry as in CENTURY (Parton et al. 1987): metabolic
    ``F_m = 0.85 - 0.018 L/N`` (lignin:N), lignin = the lignin fraction ``L``, cellulose =
    ``1 - F_m - L`` — the same three litter pools as CLM5's ``lf_flab/lf_fcel/lf_flig``.
    Values per group are in :class:`ForcingConfig` (``litter_quality``); with the defaults:

    ============== ===== ========= ========= ======
    group          CWD   metabolic cellulose lignin
    ============== ===== ========= ========= ======
    forest (1–5)   0.25  0.300     0.285     0.165
    shrub/savanna  0.10  0.441     0.297     0.162
    grass (10)     0     0.634     0.246     0.120
    wetland (11)   0.05  0.380     0.380     0.190
    crop (12, 14)  0     0.634     0.266     0.100
    other          0     0.634     0.246     0.120
    ============== ===== ========= ========= ======

    Parameters
    ----------
    land_cover : ndarray [N]
        IGBP class codes 0–16.

    Returns
    -------
    ndarray [N, 4]
        Fractions summing to 1 per row.
    """
    return _split_table(config)[land_cover_codes(land_cover)]



# ----------------------------------------------------------------------------- derive


def derive_forcing(
    air_temp_c: np.ndarray,
    precip_mm: np.ndarray,
    land_cover: np.ndarray,
    latitude_deg: np.ndarray,
    *,
    npp_g_m2_yr: np.ndarray | None = None,
    bedrock_depth_m: np.ndarray | None = None,
    config: ForcingConfig = ForcingConfig(),
    validate: bool = False,
) -> Forcing:
    """CLM5 forcing from monthly climate and land cover (see the module docstring).

    Parameters
    ----------
    air_temp_c : ndarray [N, 12]
        Monthly mean air temperature (°C), January first.
    precip_mm : ndarray [N, 12]
        Monthly precipitation (mm month-1), ≥ 0.
    land_cover : ndarray [N] int
        IGBP class code 0–16 (MODIS MCD12C1).
    latitude_deg : ndarray [N]
        Latitude (degrees north), for daylength and the hemisphere.
    npp_g_m2_yr : ndarray [N], optional
        NPP (gC m-2 yr-1) overriding the Miami model (e.g. MODIS MOD17).
    bedrock_depth_m : ndarray [N], optional
        Depth to bedrock (m); None = no bedrock (nbedrock 20), ``inf`` per site likewise.
    config : ForcingConfig
    validate : bool
        Also run :meth:`Forcing.validate` on the result. Off by default: the inputs are
        validated and the derivation keeps every field in range by construction (a cheap NumPy
        finiteness check still runs); ``validate`` costs ~3× the derivation itself.

    Returns
    -------
    Forcing
        Batch of N sites (float64 tensors). Inputs assume a steady state
        (litterfall = NPP, floored at ``min_npp_g_m2_yr``); ``alt_m`` uses the ``"cesm"``
        convention of :func:`active_layer_depth_m`.

    Notes
    -----
    The result holds five [N, 12, 20] float64 fields, ~10 kB per site (plus transient work
    arrays of similar size): derive large grids in chunks (e.g. 50 000 cells ≈ 0.5 GB), as the
    Dask-chunked mapping does. Cost is ~2–3 µs per site on one core (docs/model.md §5.2).

    Raises
    ------
    ValueError
        On wrong shapes, NaNs, kelvin temperatures, negative precipitation or NPP, latitudes
        outside ±90° or land-cover codes outside 0–16, naming the argument and the rows.
    """
    t = as_float_array("air_temp_c", air_temp_c, (None, N_MONTHS))
    n = t.shape[0]
    check_celsius("air_temp_c", t)
    p = as_float_array("precip_mm", precip_mm, (n, N_MONTHS))
    check_nonnegative("precip_mm", p)
    lat = as_float_array("latitude_deg", latitude_deg, (n,))
    out_of_range = np.abs(lat) > 90
    if out_of_range.any():
        raise ValueError(f"latitude_deg must lie in [-90, 90] degrees at {rows_text(out_of_range)}")
    lc = np.asarray(land_cover)
    if lc.shape != (n,):
        raise ValueError(f"land_cover must have shape [{n}] (one IGBP code per row of air_temp_c); got {lc.shape}")
    lc = land_cover_codes(lc)

    if npp_g_m2_yr is None:
        npp = miami_npp_g_m2_yr(t.mean(1), p.sum(1), config) * np.asarray(config.npp_cover_factor)[lc]
    else:
        npp = as_float_array("npp_g_m2_yr", npp_g_m2_yr, (n,))
        check_nonnegative("npp_g_m2_yr", npp)
    npp = np.maximum(npp, config.min_npp_g_m2_yr)
    inputs = npp[:, None] * litter_split(lc, config)

    soil_t = soil_temperature_k(t, NODE_M, config)
    alt = active_layer_depth_m(soil_t, NODE_M, convention="cesm")
    # Steady state under a repeating climatology: last year's maximum thaw depth is this year's,
    # so ALTMAX_LASTYEAR (which alone decides CLM5's input profile) is the annual maximum.
    altmax_lastyear = alt.max(1)
    pet = pet_thornthwaite_mm(t, lat)
    w = water_scalar_from_climate(p, pet, NODE_M, config, land_cover=lc)
    o = oxygen_scalar(lc, NODE_M, config)
    nb = nbedrock_from_depth(bedrock_depth_m, n)
    fields = {"inputs_g_m2_yr": inputs, "soil_temp_k": soil_t, "water_scalar": w, "oxygen_scalar": o,
              "nitrogen_scalar": nitrogen_scalar(n, config), "alt_m": alt, "nbedrock": nb,
              "altmax_lastyear_m": altmax_lastyear}
    for name in ("inputs_g_m2_yr", "alt_m", "altmax_lastyear_m"):
        arr = fields[name]
        # cannot happen with validated inputs; guards future edits. A sum is non-finite exactly when
        # an element is (the fields are bounded far below overflow) and costs no boolean temporary.
        # The [N, 12, 20] fields are finite by construction (a linear map of finite temperatures, a
        # clipped log of ratios ≥ 1e-12, constants) and covered by the tests; summing them cost 13 %
        # of the derivation.
        if not np.isfinite(arr.sum()):
            raise RuntimeError(f"derive_forcing produced non-finite {name!r} at {rows_text(~np.isfinite(arr.reshape(n, -1)).all(1))}")
    forcing = Forcing.from_numpy(**fields)
    if validate:
        forcing.validate()
    return forcing
