"""Training cost: seconds per epoch per 1,000 training sites, structured vs dense solver.

Builds a small synthetic twin in a temporary folder, sets up fold 0 of the default KAN run
and times full training epochs (mini-batches: encoder, solver forward+backward, AdamW step)
with each solver on the same data and initial weights.

    python benchmarks/train.py [--json] [--sites 1000] [--epochs 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from socmap.data.synthetic import SynthConfig, write_synthetic
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        write_synthetic(data_dir, SynthConfig(resolution_deg=0.5, n_sites=args.sites, seed=0))
        cfg = load_config(data_dir=str(data_dir), batch_size=args.batch_size)
        data = load_sites(cfg)
        fold = make_folds(data.lon, data.lat, cfg.folds, cfg.split, cfg.seed)[0]
        fast = HybridTrainer(cfg, data, fold, Path(tmp) / "fast", torch.device("cpu"))
        dense = HybridTrainer(cfg, data, fold, Path(tmp) / "dense", torch.device("cpu"))
        dense.model.load_state_dict(copy.deepcopy(fast.model.state_dict()))
        dense.model.solver_method = "dense"
        _epoch_seconds(fast, 1)  # warm-up
        t_fast = _epoch_seconds(fast, args.epochs)
        t_dense = _epoch_seconds(dense, 1)
    per_1k = 1000.0 / len(fold.train)
    result = {
        "train_sites": len(fold.train),
        "batch_size": args.batch_size,
        "fast_s_per_epoch_per_1k": t_fast * per_1k,
        "dense_s_per_epoch_per_1k": t_dense * per_1k,
        "speedup": t_dense / t_fast,
    }
    print(f"training epoch, {len(fold.train)} training sites, batch {args.batch_size}, {args.threads} threads")
    print(f"  structured solver: {result['fast_s_per_epoch_per_1k']:.3f} s per epoch per 1,000 sites")
    print(f"  dense solver:      {result['dense_s_per_epoch_per_1k']:.3f} s per epoch per 1,000 sites")
    print(f"  speedup:           {result['speedup']:.1f}x")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
