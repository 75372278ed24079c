"""The Map tab's map as one plain Bokeh figure: the layer as an image glyph with its colour bar,
the state outlines, the observation sites and the clicked location, each a glyph whose data and
colour mapping are replaced in place when the view's parameters change.

Built once per session from the run's cached arrays (``dashboards.layers``). A HoloViews overlay
of the same map cost the single-threaded server about 0.12 s per session (a plot per element and
stream) and the page more Bokeh models; the look (size, axes, background, transparent NaN) is that
of ``dashboards.map_style``, shared with the Scenarios tab's HoloViews map.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import pandas as pd
from bokeh import events
from bokeh.models import ColorBar, ColumnDataSource, HoverTool, LinearColorMapper, LogColorMapper, Range1d
from bokeh.plotting import figure
from holoviews.plotting.util import process_cmap

from dashboards.map_style import MAP_BACKGROUND, MAP_H, MAP_W, XLABEL, YLABEL
from dashboards.outlines import state_outlines

TRANSPARENT = "rgba(0, 0, 0, 0)"  # NaN cells (water, outside CONUS) show the background


@lru_cache(maxsize=32)
def palette(name: str, n: int = 256) -> tuple[str, ...]:
    """``n`` hex colours of a colour map named as HoloViews names them (``viridis``, ``RdBu_r``, …)."""
    return tuple(process_cmap(name, ncolors=n))


def image_placement(x: np.ndarray, y: np.ndarray, resolution: float) -> dict[str, float]:
    """Where a grid's image goes: its lower-left outer corner ``x``, ``y`` and its extent ``dw``,
    ``dh`` in degrees, for cell centres ``x`` [nx] and ``y`` [ny] spaced ``resolution`` degrees."""
    half = resolution / 2
    return {"x": float(x.min() - half), "y": float(y.min() - half),
            "dw": float(x.max() - x.min() + resolution), "dh": float(y.max() - y.min() + resolution)}


class MapFigure:
    """One map figure; :meth:`show_image`, :meth:`show_sites` and :meth:`show_marker` replace what it shows.

    Parameters
    ----------
    bounds
        (left, bottom, right, top) of the grid in degrees: the initial view.
    on_tap
        Called with (lon, lat) in degrees for a click on the map.
    on_range
        Called with (x0, x1, y0, y1) in degrees after each pan or zoom.
    """

    def __init__(self, bounds: tuple[float, float, float, float], on_tap: Callable[[float, float], None],
                 on_range: Callable[[float, float, float, float], None]) -> None:
        left, bottom, right, top = bounds
        f = figure(frame_width=MAP_W, frame_height=MAP_H, x_range=Range1d(left, right), y_range=Range1d(bottom, top),
                   tools="pan,wheel_zoom,box_zoom,reset,save", active_scroll="wheel_zoom", toolbar_location="above",
                   background_fill_color=MAP_BACKGROUND, x_axis_label=XLABEL, y_axis_label=YLABEL, title="")
        f.grid.visible = False
        f.title.text_font_size = "12pt"  # as the HoloViews maps of the other tabs
        self.linear = LinearColorMapper(palette=palette("viridis"), low=0.0, high=1.0, nan_color=TRANSPARENT)
        self.log = LogColorMapper(palette=palette("viridis"), low=1.0, high=10.0, nan_color=TRANSPARENT)
        self.image = ColumnDataSource({"image": [np.full((1, 1), np.nan, np.float32)], "x": [left], "y": [bottom],
                                       "dw": [right - left], "dh": [top - bottom]})
        self.image_renderer = f.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.image,
                                      color_mapper=self.linear)
        self.colorbar = ColorBar(color_mapper=self.linear, title="", width=18)
        f.add_layout(self.colorbar, "right")
        ox, oy = state_outlines()
        f.line(ox, oy, color="#333333", line_width=0.7, alpha=0.8)
        self.site_mapper = LinearColorMapper(palette=palette("viridis"), low=0.0, high=1.0)
        self.sites = ColumnDataSource({"lon": [], "lat": [], "site_id": [], "value": [], "fold": []})
        self.sites_renderer = f.scatter("lon", "lat", source=self.sites, size=6, line_color="white", line_width=0.6,
                                        fill_color={"field": "value", "transform": self.site_mapper})
        self.marker = ColumnDataSource({"x": [], "y": []})
        f.scatter("x", "y", source=self.marker, marker="x", size=14, line_color="black", line_width=3)
        self.image_hover = HoverTool(renderers=[self.image_renderer], tooltips=[("x", "$x{0.00}"), ("y", "$y{0.00}")])
        self.site_hover = HoverTool(renderers=[self.sites_renderer], tooltips=[("site", "@site_id"), ("value", "@value{0.000}"), ("fold", "@fold")])
        f.add_tools(self.image_hover, self.site_hover)
        f.on_event(events.Tap, lambda e: on_tap(e.x, e.y))
        f.on_event(events.RangesUpdate, lambda e: on_range(e.x0, e.x1, e.y0, e.y1))
        self.figure = f

    def show_image(self, values: np.ndarray, x: np.ndarray, y: np.ndarray, resolution: float, *, cmap: str,
                   clim: tuple[float, float], logz: bool, title: str, colorbar_title: str, value_name: str) -> None:
        """Show ``values`` [y, x] (cell centres ``x``, ``y`` in degrees, either order) in ``cmap``
        between ``clim`` (a log scale with ``logz``; NaN transparent)."""
        arr = np.asarray(values, dtype=np.float32)
        if y[0] > y[-1]:  # the image glyph's first row is the southernmost
            arr = arr[::-1]
        if x[0] > x[-1]:
            arr = arr[:, ::-1]
        self.image.data = {"image": [np.ascontiguousarray(arr)], **{k: [v] for k, v in image_placement(x, y, resolution).items()}}
        mapper = self.log if logz else self.linear
        mapper.update(palette=palette(cmap), low=float(clim[0]), high=float(clim[1]))
        self.image_renderer.glyph.color_mapper = mapper
        self.colorbar.update(color_mapper=mapper, title=colorbar_title)
        self.figure.title.text = title
        self.image_hover.tooltips = [("x", "$x{0.00}"), ("y", "$y{0.00}"), (value_name, "@image")]

    def show_sites(self, sites: pd.DataFrame | None, *, cmap: str = "viridis", clim: tuple[float, float] = (0.0, 1.0),
                   label: str = "value") -> None:
        """Show the sites (columns lon, lat, site_id, value, fold) coloured by ``value``; None hides them."""
        if sites is None or sites.empty:
            self.sites.data = {"lon": [], "lat": [], "site_id": [], "value": [], "fold": []}
            return
        self.site_mapper.update(palette=palette(cmap), low=float(clim[0]), high=float(clim[1]))
        self.sites.data = {c: sites[c].to_numpy() for c in ("lon", "lat", "site_id", "value", "fold")}
        self.site_hover.tooltips = [("site", "@site_id"), (label, "@value{0.000}"), ("fold", "@fold")]

    def show_marker(self, x: float | None, y: float | None) -> None:
        """The black cross at a clicked location (none with ``x`` None)."""
        self.marker.data = {"x": [] if x is None or y is None else [x], "y": [] if x is None or y is None else [y]}
