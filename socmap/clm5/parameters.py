"""The 21 CLM5 soil-carbon parameters: the single source of truth.

Encoders predict ``p`` in [0, 1]; the process model takes physical values
``theta = lower + p * (upper - lower)`` (docs/model.md §4.2). Bounds are BINN's; defaults are the
CLM5 values (``clm5_params.c190829.nc``). Two CLM5 defaults lie outside BINN's bounds:
``efolding`` (10 m) and ``fs1s2`` (sand dependent; the table holds the value at 40 % sand,
see :func:`clm5_fs1s2`). Names are Python identifiers; ``binn_name`` is the original spelling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Parameter:
    """One row of the parameter table."""

    index: int
    name: str
    unit: str
    lower: float
    upper: float
    default: float
    description: str
    binn_name: str

    @property
    def span(self) -> float:
        return self.upper - self.lower


def clm5_fs1s2(sand_pct: float | np.ndarray) -> float | np.ndarray:
    """CLM5's sand-dependent S1→S2 fraction in the CUE form: ``1 - t - 0.004``.

    ``t = 0.85 - 0.0068 (100 - sand%)`` is the S1 respiration fraction (CLM5 CENTURY cascade).
    """
    t = 0.85 - 0.0068 * (100.0 - np.asarray(sand_pct, dtype=float))
    return 1.0 - t - 0.004


_ROWS = [
    # name, unit, lower, upper, default, description
    ("diffus", "m2 yr-1", 3e-5, 5e-4, 1e-4, "bioturbation diffusivity"),
    ("cryo", "m2 yr-1", 3e-5, 1.6e-3, 5e-4, "cryoturbation diffusivity"),
    ("q10", "1", 1.2, 3.0, 1.5, "temperature sensitivity Q10 (frozen Q10 equal)"),
    ("efolding", "m", 0.1, 1.0, 10.0, "e-folding depth of decomposition rates"),
    ("taucwd", "yr", 1.0, 6.0, 3.3333, "turnover time of coarse woody debris"),
    ("taul1", "yr", 1e-4, 0.11, 0.0541, "turnover time of metabolic litter"),
    ("taul2", "yr", 0.1, 0.3, 0.2041, "turnover time of cellulose and lignin litter"),
    ("tau4s1", "yr", 1e-4, 0.5, 0.1370, "turnover time of fast SOM (S1)"),
    ("tau4s2", "yr", 1.0, 10.0, 5.0, "turnover time of slow SOM (S2)"),
    ("tau4s3", "yr", 20.0, 400.0, 222.222, "turnover time of passive SOM (S3)"),
    ("fl1s1", "1", 0.1, 0.8, 0.45, "fraction of metabolic litter decomposition to S1"),
    ("fl2s1", "1", 0.2, 0.8, 0.5, "fraction of cellulose litter decomposition to S1"),
    ("fl3s2", "1", 0.2, 0.8, 0.5, "fraction of lignin litter decomposition to S2"),
    ("fs1s2", "1", 1e-4, 0.4, float(clm5_fs1s2(40.0)), "fraction of S1 decomposition to S2"),
    ("fs1s3", "1", 1e-4, 0.1, 0.004, "fraction of S1 decomposition to S3"),
    ("fs2s1", "1", 0.1, 0.74, 0.42, "fraction of S2 decomposition to S1"),
    ("fs2s3", "1", 1e-4, 0.1, 0.03, "fraction of S2 decomposition to S3"),
    ("fs3s1", "1", 1e-4, 0.9, 0.45, "fraction of S3 decomposition to S1"),
    ("fcwdl2", "1", 0.5, 1.0, 0.76, "fraction of CWD fragmentation to cellulose litter"),
    ("w_scaling", "1", 1e-4, 5.0, 1.0, "multiplier on the soil water scalar"),
    ("beta", "cm-1", 0.5, 0.9999, 0.95, "Jackson beta of the carbon input depth profile"),
]

PARAMETERS: tuple[Parameter, ...] = tuple(
    Parameter(i, n, u, lo, hi, d, desc, "w-scaling" if n == "w_scaling" else n)
    for i, (n, u, lo, hi, d, desc) in enumerate(_ROWS)
)
N_PARAMS = len(PARAMETERS)
NAMES: tuple[str, ...] = tuple(p.name for p in PARAMETERS)
INDEX: dict[str, int] = {p.name: p.index for p in PARAMETERS}

LOWER = np.array([p.lower for p in PARAMETERS])
UPPER = np.array([p.upper for p in PARAMETERS])
DEFAULT = np.array([p.default for p in PARAMETERS])

#: Named subsets (docs/model.md §4.3). ``fifteen`` really has 16 entries, as in ScIReN's scripts.
SUBSETS: dict[str, tuple[str, ...]] = {
    "four": ("efolding", "tau4s3", "fs1s3", "w_scaling"),
    "fifteen": tuple(NAMES[i] for i in (0, 2, 3, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20)),
    "all": NAMES,
}


def parameter(name: str) -> Parameter:
    """Look up a parameter by name (the BINN spelling ``w-scaling`` is accepted)."""
    key = "w_scaling" if name == "w-scaling" else name
    if key not in INDEX:
        raise ValueError(f"unknown parameter {name!r}; known parameters: {', '.join(NAMES)}")
    return PARAMETERS[INDEX[key]]


def resolve_subset(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Turn ``"four"``, ``"all"``, ``"tau4s3,fs1s3"`` or a list of names into parameter names."""
    if isinstance(spec, str):
        if spec in SUBSETS:
            return SUBSETS[spec]
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    names = tuple(parameter(s).name for s in spec)
    if not names:
        raise ValueError("the parameter subset is empty; use 'four', 'all' or comma-separated names")
    if len(set(names)) != len(names):
        raise ValueError(f"parameter subset {list(names)} names a parameter twice")
    return names


def _bounds(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lo = torch.as_tensor(LOWER, dtype=like.dtype, device=like.device)
    hi = torch.as_tensor(UPPER, dtype=like.dtype, device=like.device)
    return lo, hi


def to_physical(p: torch.Tensor) -> torch.Tensor:
    """Map normalised parameters ``p`` in [0, 1], shape ``[..., 21]``, to physical θ."""
    lo, hi = _bounds(p)
    return lo + p * (hi - lo)


def to_unit(theta: torch.Tensor) -> torch.Tensor:
    """Map physical θ, shape ``[..., 21]``, to normalised ``p`` (inverse of :func:`to_physical`)."""
    lo, hi = _bounds(theta)
    return (theta - lo) / (hi - lo)


def default_theta(batch: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """CLM5 default parameters, shape ``[batch, 21]`` (not all inside BINN's bounds)."""
    return torch.as_tensor(DEFAULT, dtype=dtype).expand(batch, N_PARAMS).clone()


#: CLM5 defaults in normalised units, clipped to [0, 1]: the value a parameter that is not learned
#: holds on real data. Two CLM5 defaults lie above BINN's upper bounds and are held at p = 1:
#: ``efolding`` (10 m, i.e. almost no decrease of decomposition with depth; held at 1 m) and
#: ``fs1s2`` (0.554 at 40 % sand; held at 0.4). Every other default lies inside its bounds
#: (docs/model.md §4.3).
DEFAULT_P = np.clip((DEFAULT - LOWER) / (UPPER - LOWER), 0.0, 1.0)

#: Margin that keeps the centre of the prior penalty inside the range: at p = 0 or 1 the
#: hard-sigmoid bound has no gradient, so a prior centred there would pin a parameter to a bound.
PRIOR_MARGIN = 0.05


def default_p(names: tuple[str, ...] | list[str] | None = None) -> np.ndarray:
    """CLM5 defaults in normalised units (:data:`DEFAULT_P`) of ``names`` (default all 21), [k]."""
    if names is None:
        return DEFAULT_P.copy()
    return np.array([DEFAULT_P[parameter(n).index] for n in names])


def prior_centre_p(names: tuple[str, ...] | list[str]) -> np.ndarray:
    """Centre of the prior penalty of learned parameters ``names``: the CLM5 default in normalised
    units, kept :data:`PRIOR_MARGIN` inside [0, 1] (``efolding`` and ``fs1s2``: 0.95), [k]."""
    return np.clip(default_p(names), PRIOR_MARGIN, 1.0 - PRIOR_MARGIN)


def midrange_theta(batch: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Parameters at p = 0.5 for every entry, shape ``[batch, 21]``."""
    return to_physical(torch.full((batch, N_PARAMS), 0.5, dtype=dtype))


def check_bounds(theta: torch.Tensor, rtol: float = 1e-9) -> None:
    """Raise ``ValueError`` naming sites and parameters where θ lies outside the bounds."""
    lo, hi = _bounds(theta)
    tol = rtol * (hi - lo)
    with torch.no_grad():
        bad = (theta < lo - tol) | (theta > hi + tol) | ~torch.isfinite(theta)
    if bool(bad.any()):
        sites, cols = torch.nonzero(bad, as_tuple=True)
        shown = [
            f"site {int(s)}: {NAMES[int(c)]}={float(theta[s, c]):.6g} not in "
            f"[{LOWER[int(c)]:g}, {UPPER[int(c)]:g}]"
            for s, c in list(zip(sites, cols))[:8]
        ]
        more = "" if len(sites) <= 8 else f" … and {len(sites) - 8} more"
        raise ValueError(
            "parameters outside their bounds (" + "; ".join(shown) + more + "). Map normalised "
            "outputs with to_physical(), or pass check_bounds=False to run e.g. CLM5 defaults."
        )
