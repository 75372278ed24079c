"""Atomic file-system writes shared by every writer (synthetic twin, real cube, run store, records)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` through a temporary file and a rename.

    A reader (or a process killed mid-write) sees either the old file or the complete new one,
    never a truncated file. The temporary file sits next to ``path`` so the rename stays on one
    file system. Returns ``path``.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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
