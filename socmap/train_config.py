"""The training config: every option of a run, its default and its check, in one place.

``TrainConfig`` field names are the YAML keys of ``--config run.yaml`` and, with dashes, the
``socmap train`` flags; the CLI takes its defaults and help from here (:func:`option_help`).
Numeric options carry their ranges (``ge``/``gt``/``lt``), so ``epochs: -5`` is an error naming
the field before anything is trained or written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from socmap.clm5.parameters import resolve_subset
from socmap.encoders import ENCODERS, get_encoder
from socmap.yaml_file import load_model


class TrainConfig(BaseModel):
    """Everything that defines a training run (YAML keys = these field names)."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field("synthetic", description="Catalog entry of the site data (synthetic | real-conus)")
    data_dir: str | None = Field(None, description="Directory of the data, overriding the catalog entry's")
    encoder: str = Field("kan", description=" | ".join(ENCODERS))
    params: str = Field("four", description="Parameters to predict: four | all | fifteen | name,name,...")
    folds: int = Field(5, description="Number of cross-validation folds (>= 3: train, validation and test)")
    split: Literal["block2deg", "random"] = Field("block2deg", description="Fold split: block2deg | random")
    fold_indices: list[int] | None = Field(None, description="run only these folds (default: all)")
    epochs: int = Field(100, ge=1, description="Maximum epochs of the main fit per fold (KAN: before the sparsify/refit phases)")
    patience: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-2, gt=0, le=10, description="AdamW learning rate (1e-3 suits the MLP)")
    lr_schedule: Literal["plateau", "none"] = Field("none", description="plateau: halve the learning rate when validation stalls")
    lr_patience: int = Field(6, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    loss: Literal["log_mse", "smooth_l1"] = Field("log_mse", description="Data loss: log_mse | smooth_l1")
    bound: Literal["hardsigmoid", "sigmoid"] = "hardsigmoid"
    lambda_violation: float = Field(1.0, ge=0)
    lambda_param_reg: float = Field(0.0, ge=0)
    fixed_params: Literal["auto", "clm5", "midrange"] = Field("auto", description="Value of the parameters that are not learned: clm5 (CLM5 defaults, efolding and fs1s2 at their upper bounds) | midrange (p = 0.5) | auto (the twin's truth value on synthetic data, midrange otherwise: it measured better than clm5 on the real profiles)")
    lambda_prior: float = Field(0.0, ge=0, description="Weight of the prior penalty mean((p - p_clm5)^2) pulling learned parameters towards their CLM5 defaults")
    polish_check_iters: int = Field(0, ge=0, description="KAN: validate the L-BFGS polish every this many iterations and keep its best state (0: one unmonitored polish)")
    wetland_input: bool = Field(False, description="Give the encoders (and the baselines) the site's own wetland flag (0/1, from the profile tables) as an extra input named 'wetland'; maps area-weight an upland and a wetland column by the cell's wetland fraction")
    land_class_input: bool = Field(False, description="Give the encoders (and the baselines) the site's own land class (forest, shrub, grass, crop, emergent / woody / tidal wetland, from the profile tables' site classes) as one-hot inputs 'land_<class>'; docs/model.md §5.11. Such a run cannot map or predict at points yet (no land-class shares per cell)")
    anoxia: Literal["auto", "none", "learned"] = Field("auto", description="Wetland anoxia: learned (decomposition at wetland sites is multiplied, below a learned water-table depth, by a learned oxygen scalar; docs/model.md §5.10) | none | auto (learned when some training site is a wetland, as on the real profiles; none on the twin)")
    wetland_saturated: bool = Field(True, description="Wetland sites (and the wetland column of a map) get the water scalar of saturated soil (W = 1) instead of the climate's P/PET one, the excess water acting through the anoxia; no effect where no site is a wetland (the twin); docs/model.md §5.10")
    kan_grid_size: int = Field(4, ge=1)
    kan_hidden: list[int] = Field(default_factory=list)
    kan_base: Literal["identity", "silu", "zero"] = "identity"
    kan_l1: float = Field(1e-4, ge=0)
    kan_entropy: float = Field(1e-4, ge=0)
    kan_curvature: float = Field(1e-3, ge=0)
    grid_update_epochs: int = Field(3, ge=0)
    kan_polish_iters: int = Field(100, ge=0, description="KAN: full-batch L-BFGS iterations after the fit (0: skip)")
    kan_sparsify_epochs: int = Field(30, ge=0, description="KAN: epochs of reweighted-L1 sparsification after the fit (0: skip sparsify, prune and refit)")
    kan_sparsify_l1: float = Field(3e-4, ge=0, description="KAN: weight of the reweighted L1 score penalty while sparsifying")
    kan_prune_threshold: float = Field(0.03, ge=0, description="KAN: edges with a score below this are pruned after sparsifying")
    kan_refit_epochs: int = Field(80, ge=0, description="KAN: most epochs refitting the pruned network without the sparsity penalty")
    mlp_hidden: list[int] = Field(default_factory=lambda: [128, 128])
    dropout: float = Field(0.0, ge=0, lt=1)
    rf_trees: int = Field(200, ge=1)
    seed: int = Field(0, description="Random seed of the folds, initial weights and batches")
    member_seed: int = Field(0, ge=0, description="Seed of the hybrid's initial weights and batch order only (the folds keep `seed`): members of a fold seed ensemble (benchmarks/real_data.py --ensemble-seeds); 0 = as before")
    device: str = Field("auto", description="auto | cpu | cuda")
    threads: int | None = Field(None, ge=1)
    fold_workers: int | None = Field(None, ge=1, description="Worker processes training folds side by side (default: one per usable CPU core, at most the folds to run; 1 on a GPU; 1: the folds one after another in this process)")
    fold_batching: bool | None = Field(None, description="Train the folds together, each mini-batch step solving every fold's batch in one steady-state call (each fold keeps its own model, optimiser and phases; the same run as one after another): all folds in this process with fold_workers 1, else the folds dealt into one group per worker process; hybrid encoders without dropout. Default (null): on wherever it applies (a hybrid encoder, dropout 0); false: each fold on its own")
    profiles: str | None = Field(None, description="Horizon table(s) to train on: a file (CSV, Parquet, Excel; read as by `socmap profiles check`) or a catalog entry of kind profiles, comma-separated for several (default: the data entry's profile sets); implies --data real-conus")
    columns: str | None = Field(None, description="Column map (YAML: columns: {field: column}, units: {field: unit}) of the --profiles table")
    cube_resolution: float = Field(0.25, gt=0, description="Resolution (degrees) of the real covariate cube when socmap has to build it (an existing cube is reused as it is)")

    @model_validator(mode="after")
    def _profiles_need_a_real_cube(self) -> "TrainConfig":
        # user profiles are sampled on the real covariate cube; the twin has its own sites
        if self.profiles and self.data == "synthetic":
            self.data = "real-conus"
        return self

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, v: str) -> str:
        get_encoder(v)
        return v

    @field_validator("params")
    @classmethod
    def _known_params(cls, v: str) -> str:
        resolve_subset(v)
        return v

    @field_validator("folds")
    @classmethod
    def _enough_folds(cls, v: int) -> int:
        if v < 3:
            raise ValueError("folds must be >= 3")
        return v

    @field_validator("kan_hidden", "mlp_hidden")
    @classmethod
    def _positive_widths(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError(f"layer widths must be >= 1, not {v}")
        return v

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        from socmap.devices import check_device_name

        return check_device_name(v)

    def _fold_batching_blocker(self) -> str | None:
        """Why the folds of this config cannot train batched, or None where they can."""
        fix = "or set fold_batching: false"
        if not get_encoder(self.encoder).hybrid:
            return f"fold_batching trains hybrid encoders; {self.encoder!r} is a baseline: {fix}"
        if self.dropout > 0:  # dropout draws from torch's one generator: the folds' draws would interleave
            return (f"fold_batching needs dropout: 0 (the folds' dropout draws would interleave and the run would "
                    f"differ from the folds trained one after another); got {self.dropout}: set dropout: 0 {fix}")
        return None

    @property
    def batches_folds(self) -> bool:
        """Whether the folds train batched (:mod:`socmap.fold_batch`): ``fold_batching``, or by
        default (None) wherever it applies, a hybrid encoder without dropout."""
        if self.fold_batching is not None:
            return self.fold_batching
        return self._fold_batching_blocker() is None

    @model_validator(mode="after")
    def _fold_batching_applies(self) -> "TrainConfig":
        blocker = self._fold_batching_blocker() if self.fold_batching else None  # None (default): where it applies
        if blocker:
            raise ValueError(blocker)
        return self

    @model_validator(mode="after")
    def _folds_in_range(self) -> "TrainConfig":
        bad = [k for k in self.fold_indices or [] if not 0 <= k < self.folds]
        if bad:
            raise ValueError(f"fold_indices {bad} are not folds of 0..{self.folds - 1}")
        return self


def option_help(name: str) -> str:
    """Help text of the config field ``name`` for a CLI option: its description and its default."""
    field = TrainConfig.model_fields[name]
    default = field.get_default(call_default_factory=True)
    text = field.description or name.replace("_", " ")
    return f"{text} (default: {default})" if default is not None else text


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """A config from a YAML file (optional) with keyword overrides on top; clear errors.

    Overrides that are None are ignored, so a CLI flag that was not given keeps the file's
    value or the default.
    """
    return load_model(TrainConfig, path, overrides, what="training config", help_hint="`socmap train --help`")
