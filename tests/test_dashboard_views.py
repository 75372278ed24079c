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


def test_map_figure_follows_the_parameters(run):
    """The Map tab's Bokeh figure: built once, then a layer, colour, site or click change
    replaces its data and colour mapping in place."""
    from bokeh import events

    from dashboards.map_figure import palette
    from dashboards.views import MapExplorer

    m = MapExplorer(run)
    assert not m.rasterized
    f = m.figure()
    assert m.figure() is f
    shown = f.image.data["image"][0]
    arr = run.layers.array("soc_stock_0_30cm")
    assert run.layers.y[0] > run.layers.y[-1]  # the store runs north to south; the glyph south to north
    np.testing.assert_array_equal(shown, arr[::-1])
    left, bottom, right, top = run.layers.bounds
    assert (f.image.data["x"][0], f.image.data["y"][0]) == pytest.approx((left, bottom))
    assert f.image.data["dw"][0] == pytest.approx(right - left) and f.image.data["dh"][0] == pytest.approx(top - bottom)
    assert (f.linear.low, f.linear.high) == pytest.approx(run.layers.clim("soc_stock_0_30cm"))
    m.layer, m.soc_layer = "soc", 3
    np.testing.assert_array_equal(f.image.data["image"][0], run.layers.array("soc", 3)[::-1])
    assert "layer 3 (" in f.figure.title.text and f.colorbar.title == m.colorbar_title() and "(g C m-3)" in f.colorbar.title
    m.log_colour = True
    assert f.image_renderer.glyph.color_mapper is f.log is f.colorbar.color_mapper
    m.log_colour, m.cmap = False, "magma"
    assert f.image_renderer.glyph.color_mapper is f.linear and tuple(f.linear.palette) == palette("magma")
    m.layer, m.cmap = "diff_default_soc_stock_0_30cm", "auto"
    assert tuple(f.linear.palette) == palette("RdBu_r") and f.linear.low == pytest.approx(-f.linear.high)
    n_sites = len(run.sites.summary)
    assert len(f.sites.data["site_id"]) == n_sites
    m.site_colour = "residual (log sim/obs)"
    assert tuple(f.site_mapper.palette) == palette("RdBu_r") and f.site_mapper.low == pytest.approx(-f.site_mapper.high)
    m.show_sites = False
    assert len(f.sites.data["site_id"]) == 0
    # a click and a zoom in the browser arrive as Bokeh events
    f.figure._trigger_event(events.Tap(f.figure, x=-95.5, y=40.5))
    assert (m.tap_x, m.tap_y) == (-95.5, 40.5) and f.marker.data == {"x": [-95.5], "y": [40.5]}
    f.figure._trigger_event(events.RangesUpdate(f.figure, x0=-110.0, x1=-90.0, y0=30.0, y1=45.0))
    assert m.view_range == (-110.0, -90.0, 30.0, 45.0)


def test_big_grids_are_rasterized_per_view(run, monkeypatch):
    from dashboards import views

    monkeypatch.setattr(views, "RASTERIZE_CELLS", 100)
    m = views.MapExplorer(run)
    assert m.rasterized and isinstance(m.plot(), hv.DynamicMap)
    assert isinstance(m._map_pane(), pn.pane.HoloViews)


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


def _titles(panels) -> list[str]:
    return [p.title for p in panels]


def _render(k):
    """The inspector rendered into a Bokeh document (as a session does); returns the document."""
    from bokeh.document import Document

    doc = Document()
    doc.add_root(k.__panel__().get_root(doc))
    return doc


def test_kan_inspector_lists_edges_pruned_in_every_fold_instead_of_drawing_them(run):
    from dashboards.kan_inspector import LEARNED, PRUNED_COLOUR
    from dashboards.run import RunData
    from dashboards.kan_inspector import KanInspector
    from dashboards.views import MapExplorer
    from socmap.kan_curves import compute_kan_curves
    from socmap.runs import open_run

    r = open_run(run.path)  # its own copy of the fold models, changed here only
    j = r.covariates.index("clay_pct")
    for mdl in r.models:
        mdl.encoder.layers[0].mask[mdl.param_names.index("fs1s3"), j] = 0.0
    # and one edge of tau4s3 pruned in the first fold only: drawn, and said so
    stored = run.analysis.curves("tau4s3")
    partly = next(c for c in stored.covariates if stored.pruned[c] == 0)
    r.models[0].encoder.layers[0].mask[r.models[0].param_names.index("tau4s3"), r.covariates.index(partly)] = 0.0
    data = RunData(run.path)
    data.analysis.use(compute_kan_curves(r))
    k = KanInspector(data, map_view=MapExplorer(data), parameter="fs1s3", max_curves=30)
    _render(k)
    active, pruned, negligible = k.classify()
    assert pruned == ["clay_pct"] and "clay_pct" not in active
    assert [t.split(" · ")[0] for t in _titles(k.curve_panels())] == active  # no empty plot for a pruned edge
    assert [f.figure.title.text for f in k._figures.shown()] == _titles(k.curve_panels())
    line = k.inactive_line()
    assert "pruned in every fold: clay_pct" in line and line.count("\n") == 0
    assert "clay_pct" not in set(k.symbolic_table()["covariate"])
    # the toggle draws the pruned edge after the active ones, grey and dashed, flat at 0, and says so
    k.show_pruned = True
    panels = k.curve_panels()
    cvp = k.analysis.curves("fs1s3")
    assert cvp.importance[cvp.covariates.index("clay_pct")] == 0.0  # a masked edge scores nothing
    assert panels[-1].pruned and panels[-1].title == "clay_pct · imp 0.00 · pruned in every fold"
    assert len(panels) == len(active) + 1 and "drawn in grey" in k.inactive_line()
    np.testing.assert_array_equal(panels[-1].mean, 0.0)
    shown = k._figures.shown()
    assert len(shown) == len(panels) and shown[-1].figure.title.text == panels[-1].title
    assert shown[-1].mean_r.glyph.line_color == PRUNED_COLOUR and shown[-1].mean_r.glyph.line_dash == [6]  # "dashed"
    assert shown[0].mean_r.glyph.line_color == LEARNED
    # an edge pruned in one fold of three stays drawn, its band reaching that fold's zero
    k.parameter = "tau4s3"
    cv = data.analysis.curves("tau4s3")
    assert cv.pruned[partly] == 1 and partly in k.classify()[0]
    assert any(t.startswith(f"{partly} · ") and t.endswith(f"pruned in 1/{cv.n_folds} folds") for t in _titles(k.curve_panels()))
    row = k.symbolic_table().set_index("covariate").loc[partly]
    assert row["pruned in folds"] == f"1/{cv.n_folds}"
    assert (cv.lo[partly] <= 0).all() and (cv.hi[partly] >= 0).all()
    # every fold's curve on request, drawn in the same figure
    k.show_folds = True
    first = k.curve_panels()[0]
    assert first.folds.shape == (cv.n_folds, len(first.x))
    assert len(k._figures.shown()[0].folds.data["ys"]) == cv.n_folds
    assert "each fold" in [it.label["value"] for it in k._figures.shown()[0].legend.items]


def test_parameter_switch_reads_the_stored_curves_without_the_models(run, monkeypatch, capsys):
    """A parameter switch evaluates no fold model and fits no symbolic form: it slices the run's
    kan_curves.nc and replaces the data of the figures already on the page (no figure is
    rebuilt). Prints the time from switch to updated figures (never asserted)."""
    import time

    import socmap.runs
    from dashboards.run import RunData
    from dashboards.kan_inspector import KanInspector
    from dashboards.views import MapExplorer
    from socmap import interpret

    def forbidden(*args, **kwargs):
        raise AssertionError("the dashboard evaluated a model or fitted a curve on a parameter switch")

    for owner, name in [(socmap.runs, "_load_model"), (interpret, "edge_curve"), (interpret, "partial_dependence_all"),
                        (interpret, "suggest_symbolic"), (interpret, "importance")]:
        monkeypatch.setattr(owner, name, forbidden)
    data = RunData(run.path)
    m = MapExplorer(data)
    m.tap(-95.5, 40.5)
    k = KanInspector(data, map_view=m)
    _render(k)
    figures = [f.figure for f in k._figures.slots]
    seconds = {}
    for p in [*data.parameters[1:], data.parameters[0]]:
        t = time.perf_counter()
        k.parameter = p
        seconds[p] = time.perf_counter() - t
        panels = k.curve_panels(k.location_values())
        assert len(panels) == min(k.max_curves, len(k.classify()[0])) > 0
        assert [f.figure.title.text for f in k._figures.shown()] == [pl.title for pl in panels]
        np.testing.assert_array_equal(k._figures.shown()[0].mean.data["y"], panels[0].mean)
        assert f"### {p} — " in k._heading.object and k._bars.pane.visible
        assert list(k._bars.source.data["covariate"])[::-1] == list(k.contribution_table(k.location_values())["covariate"])
    assert [f.figure for f in k._figures.slots][: len(figures)] == figures  # the same figures, new data
    assert k.png_grid().getvalue()[:4] == b"\x89PNG"
    with capsys.disabled():
        print("\nKAN parameter switch → updated figures (stored curves, in-place update): "
              + ", ".join(f"{p} {s:.3f} s" for p, s in seconds.items()))


def test_a_run_mapped_before_the_curves_were_stored_gets_them_once(run, tmp_path, monkeypatch):
    """No kan_curves.nc: the dashboard computes it once from the fold models and caches it in
    the run folder; the next process reads it without loading a model."""
    import socmap.runs
    from dashboards.run import RunData
    from socmap.kan_curves import read_kan_curves

    copy = tmp_path / "old" / "kan"
    shutil.copytree(run.path, copy)
    (copy / "kan_curves.nc").unlink()
    first = RunData(copy)
    cv = first.analysis.curves("tau4s3")
    stored = read_kan_curves(copy)
    assert stored is not None
    np.testing.assert_allclose(cv.mean[cv.covariates[0]], run.analysis.curves("tau4s3").mean[cv.covariates[0]])

    def forbidden(*args, **kwargs):
        raise AssertionError("a fold model was loaded although the curves are cached")

    monkeypatch.setattr(socmap.runs, "_load_model", forbidden)
    again = RunData(copy)
    assert again.analysis.curves("tau4s3").covariates == cv.covariates


def test_kan_inspector_says_why_a_run_without_stored_curves_has_none(run, tmp_path):
    """No kan_curves.nc and a damaged fold model: an error panel naming the file, not a blank tab."""
    from dashboards.run import RunData
    from dashboards.kan_inspector import KanInspector

    copy = tmp_path / "damaged" / "kan"
    shutil.copytree(run.path, copy)
    (copy / "kan_curves.nc").unlink()
    model = copy / run.record["fold_models"][1]
    model.write_bytes(model.read_bytes()[:100])
    k = KanInspector(RunData(copy))
    panel = k.__panel__()
    assert isinstance(panel, pn.pane.Alert) and panel.alert_type == "danger"
    assert run.record["fold_models"][1] in panel.object and not (copy / "kan_curves.nc").exists()


def test_kan_inspector_downloads_png_and_csv(run):
    import io

    import pandas as pd

    from dashboards.kan_inspector import KanInspector
    from dashboards.views import MapExplorer

    m = MapExplorer(run)
    k = KanInspector(run, map_view=m, parameter="tau4s3")
    m.tap(-95.5, 40.5)
    png = k.png_grid().getvalue()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    k.download_curve = run.analysis.covariate_names[0]
    assert k.png_curve().getvalue()[:4] == b"\x89PNG"
    table = pd.read_csv(io.BytesIO(k.csv_grid().getvalue()))
    cv = run.analysis.curves("tau4s3")
    assert set(table["covariate"]) == set(cv.covariates)
    c = cv.covariates[0]
    np.testing.assert_allclose(table.loc[table["covariate"] == c, "p_fold_mean"], cv.mean[c])
    folds = np.stack([table.loc[table["covariate"] == c, f"p_fold_{i}"] for i in range(cv.n_folds)])
    np.testing.assert_allclose(folds.min(0), table.loc[table["covariate"] == c, "p_fold_min"])
    one = pd.read_csv(io.BytesIO(k.csv_curve().getvalue()))
    assert set(one["covariate"]) == {k.download_curve}
    # the symbolic table: formulas in physical units, one row per active edge, with fold stability
    sym = k.symbolic_table()
    assert list(sym["covariate"]) == k.classify()[0]
    assert all(c in f for c, f in zip(sym["covariate"], sym.iloc[:, 3]) if f != "—")
    for c, same in zip(sym["covariate"], sym["same form in folds"]):
        if same != "—":
            assert same == f"{sum(f == cv.symbolic[c].kind for f in cv.fold_forms[c])}/{cv.n_folds}"


def test_kan_inspector_curves_ordered_by_importance(run):
    from dashboards.kan_inspector import KanInspector
    from dashboards.views import MapExplorer

    m = MapExplorer(run)
    k = KanInspector(run, map_view=m, parameter="tau4s3")
    k.max_curves = 30
    panels = k.curve_panels()
    names = run.analysis.covariate_names
    active, pruned, negligible = k.classify()
    assert len(panels) == len(active) and sorted(active + pruned + negligible) == sorted(names)
    cv = run.analysis.curves("tau4s3")
    assert sorted(cv.covariates) == sorted(names)
    assert np.all(np.diff(cv.importance) <= 1e-12)
    assert [p.covariate for p in panels] == [c for c in cv.covariates if c in active]
    assert all("R²" in p.title for p in panels) and panels[0].title.startswith(active[0])
    # the histogram: the training sites, every one counted
    n_sites = len(run.sites.inputs) if run.sites.inputs is not None else None
    assert cv.histogram_of == "training sites" and all(int(cv.hist[c][0].sum()) == n_sites for c in names)
    # synthetic run: the true curves are overlaid for the true edges
    true_covs = {e["covariate"] for e in run.truth["parameters"]["tau4s3"]["edges"]} & set(active)
    assert {p.covariate for p in panels if p.truth is not None} == true_covs
    k.show_truth = False
    assert all(p.truth is None for p in k.curve_panels())
    # a tap marks the location on every curve and gives one bar per covariate
    m.tap(-95.5, 40.5)
    values = k.location_values()
    marked = k.curve_panels(values)
    assert all(p.location == pytest.approx(values[p.covariate]) for p in marked)
    bars = k.contribution_table(values)
    assert len(bars) == len(names)
    # the contribution is read off the stored fold-mean curve at the location's value
    c = bars["covariate"].iloc[0]
    assert bars["contribution"].iloc[0] == pytest.approx(np.interp(values[c], cv.xs[c], cv.mean[c]))


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
    # the fold models as one band (min–max), not one line each
    band = [el for el in plot if isinstance(el, hv.Polygons)]
    assert len(band) == 1 and band[0].label.startswith("fold models (range of")
    folds = s.fold_profiles()
    xs = band[0].dimension_values(0)
    assert xs.min() == pytest.approx(np.nanmin(folds[:, : len(xs) // 2])) and xs.max() == pytest.approx(np.nanmax(folds[:, : len(xs) // 2]))
    obs = s.observations()
    scat = [el for el in plot if el.label == "observed"][0]
    np.testing.assert_allclose(np.sort(scat.dimension_values(0)), np.sort(obs["soc_obs_g_m3"].to_numpy()))
    # the observed layers as depth intervals: training records each sample's top and bottom
    assert {"top_m", "bottom_m"} <= set(obs.columns)
    seg = [el for el in plot if isinstance(el, hv.Segments)]
    assert len(seg) == 1 and seg[0].label == "observed layer"
    np.testing.assert_allclose(np.sort(seg[0].dimension_values("depth")), np.sort(obs["top_m"].to_numpy()))
    np.testing.assert_allclose(np.sort(seg[0].dimension_values("depth_1")), np.sort(obs["bottom_m"].to_numpy()))
    table = s.parameter_table()
    assert list(table["parameter"]) == run.parameters and "learned" in table


def test_summary_fields_and_export(run, tmp_path):
    import rasterio

    from dashboards.views import ParameterFields, RunSummary

    summary = RunSummary(run)
    t = summary.metrics_table()
    assert "NSE" in t and "mean" in set(t["fold"])
    assert not t.isna().any().any() and not t.astype(str).apply(lambda col: col.str.contains("nan", case=False)).any().any()
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
    assert isinstance(tpl, pn.template.VanillaTemplate) and not tpl._resources["css"]  # no web font
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
    from dashboards.kan_inspector import KanInspector
    from dashboards.views import MapExplorer, SiteView

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
    assert folds.shape == (r.analysis.n_folds, r.layers.n_layers) and np.isfinite(folds).all()
    mean = [el for el in s.profile_plot() if el.label.startswith("fold mean")][0]
    np.testing.assert_allclose(mean.dimension_values(0), folds.mean(0)[r.layers.depth_m <= mean.dimension_values(1).max()], rtol=1e-6)
    table = s.parameter_table()
    assert {"learned", "true"} <= set(table) and table["true"].notna().all()
    k = KanInspector(r, map_view=m, parameter="tau4s3", max_curves=30)
    assert len(k.curve_panels()) == len(k.classify()[0]) > 0
    outside = [p for p in opened if copy.resolve() not in p.parents and "site-packages" not in str(p) and p.suffix != ".geojson"]
    assert opened and not outside, outside


def test_compare_view_against_another_run_and_the_default_map(run, tmp_path):
    from dashboards.compare import DEFAULT_SIDE, CompareView

    # against the run's own CLM5-default map: A - B is the store's diff_default layer
    c = CompareView(run, {})
    assert c.against == DEFAULT_SIDE and c.layer == "soc_stock_0_30cm"
    a, b, note = c.pair()
    np.testing.assert_allclose(a - b, run.layers.array("diff_default_soc_stock_0_30cm"), atol=1e-4, equal_nan=True)
    view = c.view()
    assert isinstance(view, pn.Column)
    maps = view[1][0].object
    assert isinstance(maps, hv.Layout) and len(maps) == 3
    c.layer = "tau4s3"  # no default map of a parameter: say so, no blank
    assert c.pair()[1] is None and "default" in c.pair()[2]
    assert isinstance(c.view(), pn.pane.Alert)
    # against another run (here: the same run under another name): zero difference, r = 1
    c2 = CompareView(run, {"twin": run}, layer="soc_stock_0_100cm")
    a, b, note = c2.pair()
    assert "same grid" in note
    st = c2.stats(a, b)
    assert st["mean A − B"] == 0 and st["r"] == pytest.approx(1.0)
    assert isinstance(c2.scatter(a, b, "kg C m-2"), hv.Overlay)


def test_compare_view_regrids_a_run_on_another_grid(run):
    """A run on a coarser grid is brought onto this run's grid by the nearest cell, and the view says so."""
    import types

    from dashboards.compare import CompareView

    lx = run.layers
    coarse_x, coarse_y = lx.x[::2], lx.y[::2]
    arr = lx.array("soc_stock_0_30cm")[::2, ::2]
    class CoarseLayers:  # the MapLayers interface CompareView reads, on every other cell
        x, y, resolution_deg = coarse_x, coarse_y, 2 * lx.resolution_deg
        ds = types.SimpleNamespace(attrs={})

        def __contains__(self, name):
            return name == "soc_stock_0_30cm"

        def units(self, name):
            return lx.units(name)

        def has_layers(self, name):
            return False

        def array(self, name, layer=None):
            return arr

    other = types.SimpleNamespace(name="coarse", layers=CoarseLayers())
    c = CompareView(run, {"coarse": other})
    a, b, note = c.pair()
    assert b.shape == a.shape and "nearest cell" in note
    np.testing.assert_array_equal(b[::2, ::2], arr)


def test_dashboard_shows_an_error_panel_for_a_run_it_cannot_open(run, tmp_path):
    from dashboards.app import build_app

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text('{"name": "broken", "config": {')  # truncated
    tpl = build_app([run.path, broken])
    dash = tpl.dashboard
    assert dash.run == run.name  # the readable run opens first
    bad = next(n for n in dash.runs if n in dash.errors)
    dash.run = bad
    alert = dash.main[0]
    assert isinstance(alert, pn.pane.Alert) and alert.alert_type == "danger"
    assert str(broken / "run.json") in alert.object and "socmap train --resume" in alert.object
    dash.run = run.name
    assert dash.map is not None


def test_summary_shows_totals_and_load_report_when_present(run, monkeypatch):
    from dashboards.views import RunSummary

    s = RunSummary(run)
    assert s.totals_table() is None and s.load_report_tables() == []  # tolerated absence
    monkeypatch.setitem(run.layers.ds.attrs, "totals", {"soc_stock_0_30cm_pg": {"mean": 61.2, "fold_min": 58.0, "fold_max": 64.1},
                                                        "mean_stock_by_land_cover_kg_m2": {"grassland": 4.2}})
    monkeypatch.setitem(run.record, "load_report", {"sources": [{"source": "a.csv", "rows": 10, "kept": 9}],
                                                    "totals": {"rows": 10, "kept": 9}, "dropped_by_reason": {"negative SOC": 1}})
    t = s.totals_table()
    assert "soc_stock_0_30cm_pg · mean" in set(t["quantity"]) and "61.2" in set(t["value"])
    panes = s.load_report_tables()
    assert len(panes) == 3 and "negative SOC" in panes[2].object.to_string()
    assert s.wetland_table() is None  # a run without the learned anoxia
    monkeypatch.setitem(run.record, "wetland", {"wetland_sites": 12, "anoxia": "learned", "saturated": True,
                                                "learned": {"1": {"o_min": 0.31, "water_table_m": 0.12},
                                                            "0": {"o_min": 0.25, "water_table_m": 0.1}}})
    wt = s.wetland_table()
    assert list(wt["fold"]) == ["0", "1"] and wt.iloc[1, 1] == 0.31
    assert "12 wetland sites" in s.wetland_md() and "saturated water scalar on" in s.wetland_md()
    s.__panel__()  # the summary builds with the wetland table


def test_sessions_share_one_loaded_run(run):
    """Two sessions (two app builds) use the same RunData, store arrays and fold models: a new
    visitor builds only their own plots."""
    from dashboards.app import build_app

    a, b = build_app([run.path]).dashboard, build_app([run.path]).dashboard
    assert a.map.run is b.map.run is run
    assert a.map.run.layers.array("soc_stock_0_30cm") is b.map.run.layers.array("soc_stock_0_30cm")
    assert a.kan.run.analysis.dataset is b.kan.run.analysis.dataset
    assert a.map is not b.map  # but each session has its own widgets and plots
