"""Dask scheduling for ``socmap map``: a local cluster sized to the machine, or an existing one."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

_SCHEMES = ("tcp://", "tls://", "ws://", "wss://", "inproc://", "ucx://")


class SchedulerError(RuntimeError):
    """A scheduler address that is malformed, unreachable or has no workers (message for the user)."""


def check_scheduler_address(scheduler: str | None) -> None:
    """Raise :class:`SchedulerError` unless ``scheduler`` is None, ``"synchronous"`` or a Dask address."""
    if scheduler and scheduler != "synchronous" and not scheduler.startswith(_SCHEMES):
        raise SchedulerError(f"--scheduler {scheduler!r} is not a Dask scheduler address (like tcp://host:8786) "
                             "nor 'synchronous'")


#: How local workers start: forked from a server process that imported torch and the solver once,
#: instead of each spawned worker importing them (~1.5 s of CPU per worker, paid again by every map
#: in the same process); the fork server starts once per process and is reused by later clusters.
WORKER_START_METHOD = "forkserver"
#: What the fork server imports before it forks workers (besides distributed's own list).
WORKER_PRELOAD = ("torch", "socmap.cells", "socmap.clm5.solver", "socmap.mapping")


def _preload_worker_imports() -> None:
    """Make the fork server import :data:`WORKER_PRELOAD` (and distributed) before it first starts."""
    from distributed.utils import get_mp_context

    ctx = get_mp_context()  # sets distributed's own (smaller) preload list the first time
    if WORKER_START_METHOD == "forkserver":  # takes effect when the fork server first starts
        ctx.set_forkserver_preload(["distributed", *WORKER_PRELOAD])


def connect(scheduler: str | None, workers: int | None, n_tasks: int, timeout_s: float = 5.0):
    """``(client, cluster)`` for a scheduler address, a new LocalCluster (``None``) or ``(None, None)``
    for ``"synchronous"``.

    A LocalCluster has ``workers`` processes (default: the CPU count, at most ``n_tasks``) with
    one thread each. An unreachable address raises :class:`SchedulerError` within ``timeout_s``.
    """
    if scheduler == "synchronous":
        return None, None
    import dask
    from distributed import Client, LocalCluster

    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core", "distributed.http.proxy",
                 "distributed.batched", "distributed.worker"):
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger(name).setLevel(logging.WARNING)

    if scheduler:
        check_scheduler_address(scheduler)
        try:
            with dask.config.set({"distributed.comm.timeouts.connect": f"{timeout_s}s"}):
                client = Client(scheduler, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError) as exc:
            raise SchedulerError(f"cannot reach the Dask scheduler at {scheduler} within {timeout_s:g} s: {exc}") from exc
        if not client.scheduler_info().get("workers"):
            try:
                client.wait_for_workers(1, timeout=timeout_s)
            except TimeoutError as exc:
                client.close()
                raise SchedulerError(f"the Dask scheduler at {scheduler} has no workers") from exc
        return client, None
    n = workers or os.cpu_count() or 1
    n = max(1, min(n, n_tasks))
    from socmap.allocator import worker_environ

    # set before each worker process starts (glibc reads it only then); a variable already in the
    # environment takes precedence (distributed's rule for pre-spawn-environ)
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **worker_environ()}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ,
                          "distributed.worker.multiprocessing-method": WORKER_START_METHOD}):
        _preload_worker_imports()
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR)
    client = Client(cluster)
    return client, cluster
