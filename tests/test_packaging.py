"""The wheel is the app: it holds the dashboard package, the assets and the data catalog, and
installed outside the checkout it finds them without the source tree (no sys.path edits)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

PROBE = """
import json, sys
import socmap, dashboards.app
from socmap.data.catalog import default_catalog_path
from socmap.data.grid import conus_states_path
from socmap.resources import shipped_file
print(json.dumps({"socmap": socmap.__file__, "app": dashboards.app.__file__,
                  "build_app": callable(dashboards.app.build_app),
                  "states": str(conus_states_path()), "catalog": str(default_catalog_path()),
                  "css": str(shipped_file("assets/dashboard.css"))}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # build from a copy: an in-tree build/ folder could carry modules deleted since into the wheel
    src = tmp_path_factory.mktemp("src") / "socmap"
    skip = {".git", ".venv", "build", "socmap.egg-info", "test-artifacts", "data", "runs", ".pytest_cache"}
    shutil.copytree(ROOT, src, ignore=lambda folder, names: [n for n in names if n == "__pycache__"
                                                             or (Path(folder) == ROOT and n in skip)])
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(out)],
                   check=True, cwd=out, timeout=180)
    (whl,) = out.glob("socmap-*.whl")
    return whl


def test_wheel_holds_the_app_the_assets_and_the_catalog(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("dashboards/app.py", "dashboards/views.py", "socmap/_shipped/data_catalog.yaml",
                     "socmap/_shipped/assets/conus_states.geojson", "socmap/_shipped/assets/dashboard.css"):
        assert required in names, f"{required} missing from {wheel.name}"
    # every package of the source tree is listed in pyproject's [tool.setuptools] packages
    for init in [*(ROOT / "socmap").rglob("__init__.py"), *(ROOT / "dashboards").rglob("__init__.py")]:
        rel = init.relative_to(ROOT).as_posix()
        assert rel in names, f"package {init.parent.relative_to(ROOT)} is not in the wheel: add it to pyproject's packages"


def test_installed_wheel_finds_its_files_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, timeout=180)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SOCMAP_ASSETS")}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run([sys.executable, "-P", "-c", PROBE], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found.pop("build_app") is True
    for what, path in found.items():
        assert Path(path).is_relative_to(site), f"{what} resolved to {path}, outside the installed wheel"
        assert Path(path).is_file()
