"""The forcing container: the typed input the CLM5 model consumes (batch-first, one row per site/cell).

This module only fixes the contract (fields, shapes, units, ranges) and validates it. Forcing is
produced elsewhere: derived from monthly climate and land cover by
:func:`socmap.climate_forcing.derive_forcing`, or read from a CESM2-style file by
:func:`socmap.cesm2_forcing.read_cesm2_forcing`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable

import numpy as np
import torch

from socmap.clm5.grid import N_LAYERS

N_MONTHS = 12
#: Freezing point of water (K): soil at or below it is frozen (``soil_temp_k`` is in kelvin).
T_FREEZE_K = 273.15
INPUT_POOLS = ("cwd", "litter1", "litter2", "litter3")


def batch_first(sites_last: np.ndarray) -> np.ndarray:
    """An [M, J, N] array (sites innermost) as the [N, M, J] view :class:`Forcing` documents, no copy.

    Why: :func:`socmap.clm5.operators.prepare_forcing` works with sites innermost ([12, 20, B]).
    A forcing field derived in that memory layout and handed over as this view keeps its layout
    through ``torch.as_tensor`` and elementwise ops, so preparing it needs no transposing copy
    (the field's shape, values and indexing are those of a batch-first array).
    """
    return np.moveaxis(sites_last, -1, 0)


@dataclass(frozen=True)
class Forcing:
    """CLM5 forcing for a batch of ``B`` sites.

    Attributes
    ----------
    inputs_g_m2_yr : Tensor [B, 4]
        Annual carbon input to CWD, metabolic, cellulose and lignin litter (gC m-2 yr-1).
    soil_temp_k : Tensor [B, 12, 20]
        Monthly soil temperature per layer (K).
    water_scalar, oxygen_scalar, nitrogen_scalar : Tensor [B, 12, 20]
        Monthly environmental scalars per layer, each in [0, 1] (CESM2 ``W_SCALAR``,
        ``O_SCALAR`` and ``FPI_vr`` or their derived counterparts).
    alt_m : Tensor [B, 12]
        Monthly active-layer depth (m): ``max(ALTMAX, ALTMAX_LASTYEAR)``; 0 = frozen all month.
        Use a large value (e.g. 10 m) where there is no permafrost. Drives the bio/cryoturbation
        regime and the cryoturbation taper.
    nbedrock : Tensor [B] (int64)
        Number of soil layers above bedrock, 1–20 (CLM's 1-based index of the deepest soil
        layer); 20 = bedrock below the simulated column.
    altmax_lastyear_m : Tensor [B], optional
        Last year's maximum active-layer depth (m), CLM's ``ALTMAX_LASTYEAR``, kept apart from
        ``alt_m`` because CLM5 keys the input profile on it alone: 0 (permafrost up to the
        surface last year, e.g. a first thaw) puts all carbon input in the top layer.
        Default (``None``): the annual maximum of ``alt_m``, i.e. last year's maximum equals
        this year's, as in a climatological steady state.
    """

    inputs_g_m2_yr: torch.Tensor
    soil_temp_k: torch.Tensor
    water_scalar: torch.Tensor
    oxygen_scalar: torch.Tensor
    nitrogen_scalar: torch.Tensor
    alt_m: torch.Tensor
    nbedrock: torch.Tensor
    altmax_lastyear_m: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.altmax_lastyear_m is None:  # steady-state climatology: last year's max = this year's
            object.__setattr__(self, "altmax_lastyear_m", self.alt_m.detach().amax(-1))

    @property
    def batch_size(self) -> int:
        return int(self.inputs_g_m2_yr.shape[0])

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor], *, floats_only: bool = False) -> "Forcing":
        """Apply ``fn`` to every field (or only the floating-point ones)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v if floats_only and not v.is_floating_point() else fn(v)
        return Forcing(**out)

    def to(self, dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> "Forcing":
        """Cast floating fields to ``dtype`` and move everything to ``device``."""
        moved = self.map(lambda v: v.to(device=device) if device is not None else v)
        return moved.map(lambda v: v.to(dtype) if dtype is not None else v, floats_only=True)

    def subset(self, index: torch.Tensor | slice | np.ndarray) -> "Forcing":
        """Rows ``index`` of every field."""
        return self.map(lambda v: v[index])

    @staticmethod
    def concat(items: list["Forcing"]) -> "Forcing":
        """Concatenate forcings along the batch dimension."""
        return Forcing(**{f.name: torch.cat([getattr(i, f.name) for i in items]) for f in fields(Forcing)})

    def replace(self, **changes: torch.Tensor | None) -> "Forcing":
        """A copy with ``changes`` applied. ``altmax_lastyear_m`` is kept unless given: pass
        ``altmax_lastyear_m=None`` with a new ``alt_m`` to re-derive it (the steady-state default)."""
        return replace(self, **changes)

    @staticmethod
    def from_numpy(**arrays: np.ndarray) -> "Forcing":
        """Build from NumPy arrays (float fields become float64, ``nbedrock`` int64).

        Every field is required except ``altmax_lastyear_m`` (see the class docstring).
        """
        out = {}
        for f in fields(Forcing):
            if f.name == "altmax_lastyear_m" and arrays.get(f.name) is None:
                continue
            if f.name not in arrays:
                raise ValueError(f"forcing field {f.name!r} is missing; give all of {[g.name for g in fields(Forcing)]}")
            dtype = torch.int64 if f.name == "nbedrock" else torch.float64
            out[f.name] = torch.as_tensor(np.asarray(arrays[f.name]), dtype=dtype)
        return Forcing(**out)

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name).detach().cpu().numpy() for f in fields(self)}

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field, the expected shape and the offending sites."""
        b = self.batch_size
        expected = {
            "inputs_g_m2_yr": (b, 4),
            "soil_temp_k": (b, N_MONTHS, N_LAYERS),
            "water_scalar": (b, N_MONTHS, N_LAYERS),
            "oxygen_scalar": (b, N_MONTHS, N_LAYERS),
            "nitrogen_scalar": (b, N_MONTHS, N_LAYERS),
            "alt_m": (b, N_MONTHS),
            "nbedrock": (b,),
            "altmax_lastyear_m": (b,),
        }
        for name, shape in expected.items():
            v = getattr(self, name)
            if tuple(v.shape) != shape:
                raise ValueError(
                    f"forcing field {name!r} has shape {tuple(v.shape)}; expected {shape} "
                    "(batch first: sites, months, layers)"
                )
        ranges = {
            "inputs_g_m2_yr": (0.0, None, "gC m-2 yr-1, non-negative"),
            "soil_temp_k": (150.0, 350.0, "kelvin; did you pass °C?"),
            "water_scalar": (0.0, 1.0, "a 0–1 scalar"),
            "oxygen_scalar": (0.0, 1.0, "a 0–1 scalar"),
            "nitrogen_scalar": (0.0, 1.0, "a 0–1 scalar"),
            "alt_m": (0.0, None, "metres, non-negative"),
            "nbedrock": (1, N_LAYERS, "number of soil layers above bedrock, 1–20"),
            "altmax_lastyear_m": (0.0, None, "metres, non-negative"),
        }
        for name, (lo, hi, what) in ranges.items():
            v = getattr(self, name).detach()
            flat = v.reshape(b, -1)
            finite = torch.isfinite(flat) if v.is_floating_point() else torch.ones_like(flat, dtype=torch.bool)
            bad = ~finite.all(1)
            ok = torch.where(finite, flat, torch.zeros((), dtype=flat.dtype))
            if lo is not None:
                bad |= (ok < lo).any(1)
            if hi is not None:
                bad |= (ok > hi).any(1)
            if bool(bad.any()):
                sites = torch.nonzero(bad).flatten().tolist()
                shown = ", ".join(map(str, sites[:10])) + (" …" if len(sites) > 10 else "")
                raise ValueError(
                    f"forcing field {name!r} ({what}) is NaN or out of range at {len(sites)} "
                    f"site(s): indices {shown}. Fix or drop those sites before solving."
                )
        if not float(self.inputs_g_m2_yr.detach().sum(1).min()) > 0:
            sites = torch.nonzero(self.inputs_g_m2_yr.detach().sum(1) <= 0).flatten().tolist()
            raise ValueError(
                f"forcing field 'inputs_g_m2_yr' sums to zero at site(s) {sites[:10]}: a steady "
                "state needs a carbon input"
            )
