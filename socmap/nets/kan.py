"""Kolmogorov–Arnold networks (KAN) for the ScIReN-style encoder (docs/model.md §6.3), in pure torch.

Implemented from the math, not from pykan. One layer maps ``x [B, in]`` to ``u [B, out]``::

    u_j = sum_i mask[j, i] * phi_ji(x_i) + bias_j
    phi_ji(x) = s_b[j, i] * b(x) + s_sp[j, i] * sum_q c[j, i, q] * B_q(x)

``B_q`` are B-splines of order ``k`` (cubic by default) on a uniform grid of ``G`` intervals
over ``grid_range``, extended by ``k`` knots on each side, so there are ``G + k`` basis
functions per input. Each input has its own knot vector (buffer ``grid [in, G + 2k + 1]``).

Inputs are expected roughly in [0, 1] (callers min–max scale covariates). Outside the
extended grid every B-spline vanishes, so there ``phi`` reduces to the base term
``s_b * b(x)``: with ``base="identity"`` (ScIReN's choice) edges would extrapolate linearly, with
``base="silu"`` like SiLU, and with ``base="zero"`` they decay to zero. The hybrid's KAN clamps
its first-layer inputs to the grid span (``clamp_inputs=True``, docs/model.md §6.4), so edges are
held constant beyond the training range instead. The model evaluates for any finite input.

A one-layer KAN ``[in, out]`` is a generalised additive model: each output is a sum of
univariate functions of the inputs, readable with :meth:`KANLayer.edge_curve`.

Evaluation is local (docs/model.md §6.3): on a knot interval only ``k + 1`` B-splines are non-zero,
each a polynomial of degree ``k`` in the distance ``u`` from the interval's start. Their
coefficients come from one de Boor triangle per interval and grid (:func:`interval_polynomials`,
cached per layer until the grid changes), so a point costs a knot search and ``k`` powers of
``u``. Without gradients the layers contract those powers with per-interval polynomial
coefficients of each edge (never building the ``[B, in, G + k]`` basis); with gradients they
scatter the ``k + 1`` values into the full basis, whose backward is one matrix product.
:meth:`KAN.shared_basis` lets the forward pass and the score regularisers of a training step use
one evaluation.

Differences from pykan / the ScIReN fork (deliberate):

* ``update_grid`` uses a small default margin (0.05 of the batch range, docs/model.md P15) rather
  than 2.0, and re-fits the coefficients by *penalised* least squares in float64 (ridge
  ``1e-6`` scaled by the mean diagonal of the normal matrix, optional second-difference
  penalty), on the batch plus a uniform fill of the new grid range so the edge functions are
  preserved on the data and between data clusters.
* The per-output node affine (``s^sub``, ``b^sub``, ``s^node``, ``b^node``) and the symbolic
  branch are not implemented; a per-output ``bias`` stands in for the additive constants.
* Edge scores for each layer are normalised by that layer's output statistic (docs/model.md §6.6); pykan's
  backward-propagated attribution over deep networks is not reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "KANLayer",
    "KAN",
    "bspline_basis",
    "bspline_local",
    "fit_spline_coefficients",
    "interval_polynomials",
]

_BASES = ("identity", "silu", "zero")


def _uniform_grid(lo: Tensor, hi: Tensor, grid_size: int, spline_order: int) -> Tensor:
    """Knots ``[n, G + 2k + 1]``: uniform over ``[lo, hi]`` with ``k`` extra knots each side."""
    h = (hi - lo) / grid_size
    steps = torch.arange(-spline_order, grid_size + spline_order + 1, dtype=lo.dtype, device=lo.device)
    return lo[:, None] + steps[None, :] * h[:, None]


def interval_polynomials(grid: Tensor, spline_order: int) -> tuple[Tensor, Tensor]:
    """Each knot interval's non-zero B-splines as polynomials (docs/model.md §6.3), in float64.

    On ``[t_j, t_{j+1})`` only ``B_{j-k}, ..., B_j`` are non-zero, and each is a polynomial of
    degree ``k`` there. The Cox–de Boor recursion ``B_{i,p} = w_{i,p} B_{i,p-1} + (1 - w_{i+1,p})
    B_{i+1,p-1}``, ``w_{i,p} = (x - t_i) / (t_{i+p} - t_i)``, is run once per interval on these
    polynomials (the de Boor triangle), in the local variable ``u = x - t_j``.

    Rows are indexed by ``c = #{m : x >= t_m}`` (``0..M``): ``c = j + 1`` for ``x`` in interval ``j``,
    and ``c = 0`` / ``c = M`` below / at or above the knots, where every polynomial is zero. Basis
    functions that do not exist (``j - k + r`` outside ``0..M-k-2``) are zero too.

    Parameters
    ----------
    grid : ``[n, M]`` increasing knots per input.
    spline_order : ``k``.

    Returns
    -------
    origin : ``[n, M + 1]`` the ``t_j`` that ``u`` is measured from (a knot for the zero rows).
    poly : ``[n, M + 1, k + 1, k + 1]``: ``poly[i, c, r, d]`` is the coefficient of ``u^d`` in
        ``B_{c-1-k+r}`` of input ``i``.
    """
    g = grid.detach().to(torch.float64)
    n, m = g.shape
    k = spline_order
    n_basis = m - k - 1
    value = g.new_zeros(n, m - 1, 1, k + 1)
    value[..., 0] = 1.0  # order 0: B_j = 1 on interval j
    if k > 0:
        # knots t_{j-k+1..j+k} of each interval; beyond the ends they continue the end spacing, and
        # only enter basis functions that do not exist (zeroed below)
        steps = torch.arange(1, k, dtype=g.dtype, device=g.device)
        ext = torch.cat([g[:, :1] - (g[:, 1:2] - g[:, :1]) * steps.flip(0), g,
                         g[:, -1:] + (g[:, -1:] - g[:, -2:-1]) * steps], dim=1)
        win = ext.unfold(1, 2 * k, 1)  # [n, M-1, 2k]
        t_j = win[..., k - 1 : k]
        for p in range(1, k + 1):
            lo, hi = win[..., k - p : k], win[..., k : k + p]  # t_i, t_{i+p} for i = j-p+1..j
            b = 1.0 / (hi - lo)
            a = (t_j - lo) * b  # w_{i,p} = a + b u
            shifted = F.pad(value[..., :-1], (1, 0))  # u * polynomial
            w_part = a[..., None] * value + b[..., None] * shifted
            value = F.pad(w_part, (0, 0, 1, 0)) + F.pad(value - w_part, (0, 0, 0, 1))
    first = torch.arange(-k, m - 1 - k, device=g.device)[:, None] + torch.arange(k + 1, device=g.device)
    exists = (first >= 0) & (first < n_basis)  # [M-1, k+1]
    poly = g.new_zeros(n, m + 1, k + 1, k + 1)
    poly[:, 1:m] = value * exists[None, :, :, None]
    origin = torch.cat([g[:, :1], g], dim=1)
    return origin, poly


def _rows(x: Tensor, grid: Tensor) -> Tensor:
    """``[B, n]`` rows ``i (M + 1) + c`` of :func:`interval_polynomials`, ``c = #{m : x_i >= t_m}``."""
    n, m = grid.shape
    # a NaN lands on a zero row (0 or M), whose polynomial keeps the NaN
    count = torch.searchsorted(grid, x.T.contiguous(), right=True)  # [n, B]
    return (count + torch.arange(0, n * (m + 1), m + 1, device=x.device)[:, None]).T


def _powers(u: Tensor, spline_order: int) -> Tensor:
    """``[..., k + 1]``: ``u^0, ..., u^k``."""
    out = [torch.ones_like(u)]
    for _ in range(spline_order):
        out.append(out[-1] * u)
    return torch.stack(out, dim=-1)


def _weighted_rows(table: Tensor, index: Tensor, weights: Tensor) -> Tensor:
    """``sum_l weights[..., l] * table[index[..., l]]``: ``[..., L]`` -> ``[..., out]`` for a ``[rows, out]`` table
    (one ``embedding_bag``)."""
    lead, width = index.shape[:-1], index.shape[-1]
    if index.numel() == 0:
        return table.new_zeros(*lead, table.shape[1])
    flat = F.embedding_bag(index.reshape(-1, width), table, per_sample_weights=weights.reshape(-1, width), mode="sum")
    return flat.view(*lead, table.shape[1])


def _values(rows: Tensor, powers: Tensor, poly: Tensor) -> Tensor:
    """``[B, n, k + 1]`` local B-spline values from :func:`_rows`, :func:`_powers` and ``poly`` of
    :func:`interval_polynomials` (in the points' dtype)."""
    k1 = powers.shape[-1]
    return (poly.reshape(-1, k1, k1)[rows] * powers.unsqueeze(-2)).sum(-1)


def _scatter(rows: Tensor, values: Tensor, knots: int) -> Tensor:
    """The local values placed in the full basis ``[B, n, knots - k - 1]`` (zeros elsewhere)."""
    n, k = rows.shape[-1], values.shape[-1] - 1
    n_basis = knots - k - 1
    offsets = torch.arange(0, n * (knots + 1), knots + 1, device=rows.device)
    cols = (rows - offsets).unsqueeze(-1) + torch.arange(k + 1, device=rows.device)  # B_{c-1-k+r}, padded by k+1
    dense = values.new_zeros(*rows.shape, n_basis + 2 * k + 2).scatter(-1, cols, values)
    return dense[..., k + 1 : k + 1 + n_basis]


def bspline_local(x: Tensor, grid: Tensor, spline_order: int) -> tuple[Tensor, Tensor]:
    """The ``k + 1`` B-splines that can be non-zero at each point (:func:`interval_polynomials`).

    Parameters
    ----------
    x : ``[B, n]`` points (one column per input).
    grid : ``[n, M]`` increasing knot vector per input (here ``M = G + 2k + 1``).
    spline_order : ``k`` (3 = cubic).

    Returns
    -------
    first : ``[B, n]`` int64, the index of the basis function of value 0: value ``r`` is
        ``B_{first + r}`` (those with an index outside ``0..M-k-2`` do not exist and are 0).
    values : ``[B, n, k + 1]`` in ``x.dtype``; zero for finite ``x`` outside
        ``[grid[:, 0], grid[:, -1])`` and, for ``k >= 1``, NaN for non-finite ``x`` (as the full
        recursion gives).
    """
    n, m = grid.shape
    origin, poly = interval_polynomials(grid, spline_order)
    rows = _rows(x, grid.to(x.dtype))
    values = _values(rows, _powers(x - origin.to(x.dtype).reshape(-1)[rows], spline_order), poly.to(x.dtype))
    first = rows - torch.arange(0, n * (m + 1), m + 1, device=x.device) - 1 - spline_order
    return first, values


def bspline_basis(x: Tensor, grid: Tensor, spline_order: int) -> Tensor:
    """All ``M - k - 1`` B-spline values ``[B, n, M - k - 1]`` (arguments as :func:`bspline_local`).

    The local values placed in the full basis, for least-squares fits and curves. Zero outside
    ``[grid[:, 0], grid[:, -1])``; NaN for a non-finite ``x`` (``k >= 1``).
    """
    k = spline_order
    first, values = bspline_local(x, grid, k)
    n, m = grid.shape
    rows = first + 1 + k + torch.arange(0, n * (m + 1), m + 1, device=x.device)
    dense = _scatter(rows, values, m)
    if k > 0:  # as the recursion: a non-finite x is NaN in every basis function
        dense = torch.where(torch.isfinite(x).unsqueeze(-1), dense, values[..., :1])
    return dense


def _second_difference_matrix(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    d = torch.zeros(max(n - 2, 0), n, dtype=dtype, device=device)
    for r in range(n - 2):
        d[r, r], d[r, r + 1], d[r, r + 2] = 1.0, -2.0, 1.0
    return d


def fit_spline_coefficients(
    x: Tensor,
    y: Tensor,
    grid: Tensor,
    spline_order: int,
    ridge: float = 1e-6,
    curvature: float = 0.0,
) -> Tensor:
    """Penalised least-squares spline coefficients, solved in float64.

    For each input ``i`` solve ``(A_i^T A_i + lam_r s_i I + lam_c s_i D^T D) c = A_i^T y_i``
    where ``A_i = B(x_i)`` is the ``[N, G+k]`` basis matrix, ``D`` the second-difference
    operator and ``s_i = trace(A_i^T A_i) / (G + k)`` makes the penalties scale free.

    Parameters
    ----------
    x : ``[N, in]`` sample points.
    y : ``[N, out, in]`` target edge values (spline part) at those points.
    grid : ``[in, G + 2k + 1]`` knots.

    Returns
    -------
    ``[out, in, G + k]`` coefficients (float64).
    """
    x64 = x.detach().to(torch.float64)
    y64 = y.detach().to(torch.float64)
    g64 = grid.detach().to(torch.float64)
    a = bspline_basis(x64, g64, spline_order)  # [N, in, nb]
    nb = a.shape[-1]
    ata = torch.einsum("niq,nir->iqr", a, a)  # [in, nb, nb]
    aty = torch.einsum("niq,noi->iqo", a, y64)  # [in, nb, out]
    scale = torch.diagonal(ata, dim1=-2, dim2=-1).sum(-1) / nb  # [in]
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    eye = torch.eye(nb, dtype=torch.float64, device=x64.device)
    pen = ridge * eye
    if curvature > 0 and nb >= 3:
        d2 = _second_difference_matrix(nb, torch.float64, x64.device)
        pen = pen + curvature * d2.T @ d2
    lhs = ata + scale[:, None, None] * pen[None]
    coef = torch.linalg.solve(lhs, aty)  # [in, nb, out]
    return coef.permute(2, 0, 1).contiguous()


class KANLayer(nn.Module):
    """One KAN layer ``[in_features -> out_features]`` (see the module docstring).

    Parameters
    ----------
    grid_size : number of grid intervals ``G``.
    spline_order : B-spline order ``k``.
    base : ``"identity"`` (ScIReN), ``"silu"`` (pykan default) or ``"zero"``.
    grid_range : initial grid span for every input.
    noise_scale : initial spline coefficients are a least-squares fit to noise
        ``U(-1/2, 1/2) * noise_scale / G`` at the grid points (ScIReN uses 0.3; default 0.1, docs/model.md §6.3).
    clamp : hold every edge constant beyond its grid's span (the data range plus the grid
        margin) instead of extrapolating: inputs are clamped to ``[grid[k], grid[k + G]]``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        base: str = "identity",
        grid_range: tuple[float, float] = (0.0, 1.0),
        noise_scale: float = 0.1,
        clamp: bool = False,
    ) -> None:
        super().__init__()
        if base not in _BASES:
            raise ValueError(f"unknown base function {base!r}; choose one of {_BASES}")
        if in_features < 1 or out_features < 1:
            raise ValueError("in_features and out_features must be >= 1")
        if grid_size < 1 or spline_order < 0:
            raise ValueError("grid_size must be >= 1 and spline_order >= 0")
        lo, hi = float(grid_range[0]), float(grid_range[1])
        if not hi > lo:
            raise ValueError(f"grid_range must be increasing, got {grid_range}")
        self.in_features = in_features
        self.out_features = out_features
        self.grid_size = grid_size
        self.spline_order = spline_order
        self.base = base
        self.clamp = bool(clamp)
        self.n_basis = grid_size + spline_order
        self._basis_memo: list | None = None  # set by KAN.shared_basis
        self._poly_cache: dict[torch.dtype, tuple[Tensor, Tensor, Tensor]] = {}

        lo_t = torch.full((in_features,), lo, dtype=torch.get_default_dtype())
        hi_t = torch.full((in_features,), hi, dtype=torch.get_default_dtype())
        self.register_buffer("grid", _uniform_grid(lo_t, hi_t, grid_size, spline_order))
        self.register_buffer("mask", torch.ones(out_features, in_features))

        scale = 1.0 / math.sqrt(in_features)
        if base == "zero":
            sb = torch.zeros(out_features, in_features)
        else:
            sb = scale * (2.0 * torch.rand(out_features, in_features) - 1.0)
        self.scale_base = nn.Parameter(sb)
        self.scale_sp = nn.Parameter(torch.full((out_features, in_features), scale))
        self.bias = nn.Parameter(torch.zeros(out_features))

        # Coefficients: least-squares fit to small noise sampled at the grid points.
        pts = self.grid[:, spline_order : spline_order + grid_size + 1].T  # [G+1, in]
        noise = (torch.rand(grid_size + 1, out_features, in_features) - 0.5) * noise_scale / grid_size
        coef = fit_spline_coefficients(pts, noise, self.grid, spline_order, ridge=1e-4)
        self.coef = nn.Parameter(coef.to(torch.get_default_dtype()))

    # ------------------------------------------------------------------ evaluation
    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"grid_size={self.grid_size}, spline_order={self.spline_order}, base={self.base!r}, clamp={self.clamp}"
        )

    def span(self) -> tuple[Tensor, Tensor]:
        """Per-input ``(lo, hi)`` of the grid's interior (the data range plus margin)."""
        k, g = self.spline_order, self.grid
        return g[:, k], g[:, k + self.grid_size]

    def _clamped(self, x: Tensor) -> Tensor:
        if not self.clamp:
            return x
        lo, hi = self.span()
        return torch.minimum(torch.maximum(x, lo.to(x.dtype)), hi.to(x.dtype))

    def _base_fn(self, x: Tensor) -> Tensor:
        if self.base == "identity":
            return x
        if self.base == "silu":
            return F.silu(x)
        return torch.zeros_like(x)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"expected input [B, {self.in_features}], got {tuple(x.shape)}")

    def basis(self, x: Tensor) -> Tensor:
        """B-spline basis ``[B, in, G + k]`` of ``x`` on this layer's grids (dense; for analysis)."""
        return bspline_basis(x, self.grid.to(x.dtype), self.spline_order)

    def _polynomials(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """:func:`interval_polynomials` of this layer's grid in ``dtype``, flattened to
        ``origin [in (M + 1)]`` and ``poly [in, M + 1, k + 1, k + 1]``; rebuilt when the grid changes."""
        cached = self._poly_cache.get(dtype)
        if cached is not None and cached[0].device == self.grid.device and torch.equal(cached[0], self.grid):
            return cached[1], cached[2]
        origin, poly = interval_polynomials(self.grid, self.spline_order)
        found = (self.grid.detach().clone(), origin.to(dtype).reshape(-1), poly.to(dtype))
        self._poly_cache[dtype] = found
        return found[1], found[2]

    def _memo(self, x: Tensor) -> dict | None:
        """The per-input store of :meth:`KAN.shared_basis` for ``x`` (emptied for a new input), or None."""
        memo = self._basis_memo
        if memo is None:
            return None
        # a basis made without gradients must not stand in for one that needs them (hidden layers)
        graph = torch.is_grad_enabled() and x.requires_grad
        if memo:
            seen, seen_graph, grid, found = memo
            if seen_graph == graph and seen.shape == x.shape and seen.dtype == x.dtype \
                    and seen.device == x.device == grid.device == self.grid.device \
                    and torch.equal(grid, self.grid) and torch.equal(seen, x):
                return found
        memo[:] = [x, graph, self.grid.detach().clone(), {}]
        return memo[3]

    def local_basis(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(rows, powers)`` of the (already clamped) input ``x``: ``[B, in]`` and ``[B, in, k + 1]``.

        ``rows`` index the knot interval of each ``x`` in :func:`interval_polynomials` (flattened
        over inputs) and ``powers`` are ``u^0..u^k``, ``u`` the distance of ``x`` from the start of
        that interval.
        """
        memo = self._memo(x)
        if memo is not None and "local" in memo:
            return memo["local"]
        origin, _ = self._polynomials(x.dtype)
        rows = _rows(x, self.grid.to(x.dtype))
        found = (rows, _powers(x - origin[rows], self.spline_order))
        if memo is not None:
            memo["local"] = found
        return found

    def _dense_basis(self, x: Tensor) -> Tensor:
        """``[B, in, G + k]``: the local values (:meth:`local_basis`) placed in the full basis."""
        memo = self._memo(x)
        if memo is not None and "dense" in memo:
            return memo["dense"]
        rows, powers = self.local_basis(x)
        dense = _scatter(rows, _values(rows, powers, self._polynomials(x.dtype)[1]), self.grid.shape[1])
        if memo is not None:
            memo["dense"] = dense
        return dense

    def _spline_sum(self, x: Tensor, coef: Tensor, per_input: bool) -> Tensor:
        """``sum_q coef[o, i, q] B_q(x_i)``, summed over inputs (``[B, out]``) or per input
        (``per_input``: ``[B, out, in]``), from the local basis (docs/model.md §6.3).

        Without gradients (mapping): on its interval the spline part of each edge is one
        polynomial in ``u``; its coefficients ``sum_r poly[i, c, r, d] coef[o, i, c - 1 - k + r]``
        for every interval ``c`` make a table ``[in (M + 1) (k + 1), out]`` that the powers of
        ``u`` weight, one ``embedding_bag``: the full basis is never built. With gradients
        (training, small batches) the local values are scattered into the full basis instead,
        whose backward is one matrix product.
        """
        if torch.is_grad_enabled() and (coef.requires_grad or x.requires_grad):
            eq = "biq,oiq->boi" if per_input else "biq,oiq->bo"
            return torch.einsum(eq, self._dense_basis(x), coef)
        k, n, b = self.spline_order, self.in_features, x.shape[0]
        rows, powers = self.local_basis(x)
        _, poly = self._polynomials(x.dtype)
        # coefficients of B_{c-1-k+r}, r = 0..k, for every row c (k + 1 zeros pad each end)
        windows = F.pad(coef, (k + 1, k + 1)).unfold(-1, k + 1, 1)  # [out, in, M+1, k+1]
        table = torch.einsum("icrd,oicr->icdo", poly, windows).reshape(-1, self.out_features)
        index = rows.unsqueeze(-1) * (k + 1) + torch.arange(k + 1, device=x.device)  # [B, in, k+1]
        if per_input:
            return _weighted_rows(table, index, powers).transpose(1, 2)  # [B, out, in]
        width = n * (k + 1)
        return _weighted_rows(table, index.reshape(b, width), powers.reshape(b, width))

    def edge_values(self, x: Tensor) -> Tensor:
        """Masked edge activations ``mask[j,i] * phi_ji(x_i)`` as ``[B, out, in]``."""
        self._check_input(x)
        x = self._clamped(x)
        dt = x.dtype
        spline = self._spline_sum(x, self.coef.to(dt), per_input=True)
        phi = self.scale_base.to(dt) * self._base_fn(x)[:, None, :] + self.scale_sp.to(dt) * spline
        return self.mask.to(dt) * phi

    def forward(self, x: Tensor) -> Tensor:
        """``u [B, out]``; parameters are cast to ``x.dtype`` (float32 or float64)."""
        self._check_input(x)
        x = self._clamped(x)
        dt = x.dtype
        m = self.mask.to(dt)
        w_base = m * self.scale_base.to(dt)  # [out, in]
        w_sp = (m * self.scale_sp.to(dt))[..., None] * self.coef.to(dt)  # [out, in, nb]
        out = self._spline_sum(x, w_sp, per_input=False) + self.bias.to(dt)
        if self.base != "zero":
            out = out + self._base_fn(x) @ w_base.T
        return out

    # ------------------------------------------------------------------ grid update
    @torch.no_grad()
    def update_grid(
        self,
        x: Tensor,
        margin: float = 0.05,
        ridge: float = 1e-6,
        curvature: float = 0.0,
        n_fill: int | None = None,
    ) -> None:
        """Re-place each input's grid uniformly over the batch range and re-fit coefficients.

        The new span of input ``i`` is ``[min_i - margin R_i, max_i + margin R_i]`` with
        ``R_i = max_i - min_i`` (a degenerate range is widened to ``±0.5``). The spline part of
        every edge is re-fitted by penalised least squares (:func:`fit_spline_coefficients`)
        to its current values on the batch plus ``n_fill`` (default ``4 (G + k)``) uniformly
        spaced points over the new span, so ``phi`` is preserved on the data. The base term
        does not depend on the grid and is untouched.
        """
        self._check_input(x)
        x64 = x.detach().to(torch.float64)
        x64 = torch.where(torch.isfinite(x64), x64, torch.nan)
        if torch.isnan(x64).all(dim=0).any():
            raise ValueError("update_grid: an input column has no finite values")
        xmin = torch.nan_to_num(x64, nan=float("inf")).min(dim=0).values
        xmax = torch.nan_to_num(x64, nan=float("-inf")).max(dim=0).values
        rng = xmax - xmin
        degenerate = rng <= 1e-12
        lo = torch.where(degenerate, xmin - 0.5, xmin - margin * rng)
        hi = torch.where(degenerate, xmax + 0.5, xmax + margin * rng)

        n_fill = 4 * self.n_basis if n_fill is None else int(n_fill)
        t = torch.linspace(0.0, 1.0, max(n_fill, 0), dtype=torch.float64, device=x64.device)
        fill = lo[None, :] + t[:, None] * (hi - lo)[None, :]
        # rows with a NaN input are replaced by the column mean of finite values
        col_mean = torch.nanmean(x64, dim=0)
        x_fit = torch.cat([torch.where(torch.isnan(x64), col_mean, x64), fill], dim=0)

        old_grid = self.grid.to(torch.float64)
        old_coef = self.coef.detach().to(torch.float64)
        # the spline part unclamped: data beyond the old span get the old edge's extension
        y = torch.einsum("biq,oiq->boi", bspline_basis(x_fit, old_grid, self.spline_order), old_coef)

        new_grid = _uniform_grid(lo, hi, self.grid_size, self.spline_order)
        coef = fit_spline_coefficients(x_fit, y, new_grid, self.spline_order, ridge, curvature)
        self.grid.copy_(new_grid.to(self.grid.dtype))
        self.coef.data.copy_(coef.to(self.coef.dtype))

    # ------------------------------------------------------------------ attribution
    def _scores_from(self, phi: Tensor, u: Tensor, eps: float = 1e-12) -> Tensor:
        e = (phi - phi.mean(dim=0, keepdim=True)).abs().mean(dim=0)  # [out, in]
        n = (u - u.mean(dim=0, keepdim=True)).abs().mean(dim=0).detach()  # [out]
        return e / n.mean().clamp_min(eps)

    def edge_scores(self, x: Tensor) -> Tensor:
        """Edge scores ``S [out, in]`` (docs/model.md §6.6; ScIReN's ``--kan_absolute_deviation``).

        ``S_ji = MAD_b(phi_ji(x_i)) / mean_j MAD_b(u_j)`` with ``MAD`` the mean absolute
        deviation over the batch; the denominator is detached, the numerator keeps its
        gradient so the scores can be used as a regulariser.
        """
        phi = self.edge_values(x)
        u = phi.sum(dim=-1) + self.bias.to(x.dtype)
        return self._scores_from(phi, u)

    def edge_importance(self, x: Tensor) -> Tensor:
        """Per-output normalised scores: each row (output) sums to 1 (all-zero rows stay 0)."""
        s = self.edge_scores(x).detach()
        tot = s.sum(dim=1, keepdim=True)
        return torch.where(tot > 0, s / tot.clamp_min(1e-30), torch.zeros_like(s))

    # ------------------------------------------------------------------ regularisers
    @staticmethod
    def _l1(scores: Tensor) -> Tensor:
        return scores.sum()

    @staticmethod
    def _entropy(scores: Tensor) -> Tensor:
        pi = scores / scores.sum().clamp_min(1e-30)
        return -(pi * torch.log2(pi + 1e-4)).sum()

    def reg_l1(self, x: Tensor) -> Tensor:
        """``sum_ji S_ji``."""
        return self._l1(self.edge_scores(x))

    def reg_entropy(self, x: Tensor) -> Tensor:
        """Flat entropy ``-sum pi log2(pi + 1e-4)``, ``pi = S / sum S`` over all edges."""
        return self._entropy(self.edge_scores(x))

    def reg_coef_curvature(self) -> Tensor:
        """``sum (second difference of c along the basis index)^2`` (ScIReN ``kan_coefdiff2``)."""
        c = self.coef
        if c.shape[-1] < 3:
            return c.sum() * 0.0
        d2 = c[..., 2:] - 2.0 * c[..., 1:-1] + c[..., :-2]
        return (d2**2).sum()

    def reg_coef_smooth(self) -> Tensor:
        """``sum (first difference of c along the basis index)^2`` (``kan_coefdiff``)."""
        c = self.coef
        if c.shape[-1] < 2:
            return c.sum() * 0.0
        return ((c[..., 1:] - c[..., :-1]) ** 2).sum()

    def reg_coef_l1(self) -> Tensor:
        """``sum_{i,q} mean_j |c_jiq|`` (``kan_coef``)."""
        return self.coef.abs().mean(dim=0).sum()

    # ------------------------------------------------------------------ pruning
    @torch.no_grad()
    def prune(
        self,
        x: Tensor,
        edge_quantile: float | None = 0.2,
        keep_top_k: int | None = None,
        threshold: float = 1e-2,
    ) -> int:
        """Zero the mask of weak edges; return the number of edges left.

        An edge is removed when its score is below ``threshold``, or when it is not among the
        strongest edges of its output: the top ``keep_top_k`` if given, else the top
        ``ceil(edge_quantile * in_features)`` (at least one; ``edge_quantile=None`` disables
        this rule). Already-masked edges stay masked.
        """
        s = self.edge_scores(x)
        keep = (s >= threshold) & (self.mask > 0)
        k = None
        if keep_top_k is not None:
            k = int(keep_top_k)
        elif edge_quantile is not None:
            if not 0.0 < edge_quantile <= 1.0:
                raise ValueError("edge_quantile must be in (0, 1]")
            k = max(1, math.ceil(edge_quantile * self.in_features - 1e-9))
        if k is not None and k < self.in_features:
            top = torch.zeros_like(keep)
            idx = torch.topk(s, max(k, 0), dim=1).indices
            top.scatter_(1, idx, True)
            keep &= top
        self.mask.copy_(keep.to(self.mask.dtype))
        return int(keep.sum().item())

    # ------------------------------------------------------------------ curves
    @torch.no_grad()
    def edge_curve(self, out_idx: int, in_idx: int, xs) -> np.ndarray:
        """Learned ``mask * phi_{out,in}`` at points ``xs`` in the layer's input units.

        ``xs`` is array-like (any shape); the result has the same shape (float64 numpy).
        """
        if not (0 <= out_idx < self.out_features and 0 <= in_idx < self.in_features):
            raise IndexError(f"edge ({out_idx}, {in_idx}) out of range")
        xs_np = np.asarray(xs, dtype=np.float64)
        dev = self.coef.device
        xt = torch.as_tensor(xs_np.reshape(-1, 1), dtype=torch.float64, device=dev)
        if self.clamp:
            lo, hi = self.span()
            xt = xt.clamp(float(lo[in_idx]), float(hi[in_idx]))
        g = self.grid[in_idx : in_idx + 1].to(torch.float64)
        b = bspline_basis(xt, g, self.spline_order)[:, 0, :]  # [N, nb]
        c = self.coef[out_idx, in_idx].to(torch.float64)
        val = self.scale_sp[out_idx, in_idx].double() * (b @ c)
        val = val + self.scale_base[out_idx, in_idx].double() * self._base_fn(xt[:, 0])
        val = val * self.mask[out_idx, in_idx].double()
        return val.cpu().numpy().reshape(xs_np.shape)


class KAN(nn.Module):
    """Stack of :class:`KANLayer` with widths ``[in, (hidden,) out]``.

    ``[in, out]`` is a generalised additive model (ScIReN 1-layer); ``[in, hidden, out]`` the
    2-layer variant. Deeper stacks work too. The first layer's grid spans ``grid_range``
    (inputs scaled to [0, 1]); hidden layers start on ``hidden_grid_range`` and should be
    placed on their data by :meth:`update_grid`.
    """

    def __init__(
        self,
        widths: Sequence[int],
        grid_size: int = 5,
        spline_order: int = 3,
        base: str = "identity",
        grid_range: tuple[float, float] = (0.0, 1.0),
        hidden_grid_range: tuple[float, float] = (-1.0, 1.0),
        noise_scale: float = 0.1,
        clamp_inputs: bool = True,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2:
            raise ValueError(f"widths needs at least [in, out], got {widths}")
        self.widths = widths
        self.layers = nn.ModuleList(
            KANLayer(
                widths[i],
                widths[i + 1],
                grid_size=grid_size,
                spline_order=spline_order,
                base=base,
                grid_range=grid_range if i == 0 else hidden_grid_range,
                noise_scale=noise_scale,
                clamp=clamp_inputs and i == 0,
            )
            for i in range(len(widths) - 1)
        )

    @property
    def in_features(self) -> int:
        return self.widths[0]

    @property
    def out_features(self) -> int:
        return self.widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def layer_inputs(self, x: Tensor) -> list[Tensor]:
        """The input of every layer (``[x, h1, ...]``), with gradients (the last layer is not run:
        the regularisers call this on every batch, and its output is not an input)."""
        ins = [x]
        for layer in self.layers[:-1]:
            ins.append(layer(ins[-1]))
        return ins

    @contextmanager
    def shared_basis(self) -> Iterator[None]:
        """Evaluate each layer's B-spline basis once per input inside the block.

        A training step runs the network forward and then the score regularisers on the same
        batch, which run every layer again on equal inputs (:meth:`layer_inputs`,
        :meth:`KANLayer.edge_values`). Inside the block a layer whose input equals (``torch.equal``)
        its previous one, on an unchanged grid, reuses that input's basis tensors, so the results
        are the same numbers as without the block. Blocks nest; leaving the outermost one forgets
        the inputs.
        """
        before = [layer._basis_memo for layer in self.layers]
        for layer, memo in zip(self.layers, before):
            if memo is None:
                layer._basis_memo = []
        try:
            yield
        finally:
            for layer, memo in zip(self.layers, before):
                layer._basis_memo = memo

    @torch.no_grad()
    def update_grid(self, x: Tensor, margin: float = 0.05, **kwargs) -> None:
        """Update each layer's grid on its own inputs, propagating ``x`` through the stack."""
        for layer in self.layers:
            layer.update_grid(x, margin=margin, **kwargs)
            x = layer(x)

    def edge_scores(self, x: Tensor) -> list[Tensor]:
        """Per-layer edge scores ``[out_l, in_l]`` (each layer normalised by its own outputs)."""
        return [layer.edge_scores(h) for layer, h in zip(self.layers, self.layer_inputs(x))]

    def edge_importance(self, x: Tensor) -> list[Tensor]:
        """Per-layer, per-output normalised scores (rows sum to 1)."""
        return [layer.edge_importance(h) for layer, h in zip(self.layers, self.layer_inputs(x))]

    @torch.no_grad()
    def adaptive_l1_weights(self, x: Tensor, floor: float = 0.02) -> list[Tensor]:
        """Adaptive-lasso weights ``1 / (importance + floor)`` per layer ``[out_l, in_l]``.

        Weak edges get a heavy penalty and strong ones a light one, so repeated reweighting
        moves a signal shared between correlated covariates onto the edge that carries it
        instead of splitting it (plain L1 is indifferent between the two).
        """
        return [1.0 / (imp + floor) for imp in self.edge_importance(x)]

    def weighted_l1(self, x: Tensor, weights: list[Tensor]) -> Tensor:
        """``sum_l sum_ji w_lji S_lji``: the L1 score penalty with per-edge weights."""
        return sum((w.to(s.dtype) * s).sum() for w, s in zip(weights, self.edge_scores(x)))

    def regularization(
        self,
        x: Tensor,
        l1: float = 0.0,
        entropy: float = 0.0,
        curvature: float = 0.0,
        smooth: float = 0.0,
        coef_l1: float = 0.0,
    ) -> Tensor:
        """Weighted sum over layers of the ScIReN KAN regularisers (docs/model.md §6.6).

        ``l1 * kan_l1 + entropy * kan_entropy + curvature * kan_coefdiff2
        + smooth * kan_coefdiff + coef_l1 * kan_coef``; the score-based terms are only
        evaluated when their weight is non-zero.
        """
        dev, dt = x.device, x.dtype
        total = torch.zeros((), device=dev, dtype=dt)
        if l1 or entropy:
            for s in self.edge_scores(x):
                if l1:
                    total = total + l1 * KANLayer._l1(s)
                if entropy:
                    total = total + entropy * KANLayer._entropy(s)
        for layer in self.layers:
            if curvature:
                total = total + curvature * layer.reg_coef_curvature().to(dt)
            if smooth:
                total = total + smooth * layer.reg_coef_smooth().to(dt)
            if coef_l1:
                total = total + coef_l1 * layer.reg_coef_l1().to(dt)
        return total

    def reg_l1(self, x: Tensor) -> Tensor:
        return sum(KANLayer._l1(s) for s in self.edge_scores(x))

    def reg_entropy(self, x: Tensor) -> Tensor:
        return sum(KANLayer._entropy(s) for s in self.edge_scores(x))

    def reg_coef_curvature(self) -> Tensor:
        return sum(layer.reg_coef_curvature() for layer in self.layers)

    def reg_coef_smooth(self) -> Tensor:
        return sum(layer.reg_coef_smooth() for layer in self.layers)

    @torch.no_grad()
    def prune(
        self,
        x: Tensor,
        edge_quantile: float | None = 0.2,
        keep_top_k: int | None = None,
        threshold: float = 1e-2,
        node_threshold: float | None = 1e-2,
    ) -> list[int]:
        """Prune every layer; return the remaining edge count per layer.

        For stacks with hidden layers, hidden nodes whose strongest incoming *and* outgoing
        scores are both below ``node_threshold`` are removed first (all their edges masked).
        Then :meth:`KANLayer.prune` is applied layer by layer with the current activations.
        """
        if node_threshold is not None and len(self.layers) > 1:
            scores = self.edge_scores(x)
            for li in range(len(self.layers) - 1):
                s_in = scores[li].max(dim=1).values  # hidden node j of layer li's output
                s_out = scores[li + 1].max(dim=0).values
                dead = (s_in < node_threshold) & (s_out < node_threshold)
                if dead.any():
                    self.layers[li].mask[dead, :] = 0.0
                    self.layers[li + 1].mask[:, dead] = 0.0
        remaining = []
        for layer in self.layers:
            remaining.append(layer.prune(x, edge_quantile=edge_quantile, keep_top_k=keep_top_k, threshold=threshold))
            x = layer(x)
        return remaining

    def edge_curve(self, out_idx: int, in_idx: int, xs) -> np.ndarray:
        """``phi_{out,in}`` at ``xs`` (scaled input units); only defined for 1-layer KANs."""
        if len(self.layers) != 1:
            raise ValueError(
                f"edge_curve is only defined for a 1-layer KAN (a GAM); this KAN has "
                f"{len(self.layers)} layers {self.widths}. Use layers[l].edge_curve for the "
                "per-layer functions."
            )
        return self.layers[0].edge_curve(out_idx, in_idx, xs)
