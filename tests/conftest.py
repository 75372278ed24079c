"""Shared fixtures: small, varied forcing batches for the CLM5 tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from socmap.clm5.forcing import Forcing

# The suite already runs on every core (pytest -n): train folds one after another unless a test asks
# for workers (fold_workers=2); subprocesses of the real CLI inherit it.
os.environ.setdefault("SOCMAP_FOLD_WORKERS", "1")


def make_forcing(n: int, seed: int = 0, *, frozen_fraction: float = 0.2) -> Forcing:
    """Random but physically shaped forcing: seasonal soil temperature (some sites frozen
    part or all of the year), scalars in 0–1, shallow and deep active layers, bedrock at
    varied layers, inputs 50–800 gC m-2 yr-1."""
    rng = np.random.default_rng(seed)
    months = np.arange(12)
    mean_c = rng.uniform(-10.0, 22.0, n)
    amp = rng.uniform(2.0, 20.0, n)
    damping = np.exp(-np.linspace(0.01, 8.0, 20) / rng.uniform(1.0, 3.0, n)[:, None])
    wave = np.cos(2 * np.pi * (months - 6.5) / 12.0)
    temp = 273.15 + mean_c[:, None, None] + amp[:, None, None] * wave[None, :, None] * damping[:, None, :]
    alt = np.where(rng.random(n) < 0.6, 10.0, rng.uniform(0.2, 3.5, n))[:, None] * rng.uniform(0.3, 1.0, (n, 12))
    alt[rng.random(n) < frozen_fraction / 2] = 0.0  # frozen all year
    alt[:, :3] = np.where(rng.random((n, 1)) < frozen_fraction, 0.0, alt[:, :3])  # frozen winter months
    nbedrock = np.where(rng.random(n) < 0.5, 20, rng.integers(3, 20, n))
    return Forcing.from_numpy(
        inputs_g_m2_yr=rng.uniform(50.0, 800.0, (n, 1)) * rng.dirichlet([2, 3, 3, 2], n),
        soil_temp_k=temp,
        water_scalar=rng.uniform(0.05, 0.9, (n, 12, 20)),
        oxygen_scalar=rng.uniform(0.3, 1.0, (n, 12, 20)),
        nitrogen_scalar=rng.uniform(0.2, 1.0, (n, 12, 20)),
        alt_m=alt,
        nbedrock=nbedrock,
    )


def random_theta(n: int, seed: int = 0) -> torch.Tensor:
    from socmap.clm5.parameters import to_physical

    g = torch.Generator().manual_seed(seed)
    return to_physical(torch.rand(n, 21, generator=g, dtype=torch.float64))


@pytest.fixture
def forcing64() -> Forcing:
    return make_forcing(64, seed=1)


@pytest.fixture
def theta64() -> torch.Tensor:
    return random_theta(64, seed=2)


# ----------------------------------------------------------------------------------------
# mapping / export / distributed: a tiny twin, a 3-fold KAN run on it, and that run mapped
# ----------------------------------------------------------------------------------------

MAP_CHUNKS = 16  # 2 × 4 windows on the 1° grid (25 × 59)


@pytest.fixture(scope="session")
def map_chunks() -> int:
    """Window size the shared store ``mapped_run`` was mapped with (re-maps must match it)."""
    return MAP_CHUNKS


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A 1.0°, 150-site synthetic twin and a 3-fold, 2-epoch KAN run on it (built once per process)."""
    from socmap.data.synthetic import SynthConfig, write_synthetic
    from socmap.train import train
    from socmap.train_config import load_config

    base = tmp_path_factory.mktemp("mapping-shared")
    data = base / "data"
    write_synthetic(data, SynthConfig(resolution_deg=1.0, n_sites=150, seed=0))
    run = base / "runs" / "tiny"
    train(load_config(data_dir=str(data), epochs=2, folds=3, kan_polish_iters=5, kan_sparsify_epochs=2, kan_refit_epochs=2),
          run, progress=False)
    return run


@pytest.fixture(scope="session")
def run_copy(tiny_run):
    """``run_copy(name)``: a copy of ``tiny_run`` (models, records; no store) named ``name``, same cube."""
    import shutil

    def make(name: str):
        dst = tiny_run.parent / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(tiny_run, dst, ignore=shutil.ignore_patterns("maps.zarr*", "map.json", "site_residuals.csv", "cache"))
        return dst

    return make


@pytest.fixture(scope="session")
def mapped_run(run_copy):
    """``tiny_run`` copied to ``main`` and mapped in-process (synchronous, ``MAP_CHUNKS`` windows)."""
    from socmap.mapping import map_run

    run = run_copy("main")
    map_run(run, scheduler="synchronous", chunks=MAP_CHUNKS, progress=False)
    return run


@pytest.fixture(scope="session")
def main_store(mapped_run):
    """The store of ``mapped_run``, loaded into memory."""
    from socmap.store import open_store

    return open_store(mapped_run).load()


def write_twin(tmp_path_factory, name: str, n_sites: int) -> Path:
    """A small synthetic twin (1° grid, seed 3, 5 % noise) with ``n_sites`` profiles; its data folder."""
    from socmap.data.synthetic import SynthConfig, write_synthetic

    folder = tmp_path_factory.mktemp(name) / "data"
    write_synthetic(folder, SynthConfig(resolution_deg=1.0, n_sites=n_sites, seed=3, noise=0.05), progress=False)
    return folder


def run_record(run: Path, runtime: tuple[str, ...]) -> dict:
    """run.json without what may differ between two runs of one config: timings, the name and the
    ``runtime`` config fields (e.g. ``fold_workers``), so that two such runs compare equal."""
    import json

    rec = json.loads((run / "run.json").read_text())
    for key in ("timing", "name"):
        rec.pop(key)
    for key in runtime:
        rec["config"].pop(key)
    for fold in rec["metrics"]["cv"]["folds"]:
        fold.pop("seconds")
    return rec
