"""Known-answer tests of the climate → CLM5 forcing derivation and the CESM2 reader."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from socmap.clm5.forcing import Forcing
from socmap.clm5.grid import DZ_M, NODE_M
from socmap.cesm2_forcing import read_cesm2_forcing
from socmap.climate_forcing import (
    daylength_h,
    derive_forcing,
    litter_split,
    miami_npp_g_m2_yr,
    nbedrock_from_depth,
    nitrogen_scalar,
    oxygen_scalar,
    pet_thornthwaite_mm,
    water_scalar_from_climate,
)
from socmap.forcing_config import ForcingConfig, LitterQuality
from socmap.land_cover import land_cover_group
from socmap.soil_temperature import active_layer_depth_m, damping_depth_m, soil_temperature_k, thaw_depth_m

YEAR_S = 365.25 * 86400.0
MONTHS = np.arange(12)
WAVE = np.cos(2 * np.pi * (MONTHS - 6.5) / 12.0)  # peak between July and August


def climate(mat_c: float, amp_c: float, precip_mm_month: float) -> tuple[np.ndarray, np.ndarray]:
    return mat_c + amp_c * WAVE, np.full(12, precip_mm_month)


# ----------------------------------------------------------------------------- soil temperature


def test_damping_depth_matches_hand_value():
    # ω = 2π / 31 557 600 s = 1.99102e-7 s-1; 2κ/ω = 1e-6 / 1.99102e-7 = 5.02255 m2 → d = 2.24110 m
    assert damping_depth_m(YEAR_S, 5e-7) == pytest.approx(2.24110, rel=1e-5)
    # d scales with sqrt(κ): four times κ doubles d
    assert damping_depth_m(YEAR_S, 2e-6) == pytest.approx(2 * 2.24110, rel=1e-5)
    assert ForcingConfig().thermal_diffusivity_m2_s == 5e-7
    with pytest.raises(ValueError, match="must be > 0"):
        damping_depth_m(YEAR_S, 0.0)


def test_soil_temperature_surface_equals_air_and_deep_equals_mean():
    rng = np.random.default_rng(3)
    air = rng.uniform(-20, 30, (5, 12))  # arbitrary, not a pure sinusoid
    soil = soil_temperature_k(air, np.array([0.0, 100.0]))
    assert soil.shape == (5, 12, 2)
    np.testing.assert_allclose(soil[:, :, 0], air + 273.15, atol=1e-10)
    np.testing.assert_allclose(soil[:, :, 1], np.broadcast_to(air.mean(1, keepdims=True) + 273.15, (5, 12)), atol=1e-8)
    # mean at every depth is the annual mean
    full = soil_temperature_k(air)
    np.testing.assert_allclose(full.mean(1), np.broadcast_to(air.mean(1)[:, None] + 273.15, (5, 20)), atol=1e-10)


def test_soil_temperature_amplitude_and_phase_lag_of_pure_wave():
    # air = 5 + 10 cos(2π m / 12); at z = d the wave is 5 + 10 e^-1 cos(2π m/12 - 1 rad)
    d = damping_depth_m(YEAR_S, 5e-7)
    air = 5.0 + 10.0 * np.cos(2 * np.pi * MONTHS / 12.0)
    soil = soil_temperature_k(air[None], np.array([d, 2 * d]))[0] - 273.15
    expected_1 = 5.0 + 10.0 * np.exp(-1.0) * np.cos(2 * np.pi * MONTHS / 12.0 - 1.0)
    expected_2 = 5.0 + 10.0 * np.exp(-2.0) * np.cos(2 * np.pi * MONTHS / 12.0 - 2.0)
    np.testing.assert_allclose(soil[:, 0], expected_1, atol=1e-10)
    np.testing.assert_allclose(soil[:, 1], expected_2, atol=1e-10)
    # at z = π d the wave is in anti-phase: warmest in January
    anti = soil_temperature_k(air[None], np.array([np.pi * d]))[0, :, 0]
    assert int(np.argmax(anti)) == 6 and int(np.argmax(air)) == 0


def test_surface_offset_hook_shifts_mean():
    air, _ = climate(-5.0, 10.0, 0.0)
    base = soil_temperature_k(air[None])
    warm = soil_temperature_k(air[None], config=ForcingConfig(surface_offset_c=3.0))
    np.testing.assert_allclose(warm - base, 3.0, atol=1e-12)
    per_site = soil_temperature_k(np.stack([air, air]), surface_offset_c=np.array([0.0, 2.0]))
    np.testing.assert_allclose(per_site[1] - per_site[0], 2.0, atol=1e-12)


# ----------------------------------------------------------------------------- frozen ground


def test_thaw_depth_of_linear_profile():
    # T(z) = 273.15 + 2 (1 - z): the 0 °C isotherm is at exactly 1.0 m (linear → exact interpolation)
    t = np.empty((3, 12, 20))
    t[0] = 273.15 + 2.0 * (1.0 - NODE_M)
    t[1] = 273.15 - 1.0 - NODE_M  # top node frozen → 0
    t[2] = 283.15  # nothing freezes → 10 m
    depth = thaw_depth_m(t)
    np.testing.assert_allclose(depth[0], 1.0, atol=1e-12)
    np.testing.assert_allclose(depth[1], 0.0)
    np.testing.assert_allclose(depth[2], 10.0)
    # isotherm between nodes 0.80 and 1.06: T = 273.15 + (0.9 - z) puts it at 0.9 m
    t2 = 273.15 + (0.9 - NODE_M)
    assert thaw_depth_m(t2[None, None])[0, 0] == pytest.approx(0.9, abs=1e-12)


def test_active_layer_conventions():
    # thaw depth grows linearly from 0 (Jan) to 1.1 m (Jul) and back
    target = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.1, 0.9, 0.7, 0.5, 0.3, 0.1])
    t = 273.15 + (target[:, None] - NODE_M[None, :])  # isotherm exactly at `target` where > 0.01
    t[0] = 272.0  # January fully frozen
    t = t[None]
    inst = active_layer_depth_m(t, convention="instantaneous")[0]
    np.testing.assert_allclose(inst[1:], target[1:], atol=1e-12)
    assert inst[0] == 0.0
    run = active_layer_depth_m(t, convention="running_max")[0]
    np.testing.assert_allclose(run, np.maximum.accumulate(inst))
    cesm = active_layer_depth_m(t)[0]
    np.testing.assert_allclose(cesm, 1.1)
    # southern hemisphere: the thaw year starts in July
    south = active_layer_depth_m(t, convention="running_max", latitude_deg=np.array([-70.0]))[0]
    assert south[6] == pytest.approx(1.1) and south[0] == pytest.approx(1.1) and south[7] == pytest.approx(1.1)
    with pytest.raises(ValueError, match="convention"):
        active_layer_depth_m(t, convention="weekly")


def test_nbedrock_from_depth_known_cases():
    # bottom interfaces: 0.02 0.06 0.12 0.20 0.32 0.48 0.68 0.92 1.20 ... 8.60 m
    depth = np.array([0.0, 0.02, 0.05, 0.06, 0.5, 1.0, 8.6, 100.0, np.inf])
    np.testing.assert_array_equal(nbedrock_from_depth(depth), [1, 1, 1, 2, 6, 8, 20, 20, 20])
    assert nbedrock_from_depth(depth).dtype == np.int64
    np.testing.assert_array_equal(nbedrock_from_depth(None, 3), [20, 20, 20])
    with pytest.raises(ValueError, match=r"bedrock_depth_m must be >= 0.*indices 1"):
        nbedrock_from_depth(np.array([1.0, -0.5]))
    with pytest.raises(ValueError, match="bedrock_depth_m has NaN"):
        nbedrock_from_depth(np.array([np.nan]))


# ----------------------------------------------------------------------------- water, oxygen, nitrogen


def test_daylength_known_values():
    day = daylength_h(np.array([0.0, 60.0, 89.0, -89.0]), np.array([172.0]))[:, 0]
    assert day[0] == pytest.approx(12.0, abs=1e-9)  # equator
    assert day[1] == pytest.approx(18.49, abs=0.02)  # 60° N at the June solstice
    assert day[2] == 24.0 and day[3] == 0.0  # polar day / night


def test_thornthwaite_pet_hand_computed():
    # T = 10 °C all year at the equator (daylength 12 h):
    #   I = 12 (10/5)^1.514 = 12 × 2.85603 = 34.2724
    #   a = 6.75e-7 I³ - 7.71e-5 I² + 1.792e-2 I + 0.49239 = 0.027173 - 0.090562 + 0.614161 + 0.49239 = 1.043162
    #   PET_30d = 16 (100 / 34.2724)^1.043162 = 16 × 3.05584 = 48.893 mm
    #   January (31 d): 48.893 × 31/30 = 50.523 mm; February (28 d): 45.634 mm
    t = np.full((2, 12), 10.0)
    # T = 30 °C (hot branch, Willmott et al. 1985): -415.85 + 32.24·30 - 0.43·900 = 164.35 → Jan 169.828 mm
    t[1] = 30.0
    pet = pet_thornthwaite_mm(t, np.zeros(2))
    assert pet[0, 0] == pytest.approx(50.523, abs=2e-3)
    assert pet[0, 1] == pytest.approx(45.634, abs=2e-3)
    assert pet[1, 0] == pytest.approx(169.828, abs=2e-3)
    # frozen months have no PET; high-latitude summer months get the long-day bonus
    cold = pet_thornthwaite_mm(np.array([[-5.0] * 6 + [10.0] * 6]), np.array([60.0]))
    assert (cold[0, :6] == 0).all() and (cold[0, 6:] > 0).all()
    assert cold[0, 6] > cold[0, 10]  # July (long days) > November at 60° N, same T


def test_water_scalar_in_log_space_is_the_potential_mapping():
    """The one-log form equals CLM's W(ψ) of ψ = ψ_fc (r/r_wet)^(−b), dry to saturated."""
    from socmap.climate_forcing import water_scalar_from_potential
    from socmap.forcing_config import ForcingConfig

    rng = np.random.default_rng(3)
    p, pet = rng.gamma(0.8, 80.0, (300, 12)), rng.uniform(0.0, 200.0, (300, 12))
    p[:5] = 0.0
    c = ForcingConfig()
    w = water_scalar_from_climate(p, pet, config=c)
    monthly = p / np.maximum(pet, c.pet_floor_mm)
    annual = p.sum(1) / np.maximum(pet.sum(1), c.pet_floor_mm)
    wz = np.exp(-NODE_M / c.moisture_memory_depth_m)
    ratio = monthly[:, :, None] * wz + annual[:, None, None] * (1.0 - wz)
    psi = c.psi_field_capacity_mpa * np.maximum(ratio / c.moisture_ratio_wet, 1e-12) ** (-c.psi_exponent)
    expected = np.clip(water_scalar_from_potential(psi, c), c.water_scalar_floor, 1.0)
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-12)
    assert (w == c.water_scalar_floor).any() and (w == 1.0).any()  # both clips exercised


def test_water_scalar_ratio_and_depth_blending():
    p = np.array([[50.0] * 6 + [0.0] * 6])  # wet half-year, dry half-year
    pet = np.full((1, 12), 100.0)
    w = water_scalar_from_climate(p, pet, np.array([0.0, 50.0]))
    # surface: monthly ratio 0.5 -> psi = -0.033 * 0.5**-2 = -0.132 MPa -> W = ln(2/0.132)/ln(1000)
    np.testing.assert_allclose(w[0, :6, 0], np.log(2 / 0.132) / np.log(1000), rtol=1e-12)
    np.testing.assert_allclose(w[0, 6:, 0], 0.05)  # ratio 0 -> psi below -2 MPa -> floor
    # depth: annual ratio 300/1200 = 0.25 -> psi = -0.528 MPa
    np.testing.assert_allclose(w[0, :, 1], np.log(2 / 0.528) / np.log(1000), rtol=1e-9)
    # P = PET sits at field capacity (W ~ 0.59); only much wetter soils reach 1; wetlands are 1
    np.testing.assert_allclose(water_scalar_from_climate(np.full((1, 12), 100.0), pet)[0, 0, 0], np.log(2 / 0.033) / np.log(1000))
    assert water_scalar_from_climate(np.full((1, 12), 600.0), pet).max() == 1.0
    w_wet = water_scalar_from_climate(p, pet, land_cover=np.array([11]))
    assert (w_wet == 1.0).all() and w_wet.shape == (1, 12, 20)
    with pytest.raises(ValueError, match=r"precip_mm has negative values.*indices 0"):
        water_scalar_from_climate(-p, pet)


def test_oxygen_and_nitrogen_scalars():
    o = oxygen_scalar(np.array([1, 11]))
    assert o.shape == (2, 12, 20)
    assert (o[0] == 1.0).all()
    # wetland: nodes 0.01, 0.04, 0.09 m lie above the 0.1 m water table, the rest are anoxic (0.2)
    np.testing.assert_allclose(o[1, :, :3], 1.0)
    np.testing.assert_allclose(o[1, :, 3:], 0.2)
    n = nitrogen_scalar(4)
    assert n.shape == (4, 12, 20) and (n == ForcingConfig().nitrogen_scalar).all()


# ----------------------------------------------------------------------------- carbon inputs


def test_miami_npp_hand_computed():
    # T = 10 °C, P = 1000 mm:
    #   temperature limb 3000 / (1 + exp(1.315 - 1.19)) = 3000 / (1 + 1.133148) = 1406.37 g DM
    #   precipitation limb 3000 (1 - exp(-0.664)) = 3000 × 0.485212 = 1455.64 g DM
    #   min = 1406.37 g DM × 0.45 gC/g = 632.87 gC m-2 yr-1 (temperature limited)
    # T = 25 °C, P = 300 mm: precipitation limb 3000 (1 - exp(-0.1992)) = 541.84 → 243.83 gC
    npp = miami_npp_g_m2_yr(np.array([10.0, 25.0]), np.array([1000.0, 300.0]))
    np.testing.assert_allclose(npp, [632.87, 243.83], atol=0.01)
    half = miami_npp_g_m2_yr(np.array([10.0]), np.array([1000.0]), ForcingConfig(carbon_fraction=0.5))
    assert half[0] == pytest.approx(1406.37 * 0.5, abs=0.01)


def test_litter_split_sums_to_one_and_forests_have_cwd():
    classes = np.arange(17)
    split = litter_split(classes)
    assert split.shape == (17, 4)
    np.testing.assert_allclose(split.sum(1), 1.0, atol=1e-12)
    assert (split >= 0).all()
    assert (split[1:6, 0] >= 0.2).all() and (split[1:6, 0] <= 0.3).all()  # forests
    assert split[10, 0] == 0.0 and split[12, 0] == 0.0  # grass, crop
    # hand value for grass: metabolic 0.85 - 0.018 × 12 = 0.634, lignin 0.12, cellulose 0.246
    np.testing.assert_allclose(split[10], [0.0, 0.634, 0.246, 0.12], atol=1e-12)
    # forest: non-woody 0.75 split 0.40 / 0.38 / 0.22
    np.testing.assert_allclose(split[1], [0.25, 0.30, 0.285, 0.165], atol=1e-12)
    # grass litter is more labile than forest litter
    assert split[10, 1] / split[10, 1:].sum() > split[1, 1] / split[1, 1:].sum()
    assert list(land_cover_group(np.array([0, 4, 8, 11, 14]))) == ["other", "forest", "shrub_savanna", "wetland", "crop"]
    with pytest.raises(ValueError, match=r"IGBP class codes 0–16.*255"):
        litter_split(np.array([1, 255]))


def test_config_rejects_inconsistent_litter_quality():
    bad = tuple((g, LitterQuality(0.0, 0.9, 1.0)) if g == "grass" else (g, q) for g, q in ForcingConfig().litter_quality)
    with pytest.raises(ValueError, match="litter_quality"):
        ForcingConfig(litter_quality=bad)
    with pytest.raises(ValueError, match="nitrogen_scalar"):
        ForcingConfig(nitrogen_scalar=1.5)


# ----------------------------------------------------------------------------- derive_forcing


def _random_climates(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    mat = rng.uniform(-12.0, 28.0, n)
    amp = rng.uniform(1.0, 22.0, n)
    phase = np.where(rng.random(n) < 0.2, 0.0, 6.5)  # some southern-hemisphere cycles
    air = mat[:, None] + amp[:, None] * np.cos(2 * np.pi * (MONTHS[None] - phase[:, None]) / 12.0)
    precip = rng.gamma(1.5, 40.0, (n, 12)) * rng.uniform(0.05, 3.0, n)[:, None]
    precip[rng.random(n) < 0.05] = 0.0  # hyper-arid rows
    lc = rng.integers(0, 17, n)
    lat = np.where(phase == 0.0, -rng.uniform(5, 55, n), rng.uniform(5, 75, n))
    return air, precip, lc, lat


def test_derive_forcing_broad_random_climates_validate():
    air, precip, lc, lat = _random_climates(2000)
    f = derive_forcing(air, precip, lc, lat)
    assert isinstance(f, Forcing) and f.batch_size == 2000
    f.validate()
    assert f.soil_temp_k.dtype == torch.float64 and f.nbedrock.dtype == torch.int64
    for name in ("water_scalar", "oxygen_scalar", "nitrogen_scalar"):
        v = getattr(f, name)
        assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
    assert float(f.inputs_g_m2_yr.sum(1).min()) > 0
    warm = air.min(1) > 2.0  # never freezing → no permafrost
    assert warm.sum() > 100
    assert (f.alt_m.numpy()[warm] == 10.0).all()
    assert (f.nbedrock == 20).all()
    # soil temperature mean per layer = mean air temperature
    np.testing.assert_allclose(f.soil_temp_k.numpy().mean(1), np.broadcast_to(air.mean(1)[:, None] + 273.15, (2000, 20)), atol=1e-9)


def test_derive_forcing_cold_site_has_shallow_active_layer():
    # MAT -8 °C, annual amplitude 15 °C. Annual harmonic only: thaw where -8 + 15 e^{-z/d} > 0,
    # z < d ln(15/8) = 2.241 × 0.629 = 1.41 m (monthly sampling → slightly less)
    air_cold, p_cold = climate(-8.0, 15.0, 30.0)
    air_warm, p_warm = climate(12.0, 10.0, 80.0)
    f = derive_forcing(np.stack([air_cold, air_warm]), np.stack([p_cold, p_warm]), np.array([1, 4]), np.array([65.0, 45.0]))
    alt = f.alt_m.numpy()
    assert 0.8 < alt[0, 0] < 1.45 and (alt[0] == alt[0, 0]).all()
    assert alt[0, 0] < 2.0
    assert (alt[1] == 10.0).all()
    # steady state: last year's maximum thaw depth is this year's
    np.testing.assert_array_equal(f.altmax_lastyear_m.numpy(), alt.max(1))


def test_derive_forcing_npp_override_and_bedrock():
    air, p = climate(10.0, 10.0, 80.0)
    f = derive_forcing(
        np.stack([air, air]), np.stack([p, p]), np.array([10, 1]), np.array([40.0, 40.0]),
        npp_g_m2_yr=np.array([400.0, 800.0]), bedrock_depth_m=np.array([1.0, np.inf]),
    )
    np.testing.assert_allclose(f.inputs_g_m2_yr.numpy().sum(1), [400.0, 800.0])
    np.testing.assert_allclose(f.inputs_g_m2_yr.numpy()[0], 400.0 * litter_split(np.array([10]))[0])
    assert f.nbedrock.tolist() == [8, 20]
    # Miami path: climate NPP, scaled for barren land and floored for water
    g = derive_forcing(np.stack([air] * 3), np.stack([p] * 3), np.array([10, 16, 0]), np.full(3, 40.0))
    total = g.inputs_g_m2_yr.numpy().sum(1)
    miami = miami_npp_g_m2_yr(np.array([air.mean()]), np.array([p.sum()]))[0]
    np.testing.assert_allclose(total, [miami, 0.1 * miami, 1.0])


def test_derive_forcing_rows_are_independent():
    """Vectorised over cells: deriving a batch equals deriving each row on its own (no timing
    assertion here; speed is a benchmark figure)."""
    air, precip, lc, lat = _random_climates(500, seed=1)
    batch = derive_forcing(air, precip, lc, lat)
    for i in (0, 123, 499):
        one = derive_forcing(air[i : i + 1], precip[i : i + 1], lc[i : i + 1], lat[i : i + 1])
        for name, v in one.to_numpy().items():
            np.testing.assert_allclose(batch.to_numpy()[name][i], v[0], rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"air_temp_c": "kelvin"}, r"air_temp_c exceeds 100 °C.*indices 1.*look like kelvin"),
        ({"air_temp_c": "nan"}, r"air_temp_c has NaN.*indices 2"),
        ({"air_temp_c": "shape"}, r"air_temp_c must have shape \[N, 12\]; got \(3, 11\)"),
        ({"precip_mm": "negative"}, r"precip_mm has negative values at 1 row\(s\): indices 0"),
        ({"precip_mm": "shape"}, r"precip_mm must have shape \[3, 12\]"),
        ({"land_cover": "nodata"}, r"land_cover must hold IGBP class codes 0–16.*255.*indices 2"),
        ({"latitude_deg": "range"}, r"latitude_deg must lie in \[-90, 90\].*indices 0"),
        ({"npp_g_m2_yr": "negative"}, r"npp_g_m2_yr has negative values.*indices 1"),
        ({"bedrock_depth_m": "shape"}, r"bedrock_depth_m must have shape \[3\]"),
    ],
)
def test_derive_forcing_rejects_bad_inputs(kwargs, pattern):
    air, p = climate(10.0, 10.0, 50.0)
    args = {
        "air_temp_c": np.stack([air] * 3),
        "precip_mm": np.stack([p] * 3),
        "land_cover": np.array([1, 10, 12]),
        "latitude_deg": np.array([40.0, 41.0, 42.0]),
    }
    extra = {}
    (key, what), = kwargs.items()
    if key == "air_temp_c":
        if what == "kelvin":
            args[key][1] += 273.15
        elif what == "nan":
            args[key][2, 3] = np.nan
        else:
            args[key] = args[key][:, :11]
    elif key == "precip_mm":
        if what == "negative":
            args[key][0, 5] = -1.0
        else:
            args[key] = args[key][:2]
    elif key == "land_cover":
        args[key] = np.array([1, 10, 255])
    elif key == "latitude_deg":
        args[key] = np.array([95.0, 0.0, 0.0])
    elif key == "npp_g_m2_yr":
        extra[key] = np.array([100.0, -5.0, 100.0])
    elif key == "bedrock_depth_m":
        extra[key] = np.array([1.0, 2.0])
    with pytest.raises(ValueError, match=pattern):
        derive_forcing(args["air_temp_c"], args["precip_mm"], args["land_cover"], args["latitude_deg"], **extra)


# ----------------------------------------------------------------------------- CESM2 reader


def _write_cesm2(path, n_sites: int = 3, *, rename: dict[str, str] | None = None, drop: str | None = None, n_lev: int = 25):
    import xarray as xr

    rng = np.random.default_rng(7)
    rename = rename or {}
    layered = ("site", "month", "levgrnd")
    data = {}
    for name in ("CWD_INPUT_ACC_VECTOR", "LITR1_INPUT_ACC_VECTOR", "LITR2_INPUT_ACC_VECTOR", "LITR3_INPUT_ACC_VECTOR"):
        data[name] = (layered, rng.uniform(0.0, 5.0, (n_sites, 12, n_lev)))
    data["ALTMAX"] = (("site", "month"), np.tile(np.linspace(0.0, 1.2, 12), (n_sites, 1)))
    data["ALTMAX_LASTYEAR"] = (("site", "month"), np.full((n_sites, 12), 0.9))
    data["ALTMAX_LASTYEAR"][1][2:, 0] = 0.0  # site 2: one month of the record frozen last year
    data["nbedrock"] = (("site",), np.array([20.0, 8.0, 15.0])[:n_sites])
    data["O_SCALAR"] = (layered, rng.uniform(0.5, 1.0, (n_sites, 12, n_lev)))
    data["FPI_vr"] = (layered, rng.uniform(0.3, 1.0, (n_sites, 12, n_lev)))
    data["TSOI"] = (layered, rng.uniform(260.0, 300.0, (n_sites, 12, n_lev)))
    data["W_SCALAR"] = (layered, rng.uniform(0.1, 1.0, (n_sites, 12, n_lev)))
    if drop:
        data.pop(drop)
    ds = xr.Dataset({rename.get(k, k): v for k, v in data.items()})
    ds.to_netcdf(path)
    return data


def test_read_cesm2_forcing_round_trip(tmp_path):
    path = tmp_path / "cesm2.nc"
    data = _write_cesm2(path, rename={"W_SCALAR": "wscal"})
    f = read_cesm2_forcing(path, variable_map={"W_SCALAR": "wscal"})
    f.validate()
    assert f.batch_size == 3
    # inputs: Σ_months Σ_{first 20 layers} (gC m-3 month-1 × dz m) = gC m-2 yr-1
    for k, name in enumerate(("CWD_INPUT_ACC_VECTOR", "LITR1_INPUT_ACC_VECTOR", "LITR2_INPUT_ACC_VECTOR", "LITR3_INPUT_ACC_VECTOR")):
        raw = data[name][1][:, :, :20]
        expected = (raw * DZ_M).sum(axis=(1, 2))
        np.testing.assert_allclose(f.inputs_g_m2_yr.numpy()[:, k], expected, rtol=1e-12)
    np.testing.assert_allclose(f.alt_m.numpy()[0], np.maximum(np.linspace(0.0, 1.2, 12), 0.9))
    # kept apart from alt_m (it alone sets the input profile); any frozen month counts as not thawed
    np.testing.assert_allclose(f.altmax_lastyear_m.numpy(), [0.9, 0.9, 0.0])
    assert f.alt_m.numpy()[2, 0] == 0.0 and f.alt_m.numpy()[2, 1] > 0
    assert f.nbedrock.tolist() == [20, 8, 15]
    np.testing.assert_allclose(f.soil_temp_k.numpy(), data["TSOI"][1][:, :, :20])
    np.testing.assert_allclose(f.water_scalar.numpy(), data["W_SCALAR"][1][:, :, :20])
    np.testing.assert_allclose(f.nitrogen_scalar.numpy(), data["FPI_vr"][1][:, :, :20])
    np.testing.assert_allclose(f.oxygen_scalar.numpy(), data["O_SCALAR"][1][:, :, :20])


def test_read_cesm2_forcing_constant_input_hand_value(tmp_path):
    import xarray as xr

    path = tmp_path / "const.nc"
    _write_cesm2(path, n_sites=1)
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    ds["CWD_INPUT_ACC_VECTOR"][:] = 2.0  # 2 gC m-3 month-1 in every layer: 2 × 8.6 m × 12 = 206.4 gC m-2 yr-1
    ds.to_netcdf(tmp_path / "const2.nc")
    f = read_cesm2_forcing(tmp_path / "const2.nc")
    assert float(f.inputs_g_m2_yr[0, 0]) == pytest.approx(206.4, rel=1e-12)


def test_read_cesm2_forcing_errors(tmp_path):
    path = tmp_path / "missing.nc"
    _write_cesm2(path, drop="FPI_vr")
    with pytest.raises(ValueError, match=r"missing\.nc: variable 'FPI_vr'.*missing.*variable_map"):
        read_cesm2_forcing(path)
    with pytest.raises(ValueError, match="not CLM5 forcing variables"):
        read_cesm2_forcing(path, variable_map={"SOILPSI": "x"})
    celsius = tmp_path / "celsius.nc"
    import xarray as xr

    _write_cesm2(celsius)
    with xr.open_dataset(celsius) as ds:
        ds = ds.load()
    ds["TSOI"] = ds["TSOI"] - 273.15
    ds.to_netcdf(tmp_path / "celsius2.nc")
    with pytest.raises(ValueError, match="looks like °C"):
        read_cesm2_forcing(tmp_path / "celsius2.nc")


# ----------------------------------------------------------------------------- with the solver


def test_solver_on_derived_forcing_cold_wet_forest_beats_hot_dry_grass():
    from socmap.clm5 import soc_nodes, standard_stocks, steady_state
    from socmap.clm5.parameters import midrange_theta

    forest_t, forest_p = climate(2.0, 12.0, 100.0)  # cold, wet, evergreen needleleaf forest
    grass_t, grass_p = climate(24.0, 6.0, 20.0)  # hot, dry grassland
    f = derive_forcing(np.stack([forest_t, grass_t]), np.stack([forest_p, grass_p]), np.array([1, 10]), np.array([50.0, 30.0]))
    x = steady_state(midrange_theta(2), f)
    soc = soc_nodes(x)
    assert torch.isfinite(x).all() and (soc > 0).all()
    stocks = standard_stocks(soc)
    for name, v in stocks.items():
        assert torch.isfinite(v).all() and (v > 0).all(), name
        assert float(v[0]) > float(v[1]), f"{name}: forest {float(v[0]):.2f} <= grass {float(v[1]):.2f} kg m-2"


def test_read_cesm2_forcing_gridded_file_with_time_dim_and_column_inputs(tmp_path):
    """(time, lat, lon[, levsoi]) layout: sites are lat × lon in C order; inputs without a layer
    dimension are column totals (gC m-2 month-1) and are only summed over months."""
    import xarray as xr

    rng = np.random.default_rng(11)
    ny, nx = 2, 3
    lay = ("time", "levsoi", "lat", "lon")
    ds = xr.Dataset(
        {
            "CWD_INPUT_ACC_VECTOR": (("time", "lat", "lon"), np.full((12, ny, nx), 1.5)),
            "LITR1_INPUT_ACC_VECTOR": (("time", "lat", "lon"), np.full((12, ny, nx), 2.0)),
            "LITR2_INPUT_ACC_VECTOR": (("time", "lat", "lon"), np.full((12, ny, nx), 3.0)),
            "LITR3_INPUT_ACC_VECTOR": (("time", "lat", "lon"), np.full((12, ny, nx), 4.0)),
            "ALTMAX": (("time", "lat", "lon"), np.full((12, ny, nx), 10.0)),
            "ALTMAX_LASTYEAR": (("lat", "lon"), np.full((ny, nx), 10.0)),
            "nbedrock": (("lat", "lon"), np.arange(ny * nx, dtype=float).reshape(ny, nx) + 10),
            "O_SCALAR": (lay, np.ones((12, 20, ny, nx))),
            "FPI_vr": (lay, np.full((12, 20, ny, nx), 0.6)),
            "TSOI": (lay, rng.uniform(270, 300, (12, 20, ny, nx))),
            "W_SCALAR": (lay, np.full((12, 20, ny, nx), 0.5)),
        },
        coords={"lat": [40.0, 41.0], "lon": [-100.0, -99.0, -98.0]},
    )
    ds.to_netcdf(tmp_path / "grid.nc")
    f = read_cesm2_forcing(tmp_path / "grid.nc")
    assert f.batch_size == 6
    np.testing.assert_allclose(f.inputs_g_m2_yr.numpy(), np.tile([18.0, 24.0, 36.0, 48.0], (6, 1)))
    assert f.nbedrock.tolist() == [10, 11, 12, 13, 14, 15]
    # site 4 = (lat 1, lon 1); TSOI (month 3, layer 5) lands at [4, 3, 5]
    assert float(f.soil_temp_k[4, 3, 5]) == pytest.approx(float(ds["TSOI"][3, 5, 1, 1]))
    # an ocean cell (NaN) is reported by validation, naming the site
    ds["TSOI"][:, :, 0, 2] = np.nan
    ds.to_netcdf(tmp_path / "grid_nan.nc")
    with pytest.raises(ValueError, match=r"soil_temp_k.*indices 2"):
        read_cesm2_forcing(tmp_path / "grid_nan.nc")
    assert read_cesm2_forcing(tmp_path / "grid_nan.nc", validate=False).batch_size == 6


def test_derived_fields_are_laid_out_sites_innermost_and_prepare_without_copies():
    """derive_forcing's [N, 12, 20] fields are views of sites-innermost arrays, so prepare_forcing's
    [12, 20, N] water and oxygen are the same memory (no transposing copy) and equal the fields."""
    from socmap.clm5 import prepare_forcing
    from socmap.clm5.operators import T_REF_K

    rng = np.random.default_rng(4)
    n = 37
    f = derive_forcing(rng.normal(8, 12, (n, 12)), rng.uniform(0, 150, (n, 12)), rng.integers(1, 17, n), rng.uniform(25, 49, n))
    for name in ("soil_temp_k", "water_scalar", "oxygen_scalar", "nitrogen_scalar"):
        t = getattr(f, name)
        assert tuple(t.shape) == (n, 12, 20) and t.stride() == (1, 20 * n, n), name
    p = prepare_forcing(f)
    assert p.water.data_ptr() == f.water_scalar.data_ptr() and p.oxygen.data_ptr() == f.oxygen_scalar.data_ptr()
    np.testing.assert_array_equal(p.water.numpy(), f.water_scalar.numpy().transpose(1, 2, 0))
    np.testing.assert_array_equal(p.temp_exponent.numpy(), ((f.soil_temp_k.numpy() - T_REF_K) / 10.0).transpose(1, 2, 0))
