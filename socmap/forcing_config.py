"""Constants of the climate → CLM5 forcing derivation, each with its units and source.

:class:`ForcingConfig` gathers every number :mod:`socmap.climate_forcing` and
:mod:`socmap.soil_temperature` use (soil thermal diffusivity, the P/PET → water-potential map,
wetland anoxia, the nitrogen scalar, Miami NPP constants, litter quality per land-cover group), so
a user can override any of them in one place and the derivation itself holds no magic numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from socmap.land_cover import LITTER_GROUP_NAMES, N_IGBP_CLASSES

__all__ = ["SECONDS_PER_YEAR", "ForcingConfig", "LitterQuality", "metabolic_fraction"]

SECONDS_PER_YEAR = 365.25 * 86400.0


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
    lue_epsilon_g_mj : float, gC MJ-1
        Light-use efficiency of NPP per unit absorbed PAR of :func:`socmap.climate_forcing.lue_npp_g_m2_yr`:
        0.389, CASA's maximum NPP efficiency (Potter et al. 1993); with the NDVI-based fAPAR it puts
        the CONUS median LUE NPP at ~500 gC m-2 yr-1, close to the Miami median (~480), with Mojave
        ~60, the Appalachians ~670 and the corn belt ~600.
    fapar_ndvi_slope, fapar_ndvi_offset : float
        fAPAR = slope · NDVI + offset (Myneni & Williams 1994: 1.1638, −0.1426).
    clearness_index : float, 0–1
        Mean ratio of surface to extraterrestrial shortwave radiation (0.5: a mean-cloud sky).
    par_fraction : float, 0–1
        PAR share of surface shortwave radiation (0.45–0.5; 0.45 used).
    lue_t_min_c, lue_t_opt_c : float, °C
        Thermal growing season of the LUE model: no production below ``lue_t_min_c`` (0 °C), full
        production above ``lue_t_opt_c`` (10 °C), linear between.
    litter_quality : tuple of (group, LitterQuality)
        Per land-cover group (see :data:`socmap.land_cover.LAND_COVER_GROUPS`). Woody debris fractions follow the
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
    lue_epsilon_g_mj: float = 0.389
    fapar_ndvi_slope: float = 1.1638
    fapar_ndvi_offset: float = -0.1426
    clearness_index: float = 0.5
    par_fraction: float = 0.45
    lue_t_min_c: float = 0.0
    lue_t_opt_c: float = 10.0
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
        if len(self.npp_cover_factor) != N_IGBP_CLASSES or not all(0 <= f <= 1 for f in self.npp_cover_factor):
            raise ValueError(f"ForcingConfig.npp_cover_factor needs {N_IGBP_CLASSES} values in [0, 1] (IGBP 0–16)")
        groups = dict(self.litter_quality)
        missing = [g for g in LITTER_GROUP_NAMES if g not in groups]
        if missing:
            raise ValueError(f"ForcingConfig.litter_quality lacks group(s) {missing}; need all of {LITTER_GROUP_NAMES}")
        for g, q in groups.items():
            q = LitterQuality(*q)
            fm = metabolic_fraction(q)
            if not (0 <= q.cwd_fraction <= 1 and 0 <= q.lignin_fraction and fm + q.lignin_fraction <= 1 + 1e-12):
                raise ValueError(
                    f"ForcingConfig.litter_quality[{g!r}] = {tuple(q)} gives metabolic {fm:.3f} + lignin "
                    f"{q.lignin_fraction:.3f} > 1 or a CWD fraction outside 0–1"
                )


def metabolic_fraction(q: LitterQuality) -> float:
    """Parton et al. (1987) metabolic fraction ``0.85 - 0.018 L/N``, clipped to [0, 1]."""
    return float(np.clip(0.85 - 0.018 * q.lignin_to_n, 0.0, 1.0))

