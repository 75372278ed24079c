"""Per-epoch checkpoints of a hybrid fit, so that an interrupted fold resumes exactly.

A checkpoint (``folds/foldK/checkpoint.pt``) holds the model, the optimiser and learning-rate
scheduler states, the epoch loop's position (:class:`LoopState`), the phase schedule's
hand-overs (:class:`~socmap.phases.ScheduleState`) and the torch RNG state; it is written to a
temporary file and renamed, so a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from socmap.fsutil import atomic_path
from socmap.phases import ScheduleState

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class LoopState:
    """Where the epoch loop is: epochs run, the phase and its epoch, early-stopping bookkeeping, history."""

    epoch: int = 0
    phase: str = "fit"  # a phase name, or "done"
    phase_epoch: int = 0
    best_val: float = float("inf")
    bad_epochs: int = 0
    best_state: dict | None = None  # the best-validating model of an early-stopping phase
    history: list[dict] = field(default_factory=list)  # one record per epoch


def save_checkpoint(path: Path, loop: LoopState, schedule: ScheduleState, model: torch.nn.Module,
                    opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.ReduceLROnPlateau | None) -> None:
    """Write the checkpoint ``path`` atomically."""
    state = {
        "epoch": loop.epoch, "model": model.state_dict(), "opt": opt.state_dict(),
        "sched": sched.state_dict() if sched is not None else None,
        "best_val": loop.best_val, "bad_epochs": loop.bad_epochs, "best_state": loop.best_state,
        "history": loop.history, "torch_rng": torch.get_rng_state(),
        "phase": loop.phase, "phase_epoch": loop.phase_epoch, **schedule.to_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: Path, device: torch.device) -> tuple[dict, LoopState, ScheduleState] | None:
    """The raw checkpoint (model, optimiser, scheduler and RNG states) with its loop and schedule state; None if absent."""
    if not path.exists():
        return None
    state = torch.load(path, map_location=device, weights_only=False)
    loop = LoopState(
        epoch=state["epoch"], phase=state.get("phase", "fit"), phase_epoch=state.get("phase_epoch", state["epoch"]),
        best_val=state["best_val"], bad_epochs=state["bad_epochs"], best_state=state["best_state"],
        history=state["history"],
    )
    schedule = ScheduleState(
        l1_weights=state.get("l1_weights"), edges_kept=state.get("edges_kept"), fit_state=state.get("fit_state"),
        fit_val_loss=state.get("fit_val_loss", float("inf")), selection=state.get("selection"),
    )
    return state, loop, schedule
