"""Process sensitivity: elasticities of the 0–100 cm SOC stock to the 21 CLM5 parameters.

The elasticity of the stock s to parameter θᵢ at a cell is e_i = ∂ ln s / ∂ ln θᵢ = (θᵢ / s) ∂s/∂θᵢ:
the % change of the stock per % change of the parameter. Cells are independent (each cell's
stock depends only on its own θ), so the gradient of Σ_cells s with respect to θ [B, 21] holds
every cell's ∂s/∂θ, and **one backward pass** per batch gives all 21 elasticities at all cells —
through the structured solver's adjoint (one transposed solve, docs/model.md §3).

The **dominant process** of a cell is the group below holding the parameter with the largest
|elasticity| (a group's score is the largest |elasticity| of its parameters; a sum would favour
the nine-parameter carbon-use-efficiency group everywhere, which is what the demo run showed):

=====  ======================  =====================================================
code   process                 parameters
=====  ======================  =====================================================
0      temperature response    q10
1      moisture response       w_scaling
2      depth attenuation       efolding
3      litter turnover         taucwd, taul1, taul2
4      SOM turnover            tau4s1, tau4s2, tau4s3
5      carbon-use efficiency   fl1s1, fl2s1, fl3s2, fs1s2, fs1s3, fs2s1, fs2s3, fs3s1, fcwdl2
6      vertical transport      diffus, cryo
7      input depth profile     beta
=====  ======================  =====================================================
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from socmap.clm5.operators import PreparedForcing
from socmap.clm5.parameters import INDEX, NAMES

STOCK = "soc_stock_0_100cm"

#: process name -> parameters (the table in the module docstring); the order gives the codes.
PROCESS_GROUPS: dict[str, tuple[str, ...]] = {
    "temperature response": ("q10",),
    "moisture response": ("w_scaling",),
    "depth attenuation": ("efolding",),
    "litter turnover": ("taucwd", "taul1", "taul2"),
    "SOM turnover": ("tau4s1", "tau4s2", "tau4s3"),
    "carbon-use efficiency": ("fl1s1", "fl2s1", "fl3s2", "fs1s2", "fs1s3", "fs2s1", "fs2s3", "fs3s1", "fcwdl2"),
    "vertical transport": ("diffus", "cryo"),
    "input depth profile": ("beta",),
}
PROCESS_NAMES: tuple[str, ...] = tuple(PROCESS_GROUPS)

assert sorted(p for g in PROCESS_GROUPS.values() for p in g) == sorted(NAMES), "every parameter in one group"


def elasticities(theta: torch.Tensor, prepared: PreparedForcing, stock: str = STOCK) -> tuple[np.ndarray, np.ndarray]:
    """∂ ln stock / ∂ ln θ at every site from one backward pass.

    Parameters
    ----------
    theta : Tensor [B, 21]
        Physical parameters.
    prepared : PreparedForcing
        Forcing of the same ``B`` sites.
    stock : str
        ``soc_stock_0_100cm`` (default) or ``soc_stock_0_30cm``.

    Returns
    -------
    elasticity : ndarray [B, 21]
        Dimensionless; NaN where the stock is not finite or not positive.
    stock_kg_m2 : ndarray [B]
        The stock itself (kg C m-2).
    """
    from socmap.clm5 import soc_nodes, standard_stocks, steady_state

    th = theta.detach().to(torch.float64).clone().requires_grad_(True)
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-finite sites come back NaN and are masked below
        s = standard_stocks(soc_nodes(steady_state(th, prepared, check=False, check_bounds_=False)))[stock]
        good = torch.isfinite(s.detach()) & (s.detach() > 0)
        (grad,) = torch.autograd.grad(torch.where(good, s, torch.zeros_like(s)).sum(), th)
    sv = s.detach()
    e = grad * th.detach() / torch.where(good, sv, torch.ones_like(sv))[:, None]
    e = torch.where(good[:, None], e, torch.full_like(e, float("nan")))
    return e.numpy(), sv.numpy()


def process_scores(elasticity: np.ndarray) -> np.ndarray:
    """Largest |elasticity| within each process group, [..., 8] from [..., 21]."""
    a = np.abs(elasticity)
    return np.stack([a[..., [INDEX[p] for p in PROCESS_GROUPS[g]]].max(-1) for g in PROCESS_NAMES], -1)


def dominant_process(elasticity: np.ndarray) -> np.ndarray:
    """Code (index into :data:`PROCESS_NAMES`) of the dominant process, float [...] (NaN where undefined)."""
    scores = process_scores(elasticity)
    ok = np.isfinite(scores).all(-1)
    code = np.argmax(np.where(np.isfinite(scores), scores, -np.inf), -1).astype(np.float64)
    return np.where(ok, code, np.nan)
