"""Where torch work runs: the one place that checks and resolves ``--device`` / ``device:`` names.

``auto`` is CUDA when torch sees a GPU, else the CPU; ``cuda`` (or ``cuda:N``) asked for on a
machine without CUDA is a :class:`DeviceError` with a message for the user, not a traceback
from deep inside torch. ``socmap train`` (the ``device`` field of
:class:`socmap.train_config.TrainConfig`), ``socmap map``, ``socmap predict`` and the
benchmarks all go through here. Solver tensors stay float64 on every device.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Device names accepted on the command line and in configs.
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?|mps"
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


class DeviceError(ValueError):
    """A device name that is malformed or not available on this machine (message for the user)."""


def check_device_name(name: str) -> str:
    """``name`` if it is a device name socmap accepts (:data:`DEVICE_PATTERN`), else :class:`DeviceError`."""
    if not isinstance(name, str) or not re.fullmatch(DEVICE_PATTERN, name):
        raise DeviceError(f"device must be {DEVICE_CHOICES}, not {name!r}")
    return name


def resolve_device(name: str | Any = "auto"):
    """The ``torch.device`` for ``name`` (``auto``: CUDA when available, else CPU).

    Raises
    ------
    DeviceError
        For a malformed name, ``cuda`` without a CUDA-capable torch and GPU, a CUDA index
        beyond the GPUs present, or ``mps`` where it is not available.
    """
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} was asked for but torch sees no CUDA GPU on this machine "
                              f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
                              "use --device cpu, or --device auto to take a GPU only when there is one")
        index = int(name.split(":")[1]) if ":" in name else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"device {name!r}: this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("device 'mps' was asked for but torch's MPS backend is not available here; use --device cpu")
    return torch.device(name)


def model_device(model: Any):
    """The device of a torch module's first parameter or buffer (CPU for one without any)."""
    import torch

    for tensor in (*model.parameters(), *model.buffers()) if hasattr(model, "parameters") else ():
        return tensor.device
    return torch.device("cpu")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block, restored after.

    Why: small batches (a run's few hundred training sites, one window per Dask worker) gain
    nothing from several threads, and on a busy machine torch's threads wait on each other —
    measured: the structured solve at 7.4k sites/s on 2 threads vs 108k on 1 with 4 other jobs
    on 2 cores (benchmarks/mapping.py, issue 17).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
