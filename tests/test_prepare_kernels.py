"""The compiled passes of ``prepare_forcing`` (socmap.clm5.kernels, docs/model.md §3.5–3.6) give the
torch ops' results bit for bit, and the torch ops stay the path wherever the kernels do not apply."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from socmap.clm5 import grid, kernels
from socmap.clm5 import operators as O
from socmap.clm5.forcing import Forcing, batch_first
from socmap.clm5.solver import steady_state

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import make_forcing, random_theta  # noqa: E402

RULES = ("conservative", "binn")
FIELDS = [f.name for f in dataclasses.fields(O.PreparedForcing) if f.name != "bedrock_rule"]


def _prepare_both(forcing: Forcing, rule: str, monkeypatch) -> tuple[O.PreparedForcing, O.PreparedForcing]:
    monkeypatch.setattr(O, "COMPILED_PREPARE", True)
    compiled = O.prepare_forcing(forcing, rule)
    monkeypatch.setattr(O, "COMPILED_PREPARE", False)
    reference = O.prepare_forcing(forcing, rule)
    monkeypatch.setattr(O, "COMPILED_PREPARE", True)
    return compiled, reference


def _assert_same_bits(a: O.PreparedForcing, b: O.PreparedForcing) -> None:
    """Every field equal bit for bit (signed zeros included), same shapes and layout."""
    assert a.bedrock_rule == b.bedrock_rule
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.dtype == y.dtype and x.is_contiguous() == y.is_contiguous(), name
        if x.dtype == torch.float64:
            x, y = x.contiguous().view(torch.int64), y.contiguous().view(torch.int64)
        assert torch.equal(x, y), f"{name}: {int((x != y).sum())} values differ"


def _with_every_bedrock(forcing: Forcing) -> Forcing:
    """nbedrock cycling through 1..20, and a site thawed never (last year's maximum ALT 0)."""
    n = forcing.batch_size
    nb = torch.arange(n, dtype=torch.int64) % grid.N_LAYERS + 1
    altmax = forcing.altmax_lastyear_m.clone()
    altmax[::7] = 0.0
    return forcing.replace(nbedrock=nb, altmax_lastyear_m=altmax)


def _sites_innermost(forcing: Forcing) -> Forcing:
    """The same values with the [B, 12, 20] fields laid out sites innermost (the mapping's layout)."""
    def relayout(t: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(batch_first(np.ascontiguousarray(np.moveaxis(t.numpy(), 0, -1))))
    return forcing.replace(**{k: relayout(getattr(forcing, k))
                              for k in ("soil_temp_k", "water_scalar", "oxygen_scalar", "nitrogen_scalar")})


def _count_calls(monkeypatch) -> dict[str, int]:
    calls = {"transport_basis": 0, "field_conversions": 0, "batch_first_fields": 0}
    for name in calls:
        original = getattr(kernels, name)

        def counted(*args, _original=original, _name=name):
            calls[_name] += 1
            return _original(*args)
        monkeypatch.setattr(kernels, name, counted)
    return calls


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("layout", ["sites innermost", "batch-first", "strided"])
def test_compiled_prepare_equals_the_torch_ops_bit_for_bit(rule, layout, monkeypatch):
    """Cryoturbation, bioturbation and frozen months, every bedrock depth 1..20, never-thawed sites;
    5,000 sites, so that two threads split them into ranges (bit for bit the same as one). Fields
    in neither layout (every other site of a batch-first forcing) take the torch ops."""
    forcing = _with_every_bedrock(make_forcing(5000, 21, frozen_fraction=0.4))
    # the first 600 sites without cryoturbation (whole blocks of the kernel: bio- or frozen months only)
    alt = forcing.alt_m.clone()
    alt[:600] = torch.where(alt[:600] > 0, 10.0, 0.0)
    forcing = forcing.replace(alt_m=alt)
    if layout == "sites innermost":
        forcing = _sites_innermost(forcing)
    elif layout == "strided":
        forcing = forcing.subset(slice(None, None, 2))
    alt = forcing.alt_m
    assert bool(((alt > 0) & (alt <= O.MAX_ALT_CRYOTURBATION_M)).any()) and bool((alt <= 0).any())
    assert bool((alt > O.MAX_ALT_CRYOTURBATION_M).any()) and bool((forcing.altmax_lastyear_m == 0).any())
    calls = _count_calls(monkeypatch)
    compiled, reference = _prepare_both(forcing, rule, monkeypatch)
    assert calls == {"transport_basis": 1, "field_conversions": int(layout == "sites innermost"),
                     "batch_first_fields": int(layout == "batch-first")}
    _assert_same_bits(compiled, reference)
    assert not bool(compiled.thawed.all())
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _assert_same_bits(O.prepare_forcing(forcing, rule), compiled)
    finally:
        torch.set_num_threads(threads)


# ALT values on and around the regime thresholds, the interface depths (ALT = z: not "above") and
# the taper ends (ALT at or below the bedrock-limited taper end: a zero-length taper)
_EDGES = sorted({0.0, -0.5, O.MAX_ALT_CRYOTURBATION_M, O.MAX_DEPTH_CRYOTURBATION_M, 10.0,
                 *grid.INTERFACE_BOTTOM_ALL_M[:14].tolist()})
_alt_value = st.one_of(st.sampled_from(_EDGES), st.floats(-1.0, 4.0, allow_nan=False),
                       st.sampled_from(_EDGES).map(lambda v: float(np.nextafter(v, np.inf))))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), data=st.data(), rule=st.sampled_from(RULES))
def test_compiled_transport_basis_property(n, data, rule):
    """Random forcings (ALT anywhere, edge values included; any bedrock 1..20): the compiled basis
    equals the torch ops' bit for bit."""
    alt = torch.tensor(data.draw(st.lists(_alt_value, min_size=12 * n, max_size=12 * n)), dtype=torch.float64).reshape(n, 12)
    nb = torch.tensor(data.draw(st.lists(st.integers(1, grid.N_LAYERS), min_size=n, max_size=n)), dtype=torch.int64)
    forcing = make_forcing(n, data.draw(st.integers(0, 2**16))).replace(alt_m=alt, nbedrock=nb, altmax_lastyear_m=None)
    compiled = O._transport_basis(forcing, rule)
    O.COMPILED_PREPARE = False
    try:
        reference = O._transport_basis(forcing, rule)
    finally:
        O.COMPILED_PREPARE = True
    assert torch.equal(compiled.view(torch.int64), reference.view(torch.int64))


@pytest.mark.parametrize("rule", RULES)
def test_steady_state_on_the_compiled_preparation_equals_the_torch_one(rule, monkeypatch):
    forcing = _sites_innermost(_with_every_bedrock(make_forcing(300, 22)))
    compiled, reference = _prepare_both(forcing, rule, monkeypatch)
    theta = random_theta(300, 23)
    x = [steady_state(theta, p, bedrock_rule=rule) for p in (compiled, reference)]
    assert bool(torch.isfinite(x[0]).all())
    assert torch.equal(x[0], x[1])


def test_forcing_with_a_gradient_takes_the_torch_ops(monkeypatch):
    """ALT and the temperature differentiated (e.g. a sensitivity to the forcing): the torch ops run
    and carry the gradient; without grad mode the kernels run and the values are the same."""
    forcing = _sites_innermost(make_forcing(200, 24))
    forcing = forcing.replace(alt_m=forcing.alt_m.clone().requires_grad_(),
                              soil_temp_k=forcing.soil_temp_k.clone().requires_grad_())
    calls = _count_calls(monkeypatch)
    with_grad = O.prepare_forcing(forcing)
    assert calls == {"transport_basis": 0, "field_conversions": 0, "batch_first_fields": 0}
    assert with_grad.transport_basis.requires_grad and with_grad.temp_exponent.requires_grad
    with torch.no_grad():
        without = O.prepare_forcing(forcing)
    assert calls == {"transport_basis": 1, "field_conversions": 1, "batch_first_fields": 0}
    _assert_same_bits(without, dataclasses.replace(with_grad, **{k: getattr(with_grad, k).detach() for k in FIELDS}))
    # and the gradient itself flows to ALT (the cryoturbation taper) and to T
    (with_grad.transport_basis[1, 1].sum() + with_grad.temp_exponent.sum()).backward()  # cryo part's diagonal
    assert forcing.alt_m.grad is not None and bool((forcing.alt_m.grad != 0).any())
    assert forcing.soil_temp_k.grad is not None


def test_float32_forcing_is_prepared_in_float64_by_the_kernels(monkeypatch):
    forcing = _sites_innermost(make_forcing(100, 25))
    single = forcing.to(torch.float32)
    calls = _count_calls(monkeypatch)
    compiled, reference = _prepare_both(single, "conservative", monkeypatch)
    assert calls["transport_basis"] == 1 and compiled.transport_basis.dtype == torch.float64
    _assert_same_bits(compiled, reference)


@pytest.mark.parametrize(("nbedrock", "in_grid"), [(0, True), (25, False), (-1, False)])
def test_a_bedrock_index_outside_the_grid_is_left_to_the_torch_ops(nbedrock, in_grid, monkeypatch):
    """The kernel reads no grid constant out of range: a forcing with such an index (which
    Forcing.validate rejects) takes the torch ops, which give their own result or error, unchanged;
    0 (no soil layer) is within the grid and compiled."""
    forcing = make_forcing(20, 26)
    forcing = forcing.replace(nbedrock=torch.full((20,), nbedrock, dtype=torch.int64))
    calls = _count_calls(monkeypatch)
    outcomes = []
    for compiled in (True, False):
        monkeypatch.setattr(O, "COMPILED_PREPARE", compiled)
        try:
            outcomes.append(O._transport_basis(forcing, "conservative"))
        except IndexError as exc:
            outcomes.append(type(exc))
    assert calls["transport_basis"] == int(in_grid)
    if isinstance(outcomes[0], torch.Tensor):
        assert torch.equal(outcomes[0], outcomes[1])
    else:
        assert outcomes[0] is outcomes[1]


def test_an_unknown_bedrock_rule_is_refused_on_both_paths(monkeypatch):
    forcing = make_forcing(5, 27)
    for compiled in (True, False):
        monkeypatch.setattr(O, "COMPILED_PREPARE", compiled)
        with pytest.raises(ValueError, match="bedrock_rule must be"):
            O.prepare_forcing(forcing, "leaky")


def test_warm_up_loads_the_preparation_kernels():
    """In a fresh process, preparing either layout under either bedrock rule after
    :func:`kernels.warm_up` compiles no new signature of the preparation kernels."""
    script = """
import json, sys
sys.path.insert(0, 'tests')
from conftest import make_forcing
from test_prepare_kernels import _sites_innermost
from socmap.clm5 import kernels, operators as O
kernels.warm_up()
ds = (kernels._field_conversion_sites, kernels._batch_first_fields_sites, kernels._transport_basis_sites)
before = [len(d.signatures) for d in ds]
forcing = make_forcing(40, 28)
for f in (forcing, _sites_innermost(forcing)):
    for rule in ('conservative', 'binn'):
        O.prepare_forcing(f, rule)
print(json.dumps([before, [len(d.signatures) for d in ds]]))
"""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True).stdout
    before, after = json.loads(out.strip().splitlines()[-1])
    assert all(before) and after == before, out


def test_a_bedrock_index_not_int64_takes_the_torch_ops(monkeypatch):
    forcing = make_forcing(30, 29)
    narrow = forcing.replace(nbedrock=forcing.nbedrock.to(torch.int32))
    calls = _count_calls(monkeypatch)
    basis = O._transport_basis(narrow, "binn")
    assert calls["transport_basis"] == 0
    assert torch.equal(basis, O._transport_basis(forcing, "binn")) and calls["transport_basis"] == 1
