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

Data are resolved by :func:`prepare_data` (missing twin or real cube built, user rasters of the
catalog added) and :func:`load_run_data` (``--profiles``: a user's tables through the intake);
``run.json`` then also holds ``load_report`` (rows read, kept, dropped by reason, units, the
pedotransfer-filled rows) and ``metrics.cv_measured_bd`` (skill on measured-density observations).

The folds train one after another or side by side in worker processes (``fold_workers``, by
default one per CPU core: :mod:`socmap.fold_runner`), or batched (``fold_batching``: their
mini-batch steps solved together, :mod:`socmap.fold_batch`), with the same run bit for bit.
``--resume`` continues an interrupted run exactly where it stopped, and re-trains a fold whose
model file is missing or unreadable. Before anything is written into ``--out`` the config and
the data are checked (:func:`_prepare`), so a failed start leaves the folder as it was; a
resume uses the run's saved ``config.yaml`` and refuses options given now that differ from it
(:func:`resume_config`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from socmap import metrics
from socmap.clm5.parameters import NAMES, resolve_subset
from socmap.data.catalog import load_catalog
from socmap.data.sites import SiteData, load_real, load_site_data
from socmap.encoders import get_encoder
from socmap.fold_runner import fold_dir, fold_threads, read_fold, resolve_fold_workers, train_folds
from socmap.fsutil import atomic_path, write_atomic
from socmap.nets.hybrid import HybridModel
from socmap.provenance import git_revision, json_default, software_versions
from socmap.runs import fold_model_file
from socmap.splits import make_folds
from socmap.train_config import TrainConfig, load_config

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


@dataclass
class RunData:
    """The sites a run trains on, the folder they came from, its kind and the load report (real data)."""

    data: SiteData
    directory: Path
    kind: str
    load_report: dict[str, Any] | None = None


def prepare_data(config: TrainConfig, *, progress: bool = True) -> Path:
    """The run's data folder, built when it is missing (no separate step).

    - synthetic (the catalog's ``data/synthetic``): ``socmap synth`` with the default config;
    - a covariate cube (``real-conus``, at the catalog's place or ``data_dir``): the real cube at
      ``cube_resolution`` (:func:`socmap.data.realcube.write_real_cube`), reused next time;
    - with ``raster`` entries in the active catalog: the cube plus those layers, in the sibling
      folder ``<cube>+rasters-<fingerprint>`` (reused while the entries and files are unchanged),
      unless the cube already holds exactly those rasters.
    """
    entry = load_catalog().entry(config.data)
    directory = (Path(config.data_dir) if config.data_dir else entry.resolve_path(must_exist=False)).resolve()
    kind = "synthetic" if (directory / "truth.json").exists() else entry.kind
    if kind == "synthetic":
        if not directory.exists() and not config.data_dir:
            from socmap.data.synthetic import SynthConfig, write_synthetic

            log.info("the synthetic twin %s is missing: building it (socmap synth)", directory)
            write_synthetic(directory, SynthConfig(), progress=progress)
        elif not directory.exists():
            raise FileNotFoundError(f"data folder {directory} does not exist; create the twin with `socmap synth --out {directory}`")
        return directory
    if kind != "covariates":
        raise ValueError(f"data entry {config.data!r} is of kind {kind!r}; train on the synthetic twin or a covariate cube "
                         "(--data real-conus), and name profile tables with --profiles")
    from socmap.data.rasters import cube_rasters, fingerprint, raster_entries, write_cube_with_rasters

    if directory.is_file():
        raise ValueError(f"data entry {config.data!r} is the source file {directory}, not a covariate cube; train with "
                         "--data real-conus (the cube built from the sources) or --data-dir CUBE_FOLDER")
    if not (directory / "cube.zarr").exists():
        if directory.exists() and any(directory.iterdir()):
            raise FileNotFoundError(f"{directory} holds no cube.zarr but is not empty; point --data-dir at a real covariate "
                                    "cube or an empty/new folder (socmap builds the cube there)")
        from socmap.data.realcube import write_real_cube

        log.info("the real covariate cube %s is missing: building it at %g deg", directory, config.cube_resolution)
        write_real_cube(directory, config.cube_resolution, overwrite=directory.exists(), progress=progress)
    rasters = raster_entries()
    if not rasters:
        return directory
    from socmap.data.cube import open_cube

    want = fingerprint(rasters)
    if open_cube(directory / "cube.zarr").attrs.get("user_rasters_fingerprint") == want:
        return directory
    derived = directory.parent / f"{directory.name}+rasters-{want}"
    if not (derived / "cube.zarr").exists():
        log.info("adding user raster(s) %s to the cube: %s", ", ".join(e.name for e in rasters), derived)
        write_cube_with_rasters(directory, derived, rasters, progress=progress)
    elif set(cube_rasters(open_cube(derived / "cube.zarr"))) != {next(iter(e.variables)) for e in rasters}:
        raise ValueError(f"{derived} does not hold the raster layers its name promises; delete it (socmap rebuilds it)")
    return derived


def load_run_data(config: TrainConfig, *, progress: bool = True) -> RunData:
    """Site data for the run, validated and non-empty, with the load report of real profiles.

    Real data: the profiles are ``config.profiles`` (a user's tables or catalog entries:
    :func:`socmap.data.sites.load_profile_sources`) or the cube's default sets, sampled on the cube
    (:func:`socmap.data.sites.load_real`). Sites without observations or with a missing covariate
    are dropped and counted in the report. Raises ``ValueError`` (``ProfileDataError``,
    ``CatalogError``, ``RasterError``) with a message naming the file and the fix.
    """
    profiles = None
    if config.profiles:  # the table first: a bad table fails in a second, before any cube is built
        from socmap.data.sites import load_profile_sources

        profiles = load_profile_sources(config.profiles, config.columns)
    directory = prepare_data(config, progress=progress)
    kind = data_kind(config, directory)
    report = None
    if kind == "synthetic":
        if config.profiles:
            raise ValueError(f"--profiles {config.profiles}: profiles are trained on the real covariate cube, but the data "
                             f"folder {directory} is a synthetic twin; drop --data-dir or point it at a real cube")
        data = load_site_data(kind, directory)
    else:
        real = load_real(directory, profiles=profiles)
        data, report = real.data, real.report["load_report"]
    keep = np.isfinite(data.soc_g_m3).any(1) & np.isfinite(data.covariates).all(1)
    if not keep.any():
        raise ValueError(f"no usable sites in {directory}: every site lacks observations or covariates")
    if not keep.all():
        log.warning("dropping %d of %d sites without observations or with missing covariates", (~keep).sum(), len(keep))
        if report is not None:
            n_rows = np.isfinite(data.soc_g_m3[~keep]).sum()
            reason = "site without observations or covariates"
            report["dropped_by_reason"][reason] = report["dropped_by_reason"].get(reason, 0) + int(n_rows)
            report["sites_dropped_by_reason"][reason] = int((~keep).sum())
            report["totals"]["sites_kept"] = int(keep.sum())
        data = data.subset(np.flatnonzero(keep))
    if config.wetland_input:
        from socmap.data.sites import with_wetland_input

        data = with_wetland_input(data)
    if config.land_class_input:  # the site's own land class as one-hot inputs (docs/model.md §5.11)
        from socmap.data.sites import with_land_class_input

        data = with_land_class_input(data)
    if report is not None:
        report["totals"]["observations"] = int(np.isfinite(data.soc_g_m3).sum())
        est = data.bd_estimated if data.bd_estimated is not None else np.zeros(data.soc_g_m3.shape, bool)
        report["totals"]["observations_bd_estimated"] = int((est & np.isfinite(data.soc_g_m3)).sum())
    return RunData(data, directory, kind, report)


def load_sites(config: TrainConfig) -> SiteData:
    """Site data for the run (loader chosen by :func:`data_kind`), validated and non-empty."""
    return load_run_data(config, progress=False).data


def _device(config: TrainConfig) -> torch.device:
    from socmap.devices import resolve_device

    return resolve_device(config.device)


# ----------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------

def _write_json(path: Path, obj: dict) -> None:
    write_atomic(path, json.dumps(obj, indent=2, default=json_default))


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


#: Options that may change on ``--resume``: where and how fast it runs, not what it trains.
RUNTIME_FIELDS = frozenset({"device", "threads", "fold_workers", "fold_batching"})


def resume_config(config: TrainConfig, out: Path) -> TrainConfig:
    """The config to resume ``out`` with: its saved ``config.yaml``, with the runtime options
    (:data:`RUNTIME_FIELDS`) given now; a ValueError listing every option given now that differs
    (``field: saved → given``), and for a data source that resolves to another folder."""
    saved_path = out / "config.yaml"
    try:
        saved = load_config(saved_path)
    except ValueError as exc:
        raise ValueError(f"--resume: the saved config cannot be read ({exc}); restore it or train into a new --out") from None
    given = config.model_fields_set
    diffs = [f"{k}: {getattr(saved, k)!r} → {getattr(config, k)!r}" for k in sorted(given - RUNTIME_FIELDS - {"data_dir"})
             if getattr(config, k) != getattr(saved, k)]
    if not diffs and {"data", "data_dir"} & given:
        old, new = resolve_data_dir(saved), resolve_data_dir(config)
        if old != new:
            diffs.append(f"data folder: {old} → {new}")
    if diffs:
        raise ValueError(f"--resume: {out} was started with another config ({saved_path}); differs: "
                         + "; ".join(diffs) + ". Resume without those options, or train into a new --out")
    # validated again: a runtime option given now must suit the saved run (fold_batching and dropout)
    return TrainConfig.model_validate({**saved.model_dump(), **{k: getattr(config, k) for k in given & RUNTIME_FIELDS}})


def _prepare(config: TrainConfig, out: Path, resume: bool, progress: bool = True) -> tuple[TrainConfig, RunData, list]:
    """Every check before anything is written into ``out``: the folder, the config, the data, the folds.

    Returns the config to train with, the loaded data (sites and load report) and the folds to run.
    """
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a folder for the run")
    if out.exists() and (out / "run.json").exists() and not resume:
        raise FileExistsError(f"{out} already holds a finished run; choose another --out or pass --resume")
    if out.exists() and not resume and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; pass --resume to continue the run in it or choose another --out")
    if resume and (out / "config.yaml").exists():
        config = resume_config(config, out)
    get_encoder(config.encoder)
    loaded = load_run_data(config, progress=progress)
    data = loaded.data
    folds = make_folds(data.lon, data.lat, config.folds, config.split, config.seed)
    run_folds = [f for f in folds if config.fold_indices is None or f.index in config.fold_indices]
    if not run_folds:
        raise ValueError(f"fold_indices {config.fold_indices} select no fold of {config.folds}")
    parent = out.parent if str(out.parent) else Path(".")
    if not out.exists() and not os.access(parent if parent.exists() else Path("."), os.W_OK):
        raise PermissionError(f"cannot create --out {out}: {parent} is not writable")
    return config, loaded, run_folds


def _fold_model_usable(fold_dir: Path, encoder_name: str, fold: int, out: Path) -> bool:
    """Whether a finished fold's model file exists and loads (a resume re-trains it otherwise)."""
    from socmap.baselines import load_baseline_model

    file = out / fold_model_file(encoder_name, fold)
    if not file.is_file():
        return False
    try:
        if get_encoder(encoder_name).hybrid:
            HybridModel.from_checkpoint(torch.load(file, map_location="cpu", weights_only=False))
        else:
            load_baseline_model(encoder_name, file, {}, None)
    except Exception:  # noqa: BLE001 - any read error means the fold must be re-trained
        return False
    return True


def train(config: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Cross-validated training; returns the run record also written to ``out/run.json``.

    Nothing is written into ``out`` until the config, the data and the folds pass their checks.
    """
    out = Path(out)
    t0 = time.perf_counter()
    config, loaded, run_folds = _prepare(config, out, resume, progress)
    data = loaded.data
    device = _device(config)
    resolve_fold_workers(config, len(run_folds), device)  # a bad SOCMAP_FOLD_WORKERS fails before --out is touched
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "config.yaml", yaml.safe_dump(config.model_dump(), sort_keys=False))
    threads = fold_threads(config, device)  # one thread on a CPU unless asked (see fold_threads)
    if threads:
        torch.set_num_threads(threads)
    encoder = get_encoder(config.encoder)

    finished, to_train = {}, []
    for fold in run_folds:
        directory = fold_dir(out, fold.index)
        done = directory / "result.json"
        if resume and done.exists() and not _fold_model_usable(directory, config.encoder, fold.index, out):
            log.warning("fold %d: %s is missing or unreadable: re-training the fold", fold.index,
                        out / fold_model_file(config.encoder, fold.index))
            for name in ("result.json", "test_sim.npy", "test_p.npy", "checkpoint.pt"):
                (directory / name).unlink(missing_ok=True)
        if resume and done.exists():
            finished[fold.index] = read_fold(directory, fold.index)
        else:
            to_train.append(fold)
    finished.update({r.fold: r for r in train_folds(config, data, to_train, out, device, progress)})

    sim_all = np.full(data.soc_g_m3.shape, np.nan)
    p_all = np.full((len(data), len(NAMES)), np.nan)
    fold_of = np.full(len(data), -1)
    fold_records, models = [], []
    for fold in run_folds:  # in fold order, however the folds were trained
        result = finished[fold.index]
        sim_all[fold.test] = result.sim
        if result.p is not None:
            p_all[fold.test] = result.p
        fold_of[fold.test] = fold.index
        fold_records.append(result.record)
        if encoder.hybrid:
            models.append(HybridModel.from_checkpoint(
                torch.load(fold_dir(out, fold.index) / "model.pt", map_location="cpu", weights_only=False)).eval())

    tested = fold_of >= 0
    data_dir = loaded.directory
    record = {
        "name": out.name,
        "schema_version": RUN_SCHEMA_VERSION,
        "config": config.model_dump(),
        "data": {
            "entry": config.data, "kind": loaded.kind, "dir": str(data_dir), "n_sites": len(data),
            "n_obs": int(np.isfinite(data.soc_g_m3).sum()), "covariates": list(data.covariate_names),
            "covariate_units": list(data.covariate_units), "profiles": config.profiles,
            "catalogs": [str(f) for f in load_catalog().files],
        },
        "encoder": config.encoder,
        "parameters": list(resolve_subset(config.params)) if encoder.hybrid else [],
        "fixed_parameters": _fixed_record(config, data) if encoder.hybrid else None,
        "wetland": _wetland_record(config, data, fold_records) if encoder.hybrid else None,
        "fold_models": [fold_model_file(config.encoder, f.index) for f in run_folds if (out / fold_model_file(config.encoder, f.index)).exists()],
        "versions": software_versions(),
        "git_revision": git_revision(),
        "device": str(device),
        "timing": {"total_s": time.perf_counter() - t0, "per_fold_s": [r["seconds"] for r in fold_records]},
        "metrics": {
            "cv": {"folds": fold_records, "mean": {k: float(np.mean([r[k] for r in fold_records])) for k in ("nse", "nse_log", "rmse", "r")}, "pooled": metrics.skill(data.soc_g_m3[tested], sim_all[tested])},
        },
    }
    if loaded.load_report is not None:
        record["load_report"] = loaded.load_report
    if data.bd_estimated is not None:  # skill on the observations with a measured bulk density only
        record["metrics"]["cv_measured_bd"] = _measured_bd_skill(data, sim_all, fold_of, run_folds)
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


def _measured_bd_skill(data: SiteData, sim: np.ndarray, fold_of: np.ndarray, run_folds) -> dict[str, Any]:
    """Held-out skill on the observations whose bulk density was measured (not a pedotransfer estimate)."""
    obs = np.where(data.bd_estimated, np.nan, data.soc_g_m3)
    out: dict[str, Any] = {"n_obs": int(np.isfinite(obs[fold_of >= 0]).sum()),
                           "n_obs_bd_estimated": int((data.bd_estimated & np.isfinite(data.soc_g_m3))[fold_of >= 0].sum())}
    if out["n_obs"] >= 2:
        out["pooled"] = metrics.skill(obs[fold_of >= 0], sim[fold_of >= 0])
        folds = [metrics.skill(obs[fold_of == f.index], sim[fold_of == f.index]) for f in run_folds
                 if np.isfinite(obs[fold_of == f.index]).sum() >= 2]
        if folds:
            out["mean"] = {k: float(np.mean([r[k] for r in folds])) for k in ("nse", "nse_log", "rmse", "r")}
    return out


def _wetland_record(config: TrainConfig, data: SiteData, fold_records: list[dict]) -> dict:
    """The wetland treatment of the run: sites flagged, the resolved anoxia choice and each fold's
    learned anoxia (docs/model.md §5.10)."""
    from socmap.trainer import resolve_anoxia

    return {"wetland_sites": int((data.wetland_flag() > 0).sum()), "anoxia": resolve_anoxia(config, data),
            "wetland_input": config.wetland_input, "saturated": config.wetland_saturated,
            "learned": {str(r["fold"]): r["anoxia"] for r in fold_records if "anoxia" in r}}


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
    if data.top_m is not None and data.bottom_m is not None:  # the observed layer, for depth-interval plots
        obs.insert(5, "top_m", data.top_m[si, li])
        obs.insert(6, "bottom_m", data.bottom_m[si, li])
    if data.bd_estimated is not None:  # flagged per observation: the bulk density is a pedotransfer estimate
        obs["bd_estimated"] = data.bd_estimated[si, li]
    _write_csv(out / "predictions.csv", obs)
    if np.isfinite(p).any():
        params = pd.DataFrame(p, columns=[f"p_{n}" for n in NAMES])
        params.insert(0, "fold", fold_of)
        params.insert(0, "site_id", data.site_id)
        _write_csv(out / "site_parameters.csv", params)


def _write_sites(out: Path, data: SiteData, fold_of: np.ndarray) -> None:
    """``sites.csv``: site_id, lon, lat, held-out fold (-1: not tested), covariates (physical units),
    land cover, the wetland flag (when known) and, for the synthetic twin, the true normalised
    parameters ``true_p_*``."""
    table = pd.DataFrame({"site_id": data.site_id, "lon": data.lon, "lat": data.lat, "fold": fold_of})
    table = pd.concat([table, data.covariate_frame()], axis=1)
    table["land_cover"] = data.land_cover
    if data.wetland is not None:  # the site's land unit (docs/model.md §5.10): its fold profiles at map time
        table["wetland"] = data.wetland_flag().astype(np.int8)
    if data.true_p is not None:
        table = pd.concat([table, pd.DataFrame(data.true_p, columns=[f"true_p_{n}" for n in NAMES])], axis=1)
    _write_csv(out / "sites.csv", table)
