"""What the encoder learned, computed once per run: ``runs/NAME/kan_curves.nc``.

Written by ``socmap map`` when the store is finished (:func:`write_kan_curves`), read by the
dashboard's KAN inspector (:func:`load_or_compute` computes and caches it once for runs mapped
before this file existed). Nothing here is evaluated per parameter switch: the inspector only
slices this dataset.

For a 1-layer KAN each curve is the learned edge ``covariate → parameter`` (the edge function
times the bounding layer's slope, :func:`socmap.interpret.edge_curve`): the edge's additive
contribution to the normalised parameter p. For MLPs and deeper KANs (no edges) it is the partial
dependence of p on the covariate (:func:`socmap.interpret.partial_dependence_all`) over up to
:data:`PD_ROWS` training sites. Baseline runs (random forest, pure NN) have no parameters and
get no file.

Schema (version :data:`CURVES_VERSION`, netCDF4)
-------------------------------------------------
Dimensions: ``parameter`` (P, the learned parameters), ``covariate`` (C, encoder input order),
``fold`` (K, the fold models: coord = model file relative to the run folder), ``grid``
(G = :data:`GRID_POINTS`), ``bin`` (B = :data:`HIST_BINS`), ``bin_edge`` (B + 1), ``coef`` (4).

* ``x`` (covariate, grid) float64: the grid in the covariate's physical units; it spans the
  range the models scale the covariate with (``HybridSpec.covariate_lo/hi``, union over folds;
  a 1-layer KAN holds each edge constant beyond it). ``covariate_units`` (covariate) text.
* ``curve`` (parameter, covariate, fold, grid) float64: each fold model's curve, p units
  (KAN: Δp, the edge's contribution; partial dependence: p averaged over the sites).
* ``curve_mean``, ``curve_min``, ``curve_max`` (parameter, covariate, grid): the fold band.
* ``importance`` (parameter, covariate, fold) float64: KAN edge scores at the training sites
  (:func:`socmap.interpret.importance`); partial dependence: the curve's standard deviation;
  each (parameter, fold) sums to 1 over the covariates. ``importance_mean``: mean over folds.
* ``pruned`` (parameter, covariate, fold) uint8: 1 where the fold's KAN masks the edge
  (sparsify/prune phase); always 0 for partial dependence.
* ``symbolic_kind``, ``symbolic_formula`` (parameter, covariate) text, ``symbolic_r2`` float64,
  ``symbolic_coef`` (parameter, covariate, coef) = (a, b, c, d) of ``c·f(a·x' + b) + d`` with
  ``x' = (x − x[0]) / (x[-1] − x[0])``: :func:`socmap.interpret.suggest_symbolic` of the fold-mean
  curve ("" / NaN where that curve is flat, range < :data:`FLAT`). ``symbolic_kind_fold``,
  ``symbolic_r2_fold`` (parameter, covariate, fold): the same fit of each fold's curve (its
  stability across folds); "" where the fold's curve is flat or pruned.
* ``truth`` (parameter, covariate, grid) float64: the synthetic twin's true edge
  (:func:`socmap.truth.truth_edge_function`, p units, not shifted), NaN where the twin has no
  such edge or the run has no ``truth.json``.
* ``hist_count`` (covariate, bin) int64 and ``hist_edges`` (covariate, bin_edge) float64: the
  covariate's distribution at the run's training sites (``sites.csv``), over ``x``'s range
  (values outside it counted in the end bins); where the run has no site covariates, at the
  store's land cells (attribute ``histogram_of`` says which).

Attributes: ``curves_version``, ``method`` ("KAN edge" or "partial dependence"), ``encoder``,
``run_name``, ``created`` (UTC), ``socmap_version``, ``models_sha256`` (of the fold model files:
a re-trained run makes the file stale), ``histogram_of``, ``n_sites``, ``pd_rows``,
``importance_rows``, ``r2_tolerance`` (the parsimony tolerance of the symbolic fits), ``truth`` (0/1).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from socmap.store import KAN_CURVES

if TYPE_CHECKING:  # xarray and torch are imported where used: mapping imports this module
    import xarray as xr

    from socmap.runs import Run

log = logging.getLogger(__name__)

CURVES_VERSION = "1"
GRID_POINTS = 81
HIST_BINS = 30
PD_ROWS = 256          # training sites averaged in a partial-dependence curve
IMPORTANCE_ROWS = 2000  # training sites the KAN edge importances are scored on (a random subset beyond)
FLAT = 1e-9            # a curve whose range is below this (p units) gets no symbolic fit
KAN_EDGE = "KAN edge"
PARTIAL_DEPENDENCE = "partial dependence"


class CurvesError(RuntimeError):
    """A curves file that cannot be used (message names the file and the fix)."""


def curves_path(run_dir: str | Path) -> Path:
    """``run_dir/kan_curves.nc``."""
    return Path(run_dir) / KAN_CURVES


def models_fingerprint(run_dir: str | Path, model_files: list[str]) -> str:
    """SHA-256 over the fold model files (names and bytes), in order: changes when a run is re-trained."""
    h = hashlib.sha256()
    for rel in model_files:
        h.update(rel.encode())
        h.update((Path(run_dir) / rel).read_bytes())
    return h.hexdigest()


def _is_edge_kan(model) -> bool:
    return bool(model.is_kan and len(model.encoder.layers) == 1)


def _site_covariates(run: "Run", names: list[str], store: Path | None) -> tuple[np.ndarray, str]:
    """Covariates [N, C] (physical units) at the training sites, else at the store's land cells."""
    sites = run.sites()
    if sites is not None and set(names) <= set(sites.columns):
        X = sites[names].to_numpy(np.float64)
        return X[np.isfinite(X).all(1)], "training sites"
    from socmap.store import open_store, store_path

    try:
        ds = open_store(store if store is not None else store_path(run.path))
    except Exception:  # noqa: BLE001 - no store, no land sample: the histograms stay empty
        return np.zeros((0, len(names))), "none"
    if not all(c in ds for c in names):
        return np.zeros((0, len(names))), "none"
    X = np.column_stack([np.asarray(ds[c].values, dtype=np.float64).ravel() for c in names])
    return X[np.isfinite(X).all(1)], "land cells"


def _grids(models: list, n: int) -> np.ndarray:
    """[C, G] grid over each covariate's scaling range (union over the fold models)."""
    lo = np.min([m.spec.covariate_lo for m in models], axis=0).astype(np.float64)
    hi = np.max([m.spec.covariate_hi for m in models], axis=0).astype(np.float64)
    return np.linspace(lo, hi, n, axis=1)


def _subset(X: np.ndarray, k: int) -> np.ndarray:
    return X if len(X) <= k else X[np.random.default_rng(0).choice(len(X), k, replace=False)]


def compute_kan_curves(run: "Run", *, store: str | Path | None = None, grid_points: int = GRID_POINTS) -> "xr.Dataset | None":
    """Every fold model's curves, importances, pruning, symbolic fits, the fold band, the
    covariate histograms and the twin's truth (schema in the module docstring).

    Parameters
    ----------
    run : a run opened with its models (:func:`socmap.runs.open_run`).
    store : the run store (for the land-cell histograms of runs without site covariates);
        default ``run.path/maps.zarr``.
    grid_points : G, points of each covariate's grid.

    Returns
    -------
    The dataset, or None for a baseline run (no parameters, no curves).
    """
    import torch
    import xarray as xr

    import socmap
    from socmap import interpret
    from socmap.clm5.parameters import INDEX
    from socmap.truth import truth_edge_function

    # on the CPU (a run mapped on a GPU may hold its models there; the grids are small)
    models = [m if next(m.parameters()).device.type == "cpu" else copy.deepcopy(m).cpu() for m in run.models]
    if not models:
        return None
    params = list(models[0].param_names)
    names = list(models[0].spec.covariate_names)
    kan = all(_is_edge_kan(m) for m in models)
    P, C, K, G = len(params), len(names), len(models), grid_points
    xs = _grids(models, G)
    X, hist_of = _site_covariates(run, names, Path(store) if store is not None else None)

    curve = np.zeros((P, C, K, G))
    imp = np.zeros((P, C, K))
    pruned = np.zeros((P, C, K), np.uint8)
    with torch.no_grad():
        for k, m in enumerate(models):
            if kan:
                for j, p in enumerate(params):
                    for i, c in enumerate(names):
                        curve[j, i, k] = interpret.edge_curve(m, p, c, xs[i])
                pruned[:, :, k] = (m.encoder.layers[0].mask.cpu().numpy() == 0)
                if len(X):
                    imp[:, :, k] = interpret.importance(m, _subset(X, IMPORTANCE_ROWS))
            else:
                rows = _subset(X, PD_ROWS) if len(X) else 0.5 * (xs[:, :1] + xs[:, -1:]).T  # no sites: the range's centre
                for i, c in enumerate(names):
                    pd_all = interpret.partial_dependence_all(m, rows, c, xs[i], max_rows=PD_ROWS)  # [G, 21]
                    curve[:, i, k] = pd_all[:, [INDEX[p] for p in params]].T
    if not kan or not len(X):  # partial dependence, or a KAN without sites: the curves' spread
        s = curve.std(-1)
        imp = s / np.clip(s.sum(1, keepdims=True), 1e-12, None)
    mean = curve.mean(2)

    kind = np.full((P, C), "", dtype=object)
    formula = np.full((P, C), "", dtype=object)
    r2 = np.full((P, C), np.nan)
    coef = np.full((P, C, 4), np.nan)
    kind_fold = np.full((P, C, K), "", dtype=object)
    r2_fold = np.full((P, C, K), np.nan)
    for j in range(P):
        for i in range(C):
            if np.ptp(mean[j, i]) > FLAT:
                fit = interpret.suggest_symbolic(xs[i], mean[j, i])
                kind[j, i], formula[j, i], r2[j, i], coef[j, i] = fit.kind, fit.formula, fit.r2, fit.coefficients
            for k in range(K):
                if not pruned[j, i, k] and np.ptp(curve[j, i, k]) > FLAT:
                    fit = interpret.suggest_symbolic(xs[i], curve[j, i, k])
                    kind_fold[j, i, k], r2_fold[j, i, k] = fit.kind, fit.r2

    truth = np.full((P, C, G), np.nan)
    truth_doc = run.truth()
    if truth_doc is not None:
        for j, p in enumerate(params):
            for i, c in enumerate(names):
                t = truth_edge_function(truth_doc, p, c, xs[i])
                if np.ptp(t) > 0:
                    truth[j, i] = t

    counts = np.zeros((C, HIST_BINS), np.int64)
    edges = np.linspace(xs[:, 0], xs[:, -1], HIST_BINS + 1, axis=1)
    for i in range(C):
        if len(X):  # values beyond the range go to the end bins (the edges are held constant there)
            counts[i] = np.histogram(np.clip(X[:, i], xs[i, 0], xs[i, -1]), bins=edges[i])[0]

    units = list(run.record.get("data", {}).get("covariate_units") or [])
    units = units if len(units) == C else [""] * C
    text = lambda a: a.astype(str)  # noqa: E731 - netCDF4 writes fixed/variable-length text from str arrays
    ds = xr.Dataset(
        {
            "x": (("covariate", "grid"), xs, {"long_name": "covariate value (physical units, see covariate_units)"}),
            "covariate_units": (("covariate",), np.asarray(units, dtype=str)),
            "curve": (("parameter", "covariate", "fold", "grid"), curve,
                      {"units": "1", "long_name": "contribution to the normalised parameter p" if kan else "partial dependence of p"}),
            "curve_mean": (("parameter", "covariate", "grid"), mean, {"units": "1", "long_name": "fold mean of curve"}),
            "curve_min": (("parameter", "covariate", "grid"), curve.min(2), {"units": "1", "long_name": "fold minimum of curve"}),
            "curve_max": (("parameter", "covariate", "grid"), curve.max(2), {"units": "1", "long_name": "fold maximum of curve"}),
            "importance": (("parameter", "covariate", "fold"), imp, {"units": "1", "long_name": "normalised edge importance"}),
            "importance_mean": (("parameter", "covariate"), imp.mean(2), {"units": "1", "long_name": "fold mean of importance"}),
            "pruned": (("parameter", "covariate", "fold"), pruned, {"long_name": "1 = edge masked in the fold's KAN"}),
            "symbolic_kind": (("parameter", "covariate"), text(kind)),
            "symbolic_formula": (("parameter", "covariate"), text(formula), {"long_name": "symbolic fit, x' = x scaled to [0, 1] over x"}),
            "symbolic_r2": (("parameter", "covariate"), r2, {"units": "1"}),
            "symbolic_coef": (("parameter", "covariate", "coef"), coef, {"long_name": "(a, b, c, d) of c·f(a·x'+b)+d"}),
            "symbolic_kind_fold": (("parameter", "covariate", "fold"), text(kind_fold)),
            "symbolic_r2_fold": (("parameter", "covariate", "fold"), r2_fold, {"units": "1"}),
            "truth": (("parameter", "covariate", "grid"), truth, {"units": "1", "long_name": "true edge of the synthetic twin"}),
            "hist_count": (("covariate", "bin"), counts, {"long_name": f"covariate distribution at the {hist_of}"}),
            "hist_edges": (("covariate", "bin_edge"), edges),
        },
        coords={"parameter": np.asarray(params, dtype=str), "covariate": np.asarray(names, dtype=str),
                "fold": np.asarray(list(run.fold_models)[:K], dtype=str)},
        attrs={"curves_version": CURVES_VERSION, "method": KAN_EDGE if kan else PARTIAL_DEPENDENCE, "encoder": run.encoder,
               "run_name": run.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "socmap_version": socmap.__version__, "models_sha256": models_fingerprint(run.path, list(run.fold_models)[:K]),
               "histogram_of": hist_of, "n_sites": int(len(X)), "pd_rows": 0 if kan else int(min(len(X), PD_ROWS)),
               "importance_rows": int(min(len(X), IMPORTANCE_ROWS)) if kan else 0,
               "r2_tolerance": float(interpret.PARSIMONY_R2_TOLERANCE), "truth": int(truth_doc is not None)},
    )
    return ds


def save_kan_curves(ds: "xr.Dataset", path: str | Path) -> Path:
    """Write a curves dataset to ``path`` atomically (a reader sees the old file or the new one)."""
    from socmap.fsutil import atomic_path

    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
    return Path(path)


def write_kan_curves(run: "Run", folder: str | Path | None = None, *, store: str | Path | None = None) -> Path | None:
    """Compute the curves of ``run`` and write them to ``folder/kan_curves.nc`` (default: the
    run folder); returns the path, or None for a baseline run."""
    ds = compute_kan_curves(run, store=store)
    return None if ds is None else save_kan_curves(ds, curves_path(folder if folder is not None else run.path))


def read_kan_curves(run_dir: str | Path, *, check_models: bool = True) -> "xr.Dataset | None":
    """The run's curves, loaded into memory; None when there is no file, or it is of another
    version, or (``check_models``) its fold model files changed since (a re-trained run: stale)."""
    import xarray as xr

    path = curves_path(run_dir)
    if not path.is_file():
        return None
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except Exception as exc:  # noqa: BLE001 - netCDF raises many kinds; all mean "unreadable"
        log.warning("%s cannot be read (%s): recomputing the curves", path, exc)
        return None
    if str(ds.attrs.get("curves_version")) != CURVES_VERSION:
        log.info("%s is curves version %s (this socmap writes %s): recomputing", path, ds.attrs.get("curves_version"), CURVES_VERSION)
        return None
    if check_models:
        try:
            current = models_fingerprint(run_dir, [str(f) for f in ds["fold"].values])
        except OSError:
            return ds  # the models are gone: the stored curves are all there is
        if ds.attrs.get("models_sha256") != current:
            log.info("%s was computed from other fold models (the run was re-trained): recomputing", path)
            return None
    return ds


def load_or_compute(run_dir: str | Path, *, allow_partial: bool = False, write: bool = True) -> "xr.Dataset | None":
    """The stored curves of a run, or (a run mapped before they were stored, or a re-trained run)
    computed once from its fold models and, with ``write``, cached in the run folder (kept in
    memory only when the folder is read-only). None for a baseline run."""
    from socmap.runs import open_run

    run_dir = Path(run_dir)
    light = open_run(run_dir, load_models=False)
    if not light.hybrid:
        return None
    ds = read_kan_curves(run_dir)
    if ds is not None:
        return ds
    ds = compute_kan_curves(open_run(run_dir, allow_partial=allow_partial))
    if write and ds is not None:
        try:
            save_kan_curves(ds, curves_path(run_dir))
        except OSError as exc:
            log.warning("cannot cache the curves in %s (%s): keeping them in memory", run_dir, exc)
    return ds
