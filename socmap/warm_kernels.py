"""Importing this module loads every compiled kernel: the solver's (:func:`socmap.clm5.kernels.warm_up`),
the diagnostics' (:func:`socmap.clm5.diagnostic_kernels.warm_up`) and the forcing derivation's
(:func:`socmap.climate_kernels.warm_up`).

It exists for fork servers, whose preload list takes module names: the mapping's local workers
are forked from one (``socmap.cluster.WORKER_PRELOAD``) and so start with the kernels loaded.
"""

from socmap import climate_kernels
from socmap.clm5 import diagnostic_kernels, kernels

kernels.warm_up()
diagnostic_kernels.warm_up()
climate_kernels.warm_up()
