"""The socmap dashboard: one FastListTemplate over one (or several) run stores.

    panel serve dashboards/app.py --args --run runs/NAME [--run runs/OTHER ...]
    socmap serve --run runs/NAME

Importable: ``build_app(runs)`` returns the template; ``Dashboard`` is the top-level Viewer.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

if __package__ in (None, ""):  # `panel serve dashboards/app.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import panel as pn
import param

from dashboards.data import ASSETS, find_runs, load_run
from dashboards.views import KanInspector, MapExplorer, ParameterFields, RunSummary, SiteView

CSS_FILE = ASSETS / "dashboard.css"
TABS = ("Map", "Parameters", "KAN inspector", "Sites", "Run summary")


class Dashboard(pn.viewable.Viewer):
    """Run picker + the five views; the sidebar holds the map's widgets and the GeoTIFF export."""

    run = param.Selector(doc="Run")

    def __init__(self, runs: list[str | Path], **params):
        if not runs:
            raise ValueError("no runs given: pass --run runs/NAME (a run folder with run.json and maps.zarr)")
        self.runs = {load_run(str(Path(r).resolve())).name: str(Path(r).resolve()) for r in runs}
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
            pn.pane.Markdown(f"**Run** {data.name} ({data.encoder}, {data.resolution:g}°)")]
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
        suffix = f"_layer{self.map.soc_layer:02d}" if self.map.run.has_layers(layer) else ""
        cmp_ = f"_minus_{self.map.compare}" if self.map.compare else ""
        return f"{self.map.run.name}_{layer}{suffix}{cmp_}.tif"

    def _geotiff(self):
        run = self.map.run
        if self.map.compare is None:
            return run.geotiff_bytes(self.map.layer, self.map.soc_layer if run.has_layers(self.map.layer) else None)
        import io
        import tempfile

        da = run.dataarray(self.map.layer, self.map.soc_layer if run.has_layers(self.map.layer) else None).copy(data=self.map.current_array())
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "layer.tif"
            da.rio.to_raster(path, driver="GTiff", tiled=True, compress="DEFLATE")
            return io.BytesIO(path.read_bytes())

    def __panel__(self):
        return pn.Row(self.sidebar, self.main)


def build_app(runs: list[str | Path]) -> pn.template.FastListTemplate:
    dash = Dashboard(runs)
    css = [CSS_FILE.read_text()] if CSS_FILE.exists() else []
    template = pn.template.FastListTemplate(
        title="socmap — soil organic carbon", sidebar=[dash.sidebar], main=[dash.main], sidebar_width=300,
        accent="#3b6e4f", header_background="#2f5640", raw_css=css, theme_toggle=False, main_layout=None,
    )
    template.dashboard = dash  # for tests
    return template


def parse_runs(argv: list[str]) -> list[str]:
    parser = argparse.ArgumentParser(prog="dashboards/app.py")
    parser.add_argument("--run", action="append", default=[], help="run folder (repeatable)")
    args, _ = parser.parse_known_args(argv)
    return args.run or [str(p) for p in find_runs("runs")]


def main_template() -> pn.template.FastListTemplate:
    runs = parse_runs(sys.argv[1:])
    if not runs:
        return pn.template.FastListTemplate(title="socmap", main=[pn.pane.Markdown(
            "No run store found. Train and map a run (`socmap train`, `socmap map`), then "
            "`panel serve dashboards/app.py --args --run runs/NAME`.")])
    return build_app(runs)


if __name__.startswith("bokeh_app") or __name__ == "__main__":
    pn.extension("tabulator", sizing_mode="fixed", notifications=False)
    main_template().servable()
