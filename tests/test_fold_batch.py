"""Fold batching (socmap/fold_batch.py): the folds trained together give the folds trained one after another."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from socmap.fold_batch import batched_losses
from socmap.fold_runner import fold_dir
from socmap.splits import make_folds
from socmap.train import load_sites, resume_config, train
from socmap.train_config import load_config

from conftest import run_record, write_twin
from socmap.trainer import HybridTrainer

#: A short KAN schedule (fit with early stopping, polish, sparsify + prune, refit) on 3 folds.
SHORT = dict(folds=3, epochs=8, patience=1, batch_size=64, kan_polish_iters=5, kan_sparsify_epochs=2,
             kan_refit_epochs=3)


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    """400 sites: 126–142 training sites per fold, so two full batches of 64 and a partial one."""
    return write_twin(tmp_path_factory, "twin400", 400)


@pytest.fixture(scope="module")
def runs(twin, tmp_path_factory) -> dict[str, Path]:
    """The same run with the folds one after another and batched; ``solves``: the sites of every
    steady-state call of the batched run."""
    from socmap.nets import hybrid

    base = tmp_path_factory.mktemp("runs")
    solves: list[int] = []

    def counted(theta, *args, **kwargs):
        solves.append(theta.shape[0])
        return solve(theta, *args, **kwargs)

    solve = hybrid.steady_state
    for name, batching, workers in (("seq", False, 1), ("batched", True, 1), ("batched-w2", True, 2)):
        with pytest.MonkeyPatch.context() as mp:
            if name == "batched":  # every solve of that run (HybridModel.solve_soc), in this process
                mp.setattr(hybrid, "steady_state", counted)
            train(load_config(data_dir=str(twin), fold_workers=workers, fold_batching=batching, **SHORT), base / name,
                  progress=False)
    return {name: base / name for name in ("seq", "batched", "batched-w2")} | {"solves": solves}


def _record(run: Path) -> dict:
    return run_record(run, ("fold_batching", "fold_workers"))


def _history(run: Path, k: int) -> list[dict]:
    return torch.load(run / f"folds/fold{k}/checkpoint.pt", weights_only=False)["history"]


@pytest.mark.parametrize("batched", ["batched", "batched-w2"])
def test_batched_folds_are_the_sequential_run(runs, batched):
    """Batched in this process, or in two worker processes (folds 0+1 and 2), the folds one after another."""
    seq, bat = runs["seq"], runs[batched]
    assert _record(seq) == _record(bat)
    for name in ("predictions.csv", "site_parameters.csv", "sites.csv"):
        assert (seq / name).read_bytes() == (bat / name).read_bytes(), name
    for k in range(3):
        a = torch.load(seq / f"folds/fold{k}/model.pt", weights_only=False)["state_dict"]
        b = torch.load(bat / f"folds/fold{k}/model.pt", weights_only=False)["state_dict"]
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"fold {k} {key}")
        assert _history(seq, k) == _history(bat, k)  # every epoch's losses, learning rate and phase
    rec = json.loads((bat / "run.json").read_text())
    assert rec["config"]["fold_batching"] is True
    # three folds' batches were solved in one call (its other solves, validation and polish, are of one fold's sites)
    assert max(runs["solves"]) == 3 * SHORT["batch_size"]
    phases = {h["phase"] for k in range(3) for h in _history(bat, k)}
    assert phases == {"fit", "polish", "sparsify", "refit"}


def test_folds_leave_the_batch_at_different_epochs(runs):
    """The folds stop at different epochs (early stopping), so folds in other phases (polish alone,
    sparsify, refit) ran beside batched ones and the batch shrank as folds finished."""
    epochs = [len(_history(runs["batched"], k)) for k in range(3)]
    assert len(set(epochs)) > 1, f"every fold took {epochs[0]} epochs: the test no longer covers uneven folds"


def test_batched_losses_are_each_folds_own(twin, tmp_path):
    """One solve over both folds' sites gives each fold the loss and the gradient of its own batch."""
    config = load_config(data_dir=str(twin), **SHORT)
    data = load_sites(config)
    folds = make_folds(data.lon, data.lat, config.folds, config.split, config.seed)
    trainers = [HybridTrainer(config, data, f, fold_dir(tmp_path, f.index), torch.device("cpu")) for f in folds[:2]]
    idx = [f.train[:64] for f in folds[:2]]
    together = batched_losses(list(zip(trainers, idx)))
    torch.autograd.backward(together)
    grads = [[p.grad.clone() for p in t.model.parameters()] for t in trainers]
    for t, i, loss, g in zip(trainers, idx, together, grads):
        t.opt.zero_grad(set_to_none=True)
        alone = t.batch_loss(i)
        alone.backward()
        assert float(alone.detach()) == float(loss.detach())
        for p, gb in zip(t.model.parameters(), g):
            torch.testing.assert_close(p.grad, gb, rtol=0, atol=0)
    assert float(together[0].detach()) != float(together[1].detach())  # two folds, two batches: not the same loss twice


def test_batched_losses_evaluate_each_folds_basis_once(twin, tmp_path, monkeypatch):
    """Each KAN fold's forward pass and regularisers share its layers' B-spline basis in the
    batched step too (KAN.shared_basis): one knot search per layer and fold."""
    from socmap.nets import kan

    config = load_config(data_dir=str(twin), **SHORT)
    data = load_sites(config)
    folds = make_folds(data.lon, data.lat, config.folds, config.split, config.seed)
    trainers = [HybridTrainer(config, data, f, fold_dir(tmp_path, f.index), torch.device("cpu")) for f in folds[:2]]
    assert all(t.model.is_kan for t in trainers)
    calls = []
    rows = kan._rows
    monkeypatch.setattr(kan, "_rows", lambda *a: calls.append(1) or rows(*a))
    batched_losses([(t, f.train[:64]) for t, f in zip(trainers, folds)])
    assert len(calls) == sum(len(t.model.encoder.layers) for t in trainers)


def test_resume_continues_a_batched_run(twin, tmp_path, runs, monkeypatch):
    """A batched run stopped mid-fit (after 7 fold epochs) resumes to the run trained in one go."""
    from socmap import trainer as trainer_module

    config = load_config(data_dir=str(twin), fold_workers=1, fold_batching=True, **SHORT)
    real_end = trainer_module.HybridTrainer.end_epoch
    calls = {"n": 0}

    def end_and_stop(self, phase, losses):
        out = real_end(self, phase, losses)
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(trainer_module.HybridTrainer, "end_epoch", end_and_stop)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "run" / "run.json").exists()
    assert (tmp_path / "run/folds/fold0/checkpoint.pt").exists()
    train(load_config(data_dir=str(twin)), tmp_path / "run", resume=True, progress=False)
    assert _record(tmp_path / "run") == _record(runs["batched"])


def test_resume_may_switch_fold_batching(twin, tmp_path):
    saved = load_config(data_dir=str(twin), fold_batching=True, **SHORT)
    (tmp_path / "config.yaml").write_text(json.dumps(saved.model_dump()))  # YAML is a superset of JSON
    assert resume_config(load_config(data_dir=str(twin), fold_batching=False), tmp_path).fold_batching is False
    dropout = load_config(data_dir=str(twin), encoder="mlp", dropout=0.3)
    (tmp_path / "config.yaml").write_text(json.dumps(dropout.model_dump()))
    with pytest.raises(ValueError, match="fold_batching needs dropout: 0"):
        resume_config(load_config(data_dir=str(twin), fold_batching=True), tmp_path)


@pytest.mark.parametrize("options, words", [
    (dict(encoder="rf"), ["baseline", "fold_batching: false"]),
    (dict(encoder="mlp", dropout=0.2), ["dropout: 0", "interleave"]),
])
def test_bad_fold_batching_configs_are_clear_errors(options, words):
    with pytest.raises(ValueError) as err:
        load_config(fold_batching=True, **options)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_mlp_folds_batch_too(twin, tmp_path):
    """The MLP encoder (BatchNorm in train mode) batched gives its sequential run."""
    opts = dict(encoder="mlp", lr=1e-3, folds=3, epochs=2, batch_size=64, fold_indices=[0, 1])
    for name, batching in (("seq", False), ("bat", True)):
        train(load_config(data_dir=str(twin), fold_workers=1, fold_batching=batching, **opts), tmp_path / name,
              progress=False)
    a, b = (pd.read_csv(tmp_path / n / "predictions.csv")["soc_sim_g_m3"].to_numpy() for n in ("seq", "bat"))
    np.testing.assert_array_equal(a, b)


def test_uneven_batches_are_solved_so_each_fold_keeps_its_values(twin, tmp_path):
    """Batches of sizes that are no multiple of ALIGN_SITES (an epoch's last ones) are split over
    the solver calls so that every loss is bit for bit the fold's own."""
    from socmap.fold_batch import ALIGN_SITES, solve_groups

    config = load_config(data_dir=str(twin), folds=3)
    data = load_sites(config)
    folds = make_folds(data.lon, data.lat, config.folds, config.split, config.seed)
    trainers = [HybridTrainer(config, data, folds[k % 3], tmp_path / f"t{k}", torch.device("cpu")) for k in range(4)]
    sizes = [9, ALIGN_SITES, 7, ALIGN_SITES]
    group = [(t, t.fold.train[:n]) for t, n in zip(trainers, sizes)]
    calls = solve_groups(group)
    assert [[len(i) for _, i in call] for call in calls] == [[ALIGN_SITES, ALIGN_SITES, 9], [7]]
    with torch.no_grad():
        together = {id(t): float(loss) for call in calls for (t, _), loss in zip(call, batched_losses(call))}
        for t, idx in group:
            assert together[id(t)] == float(t.batch_loss(idx))


def test_site_rows_gather_what_subset_gathers(twin):
    from socmap.clm5.operators import prepare_forcing
    from socmap.trainer import SiteRows

    data = load_sites(load_config(data_dir=str(twin)))
    prepared = prepare_forcing(data.forcing.to(torch.float64, "cpu"))
    index = torch.as_tensor(np.random.default_rng(0).permutation(len(data))[:77])
    a, b = prepared.subset(index), SiteRows(prepared).subset(index)
    for name in ("inputs_g_m2_day", "temp_exponent", "water", "oxygen", "oxygen_nitrogen", "transport_basis", "thawed"):
        assert torch.equal(getattr(a, name), getattr(b, name)) and getattr(b, name).is_contiguous(), name
    assert b.bedrock_rule == a.bedrock_rule and b.batch_size == 77


def test_worker_groups_deal_consecutive_folds():
    from socmap.fold_runner import worker_groups

    folds = make_folds(np.arange(50.0) % 10 - 100, np.arange(50.0) // 10 + 30, 5, "random", 0)
    batching = load_config(fold_batching=True)
    assert [[f.index for f in g] for g in worker_groups(batching, folds, 2)] == [[0, 1, 2], [3, 4]]
    assert [[f.index for f in g] for g in worker_groups(batching, folds[:2], 2)] == [[0], [1]]
    assert [[f.index for f in g] for g in worker_groups(load_config(), folds, 2)] == [[0, 1, 2], [3, 4]]  # the default
    assert [[f.index for f in g] for g in worker_groups(load_config(fold_batching=False), folds, 2)] == [[k] for k in range(5)]


def test_fold_batching_is_the_default_where_it_applies():
    """Unset (None), the folds train batched for a hybrid encoder without dropout, and each on
    its own otherwise (a baseline, or dropout); false turns it off, and the run records what was given."""
    assert load_config().fold_batching is None and load_config().batches_folds is True
    assert load_config(encoder="mlp").batches_folds is True
    assert load_config(encoder="mlp", dropout=0.1).batches_folds is False
    assert load_config(encoder="rf").batches_folds is False
    assert load_config(fold_batching=False).batches_folds is False
