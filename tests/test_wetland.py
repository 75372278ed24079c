"""The site-level wetland flag in training: the learned anoxia and the wetland input (docs/model.md §5.10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_forcing
from socmap.clm5 import prepare_forcing
from socmap.data.sites import WETLAND_INPUT, with_wetland_input
from socmap.data.synthetic import SynthConfig, write_synthetic
from socmap.nets.hybrid import HybridModel, HybridSpec
from socmap.splits import make_folds
from socmap.train import load_sites
from socmap.train_config import load_config
from socmap.trainer import HybridTrainer

PARAMS = ["efolding", "tau4s3", "fs1s3", "w_scaling"]


def _model(anoxia: str, seed: int = 0) -> HybridModel:
    torch.manual_seed(seed)
    spec = HybridSpec(encoder="mlp", covariate_names=["a", "b"], covariate_lo=[0.0, 0.0], covariate_hi=[1.0, 1.0],
                      params=PARAMS, anoxia=anoxia, encoder_kwargs={"hidden": [8]})
    return HybridModel(spec).double().eval()


def test_anoxia_at_upland_sites_leaves_the_solution_unchanged_bit_for_bit():
    n = 12
    forcing = prepare_forcing(make_forcing(n, seed=4))
    x = torch.rand(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    depth = torch.tensor([[0.05, 0.3, 0.8]], dtype=torch.float64).expand(n, -1)
    plain, anoxic = _model("none"), _model("learned")
    anoxic.encoder.load_state_dict(plain.encoder.state_dict())
    with torch.no_grad():
        ref, _, _ = plain.simulate(x, forcing, depth)
        upland, _, _ = anoxic.simulate(x, forcing, depth, torch.zeros(n, dtype=torch.float64))
        wet, _, _ = anoxic.simulate(x, forcing, depth, torch.ones(n, dtype=torch.float64))
    assert torch.equal(upland, ref)
    # an oxygen scalar below 1 under the water table: more carbon at depth at every wetland site
    assert bool((wet[:, 1:] > ref[:, 1:]).all())
    o = anoxic.o_scalar(torch.tensor([0.0, 1.0])).detach()
    assert torch.equal(o[0], torch.ones(20, dtype=torch.float64))
    assert 0.2 - 1e-6 <= float(o[1].min()) and float(o[1, -1]) == pytest.approx(0.2, abs=1e-6)
    assert bool((o[1, 1:] <= o[1, :-1]).all())  # less oxygen deeper below the water table


def test_anoxia_survives_a_checkpoint_and_old_specs_load_without_it():
    m = _model("learned")
    with torch.no_grad():
        m.anoxia.o_raw.fill_(0.3)
        m.anoxia.wt_raw.fill_(-0.5)
    back = HybridModel.from_checkpoint(m.to_checkpoint())
    assert back.anoxia.summary() == pytest.approx(m.anoxia.summary())
    ckpt = _model("none").to_checkpoint()
    ckpt["spec"].pop("anoxia")  # a model saved before the option existed
    assert HybridModel.from_checkpoint(ckpt).anoxia is None
    with pytest.raises(ValueError, match="anoxia must be 'none' or 'learned'"):
        HybridModel(HybridSpec(**{**m.spec.to_dict(), "anoxia": "maybe"}))


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wet") / "data"
    write_synthetic(out, SynthConfig(resolution_deg=1.0, n_sites=80, seed=5, noise=0.05))
    return out


def test_training_learns_the_anoxia_from_wetland_sites_only(twin, tmp_path):
    cfg = load_config(data_dir=str(twin), folds=3, epochs=3, batch_size=32, encoder="mlp", anoxia="learned")
    data = load_sites(cfg)
    fold = make_folds(data.lon, data.lat, cfg.folds, cfg.split, cfg.seed)[0]
    start = _model("learned").anoxia.summary()
    # no wetland site: the anoxia gets no gradient and keeps its starting values
    trainer = HybridTrainer(cfg, data, fold, tmp_path / "upland", torch.device("cpu"))
    trainer.fit(progress=False)
    assert trainer.model.anoxia.summary() == pytest.approx(start, rel=1e-6)
    # half the sites wetlands: the anoxia moves
    data.wetland = (np.arange(len(data)) % 2).astype(np.float64)
    trainer = HybridTrainer(cfg, data, fold, tmp_path / "wet", torch.device("cpu"))
    trainer.fit(progress=False)
    assert trainer.model.anoxia.summary() != pytest.approx(start, rel=1e-3)


def test_wetland_input_is_one_more_encoder_covariate(twin):
    cfg = load_config(data_dir=str(twin), folds=3, wetland_input=True)
    data = load_sites(cfg)
    assert data.covariate_names[-1] == WETLAND_INPUT and (data.covariates[:, -1] == 0).all()
    assert with_wetland_input(data) is data  # applied once


# -- maps: an upland and a wetland column per cell, area-weighted by the cell's wetland fraction

def _cells(n: int = 6):
    from conftest import make_forcing as mf

    x = np.random.default_rng(2).uniform(0.1, 0.9, (n, 2))
    return x, mf(n, seed=7)


def test_columns_weight_upland_and_wetland_by_area():
    from socmap.cells import predict_cells, predict_columns

    m = _model("learned").float()
    with torch.no_grad():
        m.anoxia.o_raw.fill_(-2.0)
    x, forcing = _cells()
    f = np.array([0.0, 0.25, 0.5, 1.0, 0.0, 0.75])
    kw = {"default": False, "diagnostics": False}
    up = predict_cells([m], x, forcing, **kw).values
    wet = predict_cells([m], x, forcing, wetland=1.0, **kw).values
    mixed = predict_columns([m], x, forcing, f, **kw).values
    for key in ("soc", "soc_stock_0_30cm", "soc_stock_0_100cm"):
        w = f.reshape((-1,) + (1,) * (up[key].ndim - 1))
        np.testing.assert_allclose(mixed[key], (1 - w) * up[key] + w * wet[key], rtol=1e-12)
    assert (wet["soc_stock_0_100cm"] > up["soc_stock_0_100cm"]).all()  # the anoxic column stores more
    # all upland (no fraction): exactly the plain prediction
    plain = predict_columns([m], x, forcing, None, **kw).values
    assert all(np.array_equal(plain[k], up[k]) for k in up)


def test_columns_set_the_wetland_input_of_models_trained_with_it():
    from socmap.cells import cube_inputs, predict_cells, predict_columns

    torch.manual_seed(3)
    spec = HybridSpec(encoder="mlp", covariate_names=["a", "b", WETLAND_INPUT], covariate_lo=[0.0, 0.0, 0.0],
                      covariate_hi=[1.0, 1.0, 1.0], params=PARAMS, encoder_kwargs={"hidden": [8]})
    m = HybridModel(spec).eval()
    assert cube_inputs(spec.covariate_names) == ["a", "b"]
    x, forcing = _cells()
    kw = {"default": False, "diagnostics": False}
    ones = predict_cells([m], np.column_stack([x, np.ones(len(x))]), forcing, **kw).values
    zeros = predict_cells([m], np.column_stack([x, np.zeros(len(x))]), forcing, **kw).values
    f = np.full(len(x), 0.4)
    mixed = predict_columns([m], x, forcing, f, **kw).values
    np.testing.assert_allclose(mixed["soc_stock_0_100cm"], 0.6 * zeros["soc_stock_0_100cm"] + 0.4 * ones["soc_stock_0_100cm"], rtol=1e-12)


def test_wetland_fraction_from_the_cube_or_upland():
    import xarray as xr

    from socmap.cells import wetland_fraction
    from socmap.data.covariates import WETLAND_FRACTION

    frac = np.array([[0.0, 0.3], [np.nan, 1.2]])
    with_layer = xr.Dataset({WETLAND_FRACTION: (("y", "x"), frac)})
    np.testing.assert_array_equal(wetland_fraction(with_layer, np.array([0, 1, 1]), np.array([1, 0, 1])), [0.3, 0.0, 1.0])
    np.testing.assert_array_equal(wetland_fraction(xr.Dataset(), np.array([0]), np.array([0])), [0.0])


def test_saturated_wetlands_take_the_water_scalar_of_wet_soil():
    n = 6
    prepared = prepare_forcing(make_forcing(n, seed=9))
    spec = _model("none").spec.to_dict()
    m = HybridModel(HybridSpec(**{**spec, "wetland_saturated": True}))
    flag = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    col = m.column_forcing(prepared, flag)
    assert torch.equal(col.water[..., flag == 0], prepared.water[..., flag == 0])
    assert bool((col.water[..., flag == 1] == 1.0).all())
    assert m.column_forcing(prepared, torch.zeros(n, dtype=torch.float64)) is prepared
    assert _model("none").column_forcing(prepared, flag) is prepared  # the option off: unchanged


def test_anoxia_auto_is_learned_only_where_some_site_is_a_wetland(twin):
    from socmap.trainer import build_model, resolve_anoxia

    cfg = load_config(data_dir=str(twin), folds=3, encoder="mlp")
    data = load_sites(cfg)
    assert cfg.anoxia == "auto" and resolve_anoxia(cfg, data) == "none" and build_model(cfg, data).anoxia is None
    data.wetland = np.zeros(len(data))
    data.wetland[0] = 1.0
    assert resolve_anoxia(cfg, data) == "learned" and build_model(cfg, data).anoxia is not None
    assert resolve_anoxia(cfg.model_copy(update={"anoxia": "none"}), data) == "none"


def test_maps_weight_the_wetland_column_by_the_cubes_wetland_share(twin, tmp_path):
    """`socmap map`: cells without a wetland share keep the upland column bit for bit; cells with
    share f get (1 − f)·upland + f·wetland, which the learned anoxia (o_min < 1) makes richer."""
    import json
    import shutil

    import xarray as xr

    from socmap.data.covariates import WETLAND_FRACTION
    from socmap.mapping import map_run
    from socmap.train import train

    upland_dir, wet_dir = tmp_path / "upland", tmp_path / "wet"
    shutil.copytree(twin, upland_dir)
    run = tmp_path / "runs" / "anoxia"
    train(load_config(data_dir=str(upland_dir), folds=3, epochs=2, batch_size=32, encoder="mlp", anoxia="learned"),
          run, progress=False)
    map_run(run, scheduler="synchronous", chunks=16, progress=False)
    upland = xr.open_zarr(run / "maps.zarr")["soc_stock_0_100cm"].values

    shutil.copytree(upland_dir, wet_dir)  # the same cube with a wetland share on every other row
    cube = xr.open_zarr(wet_dir / "cube.zarr")
    f = np.zeros(cube["land_mask"].shape, dtype=np.float32)
    f[::2] = 0.5
    xr.Dataset({WETLAND_FRACTION: (("y", "x"), f)}, coords={"y": cube["y"], "x": cube["x"]}).to_zarr(
        wet_dir / "cube.zarr", mode="a")
    record = json.loads((run / "run.json").read_text())
    record["data"]["dir"] = str(wet_dir)
    (run / "run.json").write_text(json.dumps(record))
    shutil.rmtree(run / "maps.zarr")
    map_run(run, scheduler="synchronous", chunks=16, progress=False)
    mixed = xr.open_zarr(run / "maps.zarr")["soc_stock_0_100cm"].values

    land = np.isfinite(upland)
    np.testing.assert_array_equal(mixed[1::2][land[1::2]], upland[1::2][land[1::2]])  # f = 0: unchanged
    wet = land & (f > 0)
    assert wet.sum() > 10 and (mixed[wet] > upland[wet]).all()  # the wetland column decomposes slower


def test_predict_solves_wetland_points_as_wetland_columns(twin, tmp_path):
    """`socmap predict`: a point flagged wetland gets the wetland column (more SOC under the learned
    anoxia), an unflagged one the upland column; an unreadable flag is a clear error."""
    import pandas as pd

    from socmap.predict import PointsError, predict_file, predict_points
    from socmap.train import train

    run = tmp_path / "run"
    train(load_config(data_dir=str(twin), folds=3, epochs=2, batch_size=32, encoder="mlp", anoxia="learned"),
          run, progress=False)
    sites = pd.read_csv(run / "sites.csv").head(4)
    pts = pd.DataFrame({"lon": list(sites["lon"]) * 2, "lat": list(sites["lat"]) * 2, "depth_m": 0.3,
                        "wetland": ["no"] * 4 + ["yes"] * 4})
    out = predict_points(run, pts, device="cpu")
    assert (out["status"] == "ok").all()
    up, wet = out["soc_g_m3"].to_numpy()[:4], out["soc_g_m3"].to_numpy()[4:]
    np.testing.assert_allclose(up, predict_points(run, pts.drop(columns="wetland").head(4), device="cpu")["soc_g_m3"])
    assert (wet > up).all()
    bad = tmp_path / "bad.csv"
    pts.assign(wetland=["no", "maybe", "yes", "no", "1", "0", "1", "0"]).to_csv(bad, index=False)
    with pytest.raises(PointsError, match=r"bad.csv: column 'wetland' \(wetland flag\) holds 'maybe' on line\(s\) 3"):
        predict_file(run, bad, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("encoder", ["mlp", "rf"])
def test_runs_with_the_wetland_flag_as_input_map_and_predict(twin, tmp_path, encoder):
    """A run trained with `wetland_input` maps from a cube without a `wetland` layer (the flag is set per
    column) and predicts points with and without the flag."""
    import pandas as pd
    import xarray as xr

    from socmap.mapping import map_run
    from socmap.predict import predict_points
    from socmap.train import train

    run = tmp_path / "run"
    train(load_config(data_dir=str(twin), folds=3, epochs=2, batch_size=32, encoder=encoder, wetland_input=True,
                      anoxia="none"), run, progress=False)
    map_run(run, scheduler="synchronous", chunks=16, progress=False)
    stock = xr.open_zarr(run / "maps.zarr")["soc_stock_0_100cm"].values
    assert np.isfinite(stock).sum() > 100
    sites = pd.read_csv(run / "sites.csv").head(3)
    pts = pd.DataFrame({"lon": list(sites["lon"]) * 2, "lat": list(sites["lat"]) * 2, "depth_m": 0.2,
                        "wetland": [0] * 3 + [1] * 3})
    out = predict_points(run, pts, device="cpu")
    assert (out["status"] == "ok").all() and np.isfinite(out["soc_g_m3"]).all()
    same = np.allclose(out["soc_g_m3"][:3].to_numpy(), out["soc_g_m3"][3:].to_numpy())
    # the twin has no wetland site: the forest never splits on the flag; the MLP's weight on it is its init
    assert same if encoder == "rf" else not same


def test_a_wetland_column_on_an_igbp11_cell_gets_exactly_one_anoxia_factor():
    """The forcing of a permanent-wetland cell (IGBP 11) already carries CLM's fixed anoxia
    (``mino2lim`` below 0.1 m, docs/model.md §5.8); the learned anoxia replaces it in a wetland
    column instead of multiplying on top of it (§5.10). An upland column keeps it."""
    from socmap.climate_forcing import ForcingConfig, oxygen_scalar
    from socmap.clm5.grid import NODE_M

    n = 4
    base = make_forcing(n, seed=11)
    igbp = np.array([11, 11, 5, 5])  # wetland cell, wetland cell, forest cell, forest cell
    o_fixed = oxygen_scalar(igbp, NODE_M)
    assert o_fixed[0].min() == ForcingConfig().anoxic_oxygen_scalar and (o_fixed[2:] == 1).all()
    on_cells = prepare_forcing(base.replace(oxygen_scalar=torch.as_tensor(o_fixed)))
    aerated = prepare_forcing(base.replace(oxygen_scalar=torch.ones_like(base.oxygen_scalar)))
    flag = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    x = torch.rand(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    depth = torch.tensor([[0.05, 0.3, 0.8]], dtype=torch.float64).expand(n, -1)
    m, plain = _model("learned"), _model("none")
    plain.encoder.load_state_dict(m.encoder.state_dict())
    with torch.no_grad():
        m.anoxia.o_raw.fill_(-1.0)  # o_min ≈ 0.27, not CLM's 0.2: the two factors are told apart
        col = m.column_forcing(on_cells, flag)
        # the wetland columns' forcing O is 1 and O·N is N; the upland columns' fields are untouched
        assert bool((col.oxygen[..., flag == 1] == 1.0).all())
        torch.testing.assert_close(col.oxygen_nitrogen[..., flag == 1], base.nitrogen_scalar[flag == 1].permute(1, 2, 0),
                                   rtol=1e-14, atol=0)
        assert torch.equal(col.oxygen[..., flag == 0], on_cells.oxygen[..., flag == 0])
        assert torch.equal(col.oxygen_nitrogen[..., flag == 0], on_cells.oxygen_nitrogen[..., flag == 0])
        wet_cell, _, _ = m.simulate(x, on_cells, depth, flag)
        dry_cell, _, _ = m.simulate(x, aerated, depth, flag)
        fixed_only, _, _ = plain.simulate(x, on_cells, depth)
    # IGBP-11 wetland column (site 0) = the same column on an aerated cell: only the learned factor
    torch.testing.assert_close(wet_cell[0], dry_cell[0], rtol=1e-12, atol=0)
    # upland column on the IGBP-11 cell (site 1) keeps CLM's fixed anoxia, bit for bit
    assert torch.equal(wet_cell[1], fixed_only[1])
    # and the fixed anoxia does act there: without it the upland column would store less at depth
    assert bool((dry_cell[1, 1:] < wet_cell[1, 1:]).all())


def test_member_seed_changes_the_weights_and_batches_not_the_folds(twin, tmp_path):
    """Fold seed-ensemble members (benchmarks/real_data.py --ensemble-seeds): member_seed 0 is the
    historic seeding; another member starts from other weights and shuffles otherwise."""
    cfg = load_config(data_dir=str(twin), folds=3, encoder="mlp")
    data = load_sites(cfg)
    fold = make_folds(data.lon, data.lat, cfg.folds, cfg.split, cfg.seed)[0]

    def start(member: int) -> tuple[torch.Tensor, np.ndarray]:
        trainer = HybridTrainer(cfg.model_copy(update={"member_seed": member}), data, fold, tmp_path / str(member),
                                torch.device("cpu"))
        w = next(trainer.model.encoder.parameters()).detach().clone()
        rng = np.random.default_rng([cfg.seed, fold.index, 0] + ([member] if member else []))
        return w, rng.permutation(len(fold.train))

    from socmap.trainer import build_model

    torch.manual_seed(cfg.seed * 1000 + fold.index)  # the seeding before member_seed existed
    historic = next(build_model(cfg, data).encoder.parameters()).detach()
    (w0, order0), (w0b, _), (w1, order1) = start(0), start(0), start(1)
    assert torch.equal(w0, w0b) and torch.equal(w0, historic)
    assert not torch.equal(w0, w1) and not np.array_equal(order0, order1)
    assert make_folds(data.lon, data.lat, cfg.folds, cfg.split, cfg.seed)[0].test.tolist() == fold.test.tolist()
