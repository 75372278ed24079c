"""A small, fixed set of example sites with hand-set forcing, for demos and smoke checks.

Climate-derived forcing lives in :mod:`socmap.forcing`; these columns only exercise the model
(temperate, boreal with permafrost, warm and dry, shallow bedrock).
"""

from __future__ import annotations

import numpy as np

from socmap.clm5.forcing import N_MONTHS, Forcing
from socmap.clm5.grid import N_LAYERS, NODE_M

EXAMPLE_SITES: dict[str, dict[str, float]] = {
    # name: mean air T (°C), annual amplitude (°C), moisture (0-1), NPP (g C m-2 yr-1), ALT (m), nbedrock
    "temperate forest": {"t_mean": 10.0, "t_amp": 12.0, "moist": 0.7, "npp": 600.0, "alt": 10.0, "nbedrock": 20},
    "boreal permafrost": {"t_mean": -6.0, "t_amp": 18.0, "moist": 0.8, "npp": 200.0, "alt": 0.8, "nbedrock": 20},
    "semi-arid grassland": {"t_mean": 14.0, "t_amp": 11.0, "moist": 0.3, "npp": 250.0, "alt": 10.0, "nbedrock": 20},
    "shallow soil over bedrock": {"t_mean": 8.0, "t_amp": 10.0, "moist": 0.6, "npp": 450.0, "alt": 10.0, "nbedrock": 9},
}


def example_forcing() -> tuple[list[str], Forcing]:
    """Forcing for :data:`EXAMPLE_SITES` (names, Forcing with B = 4)."""
    months = np.arange(N_MONTHS)
    damping = np.exp(-NODE_M / 2.0)  # annual temperature wave damped with depth (illustrative)
    rows = {k: [] for k in ("inputs_g_m2_yr", "soil_temp_k", "water_scalar", "oxygen_scalar", "nitrogen_scalar", "alt_m", "nbedrock")}
    for s in EXAMPLE_SITES.values():
        wave = s["t_amp"] * np.cos(2 * np.pi * (months - 6.5) / 12.0)
        t = 273.15 + s["t_mean"] + wave[:, None] * damping[None, :]
        rows["soil_temp_k"].append(t)
        rows["water_scalar"].append(np.full((N_MONTHS, N_LAYERS), s["moist"]))
        rows["oxygen_scalar"].append(np.ones((N_MONTHS, N_LAYERS)))
        rows["nitrogen_scalar"].append(np.full((N_MONTHS, N_LAYERS), 0.8))
        rows["alt_m"].append(np.full(N_MONTHS, s["alt"]))
        rows["nbedrock"].append(s["nbedrock"])
        rows["inputs_g_m2_yr"].append(s["npp"] * np.array([0.1, 0.3, 0.4, 0.2]))
    return list(EXAMPLE_SITES), Forcing.from_numpy(**{k: np.stack(v) for k, v in rows.items()})
