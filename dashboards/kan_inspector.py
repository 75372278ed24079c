"""The KAN inspector: what the encoder learned for one parameter, read from the run's stored
curves (:mod:`socmap.kan_curves` via :class:`dashboards.curves.CurveAnalysis`).

A parameter switch slices stored arrays and puts them into the figures already on the page
(Bokeh data sources and titles replaced in place; no plot is rebuilt): no fold model is
evaluated and no symbolic form fitted (both happen once, at map time). The curves a soil scientist can
discuss: the active edges (fold mean and fold band, optionally every fold's curve), the pruned
ones drawn distinctly on request or listed in one line, the parsimonious symbolic form of each
edge and how stable it is across the folds.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, FactorRange, Legend, LegendItem, Span
from bokeh.plotting import figure

from dashboards import kan_figure
from dashboards.run import RunData
from socmap import interpret
from socmap.clm5.parameters import INDEX, NAMES, PARAMETERS

if TYPE_CHECKING:
    from dashboards.views import MapExplorer

CURVE_W, CURVE_H = 440, 280  # readable at 1366 px with 2 per row
NEGLIGIBLE = 0.01  # a curve varying by < 1 % of the strongest one is listed, not drawn
LEARNED, PRUNED_COLOUR, TRUE_COLOUR, HIST_COLOUR = "#1f77b4", "#9a9a9a", "#d62728", "#c8c8c8"


class KanInspector(pn.viewable.Viewer):
    """Edge curves (KAN) or partial dependence (MLP) of one parameter: the active edges as a grid
    of readable plots (most important first), the inactive ones in one line (or, with
    ``show_pruned``, the pruned ones drawn in grey), the symbolic forms with their fold
    stability, downloads."""

    parameter = param.Selector(doc="Parameter")
    max_curves = param.Integer(default=8, bounds=(1, 30), doc="Curves shown (most important first)")
    ncols = param.Integer(default=2, bounds=(1, 4), doc="Curves per row")
    show_truth = param.Boolean(default=True, doc="Overlay the true curves (synthetic runs)")
    show_pruned = param.Boolean(default=False, doc="Draw the edges pruned in every fold (grey, flat at 0)")
    show_folds = param.Boolean(default=False, doc="Draw every fold's curve (thin lines) over the band")
    download_curve = param.Selector(doc="Curve to download")

    def __init__(self, run: RunData, map_view: MapExplorer | None = None, **params):
        self.run = run
        self.map_view = map_view
        pred = run.parameters or list(NAMES)
        self.param.parameter.objects = pred
        params.setdefault("parameter", pred[0])
        names = list(run.analysis.covariate_names)
        self.param.download_curve.objects = names or [None]
        params.setdefault("download_curve", names[0] if names else None)
        super().__init__(**params)
        self._page = None  # made by page() on first display

    @property
    def analysis(self):
        return self.run.analysis

    def location_values(self) -> dict[str, float] | None:
        mv = self.map_view
        if mv is None or mv.tap_x is None:
            return None
        cell = self.run.layers.cell(mv.tap_x, mv.tap_y)
        if cell is None:
            return None
        iy, ix = cell
        return {c: self.run.layers.value(c, iy, ix) for c in self.analysis.covariate_names if c in self.run.layers}

    def units(self) -> dict[str, str]:
        return {c: self.run.layers.units(c) if c in self.run.layers else "" for c in self.analysis.covariate_names}

    def classify(self) -> tuple[list[str], list[str], list[str]]:
        """(active, pruned, negligible) covariates of the parameter, each in importance order.

        Pruned: the edge is masked in every fold's model (KAN). Negligible: the fold-mean curve
        varies by less than :data:`NEGLIGIBLE` of the strongest curve's range (or < 1e-6 p).
        An edge pruned in some folds only is active (its band reaches 0; the title says how many).
        """
        cv = self.analysis.curves(self.parameter)
        amp = {c: float(np.ptp(cv.mean[c])) for c in cv.covariates}
        top = max(amp.values(), default=0.0)
        active, pruned, negligible = [], [], []
        for c in cv.covariates:
            if self.analysis.is_kan and cv.pruned[c] == cv.n_folds:
                pruned.append(c)
            elif amp[c] < max(NEGLIGIBLE * top, 1e-6):
                negligible.append(c)
            else:
                active.append(c)
        return active, pruned, negligible

    def inactive_line(self) -> str:
        """One line: the edges not drawn (pruned in every fold, or negligible)."""
        _, pruned, negligible = self.classify()
        parts = []
        if pruned:
            parts.append(f"pruned in every fold: {', '.join(pruned)}" + (" (drawn in grey below)" if self.show_pruned else ""))
        if negligible:
            parts.append(f"negligible (< {NEGLIGIBLE:.0%} of the strongest curve): {', '.join(negligible)}")
        return (f"**{self.parameter}, not drawn** — " + "; ".join(parts) + ".") if parts else f"**{self.parameter}**: every covariate has a visible effect (none pruned or negligible)."

    def _title(self, cv, c: str) -> str:
        imp = float(cv.importance[cv.covariates.index(c)])
        k = cv.pruned[c]
        if self.analysis.is_kan and k == cv.n_folds:
            return f"{c} · imp {imp:.2f} · pruned in every fold"
        fit = cv.symbolic.get(c)
        sym = f"{fit.kind} R²={fit.r2:.2f}" if fit is not None else "flat"
        return f"{c} · imp {imp:.2f} · {sym}" + (f" · pruned in {k}/{cv.n_folds} folds" if k else "")

    def curve_panels(self, values: dict[str, float] | None = None) -> list[CurvePanel]:
        """What each drawn curve shows (learned curve, fold band, folds, truth, distribution,
        location): the active covariates (up to ``max_curves``), then, with ``show_pruned``, the
        pruned ones. Pure data sliced from the stored curves; :class:`CurveFigures` draws it."""
        if not self.analysis.available:
            return []
        cv = self.analysis.curves(self.parameter)
        active, pruned, _ = self.classify()
        out = []
        for c in active[: self.max_curves] + (pruned if self.show_pruned else []):
            cunit = self.run.layers.units(c) if c in self.run.layers else ""
            truth = cv.truth.get(c) if self.show_truth else None
            lo, hi, m = cv.lo[c], cv.hi[c], cv.mean[c]
            span = float(max(np.ptp(np.concatenate([lo, hi] + ([truth] if truth is not None else []))), 1e-6))
            base = float(min(lo.min(), truth.min() if truth is not None else m.min())) - 0.05 * span
            counts, edges = cv.hist[c]  # the covariate at the training sites, scaled into the bottom 25 %
            value = (values or {}).get(c)
            out.append(CurvePanel(
                covariate=c, title=self._title(cv, c), xlabel=f"{c} ({cunit})" if cunit and cunit != "1" else c,
                ylabel=f"Δp {self.parameter}", x=cv.xs[c], mean=m, lo=lo, hi=hi,
                folds=cv.folds[c] if self.show_folds and c not in pruned else None, truth=truth,
                hist_edges=edges, hist_bottom=base, hist_top=base + counts / max(counts.max(), 1) * 0.25 * span,
                location=float(value) if value is not None and np.isfinite(value) else None, pruned=c in pruned))
        return out

    def contribution_table(self, values: dict[str, float]) -> pd.DataFrame:
        """Each covariate's contribution at the clicked location, largest magnitude first."""
        contrib = self.analysis.contributions(self.parameter, values)
        order = sorted(contrib, key=lambda k: -abs(contrib[k]))
        return pd.DataFrame({"covariate": order, "contribution": [contrib[k] for k in order]})

    def symbolic_table(self) -> pd.DataFrame:
        """Active edges: importance, the parsimonious symbolic form in physical units, its R², and
        its stability across folds: folds whose own curve has the same form, folds that pruned the
        edge, and the fold band's mean width as a share of the curve's range."""
        cv = self.analysis.curves(self.parameter)
        active, _, _ = self.classify()
        units = self.units()
        K = cv.n_folds
        rows = []
        for c in active:
            fit = cv.symbolic.get(c)
            amp = float(np.ptp(cv.mean[c]))
            rows.append({"covariate": c, "unit": units.get(c, "") or "—", "importance": f"{cv.importance[cv.covariates.index(c)]:.3f}",
                         f"Δp {self.parameter} ≈ (x in its unit)": fit.formula_physical(c) if fit else "—",
                         "form": fit.kind if fit else "—", "R²": f"{fit.r2:.3f}" if fit else "—",
                         "same form in folds": f"{sum(k == fit.kind for k in cv.fold_forms[c])}/{K}" if fit else "—",
                         "pruned in folds": f"{cv.pruned[c]}/{K}" if self.analysis.is_kan else "—",
                         "fold band / range": f"{np.mean(cv.hi[c] - cv.lo[c]) / amp:.0%}" if amp > 0 else "—"})
        return pd.DataFrame(rows)

    # ---------------------------------------------------------- downloads
    def png_grid(self) -> io.BytesIO:
        active, _, _ = self.classify()
        cv = self.analysis.curves(self.parameter)
        return io.BytesIO(kan_figure.curves_png(cv, active[: self.max_curves], self.units(), self.location_values()))

    def png_curve(self) -> io.BytesIO:
        cv = self.analysis.curves(self.parameter)
        return io.BytesIO(kan_figure.curves_png(cv, [self.download_curve], self.units(), self.location_values(), ncols=1))

    def csv_grid(self) -> io.BytesIO:
        cv = self.analysis.curves(self.parameter)
        return io.BytesIO(kan_figure.curves_csv(cv, list(cv.covariates), self.units()))

    def csv_curve(self) -> io.BytesIO:
        cv = self.analysis.curves(self.parameter)
        return io.BytesIO(kan_figure.curves_csv(cv, [self.download_curve], self.units()))

    def downloads(self) -> pn.Column:
        def fn(kind: str, ext: str) -> str:
            what = self.download_curve if kind == "curve" else "curves"
            return f"{self.run.name}_{self.parameter}_{what}.{ext}"

        buttons = []
        for label, cb, kind, ext in [("⤓ PNG, all curves", self.png_grid, "grid", "png"), ("⤓ CSV, all curves", self.csv_grid, "grid", "csv"),
                                     ("⤓ PNG, this curve", self.png_curve, "curve", "png"), ("⤓ CSV, this curve", self.csv_curve, "curve", "csv")]:
            b = pn.widgets.FileDownload(callback=cb, filename=fn(kind, ext), label=label, width=170,
                                        css_classes=[f"kan-download-{kind}-{ext}"])
            self.param.watch(lambda e, b=b, kind=kind, ext=ext: setattr(b, "filename", fn(kind, ext)), ["parameter", "download_curve"])
            buttons.append(b)
        return pn.Column(pn.pane.Markdown("**Download** (PNG rendered on the server; CSV: x in physical units, p fold mean/min/max, "
                                          "every fold's curve, truth, importance, symbolic form)", sizing_mode="stretch_width"),
                         pn.FlexBox(*buttons[:2], pn.widgets.Select.from_param(self.param.download_curve, name="", width=170), *buttons[2:]),
                         sizing_mode="stretch_width")

    def heading(self) -> str:
        cv = self.analysis.curves(self.parameter)
        prm = PARAMETERS[INDEX[self.parameter]]
        return (f"### {self.parameter} — {prm.description} ({prm.unit}; bounds {prm.lower:g}–{prm.upper:g})\n"
                + (f"{cv.method} curves of the active edges of the {cv.n_folds} fold models, fold mean (line) and range (band), "
                   "most important first; x in physical units, y = the edge's contribution to the normalised parameter p."
                   if self.analysis.is_kan else
                   f"{cv.method} of p on each covariate (the {self.run.encoder} has no edges), fold mean (line) and range (band) "
                   f"of the {cv.n_folds} fold models, most important first; x in physical units, y = the normalised parameter p "
                   "averaged over the sites.")
                + (f" Grey: distribution at the {cv.histogram_of}." if cv.histogram_of not in ("", "none") else "")
                + (" Red dashed: true curve (synthetic twin, shifted to the learned mean)." if self.run.truth else "")
                + f" Titles: the simplest symbolic form within R² {interpret.PARSIMONY_R2_TOLERANCE:g} of the best; "
                "the table: how many folds' own curves take the same form.")

    def location_line(self, values: dict[str, float] | None) -> str:
        if values is not None:
            return (f"**Location** {self.map_view.tap_y:.2f}°N, {self.map_view.tap_x:.2f}°E: dotted lines on every curve; "
                    "its contributions are beside the table.")
        return "*Click a location on the Map tab to mark its covariate values on every curve and see its contributions.*"

    # ---------------------------------------------------------- the page (built once, updated in place)
    def _curve_width(self) -> int:
        return CURVE_W if self.ncols <= 2 else int(CURVE_W * 2 / self.ncols) + 40

    def refresh(self, *_events) -> None:
        """Bring the page to the current parameter, options and location: new data into the
        existing figures and panes (a switch rebuilds no plot)."""
        if self._page is None:
            return
        values = self.location_values()
        w = self._curve_width()
        self._figures.show(self.curve_panels(values), w)
        self._grid.param.update(ncols=self.ncols, width=self.ncols * (w + 12))
        self._heading.object = self.heading()
        self._where.object = self.location_line(values)
        self._inactive.object = self.inactive_line()
        self._table.object = self.symbolic_table()
        self._bars.show(self.contribution_table(values) if values is not None else None, self.parameter)
        below = [self._table, self._bars.pane] if self._bars.pane.visible else [self._table]
        if len(self._below.objects) != len(below):  # a hidden figure would still hold its place in the row
            self._below.objects = below

    def page(self) -> pn.Column:
        """The inspector's page, made once per session (:meth:`refresh` fills it on every change)."""
        if self._page is None:
            self._figures = CurveFigures(CURVE_H)
            self._bars = ContributionBars()
            self._grid = pn.GridBox(ncols=self.ncols, css_classes=["kan-curves"], sizing_mode="fixed")
            self._figures.on_grow = lambda panes: setattr(self._grid, "objects", list(panes))
            self._heading = pn.pane.Markdown("", sizing_mode="stretch_width")
            self._where = pn.pane.Markdown("", sizing_mode="stretch_width", css_classes=["kan-hint"])
            self._inactive = pn.pane.Markdown("", sizing_mode="stretch_width", css_classes=["kan-inactive"])
            self._table = pn.pane.DataFrame(pd.DataFrame(), index=False, sizing_mode="stretch_width", css_classes=["kan-symbolic"])
            self._below = pn.FlexBox(self._table)
            self._page = pn.Column(self._heading, self._where, self._inactive, self._grid, self._below, self.downloads(),
                                   sizing_mode="stretch_width")
            self.param.watch(self.refresh, ["parameter", "max_curves", "ncols", "show_truth", "show_pruned", "show_folds"])
            if self.map_view is not None:
                self.map_view.param.watch(self.refresh, ["tap_x", "tap_y"])
            self.refresh()
        return self._page

    def __panel__(self):
        if not self.analysis.available:
            if self.analysis.error:
                return pn.pane.Alert(f"The curves of run {self.run.name} cannot be computed: {self.analysis.error}",
                                     alert_type="danger", sizing_mode="stretch_width")
            return pn.pane.Alert(f"Run {self.run.name} has no fold models (encoder {self.run.encoder}): no curves to show.",
                                 alert_type="info", sizing_mode="stretch_width")
        kan = self.analysis.is_kan
        return pn.Column(
            pn.FlexBox(pn.widgets.Select.from_param(self.param.parameter, name="Parameter", width=200),
                       pn.widgets.IntSlider.from_param(self.param.max_curves, name="curves", width=180),
                       pn.widgets.IntSlider.from_param(self.param.ncols, name="per row", width=140),
                       pn.widgets.Checkbox.from_param(self.param.show_truth, name="true curves", disabled=self.run.truth is None),
                       pn.widgets.Checkbox.from_param(self.param.show_pruned, name="pruned edges", disabled=not kan),
                       pn.widgets.Checkbox.from_param(self.param.show_folds, name="each fold")),
            self.page(), sizing_mode="stretch_width",
        )


@dataclass
class CurvePanel:
    """One drawn curve: x [G] in physical units; mean/lo/hi [G] (fold mean and range), folds
    [K, G] or None, truth [G] or None, in p units; the distribution as bars over ``hist_edges``
    [B + 1] from ``hist_bottom`` up to ``hist_top`` [B] (y units); the location's x or None."""

    covariate: str
    title: str
    xlabel: str
    ylabel: str
    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    folds: np.ndarray | None
    truth: np.ndarray | None
    hist_edges: np.ndarray
    hist_bottom: float
    hist_top: np.ndarray
    location: float | None
    pruned: bool


class _CurveFigure:
    """One Bokeh figure with a fixed set of glyphs whose data and styles :meth:`show` replaces."""

    def __init__(self, width: int, height: int) -> None:
        f = figure(width=width, height=height, tools="", toolbar_location=None, title="")
        f.title.text_font_size = "11pt"
        f.xaxis.axis_label_text_font_size = f.yaxis.axis_label_text_font_size = "10pt"
        f.xaxis.major_label_text_font_size = f.yaxis.major_label_text_font_size = "9pt"
        self.hist = ColumnDataSource({"left": [], "right": [], "bottom": [], "top": []})
        self.band = ColumnDataSource({"x": [], "lo": [], "hi": []})
        self.folds = ColumnDataSource({"xs": [], "ys": []})
        self.mean = ColumnDataSource({"x": [], "y": []})
        self.truth = ColumnDataSource({"x": [], "y": []})
        f.quad(left="left", right="right", bottom="bottom", top="top", source=self.hist, color=HIST_COLOUR, alpha=0.7, line_alpha=0)
        self.band_r = f.varea(x="x", y1="lo", y2="hi", source=self.band, fill_color=LEARNED, fill_alpha=0.2)
        self.folds_r = f.multi_line(xs="xs", ys="ys", source=self.folds, line_color=LEARNED, line_width=0.8, line_alpha=0.6)
        self.mean_r = f.line(x="x", y="y", source=self.mean, line_color=LEARNED, line_width=2.5)
        self.truth_r = f.line(x="x", y="y", source=self.truth, line_color=TRUE_COLOUR, line_dash="dashed", line_width=2)
        self.span = Span(location=0.0, dimension="height", line_color="black", line_width=1.5, line_dash="dotted", visible=False)
        f.add_layout(self.span)
        self.legend = Legend(location="top_left", label_text_font_size="9pt", padding=2, spacing=0, background_fill_alpha=0.6,
                             visible=False)
        f.add_layout(self.legend)
        self.figure = f

    def show(self, p: CurvePanel, width: int, legend: bool) -> None:
        f = self.figure
        colour = PRUNED_COLOUR if p.pruned else LEARNED
        e = p.hist_edges
        self.hist.data = {"left": e[:-1], "right": e[1:], "bottom": np.full(len(p.hist_top), p.hist_bottom), "top": p.hist_top}
        self.band.data = {"x": p.x, "lo": p.lo, "hi": p.hi}
        self.folds.data = {"xs": [p.x] * len(p.folds), "ys": list(p.folds)} if p.folds is not None else {"xs": [], "ys": []}
        self.mean.data = {"x": p.x, "y": p.mean}
        self.truth.data = {"x": p.x, "y": p.truth} if p.truth is not None else {"x": [], "y": []}
        self.band_r.glyph.fill_color = colour
        self.mean_r.glyph.line_color = self.folds_r.glyph.line_color = colour
        self.mean_r.glyph.line_dash = "dashed" if p.pruned else "solid"
        self.span.visible = p.location is not None
        if p.location is not None:
            self.span.location = p.location
        f.title.text, f.xaxis.axis_label, f.yaxis.axis_label = p.title, p.xlabel, p.ylabel
        f.width = width
        if legend:
            items = [("fold range", self.band_r), ("pruned (0)" if p.pruned else "learned", self.mean_r)]
            items += [("each fold", self.folds_r)] if p.folds is not None else []
            items += [("true", self.truth_r)] if p.truth is not None else []
            self.legend.items = [LegendItem(label=label, renderers=[r]) for label, r in items]
        self.legend.visible = legend


class CurveFigures:
    """A pool of curve figures, one per drawn curve, made on first need and reused: showing
    another parameter replaces their data (no figure is rebuilt); unused ones are hidden."""

    def __init__(self, height: int) -> None:
        self.height = height
        self.slots: list[_CurveFigure] = []
        self.panes: list[pn.pane.Bokeh] = []
        self.on_grow = None  # called with the panes when the pool grows

    def show(self, panels: list[CurvePanel], width: int) -> None:
        grew = len(self.slots) < len(panels)
        while len(self.slots) < len(panels):
            slot = _CurveFigure(width, self.height)
            self.slots.append(slot)
            self.panes.append(pn.pane.Bokeh(slot.figure, sizing_mode="fixed"))
        for i, (slot, pane) in enumerate(zip(self.slots, self.panes)):
            if i < len(panels):
                slot.show(panels[i], width, legend=i == 0)
            pane.visible = i < len(panels)
        if grew and self.on_grow is not None:
            self.on_grow(self.panes)

    def shown(self) -> list[_CurveFigure]:
        """The figures on the page, in order."""
        return [s for s, p in zip(self.slots, self.panes) if p.visible]


class ContributionBars:
    """The clicked location's contributions as horizontal bars (one figure, data replaced)."""

    def __init__(self) -> None:
        self.source = ColumnDataSource({"covariate": [], "contribution": [], "colour": []})
        f = figure(y_range=FactorRange(), width=380, height=300, tools="hover", toolbar_location=None,
                   title="contributions at the clicked location", tooltips=[("", "@covariate: @contribution{0.0000}")])
        f.hbar(y="covariate", right="contribution", height=0.8, color="colour", source=self.source)
        f.title.text_font_size = "10pt"
        self.figure = f
        self.pane = pn.pane.Bokeh(f, sizing_mode="fixed", visible=False)

    def show(self, table: pd.DataFrame | None, param_name: str) -> None:
        if table is None or table.empty:
            self.pane.visible = False
            return
        rows = table.iloc[::-1]  # the largest at the top
        self.figure.y_range.factors = list(rows["covariate"])
        self.source.data = {"covariate": list(rows["covariate"]), "contribution": rows["contribution"].to_numpy(),
                            "colour": list(np.where(rows["contribution"].to_numpy() >= 0, "#d6604d", "#4393c3"))}
        self.figure.xaxis.axis_label = f"contribution to p {param_name}"
        self.pane.visible = True
