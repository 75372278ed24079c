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
from socmap.data.covariates import WETLAND_FRACTION
from socmap.stages import StageClock, maybe_stage

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


def _solve(theta, prepared, method: str, bounds: bool, diagnostics: bool, clock: StageClock | None = None,
           stage: str = "solve", o_scalar=None) -> dict[str, Any]:
    """SOC, stocks, (diagnostics) and θ columns of one solve, as torch tensors keyed by store name.

    ``o_scalar`` [N, 20]: a wetland column's learned anoxia (None: upland)."""
    from socmap.clm5 import bulk_diagnostics, soc_nodes, standard_stocks, steady_state
    from socmap.clm5.diagnostics import DIAGNOSTICS
    from socmap.clm5.parameters import NAMES

    # non-finite cells come back as NaN and are counted by the caller; the solver's warning is noise here
    with maybe_stage(clock, stage), warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        pools, ops = steady_state(theta, prepared, method=method, check_bounds_=bounds, check=False, return_operators=True,
                                  o_scalar=o_scalar)
    with maybe_stage(clock, "stocks"):
        soc = soc_nodes(pools)
        out: dict[str, Any] = {"soc": soc, **standard_stocks(soc)}
    if diagnostics:
        with maybe_stage(clock, "diagnostics"):
            diag = bulk_diagnostics(theta, prepared, pools, ops)  # the solve's operators, not built again
            out.update({d: diag[d] for d in DIAGNOSTICS})
    out.update({name: theta[:, j] for j, name in enumerate(NAMES)})
    return out


def predict_cells(models: Sequence, covariates: np.ndarray, forcing, *, ensemble: bool = False,
                  per_model: bool = False, default: bool = True, diagnostics: bool = True,
                  method: str = "structured", depth_m: np.ndarray | None = None,
                  device: str | None = None, clock: StageClock | None = None, wetland: float = 0.0,
                  default_stocks: dict[str, np.ndarray] | None = None) -> CellPrediction:
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
    device : str, optional
        Where the encoder and the solves run (``"cpu"``, ``"cuda"``, ``"auto"``; resolved by
        :func:`socmap.devices.resolve_device`); default: where the models are. Results come
        back as NumPy arrays either way.
    clock : StageClock, optional
        Adds the seconds of the stages ``prepare``, ``encoder``, ``solve``, ``stocks``,
        ``diagnostics`` and ``solve_default`` (:mod:`socmap.stages`).
    wetland : float
        The column's wetland flag (0 upland, 1 wetland): a hybrid's learned anoxia acts at it
        (the mean of the fold models' oxygen scalars without ``ensemble``). A model input named
        ``wetland`` is set by :func:`predict_columns`, not here.
    default_stocks : dict of str to ndarray [N], optional
        The CLM5-default stocks of these cells (:func:`solve_default_stocks`, e.g. from the mapping's
        per-cube cache): used with ``default`` instead of solving them again. They depend on
        the forcing only, so the caller must pass those of the same forcing and column.

    Returns
    -------
    CellPrediction
    """
    import torch

    from socmap.baselines import BaselineModel
    from socmap.devices import model_device, resolve_device

    if models and isinstance(models[0], BaselineModel):
        return _predict_baseline(models, covariates, forcing, ensemble=ensemble, per_model=per_model, default=default,
                                 method=method, depth_m=depth_m, default_stocks=default_stocks)

    from socmap.clm5 import prepare_forcing
    from socmap.clm5.forcing import Forcing
    from socmap.clm5.parameters import NAMES, to_physical

    n = covariates.shape[0]
    dev = resolve_device(device) if device is not None else model_device(models[0])
    models = [m.to(dev) for m in models]
    with maybe_stage(clock, "prepare"):
        if isinstance(forcing, Forcing):
            prepared = prepare_forcing(forcing.to(torch.float64, dev))
        else:
            prepared = forcing.to(dev)
    x = torch.as_tensor(covariates, dtype=torch.float32, device=dev)
    values: dict[str, Any] = {}
    soc_models = None
    with torch.no_grad():
        with maybe_stage(clock, "encoder"):
            ps = torch.stack([m(x).to(torch.float64) for m in models])  # [K, N, 21]
        flag = torch.full((n,), float(wetland), dtype=torch.float64, device=dev)
        os_ = [m.o_scalar(flag) if wetland else None for m in models]
        # the fold models share one spec: the wetland column's forcing (saturated or not) is theirs
        prepared = models[0].column_forcing(prepared, flag) if wetland else prepared
        members = ([_solve(to_physical(ps[k]), prepared, method, True, diagnostics, clock, o_scalar=os_[k])
                    for k in range(ps.shape[0])]
                   if ensemble or per_model else None)
        o_mean = torch.stack(os_).mean(0) if all(o is not None for o in os_) else None
        if ensemble:
            for key in members[0]:
                stack = torch.stack([m[key] for m in members])
                values[key] = stack.mean(0)
                if key in (S.SOC, *S.STOCKS, *NAMES):
                    values[key + S.STD_SUFFIX] = stack.std(0, correction=1)
        else:
            values = _solve(to_physical(ps.mean(0)), prepared, method, True, diagnostics, clock, o_scalar=o_mean)
        if members is not None:
            soc_models = _numpy(torch.stack([m[S.SOC] for m in members]))
        if default:
            _add_default(values, prepared, n, method, clock, default_stocks)
        if depth_m is not None:
            from socmap.clm5 import interpolate_to_depths

            values[SOC_AT_DEPTH] = interpolate_to_depths(values[S.SOC], torch.as_tensor(depth_m, dtype=torch.float64, device=dev))
    return CellPrediction(values={k: _numpy(v) for k, v in values.items()}, p_models=_numpy(ps), soc_models=soc_models)


def _numpy(t) -> np.ndarray:
    """A result tensor (on any device) as a NumPy array."""
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def solve_default_stocks(prepared, method: str = "structured", clock: StageClock | None = None) -> dict[str, Any]:
    """The CLM5-default stocks (``socmap.store.STOCKS``, kg C m-2, tensors [N]) of prepared forcing.

    One parameter set (:func:`socmap.clm5.parameters.default_theta`) for every cell, so the
    result depends on the forcing (and the solver) only, not on a run's models: mapping caches
    it per cube (``socmap.mapping``) and passes it back as ``default_stocks``.
    """
    import torch

    from socmap.clm5.parameters import default_theta

    with torch.no_grad():
        theta = default_theta(prepared.batch_size).to(prepared.thawed.device)
        solved = _solve(theta, prepared, method, False, False, clock, stage="solve_default")
    return {k: solved[k] for k in S.STOCKS}


def _add_default(values: dict[str, Any], prepared, n: int, method: str, clock: StageClock | None = None,
                 known: dict[str, np.ndarray] | None = None) -> None:
    """The CLM5-default stocks (``known``, else solved) and this run's differences from them, added to ``values``."""
    import torch

    if known is None:
        dstocks = solve_default_stocks(prepared, method, clock)
    else:
        missing = [k for k in S.STOCKS if k not in known or np.shape(known[k]) != (n,)]
        if missing:
            raise ValueError(f"default_stocks must hold {list(S.STOCKS)}, each of shape ({n},); wrong or missing: {missing}")
        dstocks = {k: torch.as_tensor(np.asarray(known[k], dtype=np.float64)) for k in S.STOCKS}
    for k in S.STOCKS:
        hybrid = values[k] if isinstance(values[k], torch.Tensor) else torch.as_tensor(values[k])
        default = dstocks[k].to(hybrid.device)
        values[S.DEFAULT_PREFIX + k] = default
        values[S.DIFF_DEFAULT_PREFIX + k] = hybrid - default


def _predict_baseline(models: Sequence, covariates: np.ndarray, forcing, *, ensemble: bool, per_model: bool,
                      default: bool, method: str, depth_m: np.ndarray | None,
                      default_stocks: dict[str, np.ndarray] | None = None) -> CellPrediction:
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
            _add_default(values, prepared, n, method, known=default_stocks)
    if depth_m is not None:
        values[SOC_AT_DEPTH] = np.mean([m.soc_at(covariates, depth_m) for m in models], axis=0)
    return CellPrediction(values={k: _numpy(v) for k, v in values.items()}, p_models=np.zeros((len(models), n, 0)),
                          soc_models=socs if (per_model or ensemble) else None)


# ----------------------------------------------------------------------------------------
# sub-grid land units: an upland and a wetland column per cell (docs/model.md §5.10)
# ----------------------------------------------------------------------------------------

def wetland_fraction(cube, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Wetland area fraction f [N] (0–1) of cells (iy, ix): the cube's :data:`WETLAND_FRACTION`
    layer where it has one (NaN read as 0), else 0 everywhere (all upland)."""
    if WETLAND_FRACTION not in getattr(cube, "data_vars", cube):
        return np.zeros(len(iy))
    f = np.asarray(cube[WETLAND_FRACTION].values[np.asarray(iy), np.asarray(ix)], dtype=np.float64)
    return np.clip(np.nan_to_num(f, nan=0.0), 0.0, 1.0)


def cube_inputs(names: Sequence[str]) -> list[str]:
    """The models' covariates that a cube provides: ``names`` without the site-level wetland flag
    (:data:`socmap.data.sites.WETLAND_INPUT`), which :func:`predict_columns` sets per column.

    Raises ``ValueError`` for a run with the site land-class inputs (``land_class_input``,
    docs/model.md §5.11): a cell would need its share of each class, which no cube holds yet.
    """
    from socmap.data.sites import WETLAND_INPUT, land_class_inputs

    site_only = [n for n in names if n in land_class_inputs()]
    if site_only:
        raise ValueError(f"this run takes the site's own land class as input ({', '.join(site_only)}: trained with "
                         "land_class_input); maps and point predictions would need each cell's land-class shares, "
                         "which socmap does not build yet. Map a run trained without land_class_input")
    return [n for n in names if n != WETLAND_INPUT]


def with_flag_input(models: Sequence, covariates: np.ndarray, flag: float) -> np.ndarray:
    """``covariates`` [N, C'] (the cube's inputs) with the wetland flag inserted where the models take it."""
    from socmap.data.sites import WETLAND_INPUT

    first = models[0]
    names = list(getattr(first, "covariate_names", None) or first.spec.covariate_names)
    if WETLAND_INPUT not in names:
        return covariates
    j = names.index(WETLAND_INPUT)
    return np.insert(np.asarray(covariates, dtype=np.float64), j, float(flag), axis=1)


def _column_differs(models: Sequence) -> bool:
    """Whether a wetland column predicts anything else than the upland one (a wetland input or anoxia)."""
    from socmap.data.sites import WETLAND_INPUT

    first = models[0]
    names = list(getattr(first, "covariate_names", None) or first.spec.covariate_names)
    return (WETLAND_INPUT in names or any(getattr(m, "anoxia", None) is not None for m in models)
            or any(getattr(getattr(m, "spec", None), "wetland_saturated", False) for m in models))


def predict_columns(models: Sequence, covariates: np.ndarray, forcing, wetland_frac: np.ndarray | None = None,
                    **kwargs: Any) -> CellPrediction:
    """:func:`predict_cells` for cells holding an upland and a wetland land unit, area-weighted.

    CLM5 splits a grid cell into land units and columns and reports the cell as their
    area-weighted mean. Here each cell is solved as an upland column (wetland flag 0) and, where
    its wetland fraction f > 0, as a wetland column (flag 1: the models' ``wetland`` input is 1 and
    their learned anoxia acts), and every output is ``(1 − f) · upland + f · wetland`` — SOC per
    layer and stocks exactly (area-weighted carbon), parameters and spreads as the area-weighted
    mean of the two columns'.

    Parameters
    ----------
    models, forcing, **kwargs
        As for :func:`predict_cells`.
    covariates : ndarray [N, C']
        The models' covariates without the wetland flag (:func:`cube_inputs` order).
    wetland_frac : ndarray [N], optional
        Wetland area fraction of each cell, 0–1 (:func:`wetland_fraction`); None = 0 (upland).
    """
    n = np.asarray(covariates).shape[0]
    f = np.zeros(n) if wetland_frac is None else np.clip(np.asarray(wetland_frac, dtype=np.float64), 0.0, 1.0)
    if f.shape != (n,):
        raise ValueError(f"wetland_frac has shape {f.shape}; expected ({n},), one fraction per cell")
    from socmap.clm5 import prepare_forcing
    from socmap.clm5.forcing import Forcing

    wet = np.flatnonzero(f > 0) if _column_differs(models) else np.zeros(0, dtype=np.int64)
    if wet.size and isinstance(forcing, Forcing):  # prepared once for both columns
        forcing = prepare_forcing(forcing)
    upland = predict_cells(models, with_flag_input(models, covariates, 0.0), forcing, **kwargs)
    if not wet.size:
        return upland
    # default_stocks are the upland column's: the wetland column (its own forcing) solves its own
    sub = {k: (v[wet] if k == "depth_m" and v is not None else v) for k, v in kwargs.items() if k != "default_stocks"}
    forcing_wet = forcing.subset(wet) if forcing is not None else None
    column = predict_cells(models, with_flag_input(models, np.asarray(covariates)[wet], 1.0), forcing_wet, wetland=1.0, **sub)
    w = f[wet]

    def mix(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
        out = np.array(a, dtype=np.float64, copy=True)
        shape = [1] * a.ndim
        shape[axis] = len(w)
        ww = w.reshape(shape)
        idx = [slice(None)] * a.ndim
        idx[axis] = wet
        out[tuple(idx)] = (1.0 - ww) * out[tuple(idx)] + ww * b
        return out

    values = {k: mix(v, column.values[k], 0) for k, v in upland.values.items()}
    p_models = mix(upland.p_models, column.p_models, 1)
    soc_models = None if upland.soc_models is None else mix(upland.soc_models, column.soc_models, 1)
    return CellPrediction(values=values, p_models=p_models, soc_models=soc_models)
