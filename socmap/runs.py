"""Opening a finished training run: everything a consumer needs, read from the run folder alone.

A run folder (written by :func:`socmap.train.train`, layout version ``schema_version`` in
``run.json``) holds ``run.json``, ``config.yaml``, ``sites.csv``, ``predictions.csv``,
``site_parameters.csv``, ``truth.json`` (synthetic twin) and ``folds/foldK/model.pt``.
:func:`open_run` returns a :class:`Run` with the record, the hybrid fold models and accessors for
those tables. Only :attr:`Run.data_dir` points outside the folder, for producers that need the
covariate cube (mapping, point prediction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from socmap.encoders import get_encoder
from socmap.nets.hybrid import HybridModel


@dataclass
class Run:
    """A training run on disk (``runs/NAME``)."""

    path: Path
    record: dict
    models: list[HybridModel]

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
    def parameters(self) -> list[str]:
        """Names of the predicted CLM5 parameters (empty for a baseline)."""
        if "parameters" in self.record:
            return list(self.record["parameters"])
        return list(self.models[0].param_names) if self.models else []

    @property
    def fold_models(self) -> list[str]:
        """The fold model files, relative to the run folder."""
        if "fold_models" in self.record:
            return list(self.record["fold_models"])
        return [p.relative_to(self.path).as_posix() for p in sorted(self.path.glob("folds/fold*/model.pt"))]

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


def open_run(path: str | Path) -> Run:
    """Load ``run.json`` and the hybrid fold models; clear errors for missing or unfinished runs."""
    path = Path(path)
    record_path = path / "run.json"
    if not record_path.is_file():
        hint = " (training did not finish: rerun with --resume)" if (path / "config.yaml").exists() else ""
        raise FileNotFoundError(f"{record_path} not found: {path} is not a finished socmap run{hint}")
    record = json.loads(record_path.read_text())
    run = Run(path, record, [])
    if get_encoder(run.encoder).hybrid:
        for rel in run.fold_models:
            model = HybridModel.from_checkpoint(torch.load(path / rel, map_location="cpu", weights_only=False))
            model.eval()
            run.models.append(model)
        if not run.models:
            raise FileNotFoundError(f"no fold models (folds/fold*/model.pt) in {path}")
    return run
