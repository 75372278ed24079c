"""glibc heap settings for the solver's large float64 temporaries (set once, at import).

Why: the structured sweeps allocate and free tensors of 0.1–30 MB per operation (per-layer
[9, B] blocks, [20, 9, B] stacks). With glibc's defaults each block above the mmap threshold
is a fresh ``mmap`` (zeroed pages faulted in by the kernel) and each free an ``munmap``, and
freed heap tops are trimmed back to the OS; the kernel's page-fault and zeroing work then
shows as system time comparable to user time (issue 17). Raising the mmap threshold to its
maximum and disabling trimming keeps those blocks in the heap, so the next operation reuses
already-mapped pages.

Settings (``mallopt``): ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's upper bound on 64-bit;
larger values are refused) and ``M_TRIM_THRESHOLD`` = 1 GiB (freed memory stays mapped up to
that much). The cost is a process that keeps up to ~1 GiB of freed heap instead of returning it.

Set ``SOCMAP_MALLOC=default`` in the environment to leave glibc's defaults (used by
``benchmarks/solver.py`` for the before/after comparison). A no-op where glibc is absent
(macOS, Windows, musl).

Worker threads (:func:`worker_environ`): these settings govern glibc's main arena. A thread other
than the main one (a Dask worker runs its tasks in one) gets an arena of its own, whose heaps
are at most 64 MiB and are unmapped whenever they empty, so the 8 MB [12, 20, 4,096] forcing
arrays were faulted in afresh on every batch: ``cell_forcing`` + ``prepare_forcing`` on one
0.05° window took 0.28 s user with 0.19–0.34 s system in a thread, 0.00 s system in the main
thread. ``MALLOC_ARENA_MAX=1`` (read by glibc only at process start, so it is set in the
environment the mapping's local Dask workers are spawned with) puts every thread on the main
arena: 0.00–0.01 s system in a thread. With one busy thread per worker there is no lock
contention to lose. In a whole 0.05° map on 2 local workers (busy machine, alternating runs)
the tasks' system time fell from 1.10–1.15 s to 0.84–0.88 s and the forcing stage's from
0.54–0.56 s to 0.33–0.43 s; the rest is the workers' own threads (RUSAGE_SELF counts them).
A cluster started elsewhere (``--scheduler``) needs ``MALLOC_ARENA_MAX=1`` in its workers'
environment for the same effect.

Measured (``python benchmarks/solver.py --json``, 16,000 sites, 2 threads, quiet 2-core
machine, ``SOCMAP_MALLOC=default`` run vs. this setting, same benchmark):

=====================  ===========================  ===========================
stage                  glibc defaults (user / sys)  this setting (user / sys)
=====================  ===========================  ===========================
structured forward     1.94 s / 0.32 s, 197k/s      2.22 s / 0.01 s, 244k/s
structured fwd+bwd     2.22 s / 0.37 s, 74k/s       2.33 s / 0.03 s, 74k/s
prepare_forcing        0.55 s / 0.45 s, 32k/s       0.56 s / 0.28 s, 38k/s
=====================  ===========================  ===========================

The dense reference's 140×140 batches (~300 MB per 2,000 sites) stay above any allowed mmap
threshold, so its system time (≈ 1.2–2× its user time) is unchanged by this module.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's maximum (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD_BYTES = 2**30

_state = "not configured"


def configure() -> str:
    """Apply the heap settings once; returns a one-line description of what is in effect."""
    global _state
    if _state != "not configured":
        return _state
    if os.environ.get("SOCMAP_MALLOC", "").lower() == "default":
        _state = "glibc defaults (SOCMAP_MALLOC=default)"
        return _state
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is None:
        _state = "system allocator (no glibc mallopt)"
        return _state
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok_mmap = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    ok_trim = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    if not (ok_mmap and ok_trim):
        log.debug("mallopt refused a setting (mmap %s, trim %s)", ok_mmap, ok_trim)
    _state = f"glibc mmap threshold {MMAP_THRESHOLD_BYTES >> 20} MiB ({'ok' if ok_mmap else 'refused'}), trim threshold {TRIM_THRESHOLD_BYTES >> 20} MiB ({'ok' if ok_trim else 'refused'})"
    return _state


def describe() -> str:
    """What :func:`configure` set (configuring first if it has not run)."""
    return configure()


def worker_environ() -> dict[str, str]:
    """Environment for worker processes spawned to run solver work in a thread (see the module
    docstring): ``MALLOC_ARENA_MAX=1``, or nothing with ``SOCMAP_MALLOC=default``."""
    if os.environ.get("SOCMAP_MALLOC", "").lower() == "default":
        return {}
    return {"MALLOC_ARENA_MAX": "1"}
