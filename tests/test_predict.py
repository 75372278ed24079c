"""`socmap predict` at speed: grouped solves equal per-point solves, workers and chunks change
nothing, the column-by-column CSV writer reads back as pandas' own, bad options fail clearly."""

from __future__ import annotations

import io
import os
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socmap.data.synthetic import SynthConfig, write_synthetic
from socmap.train import train
from socmap.train_config import load_config


@pytest.fixture(scope="module")
def kan_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("predict")
    write_synthetic(base / "data", SynthConfig(resolution_deg=1.0, n_sites=120, seed=5, noise=0.05))
    run = base / "run"
    train(load_config(data_dir=str(base / "data"), folds=3, epochs=1, batch_size=32, kan_polish_iters=0,
                      kan_sparsify_epochs=0, kan_refit_epochs=0), run, progress=False)
    return run


def _points(run: Path) -> pd.DataFrame:
    """Profiles (one location, several depths), neighbours in the same cell at another latitude,
    the same locations as wetland columns, and points that get a status instead of values."""
    sites = pd.read_csv(run / "sites.csv")
    rng = np.random.default_rng(1)
    rows = []
    for j in range(6):
        lon, lat = float(sites.lon[j]), float(sites.lat[j])
        for depth in rng.uniform(0, 2, 3):  # a profile: one solve, three depths
            rows.append((lon, lat, depth, 0))
        rows.append((lon, lat + 1e-4, 0.3, 0))  # same cell, its own latitude: its own solve
        rows.append((lon, lat, 0.3, 1))  # same cell and latitude as a wetland column
    rows += [(-130.0, 40.0, 0.1, 0), (float(sites.lon[0]), float(sites.lat[0]), 9.5, 0)]  # off the grid; too deep
    order = rng.permutation(len(rows))  # profiles interleaved, as a file may have them
    return pd.DataFrame([rows[i] for i in order], columns=["lon", "lat", "depth_m", "wetland"])


def test_grouped_solves_equal_per_point_solves_and_each_input_is_solved_once(kan_run, monkeypatch):
    import socmap.predict as P
    from socmap.data.cube import open_cube, sample_grid
    from socmap.runs import open_run

    run = open_run(kan_run)
    pts = _points(kan_run)
    solved = []
    real = P.predict_cells
    monkeypatch.setattr(P, "predict_cells", lambda models, x, *a, **k: solved.append(len(x)) or real(models, x, *a, **k))
    grouped = P.predict_points(run, pts, device="cpu")
    ok = pts[grouped["status"] == "ok"]
    assert len(ok) == len(pts) - 2 and grouped.loc[grouped.status != "ok", "soc_g_m3"].isna().all()
    # one solve per distinct (cell, latitude, land unit) of the predicted points, not one per point
    g = sample_grid(open_cube(run.data_dir / "cube.zarr"), ok.lon.to_numpy(), ok.lat.to_numpy())
    assert sum(solved) == len(set(zip(g.iy, g.ix, ok.lat, ok.wetland))) == 6 * 3
    # the profile's depths share one solve but each gets SOC at its own depth
    profiles = [rows.index for _, rows in ok.groupby(["lon", "lat", "wetland"]) if len(rows) > 1]
    assert len(profiles) == 6 and all(len(rows) == 3 for rows in profiles)
    for rows in profiles:
        assert grouped.loc[rows, "soc_g_m3"].nunique() == 3 and grouped.loc[rows, "tau4s3"].nunique() == 1
    # known answer, exact: the distinct points predicted one batch at a time, once per depth set
    distinct = ok.drop_duplicates(["lon", "lat", "wetland"])
    by_rank = ok.assign(rank=ok.groupby(["lon", "lat", "wetland"]).cumcount())
    for rank, rows in by_rank.groupby("rank"):
        keys = list(zip(rows.lon, rows.lat, rows.wetland))
        batch = distinct.set_index(["lon", "lat", "wetland"], drop=False).copy()
        batch.loc[keys, "depth_m"] = rows.depth_m.to_numpy()
        alone = P.predict_points(run, batch.reset_index(drop=True), device="cpu").set_index(["lon", "lat", "wetland"])
        expect = alone.loc[keys].reset_index()[grouped.columns]
        pd.testing.assert_frame_equal(grouped.loc[rows.index].reset_index(drop=True), expect, rtol=0, atol=0)
    # and each point alone: the same up to the float32 encoder's rounding for a batch of one (~6e-8 in θ)
    singly = pd.concat([P.predict_points(run, pts.iloc[[i]], device="cpu") for i in range(len(pts))])
    pd.testing.assert_frame_equal(grouped.reset_index(drop=True), singly.reset_index(drop=True), rtol=1e-5)


def test_file_output_is_the_same_for_any_batch_chunk_and_worker_count(kan_run, tmp_path, monkeypatch):
    import socmap.predict as P

    pts = _points(kan_run)
    src = tmp_path / "points.csv"
    pts.assign(id=[f"p{i}" for i in range(len(pts))]).to_csv(src, index=False)
    texts, default = {}, P.SOLVE_BATCH
    for name, batch, workers, chunk in (("one batch", 1000, 1, default), ("batches", 4, 1, default),
                                        ("workers", 4, 2, default), ("chunks", 1000, 1, 2)):
        monkeypatch.setattr(P, "SOLVE_BATCH", chunk)
        record = P.predict_file(kan_run, src, tmp_path / f"{name}.csv", batch=batch, workers=workers, progress=False,
                                skip_bad_rows=True, device="cpu")
        assert record["status_counts"] == {"ok": len(pts) - 2, "outside grid": 1, "bad depth (need 0-8.6 m)": 1}
        assert record["workers"] == workers and {"read", "forcing", "solve", "write"} <= set(record["stages"])
        texts[name] = (tmp_path / f"{name}.csv").read_bytes()
    assert texts["workers"] == texts["batches"]  # the same batches, predicted in other processes: byte for byte
    one, *others = (pd.read_csv(io.BytesIO(texts[k])) for k in ("one batch", "batches", "chunks"))
    for other in others:  # other batch shapes: the same up to the float32 encoder's rounding (~6e-8 in θ)
        pd.testing.assert_frame_equal(one, other, rtol=1e-5)
        assert (one.drop(columns=["id", "status"]) != other.drop(columns=["id", "status"])).any(axis=None)
    monkeypatch.setattr(P, "SOLVE_BATCH", default)
    whole = P.predict_points(kan_run, pts, device="cpu")  # one batch too: equal to the written digits
    pd.testing.assert_frame_equal(one.drop(columns="id"), whole, check_dtype=False, rtol=1e-13)


def test_bad_workers_and_batch_are_clear_errors(kan_run, tmp_path):
    from socmap.predict import PointsError, predict_file

    src = tmp_path / "points.csv"
    _points(kan_run).to_csv(src, index=False)
    with pytest.raises(PointsError, match="--workers must be >= 1, not 0"):
        predict_file(kan_run, src, tmp_path / "out.csv", workers=0, progress=False)
    with pytest.raises(PointsError, match="--batch-size must be >= 1"):
        predict_file(kan_run, src, tmp_path / "out.csv", batch=0, progress=False)
    assert not (tmp_path / "out.csv").exists()


def _die(*args):
    os._exit(3)  # a worker killed mid-batch (out of memory, a signal)


def test_a_worker_that_dies_is_a_clear_error_and_leaves_no_output(kan_run, tmp_path, monkeypatch):
    import socmap.predict as P

    src = tmp_path / "points.csv"
    _points(kan_run).to_csv(src, index=False)
    monkeypatch.setattr(P, "_predict_text", _die)
    with pytest.raises(P.PointsError, match="worker process died .* fewer --workers or a smaller --batch-size"):
        P.predict_file(kan_run, src, tmp_path / "out.csv", batch=4, workers=2, skip_bad_rows=True, progress=False,
                       device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.csv"]  # no output, no temporary file


def test_resolve_workers():
    from socmap.predict import resolve_workers

    assert resolve_workers(4, "cpu", 2) == 2  # never more than the batches
    assert resolve_workers(3, "cuda:0", 10) == 1  # a forked child cannot use CUDA
    assert 1 <= resolve_workers(None, "cpu", 1000) and resolve_workers(None, "cpu", 1) == 1


@pytest.mark.parametrize("value, text", [(-97.123457, "-97.123457"), (38.5, "38.5"), (12.0, "12.0"), (3e-05, "0.00003"),
                                         (0.001234, "0.001234"), (1.5e-07, "1.5e-07"), (-2.5e-300, "-2.5e-300"),
                                         (1 / 3, "0.333333333333333"), (1e15, "1.0e+15"), (0.0, "0.0"),
                                         (-0.0, "-0.0"), (np.inf, "inf"), (np.nan, "")])
def test_float_text_known_answers(value, text):
    from socmap.predict import csv_text

    assert csv_text(pd.DataFrame({"v": [value]})) == f"v\n{text}\n".encode()


def test_text_fields_are_quoted_where_csv_needs_it():
    from socmap.predict import csv_text

    frame = pd.DataFrame({"a": ["\r", 'x"y', "a,b", "two\nlines", None, "plain"]})
    text = csv_text(frame)
    assert text == b'a\n"\r"\n"x""y"\n"a,b"\n"two\nlines"\n\nplain\n'  # pandas leaves a lone \r unquoted
    assert pd.read_csv(io.BytesIO(text))["a"].tolist()[:4] == ["\r", 'x"y', "a,b", "two\nlines"]


# no lone "\r": pandas' to_csv writes it unquoted, which reads back as a line break
_TEXT = st.text(alphabet=string.ascii_letters + string.digits + ' ,"\n-._', max_size=8)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(width=64), st.floats(-1e6, 1e6), st.integers(-10**12, 10**12),
                          st.one_of(st.none(), _TEXT), st.booleans()), min_size=0, max_size=30))
def test_csv_text_reads_back_as_pandas_to_csv(rows):
    """Known answer: pandas' own writer. Floats to 15 significant digits (< 1e-14 relative), the
    rest exactly; quoting, missing values and the header as pandas writes them."""
    from socmap.predict import csv_text

    frame = pd.DataFrame(rows, columns=["any float", "x,y", "id", 'na"me', "flag"])
    if not len(frame):
        frame = frame.astype({"any float": float, "x,y": float})
    ours = pd.read_csv(io.BytesIO(csv_text(frame)))
    theirs = pd.read_csv(io.StringIO(frame.to_csv(index=False)))
    pd.testing.assert_frame_equal(ours, theirs, rtol=1e-14, atol=0)
