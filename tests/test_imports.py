"""The import rule of DESIGN.md ("Layout"), as import-linter contracts in pyproject.toml:
socmap never imports the dashboard (but for the `serve` command), nothing imports socmap.cli,
and no import cycles inside socmap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("importlinter")


def test_import_contracts_are_kept():
    exe = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([str(exe), str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    report = proc.stdout + proc.stderr
    assert "Contracts: 3 kept, 0 broken." in report, report


def test_no_sys_path_edits_in_the_packages():
    hits = [f"{p.relative_to(ROOT)}:{n}" for pkg in ("socmap", "dashboards") for p in (ROOT / pkg).rglob("*.py")
            for n, line in enumerate(p.read_text().splitlines(), 1) if "sys.path" in line]
    assert not hits, hits
