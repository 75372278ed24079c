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
WORKER_PRELOAD = ("torch", "socmap.cells", "socmap.clm5.solver", "socmap.warm_kernels", "socmap.mapping")


def _preload_worker_imports() -> None:
    """Make the fork server import :data:`WORKER_PRELOAD` (and distributed) before it first starts."""
    from distributed.utils import get_mp_context

    ctx = get_mp_context()  # sets distributed's own (smaller) preload list the first time
    if WORKER_START_METHOD == "forkserver":  # takes effect when the fork server first starts
        ctx.set_forkserver_preload(["distributed", *WORKER_PRELOAD])


def _worker_spawn_environ() -> dict[str, str]:
    """What distributed's Nanny puts in ``os.environ`` before it starts a worker (its
    ``pre-spawn-environ`` rule: a variable already set wins; ``PYTHONHASHSEED`` defaults to its
    fixed seed) with socmap's allocator settings (:func:`socmap.allocator.worker_environ`)."""
    import dask

    from socmap.allocator import worker_environ

    config = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **worker_environ()}
    env = {k: os.environ.get(k, str(v)) for k, v in config.items() if v is not None}
    if env.get("PYTHONHASHSEED") in (None, "0"):
        env["PYTHONHASHSEED"] = "6640"
    return env


def start_worker_server(scheduler: str | None) -> bool:
    """Start the local workers' fork server now, in the background; False where there is none to start.

    Why: the server imports torch and the solver (:data:`WORKER_PRELOAD`, ~1.5 s of CPU) before it
    forks the first worker. Started at the beginning of a map, those imports overlap the driver's
    own work (opening the run and the cube) instead of delaying :func:`connect`. The server keeps
    the environment it starts with and hands it to every worker it forks, so it is started with
    the one the Nanny would set (:func:`_worker_spawn_environ`). A no-op (False) for an existing
    cluster, ``"synchronous"`` or another start method; a server already running is kept (True).
    """
    if scheduler is not None or WORKER_START_METHOD != "forkserver":
        return False
    import multiprocessing.forkserver

    import dask
    # first: distributed adds its defaults to Dask's config on import. A dask.config.set of a
    # distributed.* key on a config without that section records the whole section as inserted and
    # removes it on exit, distributed's defaults with it (a map's first dask computation then raised
    # KeyError: 'distributed' in a process that had not imported distributed yet)
    import distributed  # noqa: F401

    with dask.config.set({"distributed.worker.multiprocessing-method": WORKER_START_METHOD}):
        _preload_worker_imports()
        os.environ.update(_worker_spawn_environ())  # as the Nanny does before each worker (it never restores it)
    multiprocessing.forkserver.ensure_running()  # returns at once; the server imports on its own
    return True


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
    # set before each worker process starts (glibc reads it only then); a variable already in the
    # environment takes precedence (distributed's rule for pre-spawn-environ)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": _worker_spawn_environ(),
                          "distributed.worker.multiprocessing-method": WORKER_START_METHOD}):
        _preload_worker_imports()
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR)
    client = Client(cluster)
    return client, cluster
