"""Point predictions from a trained run: lon, lat, depth -> SOC and parameters.

Covariates and forcing come from the run's covariate cube at the nearest land cell; the
prediction is :func:`socmap.cells.predict_cells` (θ from the mean of the fold models' outputs). Points
outside the grid, on water, or with invalid depths get a per-row ``status`` instead of a crash.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from socmap.cells import predict_cells
from socmap.clm5 import interpolate_to_depths
from socmap.clm5.parameters import NAMES
from socmap.data.cube import cell_forcing, cell_values, open_cube, sample_grid
from socmap.runs import open_run
from socmap.store import STOCKS

log = logging.getLogger(__name__)
REQUIRED = ("lon", "lat", "depth_m")


def read_points(path: str | Path) -> pd.DataFrame:
    """A CSV of points with columns lon, lat, depth_m (degrees, metres)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"points file {path} not found")
    df = pd.read_csv(path)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; the file needs lon, lat, depth_m (degrees east, degrees north, metres)")
    for c in REQUIRED:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def predict_points(run_dir: str | Path, points: pd.DataFrame) -> pd.DataFrame:
    """SOC (g C m-3) at each point's depth, stocks, and the 21 parameters (fold-ensemble mean).

    ``points`` has columns lon, lat (degrees) and depth_m (m); the result adds ``status``,
    ``soc_g_m3``, the stocks (kg C m-2) and one column per parameter (physical units), NaN where
    ``status`` is not ``"ok"``.
    """
    run = open_run(run_dir)
    if not run.models:
        raise ValueError(f"run {run.name} has encoder {run.encoder!r}: point prediction needs a hybrid (kan or mlp) run")
    cube = open_cube(run.data_dir / "cube.zarr")
    out = points.copy()
    sample = sample_grid(cube, out["lon"].to_numpy(), out["lat"].to_numpy())
    status = sample.status.astype(object)
    depth = out["depth_m"].to_numpy(dtype=float)
    status[(status == "ok") & ~(np.isfinite(depth) & (depth >= 0) & (depth <= 8.6))] = "bad depth (need 0-8.6 m)"
    names = run.models[0].spec.covariate_names
    ok = np.flatnonzero(status == "ok")
    if len(ok):
        cov = cell_values(cube, names, sample.iy[ok], sample.ix[ok])
        finite = np.isfinite(cov).all(1)
        status[ok[~finite]] = "missing covariates"
        ok = ok[finite]
        cov = cov[finite]
    out["status"] = status
    for col in ["soc_g_m3", *STOCKS, *NAMES]:
        out[col] = np.nan
    if len(ok):
        forcing = cell_forcing(cube, sample.iy[ok], sample.ix[ok], out["lat"].to_numpy()[ok])
        res = predict_cells(run.models, cov, forcing, default=False, diagnostics=False).values
        soc = torch.as_tensor(res["soc"], dtype=torch.float64)
        at_depth = interpolate_to_depths(soc, torch.as_tensor(depth[ok], dtype=torch.float64)[:, None])[:, 0]
        out.loc[out.index[ok], "soc_g_m3"] = at_depth.numpy()
        for col in [*STOCKS, *NAMES]:
            out.loc[out.index[ok], col] = res[col]
    n_bad = int((out["status"] != "ok").sum())
    if n_bad:
        log.warning("%d of %d points not predicted (see the status column)", n_bad, len(out))
    return out
