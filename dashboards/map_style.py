"""The look of a dashboard map image, in one place: the Map tab (``views.MapExplorer``: a plain
Bokeh figure, ``dashboards.map_figure``, or for big grids a rasterized HoloViews map) and the
Scenarios tab (``scenarios.ScenarioView``) draw their layers with these sizes, labels, options,
marker and colour-bar hook, so the maps look and behave alike (size, axes, tools, transparent NaN,
tap mark).
"""

from __future__ import annotations

from collections.abc import Callable

import holoviews as hv

def use_bokeh_canvas() -> None:
    """Load HoloViews' Bokeh backend, drawing on a 2-D canvas instead of WebGL (HoloViews' default).

    A browser without a GPU (a headless or virtual machine) emulates WebGL on its CPU: each page
    then spent ~0.25 s more CPU on the same maps (measured with ``benchmarks/dashboard.py
    --concurrent``), and the dashboard's grids are small enough for a canvas."""
    hv.extension("bokeh", logo=False)
    hv.renderer("bokeh").webgl = False


MAP_W, MAP_H = 560, 290  # frame size of a map image in px (fits 1366 px beside the location panel)
MAP_BACKGROUND = "#eef1f4"  # behind transparent (NaN: water, outside CONUS) cells
XLABEL, YLABEL = "longitude (°E)", "latitude (°N)"


def colorbar_title_hook(title: Callable[[], str]) -> Callable:
    """A HoloViews plot hook keeping the colour bar's title at ``title()`` (HoloViews keeps the
    first title it drew when a DynamicMap switches layer)."""

    def hook(plot, element) -> None:
        cb = plot.handles.get("colorbar")
        if cb is not None:
            cb.title = title()

    return hook


def map_image_opts(bounds: tuple[float, float, float, float], colorbar_title: Callable[[], str]) -> dict:
    """Options of a map image (``hv.Image`` / its DynamicMap): ``bounds`` (left, bottom, right,
    top) in degrees set the initial view; ``colorbar_title()`` gives the colour bar's current title.
    Colour map, limits and whether a colour bar is drawn stay with the caller (they follow the layer)."""
    left, bottom, right, top = bounds
    return dict(
        hooks=[colorbar_title_hook(colorbar_title)], tools=["hover", "tap"], frame_width=MAP_W,
        frame_height=MAP_H, xlim=(left, right), ylim=(bottom, top), xlabel=XLABEL, ylabel=YLABEL,
        active_tools=["wheel_zoom"], colorbar_position="right", toolbar="above", clipping_colors={"NaN": (0, 0, 0, 0)},
        bgcolor=MAP_BACKGROUND,
    )


def tap_marker(x: float | None, y: float | None) -> hv.Points:
    """The black cross at a clicked location (empty before the first click)."""
    if x is None or y is None:
        return hv.Points([], kdims=["x", "y"])
    return hv.Points([(x, y)], kdims=["x", "y"]).opts(marker="x", size=14, color="black", line_width=3)
