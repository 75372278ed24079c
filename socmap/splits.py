"""Cross-validation splits: 2°×2° spatial blocks (ScIReN "grid2") and random k-fold.

Each fold is (train, val, test) site indices. Spatial blocks: sites are binned into
``block_deg`` cells, the cells shuffled with the seed; fold k tests on every n-th cell starting at
k and validates on those starting at k+1 (≈60/20/20). Random: k-fold over sites, validation a
random 1/(n-1) of the remaining sites (≈ BINN's 80/10/10 with 10 folds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("block2deg", "random")


@dataclass(frozen=True)
class Fold:
    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def block_ids(lon: np.ndarray, lat: np.ndarray, block_deg: float = 2.0) -> np.ndarray:
    """Integer id of the ``block_deg`` × ``block_deg`` cell of each site."""
    ix = np.floor((np.asarray(lon) + 180.0) / block_deg).astype(np.int64)
    iy = np.floor((np.asarray(lat) + 90.0) / block_deg).astype(np.int64)
    return iy * 10_000 + ix


def make_folds(lon: np.ndarray, lat: np.ndarray, n_folds: int = 5, split: str = "block2deg", seed: int = 0) -> list[Fold]:
    """Folds over ``len(lon)`` sites; see the module docstring."""
    n = len(lon)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if n_folds < 3:
        raise ValueError("n_folds must be >= 3 (train, validation and test need a fold each)")
    rng = np.random.default_rng(seed)
    if split == "block2deg":
        blocks = block_ids(lon, lat, 2.0)
        cells = np.unique(blocks)
        if len(cells) < n_folds:
            raise ValueError(f"only {len(cells)} 2° blocks hold sites; need at least n_folds={n_folds}")
        cells = cells[rng.permutation(len(cells))]
        group = np.empty(len(cells), dtype=np.int64)
        group[:] = np.arange(len(cells)) % n_folds
        cell_group = dict(zip(cells.tolist(), group.tolist()))
        site_group = np.array([cell_group[b] for b in blocks.tolist()])
        folds = []
        for k in range(n_folds):
            test = np.flatnonzero(site_group == k)
            val = np.flatnonzero(site_group == (k + 1) % n_folds)
            train = np.flatnonzero((site_group != k) & (site_group != (k + 1) % n_folds))
            folds.append(Fold(k, train, val, test))
        return folds
    order = rng.permutation(n)
    chunks = np.array_split(order, n_folds)
    folds = []
    for k in range(n_folds):
        test = np.sort(chunks[k])
        rest = np.concatenate([c for j, c in enumerate(chunks) if j != k])
        rest = rest[rng.permutation(len(rest))]
        n_val = max(1, len(rest) // (n_folds - 1))
        folds.append(Fold(k, np.sort(rest[n_val:]), np.sort(rest[:n_val]), test))
    return folds
