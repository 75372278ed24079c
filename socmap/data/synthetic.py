"""The synthetic CONUS twin: covariates, climate, true parameter fields and SOC profiles.

Everything is generated deterministically from one seed, so the truth is known and a fitted
model can be scored on parameter recovery and on functional-relationship recovery (ScIReN's
retrieval test, docs/model.md §8.2). Independent random streams are used for the covariate fields, the
truth, the site locations/profiles and the measurement noise, so e.g. asking for more sites does
not change the covariates or the truth.

Covariate fields are analytic functions of (lon, lat) — physically motivated trends (latitude,
elevation, distance to the Pacific crest line, the Gulf …) plus smooth random Fourier fields —
so the same seed gives the same landscape at every resolution.

Outputs of :func:`generate` (see :func:`write_synthetic`): ``cube.zarr``, ``truth.json``,
``sites.csv``, ``profiles.csv``, ``synth.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from socmap.fsutil import swap_into_place
from socmap.provenance import json_default, software_versions
from typing import Any

import numpy as np
import pandas as pd

from socmap.clm5.parameters import LOWER, NAMES, UPPER, resolve_subset
from socmap.data.cube import REGRID_REGENERATE, register_regenerator, to_grid
from socmap.data.covariates import covariate
from socmap.data.grid import CRS, conus_grid
from socmap.land_cover import IGBP_CLASSES
from socmap.truth import (
    EDGE_FORMULAS,
    EDGE_TYPES,
    P_FIXED,
    P_MAX,
    P_MIN,
    edge_shape,
    edge_value,
    scale_unit,
    true_p_from_covariates,
)

log = logging.getLogger(__name__)

TRUTH_VERSION = 1

#: Numeric covariates: name -> (units, long name). All are encoder inputs (physical units).
#: The twin's covariates as (units, long name), from the one covariate table.
COVARIATES: dict[str, tuple[str, str]] = {
    n: (covariate(n).units, covariate(n).long_name)
    for n in ("mat_c", "map_mm", "t_seasonality_c", "elevation_m", "clay_pct", "sand_pct",
              "bulk_density_g_cm3", "ph", "cec_cmol_kg", "npp_g_m2_yr", "aridity_index")
}
NUMERIC_COVARIATES: tuple[str, ...] = tuple(COVARIATES)

# ----------------------------------------------------------------------------------------
# smooth fields
# ----------------------------------------------------------------------------------------

def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _gauss(lon: np.ndarray, lat: np.ndarray, centre: tuple[float, float], width: tuple[float, float]) -> np.ndarray:
    return np.exp(-(((lon - centre[0]) / width[0]) ** 2) - ((lat - centre[1]) / width[1]) ** 2)


def _ridge(lon: np.ndarray, lat: np.ndarray, points: list[tuple[float, float]], width_deg: float) -> np.ndarray:
    """Gaussian ridge along a polyline: exp(-(d/w)^2), d the distance (degrees, lon scaled by cos lat)."""
    coslat = np.cos(np.deg2rad(lat))
    best = np.full(lon.shape, np.inf)
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        px, py = (lon - x0) * coslat, lat - y0
        sx, sy = (x1 - x0) * coslat, np.full_like(lat, y1 - y0)
        t = np.clip((px * sx + py * sy) / (sx * sx + sy * sy), 0.0, 1.0)
        d2 = (px - t * sx) ** 2 + (py - t * sy) ** 2
        best = np.minimum(best, d2)
    return np.exp(-best / width_deg**2)


def _fourier_field(rng: np.random.Generator, lon: np.ndarray, lat: np.ndarray, n_modes: int = 16,
                   wavelength_deg: tuple[float, float] = (4.0, 25.0)) -> np.ndarray:
    """A smooth random field with (analytically) zero mean and unit variance.

    Sum of ``n_modes`` plane waves with random directions, wavelengths (log-uniform in
    ``wavelength_deg``), phases and amplitudes; resolution independent.
    """
    wl = np.exp(rng.uniform(np.log(wavelength_deg[0]), np.log(wavelength_deg[1]), n_modes))
    ang = rng.uniform(0, 2 * np.pi, n_modes)
    phase = rng.uniform(0, 2 * np.pi, n_modes)
    amp = rng.uniform(0.5, 1.5, n_modes) * np.sqrt(wl)
    amp = amp / np.sqrt(0.5 * np.sum(amp**2))
    out = np.zeros(np.broadcast(lon, lat).shape)
    for k in range(n_modes):
        kx, ky = np.cos(ang[k]) * 2 * np.pi / wl[k], np.sin(ang[k]) * 2 * np.pi / wl[k]
        out += amp[k] * np.cos(kx * lon + ky * lat + phase[k])
    return out


# Cascade/Sierra crest line (lon, lat), north to south: west of it is the Pacific side.
_CREST = [(-121.5, 49.0), (-121.8, 45.0), (-121.7, 42.0), (-120.5, 39.5), (-118.5, 36.5), (-118.0, 35.3), (-116.8, 34.0), (-116.3, 32.5)]
_ROCKIES = [(-116.0, 49.0), (-113.5, 46.5), (-110.5, 44.3), (-107.0, 40.5), (-106.0, 37.0), (-105.8, 35.8)]
_COAST_RANGE = [(-123.8, 48.0), (-123.6, 44.0), (-123.5, 40.5), (-122.2, 37.5), (-120.8, 35.5), (-118.5, 34.3)]
_APPALACHIANS = [(-86.0, 33.8), (-84.0, 35.5), (-81.5, 37.0), (-79.5, 38.6), (-77.5, 40.5), (-75.0, 42.0), (-73.8, 43.8), (-71.5, 44.3), (-69.0, 45.5)]
_CITIES = [(-74.0, 40.7), (-118.25, 34.05), (-87.7, 41.85), (-95.4, 29.76), (-112.07, 33.45), (-75.16, 39.95),
           (-96.8, 32.78), (-84.39, 33.75), (-77.04, 38.9), (-71.06, 42.36), (-122.33, 47.6), (-80.2, 25.8)]


def _crest_lon(lat: np.ndarray) -> np.ndarray:
    lats = np.array([p[1] for p in _CREST])[::-1]
    lons = np.array([p[0] for p in _CREST])[::-1]
    return np.interp(lat, lats, lons)


def make_landscape(lon: np.ndarray, lat: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Covariates, monthly climate and land cover at points ``lon``, ``lat`` (1-D, degrees).

    Returns a dict with the :data:`NUMERIC_COVARIATES` (float64), ``land_cover`` (int16, IGBP),
    ``air_temp_c`` and ``precip_mm`` (``[12, ...]``, float32-representable float64: the values
    the cube stores). Deterministic in ``seed``; no land/water masking here.
    """
    from socmap.climate_forcing import miami_npp_g_m2_yr, pet_thornthwaite_mm

    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    if lon.ndim != 1 or lon.shape != lat.shape:
        raise ValueError(f"lon and lat must be 1-D arrays of equal length; got {lon.shape} and {lat.shape}")
    rng = np.random.default_rng([seed, 1])
    noise = {k: _fourier_field(rng, lon, lat) for k in ("elev", "temp", "map", "clay", "sand", "bd", "ph", "cec", "lc", "crop")}
    wet_noise = _fourier_field(rng, lon, lat, n_modes=24, wavelength_deg=(1.0, 4.0))
    seas_noise = _fourier_field(rng, lon, lat)

    # --- elevation (m): plains ramp, Rockies, plateaus, Sierra/Cascades, Appalachians
    west = _sigmoid((lon + 121.3) / 0.6)  # drops to the Pacific lowlands west of the crest
    rockies = _ridge(lon, lat, _ROCKIES, 1.1)
    sierra = _ridge(lon, lat, _CREST[:6], 0.45)
    coast = _ridge(lon, lat, _COAST_RANGE, 0.5)
    appal = _ridge(lon, lat, _APPALACHIANS, 1.2)
    elevation = (
        60.0
        + 1150.0 * _sigmoid((-101.0 - lon) / 2.5) * west
        + 1700.0 * rockies
        + 1500.0 * _gauss(lon, lat, (-110.5, 37.5), (3.2, 2.3))
        + 400.0 * _gauss(lon, lat, (-116.5, 40.5), (3.5, 3.0))
        - 950.0 * _gauss(lon, lat, (-114.5, 33.5), (2.5, 1.6))
        - 500.0 * _gauss(lon, lat, (-117.5, 45.5), (1.5, 1.5))
        + 2100.0 * sierra
        + 500.0 * coast
        + 850.0 * appal
        + 350.0 * _gauss(lon, lat, (-92.5, 36.3), (1.5, 1.0))
        + 200.0 * _gauss(lon, lat, (-103.6, 44.0), (0.8, 0.6))
        + 120.0 * noise["elev"]
    )
    elevation = np.maximum(elevation * (1.0 - 0.7 * _gauss(lon, lat, (-120.8, 37.5), (0.7, 2.5))), 0.0)

    # --- temperature (°C): latitude, lapse rate, desert heat, Pacific maritime moderation
    wc = _sigmoid((_crest_lon(lat) - lon) / 0.4)  # 1 on the Pacific side of the crest
    mat = (
        26.0 - 0.78 * (lat - 25.0) - 0.0045 * elevation
        + 3.0 * _gauss(lon, lat, (-113.0, 33.0), (4.0, 2.5))
        + 4.0 * wc * _sigmoid((lat - 37.0) / 2.5)
        + 0.7 * noise["temp"]
    )
    amp = (3.0 + 0.6 * (lat - 25.0)) * (1.0 - 0.58 * wc) + 0.4 * seas_noise + 1.5 * _gauss(lon, lat, (-112.0, 36.0), (5.0, 4.0))
    amp = np.maximum(amp, 2.0)
    months = np.arange(12).reshape((12,) + (1,) * lon.ndim)
    wave = np.cos(2 * np.pi * (months - 6.0) / 12.0)
    air_temp = (mat[None] + amp[None] * wave).astype(np.float32).astype(np.float64)

    # --- precipitation (mm yr-1): dry West, wet East and Gulf, very wet Pacific Northwest
    relief = 1700.0 * rockies + 850.0 * appal + 500.0 * coast + 2100.0 * sierra * wc
    annual = (
        230.0
        + 900.0 * _sigmoid((lon + 96.0) / 4.0)
        + 550.0 * _gauss(lon, lat, (-87.0, 30.5), (7.0, 3.5))
        + 500.0 * _gauss(lon, lat, (-91.0, 29.5), (6.0, 2.0))
        + wc * (150.0 + 1500.0 * _sigmoid((lat - 42.0) / 1.5))
        + 0.33 * relief
        - 180.0 * _sigmoid((lat - 44.0) / 1.5) * _sigmoid((lon + 102.0) / 3.0) * _sigmoid((-85.0 - lon) / 3.0)
    ) * np.exp(0.15 * noise["map"])
    annual = np.maximum(annual, 90.0)
    plains = (1.0 - wc) * _sigmoid((-88.0 - lon) / 3.0) * _sigmoid((lon + 112.0) / 2.0)
    seas = np.clip(-0.85 * wc + 0.5 * plains + 0.45 * _gauss(lon, lat, (-110.0, 32.5), (3.0, 2.5)) + 0.05, -0.9, 0.9)
    precip = (annual / 12.0)[None] * (1.0 + seas[None] * wave)
    precip = precip.astype(np.float32).astype(np.float64)

    mat_c = air_temp.mean(0)
    map_mm = precip.sum(0)
    t_seas = air_temp.std(0)

    # --- soils
    clay = (
        22.0 + 6.0 * noise["clay"]
        + 12.0 * _gauss(lon, lat, (-97.0, 31.5), (2.5, 4.0))
        + 10.0 * _gauss(lon, lat, (-90.8, 33.0), (1.0, 4.5))
        - 12.0 * _gauss(lon, lat, (-81.5, 28.5), (2.5, 3.0))
        - 10.0 * _gauss(lon, lat, (-101.0, 42.0), (2.0, 1.2))
        - 5.0 * _gauss(lon, lat, (-76.0, 36.0), (2.0, 3.0))
    )
    clay = np.clip(clay, 3.0, 60.0)
    sand = (
        72.0 - 1.15 * clay + 8.0 * noise["sand"]
        + 18.0 * _gauss(lon, lat, (-81.5, 28.5), (2.5, 3.5))
        + 20.0 * _gauss(lon, lat, (-101.0, 42.0), (2.0, 1.2))
        + 8.0 * _gauss(lon, lat, (-116.0, 39.0), (5.0, 4.0))
    )
    sand = np.clip(sand, 2.0, 97.0 - clay)
    bulk_density = np.clip(
        1.38 + 0.004 * (sand - 45.0) - 0.003 * (clay - 25.0) - 0.00012 * (map_mm - 700.0)
        - 0.004 * np.maximum(10.0 - mat_c, 0.0) + 0.05 * noise["bd"],
        0.85, 1.75,
    )
    ph = np.clip(5.1 + 3.0 * (1.0 - _sigmoid((map_mm - 650.0) / 170.0)) + 0.35 * noise["ph"], 4.2, 9.0)
    cec = np.clip(2.0 + 0.5 * clay + 1.6 * (ph - 5.0) + 1.5 * noise["cec"], 1.0, 60.0)
    npp = np.asarray(miami_npp_g_m2_yr(mat_c, map_mm), dtype=np.float64)
    pet = pet_thornthwaite_mm(air_temp.T, lat).sum(1)  # mm yr-1
    aridity = np.clip(map_mm / np.maximum(pet, 50.0), 0.0, 5.0)

    # --- land cover (IGBP); later rules override earlier ones
    n_lc, n_crop = noise["lc"], noise["crop"]
    lc = np.full(lon.shape, 10, dtype=np.int16)  # grassland
    lc[map_mm < 180.0 + 14.0 * np.maximum(mat_c, 0.0) + 40.0 * n_lc] = 7  # open shrubland (SW, Great Basin)
    east = lon > -97.0 + 1.5 * n_lc
    forest_e = east & (map_mm > 820.0 + 80.0 * n_lc)
    lc[forest_e] = 4  # deciduous broadleaf
    lc[forest_e & (lat > 43.3 + 0.6 * n_lc)] = 5  # mixed (north woods, New England)
    lc[forest_e & (lat < 33.8 + 0.8 * n_lc) & (lon > -95.5)] = 1  # southern pines
    lc[(wc > 0.5) & (map_mm > 750.0) & (lat > 39.0)] = 1  # Pacific NW conifers
    lc[(elevation > 2000.0 + 250.0 * n_lc) & (map_mm > 420.0)] = 1  # montane conifers
    lc[(wc > 0.5) & (lat < 39.0) & (map_mm > 300.0) & (map_mm < 800.0)] = 8  # California oak woodland
    lc[(wc > 0.5) & (lat < 35.5) & (map_mm < 600.0) & (elevation > 150.0)] = 6  # chaparral
    lc[(~forest_e) & (lon > -100.0) & (lon < -94.5) & (lat < 37.5) & (map_mm > 620.0)] = 9  # savanna, Cross Timbers
    corn = (lon > -98.5) & (lon < -82.0) & (lat > 37.5) & (lat < 46.0) & (map_mm > 550.0) & (map_mm < 1250.0)
    lc[corn & (n_crop > -0.5)] = 12
    lc[corn & (n_crop <= -0.5) & (n_crop > -1.2)] = 14
    lc[(_gauss(lon, lat, (-120.5, 37.3), (0.5, 1.7)) > 0.5) & (elevation < 300.0)] = 12  # Central Valley
    lc[_gauss(lon, lat, (-90.8, 33.5), (0.6, 2.3)) > 0.5] = 12  # Mississippi delta
    lc[(lat > 30.0) & (lat < 36.0) & (lon > -88.0) & (lon < -77.0) & (n_crop > 1.3)] = 14  # southeastern mosaic
    lc[(map_mm < 200.0) | (elevation > 3500.0)] = 16  # barren: driest desert, high peaks
    wet = (wet_noise > 2.1) | (_gauss(lon, lat, (-80.8, 25.9), (0.5, 0.6)) > 0.4)
    wet |= _gauss(lon, lat, (-91.5, 29.8), (1.6, 0.35)) > 0.5
    wet |= (_gauss(lon, lat, (-99.0, 47.5), (3.0, 1.5)) > 0.3) & (wet_noise > 1.2)
    lc[wet] = 11
    urban = np.zeros(lon.shape, dtype=bool)
    for cx, cy in _CITIES:
        urban |= ((lon - cx) * np.cos(np.deg2rad(cy))) ** 2 + (lat - cy) ** 2 < 0.15**2
    lc[urban] = 13

    return {
        "mat_c": mat_c, "map_mm": map_mm, "t_seasonality_c": t_seas, "elevation_m": elevation,
        "clay_pct": clay, "sand_pct": sand, "bulk_density_g_cm3": bulk_density, "ph": ph,
        "cec_cmol_kg": cec, "npp_g_m2_yr": npp, "aridity_index": aridity,
        "land_cover": lc, "air_temp_c": air_temp, "precip_mm": precip,
    }


# ----------------------------------------------------------------------------------------
# truth: covariate -> parameter functions (ScIReN retrieval test)
# ----------------------------------------------------------------------------------------

def make_truth(covariates: dict[str, np.ndarray], targets: tuple[str, ...], seed: int,
               candidates: tuple[str, ...] = NUMERIC_COVARIATES) -> dict[str, Any]:
    """Draw the true covariate→parameter functions and rescale them over ``covariates``.

    ``covariates`` maps each name in ``candidates`` to its values over the land grid (1-D).
    Each target gets 2 distinct covariates with random edge types and coefficients
    c·f(a·x+b)+d, a, b, c, d ~ U(−1, 1), x the min–max scaled covariate; step 1 standardises
    each edge over the grid, step 2 maps the parameter's sum onto exactly [0.2, 0.8]
    (docs/model.md §8.2). Returns the ``truth.json`` content.
    """
    rng = np.random.default_rng([seed, 2])
    ranges = {n: (float(np.min(covariates[n])), float(np.max(covariates[n]))) for n in candidates}
    params: dict[str, Any] = {}
    for name in targets:
        picks = rng.choice(len(candidates), size=2, replace=False)
        edges = []
        for ci in picks:
            cov = candidates[int(ci)]
            x = scale_unit(covariates[cov], *ranges[cov])
            for _ in range(100):
                code = int(rng.integers(1, 6))
                a, b, c, d = (float(v) for v in rng.uniform(-1.0, 1.0, 4))
                raw = c * edge_shape(EDGE_TYPES[code], a * x + b) + d
                mu, sd = float(raw.mean()), float(raw.std())
                if sd > 1e-9:
                    break
            else:  # pragma: no cover - probability ~0
                raise RuntimeError(f"could not draw a non-constant edge for {name}/{cov}")
            edges.append({
                "covariate": cov, "type": EDGE_TYPES[code], "type_code": code, "formula": EDGE_FORMULAS[EDGE_TYPES[code]],
                "a": a, "b": b, "c": c / sd, "d": (d - mu) / sd,
                "x_min": ranges[cov][0], "x_max": ranges[cov][1],
                "raw_coefficients": {"a": a, "b": b, "c": c, "d": d},
            })
        total = sum(edge_value(e, covariates[e["covariate"]]) for e in edges)
        lo, hi = float(total.min()), float(total.max())
        scale = (P_MAX - P_MIN) / (hi - lo)
        shift = P_MIN - (P_MAX - P_MIN) * lo / (hi - lo)
        for e in edges:
            e["c"] *= scale
            e["d"] = e["d"] * scale + shift / len(edges)
        mads = [float(np.mean(np.abs(v - v.mean()))) for v in (edge_value(e, covariates[e["covariate"]]) for e in edges)]
        for e, m in zip(edges, mads):
            e["importance"] = m / sum(mads)
        params[name] = {"index": NAMES.index(name), "edges": edges}
    return {
        "version": TRUTH_VERSION,
        "seed": int(seed),
        "targets": list(targets),
        "fixed_p": P_FIXED,
        "p_range": [P_MIN, P_MAX],
        "parameter_names": list(NAMES),
        "covariates": list(candidates),
        "covariate_range": {n: list(r) for n, r in ranges.items()},
        "edge_formulas": EDGE_FORMULAS,
        "edge_definition": "contribution = c * f(a * x + b) + d, x = clip((value - x_min) / (x_max - x_min), 0, 1); "
                           "p = sum of the parameter's edges (normalised units), other parameters fixed_p",
        "importance_definition": "mean absolute deviation of the edge over the land grid / sum over the parameter's edges",
        "parameters": params,
    }


# ----------------------------------------------------------------------------------------
# sites and profiles
# ----------------------------------------------------------------------------------------

def sample_layers(rng: np.random.Generator, n_sites: int, min_layers: int = 3, max_layers: int = 10,
                  thickness_m: tuple[float, float] = (0.05, 0.30)) -> list[np.ndarray]:
    """Contiguous horizons from the surface: per site an array of interfaces [0, b1, …, bn] (m).

    3–10 layers, each 5–30 cm thick (rounded to 1 cm): profiles reach ~0.15–3 m, mostly ≤ 1.5 m.
    """
    n_layers = rng.integers(min_layers, max_layers + 1, n_sites)
    out = []
    for k in n_layers:
        dz = np.round(rng.uniform(*thickness_m, int(k)), 2)
        out.append(np.round(np.concatenate([[0.0], np.cumsum(dz)]), 2))
    return out


def simulate_soc(true_p: np.ndarray, forcing, depth_m: np.ndarray, batch: int = 50_000, progress=None) -> np.ndarray:
    """CLM5 steady-state SOC (g C m-3) at ``depth_m`` [N, L] for normalised parameters [N, 21].

    Non-finite simulations come back as NaN rows (the solver's warning is captured; the caller
    reports the count).
    """
    import torch

    from socmap.clm5 import interpolate_to_depths, soc_nodes, steady_state
    from socmap.clm5.parameters import to_physical

    n = true_p.shape[0]
    out = np.full(depth_m.shape, np.nan)
    for start in range(0, n, batch):
        sl = slice(start, min(n, start + batch))
        theta = to_physical(torch.as_tensor(true_p[sl], dtype=torch.float64))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.no_grad():
                pools = steady_state(theta, forcing.subset(sl))
                soc = interpolate_to_depths(soc_nodes(pools), torch.as_tensor(depth_m[sl], dtype=torch.float64))
        out[sl] = soc.numpy()
        if progress is not None:
            progress(sl.stop - sl.start)
    return out


# ----------------------------------------------------------------------------------------
# the generator
# ----------------------------------------------------------------------------------------

@dataclass
class SynthConfig:
    """Arguments of ``socmap synth``."""

    resolution_deg: float = 0.25
    n_sites: int = 2000
    seed: int = 0
    noise: float = 0.1
    params: str = "four"
    chunk: int = 256

    def targets(self) -> tuple[str, ...]:
        return resolve_subset(self.params)


@dataclass
class SynthResult:
    cube: Any  # xr.Dataset (in memory)
    truth: dict[str, Any]
    sites: pd.DataFrame
    profiles: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)


_ATTRS_TRUE_P = "normalised true parameter {name} (0-1 of its range)"


def build(config: SynthConfig, progress: bool = False) -> SynthResult:
    """Generate the synthetic twin in memory (see :func:`write_synthetic` to write it)."""
    import torch
    from tqdm.auto import tqdm

    from socmap.climate_forcing import derive_forcing

    if config.n_sites < 1:
        raise ValueError(f"--sites must be at least 1, not {config.n_sites}")
    if not config.noise >= 0:
        raise ValueError(f"--noise must be >= 0 (the sd of the log-normal noise), not {config.noise}")
    targets = config.targets()
    timings: dict[str, float] = {}
    bar = tqdm(total=5, desc="synth", unit="step", disable=not progress, leave=False)

    def step(name: str, t0: float) -> float:
        t1 = time.perf_counter()
        timings[name] = round(t1 - t0, 3)
        bar.set_postfix_str(name)
        bar.update(1)
        log.debug("synth step %s took %.2f s", name, t1 - t0)
        return t1

    t = time.perf_counter()
    # 1. grid + landscape (computed on land cells only: NaN elsewhere)
    ds = conus_grid(config.resolution_deg)
    mask = ds["land_mask"].values
    iy, ix = np.nonzero(mask)
    lon_c, lat_c = ds["x"].values[ix], ds["y"].values[iy]
    land = make_landscape(lon_c, lat_c, config.seed)
    ny, nx = mask.shape
    log.info("grid %.3g deg: %d x %d cells, %d land", config.resolution_deg, ny, nx, iy.size)
    t = step("landscape", t)

    # 2. truth
    truth = make_truth({k: land[k] for k in NUMERIC_COVARIATES}, targets, config.seed)
    cov_df = pd.DataFrame({k: land[k] for k in NUMERIC_COVARIATES})
    p_land = true_p_from_covariates(truth, cov_df)
    t = step("truth", t)

    # 3. cube
    def on_grid(v: np.ndarray, fill=np.nan, dtype=np.float64) -> np.ndarray:
        return to_grid(v, iy, ix, (ny, nx), fill, dtype)

    data_vars: dict[str, Any] = {}
    for k in NUMERIC_COVARIATES:
        units, long = COVARIATES[k]
        data_vars[k] = (("y", "x"), on_grid(land[k]), {"units": units, "long_name": long})
    data_vars["land_cover"] = (("y", "x"), on_grid(land["land_cover"], 0, np.int16), {
        "units": "1", "long_name": "IGBP land-cover class (0 = water / outside land)",
        "flag_values": list(IGBP_CLASSES), "flag_meanings": " ".join(v.replace(" ", "_").replace("/", "_") for v in IGBP_CLASSES.values()),
    })
    data_vars["air_temp_c"] = (("month", "y", "x"), on_grid(land["air_temp_c"], dtype=np.float32),
                               {"units": "degC", "long_name": "monthly mean air temperature"})
    data_vars["precip_mm"] = (("month", "y", "x"), on_grid(land["precip_mm"], dtype=np.float32),
                              {"units": "mm month-1", "long_name": "monthly precipitation"})
    theta_land = LOWER + p_land * (UPPER - LOWER)
    from socmap.clm5.parameters import PARAMETERS

    for j, name in enumerate(NAMES):
        data_vars[f"true_p_{name}"] = (("y", "x"), on_grid(p_land[:, j]), {"units": "1", "long_name": _ATTRS_TRUE_P.format(name=name)})
        data_vars[f"true_{name}"] = (("y", "x"), on_grid(theta_land[:, j]), {"units": PARAMETERS[j].unit, "long_name": f"true {PARAMETERS[j].description}"})
    cube = ds.assign(data_vars).assign_coords(month=("month", np.arange(1, 13), {"long_name": "calendar month", "units": "1"}))
    cube.attrs.update({
        "title": "socmap synthetic CONUS twin",
        "seed": int(config.seed),
        # the landscape is analytic in lon/lat: other resolutions are recomputed, not interpolated
        "regrid": REGRID_REGENERATE,
        "regrid_producer": __name__,
        "resolution_deg": float(config.resolution_deg),
        "numeric_covariates": list(NUMERIC_COVARIATES),
        "covariate_range_json": json.dumps(truth["covariate_range"]),
        "targets": list(targets),
        "Conventions": "CF-1.8",
    })
    cube = cube.rio.write_crs(CRS)
    for name in cube.data_vars:
        if cube[name].dims[-2:] == ("y", "x"):
            cube[name].encoding["grid_mapping"] = "spatial_ref"  # CF link to the CRS variable
    t = step("cube", t)

    # 4. sites: random land cells, jittered within the cell
    rng = np.random.default_rng([config.seed, 3])
    res = float(config.resolution_deg)
    n_land = iy.size
    pick = rng.choice(n_land, size=config.n_sites, replace=config.n_sites > n_land)
    lon_s = lon_c[pick] + rng.uniform(-0.49, 0.49, config.n_sites) * res
    lat_s = lat_c[pick] + rng.uniform(-0.49, 0.49, config.n_sites) * res
    interfaces = sample_layers(rng, config.n_sites)
    site_ids = np.array([f"syn{config.seed}-{i:06d}" for i in range(config.n_sites)])
    lmax = max(len(b) - 1 for b in interfaces)
    depth = np.full((config.n_sites, lmax), np.nan)
    for i, b in enumerate(interfaces):
        depth[i, : len(b) - 1] = 0.5 * (b[:-1] + b[1:])
    forcing = derive_forcing(land["air_temp_c"][:, pick].T, land["precip_mm"][:, pick].T, land["land_cover"][pick].astype(np.int64),
                             lat_s, npp_g_m2_yr=land["npp_g_m2_yr"][pick])
    with tqdm(total=config.n_sites, desc="CLM5 steady state", unit="site", disable=not progress, leave=False) as sbar:
        soc_true = simulate_soc(p_land[pick], forcing, depth, progress=sbar.update)
    valid_layers = ~np.isnan(depth)
    bad = ~np.all(np.isfinite(soc_true) | ~valid_layers, axis=1) | ~np.any(np.isfinite(soc_true), axis=1)
    if bad.any():
        log.warning("dropped %d of %d synthetic sites whose CLM5 simulation is not finite (ids %s%s)",
                    int(bad.sum()), config.n_sites, ", ".join(site_ids[bad][:5]), " …" if bad.sum() > 5 else "")
    else:
        log.info("all %d synthetic sites simulated finitely", config.n_sites)
    noise_rng = np.random.default_rng([config.seed, 4])
    factor = np.exp(noise_rng.normal(0.0, config.noise, depth.shape)) if config.noise > 0 else np.ones(depth.shape)
    soc_obs = soc_true * factor
    t = step("sites", t)

    keep = np.nonzero(~bad)[0]
    sites = pd.DataFrame({"site_id": site_ids[keep], "lon": lon_s[keep], "lat": lat_s[keep]})
    for k in NUMERIC_COVARIATES:
        sites[k] = land[k][pick[keep]]
    sites["land_cover"] = land["land_cover"][pick[keep]].astype(np.int64)
    for j, name in enumerate(NAMES):
        sites[f"true_p_{name}"] = p_land[pick[keep], j]
    n_lay = np.array([len(interfaces[i]) - 1 for i in keep], dtype=np.int64)
    rep = np.repeat(keep, n_lay)
    layer = np.concatenate([np.arange(k) for k in n_lay]) if keep.size else np.zeros(0, np.int64)
    tops = np.concatenate([interfaces[i][:-1] for i in keep]) if keep.size else np.zeros(0)
    bottoms = np.concatenate([interfaces[i][1:] for i in keep]) if keep.size else np.zeros(0)
    profiles = pd.DataFrame({
        "site_id": site_ids[rep], "lon": lon_s[rep], "lat": lat_s[rep], "top_m": tops, "bottom_m": bottoms,
        "depth_m": depth[rep, layer], "soc_g_m3": soc_obs[rep, layer], "source": "synthetic",
        "soc_true_g_m3": soc_true[rep, layer],
    })
    t = step("tables", t)
    bar.close()

    info = {
        "counts": {
            "grid_cells": int(ny * nx), "grid_shape": [int(ny), int(nx)], "land_cells": int(n_land),
            "sites_requested": int(config.n_sites), "sites_written": int(keep.size), "sites_dropped_nonfinite": int(bad.sum()),
            "layers": int(len(profiles)),
        },
        "timings_s": timings,
        "torch_threads": torch.get_num_threads(),
    }
    return SynthResult(cube=cube, truth=truth, sites=sites, profiles=profiles, info=info)


def write_synthetic(out: str | Path, config: SynthConfig | None = None, *, overwrite: bool = False,
                    progress: bool = False) -> dict[str, Any]:
    """Generate the twin and write it to ``out`` atomically; return the ``synth.json`` content.

    Files: ``cube.zarr`` (covariates, land cover, monthly climate, land mask and the true
    parameter fields on the grid; CRS EPSG:4326), ``truth.json``, ``sites.csv``,
    ``profiles.csv`` and ``synth.json``. Built in ``<out>.tmp-<pid>`` and renamed at the end.
    """
    config = config or SynthConfig()
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite to replace it")
    t0 = time.perf_counter()
    result = build(config, progress=progress)
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        t1 = time.perf_counter()
        cube = result.cube
        chunks = {"y": min(config.chunk, cube.sizes["y"]), "x": min(2 * config.chunk, cube.sizes["x"])}
        for name, var in cube.data_vars.items():
            if var.dims[-2:] == ("y", "x"):
                var.encoding["chunks"] = tuple(chunks.get(d, cube.sizes[d]) for d in var.dims)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            cube.to_zarr(tmp / "cube.zarr", mode="w", consolidated=True)
        (tmp / "truth.json").write_text(json.dumps(result.truth, indent=1, default=json_default) + "\n")
        result.sites.to_csv(tmp / "sites.csv", index=False)
        result.profiles.to_csv(tmp / "profiles.csv", index=False)
        result.info["timings_s"]["write"] = round(time.perf_counter() - t1, 3)
        result.info["timings_s"]["total"] = round(time.perf_counter() - t0, 3)
        meta = {
            "command": "socmap synth",
            "arguments": {**asdict(config), "out": str(out), "overwrite": overwrite},
            "seed": int(config.seed),
            "targets": result.truth["targets"],
            "versions": software_versions(),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": {
                "cube.zarr": "covariates, land_cover, air_temp_c/precip_mm (month, y, x), land_mask, true_p_<name>, true_<name>",
                "truth.json": "true covariate->parameter functions, scaling ranges and edge importances",
                "sites.csv": "one row per site: site_id, lon, lat, covariates, land_cover, true_p_<name>",
                "profiles.csv": "one row per layer: site_id, lon, lat, top_m, bottom_m, depth_m, soc_g_m3, source, soc_true_g_m3",
            },
            **result.info,
        }
        (tmp / "synth.json").write_text(json.dumps(meta, indent=1, default=json_default) + "\n")
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s: %d sites, %d layers in %.1f s", out, meta["counts"]["sites_written"], meta["counts"]["layers"], meta["timings_s"]["total"])
    return meta


@register_regenerator(__name__)
def regenerate_cube(cube, grid) -> tuple[Any, str]:
    """The twin's covariates, land cover and monthly climate recomputed on ``grid`` from ``cube``'s seed.

    The landscape is an analytic function of lon/lat, so this is exact at any resolution (used
    by :func:`socmap.data.cube.regrid_cube` for cubes with ``regrid = "regenerate"``).
    """
    seed = int(cube.attrs["seed"])
    mask = grid["land_mask"].values
    iy, ix = np.nonzero(mask)
    land = make_landscape(grid["x"].values[ix], grid["y"].values[iy], seed)
    shape = mask.shape
    data = {k: (("y", "x"), to_grid(land[k], iy, ix, shape), {"units": u, "long_name": ln}) for k, (u, ln) in COVARIATES.items()}
    data["land_cover"] = (("y", "x"), to_grid(land["land_cover"], iy, ix, shape, 0, np.int16), dict(cube["land_cover"].attrs))
    for k in ("air_temp_c", "precip_mm"):
        data[k] = (("month", "y", "x"), to_grid(land[k], iy, ix, shape, dtype=np.float32), dict(cube[k].attrs))
    new = grid.assign(data).assign_coords(month=("month", np.arange(1, 13)))
    return new, "regenerated (synthetic twin, seed %d)" % seed
