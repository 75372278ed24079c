"""``socmap --help`` starts without torch: the train command (its flags come from TrainConfig,
which imports torch) is built only when it runs or its own help is shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PROBE = """
import json, sys
from socmap.cli import app
try:
    app(sys.argv[1:], prog_name="socmap")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def _run(*args: str) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


def test_help_does_not_import_torch_and_lists_train():
    result, out = _run("--help")
    assert result == {"code": 0, "torch": False}, out
    assert "train" in out and "spatial" in out  # listed with its summary line


def test_train_help_still_shows_the_config_defaults():
    from socmap.train_config import TrainConfig

    result, out = _run("train", "--help")
    assert result["code"] == 0 and result["torch"], out
    text = " ".join(out.split())
    assert "--epochs" in text and "--device" in text
    assert f"(default: {TrainConfig().epochs})" in text and f"(default: {TrainConfig().device})" in text
