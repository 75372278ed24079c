"""What the encoder learned, per parameter, as the KAN inspector shows it: read from the run's
stored curves (``kan_curves.nc``, :mod:`socmap.kan_curves`), never computed per switch.

A run mapped before the curves were stored gets them computed once (the fold models are loaded
then, and only then) and cached in its folder (:func:`socmap.kan_curves.load_or_compute`). After
that, a parameter switch slices arrays: no model evaluation, no symbolic fitting.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from socmap import interpret, kan_curves
from socmap.store import PARTIAL_ENSEMBLE_ATTR

from dashboards.layers import MapLayers

# One run's curves are read (or computed and written) at a time in the process: netCDF4/HDF5 is
# not thread-safe, and two runs warmed in two threads at once crashed the server (SIGSEGV) or
# made a read fail (then the curves were recomputed from the fold models).
_NETCDF_LOCK = threading.Lock()


@dataclass
class Curves:
    """One parameter's curves, one entry per covariate, ordered by importance (largest first).

    ``xs`` in the covariate's physical units; ``mean``/``lo``/``hi`` (fold mean and range),
    ``folds`` ([K, G], every fold's curve) and ``truth`` in normalised-p units; ``truth[c]`` is
    None where the twin has no such edge (shifted to the learned curve's mean: edge constants are
    not identifiable). ``pruned[c]``: folds whose KAN masks the edge (of ``n_folds``);
    ``fold_forms[c]``: each fold's symbolic form ("" where flat or pruned); ``hist[c]``:
    (counts [B], edges [B + 1]) of the covariate at the training sites (``histogram_of``).
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
    folds: dict[str, np.ndarray]
    pruned: dict[str, int]
    fold_forms: dict[str, list[str]]
    hist: dict[str, tuple[np.ndarray, np.ndarray]]
    n_folds: int
    histogram_of: str


def curves_from_dataset(ds, param: str) -> Curves:
    """The :class:`Curves` of ``param`` sliced from a curves dataset (schema: :mod:`socmap.kan_curves`)."""
    params = [str(p) for p in ds["parameter"].values]
    if param not in params:
        raise KeyError(f"{param!r} is not a learned parameter of this run (learned: {', '.join(params)})")
    j = params.index(param)
    names = [str(c) for c in ds["covariate"].values]
    v = {k: ds[k].values for k in ("x", "curve", "curve_mean", "curve_min", "curve_max", "importance_mean", "pruned",
                                   "symbolic_kind", "symbolic_formula", "symbolic_r2", "symbolic_coef",
                                   "symbolic_kind_fold", "truth", "hist_count", "hist_edges")}
    imp = v["importance_mean"][j]
    order = [int(i) for i in np.argsort(-imp, kind="stable")]
    out = Curves(param, str(ds.attrs["method"]), [names[i] for i in order], imp[order], {}, {}, {}, {}, {}, {}, {}, {}, {}, {},
                 int(ds.sizes["fold"]), str(ds.attrs.get("histogram_of", "")))
    for i in order:
        c, xs, m = names[i], v["x"][i], v["curve_mean"][j, i]
        out.xs[c], out.mean[c], out.lo[c], out.hi[c] = xs, m, v["curve_min"][j, i], v["curve_max"][j, i]
        out.folds[c] = v["curve"][j, i]
        kind = str(v["symbolic_kind"][j, i])
        out.symbolic[c] = (interpret.SymbolicFit(str(v["symbolic_formula"][j, i]), kind, float(v["symbolic_r2"][j, i]),
                                                 tuple(float(a) for a in v["symbolic_coef"][j, i]), float(xs[0]), float(xs[-1]))
                           if kind else None)
        t = v["truth"][j, i]
        out.truth[c] = t - t.mean() + m.mean() if np.isfinite(t).all() else None
        out.pruned[c] = int(v["pruned"][j, i].sum())
        out.fold_forms[c] = [str(k) for k in v["symbolic_kind_fold"][j, i]]
        out.hist[c] = (v["hist_count"][i], v["hist_edges"][i])
    return out


class CurveAnalysis:
    """A run's stored curves (loaded once per process, shared by sessions) and each parameter's
    :class:`Curves`.

    ``covariates`` are shown before the curves load (the stored curves carry the truth and the
    site histograms).
    """

    def __init__(self, run_dir: str | Path, layers: MapLayers | None, covariates: list[str]) -> None:
        self.path = Path(run_dir)
        self.layers = layers
        self._covariates = list(covariates)
        self._lock = threading.RLock()
        self._ds = None
        self._loaded = False
        self._curves: dict[str, Curves] = {}
        #: why the run has no curves (its fold models cannot be read), or None
        self.error: str | None = None

    @property
    def dataset(self):
        """The curves dataset, or None (a baseline run, or a run whose fold models cannot be read)."""
        with self._lock:
            if not self._loaded:
                partial = bool(self.layers.ds.attrs.get(PARTIAL_ENSEMBLE_ATTR)) if self.layers is not None else False
                try:
                    with _NETCDF_LOCK:
                        self._ds = kan_curves.load_or_compute(self.path, allow_partial=partial)
                except (OSError, RuntimeError, ValueError, KeyError) as exc:  # RunError is a RuntimeError
                    self._ds, self.error = None, str(exc) or type(exc).__name__
                self._loaded = True
            return self._ds

    def use(self, ds) -> None:
        """Show ``ds`` (a :func:`socmap.kan_curves.compute_kan_curves` result) instead of the stored curves."""
        with self._lock:
            self._ds, self._loaded, self._curves = ds, True, {}

    @property
    def available(self) -> bool:
        return self.dataset is not None

    @property
    def covariate_names(self) -> list[str]:
        ds = self.dataset
        return [str(c) for c in ds["covariate"].values] if ds is not None else self._covariates

    @property
    def method(self) -> str:
        ds = self.dataset
        return str(ds.attrs["method"]) if ds is not None else ""

    @property
    def is_kan(self) -> bool:
        """Curves are the edges of a 1-layer KAN (otherwise partial dependence)."""
        return self.method == kan_curves.KAN_EDGE

    @property
    def n_folds(self) -> int:
        ds = self.dataset
        return int(ds.sizes["fold"]) if ds is not None else 0

    def curves(self, param: str) -> Curves:
        """The curves of ``param`` (array slices of the stored dataset, kept per parameter)."""
        with self._lock:
            if param not in self._curves:
                ds = self.dataset
                if ds is None:
                    raise LookupError(f"{self.path} has no curves (a baseline run, or its fold models cannot be read)")
                self._curves[param] = curves_from_dataset(ds, param)
            return self._curves[param]

    def warm(self) -> None:
        """Load (or, for a run mapped before they were stored, compute) the curves ahead of the first visit."""
        _ = self.dataset

    def contributions(self, param: str, values: dict[str, float]) -> dict[str, float]:
        """Each covariate's contribution to p_param at one location, fold mean, read off the
        stored curves: the edge value for a KAN (held constant beyond the grid, as the KAN does);
        the PD value minus the PD curve's mean otherwise."""
        cv = self.curves(param)
        out = {}
        for c in cv.covariates:
            v = values.get(c)
            if v is None or not np.isfinite(v):
                continue
            y = float(np.interp(v, cv.xs[c], cv.mean[c]))
            out[c] = y if self.is_kan else y - float(cv.mean[c].mean())
        return out
