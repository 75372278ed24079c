"""Atomic file-system moves shared by every writer (synthetic twin, real cube, run store)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def swap_into_place(src: Path, dst: Path) -> None:
    """Move the finished folder ``src`` to ``dst``, replacing an existing ``dst``.

    The old folder is renamed aside first and deleted only after ``src`` is in place, so a
    reader never sees a half-written ``dst`` and a crash leaves either the old or the new one.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists():
        old = dst.parent / f"{dst.name}.old-{os.getpid()}"
        dst.rename(old)
        src.rename(dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        src.rename(dst)
