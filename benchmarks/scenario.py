"""Scenario, transient and present-map timings on one mapped run, all measured in the same run.

Needs a trained run (``--run``, e.g. a copy of the demo run ``synthetic-kan`` at 0.25°: 13k land
cells, 5 fold models). The run is copied to a temporary folder (the original is not written),
its present map is made there (``socmap map`` with the run's own ``map.json`` options, default
``--ensemble``), then with the same workers:

* ``present_map_s``: ``socmap map`` again into a side store (the baseline of the ratio);
* ``scenario_map_s``: the steady-state scenario (+``--warming-c`` °C), no transient;
* ``transient_s``: the same scenario with a ``--years`` annual transient (ramp ``--ramp-years``),
  which also maps the steady state; ``transient_stage_s`` is the transient part summed over tasks;
* the held-inputs steady state, for the CONUS ΔSOC figures (Pg C, 0–100 cm, fold mean ± sd).

Targets (issue 15): transient ≤ 120 s on 2 cores; scenario map ≤ 1.5 × the present map.
Wall times include the LocalCluster start-up of each command. ``load_avg_1min`` is recorded
because other jobs on a shared machine inflate every wall time.

    python benchmarks/scenario.py --run runs/synthetic-kan [--json] [--years 100] [--ramp-years 50]
"""

from __future__ import annotations

import socmap  # noqa: F401, I001 - first: its OpenMP setting must precede torch (socmap/openmp.py)

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _copy_run(src: Path, dst: Path, data_dir: Path | None) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("maps.zarr*", "map.json", "scenarios", "cache"))
    if data_dir is not None:
        rec = json.loads((dst / "run.json").read_text())
        rec["data"]["dir"] = str(data_dir.resolve())
        (dst / "run.json").write_text(json.dumps(rec, indent=1))
    return dst


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a trained run folder (not modified)")
    ap.add_argument("--data-dir", type=Path, default=None, help="override the run's data.dir (where cube.zarr is)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--years", type=int, default=100)
    ap.add_argument("--ramp-years", type=int, default=50)
    ap.add_argument("--warming-c", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)

    from socmap.mapping import map_run
    from socmap.scenario import Scenario
    from socmap.scenario_mapping import ScenarioOptions, run_scenario

    tmp = Path(tempfile.mkdtemp(prefix="socmap-bench-scenario-"))
    try:
        run = _copy_run(args.run.resolve(), tmp / args.run.name, args.data_dir)
        old = json.loads((args.run / "map.json").read_text())["arguments"] if (args.run / "map.json").exists() else {}
        ensemble = bool(old.get("ensemble", True))
        map_run(run, ensemble=ensemble, workers=args.workers, progress=False)  # the present map the scenarios need

        t = time.perf_counter()
        present = map_run(run, ensemble=ensemble, workers=args.workers, out=str(tmp / "present_again.zarr"), progress=False)
        present_s = time.perf_counter() - t
        opts = ScenarioOptions(workers=args.workers, progress=False)

        t = time.perf_counter()
        steady = run_scenario(run, Scenario(name="warm", warming_c=args.warming_c), opts)
        scenario_s = time.perf_counter() - t

        t = time.perf_counter()
        held = run_scenario(run, Scenario(name="warm-held", warming_c=args.warming_c, hold_inputs=True), opts)
        held_s = time.perf_counter() - t

        t = time.perf_counter()
        trans = run_scenario(run, Scenario(name="warm-transient", warming_c=args.warming_c, years=args.years,
                                           ramp_years=args.ramp_years), opts)
        transient_s = time.perf_counter() - t

        def delta(rec: dict) -> dict:
            c = rec["conus"]["soc_stock_0_100cm"]
            return {"present_pg": c["present_pg"]["mean"], "delta_pg_mean": c["delta_pg"]["mean"],
                    "delta_pg_std": c["delta_pg"]["std"], "delta_pg_folds": c["delta_pg"]["folds"],
                    "delta_pct_mean": c["delta_pct"]["mean"], "map_delta_pg": c["map_delta_pg"]}

        final = trans["transient"]["final_delta_pg"]["soc_stock_0_100cm"]
        out = {
            "benchmark": "scenario", "run": str(args.run), "cells": steady["cells_mapped"], "n_models": steady["n_models"],
            "workers": args.workers, "cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
            "present_map_s": round(present_s, 2), "scenario_map_s": round(scenario_s, 2),
            "scenario_over_present": round(scenario_s / present_s, 3), "held_inputs_map_s": round(held_s, 2),
            "transient_years": args.years, "ramp_years": args.ramp_years, "transient_s": round(transient_s, 2),
            "transient_stage_s": trans["timings_s"]["transient"],
            "targets": {"transient_s_max": 120.0, "scenario_over_present_max": 1.5},
            "present_map_cells_per_s": present["cells_per_s"],
            "delta_soc_0_100cm_plus_warming": delta(steady), "delta_soc_0_100cm_plus_warming_held_inputs": delta(held),
            "transient_delta_after_years_pg": {"mean": final["mean"], "std": final["std"]},
            "warming_c": args.warming_c,
        }
        if args.keep:
            out["folder"] = str(tmp)
        print(json.dumps(out, indent=1) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
        return out
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
