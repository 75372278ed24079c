"""The per-cube cache of the CLM5-default stocks (socmap.mapping.DefaultStockCache): reused, keyed, safe."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import xarray as xr

from socmap import store as S

pytestmark = pytest.mark.slow


def _cube_path(run_dir):
    from socmap.runs import open_run

    return open_run(run_dir).data_dir / "cube.zarr"


def test_second_map_reads_the_cache_and_equals_a_fresh_solve(run_copy, mapped_run, map_chunks, monkeypatch):
    """A map on a cube whose default stocks are cached solves no default column and writes the same store
    as a map that solves them (bit for bit)."""
    from socmap import cells
    from socmap.mapping import default_cache_dir, map_run

    cache = default_cache_dir(_cube_path(mapped_run))
    assert sorted(cache.glob("*.npz")), "mapping the shared run should have filled the cube's cache"
    fresh = run_copy("uncached")
    map_run(fresh, scheduler="synchronous", chunks=map_chunks, progress=False, default_cache=False)

    solved = []
    real = cells.solve_default_stocks

    def counting(prepared, *a, **k):
        solved.append(prepared.batch_size)
        return real(prepared, *a, **k)

    monkeypatch.setattr(cells, "solve_default_stocks", counting)
    warm = run_copy("cached")
    map_run(warm, scheduler="synchronous", chunks=map_chunks, progress=False)
    assert solved == []  # the twin has no wetland column, so no default solve at all
    a, b = S.open_store(fresh).load(), S.open_store(warm).load()
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert any(name.startswith(S.DEFAULT_PREFIX) for name in a.data_vars)


def _window(seed: int = 0):
    rng = np.random.default_rng(seed)
    return xr.Dataset({"air_temp_c": (("month", "y", "x"), rng.normal(10, 5, (12, 3, 4)).astype("float32")),
                       "precip_mm": (("month", "y", "x"), rng.uniform(0, 100, (12, 3, 4)).astype("float32")),
                       "land_cover": (("y", "x"), rng.integers(1, 16, (3, 4)).astype("float32")),
                       "npp_g_m2_yr": (("y", "x"), rng.uniform(100, 900, (3, 4)).astype("float32"))},
                      coords={"y": [40.0, 39.5, 39.0], "x": [-100.0, -99.5, -99.0, -98.5]})


def test_cache_key_follows_every_input(tmp_path):
    from socmap.mapping import DefaultStockCache

    win = _window()
    iy, ix = np.array([0, 1, 2]), np.array([3, 0, 1])
    key = DefaultStockCache(str(tmp_path), win, iy, ix, "structured", "cpu").path
    assert DefaultStockCache(str(tmp_path), _window(), iy, ix, "structured", "cpu").path == key
    changed = win.copy(deep=True)
    changed["precip_mm"][5, 1, 0] += 1.0
    lat = win.assign_coords(y=[40.0, 39.5, 38.0])
    for other in [DefaultStockCache(str(tmp_path), changed, iy, ix, "structured", "cpu"),
                  DefaultStockCache(str(tmp_path), lat, iy, ix, "structured", "cpu"),
                  DefaultStockCache(str(tmp_path), win, iy[:2], ix[:2], "structured", "cpu"),
                  DefaultStockCache(str(tmp_path), win, iy, ix, "dense", "cpu"),
                  DefaultStockCache(str(tmp_path), win, iy, ix, "structured", "cuda:0")]:
        assert other.path != key


def test_cache_round_trip_and_bad_entries(tmp_path, caplog):
    from socmap.mapping import DefaultStockCache

    win = _window()
    iy, ix = np.array([0, 1, 2]), np.array([3, 0, 1])
    cache = DefaultStockCache(str(tmp_path / "c"), win, iy, ix, "structured", "cpu")
    assert cache.read() is None
    stocks = {k: np.arange(3.0) + j for j, k in enumerate(S.STOCKS)}
    cache.write(stocks)
    got = cache.read()
    assert set(got) == set(S.STOCKS) and all(np.array_equal(got[k], stocks[k]) for k in S.STOCKS)
    # an entry of another length (cannot be these cells) and a damaged file read as misses
    DefaultStockCache(str(tmp_path / "c"), win, iy[:2], ix[:2], "structured", "cpu").path.write_bytes(cache.path.read_bytes())
    assert DefaultStockCache(str(tmp_path / "c"), win, iy[:2], ix[:2], "structured", "cpu").read() is None
    cache.path.write_bytes(b"not a zip")
    with caplog.at_level(logging.WARNING):
        assert cache.read() is None
    assert "unreadable" in caplog.text


def test_unwritable_cache_folder_only_logs(tmp_path, caplog):
    from socmap.mapping import DefaultStockCache

    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = DefaultStockCache(str(blocker / "sub"), _window(), np.array([0]), np.array([0]), "structured", "cpu")
    with caplog.at_level(logging.WARNING):
        cache.write({k: np.zeros(1) for k in S.STOCKS})
    assert "cannot cache" in caplog.text and cache.read() is None
    # another window of the same map: solved again, but the folder is not warned about once per window
    caplog.clear()
    other = DefaultStockCache(str(blocker / "sub"), _window(1), np.array([1]), np.array([1]), "structured", "cpu")
    with caplog.at_level(logging.WARNING):
        other.write({k: np.zeros(1) for k in S.STOCKS})
    assert "cannot cache" not in caplog.text and other.read() is None


def test_given_default_stocks_replace_the_solve_and_are_checked():
    """predict_cells(default_stocks=...) equals solving them, and a wrong shape is a clear error."""
    from socmap.cells import _add_default, solve_default_stocks
    from socmap.clm5 import prepare_forcing
    from conftest import make_forcing

    prepared = prepare_forcing(make_forcing(5, seed=2))
    solved = {k: v.numpy() for k, v in solve_default_stocks(prepared).items()}
    hybrid = {k: np.full(5, 3.0) for k in S.STOCKS}
    a, b = dict(hybrid), dict(hybrid)
    _add_default(a, prepared, 5, "structured")
    _add_default(b, prepared, 5, "structured", known=solved)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    with pytest.raises(ValueError, match="default_stocks must hold"):
        _add_default(dict(hybrid), prepared, 5, "structured", known={S.STOCKS[0]: np.zeros(4)})
