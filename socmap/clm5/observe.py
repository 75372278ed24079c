"""Observation operator: SOC at the nodes, at observed depths, and as stocks.

SOC excludes CWD and litter: it is S1 + S2 + S3 (gC m-3), docs/model.md §2.2, §2.10.
"""

from __future__ import annotations

import torch

from socmap.clm5 import grid

#: Standard stock intervals (m) reported on maps.
STOCK_INTERVALS_M: dict[str, tuple[float, float]] = {
    "soc_stock_0_30cm": (0.0, 0.3),
    "soc_stock_0_100cm": (0.0, 1.0),
}


def soc_nodes(pools: torch.Tensor) -> torch.Tensor:
    """SOC density at the 20 nodes, [B, 20] gC m-3, from pools [B, 7, 20]."""
    if pools.dim() != 3 or tuple(pools.shape[1:]) != (grid.N_POOLS, grid.N_LAYERS):
        raise ValueError(f"pools must have shape [B, 7, 20]; got {tuple(pools.shape)}")
    return pools[:, 4:7].sum(1)


def interpolate_to_depths(soc_g_m3: torch.Tensor, depth_m: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of node SOC to observed depths (docs/model.md §2.10, pitfall P7).

    Parameters
    ----------
    soc_g_m3 : Tensor [B, 20]
        SOC at the 20 node depths.
    depth_m : Tensor [B, L]
        Observation depths (m, positive down), NaN-padded for ragged profiles.

    Returns
    -------
    Tensor [B, L]
        SOC at each depth; constant extrapolation above the first node (0.01 m) and below the
        last (8.03 m); NaN where the depth is NaN.
    """
    if soc_g_m3.dim() != 2 or soc_g_m3.shape[1] != grid.N_LAYERS:
        raise ValueError(f"soc_g_m3 must have shape [B, 20]; got {tuple(soc_g_m3.shape)}")
    if depth_m.dim() != 2 or depth_m.shape[0] != soc_g_m3.shape[0]:
        raise ValueError(f"depth_m must have shape [B, L] with B={soc_g_m3.shape[0]}; got {tuple(depth_m.shape)}")
    depth_m = depth_m.to(soc_g_m3.dtype)
    missing = torch.isnan(depth_m)
    negative = (depth_m < 0) & ~missing
    if bool(negative.any()):
        rows = torch.nonzero(negative.any(1)).flatten().tolist()
        raise ValueError(
            f"observation depths must be >= 0 m (positive down); negative depths at profile(s) "
            f"{rows[:10]}. Shift organic horizons above the mineral surface to depth >= 0."
        )
    z = torch.where(missing, torch.zeros_like(depth_m), depth_m)
    nodes = grid.grid_tensor("NODE_M", soc_g_m3)
    below = torch.searchsorted(nodes, z.contiguous(), right=False).clamp(1, grid.N_LAYERS - 1)
    above = below - 1
    weight = ((z - nodes[above]) / (nodes[below] - nodes[above])).clamp(0.0, 1.0)
    y_above = torch.gather(soc_g_m3, 1, above)
    y_below = torch.gather(soc_g_m3, 1, below)
    y = y_above + weight * (y_below - y_above)
    return torch.where(missing, torch.full_like(y, float("nan")), y)


def stock_kg_m2(soc_g_m3: torch.Tensor, top_m: float, bottom_m: float) -> torch.Tensor:
    """SOC stock (kg C m-2) between two depths by exact integration of the layer densities.

    Each layer's density is constant over the layer, as in CLM5; partial layers count by
    their overlap with ``[top_m, bottom_m]``. ``soc_g_m3`` [B, 20] -> [B].
    """
    overlap = torch.as_tensor(grid.layer_overlap_m(top_m, bottom_m), dtype=soc_g_m3.dtype, device=soc_g_m3.device)
    return (soc_g_m3 * overlap).sum(-1) / 1000.0


def standard_stocks(soc_g_m3: torch.Tensor) -> dict[str, torch.Tensor]:
    """The stocks in :data:`STOCK_INTERVALS_M`, each [B] kg C m-2."""
    return {name: stock_kg_m2(soc_g_m3, *iv) for name, iv in STOCK_INTERVALS_M.items()}
