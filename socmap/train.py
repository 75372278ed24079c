"""Cross-validated training of the hybrid model (or a baseline) into a run folder.

A run is a config plus a command: ``socmap train --out runs/NAME`` writes, in ``runs/NAME``:

- ``config.yaml``: the :class:`~socmap.train_config.TrainConfig`;
- ``folds/foldK/``: per-fold checkpoint, ``model.pt``, ``result.json`` and test predictions;
- ``predictions.csv``: out-of-fold SOC at every observation; ``site_parameters.csv``: the
  out-of-fold normalised parameters of every site (hybrid encoders);
- ``sites.csv``: one row per training site (``site_id, lon, lat, fold``, the encoder covariates
  in physical units, land cover and, for the synthetic twin, its ``true_p_*`` columns);
- ``truth.json``: a copy of the data's truth (synthetic twin only);
- ``run.json``: the run record (:data:`RUN_SCHEMA_VERSION`): config, the data entry, kind and
  absolute folder, predicted parameters, encoder, fold models, versions, git revision, timing
  and metrics. With ``sites.csv`` and ``truth.json`` it is all a consumer of the run needs
  besides the models (see :mod:`socmap.runs`).

``--resume`` continues an interrupted run exactly where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from socmap import metrics
from socmap.clm5.parameters import NAMES, resolve_subset
from socmap.data.catalog import load_catalog
from socmap.data.sites import SiteData, load_site_data
from socmap.encoders import Baseline, get_encoder
from socmap.nets.hybrid import HybridModel
from socmap.provenance import git_revision, json_default, software_versions
from socmap.splits import make_folds
from socmap.train_config import TrainConfig, load_config
from socmap.trainer import HybridTrainer

log = logging.getLogger(__name__)

#: Version of the run folder layout and ``run.json`` written here (2: data kind and absolute
#: folder, parameters, encoder, fold_models, sites.csv and truth.json in the run folder).
RUN_SCHEMA_VERSION = 2


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------

def resolve_data_dir(config: TrainConfig) -> Path:
    """The absolute data directory: ``data_dir`` if given, else the catalog entry ``data``'s."""
    if config.data_dir:
        return Path(config.data_dir).resolve()
    return Path(load_catalog().entry(config.data).resolve_path(must_exist=True)).resolve()


def data_kind(config: TrainConfig, directory: Path) -> str:
    """Catalog kind of the run's data: the entry ``data``'s kind, or ``synthetic`` for any folder
    holding a twin's truth.json (``--data-dir`` may point a real entry at a twin)."""
    if (directory / "truth.json").exists():
        return "synthetic"
    return load_catalog().entry(config.data).kind


def load_sites(config: TrainConfig) -> SiteData:
    """Site data for the run (loader chosen by :func:`data_kind`), validated and non-empty."""
    directory = resolve_data_dir(config)
    data = load_site_data(data_kind(config, directory), directory)
    keep = np.isfinite(data.soc_g_m3).any(1) & np.isfinite(data.covariates).all(1)
    if not keep.any():
        raise ValueError(f"no usable sites in {directory}: every site lacks observations or covariates")
    if not keep.all():
        log.warning("dropping %d of %d sites without observations or with missing covariates", (~keep).sum(), len(keep))
        data = data.subset(np.flatnonzero(keep))
    return data


def _device(config: TrainConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


# ----------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------

def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=json_default))
    os.replace(tmp, path)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def train(config: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Cross-validated training; returns the run record also written to ``out/run.json``."""
    out = Path(out)
    if out.exists() and (out / "run.json").exists() and not resume:
        raise FileExistsError(f"{out} already holds a finished run; choose another --out or pass --resume")
    if out.exists() and not resume and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; pass --resume to continue the run in it or choose another --out")
    if resume and (out / "config.yaml").exists():
        saved = load_config(out / "config.yaml")
        if saved != config:
            log.warning("--resume: using the run's saved config from %s", out / "config.yaml")
            config = saved
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
    if config.threads:
        torch.set_num_threads(config.threads)
    device = _device(config)
    encoder = get_encoder(config.encoder)
    t0 = time.perf_counter()
    data = load_sites(config)
    folds = make_folds(data.lon, data.lat, config.folds, config.split, config.seed)
    run_folds = [f for f in folds if config.fold_indices is None or f.index in config.fold_indices]
    if not run_folds:
        raise ValueError(f"fold_indices {config.fold_indices} select no fold of {config.folds}")

    sim_all = np.full(data.soc_g_m3.shape, np.nan)
    p_all = np.full((len(data), len(NAMES)), np.nan)
    fold_of = np.full(len(data), -1)
    fold_records, models = [], []
    for fold in run_folds:
        fold_dir = out / "folds" / f"fold{fold.index}"
        done = fold_dir / "result.json"
        t_fold = time.perf_counter()
        if resume and done.exists():
            rec = json.loads(done.read_text())
            sim_all[fold.test] = np.load(fold_dir / "test_sim.npy")
            if (fold_dir / "test_p.npy").exists():
                p_all[fold.test] = np.load(fold_dir / "test_p.npy")
            fold_of[fold.test] = fold.index
            fold_records.append(rec)
            if encoder.hybrid:
                models.append(HybridModel.from_checkpoint(torch.load(fold_dir / "model.pt", weights_only=False)))
            continue
        if isinstance(encoder, Baseline):
            sim = encoder.fit_fold(config, data, fold, fold_dir, device, progress)
            epochs, extra = None, {}
        else:
            trainer = HybridTrainer(config, data, fold, fold_dir, device)
            trainer.fit(progress=progress)
            sim, p = trainer.predict(fold.test)
            np.save(fold_dir / "test_p.npy", p)
            p_all[fold.test] = p
            epochs = trainer.epoch
            extra = {"edges_kept": trainer.edges_kept} if trainer.edges_kept is not None else {}
            if trainer.selection is not None:
                extra["selection"] = trainer.selection
            models.append(trainer.model.cpu())
        np.save(fold_dir / "test_sim.npy", sim)
        sim_all[fold.test] = sim
        fold_of[fold.test] = fold.index
        rec = {
            "fold": fold.index, "n_train": len(fold.train), "n_val": len(fold.val), "n_test": len(fold.test),
            "epochs": epochs, **extra, "seconds": time.perf_counter() - t_fold, **metrics.skill(data.soc_g_m3[fold.test], sim),
        }
        _write_json(done, rec)
        fold_records.append(rec)
        log.info("fold %d: test NSE %.3f, NSE(log) %.3f", fold.index, rec["nse"], rec["nse_log"])

    tested = fold_of >= 0
    data_dir = resolve_data_dir(config)
    record = {
        "name": out.name,
        "schema_version": RUN_SCHEMA_VERSION,
        "config": config.model_dump(),
        "data": {
            "entry": config.data, "kind": data_kind(config, data_dir), "dir": str(data_dir), "n_sites": len(data),
            "n_obs": int(np.isfinite(data.soc_g_m3).sum()), "covariates": list(data.covariate_names),
            "covariate_units": list(data.covariate_units),
        },
        "encoder": config.encoder,
        "parameters": list(resolve_subset(config.params)) if encoder.hybrid else [],
        "fixed_parameters": _fixed_record(config, data) if encoder.hybrid else None,
        "fold_models": [f"folds/fold{f.index}/model.pt" for f in run_folds if (out / "folds" / f"fold{f.index}" / "model.pt").exists()],
        "versions": software_versions(),
        "git_revision": git_revision(),
        "device": str(device),
        "timing": {"total_s": time.perf_counter() - t0, "per_fold_s": [r["seconds"] for r in fold_records]},
        "metrics": {
            "cv": {"folds": fold_records, "mean": {k: float(np.mean([r[k] for r in fold_records])) for k in ("nse", "nse_log", "rmse", "r")}, "pooled": metrics.skill(data.soc_g_m3[tested], sim_all[tested])},
        },
    }
    if encoder.hybrid and data.true_p is not None:
        from socmap.interpret import parameter_recovery, relationship_recovery

        record["metrics"]["param_recovery"] = parameter_recovery(data.true_p[tested], p_all[tested], resolve_subset(config.params))
        if data.truth is not None:
            record["metrics"]["relationship_recovery"] = relationship_recovery(models, data)
    _write_predictions(out, data, sim_all, p_all, fold_of)
    _write_sites(out, data, fold_of)
    if (data_dir / "truth.json").exists():
        shutil.copyfile(data_dir / "truth.json", out / "truth.json")
    _write_json(out / "run.json", record)
    return record


def _fixed_record(config: TrainConfig, data: SiteData) -> dict:
    """What the parameters that are not learned held: the resolved ``fixed_params`` choice and θ."""
    from socmap.clm5.parameters import to_physical
    from socmap.trainer import fixed_parameters

    choice, p = fixed_parameters(config, data)
    learned = set(resolve_subset(config.params))
    theta = to_physical(torch.as_tensor(p, dtype=torch.float64)).tolist()
    return {"choice": choice, "theta": {n: v for n, v in zip(NAMES, theta) if n not in learned}}


def _write_predictions(out: Path, data: SiteData, sim: np.ndarray, p: np.ndarray, fold_of: np.ndarray) -> None:
    """``predictions.csv`` (out-of-fold SOC per observation) and ``site_parameters.csv`` (per-site p)."""
    si, li = np.nonzero(np.isfinite(data.soc_g_m3))
    obs = pd.DataFrame({
        "site_id": data.site_id[si], "lon": data.lon[si], "lat": data.lat[si], "fold": fold_of[si],
        "depth_m": data.depth_m[si, li], "soc_obs_g_m3": data.soc_g_m3[si, li], "soc_sim_g_m3": sim[si, li],
    })
    _write_csv(out / "predictions.csv", obs)
    if np.isfinite(p).any():
        params = pd.DataFrame(p, columns=[f"p_{n}" for n in NAMES])
        params.insert(0, "fold", fold_of)
        params.insert(0, "site_id", data.site_id)
        _write_csv(out / "site_parameters.csv", params)


def _write_sites(out: Path, data: SiteData, fold_of: np.ndarray) -> None:
    """``sites.csv``: site_id, lon, lat, held-out fold (-1: not tested), covariates (physical units),
    land cover and, for the synthetic twin, the true normalised parameters ``true_p_*``."""
    table = pd.DataFrame({"site_id": data.site_id, "lon": data.lon, "lat": data.lat, "fold": fold_of})
    table = pd.concat([table, data.covariate_frame()], axis=1)
    table["land_cover"] = data.land_cover
    if data.true_p is not None:
        table = pd.concat([table, pd.DataFrame(data.true_p, columns=[f"true_p_{n}" for n in NAMES])], axis=1)
    _write_csv(out / "sites.csv", table)
