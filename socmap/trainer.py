"""The epoch loop that fits one fold of the hybrid model.

:class:`HybridTrainer` builds the model from the config's encoder entry, runs the phases of
:func:`socmap.phases.make_schedule` one epoch at a time, validates after every epoch and writes a
checkpoint (:mod:`socmap.checkpoint`), so a killed fit resumes where it stopped with the same
result bit for bit.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from socmap import metrics
from socmap.checkpoint import CHECKPOINT_NAME, LoopState, read_checkpoint, save_checkpoint
from socmap.clm5.operators import PreparedForcing, prepare_forcing
from socmap.clm5.parameters import N_PARAMS, default_p, prior_centre_p, resolve_subset
from socmap.data.sites import SiteData
from socmap.encoders import HybridEncoder, get_encoder
from socmap.nets.hybrid import HybridModel, HybridSpec
from socmap.phases import Phase, ScheduleState, make_schedule, select_final
from socmap.splits import Fold
from socmap.train_config import TrainConfig

log = logging.getLogger(__name__)


def data_loss(sim: torch.Tensor, obs: torch.Tensor, kind: str) -> torch.Tensor:
    """Misfit over finite (site, depth) pairs: MSE of log SOC, or smooth-L1 on raw g C m-3."""
    ok = torch.isfinite(obs) & torch.isfinite(sim)
    if kind == "log_mse":
        return ((torch.log(sim[ok].clamp_min(1.0)) - torch.log(obs[ok].clamp_min(1.0))) ** 2).mean()
    return torch.nn.functional.smooth_l1_loss(sim[ok], obs[ok])


def fixed_parameters(config: TrainConfig, data: SiteData) -> tuple[str, list[float]]:
    """What the parameters that are not learned hold: ``(choice, p [21])``.

    ``auto`` follows the data: a synthetic twin's truth holds its non-target parameters at its
    ``fixed_p`` (the retrieval test must see the same value); other data hold p = 0.5, which
    validated better on the real profiles than the CLM5 defaults (``clm5``,
    :data:`socmap.clm5.parameters.DEFAULT_P`; docs/model.md §4.3).
    """
    choice = config.fixed_params
    if choice == "auto":
        choice = "truth" if data.truth is not None else "midrange"
    if choice == "truth":
        from socmap.truth import P_FIXED

        return choice, [float(data.truth.get("fixed_p", P_FIXED))] * N_PARAMS
    if choice == "midrange":
        return choice, [0.5] * N_PARAMS
    return choice, [float(v) for v in default_p()]


def resolve_anoxia(config: TrainConfig, data: SiteData) -> str:
    """``config.anoxia`` with ``auto`` resolved: ``learned`` when some site is a wetland, else ``none``."""
    if config.anoxia != "auto":
        return config.anoxia
    return "learned" if bool((data.wetland_flag() > 0).any()) else "none"


def prior_penalty(p_sub: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """``mean((p - p0)^2)`` over sites and learned parameters: the pull towards the CLM5 defaults ``p0`` [k]."""
    return ((p_sub - centre.to(p_sub.dtype)) ** 2).mean()


def build_model(config: TrainConfig, data: SiteData) -> HybridModel:
    """An untrained hybrid model for ``data``'s covariates with the config's encoder, parameters and bound."""
    entry = get_encoder(config.encoder)
    if not isinstance(entry, HybridEncoder):
        raise ValueError(f"encoder {config.encoder!r} is a baseline, not a hybrid encoder")
    lo, hi = data.scaling_range()
    spec = HybridSpec(
        encoder=config.encoder,
        covariate_names=list(data.covariate_names),
        covariate_lo=lo,
        covariate_hi=hi,
        params=list(resolve_subset(config.params)),
        bound=config.bound,
        encoder_kwargs=entry.network_kwargs(config),
        fixed_p=fixed_parameters(config, data)[1],
        anoxia=resolve_anoxia(config, data),
        wetland_saturated=config.wetland_saturated,
    )
    return HybridModel(spec)


class SiteRows:
    """A prepared forcing (:class:`~socmap.clm5.operators.PreparedForcing`, sites innermost) kept
    also with the sites outermost, to gather a batch's sites as rows.

    ``index_select`` along the innermost dimension gathers single elements with a stride; along
    the outermost it copies whole rows, and moving the sites back innermost is one transposing
    copy: 3.6 ms instead of 9.8 ms for 640 of the twin's 2,000 sites (one thread), the same values
    in the same (contiguous) layout as :meth:`~socmap.clm5.operators.PreparedForcing.subset`. The
    gather of every mini-batch, L-BFGS evaluation and validation was 15 % of a fold's time.
    """

    def __init__(self, prepared: PreparedForcing) -> None:
        self.prepared = prepared
        self.rows = {f.name: getattr(prepared, f.name).movedim(-1, 0).contiguous() for f in dataclasses.fields(prepared)
                     if isinstance(getattr(prepared, f.name), torch.Tensor)}

    def subset(self, index: torch.Tensor) -> PreparedForcing:
        """The sites ``index`` [B] (a long tensor), as ``prepared.subset(index)``."""
        return dataclasses.replace(self.prepared, **{name: rows.index_select(0, index).movedim(0, -1).contiguous()
                                                     for name, rows in self.rows.items()})


class HybridTrainer:
    """Fits one fold of the hybrid model; checkpoints every epoch so a run can resume."""

    def __init__(self, config: TrainConfig, data: SiteData, fold: Fold, fold_dir: Path, device: torch.device,
                 forcing: SiteRows | None = None) -> None:
        self.config, self.data, self.fold, self.dir, self.device = config, data, fold, fold_dir, device
        self.dir.mkdir(parents=True, exist_ok=True)
        # member_seed 0 keeps the historic seeding bit for bit; others start a fold seed-ensemble member
        torch.manual_seed(config.seed * 1000 + fold.index + 1_000_003 * config.member_seed)
        self.model = build_model(config, data).to(device)
        self.phases: list[Phase] = make_schedule(config, self.model.is_kan)
        self.opt = self.phases[0].optimizer(self.model, config)
        # equifinal parameter directions are shallow valleys: a decaying step settles into them
        self.sched = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt, factor=0.5, patience=config.lr_patience, min_lr=config.lr / 64)
            if config.lr_schedule == "plateau" else None
        )
        self.x = torch.as_tensor(data.covariates, dtype=torch.float32, device=device)
        self.depth = torch.as_tensor(data.depth_m, dtype=torch.float64, device=device)
        self.obs = torch.as_tensor(data.soc_g_m3, dtype=torch.float64, device=device)
        self.wetland = torch.as_tensor(data.wetland_flag(), dtype=torch.float64, device=device)
        # the folds of one run may share the forcing prepared once (fold batching: socmap/fold_batch.py)
        self.forcing = forcing if forcing is not None else SiteRows(prepare_forcing(data.forcing.to(torch.float64, device)))
        self.prepared = self.forcing.prepared
        self.prior_centre = torch.as_tensor(prior_centre_p(self.model.param_names), dtype=torch.float32, device=device)
        self.loop = LoopState(phase=self.phases[0].name)
        self.state = ScheduleState()

    # -- what the run record and the tests read ----------------------------------------
    @property
    def epoch(self) -> int:
        return self.loop.epoch

    @property
    def history(self) -> list[dict]:
        return self.loop.history

    @property
    def phase(self) -> str:
        return self.loop.phase

    @property
    def edges_kept(self) -> list[int] | None:
        return self.state.edges_kept

    @property
    def selection(self) -> dict | None:
        return self.state.selection

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / CHECKPOINT_NAME

    # -- checkpoints -------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        save_checkpoint(self.checkpoint_path, self.loop, self.state, self.model, self.opt, self.sched)

    def load_checkpoint(self) -> bool:
        """Resume from the fold's checkpoint if there is one; True if it was loaded."""
        found = read_checkpoint(self.checkpoint_path, self.device)
        if found is None:
            return False
        raw, self.loop, self.state = found
        state = dict(raw["model"])
        for key in ("p_lo", "p_hi"):  # checkpoints written before the output range was held
            state.setdefault(key, getattr(self.model, key))
        self.model.load_state_dict(state)
        current = self._current()
        if current is not None and current is not self.phases[0]:  # later phases run their own optimiser
            self.opt = current.optimizer(self.model, self.config)
        self.opt.load_state_dict(raw["opt"])
        if self.sched is not None and raw.get("sched") is not None:
            self.sched.load_state_dict(raw["sched"])
        torch.set_rng_state(raw["torch_rng"])
        return True

    # -- steps ---------------------------------------------------------------------------
    def _current(self) -> Phase | None:
        return next((p for p in self.phases if p.name == self.loop.phase), None)

    def batch_loss(self, idx: np.ndarray) -> torch.Tensor:
        """Training loss of the sites ``idx``: data misfit, bound violation and regularisers."""
        if self.model.is_kan:  # the forward pass and the KAN regularisers share each layer's basis
            with self.model.encoder.shared_basis():
                return self._batch_loss(idx)
        return self._batch_loss(idx)

    def _batch_loss(self, idx: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(idx, device=self.device)
        sim, p_sub, u = self.model.simulate(self.x[t], self.forcing.subset(t), self.depth[t], self.wetland[t])
        return self.objective(t, sim, p_sub, u)

    def objective(self, t: torch.Tensor, sim: torch.Tensor, p_sub: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Training loss of the sites ``t`` [B] from their simulation: ``sim`` [B, L] (g C m-3), the
        learned parameters ``p_sub`` [B, k] and their pre-bound values ``u`` [B, k]."""
        cfg = self.config
        loss = data_loss(sim, self.obs[t], cfg.loss)
        loss = loss + cfg.lambda_violation * self.model.bound.violation(u) / len(t)
        if cfg.lambda_param_reg:
            loss = loss + cfg.lambda_param_reg * self.model.bound.param_reg(p_sub)
        if cfg.lambda_prior:
            loss = loss + cfg.lambda_prior * prior_penalty(p_sub, self.prior_centre)
        if self.model.is_kan and (cfg.kan_l1 or cfg.kan_entropy or cfg.kan_curvature):
            loss = loss + self.model.encoder.regularization(
                self.model.scaler(self.x[t]), l1=cfg.kan_l1, entropy=cfg.kan_entropy, curvature=cfg.kan_curvature
            )
        current = self._current()
        penalty = current.penalty(self, self.state, self.x[t]) if current is not None else None
        if penalty is not None:
            loss = loss + penalty
        return loss

    @torch.no_grad()
    def predict(self, idx: np.ndarray, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """SOC at the observation depths [n, L] and p (all 21) [n, 21] for sites ``idx``."""
        self.model.eval()
        sims, ps = [], []
        for start in range(0, len(idx), batch):
            t = torch.as_tensor(idx[start : start + batch], device=self.device)
            sim, _, _ = self.model.simulate(self.x[t], self.forcing.subset(t), self.depth[t], self.wetland[t])
            sims.append(sim.cpu().numpy())
            ps.append(self.model(self.x[t]).cpu().numpy())
        return np.concatenate(sims), np.concatenate(ps)

    def train_x(self) -> torch.Tensor:
        """Scaled covariates of the fold's training sites [n_train, C]."""
        return self.model.scaler(self.x[torch.as_tensor(self.fold.train, device=self.device)])

    def validate(self) -> tuple[float, dict[str, float]]:
        """Loss and skill (``metrics.skill``) on the fold's validation sites."""
        sim, _ = self.predict(self.fold.val)
        obs = self.data.soc_g_m3[self.fold.val]
        return float(data_loss(torch.as_tensor(sim), torch.as_tensor(obs), self.config.loss)), metrics.skill(obs, sim)

    def val_loss(self) -> float:
        return self.validate()[0]

    def epoch_batches(self) -> list[np.ndarray]:
        """The mini-batches (site indices) of this epoch: the training sites in the order seeded by
        ``[seed, fold, epoch]`` (and ``member_seed``), cut into ``batch_size``; a last batch of one
        site is dropped."""
        cfg, fold, loop = self.config, self.fold, self.loop
        rng = np.random.default_rng([cfg.seed, fold.index, loop.epoch] + ([cfg.member_seed] if cfg.member_seed else []))
        order = fold.train[rng.permutation(len(fold.train))]
        batches = [order[start : start + cfg.batch_size] for start in range(0, len(order), cfg.batch_size)]
        return [idx for idx in batches if len(idx) >= 2]

    def train_epoch(self) -> list[float]:
        """One pass over the training sites in a seeded random order; the batch losses."""
        self.model.train()
        self._current().begin_epoch(self, self.state, self.loop.phase_epoch)
        losses = []
        for idx in self.epoch_batches():
            loss = self.batch_loss(idx)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            losses.append(float(loss.detach()))
        return losses

    # -- phases ------------------------------------------------------------------------
    def _phase_over(self, phase: Phase) -> bool:
        loop = self.loop
        if loop.phase_epoch >= phase.epochs:
            return True
        return phase.early_stopping and loop.bad_epochs >= self.config.patience

    def _next_phase(self, phase: Phase) -> None:
        loop = self.loop
        if phase.early_stopping and loop.best_state is not None:
            self.model.load_state_dict(loop.best_state)
        k = self.phases.index(phase)
        phase.finish(self, self.state, last=k + 1 == len(self.phases))
        nxt = self.phases[k + 1] if k + 1 < len(self.phases) else None
        if nxt is None and self.state.fit_state is not None:
            select_final(self, self.state, self.phases)
        loop.phase, loop.phase_epoch = (nxt.name if nxt is not None else "done"), 0
        if nxt is not None:
            self.opt = nxt.optimizer(self.model, self.config)
            loop.best_val, loop.bad_epochs, loop.best_state = float("inf"), 0, None

    def resume(self) -> None:
        """Load the fold's checkpoint if there is one (logging where the fit resumes)."""
        if self.load_checkpoint():
            log.info("fold %d: resuming at epoch %d (%s phase)", self.fold.index, self.loop.epoch, self.loop.phase)

    def advance(self) -> Phase | None:
        """The phase that runs the next epoch, after ending every phase that is over; None when done."""
        while (phase := self._current()) is not None:
            if not self._phase_over(phase):
                return phase
            self._next_phase(phase)
        return None

    def end_epoch(self, phase: Phase, losses: list[float]) -> dict[str, float]:
        """After an epoch of ``phase`` with training losses ``losses``: validate, record it in the
        history, step the learning-rate schedule, track the best state, write the checkpoint.
        Returns the validation skill (``metrics.skill``)."""
        loop = self.loop
        val_loss, val = self.validate()
        loop.history.append({"epoch": loop.epoch, "phase": phase.name, "lr": self.opt.param_groups[0]["lr"],
                             "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                             **{f"val_{k}": v for k, v in val.items()}})
        if self.sched is not None and phase.scheduled_lr:
            self.sched.step(val_loss)
        if phase.early_stopping and val_loss < loop.best_val - 1e-6:
            loop.best_val, loop.bad_epochs = val_loss, 0
            loop.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            loop.bad_epochs += 1
        loop.epoch += 1
        loop.phase_epoch += 1
        self.save_checkpoint()
        return val

    def finish(self) -> None:
        """Once every phase is done: hold the output range on the training sites, write ``model.pt``."""
        self.model.eval()
        self.model.hold_output_range(self.x[torch.as_tensor(self.fold.train, device=self.device)])
        self.save_checkpoint()
        torch.save(self.model.to_checkpoint(), self.dir / "model.pt")

    @property
    def max_epochs(self) -> int:
        """The most epochs the schedule may take (the progress bars' total)."""
        return sum(p.epochs for p in self.phases)

    def fit(self, progress: bool = True) -> None:
        """Run every phase to its end (resuming from a checkpoint), then write ``model.pt``."""
        self.resume()
        bar = tqdm(total=self.max_epochs, initial=self.loop.epoch, desc=f"fold {self.fold.index}",
                   disable=None if progress else True, leave=False)
        while (phase := self.advance()) is not None:
            losses = phase.run_epoch(self, self.state)
            val = self.end_epoch(phase, losses)
            bar.update(1)
            bar.set_postfix(phase=phase.name, loss=f"{np.mean(losses):.4f}", val_nse_log=f"{val['nse_log']:.3f}", val_nse=f"{val['nse']:.3f}")
        bar.close()
        self.finish()
