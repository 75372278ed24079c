"""One run as the dashboard reads it: only the run folder (``run.json``, the site tables,
``truth.json``, the fold models and ``maps.zarr``), never the data folder it was trained on.

A run is opened once per process (:func:`load_run`, keyed on its resolved path) and shared by
all sessions. The only file written into the run is ``kan_curves.nc`` for a run mapped before
the curves were stored (computed once, :func:`socmap.kan_curves.load_or_compute`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from socmap.clm5.parameters import INDEX, PARAMETERS

from dashboards.curves import CurveAnalysis
from dashboards.layers import MapLayers
from dashboards.site_tables import SiteTables

RUN_RECORD = "run.json"
TRUTH = "truth.json"
MAP_RECORD = "map.json"


class RunOpenError(RuntimeError):
    """A run folder the dashboard cannot open; ``str()`` names the file and the fix."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunOpenError(f"{path} cannot be read ({exc}): it is damaged or incomplete; re-run the command that "
                           f"wrote it (`socmap train --resume` for run.json, `socmap map` for map.json)") from exc


class RunData:
    """A run folder: its record, predicted parameters, map layers, site tables and curves."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir).resolve()
        record_path = self.path / RUN_RECORD
        if not record_path.is_file():
            raise FileNotFoundError(f"{record_path} not found: {self.path} is not a finished socmap run "
                                    "(`socmap train --out RUN`, then `socmap map --run RUN`)")
        self.record: dict = _read_json(record_path)
        map_path = self.path / MAP_RECORD
        #: map.json written by `socmap map` (CONUS totals, timing), or None
        self.map_record: dict | None = _read_json(map_path) if map_path.is_file() else None
        self.layers = MapLayers(self.path)
        attrs = self.layers.ds.attrs
        self.name = str(attrs.get("run_name") or self.record.get("name") or self.path.name)
        self.encoder = str(attrs.get("encoder") or self.record.get("encoder") or self.record.get("config", {}).get("encoder", "?"))
        #: the parameters the encoder predicts (the others stay at their fixed value)
        self.parameters: list[str] = [p for p in (attrs.get("parameters") or self.record.get("parameters") or []) if p in INDEX]
        truth_path = self.path / TRUTH
        self.truth: dict | None = _read_json(truth_path) if truth_path.is_file() else None
        self.sites = SiteTables(self.path, self.layers.ds)
        covariates = list(attrs.get("covariates") or self.record.get("data", {}).get("covariates") or [])
        self.analysis = CurveAnalysis(self.path, self.layers, covariates)

    def warm(self) -> None:
        """Load the stored KAN curves (computed once for a run mapped before they were stored)."""
        self.analysis.warm()


@lru_cache(maxsize=8)
def _load(resolved: str) -> RunData:
    return RunData(resolved)


def load_run(run_dir: str | Path) -> RunData:
    """The :class:`RunData` of a run folder, opened once per process and shared by all sessions."""
    return _load(str(Path(run_dir).resolve()))


def find_runs(root: str | Path = "runs") -> list[Path]:
    """Run folders under ``root`` that have been trained and mapped."""
    return sorted(p.parent for p in Path(root).glob("*/maps.zarr") if (p.parent / RUN_RECORD).exists())


def open_error(run_dir: str | Path) -> str | None:
    """Why the dashboard cannot open ``run_dir`` (one readable message), or None if it opens.

    Catches broadly on purpose: this is the boundary where a damaged run becomes an error
    panel instead of a blank page (``socmap.runs`` raises its own clear errors inside).
    """
    try:
        load_run(run_dir)
    except Exception as exc:  # noqa: BLE001 - any failure to open is shown, not raised
        text = str(exc) or type(exc).__name__
        where = str(Path(run_dir).resolve())
        return text if where in text else f"{where}: {text}"
    return None


def parameter_unit(name: str) -> str:
    return PARAMETERS[INDEX[name]].unit if name in INDEX else ""
