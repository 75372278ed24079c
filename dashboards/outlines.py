"""CONUS state outlines (the GeoJSON shipped with socmap) as NaN-separated line coordinates."""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np

from socmap.data.grid import conus_states_path


@lru_cache(maxsize=1)
def state_outlines() -> tuple[np.ndarray, np.ndarray]:
    """(x, y) in degrees: every polygon ring of every state, rings separated by NaN."""
    geo = json.loads(conus_states_path().read_text())
    xs, ys = [], []
    for feat in geo["features"]:
        g = feat["geometry"]
        polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
        for poly in polys:
            for ring in poly:
                a = np.asarray(ring, dtype=np.float64)
                xs.append(np.append(a[:, 0], np.nan))
                ys.append(np.append(a[:, 1], np.nan))
    return np.concatenate(xs), np.concatenate(ys)
