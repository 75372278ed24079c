"""Per-stage wall/user/sys accounting (socmap.stages) and the stage table that socmap map records."""

from __future__ import annotations

import time

import pytest

from socmap.stages import FIELDS, StageClock, maybe_stage, sum_stages


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_clock_accumulates_per_stage_and_counts_cpu():
    clock = StageClock()
    for _ in range(2):
        with clock.stage("busy"):
            _spin(0.05)
    with clock.stage("idle"):
        time.sleep(0.05)
    busy, idle = clock.stages["busy"], clock.stages["idle"]
    assert set(busy) == set(FIELDS)
    assert busy["wall_s"] >= 0.1 and idle["wall_s"] >= 0.05
    # spinning costs CPU, sleeping hardly any (coarse bounds: the process may be descheduled)
    assert busy["user_s"] + busy["sys_s"] > idle["user_s"] + idle["sys_s"]
    assert clock.wall("busy") == busy["wall_s"] and clock.wall("never") == 0.0


def test_a_failing_block_is_still_timed():
    clock = StageClock()
    with pytest.raises(RuntimeError), clock.stage("boom"):
        raise RuntimeError("x")
    assert "boom" in clock.stages


def test_maybe_stage_without_a_clock_does_nothing():
    with maybe_stage(None, "x"):
        pass


def test_sum_stages_adds_field_by_field():
    a = {"read": {"wall_s": 1.0, "user_s": 0.5, "sys_s": 0.1}}
    b = {"read": {"wall_s": 2.0, "user_s": 1.0, "sys_s": 0.2}, "write": {"wall_s": 0.25, "user_s": 0.0, "sys_s": 0.0}}
    assert sum_stages([a, b]) == {"read": {"wall_s": 3.0, "user_s": 1.5, "sys_s": 0.3},
                                  "write": {"wall_s": 0.25, "user_s": 0.0, "sys_s": 0.0}}
    assert sum_stages([]) == {}


@pytest.mark.slow
def test_map_record_holds_the_stage_table(run_copy, map_chunks):
    from socmap.mapping import map_run

    run = run_copy("stages")
    # without the default-stock cache every cell's CLM5 default is solved (solve_default)
    rec = map_run(run, scheduler="synchronous", chunks=map_chunks, progress=False, device="cpu", default_cache=False)
    stages = rec["timings_s"]["worker_stages"]
    assert {"read", "covariates", "forcing", "prepare", "encoder", "solve", "solve_default", "diagnostics", "stocks",
            "write"} <= set(stages)
    inside = sum(r["wall_s"] for r in stages.values())
    assert 0 < inside <= rec["timings_s"]["task_seconds"] + 1e-2  # stages do not overlap and lie inside the tasks
    assert rec["device"] == "cpu" and rec["workers_used"] == 1
    # with it, a second map reads them (default_cache) and solves none
    map_run(run, scheduler="synchronous", chunks=map_chunks, progress=False, device="cpu")
    warm = map_run(run, scheduler="synchronous", chunks=map_chunks, progress=False, device="cpu")["timings_s"]["worker_stages"]
    assert "default_cache" in warm and "solve_default" not in warm
