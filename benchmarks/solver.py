"""Steady-state solver throughput: structured sweeps vs the dense 140×140 reference.

Both paths start from the same prepared forcing (the θ-independent work that training and
mapping do once per site) and include everything θ-dependent: operator construction, matrix
assembly (dense) and the solve. Forward+backward adds the backward pass of a scalar loss to θ.
``prepare`` times ``prepare_forcing`` itself, like the other stages (warm-up, then repeats), on
forcing laid out sites innermost as the mapping pipeline builds it
(``socmap.clm5.forcing.batch_first``); ``prepare_batch_first`` is the same on contiguous
batch-first arrays, so that the layout's effect shows.
The dense path runs in chunks of ``--dense-chunk`` sites to bound its memory (~5 GB per 16k).

Each stage also reports the user and system CPU seconds it cost (``resource.getrusage`` of this
process, including warm-up and every repetition), so allocation churn — system time comparable
to user time — shows per stage, and the CPU microseconds per site (user + sys over every site
solved), which a contended machine distorts less than the wall-clock rate.

    python benchmarks/solver.py [--json] [--sizes 1000 16000] [--threads 2] [--skip-dense] [--device cpu]
"""

from __future__ import annotations

import socmap  # noqa: F401, I001 - first: its OpenMP setting must precede torch (socmap/openmp.py)

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _forcing import benchmark_inputs  # noqa: E402

from socmap import allocator  # noqa: E402
from socmap.clm5.operators import build_operators, prepare_forcing  # noqa: E402
from socmap.clm5.solver import solve_dense, solve_structured  # noqa: E402
from socmap.devices import DeviceError, resolve_device  # noqa: E402


def _run(theta, prepared_chunks, method: str, backward: bool) -> torch.Tensor:
    solve = solve_structured if method == "structured" else solve_dense
    outs = []
    for sl, prepared in prepared_chunks:
        th = theta[sl].clone().requires_grad_(backward)
        x = solve(build_operators(th, prepared))
        if backward:
            torch.log(x[4:7].sum(0)[:6].clamp_min(1e-30)).sum().backward()
        outs.append(x.detach())
    out = torch.cat(outs, -1)
    if out.is_cuda:  # the rate must include the queued kernels
        torch.cuda.synchronize()
    return out


def _openmp_spin() -> str:
    """torch's OpenMP spin-wait as this process started it (socmap/openmp.py)."""
    return f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'libgomp default')}"


def _cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _rate(n: int, fn, min_time: float = 1.0) -> tuple[float, dict[str, float]]:
    """Sites per second of ``fn`` and the CPU seconds (user, sys) of the whole measurement."""
    u0, s0 = _cpu()
    w0 = time.perf_counter()
    fn()  # warm-up
    reps, start = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            u1, s1 = _cpu()
            per_site = (u1 - u0 + s1 - s0) / (n * (reps + 1)) * 1e6  # warm-up included, as in user_s/sys_s
            return n * reps / elapsed, {"wall_s": round(time.perf_counter() - w0, 3), "user_s": round(u1 - u0, 3),
                                        "sys_s": round(s1 - s0, 3), "cpu_us_per_site": round(per_site, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 16000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dense-chunk", type=int, default=2000)
    ap.add_argument("--skip-dense", action="store_true", help="structured path only (the dense rates come out as NaN)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    ap.add_argument("--device", default="cpu", help="auto | cpu | cuda (socmap.devices); default cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except DeviceError as exc:
        ap.error(str(exc))

    rows, max_rel = [], 0.0
    for n in args.sizes:
        theta, forcing = benchmark_inputs(n, seed=n)  # sites innermost, as the mapping pipeline builds it
        _, forcing_bf = benchmark_inputs(n, seed=n, sites_innermost=False)  # same values, batch-first contiguous
        theta, forcing, forcing_bf = theta.to(device), forcing.to(torch.float64, device), forcing_bf.to(torch.float64, device)
        cpu: dict[str, dict[str, float]] = {}
        prepare, cpu["prepare"] = _rate(n, lambda: prepare_forcing(forcing))
        prepare_bf, cpu["prepare_batch_first"] = _rate(n, lambda: prepare_forcing(forcing_bf))
        fast_chunks = [(slice(0, n), prepare_forcing(forcing))]
        step = min(n, args.dense_chunk)
        dense_chunks = [] if args.skip_dense else [(slice(i, i + step), prepare_forcing(forcing.subset(slice(i, i + step)))) for i in range(0, n, step)]
        x_fast = _run(theta, fast_chunks, "structured", False)
        x_dense = x_fast if args.skip_dense else _run(theta, dense_chunks, "dense", False)
        rel = float(((x_fast - x_dense).abs().amax(1) / x_dense.abs().amax(1).clamp_min(1e-300)).max())
        max_rel = max(max_rel, rel)
        row = {"sites": n, "prepare": prepare, "prepare_batch_first": prepare_bf, "max_rel_diff": rel, "cpu_s": cpu}
        for key, chunks, method, bwd, min_time in (
            ("fast_fwd", fast_chunks, "structured", False, 1.0),
            ("fast_fwdbwd", fast_chunks, "structured", True, 1.0),
            ("dense_fwd", dense_chunks, "dense", False, 0.5),
            ("dense_fwdbwd", dense_chunks, "dense", True, 0.5),
        ):
            if args.skip_dense and method == "dense":
                row[key], cpu[key] = float("nan"), {"wall_s": 0.0, "user_s": 0.0, "sys_s": 0.0, "cpu_us_per_site": float("nan")}
                continue
            row[key], cpu[key] = _rate(n, lambda: _run(theta, chunks, method, bwd), min_time=min_time)
        rows.append(row)

    print(f"CLM5 steady state, float64, {args.threads} threads, {device} (sites per second; higher is better)")
    print(f"{'sites':>7} {'dense fwd':>10} {'fast fwd':>10} {'speedup':>8} {'dense f+b':>10} {'fast f+b':>10} {'speedup':>8} {'prepare':>10} {'prep b-1st':>10} {'max rel diff':>13}")
    for r in rows:
        print(
            f"{r['sites']:>7} {r['dense_fwd']:>10.0f} {r['fast_fwd']:>10.0f} {r['fast_fwd'] / r['dense_fwd']:>7.0f}x "
            f"{r['dense_fwdbwd']:>10.0f} {r['fast_fwdbwd']:>10.0f} {r['fast_fwdbwd'] / r['dense_fwdbwd']:>7.0f}x "
            f"{r['prepare']:>10.0f} {r['prepare_batch_first']:>10.0f} {r['max_rel_diff']:>13.1e}"
        )
    print("max rel diff: max over sites and pools of the max-norm relative difference of the depth profile")
    print(f"\nCPU seconds per stage (user / sys / wall), {allocator.describe()}, {_openmp_spin()}")
    for r in rows:
        print(f"{r['sites']:>7} " + "  ".join(f"{k} {v['user_s']:.2f}/{v['sys_s']:.2f}/{v['wall_s']:.2f}" for k, v in r["cpu_s"].items()))
    print("CPU microseconds per site (user + sys)")
    for r in rows:
        print(f"{r['sites']:>7} " + "  ".join(f"{k} {v.get('cpu_us_per_site', float('nan')):.2f}" for k, v in r["cpu_s"].items()))
    big = max(rows, key=lambda r: r["sites"])
    if args.json:
        print(json.dumps({
            "sites": big["sites"],
            "dense_fwd_sites_per_s": round(big["dense_fwd"], 1),
            "fast_fwd_sites_per_s": round(big["fast_fwd"], 1),
            "dense_fwdbwd_sites_per_s": round(big["dense_fwdbwd"], 1),
            "fast_fwdbwd_sites_per_s": round(big["fast_fwdbwd"], 1),
            "speedup_fwd": round(big["fast_fwd"] / big["dense_fwd"], 1),
            "speedup_fwdbwd": round(big["fast_fwdbwd"] / big["dense_fwdbwd"], 1),
            "prepare_sites_per_s": round(big["prepare"], 1),
            "prepare_batch_first_sites_per_s": round(big["prepare_batch_first"], 1),
            "max_rel_diff": max_rel,
            "cpu_s": big["cpu_s"],
            "allocator": allocator.describe(),
            "openmp": _openmp_spin(),
            "device": str(device),
            "by_size": rows,
        }))


if __name__ == "__main__":
    main()
