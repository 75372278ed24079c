"""The compiled passes of the forcing derivation (socmap.climate_kernels) against the NumPy formulas
they replaced, written out here as the reference: bitwise equal, on layouts and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socmap.climate_forcing import pet_thornthwaite_mm, water_scalar_from_climate
from socmap.clm5.forcing import T_FREEZE_K
from socmap.clm5.grid import NODE_M
from socmap.forcing_config import ForcingConfig
from socmap.land_cover import WETLAND_CLASS
from socmap.soil_temperature import NO_PERMAFROST_ALT_M, thaw_depth_m


def reference_thaw_depth(t: np.ndarray, z: np.ndarray) -> np.ndarray:
    """[N, 12, J] -> [N, 12]: the arg-max formulation the kernel replaced."""
    frozen = t <= T_FREEZE_K
    any_frozen = frozen.any(-1)
    first = np.argmax(frozen, axis=-1)
    above = np.maximum(first - 1, 0)
    t_hi = np.take_along_axis(t, above[..., None], -1)[..., 0]
    t_lo = np.take_along_axis(t, first[..., None], -1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(t_hi > t_lo, (t_hi - T_FREEZE_K) / (t_hi - t_lo), 0.0)
    depth = z[above] + np.clip(frac, 0.0, 1.0) * (z[first] - z[above])
    depth = np.where(first == 0, 0.0, depth)
    return np.where(any_frozen, depth, NO_PERMAFROST_ALT_M)


def reference_water(p: np.ndarray, e: np.ndarray, lc: np.ndarray, c: ForcingConfig) -> np.ndarray:
    """[N, 12, 20]: the NumPy pass-per-operation formulation the kernels replaced."""
    monthly = p / np.maximum(e, c.pet_floor_mm)
    annual = p.sum(1) / np.maximum(e.sum(1), c.pet_floor_mm)
    wz = np.exp(-NODE_M / c.moisture_memory_depth_m)
    w = monthly[:, :, None] * wz[None, None, :]
    w = w + (annual[:, None] * (1.0 - wz)[None, :])[:, None, :]
    w = np.maximum(w / c.moisture_ratio_wet, 1e-12)
    w = np.log(w) * c.psi_exponent + np.log(c.psi_min_mpa / c.psi_field_capacity_mpa)
    w = np.clip(w / np.log(c.psi_min_mpa / c.psi_max_mpa), max(c.water_scalar_floor, 0.0), 1.0)
    w[lc == WETLAND_CLASS] = c.wetland_water_scalar
    return w


def _profiles(rng: np.random.Generator, n: int) -> np.ndarray:
    """Soil temperatures [N, 12, 20] (K) mixing thawed, frozen-top, partly frozen and warm columns,
    with ties at the freezing point."""
    t = T_FREEZE_K + rng.normal(0.0, 4.0, (n, 12, 20))
    t[: n // 4] += 30.0  # never frozen
    t[n // 4: n // 2, :, 0] = T_FREEZE_K - 1.0  # frozen top
    t[n // 2: 3 * n // 4, :, 5:] = T_FREEZE_K  # exactly at the freezing point below layer 5
    return t


@pytest.mark.parametrize("layout", ["sites_innermost", "batch_first", "strided"])
def test_thaw_depth_is_bitwise_the_numpy_formula(layout: str) -> None:
    rng = np.random.default_rng(3)
    t = _profiles(rng, 400)
    if layout == "sites_innermost":
        t = np.moveaxis(np.ascontiguousarray(np.moveaxis(t, 0, -1)), -1, 0)
    elif layout == "strided":
        t = np.concatenate([t, t], 0)[::2]
    got = thaw_depth_m(t)
    want = reference_thaw_depth(np.asarray(t), NODE_M)
    np.testing.assert_array_equal(got, want)
    # each branch is hit: no frost, frozen top, an interpolated front
    assert (got == NO_PERMAFROST_ALT_M).any() and (got == 0.0).any() and ((got > 0) & (got < NO_PERMAFROST_ALT_M)).any()


def test_thaw_depth_known_answer() -> None:
    """Linear between the thawed node above and the first frozen node: +1 K at node 2, -1 K at node 3."""
    t = np.full((1, 12, 20), T_FREEZE_K + 5.0)
    t[0, :, 2], t[0, :, 3:] = T_FREEZE_K + 1.0, T_FREEZE_K - 1.0
    np.testing.assert_allclose(thaw_depth_m(t), (NODE_M[2] + NODE_M[3]) / 2, rtol=1e-15)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 70), seed=st.integers(0, 2**32 - 1), wet_share=st.floats(0.0, 1.0))
def test_water_scalar_is_bitwise_the_numpy_formula(n: int, seed: int, wet_share: float) -> None:
    rng = np.random.default_rng(seed)
    air = rng.uniform(-25.0, 32.0, (n, 12))
    p = rng.uniform(0.0, 400.0, (n, 12)) * (rng.random((n, 12)) > 0.1)  # some dry months
    lat = rng.uniform(-60.0, 70.0, n)
    lc = np.where(rng.random(n) < wet_share, WETLAND_CLASS, rng.integers(1, 17, n))
    c = ForcingConfig()
    e = pet_thornthwaite_mm(air, lat)
    got = water_scalar_from_climate(p, e, NODE_M, c, land_cover=lc)
    np.testing.assert_array_equal(got, reference_water(p, e, lc, c))
    assert got.shape == (n, 12, 20) and np.moveaxis(got, 0, -1).flags.c_contiguous  # sites innermost


def test_water_scalar_without_land_cover_has_no_wetlands() -> None:
    rng = np.random.default_rng(1)
    p, e = rng.uniform(1, 200, (30, 12)), rng.uniform(1, 200, (30, 12))
    c = ForcingConfig()
    np.testing.assert_array_equal(water_scalar_from_climate(p, e, NODE_M, c),
                                  reference_water(p, e, np.zeros(30, int), c))



@pytest.mark.parametrize("offset", [0.0, "per_site"])
def test_soil_temperature_wave_is_the_operator_product(offset) -> None:
    """The compiled wave equals the [12 in, 12 out, J] operator applied with a float64 einsum (to
    rounding: the kernel sums the 12 terms in month order, a BLAS product in its own), plus the offset."""
    from socmap.soil_temperature import _wave_operator, soil_temperature_k

    rng = np.random.default_rng(5)
    air = rng.uniform(-30.0, 35.0, (257, 12))
    c = ForcingConfig()
    off = rng.uniform(-2.0, 4.0, 257) if offset == "per_site" else None
    got = soil_temperature_k(np.asfortranarray(air), NODE_M, c, surface_offset_c=off)
    op = _wave_operator(NODE_M, c.thermal_diffusivity_m2_s, c.period_s)
    want = np.einsum("na,amj->nmj", air, op) + np.broadcast_to(c.surface_offset_c if off is None else off, (257,))[:, None, None] + T_FREEZE_K
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)
    assert np.moveaxis(got, 0, -1).flags.c_contiguous

def test_warm_up_loads_the_signatures_the_derivation_calls():
    """In a fresh process, deriving a real forcing after :func:`climate_kernels.warm_up` compiles nothing more."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = """
import json
import numpy as np
from socmap import climate_kernels as K
from socmap.climate_forcing import derive_forcing
K.warm_up()
ds = (K._thaw_depth, K._moisture_ratio, K._water_from_log_ratio, K._wave_response)
before = [len(d.signatures) for d in ds]
rng = np.random.default_rng(0)
derive_forcing(rng.uniform(-20, 25, (50, 12)), rng.uniform(0, 90, (50, 12)), rng.integers(1, 17, 50), rng.uniform(25, 70, 50))
print(json.dumps([before, [len(d.signatures) for d in ds]]))
"""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True).stdout
    before, after = json.loads(out)
    assert all(before) and after == before, out
