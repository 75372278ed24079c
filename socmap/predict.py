"""Point predictions from a trained run: lon, lat, depth -> SOC, stocks and (hybrid) parameters.

Covariates and forcing come from the run's covariate cube at the nearest land cell; the
prediction is :func:`socmap.cells.predict_cells` (hybrid: θ from the mean of the fold models'
outputs; baseline: the mean of the fold models' SOC). Points outside the grid, on water, or
without covariates get a per-row ``status`` instead of a crash.

``socmap predict`` (:func:`predict_file`) checks the points file and the output path before
computing anything, then streams the points in batches (memory bounded by the batch size, not
the file), writes the result through a temporary file renamed into place, and writes a JSON
record beside it (run, encoder, fold models used, counts, throughput, seconds per stage).

Throughput (issue 17): the covariate cube's fields are read into memory once per file (when they
fit :data:`CUBE_MEMORY_BYTES`), points with the same solve inputs (cell, latitude, land unit —
e.g. the depths of one profile) are solved once and their SOC profile interpolated to each depth,
the solves run in chunks of :data:`SOLVE_BATCH` on one torch thread, and the CSV is formatted
column by column with NumPy (:func:`csv_text`) instead of value by value.
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
from socmap.data.cube import FORCING_VARS, cell_forcing, cell_values, open_cube, sample_grid
from socmap.fsutil import atomic_path, probe_writable
from socmap.runs import Run, open_run
from socmap.stages import StageClock, maybe_stage, sum_stages
from socmap.store import SOC, STOCKS

log = logging.getLogger(__name__)
REQUIRED = ("lon", "lat", "depth_m")
#: Optional column: the point's land unit (wetland flag), see :func:`wetland_flags`.
WETLAND = "wetland"
#: Deepest point depth (m): the bottom interface of the 20 CLM5 layers.
MAX_DEPTH_M = 8.6
#: Points per batch of ``socmap predict``: read, predicted and written together.
DEFAULT_BATCH = 8192
#: Unique solves per call of the solver (~40 KB of working memory each): the solver's and the
#: forcing preparation's per-site cost is lowest around this size (benchmarks/predict.py).
SOLVE_BATCH = 4096
#: The covariate-cube fields a prediction reads are held in memory when they take at most this
#: many bytes (a 0.05° CONUS cube: ~0.1 GB); a larger cube is read from the store for every batch.
CUBE_MEMORY_BYTES = 1 << 30
#: Significant digits of the floats ``socmap predict`` writes: a decimal of up to 15 digits (as
#: input coordinates are) is written back unchanged, a computed value to < 1e-14 relative.
CSV_DIGITS = 15


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
        # only the values that did not parse are looked at as text (a per-value Python step)
        failed = values[c].isna() & df[c].notna()
        text = df.index[failed][df[c][failed].astype(str).str.strip() != ""] if failed.any() else df.index[:0]
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


def _point_source(run: Run, cube):
    """The cube fields that predicting points of ``run`` reads (land mask, the models' covariates,
    for a hybrid the forcing's climate), in memory when they fit :data:`CUBE_MEMORY_BYTES`.

    Read once per file instead of once per batch; memory is set by the cube, not the points.
    """
    names = ["land_mask", *cube_inputs(run.covariates), *(FORCING_VARS if run.hybrid else ())]
    fields = cube[list(dict.fromkeys(n for n in names if n in cube.data_vars))]
    if fields.nbytes <= CUBE_MEMORY_BYTES:
        return fields.load(scheduler="synchronous")  # no thread pool left behind in a process that forks
    log.info("covariate cube fields take %.1f GB (> %.1f GB): read from the store for every batch (slower)",
             fields.nbytes / 1e9, CUBE_MEMORY_BYTES / 1e9)
    return fields


def _output_columns(run: Run) -> list[str]:
    return ["soc_g_m3", *STOCKS, *(NAMES if run.hybrid else ())]


def _predict_block(run: Run, src, out: pd.DataFrame, device: str | None = None,
                   clock: StageClock | None = None) -> pd.DataFrame:
    """Predict one block of points (columns lon, lat, depth_m already numeric); returns it with the
    ``status`` and output columns added (:func:`_point_source` gives ``src``)."""
    lon, lat, depth = (out[c].to_numpy(dtype=float) for c in REQUIRED)
    with maybe_stage(clock, "covariates"):
        sample = sample_grid(src, lon, lat)
        status = sample.status.astype(object)
        status[~(np.isfinite(lon) & np.isfinite(lat))] = "missing lon/lat"
        status[(status == "ok") & ~(np.isfinite(depth) & (depth >= 0) & (depth <= MAX_DEPTH_M))] = f"bad depth (need 0-{MAX_DEPTH_M:g} m)"
        ok = np.flatnonzero(status == "ok")
        cov = cell_values(src, cube_inputs(run.covariates), sample.iy[ok], sample.ix[ok])
        finite = np.isfinite(cov).all(1)
        status[ok[~finite]] = "missing covariates"
        ok, cov = ok[finite], cov[finite]
        flags = wetland_flags(out)[ok]
    columns = _output_columns(run)
    values = {c: np.full(len(out), np.nan) for c in columns}
    for wet in np.unique(flags):  # each point in its own land unit (a wetland: the learned anoxia acts)
        grp = np.flatnonzero(flags == wet)
        if run.hybrid:
            _predict_hybrid(run, src, sample, lat, depth, ok[grp], cov[grp], float(wet), values, device, clock)
        else:
            _predict_baseline(run, depth, ok[grp], cov[grp], float(wet), values, clock)
    return out.assign(status=status, **values)


def _predict_hybrid(run: Run, src, sample, lat: np.ndarray, depth: np.ndarray, rows: np.ndarray, cov: np.ndarray,
                    wet: float, values: dict[str, np.ndarray], device: str | None, clock: StageClock | None) -> None:
    """Hybrid SOC, stocks and θ at the points ``rows`` (one land unit), into ``values`` in place.

    Points whose solve inputs are the same — cube cell (its covariates and climate), latitude
    (the forcing's day length) and land unit — are solved once; each point's SOC is that profile
    interpolated to its own depth (``socmap.clm5.interpolate_to_depths``, as
    :func:`socmap.cells.predict_cells` does with ``depth_m``), so the result is the per-point one.
    """
    import torch

    from socmap.clm5 import interpolate_to_depths
    from socmap.clm5.grid import N_LAYERS

    with maybe_stage(clock, "covariates"):
        cell = sample.iy[rows].astype(np.int64) * int(src.sizes["x"]) + sample.ix[rows]
        keys = np.stack([cell, lat[rows].view(np.int64)], axis=1)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        solved = {c: np.empty(len(first)) for c in values if c != "soc_g_m3"}
        soc = np.empty((len(first), N_LAYERS))
    for start in range(0, len(first), SOLVE_BATCH):
        pick = first[start:start + SOLVE_BATCH]  # one representative point per unique solve
        at = rows[pick]
        with maybe_stage(clock, "forcing"):
            forcing = cell_forcing(src, sample.iy[at], sample.ix[at], lat[at])
        x = with_flag_input(run.predictors, cov[pick], wet)  # a model trained with the flag as an input
        res = predict_cells(run.predictors, x, forcing, default=False, diagnostics=False, device=device,
                            wetland=wet, clock=clock).values
        sl = slice(start, start + len(pick))
        soc[sl] = res[SOC]
        for c in solved:
            solved[c][sl] = res[c]
    with maybe_stage(clock, "depths"):
        at_depth = interpolate_to_depths(torch.as_tensor(soc[inverse]), torch.as_tensor(depth[rows, None]))
        values["soc_g_m3"][rows] = at_depth[:, 0].numpy()
        for c, v in solved.items():
            values[c][rows] = v[inverse]


def _predict_baseline(run: Run, depth: np.ndarray, rows: np.ndarray, cov: np.ndarray, wet: float,
                      values: dict[str, np.ndarray], clock: StageClock | None) -> None:
    """Baseline SOC at each point's depth (evaluated there, not interpolated) and stocks, in place."""
    x = with_flag_input(run.predictors, cov, wet)
    with maybe_stage(clock, "baseline"):
        for start in range(0, len(rows), SOLVE_BATCH):
            sl = slice(start, start + SOLVE_BATCH)
            res = predict_cells(run.predictors, x[sl], None, default=False, diagnostics=False,
                                depth_m=depth[rows[sl], None]).values
            values["soc_g_m3"][rows[sl]] = res[SOC_AT_DEPTH][:, 0]
            for c in STOCKS:
                values[c][rows[sl]] = res[c]


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
    src = _point_source(run, open_cube(run.data_dir / "cube.zarr"))
    with _threads(device):
        out = _predict_block(run, src, points.copy(), device if run.hybrid else None)
    n_bad = int((out["status"] != "ok").sum())
    if n_bad:
        log.warning("%d of %d points not predicted (see the status column)", n_bad, len(out))
    return out


def _threads(device: str):
    """One torch thread on the CPU: on a busy machine torch's threads wait on each other
    (:func:`socmap.devices.torch_threads`); nothing changes on a GPU."""
    from contextlib import nullcontext

    from socmap.devices import torch_threads

    return torch_threads(1) if device == "cpu" else nullcontext()


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


def resolve_workers(workers: int | None, device: str, n_batches: int) -> int:
    """Worker processes of ``socmap predict``: ``workers`` (None: one per usable core), one on a
    GPU (a forked child cannot use CUDA) or where ``fork`` is missing, never more than the batches."""
    import multiprocessing

    from socmap.fold_runner import usable_cores

    if device != "cpu" or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(workers or usable_cores(), n_batches))


#: What a forked worker predicts with: (run, cube fields, device), set by the parent before the fork.
_WORKER_STATE: tuple[Run, Any, str | None] | None = None


def _init_worker() -> None:
    """A forked worker's first step: one torch thread (the parent's OpenMP threads do not exist here)."""
    import torch

    torch.set_num_threads(1)


def _predict_text(block: pd.DataFrame, header: bool) -> tuple[bytes, dict[str, int], dict[str, dict[str, float]]]:
    """One block predicted and formatted as CSV (in a worker, or inline): text, status counts, stages."""
    run, src, device = _WORKER_STATE
    clock = StageClock()
    res = _predict_block(run, src, block, device, clock)
    counts = {str(k): int(v) for k, v in res["status"].value_counts().items()}
    with clock.stage("write"):
        text = csv_text(res, header=header)
    return text, counts, clock.stages


def _predicted(blocks: Iterator[pd.DataFrame], workers: int, device: str, clock: StageClock
               ) -> Iterator[tuple[bytes, dict[str, int], int]]:
    """``(csv text, status counts, points)`` of each block, in file order, computed inline
    (``workers`` 1) or by forked worker processes with at most 2 blocks each in flight (memory
    bounded by the batch, not the file)."""
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    def merge(stages: dict[str, dict[str, float]]) -> None:
        clock.stages = sum_stages([clock.stages, stages], digits=9)

    def read() -> pd.DataFrame | None:
        with clock.stage("read"):
            block = next(blocks, None)
            if block is not None:
                for c in REQUIRED:
                    block[c] = pd.to_numeric(block[c], errors="coerce")
            return block

    if workers == 1:
        with _threads(device):
            k = 0
            while (block := read()) is not None:
                text, counts, stages = _predict_text(block, k == 0)
                merge(stages)
                k += 1
                yield text, counts, len(block)
        return
    # fork, not spawn: a worker inherits the opened run and the cube fields (copy-on-write) and
    # imports nothing; it sets one torch thread before any torch work (as torch's DataLoader
    # workers do), so no inherited OpenMP state is used, and the fields were loaded without Dask threads
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_init_worker)
    try:
        pending: deque = deque()
        k = 0
        while True:
            while len(pending) < 2 * workers and (block := read()) is not None:
                pending.append((pool.submit(_predict_text, block, k == 0), len(block)))
                k += 1
            if not pending:
                break
            future, n = pending.popleft()
            try:
                text, counts, stages = future.result()
            except BrokenProcessPool:
                raise PointsError(f"a socmap predict worker process died (killed, or out of memory: {workers} workers "
                                  "each hold a batch); rerun with fewer --workers or a smaller --batch-size") from None
            merge(stages)
            yield text, counts, n
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def predict_file(run_dir: str | Path, points: str | Path, out: str | Path, *, batch: int = DEFAULT_BATCH,
                 allow_partial: bool = False, skip_bad_rows: bool = False, progress: bool = True,
                 device: str = "auto", workers: int | None = None) -> dict[str, Any]:
    """``socmap predict``: points CSV -> output CSV, streamed in batches; returns the run record.

    Order: check the output path, open and check the run (:func:`socmap.runs.open_run`), check
    every row of the points file (one pass, :func:`check_points`), then predict ``batch`` points at
    a time, appending to a temporary file beside ``out`` that is renamed to ``out`` at the end
    (an error or Ctrl-C leaves no output). The record (also written to ``out`` + ``.json``) holds
    the run, encoder, fold models used, ``partial_ensemble``, status counts, seconds, points/s,
    ``workers`` and ``stages`` (wall/user/sys seconds of read, covariates, forcing, prepare,
    encoder, solve, stocks, depths, write, summed over the workers: :class:`socmap.stages.StageClock`).
    ``device`` (``auto``, ``cpu``, ``cuda``): where the hybrid's encoder and solve run.
    ``workers``: processes predicting batches side by side (:func:`resolve_workers`; None: one
    per core on the CPU); the output is the same for any number.
    """
    from tqdm.auto import tqdm

    global _WORKER_STATE
    device = _device(device)
    points, out = Path(points), check_output(out)
    if batch < 1:
        raise PointsError(f"--batch-size must be >= 1, not {batch}")
    if workers is not None and workers < 1:
        raise PointsError(f"--workers must be >= 1, not {workers}")
    if not points.is_file():
        raise PointsError(f"points file {points} not found")
    run = open_run(run_dir, allow_partial=allow_partial)
    cube = open_cube(run.data_dir / "cube.zarr")
    clock = StageClock()
    t0 = time.perf_counter()
    n_rows, first_error = 0, None
    with clock.stage("read"):
        for block in _blocks(points, batch):  # first pass: nothing is computed from a file that fails
            problems = check_points(block.reset_index(drop=True), points, n_rows)
            if problems and first_error is None:
                first_error = (problems, n_rows)
            n_rows += len(block)
    if first_error is not None:
        _raise_row_problems(first_error[0], points, skip_bad_rows, first_error[1])
    if n_rows == 0:
        raise PointsError(f"{points}: no points (only a header); add rows lon,lat,depth_m")
    n_workers = resolve_workers(workers, device, -(-n_rows // batch))
    with clock.stage("covariates"):
        src = _point_source(run, cube)
    counts: dict[str, int] = {}
    _WORKER_STATE = (run, src, device if run.hybrid else None)  # inherited by forked workers
    bar = None
    try:
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:  # renamed into place when complete
            for text, block_counts, n in _predicted(_blocks(points, batch), n_workers, device, clock):
                bar = bar or tqdm(total=n_rows, desc="socmap predict", unit="pt", disable=None if progress else True)
                for s, c in block_counts.items():
                    counts[s] = counts.get(s, 0) + c
                with clock.stage("write"):
                    fh.write(text)
                bar.update(n)
    finally:
        _WORKER_STATE = None
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    record = {
        "command": "socmap predict", "run": str(Path(run_dir).resolve()), "encoder": run.encoder,
        "points_file": str(points.resolve()), "out": str(out.resolve()), "points": n_rows, "status_counts": counts,
        "fold_models": run.fold_models, "partial_ensemble": run.partial, "fold_models_missing": run.missing_models,
        "batch": batch, "workers": n_workers, "device": device, "seconds": round(seconds, 3),
        "points_per_s": round(n_rows / seconds, 1) if seconds > 0 else None,
        "stages": sum_stages([clock.stages]),
    }
    from socmap.fsutil import write_atomic

    write_atomic(out.parent / (out.name + ".json"), json.dumps(record, indent=1) + "\n")
    n_bad = n_rows - counts.get("ok", 0)
    if n_bad:
        log.warning("%d of %d points not predicted (see the status column)", n_bad, n_rows)
    return record


# ----------------------------------------------------------------------------------------
# CSV text, column by column: pandas' to_csv formats value by value in Python (~40 µs a row
# of 30 columns, more than the prediction itself)
# ----------------------------------------------------------------------------------------

#: "0000" … "9999" as ASCII, [10000, 4]: four digits per table look-up.
_DIGITS4 = np.array([list(f"{i:04d}".encode()) for i in range(10000)], dtype=np.uint8)


def _significant_digits(m: np.ndarray) -> np.ndarray:
    """The 15 ASCII digits [n, 15] uint8 of integers 10^14 <= m < 10^15 (int64 [n])."""
    hi, lo = np.divmod(m, 10**8)  # hi < 10^7, lo < 10^8
    a, b = np.divmod(hi.astype(np.int32), 10**4)
    c, d = np.divmod(lo.astype(np.int32), 10**4)
    return _DIGITS4[np.stack([a, b, c, d], axis=1)].reshape(-1, 16)[:, 1:]


def _float_fields(a: np.ndarray) -> np.ndarray:
    """Floats as CSV text: [n, W] uint8, each row one value's ASCII padded with NUL bytes.

    :data:`CSV_DIGITS` significant digits without trailing zeros, positional for exponents −5 …
    14 (``-97.123457``, ``0.00003``, ``12.0``) and ``1.5e-07`` beyond; NaN is empty (as pandas
    writes it); zero, ±inf and |exponent| > 290 as Python writes them. Values are grouped by
    decimal exponent, so each group's layout is fixed and built from whole columns.
    """
    ndig = CSV_DIGITS
    a = np.asarray(a, dtype=np.float64).ravel()
    out = np.zeros((a.size, 2 * ndig + 8), np.uint8)
    v = np.abs(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.floor(np.log10(v))
    regular = np.isfinite(e) & (np.abs(e) <= 290)
    idx = np.flatnonzero(regular)
    width = 1  # the widest text written: the matrix is cut to it (less to lay side by side and drop)
    if idx.size:
        vi, ei = v[idx], e[idx].astype(np.int64)
        m = np.rint(vi * np.power(10.0, ndig - 1 - ei))
        # log10 rounded across a power of ten, or rounding carried to one digit more: exponent ± 1
        shift = (m >= 10.0**ndig).astype(np.int64) - (m < 10.0 ** (ndig - 1))
        if shift.any():
            ei = ei + shift
            redo = shift != 0
            m[redo] = np.rint(vi[redo] * np.power(10.0, ndig - 1 - ei[redo]))
        digits = _significant_digits(np.clip(m, 10.0 ** (ndig - 1), 10.0**ndig - 1).astype(np.int64))
        k = ndig - np.argmax(digits[:, ::-1] != 48, axis=1)  # digits up to the last non-zero one
        trimmed = np.where(np.arange(ndig)[None, :] < k[:, None], digits, 0).astype(np.uint8)
        sign = np.where(np.signbit(a[idx]), 45, 0).astype(np.uint8)[:, None]
        order = np.argsort(ei, kind="stable")
        point = np.full((len(idx), 1), 46, np.uint8)
        for grp in np.split(order, np.flatnonzero(np.diff(ei[order])) + 1):
            ex = int(ei[grp[0]])
            g_digits, g_trim, n = digits[grp], trimmed[grp], len(grp)
            if 0 <= ex < ndig:  # 123.45: integer digits, the point, at least one fraction digit
                frac = g_trim[:, ex + 1:]
                first = frac[:, :1] if frac.shape[1] else np.zeros((n, 1), np.uint8)
                first = np.where(first == 0, 48, first).astype(np.uint8)
                parts = [sign[grp], g_digits[:, :ex + 1], point[:n], first, frac[:, 1:]]
            elif -5 <= ex < 0:  # 0.00123
                lead = np.frombuffer(b"0." + b"0" * (-ex - 1), np.uint8)
                parts = [sign[grp], np.broadcast_to(lead, (n, lead.size)), g_trim]
            else:  # 1.5e-07
                first = np.where(g_trim[:, 1:2] == 0, 48, g_trim[:, 1:2]).astype(np.uint8)
                tail = np.frombuffer(f"e{'-' if ex < 0 else '+'}{abs(ex):02d}".encode(), np.uint8)
                parts = [sign[grp], g_digits[:, :1], point[:n], first, g_trim[:, 2:], np.broadcast_to(tail, (n, tail.size))]
            text = np.concatenate(parts, axis=1)
            out[idx[grp], :text.shape[1]] = text
            width = max(width, text.shape[1])
    for i in np.flatnonzero(~regular & ~np.isnan(a)):  # zeros, infinities, extreme exponents: rare
        txt = np.frombuffer(repr(float(a[i])).encode(), np.uint8)
        out[i, :txt.size] = txt
        width = max(width, txt.size)
    return out[:, :width]


def _quote(text: str) -> str:
    """A CSV field as pandas' ``to_csv`` writes it (minimal quoting)."""
    return '"' + text.replace('"', '""') + '"' if any(ch in text for ch in ',"\r\n') else text


def _text_fields(column: pd.Series) -> np.ndarray:
    """A non-float column as CSV text [n, W] uint8 (NUL-padded): each distinct value formatted once."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    texts = [_quote(str(u)).encode() for u in uniques]
    width = max((len(t) for t in texts), default=0) + 1
    table = np.zeros((len(texts) + 1, width), np.uint8)  # the last row: missing values, written empty
    for j, t in enumerate(texts):
        table[j, :len(t)] = np.frombuffer(t, np.uint8)
    return table[codes]


def csv_text(frame: pd.DataFrame, header: bool = True) -> bytes:
    """``frame`` as CSV bytes (UTF-8, ``\n`` line ends, no index): what ``frame.to_csv(index=False)``
    reads back as, float64 columns to :data:`CSV_DIGITS` significant digits (other columns as
    ``str`` of each value).

    Vectorised: each column becomes a NUL-padded byte matrix (:func:`_float_fields`,
    :func:`_text_fields`), the matrices and separators are laid side by side and the padding dropped.
    """
    n = len(frame)
    pieces = []
    for j in range(frame.shape[1]):
        col = frame.iloc[:, j]
        pieces.append(_float_fields(col.to_numpy()) if col.dtype == np.float64 else _text_fields(col))
        pieces.append(np.full((n, 1), 10 if j == frame.shape[1] - 1 else 44, np.uint8))
    body = np.concatenate(pieces, axis=1).ravel() if pieces else np.zeros(0, np.uint8)
    head = (",".join(_quote(str(c)) for c in frame.columns) + "\n").encode() if header else b""
    return head + body[body != 0].tobytes()
