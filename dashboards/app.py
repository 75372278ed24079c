"""The socmap dashboard: one FastListTemplate over one (or several) run folders.

    socmap serve --run runs/NAME [--run runs/OTHER ...]

Importable: ``build_app(runs)`` returns the template, ``Dashboard`` is the top-level Viewer and
``serve(runs, ...)`` runs the Panel server (what ``socmap serve`` calls).
"""

from __future__ import annotations

import threading
from pathlib import Path

import panel as pn
import param

from socmap.resources import shipped_file

from dashboards.run import find_runs, load_run
from dashboards.views import KanInspector, MapExplorer, ParameterFields, RunSummary, SiteView

TABS = ("Map", "Parameters", "KAN inspector", "Sites", "Run summary")


class Dashboard(pn.viewable.Viewer):
    """Run picker + the five views; the sidebar holds the map's widgets and the GeoTIFF export."""

    run = param.Selector(doc="Run")

    def __init__(self, runs: list[str | Path], **params):
        if not runs:
            raise ValueError("no runs given: pass --run runs/NAME (a run folder with run.json and maps.zarr)")
        self.runs = {load_run(r).name: str(Path(r).resolve()) for r in runs}
        self.param.run.objects = list(self.runs)
        params.setdefault("run", next(iter(self.runs)))
        super().__init__(**params)
        self.sidebar = pn.Column(sizing_mode="stretch_width")
        self.main = pn.Column(sizing_mode="stretch_width")
        self.tabs = None
        self._build()
        self.param.watch(lambda e: self._build(), "run")

    def _build(self) -> None:
        data = load_run(self.runs[self.run])
        others = {n: load_run(p) for n, p in self.runs.items() if n != self.run}
        self.map = MapExplorer(data, compare_runs=others)
        self.fields = ParameterFields(data)
        self.kan = KanInspector(data, map_view=self.map)
        self.site = SiteView(data, map_view=self.map)
        self.summary = RunSummary(data)
        self.download = pn.widgets.FileDownload(
            callback=self._geotiff, filename=self._filename(), button_type="primary", label="⤓ GeoTIFF of the shown layer",
            sizing_mode="stretch_width", css_classes=["export-geotiff"])
        self.map.param.watch(lambda e: setattr(self.download, "filename", self._filename()), ["layer", "soc_layer", "compare"])
        picker = [pn.widgets.Select.from_param(self.param.run, name="Run")] if len(self.runs) > 1 else [
            pn.pane.Markdown(f"**Run** {data.name} ({data.encoder}, {data.layers.resolution_deg:g}°)")]
        self.sidebar[:] = [*picker, self.map.widgets(), pn.layout.Divider(), self.download,
                           pn.pane.Markdown("Exports the layer on the Map tab (EPSG:4326, NaN = no data).", styles={"font-size": "11px"})]
        active = self.tabs.active if self.tabs is not None else 0
        self.tabs = pn.Tabs(*zip(TABS, [self.map, self.fields, self.kan, self.site, self.summary]), dynamic=True, active=active,
                            sizing_mode="stretch_width")
        # a tapped site opens nothing by itself; the Map tab's side panel and the Sites tab follow it
        self.main[:] = [self.tabs]
        threading.Thread(target=data.warm, daemon=True).start()

    def _filename(self) -> str:
        layer = self.map.layer
        suffix = f"_layer{self.map.soc_layer:02d}" if self.map.run.layers.has_layers(layer) else ""
        cmp_ = f"_minus_{self.map.compare}" if self.map.compare else ""
        return f"{self.map.run.name}_{layer}{suffix}{cmp_}.tif"

    def _geotiff(self):
        layers = self.map.run.layers
        layer = self.map.soc_layer if layers.has_layers(self.map.layer) else None
        values = None if self.map.compare is None else self.map.current_array()
        return layers.geotiff_bytes(self.map.layer, layer, values=values)

    def __panel__(self):
        return pn.Row(self.sidebar, self.main)


def build_app(runs: list[str | Path]) -> pn.template.FastListTemplate:
    """The dashboard page over these run folders (each with run.json and maps.zarr)."""
    dash = Dashboard(runs)
    template = pn.template.FastListTemplate(
        title="socmap — soil organic carbon", sidebar=[dash.sidebar], main=[dash.main], sidebar_width=300,
        accent="#3b6e4f", header_background="#2f5640", raw_css=[shipped_file("assets/dashboard.css").read_text()],
        theme_toggle=False, main_layout=None,
    )
    template.dashboard = dash  # for tests
    return template


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
    for r in runs:  # open the stores once, before the first visitor
        load_run(r)
    pn.extension("tabulator", sizing_mode="fixed", notifications=False)
    pn.serve(
        lambda: build_app(runs),
        port=port, address=address, show=show, threaded=False, title="socmap",
        websocket_origin=[f"localhost:{port}", f"127.0.0.1:{port}", f"{address}:{port}"],
    )
