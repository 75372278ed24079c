"""Files that ship with socmap but live at the top of the source tree: ``assets/`` (state outlines,
dashboard CSS) and ``data_catalog.yaml``.

In a wheel (and an editable install) they are the data-only package ``socmap._shipped``, mapped
onto the repository root by ``pyproject.toml`` (``[tool.setuptools.package-dir]``) and found
through the import system (:func:`importlib.util.find_spec`). Running from a source checkout
that was never installed (``PYTHONPATH=.``), that package does not exist; the files are then
read from the checkout.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import socmap

SHIPPED_PACKAGE = "socmap._shipped"


def _roots() -> list[Path]:
    """Folders that may hold the shipped files: the installed package, then the source checkout."""
    # a data-only (namespace) package: its folders are the spec's search locations
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    # the checkout's root is the folder that holds the `socmap` package
    roots.append(Path(socmap.__file__).resolve().parent.parent)
    return roots


def shipped_file(relative: str) -> Path:
    """Path of a shipped file, e.g. ``"assets/conus_states.geojson"`` or ``"data_catalog.yaml"``.

    Raises
    ------
    FileNotFoundError
        If no installed package or source checkout holds it (reinstall socmap: ``pip install .``).
    """
    tried = []
    for root in _roots():
        path = root / relative
        if path.is_file():
            return path
        tried.append(str(path))
    raise FileNotFoundError(f"{relative} is not shipped with this socmap (looked at {', '.join(tried)}); "
                            "reinstall it (`pip install .` from the source tree)")
