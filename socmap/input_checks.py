"""Checks of user-given climate and land arrays: shape, NaNs, units, sign.

Every forcing derivation validates its inputs here so that an error names the argument, what was
expected and the offending rows (sites) — the fix is usually in the caller's data, not the model.
"""

from __future__ import annotations

import numpy as np

__all__ = ["as_float_array", "check_celsius", "check_nonnegative", "rows_text"]


def rows_text(mask: np.ndarray) -> str:
    """Describe the True rows of a boolean mask [N] for an error message (first ten indices)."""
    idx = np.flatnonzero(mask)
    shown = ", ".join(map(str, idx[:10])) + (" …" if idx.size > 10 else "")
    return f"{idx.size} row(s): indices {shown}"


def as_float_array(name: str, a: np.ndarray, shape: tuple[int | None, ...], *, allow_inf: bool = False) -> np.ndarray:
    """``a`` as float64 with the expected shape and no NaNs (nor infinities unless ``allow_inf``).

    Parameters
    ----------
    name : str
        Argument name used in the error message.
    a : array-like
        Values; any units (they are not converted).
    shape : tuple of int or None
        Expected shape; ``None`` accepts any length along that axis.
    allow_inf : bool
        Accept ``±inf`` (e.g. "no bedrock").

    Returns
    -------
    ndarray
        ``a`` as float64, shape ``shape``.

    Raises
    ------
    ValueError
        Naming the argument, the expected shape or the rows holding NaNs.
    """
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric; {exc}") from None
    if arr.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, arr.shape)):
        want = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}; got {arr.shape}")
    bad = ~np.isfinite(arr) if not allow_inf else np.isnan(arr)
    if bad.any():
        rows = bad.reshape(arr.shape[0], -1).any(1) if arr.ndim else bad
        raise ValueError(f"{name} has NaN{'' if allow_inf else ' or infinite'} values at {rows_text(np.atleast_1d(rows))}")
    return arr


def check_celsius(name: str, t: np.ndarray) -> None:
    """Raise if air temperatures [N, ...] (°C) look like kelvin (> 100) or are below -100 °C."""
    rows = t.reshape(t.shape[0], -1) if t.ndim else t.reshape(1, -1)
    hot = (rows > 100.0).any(1)
    if hot.any():
        raise ValueError(
            f"{name} exceeds 100 °C at {rows_text(hot)}: the values look like kelvin; "
            "pass °C (subtract 273.15)"
        )
    cold = (rows < -100.0).any(1)
    if cold.any():
        raise ValueError(f"{name} is below -100 °C at {rows_text(cold)}: expected monthly mean air temperature in °C")


def check_nonnegative(name: str, a: np.ndarray) -> None:
    """Raise naming the rows of ``a`` [N, ...] that hold a negative value."""
    rows = a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, -1)
    neg = (rows < 0).any(1)
    if neg.any():
        raise ValueError(f"{name} has negative values at {rows_text(neg)}")
