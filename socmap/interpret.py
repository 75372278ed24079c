"""Reading what an encoder learned: edge curves and importances, partial dependence,
Jacobian importance, symbolic suggestions, and recovery scores against a known truth.

All curves are functions of a covariate in its **physical units**, giving the contribution to
the normalised parameter p (0–1), so learned and true curves can be overlaid.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from socmap import metrics
from socmap.clm5.parameters import INDEX
from socmap.nets.hybrid import HybridModel


def _x(data_covariates: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(data_covariates), dtype=torch.float32)


@torch.no_grad()
def edge_curve(model: HybridModel, param: str, covariate: str, xs_physical: np.ndarray) -> np.ndarray:
    """Learned contribution of ``covariate`` to ``param`` (p units) at physical values ``xs``.

    For a 1-layer KAN this is the edge function scaled by the bounding layer's slope
    (exact inside the hard-sigmoid's linear range); otherwise use :func:`partial_dependence`.
    """
    if not (model.is_kan and len(model.encoder.layers) == 1):
        raise ValueError("edge_curve needs a 1-layer KAN; use partial_dependence for MLPs and deep KANs")
    j = model.param_names.index(param)
    i = model.spec.covariate_names.index(covariate)
    scaled = (np.asarray(xs_physical, dtype=np.float64) - model.spec.covariate_lo[i]) / (model.spec.covariate_hi[i] - model.spec.covariate_lo[i])
    return model.encoder.edge_curve(j, i, scaled) * model.pdp_slope_to_p()


@torch.no_grad()
def partial_dependence_all(model: HybridModel, covariates: np.ndarray, covariate: str, xs_physical: np.ndarray, max_rows: int = 512) -> np.ndarray:
    """PD curves of every parameter at once: mean over (up to ``max_rows``) sites of p with
    ``covariate`` set to each x.

    Parameters
    ----------
    covariates : [N, C] covariates in physical units (the first ``max_rows`` rows are used).
    xs_physical : [G] values of ``covariate`` in its physical units.

    Returns
    -------
    [G, 21] mean normalised parameters p (0–1), columns in :data:`socmap.clm5.parameters.INDEX`
    order; all G·N rows go through the model in one batch.
    """
    model.eval()
    x = _x(covariates[:max_rows])
    i = model.spec.covariate_names.index(covariate)
    grid = torch.as_tensor(np.asarray(xs_physical, dtype=np.float64), dtype=x.dtype)
    rows = x.unsqueeze(0).repeat(len(grid), 1, 1)  # [G, N, C]
    rows[:, :, i] = grid[:, None]
    p = model(rows.reshape(-1, x.shape[1]))
    return p.reshape(len(grid), len(x), -1).mean(1).double().numpy()


def partial_dependence(model: HybridModel, covariates: np.ndarray, param: str, covariate: str, xs_physical: np.ndarray, max_rows: int = 512) -> np.ndarray:
    """PD curve of one parameter: :func:`partial_dependence_all`'s column ``param``, [G] p (0–1)."""
    return partial_dependence_all(model, covariates, covariate, xs_physical, max_rows)[:, INDEX[param]]


def importance(model: HybridModel, covariates: np.ndarray, method: str | None = None) -> np.ndarray:
    """Normalised importance [n_params_predicted, n_covariates], each row summing to 1.

    ``method``: ``"edge"`` (KAN edge scores, default for KANs), ``"pdv"`` (std of the partial-
    dependence curve, default otherwise) or ``"jacobian"`` (mean |dp/dx| on scaled inputs).
    """
    method = method or ("edge" if model.is_kan and len(model.encoder.layers) == 1 else "pdv")
    x = _x(covariates)
    if method == "edge":
        with torch.no_grad():
            imp = model.encoder.edge_importance(model.scaler(x))[0].cpu().numpy()
    elif method == "jacobian":
        s = model.scaler(x).clone().requires_grad_(True)
        rows = []
        for j in range(len(model.param_names)):
            z = model.encoder(s)
            p, _ = model.bound(z)
            (g,) = torch.autograd.grad(p[:, j].sum(), s)
            rows.append(g.abs().mean(0).numpy())
        imp = np.stack(rows)
    elif method == "pdv":
        rows = []
        for name in model.param_names:
            rows.append([
                np.std(partial_dependence(model, covariates, name, c, np.quantile(covariates[:, i], np.linspace(0.02, 0.98, 21))))
                for i, c in enumerate(model.spec.covariate_names)
            ])
        imp = np.asarray(rows)
    else:
        raise ValueError(f"unknown importance method {method!r}; use edge, pdv or jacobian")
    return imp / np.clip(imp.sum(1, keepdims=True), 1e-12, None)


# ----------------------------------------------------------------------------------------
# symbolic suggestions
# ----------------------------------------------------------------------------------------

#: The symbolic library, simplest first: this order is the parsimony order of
#: :func:`suggest_symbolic` (linear has no inner shape; the others have the inner a·x' + b).
_LIBRARY = {
    "linear": lambda x: x,
    "quadratic": lambda x: x**2,
    "sqrt": lambda x: np.sqrt(np.abs(x)),
    "log": lambda x: np.log(np.abs(x) + 1.0),
    "exp": lambda x: np.exp(x),
    "abs": lambda x: np.abs(x),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
}

#: A simpler form is preferred when its R² is within this of the best form's R².
PARSIMONY_R2_TOLERANCE = 0.01


@dataclass
class SymbolicFit:
    """``y ≈ c·f(a·x' + b) + d`` with x' = (x − x_lo)/(x_hi − x_lo); ``formula`` is written in x'."""

    formula: str
    kind: str
    r2: float
    coefficients: tuple[float, float, float, float]
    x_lo: float = 0.0
    x_hi: float = 1.0

    def physical(self, name: str = "x") -> tuple[float, float, float, float]:
        """(α, β, c, d) of ``c·f(α·x + β) + d`` with x in its physical units (α in 1/unit)."""
        a, b, c, d = self.coefficients
        span = self.x_hi - self.x_lo if self.x_hi > self.x_lo else 1.0
        return a / span, b - a * self.x_lo / span, c, d

    def formula_physical(self, name: str = "x") -> str:
        """The fit with x in physical units, e.g. ``-0.0123·clay_pct +0.31`` or
        ``0.2·sigmoid(0.15·mat_c -1.2) +0.05`` (linear: slope per unit and intercept)."""
        alpha, beta, c, d = self.physical(name)
        if self.kind == "linear":
            return f"{c * alpha:.3g}·{name} {c * beta + d:+.3g}"
        return f"{c:.3g}·{self.kind}({alpha:.3g}·{name} {beta:+.3g}) {d:+.3g}"


def _symbolic_grid(kind: str) -> np.ndarray:
    """Candidate (a, b) pairs of one library entry [K, 2], in search order (a outer, b inner)."""
    if kind == "linear":
        return np.array([[1.0, 0.0]])
    a, b = np.meshgrid(np.linspace(-3, 3, 25), np.linspace(-2, 2, 17), indexing="ij")
    ab = np.column_stack([a.ravel(), b.ravel()])
    return ab[ab[:, 0] != 0]


def suggest_symbolic(xs: np.ndarray, ys: np.ndarray, r2_tolerance: float = PARSIMONY_R2_TOLERANCE) -> SymbolicFit:
    """The simplest form of a small library ``c·f(a·x' + b) + d`` that fits a curve about as
    well as the best one (x' = x scaled to [0, 1]).

    For each f, (a, b) are searched on a coarse grid and (c, d) solved by least squares (in
    closed form, all grid points at once); within one f the earliest grid point wins ties
    (R² larger by more than 1e-9 replaces it). Parsimony rule: among the library's forms,
    in the order of ``_LIBRARY`` (linear, quadratic, sqrt, log, exp, abs, sigmoid: simplest
    first), the first whose R² is at least the best R² minus ``r2_tolerance`` is returned, so
    a straight line is called linear, not a sigmoid of equal fit. ``r2_tolerance=0`` gives
    the best fit (ties to the simpler form).

    Parameters
    ----------
    xs, ys : [G] the curve (x in any units; y the contribution, e.g. p units).
    r2_tolerance : R² a simpler form may give up (default :data:`PARSIMONY_R2_TOLERANCE`).

    Returns
    -------
    SymbolicFit with ``x_lo``/``x_hi`` set, so :meth:`SymbolicFit.formula_physical` writes
    the formula in the covariate's units.
    """
    if r2_tolerance < 0:
        raise ValueError(f"r2_tolerance must be >= 0, got {r2_tolerance}")
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    lo, hi = xs.min(), xs.max()
    u = (xs - lo) / (hi - lo if hi > lo else 1.0)
    yc = ys - ys.mean()
    sst = float((yc**2).sum())
    per_kind: list[SymbolicFit] = []
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind, f in _LIBRARY.items():
            ab = _symbolic_grid(kind)
            g = f(ab[:, :1] * u[None, :] + ab[:, 1:])  # [K, G]
            ok = np.isfinite(g).all(1) & (g.std(1) >= 1e-12)
            g, ab = g[ok], ab[ok]
            if not len(ab):
                continue
            gc = g - g.mean(1, keepdims=True)
            c = (gc @ yc) / (gc**2).sum(1)
            d = ys.mean() - c * g.mean(1)
            sse = ((ys[None, :] - (c[:, None] * g + d[:, None])) ** 2).sum(1)
            r2 = np.where(np.isfinite(1.0 - sse / sst), 1.0 - sse / sst, -np.inf)
            k = 0
            for j in range(1, len(r2)):  # earliest grid point within 1e-9 of the kind's best
                if r2[j] > r2[k] + 1e-9:
                    k = j
            a, b = ab[k]
            inner = "x'" if kind == "linear" else f"{a:.2g}·x'{b:+.2g}"
            per_kind.append(SymbolicFit(f"{c[k]:.3g}·{kind}({inner}) {d[k]:+.3g}", kind, float(r2[k]),
                                        (float(a), float(b), float(c[k]), float(d[k])), float(lo), float(hi)))
    if r2_tolerance == 0:  # exhaustive: the best, replaced only by a larger R² (ties: simpler)
        best = per_kind[0]
        for fit in per_kind[1:]:
            if fit.r2 > best.r2 + 1e-9:
                best = fit
        return best
    top = max(fit.r2 for fit in per_kind)
    return next(fit for fit in per_kind if fit.r2 >= top - r2_tolerance)


# ----------------------------------------------------------------------------------------
# recovery against a known truth (synthetic twin)
# ----------------------------------------------------------------------------------------

def parameter_recovery(true_p: np.ndarray, pred_p: np.ndarray, params) -> dict[str, dict[str, float]]:
    """Per predicted parameter R² (1 - SSE/SST) and Pearson r of p on held-out sites (docs/model.md P13)."""
    out = {}
    for name in params:
        j = INDEX[name]
        out[name] = {"r2": metrics.r2(true_p[:, j], pred_p[:, j]), "corr": metrics.pearson_r(true_p[:, j], pred_p[:, j])}
    return out


def _centered_r2(truth: np.ndarray, learned: np.ndarray) -> float:
    """R² of a learned curve against the true one after removing each curve's mean (additive
    constants are not identifiable between the edges of one parameter)."""
    return metrics.r2(truth - truth.mean(), learned - learned.mean())


def relationship_recovery(models: list[HybridModel], data) -> dict[str, dict]:
    """Per parameter: KL(true ‖ learned importance) and, per true edge, the curve R² and the
    edge's importance rank, averaged over the folds' models (docs/model.md §9.2, §8.2)."""
    from socmap.truth import truth_edge_function

    truth = data.truth
    cov = data.covariates
    names = list(data.covariate_names)
    out: dict[str, dict] = {}
    for param in models[0].param_names:
        spec = truth["parameters"].get(param)
        if spec is None:
            continue
        t = np.zeros(len(names))
        for e in spec["edges"]:
            t[names.index(e["covariate"])] += e["importance"]
        kls, edge_rows = [], {e["covariate"]: {"r2": [], "rank": []} for e in spec["edges"]}
        for model in models:
            imp = importance(model, cov)[model.param_names.index(param)]
            kls.append(float(np.sum(t * np.log(1e-6 + t / np.clip(imp, 1e-12, None)))))
            order = list(np.argsort(-imp))
            for e in spec["edges"]:
                c = e["covariate"]
                i = names.index(c)
                xs = np.quantile(cov[:, i], np.linspace(0.01, 0.99, 101))
                true_curve = truth_edge_function(truth, param, c, xs)
                if model.is_kan and len(model.encoder.layers) == 1:
                    learned = edge_curve(model, param, c, xs)
                else:
                    learned = partial_dependence(model, cov, param, c, xs)
                edge_rows[c]["r2"].append(_centered_r2(true_curve, learned))
                edge_rows[c]["rank"].append(order.index(i) + 1)
        n_true = len(spec["edges"])
        out[param] = {
            "kl": float(np.mean(kls)),
            "edges": [
                {"covariate": c, "type": next(e["type"] for e in spec["edges"] if e["covariate"] == c),
                 "curve_r2": float(np.mean(v["r2"])), "curve_r2_min": float(np.min(v["r2"])),
                 "mean_rank": float(np.mean(v["rank"])), "top_edge_all_folds": bool(max(v["rank"]) <= n_true)}
                for c, v in edge_rows.items()
            ],
        }
    return out
