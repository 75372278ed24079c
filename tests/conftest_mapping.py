"""Shared, session-cached fixtures for the mapping / export / distributed tests.

A tiny synthetic twin (1.0°, 150 sites), a 3-fold 2-epoch KAN run on it, and that run mapped
once in-process (``scheduler="synchronous"``, 8×8-cell chunks). Built once per test process
(the builders memoise on the session's base temp folder) and imported by the test modules.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHUNKS = 16  # 2 × 4 chunks on the 1° grid (25 × 59)
_CACHE: dict[str, Path] = {}


def _base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "mapping-shared"


def build_tiny_run(tmp_path_factory) -> Path:
    if "run" in _CACHE:
        return _CACHE["run"]
    from socmap.data.synthetic import SynthConfig, write_synthetic
    from socmap.train import load_config, train

    base = _base(tmp_path_factory)
    base.mkdir(parents=True, exist_ok=True)
    data = base / "data"
    write_synthetic(data, SynthConfig(resolution_deg=1.0, n_sites=150, seed=0))
    run = base / "runs" / "tiny"
    train(load_config(data_dir=str(data), epochs=2, folds=3, kan_polish_iters=5, kan_sparsify_epochs=2, kan_refit_epochs=2), run, progress=False)
    _CACHE["run"] = run
    return run


def copy_run(run: Path, name: str) -> Path:
    """A copy of a run folder (models, records) without its store: same cube, new run name."""
    dst = run.parent / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("maps.zarr*", "map.json", "site_residuals.csv", "cache"))
    return dst


def build_mapped_run(tmp_path_factory) -> Path:
    if "mapped" in _CACHE:
        return _CACHE["mapped"]
    from socmap.mapping import map_run

    run = copy_run(build_tiny_run(tmp_path_factory), "main")
    map_run(run, scheduler="synchronous", chunks=CHUNKS, progress=False)
    _CACHE["mapped"] = run
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return build_tiny_run(tmp_path_factory)


@pytest.fixture(scope="session")
def mapped_run(tmp_path_factory) -> Path:
    return build_mapped_run(tmp_path_factory)


@pytest.fixture(scope="session")
def main_store(mapped_run):
    from socmap.store import open_store

    return open_store(mapped_run).load()
