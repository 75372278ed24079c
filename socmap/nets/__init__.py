"""Encoder networks: KAN and MLP encoders, the pure-NN baseline, and bounding layers.

``make_encoder("kan" | "mlp", in_features, out_features, **kwargs)`` builds an encoder whose
output ``z [B, out_features]`` feeds a bounding layer from :func:`make_bound`.
"""

from __future__ import annotations

from torch import nn

from .bounding import (
    BOUND_NAMES,
    HardSigmoidBound,
    ScaledSigmoidBound,
    expand_parameters,
    make_bound,
    param_reg,
    param_violation,
)
from .kan import KAN, KANLayer, bspline_basis, fit_spline_coefficients
from .mlp import LonLatEncoding, MCDropout, MLPEncoder, PureNN

ENCODER_NAMES = ("kan", "mlp")

__all__ = [
    "KAN",
    "KANLayer",
    "bspline_basis",
    "fit_spline_coefficients",
    "MLPEncoder",
    "PureNN",
    "LonLatEncoding",
    "MCDropout",
    "HardSigmoidBound",
    "ScaledSigmoidBound",
    "make_bound",
    "param_reg",
    "param_violation",
    "expand_parameters",
    "make_encoder",
    "ENCODER_NAMES",
    "BOUND_NAMES",
]


def make_encoder(name: str, in_features: int, out_features: int, **kwargs) -> nn.Module:
    """Build an encoder by name.

    * ``"kan"``: :class:`KAN` with widths ``[in_features, *hidden, out_features]``; pass
      ``hidden=[16]`` for the 2-layer variant (default ``[]``: 1-layer GAM), other kwargs go to
      :class:`KAN` (``grid_size``, ``spline_order``, ``base``, ...).
    * ``"mlp"``: :class:`MLPEncoder` (kwargs ``hidden``, ``dropout``, ``mc_dropout``, ``lonlat``...).
    """
    key = name.lower() if isinstance(name, str) else name
    if key == "kan":
        hidden = list(kwargs.pop("hidden", []) or [])
        return KAN([int(in_features), *hidden, int(out_features)], **kwargs)
    if key == "mlp":
        return MLPEncoder(int(in_features), int(out_features), **kwargs)
    raise ValueError(f"unknown encoder {name!r}; choose one of {ENCODER_NAMES}")
