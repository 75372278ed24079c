"""The hybrid model: covariates -> encoder -> bounded parameters -> CLM5 -> SOC at depths.

Covariates enter in physical units and are min–max scaled with a range fixed at construction
(the covariate range over the land grid), so curves and checkpoints are in physical units.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from socmap.clm5 import interpolate_to_depths, soc_nodes, steady_state
from socmap.clm5.grid import grid_tensor
from socmap.clm5.operators import PreparedForcing
from socmap.clm5.parameters import INDEX, N_PARAMS, resolve_subset, to_physical

from .bounding import expand_parameters, make_bound
from .kan import KAN
from . import make_encoder


@dataclass
class HybridSpec:
    """Everything needed to rebuild a :class:`HybridModel` (saved with its weights)."""

    encoder: str
    covariate_names: list[str]
    covariate_lo: list[float]
    covariate_hi: list[float]
    params: list[str]
    fixed_p: list[float] = field(default_factory=lambda: [0.5] * N_PARAMS)
    bound: str = "hardsigmoid"
    encoder_kwargs: dict = field(default_factory=dict)
    anoxia: str = "none"  # "none" | "learned": :class:`WetlandAnoxia` at wetland sites (docs/model.md §5.10)
    wetland_saturated: bool = False  # wetland sites get the water scalar of saturated soil, 1 (§5.10)

    def to_dict(self) -> dict:
        return asdict(self)


class CovariateScaler(nn.Module):
    """Min–max scaling of covariates to [0, 1] with a fixed range; ``inverse`` maps back."""

    def __init__(self, lo: list[float], hi: list[float]) -> None:
        super().__init__()
        lo_t = torch.as_tensor(lo, dtype=torch.float32)
        span = torch.as_tensor(hi, dtype=torch.float32) - lo_t
        if bool((span <= 0).any()):
            raise ValueError("every covariate needs hi > lo for scaling; a covariate is constant")
        self.register_buffer("lo", lo_t)
        self.register_buffer("span", span)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.lo) / self.span

    def inverse(self, s: torch.Tensor) -> torch.Tensor:
        return s * self.span + self.lo


class WetlandAnoxia(nn.Module):
    """The learned oxygen scalar of waterlogged soil at wetland sites (docs/model.md §5.10).

    ``o[b, j] = 1 − w_b (1 − o_min) s_j`` with ``s_j = σ((z_j − z_wt) / 0.05 m)`` a smooth step
    at the water-table depth ``z_wt`` over the layer nodes ``z_j``, and ``w_b`` the site's
    wetland flag (0 upland, 1 wetland; a fraction is allowed). Two learned numbers, shared by all
    wetland sites: ``o_min`` ∈ [0.01, 1], the decomposition rate below the water table as a
    fraction of the aerated rate (starts at CLM's ``mino2lim`` 0.2), and ``z_wt`` ∈ [0, 1] m
    (starts at 0.1 m, the forcing's wetland water table). At ``w_b = 0`` every factor is exactly 1.
    """

    O_MIN_LO = 0.01
    WT_MAX_M = 1.0
    WT_WIDTH_M = 0.05

    def __init__(self, o_min: float = 0.2, water_table_m: float = 0.1) -> None:
        super().__init__()
        # float32 like the encoder's weights (one dtype for the L-BFGS polish); evaluated in float64
        self.o_raw = nn.Parameter(torch.logit(torch.tensor((o_min - self.O_MIN_LO) / (1 - self.O_MIN_LO))))
        self.wt_raw = nn.Parameter(torch.logit(torch.tensor(water_table_m / self.WT_MAX_M)))

    @property
    def o_min(self) -> torch.Tensor:
        return self.O_MIN_LO + (1.0 - self.O_MIN_LO) * torch.sigmoid(self.o_raw.to(torch.float64))

    @property
    def water_table_m(self) -> torch.Tensor:
        return self.WT_MAX_M * torch.sigmoid(self.wt_raw.to(torch.float64))

    def forward(self, wetland: torch.Tensor) -> torch.Tensor:
        """Oxygen scalar [B, 20] (float64) of sites with wetland flag ``wetland`` [B]."""
        z = grid_tensor("NODE_M", self.o_min)  # layer node depths (m)
        step = torch.sigmoid((z - self.water_table_m) / self.WT_WIDTH_M)  # [20]
        return 1.0 - wetland.to(torch.float64)[:, None] * ((1.0 - self.o_min) * step)[None, :]

    def summary(self) -> dict[str, float]:
        """The learned values: ``o_min`` (fraction) and ``water_table_m`` (m)."""
        return {"o_min": float(self.o_min.detach()), "water_table_m": float(self.water_table_m.detach())}


class HybridModel(nn.Module):
    """Encoder + bounding layer producing all 21 normalised parameters per site.

    Parameters not in ``spec.params`` stay at ``spec.fixed_p`` (ScIReN's retrieval setting).
    """

    def __init__(self, spec: HybridSpec) -> None:
        super().__init__()
        names = resolve_subset(spec.params)
        self.spec = spec
        self.param_names = list(names)
        self.param_index = [INDEX[n] for n in names]
        self.scaler = CovariateScaler(spec.covariate_lo, spec.covariate_hi)
        self.encoder = make_encoder(spec.encoder, len(spec.covariate_names), len(names), **spec.encoder_kwargs)
        self.bound = make_bound(spec.bound)
        self.register_buffer("fixed_p", torch.as_tensor(spec.fixed_p, dtype=torch.float32))
        # range of the learned parameters over the training sites (docs/model.md §6.5); [0, 1] until set
        self.register_buffer("p_lo", torch.zeros(len(names)))
        self.register_buffer("p_hi", torch.ones(len(names)))
        self.solver_method = "structured"  # "dense" only for benchmarks and cross-checks
        if spec.anoxia not in ("none", "learned"):
            raise ValueError(f"HybridSpec.anoxia must be 'none' or 'learned', not {spec.anoxia!r}")
        self.anoxia = WetlandAnoxia() if spec.anoxia == "learned" else None

    @property
    def is_kan(self) -> bool:
        return isinstance(self.encoder, KAN)

    def encode(self, covariates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Physical covariates [B, C] -> (p_full [B, 21], p_sub [B, k], u [B, k] pre-bound)."""
        z = self.encoder(self.scaler(covariates))
        p_sub, u = self.bound(z)
        p_sub = torch.minimum(torch.maximum(p_sub, self.p_lo.to(p_sub.dtype)), self.p_hi.to(p_sub.dtype))
        return expand_parameters(p_sub, self.param_index, self.fixed_p.to(p_sub.dtype)), p_sub, u

    def forward(self, covariates: torch.Tensor) -> torch.Tensor:
        return self.encode(covariates)[0]

    def o_scalar(self, wetland: torch.Tensor | None) -> torch.Tensor | None:
        """The oxygen scalar [B, 20] of sites with wetland flags ``wetland`` [B], or None (no anoxia)."""
        if self.anoxia is None or wetland is None:
            return None
        return self.anoxia(wetland)

    def column_forcing(self, prepared: PreparedForcing, wetland: torch.Tensor | None) -> PreparedForcing:
        """``prepared`` as the model sees it at sites with wetland flags ``wetland`` [B] (0–1).

        - With ``spec.wetland_saturated`` the water scalar of a wetland site is that of saturated
          soil, W + w (1 − W) (1 at w = 1: wet soil is not water-limited in CLM; the excess water
          acts through the anoxia).
        - With the learned anoxia, a wetland site's forcing oxygen scalar O is reset towards 1,
          O + w (1 − O), and O·N becomes N times that: the learned scalar *replaces* the forcing's
          fixed anoxia (CLM's ``mino2lim`` below 0.1 m on IGBP-11 cells, docs/model.md §5.8)
          instead of multiplying on top of it (§5.10). N is recovered as O·N / O (O > 0; where
          the forcing's O is 0, N is unknown and taken as 1).

        Upland sites (w = 0) keep every field bit for bit; with neither option, or no wetland site,
        the same object is returned.
        """
        saturate, reset_oxygen = self.spec.wetland_saturated, self.anoxia is not None
        if not (saturate or reset_oxygen) or wetland is None or not bool((wetland > 0).any()):
            return prepared
        w = wetland.to(prepared.water.dtype).to(prepared.water.device)  # sites innermost: broadcasts on [12, 20, B]
        changes: dict[str, torch.Tensor] = {}
        if saturate:
            changes["water"] = prepared.water + w * (1.0 - prepared.water)
        if reset_oxygen:
            o = prepared.oxygen
            oxygen = o + w * (1.0 - o)
            nitrogen = torch.where(o > 0, prepared.oxygen_nitrogen / torch.where(o > 0, o, 1.0), 1.0)
            # upland sites (w = 0) keep their O·N exactly (no round trip through the division)
            changes["oxygen"] = oxygen
            changes["oxygen_nitrogen"] = torch.where(w > 0, oxygen * nitrogen, prepared.oxygen_nitrogen)
        return dataclasses.replace(prepared, **changes)

    def simulate(
        self, covariates: torch.Tensor, prepared: PreparedForcing, depth_m: torch.Tensor,
        wetland: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SOC (g C m-3, float64) at ``depth_m`` [B, L], plus p_sub and u for the penalties.

        ``wetland`` [B] (0/1) is the sites' wetland flag, used by the learned anoxia (if any).
        """
        p_full, p_sub, u = self.encode(covariates)
        return self.solve_soc(p_full, prepared, depth_m, wetland, self.o_scalar(wetland)), p_sub, u

    def solve_soc(self, p_full: torch.Tensor, prepared: PreparedForcing, depth_m: torch.Tensor,
                  wetland: torch.Tensor | None, o_scalar: torch.Tensor | None) -> torch.Tensor:
        """SOC (g C m-3, float64) at ``depth_m`` [B, L] from the normalised parameters ``p_full``
        [B, 21]: the steady state of the sites' columns and the observation operator of
        :meth:`simulate`. ``o_scalar`` [B, 20] (or None) is the learned anoxia's oxygen scalar;
        fold batching (socmap/fold_batch.py) passes several folds' sites and scalars at once."""
        theta = to_physical(p_full.to(torch.float64))
        pools = steady_state(theta, self.column_forcing(prepared, wetland), method=self.solver_method, check=False,
                             o_scalar=o_scalar)
        return interpolate_to_depths(soc_nodes(pools), depth_m)

    @torch.no_grad()
    def hold_output_range(self, covariates: torch.Tensor) -> tuple[list[float], list[float]]:
        """Hold the learned parameters, wherever the model is applied, inside the range they span
        at ``covariates`` (the training sites, physical units [N, C]); returns ``(lo, hi)`` [k].

        The KAN holds each edge constant beyond the training range (§6.4), but a sum of edges can
        still leave it where covariates combine in a way no training site did, and push a parameter
        onto a bound where the steady state explodes (``w_scaling`` → 1e-4: decomposition 10⁴
        times slower). A parameter never seen in training is never used to predict.
        """
        self.p_lo.fill_(0.0)
        self.p_hi.fill_(1.0)
        _, p_sub, _ = self.encode(covariates)
        self.p_lo.copy_(p_sub.min(0).values.to(self.p_lo.dtype))
        self.p_hi.copy_(p_sub.max(0).values.to(self.p_hi.dtype))
        return self.p_lo.tolist(), self.p_hi.tolist()

    def pdp_slope_to_p(self) -> float:
        """d p / d z of the bounding layer in its linear range (1/6 for the hard-sigmoid, T = 1)."""
        temperature = float(getattr(self.bound, "temperature", 1.0))
        return 1.0 / (6.0 * temperature)

    def to_checkpoint(self) -> dict:
        return {"spec": self.spec.to_dict(), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "HybridModel":
        model = cls(HybridSpec(**ckpt["spec"]))
        state = dict(ckpt["state_dict"])
        for key in ("p_lo", "p_hi"):  # models saved before the output range was held: [0, 1]
            state.setdefault(key, getattr(model, key))
        model.load_state_dict(state)
        return model

