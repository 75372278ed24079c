"""The encoder registry: every model ``socmap train --encoder NAME`` can fit.

Two sorts of entry:

- :class:`HybridEncoder` (``kan``, ``mlp``): a network that maps covariates to CLM5 parameters
  inside :class:`~socmap.nets.hybrid.HybridModel`; the network itself is built by
  :func:`socmap.nets.make_encoder` from the same name.
- :class:`Baseline` (``nn``, ``rf``): a model of SOC from covariates and depth that bypasses
  CLM5, fitted by a function of :mod:`socmap.baselines`.

Each entry names the ``TrainConfig`` fields it reads (``options``: keyword -> field), so the
defaults stay in ``TrainConfig`` alone. Add an encoder by adding an entry to :data:`ENCODERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel

from socmap.baselines import fit_nn, fit_rf
from socmap.data.sites import SiteData
from socmap.splits import Fold


def _options(config: BaseModel, options: Mapping[str, str]) -> dict[str, Any]:
    return {keyword: getattr(config, field) for keyword, field in options.items()}


@dataclass(frozen=True)
class HybridEncoder:
    """A network of the hybrid model; ``options`` maps its builder keywords to config fields."""

    options: Mapping[str, str]
    hybrid: ClassVar[bool] = True

    def network_kwargs(self, config: BaseModel) -> dict[str, Any]:
        """Keyword arguments of :func:`socmap.nets.make_encoder` taken from a ``TrainConfig``."""
        return _options(config, self.options)


@dataclass(frozen=True)
class Baseline:
    """A CLM5-free model fitted one fold at a time by ``fit``; ``options`` maps its keywords to config fields."""

    fit: Callable[..., np.ndarray]
    options: Mapping[str, str]
    hybrid: ClassVar[bool] = False

    def fit_fold(self, config: BaseModel, data: SiteData, fold: Fold, fold_dir: Path, device: torch.device,
                 progress: bool = True) -> np.ndarray:
        """Fit on ``fold`` with the options of ``config``; SOC (g C m-3) at the test observations [n_test, L]."""
        return self.fit(data, fold, fold_dir, device, progress, **_options(config, self.options))


Encoder = HybridEncoder | Baseline

#: ``--encoder`` name -> entry.
ENCODERS: dict[str, Encoder] = {
    "kan": HybridEncoder({"grid_size": "kan_grid_size", "hidden": "kan_hidden", "base": "kan_base"}),
    "mlp": HybridEncoder({"hidden": "mlp_hidden", "dropout": "dropout"}),
    "nn": Baseline(fit_nn, {"hidden": "mlp_hidden", "dropout": "dropout", "weight_decay": "weight_decay",
                            "batch_size": "batch_size", "epochs": "epochs", "patience": "patience", "seed": "seed"}),
    "rf": Baseline(fit_rf, {"trees": "rf_trees", "seed": "seed", "threads": "threads"}),
}


def get_encoder(name: str) -> Encoder:
    """The registry entry ``name``; a ValueError listing the known names otherwise."""
    try:
        return ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}") from None
