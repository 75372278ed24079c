"""Grid windows: the unit of work of every Dask-chunked CONUS computation (maps, scenarios).

A window is a ``chunks × chunks`` block of the cube's (y, x) grid aligned with the store's Zarr
chunks, so each task writes whole chunks and tasks never share one. :class:`WindowTask` is what
every task carries (the window and the files it reads and writes); ``socmap.mapping.ChunkJob``
and ``socmap.scenario_mapping.WindowJob`` add their own options.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

Window = tuple[tuple[int, int], int, int, int, int]  # ((row, col), y0, y1, x0, x1)


def grid_windows(ny: int, nx: int, chunks: int) -> list[Window]:
    """The ``chunks × chunks`` windows of an ``ny × nx`` grid, row by row (edge windows smaller)."""
    return [((i, j), y0, min(ny, y0 + chunks), x0, min(nx, x0 + chunks))
            for i, y0 in enumerate(range(0, ny, chunks)) for j, x0 in enumerate(range(0, nx, chunks))]


@dataclass(frozen=True)
class WindowTask:
    """One window and the files its task uses (picklable; the paths must be visible to the worker).

    ``store_path`` is the (partial) store the task writes its window into.
    """

    index: tuple[int, int]
    y0: int
    y1: int
    x0: int
    x1: int
    run_dir: str
    cube_path: str
    store_path: str
    covariates: tuple[str, ...]

    @property
    def key(self) -> str:
        """The window's key in a store's progress record (``"row_col"``)."""
        return f"{self.index[0]}_{self.index[1]}"


@lru_cache(maxsize=8)
def cached_cube(path: str, lazy_numpy: bool = False):
    """The cube (or store) at ``path``, opened once per worker process (:func:`socmap.data.cube.open_cube`)."""
    from socmap.data.cube import open_cube

    return open_cube(path, lazy_numpy=lazy_numpy)


def run_tasks(task: Callable[[Any], dict], jobs: list, done: Callable[[dict], None], client=None) -> None:
    """Run ``task(job)`` for every job and call ``done(result)`` as each one finishes.

    Without a Dask ``client`` the tasks run here, one after another, on one torch thread (as a
    cluster worker runs them); with one they run on its workers, and an error (or an exception
    from ``done``, e.g. a stop hook) cancels what is still pending before it propagates.
    """
    if client is None:
        from socmap.devices import torch_threads

        with torch_threads(1):
            for job in jobs:
                done(task(job))
        return
    import os
    import time

    from distributed import as_completed

    name = getattr(task, "__name__", "task")
    futures = client.map(task, jobs, pure=False, key=[f"{name}-{j.key}-{os.getpid()}-{time.time_ns()}" for j in jobs])
    try:
        for fut in as_completed(futures):
            done(fut.result())
    except BaseException:
        client.cancel(futures)
        raise
