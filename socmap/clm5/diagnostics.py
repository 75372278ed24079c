"""Bulk-process diagnostics of a steady state (docs/model.md §2.11): the map layers that explain SOC.

All functions take physical θ [B, 21], the prepared forcing and the pools [B, 7, 20] and
return [B] tensors (per-layer residence time: [B, 20]).

On float64 CPU tensors without gradients (``COMPILED_DIAGNOSTICS``) everything runs in one compiled
pass per range of sites (:mod:`socmap.clm5.diagnostic_kernels`, with its own vectorised exp and
log); elsewhere (CUDA, autograd, other dtypes) the torch ops of :func:`_torch_diagnostics`.
"""

from __future__ import annotations

import torch

from socmap.clm5 import grid
from socmap.clm5.operators import DAYS_PER_YEAR, POOL_TAU, Operators, PreparedForcing, _col, build_operators

#: name -> (units, long name); the order used on maps.
DIAGNOSTICS: dict[str, tuple[str, str]] = {
    "carbon_input": ("g C m-2 yr-1", "litter and CWD carbon input"),
    "cue": ("1", "flux-weighted carbon use efficiency (A)"),
    "baseline_decomposition": ("yr-1", "stock-weighted baseline decomposition rate (K)"),
    "environmental_modifier": ("1", "SOC-weighted environmental modifier of decomposition (xi)"),
    "vertical_transport": ("yr-1", "SOC-weighted vertical transport rate (V)"),
    "input_allocation": ("1", "bulk input allocation (Jackson beta equivalent, I)"),
    "residence_time": ("yr", "SOC residence time to 8.6 m (stock / input)"),
}


def bulk_diagnostics(theta: torch.Tensor, prepared: PreparedForcing, pools: torch.Tensor,
                     ops: Operators | None = None) -> dict[str, torch.Tensor]:
    """The bulk-process diagnostics of docs/model.md §2.11 for each site, each [B]; plus ``residence_time_per_layer`` [B, 20] (yr m-1).

    ``ops``: the operators of ``theta`` and ``prepared`` when the caller already has them
    (:func:`~socmap.clm5.solver.steady_state` with ``return_operators``); built here otherwise.
    """
    theta = theta.to(torch.float64)
    if ops is None:
        ops = build_operators(theta, prepared)
    if COMPILED_DIAGNOSTICS and _compiled_applies(theta, prepared, pools, ops):
        return _compiled_diagnostics(theta, prepared, pools, ops)
    return _torch_diagnostics(theta, prepared, pools, ops)


#: Use the compiled pass on float64 CPU tensors without gradients; False keeps the torch ops of
#: :func:`_torch_diagnostics` everywhere (the reference in the tests; CUDA always takes them).
COMPILED_DIAGNOSTICS = True


def _compiled_applies(theta: torch.Tensor, prepared: PreparedForcing, pools: torch.Tensor, ops: Operators) -> bool:
    """Whether every tensor the compiled pass reads is float64 on the CPU and none wants a gradient."""
    tensors = [theta, pools, prepared.temp_exponent, prepared.water, prepared.inputs_g_m2_day, ops.transport,
               ops.input_profile, *ops.fractions.values()]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return all(t.device.type == "cpu" and t.dtype == torch.float64 for t in tensors)


def _compiled_diagnostics(theta: torch.Tensor, prepared: PreparedForcing, pools: torch.Tensor,
                          ops: Operators) -> dict[str, torch.Tensor]:
    """:func:`_torch_diagnostics`' values from :func:`socmap.clm5.diagnostic_kernels.bulk_sums`
    (equal to rounding, ≤ 1e-12 relative), all in the kernel."""
    from socmap.clm5 import diagnostic_kernels as dk

    theta = theta.contiguous()
    node = grid.grid_tensor("NODE_M", theta)
    sums = dk.bulk_sums(prepared.temp_exponent, torch.log(_col(theta, "q10")), prepared.water, theta, node,
                        pools.movedim(0, -1), grid.grid_tensor("DZ_M", theta), ops.fractions, prepared.inputs_g_m2_day,
                        ops.transport[1], ops.input_profile)
    if sums is None:  # an exponent beyond the kernel's exponential (or NaN): the torch ops decide
        return _torch_diagnostics(theta, prepared, pools, ops)
    out, soc_layer = sums
    return {
        "carbon_input": out[dk.CARBON_INPUT],
        "cue": out[dk.CUE],
        "baseline_decomposition": out[dk.BASELINE],
        "environmental_modifier": out[dk.ENV_MODIFIER],
        "vertical_transport": out[dk.VERTICAL],
        "input_allocation": out[dk.ALLOCATION],
        "residence_time": out[dk.RESIDENCE],
        "residence_time_per_layer": soc_layer.movedim(-1, 0),
    }


def _torch_diagnostics(theta: torch.Tensor, prepared: PreparedForcing, pools: torch.Tensor,
                       ops: Operators) -> dict[str, torch.Tensor]:
    """:func:`bulk_diagnostics` in torch ops (any device and dtype, differentiable)."""
    x = pools.movedim(0, -1)  # [7, 20, B]
    dz = grid.grid_tensor("DZ_M", theta)[:, None]
    node = grid.grid_tensor("NODE_M", theta)[:, None]
    soc = x[4:7].sum(0)  # [20, B]
    soc_dz = soc * dz
    soc_total = soc_dz.sum(0)

    carbon_input = prepared.inputs_g_m2_day.sum(0) * DAYS_PER_YEAR
    tau = torch.stack([_col(theta, n) for n in POOL_TAU])  # [7, B] yr
    stock_k = (x * dz).sum(1)  # [7, B] g m-2
    baseline_k = ((stock_k / tau).sum(0)) / stock_k.sum(0)

    # in place on one [12, 20, B] temporary each (these fields make the diagnostics memory-bound)
    xi_t = torch.mul(prepared.temp_exponent, torch.log(_col(theta, "q10"))).exp_().mean(0)
    xi_w = torch.mul(prepared.water, _col(theta, "w_scaling")).clamp_(max=1.0).mean(0)
    xi_hat = xi_t * xi_w * torch.exp(-node / _col(theta, "efolding"))  # [20, B]
    env_modifier = (xi_hat * soc_dz).sum(0) / soc_total

    flux = (x[1:7] / tau[1:7, None, :] * xi_hat * dz).sum(1)  # [6, B] donors L1, L2, L3, S1, S2, S3
    f = ops.fractions
    passed = (
        f["fl1s1"] * flux[0] + f["fl2s1"] * flux[1] + f["fl3s2"] * flux[2]
        + (f["fs1s2"] + f["fs1s3"]) * flux[3] + (f["fs2s1"] + f["fs2s3"]) * flux[4] + f["fs3s1"] * flux[5]
    )
    cue = passed / flux.sum(0)

    v_diag = ops.transport[1]  # [20, B] d-1
    vertical = (DAYS_PER_YEAR * v_diag * soc_dz).sum(0) / soc_total

    cum = torch.cumsum(ops.input_profile, 0)
    exponent = 1.0 / (100.0 * node)
    use = cum < 1.0 - 1e-12
    terms = torch.where(use, torch.clamp(1.0 - cum, min=1e-300) ** exponent, torch.zeros_like(cum))
    allocation = terms.sum(0) / use.sum(0).clamp(min=1)

    return {
        "carbon_input": carbon_input,
        "cue": cue,
        "baseline_decomposition": baseline_k,
        "environmental_modifier": env_modifier,
        "vertical_transport": vertical,
        "input_allocation": allocation,
        "residence_time": soc_total / carbon_input,
        "residence_time_per_layer": (soc / carbon_input).movedim(-1, 0),
    }
