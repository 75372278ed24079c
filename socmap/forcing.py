"""CLM5 forcing derived from climate and land cover, or read from a CESM2-style file.

The CLM5 soil-carbon model (:mod:`socmap.clm5`) needs, per site, annual litter/CWD inputs, and
monthly per-layer soil temperature, water, oxygen and nitrogen scalars, the active-layer depth and
the bedrock layer (spec §1.5, §1.7, §3; container :class:`socmap.clm5.forcing.Forcing`). BINN and
ScIReN take all of these from a CESM2 run (:func:`read_cesm2_forcing`). Most users only have
monthly air-temperature and precipitation climatologies plus a land-cover map, so
:func:`derive_forcing` builds the same container from those with simple, documented physics:

========================  ====================================================================
forcing field             derivation (function)
========================  ====================================================================
``soil_temp_k``           air-temperature cycle propagated into a homogeneous half-space by
                          heat conduction: every harmonic is damped as ``exp(-z/d)`` and
                          lagged by ``z/d`` radians, ``d = sqrt(2κ/ω)``
                          (:func:`damping_depth_m`, :func:`soil_temperature_k`)
``water_scalar``          monthly P/PET moisture ratio (Thornthwaite PET,
                          :func:`pet_thornthwaite_mm`), blended with depth into the annual ratio
                          (:func:`water_scalar`)
``oxygen_scalar``         1, except below a shallow water table in permanent wetlands (IGBP 11)
                          where it is CLM's anaerobic floor ``mino2lim`` (:func:`oxygen_scalar`)
``nitrogen_scalar``       a constant FPI (:func:`nitrogen_scalar`)
``alt_m``                 deepest 0 °C isotherm of the thaw season from the soil-temperature
                          profile (:func:`thaw_depth_m`, :func:`active_layer_depth_m`)
``nbedrock``              layers whose bottom lies above the bedrock depth
                          (:func:`nbedrock_from_depth`)
``inputs_g_m2_yr``        steady state, litterfall = NPP: Miami NPP (:func:`miami_npp_g_m2_yr`)
                          or a user NPP, split by land cover (:func:`litter_split`)
========================  ====================================================================

Every constant is a field of :class:`ForcingConfig`, with its units and source. Everything is
vectorised over sites (no Python loop over cells); shapes follow the batch-first contract
(sites, months, layers).

Known simplifications (documented, not hidden): the soil-temperature model ignores latent heat
and snow/organic insulation unless ``surface_offset_c`` is set, so thaw depths in permafrost
are upper-end values; the water scalar is an index of climatic wetness, not a soil-water
balance and is not reduced in frozen layers (the temperature scalar's frozen branch already
slows decomposition there); NPP from the Miami model is climatic potential NPP.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import Literal, NamedTuple

import numpy as np

from socmap.clm5.forcing import N_MONTHS, Forcing
from socmap.clm5.grid import DZ_M, INTERFACE_BOTTOM_M, N_LAYERS, NODE_M

__all__ = [
    "CESM2_VARIABLES",
    "DAYS_IN_MONTH",
    "IGBP_CLASSES",
    "LAND_COVER_GROUPS",
    "LitterQuality",
    "ForcingConfig",
    "active_layer_depth_m",
    "damping_depth_m",
    "daylength_h",
    "derive_forcing",
    "land_cover_group",
    "litter_split",
    "miami_npp_g_m2_yr",
    "nbedrock_from_depth",
    "nitrogen_scalar",
    "oxygen_scalar",
    "pet_thornthwaite_mm",
    "read_cesm2_forcing",
    "soil_temperature_k",
    "thaw_depth_m",
    "water_scalar",
]

T_FREEZE_K = 273.15
#: Days in each month of a 365-day year.
DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=float)
#: Day of year of the middle of each month (365-day year).
MID_MONTH_DOY = np.cumsum(DAYS_IN_MONTH) - DAYS_IN_MONTH / 2.0 + 0.5
#: Column depth used as the "no permafrost" active-layer value (deeper than the 8.6 m column).
NO_PERMAFROST_ALT_M = 10.0
SECONDS_PER_YEAR = 365.25 * 86400.0

#: IGBP classes of MODIS MCD12C1 (code → name).
IGBP_CLASSES: dict[int, str] = {
    0: "water", 1: "evergreen needleleaf forest", 2: "evergreen broadleaf forest",
    3: "deciduous needleleaf forest", 4: "deciduous broadleaf forest", 5: "mixed forest",
    6: "closed shrubland", 7: "open shrubland", 8: "woody savanna", 9: "savanna",
    10: "grassland", 11: "permanent wetland", 12: "cropland", 13: "urban and built-up",
    14: "cropland/natural vegetation mosaic", 15: "snow and ice", 16: "barren",
}
#: IGBP class code → litter-quality group used by :func:`litter_split`.
LAND_COVER_GROUPS: dict[int, str] = {
    0: "other", 1: "forest", 2: "forest", 3: "forest", 4: "forest", 5: "forest",
    6: "shrub_savanna", 7: "shrub_savanna", 8: "shrub_savanna", 9: "shrub_savanna",
    10: "grass", 11: "wetland", 12: "crop", 13: "other", 14: "crop", 15: "other", 16: "other",
}
_GROUP_NAMES = ("forest", "shrub_savanna", "grass", "wetland", "crop", "other")
_N_CLASSES = len(IGBP_CLASSES)


class LitterQuality(NamedTuple):
    """Litter quality of one land-cover group.

    Attributes
    ----------
    cwd_fraction : float
        Fraction of litterfall that is coarse woody debris (stems, branches, coarse roots), 0–1.
    lignin_fraction : float
        Lignin mass fraction of the non-woody (leaf + fine-root) litter, 0–1.
    lignin_to_n : float
        Lignin:nitrogen mass ratio of that litter (dimensionless); sets the metabolic fraction
        ``0.85 - 0.018 L/N`` (Parton et al. 1987, CENTURY).
    """

    cwd_fraction: float
    lignin_fraction: float
    lignin_to_n: float


@dataclass(frozen=True)
class ForcingConfig:
    """Constants of the climate → CLM5 forcing derivation (all overridable).

    Soil temperature
    ----------------
    thermal_diffusivity_m2_s : float, m2 s-1
        Soil thermal diffusivity κ of the damped annual wave. 5e-7 is mid-range for moist mineral
        soil (loam/clay 0.4–0.8e-6, dry sand ~0.2e-6, peat ~0.1e-6; Hillel 1982 *Introduction to
        Soil Physics* Table 12.3; Campbell & Norman 1998 ch. 8) and gives an annual damping depth
        of 2.24 m.
    period_s : float, s
        Period of the fundamental harmonic: one (Julian) year, 365.25 × 86400 s.
    surface_offset_c : float, °C
        Insulation hook: added to the mean soil temperature at every depth (the "surface offset"
        of the TTOP permafrost model, Smith & Riseborough 1996: snow warms the mean ground
        surface by 0–5 °C). 0 = ground surface follows air temperature.

    Water
    -----
    pet_floor_mm : float, mm month-1
        Floor on PET in the P/PET ratio (Thornthwaite PET is 0 below 0 °C; a floor keeps the ratio
        finite: cold months count as wet).
    moisture_ratio_wet : float, dimensionless
        P/PET at which the soil is taken to sit at field capacity (1.0 = precipitation meets
        evaporative demand, the natural "no deficit" point).
    psi_field_capacity_mpa, psi_exponent : float
        Soil water potential at field capacity (−0.033 MPa, the standard value) and the exponent
        b of ψ = ψ_fc · (r / moisture_ratio_wet)^(−b) mapping the wetness ratio r to a potential.
    psi_min_mpa, psi_max_mpa : float
        CLM's limits of the water scalar (Andrén & Paustian 1987 as in CLM4.5/5, minpsi −2 MPa,
        maxpsi −0.002 MPa): W = log(ψmin/ψ) / log(ψmin/ψmax). At field capacity W ≈ 0.59, so, as
        in CESM2's W_SCALAR, soils are water-limited unless wetter than field capacity.
    water_scalar_floor : float, 0–1
        Minimum water scalar (residual decomposition in dry soil after episodic rain and dew);
        keeps the steady state of hyper-arid cells finite.
    moisture_memory_depth_m : float, m
        e-folding depth over which a layer's moisture ratio moves from the month's ratio (surface)
        to the annual ratio (deep soil integrates seasons). Rooting-zone scale (Jackson et al. 1996
        median root depth ~0.3–0.5 m).
    wetland_water_scalar : float, 0–1
        Water scalar of permanent wetlands (IGBP 11): saturated soil is not water limited in CLM
        (ψ above maxpsi gives W = 1); the excess-water limitation acts through the oxygen scalar.

    Oxygen
    ------
    wetland_water_table_m : float, m
        Water-table depth of permanent wetlands: layers whose node is deeper are anoxic.
    anoxic_oxygen_scalar : float, 0–1
        Oxygen scalar of anoxic layers: CLM's ``mino2lim`` = 0.2, the minimum anaerobic
        decomposition rate as a fraction of the aerobic rate (Riley et al. 2011, CLM4.5/5
        methane module).

    Nitrogen
    --------
    nitrogen_scalar : float, 0–1
        Constant fraction of potential immobilisation (``FPI_vr``) applied to the litter pools.
        0.7 is a typical mid-latitude value of CESM2/CLM5 BGC output (global FPI of CLM-CN lies
        around 0.5–0.9; Thornton et al. 2007, Koven et al. 2013); not fitted here.

    NPP and litter
    --------------
    miami_npp_max_g_dm : float, g dry matter m-2 yr-1
        Asymptotic NPP of the Miami model (Lieth 1975): 3000.
    miami_temp_a, miami_temp_b : float, -, °C-1
        Temperature limb ``3000 / (1 + exp(a - b T))``: a = 1.315, b = 0.119 (Lieth 1975).
    miami_precip_c : float, mm-1
        Precipitation limb ``3000 (1 - exp(-c P))``: c = 0.000664 (Lieth 1975).
    carbon_fraction : float, gC g-1 dry matter
        Carbon content of plant dry matter: 0.45 (typical of herbaceous and leaf tissue, Schlesinger
        & Bernhardt *Biogeochemistry*; 0.47–0.50 for wood). 0.45 is chosen because the Miami model
        overestimates NPP in the dry and cold limits; it is applied to all biomes.
    npp_cover_factor : tuple of 17 floats, 0–1
        Vegetated fraction applied to the *climatic* (Miami) NPP by IGBP class 0–16: 1 for
        vegetated classes, 0.5 urban (13; roughly half the area is sealed), 0.1 barren (16),
        0 water (0) and snow/ice (15). Not applied to a user-given NPP.
    min_npp_g_m2_yr : float, gC m-2 yr-1
        Floor on NPP so every cell has a positive input (a steady state needs one).
    litter_quality : tuple of (group, LitterQuality)
        Per land-cover group (see :data:`LAND_COVER_GROUPS`). Woody debris fractions follow the
        share of wood in NPP (forests 0.25, ~20–35 % stem + coarse-root production, Malhi et al.
        2011; shrub/savanna 0.10; wetland 0.05; herbaceous 0). Lignin fraction and lignin:N of
        leaf/root litter are typical values from litter-decomposition syntheses (Melillo et al.
        1982; Parton et al. 1987; Zhang et al. 2008): forest 0.22 & 25, shrub/savanna 0.18 & 20,
        grass 0.12 & 12, wetland (sedges, mosses) 0.20 & 25, crop residue 0.10 & 12; "other"
        (water, urban, snow/ice, barren) is grass-like.
    """

    thermal_diffusivity_m2_s: float = 5.0e-7
    period_s: float = SECONDS_PER_YEAR
    surface_offset_c: float = 0.0
    pet_floor_mm: float = 1.0
    moisture_ratio_wet: float = 1.0
    psi_field_capacity_mpa: float = -0.033
    psi_exponent: float = 2.0
    psi_min_mpa: float = -2.0
    psi_max_mpa: float = -0.002
    water_scalar_floor: float = 0.05
    moisture_memory_depth_m: float = 0.5
    wetland_water_scalar: float = 1.0
    wetland_water_table_m: float = 0.1
    anoxic_oxygen_scalar: float = 0.2
    nitrogen_scalar: float = 0.7
    miami_npp_max_g_dm: float = 3000.0
    miami_temp_a: float = 1.315
    miami_temp_b: float = 0.119
    miami_precip_c: float = 0.000664
    carbon_fraction: float = 0.45
    npp_cover_factor: tuple[float, ...] = (
        0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 0.0, 0.1,
    )
    min_npp_g_m2_yr: float = 1.0
    litter_quality: tuple[tuple[str, LitterQuality], ...] = (
        ("forest", LitterQuality(0.25, 0.22, 25.0)),
        ("shrub_savanna", LitterQuality(0.10, 0.18, 20.0)),
        ("grass", LitterQuality(0.0, 0.12, 12.0)),
        ("wetland", LitterQuality(0.05, 0.20, 25.0)),
        ("crop", LitterQuality(0.0, 0.10, 12.0)),
        ("other", LitterQuality(0.0, 0.12, 12.0)),
    )

    def __post_init__(self) -> None:
        positive = ("thermal_diffusivity_m2_s", "period_s", "pet_floor_mm", "moisture_ratio_wet",
                    "moisture_memory_depth_m", "miami_npp_max_g_dm", "carbon_fraction", "min_npp_g_m2_yr")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"ForcingConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("water_scalar_floor", "wetland_water_scalar", "anoxic_oxygen_scalar", "nitrogen_scalar"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"ForcingConfig.{name} is a 0–1 scalar, got {v!r}")
        if len(self.npp_cover_factor) != _N_CLASSES or not all(0 <= f <= 1 for f in self.npp_cover_factor):
            raise ValueError(f"ForcingConfig.npp_cover_factor needs {_N_CLASSES} values in [0, 1] (IGBP 0–16)")
        groups = dict(self.litter_quality)
        missing = [g for g in _GROUP_NAMES if g not in groups]
        if missing:
            raise ValueError(f"ForcingConfig.litter_quality lacks group(s) {missing}; need all of {_GROUP_NAMES}")
        for g, q in groups.items():
            q = LitterQuality(*q)
            fm = _metabolic_fraction(q)
            if not (0 <= q.cwd_fraction <= 1 and 0 <= q.lignin_fraction and fm + q.lignin_fraction <= 1 + 1e-12):
                raise ValueError(
                    f"ForcingConfig.litter_quality[{g!r}] = {tuple(q)} gives metabolic {fm:.3f} + lignin "
                    f"{q.lignin_fraction:.3f} > 1 or a CWD fraction outside 0–1"
                )


def _metabolic_fraction(q: LitterQuality) -> float:
    """Parton et al. (1987) metabolic fraction ``0.85 - 0.018 L/N``, clipped to [0, 1]."""
    return float(np.clip(0.85 - 0.018 * q.lignin_to_n, 0.0, 1.0))


# ----------------------------------------------------------------------------- validation helpers


def _rows(mask: np.ndarray) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(map(str, idx[:10])) + (" …" if idx.size > 10 else "")
    return f"{idx.size} row(s): indices {shown}"


def _as_float(name: str, a: np.ndarray, shape: tuple[int | None, ...], *, allow_inf: bool = False) -> np.ndarray:
    """Float64 array with the expected shape (None = any length) and no NaNs; rows named in errors."""
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric; {exc}") from None
    if arr.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, arr.shape)):
        want = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}; got {arr.shape}")
    bad = ~np.isfinite(arr) if not allow_inf else np.isnan(arr)
    if bad.any():
        rows = bad.reshape(arr.shape[0], -1).any(1) if arr.ndim else bad
        raise ValueError(f"{name} has NaN{'' if allow_inf else ' or infinite'} values at {_rows(np.atleast_1d(rows))}")
    return arr


def _check_celsius(name: str, t: np.ndarray) -> None:
    rows = t.reshape(t.shape[0], -1) if t.ndim else t.reshape(1, -1)
    hot = (rows > 100.0).any(1)
    if hot.any():
        raise ValueError(
            f"{name} exceeds 100 °C at {_rows(hot)}: the values look like kelvin; "
            "pass °C (subtract 273.15)"
        )
    cold = (rows < -100.0).any(1)
    if cold.any():
        raise ValueError(f"{name} is below -100 °C at {_rows(cold)}: expected monthly mean air temperature in °C")


def _check_nonnegative(name: str, a: np.ndarray) -> None:
    rows = a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, -1)
    neg = (rows < 0).any(1)
    if neg.any():
        raise ValueError(f"{name} has negative values at {_rows(neg)}")


def _land_cover_codes(land_cover: np.ndarray) -> np.ndarray:
    lc = np.asarray(land_cover)
    if lc.ndim != 1:
        raise ValueError(f"land_cover must have shape [N] (IGBP class codes); got {lc.shape}")
    lcf = lc.astype(np.float64)
    bad = ~np.isfinite(lcf) | (lcf != np.round(lcf)) | (lcf < 0) | (lcf >= _N_CLASSES)
    if bad.any():
        raise ValueError(
            f"land_cover must hold IGBP class codes 0–16 (MODIS MCD12C1); invalid values "
            f"{np.unique(lc[bad])[:5].tolist()} at {_rows(bad)} (mask nodata such as 255 first)"
        )
    return lcf.astype(np.int64)


# ----------------------------------------------------------------------------- soil temperature


def damping_depth_m(period_s: float, diffusivity: float) -> float:
    """Damping depth of a periodic temperature wave in a homogeneous half-space.

    Parameters
    ----------
    period_s : float
        Period of the wave (s); one year = 31 557 600 s.
    diffusivity : float
        Thermal diffusivity κ (m2 s-1).

    Returns
    -------
    float
        ``d = sqrt(2 κ / ω)`` with ``ω = 2π / period`` (m): the amplitude falls as ``exp(-z/d)`` and
        the phase lags by ``z/d`` radians (Carslaw & Jaeger 1959, §2.6). κ = 5e-7 m2 s-1 and one
        year give 2.24 m.
    """
    if not (period_s > 0 and diffusivity > 0):
        raise ValueError(f"period_s and diffusivity must be > 0; got {period_s!r}, {diffusivity!r}")
    omega = 2.0 * np.pi / period_s
    return float(np.sqrt(2.0 * diffusivity / omega))


def _wave_operator(depth_m: np.ndarray, diffusivity: float, period_s: float) -> np.ndarray:
    """Linear map [12 (air months), 12 (months), J (depths)] from the monthly air series to soil T.

    Each harmonic k of the 12-month series (period P/k) is multiplied by
    ``exp(-(1 + i) z / d_k)``, ``d_k = d_1 / sqrt(k)``: the exact periodic solution of the heat
    equation with the air series as the surface temperature. The mean (k = 0) passes unchanged.
    """
    z = np.asarray(depth_m, dtype=np.float64)
    k = np.arange(N_MONTHS // 2 + 1)
    d1 = damping_depth_m(period_s, diffusivity)
    with np.errstate(divide="ignore"):
        inv_d = np.where(k > 0, np.sqrt(k) / d1, 0.0)  # 1 / d_k
    factor = np.exp(-(1.0 + 1.0j) * z[:, None] * inv_d[None, :])  # [J, 7]
    basis = np.fft.rfft(np.eye(N_MONTHS), axis=1)  # [12 impulses, 7]
    resp = np.fft.irfft(basis[:, None, :] * factor[None], n=N_MONTHS, axis=-1)  # [12, J, 12]
    return np.ascontiguousarray(resp.transpose(0, 2, 1))  # [12 in, 12 out, J]


def soil_temperature_k(
    air_temp_c: np.ndarray,
    depth_m: np.ndarray = NODE_M,
    config: ForcingConfig = ForcingConfig(),
    *,
    surface_offset_c: np.ndarray | float | None = None,
) -> np.ndarray:
    """Monthly soil temperature at depth from the monthly air-temperature cycle.

    The ground surface follows air temperature (plus an optional insulation offset) and heat
    conducts into a homogeneous half-space: the annual mean is the same at every depth, and the
    annual harmonic is damped as ``A exp(-z/d)`` and lagged by ``z/d`` radians,
    ``d = sqrt(2κ/ω)`` (:func:`damping_depth_m`). Higher harmonics of the monthly series are
    damped faster (``d_k = d/sqrt(k)``); at z = 0 the air series is returned exactly. Latent
    heat of soil freezing is ignored.

    Parameters
    ----------
    air_temp_c : ndarray [N, 12]
        Monthly mean air temperature (°C), January first.
    depth_m : ndarray [J]
        Depths (m); default the 20 CLM5 node depths.
    config : ForcingConfig
        Uses ``thermal_diffusivity_m2_s``, ``period_s`` and ``surface_offset_c``.
    surface_offset_c : float or ndarray [N], optional
        Per-site insulation offset (°C) added to the mean; overrides ``config.surface_offset_c``.

    Returns
    -------
    ndarray [N, 12, J]
        Soil temperature (K).
    """
    air = _as_float("air_temp_c", air_temp_c, (None, N_MONTHS))
    _check_celsius("air_temp_c", air)
    z = np.atleast_1d(np.asarray(depth_m, dtype=np.float64))
    if z.ndim != 1 or (z < 0).any():
        raise ValueError(f"depth_m must be a 1-D array of non-negative depths (m); got {z}")
    op = _wave_operator(z, config.thermal_diffusivity_m2_s, config.period_s)
    soil = (air @ op.reshape(N_MONTHS, -1)).reshape(air.shape[0], N_MONTHS, z.size)
    offset = config.surface_offset_c if surface_offset_c is None else surface_offset_c
    offset = np.asarray(offset, dtype=np.float64)
    if offset.ndim == 1:
        offset = _as_float("surface_offset_c", offset, (air.shape[0],))[:, None, None]
    return soil + offset + T_FREEZE_K


# ----------------------------------------------------------------------------- frozen ground


def thaw_depth_m(soil_temp_k: np.ndarray, depth_m: np.ndarray = NODE_M) -> np.ndarray:
    """Instantaneous thaw depth per month: the first 0 °C isotherm below the surface.

    Scanning down from the top node, the first node at or below 273.15 K marks frozen ground;
    the isotherm is interpolated linearly between it and the thawed node above.

    Parameters
    ----------
    soil_temp_k : ndarray [N, 12, J]
        Soil temperature (K) at ``depth_m``.
    depth_m : ndarray [J]
        Node depths (m), increasing; default the CLM5 nodes.

    Returns
    -------
    ndarray [N, 12]
        Thaw depth (m): 0 where the top node is frozen, :data:`NO_PERMAFROST_ALT_M` (10 m, deeper
        than the column) where no node is frozen.
    """
    t = np.asarray(soil_temp_k, dtype=np.float64)
    z = np.asarray(depth_m, dtype=np.float64)
    if t.ndim != 3 or t.shape[-1] != z.size:
        raise ValueError(f"soil_temp_k must have shape [N, 12, {z.size}] (K); got {t.shape}")
    frozen = t <= T_FREEZE_K
    any_frozen = frozen.any(-1)
    first = np.argmax(frozen, axis=-1)  # index of the first frozen node (0 if none)
    above = np.maximum(first - 1, 0)
    t_hi = np.take_along_axis(t, above[..., None], -1)[..., 0]
    t_lo = np.take_along_axis(t, first[..., None], -1)[..., 0]
    z_hi, z_lo = z[above], z[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(t_hi > t_lo, (t_hi - T_FREEZE_K) / (t_hi - t_lo), 0.0)
    depth = z_hi + np.clip(frac, 0.0, 1.0) * (z_lo - z_hi)
    depth = np.where(first == 0, 0.0, depth)
    return np.where(any_frozen, depth, NO_PERMAFROST_ALT_M)


AltConvention = Literal["cesm", "running_max", "instantaneous"]


def active_layer_depth_m(
    soil_temp_k: np.ndarray,
    depth_m: np.ndarray = NODE_M,
    *,
    convention: AltConvention = "cesm",
    latitude_deg: np.ndarray | None = None,
) -> np.ndarray:
    """Monthly active-layer depth from the soil-temperature profile.

    Parameters
    ----------
    soil_temp_k : ndarray [N, 12, J]
        Soil temperature (K).
    depth_m : ndarray [J]
        Node depths (m).
    convention : {"cesm", "running_max", "instantaneous"}
        ``"instantaneous"``: the month's thaw depth (:func:`thaw_depth_m`).
        ``"running_max"``: CLM's ``ALTMAX``, the maximum thaw depth so far in the year, reset in
        January (northern hemisphere) or July (southern; needs ``latitude_deg``).
        ``"cesm"`` (default): ``max(ALTMAX, ALTMAX_LASTYEAR)`` as the CLM5 forcing uses it; for a
        repeating climatology last year's maximum is this year's, so every month gets the annual
        maximum thaw depth.
    latitude_deg : ndarray [N], optional
        Only for ``"running_max"``; default northern hemisphere everywhere.

    Returns
    -------
    ndarray [N, 12]
        Active-layer depth (m); 10 m where no node freezes (no permafrost), 0 where frozen.
    """
    inst = thaw_depth_m(soil_temp_k, depth_m)
    if convention == "instantaneous":
        return inst
    if convention == "cesm":
        return np.repeat(inst.max(1, keepdims=True), N_MONTHS, axis=1)
    if convention == "running_max":
        run = np.maximum.accumulate(inst, axis=1)
        if latitude_deg is not None:
            lat = _as_float("latitude_deg", latitude_deg, (inst.shape[0],))
            south = lat < 0
            if south.any():  # thaw year from July to June
                shifted = np.maximum.accumulate(np.roll(inst[south], -6, axis=1), axis=1)
                run[south] = np.roll(shifted, 6, axis=1)
        return run
    raise ValueError(f"convention must be 'cesm', 'running_max' or 'instantaneous', not {convention!r}")


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
    depth = _as_float("bedrock_depth_m", bedrock_depth_m, (n,), allow_inf=True)
    neg = depth < 0
    if neg.any():
        raise ValueError(f"bedrock_depth_m must be >= 0 m (use np.inf for 'no bedrock'); negative at {_rows(neg)}")
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
    t = _as_float("air_temp_c", air_temp_c, (None, N_MONTHS))
    _check_celsius("air_temp_c", t)
    lat = _as_float("latitude_deg", latitude_deg, (t.shape[0],))
    tp = np.maximum(t, 0.0)
    heat = ((tp / 5.0) ** 1.514).sum(1, keepdims=True)
    a = 6.75e-7 * heat**3 - 7.71e-5 * heat**2 + 1.792e-2 * heat + 0.49239
    with np.errstate(divide="ignore", invalid="ignore"):
        mild = 16.0 * (10.0 * tp / np.where(heat > 0, heat, 1.0)) ** a
    hot = -415.85 + 32.24 * t - 0.43 * t**2
    pet = np.where(t <= 0, 0.0, np.where(t < 26.5, mild, hot))
    adjust = daylength_h(lat) / 12.0 * (DAYS_IN_MONTH / 30.0)[None, :]
    return np.maximum(pet, 0.0) * adjust


def clm_water_scalar(psi_mpa: np.ndarray, config: ForcingConfig = ForcingConfig()) -> np.ndarray:
    """CLM's water scalar from soil water potential ψ (MPa, negative): ``log(ψmin/ψ)/log(ψmin/ψmax)``,
    0 at or below ψmin = −2 MPa and 1 at or above ψmax = −0.002 MPa."""
    psi = np.minimum(np.asarray(psi_mpa, dtype=np.float64), config.psi_max_mpa)
    psi = np.maximum(psi, config.psi_min_mpa)
    return np.log(config.psi_min_mpa / psi) / np.log(config.psi_min_mpa / config.psi_max_mpa)


def water_scalar(
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
    as CLM does (:func:`clm_water_scalar`): ``W = log(ψmin/ψ) / log(ψmin/ψmax)``, clipped to
    ``[water_scalar_floor, 1]``. So W ≈ 0.59 where P = PET and reaches 1 only for r ≳ 5.5, like
    CESM2's W_SCALAR (a linear r → W map would saturate most humid soils and erase the
    sensitivity to the ``w_scaling`` parameter). Permanent wetlands (IGBP 11, when
    ``land_cover`` is given) get ``wetland_water_scalar``.

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
    p = _as_float("precip_mm", precip_mm, (None, N_MONTHS))
    e = _as_float("pet_mm", pet_mm, (p.shape[0], N_MONTHS))
    _check_nonnegative("precip_mm", p)
    _check_nonnegative("pet_mm", e)
    z = np.atleast_1d(np.asarray(depth_m, dtype=np.float64))
    monthly = p / np.maximum(e, config.pet_floor_mm)
    annual = p.sum(1) / np.maximum(e.sum(1), config.pet_floor_mm)
    wz = np.exp(-z / config.moisture_memory_depth_m)  # [J]
    ratio = monthly[:, :, None] * wz + annual[:, None, None] * (1.0 - wz)
    psi = config.psi_field_capacity_mpa * np.maximum(ratio / config.moisture_ratio_wet, 1e-12) ** (-config.psi_exponent)
    w = np.clip(clm_water_scalar(psi, config), config.water_scalar_floor, 1.0)
    if land_cover is not None:
        wet = _land_cover_codes(land_cover) == 11
        w[wet] = config.wetland_water_scalar
    return w


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
    lc = _land_cover_codes(land_cover)
    z = np.atleast_1d(np.asarray(depth_m, dtype=np.float64))
    anoxic = np.where(z > config.wetland_water_table_m, config.anoxic_oxygen_scalar, 1.0)  # [J]
    per_site = np.where((lc == 11)[:, None], anoxic[None, :], 1.0)  # [N, J]
    return np.repeat(per_site[:, None, :], N_MONTHS, axis=1)


def nitrogen_scalar(n: int, config: ForcingConfig = ForcingConfig(), n_layers: int = N_LAYERS) -> np.ndarray:
    """Nitrogen scalar (FPI), the constant ``config.nitrogen_scalar`` as [n, 12, n_layers]."""
    return np.full((n, N_MONTHS, n_layers), config.nitrogen_scalar, dtype=np.float64)


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


def land_cover_group(land_cover: np.ndarray) -> np.ndarray:
    """Litter-quality group name per site (see :data:`LAND_COVER_GROUPS`), [N] str."""
    lc = _land_cover_codes(land_cover)
    table = np.array([LAND_COVER_GROUPS[i] for i in range(_N_CLASSES)])
    return table[lc]


def _split_table(config: ForcingConfig) -> np.ndarray:
    """[17, 4] fractions (CWD, metabolic, cellulose, lignin) per IGBP class."""
    groups = {g: LitterQuality(*q) for g, q in config.litter_quality}
    rows = []
    for code in range(_N_CLASSES):
        q = groups[LAND_COVER_GROUPS[code]]
        fm = _metabolic_fraction(q)
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
    return _split_table(config)[_land_cover_codes(land_cover)]


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
    Dask-chunked mapping does. Cost is ~15 µs per site on one core.

    Raises
    ------
    ValueError
        On wrong shapes, NaNs, kelvin temperatures, negative precipitation or NPP, latitudes
        outside ±90° or land-cover codes outside 0–16, naming the argument and the rows.
    """
    t = _as_float("air_temp_c", air_temp_c, (None, N_MONTHS))
    n = t.shape[0]
    _check_celsius("air_temp_c", t)
    p = _as_float("precip_mm", precip_mm, (n, N_MONTHS))
    _check_nonnegative("precip_mm", p)
    lat = _as_float("latitude_deg", latitude_deg, (n,))
    out_of_range = np.abs(lat) > 90
    if out_of_range.any():
        raise ValueError(f"latitude_deg must lie in [-90, 90] degrees at {_rows(out_of_range)}")
    lc = np.asarray(land_cover)
    if lc.shape != (n,):
        raise ValueError(f"land_cover must have shape [{n}] (one IGBP code per row of air_temp_c); got {lc.shape}")
    lc = _land_cover_codes(lc)

    if npp_g_m2_yr is None:
        npp = miami_npp_g_m2_yr(t.mean(1), p.sum(1), config) * np.asarray(config.npp_cover_factor)[lc]
    else:
        npp = _as_float("npp_g_m2_yr", npp_g_m2_yr, (n,))
        _check_nonnegative("npp_g_m2_yr", npp)
    npp = np.maximum(npp, config.min_npp_g_m2_yr)
    inputs = npp[:, None] * litter_split(lc, config)

    soil_t = soil_temperature_k(t, NODE_M, config)
    alt = active_layer_depth_m(soil_t, NODE_M, convention="cesm")
    pet = pet_thornthwaite_mm(t, lat)
    w = water_scalar(p, pet, NODE_M, config, land_cover=lc)
    o = oxygen_scalar(lc, NODE_M, config)
    nb = nbedrock_from_depth(bedrock_depth_m, n)
    fields = {"inputs_g_m2_yr": inputs, "soil_temp_k": soil_t, "water_scalar": w, "oxygen_scalar": o,
              "nitrogen_scalar": nitrogen_scalar(n, config), "alt_m": alt, "nbedrock": nb}
    for name, arr in fields.items():
        if not np.isfinite(arr).all():  # cannot happen with validated inputs; guards future edits
            raise RuntimeError(f"derive_forcing produced non-finite {name!r} at {_rows(~np.isfinite(arr.reshape(n, -1)).all(1))}")
    forcing = Forcing.from_numpy(**fields)
    if validate:
        forcing.validate()
    return forcing


# ----------------------------------------------------------------------------- CESM2 files

#: CLM5 history variables read by :func:`read_cesm2_forcing` (spec §3).
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
    """Read CLM5 forcing from a CESM2-style NetCDF climatology (spec §3).

    Variables (CLM5 names; ``variable_map`` maps a CLM5 name to the name in the file):

    - ``CWD_INPUT_ACC_VECTOR``, ``LITR1/2/3_INPUT_ACC_VECTOR`` (site, month, layer) in
      gC m-3 month-1: multiplied by the layer thickness dz, summed over the 20 layers and over
      the 12 months (NaN months skipped) → ``inputs_g_m2_yr``. Without a layer dimension they
      are taken as column totals (gC m-2 month-1).
    - ``ALTMAX``, ``ALTMAX_LASTYEAR`` (site, month) m → ``alt_m = max`` of the two.
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
    alt = np.fmax(_monthly(arrays["ALTMAX"], "ALTMAX", path), _monthly(arrays["ALTMAX_LASTYEAR"], "ALTMAX_LASTYEAR", path))
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
