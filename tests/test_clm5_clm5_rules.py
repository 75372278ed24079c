"""Known answers for two CLM5 rules: the cryoturbation taper ends at the bedrock, and the input
profile keys on last year's maximum active layer (CTSM ``SoilBiogeochemLittVertTranspMod`` and
``SoilBiogeochemVerticalProfileMod``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_forcing, random_theta
from socmap.clm5 import grid, operators as O
from socmap.clm5.forcing import Forcing
from socmap.clm5.parameters import INDEX, midrange_theta
from socmap.clm5.solver import steady_state

Z_M = grid.INTERFACE_BOTTOM_M  # depth of each layer's bottom interface, where D lives


def _one_site(alt_m: float, nbedrock: int, n: int = 1, altmax_lastyear_m: float | None = None) -> Forcing:
    f = make_forcing(n, 3, frozen_fraction=0.0)
    changes = {"alt_m": torch.full((n, 12), alt_m, dtype=torch.float64),
               "nbedrock": torch.full((n,), nbedrock, dtype=torch.int64),
               "altmax_lastyear_m": None if altmax_lastyear_m is None else torch.full((n,), altmax_lastyear_m, dtype=torch.float64)}
    return f.replace(**changes)


def _cryo_over_d(forcing: Forcing, rule: str) -> np.ndarray:
    """D / D_cryo at the 20 interfaces of site 0 (the 1e-30 floor shows as ~0)."""
    theta = midrange_theta(forcing.batch_size)
    d = O.diffusivity(theta, forcing, rule)[0, 0] * O.DAYS_PER_YEAR
    return (d / theta[0, INDEX["cryo"]]).numpy()


def test_cryoturbation_tapers_to_zero_at_the_bedrock_not_at_3_m():
    """ALT 1 m; 11 soil layers, so CLM's taper end zisoi(nbedrock+1) is 2.28 m (< 3 m)."""
    nb = 11
    end = grid.INTERFACE_BOTTOM_ALL_M[nb]
    assert end == pytest.approx(2.28)
    shape = _cryo_over_d(_one_site(1.0, nb), "binn")  # binn: interfaces 0..nbedrock carry D
    expected = np.where(Z_M < 1.0, 1.0, np.clip(1.0 - (Z_M - 1.0) / (end - 1.0), 0.0, None))
    expected[nb + 1:] = 0.0  # below the bedrock
    np.testing.assert_allclose(shape, expected, rtol=1e-12, atol=1e-20)
    assert shape[nb] < 1e-20  # exactly zero at the taper end
    old = 1.0 - (Z_M[10] - 1.0) / (3.0 - 1.0)  # the former 3 m taper at 1.88 m: 0.56
    assert shape[10] == pytest.approx(0.3125) and old == pytest.approx(0.56)
    # conservative rule: same values on the open interfaces, closed from the bedrock down
    cons = _cryo_over_d(_one_site(1.0, nb), "conservative")
    np.testing.assert_allclose(cons[:nb], expected[:nb], rtol=1e-12)
    assert (cons[nb:] < 1e-20).all()


def test_cryoturbation_taper_is_unchanged_without_shallow_bedrock():
    """No bedrock (nbedrock 20) or bedrock below 3 m: the taper still ends at 3 m."""
    for nb in (13, 20):
        shape = _cryo_over_d(_one_site(1.0, nb), "conservative")
        expected = np.where(Z_M < 1.0, 1.0, np.clip(1.0 - (Z_M - 1.0) / 2.0, 0.0, None))
        expected[nb:] = 0.0
        np.testing.assert_allclose(shape, expected, rtol=1e-12, atol=1e-20)


@pytest.mark.parametrize("alt_m", [1.2, 1.5])  # ALT at and below CLM's taper end (1.2 m)
def test_bedrock_above_the_active_layer_is_finite_and_mixes_only_above_alt(alt_m):
    nb = 8  # taper end zisoi(9) = 1.2 m <= ALT: zero-length taper
    forcing = _one_site(alt_m, nb)
    for rule in ("binn", "conservative"):
        shape = _cryo_over_d(forcing, rule)
        assert np.isfinite(shape).all()
        n_open = nb + 1 if rule == "binn" else nb
        np.testing.assert_allclose(shape[:n_open], 1.0)  # every open interface lies at or above ALT
        assert (shape[n_open:] < 1e-20).all()
    # the transport basis (differentiable in ALT) agrees and has finite gradients
    alt = forcing.alt_m.clone().requires_grad_()
    basis = O._transport_basis(forcing.replace(alt_m=alt), "conservative")
    basis.sum().backward()
    assert torch.isfinite(basis).all() and torch.isfinite(alt.grad).all()


def test_transport_basis_matches_direct_formula_on_shallow_bedrock_cryoturbation():
    """Dense (direct) and structured (θ-linear basis) transport agree where the new taper acts."""
    n = 48
    rng = np.random.default_rng(4)
    forcing = make_forcing(n, 13, frozen_fraction=0.0).replace(
        alt_m=torch.as_tensor(rng.uniform(0.05, 2.0, (n, 1)) * rng.uniform(0.5, 1.0, (n, 12))),
        nbedrock=torch.as_tensor(rng.integers(1, 14, n)))
    theta = random_theta(n, 14)
    for rule in ("conservative", "binn"):
        ops = O.build_operators(theta, O.prepare_forcing(forcing, rule))
        lower, diag, upper, _ = O.transport_tridiagonal_direct(theta, forcing, rule)
        direct = torch.stack([lower, diag, upper]).movedim(1, -1)
        assert float((ops.transport - direct).abs().max() / direct.abs().max()) < 1e-14
    x_fast = steady_state(theta, forcing)
    x_dense = steady_state(theta, forcing, method="dense")
    rel = ((x_fast - x_dense).abs().amax(-1) / x_dense.abs().amax(-1)).max()
    assert float(rel) <= 1e-9


def test_first_thaw_puts_all_input_in_the_top_layer():
    """ALTMAX > 0 this year but ALTMAX_LASTYEAR = 0: CLM5 puts all input in layer 0; a site that
    also thawed last year uses the Jackson-β profile."""
    first = _one_site(0.5, 20, altmax_lastyear_m=0.0)
    thawed = _one_site(0.5, 20, altmax_lastyear_m=0.5)
    theta = midrange_theta(1)
    beta = float(theta[0, INDEX["beta"]])
    phi_first = O.build_operators(theta, O.prepare_forcing(first)).input_profile[:, 0].numpy()
    phi_thawed = O.build_operators(theta, O.prepare_forcing(thawed)).input_profile[:, 0].numpy()
    np.testing.assert_array_equal(phi_first, np.eye(20)[0])
    rho = beta ** (100 * grid.INTERFACE_TOP_M) - beta ** (100 * Z_M)
    np.testing.assert_allclose(phi_thawed, rho / rho.sum(), rtol=1e-12)
    assert phi_thawed[0] < 0.5
    # the first-thaw stock sits higher in the column
    x_first, x_thawed = steady_state(theta, first), steady_state(theta, thawed)
    assert float(x_first[0, 4:, 0].sum()) > float(x_thawed[0, 4:, 0].sum())


def test_altmax_lastyear_defaults_to_the_annual_maximum_active_layer():
    alt = np.zeros((3, 12))
    alt[1, 6:9] = 0.4  # thaws in summer only
    alt[2] = 10.0
    f = make_forcing(3, 0)
    arrays = {k: v for k, v in f.to_numpy().items() if k != "altmax_lastyear_m"}
    arrays["alt_m"] = alt
    g = Forcing.from_numpy(**arrays)
    np.testing.assert_array_equal(g.altmax_lastyear_m.numpy(), [0.0, 0.4, 10.0])
    assert O.prepare_forcing(g).thawed.tolist() == [False, True, True]
    g.validate()
    with pytest.raises(ValueError, match="altmax_lastyear_m"):
        g.replace(altmax_lastyear_m=torch.tensor([0.0, -1.0, 1.0], dtype=torch.float64)).validate()
    with pytest.raises(ValueError, match="altmax_lastyear_m"):
        g.replace(altmax_lastyear_m=torch.zeros(3, 12, dtype=torch.float64)).validate()
