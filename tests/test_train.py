"""Training: the hybrid learns on a tiny synthetic twin, resumes exactly, and fails clearly."""

from pathlib import Path

import json

import numpy as np
import pandas as pd
import pytest
import torch

from socmap.data.synthetic import SynthConfig, write_synthetic
from socmap.splits import make_folds
from socmap.train import load_sites, train
from socmap.train_config import load_config
from socmap.trainer import HybridTrainer


@pytest.fixture(scope="module")
def tiny_twin(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("twin") / "data"
    write_synthetic(out, SynthConfig(resolution_deg=1.0, n_sites=120, seed=3, noise=0.05))
    return out


def _trainer(cfg, tmp: Path, fold_index: int = 0) -> HybridTrainer:
    data = load_sites(cfg)
    fold = make_folds(data.lon, data.lat, cfg.folds, cfg.split, cfg.seed)[fold_index]
    return HybridTrainer(cfg, data, fold, tmp, torch.device("cpu"))


def test_hybrid_training_reduces_loss(tiny_twin, tmp_path):
    cfg = load_config(data_dir=str(tiny_twin), folds=3, epochs=6, batch_size=32, kan_polish_iters=0, kan_sparsify_epochs=0)
    trainer = _trainer(cfg, tmp_path)
    trainer.fit(progress=False)
    hist = trainer.history
    assert len(hist) == 6 and {h["phase"] for h in hist} == {"fit"}
    assert hist[-1]["train_loss"] < 0.75 * hist[0]["train_loss"]
    assert min(h["val_loss"] for h in hist) < hist[0]["val_loss"]
    assert (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("final_validates_better", [True, False])
def test_kan_sparsify_prune_refit_phases(tiny_twin, tmp_path, final_validates_better):
    cfg = load_config(data_dir=str(tiny_twin), folds=3, epochs=4, batch_size=32, kan_polish_iters=10,
                      kan_sparsify_epochs=4, kan_refit_epochs=3, patience=10)
    trainer = _trainer(cfg, tmp_path)
    # validation loss at the end of the fit, then of the final (pruned, refitted) model
    scripted = iter([1.0, 0.5] if final_validates_better else [0.5, 1.0])
    trainer.val_loss = lambda: next(scripted)
    trainer.fit(progress=False)
    hist = trainer.history
    assert [h["phase"] for h in hist] == ["fit"] * 4 + ["polish"] + ["sparsify"] * 4 + ["refit"] * 3
    # full-batch L-BFGS lowers the training loss of the fit's best state
    best_fit = min(range(4), key=lambda i: hist[i]["val_loss"])
    assert hist[4]["train_loss"] < hist[best_fit]["train_loss"]
    assert hist[5]["lr"] == pytest.approx(cfg.lr / 3) and hist[-1]["lr"] == cfg.lr
    mask = trainer.model.encoder.layers[0].mask
    saved = torch.load(tmp_path / "model.pt", weights_only=False)["state_dict"]
    torch.testing.assert_close(saved["encoder.layers.0.mask"], mask)
    assert 0 < trainer.edges_kept[0] < mask.numel()
    if final_validates_better:
        assert trainer.selection["kept"] == "final"
        assert int(mask.sum()) == trainer.edges_kept[0]
        # pruned edges contribute nothing
        phi = trainer.model.encoder.layers[0].edge_values(trainer.train_x())
        assert torch.all(phi[:, mask == 0] == 0)
    else:  # the pruned model validates worse: the fit's model is kept, unpruned
        assert trainer.selection["kept"] == "fit"
        for key, value in trainer.state.fit_state.items():
            if key in ("p_lo", "p_hi"):  # the training-site parameter range, set after the selection
                continue
            torch.testing.assert_close(saved[key], value, rtol=0, atol=0)
        assert int(mask.sum()) == mask.numel()


class _Interrupt(Exception):
    pass


def _interrupt_after(trainer: HybridTrainer, n_epochs: int) -> None:
    """Make ``trainer`` die (like a killed job) when it starts epoch ``n_epochs + 1``."""
    real, calls = trainer.train_epoch, []

    def epoch():
        calls.append(1)
        if len(calls) > n_epochs:
            raise _Interrupt
        return real()

    trainer.train_epoch = epoch


@pytest.mark.parametrize(("encoder", "stop_after"), [("kan", 2), ("kan", 5), ("kan", 7), ("mlp", 2)])
def test_resume_continues_identically(tiny_twin, tmp_path, encoder, stop_after):
    # KAN: 3 fit + 1 polish + 3 sparsify + 2 refit epochs; stopping after 5 interrupts mid-sparsify
    cfg = load_config(data_dir=str(tiny_twin), folds=3, epochs=3, batch_size=32, encoder=encoder,
                      kan_polish_iters=5, kan_sparsify_epochs=3, kan_refit_epochs=2, patience=10)
    straight = _trainer(cfg, tmp_path / "a")
    straight.fit(progress=False)
    first = _trainer(cfg, tmp_path / "b")
    _interrupt_after(first, stop_after)
    with pytest.raises(_Interrupt):
        first.fit(progress=False)
    resumed = _trainer(cfg, tmp_path / "b")
    resumed.fit(progress=False)
    assert resumed.epoch == straight.epoch == (9 if encoder == "kan" else 3)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs after resume")
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]


def test_train_writes_a_reproducible_run_record(tiny_twin, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_twin.parent)  # a relative data folder, as `socmap train --data-dir data` gives
    cfg = load_config(data_dir=tiny_twin.name, folds=3, epochs=2, batch_size=32, kan_polish_iters=5, kan_sparsify_epochs=2, kan_refit_epochs=2)
    record = train(cfg, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    # the run folder is self-contained: absolute data folder, parameters, encoder, fold models
    assert saved["schema_version"] == 2 and saved["encoder"] == "kan"
    assert saved["data"]["dir"] == str(tiny_twin.resolve()) and Path(saved["data"]["dir"]).is_absolute()
    assert saved["data"]["kind"] == "synthetic" and saved["data"]["covariate_units"][0] == "degC"
    assert saved["parameters"] == ["efolding", "tau4s3", "fs1s3", "w_scaling"]
    assert saved["fold_models"] == [f"folds/fold{k}/model.pt" for k in range(3)]
    assert all((tmp_path / "run" / rel).is_file() for rel in saved["fold_models"])
    twin_sites = pd.read_csv(tiny_twin / "sites.csv", dtype={"site_id": str}).set_index("site_id")
    sites = pd.read_csv(tmp_path / "run" / "sites.csv", dtype={"site_id": str}).set_index("site_id")
    assert list(sites.columns[:3]) == ["lon", "lat", "fold"] and sites["fold"].between(0, 2).all()
    shared = [c for c in twin_sites.columns if c in saved["data"]["covariates"] or c.startswith("true_p_")]
    assert len(shared) == 11 + 21 and set(shared) <= set(sites.columns)
    pd.testing.assert_frame_equal(sites.loc[twin_sites.index, shared], twin_sites[shared])
    assert json.loads((tmp_path / "run" / "truth.json").read_text()) == json.loads((tiny_twin / "truth.json").read_text())
    assert saved["config"]["encoder"] == "kan" and saved["versions"]["torch"].startswith("2.13")
    assert len(saved["metrics"]["cv"]["folds"]) == 3
    assert set(saved["metrics"]["param_recovery"]) == {"efolding", "tau4s3", "fs1s3", "w_scaling"}
    for rel in saved["metrics"]["relationship_recovery"].values():
        assert rel["kl"] >= 0 and len(rel["edges"]) == 2
    preds = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert (preds["fold"] >= 0).all() and preds["soc_sim_g_m3"].notna().mean() > 0.99
    assert record["metrics"]["cv"]["mean"]["nse_log"] == saved["metrics"]["cv"]["mean"]["nse_log"]
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        train(cfg, tmp_path / "run", progress=False)


def test_random_forest_baseline_on_the_same_folds(tiny_twin, tmp_path):
    cfg = load_config(data_dir=str(tiny_twin), folds=3, encoder="rf", rf_trees=30)
    record = train(cfg, tmp_path / "rf", progress=False)
    assert record["metrics"]["cv"]["mean"]["nse_log"] > 0.0  # better than the mean
    assert "param_recovery" not in record["metrics"]


def test_bad_configs_fail_clearly(tiny_twin, tmp_path):
    with pytest.raises(ValueError, match="encoder"):
        load_config(encoder="xgboost")
    with pytest.raises(ValueError, match="unknown parameter 'tau9'"):
        load_config(params="tau4s3,tau9")
    with pytest.raises(ValueError, match="folds must be >= 3"):
        load_config(folds=2)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("epochs: 5\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*learning_rate"):
        load_config(bad_yaml)
    # a data folder whose profiles hold no usable SOC
    empty = tmp_path / "empty"
    import shutil

    shutil.copytree(tiny_twin, empty)
    prof = pd.read_csv(empty / "profiles.csv")
    prof["soc_g_m3"] = np.nan
    prof.to_csv(empty / "profiles.csv", index=False)
    with pytest.raises(ValueError, match="no usable sites"):
        load_sites(load_config(data_dir=str(empty)))


def test_predict_points_reports_status_per_row(tiny_twin, tmp_path):
    from socmap.predict import predict_points

    run = tmp_path / "run"
    train(load_config(data_dir=str(tiny_twin), folds=3, epochs=2, batch_size=32, kan_polish_iters=5, kan_sparsify_epochs=2, kan_refit_epochs=2), run, progress=False)
    sites = pd.read_csv(tiny_twin / "sites.csv")
    points = pd.DataFrame({
        "lon": [sites.lon[0], sites.lon[1], -130.0, -90.0, sites.lon[2]],
        "lat": [sites.lat[0], sites.lat[1], 40.0, 27.0, sites.lat[2]],
        "depth_m": [0.1, 0.5, 0.1, 0.1, -0.2],
    })
    out = predict_points(run, points)
    assert out["status"].tolist() == ["ok", "ok", "outside grid", "water", "bad depth (need 0-8.6 m)"]
    ok = out[out.status == "ok"]
    assert (ok["soc_g_m3"] > 0).all() and (ok["soc_stock_0_100cm"] > ok["soc_stock_0_30cm"]).all()
    assert ok["tau4s3"].between(20, 400).all() and out.loc[out.status != "ok", "soc_g_m3"].isna().all()


def test_open_run_reads_everything_from_the_run_folder(tiny_twin, tmp_path, monkeypatch):
    from socmap.runs import open_run

    run = tmp_path / "run"
    train(load_config(data_dir=str(tiny_twin), folds=3, epochs=1, batch_size=32, encoder="mlp", mlp_hidden=[8]), run, progress=False)
    monkeypatch.chdir(tmp_path.parent)  # any folder
    opened = open_run(run)
    assert opened.schema_version == 2 and opened.encoder == "mlp" and len(opened.models) == 3
    assert opened.parameters == ["efolding", "tau4s3", "fs1s3", "w_scaling"] == opened.models[0].param_names
    assert opened.data_dir == tiny_twin.resolve() and opened.data["kind"] == "synthetic"
    assert opened.sites().index.is_unique and opened.truth()["covariates"]
    assert set(opened.predictions()["site_id"]) <= set(opened.sites().index)
    # an older run with a relative data folder works from its own folder and fails clearly elsewhere
    rec = json.loads((run / "run.json").read_text())
    for key in ("schema_version", "parameters", "fold_models", "encoder"):
        rec.pop(key)
    rec["data"]["dir"] = tiny_twin.name
    (run / "run.json").write_text(json.dumps(rec))
    old = open_run(run)
    assert old.schema_version == 1 and old.parameters == opened.parameters and len(old.fold_models) == 3
    with pytest.raises(FileNotFoundError, match=r"run.json.*does not exist"):
        old.data_dir
    monkeypatch.chdir(tiny_twin.parent)
    assert open_run(run).data_dir.resolve() == tiny_twin.resolve()


def test_encoder_registry_covers_every_encoder_and_names_the_known_ones():
    from socmap.encoders import ENCODERS, Baseline, HybridEncoder, get_encoder
    from socmap.nets import ENCODER_NETWORKS
    from socmap.train_config import TrainConfig

    assert set(ENCODERS) == {"kan", "mlp", "nn", "rf"}
    for name, entry in ENCODERS.items():
        assert set(entry.options.values()) <= set(TrainConfig.model_fields), name
        assert isinstance(entry, HybridEncoder) == (name in ENCODER_NETWORKS) != isinstance(entry, Baseline)
    assert ENCODERS["kan"].network_kwargs(TrainConfig(kan_grid_size=7)) == {"grid_size": 7, "hidden": [], "base": "identity"}
    with pytest.raises(ValueError, match="unknown encoder 'xgboost'; choose one of kan, mlp, nn, rf"):
        get_encoder("xgboost")
    with pytest.raises(ValueError, match="choose one of kan, mlp, nn, rf"):
        load_config(encoder="xgboost")


def test_site_loaders_are_chosen_by_catalog_kind(tiny_twin):
    from socmap.data.catalog import load_catalog
    from socmap.data.sites import SITE_LOADERS, load_real_sites, load_site_data, load_synthetic

    assert SITE_LOADERS == {"synthetic": load_synthetic, "covariates": load_real_sites}
    catalog = load_catalog()
    assert catalog.entry("synthetic").kind in SITE_LOADERS and catalog.entry("real-conus").kind in SITE_LOADERS
    assert len(load_site_data("synthetic", tiny_twin)) == 120
    with pytest.raises(ValueError, match="kind 'profiles'; known kinds: synthetic, covariates"):
        load_site_data("profiles", tiny_twin)


def test_train_cli_options_are_trainconfig_fields_without_defaults_of_their_own():
    import typer.main

    from socmap.cli import app
    from socmap.train_config import TrainConfig

    import click

    group = typer.main.get_command(app)
    command = group.get_command(click.Context(group), "train")  # built on demand (socmap --help skips torch)
    run_options = {"out", "config", "resume", "catalog"}  # where and how to run, not what to train
    config_options = [p for p in command.params if p.name not in run_options]
    assert {p.name for p in config_options} >= {"data", "data_dir", "encoder", "params", "folds", "split", "epochs", "lr", "loss", "seed", "device"}
    for p in config_options:
        assert p.name in TrainConfig.model_fields, f"--{p.name} is not a TrainConfig field"
        assert p.default is None, f"--{p.name} repeats a default; TrainConfig holds it"
        default = TrainConfig.model_fields[p.name].get_default(call_default_factory=True)
        if default is not None:
            assert f"(default: {default})" in p.help


def test_failed_start_writes_nothing_and_resume_refuses_a_changed_config(tiny_twin, tmp_path):
    from socmap.train import resume_config

    out = tmp_path / "run"
    with pytest.raises(ValueError, match="epochs"):
        train(load_config(data_dir=str(tiny_twin), epochs=-5), out, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist; create the twin with `socmap synth"):
        train(load_config(data_dir=str(tmp_path / "nowhere"), folds=3), out, progress=False)
    assert not out.exists()
    out.mkdir()
    with pytest.raises(ValueError, match="fold_indices"):
        train(load_config(data_dir=str(tiny_twin), folds=3, fold_indices=[5]), out, progress=False)
    assert list(out.iterdir()) == []  # an existing empty folder stays empty
    saved = load_config(data_dir=str(tiny_twin), folds=3, encoder="rf", rf_trees=5)
    (out / "config.yaml").write_text(__import__("yaml").safe_dump(saved.model_dump()))
    with pytest.raises(ValueError, match=r"differs: folds: 3 → 4; rf_trees: 5 → 9"):
        resume_config(load_config(folds=4, rf_trees=9), out)
    other = tmp_path / "other-twin"
    other.mkdir()
    with pytest.raises(ValueError, match=r"data folder: .*data → .*other-twin"):
        resume_config(load_config(data_dir=str(other)), out)
    # options not given now come from the saved config; runtime options may change
    resumed = resume_config(load_config(device="cpu", threads=1), out)
    assert resumed.encoder == "rf" and resumed.rf_trees == 5 and resumed.threads == 1


def test_damaged_fold_is_an_error_allow_partial_uses_the_rest_and_resume_retrains_it(tiny_twin, tmp_path):
    from socmap.predict import predict_points
    from socmap.runs import RunError, open_run

    cfg = load_config(data_dir=str(tiny_twin), folds=3, encoder="rf", rf_trees=10)
    run = tmp_path / "rf"
    record = train(cfg, run, progress=False)
    assert record["fold_models"] == [f"folds/fold{k}/model.joblib" for k in range(3)]
    full = open_run(run)
    assert not full.hybrid and len(full.predictors) == 3 and full.parameters == [] and not full.partial
    sites = pd.read_csv(tiny_twin / "sites.csv")
    points = pd.DataFrame({"lon": sites.lon[:4], "lat": sites.lat[:4], "depth_m": [0.05, 0.3, 1.0, 0.1]})
    before = predict_points(full, points)
    assert (before["status"] == "ok").all() and (before["soc_g_m3"] > 0).all()
    assert (before["soc_stock_0_100cm"] > before["soc_stock_0_30cm"]).all() and "tau4s3" not in before
    good = (run / "folds" / "fold2" / "model.joblib").read_bytes()
    (run / "folds" / "fold2" / "model.joblib").write_bytes(good[:1000])
    with pytest.raises(RunError, match=r"fold2/model.joblib: fold model cannot be read .*truncated or damaged"):
        open_run(run)
    (run / "folds" / "fold2" / "model.joblib").write_bytes(good)
    (run / "folds" / "fold1" / "model.joblib").unlink()
    with pytest.raises(RunError, match=r"fold1/model.joblib: fold model is missing; re-train the missing or damaged folds with "
                                       r"`socmap train --resume --out .*`, or pass --allow-partial"):
        open_run(run)
    partial = open_run(run, allow_partial=True)
    assert partial.partial and partial.fold_models == ["folds/fold0/model.joblib", "folds/fold2/model.joblib"]
    assert partial.missing_models == ["folds/fold1/model.joblib"]
    # the fix the message gives is true: --resume re-trains exactly the unusable folds
    again = train(cfg, run, resume=True, progress=False)
    assert again["metrics"]["cv"]["mean"] == pytest.approx(record["metrics"]["cv"]["mean"])
    pd.testing.assert_frame_equal(predict_points(open_run(run), points), before)


def test_predict_file_streams_in_batches_and_checks_before_computing(tiny_twin, tmp_path):
    from socmap.predict import PointsError, predict_file, predict_points
    from socmap.runs import open_run

    run = tmp_path / "run"
    train(load_config(data_dir=str(tiny_twin), folds=3, epochs=1, batch_size=32, encoder="mlp", mlp_hidden=[8]), run, progress=False)
    sites = pd.read_csv(tiny_twin / "sites.csv")
    rng = np.random.default_rng(0)
    pick = rng.choice(len(sites), 23)
    pts = pd.DataFrame({"id": np.arange(23), "lon": sites.lon[pick].to_numpy(), "lat": sites.lat[pick].to_numpy(),
                        "depth_m": rng.uniform(0, 2, 23)})
    pts.loc[[3, 11], "lon"] = -130.0  # off the grid: a status, not an error
    src = tmp_path / "points.csv"
    pts.to_csv(src, index=False)
    with pytest.raises(PointsError, match="does not exist"):
        predict_file(run, src, tmp_path / "no" / "out.csv", progress=False)
    record = predict_file(run, src, tmp_path / "out.csv", batch=5, progress=False)
    streamed = pd.read_csv(tmp_path / "out.csv")
    whole = predict_points(open_run(run), pts)
    pd.testing.assert_frame_equal(streamed, whole.reset_index(drop=True), check_dtype=False, rtol=1e-6)
    assert record["points"] == 23 and record["status_counts"] == {"ok": 21, "outside grid": 2}
    assert json.loads((tmp_path / "out.csv.json").read_text())["partial_ensemble"] is False
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary file left
    bad = tmp_path / "bad.csv"
    pts.assign(depth_m=pts.depth_m.where(pts.index != 17, 20.0)).to_csv(bad, index=False)
    with pytest.raises(PointsError, match=r"depth_m outside 0-8.6 m at line\(s\) 19"):
        predict_file(run, bad, tmp_path / "out2.csv", batch=5, progress=False)
    assert not (tmp_path / "out2.csv").exists()
    predict_file(run, bad, tmp_path / "out2.csv", batch=5, skip_bad_rows=True, progress=False)
    assert pd.read_csv(tmp_path / "out2.csv")["status"][17] == "bad depth (need 0-8.6 m)"
