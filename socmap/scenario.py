"""Climate scenarios: a shift of the monthly climate, and the CLM5 forcing re-derived from it.

A :class:`Scenario` adds ΔT (°C) to each month's air temperature and multiplies each month's
precipitation by ``1 + Δ%/100``. The forcing is then derived from the shifted climate exactly
as for the present (:func:`socmap.climate_forcing.derive_forcing`): soil temperature and thaw
depth follow the air temperature, and the water scalar follows P/PET with Thornthwaite PET
responding to the warmer temperature.

Carbon inputs. The cube's NPP (the present inputs) is scaled by the Miami model's response to
the shift, ``NPP' = NPP · Miami(T̄ + ΔT̄, ΣP') / Miami(T̄, ΣP)`` (mean annual temperature and annual
precipitation), so the present map's inputs are kept where nothing changes and only the
climate response is modelled. With ``hold_inputs`` the inputs and their depth profile stay at
their present values (the profile's "frozen all year" switch is taken from the present climate),
which isolates the decomposition and transport response.

Scenario files are YAML::

    name: warm2-dry10
    warming_c: 2              # or 12 monthly values, January first
    precip_pct: [-10, -10, -10, -5, 0, 0, 0, 0, -5, -10, -10, -10]   # or one number
    hold_inputs: false
    years: 100                # optional transient (annual steps)
    ramp_years: 50            # forcing moves linearly from present to scenario over 50 years
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from socmap.clm5.forcing import N_MONTHS, Forcing
from socmap.clm5.operators import PreparedForcing, prepare_forcing
from socmap.climate_forcing import derive_forcing, miami_npp_g_m2_yr
from socmap.yaml_file import load_model

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


class ScenarioError(ValueError):
    """An invalid scenario definition (message meant for the user)."""


def _monthly(value, what: str) -> list[float]:
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if arr.size == 1:
        arr = np.repeat(arr, N_MONTHS)
    if arr.shape != (N_MONTHS,):
        raise ValueError(f"{what} must be one number or {N_MONTHS} monthly values (January first); got {arr.size}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} must be finite")
    return [float(v) for v in arr]


class Scenario(BaseModel):
    """A climate scenario (see the module docstring).

    Attributes
    ----------
    name : str
        Folder name of the scenario in the run (``runs/R/scenarios/NAME``).
    warming_c : list of 12 float
        Air-temperature change per month (°C).
    precip_pct : list of 12 float
        Precipitation change per month (%); ≥ −100.
    hold_inputs : bool
        Keep the carbon inputs and their depth profile at present values.
    years : int
        Length of the transient in years (0 = steady state only).
    ramp_years : int
        Years over which the forcing moves linearly from present to scenario (0 = step change).
    description : str
        Free text.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    warming_c: list[float] = Field(default_factory=lambda: [0.0] * N_MONTHS)
    precip_pct: list[float] = Field(default_factory=lambda: [0.0] * N_MONTHS)
    hold_inputs: bool = False
    years: int = Field(0, ge=0, le=10000)
    ramp_years: int = Field(0, ge=0)
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a usable scenario name: use letters, digits and _ . + - (max 64), "
                             "starting with a letter or digit")
        return v

    @field_validator("warming_c", mode="before")
    @classmethod
    def _warming(cls, v) -> list[float]:
        return _monthly(v, "warming_c")

    @field_validator("precip_pct", mode="before")
    @classmethod
    def _precip(cls, v) -> list[float]:
        out = _monthly(v, "precip_pct")
        if min(out) < -100:
            raise ValueError("precip_pct must be >= -100 % (precipitation cannot become negative)")
        return out

    @property
    def precip_factor(self) -> np.ndarray:
        """Multiplier of each month's precipitation, [12]."""
        return 1.0 + np.asarray(self.precip_pct) / 100.0

    @property
    def is_zero(self) -> bool:
        """True when the climate is unchanged (the scenario's steady state is the present map)."""
        return not any(self.warming_c) and not any(self.precip_pct)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "Scenario":
        """Read a scenario file (module docstring); ``overrides`` that are not None replace its values."""
        return load_model(cls, path, overrides, error=ScenarioError, what="scenario file",
                          help_hint="`socmap scenario --help`")


def shift_climate(air_temp_c: np.ndarray, precip_mm: np.ndarray, scenario: Scenario,
                  fraction: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Monthly climate [N, 12] (°C, mm month-1) shifted by ``fraction`` of the scenario's change."""
    t = np.asarray(air_temp_c, dtype=np.float64) + fraction * np.asarray(scenario.warming_c)[None, :]
    p = np.asarray(precip_mm, dtype=np.float64) * (1.0 + fraction * (scenario.precip_factor - 1.0))[None, :]
    return t, p


def npp_response(air_temp_c: np.ndarray, precip_mm: np.ndarray, shifted_temp_c: np.ndarray,
                 shifted_precip_mm: np.ndarray) -> np.ndarray:
    """Miami-model ratio NPP(shifted) / NPP(present) per cell, [N] (1 where the present NPP is 0)."""
    now = miami_npp_g_m2_yr(air_temp_c.mean(1), precip_mm.sum(1))
    new = miami_npp_g_m2_yr(shifted_temp_c.mean(1), shifted_precip_mm.sum(1))
    return np.where(now > 0, new / np.where(now > 0, now, 1.0), 1.0)


def cell_climate(cube, iy: np.ndarray, ix: np.ndarray) -> dict[str, np.ndarray]:
    """The cube's monthly climate [N, 12], land cover, NPP and latitude [N] at cells (iy, ix)."""
    import xarray as xr

    sel = cube[["air_temp_c", "precip_mm", "land_cover", "npp_g_m2_yr"]].isel(
        y=xr.DataArray(np.asarray(iy), dims="site"), x=xr.DataArray(np.asarray(ix), dims="site")).load()
    return {
        "air_temp_c": sel["air_temp_c"].transpose("site", "month").values.astype(np.float64),
        "precip_mm": sel["precip_mm"].transpose("site", "month").values.astype(np.float64),
        "land_cover": sel["land_cover"].values.astype(np.int64),
        "npp_g_m2_yr": sel["npp_g_m2_yr"].values.astype(np.float64),
        "lat_deg": cube["y"].values[np.asarray(iy)].astype(np.float64),
    }


def scenario_forcing(climate: dict[str, np.ndarray], scenario: Scenario, fraction: float = 1.0) -> Forcing:
    """CLM5 forcing of the cells of :func:`cell_climate` under ``fraction`` of the scenario.

    ``fraction = 0`` (or a zero scenario) gives exactly the present forcing of
    :func:`socmap.data.cube.cell_forcing`. With ``hold_inputs`` the inputs are the present ones.
    """
    t, p = shift_climate(climate["air_temp_c"], climate["precip_mm"], scenario, fraction)
    npp = climate["npp_g_m2_yr"]
    if not scenario.hold_inputs and fraction != 0.0 and not scenario.is_zero:
        npp = npp * npp_response(climate["air_temp_c"], climate["precip_mm"], t, p)
    return derive_forcing(t, p, climate["land_cover"], climate["lat_deg"], npp_g_m2_yr=npp)


def prepare_scenario(forcing: Forcing, present: PreparedForcing, hold_inputs: bool) -> PreparedForcing:
    """Prepared forcing of a scenario; with ``hold_inputs`` the present inputs and input profile switch."""
    prepared = prepare_forcing(forcing)
    if hold_inputs:
        prepared = replace(prepared, inputs_g_m2_day=present.inputs_g_m2_day, thawed=present.thawed)
    return prepared


def interpolate_forcing(present: Forcing, scenario: Forcing, fraction: float) -> Forcing:
    """Forcing a ``fraction`` of the way from present (0) to scenario (1), field by field, linearly.

    Every floating field (inputs, soil temperature, W, O, N, active-layer depth) moves linearly;
    the bedrock index is the same in both.
    """
    if fraction <= 0.0:
        return present
    if fraction >= 1.0:
        return scenario
    if not torch.equal(present.nbedrock, scenario.nbedrock):
        raise ValueError("present and scenario forcing must have the same bedrock layers")
    fields = {}
    for name, a in present.__dict__.items():
        b = getattr(scenario, name)
        fields[name] = a if not a.is_floating_point() else (1.0 - fraction) * a + fraction * b
    return Forcing(**fields)
