"""Bulk diagnostics (socmap.clm5.diagnostics.bulk_diagnostics): the compiled pass against the torch
ops it replaces, at N sites on one thread, real steady states of θ uniform within bounds
(benchmarks/_forcing.py).

Interleaved rounds, the best time of each path (µs per site); ratios are within this one run.

    python benchmarks/diagnostics.py [--sites 4096] [--rounds 8] [--json]
"""

from __future__ import annotations

import socmap  # noqa: F401, I001 - first: its OpenMP setting must precede torch (socmap/openmp.py)

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _forcing import benchmark_inputs
    from socmap.clm5 import diagnostics as D
    from socmap.clm5 import prepare_forcing, steady_state

    torch.set_num_threads(1)
    n = args.sites
    theta, forcing = benchmark_inputs(n)  # the mapping's layout (sites innermost)
    prepared = prepare_forcing(forcing)
    pools, ops = steady_state(theta, prepared, return_operators=True, check=False)
    best = {False: float("inf"), True: float("inf")}
    out = {}
    for _ in range(args.rounds):
        for compiled in (False, True):
            D.COMPILED_DIAGNOSTICS = compiled
            out[compiled] = D.bulk_diagnostics(theta, prepared, pools, ops)
            for _ in range(5):
                t = time.perf_counter()
                D.bulk_diagnostics(theta, prepared, pools, ops)
                best[compiled] = min(best[compiled], (time.perf_counter() - t) / n * 1e6)
    D.COMPILED_DIAGNOSTICS = True
    rel = max(float(((out[True][k] - out[False][k]).abs() / out[False][k].abs().clamp_min(1e-300)).max()) for k in out[False])
    res = {"sites": n, "threads": 1, "torch_us_per_site": round(best[False], 3), "compiled_us_per_site": round(best[True], 3),
           "speedup": round(best[False] / best[True], 2), "max_rel_diff": rel}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{n} sites, 1 thread: torch {res['torch_us_per_site']} µs/site, compiled {res['compiled_us_per_site']} µs/site "
              f"({res['speedup']}×), max relative difference {rel:.1e}")


if __name__ == "__main__":
    main()
