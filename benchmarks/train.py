"""Training cost: seconds per epoch per 1,000 training sites, structured vs dense solver.

Builds a small synthetic twin in a temporary folder, sets up fold 0 of the default KAN run
and times full training epochs (mini-batches: encoder, solver forward+backward, AdamW step)
with each solver on the same data and initial weights; ``solver_fwdbwd_s_per_1k`` is the
structured solver's own forward+backward on the same batches (θ from the encoder, detached), so
``overhead_ratio`` = epoch time ÷ that is what the training loop adds around the solver.

Then (unless ``--skip-retrieval``) the 5-fold KAN retrieval as ``make demo`` runs it:
``socmap train`` with the defaults on the default synthetic twin (built in the temporary
folder, or ``--twin DIR``), timed end to end (``retrieval_5fold_s``) with its held-out skill
and parameter recovery (R² per learned parameter), so that a speed-up can be checked to leave
the recovery unchanged (``retrieval_cpu_s``: the CPU seconds it took, fold workers included, a
figure a busy machine inflates less than the wall time); ``--fold-workers 1 auto`` times it with the folds one after another and
side by side in worker processes, unbatched (``fold_batching: false``), in the same run;
``--fold-batching`` (or ``batched`` among the ``--fold-workers`` values, where its place sets the
order) also times it with ``fold_batching: true`` and one fold worker, the folds trained together
in this process (socmap/fold_batch.py); ``batched-auto`` with fold batching in the default worker
processes, one group of folds each — what ``socmap train`` does by default.
``--profile`` prints a cProfile table of one training epoch.

    python benchmarks/train.py [--json] [--sites 1000] [--epochs 2] [--threads 1] [--device cpu]
                               [--skip-retrieval | --skip-epochs] [--twin data/synthetic]
                               [--fold-workers N|auto|batched|batched-auto ...] [--fold-batching] [--profile]
"""

from __future__ import annotations

import socmap  # noqa: F401, I001 - first: its OpenMP setting must precede torch (socmap/openmp.py)

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from socmap.data.synthetic import SynthConfig, write_synthetic
from socmap.devices import DeviceError, resolve_device, torch_threads
from socmap.splits import make_folds
from socmap.train import load_sites
from socmap.train_config import load_config
from socmap.trainer import HybridTrainer


def _epoch_seconds(trainer: HybridTrainer, epochs: int) -> float:
    cfg = trainer.config
    start = time.perf_counter()
    for e in range(epochs):
        order = trainer.fold.train[np.random.default_rng(e).permutation(len(trainer.fold.train))]
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            loss = trainer.batch_loss(idx)
            trainer.opt.zero_grad(set_to_none=True)
            loss.backward()
            trainer.opt.step()
    return (time.perf_counter() - start) / epochs


def _solver_seconds(trainer: HybridTrainer) -> float:
    """Seconds of the structured solver's own forward+backward over one epoch's batches (θ from the
    encoder, detached: encoder, observation operator, loss terms and optimiser excluded)."""
    from socmap.clm5 import steady_state
    from socmap.clm5.parameters import to_physical

    cfg = trainer.config
    order = trainer.fold.train[np.random.default_rng(0).permutation(len(trainer.fold.train))]
    total = 0.0
    for s in range(0, len(order), cfg.batch_size):
        t = torch.as_tensor(order[s : s + cfg.batch_size], device=trainer.device)
        with torch.no_grad():
            theta = to_physical(trainer.model(trainer.x[t]).to(torch.float64))
        prepared = trainer.prepared.subset(t)
        start = time.perf_counter()
        th = theta.clone().requires_grad_(True)
        x = steady_state(th, prepared, check=False, check_bounds_=False)
        torch.log(x[:, 4:7].sum(1).clamp_min(1e-30)).sum().backward()
        total += time.perf_counter() - start
    return total


def _profile_epoch(trainer: HybridTrainer, rows: int = 30) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    _epoch_seconds(trainer, 1)
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(rows)
    pstats.Stats(prof).sort_stats("tottime").print_stats(rows)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished (joined) children, e.g. fold workers."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def retrieval(base: Path, twin: Path | None, device: str, fold_workers: int | None = None,
              fold_batching: bool = False) -> dict:
    """``socmap train`` with the defaults on the default twin (as ``make demo``): wall seconds and recovery.

    ``fold_workers`` None is the default (one worker process per usable core); ``fold_batching``
    trains the folds batched (socmap/fold_batch.py). The run folder is
    ``base/retrieval-[batched-]w{fold_workers or 'auto'}``.
    """
    from socmap.fold_runner import resolve_fold_workers
    from socmap.train import train

    data_dir = twin if twin is not None else base / "twin"
    t = time.perf_counter()
    if not data_dir.exists():
        write_synthetic(data_dir, SynthConfig(), progress=False)
    build_s = time.perf_counter() - t
    config = load_config(data_dir=str(data_dir), device=device, fold_workers=fold_workers, fold_batching=fold_batching)
    cpu = _cpu_seconds()
    t = time.perf_counter()
    record = train(config, base / f"retrieval-{'batched-' * fold_batching}w{fold_workers or 'auto'}", progress=False)
    seconds = time.perf_counter() - t
    cpu = _cpu_seconds() - cpu
    mean = record["metrics"]["cv"]["mean"]
    return {"retrieval_5fold_s": round(seconds, 1), "retrieval_cpu_s": round(cpu, 1), "retrieval_twin_build_s": round(build_s, 1),
            "retrieval_fold_workers": resolve_fold_workers(config, config.folds, resolve_device(device)),
            "retrieval_fold_batching": fold_batching,
            "retrieval_fold_s": [round(s, 1) for s in record["timing"]["per_fold_s"]],
            "retrieval_nse": round(mean["nse"], 4), "retrieval_nse_log": round(mean["nse_log"], 4),
            "retrieval_param_r2": {k: round(v["r2"], 4) for k, v in record["metrics"].get("param_recovery", {}).items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: what `socmap train` uses on a CPU)")
    ap.add_argument("--compare-threads", type=int, nargs="*", default=[1, 2],
                    help="also time the structured epoch on these thread counts (same run)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--device", default="cpu", help="auto | cpu | cuda (socmap.devices); default cpu")
    ap.add_argument("--skip-retrieval", action="store_true", help="per-epoch figures only (quick)")
    ap.add_argument("--twin", type=Path, default=None, help="an existing default twin for the retrieval (default: build one)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile table of one structured epoch")
    ap.add_argument("--fold-workers", nargs="+", default=["auto"], metavar="N|auto|batched|batched-auto",
                    help="retrieval with these fold_workers, one after another in this run (default: auto, as "
                         "`socmap train`; batched: fold_batching: true on 1 worker, batched-auto: on the default "
                         "workers); the first gives retrieval_5fold_s, each one retrieval_by_fold_workers")
    ap.add_argument("--fold-batching", action="store_true",
                    help="also the retrieval with fold_batching: true, after the --fold-workers runs (= batched last)")
    ap.add_argument("--skip-epochs", action="store_true", help="the retrieval only (no per-epoch figures)")
    args = ap.parse_args()
    modes = args.fold_workers + (["batched"] if args.fold_batching and "batched" not in args.fold_workers else [])
    try:
        workers = [w if w in ("batched", "batched-auto") else None if w == "auto" else int(w) for w in modes]
    except ValueError:
        ap.error(f"--fold-workers takes whole numbers, auto, batched or batched-auto, not {args.fold_workers}")
    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except DeviceError as exc:
        ap.error(str(exc))
    with tempfile.TemporaryDirectory() as tmp:
        result: dict = {"device": str(device), "threads": args.threads}
        if not args.skip_epochs:
            data_dir = Path(tmp) / "data"
            write_synthetic(data_dir, SynthConfig(resolution_deg=0.5, n_sites=args.sites, seed=0))
            cfg = load_config(data_dir=str(data_dir), batch_size=args.batch_size)
            data = load_sites(cfg)
            fold = make_folds(data.lon, data.lat, cfg.folds, cfg.split, cfg.seed)[0]
            fast = HybridTrainer(cfg, data, fold, Path(tmp) / "fast", device)
            dense = HybridTrainer(cfg, data, fold, Path(tmp) / "dense", device)
            dense.model.load_state_dict(copy.deepcopy(fast.model.state_dict()))
            dense.model.solver_method = "dense"
            _epoch_seconds(fast, 1)  # warm-up
            t_fast = _epoch_seconds(fast, args.epochs)
            t_solver = min(_solver_seconds(fast) for _ in range(2))
            if args.profile:
                _profile_epoch(fast)
            t_dense = _epoch_seconds(dense, 1)
            per_1k = 1000.0 / len(fold.train)
            by_threads = {}  # the structured epoch on other thread counts, alternating, in this same run
            for n in args.compare_threads:
                with torch_threads(n):
                    by_threads[n] = min(_epoch_seconds(fast, 1) for _ in range(2)) * per_1k
            result.update({
                "train_sites": len(fold.train),
                "batch_size": args.batch_size,
                "fast_s_per_epoch_per_1k": t_fast * per_1k,
                "dense_s_per_epoch_per_1k": t_dense * per_1k,
                "speedup": t_dense / t_fast,
                "solver_fwdbwd_s_per_1k": t_solver * per_1k,
                "overhead_ratio": t_fast / t_solver,
                "fast_s_per_epoch_per_1k_by_threads": by_threads,
            })
        if not args.skip_retrieval:
            batched_workers = {"batched": 1, "batched-auto": None}
            runs = {w: retrieval(Path(tmp), args.twin, args.device, batched_workers.get(w, w), w in batched_workers)
                    for w in workers}
            result.update(runs[workers[0]])
            if len(runs) > 1:
                result["retrieval_by_fold_workers"] = {str(w or "auto"): r for w, r in runs.items()}
    if not args.skip_epochs:
        print(f"training epoch, {result['train_sites']} training sites, batch {args.batch_size}, {args.threads} threads")
        print(f"  structured solver: {result['fast_s_per_epoch_per_1k']:.3f} s per epoch per 1,000 sites")
        print(f"  dense solver:      {result['dense_s_per_epoch_per_1k']:.3f} s per epoch per 1,000 sites")
        print(f"  speedup:           {result['speedup']:.1f}x")
        print(f"  solver alone:      {result['solver_fwdbwd_s_per_1k']:.3f} s per 1,000 sites (fwd+bwd; epoch = {result['overhead_ratio']:.1f}x that)")
    for w, r in result.get("retrieval_by_fold_workers", {"": result} if "retrieval_5fold_s" in result else {}).items():
        how = f"{r['retrieval_fold_workers']} fold workers{' = ' + w if w else ''}"
        print(f"  5-fold retrieval:  {r['retrieval_5fold_s']:.0f} s (`socmap train` defaults, {how}), NSE {r['retrieval_nse']:.3f}, param R² {r['retrieval_param_r2']}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
