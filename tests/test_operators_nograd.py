"""The month-by-month environment means (and their hand-written gradient) equal plain autograd."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _forcing import benchmark_inputs  # noqa: E402

from socmap.clm5.operators import environment_means, prepare_forcing  # noqa: E402
from socmap.clm5.parameters import INDEX  # noqa: E402


def _reference(theta: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor]:
    """docs/model.md §2.3 term by term, with autograd through every [12, 20, B] operation."""
    log_q10 = torch.log(theta[:, INDEX["q10"]])
    tw = torch.exp(log_q10 * prepared.temp_exponent) * torch.clamp(theta[:, INDEX["w_scaling"]] * prepared.water, max=1.0)
    return (tw * prepared.oxygen).mean(0), (tw * prepared.oxygen_nitrogen).mean(0)


@pytest.mark.parametrize("n", [40, 300])  # whole-year ops (small batch) and the month-by-month loop
def test_environment_means_and_gradients_match_plain_autograd(n: int) -> None:
    theta, forcing = benchmark_inputs(n, seed=3)
    clipped = n // 3
    theta[:clipped, INDEX["w_scaling"]] = 3.0  # w_scaling·W clipped at 1 in part of the months
    prepared = prepare_forcing(forcing)
    weights = torch.rand(2, 20, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads, values = [], []
    for fn in (environment_means, _reference):
        th = theta.clone().requires_grad_(True)
        env, env_n = fn(th, prepared)
        assert env.requires_grad and env_n.requires_grad
        (env * weights[0] + env_n * weights[1]).sum().backward()
        grads.append(th.grad)
        values.append((env.detach(), env_n.detach()))
    for a, b in zip(*values):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0.0)
    assert float(grads[1][:clipped, INDEX["w_scaling"]].abs().max()) < float(grads[1][clipped:, INDEX["w_scaling"]].abs().max())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-300)
    with torch.no_grad():
        without = environment_means(theta, prepared)
    for a, b in zip(values[0], without):
        assert not b.requires_grad
        torch.testing.assert_close(a, b, rtol=0.0, atol=0.0)
    # the prepared forcing is not modified
    again = prepare_forcing(forcing)
    assert torch.equal(again.temp_exponent, prepared.temp_exponent) and torch.equal(again.water, prepared.water)


@pytest.mark.parametrize("n", [50, 400])
def test_environment_means_one_output_used(n: int) -> None:
    """A loss on one of the two means only (the other's gradient is None in the backward)."""
    theta, forcing = benchmark_inputs(n, seed=4)
    prepared = prepare_forcing(forcing)
    grads = []
    for fn in (environment_means, _reference):
        th = theta.clone().requires_grad_(True)
        fn(th, prepared)[1].sum().backward()
        grads.append(th.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-300)
