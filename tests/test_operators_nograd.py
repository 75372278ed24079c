"""The no-grad (in-place) environment means equal the autograd path exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _forcing import benchmark_inputs  # noqa: E402

from socmap.clm5.operators import environment_means, prepare_forcing  # noqa: E402


def test_nograd_environment_means_match_autograd_path() -> None:
    theta, forcing = benchmark_inputs(300, seed=3)
    prepared = prepare_forcing(forcing)
    with_grad = environment_means(theta.clone().requires_grad_(True), prepared)
    with torch.no_grad():
        without = environment_means(theta, prepared)
    for a, b in zip(with_grad, without):
        assert a.requires_grad and not b.requires_grad
        torch.testing.assert_close(a.detach(), b, rtol=1e-15, atol=0.0)
    # the prepared forcing is not modified by the in-place path
    again = prepare_forcing(forcing)
    assert torch.equal(again.temp_exponent, prepared.temp_exponent) and torch.equal(again.water, prepared.water)
