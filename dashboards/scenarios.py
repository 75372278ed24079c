"""The Scenarios tab: a run's climate scenarios (``runs/R/scenarios/NAME``, written by
``socmap scenario``) as maps, a trajectory at a clicked cell and the CONUS total against time.

Everything shown is read from the scenario folder: ``maps.zarr`` (a run store: scenario, present,
``delta_*``/``delta_pct_*`` and their ``_std`` fold spread, ``transient_<stock>`` (time, y, x) with
``_std``, ``conus_<stock>_pg`` (time, model), ``elasticity_*`` and ``dominant_process`` with CF flag
attributes) and ``scenario.json`` (definition, CONUS totals). Nothing is computed here beyond
what drawing needs (mean ± sd bands, min–max over fold models).
"""

from __future__ import annotations

import io
import json
from functools import cached_property, lru_cache
from pathlib import Path

import holoviews as hv
import numpy as np
import panel as pn
import param

from dashboards.layers import KIND_LABEL, MapLayers
from dashboards.map_style import MAP_W, map_image_opts, tap_marker
from dashboards.views import CMAPS, outlines

SCENARIOS_DIR = "scenarios"
RECORD = "scenario.json"
STOCKS = ("soc_stock_0_100cm", "soc_stock_0_30cm")
DEFAULT_LAYER = "delta_soc_stock_0_100cm"
#: categorical colours of ``dominant_process`` (Category10): code k gets CATEGORY_COLOURS[k]
CATEGORY_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                    "#bcbd22", "#17becf")
PLOT_W, PLOT_H = 420, 250
BAND = "#9ecae1"


class ScenarioData:
    """One scenario folder: its store (as :class:`MapLayers`), its record and the transient series."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        self.layers = MapLayers(self.path)
        record = self.path / RECORD
        try:
            self.record: dict = json.loads(record.read_text()) if record.is_file() else {}
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"{record} cannot be read ({exc}): re-run `socmap scenario` for {self.path.name}") from exc
        self.name = str(self.layers.ds.attrs.get("scenario_name") or self.path.name)
        self._series: dict[str, np.ndarray] = {}

    @cached_property
    def years(self) -> np.ndarray:
        """Years since the start of the transient [T] (empty without a transient)."""
        ds = self.layers.ds
        return ds["time"].values.astype(np.int64) if "time" in ds.coords and self.transient_stocks else np.zeros(0, np.int64)

    @cached_property
    def transient_stocks(self) -> list[str]:
        """Stocks with a transient (``transient_<stock>`` in the store)."""
        return [s for s in STOCKS if f"transient_{s}" in self.layers.ds]

    def series(self, name: str) -> np.ndarray:
        """A (time, y, x) variable as float32 [T, ny, nx], read once."""
        if name not in self._series:
            self._series[name] = self.layers.ds[name].transpose("time", "y", "x").values.astype(np.float32, copy=False)
        return self._series[name]

    def trajectory(self, stock: str, iy: int, ix: int) -> tuple[np.ndarray, np.ndarray]:
        """Fold-mean stock [T] and its fold standard deviation [T] (kg C m-2) at one cell."""
        mean = self.series(f"transient_{stock}")[:, iy, ix]
        std_name = f"transient_{stock}_std"
        std = self.series(std_name)[:, iy, ix] if std_name in self.layers.ds else np.full_like(mean, np.nan)
        return mean, std

    def conus_folds(self, stock: str) -> np.ndarray:
        """CONUS total of every fold model [T, K] (Pg C)."""
        return np.asarray(self.layers.ds[f"conus_{stock}_pg"].transpose("time", "model").values, dtype=np.float64)

    def categories(self, name: str) -> list[tuple[int, str]] | None:
        """(code, meaning) of a categorical layer (CF ``flag_values``/``flag_meanings``), else None."""
        attrs = self.layers.attrs(name)
        if "flag_values" not in attrs:
            return None
        meanings = str(attrs.get("flag_meanings", "")).split()
        return [(int(v), meanings[i].replace("_", " ") if i < len(meanings) else str(v))
                for i, v in enumerate(attrs["flag_values"])]

    def delta_summary(self) -> str:
        """Markdown: CONUS present, scenario and Δ totals (Pg C, fold mean ± sd) from scenario.json."""
        conus = self.record.get("conus") or {}
        rows = ["| stock | present (Pg C) | scenario (Pg C) | Δ (Pg C) | Δ (%) |", "|---|---|---|---|---|"]
        for s in STOCKS:
            c = conus.get(s)
            if not c:
                continue
            rows.append(f"| {s.replace('soc_stock_', '').replace('_', '–', 1).replace('cm', ' cm')} | {_pm(c['present_pg'])} | "
                        f"{_pm(c['scenario_pg'])} | {_pm(c['delta_pg'], signed=True)} | {_pm(c['delta_pct'], signed=True, digits=2)} |")
        if len(rows) == 2:
            return "*scenario.json has no CONUS totals.*"
        k = self.record.get("n_models", "?")
        return "\n".join(rows) + f"\n\nfold mean ± standard deviation over {k} fold models (cells every fold solved)"

    def definition(self) -> str:
        """Markdown: what the scenario is (from scenario.json, else the store's ``scenario`` attribute)."""
        sc = self.record.get("scenario") or self.layers.ds.attrs.get("scenario") or {}
        if not sc:
            return f"**{self.name}**"
        parts = [f"**{self.name}**" + (f" — {sc['description']}" if sc.get("description") else "")]
        parts.append(f"warming {_monthly(sc.get('warming_c', [0.0]), '°C')}, precipitation {_monthly(sc.get('precip_pct', [0.0]), '%')}")
        parts.append("carbon inputs held at present values" if sc.get("hold_inputs") else "carbon inputs follow the climate")
        if sc.get("years"):
            ramp = sc.get("ramp_years") or 0
            parts.append(f"transient: {sc['years']} years" + (f", forcing ramped over {ramp} years" if ramp else ", step change"))
        return " · ".join(parts)


def _pm(summary: dict, signed: bool = False, digits: int = 3) -> str:
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    text = fmt.format(summary["mean"])
    if summary.get("std") is not None:
        text += f" ± {summary['std']:.{digits}f}"
    return text


def _monthly(values, unit: str) -> str:
    v = np.atleast_1d(np.asarray(values, dtype=float))
    if np.allclose(v, v[0]):
        return f"{v[0]:+g} {unit}"
    return f"{v.mean():+.3g} {unit} (annual mean; per month {', '.join(f'{x:+g}' for x in v)})"


@lru_cache(maxsize=16)
def _load(resolved: str) -> ScenarioData:
    return ScenarioData(resolved)


def load_scenario(path: str | Path) -> ScenarioData:
    """The :class:`ScenarioData` of a scenario folder, opened once per process and shared by all sessions."""
    return _load(str(Path(path).resolve()))


def find_scenarios(run_dir: str | Path) -> dict[str, Path]:
    """Scenario name -> folder for each finished scenario of a run (``scenarios/*/maps.zarr`` + ``scenario.json``)."""
    root = Path(run_dir) / SCENARIOS_DIR
    return {p.parent.name: p.parent for p in sorted(root.glob("*/maps.zarr")) if (p.parent / RECORD).is_file()}


def layer_options(data: ScenarioData) -> dict[str, str]:
    """Select options {label: variable}: the scenario's 2-D layers by kind (differences first)."""
    order = ("difference", "stock", "sensitivity", "uncertainty")
    maps = {n: k for n, k in data.layers.variables.items() if not data.layers.has_layers(n) and k in order}
    out = {}
    for kind in order:
        for name, k in maps.items():
            if k == kind:
                unit = data.layers.units(name)
                out[f"{KIND_LABEL.get(kind, kind)} · {name}" + (f" [{unit}]" if unit and unit != "1" else "")] = name
    return out


class ScenarioView(pn.viewable.Viewer):
    """Pick a scenario of the run; its Δ map (or any of its layers), the trajectory at a clicked cell,
    the CONUS total against time and the scenario's definition and CONUS ΔSOC."""

    scenario = param.Selector(doc="Scenario")
    layer = param.Selector(doc="Scenario layer")
    tap_x = param.Number(default=None, allow_None=True)
    tap_y = param.Number(default=None, allow_None=True)

    def __init__(self, run_dir: str | Path, **params):
        self.paths = find_scenarios(run_dir)
        if not self.paths:
            raise ValueError(f"{Path(run_dir) / SCENARIOS_DIR} holds no finished scenario: run `socmap scenario --run {run_dir} --name NAME ...`")
        self.param.scenario.objects = list(self.paths)
        params.setdefault("scenario", next(iter(self.paths)))
        super().__init__(**params)
        self._set_layers()
        self.param.watch(lambda e: self._set_layers(), "scenario")
        self._tap = hv.streams.Tap(x=None, y=None)
        self._tap.add_subscriber(self._on_tap)
        self._plot = None

    # ---------------------------------------------------------- data
    @property
    def data(self) -> ScenarioData:
        return load_scenario(self.paths[self.scenario])

    def _set_layers(self) -> None:
        opts = layer_options(self.data)
        keep = self.layer if self.layer in opts.values() else None
        self.param.layer.objects = opts
        self.layer = keep or (DEFAULT_LAYER if DEFAULT_LAYER in opts.values() else next(iter(opts.values())))

    @property
    def stock(self) -> str:
        """The stock whose trajectory is shown: the one the map layer is about (0–100 cm otherwise)."""
        return "soc_stock_0_30cm" if "0_30cm" in (self.layer or "") else "soc_stock_0_100cm"

    def is_difference(self) -> bool:
        # elasticities have a sign too: diverging, centred on 0
        return self.data.layers.kind(self.layer) == "difference" or (
            self.layer.startswith("elasticity_") and not self.layer.endswith("_std"))

    def style(self) -> dict:
        """Colour map, limits and colour-bar title of the shown layer (diverging, centred on 0, for differences)."""
        layers = self.data.layers
        unit = layers.units(self.layer)
        clabel = f"{self.layer}" + (f" ({unit})" if unit else "")
        cats = self.data.categories(self.layer)
        if cats:
            n = max(c for c, _ in cats) + 1
            return dict(cmap=list(CATEGORY_COLOURS[:n]), clim=(-0.5, n - 0.5), clabel=clabel, colorbar=False)
        lo, hi = layers.clim(self.layer)
        if self.is_difference():
            m = max(abs(lo), abs(hi)) or 1.0
            return dict(cmap=CMAPS["difference"], clim=(-m, m), clabel=clabel, colorbar=True)
        return dict(cmap=CMAPS.get(layers.kind(self.layer), "viridis"), clim=(lo, hi), clabel=clabel, colorbar=True)

    def title(self) -> str:
        """``scenario: long name`` (the units are on the colour bar)."""
        return f"{self.scenario}: {self.data.layers.label(self.layer)}"

    # ---------------------------------------------------------- map
    @param.depends("scenario", "layer")
    def image(self) -> hv.Image:
        layers = self.data.layers
        vdim = hv.Dimension(self.layer, label=self.layer, unit=layers.units(self.layer) or None)
        return hv.Image((layers.x, layers.y, layers.array(self.layer)), kdims=["x", "y"], vdims=[vdim], bounds=None)

    @param.depends("scenario", "layer")
    def _restyle(self, element):
        return element.opts(title=self.title(), **self.style())

    @param.depends("tap_x", "tap_y")
    def marker(self) -> hv.Points:
        return tap_marker(self.tap_x, self.tap_y)

    def plot(self) -> hv.Overlay:
        if self._plot is None:
            img = hv.DynamicMap(self.image).apply(self._restyle).opts(
                **map_image_opts(self.data.layers.bounds, lambda: self.style()["clabel"]))
            self._tap.source = img
            self._plot = img * outlines() * hv.DynamicMap(self.marker)
        return self._plot

    def _on_tap(self, x=None, y=None, **_):
        if x is not None and y is not None:
            self.param.update(tap_x=float(x), tap_y=float(y))

    def tap(self, x: float, y: float) -> None:
        """Programmatic tap (tests)."""
        self._on_tap(x=x, y=y)

    @param.depends("scenario", "layer")
    def legend(self):
        cats = self.data.categories(self.layer)
        if not cats:
            return pn.pane.Markdown("", width=0, height=0, margin=0)
        items = " ".join(f'<span style="white-space:nowrap"><span style="display:inline-block;width:12px;height:12px;'
                         f'background:{CATEGORY_COLOURS[c]};margin-right:4px"></span>{name}</span>' for c, name in cats)
        return pn.pane.HTML(f'<div style="display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px">{items}</div>',
                            width=MAP_W + 80, css_classes=["category-legend"])

    # ---------------------------------------------------------- trajectory and totals
    def trajectory_plot(self, iy: int, ix: int) -> hv.Overlay | None:
        """The transient stock at one cell against time: fold mean and mean ± sd band."""
        data = self.data
        if self.stock not in data.transient_stocks:
            return None
        mean, std = data.trajectory(self.stock, iy, ix)
        if not np.isfinite(mean).any():
            return None
        years = data.years
        ylabel = f"{self.stock} (kg C m-2)"
        band = hv.Area((years, mean - std, mean + std), "year", ["lo", "hi"], label="fold mean ± sd").opts(
            color=BAND, alpha=0.6, line_width=0)
        line = hv.Curve((years, mean), hv.Dimension("year", label="years since start"),
                        hv.Dimension("stock", label=ylabel), label="fold mean").opts(color="#08519c", line_width=2, tools=["hover"])
        elements = band * line
        if self.stock in data.layers:  # the scenario's steady state, where the trajectory heads
            elements = elements * hv.HLine(data.layers.value(self.stock, iy, ix), label="scenario steady state").opts(
                color="#d62728", line_dash="dashed", line_width=1)
        return elements.opts(width=PLOT_W, height=PLOT_H, legend_position="bottom_right", show_grid=True,
                             title=f"{self.stock} at {data.layers.y[iy]:.2f}°N, {data.layers.x[ix]:.2f}°E",
                             ylabel=ylabel, xlabel="years since start")

    @param.depends("scenario", "layer")
    def conus_plot(self):
        """CONUS total of the stock against time: mean over fold models, min–max band, one point per year."""
        data = self.data
        if self.stock not in data.transient_stocks:
            return pn.pane.Markdown("*This scenario has no transient (`socmap scenario --years N`).*", width=PLOT_W)
        folds = data.conus_folds(self.stock)
        years = data.years
        mean = folds.mean(1)
        ylabel = f"CONUS {self.stock} (Pg C)"
        band = hv.Area((years, folds.min(1), folds.max(1)), "year", ["lo", "hi"], label="fold min–max").opts(
            color=BAND, alpha=0.6, line_width=0)
        line = hv.Curve((years, mean), hv.Dimension("year", label="years since start"),
                        hv.Dimension("total", label=ylabel), label="fold mean").opts(color="#08519c", line_width=2)
        points = hv.Scatter((years, mean), hv.Dimension("year", label="years since start"),
                            hv.Dimension("total", label=ylabel)).opts(color="#08519c", size=5, tools=["hover"])
        overlay = (band * line * points).opts(width=PLOT_W, height=PLOT_H, legend_position="bottom_right", show_grid=True,
                                              title=f"CONUS total, {self.stock.replace('soc_stock_', '')}",
                                              ylabel=ylabel, xlabel="years since start")
        return pn.pane.HoloViews(overlay, linked_axes=False, css_classes=["conus-total"])

    @param.depends("scenario", "layer", "tap_x", "tap_y")
    def location_panel(self):
        if self.tap_x is None:
            return pn.pane.Markdown("*Click the map: the stock's trajectory at that cell appears here.*", width=PLOT_W)
        cell = self.data.layers.cell(self.tap_x, self.tap_y)
        if cell is None:
            return pn.pane.Markdown(f"({self.tap_x:.2f}, {self.tap_y:.2f}) is outside the grid.", width=PLOT_W)
        iy, ix = cell
        layers = self.data.layers
        v = layers.value(self.layer, iy, ix)
        cats = dict(self.data.categories(self.layer) or [])
        shown = cats.get(int(v), f"{v:g}") if cats and np.isfinite(v) else f"{v:.4g} {layers.units(self.layer)}"
        head = pn.pane.Markdown(f"**{layers.y[iy]:.2f}°N, {layers.x[ix]:.2f}°E** — {self.layer}: {shown}", width=PLOT_W)
        plot = self.trajectory_plot(iy, ix)
        if plot is None:
            return pn.Column(head, pn.pane.Markdown("*No transient at this cell (off land, or no `--years`).*", width=PLOT_W))
        return pn.Column(head, pn.pane.HoloViews(plot, linked_axes=False, css_classes=["trajectory"]))

    @param.depends("scenario")
    def summary(self):
        data = self.data
        return pn.Column(pn.pane.Markdown(data.definition(), sizing_mode="stretch_width"),
                         pn.pane.Markdown("**CONUS SOC, scenario steady state against present**\n\n" + data.delta_summary(),
                                          sizing_mode="stretch_width", css_classes=["scenario-delta"]),
                         sizing_mode="stretch_width")

    # ---------------------------------------------------------- export
    def geotiff(self) -> io.BytesIO:
        """GeoTIFF of the shown scenario layer."""
        return self.data.layers.geotiff_bytes(self.layer)

    def _filename(self) -> str:
        return f"{self.scenario}_{self.layer}.tif"

    def widgets(self) -> pn.Column:
        download = pn.widgets.FileDownload(callback=self.geotiff, filename=self._filename(), label="⤓ GeoTIFF of this layer",
                                           button_type="primary", width=220, css_classes=["scenario-geotiff"])
        self.param.watch(lambda e: setattr(download, "filename", self._filename()), ["scenario", "layer"])
        return pn.Row(
            pn.widgets.Select.from_param(self.param.scenario, name="Scenario", width=200, css_classes=["scenario-picker"]),
            pn.widgets.Select.from_param(self.param.layer, name="Layer", width=340, css_classes=["scenario-layer"]),
            download)

    def __panel__(self):
        return pn.Column(
            self.widgets(),
            pn.FlexBox(pn.Column(pn.pane.HoloViews(self.plot(), linked_axes=False, css_classes=["scenario-map"]), self.legend,
                                 sizing_mode="fixed"),
                       pn.Column(self.location_panel, self.conus_plot, width=PLOT_W + 20)),
            self.summary, sizing_mode="stretch_width")
