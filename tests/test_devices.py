"""--device for train/map/predict: one validation and resolution (socmap.devices), placement, clear errors.

Run on CPU-only machines: CUDA's presence is faked with ``torch.cuda.is_available`` where the
test is about the choice, never about running on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from socmap.devices import DeviceError, check_device_name, model_device, resolve_device


def _no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_known_names_pass(name):
    assert check_device_name(name) == name


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "", "cpu "])
def test_unknown_names_are_device_errors(name):
    with pytest.raises(DeviceError, match="auto, cpu, cuda"):
        check_device_name(name)


def test_auto_is_cuda_only_when_available(monkeypatch):
    _no_cuda(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_cuda_without_cuda_is_a_clear_error(monkeypatch):
    _no_cuda(monkeypatch)
    with pytest.raises(DeviceError, match="no CUDA GPU.*--device cpu"):
        resolve_device("cuda")


def test_cuda_index_beyond_the_gpus_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(DeviceError, match="1 CUDA GPU"):
        resolve_device("cuda:1")


def test_train_config_uses_the_same_validation():
    from pydantic import ValidationError

    from socmap.train_config import TrainConfig

    assert TrainConfig(device="cuda:0").device == "cuda:0"
    with pytest.raises(ValidationError, match="auto, cpu, cuda"):
        TrainConfig(device="gpu")


def test_train_resolves_through_devices(monkeypatch):
    from socmap.train import _device
    from socmap.train_config import TrainConfig

    _no_cuda(monkeypatch)
    assert _device(TrainConfig(device="auto")) == torch.device("cpu")
    with pytest.raises(DeviceError):
        _device(TrainConfig(device="cuda"))


def test_model_device_of_a_module_and_of_a_parameterless_one():
    assert model_device(torch.nn.Linear(2, 3)) == torch.device("cpu")
    assert model_device(torch.nn.Identity()) == torch.device("cpu")
    assert model_device(object()) == torch.device("cpu")


# ------------------------------------------------------------------ the cell path


@pytest.fixture(scope="module")
def cells(tiny_run):
    """Fold models, covariates and forcing of 40 land cells of the shared tiny run."""
    from socmap.data.cube import cell_forcing, cell_values, open_cube
    from socmap.runs import open_run

    run = open_run(tiny_run)
    cube = open_cube(run.data_dir / "cube.zarr")
    iy, ix = np.nonzero(cube["land_mask"].values.astype(bool))
    pick = np.random.default_rng(3).choice(iy.size, 40, replace=False)
    cov = cell_values(cube, run.covariates, iy[pick], ix[pick])
    return run.predictors, cov, cell_forcing(cube, iy[pick], ix[pick])


@pytest.mark.slow
def test_predict_cells_on_a_resolved_device_matches_the_default(cells, monkeypatch):
    from socmap.cells import predict_cells
    from socmap.stages import StageClock

    models, cov, forcing = cells
    ref = predict_cells(models, cov, forcing).values
    _no_cuda(monkeypatch)
    clock = StageClock()
    got = predict_cells(models, cov, forcing, device="auto", clock=clock).values
    assert set(got) == set(ref)
    for k in ref:
        assert isinstance(got[k], np.ndarray) and got[k].dtype == ref[k].dtype == np.float64
        np.testing.assert_array_equal(got[k], ref[k])
    # every stage of the cell path was timed, with non-negative seconds
    assert {"prepare", "encoder", "solve", "stocks", "diagnostics", "solve_default"} <= set(clock.stages)
    assert all(v >= 0 for row in clock.stages.values() for v in row.values())
    with pytest.raises(DeviceError):
        predict_cells(models, cov, forcing, device="cuda")


@pytest.mark.slow
def test_map_and_predict_cuda_without_cuda_exit_cleanly(tiny_run, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from socmap.cli import app

    _no_cuda(monkeypatch)
    points = tmp_path / "points.csv"
    points.write_text("lon,lat,depth_m\n-100,40,0.1\n")
    for args in (["map", "--run", str(tiny_run), "--device", "cuda", "--scheduler", "synchronous"],
                 ["predict", "--run", str(tiny_run), "--points", str(points), "--out", str(tmp_path / "o.csv"),
                  "--device", "cuda"]):
        res = CliRunner().invoke(app, args)
        text = " ".join(res.output.split())
        assert res.exit_code == 2, res.output
        assert "error:" in text and "no CUDA GPU" in text and "Traceback" not in res.output
    assert not (tmp_path / "o.csv").exists() and not (tiny_run / "maps.zarr.partial").exists()
    res = CliRunner().invoke(app, ["map", "--run", str(tiny_run), "--device", "gpu"])
    assert res.exit_code == 2 and "auto, cpu, cuda" in " ".join(res.output.split())
