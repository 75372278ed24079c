"""The dashboard in a real browser: Playwright (sync API) driving Debian's Chromium.

Serves the app with ``socmap serve`` on a free localhost port, then: the map canvas appears;
switching the layer changes the plotted data (colour-bar title and colour limits read from the
Bokeh document); a KAN-inspector parameter shows one curve plot per covariate; clicking a site on
the map opens its profile; the export downloads a GeoTIFF that rasterio opens with EPSG:4326.
Screenshots go to test-artifacts/ (look at them). Timings are printed, never asserted.

The fixture run is cached in test-artifacts/dash-fixtures (delete it to rebuild). Set
SOCMAP_DASH_BIG=1 to serve a 0.05° store instead (built once, ~1 min) for the timing figures.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"  # Debian's: apt-get install -y chromium
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (apt-get install -y chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run_dir() -> Path:
    from dashboard_fixtures import build_run, upsample_store

    root = ARTIFACTS / "dash-fixtures"
    run = build_run(root)
    if os.environ.get("SOCMAP_DASH_BIG"):
        run = upsample_store(run, root / "runs" / "kan-005", 0.05)
    return run


@pytest.fixture(scope="module")
def server(run_dir):
    port = _free_port()
    exe = Path(sys.executable).parent / "socmap"
    cmd = [str(exe), "serve", "--run", str(run_dir), "--port", str(port), "--no-show"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"socmap serve exited: {proc.stdout.read()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=30).read(100)  # also builds the first session (warm)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("the dashboard server did not start in 60 s")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


# JavaScript helpers reading the live Bokeh document of the page
COLORBARS = """() => { const out = [];
  for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (m.color_mapper && 'title' in m && 'ticker' in m)
      out.push([m.title, m.color_mapper.low, m.color_mapper.high]);
  return out; }"""
TITLES = """() => { const out = [];
  for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (typeof m.text === 'string' && m.text && 'vertical_align' in m && 'standoff' in m) out.push(m.text);
  return out; }"""
# page coordinates of (lon, lat) on the map figure (found by its title)
MAP_XY = """([needle, lon, lat]) => {
  function* walk(v, depth) { if (!v || depth > 60) return; yield v;
    let kids = [];
    try { if (typeof v.children === 'function') kids = [...v.children()]; } catch (e) {}
    if (!kids.length && v.child_views) kids = [...v.child_views];
    for (const k of kids) yield* walk(k, depth + 1); }
  for (const root of Bokeh.index.roots) for (const v of walk(root, 0)) {
    const m = v.model;
    if (m && m.title && m.title.text && m.title.text.includes(needle) && v.frame && v.frame.x_scale) {
      const r = (v.canvas_view || v.canvas).el.getBoundingClientRect();
      return [r.left + v.frame.x_scale.compute(lon), r.top + v.frame.y_scale.compute(lat)];
    } }
  return null; }"""


def test_dashboard_in_browser(server, run_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    import pandas as pd

    ARTIFACTS.mkdir(exist_ok=True)
    figures = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
        t0 = time.perf_counter()
        page.goto(server, wait_until="domcontentloaded")
        page.locator("canvas").first.wait_for(timeout=30_000)
        page.wait_for_function(f"({COLORBARS})().length > 0", timeout=30_000)
        figures["first map visible (s)"] = time.perf_counter() - t0
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "dashboard_map.png"))
        before = page.evaluate(COLORBARS)
        assert any("soc_stock_0_30cm" in (t or "") for t, *_ in before), before

        # switch the layer -> the colour bar follows (title, limits) and the caption changes
        t1 = time.perf_counter()
        layer_select = page.locator("select").nth(1)  # [run (only with several runs)], layer, colours, ...
        options = layer_select.locator("option").all_text_contents()
        if not any("tau4s3" in o for o in options):
            layer_select = page.locator("select").nth(0)
            options = layer_select.locator("option").all_text_contents()
        label = next(o for o in options if "· tau4s3" in o)
        layer_select.select_option(label=label)
        page.wait_for_function(f"({COLORBARS})().some(c => (c[0] || '').includes('tau4s3'))", timeout=15_000)
        figures["layer switch to tau4s3 (s)"] = time.perf_counter() - t1
        after = page.evaluate(COLORBARS)
        assert before != after
        page.get_by_text("turnover time of passive SOM").first.wait_for(timeout=10_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "dashboard_map_tau4s3.png"))

        # a difference layer: symmetric limits
        t1 = time.perf_counter()
        label = next(o for o in options if "· diff_default_soc_stock_0_30cm" in o)
        layer_select.select_option(label=label)
        page.wait_for_function(f"({COLORBARS})().some(c => (c[0] || '').includes('diff_default'))", timeout=15_000)
        figures["layer switch to a difference (s)"] = time.perf_counter() - t1
        cb = [c for c in page.evaluate(COLORBARS) if "diff_default" in (c[0] or "")][0]
        assert cb[1] == pytest.approx(-cb[2])
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "dashboard_map_difference.png"))

        # export the shown layer
        with page.expect_download(timeout=30_000) as dl:
            page.get_by_text("GeoTIFF of the shown layer").first.click()
        target = tmp_path / dl.value.suggested_filename
        dl.value.save_as(target)
        import rasterio

        with rasterio.open(target) as src:
            assert src.crs.to_epsg() == 4326
            assert src.count == 1 and src.width > 10
        assert "diff_default_soc_stock_0_30cm" in target.name

        # click a site on the map -> the Sites tab shows its profile
        sites = pd.read_csv(run_dir / "predictions.csv").groupby("site_id").first().reset_index()
        site = sites.iloc[len(sites) // 2]
        xy = page.evaluate(MAP_XY, ["hybrid - CLM5 default", float(site["lon"]), float(site["lat"])])
        assert xy is not None, "map figure not found"
        t1 = time.perf_counter()
        page.mouse.click(xy[0], xy[1])
        page.get_by_text("Location", exact=True).first.wait_for(timeout=15_000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "dashboard_map_clicked.png"))
        page.locator(".bk-tab", has_text="Sites").first.click()
        page.get_by_text(f"Site {site['site_id']}").first.wait_for(timeout=20_000)
        page.wait_for_function(f"({TITLES})().some(t => t.includes('SOC profile at {site['site_id']}'))", timeout=20_000)
        figures["site click -> profile (s)"] = time.perf_counter() - t1
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "dashboard_site.png"))

        # KAN inspector: choose a parameter -> one curve plot per covariate
        page.locator(".bk-tab", has_text="KAN inspector").first.click()
        t1 = time.perf_counter()
        page.wait_for_function(f"({TITLES})().some(t => t.includes(' · imp '))", timeout=60_000)
        figures["KAN inspector first curves (s)"] = time.perf_counter() - t1
        kan_select = page.locator("select").filter(has=page.locator("option", has_text=re.compile(r"^w_scaling$"))).first
        t1 = time.perf_counter()
        kan_select.select_option("w_scaling")
        page.get_by_text("w_scaling — multiplier").first.wait_for(timeout=60_000)
        page.wait_for_function(f"({TITLES})().filter(t => t.includes(' · imp ')).length >= 5", timeout=60_000)
        figures["KAN parameter switch (s)"] = time.perf_counter() - t1
        n_curves = len([t for t in page.evaluate(TITLES) if " · imp " in t])
        assert n_curves >= 5
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "dashboard_kan.png"), full_page=True)

        page.locator(".bk-tab", has_text="Parameters").first.click()
        page.wait_for_function(f"({TITLES})().some(t => t.startsWith('tau4s3'))", timeout=30_000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "dashboard_parameters.png"), full_page=True)

        page.locator(".bk-tab", has_text="Run summary").first.click()
        page.get_by_text("Cross-validated skill").first.wait_for(timeout=20_000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "dashboard_summary.png"), full_page=True)
        browser.close()
    print("\ndashboard timings (" + run_dir.name + "):")
    for k, v in figures.items():
        print(f"  {k}: {v:.2f}")
