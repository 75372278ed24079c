"""The covariate table: the one place that says what each encoder covariate is and its units.

Cube producers (the synthetic twin, the real ERA5/MODIS cube) write these units and long names
into their variables' attributes, the catalog infers a covariate's quantity from it, and
consumers (site tables, map stores, the dashboard) read units from the cube or store those
producers wrote. Every covariate is a per-cell scalar in physical units; the encoders normalise
them themselves.

A valid range is what the quantity can physically take on land, not the CONUS range: a value
outside it means wrong units or a bad file, never an unusual place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["COVARIATES", "WETLAND_FRACTION", "Covariate", "covariate", "long_name"]


@dataclass(frozen=True)
class Covariate:
    """One encoder covariate.

    Attributes
    ----------
    name : str
        Variable name in cubes, site tables and stores; its suffix carries the unit.
    units : str
        UDUNITS-style unit string (``"1"`` = dimensionless).
    long_name : str
        Short human-readable name, without the data source (see :func:`long_name`).
    quantity : str
        What is measured: a key of :data:`socmap.data.catalog.QUANTITY_UNITS`, used to check a
        catalog entry's units.
    valid_range : tuple of float
        ``(low, high)`` in ``units``, inclusive; ``math.inf`` = unbounded.
    description : str
        How the value is obtained from its inputs.
    """

    name: str
    units: str
    long_name: str
    quantity: str
    valid_range: tuple[float, float]
    description: str


_TABLE = (
    Covariate("mat_c", "degC", "mean annual air temperature", "temperature", (-60.0, 40.0),
              "mean of the 12 monthly mean air temperatures"),
    Covariate("map_mm", "mm yr-1", "mean annual precipitation", "precipitation", (0.0, 15000.0),
              "sum of the 12 monthly precipitation totals"),
    Covariate("t_seasonality_c", "degC", "temperature seasonality (standard deviation of monthly means)",
              "temperature", (0.0, 40.0), "population standard deviation of the 12 monthly mean air temperatures"),
    Covariate("t_warmest_c", "degC", "mean temperature of the warmest month", "temperature", (-50.0, 50.0),
              "largest of the 12 monthly mean air temperatures"),
    Covariate("t_coldest_c", "degC", "mean temperature of the coldest month", "temperature", (-70.0, 40.0),
              "smallest of the 12 monthly mean air temperatures"),
    Covariate("elevation_m", "m", "elevation above sea level", "elevation", (-450.0, 8900.0),
              "height of the land surface above mean sea level"),
    Covariate("clay_pct", "%", "clay content of the fine earth, 0-100 cm mean", "texture", (0.0, 100.0),
              "mass fraction of particles < 2 µm in the fine earth, depth-weighted over 0-100 cm"),
    Covariate("sand_pct", "%", "sand content of the fine earth, 0-100 cm mean", "texture", (0.0, 100.0),
              "mass fraction of particles 50 µm-2 mm in the fine earth, depth-weighted over 0-100 cm"),
    Covariate("bulk_density_g_cm3", "g cm-3", "bulk density of the fine earth, 0-100 cm mean", "bulk_density",
              (0.02, 2.65), "oven-dry fine-earth mass per bulk volume, depth-weighted over 0-100 cm"),
    Covariate("ph", "1", "soil pH in water, 0-100 cm mean", "ph", (2.0, 11.0),
              "pH of a soil-water suspension, depth-weighted over 0-100 cm"),
    Covariate("cec_cmol_kg", "cmol kg-1", "cation exchange capacity, 0-100 cm mean", "cec", (0.0, 300.0),
              "cation exchange capacity of the fine earth, depth-weighted over 0-100 cm"),
    Covariate("npp_g_m2_yr", "g C m-2 yr-1", "net primary productivity (Miami model)", "npp", (0.0, 3000.0),
              "climatic NPP from mean annual temperature and precipitation "
              "(socmap.climate_forcing.miami_npp_g_m2_yr)"),
    Covariate("aridity_index", "1", "aridity index P/PET (Thornthwaite PET)", "scalar", (0.0, math.inf),
              "annual precipitation over annual Thornthwaite PET; the cube producers floor PET at "
              "50 mm yr-1 and clip the index to 0-5"),
    Covariate("ndvi_max", "1", "maximum NDVI of the year", "scalar", (-1.0, 1.0),
              "MODIS climatological annual maximum NDVI (BESS-JPL NDVI_maximum.tif), mean of the 0.05 deg "
              "land pixels of the cell (MODIS water masked)"),
    Covariate("ndvi_min", "1", "minimum NDVI of the year", "scalar", (-1.0, 1.0),
              "MODIS climatological annual minimum NDVI (BESS-JPL NDVI_minimum.tif), mean of the 0.05 deg "
              "land pixels of the cell (MODIS water masked)"),
    Covariate("fapar_max", "1", "maximum fraction of absorbed PAR", "scalar", (0.0, 1.0),
              "MODIS mean annual maximum fAPAR (PT-JPL fAPARmax_mean_CMG_int16.tif x 1e-4), mean of the "
              "0.05 deg land pixels of the cell (MODIS water masked)"),
    Covariate("c4_frac", "1", "C4 share of the vegetation", "scalar", (0.0, 1.0),
              "C4 plant fraction of the vegetation (BESS-JPL C4_fraction.tif in %, / 100; 1 deg, bilinear to the grid)"),
    *(Covariate(f"{g}_frac", "1", f"area fraction of {label}", "scalar", (0.0, 1.0),
                f"share of the cell's 0.05 deg MODIS MCD12C1 pixels in {label} (IGBP {codes})")
      for g, label, codes in (("forest", "forest", "1-5"), ("shrub_savanna", "shrubland and savanna", "6-9"),
                              ("grass", "grassland", "10"), ("wetland", "permanent wetland", "11"),
                              ("crop", "cropland", "12, 14"), ("water", "water", "0"))),
)

#: Every known covariate, by name.
COVARIATES: dict[str, Covariate] = {c.name: c for c in _TABLE}
#: The cube layer with each cell's wetland area fraction (0–1): the real cube always writes it (MODIS
#: share), a user raster of that name through the catalog replaces it; maps weight a wetland column
#: by it (:func:`socmap.cells.predict_columns`, docs/model.md §5.10).
WETLAND_FRACTION = "wetland_frac"


def covariate(name: str) -> Covariate:
    """The table row of covariate ``name``.

    Raises
    ------
    KeyError
        For an unknown name, listing the known ones (add a row to the table in
        ``socmap/data/covariates.py`` for a new covariate).
    """
    try:
        return COVARIATES[name]
    except KeyError:
        raise KeyError(
            f"unknown covariate {name!r}; known: {', '.join(COVARIATES)}. Add a row to the table in "
            "socmap/data/covariates.py for a new covariate"
        ) from None


def long_name(name: str, source: str | None = None) -> str:
    """Long name of covariate ``name``, with its data source in brackets when given.

    ``long_name("mat_c", "ERA5 2000-2025")`` → ``"mean annual air temperature (ERA5 2000-2025)"``.
    """
    text = covariate(name).long_name
    return f"{text} ({source})" if source else text
