"""IGBP land-cover classes (MODIS MCD12C1) and the litter-quality group of each class.

Land cover enters the forcing derivation three ways: the vegetated fraction applied to climatic
NPP, the split of litterfall into CWD and the three litter pools (by group), and waterlogging of
permanent wetlands (class 11). This module only names the classes and validates codes; the
numbers per group live in :class:`socmap.forcing_config.ForcingConfig`.
"""

from __future__ import annotations

import numpy as np

from socmap.input_checks import rows_text

__all__ = ["IGBP_CLASSES", "LAND_COVER_GROUPS", "LITTER_GROUP_NAMES", "N_IGBP_CLASSES", "WETLAND_CLASS",
           "land_cover_codes", "land_cover_group"]

#: IGBP classes of MODIS MCD12C1 (code → name).
IGBP_CLASSES: dict[int, str] = {
    0: "water", 1: "evergreen needleleaf forest", 2: "evergreen broadleaf forest",
    3: "deciduous needleleaf forest", 4: "deciduous broadleaf forest", 5: "mixed forest",
    6: "closed shrubland", 7: "open shrubland", 8: "woody savanna", 9: "savanna",
    10: "grassland", 11: "permanent wetland", 12: "cropland", 13: "urban and built-up",
    14: "cropland/natural vegetation mosaic", 15: "snow and ice", 16: "barren",
}
N_IGBP_CLASSES = len(IGBP_CLASSES)
#: The IGBP code of permanent wetlands (saturated, anoxic below the water table).
WETLAND_CLASS = 11
#: IGBP class code → litter-quality group used by :func:`socmap.climate_forcing.litter_split`.
LAND_COVER_GROUPS: dict[int, str] = {
    0: "other", 1: "forest", 2: "forest", 3: "forest", 4: "forest", 5: "forest",
    6: "shrub_savanna", 7: "shrub_savanna", 8: "shrub_savanna", 9: "shrub_savanna",
    10: "grass", 11: "wetland", 12: "crop", 13: "other", 14: "crop", 15: "other", 16: "other",
}
#: Every litter-quality group; :class:`~socmap.forcing_config.ForcingConfig` must give each one.
LITTER_GROUP_NAMES: tuple[str, ...] = ("forest", "shrub_savanna", "grass", "wetland", "crop", "other")


def land_cover_codes(land_cover: np.ndarray) -> np.ndarray:
    """Validated IGBP class codes.

    Parameters
    ----------
    land_cover : array-like [N]
        IGBP class codes 0–16, any numeric dtype (whole numbers).

    Returns
    -------
    ndarray [N] int64

    Raises
    ------
    ValueError
        On a wrong shape or codes outside 0–16 (e.g. an unmasked nodata value 255), naming them
        and their rows.
    """
    lc = np.asarray(land_cover)
    if lc.ndim != 1:
        raise ValueError(f"land_cover must have shape [N] (IGBP class codes); got {lc.shape}")
    lcf = lc.astype(np.float64)
    bad = ~np.isfinite(lcf) | (lcf != np.round(lcf)) | (lcf < 0) | (lcf >= N_IGBP_CLASSES)
    if bad.any():
        raise ValueError(
            f"land_cover must hold IGBP class codes 0–16 (MODIS MCD12C1); invalid values "
            f"{np.unique(lc[bad])[:5].tolist()} at {rows_text(bad)} (mask nodata such as 255 first)"
        )
    return lcf.astype(np.int64)


def land_cover_group(land_cover: np.ndarray) -> np.ndarray:
    """Litter-quality group name per site (see :data:`LAND_COVER_GROUPS`), [N] str."""
    lc = land_cover_codes(land_cover)
    table = np.array([LAND_COVER_GROUPS[i] for i in range(N_IGBP_CLASSES)])
    return table[lc]
