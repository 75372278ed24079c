"""How long torch's OpenMP threads spin after a parallel region, set before torch is loaded.

Why: the solver's compiled kernels (:mod:`socmap.clm5.kernels`) split sites over threads of their
own while torch's OpenMP team, idle between tensor ops, busy-waits for the next parallel region:
GNU OpenMP spins ``GOMP_SPINCOUNT`` times (300,000 by default, milliseconds on a modern core)
before it sleeps. On a machine with as many cores as threads (2 here) a kernel thread then shares
its core with a spinning one for most of its run. A spin count of 30,000 keeps the team awake
across back-to-back tensor ops and lets it sleep before a kernel competes with it.

Measured with the final kernels (16,000 sites, 2 threads, quiet 2-core machine, sites per second,
two runs each of ``GOMP_SPINCOUNT=N python benchmarks/solver.py --sizes 16000 --skip-dense``):

==================  ==================  ==================
GOMP_SPINCOUNT      forward             forward + backward
==================  ==================  ==================
1,000               513k / 545k         207k / 209k
10,000              556k / 577k         235k / 251k
30,000 (this)       566k / 589k         243k / 255k
100,000             561k / 575k         243k / 248k
300,000 (default)   497k / 516k         210k / 215k
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
