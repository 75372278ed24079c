"""The bad-input corpus: every malformed input the CLI takes ends in one clear error.

Each case runs the real ``socmap`` app (typer's CliRunner, in this process) on a file of
``tests/bad_inputs/`` (profiles, points, training configs, catalogs) or on a run folder damaged
here from the shared tiny run (truncated ``run.json``, missing or truncated fold model, missing or
damaged ``maps.zarr``), and asserts: a non-zero exit, a message naming the file and the field
(per-case substrings), no traceback, and nothing partial left behind (the ``--out`` path absent,
the run folder unchanged). A raster covariate with a wrong CRS has no case yet: the catalog has no
raster covariate entry. Add a case whenever a new input kind appears.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from socmap.cli import app

CORPUS = Path(__file__).parent / "bad_inputs"


@dataclass(frozen=True)
class Ctx:
    """What the cases build their arguments from."""

    run: Path  # the intact tiny KAN run (not mapped)
    twin: Path  # its synthetic twin
    damaged: dict[str, Path]  # damage name -> damaged copy of the run
    out: Path  # an empty folder for this case's outputs


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Ctx], list[str]]
    expect: tuple[str, ...]  # substrings of the message (whitespace-normalised)
    watch: Callable[[Ctx], Path | None] = lambda c: None  # a folder that must be left as it was
    cwd_catalog: str | None = None  # run in a folder holding this catalog as ./data_catalog.yaml
    tags: tuple[str, ...] = field(default_factory=tuple)


def _c(kind: str, name: str) -> str:
    return str(CORPUS / kind / name)


def _predict(points: str, out: str = "pred.csv") -> Callable[[Ctx], list[str]]:
    return lambda c: ["predict", "--run", str(c.run), "--points", _c("points", points), "--out", str(c.out / out)]


def _train_config(name: str) -> Callable[[Ctx], list[str]]:
    return lambda c: ["train", "--config", _c("configs", name), "--data-dir", str(c.twin), "--out", str(c.out / "run")]


def _on_damaged(command: str, damage: str) -> Callable[[Ctx], list[str]]:
    def argv(c: Ctx) -> list[str]:
        run = str(c.damaged[damage])
        if command == "map":
            return ["map", "--run", run, "--scheduler", "synchronous"]
        if command == "predict":
            return ["predict", "--run", run, "--points", str(c.out / "ok_points.csv"), "--out", str(c.out / "pred.csv")]
        if command == "serve":
            return ["serve", "--run", run, "--no-show", "--port", "59999"]
        return ["export", "--run", run, "--layers", "soc_stock_0_30cm", "--out", str(c.out / "tifs")]

    return argv


CASES = [
    # profile tables (socmap profiles check; reuses socmap.data.intake's errors)
    Case("profiles-empty", lambda c: ["profiles", "check", _c("profiles", "empty.csv"), "--tidy", str(c.out / "t.csv")],
         ("empty.csv", "the file is empty")),
    Case("profiles-header-only", lambda c: ["profiles", "check", _c("profiles", "header_only.csv"), "--tidy", str(c.out / "t.csv")],
         ("header_only.csv", "no rows")),
    Case("profiles-ambiguous-units", lambda c: ["profiles", "check", _c("profiles", "no_units.csv"), "--tidy", str(c.out / "t.csv")],
         ("no_units.csv", "column 'oc'", "units:")),
    Case("profiles-non-numeric-strict", lambda c: ["profiles", "check", "--strict", _c("profiles", "non_numeric.csv"),
                                                   "--tidy", str(c.out / "t.csv")],
         ("non_numeric.csv", "'oc_pct'", "lines 3")),
    Case("profiles-missing-lon", lambda c: ["profiles", "check", _c("profiles", "missing_lon.csv"), "--tidy", str(c.out / "t.csv")],
         ("missing_lon.csv", "lon")),
    # points for socmap predict
    Case("points-missing-column", _predict("missing_depth_column.csv"), ("missing_depth_column.csv", "missing column(s) depth_m")),
    Case("points-nan", _predict("nan_lat.csv"), ("nan_lat.csv", "missing value in lat", "line(s) 3", "--skip-bad-rows")),
    Case("points-depth-out-of-range", _predict("depth_out_of_range.csv"), ("depth_out_of_range.csv", "depth_m outside 0-8.6 m", "line(s) 3")),
    Case("points-lat-lon-swapped", _predict("lat_lon_swapped.csv"), ("lat_lon_swapped.csv", "lat", "swapped")),
    Case("points-non-numeric", _predict("non_numeric_depth.csv"), ("non_numeric_depth.csv", "column depth_m", "'10cm'")),
    Case("points-bad-wetland-flag", _predict("bad_wetland_flag.csv"), ("bad_wetland_flag.csv", "column 'wetland'", "'sometimes'", "line(s) 3")),
    Case("points-header-only", _predict("header_only.csv"), ("header_only.csv", "no points")),
    Case("points-out-folder-missing", _predict("nan_lat.csv", "missing/pred.csv"), ("missing", "does not exist")),
    # training configs (socmap train --config)
    Case("config-negative-epochs", _train_config("negative_epochs.yaml"), ("negative_epochs.yaml", "epochs", "greater than or equal to 1")),
    Case("config-zero-lr", _train_config("zero_lr.yaml"), ("zero_lr.yaml", "lr", "greater than 0")),
    Case("config-one-fold", _train_config("one_fold.yaml"), ("one_fold.yaml", "folds must be >= 3")),
    Case("config-dropout-above-one", _train_config("dropout_above_one.yaml"), ("dropout_above_one.yaml", "dropout", "less than 1")),
    Case("config-unknown-encoder", _train_config("unknown_encoder.yaml"), ("unknown_encoder.yaml", "encoder", "'xgboost'")),
    Case("config-unknown-key", _train_config("unknown_key.yaml"), ("unknown_key.yaml", "learning_rate", "unknown option")),
    Case("config-bad-yaml", _train_config("bad_yaml.yaml"), ("bad_yaml.yaml", "not valid YAML")),
    Case("train-missing-data", lambda c: ["train", "--data-dir", str(c.out / "nowhere"), "--out", str(c.out / "run")],
         ("nowhere", "does not exist", "socmap synth --out")),
    # data catalogs (./data_catalog.yaml)
    Case("catalog-bad-yaml", lambda c: ["train", "--data", "synthetic", "--out", str(c.out / "run")],
         ("data_catalog.yaml", "not valid YAML", "line 7"), cwd_catalog="bad_yaml.yaml"),
    Case("catalog-unknown-kind", lambda c: ["train", "--data", "synthetic", "--out", str(c.out / "run")],
         ("data_catalog.yaml", "entry 'synthetic'", "'kind'", "'satellite'"), cwd_catalog="unknown_kind.yaml"),
    Case("catalog-missing-key", lambda c: ["train", "--data", "synthetic", "--out", str(c.out / "run")],
         ("data_catalog.yaml", "entry 'synthetic'", "'uri'", "missing"), cwd_catalog="missing_uri.yaml"),
    Case("catalog-unknown-key", lambda c: ["train", "--data", "synthetic", "--out", str(c.out / "run")],
         ("data_catalog.yaml", "unknown key 'colour'"), cwd_catalog="unknown_entry_key.yaml"),
    # damaged run folders
    *[Case(f"{cmd}-truncated-run-json", _on_damaged(cmd, "truncated_run_json"),
           ("run.json", "is not valid JSON", "re-train the run"), watch=lambda c: c.damaged["truncated_run_json"])
      for cmd in ("map", "predict", "serve")],
    *[Case(f"{cmd}-missing-fold-model", _on_damaged(cmd, "missing_fold_model"),
           ("folds/fold1/model.pt", "fold model is missing", "socmap train --resume --out", "--allow-partial"),
           watch=lambda c: c.damaged["missing_fold_model"]) for cmd in ("map", "predict", "serve")],
    *[Case(f"{cmd}-truncated-model", _on_damaged(cmd, "truncated_model"),
           ("folds/fold2/model.pt", "cannot be read", "truncated or damaged", "socmap train --resume --out"),
           watch=lambda c: c.damaged["truncated_model"]) for cmd in ("map", "predict")],
    Case("export-missing-store", _on_damaged("export", "no_store"), ("maps.zarr", "socmap map --run")),
    Case("export-damaged-store", _on_damaged("export", "damaged_store"), ("maps.zarr", "not a readable Zarr run store")),
    Case("train-finished-run", lambda c: ["train", "--data-dir", str(c.twin), "--out", str(c.damaged["no_store"])],
         ("already holds a finished run", "--resume"), watch=lambda c: c.damaged["no_store"]),
    Case("train-resume-changed-config", lambda c: ["train", "--resume", "--epochs", "7", "--out", str(c.damaged["no_store"])],
         ("--resume", "config.yaml", "epochs: 2 → 7"), watch=lambda c: c.damaged["no_store"]),
]


@pytest.fixture(scope="module")
def damaged_runs(tiny_run, run_copy) -> dict[str, Path]:
    """Copies of the tiny run, each damaged one way."""
    runs = {name: run_copy(f"bad-{name}") for name in
            ("truncated_run_json", "missing_fold_model", "truncated_model", "no_store", "damaged_store")}
    text = (runs["truncated_run_json"] / "run.json").read_text()
    (runs["truncated_run_json"] / "run.json").write_text(text[: len(text) // 2])
    (runs["missing_fold_model"] / "folds" / "fold1" / "model.pt").unlink()
    model = runs["truncated_model"] / "folds" / "fold2" / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    store = runs["damaged_store"] / "maps.zarr"  # a store whose metadata was cut off mid-write
    store.mkdir()
    (store / ".zgroup").write_text('{"zarr_format": 2}')
    (store / ".zmetadata").write_text('{"metadata": {".zattrs": {"store_ver')
    (store / ".zattrs").write_text("{")
    return runs


def _snapshot(folder: Path | None) -> dict[str, tuple[int, int]] | None:
    if folder is None:
        return None
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_error(case: Case, tiny_run, damaged_runs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "ok_points.csv").write_text("lon,lat,depth_m\n-100.0,40.0,0.1\n")
    ctx = Ctx(run=tiny_run, twin=tiny_run.parent.parent / "data", damaged=damaged_runs, out=out)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    if case.cwd_catalog:
        shutil.copyfile(CORPUS / "catalogs" / case.cwd_catalog, cwd / "data_catalog.yaml")
    monkeypatch.chdir(cwd)
    argv = case.argv(ctx)
    watched = case.watch(ctx)
    before_out, before_watch = sorted(os.listdir(out)), _snapshot(watched)
    res = CliRunner().invoke(app, argv)
    text = " ".join(res.output.split())
    print(f"[{case.id}] exit {res.exit_code}: {text}")  # the corpus listing (pytest -s)
    assert res.exit_code not in (0, None), f"exit 0 for {argv}: {text}"
    assert res.exception is None or isinstance(res.exception, SystemExit), f"uncaught {res.exception!r}: {text}"
    assert "Traceback" not in res.output, text
    packed = "".join(text.split())  # rich may wrap a long path anywhere
    for want in case.expect:
        assert "".join(want.split()) in packed, f"{want!r} not in the message: {text}"
    assert sorted(os.listdir(out)) == before_out, "something was written under the output folder"
    assert sorted(os.listdir(cwd)) == sorted(["data_catalog.yaml"] if case.cwd_catalog else [])
    assert _snapshot(watched) == before_watch, f"{watched} changed"
