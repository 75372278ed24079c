"""Fold batching: folds of a run trained side by side in one process, their mini-batch steps solved together.

At a mini-batch of 128 sites an epoch is bound by the number of operations, not by their size
(README, "Synthetic retrieval test": the solver's forward and adjoint sweeps, the prepared-forcing
gather and AdamW are each a few hundred small operations per batch). With ``fold_batching`` the
folds advance epoch by epoch side by side, and each step of their mini-batch epochs makes **one**
forcing gather, one steady-state solve (forward and adjoint) and one observation-operator call on
the folds' batches put together (F × 128 sites), while each fold keeps its own model, encoder call,
loss, optimiser, phase, early stopping and checkpoint (:func:`batched_losses`).

Why the result is the sequential run's: every site of the solver is independent of the others
(docs/model.md §2.3: the matrix model is solved column by column; the structured sweeps are
elementwise over sites), so a fold's sites give the same values in a batch of F × 128 as in a
batch of 128; the summed loss ``Σ_f loss_f`` has the gradient of ``loss_f`` in fold ``f``'s
parameters alone (no parameter is shared); each fold draws its batches from its own generator
(:meth:`socmap.trainer.HybridTrainer.epoch_batches`, seeded by ``[seed, fold, epoch]``) and steps
its own AdamW. A fold's epochs run in the same order with the same data as in
:meth:`~socmap.trainer.HybridTrainer.fit`; only the folds' epochs interleave. The one global
state they would share is torch's default generator, which a hybrid fit draws from only at
initialisation (reseeded per fold) and in MLP dropout — so ``fold_batching`` refuses
``dropout > 0`` (:class:`socmap.train_config.TrainConfig`). Bit for bit holds for the batches that
:func:`solve_groups` puts together, on one CPU thread (a fold's default): on several threads torch
splits a kernel's elements between them by the tensor's size, which can move the last bit of a
float64 as the SIMD tails do.

Folds in a phase that is not a mini-batch pass (the KAN's full-batch L-BFGS polish,
:class:`socmap.phases.Polish`) run it on their own while the others go on; a fold whose phase
stopped early simply leaves the batch (:func:`fit_batched`). Through
:func:`socmap.fold_runner.train_folds_batched` each fold writes what :func:`socmap.fold_runner.train_fold`
writes (checkpoint every epoch, ``model.pt``, test predictions, ``result.json`` once it is done), so
``--resume`` works the same way. With several fold workers each worker process trains one group of
folds so (:func:`socmap.fold_runner.worker_groups`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack

import numpy as np
import torch
from tqdm.auto import tqdm

from socmap.phases import Phase
from socmap.trainer import HybridTrainer

log = logging.getLogger(__name__)


def batched_losses(group: list[tuple[HybridTrainer, np.ndarray]]) -> list[torch.Tensor]:
    """The training loss of every fold's batch, the folds' sites solved in one steady-state call.

    Parameters
    ----------
    group : ``(trainer, idx)`` per fold: the fold's trainer (all of one run: same data, prepared
        forcing and model spec) and the site indices of its batch ``idx`` [B_f].

    Returns
    -------
    One scalar loss per fold (:meth:`~socmap.trainer.HybridTrainer.objective`), each a function
    of its own fold's parameters only; the same values as ``trainer.batch_loss(idx)``.
    """
    with ExitStack() as stack:  # each KAN fold's forward pass and regularisers share its layers' basis
        for trainer, _ in group:
            if trainer.model.is_kan:
                stack.enter_context(trainer.model.encoder.shared_basis())
        return _batched_losses(group)


def _batched_losses(group: list[tuple[HybridTrainer, np.ndarray]]) -> list[torch.Tensor]:
    lead = group[0][0]
    ts = [torch.as_tensor(idx, device=lead.device) for _, idx in group]
    # HybridModel.simulate with the encoder (and the learned anoxia) per fold and the forcing, the
    # solve and the observation operator (HybridModel.solve_soc) once for every fold's sites
    encoded = [trainer.model.encode(trainer.x[t]) for (trainer, _), t in zip(group, ts)]
    oxygen = [trainer.model.o_scalar(trainer.wetland[t]) for (trainer, _), t in zip(group, ts)]
    t_all = torch.cat(ts)
    # solve_soc's column forcing only reads the spec (saturated wetlands, whether anoxia is learned),
    # the same in every fold; its wetland terms leave upland sites (w = 0) exact, whichever batch they are in
    sims = lead.model.solve_soc(torch.cat([p_full for p_full, _, _ in encoded]), lead.forcing.subset(t_all),
                                lead.depth[t_all], lead.wetland[t_all],
                                None if oxygen[0] is None else torch.cat(oxygen)).split([len(t) for t in ts])
    return [trainer.objective(t, sim, p_sub, u)
            for (trainer, _), t, sim, (_, p_sub, u) in zip(group, ts, sims, encoded)]


def batched_epoch(running: list[tuple[HybridTrainer, Phase]]) -> dict[int, list[float]]:
    """One mini-batch epoch of every fold in ``running`` (``(trainer, its current phase)``), the
    folds' ``k``-th batches taken in one step (:func:`batched_losses`); each fold's batch losses by
    fold index. A fold with fewer batches than the others leaves the last steps."""
    batches = {}
    for trainer, phase in running:  # as HybridTrainer.train_epoch, fold by fold
        trainer.model.train()
        phase.begin_epoch(trainer, trainer.state, trainer.loop.phase_epoch)
        batches[trainer.fold.index] = trainer.epoch_batches()
    losses: dict[int, list[float]] = {trainer.fold.index: [] for trainer, _ in running}
    for step in range(max(len(b) for b in batches.values())):
        group = [(trainer, batches[trainer.fold.index][step]) for trainer, _ in running
                 if step < len(batches[trainer.fold.index])]
        calls = solve_groups(group)
        fold_losses = [loss for call in calls for loss in batched_losses(call)]
        for trainer, _ in group:
            trainer.opt.zero_grad(set_to_none=True)
        torch.autograd.backward(fold_losses)  # = backward of their sum: each fold gets its own gradient
        for (trainer, _), loss in zip((member for call in calls for member in call), fold_losses):
            trainer.opt.step()
            losses[trainer.fold.index].append(float(loss.detach()))
    return losses


#: Batches whose size is a multiple of this many sites can be put side by side in one solve and give
#: every site the values it has alone (see :func:`solve_groups`).
ALIGN_SITES = 64


def solve_groups(group: list[tuple[HybridTrainer, np.ndarray]]) -> list[list[tuple[HybridTrainer, np.ndarray]]]:
    """``group`` (one batch per fold) split into the solver calls that give each fold's sites
    exactly the values of its own call: the batches of a multiple of :data:`ALIGN_SITES` sites
    together with at most one other batch, last; every further batch alone.

    Why: torch's CPU kernels compute the elements of a tensor in SIMD vectors and the last few
    (fewer than a vector's worth, per kernel call) one by one, and the two ways may differ in the
    last bit of a float64 (measured: 1e-15 relative in the operators of batches of 7–9 sites). A
    site gets the same bits in a combined call as alone if it lies at the same place relative to
    the vectors: after batches of a multiple of 64 sites (a multiple of every SIMD width, AVX-512
    included, in every layout the solver uses: sites innermost or ``[B, 21]``) it does, and the
    elements done one by one are those at the very end in both calls. So the full batches of the
    default 128 sites all go in one call; an epoch's last, partial batches mostly go alone.
    """
    aligned = [member for member in group if len(member[1]) % ALIGN_SITES == 0]
    rest = [member for member in group if len(member[1]) % ALIGN_SITES != 0]
    if not rest:
        return [aligned]
    return [aligned + rest[:1]] + [[member] for member in rest[1:]]


def fit_batched(trainers: list[HybridTrainer], progress: bool = True,
                on_done: Callable[[HybridTrainer], None] | None = None) -> None:
    """Fit the ``trainers`` (folds of one run, sharing one :class:`~socmap.trainer.SiteRows`) side by
    side: what :meth:`~socmap.trainer.HybridTrainer.fit` does for each, their mini-batch epochs
    batched (:func:`batched_epoch`).

    Each trainer resumes from its checkpoint, if any, and is finished (``model.pt``) as soon as its
    last phase is over, then handed to ``on_done`` (the caller writes the fold's results).
    """
    for trainer in trainers:
        trainer.resume()
    bar = tqdm(total=sum(t.max_epochs for t in trainers), initial=sum(t.epoch for t in trainers),
               desc=f"{len(trainers)} folds (batched)", unit="epoch", disable=None if progress else True)
    active = trainers
    while active:
        running: list[tuple[HybridTrainer, Phase]] = []
        for trainer in active:
            phase = trainer.advance()
            if phase is None:
                trainer.finish()
                if on_done is not None:
                    on_done(trainer)
            else:
                running.append((trainer, phase))
        active = [trainer for trainer, _ in running]
        minibatch = [(trainer, phase) for trainer, phase in running if phase.minibatch]
        losses = batched_epoch(minibatch) if minibatch else {}
        for trainer, phase in running:
            if not phase.minibatch:
                losses[trainer.fold.index] = phase.run_epoch(trainer, trainer.state)
        for trainer, phase in running:
            trainer.end_epoch(phase, losses[trainer.fold.index])
            bar.update(1)
        if running:
            bar.set_postfix(folds=len(running), phases="+".join(sorted({p.name for _, p in running})))
    bar.close()
