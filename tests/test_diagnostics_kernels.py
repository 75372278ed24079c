"""The compiled bulk diagnostics (socmap.clm5.diagnostic_kernels) against the torch ops they replace."""

import numpy as np
import pytest
import torch

from conftest import make_forcing, random_theta
from socmap.clm5 import diagnostic_kernels as dk
from socmap.clm5 import diagnostics as D
from socmap.clm5 import operators as O
from socmap.clm5 import prepare_forcing, steady_state
from socmap.clm5.parameters import INDEX


def both(theta, prepared, pools, ops, monkeypatch):
    """(compiled, torch) diagnostics of the same inputs."""
    out = []
    for compiled in (True, False):
        monkeypatch.setattr(D, "COMPILED_DIAGNOSTICS", compiled)
        out.append(D.bulk_diagnostics(theta, prepared, pools, ops))
    monkeypatch.setattr(D, "COMPILED_DIAGNOSTICS", True)
    return out


def assert_same(compiled, reference):
    assert set(compiled) == set(reference)
    for name in reference:
        a, b = compiled[name], reference[name]
        assert a.shape == b.shape and a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0.0, equal_nan=True, msg=name)


# 5 sites: one short range; 300: several kernel blocks; 4,500: split over two threads
@pytest.mark.parametrize("n", [5, 300, 4500])
def test_compiled_diagnostics_equal_the_torch_ops_at_real_steady_states(n, monkeypatch):
    theta = random_theta(n, n + 1)  # uniform over every parameter's bounds
    prepared = prepare_forcing(make_forcing(n, n))
    pools, ops = steady_state(theta, prepared, return_operators=True, check=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        compiled, reference = both(theta, prepared, pools, ops, monkeypatch)
    finally:
        torch.set_num_threads(threads)
    assert bool(torch.isfinite(reference["cue"]).all())
    assert_same(compiled, reference)
    # without ``ops`` the operators are built inside, the same way
    assert_same(D.bulk_diagnostics(theta, prepared, pools), reference)


def test_frozen_sites_put_all_input_in_the_top_layer_and_allocate_nothing(monkeypatch):
    """thawed False: the input profile is top-only, its cumulative fraction is 1 from layer 0 on,
    no layer counts and the allocation index is exactly 0 (as the reference's mask gives)."""
    n = 64
    theta = random_theta(n, 3)
    prepared = prepare_forcing(make_forcing(n, 4, frozen_fraction=0.8))
    frozen = ~prepared.thawed
    assert 0 < int(frozen.sum()) < n
    pools, ops = steady_state(theta, prepared, return_operators=True, check=False)
    assert bool((ops.input_profile[0, frozen] == 1.0).all())
    compiled, reference = both(theta, prepared, pools, ops, monkeypatch)
    assert_same(compiled, reference)
    assert bool((compiled["input_allocation"][frozen] == 0.0).all())
    assert bool((compiled["input_allocation"][~frozen] > 0.0).all())


def test_clipped_water_scalar_matches(monkeypatch):
    """w_scaling·W clipped at 1 in some months and layers, not all (ξ^W's min in the kernel)."""
    n = 200
    theta = random_theta(n, 5)
    theta[:, INDEX["w_scaling"]] = torch.linspace(0.5, 6.0, n, dtype=torch.float64)
    prepared = prepare_forcing(make_forcing(n, 6))
    clipped = prepared.water * theta[:, INDEX["w_scaling"]] > 1.0
    assert bool(clipped.any()) and not bool(clipped.all())
    pools, ops = steady_state(theta, prepared, return_operators=True, check=False)
    assert_same(*both(theta, prepared, pools, ops, monkeypatch))


def test_zero_soc_gives_what_the_torch_ops_give(monkeypatch):
    """No guard against zero stocks, as in the reference: the SOC-weighted means and the
    flux-weighted CUE are 0/0 = NaN, residence times 0; the other sites are untouched."""
    n = 12
    theta = random_theta(n, 7)
    prepared = prepare_forcing(make_forcing(n, 8))
    pools, ops = steady_state(theta, prepared, return_operators=True, check=False)
    pools = pools.clone()
    pools[:4] = 0.0
    compiled, reference = both(theta, prepared, pools, ops, monkeypatch)
    assert_same(compiled, reference)
    for name in ("cue", "baseline_decomposition", "environmental_modifier", "vertical_transport"):
        assert bool(compiled[name][:4].isnan().all()) and bool(compiled[name][4:].isfinite().all()), name
    assert bool((compiled["residence_time"][:4] == 0).all())


def test_only_float64_cpu_without_gradients_takes_the_compiled_pass(monkeypatch):
    n = 6
    theta = random_theta(n, 9)
    prepared = prepare_forcing(make_forcing(n, 10))
    pools, ops = steady_state(theta, prepared, return_operators=True, check=False)

    def refuse(*_args):
        raise AssertionError("the torch ops ran")

    with monkeypatch.context() as m:  # float64, no gradient: compiled
        m.setattr(D, "_torch_diagnostics", refuse)
        D.bulk_diagnostics(theta, prepared, pools, ops)
    # a θ that wants a gradient gets the differentiable torch ops
    th = theta.clone().requires_grad_()
    d = D.bulk_diagnostics(th, prepared, pools, ops)
    d["environmental_modifier"].sum().backward()
    assert th.grad is not None and bool(th.grad[:, INDEX["q10"]].abs().gt(0).all())
    # other dtypes: the torch ops (the pools' float32 promotes against float64 θ as before)
    with monkeypatch.context() as m:
        m.setattr(D, "_compiled_diagnostics", refuse)
        D.bulk_diagnostics(theta, prepared, pools.to(torch.float32), ops)


def test_warm_up_loads_the_signature_the_diagnostics_call():
    """A fork server's warm-up (socmap.warm_kernels) loads the machine code the mapping's
    diagnostics then run: in a fresh process, a real call adds no compiled signature."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = """
import json, sys
sys.path.insert(0, 'tests')
import socmap.warm_kernels
from conftest import make_forcing, random_theta
from socmap.clm5 import diagnostic_kernels as dk, prepare_forcing, steady_state, bulk_diagnostics
before = len(dk._bulk_sites.signatures)
theta, prepared = random_theta(30, 1), prepare_forcing(make_forcing(30, 2))
pools, ops = steady_state(theta, prepared, return_operators=True, check=False)
bulk_diagnostics(theta, prepared, pools, ops)
bulk_diagnostics(theta, prepared, pools)
print(json.dumps([before, len(dk._bulk_sites.signatures)]))
"""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True).stdout
    before, after = json.loads(out)
    assert before == 1 and after == before, out


def test_o_scalar_operators_are_used_as_given(monkeypatch):
    """Diagnostics of a wetland solve use the solve's own operators (V̄, φ, fractions); the
    compiled pass reads the same ones as the reference."""
    n = 40
    theta = random_theta(n, 11)
    prepared = prepare_forcing(make_forcing(n, 12))
    o = torch.rand(n, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(13)) * 0.5 + 0.5
    ops = O.build_operators(theta, prepared, o_scalar=o)
    pools = steady_state(theta, prepared, check=False, o_scalar=o)
    assert_same(*both(theta, prepared, pools, ops, monkeypatch))


def test_the_kernels_exponential_and_logarithm_are_within_a_few_ulp_of_libm():
    """exp over the whole range the kernel trusts, at its reduction's boundaries (k ln2 ± ln2/2)
    and at the small exponents ξ^T and ξ^depth meet in practice; log over the allocation terms'
    arguments [1e-300, 1] (and beyond 1), at its reduction's boundary √2 and next to 1."""
    eps = np.finfo(np.float64).eps
    ln2 = np.log(2.0)
    k = np.arange(-1009, 1010)
    y = np.concatenate([np.linspace(-dk.EXP_RANGE, dk.EXP_RANGE, 200_001), np.linspace(-6.0, 3.0, 100_001),
                        k * ln2 + ln2 / 2, k * ln2 - ln2 / 2, k * ln2, [0.0, -0.0, 1e-300, -1e-300, 1e-17]])
    y = y[np.abs(y) <= dk.EXP_RANGE]
    got, _ = np.empty_like(y), np.empty_like(y)
    dk._exp_log_rows(y, got, _)
    assert float(np.max(np.abs(got / np.exp(y) - 1.0))) < 4 * eps
    x = np.concatenate([np.geomspace(1e-300, 1.0, 200_001), np.linspace(1e-6, 1.0, 100_001), np.geomspace(1.0, 1e30, 1001),
                        np.sqrt(2.0) * np.array([1 - eps, 1.0, 1 + eps]), 1.0 - np.arange(1, 1000) * eps, [1.0, 2.0, 0.5]])
    _, got = np.empty_like(x), np.empty_like(x)
    dk._exp_log_rows(x, _, got)
    expected = np.log(x)
    # relative where ln x is away from 0; next to 1 (ln x ≈ x - 1) the absolute error is what counts
    assert float(np.max(np.abs(got - expected) / np.maximum(np.abs(expected), 1.0))) < 4 * eps
    assert bool((got[x == 1.0] == 0.0).all())


@pytest.mark.parametrize("bad", [800.0, float("nan")])
def test_exponents_beyond_the_kernels_range_take_the_torch_ops(bad, monkeypatch):
    """An exponent the kernel's exp does not cover (|ln Q10 · T_exp| > EXP_RANGE, or NaN forcing)
    gives exactly what the torch ops give (inf or NaN there, the other sites as usual)."""
    n = 10
    theta = random_theta(n, 14)
    prepared = prepare_forcing(make_forcing(n, 15))
    pools, ops = steady_state(theta, prepared, return_operators=True, check=False)
    prepared.temp_exponent = prepared.temp_exponent.clone()
    prepared.temp_exponent[3, 2, 1] = bad / float(torch.log(theta[1, INDEX["q10"]]))
    compiled, reference = both(theta, prepared, pools, ops, monkeypatch)
    assert not bool(torch.isfinite(reference["environmental_modifier"][1]))
    assert bool(torch.isfinite(reference["environmental_modifier"][2:]).all())
    assert_same(compiled, reference)
