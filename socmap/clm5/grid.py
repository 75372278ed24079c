"""The CLM5 vertical soil grid ("20SL_8.5m"): 20 decomposition layers plus 5 bedrock levels.

All depths are in metres, positive downwards. Layer ``j`` spans
``[interface_top_m[j], interface_bottom_m[j]]`` and has its node at ``node_m[j]``.
Only the first 20 levels are simulated; levels 20–24 exist so the transport stencil
has a neighbour below the last soil layer (docs/model.md §2.1).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

N_LAYERS = 20
N_POOLS = 7
POOL_NAMES = ("cwd", "litter1", "litter2", "litter3", "som1", "som2", "som3")
LITTER_POOLS = (1, 2, 3)
SOM_POOLS = (4, 5, 6)

#: Layer thickness dz (m) of all 25 levels.
_DZ_ALL = np.array(
    [0.02, 0.04, 0.06, 0.08, 0.12, 0.16, 0.20, 0.24, 0.28, 0.32, 0.36, 0.40, 0.44,
     0.54, 0.64, 0.74, 0.84, 0.94, 1.04, 1.14,
     2.39, 4.67553390593274, 7.63519052838329, 11.14, 15.1154248593737]
)

#: Bottom interface depth (m) of each level.
INTERFACE_BOTTOM_ALL_M = np.cumsum(_DZ_ALL)
#: Node (centre) depth (m) of each level.
NODE_ALL_M = INTERFACE_BOTTOM_ALL_M - _DZ_ALL / 2

DZ_M = _DZ_ALL[:N_LAYERS].copy()
INTERFACE_BOTTOM_M = INTERFACE_BOTTOM_ALL_M[:N_LAYERS].copy()
INTERFACE_TOP_M = np.concatenate([[0.0], INTERFACE_BOTTOM_M[:-1]])
NODE_M = NODE_ALL_M[:N_LAYERS].copy()
#: Distance between node j-1 and node j (node -1 is the surface), m.
DZ_NODE_M = np.diff(np.concatenate([[0.0], NODE_ALL_M]))[: N_LAYERS + 1]

for _arr in (DZ_M, INTERFACE_BOTTOM_M, INTERFACE_TOP_M, NODE_M, DZ_NODE_M):
    _arr.setflags(write=False)


@lru_cache(maxsize=16)
def _tensor(name: str, dtype: torch.dtype, device: str) -> torch.Tensor:
    return torch.tensor(np.array(globals()[name]), dtype=dtype, device=device)


def grid_tensor(name: str, like: torch.Tensor) -> torch.Tensor:
    """Return a grid constant (e.g. ``"DZ_M"``) as a tensor with ``like``'s dtype and device."""
    return _tensor(name, like.dtype, str(like.device))


def layer_overlap_m(top_m: float, bottom_m: float) -> np.ndarray:
    """Thickness (m) of each of the 20 layers that lies inside the depth interval [top_m, bottom_m].

    Used to integrate a layer-wise constant density exactly over an interval, e.g. the
    0–30 cm stock. Shape ``[20]``.
    """
    if not 0.0 <= top_m < bottom_m <= INTERFACE_BOTTOM_M[-1] + 1e-12:
        raise ValueError(
            f"depth interval [{top_m}, {bottom_m}] m must satisfy 0 <= top < bottom <= "
            f"{INTERFACE_BOTTOM_M[-1]:.2f} m (the bottom of the CLM5 soil column)"
        )
    lo = np.maximum(INTERFACE_TOP_M, top_m)
    hi = np.minimum(INTERFACE_BOTTOM_M, bottom_m)
    return np.clip(hi - lo, 0.0, None)
