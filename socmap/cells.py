"""The one path from covariates at cells (or sites) to SOC: encoder → θ → CLM5 steady state.

:func:`predict_cells` is what mapping (per window), point prediction (``socmap predict``), the
store's per-site fold profiles and the tests call, so every consumer sees the same numbers.

A baseline run (random forest, pure NN: :class:`socmap.baselines.BaselineModel`) goes through the
same function: its SOC at the 20 layer nodes is the mean of the fold models' predictions at the
node depths, its stocks integrate that profile the same way, and it has no parameters or CLM5
diagnostics (see docs/model.md, "Baselines").
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from socmap import store as S

#: Key of SOC at the requested depths in :attr:`CellPrediction.values` (not a store variable).
SOC_AT_DEPTH = "soc_at_depth"


@dataclass(frozen=True)
class CellPrediction:
    """Outputs of :func:`predict_cells` for N cells.

    Attributes
    ----------
    values : dict of str to ndarray
        float64 arrays named as the run store's variables (:func:`socmap.store.variable_specs`):
        ``soc`` [N, 20] (g C m-3), the stocks [N] (kg C m-2), the 21 physical parameters [N],
        with ``diagnostics`` the bulk diagnostics [N], with ``default`` the CLM5-default stocks
        and hybrid − default differences [N], with ``ensemble`` the ``*_std`` spreads; with
        ``depth_m`` also :data:`SOC_AT_DEPTH` [N, D] (g C m-3). A baseline has no parameters and
        no diagnostics.
    p_models : ndarray [K, N, 21]
        Normalised parameters (0–1 of each range) of every model ([K, N, 0] for a baseline).
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
                  method: str = "structured", depth_m: np.ndarray | None = None) -> CellPrediction:
    """SOC per layer, stocks, θ and diagnostics at N cells or sites from a run's fold models.

    Parameters
    ----------
    models : sequence of HybridModel or of BaselineModel
        The run's fold models (``socmap.runs.open_run(...).predictors``), K ≥ 1.
    covariates : ndarray [N, C]
        Encoder covariates in physical units, in the models' ``spec.covariate_names`` order.
    forcing : Forcing or PreparedForcing or None
        CLM5 forcing of the same N cells (e.g. :func:`socmap.data.cube.cell_forcing`); None only
        for a baseline without ``default``.
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
    depth_m : ndarray [N, D], optional
        Also SOC at these depths (m; NaN gives NaN): interpolated between the nodes of the
        hybrid's profile, evaluated directly by a baseline.

    Returns
    -------
    CellPrediction
    """
    import torch

    from socmap.baselines import BaselineModel

    if models and isinstance(models[0], BaselineModel):
        return _predict_baseline(models, covariates, forcing, ensemble=ensemble, per_model=per_model, default=default,
                                 method=method, depth_m=depth_m)

    from socmap.clm5 import prepare_forcing
    from socmap.clm5.forcing import Forcing
    from socmap.clm5.parameters import NAMES, to_physical

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
            _add_default(values, prepared, n, method)
        if depth_m is not None:
            from socmap.clm5 import interpolate_to_depths

            values[SOC_AT_DEPTH] = interpolate_to_depths(torch.as_tensor(values[S.SOC], dtype=torch.float64),
                                                         torch.as_tensor(depth_m, dtype=torch.float64)).numpy()
    return CellPrediction(values=values, p_models=ps.numpy(), soc_models=soc_models)


def _add_default(values: dict[str, np.ndarray], prepared, n: int, method: str) -> None:
    """The CLM5-default stocks and this run's differences from them, added to ``values``."""
    from socmap.clm5.parameters import default_theta

    dstocks = _solve(default_theta(n), prepared, method, False, False)
    for k in S.STOCKS:
        values[S.DEFAULT_PREFIX + k] = dstocks[k].numpy()
        values[S.DIFF_DEFAULT_PREFIX + k] = values[k] - values[S.DEFAULT_PREFIX + k]


def _predict_baseline(models: Sequence, covariates: np.ndarray, forcing, *, ensemble: bool, per_model: bool,
                      default: bool, method: str, depth_m: np.ndarray | None) -> CellPrediction:
    """:func:`predict_cells` for baseline fold models: SOC at the nodes (mean of the models), stocks."""
    import torch

    from socmap.clm5 import prepare_forcing, standard_stocks
    from socmap.clm5.forcing import Forcing
    from socmap.clm5.grid import NODE_M

    n = covariates.shape[0]
    nodes = np.broadcast_to(NODE_M.astype(np.float64), (n, len(NODE_M)))
    socs = np.stack([m.soc_at(covariates, nodes) for m in models])  # [K, N, 20]
    values: dict[str, np.ndarray] = {S.SOC: socs.mean(0)}
    members = [standard_stocks(torch.as_tensor(s)) for s in socs]
    for k in S.STOCKS:
        values[k] = np.mean([m[k].numpy() for m in members], axis=0)
    if ensemble:
        ddof = 1 if len(models) > 1 else 0
        values[S.SOC + S.STD_SUFFIX] = socs.std(0, ddof=ddof)
        for k in S.STOCKS:
            values[k + S.STD_SUFFIX] = np.std([m[k].numpy() for m in members], axis=0, ddof=ddof)
    if default:
        if forcing is None:
            raise ValueError("predict_cells(default=True) needs the forcing of the cells")
        prepared = prepare_forcing(forcing) if isinstance(forcing, Forcing) else forcing
        with torch.no_grad():
            _add_default(values, prepared, n, method)
    if depth_m is not None:
        values[SOC_AT_DEPTH] = np.mean([m.soc_at(covariates, depth_m) for m in models], axis=0)
    return CellPrediction(values=values, p_models=np.zeros((len(models), n, 0)),
                          soc_models=socs if (per_model or ensemble) else None)
