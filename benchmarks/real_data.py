"""Hybrid vs baselines on the real CONUS profiles (NWCA 2011 + SoDaH) with the real covariate cube.

Models, all on the same folds of the same sites (socmap.splits.make_folds, seed 0):

- ``kan``, ``mlp``: the hybrid (encoder -> CLM5 parameters -> steady state), via socmap.train.train
- ``nn``: pure neural network on covariates + depth (log SOC), via socmap.train.train
- ``rf``: random forest on covariates + depth (log SOC), via socmap.train.train
- ``global``: the process model with ONE parameter set for all sites: the hybrid trainer with
  its encoder replaced by a learnable constant vector (ignores the covariates), fitted with
  AdamW through the CLM5 steady state on each fold's training sites — the "one set of
  parameters" baseline that motivates BINN.

Metrics on held-out profiles, pooled over the test folds: NSE, NSE of log SOC and RMSE
(g C m-3) with 2°x2° spatial-block folds, and NSE with random folds. ``--json`` prints one object
per model with keys nse_block, nse_log_block, nse_random, rmse_block (plus nse_log_random), and
per split: ``fold_nse_log_*`` (each test fold's NSE(log)), ``nse_log_measured_bd_*`` (the same
predictions on measured-bulk-density observations only), ``max_pred_over_train_max_*``,
``at_bound_pct_*`` and, with the learned wetland anoxia, each fold's ``anoxia_*`` (o_min, water
table). On the real profiles the hybrids and the global set learn the wetland anoxia by default
(``anoxia: auto``); ``--set anoxia=none`` gives the rows without it.

Usage::

    python benchmarks/real_data.py --quick            # 2 epochs, fold 0 only: a smoke run (~5 min)
    python benchmarks/real_data.py --epochs 80 --json # the full comparison (long on 2 cores)

The cube is built once at ``--resolution`` (default 0.25) into ``--data-dir``
(default data/real-conus) when that folder has no cube.zarr. Needs the real profiles
(``SOCMAP_REAL_DATA`` or ../shared/data/real) and the real-data packages.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from socmap import metrics  # noqa: E402
from socmap.splits import make_folds  # noqa: E402
from socmap.train import load_sites, train  # noqa: E402
from socmap.train_config import TrainConfig  # noqa: E402
from socmap.trainer import HybridTrainer  # noqa: E402

MODELS = ("kan", "mlp", "nn", "rf", "global")


class ConstantEncoder(torch.nn.Module):
    """A learnable vector, the same for every site (covariates ignored)."""

    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.z = torch.nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.z.to(x.dtype).expand(x.shape[0], -1)


def run_global(config: TrainConfig, out: Path) -> dict:
    """Cross-validated fit of one global parameter set (see the module docstring)."""
    data = load_sites(config)
    folds = make_folds(data.lon, data.lat, config.folds, config.split, config.seed)
    sim_all = np.full(data.soc_g_m3.shape, np.nan)
    p_fit = []
    for fold in folds:
        if config.fold_indices is not None and fold.index not in config.fold_indices:
            continue
        trainer = HybridTrainer(config.model_copy(update={"encoder": "mlp"}), data, fold, out / f"fold{fold.index}", torch.device("cpu"))
        trainer.model.encoder = ConstantEncoder(len(trainer.model.param_names))
        trainer.opt = torch.optim.AdamW(trainer.model.parameters(), lr=config.lr * 5, weight_decay=0.0)
        trainer.fit(progress=False)
        sim, p = trainer.predict(fold.test)
        sim_all[fold.test] = sim
        p_fit.append(p[0].tolist())
    tested = np.isfinite(sim_all).any(1)
    return {"pooled": metrics.skill(data.soc_g_m3[tested], sim_all[tested]), "p_per_fold": p_fit}


def blowup_and_bounds(out: Path) -> dict:
    """Checks of a finished run folder: the largest held-out prediction over the largest SOC
    observed outside its test fold (the issue-13 guard: must stay below 10), and the share of
    sites whose out-of-fold learned parameters sit at a bound (p < 0.005 or > 0.995)."""
    import pandas as pd

    pred = pd.read_csv(out / "predictions.csv")
    ratios = []
    for k, g in pred.groupby("fold"):
        if k < 0:
            continue
        train_max = pred.loc[pred["fold"] != k, "soc_obs_g_m3"].max()
        ratios.append(float(g["soc_sim_g_m3"].max() / train_max))
    res = {"max_pred_over_train_max": max(ratios) if ratios else float("nan")}
    if (out / "site_parameters.csv").exists():
        rec = json.loads((out / "run.json").read_text())
        sp = pd.read_csv(out / "site_parameters.csv")
        sp = sp[sp["fold"] >= 0]
        cols = [f"p_{n}" for n in rec["parameters"]]
        at = ((sp[cols] < 0.005) | (sp[cols] > 0.995))
        res["at_bound_pct"] = {c[2:]: round(100 * float(at[c].mean()), 1) for c in cols}
    return res


def run_model(model: str, config: TrainConfig, out: Path) -> dict:
    if model == "global":
        return run_global(config, out)
    rec = train(config.model_copy(update={"encoder": model}), out, progress=False)
    folds = rec["metrics"]["cv"]["folds"]
    res = {"pooled": rec["metrics"]["cv"]["pooled"], "fold_nse_log": {str(f["fold"]): f["nse_log"] for f in folds},
           **blowup_and_bounds(out)}
    measured = rec["metrics"].get("cv_measured_bd", {}).get("pooled")
    if measured:  # the same predictions scored on observations with a measured bulk density only
        res["nse_log_measured_bd"] = measured["nse_log"]
    anoxia = {str(f["fold"]): f["anoxia"] for f in folds if "anoxia" in f}
    if anoxia:  # the learned wetland anoxia (o_min, water_table_m) of each fold
        res["anoxia"] = anoxia
    return res


def _parse_set(items: list[str]) -> dict:
    """``key=value`` TrainConfig overrides (values parsed as YAML: numbers, lists, strings)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in TrainConfig.model_fields:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD a TrainConfig field")
        out[key] = yaml.safe_load(value)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object per model")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--quick", action="store_true", help="2 epochs, 50 trees, only fold 0 of each split: a smoke run")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--data-dir", default="data/real-conus", help="real cube folder (built if it has no cube.zarr)")
    ap.add_argument("--resolution", type=float, default=0.25)
    ap.add_argument("--params", default="four", help="parameters the hybrids learn (four | fifteen | all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="TrainConfig override for every model of this run (repeatable), e.g. --set lambda_prior=1")
    ap.add_argument("--tag", default="", help="ablation label added to each JSON row (``model`` becomes MODEL/TAG)")
    ap.add_argument("--splits", default="block2deg,random", help="splits to run: block2deg,random (default both)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir)
    if not (data_dir / "cube.zarr").exists():
        from socmap.data.realcube import write_real_cube

        print(f"building the real cube at {args.resolution} deg into {data_dir} …", file=sys.stderr)
        write_real_cube(data_dir, args.resolution, overwrite=data_dir.exists())
    epochs = 2 if args.quick else args.epochs
    base = TrainConfig(data="real-conus", data_dir=str(data_dir), folds=args.folds, epochs=epochs, patience=max(5, epochs // 4),
                       params=args.params, rf_trees=50 if args.quick else 300, threads=args.threads, seed=0,
                       fold_indices=[0] if args.quick else None,
                       **({"kan_polish_iters": 5, "kan_sparsify_epochs": 2, "kan_refit_epochs": 2} if args.quick else {}))
    base = base.model_copy(update=_parse_set(args.set))
    splits = [x.strip() for x in args.splits.split(",") if x.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    results, t0 = {}, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="socmap-real-bench-") as tmp:
        for m in models:
            if m not in MODELS:
                ap.error(f"unknown model {m!r}")
            t = time.perf_counter()
            nan = {"pooled": {"nse": float("nan"), "nse_log": float("nan"), "rmse": float("nan")}}
            blk = run_model(m, base.model_copy(update={"split": "block2deg"}), Path(tmp) / f"{m}-block") if "block2deg" in splits else nan
            rnd = run_model(m, base.model_copy(update={"split": "random"}), Path(tmp) / f"{m}-random") if "random" in splits else nan
            results[m] = {
                "model": f"{m}/{args.tag}" if args.tag else m, "nse_block": blk["pooled"]["nse"],
                "nse_log_block": blk["pooled"]["nse_log"],
                "nse_random": rnd["pooled"]["nse"], "nse_log_random": rnd["pooled"]["nse_log"],
                "rmse_block": blk["pooled"]["rmse"], "seconds": round(time.perf_counter() - t, 1),
                "covariates": load_sites(base).covariate_names if m == models[0] else None,
                "overrides": _parse_set(args.set),
                **{f"{k}_block": v for k, v in blk.items() if k not in ("pooled", "p_per_fold")},
                **{f"{k}_random": v for k, v in rnd.items() if k not in ("pooled", "p_per_fold")},
            }
            print(f"{m}: done in {results[m]['seconds']:.0f} s", file=sys.stderr)
            if args.json:
                print(json.dumps({**results[m], "epochs": epochs, "folds": args.folds}), flush=True)
    total = time.perf_counter() - t0
    if not args.json:
        print(f"real CONUS profiles, {args.folds} folds, {epochs} epochs, cube {data_dir} ({total:.0f} s)")
        print(f"{'model':<8} {'NSE block':>10} {'NSElog block':>13} {'RMSE block':>11} {'NSE random':>11} {'NSElog random':>14}")
        for r in results.values():
            print(f"{r['model']:<8} {r['nse_block']:>10.3f} {r['nse_log_block']:>13.3f} {r['rmse_block']:>11.0f} "
                  f"{r['nse_random']:>11.3f} {r['nse_log_random']:>14.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
