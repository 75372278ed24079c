"""Dashboard views: each a ``pn.viewable.Viewer`` whose widgets are its parameters and whose plots
are functions of those parameters. They read one :class:`dashboards.run.RunData` (shared, cached).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import panel as pn
import param
import holoviews as hv
from holoviews.operation.datashader import rasterize

from dashboards.layers import KIND_LABEL
from dashboards.map_figure import MapFigure
from dashboards.map_style import MAP_W, map_image_opts, tap_marker, use_bokeh_canvas
from dashboards.outlines import state_outlines
from dashboards.run import RunData, load_run
from socmap.clm5.parameters import INDEX, LOWER, NAMES, PARAMETERS, UPPER

use_bokeh_canvas()

CMAPS = {
    "soc": "viridis", "stock": "viridis", "parameter": "cividis", "diagnostic": "inferno",
    "covariate": "kbc_r", "difference": "RdBu_r", "uncertainty": "magma", "mask": "gray", "other": "viridis",
}
CMAP_CHOICES = ["auto", "viridis", "cividis", "plasma", "inferno", "magma", "kbc_r", "fire", "YlGnBu", "RdBu_r", "coolwarm", "PuOr"]
PROFILE_W = 360
RASTERIZE_CELLS = 250_000  # grids larger than this are rasterized per view (datashader); smaller go as they are
NO_COMPARE = "(none)"  # the Map tab's "Compare with run" when nothing is subtracted


def _layer_options(run: RunData) -> dict[str, str]:
    """Select options {label: variable}, grouped by kind in the label."""
    out = {}
    for name, kind in run.layers.variables.items():
        unit = run.layers.units(name)
        out[f"{KIND_LABEL.get(kind, kind)} · {name}" + (f" [{unit}]" if unit and unit != "1" else "")] = name
    return out


def _default_layer(run: RunData) -> str:
    for cand in ("soc_stock_0_30cm", "soc_stock_0_100cm", "soc"):
        if cand in run.layers.variables:
            return cand
    return next(iter(run.layers.variables))


def outlines() -> hv.Path:
    x, y = state_outlines()
    return hv.Path([{"x": x, "y": y}], kdims=["x", "y"]).opts(color="#333333", line_width=0.7, alpha=0.8)


class MapExplorer(pn.viewable.Viewer):
    """Any layer of the run store on a CONUS map; sites overlay; tap a location or a site."""

    layer = param.Selector(doc="Map layer")
    soc_layer = param.Integer(default=0, bounds=(0, 19), doc="Soil layer for 3-D variables")
    cmap = param.Selector(default="auto", objects=CMAP_CHOICES, doc="Colour map")
    log_colour = param.Boolean(default=False, doc="Logarithmic colour scale")
    show_sites = param.Boolean(default=True, doc="Show observation sites")
    site_colour = param.Selector(default="observed SOC", objects=["observed SOC", "residual (log sim/obs)"])
    compare = param.Selector(default=NO_COMPARE, objects=[NO_COMPARE], doc="Show this run minus another run")
    tap_x = param.Number(default=None, allow_None=True)
    tap_y = param.Number(default=None, allow_None=True)
    tapped_site = param.String(default=None, allow_None=True)
    #: the map's current (x0, x1, y0, y1) in degrees; the Parameters tab opens at this view
    view_range = param.Tuple(default=None, allow_None=True, length=4)

    def __init__(self, run: RunData, compare_runs: dict[str, RunData] | None = None, **params):
        self.run = run
        self.compare_runs = compare_runs or {}
        opts = _layer_options(run)
        self.param.layer.objects = opts
        self.param.compare.objects = [NO_COMPARE, *self.compare_runs]
        params.setdefault("layer", _default_layer(run))
        super().__init__(**params)
        self.param.soc_layer.bounds = (0, max(run.layers.n_layers - 1, 0))
        self._tap = hv.streams.Tap(x=None, y=None)
        self._tap.add_subscriber(self._on_tap)
        self._range = hv.streams.RangeXY()
        self._range.add_subscriber(self._on_range)
        self._plot = None
        self._figure: MapFigure | None = None

    def _on_range(self, x_range=None, y_range=None, **_):
        if x_range is not None and y_range is not None and None not in (*x_range, *y_range):
            self.view_range = (float(x_range[0]), float(x_range[1]), float(y_range[0]), float(y_range[1]))

    # ---------------------------------------------------------- data
    @property
    def compared(self) -> str | None:
        """The run subtracted from this one on the map, or None."""
        return None if self.compare == NO_COMPARE else self.compare

    @property
    def is_difference(self) -> bool:
        return self.compared is not None or self.run.layers.kind(self.layer) == "difference"

    def current_array(self) -> np.ndarray:
        arr = self.run.layers.array(self.layer, self.soc_layer)
        if self.compared is not None:
            other = self.compare_runs[self.compared]
            if self.layer in other.layers and other.layers.array(self.layer, self.soc_layer).shape == arr.shape:
                arr = arr - other.layers.array(self.layer, self.soc_layer)
        return arr

    def current_clim(self) -> tuple[float, float]:
        if self.compared is None:
            return self.run.layers.clim(self.layer, self.soc_layer)
        a = self.current_array()
        finite = np.abs(a[np.isfinite(a)])
        m = float(np.percentile(finite, 98)) if finite.size else 1.0
        return (-(m or 1.0), m or 1.0)

    def title(self) -> str:
        label = self.run.layers.label(self.layer, self.soc_layer if self.run.layers.has_layers(self.layer) else None)
        unit = self.run.layers.units(self.layer)
        prefix = f"{self.run.name} − {self.compared}: " if self.compared else ""
        return f"{prefix}{label}" + (f" [{unit}]" if unit else "")

    def colorbar_title(self) -> str:
        unit = self.run.layers.units(self.layer)
        return f"{self.layer}" + (f" ({unit})" if unit else "")

    # ---------------------------------------------------------- plot elements
    @param.depends("layer", "soc_layer", "compare")
    def image(self) -> hv.Image:
        arr = self.current_array()
        vdim = hv.Dimension(self.layer, label=self.layer, unit=self.run.layers.units(self.layer) or None)
        return hv.Image((self.run.layers.x, self.run.layers.y, arr), kdims=["x", "y"], vdims=[vdim], bounds=None)

    def _resolved_cmap(self) -> str:
        if self.cmap != "auto":
            return self.cmap
        if self.is_difference:
            return CMAPS["difference"]
        return CMAPS.get(self.run.layers.kind(self.layer), "viridis")

    @param.depends("layer", "soc_layer", "cmap", "log_colour", "compare")
    def _style(self) -> dict:
        lo, hi = self.current_clim()
        logz = bool(self.log_colour and lo > 0 and not self.is_difference)
        return dict(cmap=self._resolved_cmap(), clim=(lo, hi), logz=logz, clabel=self.colorbar_title(), title=self.title())

    def site_values(self) -> tuple[pd.DataFrame, str, tuple[float, float], str] | None:
        """The shown sites (lon, lat, site_id, value, fold), their colour map, limits and value
        label; None when sites are hidden or the run has none."""
        df = self.run.sites.summary
        if not self.show_sites or df.empty:
            return None
        if self.site_colour.startswith("observed"):
            vals, cmap, clim, label = df["soc_obs_top"], "viridis", tuple(np.nanpercentile(df["soc_obs_top"], [2, 98])), "observed SOC, top sample (g C m-3)"
        else:
            m = float(np.nanpercentile(np.abs(df["log_ratio"]), 98)) or 1.0
            vals, cmap, clim, label = df["log_ratio"], "RdBu_r", (-m, m), "log(sim/obs), site mean"
        data = pd.DataFrame({"lon": df["lon"], "lat": df["lat"], "site_id": df["site_id"], "value": vals, "fold": df["fold"]})
        return data, cmap, clim, label

    @param.depends("show_sites", "site_colour")
    def sites(self) -> hv.Points:
        shown = self.site_values()
        if shown is None:
            return hv.Points([], kdims=["lon", "lat"], vdims=["site_id", "value"])
        data, cmap, clim, label = shown
        return hv.Points(data, kdims=["lon", "lat"], vdims=[hv.Dimension("value", label=label), "site_id", "fold"]).opts(
            color="value", cmap=cmap, clim=clim, size=6, line_color="white", line_width=0.6, tools=["hover"],
            colorbar=False)

    @param.depends("tap_x", "tap_y")
    def marker(self) -> hv.Points:
        return tap_marker(self.tap_x, self.tap_y)

    @property
    def rasterized(self) -> bool:
        """Whether the grid is big enough to be rasterized per view (a HoloViews map, :meth:`plot`)
        instead of sent whole in one Bokeh figure (:meth:`figure`)."""
        return self.run.layers.x.size * self.run.layers.y.size > RASTERIZE_CELLS

    def figure(self) -> MapFigure:
        """The map as one Bokeh figure (grids up to RASTERIZE_CELLS), made on the first call; later
        parameter changes replace its data in place."""
        if self._figure is None:
            self._figure = MapFigure(self.run.layers.bounds, on_tap=lambda x, y: self._on_tap(x=x, y=y),
                                     on_range=lambda x0, x1, y0, y1: self._on_range(x_range=(x0, x1), y_range=(y0, y1)))
            self._show_image()
            self._show_sites()
            self._figure.show_marker(self.tap_x, self.tap_y)
            self.param.watch(lambda *_: self._show_image(), ["layer", "soc_layer", "cmap", "log_colour", "compare"])
            self.param.watch(lambda *_: self._show_sites(), ["show_sites", "site_colour"])
            self.param.watch(lambda *_: self._figure.show_marker(self.tap_x, self.tap_y), ["tap_x", "tap_y"])
        return self._figure

    def _show_image(self) -> None:
        style = self._style()
        layers = self.run.layers
        self._figure.show_image(self.current_array(), layers.x, layers.y, layers.resolution_deg, cmap=style["cmap"],
                                clim=style["clim"], logz=style["logz"], title=style["title"],
                                colorbar_title=style["clabel"], value_name=self.layer)

    def _show_sites(self) -> None:
        shown = self.site_values()
        if shown is None:
            self._figure.show_sites(None)
        else:
            data, cmap, clim, label = shown
            self._figure.show_sites(data, cmap=cmap, clim=clim, label=label)

    def plot(self) -> hv.DynamicMap:
        """The map as a HoloViews overlay, rasterized per view (for grids over RASTERIZE_CELLS)."""
        if self._plot is None:
            img = hv.DynamicMap(self.image)
            if self.rasterized:  # big grids: send screen pixels only
                img = rasterize(img, precompute=True, dynamic=True)
            img = img.apply(self._restyle).opts(colorbar=True, **map_image_opts(self.run.layers.bounds, self.colorbar_title))
            self._tap.source = img
            self._range.source = img
            overlay = img * outlines() * hv.DynamicMap(self.sites) * hv.DynamicMap(self.marker)
            self._plot = overlay
        return self._plot

    @param.depends("layer", "soc_layer", "cmap", "log_colour", "compare")
    def _restyle(self, element):
        return element.opts(**self._style())

    # ---------------------------------------------------------- tap handling
    def _on_tap(self, x=None, y=None, **_):
        if x is None or y is None:
            return
        site = None
        df = self.run.sites.summary
        if self.show_sites and not df.empty:
            d = np.hypot(df["lon"].to_numpy() - x, df["lat"].to_numpy() - y)
            k = int(np.argmin(d))
            if d[k] <= max(0.6, 1.5 * self.run.layers.resolution_deg):
                site = str(df["site_id"].iloc[k])
        self.param.update(tap_x=float(x), tap_y=float(y), tapped_site=site)

    def tap(self, x: float, y: float) -> None:
        """Programmatic tap (tests and the site selector)."""
        self._on_tap(x=x, y=y)

    # ---------------------------------------------------------- panels
    @param.depends("layer", "soc_layer", "compare")
    def caption(self):
        arr = self.current_array()
        finite = arr[np.isfinite(arr)]
        stats = f"min {finite.min():.4g} · median {np.median(finite):.4g} · max {finite.max():.4g}" if finite.size else "no data"
        return pn.pane.Markdown(f"**{self.title()}** — {stats}", css_classes=["layer-caption"], margin=(0, 10))

    @param.depends("tap_x", "tap_y", "layer", "soc_layer")
    def location_panel(self):
        if self.tap_x is None:
            return pn.pane.Markdown("*Click the map: a location's values, parameters and SOC profile appear here; "
                                    "click a site for its observed profile.*", width=PROFILE_W)
        cell = self.run.layers.cell(self.tap_x, self.tap_y)
        if cell is None:
            return pn.pane.Markdown(f"({self.tap_x:.2f}, {self.tap_y:.2f}) is outside the grid.", width=PROFILE_W)
        iy, ix = cell
        rows = []
        for name in [self.layer, "soc_stock_0_30cm", "soc_stock_0_100cm", *self.run.parameters]:
            if name in self.run.layers and name not in [r[0] for r in rows]:
                v = self.run.layers.value(name, iy, ix, self.soc_layer)
                rows.append((name, f"{v:.4g}", self.run.layers.units(name)))
        table = pd.DataFrame(rows, columns=["variable", "value", "units"])
        head = f"**Location** {self.run.layers.y[iy]:.2f}°N, {self.run.layers.x[ix]:.2f}°E"
        if not np.isfinite(self.run.layers.value("land_mask", iy, ix) if "land_mask" in self.run.layers else 1.0) or (
                "land_mask" in self.run.layers and self.run.layers.value("land_mask", iy, ix) == 0):
            head += " (not land)"
        items = [pn.pane.Markdown(head), pn.pane.DataFrame(table, index=False, width=PROFILE_W, sizing_mode="fixed")]
        if "soc" in self.run.layers and self.run.layers.depth_m is not None:
            prof = self.run.layers.profile("soc", iy, ix)
            if np.isfinite(prof).any():
                items.append(hv.Curve((prof, self.run.layers.depth_m), hv.Dimension("soc_cell", label="SOC (g C m-3)"),
                                      hv.Dimension("depth_cell", label="depth (m)")).opts(
                    invert_yaxis=True, width=PROFILE_W, height=260, title="simulated SOC profile", color="#1f77b4",
                    logx=False, tools=["hover"]))
                items[-1] = pn.pane.HoloViews(items[-1], linked_axes=False)
        return pn.Column(*items, width=PROFILE_W + 20)

    def widgets(self) -> pn.Column:
        return pn.Column(
            pn.widgets.Select.from_param(self.param.layer, name="Layer", size=1),
            pn.pane.Markdown(self.param.soc_layer.rx.pipe(lambda i: f"Depth: {self.run.layers.depth_text(i)} (slider above the map)"),
                             margin=(0, 10), styles={"font-size": "12px"},
                             visible=self.param.layer.rx.pipe(lambda v: self.run.layers.has_layers(v))),
            pn.widgets.Select.from_param(self.param.cmap, name="Colours"),
            pn.widgets.Checkbox.from_param(self.param.log_colour, name="log colour scale"),
            pn.widgets.Checkbox.from_param(self.param.show_sites, name="observation sites"),
            pn.widgets.RadioButtonGroup.from_param(self.param.site_colour, color="default", variant="outline"),
            *( [pn.widgets.Select.from_param(self.param.compare, name="Compare with run")] if self.compare_runs else []),
        )

    def depth_slider(self) -> pn.widgets.DiscreteSlider:
        """The soil layer as a depth slider (labels: node depth in m), shown for SOC by layer."""
        depth = self.run.layers.depth_m
        options = {f"{d:.2f} m": i for i, d in enumerate(depth)} if depth is not None else {"layer 0": 0}
        slider = pn.widgets.DiscreteSlider(label="Depth (SOC by layer)", options=options, value=self.soc_layer, width=MAP_W,
                                           css_classes=["depth-slider"],
                                           visible=self.param.layer.rx.pipe(lambda v: self.run.layers.has_layers(v)))
        slider.param.watch(lambda e: setattr(self, "soc_layer", int(e.new)), "value")
        self.param.watch(lambda e: setattr(slider, "value", int(e.new)), "soc_layer")
        return slider

    def _map_pane(self):
        if self.rasterized:
            return pn.pane.HoloViews(self.plot(), linked_axes=False)
        return pn.pane.Bokeh(self.figure().figure, sizing_mode="fixed")

    def __panel__(self):
        return pn.FlexBox(
            pn.Column(self.caption, self.depth_slider(), self._map_pane(), sizing_mode="fixed"),
            self.location_panel,
        )


class ParameterFields(pn.viewable.Viewer):
    """Small multiples of the learned parameter maps (the predicted ones first)."""

    which = param.Selector(default="predicted", objects=["predicted", "all 21"])
    ncols = param.Integer(default=2, bounds=(1, 4))

    def __init__(self, run: RunData, map_view: MapExplorer | None = None, **params):
        self.run = run
        self.map_view = map_view
        super().__init__(**params)

    def names(self) -> list[str]:
        pred = [p for p in self.run.parameters if p in self.run.layers]
        if self.which == "predicted" and pred:
            return pred
        return pred + [p for p in NAMES if p in self.run.layers and p not in pred]

    def frame_width(self) -> int:
        """Map width in px: two maps per row fill ~1000 px (1366-px screen less the sidebar)."""
        return max(220, int(960 / self.ncols) - 120)

    @param.depends("which", "ncols")
    def layout(self):
        plots = []
        w = self.frame_width()
        l, b, r, t = self.run.layers.bounds
        vr = self.map_view.view_range if self.map_view is not None else None
        xlim, ylim = ((vr[0], vr[1]), (vr[2], vr[3])) if vr else ((l, r), (b, t))
        for name in self.names():
            arr, (l, b, r, t) = self.run.layers.coarse(name, max_px=2 * w)
            prm = PARAMETERS[INDEX[name]]
            lo, hi = self.run.layers.clim(name)
            fixed = name not in self.run.parameters
            img = hv.Image(arr, bounds=(l, b, r, t), kdims=["x", "y"], vdims=[hv.Dimension(name, unit=prm.unit)]).opts(
                cmap="cividis", clim=(lo, hi) if hi > lo else (prm.lower, prm.upper), colorbar=True, frame_width=w,
                frame_height=int(w * 0.5), xaxis=None, yaxis=None, tools=["hover"], active_tools=["wheel_zoom"],
                clabel=prm.unit, xlim=xlim, ylim=ylim,
                title=f"{name}{' (fixed)' if fixed else ''} — {prm.description}"[:70], fontsize={"title": 10},
                clipping_colors={"NaN": (0, 0, 0, 0)}, bgcolor="#eef1f4")
            plots.append(img * outlines().opts(line_width=0.5))
        if not plots:
            return pn.pane.Alert(f"Run {self.run.name} has no parameter layers (a {self.run.encoder} run maps SOC only).",
                                 alert_type="info", sizing_mode="stretch_width")
        # shared axes: the maps pan and zoom together; they open at the Map tab's current view
        return pn.pane.HoloViews(hv.Layout(plots).cols(self.ncols).opts(shared_axes=True), linked_axes=False)

    def __panel__(self):
        return pn.Column(
            pn.FlexBox(pn.widgets.RadioButtonGroup.from_param(self.param.which), pn.widgets.IntSlider.from_param(self.param.ncols, name="columns", width=200)),
            pn.pane.Markdown("Learned parameter fields in physical units (colour bar: units), at the Map tab's zoom; the maps pan and zoom together. "
                             "Parameters the run did not predict stay at their fixed value.", sizing_mode="stretch_width"),
            self.layout, sizing_mode="stretch_width",
        )


class SiteView(pn.viewable.Viewer):
    """Observed SOC profile at a site vs the simulated one (out-of-fold, and every fold's model)."""

    site = param.Selector(doc="Observation site")

    def __init__(self, run: RunData, map_view: MapExplorer | None = None, **params):
        self.run = run
        self.map_view = map_view
        ids = list(run.sites.summary["site_id"].astype(str))
        self.param.site.objects = ids
        params.setdefault("site", ids[0] if ids else None)
        super().__init__(**params)
        if map_view is not None:
            map_view.param.watch(self._from_map, "tapped_site")

    def _from_map(self, event):
        if event.new is not None and event.new in self.param.site.objects:
            self.site = event.new

    def observations(self) -> pd.DataFrame:
        obs = self.run.sites.observations
        return obs[obs["site_id"].astype(str) == str(self.site)].sort_values("depth_m")

    def fold_profiles(self) -> np.ndarray | None:
        """SOC [n_models, layer] (g C m-3) of every fold model at the site (from the run store)."""
        return self.run.sites.fold_profiles(self.site)

    def profile_plot(self) -> hv.Overlay:
        """SOC (x) against depth (y, downwards): the fold models' range as a band, the held-out
        simulation, and the observations as depth intervals (top–bottom bars) where the run
        records sample tops and bottoms, otherwise as points at the sample depth."""
        obs = self.observations()
        xdim = hv.Dimension("soc", label="SOC (g C m-3)")
        ydim = hv.Dimension("depth", label="depth (m)")
        layers = []
        folds = self.fold_profiles()
        depth = self.run.layers.depth_m
        bottom_col = next((c for c in ("bottom_m", "depth_bottom_m") if c in obs), None)
        top_col = next((c for c in ("top_m", "depth_top_m") if c in obs), None)
        deepest = float(obs[bottom_col].max()) if bottom_col and len(obs) else (float(obs["depth_m"].max()) if len(obs) else 1.0)
        max_depth = max(0.3, deepest) * 1.3
        if folds is not None and depth is not None and np.isfinite(folds).any():
            keep = depth <= max_depth
            lo, hi = np.nanmin(folds[:, keep], 0), np.nanmax(folds[:, keep], 0)
            ring = np.column_stack([np.concatenate([lo, hi[::-1]]), np.concatenate([depth[keep], depth[keep][::-1]])])
            layers.append(hv.Polygons([ring], kdims=[xdim, ydim], label=f"fold models (range of {len(folds)})").opts(
                color="#ff7f0e", alpha=0.3, line_alpha=0))
            layers.append(hv.Curve((np.nanmean(folds[:, keep], 0), depth[keep]), kdims=[xdim], vdims=[ydim], label=f"fold mean (band: range of {len(folds)} folds)").opts(
                color="#ff7f0e", line_width=1.5))
        layers.append(hv.Curve((obs["soc_sim_g_m3"].to_numpy(), obs["depth_m"].to_numpy()), kdims=[xdim], vdims=[ydim],
                               label="simulated (held-out fold)").opts(color="#d62728", line_width=2.5))
        if top_col and bottom_col:
            v = obs["soc_obs_g_m3"].to_numpy()
            layers.append(hv.Segments((v, obs[top_col].to_numpy(), v, obs[bottom_col].to_numpy()),
                                      kdims=[xdim, ydim, "soc_1", "depth_1"], label="observed layer").opts(color="black", line_width=4))
        layers.append(hv.Scatter((obs["soc_obs_g_m3"].to_numpy(), obs["depth_m"].to_numpy()), kdims=[xdim], vdims=[ydim],
                                 label="observed").opts(color="black", size=7 if top_col else 8))
        return hv.Overlay(layers).opts(
            ylim=(max_depth, 0), width=480, height=430, legend_position="bottom_right", title=f"SOC profile at {self.site}",
            tools=["hover"])

    def parameter_table(self) -> pd.DataFrame:
        rows = []
        sp = self.run.sites.parameters
        st = self.run.sites.inputs
        for name in self.run.parameters or NAMES:
            j = INDEX[name]
            row = {"parameter": name, "unit": PARAMETERS[j].unit}
            if sp is not None and self.site in sp.index and f"p_{name}" in sp:
                p = float(sp.loc[self.site, f"p_{name}"])
                row["learned"] = f"{LOWER[j] + p * (UPPER[j] - LOWER[j]):.4g}"
            if st is not None and self.site in st.index and f"true_p_{name}" in st:
                p = float(st.loc[self.site, f"true_p_{name}"])
                row["true"] = f"{LOWER[j] + p * (UPPER[j] - LOWER[j]):.4g}"
            row["CLM5 default"] = f"{PARAMETERS[j].default:.4g}"
            rows.append(row)
        return pd.DataFrame(rows)

    @param.depends("site")
    def view(self):
        if self.site is None:
            return pn.pane.Markdown("No sites in this run.")
        row = self.run.sites.summary.set_index("site_id").loc[self.site]
        info = (f"### Site {self.site}\n{row['lat']:.3f}°N, {row['lon']:.3f}°E · CV fold {int(row['fold'])} · "
                f"{int(row['n_obs'])} samples · mean log(sim/obs) {row['log_ratio']:+.2f}")
        return pn.Column(pn.pane.Markdown(info), pn.Row(
            pn.pane.HoloViews(self.profile_plot(), css_classes=["site-profile"], linked_axes=False),
            pn.Column(pn.pane.Markdown("**Parameters at the site** (held-out fold model)"),
                      pn.pane.DataFrame(self.parameter_table(), index=False, width=420, sizing_mode="fixed"))))

    def __panel__(self):
        return pn.Column(
            pn.widgets.AutocompleteInput.from_param(self.param.site, name="Site (type, or click a site on the map)",
                                                    min_characters=1, case_sensitive=False, search_strategy="includes", width=300),
            self.view,
        )


class RunSummary(pn.viewable.Viewer):
    """Metrics from run.json and the out-of-fold obs-vs-sim scatter."""

    colour_by = param.Selector(default="depth_m", objects=["depth_m", "fold"])

    def __init__(self, run: RunData, **params):
        self.run = run
        super().__init__(**params)

    def metrics_table(self) -> pd.DataFrame:
        cv = self.run.record.get("metrics", {}).get("cv", {})
        rows = []
        for f in cv.get("folds", []):
            row = {"fold": str(f.get("fold")), **{k: f.get(k) for k in ("nse", "nse_log", "rmse", "r")}}
            if f.get("edges_kept") is not None:  # KAN: what the sparsify/prune/refit phases left
                kept = (f.get("selection") or {}).get("kept", "final")
                row["KAN model"] = (f"pruned to {sum(f['edges_kept'])} edges" if kept == "final"
                                    else "plain fit (the pruned model validated worse)")
            rows.append(row)
        if cv.get("mean"):
            rows.append({"fold": "mean", **cv["mean"]})
        if cv.get("pooled"):
            rows.append({"fold": "pooled", **{k: cv["pooled"].get(k) for k in ("nse", "nse_log", "rmse", "r")}})
        df = pd.DataFrame(rows)
        df = df.rename(columns={"nse": "NSE", "nse_log": "NSE (log)", "rmse": "RMSE (g C m-3)", "r": "r"}).round(3)
        return _no_nan(df)

    def totals(self) -> dict | None:
        """CONUS totals written by `socmap map` (store attrs or map.json ``totals``), or None."""
        t = self.run.layers.ds.attrs.get("totals")
        if not t:
            t = (self.run.map_record or {}).get("totals")
        return t if isinstance(t, dict) and t else None

    def totals_table(self) -> pd.DataFrame | None:
        t = self.totals()
        return None if t is None else pd.DataFrame(_flatten(t), columns=["quantity", "value"])

    def load_report_tables(self) -> list:
        """The profile load report of run.json (sources, totals, rows dropped by reason) as panes."""
        rep = self.run.record.get("load_report")
        if not isinstance(rep, dict) or not rep:
            return []
        out = [pn.pane.Markdown("**Profiles loaded** (the training data's load report)")]
        src = rep.get("sources")
        if isinstance(src, list) and src:
            df = pd.DataFrame([r if isinstance(r, dict) else {"source": str(r)} for r in src])
            out.append(pn.pane.DataFrame(_no_nan(df), index=False, width=620, sizing_mode="fixed"))
        rows = _flatten({k: rep[k] for k in ("totals", "dropped_by_reason") if isinstance(rep.get(k), dict) and rep.get(k)})
        if rows:
            out.append(pn.pane.DataFrame(pd.DataFrame(rows, columns=["", "rows"]), index=False, width=620, sizing_mode="fixed"))
        return out

    def wetland_table(self) -> pd.DataFrame | None:
        """The run's wetland process (run.json ``wetland``): each fold's learned oxygen scalar and
        water table, or None for a run without the learned anoxia."""
        w = self.run.record.get("wetland")
        if not isinstance(w, dict) or not w.get("learned"):
            return None
        rows = [{"fold": str(k), "o_min (decay below the water table, × aerated)": round(float(v["o_min"]), 3),
                 "water table (m)": round(float(v["water_table_m"]), 3)}
                for k, v in sorted(w["learned"].items(), key=lambda kv: int(kv[0]))]
        return pd.DataFrame(rows)

    def wetland_md(self) -> str:
        w = self.run.record.get("wetland") or {}
        return (f"**Wetland process** (docs/model.md §5.10): {w.get('wetland_sites', 0)} wetland sites, anoxia "
                f"{w.get('anoxia')}, saturated water scalar {'on' if w.get('saturated') else 'off'}, flag as an "
                f"encoder input {'on' if w.get('wetland_input') else 'off'}")

    def recovery_table(self) -> pd.DataFrame | None:
        m = self.run.record.get("metrics", {})
        if "param_recovery" not in m:
            return None
        rows = []
        rel = m.get("relationship_recovery", {})
        for name, v in m["param_recovery"].items():
            edges = rel.get(name, {}).get("edges", [])
            rows.append({"parameter": name, "R²": round(v.get("r2", np.nan), 3), "r": round(v.get("corr", np.nan), 3),
                         "KL(importance)": round(rel.get(name, {}).get("kl", np.nan), 3),
                         "true edges: curve R² / mean rank": "; ".join(f"{e['covariate']} {e['curve_r2']:.2f}/{e['mean_rank']:.1f}" for e in edges)})
        return pd.DataFrame(rows)

    @param.depends("colour_by")
    def scatter(self) -> hv.Overlay:
        obs = self.run.sites.observations
        ok = (obs["soc_obs_g_m3"] > 0) & (obs["soc_sim_g_m3"] > 0)
        d = obs[ok]
        lo = float(min(d["soc_obs_g_m3"].min(), d["soc_sim_g_m3"].min())) * 0.8
        hi = float(max(d["soc_obs_g_m3"].max(), d["soc_sim_g_m3"].max())) * 1.2
        pts = hv.Points(d, kdims=[hv.Dimension("soc_obs_g_m3", label="observed SOC (g C m-3)"),
                                  hv.Dimension("soc_sim_g_m3", label="simulated SOC (g C m-3)")],
                        vdims=["depth_m", "fold", "site_id"]).opts(
            color=self.colour_by, cmap="viridis" if self.colour_by == "depth_m" else "Category10", colorbar=True,
            size=4, alpha=0.7, tools=["hover"])
        one = hv.Curve([(lo, lo), (hi, hi)]).opts(color="black", line_dash="dashed")
        return (pts * one).opts(logx=True, logy=True, width=520, height=480, title="held-out observations vs simulation",
                                xlim=(lo, hi), ylim=(lo, hi))

    def __panel__(self):
        rec = self.record_md()
        rt = self.recovery_table()
        tt = self.totals_table()
        wt = self.wetland_table()
        return pn.FlexBox(
            pn.Column(pn.pane.Markdown(rec, width=620),
                      *( [pn.pane.Markdown("**CONUS totals** (from the map; fold spread where recorded)"),
                          pn.pane.DataFrame(tt, index=False, width=620, sizing_mode="fixed")] if tt is not None else []),
                      pn.pane.Markdown("**Cross-validated skill** (held-out folds)"),
                      pn.pane.DataFrame(self.metrics_table(), index=False, width=620, sizing_mode="fixed"),
                      *( [pn.pane.Markdown(self.wetland_md()), pn.pane.DataFrame(wt, index=False, width=620, sizing_mode="fixed")]
                         if wt is not None else []),
                      *( [pn.pane.Markdown("**Recovery of the truth** (synthetic twin, held-out sites)"),
                          pn.pane.DataFrame(_no_nan(rt), index=False, width=620, sizing_mode="fixed")] if rt is not None else []),
                      *self.load_report_tables()),
            pn.Column(pn.widgets.RadioButtonGroup.from_param(self.param.colour_by), self.scatter),
        )

    def record_md(self) -> str:
        r = self.run.record
        cfg = r.get("config", {})
        data = r.get("data", {})
        t = r.get("timing", {}).get("total_s")
        return (f"### Run {self.run.name}\nencoder **{cfg.get('encoder')}**, parameters **{cfg.get('params')}**, "
                f"{cfg.get('folds')} folds ({cfg.get('split')}), {cfg.get('epochs')} epochs max · data **{data.get('entry')}** "
                f"({data.get('n_sites')} sites, {data.get('n_obs', '?')} observations) · map resolution {self.run.layers.resolution_deg:g}° · "
                f"git {str(r.get('git_revision') or '?')[:10]}" + (f" · trained in {t:.0f} s" if t else ""))


def _no_nan(df: pd.DataFrame) -> pd.DataFrame:
    """The table with every missing cell shown as "—" (a table never shows NaN)."""
    return df.astype(object).where(df.notna(), "—")


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dict -> [(dotted key, value text)]; numbers to 4 significant digits."""
    rows = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows.extend(_flatten(v, key + " · "))
        elif isinstance(v, (list, tuple)):
            rows.append((key, ", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v)))
        elif isinstance(v, float):
            rows.append((key, f"{v:.4g}"))
        else:
            rows.append((key, str(v)))
    return rows


__all__ = ["MapExplorer", "ParameterFields", "SiteView", "RunSummary", "load_run", "outlines"]
