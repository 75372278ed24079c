"""Compare anything with anything: one layer of this run against the same layer of another run
(real vs twin, KAN vs MLP, hybrid vs baseline) or against this run's CLM5-default-parameter map.

Shows run A, run B (on A's grid), A − B (diverging colours centred on 0, in the layer's units)
and a density scatter of B against A; the three maps pan and zoom together. A run on another
grid is brought onto A's grid by the nearest cell (:func:`socmap.store.align_layer`) and the
view says so. Nothing here computes science beyond that alignment.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import panel as pn
import param
import holoviews as hv
from holoviews.operation.datashader import rasterize

from dashboards.map_style import use_bokeh_canvas
from dashboards.outlines import state_outlines
from dashboards.run import RunData
from socmap.store import align_layer

use_bokeh_canvas()

#: the "other side" that is this run's own map with CLM5 default parameters
DEFAULT_SIDE = "CLM5 default parameters (this run)"
COMPARABLE_KINDS = ("stock", "soc", "parameter", "diagnostic", "uncertainty", "covariate")
PANEL_W, PANEL_H = 320, 160
SCATTER_BINS = 80
RASTERIZE_CELLS = 250_000  # as on the Map tab: only big grids are rasterized per view


def _outlines() -> hv.Path:
    x, y = state_outlines()
    return hv.Path([{"x": x, "y": y}], kdims=["x", "y"]).opts(color="#333333", line_width=0.6, alpha=0.8)


class CompareView(pn.viewable.Viewer):
    """Run A (this run) against B (another run, or this run's default-parameter map)."""

    layer = param.Selector(doc="Layer compared")
    against = param.Selector(doc="Compare with")
    soc_layer = param.Integer(default=0, bounds=(0, 19), doc="Soil layer for SOC by layer")

    def __init__(self, run: RunData, others: dict[str, RunData] | None = None, **params):
        self.run = run
        self.others = dict(others or {})
        layers = run.layers
        names = [n for n, k in layers.variables.items() if k in COMPARABLE_KINDS and not n.startswith("default_")]
        self.param.layer.objects = names
        sides = ([DEFAULT_SIDE] if any(f"default_{n}" in layers for n in names) else []) + list(self.others)
        self.param.against.objects = sides
        params.setdefault("layer", next((n for n in ("soc_stock_0_30cm", "soc_stock_0_100cm") if n in names), names[0] if names else None))
        params.setdefault("against", next(iter(self.others), sides[0] if sides else None))
        super().__init__(**params)
        self.param.soc_layer.bounds = (0, max(layers.n_layers - 1, 0))

    # ---------------------------------------------------------- data
    @property
    def label_a(self) -> str:
        return self.run.name

    @property
    def label_b(self) -> str:
        return f"{self.run.name} (CLM5 default)" if self.against == DEFAULT_SIDE else str(self.against)

    def _layer_index(self) -> int | None:
        return self.soc_layer if self.layer and self.run.layers.has_layers(self.layer) else None

    def pair(self) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        """(A, B on A's grid, a note): B is None when it cannot be shown; the note says why, or
        how B was brought onto A's grid."""
        if self.layer is None or self.against is None:
            return None, None, "Nothing to compare: this run has no other run and no default-parameter map. Serve several runs (`socmap serve --run A --run B`)."
        layer = self._layer_index()
        a = self.run.layers.array(self.layer, layer)
        if self.against == DEFAULT_SIDE:
            name = f"default_{self.layer}"
            if name not in self.run.layers:
                return a, None, f"The store has CLM5-default maps for {', '.join(n[8:] for n in self.run.layers.variables if n.startswith('default_'))} only; pick one of those layers."
            return a, self.run.layers.array(name, layer), "B: the same run's process model with the CLM5 default parameters."
        other = self.others[self.against]
        if self.layer not in other.layers:
            return a, None, f"Run {other.name} has no layer {self.layer} (its store: {other.layers.ds.attrs.get('encoder', '?')} run); pick another layer."
        b = other.layers.array(self.layer, layer if other.layers.has_layers(self.layer) else None)
        ua, ub = self.run.layers.units(self.layer), other.layers.units(self.layer)
        if ua != ub:
            return a, None, f"{self.layer} is in {ua!r} in {self.run.name} but {ub!r} in {other.name}: not comparable."
        lx, ly = self.run.layers, other.layers
        if b.shape == a.shape and np.allclose(lx.x, ly.x) and np.allclose(lx.y, ly.y):
            return a, b, f"B: run {other.name}, same grid."
        b = align_layer(b, ly.x, ly.y, lx.x, lx.y).astype(np.float32)
        return a, b, (f"B: run {other.name} at {ly.resolution_deg:g}°, brought onto {self.run.name}'s {lx.resolution_deg:g}° grid "
                      "by the nearest cell (no interpolation).")

    def stats(self, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
        ok = np.isfinite(a) & np.isfinite(b)
        d = (a - b)[ok]
        if not ok.any():
            return {"cells": 0}
        r = float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 2 and np.std(a[ok]) > 0 and np.std(b[ok]) > 0 else float("nan")
        return {"cells": int(ok.sum()), "mean A": float(a[ok].mean()), "mean B": float(b[ok].mean()),
                "mean A − B": float(d.mean()), "RMS difference": float(np.sqrt((d**2).mean())), "r": r}

    # ---------------------------------------------------------- plots
    def _image(self, arr: np.ndarray, title: str, cmap: str, clim: tuple[float, float], clabel: str):
        lx = self.run.layers
        l, b, r, t = lx.bounds
        img = hv.Image((lx.x, lx.y, arr), kdims=["x", "y"], vdims=[hv.Dimension("value", label=clabel)])
        ras = (rasterize(img, precompute=True) if arr.size > RASTERIZE_CELLS else img).opts(
            cmap=cmap, clim=clim, colorbar=True, clabel=clabel, title=title, frame_width=PANEL_W, frame_height=PANEL_H,
            xlim=(l, r), ylim=(b, t), tools=["hover"], active_tools=["wheel_zoom"], xlabel="longitude (°E)",
            ylabel="latitude (°N)", clipping_colors={"NaN": (0, 0, 0, 0)}, bgcolor="#eef1f4", fontsize={"title": 10})
        return ras * _outlines()

    def scatter(self, a: np.ndarray, b: np.ndarray, unit: str) -> hv.Overlay:
        """Density of (A, B) cell pairs (log10 cell count) with the 1:1 line."""
        ok = np.isfinite(a) & np.isfinite(b)
        lo = float(min(np.percentile(a[ok], 0.5), np.percentile(b[ok], 0.5)))
        hi = float(max(np.percentile(a[ok], 99.5), np.percentile(b[ok], 99.5)))
        hi = hi if hi > lo else lo + 1.0
        h, xe, ye = np.histogram2d(a[ok], b[ok], bins=SCATTER_BINS, range=[[lo, hi], [lo, hi]])
        with np.errstate(divide="ignore"):
            dens = np.where(h > 0, np.log10(h), np.nan).T[::-1]
        u = f" ({unit})" if unit and unit != "1" else ""
        img = hv.Image(dens, bounds=(lo, lo, hi, hi), kdims=[hv.Dimension("A", label=f"{self.label_a}{u}"),
                                                              hv.Dimension("B", label=f"{self.label_b}{u}")],
                       vdims=[hv.Dimension("log10 cells")]).opts(
            cmap="Blues", colorbar=True, clabel="log10 cells", frame_width=PANEL_H + 40, frame_height=PANEL_H + 40,
            title="B against A (cells)", tools=["hover"], clipping_colors={"NaN": (0, 0, 0, 0)}, fontsize={"title": 10})
        one = hv.Curve([(lo, lo), (hi, hi)], kdims=["A"], vdims=["B"]).opts(color="black", line_dash="dashed", line_width=1)
        return img * one

    @param.depends("layer", "against", "soc_layer")
    def view(self):
        a, b, note = self.pair()
        if a is None or b is None:
            return pn.pane.Alert(note, alert_type="warning", sizing_mode="stretch_width")
        unit = self.run.layers.units(self.layer)
        u = f" ({unit})" if unit and unit != "1" else ""
        depth = f", {self.run.layers.depth_text(self.soc_layer)}" if self._layer_index() is not None else ""
        both = np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)]])
        lo, hi = (np.percentile(both, [2, 98]) if both.size else (0.0, 1.0))
        hi = hi if hi > lo else lo + 1.0
        d = a - b
        fd = np.abs(d[np.isfinite(d)])
        m = float(np.percentile(fd, 98)) if fd.size else 1.0
        m = m or float(fd.max() if fd.size else 1.0) or 1.0
        maps = hv.Layout([
            # colour-bar titles: the units only (the layer is in the heading), so they fit the bar
            self._image(a, f"A: {self.label_a}", "viridis", (float(lo), float(hi)), unit or self.layer),
            self._image(b, f"B: {self.label_b}", "viridis", (float(lo), float(hi)), unit or self.layer),
            self._image(d, "A − B", "RdBu_r", (-m, m), f"Δ {unit or self.layer}"),
        ]).cols(2).opts(shared_axes=True)  # the three maps pan and zoom together
        s = self.stats(a, b)
        table = pd.DataFrame([(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in s.items()], columns=["", "value"])
        head = pn.pane.Markdown(f"**{self.layer}{u}{depth}: {self.label_a} − {self.label_b}** — {note}",
                                sizing_mode="stretch_width", css_classes=["compare-note"])
        return pn.Column(head, pn.FlexBox(
            pn.pane.HoloViews(maps, linked_axes=False, css_classes=["compare-maps"]),
            pn.Column(pn.pane.HoloViews(self.scatter(a, b, unit), linked_axes=False, css_classes=["compare-scatter"]),
                      pn.pane.DataFrame(table, index=False, width=260, sizing_mode="fixed")),
        ), sizing_mode="stretch_width")

    def __panel__(self):
        depth = pn.widgets.IntSlider.from_param(self.param.soc_layer, name="Soil layer", width=200,
                                                visible=self.param.layer.rx.pipe(lambda v: bool(v) and self.run.layers.has_layers(v)))
        return pn.Column(
            pn.FlexBox(pn.widgets.Select.from_param(self.param.layer, name="Layer", width=260),
                       pn.widgets.Select.from_param(self.param.against, name="Compare with (B)", width=300), depth),
            pn.panel(self.view, loading_indicator=True), sizing_mode="stretch_width")
