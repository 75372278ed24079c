"""Bounding layers: raw encoder outputs ``z [B, P]`` -> normalised parameters ``p`` in [0, 1].

See docs/model.md §6.5. Both layers return ``(p, u)`` where ``u`` is the pre-activation, so the training
loop can add the penalties of docs/model.md §7.2:

* :class:`HardSigmoidBound` (ScIReN): ``u = z / T + b``, ``p = clamp(u / 6 + 1/2, 0, 1)``,
  linear for ``|u| <= 3`` and without gradient outside, hence the violation penalty
  ``sum max(|u| - 3, 0)`` (docs/model.md P8: a *sum* over batch and parameters, so its scale grows
  with the batch size).
* :class:`ScaledSigmoidBound` (BINN): ``p = sigmoid(z / T)``, ``T = T_min + (T_max - T_min)
  sigmoid(t)`` with one learnable scalar ``t`` (init 0, so ``T = 59.5`` by default).

``param_reg(p) = mean(cosh(10 (p - 1/2)) - 1)`` pulls ``p`` towards 1/2 (BINN, λ = 100).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "HardSigmoidBound",
    "ScaledSigmoidBound",
    "make_bound",
    "param_reg",
    "param_violation",
    "expand_parameters",
    "BOUND_NAMES",
]

BOUND_NAMES = ("hardsigmoid", "sigmoid")


def param_reg(p: Tensor) -> Tensor:
    """``mean(cosh(10 (p - 0.5)) - 1)``: zero at ``p = 0.5``, ≈ 73 at ``p`` in {0, 1}."""
    return (torch.cosh(10.0 * (p - 0.5)) - 1.0).mean()


def param_violation(u: Tensor, limit: float = 3.0) -> Tensor:
    """``sum max(|u| - limit, 0)`` over all entries (batch and parameters)."""
    return torch.relu(u.abs() - limit).sum()


class HardSigmoidBound(nn.Module):
    """ScIReN hard-sigmoid constraint layer.

    Parameters
    ----------
    n_params : number of parameters ``P`` (needed for a learnable or random final bias).
    temperature : ``T`` (ScIReN scripts: 1).
    final_bias : ``"zero"`` (fixed 0, default), ``"learnable"`` (learnable, init 0) or a
        float ``a > 0`` for a learnable bias initialised ``U(-a, a)`` (ScIReN's [-1,1]/[-2,2]).
    """

    def __init__(
        self,
        n_params: int | None = None,
        temperature: float = 1.0,
        final_bias: str | float = "zero",
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError("temperature must be positive")
        self.temperature = float(temperature)
        if final_bias == "zero":
            self.bias = None
        else:
            if n_params is None:
                raise ValueError("a learnable final_bias needs n_params")
            if final_bias == "learnable":
                init = torch.zeros(n_params)
            elif isinstance(final_bias, (int, float)) and final_bias > 0:
                init = (2.0 * torch.rand(n_params) - 1.0) * float(final_bias)
            else:
                raise ValueError(f"final_bias must be 'zero', 'learnable' or a positive float, got {final_bias!r}")
            self.bias = nn.Parameter(init)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        u = z / self.temperature
        if self.bias is not None:
            u = u + self.bias.to(z.dtype)
        p = torch.clamp(u / 6.0 + 0.5, 0.0, 1.0)
        return p, u

    @staticmethod
    def violation(u: Tensor) -> Tensor:
        """``sum max(|u| - 3, 0)`` over batch and parameters (docs/model.md P8)."""
        return param_violation(u, 3.0)

    @staticmethod
    def param_reg(p: Tensor) -> Tensor:
        return param_reg(p)


class ScaledSigmoidBound(nn.Module):
    """BINN sigmoid with a learnable temperature: ``p = sigmoid(z / T)``.

    ``T = t_min + (t_max - t_min) sigmoid(t)``, ``t`` a learnable scalar initialised to 0.
    ``t_min = t_max = 1`` gives the plain sigmoid of ScIReN's Blackbox-Hybrid.
    """

    def __init__(self, t_min: float = 10.0, t_max: float = 109.0) -> None:
        super().__init__()
        if not (0 < t_min <= t_max):
            raise ValueError("need 0 < t_min <= t_max")
        self.t_min = float(t_min)
        self.t_max = float(t_max)
        self.t = nn.Parameter(torch.zeros(()))

    @property
    def temperature(self) -> Tensor:
        return self.t_min + (self.t_max - self.t_min) * torch.sigmoid(self.t)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        u = z / self.temperature.to(z.dtype)
        return torch.sigmoid(u), u

    @staticmethod
    def violation(u: Tensor) -> Tensor:
        """No hard bounds to violate: always 0 (kept for a uniform interface)."""
        return u.sum() * 0.0

    @staticmethod
    def param_reg(p: Tensor) -> Tensor:
        return param_reg(p)


def make_bound(name: str, **kwargs) -> nn.Module:
    """``"hardsigmoid"`` -> :class:`HardSigmoidBound`, ``"sigmoid"`` -> :class:`ScaledSigmoidBound`."""
    key = name.lower().replace("-", "").replace("_", "") if isinstance(name, str) else name
    if key == "hardsigmoid":
        return HardSigmoidBound(**kwargs)
    if key == "sigmoid":
        return ScaledSigmoidBound(**kwargs)
    raise ValueError(f"unknown bound {name!r}; choose one of {BOUND_NAMES}")


def expand_parameters(p_sub: Tensor, indices: Sequence[int], fixed_p: Tensor) -> Tensor:
    """Scatter the predicted subset into a full normalised parameter vector.

    Parameters
    ----------
    p_sub : ``[B, k]`` predicted normalised parameters.
    indices : the ``k`` distinct columns (of the full vector) they fill, in order.
    fixed_p : ``[n]`` (same for every row) or ``[B, n]`` (per site, e.g. PRODA values)
        normalised values of the other parameters (``n = 21`` for CLM5).

    Returns
    -------
    ``[B, n]`` in ``p_sub``'s dtype/device. Differentiable: gradients reach ``p_sub`` through the
    predicted columns only; ``fixed_p`` (if it requires grad) gets gradients only on the others.
    """
    if p_sub.dim() != 2:
        raise ValueError(f"p_sub must be [B, k], got {tuple(p_sub.shape)}")
    idx = [int(i) for i in indices]
    B, k = p_sub.shape
    if len(idx) != k:
        raise ValueError(f"{len(idx)} indices for {k} predicted columns")
    if len(set(idx)) != len(idx):
        raise ValueError(f"indices must be distinct, got {idx}")
    n = fixed_p.shape[-1]
    if any(i < 0 or i >= n for i in idx):
        raise ValueError(f"indices {idx} out of range for {n} parameters")
    fixed = fixed_p.to(dtype=p_sub.dtype, device=p_sub.device)
    if fixed.dim() == 1:
        fixed = fixed.expand(B, n)
    elif fixed.dim() != 2 or fixed.shape[0] != B:
        raise ValueError(f"fixed_p must be [n] or [B, n] with B={B}, got {tuple(fixed_p.shape)}")
    index = torch.as_tensor(idx, dtype=torch.long, device=p_sub.device)
    return fixed.index_copy(1, index, p_sub)
