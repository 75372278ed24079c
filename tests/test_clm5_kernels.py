"""The compiled solver kernels (socmap.clm5.kernels) against the torch sweeps they replace on the CPU."""

import pytest
import torch

from conftest import make_forcing, random_theta
from socmap.clm5 import kernels, operators as O, solver as S


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max over (pool, site) of the max-norm relative difference of the depth profile."""
    return float(((a - b).abs().amax(1) / b.abs().amax(1).clamp_min(1e-300)).max())


@pytest.fixture
def torch_sweeps(monkeypatch):
    """Run a callable with the compiled kernels switched off (the reference path)."""
    def run(fn):
        monkeypatch.setattr(S, "COMPILED_KERNELS", False)
        try:
            return fn()
        finally:
            monkeypatch.setattr(S, "COMPILED_KERNELS", True)
    return run


def _ops(n: int, seed: int) -> O.Operators:
    return O.build_operators(random_theta(n, seed + 1), O.prepare_forcing(make_forcing(n, seed)))


# 5 sites: the small-batch torch branches; 1,500: the large-batch ones; 4,500: split over two threads
@pytest.mark.parametrize("n", [5, 1500, 4500])
def test_factors_and_steady_state_match_the_torch_sweeps(n, torch_sweeps):
    ops = _ops(n, n)
    compiled = S.ShiftedFactorization(ops.decay_per_day, ops.transport, ops.fractions, shift_per_day=0.0,
                                      rhs=ops.source_g_m3_day)
    reference = torch_sweeps(lambda: S.ShiftedFactorization(ops.decay_per_day, ops.transport, ops.fractions,
                                                            rhs=ops.source_g_m3_day))
    assert compiled.compiled and not reference.compiled
    for name in ("lit_rden", "lit_cp"):  # entry by entry
        a, b = getattr(compiled, name), getattr(reference, name)
        assert float(((a - b).abs() / b.abs().clamp_min(1e-300)).max()) < 1e-12, name
    # the Schur inverses block by block (their entries cancel where a block is ill-conditioned)
    assert rel(compiled.som_inv, reference.som_inv) < 1e-10
    # rounding differs (1/det then products vs a division per entry); ill-conditioned sites amplify it
    # as they do against the dense reference, whose bound (1e-9) applies
    assert rel(compiled.solution, reference.solution) < 1e-9
    assert rel(S.solve_structured(ops), torch_sweeps(lambda: S.solve_structured(ops))) < 1e-9


@pytest.mark.parametrize("n", [7, 4500])
def test_shifted_solve_and_transposed_solve_match_the_torch_sweeps(n, torch_sweeps):
    ops = _ops(n, 3)
    shift = torch.linspace(0.0, 0.05, n, dtype=torch.float64)
    g = torch.randn(7, 20, n, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    fac = S.factor_shifted(ops, shift)
    ref = torch_sweeps(lambda: S.factor_shifted(ops, shift))
    assert rel(fac.solve(g), ref.solve(g)) < 1e-9
    assert rel(fac.solve_transposed(g), ref.solve_transposed(g)) < 1e-9
    # the adjoint identity <M⁻ᵀ g, b> = <g, M⁻¹ b> on the compiled path alone
    b = torch.rand(7, 20, n, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    lhs, rhs = (fac.solve_transposed(g) * b).sum(), (g * fac.solve(b)).sum()
    assert abs(float(lhs - rhs)) <= 1e-10 * abs(float(rhs))


def test_the_inputs_are_not_overwritten():
    ops = _ops(40, 6)
    g = torch.randn(7, 20, 40, dtype=torch.float64)
    src, g0 = ops.source_g_m3_day.clone(), g.clone()
    fac = S.factor_shifted(ops, 0.01)
    fac.solve(g), fac.solve_transposed(g), S.solve_structured(ops)
    assert torch.equal(g, g0) and torch.equal(ops.source_g_m3_day, src)


def test_sites_split_over_threads_give_the_same_numbers_bit_for_bit():
    ops = _ops(4500, 8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = S.solve_structured(ops)
        torch.set_num_threads(2)
        assert kernels._threads_for(4500) == 2
        two = S.solve_structured(ops)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_tau_cwd_gradient_stays_exactly_zero_for_a_som_loss():
    """The steady state's SOM does not depend on τ_CWD (CWD passes on what it receives); the
    compiled adjoint keeps that exact (its CWD row is formed by the same ops as the gradient)."""
    from socmap.clm5.parameters import INDEX

    n = 64
    prepared = O.prepare_forcing(make_forcing(n, 9))
    th = random_theta(n, 10).requires_grad_()
    x = S.solve_structured(O.build_operators(th, prepared))
    torch.log(x[4:7].sum(0)[:3]).sum().backward()  # top layers: above every bedrock
    assert torch.count_nonzero(th.grad[:, INDEX["taucwd"]]) == 0
    assert torch.count_nonzero(th.grad[:, INDEX["tau4s1"]]) == n


def test_float32_and_other_devices_take_the_torch_sweeps():
    ops = _ops(6, 11)
    k32 = ops.decay_per_day.float()
    f32 = {name: v.float() for name, v in ops.fractions.items()}
    fac = S.ShiftedFactorization(k32, ops.transport.float(), f32, rhs=ops.source_g_m3_day.float())
    assert not fac.compiled and fac.solution.dtype == torch.float32
    assert not kernels.usable(torch.zeros(2, dtype=torch.float64, device="meta"))


def test_compiled_adjoint_gradients_match_autograd_over_several_blocks():
    """The outer products run in blocks of sites: two whole blocks and a partial one here."""
    n = 700
    assert 2 * kernels.GRAD_BLOCK < n < 3 * kernels.GRAD_BLOCK
    prepared = O.prepare_forcing(make_forcing(n, 12))
    theta = random_theta(n, 13)
    grads = []
    for adjoint in (True, False):
        th = theta.clone().requires_grad_()
        x = S.solve_structured(O.build_operators(th, prepared), adjoint=adjoint)
        torch.log(x[4:7].sum(0)[:3]).sum().backward()
        grads.append(th.grad)
    scale = grads[1].abs().amax(0, keepdim=True) + 1e-300
    assert float(((grads[0] - grads[1]).abs() / scale).max()) < 1e-8


def test_openmp_spin_count_is_set_only_where_the_user_chose_nothing():
    from socmap import openmp

    env: dict[str, str] = {}
    openmp.configure(env)
    assert env == {"GOMP_SPINCOUNT": openmp.SPINCOUNT}
    for chosen in ({"GOMP_SPINCOUNT": "5"}, {"OMP_WAIT_POLICY": "PASSIVE"}, {"SOCMAP_OPENMP": "default"}):
        env = dict(chosen)
        assert openmp.configure(env) is False and env == chosen
    assert openmp.configure({}) is False  # torch is loaded in this process: too late to apply here


def test_warm_up_loads_the_signatures_the_solver_calls():
    """What a fork server warms is what the workers then run: in a fresh process, a real forward
    (environment means included), backward and shifted solve after :func:`kernels.warm_up` add no
    compiled signature."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = """
import json, sys, torch
sys.path.insert(0, 'tests')
from conftest import make_forcing, random_theta
from socmap.clm5 import kernels, operators as O, solver as S
kernels.warm_up()
ds = (kernels._factor_sites, kernels._solve_sites, kernels._transposed_sites, kernels._steady_grads_sites,
      kernels._environment_sites)
before = [len(d.signatures) for d in ds]
prepared = O.prepare_forcing(make_forcing(30, 14))
th = random_theta(30, 15).requires_grad_()
ops = O.build_operators(th, prepared)
torch.log(S.solve_structured(ops)[4:7].sum(0)[:3]).sum().backward()
fac = S.factor_shifted(ops, 0.02)
fac.solve(torch.ones(7, 20, 30, dtype=torch.float64)), fac.solve_transposed(torch.ones(7, 20, 30, dtype=torch.float64))
print(json.dumps([before, [len(d.signatures) for d in ds]]))
"""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True).stdout
    before, after = json.loads(out)
    assert all(before) and after == before, out


@pytest.mark.parametrize("n", [9, 3000])
def test_compiled_environment_means_match_the_torch_ops(n, monkeypatch):
    """Values and both derivatives (ln Q10, w_scaling; some water clipped by w_scaling) agree with
    the month-by-month torch path, which takes the whole-year branch at 9 sites."""
    from socmap.clm5.operators import _EnvironmentMeans
    from socmap.clm5.parameters import INDEX

    p = O.prepare_forcing(make_forcing(n, 16))
    theta = random_theta(n, 17)
    q10, w_scaling = theta[:, INDEX["q10"]], theta[:, INDEX["w_scaling"]]
    fields = (p.temp_exponent, p.water, p.oxygen, p.oxygen_nitrogen)
    weights = torch.rand(2, 20, n, dtype=torch.float64, generator=torch.Generator().manual_seed(18))
    out = []
    for compiled in (True, False):
        monkeypatch.setattr(O, "COMPILED_MEANS", compiled)
        lq = torch.log(q10).requires_grad_()
        ws = (w_scaling * 1.5).contiguous().requires_grad_()  # × 1.5: clips W·w_scaling at 1 somewhere
        env, env_n = _EnvironmentMeans.apply(lq, ws, *fields)
        ((env * weights[0]).sum() + (env_n * weights[1]).sum()).backward()
        out.append((env.detach(), env_n.detach(), lq.grad, ws.grad))
    clipped = p.water * w_scaling * 1.5 > 1
    assert bool(clipped.any()) and not bool(clipped.all())
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0.0)


def test_a_forked_child_splits_sites_over_threads_of_its_own():
    """The kernels' thread pool does not survive a fork: a child that splits sites over two threads
    must start its own pool, not hand work to the parent's (absent) threads and wait forever.
    (torch's own OpenMP team is not fork-safe, so the child keeps torch on one thread.)"""
    import multiprocessing as mp

    ops = _ops(4500, 19)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = S.solve_structured(ops)  # the parent's pool exists now
        assert kernels._pool is not None
    finally:
        torch.set_num_threads(threads)
    with mp.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_solve_on_two_kernel_threads, (ops,)).get(timeout=30)
    assert torch.equal(got, expected)


def _solve_on_two_kernel_threads(ops):
    torch.set_num_threads(1)
    kernels._threads_for = lambda n_sites: 2
    return S.solve_structured(ops)
