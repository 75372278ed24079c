"""Climate scenarios: definition, re-derived forcing, and `socmap scenario` on a small mapped run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from socmap.clm5 import prepare_forcing, soc_nodes, standard_stocks, steady_state
from socmap.clm5.parameters import INDEX, midrange_theta
from socmap.scenario import (
    Scenario,
    ScenarioError,
    interpolate_forcing,
    npp_response,
    prepare_scenario,
    scenario_forcing,
    shift_climate,
)


def _climate(n: int = 6, seed: int = 0, wet: bool = True) -> dict[str, np.ndarray]:
    """Warm (no permafrost) cells; ``wet`` ones have P ≫ PET."""
    rng = np.random.default_rng(seed)
    months = np.arange(12)
    t = rng.uniform(8, 20, (n, 1)) + rng.uniform(5, 12, (n, 1)) * np.cos(2 * np.pi * (months - 6.5) / 12)
    p = rng.uniform(150, 300, (n, 12)) if wet else rng.uniform(10, 60, (n, 12))
    return {"air_temp_c": t, "precip_mm": p, "land_cover": rng.choice([4, 10, 12], n),
            "npp_g_m2_yr": rng.uniform(200, 900, n), "lat_deg": rng.uniform(30, 45, n)}


def test_scenario_definition(tmp_path):
    s = Scenario(name="warm2", warming_c=2, precip_pct=-10)
    assert s.warming_c == [2.0] * 12 and np.allclose(s.precip_factor, 0.9) and not s.is_zero
    assert Scenario(name="zero").is_zero
    f = tmp_path / "s.yaml"
    f.write_text("name: monthly\nwarming_c: [1,1,1,2,2,2,3,3,3,2,2,1]\nprecip_pct: 5\nyears: 20\nramp_years: 10\n")
    m = Scenario.from_yaml(f, hold_inputs=True, years=None)
    assert m.warming_c[6] == 3.0 and m.precip_pct == [5.0] * 12 and m.hold_inputs and m.years == 20 and m.ramp_years == 10
    with pytest.raises(ValueError, match="usable scenario name"):
        Scenario(name="../x")
    with pytest.raises(ValueError, match=">= -100"):
        Scenario(name="x", precip_pct=-120)
    with pytest.raises(ValueError, match="12 monthly values"):
        Scenario(name="x", warming_c=[1, 2, 3])
    f.write_text("name: x\nwarming: 2\n")
    with pytest.raises(ScenarioError, match="warming"):
        Scenario.from_yaml(f)


def test_shifted_climate_and_inputs():
    c = _climate()
    s = Scenario(name="s", warming_c=2, precip_pct=-10)
    t, p = shift_climate(c["air_temp_c"], c["precip_mm"], s, fraction=0.5)
    assert np.allclose(t - c["air_temp_c"], 1.0) and np.allclose(p / c["precip_mm"], 0.95)
    free, held = scenario_forcing(c, s), scenario_forcing(c, s.model_copy(update={"hold_inputs": True}))
    present = scenario_forcing(c, Scenario(name="zero"))
    ratio = npp_response(c["air_temp_c"], c["precip_mm"], *shift_climate(c["air_temp_c"], c["precip_mm"], s))
    assert torch.allclose(free.inputs_g_m2_yr, present.inputs_g_m2_yr * torch.as_tensor(ratio)[:, None], rtol=1e-12)
    assert torch.equal(held.inputs_g_m2_yr, present.inputs_g_m2_yr)
    assert (held.soil_temp_k > present.soil_temp_k).all()
    half = interpolate_forcing(present, free, 0.5)
    assert torch.allclose(half.soil_temp_k, (present.soil_temp_k + free.soil_temp_k) / 2)
    assert interpolate_forcing(present, free, 0.0) is present and interpolate_forcing(present, free, 1.0) is free


def test_warming_with_held_inputs_lowers_soc_where_q10_above_one():
    c = _climate(8, seed=1, wet=True)
    present = scenario_forcing(c, Scenario(name="zero"))
    warm = scenario_forcing(c, Scenario(name="w", warming_c=2, hold_inputs=True))
    assert (warm.alt_m == present.alt_m).all()  # no permafrost: the transport regime is unchanged
    pp = prepare_forcing(present)
    wp = prepare_scenario(warm, pp, hold_inputs=True)
    theta = midrange_theta(8)
    theta[:, INDEX["w_scaling"]] = 5.0  # wet cells: ξ^W = min(1, 5 W) = 1 in both climates, so T alone acts
    assert (5.0 * pp.water >= 1).all() and (5.0 * wp.water >= 1).all()

    def soc(th, prepared):
        return soc_nodes(steady_state(th, prepared, check_bounds_=False))

    for q10, lower in ((1.5, True), (3.0, True), (1.0, False)):
        theta[:, INDEX["q10"]] = q10
        now, new = soc(theta, pp), soc(theta, wp)
        if lower:
            assert (new < now).all(), q10
            assert (standard_stocks(new)["soc_stock_0_100cm"] < standard_stocks(now)["soc_stock_0_100cm"]).all()
        else:  # Q10 = 1: temperature has no effect, so nothing changes
            assert torch.allclose(new, now, rtol=1e-12)


# ----------------------------------------------------------------------------------------
# socmap scenario on the tiny twin run
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scen_run(run_copy, map_chunks):
    """A copy of the tiny run, mapped with --ensemble (the fold spread of the present map)."""
    from socmap.mapping import map_run

    run = run_copy("scenario-run")
    map_run(run, scheduler="synchronous", chunks=map_chunks, ensemble=True, progress=False)
    return run


def test_zero_scenario_equals_present_map_and_cell_forcing(scen_run, map_chunks):
    from socmap import store as S
    from socmap.data.cube import cell_forcing, open_cube
    from socmap.runs import open_run
    from socmap.scenario import cell_climate
    from socmap.scenario_mapping import ScenarioOptions, run_scenario

    cube = open_cube(open_run(scen_run).data_dir / "cube.zarr")
    iy, ix = np.nonzero(cube["land_mask"].values.astype(bool))
    iy, ix = iy[:50], ix[:50]
    a = cell_forcing(cube, iy, ix)
    b = scenario_forcing(cell_climate(cube, iy, ix), Scenario(name="zero", hold_inputs=False))
    for name, v in a.__dict__.items():
        assert torch.equal(v, getattr(b, name)), name

    rec = run_scenario(scen_run, Scenario(name="zero"), ScenarioOptions(chunks=map_chunks, scheduler="synchronous", progress=False))
    present = S.open_store(scen_run).load()
    zero = S.open_store(scen_run / "scenarios" / "zero").load()
    assert zero.attrs["scenario_name"] == "zero" and zero.attrs["run_name"] == present.attrs["run_name"]
    for v in ("soc", *S.STOCKS, *(s + "_std" for s in S.STOCKS)):
        ok = np.isfinite(present[v].values)
        assert ok.sum() > 100 and np.array_equal(ok, np.isfinite(zero[v].values)), v
        assert np.allclose(zero[v].values[ok], present[v].values[ok], rtol=1e-6, atol=0), v
    for s in S.STOCKS:
        d = zero["delta_" + s].values
        assert np.nanmax(np.abs(d)) == 0 and np.nanmax(np.abs(zero["delta_pct_" + s].values)) == 0
    assert rec["present_map_max_rel_diff"] < 1e-6
    assert rec["conus"]["soc_stock_0_100cm"]["delta_pg"]["mean"] == 0


def test_warming_scenario_store_transient_sensitivity_export_and_resume(scen_run, map_chunks, tmp_path):
    from socmap import store as S
    from socmap.export import export_layers
    from socmap.scenario_mapping import ScenarioInterrupted, ScenarioOptions, run_scenario

    sc = Scenario(name="warm2-held", warming_c=2, hold_inputs=True, years=4, ramp_years=2)
    with pytest.raises(ScenarioInterrupted):
        run_scenario(scen_run, sc, ScenarioOptions(chunks=map_chunks, sensitivity=True, scheduler="synchronous", progress=False, stop_after=2))
    out = scen_run / "scenarios" / sc.name
    assert (out / "maps.zarr.partial").exists() and not (out / "maps.zarr").exists()
    rec = run_scenario(scen_run, sc, ScenarioOptions(chunks=map_chunks, sensitivity=True, scheduler="synchronous", progress=False))
    assert rec["chunks_resumed"] == 2 and (out / "maps.zarr").exists() and not (out / "maps.zarr.partial").exists()
    assert json.loads((out / "scenario.json").read_text())["scenario"]["name"] == sc.name

    ds = S.open_store(out).load()
    present = S.open_store(scen_run).load()
    for name, var in ds.data_vars.items():
        assert var.attrs["units"] and var.attrs["long_name"] and var.attrs["kind"] in S.KINDS, name
    land = np.isfinite(present["soc_stock_0_100cm"].values)
    for s in S.STOCKS:
        assert np.allclose(ds["present_" + s].values[land], present[s].values[land], rtol=1e-6)
        d = ds["delta_" + s].values[land]
        assert np.isfinite(d).all() and np.isfinite(ds["delta_" + s + "_std"].values[land]).all()
        # transient: year 0 is the present steady state (fold mean = the ensemble map)
        tr = ds["transient_" + s].values
        assert tr.shape == (5,) + land.shape
        assert np.allclose(tr[0][land], present[s].values[land], rtol=1e-5)
    conus = ds["conus_soc_stock_0_100cm_pg"].values  # [time, model]
    assert conus.shape == (5, 3) and np.isfinite(conus).all()
    assert np.allclose(conus[0], rec["conus"]["soc_stock_0_100cm"]["present_pg"]["folds"], rtol=1e-9)
    csv = (out / "transient_totals.csv").read_text().splitlines()
    assert len(csv) == 6 and csv[0].startswith("year,0_30cm_fold0_pg")

    # sensitivity layers and their CONUS summary
    e = ds["elasticity_tau4s3"].values[land]
    assert np.isfinite(e).all() and (e > 0).all()
    dom = ds["dominant_process"].values[land]
    assert np.isfinite(dom).all() and set(np.unique(dom)) <= set(range(8))
    assert ds["dominant_process"].attrs["flag_meanings"].split()[0] == "temperature_response"
    share = rec["sensitivity"]["dominant_process_area_share"]
    assert abs(sum(share.values()) - 1) < 1e-9

    # export reads the scenario store like any run store
    files = export_layers(out, "delta_soc_stock_0_100cm,dominant_process", tmp_path / "tif", fmt="gtiff")
    assert [f.name for f in files] == ["delta_soc_stock_0_100cm.tif", "dominant_process.tif"]


def test_scenario_needs_the_present_map(run_copy):
    from socmap.scenario_mapping import ScenarioOptions, ScenarioRunError, run_scenario

    run = run_copy("scenario-unmapped")
    with pytest.raises(ScenarioRunError, match="socmap map"):
        run_scenario(run, Scenario(name="w", warming_c=2), ScenarioOptions(scheduler="synchronous"))


def test_cli_scenario(scen_run, map_chunks):
    from typer.testing import CliRunner

    from socmap.cli import app

    res = CliRunner().invoke(app, ["scenario", "--run", str(scen_run), "--name", "cli-warm", "--warming-c", "2",
                                   "--precip-pct", "-10", "--chunks", str(map_chunks), "--scheduler", "synchronous"])
    assert res.exit_code == 0, res.output
    assert "CONUS SOC 0-100 cm" in res.output and (scen_run / "scenarios" / "cli-warm" / "maps.zarr").exists()
    bad = CliRunner().invoke(app, ["scenario", "--run", str(scen_run), "--warming-c", "2"])
    assert bad.exit_code == 2 and "--name" in bad.output
