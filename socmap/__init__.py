"""socmap: soil organic carbon maps from a differentiable CLM5 model with learned parameters."""

__version__ = "0.1.0"
