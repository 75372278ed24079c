"""The dashboard in a real browser: Playwright (sync API) driving Debian's Chromium.

Serves three runs with the dashboard's server (``dashboards.app.serve``, what ``socmap serve`` calls;
the CLI itself refuses a damaged run before serving) on a free localhost port (a KAN run, an MLP run and a
damaged run) and, at 1366×768 and 1920×1080: the first map; the depth slider on SOC by layer;
a comparison (KAN vs MLP: A, B, A − B and the scatter); the KAN grid, a PNG download of it and a
parameter switch (timed); the Scenarios tab (a +2 °C ΔSOC map with a diverging colour bar centred
on 0; a click on the map shows the trajectory at that cell); the run picker to the MLP run (partial-dependence curves) and
to the damaged run (an error panel naming the file); the layout (nothing wider than the window). Every request the pages
make is routed: one whose host is not 127.0.0.1/localhost FAILS the test (no web fonts, no
CDN). Then 1 and 5 concurrent sessions, time to first map for each.

Screenshots go to test-artifacts/ (look at them). Timings are printed, never asserted.
The fixture runs are cached in test-artifacts/dash-fixtures (delete it to rebuild).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
# one server start, page routing and concurrent-session measurement, shared with the benchmark
from dashboard import CHROMIUM, CHROMIUM_FLAGS, concurrent_first_map, dashboard_server, describe, open_page  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
SIZES = {"1366x768": (1366, 768), "1920x1080": (1920, 1080)}

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def run_dirs() -> dict[str, Path]:
    from dashboard_fixtures import build_run, build_scenario

    root = ARTIFACTS / "dash-fixtures"
    kan = build_run(root)
    build_scenario(kan)  # runs/kan/scenarios/warm2: +2 °C, 5-year transient
    mlp = build_run(root, name="mlp", encoder="mlp")
    broken = root / "runs" / "broken"  # a truncated run.json, as a failed copy leaves it
    if broken.exists():
        shutil.rmtree(broken)
    (broken / "maps.zarr").mkdir(parents=True)
    (broken / "run.json").write_text((kan / "run.json").read_text()[:300])
    return {"kan": kan, "mlp": mlp, "broken": broken}


@pytest.fixture(scope="module")
def server_proc(run_dirs):
    """(url, process) of the dashboard's own server: `socmap serve` stops at the damaged run, the
    dashboard shows an error panel."""
    try:
        with dashboard_server(list(run_dirs.values())) as served:
            yield served
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def server(server_proc) -> str:
    return server_proc[0]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def _page(browser, size: tuple[int, int], off_host: list[str]):
    return open_page(browser, off_host, size)


# JavaScript helpers reading the live Bokeh document of the page
COLORBARS = """() => { const out = [];
  for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (m.color_mapper && 'title' in m && 'ticker' in m)
      out.push([m.title, m.color_mapper.low, m.color_mapper.high]);
  return out; }"""
TITLES = """() => { const out = [];
  if (typeof Bokeh === 'undefined') return out;
  for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (typeof m.text === 'string' && m.text && 'vertical_align' in m && 'standoff' in m) out.push(m.text);
  return out; }"""
HAS_MAP = "() => typeof Bokeh !== 'undefined' && Bokeh.documents.length > 0 && (" + COLORBARS + ")().length > 0"
# widest right edge of any rendered element (light DOM and open shadow roots), in CSS px
RIGHT_EDGE = """() => { let worst = [0, ''];
  function visit(root) { for (const el of root.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width > 0 && r.height > 0 && r.right > worst[0] && getComputedStyle(el).visibility !== 'hidden')
        worst = [r.right, (el.className && el.className.baseVal === undefined ? el.className : el.tagName) + ''];
      if (el.shadowRoot) visit(el.shadowRoot); } }
  visit(document); return worst; }"""


def _tab(page, name: str) -> None:
    page.locator(".bk-tab", has_text=name).first.click()


def _wait_title(page, needle: str, timeout: int = 60_000) -> None:
    page.wait_for_function(f"({TITLES})().some(t => t.includes({needle!r}))", timeout=timeout)


def _shot(page, name: str, size: str, full: bool = False) -> None:
    page.wait_for_timeout(600)
    page.screenshot(path=str(ARTIFACTS / f"dashboard_{size}_{name}.png"), full_page=full)


def _select_with(page, option_text: str):
    return page.locator("select").filter(has=page.locator("option", has_text=option_text)).first


@pytest.mark.parametrize("size", list(SIZES))
def test_dashboard_in_browser(server, run_dirs, browser, size, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    off_host: list[str] = []
    figures: dict[str, float] = {}
    ctx, page = _page(browser, SIZES[size], off_host)
    width = SIZES[size][0]
    t0 = time.perf_counter()
    page.goto(server, wait_until="domcontentloaded")
    page.wait_for_function(HAS_MAP, timeout=60_000)
    figures["first map (s)"] = time.perf_counter() - t0
    scripts = page.evaluate("() => performance.getEntriesByType('resource').map(r => r.name)")
    # MathJax (1.8 MB) and Tabulator are unused: each visitor's browser would parse them before the map
    assert not [u for u in scripts if "mathjax" in u or "tabulator" in u], scripts
    _shot(page, "map", size)
    right, what = page.evaluate(RIGHT_EDGE)
    assert right <= width + 1, f"{what} runs off the right edge ({right:.0f} px > {width} px)"

    # depth: SOC by layer, then the depth slider moves the map to a deeper layer
    layer_select = _select_with(page, "· tau4s3")
    label = next(o for o in layer_select.locator("option").all_text_contents() if "· soc [" in o)
    layer_select.select_option(label=label)
    _wait_title(page, "layer 0 (")
    handle = page.locator(".depth-slider .noUi-handle").first
    handle.focus()
    for _ in range(3):
        handle.press("ArrowRight")
    _wait_title(page, "layer 3 (", timeout=20_000)
    _shot(page, "map_depth", size)

    # compare: KAN run against the MLP run (same grid)
    _tab(page, "Compare")
    t1 = time.perf_counter()
    _wait_title(page, "A − B")
    figures["comparison (s)"] = time.perf_counter() - t1
    titles = page.evaluate(TITLES)
    assert any(t.startswith("A: kan") for t in titles) and any(t.startswith("B: mlp") for t in titles), titles
    assert "B against A (cells)" in titles
    cb = [c for c in page.evaluate(COLORBARS) if (c[0] or "").startswith("Δ ")]
    assert cb and cb[0][1] == pytest.approx(-cb[0][2])  # diverging, centred on 0
    _shot(page, "compare", size, full=True)
    right, what = page.evaluate(RIGHT_EDGE)
    assert right <= width + 1, f"Compare tab: {what} runs off the right edge ({right:.0f} px)"

    # KAN inspector: the grid of active edges, the inactive ones in one line, a PNG download
    _tab(page, "KAN inspector")
    t1 = time.perf_counter()
    page.wait_for_function(f"({TITLES})().filter(t => t.includes(' · imp ')).length >= 2", timeout=90_000)
    figures["KAN grid (s)"] = time.perf_counter() - t1
    _shot(page, "kan", size, full=True)
    right, what = page.evaluate(RIGHT_EDGE)
    assert right <= width + 1, f"KAN tab: {what} runs off the right edge ({right:.0f} px)"
    with page.expect_download(timeout=60_000) as dl:
        page.get_by_text("PNG, all curves").first.click()
    target = tmp_path / dl.value.suggested_filename
    dl.value.save_as(target)
    assert target.suffix == ".png" and target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 10_000
    if size == "1366x768":
        shutil.copy(target, ARTIFACTS / "dashboard_kan_download.png")
    # a parameter switch: the stored curves go into the figures already on the page
    before = sorted(t for t in page.evaluate(TITLES) if " · imp " in t)
    param_select = page.locator("select").filter(has=page.locator("option", has_text=re.compile(r"^w_scaling$"))).first
    t1 = time.perf_counter()
    param_select.select_option(label="w_scaling")
    page.wait_for_function(f"({TITLES})().filter(t => t.includes(' · imp ')).sort().join('|') !== {'|'.join(before)!r}", timeout=30_000)
    page.get_by_text("w_scaling — ", exact=False).first.wait_for(timeout=30_000)
    figures["KAN parameter switch (s)"] = time.perf_counter() - t1
    _shot(page, "kan_w_scaling", size, full=True)

    for name, needle in [("Parameters", "tau4s3"), ("Sites", "SOC profile at"), ("Run summary", "held-out observations")]:
        _tab(page, name)
        _wait_title(page, needle)
        _shot(page, name.lower().replace(" ", "_"), size, full=True)
    page.get_by_text("Cross-validated skill").first.wait_for(timeout=10_000)
    assert not page.get_by_text("NaN", exact=True).count()

    # Scenarios: the +2 °C ΔSOC map (diverging, centred on 0), then a click shows the trajectory there
    _tab(page, "Scenarios")
    t1 = time.perf_counter()
    _wait_title(page, "warm2: ")
    figures["scenario map (s)"] = time.perf_counter() - t1
    cb = [c for c in page.evaluate(COLORBARS) if (c[0] or "").startswith("delta_soc_stock_0_100cm")]
    assert cb and cb[0][1] == pytest.approx(-cb[0][2]) and cb[0][2] > 0, page.evaluate(COLORBARS)
    assert "(kg C m-2)" in cb[0][0]
    box = page.locator(".scenario-map").first.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.55)  # the plains: land
    t1 = time.perf_counter()
    _wait_title(page, "soc_stock_0_100cm at ", timeout=20_000)
    figures["trajectory after a click (s)"] = time.perf_counter() - t1
    _shot(page, "scenarios", size, full=True)
    right, what = page.evaluate(RIGHT_EDGE)
    assert right <= width + 1, f"Scenarios tab: {what} runs off the right edge ({right:.0f} px)"

    # the run picker: the MLP run (partial dependence), then the damaged run (an error panel)
    picker = _select_with(page, "mlp")
    t1 = time.perf_counter()
    picker.select_option(label="mlp")
    page.get_by_text("Run mlp", exact=True).first.wait_for(timeout=60_000)  # the rebuilt tabs keep the open tab
    _tab(page, "Map")
    page.wait_for_function(f"({TITLES})().some(t => t.includes('SOC stock'))", timeout=60_000)
    figures["run switch to mlp (s)"] = time.perf_counter() - t1
    _tab(page, "KAN inspector")
    page.get_by_text("partial dependence of p on each covariate", exact=False).first.wait_for(timeout=90_000)
    page.wait_for_function(f"({TITLES})().filter(t => t.includes(' · imp ')).length >= 2", timeout=90_000)
    _shot(page, "mlp_kan", size, full=True)
    picker = _select_with(page, "cannot be opened")
    picker.select_option(label=next(o for o in picker.locator("option").all_text_contents() if "cannot be opened" in o))
    page.get_by_text("cannot be opened", exact=False).nth(1).wait_for(timeout=20_000)
    assert page.get_by_text(str(run_dirs["broken"].resolve() / "run.json"), exact=False).count()
    _shot(page, "error_panel", size)
    ctx.close()
    assert not off_host, f"requests left the machine: {sorted(set(off_host))}"
    print(f"\ndashboard timings at {size}:")
    for k, v in figures.items():
        print(f"  {k}: {v:.2f}")


def _time_to_page(url: str, n: int) -> list[float]:
    """``n`` concurrent GETs of the page (the server builds one session per GET): seconds each."""
    from concurrent.futures import ThreadPoolExecutor

    def get(_):
        t = time.perf_counter()
        urllib.request.urlopen(url, timeout=120).read()
        return time.perf_counter() - t

    with ThreadPoolExecutor(n) as pool:
        return sorted(pool.map(get, range(n)))


def test_concurrent_sessions_share_the_loaded_run(server_proc, browser):
    """Sessions share the opened run (store arrays, fold models, curves): a new session builds
    only its own plots. Prints, for 1 and 5 concurrent sessions, each one's time to first map, the
    server's CPU per session, Chromium's CPU per page and the ratio these costs allow on this
    machine's cores (``benchmarks/dashboard.py --concurrent 5`` measures the same, repeated)."""
    url, proc = server_proc
    cores = len(os.sched_getaffinity(0))
    concurrent_first_map(browser, url, 1, proc.pid)  # the browser's own start-up, not a visitor's
    one = concurrent_first_map(browser, url, 1, proc.pid)
    five = concurrent_first_map(browser, url, 5, proc.pid)
    assert len(five["first_map_s"]) == 5 and all(t > 0 for t in five["first_map_s"])
    http_one = _time_to_page(url, 1)
    http_five = _time_to_page(url, 5)
    print(f"\ntime to first map (browser), load avg {os.getloadavg()[0]:.1f}:\n" + describe(one, five, cores))
    print(f"server share (page request, builds the session): 1 session {http_one[0]:.2f} s; 5 concurrent: "
          f"slowest {http_five[-1]:.2f} s ({http_five[-1] / http_one[0]:.2f}×); machine: {cores} CPUs")
