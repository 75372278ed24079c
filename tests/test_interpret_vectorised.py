"""The vectorised symbolic search and partial dependence agree with the straightforward loops."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from socmap import metrics
from socmap.clm5.parameters import INDEX
from socmap.interpret import _LIBRARY, partial_dependence, suggest_symbolic
from socmap.nets.hybrid import HybridModel, HybridSpec


def _symbolic_by_loops(xs: np.ndarray, ys: np.ndarray) -> tuple[str, str, float]:
    """The original grid search: one least-squares solve per (f, a, b)."""
    u = (xs - xs.min()) / (xs.max() - xs.min())
    best = None
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind, f in _LIBRARY.items():
            for a in [1.0] if kind == "linear" else np.linspace(-3, 3, 25):
                if a == 0:
                    continue
                for b in [0.0] if kind == "linear" else np.linspace(-2, 2, 17):
                    g = f(a * u + b)
                    if not np.all(np.isfinite(g)) or np.std(g) < 1e-12:
                        continue
                    design = np.column_stack([g, np.ones_like(g)])
                    (c, d), *_ = np.linalg.lstsq(design, ys, rcond=None)
                    r2 = metrics.r2(ys, design @ np.array([c, d]))
                    if best is None or r2 > best[2] + 1e-9:
                        inner = "x'" if kind == "linear" else f"{a:.2g}·x'{b:+.2g}"
                        best = (f"{c:.3g}·{kind}({inner}) {d:+.3g}", kind, float(r2))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_suggest_symbolic_matches_the_loop_search(seed):
    rng = np.random.default_rng(seed)
    xs = np.linspace(rng.uniform(-50, 0), rng.uniform(1, 80), 81)
    u = (xs - xs.min()) / np.ptp(xs)
    kind = list(_LIBRARY)[seed % len(_LIBRARY)]
    ys = 0.2 * _LIBRARY[kind](rng.uniform(-2, 2) * u + rng.uniform(-1, 1)) + rng.normal(0, 0.01, xs.size)
    fast = suggest_symbolic(xs, ys, r2_tolerance=0.0)  # the exhaustive search, no parsimony
    formula, kind_loop, r2 = _symbolic_by_loops(xs, ys)
    assert (fast.formula, fast.kind) == (formula, kind_loop)
    assert fast.r2 == pytest.approx(r2, abs=1e-9)


def test_partial_dependence_matches_one_value_at_a_time():
    torch.manual_seed(0)
    names = ["mat_c", "map_mm", "clay_pct"]
    spec = HybridSpec(encoder="mlp", covariate_names=names, covariate_lo=[-5.0, 100.0, 0.0],
                      covariate_hi=[25.0, 2000.0, 60.0], params=["tau4s3", "fs1s3"])
    model = HybridModel(spec).eval()
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.uniform(-5, 25, 300), rng.uniform(100, 2000, 300), rng.uniform(0, 60, 300)])
    grid = np.linspace(0.0, 60.0, 13)
    pd_fast = partial_dependence(model, X, "tau4s3", "clay_pct", grid, max_rows=200)
    x = torch.as_tensor(X[:200], dtype=torch.float32)
    slow = []
    with torch.no_grad():
        for v in grid:
            xv = x.clone()
            xv[:, 2] = float(v)
            slow.append(float(model(xv)[:, INDEX["tau4s3"]].mean()))
    np.testing.assert_allclose(pd_fast, slow, rtol=1e-6, atol=1e-7)
    assert np.ptp(pd_fast) > 0  # the curve moves: the comparison is not between two constants
