"""The phases of a hybrid fit: fit, then (KAN) L-BFGS polish, sparsify + prune, refit.

After its minibatch fit a KAN is polished with full-batch L-BFGS, sparsified and refitted.
Correlated covariates (precipitation, NPP, pH) make long shallow valleys in the loss that Adam
crawls along, so the fit leaves a relationship split between them; L-BFGS follows the valley to
where the data put the signal, the reweighted L1 then moves each relationship onto one edge, and
the pruned network is refitted without the penalty (a relaxed lasso). An MLP only fits.

A schedule is a list of :class:`Phase` objects that the trainer
(:class:`socmap.trainer.HybridTrainer`) runs in order; each phase says how many epochs it may
take, whether it stops early, which optimiser it uses and what it adds to an epoch or the loss.
What the phases hand each other (L1 weights, pruned edge counts, the fit's model) lives in a
:class:`ScheduleState` that is checkpointed with the trainer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import ClassVar, Protocol

import numpy as np
import torch

from socmap.data.sites import SiteData
from socmap.nets.hybrid import HybridModel
from socmap.splits import Fold
from socmap.train_config import TrainConfig

log = logging.getLogger(__name__)


class Fitting(Protocol):
    """What a phase uses of the trainer running it."""

    config: TrainConfig
    data: SiteData
    fold: Fold
    model: HybridModel
    device: torch.device

    def train_x(self) -> torch.Tensor: ...  # scaled covariates of the training sites [n_train, C]

    def train_epoch(self) -> list[float]: ...  # one minibatch epoch; the batch losses

    def batch_loss(self, idx: np.ndarray) -> torch.Tensor: ...

    def val_loss(self) -> float: ...


@dataclass
class ScheduleState:
    """What phases pass on: sparsify's L1 weights and kept edges, the fit's model, the final choice."""

    l1_weights: list[torch.Tensor] | None = None
    edges_kept: list[int] | None = None
    fit_state: dict | None = None  # the fit's model, kept to compare with the final one
    fit_val_loss: float = float("inf")
    selection: dict | None = None

    def to_dict(self) -> dict:
        """The fields by name, uncopied (for the checkpoint)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Phase:
    """One phase of at most ``epochs`` epochs (the defaults: a plain minibatch phase)."""

    name: ClassVar[str]
    #: stop after ``patience`` epochs without a better validation loss and end on the best state
    early_stopping: ClassVar[bool] = False
    #: the learning-rate schedule (``lr_schedule``) steps in this phase
    scheduled_lr: ClassVar[bool] = False
    lr_divisor: ClassVar[float] = 1.0
    #: an epoch is the trainer's mini-batch pass (``run_epoch`` = ``train_epoch``), which fold
    #: batching (socmap/fold_batch.py) runs for several folds at once
    minibatch: ClassVar[bool] = True

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def optimizer(self, model: HybridModel, config: TrainConfig) -> torch.optim.Optimizer:
        """A fresh AdamW for this phase (same parameter groups in every phase)."""
        # foreach: one multi-tensor update per step instead of a loop over the ~20 parameter tensors
        # (torch uses it by default only on CUDA; same values on a CPU, a few % of an epoch faster)
        return torch.optim.AdamW(model.parameters(), lr=config.lr / self.lr_divisor, weight_decay=config.weight_decay,
                                 foreach=True)

    def begin_epoch(self, fit: Fitting, state: ScheduleState, phase_epoch: int) -> None:
        """Called in train mode before the batches of epoch ``phase_epoch`` of this phase."""

    def run_epoch(self, fit: Fitting, state: ScheduleState) -> list[float]:
        """One epoch; returns its training losses."""
        return fit.train_epoch()

    def penalty(self, fit: Fitting, state: ScheduleState, x: torch.Tensor) -> torch.Tensor | None:
        """Extra loss of this phase for a batch with physical covariates ``x`` [B, C], or None."""
        return None

    def finish(self, fit: Fitting, state: ScheduleState, last: bool) -> None:
        """Called once the phase is over (after an early-stopping phase restored its best state)."""


class Fit(Phase):
    """The minibatch fit; a KAN refits its spline grids to the data in its first epochs."""

    name = "fit"
    early_stopping = True
    scheduled_lr = True

    def begin_epoch(self, fit: Fitting, state: ScheduleState, phase_epoch: int) -> None:
        if fit.model.is_kan and phase_epoch < fit.config.grid_update_epochs:
            with torch.no_grad():
                fit.model.encoder.update_grid(fit.train_x())

    def finish(self, fit: Fitting, state: ScheduleState, last: bool) -> None:
        if not last:
            state.fit_state = {k: v.detach().clone() for k, v in fit.model.state_dict().items()}
            state.fit_val_loss = fit.val_loss()


class Polish(Phase):
    """Full-batch L-BFGS on the training sites, recorded as one epoch."""

    name = "polish"
    minibatch = False  # full-batch L-BFGS, per fold

    def __init__(self, iterations: int) -> None:
        super().__init__(epochs=1)
        self.iterations = iterations

    def run_epoch(self, fit: Fitting, state: ScheduleState) -> list[float]:
        check = fit.config.polish_check_iters
        if check and check < self.iterations:
            return [monitored_polish(fit, self.iterations, check)]
        return [lbfgs_polish(fit, self.iterations)]


class Sparsify(Phase):
    """Reweighted-L1 sparsification (weights renewed every 10 epochs), then pruning of weak edges.

    Sparsifying worsens the fit on purpose, so it never stops early; it runs with a gentler step
    while the penalty drives edges to zero.
    """

    name = "sparsify"
    lr_divisor = 3.0

    def begin_epoch(self, fit: Fitting, state: ScheduleState, phase_epoch: int) -> None:
        if phase_epoch % 10 == 0:
            state.l1_weights = fit.model.encoder.adaptive_l1_weights(fit.train_x())

    def penalty(self, fit: Fitting, state: ScheduleState, x: torch.Tensor) -> torch.Tensor | None:
        weight = fit.config.kan_sparsify_l1
        if not weight:
            return None
        return weight * fit.model.encoder.weighted_l1(fit.model.scaler(x), state.l1_weights)

    def finish(self, fit: Fitting, state: ScheduleState, last: bool) -> None:
        with torch.no_grad():
            state.edges_kept = fit.model.encoder.prune(fit.train_x(), edge_quantile=None,
                                                       threshold=fit.config.kan_prune_threshold)
        log.info("fold %d: pruned to %s edges", fit.fold.index, state.edges_kept)


class Refit(Phase):
    """The pruned network refitted without the sparsity penalty (a relaxed lasso)."""

    name = "refit"
    early_stopping = True


def make_schedule(config: TrainConfig, is_kan: bool) -> list[Phase]:
    """The phases of one fold, in order: fit, and for a KAN polish, sparsify and refit when enabled."""
    phases: list[Phase] = [Fit(config.epochs)]
    if is_kan and config.kan_polish_iters > 0:
        phases.append(Polish(config.kan_polish_iters))
    if is_kan and config.kan_sparsify_epochs > 0:
        phases += [Sparsify(config.kan_sparsify_epochs), Refit(config.kan_refit_epochs)]
    return phases


def lbfgs_polish(fit: Fitting, iterations: int) -> float:
    """Full-batch L-BFGS on the training sites; returns the training loss after it.

    Deterministic, so a resume redoes it identically; the gradient is accumulated over chunks of
    2,048 sites weighted by their share of the observations.
    """
    idx = fit.fold.train
    chunks = [idx[i : i + 2048] for i in range(0, len(idx), 2048)]
    n_obs = [int(np.isfinite(fit.data.soc_g_m3[c]).sum()) for c in chunks]
    weights = [n / max(sum(n_obs), 1) for n in n_obs]
    opt = torch.optim.LBFGS(fit.model.parameters(), lr=1.0, max_iter=iterations, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64, device=fit.device)
        for c, w in zip(chunks, weights):
            loss = w * fit.batch_loss(c)
            loss.backward()
            total = total + loss.detach()
        return total

    fit.model.train()
    opt.step(closure)
    with torch.no_grad():
        return float(sum(w * fit.batch_loss(c) for c, w in zip(chunks, weights)))


def monitored_polish(fit: Fitting, iterations: int, check: int, patience: int = 2) -> float:
    """L-BFGS polish in segments of ``check`` iterations, validated after each; ends on the best state.

    On noisy real profiles an unmonitored polish follows the training loss into states that
    validate worse than the fit it started from (docs/model.md §7.4): the segments stop after
    ``patience`` segments without a better validation loss, and the state with the lowest
    validation loss, the starting one included, is kept. Returns the training loss of the last
    segment.
    """
    best_val = fit.val_loss()
    best = {k: v.detach().clone() for k, v in fit.model.state_dict().items()}
    bad, done, loss = 0, 0, float("nan")
    while done < iterations and bad < patience:
        step = min(check, iterations - done)
        loss = lbfgs_polish(fit, step)
        done += step
        val = fit.val_loss()
        if np.isfinite(val) and val < best_val - 1e-6:
            best_val, bad = val, 0
            best = {k: v.detach().clone() for k, v in fit.model.state_dict().items()}
        else:
            bad += 1
    fit.model.load_state_dict(best)
    log.info("fold %d: polish kept the state with validation loss %.4g after %d L-BFGS iterations",
             fit.fold.index, best_val, done)
    return loss


def select_final(fit: Fitting, state: ScheduleState, phases: list[Phase]) -> None:
    """Keep the polished/pruned model only if it validates no worse than the plain fit.

    On the twin it validates better, but on noisy real profiles with no sparse truth the later
    phases can overfit, and then the fit's model is the better one.
    """
    final_val = fit.val_loss()
    state.selection = {"fit_val_loss": state.fit_val_loss, "final_val_loss": final_val,
                       "kept": "final" if final_val <= state.fit_val_loss else "fit"}
    if final_val > state.fit_val_loss:
        fit.model.load_state_dict(state.fit_state)
        log.info("fold %d: kept the plain fit (validation loss %.4g < %.4g after %s)", fit.fold.index,
                 state.fit_val_loss, final_val, "+".join(p.name for p in phases[1:]))
