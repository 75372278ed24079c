"""Atomic file-system writes shared by every writer (synthetic twin, real cube, run store, records)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces ``path`` when the block ends without error.

    For writers that want a file name (``torch.save``, ``DataFrame.to_csv``). A reader, or a
    process killed mid-write, sees either the old file or the complete new one, never a truncated
    file; the temporary file sits next to ``path`` so the rename stays on one file system, and it
    is removed if the block raises.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def probe_writable(folder: str | Path) -> None:
    """Raise ``OSError`` unless a file can be created in ``folder`` (checked before long work starts).

    A real write is the only reliable test (``os.access`` misses read-only mounts and ACLs).
    """
    import tempfile

    fd, probe = tempfile.mkstemp(prefix=".socmap-write-test-", dir=folder)
    os.close(fd)
    os.unlink(probe)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)


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
