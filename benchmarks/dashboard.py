"""KAN inspector timings on one mapped run: the parameter switch, from the new value to the
updated Bokeh figures (server side: what a browser then receives as data patches), per parameter.

* ``curves_load_s``: the first access to the run's curves (reading ``kan_curves.nc``; with
  ``--recompute``, computing them from the fold models first, as ``socmap map`` does:
  ``compute_s``);
* ``switch_s``: per parameter, setting ``KanInspector.parameter`` on an inspector rendered into a
  Bokeh document until its figures, tables and texts hold the new parameter (the update runs in
  the same thread), with a location clicked (dotted lines and contribution bars drawn too);
  ``switch_first_s`` the first pass (best of ``--repeat`` passes in ``switch_s``);
* ``switch_max_s``, ``switch_median_s``. Goal (issue 17): ≤ 1 s.

The run folder is only read (with ``--recompute`` the curves are computed into memory).
``load_avg_1min`` is recorded because other jobs on a shared machine inflate every time.

    python benchmarks/dashboard.py --run test-artifacts/dash-fixtures/runs/kan [--json] [--recompute] [--repeat 3]

With ``--concurrent N``: time to first map in a real browser (Playwright + Debian Chromium) for 1
session and for N sessions opened at once, against the dashboard's own server
(``dashboards.app.serve`` in a subprocess, over every ``--run``), each pair ``--repeat`` times:

* ``first_map_s``: per session, from the start of the navigations until the page's Bokeh
  document holds a map (a colour bar model, what the browser test waits for) and is idle (every
  root view rendered), sorted;
* ``server_cpu_s``: CPU seconds of the server process (user + system, ``/proc/PID/stat``, all its
  threads) from the start until every page shows its map, per session;
* ``browser_cpu_s``: CPU seconds of all Chromium processes per page (``/proc``, renderers, GPU and
  network processes) and ``renderer_task_s`` / ``script_s``, the page's own main-thread time
  (CDP ``Performance.getMetrics`` TaskDuration / ScriptDuration);
* ``cores_used``: server and Chromium CPU seconds over the slowest session's time: how many of the
  machine's cores the measured work had (on a shared machine, fewer than it has);
* ``floor_ratio``: the slowest of N sessions against one session cannot beat
  max(N (server + browser CPU) / cores, N × server CPU [one server thread]) / one session's time
  (server and browsers on the same cores, as here).

    python benchmarks/dashboard.py --concurrent 5 --run test-artifacts/dash-fixtures/runs/kan \
        --run test-artifacts/dash-fixtures/runs/mlp [--repeat 3] [--json]
"""

from __future__ import annotations

import socmap  # noqa: F401, I001 - first: its OpenMP setting must precede torch (socmap/openmp.py)

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"  # Debian's: apt-get install -y chromium
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
VIEWPORT = (1366, 768)

# Runs in every page before its own scripts: records (epoch ms) when a Bokeh document holds a map
# (a colour bar model) and is idle (all its root views rendered). Recorded in the page, so that N
# pages are timed at once without Python polling them one by one.
FIRST_MAP_PROBE = """(() => {
  const poll = () => {
    try {
      if (typeof Bokeh !== 'undefined') for (const doc of Bokeh.documents) {
        if (!doc.is_idle) continue;
        for (const m of doc.all_models)
          if (m.color_mapper && 'title' in m && 'ticker' in m) { window.__socmap_first_map = Date.now(); return; }
      }
    } catch (e) {}
    setTimeout(poll, 20);
  };
  poll();
})();"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dashboard_server(runs: list[str | Path], timeout_s: float = 90.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """The dashboard's own server (``dashboards.app.serve``, what ``socmap serve`` calls) over
    ``runs`` in a subprocess on a free localhost port: yields (url, process) once a first page
    (one session: imports and caches warm) has been served; stops it on exit.

    Raises
    ------
    RuntimeError
        If the server exits or does not answer within ``timeout_s`` (with its last output).
    """
    port = free_port()
    runs = [str(r) for r in runs]
    # -X faulthandler: a crash of the server (a native library) prints where it happened into its log
    cmd = [sys.executable, "-X", "faulthandler", "-c", f"from dashboards.app import serve; serve({runs!r}, port={port}, show=False)"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    # its output goes to a file: an unread pipe would fill up and stall the server mid-measurement
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                text = log.read()
                crash = text.find("Fatal Python error")  # faulthandler's report: where it crashed
                raise RuntimeError(f"the dashboard server exited (status {proc.returncode}): "
                                   f"{text[crash:crash + 12000] if crash >= 0 else text[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=30).read(100)
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"the dashboard server did not answer within {timeout_s:.0f} s") from None
                time.sleep(0.5)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def chromium_cpu_seconds() -> float:
    """CPU seconds so far of every Chromium process descended from this one (renderers, GPU,
    network and browser processes; a process that has exited no longer counts)."""
    import psutil

    total = 0.0
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "chrom" in p.name():
                t = p.cpu_times()
                total += t.user + t.system
    return total


def _off_host(url: str) -> bool:
    return not url.startswith(("data:", "blob:")) and urllib.parse.urlparse(url).hostname not in LOCAL_HOSTS


def open_page(browser, off_host: list[str], size: tuple[int, int] = VIEWPORT, intercept: bool = True):
    """A new context and page whose every request is routed: local ones go through, any other is
    recorded in ``off_host`` and aborted (the dashboard must not reach outside the machine).

    With ``intercept=False`` requests are only watched (off-host ones recorded, not stopped): a
    routed request waits for this process to answer it, which would add Playwright's own CPU and
    delays to every one of a page's ~20 requests when timing pages."""
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]}, accept_downloads=True)
    if not intercept:
        ctx.on("request", lambda req: off_host.append(req.url) if _off_host(req.url) else None)
        return ctx, ctx.new_page()

    def route(r):
        if _off_host(r.request.url):
            off_host.append(r.request.url)
            r.abort()
        else:
            r.continue_()

    ctx.route("**/*", route)
    return ctx, ctx.new_page()


def concurrent_first_map(browser, url: str, n: int, server_pid: int | None = None, timeout_s: float = 120.0) -> dict:
    """Open ``n`` fresh sessions at once (each its own browser context: nothing cached) and time
    each one's first map; see the module docstring for the fields. ``server_pid`` (the server
    process) adds its CPU time.

    Raises
    ------
    RuntimeError
        If a page requested anything off the machine or not every map appeared in ``timeout_s``.
    """
    off_host: list[str] = []
    pages = [open_page(browser, off_host, intercept=False) for _ in range(n)]
    cdp = []
    for ctx, page in pages:
        page.add_init_script(FIRST_MAP_PROBE)
        session = ctx.new_cdp_session(page)
        session.send("Performance.enable")
        cdp.append(session)
    server0 = cpu_seconds(server_pid) if server_pid else None
    browser0 = chromium_cpu_seconds()
    t0 = time.time()
    for _, page in pages:  # returns at once: the n navigations overlap
        page.evaluate("u => { setTimeout(() => { window.location.href = u; }, 0); }", url)
    stamps: dict[int, float] = {}
    while len(stamps) < n and time.time() < t0 + timeout_s:
        pages[0][1].wait_for_timeout(100)  # (not time.sleep: Playwright handles its events meanwhile)
        for i, (_, page) in enumerate(pages):
            if i in stamps:
                continue
            try:
                shown = page.evaluate("() => window.__socmap_first_map")
            except Exception:  # noqa: BLE001 - the page is between documents (navigating)
                continue
            if shown is not None:
                stamps[i] = shown / 1000 - t0
    server_cpu = cpu_seconds(server_pid) - server0 if server_pid else None
    browser_cpu = chromium_cpu_seconds() - browser0
    metrics = []
    for session in cdp:
        m = {d["name"]: d["value"] for d in session.send("Performance.getMetrics")["metrics"]}
        metrics.append((m.get("TaskDuration", float("nan")), m.get("ScriptDuration", float("nan"))))
    for ctx, _ in pages:
        ctx.close()
    if off_host:
        raise RuntimeError(f"requests left the machine: {sorted(set(off_host))}")
    if len(stamps) < n:
        raise RuntimeError(f"only {len(stamps)} of {n} sessions showed a map within {timeout_s:.0f} s")
    out = {
        "n": n,
        "first_map_s": sorted(stamps.values()),
        "browser_cpu_s": browser_cpu / n,
        "renderer_task_s": statistics.mean(t for t, _ in metrics),
        "script_s": statistics.mean(s for _, s in metrics),
    }
    if server_cpu is not None:
        out["server_cpu_s"] = server_cpu / n
    out["cores_used"] = ((server_cpu or 0.0) + browser_cpu) / out["first_map_s"][-1]
    return out


def floor_ratio(one: dict, many: dict, cores: int) -> float:
    """The least slowest-of-N time over one session's time that the measured CPU costs allow:
    the N sessions' server and browser CPU shared by ``cores`` cores, and the server's share on
    its one thread (Bokeh's server handles sessions one at a time)."""
    n = many["n"]
    per_session = many.get("server_cpu_s", 0.0) + many["browser_cpu_s"]
    floor = max(one["first_map_s"][-1], n * per_session / cores, n * many.get("server_cpu_s", 0.0))
    return floor / one["first_map_s"][-1]


def describe(one: dict, many: dict, cores: int) -> str:
    """One line per measurement pair: the figures of the issue (first map, ratio) and the costs."""

    def costs(r: dict) -> str:
        server = f"server {r['server_cpu_s']:.2f} s CPU/session, " if "server_cpu_s" in r else ""
        return (f"{server}Chromium {r['browser_cpu_s']:.2f} s CPU/page (renderer main thread "
                f"{r['renderer_task_s']:.2f} s, script {r['script_s']:.2f} s); {r['cores_used']:.2f} cores busy")

    n = many["n"]
    return (f"1 session: first map {one['first_map_s'][0]:.2f} s; {costs(one)}\n"
            f"{n} sessions: first map median {statistics.median(many['first_map_s']):.2f} s, slowest {many['first_map_s'][-1]:.2f} s "
            f"({many['first_map_s'][-1] / one['first_map_s'][0]:.2f}× one session); {costs(many)}\n"
            f"floor that these CPU costs allow on {cores} cores: {floor_ratio(one, many, cores):.2f}× one session")


def concurrent_main(args: argparse.Namespace) -> dict:
    from playwright.sync_api import sync_playwright

    cores = len(os.sched_getaffinity(0))
    out: dict = {"runs": [str(r) for r in args.run], "cpus": cores, "load_avg_1min": os.getloadavg()[0], "pairs": []}
    with dashboard_server(args.run) as (url, proc), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        concurrent_first_map(browser, url, 1, proc.pid)  # the browser's own start-up, not a visitor's
        for i in range(args.repeat):
            one = concurrent_first_map(browser, url, 1, proc.pid)
            many = concurrent_first_map(browser, url, args.concurrent, proc.pid)
            out["pairs"].append({"one": one, "many": many, "floor_ratio": floor_ratio(one, many, cores),
                                 "load_avg_1min": os.getloadavg()[0]})
            if not args.json:
                print(f"pass {i + 1} (load avg {os.getloadavg()[0]:.1f} on {cores} CPUs):\n" + describe(one, many, cores), flush=True)
        browser.close()
    if args.json:
        print(json.dumps(out))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, action="append",
                    help="a mapped hybrid run folder (not modified); with --concurrent, repeat it to serve several")
    ap.add_argument("--concurrent", type=int, default=None, metavar="N",
                    help="time to first map in Chromium for 1 and N concurrent sessions instead of the KAN switch")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--recompute", action="store_true", help="compute the curves from the fold models (the map-time cost)")
    ap.add_argument("--repeat", type=int, default=3, help="passes over the parameters (the first may include imports)")
    args = ap.parse_args(argv)
    if args.concurrent is not None:
        if args.concurrent < 1:
            ap.error("--concurrent must be at least 1")
        return concurrent_main(args)
    if len(args.run) > 1:
        ap.error("the KAN switch timing takes one --run")
    args.run = args.run[0]

    from bokeh.document import Document

    from dashboards.run import RunData
    from dashboards.kan_inspector import KanInspector
    from dashboards.views import MapExplorer
    from socmap import kan_curves
    from socmap.runs import open_run

    out: dict = {"run": str(args.run), "load_avg_1min": os.getloadavg()[0], "cpus": os.cpu_count()}
    data = RunData(args.run)
    t = time.perf_counter()
    if args.recompute:
        ds = kan_curves.compute_kan_curves(open_run(args.run))
        out["compute_s"] = time.perf_counter() - t
        data.analysis.use(ds)
    _ = data.analysis.dataset
    out["curves_load_s"] = time.perf_counter() - t
    if not data.analysis.available:
        raise SystemExit(f"{args.run} has no curves (a baseline run?)")
    out["method"] = data.analysis.method
    out["n_parameters"], out["n_covariates"], out["n_folds"] = len(data.parameters), len(data.analysis.covariate_names), data.analysis.n_folds

    m = MapExplorer(data)
    x0, x1, y0, y1 = data.layers.bounds
    m.tap(0.5 * (x0 + x1), 0.5 * (y0 + y1))
    k = KanInspector(data, map_view=m)
    doc = Document()
    root = k.__panel__().get_root(doc)  # rendered once: later switches replace the figures' data
    doc.add_root(root)
    times: dict[str, list[float]] = {p: [] for p in data.parameters}
    order = data.parameters[1:] + data.parameters[:1]
    for _ in range(args.repeat):
        for p in order:
            t = time.perf_counter()
            k.parameter = p
            times[p].append(time.perf_counter() - t)
    best = {p: min(v) for p, v in times.items()}
    first = {p: v[0] for p, v in times.items()}
    out["switch_s"] = best
    out["switch_first_s"] = first
    out["switch_max_s"] = max(first.values())
    out["switch_median_s"] = statistics.median(best.values())
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.run}: {out['method']}, {out['n_parameters']} parameters × {out['n_covariates']} covariates × {out['n_folds']} folds "
              f"(load avg {out['load_avg_1min']:.1f} on {out['cpus']} CPUs)")
        if "compute_s" in out:
            print(f"  curves computed from the fold models (map time): {out['compute_s']:.2f} s")
        print(f"  curves loaded: {out['curves_load_s']:.3f} s")
        print("  parameter switch → updated figures: " + ", ".join(f"{p} {first[p]:.2f} s (best {best[p]:.2f})" for p in order))
        print(f"  slowest first switch {out['switch_max_s']:.2f} s, median best {out['switch_median_s']:.2f} s (goal ≤ 1 s)")
    return out


if __name__ == "__main__":
    main()
