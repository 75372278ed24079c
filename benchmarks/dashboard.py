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
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a mapped hybrid run folder (not modified)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--recompute", action="store_true", help="compute the curves from the fold models (the map-time cost)")
    ap.add_argument("--repeat", type=int, default=3, help="passes over the parameters (the first may include imports)")
    args = ap.parse_args(argv)

    from bokeh.document import Document

    from dashboards.run import RunData
    from dashboards.views import KanInspector, MapExplorer
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
