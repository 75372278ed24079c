"""The socmap dashboard: one page (Panel's VanillaTemplate) over one (or several) run folders.

    socmap serve --run runs/NAME [--run runs/OTHER ...]

Importable: ``build_app(runs)`` returns the template, ``Dashboard`` is the top-level Viewer and
``serve(runs, ...)`` runs the Panel server (what ``socmap serve`` calls).
"""

from __future__ import annotations

import copy
import logging
import threading
from pathlib import Path

import panel as pn
import param
from panel.io import resources as pn_resources
from panel.io import server as pn_server

from socmap.resources import shipped_file

from dashboards.compare import CompareView
from dashboards.run import find_runs, load_run, open_error
from dashboards.scenarios import ScenarioView, find_scenarios
from dashboards.kan_inspector import KanInspector
from dashboards.views import MapExplorer, ParameterFields, RunSummary, SiteView

log = logging.getLogger(__name__)

class OfflineVanilla(pn.template.VanillaTemplate):
    """Panel's VanillaTemplate without its web font (Lato from Google; no request leaves the
    machine: the page uses the system's fonts, ``assets/dashboard.css``).

    Chosen over the FastListTemplate, whose design scripts (fast-components.js, 0.9 MB) every
    visitor's browser parsed before the first map."""

    _resources = {"css": {}}


TABS = ("Map", "Compare", "Parameters", "KAN inspector", "Sites", "Run summary")
SCENARIO_TAB = "Scenarios"  # shown after TABS when the run has scenarios (runs/R/scenarios/NAME)


class Dashboard(pn.viewable.Viewer):
    """Run picker + the views; the sidebar holds the map's widgets and the GeoTIFF export.

    Only the Map tab is built with the page; the other tabs are built when first opened (a
    visitor pays for what they look at). A run that cannot be opened shows an error panel
    naming the file and the fix instead of the views.
    """

    run = param.Selector(doc="Run")

    def __init__(self, runs: list[str | Path], **params):
        if not runs:
            raise ValueError("no runs given: pass --run runs/NAME (a run folder with run.json and maps.zarr)")
        self.errors: dict[str, str] = {}
        self.runs: dict[str, str] = {}
        for r in runs:
            path = str(Path(r).resolve())
            err = open_error(path)
            name = load_run(path).name if err is None else f"{Path(path).name} (cannot be opened)"
            self.runs[name] = path
            if err is not None:
                self.errors[name] = err
        self.param.run.objects = list(self.runs)
        params.setdefault("run", next((n for n in self.runs if n not in self.errors), next(iter(self.runs))))
        super().__init__(**params)
        self.sidebar = pn.Column(sizing_mode="stretch_width")
        self.main = pn.Column(sizing_mode="stretch_width")
        self.tabs = None
        self._build()
        self.param.watch(lambda e: self._build(), "run")

    def _picker(self, text: str):
        if len(self.runs) > 1:
            return pn.widgets.Select.from_param(self.param.run, name="Run", css_classes=["run-picker"])
        return pn.pane.Markdown(text)

    def _build(self) -> None:
        if self.run in self.errors:
            self.map = None
            self.sidebar[:] = [self._picker(f"**Run** {self.run}")]
            self.main[:] = [pn.pane.Alert(f"### Run {Path(self.runs[self.run]).name} cannot be opened\n\n{self.errors[self.run]}", alert_type="danger",
                                          sizing_mode="stretch_width", css_classes=["run-error"])]
            return
        data = load_run(self.runs[self.run])
        others = {n: load_run(p) for n, p in self.runs.items() if n != self.run and n not in self.errors}
        self.map = MapExplorer(data, compare_runs=others)
        self.compare = CompareView(data, others)
        self.fields = ParameterFields(data, map_view=self.map)
        self.kan = KanInspector(data, map_view=self.map)
        self.site = SiteView(data, map_view=self.map)
        self.summary = RunSummary(data)
        self.download = pn.widgets.FileDownload(
            callback=self._geotiff, filename=self._filename(), color="primary", label="⤓ GeoTIFF of the shown layer",
            sizing_mode="stretch_width", css_classes=["export-geotiff"])
        self.map.param.watch(lambda e: setattr(self.download, "filename", self._filename()), ["layer", "soc_layer", "compare"])
        picker = self._picker(f"**Run** {data.name} ({data.encoder}, {data.layers.resolution_deg:g}°)")
        self.sidebar[:] = [picker, self.map.widgets(), pn.layout.Divider(), self.download,
                           pn.pane.Markdown("Exports the layer on the Map tab (EPSG:4326, NaN = no data).", styles={"font-size": "11px"})]
        views = [self.map, self.compare, self.fields, self.kan, self.site, self.summary]
        names = list(TABS)
        self.scenarios = self._scenario_view(self.runs[self.run])
        if self.scenarios is not None:
            views.append(self.scenarios)
            names.append(SCENARIO_TAB)
        active = min(self.tabs.active, len(views) - 1) if self.tabs is not None else 0
        self._views = views
        slots = [pn.Column(sizing_mode="stretch_width") for _ in views]
        self.tabs = pn.Tabs(*zip(names, slots), dynamic=True, active=active, sizing_mode="stretch_width")
        self._slots = slots
        self._fill(active)
        self.tabs.param.watch(lambda e: self._fill(e.new), "active")
        self.main[:] = [self.tabs]

    @staticmethod
    def _scenario_view(run_dir: str):
        """The Scenarios tab's view, None without scenarios, or an error panel for a damaged one."""
        if not find_scenarios(run_dir):
            return None
        try:
            return ScenarioView(run_dir)
        except Exception as exc:  # noqa: BLE001 - a damaged scenario store is shown, not raised
            return pn.pane.Alert(f"### The scenarios of this run cannot be opened\n\n{exc}\n\nRe-run `socmap scenario` for it.",
                                 alert_type="danger", sizing_mode="stretch_width", css_classes=["scenario-error"])

    def _fill(self, i: int) -> None:
        """Build tab ``i`` the first time it is opened."""
        slot = self._slots[i]
        if not len(slot):
            slot[:] = [self._views[i]]

    def _filename(self) -> str:
        layer = self.map.layer
        suffix = f"_layer{self.map.soc_layer:02d}" if self.map.run.layers.has_layers(layer) else ""
        cmp_ = f"_minus_{self.map.compared}" if self.map.compared else ""
        return f"{self.map.run.name}_{layer}{suffix}{cmp_}.tif"

    def _geotiff(self):
        layers = self.map.run.layers
        layer = self.map.soc_layer if layers.has_layers(self.map.layer) else None
        values = None if self.map.compared is None else self.map.current_array()
        return layers.geotiff_bytes(self.map.layer, layer, values=values)

    def __panel__(self):
        return pn.Row(self.sidebar, self.main)


def build_app(runs: list[str | Path]) -> OfflineVanilla:
    """The dashboard page over these run folders (each with run.json and maps.zarr)."""
    dash = Dashboard(runs)
    template = OfflineVanilla(
        title="socmap — soil organic carbon", sidebar=[dash.sidebar], main=[dash.main], sidebar_width=340,
        header_background="#2f5640", raw_css=[shipped_file("assets/dashboard.css").read_text()],
        # Panel's busy state is one per process: with the header spinner every event of any visitor
        # repainted the spinner of every open session (cost grew with the square of the sessions)
        busy_indicator=None,
    )
    template.dashboard = dash  # for tests
    return template


_BUNDLE_RESOURCES = pn_server.bundle_resources


def _bundle_without_webgl(roots, resources, *args, **kwargs):
    """Panel's page bundle without Bokeh's WebGL bundle (bokeh-gl, 0.2 MB), which Bokeh's
    server sends to every page: the dashboard draws on a 2-D canvas (``use_bokeh_canvas``)."""
    if resources is not None and "bokeh-gl" in getattr(resources, "components", ()):
        resources = copy.copy(resources)
        resources.components = [c for c in resources.components if c != "bokeh-gl"]
    return _BUNDLE_RESOURCES(roots, resources, *args, **kwargs)


def serve(runs: list[str | Path], *, port: int = 5006, address: str = "127.0.0.1", show: bool = False) -> None:
    """Serve the dashboard over ``runs`` (default: every mapped run under ./runs) until Ctrl-C.

    Raises
    ------
    FileNotFoundError
        If no run is given and none is found, or a run folder lacks run.json or maps.zarr.
    """
    runs = [Path(r) for r in runs] or find_runs("runs")
    missing = [str(r) for r in runs if not (r / "run.json").is_file() or not (r / "maps.zarr").exists()]
    if not runs or missing:
        raise FileNotFoundError(f"no run store at {', '.join(missing) or 'runs/*'}: train and map a run first "
                                "(`socmap train`, `socmap map`)")
    warm = []
    for r in runs:  # open the stores once, before the first visitor (a damaged run: an error panel)
        err = open_error(r)
        if err is not None:
            log.warning("run %s cannot be opened; the dashboard shows why: %s", r, err)
        else:
            warm.append(load_run(r))
    # the curves load in one thread, run after run, while the server starts (see dashboards.curves)
    threading.Thread(target=lambda: [run.warm() for run in warm], daemon=True, name="socmap-warm-curves").start()
    # Panel 1.9 sends MathJax (bokeh-mathjax.min.js, 1.8 MB, the largest script of the page) to every
    # page that holds a Markdown/HTML pane, whether or not it has any TeX. The dashboard has none, and
    # every visitor's browser would parse it before the first map: leave the choice to Bokeh's own test.
    pn_resources._panel_use_mathjax = lambda roots: False
    pn_server.bundle_resources = _bundle_without_webgl
    pn.extension(sizing_mode="fixed", notifications=False)
    pn.serve(
        lambda: build_app(runs),
        port=port, address=address, show=show, threaded=False, title="socmap",
        websocket_origin=[f"localhost:{port}", f"127.0.0.1:{port}", f"{address}:{port}"],
    )
