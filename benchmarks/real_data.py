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
    python benchmarks/real_data.py --models kan,rf --predictions bench/pred --json  # + held-out layers
    python benchmarks/real_data.py --breakdown bench/pred   # where the error lies (depth, data set, land unit)
    python benchmarks/real_data.py --models kan --ensemble-seeds 3 --json  # fold seed ensembles

The cube is built once at ``--resolution`` (default 0.25) into ``--data-dir``
(default data/real-conus) when that folder has no cube.zarr. Needs the real profiles
(``SOCMAP_REAL_DATA`` or ../shared/data/real) and the real-data packages.
"""

from __future__ import annotations

import socmap  # noqa: F401, I001 - first: its OpenMP setting must precede torch (socmap/openmp.py)

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


def run_ensemble(model: str, config: TrainConfig, out: Path, members: int) -> dict:
    """A fold seed ensemble: ``members`` runs of the same folds with ``member_seed`` 0 … members − 1
    (different initial weights and batch order); each held-out layer is predicted by the mean of
    the members' ln SOC (the geometric mean). ``out`` gets the ensemble's ``predictions.csv``
    (member 0's table with the ensemble's SOC) and member 0's ``sites.csv``; the result also holds
    each member's pooled NSE(log) (``member_nse_log``)."""
    import pandas as pd

    logs, member_nse_log, table = [], [], None
    for k in range(members):
        member_out = out / f"member{k}"
        rec = train(config.model_copy(update={"encoder": model, "member_seed": k}), member_out, progress=False)
        member_nse_log.append(rec["metrics"]["cv"]["pooled"]["nse_log"])
        pred = pd.read_csv(member_out / "predictions.csv", dtype={"site_id": str})
        if table is None:
            table = pred
            (out / "sites.csv").write_bytes((member_out / "sites.csv").read_bytes())
        elif not (pred["site_id"].equals(table["site_id"]) and np.allclose(pred["depth_m"], table["depth_m"])):
            raise RuntimeError("ensemble members predicted different observations: the folds must not depend on member_seed")
        logs.append(np.log(pred["soc_sim_g_m3"].to_numpy(np.float64)))
    table = table.assign(soc_sim_g_m3=np.exp(np.mean(logs, axis=0)))
    table.to_csv(out / "predictions.csv", index=False)
    tested = table["fold"] >= 0
    obs, sim = table["soc_obs_g_m3"].to_numpy()[tested], table["soc_sim_g_m3"].to_numpy()[tested]
    folds = table.loc[tested, "fold"].to_numpy()
    res = {"pooled": metrics.skill(obs, sim), "member_nse_log": member_nse_log,
           "fold_nse_log": {str(k): metrics.nse_log(obs[folds == k], sim[folds == k]) for k in np.unique(folds)},
           **blowup_and_bounds(out)}
    if "bd_estimated" in table:
        measured = ~table.loc[tested, "bd_estimated"].astype(bool).to_numpy()
        res["nse_log_measured_bd"] = metrics.nse_log(obs[measured], sim[measured])
    return res


def run_model(model: str, config: TrainConfig, out: Path, members: int = 1) -> dict:
    if model == "global":
        return run_global(config, out)
    if members > 1:
        if model not in ("kan", "mlp"):
            raise SystemExit(f"--ensemble-seeds: only the hybrids (kan, mlp) have member seeds, not {model!r}")
        out.mkdir(parents=True, exist_ok=True)
        return run_ensemble(model, config, out, members)
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


def save_predictions(tmp: Path, model: str, splits: list[str], dest: Path, tag: str = "") -> None:
    """Copy the held-out predictions (``predictions.csv``: one row per observed layer, with its
    fold, depth, observed and predicted SOC) and ``sites.csv`` (covariates, land cover, wetland
    flag) of ``model``'s run folders under ``tmp`` to ``dest``, named MODEL[-TAG]-SPLIT-*.csv."""
    from socmap.fsutil import write_atomic

    dest.mkdir(parents=True, exist_ok=True)
    stem = f"{model}-{tag}" if tag else model
    for split, short in (("block2deg", "block"), ("random", "random")):
        if split not in splits:
            continue
        for name in ("predictions", "sites"):
            src = tmp / f"{model}-{short}" / f"{name}.csv"
            if src.is_file():
                write_atomic(dest / f"{stem}-{split}-{name}.csv", src.read_bytes())


DEPTH_BINS_M = (0.0, 0.1, 0.3, 1.0, np.inf)  # 0–10, 10–30, 30–100, > 100 cm (layer mid depth)


def _same_cell_in_training(sites) -> np.ndarray:
    """[N] bool: another site of the same covariate cell (equal cell covariates) lies in another
    fold, i.e. was a training site when this one was held out. Site-level inputs (the wetland
    flag, land classes) and the cube's land cover are not cell covariates."""
    skip = {"site_id", "lon", "lat", "fold", "land_cover", "wetland"}
    covs = [c for c in sites.columns if c not in skip and not c.startswith(("land_", "true_p_"))]
    cell = sites[covs].round(6).astype(str).agg("|".join, axis=1)
    folds = sites["fold"].to_numpy()
    out = np.zeros(len(sites), dtype=bool)
    for idx in sites.groupby(cell).indices.values():
        if len(idx) > 1:
            f = folds[idx]
            out[idx] = [(f != k).any() for k in f]
    return out


def breakdown(pred_dir: Path) -> list[dict]:
    """Where a model's held-out error lies: for each ``*-predictions.csv`` in ``pred_dir`` (written
    by ``--predictions``), NSE(log) and the log bias per depth bin (layer mid depth, m:
    :data:`DEPTH_BINS_M`), per data set (NWCA / SoDaH, from the site id) and per land unit
    (wetland / upland, from the sites table), and by whether another site of the same cell was a
    training site (``same cell in training``: the cell's covariates were seen with their own SOC).

    Returns one dict per file and group: ``run`` (MODEL[-TAG]-SPLIT), ``group``, ``n`` (layers),
    ``nse_log`` (within the group, against the group's own mean), ``bias_log`` (mean of
    ln sim − ln obs: > 0 over-predicts), ``rmse_log`` and ``sse_share`` (the group's share of the
    pooled sum of squared log errors; the groups of one kind sum to 1).
    """
    import pandas as pd

    rows = []
    for path in sorted(pred_dir.glob("*-predictions.csv")):
        run = path.name[: -len("-predictions.csv")]
        pred = pd.read_csv(path, dtype={"site_id": str})
        pred = pred[(pred["fold"] >= 0) & (pred["soc_obs_g_m3"] > 0) & (pred["soc_sim_g_m3"] > 0)]
        sites_path = path.with_name(f"{run}-sites.csv")
        if sites_path.is_file():
            sites = pd.read_csv(sites_path, dtype={"site_id": str})
            sites["same_cell"] = _same_cell_in_training(sites)
            keep = ["site_id", "same_cell"] + (["wetland"] if "wetland" in sites else [])
            pred = pred.merge(sites[keep], on="site_id", how="left")
        err = np.log(pred["soc_sim_g_m3"].to_numpy()) - np.log(pred["soc_obs_g_m3"].to_numpy())
        sse = float((err ** 2).sum())
        bins = pd.cut(pred["depth_m"], DEPTH_BINS_M, right=False, labels=["0-10cm", "10-30cm", "30-100cm", ">100cm"])
        groups = {f"depth {b}": (bins == b).to_numpy() for b in bins.cat.categories}
        source = np.where(pred["site_id"].str.upper().str.startswith("NWCA"), "NWCA", "SoDaH")
        groups.update({f"data {d}": source == d for d in ("NWCA", "SoDaH")})
        if "wetland" in pred:
            wet = pred["wetland"].fillna(0).to_numpy() > 0
            groups.update({"wetland": wet, "upland": ~wet})
        if "same_cell" in pred:
            same = pred["same_cell"].fillna(False).to_numpy(bool)
            groups.update({"same cell in training": same, "no same cell in training": ~same})
        groups["all"] = np.ones(len(pred), dtype=bool)
        for name, mask in groups.items():
            if not mask.any():
                continue
            obs, sim = pred["soc_obs_g_m3"].to_numpy()[mask], pred["soc_sim_g_m3"].to_numpy()[mask]
            rows.append({"run": run, "group": name, "n": int(mask.sum()), "nse_log": metrics.nse_log(obs, sim),
                         "bias_log": float(err[mask].mean()), "rmse_log": float(np.sqrt((err[mask] ** 2).mean())),
                         "sse_share": float((err[mask] ** 2).sum() / sse)})
    return rows


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
    ap.add_argument("--predictions", default=None, metavar="DIR",
                    help="also write each trained model's held-out predictions per layer and its sites table to DIR "
                         "(MODEL[-TAG]-SPLIT-predictions.csv / -sites.csv; not for ``global``)")
    ap.add_argument("--ensemble-seeds", type=int, default=1, metavar="N",
                    help="hybrids: predict each held-out layer by the mean ln SOC of N models per fold trained with "
                         "member_seed 0 … N−1 (same folds); N times the training time")
    ap.add_argument("--breakdown", default=None, metavar="DIR",
                    help="no training: print (JSON lines with --json) the per-depth / data-set / land-unit breakdown "
                         "of the predictions a --predictions run wrote to DIR")
    args = ap.parse_args(argv)
    if args.breakdown:
        rows = breakdown(Path(args.breakdown))
        if not rows:
            raise SystemExit(f"--breakdown {args.breakdown}: no *-predictions.csv there (write them with --predictions DIR)")
        for r in rows:
            print(json.dumps(r) if args.json else
                  f"{r['run']:<28} {r['group']:<16} n={r['n']:>5} NSE(log) {r['nse_log']:>7.3f} "
                  f"bias(log) {r['bias_log']:>+7.3f} RMSE(log) {r['rmse_log']:.3f} share {r['sse_share']:.3f}")
        return 0
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
            blk = run_model(m, base.model_copy(update={"split": "block2deg"}), Path(tmp) / f"{m}-block", args.ensemble_seeds) if "block2deg" in splits else nan
            rnd = run_model(m, base.model_copy(update={"split": "random"}), Path(tmp) / f"{m}-random", args.ensemble_seeds) if "random" in splits else nan
            results[m] = {
                "model": f"{m}/{args.tag}" if args.tag else m, "nse_block": blk["pooled"]["nse"],
                "nse_log_block": blk["pooled"]["nse_log"],
                "nse_random": rnd["pooled"]["nse"], "nse_log_random": rnd["pooled"]["nse_log"],
                "rmse_block": blk["pooled"]["rmse"], "seconds": round(time.perf_counter() - t, 1),
                "covariates": load_sites(base).covariate_names if m == models[0] else None,
                "overrides": _parse_set(args.set),
                **({"ensemble_seeds": args.ensemble_seeds} if args.ensemble_seeds > 1 and m in ("kan", "mlp") else {}),
                **{f"{k}_block": v for k, v in blk.items() if k not in ("pooled", "p_per_fold")},
                **{f"{k}_random": v for k, v in rnd.items() if k not in ("pooled", "p_per_fold")},
            }
            if args.predictions and m != "global":
                save_predictions(Path(tmp), m, splits, Path(args.predictions), args.tag)
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
