"""socmap: soil organic carbon maps from a differentiable CLM5 model with learned parameters."""

from socmap import openmp as _openmp

_openmp.configure()  # before anything loads torch (socmap/openmp.py)

__version__ = "0.1.0"
