"""Dashboard view classes without a browser: parameters -> plot objects."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pn = pytest.importorskip("panel")
hv = pytest.importorskip("holoviews")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from dashboard_fixtures import build_run

    from dashboards.run import load_run

    cached = Path(__file__).resolve().parent.parent / "test-artifacts" / "dash-fixtures"
    root = cached if (cached / "runs" / "kan" / "maps.zarr").exists() else tmp_path_factory.mktemp("dash")
    return load_run(str(build_run(root)))


def test_layer_switch_changes_image_data(run):
    from dashboards.views import MapExplorer

    m = MapExplorer(run)
    assert m.layer == "soc_stock_0_30cm"
    a = m.image().dimension_values(2)
    m.layer = "tau4s3"
    b = m.image()
    assert b.vdims[0].name == "tau4s3" and b.vdims[0].unit == "yr"
    assert not np.allclose(np.nan_to_num(a), np.nan_to_num(b.dimension_values(2)))
    assert "yr" in m.colorbar_title() and "passive SOM" in m.title()
    m.layer, m.soc_layer = "soc", 5
    arr5 = m.current_array().copy()
    m.soc_layer = 0
    assert not np.allclose(np.nan_to_num(arr5), np.nan_to_num(m.current_array()))
    assert "layer 0" in m.title()
    # the plot builds (rasterized dynamic map with outlines and sites)
    assert isinstance(m.plot(), hv.DynamicMap)


def test_difference_layers_are_diverging_and_symmetric(run):
    from dashboards.views import MapExplorer

    m = MapExplorer(run)
    m.layer = "diff_default_soc_stock_0_30cm"
    style = m._style()
    lo, hi = style["clim"]
    assert lo == pytest.approx(-hi) and hi > 0
    assert style["cmap"] == "RdBu_r"
    m.layer = "soc_stock_0_30cm"
    assert m._style()["cmap"] != "RdBu_r"
    lo, hi = m._style()["clim"]
    assert 0 < lo < hi


def test_kan_inspector_labels_edges_pruned_in_every_fold(run):
    from dashboards.views import KanInspector, MapExplorer

    j = run.analysis.covariate_names.index("clay_pct")
    masks = [mdl.encoder.layers[0].mask for mdl in run.analysis.models]
    saved = [mk.clone() for mk in masks]
    try:
        for mdl, mk in zip(run.analysis.models, masks):
            mk[mdl.param_names.index("fs1s3"), j] = 0.0
        run.analysis.forget("fs1s3")
        plots = KanInspector(run, map_view=MapExplorer(run), parameter="fs1s3").curve_plots()
        titles = [p.opts.get("plot").kwargs["title"] for p in plots]
        assert [t.split(" · ")[0] for t in titles if "pruned" in t] == ["clay_pct"]
    finally:
        for mk, old in zip(masks, saved):
            mk.copy_(old)
        run.analysis.forget("fs1s3")


def test_kan_inspector_curves_ordered_by_importance(run):
    from dashboards.views import KanInspector, MapExplorer

    m = MapExplorer(run)
    k = KanInspector(run, map_view=m, parameter="tau4s3")
    plots = k.curve_plots()
    names = run.analysis.covariate_names
    assert len(plots) == len(names)
    cv = run.analysis.curves("tau4s3")
    assert sorted(cv.covariates) == sorted(names)
    assert np.all(np.diff(cv.importance) <= 1e-12)
    assert [p.get(0).kdims[0].name for p in plots] == cv.covariates
    titles = [p.opts.get("plot").kwargs["title"] for p in plots]
    assert all("R²" in t or "flat" in t or "pruned" in t for t in titles) and titles[0].startswith(cv.covariates[0])
    # synthetic run: the true curves are overlaid for the true edges
    true_covs = {e["covariate"] for e in run.truth["parameters"]["tau4s3"]["edges"]}
    with_truth = {p.get(0).kdims[0].name for p in plots if any(getattr(el, "label", "") == "true" for el in p)}
    assert with_truth == true_covs
    # a tap marks the location on every curve and gives one bar per covariate
    m.tap(-95.5, 40.5)
    values = k.location_values()
    marked = k.curve_plots(values)
    assert all(any(isinstance(el, hv.VLine) for el in p) for p in marked)
    bars = k.contribution_bars(values)
    assert len(bars) == len(names)


def test_site_view_obs_and_sim(run):
    from dashboards.views import MapExplorer, SiteView

    m = MapExplorer(run)
    s = SiteView(run, map_view=m)
    site = run.sites.summary.iloc[3]
    m.tap(float(site["lon"]), float(site["lat"]))
    assert s.site == site["site_id"]
    plot = s.profile_plot()
    labels = [el.label for el in plot]
    assert "observed" in labels and "simulated (held-out fold)" in labels
    obs = s.observations()
    scat = [el for el in plot if el.label == "observed"][0]
    np.testing.assert_allclose(np.sort(scat.dimension_values(0)), np.sort(obs["soc_obs_g_m3"].to_numpy()))
    assert labels.count("fold models") == len(run.analysis.models)
    table = s.parameter_table()
    assert list(table["parameter"]) == run.parameters and "learned" in table


def test_summary_fields_and_export(run, tmp_path):
    import rasterio

    from dashboards.views import ParameterFields, RunSummary

    summary = RunSummary(run)
    t = summary.metrics_table()
    assert "NSE" in t and "mean" in set(t["fold"])
    # per fold, what the KAN's sparsify/prune/refit phases left (or that the plain fit was kept)
    for f, label in zip(run.record["metrics"]["cv"]["folds"], t["KAN model"]):
        if f["selection"]["kept"] == "final":
            assert label == f"pruned to {sum(f['edges_kept'])} edges"
        else:
            assert label.startswith("plain fit")
    assert summary.recovery_table() is not None
    assert isinstance(summary.scatter(), hv.Overlay)
    fields = ParameterFields(run)
    assert fields.names() == run.parameters
    fields.which = "all 21"
    assert fields.names()[:4] == run.parameters and len(fields.names()) == 21
    out = tmp_path / "x.tif"
    out.write_bytes(run.layers.geotiff_bytes("soc", 3).getvalue())
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 4326
        a = src.read(1)
        assert src.width == len(run.layers.x) and src.height == len(run.layers.y)
        np.testing.assert_allclose(a, run.layers.array("soc", 3), equal_nan=True)
        assert src.transform.e < 0  # north up


def test_app_builds(run):
    from dashboards.app import build_app

    tpl = build_app([run.path])
    assert isinstance(tpl, pn.template.FastListTemplate)
    dash = tpl.dashboard
    assert dash._filename() == "kan_soc_stock_0_30cm.tif"
    dash.map.layer = "soc"
    assert dash.download.filename == "kan_soc_layer00.tif"


def test_views_read_only_the_run_folder(run, tmp_path, monkeypatch):
    """A copy of the run folder whose data folder is gone: every view builds, and every file the
    dashboard opens lies inside the run folder (the run-folder contract)."""
    import json

    import pandas as pd
    import xarray as xr

    from dashboards.run import RunData
    from dashboards.views import KanInspector, MapExplorer, SiteView

    copy = tmp_path / "elsewhere" / "kan"
    shutil.copytree(run.path, copy)
    record = json.loads((copy / "run.json").read_text())
    record["data"]["dir"] = str(tmp_path / "no-such-data-folder")
    (copy / "run.json").write_text(json.dumps(record))

    opened: list[Path] = []
    for owner, name in [(pd, "read_csv"), (xr, "open_zarr"), (Path, "read_text")]:
        original = getattr(owner, name)

        def spy(first, *args, _original=original, **kwargs):
            opened.append(Path(first).resolve())
            return _original(first, *args, **kwargs)

        monkeypatch.setattr(owner, name, spy)

    r = RunData(copy)
    m = MapExplorer(r)
    site = str(r.sites.summary["site_id"].iloc[5])
    s = SiteView(r, map_view=m, site=site)
    folds = s.fold_profiles()
    k = list(r.layers.ds["site_id"].values).index(site)
    np.testing.assert_allclose(folds, r.layers.ds["site_soc_fold"].values[k])
    assert folds.shape == (len(r.analysis.models), r.layers.n_layers) and np.isfinite(folds).all()
    curves = [el for el in s.profile_plot() if el.label == "fold models"]
    np.testing.assert_allclose(curves[0].dimension_values(0), folds[0][r.layers.depth_m <= curves[0].dimension_values(1).max()])
    table = s.parameter_table()
    assert {"learned", "true"} <= set(table) and table["true"].notna().all()
    assert len(KanInspector(r, map_view=m, parameter="tau4s3").curve_plots()) == len(r.analysis.covariate_names)
    outside = [p for p in opened if copy.resolve() not in p.parents and "site-packages" not in str(p) and p.suffix != ".geojson"]
    assert opened and not outside, outside
