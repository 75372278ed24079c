"""Encoder networks: KAN and MLP encoders, the pure-NN baseline, and bounding layers.

``make_encoder(name, in_features, out_features, **kwargs)`` builds an encoder network whose
output ``z [B, out_features]`` feeds a bounding layer from :func:`make_bound`; the names are the
keys of :data:`ENCODER_NETWORKS` (``socmap.encoders`` adds the baselines and the training options).
"""

from __future__ import annotations

from typing import Any, Callable

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
    "ENCODER_NETWORKS",
    "BOUND_NAMES",
]


def _build_kan(in_features: int, out_features: int, hidden: list[int] | None = None, **kwargs: Any) -> KAN:
    """:class:`KAN` with widths ``[in_features, *hidden, out_features]``; ``hidden=[]`` (default) is
    the 1-layer GAM, ``hidden=[16]`` the 2-layer variant; other kwargs (``grid_size``,
    ``spline_order``, ``base``, ...) go to :class:`KAN`."""
    return KAN([int(in_features), *list(hidden or []), int(out_features)], **kwargs)


def _build_mlp(in_features: int, out_features: int, **kwargs: Any) -> MLPEncoder:
    """:class:`MLPEncoder` (kwargs ``hidden``, ``dropout``, ``mc_dropout``, ``lonlat``, ...)."""
    return MLPEncoder(int(in_features), int(out_features), **kwargs)


#: Encoder network name -> builder ``(in_features, out_features, **kwargs) -> nn.Module``.
ENCODER_NETWORKS: dict[str, Callable[..., nn.Module]] = {"kan": _build_kan, "mlp": _build_mlp}


def make_encoder(name: str, in_features: int, out_features: int, **kwargs: Any) -> nn.Module:
    """Build the encoder network ``name`` (a key of :data:`ENCODER_NETWORKS`, any case).

    Parameters
    ----------
    name : str
        ``"kan"`` or ``"mlp"``.
    in_features, out_features : int
        Number of (scaled) covariates in and of unbounded parameter outputs ``z``.
    **kwargs
        Builder options, see :func:`_build_kan` and :func:`_build_mlp`.
    """
    builder = ENCODER_NETWORKS.get(name.lower() if isinstance(name, str) else name)
    if builder is None:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_NETWORKS)}")
    return builder(in_features, out_features, **kwargs)
