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
def partial_dependence(model: HybridModel, covariates: np.ndarray, param: str, covariate: str, xs_physical: np.ndarray, max_rows: int = 512) -> np.ndarray:
    """PD curve: mean over (up to ``max_rows``) sites of p_param with ``covariate`` set to each x.

    Parameters
    ----------
    covariates : [N, C] covariates in physical units (the first ``max_rows`` rows are used).
    xs_physical : [G] values of ``covariate`` in its physical units.

    Returns
    -------
    [G] mean normalised parameter p (0–1); all G·N rows go through the model in one batch.
    """
    model.eval()
    x = _x(covariates[:max_rows])
    i = model.spec.covariate_names.index(covariate)
    grid = torch.as_tensor(np.asarray(xs_physical, dtype=np.float64), dtype=x.dtype)
    rows = x.unsqueeze(0).repeat(len(grid), 1, 1)  # [G, N, C]
    rows[:, :, i] = grid[:, None]
    p = model(rows.reshape(-1, x.shape[1]))[:, INDEX[param]]
    return p.reshape(len(grid), len(x)).mean(1).double().numpy()


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

_LIBRARY = {
    "linear": lambda x: x,
    "quadratic": lambda x: x**2,
    "sqrt": lambda x: np.sqrt(np.abs(x)),
    "log": lambda x: np.log(np.abs(x) + 1.0),
    "exp": lambda x: np.exp(x),
    "abs": lambda x: np.abs(x),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
}


@dataclass
class SymbolicFit:
    formula: str
    kind: str
    r2: float
    coefficients: tuple[float, float, float, float]


def _symbolic_grid(kind: str) -> np.ndarray:
    """Candidate (a, b) pairs of one library entry [K, 2], in search order (a outer, b inner)."""
    if kind == "linear":
        return np.array([[1.0, 0.0]])
    a, b = np.meshgrid(np.linspace(-3, 3, 25), np.linspace(-2, 2, 17), indexing="ij")
    ab = np.column_stack([a.ravel(), b.ravel()])
    return ab[ab[:, 0] != 0]


def suggest_symbolic(xs: np.ndarray, ys: np.ndarray) -> SymbolicFit:
    """Best of a small library ``c·f(a·x' + b) + d`` fitted to a curve (x' = x scaled to [0, 1]).

    For each f, (a, b) are searched on a coarse grid and (c, d) solved by least squares (in
    closed form, all grid points at once); the candidate with the highest R² wins, scanning in
    library and grid order and replacing the best only when R² is larger by more than 1e-9
    (so ties favour the simpler, earlier entry).

    Parameters
    ----------
    xs, ys : [G] the curve (x in any units; y the contribution, e.g. p units).
    """
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    lo, hi = xs.min(), xs.max()
    u = (xs - lo) / (hi - lo if hi > lo else 1.0)
    yc = ys - ys.mean()
    sst = float((yc**2).sum())
    best: SymbolicFit | None = None
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind, f in _LIBRARY.items():
            ab = _symbolic_grid(kind)
            g = f(ab[:, :1] * u[None, :] + ab[:, 1:])  # [K, G]
            ok = np.isfinite(g).all(1) & (g.std(1) >= 1e-12)
            g, ab = g[ok], ab[ok]
            gc = g - g.mean(1, keepdims=True)
            c = (gc @ yc) / (gc**2).sum(1)
            d = ys.mean() - c * g.mean(1)
            sse = ((ys[None, :] - (c[:, None] * g + d[:, None])) ** 2).sum(1)
            r2 = 1.0 - sse / sst
            for k in range(len(ab)):
                if best is None or r2[k] > best.r2 + 1e-9:
                    a, b = ab[k]
                    inner = "x'" if kind == "linear" else f"{a:.2g}·x'{b:+.2g}"
                    best = SymbolicFit(f"{c[k]:.3g}·{kind}({inner}) {d[k]:+.3g}", kind, float(r2[k]),
                                       (float(a), float(b), float(c[k]), float(d[k])))
    assert best is not None
    return best


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
