"""socmap.store.write_window (the map's write stage) against zarr's own writer."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from socmap import store as S

NY, NX, CHUNK = 70, 100, 32  # windows of 32: whole chunks, and edge chunks cut by the grid on both axes


def template(path: Path) -> dict[str, S.VarSpec]:
    cube = xr.Dataset(coords={"y": np.linspace(49.0, 25.0, NY), "x": np.linspace(-124.0, -67.0, NX)})
    specs = S.variable_specs(["clay", "ph"], ensemble=True)
    attrs = {"store_version": S.STORE_VERSION, "run_name": "t"}
    S.create_template(path, cube, specs, CHUNK, attrs)
    return specs


def windows():
    return [(y, x) for y in range(0, NY, CHUNK) for x in range(0, NX, CHUNK)]


def window_arrays(specs, y0: int, x0: int, seed: int) -> dict[str, np.ndarray]:
    """Every variable of one window: values on a random land share, NaN (or 0) elsewhere."""
    rng = np.random.default_rng(seed)
    ny, nx = min(CHUNK, NY - y0), min(CHUNK, NX - x0)
    land = rng.random((ny, nx)) < 0.6
    out = {}
    for name, spec in specs.items():
        shape = (ny, nx, 20) if spec.layered else (ny, nx)
        if spec.dtype == "float32":
            a = np.full(shape, np.nan, np.float32)
            a[land] = rng.normal(size=(int(land.sum()),) + shape[2:]).astype(np.float32)
        else:
            a = np.where(land, rng.integers(1, 17, (ny, nx)), 0).astype(spec.dtype)
        out[name] = a
    return out


def write_with_zarr(path: Path, arrays, y0, x0):
    group = zarr.open_group(str(path), mode="r+")
    for name, arr in arrays.items():
        group[name][y0:y0 + arr.shape[0], x0:x0 + arr.shape[1], ...] = arr


def chunk_files(path: Path, specs) -> dict[str, bytes]:
    return {f"{n}/{f.name}": f.read_bytes() for n in specs for f in sorted((path / n).iterdir())
            if not f.name.startswith(".")}


def test_windows_write_the_bytes_zarr_writes_and_read_back_the_same(tmp_path):
    direct, reference = tmp_path / "a" / S.STORE_NAME, tmp_path / "b" / S.STORE_NAME
    specs = template(direct)
    template(reference)
    for k, (y0, x0) in enumerate(windows()):
        arrays = window_arrays(specs, y0, x0, k)
        S.write_window(direct, arrays, y0, x0)
        write_with_zarr(reference, arrays, y0, x0)
    a, b = chunk_files(direct, specs), chunk_files(reference, specs)
    assert a == b  # every chunk, edge chunks included, byte for byte (no window here is all fill)
    got, expected = S.open_store(direct.parent).load(), S.open_store(reference.parent).load()
    for name in specs:
        assert got[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got[name].values, expected[name].values, err_msg=name)
    assert int(np.isfinite(got["soc"].values).sum()) > 0


def test_an_all_fill_window_reads_as_fill(tmp_path):
    """zarr leaves an all-fill chunk out; written here, it reads the same."""
    path = tmp_path / S.STORE_NAME
    specs = template(path)
    arrays = window_arrays(specs, 0, 0, 1)
    arrays = {n: np.full_like(a, np.nan) if a.dtype.kind == "f" else np.zeros_like(a) for n, a in arrays.items()}
    S.write_window(path, arrays, 0, 0)
    ds = xr.open_zarr(path)
    assert bool(np.isnan(ds["soc"].values).all()) and int(ds[S.LAND_MASK].values.max()) == 0


@pytest.mark.parametrize("case", ["misaligned", "no-consolidated-metadata"])
def test_windows_that_are_not_one_chunk_go_through_zarr(tmp_path, case):
    path = tmp_path / S.STORE_NAME
    specs = template(path)
    if case == "no-consolidated-metadata":
        (path / ".zmetadata").unlink()
        y0, x0 = CHUNK, 0
    else:
        y0, x0 = 5, 7  # inside a chunk: a padded chunk file would overwrite its other cells
    arrays = window_arrays(specs, y0, x0, 2)
    arrays = {n: a[: CHUNK - 8, : CHUNK - 8] for n, a in arrays.items()}
    S.write_window(path, arrays, y0, x0)
    group = zarr.open_group(str(path), mode="r")
    for name, arr in arrays.items():
        np.testing.assert_array_equal(group[name][y0:y0 + arr.shape[0], x0:x0 + arr.shape[1], ...], arr, err_msg=name)
    # and nothing outside the window was written
    outside = group["soc"][y0 + arr.shape[0]:, :, :]
    assert bool(np.isnan(outside).all())


def test_a_store_created_again_at_the_same_path_is_written_with_its_new_layout(tmp_path):
    """The chunk layouts are cached per process while the consolidated metadata is unchanged; a new
    template (other chunks) at the same path is read afresh."""
    global CHUNK
    path = tmp_path / S.STORE_NAME
    specs = template(path)
    S.write_window(path, window_arrays(specs, 0, 0, 3), 0, 0)
    old = CHUNK
    try:
        CHUNK = 16
        specs = template(path)
        arrays = window_arrays(specs, 16, 16, 4)
        S.write_window(path, arrays, 16, 16)
    finally:
        CHUNK = old
    group = zarr.open_group(str(path), mode="r")
    assert group["soc"].chunks == (16, 16, 20)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(group[name][16:32, 16:32, ...], arr, err_msg=name)
    assert bool(np.isnan(group["soc"][:16, :, :]).all())
