"""The Scenarios tab (dashboards/scenarios.py) and the GeoTIFF export of scenario layers.

One tiny fixture run (synthetic twin at 1°, 3 folds) with one scenario from ``socmap scenario``:
+2 °C, a 5-year transient ramped over 3 years, sensitivities.
"""

from __future__ import annotations

import shutil

import holoviews as hv
import numpy as np
import pytest

from dashboards.app import SCENARIO_TAB, build_app
from dashboards.scenarios import ScenarioView, find_scenarios, layer_options, load_scenario


@pytest.fixture(scope="module")
def scenario_run(tmp_path_factory):
    from dashboard_fixtures import build_run, build_scenario

    root = tmp_path_factory.mktemp("scen")
    run = build_run(root)
    path = build_scenario(run)
    return run, path


@pytest.fixture(scope="module")
def bare_run(scenario_run, tmp_path_factory):
    """The same run without its scenarios folder."""
    run, _ = scenario_run
    dst = tmp_path_factory.mktemp("bare") / "runs" / "kan"
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("scenarios"))
    return dst


def _land_cell(data):
    land = np.argwhere(np.isfinite(data.layers.array("delta_soc_stock_0_100cm")))
    iy, ix = land[len(land) // 2]
    return int(iy), int(ix)


def test_tab_only_when_the_run_has_scenarios(scenario_run, bare_run):
    run, _ = scenario_run
    with_tab = build_app([run]).dashboard
    assert with_tab.tabs._names[-1] == SCENARIO_TAB and isinstance(with_tab.scenarios, ScenarioView)
    without = build_app([bare_run]).dashboard
    assert SCENARIO_TAB not in without.tabs._names and without.scenarios is None
    with pytest.raises(ValueError, match="socmap scenario"):
        ScenarioView(bare_run)


def test_delta_map_is_diverging_and_centred_on_zero(scenario_run):
    run, path = scenario_run
    view = ScenarioView(run)
    assert find_scenarios(run) == {"warm2": path}
    assert view.layer == "delta_soc_stock_0_100cm"
    for layer in ("delta_soc_stock_0_100cm", "delta_pct_soc_stock_0_30cm", "elasticity_q10"):
        view.layer = layer
        style = view.style()
        lo, hi = style["clim"]
        assert style["cmap"] == "RdBu_r" and lo == pytest.approx(-hi) and hi > 0
        assert f"({view.data.layers.units(layer)})" in style["clabel"]
    view.layer = "soc_stock_0_100cm"  # a stock is not a difference
    assert view.style()["cmap"] != "RdBu_r" and view.style()["clim"][0] > 0
    labels = layer_options(view.data)
    assert {"delta_soc_stock_0_100cm", "present_soc_stock_0_100cm", "elasticity_q10", "dominant_process"} <= set(labels.values())
    # the image is the store's array, the map has the state outlines
    view.layer = "delta_soc_stock_0_100cm"
    shown = view.image().dimension_values(2, flat=False)  # HoloViews keeps y ascending
    store = view.data.layers.array(view.layer)
    assert np.array_equal(shown, store, equal_nan=True) or np.array_equal(shown[::-1], store, equal_nan=True)
    assert any(isinstance(el, hv.Path) for el in view.plot()[()])  # state outlines


def test_dominant_process_has_a_category_legend(scenario_run):
    run, _ = scenario_run
    view = ScenarioView(run, layer="dominant_process")
    cats = view.data.categories("dominant_process")
    assert [c for c, _ in cats] == list(range(8)) and ("temperature response" in dict(cats).values())
    style = view.style()
    assert style["colorbar"] is False and len(style["cmap"]) == 8 and style["clim"] == (-0.5, 7.5)
    html = view.legend().object
    assert all(name in html for _, name in cats)


def test_trajectory_at_a_cell_equals_the_store(scenario_run):
    run, _ = scenario_run
    view = ScenarioView(run)
    data = view.data
    iy, ix = _land_cell(data)
    view.tap(float(data.layers.x[ix]) + 0.2, float(data.layers.y[iy]) - 0.2)
    panel = view.location_panel()
    overlay = panel[1].object
    curve = next(el for el in overlay if type(el) is hv.Curve)  # (hv.Area is a Curve)
    area = next(el for el in overlay if isinstance(el, hv.Area))
    ds = data.layers.ds
    mean = ds["transient_soc_stock_0_100cm"].isel(y=iy, x=ix).values
    std = ds["transient_soc_stock_0_100cm_std"].isel(y=iy, x=ix).values
    np.testing.assert_allclose(curve.dimension_values(0), ds["time"].values)
    np.testing.assert_allclose(curve.dimension_values(1), mean, rtol=1e-6)
    np.testing.assert_allclose(area.dimension_values(1), mean - std, rtol=1e-6)
    np.testing.assert_allclose(area.dimension_values(2), mean + std, rtol=1e-6)
    assert np.isfinite(std).all() and (std > 0).any()
    view.layer = "delta_soc_stock_0_30cm"  # the trajectory follows the stock of the layer
    curve = next(el for el in view.location_panel()[1].object if type(el) is hv.Curve)  # (hv.Area is a Curve)
    np.testing.assert_allclose(curve.dimension_values(1), ds["transient_soc_stock_0_30cm"].isel(y=iy, x=ix).values, rtol=1e-6)
    view.tap(-40.0, 10.0)  # outside the grid
    assert "outside the grid" in view.location_panel().object


def test_conus_total_has_one_point_per_year(scenario_run):
    run, _ = scenario_run
    view = ScenarioView(run)
    overlay = view.conus_plot().object
    folds = view.data.layers.ds["conus_soc_stock_0_100cm_pg"].values  # [time, model]
    points = next(el for el in overlay if isinstance(el, hv.Scatter))
    area = next(el for el in overlay if isinstance(el, hv.Area))
    assert len(points) == view.data.layers.ds.sizes["time"] == 6
    np.testing.assert_allclose(points.dimension_values(1), folds.mean(1))
    np.testing.assert_allclose(area.dimension_values(1), folds.min(1))
    np.testing.assert_allclose(area.dimension_values(2), folds.max(1))


def test_definition_and_conus_delta_from_scenario_json(scenario_run):
    run, path = scenario_run
    data = load_scenario(path)
    assert load_scenario(path) is data  # opened once per process
    assert "+2 °C" in data.definition() and "5 years" in data.definition() and "ramped over 3 years" in data.definition()
    d = data.record["conus"]["soc_stock_0_100cm"]["delta_pg"]
    assert f"{d['mean']:+.3f} ± {d['std']:.3f}" in data.delta_summary()


def test_export_of_scenario_layers(scenario_run, tmp_path):
    import rasterio

    from socmap.store import open_store
    from socmap.export import export_layers

    _, path = scenario_run
    ds = open_store(path)
    files = export_layers(path, "delta_soc_stock_0_100cm,dominant_process,transient_soc_stock_0_100cm", tmp_path, fmt="gtiff")
    by = {f.stem: f for f in files}
    with rasterio.open(by["delta_soc_stock_0_100cm"]) as src:
        assert src.count == 1
        np.testing.assert_array_equal(src.read(1), ds["delta_soc_stock_0_100cm"].values)
    with rasterio.open(by["transient_soc_stock_0_100cm"]) as src:
        assert src.count == ds.sizes["time"]
        assert src.descriptions == tuple(f"year {t}" for t in ds["time"].values)
        np.testing.assert_array_equal(src.read(), ds["transient_soc_stock_0_100cm"].transpose("time", "y", "x").values)
    # the dashboard's download of the shown layer is a GeoTIFF too
    view = ScenarioView(path.parent.parent)
    assert view.geotiff().getvalue()[:4] in (b"II*\x00", b"MM\x00*")
