"""Deterministic, physically shaped forcing for benchmarks (no data files needed)."""

from __future__ import annotations

import numpy as np
import torch

from socmap.clm5.forcing import Forcing, batch_first
from socmap.clm5.parameters import to_physical


def benchmark_inputs(n: int, seed: int = 0, sites_innermost: bool = True) -> tuple[torch.Tensor, Forcing]:
    """θ [n, 21] uniform in bounds and forcing for ``n`` sites: seasonal temperatures (some
    frozen), shallow and deep active layers, bedrock at varied depths.

    ``sites_innermost`` (default) stores the [n, 12, 20] fields as the batch-first views of
    [12, 20, n] arrays (:func:`socmap.clm5.forcing.batch_first`), the layout the mapping pipeline
    hands to ``prepare_forcing`` (``socmap.climate_forcing.derive_forcing``); ``False`` gives
    contiguous batch-first arrays. The values are the same either way.
    """
    rng = np.random.default_rng(seed)
    months = np.arange(12)
    mean_c = rng.uniform(-8.0, 22.0, n)
    amp = rng.uniform(3.0, 18.0, n)
    damping = np.exp(-np.linspace(0.01, 8.0, 20)[None, :] / 2.0)
    wave = np.cos(2 * np.pi * (months - 6.5) / 12.0)
    temp = 273.15 + mean_c[:, None, None] + amp[:, None, None] * wave[None, :, None] * damping[:, None, :]
    alt = np.where(mean_c[:, None] < 0, rng.uniform(0.3, 2.5, (n, 12)), 10.0)
    inputs = rng.uniform(50.0, 800.0, (n, 1)) * rng.dirichlet([2, 3, 3, 2], n)
    fields = {
        "soil_temp_k": temp,
        "water_scalar": rng.uniform(0.05, 0.9, (n, 12, 20)),
        "oxygen_scalar": rng.uniform(0.5, 1.0, (n, 12, 20)),
        "nitrogen_scalar": rng.uniform(0.3, 1.0, (n, 12, 20)),
    }
    if sites_innermost:
        fields = {k: batch_first(np.ascontiguousarray(np.moveaxis(v, 0, -1))) for k, v in fields.items()}
    forcing = Forcing.from_numpy(
        inputs_g_m2_yr=inputs,
        alt_m=alt,
        nbedrock=np.where(rng.random(n) < 0.8, 20, rng.integers(4, 20, n)),
        **fields,
    )
    p = torch.as_tensor(rng.random((n, 21)), dtype=torch.float64)
    return to_physical(p), forcing
