"""Steady-state solver throughput: structured sweeps vs the dense 140×140 reference.

Both paths start from the same prepared forcing (the θ-independent work that training and
mapping do once per site) and include everything θ-dependent: operator construction, matrix
assembly (dense) and the solve. Forward+backward adds the backward pass of a scalar loss to θ.
The dense path runs in chunks of ``--dense-chunk`` sites to bound its memory (~5 GB per 16k).

    python benchmarks/solver.py [--json] [--sizes 1000 16000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _forcing import benchmark_inputs  # noqa: E402

from socmap.clm5.operators import build_operators, prepare_forcing  # noqa: E402
from socmap.clm5.solver import solve_dense, solve_structured  # noqa: E402


def _run(theta, prepared_chunks, method: str, backward: bool) -> torch.Tensor:
    solve = solve_structured if method == "structured" else solve_dense
    outs = []
    for sl, prepared in prepared_chunks:
        th = theta[sl].clone().requires_grad_(backward)
        x = solve(build_operators(th, prepared))
        if backward:
            torch.log(x[4:7].sum(0)[:6].clamp_min(1e-30)).sum().backward()
        outs.append(x.detach())
    return torch.cat(outs, -1)


def _rate(n: int, fn, min_time: float = 1.0) -> float:
    fn()  # warm-up
    reps, start = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return n * reps / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 16000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dense-chunk", type=int, default=2000)
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows, max_rel = [], 0.0
    for n in args.sizes:
        theta, forcing = benchmark_inputs(n, seed=n)
        t0 = time.perf_counter()
        fast_chunks = [(slice(0, n), prepare_forcing(forcing))]
        prepare_s = time.perf_counter() - t0
        step = min(n, args.dense_chunk)
        dense_chunks = [(slice(i, i + step), prepare_forcing(forcing.subset(slice(i, i + step)))) for i in range(0, n, step)]
        x_fast = _run(theta, fast_chunks, "structured", False)
        x_dense = _run(theta, dense_chunks, "dense", False)
        rel = float(((x_fast - x_dense).abs().amax(1) / x_dense.abs().amax(1).clamp_min(1e-300)).max())
        max_rel = max(max_rel, rel)
        row = {
            "sites": n,
            "fast_fwd": _rate(n, lambda: _run(theta, fast_chunks, "structured", False)),
            "fast_fwdbwd": _rate(n, lambda: _run(theta, fast_chunks, "structured", True)),
            "dense_fwd": _rate(n, lambda: _run(theta, dense_chunks, "dense", False), min_time=0.5),
            "dense_fwdbwd": _rate(n, lambda: _run(theta, dense_chunks, "dense", True), min_time=0.5),
            "prepare": n / prepare_s,
            "max_rel_diff": rel,
        }
        rows.append(row)

    print(f"CLM5 steady state, float64, {args.threads} threads (sites per second; higher is better)")
    print(f"{'sites':>7} {'dense fwd':>10} {'fast fwd':>10} {'speedup':>8} {'dense f+b':>10} {'fast f+b':>10} {'speedup':>8} {'prepare':>10} {'max rel diff':>13}")
    for r in rows:
        print(
            f"{r['sites']:>7} {r['dense_fwd']:>10.0f} {r['fast_fwd']:>10.0f} {r['fast_fwd'] / r['dense_fwd']:>7.0f}x "
            f"{r['dense_fwdbwd']:>10.0f} {r['fast_fwdbwd']:>10.0f} {r['fast_fwdbwd'] / r['dense_fwdbwd']:>7.0f}x "
            f"{r['prepare']:>10.0f} {r['max_rel_diff']:>13.1e}"
        )
    print("max rel diff: max over sites and pools of the max-norm relative difference of the depth profile")
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
            "max_rel_diff": max_rel,
            "by_size": rows,
        }))


if __name__ == "__main__":
    main()
