"""Opening a finished training run: everything a consumer needs, read from the run folder alone.

A run folder (written by :func:`socmap.train.train`, layout version ``schema_version`` in
``run.json``) holds ``run.json``, ``config.yaml``, ``sites.csv``, ``predictions.csv``,
``site_parameters.csv``, ``truth.json`` (synthetic twin) and one model per fold,
``folds/foldK/model.pt`` (hybrid encoders and the pure NN) or ``folds/foldK/model.joblib`` (the
random forest; :func:`fold_model_file`). :func:`open_run` checks the folder and returns a
:class:`Run` with the record, the fold models and accessors for those tables. Only
:attr:`Run.data_dir` points outside the folder, for producers that need the covariate cube
(mapping, point prediction).

Validation (:func:`open_run`): ``run.json`` must parse and name a known encoder; every fold the
config trains (``folds`` / ``fold_indices``) must have its model file, and every model file must
load. Anything else is one :class:`RunError` naming the file and the fix; ``allow_partial=True``
uses the folds that load instead (:attr:`Run.partial`, :attr:`Run.missing_models`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from socmap.encoders import get_encoder

log = logging.getLogger(__name__)

#: What re-trains missing or damaged fold models (see :func:`socmap.train.train`).
RETRAIN_FIX = "re-train the missing or damaged folds with `socmap train --resume --out {run}`"


class RunError(RuntimeError):
    """A run folder cannot be used as it is: ``path`` (the file at fault), ``message``, ``fix``.

    ``str(error)`` is one line for the user: ``"<path>: <message>; <fix>"``.
    """

    def __init__(self, path: str | Path, message: str, fix: str) -> None:
        self.path, self.message, self.fix = Path(path), message, fix
        super().__init__(f"{self.path}: {message}; {fix}")


def fold_model_file(encoder: str, fold: int) -> str:
    """The model file of fold ``fold`` of an ``encoder`` run, relative to the run folder."""
    return f"folds/fold{fold}/" + ("model.joblib" if encoder == "rf" else "model.pt")


@dataclass
class Run:
    """A training run on disk (``runs/NAME``).

    ``models`` are the hybrid fold models (empty for a baseline), ``baseline_models`` the
    baseline's (:class:`socmap.baselines.BaselineModel`); :attr:`predictors` is whichever the run
    has, what :func:`socmap.cells.predict_cells` takes. ``loaded_models`` are their files
    (relative to the run folder), ``missing_models`` the expected files left out of a partial
    ensemble.
    """

    path: Path
    record: dict
    models: list = field(default_factory=list)
    baseline_models: list = field(default_factory=list)
    loaded_models: list[str] = field(default_factory=list)
    missing_models: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def schema_version(self) -> int:
        """Layout version of the run folder (1: before ``schema_version`` was recorded)."""
        return int(self.record.get("schema_version", 1))

    @property
    def encoder(self) -> str:
        return self.record.get("encoder") or self.record["config"]["encoder"]

    @property
    def hybrid(self) -> bool:
        """True for a hybrid (CLM5) run, False for a baseline (no parameters)."""
        return get_encoder(self.encoder).hybrid

    @property
    def predictors(self) -> list:
        """The fold models of either kind (hybrid or baseline)."""
        return self.models or self.baseline_models

    @property
    def partial(self) -> bool:
        """True when some expected fold models were left out (``allow_partial``)."""
        return bool(self.missing_models)

    @property
    def covariates(self) -> list[str]:
        """Encoder covariate names, in the models' input order."""
        if self.models:
            return list(self.models[0].spec.covariate_names)
        if self.baseline_models:
            return list(self.baseline_models[0].covariate_names)
        return list(self.record.get("data", {}).get("covariates", []))

    @property
    def parameters(self) -> list[str]:
        """Names of the predicted CLM5 parameters (empty for a baseline)."""
        if "parameters" in self.record:
            return list(self.record["parameters"])
        return list(self.models[0].param_names) if self.models else []

    @property
    def expected_models(self) -> list[str]:
        """The fold model files the run's config trains, relative to the run folder."""
        config = self.record.get("config", {})
        folds = config.get("fold_indices") or list(range(int(config.get("folds", 0))))
        return [fold_model_file(self.encoder, int(k)) for k in folds]

    @property
    def fold_models(self) -> list[str]:
        """The fold model files in use (the loaded ones after :func:`open_run`), relative to the run folder."""
        if self.loaded_models:
            return list(self.loaded_models)
        if "fold_models" in self.record:
            return list(self.record["fold_models"])
        return [p.relative_to(self.path).as_posix() for p in sorted(self.path.glob("folds/fold*/model.*"))]

    @property
    def data(self) -> dict:
        """The run.json ``data`` entry: catalog entry, kind, folder, counts, covariates."""
        return dict(self.record["data"])

    @property
    def data_dir(self) -> Path:
        """The data folder the run was trained on (absolute; a relative one of an older run is
        taken from the current directory, as it was written)."""
        directory = Path(self.record["data"]["dir"])
        if not directory.is_dir():
            raise FileNotFoundError(
                f"the data folder {directory} of {self.path / 'run.json'} (data.dir) does not exist"
                + (f" relative to {Path.cwd()}; run from the folder the run was trained in, or set data.dir to "
                   "the absolute path" if not directory.is_absolute() else "; restore it or edit data.dir")
            )
        return directory

    def sites(self) -> pd.DataFrame | None:
        """``sites.csv`` (one row per training site, index ``site_id``), or None for an older run."""
        path = self.path / "sites.csv"
        return pd.read_csv(path, dtype={"site_id": str}).set_index("site_id") if path.exists() else None

    def predictions(self) -> pd.DataFrame:
        """``predictions.csv``: out-of-fold SOC at every observation."""
        return pd.read_csv(self.path / "predictions.csv", dtype={"site_id": str})

    def site_parameters(self) -> pd.DataFrame | None:
        """``site_parameters.csv``: out-of-fold normalised parameters per site (hybrid runs)."""
        path = self.path / "site_parameters.csv"
        return pd.read_csv(path, dtype={"site_id": str}) if path.exists() else None

    def truth(self) -> dict | None:
        """``truth.json`` of the synthetic twin the run was trained on, or None."""
        path = self.path / "truth.json"
        return json.loads(path.read_text()) if path.exists() else None


def read_record(path: str | Path) -> dict:
    """``run.json`` of the run folder ``path``, parsed and checked; :class:`RunError` otherwise."""
    path = Path(path)
    record_path = path / "run.json"
    if not path.is_dir():
        raise RunError(path, "run folder not found: not a finished socmap run", "train it with `socmap train --out RUN` or give an existing run folder")
    if not record_path.is_file():
        if (path / "config.yaml").exists():
            raise RunError(record_path, "not found: training did not finish", f"continue it with `socmap train --resume --out {path}`")
        raise RunError(record_path, f"not found: {path} is not a finished socmap run", "train one with `socmap train --out RUN`")
    try:
        record = json.loads(record_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunError(record_path, f"is not valid JSON ({exc}): the file is truncated or damaged",
                       "re-train the run (`socmap train --out NEW`) or restore run.json") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict) or not isinstance(record.get("data"), dict):
        raise RunError(record_path, "lacks the 'config' or 'data' entry of a socmap run record",
                       "re-train the run (`socmap train --out NEW`) or restore run.json")
    encoder = record.get("encoder") or record["config"].get("encoder")
    try:
        get_encoder(str(encoder))
    except ValueError as exc:
        raise RunError(record_path, f"encoder: {exc}", "the run was written by another socmap version; re-train it") from None
    folds = record["config"].get("folds")
    if not isinstance(folds, int) or folds < 1:
        raise RunError(record_path, f"config.folds is {folds!r}, not a number of folds", "restore run.json or re-train the run")
    bad = [k for k in record["config"].get("fold_indices") or [] if not (isinstance(k, int) and 0 <= k < folds)]
    if bad:
        raise RunError(record_path, f"config.fold_indices {bad} are not folds of {folds}", "restore run.json or re-train the run")
    return record


def _load_model(run: Run, rel: str) -> Any:
    """One fold model (hybrid or baseline); raises any read error of the file."""
    from socmap.baselines import load_baseline_model

    file = run.path / rel
    if run.hybrid:
        import torch

        from socmap.nets.hybrid import HybridModel

        model = HybridModel.from_checkpoint(torch.load(file, map_location="cpu", weights_only=False))
        model.eval()
        return model
    return load_baseline_model(run.encoder, file, run.record["config"], run.record["data"].get("covariates"))


def open_run(path: str | Path, *, allow_partial: bool = False, load_models: bool = True) -> Run:
    """Check a run folder and load its fold models.

    Parameters
    ----------
    path : path
        The run folder (``runs/NAME``).
    allow_partial : bool
        Use the fold models that load when some are missing or damaged (logged; recorded in
        :attr:`Run.missing_models`) instead of raising.
    load_models : bool
        Load the models (False: only check ``run.json``; for readers of the tables).

    Raises
    ------
    RunError
        ``run.json`` missing, unparseable or inconsistent; a fold model missing or unreadable
        (unless ``allow_partial`` and at least one loads). The message names the file and the fix.
    """
    path = Path(path)
    run = Run(path, read_record(path))
    if not load_models:
        return run
    expected = run.expected_models
    recorded = run.record.get("fold_models")
    if recorded is not None and len(recorded) < len(expected):  # trained before the fold model was saved
        lost = [rel for rel in expected if rel not in recorded]
        raise RunError(path / "run.json", f"records no model for {', '.join(lost)} (written by an older socmap that did "
                       f"not save {run.encoder!r} fold models)", f"re-train the run: `socmap train --out NEW --encoder {run.encoder}`")
    problems: list[tuple[str, str]] = []
    for rel in expected:
        file = path / rel
        if not file.is_file():
            problems.append((rel, "is missing"))
            continue
        try:
            model = _load_model(run, rel)
        except Exception as exc:  # noqa: BLE001 - torch/pickle raise many kinds; all mean "cannot be read"
            log.debug("cannot load %s: %r", file, exc)
            problems.append((rel, f"cannot be read ({type(exc).__name__}): truncated or damaged"))
            continue
        (run.models if run.hybrid else run.baseline_models).append(model)
        run.loaded_models.append(rel)
    if problems:
        fix = RETRAIN_FIX.format(run=path)
        if not allow_partial or not run.loaded_models:
            rel, why = problems[0]
            more = f" (and {len(problems) - 1} more: {', '.join(r for r, _ in problems[1:])})" if len(problems) > 1 else ""
            hint = "" if allow_partial else f", or pass --allow-partial to use the {len(run.loaded_models)} fold models that load"
            raise RunError(path / rel, f"fold model {why}{more}", fix + (hint if run.loaded_models else ""))
        run.missing_models = [rel for rel, _ in problems]
        log.warning("%s: partial ensemble of %d of %d fold models (%s unusable; %s)", path, len(run.loaded_models),
                    len(expected), ", ".join(run.missing_models), fix)
    covs = {tuple(getattr(m, "covariate_names", None) or m.spec.covariate_names) for m in run.predictors}
    if len(covs) > 1:
        raise RunError(path, "the fold models use different covariates", "re-train the run")
    return run
