"""Folds trained in worker processes: the sequential run bit for bit, resumable, stopped cleanly."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch

from socmap import fold_runner
from socmap.fold_runner import FoldError, resolve_fold_workers
from socmap.train import resume_config, train
from socmap.train_config import load_config

from conftest import run_record, write_twin

#: A short KAN schedule (fit, polish, sparsify + prune, refit) on 3 folds.
SHORT = dict(folds=3, epochs=3, batch_size=32, kan_polish_iters=5, kan_sparsify_epochs=2, kan_refit_epochs=2)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    return write_twin(tmp_path_factory, "twin", 120)


@pytest.fixture(scope="module")
def runs(twin, tmp_path_factory) -> dict[str, Path]:
    """The same run trained with one fold worker (in process) and with two worker processes."""
    base = tmp_path_factory.mktemp("runs")
    for workers in (1, 2):
        train(load_config(data_dir=str(twin), fold_workers=workers, **SHORT), base / f"w{workers}", progress=False)
    return {"w1": base / "w1", "w2": base / "w2"}


def _record(run: Path) -> dict:
    """run.json without what may differ between two runs of the same config: timing and the runtime option."""
    return run_record(run, ("fold_workers",))


def _assert_same_run(a: Path, b: Path) -> None:
    assert _record(a) == _record(b)
    for name in ("predictions.csv", "site_parameters.csv", "sites.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for k in range(3):
        sa = torch.load(a / f"folds/fold{k}/model.pt", weights_only=False)["state_dict"]
        sb = torch.load(b / f"folds/fold{k}/model.pt", weights_only=False)["state_dict"]
        assert sa.keys() == sb.keys()
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=f"fold {k} {key}")


def test_two_workers_give_the_sequential_run_bit_for_bit(runs):
    _assert_same_run(runs["w1"], runs["w2"])
    rec = json.loads((runs["w2"] / "run.json").read_text())
    assert [f["fold"] for f in rec["metrics"]["cv"]["folds"]] == [0, 1, 2]  # gathered in fold order
    assert rec["config"]["fold_workers"] == 2 and rec["metrics"]["param_recovery"]


def test_worker_log_records_reach_this_process(twin, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    train(load_config(data_dir=str(twin), fold_workers=2, fold_indices=[0, 2], **SHORT), tmp_path / "run", progress=False)
    pruned = {r.getMessage() for r in caplog.records if r.name == "socmap.phases" and "pruned" in r.getMessage()}
    assert {m.split(":")[0] for m in pruned} == {"fold 0", "fold 2"}  # logged in the workers
    done = [r.getMessage() for r in caplog.records if r.name == "socmap.fold_runner" and "test NSE" in r.getMessage()]
    assert sorted(m.split(":")[0] for m in done) == ["fold 0", "fold 2"]  # each fold's result logged once
    assert sorted(json.loads((tmp_path / "run" / "run.json").read_text())["timing"]) == ["per_fold_s", "total_s"]


def test_resume_on_workers_skips_finished_folds_and_may_change_fold_workers(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["w1"], run)  # trained with fold_workers: 1
    (run / "run.json").unlink()
    for k in (0, 1):  # folds 0 and 1 killed before they started: two folds for two workers
        for name in ("result.json", "test_sim.npy", "test_p.npy", "checkpoint.pt", "model.pt"):
            (run / f"folds/fold{k}" / name).unlink()
    kept = (run / "folds/fold2/result.json").stat().st_mtime_ns
    train(load_config(fold_workers=2), run, resume=True, progress=False)
    assert (run / "folds/fold2/result.json").stat().st_mtime_ns == kept  # not re-trained
    assert all((run / f"folds/fold{k}/result.json").exists() for k in (0, 1))
    _assert_same_run(runs["w1"], run)


def test_a_failing_fold_stops_the_run_naming_the_fold(twin, tmp_path):
    run = tmp_path / "run"
    (run / "folds").mkdir(parents=True)
    (run / "folds" / "fold1").write_text("not a folder")  # fold 1 cannot create its folder in its worker
    with pytest.raises(FoldError, match=r"fold 1 failed in its worker process .*fold1\): FileExistsError"):
        train(load_config(data_dir=str(twin), fold_workers=2, fold_batching=False, **SHORT), run, resume=True,
              progress=False)
    assert not (run / "run.json").exists() and not (run / "predictions.csv").exists()
    for k in (0, 2):  # a fold either finished completely or left no result.json
        done = run / f"folds/fold{k}/result.json"
        assert not done.exists() or all((run / f"folds/fold{k}" / n).is_file() for n in ("test_sim.npy", "test_p.npy", "model.pt"))


def test_a_failing_batched_group_names_its_folds_and_the_cause(twin, tmp_path):
    """With fold batching (the default) a worker trains a group of folds; its failure names the
    group, the file and the worker's error, and no run.json is written."""
    run = tmp_path / "run"
    (run / "folds").mkdir(parents=True)
    (run / "folds" / "fold1").write_text("not a folder")
    with pytest.raises(FoldError, match=r"folds 0, 1 \(trained batched together\) failed in their worker process "
                                        r".*FileExistsError.*fold1"):
        train(load_config(data_dir=str(twin), fold_workers=2, **SHORT), run, resume=True, progress=False)
    assert not (run / "run.json").exists() and not (run / "predictions.csv").exists()


def test_ctrl_c_ends_the_workers(twin, tmp_path):
    run = tmp_path / "run"
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        from socmap.train import train
        from socmap.train_config import load_config

        if __name__ == "__main__":
            train(load_config(data_dir={str(twin)!r}, folds=3, epochs=500, patience=500, fold_workers=2), {str(run)!r}, progress=False)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 240
        while not all((run / f"folds/fold{k}/checkpoint.pt").exists() for k in (0, 1)):  # both workers training
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the workers did not start training"
            time.sleep(0.2)
        workers = [p for p in parent.children(recursive=True) if "resource_tracker" not in " ".join(p.cmdline())]
        assert len(workers) == 2
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in stderr
    assert stderr.count("KeyboardInterrupt") == 1  # the workers ignore SIGINT: this process ends them
    gone = psutil.wait_procs(workers, timeout=10)[1]
    assert gone == []
    assert not (run / "run.json").exists()
    assert not any((run / f"folds/fold{k}/result.json").exists() for k in range(3))


def test_fold_workers_resolve_from_the_cores_the_folds_and_the_device(monkeypatch, tmp_path):
    monkeypatch.delenv(fold_runner.FOLD_WORKERS_ENV, raising=False)  # the suite sets it (conftest)
    monkeypatch.setattr(fold_runner, "usable_cores", lambda: 8)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_fold_workers(load_config(), 5, cpu) == 5
    assert resolve_fold_workers(load_config(), 12, cpu) == 8
    assert resolve_fold_workers(load_config(threads=3), 5, cpu) == 2  # 8 cores / 3 threads per fold
    assert resolve_fold_workers(load_config(threads=16), 5, cpu) == 1
    assert resolve_fold_workers(load_config(), 5, gpu) == 1
    assert resolve_fold_workers(load_config(fold_workers=3), 5, gpu) == 3  # asked for
    assert resolve_fold_workers(load_config(fold_workers=4), 2, cpu) == 2  # never more than the folds
    monkeypatch.setattr(fold_runner, "usable_cores", lambda: 1)
    assert resolve_fold_workers(load_config(), 5, cpu) == 1
    monkeypatch.undo()
    assert 1 <= fold_runner.usable_cores() <= (os.cpu_count() or 1)
    with pytest.raises(ValueError, match="fold_workers"):
        load_config(fold_workers=0)
    # a runtime option: a resume may change it
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(__import__("yaml").safe_dump(load_config(fold_workers=1, epochs=7).model_dump()))
    resumed = resume_config(load_config(fold_workers=2), out)
    assert resumed.fold_workers == 2 and resumed.epochs == 7


def test_fold_workers_environment_default(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(fold_runner, "usable_cores", lambda: 8)
    monkeypatch.setenv(fold_runner.FOLD_WORKERS_ENV, "3")
    assert resolve_fold_workers(load_config(), 5, cpu) == 3
    assert resolve_fold_workers(load_config(), 2, cpu) == 2  # never more than the folds
    assert resolve_fold_workers(load_config(fold_workers=1), 5, cpu) == 1  # the config wins
    monkeypatch.setenv(fold_runner.FOLD_WORKERS_ENV, "two")
    with pytest.raises(ValueError, match="SOCMAP_FOLD_WORKERS"):
        resolve_fold_workers(load_config(), 5, cpu)


def test_bad_fold_workers_environment_fails_before_the_run_folder_is_written(twin, tmp_path, monkeypatch):
    monkeypatch.setenv(fold_runner.FOLD_WORKERS_ENV, "0")
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="SOCMAP_FOLD_WORKERS"):
        train(load_config(data_dir=str(twin), **SHORT), out, progress=False)
    assert not out.exists()
