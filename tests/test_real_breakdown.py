"""benchmarks/real_data.py --breakdown: where held-out error lies (known answers on a small table)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

_SPEC = importlib.util.spec_from_file_location("real_data_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "real_data.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_same_cell_in_training_needs_another_fold_in_the_same_cell():
    sites = pd.DataFrame({"site_id": list("abcde"), "lon": 0.0, "lat": 0.0, "fold": [0, 1, 2, 2, 3],
                          "mat_c": [1.0, 1.0, 2.0, 2.0, 3.0], "wetland": [1, 0, 0, 1, 0], "land_forest": [0, 1, 0, 0, 1]})
    # a and b share a cell across folds; c and d share one within a fold (never train for each other)
    np.testing.assert_array_equal(bench._same_cell_in_training(sites), [True, True, False, False, False])


def test_breakdown_scores_each_group(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    obs = np.exp(rng.normal(9, 1, n))
    depth = np.tile([0.05, 0.2, 0.5, 1.5], n // 4)
    site = np.repeat([f"nwca2011:{i}" for i in range(5)] + [f"sodah:{i}" for i in range(5)], 4)
    sim = obs.copy()
    deep = depth > 1.0
    sim[deep] *= np.e  # the deepest bin over-predicted by exactly one log unit; the rest perfect
    pd.DataFrame({"site_id": site, "fold": np.repeat(np.arange(10) % 5, 4), "depth_m": depth, "soc_obs_g_m3": obs,
                  "soc_sim_g_m3": sim}).to_csv(tmp_path / "kan-block2deg-predictions.csv", index=False)
    pd.DataFrame({"site_id": np.unique(site), "lon": 0.0, "lat": 0.0, "fold": np.arange(10) % 5,
                  "mat_c": np.arange(10.0), "wetland": [1] * 5 + [0] * 5}).to_csv(tmp_path / "kan-block2deg-sites.csv",
                                                                                   index=False)
    rows = {r["group"]: r for r in bench.breakdown(tmp_path)}
    assert rows["depth >100cm"]["bias_log"] == pytest.approx(1.0) and rows["depth >100cm"]["sse_share"] == pytest.approx(1.0)
    assert rows["depth 0-10cm"]["nse_log"] == pytest.approx(1.0) and rows["depth 0-10cm"]["bias_log"] == pytest.approx(0.0)
    assert sum(rows[f"depth {b}"]["sse_share"] for b in ("0-10cm", "10-30cm", "30-100cm", ">100cm")) == pytest.approx(1.0)
    assert rows["data NWCA"]["n"] == rows["wetland"]["n"] == 20 and rows["no same cell in training"]["n"] == n
    assert rows["all"]["bias_log"] == pytest.approx(0.25)
