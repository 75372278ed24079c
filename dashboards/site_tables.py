"""The training sites of a run, from the run folder only: observations with their out-of-fold
simulation, one summary row per site, the site inputs (covariates, true parameters of the
synthetic twin), the learned per-site parameters and every fold model's SOC profile.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

#: run-folder files (written by `socmap train` and `socmap map`)
SITE_RESIDUALS = "site_residuals.csv"
PREDICTIONS = "predictions.csv"
SITE_INPUTS = "sites.csv"
SITE_PARAMETERS = "site_parameters.csv"
#: store variable [site, model, layer] (g C m-3) and its site coordinate
SITE_SOC_FOLD = "site_soc_fold"
SITE_ID = "site_id"


class SiteTables:
    """Site tables of one run folder (each read once, on first use)."""

    def __init__(self, run_dir: str | Path, store: xr.Dataset) -> None:
        self.path = Path(run_dir)
        self._store = store

    @cached_property
    def observations(self) -> pd.DataFrame:
        """One row per observation (predictions.csv, or site_residuals.csv once mapped), with
        ``residual_g_m3`` (sim - obs, g C m-3) and ``log_ratio`` (log sim/obs)."""
        path = self.path / SITE_RESIDUALS
        df = pd.read_csv(path if path.exists() else self.path / PREDICTIONS)
        if "residual_g_m3" not in df:
            df["residual_g_m3"] = df["soc_sim_g_m3"] - df["soc_obs_g_m3"]
        if "log_ratio" not in df:
            with np.errstate(all="ignore"):
                df["log_ratio"] = np.log(df["soc_sim_g_m3"] / df["soc_obs_g_m3"])
        return df

    @cached_property
    def summary(self) -> pd.DataFrame:
        """One row per site: lon, lat, fold, top sample depth and observed SOC, mean log ratio, n_obs."""
        obs = self.observations.sort_values([SITE_ID, "depth_m"])
        g = obs.groupby(SITE_ID, sort=False)
        return g.agg(lon=("lon", "first"), lat=("lat", "first"), fold=("fold", "first"),
                     top_depth_m=("depth_m", "first"), soc_obs_top=("soc_obs_g_m3", "first"),
                     log_ratio=("log_ratio", "mean"), n_obs=("depth_m", "size")).reset_index()

    @cached_property
    def inputs(self) -> pd.DataFrame | None:
        """The run's sites.csv indexed by site_id (covariates in physical units; ``true_p_<name>``
        for the synthetic twin), or None for runs written before it existed."""
        path = self.path / SITE_INPUTS
        return pd.read_csv(path).set_index(SITE_ID) if path.exists() else None

    @cached_property
    def parameters(self) -> pd.DataFrame | None:
        """Learned normalised parameters ``p_<name>`` per site (held-out fold model), or None."""
        path = self.path / SITE_PARAMETERS
        return pd.read_csv(path).set_index(SITE_ID) if path.exists() else None

    @cached_property
    def _fold_index(self) -> dict[str, int]:
        if SITE_SOC_FOLD not in self._store:
            return {}
        return {str(s): k for k, s in enumerate(self._store[SITE_ID].values)}

    def fold_profiles(self, site_id: str) -> np.ndarray | None:
        """SOC [n_models, layer] (g C m-3) of every fold model at the site, from the store; None
        when the store has no per-site profiles or not this site."""
        k = self._fold_index.get(str(site_id))
        if k is None:
            return None
        return self._store[SITE_SOC_FOLD].isel(site=k).transpose("model", "layer").values.astype(np.float64)
