"""MLP encoders: the BINN parameter encoder and a pure-NN SOC baseline (docs/model.md §6.2, §6.7).

``MLPEncoder`` is BINN's ``mlp_wrapper``: ``[Linear -> BatchNorm1d -> LeakyReLU(0.3)
(-> Dropout)] x len(hidden)`` then ``Linear(-> out_features)``, Xavier-uniform weights (gain of
leaky-ReLU(0.3) on hidden layers, ``out_gain`` (default 1 = sigmoid gain) on the output) and
zero biases. The raw output ``z`` goes to a bounding layer (``socmap.nets.bounding``).

Dtype: the module computes in its own parameter dtype (``.double()`` it for float64); the
input is cast to that dtype and the output returned in the input's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LonLatEncoding", "MLPEncoder", "PureNN", "MCDropout"]


class MCDropout(nn.Module):
    """Dropout that stays active in eval mode when ``always_on`` is set (MC-dropout)."""

    def __init__(self, p: float = 0.0, always_on: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.always_on = bool(always_on)

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0:
            return x
        return F.dropout(x, self.p, training=self.training or self.always_on)

    def extra_repr(self) -> str:
        return f"p={self.p}, always_on={self.always_on}"


def _param_dtype(module: nn.Module) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    return torch.get_default_dtype()


class LonLatEncoding(nn.Module):
    """Sinusoidal lon/lat encoding (BINN ``pos_enc early``, docs/model.md §6.2), with sane wavelengths.

    For each coordinate ``c`` (degrees) and wavelength ``lambda_s`` (geometric from
    ``lambda_min`` to ``lambda_max`` degrees) the features are ``sin(2 pi c / lambda_s)`` and
    ``cos(2 pi c / lambda_s)`` (``4 n_freq`` features), followed by ``Linear -> ReLU
    (-> Dropout)``. BINN used ``omega = 1 / lambda`` with ``lambda_min = 1e-6`` degrees, whose
    top frequencies are noise (docs/model.md P12); here ``lambda`` is a true period in degrees and the
    default ``lambda_min = 1`` degree (~100 km). BINN's dropout after the ReLU was 0.5; the
    default here is 0.
    """

    def __init__(
        self,
        n_freq: int = 16,
        lambda_min: float = 1.0,
        lambda_max: float = 360.0,
        out_features: int = 128,
        dropout: float = 0.0,
        mc_dropout: bool = False,
    ) -> None:
        super().__init__()
        if n_freq < 1 or not (0 < lambda_min <= lambda_max):
            raise ValueError("need n_freq >= 1 and 0 < lambda_min <= lambda_max")
        self.n_freq = n_freq
        self.out_features = out_features
        if n_freq == 1:
            lam = torch.tensor([float(lambda_max)])
        else:
            s = torch.arange(n_freq, dtype=torch.float64) / (n_freq - 1)
            lam = lambda_min * (lambda_max / lambda_min) ** s
        self.register_buffer("omega", (2.0 * math.pi / lam).to(torch.get_default_dtype()))
        self.linear = nn.Linear(4 * n_freq, out_features)
        self.dropout = MCDropout(dropout, mc_dropout)
        nn.init.xavier_uniform_(self.linear.weight, gain=nn.init.calculate_gain("relu"))
        nn.init.zeros_(self.linear.bias)

    def features(self, lonlat: Tensor) -> Tensor:
        """Raw sin/cos features ``[B, 4 n_freq]`` of ``lonlat [B, 2]`` (degrees)."""
        if lonlat.dim() != 2 or lonlat.shape[1] != 2:
            raise ValueError(f"lonlat must be [B, 2] (lon, lat in degrees), got {tuple(lonlat.shape)}")
        ang = lonlat[:, :, None] * self.omega.to(lonlat.dtype)  # [B, 2, F]
        return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1).flatten(1)

    def forward(self, lonlat: Tensor) -> Tensor:
        return self.dropout(F.relu(self.linear(self.features(lonlat))))


class _MLPTrunk(nn.Module):
    """Linear -> (BatchNorm1d) -> LeakyReLU -> (Dropout) blocks, then a Linear head."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int],
        dropout: float,
        mc_dropout: bool,
        negative_slope: float,
        batch_norm: bool,
        out_gain: float,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        gain = nn.init.calculate_gain("leaky_relu", negative_slope)
        width = in_features
        for h in hidden:
            lin = nn.Linear(width, int(h))
            nn.init.xavier_uniform_(lin.weight, gain=gain)
            nn.init.zeros_(lin.bias)
            layers.append(lin)
            if batch_norm:
                layers.append(nn.BatchNorm1d(int(h)))
            layers.append(nn.LeakyReLU(negative_slope))
            if dropout > 0:
                layers.append(MCDropout(dropout, mc_dropout))
            width = int(h)
        head = nn.Linear(width, out_features)
        nn.init.xavier_uniform_(head.weight, gain=out_gain)
        nn.init.zeros_(head.bias)
        layers.append(head)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLPEncoder(nn.Module):
    """BINN MLP encoder: covariates (+ optional lon/lat encoding) -> raw parameters ``z``.

    Parameters
    ----------
    in_features : number of covariate columns (lon/lat excluded when ``lonlat=True``).
    out_features : number of predicted parameters.
    hidden : hidden widths (default ``[128, 128]``, BINN ``new_mlp``).
    dropout : dropout after each hidden block (BINN optional 0.3).
    mc_dropout : keep dropout active in eval mode (``sample`` draws MC-dropout passes).
    lonlat : add a :class:`LonLatEncoding`; ``forward`` then needs ``lonlat [B, 2]`` degrees.
    lonlat_kwargs : passed to :class:`LonLatEncoding` (its ``out_features`` default 128).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (128, 128),
        dropout: float = 0.0,
        mc_dropout: bool = False,
        negative_slope: float = 0.3,
        batch_norm: bool = True,
        lonlat: bool = False,
        lonlat_kwargs: dict | None = None,
        out_gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.mc_dropout = bool(mc_dropout)
        self.lonlat_encoding: LonLatEncoding | None = None
        width = self.in_features
        if lonlat:
            kw = dict(lonlat_kwargs or {})
            kw.setdefault("mc_dropout", mc_dropout)
            self.lonlat_encoding = LonLatEncoding(**kw)
            width += self.lonlat_encoding.out_features
        if width < 1:
            raise ValueError("MLPEncoder needs at least one input feature")
        self.trunk = _MLPTrunk(
            width, self.out_features, list(hidden), dropout, mc_dropout, negative_slope, batch_norm, out_gain
        )

    def forward(self, x: Tensor, lonlat: Tensor | None = None) -> Tensor:
        """``z [B, out_features]`` from ``x [B, in_features]`` (and ``lonlat [B, 2]``)."""
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"expected x [B, {self.in_features}], got {tuple(x.shape)}")
        in_dtype = x.dtype
        dt = _param_dtype(self)
        h = x.to(dt)
        if self.lonlat_encoding is not None:
            if lonlat is None:
                raise ValueError("this encoder was built with lonlat=True; pass lonlat [B, 2] in degrees")
            h = torch.cat([h, self.lonlat_encoding(lonlat.to(dt))], dim=1)
        return self.trunk(h).to(in_dtype)

    @torch.no_grad()
    def sample(self, x: Tensor, n: int, lonlat: Tensor | None = None) -> Tensor:
        """``n`` stochastic passes stacked as ``[n, B, out_features]``.

        With ``mc_dropout=True`` the passes differ (dropout active); BatchNorm uses its
        running statistics when the module is in eval mode.
        """
        return torch.stack([self(x, lonlat) for _ in range(int(n))], dim=0)


class PureNN(nn.Module):
    """Process-free baseline: MLP on ``[covariates, depth_m]`` -> one output per (site, depth).

    The output is the *transformed* target chosen by the caller: ``target="log"`` means the
    network predicts standardised log SOC, ``(log SOC - mean) / std``; ``target="standard"``
    standardised SOC, ``(SOC - mean) / std``. :meth:`decode` maps outputs back to SOC using
    the statistics set by :meth:`set_target_stats` (default mean 0, std 1). Train the raw
    output against the equally transformed labels.

    ``depth_m`` is ``[B]`` (one depth per row) or ``[B, D]`` (several depths per site, NaN
    for padding; NaN depths give NaN outputs without touching BatchNorm statistics).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (128, 128),
        dropout: float = 0.0,
        mc_dropout: bool = False,
        negative_slope: float = 0.3,
        batch_norm: bool = True,
        target: str = "log",
    ) -> None:
        super().__init__()
        if target not in ("log", "standard"):
            raise ValueError(f"target must be 'log' or 'standard', got {target!r}")
        self.in_features = int(in_features)
        self.target = target
        self.trunk = _MLPTrunk(
            self.in_features + 1, 1, list(hidden), dropout, mc_dropout, negative_slope, batch_norm, 1.0
        )
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    def set_target_stats(self, mean: float, std: float) -> None:
        if not std > 0:
            raise ValueError("std must be positive")
        self.target_mean.fill_(float(mean))
        self.target_std.fill_(float(std))

    def forward(self, x: Tensor, depth_m: Tensor) -> Tensor:
        """Transformed SOC at each depth: ``[B]`` or ``[B, D]`` like ``depth_m``."""
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"expected x [B, {self.in_features}], got {tuple(x.shape)}")
        in_dtype = x.dtype
        dt = _param_dtype(self)
        squeeze = depth_m.dim() == 1
        d = depth_m[:, None] if squeeze else depth_m
        if d.dim() != 2 or d.shape[0] != x.shape[0]:
            raise ValueError(f"depth_m must be [B] or [B, D] with B={x.shape[0]}, got {tuple(depth_m.shape)}")
        d = d.to(dt)
        valid = torch.isfinite(d)
        B, D = d.shape
        rows = torch.cat([x.to(dt)[:, None, :].expand(B, D, self.in_features), d[..., None]], dim=-1)
        flat_valid = valid.reshape(-1)
        out = torch.full((B * D,), float("nan"), dtype=dt, device=d.device)
        if flat_valid.any():
            y = self.trunk(rows.reshape(B * D, -1)[flat_valid])[:, 0]
            out = out.index_put((flat_valid.nonzero()[:, 0],), y)
        out = out.reshape(B, D)
        return (out[:, 0] if squeeze else out).to(in_dtype)

    def decode(self, y: Tensor) -> Tensor:
        """Map network outputs back to SOC (same units as the labels used for the stats)."""
        v = y * self.target_std.to(y.dtype) + self.target_mean.to(y.dtype)
        return torch.exp(v) if self.target == "log" else v
