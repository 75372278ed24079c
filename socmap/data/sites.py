"""Site containers: what the training code consumes (covariates, forcing, observed profiles).

:class:`SiteData` holds N sites with their covariates (physical units), land cover, CLM5 forcing
and NaN-padded SOC observations. :func:`load_synthetic` builds one from a ``socmap synth``
output folder; :func:`profiles_to_arrays` turns a tidy profile table (one row per layer) into the
padded arrays.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from socmap.clm5 import Forcing
from socmap.clm5.parameters import NAMES

log = logging.getLogger(__name__)


@dataclass
class SiteData:
    """N sites: covariates, forcing and observed SOC profiles (truth too, for synthetic data)."""

    site_id: np.ndarray  # [N] str
    lon: np.ndarray  # [N] degrees east
    lat: np.ndarray  # [N] degrees north
    covariates: np.ndarray  # [N, C] float64, physical units
    covariate_names: list[str]
    covariate_units: list[str]
    land_cover: np.ndarray  # [N] int IGBP
    forcing: Forcing  # N sites
    depth_m: np.ndarray  # [N, L] NaN-padded observation mid depths (m)
    soc_g_m3: np.ndarray  # [N, L] NaN-padded observed SOC density (g C m-3)
    true_p: np.ndarray | None = None  # [N, 21] normalised truth (synthetic only)
    truth: dict | None = None  # truth.json content (synthetic only)
    covariate_range: dict[str, tuple[float, float]] | None = None  # min/max over the land grid

    def __post_init__(self) -> None:
        n = len(self.site_id)
        checks = {
            "lon": (self.lon, (n,)), "lat": (self.lat, (n,)), "land_cover": (self.land_cover, (n,)),
            "covariates": (self.covariates, (n, len(self.covariate_names))),
        }
        for name, (arr, shape) in checks.items():
            if tuple(np.shape(arr)) != shape:
                raise ValueError(f"SiteData.{name} has shape {np.shape(arr)}; expected {shape} for {n} sites")
        if len(self.covariate_units) != len(self.covariate_names):
            raise ValueError("SiteData.covariate_units must have one entry per covariate name")
        if self.depth_m.shape != self.soc_g_m3.shape or self.depth_m.shape[0] != n:
            raise ValueError(f"SiteData.depth_m {self.depth_m.shape} and soc_g_m3 {self.soc_g_m3.shape} must both be [{n}, L]")
        if self.forcing.batch_size != n:
            raise ValueError(f"SiteData.forcing has {self.forcing.batch_size} sites, not {n}")
        if self.true_p is not None and self.true_p.shape != (n, len(NAMES)):
            raise ValueError(f"SiteData.true_p has shape {self.true_p.shape}; expected {(n, len(NAMES))}")

    def __len__(self) -> int:
        return len(self.site_id)

    def subset(self, idx) -> "SiteData":
        """Sites ``idx`` (integer indices, a boolean mask or a slice)."""
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean index has shape {idx.shape}; expected ({len(self)},)")
            idx = np.nonzero(idx)[0]
        idx = idx.astype(np.int64)
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "forcing":
                out[f.name] = v.subset(torch.as_tensor(idx))
            elif isinstance(v, np.ndarray):
                out[f.name] = v[idx]
            else:
                out[f.name] = v
        return SiteData(**out)

    def covariate_frame(self) -> pd.DataFrame:
        """Covariates as a DataFrame (columns = covariate names)."""
        return pd.DataFrame(self.covariates, columns=self.covariate_names)


def profiles_to_arrays(profiles: pd.DataFrame, site_ids) -> tuple[np.ndarray, np.ndarray]:
    """NaN-padded ``(depth_m [N, L], soc [N, L])`` from a tidy profile table, in ``site_ids`` order.

    Rows are sorted by depth within each site; ``depth_m`` is taken from the ``depth_m`` column, or
    the mid point of ``top_m`` and ``bottom_m`` when that column is absent. Sites without rows get
    an all-NaN row; rows whose site is not in ``site_ids`` are ignored.
    """
    site_ids = np.asarray(site_ids).astype(str)
    if "depth_m" in profiles:
        depth = profiles["depth_m"].to_numpy(np.float64)
    elif {"top_m", "bottom_m"} <= set(profiles.columns):
        depth = 0.5 * (profiles["top_m"].to_numpy(np.float64) + profiles["bottom_m"].to_numpy(np.float64))
    else:
        raise KeyError("the profile table needs a depth_m column or top_m and bottom_m columns")
    if "soc_g_m3" not in profiles:
        raise KeyError("the profile table needs a soc_g_m3 column (SOC density, g C m-3)")
    pos = pd.Index(site_ids)
    if not pos.is_unique:
        raise ValueError("site_ids must be unique")
    row_site = pos.get_indexer(profiles["site_id"].astype(str).to_numpy())
    keep = row_site >= 0
    frame = pd.DataFrame({"site": row_site[keep], "depth": depth[keep], "soc": profiles["soc_g_m3"].to_numpy(np.float64)[keep]})
    frame = frame.sort_values(["site", "depth"], kind="stable")
    rank = frame.groupby("site").cumcount().to_numpy()
    n_layers = int(rank.max()) + 1 if len(frame) else 1
    d = np.full((len(site_ids), n_layers), np.nan)
    s = np.full((len(site_ids), n_layers), np.nan)
    d[frame["site"].to_numpy(), rank] = frame["depth"].to_numpy()
    s[frame["site"].to_numpy(), rank] = frame["soc"].to_numpy()
    return d, s


def load_synthetic(directory) -> SiteData:
    """Load a ``socmap synth`` output folder as :class:`SiteData`.

    Reads ``sites.csv``, ``profiles.csv`` and ``truth.json``; samples the monthly climate at the
    sites' cells from ``cube.zarr`` and derives the forcing exactly as the generator did.
    """
    from socmap.cube import sample_grid
    from socmap.cube import cell_forcing, open_cube
    from socmap.data.synthetic import COVARIATES

    directory = Path(directory)
    needed = ["sites.csv", "profiles.csv", "truth.json", "cube.zarr"]
    missing = [n for n in needed if not (directory / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a complete socmap synth output (missing {', '.join(missing)}); "
            f"create one with `socmap synth --out {directory}`"
        )
    sites = pd.read_csv(directory / "sites.csv", dtype={"site_id": str})
    profiles = pd.read_csv(directory / "profiles.csv", dtype={"site_id": str})
    truth = json.loads((directory / "truth.json").read_text())
    cube = open_cube(directory / "cube.zarr")
    names = list(cube.attrs.get("numeric_covariates") or truth["covariates"])
    ranges_json = cube.attrs.get("covariate_range_json")
    ranges = json.loads(ranges_json) if ranges_json else truth["covariate_range"]
    lon = sites["lon"].to_numpy(np.float64)
    lat = sites["lat"].to_numpy(np.float64)
    where = sample_grid(cube, lon, lat)
    if not where.ok.all():
        bad = np.nonzero(~where.ok)[0]
        raise ValueError(f"{len(bad)} site(s) of {directory / 'sites.csv'} are not on land cells of the cube "
                         f"(e.g. {sites['site_id'].iloc[bad[0]]}: {where.status[bad[0]]}); the folder is inconsistent")
    forcing = cell_forcing(cube, where.iy, where.ix, lat)
    depth, soc = profiles_to_arrays(profiles, sites["site_id"].to_numpy())
    p_cols = [f"true_p_{n}" for n in NAMES]
    true_p = sites[p_cols].to_numpy(np.float64) if all(c in sites for c in p_cols) else None
    return SiteData(
        site_id=sites["site_id"].to_numpy().astype(str),
        lon=lon,
        lat=lat,
        covariates=sites[names].to_numpy(np.float64),
        covariate_names=names,
        covariate_units=[COVARIATES[n][0] if n in COVARIATES else cube[n].attrs.get("units", "") for n in names],
        land_cover=sites["land_cover"].to_numpy(np.int64),
        forcing=forcing,
        depth_m=depth,
        soc_g_m3=soc,
        true_p=true_p,
        truth=truth,
        covariate_range={k: (float(v[0]), float(v[1])) for k, v in ranges.items()},
    )


def load_real(directory):
    """Real profiles on the real covariate cube in ``directory`` (see :mod:`socmap.data.real`)."""
    from socmap.data.real import load_real_sites

    return load_real_sites(directory)
