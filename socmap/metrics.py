"""Skill scores on pooled observations (docs/model.md §7.6), NumPy in, floats out."""

from __future__ import annotations

import numpy as np


def _pair(obs: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    obs, sim = np.asarray(obs, dtype=float).ravel(), np.asarray(sim, dtype=float).ravel()
    ok = np.isfinite(obs) & np.isfinite(sim)
    return obs[ok], sim[ok]


def nse(obs: np.ndarray, sim: np.ndarray) -> float:
    """Nash–Sutcliffe efficiency 1 - Σ(sim-obs)² / Σ(obs-mean)², pooled over all finite pairs."""
    o, s = _pair(obs, sim)
    if o.size < 2:
        return float("nan")
    return float(1.0 - np.sum((s - o) ** 2) / np.sum((o - o.mean()) ** 2))


def nse_log(obs: np.ndarray, sim: np.ndarray) -> float:
    """NSE of log SOC (pairs with positive values only): not dominated by carbon-rich layers."""
    o, s = _pair(obs, sim)
    ok = (o > 0) & (s > 0)
    return nse(np.log(o[ok]), np.log(s[ok]))


def rmse(obs: np.ndarray, sim: np.ndarray) -> float:
    o, s = _pair(obs, sim)
    return float(np.sqrt(np.mean((s - o) ** 2))) if o.size else float("nan")


def pearson_r(obs: np.ndarray, sim: np.ndarray) -> float:
    o, s = _pair(obs, sim)
    if o.size < 2 or o.std() == 0 or s.std() == 0:
        return float("nan")
    return float(np.corrcoef(o, s)[0, 1])


def r2(truth: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination 1 - SSE/SST of ``pred`` against ``truth`` (not r²)."""
    return nse(truth, pred)


def skill(obs: np.ndarray, sim: np.ndarray) -> dict[str, float]:
    """``nse``, ``nse_log``, ``rmse`` and ``r`` in one dict."""
    return {"nse": nse(obs, sim), "nse_log": nse_log(obs, sim), "rmse": rmse(obs, sim), "r": pearson_r(obs, sim)}
