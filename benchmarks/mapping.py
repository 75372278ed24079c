"""End-to-end mapping throughput: covariates → forcing → encoder → solver → Zarr store.

Builds (or reuses, ``--run``) a tiny trained run — the synthetic twin at 0.5° with 300 sites and a
2-epoch, 3-fold KAN — and maps it at ``--resolution`` (default 0.05°, the synthetic landscape
regenerated at that resolution; the one-off regrid is timed separately) with ``socmap.mapping``:

* structured solver, whole grid, 2 workers (LocalCluster, one thread each) twice: ``cold`` with
  the cube's default-stock cache emptied (every cell solved twice: hybrid and CLM5 default) and
  ``warm`` reading the CLM5-default stocks that run cached (``socmap.mapping.DefaultStockCache``:
  what a second map of any run on the same cube does); then 1 worker, warm;
* dense reference solver on the first ``--dense-chunks`` land chunks only (same chunk size,
  2 workers, batches of ``--dense-batch`` cells to bound its ~157 kB/cell matrices).

Rates are land cells per second over the chunk phase (tasks submitted → last chunk written;
cluster start-up excluded, reported in ``seconds``). Ratios are within this one run.

The same run also times the structured solver alone on the same cells (``solver_fwd_sites_per_s``:
every mapped cell's prepared forcing and hybrid parameters, batches of ``--solver-batch``,
``build_operators`` + the structured forward sweeps; timed with torch on as many threads as there
are workers and on one thread, and the better of the threaded rate and workers × the one-thread
rate is taken — on a contended machine torch's threads can lose far more than the workers do) and
reports ``efficiency`` = chunk-phase cells/s (2 workers, cold) ÷ that rate. A cold map solves
each cell twice (the hybrid and the CLM5-default map), so 0.5 is the ceiling of that ratio;
``efficiency_warm`` (default stocks read from the cache) has a ceiling of 1.
``stages`` is the per-stage table of the cold 2-worker run (``stages_warm`` of the warm one) (wall/user/sys seconds summed over the
chunk tasks; ``dask_overhead`` = workers × chunk phase − the tasks' own wall time: scheduling,
worker start-up imports and idle workers at the end).

``--cpu-windows N`` adds ``cpu_us_per_cell_cold`` / ``_warm``: CPU µs per cell of the chunk task in
this process on the N largest windows (no Dask; robust to other jobs on the machine);
``--cpu-only`` gives just those.

    python benchmarks/mapping.py [--json] [--resolution 0.05] [--chunks 256] [--dense-chunks 2] [--device cpu]
    python benchmarks/mapping.py --json --cpu-only --cpu-windows 3
    python benchmarks/mapping.py --json --resolution 0.009 --dense-chunks 0 --cold-only   # CONUS at ~1 km
"""

from __future__ import annotations

import socmap  # noqa: F401, I001 - first: its OpenMP setting must precede torch (socmap/openmp.py)

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


class _Done(Exception):
    """``--cpu-only``: the figures are complete."""


def build_run(base: Path) -> Path:
    from socmap.data.synthetic import SynthConfig, write_synthetic
    from socmap.train import train
    from socmap.train_config import load_config

    data = base / "data"
    write_synthetic(data, SynthConfig(resolution_deg=0.5, n_sites=300, seed=0))
    run = base / "runs" / "bench"
    train(load_config(data_dir=str(data), epochs=2, folds=3, kan_polish_iters=5, kan_sparsify_epochs=2, kan_refit_epochs=2), run, progress=False)
    return run


def solver_rate(run: Path, resolution: float, threads: int, batch: int, device: str, max_cells: int = 400_000) -> dict:
    """Structured forward solves per second on the mapped cells (see the module docstring)."""
    import numpy as np
    import torch
    from socmap.clm5 import build_operators, prepare_forcing
    from socmap.clm5.parameters import to_physical
    from socmap.clm5.solver import solve_structured
    from socmap.data.cube import CLIMATE_VARS, cell_forcing, climate_ok
    from socmap.devices import resolve_device
    from socmap.mapping import MapOptions, _open_inputs, load_models

    dev = resolve_device(device)
    inputs = _open_inputs(run, MapOptions(resolution=resolution), {})  # the cube the map read
    models = [m.to(dev) for m in load_models(run)]
    names = inputs.covariates
    win = inputs.cube[[*names, *CLIMATE_VARS]].load()
    cov = np.stack([np.asarray(win[c].values, dtype=np.float64) for c in names], -1)
    valid = np.asarray(win["land_mask"].values, bool) & np.isfinite(cov).all(-1) & climate_ok(win)
    iy, ix = np.nonzero(valid)
    if iy.size > max_cells:  # an even sample of the mapped cells (the 1 km grid has 10 M)
        keep = np.linspace(0, iy.size - 1, max_cells).astype(np.int64)
        iy, ix = iy[keep], ix[keep]
    threads_before = torch.get_num_threads()
    seconds = {threads: 0.0, 1: 0.0}  # torch threads -> solve seconds over all cells
    n = 0

    def timed(theta, prepared, nthreads: int) -> float:
        torch.set_num_threads(nthreads)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        solve_structured(build_operators(theta, prepared))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    try:
        with torch.no_grad():
            for start in range(0, iy.size, batch):
                sl = slice(start, min(iy.size, start + batch))
                torch.set_num_threads(threads)
                prepared = prepare_forcing(cell_forcing(win, iy[sl], ix[sl], in_memory=True).to(torch.float64, dev))
                x = torch.as_tensor(cov[iy[sl], ix[sl]], dtype=torch.float32, device=dev)
                theta = to_physical(torch.stack([m(x).to(torch.float64) for m in models]).mean(0))
                if n == 0:  # first call: one-off allocations and kernel set-up
                    timed(theta, prepared, threads)
                for nthreads in seconds:
                    seconds[nthreads] += timed(theta, prepared, nthreads)
                n += sl.stop - sl.start
    finally:
        torch.set_num_threads(threads_before)
    threaded = n / seconds[threads]
    per_process = threads * n / seconds[1]
    # the better of one process on `threads` threads and `threads` one-thread processes (the mapping
    # workers' layout, assuming they scale perfectly): the conservative denominator for `efficiency`
    return {"solver_fwd_sites_per_s": round(max(threaded, per_process), 1),
            f"solver_fwd_{threads}_threads_sites_per_s": round(threaded, 1),
            "solver_fwd_1_thread_sites_per_s": round(n / seconds[1], 1),
            "solver_cells": n, "solver_batch": batch}


def cpu_per_cell(run: Path, resolution: float, chunks: int, windows: int, device: str) -> dict:
    """CPU µs per cell of the chunk task alone (``map_chunk`` in this process, one torch thread) on
    the ``windows`` largest windows, cold (every default solved) and warm (defaults from the cube's
    cache): the per-cell cost without Dask, cluster start or waiting, and so much less sensitive to
    other jobs on the machine than wall time."""
    import dataclasses
    import resource

    from socmap.devices import torch_threads
    from socmap.mapping import MapOptions, _open_inputs, _pending_jobs, map_chunk, map_run
    from socmap.windows import grid_windows

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    out = Path(tempfile.mkdtemp(prefix="socmap-bench-cpu-")) / "cpu.zarr"
    try:
        # a template to write into: one window mapped in-process (imports, model loading, regrid)
        map_run(run, scheduler="synchronous", out=str(out), max_chunks=1, resolution=resolution, chunks=chunks,
                progress=False, device=device)
        opts = MapOptions(resolution=resolution, chunks=chunks, out=str(out), device=device)
        inputs = _open_inputs(run, opts, {})
        grid = grid_windows(inputs.cube.sizes["y"], inputs.cube.sizes["x"], chunks)
        jobs = _pending_jobs(inputs, opts, grid, {"chunks_done": {}}, None, single_thread=True, device=device)[:windows]
        res = {}
        with torch_threads(1):
            for mode, js in (("cold", [dataclasses.replace(j, default_cache=None) for j in jobs]), ("warm", jobs)):
                if mode == "warm":
                    for j in jobs:  # fill the cache (not timed)
                        map_chunk(j)
                t = cpu()
                cells = sum(map_chunk(j)["cells"] for j in js)
                res[f"cpu_us_per_cell_{mode}"] = round((cpu() - t) / cells * 1e6, 2)
        res["cpu_cells"] = cells
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    return res


def stage_table(rec: dict, workers: int) -> dict:
    """Per-stage wall/user/sys seconds of one map run, with the task remainder and the Dask overhead."""
    stages = dict(rec["timings_s"]["worker_stages"])
    task_s = rec["timings_s"]["task_seconds"]
    inside = sum(r["wall_s"] for r in stages.values())
    stages["task_other"] = {"wall_s": round(task_s - inside, 3), "user_s": None, "sys_s": None}
    stages["dask_overhead"] = {"wall_s": round(workers * rec["timings_s"]["chunks"] - task_s, 3), "user_s": None, "sys_s": None}
    return stages


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--resolution", type=float, default=0.05)
    ap.add_argument("--chunks", type=int, default=256)
    ap.add_argument("--dense-chunks", type=int, default=2, help="windows mapped with the dense solver (0: skip it)")
    ap.add_argument("--dense-batch", type=int, default=4096)
    ap.add_argument("--run", type=Path, default=None, help="an existing trained run (default: build a tiny one)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--device", default="cpu", help="auto | cpu | cuda (socmap map --device); default cpu")
    ap.add_argument("--solver-batch", type=int, default=16384, help="sites per solve of the solver-alone rate")
    ap.add_argument("--solver-cells", type=int, default=400_000,
                    help="at most this many mapped cells (an even sample) for the solver-alone rate")
    ap.add_argument("--skip-1-worker", action="store_true", help="skip the 1-worker run (quicker)")
    ap.add_argument("--cold-only", action="store_true",
                    help="only the cold 2-worker map (no warm map; for the 1 km grid: --resolution 0.009)")
    ap.add_argument("--cpu-windows", type=int, default=0,
                    help="also time map_chunk in-process on the N largest windows (cpu_us_per_cell_cold/_warm)")
    ap.add_argument("--cpu-only", action="store_true", help="only the --cpu-windows figures (default 3 windows)")
    args = ap.parse_args(argv)

    from socmap.devices import DeviceError, resolve_device
    from socmap.mapping import MapOptions, _open_inputs, default_cache_dir, map_run

    try:
        resolve_device(args.device)
    except DeviceError as exc:
        ap.error(str(exc))

    tmp = Path(tempfile.mkdtemp(prefix="socmap-bench-map-"))
    try:
        t = time.perf_counter()
        run = args.run.resolve() if args.run else build_run(tmp)
        setup_s = time.perf_counter() - t
        if args.cpu_only:
            out = {"resolution_deg": args.resolution, "chunks": args.chunks,
                   **cpu_per_cell(run, args.resolution, args.chunks, args.cpu_windows or 3, args.device)}
            raise _Done
        common = dict(resolution=args.resolution, chunks=args.chunks, progress=not args.json, device=args.device)
        # warm-up: the one-off regrid into run/cache (not part of the rates)
        t = time.perf_counter()
        warm = map_run(run, scheduler="synchronous", out=str(tmp / "warm.zarr"), max_chunks=1, **common)
        regrid_s = warm["timings_s"]["regrid"]
        # cold: the cube's default-stock cache emptied (the warm-up filled one window of it); warm: the
        # same map again, reading the CLM5-default stocks instead of solving them (a second map of the cube)
        cache_dir = default_cache_dir(_open_inputs(run, MapOptions(resolution=args.resolution), {}).cube_path)
        shutil.rmtree(cache_dir, ignore_errors=True)
        results = {}
        runs = (("cold", 2),) + (() if args.cold_only else (("warm", 2),)) + (() if args.skip_1_worker or args.cold_only else (("warm", 1),))
        for name, workers in runs:
            rec = map_run(run, workers=workers, out=str(tmp / f"fast{workers}.zarr"), **common)
            results[name, workers] = rec
            if (name, workers) == ("cold", 2):
                solver = solver_rate(run, args.resolution, rec["workers_used"], args.solver_batch, args.device,
                                     args.solver_cells)
            shutil.rmtree(tmp / f"fast{workers}.zarr", ignore_errors=True)
        dense = map_run(run, workers=2, out=str(tmp / "dense.zarr"), method="dense", max_chunks=args.dense_chunks,
                        batch=args.dense_batch, **common) if args.dense_chunks > 0 else None
        fast = results["cold", 2]
        warm = results.get(("warm", 2), fast)  # --cold-only: the warm keys repeat the cold run's

        def rate(r):
            return r["cells_mapped"] / r["timings_s"]["chunks"]

        out = {
            "resolution_deg": args.resolution,
            "grid": fast["grid"],
            "cells": fast["cells_mapped"],
            "seconds": fast["seconds"],
            "seconds_cold": fast["seconds"],
            "seconds_warm": warm["seconds"],
            "chunk_phase_seconds": fast["timings_s"]["chunks"],
            "chunk_phase_seconds_warm": warm["timings_s"]["chunks"],
            "fast_cells_per_s": round(rate(fast), 1),
            "fast_cells_per_s_warm": round(rate(warm), 1),
            "dense_cells_per_s": round(rate(dense), 1) if dense else None,
            "dense_cells": dense["cells_mapped"] if dense else 0,
            "speedup": round(rate(fast) / rate(dense), 2) if dense else None,
            **solver,
            "efficiency": round(rate(fast) / solver["solver_fwd_sites_per_s"], 4),
            "efficiency_warm": round(rate(warm) / solver["solver_fwd_sites_per_s"], 4),
            "end_to_end_cells_per_s": round(fast["cells_mapped"] / fast["seconds"], 1),
            "end_to_end_cells_per_s_warm": round(warm["cells_mapped"] / warm["seconds"], 1),
            "workers_2_cells_per_s": round(rate(fast), 1),
            "output_bytes": fast["output_bytes"],
            "device": fast["device"],
            "stages": stage_table(fast, fast["workers_used"]),
            "stages_warm": stage_table(warm, warm["workers_used"]),
            "timings_s": {k: v for k, v in fast["timings_s"].items() if k not in ("worker_stages",)},
            "regrid_seconds": round(regrid_s, 2),
            "setup_seconds": round(setup_s, 1),
            "chunks": args.chunks,
        }
        if ("warm", 1) in results:  # both warm: the workers' scaling, not the cache
            one = results["warm", 1]
            out["workers_1_cells_per_s_warm"] = round(rate(one), 1)
            out["workers_2_over_1_warm"] = round(rate(warm) / rate(one), 2)
            out["workers_1_seconds_warm"] = one["seconds"]
        if args.cpu_windows:
            out.update(cpu_per_cell(run, args.resolution, args.chunks, args.cpu_windows, args.device))
        full_conus_1km = fast["cells_mapped"] * (0.05 / 0.009) ** 2 if args.resolution == 0.05 else None
        if full_conus_1km:
            out["extrapolated_1km_cells"] = int(full_conus_1km)
            out["extrapolated_1km_seconds_2_workers"] = round(full_conus_1km / rate(fast), 0)
            out["extrapolated_1km_seconds_2_workers_warm"] = round(full_conus_1km / rate(warm), 0)
    except _Done:
        pass
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            if k not in ("stages", "stages_warm"):
                print(f"{k:32s} {v}")
        print(f"\n{'stage (2 workers, summed over tasks)':40s} {'wall s':>8} {'user s':>8} {'sys s':>8}")
        for name, row in out.get("stages", {}).items():  # the cold run's
            print(f"{name:40s} " + " ".join(f"{row[f]:>8.2f}" if row[f] is not None else f"{'':>8}" for f in ("wall_s", "user_s", "sys_s")))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
