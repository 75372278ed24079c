"""The stored curves of a run (socmap.kan_curves): known answers on hand-set KAN edges, the fold
band, pruning, symbolic fits, histograms, truth, the file's round trip and its staleness check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from socmap import interpret, kan_curves
from socmap.nets.hybrid import HybridModel, HybridSpec
from socmap.runs import open_run

COVS = ["mat_c", "clay_pct", "ph"]
LO, HI = [-5.0, 0.0, 4.0], [25.0, 60.0, 8.5]
PARAMS = ["efolding", "tau4s3"]


def _kan(slopes: np.ndarray, mask: np.ndarray) -> HybridModel:
    """A 1-layer KAN whose edge (j, i) is exactly ``slopes[j, i] · x_scaled`` (no spline part)."""
    torch.manual_seed(0)
    m = HybridModel(HybridSpec("kan", COVS, LO, HI, PARAMS, encoder_kwargs={"grid_size": 4}))
    layer = m.encoder.layers[0]
    with torch.no_grad():
        layer.scale_sp.zero_()
        layer.scale_base.copy_(torch.as_tensor(slopes, dtype=layer.scale_base.dtype))
        layer.mask.copy_(torch.as_tensor(mask, dtype=layer.mask.dtype))
    return m.eval()


def _mlp() -> HybridModel:
    torch.manual_seed(1)
    return HybridModel(HybridSpec("mlp", COVS, LO, HI, PARAMS, encoder_kwargs={"hidden": [8]})).eval()


def _run_folder(tmp_path: Path, models: list[HybridModel], encoder: str, n_sites: int = 40, truth: dict | None = None) -> Path:
    run = tmp_path / f"run-{encoder}"
    files = []
    for k, m in enumerate(models):
        (run / f"folds/fold{k}").mkdir(parents=True)
        torch.save(m.to_checkpoint(), run / f"folds/fold{k}/model.pt")
        files.append(f"folds/fold{k}/model.pt")
    rng = np.random.default_rng(3)
    sites = pd.DataFrame({"site_id": [f"s{i}" for i in range(n_sites)], "lon": -100.0, "lat": 40.0, "fold": 0})
    for c, lo, hi in zip(COVS, LO, HI):
        sites[c] = rng.uniform(lo, hi, n_sites)
    sites.to_csv(run / "sites.csv", index=False)
    record = {"name": run.name, "schema_version": 2, "encoder": encoder, "parameters": PARAMS, "fold_models": files,
              "config": {"encoder": encoder, "folds": len(models), "params": PARAMS},
              "data": {"entry": "test", "kind": "synthetic", "dir": str(tmp_path), "covariates": COVS,
                       "covariate_units": ["degC", "%", "1"]}}
    (run / "run.json").write_text(json.dumps(record))
    if truth is not None:
        (run / "truth.json").write_text(json.dumps(truth))
    return run


def test_kan_edges_known_answer_band_pruning_and_symbolic(tmp_path):
    slopes = np.array([[0.6, -1.2, 0.0], [0.0, 0.9, 0.3]])
    masks = [np.ones((2, 3)), np.array([[1, 1, 1], [1, 1, 0]])]  # fold 1 prunes ph -> tau4s3
    models = [_kan(slopes * (1 + 0.1 * k), masks[k]) for k in range(2)]
    run = open_run(_run_folder(tmp_path, models, "kan"))
    ds = kan_curves.compute_kan_curves(run)
    assert ds.attrs["method"] == kan_curves.KAN_EDGE and ds.attrs["histogram_of"] == "training sites"
    assert {k: ds.sizes[k] for k in ("parameter", "covariate", "fold", "grid")} == {
        "parameter": 2, "covariate": 3, "fold": 2, "grid": kan_curves.GRID_POINTS}
    x = ds["x"].values
    np.testing.assert_allclose(x[:, 0], LO)
    np.testing.assert_allclose(x[:, -1], HI)
    # edge (j, i) of fold k: slope · (x − lo)/(hi − lo), times the hard-sigmoid's slope 1/6, masked
    u = (x - np.array(LO)[:, None]) / (np.array(HI) - np.array(LO))[:, None]
    for k in range(2):
        expect = slopes[:, :, None] * (1 + 0.1 * k) * u[None] / 6.0 * masks[k][:, :, None]
        np.testing.assert_allclose(ds["curve"].values[:, :, k], expect, atol=1e-6)
        for j, p in enumerate(PARAMS):  # and the same as interpret.edge_curve
            np.testing.assert_allclose(ds["curve"].values[j, 1, k], interpret.edge_curve(models[k], p, "clay_pct", x[1]))
    c = ds["curve"].values
    np.testing.assert_allclose(ds["curve_mean"], c.mean(2))
    np.testing.assert_allclose(ds["curve_min"], c.min(2))
    np.testing.assert_allclose(ds["curve_max"], c.max(2))
    np.testing.assert_array_equal(ds["pruned"].values, np.stack([1 - m for m in masks], -1))
    np.testing.assert_allclose(ds["importance"].sum("covariate"), 1.0, rtol=1e-6)  # float32 scores
    imp = ds["importance_mean"].values
    assert imp[0, 1] > imp[0, 0] > imp[0, 2]  # |slope| order for efolding; mat_c/ph edges with 0 slope score 0
    # straight edges are called linear, with R² 1; a zero edge gets no fit
    assert ds["symbolic_kind"].values[0, 1] == "linear" and ds["symbolic_r2"].values[0, 1] == pytest.approx(1.0, abs=1e-9)
    assert ds["symbolic_kind"].values[0, 2] == "" and np.isnan(ds["symbolic_r2"].values[0, 2])
    assert list(ds["symbolic_kind_fold"].values[1, 2]) == ["linear", ""]  # fold 1 pruned it
    fit = interpret.suggest_symbolic(x[1], ds["curve_mean"].values[1, 1])
    assert ds["symbolic_formula"].values[1, 1] == fit.formula
    # histograms: every training site counted once per covariate, on x's range
    sites = pd.read_csv(run.path / "sites.csv")
    assert (ds["hist_count"].sum("bin").values == len(sites)).all()
    np.testing.assert_allclose(ds["hist_edges"].values[:, [0, -1]], x[:, [0, -1]])
    assert np.isnan(ds["truth"].values).all() and ds.attrs["truth"] == 0


def test_partial_dependence_for_an_mlp(tmp_path):
    models = [_mlp(), _mlp()]
    run = open_run(_run_folder(tmp_path, models, "mlp", n_sites=30))
    ds = kan_curves.compute_kan_curves(run)
    assert ds.attrs["method"] == kan_curves.PARTIAL_DEPENDENCE and not ds["pruned"].values.any()
    X = pd.read_csv(run.path / "sites.csv")[COVS].to_numpy()
    x = ds["x"].values[2]
    np.testing.assert_allclose(ds["curve"].values[1, 2, 0], interpret.partial_dependence(models[0], X, "tau4s3", "ph", x), rtol=1e-6)
    np.testing.assert_allclose(ds["importance"].sum("covariate"), 1.0, rtol=1e-6)  # float32 scores


def test_truth_is_stored_where_the_twin_has_an_edge(tmp_path):
    from socmap.truth import truth_edge_function

    truth = {"p_range": [0.2, 0.8], "parameters": {"tau4s3": {"edges": [
        {"covariate": "clay_pct", "type": "quadratic", "importance": 1.0, "x_min": 0.0, "x_max": 60.0,
         "a": 1.0, "b": 0.0, "c": 0.3, "d": 0.1}]}}}
    run = open_run(_run_folder(tmp_path, [_kan(np.ones((2, 3)), np.ones((2, 3)))], "kan", truth=truth))
    ds = kan_curves.compute_kan_curves(run)
    t = ds["truth"].values
    np.testing.assert_allclose(t[1, 1], truth_edge_function(truth, "tau4s3", "clay_pct", ds["x"].values[1]))
    assert np.isnan(t[0]).all() and np.isnan(t[1, [0, 2]]).all() and ds.attrs["truth"] == 1


def test_file_round_trip_and_staleness(tmp_path):
    models = [_kan(np.full((2, 3), 0.5), np.ones((2, 3)))]
    run_dir = _run_folder(tmp_path, models, "kan")
    path = kan_curves.write_kan_curves(open_run(run_dir))
    assert path == run_dir / "kan_curves.nc" and not list(run_dir.glob(".kan_curves.nc.tmp-*"))
    ds = kan_curves.read_kan_curves(run_dir)
    fresh = kan_curves.compute_kan_curves(open_run(run_dir))
    for v in ("curve", "importance", "hist_count", "symbolic_r2"):
        np.testing.assert_allclose(ds[v].values, fresh[v].values)
    assert list(ds["symbolic_kind"].values.ravel()) == list(fresh["symbolic_kind"].values.ravel())
    assert [str(f) for f in ds["fold"].values] == ["folds/fold0/model.pt"]
    # load_or_compute reads the file: no model is loaded
    import socmap.runs

    def no_models(*a, **k):
        raise AssertionError("a fold model was loaded")

    original = socmap.runs._load_model
    socmap.runs._load_model = no_models
    try:
        assert kan_curves.load_or_compute(run_dir) is not None
    finally:
        socmap.runs._load_model = original
    # a re-trained model makes the file stale: recomputed and rewritten
    torch.save(_kan(np.full((2, 3), -0.5), np.ones((2, 3))).to_checkpoint(), run_dir / "folds/fold0/model.pt")
    assert kan_curves.read_kan_curves(run_dir) is None
    again = kan_curves.load_or_compute(run_dir)
    assert np.sign(again["curve"].values[0, 0, 0, -1]) == -1
    assert kan_curves.read_kan_curves(run_dir) is not None


def test_baseline_run_has_no_curves(tmp_path, monkeypatch):
    run = open_run(_run_folder(tmp_path, [_kan(np.ones((2, 3)), np.ones((2, 3)))], "kan"))
    monkeypatch.setattr(run, "models", [])
    assert kan_curves.compute_kan_curves(run) is None


def test_socmap_map_stores_the_curves_of_the_fold_models(mapped_run):
    """`socmap map` writes kan_curves.nc beside the store, of the same fold models, not stale."""
    from socmap.store import open_store

    ds = kan_curves.read_kan_curves(mapped_run)
    assert ds is not None and ds.attrs["method"] == kan_curves.KAN_EDGE
    attrs = open_store(mapped_run).attrs
    assert [str(f) for f in ds["fold"].values] == list(attrs["fold_models"])
    assert [str(p) for p in ds["parameter"].values] == list(attrs["parameters"])
    assert [str(c) for c in ds["covariate"].values] == list(attrs["covariates"])
    run = open_run(mapped_run)
    p, c = str(ds["parameter"].values[0]), str(ds["covariate"].values[0])
    np.testing.assert_allclose(ds["curve"].values[0, 0, 0], interpret.edge_curve(run.models[0], p, c, ds["x"].values[0]))
