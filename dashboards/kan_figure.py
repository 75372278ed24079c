"""Downloadable KAN-inspector figures: the curves of one parameter rendered server-side with
matplotlib (PNG, no browser driver needed) and as a tidy CSV.

Same content as the inspector's plots, read from the run's stored curves: fold mean (line), fold
range (band), the covariate's distribution at the training sites (grey histogram), the true curve
of a synthetic twin (dashed) and the clicked location (dotted line).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from dashboards.curves import Curves

DPI = 150


def _axes_curve(ax, cv: Curves, c: str, unit: str, value: float | None) -> None:
    xs, m, lo, hi = cv.xs[c], cv.mean[c], cv.lo[c], cv.hi[c]
    counts, edges = cv.hist[c]
    if counts.sum():
        ax2 = ax.twinx()
        ax2.stairs(counts, edges, fill=True, color="#c8c8c8", alpha=0.7)
        ax2.set_yticks([])
        ax2.set_ylim(0, ax2.get_ylim()[1] * 4)  # the distribution in the bottom quarter
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
    ax.fill_between(xs, lo, hi, color="#1f77b4", alpha=0.2, lw=0, label="fold range")
    ax.plot(xs, m, color="#1f77b4", lw=2, label="fold mean")
    t = cv.truth.get(c)
    if t is not None:
        ax.plot(xs, t, color="#d62728", ls="--", lw=1.5, label="true")
    if value is not None and np.isfinite(value):
        ax.axvline(value, color="black", ls=":", lw=1.2, label="location")
    fit = cv.symbolic.get(c)
    pruned = f" · pruned in {cv.pruned[c]}/{cv.n_folds} folds" if cv.pruned.get(c) else ""
    ax.set_title(f"{c}" + (f" · {fit.kind} R²={fit.r2:.2f}" if fit is not None else "") + pruned, fontsize=9)
    ax.set_xlabel(f"{c} ({unit})" if unit and unit != "1" else c, fontsize=8)
    ax.set_ylabel(f"Δp {cv.param}", fontsize=8)
    ax.tick_params(labelsize=7)


def curves_png(cv: Curves, covariates: list[str], units: dict[str, str], values: dict[str, float] | None = None,
               ncols: int = 3) -> bytes:
    """PNG bytes of the curves of ``covariates`` (one panel each, ``ncols`` per row)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    n = max(len(covariates), 1)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(3.6 * ncols, 2.8 * nrows), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, c in zip(axes, covariates):
        _axes_curve(ax, cv, c, units.get(c, ""), (values or {}).get(c))
    for ax in axes[len(covariates):]:
        ax.set_axis_off()
    if len(covariates):
        axes[0].legend(fontsize=7, loc="best", frameon=False)
    fig.suptitle(f"{cv.method} curves of {cv.param}", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def curves_table(cv: Curves, covariates: list[str], units: dict[str, str]) -> pd.DataFrame:
    """Tidy table: one row per (covariate, x): x in physical units, fold mean/min/max, each
    fold's curve (``p_fold_K``) and the true curve (NaN where none), all in normalised-p units;
    per covariate (repeated): importance, folds pruned, the symbolic form and its R²."""
    frames = []
    for c in covariates:
        t = cv.truth.get(c)
        fit = cv.symbolic.get(c)
        frames.append(pd.DataFrame({
            "parameter": cv.param, "covariate": c, "unit": units.get(c, ""), "x": cv.xs[c],
            "p_fold_mean": cv.mean[c], "p_fold_min": cv.lo[c], "p_fold_max": cv.hi[c],
            **{f"p_fold_{k}": cv.folds[c][k] for k in range(cv.n_folds)},
            "p_true": t if t is not None else np.nan,
            "importance": float(cv.importance[cv.covariates.index(c)]), "folds_pruned": cv.pruned.get(c, 0),
            "symbolic": fit.formula_physical(c) if fit is not None else "", "symbolic_r2": fit.r2 if fit is not None else np.nan,
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def curves_csv(cv: Curves, covariates: list[str], units: dict[str, str]) -> bytes:
    return curves_table(cv, covariates, units).to_csv(index=False).encode()
