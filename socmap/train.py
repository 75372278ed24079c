"""Fitting the hybrid model with cross-validation, checkpoints and a reproducible run record.

A run is a config plus a command: ``socmap train --out runs/NAME`` writes ``config.yaml``,
per-fold checkpoints and weights, ``predictions.csv`` (out-of-fold SOC at every observation,
and parameters at every site) and ``run.json`` (config, data, versions, git revision, timing,
metrics). ``--resume`` continues an interrupted run exactly where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from tqdm.auto import tqdm

from socmap import metrics
from socmap.clm5.operators import prepare_forcing
from socmap.provenance import git_revision, json_default, software_versions
from socmap.clm5.parameters import NAMES, resolve_subset
from socmap.data.sites import SiteData
from socmap.nets.hybrid import HybridModel, HybridSpec
from socmap.splits import Fold, make_folds

log = logging.getLogger(__name__)

ENCODERS = ("kan", "mlp", "nn", "rf")


class TrainConfig(BaseModel):
    """Everything that defines a training run (YAML keys = these field names)."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field("synthetic", description="catalog entry of the site data (synthetic | real-conus)")
    data_dir: str | None = Field(None, description="directory of the data, overriding the catalog")
    encoder: Literal["kan", "mlp", "nn", "rf"] = "kan"
    params: str = Field("four", description="four | all | fifteen | comma-separated names")
    folds: int = 5
    split: Literal["block2deg", "random"] = "block2deg"
    fold_indices: list[int] | None = Field(None, description="run only these folds (default: all)")
    epochs: int = Field(100, description="most epochs of the main fit (KAN: before the sparsify/refit phases)")
    patience: int = 30
    batch_size: int = 128
    lr: float = 1e-2
    lr_schedule: Literal["plateau", "none"] = Field("none", description="plateau: halve the learning rate when validation stalls")
    lr_patience: int = 6
    weight_decay: float = 0.0
    loss: Literal["log_mse", "smooth_l1"] = "log_mse"
    bound: Literal["hardsigmoid", "sigmoid"] = "hardsigmoid"
    lambda_violation: float = 1.0
    lambda_param_reg: float = 0.0
    kan_grid_size: int = 4
    kan_hidden: list[int] = Field(default_factory=list)
    kan_base: Literal["identity", "silu", "zero"] = "identity"
    kan_l1: float = 1e-4
    kan_entropy: float = 1e-4
    kan_curvature: float = 1e-3
    grid_update_epochs: int = 3
    kan_polish_iters: int = Field(100, ge=0, description="KAN: full-batch L-BFGS iterations after the fit (0: skip)")
    kan_sparsify_epochs: int = Field(30, ge=0, description="KAN: epochs of reweighted-L1 sparsification after the fit (0: skip sparsify, prune and refit)")
    kan_sparsify_l1: float = Field(3e-4, ge=0, description="KAN: weight of the reweighted L1 score penalty while sparsifying")
    kan_prune_threshold: float = Field(0.03, ge=0, description="KAN: edges with a score below this are pruned after sparsifying")
    kan_refit_epochs: int = Field(80, ge=0, description="KAN: most epochs refitting the pruned network without the sparsity penalty")
    mlp_hidden: list[int] = Field(default_factory=lambda: [128, 128])
    dropout: float = 0.0
    rf_trees: int = 200
    seed: int = 0
    device: str = "auto"
    threads: int | None = None

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


def load_config(path: str | Path | None = None, **overrides) -> TrainConfig:
    """A config from a YAML file (optional) with keyword overrides on top; clear errors."""
    base: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        try:
            base = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(base, dict):
            raise ValueError(f"config file {path} must hold a mapping of options")
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**base)
    except ValidationError as exc:  # one readable line per problem, naming the option
        where = f" in {path}" if path else ""
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'config'}: "
            + ("unknown option (see `socmap train --help`)" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        )
        raise ValueError(f"invalid training config{where}: {problems}") from None


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------

def resolve_data_dir(config: TrainConfig) -> Path:
    """The data directory: ``data_dir`` if given, else the catalog entry ``data``."""
    if config.data_dir:
        return Path(config.data_dir)
    from socmap.data.catalog import load_catalog

    return Path(load_catalog().entry(config.data).resolve_path(must_exist=True))


def load_sites(config: TrainConfig) -> SiteData:
    """Site data for the run (synthetic twin or real profiles), validated and non-empty."""
    directory = resolve_data_dir(config)
    if config.data == "synthetic" or (directory / "truth.json").exists():
        from socmap.data.sites import load_synthetic

        data = load_synthetic(directory)
    else:
        from socmap.data import sites as sites_mod

        loader = getattr(sites_mod, "load_real", None)
        if loader is None:
            raise ValueError(f"no loader for data entry {config.data!r}; use 'synthetic' or give --data-dir")
        data = loader(directory)
    keep = np.isfinite(data.soc_g_m3).any(1) & np.isfinite(data.covariates).all(1)
    if not keep.any():
        raise ValueError(f"no usable sites in {directory}: every site lacks observations or covariates")
    if not keep.all():
        log.warning("dropping %d of %d sites without observations or with missing covariates", (~keep).sum(), len(keep))
        data = data.subset(np.flatnonzero(keep))
    return data


# ----------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------

def data_loss(sim: torch.Tensor, obs: torch.Tensor, kind: str) -> torch.Tensor:
    """Misfit over finite (site, depth) pairs: MSE of log SOC, or smooth-L1 on raw g C m-3."""
    ok = torch.isfinite(obs) & torch.isfinite(sim)
    if kind == "log_mse":
        return ((torch.log(sim[ok].clamp_min(1.0)) - torch.log(obs[ok].clamp_min(1.0))) ** 2).mean()
    return torch.nn.functional.smooth_l1_loss(sim[ok], obs[ok])


def _device(config: TrainConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


# ----------------------------------------------------------------------------------------
# hybrid fitting
# ----------------------------------------------------------------------------------------

class HybridTrainer:
    """Fits one fold of the hybrid model; checkpoints every epoch so a run can resume."""

    def __init__(self, config: TrainConfig, data: SiteData, fold: Fold, fold_dir: Path, device: torch.device) -> None:
        self.config, self.data, self.fold, self.dir, self.device = config, data, fold, fold_dir, device
        self.dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed * 1000 + fold.index)
        lo, hi = covariate_range(data)
        encoder_kwargs = (
            {"grid_size": config.kan_grid_size, "hidden": config.kan_hidden, "base": config.kan_base}
            if config.encoder == "kan"
            else {"hidden": config.mlp_hidden, "dropout": config.dropout}
        )
        spec = HybridSpec(
            encoder=config.encoder,
            covariate_names=list(data.covariate_names),
            covariate_lo=lo,
            covariate_hi=hi,
            params=list(resolve_subset(config.params)),
            bound=config.bound,
            encoder_kwargs=encoder_kwargs,
        )
        self.model = HybridModel(spec).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        # equifinal parameter directions are shallow valleys: a decaying step settles into them
        self.sched = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt, factor=0.5, patience=config.lr_patience, min_lr=config.lr / 64)
            if config.lr_schedule == "plateau" else None
        )
        self.x = torch.as_tensor(data.covariates, dtype=torch.float32, device=device)
        self.depth = torch.as_tensor(data.depth_m, dtype=torch.float64, device=device)
        self.obs = torch.as_tensor(data.soc_g_m3, dtype=torch.float64, device=device)
        self.prepared = prepare_forcing(data.forcing.to(torch.float64, device))
        self.epoch, self.best_val, self.bad_epochs, self.best_state = 0, float("inf"), 0, None
        self.history: list[dict] = []
        # KAN: fit -> sparsify (reweighted L1) -> prune -> refit (a relaxed lasso); others: fit
        self.phase, self.phase_epoch = "fit", 0
        self.l1_weights: list[torch.Tensor] | None = None
        self.edges_kept: list[int] | None = None
        self.fit_state: dict | None = None  # the fit's model, kept to compare with the final one
        self.fit_val_loss = float("inf")
        self.selection: dict | None = None

    # -- checkpoints -------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        state = {
            "epoch": self.epoch, "model": self.model.state_dict(), "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict() if self.sched is not None else None,
            "best_val": self.best_val, "bad_epochs": self.bad_epochs, "best_state": self.best_state,
            "history": self.history, "torch_rng": torch.get_rng_state(),
            "phase": self.phase, "phase_epoch": self.phase_epoch, "l1_weights": self.l1_weights, "edges_kept": self.edges_kept,
            "fit_state": self.fit_state, "fit_val_loss": self.fit_val_loss, "selection": self.selection,
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)

    def load_checkpoint(self) -> bool:
        if not self.checkpoint_path.exists():
            return False
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.phase, self.phase_epoch = state.get("phase", "fit"), state.get("phase_epoch", state["epoch"])
        self.l1_weights, self.edges_kept = state.get("l1_weights"), state.get("edges_kept")
        self.fit_state, self.fit_val_loss = state.get("fit_state"), state.get("fit_val_loss", float("inf"))
        self.selection = state.get("selection")
        if self.phase != "fit":  # later phases run their own optimiser (same param groups)
            self.opt = self._phase_optimizer(self.phase)
        self.opt.load_state_dict(state["opt"])
        if self.sched is not None and state.get("sched") is not None:
            self.sched.load_state_dict(state["sched"])
        self.epoch, self.best_val, self.bad_epochs = state["epoch"], state["best_val"], state["bad_epochs"]
        self.best_state, self.history = state["best_state"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        return True

    # -- steps ---------------------------------------------------------------------------
    def _batch_loss(self, idx: np.ndarray) -> torch.Tensor:
        cfg = self.config
        t = torch.as_tensor(idx, device=self.device)
        sim, p_sub, u = self.model.simulate(self.x[t], self.prepared.subset(t), self.depth[t])
        loss = data_loss(sim, self.obs[t], cfg.loss)
        loss = loss + cfg.lambda_violation * self.model.bound.violation(u) / len(idx)
        if cfg.lambda_param_reg:
            loss = loss + cfg.lambda_param_reg * self.model.bound.param_reg(p_sub)
        if self.model.is_kan and (cfg.kan_l1 or cfg.kan_entropy or cfg.kan_curvature):
            loss = loss + self.model.encoder.regularization(
                self.model.scaler(self.x[t]), l1=cfg.kan_l1, entropy=cfg.kan_entropy, curvature=cfg.kan_curvature
            )
        if self.phase == "sparsify" and cfg.kan_sparsify_l1:
            loss = loss + cfg.kan_sparsify_l1 * self.model.encoder.weighted_l1(self.model.scaler(self.x[t]), self.l1_weights)
        return loss

    @torch.no_grad()
    def predict(self, idx: np.ndarray, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """SOC at the observation depths [n, L] and p (all 21) [n, 21] for sites ``idx``."""
        self.model.eval()
        sims, ps = [], []
        for start in range(0, len(idx), batch):
            t = torch.as_tensor(idx[start : start + batch], device=self.device)
            sim, _, _ = self.model.simulate(self.x[t], self.prepared.subset(t), self.depth[t])
            sims.append(sim.cpu().numpy())
            ps.append(self.model(self.x[t]).cpu().numpy())
        return np.concatenate(sims), np.concatenate(ps)

    # -- phases ------------------------------------------------------------------------
    def phase_plan(self) -> dict[str, int]:
        """Most epochs per phase, in order. After its minibatch fit a KAN is polished with
        full-batch L-BFGS, sparsified and refitted. Correlated covariates (precipitation, NPP,
        pH) make long shallow valleys in the loss that Adam crawls along, so the fit leaves a
        relationship split between them; L-BFGS follows the valley to where the data put the
        signal, the reweighted L1 then moves each relationship onto one edge, and the pruned
        network is refitted without the penalty (a relaxed lasso)."""
        cfg = self.config
        plan = {"fit": cfg.epochs}
        if self.model.is_kan and cfg.kan_polish_iters > 0:
            plan["polish"] = 1  # one L-BFGS run, recorded as one epoch
        if self.model.is_kan and cfg.kan_sparsify_epochs > 0:
            plan.update(sparsify=cfg.kan_sparsify_epochs, refit=cfg.kan_refit_epochs)
        return plan

    def _phase_optimizer(self, phase: str) -> torch.optim.Optimizer:
        # a gentler step while the penalty drives edges to zero; the refit starts afresh
        lr = self.config.lr / 3 if phase == "sparsify" else self.config.lr
        return torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=self.config.weight_decay)

    def _train_x(self) -> torch.Tensor:
        return self.model.scaler(self.x[torch.as_tensor(self.fold.train, device=self.device)])

    def _validate(self) -> tuple[float, dict[str, float]]:
        """Loss and skill (``metrics.skill``) on the fold's validation sites."""
        sim, _ = self.predict(self.fold.val)
        obs = self.data.soc_g_m3[self.fold.val]
        return float(data_loss(torch.as_tensor(sim), torch.as_tensor(obs), self.config.loss)), metrics.skill(obs, sim)

    def _val_loss(self) -> float:
        return self._validate()[0]

    def _next_phase(self) -> None:
        plan = list(self.phase_plan())
        if self.phase in ("fit", "refit") and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if self.phase == "fit" and len(plan) > 1:
            self.fit_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.fit_val_loss = self._val_loss()
        if self.phase == "sparsify":
            with torch.no_grad():
                self.edges_kept = self.model.encoder.prune(self._train_x(), edge_quantile=None, threshold=self.config.kan_prune_threshold)
            log.info("fold %d: pruned to %s edges", self.fold.index, self.edges_kept)
        nxt = plan[plan.index(self.phase) + 1] if plan.index(self.phase) + 1 < len(plan) else "done"
        if nxt == "done" and self.fit_state is not None:
            self._select_final()
        self.phase, self.phase_epoch = nxt, 0
        if nxt in ("polish", "sparsify", "refit"):
            self.opt = self._phase_optimizer(nxt)
            self.best_val, self.bad_epochs, self.best_state = float("inf"), 0, None

    def _select_final(self) -> None:
        """Keep the polished/pruned model only if it validates no worse than the plain fit:
        on the twin it validates better, but on noisy real profiles with no sparse truth
        the later phases can overfit, and then the fit's model is the better one."""
        final_val = self._val_loss()
        self.selection = {"fit_val_loss": self.fit_val_loss, "final_val_loss": final_val,
                          "kept": "final" if final_val <= self.fit_val_loss else "fit"}
        if final_val > self.fit_val_loss:
            self.model.load_state_dict(self.fit_state)
            log.info("fold %d: kept the plain fit (validation loss %.4g < %.4g after %s)", self.fold.index,
                     self.fit_val_loss, final_val, "+".join(list(self.phase_plan())[1:]))

    def _polish(self) -> float:
        """Full-batch L-BFGS on the training sites (deterministic, so a resume redoes it
        identically); the gradient is accumulated over chunks weighted by their observations."""
        idx = self.fold.train
        chunks = [idx[i : i + 2048] for i in range(0, len(idx), 2048)]
        n_obs = [int(np.isfinite(self.data.soc_g_m3[c]).sum()) for c in chunks]
        weights = [n / max(sum(n_obs), 1) for n in n_obs]
        opt = torch.optim.LBFGS(self.model.parameters(), lr=1.0, max_iter=self.config.kan_polish_iters,
                                history_size=20, line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-14)

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            total = torch.zeros((), dtype=torch.float64, device=self.device)
            for c, w in zip(chunks, weights):
                loss = w * self._batch_loss(c)
                loss.backward()
                total = total + loss.detach()
            return total

        self.model.train()
        opt.step(closure)
        with torch.no_grad():
            return float(sum(w * self._batch_loss(c) for c, w in zip(chunks, weights)))

    def _phase_over(self) -> bool:
        if self.phase_epoch >= self.phase_plan()[self.phase]:
            return True
        # sparsifying worsens the fit on purpose: no early stopping there
        return self.phase in ("fit", "refit") and self.bad_epochs >= self.config.patience

    def _train_epoch(self) -> list[float]:
        cfg, fold = self.config, self.fold
        self.model.train()
        if self.phase == "fit" and self.model.is_kan and self.phase_epoch < cfg.grid_update_epochs:
            with torch.no_grad():
                self.model.encoder.update_grid(self._train_x())
        if self.phase == "sparsify" and self.phase_epoch % 10 == 0:
            self.l1_weights = self.model.encoder.adaptive_l1_weights(self._train_x())
        rng = np.random.default_rng([cfg.seed, fold.index, self.epoch])
        order = fold.train[rng.permutation(len(fold.train))]
        losses = []
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            if len(idx) < 2:
                continue
            loss = self._batch_loss(idx)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            losses.append(float(loss.detach()))
        return losses

    def fit(self, progress: bool = True) -> None:
        cfg, fold = self.config, self.fold
        if self.load_checkpoint():
            log.info("fold %d: resuming at epoch %d (%s phase)", fold.index, self.epoch, self.phase)
        bar = tqdm(total=sum(self.phase_plan().values()), initial=self.epoch, desc=f"fold {fold.index}", disable=None if progress else True, leave=False)
        while self.phase != "done":
            if self._phase_over():
                self._next_phase()
                continue
            losses = [self._polish()] if self.phase == "polish" else self._train_epoch()
            val_loss, val = self._validate()
            self.history.append({"epoch": self.epoch, "phase": self.phase, "lr": self.opt.param_groups[0]["lr"], "train_loss": float(np.mean(losses)), "val_loss": val_loss, **{f"val_{k}": v for k, v in val.items()}})
            if self.sched is not None and self.phase == "fit":
                self.sched.step(val_loss)
            if self.phase in ("fit", "refit") and val_loss < self.best_val - 1e-6:
                self.best_val, self.bad_epochs = val_loss, 0
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                self.bad_epochs += 1
            self.epoch += 1
            self.phase_epoch += 1
            self.save_checkpoint()
            bar.update(1)
            bar.set_postfix(phase=self.phase, loss=f"{np.mean(losses):.4f}", val_nse_log=f"{val['nse_log']:.3f}", val_nse=f"{val['nse']:.3f}")
        bar.close()
        self.save_checkpoint()
        torch.save(self.model.to_checkpoint(), self.dir / "model.pt")


def covariate_range(data: SiteData) -> tuple[list[float], list[float]]:
    """Scaling range per covariate: the land-grid range when known, else the sites' range."""
    lo, hi = [], []
    for i, name in enumerate(data.covariate_names):
        if data.covariate_range and name in data.covariate_range:
            a, b = data.covariate_range[name]
        else:
            a, b = float(np.nanmin(data.covariates[:, i])), float(np.nanmax(data.covariates[:, i]))
        if not b > a:
            b = a + 1.0
        lo.append(float(a))
        hi.append(float(b))
    return lo, hi


# ----------------------------------------------------------------------------------------
# baselines: pure NN and random forest on covariates + depth
# ----------------------------------------------------------------------------------------

def _observation_table(data: SiteData, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows (site, layer) with finite SOC: features [covariates, depth], log SOC, site pos, layer pos."""
    d, y = data.depth_m[idx], data.soc_g_m3[idx]
    si, li = np.nonzero(np.isfinite(y) & np.isfinite(d) & (y > 0))
    feats = np.column_stack([data.covariates[idx][si], d[si, li]])
    return feats, np.log(y[si, li]), si, li


def fit_baseline(config: TrainConfig, data: SiteData, fold: Fold, fold_dir: Path, device: torch.device, progress: bool = True) -> np.ndarray:
    """Fit the ``rf`` or ``nn`` baseline on one fold; SOC predicted at the test observations [n_test, L]."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr, _, _ = _observation_table(data, np.concatenate([fold.train, fold.val]) if config.encoder == "rf" else fold.train)
    x_te, _, si, li = _observation_table(data, fold.test)
    out = np.full(data.soc_g_m3[fold.test].shape, np.nan)
    if config.encoder == "rf":
        from sklearn.ensemble import RandomForestRegressor

        rf = RandomForestRegressor(n_estimators=config.rf_trees, min_samples_leaf=5, n_jobs=config.threads or 2, random_state=config.seed)
        rf.fit(x_tr, y_tr)
        out[si, li] = np.exp(rf.predict(x_te))
        return out
    from socmap.nets import PureNN

    torch.manual_seed(config.seed * 1000 + fold.index)
    lo, hi = covariate_range(data)
    lo_t = torch.as_tensor(lo, dtype=torch.float32, device=device)
    span = torch.as_tensor(hi, dtype=torch.float32, device=device) - lo_t
    net = PureNN(len(lo), hidden=config.mlp_hidden, dropout=config.dropout, target="log").to(device)
    net.set_target_stats(float(y_tr.mean()), float(y_tr.std()))
    x_va, y_va, _, _ = _observation_table(data, fold.val)

    def tensors(x, y=None):
        xt = torch.as_tensor(x, dtype=torch.float32, device=device)
        cov = (xt[:, :-1] - lo_t) / span
        return cov, xt[:, -1], (None if y is None else torch.as_tensor(y, dtype=torch.float32, device=device))

    cov_tr, dep_tr, yt = tensors(x_tr, y_tr)
    cov_va, dep_va, yv = tensors(x_va, y_va)
    zt = (yt - net.target_mean) / net.target_std
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=config.weight_decay)
    best, best_state, bad = float("inf"), None, 0
    batch = max(32, config.batch_size * 4)
    for epoch in tqdm(range(config.epochs * 2), desc=f"nn fold {fold.index}", disable=None if progress else True, leave=False):
        net.train()
        perm = torch.as_tensor(np.random.default_rng([config.seed, fold.index, epoch]).permutation(len(zt)), device=device)
        for start in range(0, len(perm), batch):
            b = perm[start : start + batch]
            if len(b) < 2:
                continue
            loss = ((net(cov_tr[b], dep_tr[b]).squeeze(-1) - zt[b]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            v = float(((net(cov_va, dep_va).squeeze(-1) - (yv - net.target_mean) / net.target_std) ** 2).mean())
        if v < best - 1e-6:
            best, bad, best_state = v, 0, {k: t.clone() for k, t in net.state_dict().items()}
        else:
            bad += 1
            if bad >= config.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    cov_te, dep_te, _ = tensors(x_te)
    with torch.no_grad():
        z = net(cov_te, dep_te).squeeze(-1)
        out[si, li] = torch.exp(z * net.target_std + net.target_mean).cpu().numpy()
    torch.save({"state_dict": net.state_dict(), "covariate_lo": lo, "covariate_hi": hi}, fold_dir / "model.pt")
    return out


# ----------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------

def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=json_default))
    os.replace(tmp, path)


def train(config: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Cross-validated training; returns the run record also written to ``out/run.json``."""
    out = Path(out)
    if out.exists() and (out / "run.json").exists() and not resume:
        raise FileExistsError(f"{out} already holds a finished run; choose another --out or pass --resume")
    if out.exists() and not resume and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; pass --resume to continue the run in it or choose another --out")
    if resume and (out / "config.yaml").exists():
        saved = TrainConfig(**yaml.safe_load((out / "config.yaml").read_text()))
        if saved != config:
            log.warning("--resume: using the run's saved config from %s", out / "config.yaml")
            config = saved
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
    if config.threads:
        torch.set_num_threads(config.threads)
    device = _device(config)
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
            if config.encoder in ("kan", "mlp"):
                models.append(HybridModel.from_checkpoint(torch.load(fold_dir / "model.pt", weights_only=False)))
            continue
        if config.encoder in ("kan", "mlp"):
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
        else:
            sim = fit_baseline(config, data, fold, fold_dir, device, progress)
            epochs, extra = None, {}
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
    record = {
        "name": out.name,
        "config": config.model_dump(),
        "data": {"entry": config.data, "dir": str(resolve_data_dir(config)), "n_sites": len(data), "n_obs": int(np.isfinite(data.soc_g_m3).sum()), "covariates": list(data.covariate_names)},
        "versions": software_versions(),
        "git_revision": git_revision(),
        "device": str(device),
        "timing": {"total_s": time.perf_counter() - t0, "per_fold_s": [r["seconds"] for r in fold_records]},
        "metrics": {
            "cv": {"folds": fold_records, "mean": {k: float(np.mean([r[k] for r in fold_records])) for k in ("nse", "nse_log", "rmse", "r")}, "pooled": metrics.skill(data.soc_g_m3[tested], sim_all[tested])},
        },
    }
    if config.encoder in ("kan", "mlp") and data.true_p is not None:
        from socmap.interpret import parameter_recovery, relationship_recovery

        record["metrics"]["param_recovery"] = parameter_recovery(data.true_p[tested], p_all[tested], resolve_subset(config.params))
        if data.truth is not None:
            record["metrics"]["relationship_recovery"] = relationship_recovery(models, data)
    _write_predictions(out, data, sim_all, p_all, fold_of)
    _write_json(out / "run.json", record)
    return record


def _write_predictions(out: Path, data: SiteData, sim: np.ndarray, p: np.ndarray, fold_of: np.ndarray) -> None:
    si, li = np.nonzero(np.isfinite(data.soc_g_m3))
    obs = pd.DataFrame({
        "site_id": data.site_id[si], "lon": data.lon[si], "lat": data.lat[si], "fold": fold_of[si],
        "depth_m": data.depth_m[si, li], "soc_obs_g_m3": data.soc_g_m3[si, li], "soc_sim_g_m3": sim[si, li],
    })
    tmp = out / "predictions.csv.tmp"
    obs.to_csv(tmp, index=False)
    os.replace(tmp, out / "predictions.csv")
    if np.isfinite(p).any():
        params = pd.DataFrame(p, columns=[f"p_{n}" for n in NAMES])
        params.insert(0, "fold", fold_of)
        params.insert(0, "site_id", data.site_id)
        params.to_csv(out / "site_parameters.csv", index=False)
