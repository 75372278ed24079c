"""Per-stage wall, user and system seconds of a pipeline (``socmap map``'s chunk tasks, benchmarks).

System time as large as user time points at allocation churn or thread oversubscription
(issue 17), which wall time alone does not show; so every stage records all three. CPU times are
the whole process's (``resource.getrusage(RUSAGE_SELF)``): in a one-thread Dask worker that is the
task's thread plus the worker's own small event-loop work.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

#: The three figures kept per stage.
FIELDS = ("wall_s", "user_s", "sys_s")


def _now() -> tuple[float, float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime, r.ru_stime


class StageClock:
    """Accumulates ``{stage: {"wall_s", "user_s", "sys_s"}}`` over ``with clock.stage(name):`` blocks.

    Stages must not nest (a nested stage's time would be counted twice).
    """

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the seconds spent in the ``with`` block to stage ``name``."""
        start = _now()
        try:
            yield
        finally:
            end = _now()
            row = self.stages.setdefault(name, dict.fromkeys(FIELDS, 0.0))
            for field, a, b in zip(FIELDS, start, end):
                row[field] += b - a

    def wall(self, name: str) -> float:
        """Wall seconds of stage ``name`` so far (0 if it never ran)."""
        return self.stages.get(name, {}).get("wall_s", 0.0)


@contextmanager
def maybe_stage(clock: StageClock | None, name: str) -> Iterator[None]:
    """``clock.stage(name)``, or nothing when ``clock`` is None (callers that do not time)."""
    if clock is None:
        yield
    else:
        with clock.stage(name):
            yield


def sum_stages(tables: Iterable[dict[str, dict[str, float]]], digits: int = 3) -> dict[str, dict[str, float]]:
    """Stage-by-stage sum of several :attr:`StageClock.stages` tables (e.g. over chunk tasks), rounded."""
    out: dict[str, dict[str, float]] = {}
    for table in tables:
        for name, row in table.items():
            acc = out.setdefault(name, dict.fromkeys(FIELDS, 0.0))
            for field in FIELDS:
                acc[field] += row.get(field, 0.0)
    return {name: {f: round(v, digits) for f, v in row.items()} for name, row in out.items()}
