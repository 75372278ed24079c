"""The synthetic twin's true covariate → parameter functions, evaluated from a ``truth.json`` dict.

A truth dict (written by the twin generator, copied into a run folder by training) lists, per
target parameter, its edges ``c · f(a·x + b) + d`` with ``x`` the covariate min–max scaled to
[0, 1] over the land grid and ``f`` one of :data:`EDGE_FORMULAS`. This module only *reads*
such a dict, so consumers (interpretation, the dashboard) need not import the generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from socmap.clm5.parameters import NAMES

#: ScIReN's symbolic edge types, by code (see docs/model.md, "retrieval test").
EDGE_TYPES: dict[int, str] = {1: "linear", 2: "quadratic", 3: "log", 4: "exp", 5: "abs"}
EDGE_FORMULAS: dict[str, str] = {
    "linear": "x", "quadratic": "x**2", "log": "log2(x + 2.5)", "exp": "2**x", "abs": "abs(x)",
}
#: Normalised range the true parameters span over the land grid, and the value of non-targets.
P_MIN, P_MAX, P_FIXED = 0.2, 0.8, 0.5


def edge_shape(kind: str, u: np.ndarray) -> np.ndarray:
    """The edge function ``f(u)`` of type ``kind`` (a key of :data:`EDGE_FORMULAS`)."""
    if kind == "linear":
        return u
    if kind == "quadratic":
        return u * u
    if kind == "log":
        return np.log2(u + 2.5)
    if kind == "exp":
        return np.exp2(u)
    if kind == "abs":
        return np.abs(u)
    raise ValueError(f"unknown edge type {kind!r}; known: {list(EDGE_FORMULAS)}")


def scale_unit(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Min–max scale ``values`` to [0, 1] with the range ``lo``…``hi``, clipped (as the encoders do)."""
    span = hi - lo
    x = (np.asarray(values, dtype=np.float64) - lo) / (span if span > 0 else 1.0)
    return np.clip(x, 0.0, 1.0)


def edge_value(edge: dict[str, Any], values: np.ndarray) -> np.ndarray:
    """One truth edge (a dict of ``truth["parameters"][p]["edges"]``) at covariate ``values`` (physical units)."""
    x = scale_unit(values, edge["x_min"], edge["x_max"])
    return edge["c"] * edge_shape(edge["type"], edge["a"] * x + edge["b"]) + edge["d"]


def truth_edge_function(truth: dict[str, Any], param: str, covariate: str, x_physical) -> np.ndarray:
    """The true edge ``covariate → param`` in normalised-p units, at covariate values in physical units.

    Zero where the covariate does not drive the parameter (no edge). Values outside the
    covariate's grid range are clipped to it, as the encoders' min–max scaling does.
    """
    x = np.asarray(x_physical, dtype=np.float64)
    spec = truth["parameters"].get("w_scaling" if param == "w-scaling" else param)
    if spec is None:
        if param not in NAMES and param != "w-scaling":
            raise ValueError(f"unknown parameter {param!r}; known: {', '.join(NAMES)}")
        return np.zeros_like(x)
    out = np.zeros_like(x)
    for e in spec["edges"]:
        if e["covariate"] == covariate:
            out = out + edge_value(e, x)
    return out


def true_p_from_covariates(truth: dict[str, Any], covariates_df: pd.DataFrame) -> np.ndarray:
    """Normalised true parameters ``[N, 21]`` from a table of covariates in physical units.

    Each target is the sum of its edges (:func:`truth_edge_function`), clipped to
    ``truth["p_range"]`` ([0.2, 0.8]): over the land grid the sum spans exactly that range by
    construction, so the clip only removes last-bit rounding there, and it keeps covariate
    combinations never seen on the grid inside the parameter bounds. Non-targets are ``fixed_p``.
    """
    n = len(covariates_df)
    p = np.full((n, len(NAMES)), float(truth.get("fixed_p", P_FIXED)))
    for name, spec in truth["parameters"].items():
        missing = [e["covariate"] for e in spec["edges"] if e["covariate"] not in covariates_df]
        if missing:
            raise KeyError(f"covariates {missing} (needed for the true {name}) are not columns of the table")
        total = sum(edge_value(e, covariates_df[e["covariate"]].to_numpy(np.float64)) for e in spec["edges"])
        p[:, spec["index"]] = np.clip(total, *truth.get("p_range", (P_MIN, P_MAX)))
    return p
