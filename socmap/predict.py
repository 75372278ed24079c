"""Point predictions from a trained run: lon, lat, depth -> SOC, stocks and (hybrid) parameters.

Covariates and forcing come from the run's covariate cube at the nearest land cell; the
prediction is :func:`socmap.cells.predict_cells` (hybrid: θ from the mean of the fold models'
outputs; baseline: the mean of the fold models' SOC). Points outside the grid, on water, or
without covariates get a per-row ``status`` instead of a crash.

``socmap predict`` (:func:`predict_file`) checks the points file and the output path before
computing anything, then streams the points in batches (memory bounded by the batch size, not
the file), writes the result through a temporary file renamed into place, and writes a JSON
record beside it (run, encoder, fold models used, counts, throughput).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from socmap.cells import SOC_AT_DEPTH, cube_inputs, predict_cells, with_flag_input
from socmap.clm5.parameters import NAMES
from socmap.data.cube import cell_forcing, cell_values, open_cube, sample_grid
from socmap.fsutil import atomic_path, probe_writable
from socmap.runs import Run, open_run
from socmap.store import STOCKS

log = logging.getLogger(__name__)
REQUIRED = ("lon", "lat", "depth_m")
#: Optional column: the point's land unit (wetland flag), see :func:`wetland_flags`.
WETLAND = "wetland"
#: Deepest point depth (m): the bottom interface of the 20 CLM5 layers.
MAX_DEPTH_M = 8.6
#: Points per batch of ``socmap predict`` (~40 KB of working memory per point in the solve).
DEFAULT_BATCH = 8192


class PointsError(ValueError):
    """A points file or output path cannot be used: names the file, the column, the rows and the fix."""


def _rows(index: pd.Index, offset: int = 0, first: int = 5) -> str:
    """File line numbers (header = line 1) of the rows ``index``, the first few."""
    lines = [str(int(i) + 2 + offset) for i in index[:first]]
    return ", ".join(lines) + (f" … ({len(index)} rows)" if len(index) > first else "")


def check_points(df: pd.DataFrame, path: str | Path, offset: int = 0) -> list[tuple[pd.Index, str]]:
    """Problems of a block of points: ``[(rows, reason), ...]``; raises :class:`PointsError` for a
    missing column, text in a number column, or longitude and latitude that look swapped.

    ``offset`` is the block's first data row in the file (for line numbers in messages). The
    returned row problems (missing value, coordinates or depth out of range) are what
    ``skip_bad_rows`` turns into per-row statuses.
    """
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise PointsError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))}); "
                          "the file needs lon, lat, depth_m (degrees east, degrees north, metres)")
    values = {}
    for c in REQUIRED:
        values[c] = pd.to_numeric(df[c], errors="coerce")
        text = df.index[values[c].isna() & df[c].notna() & (df[c].astype(str).str.strip() != "")]
        if len(text):
            raise PointsError(f"{path}: column {c} holds text that is not a number ({df[c][text[0]]!r}) at line(s) "
                              f"{_rows(text, offset)}; fix or remove those rows")
    lon, lat, depth = values["lon"], values["lat"], values["depth_m"]
    bad_lat = (lat.abs() > 90)
    if bad_lat.any() and (lon[bad_lat].abs() <= 90).all():
        raise PointsError(f"{path}: lat is outside -90..90 at line(s) {_rows(df.index[bad_lat], offset)} while lon "
                          "holds latitude-like values: lon and lat look swapped; swap the two columns")
    if WETLAND in df.columns:
        wetland_flags(df, path, offset)  # raises naming the column, lines and values it cannot read
    problems = []
    for c in REQUIRED:
        rows = df.index[values[c].isna()]
        if len(rows):
            problems.append((rows, f"missing value in {c}"))
    for rows, why in ((df.index[bad_lat], "lat outside -90..90"),
                      (df.index[(lon < -180) | (lon > 360)], "lon outside -180..360"),
                      (df.index[(depth < 0) | (depth > MAX_DEPTH_M)], f"depth_m outside 0-{MAX_DEPTH_M:g} m")):
        if len(rows):
            problems.append((rows, why))
    return problems


def read_points(path: str | Path, *, skip_bad_rows: bool = False) -> pd.DataFrame:
    """A CSV of points with columns lon, lat, depth_m (degrees, metres), checked (:func:`check_points`).

    Rows with a missing value or an out-of-range coordinate or depth are a :class:`PointsError`
    naming the column and the lines, unless ``skip_bad_rows`` (they are then predicted as NaN
    with a ``status``).
    """
    path = Path(path)
    if not path.is_file():
        raise PointsError(f"points file {path} not found")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PointsError(f"{path}: not a readable CSV ({str(exc).strip()}); the file needs a header line lon,lat,depth_m") from None
    _raise_row_problems(check_points(df, path), path, skip_bad_rows)
    for c in REQUIRED:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def wetland_flags(df: pd.DataFrame, path: str | Path = "points", offset: int = 0) -> np.ndarray:
    """The points' land unit [N] float64: 1 in a wetland, 0 upland (the optional ``wetland`` column,
    spelled as in profile tables: 1/0, true/false, yes/no, wetland/upland; blank or absent = 0).

    A hybrid trained with the learned anoxia solves a wetland point as a wetland column (docs/model.md §5.10).
    """
    from socmap.data.intake import ProfileDataError, flag_column

    if WETLAND not in df.columns:
        return np.zeros(len(df))
    lines = pd.DataFrame({WETLAND: df[WETLAND].to_numpy(), "_line": df.index.to_numpy() + 2 + offset})
    try:
        return flag_column(lines, WETLAND, path).to_numpy(np.float64)
    except ProfileDataError as exc:
        raise PointsError(str(exc)) from None


def _raise_row_problems(problems: list[tuple[pd.Index, str]], path: str | Path, skip_bad_rows: bool, offset: int = 0) -> None:
    if problems and not skip_bad_rows:
        rows, why = problems[0]
        raise PointsError(f"{path}: {why} at line(s) {_rows(rows, offset)}; fix or remove those rows, or pass "
                          "--skip-bad-rows to predict the others (those rows get a status instead of values)")


def _predict_block(run: Run, cube, out: pd.DataFrame, device: str | None = None) -> pd.DataFrame:
    """Predict one block of points (columns lon, lat, depth_m already numeric) in place; returns it."""
    sample = sample_grid(cube, out["lon"].to_numpy(dtype=float), out["lat"].to_numpy(dtype=float))
    status = sample.status.astype(object)
    lon, lat, depth = (out[c].to_numpy(dtype=float) for c in REQUIRED)
    status[~(np.isfinite(lon) & np.isfinite(lat))] = "missing lon/lat"
    status[(status == "ok") & ~(np.isfinite(depth) & (depth >= 0) & (depth <= MAX_DEPTH_M))] = f"bad depth (need 0-{MAX_DEPTH_M:g} m)"
    ok = np.flatnonzero(status == "ok")
    if len(ok):
        cov = cell_values(cube, cube_inputs(run.covariates), sample.iy[ok], sample.ix[ok])
        finite = np.isfinite(cov).all(1)
        status[ok[~finite]] = "missing covariates"
        ok, cov = ok[finite], cov[finite]
    out["status"] = status
    columns = ["soc_g_m3", *STOCKS, *(NAMES if run.hybrid else ())]
    for col in columns:
        out[col] = np.nan
    if len(ok):
        flags = wetland_flags(out)[ok]
        for wet in np.unique(flags):  # each point in its own land unit (a wetland: the learned anoxia acts)
            grp = np.flatnonzero(flags == wet)
            rows = ok[grp]
            forcing = cell_forcing(cube, sample.iy[rows], sample.ix[rows], lat[rows]) if run.hybrid else None
            x = with_flag_input(run.predictors, cov[grp], wet)  # a model trained with the flag as an input
            res = predict_cells(run.predictors, x, forcing, default=False, diagnostics=False, depth_m=depth[rows, None],
                                device=device if run.hybrid else None, wetland=float(wet)).values
            out.loc[out.index[rows], "soc_g_m3"] = res[SOC_AT_DEPTH][:, 0]
            for col in columns[1:]:
                out.loc[out.index[rows], col] = res[col]
    return out


def predict_points(run_dir: str | Path | Run, points: pd.DataFrame, *, allow_partial: bool = False,
                   device: str = "auto") -> pd.DataFrame:
    """SOC (g C m-3) at each point's depth, stocks and, for a hybrid run, the 21 parameters.

    ``points`` has columns lon, lat (degrees) and depth_m (m); the result adds ``status``,
    ``soc_g_m3``, the stocks (kg C m-2) and (hybrid) one column per parameter (physical units),
    NaN where ``status`` is not ``"ok"``. Everything in one batch: for large files use
    :func:`predict_file`. ``device``: where the hybrid's encoder and solve run
    (:func:`socmap.devices.resolve_device`).
    """
    device = _device(device)
    run = run_dir if isinstance(run_dir, Run) else open_run(run_dir, allow_partial=allow_partial)
    cube = open_cube(run.data_dir / "cube.zarr")
    out = _predict_block(run, cube, points.copy(), device)
    n_bad = int((out["status"] != "ok").sum())
    if n_bad:
        log.warning("%d of %d points not predicted (see the status column)", n_bad, len(out))
    return out


def _device(name: str) -> str:
    """The resolved device name (:func:`socmap.devices.resolve_device`); a bad one is a :class:`PointsError`."""
    from socmap.devices import DeviceError, resolve_device

    try:
        return str(resolve_device(name))
    except DeviceError as exc:
        raise PointsError(f"--device: {exc}") from None


def check_output(path: str | Path) -> Path:
    """The output CSV path, checked before any computing: its folder exists and is writable and
    the path is not a folder; :class:`PointsError` otherwise."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise PointsError(f"--out {path} is a folder; give a file name such as {path / 'predictions.csv'}")
    if not folder.is_dir():
        raise PointsError(f"--out {path}: the folder {folder} does not exist; create it first (mkdir -p {folder})")
    try:
        probe_writable(folder)
    except OSError as exc:
        raise PointsError(f"--out {path}: cannot write to {folder} ({exc.strerror or exc}); choose a writable folder") from None
    return path


def _blocks(path: Path, batch: int) -> Iterator[pd.DataFrame]:
    try:
        yield from pd.read_csv(path, chunksize=batch)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PointsError(f"{path}: not a readable CSV ({str(exc).strip()}); the file needs a header line lon,lat,depth_m") from None


def predict_file(run_dir: str | Path, points: str | Path, out: str | Path, *, batch: int = DEFAULT_BATCH,
                 allow_partial: bool = False, skip_bad_rows: bool = False, progress: bool = True,
                 device: str = "auto") -> dict[str, Any]:
    """``socmap predict``: points CSV -> output CSV, streamed in batches; returns the run record.

    Order: check the output path, open and check the run (:func:`socmap.runs.open_run`), check
    every row of the points file (one pass, :func:`check_points`), then predict ``batch`` points at
    a time, appending to a temporary file beside ``out`` that is renamed to ``out`` at the end
    (an error or Ctrl-C leaves no output). The record (also written to ``out`` + ``.json``) holds
    the run, encoder, fold models used, ``partial_ensemble``, status counts, seconds and points/s.
    ``device`` (``auto``, ``cpu``, ``cuda``): where the hybrid's encoder and solve run.
    """
    from tqdm.auto import tqdm

    device = _device(device)
    points, out = Path(points), check_output(out)
    if batch < 1:
        raise PointsError(f"--batch-size must be >= 1, not {batch}")
    if not points.is_file():
        raise PointsError(f"points file {points} not found")
    run = open_run(run_dir, allow_partial=allow_partial)
    cube = open_cube(run.data_dir / "cube.zarr")
    t0 = time.perf_counter()
    n_rows, first_error = 0, None
    for block in _blocks(points, batch):  # first pass: nothing is computed from a file that fails
        problems = check_points(block.reset_index(drop=True), points, n_rows)
        if problems and first_error is None:
            first_error = (problems, n_rows)
        n_rows += len(block)
    if first_error is not None:
        _raise_row_problems(first_error[0], points, skip_bad_rows, first_error[1])
    if n_rows == 0:
        raise PointsError(f"{points}: no points (only a header); add rows lon,lat,depth_m")
    counts: dict[str, int] = {}
    bar = tqdm(total=n_rows, desc="socmap predict", unit="pt", disable=None if progress else True)
    try:
        with atomic_path(out) as tmp:  # streamed into a temporary file, renamed when complete
            for k, block in enumerate(_blocks(points, batch)):
                for c in REQUIRED:
                    block[c] = pd.to_numeric(block[c], errors="coerce")
                res = _predict_block(run, cube, block, device)
                for s, n in res["status"].value_counts().items():
                    counts[str(s)] = counts.get(str(s), 0) + int(n)
                res.to_csv(tmp, mode="w" if k == 0 else "a", header=k == 0, index=False)
                bar.update(len(block))
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    record = {
        "command": "socmap predict", "run": str(Path(run_dir).resolve()), "encoder": run.encoder,
        "points_file": str(points.resolve()), "out": str(out.resolve()), "points": n_rows, "status_counts": counts,
        "fold_models": run.fold_models, "partial_ensemble": run.partial, "fold_models_missing": run.missing_models,
        "batch": batch, "device": device, "seconds": round(seconds, 3), "points_per_s": round(n_rows / seconds, 1) if seconds > 0 else None,
    }
    from socmap.fsutil import write_atomic

    write_atomic(out.parent / (out.name + ".json"), json.dumps(record, indent=1) + "\n")
    n_bad = n_rows - counts.get("ok", 0)
    if n_bad:
        log.warning("%d of %d points not predicted (see the status column)", n_bad, n_rows)
    return record
