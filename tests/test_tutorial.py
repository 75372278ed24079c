"""The tutorial notebook (docs/tutorial.ipynb) runs from top to bottom and writes its GeoTIFF."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


@pytest.mark.slow
def test_tutorial_notebook_runs_and_exports_a_geotiff(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat/nbclient/ipykernel")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # the kernel is a child process: it must import this checkout, and write into tmp_path
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("SOCMAP_TUTORIAL_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    tifs = sorted((tmp_path / "work" / "geotiff").glob("*.tif"))
    assert [t.name for t in tifs] == ["soc_stock_0_30cm.tif"]
    assert tifs[0].stat().st_size > 1000
    # the map step recorded the CONUS totals
    import json

    record = json.loads((tmp_path / "work" / "runs" / "my-kan" / "map.json").read_text())
    assert record["totals"]["stocks"]["soc_stock_0_30cm"]["total_pg_c"] > 0
