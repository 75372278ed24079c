"""What the encoder learned, per parameter: edge curves (1-layer KAN) or partial dependence
(other encoders), importances, symbolic suggestions and the true curves of the synthetic twin.

The science lives in :mod:`socmap.interpret`; this module picks the covariate sample and the
grids, averages over the fold models and caches the result per parameter.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from socmap import interpret
from socmap.runs import RunError, open_run
from socmap.store import PARTIAL_ENSEMBLE_ATTR
from socmap.truth import truth_edge_function

from dashboards.layers import MapLayers

KAN_GRID_POINTS = 81
PD_GRID_POINTS = 31
PD_ROWS = 256          # sites averaged in a partial-dependence curve
IMPORTANCE_ROWS = 300  # sites the KAN edge importances are scored on
SAMPLE_CELLS = 1500    # land cells drawn for the covariate distribution


@dataclass
class Curves:
    """One parameter's curves, one entry per covariate, ordered by importance (largest first).

    ``xs`` in the covariate's physical units; ``mean``/``lo``/``hi`` (fold mean and range) and
    ``truth`` in normalised-p units; ``truth[c]`` is None where the twin has no such edge.
    """

    param: str
    method: str  # "KAN edge" or "partial dependence"
    covariates: list[str]
    importance: np.ndarray
    xs: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    lo: dict[str, np.ndarray]
    hi: dict[str, np.ndarray]
    truth: dict[str, np.ndarray | None]
    symbolic: dict[str, interpret.SymbolicFit | None]


class CurveAnalysis:
    """The fold models of a run and their curves; each parameter's curves computed once."""

    def __init__(self, run_dir: str | Path, layers: MapLayers, covariates: list[str],
                 truth: dict | None, site_covariates: np.ndarray | None = None) -> None:
        self.path = Path(run_dir)
        self.layers = layers
        self.truth = truth
        self._covariates = list(covariates)
        self._site_covariates = site_covariates
        self._lock = threading.RLock()
        self._curves: dict[str, Curves] = {}
        self._param_locks: dict[str, threading.Lock] = {}
        self._warming = False

    @cached_property
    def models(self) -> list:
        """The fold models (HybridModel), or [] for baselines without any."""
        # a store mapped with --allow-partial used the fold models that load: show those
        partial = bool(self.layers.ds.attrs.get(PARTIAL_ENSEMBLE_ATTR)) if self.layers is not None else False
        try:
            return open_run(self.path, allow_partial=partial).models
        except (RunError, FileNotFoundError, ValueError, KeyError):
            return []

    @cached_property
    def covariate_names(self) -> list[str]:
        return list(self.models[0].spec.covariate_names) if self.models else self._covariates

    @property
    def is_kan(self) -> bool:
        """A 1-layer KAN: curves are its edges (deeper KANs and MLPs: partial dependence)."""
        m = self.models
        return bool(m) and m[0].is_kan and len(m[0].encoder.layers) == 1

    @cached_property
    def sample(self) -> np.ndarray:
        """Covariates [n, C] in physical units at up to SAMPLE_CELLS land cells of the store (the
        run's sites when the store lacks a covariate layer)."""
        names = self.covariate_names
        if all(c in self.layers for c in names):
            X = np.column_stack([self.layers.array(c).ravel() for c in names]).astype(np.float64)
            X = X[np.isfinite(X).all(1)]
        elif self._site_covariates is not None:
            X = np.asarray(self._site_covariates, dtype=np.float64)
        else:
            X = np.zeros((0, len(names)))
        if len(X) > SAMPLE_CELLS:
            X = X[np.random.default_rng(0).choice(len(X), SAMPLE_CELLS, replace=False)]
        return X

    def curves(self, param: str) -> Curves:
        """The curves of ``param`` (computed on first use; one computation per parameter)."""
        with self._lock:
            if param in self._curves:
                return self._curves[param]
            lock = self._param_locks.setdefault(param, threading.Lock())
        with lock:
            if param not in self._curves:
                self._curves[param] = self._compute(param)
            return self._curves[param]

    def forget(self, param: str) -> None:
        """Drop the cached curves of ``param`` (after changing a model in place)."""
        with self._lock:
            self._curves.pop(param, None)

    def _compute(self, param: str) -> Curves:
        models, X, names, kan = self.models, self.sample, self.covariate_names, self.is_kan
        xs, per_fold = {}, {}
        for i, c in enumerate(names):
            q = (np.quantile(X[:, i], [0.005, 0.995]) if len(X)
                 else (models[0].spec.covariate_lo[i], models[0].spec.covariate_hi[i]))
            grid = np.linspace(q[0], q[1], KAN_GRID_POINTS if kan else PD_GRID_POINTS)
            if kan:
                per_fold[c] = np.stack([interpret.edge_curve(m, param, c, grid) for m in models])
            else:
                per_fold[c] = np.stack([interpret.partial_dependence(m, X, param, c, grid, max_rows=PD_ROWS) for m in models])
            xs[c] = grid
        if kan:
            imps = np.mean([interpret.importance(m, X[:IMPORTANCE_ROWS])[m.param_names.index(param)] for m in models], axis=0)
        else:  # spread of the fold-mean PD curve
            imps = np.array([np.std(per_fold[c].mean(0)) for c in names])
            imps = imps / max(imps.sum(), 1e-12)
        order = [int(i) for i in np.argsort(-imps)]
        mean, lo, hi, truth, symbolic = {}, {}, {}, {}, {}
        for i in order:
            c = names[i]
            ys = per_fold[c]
            mean[c], lo[c], hi[c] = ys.mean(0), ys.min(0), ys.max(0)
            symbolic[c] = interpret.suggest_symbolic(xs[c], mean[c]) if np.ptp(mean[c]) > 1e-9 else None
            truth[c] = None
            if self.truth is not None:
                t = truth_edge_function(self.truth, param, c, xs[c])
                # edge constants are not identifiable: put the true curve on the learned curve's mean
                truth[c] = t - t.mean() + mean[c].mean() if np.ptp(t) > 0 else None
        return Curves(param, "KAN edge" if kan else "partial dependence", [names[i] for i in order], imps[order],
                      xs, mean, lo, hi, truth, symbolic)

    def warm(self, params: list[str]) -> None:
        """Compute the curves of ``params`` ahead of the first visit (best effort, once)."""
        with self._lock:
            if self._warming:
                return
            self._warming = True
        for p in params:
            try:
                self.curves(p)
            except Exception:  # noqa: BLE001 - warming is best effort; the view shows the error
                return

    def contributions(self, param: str, values: dict[str, float]) -> dict[str, float]:
        """Each covariate's contribution to p_param at one location, fold mean: the edge value
        for a KAN; the PD value minus the PD curve's mean otherwise."""
        out = {}
        for c in self.covariate_names:
            v = values.get(c)
            if v is None or not np.isfinite(v):
                continue
            if self.is_kan:
                out[c] = float(np.mean([interpret.edge_curve(m, param, c, np.array([v]))[0] for m in self.models]))
            else:
                cv = self.curves(param)
                out[c] = float(np.interp(v, cv.xs[c], cv.mean[c]) - cv.mean[c].mean())
        return out
