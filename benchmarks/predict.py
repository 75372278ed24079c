"""``socmap predict`` throughput and memory: random CONUS land points → SOC, stocks, parameters CSV.

Builds (or reuses, ``--run``) the tiny trained run of ``benchmarks/mapping.py`` (the synthetic twin
at 0.5°, 300 sites, a 2-epoch 3-fold KAN), writes ``--points`` random points on the land cells of
its cube (uniform within each cell, so no two share a latitude; depths uniform 0–2 m; with
``--depths-per-site K`` the points are N/K locations with K depths each, as profiles are), and runs
:func:`socmap.predict.predict_file` on them in a child process, one per size and ``--workers``
count (default 1 and 2 worker processes, the ratio measured in the same run), so that each peak
RSS is that command's alone.

Reported per size: ``points_per_s`` (wall, the command's own record), ``cpu_s`` and
``points_per_cpu_s`` (user + system seconds of ``predict_file`` and its worker processes, imports
excluded: robust to other jobs on the machine), ``peak_rss_mb`` (the child's ``VmHWM``, imports included),
``rss_before_mb`` (after the imports, before ``predict_file``), ``worker_peak_rss_mb`` (the largest
worker process's ``ru_maxrss``, pages shared with the parent counted again), the
output size and the stage table (wall/user/sys seconds of read, covariates, forcing, prepare,
encoder, solve, stocks, depths, write, summed over the workers). ``load_avg`` is the machine's 1-minute load when the size started: above the core count the
figures are contended.

    python benchmarks/predict.py [--json] [--points 100000,1000000] [--workers 1,2] [--run RUN] [--batch 8192]
"""

from __future__ import annotations

import socmap  # noqa: F401, I001 - first: its OpenMP setting must precede torch (socmap/openmp.py)

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_points(run: Path, path: Path, n: int, depths_per_site: int = 1, seed: int = 0) -> Path:
    """``n`` random points on the land cells of ``run``'s cube (columns id, lon, lat, depth_m)."""
    import numpy as np
    import pandas as pd

    from socmap.data.cube import open_cube
    from socmap.runs import open_run

    cube = open_cube(open_run(run).data_dir / "cube.zarr")
    iy, ix = np.nonzero(np.asarray(cube["land_mask"].values, bool))
    x, y = np.asarray(cube["x"].values, float), np.asarray(cube["y"].values, float)
    dx, dy = abs(x[1] - x[0]), abs(y[1] - y[0])
    rng = np.random.default_rng(seed)
    sites = -(-n // depths_per_site)
    cell = rng.integers(0, iy.size, sites)
    lon = x[ix[cell]] + rng.uniform(-0.499, 0.499, sites) * dx
    lat = y[iy[cell]] + rng.uniform(-0.499, 0.499, sites) * dy
    frame = pd.DataFrame({"id": np.arange(n), "lon": np.repeat(lon, depths_per_site)[:n],
                          "lat": np.repeat(lat, depths_per_site)[:n], "depth_m": rng.uniform(0.0, 2.0, n)})
    frame.to_csv(path, index=False)
    return path


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB): ``VmHWM`` where Linux gives it (``ru_maxrss`` after
    an exec also counts the parent's memory at the fork), else ``ru_maxrss``."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(args: argparse.Namespace) -> None:
    """One ``predict_file`` in this (fresh) process: prints its figures as one JSON line."""
    import resource

    from socmap.predict import predict_file

    def cpu() -> float:  # this process and its finished worker processes
        r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime

    rss_before = peak_rss_mb()
    c0 = cpu()
    rec = predict_file(args.run, args.points_file, args.out, batch=args.batch, progress=False, device=args.device,
                       workers=int(args.workers))
    cpu_s = cpu() - c0
    print(json.dumps({"record": rec, "cpu_s": cpu_s, "rss_before_mb": rss_before,
                      "peak_rss_mb": peak_rss_mb(),
                      "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def measure(run: Path, pts: Path, n: int, batch: int, workers: int, tmp: Path, device: str, depths_per_site: int) -> dict:
    """Figures of ``socmap predict`` on the ``n`` points of ``pts`` (see the module docstring)."""
    out = tmp / f"pred_{n}.csv"
    load = os.getloadavg()[0]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--run", str(run), "--points-file", str(pts),
           "--out", str(out), "--batch", str(batch), "--device", device, "--workers", str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"predict child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    rec = res["record"]
    row = {
        "points": n, "depths_per_site": depths_per_site, "batch": batch, "workers": rec["workers"],
        "device": rec["device"], "seconds": rec["seconds"], "points_per_s": rec["points_per_s"],
        "cpu_s": round(res["cpu_s"], 2), "points_per_cpu_s": round(n / res["cpu_s"], 1),
        "peak_rss_mb": round(res["peak_rss_mb"], 1), "rss_before_mb": round(res["rss_before_mb"], 1),
        "worker_peak_rss_mb": round(res["worker_peak_rss_mb"], 1) if rec["workers"] > 1 else None,
        "status_counts": rec["status_counts"], "output_bytes": out.stat().st_size,
        "load_avg": round(load, 2), "cpus": os.cpu_count(), "stages": rec["stages"],
    }
    out.unlink()
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--points", default="100000", help="number(s) of points, comma-separated (e.g. 100000,1000000)")
    ap.add_argument("--run", type=Path, default=None, help="an existing trained run (default: build a tiny one)")
    ap.add_argument("--batch", type=int, default=None, help="points per batch (default: socmap predict's)")
    ap.add_argument("--workers", default="1,2", help="worker processes, comma-separated: each size is run with each")
    ap.add_argument("--depths-per-site", type=int, default=1, help="points per location (profile-shaped input)")
    ap.add_argument("--device", default="cpu", help="auto | cpu | cuda (socmap predict --device); default cpu")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--points-file", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from socmap.predict import DEFAULT_BATCH

    args.batch = args.batch or DEFAULT_BATCH
    if args.child:
        _child(args)
        return {}
    try:
        sizes = [int(p) for p in args.points.split(",")]
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        ap.error(f"--points and --workers must be whole numbers separated by commas, not {args.points!r}, {args.workers!r}")
    if min(sizes) < 1 or min(workers) < 1 or args.batch < 1 or args.depths_per_site < 1:
        ap.error("--points, --workers, --batch and --depths-per-site must be >= 1")

    from mapping import build_run

    tmp = Path(tempfile.mkdtemp(prefix="socmap-bench-predict-"))
    try:
        t = time.perf_counter()
        run = args.run.resolve() if args.run else build_run(tmp)
        setup_s = time.perf_counter() - t
        rows = []
        for n in sizes:
            pts = write_points(run, tmp / f"points_{n}.csv", n, args.depths_per_site)
            rows += [measure(run, pts, n, args.batch, w, tmp, args.device, args.depths_per_site) for w in workers]
            pts.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    out = {"run": str(run) if args.run else "built (twin 0.5°, 300 sites, KAN 2 epochs, 3 folds)",
           "setup_seconds": round(setup_s, 1), "sizes": rows}
    if args.json:
        print(json.dumps(out))
    else:
        for row in rows:
            for k, v in row.items():
                if k != "stages":
                    print(f"{k:18s} {v}")
            print(f"\n{'stage':14s} {'wall s':>8} {'user s':>8} {'sys s':>8}")
            for name, st in row["stages"].items():
                print(f"{name:14s} " + " ".join(f"{st[f]:>8.2f}" for f in ("wall_s", "user_s", "sys_s")))
            print()
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
