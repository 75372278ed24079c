"""How long torch's OpenMP threads spin after a parallel region, set before torch is loaded.

Why: the solver's compiled kernels (:mod:`socmap.clm5.kernels`) split sites over threads of their
own while torch's OpenMP team, idle between tensor ops, busy-waits for the next parallel region:
GNU OpenMP spins ``GOMP_SPINCOUNT`` times (300,000 by default, milliseconds on a modern core)
before it sleeps. On a machine with as many cores as threads (2 here) a kernel thread then shares
its core with a spinning one for most of its run. A spin count of 30,000 keeps the team awake
across back-to-back tensor ops and lets it sleep before a kernel competes with it.

Measured (16,000 sites, 2 threads, quiet 2-core machine, µs per site, median of 12 interleaved
repetitions; ``python benchmarks/solver.py`` agrees within its noise):

==================  ==================  ==================
GOMP_SPINCOUNT      forward             forward + backward
==================  ==================  ==================
1,000               2.42                6.49
10,000              1.80                4.88
30,000 (this)       1.79                4.86
100,000             1.89                5.02
300,000 (default)   2.03                5.45
==================  ==================  ==================

libgomp reads the variable once, when torch loads it: :func:`configure` runs when ``socmap`` is
imported, so ``import socmap`` must precede ``import torch`` for it to apply (the CLI, the Dask
workers it starts and the benchmarks do). A value the user set, or ``OMP_WAIT_POLICY``, is left
alone; ``SOCMAP_OPENMP=default`` leaves libgomp's defaults.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

SPINCOUNT = "30000"


def configure(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set ``GOMP_SPINCOUNT`` in ``environ`` unless the user chose a policy; True where it was set
    before torch was loaded (so that it applies to this process, and to the processes it starts)."""
    if environ.get("SOCMAP_OPENMP") == "default" or "GOMP_SPINCOUNT" in environ or "OMP_WAIT_POLICY" in environ:
        return False
    environ["GOMP_SPINCOUNT"] = SPINCOUNT
    return "torch" not in sys.modules
