"""The one path from covariates at cells (or sites) to SOC: encoder → θ → CLM5 steady state.

:func:`predict_cells` is what mapping (per window), point prediction (``socmap predict``), the
store's per-site fold profiles and the tests call, so every consumer sees the same numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from socmap import store as S


@dataclass(frozen=True)
class CellPrediction:
    """Outputs of :func:`predict_cells` for N cells.

    Attributes
    ----------
    values : dict of str to ndarray
        float64 arrays named as the run store's variables (:func:`socmap.store.variable_specs`):
        ``soc`` [N, 20] (g C m-3), the stocks [N] (kg C m-2), the 21 physical parameters [N],
        with ``diagnostics`` the bulk diagnostics [N], with ``default`` the CLM5-default stocks
        and hybrid − default differences [N], with ``ensemble`` the ``*_std`` spreads.
    p_models : ndarray [K, N, 21]
        Normalised parameters (0–1 of each range) of every model.
    soc_models : ndarray [K, N, 20] or None
        SOC of every model's own solve (g C m-3), with ``ensemble`` or ``per_model``.
    """

    values: dict[str, np.ndarray]
    p_models: np.ndarray
    soc_models: np.ndarray | None = None


def _solve(theta, prepared, method: str, bounds: bool, diagnostics: bool) -> dict[str, Any]:
    """SOC, stocks, (diagnostics) and θ columns of one solve, as torch tensors keyed by store name."""
    from socmap.clm5 import bulk_diagnostics, soc_nodes, standard_stocks, steady_state
    from socmap.clm5.diagnostics import DIAGNOSTICS
    from socmap.clm5.parameters import NAMES

    # non-finite cells come back as NaN and are counted by the caller; the solver's warning is noise here
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        pools = steady_state(theta, prepared, method=method, check_bounds_=bounds, check=False)
    soc = soc_nodes(pools)
    out: dict[str, Any] = {"soc": soc, **standard_stocks(soc)}
    if diagnostics:
        diag = bulk_diagnostics(theta, prepared, pools)
        out.update({d: diag[d] for d in DIAGNOSTICS})
    out.update({name: theta[:, j] for j, name in enumerate(NAMES)})
    return out


def predict_cells(models: Sequence, covariates: np.ndarray, forcing, *, ensemble: bool = False,
                  per_model: bool = False, default: bool = True, diagnostics: bool = True,
                  method: str = "structured") -> CellPrediction:
    """SOC per layer, stocks, θ and diagnostics at N cells or sites from a run's fold models.

    Parameters
    ----------
    models : sequence of HybridModel
        The run's fold models (``socmap.runs.open_run(...).models``), K ≥ 1.
    covariates : ndarray [N, C]
        Encoder covariates in physical units, in the models' ``spec.covariate_names`` order.
    forcing : Forcing or PreparedForcing
        CLM5 forcing of the same N cells (e.g. :func:`socmap.data.cube.cell_forcing`).
    ensemble : bool
        Solve each model and average the outputs (and give their ``*_std`` spread). Without it
        θ is the physical value of the mean of the models' normalised outputs: one solve.
    per_model : bool
        Also return each model's SOC (``soc_models``), e.g. the fold profiles at sites.
    default : bool
        Also solve with the CLM5 default parameters (``default_*`` and ``diff_default_*`` stocks).
    diagnostics : bool
        Include the bulk diagnostics (:data:`socmap.clm5.diagnostics.DIAGNOSTICS`).
    method : {"structured", "dense"}
        Steady-state solver.

    Returns
    -------
    CellPrediction
    """
    import torch

    from socmap.clm5 import prepare_forcing
    from socmap.clm5.forcing import Forcing
    from socmap.clm5.parameters import NAMES, default_theta, to_physical

    prepared = prepare_forcing(forcing) if isinstance(forcing, Forcing) else forcing
    n = covariates.shape[0]
    x = torch.as_tensor(covariates, dtype=torch.float32)
    values: dict[str, np.ndarray] = {}
    soc_models = None
    with torch.no_grad():
        ps = torch.stack([m(x).to(torch.float64) for m in models])  # [K, N, 21]
        members = ([_solve(to_physical(ps[k]), prepared, method, True, diagnostics) for k in range(ps.shape[0])]
                   if ensemble or per_model else None)
        if ensemble:
            for key in members[0]:
                stack = torch.stack([m[key] for m in members])
                values[key] = stack.mean(0).numpy()
                if key in (S.SOC, *S.STOCKS, *NAMES):
                    values[key + S.STD_SUFFIX] = stack.std(0, correction=1).numpy()
        else:
            values = {k: v.numpy() for k, v in _solve(to_physical(ps.mean(0)), prepared, method, True, diagnostics).items()}
        if members is not None:
            soc_models = torch.stack([m[S.SOC] for m in members]).numpy()
        if default:
            dstocks = _solve(default_theta(n), prepared, method, False, False)
            for k in S.STOCKS:
                values[S.DEFAULT_PREFIX + k] = dstocks[k].numpy()
                values[S.DIFF_DEFAULT_PREFIX + k] = values[k] - values[S.DEFAULT_PREFIX + k]
    return CellPrediction(values=values, p_models=ps.numpy(), soc_models=soc_models)
