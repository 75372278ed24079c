"""Opening a finished training run: its record, config and per-fold hybrid models."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

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
    def data_dir(self) -> Path:
        return Path(self.record["data"]["dir"])

    @property
    def encoder(self) -> str:
        return self.record["config"]["encoder"]


def open_run(path: str | Path) -> Run:
    """Load ``run.json`` and the fold models; clear errors for missing or unfinished runs."""
    path = Path(path)
    record_path = path / "run.json"
    if not record_path.is_file():
        hint = " (training did not finish: rerun with --resume)" if (path / "config.yaml").exists() else ""
        raise FileNotFoundError(f"{record_path} not found: {path} is not a finished socmap run{hint}")
    record = json.loads(record_path.read_text())
    models = []
    for fold_dir in sorted((path / "folds").glob("fold*")):
        ckpt = fold_dir / "model.pt"
        if ckpt.exists() and record["config"]["encoder"] in ("kan", "mlp"):
            model = HybridModel.from_checkpoint(torch.load(ckpt, map_location="cpu", weights_only=False))
            model.eval()
            models.append(model)
    if record["config"]["encoder"] in ("kan", "mlp") and not models:
        raise FileNotFoundError(f"no fold models (folds/fold*/model.pt) in {path}")
    return Run(path, record, models)


def run_config(path: str | Path) -> dict:
    return yaml.safe_load((Path(path) / "config.yaml").read_text())
