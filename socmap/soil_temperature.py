"""Soil temperature from the monthly air-temperature cycle, and the thaw / active-layer depth.

The ground surface follows air temperature and heat conducts into a homogeneous half-space
(:func:`soil_temperature_k`); the deepest 0 °C isotherm of the thaw season gives the active-layer
depth CLM5 uses for cryoturbation (:func:`active_layer_depth_m`). Latent heat and snow or organic
insulation are ignored unless ``ForcingConfig.surface_offset_c`` is set, so thaw depths in
permafrost are upper-end values.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from socmap import climate_kernels
from socmap.clm5.forcing import N_MONTHS, T_FREEZE_K, batch_first
from socmap.clm5.grid import NODE_M
from socmap.forcing_config import ForcingConfig
from socmap.input_checks import as_float_array, check_celsius

__all__ = ["NO_PERMAFROST_ALT_M", "AltConvention", "active_layer_depth_m", "damping_depth_m",
           "soil_temperature_k", "thaw_depth_m"]

#: Column depth used as the "no permafrost" active-layer value (deeper than the 8.6 m column).
NO_PERMAFROST_ALT_M = 10.0


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
    air = as_float_array("air_temp_c", air_temp_c, (None, N_MONTHS))
    check_celsius("air_temp_c", air)
    z = np.atleast_1d(np.asarray(depth_m, dtype=np.float64))
    if z.ndim != 1 or (z < 0).any():
        raise ValueError(f"depth_m must be a 1-D array of non-negative depths (m); got {z}")
    op = _wave_operator(z, config.thermal_diffusivity_m2_s, config.period_s)
    offset = config.surface_offset_c if surface_offset_c is None else surface_offset_c
    offset = np.asarray(offset, dtype=np.float64)
    if offset.ndim == 1:
        offset = as_float_array("surface_offset_c", offset, (air.shape[0],))
    # computed sites innermost, [12, J, N], and returned as its batch-first view (clm5.forcing.batch_first)
    soil = climate_kernels.wave_response(op, air, np.broadcast_to(offset + T_FREEZE_K, (air.shape[0],)))
    return batch_first(soil)


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
    # one compiled pass over the sites-innermost layout the forcing derivation produces
    # (socmap.climate_kernels.thaw_depth; the arg-max and gather temporaries it replaces cost ~10x more)
    return climate_kernels.thaw_depth(np.moveaxis(t, 0, -1), z, T_FREEZE_K, NO_PERMAFROST_ALT_M)


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
            lat = as_float_array("latitude_deg", latitude_deg, (inst.shape[0],))
            south = lat < 0
            if south.any():  # thaw year from July to June
                shifted = np.maximum.accumulate(np.roll(inst[south], -6, axis=1), axis=1)
                run[south] = np.roll(shifted, 6, axis=1)
        return run
    raise ValueError(f"convention must be 'cesm', 'running_max' or 'instantaneous', not {convention!r}")
