"""Data: the CONUS grid, the data catalog, the synthetic CONUS twin and site containers."""
