"""The folds of a training run: trained one after another here, or side by side in worker processes.

:func:`train_fold` trains one fold and writes what a finished fold leaves in ``folds/foldK/``:
``test_sim.npy``, ``test_p.npy`` (hybrid encoders), the model (written by the trainer or the
baseline) and, last, ``result.json`` — the file :func:`socmap.train.train` takes on ``--resume``
as "this fold is done" (:func:`read_fold`), so a fold stopped at any point never looks finished.

:func:`train_folds` trains the folds still to run: here when the run has one fold worker
(:func:`resolve_fold_workers`), else in a pool of worker processes that each train one fold at a
time. A fold's result does not depend on the process that trains it or on what that process
trained before: every fold seeds its own generators (initial weights ``seed * 1000 + fold``,
batch order ``[seed, fold, epoch]``), so a run on several workers is bit for bit the sequential
run. The caller puts the results together in fold order. With ``fold_batching`` the folds train
batched (:mod:`socmap.fold_batch`): all here with one worker, else dealt into one group of
consecutive folds per worker (:func:`worker_groups`), each group batched in its worker — the same
run again.

Workers are started with ``spawn``, not ``fork``: by now the parent has run torch, and a forked
child inherits torch's OpenMP/BLAS thread state without its threads, which can hang it. A spawned
worker pays one interpreter start and the imports (torch, socmap: about 1.5 s here, the workers
starting together) once for all the folds it trains.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from socmap import metrics
from socmap.data.sites import SiteData
from socmap.encoders import Baseline, get_encoder
from socmap.fsutil import atomic_path, write_atomic
from socmap.provenance import json_default
from socmap.splits import Fold
from socmap.train_config import TrainConfig

if TYPE_CHECKING:
    from socmap.trainer import HybridTrainer

log = logging.getLogger(__name__)


class FoldError(RuntimeError):
    """A fold failed in its worker process; the message names the fold and the worker's error."""


@dataclass
class FoldResult:
    """What a finished fold gives the run: its ``result.json`` record and its test predictions."""

    fold: int
    record: dict  # result.json: sizes, epochs, seconds, held-out skill (metrics.skill)
    sim: np.ndarray  # [n_test, L] simulated SOC (g C m-3) at the test observations
    p: np.ndarray | None  # [n_test, 21] normalised parameters of the test sites (hybrid encoders)


def fold_dir(out: Path, fold: int) -> Path:
    """The folder of fold ``fold`` in the run folder ``out`` (``folds/foldK``)."""
    return Path(out) / "folds" / f"fold{fold}"


def fold_threads(config: TrainConfig, device: torch.device) -> int | None:
    """Torch threads of a fold's training: ``threads``, or one on a CPU (None: torch's default).

    Mini-batches of ~128 sites gain nothing from more, and on a busy machine torch's threads wait
    on each other (5-fold retrieval 1502 s on 2 threads vs 119 s on 1; benchmarks/train.py, issue 17).
    """
    return config.threads or (1 if device.type == "cpu" else None)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


#: Environment variable giving the default of ``fold_workers`` when a config leaves it unset.
FOLD_WORKERS_ENV = "SOCMAP_FOLD_WORKERS"


def resolve_fold_workers(config: TrainConfig, n_folds: int, device: torch.device) -> int:
    """Worker processes for ``n_folds`` folds: ``fold_workers`` if set, else one per usable core
    (:func:`usable_cores` ÷ :func:`fold_threads`) unless :data:`FOLD_WORKERS_ENV` is set, and one on a GPU (the folds would queue on it);
    never more than the folds, never fewer than one."""
    if config.fold_workers is not None:
        return max(1, min(config.fold_workers, n_folds))
    env = os.environ.get(FOLD_WORKERS_ENV, "").strip()
    if env:  # a machine-wide default (a shared node, a test suite that already runs in parallel)
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"{FOLD_WORKERS_ENV}={env!r} is not a whole number >= 1: unset it or give e.g. "
                             f"{FOLD_WORKERS_ENV}=1")
        return max(1, min(int(env), n_folds))
    if device.type != "cpu":
        return 1
    return max(1, min(n_folds, usable_cores() // (fold_threads(config, device) or 1)))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.save adds no ".npy"
        np.save(f, array)


def train_fold(config: TrainConfig, data: SiteData, fold: Fold, directory: Path, device: torch.device,
               progress: bool = True) -> FoldResult:
    """Train ``fold`` into ``directory`` and write its test predictions and, last, ``result.json``."""
    from socmap.trainer import HybridTrainer

    start = time.perf_counter()
    encoder = get_encoder(config.encoder)
    if isinstance(encoder, Baseline):
        sim = encoder.fit_fold(config, data, fold, directory, device, progress)
        return _write_result(data, fold, directory, sim, None, {}, start)
    trainer = HybridTrainer(config, data, fold, directory, device)
    trainer.fit(progress=progress)
    return hybrid_fold_result(trainer, start)


def hybrid_fold_result(trainer: HybridTrainer, start: float) -> FoldResult:
    """The result of the fitted ``trainer`` (:class:`socmap.trainer.HybridTrainer`), its test
    predictions and ``result.json`` written; ``start`` is the ``time.perf_counter()`` the fold's
    ``seconds`` count from."""
    fold, directory = trainer.fold, trainer.dir
    sim, p = trainer.predict(fold.test)
    _save_npy(directory / "test_p.npy", p)
    extra: dict = {"epochs": trainer.epoch}
    if trainer.edges_kept is not None:
        extra["edges_kept"] = trainer.edges_kept
    if trainer.selection is not None:
        extra["selection"] = trainer.selection
    if trainer.model.anoxia is not None:  # the learned wetland anoxia of this fold
        extra["anoxia"] = trainer.model.anoxia.summary()
    return _write_result(trainer.data, fold, directory, sim, p, extra, start)


def _write_result(data: SiteData, fold: Fold, directory: Path, sim: np.ndarray, p: np.ndarray | None, extra: dict,
                  start: float) -> FoldResult:
    """Write ``test_sim.npy`` and, last, ``result.json`` (``extra``: epochs and what the fit kept)."""
    _save_npy(directory / "test_sim.npy", sim)
    record = {
        "fold": fold.index, "n_train": len(fold.train), "n_val": len(fold.val), "n_test": len(fold.test),
        "epochs": None, **extra, "seconds": time.perf_counter() - start,
        **metrics.skill(data.soc_g_m3[fold.test], sim),
    }
    write_atomic(directory / "result.json", json.dumps(record, indent=2, default=json_default))
    return FoldResult(fold.index, record, sim, p)


def train_folds_batched(config: TrainConfig, data: SiteData, folds: list[Fold], out: Path, device: torch.device,
                        progress: bool = True, log_done: bool = True) -> list[FoldResult]:
    """Train the hybrid ``folds`` into ``out/folds/foldK`` side by side in this process, their
    mini-batch steps batched (:func:`socmap.fold_batch.fit_batched`); their results in the order of
    ``folds``. Each fold writes what :func:`train_fold` writes as soon as it is done; its
    ``seconds`` are the wall time from the start of the batched training to its end (the folds
    share that time)."""
    from socmap.clm5.operators import prepare_forcing
    from socmap.fold_batch import fit_batched
    from socmap.trainer import HybridTrainer, SiteRows

    start = time.perf_counter()
    forcing = SiteRows(prepare_forcing(data.forcing.to(torch.float64, device)))  # θ-independent: once for all folds
    trainers = [HybridTrainer(config, data, fold, fold_dir(out, fold.index), device, forcing=forcing) for fold in folds]
    results: dict[int, FoldResult] = {}

    def done(trainer: HybridTrainer) -> None:
        results[trainer.fold.index] = hybrid_fold_result(trainer, start)
        if log_done:  # a worker's results are logged by the parent as they arrive
            log_fold_done(results[trainer.fold.index])

    log.info("training %d folds batched in one process", len(folds))
    fit_batched(trainers, progress, done)
    return [results[fold.index] for fold in folds]


def read_fold(directory: Path, fold: int) -> FoldResult:
    """A finished fold's result as :func:`train_fold` wrote it into ``directory``."""
    p_file = directory / "test_p.npy"
    return FoldResult(fold, json.loads((directory / "result.json").read_text()), np.load(directory / "test_sim.npy"),
                      np.load(p_file) if p_file.exists() else None)


def log_fold_done(result: FoldResult) -> None:
    """Log a finished fold's held-out skill."""
    log.info("fold %d: test NSE %.3f, NSE(log) %.3f", result.fold, result.record["nse"], result.record["nse_log"])


def train_folds(config: TrainConfig, data: SiteData, folds: list[Fold], out: Path, device: torch.device,
                progress: bool = True) -> list[FoldResult]:
    """Train ``folds`` into ``out/folds/foldK`` (:func:`train_fold`); their results in the order of ``folds``.

    With one worker (:func:`resolve_fold_workers`) the folds train here, each with its epoch
    bar. With more, worker processes train them side by side on :func:`fold_threads` torch
    threads each, under one bar over the folds; their log records come through this process's
    handlers. A fold that fails stops the run: the workers are ended and a :class:`FoldError`
    names the fold and its error; folds that had finished keep their ``result.json`` (a
    ``--resume`` skips them), the others have none. Ctrl-C ends the workers too.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    if not folds:
        return []
    workers = resolve_fold_workers(config, len(folds), device)
    with logging_redirect_tqdm():  # log lines above the bars, not written into them
        if workers > 1:
            return _train_in_workers(config, data, folds, Path(out).resolve(), device, workers, progress)
        if config.batches_folds:  # every fold in this process, their mini-batch steps solved together
            return train_folds_batched(config, data, folds, Path(out), device, progress)
        results = []
        for fold in folds:
            results.append(train_fold(config, data, fold, fold_dir(out, fold.index), device, progress))
            log_fold_done(results[-1])
        return results


def worker_groups(config: TrainConfig, folds: list[Fold], workers: int) -> list[list[Fold]]:
    """The tasks of the worker processes: one fold each, or with ``fold_batching`` the folds dealt
    into ``workers`` groups of consecutive folds (sizes differing by at most one, the larger first),
    each trained batched in one worker (:func:`train_folds_batched`)."""
    if not config.batches_folds:
        return [[fold] for fold in folds]
    size, extra = divmod(len(folds), workers)
    bounds = np.cumsum([0] + [size + (k < extra) for k in range(workers)])
    return [folds[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


# ----------------------------------------------------------------------------------------
# worker processes
# ----------------------------------------------------------------------------------------

_WORKER_DATA: SiteData | None = None  # the run's sites, unpickled once per worker process


def _init_worker(data_file: str, threads: int | None, log_queue, log_level: int) -> None:
    global _WORKER_DATA
    _WORKER_DATA = pickle.loads(Path(data_file).read_bytes())
    if threads:
        torch.set_num_threads(threads)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(log_queue)]
    root.setLevel(log_level)


def _train_in_worker(config: TrainConfig, folds: list[Fold], out: str, device: str) -> list[FoldResult]:
    if config.batches_folds:
        return train_folds_batched(config, _WORKER_DATA, folds, Path(out), torch.device(device), progress=False,
                                   log_done=False)
    return [train_fold(config, _WORKER_DATA, fold, fold_dir(Path(out), fold.index), torch.device(device), progress=False)
            for fold in folds]


class _ToLocalLoggers(logging.Handler):
    """Hands a worker's log record to the logger of the same name here (its handlers decide)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while workers start: they inherit it, so Ctrl-C reaches this process alone,
    which ends them (no half-started worker prints a KeyboardInterrupt traceback)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _end_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the worker processes (a fold mid-training keeps
    only its checkpoint, no ``result.json``)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # public only from Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(10)


def _train_in_workers(config: TrainConfig, data: SiteData, folds: list[Fold], out: Path, device: torch.device,
                      workers: int, progress: bool) -> list[FoldResult]:
    import multiprocessing
    import tempfile

    context = multiprocessing.get_context("spawn")
    log_queue = context.Queue()
    listener = logging.handlers.QueueListener(log_queue, _ToLocalLoggers())
    level = logging.getLogger("socmap").getEffectiveLevel()
    results: dict[int, FoldResult] = {}
    # the sites go to the workers through a file: passed with the process (17 MB for the default
    # twin), a worker that dies while starting would leave the parent blocked writing them to it
    with tempfile.TemporaryDirectory(prefix="socmap-folds-") as tmp:
        data_file = Path(tmp) / "sites.pkl"
        data_file.write_bytes(pickle.dumps(data, pickle.HIGHEST_PROTOCOL))
        listener.start()
        started = time.perf_counter()
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                   initargs=(str(data_file), fold_threads(config, device), log_queue, level))
        groups = worker_groups(config, folds, workers)
        log.info("training %d folds in %d worker processes%s", len(folds), workers,
                 " (" + ", ".join("+".join(str(f.index) for f in g) for g in groups) + " batched)" if config.batches_folds else "")
        bar = tqdm(total=len(folds), desc=f"folds ({workers} workers)", unit="fold", disable=None if progress else True)
        try:
            with _sigint_ignored():  # the workers start on submit
                pending = {pool.submit(_train_in_worker, config, group, str(out), str(device)): group for group in groups}
            log.debug("%d fold workers started in %.1f s", workers, time.perf_counter() - started)
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: pending[f][0].index):
                    group = pending.pop(future)
                    _raise_for(future.exception(), group, out)
                    for result in future.result():
                        results[result.fold] = result
                        log_fold_done(result)
                    bar.update(len(group))
        except BaseException:
            _end_workers(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            listener.stop()
    return [results[fold.index] for fold in folds]


def _raise_for(error: BaseException | None, group: list[Fold], out: Path) -> None:
    """A :class:`FoldError` naming the folds ``group`` of one worker task and what the worker raised
    (nothing when it finished)."""
    which = f"fold {group[0].index}" if len(group) == 1 else "folds " + ", ".join(str(f.index) for f in group)
    where = fold_dir(out, group[0].index) if len(group) == 1 else Path(out) / "folds"
    if isinstance(error, BrokenProcessPool):
        raise FoldError(f"{which}: a worker process died (killed, out of memory, or it failed to start: a "
                        "script that calls socmap.train.train must do so under `if __name__ == '__main__':`, since "
                        "worker processes import the script); folds without result.json are re-trained by "
                        "`socmap train --resume`, or set fold_workers: 1") from error
    if error is not None:
        verb = "failed in its worker process" if len(group) == 1 else "(trained batched together) failed in their worker process"
        raise FoldError(f"{which} {verb} ({where}): "
                        f"{type(error).__name__}: {error}") from error
